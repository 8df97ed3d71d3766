//! Staying registered, as a state machine driven by the time.
//!
//! [`Lease`] does no I/O and reads no clock: its driver (a transport's node
//! client) tells it what happened and when, and asks it what to do next.
//! That keeps the rules (renew at `ttl/3` with jitter, register again after
//! the mediator forgot the node, back off with full jitter while it cannot
//! be reached) in one place for every transport, and testable without
//! sleeping.

use std::fmt;
use std::time::Duration;

use rand::Rng;

use crate::time::Timestamp;

/// Exponential backoff with full jitter: the wait before retry `n` (from 0)
/// is uniform in `[0, min(max, initial * 2^n)]`, so nodes that lost the
/// mediator at the same moment do not all come back at the same moment.
///
/// ```
/// use std::time::Duration;
/// use mediator_core::node::Backoff;
///
/// let backoff = Backoff::default();
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(200));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(1600));
/// assert_eq!(backoff.ceiling(20), Duration::from_secs(10));
/// assert!(backoff.delay(3) <= backoff.ceiling(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The cap of the first wait.
    pub initial: Duration,
    /// The largest wait.
    pub max: Duration,
}

impl Default for Backoff {
    /// 200 ms doubling up to 10 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The cap for retry `attempt` (from 0), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A random wait for retry `attempt` (from 0).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(RandomJitter.fraction())
    }
}

/// Where a [`Lease`] gets its randomness: each call returns a fraction in
/// `[0, 1]` (values outside are clamped).
///
/// [`RandomJitter`] is the default; tests pass a closure returning fixed
/// values so every step is known in advance.
pub trait Jitter: Send + 'static {
    /// The next fraction in `[0, 1]`.
    fn fraction(&mut self) -> f64;
}

impl<F> Jitter for F
where
    F: FnMut() -> f64 + Send + 'static,
{
    fn fraction(&mut self) -> f64 {
        self()
    }
}

/// Uniform fractions from the thread's random number generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn fraction(&mut self) -> f64 {
        rand::thread_rng().gen_range(0.0..=1.0)
    }
}

/// What a [`Lease`]'s driver should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Register (an upsert): the first time, after the mediator forgot the
    /// node, or after a failure, when it may have.
    Register,
    /// Renew the lease the mediator holds.
    Renew,
}

/// The next thing to do and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// When to do it; never earlier than the `now` it was asked at.
    pub at: Timestamp,
}

/// The part of the lease period a renewal may come early by, at random, so
/// the renewals of nodes started together spread out.
const RENEW_SPREAD: f64 = 0.2;

/// A node's lease, as a state machine: it answers [`next`](Self::next) with
/// the action to take and when, and is told each outcome with the time it
/// happened.
///
/// The rules:
/// - at first, register at once;
/// - after a registration or renewal that holds until `lease_until`, renew
///   after a third of the time left, shortened at random by up to a fifth,
///   so two renewals can be lost before the lease runs out and nodes
///   started together spread out;
/// - when a renewal is answered "not registered" (the mediator restarted
///   with an empty registry, or evicted the node), register again at once;
/// - after a failure (no answer, or a refusal), register again after a
///   [`Backoff`] wait with full jitter, doubling with each failure in a
///   row up to its cap; a success resets it.
///
/// ```
/// use std::time::Duration;
/// use mediator_core::node::{Action, Backoff, Lease, Step};
/// use mediator_core::Timestamp;
///
/// let ttl = Duration::from_secs(30);
/// // Jitter 0: renewals come at exactly ttl/3, backoffs are immediate.
/// let mut lease = Lease::new(ttl, Backoff::default()).with_jitter(|| 0.0);
/// let t0 = Timestamp::from_millis(1_000_000);
/// assert_eq!(lease.next(t0), Step { action: Action::Register, at: t0 });
///
/// lease.registered(t0, t0 + ttl);
/// let renew = lease.next(t0);
/// assert_eq!(renew, Step { action: Action::Renew, at: t0 + Duration::from_secs(10) });
///
/// // The mediator restarted and no longer knows the node: register at once.
/// lease.forgotten(renew.at);
/// assert_eq!(lease.next(renew.at).action, Action::Register);
///
/// // It cannot be reached: back off, then register again.
/// lease.failed(renew.at);
/// assert_eq!(lease.failures(), 1);
/// assert_eq!(lease.next(renew.at).action, Action::Register);
/// ```
pub struct Lease {
    ttl: Duration,
    backoff: Backoff,
    jitter: Box<dyn Jitter>,
    action: Action,
    /// `None`: as soon as asked.
    at: Option<Timestamp>,
    failures: u32,
    lease_until: Option<Timestamp>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("ttl", &self.ttl)
            .field("backoff", &self.backoff)
            .field("action", &self.action)
            .field("at", &self.at)
            .field("failures", &self.failures)
            .field("lease_until", &self.lease_until)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// A lease of `ttl` to be asked for, not registered yet, retrying with
    /// `backoff` and [`RandomJitter`].
    pub fn new(ttl: Duration, backoff: Backoff) -> Lease {
        Lease {
            ttl,
            backoff,
            jitter: Box::new(RandomJitter),
            action: Action::Register,
            at: None,
            failures: 0,
            lease_until: None,
        }
    }

