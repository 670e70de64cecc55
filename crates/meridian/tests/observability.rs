//! Every node serves gRPC reflection and health, and HTTP health and Prometheus
//! metrics with the documented names and labels.

mod common;

use common::TestShard;
use std::io::{Read, Write};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_health_and_metrics() {
    let mut shard = TestShard::start(3, &[]).await;
    shard.client.create_namespace("observed").await.unwrap();
    shard.client.put("observed", b"k", b"v").await.unwrap();
    let leader = shard.leader().await;
    let record = shard.lab.process(&leader).unwrap().clone();

    // Reflection lists every public service without the .proto files.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", record.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "meridian.v1.Kv",
        "meridian.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&expected.to_string()),
            "{expected} in {services:?}"
        );
    }

    assert!(meridian_lab::lab::is_serving(&Default::default(), &record.grpc).await);
    assert_eq!(http_get(&record.http, "/health/live").0, 200);
    assert_eq!(http_get(&record.http, "/health/ready").0, 200);
    let (status, metrics) = http_get(&record.http, "/metrics");
    assert_eq!(status, 200);
    let node_id = record.node_id.unwrap();
    for name in [
        "meridian_write_latency_seconds_bucket",
        "meridian_read_latency_seconds_bucket",
        "meridian_requests_total",
        "meridian_raft_leader",
        "meridian_raft_term",
        "meridian_raft_log_index",
        "meridian_raft_applied_index",
        "meridian_storage_fsync_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from metrics");
    }
    let labels = format!("region=\"us-east\",shard=\"us-east-s1\",node=\"{node_id}\"");
    let leader_line = metrics
        .lines()
        .find(|l| l.starts_with("meridian_raft_leader{"))
        .unwrap();
    assert!(leader_line.contains(&labels), "{leader_line}");
    assert!(
        leader_line.ends_with(" 1"),
        "this node is the leader: {leader_line}"
    );
    assert!(
        metrics.contains("meridian_requests_total{")
            && metrics.contains("method=\"Put\",code=\"Ok\""),
        "request counter by method and code"
    );

    // A node outside the membership is live but not ready.
    let extra = shard.lab.add_node("us-east").unwrap();
    let extra = shard.lab.process(&extra).unwrap().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(&extra.http).is_err() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(&extra.http, "/health/live").0, 200);
    assert_eq!(http_get(&extra.http, "/health/ready").0, 503);
}

/// Problems a Prometheus text body has that `promtool check metrics` (and
/// Prometheus's text parser) would flag: samples without `# HELP`/`# TYPE`
/// under their own name (a histogram's under its base name), counters not
/// ending in `_total`, abbreviated units in names.
fn lint(body: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut described = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap_or("").to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or("").to_string();
            let kind = parts.next().unwrap_or("").to_string();
            if kind == "counter" && !name.ends_with("_total") {
                problems.push(format!("counter {name} does not end in _total"));
            }
            for unit in ["_ms", "_us", "_ns", "_secs", "_millis", "_kb", "_mb"] {
                if name.contains(&format!("{unit}_")) || name.ends_with(unit) {
                    problems.push(format!("{name}: abbreviated unit {unit}"));
                }
            }
            described.insert(name, kind);
        } else if line.starts_with('#') {
            problems.push(format!("unexpected comment line {line:?}"));
        } else if !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| described.get(*base).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            if !described.contains_key(family) || !helped.contains(family) {
                problems.push(format!(
                    "sample {name} without # HELP and # TYPE for {family}"
                ));
            }
        }
    }
    problems
}

/// The control-plane member id of the process serving HTTP at `http`.
fn member_id(state: &meridian_lab::LabState, http: &str) -> u64 {
    state
        .processes
        .iter()
        .find(|p| p.http == http)
        .and_then(|p| p.node_id)
        .unwrap_or(0)
}

/// The value of the first sample of `name` whose labels contain `labels`.
fn sample(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The `meridian_*` names in `text`.
fn metric_names(text: &str, into: &mut std::collections::BTreeSet<String>) {
    let mut rest = text;
    while let Some(at) = rest.find("meridian_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        into.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
}

/// Every Meridian metric name an alert rule in deploy/prometheus reads.
fn names_in_alert_rules() -> std::collections::BTreeSet<String> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/rules");
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        metric_names(
            &std::fs::read_to_string(entry.unwrap().path()).unwrap(),
            &mut names,
        );
    }
    names
}

