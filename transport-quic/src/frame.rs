//! The wire format: a length-prefixed JSON header frame, then the body
//! until the stream's end (see the [crate documentation](crate)).

use bytes::Bytes;
use std::collections::BTreeMap;

use mediator_core::{Error, Summary};
use quinn::{ReadExactError, RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The ALPN protocol id both sides require.
pub const ALPN: &[u8] = b"mediator/1";

/// The largest header frame the listener accepts by default (16 KiB).
pub const DEFAULT_MAX_HEADER: usize = 16 * 1024;

/// The largest reply header frame a client accepts (a broadcast's header
/// lists every node's result, so it is larger than a request's).
pub(crate) const MAX_REPLY_HEADER: usize = 4 * 1024 * 1024;

/// Connection close codes (QUIC application error codes).
pub(crate) mod close {
    /// A normal end (the node stopped).
    pub(crate) const DONE: u32 = 0;
    /// A newer attachment under the same name replaced this one.
    pub(crate) const SUPERSEDED: u32 = 1;
    /// The mediator is shutting down.
    pub(crate) const SHUTDOWN: u32 = 2;
    /// The peer broke the protocol (bad hello).
    pub(crate) const PROTOCOL: u32 = 3;
    /// The hello was refused (authentication, registration).
    pub(crate) const REFUSED: u32 = 4;
    /// The token presented in the hello expired while the connection lived.
    pub(crate) const TOKEN_EXPIRED: u32 = 5;
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream or connection ended before a whole frame came.
    Closed(String),
    /// The frame announced more bytes than allowed.
    TooLarge(usize),
    /// The frame was not the JSON expected.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed(why) => write!(f, "stream ended before a whole frame: {why}"),
            FrameError::TooLarge(len) => write!(f, "header frame of {len} bytes is too large"),
            FrameError::Malformed(why) => write!(f, "malformed header frame: {why}"),
        }
    }
}

/// The hello a node sends on its first stream.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The node's bearer token.
    pub(crate) token: String,
    /// Present when the node attaches (answers requests); absent for a
    /// caller-only connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attach: Option<Attach>,
}

/// What an attaching node registers as.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Attach {
    pub(crate) group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) ttl_ms: u64,
}

/// The header frame of a request, both ways.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RequestHead {
    pub(crate) method: String,
    /// Path and query, starting with `/`.
    pub(crate) path: String,
    /// `g/n`, `g/`, `g/*` or `g/?`.
    pub(crate) target: String,
    /// Mediator to node: the verified sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    /// Mediator to node: the caller's deadline, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deadline_ms: Option<i64>,
    /// Node to mediator: how long the caller waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
}

/// The header frame of every answer: to a hello, to a delivery, to a call.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ReplyHead {
    pub(crate) status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    /// The node that answered (calls), or the node attached (hello).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    /// Hello: the lease granted, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lease_until_ms: Option<i64>,
    /// Hello: the mediator instance the node is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance: Option<String>,
    /// Broadcast: the counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) summary: Option<SummaryFrame>,
    /// Broadcast: one entry per node, in order; the bodies of the entries
    /// follow the header, concatenated, each `len` bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) results: Vec<ResultFrame>,
}

impl ReplyHead {
    /// The answer for an error.
    pub(crate) fn error(e: &Error) -> ReplyHead {
        ReplyHead {
            status: e.status(),
            kind: Some(e.kind().to_owned()),
            fault: Some(e.fault().to_string()),
            message: Some(e.public_message().into_owned()),
            ..ReplyHead::default()
        }
    }

    pub(crate) fn ok() -> ReplyHead {
        ReplyHead {
            status: 200,
            ..ReplyHead::default()
        }
    }

    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A broadcast's summary on the wire.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct SummaryFrame {
    pub(crate) asked: usize,
    pub(crate) answered: usize,
    pub(crate) failed: usize,
    pub(crate) timed_out: usize,
}

