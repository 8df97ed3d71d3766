//! Plain HTTP/1.1 connections to nodes, pooled per node and driven by the
//! task of the request that uses them.
//!
//! hyper-util's pooled client runs every connection in a task of its own:
//! a request hands its head to that task through a channel and is woken
//! through another when the reply is in, so each delivery costs two task
//! wake-ups, often across threads, on top of the pool's own bookkeeping.
//! Here the request's task polls the connection itself while it waits for
//! the reply and puts it back when the reply is read, so a delivery on a
//! warm connection is one write and one read in the task that asked.
//!
//! Idle connections are not polled. One the node closed meanwhile is
//! noticed when it is taken out (one poll without a waker reads the end
//! of stream), and a request that such a connection refused before
//! writing a byte goes out once more on a new connection.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Io = TokioIo<TcpStream>;

/// The longest the pool waits between two looks at its idle connections.
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_secs(5);
type Conn = Connection<Io, Full<Bytes>>;

/// One connection: the handle requests are sent through, and the
/// connection's state machine, which whoever holds the pair polls.
pub(super) struct Http1Conn {
    sender: SendRequest<Full<Bytes>>,
    conn: Conn,
    /// Whether the connection's state machine has finished (closed or
    /// failed); a finished one must not be polled again.
    done: bool,
}

impl Http1Conn {
    /// Wraps a new connection over `io`.
    pub(super) async fn handshake(io: Io) -> hyper::Result<Self> {
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        Ok(Http1Conn {
            sender,
            conn,
            done: false,
        })
    }

    /// Sends `request` and runs `read` on its response, polling the
    /// connection in this task until `read` is done.
    ///
    /// [`Refused::NotSent`] gives the request back when the connection
    /// refused it before writing anything (it had been closed), so it can
    /// be sent on another; after any other refusal the connection is
    /// finished.
    pub(super) async fn exchange<T, F, Fut>(
        &mut self,
        request: Request<Full<Bytes>>,
        read: F,
    ) -> Result<T, Refused>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let sent = self.sender.try_send_request(request);
        let reply = async move {
            match sent.await {
                Ok(response) => read(response).await.map_err(Refused::Failed),
                Err(mut e) => match e.take_message() {
                    Some(request) => Err(Refused::NotSent(Box::new(request), e.into_error())),
                    None => Err(Refused::Hyper(e.into_error())),
                },
            }
        };
        let mut reply = std::pin::pin!(reply);
        let conn = &mut self.conn;
        let done = &mut self.done;
        let mut closed_with: Option<hyper::Error> = None;
        let outcome = poll_fn(|cx| {
            if !*done {
                if let Poll::Ready(result) = Pin::new(&mut *conn).poll(cx) {
                    *done = true;
                    closed_with = result.err();
                }
            }
            reply.as_mut().poll(cx)
        })
        .await;
        if outcome.is_err() {
            // Whatever was left half read or half written makes the
            // connection unusable for the next request.
            self.done = true;
        }
        match (outcome, closed_with) {
            // The connection's own error says more than "closed".
            (Err(Refused::Hyper(_)), Some(e)) => Err(Refused::Hyper(e)),
            (outcome, _) => outcome,
        }
    }
}

/// A connection a pool may park between requests.
pub(crate) trait Parkable: Send + 'static {
    /// Whether it may carry another request: open, and nothing half read
    /// or half written on it. Looks without waiting.
    fn reusable(&mut self) -> bool;
}

