//! `meridian-failover-bench`: what replication and failover cost and how fast
//! they are, on labs it starts itself (three regions, TLS and WAN emulation on).
//!
//! - **RTO**: kill the primary region of an async active-passive namespace while
//!   a client in eu-west writes through its local gateway; time from the kill to
//!   the first acknowledged write issued after the kill plus 250 ms (so no answer
//!   still in flight from the dead primary is counted). Repeated `--runs` times,
//!   each on a fresh lab. `rto-sync2`: the same with a sync namespace that has
//!   two standby regions (writes must resume without the lost region).
//! - **Reads**: strong reads at `--clients` closed loops on the us-east shard,
//!   for a region-locked namespace (read-index only) and an async and a sync
//!   replicated one (fenced by the lease; sync also by standby confirmation),
//!   rounds alternating: what the read fence costs.
//! - **Lag**: a paced write load (`--rate` writes/s) on an async namespace; the
//!   standby's lag in seconds sampled every 100 ms from the primary's leader
//!   (age of the oldest change the standby has not confirmed, so it includes
//!   the confirmation's trip back), and the lag a reader at the standby sees
//!   (acknowledgement of a probe write to its first read at the standby).
//! - **Sync vs async**: the same closed-loop load on an async and a sync
//!   namespace, latency side by side.
//! - **Bytes**: compressed bytes shipped across the WAN per byte written (values
//!   are random printable characters, so compression is not flattered).

use anyhow::Context;
use clap::Parser;
use meridian_client::{Client, ClientOptions, pb};
use meridian_lab::{Lab, LabSpec, ProcessRole, WanSettings};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// The `meridian` binary the labs run.
    #[arg(long, default_value = "target/production/meridian")]
    binary: PathBuf,
    /// Directory for the labs.
    #[arg(long)]
    dir: PathBuf,
    /// Nodes per regional shard.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// RTO measurements (a fresh lab each).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Target write rate for the lag measurement.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Seconds of each load phase.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Concurrent writers in load phases.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Phases to run: `rto` (async, one standby), `rto-sync2` (sync, two
    /// standby regions), `load` (lag, write latency, WAN bytes), `reads`
    /// (strong reads on a region-locked vs a replicated namespace: the cost of
    /// the read fence).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rto,rto-sync2,load,reads"
    )]
    phases: Vec<String>,
    /// Alternating rounds of the `reads` phase.
    #[arg(long, default_value_t = 3)]
    read_rounds: usize,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    rto_ms: Vec<f64>,
    rto_median_ms: f64,
    rto_max_ms: f64,
    /// Sync namespace with two standby regions: time from killing the
    /// primary region to the first acknowledged write.
    rto_sync2_ms: Vec<f64>,
    rto_sync2_median_ms: f64,
    rto_sync2_max_ms: f64,
    /// Strong reads at `clients` closed loops against the us-east shard, per
    /// namespace kind, every round.
    reads: BTreeMap<String, Vec<LatencyReport>>,
    lag: Option<LagReport>,
    latency: BTreeMap<String, LatencyReport>,
    wan_bytes_per_byte_written: f64,
}

#[derive(Debug, Serialize)]
struct LagReport {
    target_rate: u64,
    achieved_rate: f64,
    p50_seconds: f64,
    p99_seconds: f64,
    max_seconds: f64,
    visible_samples: usize,
    visible_p50_seconds: f64,
    visible_p99_seconds: f64,
    visible_max_seconds: f64,
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    ops_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index]
}

async fn start_lab(args: &Args, name: &str) -> anyhow::Result<Lab> {
    let mut lab = Lab::up(&LabSpec {
        dir: args.dir.join(name),
        regions: ["us-east", "eu-west", "ap-south"]
            .map(String::from)
            .to_vec(),
        nodes: args.nodes,
        binary: args.binary.clone(),
        env: vec![],
        tls: true,
        wan: Some(WanSettings::default()),
        encryption: true,
    })?
    .kill_on_drop();
    lab.wait_ready(Duration::from_secs(180), |_, _| {}).await?;
    Ok(lab)
}

fn client(lab: &Lab, endpoints: Vec<String>, budget: Duration) -> anyhow::Result<Client> {
    Ok(Client::with_options(
        endpoints,
        ClientOptions {
            attempt_timeout: budget.min(Duration::from_secs(3)),
            retry_budget: budget,
            dialer: lab.dialer().clone(),
            ..ClientOptions::default()
        },
    )?)
}

