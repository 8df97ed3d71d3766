//! Header names the mediator speaks, and the filters that keep a caller's
//! credentials and connection-level headers from reaching a node.
//!
//! The same filters run where a request enters the mediator (so no
//! transport ever sees the caller's token) and again where it leaves for an
//! HTTP node (so an envelope built by other code cannot leak one either).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};

/// Set to `true` on every request the mediator forwards to a node; the
/// original's children look for it.
pub const X_MEDIATOR: HeaderName = HeaderName::from_static("x-mediator");
/// The verified sender, `group/name` (`group/` for an unnamed node); absent
/// when the caller's token names no node.
pub const X_MEDIATOR_FROM: HeaderName = HeaderName::from_static("x-mediator-from");
/// The target the caller addressed: `g/n`, `g/` (unnamed node), `g/*`
/// (every node) or `g/?` (any node).
pub const X_MEDIATOR_TARGET: HeaderName = HeaderName::from_static("x-mediator-target");
/// The request's deadline in milliseconds since the Unix epoch. Sent to the
/// node; a caller may send it too to ask for less than the default.
pub const X_MEDIATOR_DEADLINE: HeaderName = HeaderName::from_static("x-mediator-deadline");
/// A caller's budget for the request in milliseconds, an alternative to
/// [`X_MEDIATOR_DEADLINE`] that needs no synchronised clock.
pub const X_MEDIATOR_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-mediator-timeout-ms");
/// On a call one instance of a formation forwards to another: the
/// forwarding instance's credential (`instance.millis.hmac`), checked with
/// the formation's [`PeerKey`](mediator_core::formation::PeerKey).
pub const X_MEDIATOR_PEER: HeaderName = HeaderName::from_static("x-mediator-peer");
/// On a `/one` or `/any` reply: which node answered (`group/name`).
pub const X_MEDIATOR_NODE: HeaderName = HeaderName::from_static("x-mediator-node");
/// On a `/many` reply: `asked=4; answered=2; failed=1; timed_out=1`.
pub const X_MEDIATOR_SUMMARY: HeaderName = HeaderName::from_static("x-mediator-summary");
/// The request id, accepted from the caller or started by the mediator,
/// returned to the caller and passed to nodes.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C trace context: the caller's trace, continued with the
/// mediator's own parent id on the way to nodes.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The original's token header (also read from the query and the JSON body).
pub const X_JWT: HeaderName = HeaderName::from_static("x-jwt");

/// The name of the query parameter and JSON body field that may carry a token.
pub const X_JWT_PARAM: &str = "x-jwt";

