//! One backup object: a run of records, compressed and sealed.
//!
//! Stored bytes: `b"MDRC"`, format (1 byte), nonce (12 bytes), then the
//! AES-256-GCM ciphertext and tag of the zstd-compressed postcard encoding
//! of the records. The backup id and the object's index are authenticated as
//! associated data, so an object moved to another place of the same backup,
//! or into another backup, fails to open.

use crate::DrError;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// First bytes of every chunk object.
const MAGIC: &[u8; 4] = b"MDRC";
/// The chunk format this code writes and reads.
pub const CHUNK_FORMAT: u8 = 1;
/// zstd level: fast enough to keep up with a disk, still a good ratio.
const ZSTD_LEVEL: i32 = 3;

/// A backup's data key, and sealing with it.
pub struct DataKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn aes(bytes: &[u8]) -> Result<LessSafeKey, DrError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| DrError::Crypto("a key must be 32 bytes".into()))
}

impl DataKey {
    /// A new random key, and its form wrapped by `kek` (to keep in the
    /// manifest): nonce then ciphertext and tag, the backup id authenticated.
    pub fn generate(kek: &[u8; 32], backup_id: &str) -> Result<(Self, Vec<u8>), DrError> {
        let random = SystemRandom::new();
        let mut key = [0u8; 32];
        random
            .fill(&mut key)
            .map_err(|_| DrError::Crypto("no randomness for a data key".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        random
            .fill(&mut nonce)
            .map_err(|_| DrError::Crypto("no randomness for a nonce".into()))?;
        let mut wrapped = key.to_vec();
        aes(kek)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(backup_id.as_bytes()),
                &mut wrapped,
            )
            .map_err(|_| DrError::Crypto("wrapping the data key failed".into()))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&wrapped);
        Ok((
            Self {
                key: aes(&key)?,
                random,
            },
            stored,
        ))
    }

    /// The key `wrapped` holds, if `kek` wrapped it for `backup_id`.
    pub fn unwrap(kek: &[u8; 32], backup_id: &str, wrapped: &[u8]) -> Result<Self, DrError> {
        let (nonce, sealed) = wrapped
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(|| DrError::Crypto("the wrapped data key is too short".into()))?;
        let mut buffer = sealed.to_vec();
        let key = aes(kek)?
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(backup_id.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| {
                DrError::Crypto(format!(
                    "the data key of backup {backup_id} was not wrapped by this key-encryption key (is the key file the cluster's?)"
                ))
            })?;
        Ok(Self {
            key: aes(key)?,
            random: SystemRandom::new(),
        })
    }

    /// The stored bytes of object `index` of `backup_id` holding `records`
    /// (key records of a full backup, or changes of an incremental one).
    pub fn seal<T: Serialize>(
        &self,
        backup_id: &str,
        index: u32,
        records: &[T],
    ) -> Result<Vec<u8>, DrError> {
        let plain = postcard::to_stdvec(records)
            .map_err(|e| DrError::Crypto(format!("encoding records: {e}")))?;
        let mut body = zstd::bulk::compress(&plain, ZSTD_LEVEL)
            .map_err(|e| DrError::Crypto(format!("compressing: {e}")))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| DrError::Crypto("no randomness for a nonce".into()))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(backup_id, index)),
                &mut body,
            )
            .map_err(|_| DrError::Crypto("sealing failed".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + 1 + NONCE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(CHUNK_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The records in object `index` of `backup_id`; `Err` with the reason
    /// when it is not one (its place, key or bytes do not match).
    /// `max_plain_bytes` bounds the decompressed size (from the manifest).
    pub fn open<T: DeserializeOwned>(
        &self,
        backup_id: &str,
        index: u32,
        stored: &[u8],
        max_plain_bytes: usize,
    ) -> Result<Vec<T>, String> {
        let header = MAGIC.len() + 1 + NONCE_LEN;
        if stored.len() < header + 16 || &stored[..MAGIC.len()] != MAGIC {
            return Err("not a backup chunk".into());
        }
        if stored[MAGIC.len()] != CHUNK_FORMAT {
            return Err(format!(
                "chunk format {} is not supported (this build reads {CHUNK_FORMAT})",
                stored[MAGIC.len()]
            ));
        }
        let nonce: [u8; NONCE_LEN] = stored[MAGIC.len() + 1..header]
            .try_into()
            .map_err(|_| "short nonce".to_string())?;
        let mut body = stored[header..].to_vec();
        let compressed = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(backup_id, index)),
                &mut body,
            )
            .map_err(|_| {
                "it fails authentication (altered, or not this backup's object at this place)"
                    .to_string()
            })?;
        let plain = zstd::bulk::decompress(compressed, max_plain_bytes)
            .map_err(|e| format!("it does not decompress: {e}"))?;
        postcard::from_bytes(&plain).map_err(|e| format!("its records do not decode: {e}"))
    }
}

