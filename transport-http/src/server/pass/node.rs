//! The node's side of a pass-through: connections kept per caller
//! connection, the request written from the caller's own buffer, and the
//! node's reply read and framed as hyper's client reads it.

use std::io::IoSlice;

use bytes::BytesMut;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::raw::{lowercase, Lower};
use crate::headers::{acts_for_the_origin, hop_by_hop_lower};

/// The largest head a node's reply may have.
const MAX_REPLY_HEAD: usize = 64 * 1024;
/// The most headers a node's reply may have.
const MAX_REPLY_HEADERS: usize = 100;

/// A node's `http://` endpoint, split: where to connect, and the path its
/// calls go under.
pub(super) struct Address<'a> {
    /// `host:port` as the endpoint writes it, the request's `host`.
    pub(super) authority: &'a str,
    /// The endpoint's own path, without a trailing `/`.
    pub(super) base: &'a str,
}

impl<'a> Address<'a> {
    /// The parts of `url` (`http://host[:port][/base]`).
    pub(super) fn of(url: &'a str) -> Option<Address<'a>> {
        let rest = url.strip_prefix("http://")?;
        let (authority, base) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        Some(Address {
            authority,
            base: base.trim_end_matches('/'),
        })
    }
}

/// Writes every byte of `parts` to `stream`; how many were written when it
/// failed.
pub(super) async fn write_all(
    stream: &mut TcpStream,
    parts: &mut [IoSlice<'_>],
) -> Result<(), (usize, std::io::Error)> {
    let mut parts = parts;
    let mut written = 0;
    while !parts.is_empty() {
        match stream.write_vectored(parts).await {
            Ok(0) => {
                return Err((
                    written,
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "connection closed"),
                ))
            }
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut parts, n);
            }
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// A node's reply, read whole.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    /// Whether it has a `Location`.
    pub(super) located: bool,
    /// The headers that go on to the caller, lower-cased, each line
    /// through its CRLF.
    pub(super) headers: Vec<u8>,
    /// Which of the headers the mediator adds only when the node gave none
    /// the node gave.
    pub(super) has: Has,
    /// Where the body is in the connection's buffer (chunked bodies are
    /// joined into `joined`).
    pub(super) body: std::ops::Range<usize>,
    pub(super) joined: Option<Vec<u8>>,
    /// How many bytes of the buffer the reply took.
    pub(super) used: usize,
    /// Whether the connection may carry another call.
    pub(super) reusable: bool,
}

impl Reply {
    /// The body's bytes.
    pub(super) fn body<'b>(&'b self, buf: &'b [u8]) -> &'b [u8] {
        match &self.joined {
            Some(joined) => joined,
            None => &buf[self.body.clone()],
        }
    }
}

/// The headers of the caller's answer the node may set and the mediator
/// sets when it does not.
#[derive(Default, Clone, Copy)]
pub(super) struct Has {
    pub(super) cache_control: bool,
    pub(super) pragma: bool,
    pub(super) expires: bool,
    pub(super) date: bool,
}

/// How a reply's body is framed.
enum Framing {
    None,
    Length(usize),
    Chunked,
    /// Until the node closes the connection.
    Close,
}

/// Reads a node's reply into `buf` (which it clears first): its head, then
/// its body as its head frames it, up to `max` bytes; informational heads
/// before it are skipped, as hyper's client skips them.
pub(super) async fn read_reply(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Reply, String> {
    buf.clear();
    loop {
        let (status, framing, reply_close, head_len, mut reply) = loop {
            if let Some(parsed) = parse_head(buf)? {
                break parsed;
            }
            if buf.len() >= MAX_REPLY_HEAD {
                return Err(format!("reply head larger than {MAX_REPLY_HEAD} bytes"));
            }
            fill(stream, buf, "the reply head").await?;
        };
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            let _ = buf.split_to(head_len);
            continue;
        }
        let too_large = || format!("reply too large (over {max} bytes)");
        match framing {
            Framing::None => {
                reply.body = head_len..head_len;
                reply.used = head_len;
                // After `101` the connection speaks something else.
                reply.reusable = !reply_close && status != StatusCode::SWITCHING_PROTOCOLS;
            }
            Framing::Length(len) => {
                if len > max {
                    return Err(too_large());
                }
                let end = head_len + len;
                buf.reserve(end.saturating_sub(buf.len()));
                while buf.len() < end {
                    fill(stream, buf, "the reply body").await?;
                }
                reply.body = head_len..end;
                reply.used = end;
                reply.reusable = !reply_close;
            }
            Framing::Chunked => {
                let mut chunks = Dechunk {
                    at: head_len,
                    out: Vec::new(),
                };
                let end = loop {
                    if let Some(end) = chunks.step(buf, max)? {
                        break end;
                    }
                    fill(stream, buf, "the reply body").await?;
                };
                reply.body = head_len..head_len;
                reply.joined = Some(chunks.out);
                reply.used = end;
                reply.reusable = !reply_close;
            }
            Framing::Close => {
                loop {
                    if buf.len() - head_len > max {
                        return Err(too_large());
                    }
                    buf.reserve(16 * 1024);
                    let read = stream
                        .read_buf(buf)
                        .await
                        .map_err(|e| format!("reading the reply body: {e}"))?;
                    if read == 0 {
                        break;
                    }
                }
                reply.body = head_len..buf.len();
                reply.used = buf.len();
                reply.reusable = false;
            }
        }
        reply.status = status;
        return Ok(reply);
    }
}

/// Reads more of the reply into `buf`; the node closing first is an error.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, what: &str) -> Result<(), String> {
    buf.reserve(16 * 1024);
    match stream.read_buf(buf).await {
        Ok(0) => Err(format!(
            "the node closed the connection before {what} was complete"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("reading {what}: {e}")),
    }
}

type Parsed = (StatusCode, Framing, bool, usize, Reply);

/// The reply head at the start of `buf`, if whole.
fn parse_head(buf: &[u8]) -> Result<Option<Parsed>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REPLY_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed reply head: {e}")),
    };
    let code = response.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("reply status {code} out of range"))?;
    let http11 = response.version == Some(1);
    let mut close = !http11;
    let mut chunked = None;
    let mut length: Option<usize> = None;
    let mut listed: Vec<Vec<u8>> = Vec::new();
    for header in response.headers.iter() {
        let mut room = [0u8; 256];
        let Some(Lower { lower, .. }) = lowercase(header.name, &mut room) else {
            continue;
        };
        match lower {
            b"connection" => {
                for option in header.value.split(|b| *b == b',') {
                    let option = option.trim_ascii();
                    if option.eq_ignore_ascii_case(b"close") {
                        close = true;
                    }
                    listed.push(option.to_ascii_lowercase());
                }
            }
            b"transfer-encoding" => {
                // The last coding decides: chunked, or read to the end.
                let last = header
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .map(<[u8]>::trim_ascii)
                    .unwrap_or_default();
                chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
            b"content-length" => {
                let value = std::str::from_utf8(header.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or("malformed content-length in the reply")?;
                if length.is_some_and(|l| l != value) {
                    return Err("the reply has two different content-lengths".into());
                }
                length = Some(value);
            }
            _ => {}
        }
    }
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::None,
        (false, Some(true), _) => Framing::Chunked,
        (false, Some(false), _) => Framing::Close,
        (false, None, Some(len)) => Framing::Length(len),
        (false, None, None) => Framing::Close,
    };
    // Both framings given: the body is read by its coding, and the
    // connection is not trusted with another call.
    let close = close || (chunked.is_some() && length.is_some());
    let mut reply = Reply {
        status,
        located: false,
        headers: Vec::with_capacity(256),
        has: Has::default(),
        body: 0..0,
        joined: None,
        used: 0,
        reusable: false,
    };
    for header in response.headers.iter() {
        let mut room = [0u8; 256];
        let Some(Lower { lower, folded }) = lowercase(header.name, &mut room) else {
            continue;
        };
        if lower == b"location" {
            reply.located = true;
        }
        if !relayed(lower, folded) || listed.iter().any(|l| l == lower) {
            continue;
        }
        match lower {
            b"cache-control" => reply.has.cache_control = true,
            b"pragma" => reply.has.pragma = true,
            b"expires" => reply.has.expires = true,
            b"date" => reply.has.date = true,
            _ => {}
        }
        reply.headers.extend_from_slice(lower);
        reply.headers.extend_from_slice(b": ");
        reply.headers.extend_from_slice(header.value);
        reply.headers.extend_from_slice(b"\r\n");
    }
    Ok(Some((status, framing, close, head_len, reply)))
}

