//! Who is calling: JSON Web Tokens checked against the mediator key.
//!
//! HS256 (a shared secret, the original's dialect) is the default; EdDSA and
//! RS256 public keys are accepted too, so a mediator can verify tokens
//! without holding any key able to mint them.
//!
//! # Claims and what they grant
//!
//! - `sub` names the node the token was minted for, as `group/name`
//!   (`group/` for the group's unnamed node). Registration and the sender of
//!   a request must match it. It must parse as a [`NodeKey`] and contain a
//!   `/`, so a bare user name from another issuer can never pass for a node.
//! - `scope`, optional, lists the groups the holder may call; without it the
//!   holder may call any group. The entry [`ADMIN_SCOPE`] (`"admin"`) grants
//!   the admin role (console and admin routes) and any group. `scope` may
//!   be a JSON array or, as OAuth servers write it, one space-separated
//!   string.
//! - A token must name its holder with `sub`, or carry a `scope`: a token
//!   with a `scope` and no `sub` is an operator's or a script's credential
//!   (such as [`Claims::admin`]); it holds no node identity.
//! - A token with neither is the original's kind (payload `{}` plus `iat` and
//!   `exp`). It is refused unless the operator opts in with
//!   [`Authenticator::allow_tokens_without_sub`]; then, as in the original,
//!   its holder gets every power (admin, any group) but no identity, and the
//!   [`Identity`] is marked unverified.
//! - `exp` and `iat` are required, `nbf` optional, all in seconds since the
//!   epoch. They are checked against the `now` passed to
//!   [`Authenticator::authenticate`], with a leeway for clock skew
//!   ([`DEFAULT_LEEWAY`]).
//! - A token naming an audience (`aud`) is refused unless the authenticator
//!   was given that audience ([`Authenticator::with_audience`]).
//!
//! With HS256, whoever holds the secret can mint any claims: give nodes
//! tokens minted for them, not the secret, if one node must not be able to
//! speak as another; or use EdDSA/RS256 so the mediator holds only a public
//! key.
//!
//! # Algorithms
//!
//! Each authenticator accepts exactly one algorithm, the one of its key. The
//! header's `alg` is checked before anything else: `none`, and any attempt
//! to present a token of one algorithm to a key of another (for instance an
//! HS256 token "signed" with an RSA public key as the HMAC secret) is
//! refused. HMAC signatures are compared in constant time (jsonwebtoken
//! compares them with `ring::constant_time::verify_slices_are_equal`), and
//! [`Authenticator::check_basic`] compares with `subtle`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{AuthError, Result};
use crate::model::NodeKey;
use crate::time::Timestamp;

/// The scope entry that grants the admin role.
pub const ADMIN_SCOPE: &str = "admin";

/// The user name of the original's browser login (HTTP Basic).
pub const BASIC_USER: &str = "admin";

/// Why a Basic admin login is refused when no password is configured for
/// it (see [`Authenticator::has_operator_password`]).
pub const NO_OPERATOR_PASSWORD: &str = "no operator password: set operator_password_hash \
     (mediator hash-password) or secret_as_password";

/// The default tolerance for clock skew between whoever minted a token and
/// the mediator.
///
/// The original's children mint their own tokens with `iat` set to their own
/// clock, so a child whose clock runs a few seconds ahead must not be locked
/// out; 30 seconds absorbs ordinary NTP drift while keeping an expired token
/// usable for at most half a minute.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The claims of a mediator token.
///
/// Times are whole seconds since the Unix epoch, as JWTs write them.
///
/// ```
/// use mediator_core::{Claims, NodeKey, Timestamp};
/// use std::time::Duration;
/// let now = Timestamp::from_millis(1_700_000_000_000);
/// let key = NodeKey::named("billing", "worker-1").unwrap();
/// let claims = Claims::node(&key, now, Duration::from_secs(3600)).with_scope(vec!["users".into()]);
/// assert_eq!(claims.sub.as_deref(), Some("billing/worker-1"));
/// assert_eq!(claims.exp, 1_700_003_600);
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Claims {
    /// The node the token was minted for, `group/name` (`group/` for the
    /// unnamed node); `None` for operator tokens and the original's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The groups the holder may call (`None`: any); `"admin"` grants the
    /// admin role. Read from a JSON array or a space-separated string.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scope_from_array_or_string"
    )]
    pub scope: Option<Vec<String>>,
}

impl Claims {
    /// Claims for a node, valid from `now` for `ttl`, with no scope limit.
    pub fn node(key: &NodeKey, now: Timestamp, ttl: Duration) -> Claims {
        Claims {
            sub: Some(key.to_string()),
            exp: (now + ttl).as_secs(),
            iat: now.as_secs(),
            nbf: None,
            scope: None,
        }
    }

    /// Claims for an operator: the admin role, no node identity.
    pub fn admin(now: Timestamp, ttl: Duration) -> Claims {
        Claims {
            sub: None,
            exp: (now + ttl).as_secs(),
            iat: now.as_secs(),
            nbf: None,
            scope: Some(vec![ADMIN_SCOPE.to_owned()]),
        }
    }

    /// Limits the groups the holder may call (add `"admin"` for the admin role).
    pub fn with_scope(mut self, scope: Vec<String>) -> Claims {
        self.scope = Some(scope);
        self
    }
}

fn scope_from_array_or_string<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scope {
        List(Vec<String>),
        Spaced(String),
    }
    Ok(match Option::<Scope>::deserialize(d)? {
        None => None,
        Some(Scope::List(list)) => Some(list),
        Some(Scope::Spaced(text)) => Some(text.split_whitespace().map(str::to_owned).collect()),
    })
}

/// Who the caller is, once its token has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The node the token was minted for; `None` for operator tokens, the
    /// original's tokens and in-process callers.
    pub key: Option<NodeKey>,
    /// Whether the token's own claims establish who holds it (a `sub`, or an
    /// operator token with a `scope`). `false` only for the original's
    /// identity-less tokens, which anyone holding the secret mints for
    /// itself: whatever such a caller says about itself is unproven.
    pub verified: bool,
    /// Whether the holder has the admin role.
    pub admin: bool,
    /// The groups the holder may call; `None`: any.
    pub scope: Option<Vec<String>>,
    /// When the token expires.
    pub expires: Timestamp,
}

