//! Split brain: us-east is partitioned from every other region while a client
//! inside us-east keeps writing to its local shard. The other regions fail the
//! namespace over; the cut-off primary, without a write lease, refuses writes
//! (fenced) instead of accepting them silently, and serves no strong, session
//! or bounded read either (a stale read would break linearizability). After
//! the partition heals it
//! becomes a standby of the new primary and converges to it: nothing diverges.

use meridian_client::pb;
mod common;

use common::{lab_client, region_nodes};
use meridian_lab::ProcessRole;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_is_fenced_and_rejoins_without_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let lab = common::multi_region_lab(dir.path()).await;
    let control_endpoints = lab.state().endpoints(ProcessRole::Control, None);
    let control = lab_client(&lab, control_endpoints, Duration::from_secs(20));
    control
        .place_namespace(common::us_east_with_eu_standby("accounts"))
        .await
        .unwrap();
    // A client inside us-east, talking to its local shard directly.
    let local = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    while local.put("accounts", b"before", b"1").await.is_err() {
        assert!(Instant::now() < deadline, "no write before the partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    lab.partition("us-east", "eu-west").unwrap();
    lab.partition("us-east", "ap-south").unwrap();
    let partitioned_at = Instant::now();
    let mut acked_during = Vec::new();
    let failover = loop {
        let key = format!("during-{}", acked_during.len() + 1000);
        if local.put("accounts", key.as_bytes(), b"x").await.is_ok() {
            acked_during.push((key, Instant::now()));
        }
        if let Ok(list) = control.list_failovers(Some("accounts")).await
            && let Some(first) = list.into_iter().next()
        {
            break first;
        }
        assert!(
            partitioned_at.elapsed() < Duration::from_secs(90),
            "no failover while us-east was cut off"
        );
    };
    let failover_seen_at = Instant::now();
    assert_eq!(failover.to_region, "eu-west");
    // The cut-off primary stopped taking writes before the standby was promoted.
    for (key, at) in &acked_during {
        assert!(
            *at < failover_seen_at,
            "{key} acknowledged after the failover"
        );
    }
    for i in 0..10 {
        let refused = local
            .put("accounts", format!("fenced-{i}").as_bytes(), b"x")
            .await;
        assert!(
            refused.is_err(),
            "the partitioned old primary accepted a write after the failover"
        );
    }
    // The new primary takes writes from the rest of the world.
    let eu_gateway = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Gateway, Some("eu-west")),
        Duration::from_secs(20),
    );
    eu_gateway.put("accounts", b"after", b"2").await.unwrap();
    eu_gateway.put("accounts", b"before", b"2").await.unwrap();
    // Nor does it serve strong (or session, or bounded) reads: another region
    // is primary now and may already have taken writes it has not seen. The
    // refusal carries a typed reason, not just a message.
    let us_gateway = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Gateway, Some("us-east")),
        Duration::from_secs(1),
    );
    for consistency in [
        pb::Consistency::Strong,
        pb::Consistency::Session,
        pb::Consistency::Bounded,
    ] {
        let direct = local.get("accounts", b"before", consistency).await;
        let refused = direct.expect_err("the replaced primary served a read directly");
        assert!(
            matches!(
                refused.reason(),
                Some(meridian_client::Reason::NoLease { .. })
            ),
            "{consistency:?}: {refused}"
        );
        // Through the us-east gateway a read fails or finds the new primary;
        // it never returns the value the new primary has overwritten.
        if let Ok(kv) = us_gateway.get("accounts", b"before", consistency).await {
            assert_eq!(
                kv.map(|kv| kv.value),
                Some(b"2".to_vec()),
                "{consistency:?}: the us-east gateway served a stale read from the replaced primary"
            );
        }
    }
    // Eventual reads stay available (they promise nothing more).
    assert!(
        local
            .get("accounts", b"before", pb::Consistency::Eventual)
            .await
            .is_ok()
    );

    // Heal: the old primary learns the new epoch, becomes a standby, sets aside
    // what it alone had, and converges.
    lab.heal("us-east", "eu-west").unwrap();
    lab.heal("us-east", "ap-south").unwrap();
    let old = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(10));
    let new = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let converged = async {
            let status = old.replication_status().await.ok()?;
            let ns = status
                .namespaces
                .iter()
                .find(|n| n.namespace == "accounts")?;
            if ns.role != pb::NamespaceRole::Standby as i32 {
                return None;
            }
            let a = new.check_integrity("accounts").await.ok()?;
            let b = old.check_integrity("accounts").await.ok()?;
            (a.digest == b.digest).then_some(())
        }
        .await;
        if converged.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old primary did not converge"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = old
        .get("accounts", b"after", pb::Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(after.map(|kv| kv.value), Some(b"2".to_vec()));
    let refused = old.put("accounts", b"late", b"x").await.unwrap_err();
    assert!(refused.to_string().contains("standby"), "{refused}");
    // Whatever the old primary acknowledged during the partition and its
    // successor never got is recorded, not silently dropped.
    let lost = old.lost_writes("accounts").await.unwrap();
    let lost_keys: Vec<String> = lost
        .iter()
        .map(|w| String::from_utf8_lossy(&w.key).into_owned())
        .collect();
    for (key, _) in &acked_during {
        let kept = new
            .get("accounts", key.as_bytes(), pb::Consistency::Strong)
            .await
            .unwrap()
            .is_some();
        assert!(kept || lost_keys.contains(key), "{key} vanished");
    }

    reapply_lost_writes(&lab, &new, &lost).await;
}