    /// Draws jitter from `jitter` instead (for tests, a closure returning
    /// fixed fractions).
    pub fn with_jitter(mut self, jitter: impl Jitter) -> Lease {
        self.jitter = Box::new(jitter);
        self
    }

    /// The lease to ask the mediator for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How retries back off.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Failures in a row since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the lease last granted runs out, as the driver reckoned it;
    /// `None` before the first registration and once the mediator forgot
    /// the node. It may have passed while failures go on.
    pub fn lease_until(&self) -> Option<Timestamp> {
        self.lease_until
    }

    /// What to do next and when, asked at `now`. Asking again without
    /// telling an outcome gives the same action, at the same time (or
    /// `now`, if that has passed).
    pub fn next(&self, now: Timestamp) -> Step {
        Step {
            action: self.action,
            at: self.at.map_or(now, |at| at.max(now)),
        }
    }

    /// A registration succeeded at `now`, with a lease lasting until
    /// `lease_until` on the driver's clock: the time the request was sent
    /// plus the lease the mediator granted (or [`ttl`](Self::ttl) when it
    /// did not say), which is never later than the mediator's own.
    pub fn registered(&mut self, now: Timestamp, lease_until: Timestamp) {
        self.succeeded(now, lease_until);
    }

    /// A renewal succeeded at `now`; `lease_until` as for
    /// [`registered`](Self::registered).
    pub fn renewed(&mut self, now: Timestamp, lease_until: Timestamp) {
        self.succeeded(now, lease_until);
    }

    /// A renewal was answered "not registered" at `now`: register again at
    /// once. The mediator answered, so this is no failure.
    pub fn forgotten(&mut self, now: Timestamp) {
        self.failures = 0;
        self.lease_until = None;
        self.action = Action::Register;
        self.at = Some(now);
    }

