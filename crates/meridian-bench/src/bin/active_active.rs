//! Active-active namespaces under WAN emulation (a benchmark; not part of
//! the tests). `bench/run-active-active.sh` starts the lab and runs it.
//!
//! 1. **Local write latency**: 256 B puts, one at a time, through each
//!    region's gateway, to an active-active namespace (peers us-east and
//!    eu-west) and to an active-passive one homed in us-east: the point of
//!    the mode is that eu-west's writes stay in eu-west.
//! 2. **Convergence lag** at a target write rate across the set: writers in
//!    both regions share the rate; every `--probe-ms` a probe write in one
//!    region is polled for in the other region's copy until it shows; the
//!    time from the write's acknowledgement to its first sighting there is
//!    the lag (p50, p99, max), beside the emulated one-way delay.
//! 3. **Hot keys**: both regions write the same `--hot-keys` registers as
//!    fast as they can; the conflicts the copies recorded per write, and the
//!    cost of a merge (CPU time of `KeyState::merge` per type, measured here
//!    on states like the run's).

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use meridian_client::{Client, ClientOptions, pb};
use meridian_lab::ProcessRole;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Directory of a running Meridian lab with us-east and eu-west.
    #[arg(long)]
    lab: PathBuf,
    /// The `meridian` binary (to open the lab).
    #[arg(long, default_value = "target/production/meridian")]
    meridian: PathBuf,
    /// Sequential puts per (namespace, region) for the latency comparison.
    #[arg(long, default_value_t = 500)]
    latency_puts: usize,
    /// Target writes per second across both regions for the lag run.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Writer tasks per region in the lag and hot-key runs.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Seconds of the lag run and of the hot-key run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Interval between convergence probes (each region in turn).
    #[arg(long, default_value_t = 50)]
    probe_ms: u64,
    /// Registers both regions write in the hot-key run.
    #[arg(long, default_value_t = 10)]
    hot_keys: u64,
    /// The emulated round trip between us-east and eu-west (reported beside
    /// the lag).
    #[arg(long, default_value_t = 80)]
    rtt_ms: u64,
    /// Write the results here as JSON.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

const AA: &str = "aa-bench";
const AP: &str = "ap-bench";
const HOT: &str = "aa-hot";

