//! What travels with a request besides its envelope: who is calling, by
//! when it must be done, and how to trace it.

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use std::sync::Arc;

use crate::auth::Identity;
use crate::policy::EndpointPolicy;
use crate::router::Deadline;

/// The longest `x-request-id` accepted from a caller; a longer one is
/// replaced by a new id, so logs and headers stay bounded.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Correlation ids a request carries through the mediator to its nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceContext {
    /// The request's id (`x-request-id`), given by the caller or started
    /// by the transport.
    pub request_id: Option<String>,
    /// The W3C trace context (`traceparent`) passed on to nodes.
    pub traceparent: Option<String>,
}

impl TraceContext {
    /// The trace context of a request that arrived with these ids, as the
    /// caller sent them (or not): the mediator is one hop of the trace.
    ///
    /// - A well-formed `request_id` ([`is_valid_request_id`]) is kept;
    ///   otherwise a new one is made ([`new_request_id`]).
    /// - A valid W3C `traceparent` keeps its trace id and flags, with a new
    ///   parent id: the mediator's own span, so a node's spans hang under
    ///   the mediator's hop. Without one, or with an invalid one, a new
    ///   trace starts, sampled (`01`), since the mediator's request log
    ///   records it.
    ///
    /// ```
    /// use mediator_core::TraceContext;
    /// let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// let trace = TraceContext::accept(Some("order-17"), Some(caller));
    /// assert_eq!(trace.request_id.as_deref(), Some("order-17"));
    /// assert_eq!(trace.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    /// assert_ne!(trace.parent_id(), Some("00f067aa0ba902b7"));
    ///
    /// let fresh = TraceContext::accept(Some("bad id with spaces"), Some("nonsense"));
    /// assert_ne!(fresh.request_id.as_deref(), Some("bad id with spaces"));
    /// assert!(fresh.traceparent.as_deref().is_some_and(mediator_core::context::is_valid_traceparent));
    /// ```
    pub fn accept(request_id: Option<&str>, traceparent: Option<&str>) -> TraceContext {
        let request_id = match request_id {
            Some(id) if is_valid_request_id(id) => id.to_owned(),
            _ => new_request_id(),
        };
        let (trace_id, flags) = match traceparent.filter(|t| is_valid_traceparent(t)) {
            // Valid, hence ASCII with these fields at these offsets.
            Some(t) => (&t[3..35], &t[53..55]),
            None => ("", "01"),
        };
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        if trace_id.is_empty() {
            // Zero is the one invalid trace id; the odds are nil, but cheap to rule out.
            push_hex(&mut out, rand::random::<u128>().max(1), 32);
        } else {
            out.push_str(trace_id);
        }
        out.push('-');
        push_hex(&mut out, u128::from(rand::random::<u64>().max(1)), 16);
        out.push('-');
        out.push_str(flags);
        TraceContext {
            request_id: Some(request_id),
            traceparent: Some(out),
        }
    }

    /// The trace id of [`traceparent`](Self::traceparent), when it is valid.
    pub fn trace_id(&self) -> Option<&str> {
        self.ids().map(|(trace_id, _)| trace_id)
    }

    /// [`trace_id`](Self::trace_id) and [`parent_id`](Self::parent_id)
    /// together, checking the `traceparent` once.
    pub fn ids(&self) -> Option<(&str, &str)> {
        self.traceparent
            .as_deref()
            .filter(|t| is_valid_traceparent(t))
            .map(|t| (&t[3..35], &t[36..52]))
    }

    /// The parent id of [`traceparent`](Self::traceparent) (the span that
    /// made the request), when it is valid.
    pub fn parent_id(&self) -> Option<&str> {
        self.ids().map(|(_, parent_id)| parent_id)
    }

    /// A trace context with a request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// A trace context with a W3C `traceparent`.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }
}

