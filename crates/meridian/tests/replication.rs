//! Active-passive replication across the emulated WAN: committed changes of a
//! namespace reach its standby region with the primary's versions, resume after
//! the standby region was down, and are refused on the standby itself.

use meridian_client::{Client, pb};
mod common;

use common::{lab_client, region_nodes};
use meridian_lab::ProcessRole;
use std::time::{Duration, Instant};

async fn digest(client: &Client, namespace: &str) -> pb::CheckIntegrityResponse {
    client.check_integrity(namespace).await.unwrap()
}

/// Waits until the primary's leader reports the standby caught up.
async fn wait_caught_up(primary: &Client, namespace: &str) -> pb::NamespaceReplication {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = primary.replication_status().await.unwrap();
        let entry = status
            .namespaces
            .into_iter()
            .find(|n| n.namespace == namespace)
            .expect("the namespace is replicated");
        if !entry.standbys.is_empty()
            && entry
                .standbys
                .iter()
                .all(|s| s.acked_seq == entry.change_seq && s.lag_entries == 0)
        {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "standby did not catch up: {entry:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_standby_with_identical_versions_and_resume_after_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = common::multi_region_lab(dir.path()).await;
    let control = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    control
        .place_namespace(common::us_east_with_eu_standby("orders"))
        .await
        .unwrap();
    let gateway = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Gateway, Some("us-east")),
        Duration::from_secs(20),
    );
    for i in 0..300 {
        let key = format!("order-{:04}", i % 200);
        gateway
            .put("orders", key.as_bytes(), format!("v{i}").as_bytes())
            .await
            .unwrap();
        if i % 7 == 0 {
            gateway.delete("orders", key.as_bytes()).await.unwrap();
        }
    }
    let primary = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(20));
    let standby = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(20));
    let caught_up = wait_caught_up(&primary, "orders").await;
    assert!(caught_up.change_seq >= 300, "{caught_up:?}");
    let on_primary = digest(&primary, "orders").await;
    let on_standby = digest(&standby, "orders").await;
    assert_eq!(on_primary.digest, on_standby.digest);
    assert_eq!(on_primary.key_count, on_standby.key_count);

    // Standby reads: bounded reads are served by the standby while it is
    // current within the bound (the primary's heartbeats keep it known), eventual
    // ones always; strong reads belong to the primary.
    let bounded = pb::GetRequest {
        namespace: "orders".into(),
        key: b"order-0001".to_vec(),
        read: Some(pb::ReadOptions {
            consistency: pb::Consistency::Bounded as i32,
            max_staleness_ms: 3_000,
            ..Default::default()
        }),
    };
    let from_standby = standby.get_request(bounded.clone()).await.unwrap();
    let from_primary = primary.get_request(bounded.clone()).await.unwrap();
    assert_eq!(from_standby.kv, from_primary.kv);
    let strong = standby
        .get("orders", b"order-0001", pb::Consistency::Strong)
        .await
        .unwrap_err();
    assert!(strong.to_string().contains("standby"), "{strong}");
    let eu_gateway = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Gateway, Some("eu-west")),
        Duration::from_secs(20),
    );
    assert_eq!(
        eu_gateway.get_request(bounded).await.unwrap().kv,
        from_primary.kv
    );

    // The standby refuses client writes, naming the rule.
    let refused = standby.put("orders", b"x", b"y").await.unwrap_err();
    assert!(refused.to_string().contains("standby"), "{refused}");

    // The standby region goes away while writes continue; back, it catches up
    // from its durable position.
    lab.kill("eu-west").unwrap();
    for i in 0..100 {
        gateway
            .put("orders", format!("late-{i}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    let status = primary.replication_status().await.unwrap();
    let lagging = status
        .namespaces
        .iter()
        .find(|n| n.namespace == "orders")
        .unwrap();
    assert!(
        lagging.standbys.iter().all(|s| s.lag_entries > 0),
        "{lagging:?}"
    );
    lab.restart("eu-west").unwrap();
    lab.wait_ready(Duration::from_secs(120), |_, _| {})
        .await
        .unwrap();
    wait_caught_up(&primary, "orders").await;
    assert_eq!(
        digest(&primary, "orders").await.digest,
        digest(&standby, "orders").await.digest
    );
    // Compression: fewer bytes crossed the WAN than were written.
    let status = primary.replication_status().await.unwrap();
    let sent: u64 = status
        .namespaces
        .iter()
        .flat_map(|n| &n.standbys)
        .map(|s| s.bytes_sent)
        .sum();
    assert!(sent > 0 && sent < status.raw_bytes_sent, "{status:?}");
}
