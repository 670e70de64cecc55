//! Members can be added and removed while the shard serves.

mod common;

use common::TestShard;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_node_then_remove_one_while_serving() {
    let mut shard = TestShard::start(3, &[]).await;
    let client = &shard.client;
    client.create_namespace("members").await.unwrap();
    for i in 0..300 {
        client
            .put("members", format!("k{i}").as_bytes(), b"v")
            .await
            .unwrap();
    }

    let new_node = shard.lab.add_node("us-east").unwrap();
    let record = shard.lab.process(&new_node).unwrap().clone();
    let members = shard
        .client
        .add_node(record.node_id.unwrap(), &record.grpc)
        .await
        .unwrap();
    let added = members
        .iter()
        .find(|m| m.node_id == record.node_id.unwrap())
        .unwrap();
    assert!(added.voter, "the new node became a voter: {members:?}");

    shard
        .client
        .put("members", b"after-add", b"v")
        .await
        .unwrap();
    let target = shard.leader_applied().await;
    shard
        .wait_applied(&new_node, target, Duration::from_secs(30))
        .await;
    let leader = shard.leader().await;
    let expected = shard
        .client
        .check_integrity_on(&shard.address(&leader), "members")
        .await
        .unwrap();
    let copy = shard
        .client
        .check_integrity_on(&record.grpc, "members")
        .await
        .unwrap();
    assert_eq!(copy.digest, expected.digest);

    // Remove a follower that is not the new node.
    let removed = shard
        .names()
        .into_iter()
        .find(|n| *n != leader && *n != new_node)
        .unwrap();
    let removed_id = shard.lab.process(&removed).unwrap().node_id.unwrap();
    let members = shard.client.remove_node(removed_id).await.unwrap();
    assert!(
        members.iter().all(|m| m.node_id != removed_id),
        "{members:?}"
    );
    assert_eq!(members.iter().filter(|m| m.voter).count(), 3);

    // The removed node can be stopped and the shard keeps accepting writes.
    shard.lab.kill(&removed).unwrap();
    shard
        .client
        .put("members", b"after-remove", b"v")
        .await
        .unwrap();
    let status = shard.client.cluster_status().await.unwrap();
    assert_eq!(status.members.len(), 3);
}

/// With mutual TLS and a control plane, a shard's Raft answers only its own
/// members: a node added to the shard is let in (it registered for the shard
/// first, so the members learn its identity before its first Raft call) and
/// catches up to the same digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_shard_whose_raft_admits_only_members() {
    use meridian_client::pb;
    use meridian_lab::ProcessRole;

    let dir = tempfile::tempdir().unwrap();
    let mut lab = common::us_east_lab(&dir.path().join("lab"), 3, false, &[]).await;
    let state = lab.state().clone();
    let control = common::lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(30),
    );
    control
        .place_namespace(pb::Placement {
            name: "members".into(),
            home_region: "us-east".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let gateway = common::lab_client(
        &lab,
        state.endpoints(ProcessRole::Gateway, None),
        Duration::from_secs(30),
    );
    for i in 0..100 {
        gateway
            .put("members", format!("k{i}").as_bytes(), b"v")
            .await
            .unwrap();
    }

    let new_node = lab.add_node("us-east").unwrap();
    let record = lab.process(&new_node).unwrap().clone();
    let nodes = common::lab_client(
        &lab,
        common::region_nodes(&lab, "us-east"),
        Duration::from_secs(30),
    );
    // The new process listens once it has started.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&record.grpc).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{new_node} never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let members = nodes
        .add_node(record.node_id.unwrap(), &record.grpc)
        .await
        .unwrap();
    assert!(
        members
            .iter()
            .any(|m| m.node_id == record.node_id.unwrap() && m.voter),
        "the new node became a voter: {members:?}"
    );
    gateway.put("members", b"after-add", b"v").await.unwrap();

    // The new copy reaches the same digest as the others. Both are read
    // anew each time: us-east-1 may itself still be applying the last write
    // (a stale reference the new copy has already passed).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reference = nodes
            .check_integrity_on(&lab.process("us-east-1").unwrap().grpc, "members")
            .await
            .unwrap();
        let copy = nodes.check_integrity_on(&record.grpc, "members").await;
        if copy.as_ref().is_ok_and(|c| c.digest == reference.digest) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new member never caught up: {copy:?} vs {reference:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
