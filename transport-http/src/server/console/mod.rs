//! The operator's console at `/`: a sign-in page, then a page that lists
//! the nodes with their health and traffic, charts each group's last 15
//! minutes, and carries the operator's actions (deregister a node, mint a
//! token, send a sealed test request).
//!
//! Everything it shows is served from the binary (`include_str!`): one
//! HTML page per state, one stylesheet, one script; nothing is loaded from
//! elsewhere, and the content security policy says so.
//!
//! # Who may use it
//!
//! Signing in with the operator password or an admin token (as the
//! mediator's `Authenticate` policy judges them) opens a session: a random
//! 256-bit id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over
//! TLS) that lasts 12 hours, or less when the token runs out first. The
//! cookie is accepted only on `/` and under `/console/`. Reads take the
//! session, a bearer token or a Basic login; state-changing requests
//! (`POST`) take a session together with its anti-forgery token in
//! `x-csrf-token`, or a bearer token (which browsers never attach by
//! themselves) — never a Basic login, which they do: there it is set aside
//! unread, as on the assets and the sign-in.
//!
//! # Signing in
//!
//! - Every refused sign-in counts in the login backoff of its address,
//!   shared with the Basic login: a wrong password, a token that is not
//!   valid, and a valid token that is not an admin's. Only a sign-in that
//!   opens a session clears the count.
//! - The password is checked by the login gate, off the request threads
//!   and a few at a time; while too many wait, a sign-in is answered `503`
//!   at once.
//! - A sign-in sent from another site is refused (`403`), so no page
//!   elsewhere can sign a browser in to a session of its choosing: one
//!   whose `Origin` is present and is not the console's own (the scheme,
//!   host and port the request was sent to; `Origin: null` included), or
//!   whose `Sec-Fetch-Site` is `cross-site`. Requests without `Origin`
//!   (scripts, older browsers) are let through. Behind a proxy, the proxy
//!   must pass the `Host` it was asked for, and a TLS terminator calls for
//!   [`secure_cookies`](crate::MediatorService::secure_cookies).
//!
//! # Minting
//!
//! Only a verified admin mints (not an admin token that names no holder,
//! as the original's do). A minted token never outlives the credential
//! that minted it: for a session opened with a token, that token's expiry;
//! for a password session, the session's end; for a bearer token, its
//! own. A longer `ttl_s` is cut short, and the answer's `exp` is the
//! capped one, with `"capped": true`. Each token minted writes an INFO
//! event with target `mediator::audit`: `via`, `who` (how the minter signed
//! in, and as whom), `remote`, `for_whom` (the node, or `operator`),
//! `admin`, `scope`, `exp`, `capped`; never the token.
//!
//! # Routes
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the console for an admin; the sign-in page (`401`) otherwise |
//! | `GET /console/console.css`, `/console/console.js` | the page's assets |
//! | `POST /console/sign-in` | form `password` or `token`: `303` to `/` with the cookie; the sign-in page with `401`, `403` (not an admin, or sent from another site), `429` (the address must wait) or `503` (too many sign-ins being checked) |
//! | `POST /console/sign-out` | ends the session server-side and clears the cookie |
//! | `GET /console/api/session` | `{"csrf", "sender", "expires", "by"}` |
//! | `GET /console/api/state[?group=g]` | nodes with health and traffic, per-group series |
//! | `GET /console/api/nodes/:id` | one node's details |
//! | `POST /console/api/nodes/:id/deregister` | `{"affected": 1}`, `404` when unknown |
//! | `POST /console/api/token` | `{"node"?, "scope"?, "admin"?, "ttl_s"?}` → `{"token", "exp", "sub", "scope", "capped"}` |
//! | `POST /console/api/send` | `{"target", "path", "body"}` (base64 of a sealed payload) → the reply or the broadcast's entries and summary |

// Refusals travel as `Err(ready reply)`, as in the other routes: one is
// built at most once per request, so its size costs nothing worth boxing.
#![allow(clippy::result_large_err)]

mod session;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use mediator_core::auth::{Claims, Identity};
use mediator_core::model::validate_name;
use mediator_core::record::{SeriesPoint, SERIES_STEP};
use mediator_core::AuthError;
use mediator_core::{
    Credentials, Envelope, Error, Fault, Mediator, Node, NodeId, NodeKey, Routed, Target, Timestamp,
};
use serde_json::{json, Map, Value};

use super::credentials::{self, BasicSetAside, Credential};
use super::entity;
use super::reply::{self, add_common_headers, HttpResponse};
use super::service::RemoteAddr;
use super::throttle::{LoginThrottle, Refusal};
pub(crate) use session::Sessions;
use session::{Session, COOKIE};

const SIGN_IN_HTML: &str = include_str!("assets/sign-in.html");
const CONSOLE_HTML: &str = include_str!("assets/console.html");
const CONSOLE_CSS: &str = include_str!("assets/console.css");
const CONSOLE_JS: &str = include_str!("assets/console.js");

/// Scripts and styles only from the mediator itself, requests only back to
/// it, no frames: nothing the page shows can pull in anything else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// The header that carries a session's anti-forgery token.
const CSRF_HEADER: &str = "x-csrf-token";

/// The most nodes one state answer lists.
const MAX_LISTED: usize = 1_000;

/// The most groups one state answer charts.
const MAX_CHARTED: usize = 24;

