//! Finding and checking the caller's credentials.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::Uri;
use mediator_core::auth::Identity;
use mediator_core::{Credentials, Error, Mediator};

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
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
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

/// The outcome of the Basic login a request carries, as the login backoff
/// checked it on arrival: later checks of the same request reuse it rather
/// than hashing the password again (an Argon2 hash is meant to be slow).
#[derive(Clone)]
pub(crate) struct CheckedLogin(pub(crate) Result<Identity, Error>);

/// Checks a credential with the mediator's `Authenticate` policy, which
/// decides what a Basic login is worth (by default, `admin:<operator
/// password>` is the operator). A Basic login already
/// checked for this request (`parts` holds its [`CheckedLogin`]) is not
/// checked again.
pub(crate) fn check(
    mediator: &Mediator,
    parts: &Parts,
    credential: Option<Credential>,
) -> Result<Identity, Error> {
    if let (Some(Credential::Basic(..)), Some(checked)) =
        (&credential, parts.extensions.get::<CheckedLogin>())
    {
        return checked.0.clone();
    }
    match credential {
        Some(credential) => mediator.authenticate(&credential.as_core()),
        None => Err(Error::unauthorized(
            "no token: send it as Authorization: Bearer, the x-jwt header, the x-jwt query \
             parameter or the x-jwt field of a JSON body",
        )),
    }
}
