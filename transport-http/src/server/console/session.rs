//! The console's sessions: a bounded table of signed-in operators, each
//! behind a random cookie and with its own token against cross-site
//! requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mediator_core::auth::Identity;
use mediator_core::Timestamp;
use rand::rngs::OsRng;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// How long a session lasts from sign-in (shorter when the admin token it
/// was opened with expires first).
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Sessions open at once; past it the oldest goes first, so a flood of
/// sign-ins cannot grow memory (every sign-in needs the password anyway).
pub(crate) const MAX_SESSIONS: usize = 1_000;

/// The cookie's name.
pub(crate) const COOKIE: &str = "mediator_session";

/// 256 random bits from the operating system, base64url: the session id
/// and the anti-forgery token are both drawn this way.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One signed-in operator.
#[derive(Debug)]
pub(crate) struct Session {
    /// Who signed in, as the mediator's `Authenticate` policy saw it.
    pub(crate) identity: Identity,
    /// Sent back in `x-csrf-token` on every state-changing request.
    pub(crate) csrf: String,
    /// When it ends, on the process's monotonic clock.
    expires: Instant,
    /// When it ends, as wall time, for the page.
    pub(crate) expires_at: Timestamp,
    /// Whether it was opened with the password (else with a token).
    pub(crate) by_password: bool,
}

impl Session {
    /// Whether `offered` is this session's anti-forgery token, compared in
    /// constant time.
    pub(crate) fn csrf_matches(&self, offered: &[u8]) -> bool {
        self.csrf.as_bytes().ct_eq(offered).into()
    }
}

/// The table of sessions, keyed by cookie value.
///
/// Lookups go through a `HashMap` with its per-process random hasher, so
/// their timing tells nothing about other sessions' ids; the ids are 256
/// random bits, far beyond guessing.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// Opens a session for `identity` at wall time `now`; returns its id
    /// (the cookie's value) and the session.
    pub(crate) fn open(
        &self,
        identity: Identity,
        by_password: bool,
        now: Timestamp,
    ) -> (String, Arc<Session>) {
        let left = now.until(identity.expires).min(SESSION_LIFETIME);
        let session = Arc::new(Session {
            csrf: random_token(),
            expires: Instant::now() + left,
            expires_at: now + left,
            identity,
            by_password,
        });
        let id = random_token();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= MAX_SESSIONS {
            let now = Instant::now();
            open.retain(|_, s| s.expires > now);
        }
        if open.len() >= MAX_SESSIONS {
            // Still full of live sessions: the one closest to its end goes,
            // which is the oldest of those opened with the full lifetime.
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                open.remove(&oldest);
                tracing::warn!(
                    max = MAX_SESSIONS,
                    "console session table full; closed the oldest session"
                );
            }
        }
        open.insert(id.clone(), Arc::clone(&session));
        (id, session)
    }

    /// The live session under `id`; an expired one is dropped.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let session = open.get(id)?;
        if session.expires <= Instant::now() {
            open.remove(id);
            return None;
        }
        Some(Arc::clone(session))
    }

    /// Ends the session under `id`; returns whether there was one.
    pub(crate) fn close(&self, id: &str) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(id).is_some()
    }

    /// How many sessions are open (expired ones not yet dropped included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_expire_close_and_stay_bounded() {
        let sessions = Sessions::default();
        let now = Timestamp::now();
        let (id, session) = sessions.open(Identity::internal(), true, now);
        assert_eq!(id.len(), 43, "256 bits in base64url");
        assert_ne!(id, session.csrf);
        assert!(session.csrf_matches(session.csrf.as_bytes()));
        assert!(!session.csrf_matches(b"guess"));
        assert_eq!(session.expires_at, now + SESSION_LIFETIME);
        assert!(sessions.get(&id).is_some());
        assert!(sessions.get("another").is_none());

        // A token that expires sooner shortens the session; one already
        // expired opens a session that is gone at once.
        let mut short = Identity::internal();
        short.expires = now;
        let (gone, _) = sessions.open(short, false, now);
        assert!(sessions.get(&gone).is_none());

        for _ in 0..MAX_SESSIONS + 10 {
            sessions.open(Identity::internal(), true, now);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.close(&id) || sessions.get(&id).is_none());
        assert!(!sessions.close(&id));
    }
}