impl From<Summary> for SummaryFrame {
    fn from(s: Summary) -> Self {
        SummaryFrame {
            asked: s.asked,
            answered: s.answered,
            failed: s.failed,
            timed_out: s.timed_out,
        }
    }
}

impl From<SummaryFrame> for Summary {
    fn from(s: SummaryFrame) -> Self {
        Summary {
            asked: s.asked,
            answered: s.answered,
            failed: s.failed,
            timed_out: s.timed_out,
        }
    }
}

/// One node's part of a broadcast on the wire.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ResultFrame {
    pub(crate) node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<u64>,
    /// The node's status, or the error's.
    pub(crate) status: u16,
    /// Whether the node itself answered (with `status`); otherwise the
    /// mediator says why it has no answer.
    #[serde(default)]
    pub(crate) answered: bool,
    /// Length of this entry's body in the concatenated bodies.
    #[serde(default)]
    pub(crate) len: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

/// One header frame: a 4-byte big-endian length, then the JSON, in one
/// buffer that the stream keeps as it is.
fn encode_frame<T: Serialize>(frame: &T) -> Result<Bytes, String> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut buf, frame).map_err(|e| e.to_string())?;
    let len = u32::try_from(buf.len() - 4).map_err(|_| "frame larger than 4 GiB".to_owned())?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(Bytes::from(buf))
}

/// Writes one header frame: a 4-byte big-endian length, then the JSON.
pub(crate) async fn write_frame<T: Serialize>(
    send: &mut SendStream,
    frame: &T,
) -> Result<(), String> {
    let frame = encode_frame(frame)?;
    send.write_chunk(frame).await.map_err(|e| e.to_string())
}

/// Writes a header frame and the body after it in one call into the
/// connection (one lock, one wake of its driver), handing quinn both
/// buffers as they are.
pub(crate) async fn write_head_and_body<T: Serialize>(
    send: &mut SendStream,
    head: &T,
    body: Bytes,
) -> Result<(), String> {
    let frame = encode_frame(head)?;
    let written = if body.is_empty() {
        send.write_chunk(frame).await
    } else {
        send.write_all_chunks(&mut [frame, body]).await
    };
    written.map_err(|e| e.to_string())
}

/// Reads one header frame of at most `max` bytes (the length prefix
/// excluded).
pub(crate) async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    max: usize,
) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.map_err(closed)?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let mut json = vec![0u8; len];
    recv.read_exact(&mut json).await.map_err(closed)?;
    serde_json::from_slice(&json).map_err(|e| FrameError::Malformed(e.to_string()))
}

fn closed(e: ReadExactError) -> FrameError {
    FrameError::Closed(e.to_string())
}

/// Sends a whole answer: the header frame, the body, the stream's end.
pub(crate) async fn answer(
    send: &mut SendStream,
    head: &ReplyHead,
    body: impl Into<Bytes>,
) -> Result<(), String> {
    write_head_and_body(send, head, body.into()).await?;
    send.finish().map_err(|e| e.to_string())
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body is longer than allowed.
    TooLong,
    /// The stream broke off before its end.
    Broken(quinn::ReadError),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLong => f.write_str("body too long"),
            BodyError::Broken(e) => write!(f, "{e}"),
        }
    }
}

/// Reads the rest of a stream, at most `max` bytes, as the chunks quinn
/// received: a body that came in one chunk is that chunk, without a copy,
/// and one that came in several is copied once into a buffer of its size
/// (where `read_to_end` zeroes a buffer first, then copies into it).
pub(crate) async fn read_body(recv: &mut RecvStream, max: usize) -> Result<Bytes, BodyError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = recv
        .read_chunk(usize::MAX, true)
        .await
        .map_err(BodyError::Broken)?
    {
        total = total.saturating_add(chunk.bytes.len());
        if total > max {
            return Err(BodyError::TooLong);
        }
        chunks.push(chunk.bytes);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut whole = Vec::with_capacity(total);
            for chunk in &chunks {
                whole.extend_from_slice(chunk);
            }
            Bytes::from(whole)
        }
    })
}
