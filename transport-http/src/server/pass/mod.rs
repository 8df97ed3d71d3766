//! The pass-through: HTTP/1.1 calls to `http://` nodes framed on the raw
//! bytes, in front of the core's request lifecycle.
//!
//! A call's head is parsed with `httparse` (hyper's own parser) and read
//! where it lies in the connection's buffer: route, credential, ids and
//! budget are views of it, and the core takes or declines the call
//! ([`Mediator::pass`]). A call it takes is written to a pooled node
//! connection of its thread (the node's head built from the
//! caller's, the body from the buffer it was read into), and the node's
//! reply is checked by the core and copied back with the headers a node
//! may not set removed, as the full path relays it.
//!
//! Whatever this path does not take goes, with every byte read so far, to
//! hyper's server for the rest of the connection (see
//! [`head::read`]): before anything of that request was answered, so
//! hyper sees the connection as if it had had it from the start. That is
//! every refusal (the full path words and records it), every body not
//! framed by one `Content-Length`, `Expect`, `Upgrade`, HTTP/1.0 and
//! HTTP/2, other routes, and any head it finds odd.

mod head;
mod node;
mod raw;

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use mediator_core::inbound::Passing;
use mediator_core::{Error, Mediator};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::reply;
use crate::deliver::PassNodes;
use crate::headers::may_carry_token;
use head::{Plan, Read};
use node::Address;

/// What the pass-through serves with: the mediator whose lifecycle its
/// calls run, and the deliverer's node connections and settings.
#[derive(Clone)]
pub(super) struct Through {
    pub(super) mediator: Mediator,
    pub(super) nodes: PassNodes,
}

impl Through {
    /// The same pass-through with a pool of node connections of its own
    /// (for one thread's connections).
    pub(super) fn own_pool(&self) -> Through {
        Through {
            mediator: self.mediator.clone(),
            nodes: self.nodes.own_pool(),
        }
    }
}

/// The time limits of a connection on the pass-through, as the listener
/// sets them for the full path.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// From a head's first byte (a connection's start for the first) to
    /// its end.
    pub(super) header_read: Duration,
    /// Between calls.
    pub(super) idle: Duration,
}

/// How a connection left the pass-through.
pub(super) enum Left {
    /// It is closed, or to be closed.
    Closed,
    /// The full path takes it from here, starting with these bytes.
    Handover(BytesMut),
}

/// Serves calls on `stream` until it closes, the listener stops, or a call
/// is one for the full path.
pub(super) async fn serve(
    stream: &mut TcpStream,
    remote: SocketAddr,
    through: &Through,
    timeouts: Timeouts,
    stop: &mut watch::Receiver<bool>,
) -> Left {
    let left = serve_calls(stream, remote, through, timeouts, stop).await;
    if matches!(left, Left::Handover(_)) {
        through.mediator.transport_stats().handed_over();
    }
    left
}

async fn serve_calls(
    stream: &mut TcpStream,
    remote: SocketAddr,
    through: &Through,
    timeouts: Timeouts,
    stop: &mut watch::Receiver<bool>,
) -> Left {
    let mut conn = Connection {
        buf: BytesMut::with_capacity(8 * 1024),
        node_buf: BytesMut::with_capacity(8 * 1024),
        out: Vec::with_capacity(1024),
        idle: timeouts.idle,
        timer: Box::pin(tokio::time::sleep(timeouts.header_read)),
    };
    // One wait for the listener's stop for the whole connection, polled
    // between calls.
    let mut stopping = Box::pin(super::listener::stopping(stop.clone()));
    let mut first = true;
    loop {
        let arrived = match conn
            .next_head(stream, timeouts, first, stopping.as_mut())
            .await
        {
            Some(arrived) => arrived,
            None if conn.buf.is_empty() => return Left::Closed,
            // A head cut short or too slow: the full path sees it as it
            // would have.
            None => return Left::Handover(conn.buf),
        };
        first = false;
        let plan = loop {
            match head::read(&conn.buf, &through.mediator, remote, arrived) {
                Read::Taken(plan) => break plan,
                Read::Handover => return Left::Handover(conn.buf),
                Read::Partial => {
                    if !conn.more_head(stream, arrived, timeouts).await {
                        return Left::Handover(conn.buf);
                    }
                }
            }
        };
        let close = plan.close;
        match conn.call(stream, &through.nodes, *plan).await {
            Next::Open if !close && !*stop.borrow() => {}
            Next::Handover => return Left::Handover(conn.buf),
            _ => return Left::Closed,
        }
    }
}

