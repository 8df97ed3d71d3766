//! Sealing payloads end to end between nodes: AES-256-GCM under a key ring.
//!
//! Nodes share the node key; the mediator never holds it. A sender seals its
//! payload with [`Cipher::seal`], the mediator routes the opaque bytes, and
//! the receiver opens them with [`Cipher::open`]. The additional
//! authenticated data ([`aad`]) binds the sender, the target and the path,
//! so a payload that the mediator re-attributes, re-routes or replays under
//! another path no longer opens.
//!
//! # Sealed format
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version, `0x01` |
//! | 4 | key id, big-endian (see below) |
//! | 12 | random nonce |
//! | n + 16 | AES-256-GCM ciphertext of the n-byte plaintext, then the tag |
//!
//! A sealed payload is therefore always [`SEALED_OVERHEAD`] (33) bytes longer
//! than its plaintext.
//!
//! # Key ids
//!
//! The key id is the key's check value: the first 4 bytes of the AES-256
//! encryption of one all-zero 16-byte block under the key. Every node derives
//! the same id from the same key without any extra configuration, so keys
//! rotate by listing the new key first on every node and dropping the old one
//! once no sealed payload under it is in flight. The id reveals nothing
//! useful about the key (it is one AES output on a fixed input) and is not a
//! secret; two different keys share an id with probability 2^-32, in which
//! case [`KeyRing`] tries each of them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::cipher::{generic_array::GenericArray, BlockEncrypt};
use aes_gcm::aes::Aes256;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::error::CipherError;
use crate::model::NodeKey;

#[cfg(feature = "legacy")]
pub mod legacy;

/// The format version this build writes and reads.
const VERSION: u8 = 0x01;
/// A key's length in bytes.
const KEY_LEN: usize = 32;
/// The GCM nonce length (96 bits).
const NONCE_LEN: usize = 12;
/// The GCM tag length.
const TAG_LEN: usize = 16;
/// Version byte, key id, nonce.
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// How many bytes sealing adds to a plaintext: header (version, key id,
/// nonce) and tag.
pub const SEALED_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The domain label that starts every [`aad`], so these bytes can never be
/// mistaken for the AAD of another protocol or of a later format.
const AAD_LABEL: &[u8] = b"mediator/1";

/// Seals and opens payloads with additional authenticated data.
///
/// Implemented by [`KeyRing`]; node clients hold one and the mediator never
/// does. `open` must refuse anything that `seal` did not produce under the
/// same key and the same `aad`.
pub trait Cipher: Send + Sync + 'static {
    /// Encrypts and authenticates `plaintext`, binding `aad` to it.
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError>;
    /// Checks and decrypts a sealed payload; fails with [`CipherError::Refused`] if
    /// it was altered, sealed under another key or with another `aad`.
    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError>;
}

impl<C: Cipher + ?Sized> Cipher for Arc<C> {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        (**self).seal(plaintext, aad)
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        (**self).open(sealed, aad)
    }
}

