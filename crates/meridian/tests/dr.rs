//! Disaster recovery end to end in the multi-region TLS lab: a backup
//! restored into a new namespace equals the source at the backup's change
//! (digest), even when the control-plane leader is killed in the middle of
//! the restore; the latest backup restores to the source as it is now; a
//! restore outside the backup's jurisdictions, or onto a taken name, is
//! refused before anything moves; a damaged object fails the restore, which
//! leaves nothing behind; no record is readable in any backup object.

mod common;

use common::{lab_client, region_nodes};
use meridian_client::{Client, ClientError, pb};
use meridian_lab::ProcessRole;
use std::time::{Duration, Instant};

/// Restores load at most this many record bytes per second per node, so a
/// restore of the test's namespace takes seconds — long enough to kill the
/// control-plane leader in the middle of one.
const RESTORE_BYTES_PER_SECOND: &str = "250000";

fn value(marker: &str, i: usize) -> Vec<u8> {
    let mut value = format!("{marker}-{i:05}-").into_bytes();
    value.resize(1000, b'.');
    value
}

/// Writes keys `k00000..` in transactions of 100.
async fn write_keys(client: &Client, namespace: &str, keys: std::ops::Range<usize>, marker: &str) {
    let all: Vec<usize> = keys.collect();
    for batch in all.chunks(100) {
        let success = batch
            .iter()
            .map(|i| pb::TxnOp {
                op: Some(pb::txn_op::Op::Put(pb::PutRequest {
                    namespace: namespace.into(),
                    key: format!("k{i:05}").into_bytes(),
                    value: value(marker, *i),
                })),
            })
            .collect();
        client
            .txn(pb::TxnRequest {
                namespace: namespace.into(),
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            })
            .await
            .unwrap();
    }
}

