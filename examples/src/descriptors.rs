//! The descriptor limit `serve` runs under, and the caps that must fit in
//! it.
//!
//! Every client connection and every delivery to an HTTP node holds a
//! file descriptor; past the process's limit, accepts and connects fail
//! with "too many open files", so requests the admission caps let in fail
//! anyway. `serve` therefore raises its soft limit to the hard one at
//! start (as nginx's `worker_rlimit_nofile` does), and when even that is
//! below what the caps need, lowers the caps left at their defaults to fit
//! (an operator's own values are kept) and says so. QUIC connections share
//! the listener's one UDP socket, so they take no descriptor of their own.
//!
//! ```
//! use mediator_examples::descriptors::{fit, Caps, Fitted, RESERVED};
//! let defaults = Caps { max_connections: 10_000, max_in_flight: 10_000, ..Caps::default() };
//! assert_eq!(fit(1_000_000, defaults), Fitted::Fits { needed: 20_000 + RESERVED });
//! let Fitted::Lowered { max_connections, max_in_flight, .. } = fit(1024, defaults) else {
//!     panic!("the defaults were not lowered");
//! };
//! assert!(max_connections + max_in_flight + RESERVED as usize <= 1024);
//! let given = Caps { max_connections_given: true, max_in_flight_given: true, ..defaults };
//! assert!(matches!(fit(1024, given), Fitted::Short { .. }));
//! ```

use crate::config::ServeSettings;

/// Descriptors kept beside client connections and deliveries: the
/// listeners, the store's files or connections, the runtime's own, the log
/// and the standard streams, idle pooled connections to nodes.
pub const RESERVED: u64 = 64;

/// The limits on this process's open descriptors; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The limit in force.
    pub soft: Option<u64>,
    /// How far the process may raise it.
    pub hard: Option<u64>,
}

impl FileLimit {
    /// The limits this process runs under; `None` on a platform without
    /// them.
    pub fn current() -> Option<FileLimit> {
        #[cfg(unix)]
        {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            Some(FileLimit {
                soft: limit.current,
                hard: limit.maximum,
            })
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// Raises the soft limit as far as the hard one allows and returns the
    /// limits now in force (those before, when nothing could be raised),
    /// with why the raise failed, if it did. A hard limit of "unlimited" is
    /// not a value the system takes for the soft one, so the largest it
    /// does take is used then.
    pub fn raise() -> Option<(FileLimit, Option<String>)> {
        let before = FileLimit::current()?;
        #[cfg(unix)]
        {
            use rustix::process::{setrlimit, Resource, Rlimit};
            // Largest first: the system's own ceiling where it says it
            // (Linux), then common ceilings, each tried only when above the
            // soft limit and within the hard one.
            let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok());
            let candidates = [
                before.hard,
                ceiling,
                Some(1 << 20),
                Some(65_536),
                Some(10_240),
            ];
            let mut failure = None;
            for target in candidates.into_iter().flatten() {
                let within_hard = before.hard.is_none_or(|hard| target <= hard);
                let above_soft = before.soft.is_some_and(|soft| target > soft);
                if !within_hard || !above_soft {
                    continue;
                }
                let new = Rlimit {
                    current: Some(target),
                    maximum: before.hard,
                };
                match setrlimit(Resource::Nofile, new) {
                    Ok(()) => return Some((FileLimit::current().unwrap_or(before), None)),
                    Err(e) => failure = Some(format!("cannot raise it to {target}: {e}")),
                }
            }
            Some((before, failure))
        }
        #[cfg(not(unix))]
        {
            Some((before, None))
        }
    }
}

/// The caps that hold descriptors, and whether the operator set each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// Client connections open at once.
    pub max_connections: usize,
    /// Whether `max_connections` was configured rather than the default.
    pub max_connections_given: bool,
    /// Deliveries in flight at once, each holding a connection to its node.
    pub max_in_flight: usize,
    /// Whether `max_in_flight` was configured rather than the default.
    pub max_in_flight_given: bool,
}

impl Caps {
    /// Descriptors these caps need, with [`RESERVED`] to spare.
    pub fn needed(&self) -> u64 {
        (self.max_connections as u64)
            .saturating_add(self.max_in_flight as u64)
            .saturating_add(RESERVED)
    }
}

/// How caps fit a descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fitted {
    /// The limit holds what the caps need.
    Fits {
        /// Descriptors the caps need.
        needed: u64,
    },
    /// The caps left at their defaults were lowered to these, to fit.
    Lowered {
        /// Descriptors the caps needed before.
        needed: u64,
        /// The cap on client connections now.
        max_connections: usize,
        /// The cap on deliveries in flight now.
        max_in_flight: usize,
    },
    /// The configured caps need more than the limit, and lowering the
    /// defaults among them cannot make room.
    Short {
        /// Descriptors the caps need.
        needed: u64,
    },
}