/// Every Meridian metric name a Grafana dashboard in deploy/grafana reads:
/// panel expressions and variable queries.
fn names_in_dashboards() -> std::collections::BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana");
    let mut names = std::collections::BTreeSet::new();
    let mut boards = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        boards += 1;
        let panels = board["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{} has no panels", path.display());
        for panel in panels {
            for target in panel["targets"].as_array().expect("targets") {
                metric_names(target["expr"].as_str().expect("expr"), &mut names);
            }
        }
        for variable in board["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(query) = variable["query"].as_str() {
                metric_names(query, &mut names);
            }
        }
    }
    assert_eq!(boards, 4, "overview, region, replication, shard");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_cover_the_alert_rules() {
    use meridian_lab::ProcessRole;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let lab = common::multi_region_lab(dir.path()).await;
    let state = lab.state().clone();
    let control = common::lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    control
        .place_namespace(meridian_client::pb::Placement {
            max_lag_ms: 5_000,
            max_lag_entries: 1_000,
            ..common::us_east_with_eu_standby("watched")
        })
        .await
        .unwrap();
    // An active-active namespace (its conflict and clock series).
    control
        .place_namespace(meridian_client::pb::Placement {
            mode: meridian_client::pb::NamespaceMode::ActiveActive as i32,
            ..common::us_east_with_eu_standby("peers")
        })
        .await
        .unwrap();
    // A sync namespace (its degradation gauge), a refusal by residency, a
    // backup schedule with its backups.
    control
        .place_namespace(meridian_client::pb::Placement {
            sync: true,
            ..common::us_east_with_eu_standby("synced")
        })
        .await
        .unwrap();
    let refused = control
        .place_namespace(meridian_client::pb::Placement {
            name: "outside".into(),
            home_region: "ap-south".into(),
            allowed_jurisdictions: vec!["EU".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("residency"), "{refused}");
    control
        .put_location(meridian_client::pb::LocationInfo {
            name: "vault".into(),
            url: format!("file://{}", dir.path().join("vault").display()),
            region: "us-east".into(),
            jurisdictions: Vec::new(),
        })
        .await
        .unwrap();
    control
        .set_schedule(meridian_client::pb::ScheduleInfo {
            namespace: "watched".into(),
            location: "vault".into(),
            every_ms: 1_000,
            keep_ms: 60_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let node = |region: &str| {
        state
            .processes
            .iter()
            .find(|p| p.role == ProcessRole::Node && p.region == region)
            .unwrap()
            .clone()
    };
    let us_east = node("us-east");
    let primary = common::lab_client(&lab, vec![us_east.grpc.clone()], Duration::from_secs(10));
    // Writes go through once the primary holds its lease.
    let deadline = Instant::now() + Duration::from_secs(30);
    while primary.put("watched", b"k", b"v").await.is_err() {
        assert!(Instant::now() < deadline, "no write within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scrape = |http: String| {
        let lab = &lab;
        async move {
            let (status, body) = common::lab_https_get(lab, "admin", &http, "/metrics").await;
            assert_eq!(status, 200, "{http}: {body}");
            body
        }
    };
    // The shard node: one voter (itself), reachable; the namespace's
    // budgets and its lease.
    let labels = "namespace=\"watched\"";
    let deadline = Instant::now() + Duration::from_secs(30);
    let shard = loop {
        let body = scrape(us_east.http.clone()).await;
        if sample(&body, "meridian_primary_lease_valid", labels) == Some(1.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no valid lease reported:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sample(&shard, "meridian_raft_voters", ""), Some(1.0));
    let peers = "namespace=\"peers\"";
    assert_eq!(
        sample(&shard, "meridian_active_conflicts", peers),
        Some(0.0)
    );
    assert_eq!(
        sample(&shard, "meridian_active_future_stamps", peers),
        Some(0.0)
    );
    assert_eq!(
        sample(&shard, "meridian_active_tombstones", peers),
        Some(0.0)
    );
    assert_eq!(
        sample(&shard, "meridian_active_tombstones_collected", peers),
        Some(0.0)
    );
    assert_eq!(sample(&shard, "meridian_clock_skewed", ""), Some(0.0));
    assert_eq!(
        sample(&shard, "meridian_raft_voters_reachable", ""),
        Some(1.0)
    );
    assert_eq!(
        sample(&shard, "meridian_replication_lag_budget_seconds", labels),
        Some(5.0)
    );
    assert_eq!(
        sample(&shard, "meridian_replication_lag_budget_entries", labels),
        Some(1000.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = sample(
        &shard,
        "meridian_tls_certificate_expiry_timestamp_seconds",
        "",
    )
    .expect("certificate expiry");
    assert!(
        expiry > now,
        "certificate expiry {expiry} is not after {now}"
    );
    let free = sample(&shard, "meridian_storage_disk_free_bytes", "").unwrap();
    let capacity = sample(&shard, "meridian_storage_disk_capacity_bytes", "").unwrap();
    assert!(free > 0.0 && free <= capacity, "{free} of {capacity}");
    // The storage engine's memory and journal against their (default)
    // limits, and the process's resident memory.
    for (name, limit) in [
        ("meridian_storage_memtable_budget_bytes", 16.0 * 1048576.0),
        (
            "meridian_storage_block_cache_capacity_bytes",
            16.0 * 1048576.0,
        ),
        ("meridian_storage_journal_limit_bytes", 64.0 * 1048576.0),
    ] {
        assert_eq!(sample(&shard, name, ""), Some(limit), "{name}");
    }
    for name in [
        "meridian_storage_memtable_bytes",
        "meridian_storage_block_cache_bytes",
        "meridian_storage_journal_bytes",
    ] {
        assert!(sample(&shard, name, "").is_some(), "{name} exported");
    }
    assert!(sample(&shard, "meridian_storage_disk_bytes", "").unwrap() > 0.0);
    assert!(sample(&shard, "process_resident_memory_bytes", "").unwrap() > 1e6);

    // A drained failover, counted by cause and mode.
    control
        .failover(meridian_client::pb::FailoverRequest {
            namespace: "watched".into(),
            to_region: "eu-west".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // The control-plane leader (it probes, grants and counts refusals):
    // every shard probed and answering, the failover, the refusal, the
    // schedule and a backup it took.
    let members: Vec<String> = state
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Control)
        .map(|p| p.http.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let control_body = 'found: loop {
        for member in &members {
            let body = scrape(member.clone()).await;
            let complete = sample(&body, "meridian_control_leader", "") == Some(1.0)
                && ["us-east-s1", "eu-west-s1", "ap-south-s1"].iter().all(|s| {
                    sample(
                        &body,
                        "meridian_control_shard_probe_up",
                        &format!("shard=\"{s}\""),
                    ) == Some(1.0)
                })
                && sample(
                    &body,
                    "meridian_backup_last_success_timestamp_seconds",
                    labels,
                )
                .is_some();
            if complete {
                break 'found body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader with every series within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(sample(&control_body, "meridian_routing_version", "").unwrap() > 0.0);
    assert!(sample(&control_body, "meridian_storage_disk_bytes", "").unwrap() > 0.0);
    assert!(sample(&control_body, "process_resident_memory_bytes", "").unwrap() > 1e6);
    assert_eq!(
        sample(
            &control_body,
            "meridian_failovers_total",
            "cause=\"manual\",mode=\"async\""
        ),
        Some(1.0),
        "{control_body}"
    );
    assert!(sample(&control_body, "meridian_residency_refusals_total", "").unwrap() >= 1.0);
    assert_eq!(
        sample(
            &control_body,
            "meridian_backup_schedule_interval_seconds",
            labels
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &control_body,
            "meridian_namespace_sync_degraded",
            "namespace=\"synced\""
        ),
        Some(0.0)
    );
    assert!(sample(&control_body, "meridian_control_lease_grants_total", "").unwrap() > 0.0);
    // The admin API tells the same story in JSON: the drained move (no
    // loss window) and the scheduled backups as jobs.
    let leader_http = members
        .iter()
        .find(|m| control_body.contains(&format!("member=\"{}\"", member_id(&state, m))))
        .cloned()
        .unwrap_or_else(|| members[0].clone());
    let (status, body) = common::lab_https_get(
        &lab,
        "admin",
        &leader_http,
        "/v1/failovers?namespace=watched",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let failovers: serde_json::Value = serde_json::from_str(&body).unwrap();
    let moved = &failovers["failovers"][0];
    assert_eq!(moved["namespace"], "watched", "{body}");
    assert_eq!(moved["to_region"], "eu-west", "{body}");
    assert_eq!(
        moved["loss_window"]["reported_at_ms"], moved["loss_window"]["writes_until_ms"],
        "a drained move has an empty loss window: {body}"
    );
    let (status, body) = common::lab_https_get(&lab, "admin", &leader_http, "/v1/jobs").await;
    assert_eq!(status, 200, "{body}");
    let jobs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["kind"] == "backup" && j["namespace"] == "watched"),
        "{body}"
    );

    // A gateway: its routing table applied moments ago.
    let gateway = state
        .processes
        .iter()
        .find(|p| p.role == ProcessRole::Gateway)
        .unwrap()
        .clone();
    let gateway_body = scrape(gateway.http.clone()).await;
    let applied = sample(
        &gateway_body,
        "meridian_gateway_routing_applied_timestamp_seconds",
        "",
    )
    .expect("routing applied time");
    assert!(
        (now - applied).abs() < 600.0,
        "applied at {applied}, now {now}"
    );

    let bodies = [
        ("shard node", &shard),
        ("control member", &control_body),
        ("gateway", &gateway_body),
    ];
    for (what, body) in bodies {
        let problems = lint(body);
        assert!(problems.is_empty(), "{what}: {problems:#?}");
    }
    // Every metric an alert rule or a dashboard panel reads is exported by
    // some process.
    let missing: Vec<String> = names_in_alert_rules()
        .into_iter()
        .chain(names_in_dashboards())
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            !bodies
                .iter()
                .any(|(_, body)| body.contains(&format!("# TYPE {base} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "alert rules or dashboards read metrics no process exports: {missing:?}"
    );
    // With promtool (scripts/test-ops.sh sets it), its own verdict too.
    if let Some(promtool) = std::env::var_os("MERIDIAN_PROMTOOL") {
        for (what, body) in bodies {
            let mut child = std::process::Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("promtool runs");
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && said.trim().is_empty(),
                "promtool on the {what}'s metrics: {said}"
            );
            eprintln!("promtool check metrics: {what} clean");
        }
    }
}

/// The services reflection lists at `address` (plain text), over the v1
/// protocol and over v1alpha.
async fn listed_services(address: &str) -> (Vec<String>, Vec<String>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut v1 = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let reply = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected v1 reflection reply");
    };
    let mut from_v1: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    use tonic_reflection::pb::v1alpha;
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let reply = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("unexpected v1alpha reflection reply");
    };
    let mut from_alpha: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    from_v1.sort();
    from_alpha.sort();
    (from_v1, from_alpha)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_exactly_what_each_process_serves() {
    use meridian_lab::{Lab, LabSpec, ProcessRole};
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(&LabSpec {
        dir: dir.path().join("lab"),
        regions: vec!["us-east".into()],
        nodes: 1,
        binary: common::server_binary(),
        env: Default::default(),
        tls: false,
        wan: None,
        encryption: false,
    })
    .expect("lab up")
    .kill_on_drop();
    lab.wait_ready(std::time::Duration::from_secs(120), |_, _| {})
        .await
        .expect("lab ready");
    let reflection = [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let expected = |own: &[&str]| {
        let mut all: Vec<String> = own
            .iter()
            .chain(reflection.iter())
            .map(|s| s.to_string())
            .collect();
        all.sort();
        all
    };
    for (role, own) in [
        (
            ProcessRole::Node,
            &[
                "meridian.v1.Kv",
                "meridian.v1.Admin",
                "meridian.v1.Replication",
                "meridian.v1.RaftTransport",
                "meridian.v1.Workers",
                "grpc.health.v1.Health",
            ][..],
        ),
        (
            ProcessRole::Control,
            &[
                "meridian.v1.Control",
                "meridian.v1.RaftTransport",
                "meridian.v1.Workers",
                "grpc.health.v1.Health",
            ][..],
        ),
        (
            ProcessRole::Gateway,
            &[
                "meridian.v1.Kv",
                "meridian.v1.Workers",
                "grpc.health.v1.Health",
            ][..],
        ),
    ] {
        let process = lab
            .state()
            .processes
            .iter()
            .find(|p| p.role == role)
            .unwrap()
            .clone();
        let (v1, alpha) = listed_services(&process.grpc).await;
        assert_eq!(v1, expected(own), "{role:?} over v1");
        assert_eq!(alpha, expected(own), "{role:?} over v1alpha");
    }
}