impl Identity {
    /// Whether the holder may call a node of `group`: any group without a
    /// scope or with the admin role, otherwise only the groups listed.
    pub fn may_call(&self, group: &str) -> bool {
        match &self.scope {
            None => true,
            Some(scope) => scope.iter().any(|s| s == ADMIN_SCOPE || s == group),
        }
    }

    /// Whether this is the verified identity of node `key`.
    pub fn is_node(&self, key: &NodeKey) -> bool {
        self.verified && self.key.as_ref() == Some(key)
    }

    /// The identity of an in-process caller (the composing application,
    /// tests): admin, verified, no node key, never expires.
    pub fn internal() -> Identity {
        Identity {
            key: None,
            verified: true,
            admin: true,
            scope: None,
            expires: Timestamp::from_millis(i64::MAX),
        }
    }
}

/// Mints tokens; held by whoever issues them (the `mediator token` command,
/// the `/token` route, tests).
///
/// `Debug` shows the algorithm only.
#[derive(Clone)]
pub struct TokenMinter {
    algorithm: Algorithm,
    key: EncodingKey,
    empty_secret: bool,
}

impl TokenMinter {
    /// Mints HS256 tokens with a shared secret.
    pub fn hs256(secret: impl AsRef<[u8]>) -> TokenMinter {
        let secret = secret.as_ref();
        TokenMinter {
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret),
            empty_secret: secret.is_empty(),
        }
    }

    /// Mints EdDSA (Ed25519) tokens with a PKCS#8 private key in PEM, as
    /// `openssl genpkey -algorithm ed25519` writes it.
    pub fn eddsa_private_pem(pem: &[u8]) -> Result<TokenMinter, AuthError> {
        let key = EncodingKey::from_ed_pem(pem)
            .map_err(|e| AuthError::Key(format!("not an Ed25519 private key in PEM ({e})")))?;
        Ok(TokenMinter {
            algorithm: Algorithm::EdDSA,
            key,
            empty_secret: false,
        })
    }

    /// Mints RS256 tokens with an RSA private key in PKCS#1 PEM
    /// (`-----BEGIN RSA PRIVATE KEY-----`).
    pub fn rs256_private_pem(pem: &[u8]) -> Result<TokenMinter, AuthError> {
        let key = EncodingKey::from_rsa_pem(pem)
            .map_err(|e| AuthError::Key(format!("not an RSA private key in PEM ({e})")))?;
        Ok(TokenMinter {
            algorithm: Algorithm::RS256,
            key,
            empty_secret: false,
        })
    }

    /// Signs `claims` into a compact JWT.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        if self.empty_secret {
            return Err(AuthError::Key(
                "the HS256 secret is empty; anyone could mint tokens with it".into(),
            ));
        }
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key)
            .map_err(|e| AuthError::Key(format!("could not sign the token ({e})")))
    }
}

impl fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenMinter")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The key a token is checked against.
#[derive(Clone)]
enum Verifier {
    Hs256 { secret: Arc<[u8]>, key: DecodingKey },
    EdDsa(DecodingKey),
    Rs256(DecodingKey),
}

impl Verifier {
    fn algorithm(&self) -> Algorithm {
        match self {
            Verifier::Hs256 { .. } => Algorithm::HS256,
            Verifier::EdDsa(_) => Algorithm::EdDSA,
            Verifier::Rs256(_) => Algorithm::RS256,
        }
    }

    fn algorithm_name(&self) -> &'static str {
        match self {
            Verifier::Hs256 { .. } => "HS256",
            Verifier::EdDsa(_) => "EdDSA",
            Verifier::Rs256(_) => "RS256",
        }
    }

    fn key(&self) -> &DecodingKey {
        match self {
            Verifier::Hs256 { key, .. } | Verifier::EdDsa(key) | Verifier::Rs256(key) => key,
        }
    }
}

/// Checks tokens and turns them into an [`Identity`].
///
/// Cloning is cheap; `Debug` shows no secret. See the [module
/// documentation](self) for the rules.
///
/// ```
/// use mediator_core::{Authenticator, Claims, NodeKey, Timestamp};
/// use std::time::Duration;
///
/// let auth = Authenticator::hs256("a long random secret");
/// let minter = auth.minter().expect("an HS256 authenticator can mint");
/// let now = Timestamp::now();
/// let key = NodeKey::named("billing", "worker-1")?;
/// let token = minter.mint(&Claims::node(&key, now, Duration::from_secs(3600)))?;
///
/// let who = auth.authenticate(&token, now)?;
/// assert!(who.is_node(&key));
/// assert!(who.may_call("users"));
/// assert!(!who.admin);
///
/// // Two hours later the token has expired.
/// assert!(auth.authenticate(&token, now + Duration::from_secs(7200)).is_err());
/// // The original's browser login (user "admin", password = the secret)
/// // only where the operator asks for it.
/// assert!(!auth.check_basic("admin", "a long random secret"));
/// let original = auth.with_secret_as_password(true);
/// assert!(original.check_basic("admin", "a long random secret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Authenticator {
    verifier: Verifier,
    allow_without_sub: bool,
    leeway: Duration,
    audience: Option<String>,
    basic_login: bool,
    operator_password: Option<PasswordHash>,
    secret_as_password: bool,
    /// Tokens this authenticator has accepted: shared by its clones, and
    /// replaced whenever a setting that decides acceptance changes.
    verified: Arc<VerifiedTokens>,
}

/// Tokens already verified, by a 128-bit keyed hash of their text, with
/// their claims and identity: a caller presenting the same token again
/// skips parsing and the signature check (most of the cost of a request's
/// authentication), while its times are still checked on every use.
///
/// Keyed by hash rather than by the token itself, so looking a token up
/// compares hashes, never a presented token with a valid one byte by byte.
/// The hash is two SipHash-1-3 runs under keys drawn at random for each
/// memory: nobody outside the process can compute it, so nobody can make
/// a forged token collide with a remembered one (by chance: 2^-128). It
/// costs a tenth of a SHA-256 of the token, on every request.
/// Bounded: past [`VerifiedTokens::CAPACITY`] entries it starts afresh.
/// Behind a read-write lock: every request reads it, only a token's first
/// use writes.
#[derive(Default)]
struct VerifiedTokens {
    keys: [std::collections::hash_map::RandomState; 2],
    entries: std::sync::RwLock<std::collections::HashMap<u128, (Claims, Identity)>>,
}

impl VerifiedTokens {
    /// Most tokens kept; enough for every node of a large deployment.
    const CAPACITY: usize = 16_384;

