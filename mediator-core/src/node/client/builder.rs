//! Configuring a node client: [`NodeClientBuilder`], its settings and
//! defaults, and the two ways to finish it over a [`Wire`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cipher::{Cipher, KeyRing};
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::model::{Meta, NodeKey};
use crate::TokenMinter;

use super::super::{Backoff, ClientError, Handler, Lease, Responder, TokenSource};
use super::{Join, Member, NodeClient, Wire};

/// The default lease of a started node (30 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The default time a call waits for its answer (30 s), which the
/// mediator is asked to keep to.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest delivered body a node reads by default (8 MiB, the
/// mediator's default limit); 413 `too_large` past it.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;

/// Configures a [`NodeClient`] whatever its transport, and builds it over
/// a [`Wire`] with [`connect`](Self::connect) (a client that only calls)
/// or [`start`](Self::start) (a node that answers, registered and kept
/// registered).
///
/// Settings are checked when the client is built, which fails with the
/// first problem found. Each transport's builder (such as the HTTP
/// transport's `NodeClient::builder(url)`) wraps this one and adds its
/// own settings.
pub struct NodeClientBuilder {
    key: Option<Result<NodeKey, Error>>,
    token: Option<String>,
    minter: Option<TokenMinter>,
    cipher: Option<Arc<dyn Cipher>>,
    ttl: Duration,
    meta: Meta,
    timeout: Duration,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    require_sender: bool,
    max_body: usize,
}

impl fmt::Debug for NodeClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClientBuilder")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Default for NodeClientBuilder {
    fn default() -> Self {
        NodeClientBuilder::new()
    }
}