async fn place(lab: &Lab, name: &str, sync: bool) -> anyhow::Result<()> {
    place_with(
        lab,
        pb::Placement {
            name: name.into(),
            home_region: "us-east".into(),
            mode: pb::NamespaceMode::ActivePassive as i32,
            sync,
            standby_regions: vec!["eu-west".into()],
            allowed_jurisdictions: vec!["US".into(), "EU".into()],
            ..Default::default()
        },
    )
    .await
}

async fn place_with(lab: &Lab, placement: pb::Placement) -> anyhow::Result<()> {
    let control = client(
        lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(30),
    )?;
    control.place_namespace(placement).await?;
    Ok(())
}

/// How the RTO namespace is replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RtoMode {
    /// Async, one standby region (eu-west).
    Async,
    /// Sync, two standby regions (eu-west, ap-south).
    SyncTwoStandbys,
}

fn primary_shard(lab: &Lab) -> anyhow::Result<Client> {
    region_shard(lab, "us-east")
}

fn region_shard(lab: &Lab, region: &str) -> anyhow::Result<Client> {
    let nodes = lab
        .state()
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Node && p.region == region)
        .map(|p| p.grpc.clone())
        .collect();
    client(lab, nodes, Duration::from_secs(10))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let mut report = Report::default();

    let phase = |name: &str| args.phases.iter().any(|p| p == name);
    for run in 0..args.runs {
        if phase("rto") {
            let rto = rto_run(&args, run, RtoMode::Async).await?;
            eprintln!("RTO run {} (async): {:.0} ms", run + 1, rto);
            report.rto_ms.push(rto);
        }
        if phase("rto-sync2") {
            let rto = rto_run(&args, run, RtoMode::SyncTwoStandbys).await?;
            eprintln!("RTO run {} (sync, two standbys): {:.0} ms", run + 1, rto);
            report.rto_sync2_ms.push(rto);
        }
    }
    let mut rto = report.rto_ms.clone();
    report.rto_median_ms = percentile(&mut rto, 0.5);
    report.rto_max_ms = percentile(&mut rto, 1.0);
    let mut rto = report.rto_sync2_ms.clone();
    report.rto_sync2_median_ms = percentile(&mut rto, 0.5);
    report.rto_sync2_max_ms = percentile(&mut rto, 1.0);

    if phase("reads") {
        report.reads = fenced_reads(&args).await?;
    }
    if !phase("load") {
        return finish(&args, &report);
    }
    let lab = start_lab(&args, "load").await?;
    place(&lab, "paced", false).await?;
    place(&lab, "async", false).await?;
    place(&lab, "sync", true).await?;
    report.lag = Some(lag(&args, &lab).await?);
    for namespace in ["async", "sync"] {
        report
            .latency
            .insert(namespace.into(), closed_loop(&args, &lab, namespace).await?);
    }
    let status = primary_shard(&lab)?.replication_status().await?;
    let sent: u64 = status
        .namespaces
        .iter()
        .flat_map(|n| &n.standbys)
        .map(|s| s.bytes_sent)
        .sum();
    let written = WRITTEN.load(Ordering::Relaxed);
    report.wan_bytes_per_byte_written = sent as f64 / written.max(1) as f64;
    drop(lab);
    finish(&args, &report)
}

