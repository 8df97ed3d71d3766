//! The original project's side of an exchange, for nodes that talk to its
//! Node children (feature `legacy`).
//!
//! **Insecure; for compatibility only.** The original's payloads are
//! encrypted with [`LegacyCipher`] (AES-256-CBC without a MAC) and carry no
//! authenticated sender, target or path: whoever relays one can alter,
//! replay or re-route it. Between Rust nodes use the native
//! [`open_request`](super::open_request) and [`seal_request`](super::seal_request).
//!
//! A payload is `encrypt(JSON.stringify(data))` in the cipher's text form,
//! whatever carries it; the original's tokens name no node and live nine
//! hours. The envelopes around payloads (`{"fromCluster", "fromNode",
//! "payload"}` requests, `{"payload"}` replies, `409 {"error"}` refusals)
//! belong to the original's HTTP dialect and live with the HTTP transport.

use std::time::Duration;

use serde_json::Value;

use crate::auth::Claims;
use crate::cipher::legacy::LegacyCipher;
use crate::error::Error;
use crate::time::Timestamp;

/// How long the original's tokens live.
pub const ORIGINAL_TOKEN_LIFETIME: Duration = Duration::from_secs(9 * 60 * 60);

/// The claims of a token as the original's libraries mint it at `now`: no
/// identity, only `iat` and `exp` ([`ORIGINAL_TOKEN_LIFETIME`] later).
///
/// A mediator accepts such tokens only when told to
/// ([`Authenticator::allow_tokens_without_sub`](crate::Authenticator::allow_tokens_without_sub)),
/// and then treats the sender as unverified.
///
/// ```
/// use mediator_core::node::legacy::original_claims;
/// use mediator_core::Timestamp;
/// let claims = original_claims(Timestamp::from_millis(1_000_000));
/// assert_eq!((claims.sub, claims.iat, claims.exp), (None, 1_000, 1_000 + 9 * 3600));
/// ```
pub fn original_claims(now: Timestamp) -> Claims {
    Claims {
        sub: None,
        exp: (now + ORIGINAL_TOKEN_LIFETIME).as_secs(),
        iat: now.as_secs(),
        nbf: None,
        scope: None,
    }
}

/// Encrypts `data` as the original does: its JSON text under a fresh IV,
/// in the cipher's `hex(iv):hex(ciphertext)` form.
///
/// ```
/// use mediator_core::cipher::legacy::LegacyCipher;
/// use mediator_core::node::legacy::{open_payload, seal_payload};
/// use serde_json::json;
///
/// let cipher = LegacyCipher::new("the PROTECTED_AES256 passphrase");
/// let payload = seal_payload(&cipher, &json!({"id": 42}));
/// assert_eq!(open_payload(&cipher, &payload)?, json!({"id": 42}));
/// assert!(open_payload(&LegacyCipher::new("another"), &payload).is_err());
/// # Ok::<(), mediator_core::Error>(())
/// ```
pub fn seal_payload(cipher: &LegacyCipher, data: &Value) -> String {
    cipher.encrypt(data.to_string().as_bytes())
}

/// Decrypts a payload and parses its JSON.
///
/// A payload that does not decrypt fails as the cipher refuses it (kind
/// `sealed`); one that decrypts to something other than JSON (a wrong
/// passphrase slips past the padding check about one time in 256) fails
/// as invalid.
pub fn open_payload(cipher: &LegacyCipher, payload: &str) -> Result<Value, Error> {
    let plain = cipher.decrypt(payload)?;
    serde_json::from_slice(&plain)
        .map_err(|_| Error::invalid("payload", "the decrypted payload is not JSON"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_round_trip_and_refuse_what_is_not_theirs() {
        let cipher = LegacyCipher::new("secret");
        let data = json!({"n": 1, "s": "é", "list": [1, 2, null]});
        let payload = seal_payload(&cipher, &data);
        assert_ne!(payload, seal_payload(&cipher, &data), "fresh IV each time");
        assert_eq!(open_payload(&cipher, &payload).expect("opens"), data);

        let not_json = cipher.encrypt(b"not json");
        let e = open_payload(&cipher, &not_json).expect_err("not JSON");
        assert_eq!((e.status(), e.kind()), (400, "invalid"));
        for bad in ["", "00:00", "zz:zz"] {
            let e = open_payload(&cipher, bad).expect_err(bad);
            assert_eq!(e.status(), 400, "{bad}");
        }
    }

    #[test]
    fn original_tokens_name_no_node() {
        let now = Timestamp::from_millis(1_700_000_000_500);
        let claims = original_claims(now);
        assert_eq!(claims.sub, None);
        assert_eq!(claims.iat, 1_700_000_000);
        assert_eq!(claims.exp, 1_700_000_000 + 9 * 60 * 60);
        assert_eq!(claims.scope, None);
    }
}
