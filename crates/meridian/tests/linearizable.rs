//! Linearizability from the outside: clients write and read (strong) through
//! every region's gateway and directly to shard nodes, recording every call,
//! while faults hit a sync active-passive namespace (two standby regions) on
//! 3-node shards in every region: (1) the primary region partitioned from
//! both others until a failover, then healed; (2) the primary shard's leader
//! killed (-9) three times under load, then the whole primary region killed
//! and restarted. The recorded history goes through the linearizability
//! checker (itself shown to reject known-bad histories in its crate): zero
//! violations allowed.
//!
//! Run against another build's servers with `MERIDIAN_TEST_BINARY=path`.

use meridian_check::{Input, Output, Recorder, Verdict};
use meridian_client::{Client, ClientError, pb};
mod common;

use common::{lab_client, region_nodes};
use meridian_lab::{Lab, ProcessRole};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "linear";

/// The tests here each run sixteen processes; one at a time on a small machine.
static ONE_LAB_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

/// What a write's result says about whether it took effect.
fn write_outcome<T>(result: &Result<T, ClientError>) -> Output {
    match result {
        Ok(_) => Output::Done,
        // The server said, in a typed reason, that nothing was done.
        Err(error) if error.reason().is_some_and(|r| r.nothing_done()) => Output::Refused,
        // Answers that refuse before applying, whatever the reason field.
        Err(
            ClientError::NotFound(_)
            | ClientError::InvalidArgument(_)
            | ClientError::AlreadyExists(_)
            | ClientError::FailedPrecondition(_)
            | ClientError::ResourceExhausted { .. },
        ) => Output::Refused,
        Err(_) => Output::Unknown,
    }
}