/// `meridian failover lost --reapply` writes back each lost key's last value
/// only where the key has not changed since the failover, removes the records
/// of what it re-applied, keeps the others until `--discard`.
async fn reapply_lost_writes(
    lab: &meridian_lab::Lab,
    new: &meridian_client::Client,
    lost: &[pb::LostWrite],
) {
    if lost.is_empty() {
        eprintln!("no write was lost in this run; nothing to re-apply");
        return;
    }
    // One lost key changes on the new primary after the failover.
    let changed = lost[0].key.clone();
    new.put("accounts", &changed, b"newer").await.unwrap();
    let lab_dir = lab.dir().to_string_lossy().into_owned();
    let cli = |extra: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["failover", "lost", "accounts", extra, "--lab", &lab_dir])
            .args(["--output", "json"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let report = cli("--reapply");
    let changed_name = String::from_utf8_lossy(&changed).into_owned();
    assert_eq!(
        report["skipped_changed_since_failover"],
        serde_json::json!([changed_name]),
        "{report}"
    );
    let reapplied: Vec<String> = report["reapplied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for write in lost.iter().filter(|w| w.key != changed) {
        let name = String::from_utf8_lossy(&write.key).into_owned();
        assert!(reapplied.contains(&name), "{name} not re-applied: {report}");
    }
    assert_eq!(
        new.get("accounts", &changed, pb::Consistency::Strong)
            .await
            .unwrap()
            .map(|kv| kv.value),
        Some(b"newer".to_vec()),
        "a newer value was overwritten by a lost write"
    );
    for name in &reapplied {
        let last = lost
            .iter()
            .rfind(|w| String::from_utf8_lossy(&w.key) == *name)
            .unwrap();
        let found = new
            .get("accounts", name.as_bytes(), pb::Consistency::Strong)
            .await
            .unwrap()
            .map(|kv| kv.value);
        assert_eq!(found, last.value, "{name}");
    }
    // Again: nothing left to re-apply; the changed key's record stays.
    let again = cli("--reapply");
    assert_eq!(again["reapplied"], serde_json::json!([]), "{again}");
    assert_eq!(again["lost_writes"].as_array().unwrap().len(), 1, "{again}");
    let discarded = cli("--discard");
    assert_eq!(
        discarded["records_removed"],
        serde_json::json!(1),
        "{discarded}"
    );
    let after = cli("--reapply");
    assert_eq!(after["lost_writes"], serde_json::json!([]), "{after}");
}
