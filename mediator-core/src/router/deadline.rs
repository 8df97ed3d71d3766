//! When a delivery must be done by.

use std::time::Duration;

use crate::time::Timestamp;

/// When a delivery must be done by: a monotonic instant for timers and the
/// wall-clock equivalent to tell the node (`x-mediator-deadline`).
///
/// ```
/// use mediator_core::{Deadline, Timestamp};
/// use std::time::Duration;
/// let now = Timestamp::from_millis(1_000);
/// let d = Deadline::starting(now, Duration::from_secs(2));
/// assert_eq!(d.wall(), Timestamp::from_millis(3_000));
/// assert!(d.remaining() <= Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: tokio::time::Instant,
    wall: Timestamp,
    budget: Duration,
}

impl Deadline {
    /// A deadline `budget` from now on the system clock.
    pub fn after(budget: Duration) -> Self {
        Deadline::starting(Timestamp::now(), budget)
    }

    /// A deadline `budget` after `now` (read from the mediator's clock);
    /// the wait itself is timed by the runtime.
    ///
    /// A budget too large for the timer to represent (such as
    /// `Duration::MAX`, read as "no limit") waits [`Deadline::FAR`] instead
    /// of overflowing.
    pub fn starting(now: Timestamp, budget: Duration) -> Self {
        let instant = tokio::time::Instant::now();
        Deadline {
            at: instant
                .checked_add(budget)
                .unwrap_or_else(|| instant + Deadline::FAR),
            wall: now + budget,
            budget,
        }
    }

    /// How long a deadline waits at most when its budget overflows the
    /// timer: thirty years, which no delivery outlives.
    pub const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

    /// Time left before the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// The deadline as wall-clock time, for the node.
    pub fn wall(&self) -> Timestamp {
        self.wall
    }

    /// The whole budget the deadline was made with.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The monotonic instant of the deadline.
    pub fn instant(&self) -> tokio::time::Instant {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline is total: an enormous budget means "no practical limit",
    /// not a panic on every request.
    #[test]
    fn a_huge_budget_does_not_panic() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(deadline.remaining() > Duration::from_secs(365 * 24 * 3600));
        assert_eq!(deadline.budget(), Duration::MAX);
        assert!(deadline.wall() > Timestamp::now());
    }
}
