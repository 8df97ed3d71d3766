//! Where the mediator and its nodes read the time.
//!
//! Leases, expiry, renewals and backoff all read a [`Clock`] instead of the
//! system clock, so a test drives a [`ManualClock`] and sees an hour pass
//! in a microsecond. Deadlines of deliveries stay on the runtime's timer:
//! they bound real waiting, which a manual clock cannot shorten.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::time::Timestamp;

/// A source of wall-clock time that can also be waited on.
///
/// ```
/// use mediator_core::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let clock = ManualClock::new(Timestamp::from_millis(0));
/// let waiter = tokio::spawn({
///     let clock = clock.clone();
///     async move { clock.sleep_until(Timestamp::from_millis(60_000)).await }
/// });
/// clock.advance(Duration::from_secs(60));
/// waiter.await.unwrap(); // returns at once: a minute passed on this clock
/// assert_eq!(clock.now(), Timestamp::from_millis(60_000));
/// # });
/// ```
#[async_trait]
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Returns once the time is `at` or later.
    async fn sleep_until(&self, at: Timestamp);
}

#[async_trait]
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }

    async fn sleep_until(&self, at: Timestamp) {
        (**self).sleep_until(at).await;
    }
}

/// The system's wall clock, waited on with the runtime's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep_until(&self, at: Timestamp) {
        // Re-read after waking: the wall clock may have been stepped.
        loop {
            let left = Timestamp::now().until(at);
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left).await;
        }
    }
}

/// A clock that moves only when told to; for tests and simulations.
///
/// Clones share one time. Waiters wake as soon as the time is moved past
/// what they wait for.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &*self.now.borrow())
            .finish()
    }
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// A clock standing at the current system time.
    pub fn starting_now() -> Self {
        ManualClock::new(Timestamp::now())
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        self.now.send_modify(|now| *now = *now + by);
    }

    /// Sets the time; it may go backwards, as a stepped wall clock does.
    pub fn set(&self, to: Timestamp) {
        self.now.send_replace(to);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    async fn sleep_until(&self, at: Timestamp) {
        let mut changes = self.now.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail
        // while we hold it; should it, waking is the safe answer.
        let _ = changes.wait_for(|now| *now >= at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_wakes_only_once_its_time_has_come() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let mut waiter = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(Timestamp::from_millis(5_000)).await }
        });
        clock.advance(Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiter)
                .await
                .is_err(),
            "woke at 2 s for a 5 s wait"
        );
        clock.set(Timestamp::from_millis(5_000));
        waiter.await.expect("the waiter ends");
    }

    #[tokio::test]
    async fn a_past_time_returns_at_once() {
        let clock = ManualClock::new(Timestamp::from_millis(10));
        clock.sleep_until(Timestamp::from_millis(5)).await;
        SystemClock.sleep_until(Timestamp::from_millis(5)).await;
    }
}
