//! One corpus of raw HTTP/1.1 requests (valid, malformed, smuggling
//! attempts) with the verdict RFC 9112 asks for: what any framing of the
//! API must agree on. The API's listener runs it on the wire, and the
//! differential test sends it to both of its HTTP/1.1 paths (the
//! pass-through and hyper's server) and requires the same outcome.

/// What the mediator must answer to one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// These statuses, in order, each answered.
    Answers(&'static [u16]),
    /// Refused as malformed: one 400 (or a close with no answer, for
    /// bytes that are no HTTP at all), and nothing more.
    Refused,
    /// Both `Content-Length` and `Transfer-Encoding`: framed by the
    /// latter, as RFC 9112 (6.3) says, answered with this status, and the
    /// connection closed after it (the case sends no `connection: close`),
    /// so nothing after the chunked body is read as a request.
    ByTransferEncodingThenClosed(u16),
}

/// One case: raw bytes (see [`render`]), what the
/// mediator answers, and the bodies the node receives, in order.
pub struct Case {
    /// What the case tries.
    pub name: &'static str,
    /// The bytes, with `{HEAD}` for [`HEAD`], `{T}` for a token and `{N}`
    /// for the body's length; ending in `{EOF}`: the caller then closes
    /// its sending half.
    pub bytes: &'static str,
    /// What the mediator answers.
    pub verdict: Verdict,
    /// The bodies the node receives, in order.
    pub node_gets: &'static [&'static str],
}

/// The head of a call to `users/api` with a bearer token, without its
/// blank line.
pub const HEAD: &str = "POST /one/users/api/x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\n";

/// A case's bytes with the head, the token and the body's length (`{N}`:
/// the bytes after the blank line that follows it) filled in, and whether
/// the caller closes its sending half after them (`{EOF}`).
pub fn render(bytes: &str, token: &str) -> (String, bool) {
    let (bytes, eof) = match bytes.strip_suffix("{EOF}") {
        Some(bytes) => (bytes, true),
        None => (bytes, false),
    };
    (fill(bytes, token), eof)
}

fn fill(bytes: &str, token: &str) -> String {
    let text = bytes.replace("{HEAD}", HEAD).replace("{T}", token);
    let Some(at) = text.find("{N}") else {
        return text;
    };
    let body = text[at..]
        .find("\r\n\r\n")
        .map_or(0, |end| text.len() - (at + end + 4));
    text.replacen("{N}", &body.to_string(), 1)
}