/// One caller connection's buffers and kept node connections.
struct Connection {
    /// What the caller sent and was not answered yet.
    buf: BytesMut,
    /// The node's reply being read.
    node_buf: BytesMut,
    /// The answer's head being written.
    out: Vec<u8>,
    /// How long writing an answer may wait for the caller to read: as long
    /// as a connection may stay silent.
    idle: Duration,
    /// One timer for the connection, moved to each limit in turn.
    timer: Pin<Box<Sleep>>,
}

impl Connection {
    /// Waits for the next head to start (its first byte), or for one
    /// already buffered; when it arrived, or `None` when the connection
    /// ended, timed out or the listener stops.
    async fn next_head(
        &mut self,
        stream: &mut TcpStream,
        timeouts: Timeouts,
        first: bool,
        stopping: Pin<&mut (impl std::future::Future<Output = ()> + ?Sized)>,
    ) -> Option<Instant> {
        if !self.buf.is_empty() {
            return Some(Instant::now());
        }
        // The first head is owed from the start, and silence is idleness
        // too: whichever limit comes first closes a connection that sends
        // nothing.
        let wait = if first {
            timeouts.header_read.min(timeouts.idle)
        } else {
            timeouts.idle
        };
        self.timer.as_mut().reset(Instant::now() + wait);
        self.buf.reserve(4096);
        tokio::select! {
            biased;
            read = stream.read_buf(&mut self.buf) => match read {
                Ok(n) if n > 0 => Some(Instant::now()),
                _ => None,
            },
            () = stopping => None,
            () = self.timer.as_mut() => None,
        }
    }

    /// Reads more of a head that began at `arrived`; `false` when none
    /// came in time or the connection ended.
    async fn more_head(
        &mut self,
        stream: &mut TcpStream,
        arrived: Instant,
        timeouts: Timeouts,
    ) -> bool {
        self.timer.as_mut().reset(arrived + timeouts.header_read);
        self.buf.reserve(4096);
        tokio::select! {
            biased;
            read = stream.read_buf(&mut self.buf) => matches!(read, Ok(n) if n > 0),
            () = self.timer.as_mut() => false,
        }
    }

