//! The control plane as three real processes: regions, residency-enforced
//! placement with refusals that name the rule, the routing push (full table then
//! changes, resumable), the audit log, and surviving the loss of its leader.

use meridian_control::config::{ControlConfig, RegionSeed};
use meridian_lab::process::free_port;
use meridian_proto::v1 as pb;
use meridian_proto::v1::control_client::ControlClient;
use meridian_shard::config::InitialMember;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

struct Members {
    children: Vec<(u64, String, Child)>,
    /// HTTP address of each member, by gRPC address.
    http: std::collections::HashMap<String, String>,
    /// One single-node shard per region, registered with the control plane.
    shards: meridian_lab::Lab,
    _dir: tempfile::TempDir,
}

impl Drop for Members {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_control_plane() -> Members {
    let dir = tempfile::tempdir().unwrap();
    let regions = [("us-east", "US"), ("eu-west", "EU"), ("ap-south", "IN")];
    let members: Vec<InitialMember> = (1..=3)
        .map(|id| InitialMember {
            id,
            address: format!("127.0.0.1:{}", free_port().unwrap()),
        })
        .collect();
    let endpoints: Vec<String> = members
        .iter()
        .map(|m| format!("\"{}\"", m.address))
        .collect();
    let shards = meridian_lab::Lab::up(&meridian_lab::LabSpec {
        dir: dir.path().join("shards"),
        regions: regions.iter().map(|(r, _)| r.to_string()).collect(),
        nodes: 1,
        binary: env!("CARGO_BIN_EXE_meridian").into(),
        tls: false,
        wan: None,
        env: vec![(
            "MERIDIAN__CONTROL__ENDPOINTS".into(),
            format!("[{}]", endpoints.join(",")),
        )],
        encryption: true,
    })
    .unwrap()
    .kill_on_drop();
    let mut children = Vec::new();
    let mut http = std::collections::HashMap::new();
    for (member, (region, _)) in members.iter().zip(regions) {
        let mut config = ControlConfig::default();
        config.node.id = member.id;
        config.node.region = region.into();
        config.node.data_dir = dir.path().join(format!("control-{}", member.id));
        config.network.grpc_listen = member.address.parse().unwrap();
        let http_address = format!("127.0.0.1:{}", free_port().unwrap());
        config.network.http_listen = http_address.parse().unwrap();
        http.insert(member.address.clone(), http_address);
        config.cluster.initial_members = members.clone();
        config.regions = regions
            .iter()
            .map(|(name, tag)| RegionSeed {
                name: name.to_string(),
                jurisdictions: vec![tag.to_string()],
                latitude: 0.0,
                longitude: 0.0,
            })
            .collect();
        let path = dir.path().join(format!("control-{}.toml", member.id));
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let log =
            std::fs::File::create(dir.path().join(format!("control-{}.log", member.id))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["control", "--config", &path.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        children.push((member.id, member.address.clone(), child));
    }
    Members {
        children,
        http,
        shards,
        _dir: dir,
    }
}

/// Starts a gateway in us-east following `control`; returns it and its address.
fn start_gateway(dir: &std::path::Path, control: &[String]) -> (Child, String) {
    let mut config = meridian_gateway::config::GatewayConfig::default();
    config.gateway.name = "gateway-us-east".into();
    config.gateway.region = "us-east".into();
    let grpc = format!("127.0.0.1:{}", free_port().unwrap());
    config.network.grpc_listen = grpc.parse().unwrap();
    config.network.http_listen = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    config.control.endpoints = control.to_vec();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["gateway", "--config", &path.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, grpc)
}

/// Kills a child when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_serving(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !meridian_lab::lab::is_serving(&Default::default(), address).await {
        assert!(
            Instant::now() < deadline,
            "{address} not serving within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kv(address: &str) -> pb::kv_client::KvClient<Channel> {
    pb::kv_client::KvClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy(),
    )
}

/// One HTTP/1.1 request; returns the status code and the body.
fn http(address: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn client(address: &str) -> ControlClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    ControlClient::new(channel)
}

/// The leader's address, once it is elected and has registered the regions.
async fn leader(members: &Members) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (_, address, _) in &members.children {
            let mut control = client(address).await;
            if let Ok(regions) = control.list_regions(pb::ListRegionsRequest {}).await
                && regions.into_inner().regions.len() == 3
            {
                return address.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no control-plane leader with regions in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn placement(
    name: &str,
    home: &str,
    standbys: &[&str],
    allowed: &[&str],
) -> pb::PlaceNamespaceRequest {
    pb::PlaceNamespaceRequest {
        placement: Some(pb::Placement {
            name: name.into(),
            home_region: home.into(),
            mode: if standbys.is_empty() {
                pb::NamespaceMode::RegionLocked
            } else {
                pb::NamespaceMode::ActivePassive
            } as i32,
            standby_regions: standbys.iter().map(|s| s.to_string()).collect(),
            allowed_jurisdictions: allowed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_residency_routing_push_and_leader_loss() {
    let mut members = start_control_plane();
    let leader_address = leader(&members).await;
    let mut control = client(&leader_address).await;
    // Every shard node registers itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shards = control
            .list_shards(pb::ListShardsRequest {})
            .await
            .unwrap()
            .into_inner()
            .shards;
        if shards.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shards did not register: {shards:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A subscriber starts with the (empty) full table.
    let mut watch = client(&leader_address)
        .await
        .watch_routes(pb::WatchRoutesRequest {
            since_version: 0,
            subscriber: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert!(first.full);
    // Shard members travel once per shard in the full table.
    let eu_shard = first.shards.iter().find(|s| s.id == "eu-west-s1").unwrap();
    assert_eq!(eu_shard.members.len(), 1, "{first:?}");

    let placed = control
        .place_namespace(placement("gdpr-orders", "eu-west", &[], &["EU"]))
        .await
        .unwrap()
        .into_inner();
    let placed_at = placed.routing_version;
    assert_eq!(placed.placement.unwrap().shard, "eu-west-s1");
    // The namespace exists on the eu-west shard, and on no other.
    for (node, expected) in [
        ("eu-west-1", true),
        ("us-east-1", false),
        ("ap-south-1", false),
    ] {
        let address = members.shards.process(node).unwrap().grpc.clone();
        let mut admin = pb::admin_client::AdminClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .unwrap()
                .connect_lazy(),
        );
        let listed = admin
            .list_namespaces(pb::ListNamespacesRequest {})
            .await
            .unwrap()
            .into_inner();
        let present = listed.namespaces.iter().any(|n| n.name == "gdpr-orders");
        assert_eq!(present, expected, "gdpr-orders on {node}");
    }

    // Residency: EU data may not be homed in, or replicated to, us-east.
    for request in [
        placement("gdpr-users", "us-east", &[], &["EU"]),
        placement("gdpr-users", "eu-west", &["us-east"], &["EU"]),
    ] {
        let status = control.place_namespace(request).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        for needle in ["residency rule", "us-east", "EU"] {
            assert!(
                status.message().contains(needle),
                "{needle} in {}",
                status.message()
            );
        }
    }
    let status = control
        .place_namespace(placement("ghost", "mars-1", &[], &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // Through the us-east gateway, a write to the EU namespace lands in eu-west.
    let control_addresses: Vec<String> =
        members.children.iter().map(|(_, a, _)| a.clone()).collect();
    let gateway_dir = tempfile::tempdir().unwrap();
    let (gateway, gateway_address) = start_gateway(gateway_dir.path(), &control_addresses);
    let mut gateway = KillOnDrop(gateway);
    wait_serving(&gateway_address).await;
    let put = kv(&gateway_address)
        .put(pb::PutRequest {
            namespace: "gdpr-orders".into(),
            key: b"order-1".to_vec(),
            value: b"paid".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(put.version > 0);
    let got = kv(&gateway_address)
        .get(pb::GetRequest {
            namespace: "gdpr-orders".into(),
            key: b"order-1".to_vec(),
            read: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kv.unwrap().value, b"paid");
    let eu_node = members.shards.process("eu-west-1").unwrap().grpc.clone();
    let mut eu_admin = pb::admin_client::AdminClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{eu_node}"))
            .unwrap()
            .connect_lazy(),
    );
    let integrity = eu_admin
        .check_integrity(pb::CheckIntegrityRequest {
            namespace: "gdpr-orders".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(integrity.key_count, 1, "the key is stored in eu-west");
    let missing = kv(&gateway_address)
        .get(pb::GetRequest {
            namespace: "no-such-namespace".into(),
            key: b"k".to_vec(),
            read: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // The subscriber receives the change with its version (the members it
    // already has).
    let update = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!update.full);
    assert_eq!(update.version, placed_at);
    assert_eq!(update.upserts.len(), 1);
    assert_eq!(update.upserts[0].region, "eu-west");
    assert!(update.upserts[0].members.is_empty());

    // The JSON admin API, described by its OpenAPI document, says the same.
    let leader_http = members.http[&leader_address].clone();
    let (status, document) = http(&leader_http, "GET", "/openapi.json", None);
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    for path in [
        "/v1/regions",
        "/v1/shards",
        "/v1/namespaces",
        "/v1/routes",
        "/v1/audit",
        "/v1/failovers",
        "/v1/jobs",
        "/v1/members",
        "/v1/replication",
        "/console",
    ] {
        assert!(document["paths"][path].is_object(), "{path} documented");
    }
    let (status, body) = http(&leader_http, "GET", "/v1/namespaces", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"gdpr-orders\""), "{body}");
    // A follower answers reads too (it asks the leader), so the console
    // works on any member; so do the live views it shows.
    let follower_http = members
        .http
        .iter()
        .find(|(grpc, _)| **grpc != leader_address)
        .map(|(_, http)| http.clone())
        .unwrap();
    for path in ["/v1/namespaces", "/v1/failovers", "/v1/jobs", "/v1/regions"] {
        let (status, body) = http(&follower_http, "GET", path, None);
        assert_eq!(status, 200, "{path} on a follower: {body}");
    }
    let (_, body) = http(&follower_http, "GET", "/v1/namespaces", None);
    assert!(body.contains("\"gdpr-orders\""), "{body}");
    let (status, body) = http(&follower_http, "GET", "/v1/members", None);
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(!view["shards"].as_array().unwrap().is_empty(), "{view}");
    let (status, body) = http(&follower_http, "GET", "/console", None);
    assert_eq!(status, 200);
    assert!(body.contains("<title>Meridian console</title>"));
    let (status, body) = http(
        &leader_http,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"http-eu","home_region":"us-east","allowed_jurisdictions":["EU"]}"#),
    );
    assert_eq!(status, 412, "{body}");
    assert!(body.contains("residency rule"), "{body}");
    let (status, body) = http(
        &leader_http,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"http-eu","home_region":"eu-west"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(&leader_http, "DELETE", "/v1/namespaces/http-eu", None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(&leader_http, "GET", "/v1/routes", None);
    assert_eq!(status, 200);
    assert!(!body.contains("http-eu"), "{body}");

    // The audit log has both the placement and the refusals.
    let audit = control
        .audit_log(pb::AuditLogRequest { after: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit
            .records
            .iter()
            .any(|r| r.action.contains("create namespace gdpr-orders") && r.outcome == "ok")
    );
    assert!(
        audit
            .records
            .iter()
            .any(|r| r.outcome.starts_with("refused: residency rule"))
    );

    // Kill the leader: the others elect a new one and keep serving, and a
    // resumed subscription at the current version gets no table, only changes.
    let leader_index = members
        .children
        .iter()
        .position(|(_, a, _)| *a == leader_address)
        .unwrap();
    let (_, _, mut child) = members.children.remove(leader_index);
    child.kill().unwrap();
    child.wait().unwrap();
    let new_leader = leader(&members).await;
    assert_ne!(new_leader, leader_address);
    let mut control = client(&new_leader).await;
    let listed = control
        .list_placements(pb::ListPlacementsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.placements.len(), 1);
    let mut resumed = client(&new_leader)
        .await
        .watch_routes(pb::WatchRoutesRequest {
            since_version: listed.routing_version,
            subscriber: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = resumed.next().await.unwrap().unwrap();
    assert!(!first.full && first.upserts.is_empty(), "{first:?}");
    control
        .place_namespace(placement("in-payments", "ap-south", &[], &[]))
        .await
        .unwrap();
    let update = tokio::time::timeout(Duration::from_secs(5), resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.upserts[0].namespace, "in-payments");
    assert_eq!(update.upserts[0].shard, "ap-south-s1");

    // The gateway learned the new route through the push, after the control
    // leader changed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let put = kv(&gateway_address)
            .put(pb::PutRequest {
                namespace: "in-payments".into(),
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            })
            .await;
        match put {
            Ok(_) => break,
            Err(status) if status.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("write through the gateway failed: {status:?}"),
        }
    }

    // A restarted gateway gets the full table and routes correctly at once.
    drop(gateway);
    let (restarted, gateway_address) = start_gateway(gateway_dir.path(), &control_addresses);
    gateway = KillOnDrop(restarted);
    wait_serving(&gateway_address).await;
    let got = kv(&gateway_address)
        .get(pb::GetRequest {
            namespace: "gdpr-orders".into(),
            key: b"order-1".to_vec(),
            read: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kv.unwrap().value, b"paid");
    drop(gateway);
}
