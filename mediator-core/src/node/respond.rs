//! The whole of a node's answer to one request: open, run the handler under
//! the caller's deadline, seal.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cipher::Cipher;
use crate::error::Error;
use crate::model::NodeKey;
use crate::time::Timestamp;

use super::{open_request, seal_reply, Delivered, Handler};

/// How long past the caller's deadline a node keeps going.
///
/// The mediator answers the caller with its own 504 (naming the node) at
/// the deadline; a node that also gave up exactly then would race it and
/// the caller would sometimes see the node's answer instead. The slack
/// also absorbs clock skew between the mediator's and the node's hosts,
/// since the deadline travels as wall-clock time.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// Runs `work` until [`DEADLINE_SLACK`] after `deadline`, reading the time
/// as `now`; no deadline, no limit.
///
/// Past that the caller has stopped waiting, so the work is not started, or
/// is cut off, and the answer is a 504 refusal (kind `deadline_passed`).
///
/// ```
/// use std::time::Duration;
/// use mediator_core::node::{within_deadline, DEADLINE_SLACK};
/// use mediator_core::{Error, Timestamp};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let now = Timestamp::from_millis(10_000);
/// let gone = now - DEADLINE_SLACK - Duration::from_millis(1);
/// let late = within_deadline(Some(gone), now, async { Ok::<_, Error>(()) }).await;
/// assert_eq!(late.unwrap_err().status(), 504);
/// assert!(within_deadline(None, now, async { Ok::<_, Error>(()) }).await.is_ok());
/// # }
/// ```
pub async fn within_deadline<T>(
    deadline: Option<Timestamp>,
    now: Timestamp,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let Some(deadline) = deadline else {
        return work.await;
    };
    let left = now.until(deadline + DEADLINE_SLACK);
    if left.is_zero() {
        return Err(Error::refused(
            504,
            "deadline_passed",
            "the caller's deadline passed before the request was handled",
        ));
    }
    match tokio::time::timeout(left, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::refused(
            504,
            "deadline_passed",
            "the handler did not finish before the caller's deadline",
        )),
    }
}