    /// Makes one call the core took, and answers it; what becomes of the
    /// connection.
    async fn call(&mut self, stream: &mut TcpStream, nodes: &PassNodes, plan: Plan<'_>) -> Next {
        let Plan {
            mut passing,
            head_len,
            body_len,
            method,
            path,
            tail,
            ..
        } = plan;
        let end = head_len + body_len;
        if self.buf.len() < end {
            self.buf.reserve(end - self.buf.len());
            self.timer.as_mut().reset(passing.read_by());
            while self.buf.len() < end {
                let read = tokio::select! {
                    biased;
                    read = stream.read_buf(&mut self.buf) => read,
                    () = self.timer.as_mut() => {
                        let refusal = passing.body_late();
                        return self.refuse(stream, passing, &refusal, None).await;
                    }
                };
                match read {
                    Ok(n) if n > 0 => {}
                    Ok(_) => {
                        // The caller closed its end mid-body; it may still
                        // read the refusal.
                        let refusal = passing.body_unreadable("the connection closed mid-body");
                        return self.refuse(stream, passing, &refusal, None).await;
                    }
                    Err(e) => {
                        let refusal = passing.body_unreadable(e);
                        return self.refuse(stream, passing, &refusal, None).await;
                    }
                }
            }
        }
        let body = &self.buf[head_len..end];
        if may_carry_token(body) {
            // Perhaps the original's `x-jwt` field, which never reaches a
            // node: the full path takes it out. Nothing was counted yet.
            drop(passing);
            return Next::Handover;
        }
        let deadline = passing.send();
        let policy = passing.endpoints();
        self.timer.as_mut().reset(deadline.instant());
        // The exchange with one node after another (any-of-group), each
        // under the call's deadline.
        let outcome = loop {
            let url = passing.node().endpoint.url().unwrap_or_default();
            let Some(address) = Address::of(url) else {
                match passing.unreachable(format!("{url} is not an http endpoint")) {
                    Ok(()) => continue,
                    Err(e) => break Err(e),
                }
            };
            let mut first_line = Vec::with_capacity(96 + path.len());
            first_line.extend_from_slice(method.as_str().as_bytes());
            first_line.push(b' ');
            first_line.extend_from_slice(address.base.as_bytes());
            first_line.extend_from_slice(path.as_bytes());
            first_line.extend_from_slice(b" HTTP/1.1\r\nhost: ");
            first_line.extend_from_slice(address.authority.as_bytes());
            first_line.extend_from_slice(b"\r\nx-mediator-deadline: ");
            first_line.extend_from_slice(
                itoa::Buffer::new()
                    .format(deadline.wall().as_millis())
                    .as_bytes(),
            );
            first_line.extend_from_slice(b"\r\n");
            let exchange = exchange(
                nodes,
                &mut self.node_buf,
                address.authority,
                policy,
                [&first_line, &tail, body],
            );
            let ended = tokio::select! {
                biased;
                ended = exchange => ended,
                () = self.timer.as_mut() => Exchanged::TimedOut,
            };
            match ended {
                Exchanged::Replied(reply) => break Ok(reply),
                Exchanged::Unreachable(why) => match passing.unreachable(why) {
                    Ok(()) => continue,
                    Err(e) => break Err(e),
                },
                Exchanged::Failed(why) => break Err(passing.failed(why)),
                Exchanged::TimedOut => break Err(passing.timed_out()),
            }
        };
        let reply = match outcome {
            Ok(reply) => reply,
            Err(e) => return self.refuse(stream, passing, &e, Some(end)).await,
        };
        if let Err(refusal) = passing.replied(reply.status, reply.located) {
            return self.refuse(stream, passing, &refusal, Some(end)).await;
        }
        self.out.clear();
        answer_head(&mut self.out, &reply, &passing);
        // Recorded once the answer is made, before it is written, as the
        // full path records it.
        passing.finish(reply.status.as_u16());
        let body = reply.body(&self.node_buf);
        let written = answer(stream, &mut self.timer, self.idle, &self.out, body).await;
        self.buf.advance(end);
        if written {
            Next::Open
        } else {
            Next::Close
        }
    }

