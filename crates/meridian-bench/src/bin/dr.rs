//! Backup and restore throughput of a Meridian shard next to etcd's
//! snapshot save and restore, on the same data in the same run, and the
//! shard's write throughput and p99 while a backup runs (a benchmark; not
//! part of the tests). `bench/run-dr.sh` starts the systems and runs it.
//!
//! Meridian: a namespace of `--size-mb` MB (`--value-size` values) is loaded
//! through the control plane's placement into the lab's shard; a full
//! backup goes to a local-directory location (taken by a follower,
//! compressed, encrypted, read back and digest-checked), then is restored
//! into a new namespace by a restore job (every record through Raft to every
//! member, digest compared). Throughput is logical bytes (keys + values) per
//! second of wall time. Writers (`--writers`, 256 B puts into another
//! namespace) run for `--baseline-secs` alone, then during the backup, then
//! alone again for as long as the backup took (the machine drifts).
//!
//! etcd: the same keys and values are put into a single member, then
//! `etcdctl snapshot save` and `etcdctl snapshot restore` are timed (Debian's
//! etcd 3.4 restores with etcdctl; later versions moved it to etcdutl).

use anyhow::{Context, bail};
use clap::Parser;
use meridian_client::{Client, ClientOptions, pb};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod etcd {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("etcdserverpb");
}

#[derive(Debug, Parser)]
struct Args {
    /// Directory of a running Meridian lab (one region).
    #[arg(long)]
    lab: PathBuf,
    /// The `meridian` binary (to open the lab).
    #[arg(long, default_value = "target/production/meridian")]
    meridian: PathBuf,
    /// Client address of a single etcd member (empty: Meridian only).
    #[arg(long, default_value = "")]
    etcd: String,
    /// Directory to hold etcd's snapshot and restored data.
    #[arg(long)]
    scratch: PathBuf,
    /// Logical megabytes (keys + values) to load.
    #[arg(long, default_value_t = 1024)]
    size_mb: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 4096)]
    value_size: usize,
    /// Concurrent 256 B writers measured without and during the backup.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Seconds of writes measured before the backup.
    #[arg(long, default_value_t = 10)]
    baseline_secs: u64,
    /// Write the results here as JSON.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

const NAMESPACE: &str = "dr-bench";
const RESTORED: &str = "dr-bench-restored";
const WRITES: &str = "dr-bench-writes";
/// Puts per transaction while loading.
const LOAD_BATCH: usize = 256;
/// Transactions in flight while loading.
const LOAD_IN_FLIGHT: usize = 4;

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:010}").into_bytes()
}

