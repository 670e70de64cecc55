//! Acknowledged writes survive leader loss and whole-shard crashes (real
//! processes, SIGKILL, real sockets).

mod common;

use common::{Acked, TestShard, assert_all_present};
use meridian_client::{Client, ClientError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Writes `key-{writer}-{n}` until `stop` is set; records acknowledged writes and
/// counts writes whose outcome is unknown.
async fn writer(
    client: Arc<Client>,
    writer: usize,
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let mut unknown = 0;
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("key-{writer}-{n}").into_bytes();
        let value = format!("value-{writer}-{n}").into_bytes();
        match client.put("durable", &key, &value).await {
            Ok(response) => acked.lock().await.push(Acked {
                key,
                value,
                version: response.version,
            }),
            Err(ClientError::OutcomeUnknown(_)) | Err(ClientError::Unavailable(_)) => unknown += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
        n += 1;
    }
    unknown
}

async fn wait_for_acks(acked: &Mutex<Vec<Acked>>, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().await.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes stalled below {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_leader_is_killed_and_nothing_acknowledged_is_lost() {
    let mut shard = TestShard::start(3, &[]).await;
    shard.client.create_namespace("durable").await.unwrap();
    let client =
        Arc::new(meridian_client::Client::new(shard.lab.state().node_endpoints(None)).unwrap());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(writer(client.clone(), w, acked.clone(), stop.clone())))
        .collect();

    wait_for_acks(&acked, 200).await;
    let leader = shard.leader().await;
    shard.lab.kill(&leader).unwrap();
    let before_kill = acked.lock().await.len();
    // Writes must resume under a new leader.
    wait_for_acks(&acked, before_kill + 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let new_leader = shard.leader().await;
    assert_ne!(new_leader, leader, "a new leader took over");

    let acked = acked.lock().await.clone();
    assert_all_present(&shard.client, "durable", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9_of_all_nodes() {
    let mut shard = TestShard::start(3, &[]).await;
    shard.client.create_namespace("durable").await.unwrap();
    let client =
        Arc::new(meridian_client::Client::new(shard.lab.state().node_endpoints(None)).unwrap());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| tokio::spawn(writer(client.clone(), w, acked.clone(), stop.clone())))
        .collect();
    wait_for_acks(&acked, 500).await;

    // Crash the whole shard in the middle of the stream.
    shard.lab.kill("us-east").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();

    shard.lab.restart("us-east").unwrap();
    shard
        .lab
        .wait_ready(Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    assert_all_present(&shard.client, "durable", &acked).await;
    let _ = shard.leader().await;
}