#[derive(Debug, Serialize)]
struct Latency {
    namespace: String,
    mode: String,
    region: String,
    puts: usize,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Lag {
    target_writes_per_second: u64,
    achieved_writes_per_second: f64,
    failed_writes: u64,
    probes: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    one_way_delay_ms: u64,
    target_p99_ms: u64,
    /// Every probe: seconds into the run, the region written, its lag in ms
    /// (to see whether the tail is periodic or spread).
    series: Vec<(f64, &'static str, f64)>,
}

#[derive(Debug, Serialize)]
struct HotKeys {
    keys: u64,
    writes: u64,
    writes_per_second: f64,
    conflicts_recorded: u64,
    conflicts_per_write: f64,
    merge_register_ns: f64,
    merge_counter_ns: f64,
    merge_set_ns: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    latency: Vec<Latency>,
    lag: Lag,
    hot_keys: HotKeys,
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

async fn place(control: &Client, name: &str, mode: pb::NamespaceMode) -> anyhow::Result<()> {
    match control
        .place_namespace(pb::Placement {
            name: name.into(),
            home_region: "us-east".into(),
            mode: mode as i32,
            standby_regions: vec!["eu-west".into()],
            allowed_jurisdictions: vec!["US".into(), "EU".into()],
            ..Default::default()
        })
        .await
    {
        Ok(_) | Err(meridian_client::ClientError::AlreadyExists(_)) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("placing {name}")),
    }
}

/// Sequential puts through `client`; their latencies.
async fn latency(client: &Client, namespace: &str, puts: usize) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let value = vec![b'v'; 256];
    // Warm the connections and the path first.
    for i in 0..20 {
        client
            .put(namespace, format!("warm-{i}").as_bytes(), &value)
            .await?;
    }
    for i in 0..puts {
        let started = Instant::now();
        client
            .put(namespace, format!("lat-{i}").as_bytes(), &value)
            .await?;
        histogram.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(histogram)
}

/// Writers sharing `rate` writes/s through `client` (0: as fast as they
/// can) on keys from `key`, until `stop`; counts acknowledged and failed.
fn spawn_writers(
    client: Arc<Client>,
    namespace: &'static str,
    writers: usize,
    rate_per_writer: f64,
    key: impl Fn(u64, u64) -> String + Clone + Send + Sync + 'static,
    stop: Arc<AtomicBool>,
    counts: Arc<(AtomicU64, AtomicU64)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers as u64)
        .map(|w| {
            let (client, stop, counts) = (client.clone(), stop.clone(), counts.clone());
            let key = key.clone();
            tokio::spawn(async move {
                let value = vec![b'w'; 256];
                let started = Instant::now();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if rate_per_writer > 0.0 {
                        let due = Duration::from_secs_f64(i as f64 / rate_per_writer);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    match client.put(namespace, key(w, i).as_bytes(), &value).await {
                        Ok(_) => counts.0.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counts.1.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            })
        })
        .collect()
}

/// Writes a probe through `from` and polls `to`'s copy until it shows;
/// the time from the write's acknowledgement to its first sighting.
async fn probe(from: &Client, to: &Client, key: &str) -> anyhow::Result<Duration> {
    from.put(AA, key.as_bytes(), b"probe").await?;
    let acked = Instant::now();
    let deadline = acked + Duration::from_secs(30);
    loop {
        if to
            .get(AA, key.as_bytes(), pb::Consistency::Eventual)
            .await?
            .is_some()
        {
            return Ok(acked.elapsed());
        }
        if Instant::now() > deadline {
            bail!("probe {key} did not reach the other region within 30 s");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// CPU time of one merge of two concurrent copies of a key of each type.
fn merge_costs() -> (f64, f64, f64) {
    use meridian_replication::crdt::{KeyState, Op};
    use meridian_replication::hlc::Timestamp;
    let at = |wall_ms| Timestamp {
        wall_ms,
        logical: 0,
    };
    let pair = |ops: &dyn Fn(u64) -> Op| {
        let (mut a, mut b) = (KeyState::default(), KeyState::default());
        for i in 0..50 {
            a.apply(&ops(i), "us-east", at(i * 2)).ok();
            b.apply(&ops(i + 1_000), "eu-west", at(i * 2 + 1)).ok();
        }
        (a, b)
    };
    let time = |(a, b): (KeyState, KeyState)| {
        let rounds = 20_000u32;
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(a.merge(std::hint::black_box(&b)));
        }
        started.elapsed().as_nanos() as f64 / f64::from(rounds)
    };
    (
        time(pair(&|i| Op::Put(Some(i.to_le_bytes().repeat(32))))),
        time(pair(&|i| Op::Increment(i as i64 % 7 - 3))),
        time(pair(&|i| Op::SetAdd((i % 20).to_le_bytes().to_vec()))),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lab = meridian_lab::Lab::open(&args.lab, args.meridian.clone())?;
    let state = lab.state().clone();
    let client = |endpoints: Vec<String>| {
        Client::with_options(
            endpoints,
            ClientOptions {
                attempt_timeout: Duration::from_secs(10),
                retry_budget: Duration::from_secs(10),
                dialer: lab.dialer().clone(),
                ..ClientOptions::default()
            },
        )
    };
    let nodes = |region: &str| {
        state
            .processes
            .iter()
            .filter(|p| p.role == ProcessRole::Node && p.region == region)
            .map(|p| p.grpc.clone())
            .collect::<Vec<_>>()
    };
    let control = client(state.endpoints(ProcessRole::Control, None))?;
    let us = Arc::new(client(
        state.endpoints(ProcessRole::Gateway, Some("us-east")),
    )?);
    let eu = Arc::new(client(
        state.endpoints(ProcessRole::Gateway, Some("eu-west")),
    )?);
    let us_nodes = client(nodes("us-east"))?;
    let eu_nodes = client(nodes("eu-west"))?;
    place(&control, AA, pb::NamespaceMode::ActiveActive).await?;
    place(&control, AP, pb::NamespaceMode::ActivePassive).await?;
    place(&control, HOT, pb::NamespaceMode::ActiveActive).await?;
    let machine = format!(
        "{} cores, WAN on (us-east<->eu-west {} ms round trip), TLS, encryption at rest",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.rtt_ms
    );
    println!("machine: {machine}");

    // 1. Local write latency.
    let mut latencies = Vec::new();
    for (namespace, mode) in [(AA, "active-active"), (AP, "active-passive (home us-east)")] {
        for (region, gateway) in [("us-east", &us), ("eu-west", &eu)] {
            let histogram = latency(gateway, namespace, args.latency_puts).await?;
            let row = Latency {
                namespace: namespace.into(),
                mode: mode.into(),
                region: region.into(),
                puts: args.latency_puts,
                p50_ms: ms(&histogram, 0.5),
                p99_ms: ms(&histogram, 0.99),
            };
            println!(
                "  put latency {:32} from {region}: p50 {:7.2} ms  p99 {:7.2} ms",
                row.mode, row.p50_ms, row.p99_ms
            );
            latencies.push(row);
        }
    }

    // 2. Convergence lag at the target rate.
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let per_writer = args.rate as f64 / (2 * args.writers) as f64;
    let mut tasks = spawn_writers(
        us.clone(),
        AA,
        args.writers,
        per_writer,
        |w, i| format!("us-{w}-{i}"),
        stop.clone(),
        counts.clone(),
    );
    tasks.extend(spawn_writers(
        eu.clone(),
        AA,
        args.writers,
        per_writer,
        |w, i| format!("eu-{w}-{i}"),
        stop.clone(),
        counts.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked_before, started) = (counts.0.load(Ordering::Relaxed), Instant::now());
    let mut lags = Histogram::<u64>::new(3)?;
    let mut n = 0u64;
    let mut series = Vec::new();
    while started.elapsed() < Duration::from_secs(args.duration) {
        let (from, to, region) = if n.is_multiple_of(2) {
            (&us, &eu_nodes, "us-east")
        } else {
            (&eu, &us_nodes, "eu-west")
        };
        let at = started.elapsed().as_secs_f64();
        let lag = probe(from, to, &format!("probe-{n}")).await?;
        lags.record(lag.as_micros() as u64)?;
        series.push((at, region, lag.as_secs_f64() * 1_000.0));
        n += 1;
        tokio::time::sleep(Duration::from_millis(args.probe_ms)).await;
    }
    let achieved =
        (counts.0.load(Ordering::Relaxed) - acked_before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks.drain(..) {
        task.await?;
    }
    let one_way = args.rtt_ms / 2;
    let lag = Lag {
        target_writes_per_second: args.rate,
        achieved_writes_per_second: achieved,
        failed_writes: counts.1.load(Ordering::Relaxed),
        probes: n,
        p50_ms: ms(&lags, 0.5),
        p99_ms: ms(&lags, 0.99),
        max_ms: lags.max() as f64 / 1_000.0,
        one_way_delay_ms: one_way,
        target_p99_ms: one_way + 100,
        series,
    };
    println!(
        "  convergence lag at {:.0} writes/s (target {}): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms over {} probes (one-way delay {} ms; target p99 < {} ms)",
        lag.achieved_writes_per_second,
        lag.target_writes_per_second,
        lag.p50_ms,
        lag.p99_ms,
        lag.max_ms,
        lag.probes,
        lag.one_way_delay_ms,
        lag.target_p99_ms
    );

    // 3. Hot keys.
    let conflicts_before = conflicts(&us_nodes).await? + conflicts(&eu_nodes).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let hot = args.hot_keys.max(1);
    let mut tasks = spawn_writers(
        us.clone(),
        HOT,
        args.writers,
        0.0,
        move |w, i| format!("hot-{}", (w * 7 + i) % hot),
        stop.clone(),
        counts.clone(),
    );
    tasks.extend(spawn_writers(
        eu.clone(),
        HOT,
        args.writers,
        0.0,
        move |w, i| format!("hot-{}", (w * 11 + i) % hot),
        stop.clone(),
        counts.clone(),
    ));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let writes = counts.0.load(Ordering::Relaxed);
    // Count what the copies recorded once both hold every write.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (
            us_nodes.check_integrity(HOT).await?,
            eu_nodes.check_integrity(HOT).await?,
        );
        if a.digest == b.digest {
            break;
        }
        if Instant::now() > deadline {
            bail!("the hot namespace's copies did not converge within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recorded = (conflicts(&us_nodes).await? + conflicts(&eu_nodes).await?)
        .saturating_sub(conflicts_before);
    let (register_ns, counter_ns, set_ns) = merge_costs();
    let hot_keys = HotKeys {
        keys: hot,
        writes,
        writes_per_second: writes as f64 / elapsed,
        conflicts_recorded: recorded,
        conflicts_per_write: recorded as f64 / writes.max(1) as f64,
        merge_register_ns: register_ns,
        merge_counter_ns: counter_ns,
        merge_set_ns: set_ns,
    };
    println!(
        "  hot keys ({} registers, both regions): {} writes ({:.0}/s), {} conflicts recorded by the two copies ({:.3} per write); merge CPU: register {:.0} ns, counter {:.0} ns, set {:.0} ns",
        hot_keys.keys,
        hot_keys.writes,
        hot_keys.writes_per_second,
        hot_keys.conflicts_recorded,
        hot_keys.conflicts_per_write,
        hot_keys.merge_register_ns,
        hot_keys.merge_counter_ns,
        hot_keys.merge_set_ns
    );
    let report = Report {
        machine,
        latency: latencies,
        lag,
        hot_keys,
    };
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// Conflicts recorded by one copy of the hot namespace so far.
async fn conflicts(copy: &Client) -> anyhow::Result<u64> {
    Ok(copy.list_conflicts(HOT, 0, 1).await?.recorded)
}
