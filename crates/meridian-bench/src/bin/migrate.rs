//! Online migration under WAN emulation (a benchmark; not part of the
//! tests). `bench/run-migrate.sh` starts the lab and runs it.
//!
//! A namespace of `--size-mb` MB is moved back and forth between us-east
//! and eu-west `--migrations` times while `--writers` clients keep writing
//! through the us-east gateway. For every migration it records the write
//! block the control plane measured (the source's lease revocation to the
//! new primary's lease) and what the writers saw (their slowest write while
//! it ran), plus the whole job's time; then reports p50 and p99. With
//! `--big-mb`, a namespace of that size is loaded and migrated once for the
//! total time of a large move.

use anyhow::{Context, bail};
use clap::Parser;
use meridian_client::{Client, ClientOptions, pb};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Directory of a running Meridian lab with us-east and eu-west.
    #[arg(long)]
    lab: PathBuf,
    /// The `meridian` binary (to open the lab).
    #[arg(long, default_value = "target/production/meridian")]
    meridian: PathBuf,
    /// Migrations to run (alternating us-east -> eu-west -> us-east ...).
    #[arg(long, default_value_t = 20)]
    migrations: usize,
    /// Logical megabytes in the namespace that moves back and forth.
    #[arg(long, default_value_t = 16)]
    size_mb: u64,
    /// Concurrent writers (256 B puts) during the migrations.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// The write-block budget of each migration (ms).
    #[arg(long, default_value_t = 1000)]
    max_blocked_ms: u64,
    /// Logical megabytes of a namespace migrated once for the total time
    /// of a large move (0: skip).
    #[arg(long, default_value_t = 0)]
    big_mb: u64,
    /// The write-block budget of the large move (ms): its digests are full
    /// scans of both copies inside the block.
    #[arg(long, default_value_t = 30_000)]
    big_max_blocked_ms: u64,
    /// Write the results here as JSON.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

const NAMESPACE: &str = "mig-bench";
const BIG: &str = "mig-bench-big";
const VALUE_SIZE: usize = 4096;
/// Puts per transaction while loading.
const LOAD_BATCH: u64 = 128;

fn value(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(VALUE_SIZE + 8);
    while out.len() < VALUE_SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(VALUE_SIZE);
    out
}