    /// Answers a call the core refused or the node failed; `read` is where
    /// the call ends in the buffer when it was read whole, and the
    /// connection stays open only then.
    async fn refuse(
        &mut self,
        stream: &mut TcpStream,
        passing: Passing<'_>,
        e: &Error,
        read: Option<usize>,
    ) -> Next {
        let (status, headers, body) = reply::error_parts(e, &e.public_message());
        self.out.clear();
        status_line(&mut self.out, status);
        for (name, value) in &headers {
            header_line(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
        }
        if let Some(id) = &passing.trace().request_id {
            header_line(&mut self.out, b"x-request-id", id.as_bytes());
        }
        if read.is_none() {
            // The rest of the call was not read: the connection ends here.
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        end_head(&mut self.out, body.len(), true);
        passing.finish(status.as_u16());
        let written = answer(stream, &mut self.timer, self.idle, &self.out, &body).await;
        match read {
            Some(end) if written => {
                self.buf.advance(end);
                Next::Open
            }
            _ => Next::Close,
        }
    }
}

/// What becomes of a connection after a call.
enum Next {
    /// It carries the next call.
    Open,
    /// It ends.
    Close,
    /// The full path takes it, the call included.
    Handover,
}

/// Writes an answer's head and body to the caller; `false` when it could
/// not, or when the caller had not read it all within `idle` (a caller
/// that stops reading does not hold its connection).
async fn answer(
    stream: &mut TcpStream,
    timer: &mut Pin<Box<Sleep>>,
    idle: Duration,
    head: &[u8],
    body: &[u8],
) -> bool {
    timer.as_mut().reset(Instant::now() + idle);
    let mut parts = [IoSlice::new(head), IoSlice::new(body)];
    tokio::select! {
        biased;
        written = node::write_all(stream, &mut parts) => written.is_ok(),
        () = timer.as_mut() => {
            tracing::debug!("a caller read nothing of its answer in time; closing");
            false
        }
    }
}

/// How one exchange with a node ended.
enum Exchanged {
    Replied(node::Reply),
    /// Nothing reached the node.
    Unreachable(String),
    Failed(String),
    TimedOut,
}

/// Writes the call to a node connection (kept or new) and reads the
/// reply; a kept connection that fails before a byte of the call was
/// written is replaced once.
async fn exchange(
    nodes: &PassNodes,
    buf: &mut BytesMut,
    authority: &str,
    policy: &std::sync::Arc<mediator_core::policy::EndpointPolicy>,
    parts: [&[u8]; 3],
) -> Exchanged {
    let mut stream = nodes.pool.take(authority);
    let mut retried = false;
    loop {
        let reused = stream.is_some();
        let mut conn = match stream.take() {
            Some(conn) => conn,
            None => match nodes.connect(authority, policy).await {
                Ok(conn) => conn,
                Err(why) => return Exchanged::Unreachable(why),
            },
        };
        let mut slices = parts.map(IoSlice::new);
        if let Err((written, e)) = node::write_all(&mut conn, &mut slices).await {
            if reused && written == 0 && !retried {
                retried = true;
                continue;
            }
            if written == 0 {
                return Exchanged::Unreachable(format!("sending the call: {e}"));
            }
            return Exchanged::Failed(format!("sending the call: {e}"));
        }
        return match node::read_reply(&mut conn, buf, nodes.max_reply_body).await {
            Ok(reply) => {
                if reply.reusable && reply.used == buf.len() {
                    nodes.pool.put(authority, conn);
                }
                Exchanged::Replied(reply)
            }
            Err(why) => Exchanged::Failed(why),
        };
    }
}

/// The head of the caller's answer with a node's reply, as the full path
/// writes it.
fn answer_head(out: &mut Vec<u8>, reply: &node::Reply, passing: &Passing<'_>) {
    status_line(out, reply.status);
    out.extend_from_slice(&reply.headers);
    out.extend_from_slice(
        b"content-security-policy: sandbox\r\nx-content-type-options: nosniff\r\n\
          referrer-policy: no-referrer\r\n",
    );
    header_line(
        out,
        b"x-mediator-node",
        passing.node().key.to_string().as_bytes(),
    );
    if !reply.has.cache_control {
        out.extend_from_slice(b"cache-control: no-cache, no-store, must-revalidate\r\n");
    }
    if !reply.has.pragma {
        out.extend_from_slice(b"pragma: no-cache\r\n");
    }
    if !reply.has.expires {
        out.extend_from_slice(b"expires: 0\r\n");
    }
    out.extend_from_slice(b"access-control-allow-origin: *\r\n");
    if let Some(id) = &passing.trace().request_id {
        header_line(out, b"x-request-id", id.as_bytes());
    }
    if reply.status == StatusCode::NO_CONTENT || reply.status.is_informational() {
        // No body, and no length either, as hyper's server writes them.
        if !reply.has.date {
            out.extend_from_slice(b"date: ");
            date::now(out);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    } else {
        end_head(out, body_len(reply), !reply.has.date);
    }
}

fn body_len(reply: &node::Reply) -> usize {
    match &reply.joined {
        Some(joined) => joined.len(),
        None => reply.body.len(),
    }
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Ends a head with the body's length and (`dated`) the date, as hyper's
/// server does.
fn end_head(out: &mut Vec<u8>, len: usize, dated: bool) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    if dated {
        out.extend_from_slice(b"date: ");
        date::now(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        /// The second last formatted, and its text: formatted once a second
        /// per thread, as hyper caches its own.
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    /// Writes the current date as HTTP writes it.
    pub(super) fn now(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(cached.1.as_bytes());
        });
    }
}