    fn digest(&self, token: &str) -> u128 {
        use std::hash::BuildHasher;
        let [low, high] = &self.keys;
        (u128::from(high.hash_one(token)) << 64) | u128::from(low.hash_one(token))
    }

    // A panic while holding the lock leaves a map of whole entries, so a
    // poisoned lock is used as it is.
    fn get(&self, key: u128) -> Option<(Claims, Identity)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(&key).cloned()
    }

    fn insert(&self, key: u128, claims: Claims, identity: Identity) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::CAPACITY {
            entries.clear();
        }
        entries.insert(key, (claims, identity));
    }
}

/// The operator's password for the Basic admin login, as an Argon2 hash in
/// the PHC string format (`$argon2id$v=19$m=...`): the mediator can check
/// a password without holding it.
///
/// ```
/// use mediator_core::auth::PasswordHash;
/// let hash = PasswordHash::generate("correct horse battery staple")?;
/// assert!(hash.verify("correct horse battery staple"));
/// assert!(!hash.verify("wrong"));
/// let again: PasswordHash = hash.to_string().parse()?;
/// assert!(again.verify("correct horse battery staple"));
/// # Ok::<(), mediator_core::AuthError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Hashes `password` with Argon2id, its default parameters and a fresh
    /// random salt.
    pub fn generate(password: &str) -> Result<PasswordHash, AuthError> {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| AuthError::Key(format!("salt: {e}")))?;
        let hash = argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| AuthError::Key(format!("hashing the password: {e}")))?;
        Ok(PasswordHash(hash.to_string()))
    }

    /// Whether `password` is the one hashed; constant-time in the hash.
    pub fn verify(&self, password: &str) -> bool {
        use argon2::password_hash::PasswordVerifier;
        // Parsed when built, so this only fails on a wrong password.
        argon2::password_hash::PasswordHash::new(&self.0).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }
}

impl std::str::FromStr for PasswordHash {
    type Err = AuthError;
    /// Reads a PHC string, as `mediator hash-password` prints it.
    fn from_str(s: &str) -> Result<Self, AuthError> {
        let s = s.trim();
        let parsed = argon2::password_hash::PasswordHash::new(s)
            .map_err(|e| AuthError::Key(format!("not a password hash in PHC format: {e}")))?;
        if !parsed.algorithm.as_str().starts_with("argon2") || parsed.hash.is_none() {
            return Err(AuthError::Key("not an Argon2 password hash".into()));
        }
        Ok(PasswordHash(s.to_owned()))
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not the password, but still a target for guessing.
        f.write_str("PasswordHash(..)")
    }
}

impl Authenticator {
    fn with_verifier(verifier: Verifier) -> Authenticator {
        Authenticator {
            verifier,
            allow_without_sub: false,
            leeway: DEFAULT_LEEWAY,
            audience: None,
            basic_login: true,
            operator_password: None,
            secret_as_password: false,
            verified: Arc::default(),
        }
    }

