//! Encryption at rest: every value the node stores — Raft log entries, the
//! application's values (stored data, change logs, lost-write records, the
//! control plane's records) and therefore snapshot files, which copy them —
//! is sealed with AES-256-GCM before it reaches the storage engine.
//!
//! Keys are envelope-style: a *key-encryption key* (KEK) comes from a key file
//! (`meridian-kek-v1 <64 hex digits>`; a layout a KMS can later supply), and
//! wraps randomly generated *data keys*, which seal the values. Wrapped data
//! keys are stored in the engine (keyspace `at_rest_keys`) and travel inside
//! snapshot files, so a node that installs a snapshot learns the keys its
//! values are sealed with — every node of a shard shares the KEK, never a
//! data key in clear.
//!
//! A sealed value is `0xE5, format 1, key id (u64 BE), nonce (12), ciphertext
//! and tag (16)`; the key id is authenticated as associated data. Storage keys
//! stay in clear (the engine orders and seeks by them): namespace names and
//! user keys are visible on disk, values are not.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Values sealed under one data key before a new one is made. AES-GCM with
/// random 96-bit nonces stays within its collision bound (2^-32) up to 2^32
/// messages per key; rotating at 2^28 keeps a wide margin. (A node also
/// makes a new data key every time it starts, so the count need not survive
/// restarts.)
pub const ROTATE_AFTER_SEALS: u64 = 1 << 28;

/// First byte of a sealed value.
const MAGIC: u8 = 0xE5;
/// Format of a sealed value.
const FORMAT: u8 = 1;
/// Bytes in front of the ciphertext.
const HEADER: usize = 2 + 8 + NONCE_LEN;
/// First line of a key file.
const KEY_FILE_TAG: &str = "meridian-kek-v1";

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn aes_key(bytes: &[u8]) -> io::Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| invalid("an AES-256 key must be 32 bytes"))
}

/// Reads a key file: `meridian-kek-v1` and 64 hex digits (32 bytes).
pub fn read_key_file(path: &Path) -> io::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("encryption key file {}: {e}", path.display()),
        )
    })?;
    let mut words = text.split_whitespace();
    let (Some(KEY_FILE_TAG), Some(hex_key), None) = (words.next(), words.next(), words.next())
    else {
        return Err(invalid(format!(
            "encryption key file {}: expected `{KEY_FILE_TAG} <64 hex digits>`",
            path.display()
        )));
    };
    let bytes = hex::decode(hex_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            invalid(format!(
                "encryption key file {}: the key must be 64 hex digits (32 bytes)",
                path.display()
            ))
        })?;
    Ok(bytes)
}

/// Writes a new random key file (mode 0600); refuses to replace one.
pub fn create_key_file(path: &Path) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| io::Error::other("no randomness"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{KEY_FILE_TAG} {}\n", hex::encode(key)).as_bytes())?;
    file.sync_all()
}

/// The keys of one node: the KEK, and every data key it knows by id.
struct Keyring {
    kek: LessSafeKey,
    keys: RwLock<BTreeMap<u64, (LessSafeKey, Vec<u8>)>>,
    current: RwLock<u64>,
    /// Values sealed under `current` by this process.
    sealed_under_current: AtomicU64,
    random: SystemRandom,
}

/// Seals and opens stored values (or passes them through when encryption at
/// rest is off).
pub struct Sealer {
    keyring: Option<Keyring>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Sealer")
            .field("on", &self.is_on())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Encryption at rest off: values are stored as they are.
    pub fn plain() -> Self {
        Self { keyring: None }
    }

    /// Encryption at rest with `kek` and no data keys yet.
    pub fn with_kek(kek: &[u8; 32]) -> io::Result<Self> {
        Ok(Self {
            keyring: Some(Keyring {
                kek: aes_key(kek)?,
                keys: RwLock::new(BTreeMap::new()),
                current: RwLock::new(0),
                sealed_under_current: AtomicU64::new(0),
                random: SystemRandom::new(),
            }),
        })
    }

    /// Whether values are sealed.
    pub fn is_on(&self) -> bool {
        self.keyring.is_some()
    }

    fn keyring(&self) -> io::Result<&Keyring> {
        self.keyring.as_ref().ok_or_else(|| {
            invalid("this data is encrypted at rest, but the node has no encryption key file (node.encryption_key_file)")
        })
    }

