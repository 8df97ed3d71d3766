//! Backoff for the Basic admin login, per client address: a password can
//! be guessed only so fast, however many requests a client sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins a client may make before it has to wait.
const FREE_FAILURES: u32 = 5;
/// The first wait; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait.
const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// Clients remembered at once; past it those not waiting are forgotten, so
/// a flood of addresses cannot grow the map without bound.
const REMEMBERED: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct LoginThrottle {
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    wait_until: Option<Instant>,
}

impl LoginThrottle {
    /// How long `peer` must still wait before its next login is looked at;
    /// `None` when it may try now.
    pub(crate) fn wait(&self, peer: IpAddr) -> Option<Duration> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let until = clients.get(&peer)?.wait_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts a failed login; from the [`FREE_FAILURES`]th on, the client
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

    /// Forgets a client's failures after a good login.
    pub(crate) fn succeeded(&self, peer: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.remove(&peer);
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
}
