//! The gateway's per-client rate limit and per-shard circuit breaker, against real
//! processes.

use meridian_client::{Client, ClientOptions, pb};
use meridian_lab::process::free_port;
use meridian_lab::{Lab, LabSpec, ProcessRole};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::metadata::MetadataValue;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A read of `namespace`. In plain text the gateway tells clients apart by
/// their address (nobody is authenticated, and a header is whatever the
/// caller says), so the test's second client connects from another loopback
/// address; `client` names which one (and a header claiming to be another
/// client changes nothing).
fn get(namespace: &str, client: &str) -> tonic::Request<pb::GetRequest> {
    let mut request = tonic::Request::new(pb::GetRequest {
        namespace: namespace.into(),
        key: b"k".to_vec(),
        read: None,
    });
    request
        .metadata_mut()
        .insert("meridian-client", MetadataValue::try_from(client).unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_circuit_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(&LabSpec {
        dir: dir.path().join("lab"),
        regions: vec!["us-east".into()],
        nodes: 3,
        binary: env!("CARGO_BIN_EXE_meridian").into(),
        tls: false,
        wan: None,
        env: vec![],
        encryption: true,
    })
    .unwrap()
    .kill_on_drop();
    lab.wait_ready(Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    let control = Client::new(lab.state().endpoints(ProcessRole::Control, None)).unwrap();
    control
        .place_namespace(pb::Placement {
            name: "protected".into(),
            home_region: "us-east".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A gateway with tight limits: 5 requests/s per client, breaker after 2 failures.
    let mut config = meridian_gateway::config::GatewayConfig::default();
    let grpc = format!("127.0.0.1:{}", free_port().unwrap());
    config.network.grpc_listen = grpc.parse().unwrap();
    config.network.http_listen = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    config.control.endpoints = lab.state().endpoints(ProcessRole::Control, None);
    config.limits.requests_per_second = 5;
    config.limits.burst = 5;
    config.limits.breaker_failures = 2;
    config.limits.breaker_open_ms = 60_000;
    config.limits.forward_budget_ms = 1_000;
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let _gateway = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["gateway", "--config", &path.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !meridian_lab::lab::is_serving(&Default::default(), &grpc).await {
        assert!(Instant::now() < deadline, "gateway not serving");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_lazy();
    let mut kv = pb::kv_client::KvClient::new(channel);
    let other_address = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect_lazy();
    let mut kv_b = pb::kv_client::KvClient::new(other_address);

    // Rate limit: the burst passes, the next call is refused with a retry-after,
    // and another client is unaffected.
    for _ in 0..5 {
        kv.get(get("protected", "client-a")).await.unwrap();
    }
    let refused = kv.get(get("protected", "client-a")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("limits.requests_per_second = 5"),
        "{}",
        refused.message()
    );
    let retry_after: u64 = refused
        .metadata()
        .get("retry-after-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 200, "{retry_after}");
    // Claiming to be another client in a header does not get around it.
    let still = kv.get(get("protected", "client-b")).await.unwrap_err();
    assert_eq!(still.code(), Code::ResourceExhausted, "{still:?}");
    kv_b.get(get("protected", "client-b")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(retry_after + 50)).await;
    kv.get(get("protected", "client-a")).await.unwrap();

    // Circuit breaker: with the shard down, two calls fail after trying, then
    // the breaker answers at once.
    for node in ["us-east-1", "us-east-2", "us-east-3"] {
        lab.kill(node).unwrap();
    }
    // From a third address, with a full bucket of its own.
    let third = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .local_address(Some("127.0.0.3".parse().unwrap()))
        .connect_lazy();
    let mut kv = pb::kv_client::KvClient::new(third);
    for client in ["b1", "b2"] {
        let failed = kv.get(get("protected", client)).await.unwrap_err();
        assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    }
    let started = Instant::now();
    let open = kv.get(get("protected", "b3")).await.unwrap_err();
    assert_eq!(open.code(), Code::Unavailable);
    assert!(
        open.message()
            .contains("circuit breaker open for shard us-east-s1"),
        "{}",
        open.message()
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "failed fast: {:?}",
        started.elapsed()
    );
    assert!(open.metadata().get("retry-after-ms").is_some());
}

/// `eventual` reads go to the nearest healthy replica the gateway measured, so
/// they keep working where a strong read cannot: here, a shard that lost its
/// quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_reads_use_the_nearest_healthy_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(&LabSpec {
        dir: dir.path().join("lab"),
        regions: vec!["us-east".into()],
        nodes: 3,
        binary: env!("CARGO_BIN_EXE_meridian").into(),
        tls: false,
        wan: None,
        env: vec![],
        encryption: true,
    })
    .unwrap()
    .kill_on_drop();
    lab.wait_ready(Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    let control = Client::new(lab.state().endpoints(ProcessRole::Control, None)).unwrap();
    control
        .place_namespace(pb::Placement {
            name: "catalog".into(),
            home_region: "us-east".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let gateway_address = lab.state().endpoints(ProcessRole::Gateway, None);
    let gateway = Client::with_options(
        gateway_address.clone(),
        ClientOptions {
            attempt_timeout: Duration::from_secs(3),
            retry_budget: Duration::from_secs(3),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    gateway.put("catalog", b"sku-1", b"blue").await.unwrap();
    // Let every replica apply it and the prober measure every member.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Two of three nodes gone: no quorum, no leader.
    let nodes: Vec<String> = lab
        .state()
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Node)
        .map(|p| p.name.clone())
        .collect();
    for node in &nodes[..2] {
        lab.kill(node).unwrap();
    }
    let strong = gateway
        .get("catalog", b"sku-1", pb::Consistency::Strong)
        .await;
    assert!(
        strong.is_err(),
        "a strong read without a quorum: {strong:?}"
    );
    let eventual = gateway
        .get("catalog", b"sku-1", pb::Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(eventual.map(|kv| kv.value), Some(b"blue".to_vec()));

    let http = &lab.process("gateway-us-east").unwrap().http;
    let metrics = http_get(http, "/metrics");
    let served: f64 = metrics
        .lines()
        .find(|l| l.starts_with("meridian_gateway_replica_reads_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(served >= 1.0, "{metrics}");
}

fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}