/// The longest-lived token the console mints: 30 days.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What the console needs besides the mediator.
#[derive(Clone, Copy)]
pub(crate) struct ConsoleCx<'a> {
    pub(crate) sessions: &'a Sessions,
    pub(crate) logins: &'a LoginThrottle,
    /// Whether the service is reached over TLS, so cookies are `Secure`.
    pub(crate) secure: bool,
}

/// Who is using the console.
enum Caller {
    /// A signed-in operator.
    Session(std::sync::Arc<Session>),
    /// A token in the request's head.
    Token(Identity),
    /// A Basic login in the request's head.
    Basic(Identity),
}

impl Caller {
    fn identity(&self) -> &Identity {
        match self {
            Caller::Session(session) => &session.identity,
            Caller::Token(identity) | Caller::Basic(identity) => identity,
        }
    }
}

/// `GET /`: the console for an admin; the sign-in page for anyone else.
pub(crate) async fn root(
    mediator: &Mediator,
    cx: ConsoleCx<'_>,
    parts: &Parts,
    seen: &mut Option<Identity>,
) -> HttpResponse {
    match caller(mediator, cx, parts) {
        Ok(Some(caller)) => {
            *seen = Some(caller.identity().clone());
            console_page(mediator).await
        }
        Ok(None) => sign_in_page(StatusCode::UNAUTHORIZED, At::Root, None),
        Err(Error::Unauthorized(AuthError::Refused(why))) => {
            sign_in_page(StatusCode::UNAUTHORIZED, At::Root, Some(&why))
        }
        Err(e @ Error::Unauthorized(_)) => {
            sign_in_page(StatusCode::UNAUTHORIZED, At::Root, Some(&e.to_string()))
        }
        Err(e) => reply::error(&e),
    }
}

/// Everything under `/console/`; `rest` is the path after it.
pub(crate) async fn handle(
    mediator: &Mediator,
    cx: ConsoleCx<'_>,
    parts: &Parts,
    body: &Bytes,
    rest: &str,
    seen: &mut Option<Identity>,
) -> HttpResponse {
    let method = &parts.method;
    let segments: Vec<&str> = rest.split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["console.css"]) => asset("text/css; charset=utf-8", CONSOLE_CSS),
        (&Method::GET, ["console.js"]) => asset("text/javascript; charset=utf-8", CONSOLE_JS),
        (&Method::POST, ["sign-in"]) => sign_in(mediator, cx, parts, body, seen).await,
        (&Method::POST, ["sign-out"]) => sign_out(mediator, cx, parts, seen),
        (&Method::GET, ["api", "session"]) => with_reader(mediator, cx, parts, seen, |caller| {
            let (csrf, expires, by) = match caller {
                Caller::Session(s) => (
                    Value::from(s.csrf.as_str()),
                    Value::from(s.expires_at.as_millis()),
                    if s.by_password { "password" } else { "token" },
                ),
                Caller::Token(i) => (Value::Null, Value::from(i.expires.as_millis()), "bearer"),
                Caller::Basic(_) => (Value::Null, Value::Null, "basic"),
            };
            reply::json(
                StatusCode::OK,
                &json!({
                    "csrf": csrf,
                    "sender": sender_of(caller.identity()),
                    "expires": expires,
                    "by": by,
                    "instance": mediator.instance_id(),
                }),
            )
        }),
        (&Method::GET, ["api", "state"]) => match reader(mediator, cx, parts, seen) {
            Ok(_) => {
                let group = query_param(parts, "group");
                match state(mediator, group.as_deref()).await {
                    Ok(state) => reply::json(StatusCode::OK, &state),
                    Err(e) => reply::error(&e),
                }
            }
            Err(response) => response,
        },
        (&Method::GET, ["api", "nodes", id]) => match reader(mediator, cx, parts, seen) {
            Ok(_) => node_details(mediator, id).await,
            Err(response) => response,
        },
        (&Method::POST, ["api", "nodes", id, "deregister"]) => {
            match writer(mediator, cx, parts, seen) {
                Ok(caller) => deregister(mediator, caller.identity(), id).await,
                Err(response) => response,
            }
        }
        (&Method::POST, ["api", "token"]) => match writer(mediator, cx, parts, seen) {
            Ok(caller) => mint(mediator, &caller, parts, body),
            Err(response) => response,
        },
        (&Method::POST, ["api", "send"]) => match writer(mediator, cx, parts, seen) {
            Ok(caller) => send(mediator, caller.identity(), body).await,
            Err(response) => response,
        },
        (_, ["console.css" | "console.js" | "sign-in" | "sign-out"])
        | (_, ["api", "session" | "state" | "token" | "send"])
        | (_, ["api", "nodes", _] | ["api", "nodes", _, "deregister"]) => reply::error_status(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on /console/{rest}"),
            "method_not_allowed",
            Fault::Caller,
        ),
        _ => reply::error_status(
            StatusCode::NOT_FOUND,
            &format!("no route for /console/{rest}"),
            "not_found",
            Fault::Caller,
        ),
    }
}

/// The session id in the request's cookies, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

