//! The original project's payload cipher, so Rust nodes can talk to its Node
//! children.
//!
//! # Insecure: compatibility only
//!
//! **This cipher has no integrity protection.** AES-256-CBC without a MAC is
//! malleable: whoever relays a payload (the mediator included) can flip
//! chosen bits of the plaintext, replay it, or send it to another node, and
//! the receiver cannot tell. The key comes from one unsalted MD5 of a
//! passphrase. Use it only to exchange payloads with the original's
//! children; between Rust nodes use [`KeyRing`](crate::KeyRing), which
//! authenticates every payload and binds it to sender, target and path.
//! For the same reason [`LegacyCipher`] does not implement
//! [`Cipher`](crate::Cipher): it cannot honour the AAD contract.
//!
//! # Format
//!
//! key = the 32 ASCII bytes of the lowercase hex MD5 digest of the
//! passphrase; a random 16-byte IV per message; PKCS#7 padding; the text
//! form is `hex(iv) + ":" + hex(ciphertext)`.

use std::fmt;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes::Aes256;
use md5::{Digest, Md5};
use rand::rngs::OsRng;
use rand::RngCore;

use crate::error::CipherError;

type Encryptor = cbc::Encryptor<Aes256>;
type Decryptor = cbc::Decryptor<Aes256>;

/// The AES block and IV length.
const BLOCK: usize = 16;

/// The original's AES-256-CBC cipher. **Insecure (no integrity); for
/// compatibility with the original's Node children only.**
///
/// `Debug` does not show the key.
///
/// ```
/// use mediator_core::cipher::legacy::LegacyCipher;
/// let cipher = LegacyCipher::new("the PROTECTED_AES256 passphrase");
/// let text = cipher.encrypt(br#"{"hello":"world"}"#);
/// assert_eq!(cipher.decrypt(&text).unwrap(), br#"{"hello":"world"}"#);
/// ```
#[derive(Clone)]
pub struct LegacyCipher {
    key: [u8; 32],
}

impl LegacyCipher {
    /// The cipher for a passphrase (the original's `PROTECTED_AES256`).
    pub fn new(passphrase: &str) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Md5::digest(passphrase.as_bytes());
        // The original uses the 32-digit lowercase hex text of the digest
        // itself as the key, so the key is those ASCII bytes.
        let mut key = [0u8; 32];
        for (pair, byte) in key.chunks_exact_mut(2).zip(digest.iter()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        LegacyCipher { key }
    }

    /// Encrypts under a fresh random IV; returns `hex(iv):hex(ciphertext)`.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        let mut iv = [0u8; BLOCK];
        OsRng.fill_bytes(&mut iv);
        self.encrypt_with_iv(plaintext, iv)
    }

    /// Encrypts under the given IV. Never reuse an IV for real traffic; this
    /// exists for known-answer tests.
    pub fn encrypt_with_iv(&self, plaintext: &[u8], iv: [u8; BLOCK]) -> String {
        let ciphertext =
            Encryptor::new(&self.key.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        format!("{}:{}", hex::encode(iv), hex::encode(ciphertext))
    }

    /// Decrypts `hex(iv):hex(ciphertext)`.
    ///
    /// Fails with [`CipherError::Refused`] on a missing colon, bad hex, an IV that
    /// is not 16 bytes, a ciphertext that is not whole blocks, or bad
    /// padding. A wrong passphrase is usually caught by the padding check,
    /// but about one time in 256 it yields garbage instead: this format
    /// cannot tell, which is one more reason it is for compatibility only.
    pub fn decrypt(&self, text: &str) -> Result<Vec<u8>, CipherError> {
        let (iv, ciphertext) = text.split_once(':').ok_or_else(|| {
            CipherError::Refused(
                "legacy payload has no ':' between the IV and the ciphertext".into(),
            )
        })?;
        let iv = hex::decode(iv)
            .map_err(|e| CipherError::Refused(format!("legacy payload's IV is not hex ({e})")))?;
        let iv: [u8; BLOCK] = iv.as_slice().try_into().map_err(|_| {
            CipherError::Refused(format!(
                "legacy payload's IV is {} bytes, it must be {BLOCK}",
                iv.len()
            ))
        })?;
        let ciphertext = hex::decode(ciphertext).map_err(|e| {
            CipherError::Refused(format!("legacy payload's ciphertext is not hex ({e})"))
        })?;
        if ciphertext.is_empty() || ciphertext.len() % BLOCK != 0 {
            return Err(CipherError::Refused(format!(
                "legacy payload's ciphertext is {} bytes, not a positive multiple of {BLOCK}",
                ciphertext.len()
            )));
        }
        Decryptor::new(&self.key.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
            .map_err(|_| {
                CipherError::Refused(
                    "legacy payload has bad padding (wrong passphrase or damaged text)".into(),
                )
            })
    }
}

impl fmt::Debug for LegacyCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LegacyCipher { .. }")
    }
}