/// Random bytes (xorshift from the key's index): nothing for compression
/// to gain, so the stored size and throughput are the honest worst case.
fn value(i: u64, size: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// What the writers measured.
#[derive(Debug, Clone, serde::Serialize)]
struct WriteLoad {
    ops_per_sec: f64,
    p99_ms: f64,
    errors: u64,
}

/// Runs `writers` 256 B put loops against `client` until `stop`.
async fn write_load(client: Arc<Client>, writers: usize, stop: Arc<AtomicBool>) -> WriteLoad {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = client.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let k = format!("w{w}-{i}");
                match client.put(WRITES, k.as_bytes(), &[7u8; 256]).await {
                    Ok(_) => latencies.push(at.elapsed()),
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((latencies, e)) = task.await {
            all.extend(latencies);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let p99 = all
        .get((all.len() * 99 / 100).min(all.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    WriteLoad {
        ops_per_sec: all.len() as f64 / elapsed,
        p99_ms: p99.as_secs_f64() * 1_000.0,
        errors,
    }
}

async fn load_meridian(client: Arc<Client>, keys: u64, value_size: usize) -> anyhow::Result<()> {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0u64;
    let mut last_report = Instant::now();
    while next < keys || !in_flight.is_empty() {
        while next < keys && in_flight.len() < LOAD_IN_FLIGHT {
            let end = (next + LOAD_BATCH as u64).min(keys);
            let success = (next..end)
                .map(|i| pb::TxnOp {
                    op: Some(pb::txn_op::Op::Put(pb::PutRequest {
                        namespace: NAMESPACE.into(),
                        key: key(i),
                        value: value(i, value_size),
                    })),
                })
                .collect();
            let client = client.clone();
            in_flight.spawn(async move {
                client
                    .txn(pb::TxnRequest {
                        namespace: NAMESPACE.into(),
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
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  meridian: {next}/{keys} keys");
            last_report = Instant::now();
        }
    }
    Ok(())
}

async fn load_etcd(address: &str, keys: u64, value_size: usize) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0u64;
    let mut last_report = Instant::now();
    while next < keys || !in_flight.is_empty() {
        while next < keys && in_flight.len() < 64 {
            let mut kv = etcd::kv_client::KvClient::new(channel.clone());
            let i = next;
            in_flight.spawn(async move {
                kv.put(etcd::PutRequest {
                    key: key(i),
                    value: value(i, value_size),
                    ..Default::default()
                })
                .await
            });
            next += 1;
        }
        if let Some(done) = in_flight.join_next().await {
            done??;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  etcd: {next}/{keys} keys");
            last_report = Instant::now();
        }
    }
    Ok(())
}

fn run_timed(program: &str, args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = std::process::Command::new(program)
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(started.elapsed())
}

fn mb_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let keys = args.size_mb * 1_000_000 / (args.value_size as u64 + 14);
    let logical = keys * (args.value_size as u64 + 14);
    let lab = meridian_lab::Lab::open(&args.lab, args.meridian.clone())?;
    let state = lab.state().clone();
    let region = state.regions.first().cloned().unwrap_or_default();
    // A backup of a gigabyte is one call: give it time.
    let options = |budget| ClientOptions {
        attempt_timeout: Duration::from_secs(3_600),
        retry_budget: budget,
        dialer: lab.dialer().clone(),
        ..ClientOptions::default()
    };
    let control = Client::with_options(
        state.endpoints(meridian_lab::ProcessRole::Control, None),
        options(Duration::from_secs(30)),
    )?;
    let nodes = state.endpoints(meridian_lab::ProcessRole::Node, Some(&region));
    let shard = Arc::new(Client::with_options(
        nodes.clone(),
        options(Duration::from_secs(30)),
    )?);
    for name in [NAMESPACE, WRITES] {
        match control
            .place_namespace(pb::Placement {
                name: name.into(),
                home_region: region.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(_) | Err(meridian_client::ClientError::AlreadyExists(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let vault = args.scratch.join("meridian-vault");
    control
        .put_location(pb::LocationInfo {
            name: "bench-vault".into(),
            url: format!("file://{}", vault.display()),
            region: region.clone(),
            jurisdictions: Vec::new(),
        })
        .await?;
    println!(
        "machine: {} cores; data: {keys} keys x {} B values = {:.0} MB logical",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.value_size,
        logical as f64 / 1e6
    );

    eprintln!("loading Meridian ({} nodes)...", nodes.len());
    let started = Instant::now();
    load_meridian(shard, keys, args.value_size).await?;
    let meridian_load = started.elapsed();

    // Writes alone, then during the backup.
    let writers = Arc::new(Client::with_options(
        nodes.clone(),
        options(Duration::from_secs(10)),
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(writers.clone(), args.writers, stop.clone()));
    tokio::time::sleep(Duration::from_secs(args.baseline_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let baseline = load.await?;
    eprintln!("backing up (writers running)...");
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(writers.clone(), args.writers, stop.clone()));
    let started = Instant::now();
    let backup = control.snapshot(NAMESPACE, "bench-vault").await?;
    let backup_elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = load.await?;
    // Writes alone again, as long as the backup took: the machine drifts
    // (the load's compactions), and the backup's cost is the difference
    // from both sides.
    eprintln!("writes alone again...");
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(writers.clone(), args.writers, stop.clone()));
    tokio::time::sleep(backup_elapsed.max(Duration::from_secs(args.baseline_secs))).await;
    stop.store(true, Ordering::Relaxed);
    let after = load.await?;

    eprintln!("restoring...");
    let started = Instant::now();
    let job = control
        .start_restore(pb::RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            as_name: RESTORED.into(),
            region: String::new(),
            at_seq: None,
            at_unix_ms: None,
        })
        .await?;
    let job = loop {
        let now = control.get_job(job.id).await?;
        if now.state != pb::JobState::Running as i32 {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let restore_elapsed = started.elapsed();
    if job.state != pb::JobState::Succeeded as i32 || job.digest != backup.digest {
        bail!("the restore did not succeed: {job:?}");
    }

    let mut etcd = None;
    if !args.etcd.is_empty() {
        eprintln!("loading etcd...");
        let started = Instant::now();
        load_etcd(&args.etcd, keys, args.value_size).await?;
        let etcd_load = started.elapsed();
        let snapshot = args.scratch.join("etcd.snapshot");
        let endpoint = format!("http://{}", args.etcd);
        let snapshot_path = snapshot.display().to_string();
        let save = run_timed(
            "etcdctl",
            &["--endpoints", &endpoint, "snapshot", "save", &snapshot_path],
        )?;
        let restored_dir = args.scratch.join("etcd-restored");
        let restored_path = restored_dir.display().to_string();
        let restore = run_timed(
            "etcdctl",
            &[
                "snapshot",
                "restore",
                &snapshot_path,
                "--data-dir",
                &restored_path,
            ],
        )?;
        etcd = Some(serde_json::json!({
            "load_secs": etcd_load.as_secs_f64(),
            "snapshot_bytes": std::fs::metadata(&snapshot).map(|m| m.len()).unwrap_or(0),
            "save_secs": save.as_secs_f64(),
            "save_mb_per_sec": mb_per_sec(logical, save),
            "restore_secs": restore.as_secs_f64(),
            "restore_mb_per_sec": mb_per_sec(logical, restore),
            "restored_bytes": dir_bytes(&restored_dir),
        }));
    }

    let alone = (baseline.ops_per_sec + after.ops_per_sec) / 2.0;
    let slowdown = 100.0 * (1.0 - during.ops_per_sec / alone.max(1e-9));
    println!();
    println!("{:<34} {:>14} {:>14}", "", "Meridian", "etcd");
    let etcd_field = |name: &str| {
        etcd.as_ref()
            .and_then(|e| e[name].as_f64())
            .map_or("-".to_string(), |v| format!("{v:.1}"))
    };
    println!(
        "{:<34} {:>14.1} {:>14}",
        "load (s)",
        meridian_load.as_secs_f64(),
        etcd_field("load_secs")
    );
    println!(
        "{:<34} {:>14.1} {:>14}",
        "backup / snapshot save (MB/s)",
        mb_per_sec(logical, backup_elapsed),
        etcd_field("save_mb_per_sec")
    );
    println!(
        "{:<34} {:>14.1} {:>14}",
        "restore (MB/s)",
        mb_per_sec(logical, restore_elapsed),
        etcd_field("restore_mb_per_sec")
    );
    println!(
        "{:<34} {:>14.1} {:>14}",
        "stored backup (MB)",
        backup.stored_bytes as f64 / 1e6,
        etcd.as_ref()
            .and_then(|e| e["snapshot_bytes"].as_u64())
            .map_or("-".to_string(), |v| format!("{:.1}", v as f64 / 1e6))
    );
    println!(
        "writes alone before: {:.0} ops/s p99 {:.1} ms; after: {:.0} ops/s p99 {:.1} ms; during the backup: {:.0} ops/s p99 {:.1} ms ({slowdown:+.1} % slower than the mean alone)",
        baseline.ops_per_sec,
        baseline.p99_ms,
        after.ops_per_sec,
        after.p99_ms,
        during.ops_per_sec,
        during.p99_ms
    );
    let report = serde_json::json!({
        "keys": keys,
        "value_size": args.value_size,
        "logical_bytes": logical,
        "meridian": {
            "nodes": nodes.len(),
            "load_secs": meridian_load.as_secs_f64(),
            "backup_secs": backup_elapsed.as_secs_f64(),
            "backup_mb_per_sec": mb_per_sec(logical, backup_elapsed),
            "backup_node_ms": backup.elapsed_ms,
            "stored_bytes": backup.stored_bytes,
            "objects": backup.objects,
            "restore_secs": restore_elapsed.as_secs_f64(),
            "restore_mb_per_sec": mb_per_sec(logical, restore_elapsed),
            "writes_alone": baseline,
            "writes_during_backup": during,
            "writes_alone_after": after,
            "write_slowdown_percent": slowdown,
        },
        "etcd": etcd,
    });
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