fn finish(args: &Args, report: &Report) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    println!("{text}");
    if let Some(path) = &args.json_out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Strong reads through the us-east shard on a region-locked namespace (no
/// fence: read-index only), an async and a sync replicated one (fenced: the
/// lease, and for sync the standby confirmation), rounds alternating.
async fn fenced_reads(args: &Args) -> anyhow::Result<BTreeMap<String, Vec<LatencyReport>>> {
    let lab = start_lab(args, "reads").await?;
    place_with(
        &lab,
        pb::Placement {
            name: "plain".into(),
            home_region: "us-east".into(),
            mode: pb::NamespaceMode::RegionLocked as i32,
            allowed_jurisdictions: vec!["US".into()],
            ..Default::default()
        },
    )
    .await?;
    place(&lab, "async", false).await?;
    place(&lab, "sync", true).await?;
    let primary = Arc::new(primary_shard(&lab)?);
    let value = random_value(args.value_size);
    for namespace in ["plain", "async", "sync"] {
        for i in 0..1_000 {
            primary
                .put(namespace, format!("r-{i}").as_bytes(), &value)
                .await?;
        }
    }
    let mut reports: BTreeMap<String, Vec<LatencyReport>> = BTreeMap::new();
    for round in 0..args.read_rounds {
        for namespace in ["plain", "async", "sync"] {
            let report = read_loop(args, &primary, namespace).await;
            eprintln!(
                "reads round {} {namespace}: {:.0}/s p99 {:.2} ms",
                round + 1,
                report.ops_per_second,
                report.p99_ms
            );
            reports.entry(namespace.into()).or_default().push(report);
        }
    }
    Ok(reports)
}

/// `clients` closed loops of strong reads on `namespace` for `seconds`.
async fn read_loop(args: &Args, primary: &Arc<Client>, namespace: &str) -> LatencyReport {
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for c in 0..args.clients {
        let (primary, stop) = (primary.clone(), stop.clone());
        let namespace = namespace.to_string();
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c as u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("r-{}", i % 1_000);
                let started = Instant::now();
                if primary
                    .get(&namespace, key.as_bytes(), pb::Consistency::Strong)
                    .await
                    .is_ok()
                {
                    latencies.push(started.elapsed().as_secs_f64() * 1e3);
                }
                i += 7;
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await.unwrap_or_default());
    }
    let ops_per_second = all.len() as f64 / started.elapsed().as_secs_f64();
    LatencyReport {
        ops_per_second,
        p50_ms: percentile(&mut all, 0.5),
        p99_ms: percentile(&mut all, 0.99),
    }
}

/// Random printable bytes: values that compress about as well as typical text
/// or JSON payloads, not as well as a repeated byte.
fn random_value(len: usize) -> Vec<u8> {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len).map(|_| rng.random_range(b' '..=b'~')).collect()
}

/// Key and value bytes the load phases wrote.
static WRITTEN: AtomicU64 = AtomicU64::new(0);

