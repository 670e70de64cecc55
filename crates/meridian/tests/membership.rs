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
