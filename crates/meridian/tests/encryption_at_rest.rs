//! Encryption at rest, checked on the bytes: with it on (the lab's default) a
//! random marker written to a namespace appears in no file of the lab — not
//! in the Raft log, the stored values, or snapshot files — while a follower
//! that catches up by snapshot learns the keys it needs and holds the same
//! data; with it off (the positive control) the marker is found on disk.

mod common;

use meridian_client::pb;
use meridian_lab::{Lab, ProcessRole};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every file under `dir` whose bytes contain `marker`.
fn files_containing(dir: &Path, marker: &[u8]) -> Vec<PathBuf> {
    common::all_files(dir)
        .into_iter()
        .filter(|path| {
            std::fs::read(path).is_ok_and(|bytes| bytes.windows(marker.len()).any(|w| w == marker))
        })
        .collect()
}

fn marker() -> String {
    format!("MARKER-{:032x}", rand::random::<u128>())
}

async fn write(lab: &Lab, namespace: &str, marker: &str, range: std::ops::Range<u32>) {
    let gateway = common::lab_client(
        lab,
        lab.state().endpoints(ProcessRole::Gateway, None),
        Duration::from_secs(30),
    );
    for i in range {
        gateway
            .put(
                namespace,
                format!("k{i}").as_bytes(),
                format!("{marker}-{i}").as_bytes(),
            )
            .await
            .unwrap();
    }
}

