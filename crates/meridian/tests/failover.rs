//! Region loss and failover in the lab (TLS and WAN emulation on): an async and
//! a sync active-passive namespace fail over automatically when their primary
//! region is killed, writes resume through a surviving gateway; for the async
//! one every acknowledged write is either present or recorded as lost, for the
//! sync one none is missing. The returning region rejoins as a standby that
//! converges to the new primary, and a drain moves it back losing nothing.

use meridian_client::{Client, ClientError, ClientOptions, pb};
mod common;

use common::{lab_client, region_nodes};
use meridian_lab::ProcessRole;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the writer saw: acknowledged writes, and writes whose outcome is unknown.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<String, String>,
    unknown: BTreeSet<String>,
    /// When each write was acknowledged.
    acked_at: BTreeMap<String, Instant>,
    /// The same, in Unix ms (to compare with the failover record's times).
    acked_unix_ms: BTreeMap<String, u64>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn wait_for<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_failover_on_region_loss_keeps_every_acknowledged_write_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = common::multi_region_lab(dir.path()).await;
    let control = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    for (name, sync) in [("ledger", false), ("sync-ledger", true)] {
        control
            .place_namespace(pb::Placement {
                sync,
                ..common::us_east_with_eu_standby(name)
            })
            .await
            .unwrap();
    }
    // A sync namespace whose policy degrades it to async when its standby is lost.
    control
        .place_namespace(pb::Placement {
            sync: true,
            on_standby_loss: pb::StandbyLossPolicy::Degrade as i32,
            ..common::us_east_with_eu_standby("sync-degrade")
        })
        .await
        .unwrap();
    // A namespace whose own policy says "only an operator fails me over".
    control
        .place_namespace(pb::Placement {
            manual_failover_only: true,
            ..common::us_east_with_eu_standby("held")
        })
        .await
        .unwrap();
    let sync_seen = Arc::new(Mutex::new(Seen::default()));

    // A client in eu-west writes continuously through its local gateway.
    let gateway = Arc::new(lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Gateway, Some("eu-west")),
        Duration::from_secs(2),
    ));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (gateway, seen, stop) = (gateway.clone(), seen.clone(), stop.clone());
        let sync_seen = sync_seen.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("k-{i:06}");
                let value = format!("v-{i}");
                if gateway
                    .put("sync-ledger", key.as_bytes(), value.as_bytes())
                    .await
                    .is_ok()
                {
                    sync_seen
                        .lock()
                        .unwrap()
                        .acked
                        .insert(key.clone(), value.clone());
                }
                match gateway
                    .put("ledger", key.as_bytes(), value.as_bytes())
                    .await
                {
                    Ok(_) => {
                        let mut seen = seen.lock().unwrap();
                        seen.acked.insert(key.clone(), value);
                        seen.acked_at.insert(key.clone(), Instant::now());
                        seen.acked_unix_ms.insert(key, unix_ms());
                    }
                    Err(ClientError::OutcomeUnknown(_)) | Err(ClientError::Unavailable(_)) => {
                        seen.lock().unwrap().unknown.insert(key);
                    }
                    Err(other) => {
                        // Refusals (fenced, no lease) wrote nothing.
                        let _ = other;
                    }
                }
                i += 1;
            }
        })
    };
    wait_for(
        "writes before the kill",
        Duration::from_secs(30),
        async || (seen.lock().unwrap().acked.len() >= 50).then_some(()),
    )
    .await;

    // Lose the primary region.
    let killed_at = Instant::now();
    lab.kill("us-east").unwrap();
    let failover = wait_for(
        "an automatic failover",
        Duration::from_secs(60),
        async || {
            control
                .list_failovers(Some("ledger"))
                .await
                .ok()
                .and_then(|f| f.into_iter().next())
        },
    )
    .await;
    let failover_seen_at = Instant::now();
    assert_eq!(failover.from_region, "us-east");
    assert_eq!(failover.to_region, "eu-west");
    assert_eq!(failover.epoch, 2);
    assert!(failover.cause.contains("failed"), "{}", failover.cause);
    wait_for(
        "a write after the failover",
        Duration::from_secs(60),
        async || {
            let seen = seen.lock().unwrap();
            seen.acked_at
                .values()
                .any(|at| *at > failover_seen_at)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "writes resumed {:?} after the region was killed",
        killed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Per-namespace policy: the same dead primary, but "held" stays put.
    assert!(
        control
            .list_failovers(Some("held"))
            .await
            .unwrap()
            .is_empty(),
        "a manual-only namespace was failed over automatically"
    );
    writer.await.unwrap();

    // Sync: every acknowledged write survived the region loss. (Durability
    // is the point here, read from the promoted copy's leader once it is the
    // primary; linearizable reads under faults are linearizable.rs's job.)
    let new_primary = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(20));
    wait_for(
        "sync-ledger to be primary in eu-west",
        Duration::from_secs(60),
        async || {
            let status = new_primary.replication_status().await.ok()?;
            let ns = status
                .namespaces
                .iter()
                .find(|n| n.namespace == "sync-ledger")?;
            (ns.role == pb::NamespaceRole::Primary as i32).then_some(())
        },
    )
    .await;
    let sync_acked = std::mem::take(&mut sync_seen.lock().unwrap().acked);
    assert!(sync_acked.len() >= 20, "{}", sync_acked.len());
    for (key, value) in &sync_acked {
        // An eventual read may reach a member a few entries behind: poll.
        let found = wait_for(
            &format!("acknowledged sync write {key} on the new primary"),
            Duration::from_secs(10),
            async || {
                new_primary
                    .get("sync-ledger", key.as_bytes(), pb::Consistency::Eventual)
                    .await
                    .ok()
                    .flatten()
            },
        )
        .await;
        assert_eq!(
            found.value,
            value.as_bytes().to_vec(),
            "sync write {key} was acknowledged and lost"
        );
    }

    // And strong reads of them are served by the promoted copy (the former
    // primary counts as holding what it had; no unconfirmed write slipped
    // in after the promotion).
    for key in sync_acked.keys().take(20) {
        let found = new_primary
            .get("sync-ledger", key.as_bytes(), pb::Consistency::Strong)
            .await
            .unwrap();
        assert!(found.is_some(), "{key}");
    }

    // Sync, with its only standby region gone (the old primary): a write is
    // refused before anything is applied, with a typed reason naming the
    // rule — not applied and left "outcome unknown" for want of a standby.
    let refused_at = Instant::now();
    let refused = gateway
        .put("sync-ledger", b"after-region-loss", b"x")
        .await
        .expect_err("a sync write was acknowledged with no standby able to hold it");
    assert!(
        matches!(
            refused.reason(),
            Some(meridian_client::Reason::NoSyncQuorum { .. })
        ),
        "{refused}"
    );
    assert!(
        refused_at.elapsed() < Duration::from_secs(4),
        "the refusal took {:?}",
        refused_at.elapsed()
    );
    assert!(
        new_primary
            .get(
                "sync-ledger",
                b"after-region-loss",
                pb::Consistency::Eventual
            )
            .await
            .unwrap()
            .is_none(),
        "the refused write was applied"
    );

    // The same situation under on-standby-loss=degrade: the namespace is
    // switched to async (in the failover history and the audit log) and
    // takes writes again.
    let degraded = wait_for(
        "the standby-loss policy to degrade sync-degrade",
        Duration::from_secs(60),
        async || {
            let history = control.list_failovers(Some("sync-degrade")).await.ok()?;
            history
                .into_iter()
                .find(|f| f.cause.contains("switched to async"))
        },
    )
    .await;
    assert_eq!(degraded.from_region, degraded.to_region, "{degraded:?}");
    wait_for(
        "a write to the degraded namespace",
        Duration::from_secs(30),
        async || {
            gateway
                .put("sync-degrade", b"while-degraded", b"x")
                .await
                .ok()
        },
    )
    .await;
    let placements = control.list_placements().await.unwrap().placements;
    let placement = placements
        .iter()
        .find(|p| p.name == "sync-degrade")
        .unwrap();
    assert!(placement.sync_degraded, "{placement:?}");
    let audit = control.audit_log(0, 0).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action.contains("sync-degrade") && a.action.contains("async")),
        "the switch is not in the audit log"
    );

    // Async: every acknowledged write is on the new primary, or was
    // acknowledged by the old one before it was fenced.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut missing = BTreeSet::new();
    for (key, value) in &seen.acked {
        let found = new_primary
            .get("ledger", key.as_bytes(), pb::Consistency::Strong)
            .await
            .unwrap();
        match found {
            Some(kv) => assert_eq!(kv.value, value.as_bytes(), "{key}"),
            None => {
                // Only the old primary can have acknowledged it (an answer
                // in flight on the WAN may arrive just after the kill).
                assert!(
                    seen.acked_at[key] < failover_seen_at,
                    "{key} was acknowledged after the failover and is missing"
                );
                missing.insert(key.clone());
            }
        }
    }
    // Every missing write is inside the loss window the failover reported:
    // the old primary acknowledged it before its last write lease ran out
    // (this client hears of an acknowledgement within a WAN trip of it: 250 ms
    // allowed); and those acknowledged before the primary last reported its
    // position are among the changes the record counts as known lost.
    assert!(
        failover.writes_until_ms >= failover.reported_at_ms && failover.reported_at_ms > 0,
        "{failover:?}"
    );
    const TRIP: u64 = 250;
    for key in &missing {
        assert!(
            seen.acked_unix_ms[key] <= failover.writes_until_ms + TRIP,
            "{key} was acknowledged at {} ms, after the old primary's writes ended ({failover:?})",
            seen.acked_unix_ms[key]
        );
    }
    let known_lost = failover.primary_seq.saturating_sub(failover.promoted_seq);
    let reported_missing = missing
        .iter()
        .filter(|key| seen.acked_unix_ms[*key] + TRIP < failover.reported_at_ms)
        .count() as u64;
    assert!(
        reported_missing <= known_lost,
        "{reported_missing} missing writes were acknowledged before the last report, \
         but the record counts {known_lost} ({failover:?}, missing {missing:?})"
    );

    // The old primary region returns: it is fenced to a standby, sets aside
    // exactly the writes its successor never got, and is rebuilt.
    lab.restart("us-east").unwrap();
    lab.wait_ready(Duration::from_secs(120), |_, _| {})
        .await
        .unwrap();
    let old_primary = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(20));
    let refused = old_primary.put("ledger", b"late", b"x").await.unwrap_err();
    assert!(
        refused.to_string().contains("standby") || refused.to_string().contains("no write lease"),
        "{refused}"
    );
    let lost = wait_for(
        "the old primary to record its lost writes",
        Duration::from_secs(60),
        async || {
            let status = old_primary.replication_status().await.ok()?;
            let ns = status.namespaces.iter().find(|n| n.namespace == "ledger")?;
            (ns.role == pb::NamespaceRole::Standby as i32 && ns.epoch == 2).then_some(())?;
            old_primary.lost_writes("ledger").await.ok()
        },
    )
    .await;
    let lost_keys: BTreeSet<String> = lost
        .iter()
        .map(|w| String::from_utf8_lossy(&w.key).into_owned())
        .collect();
    for key in &missing {
        assert!(
            lost_keys.contains(key),
            "acknowledged {key} is missing and not recorded as lost"
        );
    }
    for key in &lost_keys {
        assert!(
            seen.acked.contains_key(key) || seen.unknown.contains(key),
            "{key} recorded as lost but never attempted"
        );
        if let Some(value) = seen.acked.get(key) {
            let recorded = lost
                .iter()
                .find(|w| String::from_utf8_lossy(&w.key) == *key)
                .unwrap();
            assert_eq!(recorded.value.as_deref(), Some(value.as_bytes()));
        }
    }

    // It converges to the new primary (a full copy if it diverged).
    wait_for(
        "the old primary to converge",
        Duration::from_secs(60),
        async || {
            let a = new_primary.check_integrity("ledger").await.ok()?;
            let b = old_primary.check_integrity("ledger").await.ok()?;
            (a.digest == b.digest && a.key_count == b.key_count).then_some(())
        },
    )
    .await;

    // Failback by drain: nothing acknowledged is lost, digests equal before.
    // (A drain pauses writes, waits for the standby and compares digests
    // across the WAN: give the call time.)
    let control = Client::with_options(
        lab.state().endpoints(ProcessRole::Control, None),
        ClientOptions {
            attempt_timeout: Duration::from_secs(60),
            retry_budget: Duration::from_secs(60),
            dialer: lab.dialer().clone(),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    // A writer keeps going through the drain (async mode): whatever it got
    // acknowledged must be on the namespace's home afterwards.
    let drain_acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drain_writer = {
        let (gateway, drain_acked, stop) = (gateway.clone(), drain_acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("drain-{i:05}");
                if gateway.put("ledger", key.as_bytes(), b"d").await.is_ok() {
                    drain_acked.lock().unwrap().push(key);
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = control
        .failover(pb::FailoverRequest {
            namespace: "ledger".into(),
            to_region: "us-east".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drain_writer.await.unwrap();
    assert_eq!(back.len(), 1);
    // The standby reached the drained primary's final position before it
    // was promoted. (It may be further: a write admitted just before the
    // revocation can commit after it — never acknowledged, since the lease
    // is gone — and still be shipped.)
    assert!(
        back[0].promoted_seq >= back[0].primary_seq,
        "a drain loses nothing: {back:?}"
    );
    let home = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Gateway, Some("us-east")),
        Duration::from_secs(20),
    );
    home.put("ledger", b"after-failback", b"ok").await.unwrap();
    let drain_acked = std::mem::take(&mut *drain_acked.lock().unwrap());
    assert!(!drain_acked.is_empty());
    for key in &drain_acked {
        let kv = home
            .get("ledger", key.as_bytes(), pb::Consistency::Strong)
            .await
            .unwrap();
        assert!(
            kv.is_some(),
            "{key} was acknowledged during the drain and lost"
        );
    }
    for (key, value) in seen
        .acked
        .iter()
        .filter(|(k, _)| !missing.contains(*k))
        .take(50)
    {
        let kv = home
            .get("ledger", key.as_bytes(), pb::Consistency::Strong)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kv.value, value.as_bytes());
    }

    // Residency: a failover target outside the namespace's jurisdictions is
    // refused, naming the rule.
    let refused = control
        .failover(pb::FailoverRequest {
            namespace: "ledger".into(),
            to_region: "ap-south".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("residency"), "{refused}");

    // The lost writes can be re-applied through the current primary (the CLI
    // finds them on every shard and writes them through a gateway).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "failover",
            "lost",
            "ledger",
            "--reapply",
            "--output",
            "json",
            "--lab",
        ])
        .arg(lab.dir())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // Every lost key was new (the writer never rewrites a key), so none
    // changed since the failover: each is re-applied once.
    let lost_keys: BTreeSet<&[u8]> = lost.iter().map(|w| w.key.as_slice()).collect();
    assert_eq!(
        report["reapplied"].as_array().map(Vec::len),
        Some(lost_keys.len()),
        "{report}"
    );
    for key in &missing {
        let kv = home
            .get("ledger", key.as_bytes(), pb::Consistency::Strong)
            .await
            .unwrap();
        assert_eq!(
            kv.map(|kv| kv.value),
            Some(seen.acked[key].as_bytes().to_vec()),
            "{key} was not re-applied"
        );
    }

    // The degraded namespace goes back to sync once its standby (the
    // returned region, rebuilt) is current again; that is recorded too.
    wait_for(
        "sync to be restored on sync-degrade",
        Duration::from_secs(90),
        async || {
            let placements = control.list_placements().await.ok()?.placements;
            let placement = placements.iter().find(|p| p.name == "sync-degrade")?;
            (!placement.sync_degraded).then_some(())
        },
    )
    .await;
    let history = control.list_failovers(Some("sync-degrade")).await.unwrap();
    assert!(
        history.iter().any(|f| f.cause.contains("sync restored")),
        "{history:?}"
    );
}