#[cfg(test)]
mod tests {
    //! The vectors in `legacy_vectors.json` were computed with the OpenSSL
    //! command line and cross-checked with Python's `cryptography` package,
    //! by `gen_legacy_vectors.py` next to this file (see the README there):
    //!
    //! ```text
    //! key_hex=$(printf '%s' "$passphrase" | openssl dgst -md5 -r | cut -c1-32 | tr -d '\n' | od -An -tx1 | tr -d ' \n')
    //! printf '%s' "$plaintext" | openssl enc -aes-256-cbc -K "$key_hex" -iv "$iv" | od -An -tx1 | tr -d ' \n'
    //! ```

    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        passphrase: String,
        key_ascii: String,
        iv: String,
        plaintext: String,
        expected: String,
    }

    fn vectors() -> Vec<Vector> {
        let vectors: Vec<Vector> =
            serde_json::from_str(include_str!("legacy_vectors.json")).expect("vector file");
        assert!(vectors.len() >= 6);
        vectors
    }

    fn iv(v: &Vector) -> [u8; BLOCK] {
        hex::decode(&v.iv)
            .expect("hex")
            .try_into()
            .expect("16 bytes")
    }

    fn refusal(r: Result<Vec<u8>, CipherError>) -> String {
        match r {
            Err(CipherError::Refused(why)) => why,
            other => panic!("expected CipherError::Refused, got {other:?}"),
        }
    }

    #[test]
    fn key_is_the_ascii_hex_md5() {
        for v in vectors() {
            assert_eq!(
                LegacyCipher::new(&v.passphrase).key,
                v.key_ascii.as_bytes(),
                "{:?}",
                v.passphrase
            );
        }
    }

    #[test]
    fn encrypt_with_iv_matches_every_vector() {
        for v in vectors() {
            let got =
                LegacyCipher::new(&v.passphrase).encrypt_with_iv(v.plaintext.as_bytes(), iv(&v));
            assert_eq!(got, v.expected, "{:?}", v.passphrase);
        }
    }

    #[test]
    fn decrypt_every_vector() {
        for v in vectors() {
            let cipher = LegacyCipher::new(&v.passphrase);
            assert_eq!(
                cipher.decrypt(&v.expected).expect("decrypts"),
                v.plaintext.as_bytes()
            );
            // The original writes lowercase hex; uppercase reads the same.
            assert_eq!(
                cipher
                    .decrypt(&v.expected.to_uppercase())
                    .expect("decrypts"),
                v.plaintext.as_bytes()
            );
        }
    }

    #[test]
    fn random_ivs_round_trip() {
        let cipher = LegacyCipher::new("pass");
        let a = cipher.encrypt(b"{}");
        let b = cipher.encrypt(b"{}");
        assert_ne!(a, b);
        assert_eq!(cipher.decrypt(&a).expect("a"), b"{}");
        assert_eq!(cipher.decrypt(&b).expect("b"), b"{}");
    }

    #[test]
    fn decrypt_refuses_bad_input() {
        let cipher = LegacyCipher::new("secret");
        let good = cipher.encrypt_with_iv(b"{\"a\":1}", [7; BLOCK]);
        let (iv_hex, ct_hex) = good.split_once(':').expect("colon");

        let why = refusal(cipher.decrypt(&good.replace(':', "")));
        assert!(why.contains("no ':'"), "{why}");
        let why = refusal(cipher.decrypt(&format!("zz{}:{ct_hex}", &iv_hex[2..])));
        assert!(why.contains("IV is not hex"), "{why}");
        let why = refusal(cipher.decrypt(&format!("{}:{ct_hex}", &iv_hex[..30])));
        assert!(why.contains("IV is 15 bytes, it must be 16"), "{why}");
        let why = refusal(cipher.decrypt(&format!("{iv_hex}00:{ct_hex}")));
        assert!(why.contains("IV is 17 bytes"), "{why}");
        let why = refusal(cipher.decrypt(&format!("{iv_hex}:{}x", &ct_hex[1..])));
        assert!(why.contains("ciphertext is not hex"), "{why}");
        let why = refusal(cipher.decrypt(&format!("{iv_hex}:{}", &ct_hex[2..])));
        assert!(why.contains("ciphertext is 15 bytes"), "{why}");
        let why = refusal(cipher.decrypt(&format!("{iv_hex}:")));
        assert!(why.contains("ciphertext is 0 bytes"), "{why}");
        let why = refusal(cipher.decrypt(""));
        assert!(why.contains("no ':'"), "{why}");

        // A last block whose padding is wrong: a block of 16 bytes that
        // decrypts to a final byte of zero under this key and IV.
        let bad_padding = cipher.encrypt_with_iv(&[0u8; BLOCK], [7; BLOCK]);
        let (iv2, ct2) = bad_padding.split_once(':').expect("colon");
        // Drop the full padding block, leaving a block ending in 0x00.
        let why = refusal(cipher.decrypt(&format!("{iv2}:{}", &ct2[..32])));
        assert!(why.contains("bad padding"), "{why}");
    }

    #[test]
    fn wrong_passphrase_is_refused_or_garbled() {
        for v in vectors() {
            let other = LegacyCipher::new(&format!("{}!", v.passphrase));
            match other.decrypt(&v.expected) {
                Err(CipherError::Refused(why)) => assert!(why.contains("bad padding"), "{why}"),
                Ok(garbage) => assert_ne!(garbage, v.plaintext.as_bytes()),
                Err(other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let cipher = LegacyCipher::new("secret");
        let shown = format!("{cipher:?}");
        assert!(!shown.contains("5ebe2294"), "{shown}");
    }
}