fn associated(backup_id: &str, index: u32) -> Vec<u8> {
    let mut aad = backup_id.as_bytes().to_vec();
    aad.push(0);
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    fn records() -> Vec<Record> {
        (0..100u64)
            .map(|i| Record {
                key: format!("k{i}").into_bytes(),
                version: i,
                value: format!("SECRET-MARKER-{i}").into_bytes(),
            })
            .collect()
    }

    #[test]
    fn a_chunk_of_format_1_still_opens() {
        // The golden sample: a chunk of backup "golden" at index 0, its data
        // key wrapped by KEK [5; 32].
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/formats");
        let kek = [5u8; 32];
        let expected = records()[..3].to_vec();
        if std::env::var_os("MERIDIAN_BLESS_FORMATS").is_some() {
            let (key, wrapped) = DataKey::generate(&kek, "golden").unwrap();
            std::fs::write(dir.join("dr-chunk-v1.key"), &wrapped).unwrap();
            std::fs::write(
                dir.join("dr-chunk-v1.bin"),
                key.seal("golden", 0, &expected).unwrap(),
            )
            .unwrap();
        }
        let wrapped = std::fs::read(dir.join("dr-chunk-v1.key")).unwrap();
        let stored = std::fs::read(dir.join("dr-chunk-v1.bin")).unwrap();
        assert_eq!(&stored[..5], b"MDRC\x01");
        let key = DataKey::unwrap(&kek, "golden", &wrapped).unwrap();
        assert_eq!(
            key.open::<Record>("golden", 0, &stored, 1 << 20).unwrap(),
            expected
        );
    }

    #[test]
    fn chunks_round_trip_and_refuse_another_place_or_key() {
        let kek = [3u8; 32];
        let (key, wrapped) = DataKey::generate(&kek, "b1").unwrap();
        let sealed = key.seal("b1", 0, &records()).unwrap();
        assert!(
            !sealed.windows(13).any(|w| w == b"SECRET-MARKER"),
            "records in clear"
        );
        let again = DataKey::unwrap(&kek, "b1", &wrapped).unwrap();
        assert_eq!(
            again.open::<Record>("b1", 0, &sealed, 1 << 20).unwrap(),
            records()
        );
        // Another index, another backup, another KEK, altered bytes.
        assert!(again.open::<Record>("b1", 1, &sealed, 1 << 20).is_err());
        assert!(again.open::<Record>("b2", 0, &sealed, 1 << 20).is_err());
        assert!(DataKey::unwrap(&[4u8; 32], "b1", &wrapped).is_err());
        assert!(DataKey::unwrap(&kek, "b2", &wrapped).is_err());
        let mut altered = sealed.clone();
        let middle = altered.len() / 2;
        altered[middle] ^= 1;
        assert!(again.open::<Record>("b1", 0, &altered, 1 << 20).is_err());
        // A chunk that would decompress beyond the bound is refused.
        assert!(again.open::<Record>("b1", 0, &sealed, 10).is_err());
    }
}
