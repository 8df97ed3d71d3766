//! The decisions a mediator makes for every request, each behind a small
//! trait with today's behaviour as the default, replaceable from the
//! [builder](crate::MediatorBuilder):
//!
//! - [`Authenticate`]: credentials to an [`Identity`] (default:
//!   [`Authenticator`], JWTs with HS256, EdDSA or RS256, and optionally the
//!   original's Basic admin login);
//! - [`Authorize`]: who may register as whom, act for whom, call whom
//!   (default: [`DefaultAuthorize`]);
//! - [`Pick`]: which node of a group takes an any-of-group request
//!   (default: [`LeastInFlight`]);
//! - [`EndpointPolicy`]: which networks a node's callback may point into
//!   (default: anything but link-local networks and the mediator itself).

mod endpoint;

pub use endpoint::{EndpointPolicy, IpNetwork};

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::auth::{Authenticator, Identity};
use crate::error::{AuthError, Error, Result};
use crate::model::{Node, NodeKey, Target};
use crate::time::Timestamp;

/// What a caller presents to prove who it is.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Credentials<'a> {
    /// A bearer token (a JWT for the default authenticator).
    Bearer(&'a str),
    /// A user name and password (HTTP Basic).
    Basic {
        /// The user name.
        user: &'a str,
        /// The password.
        password: &'a str,
    },
}

/// Turns credentials into an [`Identity`].
///
/// Called on every request, so keep it cheap; `now` comes from the
/// mediator's [`Clock`](crate::Clock).
///
/// ```
/// use mediator_core::policy::{Authenticate, Credentials};
/// use mediator_core::{AuthError, Identity, Timestamp};
///
/// /// Lets in exactly one static API key, as an operator.
/// struct ApiKey(String);
///
/// impl Authenticate for ApiKey {
///     fn authenticate(&self, credentials: &Credentials<'_>, _now: Timestamp) -> Result<Identity, AuthError> {
///         use subtle::ConstantTimeEq;
///         match credentials {
///             Credentials::Bearer(key) if bool::from(key.as_bytes().ct_eq(self.0.as_bytes())) => {
///                 Ok(Identity::internal())
///             }
///             _ => Err(AuthError::Refused("unknown API key".into())),
///         }
///     }
/// }
/// let auth = ApiKey("k-123".into());
/// assert!(auth.authenticate(&Credentials::Bearer("k-123"), Timestamp::now()).is_ok());
/// assert!(auth.authenticate(&Credentials::Bearer("k-124"), Timestamp::now()).is_err());
/// ```
pub trait Authenticate: Send + Sync + 'static {
    /// Checks `credentials` at time `now`.
    fn authenticate(
        &self,
        credentials: &Credentials<'_>,
        now: Timestamp,
    ) -> Result<Identity, AuthError>;
}

impl Authenticate for Authenticator {
    fn authenticate(
        &self,
        credentials: &Credentials<'_>,
        now: Timestamp,
    ) -> Result<Identity, AuthError> {
        match credentials {
            Credentials::Bearer(token) => self.authenticate(token, now),
            Credentials::Basic { user, password } => self.basic_login(user, password, now),
        }
    }
}

/// Decides who may register as whom, act for whom, and call whom.
///
/// Each check returns `Ok(())` or the refusal ([`Error::Forbidden`] for the
/// default) to send back.
///
/// ```
/// use mediator_core::policy::{Authorize, DefaultAuthorize};
/// use mediator_core::{Error, Identity, NodeKey, Target};
///
/// /// Today's rules, and nobody calls the `vault` group but admins.
/// struct NoVault;
///
/// impl Authorize for NoVault {
///     fn act_for(&self, caller: &Identity, key: &NodeKey) -> Result<(), Error> {
///         DefaultAuthorize.act_for(caller, key)
///     }
///     fn call(&self, caller: &Identity, target: &Target) -> Result<(), Error> {
///         if target.group() == "vault" && !caller.admin {
///             return Err(Error::Forbidden("vault is for admins".into()));
///         }
///         DefaultAuthorize.call(caller, target)
///     }
/// }
/// # let _ = NoVault;
/// ```
pub trait Authorize: Send + Sync + 'static {
    /// May `caller` register node `key`? By default, the same as
    /// [`act_for`](Authorize::act_for).
    fn register_as(&self, caller: &Identity, key: &NodeKey) -> Result<()> {
        self.act_for(caller, key)
    }

    /// May `caller` renew or remove node `key`'s registration?
    fn act_for(&self, caller: &Identity, key: &NodeKey) -> Result<()>;

    /// May `caller` send a request to `target`?
    fn call(&self, caller: &Identity, target: &Target) -> Result<()>;
}

/// Today's rules: a node acts only for itself (the node its token names,
/// verified), admins for anyone; a caller may call the groups its token's
/// scope lists, or any group without a scope.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultAuthorize;

impl Authorize for DefaultAuthorize {
    fn act_for(&self, caller: &Identity, key: &NodeKey) -> Result<()> {
        if caller.admin || caller.is_node(key) {
            return Ok(());
        }
        Err(Error::Forbidden(match &caller.key {
            Some(own) => format!("token is for {own}, not {key}"),
            None => format!("token names no node and may not act for {key}"),
        }))
    }

    fn call(&self, caller: &Identity, target: &Target) -> Result<()> {
        let group = target.group();
        if caller.may_call(group) {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "this token may not call group {group}"
        )))
    }
}