    /// A registration or renewal failed at `now` (no answer, or refused):
    /// register again after a backoff wait.
    pub fn failed(&mut self, now: Timestamp) {
        let ceiling = self.backoff.ceiling(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.action = Action::Register;
        self.at = Some(now + ceiling.mul_f64(self.fraction()));
    }

    fn succeeded(&mut self, now: Timestamp, lease_until: Timestamp) {
        let period = (now.until(lease_until) / 3).mul_f64(1.0 - RENEW_SPREAD * self.fraction());
        self.failures = 0;
        self.lease_until = Some(lease_until);
        self.action = Action::Renew;
        self.at = Some(now + period);
    }

    fn fraction(&mut self) -> f64 {
        let f = self.jitter.fraction();
        // NaN fails both comparisons and lands on 0.
        if f > 1.0 {
            1.0
        } else if f > 0.0 {
            f
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A lease whose jitter always draws `f`.
    fn fixed(f: f64) -> Lease {
        Lease::new(TTL, Backoff::default()).with_jitter(move || f)
    }

    #[test]
    fn starts_by_registering_at_once() {
        let lease = fixed(0.5);
        assert_eq!(
            lease.next(t(5)),
            Step {
                action: Action::Register,
                at: t(5)
            }
        );
        // Asking later does not move it into the past.
        assert_eq!(lease.next(t(9)).at, t(9));
        assert_eq!(lease.failures(), 0);
        assert_eq!(lease.lease_until(), None);
        assert_eq!(lease.ttl(), TTL);
    }

    #[test]
    fn renews_at_a_third_of_the_lease_within_the_jitter() {
        let start = t(1_000_000);
        for (f, expected) in [
            (0.0, Duration::from_millis(10_000)),
            (0.5, Duration::from_millis(9_000)),
            (1.0, Duration::from_millis(8_000)),
            // Out-of-range draws are clamped.
            (7.0, Duration::from_millis(8_000)),
            (-1.0, Duration::from_millis(10_000)),
            (f64::NAN, Duration::from_millis(10_000)),
        ] {
            let mut lease = fixed(f);
            lease.registered(start, start + TTL);
            assert_eq!(
                lease.next(start),
                Step {
                    action: Action::Renew,
                    at: start + expected
                },
                "jitter {f}"
            );
            assert_eq!(lease.lease_until(), Some(start + TTL));
        }
    }

    #[test]
    fn random_renewals_stay_within_bounds_and_spread() {
        let start = t(0);
        let mut seen = Vec::new();
        for _ in 0..200 {
            let mut lease = Lease::new(TTL, Backoff::default());
            lease.registered(start, start + TTL);
            let at = lease.next(start).at;
            assert!(at >= start + secs(8) && at <= start + secs(10), "{at:?}");
            seen.push(at);
        }
        seen.sort();
        assert!(seen[0] < seen[seen.len() - 1], "no spread at all");
    }

    #[test]
    fn renewals_follow_the_lease_granted() {
        // The mediator granted less than asked: renew at a third of that.
        let mut lease = fixed(0.0);
        let now = t(60_000);
        lease.registered(now, now + secs(9));
        assert_eq!(lease.next(now).at, now + secs(3));
        // Each renewal schedules the next from its own time.
        let later = now + secs(3);
        lease.renewed(later, later + secs(30));
        assert_eq!(lease.next(later).at, later + secs(10));
        assert_eq!(lease.next(later).action, Action::Renew);
        // A lease already over when reported: renew at once.
        lease.renewed(later, later - secs(1));
        assert_eq!(lease.next(later).at, later);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: secs(1),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(4), secs(1));
        assert_eq!(b.ceiling(31), secs(1));
        assert_eq!(b.ceiling(u32::MAX), secs(1));
        for attempt in 0..40 {
            assert!(b.delay(attempt) <= b.ceiling(attempt));
        }
        // Full jitter: the waits are spread, not all at the cap.
        let waits: Vec<Duration> = (0..200).map(|_| b.delay(10)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_millis(500)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(500)));
    }

    #[test]
    fn failures_back_off_doubling_to_the_cap() {
        // Jitter 1: every wait is its ceiling.
        let mut lease = fixed(1.0);
        let mut now = t(0);
        lease.registered(now, now + TTL);
        let mut waits = Vec::new();
        for _ in 0..10 {
            lease.failed(now);
            let step = lease.next(now);
            assert_eq!(step.action, Action::Register);
            waits.push(now.until(step.at).as_millis());
            now = step.at;
        }
        assert_eq!(
            waits,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000, 10_000]
        );
        assert_eq!(lease.failures(), 10);
        // The old lease is still the best guess of when it ran out.
        assert_eq!(lease.lease_until(), Some(t(0) + TTL));
    }

