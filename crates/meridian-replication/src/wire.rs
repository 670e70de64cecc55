//! The bytes a replication request carries: batches of changes and chunks of
//! a full copy, compressed, bounded, and versioned by `payload_format`.
//!
//! | payload | format |
//! |---|---|
//! | batch of changes | 2: zstd(postcard(Vec<ChangeRecord>)); 3: postcard(Vec<ChangeRecord>), not compressed; 0 or 1: zstd(postcard(Vec<ChangeRecordV1>)) |
//! | chunk of a full copy (`resync` set) | zstd(postcard(Vec<VersionedEntry>)) |
//!
//! The golden samples of the batch formats are decoded by the shard's format
//! tests, beside the stored formats that embed the same change records.

use crate::change::{ChangeRecord, ChangeRecordV1, VersionedEntry};
use std::io;

/// Current replication batch format (`ReplicateRequest.payload_format`).
pub const BATCH_FORMAT: u32 = 2;
/// [`BATCH_FORMAT`]'s body without compression: sent when compressing would
/// not make the batch smaller (a batch of one or two small changes, where
/// zstd's frame costs more than it saves), and only to a receiver that said
/// it reads it (`ReplicateResponse.max_payload_format`).
pub const PLAIN_BATCH_FORMAT: u32 = 3;
/// The newest batch format this build decodes (what a receiver answers).
pub const MAX_DECODED_FORMAT: u32 = PLAIN_BATCH_FORMAT;
/// Largest decompressed batch a standby accepts (guards against a batch that
/// would expand without bound).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Changes per batch at most.
pub const MAX_BATCH_CHANGES: usize = 1_024;
/// Key-values per chunk of a full copy.
pub const RESYNC_CHUNK: usize = 2_048;
/// Bytes of keys and values per replication request (a batch of changes or
/// a chunk of a full copy), well under the 8 MiB a node accepts per
/// request; a single change larger than this still goes alone (it fit in
/// the client's request that made it).
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;
/// zstd level: fast, still a good ratio on key-value batches.
const ZSTD_LEVEL: i32 = 3;

fn invalid(what: &str, error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {error}"))
}

/// A batch ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// What the request carries.
    pub payload: Vec<u8>,
    /// Its `payload_format`.
    pub format: u32,
    /// Size of the uncompressed body.
    pub raw_len: usize,
}

/// Encodes a batch for the wire: compressed (format [`BATCH_FORMAT`]), or
/// not ([`PLAIN_BATCH_FORMAT`]) when `plain_ok` (the receiver reads it) and
/// compression would not make it smaller.
pub fn encode_batch(changes: &[ChangeRecord], plain_ok: bool) -> io::Result<EncodedBatch> {
    let raw = postcard::to_stdvec(changes).map_err(io::Error::other)?;
    let compressed = zstd::bulk::compress(&raw, ZSTD_LEVEL)?;
    let raw_len = raw.len();
    Ok(if plain_ok && raw_len <= compressed.len() {
        EncodedBatch {
            payload: raw,
            format: PLAIN_BATCH_FORMAT,
            raw_len,
        }
    } else {
        EncodedBatch {
            payload: compressed,
            format: BATCH_FORMAT,
            raw_len,
        }
    })
}

/// Whether batches may go as [`PLAIN_BATCH_FORMAT`] after the receiver's
/// latest answer: only when it answered and said it reads that format. A
/// failed call counts as "not known": the receiver may now be another member
/// (a new leader) of an older build, which would refuse every plain batch;
/// the next answer (to a compressed heartbeat) says again.
pub fn sends_plain(answered_max_format: Option<u32>) -> bool {
    answered_max_format.is_some_and(|max| max >= PLAIN_BATCH_FORMAT)
}

/// Decodes a batch of `format` from the wire, refusing one that expands past
/// [`MAX_BATCH_BYTES`].
pub fn decode_batch(payload: &[u8], format: u32) -> io::Result<Vec<ChangeRecord>> {
    if format == PLAIN_BATCH_FORMAT {
        if payload.len() > MAX_BATCH_BYTES {
            return Err(invalid(
                "replication batch",
                format!("{} bytes, more than {MAX_BATCH_BYTES}", payload.len()),
            ));
        }
        return decode_batch_body(payload, BATCH_FORMAT);
    }
    let raw = zstd::bulk::decompress(payload, MAX_BATCH_BYTES)?;
    decode_batch_body(&raw, format)
}

/// Decodes a replication batch's uncompressed body of `format`.
pub fn decode_batch_body(raw: &[u8], format: u32) -> io::Result<Vec<ChangeRecord>> {
    match format {
        BATCH_FORMAT => postcard::from_bytes(raw).map_err(|e| invalid("replication batch", e)),
        0 | 1 => postcard::from_bytes::<Vec<ChangeRecordV1>>(raw)
            .map(|changes| changes.into_iter().map(ChangeRecord::from).collect())
            .map_err(|e| invalid("replication batch (format 1)", e)),
        other => Err(invalid(
            "replication batch",
            format!("unknown payload_format {other} (this build reads 1 and {BATCH_FORMAT})"),
        )),
    }
}

/// Compresses key-values for a full copy.
pub fn encode_entries(entries: &[VersionedEntry]) -> io::Result<Vec<u8>> {
    let raw = postcard::to_stdvec(entries).map_err(io::Error::other)?;
    zstd::bulk::compress(&raw, ZSTD_LEVEL)
}