/// The caller of a console request: its session if the cookie names a
/// live one, else the credentials in its head (an admin's only); `None`
/// when it brings neither.
fn caller(mediator: &Mediator, cx: ConsoleCx<'_>, parts: &Parts) -> Result<Option<Caller>, Error> {
    if let Some(session) = session_id(&parts.headers).and_then(|id| cx.sessions.get(id)) {
        return Ok(Some(Caller::Session(session)));
    }
    let Some(credential) = credentials::in_head(&parts.headers, &parts.uri) else {
        if parts.extensions.get::<BasicSetAside>().is_some() {
            return Err(Error::Forbidden(BASIC_NEVER_ACTS.into()));
        }
        return Ok(None);
    };
    let basic = matches!(credential, Credential::Basic(..));
    let identity = credentials::check(mediator, parts, Some(credential))?;
    if !identity.admin {
        return Err(Error::Forbidden("the console needs an admin login".into()));
    }
    Ok(Some(if basic {
        Caller::Basic(identity)
    } else {
        Caller::Token(identity)
    }))
}

/// The caller of a read: anyone [`caller`] admits.
/// Who called is noted in `seen`, for the request's log line.
fn reader(
    mediator: &Mediator,
    cx: ConsoleCx<'_>,
    parts: &Parts,
    seen: &mut Option<Identity>,
) -> Result<Caller, HttpResponse> {
    match caller(mediator, cx, parts) {
        Ok(Some(caller)) => {
            *seen = Some(caller.identity().clone());
            Ok(caller)
        }
        Ok(None) => Err(reply::error(&Error::unauthorized(
            "sign in to the console, or send an admin token",
        ))),
        Err(e) => Err(reply::error(&e)),
    }
}

fn with_reader(
    mediator: &Mediator,
    cx: ConsoleCx<'_>,
    parts: &Parts,
    seen: &mut Option<Identity>,
    answer: impl FnOnce(&Caller) -> HttpResponse,
) -> HttpResponse {
    match reader(mediator, cx, parts, seen) {
        Ok(caller) => answer(&caller),
        Err(response) => response,
    }
}

/// The caller of a state-changing request: a session that proves it is
/// the page's with its anti-forgery token, or a bearer token.
fn writer(
    mediator: &Mediator,
    cx: ConsoleCx<'_>,
    parts: &Parts,
    seen: &mut Option<Identity>,
) -> Result<Caller, HttpResponse> {
    match reader(mediator, cx, parts, seen)? {
        Caller::Session(session) => {
            let offered = parts
                .headers
                .get(CSRF_HEADER)
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            if session.csrf_matches(offered) {
                Ok(Caller::Session(session))
            } else {
                tracing::warn!("console request without its session's anti-forgery token");
                Err(reply::error(&Error::Forbidden(
                    "missing or wrong x-csrf-token for this session".into(),
                )))
            }
        }
        caller @ Caller::Token(_) => Ok(caller),
        Caller::Basic(_) => Err(reply::error(&Error::Forbidden(BASIC_NEVER_ACTS.into()))),
    }
}

/// Why a Basic login changes nothing in the console.
const BASIC_NEVER_ACTS: &str = "a browser sends a Basic login by itself, so it cannot change \
                                anything here: sign in to the console or send a bearer token";

/// Whether a console request takes a Basic login: the reads under
/// `/console/api/` (the page at `/` does too, routed apart). The actions
/// never do, since a browser attaches the login by itself, and the assets
/// and the sign-in need none: there it is set aside unread, and its
/// password never hashed.
pub(crate) fn takes_basic(method: &Method, rest: &str) -> bool {
    method == Method::GET && rest.starts_with("api/")
}

/// The sender a console request goes out as, which the receiver's AAD
/// names: the node a verified admin token was minted for, or none (the
/// operator password and admin tokens without `sub` name no node).
fn sender_of(identity: &Identity) -> Option<String> {
    identity
        .verified
        .then(|| identity.key.as_ref().map(ToString::to_string))
        .flatten()
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------- pages

fn html(status: StatusCode, body: String) -> HttpResponse {
    served(status, "text/html; charset=utf-8", Bytes::from(body))
}

/// A page or asset of the console, with the headers that keep it to itself.
fn served(status: StatusCode, content_type: &'static str, body: Bytes) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure_headers(headers);
    response
}

fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Nothing leaves for another origin; `no-referrer` would do that too,
    // but it also makes browsers send the page's own sign-in form with
    // `Origin: null`, which the sign-in refuses as a forgery.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    add_common_headers(headers);
}

fn asset(content_type: &'static str, text: &'static str) -> HttpResponse {
    served(
        StatusCode::OK,
        content_type,
        Bytes::from_static(text.as_bytes()),
    )
}

/// Where the page is served from: `/` or `/console/sign-in`.
#[derive(Clone, Copy)]
enum At {
    Root,
    SignIn,
}

fn sign_in_page(status: StatusCode, at: At, problem: Option<&str>) -> HttpResponse {
    let message = problem.map_or_else(String::new, |text| {
        format!("<p class=\"problem\" role=\"alert\">{}</p>", escape(text))
    });
    // Links are relative, so the console works under any prefix it is
    // mounted at; from /console/sign-in they climb back one level.
    let root = match at {
        At::Root => "",
        At::SignIn => "../",
    };
    html(
        status,
        SIGN_IN_HTML
            .replace("{{problem}}", &message)
            .replace("{{root}}", root),
    )
}