    /// Checks HS256 tokens with a shared secret (the original's
    /// `PROTECTED_BASIC_AND_JWT`); can also mint them.
    ///
    /// An empty secret refuses every token and every login: anyone could
    /// sign with it.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Authenticator {
        let secret = secret.as_ref();
        Authenticator::with_verifier(Verifier::Hs256 {
            secret: Arc::from(secret),
            key: DecodingKey::from_secret(secret),
        })
    }

    /// Checks EdDSA (Ed25519) tokens with a public key in PEM
    /// (`-----BEGIN PUBLIC KEY-----`). Verify-only: cannot mint.
    pub fn eddsa_public_pem(pem: &[u8]) -> Result<Authenticator, AuthError> {
        let key = DecodingKey::from_ed_pem(pem)
            .map_err(|e| AuthError::Key(format!("not an Ed25519 public key in PEM ({e})")))?;
        Ok(Authenticator::with_verifier(Verifier::EdDsa(key)))
    }

    /// Checks RS256 tokens with an RSA public key in PEM (`PUBLIC KEY` or
    /// `RSA PUBLIC KEY`). Verify-only: cannot mint.
    pub fn rs256_public_pem(pem: &[u8]) -> Result<Authenticator, AuthError> {
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|e| AuthError::Key(format!("not an RSA public key in PEM ({e})")))?;
        Ok(Authenticator::with_verifier(Verifier::Rs256(key)))
    }

    /// Accepts tokens with neither `sub` nor `scope`, the original's kind
    /// (default: refused). Their holders get every power, as in the
    /// original, but no identity; only turn this on for the original's
    /// children.
    pub fn allow_tokens_without_sub(mut self, allow: bool) -> Authenticator {
        self.allow_without_sub = allow;
        self.verified = Arc::default();
        self
    }

    /// The tolerance for clock skew on `exp`, `nbf` and `iat` (default
    /// [`DEFAULT_LEEWAY`], 30 seconds).
    pub fn with_leeway(mut self, leeway: Duration) -> Authenticator {
        self.leeway = leeway;
        self
    }

    /// Accepts tokens whose `aud` names `audience` (tokens without `aud`
    /// are still accepted). Without this, any token carrying `aud` is
    /// refused, as RFC 7519 requires of a recipient it does not name.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Authenticator {
        self.audience = Some(audience.into());
        self.verified = Arc::default();
        self
    }

    /// Whether the Basic admin login (HTTP Basic, user `admin`) is accepted
    /// at all, as an operator with every power and no node identity. On by
    /// default; it checks the operator password
    /// ([`with_operator_password`](Self::with_operator_password)) or, where
    /// allowed, the HS256 secret
    /// ([`with_secret_as_password`](Self::with_secret_as_password)), and
    /// refuses every login without either.
    pub fn with_basic_login(mut self, allow: bool) -> Authenticator {
        self.basic_login = allow;
        self
    }

    /// Checks the Basic admin login (user `admin`) against this password
    /// hash instead of the HS256 secret, so that the operator's password
    /// is not the key every token is signed with. Also works with
    /// verify-only keys. Turns off the secret as a password unless
    /// [`with_secret_as_password`](Self::with_secret_as_password) is given
    /// after it.
    pub fn with_operator_password(mut self, hash: PasswordHash) -> Authenticator {
        self.operator_password = Some(hash);
        self.secret_as_password = false;
        self
    }

    /// Whether the HS256 secret is also accepted as the admin password, as
    /// the original does (default: no; the key every token is signed with
    /// should not also be typed into browsers). Turn it on only for the
    /// original's children and operators' habits.
    pub fn with_secret_as_password(mut self, allow: bool) -> Authenticator {
        self.secret_as_password = allow;
        self
    }

    /// The algorithm this authenticator accepts: `HS256`, `EdDSA` or `RS256`.
    pub fn algorithm(&self) -> &'static str {
        self.verifier.algorithm_name()
    }

    /// Checks `token` at time `now`; every refusal is
    /// [`AuthError::Refused`] with the reason.
    pub fn authenticate(&self, token: &str, now: Timestamp) -> Result<Identity, AuthError> {
        if let Verifier::Hs256 { secret, .. } = &self.verifier {
            if secret.is_empty() {
                return Err(AuthError::Key(
                    "the HS256 secret is empty; no token can be trusted".into(),
                ));
            }
        }
        let key = self.verified.digest(token);
        if let Some((claims, identity)) = self.verified.get(key) {
            self.check_times(&claims, now)?;
            return Ok(identity);
        }
        self.check_header(token)?;
        let claims = self.verify_signature(token)?;
        self.check_times(&claims, now)?;
        let identity = self.identity(claims.clone())?;
        self.verified.insert(key, claims, identity.clone());
        Ok(identity)
    }

    /// Refuses, before any cryptography, a token whose header names another
    /// algorithm than the key's (`none` included).
    fn check_header(&self, token: &str) -> Result<(), AuthError> {
        let parts = token.split('.').count();
        if parts != 3 {
            return Err(unauthorized(format!(
                "malformed token: a JWT has 3 dot-separated parts, this one has {parts}"
            )));
        }
        let expected = self.verifier.algorithm_name();
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            unauthorized(match e.into_kind() {
                ErrorKind::Base64(e) => format!("malformed token: header is not base64url ({e})"),
                // An `alg` outside the algorithms JWT libraries implement
                // (`none` among them) fails to parse here.
                ErrorKind::Json(e) if e.to_string().contains("unknown variant") => {
                    format!("algorithm not allowed: {e} (this mediator accepts {expected} only)")
                }
                ErrorKind::Json(e) if e.to_string().contains("missing field `alg`") => {
                    "malformed token: header names no alg".to_owned()
                }
                ErrorKind::Json(e) => format!("malformed token: header is not JSON ({e})"),
                other => format!("malformed token header ({other:?})"),
            })
        })?;
        if header.alg != self.verifier.algorithm() {
            return Err(unauthorized(format!(
                "algorithm not allowed: {:?} (this mediator accepts {expected} only)",
                header.alg
            )));
        }
        Ok(())
    }

    fn verify_signature(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(self.verifier.algorithm());
        // Times are checked by `check_times` against the caller's `now`, so
        // tests and simulations can drive the clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        if let Some(aud) = &self.audience {
            validation.set_audience(&[aud]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, self.verifier.key(), &validation)
            .map_err(|e| {
                let expected = self.verifier.algorithm_name();
                unauthorized(match e.into_kind() {
                    ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => "bad signature".into(),
                    ErrorKind::InvalidAlgorithm => {
                        format!("algorithm not allowed (this mediator accepts {expected} only)")
                    }
                    ErrorKind::InvalidToken => "malformed token".into(),
                    ErrorKind::Base64(e) => format!("malformed token: bad base64url ({e})"),
                    ErrorKind::Json(e) => format!("malformed token: {e}"),
                    ErrorKind::Utf8(_) => "malformed token: not UTF-8".into(),
                    ErrorKind::InvalidAudience => {
                        "the token is meant for another audience (aud)".into()
                    }
                    other => format!("token refused ({other:?})"),
                })
            })?;
        Ok(data.claims)
    }

    fn check_times(&self, claims: &Claims, now: Timestamp) -> Result<(), AuthError> {
        let leeway = i64::try_from(self.leeway.as_millis()).unwrap_or(i64::MAX);
        let now = now.as_millis();
        let at = |secs: i64| Timestamp::from_millis(secs.saturating_mul(1000));
        let exp = at(claims.exp);
        if now >= exp.as_millis().saturating_add(leeway) {
            return Err(unauthorized(format!(
                "token expired at {}",
                exp.to_rfc3339()
            )));
        }
        if let Some(nbf) = claims.nbf.map(at) {
            if nbf.as_millis() > now.saturating_add(leeway) {
                return Err(unauthorized(format!(
                    "token not valid before {}",
                    nbf.to_rfc3339()
                )));
            }
        }
        let iat = at(claims.iat);
        if iat.as_millis() > now.saturating_add(leeway) {
            return Err(unauthorized(format!(
                "token issued in the future ({}); check the clocks",
                iat.to_rfc3339()
            )));
        }
        Ok(())
    }

    fn identity(&self, claims: Claims) -> Result<Identity, AuthError> {
        let expires = Timestamp::from_millis(claims.exp.saturating_mul(1000));
        let admin = claims
            .scope
            .as_ref()
            .is_some_and(|s| s.iter().any(|e| e == ADMIN_SCOPE));
        match (claims.sub, claims.scope) {
            (Some(sub), scope) => {
                let key = parse_sub(&sub)?;
                Ok(Identity {
                    key: Some(key),
                    verified: true,
                    admin,
                    scope,
                    expires,
                })
            }
            (None, Some(scope)) => Ok(Identity {
                key: None,
                verified: true,
                admin,
                scope: Some(scope),
                expires,
            }),
            (None, None) if self.allow_without_sub => Ok(Identity {
                key: None,
                verified: false,
                admin: true,
                scope: None,
                expires,
            }),
            (None, None) => Err(unauthorized(
                "token has no sub: it names no node (the original's tokens do not); \
                 such tokens are refused unless the operator allows them"
                    .into(),
            )),
        }
    }

    /// The Basic admin login: user `admin`, password = the operator
    /// password, or the HS256 secret where
    /// [allowed](Self::with_secret_as_password). Compared in constant time;
    /// the secret never matches for verify-only keys or when empty.
    pub fn check_basic(&self, user: &str, password: &str) -> bool {
        let user_ok: bool = user.as_bytes().ct_eq(BASIC_USER.as_bytes()).into();
        // Both checks always run, so timing tells nothing of which failed.
        let by_hash = self
            .operator_password
            .as_ref()
            .is_some_and(|hash| hash.verify(password));
        let by_secret = match &self.verifier {
            Verifier::Hs256 { secret, .. } if self.secret_as_password && !secret.is_empty() => {
                password.as_bytes().ct_eq(secret.as_ref()).into()
            }
            _ => false,
        };
        user_ok & (by_hash | by_secret)
    }

    /// The original's browser login, if [allowed](Self::with_basic_login):
    /// an operator with every power and no node identity.
    pub(crate) fn basic_login(
        &self,
        user: &str,
        password: &str,
        now: Timestamp,
    ) -> Result<Identity, AuthError> {
        if !self.basic_login {
            return Err(unauthorized(
                "password login is turned off; send a token".to_owned(),
            ));
        }
        if !self.has_operator_password() {
            return Err(unauthorized(NO_OPERATOR_PASSWORD.to_owned()));
        }
        if !self.check_basic(user, password) {
            return Err(unauthorized("wrong user or password".to_owned()));
        }
        // A password does not expire; the session it opens is checked anew
        // on every request.
        let _ = now;
        Ok(Identity {
            key: None,
            verified: true,
            admin: true,
            scope: None,
            expires: Timestamp::from_millis(i64::MAX),
        })
    }

    /// Whether the Basic admin login has a password to check: an operator
    /// password hash, or the HS256 secret allowed as the password. Without
    /// one every Basic login is refused with [`NO_OPERATOR_PASSWORD`],
    /// while admin tokens keep working.
    pub fn has_operator_password(&self) -> bool {
        let secret_usable = match &self.verifier {
            Verifier::Hs256 { secret, .. } => self.secret_as_password && !secret.is_empty(),
            Verifier::EdDsa(_) | Verifier::Rs256(_) => false,
        };
        self.operator_password.is_some() || secret_usable
    }

    /// A minter for the same secret; `None` for verify-only keys.
    pub fn minter(&self) -> Option<TokenMinter> {
        match &self.verifier {
            Verifier::Hs256 { secret, .. } => Some(TokenMinter::hs256(secret)),
            Verifier::EdDsa(_) | Verifier::Rs256(_) => None,
        }
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.verifier.algorithm_name())
            .field("allow_tokens_without_sub", &self.allow_without_sub)
            .field("leeway", &self.leeway)
            .field("audience", &self.audience)
            .field("basic_login", &self.basic_login)
            .field("operator_password", &self.operator_password.is_some())
            .field("secret_as_password", &self.secret_as_password)
            .finish()
    }
}