    fn nonce(keyring: &Keyring) -> io::Result<[u8; NONCE_LEN]> {
        let mut nonce = [0u8; NONCE_LEN];
        keyring
            .random
            .fill(&mut nonce)
            .map_err(|_| io::Error::other("no randomness for a nonce"))?;
        Ok(nonce)
    }

    /// Makes a new random data key, makes it the one new values are sealed
    /// with, and returns its id and wrapped form (to store).
    pub fn new_data_key(&self) -> io::Result<(u64, Vec<u8>)> {
        let keyring = self.keyring()?;
        let mut key = [0u8; 32];
        keyring
            .random
            .fill(&mut key)
            .map_err(|_| io::Error::other("no randomness for a key"))?;
        let mut id_bytes = [0u8; 8];
        keyring
            .random
            .fill(&mut id_bytes)
            .map_err(|_| io::Error::other("no randomness for a key id"))?;
        let id = u64::from_be_bytes(id_bytes);
        let nonce = Self::nonce(keyring)?;
        let mut wrapped = key.to_vec();
        keyring
            .kek
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.to_be_bytes()),
                &mut wrapped,
            )
            .map_err(|_| io::Error::other("wrapping a data key failed"))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&wrapped);
        self.learn(id, &stored)?;
        *keyring.current.write().unwrap_or_else(|e| e.into_inner()) = id;
        keyring.sealed_under_current.store(0, Ordering::Relaxed);
        Ok((id, stored))
    }

    /// Adds a wrapped data key (from storage or a snapshot); fails if this
    /// node's KEK did not wrap it.
    pub fn learn(&self, id: u64, wrapped: &[u8]) -> io::Result<()> {
        let keyring = self.keyring()?;
        let (nonce, sealed) = wrapped
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(|| invalid("a wrapped data key is too short"))?;
        let mut buffer = sealed.to_vec();
        let key = keyring
            .kek
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(id.to_be_bytes()),
                &mut buffer,
            )
            .map_err(|_| {
                invalid(format!(
                    "data key {id:016x} was not wrapped by this node's key-encryption key (is the key file the shard's?)"
                ))
            })?;
        let key = aes_key(key)?;
        keyring
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (key, wrapped.to_vec()));
        Ok(())
    }

    /// Makes `id` (a known key) the one new values are sealed with.
    pub fn use_key(&self, id: u64) -> io::Result<()> {
        let keyring = self.keyring()?;
        if !keyring
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
        {
            return Err(invalid(format!("unknown data key {id:016x}")));
        }
        *keyring.current.write().unwrap_or_else(|e| e.into_inner()) = id;
        keyring.sealed_under_current.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The id of the data key new values are sealed with (`None` when
    /// encryption at rest is off).
    pub fn current_key(&self) -> Option<u64> {
        self.keyring
            .as_ref()
            .map(|k| *k.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the current data key has sealed [`ROTATE_AFTER_SEALS`] values.
    pub fn rotation_due(&self) -> bool {
        self.keyring
            .as_ref()
            .is_some_and(|k| k.sealed_under_current.load(Ordering::Relaxed) >= ROTATE_AFTER_SEALS)
    }

    /// The id of the data key a stored value is sealed with, from its
    /// header (`None` for a value that is not sealed).
    pub fn key_of(stored: &[u8]) -> Option<u64> {
        if stored.len() < HEADER + 16 || stored[0] != MAGIC || stored[1] != FORMAT {
            return None;
        }
        stored
            .get(2..10)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    }

    /// `stored` sealed again under the current key, if it is sealed under
    /// another one (`None`: already current, or not sealed at all).
    pub fn reseal(&self, stored: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let (Some(current), Some(id)) = (self.current_key(), Self::key_of(stored)) else {
            return Ok(None);
        };
        if id == current {
            return Ok(None);
        }
        let plain = self.open(stored)?.into_owned();
        self.seal(plain).map(Some)
    }

    /// Every known data key, wrapped (for snapshot files).
    pub fn wrapped_keys(&self) -> Vec<(u64, Vec<u8>)> {
        self.keyring
            .as_ref()
            .map(|k| {
                k.keys
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(id, (_, wrapped))| (*id, wrapped.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The stored form of `plain` (itself, unchanged, when encryption at
    /// rest is off: no copy on the write path).
    pub fn seal(&self, plain: Vec<u8>) -> io::Result<Vec<u8>> {
        let Some(keyring) = &self.keyring else {
            return Ok(plain);
        };
        let id = *keyring.current.read().unwrap_or_else(|e| e.into_inner());
        let keys = keyring.keys.read().unwrap_or_else(|e| e.into_inner());
        let (key, _) = keys
            .get(&id)
            .ok_or_else(|| io::Error::other("no data key to seal with"))?;
        keyring.sealed_under_current.fetch_add(1, Ordering::Relaxed);
        let nonce = Self::nonce(keyring)?;
        let mut out = Vec::with_capacity(HEADER + plain.len() + 16);
        out.push(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plain;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id.to_be_bytes()),
            &mut body,
        )
        .map_err(|_| io::Error::other("sealing failed"))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plain form of a stored value.
    pub fn open<'a>(&self, stored: &'a [u8]) -> io::Result<Cow<'a, [u8]>> {
        // Off: the engine refused to open encrypted data without its key
        // file, so what is stored is plain.
        let Some(keyring) = &self.keyring else {
            return Ok(Cow::Borrowed(stored));
        };
        if stored.len() < HEADER + 16 || stored[0] != MAGIC || stored[1] != FORMAT {
            return Err(invalid(
                "a stored value is not sealed (or its format is unknown)",
            ));
        }
        let id = u64::from_be_bytes(stored[2..10].try_into().map_err(|_| invalid("short"))?);
        let nonce: [u8; NONCE_LEN] = stored[10..HEADER]
            .try_into()
            .map_err(|_| invalid("short"))?;
        let keys = keyring.keys.read().unwrap_or_else(|e| e.into_inner());
        let (key, _) = keys
            .get(&id)
            .ok_or_else(|| invalid(format!("a value is sealed with unknown data key {id:016x}")))?;
        let mut body = stored[HEADER..].to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.to_be_bytes()),
                &mut body,
            )
            .map_err(|_| {
                invalid(format!(
                    "a value sealed with key {id:016x} fails authentication"
                ))
            })?;
        let length = plain.len();
        body.truncate(length);
        Ok(Cow::Owned(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_round_trip_and_resist_tampering() {
        let sealer = Sealer::with_kek(&[7; 32]).unwrap();
        sealer.new_data_key().unwrap();
        let sealed = sealer.seal(b"marker-value".to_vec()).unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"marker-value"));
        assert_eq!(&*sealer.open(&sealed).unwrap(), b"marker-value");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer.open(&tampered).is_err());
        assert!(
            sealer.open(b"\x01plain").is_err(),
            "plain data where sealed is expected"
        );
        assert_eq!(&*Sealer::plain().open(b"\x01x").unwrap(), b"\x01x");
        let err = Sealer::plain().learn(1, &[0; 60]).unwrap_err();
        assert!(err.to_string().contains("encryption key file"), "{err}");
    }

    #[test]
    fn keys_travel_wrapped_and_only_the_same_kek_unwraps_them() {
        let writer = Sealer::with_kek(&[1; 32]).unwrap();
        let (id, wrapped) = writer.new_data_key().unwrap();
        let sealed = writer.seal(b"v".to_vec()).unwrap();
        let same_kek = Sealer::with_kek(&[1; 32]).unwrap();
        same_kek.learn(id, &wrapped).unwrap();
        assert_eq!(&*same_kek.open(&sealed).unwrap(), b"v");
        let other_kek = Sealer::with_kek(&[2; 32]).unwrap();
        assert!(other_kek.learn(id, &wrapped).is_err());
        assert!(other_kek.open(&sealed).is_err());
        // A new key seals new values; old ones stay readable.
        writer.new_data_key().unwrap();
        let newer = writer.seal(b"w".to_vec()).unwrap();
        assert_ne!(newer[2..10], sealed[2..10]);
        assert_eq!(&*writer.open(&sealed).unwrap(), b"v");
        assert_eq!(writer.wrapped_keys().len(), 2);
        // Resealing moves an old value under the current key, unchanged.
        let moved = writer.reseal(&sealed).unwrap().expect("under an old key");
        assert_eq!(Sealer::key_of(&moved), writer.current_key());
        assert_eq!(&*writer.open(&moved).unwrap(), b"v");
        assert_eq!(writer.reseal(&moved).unwrap(), None, "already current");
        assert_eq!(writer.reseal(b"plain").unwrap(), None, "not sealed");
        assert!(!writer.rotation_due());
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        create_key_file(&path).unwrap();
        assert!(create_key_file(&path).is_err(), "never replaced");
        read_key_file(&path).unwrap();
        std::fs::write(&path, "meridian-kek-v1 abcd\n").unwrap();
        assert!(
            read_key_file(&path)
                .unwrap_err()
                .to_string()
                .contains("64 hex digits")
        );
    }
}