async fn console_page(mediator: &Mediator) -> HttpResponse {
    // The first state rides in the page so it shows at once; the script
    // then polls for the next ones.
    let state = match state(mediator, None).await {
        Ok(state) => state,
        Err(e) => return reply::error(&e),
    };
    let text = serde_json::to_string(&state).unwrap_or_default();
    // Inside a <script> data block only `<` could end it early.
    let text = text.replace('<', "\\u003c");
    html(
        StatusCode::OK,
        CONSOLE_HTML
            .replace("{{state}}", &text)
            .replace("{{instance}}", &escape(mediator.instance_id())),
    )
}

/// Text as HTML element content or a quoted attribute value.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

// ------------------------------------------------------------- sessions

fn cookie(value: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let text = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    // Session ids are base64url, so the value is always a valid header.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The answer to a sign-in from an address that must still wait after
/// failed logins, if it must: settled from the head, before a byte of the
/// form is read.
pub(crate) fn sign_in_wait(cx: ConsoleCx<'_>, parts: &Parts) -> Option<HttpResponse> {
    let RemoteAddr(peer) = parts.extensions.get::<RemoteAddr>()?;
    let wait = cx.logins.wait(peer.ip())?;
    Some(refused_sign_in(Refusal::Wait(wait)))
}

/// Whether the head of a request names a caller the console accepts (a
/// live session, a token, a Basic login), so that its body may be read:
/// `Err` with the refusal (`401` without one, `403` for a node) when not.
pub(crate) fn admitted_by_head(
    mediator: &Mediator,
    cx: ConsoleCx<'_>,
    parts: &Parts,
) -> Result<(), Error> {
    match caller(mediator, cx, parts)? {
        Some(_) => Ok(()),
        None => Err(Error::unauthorized(
            "the console takes an action only from a signed-in session \
             (with its anti-forgery token) or an admin token",
        )),
    }
}

async fn sign_in(
    mediator: &Mediator,
    cx: ConsoleCx<'_>,
    parts: &Parts,
    body: &Bytes,
    seen: &mut Option<Identity>,
) -> HttpResponse {
    if let Some(why) = foreign_origin(parts, cx.secure) {
        tracing::warn!(%why, "console sign-in refused: sent from another site");
        return sign_in_page(
            StatusCode::FORBIDDEN,
            At::SignIn,
            Some(&format!(
                "this sign-in was refused: {why}; sign in from the console's own page"
            )),
        );
    }
    let peer = parts
        .extensions
        .get::<RemoteAddr>()
        .map(|RemoteAddr(a)| a.ip());
    if let Some(wait) = peer.and_then(|ip| cx.logins.wait(ip)) {
        return refused_sign_in(Refusal::Wait(wait));
    }
    let form: Map<String, Value> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
        .collect();
    let field = |name: &str| {
        form.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (checked, by_password) = match (field("token"), field("password")) {
        (Some(token), _) => {
            let checked = mediator.authenticate(&Credentials::Bearer(token));
            cx.logins.count(peer, &checked);
            (checked, false)
        }
        (None, Some(password)) => {
            match cx
                .logins
                .check_password(mediator, peer, "admin", password)
                .await
            {
                Ok(checked) => (checked, true),
                Err(refusal) => return refused_sign_in(refusal),
            }
        }
        (None, None) => {
            return sign_in_page(
                StatusCode::BAD_REQUEST,
                At::SignIn,
                Some("give the operator password or an admin token"),
            )
        }
    };
    let identity = match checked {
        Ok(identity) => identity,
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in refused");
            let shown = if by_password {
                "wrong password"
            } else {
                "this token is not valid here"
            };
            return sign_in_page(StatusCode::UNAUTHORIZED, At::SignIn, Some(shown));
        }
    };
    if !identity.admin {
        tracing::warn!("console sign-in refused: not an admin");
        return sign_in_page(
            StatusCode::FORBIDDEN,
            At::SignIn,
            Some("this token has no admin role; the console needs one"),
        );
    }
    let now = mediator.clock().now();
    *seen = Some(identity.clone());
    let (id, session) = cx.sessions.open(identity, by_password, now);
    tracing::info!(
        by = if by_password { "password" } else { "token" },
        "console sign-in"
    );
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    // From /console/sign-in back to the console, wherever it is mounted.
    headers.insert(header::LOCATION, HeaderValue::from_static("../"));
    headers.insert(
        header::SET_COOKIE,
        cookie(&id, now.until(session.expires_at), cx.secure),
    );
    add_common_headers(headers);
    response
}

/// The sign-in page for a sign-in the login gate did not look at: `429`
/// while the address must wait, `503` while too many passwords are being
/// checked; both with `retry-after`.
fn refused_sign_in(refusal: Refusal) -> HttpResponse {
    let secs = refusal.retry_after_secs();
    let (status, text) = match refusal {
        Refusal::Wait(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed sign-ins from this address; try again in {secs} s"),
        ),
        Refusal::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many sign-ins are being checked; try again in {secs} s"),
        ),
    };
    let mut response = sign_in_page(status, At::SignIn, Some(&text));
    refusal.add_retry_after(response.headers_mut());
    response
}