impl NodeClientBuilder {
    /// A builder with every default: a lease of [`DEFAULT_TTL`], calls
    /// waiting [`DEFAULT_TIMEOUT`], [`Backoff::default`], the system clock,
    /// senders without a node identity accepted, bodies up to
    /// [`DEFAULT_MAX_BODY`].
    pub fn new() -> NodeClientBuilder {
        NodeClientBuilder {
            key: None,
            token: None,
            minter: None,
            cipher: None,
            ttl: DEFAULT_TTL,
            meta: Meta::new(),
            timeout: DEFAULT_TIMEOUT,
            backoff: Backoff::default(),
            clock: Arc::new(SystemClock),
            require_sender: false,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Who this node is: its group and, optionally, its name (`None` is
    /// the group's unnamed node). Required to [`start`](Self::start); a
    /// client that only calls may leave it out when its token names no
    /// node, and its requests are then sealed as from no node.
    pub fn identity(mut self, group: impl Into<String>, name: Option<&str>) -> Self {
        self.key = Some(NodeKey::new(group, name));
        self
    }

    /// Who this node is, as a key.
    pub fn node_key(mut self, key: NodeKey) -> Self {
        self.key = Some(Ok(key));
        self
    }

    /// The bearer token to present, minted for this node (replaces a
    /// [`token_minter`](Self::token_minter)).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self.minter = None;
        self
    }

    /// Mints this node's tokens itself, on the builder's
    /// [`clock`](Self::clock), instead of a fixed one: tokens naming the
    /// node that live [`TOKEN_LIFETIME`](super::super::TOKEN_LIFETIME),
    /// replaced [`REMINT_MARGIN`](super::super::REMINT_MARGIN) before they
    /// expire (replaces a [`token`](Self::token)).
    pub fn token_minter(mut self, minter: TokenMinter) -> Self {
        self.minter = Some(minter);
        self.token = None;
        self
    }

    /// The node key ring that seals and opens payloads (required).
    pub fn keys(self, keys: KeyRing) -> Self {
        self.cipher(keys)
    }

    /// Any [`Cipher`] in place of a [`KeyRing`].
    pub fn cipher(mut self, cipher: impl Cipher) -> Self {
        self.cipher = Some(Arc::new(cipher));
        self
    }

    /// Whether a cipher (or key ring) was given.
    pub fn has_cipher(&self) -> bool {
        self.cipher.is_some()
    }

    /// The lease asked for (default [`DEFAULT_TTL`]; at least 1 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Metadata registered with the node (version, zone, ...).
    pub fn meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }

    /// How long a call waits for its answer (default [`DEFAULT_TIMEOUT`]);
    /// the mediator is asked to keep to it, so it gives up at the same
    /// time and tells which node was slow.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How registration attempts back off while the mediator cannot be
    /// reached, or after a connection was lost (default 200 ms doubling
    /// up to 10 s, full jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The clock every part of the client reads and waits on (default:
    /// the system clock): minted tokens, the lease keeper's renewals and
    /// backoff, the deadlines of calls and of requests delivered to the
    /// node. With a [`ManualClock`](crate::ManualClock) a test moves the
    /// node's renewals and retries forward without waiting.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refuses (403, kind `unverified_sender`) deliveries from callers
    /// whose token names no node (default: accepted, with
    /// [`Incoming::from`](super::super::Incoming::from) `None`).
    pub fn require_sender(mut self, require: bool) -> Self {
        self.require_sender = require;
        self
    }

    /// The largest delivered body the node reads (default
    /// [`DEFAULT_MAX_BODY`]).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Builds a client that only calls, over `wire`: it joins without a
    /// node (over a connection-oriented wire, it connects), and returns
    /// once that succeeded.
    pub async fn connect<W: Wire>(self, wire: W) -> Result<NodeClient<W>, ClientError> {
        let checked = self.check(false)?;
        let join = Join {
            tokens: Arc::clone(&checked.tokens),
            node: None,
        };
        NodeClient::launch(checked, wire, join).await
    }

    /// Starts a node over `wire`: joins as the node (registers, and
    /// accepts deliveries, which `handler` answers), keeps it joined until
    /// [`NodeClient::shutdown`], and returns once the first join
    /// succeeded, or with its refusal.
    pub async fn start<W: Wire>(
        self,
        wire: W,
        handler: impl Handler,
    ) -> Result<NodeClient<W>, ClientError> {
        let checked = self.check(true)?;
        let key = checked
            .key
            .clone()
            .ok_or_else(|| config("a started node needs .identity(..)"))?;
        let responder =
            Responder::shared(key.clone(), Arc::clone(&checked.cipher), Arc::new(handler))
                .require_sender(checked.require_sender);
        let join = Join {
            tokens: Arc::clone(&checked.tokens),
            node: Some(Member {
                key,
                ttl: checked.ttl,
                meta: checked.meta.clone(),
                responder,
                max_body: checked.max_body,
                clock: Arc::clone(&checked.clock),
            }),
        };
        NodeClient::launch(checked, wire, join).await
    }

    /// The settings, checked; `started` for a node that registers.
    fn check(self, started: bool) -> Result<Checked, ClientError> {
        let key = self.key.transpose()?;
        if started && key.is_none() {
            return Err(config("a started node needs .identity(..)"));
        }
        let cipher = self
            .cipher
            .ok_or_else(|| config("a node needs .keys(..) to seal payloads"))?;
        let tokens = match (self.token, self.minter) {
            (Some(token), _) => TokenSource::fixed(token),
            (None, Some(minter)) => {
                TokenSource::minted(minter, key.clone(), Arc::clone(&self.clock))
            }
            (None, None) => return Err(config("a node needs .token(..) or .token_minter(..)")),
        };
        if self.timeout.is_zero() {
            return Err(config("timeouts must be above zero"));
        }
        // A zero first wait would retry a lost mediator in a tight loop.
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            return Err(config("backoff needs 0 < initial <= max"));
        }
        if started && self.ttl < Duration::from_secs(1) {
            return Err(config("the lease (ttl) must be at least 1 s"));
        }
        Ok(Checked {
            key,
            cipher,
            tokens: Arc::new(tokens),
            ttl: self.ttl,
            meta: self.meta,
            timeout: self.timeout,
            backoff: self.backoff,
            clock: self.clock,
            require_sender: self.require_sender,
            max_body: self.max_body,
        })
    }
}

/// The settings once checked, as the client keeps them.
pub(super) struct Checked {
    pub(super) key: Option<NodeKey>,
    pub(super) cipher: Arc<dyn Cipher>,
    pub(super) tokens: Arc<TokenSource>,
    pub(super) ttl: Duration,
    pub(super) meta: Meta,
    pub(super) timeout: Duration,
    pub(super) backoff: Backoff,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) require_sender: bool,
    pub(super) max_body: usize,
}

impl Checked {
    /// A fresh lease state machine for these settings.
    pub(super) fn lease(&self) -> Lease {
        Lease::new(self.ttl, self.backoff)
    }
}

/// A setting that cannot work, reported before anything starts.
pub(super) fn config(message: &str) -> ClientError {
    ClientError::Core(Error::Config(message.to_owned()))
}
