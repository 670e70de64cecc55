//! A follower that missed thousands of writes catches up — through a snapshot
//! when the log it needs was compacted away — and ends with the same digest.

mod common;

use common::TestShard;
use futures::StreamExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot_and_digests_match() {
    // Small snapshot thresholds so that the missed range is compacted away and the
    // follower has to take a snapshot.
    let mut shard = TestShard::start(
        3,
        &[
            ("MERIDIAN__RAFT__SNAPSHOT_AFTER_ENTRIES", "500"),
            ("MERIDIAN__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT", "50"),
        ],
    )
    .await;
    shard.client.create_namespace("catchup").await.unwrap();
    let leader = shard.leader().await;
    let follower = shard.names().into_iter().find(|n| *n != leader).unwrap();
    shard.lab.kill(&follower).unwrap();

    let writes = 3000;
    let client = &shard.client;
    futures::stream::iter(0..writes)
        .map(|i| async move {
            let key = format!("k{i:05}");
            client
                .put("catchup", key.as_bytes(), format!("v{i}").as_bytes())
                .await
                .unwrap();
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    // A few deletes, so the digest covers removals too.
    for i in (0..writes).step_by(100) {
        client
            .delete("catchup", format!("k{i:05}").as_bytes())
            .await
            .unwrap();
    }

    let leader_status = shard
        .client
        .cluster_status_of(&shard.address(&leader))
        .await
        .unwrap();
    assert!(
        leader_status.purged_index > 0,
        "the leader compacted its log (purged up to {})",
        leader_status.purged_index
    );

    shard.lab.restart(&follower).unwrap();
    let target = shard.leader_applied().await;
    let status = shard
        .wait_applied(&follower, target, Duration::from_secs(60))
        .await;
    assert!(
        status.snapshot_index > 0,
        "the follower caught up from a snapshot (snapshot index {})",
        status.snapshot_index
    );

    let client = &shard.client;
    let mut digests = Vec::new();
    for name in shard.names() {
        let integrity = client
            .check_integrity_on(&shard.address(&name), "catchup")
            .await
            .unwrap();
        digests.push((name, integrity.digest, integrity.key_count));
    }
    let expected_keys = (writes - writes / 100) as u64;
    for (name, digest, keys) in &digests {
        assert_eq!(*keys, expected_keys, "{name} key count");
        assert_eq!(
            digest, &digests[0].1,
            "{name} digest equals {}'s",
            digests[0].0
        );
    }
}