/// One client: random writes (unique values) and strong reads on a few keys
/// until stopped.
async fn run_client(
    id: u64,
    client: Arc<Client>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) {
    let mut seed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let key = KEYS[(seed % KEYS.len() as u64) as usize];
        if (seed >> 8).is_multiple_of(2) {
            let value = format!("c{id}-{n}");
            let pending = recorder.invoke(id, key, Input::Put(value.clone()));
            let result = client
                .put(NAMESPACE, key.as_bytes(), value.as_bytes())
                .await;
            let outcome = write_outcome(&result);
            if outcome == Output::Done {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            recorder.complete(pending, outcome);
        } else {
            let pending = recorder.invoke(id, key, Input::Get);
            let result = client
                .get(NAMESPACE, key.as_bytes(), pb::Consistency::Strong)
                .await;
            let outcome = match result {
                Ok(found) => {
                    Output::Value(found.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
                }
                Err(_) => Output::Unknown,
            };
            recorder.complete(pending, outcome);
        }
        n += 1;
    }
}

/// Clients through each region's gateway (two each) and directly to the
/// us-east and eu-west shard nodes.
fn start_clients(
    lab: &Lab,
    recorder: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let budget = Duration::from_secs(1);
    let mut clients = Vec::new();
    for region in ["us-east", "eu-west", "ap-south"] {
        let gateways = lab.state().endpoints(ProcessRole::Gateway, Some(region));
        for _ in 0..2 {
            clients.push(lab_client(lab, gateways.clone(), budget));
        }
    }
    for region in ["us-east", "eu-west"] {
        clients.push(lab_client(lab, region_nodes(lab, region), budget));
    }
    clients
        .into_iter()
        .enumerate()
        .map(|(id, client)| {
            tokio::spawn(run_client(
                id as u64,
                Arc::new(client),
                recorder.clone(),
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect()
}

fn assert_linearizable(recorder: &Recorder) {
    let operations = recorder.operations();
    let count = |f: &dyn Fn(&meridian_check::Operation) -> bool| {
        operations.iter().filter(|op| f(op)).count()
    };
    eprintln!(
        "history: {} operations ({} writes done, {} reads answered, {} unknown, {} refused)",
        operations.len(),
        count(&|op| op.output == Output::Done),
        count(&|op| matches!(op.output, Output::Value(_))),
        count(&|op| op.output == Output::Unknown),
        count(&|op| op.output == Output::Refused),
    );
    let started = Instant::now();
    let verdict = meridian_check::check(&operations, 50_000_000);
    eprintln!("checked in {:?}", started.elapsed());
    if verdict == Verdict::Linearizable {
        return;
    }
    // Keep the history for a closer look.
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("linearizable-history.json");
    let kept = serde_json::to_vec_pretty(&operations)
        .ok()
        .and_then(|json| std::fs::write(&path, json).ok())
        .map_or("not written".to_string(), |()| path.display().to_string());
    match verdict {
        Verdict::Violation { key, explanation } => {
            panic!("history is not linearizable on key {key} (history: {kept}):\n{explanation}")
        }
        other => panic!("{other:?} (history: {kept})"),
    }
}

async fn wait_for_acks(acked: &AtomicU64, at_least: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while acked.load(Ordering::Relaxed) < at_least {
        assert!(
            Instant::now() < deadline,
            "only {} writes acknowledged",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A lab with 3-node shards in every region and the sync namespace (two
/// standby regions) placed.
async fn linear_lab(dir: &std::path::Path) -> (Lab, Client) {
    let lab = common::multi_region_lab_of(dir, 3, &[]).await;
    // Placing on three loaded regions across the emulated WAN can take a
    // while: one patient attempt, not a resend with an unknown outcome.
    let control = Client::with_options(
        lab.state().endpoints(ProcessRole::Control, None),
        meridian_client::ClientOptions {
            attempt_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(30),
            dialer: lab.dialer().clone(),
            ..Default::default()
        },
    )
    .unwrap();
    // Two standby regions: writes go on after losing any one region.
    let placement = pb::Placement {
        sync: true,
        standby_regions: vec!["eu-west".into(), "ap-south".into()],
        allowed_jurisdictions: vec!["US".into(), "EU".into(), "IN".into()],
        ..common::us_east_with_eu_standby(NAMESPACE)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match control.place_namespace(placement.clone()).await {
            Ok(_) | Err(ClientError::AlreadyExists(_)) => break,
            Err(error) => {
                assert!(Instant::now() < deadline, "placement failed: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    (lab, control)
}

async fn wait_for_failover(control: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(list) = control.list_failovers(Some(NAMESPACE)).await
            && !list.is_empty()
        {
            return;
        }
        assert!(Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The name of the us-east shard's current leader.
async fn us_east_leader(lab: &Lab) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for process in lab
            .state()
            .processes
            .iter()
            .filter(|p| p.role == ProcessRole::Node && p.region == "us-east" && p.pid.is_some())
        {
            let probe = lab_client(lab, vec![process.grpc.clone()], Duration::from_millis(500));
            if let Ok(status) = probe.cluster_status_of(&process.grpc).await
                && status.leader_id == status.node_id
            {
                return process.name.clone();
            }
        }
        assert!(Instant::now() < deadline, "no us-east leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_sync_primary_region_keeps_the_history_linearizable() {
    let _one_lab = ONE_LAB_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (lab, control) = linear_lab(dir.path()).await;
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let clients = start_clients(&lab, &recorder, &stop, &acked);
    wait_for_acks(&acked, 40, Duration::from_secs(60)).await;

    // Cut the primary region off from both others; eu-west is promoted.
    lab.partition("us-east", "eu-west").unwrap();
    lab.partition("us-east", "ap-south").unwrap();
    wait_for_failover(&control).await;
    // Writes go on in the rest of the world while the old primary is cut off.
    let before = acked.load(Ordering::Relaxed);
    wait_for_acks(&acked, before + 40, Duration::from_secs(60)).await;
    lab.heal("us-east", "eu-west").unwrap();
    lab.heal("us-east", "ap-south").unwrap();
    let before = acked.load(Ordering::Relaxed);
    wait_for_acks(&acked, before + 40, Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_linearizable(&recorder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kills_and_the_loss_and_return_of_the_primary_region_keep_the_history_linearizable()
{
    let _one_lab = ONE_LAB_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut lab, control) = linear_lab(dir.path()).await;
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let clients = start_clients(&lab, &recorder, &stop, &acked);
    wait_for_acks(&acked, 20, Duration::from_secs(60)).await;

    // kill -9 the primary shard's leader, three times, under load.
    for _ in 0..3 {
        let leader = us_east_leader(&lab).await;
        lab.kill(&leader).unwrap();
        let before = acked.load(Ordering::Relaxed);
        wait_for_acks(&acked, before + 10, Duration::from_secs(60)).await;
        lab.restart(&leader).unwrap();
    }
    lab.wait_ready(Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();

    // Lose the whole primary region; eu-west is promoted; writes go on.
    lab.kill("us-east").unwrap();
    wait_for_failover(&control).await;
    let before = acked.load(Ordering::Relaxed);
    wait_for_acks(&acked, before + 20, Duration::from_secs(60)).await;
    // It returns (fenced, rebuilt as a standby); writes go on.
    lab.restart("us-east").unwrap();
    lab.wait_ready(Duration::from_secs(120), |_, _| {})
        .await
        .unwrap();
    let before = acked.load(Ordering::Relaxed);
    wait_for_acks(&acked, before + 20, Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_linearizable(&recorder);
}
