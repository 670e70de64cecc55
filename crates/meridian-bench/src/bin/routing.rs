//! `meridian-routing-bench`: how fast routing changes reach every gateway, and
//! what a large routing table costs.
//!
//! It starts its own lab (three regions, TLS and the WAN emulator on, as `lab up`
//! does), then:
//!
//! 1. **Propagation.** Creates namespaces one at a time through the control-plane
//!    leader. For each, the moment the leader answered (the change is committed
//!    and applied there) is compared with the moment each gateway applied that
//!    routing version (`meridian_gateway_routing_applied_timestamp_seconds`, read over HTTPS
//!    with the lab's client certificate). Both clocks are this machine's.
//! 2. **Revocation.** Revokes a user identity (granted `reader` on a
//!    namespace) through the control plane, one revocation at a time, and asks
//!    every gateway and one node per region with that identity's certificate,
//!    call after call, until each refuses it; then restores it and waits until all
//!    admit it again. Timed from the control plane's answer.
//! 3. **Scale.** Grows the table to `--namespaces` entries, then reports
//!    control-plane and gateway memory (RSS), the time a new subscriber takes to
//!    receive the full table from a local and from a remote control member, the
//!    time a restarted gateway takes to be ready, and the cost of one routing
//!    lookup in a table of that size.

use anyhow::{Context, bail};
use clap::Parser;
use meridian_client::{Client, ClientOptions, pb};
use meridian_lab::{Lab, LabSpec, ProcessRole, WanSettings};
use meridian_proto::v1::control_client::ControlClient;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// The `meridian` binary the lab runs.
    #[arg(long, default_value = "target/production/meridian")]
    binary: PathBuf,
    /// Directory for the lab (must not hold a running one).
    #[arg(long)]
    dir: PathBuf,
    /// Nodes per regional shard.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Namespace changes timed one by one.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Revocations timed one by one (after the routing changes).
    #[arg(long, default_value_t = 50)]
    revocations: usize,
    /// Size the table is grown to for the scale measurements (0 skips them).
    #[arg(long, default_value_t = 100_000)]
    namespaces: usize,
    /// Placements in flight while growing the table.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Only measure the lookup cost in a synthetic table of this many routes
    /// (no lab).
    #[arg(long)]
    lookup_only: Option<usize>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    propagation: BTreeMap<String, Summary>,
    /// From a revocation's commit until each process refuses the identity.
    revocation: BTreeMap<String, Summary>,
    scale: Option<Scale>,
}