fn restore_request(backup: &str, as_name: &str, region: &str) -> pb::RestoreBackupRequest {
    pb::RestoreBackupRequest {
        backup_id: backup.into(),
        as_name: as_name.into(),
        region: region.into(),
        at_seq: None,
        at_unix_ms: None,
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_restore_to_their_digest_across_a_control_leader_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = common::multi_region_lab_with(
        dir.path(),
        &[(
            "MERIDIAN__DR__RESTORE_MAX_BYTES_PER_SECOND",
            RESTORE_BYTES_PER_SECOND,
        )],
    )
    .await;
    let state = lab.state().clone();
    let control = lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(30),
    );
    let gateway = lab_client(
        &lab,
        state.endpoints(ProcessRole::Gateway, Some("eu-west")),
        Duration::from_secs(20),
    );
    let eu_nodes = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(20));
    control
        .place_namespace(pb::Placement {
            name: "orders".into(),
            home_region: "eu-west".into(),
            mode: pb::NamespaceMode::RegionLocked as i32,
            allowed_jurisdictions: vec!["EU".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for (name, region) in [("eu-vault", "eu-west"), ("us-vault", "us-east")] {
        control
            .put_location(pb::LocationInfo {
                name: name.into(),
                url: format!("file://{}", dir.path().join(name).display()),
                region: region.into(),
                jurisdictions: Vec::new(),
            })
            .await
            .unwrap();
    }
    let marker = format!("marker{:016x}", rand::random::<u64>());
    write_keys(&gateway, "orders", 0..800, &marker).await;

    // Backup A, then more writes: overwrites, new keys, deletes.
    let a = control.snapshot("orders", "eu-vault").await.unwrap();
    assert!(a.verified && a.key_count == 800, "{a:?}");
    assert_eq!(a.jurisdictions, ["EU"], "{a:?}");
    let at_a = eu_nodes.check_integrity("orders").await.unwrap();
    assert_eq!(at_a.digest, a.digest, "the backup's digest is the source's");
    write_keys(&gateway, "orders", 0..100, "after").await;
    write_keys(&gateway, "orders", 800..900, &marker).await;
    for i in 100..150 {
        gateway
            .delete("orders", format!("k{i:05}").as_bytes())
            .await
            .unwrap();
    }
    let now = eu_nodes.check_integrity("orders").await.unwrap();
    assert_ne!(now.digest, a.digest);

    // No record is readable in any backup object.
    let files = common::all_files(&dir.path().join("eu-vault"));
    assert!(files.len() >= 2, "manifest and objects: {files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds a record in clear",
            file.display()
        );
    }

    // Refused before anything moves: a region outside the backup's
    // jurisdictions, and a name that is taken.
    match control
        .start_restore(restore_request(&a.backup_id, "orders-us", "us-east"))
        .await
    {
        Err(ClientError::FailedPrecondition(refusal)) => assert!(
            refusal.message.contains("residency") && refusal.message.contains("us-east"),
            "{refusal}"
        ),
        other => panic!("an EU backup was restored into us-east: {other:?}"),
    }
    match control
        .start_restore(restore_request(&a.backup_id, "orders", ""))
        .await
    {
        Err(ClientError::AlreadyExists(message)) => assert!(message.contains("orders")),
        other => panic!("a restore over a live namespace was accepted: {other:?}"),
    }
    assert!(control.list_jobs().await.unwrap().is_empty());

    // Restore A into a new name; kill the control-plane leader while the
    // shard is loading: the next leader starts the job again and it ends
    // with the backup's digest (nothing lost, nothing loaded twice).
    let job = control
        .start_restore(restore_request(&a.backup_id, "orders-a", "eu-west"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = control.get_job(job.id).await.unwrap();
        assert_eq!(
            now.state,
            pb::JobState::Running as i32,
            "the restore ended before the leader could be killed: {now:?}"
        );
        if now.step == "loading" && now.done_units > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = common::control_leader(&lab, &control)
        .await
        .expect("a leader");
    let killed = lab.kill(&leader).unwrap();
    eprintln!("killed {killed:?} at {:?}", control.get_job(job.id).await);
    let done = common::wait_job(&control, job.id, Duration::from_secs(180)).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    assert!(done.attempts >= 2, "the job was not restarted: {done:?}");
    assert_eq!(done.digest, a.digest, "{done:?}");
    let restored = eu_nodes.check_integrity("orders-a").await.unwrap();
    assert_eq!(restored.digest, a.digest);
    assert_eq!(restored.key_count, 800);
    // It is routed: the gateway serves it, as of the backup.
    let first = gateway
        .get("orders-a", b"k00000", pb::Consistency::Strong)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.value, value(&marker, 0));
    assert!(
        gateway
            .get("orders-a", b"k00120", pb::Consistency::Strong)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        gateway
            .get("orders-a", b"k00850", pb::Consistency::Strong)
            .await
            .unwrap()
            .is_none()
    );

    // Incremental backups: the changes since the latest backup, chained;
    // the chain restores to its end, to each backup in it, and to any
    // change between.
    let incremental = |namespace: &str| pb::SnapshotRequest {
        namespace: namespace.into(),
        location: "eu-vault".into(),
        incremental: true,
    };
    let i1 = control.snapshot_with(incremental("orders")).await.unwrap();
    assert_eq!(i1.kind, "changes", "{i1:?}");
    assert_eq!(i1.parent, a.backup_id);
    assert_eq!(i1.from_seq, a.change_seq);
    // One transaction of overwrites, one of new keys, 50 deletes.
    assert_eq!(i1.change_seq, a.change_seq + 52, "{i1:?}");
    assert_eq!(i1.digest, now.digest);
    // Everything up to i1 was written by now; what follows, after.
    let after_i1 = now_unix_ms();
    write_keys(&gateway, "orders", 0..50, "later").await;
    // The shard marks the time about once a second: once a mark covers
    // those writes (its metric says which change the newest mark covers),
    // this moment is after them, and nothing after it is in them.
    let written_through = eu_nodes.check_integrity("orders").await.unwrap().change_seq;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut covered = 0u64;
        for node in lab
            .state()
            .processes
            .iter()
            .filter(|p| p.role == ProcessRole::Node && p.region == "eu-west")
        {
            let (_, metrics) = common::lab_https_get(&lab, "admin", &node.http, "/metrics").await;
            covered = covered.max(
                metrics
                    .lines()
                    .find(|l| {
                        l.starts_with("meridian_time_mark_change_seq{")
                            && l.contains("namespace=\"orders\"")
                    })
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            );
        }
        if covered >= written_through {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no time mark covered change {written_through} within 30 s (newest covers {covered})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_later = now_unix_ms();
    write_keys(&gateway, "orders", 950..960, "final").await;
    let i2 = control.snapshot_with(incremental("orders")).await.unwrap();
    assert_eq!(
        (i2.parent.as_str(), i2.from_seq),
        (i1.backup_id.as_str(), i1.change_seq)
    );
    let latest = eu_nodes.check_integrity("orders").await.unwrap();
    assert_eq!(i2.digest, latest.digest);
    let at = |target: &str, at_seq: Option<u64>| pb::RestoreBackupRequest {
        backup_id: i2.backup_id.clone(),
        as_name: target.into(),
        region: String::new(),
        at_seq,
        at_unix_ms: None,
    };
    for (target, at_seq, digest) in [
        ("orders-i2", None, Some(&latest.digest)),
        ("orders-at-i1", Some(i1.change_seq), Some(&i1.digest)),
        ("orders-at-a", Some(a.change_seq), Some(&a.digest)),
        ("orders-between", Some(a.change_seq + 3), None),
    ] {
        let job = control.start_restore(at(target, at_seq)).await.unwrap();
        let done = common::wait_job(&control, job.id, Duration::from_secs(120)).await;
        assert_eq!(
            done.state,
            pb::JobState::Succeeded as i32,
            "{target}: {done:?}"
        );
        let restored = eu_nodes.check_integrity(target).await.unwrap();
        match digest {
            Some(digest) => assert_eq!(&restored.digest, digest, "{target}"),
            None => {
                assert!(done.message.contains("no source digest"), "{done:?}");
                // Three changes after A: the overwrites, the new keys and
                // the first delete — not the second.
                let get = |key: &'static [u8]| {
                    let gateway = &gateway;
                    async move {
                        gateway
                            .get(target, key, pb::Consistency::Strong)
                            .await
                            .unwrap()
                            .map(|kv| kv.value)
                    }
                };
                assert_eq!(get(b"k00002").await, Some(value("after", 2)));
                assert_eq!(get(b"k00850").await, Some(value(&marker, 850)));
                assert_eq!(get(b"k00100").await, None);
                assert_eq!(get(b"k00101").await, Some(value(&marker, 101)));
            }
        }
    }
    // To a time: the namespace as it was then — i1's state, without the
    // writes that came after it.
    let to_time = |target: &str, at_unix_ms| pb::RestoreBackupRequest {
        at_seq: None,
        at_unix_ms: Some(at_unix_ms),
        ..at(target, None)
    };
    let job = control
        .start_restore(to_time("orders-at-time", after_i1))
        .await
        .unwrap();
    let done = common::wait_job(&control, job.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    assert_eq!(done.change_seq, i1.change_seq, "{done:?}");
    let restored = eu_nodes.check_integrity("orders-at-time").await.unwrap();
    assert_eq!(restored.digest, i1.digest, "restored to a time");
    // A time between two backups: the shard's own marks place it.
    let job = control
        .start_restore(to_time("orders-between-times", after_later))
        .await
        .unwrap();
    let done = common::wait_job(&control, job.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    let get = |key: &'static [u8]| {
        let gateway = &gateway;
        async move {
            gateway
                .get("orders-between-times", key, pb::Consistency::Strong)
                .await
                .unwrap()
                .map(|kv| kv.value)
        }
    };
    assert_eq!(get(b"k00049").await, Some(value("later", 49)), "{done:?}");
    assert_eq!(get(b"k00955").await, None, "{done:?}");
    // Before the chain's full backup: refused, naming why.
    match control
        .start_restore(to_time(
            "orders-y",
            a.created_unix_ms.saturating_sub(60_000),
        ))
        .await
    {
        Err(ClientError::FailedPrecondition(refusal)) => assert!(
            refusal.message.contains("before the chain's full backup"),
            "{refusal}"
        ),
        other => panic!("a time before the chain was accepted: {other:?}"),
    }
    match control
        .start_restore(at("orders-x", Some(i2.change_seq + 1)))
        .await
    {
        Err(ClientError::FailedPrecondition(refusal)) => {
            assert!(refusal.message.contains("outside the chain"), "{refusal}")
        }
        other => panic!("a change outside the chain was accepted: {other:?}"),
    }

    // A new full backup restores to the source as it is now.
    let b = control.snapshot("orders", "eu-vault").await.unwrap();
    assert_eq!(
        (b.kind.as_str(), b.digest.as_str()),
        ("full", latest.digest.as_str())
    );
    let job = control
        .start_restore(restore_request(&b.backup_id, "orders-b", ""))
        .await
        .unwrap();
    let done = common::wait_job(&control, job.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    assert_eq!(done.region, "eu-west", "the home region by default");
    let restored = eu_nodes.check_integrity("orders-b").await.unwrap();
    assert_eq!(restored.digest, latest.digest);
    // The change log a backup holds is let go of once it is backed up: no
    // entry is left (no standbys to keep any for).
    let node = region_nodes(&lab, "eu-west")[0].clone();
    let presence = eu_nodes
        .namespace_presence_on(&node, "orders")
        .await
        .unwrap();
    assert_eq!(presence.change_log_entries, 0, "{presence:?}");

    // A damaged object: the restore fails naming it, and leaves no copy
    // and no route behind.
    let chunk = dir
        .path()
        .join("eu-vault/backups/orders")
        .join(&b.backup_id)
        .join("chunk-000000");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&chunk, &bytes).unwrap();
    let job = control
        .start_restore(restore_request(&b.backup_id, "orders-c", ""))
        .await
        .unwrap();
    let done = common::wait_job(&control, job.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, pb::JobState::Failed as i32, "{done:?}");
    assert!(
        done.message.contains("chunk-000000") && done.message.contains("damaged"),
        "{done:?}"
    );
    assert!(
        control
            .list_placements()
            .await
            .unwrap()
            .placements
            .iter()
            .all(|p| p.name != "orders-c")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names = eu_nodes.list_namespaces().await.unwrap();
        if names.iter().all(|n| n.name != "orders-c") {
            break;
        }
        assert!(Instant::now() < deadline, "a failed restore left {names:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Validation finds it too; an unverified backup is not restored.
    let checked = control.validate_backup(&b.backup_id).await.unwrap();
    assert!(!checked.validation.unwrap().ok);
    match control
        .start_restore(restore_request(&b.backup_id, "orders-d", ""))
        .await
    {
        Err(ClientError::FailedPrecondition(refusal)) => {
            assert!(refusal.message.contains("not verified"), "{refusal}")
        }
        other => panic!("an unverified backup was restored: {other:?}"),
    }
    // Every restore is one job; the refused ones started none.
    let jobs = control.list_jobs().await.unwrap();
    assert_eq!(jobs.len(), 9, "{jobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_run_as_jobs_and_expire_without_breaking_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let lab = common::us_east_lab(&dir.path().join("lab"), 1, true, &[]).await;
    let state = lab.state().clone();
    let control = lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    let node = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(20));
    control
        .place_namespace(pb::Placement {
            name: "sched".into(),
            home_region: "us-east".into(),
            mode: pb::NamespaceMode::RegionLocked as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let vault = dir.path().join("vault");
    control
        .put_location(pb::LocationInfo {
            name: "vault".into(),
            url: format!("file://{}", vault.display()),
            region: "us-east".into(),
            jurisdictions: Vec::new(),
        })
        .await
        .unwrap();
    // Too often, or kept shorter than the interval: refused, naming why.
    for (every, keep, why) in [(500, 5_000, "once a second"), (5_000, 1_000, "at least")] {
        match control
            .set_schedule(pb::ScheduleInfo {
                namespace: "sched".into(),
                location: "vault".into(),
                every_ms: every,
                keep_ms: keep,
                ..Default::default()
            })
            .await
        {
            Err(ClientError::FailedPrecondition(refusal)) => {
                assert!(refusal.message.contains(why), "{refusal}")
            }
            other => panic!("schedule every {every} keep {keep} accepted: {other:?}"),
        }
    }
    control
        .set_schedule(pb::ScheduleInfo {
            namespace: "sched".into(),
            location: "vault".into(),
            every_ms: 1_000,
            keep_ms: 4_000,
            incrementals_per_full: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    // Keep writing while backups are taken; wait until retention has
    // removed a backup.
    let mut seen = std::collections::BTreeMap::new();
    let mut gone = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0u32;
    while gone.is_none() {
        assert!(Instant::now() < deadline, "no backup expired: {seen:?}");
        node.put("sched", format!("k{i}").as_bytes(), b"v")
            .await
            .unwrap();
        i += 1;
        let catalog = control.list_backups("sched").await.unwrap();
        for backup in &catalog {
            seen.insert(backup.backup_id.clone(), backup.clone());
        }
        gone = seen
            .keys()
            .find(|id| catalog.iter().all(|b| &b.backup_id != *id))
            .cloned();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let catalog = control.list_backups("sched").await.unwrap();
    assert!(
        seen.values().any(|b| b.kind == "full") && seen.values().any(|b| b.kind == "changes"),
        "{seen:?}"
    );
    // The expired backup's objects are gone; every kept incremental's
    // parent is still there.
    let gone = gone.unwrap();
    assert!(
        common::all_files(&vault.join("backups/sched").join(&gone)).is_empty(),
        "objects of expired backup {gone} remain"
    );
    for backup in catalog.iter().filter(|b| b.kind == "changes") {
        assert!(
            catalog.iter().any(|p| p.backup_id == backup.parent),
            "{} lost its parent {}: {catalog:?}",
            backup.backup_id,
            backup.parent
        );
    }
    let jobs = control.list_jobs().await.unwrap();
    assert!(
        jobs.iter()
            .any(|j| j.kind == "backup" && j.state == pb::JobState::Succeeded as i32),
        "{jobs:?}"
    );
    // The newest backup restores to its own digest.
    let newest = catalog
        .iter()
        .max_by_key(|b| (b.change_seq, b.created_unix_ms))
        .unwrap();
    let job = control
        .start_restore(restore_request(&newest.backup_id, "sched-copy", ""))
        .await
        .unwrap();
    let done = common::wait_job(&control, job.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    assert_eq!(done.digest, newest.digest);
    control.remove_schedule("sched").await.unwrap();
    assert!(control.list_schedules().await.unwrap().is_empty());
}