/// Why a sign-in is taken to come from another site, a forged login
/// (login CSRF: the victim's browser signed in to the attacker's session):
/// `Sec-Fetch-Site: cross-site`, or an `Origin` that is present and is not
/// the console's own (`null` included). The console's own origin is the
/// scheme (the request's, else `https` when the service is reached over
/// TLS, else `http`) with the host and port the request was sent to (its
/// `:authority`, else `Host`); a proxy in front must pass `Host` on.
/// Requests without `Origin` (scripts, older browsers) are let through.
fn foreign_origin(parts: &Parts, secure: bool) -> Option<String> {
    if parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Some("the browser says it was sent from another site".into());
    }
    let origin = parts.headers.get(header::ORIGIN)?;
    let Ok(origin) = origin.to_str().map(str::trim) else {
        return Some("its Origin header is not text".into());
    };
    if origin.eq_ignore_ascii_case("null") {
        return Some("it was sent from an opaque origin (Origin: null)".into());
    }
    let scheme = parts
        .uri
        .scheme_str()
        .unwrap_or(if secure { "https" } else { "http" });
    let host = parts.uri.authority().cloned().or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<http::uri::Authority>().ok())
    });
    let Some(host) = host else {
        return Some(format!(
            "it was sent from {origin} and names no host to compare it with"
        ));
    };
    let own = origin_parts(scheme, &host);
    let theirs = origin
        .parse::<http::Uri>()
        .ok()
        .filter(|uri| uri.path_and_query().is_none_or(|p| p.as_str() == "/"))
        .and_then(|uri| Some(origin_parts(uri.scheme_str()?, uri.authority()?)));
    if theirs.as_ref() == Some(&own) {
        None
    } else {
        Some(format!("it was sent from {origin}, not from this console"))
    }
}

/// An origin as compared: scheme and host in lower case, and the port,
/// the scheme's default when none is written.
fn origin_parts(scheme: &str, authority: &http::uri::Authority) -> (String, String, u16) {
    let scheme = scheme.to_ascii_lowercase();
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    (scheme, authority.host().to_ascii_lowercase(), port)
}

/// `POST /console/sign-out`: ends the session, on the server too.
fn sign_out(
    mediator: &Mediator,
    cx: ConsoleCx<'_>,
    parts: &Parts,
    seen: &mut Option<Identity>,
) -> HttpResponse {
    let Some(id) = session_id(&parts.headers) else {
        return reply::error(&Error::unauthorized("no console session to end"));
    };
    if let Err(response) = writer(mediator, cx, parts, seen) {
        return response;
    }
    cx.sessions.close(id);
    tracing::info!("console sign-out");
    let mut response = reply::json(StatusCode::OK, &json!({ "signed_out": true }));
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", Duration::ZERO, cx.secure));
    response
}

// ----------------------------------------------------------------- state

/// One node as the console lists it.
fn node_json(mediator: &Mediator, node: &Node, now: Timestamp) -> Value {
    let stats = mediator.delivery_stats().node(&node.key);
    let heard = node.updated.unwrap_or(node.created);
    let last_seen = stats
        .as_ref()
        .and_then(|s| s.last_answer)
        .map_or(heard, |answer| answer.max(heard));
    let health = stats.as_ref().map_or("unknown", |s| s.health().label());
    let recent: Vec<&str> = stats
        .as_ref()
        .map(|s| s.recent.iter().map(|o| o.label()).collect())
        .unwrap_or_default();
    json!({
        "id": node.id.0,
        "key": node.key.to_string(),
        "group": node.key.group(),
        "name": node.key.name(),
        "transport": node.endpoint.scheme(),
        "endpoint": node.endpoint.to_string(),
        "lease_until": node.lease_until.as_millis(),
        "lease_left_s": now.until(node.lease_until).as_secs(),
        "last_seen": last_seen.as_millis(),
        "last_delivery": stats.as_ref().and_then(|s| s.last_delivery).map(Timestamp::as_millis),
        "in_flight": mediator.routes().in_flight(&node.key).unwrap_or(0),
        "requests": stats.as_ref().map_or(0, |s| s.requests),
        "errors": stats.as_ref().map_or(0, |s| s.errors),
        "health": health,
        "recent": recent,
    })
}

