//! Shared launcher for the real-process tests: a lab in a fresh temp dir, ports
//! chosen by the OS, every child killed when the handle drops (even on panic).

#![allow(dead_code)]

use meridian_client::{Client, ClientOptions, pb};
use meridian_lab::{Lab, LabSpec};
use std::time::{Duration, Instant};

/// The `meridian` binary the servers run: this build's, unless
/// `MERIDIAN_TEST_BINARY` names another (to show a check fails against an
/// older build: the test's own code stays the same).
pub fn server_binary() -> std::path::PathBuf {
    std::env::var_os("MERIDIAN_TEST_BINARY")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_meridian").into())
}

/// A running test shard.
pub struct TestShard {
    pub lab: Lab,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl TestShard {
    /// Starts `nodes` nodes in region `us-east` with extra `MERIDIAN__...` settings.
    pub async fn start(nodes: usize, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = LabSpec {
            dir: dir.path().to_path_buf(),
            regions: vec!["us-east".into()],
            nodes,
            binary: server_binary(),
            tls: false,
            wan: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            encryption: true,
        };
        let mut lab = Lab::up(&spec).expect("lab up").kill_on_drop();
        lab.wait_ready(Duration::from_secs(60), |_, _| {})
            .await
            .expect("lab ready");
        let client = Client::with_options(
            lab.state().node_endpoints(None),
            ClientOptions {
                retry_budget: Duration::from_secs(30),
                ..ClientOptions::default()
            },
        )
        .expect("client");
        Self {
            lab,
            client,
            _dir: dir,
        }
    }

    /// gRPC address of node `name`.
    pub fn address(&self, name: &str) -> String {
        self.lab.process(name).expect("process").grpc.clone()
    }

    /// Names of every shard node.
    pub fn names(&self) -> Vec<String> {
        self.lab
            .state()
            .processes
            .iter()
            .filter(|p| p.role == meridian_lab::ProcessRole::Node)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Name of the current leader, waiting for one to be known.
    pub async fn leader(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for name in self.names() {
                if !self.lab.is_running(&name) {
                    continue;
                }
                if let Ok(status) = self.client.cluster_status_of(&self.address(&name)).await
                    && status.leader_id == status.node_id
                {
                    return name;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader within 30 s");
    }

    /// Waits until node `name` has applied at least `index`.
    pub async fn wait_applied(
        &self,
        name: &str,
        index: u64,
        timeout: Duration,
    ) -> pb::ClusterStatusResponse {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(status) = self.client.cluster_status_of(&self.address(name)).await
                && status.applied_index >= index
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not apply index {index} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Applied index of the leader, after a linearizable barrier.
    pub async fn leader_applied(&mut self) -> u64 {
        let leader = self.leader().await;
        let status = self
            .client
            .cluster_status_of(&self.address(&leader))
            .await
            .expect("leader status");
        status.applied_index
    }
}

/// A key's expected state after a test's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
}

/// Checks that every acknowledged write is readable with its value and version.
pub async fn assert_all_present(client: &Client, namespace: &str, acked: &[Acked]) {
    for write in acked {
        let found = client
            .get(namespace, &write.key, pb::Consistency::Strong)
            .await
            .expect("read back")
            .unwrap_or_else(|| {
                panic!(
                    "acknowledged key {:?} is missing",
                    String::from_utf8_lossy(&write.key)
                )
            });
        assert_eq!(
            found.value,
            write.value,
            "value of {:?}",
            String::from_utf8_lossy(&write.key)
        );
        assert_eq!(
            found.version,
            write.version,
            "version of {:?}",
            String::from_utf8_lossy(&write.key)
        );
    }
}

/// The multi-region lab as `lab up` makes it (us-east, eu-west, ap-south; mutual
/// TLS; WAN emulation) with one node per shard, started under `dir` and ready.
pub async fn multi_region_lab(dir: &std::path::Path) -> Lab {
    multi_region_lab_with(dir, &[]).await
}

/// [`multi_region_lab`] with `MERIDIAN__...` settings for every shard node.
pub async fn multi_region_lab_with(dir: &std::path::Path, node_env: &[(&str, &str)]) -> Lab {
    multi_region_lab_of(dir, 1, node_env).await
}

/// [`multi_region_lab_with`] with `nodes` nodes per shard.
pub async fn multi_region_lab_of(
    dir: &std::path::Path,
    nodes: usize,
    node_env: &[(&str, &str)],
) -> Lab {
    let mut lab = Lab::up(&LabSpec {
        dir: dir.join("lab"),
        regions: vec!["us-east".into(), "eu-west".into(), "ap-south".into()],
        nodes,
        binary: server_binary(),
        env: node_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tls: true,
        wan: Some(meridian_lab::WanSettings::default()),
        encryption: true,
    })
    .expect("lab up")
    .kill_on_drop();
    lab.wait_ready(Duration::from_secs(180), |_, _| {})
        .await
        .expect("lab ready");
    lab
}

/// A one-region TLS lab without WAN emulation in `dir` (the lab directory
/// itself): `nodes` us-east nodes, encryption at rest as given, `node_env`
/// for every shard node.
pub async fn us_east_lab(
    dir: &std::path::Path,
    nodes: usize,
    encryption: bool,
    node_env: &[(&str, &str)],
) -> Lab {
    let mut lab = Lab::up(&LabSpec {
        dir: dir.to_path_buf(),
        regions: vec!["us-east".into()],
        nodes,
        binary: server_binary(),
        env: node_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tls: true,
        wan: None,
        encryption,
    })
    .expect("lab up")
    .kill_on_drop();
    lab.wait_ready(Duration::from_secs(120), |_, _| {})
        .await
        .expect("lab ready");
    lab
}

/// A client of `endpoints` in `lab` (with its certificate) that retries for
/// `budget`.
pub fn lab_client(lab: &Lab, endpoints: Vec<String>, budget: Duration) -> Client {
    Client::with_options(
        endpoints,
        ClientOptions {
            attempt_timeout: budget.min(Duration::from_secs(3)),
            retry_budget: budget,
            dialer: lab.dialer().clone(),
            ..ClientOptions::default()
        },
    )
    .expect("client")
}

/// gRPC addresses of the shard nodes of `region`.
pub fn region_nodes(lab: &Lab, region: &str) -> Vec<String> {
    lab.state()
        .processes
        .iter()
        .filter(|p| p.role == meridian_lab::ProcessRole::Node && p.region == region)
        .map(|p| p.grpc.clone())
        .collect()
}

/// An active-passive placement of `name` homed in us-east with its standby in
/// eu-west (jurisdictions US and EU allowed); other fields by struct update.
pub fn us_east_with_eu_standby(name: &str) -> pb::Placement {
    pb::Placement {
        name: name.into(),
        home_region: "us-east".into(),
        mode: pb::NamespaceMode::ActivePassive as i32,
        standby_regions: vec!["eu-west".into()],
        allowed_jurisdictions: vec!["US".into(), "EU".into()],
        ..Default::default()
    }
}

/// Every file under `dir` (none if it does not exist), for byte scans.
pub fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Whether any key or value in any keyspace of the database in `data_dir`
/// (values opened with the lab's encryption-at-rest key), or any snapshot
/// file there, contains `needle`.
pub fn storage_contains(
    data_dir: &std::path::Path,
    key_file: &std::path::Path,
    needle: &[u8],
) -> bool {
    storage_holding(data_dir, key_file, needle).is_some()
}

/// Where [`storage_contains`] found `needle`: the keyspace and key, or the
/// snapshot file (`None`: nowhere).
pub fn storage_holding(
    data_dir: &std::path::Path,
    key_file: &std::path::Path,
    needle: &[u8],
) -> Option<String> {
    let contains = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let engine = meridian_raft::StorageEngine::open_with(
        data_dir,
        std::sync::Arc::new(meridian_raft::metrics::StorageMetrics::default()),
        Some(key_file),
    )
    .expect("open node storage");
    let db = engine.database();
    for name in db.list_keyspace_names() {
        let keyspace = engine
            .keyspace(&name, fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        for guard in keyspace.iter() {
            let (key, value) = guard.into_inner().expect("read");
            // Raft bookkeeping is stored in clear, everything else sealed.
            let value = engine
                .sealer()
                .open(&value)
                .map(|v| v.into_owned())
                .unwrap_or_else(|_| value.to_vec());
            if contains(&key) || contains(&value) {
                return Some(format!(
                    "keyspace {name}, key {:?}",
                    String::from_utf8_lossy(&key[..key.len().min(80)])
                ));
            }
        }
    }
    // Snapshot files are uncompressed: keys are found by a plain byte search
    // (their values are sealed; the keyspaces above hold the same data).
    if let Ok(entries) = std::fs::read_dir(data_dir.join("snapshots")) {
        for entry in entries.flatten() {
            if std::fs::read(entry.path()).is_ok_and(|bytes| contains(&bytes)) {
                return Some(format!("snapshot file {}", entry.path().display()));
            }
        }
    }
    None
}

/// The name of the control-plane member that says it leads, if any.
pub async fn control_leader(lab: &meridian_lab::Lab, control: &Client) -> Option<String> {
    for member in lab
        .state()
        .processes
        .iter()
        .filter(|p| p.role == meridian_lab::ProcessRole::Control)
    {
        if let Ok(status) = control.control_status_of(&member.grpc).await
            && status.role.eq_ignore_ascii_case("leader")
        {
            return Some(member.name.clone());
        }
    }
    None
}

/// Polls job `id` until it ends (panics after `limit`).
pub async fn wait_job(control: &Client, id: u64, limit: Duration) -> pb::JobInfo {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(job) = control.get_job(id).await
            && job.state != pb::JobState::Running as i32
        {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not end in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One HTTPS request with any client configuration and an optional bearer
/// token: the status code and body.
pub async fn https_request(
    address: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(meridian_net::tls::SERVER_NAME).unwrap();
    let mut stream = connector.connect(name, stream).await.unwrap();
    let authorization = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: meridian\r\n{authorization}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A peer closing without close_notify is fine here: the response is read.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One HTTPS GET to a lab process with the lab certificate `name` (e.g.
/// `admin`): the status code and body.
pub async fn lab_https_get(lab: &Lab, name: &str, address: &str, path: &str) -> (u16, String) {
    let material = meridian_net::TlsFiles::in_dir(lab.state().certs.as_ref().unwrap(), name)
        .load()
        .unwrap();
    https_request(
        address,
        material.rustls_client_config().unwrap(),
        None,
        "GET",
        path,
        "",
    )
    .await
}
