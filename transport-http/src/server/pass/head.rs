//! The caller's request head, read on the raw bytes: whether the
//! pass-through takes the call, and the node's request head if it does.

use std::time::Duration;

use http::Method;
use mediator_core::context::is_valid_traceparent;
use mediator_core::inbound::PassHead;
use mediator_core::{Mediator, Timestamp};

use super::raw::{lowercase, visible, Lower};
use crate::headers::{forwardable_query, hop_by_hop_lower};
use crate::server::routes::path::{parse_route, Fan, Route};

/// The most headers a head the pass-through takes may have.
pub(super) const MAX_HEADERS: usize = 48;
/// The largest head the pass-through takes; a larger one goes to the full
/// path, whose own limits apply.
pub(super) const MAX_HEAD: usize = 16 * 1024;

/// What the raw bytes at the start of a connection's buffer are.
pub(super) enum Read<'m> {
    /// Not a whole head yet.
    Partial,
    /// Not for the pass-through: the full path takes the connection from
    /// here, these bytes included.
    Handover,
    /// A call the core took.
    Taken(Box<Plan<'m>>),
}

/// A call the pass-through makes: what the core took, and the node's
/// request but for its first lines.
pub(super) struct Plan<'m> {
    pub(super) passing: mediator_core::inbound::Passing<'m>,
    /// The head's length in the buffer; the body follows it.
    pub(super) head_len: usize,
    pub(super) body_len: usize,
    /// The caller asked to close the connection after this answer.
    pub(super) close: bool,
    pub(super) method: Method,
    /// The path and query the node is asked for, from `/`.
    pub(super) path: String,
    /// The node's head after its request line, `host` and deadline: the
    /// caller's headers that travel and the mediator's own, through the
    /// blank line.
    pub(super) tail: Vec<u8>,
}

/// Reads the head at the start of `buf`, and offers the call to the core.
pub(super) fn read<'m>(
    buf: &[u8],
    mediator: &'m Mediator,
    remote: std::net::SocketAddr,
    arrived: tokio::time::Instant,
) -> Read<'m> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Read::Partial,
        // Too large, too many headers, or malformed: the full path answers
        // as it always has.
        _ => return Read::Handover,
    };
    if head_len > MAX_HEAD || request.version != Some(1) {
        return Read::Handover;
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Read::Handover;
    };
    let method = match method {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "PATCH" => Method::PATCH,
        "OPTIONS" => Method::OPTIONS,
        // HEAD answers carry no body, CONNECT and the rest are not calls.
        _ => return Read::Handover,
    };
    if !target.starts_with('/') || !target.bytes().all(plain_target_byte) {
        return Read::Handover;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let (fan, group, name, rest) = match parse_route(path) {
        Route::Forward {
            fan,
            group,
            name,
            rest,
        } if fan != Fan::Many => (fan, group, name, rest),
        _ => return Read::Handover,
    };
    let Some(found) = Found::scan(request.headers) else {
        return Read::Handover;
    };
    let Some(token) = found.token else {
        // A token only in the query or the body: the full path reads it.
        return Read::Handover;
    };
    let timeout = match found.budget(mediator.clock().now()) {
        Ok(timeout) => timeout,
        Err(()) => return Read::Handover,
    };
    let Ok(body_len) = usize::try_from(found.content_length.unwrap_or(0)) else {
        return Read::Handover;
    };
    let mut target_text = String::with_capacity(group.len() + 1 + name.map_or(1, str::len));
    target_text.push_str(group);
    target_text.push('/');
    match fan {
        Fan::One => target_text.push_str(name.unwrap_or_default()),
        _ => target_text.push('?'),
    }
    let mut node_path = String::with_capacity(1 + rest.len() + query.map_or(0, str::len));
    node_path.push('/');
    node_path.push_str(rest);
    if let Some(query) = query.and_then(forwardable_query) {
        node_path.push('?');
        node_path.push_str(&query);
    }
    let mut head = PassHead::new("http", token, &target_text, body_len as u64);
    head.method = method.clone();
    head.path = &node_path;
    head.request_id = found.request_id;
    head.traceparent = found.traceparent;
    head.timeout = timeout;
    head.remote = Some(remote);
    head.arrived = arrived;
    let Some(passing) = mediator.pass(head, "http") else {
        return Read::Handover;
    };
    let tail = node_tail(request.headers, &found, &passing, body_len);
    Read::Taken(Box::new(Plan {
        passing,
        head_len,
        body_len,
        close: found.close,
        method,
        path: node_path,
        tail,
    }))
}

/// The bytes a request target the pass-through takes is made of: those
/// of a path and query that need no decoding to be routed the way the
/// full path routes them. Anything else goes to the full path.
fn plain_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'/' | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'?'
                | b'&'
                | b'='
                | b'+'
                | b':'
                | b'@'
                | b'!'
                | b'$'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b','
                | b';'
        )
}

/// What the caller's head says, found in one pass over its headers.
struct Found<'b> {
    token: Option<&'b str>,
    content_length: Option<u64>,
    close: bool,
    request_id: Option<&'b str>,
    traceparent: Option<&'b str>,
    deadline: Option<&'b [u8]>,
    timeout_ms: Option<&'b [u8]>,
}

