//! The `mediator` binary's exit codes, and the words its errors use for a
//! mediator it cannot reach.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; for `send`, every node asked answered (a broadcast with `--allow-partial`: at least one) |
//! | 1 | usage or configuration: a bad flag or setting, a missing secret, an unreadable file, an address in use, a store that does not open, a problem `check` found |
//! | 2 | the mediator: it cannot be reached, or it refused the request (wrong token, unknown node, no node available, overloaded) |
//! | 3 | delivery: a node failed, did not answer in time, or its reply could not be opened; for a broadcast, any such node (all of them even with `--allow-partial`) |

/// Done.
pub const OK: u8 = 0;
/// Usage or configuration error.
pub const USAGE: u8 = 1;
/// The mediator could not be reached or refused.
pub const MEDIATOR: u8 = 2;
/// A delivery failed, wholly or in part.
pub const DELIVERY: u8 = 3;

/// What to tell a person whose call to the mediator at `url` failed with
/// `reason` before any answer: the usual causes in plain words, with what
/// to do, and the low-level reason kept at the end.
///
/// ```
/// use mediator_examples::exit::explain_unreachable;
/// let said = explain_unreachable(
///     "http://127.0.0.1:8080",
///     "client error (Connect): tcp connect error: Connection refused (os error 111)",
/// );
/// assert!(said.starts_with("connection refused: is `mediator serve` running at http://127.0.0.1:8080?"));
/// let said = explain_unreachable("https://127.0.0.1:8080", "received corrupt message of type InvalidContentType");
/// assert!(said.contains("does not speak TLS; use http://127.0.0.1:8080"));
/// ```
pub fn explain_unreachable(url: &str, reason: &str) -> String {
    let lower = reason.to_ascii_lowercase();
    let said = if lower.contains("connection refused") {
        format!("connection refused: is `mediator serve` running at {url}? (--url or MEDIATOR_URL name another)")
    } else if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        let plain = url.replacen("https://", "http://", 1);
        format!("the server at {url} does not speak TLS; use {plain}")
    } else if lower.contains("http2 error")
        || lower.contains("invalid http version")
        || lower.contains("received http/0")
        || lower.contains("invalid status")
    {
        let tls = url.replacen("http://", "https://", 1);
        format!("the server at {url} did not answer in HTTP; if it serves HTTPS, use {tls}")
    } else if lower.contains("unknownissuer")
        || lower.contains("invalid peer certificate")
        || lower.contains("certificate")
    {
        format!("the TLS certificate of {url} is not trusted or does not match its name")
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        format!("the host name of {url} does not resolve")
    } else if lower.contains("timed out") || lower.contains("deadline") {
        format!("no connection to {url} in time: is the address right, and not filtered?")
    } else {
        // Nothing known: the low-level reason is all there is to say.
        return format!("the connection to {url} failed ({reason})");
    };
    said
}

/// What to do when the mediator refused a token (401): the secret it was
/// minted with is not the mediator's, or (`token_flag`) the `--token`
/// given is not valid there.
pub fn token_hint(token_flag: bool) -> &'static str {
    if token_flag {
        "check the token (--token), or the secret it is minted with (--secret-file, \
         MEDIATOR_SECRET): it must be the one the mediator signs with"
    } else {
        "check the secret the token is minted with (--secret-file, MEDIATOR_SECRET): it \
         must be the one the mediator signs with"
    }
}

/// What to tell a person whose QUIC client failed to reach the mediator
/// with `reason` (after "cannot reach the mediator at ADDR: "): a
/// certificate that does not match `--pin`, nothing answering at that
/// address, or the reason as it is.
pub fn explain_quic_unreachable(reason: &str) -> String {
    if let Some((_, rest)) = reason.split_once("certificate fingerprint ") {
        if let Some((seen, pinned)) = rest.split_once(" does not match the pinned ") {
            let pinned = pinned.split_whitespace().next().unwrap_or(pinned);
            return format!(
                "its certificate does not match --pin: its SHA-256 is {seen}, --pin names {pinned}; pin the fingerprint `mediator serve` \
                 prints at start (\"certificate SHA-256 …\")"
            );
        }
    }
    if reason.contains("no hello answer") || reason.to_ascii_lowercase().contains("timed out") {
        return "nothing answered over QUIC there: check --quic (the mediator's QUIC address, \
                UDP) and that the mediator runs with --quic-listen there"
            .to_owned();
    }
    reason.to_owned()
}

/// A pin as `--pin` takes it: the SHA-256 of the QUIC listener's
/// certificate, 64 hex digits (colons and case ignored); several,
/// comma-separated, for the mediators of a formation that each generated
/// their own.
///
/// ```
/// use mediator_examples::exit::check_pin;
/// assert!(check_pin(&"ab".repeat(32)).is_ok());
/// assert!(check_pin(&format!("{},{}", "ab".repeat(32), "cd".repeat(32))).is_ok());
/// assert!(check_pin("d10742b9").unwrap_err().contains("--pin"));
/// assert!(check_pin(&format!("{},d10742b9", "ab".repeat(32))).is_err());
/// ```
pub fn check_pin(pin: &str) -> Result<(), String> {
    let shape = "a pin is the QUIC listener's certificate SHA-256, 64 hex digits, as \
                 `mediator serve` prints it (\"certificate SHA-256 …\"); several mediators' \
                 pins are separated by commas";
    for one in pin.split(',') {
        let digits: String = one.trim().chars().filter(|c| *c != ':').collect();
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!("--pin {pin}: {bad:?} is not a hex digit; {shape}"));
        }
        if digits.len() != 64 {
            return Err(format!(
                "--pin {pin}: {} hex digits, not 64; {shape}",
                digits.len()
            ));
        }
    }
    Ok(())
}

/// What to tell a person whose listener could not open its address, with
/// what to do; `flag` is the setting that names the address
/// (`--listen (MEDIATOR_LISTEN, PORT)`, `--quic-listen`, ...).
pub fn explain_bind(error: &std::io::Error, flag: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{error}: another process (another mediator?) listens there; stop it, or pick \
             another address with {flag}"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{error}: ports below 1024 need privileges; pick a higher port, or grant \
             CAP_NET_BIND_SERVICE"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("{error}: that address is not one of this machine's")
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_causes_leave_the_low_level_reason_out() {
        let said = explain_unreachable(
            "http://h:1",
            "client error (Connect): tcp connect error: Connection refused (os error 111)",
        );
        assert!(!said.contains("tcp connect error"), "{said}");
        let said = explain_quic_unreachable(
            "the cryptographic handshake failed: error 40: unexpected error: certificate \
             fingerprint aa does not match the pinned bb",
        );
        assert!(
            said.contains("does not match --pin")
                && said.contains("aa")
                && !said.contains("error 40"),
            "{said}"
        );
        let said = explain_quic_unreachable("no hello answer within 5s");
        assert!(
            said.contains("nothing answered") && said.contains("--quic-listen"),
            "{said}"
        );
    }

    #[test]
    fn the_address_in_use_names_the_flag_of_that_listener() {
        let error = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let said = explain_bind(&error, "--console-listen");
        assert!(said.ends_with("with --console-listen"), "{said}");
    }

    #[test]
    fn unknown_reasons_are_kept_whole() {
        let said = explain_unreachable("http://h:1", "something odd");
        assert_eq!(said, "the connection to http://h:1 failed (something odd)");
    }
}