/// Decodes key-values of a full copy (bounded like [`decode_batch`]).
pub fn decode_entries(payload: &[u8]) -> io::Result<Vec<VersionedEntry>> {
    let raw = zstd::bulk::decompress(payload, MAX_BATCH_BYTES)?;
    postcard::from_bytes(&raw).map_err(|e| invalid("full-copy chunk", e))
}

/// Splits `items` into consecutive runs of at most `max_items` items and
/// `max_bytes` bytes (by `size`), each holding at least one item; an empty
/// input gives one empty run (a full copy of an empty namespace still
/// sends its single, empty chunk).
pub fn runs_within<T>(
    items: &[T],
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, item) in items.iter().enumerate() {
        let item_bytes = size(item);
        if i > start && (i - start >= max_items || bytes.saturating_add(item_bytes) > max_bytes) {
            runs.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(item_bytes);
    }
    if start < items.len() || runs.is_empty() {
        runs.push(&items[start..]);
    }
    runs
}

/// Bytes a change carries (keys, values and a little per write).
pub fn change_bytes(change: &ChangeRecord) -> usize {
    change
        .writes
        .iter()
        .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len) + 24)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ReplicatedWrite;

    #[test]
    fn requests_stay_within_their_item_and_byte_bounds() {
        let sizes = |runs: Vec<&[usize]>| runs.iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        let id = |n: &usize| *n;
        // By count.
        assert_eq!(
            sizes(runs_within(&[1, 1, 1, 1, 1], 2, 100, id)),
            [vec![1, 1], vec![1, 1], vec![1]]
        );
        // By bytes: 2,048 values of 4 KiB made one 8.4 MB request before.
        assert_eq!(
            sizes(runs_within(&[3, 3, 3, 3], 10, 7, id)),
            [vec![3, 3], vec![3, 3]]
        );
        // One item above the bound still goes, alone.
        assert_eq!(
            sizes(runs_within(&[2, 50, 2], 10, 7, id)),
            [vec![2], vec![50], vec![2]]
        );
        // Nothing: one empty run.
        assert_eq!(sizes(runs_within(&[], 10, 7, id)), [Vec::<usize>::new()]);
        let big: Vec<usize> = vec![4096 + 16; 2_048];
        for run in runs_within(&big, RESYNC_CHUNK, MAX_PAYLOAD_BYTES, id) {
            assert!(run.iter().sum::<usize>() <= MAX_PAYLOAD_BYTES);
        }
    }

    #[test]
    fn batches_round_trip_and_compress() {
        let changes: Vec<ChangeRecord> = (1..=200)
            .map(|seq| ChangeRecord {
                seq,
                writes: vec![ReplicatedWrite {
                    key: format!("user/{seq:08}").into_bytes(),
                    value: Some(vec![b'x'; 256]),
                    version: seq * 3,
                    previous_version: Some(seq * 3 - 1),
                }],
            })
            .collect();
        for plain_ok in [false, true] {
            let batch = encode_batch(&changes, plain_ok).unwrap();
            assert_eq!(
                batch.format, BATCH_FORMAT,
                "a batch that compresses well is compressed"
            );
            assert!(batch.payload.len() * 5 < batch.raw_len, "{batch:?}");
            assert_eq!(decode_batch(&batch.payload, batch.format).unwrap(), changes);
        }
        assert!(decode_batch(b"not zstd", BATCH_FORMAT).is_err());
        // One tiny change: zstd's frame would make it larger, so it goes
        // plain — but only to a receiver that reads the plain format.
        let tiny = vec![ChangeRecord {
            seq: 9,
            writes: vec![ReplicatedWrite {
                key: b"k".to_vec(),
                value: Some(b"v".to_vec()),
                version: 1,
                previous_version: None,
            }],
        }];
        let plain = encode_batch(&tiny, true).unwrap();
        assert_eq!(plain.format, PLAIN_BATCH_FORMAT);
        assert_eq!(plain.payload.len(), plain.raw_len);
        assert_eq!(decode_batch(&plain.payload, plain.format).unwrap(), tiny);
        let old_receiver = encode_batch(&tiny, false).unwrap();
        assert_eq!(old_receiver.format, BATCH_FORMAT);
        assert!(
            old_receiver.payload.len() > plain.payload.len(),
            "{old_receiver:?}"
        );
        assert_eq!(
            decode_batch(&old_receiver.payload, BATCH_FORMAT).unwrap(),
            tiny
        );
        // Who gets plain batches: a receiver that said it reads them, and
        // nobody after a failed call until one says so again.
        for (answer, plain) in [
            (Some(MAX_DECODED_FORMAT), true),
            (Some(PLAIN_BATCH_FORMAT), true),
            (Some(BATCH_FORMAT), false),
            (Some(0), false),
            (None, false),
        ] {
            assert_eq!(sends_plain(answer), plain, "{answer:?}");
        }
        // The plain format's body is format 2's: its golden sample (in the
        // shard's format tests) covers both.
        assert_eq!(plain.payload, postcard::to_stdvec(&tiny).unwrap());
        let error = decode_batch_body(&[], 7).unwrap_err();
        assert!(error.to_string().contains("payload_format 7"), "{error}");
    }
}
