//! The audit log's hash chain catches an edit made behind the cluster's
//! back: with the lab stopped, one record is altered in every control-plane
//! member's storage (decrypted, edited, sealed again with the lab's own key);
//! after a restart `meridian audit verify` names that record and fails.

mod common;

use meridian_lab::ProcessRole;
use meridian_raft::StorageEngine;
use meridian_raft::metrics::StorageMetrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn verify(lab_dir: &std::path::Path) -> (bool, serde_json::Value) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["audit", "verify", "--output", "json", "--lab"])
        .arg(lab_dir)
        .output()
        .unwrap();
    // A failing command prints its report, then its error (both JSON).
    let report = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or(serde_json::Value::Null);
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_a_record_edited_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let mut lab = common::us_east_lab(&lab_dir, 1, true, &[]).await;
    let control = common::lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(30),
    );
    control
        .place_namespace(meridian_client::pb::Placement {
            name: "ledger".into(),
            home_region: "us-east".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (ok, report) = verify(&lab_dir);
    assert!(ok, "an untouched log verifies: {report}");

    // Stop cleanly (everything applied and synced), then edit the record of
    // the namespace's creation in every member's storage.
    lab.stop("us-east").unwrap();
    let key_file = lab_dir.join(meridian_lab::topology::KEY_FILE);
    let mut edited_sequence = None;
    for process in lab
        .state()
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Control)
    {
        let data_dir = process.config.with_file_name("data");
        let engine = StorageEngine::open_with(
            &data_dir,
            Arc::new(StorageMetrics::default()),
            Some(&key_file),
        )
        .unwrap();
        let audit = engine
            .keyspace("control_audit", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let mut edited = false;
        for guard in audit.iter() {
            let (key, stored) = guard.into_inner().unwrap();
            let plain = engine.sealer().open(&stored).unwrap().into_owned();
            let Some(at) = plain.windows(6).position(|w| w == b"ledger") else {
                continue;
            };
            let mut forged = plain.clone();
            forged[at..at + 6].copy_from_slice(b"ledgex");
            audit
                .insert(key.to_vec(), engine.sealer().seal(forged).unwrap())
                .unwrap();
            let sequence = u64::from_be_bytes(key.as_ref().try_into().unwrap());
            edited_sequence = Some(sequence);
            edited = true;
            break;
        }
        assert!(edited, "{} holds the record", process.name);
        engine.sync_now().unwrap();
    }
    let edited_sequence = edited_sequence.unwrap();

    lab.restart("us-east").unwrap();
    lab.wait_ready(Duration::from_secs(120), |_, _| {})
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, report) = verify(&lab_dir);
        if report["broken_at"] == edited_sequence {
            assert!(!ok, "a broken chain must fail the command: {report}");
            assert_eq!(report["verified"], false, "{report}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit verify did not name record {edited_sequence}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