/// `name` with every `_` read as `-`.
///
/// CGI, WSGI, PHP and many proxies turn a header into `HTTP_X_MEDIATOR_FROM`
/// whichever of the two it was sent with, so `x_mediator_from` reaches such
/// a node as the very header the mediator vouches for. Every filter compares
/// this form, never the name as sent.
fn folded(name: &HeaderName) -> std::borrow::Cow<'_, str> {
    let text = name.as_str();
    // A byte scan: names are short, and every header of every request is
    // looked at.
    if text.as_bytes().contains(&b'_') {
        std::borrow::Cow::Owned(text.replace('_', "-"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Whether `name` is one of the mediator's own `x-mediator-*` headers,
/// however its dashes are spelled (`X_Mediator-From` included): only the
/// mediator sets them, in either direction.
pub fn is_reserved(name: &HeaderName) -> bool {
    reserved_folded(&folded(name))
}

fn reserved_folded(folded: &str) -> bool {
    folded.starts_with("x-mediator")
}

/// Whether `name` is a hop-by-hop header, which describes one connection and
/// must not be relayed (RFC 9110 section 7.6.1), plus `host`, which the
/// outgoing connection sets itself, and `expect`, which the mediator has
/// already answered by reading the whole body. `proxy_*` spellings count
/// too, since a gateway may read them as `proxy-*`.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_folded(name, &folded(name))
}

fn hop_by_hop_folded(name: &HeaderName, folded: &str) -> bool {
    hop_by_hop_lower(name.as_str().as_bytes(), folded.as_bytes())
}

/// [`is_hop_by_hop`] of a name in lower case (`lower`) and with `_` read
/// as `-` (`folded`), for heads read as raw bytes.
pub(crate) fn hop_by_hop_lower(lower: &[u8], folded: &[u8]) -> bool {
    matches!(
        lower,
        b"connection"
            | b"expect"
            | b"te"
            | b"trailer"
            | b"transfer-encoding"
            | b"upgrade"
            | b"host"
            | b"proxy-authorization"
            | b"proxy-authenticate"
    ) || folded == b"keep-alive"
        || folded.starts_with(b"proxy-")
}

/// Whether `name` carries the caller's credentials: `authorization`,
/// `cookie` or `x-jwt`, also when spelled with underscores (`x_jwt`), which
/// a CGI-style node reads as the same header.
pub fn is_credential(name: &HeaderName) -> bool {
    credential_folded(&folded(name))
}

fn credential_folded(folded: &str) -> bool {
    folded == header::AUTHORIZATION.as_str()
        || folded == header::COOKIE.as_str()
        || folded == X_JWT.as_str()
}

/// Removes hop-by-hop headers, the headers the `Connection` header lists,
/// and `content-length` (the outgoing body sets its own).
///
/// Used on a node's reply before it goes back to the caller.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name) || *name == header::CONTENT_LENGTH)
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// The headers of a caller's request that may reach a node: everything but
/// hop-by-hop headers, `content-length`, credentials (`authorization`,
/// `cookie`, `x-jwt`) and `x-mediator-*` headers, which only the mediator
/// sets (so a caller cannot claim to be another node). Names are compared
/// with `_` read as `-`, so `x_mediator_from` and `x_jwt` are dropped too.
///
/// ```
/// use http::HeaderMap;
/// use mediator_transport_http::headers::forwardable;
/// let mut h = HeaderMap::new();
/// h.insert("authorization", "Bearer secret".parse().unwrap());
/// h.insert("x-mediator-from", "billing/admin".parse().unwrap());
/// h.insert("connection", "x-private".parse().unwrap());
/// h.insert("x-private", "1".parse().unwrap());
/// h.insert("x_mediator_from", "billing/admin".parse().unwrap());
/// h.insert("content-type", "application/json".parse().unwrap());
/// let kept = forwardable(&h);
/// assert_eq!(kept.len(), 1);
/// assert_eq!(kept["content-type"], "application/json");
/// ```
pub fn forwardable(headers: &HeaderMap) -> HeaderMap {
    forwardable_with_room(headers, 0)
}

/// [`forwardable`], in a map with room for `room` more headers, so that
/// adding the mediator's own does not grow it again.
pub(crate) fn forwardable_with_room(headers: &HeaderMap, room: usize) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut kept = HeaderMap::with_capacity(headers.keys_len() + room);
    for (name, value) in headers {
        let folded = folded(name);
        if hop_by_hop_folded(name, &folded)
            || credential_folded(&folded)
            || name == header::CONTENT_LENGTH
            || reserved_folded(&folded)
            || listed.contains(name)
        {
            continue;
        }
        kept.append(name.clone(), value.clone());
    }
    kept
}

/// Whether a node's reply header would act on the caller's browser with
/// the hub's authority: set or clear its cookies or storage, open the
/// hub's origin to other origins, pin it to HTTPS, send the browser
/// elsewhere, loosen the sandbox the hub puts the reply in, or have the
/// browser report or refer the page's address (which may hold the caller's
/// `x-jwt` query parameter) to another site.
pub(crate) fn acts_for_the_origin(name: &[u8]) -> bool {
    matches!(
        name,
        b"set-cookie"
            | b"set-cookie2"
            | b"clear-site-data"
            | b"strict-transport-security"
            | b"refresh"
            | b"location"
            | b"referrer-policy"
            | b"content-security-policy"
            | b"content-security-policy-report-only"
            | b"service-worker-allowed"
            | b"timing-allow-origin"
            | b"report-to"
            | b"reporting-endpoints"
            | b"nel"
    ) || name.starts_with(b"access-control-")
}

/// The header names a `Connection` header lists (each is hop-by-hop).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// A query string without its `x-jwt` parameters, the rest kept byte for
/// byte in order; `None` when nothing is left.
///
/// ```
/// use mediator_transport_http::headers::forwardable_query;
/// assert_eq!(forwardable_query("a=1&x-jwt=t&b=%20"), Some("a=1&b=%20".to_owned()));
/// assert_eq!(forwardable_query("x%2Djwt=t"), None);
/// ```
pub fn forwardable_query(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_token_pair(pair))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("&"))
    }
}

fn is_token_pair(pair: &str) -> bool {
    let key = pair.split_once('=').map_or(pair, |(k, _)| k);
    percent_decode(key).as_deref() == Some(X_JWT_PARAM)
}

/// The value of the first `x-jwt` query parameter, percent-decoded.
pub fn token_in_query(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if percent_decode(key).as_deref() == Some(X_JWT_PARAM) {
            percent_decode(value)
        } else {
            None
        }
    })
}

