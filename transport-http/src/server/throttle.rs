//! The gate in front of password logins (the Basic admin login and the
//! console's password sign-in), per service:
//!
//! - a backoff per client address, so a password can be guessed only so
//!   fast however many requests a client sends. Every refused login
//!   counts (a wrong password, a token that is not an admin's, a login the
//!   `Authenticate` policy accepts as anything less than an admin); only a
//!   login accepted as the admin it asks to be clears the count.
//! - a bound on the password checks under way: the operator password is
//!   an Argon2 hash, slow on purpose, so it is checked on tokio's blocking
//!   threads, [`HASHERS`] at a time, with at most [`WAITING`] logins
//!   queued behind them. Past that a login is refused at once (`503`)
//!   rather than queued without bound, and the request threads never wait
//!   on a hash.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;
use mediator_core::auth::Identity;
use mediator_core::{Credentials, Error, Fault, Mediator};
use tokio::sync::Semaphore;

use super::reply::{self, HttpResponse};

/// Failed logins a client may make before it has to wait.
const FREE_FAILURES: u32 = 5;
/// The first wait; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait.
const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// Clients remembered at once; past it those not waiting are forgotten, so
/// a flood of addresses cannot grow the map without bound.
const REMEMBERED: usize = 10_000;
/// Password checks running at once. Each Argon2 check takes a core and
/// 19 MiB for tens of milliseconds: two keep the other cores serving.
pub(crate) const HASHERS: usize = 2;
/// Password logins that may wait for a free hasher; past it they are
/// refused at once. With [`HASHERS`] checks of some 50 ms each, the last
/// of them waits under half a second.
pub(crate) const WAITING: usize = 16;

/// The login backoff and the bounded password checks of one service.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    clients: Mutex<HashMap<IpAddr, Failures>>,
    hashers: Arc<Semaphore>,
    /// Logins between arriving at the gate and getting their answer.
    queued: AtomicUsize,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            clients: Mutex::default(),
            hashers: Arc::new(Semaphore::new(HASHERS)),
            queued: AtomicUsize::new(0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    wait_until: Option<Instant>,
}

/// Why a login was not looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client must wait this long after its failed logins.
    Wait(Duration),
    /// Too many password checks are under way or queued.
    Busy,
}

impl Refusal {
    /// Whole seconds for `retry-after`, at least 1.
    pub(crate) fn retry_after_secs(self) -> u64 {
        match self {
            Refusal::Wait(wait) => (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            Refusal::Busy => 1,
        }
    }

    /// The JSON refusal: `429` `throttled` or `503` `overloaded`, with
    /// `retry-after`.
    pub(crate) fn reply(self) -> HttpResponse {
        let mut response = match self {
            Refusal::Wait(_) => reply::error_status(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins from this address; wait before trying again",
                "throttled",
                Fault::Caller,
            ),
            Refusal::Busy => reply::error_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many password logins are being checked; try again shortly",
                "overloaded",
                Fault::Hub,
            ),
        };
        self.add_retry_after(response.headers_mut());
        response
    }

    /// Adds `retry-after` to an answer built elsewhere (the console's page).
    pub(crate) fn add_retry_after(self, headers: &mut http::HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&self.retry_after_secs().to_string()) {
            headers.insert(RETRY_AFTER, value);
        }
    }
}