/// A node's side of every exchange, whatever the transport: opens what the
/// mediator hands over ([`open_request`]), runs the [`Handler`] within the
/// caller's deadline ([`within_deadline`]) and seals its reply
/// ([`seal_reply`]).
///
/// A transport reads a request off its wire into a [`Delivered`], calls
/// [`answer`](Self::answer), and writes back either the sealed reply or the
/// error's [`status`](Error::status), [`kind`](Error::kind) and message.
/// Cheap to clone.
///
/// ```
/// use bytes::Bytes;
/// use http::Method;
/// use mediator_core::node::{open_reply, seal_request, Delivered, Incoming, Responder};
/// use mediator_core::{Error, KeyRing, NodeKey, SealKey, Target, Timestamp};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let ring = KeyRing::new(SealKey::generate());
/// let me = NodeKey::named("users", "api")?;
/// let responder = Responder::new(me.clone(), ring.clone(), |request: Incoming| async move {
///     let mut reply = b"hello ".to_vec();
///     reply.extend_from_slice(&request.body);
///     Ok::<_, Error>(Bytes::from(reply))
/// });
///
/// let sealed = seal_request(&ring, None, &Target::One(me.clone()), "/greet", b"ada")?;
/// let delivered = Delivered::new(Method::POST, "/greet", &sealed).with_target("users/api");
/// let reply = responder.answer(delivered, Timestamp::now()).await?;
/// assert_eq!(open_reply(&ring, &me, None, "/greet", &reply)?, b"hello ada");
///
/// // Sent to a node of another group: refused, the handler never runs.
/// let elsewhere = Delivered::new(Method::POST, "/greet", &sealed).with_target("cache/*");
/// let refused = responder.answer(elsewhere, Timestamp::now()).await.unwrap_err();
/// assert_eq!((refused.status(), refused.kind()), (421, "misdirected"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Responder {
    own: NodeKey,
    cipher: Arc<dyn Cipher>,
    handler: Arc<dyn Handler>,
    require_sender: bool,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("node", &self.own)
            .field("require_sender", &self.require_sender)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Answers as node `own`, opening and sealing with `cipher`.
    pub fn new(own: NodeKey, cipher: impl Cipher, handler: impl Handler) -> Responder {
        Responder::shared(own, Arc::new(cipher), Arc::new(handler))
    }

    /// Like [`new`](Self::new), with a cipher and handler already shared.
    pub fn shared(own: NodeKey, cipher: Arc<dyn Cipher>, handler: Arc<dyn Handler>) -> Responder {
        Responder {
            own,
            cipher,
            handler,
            require_sender: false,
        }
    }

    /// Refuses (403, kind `unverified_sender`) callers whose token names no
    /// node (default: accepted, with `from: None`).
    pub fn require_sender(mut self, require: bool) -> Responder {
        self.require_sender = require;
        self
    }

    /// Whether callers without a node identity are refused.
    pub fn requires_sender(&self) -> bool {
        self.require_sender
    }

    /// The node this answers as.
    pub fn node(&self) -> &NodeKey {
        &self.own
    }

    /// The cipher that opens requests and seals replies.
    pub fn cipher(&self) -> &Arc<dyn Cipher> {
        &self.cipher
    }

    /// Opens `delivered`, runs the handler (cut off [`DEADLINE_SLACK`] after
    /// the caller's deadline, reading the time as `now`) and returns its
    /// sealed reply; or the refusal or handler error to answer with.
    pub async fn answer(&self, delivered: Delivered<'_>, now: Timestamp) -> Result<Vec<u8>, Error> {
        let incoming = open_request(
            self.cipher.as_ref(),
            &self.own,
            delivered,
            self.require_sender,
        )?;
        let handled = within_deadline(
            incoming.deadline,
            now,
            self.handler.handle(incoming.clone()),
        )
        .await?;
        seal_reply(self.cipher.as_ref(), &self.own, &incoming, &handled)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::Method;

    use super::*;
    use crate::node::{open_reply, seal_request, Incoming};
    use crate::{KeyRing, SealKey, Target};

    #[tokio::test]
    async fn deadlines_cut_handlers_off() {
        let now = Timestamp::from_millis(1_000_000);
        let past = Some(now - DEADLINE_SLACK - Duration::from_millis(1));
        let r = within_deadline(past, now, async { Ok::<_, Error>(()) }).await;
        assert!(
            matches!(&r, Err(Error::Refused { status: 504, kind, .. }) if kind == "deadline_passed"),
            "{r:?}"
        );
        // Already past, but within the slack: the handler still runs, and
        // is cut off once the slack is spent too.
        let soon = Some(now + Duration::from_millis(50) - DEADLINE_SLACK);
        assert!(within_deadline(soon, now, async { Ok::<_, Error>(()) })
            .await
            .is_ok());
        let r = within_deadline(soon, now, std::future::pending::<Result<(), Error>>()).await;
        assert!(
            matches!(r, Err(Error::Refused { status: 504, .. })),
            "{r:?}"
        );
        assert!(within_deadline(None, now, async { Ok::<_, Error>(1) })
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn handler_errors_and_refusals_come_back_as_is() {
        let ring = KeyRing::new(SealKey::generate());
        let me: NodeKey = "users/api".parse().expect("key");
        let responder = Responder::new(me.clone(), ring.clone(), |request: Incoming| async move {
            match request.path.as_str() {
                "/missing" => Err(Error::refused(404, "no_such_user", "no user 7")),
                "/bad" => Err(Error::invalid("id", "must be a number")),
                _ => Ok(Bytes::from(format!(
                    "{} from {:?}",
                    request.method,
                    request.from.map(|k| k.to_string())
                ))),
            }
        })
        .require_sender(true);
        assert!(responder.requires_sender());
        let caller: NodeKey = "billing/w1".parse().expect("key");
        let now = Timestamp::now();
        let ask = |path: &'static str| {
            let sealed = seal_request(&ring, Some(&caller), &Target::One(me.clone()), path, b"")
                .expect("seal");
            let responder = responder.clone();
            async move {
                let delivered = Delivered::new(Method::GET, path, &sealed)
                    .with_target("users/api")
                    .with_from("billing/w1");
                responder.answer(delivered, now).await
            }
        };
        let reply = ask("/ok").await.expect("answers");
        assert_eq!(
            open_reply(&ring, &me, Some(&caller), "/ok", &reply).expect("opens"),
            b"GET from Some(\"billing/w1\")"
        );
        let e = ask("/missing").await.expect_err("refused");
        assert_eq!((e.status(), e.kind()), (404, "no_such_user"));
        let e = ask("/bad").await.expect_err("invalid");
        assert_eq!((e.status(), e.kind()), (400, "invalid"));

        // Without a sender, the handler never runs.
        let sealed = seal_request(&ring, None, &Target::One(me.clone()), "/ok", b"").expect("seal");
        let e = responder
            .answer(
                Delivered::new(Method::POST, "/ok", &sealed).with_target("users/api"),
                now,
            )
            .await
            .expect_err("no sender");
        assert_eq!((e.status(), e.kind()), (403, "unverified_sender"));
    }
}