/// A node that an any-of-group request may go to, with its load.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    node: &'a Node,
    in_flight: &'a AtomicUsize,
}

impl<'a> Candidate<'a> {
    pub(crate) fn new(node: &'a Node, in_flight: &'a AtomicUsize) -> Self {
        Candidate { node, in_flight }
    }

    /// The node.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// How many requests this mediator has in flight to it right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One any-of-group request's place in its group's round-robin order.
///
/// A request draws its number once, on the first pick, and keeps it across
/// retries, so a dead node's turns spread over the others instead of
/// always falling to its neighbour.
#[derive(Debug)]
pub struct Turn<'a> {
    taken: &'a mut Option<usize>,
    counter: &'a AtomicUsize,
}

impl<'a> Turn<'a> {
    pub(crate) fn new(taken: &'a mut Option<usize>, counter: &'a AtomicUsize) -> Self {
        Turn { taken, counter }
    }

    /// This request's number in its group's round-robin order.
    pub fn number(&mut self) -> usize {
        *self
            .taken
            .get_or_insert_with(|| self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

/// Chooses the node of a group that takes an any-of-group request.
///
/// `candidates` are the group's live nodes not yet tried for this request,
/// in registration order, never empty. Return the index of the chosen one,
/// or `None` to refuse them all (the caller gets 503).
///
/// ```
/// use mediator_core::policy::{Candidate, Pick, Turn};
///
/// /// Prefers nodes that registered with `zone=eu`, then the least busy.
/// struct EuFirst;
///
/// impl Pick for EuFirst {
///     fn pick(&self, _group: &str, candidates: &[Candidate<'_>], _turn: &mut Turn<'_>) -> Option<usize> {
///         (0..candidates.len()).min_by_key(|&i| {
///             let eu = candidates[i].node().meta.get("zone").is_some_and(|z| z == "eu");
///             (!eu, candidates[i].in_flight())
///         })
///     }
/// }
/// # let _ = EuFirst;
/// ```
pub trait Pick: Send + Sync + 'static {
    /// Picks one of `candidates` for a request to `group`.
    fn pick(&self, group: &str, candidates: &[Candidate<'_>], turn: &mut Turn<'_>)
        -> Option<usize>;
}

/// The default [`Pick`]: the fewest requests in flight, round-robin among
/// equally busy nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastInFlight;

impl Pick for LeastInFlight {
    fn pick(
        &self,
        _group: &str,
        candidates: &[Candidate<'_>],
        turn: &mut Turn<'_>,
    ) -> Option<usize> {
        // Each count read once: other threads move them meanwhile, and ties
        // judged on a second read could be none at all.
        let counts: Vec<usize> = candidates.iter().map(Candidate::in_flight).collect();
        let least = *counts.iter().min()?;
        let ties: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] == least).collect();
        // `least` is one of `counts`: at least one tie.
        Some(ties[turn.number() % ties.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic<'a>(user: &'a str, password: &'a str) -> Credentials<'a> {
        Credentials::Basic { user, password }
    }

    #[test]
    fn the_basic_login_is_an_option_of_the_default_authenticator() {
        const SECRET: &str = "the operator's secret, long enough";
        let now = Timestamp::from_millis(1_700_000_000_000);
        let auth = Authenticator::hs256(SECRET).with_secret_as_password(true);
        let who = Authenticate::authenticate(&auth, &basic("admin", SECRET), now).expect("login");
        assert!(who.admin && who.verified && who.key.is_none());
        for (user, password) in [("admin", "wrong"), ("root", SECRET), ("", "")] {
            let refused = Authenticate::authenticate(&auth, &basic(user, password), now);
            assert_eq!(
                refused,
                Err(AuthError::Refused("wrong user or password".into())),
                "{user}:{password}"
            );
        }
        let off = Authenticator::hs256(SECRET).with_basic_login(false);
        let refused = Authenticate::authenticate(&off, &basic("admin", SECRET), now);
        assert!(
            matches!(&refused, Err(AuthError::Refused(why)) if why.contains("turned off")),
            "{refused:?}"
        );
    }

    #[test]
    fn the_default_pick_takes_the_least_busy_then_turns() {
        let node = |id: u64| Node {
            id: crate::NodeId(id),
            key: NodeKey::named("g", format!("n{id}")).expect("valid"),
            endpoint: crate::Endpoint::custom("t", "x").expect("valid"),
            meta: Default::default(),
            created: Timestamp::from_millis(0),
            updated: None,
            lease_until: Timestamp::from_millis(1),
        };
        let nodes = [node(1), node(2), node(3)];
        let loads = [
            AtomicUsize::new(2),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ];
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .zip(&loads)
            .map(|(n, l)| Candidate::new(n, l))
            .collect();
        let counter = AtomicUsize::new(0);
        let mut picks = Vec::new();
        for _ in 0..4 {
            let mut taken = None;
            let mut turn = Turn::new(&mut taken, &counter);
            picks.push(LeastInFlight.pick("g", &candidates, &mut turn));
        }
        assert_eq!(picks, [Some(1), Some(2), Some(1), Some(2)]);
        // One request keeps its number however often it asks.
        let mut taken = None;
        let mut turn = Turn::new(&mut taken, &counter);
        let first = turn.number();
        assert_eq!(turn.number(), first);
    }
}
