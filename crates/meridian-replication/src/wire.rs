//! The bytes a replication request carries: batches of changes and chunks of
//! a full copy, compressed, bounded, and versioned by `payload_format`.
//!
//! | payload | format |
//! |---|---|
//! | batch of changes | 2: zstd(postcard(Vec<ChangeRecord>)); 0 or 1: zstd(postcard(Vec<ChangeRecordV1>)) |
//! | chunk of a full copy (`resync` set) | zstd(postcard(Vec<VersionedEntry>)) |
//!
//! The golden samples of the batch formats are decoded by the shard's format
//! tests, beside the stored formats that embed the same change records.

use crate::change::{ChangeRecord, ChangeRecordV1, VersionedEntry};
use std::io;

/// Current replication batch format (`ReplicateRequest.payload_format`).
pub const BATCH_FORMAT: u32 = 2;
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

/// Compresses a batch for the wire (format [`BATCH_FORMAT`]); returns the
/// payload and the raw size.
pub fn encode_batch(changes: &[ChangeRecord]) -> io::Result<(Vec<u8>, usize)> {
    let raw = postcard::to_stdvec(changes).map_err(io::Error::other)?;
    let compressed = zstd::bulk::compress(&raw, ZSTD_LEVEL)?;
    Ok((compressed, raw.len()))
}

/// Decodes a batch of `format` from the wire, refusing one that expands past
/// [`MAX_BATCH_BYTES`].
pub fn decode_batch(payload: &[u8], format: u32) -> io::Result<Vec<ChangeRecord>> {
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
        let (payload, raw) = encode_batch(&changes).unwrap();
        assert!(payload.len() * 5 < raw, "{} vs {raw}", payload.len());
        assert_eq!(decode_batch(&payload, BATCH_FORMAT).unwrap(), changes);
        assert!(decode_batch(b"not zstd", BATCH_FORMAT).is_err());
        let error = decode_batch_body(&[], 7).unwrap_err();
        assert!(error.to_string().contains("payload_format 7"), "{error}");
    }
}
