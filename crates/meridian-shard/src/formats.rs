//! Versioned encodings of what a shard stores and sends, in one place.
//!
//! | what | where | format |
//! |---|---|---|
//! | change record | `kv_changes`, `kv_lost` values | `0x00, 2, postcard(ChangeRecord)`; format 1 = bare postcard of [`ChangeRecordV1`] |
//! | shard command | Raft log entries | `0xFF, 1, postcard(Command)`; bare postcard (format 0) still decodes |
//! | replication batch, full-copy chunk | `ReplicateRequest.payload` | defined by `meridian_replication::wire` (batch format 2; 0 or 1 = format 1); its golden samples are decoded here |
//! | namespace record | `kv_namespaces` values | format byte first, see `state_machine` (3) |
//!
//! The envelopes' first bytes cannot begin an older bare encoding: a format-1
//! change record starts with its sequence number (never 0), and a bare
//! command starts with its variant index (below 0x80). Golden samples of
//! each format live in `testdata/formats/` and are decoded by a test.

use crate::command::{ChangeRecord, ChangeRecordV1, Command};
pub use meridian_replication::wire::{BATCH_FORMAT, decode_batch_body};
use std::io;

/// Current change-record format.
pub const CHANGE_FORMAT: u8 = 2;
/// First byte of an enveloped change record.
const CHANGE_MARK: u8 = 0x00;
/// Current command format.
pub const COMMAND_FORMAT: u8 = 1;
/// First byte of an enveloped command.
const COMMAND_MARK: u8 = 0xFF;

fn invalid(what: &str, error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {error}"))
}

/// Encodes a change record (current format).
pub fn encode_change(change: &ChangeRecord) -> io::Result<Vec<u8>> {
    let mut out = vec![CHANGE_MARK, CHANGE_FORMAT];
    out.extend(postcard::to_stdvec(change).map_err(io::Error::other)?);
    Ok(out)
}

/// Decodes a stored change record of any known format.
pub fn decode_change(raw: &[u8]) -> io::Result<ChangeRecord> {
    match raw {
        [CHANGE_MARK, CHANGE_FORMAT, body @ ..] => {
            postcard::from_bytes(body).map_err(|e| invalid("change record", e))
        }
        [CHANGE_MARK, other, ..] => Err(invalid(
            "change record",
            format!("unknown format {other} (this build reads 1 and {CHANGE_FORMAT})"),
        )),
        legacy => postcard::from_bytes::<ChangeRecordV1>(legacy)
            .map(ChangeRecord::from)
            .map_err(|e| invalid("change record (format 1)", e)),
    }
}

/// Encodes a command for the Raft log (current format).
pub fn encode_command(command: &Command) -> io::Result<Vec<u8>> {
    let mut out = vec![COMMAND_MARK, COMMAND_FORMAT];
    out.extend(postcard::to_stdvec(command).map_err(io::Error::other)?);
    Ok(out)
}

/// Decodes a command from the Raft log (enveloped, or bare from before).
pub fn decode_command(raw: &[u8]) -> io::Result<Command> {
    match raw {
        [COMMAND_MARK, COMMAND_FORMAT, body @ ..] => {
            postcard::from_bytes(body).map_err(|e| invalid("command", e))
        }
        [COMMAND_MARK, other, ..] => Err(invalid(
            "command",
            format!("unknown format {other} (this build reads {COMMAND_FORMAT})"),
        )),
        legacy => postcard::from_bytes(legacy).map_err(|e| invalid("command (format 0)", e)),
    }
}

