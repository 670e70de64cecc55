//! Durability through a crash that really drops unsynced data.
//!
//! A SIGKILL leaves the page cache intact, so a kill -9 test passes even if
//! the Raft log were never fsynced. Here the node runs with a preloaded
//! library (`tests/powerloss/powerloss.c`, built with the system C compiler)
//! that remembers, per file, what was written since its last fsync; the
//! "power cut" puts every file back as of its last sync and kills the
//! process. Acknowledged writes must all be there after a restart — and the
//! same test with the log's fsync disabled must lose some, which shows the
//! harness really drops what was not synced.

mod common;

use common::TestShard;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Builds the power-loss library into `dir`.
fn build_library(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powerloss/powerloss.c");
    let library = dir.join("libpowerloss.so");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = std::process::Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .args(["-ldl", "-lpthread"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {compiler:?}: {e}"));
    assert!(status.success(), "building {} failed", source.display());
    library
}

/// Writes `count` keys one by one on a 1-node shard running under the
/// power-loss library, cuts the power, restarts the node, and returns how
/// many acknowledged writes are missing.
async fn acknowledged_writes_missing_after_power_cut(skip_fsync: bool) -> usize {
    let scratch = tempfile::tempdir().unwrap();
    let library = build_library(scratch.path());
    let trigger = scratch.path().join("cut-the-power");
    let library = library.to_string_lossy().into_owned();
    let trigger_path = trigger.to_string_lossy().into_owned();
    let mut env = vec![
        ("LD_PRELOAD", library.as_str()),
        ("MERIDIAN_POWERLOSS_TRIGGER", trigger_path.as_str()),
    ];
    if skip_fsync {
        env.push((meridian_raft::engine::UNSAFE_SKIP_LOG_FSYNC, "1"));
    }
    let mut shard = TestShard::start(1, &env).await;
    shard.client.create_namespace("durable").await.unwrap();
    let mut acked = Vec::new();
    for n in 0..300u32 {
        let key = format!("key-{n:04}");
        if shard
            .client
            .put("durable", key.as_bytes(), b"value")
            .await
            .is_ok()
        {
            acked.push(key);
        }
    }
    assert!(
        acked.len() >= 250,
        "only {} writes acknowledged",
        acked.len()
    );

    // Cut the power: the node rolls its files back to their last sync and dies.
    std::fs::write(&trigger, b"").unwrap();
    let name = shard.names().remove(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while shard.lab.is_running(&name) {
        assert!(
            Instant::now() < deadline,
            "the power cut did not stop {name}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(&trigger).unwrap();
    shard.lab.restart(&name).unwrap();
    shard
        .lab
        .wait_ready(Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();

    let mut missing = 0;
    for key in &acked {
        let found = shard
            .client
            .get(
                "durable",
                key.as_bytes(),
                meridian_client::pb::Consistency::Strong,
            )
            .await;
        match found {
            Ok(Some(kv)) if kv.value == b"value" => {}
            // Gone, or the whole namespace is gone (its creation was lost).
            Ok(_) | Err(meridian_client::ClientError::NotFound(_)) => missing += 1,
            Err(other) => panic!("reading {key} after the restart: {other}"),
        }
    }
    eprintln!(
        "log fsync {}: {missing} of {} acknowledged writes missing after the power cut",
        if skip_fsync { "off" } else { "on" },
        acked.len()
    );
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut() {
    let missing = acknowledged_writes_missing_after_power_cut(false).await;
    assert_eq!(missing, 0, "acknowledged writes lost in a power cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_log_fsync_a_power_cut_loses_acknowledged_writes() {
    // The harness must be able to see a missing fsync, or the test above
    // proves nothing.
    let missing = acknowledged_writes_missing_after_power_cut(true).await;
    assert!(
        missing > 0,
        "no acknowledged write was lost without the fsync: the power cut does not drop unsynced data"
    );
}