fn millis(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| {
        Value::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// A group's series as columns: requests per second, error rate, p99.
fn series_json(points: &[SeriesPoint]) -> Value {
    let step = SERIES_STEP.as_secs_f64();
    // Counts are far below 2^52: the floats are exact.
    #[allow(clippy::cast_precision_loss)]
    let rps: Vec<f64> = points.iter().map(|p| p.requests as f64 / step).collect();
    #[allow(clippy::cast_precision_loss)]
    let error_rate: Vec<Value> = points
        .iter()
        .map(|p| {
            if p.requests == 0 {
                Value::Null
            } else {
                Value::from(p.errors as f64 / p.requests as f64)
            }
        })
        .collect();
    let p99: Vec<Value> = points.iter().map(|p| millis(p.p99)).collect();
    json!({
        "start": points.first().map(|p| p.start.as_millis()),
        "step_s": SERIES_STEP.as_secs(),
        "rps": rps,
        "error_rate": error_rate,
        "p99_ms": p99,
        "requests": points.iter().map(|p| p.requests).sum::<u64>(),
        "errors": points.iter().map(|p| p.errors).sum::<u64>(),
    })
}

/// The console's view: the nodes (of `group`, or all, at most
/// [`MAX_LISTED`]) and the series of the busiest groups.
async fn state(mediator: &Mediator, group: Option<&str>) -> Result<Value, Error> {
    if let Some(group) = group {
        validate_name("group", group)?;
    }
    let now = mediator.clock().now();
    let mut nodes = mediator
        .nodes_page(group, None, MAX_LISTED.saturating_add(1))
        .await?;
    let truncated = nodes.len() > MAX_LISTED;
    nodes.truncate(MAX_LISTED);
    let listed: Vec<Value> = nodes.iter().map(|n| node_json(mediator, n, now)).collect();
    let stats = mediator.delivery_stats();
    let totals = stats.snapshot();
    let mut groups: Vec<(String, u64)> = match group {
        Some(group) => vec![(group.to_owned(), 0)],
        None => {
            let mut names: Vec<String> = nodes.iter().map(|n| n.key.group().to_owned()).collect();
            names.extend(totals.keys().cloned());
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|g| {
                    let total = totals.get(&g).map_or(0, |t| t.total());
                    (g, total)
                })
                .collect()
        }
    };
    // The busiest first, then by name, so the charts do not jump around.
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let charted: Vec<Value> = groups
        .iter()
        .take(MAX_CHARTED)
        .map(|(name, _)| {
            let members = nodes.iter().filter(|n| n.key.group() == name).count();
            let series = stats.series(name).map_or(Value::Null, |s| series_json(&s));
            json!({ "group": name, "nodes": members, "series": series })
        })
        .collect();
    let attached = mediator.routes().attached_per_instance();
    let instances: Vec<Value> = mediator
        .instances()
        .await?
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "peer": i.peer,
                "started": i.started.as_millis(),
                "heartbeat": i.heartbeat.as_millis(),
                "lease_until": i.lease_until.as_millis(),
                "live": !i.is_expired(now),
                "attached": attached.get(&i.id).copied().unwrap_or(0),
                "this": i.id == mediator.instance_id(),
            })
        })
        .collect();
    Ok(json!({
        "instance": mediator.instance_id(),
        "instances": instances,
        "now": now.as_millis(),
        "nodes": listed,
        "truncated": truncated,
        "groups": charted,
        "more_groups": groups.len().saturating_sub(MAX_CHARTED),
    }))
}

fn parse_id(id: &str) -> Result<NodeId, Error> {
    id.parse::<u64>()
        .map(NodeId)
        .map_err(|_| Error::invalid("id", "must be a registration id"))
}

fn unknown_node(id: &str) -> HttpResponse {
    reply::error_status(
        StatusCode::NOT_FOUND,
        &format!("no node is registered under id {id}"),
        "unknown_target",
        Fault::Caller,
    )
}

async fn node_details(mediator: &Mediator, id: &str) -> HttpResponse {
    let id_num = match parse_id(id) {
        Ok(n) => n,
        Err(e) => return reply::error(&e),
    };
    let node = match mediator.registry().get_by_id(id_num).await {
        Ok(Some(node)) => node,
        Ok(None) => return unknown_node(id),
        Err(e) => return reply::error(&Error::from(e)),
    };
    let now = mediator.clock().now();
    let series = mediator
        .delivery_stats()
        .series(node.key.group())
        .map_or(Value::Null, |s| series_json(&s));
    reply::json(
        StatusCode::OK,
        &json!({
            "node": node_json(mediator, &node, now),
            "row": entity::row(&node, None),
            "meta": node.meta,
            "created": node.created.as_millis(),
            "updated": node.updated.map(Timestamp::as_millis),
            "group_series": series,
        }),
    )
}

// --------------------------------------------------------------- actions

async fn deregister(mediator: &Mediator, identity: &Identity, id: &str) -> HttpResponse {
    let id_num = match parse_id(id) {
        Ok(n) => n,
        Err(e) => return reply::error(&e),
    };
    match mediator.remove(identity, id_num).await {
        Ok(0) => unknown_node(id),
        Ok(affected) => {
            tracing::info!(id = %id_num, "node deregistered from the console");
            reply::json(StatusCode::OK, &json!({ "affected": affected }))
        }
        Err(e) => reply::error(&e),
    }
}

fn json_body(body: &[u8]) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid("body", "must be a JSON object")),
        Err(e) => Err(Error::invalid("body", format!("must be JSON: {e}"))),
    }
}

fn text_field<'a>(
    map: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, Error> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(Error::invalid(name, "must be a string")),
    }
}

/// `POST /console/api/token`: a token minted with the mediator's key, by
/// a verified admin only, never outliving the credential that mints it
/// (see [`credential_ends`]): a longer `ttl_s` is cut short, and the
/// answer says so (`exp` is the capped expiry, `capped` is `true`). Every
/// token minted writes an audit line ([`credentials::audit_mint`]).
fn mint(mediator: &Mediator, caller: &Caller, parts: &Parts, body: &[u8]) -> HttpResponse {
    if let Err(e) = credentials::may_mint(caller.identity()) {
        return reply::error(&e);
    }
    let mut claims = match mint_claims(mediator, body) {
        Ok(claims) => claims,
        Err(e) => return reply::error(&e),
    };
    let capped = match credentials::cap_expiry(&mut claims, credential_ends(caller)) {
        Ok(capped) => capped,
        Err(e) => return reply::error(&e),
    };
    let Some(minter) = mediator.minter() else {
        return reply::error(&Error::Forbidden(
            "this mediator holds a verify-only key and cannot mint tokens".into(),
        ));
    };
    match minter.mint(&claims) {
        Ok(token) => {
            let remote = parts.extensions.get::<RemoteAddr>().map(|r| r.0);
            credentials::audit_mint("console", &minted_by(caller), remote, &claims, capped);
            reply::json(
                StatusCode::OK,
                &json!({
                    "token": token,
                    "exp": claims.exp,
                    "sub": claims.sub,
                    "scope": claims.scope,
                    "capped": capped,
                }),
            )
        }
        Err(e) => reply::error(&Error::from(e)),
    }
}

