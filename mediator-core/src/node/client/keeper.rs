//! Staying joined: the background task that joins again, renews and backs
//! off when the core's [`Lease`] says, over any [`Wire`].

use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::Clock;

use super::super::{Action, Lease};
use super::{Join, Lost, Renewal, Wire};

/// What the keeper works with.
pub(super) struct Keeper<W> {
    pub(super) wire: Arc<W>,
    pub(super) join: Join,
    pub(super) clock: Arc<dyn Clock>,
}

impl<W: Wire> Keeper<W> {
    /// What the log names the node as.
    fn who(&self) -> String {
        match &self.join.node {
            Some(member) => member.key.to_string(),
            None => "(caller)".to_owned(),
        }
    }

    /// Keeps the join alive as `lease` says until `stop` changes or its
    /// sender goes. `held`: the last join holds itself (no renewals), and
    /// only [`Wire::lost`] says when it ends.
    pub(super) async fn run(
        self,
        mut lease: Lease,
        mut held: bool,
        mut stop: watch::Receiver<bool>,
    ) {
        let who = self.who();
        // Whether the last join stands (so the wire can lose it).
        let mut joined = true;
        loop {
            let step = lease.next(self.clock.now());
            // A join the wire holds needs nothing until it is lost.
            let due = !(joined && held && step.action == Action::Renew);
            tokio::select! {
                () = self.clock.sleep_until(step.at), if due => {}
                lost = self.wire.lost(), if joined => {
                    joined = false;
                    match lost {
                        Lost::Superseded(why) => {
                            tracing::warn!(node = %who, reason = %why, "superseded by a newer registration; not joining again");
                            return;
                        }
                        Lost::Dropped(why) => {
                            tracing::warn!(node = %who, reason = %why, "lost the mediator; joining again");
                            lease.failed(self.clock.now());
                            continue;
                        }
                    }
                }
                _ = stop.changed() => return,
            }
            // The lease ran from no earlier than the request was sent.
            let sent = self.clock.now();
            match step.action {
                Action::Renew => match self.wire.renew(&self.join).await {
                    Ok(Renewal::Renewed(granted)) => {
                        tracing::debug!(node = %who, ttl_s = granted.as_secs(), "lease renewed");
                        lease.renewed(sent, sent + granted);
                    }
                    Ok(Renewal::Forgotten) => {
                        tracing::info!(node = %who, "the mediator does not know this node; registering again");
                        lease.forgotten(self.clock.now());
                    }
                    Err(error) => {
                        tracing::warn!(node = %who, %error, "lease renewal failed");
                        lease.failed(self.clock.now());
                    }
                },
                Action::Register => match self.wire.join(&self.join).await {
                    Ok(done) => {
                        if lease.failures() > 0 {
                            tracing::info!(node = %who, after = lease.failures(), "joined again");
                        }
                        joined = true;
                        held = done.lease.is_none();
                        let granted = done.lease.unwrap_or_else(|| lease.ttl());
                        lease.registered(sent, sent + granted);
                    }
                    Err(error) => {
                        joined = false;
                        lease.failed(self.clock.now());
                        tracing::warn!(node = %who, %error, attempt = lease.failures(), "joining failed; backing off");
                    }
                },
            }
        }
    }
}