#[derive(Debug, Serialize)]
struct Summary {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Scale {
    namespaces: usize,
    placements_per_second: f64,
    control_rss_mib: BTreeMap<String, f64>,
    gateway_rss_mib: BTreeMap<String, f64>,
    full_table_ms: BTreeMap<String, f64>,
    full_table_bytes: usize,
    gateway_restart_ready_ms: f64,
    lookup_ns: f64,
}

fn summary(mut samples: Vec<f64>) -> Summary {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index]
    };
    Summary {
        samples: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One HTTPS GET with the lab's client certificate; returns the body.
async fn https_get(
    tls: &Arc<rustls::ClientConfig>,
    address: &str,
    path: &str,
) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from(meridian_net::tls::SERVER_NAME)?;
    let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    // A peer closing without TLS close_notify still delivered the body.
    let _ = stream.read_to_end(&mut response).await;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn metric(body: &str, name: &str) -> Option<i64> {
    metric_f64(body, name).map(|value| value as i64)
}

fn metric_f64(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(routes) = args.lookup_only {
        let mut table = meridian_gateway::routes::RouteTable::default();
        table.apply(pb::RoutingUpdate {
            version: 1,
            full: true,
            upserts: (0..routes)
                .map(|i| pb::Route {
                    namespace: format!("scale-{i}"),
                    shard: format!("shard-{}", i % 3),
                    region: "r".into(),
                    epoch: 1,
                    ..Default::default()
                })
                .collect(),
            shards: (0..3)
                .map(|s| pb::ShardInfo {
                    id: format!("shard-{s}"),
                    region: "r".into(),
                    members: Vec::new(),
                })
                .collect(),
            ..Default::default()
        });
        let ns = lookup_cost(&table)?;
        println!(
            "{}",
            serde_json::json!({ "routes": routes, "lookup_ns": ns })
        );
        return Ok(());
    }
    let regions: Vec<String> = ["us-east", "eu-west", "ap-south"]
        .map(String::from)
        .to_vec();
    // 100,000 namespaces over three shards is more than the default per-shard
    // limit of 10,000.
    let per_shard = (args.namespaces + args.changes) / regions.len() + 1_000;
    let mut lab = Lab::up(&LabSpec {
        dir: args.dir.clone(),
        regions: regions.clone(),
        nodes: args.nodes,
        binary: args.binary.clone(),
        env: vec![(
            "MERIDIAN__LIMITS__MAX_NAMESPACES".into(),
            per_shard.max(10_000).to_string(),
        )],
        tls: true,
        wan: Some(WanSettings::default()),
        encryption: true,
    })?
    .kill_on_drop();
    eprintln!("starting the lab in {}", args.dir.display());
    lab.wait_ready(Duration::from_secs(180), |ready, total| {
        eprintln!("  {ready}/{total} processes ready")
    })
    .await?;
    let result = run(&args, &mut lab, &regions).await;
    let _ = lab.down();
    let report = result?;
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = &args.json_out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run(args: &Args, lab: &mut Lab, regions: &[String]) -> anyhow::Result<Report> {
    let state = lab.state().clone();
    let dialer = lab.dialer().clone();
    let certs = state.certs.clone().context("the lab has no certificates")?;
    let tls = meridian_net::TlsFiles::in_dir(&certs, meridian_lab::state::CLIENT_CERT)
        .load()?
        .rustls_client_config()?;
    let control = Client::with_options(
        state.endpoints(ProcessRole::Control, None),
        ClientOptions {
            retry_budget: Duration::from_secs(60),
            dialer: dialer.clone(),
            ..ClientOptions::default()
        },
    )?;
    let gateways: Vec<(String, String)> = state
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Gateway)
        .map(|p| (p.name.clone(), p.http.clone()))
        .collect();

    // Propagation, one change at a time.
    let mut per_gateway: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut every: Vec<f64> = Vec::new();
    eprintln!("timing {} routing changes", args.changes);
    for i in 0..args.changes {
        let region = &regions[i % regions.len()];
        let response = control
            .place_namespace(pb::Placement {
                name: format!("prop-{i}"),
                home_region: region.clone(),
                ..Default::default()
            })
            .await?;
        let committed_ms = now_ms();
        let version = response.routing_version as i64;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut slowest = 0f64;
        for (name, http) in &gateways {
            loop {
                let body = https_get(&tls, http, "/metrics").await?;
                let applied = metric(&body, "meridian_gateway_routing_version");
                if applied == Some(version) {
                    let at =
                        metric_f64(&body, "meridian_gateway_routing_applied_timestamp_seconds")
                            .map(|seconds| (seconds * 1e3) as i64)
                            .context("no applied time")?;
                    let delay = (at - committed_ms).max(0) as f64;
                    per_gateway.entry(name.clone()).or_default().push(delay);
                    slowest = slowest.max(delay);
                    break;
                }
                if applied.is_some_and(|v| v > version) {
                    bail!("{name} moved past version {version} before it was read");
                }
                if Instant::now() > deadline {
                    bail!("{name} did not apply version {version} within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        every.push(slowest);
        if (i + 1).is_multiple_of(50) {
            eprintln!("  {}/{} changes", i + 1, args.changes);
        }
    }
    let mut report = Report::default();
    for (name, samples) in per_gateway {
        report.propagation.insert(name, summary(samples));
    }
    report
        .propagation
        .insert("every gateway".into(), summary(every));
    if args.revocations > 0 {
        // prop-i was placed in regions[i % regions.len()].
        let namespace_of_region = regions
            .iter()
            .enumerate()
            .map(|(i, region)| (region.clone(), format!("prop-{i}")))
            .collect();
        report.revocation =
            revocation_rounds(args.revocations, lab, &control, &namespace_of_region).await?;
    }
    if args.namespaces == 0 {
        return Ok(report);
    }

    // Grow the table.
    let target = args.namespaces.saturating_sub(args.changes);
    eprintln!(
        "placing {target} more namespaces, {} at a time",
        args.concurrency
    );
    let control = Arc::new(control);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let control = control.clone();
        let next = next.clone();
        let regions = regions.to_vec();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= target {
                    return Ok::<(), anyhow::Error>(());
                }
                control
                    .place_namespace(pb::Placement {
                        name: format!("scale-{i}"),
                        home_region: regions[i % regions.len()].clone(),
                        ..Default::default()
                    })
                    .await?;
                if (i + 1).is_multiple_of(10_000) {
                    eprintln!("  {} placed", i + 1);
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let placements_per_second = target as f64 / started.elapsed().as_secs_f64();
    // Let every gateway apply the last changes before measuring them.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let rss = |role: ProcessRole| -> BTreeMap<String, f64> {
        state
            .processes
            .iter()
            .filter(|p| p.role == role)
            .filter_map(|p| p.pid.map(|pid| (p.name.clone(), rss_mib(pid))))
            .collect()
    };
    let control_rss_mib = rss(ProcessRole::Control);
    let gateway_rss_mib = rss(ProcessRole::Gateway);

    // A new subscriber's full table, from each control member (as a gateway in
    // us-east would dial it: through that region's WAN links).
    let us_east_dialer = meridian_net::Dialer::new(
        wan_routes(&state, "us-east")?,
        Some(&meridian_net::TlsFiles::in_dir(&certs, meridian_lab::state::CLIENT_CERT).load()?),
    );
    let mut full_table_ms = BTreeMap::new();
    let mut full_table_bytes = 0;
    let mut table = meridian_gateway::routes::RouteTable::default();
    for member in state
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Control)
    {
        let channel = us_east_dialer
            .connect(&us_east_dialer.endpoint(&member.grpc)?)
            .await?;
        let started = Instant::now();
        let mut stream = ControlClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .watch_routes(pb::WatchRoutesRequest {
                since_version: 0,
                subscriber: "routing-bench".into(),
            })
            .await?
            .into_inner();
        let mut bytes = 0;
        let mut fresh = meridian_gateway::routes::RouteTable::default();
        while let Some(update) = stream.next().await {
            let update = update?;
            bytes += prost::Message::encoded_len(&update);
            let more = update.more;
            fresh.apply(update);
            if !more {
                break;
            }
        }
        full_table_ms.insert(
            format!("{} ({}) -> us-east", member.name, member.region),
            started.elapsed().as_secs_f64() * 1e3,
        );
        full_table_bytes = bytes;
        table = fresh;
    }

    // A restarted gateway: process start, full table, ready.
    let started = Instant::now();
    lab.restart("gateway-ap-south")?;
    lab.wait_ready(Duration::from_secs(120), |_, _| {}).await?;
    let gateway_restart_ready_ms = started.elapsed().as_secs_f64() * 1e3;

    let lookup_ns = lookup_cost(&table)?;
    report.scale = Some(Scale {
        namespaces: table.routes.len(),
        placements_per_second,
        control_rss_mib,
        gateway_rss_mib,
        full_table_ms,
        full_table_bytes,
        gateway_restart_ready_ms,
        lookup_ns,
    });
    Ok(report)
}

/// How long a revocation takes to be enforced: the victim identity (a user
/// granted `reader` on the `prop-*` namespaces) is revoked through the control
/// plane, and each gateway and one node per region is asked with the victim's
/// certificate, call after call, for a namespace of its own region (so an answer
/// never waits on the WAN), until it refuses (PERMISSION_DENIED). Measured from
/// the moment the control plane answered the revocation. Then the identity is
/// restored and every process is polled until it admits it again, and the next
/// round starts.
async fn revocation_rounds(
    rounds: usize,
    lab: &Lab,
    control: &Client,
    namespace_of_region: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, Summary>> {
    let state = lab.state();
    let certs = state.certs.clone().context("the lab has no certificates")?;
    meridian_net::certs::issue(
        &certs,
        &[meridian_net::Identity::User {
            name: "revocation-victim".into(),
        }],
        true,
    )?;
    // Clients sit outside the emulated WAN, as the lab's own are.
    let victim = state.client_dialer_as("revocation-victim")?;
    let uri = "spiffe://meridian/user/revocation-victim";
    control
        .change_access(pb::change_access_request::Change::Grant(pb::GrantInfo {
            identity: uri.into(),
            role: "reader".into(),
            scope: "prop-*".into(),
        }))
        .await?;
    // Every gateway, and the first node of each region.
    let mut targets: Vec<(String, String, String)> = Vec::new();
    for process in &state.processes {
        let first_node_of_region = process.role == ProcessRole::Node
            && !targets
                .iter()
                .any(|(name, _, _)| name.starts_with(&format!("{}-", process.region)));
        if process.role == ProcessRole::Gateway || first_node_of_region {
            let namespace = namespace_of_region
                .get(&process.region)
                .with_context(|| format!("no namespace in region {}", process.region))?;
            targets.push((
                process.name.clone(),
                process.grpc.clone(),
                namespace.clone(),
            ));
        }
    }
    let clients: Vec<Target> = targets
        .iter()
        .map(|(name, address, namespace)| {
            let endpoint = victim.endpoint(address)?.timeout(Duration::from_secs(5));
            Ok((
                name.clone(),
                meridian_proto::v1::kv_client::KvClient::new(victim.lazy(&endpoint)),
                pb::GetRequest {
                    namespace: namespace.clone(),
                    key: b"k".to_vec(),
                    ..Default::default()
                },
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    /// A process polled: its name, a client with the victim's certificate,
    /// and a read of a namespace of its region.
    type Target = (
        String,
        meridian_proto::v1::kv_client::KvClient<tonic::transport::Channel>,
        pb::GetRequest,
    );
    // Until `admitted` holds for every target: its delay from `since`.
    async fn until_all(
        clients: &[Target],
        since: Instant,
        admitted: bool,
    ) -> anyhow::Result<Vec<(String, f64)>> {
        let waits: Vec<_> = clients
            .iter()
            .map(|(name, client, get)| {
                let (mut client, get, name) = (client.clone(), get.clone(), name.clone());
                tokio::spawn(async move {
                    let deadline = since + Duration::from_secs(30);
                    loop {
                        let answer = client.get(get.clone()).await;
                        // Past the access decision, any answer counts as
                        // admitted (a follower's not-leader, a namespace another
                        // shard holds): only the decision is timed.
                        let denied =
                            matches!(&answer, Err(s) if s.code() == tonic::Code::PermissionDenied);
                        let passed = match &answer {
                            Ok(_) => true,
                            Err(s) => !matches!(
                                s.code(),
                                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                            ),
                        };
                        if (admitted && passed) || (!admitted && denied) {
                            return Ok((name, since.elapsed().as_secs_f64() * 1e3));
                        }
                        if Instant::now() > deadline {
                            bail!(
                                "{name} did not {} the victim within 30 s: {answer:?}",
                                if admitted { "admit" } else { "refuse" }
                            );
                        }
                        // Back to back: the detection delay is one call.
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let mut delays = Vec::with_capacity(waits.len());
        for wait in waits {
            delays.push(wait.await??);
        }
        Ok(delays)
    }
    until_all(&clients, Instant::now(), true).await?;
    let mut per_target: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut slowest = Vec::with_capacity(rounds);
    eprintln!("timing {rounds} revocations");
    for round in 0..rounds {
        control
            .change_access(pb::change_access_request::Change::RevokeIdentity(
                uri.into(),
            ))
            .await?;
        let revoked_at = Instant::now();
        let delays = until_all(&clients, revoked_at, false).await?;
        slowest.push(delays.iter().map(|(_, d)| *d).fold(0.0, f64::max));
        for (name, delay) in delays {
            per_target.entry(name).or_default().push(delay);
        }
        control
            .change_access(pb::change_access_request::Change::RestoreIdentity(
                uri.into(),
            ))
            .await?;
        until_all(&clients, Instant::now(), true).await?;
        if (round + 1).is_multiple_of(10) {
            eprintln!("  {}/{rounds} revocations", round + 1);
        }
    }
    let mut report: BTreeMap<String, Summary> = per_target
        .into_iter()
        .map(|(name, samples)| (name, summary(samples)))
        .collect();
    report.insert("every gateway and node".into(), summary(slowest));
    Ok(report)
}

/// The dial-via table the lab gave processes of `region`.
fn wan_routes(
    state: &meridian_lab::LabState,
    region: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let Some(wan) = state.wan() else {
        return Ok(BTreeMap::new());
    };
    let config = meridian_wan::WanConfig::load(&wan.config)?;
    Ok(meridian_lab::wan::dial_via(&config, region))
}

/// Nanoseconds per routing lookup (route by namespace, then its shard) over a
/// million lookups of names spread over the whole table.
fn lookup_cost(table: &meridian_gateway::routes::RouteTable) -> anyhow::Result<f64> {
    let names: Vec<String> = table.routes.keys().cloned().collect();
    anyhow::ensure!(!names.is_empty(), "the table is empty");
    let lookups = 1_000_000usize;
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..lookups {
        let name = &names[(i.wrapping_mul(2_654_435_761)) % names.len()];
        if let Some(route) = table.routes.get(name.as_str())
            && table.shards.contains_key(&route.shard)
        {
            found += 1;
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    anyhow::ensure!(
        found == lookups,
        "only {found} of {lookups} lookups found their route and shard"
    );
    Ok(ns)
}
