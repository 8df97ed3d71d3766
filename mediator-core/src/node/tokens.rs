//! Where a node client's bearer tokens come from.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Claims, Clock, Error, NodeKey, Timestamp, TokenMinter};

/// How long a token a client mints for itself lives, over every transport.
///
/// A QUIC attachment lasts as long as the token its hello carried (the
/// listener closes the connection when it expires), so a shorter lifetime
/// would tear every attachment down and set it up again that much more
/// often; an hour keeps that rare while a leaked token is still soon
/// useless.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// A cached token is replaced once less than this is left of it, so a
/// token never expires between being read and being checked.
pub const REMINT_MARGIN: Duration = Duration::from_secs(60);

/// Where a node client's bearer tokens come from: one fixed token given by
/// the operator, or tokens minted on demand with the node's identity, on
/// the clock the client was built with.
///
/// ```
/// use std::sync::Arc;
/// use mediator_core::node::{TokenSource, TOKEN_LIFETIME};
/// use mediator_core::{Authenticator, Clock, ManualClock, NodeKey, Timestamp};
///
/// let auth = Authenticator::hs256("a test secret that is long enough");
/// let clock = ManualClock::new(Timestamp::from_millis(1_000_000_000));
/// let key = NodeKey::named("users", "api").unwrap();
/// let tokens = TokenSource::minted(auth.minter().unwrap(), Some(key.clone()), Arc::new(clock.clone()));
/// let token = tokens.token().unwrap();
/// assert_eq!(tokens.token().unwrap(), token); // cached
/// assert!(auth.authenticate(&token, clock.now()).unwrap().is_node(&key));
/// // Past its lifetime and the verifier's leeway for skew.
/// clock.advance(TOKEN_LIFETIME + mediator_core::auth::DEFAULT_LEEWAY);
/// assert!(auth.authenticate(&token, clock.now()).is_err());
/// assert_ne!(tokens.token().unwrap(), token); // minted again on the same clock
/// ```
pub struct TokenSource {
    kind: Kind,
}

enum Kind {
    Fixed(String),
    Minted {
        minter: TokenMinter,
        /// `None` mints the original's kind of token (no identity).
        sub: Option<NodeKey>,
        clock: Arc<dyn Clock>,
        cache: Mutex<Option<(String, Timestamp)>>,
    },
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token itself is a credential; it stays out of logs.
        match &self.kind {
            Kind::Fixed(_) => f.write_str("TokenSource::Fixed"),
            Kind::Minted { sub, .. } => f
                .debug_struct("TokenSource::Minted")
                .field("sub", sub)
                .finish_non_exhaustive(),
        }
    }
}

impl TokenSource {
    /// One token, sent as it is.
    pub fn fixed(token: impl Into<String>) -> TokenSource {
        TokenSource {
            kind: Kind::Fixed(token.into()),
        }
    }

    /// Tokens minted by `minter` for `sub`, each living [`TOKEN_LIFETIME`]
    /// from the time `clock` reads.
    pub fn minted(minter: TokenMinter, sub: Option<NodeKey>, clock: Arc<dyn Clock>) -> TokenSource {
        TokenSource {
            kind: Kind::Minted {
                minter,
                sub,
                clock,
                cache: Mutex::new(None),
            },
        }
    }

    /// A token valid for at least [`REMINT_MARGIN`] from now: the cached
    /// one while it is, else a new one. For credentials sent with every
    /// request.
    pub fn token(&self) -> Result<String, Error> {
        match &self.kind {
            Kind::Fixed(token) => Ok(token.clone()),
            Kind::Minted {
                minter,
                sub,
                clock,
                cache,
            } => {
                let now = clock.now();
                // A poisoned cache only means a panic elsewhere while it was
                // held; the cached value is still whole.
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((token, expires)) = cache.as_ref() {
                    if now.until(*expires) > REMINT_MARGIN {
                        return Ok(token.clone());
                    }
                }
                let token = mint(minter, sub.as_ref(), now)?;
                *cache = Some((token.clone(), now + TOKEN_LIFETIME));
                Ok(token)
            }
        }
    }

    /// A token minted now, never a cached one (the fixed token when there
    /// is one). For a credential that lasts as long as a connection: a
    /// cached token could end the connection soon after it began.
    pub fn fresh(&self) -> Result<String, Error> {
        match &self.kind {
            Kind::Fixed(token) => Ok(token.clone()),
            Kind::Minted {
                minter, sub, clock, ..
            } => mint(minter, sub.as_ref(), clock.now()),
        }
    }
}

fn mint(minter: &TokenMinter, sub: Option<&NodeKey>, now: Timestamp) -> Result<String, Error> {
    let claims = match sub {
        Some(key) => Claims::node(key, now, TOKEN_LIFETIME),
        None => Claims {
            sub: None,
            exp: (now + TOKEN_LIFETIME).as_secs(),
            iat: now.as_secs(),
            nbf: None,
            scope: None,
        },
    };
    Ok(minter.mint(&claims)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authenticator, ManualClock};

    fn auth() -> Authenticator {
        Authenticator::hs256("a test secret that is long enough")
    }

    #[test]
    fn tokens_are_cached_until_the_margin_and_read_the_given_clock() {
        let auth = auth();
        // Far from the system time, so a source reading the system clock
        // would mint tokens this check refuses.
        let clock = ManualClock::new(Timestamp::from_millis(2_000_000_000_000));
        let key = NodeKey::named("g", "n").expect("key");
        let source = TokenSource::minted(
            auth.minter().expect("hs256 mints"),
            Some(key.clone()),
            Arc::new(clock.clone()),
        );
        let first = source.token().expect("mint");
        assert!(auth
            .authenticate(&first, clock.now())
            .expect("valid")
            .is_node(&key));

        clock.advance(TOKEN_LIFETIME - REMINT_MARGIN - Duration::from_secs(1));
        assert_eq!(source.token().expect("cached"), first);
        clock.advance(Duration::from_secs(2));
        let second = source.token().expect("minted again");
        assert_ne!(second, first);
        assert!(auth.authenticate(&second, clock.now()).is_ok());
    }

    #[test]
    fn fresh_tokens_are_minted_now_and_anonymous_ones_carry_no_identity() {
        let auth = auth();
        let clock = ManualClock::new(Timestamp::from_millis(2_000_000_000_000));
        let source =
            TokenSource::minted(auth.minter().expect("mints"), None, Arc::new(clock.clone()));
        let cached = source.token().expect("mint");
        clock.advance(Duration::from_secs(5));
        let fresh = source.fresh().expect("mint");
        assert_ne!(fresh, cached);
        assert!(auth.authenticate(&fresh, clock.now()).is_err());
        let who = auth
            .allow_tokens_without_sub(true)
            .authenticate(&fresh, clock.now())
            .expect("the original's kind");
        assert!(!who.verified);

        let fixed = TokenSource::fixed("t");
        assert_eq!(
            (fixed.token().expect("t"), fixed.fresh().expect("t")),
            ("t".into(), "t".into())
        );
        assert_eq!(format!("{fixed:?}"), "TokenSource::Fixed");
    }
}