/// Compares nothing: returns the golden sample `name` from
/// `testdata/formats/`, first writing `bytes` there when
/// `MERIDIAN_BLESS_FORMATS=1` (only for a deliberate format change).
#[cfg(test)]
pub(crate) fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/formats")
        .join(name);
    if std::env::var_os("MERIDIAN_BLESS_FORMATS").is_some_and(|v| v == "1") {
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(&path));
        let _ = std::fs::write(&path, bytes);
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden sample {} missing ({e}); create it with MERIDIAN_BLESS_FORMATS=1",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ReplicatedWrite, ReplicatedWriteV1};

    fn change() -> ChangeRecord {
        ChangeRecord {
            seq: 7,
            writes: vec![
                ReplicatedWrite {
                    key: b"k".to_vec(),
                    value: Some(b"v".to_vec()),
                    version: 42,
                    previous_version: Some(40),
                },
                ReplicatedWrite {
                    key: b"gone".to_vec(),
                    value: None,
                    version: 41,
                    previous_version: Some(41),
                },
            ],
        }
    }

    fn change_v1() -> ChangeRecordV1 {
        ChangeRecordV1 {
            seq: 7,
            writes: vec![ReplicatedWriteV1 {
                key: b"k".to_vec(),
                value: Some(b"v".to_vec()),
                version: 42,
            }],
        }
    }

    fn command() -> Command {
        Command::Put {
            namespace: "orders".into(),
            key: b"o-1".to_vec(),
            value: b"paid".to_vec(),
        }
    }

    #[test]
    fn golden_samples_decode_and_current_encodings_are_unchanged() {
        // Current formats: encoding is byte-for-byte the stored sample.
        let encoded = encode_change(&change()).unwrap();
        assert_eq!(
            encoded,
            golden("change-record-v2.bin", &encoded),
            "change record format changed"
        );
        assert_eq!(decode_change(&encoded).unwrap(), change());
        let encoded = encode_command(&command()).unwrap();
        assert_eq!(
            encoded,
            golden("shard-command-v1.bin", &encoded),
            "command format changed"
        );
        assert_eq!(decode_command(&encoded).unwrap(), command());
        let body = postcard::to_stdvec(&vec![change()]).unwrap();
        assert_eq!(
            body,
            golden("replication-batch-v2.bin", &body),
            "batch format changed"
        );
        assert_eq!(
            decode_batch_body(&body, BATCH_FORMAT).unwrap(),
            vec![change()]
        );
        // Older formats still decode.
        let legacy = postcard::to_stdvec(&change_v1()).unwrap();
        let legacy = golden("change-record-v1.bin", &legacy);
        let upgraded = decode_change(&legacy).unwrap();
        assert_eq!(upgraded, ChangeRecord::from(change_v1()));
        assert_eq!(upgraded.writes[0].previous_version, None);
        let legacy = postcard::to_stdvec(&command()).unwrap();
        let legacy = golden("shard-command-v0.bin", &legacy);
        assert_eq!(decode_command(&legacy).unwrap(), command());
        let legacy = postcard::to_stdvec(&vec![change_v1()]).unwrap();
        let legacy = golden("replication-batch-v1.bin", &legacy);
        assert_eq!(
            decode_batch_body(&legacy, 1).unwrap(),
            vec![ChangeRecord::from(change_v1())]
        );
    }

    #[test]
    fn the_lease_grant_wire_format_matches_its_golden_sample() {
        use meridian_proto::v1 as pb;
        use prost::Message;
        let grant = pb::LeaseRequest {
            lease_ms: 3_500,
            desired: vec![pb::DesiredNamespace {
                namespace: "payments".into(),
                role: pb::NamespaceRole::Primary as i32,
                epoch: 2,
                fork_seq: 0,
                sync: true,
                max_lag_entries: 0,
                max_lag_ms: 0,
                sync_confirmations: 1,
                former_primary: "us-east-s1".into(),
                takeovers: Vec::new(),
                fork_from_takeovers: false,
                // Unset: the v2 bytes (an older control plane's grant).
                without_standbys: false,
            }],
            sent_unix_ms: 1_700_000_000_000,
            max_clock_offset_ms: 250,
            grant_term: 4,
            grant_seq: 77,
            // Unset: the bytes of a control plane that does not measure
            // offsets.
            offset_measured: false,
            measured_offset_ms: 0,
            offset_uncertainty_ms: 0,
        };
        let encoded = grant.encode_to_vec();
        let stored = golden("lease-request-v2.bin", &encoded);
        assert_eq!(encoded, stored, "lease grant wire format changed");
        assert_eq!(pb::LeaseRequest::decode(stored.as_slice()).unwrap(), grant);
        // With the failovers' takeovers (a control plane that reports them).
        let mut grant = grant;
        grant.desired[0].takeovers = vec![pb::Takeover {
            epoch: 2,
            source_epoch: 1,
            seq: 41,
        }];
        grant.desired[0].fork_from_takeovers = true;
        let encoded = grant.encode_to_vec();
        let stored = golden("lease-request-v3.bin", &encoded);
        assert_eq!(encoded, stored, "lease grant wire format changed");
        assert_eq!(pb::LeaseRequest::decode(stored.as_slice()).unwrap(), grant);
        // With the node's measured clock offset (behind: negative).
        grant.offset_measured = true;
        grant.measured_offset_ms = -412;
        grant.offset_uncertainty_ms = 38;
        let encoded = grant.encode_to_vec();
        let stored = golden("lease-request-v4.bin", &encoded);
        assert_eq!(encoded, stored, "lease grant wire format changed");
        assert_eq!(pb::LeaseRequest::decode(stored.as_slice()).unwrap(), grant);
    }

    #[test]
    fn unknown_formats_are_refused_by_name() {
        let error = decode_change(&[CHANGE_MARK, 9, 1]).unwrap_err();
        assert!(error.to_string().contains("unknown format 9"), "{error}");
        let error = decode_command(&[COMMAND_MARK, 9]).unwrap_err();
        assert!(error.to_string().contains("unknown format 9"), "{error}");
    }
}