/// Whether a header of a node's reply reaches the caller: not one that
/// describes the connection, not the mediator's own, not one that would
/// act with the hub's authority, and not one the mediator sets itself.
fn relayed(lower: &[u8], folded: &[u8]) -> bool {
    let hop_by_hop = hop_by_hop_lower(lower, folded) || lower == b"content-length";
    let set_here = matches!(
        lower,
        b"x-content-type-options" | b"x-request-id" | b"access-control-allow-origin"
    );
    !(hop_by_hop || set_here || folded.starts_with(b"x-mediator") || acts_for_the_origin(lower))
}

/// A chunked body being joined, from `at` in the buffer.
struct Dechunk {
    at: usize,
    out: Vec<u8>,
}

impl Dechunk {
    /// Joins the chunks whole in `buf`; `Some(end)` once the last chunk
    /// and trailers are read, `None` when more bytes are needed.
    fn step(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, String> {
        loop {
            let rest = &buf[self.at..];
            let Some(line_end) = find_crlf(rest, 4096)? else {
                return Ok(None);
            };
            let size = chunk_size(&rest[..line_end])?;
            let data_at = line_end + 2;
            if size == 0 {
                // Trailers, if any, until an empty line; not relayed.
                let mut at = data_at;
                loop {
                    let Some(end) = find_crlf(&rest[at..], 8192)? else {
                        return Ok(None);
                    };
                    at += end + 2;
                    if end == 0 {
                        return Ok(Some(self.at + at));
                    }
                }
            }
            if self.out.len().saturating_add(size) > max {
                return Err(format!("reply too large (over {max} bytes)"));
            }
            let data_end = data_at.checked_add(size).ok_or("chunk size overflows")?;
            if rest.len() < data_end + 2 {
                return Ok(None);
            }
            if &rest[data_end..data_end + 2] != b"\r\n" {
                return Err("a chunk does not end where its size says".into());
            }
            self.out.extend_from_slice(&rest[data_at..data_end]);
            self.at += data_end + 2;
        }
    }
}

/// Where the first CRLF in `bytes` is; an error past `limit` bytes or at
/// a bare LF.
fn find_crlf(bytes: &[u8], limit: usize) -> Result<Option<usize>, String> {
    match bytes.iter().position(|b| *b == b'\n') {
        Some(0) => Err("a bare LF in a chunked reply".into()),
        Some(at) if bytes[at - 1] == b'\r' => Ok(Some(at - 1)),
        Some(_) => Err("a bare LF in a chunked reply".into()),
        None if bytes.len() > limit => Err("a chunk line too long".into()),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then optional spaces or tabs and
/// extensions after `;`, which are ignored.
fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return Err("a malformed chunk size".into());
    }
    let after = line[digits..].trim_ascii_start();
    if !(after.is_empty() || after.starts_with(b";")) {
        return Err("a malformed chunk size".into());
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| "a malformed chunk size")?;
    let size = u64::from_str_radix(text, 16).map_err(|_| "a malformed chunk size")?;
    usize::try_from(size).map_err(|_| "chunk size overflows".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined_and_checked() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let mut chunks = Dechunk {
            at: 0,
            out: Vec::new(),
        };
        let end = chunks.step(body, 100).expect("valid").expect("whole");
        assert_eq!(chunks.out, b"wikipedia");
        assert_eq!(&body[end..], b"NEXT");
        let mut partial = Dechunk {
            at: 0,
            out: Vec::new(),
        };
        assert!(partial.step(b"4\r\nwi", 100).expect("valid").is_none());
        for bad in [
            &b"g\r\n"[..],
            b"4\nwiki\r\n",
            b"4\r\nwikiX\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            let mut chunks = Dechunk {
                at: 0,
                out: Vec::new(),
            };
            assert!(chunks.step(bad, 100).is_err(), "{bad:?}");
        }
        let mut big = Dechunk {
            at: 0,
            out: Vec::new(),
        };
        assert!(big.step(b"ff\r\n", 10).is_err());
    }

    #[test]
    fn addresses_split_into_authority_and_base() {
        let a = Address::of("http://127.0.0.1:9000/base/").expect("valid");
        assert_eq!((a.authority, a.base), ("127.0.0.1:9000", "/base"));
        let a = Address::of("http://[::1]:80").expect("valid");
        assert_eq!((a.authority, a.base), ("[::1]:80", ""));
        assert!(Address::of("https://x").is_none());
        assert!(Address::of("http://u@x").is_none());
    }
}
