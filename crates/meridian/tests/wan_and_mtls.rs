//! The multi-region lab as users get it: mutual TLS between every process and
//! the WAN emulator between regions. Checks that cross-region calls really pay
//! the emulated round trip, that a partition cuts exactly one region pair and
//! heals, and that clients without a certificate from the lab's CA are refused.

use meridian_client::{Client, ClientOptions, pb};
use meridian_lab::{Lab, LabSpec, ProcessRole, WanSettings};
use meridian_net::{Dialer, TlsFiles};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn client(endpoints: Vec<String>, dialer: Dialer, budget: Duration) -> Client {
    Client::with_options(
        endpoints,
        ClientOptions {
            attempt_timeout: budget.min(Duration::from_secs(2)),
            retry_budget: budget,
            dialer,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// Time of one linearizable read through `gateway`.
async fn timed_get(gateway: &Client, namespace: &str) -> Duration {
    let started = Instant::now();
    let found = gateway
        .get(namespace, b"k", pb::Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(found.map(|kv| kv.value), Some(b"v".to_vec()));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_partitions_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(&LabSpec {
        dir: dir.path().join("lab"),
        regions: vec!["us-east".into(), "eu-west".into(), "ap-south".into()],
        nodes: 1,
        binary: env!("CARGO_BIN_EXE_meridian").into(),
        env: vec![],
        tls: true,
        wan: Some(WanSettings::default()),
        encryption: true,
    })
    .unwrap()
    .kill_on_drop();
    lab.wait_ready(Duration::from_secs(120), |_, _| {})
        .await
        .unwrap();

    // One link per (source region, remote node or control member): with one
    // node per region, 2 remote nodes + 2 remote control members per region.
    let links = lab.links().unwrap();
    assert_eq!(links.len(), 12, "{links:?}");
    for link in &links {
        let expected = if link.name.contains("us-east") && link.name.contains("ap-south") {
            95
        } else if link.name.contains("us-east") {
            40
        } else {
            60
        };
        assert_eq!(link.one_way_delay_ms, expected, "{}", link.name);
    }

    let dialer = lab.dialer().clone();
    assert!(dialer.is_tls());
    let state = lab.state().clone();
    let control = client(
        state.endpoints(ProcessRole::Control, None),
        dialer.clone(),
        Duration::from_secs(20),
    );
    control
        .place_namespace(pb::Placement {
            name: "far".into(),
            home_region: "ap-south".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let gateway = |region: &str| {
        client(
            state.endpoints(ProcessRole::Gateway, Some(region)),
            dialer.clone(),
            Duration::from_secs(10),
        )
    };
    let us_gateway = gateway("us-east");
    let ap_gateway = gateway("ap-south");
    // Written through the far gateway right after creation: the gateway asks
    // the control plane on a miss instead of answering NOT_FOUND.
    us_gateway.put("far", b"k", b"v").await.unwrap();

    // Warm connections, then compare: from us-east every read crosses the
    // 190 ms round trip; from ap-south it stays local.
    timed_get(&us_gateway, "far").await;
    timed_get(&ap_gateway, "far").await;
    let far = timed_get(&us_gateway, "far").await;
    let near = timed_get(&ap_gateway, "far").await;
    assert!(
        far >= Duration::from_millis(185),
        "a read from us-east of ap-south data took {far:?}, less than the emulated round trip"
    );
    assert!(
        near < Duration::from_millis(150),
        "a local read took {near:?}"
    );

    // Partition us-east from ap-south: us-east can no longer reach the data,
    // ap-south still serves it, and eu-west is unaffected.
    lab.partition("us-east", "ap-south").unwrap();
    let cut = client(
        state.endpoints(ProcessRole::Gateway, Some("us-east")),
        dialer.clone(),
        Duration::from_secs(3),
    );
    let refused = cut.get("far", b"k", pb::Consistency::Strong).await;
    assert!(
        refused.is_err(),
        "read across a partition succeeded: {refused:?}"
    );
    timed_get(&ap_gateway, "far").await;
    timed_get(&gateway("eu-west"), "far").await;
    let status = lab.links().unwrap();
    for link in &status {
        let between = link.name.starts_with("us-east->ap-south")
            || link.name.starts_with("ap-south->us-east");
        assert_eq!(link.partitioned, between, "{link:?}");
    }
    lab.heal("us-east", "ap-south").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match us_gateway.get("far", b"k", pb::Consistency::Strong).await {
            Ok(_) => break,
            Err(err) => assert!(
                Instant::now() < deadline,
                "us-east did not recover after heal: {err}"
            ),
        }
    }
    let errors = lab.partition("us-east", "us-east").unwrap_err().to_string();
    assert!(errors.contains("itself"), "{errors}");
    let errors = lab.partition("us-east", "mars").unwrap_err().to_string();
    assert!(errors.contains("mars"), "{errors}");

    // Mutual TLS: only certificates from the lab's CA get in.
    let address = state.endpoints(ProcessRole::Gateway, Some("us-east"));
    let attempt = |dialer: Dialer| {
        let address = address.clone();
        async move {
            client(address, dialer, Duration::from_secs(2))
                .get("far", b"k", pb::Consistency::Strong)
                .await
        }
    };
    assert!(
        attempt(Dialer::plaintext()).await.is_err(),
        "plain text accepted"
    );
    let foreign = dir.path().join("foreign");
    meridian_net::certs::init(
        &foreign,
        &[meridian_net::Identity::User {
            name: "client".into(),
        }],
    )
    .unwrap();
    let foreign = TlsFiles::in_dir(&foreign, "client").load().unwrap();
    assert!(
        attempt(Dialer::new(Default::default(), Some(&foreign)))
            .await
            .is_err(),
        "a certificate from another CA was accepted"
    );
    // The right CA but no client certificate.
    let certs = state.certs.clone().unwrap();
    let no_identity = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(certs.join("ca.pem")).unwrap(),
        ))
        .domain_name(meridian_net::tls::SERVER_NAME);
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", address[0]))
        .unwrap()
        .tls_config(no_identity)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    let anonymous = meridian_proto::v1::kv_client::KvClient::new(channel)
        .get(pb::GetRequest {
            namespace: "far".into(),
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await;
    assert!(anonymous.is_err(), "a client without a certificate got in");
    assert!(attempt(dialer.clone()).await.is_ok());

    // A member's region is the one its certificate names: the CLI's user
    // certificate cannot register a node, and a us-east node cannot register
    // in eu-west; in its own region it can (re-registering, idempotent).
    let control_at = state.endpoints(ProcessRole::Control, None);
    let node = lab.process("us-east-1").unwrap();
    let register = |region: &str| pb::RegisterMemberRequest {
        shard: node.shard.clone().unwrap(),
        region: region.into(),
        node_id: node.node_id.unwrap(),
        address: node.grpc.clone(),
    };
    let as_user = client(control_at.clone(), dialer.clone(), Duration::from_secs(10));
    let denied = as_user
        .register_member(register("us-east"))
        .await
        .unwrap_err();
    assert!(
        denied.to_string().contains("spiffe://meridian/user/admin")
            && denied.to_string().contains("only a node registers itself"),
        "{denied}"
    );
    let node_files = TlsFiles::in_dir(&certs, "us-east-1").load().unwrap();
    let as_node = client(
        control_at,
        Dialer::new(Default::default(), Some(&node_files)),
        Duration::from_secs(10),
    );
    let denied = as_node
        .register_member(register("eu-west"))
        .await
        .unwrap_err();
    assert!(
        denied
            .to_string()
            .contains("its certificate places it in region us-east"),
        "{denied}"
    );
    as_node
        .register_member(register("us-east"))
        .await
        .expect("a node registers in its own region");

    // Peer APIs answer only the peers they are for. A user certificate cannot
    // grant a shard a write lease, push changes into it or speak its Raft; a
    // node of another region cannot join a shard's Raft either. (The checks
    // come before anything is decoded: an empty payload would otherwise be
    // INVALID_ARGUMENT.)
    let shard_node = vec![node.grpc.clone()];
    let as_user_to_node = client(shard_node.clone(), dialer.clone(), Duration::from_secs(10));
    let lease = as_user_to_node
        .lease(pb::LeaseRequest {
            lease_ms: 3_500,
            grant_term: 99,
            grant_seq: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        lease.to_string().contains("may not call Admin.Lease"),
        "{lease}"
    );
    let raft_call = |dialer: Dialer| {
        let address = node.grpc.clone();
        async move {
            let channel = dialer
                .connect(&dialer.endpoint(&address).unwrap())
                .await
                .unwrap();
            meridian_proto::v1::raft_transport_client::RaftTransportClient::new(channel)
                .vote(meridian_proto::v1::RaftPayload::default())
                .await
                .unwrap_err()
        }
    };
    let refused = raft_call(dialer.clone()).await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let far_files = TlsFiles::in_dir(&certs, "eu-west-1").load().unwrap();
    let refused = raft_call(Dialer::new(Default::default(), Some(&far_files))).await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("only shard nodes of region us-east"),
        "{refused:?}"
    );
    // A node of the shard's own region gets past the check (to the payload).
    let own = raft_call(Dialer::new(Default::default(), Some(&node_files))).await;
    assert_eq!(own.code(), tonic::Code::InvalidArgument, "{own:?}");
    // A node of the same region that is not a member of the shard is kept
    // out: a shard's Raft answers only its own members.
    meridian_net::certs::issue(
        &certs,
        &[meridian_net::Identity::Node {
            region: "us-east".into(),
            name: "intruder".into(),
        }],
        false,
    )
    .unwrap();
    let intruder = TlsFiles::in_dir(&certs, "intruder").load().unwrap();
    let refused = raft_call(Dialer::new(Default::default(), Some(&intruder))).await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("is not a member of Raft group")
            && refused.message().contains("node/us-east/us-east-1"),
        "{refused:?}"
    );
    // A member is still admitted right after (from what was learnt).
    let own = raft_call(Dialer::new(Default::default(), Some(&node_files))).await;
    assert_eq!(own.code(), tonic::Code::InvalidArgument, "{own:?}");

    // The sending side checks too: a shard ships a namespace's changes with a
    // dialer that talks only to nodes of the standby's region, so an address
    // in the table that is served by a node of another region gets nothing.
    let to_eu = Dialer::new(Default::default(), Some(&node_files))
        .only_to(meridian_net::peers::Peers::NodesOf("eu-west".into()));
    let wrong = to_eu
        .connect(&to_eu.endpoint(&node.grpc).unwrap())
        .await
        .expect_err("a us-east node was dialed as an eu-west standby");
    let mut chain = wrong.to_string();
    let mut source = std::error::Error::source(&wrong);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(
        chain.contains("presents spiffe://meridian/node/us-east/us-east-1")
            && chain.contains("only shard nodes of region eu-west may be dialed"),
        "{chain}"
    );
    let eu_node = lab.process("eu-west-1").unwrap().grpc.clone();
    to_eu
        .connect(&to_eu.endpoint(&eu_node).unwrap())
        .await
        .expect("an eu-west node is dialed");

    // The HTTP side (metrics, health, admin API) is behind the same rule.
    let http = &lab.process("gateway-us-east").unwrap().http;
    let mut stream = std::net::TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "plain HTTP served metrics"
    );
}