/// One request's context, as the [`Router`](crate::Router) and every
/// [`Deliver`](crate::Deliver) see it.
///
/// The caller is the one the mediator authenticated, so a router wrapper
/// can decide on its scopes (an ACL) and a deliverer can tell the node who
/// is asking.
///
/// ```
/// use mediator_core::{Deadline, Identity, RequestContext, TraceContext};
/// use std::time::Duration;
/// let cx = RequestContext::new(Identity::internal(), Deadline::after(Duration::from_secs(1)))
///     .with_trace(TraceContext::default().with_request_id("r-1"));
/// assert!(cx.caller.admin);
/// assert_eq!(cx.trace.request_id.as_deref(), Some("r-1"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestContext {
    /// Who is calling, as authenticated (see [`Identity::verified`]).
    pub caller: Identity,
    /// When the caller stops waiting.
    pub deadline: Deadline,
    /// Correlation ids.
    pub trace: TraceContext,
    /// Where the mediator may connect: a deliverer that resolves host
    /// names or opens connections itself judges every address by it at
    /// connect time. It reaches every delivery with its request, so a
    /// deliverer wrapped in others (counting, forwarding) applies it
    /// without being handed it.
    pub endpoints: Arc<EndpointPolicy>,
    /// The instance of the formation that forwarded this call here, if one
    /// did: the call is then delivered only to a node attached to this
    /// instance, never forwarded again.
    pub forwarded_by: Option<String>,
    /// What the deliveries of one call share: set for a broadcast, whose
    /// deliveries then build what does not depend on the node once
    /// ([`shared`](Self::shared)).
    shared: Option<Arc<SharedParts>>,
}

/// Values the deliveries of one call build once and share, one per type.
#[derive(Default)]
struct SharedParts(std::sync::Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>);

impl std::fmt::Debug for SharedParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedParts(..)")
    }
}

impl RequestContext {
    /// A context for `caller`, due by `deadline`, with no trace ids and
    /// the default [`EndpointPolicy`].
    pub fn new(caller: Identity, deadline: Deadline) -> Self {
        static DEFAULT: OnceLock<Arc<EndpointPolicy>> = OnceLock::new();
        RequestContext {
            caller,
            deadline,
            trace: TraceContext::default(),
            endpoints: Arc::clone(DEFAULT.get_or_init(Arc::default)),
            forwarded_by: None,
            shared: None,
        }
    }

    /// Sets the endpoint policy deliveries are held to.
    pub fn with_endpoints(mut self, endpoints: Arc<EndpointPolicy>) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// The value of type `T` every delivery of this call shares, built by
    /// `build` by the first that asks; `None` when the call has one
    /// delivery (the deliverer then builds its own, with nothing to
    /// share). A broadcast's deliverer builds the node request's head once
    /// this way.
    ///
    /// ```
    /// use mediator_core::{Deadline, Identity, RequestContext};
    /// use std::time::Duration;
    /// let one = RequestContext::new(Identity::internal(), Deadline::after(Duration::from_secs(1)));
    /// assert!(one.shared(|| 1u32).is_none());
    /// let many = one.sharing();
    /// let first = many.shared(|| String::from("built once")).unwrap();
    /// let again = many.clone().shared(|| String::from("never built")).unwrap();
    /// assert_eq!(*again, "built once");
    /// assert!(std::sync::Arc::ptr_eq(&first, &again));
    /// ```
    pub fn shared<T: Any + Send + Sync>(&self, build: impl FnOnce() -> T) -> Option<Arc<T>> {
        let parts = self.shared.as_ref()?;
        // A poisoned lock only costs the sharing.
        let mut parts = parts.0.lock().ok()?;
        let id = TypeId::of::<T>();
        if let Some((_, value)) = parts.iter().find(|(t, _)| *t == id) {
            return Arc::clone(value).downcast::<T>().ok();
        }
        let value = Arc::new(build());
        parts.push((id, Arc::clone(&value) as Arc<dyn Any + Send + Sync>));
        Some(value)
    }

    /// The context with a fresh set of shared values: every clone of it
    /// shares them ([`shared`](Self::shared)).
    pub fn sharing(mut self) -> Self {
        self.shared = Some(Arc::default());
        self
    }

    /// Marks the call as forwarded by instance `instance`.
    pub fn with_forwarded_by(mut self, instance: Option<String>) -> Self {
        self.forwarded_by = instance;
        self
    }

    /// Sets the trace ids.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = trace;
        self
    }
}

