//! Staying registered over HTTP: the `/register`, `/renew` and `/remove`
//! calls, and the background task that makes them when the core's
//! [`Lease`] says.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use mediator_core::node::{Action, Lease, TokenSource};
use mediator_core::{Clock, Meta, NodeKey};
use serde_json::json;
use tokio::sync::watch;

use super::transport::{mediator_error, request, Answer, Transport};
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

/// One node's registration as the mediator holds it: what to register, and
/// the calls that keep it.
#[derive(Debug, Clone)]
pub(crate) struct Keeper {
    pub(crate) link: Arc<Link>,
    pub(crate) key: NodeKey,
    pub(crate) url: String,
    pub(crate) ttl: Duration,
    pub(crate) meta: Meta,
    /// What the lease keeper reads the time from and waits on.
    pub(crate) clock: Arc<dyn Clock>,
}

/// The lease in whole seconds, as the wire carries it (rounded up so a
/// sub-second remainder never shortens it).
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

/// The lease the mediator granted, from the `ttl` (whole seconds) of its
/// answer; `asked` when it did not say or said something unusable, so a
/// strange answer never makes the node renew in a tight loop.
fn granted(answer: &serde_json::Value, asked: Duration) -> Duration {
    answer
        .get("ttl")
        .and_then(serde_json::Value::as_u64)
        .filter(|secs| *secs > 0)
        .map_or(asked, Duration::from_secs)
}

impl Keeper {
    fn key_json(&self) -> serde_json::Value {
        json!({ "group": self.key.group(), "name": self.key.name() })
    }

    /// Registers (or re-registers) the node; returns the lease granted.
    pub(crate) async fn register(&self) -> Result<Duration, HttpError> {
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
            _ => match parsed.get("entity") {
                None => Err(HttpError::Protocol(
                    "register answered without an entity".into(),
                )),
                Some(entity) => Ok(granted(entity, self.ttl)),
            },
        }
    }

    /// Renews the lease and returns the lease granted; `Ok(None)` when the
    /// mediator does not know the node (it should register again).
    pub(crate) async fn renew(&self) -> Result<Option<Duration>, HttpError> {
        let mut body = self.key_json();
        body["ttl"] = json!(ttl_secs(self.ttl));
        let answer = self.link.post_json("/renew", &body).await?;
        match answer.status {
            StatusCode::OK => {
                // The lease is renewed whatever the body says; an unreadable
                // one only means the asked lease is assumed.
                let parsed = serde_json::from_slice(&answer.body).unwrap_or_default();
                Ok(Some(granted(&parsed, self.ttl)))
            }
            StatusCode::NOT_FOUND => Ok(None),
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

    /// Keeps the registration alive as `lease` says until `stop` changes
    /// or its sender goes.
    pub(crate) async fn run(self, mut lease: Lease, mut stop: watch::Receiver<bool>) {
        loop {
            let step = lease.next(self.clock.now());
            tokio::select! {
                () = self.clock.sleep_until(step.at) => {}
                _ = stop.changed() => return,
            }
            // The lease ran from no earlier than the request was sent.
            let sent = self.clock.now();
            match step.action {
                Action::Renew => match self.renew().await {
                    Ok(Some(granted)) => {
                        tracing::debug!(node = %self.key, ttl_s = granted.as_secs(), "lease renewed");
                        lease.renewed(sent, sent + granted);
                    }
                    Ok(None) => {
                        tracing::info!(node = %self.key, "the mediator does not know this node; registering again");
                        lease.forgotten(self.clock.now());
                    }
                    Err(error) => {
                        tracing::warn!(node = %self.key, %error, "lease renewal failed");
                        lease.failed(self.clock.now());
                    }
                },
                Action::Register => match self.register().await {
                    Ok(granted) => {
                        if lease.failures() > 0 {
                            tracing::info!(node = %self.key, after = lease.failures(), "registered again");
                        }
                        lease.registered(sent, sent + granted);
                    }
                    Err(error) => {
                        lease.failed(self.clock.now());
                        tracing::warn!(node = %self.key, %error, attempt = lease.failures(), "registration failed; backing off");
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_leases_are_read_or_assumed() {
        let asked = Duration::from_secs(30);
        for (answer, expected) in [
            (json!({"ttl": 9}), 9),
            (json!({"ttl": 0}), 30),
            (json!({"ttl": "9"}), 30),
            (json!({"lease_until": "2030-01-01T00:00:00.000Z"}), 30),
            (json!(null), 30),
        ] {
            assert_eq!(
                granted(&answer, asked),
                Duration::from_secs(expected),
                "{answer}"
            );
        }
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_secs(Duration::from_secs(3)), 3);
        assert_eq!(ttl_secs(Duration::from_millis(3001)), 4);
    }
}