fn unauthorized(reason: String) -> AuthError {
    AuthError::Refused(reason)
}

/// A `sub` must be `group/name` or `group/`; a bare word is refused so that
/// a user name from another issuer is never taken for a node.
fn parse_sub(sub: &str) -> Result<NodeKey, AuthError> {
    if !sub.contains('/') {
        return Err(unauthorized(format!(
            "bad sub {sub:?}: must be group/name, or group/ for a group's unnamed node"
        )));
    }
    sub.parse::<NodeKey>()
        .map_err(|e| unauthorized(format!("bad sub {sub:?}: {e}")))
}

#[cfg(test)]
mod tests {
    //! The PEM files under `auth/` are throwaway test keys, made with
    //! `openssl genpkey -algorithm ed25519` and
    //! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | openssl pkey -traditional`
    //! (public halves with `openssl pkey -pubout`).

    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const SECRET: &str = "test secret, long enough to be realistic";
    const ED_PRIVATE: &[u8] = include_bytes!("auth/test-ed25519.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("auth/test-ed25519.pub.pem");
    const RSA_PRIVATE: &[u8] = include_bytes!("auth/test-rsa.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("auth/test-rsa.pub.pem");

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000)
    }

    fn key(s: &str) -> NodeKey {
        s.parse().expect("valid key")
    }

    fn hs() -> Authenticator {
        Authenticator::hs256(SECRET)
    }