/// The caps of `settings` that hold descriptors.
pub fn caps(settings: &ServeSettings) -> Caps {
    Caps {
        max_connections: settings.connections.max_connections,
        max_connections_given: settings.caps_given.max_connections,
        max_in_flight: settings.limits.max_in_flight,
        max_in_flight_given: settings.caps_given.max_in_flight,
    }
}

/// Fits the caps of `settings` under `limit` descriptors, lowering those
/// left at their defaults when needed, and says what was found (see
/// [`explain`]); `None` when they fit.
pub fn fit_settings(settings: &mut ServeSettings, limit: u64) -> Option<String> {
    let caps = caps(settings);
    let fitted = fit(limit, caps);
    if let Fitted::Lowered {
        max_connections,
        max_in_flight,
        ..
    } = fitted
    {
        settings.connections.max_connections = max_connections;
        settings.limits.max_in_flight = max_in_flight;
    }
    explain(limit, caps, fitted)
}

/// How `caps` fit under `limit` descriptors: as they are, with the defaults
/// among them lowered (shared evenly when both are defaults), or not at
/// all. Caps are only ever lowered, never raised.
pub fn fit(limit: u64, caps: Caps) -> Fitted {
    let needed = caps.needed();
    if needed <= limit {
        return Fitted::Fits { needed };
    }
    let room = usize::try_from(limit.saturating_sub(RESERVED)).unwrap_or(usize::MAX);
    let (connections, in_flight) = match (caps.max_connections_given, caps.max_in_flight_given) {
        (true, true) => return Fitted::Short { needed },
        (false, false) => (room / 2, room - room / 2),
        (true, false) => (
            caps.max_connections,
            room.saturating_sub(caps.max_connections),
        ),
        (false, true) => (room.saturating_sub(caps.max_in_flight), caps.max_in_flight),
    };
    if connections == 0 || in_flight == 0 {
        return Fitted::Short { needed };
    }
    Fitted::Lowered {
        needed,
        max_connections: connections.min(caps.max_connections),
        max_in_flight: in_flight.min(caps.max_in_flight),
    }
}

/// What to say about `fitted` under `limit`, for the start-up log and
/// `check`; `None` when the caps fit.
pub fn explain(limit: u64, caps: Caps, fitted: Fitted) -> Option<String> {
    let before = format!(
        "max_connections {} and max_in_flight {}",
        caps.max_connections, caps.max_in_flight
    );
    let raise = "raise the hard limit (ulimit -Hn, systemd's LimitNOFILE=)";
    match fitted {
        Fitted::Fits { .. } => None,
        Fitted::Lowered {
            needed,
            max_connections,
            max_in_flight,
        } => Some(format!(
            "the descriptor limit is {limit}, below the {needed} that {before} need with \
             {RESERVED} to spare: lowered to max_connections {max_connections} and max_in_flight \
             {max_in_flight} to fit; {raise} to keep them"
        )),
        Fitted::Short { needed } => Some(format!(
            "the descriptor limit is {limit}, below the {needed} that {before} need with \
             {RESERVED} to spare: past it, connections and deliveries fail with \"too many open \
             files\"; {raise}, or lower max_connections or max_in_flight"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Caps = Caps {
        max_connections: 10_000,
        max_connections_given: false,
        max_in_flight: 10_000,
        max_in_flight_given: false,
    };

    #[test]
    fn defaults_are_lowered_to_fit_and_given_values_are_kept() {
        assert_eq!(
            fit(256, DEFAULTS),
            Fitted::Lowered {
                needed: 20_064,
                max_connections: 96,
                max_in_flight: 96
            }
        );
        let connections = Caps {
            max_connections: 100,
            max_connections_given: true,
            ..DEFAULTS
        };
        assert_eq!(
            fit(1024, connections),
            Fitted::Lowered {
                needed: 10_164,
                max_connections: 100,
                max_in_flight: 860
            }
        );
        let in_flight = Caps {
            max_in_flight: 50,
            max_in_flight_given: true,
            ..DEFAULTS
        };
        assert!(matches!(
            fit(1024, in_flight),
            Fitted::Lowered {
                max_connections: 910,
                max_in_flight: 50,
                ..
            }
        ));
        // A given value that leaves no room for the other.
        let greedy = Caps {
            max_connections: 5_000,
            max_connections_given: true,
            ..DEFAULTS
        };
        assert!(matches!(fit(1024, greedy), Fitted::Short { .. }));
        assert!(matches!(fit(10, DEFAULTS), Fitted::Short { .. }));
        let text = explain(256, DEFAULTS, fit(256, DEFAULTS)).unwrap();
        assert!(
            text.contains("limit is 256") && text.contains("max_connections 96"),
            "{text}"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (now, failure) = FileLimit::raise().unwrap();
        assert_eq!(failure, None);
        let hard = now.hard.unwrap_or(u64::MAX);
        let soft = now.soft.unwrap_or(u64::MAX);
        // Unlimited hard limits leave the soft one at the system's ceiling.
        assert!(soft == hard || now.hard.is_none(), "{now:?}");
    }
}
