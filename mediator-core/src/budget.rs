//! One budget for the request bodies every transport holds in memory at
//! once, so that many clients each sending a large body cannot together
//! take more of the hub's memory than the operator allowed, however many
//! connections they open.
//!
//! A transport takes a [`BodyReservation`] before it buffers a body and
//! [`grow`](BodyReservation::grow)s it as bytes arrive; the bytes are given
//! back when the reservation is dropped. Past the budget the request is
//! refused with [`Error::Overloaded`] (503 with `Retry-After`), never by
//! running out of memory.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// What a refused caller is told to wait: a body is held for at most the
/// time it takes to arrive and be delivered, usually far less than this.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The bytes of request bodies held in memory at once, by every transport
/// of one [`Mediator`](crate::Mediator) together.
///
/// Clones share one count.
///
/// ```
/// use mediator_core::budget::BodyBudget;
///
/// let budget = BodyBudget::new(1024);
/// let mut first = budget.reserve();
/// first.grow(1000)?;
/// let mut second = budget.reserve();
/// assert!(second.grow(100).is_err(), "only 24 bytes are left");
/// drop(first);
/// second.grow(100)?;
/// assert_eq!(budget.held(), 100);
/// # Ok::<(), mediator_core::Error>(())
/// ```
#[derive(Clone)]
pub struct BodyBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        BodyBudget {
            inner: Arc::new(Inner {
                limit,
                held: AtomicUsize::new(0),
            }),
        }
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// The bytes held now.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// An empty reservation, to grow as a body arrives.
    pub fn reserve(&self) -> BodyReservation {
        BodyReservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

impl fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyBudget")
            .field("limit", &self.limit())
            .field("held", &self.held())
            .finish()
    }
}

/// Bytes of one body counted against a [`BodyBudget`], given back when
/// dropped.
#[derive(Debug)]
pub struct BodyReservation {
    budget: BodyBudget,
    bytes: usize,
}

impl BodyReservation {
    /// Counts `more` bytes of this body, or refuses with
    /// [`Error::Overloaded`] when the budget has not that much left (the
    /// bytes already counted stay counted until the reservation drops).
    pub fn grow(&mut self, more: usize) -> Result<(), Error> {
        let inner = &self.budget.inner;
        let taken = inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|after| *after <= inner.limit)
            });
        match taken {
            Ok(_) => {
                self.bytes += more;
                Ok(())
            }
            Err(_) => Err(Error::Overloaded {
                scope: "request bodies".into(),
                retry_after: RETRY_AFTER,
            }),
        }
    }

    /// The bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget
                .inner
                .held
                .fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_growth_keeps_what_was_counted_until_drop() {
        let budget = BodyBudget::new(10);
        let mut a = budget.reserve();
        a.grow(6).unwrap();
        assert!(matches!(a.grow(5), Err(Error::Overloaded { .. })));
        assert_eq!((a.bytes(), budget.held()), (6, 6));
        a.grow(4).unwrap();
        assert_eq!(budget.held(), 10);
        drop(a);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_overflowing_request_is_refused_not_wrapped() {
        let budget = BodyBudget::new(usize::MAX);
        let mut a = budget.reserve();
        a.grow(usize::MAX - 1).unwrap();
        assert!(a.grow(2).is_err());
    }
}