    fn mint(claims: &Claims) -> String {
        TokenMinter::hs256(SECRET).mint(claims).expect("mint")
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn refusal(r: Result<Identity, AuthError>) -> String {
        match r {
            Err(AuthError::Refused(why)) => why,
            other => panic!("expected Error::Unauthorized, got {other:?}"),
        }
    }

    #[test]
    fn node_token_round_trip() {
        let k = key("billing/worker-1");
        let token = mint(&Claims::node(&k, now(), HOUR));
        let who = hs().authenticate(&token, now()).expect("valid");
        assert_eq!(
            who,
            Identity {
                key: Some(k.clone()),
                verified: true,
                admin: false,
                scope: None,
                expires: now() + HOUR,
            }
        );
        assert!(who.is_node(&k));
        assert!(!who.is_node(&key("billing/worker-2")));
        assert!(!who.is_node(&key("billing/")));
        assert!(who.may_call("anything"));
    }

    #[test]
    fn unnamed_node_sub() {
        let k = key("billing/");
        let token = mint(&Claims::node(&k, now(), HOUR));
        let who = hs().authenticate(&token, now()).expect("valid");
        assert_eq!(who.key, Some(k.clone()));
        assert!(who.is_node(&k));
    }

    #[test]
    fn scope_limits_groups_and_admin_opens_all() {
        let k = key("billing/worker-1");
        let token = mint(&Claims::node(&k, now(), HOUR).with_scope(vec!["users".into()]));
        let who = hs().authenticate(&token, now()).expect("valid");
        assert!(who.may_call("users"));
        assert!(!who.may_call("payments"));
        assert!(!who.admin);

        let admin = mint(&Claims::admin(now(), HOUR));
        let who = hs().authenticate(&admin, now()).expect("valid");
        assert!(who.admin && who.verified);
        assert_eq!(who.key, None);
        assert!(who.may_call("payments"));

        let both = mint(&Claims::node(&k, now(), HOUR).with_scope(vec!["admin".into()]));
        let who = hs().authenticate(&both, now()).expect("valid");
        assert!(who.admin && who.is_node(&k) && who.may_call("x"));

        let none = mint(&Claims::node(&k, now(), HOUR).with_scope(vec![]));
        let who = hs().authenticate(&none, now()).expect("valid");
        assert!(!who.may_call("users"));
    }

    #[test]
    fn scope_as_a_space_separated_string() {
        let payload = format!(
            r#"{{"sub":"a/b","iat":{},"exp":{},"scope":"users admin"}}"#,
            now().as_secs(),
            (now() + HOUR).as_secs()
        );
        let token = hand_signed(&payload);
        let who = hs().authenticate(&token, now()).expect("valid");
        assert_eq!(who.scope, Some(vec!["users".into(), "admin".into()]));
        assert!(who.admin);
    }

    /// An HS256 token over an arbitrary payload, signed with the test secret.
    fn hand_signed(payload: &str) -> String {
        let header = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
        let message = format!("{header}.{}", b64(payload));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{signature}")
    }

    #[test]
    fn expired() {
        let token = mint(&Claims::node(&key("a/b"), now(), HOUR));
        let exp = now() + HOUR;
        // Within the leeway it still passes; at exp + leeway it does not.
        assert!(hs().authenticate(&token, exp).is_ok());
        assert!(hs()
            .authenticate(&token, exp + DEFAULT_LEEWAY - Duration::from_millis(1))
            .is_ok());
        let why = refusal(hs().authenticate(&token, exp + DEFAULT_LEEWAY));
        assert_eq!(why, "token expired at 2023-11-14T23:13:20.000Z");
        let strict = hs().with_leeway(Duration::ZERO);
        assert!(strict.authenticate(&token, exp).is_err());
        assert!(strict
            .authenticate(&token, exp - Duration::from_millis(1))
            .is_ok());
    }

    /// Times at the ends of the range neither overflow nor wrap into validity.
    #[test]
    fn extreme_times() {
        let n = now().as_secs();
        let cases: [(i64, i64, Option<i64>, bool); 7] = [
            (i64::MAX, n, None, true),
            (i64::MAX, i64::MIN, Some(i64::MIN), true),
            (n + 3600, -1, None, true),
            (i64::MIN, i64::MIN, None, false),
            (-1, -2, None, false),
            (n + 3600, n, Some(i64::MAX), false),
            (n + 3600, i64::MAX, None, false),
        ];
        for (exp, iat, nbf, ok) in cases {
            let nbf = nbf.map_or(String::new(), |v| format!(r#","nbf":{v}"#));
            let token = hand_signed(&format!(r#"{{"sub":"a/b","exp":{exp},"iat":{iat}{nbf}}}"#));
            for auth in [hs(), hs().with_leeway(Duration::MAX)] {
                let got = auth.authenticate(&token, now());
                let lenient = auth.leeway == Duration::MAX;
                // An unbounded leeway forgives every time but an expiry at
                // the very start of the range.
                let expected = ok || (lenient && exp != i64::MIN);
                assert_eq!(
                    got.is_ok(),
                    expected,
                    "exp {exp} iat {iat}{nbf} leeway {:?}: {got:?}",
                    auth.leeway
                );
            }
        }
        // Exactly at expiry, without leeway, a token is expired (as a lease is).
        let token = mint(&Claims::node(&key("a/b"), now(), HOUR));
        let strict = hs().with_leeway(Duration::ZERO);
        assert!(strict.authenticate(&token, now() + HOUR).is_err());
    }

    #[test]
    fn not_yet_valid() {
        let later = now() + HOUR;
        let mut claims = Claims::node(&key("a/b"), now(), 2 * HOUR);
        claims.nbf = Some(later.as_secs());
        let token = mint(&claims);
        let why = refusal(hs().authenticate(&token, now()));
        assert_eq!(why, "token not valid before 2023-11-14T23:13:20.000Z");
        assert!(hs().authenticate(&token, later).is_ok());
        assert!(hs().authenticate(&token, later - DEFAULT_LEEWAY).is_ok());

        let future = mint(&Claims::node(&key("a/b"), later, HOUR));
        let why = refusal(hs().authenticate(&future, now()));
        assert!(why.starts_with("token issued in the future"), "{why}");
        // A clock slightly ahead is within the leeway.
        let skewed = mint(&Claims::node(
            &key("a/b"),
            now() + Duration::from_secs(10),
            HOUR,
        ));
        assert!(hs().authenticate(&skewed, now()).is_ok());
    }

    #[test]
    fn wrong_secret() {
        let token = TokenMinter::hs256("another secret")
            .mint(&Claims::node(&key("a/b"), now(), HOUR))
            .expect("mint");
        assert_eq!(refusal(hs().authenticate(&token, now())), "bad signature");
    }

    #[test]
    fn alg_none_is_refused() {
        let payload = b64(&format!(
            r#"{{"sub":"a/b","iat":{},"exp":{}}}"#,
            now().as_secs(),
            (now() + HOUR).as_secs()
        ));
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None","typ":"JWT"}"#,
            r#"{"alg":"NONE"}"#,
        ] {
            let token = format!("{}.{payload}.", b64(header));
            let why = refusal(hs().with_leeway(HOUR).authenticate(&token, now()));
            assert!(why.starts_with("algorithm not allowed"), "{why}");
            let ed = Authenticator::eddsa_public_pem(ED_PUBLIC).expect("pem");
            let why = refusal(ed.authenticate(&token, now()));
            assert!(why.starts_with("algorithm not allowed"), "{why}");
        }
    }

    #[test]
    fn eddsa_tokens() {
        let minter = TokenMinter::eddsa_private_pem(ED_PRIVATE).expect("pem");
        let auth = Authenticator::eddsa_public_pem(ED_PUBLIC).expect("pem");
        assert!(auth.minter().is_none());
        assert_eq!(auth.algorithm(), "EdDSA");
        let k = key("users/api");
        let token = minter.mint(&Claims::node(&k, now(), HOUR)).expect("mint");
        assert!(auth.authenticate(&token, now()).expect("valid").is_node(&k));
        // Tampered payload.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64(&format!(
            r#"{{"sub":"admin/x","iat":{},"exp":{},"scope":["admin"]}}"#,
            now().as_secs(),
            (now() + HOUR).as_secs()
        ));
        assert_eq!(
            refusal(auth.authenticate(&parts.join("."), now())),
            "bad signature"
        );
    }

    #[test]
    fn rs256_tokens() {
        let minter = TokenMinter::rs256_private_pem(RSA_PRIVATE).expect("pem");
        let auth = Authenticator::rs256_public_pem(RSA_PUBLIC).expect("pem");
        assert!(auth.minter().is_none());
        let k = key("users/api");
        let token = minter.mint(&Claims::node(&k, now(), HOUR)).expect("mint");
        assert!(auth.authenticate(&token, now()).expect("valid").is_node(&k));
        let other = Authenticator::eddsa_public_pem(ED_PUBLIC).expect("pem");
        assert!(refusal(other.authenticate(&token, now())).starts_with("algorithm not allowed"));
    }

    #[test]
    fn algorithm_switching_is_refused_both_ways() {
        let claims = Claims::node(&key("a/b"), now(), HOUR);

        // An asymmetric token presented to the HS256 authenticator.
        let ed_token = TokenMinter::eddsa_private_pem(ED_PRIVATE)
            .expect("pem")
            .mint(&claims)
            .expect("mint");
        let why = refusal(hs().authenticate(&ed_token, now()));
        assert_eq!(
            why,
            "algorithm not allowed: EdDSA (this mediator accepts HS256 only)"
        );
        let rs_token = TokenMinter::rs256_private_pem(RSA_PRIVATE)
            .expect("pem")
            .mint(&claims)
            .expect("mint");
        assert!(refusal(hs().authenticate(&rs_token, now())).starts_with("algorithm not allowed"));

        // The classic confusion: HS256 "signed" with the public key as the
        // HMAC secret, presented to the asymmetric authenticators.
        for (pem, auth) in [
            (
                ED_PUBLIC,
                Authenticator::eddsa_public_pem(ED_PUBLIC).expect("pem"),
            ),
            (
                RSA_PUBLIC,
                Authenticator::rs256_public_pem(RSA_PUBLIC).expect("pem"),
            ),
        ] {
            let forged = TokenMinter::hs256(pem).mint(&claims).expect("mint");
            let why = refusal(auth.authenticate(&forged, now()));
            assert!(why.starts_with("algorithm not allowed: HS256"), "{why}");
            // Even a header claiming the right algorithm does not help: the
            // HMAC is not a valid signature.
            let mut parts: Vec<String> = forged.split('.').map(str::to_owned).collect();
            parts[0] = b64(&format!(r#"{{"alg":"{}","typ":"JWT"}}"#, auth.algorithm()));
            let why = refusal(auth.authenticate(&parts.join("."), now()));
            assert_eq!(why, "bad signature");
        }

        // HS384 with the right secret is still not HS256.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode");
        assert!(
            refusal(hs().authenticate(&hs384, now())).starts_with("algorithm not allowed: HS384")
        );
    }

    #[test]
    fn malformed_tokens() {
        let auth = hs();
        let good = mint(&Claims::node(&key("a/b"), now(), HOUR));
        let parts: Vec<&str> = good.split('.').collect();
        let payload_ok = b64(&format!(
            r#"{{"sub":"a/b","iat":{},"exp":{}}}"#,
            now().as_secs(),
            (now() + HOUR).as_secs()
        ));
        let cases: Vec<(String, &str)> = vec![
            (
                "".into(),
                "malformed token: a JWT has 3 dot-separated parts, this one has 1",
            ),
            ("garbage".into(), "malformed token: a JWT has 3"),
            (format!("{}.{}", parts[0], parts[1]), "this one has 2"),
            (format!("{good}.x"), "this one has 4"),
            (
                format!("!!.{}.{}", parts[1], parts[2]),
                "header is not base64url",
            ),
            (
                format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
                "header is not JSON",
            ),
            (
                format!("{}.{}.{}", b64(r#"{"typ":"JWT"}"#), parts[1], parts[2]),
                "header names no alg",
            ),
            (format!("{}.!!.{}", parts[0], parts[2]), "bad signature"),
            (format!("{}.{}.!!", parts[0], parts[1]), "bad"),
            (hand_signed("not json"), "malformed token"),
            (
                hand_signed(r#"{"sub":"a/b"}"#),
                "malformed token: missing field `exp`",
            ),
            (
                hand_signed(r#"{"sub":"a/b","exp":"soon","iat":1}"#),
                "malformed token",
            ),
            (
                format!("{}.{payload_ok}.{}", parts[0], parts[2]),
                "bad signature",
            ),
        ];
        for (token, expected) in cases {
            let why = refusal(auth.authenticate(&token, now()));
            assert!(why.contains(expected), "{token:?}: {why}");
        }
        // Bad JSON that is correctly signed reaches the claims parser.
        let why = refusal(auth.authenticate(&hand_signed("[1,2]"), now()));
        assert!(why.starts_with("malformed token"), "{why}");
    }

    #[test]
    fn bad_sub() {
        let base = Claims::node(&key("a/b"), now(), HOUR);
        let long = format!("{}/x", "g".repeat(51));
        for sub in ["", "billing", "bad group/x", "a/b/c", "/x", "a/b c", &long] {
            let token = mint(&Claims {
                sub: Some(sub.to_string()),
                ..base.clone()
            });
            let why = refusal(hs().authenticate(&token, now()));
            assert!(why.starts_with("bad sub"), "{sub:?}: {why}");
        }
    }

    #[test]
    fn a_token_accepted_once_is_still_checked_for_time_and_settings() {
        let k = key("billing/worker-1");
        let token = mint(&Claims::node(&k, now(), HOUR));
        let auth = hs();
        let first = auth.authenticate(&token, now()).expect("valid");
        // The second use is answered from the verified tokens, the same.
        assert_eq!(auth.authenticate(&token, now()), Ok(first.clone()));
        assert_eq!(auth.verified.entries.read().unwrap().len(), 1);
        // Its expiry still counts.
        let why = refusal(auth.authenticate(&token, now() + 2 * HOUR));
        assert!(why.starts_with("token expired"), "{why}");
        // A token whose signature does not match is never taken for the
        // one remembered, even with the same claims.
        let forged = format!("{}x", token);
        assert!(auth.authenticate(&forged, now()).is_err());
        // A clone that accepts different tokens starts with none remembered.
        let payload = format!(
            r#"{{"iat":{},"exp":{}}}"#,
            now().as_secs(),
            (now() + HOUR).as_secs()
        );
        let without_sub = hand_signed(&payload);
        let lenient = auth.clone().allow_tokens_without_sub(true);
        assert!(lenient.authenticate(&without_sub, now()).is_ok());
        assert!(auth.authenticate(&without_sub, now()).is_err());
        assert_eq!(auth.verified.entries.read().unwrap().len(), 1);
        // Bounded: past its capacity the memory starts afresh.
        for i in 0..VerifiedTokens::CAPACITY + 1 {
            let other = key(&format!("billing/w{i}"));
            auth.verified.insert(
                auth.verified.digest(&other.to_string()),
                Claims::node(&other, now(), HOUR),
                first.clone(),
            );
        }
        assert!(auth.verified.entries.read().unwrap().len() <= VerifiedTokens::CAPACITY);
    }

    #[test]
    fn tokens_without_sub() {
        // The original's token: payload {} plus iat and exp.
        let payload = format!(
            r#"{{"iat":{},"exp":{}}}"#,
            now().as_secs(),
            (now() + 9 * HOUR).as_secs()
        );
        let token = hand_signed(&payload);
        let why = refusal(hs().authenticate(&token, now()));
        assert!(why.starts_with("token has no sub"), "{why}");

        let lenient = hs().allow_tokens_without_sub(true);
        let who = lenient.authenticate(&token, now()).expect("allowed");
        assert_eq!(
            who,
            Identity {
                key: None,
                verified: false,
                admin: true,
                scope: None,
                expires: now() + 9 * HOUR,
            }
        );
        assert!(!who.is_node(&key("a/b")));
        // Allowing them changes nothing for tokens that do name a node.
        let k = key("a/b");
        let named = mint(&Claims::node(&k, now(), HOUR));
        assert!(lenient
            .authenticate(&named, now())
            .expect("valid")
            .is_node(&k));
    }

    #[test]
    fn audience() {
        let payload = format!(
            r#"{{"sub":"a/b","iat":{},"exp":{},"aud":"mediator"}}"#,
            now().as_secs(),
            (now() + HOUR).as_secs()
        );
        let token = hand_signed(&payload);
        let why = refusal(hs().authenticate(&token, now()));
        assert!(why.contains("audience"), "{why}");
        assert!(hs()
            .with_audience("mediator")
            .authenticate(&token, now())
            .is_ok());
        assert!(hs()
            .with_audience("other")
            .authenticate(&token, now())
            .is_err());
    }

    #[test]
    fn an_operator_password_replaces_the_secret() {
        let hash = PasswordHash::generate("operator pw").unwrap();
        let auth = hs().with_operator_password(hash.clone());
        assert!(auth.check_basic("admin", "operator pw"));
        assert!(!auth.check_basic("admin", "wrong"));
        assert!(!auth.check_basic("root", "operator pw"));
        let secret = match &auth.verifier {
            Verifier::Hs256 { secret, .. } => String::from_utf8(secret.to_vec()).unwrap(),
            _ => unreachable!("an HS256 authenticator"),
        };
        assert!(
            !auth.check_basic("admin", &secret),
            "the secret is no password now"
        );
        let both = hs()
            .with_operator_password(hash)
            .with_secret_as_password(true);
        assert!(both.check_basic("admin", &secret));
        assert!(both.check_basic("admin", "operator pw"));
        assert!("$argon2id$nonsense".parse::<PasswordHash>().is_err());
        assert!("plain".parse::<PasswordHash>().is_err());
    }

    #[test]
    fn the_secret_is_no_password_unless_allowed() {
        let auth = hs();
        assert!(!auth.has_operator_password());
        assert!(!auth.check_basic("admin", SECRET));
        let refused = auth
            .basic_login("admin", SECRET, now())
            .expect_err("no password configured");
        assert!(
            refused.to_string().contains("no operator password"),
            "{refused}"
        );
        assert!(hs().with_secret_as_password(true).has_operator_password());
        assert!(!Authenticator::hs256("")
            .with_secret_as_password(true)
            .has_operator_password());
    }

    #[test]
    fn basic_login() {
        let auth = hs().with_secret_as_password(true);
        assert!(auth.check_basic("admin", SECRET));
        assert!(!auth.check_basic("admin", "wrong"));
        assert!(!auth.check_basic("admin", &SECRET[..SECRET.len() - 1]));
        assert!(!auth.check_basic("admin", &format!("{SECRET}x")));
        assert!(!auth.check_basic("Admin", SECRET));
        assert!(!auth.check_basic("root", SECRET));
        assert!(!auth.check_basic("", ""));
        let ed = Authenticator::eddsa_public_pem(ED_PUBLIC).expect("pem");
        assert!(!ed.check_basic("admin", ""));
        assert!(!ed.check_basic("admin", std::str::from_utf8(ED_PUBLIC).expect("utf8")));
    }

    #[test]
    fn empty_secret_trusts_nothing() {
        let auth = Authenticator::hs256("");
        assert!(!auth.check_basic("admin", ""));
        let minter = auth.minter().expect("hs256");
        assert!(matches!(
            minter.mint(&Claims::admin(now(), HOUR)),
            Err(AuthError::Key(_))
        ));
        let token = hand_signed(r#"{"iat":0,"exp":99999999999,"scope":["admin"]}"#);
        assert!(matches!(
            auth.authenticate(&token, now()),
            Err(AuthError::Key(_))
        ));
    }

    #[test]
    fn minter_matches_authenticator() {
        let auth = hs();
        let token = auth
            .minter()
            .expect("hs256")
            .mint(&Claims::admin(now(), HOUR))
            .expect("mint");
        assert!(auth.authenticate(&token, now()).expect("valid").admin);
        // Claims survive the trip unchanged.
        let mut claims = Claims::node(&key("a/b"), now(), HOUR).with_scope(vec!["x".into()]);
        claims.nbf = Some(now().as_secs());
        let token = mint(&claims);
        let data = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(SECRET.as_bytes()),
            &{
                let mut v = Validation::new(Algorithm::HS256);
                v.validate_exp = false;
                v
            },
        )
        .expect("decode");
        assert_eq!(data.claims, claims);
    }

    #[test]
    fn bad_pem_is_a_key_error() {
        assert!(matches!(
            Authenticator::eddsa_public_pem(RSA_PUBLIC),
            Err(AuthError::Key(_))
        ));
        assert!(matches!(
            Authenticator::rs256_public_pem(b"not a pem"),
            Err(AuthError::Key(_))
        ));
        assert!(matches!(
            TokenMinter::eddsa_private_pem(ED_PUBLIC),
            Err(AuthError::Key(_))
        ));
    }

    #[test]
    fn debug_shows_no_secret() {
        let auth = hs();
        for shown in [format!("{auth:?}"), format!("{:?}", auth.minter())] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("HS256"), "{shown}");
        }
    }

    #[test]
    fn internal_identity() {
        let me = Identity::internal();
        assert!(me.admin && me.verified && me.may_call("any"));
        assert_eq!(me.key, None);
        assert!(me.expires > Timestamp::now() + 1000 * 365 * 24 * HOUR);
    }
}
