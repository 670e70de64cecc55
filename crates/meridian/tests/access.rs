//! Who may do what, end to end in the TLS lab: the lab's read-only user is
//! refused every change (gRPC and HTTP, control plane, gateway and shard), a
//! namespace-scoped grant reaches only its namespace, an API token works
//! until it is revoked, a revoked identity is refused everywhere within the
//! routing push, and the audit log names who did each change and who was
//! refused.

mod common;

use meridian_client::{Client, ClientError, ClientOptions, pb};
use meridian_lab::{Lab, ProcessRole};
use meridian_net::{Dialer, Identity, TlsFiles, TlsMaterial};
use std::future::Future;
use std::time::{Duration, Instant};

fn client(endpoints: Vec<String>, dialer: Dialer) -> Client {
    Client::with_options(
        endpoints,
        ClientOptions {
            attempt_timeout: Duration::from_secs(3),
            retry_budget: Duration::from_secs(20),
            dialer,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn material(lab: &Lab, name: &str) -> TlsMaterial {
    TlsFiles::in_dir(lab.state().certs.as_ref().unwrap(), name)
        .load()
        .unwrap()
}

fn dialer_of(lab: &Lab, name: &str) -> Dialer {
    Dialer::new(Default::default(), Some(&material(lab, name)))
}

fn denied<T: std::fmt::Debug>(result: Result<T, ClientError>, who: &str, what: &str) {
    match result {
        Err(ClientError::PermissionDenied(message)) => assert!(
            message.contains(who) && message.contains(what),
            "refusal should name {who} and {what}: {message}"
        ),
        other => panic!("expected PERMISSION_DENIED for {who} ({what}), got {other:?}"),
    }
}

/// Polls `check` until it holds (grants and revocations travel with the
/// routing push), failing after `deadline`.
async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTPS request to the control plane's admin API with `tls`'s
/// certificate; the status code and body (see [`common::https_request`]).
async fn https(
    address: &str,
    tls: &TlsMaterial,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    common::https_request(
        address,
        tls.rustls_client_config().unwrap(),
        None,
        method,
        path,
        body,
    )
    .await
}

fn region_locked(name: &str) -> pb::Placement {
    pb::Placement {
        name: name.into(),
        home_region: "us-east".into(),
        mode: pb::NamespaceMode::RegionLocked as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_grants_tokens_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let lab = common::multi_region_lab(dir.path()).await;
    let state = lab.state().clone();
    let certs = state.certs.clone().unwrap();
    meridian_net::certs::issue(&certs, &[Identity::parse("user/alice").unwrap()], false).unwrap();

    let control_at = state.endpoints(ProcessRole::Control, None);
    let gateway_at = state.endpoints(ProcessRole::Gateway, Some("us-east"));
    let nodes_at = common::region_nodes(&lab, "us-east");
    let admin = client(control_at.clone(), dialer_of(&lab, "admin"));
    let reader_control = client(control_at.clone(), dialer_of(&lab, "reader"));
    let admin_gateway = client(gateway_at.clone(), dialer_of(&lab, "admin"));
    let reader_gateway = client(gateway_at.clone(), dialer_of(&lab, "reader"));
    let reader_node = client(nodes_at.clone(), dialer_of(&lab, "reader"));

    // The administrator works: it was granted admin when the cluster began.
    for name in ["orders", "payments"] {
        admin.place_namespace(region_locked(name)).await.unwrap();
    }
    admin_gateway.put("orders", b"k", b"v").await.unwrap();
    let me = admin.who_am_i().await.unwrap();
    assert_eq!(me.caller, "spiffe://meridian/user/admin");
    assert!(
        me.grants
            .iter()
            .any(|g| g.role == "admin" && g.scope == "*")
    );

    // The read-only user reads and views...
    let read = reader_gateway
        .get("orders", b"k", pb::Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(read.map(|kv| kv.value), Some(b"v".to_vec()));
    reader_control.list_placements().await.unwrap();
    // ...and is refused every change, wherever it asks.
    let reader = "spiffe://meridian/user/reader";
    denied(
        reader_gateway.put("orders", b"k", b"x").await,
        reader,
        "write namespace orders",
    );
    denied(
        reader_node.put("orders", b"k", b"x").await,
        reader,
        "write namespace orders",
    );
    denied(
        reader_control.place_namespace(region_locked("mine")).await,
        reader,
        "administer namespace mine",
    );
    denied(
        reader_control
            .put_region(pb::RegionInfo {
                name: "moon".into(),
                jurisdictions: vec!["XX".into()],
                ..Default::default()
            })
            .await,
        reader,
        "administer the cluster",
    );
    denied(
        reader_control
            .change_access(pb::change_access_request::Change::Grant(pb::GrantInfo {
                identity: "user/reader".into(),
                role: "admin".into(),
                scope: "*".into(),
            }))
            .await,
        reader,
        "administer the cluster",
    );
    denied(
        reader_node.add_node(9, "127.0.0.1:1").await,
        reader,
        "administer the cluster",
    );
    // Putting a namespace's bytes on a shard is the control plane's alone.
    match reader_node.create_namespace("sneaky").await {
        Err(ClientError::PermissionDenied(m)) => {
            assert!(m.contains("control-plane members"), "{m}")
        }
        other => panic!("a user created a namespace on a shard: {other:?}"),
    }
    // Over HTTP: 403 with the same message; the admin's own call works.
    let http = state
        .processes
        .iter()
        .find(|p| p.role == ProcessRole::Control)
        .unwrap()
        .http
        .clone();
    let leader_http = {
        // Mutating calls are served by the leader: find it by asking each member.
        let mut found = None;
        for p in state
            .processes
            .iter()
            .filter(|p| p.role == ProcessRole::Control)
        {
            // Followers answer reads too (they ask the leader), so the
            // leader is the member whose own metric says it leads.
            let (status, metrics) =
                https(&p.http, &material(&lab, "admin"), "GET", "/metrics", "").await;
            if status == 200
                && metrics
                    .lines()
                    .any(|l| l.starts_with("meridian_control_leader{") && l.ends_with(" 1"))
            {
                found = Some(p.http.clone());
            }
        }
        found.unwrap_or(http)
    };
    let (status, body) = https(
        &leader_http,
        &material(&lab, "reader"),
        "POST",
        "/v1/namespaces",
        r#"{"name":"web","home_region":"us-east"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(reader) && body.contains("administer namespace web"),
        "{body}"
    );
    let (status, body) = https(
        &leader_http,
        &material(&lab, "reader"),
        "GET",
        "/v1/audit",
        "",
    )
    .await;
    assert_eq!(status, 200, "the reader views the audit log: {body}");

    // A grant on one namespace reaches that namespace only.
    let alice = "spiffe://meridian/user/alice";
    let alice_gateway = client(gateway_at.clone(), dialer_of(&lab, "alice"));
    denied(
        alice_gateway.put("orders", b"a", b"1").await,
        alice,
        "write namespace orders",
    );
    admin
        .change_access(pb::change_access_request::Change::Grant(pb::GrantInfo {
            identity: "user/alice".into(),
            role: "writer".into(),
            scope: "orders".into(),
        }))
        .await
        .unwrap();
    eventually(
        "alice's grant reaches the gateway",
        Duration::from_secs(10),
        || async { alice_gateway.put("orders", b"a", b"1").await.is_ok() },
    )
    .await;
    denied(
        alice_gateway.put("payments", b"a", b"1").await,
        alice,
        "write namespace payments",
    );

    // An API token carries its own role and scope (here on top of the
    // reader's certificate) until it is revoked.
    let token = admin.create_token("writer", "payments", 600).await.unwrap();
    let id = token.info.as_ref().unwrap().id.clone();
    let with_token = client(
        gateway_at.clone(),
        dialer_of(&lab, "reader")
            .with_bearer_token(&token.token)
            .unwrap(),
    );
    eventually(
        "the token reaches the gateway",
        Duration::from_secs(10),
        || async { with_token.put("payments", b"t", b"1").await.is_ok() },
    )
    .await;
    denied(
        with_token.put("orders", b"t", b"1").await,
        &format!("token {id}"),
        "write namespace orders",
    );
    admin
        .change_access(pb::change_access_request::Change::RevokeToken(id.clone()))
        .await
        .unwrap();
    eventually(
        "a revoked token is refused",
        Duration::from_secs(10),
        || async {
            matches!(
                with_token.put("payments", b"t", b"2").await,
                Err(ClientError::Unauthenticated(_))
            )
        },
    )
    .await;

    // A tool without a certificate: the CA and a token are enough for the
    // control plane and gateways (gRPC and HTTP); without one it is refused.
    let reader_token = admin.create_token("reader", "*", 600).await.unwrap().token;
    let anonymous = Dialer::trusting_ca(Default::default(), &certs.join("ca.pem")).unwrap();
    let tool = client(
        control_at.clone(),
        anonymous.clone().with_bearer_token(&reader_token).unwrap(),
    );
    tool.list_placements().await.unwrap();
    let tool_gateway = client(
        gateway_at.clone(),
        anonymous.clone().with_bearer_token(&reader_token).unwrap(),
    );
    eventually(
        "the reader token reaches the gateway",
        Duration::from_secs(10),
        || async {
            tool_gateway
                .get("orders", b"k", pb::Consistency::Strong)
                .await
                .is_ok()
        },
    )
    .await;
    denied(
        tool_gateway.put("orders", b"k", b"x").await,
        "token ",
        "write namespace orders",
    );
    let nobody = client(control_at.clone(), anonymous);
    match nobody.list_placements().await {
        Err(ClientError::Unauthenticated(m)) => assert!(m.contains("no client certificate"), "{m}"),
        other => panic!("a caller without certificate or token got in: {other:?}"),
    }
    let ca_only = meridian_net::credentials::Credentials::trusting(
        &std::fs::read(certs.join("ca.pem")).unwrap(),
    )
    .unwrap()
    .client_config(&[b"http/1.1"])
    .unwrap();
    let (status, body) = common::https_request(
        &leader_http,
        ca_only.clone(),
        Some(&reader_token),
        "GET",
        "/v1/regions",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        common::https_request(&leader_http, ca_only, None, "GET", "/v1/regions", "").await;
    assert_eq!(status, 401, "{body}");

    // A revoked identity is refused everywhere, whatever it was granted.
    admin
        .change_access(pb::change_access_request::Change::RevokeIdentity(
            "user/alice".into(),
        ))
        .await
        .unwrap();
    let alice_node = client(nodes_at.clone(), dialer_of(&lab, "alice"));
    let took = eventually(
        "alice is refused at gateway and node",
        Duration::from_secs(10),
        || async {
            matches!(
                alice_gateway.put("orders", b"a", b"2").await,
                Err(ClientError::PermissionDenied(_))
            ) && matches!(
                alice_node
                    .get("orders", b"a", pb::Consistency::Strong)
                    .await,
                Err(ClientError::PermissionDenied(_))
            )
        },
    )
    .await;
    println!("revocation refused everywhere after {took:?}");

    // Residency has no side doors: a us-east shard does not take in a node
    // whose certificate says eu-west (even when an admin asks)...
    let eu_node = lab.process("eu-west-1").unwrap().grpc.clone();
    let admin_node = client(nodes_at.clone(), dialer_of(&lab, "admin"));
    match admin_node.add_node(9, &eu_node).await {
        Err(ClientError::FailedPrecondition(refusal)) => assert!(
            refusal.message.contains("region eu-west") && refusal.message.contains("orders"),
            "{refusal}"
        ),
        other => panic!("an eu-west node joined a us-east shard: {other:?}"),
    }
    // ...a node cannot re-register at another address...
    let us_node = lab.process("us-east-1").unwrap().clone();
    let as_node = client(control_at.clone(), dialer_of(&lab, "us-east-1"));
    match as_node
        .register_member(pb::RegisterMemberRequest {
            shard: us_node.shard.clone().unwrap(),
            region: "us-east".into(),
            node_id: us_node.node_id.unwrap(),
            address: "127.0.0.1:1".into(),
        })
        .await
    {
        Err(ClientError::PermissionDenied(m)) => {
            assert!(m.contains("cannot re-register at another address"), "{m}")
        }
        other => panic!("a member moved itself: {other:?}"),
    }
    // ...replication into a copy comes only from its primary's region (here
    // a node of eu-west pushing "changes" of a us-east namespace)...
    let from_eu = client(nodes_at.clone(), dialer_of(&lab, "eu-west-1"));
    match from_eu
        .replicate(pb::ReplicateRequest {
            namespace: "orders".into(),
            epoch: 1,
            ..Default::default()
        })
        .await
    {
        Err(ClientError::PermissionDenied(m)) => {
            assert!(m.contains("its primary is in region us-east"), "{m}")
        }
        other => panic!("a node of another region replicated into orders: {other:?}"),
    }
    // ...and, within that region, only from members of the primary shard (a
    // us-east node that belongs to no shard is refused).
    meridian_net::certs::issue(
        lab.state().certs.as_ref().unwrap(),
        &[meridian_net::Identity::Node {
            region: "us-east".into(),
            name: "stray".into(),
        }],
        false,
    )
    .unwrap();
    let stray = client(nodes_at.clone(), dialer_of(&lab, "stray"));
    match stray
        .replicate(pb::ReplicateRequest {
            namespace: "orders".into(),
            epoch: 1,
            ..Default::default()
        })
        .await
    {
        Err(ClientError::PermissionDenied(m)) => assert!(
            m.contains("only members of its primary shard") && m.contains("is not a member"),
            "{m}"
        ),
        other => panic!("a node outside the primary shard replicated into orders: {other:?}"),
    }
    // ...and a region's jurisdictions cannot change under its namespaces.
    match admin
        .put_region(pb::RegionInfo {
            name: "us-east".into(),
            jurisdictions: vec!["EU".into()],
            ..Default::default()
        })
        .await
    {
        Err(ClientError::FailedPrecondition(refusal)) => {
            assert!(refusal.message.contains("orders"), "{refusal}")
        }
        other => panic!("us-east was re-tagged under its namespaces: {other:?}"),
    }

    // Residency evidence: an EU-only namespace's bytes are found, by a scan
    // of every node's storage, in eu-west and nowhere else.
    admin
        .place_namespace(pb::Placement {
            name: "eu-data".into(),
            home_region: "eu-west".into(),
            mode: pb::NamespaceMode::RegionLocked as i32,
            allowed_jurisdictions: vec!["EU".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let eu_gateway = client(
        state.endpoints(ProcessRole::Gateway, Some("eu-west")),
        dialer_of(&lab, "admin"),
    );
    eu_gateway.put("eu-data", b"m", b"marker").await.unwrap();
    let lab_dir = dir.path().join("lab");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "namespace",
            "residency",
            "eu-data",
            "--verify",
            "--output",
            "json",
            "--lab",
        ])
        .arg(&lab_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verified"], true, "{report}");
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "every node was scanned: {report}");
    for node in nodes {
        let holds = node["holds"] == true;
        assert_eq!(holds, node["region"] == "eu-west", "{node}");
    }
    assert!(report["copies"][0]["allowed"] == true, "{report}");

    // Backups fail closed on residency: an EU namespace's backup to a
    // location in us-east is refused naming the rule; to one in eu-west it is
    // taken, verified and catalogued.
    for (name, region) in [("us-vault", "us-east"), ("eu-vault", "eu-west")] {
        admin
            .put_location(pb::LocationInfo {
                name: name.into(),
                url: format!("file://{}", dir.path().join(name).display()),
                region: region.into(),
                jurisdictions: Vec::new(),
            })
            .await
            .unwrap();
    }
    match admin.snapshot("eu-data", "us-vault").await {
        Err(ClientError::FailedPrecondition(refusal)) => assert!(
            refusal.message.contains("residency") && refusal.message.contains("us-vault"),
            "{refusal}"
        ),
        other => panic!("an EU namespace was backed up to us-east: {other:?}"),
    }
    assert!(
        common::all_files(&dir.path().join("us-vault")).is_empty(),
        "a refused backup left objects behind"
    );
    let backup = admin.snapshot("eu-data", "eu-vault").await.unwrap();
    assert!(backup.verified && backup.key_count == 1, "{backup:?}");
    assert_eq!(backup.location_region, "eu-west");
    let catalog = admin.list_backups("eu-data").await.unwrap();
    assert_eq!(catalog.len(), 1, "{catalog:?}");
    assert_eq!(catalog[0].backup_id, backup.backup_id);

    // The audit log: changes under the identity that made them, refusals
    // under the identity refused.
    let records = eventually(
        "refusals reach the audit log",
        Duration::from_secs(10),
        || async {
            let page = admin.audit_page(0, 10_000).await.unwrap();
            page.records.iter().any(|r| {
                r.actor == reader
                    && r.action.contains("Control.PutRegion")
                    && r.outcome.starts_with("refused")
            })
        },
    )
    .await;
    let _ = records;
    let page = admin.audit_page(0, 10_000).await.unwrap();
    let find = |actor: &str, action: &str| {
        page.records
            .iter()
            .any(|r| r.actor == actor && r.action.contains(action))
    };
    assert!(find(
        "spiffe://meridian/user/admin",
        "grant writer to spiffe://meridian/user/alice"
    ));
    assert!(find(
        "spiffe://meridian/user/admin",
        "revoke identity spiffe://meridian/user/alice"
    ));
    assert!(find(
        "spiffe://meridian/user/admin",
        "create namespace orders"
    ));
    assert!(find(
        reader,
        "call Control.PlaceNamespace on namespace mine"
    ));
    assert!(find(reader, "call Control.ChangeAccess on the cluster"));
    // Refusals at gateways and nodes reach the audit log too, naming where.
    eventually(
        "gateway and node refusals reach the audit log",
        Duration::from_secs(10),
        || async {
            let page = admin.audit_page(0, 10_000).await.unwrap();
            let refused_at = |what: &str| {
                page.records.iter().any(|r| {
                    r.actor == reader
                        && r.action.contains(what)
                        && r.target == "namespace orders"
                        && r.outcome.starts_with("refused")
                })
            };
            refused_at("Kv.Put (refused by spiffe://meridian/gateway/")
                && refused_at("shard Put (refused by spiffe://meridian/node/")
        },
    )
    .await;
}