async fn rto_run(args: &Args, run: usize, mode: RtoMode) -> anyhow::Result<f64> {
    let mut lab = start_lab(args, &format!("rto-{run}-{mode:?}")).await?;
    match mode {
        RtoMode::Async => place(&lab, "rto", false).await?,
        RtoMode::SyncTwoStandbys => {
            place_with(
                &lab,
                pb::Placement {
                    name: "rto".into(),
                    home_region: "us-east".into(),
                    mode: pb::NamespaceMode::ActivePassive as i32,
                    sync: true,
                    standby_regions: vec!["eu-west".into(), "ap-south".into()],
                    allowed_jurisdictions: vec!["US".into(), "EU".into(), "IN".into()],
                    ..Default::default()
                },
            )
            .await?
        }
    }
    let gateway = Arc::new(client(
        &lab,
        lab.state().endpoints(ProcessRole::Gateway, Some("eu-west")),
        Duration::from_secs(2),
    )?);
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_after: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let killed: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let writer = {
        let (gateway, acked, stop) = (gateway.clone(), acked.clone(), stop.clone());
        let (first_after, killed) = (first_after.clone(), killed.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let issued = Instant::now();
                let ok = gateway
                    .put("rto", format!("k{i}").as_bytes(), b"v")
                    .await
                    .is_ok();
                i += 1;
                if !ok {
                    continue;
                }
                acked.fetch_add(1, Ordering::Relaxed);
                let kill = *killed.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(kill) = kill
                    && issued > kill + Duration::from_millis(250)
                {
                    first_after
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(Instant::now());
                }
            }
        })
    };
    while acked.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill = Instant::now();
    *killed.lock().unwrap_or_else(|e| e.into_inner()) = Some(kill);
    lab.kill("us-east")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let recovered = loop {
        if let Some(at) = *first_after.lock().unwrap_or_else(|e| e.into_inner()) {
            break at;
        }
        anyhow::ensure!(Instant::now() < deadline, "no write succeeded within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let _ = lab.down();
    Ok(recovered.duration_since(kill).as_secs_f64() * 1e3)
}

/// Paced writes to the primary's shard at `rate`/s, sampling the standby lag.
async fn lag(args: &Args, lab: &Lab) -> anyhow::Result<LagReport> {
    let primary = Arc::new(primary_shard(lab)?);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let per_client = args.rate as f64 / args.clients as f64;
    let value = vec![b'x'; args.value_size];
    let mut writers = Vec::new();
    for c in 0..args.clients {
        let (primary, stop, done, value) =
            (primary.clone(), stop.clone(), done.clone(), value.clone());
        writers.push(tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / per_client);
            let mut next = tokio::time::Instant::now();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                next += interval;
                tokio::time::sleep_until(next).await;
                let key = format!("paced-{c}-{}", i % 1_000);
                let value = random_value(value.len());
                if primary.put("paced", key.as_bytes(), &value).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                    WRITTEN.fetch_add((key.len() + value.len()) as u64, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    let visible = tokio::spawn(visibility_lag(
        primary.clone(),
        Arc::new(region_shard(lab, "eu-west")?),
        stop.clone(),
    ));
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(status) = primary.replication_status().await
            && let Some(ns) = status.namespaces.iter().find(|n| n.namespace == "paced")
        {
            samples.extend(ns.standbys.iter().map(|s| s.lag_seconds));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    let achieved_rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let mut visible = visible.await.unwrap_or_default();
    Ok(LagReport {
        target_rate: args.rate,
        achieved_rate,
        p50_seconds: percentile(&mut samples, 0.5),
        p99_seconds: percentile(&mut samples, 0.99),
        max_seconds: percentile(&mut samples, 1.0),
        visible_samples: visible.len(),
        visible_p50_seconds: percentile(&mut visible, 0.5),
        visible_p99_seconds: percentile(&mut visible, 0.99),
        visible_max_seconds: percentile(&mut visible, 1.0),
    })
}

/// Replication lag as a reader in the standby region sees it: a probe key on
/// the primary gets a new counter every 20 ms (mixed into the paced load), and
/// a reader polls the standby shard for it every 2 ms; each counter's lag is
/// from its write's acknowledgement to the first read that returns it. The
/// poll interval and the read's own latency are included (an overstatement
/// of at most a few ms).
async fn visibility_lag(
    primary: Arc<Client>,
    standby: Arc<Client>,
    stop: Arc<AtomicBool>,
) -> Vec<f64> {
    let acked: Arc<std::sync::Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut counter = 0u64;
            while !stop.load(Ordering::Relaxed) {
                counter += 1;
                if primary
                    .put("paced", b"lag-probe", counter.to_string().as_bytes())
                    .await
                    .is_ok()
                {
                    acked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(counter, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut lags = Vec::new();
    let mut last_seen = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let Ok(Some(kv)) = standby
            .get("paced", b"lag-probe", pb::Consistency::Eventual)
            .await
        else {
            continue;
        };
        let seen_at = Instant::now();
        let Some(counter) = std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        if counter <= last_seen {
            continue;
        }
        last_seen = counter;
        // Not yet acknowledged when seen: visible before the writer heard back,
        // a lag of zero at most.
        let lag = acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&counter)
            .map_or(0.0, |at| {
                seen_at.saturating_duration_since(*at).as_secs_f64()
            });
        lags.push(lag);
    }
    let _ = writer.await;
    lags
}

/// As many writes as `clients` closed loops can do, recording latency.
async fn closed_loop(args: &Args, lab: &Lab, namespace: &str) -> anyhow::Result<LatencyReport> {
    let primary = Arc::new(primary_shard(lab)?);
    let stop = Arc::new(AtomicBool::new(false));
    let value = vec![b'x'; args.value_size];
    let mut writers = Vec::new();
    for c in 0..args.clients {
        let (primary, stop, value) = (primary.clone(), stop.clone(), value.clone());
        let namespace = namespace.to_string();
        writers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("loop-{c}-{}", i % 1_000);
                let value = random_value(value.len());
                let started = Instant::now();
                if primary
                    .put(&namespace, key.as_bytes(), &value)
                    .await
                    .is_ok()
                {
                    latencies.push(started.elapsed().as_secs_f64() * 1e3);
                    WRITTEN.fetch_add((key.len() + value.len()) as u64, Ordering::Relaxed);
                }
                i += 1;
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for writer in writers {
        all.extend(writer.await.unwrap_or_default());
    }
    let ops_per_second = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok(LatencyReport {
        ops_per_second,
        p50_ms: percentile(&mut all, 0.5),
        p99_ms: percentile(&mut all, 0.99),
    })
}
