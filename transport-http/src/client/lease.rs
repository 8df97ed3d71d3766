//! Staying registered: register, renew every `ttl/3` with jitter, register
//! again when the mediator forgot the node or comes back, deregister.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use mediator_core::{Meta, NodeKey};
use rand::Rng;
use serde_json::json;
use tokio::sync::watch;

use super::transport::{mediator_error, request, Answer, TokenSource, Transport};
use crate::error::HttpError;

/// What every call to the mediator needs: where it is, how to reach it,
/// and the credentials.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) base: String,
    pub(crate) transport: Transport,
    pub(crate) tokens: TokenSource,
    /// How long the client waits for an answer.
    pub(crate) timeout: Duration,
}

impl Link {
    /// POSTs `body` as JSON to `route` (which starts with `/`).
    pub(crate) async fn post_json(
        &self,
        route: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, HttpError> {
        let url = format!("{}{route}", self.base);
        let token = self.tokens.token()?;
        let req = request(
            Method::POST,
            &url,
            &token,
            "application/json",
            Bytes::from(body.to_string()),
        )?;
        self.transport.send(req, self.timeout).await
    }
}

/// Exponential backoff with full jitter: the wait before retry `n` (from 0)
/// is uniform in `[0, min(max, initial * 2^n)]`, so nodes that lost the
/// mediator at the same moment do not all come back at the same moment.
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
        let ceiling = self.ceiling(attempt);
        rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
    }
}

/// The renewal period for a lease of `ttl`: `ttl/3` shortened by up to a
/// fifth at random, so renewals spread out and two can be lost before the
/// lease runs out.
pub(crate) fn renew_period(ttl: Duration) -> Duration {
    let third = ttl / 3;
    third.mul_f64(rand::thread_rng().gen_range(0.8..=1.0))
}

/// One node's registration, as the background task keeps it alive.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) link: Arc<Link>,
    pub(crate) key: NodeKey,
    pub(crate) url: String,
    pub(crate) ttl: Duration,
    pub(crate) meta: Meta,
    pub(crate) backoff: Backoff,
}

/// The lease in whole seconds, as the wire carries it (rounded up so a
/// sub-second remainder never shortens it).
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

impl Lease {
    fn key_json(&self) -> serde_json::Value {
        json!({ "group": self.key.group(), "name": self.key.name() })
    }

    /// Registers (or re-registers) the node.
    pub(crate) async fn register(&self) -> Result<(), HttpError> {
        let body = json!({
            "group": self.key.group(),
            "name": self.key.name(),
            "url": self.url,
            "ttl": ttl_secs(self.ttl),
            "meta": self.meta,
        });
        let answer = self.link.post_json("/register", &body).await?;
        if answer.status != StatusCode::OK {
            return Err(mediator_error(answer.status, &answer.body));
        }
        // The original's dialect answers validation failures with 200 and
        // a non-empty `errors`; ours with 400, but read both the same way.
        let parsed: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| HttpError::Protocol(format!("register answered non-JSON: {e}")))?;
        match parsed.get("errors") {
            Some(serde_json::Value::Object(errors)) if !errors.is_empty() => {
                Err(HttpError::Mediator {
                    status: 200,
                    kind: "invalid".into(),
                    fault: Some(mediator_core::Fault::Caller),
                    message: serde_json::Value::Object(errors.clone()).to_string(),
                })
            }
            _ if parsed.get("entity").is_none() => Err(HttpError::Protocol(
                "register answered without an entity".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Renews the lease; `Ok(false)` when the mediator does not know the
    /// node (it should register again).
    pub(crate) async fn renew(&self) -> Result<bool, HttpError> {
        let mut body = self.key_json();
        body["ttl"] = json!(ttl_secs(self.ttl));
        let answer = self.link.post_json("/renew", &body).await?;
        match answer.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(mediator_error(status, &answer.body)),
        }
    }

    /// Deregisters the node; returns how many registrations went.
    pub(crate) async fn remove(&self) -> Result<u64, HttpError> {
        let answer = self.link.post_json("/remove", &self.key_json()).await?;
        if answer.status != StatusCode::OK {
            return Err(mediator_error(answer.status, &answer.body));
        }
        let parsed: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| HttpError::Protocol(format!("remove answered non-JSON: {e}")))?;
        parsed
            .get("affected")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| HttpError::Protocol("remove answered without `affected`".into()))
    }

    /// Keeps the registration alive until `stop` changes or its sender
    /// goes. Assumes the node is registered when it starts.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut registered = true;
        let mut failures: u32 = 0;
        loop {
            let wait = if registered {
                renew_period(self.ttl)
            } else {
                self.backoff.delay(failures.saturating_sub(1))
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if registered {
                match self.renew().await {
                    Ok(true) => continue,
                    Ok(false) => {
                        tracing::info!(node = %self.key, "the mediator does not know this node; registering again");
                    }
                    Err(error) => {
                        tracing::warn!(node = %self.key, %error, "lease renewal failed");
                        registered = false;
                        failures = 1;
                        continue;
                    }
                }
            }
            match self.register().await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(node = %self.key, after = failures, "registered again");
                    }
                    registered = true;
                    failures = 0;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    registered = false;
                    tracing::warn!(node = %self.key, %error, attempt = failures, "registration failed; backing off");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(4), Duration::from_secs(1));
        assert_eq!(b.ceiling(1000), Duration::from_secs(1));
        for attempt in 0..40 {
            assert!(b.delay(attempt) <= b.ceiling(attempt));
        }
        // Full jitter: the waits are spread, not all at the cap.
        let waits: Vec<Duration> = (0..200).map(|_| b.delay(10)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_millis(500)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(500)));
    }

    #[test]
    fn renewals_come_before_a_third_of_the_lease() {
        let ttl = Duration::from_secs(30);
        for _ in 0..100 {
            let p = renew_period(ttl);
            assert!(
                p <= Duration::from_secs(10) && p >= Duration::from_secs(8),
                "{p:?}"
            );
        }
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_secs(Duration::from_secs(3)), 3);
        assert_eq!(ttl_secs(Duration::from_millis(3001)), 4);
    }
}