/// Takes a login back out of the queue however its request ends, a
/// dropped one (the client went away) included.
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LoginThrottle {
    /// How long `peer` must still wait before its next login is looked at;
    /// `None` when it may try now.
    pub(crate) fn wait(&self, peer: IpAddr) -> Option<Duration> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let until = clients.get(&peer)?.wait_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts a refused login; from the [`FREE_FAILURES`]th on, the client
    /// waits twice as long as the time before.
    pub(crate) fn failed(&self, peer: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= REMEMBERED && !clients.contains_key(&peer) {
            let now = Instant::now();
            clients.retain(|_, f| f.wait_until.is_some_and(|until| until > now));
        }
        let failures = clients.entry(peer).or_insert(Failures {
            count: 0,
            wait_until: None,
        });
        failures.count = failures.count.saturating_add(1);
        if failures.count >= FREE_FAILURES {
            let doublings = (failures.count - FREE_FAILURES).min(20);
            let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(LONGEST_WAIT);
            failures.wait_until = Some(Instant::now() + wait);
            tracing::warn!(%peer, failures = failures.count, ?wait, "admin login failed again; client must wait");
        }
    }

    /// Forgets a client's failures after a login accepted as the admin it
    /// asked to be; nothing less may call it.
    pub(crate) fn succeeded(&self, peer: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.remove(&peer);
    }

    /// Counts the outcome of a login that asked for the admin: accepted as
    /// one, it clears `peer`'s failures; anything else is a failure.
    pub(crate) fn count(&self, peer: Option<IpAddr>, checked: &Result<Identity, Error>) {
        let Some(peer) = peer else { return };
        match checked {
            Ok(identity) if identity.admin => self.succeeded(peer),
            _ => self.failed(peer),
        }
    }

    /// Checks a password login (`user`, `password`) with the mediator's
    /// `Authenticate` policy, off the request threads and at most
    /// [`HASHERS`] at a time, and counts its outcome for `peer` (when
    /// known: without an address nothing is counted, since one shared
    /// count would let anyone lock the operator out).
    ///
    /// Refused without a check when `peer` must wait (looked at again once
    /// a hasher is free, so a burst of guesses sent together cannot all
    /// slip past the count) or when [`WAITING`] logins already queue.
    pub(crate) async fn check_password(
        &self,
        mediator: &Mediator,
        peer: Option<IpAddr>,
        user: &str,
        password: &str,
    ) -> Result<Result<Identity, Error>, Refusal> {
        let must_wait = |peer: Option<IpAddr>| match peer.and_then(|ip| self.wait(ip)) {
            Some(wait) => Err(Refusal::Wait(wait)),
            None => Ok(()),
        };
        must_wait(peer)?;
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        let _in_queue = InQueue(&self.queued);
        if before >= HASHERS + WAITING {
            tracing::warn!(
                hashers = HASHERS,
                waiting = WAITING,
                "password logins refused: too many being checked"
            );
            return Err(Refusal::Busy);
        }
        let Ok(permit) = Arc::clone(&self.hashers).acquire_owned().await else {
            return Err(Refusal::Busy);
        };
        must_wait(peer)?;
        let mediator = mediator.clone();
        let (user, password) = (user.to_owned(), password.to_owned());
        // The permit goes with the check: a request dropped while it runs
        // does not free a hasher for the next before this one ends.
        let checked = tokio::task::spawn_blocking(move || {
            let checked = mediator.authenticate(&Credentials::Basic {
                user: &user,
                password: &password,
            });
            drop(permit);
            checked
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::Config(format!(
                "the password check did not finish: {e}"
            )))
        });
        self.count(peer, &checked);
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_begin_after_the_free_failures_and_double() {
        let throttle = LoginThrottle::default();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed(peer);
            assert!(throttle.wait(peer).is_none());
        }
        throttle.failed(peer);
        let first = throttle.wait(peer).expect("a wait");
        assert!(first <= FIRST_WAIT && first > FIRST_WAIT / 2);
        throttle.failed(peer);
        assert!(throttle.wait(peer).expect("a wait") > FIRST_WAIT);
        assert!(throttle.wait("192.0.2.2".parse().unwrap()).is_none());
        throttle.succeeded(peer);
        assert!(throttle.wait(peer).is_none());
    }

    #[test]
    fn only_an_admin_login_clears_the_count() {
        let throttle = LoginThrottle::default();
        let peer: IpAddr = "192.0.2.3".parse().unwrap();
        let mut node = Identity::internal();
        node.admin = false;
        for _ in 0..FREE_FAILURES {
            throttle.count(Some(peer), &Err(Error::unauthorized("wrong password")));
            // A valid login that is not an admin's is refused too.
            throttle.count(Some(peer), &Ok(node.clone()));
        }
        assert!(throttle.wait(peer).is_some());
        throttle.count(Some(peer), &Ok(Identity::internal()));
        assert!(throttle.wait(peer).is_none());
    }
}