/// A request body without its top-level `x-jwt` field.
///
/// Only a JSON object that has the field is re-serialised; any other body
/// (JSON without the field, not JSON at all, sealed bytes) is returned as it
/// is, so the mediator never alters what it does not have to.
///
/// ```
/// use mediator_transport_http::headers::forwardable_body;
/// let body = bytes::Bytes::from_static(br#"{"x-jwt":"t","payload":"p"}"#);
/// assert_eq!(forwardable_body(body), r#"{"payload":"p"}"#);
/// let opaque = bytes::Bytes::from_static(b"\x01x-jwt");
/// assert_eq!(forwardable_body(opaque.clone()), opaque);
/// ```
pub fn forwardable_body(body: Bytes) -> Bytes {
    let Some(mut object) = json_object_with_token(&body) else {
        return body;
    };
    object.remove(X_JWT_PARAM);
    match serde_json::to_vec(&object) {
        Ok(bytes) => Bytes::from(bytes),
        // A map of parsed JSON values always serialises; should it ever not,
        // sending nothing is safer than sending the token.
        Err(_) => Bytes::new(),
    }
}

/// The string in a JSON object body's top-level `x-jwt` field.
pub fn token_in_body(body: &[u8]) -> Option<String> {
    json_object_with_token(body)?
        .remove(X_JWT_PARAM)
        .and_then(|v| match v {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        })
}

/// Whether `body` may be a JSON object with an `x-jwt` field, by a cheap
/// look that never misses one: an object (after a UTF-8 byte order mark,
/// which common JSON parsers skip, and white space) naming `x-jwt` or
/// holding a `\u` escape (`"x\u002djwt"`, which every JSON parser, the
/// node's included, reads as the same field).
pub(crate) fn may_carry_token(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && (contains(body, X_JWT_PARAM.as_bytes()) || contains(body, b"\\u"))
}

fn json_object_with_token(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    // Cheap pre-check so large opaque bodies are not parsed for nothing.
    if !may_carry_token(body) {
        return None;
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::Object(map) if map.contains_key(X_JWT_PARAM) => Some(map),
        _ => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Percent-decodes `s` as URL parsers do (`+` kept as is, a malformed
/// escape kept literally); `None` when the result is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_found_in_query_and_body() {
        assert_eq!(token_in_query("a=1&x-jwt=abc.def"), Some("abc.def".into()));
        assert_eq!(token_in_query("x%2djwt=a%2Eb"), Some("a.b".into()));
        assert_eq!(token_in_query("a=1"), None);
        assert_eq!(token_in_body(br#" {"x-jwt":"t"}"#), Some("t".into()));
        assert_eq!(token_in_body(br#"{"x-jwt":1}"#), None);
        assert_eq!(token_in_body(b"x-jwt"), None);
    }

    #[test]
    fn bodies_without_the_field_are_untouched() {
        let body = Bytes::from_static(br#"{ "a" : 1 }"#);
        assert_eq!(forwardable_body(body.clone()), body);
        let nested = Bytes::from_static(br#"{"inner":{"x-jwt":"t"}}"#);
        assert_eq!(forwardable_body(nested.clone()), nested);
        let escaped_elsewhere = Bytes::from_static(br#"{"a":"\u00e9"}"#);
        assert_eq!(
            forwardable_body(escaped_elsewhere.clone()),
            escaped_elsewhere
        );
    }

    #[test]
    fn an_escaped_key_is_the_token_field_too() {
        let body = Bytes::from_static(br#"{"x\u002Djwt":"t","a":1}"#);
        assert_eq!(token_in_body(&body), Some("t".into()));
        assert_eq!(forwardable_body(body), r#"{"a":1}"#);
        let marked = Bytes::from_static(b"\xEF\xBB\xBF{\"x-jwt\":\"t\",\"a\":1}");
        assert_eq!(token_in_body(&marked), Some("t".into()));
        assert_eq!(forwardable_body(marked), r#"{"a":1}"#);
    }

    #[test]
    fn hop_by_hop_and_listed_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-a".parse().unwrap());
        h.insert("x-a", "1".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("content-length", "5".parse().unwrap());
        h.insert("x-b", "2".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-b"));
    }

    #[test]
    fn underscores_spell_the_same_reserved_and_secret_headers() {
        let mut h = HeaderMap::new();
        for name in [
            "x_mediator_from",
            "x_mediator-target",
            "X_Mediator-Deadline",
            "x-mediator_node",
            "x_jwt",
            "proxy_authorization",
            "x_mediator",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "forged".parse().unwrap(),
            );
        }
        h.insert("x_custom", "kept".parse().unwrap());
        let kept = forwardable(&h);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept["x_custom"], "kept");
        assert!(is_credential(&HeaderName::from_static("x_jwt")));
        assert!(is_reserved(&HeaderName::from_static("x_mediator_from")));
    }

    #[test]
    fn malformed_escapes_do_not_decode() {
        // As URL parsers read them: a malformed escape stays literal.
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%4"), Some("%4".into()));
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
        assert_eq!(percent_decode("%41b"), Some("Ab".into()));
    }
}
