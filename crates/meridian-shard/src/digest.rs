//! Integrity digests of a namespace's contents.
//!
//! The digest covers every key, version and value in key order, each field
//! length-prefixed so that no two different contents hash alike by shifting bytes
//! between fields. It is independent of the node, the log and the storage layout,
//! so any two copies — replicas, an export and its import, later a standby — can
//! compare it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Digest format; part of the value so that copies with different formats never
/// look equal.
const DIGEST_FORMAT: &[u8] = b"meridian-namespace-digest-v1";

/// Incremental digest over entries fed in key order.
pub struct NamespaceDigest {
    hasher: Sha256,
    count: u64,
}

impl Default for NamespaceDigest {
    fn default() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_FORMAT);
        Self { hasher, count: 0 }
    }
}

impl NamespaceDigest {
    /// Adds one entry; entries must arrive in ascending key order.
    pub fn add(&mut self, key: &[u8], version: u64, value: &[u8]) {
        self.hasher.update((key.len() as u64).to_be_bytes());
        self.hasher.update(key);
        self.hasher.update(version.to_be_bytes());
        self.hasher.update((value.len() as u64).to_be_bytes());
        self.hasher.update(value);
        self.count += 1;
    }

    /// Entries added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The hex digest, including the entry count.
    pub fn finish(self) -> String {
        let mut hasher = self.hasher;
        hasher.update(self.count.to_be_bytes());
        hex::encode(hasher.finalize())
    }
}

/// Domain of [`ContentSum`] entry hashes; differs from [`DIGEST_FORMAT`] so
/// an entry hash is never mistaken for a digest.
const CONTENT_SUM_FORMAT: &[u8] = b"meridian-content-sum-v1";

/// An order-independent digest of a namespace's entries that the state
/// machine keeps up to date with every write: the sum, modulo 2^256, of one
/// SHA-256 hash per `(key, version, value)`.
///
/// A write adds its new entry's hash and subtracts the one it replaced, so
/// the sum is always at hand without reading the namespace; a drained move
/// compares two copies' sums instead of scanning both while writes wait.
/// Because the sum does not depend on order, a full scan recomputes it, and
/// every full integrity check compares the kept sum with the recomputed one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentSum([u64; 4]);

impl ContentSum {
    fn entry_hash(key: &[u8], version: u64, value: &[u8]) -> [u64; 4] {
        let mut hasher = Sha256::new();
        hasher.update(CONTENT_SUM_FORMAT);
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key);
        hasher.update(version.to_be_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
        let bytes: [u8; 32] = hasher.finalize().into();
        // Little-endian limbs: limb 0 is the least significant.
        let mut limbs = [0u64; 4];
        for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(chunk);
            *limb = u64::from_le_bytes(eight);
        }
        limbs
    }

    fn add_limbs(&mut self, other: [u64; 4]) {
        let mut carry = false;
        for (mine, theirs) in self.0.iter_mut().zip(other) {
            let (sum, c1) = mine.overflowing_add(theirs);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *mine = sum;
            carry = c1 || c2;
        }
    }

    fn sub_limbs(&mut self, other: [u64; 4]) {
        let mut borrow = false;
        for (mine, theirs) in self.0.iter_mut().zip(other) {
            let (diff, b1) = mine.overflowing_sub(theirs);
            let (diff, b2) = diff.overflowing_sub(u64::from(borrow));
            *mine = diff;
            borrow = b1 || b2;
        }
    }

    /// Counts an entry in.
    pub fn add(&mut self, key: &[u8], version: u64, value: &[u8]) {
        self.add_limbs(Self::entry_hash(key, version, value));
    }

    /// Counts an entry out (the inverse of [`ContentSum::add`]).
    pub fn remove(&mut self, key: &[u8], version: u64, value: &[u8]) {
        self.sub_limbs(Self::entry_hash(key, version, value));
    }

    /// Adds what another sum counts (a batch of changes' delta).
    pub fn merge(&mut self, delta: ContentSum) {
        self.add_limbs(delta.0);
    }

    /// Big-endian hex, as reported.
    pub fn to_hex(&self) -> String {
        let mut bytes = Vec::with_capacity(32);
        for limb in self.0.iter().rev() {
            bytes.extend(limb.to_be_bytes());
        }
        hex::encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_matter() {
        let mut a = NamespaceDigest::default();
        a.add(b"ab", 1, b"c");
        let mut b = NamespaceDigest::default();
        b.add(b"a", 1, b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn versions_matter() {
        let mut a = NamespaceDigest::default();
        a.add(b"k", 1, b"v");
        let mut b = NamespaceDigest::default();
        b.add(b"k", 2, b"v");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn content_sums_ignore_order_and_undo_exactly() {
        let entries: Vec<(Vec<u8>, u64, Vec<u8>)> = (0..50u64)
            .map(|i| {
                (
                    format!("k{i}").into_bytes(),
                    i + 1,
                    vec![i as u8; (i * 7) as usize],
                )
            })
            .collect();
        let mut forward = ContentSum::default();
        for (k, v, val) in &entries {
            forward.add(k, *v, val);
        }
        let mut backward = ContentSum::default();
        for (k, v, val) in entries.iter().rev() {
            backward.add(k, *v, val);
        }
        assert_eq!(forward, backward);
        assert_ne!(forward, ContentSum::default());
        // Overwriting then restoring an entry leaves the sum as it was.
        let mut overwritten = forward;
        overwritten.remove(b"k3", 4, &[3u8; 21]);
        overwritten.add(b"k3", 99, b"new");
        assert_ne!(overwritten, forward);
        overwritten.remove(b"k3", 99, b"new");
        overwritten.add(b"k3", 4, &[3u8; 21]);
        assert_eq!(overwritten, forward);
        // Removing everything (carries and borrows across limbs) is zero.
        for (k, v, val) in &entries {
            forward.remove(k, *v, val);
        }
        assert_eq!(forward, ContentSum::default());
        assert_eq!(forward.to_hex(), "0".repeat(64));
    }

    #[test]
    fn content_sum_deltas_merge() {
        let mut whole = ContentSum::default();
        whole.add(b"a", 1, b"x");
        whole.add(b"b", 2, b"y");
        let mut delta = ContentSum::default();
        delta.remove(b"a", 1, b"x");
        delta.add(b"a", 3, b"z");
        whole.merge(delta);
        let mut direct = ContentSum::default();
        direct.add(b"b", 2, b"y");
        direct.add(b"a", 3, b"z");
        assert_eq!(whole, direct);
        // Fields stay apart here too.
        let mut shifted = ContentSum::default();
        shifted.add(b"ab", 1, b"c");
        let mut other = ContentSum::default();
        other.add(b"a", 1, b"bc");
        assert_ne!(shifted, other);
    }
}