impl<'b> Found<'b> {
    /// Scans the headers; `None` when the head is one for the full path:
    /// a body not framed by one `Content-Length` alone, `Expect`,
    /// `Upgrade`, a `Connection` naming other headers, a Basic login or
    /// more than one credential header.
    fn scan(headers: &[httparse::Header<'b>]) -> Option<Found<'b>> {
        let mut found = Found {
            token: None,
            content_length: None,
            close: false,
            request_id: None,
            traceparent: None,
            deadline: None,
            timeout_ms: None,
        };
        let mut authorizations = 0;
        let mut x_jwt = None;
        for header in headers {
            let mut room = [0u8; 256];
            let Some(Lower { lower, .. }) = lowercase(header.name, &mut room) else {
                // A name longer than any this path knows: judged by the
                // full path's filters.
                return None;
            };
            match lower {
                b"transfer-encoding" | b"expect" | b"upgrade" | b"te" | b"trailer" => return None,
                b"content-length" => {
                    if found.content_length.is_some() {
                        return None;
                    }
                    found.content_length = Some(content_length(header.value)?);
                }
                b"connection" => {
                    for option in header.value.split(|b| *b == b',') {
                        let option = option.trim_ascii();
                        if option.eq_ignore_ascii_case(b"close") {
                            found.close = true;
                        } else if !option.eq_ignore_ascii_case(b"keep-alive") && !option.is_empty()
                        {
                            return None;
                        }
                    }
                }
                b"authorization" => {
                    authorizations += 1;
                    let value = visible(header.value)?.trim();
                    let (scheme, token) = value.split_once(' ')?;
                    let token = token.trim();
                    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
                        return None;
                    }
                    found.token = Some(token);
                }
                b"x-jwt" if x_jwt.is_none() => {
                    x_jwt = visible(header.value)
                        .map(str::trim)
                        .filter(|t| !t.is_empty());
                    x_jwt?;
                }
                b"x-request-id" if found.request_id.is_none() => {
                    found.request_id = visible(header.value);
                }
                b"traceparent" if found.traceparent.is_none() => {
                    found.traceparent = visible(header.value);
                }
                b"x-mediator-deadline" if found.deadline.is_none() => {
                    found.deadline = Some(header.value);
                }
                b"x-mediator-timeout-ms" if found.timeout_ms.is_none() => {
                    found.timeout_ms = Some(header.value);
                }
                _ => {}
            }
        }
        if authorizations > 1 {
            return None;
        }
        if found.token.is_none() {
            found.token = x_jwt;
        }
        Some(found)
    }

    /// The caller's budget, as the full path reads it: the smaller of
    /// `x-mediator-deadline` and `x-mediator-timeout-ms`; `Err` when one
    /// is malformed (the full path refuses it).
    fn budget(&self, now: Timestamp) -> Result<Option<Duration>, ()> {
        let number = |value: &[u8]| {
            visible(value)
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(())
        };
        let mut budget = None;
        if let Some(value) = self.deadline {
            let at = number(value)?;
            let at = Timestamp::from_millis(i64::try_from(at).unwrap_or(i64::MAX));
            budget = Some(now.until(at));
        }
        if let Some(value) = self.timeout_ms {
            let asked = Duration::from_millis(number(value)?);
            budget = Some(budget.map_or(asked, |b: Duration| b.min(asked)));
        }
        Ok(budget)
    }
}

/// A `Content-Length` value: digits only, as RFC 9112 has it (no sign,
/// no list, no inner space); `None` otherwise.
fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Nineteen digits or fewer: within u64.
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The node's head after its first lines: the caller's headers that
/// travel (everything but hop-by-hop headers, `content-length`,
/// credentials and `x-mediator-*`, as
/// [`forwardable`](crate::headers::forwardable) keeps them, and the ids
/// the call's own replace), then the mediator's headers.
fn node_tail(
    headers: &[httparse::Header<'_>],
    found: &Found<'_>,
    passing: &mediator_core::inbound::Passing<'_>,
    body_len: usize,
) -> Vec<u8> {
    let continued = found.traceparent.is_some_and(is_valid_traceparent);
    let mut tail = Vec::with_capacity(512);
    for header in headers {
        let mut room = [0u8; 256];
        // Every name was read by `Found::scan`, which refuses longer ones.
        let Some(names) = lowercase(header.name, &mut room) else {
            continue;
        };
        if !travels(&names, continued) {
            continue;
        }
        tail.extend_from_slice(header.name.as_bytes());
        tail.extend_from_slice(b": ");
        tail.extend_from_slice(header.value);
        tail.extend_from_slice(b"\r\n");
    }
    tail.extend_from_slice(b"x-mediator: true\r\n");
    if let Some(from) = passing.from() {
        line(&mut tail, "x-mediator-from", &from.to_string());
    }
    line(
        &mut tail,
        "x-mediator-target",
        &passing.target().to_string(),
    );
    let trace = passing.trace();
    if let Some(id) = &trace.request_id {
        line(&mut tail, "x-request-id", id);
    }
    if let Some(parent) = &trace.traceparent {
        line(&mut tail, "traceparent", parent);
    }
    // As hyper's client frames a whole body: a length when there is one.
    if body_len > 0 {
        tail.extend_from_slice(b"content-length: ");
        tail.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        tail.extend_from_slice(b"\r\n");
    }
    tail.extend_from_slice(b"\r\n");
    tail
}

fn line(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether a caller's header travels to the node, by its name in lower
/// case (`lower`) and with `_` read as `-` (`folded`), as the full path's
/// filters judge it.
fn travels(names: &Lower<'_>, continued: bool) -> bool {
    let Lower { lower, folded } = *names;
    let hop_by_hop = hop_by_hop_lower(lower, folded);
    let credential = matches!(folded, b"authorization" | b"cookie" | b"x-jwt");
    let replaced =
        matches!(lower, b"x-request-id" | b"traceparent") || (lower == b"tracestate" && !continued);
    !(hop_by_hop
        || credential
        || replaced
        || lower == b"content-length"
        || folded.starts_with(b"x-mediator"))
}
