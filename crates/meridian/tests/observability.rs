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
