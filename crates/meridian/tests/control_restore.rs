//! Total loss of the control plane, rebuilt from its backup, in the
//! multi-region TLS lab with WAN emulation.
//!
//! The backup is taken, then the lost control plane goes on: more writes,
//! a failover of an active-passive namespace to eu-west (a new epoch the
//! backup does not know), a namespace created after the backup. Then every
//! control-plane member is killed and its storage removed, and a new, empty
//! control plane is started at the same addresses. `control restore`
//! restores the backup and rebuilds: with one shard silent (its node
//! killed), the rebuild waits — granting nothing, refusing changes — until
//! that shard is named lost. Then every namespace routes again, the failed
//! over one where it really lives (not on the stale us-east copy the backup
//! names), writes continue through the gateways, every acknowledged write
//! is there, and a later failover gets an epoch above every epoch used
//! before (no collision).

mod common;

use common::{Acked, assert_all_present, lab_client};
use meridian_client::{Client, ClientError, pb};
use meridian_lab::ProcessRole;
use std::time::{Duration, Instant};

async fn write(gateway: &Client, namespace: &str, keys: std::ops::Range<usize>) -> Vec<Acked> {
    let mut acked = Vec::new();
    for i in keys {
        let key = format!("{namespace}-{i:04}").into_bytes();
        let value = format!("value-{i}").into_bytes();
        let put = gateway
            .put(namespace, &key, &value)
            .await
            .unwrap_or_else(|e| panic!("write {i} to {namespace}: {e}"));
        acked.push(Acked {
            key,
            value,
            version: put.version,
        });
    }
    acked
}

