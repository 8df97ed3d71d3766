//! The mediator secret: the HS256 key that signs node tokens.
//!
//! Looked up with the precedence of every setting
//! ([`secret_location`](crate::config::secret_location)): the
//! `MEDIATOR_SECRET` environment variable, then the file `--secret-file`
//! (`MEDIATOR_SECRET_FILE`) names, then `secret` in the TOML file, then the
//! file its `secret_file` names, then `./mediator.secret`. Every command
//! looks the same way. When neither exists, `serve` generates a
//! random secret and writes it to the secret file, readable by the owner
//! only, so that tokens stay valid across restarts; the other commands
//! refuse, since a secret they made up could not match the server's.
//! The secret itself is never logged or printed.

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::CliError;

/// The shortest secret accepted: HS256 wants at least 256 bits of key.
pub const MIN_SECRET_LEN: usize = 32;

/// Where a secret came from, for messages that must not show the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The environment or the configuration file.
    Configured,
    /// An existing secret file.
    File(PathBuf),
    /// A secret generated now and written to this file.
    Generated(PathBuf),
}

/// A secret and where it came from. `Debug` does not show the secret.
pub struct Secret {
    value: String,
    /// Where it came from.
    pub source: SecretSource,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        self.value.as_bytes()
    }

    /// Finds the secret: `configured` first, then the file; generates and
    /// writes one when `generate` is set and there is neither.
    pub fn resolve(
        configured: Option<String>,
        file: &Path,
        generate: bool,
    ) -> Result<Secret, CliError> {
        if let Some(value) = configured.filter(|v| !v.is_empty()) {
            return Secret::checked(value, SecretSource::Configured);
        }
        match std::fs::read_to_string(file) {
            Ok(text) => Secret::checked(text.trim().to_owned(), SecretSource::File(file.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
                let bytes: [u8; 32] = rand::random();
                let value = base64::engine::general_purpose::STANDARD.encode(bytes);
                write_private(file, &value)?;
                Ok(Secret { value, source: SecretSource::Generated(file.to_owned()) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::Config(format!(
                "no mediator secret: set MEDIATOR_SECRET, or run `mediator serve` once in this directory to create {}",
                file.display()
            ))),
            Err(source) => Err(CliError::Io { path: file.to_owned(), source }),
        }
    }

    fn checked(value: String, source: SecretSource) -> Result<Secret, CliError> {
        if value.len() < MIN_SECRET_LEN {
            return Err(CliError::Config(format!(
                "the mediator secret must be at least {MIN_SECRET_LEN} characters, this one has {}",
                value.len()
            )));
        }
        Ok(Secret { value, source })
    }
}

/// What is wrong with a file holding a secret or a private key that
/// users other than its owner may read or write (its mode, and the fix);
/// `None` when only the owner may, when it cannot be read, or off Unix.
/// Anyone who reads the mediator secret can mint tokens for every node.
///
/// ```
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// use mediator_examples::secret::open_to_others;
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("secret");
/// std::fs::write(&file, "x").unwrap();
/// std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
/// let why = open_to_others(&file).unwrap();
/// assert!(why.contains("0644") && why.contains(&format!("chmod 600 {}", file.display())));
/// std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
/// assert_eq!(open_to_others(&file), None);
/// # }
/// ```
pub fn open_to_others(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The file's own mode: through a symbolic link, the target's.
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{} is open to users other than its owner (mode {mode:04o}): run chmod 600 {}",
                path.display(),
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Writes `value` to a new file only its owner can read.
fn write_private(path: &Path, value: &str) -> Result<(), CliError> {
    use std::io::Write;
    let io = |source| CliError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(value.as_bytes()).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mediator.secret");
        let first = Secret::resolve(None, &path, true).unwrap();
        assert!(matches!(first.source, SecretSource::Generated(_)));
        let again = Secret::resolve(None, &path, true).unwrap();
        assert_eq!(again.source, SecretSource::File(path.clone()));
        assert_eq!(first.expose(), again.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "secret file readable by others: {mode:o}");
        }
        assert!(!format!("{first:?}").contains(std::str::from_utf8(first.expose()).unwrap()));
    }

    #[test]
    fn configured_wins_and_short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none");
        let long = "x".repeat(40);
        let s = Secret::resolve(Some(long.clone()), &path, false).unwrap();
        assert_eq!(s.expose(), long.as_bytes());
        let err = Secret::resolve(Some("short".into()), &path, false).unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        let err = Secret::resolve(None, &path, false).unwrap_err();
        assert!(err.to_string().contains("MEDIATOR_SECRET"), "{err}");
        assert!(
            !path.exists(),
            "a command that may not generate wrote a secret"
        );
    }
}