async fn place(control: &Client, name: &str) -> anyhow::Result<()> {
    match control
        .place_namespace(pb::Placement {
            name: name.into(),
            home_region: "us-east".into(),
            mode: pb::NamespaceMode::RegionLocked as i32,
            allowed_jurisdictions: vec!["US".into(), "EU".into()],
            ..Default::default()
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(meridian_client::ClientError::AlreadyExists(_)) => {
            bail!("namespace {name} exists already: start from a fresh lab")
        }
        Err(err) => Err(err.into()),
    }
}

async fn load(client: &Arc<Client>, namespace: &str, megabytes: u64) -> anyhow::Result<u64> {
    let keys = megabytes * 1_000_000 / (VALUE_SIZE as u64 + 16);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0u64;
    let mut last_report = Instant::now();
    while next < keys || !in_flight.is_empty() {
        while next < keys && in_flight.len() < 4 {
            let end = (next + LOAD_BATCH).min(keys);
            let success = (next..end)
                .map(|i| pb::TxnOp {
                    op: Some(pb::txn_op::Op::Put(pb::PutRequest {
                        namespace: namespace.into(),
                        key: format!("key-{i:012}").into_bytes(),
                        value: value(i),
                    })),
                })
                .collect();
            let (client, namespace) = (client.clone(), namespace.to_string());
            in_flight.spawn(async move {
                client
                    .txn(pb::TxnRequest {
                        namespace,
                        compare: Vec::new(),
                        success,
                        failure: Vec::new(),
                    })
                    .await
            });
            next = end;
        }
        if let Some(done) = in_flight.join_next().await {
            done??;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  loading {namespace}: {next}/{keys} keys");
            last_report = Instant::now();
        }
    }
    Ok(keys)
}

/// The writers' slowest write since the last [`Writers::take_slowest`].
struct Writers {
    slowest: Arc<Mutex<Duration>>,
    writes: Arc<std::sync::atomic::AtomicU64>,
    errors: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(client: Arc<Client>, count: usize) -> Self {
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|w| {
                let (client, slowest, writes, errors, stop) = (
                    client.clone(),
                    slowest.clone(),
                    writes.clone(),
                    errors.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let key = format!("w{w}-{i}");
                        match client.put(NAMESPACE, key.as_bytes(), &[7u8; 256]).await {
                            Ok(_) => writes.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                        let took = started.elapsed();
                        let mut worst = slowest.lock().unwrap_or_else(|e| e.into_inner());
                        *worst = (*worst).max(took);
                        i += 1;
                    }
                })
            })
            .collect();
        Self {
            slowest,
            writes,
            errors,
            stop,
            tasks,
        }
    }

    fn take_slowest(&self) -> Duration {
        std::mem::take(&mut *self.slowest.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        (
            self.writes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

async fn wait_job(control: &Client, id: u64, limit: Duration) -> anyhow::Result<pb::JobInfo> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(job) = control.get_job(id).await
            && job.state != pb::JobState::Running as i32
        {
            return Ok(job);
        }
        if Instant::now() > deadline {
            bail!("job {id} did not end within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One migration's numbers.
#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    to: String,
    succeeded: bool,
    blocked_ms: u64,
    client_slowest_ms: f64,
    job_secs: f64,
    message: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn migrate(
    control: &Client,
    namespace: &str,
    to: &str,
    max_blocked_ms: u64,
) -> anyhow::Result<(pb::JobInfo, f64)> {
    let started = Instant::now();
    let job = control
        .migrate_namespace(pb::MigrateNamespaceRequest {
            namespace: namespace.into(),
            to_region: to.into(),
            max_blocked_ms,
            keep_source_ms: Some(0),
            catch_up_timeout_ms: 1_800_000,
        })
        .await
        .with_context(|| format!("starting the migration of {namespace} to {to}"))?;
    let job = wait_job(control, job.id, Duration::from_secs(3_600)).await?;
    Ok((job, started.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lab = meridian_lab::Lab::open(&args.lab, args.meridian.clone())?;
    let state = lab.state().clone();
    let options = |budget| ClientOptions {
        attempt_timeout: Duration::from_secs(30),
        retry_budget: budget,
        dialer: lab.dialer().clone(),
        ..ClientOptions::default()
    };
    let control = Client::with_options(
        state.endpoints(meridian_lab::ProcessRole::Control, None),
        options(Duration::from_secs(60)),
    )?;
    let gateway = Arc::new(Client::with_options(
        state.endpoints(meridian_lab::ProcessRole::Gateway, Some("us-east")),
        options(Duration::from_secs(60)),
    )?);
    place(&control, NAMESPACE).await?;
    let keys = load(&gateway, NAMESPACE, args.size_mb).await?;
    println!(
        "machine: {} cores; {keys} keys x {VALUE_SIZE} B ({} MB) in {NAMESPACE}; {} writers through the us-east gateway; WAN on (us-east<->eu-west 80 ms)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.size_mb,
        args.writers
    );
    let writers = Writers::start(gateway.clone(), args.writers);
    // Migrations start once the writers are writing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while writers.writes.load(Ordering::Relaxed) < 100 {
        if Instant::now() > deadline {
            bail!("the writers acknowledged no writes within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut runs = Vec::new();
    // Where the namespace is: a rolled-back migration leaves it there, and
    // the next one goes the same way again.
    let mut home = "us-east";
    for i in 0..args.migrations {
        let to = if home == "us-east" {
            "eu-west"
        } else {
            "us-east"
        };
        writers.take_slowest();
        let (job, job_secs) = migrate(&control, NAMESPACE, to, args.max_blocked_ms).await?;
        let run = Run {
            to: to.into(),
            succeeded: job.state == pb::JobState::Succeeded as i32,
            blocked_ms: job.migration.as_ref().map_or(0, |m| m.blocked_ms),
            client_slowest_ms: writers.take_slowest().as_secs_f64() * 1_000.0,
            job_secs,
            message: job.message.clone(),
        };
        println!(
            "  migration {:2} -> {:8} {}: blocked {:4} ms (writers' slowest {:6.0} ms), job {:5.1} s",
            i + 1,
            run.to,
            if run.succeeded { "ok    " } else { "FAILED" },
            run.blocked_ms,
            run.client_slowest_ms,
            run.job_secs
        );
        if run.succeeded {
            home = to;
        } else {
            println!("    {}", run.message);
        }
        runs.push(run);
    }
    let (writes, errors) = writers.stop().await;
    let ok: Vec<&Run> = runs.iter().filter(|r| r.succeeded).collect();
    let mut blocked: Vec<f64> = ok.iter().map(|r| r.blocked_ms as f64).collect();
    blocked.sort_by(f64::total_cmp);
    let mut seen: Vec<f64> = ok.iter().map(|r| r.client_slowest_ms).collect();
    seen.sort_by(f64::total_cmp);
    let mut total: Vec<f64> = ok.iter().map(|r| r.job_secs).collect();
    total.sort_by(f64::total_cmp);
    println!(
        "{} of {} migrations succeeded; recorded write block p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; writers' slowest write p50 {:.0} ms, p99 {:.0} ms; job time p50 {:.1} s; {writes} writes, {errors} without a known outcome",
        ok.len(),
        runs.len(),
        percentile(&blocked, 50.0),
        percentile(&blocked, 99.0),
        blocked.last().copied().unwrap_or(0.0),
        percentile(&seen, 50.0),
        percentile(&seen, 99.0),
        percentile(&total, 50.0),
    );
    let mut big = None;
    if args.big_mb > 0 {
        place(&control, BIG).await?;
        let loaded = Instant::now();
        let keys = load(&gateway, BIG, args.big_mb).await?;
        println!(
            "loaded {keys} keys ({} MB) into {BIG} in {:.0} s; migrating it to eu-west",
            args.big_mb,
            loaded.elapsed().as_secs_f64()
        );
        let (job, job_secs) = migrate(&control, BIG, "eu-west", args.big_max_blocked_ms).await?;
        let blocked_ms = job.migration.as_ref().map_or(0, |m| m.blocked_ms);
        println!(
            "  {} MB: {} in {job_secs:.1} s ({:.1} MB/s), writes blocked {blocked_ms} ms: {}",
            args.big_mb,
            if job.state == pb::JobState::Succeeded as i32 {
                "moved"
            } else {
                "FAILED"
            },
            args.big_mb as f64 / job_secs,
            job.message
        );
        big = Some(serde_json::json!({
            "megabytes": args.big_mb,
            "succeeded": job.state == pb::JobState::Succeeded as i32,
            "job_secs": job_secs,
            "blocked_ms": blocked_ms,
            "message": job.message,
        }));
    }
    if let Some(path) = &args.json_out {
        let report = serde_json::json!({
            "size_mb": args.size_mb,
            "writers": args.writers,
            "max_blocked_ms": args.max_blocked_ms,
            "runs": runs,
            "succeeded": ok.len(),
            "blocked_ms_p50": percentile(&blocked, 50.0),
            "blocked_ms_p99": percentile(&blocked, 99.0),
            "client_slowest_ms_p50": percentile(&seen, 50.0),
            "client_slowest_ms_p99": percentile(&seen, 99.0),
            "writes": writes,
            "unknown_outcomes": errors,
            "big": big,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