impl Parkable for Http1Conn {
    /// It has not finished, and one poll (with no waker: nobody waits on
    /// an idle connection) finds it neither closed by the node nor failed.
    fn reusable(&mut self) -> bool {
        if self.done {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(&mut self.conn).poll(&mut cx).is_ready() {
            self.done = true;
            return false;
        }
        self.sender.is_ready()
    }
}

/// Why an exchange did not give a reply.
impl Parkable for TcpStream {
    fn reusable(&mut self) -> bool {
        // An idle connection has nothing to read: end of stream, stray
        // bytes or an error all mean it is done.
        let mut probe = [0u8; 1];
        matches!(self.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

pub(super) enum Refused {
    /// The connection refused the request before writing it: safe to send
    /// again elsewhere.
    NotSent(Box<Request<Full<Bytes>>>, hyper::Error),
    /// hyper failed during the exchange.
    Hyper(hyper::Error),
    /// Reading the response failed (too large, broken body).
    Failed(String),
}

/// Idle connections by node address (`host:port`), the most recently used
/// last.
pub(crate) struct IdlePool<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for IdlePool<C> {
    fn clone(&self) -> Self {
        IdlePool {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// The pool of hyper connections to `http://` nodes.
pub(super) type Http1Pool = IdlePool<Http1Conn>;

struct Inner<C> {
    idle: Mutex<HashMap<String, VecDeque<Parked<C>>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    /// Whether the task that closes connections idle for too long runs.
    sweeping: std::sync::atomic::AtomicBool,
}

struct Parked<C> {
    conn: C,
    since: Instant,
}

impl<C: Parkable> IdlePool<C> {
    /// A pool keeping at most `max_idle_per_host` idle connections per
    /// node, each for at most `idle_timeout`.
    pub(crate) fn new(max_idle_per_host: usize, idle_timeout: Duration) -> Self {
        IdlePool {
            inner: Arc::new(Inner {
                idle: Mutex::new(HashMap::new()),
                max_idle_per_host,
                idle_timeout,
                sweeping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// An idle connection to `host` that is still open, if there is one.
    pub(crate) fn take(&self, host: &str) -> Option<C> {
        loop {
            let parked = {
                // An emptied list stays (the sweep removes it), so a node
                // served by one connection does not cost a key per request.
                self.inner.lock().get_mut(host)?.pop_back()?
            };
            // Checked outside the lock: the check may read from the socket.
            let mut conn = parked.conn;
            if parked.since.elapsed() < self.inner.idle_timeout && conn.reusable() {
                return Some(conn);
            }
        }
    }

    /// Parks `conn` for the next request to `host`, unless it cannot carry
    /// one or `host` already has its share of idle connections.
    pub(crate) fn put(&self, host: &str, mut conn: C) {
        if self.inner.max_idle_per_host == 0 || !conn.reusable() {
            return;
        }
        let now = Instant::now();
        {
            let mut idle = self.inner.lock();
            let list = match idle.get_mut(host) {
                Some(list) => list,
                None => idle.entry(host.to_owned()).or_default(),
            };
            if list.len() >= self.inner.max_idle_per_host {
                return;
            }
            list.push_back(Parked { conn, since: now });
        }
        self.sweep_in_background();
    }

    /// Starts, once per pool, the task that closes connections left idle
    /// past the timeout; it ends with the pool.
    fn sweep_in_background(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.sweeping.store(false, Ordering::Release);
            return;
        };
        let pool: Weak<Inner<C>> = Arc::downgrade(&self.inner);
        // Often enough that a connection the node closed (many servers
        // close idle ones after a few seconds) does not linger half-closed
        // for the whole idle timeout.
        let every = (self.inner.idle_timeout / 2)
            .min(SWEEP_AT_MOST_EVERY)
            .max(Duration::from_millis(100));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = pool.upgrade() else { return };
                inner.close_expired();
            }
        });
    }
}

impl<C: Parkable> Inner<C> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Parked<C>>>> {
        // A poisoned lock only means a thread panicked between two
        // statements that each leave the map whole.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every connection idle past the timeout (the oldest of each
    /// node are at the front) or closed by its node meanwhile.
    fn close_expired(&self) {
        let timeout = self.idle_timeout;
        let mut closing = Vec::new();
        {
            let mut idle = self.lock();
            idle.retain(|_, list| {
                while list.front().is_some_and(|p| p.since.elapsed() >= timeout) {
                    closing.extend(list.pop_front());
                }
                // A poll reads from the socket only when it has something
                // to say, so checking the open ones costs no system call.
                list.retain_mut(|parked| parked.conn.reusable());
                !list.is_empty()
            });
        }
        // Closed outside the lock.
        drop(closing);
    }
}