/// The additional authenticated data for a payload from `from` to `target`
/// at `path`.
///
/// `from` is the verified sender (`None` when there is none), `target` is the
/// target's display form as it travels in `x-mediator-target` (`users/api`,
/// `cache/*`, `cache/?`), and `path` is the request path; anything from the
/// first `?` on is ignored, so passing the path with its query gives the same
/// bytes as passing the bare path.
///
/// The encoding is unambiguous: the label `mediator/1`, then the sender (empty
/// for none), the target and the path, each field preceded by its length as a
/// 32-bit big-endian integer. No two different triples give the same bytes.
///
/// ```
/// use mediator_core::cipher::aad;
/// use mediator_core::NodeKey;
/// let from = NodeKey::named("billing", "worker-1").unwrap();
/// let a = aad(Some(&from), "users/api", "/lookup?id=1");
/// assert_eq!(a, aad(Some(&from), "users/api", "/lookup"));
/// assert_ne!(a, aad(None, "users/api", "/lookup"));
/// ```
pub fn aad(from: Option<&NodeKey>, target: &str, path: &str) -> Vec<u8> {
    let from = from.map(ToString::to_string).unwrap_or_default();
    let path = path.split_once('?').map_or(path, |(bare, _)| bare);
    let fields: [&[u8]; 4] = [
        AAD_LABEL,
        from.as_bytes(),
        target.as_bytes(),
        path.as_bytes(),
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| 4 + f.len()).sum());
    for field in fields {
        // Fields longer than 4 GiB cannot occur (targets and paths are
        // bounded far below); saturating keeps the function total anyway.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// A 32-byte AES-256-GCM key for sealing payloads.
///
/// Written as standard base64 (44 characters); `Debug` shows only the key
/// id, never the key.
///
/// ```
/// use mediator_core::SealKey;
/// let key = SealKey::generate();
/// let again = SealKey::from_base64(&key.to_base64()).unwrap();
/// assert_eq!(key.id(), again.id());
/// assert!(!format!("{key:?}").contains(&key.to_base64()));
/// ```
#[derive(Clone)]
pub struct SealKey {
    bytes: [u8; KEY_LEN],
}

impl SealKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> SealKey {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        SealKey { bytes }
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SealKey {
        SealKey { bytes }
    }

    /// Parses a key written in standard base64 (padding optional,
    /// surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<SealKey, CipherError> {
        // Keys are pasted from files and environment variables, where a
        // trailing newline or a dropped `=` is common and harmless.
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let text = text.trim();
        if text.is_empty() {
            return Err(CipherError::Key("the key is empty".into()));
        }
        let decoded = LENIENT
            .decode(text)
            .map_err(|e| CipherError::Key(format!("not base64 ({e})")))?;
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            CipherError::Key(format!(
                "a key is {KEY_LEN} bytes, this one decodes to {}",
                decoded.len()
            ))
        })?;
        Ok(SealKey { bytes })
    }

    /// The key in standard base64 with padding, as [`from_base64`](Self::from_base64) reads it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// The key id: the first 4 bytes, big-endian, of the AES-256 encryption
    /// of an all-zero block under this key (its key check value).
    pub fn id(&self) -> u32 {
        let aes = Aes256::new(GenericArray::from_slice(&self.bytes));
        let mut block = GenericArray::from([0u8; 16]);
        aes.encrypt_block(&mut block);
        u32::from_be_bytes([block[0], block[1], block[2], block[3]])
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey {{ id: {:#010x} }}", self.id())
    }
}

impl PartialEq for SealKey {
    /// Constant-time, so comparing keys leaks nothing through timing.
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for SealKey {}

impl FromStr for SealKey {
    type Err = CipherError;
    fn from_str(s: &str) -> Result<Self, CipherError> {
        SealKey::from_base64(s)
    }
}

/// One key of a ring, ready to use.
#[derive(Clone)]
struct RingKey {
    id: u32,
    aead: Aes256Gcm,
}

impl From<SealKey> for RingKey {
    fn from(key: SealKey) -> RingKey {
        RingKey {
            id: key.id(),
            aead: Aes256Gcm::new(GenericArray::from_slice(&key.bytes)),
        }
    }
}

/// The node key and the keys it replaced: seals with the newest, opens with
/// whichever key the sealed header names.
///
/// Rotation without downtime: give every node the ring `[new, old]`, then,
/// once nothing sealed under the old key is in flight, `[new]`. Cloning is
/// cheap; `Debug` shows key ids only.
///
/// ```
/// use mediator_core::cipher::aad;
/// use mediator_core::{Cipher, KeyRing, NodeKey, SealKey};
///
/// let old = SealKey::generate();
/// let new = SealKey::generate();
/// // Every node is configured with the same list, newest first.
/// let list = format!("{},{}", new.to_base64(), old.to_base64());
/// let ring = KeyRing::from_base64_list(&list)?;
///
/// let from = NodeKey::named("billing", "worker-1")?;
/// let ad = aad(Some(&from), "users/api", "/lookup");
/// let sealed = ring.seal(br#"{"id":42}"#, &ad)?;
/// assert_eq!(ring.open(&sealed, &ad)?, br#"{"id":42}"#);
///
/// // Moved to another target, the payload no longer opens.
/// assert!(ring.open(&sealed, &aad(Some(&from), "admin/api", "/lookup")).is_err());
///
/// // A payload sealed before the rotation still opens.
/// let before = KeyRing::new(old).seal(b"hi", &ad)?;
/// assert_eq!(ring.open(&before, &ad)?, b"hi");
/// # Ok::<(), mediator_core::Error>(())
/// ```
#[derive(Clone)]
pub struct KeyRing {
    newest: RingKey,
    older: Arc<Vec<RingKey>>,
}

impl KeyRing {
    /// A ring holding one key, which seals and opens.
    pub fn new(newest: SealKey) -> KeyRing {
        KeyRing {
            newest: newest.into(),
            older: Arc::new(Vec::new()),
        }
    }

    /// Adds an older key, which only opens; older keys are added newest first.
    pub fn with_older(mut self, key: SealKey) -> KeyRing {
        Arc::make_mut(&mut self.older).push(key.into());
        self
    }

    /// Parses a comma-separated list of base64 keys, newest first.
    pub fn from_base64_list(text: &str) -> Result<KeyRing, CipherError> {
        let parts: Vec<&str> = text.split(',').collect();
        let count = parts.len();
        let mut keys = parts.into_iter().enumerate().map(|(i, part)| {
            SealKey::from_base64(part).map_err(|e| match e {
                CipherError::Key(why) if count > 1 => {
                    CipherError::Key(format!("key {} of {count} in the list: {why}", i + 1))
                }
                other => other,
            })
        });
        let newest = match keys.next() {
            Some(first) => first?,
            // `split` always yields at least one part; stay total anyway.
            None => return Err(CipherError::Key("the key list is empty".into())),
        };
        keys.try_fold(KeyRing::new(newest), |ring, key| Ok(ring.with_older(key?)))
    }

    /// The ids of the ring's keys, newest first.
    pub fn key_ids(&self) -> Vec<u32> {
        std::iter::once(self.newest.id)
            .chain(self.older.iter().map(|k| k.id))
            .collect()
    }

    fn keys(&self) -> impl Iterator<Item = &RingKey> {
        std::iter::once(&self.newest).chain(self.older.iter())
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self
            .key_ids()
            .iter()
            .map(|id| format!("{id:#010x}"))
            .collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl FromStr for KeyRing {
    type Err = CipherError;
    fn from_str(s: &str) -> Result<Self, CipherError> {
        KeyRing::from_base64_list(s)
    }
}

impl Cipher for KeyRing {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        // A random 96-bit nonce per message: safe for far more messages per
        // key (2^32) than a node seals between rotations.
        OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(plaintext.len() + SEALED_OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&self.newest.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (_, body) = out.split_at_mut(HEADER_LEN);
        let tag = self
            .newest
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, body)
            .map_err(|_| CipherError::Refused("the plaintext is too large to seal".into()))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        if sealed.len() < SEALED_OVERHEAD {
            return Err(CipherError::Refused(format!(
                "{} bytes is shorter than the {SEALED_OVERHEAD}-byte header and tag",
                sealed.len()
            )));
        }
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let (version, header) = header.split_at(1);
        if version != [VERSION] {
            return Err(CipherError::Refused(format!(
                "unknown format version {:#04x} (this build reads {VERSION:#04x})",
                version.first().copied().unwrap_or_default()
            )));
        }
        let (id, nonce) = header.split_at(4);
        let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let mut candidates = self.keys().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            let held: Vec<String> = self
                .key_ids()
                .iter()
                .map(|i| format!("{i:#010x}"))
                .collect();
            return Err(CipherError::Refused(format!(
                "unknown key id {id:#010x} (this ring holds {})",
                held.join(", ")
            )));
        }
        let nonce = Nonce::from_slice(nonce);
        let tag = Tag::from_slice(tag);
        for key in candidates {
            let mut plain = ciphertext.to_vec();
            if key
                .aead
                .decrypt_in_place_detached(nonce, aad, &mut plain, tag)
                .is_ok()
            {
                return Ok(plain);
            }
        }
        Err(CipherError::Refused(
            "authentication failed: altered, or sealed for another sender, target or path".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealKey {
        SealKey::from_bytes([byte; KEY_LEN])
    }

    fn node(s: &str) -> NodeKey {
        s.parse().expect("valid key")
    }

    fn sealed_err(r: Result<Vec<u8>, CipherError>) -> String {
        match r {
            Err(CipherError::Refused(why)) => why,
            other => panic!("expected CipherError::Refused, got {other:?}"),
        }
    }

    /// Known answer computed with Python's `cryptography` package from the
    /// format's description, independently of this module:
    ///
    /// ```text
    /// key = bytes(range(32)); nonce = bytes(range(100, 112))
    /// lp = lambda b: struct.pack('>I', len(b)) + b
    /// aad = lp(b"mediator/1") + lp(b"billing/worker-1") + lp(b"users/api") + lp(b"/lookup")
    /// e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    /// kcv = (e.update(bytes(16)) + e.finalize())[:4]
    /// sealed = b"\x01" + kcv + nonce + AESGCM(key).encrypt(nonce, b'{"id":42}', aad)
    /// ```
    ///
    /// The key check value was confirmed with `openssl enc -aes-256-ecb -nopad -K 0001…1f`.
    const KAT_AAD: &str = "0000000a6d65646961746f722f310000001062696c6c696e672f776f726b65722d310000000975736572732f617069000000072f6c6f6f6b7570";
    const KAT_SEALED: &str =
        "01f29000b66465666768696a6b6c6d6e6f3339b7025bd362ac437034422ada7c1b5601dc50c80e96e883";

    fn kat_key() -> SealKey {
        let mut bytes = [0u8; KEY_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::try_from(i).expect("small");
        }
        SealKey::from_bytes(bytes)
    }

    #[test]
    fn known_answer_from_an_independent_implementation() {
        let key = kat_key();
        assert_eq!(key.id(), 0xf290_00b6);
        let ad = aad(Some(&node("billing/worker-1")), "users/api", "/lookup");
        assert_eq!(hex::encode(&ad), KAT_AAD);
        let sealed = hex::decode(KAT_SEALED).expect("hex");
        let ring = KeyRing::new(key);
        assert_eq!(ring.open(&sealed, &ad).expect("opens"), br#"{"id":42}"#);
        // Our own output has the same shape: same header up to the nonce.
        let ours = ring.seal(br#"{"id":42}"#, &ad).expect("seal");
        assert_eq!(ours.len(), sealed.len());
        assert_eq!(ours[..5], sealed[..5]);
    }

    #[test]
    fn round_trip() {
        let ring = KeyRing::new(key(1));
        let ad = aad(Some(&node("a/b")), "c/d", "/x");
        let sealed = ring.seal(b"hello", &ad).expect("seal");
        assert_eq!(sealed.len(), 5 + SEALED_OVERHEAD);
        assert_eq!(sealed[0], VERSION);
        assert_eq!(sealed[1..5], key(1).id().to_be_bytes());
        assert_eq!(ring.open(&sealed, &ad).expect("open"), b"hello");
        // Random nonces: sealing twice gives different bytes.
        assert_ne!(ring.seal(b"hello", &ad).expect("seal"), sealed);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let ring = KeyRing::new(key(2));
        let ad = aad(None, "g/?", "/p");
        let sealed = ring
            .seal(b"some payload of a few bytes", &ad)
            .expect("seal");
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                assert!(
                    matches!(ring.open(&bad, &ad), Err(CipherError::Refused(_))),
                    "byte {i} bit {bit:#x} flipped was accepted"
                );
            }
        }
    }

    #[test]
    fn wrong_aad_is_refused() {
        let ring = KeyRing::new(key(3));
        let a = node("billing/worker-1");
        let ad = aad(Some(&a), "users/api", "/lookup");
        let sealed = ring.seal(b"x", &ad).expect("seal");
        for other in [
            aad(Some(&node("billing/worker-2")), "users/api", "/lookup"),
            aad(None, "users/api", "/lookup"),
            aad(Some(&a), "users/other", "/lookup"),
            aad(Some(&a), "users/*", "/lookup"),
            aad(Some(&a), "users/?", "/lookup"),
            aad(Some(&a), "users/api", "/lookup2"),
            aad(Some(&a), "users/api", "/"),
            Vec::new(),
        ] {
            let why = sealed_err(ring.open(&sealed, &other));
            assert!(why.contains("authentication failed"), "{why}");
        }
        // The query does not take part.
        assert!(ring
            .open(&sealed, &aad(Some(&a), "users/api", "/lookup?x=1"))
            .is_ok());
    }

    #[test]
    fn aad_fields_cannot_slide_into_each_other() {
        // Same concatenated text, different split between fields.
        assert_ne!(aad(None, "ab/c", "/d"), aad(None, "ab/c/", "d"));
        assert_ne!(
            aad(Some(&node("a/b")), "c/d", "/e"),
            aad(Some(&node("a/bc")), "/d", "/e")
        );
        assert_ne!(aad(Some(&node("g/")), "t/x", "/"), aad(None, "g/t/x", "/"));
    }

    #[test]
    fn wrong_key_with_the_same_id_is_refused() {
        // A ring whose key differs but claims the sealer's id cannot exist
        // by construction; what can happen is a different key under the
        // same header. Forge that: re-label a payload with another key's id.
        let a = KeyRing::new(key(4));
        let b = KeyRing::new(key(5));
        let mut sealed = a.seal(b"x", b"").expect("seal");
        sealed[1..5].copy_from_slice(&key(5).id().to_be_bytes());
        let why = sealed_err(b.open(&sealed, b""));
        assert!(why.contains("authentication failed"), "{why}");
    }

    #[test]
    fn unknown_key_id_is_named() {
        let sealed = KeyRing::new(key(6)).seal(b"x", b"").expect("seal");
        let why = sealed_err(KeyRing::new(key(7)).open(&sealed, b""));
        let expected = format!("unknown key id {:#010x}", key(6).id());
        assert!(why.contains(&expected), "{why}");
        assert!(why.contains(&format!("{:#010x}", key(7).id())), "{why}");
    }

    #[test]
    fn unknown_version_is_named() {
        let ring = KeyRing::new(key(8));
        let mut sealed = ring.seal(b"x", b"").expect("seal");
        sealed[0] = 0x02;
        let why = sealed_err(ring.open(&sealed, b""));
        assert!(why.contains("unknown format version 0x02"), "{why}");
    }

    #[test]
    fn every_truncation_is_refused() {
        let ring = KeyRing::new(key(9));
        let sealed = ring.seal(b"", b"ad").expect("seal");
        assert_eq!(sealed.len(), SEALED_OVERHEAD);
        for len in 0..SEALED_OVERHEAD {
            let why = sealed_err(ring.open(&sealed[..len], b"ad"));
            assert!(why.contains("shorter than"), "{len}: {why}");
        }
        let longer = ring.seal(b"0123456789", b"ad").expect("seal");
        for len in SEALED_OVERHEAD..longer.len() {
            assert!(ring.open(&longer[..len], b"ad").is_err(), "{len}");
        }
    }

    #[test]
    fn empty_plaintext() {
        let ring = KeyRing::new(key(10));
        let sealed = ring.seal(b"", b"").expect("seal");
        assert_eq!(ring.open(&sealed, b"").expect("open"), b"");
    }

    #[test]
    fn one_mebibyte() {
        let ring = KeyRing::new(SealKey::generate());
        let plain: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let ad = aad(None, "big/*", "/upload");
        let sealed = ring.seal(&plain, &ad).expect("seal");
        assert_eq!(sealed.len(), plain.len() + SEALED_OVERHEAD);
        assert_eq!(ring.open(&sealed, &ad).expect("open"), plain);
    }

    #[test]
    fn rotation() {
        let old = key(11);
        let new = key(12);
        let old_ring = KeyRing::new(old.clone());
        let both = KeyRing::new(new.clone()).with_older(old.clone());
        assert_eq!(both.key_ids(), vec![new.id(), old.id()]);

        let before = old_ring.seal(b"before", b"ad").expect("seal");
        assert_eq!(both.open(&before, b"ad").expect("open"), b"before");

        let after = both.seal(b"after", b"ad").expect("seal");
        assert_eq!(after[1..5], new.id().to_be_bytes());
        assert_eq!(
            KeyRing::new(new).open(&after, b"ad").expect("open"),
            b"after"
        );
        let why = sealed_err(old_ring.open(&after, b"ad"));
        assert!(why.contains("unknown key id"), "{why}");
    }

    #[test]
    fn base64_keys() {
        let key = SealKey::generate();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(SealKey::from_base64(&text).expect("parse"), key);
        assert_eq!(
            SealKey::from_base64(&format!(" {}\n", text.trim_end_matches('='))).expect("parse"),
            key
        );
        assert_eq!(text.parse::<SealKey>().expect("parse"), key);

        let short = STANDARD.encode([0u8; 16]);
        assert_eq!(
            SealKey::from_base64(&short),
            Err(CipherError::Key(
                "a key is 32 bytes, this one decodes to 16".into()
            ))
        );
        match SealKey::from_base64("not*base64!") {
            Err(CipherError::Key(why)) => assert!(why.starts_with("not base64"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            SealKey::from_base64("  "),
            Err(CipherError::Key("the key is empty".into()))
        );
    }

    #[test]
    fn key_lists() {
        let a = SealKey::generate();
        let b = SealKey::generate();
        let ring = KeyRing::from_base64_list(&format!("{}, {}", a.to_base64(), b.to_base64()))
            .expect("list");
        assert_eq!(ring.key_ids(), vec![a.id(), b.id()]);
        let single: KeyRing = a.to_base64().parse().expect("one");
        assert_eq!(single.key_ids(), vec![a.id()]);

        match KeyRing::from_base64_list(&format!("{},AAAA", a.to_base64())) {
            Err(CipherError::Key(why)) => assert_eq!(
                why,
                "key 2 of 2 in the list: a key is 32 bytes, this one decodes to 3"
            ),
            other => panic!("{other:?}"),
        }
        match KeyRing::from_base64_list(&format!("{},", a.to_base64())) {
            Err(CipherError::Key(why)) => {
                assert_eq!(why, "key 2 of 2 in the list: the key is empty");
            }
            other => panic!("{other:?}"),
        }
        match KeyRing::from_base64_list("") {
            Err(CipherError::Key(why)) => assert_eq!(why, "the key is empty"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = SealKey::generate();
        let ring = KeyRing::new(key.clone()).with_older(SealKey::generate());
        let b64 = key.to_base64();
        let hexed = hex::encode(key.bytes);
        for shown in [
            format!("{key:?}"),
            format!("{ring:?}"),
            format!("{ring:#?}"),
        ] {
            assert!(!shown.contains(&b64) && !shown.contains(&hexed), "{shown}");
            assert!(shown.contains(&format!("{:#010x}", key.id())), "{shown}");
        }
    }

    #[test]
    fn works_behind_a_shared_pointer() {
        let ring: Arc<dyn Cipher> = Arc::new(KeyRing::new(key(13)));
        let sealed = ring.seal(b"x", b"").expect("seal");
        assert_eq!(ring.open(&sealed, b"").expect("open"), b"x");
    }
}