/// Writes one key through `gateway` until it is acknowledged (the gateway
/// may still be learning the rebuilt routing table).
async fn write_eventually(gateway: &Client, namespace: &str, key: &str) -> Acked {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match gateway
            .put(namespace, key.as_bytes(), b"after the rebuild")
            .await
        {
            Ok(put) => {
                return Acked {
                    key: key.as_bytes().to_vec(),
                    value: b"after the rebuild".to_vec(),
                    version: put.version,
                };
            }
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "no write to {namespace} after the rebuild: {err}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn route(control: &Client, namespace: &str) -> pb::Route {
    control
        .get_route(namespace)
        .await
        .unwrap()
        .route
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_control_plane_is_rebuilt_from_its_backup_without_adopting_stale_copies() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = common::multi_region_lab(dir.path()).await;
    let state = lab.state().clone();
    let control = lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(30),
    );
    let us_gateway = lab_client(
        &lab,
        state.endpoints(ProcessRole::Gateway, Some("us-east")),
        Duration::from_secs(30),
    );
    let eu_gateway = lab_client(
        &lab,
        state.endpoints(ProcessRole::Gateway, Some("eu-west")),
        Duration::from_secs(30),
    );
    control
        .place_namespace(common::us_east_with_eu_standby("ledger"))
        .await
        .unwrap();
    for (name, region, jurisdiction) in [("orders", "us-east", "US"), ("notes", "eu-west", "EU")] {
        control
            .place_namespace(pb::Placement {
                name: name.into(),
                home_region: region.into(),
                mode: pb::NamespaceMode::RegionLocked as i32,
                allowed_jurisdictions: vec![jurisdiction.into()],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut ledger = write(&us_gateway, "ledger", 0..40).await;
    let mut orders = write(&us_gateway, "orders", 0..40).await;
    let mut notes = write(&eu_gateway, "notes", 0..40).await;
    let vault = format!("file://{}", dir.path().join("vault").display());
    control
        .put_location(pb::LocationInfo {
            name: "vault".into(),
            url: vault.clone(),
            region: "eu-west".into(),
            jurisdictions: vec!["EU".into()],
        })
        .await
        .unwrap();
    let backup = control.backup_control_plane("vault").await.unwrap();
    assert!(backup.verified, "{backup:?}");
    assert!(backup.records > 0, "{backup:?}");

    // The lost control plane goes on after the backup.
    ledger.extend(write(&us_gateway, "ledger", 40..80).await);
    let moved = control
        .failover(pb::FailoverRequest {
            namespace: "ledger".into(),
            to_region: "eu-west".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(moved.len(), 1, "{moved:?}");
    let moved_epoch = moved[0].epoch;
    assert_eq!(route(&control, "ledger").await.shard, "eu-west-s1");
    ledger.extend(write(&eu_gateway, "ledger", 80..120).await);
    control
        .place_namespace(pb::Placement {
            name: "late".into(),
            home_region: "us-east".into(),
            mode: pb::NamespaceMode::RegionLocked as i32,
            allowed_jurisdictions: vec!["US".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    write(&us_gateway, "late", 0..5).await;
    // Leader changes after the backup: the lost control plane's Raft term
    // (and so its lease grants' numbering) is above what a new control
    // plane starts at, which must still be listened to.
    for _ in 0..2 {
        let leader = common::control_leader(&lab, &control)
            .await
            .expect("a control-plane leader");
        lab.kill(&leader).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while common::control_leader(&lab, &control)
            .await
            .is_none_or(|now| now == leader)
        {
            assert!(Instant::now() < deadline, "no new control-plane leader");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        lab.restart(&leader).unwrap();
    }
    ledger.extend(write(&eu_gateway, "ledger", 120..130).await);

    // Total loss: every member and its storage.
    let members: Vec<_> = state
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Control)
        .cloned()
        .collect();
    let wiped = lab.kill_and_wipe("control").unwrap();
    assert_eq!(wiped.len(), members.len(), "{wiped:?}");
    // One shard silent through the restore: its only node is down.
    lab.kill("ap-south-1").unwrap();
    lab.restart("control").unwrap();
    let fresh = lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(60),
    );
    // The new control plane knows nothing of the old one's namespaces.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match fresh.list_placements().await {
            Ok(placements) => {
                assert!(placements.placements.is_empty(), "{placements:?}");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "no new control plane: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = fresh
        .list_control_backups(pb::ListControlBackupsRequest {
            url: vault.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|b| &b.backup_id).collect::<Vec<_>>(),
        [&backup.backup_id]
    );

    let job = fresh
        .restore_control_plane(pb::RestoreControlPlaneRequest {
            url: vault.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(job.kind, "rebuild", "{job:?}");
    // It waits for the silent shard, and changes nothing meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = fresh.get_job(job.id).await.unwrap();
        assert_eq!(now.state, pb::JobState::Running as i32, "{now:?}");
        if now.step.contains("ap-south-s1") && now.done_units + 1 == now.total_units {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuild does not wait: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let impatient = lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(3),
    );
    let refused = impatient
        .place_namespace(pb::Placement {
            name: "during".into(),
            home_region: "us-east".into(),
            mode: pb::NamespaceMode::RegionLocked as i32,
            allowed_jurisdictions: vec!["US".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("rebuilding"),
        "a change during the rebuild: {refused}"
    );
    assert!(
        matches!(refused, ClientError::FailedPrecondition(_)),
        "{refused:?}"
    );
    // Named lost: the rebuild decides without it.
    fresh
        .restore_control_plane(pb::RestoreControlPlaneRequest {
            lost_shards: vec!["ap-south-s1".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let done = common::wait_job(&fresh, job.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    let rebuild = done.rebuild.clone().expect("rebuild info");
    let verdict = |name: &str| {
        rebuild
            .outcome
            .iter()
            .find(|o| o.namespace == name)
            .map(|o| (o.verdict.as_str(), o.shard.as_str(), o.epoch))
    };
    assert_eq!(
        verdict("ledger"),
        Some(("adopted", "eu-west-s1", moved_epoch)),
        "{rebuild:?}"
    );
    assert_eq!(
        verdict("orders"),
        Some(("kept", "us-east-s1", 1)),
        "{rebuild:?}"
    );
    assert_eq!(
        verdict("notes"),
        Some(("kept", "eu-west-s1", 1)),
        "{rebuild:?}"
    );
    assert_eq!(
        verdict("late"),
        Some(("unknown", "us-east-s1", 0)),
        "{rebuild:?}"
    );
    assert_eq!(rebuild.lost_shards, ["ap-south-s1"]);

    // Every namespace routes again; the failed-over one where it lives,
    // with the stale copy the backup named as its primary a standby.
    let ledger_route = route(&fresh, "ledger").await;
    assert_eq!(ledger_route.shard, "eu-west-s1", "{ledger_route:?}");
    assert_eq!(ledger_route.epoch, moved_epoch);
    assert!(
        ledger_route
            .standbys
            .iter()
            .any(|s| s.shard == "us-east-s1"),
        "{ledger_route:?}"
    );
    assert_eq!(route(&fresh, "orders").await.shard, "us-east-s1");
    assert_eq!(route(&fresh, "notes").await.shard, "eu-west-s1");
    lab.restart("ap-south-1").unwrap();

    // Writes continue through both gateways; nothing acknowledged is lost.
    ledger.push(write_eventually(&us_gateway, "ledger", "ledger-after").await);
    orders.push(write_eventually(&us_gateway, "orders", "orders-after").await);
    notes.push(write_eventually(&eu_gateway, "notes", "notes-after").await);
    assert_all_present(&eu_gateway, "ledger", &ledger).await;
    assert_all_present(&us_gateway, "orders", &orders).await;
    assert_all_present(&eu_gateway, "notes", &notes).await;

    // No epoch collision: the next failover gets an epoch above all used,
    // and the former primary (now a standby) takes the namespace back
    // with every write.
    let deadline = Instant::now() + Duration::from_secs(90);
    let back = loop {
        match fresh
            .failover(pb::FailoverRequest {
                namespace: "ledger".into(),
                to_region: "us-east".into(),
                ..Default::default()
            })
            .await
        {
            Ok(back) => break back,
            Err(err) => {
                assert!(Instant::now() < deadline, "no failover back: {err}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].epoch > moved_epoch, "{back:?}");
    ledger.push(write_eventually(&us_gateway, "ledger", "ledger-back").await);
    assert_all_present(&us_gateway, "ledger", &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_backups_run_on_their_schedule_and_old_ones_expire() {
    let dir = tempfile::tempdir().unwrap();
    let lab = common::us_east_lab(&dir.path().join("lab"), 1, true, &[]).await;
    let control = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(30),
    );
    let vault = format!("file://{}", dir.path().join("vault").display());
    control
        .put_location(pb::LocationInfo {
            name: "vault".into(),
            url: vault.clone(),
            region: "us-east".into(),
            jurisdictions: vec!["US".into()],
        })
        .await
        .unwrap();
    let schedule = |location: &str, every_ms, keep_ms| pb::ControlBackupSchedule {
        location: location.into(),
        every_ms,
        keep_ms,
        ..Default::default()
    };
    // Refused, naming the rule.
    for (bad, rule) in [
        (schedule("nowhere", 1_000, 1_000), "no backup location"),
        (schedule("vault", 10, 1_000), "once a second"),
        (schedule("vault", 2_000, 1_000), "at least the interval"),
    ] {
        let err = control
            .set_control_backup_schedule(Some(bad))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(rule), "{err}");
    }
    let set = control
        .set_control_backup_schedule(Some(schedule("vault", 1_000, 3_000)))
        .await
        .unwrap()
        .expect("the schedule");
    assert_eq!((set.every_ms, set.keep_ms), (1_000, 3_000));
    // Backups come at the schedule's pace; the first ones expire.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let listed = loop {
        let listed = control
            .control_backups_and_schedule(pb::ListControlBackupsRequest {
                url: vault.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        for backup in &listed.backups {
            if !seen.contains(&backup.backup_id) {
                seen.push(backup.backup_id.clone());
            }
        }
        let first_gone = seen
            .first()
            .is_some_and(|first| listed.backups.iter().all(|b| &b.backup_id != first));
        if seen.len() >= 6 && first_gone {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "backups seen: {seen:?}; listed: {:?}",
            listed.backups
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Kept: those younger than 3 s (about three) and the newest.
    assert!(listed.backups.len() <= 5, "{:?}", listed.backups);
    let newest = listed.backups.last().unwrap();
    let schedule = listed.schedule.expect("the schedule");
    assert!(
        seen.contains(&schedule.last_backup_id),
        "{schedule:?} {seen:?}"
    );
    assert!(newest.records > 0 && newest.objects > 0, "{newest:?}");
    // Off: no schedule; the backups stay.
    assert!(
        control
            .set_control_backup_schedule(None)
            .await
            .unwrap()
            .is_none()
    );
    let after = control
        .control_backups_and_schedule(pb::ListControlBackupsRequest {
            url: vault.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(after.schedule.is_none());
    assert!(!after.backups.is_empty());
}