async fn place(lab: &Lab, name: &str) {
    common::lab_client(
        lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(30),
    )
    .place_namespace(pb::Placement {
        name: name.into(),
        home_region: "us-east".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bytes_are_encrypted_and_snapshots_carry_their_keys() {
    // Positive control: with encryption at rest off, the scan finds the marker.
    let dir = tempfile::tempdir().unwrap();
    let plain_dir = dir.path().join("plain");
    let plain = common::us_east_lab(&plain_dir, 3, false, &[]).await;
    place(&plain, "vault").await;
    let visible = marker();
    write(&plain, "vault", &visible, 0..20).await;
    let found = files_containing(&plain_dir, visible.as_bytes());
    assert!(
        !found.is_empty(),
        "the scan must see values stored in clear"
    );
    drop(plain);

    // Encryption at rest on (the lab's default), with snapshots every 200
    // entries so a follower catches up by snapshot.
    let sealed_dir = dir.path().join("sealed");
    let mut sealed = common::us_east_lab(
        &sealed_dir,
        3,
        true,
        &[
            ("MERIDIAN__RAFT__SNAPSHOT_AFTER_ENTRIES", "200"),
            ("MERIDIAN__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT", "20"),
        ],
    )
    .await;
    place(&sealed, "vault").await;
    let hidden = marker();
    write(&sealed, "vault", &hidden, 0..100).await;
    sealed.kill("us-east-3").unwrap();
    write(&sealed, "vault", &hidden, 100..600).await;
    sealed.restart("us-east-3").unwrap();

    // The restarted follower installs a snapshot sealed with another node's
    // data key: it can only serve the same digest if it learned that key.
    let nodes = common::region_nodes(&sealed, "us-east");
    let client = common::lab_client(&sealed, nodes.clone(), Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut digests = Vec::new();
        for node in &nodes {
            if let Ok(check) = client.check_integrity_on(node, "vault").await {
                digests.push((check.digest, check.key_count));
            }
        }
        if digests.len() == nodes.len()
            && digests.iter().all(|d| d == &digests[0])
            && digests[0].1 == 600
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copies did not converge: {digests:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snapshots = common::all_files(&sealed_dir);
    assert!(
        snapshots
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "snap")),
        "a snapshot file was written"
    );
    let leaks = files_containing(&sealed_dir, hidden.as_bytes());
    assert!(
        leaks.is_empty(),
        "the marker is stored in clear in {leaks:?}"
    );
}

/// `meridian node rekey` gives every node a new data key and re-seals its
/// stored values under it while writes go on: no write fails, every node
/// reports its pass done with values re-sealed, and the copies keep one
/// digest over every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_reencrypts_stored_values_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let lab = common::us_east_lab(&lab_dir, 3, true, &[]).await;
    place(&lab, "vault").await;
    let secret = marker();
    write(&lab, "vault", &secret, 0..300).await;

    // Writes keep coming during the passes.
    let gateway = std::sync::Arc::new(common::lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Gateway, None),
        Duration::from_secs(10),
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (gateway, stop, secret) = (gateway.clone(), stop.clone(), secret.clone());
        tokio::spawn(async move {
            let (mut next, mut failed) = (300u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let value = format!("{secret}-{next}");
                match gateway
                    .put("vault", format!("k{next}").as_bytes(), value.as_bytes())
                    .await
                {
                    Ok(_) => next += 1,
                    Err(err) => failed.push(err.to_string()),
                }
            }
            (next, failed)
        })
    };
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["node", "rekey", "--output", "json", "--lab"])
        .arg(&lab_dir)
        .output()
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (written, failed) = writer.await.unwrap();
    assert!(
        output.status.success(),
        "rekey failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(failed.is_empty(), "writes failed during rekey: {failed:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("rekey under load ({} writes in all): {report}", written);
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{report}");
    for node in nodes {
        assert_eq!(node["running"], false, "{node}");
        assert_eq!(node["error"], "", "{node}");
        assert_eq!(node["encrypted"], true, "{node}");
        // Every stored value of the 300 keys (and their records) was under
        // the key of the node's start, so each pass re-sealed at least them.
        assert!(node["resealed"].as_u64().unwrap() >= 300, "{node}");
        assert!(node["data_keys"].as_u64().unwrap() >= 2, "{node}");
    }

    // Every acknowledged write is there, the same on every copy.
    let members = common::region_nodes(&lab, "us-east");
    let client = common::lab_client(&lab, members.clone(), Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut digests = Vec::new();
        for node in &members {
            if let Ok(check) = client.check_integrity_on(node, "vault").await {
                digests.push((check.digest, check.key_count));
            }
        }
        if digests.len() == members.len()
            && digests.iter().all(|d| d == &digests[0])
            && digests[0].1 == u64::from(written)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copies differ or miss writes ({written} written): {digests:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = gateway
        .get(
            "vault",
            format!("k{}", written - 1).as_bytes(),
            pb::Consistency::Strong,
        )
        .await
        .unwrap();
    assert_eq!(
        last.map(|kv| kv.value),
        Some(format!("{secret}-{}", written - 1).into_bytes())
    );
}

/// A node writes a backup of a namespace it holds (as the control plane asks
/// it to): from one view of its copy, to a directory location, read back and
/// checked — the digest is the copy's, and no backup object holds a value in
/// clear. A user, even the admin, cannot ask a node for a backup: residency is
/// the control plane's to decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_writes_a_verified_encrypted_backup() {
    let dir = tempfile::tempdir().unwrap();
    let lab = common::us_east_lab(&dir.path().join("lab"), 3, true, &[]).await;
    place(&lab, "vault").await;
    let secret = marker();
    write(&lab, "vault", &secret, 0..2_500).await;

    let certs = lab.state().certs.clone().unwrap();
    let as_identity = |name: &str| {
        meridian_net::Dialer::new(
            Default::default(),
            Some(&meridian_net::TlsFiles::in_dir(&certs, name).load().unwrap()),
        )
    };
    let node = lab.process("us-east-2").unwrap().grpc.clone();
    let backups = dir.path().join("backups");
    let request = pb::BackupRequest {
        namespace: "vault".into(),
        backup_id: "vault-test-1".into(),
        location_name: "local".into(),
        location_url: format!("file://{}", backups.display()),
        location_region: "us-east".into(),
        jurisdictions: vec!["US".into()],
        ..Default::default()
    };
    let admin_of = |dialer: meridian_net::Dialer| {
        let channel = dialer.lazy(&dialer.endpoint(&node).unwrap());
        meridian_proto::v1::admin_client::AdminClient::new(channel)
    };
    let refused = admin_of(as_identity("admin"))
        .backup(request.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // Writes have stopped: wait until this node has applied them all, then
    // its copy's digest is what the backup must carry.
    let client = common::lab_client(&lab, vec![node.clone()], Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected = loop {
        let check = client.check_integrity_on(&node, "vault").await.unwrap();
        if check.key_count == 2_500 {
            break check;
        }
        assert!(Instant::now() < deadline, "the follower never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let backup = admin_of(as_identity("control-1"))
        .backup(request)
        .await
        .unwrap()
        .into_inner();
    assert!(backup.verified, "{backup:?}");
    assert_eq!(backup.key_count, 2_500, "{backup:?}");
    assert_eq!(backup.digest, expected.digest, "{backup:?}");
    assert!(backup.objects >= 1 && backup.stored_bytes > 0, "{backup:?}");
    let files = common::all_files(&backups);
    assert!(
        files.iter().any(|f| f.ends_with("manifest.json")),
        "{files:?}"
    );
    let leaks = files_containing(&backups, secret.as_bytes());
    assert!(leaks.is_empty(), "values in clear in {leaks:?}");
    // Positive control for the scan: the manifest names the namespace.
    assert!(!files_containing(&backups, b"\"namespace\": \"vault\"").is_empty());
}