/// When the credential behind a console caller ends, which no token it
/// mints may outlive: a session opened with a token, that token's expiry;
/// one opened with the password, the session's own; a bearer token (or a
/// login), its own.
fn credential_ends(caller: &Caller) -> Timestamp {
    match caller {
        Caller::Session(session) if session.by_password => session.expires_at,
        Caller::Session(session) => session.identity.expires,
        Caller::Token(identity) | Caller::Basic(identity) => identity.expires,
    }
}

/// The minter as the audit line names it: how it signed in, and as whom.
fn minted_by(caller: &Caller) -> String {
    let token = |identity: &Identity| match &identity.key {
        Some(key) => format!("an admin token for {key}"),
        None => "an admin token".to_owned(),
    };
    match caller {
        Caller::Session(session) if session.by_password => {
            "console session opened with the operator password".to_owned()
        }
        Caller::Session(session) => {
            format!("console session opened with {}", token(&session.identity))
        }
        Caller::Token(identity) => format!("bearer {}", token(identity)),
        Caller::Basic(_) => "Basic admin login".to_owned(),
    }
}

fn mint_claims(mediator: &Mediator, body: &[u8]) -> Result<Claims, Error> {
    let map = json_body(body)?;
    let node = text_field(&map, "node")?
        .map(str::parse::<NodeKey>)
        .transpose()?;
    let admin = match map.get("admin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::invalid("admin", "must be true or false")),
    };
    let mut scope = Vec::new();
    for group in text_field(&map, "scope")?
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        validate_name("scope", group)?;
        scope.push(group.to_owned());
    }
    let ttl =
        match map.get("ttl_s") {
            None | Some(Value::Null) => Duration::from_secs(3600),
            Some(v) => Duration::from_secs(v.as_u64().filter(|s| *s > 0).ok_or_else(|| {
                Error::invalid("ttl_s", "must be a whole number of seconds above 0")
            })?),
        };
    if ttl > MAX_TOKEN_TTL {
        return Err(Error::invalid(
            "ttl_s",
            format!("must be at most {} seconds", MAX_TOKEN_TTL.as_secs()),
        ));
    }
    if admin {
        scope.push("admin".to_owned());
    }
    let now = mediator.clock().now();
    match node {
        Some(key) => {
            let claims = Claims::node(&key, now, ttl);
            Ok(if scope.is_empty() {
                claims
            } else {
                claims.with_scope(scope)
            })
        }
        None if scope.is_empty() => Err(Error::invalid(
            "node",
            "a token names a node, a scope of groups, or the admin role",
        )),
        None => Ok(Claims::admin(now, ttl).with_scope(scope)),
    }
}

/// `POST /console/api/send`: routes a payload the page sealed, as the
/// signed-in caller, and answers with what came back (bodies in base64,
/// for the page to open).
async fn send(mediator: &Mediator, identity: &Identity, body: &[u8]) -> HttpResponse {
    let request = match send_request(body) {
        Ok(request) => request,
        Err(e) => return reply::error(&e),
    };
    let (target, path, payload, budget) = request;
    let envelope = Envelope::new(target, path, payload);
    match mediator.route(identity, envelope, budget).await {
        Ok(Routed::One { node, reply }) => reply::json(
            StatusCode::OK,
            &json!({
                "kind": "one",
                "node": node.to_string(),
                "status": reply.status.as_u16(),
                "body": STANDARD.encode(&reply.body),
            }),
        ),
        Ok(Routed::Many(broadcast)) => {
            let entries: Vec<Value> = broadcast
                .results
                .iter()
                .map(|r| match &r.outcome {
                    Ok(reply) => json!({
                        "node": r.node.to_string(),
                        "status": reply.status.as_u16(),
                        "body": STANDARD.encode(&reply.body),
                    }),
                    Err(e) => json!({
                        "node": r.node.to_string(),
                        "error": reply::error_body(&e.to_string(), e.kind(), e.fault()),
                    }),
                })
                .collect();
            reply::json(
                StatusCode::OK,
                &json!({ "kind": "many", "summary": broadcast.summary, "entries": entries }),
            )
        }
        Ok(_) => reply::error(&Error::Config(
            "the router answered in a shape the console does not know".into(),
        )),
        Err(e) => reply::error(&e),
    }
}

type SendRequest = (Target, String, Bytes, Option<Duration>);

