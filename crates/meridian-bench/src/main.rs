//! `meridian-bench`: the same closed-loop workload against a Meridian shard and an
//! etcd cluster, in one run, reported side by side.
//!
//! Each client is one task with its own HTTP/2 connection to the leader and one
//! request in flight. Keys are drawn uniformly from a fixed key space; values have
//! a fixed size. Reads are linearizable on both systems (Meridian's default
//! read-index; etcd's default non-serializable range).

mod etcd {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use meridian_net::coalesce::Coalesce;
use meridian_proto::v1 as pb;
use rand::Rng;
use serde::Serialize;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// gRPC addresses of the Meridian shard members.
    #[arg(long, value_delimiter = ',')]
    meridian: Vec<String>,
    /// Directory of a running Meridian lab to benchmark (instead of --meridian).
    #[arg(long)]
    meridian_lab: Option<std::path::PathBuf>,
    /// With --meridian-lab: also measure through the lab's first gateway (the
    /// namespace is placed through the control plane).
    #[arg(long)]
    via_gateway: bool,
    /// Client addresses of the etcd members.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Client counts to run, each a separate measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Workloads: `put`, `get`.
    #[arg(long, value_delimiter = ',', default_value = "put,get")]
    workloads: Vec<String>,
    /// Seconds measured per run (after a 2 s warm-up).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Measure each row this many times, the systems taking turns, and report
    /// each system's median run (by ops/s): slow drift of a shared machine then
    /// lands on both sides instead of on whichever ran second.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
struct RunResult {
    system: &'static str,
    workload: String,
    clients: usize,
    ops: u64,
    errors: u64,
    ops_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// ops/s of every round of this row (the reported run is their median).
    round_ops_per_second: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Meridian,
    /// Meridian through a gateway (same `Kv` API, one more hop).
    Gateway,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Meridian => "meridian",
            System::Gateway => "gateway",
            System::Etcd => "etcd",
        }
    }
}

const NAMESPACE: &str = "bench";
const WARM_UP: Duration = Duration::from_secs(2);

/// A connection to `address`. Requests go out as one HEADERS + DATA pair
/// with END_STREAM on the data, as common gRPC clients send them (tonic on its
/// own sends END_STREAM in a further empty frame, which would load every
/// server here with an extra read per call).
fn channel(address: &str) -> anyhow::Result<Coalesce<Channel>> {
    // A lab with mutual TLS is reached with its admin certificate (so every
    // call goes through TLS and the access decision, as deployed).
    if let Some((addresses, dialer)) = LAB_TLS.get()
        && addresses.contains(address)
    {
        let endpoint = dialer.endpoint(address)?.tcp_nodelay(true);
        return Ok(Coalesce::new(dialer.lazy(&endpoint)));
    }
    Ok(Coalesce::new(
        Endpoint::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect_lazy(),
    ))
}

/// The processes of a lab with mutual TLS, and the dialer with its admin
/// certificate.
static LAB_TLS: std::sync::OnceLock<(std::collections::HashSet<String>, meridian_net::Dialer)> =
    std::sync::OnceLock::new();

