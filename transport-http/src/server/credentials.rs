//! Finding and checking the caller's credentials, and the rules for the
//! tokens minted for them.

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::Uri;
use mediator_core::auth::{Claims, Identity};
use mediator_core::{Credentials, Error, Mediator, Timestamp};

use crate::headers::{token_in_body, token_in_query, X_JWT};

/// What the caller presented.
pub(crate) enum Credential {
    /// A JWT, from wherever it was found.
    Token(String),
    /// HTTP Basic user and password (the original's browser login).
    Basic(String, String),
}

/// Looks in `Authorization` (Bearer or Basic), then `x-jwt`, then the
/// `x-jwt` query parameter.
pub(crate) fn in_head(headers: &HeaderMap, uri: &Uri) -> Option<Credential> {
    for value in headers.get_all(header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim();
        // A byte scan for the space after the scheme: this runs on every
        // request.
        let (scheme, rest) = match value.bytes().position(|b| b == b' ') {
            Some(at) => (&value[..at], &value[at + 1..]),
            None => (value, ""),
        };
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Some(Credential::Token(rest.to_owned()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(basic) = basic(rest) {
                return Some(basic);
            }
        }
    }
    if let Some(token) = headers
        .get(X_JWT)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Some(Credential::Token(token.to_owned()));
    }
    uri.query()
        .and_then(token_in_query)
        .filter(|t| !t.is_empty())
        .map(Credential::Token)
}

/// Looks in the top-level `x-jwt` field of a JSON body.
pub(crate) fn in_body(body: &[u8]) -> Option<Credential> {
    token_in_body(body)
        .filter(|t| !t.is_empty())
        .map(Credential::Token)
}

/// The user and password of a Basic `Authorization` value.
pub(crate) fn basic(encoded: &str) -> Option<Credential> {
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some(Credential::Basic(user.to_owned(), password.to_owned()))
}

impl Credential {
    /// The core's view of these credentials, for its `Authenticate` policy.
    pub(crate) fn as_core(&self) -> Credentials<'_> {
        match self {
            Credential::Token(token) => Credentials::Bearer(token),
            Credential::Basic(user, password) => Credentials::Basic { user, password },
        }
    }
}

/// The outcome of the Basic login a request carries, as the login gate
/// checked it on arrival: later checks of the same request reuse it rather
/// than hashing the password again (an Argon2 hash is meant to be slow).
#[derive(Clone)]
pub(crate) struct CheckedLogin(pub(crate) Result<Identity, Error>);

/// Marks a request whose Basic login was set aside unread, because its
/// route takes none: the refusals then say where a Basic login goes.
#[derive(Clone, Copy)]
pub(crate) struct BasicSetAside;

/// Where a Basic login is accepted, for the refusals elsewhere.
pub(crate) const BASIC_ROUTES: &str =
    "a Basic login is accepted only by the console's pages and reads, /token and /admin/*";

/// Whether one `Authorization` value is a Basic login, by its scheme alone.
fn is_basic(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .trim_ascii_start()
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"basic "))
}

/// Whether the head carries a Basic login (decoded or not), cheaply: most
/// requests carry a bearer token and skip parsing their credentials twice.
pub(crate) fn has_basic(headers: &HeaderMap) -> bool {
    headers.get_all(header::AUTHORIZATION).iter().any(is_basic)
}

/// Takes a Basic login out of a request whose route takes none, so that
/// nothing there looks at it, let alone hashes its password: its other
/// credentials (a bearer token beside it, `x-jwt`) are read as if it had
/// never been sent, and [`BasicSetAside`] remembers it for the refusals.
pub(crate) fn set_basic_aside(parts: &mut Parts) {
    let kept: Vec<HeaderValue> = parts
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|v| !is_basic(v))
        .cloned()
        .collect();
    parts.headers.remove(header::AUTHORIZATION);
    for value in kept {
        parts.headers.append(header::AUTHORIZATION, value);
    }
    parts.extensions.insert(BasicSetAside);
}

/// Checks a credential with the mediator's `Authenticate` policy, which
/// decides what a Basic login is worth (by default, `admin:<operator
/// password>` is the operator).
///
/// A Basic login is never hashed here, on the request's thread: the
/// login gate checked it on arrival ([`CheckedLogin`]) on the routes that
/// take one, and this answer is reused; without it the login is refused.
pub(crate) fn check(
    mediator: &Mediator,
    parts: &Parts,
    credential: Option<Credential>,
) -> Result<Identity, Error> {
    match credential {
        Some(Credential::Basic(..)) => match parts.extensions.get::<CheckedLogin>() {
            Some(checked) => checked.0.clone(),
            None => Err(Error::unauthorized(format!(
                "{BASIC_ROUTES}; send a token here"
            ))),
        },
        Some(credential) => mediator.authenticate(&credential.as_core()),
        None if parts.extensions.get::<BasicSetAside>().is_some() => {
            Err(Error::unauthorized(format!(
                "no token ({BASIC_ROUTES}): send it as Authorization: Bearer, the x-jwt header, \
                 the x-jwt query parameter or the x-jwt field of a JSON body"
            )))
        }
        None => Err(Error::unauthorized(
            "no token: send it as Authorization: Bearer, the x-jwt header, the x-jwt query \
             parameter or the x-jwt field of a JSON body",
        )),
    }
}

/// Whether `identity` may mint tokens: a verified admin only. An admin
/// token that names no one (the original's, which anyone holding the
/// secret mints for itself) is refused, as is any node.
pub(crate) fn may_mint(identity: &Identity) -> Result<(), Error> {
    match (identity.admin, identity.verified) {
        (true, true) => Ok(()),
        (true, false) => Err(Error::Forbidden(
            "minting needs a verified admin: this token names no holder; sign in with the \
             operator password or a token minted with a sub or scope"
                .into(),
        )),
        (false, _) => Err(Error::Forbidden("only an admin may mint tokens".into())),
    }
}

/// Cuts `claims` short so that the token ends no later than `ends`, the
/// end of the credential minting it (seconds, rounded down, so never
/// after it); returns whether it was cut. A credential with less than a
/// second left mints nothing.
pub(crate) fn cap_expiry(claims: &mut Claims, ends: Timestamp) -> Result<bool, Error> {
    let ends = ends.as_secs();
    if ends <= claims.iat {
        return Err(Error::unauthorized(
            "the credential minting this token expires within a second; sign in again",
        ));
    }
    if claims.exp > ends {
        claims.exp = ends;
        return Ok(true);
    }
    Ok(false)
}

/// Writes the audit line of a minted token: an INFO event with target
/// `mediator::audit`, naming the route it was minted through (`via`), who
/// minted it and from where, for whom (the node it names, or the
/// operator; whether it carries the admin role), its scope and its expiry
/// (and whether that was cut short to the minter's own). The token itself
/// is never written.
pub(crate) fn audit_mint(
    via: &str,
    who: &str,
    remote: Option<SocketAddr>,
    claims: &Claims,
    capped: bool,
) {
    let scope = claims.scope.as_deref().unwrap_or_default();
    let admin = scope.iter().any(|s| s == "admin");
    let scope = if claims.scope.is_some() {
        scope.join(" ")
    } else {
        "any group".to_owned()
    };
    tracing::info!(
        target: "mediator::audit",
        via,
        who,
        remote = %remote.map_or_else(|| "-".to_owned(), |r| r.to_string()),
        for_whom = claims.sub.as_deref().unwrap_or("operator"),
        admin,
        scope = %scope,
        exp = claims.exp,
        capped,
        "token minted"
    );
}