/// Every case.
pub fn corpus() -> Vec<Case> {
    use Verdict::*;
    vec![
        Case {
            name: "content-length body",
            bytes: "{HEAD}content-length: 5\r\nconnection: close\r\n\r\nhello",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "chunked body",
            bytes: "{HEAD}transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "chunk extensions are ignored",
            bytes: "{HEAD}transfer-encoding: chunked\r\nconnection: close\r\n\r\n5;a=b\r\nhello\r\n0;c\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "pipelined requests are answered in order",
            bytes: "{HEAD}content-length: 3\r\n\r\none{HEAD}content-length: 3\r\nconnection: close\r\n\r\ntwo",
            verdict: Answers(&[200, 200]),
            node_gets: &["one", "two"],
        },
        Case {
            name: "content-length and transfer-encoding together",
            bytes: "{HEAD}content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            verdict: ByTransferEncodingThenClosed(200),
            node_gets: &["hello"],
        },
        Case {
            name: "smuggling a request behind content-length and transfer-encoding",
            bytes: "{HEAD}content-length: 48\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nPOST /one/users/api/smuggled HTTP/1.1\r\nhost: h\r\n\r\n",
            verdict: ByTransferEncodingThenClosed(200),
            node_gets: &[""],
        },
        Case {
            name: "smuggling a request behind a content-length the mediator reads past",
            bytes: "{HEAD}content-length: 0\r\n\r\nPOST /one/users/api/second HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[200, 401]),
            node_gets: &[""],
        },
        Case {
            name: "two content-lengths that differ",
            bytes: "{HEAD}content-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a content-length that is no number",
            bytes: "{HEAD}content-length: 5x\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a negative content-length",
            bytes: "{HEAD}content-length: -1\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a transfer-encoding other than chunked last",
            bytes: "{HEAD}transfer-encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "an obs-fold continuation line",
            bytes: "{HEAD}x-folded: a\r\n b\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "whitespace between a header's name and its colon",
            bytes: "{HEAD}content-length : 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a header line without a colon",
            bytes: "{HEAD}no colon here\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a chunk size past 64 bits",
            bytes: "{HEAD}transfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a chunk size that is no hex number",
            bytes: "{HEAD}transfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a NUL in a header value",
            bytes: "{HEAD}x-bad: a\0b\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a space inside the request target",
            bytes: "POST /one/users/api/x y HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "bare LF line endings",
            bytes: "POST /one/users/api/x HTTP/1.1\nhost: h\nauthorization: Bearer {T}\ncontent-length: 5\nconnection: close\n\nhello",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "HTTP/1.0 with a content-length, closed after the answer",
            bytes: "POST /one/users/api/x HTTP/1.0\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "three pipelined calls in one read",
            bytes: "{HEAD}content-length: 1\r\n\r\na{HEAD}content-length: 1\r\n\r\nb{HEAD}content-length: 1\r\nconnection: close\r\n\r\nc",
            verdict: Answers(&[200, 200, 200]),
            node_gets: &["a", "b", "c"],
        },
        Case {
            name: "a good call, then a malformed one",
            bytes: "{HEAD}content-length: 2\r\n\r\nhiGARBAGE\r\n\r\n",
            verdict: Answers(&[200, 400]),
            node_gets: &["hi"],
        },
        Case {
            name: "a call without a body",
            bytes: "GET /one/users/api/x?a=1&b=2 HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\nconnection: close\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &[""],
        },
        Case {
            name: "the token in the x-jwt header",
            bytes: "POST /one/users/api/x HTTP/1.1\r\nhost: h\r\nx-jwt: {T}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[200]),
            node_gets: &["hi"],
        },
        Case {
            name: "the token only in the query",
            bytes: "POST /one/users/api/x?keep=1&x-jwt={T} HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[200]),
            node_gets: &["hi"],
        },
        Case {
            name: "the token only in a JSON body",
            bytes: "POST /one/users/api/x HTTP/1.1\r\nhost: h\r\ncontent-type: application/json\r\ncontent-length: {N}\r\nconnection: close\r\n\r\n{\"x-jwt\":\"{T}\",\"a\":1}",
            verdict: Answers(&[200]),
            node_gets: &["{\"a\":1}"],
        },
        Case {
            name: "an x-jwt field in a JSON body beside a token in the head",
            bytes: "{HEAD}content-type: application/json\r\ncontent-length: {N}\r\nconnection: close\r\n\r\n{\"x-jwt\":\"t\",\"a\":1}   ",
            verdict: Answers(&[200]),
            node_gets: &["{\"a\":1}"],
        },
        Case {
            name: "expect 100-continue",
            bytes: "{HEAD}expect: 100-continue\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            verdict: Answers(&[100, 200]),
            node_gets: &["hello"],
        },
        Case {
            name: "a connection header naming another header",
            bytes: "{HEAD}connection: x-private, close\r\nx-private: 1\r\ncontent-length: 2\r\n\r\nhi",
            verdict: Answers(&[200]),
            node_gets: &["hi"],
        },
        Case {
            name: "an upgrade header on a call",
            bytes: "{HEAD}upgrade: websocket\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[200]),
            node_gets: &["hi"],
        },
        Case {
            name: "a content-length with leading zeros",
            bytes: "{HEAD}content-length: 005\r\nconnection: close\r\n\r\nhello",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "a content-length with a plus sign",
            bytes: "{HEAD}content-length: +5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a content-length past 2^64",
            bytes: "{HEAD}content-length: 99999999999999999999\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a content-length list",
            bytes: "{HEAD}content-length: 5, 5\r\nconnection: close\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a transfer-encoding spelled in capitals",
            bytes: "{HEAD}Transfer-Encoding: CHUNKED\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            // Chunked is still the final coding (RFC 9112 6.3), so the
            // length is known; hyper decodes it once.
            name: "transfer-encoding listed twice",
            bytes: "{HEAD}transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "a chunked body with a trailer",
            bytes: "{HEAD}transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "a chunked body without its last chunk",
            bytes: "{HEAD}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n{EOF}",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "an absolute-form target",
            bytes: "POST http://h/one/users/api/x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[200]),
            node_gets: &["hi"],
        },
        Case {
            name: "an escaped slash in the node's name",
            bytes: "POST /one/users/api%2Fx/y HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[400]),
            node_gets: &[],
        },
        Case {
            name: "a dot-dot segment for the group",
            bytes: "POST /one/../api/x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[400]),
            node_gets: &[],
        },
        Case {
            name: "a dot-dot segment after the node",
            bytes: "POST /one/users/api/../../admin HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[200]),
            node_gets: &["hi"],
        },
        Case {
            name: "a HEAD call",
            bytes: "HEAD /one/users/api/x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\nconnection: close\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &[""],
        },
        Case {
            // No body on the refused call: hyper reads a refused call's
            // unread body only as far as it has arrived, so whether the
            // next call is served would depend on timing.
            name: "a wrong token, then a good call on the same connection",
            bytes: "POST /one/users/api/x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer nope\r\ncontent-length: 0\r\n\r\n{HEAD}content-length: 2\r\nconnection: close\r\n\r\nho",
            verdict: Answers(&[401, 200]),
            node_gets: &["ho"],
        },
        Case {
            name: "a call to no such node",
            bytes: "POST /one/users/nobody/x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[404]),
            node_gets: &[],
        },
        Case {
            name: "a call to any node of the group",
            bytes: "POST /any/users/x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[200]),
            node_gets: &["hi"],
        },
        Case {
            name: "a head cut short by the caller's close",
            bytes: "POST /one/users/api/x HTTP/1.1\r\nhost: h\r\nauthori{EOF}",
            verdict: Answers(&[]),
            node_gets: &[],
        },
        Case {
            name: "a call then silence, the connection kept",
            bytes: "{HEAD}content-length: 2\r\n\r\nhi",
            verdict: Answers(&[200]),
            node_gets: &["hi"],
        },
        Case {
            name: "a body cut short by the caller's close",
            bytes: "{HEAD}content-length: 10\r\n\r\nhel{EOF}",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "nothing after the head of a call with a body",
            bytes: "{HEAD}content-length: 5\r\n\r\n{EOF}",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "no HTTP at all",
            bytes: "\x16\x03\x01\x00\x05hello\r\n\r\n",
            verdict: Refused,
            node_gets: &[],
        },
    ]
}