fn send_request(body: &[u8]) -> Result<SendRequest, Error> {
    let map = json_body(body)?;
    let written = text_field(&map, "target")?
        .ok_or_else(|| Error::invalid("target", "missing: g/n, g/, g/* or g/?"))?;
    let target: Target = written.parse()?;
    // The page sealed for the target as written; the node opens for the
    // target as the mediator writes it. They must be the same text.
    if target.to_string() != written {
        return Err(Error::invalid(
            "target",
            format!("write it as {target}, the form the node checks the seal against"),
        ));
    }
    let path = text_field(&map, "path")?.unwrap_or("/");
    if !path.starts_with('/') || path.len() > 2048 || path.chars().any(char::is_control) {
        return Err(Error::invalid(
            "path",
            "must start with / and be at most 2048 printable characters",
        ));
    }
    let payload = STANDARD
        .decode(text_field(&map, "body")?.unwrap_or(""))
        .map_err(|e| Error::invalid("body", format!("must be base64 ({e})")))?;
    let budget = match map.get("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(v) => Some(Duration::from_millis(
            v.as_u64()
                .filter(|ms| *ms > 0)
                .ok_or_else(|| Error::invalid("timeout_ms", "must be a whole number above 0"))?,
        )),
    };
    Ok((target, path.to_owned(), Bytes::from(payload), budget))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of target `mediator::audit` sent while it is the
    /// thread's subscriber, each as its fields written out.
    #[derive(Clone, Default)]
    struct AuditLines(
        std::sync::Arc<std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>>,
    );

    struct Fields(std::collections::BTreeMap<String, String>);

    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }

        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    impl tracing::Subscriber for AuditLines {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if event.metadata().target() == "mediator::audit" {
                let mut fields = Fields(std::collections::BTreeMap::new());
                event.record(&mut fields);
                self.0.lock().unwrap().push(fields.0);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test]
    async fn every_mint_writes_an_audit_line_and_never_outlives_its_minter() {
        use http_body_util::BodyExt;
        use tower_service::Service;

        const SECRET: &str = "a secret of at least 32 bytes, for the audit";
        let lines = AuditLines::default();
        let _guard = tracing::subscriber::set_default(lines.clone());
        let mediator = Mediator::builder()
            .registry(mediator_core::MemoryRegistry::new())
            .authenticator(
                mediator_core::Authenticator::hs256(SECRET).with_secret_as_password(true),
            )
            .build()
            .unwrap();
        let api = crate::server::MediatorService::new(mediator.clone());
        let mut console = api.console();
        let mut api = api;
        let peer: std::net::SocketAddr = "192.0.2.7:4321".parse().unwrap();
        let now = mediator.clock().now();
        let minter = mediator_core::TokenMinter::hs256(SECRET);
        let short = minter
            .mint(
                &Claims::node(
                    &"ops/console".parse().unwrap(),
                    now,
                    Duration::from_secs(60),
                )
                .with_scope(vec!["admin".into()]),
            )
            .unwrap();
        let request = |path: &str, auth: String, body: &'static str| {
            let mut request = http::Request::post(path)
                .header(header::AUTHORIZATION, auth)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            request.extensions_mut().insert(RemoteAddr(peer));
            request
        };
        let answer = console
            .call(request(
                "/console/api/token",
                format!("Bearer {short}"),
                r#"{"node":"users/new","ttl_s":2592000}"#,
            ))
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["capped"], true);
        assert_eq!(body["exp"], (now + Duration::from_secs(60)).as_secs());

        let basic = format!("Basic {}", STANDARD.encode(format!("admin:{SECRET}")));
        let answer = api.call(request("/token", basic, "")).await.unwrap();
        assert_eq!(answer.status(), 200);

        let lines = lines.0.lock().unwrap().clone();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let console_line = &lines[0];
        assert_eq!(console_line["message"], "token minted");
        assert_eq!(console_line["via"], "console");
        assert_eq!(console_line["who"], "bearer an admin token for ops/console");
        assert_eq!(console_line["remote"], "192.0.2.7:4321");
        assert_eq!(console_line["for_whom"], "users/new");
        assert_eq!(console_line["admin"], "false");
        assert_eq!(console_line["scope"], "any group");
        assert_eq!(console_line["capped"], "true");
        assert_eq!(console_line["exp"], body["exp"].to_string());
        let token_line = &lines[1];
        assert_eq!(token_line["via"], "/token");
        assert_eq!(token_line["who"], "Basic admin login");
        assert_eq!(token_line["for_whom"], "operator");
        assert_eq!(token_line["admin"], "true");
        assert_eq!(token_line["capped"], "false");
        assert!(lines
            .iter()
            .all(|line| line.values().all(|v| !v.contains(&short))));
    }

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        assert_eq!(session_id(&headers), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("x=y; mediator_session=abc ; z=1"),
        );
        assert_eq!(session_id(&headers), Some("abc"));
    }

    #[test]
    fn send_requests_are_checked_before_routing() {
        let ok = send_request(br#"{"target":"g/n","path":"/p","body":"AAE="}"#).unwrap();
        assert_eq!(ok.0.to_string(), "g/n");
        assert_eq!(&ok.2[..], &[0, 1]);
        for bad in [
            r#"{"path":"/p"}"#,
            r#"{"target":"g","body":""}"#,
            r#"{"target":"g/n","path":"p"}"#,
            r#"{"target":"g/n","body":"***"}"#,
            r#"{"target":"g/n","timeout_ms":0}"#,
            "[]",
        ] {
            let e = send_request(bad.as_bytes()).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}: {e}");
        }
    }
}
