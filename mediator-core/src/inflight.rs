//! Bounds on deliveries in flight, for the whole mediator and per caller,
//! so that one caller's storm of broadcasts cannot take every connection,
//! task and socket the mediator has while others wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::auth::Identity;
use crate::error::{Error, Result};

/// What a refused caller is told to wait before trying again: deliveries
/// last up to the deadline, most far less, so a second is a fair guess.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Counts deliveries in flight; [`acquire`](Self::acquire) takes a share or
/// refuses with [`Error::Overloaded`].
#[derive(Debug)]
pub(crate) struct InFlight {
    global_max: usize,
    per_caller_max: usize,
    // One lock for both counts keeps a check-and-take atomic; it is held for
    // a few arithmetic operations only.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// A share of the bounds, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    owner: &'a InFlight,
    caller: String,
    deliveries: usize,
}

impl InFlight {
    pub(crate) fn new(global_max: usize, per_caller_max: usize) -> Self {
        InFlight {
            global_max,
            per_caller_max,
            counts: Mutex::default(),
        }
    }

    /// The bucket a caller is counted in: its node, or one shared bucket
    /// for callers that name none (operators, the original's tokens), who
    /// cannot be told apart.
    fn bucket(caller: &Identity) -> String {
        match (&caller.key, caller.verified) {
            (Some(key), true) => key.to_string(),
            (_, true) => "~operator".to_owned(),
            (_, false) => "~unverified".to_owned(),
        }
    }

    /// Deliveries in flight now, over every caller.
    pub(crate) fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Takes `deliveries` (a broadcast's node count, or 1) for `caller`, or
    /// refuses when that would pass either bound. A request larger than a
    /// bound on its own is let through when nothing else is in flight for
    /// it, so a broadcast to a big group is slow to admit, never impossible.
    pub(crate) fn acquire(&self, caller: &Identity, deliveries: usize) -> Result<Permit<'_>> {
        let bucket = Self::bucket(caller);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = counts.by_caller.get(&bucket).copied().unwrap_or(0);
        if counts.total > 0 && counts.total + deliveries > self.global_max {
            return Err(Error::Overloaded {
                scope: "mediator".into(),
                retry_after: RETRY_AFTER,
            });
        }
        if mine > 0 && mine + deliveries > self.per_caller_max {
            return Err(Error::Overloaded {
                scope: format!("caller {bucket}"),
                retry_after: RETRY_AFTER,
            });
        }
        counts.total += deliveries;
        *counts.by_caller.entry(bucket.clone()).or_insert(0) += deliveries;
        Ok(Permit {
            owner: self,
            caller: bucket,
            deliveries,
        })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(self.deliveries);
        if let Some(mine) = counts.by_caller.get_mut(&self.caller) {
            *mine = mine.saturating_sub(self.deliveries);
            if *mine == 0 {
                // Callers come and go: keep the map the size of those busy.
                counts.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeKey;

    fn node(key: &str) -> Identity {
        Identity {
            key: Some(key.parse::<NodeKey>().unwrap()),
            ..Identity::internal()
        }
    }

    #[test]
    fn bounds_hold_per_caller_and_overall() {
        let bounds = InFlight::new(10, 4);
        let a = node("g/a");
        let b = node("g/b");
        let first = bounds.acquire(&a, 3).unwrap();
        assert!(matches!(
            bounds.acquire(&a, 2),
            Err(Error::Overloaded { .. })
        ));
        let other = bounds.acquire(&b, 4).unwrap();
        let _more = bounds.acquire(&node("g/c"), 3).unwrap();
        assert!(bounds.acquire(&node("g/d"), 1).is_err(), "10 in flight");
        drop(first);
        drop(other);
        assert!(bounds.acquire(&a, 4).is_ok());
        // Larger than a bound alone, but nothing else of its caller in flight.
        assert!(bounds.acquire(&node("g/e"), 9).is_err(), "others are");
    }
}
