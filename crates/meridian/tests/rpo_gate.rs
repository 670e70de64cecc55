//! The RPO gate: with `max_lag` set and the standby region partitioned away,
//! writes are refused (RESOURCE_EXHAUSTED naming the lag) once the standby is
//! that far behind, and resume when the partition heals and it catches up.

use meridian_client::{ClientError, pb};
mod common;

use common::lab_client;
use meridian_lab::ProcessRole;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stop_at_max_lag_and_resume_after_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let lab = common::multi_region_lab(dir.path()).await;
    let state = lab.state().clone();
    let control = lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    // Partition the primary from its standby without cutting either off from
    // the control-plane leader (which must keep granting the primary its lease).
    let mut leader_region = None;
    for member in state
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Control)
    {
        if let Ok(status) = control.control_status_of(&member.grpc).await
            && status.role.eq_ignore_ascii_case("leader")
        {
            leader_region = Some(member.region.clone());
        }
    }
    let standby = if leader_region.as_deref() == Some("eu-west") {
        "ap-south"
    } else {
        "eu-west"
    };
    control
        .place_namespace(pb::Placement {
            name: "orders".into(),
            home_region: "us-east".into(),
            mode: pb::NamespaceMode::ActivePassive as i32,
            standby_regions: vec![standby.into()],
            allowed_jurisdictions: vec!["US".into(), "EU".into(), "IN".into()],
            max_lag_entries: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let primary_nodes: Vec<String> = state
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Node && p.region == "us-east")
        .map(|p| p.grpc.clone())
        .collect();
    let primary = lab_client(&lab, primary_nodes, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = 0;
    while written < 10 {
        if primary
            .put("orders", format!("k{written}").as_bytes(), b"v")
            .await
            .is_ok()
        {
            written += 1;
        }
        assert!(
            Instant::now() < deadline,
            "writes before the partition failed"
        );
    }

    // The standby has everything, and the primary's leader knows it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = primary.replication_status().await.unwrap();
        let caught_up = status.namespaces.iter().any(|n| {
            n.namespace == "orders"
                && n.standbys
                    .iter()
                    .any(|s| s.acked_seq == n.change_seq && n.change_seq >= 10)
        });
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not catch up: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lab.partition("us-east", standby).unwrap();
    let mut accepted = 0;
    let refusal = loop {
        match primary
            .put("orders", format!("p{accepted}").as_bytes(), b"v")
            .await
        {
            Ok(_) => accepted += 1,
            Err(ClientError::ResourceExhausted { message, .. }) => break message,
            Err(other) => panic!("unexpected error while the standby is cut off: {other}"),
        }
        assert!(accepted <= 40, "writes were never refused");
    };
    assert!(accepted <= 20, "{accepted} writes passed a max_lag of 20");
    // A bounded read at the cut-off standby refuses once its bound has passed.
    let standby_nodes: Vec<String> = state
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Node && p.region == standby)
        .map(|p| p.grpc.clone())
        .collect();
    let standby_client = lab_client(&lab, standby_nodes, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stale = standby_client
        .get_request(pb::GetRequest {
            namespace: "orders".into(),
            key: b"k1".to_vec(),
            read: Some(pb::ReadOptions {
                consistency: pb::Consistency::Bounded as i32,
                max_staleness_ms: 1_000,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert!(
        stale.to_string().contains("read from the primary"),
        "{stale}"
    );
    assert!(refusal.contains("max_lag"), "{refusal}");
    assert!(refusal.contains(standby), "{refusal}");

    lab.heal("us-east", standby).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match primary.put("orders", b"after-heal", b"v").await {
            Ok(_) => break,
            Err(err) => assert!(
                Instant::now() < deadline,
                "writes did not resume after the standby caught up: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