/// Whether a caller's `x-request-id` is kept: 1 to
/// [`MAX_REQUEST_ID_LEN`] characters among ASCII letters, digits and
/// `-_.:/+=@`, which covers UUIDs, base64 and most id schemes while
/// keeping log lines and headers free of anything that needs escaping.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// A new request id: a random prefix drawn once per process, then a
/// counter (`3f2a9c10d4e5b6a7-1c`), unique without a random draw per
/// request.
pub fn new_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(33);
    push_hex(&mut id, u128::from(prefix), 16);
    id.push('-');
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    push_hex(&mut id, u128::from(n), digits);
    id
}

/// Appends the low `digits` hex digits of `value`, lowercase, zero-padded:
/// what `{:0width$x}` writes, without the formatting machinery that every
/// request would otherwise pay for twice.
fn push_hex(out: &mut String, value: u128, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        let nibble = (value >> (4 * i)) & 0xf;
        out.push(char::from(HEX[nibble as usize]));
    }
}

/// Whether `value` is a W3C `traceparent` this mediator continues:
/// `version-traceid-parentid-flags` in lowercase hex, the version not
/// `ff`, neither id all zeros; version `00` exactly 55 characters, a later
/// version at least that, its extra fields after a `-`.
pub fn is_valid_traceparent(value: &str) -> bool {
    let b = value.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zeros = |s: &[u8]| s.iter().all(|&c| c == b'0');
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    let length_ok = if version == b"00" {
        b.len() == 55
    } else {
        b.len() == 55 || b[55] == b'-'
    };
    length_ok
        && hex(version)
        && version != b"ff"
        && hex(trace)
        && !zeros(trace)
        && hex(parent)
        && !zeros(parent)
        && hex(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn request_ids_are_kept_when_well_formed() {
        for good in [
            "a",
            "order-17",
            "123e4567-e89b-12d3-a456-426614174000",
            "x/y+z=@:.",
        ] {
            assert!(is_valid_request_id(good), "{good}");
        }
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in ["", "has space", "quote\"", "new\nline", "é", long.as_str()] {
            assert!(!is_valid_request_id(bad), "{bad:?}");
        }
        assert!(is_valid_request_id(&"a".repeat(MAX_REQUEST_ID_LEN)));
    }

    #[test]
    fn hex_is_written_as_the_formatter_writes_it() {
        for value in [
            0u128,
            1,
            0xf,
            0x10,
            0xdead_beef,
            u128::from(u64::MAX),
            u128::MAX,
        ] {
            for digits in [1usize, 16, 32] {
                let mut ours = String::new();
                push_hex(&mut ours, value, digits);
                let theirs = format!("{value:0digits$x}");
                assert_eq!(
                    ours,
                    theirs[theirs.len() - digits..],
                    "{value:x} in {digits}"
                );
            }
        }
    }

    #[test]
    fn new_request_ids_differ_and_are_valid() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(is_valid_request_id(&a) && is_valid_request_id(&b));
        assert_eq!(
            a.split('-').next(),
            b.split('-').next(),
            "one prefix per process"
        );
    }

    #[test]
    fn traceparents_are_checked_as_w3c_says() {
        assert!(is_valid_traceparent(CALLER));
        assert!(is_valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        ));
        for bad in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn the_mediator_is_a_hop_of_the_callers_trace() {
        let trace = TraceContext::accept(None, Some(CALLER));
        let passed = trace.traceparent.as_deref().expect("always set");
        assert!(is_valid_traceparent(passed), "{passed}");
        assert_eq!(trace.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_ne!(trace.parent_id(), Some("00f067aa0ba902b7"));
        assert!(passed.ends_with("-01"), "flags kept: {passed}");
        assert!(trace.request_id.as_deref().is_some_and(is_valid_request_id));

        let unsampled = CALLER.replace("-01", "-00");
        let trace = TraceContext::accept(None, Some(&unsampled));
        assert!(trace
            .traceparent
            .as_deref()
            .is_some_and(|t| t.ends_with("-00")));

        let started = TraceContext::accept(Some("r-1"), Some("not a traceparent"));
        let passed = started.traceparent.as_deref().expect("always set");
        assert!(is_valid_traceparent(passed), "{passed}");
        assert_ne!(started.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(started.request_id.as_deref(), Some("r-1"));
    }
}
