//! Opening what the mediator hands a node and sealing the answers, whatever
//! the transport: the rules of the [module documentation](super).

use bytes::Bytes;
use http::Method;

use crate::cipher::{aad, Cipher};
use crate::error::Error;
use crate::model::{NodeKey, Target};
use crate::time::Timestamp;

use super::Incoming;

/// A request as the mediator hands it to a node, before it is opened: the
/// routing facts in the text form they travel in (`x-mediator-target`,
/// `x-mediator-from`, `x-mediator-deadline` over HTTP), the method, path and
/// query, and the sealed body.
///
/// A transport fills it from its own framing and passes it to
/// [`open_request`], which checks everything; nothing here is trusted yet.
#[derive(Debug, Clone)]
pub struct Delivered<'a> {
    method: Method,
    path: &'a str,
    query: Option<&'a str>,
    target: Option<&'a str>,
    from: Option<&'a str>,
    deadline: Option<&'a str>,
    body: &'a [u8],
}

impl<'a> Delivered<'a> {
    /// A request with `method` at `path` (without the query) carrying the
    /// sealed `body`, with no routing facts yet.
    pub fn new(method: Method, path: &'a str, body: &'a [u8]) -> Delivered<'a> {
        Delivered {
            method,
            path,
            query: None,
            target: None,
            from: None,
            deadline: None,
            body,
        }
    }

    /// The target as the mediator wrote it (`g/n`, `g/`, `g/*`, `g/?`);
    /// required.
    pub fn with_target(mut self, target: impl Into<Option<&'a str>>) -> Delivered<'a> {
        self.target = target.into();
        self
    }

    /// The verified sender as the mediator wrote it (`g/n`); absent when the
    /// caller has no node identity.
    pub fn with_from(mut self, from: impl Into<Option<&'a str>>) -> Delivered<'a> {
        self.from = from.into();
        self
    }

    /// The caller's deadline, in milliseconds since the Unix epoch.
    pub fn with_deadline(mut self, deadline: impl Into<Option<&'a str>>) -> Delivered<'a> {
        self.deadline = deadline.into();
        self
    }

    /// The query string (without the `?`); not covered by the seal.
    pub fn with_query(mut self, query: impl Into<Option<&'a str>>) -> Delivered<'a> {
        self.query = query.into();
        self
    }
}

/// Opens a request handed over by the mediator, as node `own`.
///
/// Refusals carry the status to answer with ([`Error::status`]): 400 for a
/// missing or malformed target, sender or deadline (kind `invalid`) and for
/// a payload that does not open (kind `sealed`), 421 for a request meant for
/// another node (kind `misdirected`), and 403 (kind `unverified_sender`)
/// when `require_sender` is set and the caller has no node identity.
///
/// ```
/// use http::Method;
/// use mediator_core::node::{open_request, seal_request, Delivered};
/// use mediator_core::{KeyRing, NodeKey, SealKey, Target};
///
/// let ring = KeyRing::new(SealKey::generate());
/// let me = NodeKey::named("users", "api")?;
/// let caller = NodeKey::named("billing", "worker-1")?;
/// let sealed = seal_request(&ring, Some(&caller), &Target::One(me.clone()), "/lookup", b"42")?;
///
/// // What the mediator hands over.
/// let delivered = |path| {
///     Delivered::new(Method::POST, path, &sealed)
///         .with_target("users/api")
///         .with_from("billing/worker-1")
///         .with_query("verbose=1")
/// };
/// let incoming = open_request(&ring, &me, delivered("/lookup"), false)?;
/// assert_eq!(incoming.body, "42");
/// assert_eq!(incoming.from, Some(caller));
/// assert_eq!(incoming.query.as_deref(), Some("verbose=1"));
///
/// // Replayed at another path, the payload no longer opens.
/// let replayed = open_request(&ring, &me, delivered("/delete"), false).unwrap_err();
/// assert_eq!((replayed.status(), replayed.kind()), (400, "sealed"));
/// # Ok::<(), mediator_core::Error>(())
/// ```
pub fn open_request(
    cipher: &dyn Cipher,
    own: &NodeKey,
    delivered: Delivered<'_>,
    require_sender: bool,
) -> Result<Incoming, Error> {
    let target_text = delivered.target.ok_or_else(|| {
        Error::invalid(
            "target",
            "missing: the request did not come through a mediator",
        )
    })?;
    let target: Target = target_text.parse()?;
    if !target.addresses(own) {
        return Err(Error::refused(
            421,
            "misdirected",
            format!("this is node {own}; the request was for {target}"),
        ));
    }
    let from = match delivered.from {
        None => None,
        Some(text) => Some(
            text.parse::<NodeKey>()
                .map_err(|e| Error::invalid("from", format!("{text:?} is not a node key ({e})")))?,
        ),
    };
    if require_sender && from.is_none() {
        return Err(Error::refused(
            403,
            "unverified_sender",
            "this node answers only callers whose token names a node",
        ));
    }
    let deadline = match delivered.deadline {
        None => None,
        Some(text) => Some(Timestamp::from_millis(text.trim().parse().map_err(
            |_| Error::invalid("deadline", "must be milliseconds since the Unix epoch"),
        )?)),
    };
    let ad = aad(from.as_ref(), &target.to_string(), delivered.path);
    let plain = cipher.open(delivered.body, &ad)?;
    Ok(Incoming {
        from,
        target,
        method: delivered.method,
        path: delivered.path.to_owned(),
        query: delivered.query.map(str::to_owned),
        deadline,
        body: Bytes::from(plain),
    })
}

/// Seals a node's reply to `request` as node `own`: the AAD names this node
/// as the sender and the caller as the target, at the request's path, so
/// only that caller opens it and only as this node's answer.
pub fn seal_reply(
    cipher: &dyn Cipher,
    own: &NodeKey,
    request: &Incoming,
    reply: &[u8],
) -> Result<Vec<u8>, Error> {
    let caller = request
        .from
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    Ok(cipher.seal(reply, &aad(Some(own), &caller, &request.path))?)
}

/// Seals a request payload from `from` for `target` at `path` (the query,
/// if any, is not covered), as a client does before sending it.
///
/// `from` must be the identity the caller's token names, since the mediator
/// passes that on and the receiver opens under it.
pub fn seal_request(
    cipher: &dyn Cipher,
    from: Option<&NodeKey>,
    target: &Target,
    path: &str,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    Ok(cipher.seal(body, &aad(from, &target.to_string(), path))?)
}

/// Opens a reply from node `replier` to `caller` for a request at `path`.
///
/// ```
/// use mediator_core::node::{open_reply, open_request, seal_reply, seal_request, Delivered};
/// use mediator_core::{KeyRing, NodeKey, SealKey, Target};
///
/// let ring = KeyRing::new(SealKey::generate());
/// let api = NodeKey::named("users", "api")?;
/// let caller = NodeKey::named("billing", "worker-1")?;
/// let sealed = seal_request(&ring, Some(&caller), &Target::any("users")?, "/greet", b"ada")?;
/// let delivered = Delivered::new(http::Method::POST, "/greet", &sealed)
///     .with_target("users/?")
///     .with_from("billing/worker-1");
/// let request = open_request(&ring, &api, delivered, true)?;
/// let reply = seal_reply(&ring, &api, &request, b"hello ada")?;
///
/// assert_eq!(open_reply(&ring, &api, Some(&caller), "/greet", &reply)?, b"hello ada");
/// // Passed off as another node's answer, it does not open.
/// let db = NodeKey::named("users", "db")?;
/// assert!(open_reply(&ring, &db, Some(&caller), "/greet", &reply).is_err());
/// # Ok::<(), mediator_core::Error>(())
/// ```
pub fn open_reply(
    cipher: &dyn Cipher,
    replier: &NodeKey,
    caller: Option<&NodeKey>,
    path: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, Error> {
    let caller = caller.map(ToString::to_string).unwrap_or_default();
    Ok(cipher.open(sealed, &aad(Some(replier), &caller, path))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyRing, SealKey};

    fn key(s: &str) -> NodeKey {
        s.parse().expect("key")
    }

    /// What a mediator hands over for `path`, with `facts` as
    /// `(target, from, deadline)`.
    fn delivered<'a>(
        path: &'a str,
        body: &'a [u8],
        facts: (Option<&'a str>, Option<&'a str>, Option<&'a str>),
    ) -> Delivered<'a> {
        Delivered::new(Method::POST, path, body)
            .with_target(facts.0)
            .with_from(facts.1)
            .with_deadline(facts.2)
    }

    fn refusal(result: Result<Incoming, Error>) -> (u16, String) {
        match result {
            Err(e) => (e.status(), e.kind().to_owned()),
            Ok(incoming) => panic!("expected a refusal, got {incoming:?}"),
        }
    }

    #[test]
    fn open_request_keeps_what_the_mediator_said() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("users/api");
        let sealed = seal_request(&ring, None, &Target::all("users").expect("all"), "/p", b"x")
            .expect("seal");
        let incoming = open_request(
            &ring,
            &me,
            Delivered::new(Method::PUT, "/p", &sealed)
                .with_target("users/*")
                .with_deadline(" 1700000000123 ")
                .with_query("a=1&b=2"),
            false,
        )
        .expect("opens");
        assert_eq!(incoming.from, None);
        assert_eq!(incoming.target, Target::all("users").expect("all"));
        assert_eq!(incoming.method, Method::PUT);
        assert_eq!(incoming.path, "/p");
        assert_eq!(incoming.query.as_deref(), Some("a=1&b=2"));
        assert_eq!(
            incoming.deadline,
            Some(Timestamp::from_millis(1_700_000_000_123))
        );
        assert_eq!(incoming.body, "x");
    }

    #[test]
    fn open_request_enforces_every_rule() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("users/api");
        let caller = key("billing/w1");
        let sealed = seal_request(
            &ring,
            Some(&caller),
            &Target::One(me.clone()),
            "/lookup",
            b"hi",
        )
        .expect("seal");
        let good = (Some("users/api"), Some("billing/w1"), None);
        let ok =
            open_request(&ring, &me, delivered("/lookup", &sealed, good), true).expect("opens");
        assert_eq!(ok.body, "hi");
        assert_eq!(ok.from, Some(caller));

        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let other_ring = KeyRing::new(SealKey::generate());

        // (why, cipher, path, body, (target, from, deadline), sender
        // required, expected status and kind)
        type Case<'a> = (
            &'a str,
            &'a KeyRing,
            &'a str,
            &'a [u8],
            (Option<&'a str>, Option<&'a str>, Option<&'a str>),
            bool,
            (u16, &'a str),
        );
        let w1 = Some("billing/w1");
        let cases: [Case<'_>; 14] = [
            (
                "no target",
                &ring,
                "/lookup",
                &sealed,
                (None, w1, None),
                false,
                (400, "invalid"),
            ),
            (
                "bare group",
                &ring,
                "/lookup",
                &sealed,
                (Some("users"), w1, None),
                false,
                (400, "invalid"),
            ),
            (
                "malformed target",
                &ring,
                "/lookup",
                &sealed,
                (Some("users/a b"), w1, None),
                false,
                (400, "invalid"),
            ),
            (
                "another node",
                &ring,
                "/lookup",
                &sealed,
                (Some("users/db"), w1, None),
                false,
                (421, "misdirected"),
            ),
            (
                "another group",
                &ring,
                "/lookup",
                &sealed,
                (Some("cache/*"), w1, None),
                false,
                (421, "misdirected"),
            ),
            (
                "malformed sender",
                &ring,
                "/lookup",
                &sealed,
                (Some("users/api"), Some("a b/c"), None),
                false,
                (400, "invalid"),
            ),
            (
                "sender required",
                &ring,
                "/lookup",
                &sealed,
                (Some("users/api"), None, None),
                true,
                (403, "unverified_sender"),
            ),
            (
                "malformed deadline",
                &ring,
                "/lookup",
                &sealed,
                (Some("users/api"), w1, Some("soon")),
                false,
                (400, "invalid"),
            ),
            (
                "another sender",
                &ring,
                "/lookup",
                &sealed,
                (Some("users/api"), Some("billing/w2"), None),
                false,
                (400, "sealed"),
            ),
            (
                "sender dropped",
                &ring,
                "/lookup",
                &sealed,
                (Some("users/api"), None, None),
                false,
                (400, "sealed"),
            ),
            (
                "another path",
                &ring,
                "/other",
                &sealed,
                good,
                false,
                (400, "sealed"),
            ),
            (
                "re-targeted as a broadcast",
                &ring,
                "/lookup",
                &sealed,
                (Some("users/*"), w1, None),
                false,
                (400, "sealed"),
            ),
            (
                "tampered",
                &ring,
                "/lookup",
                &tampered,
                good,
                false,
                (400, "sealed"),
            ),
            (
                "another key",
                &other_ring,
                "/lookup",
                &sealed,
                good,
                false,
                (400, "sealed"),
            ),
        ];
        for (why, cipher, path, body, facts, require, (status, kind)) in cases {
            let got = refusal(open_request(
                cipher,
                &me,
                delivered(path, body, facts),
                require,
            ));
            assert_eq!(got, (status, kind.to_owned()), "{why}");
        }
    }

    #[test]
    fn replies_open_only_for_the_caller_at_the_path() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("users/api");
        let caller = key("billing/w1");
        let sealed = seal_request(
            &ring,
            Some(&caller),
            &Target::any("users").expect("any"),
            "/p",
            b"q",
        )
        .expect("seal");
        let incoming = open_request(
            &ring,
            &me,
            delivered("/p", &sealed, (Some("users/?"), Some("billing/w1"), None)),
            false,
        )
        .expect("opens");
        let reply = seal_reply(&ring, &me, &incoming, b"answer").expect("seal");
        assert_eq!(
            open_reply(&ring, &me, Some(&caller), "/p", &reply).expect("opens"),
            b"answer"
        );
        // The query is not part of the seal.
        assert!(open_reply(&ring, &me, Some(&caller), "/p?x=1", &reply).is_ok());
        for (why, replier, to, path) in [
            (
                "another replier",
                key("users/db"),
                Some(caller.clone()),
                "/p",
            ),
            ("another caller", me.clone(), Some(key("billing/w2")), "/p"),
            ("no caller", me.clone(), None, "/p"),
            ("another path", me.clone(), Some(caller.clone()), "/q"),
        ] {
            let e = open_reply(&ring, &replier, to.as_ref(), path, &reply).expect_err(why);
            assert_eq!((e.status(), e.kind()), (400, "sealed"), "{why}");
        }
        let mut tampered = reply;
        tampered[20] ^= 0x80;
        assert!(open_reply(&ring, &me, Some(&caller), "/p", &tampered).is_err());
    }

    #[test]
    fn anonymous_callers_get_replies_they_can_open() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("g/");
        let sealed = seal_request(&ring, None, &Target::One(me.clone()), "/", b"").expect("seal");
        let incoming = open_request(
            &ring,
            &me,
            delivered("/", &sealed, (Some("g/"), None, None)),
            false,
        )
        .expect("opens");
        assert!(incoming.body.is_empty());
        let reply = seal_reply(&ring, &me, &incoming, b"ok").expect("seal");
        assert_eq!(
            open_reply(&ring, &me, None, "/", &reply).expect("opens"),
            b"ok"
        );
    }
}