/// Retries leader discovery while a freshly started cluster elects.
async fn with_retry<F, Fut>(find: F) -> anyhow::Result<String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match find().await {
            Ok(leader) => return Ok(leader),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// gRPC addresses of the lab's processes with `role` (in `region`, if given).
fn lab_processes(
    dir: &std::path::Path,
    role: &str,
    region: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("lab.json"))
        .with_context(|| format!("reading {}/lab.json", dir.display()))?;
    let state: serde_json::Value = serde_json::from_str(&text)?;
    let first_region = state["regions"][0].as_str().unwrap_or_default().to_string();
    let region = region.unwrap_or(&first_region);
    let members = state["processes"]
        .as_array()
        .map(|processes| {
            processes
                .iter()
                .filter(|p| p["role"] == role)
                .filter(|p| role == "control" || p["region"] == region)
                .filter_map(|p| p["grpc"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(members)
}

/// Places the bench namespace through the lab's control plane, in its first
/// region, so gateways route it.
async fn place_through_control(dir: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(dir.join("lab.json"))?;
    let state: serde_json::Value = serde_json::from_str(&text)?;
    let region = state["regions"][0].as_str().unwrap_or_default().to_string();
    for control in lab_processes(dir, "control", None)? {
        let mut client = pb::control_client::ControlClient::new(channel(&control)?);
        let request = pb::PlaceNamespaceRequest {
            placement: Some(pb::Placement {
                name: NAMESPACE.into(),
                home_region: region.clone(),
                ..Default::default()
            }),
        };
        match client.place_namespace(request).await {
            Ok(_) => return Ok(()),
            Err(status) if status.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(_) => continue,
        }
    }
    bail!("could not place the bench namespace through the control plane")
}

async fn meridian_leader(members: &[String]) -> anyhow::Result<String> {
    for member in members {
        let mut admin = pb::admin_client::AdminClient::new(channel(member)?);
        if let Ok(status) = admin.cluster_status(pb::ClusterStatusRequest {}).await {
            let status = status.into_inner();
            if !status.leader_address.is_empty() {
                return Ok(status.leader_address);
            }
        }
    }
    bail!("no Meridian leader found among {members:?}")
}

async fn etcd_leader(members: &[String]) -> anyhow::Result<String> {
    for member in members {
        let mut maintenance = etcd::maintenance_client::MaintenanceClient::new(channel(member)?);
        if let Ok(status) = maintenance.status(etcd::StatusRequest {}).await {
            let status = status.into_inner();
            if status.header.map(|h| h.member_id) == Some(status.leader) {
                return Ok(member.clone());
            }
        }
    }
    bail!("no etcd leader found among {members:?}")
}

fn key(index: usize) -> Vec<u8> {
    format!("bench-key-{index:08}").into_bytes()
}

/// A request that names its load-generator client, as a real client would: the
/// gateway rate-limits per client, and 64 clients behind one IP address are
/// 64 clients, not one.
fn named<T>(
    client: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    message: T,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("meridian-client", client.clone());
    request
}

/// One operation against `system`; the error text is only counted.
async fn operation(
    system: System,
    channel: &Coalesce<Channel>,
    client: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    workload: &str,
    key: Vec<u8>,
    value: &[u8],
) -> Result<(), String> {
    let result = match (system, workload) {
        (System::Meridian | System::Gateway, "put") => {
            pb::kv_client::KvClient::new(channel.clone())
                .put(named(
                    client,
                    pb::PutRequest {
                        namespace: NAMESPACE.into(),
                        key,
                        value: value.to_vec(),
                    },
                ))
                .await
                .map(|_| ())
        }
        (System::Meridian | System::Gateway, _) => pb::kv_client::KvClient::new(channel.clone())
            .get(named(
                client,
                pb::GetRequest {
                    namespace: NAMESPACE.into(),
                    key,
                    read: None,
                },
            ))
            .await
            .map(|_| ()),
        (System::Etcd, "put") => etcd::kv_client::KvClient::new(channel.clone())
            .put(etcd::PutRequest {
                key,
                value: value.to_vec(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        (System::Etcd, _) => etcd::kv_client::KvClient::new(channel.clone())
            .range(etcd::RangeRequest {
                key,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    };
    result.map_err(|status| status.to_string())
}

async fn run(
    system: System,
    leader: &str,
    workload: &str,
    clients: usize,
    args: &Args,
) -> anyhow::Result<RunResult> {
    let value = vec![b'v'; args.value_size];
    let start = Instant::now();
    let measure_from = start + WARM_UP;
    let end = measure_from + Duration::from_secs(args.duration);
    let mut tasks = Vec::with_capacity(clients);
    for client_index in 0..clients {
        let channel = channel(leader)?;
        let client_name: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("bench-{client_index}").parse()?;
        let value = value.clone();
        let workload = workload.to_string();
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut errors = 0u64;
            let mut ops = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let index = rand::rng().random_range(0..keys);
                let outcome = operation(
                    system,
                    &channel,
                    &client_name,
                    &workload,
                    key(index),
                    &value,
                )
                .await;
                if now >= measure_from {
                    match outcome {
                        Ok(()) => {
                            ops += 1;
                            let micros = now.elapsed().as_micros() as u64;
                            let _ = histogram.record(micros.max(1));
                        }
                        Err(_) => errors += 1,
                    }
                }
            }
            (histogram, ops, errors)
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ops, mut errors) = (0, 0);
    for task in tasks {
        let (h, o, e) = task.await?;
        histogram.add(h)?;
        ops += o;
        errors += e;
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(RunResult {
        system: system.name(),
        workload: workload.to_string(),
        clients,
        ops,
        errors,
        ops_per_second: ops as f64 / args.duration as f64,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        round_ops_per_second: Vec::new(),
    })
}

async fn preload(system: System, leader: &str, args: &Args) -> anyhow::Result<()> {
    let value = vec![b'v'; args.value_size];
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let channel = channel(leader)?;
        let value = value.clone();
        let keys = args.keys;
        let client_name: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("preload-{worker}").parse()?;
        tasks.push(tokio::spawn(async move {
            for index in (worker..keys).step_by(32) {
                operation(system, &channel, &client_name, "put", key(index), &value).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await?
            .map_err(|e| anyhow::anyhow!("preload failed: {e}"))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let mut tls = false;
    if let Some(dir) = &args.meridian_lab {
        args.meridian.extend(lab_processes(dir, "node", None)?);
        let state = meridian_lab::LabState::load(dir)?;
        if state.certs.is_some() {
            let addresses = state.processes.iter().map(|p| p.grpc.clone()).collect();
            let _ = LAB_TLS.set((addresses, state.client_dialer_as("admin")?));
            tls = true;
        }
    }
    let mut systems = Vec::new();
    if !args.meridian.is_empty() {
        let leader = with_retry(|| meridian_leader(&args.meridian)).await?;
        if tls {
            // With access control on, only the control plane creates a
            // namespace on a shard.
            let dir = args.meridian_lab.clone().context("TLS needs a lab")?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Err(err) = place_through_control(&dir).await {
                if Instant::now() >= deadline {
                    return Err(err).context("placing the bench namespace");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } else {
            let mut admin = pb::admin_client::AdminClient::new(channel(&leader)?);
            if let Err(status) = admin
                .create_namespace(pb::CreateNamespaceRequest {
                    name: NAMESPACE.into(),
                })
                .await
                && status.code() != tonic::Code::AlreadyExists
            {
                return Err(status).context("creating the bench namespace");
            }
        }
        systems.push((System::Meridian, leader));
        if args.via_gateway {
            let dir = args
                .meridian_lab
                .clone()
                .context("--via-gateway needs --meridian-lab")?;
            place_through_control(&dir).await?;
            let gateway = lab_processes(&dir, "gateway", None)?
                .into_iter()
                .next()
                .context("the lab has no gateway")?;
            systems.push((System::Gateway, gateway));
        }
    }
    if !args.etcd.is_empty() {
        systems.push((System::Etcd, with_retry(|| etcd_leader(&args.etcd)).await?));
    }
    if systems.is_empty() {
        bail!("give --meridian and/or --etcd member addresses");
    }
    let mut results = Vec::new();
    for workload in &args.workloads {
        if workload != "put" && workload != "get" {
            bail!("unknown workload {workload:?}: use put or get");
        }
        if workload == "get" {
            for (system, leader) in &systems {
                eprintln!("preloading {} keys into {}", args.keys, system.name());
                preload(*system, leader, &args).await?;
            }
        }
        for &clients in &args.clients {
            let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); systems.len()];
            for round in 1..=args.rounds.max(1) {
                for (index, (system, leader)) in systems.iter().enumerate() {
                    eprintln!(
                        "running {workload} with {clients} clients against {} for {} s (round {round}/{})",
                        system.name(),
                        args.duration,
                        args.rounds.max(1)
                    );
                    let result = run(*system, leader, workload, clients, &args).await?;
                    eprintln!(
                        "  {:>9.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  errors {}",
                        result.ops_per_second,
                        result.p50_ms,
                        result.p99_ms,
                        result.p999_ms,
                        result.errors
                    );
                    runs[index].push(result);
                }
            }
            results.extend(runs.into_iter().filter_map(median_run));
        }
    }
    print_table(&results);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

/// The run with the median ops/s (the upper one of an even count), with the
/// ops/s of every run for the record.
fn median_run(mut runs: Vec<RunResult>) -> Option<RunResult> {
    runs.sort_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second));
    let all: Vec<f64> = runs.iter().map(|r| r.ops_per_second).collect();
    let middle = runs.len() / 2;
    let mut median = runs.into_iter().nth(middle)?;
    median.round_ops_per_second = all;
    Some(median)
}

fn print_table(results: &[RunResult]) {
    println!(
        "{:<9} {:>7} {:<9} {:>10} {:>9} {:>9} {:>9} {:>7} {:>13} {:>11}",
        "workload",
        "clients",
        "system",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "errors",
        "ops ratio",
        "p99 ratio"
    );
    for result in results {
        // Meridian is compared with etcd; the gateway with Meridian direct.
        let peer_name = match result.system {
            "meridian" => "etcd",
            "gateway" => "meridian",
            _ => "",
        };
        let peer = results.iter().find(|r| {
            r.system == peer_name && r.workload == result.workload && r.clients == result.clients
        });
        let (ops_ratio, p99_ratio) = match peer {
            Some(peer) if peer.ops_per_second > 0.0 && peer.p99_ms > 0.0 => (
                format!("{:.2}x", result.ops_per_second / peer.ops_per_second),
                format!("{:.2}x", result.p99_ms / peer.p99_ms),
            ),
            _ => ("".into(), "".into()),
        };
        println!(
            "{:<9} {:>7} {:<9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>13} {:>11}",
            result.workload,
            result.clients,
            result.system,
            result.ops_per_second,
            result.p50_ms,
            result.p99_ms,
            result.p999_ms,
            result.errors,
            ops_ratio,
            p99_ratio
        );
    }
    print_peaks(results);
}

/// Each system's best throughput over the client counts run: its capacity,
/// as opposed to one client count's closed-loop rate (which at low counts is
/// just the inverse of latency).
fn print_peaks(results: &[RunResult]) {
    let peak = |system: &str, workload: &str| {
        results
            .iter()
            .filter(|r| r.system == system && r.workload == workload)
            .max_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second))
    };
    let mut workloads: Vec<&str> = results.iter().map(|r| r.workload.as_str()).collect();
    workloads.dedup();
    println!();
    println!(
        "{:<9} {:<9} {:>10} {:>8} {:>13}",
        "peak", "system", "ops/s", "clients", "ops ratio"
    );
    for workload in workloads {
        for system in ["etcd", "meridian", "gateway"] {
            let Some(best) = peak(system, workload) else {
                continue;
            };
            let versus = match system {
                "meridian" => "etcd",
                "gateway" => "meridian",
                _ => "",
            };
            let ratio = peak(versus, workload)
                .filter(|p| p.ops_per_second > 0.0)
                .map(|p| format!("{:.2}x", best.ops_per_second / p.ops_per_second))
                .unwrap_or_default();
            println!(
                "{:<9} {:<9} {:>10.0} {:>8} {:>13}",
                workload, system, best.ops_per_second, best.clients, ratio
            );
        }
    }
}