    #[test]
    fn backoff_waits_are_fully_jittered() {
        let b = Backoff::default();
        for (f, expected) in [(0.0, 0), (0.25, 50), (1.0, 200)] {
            let mut lease = Lease::new(TTL, b).with_jitter(move || f);
            lease.failed(t(0));
            assert_eq!(lease.next(t(0)).at, t(expected), "jitter {f}");
        }
        // Third failure in a row: ceiling 800 ms.
        let mut lease = Lease::new(TTL, b).with_jitter(|| 0.5);
        for _ in 0..3 {
            lease.failed(t(0));
        }
        assert_eq!(lease.next(t(0)).at, t(400));
    }

    #[test]
    fn a_success_resets_the_backoff() {
        let mut lease = fixed(1.0);
        for _ in 0..5 {
            lease.failed(t(0));
        }
        assert_eq!(lease.failures(), 5);
        lease.registered(t(0), t(0) + TTL);
        assert_eq!(lease.failures(), 0);
        assert_eq!(lease.next(t(0)).action, Action::Renew);
        lease.failed(t(1_000));
        assert_eq!(lease.next(t(1_000)).at, t(1_200));
        lease.forgotten(t(2_000));
        assert_eq!(lease.failures(), 0);
        lease.failed(t(2_000));
        assert_eq!(lease.next(t(2_000)).at, t(2_200));
    }

    #[test]
    fn forgotten_registers_at_once() {
        let mut lease = fixed(0.5);
        lease.registered(t(0), t(0) + TTL);
        lease.forgotten(t(9_000));
        assert_eq!(
            lease.next(t(9_000)),
            Step {
                action: Action::Register,
                at: t(9_000)
            }
        );
        assert_eq!(lease.lease_until(), None);
        // Registering again resumes renewals.
        lease.registered(t(9_100), t(9_100) + TTL);
        assert_eq!(
            lease.next(t(9_100)),
            Step {
                action: Action::Renew,
                at: t(9_100 + 9_000)
            }
        );
    }

    #[test]
    fn next_is_stable_until_an_outcome_is_told() {
        let draws = Arc::new(Mutex::new(0u32));
        let counted = Arc::clone(&draws);
        let mut lease = Lease::new(TTL, Backoff::default()).with_jitter(move || {
            *counted.lock().expect("counter") += 1;
            0.5
        });
        lease.registered(t(0), t(0) + TTL);
        let first = lease.next(t(1));
        for now in [t(2), t(3), t(4)] {
            assert_eq!(lease.next(now), first);
        }
        // One draw per outcome, none per question.
        assert_eq!(*draws.lock().expect("counter"), 1);
        // Asked after the time has come: act now.
        assert_eq!(lease.next(t(60_000)).at, t(60_000));
    }

    #[test]
    fn a_whole_life() {
        // Draws cycle through 0, 1, 0.5.
        let mut draws = [0.0, 1.0, 0.5].into_iter().cycle();
        let mut lease =
            Lease::new(TTL, Backoff::default()).with_jitter(move || draws.next().unwrap_or(0.0));
        let mut log = Vec::new();
        let mut now = t(0);
        // Outcomes in order: register ok, renew ok, renew "not registered",
        // register fails twice, register ok.
        for outcome in ["ok", "ok", "forgotten", "fail", "fail", "ok"] {
            let step = lease.next(now);
            now = step.at;
            log.push((step.action, now.as_millis()));
            match outcome {
                "ok" if step.action == Action::Register => lease.registered(now, now + TTL),
                "ok" => lease.renewed(now, now + TTL),
                "forgotten" => lease.forgotten(now),
                _ => lease.failed(now),
            }
        }
        log.push((lease.next(now).action, lease.next(now).at.as_millis()));
        assert_eq!(
            log,
            [
                (Action::Register, 0),
                // draw 0: a full third.
                (Action::Renew, 10_000),
                // draw 1: a third shortened by a fifth.
                (Action::Renew, 18_000),
                (Action::Register, 18_000),
                // draw 0.5 of 200 ms.
                (Action::Register, 18_100),
                // draw 0 of 400 ms.
                (Action::Register, 18_100),
                // draw 1: 8 s after registering.
                (Action::Renew, 26_100),
            ]
        );
    }
}
