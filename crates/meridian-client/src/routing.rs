//! The client: leader discovery, redirects, and the retry rules.

use crate::error::{ClientError, Reason};
use meridian_proto::v1 as pb;
use meridian_proto::v1::admin_client::AdminClient;
use meridian_proto::v1::control_client::ControlClient;
use meridian_proto::v1::kv_client::KvClient;
use meridian_proto::v1::replication_client::ReplicationClient;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// One connection to a member; ready requests go out in one frame.
type Conn = meridian_net::coalesce::Coalesce<Channel>;

/// How long a node may take over a backup or its validation (a large
/// namespace is read and written whole).
const LONG_NODE_CALL: Duration = Duration::from_secs(3_600);
use tonic::{Code, Status};

/// How a replicated namespace's primary treats writes (see
/// `Admin.ConfigureNamespace`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// Acknowledge only once a standby confirmed.
    pub sync: bool,
    /// RPO gate in changes (0: none).
    pub max_lag_entries: u64,
    /// RPO gate in milliseconds (0: none).
    pub max_lag_ms: u64,
}

/// Tunables of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time limit of one attempt.
    pub attempt_timeout: Duration,
    /// Total time a call may spend retrying (elections usually end well within it).
    pub retry_budget: Duration,
    /// Pause before retrying when no leader is known.
    pub backoff: Duration,
    /// How members are dialed (TLS identity, address rewrites).
    pub dialer: meridian_net::Dialer,
    /// HTTP/2 connections kept per member, calls spread over them in turn. One
    /// connection is one stream of frames handled by one task at each end; a
    /// process forwarding many clients' calls (the gateway) keeps several so
    /// that neither end serializes on it.
    pub connections_per_member: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            retry_budget: Duration::from_secs(15),
            backoff: Duration::from_millis(100),
            dialer: meridian_net::Dialer::plaintext(),
            connections_per_member: 1,
        }
    }
}

/// Whether a call may run on any member and be retried freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// Must reach the leader; safe to retry (reads, status).
    LeaderRead,
    /// Any member may answer; safe to retry.
    AnyMemberRead,
    /// Must reach the leader; retried only when it certainly did not take effect.
    Write,
}

/// A client of one shard (any member's address is enough).
pub struct Client {
    endpoints: Vec<String>,
    options: ClientOptions,
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Vec<Conn>>>,
    next_endpoint: Mutex<usize>,
    /// Which of a member's connections the next call uses.
    next_connection: std::sync::atomic::AtomicUsize,
}

/// What to do after a failed attempt.
enum Next {
    RetryAt(String),
    /// Try another member (or the same one later); the refusal, when there
    /// was one, is what the caller sees if the budget runs out.
    RetryElsewhere(Option<crate::error::Refusal>),
    Fail(ClientError),
}

impl Client {
    /// A client for the members at `endpoints` (`host:port`). Connections are made
    /// lazily, so this succeeds even while members are down.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, ClientError> {
        Self::with_options(endpoints, ClientOptions::default())
    }

    /// Like [`Client::new`], dialing with `dialer` (TLS, address rewrites).
    pub fn with_dialer(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        dialer: meridian_net::Dialer,
    ) -> Result<Self, ClientError> {
        Self::with_options(
            endpoints,
            ClientOptions {
                dialer,
                ..ClientOptions::default()
            },
        )
    }

    /// Like [`Client::new`], with explicit options.
    pub fn with_options(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints(
                "give at least one member address".into(),
            ));
        }
        Ok(Self {
            endpoints,
            options,
            leader: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            next_endpoint: Mutex::new(0),
            next_connection: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The leader address the client currently believes in, if any.
    pub fn known_leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn channel(&self, address: &str) -> Result<Conn, ClientError> {
        let turn = self
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = channels.get(address) {
            return Ok(pool[turn % pool.len()].clone());
        }
        let endpoint = self
            .options
            .dialer
            .endpoint(address)
            .map_err(|e| ClientError::NoEndpoints(e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        // Each `connect_lazy` is its own connection (a clone would share one).
        let pool: Vec<Conn> = (0..self.options.connections_per_member.max(1))
            .map(|_| {
                meridian_net::coalesce::Coalesce::new(self.options.dialer.lazy(&endpoint))
                    .with_authorization(self.options.dialer.authorization().cloned())
            })
            .collect();
        let channel = pool[turn % pool.len()].clone();
        channels.insert(address.to_string(), pool);
        Ok(channel)
    }

    fn rotate(&self) -> String {
        let mut next = self.next_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        let address = self.endpoints[*next % self.endpoints.len()].clone();
        *next = next.wrapping_add(1);
        address
    }

    fn set_leader(&self, leader: Option<String>) {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = leader;
    }

    /// Runs `attempt` against the right member, following redirects and retrying
    /// within the budget according to `kind`.
    async fn call<T, F, Fut>(&self, kind: CallKind, attempt: F) -> Result<T, ClientError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut target = self.known_leader().unwrap_or_else(|| self.rotate());
        let mut last_error = ClientError::Unavailable("no attempt made".into());
        while started.elapsed() < self.options.retry_budget {
            let channel = self.channel(&target)?;
            let outcome =
                tokio::time::timeout(self.options.attempt_timeout, attempt(channel)).await;
            let next = match outcome {
                Ok(Ok(response)) => {
                    if kind != CallKind::AnyMemberRead {
                        self.set_leader(Some(target.clone()));
                    }
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => self.classify(kind, &target, status),
                Err(_) => match kind {
                    CallKind::Write => Next::Fail(ClientError::OutcomeUnknown(format!(
                        "no answer from {target} within {:?}",
                        self.options.attempt_timeout
                    ))),
                    _ => Next::RetryElsewhere(None),
                },
            };
            match next {
                Next::RetryAt(address) => {
                    tracing::debug!(from = %target, to = %address, "following leader redirect");
                    self.set_leader(Some(address.clone()));
                    last_error = ClientError::Unavailable(
                        format!("redirected from {target} to {address}").into(),
                    );
                    target = address;
                }
                Next::RetryElsewhere(refusal) => {
                    last_error =
                        ClientError::Unavailable(refusal.unwrap_or_else(|| {
                            format!("{target} could not serve the call").into()
                        }));
                    self.set_leader(None);
                    tokio::time::sleep(self.options.backoff).await;
                    target = self.rotate();
                }
                Next::Fail(error) => return Err(error),
            }
        }
        Err(match last_error {
            ClientError::Unavailable(refusal) => ClientError::Unavailable(crate::error::Refusal {
                message: format!(
                    "gave up after {:?}: {}",
                    self.options.retry_budget, refusal.message
                ),
                reason: refusal.reason,
            }),
            other => other,
        })
    }

    fn classify(&self, kind: CallKind, target: &str, status: Status) -> Next {
        // Transport failures surface as UNAVAILABLE, UNKNOWN or CANCELLED (a
        // connection that died mid-call); anything else is the server's answer.
        if !matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ) {
            return Next::Fail(status.into());
        }
        match Reason::of(&status) {
            Some(Reason::NotLeader {
                leader_address: Some(leader),
                ..
            }) if leader != target => return Next::RetryAt(leader),
            // The shard refused before doing anything and may serve the
            // call shortly (another member, a quorum or a lease again).
            Some(reason) if reason.retry_in_shard() => {
                return Next::RetryElsewhere(Some(crate::error::Refusal {
                    message: format!("{target}: {}", status.message()),
                    reason: Some(reason),
                }));
            }
            // Refused before doing anything, for a reason another member
            // cannot fix (the caller acts on the reason).
            Some(reason) if reason.nothing_done() => return Next::Fail(status.into()),
            _ => {}
        }
        if kind != CallKind::Write || never_sent(&status) {
            return Next::RetryElsewhere(None);
        }
        Next::Fail(ClientError::OutcomeUnknown(format!(
            "{target}: {}",
            status.message()
        )))
    }

    /// Reads a key (`None` if missing).
    pub async fn get(
        &self,
        namespace: &str,
        key: &[u8],
        consistency: pb::Consistency,
    ) -> Result<Option<pb::KeyValue>, ClientError> {
        let request = pb::GetRequest {
            namespace: namespace.to_string(),
            key: key.to_vec(),
            read: Some(pb::ReadOptions {
                consistency: consistency as i32,
                max_staleness_ms: 0,
                ..Default::default()
            }),
        };
        let kind = read_kind(consistency);
        let response = self
            .call(kind, |channel| {
                let request = request.clone();
                async move { KvClient::new(channel).get(request).await }
            })
            .await?;
        Ok(response.kv)
    }

    /// Reads a key with the full response (header included), as given.
    pub async fn get_request(
        &self,
        request: pb::GetRequest,
    ) -> Result<pb::GetResponse, ClientError> {
        let consistency = request
            .read
            .as_ref()
            .map(|r| r.consistency())
            .unwrap_or_default();
        self.call(read_kind(consistency), |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).get(request).await }
        })
        .await
    }

    /// Writes a key and returns the new version.
    pub async fn put(
        &self,
        namespace: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<pb::PutResponse, ClientError> {
        let request = pb::PutRequest {
            namespace: namespace.to_string(),
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).put(request).await }
        })
        .await
    }

    /// Removes a key.
    pub async fn delete(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> Result<pb::DeleteResponse, ClientError> {
        let request = pb::DeleteRequest {
            namespace: namespace.to_string(),
            key: key.to_vec(),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).delete(request).await }
        })
        .await
    }

    /// Reads one page of a scan; pass the returned token back to continue.
    pub async fn scan(&self, request: pb::ScanRequest) -> Result<pb::ScanResponse, ClientError> {
        let consistency = request
            .read
            .as_ref()
            .map(|r| r.consistency())
            .unwrap_or_default();
        self.call(read_kind(consistency), |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).scan(request).await }
        })
        .await
    }

    /// Runs a transaction.
    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).txn(request).await }
        })
        .await
    }

    /// Creates a namespace.
    pub async fn create_namespace(&self, name: &str) -> Result<pb::NamespaceInfo, ClientError> {
        let request = pb::CreateNamespaceRequest {
            name: name.to_string(),
        };
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { AdminClient::new(channel).create_namespace(request).await }
            })
            .await?;
        response
            .namespace
            .ok_or_else(|| ClientError::Unavailable("server answered without the namespace".into()))
    }

    /// Deletes a namespace and all its keys; returns how many keys went.
    pub async fn delete_namespace(&self, name: &str) -> Result<u64, ClientError> {
        let request = pb::DeleteNamespaceRequest {
            name: name.to_string(),
        };
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { AdminClient::new(channel).delete_namespace(request).await }
            })
            .await?;
        Ok(response.keys_deleted)
    }

    /// Lists namespaces.
    pub async fn list_namespaces(&self) -> Result<Vec<pb::NamespaceInfo>, ClientError> {
        let response = self
            .call(CallKind::LeaderRead, |channel| async move {
                AdminClient::new(channel)
                    .list_namespaces(pb::ListNamespacesRequest {})
                    .await
            })
            .await?;
        Ok(response.namespaces)
    }

    /// Status of the member at `address` (no redirect: each member reports itself).
    pub async fn cluster_status_of(
        &self,
        address: &str,
    ) -> Result<pb::ClusterStatusResponse, ClientError> {
        let channel = self.channel(address)?;
        let mut admin = AdminClient::new(channel);
        let call = admin.cluster_status(pb::ClusterStatusRequest {});
        match tokio::time::timeout(self.options.attempt_timeout, call).await {
            Ok(result) => Ok(result?.into_inner()),
            Err(_) => Err(ClientError::Unavailable(
                format!("{address} did not answer").into(),
            )),
        }
    }

    /// Raft status of the control-plane member at `address`.
    pub async fn control_status_of(
        &self,
        address: &str,
    ) -> Result<pb::ClusterStatusResponse, ClientError> {
        let channel = self.channel(address)?;
        let mut control = ControlClient::new(channel);
        let call = control.control_status(pb::ClusterStatusRequest {});
        match tokio::time::timeout(self.options.attempt_timeout, call).await {
            Ok(result) => Ok(result?.into_inner()),
            Err(_) => Err(ClientError::Unavailable(
                format!("{address} did not answer").into(),
            )),
        }
    }

    /// Status from the leader.
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, ClientError> {
        let status = self
            .call(CallKind::AnyMemberRead, |channel| async move {
                AdminClient::new(channel)
                    .cluster_status(pb::ClusterStatusRequest {})
                    .await
            })
            .await?;
        if status.leader_address.is_empty() || status.leader_id == status.node_id {
            return Ok(status);
        }
        self.cluster_status_of(&status.leader_address).await
    }

    /// Digest of `namespace` computed by the member at `address` from what it has
    /// applied (eventual) — to compare replicas with each other.
    pub async fn check_integrity_on(
        &self,
        address: &str,
        namespace: &str,
    ) -> Result<pb::CheckIntegrityResponse, ClientError> {
        let channel = self.channel(address)?;
        let request = pb::CheckIntegrityRequest {
            namespace: namespace.to_string(),
            read: Some(pb::ReadOptions {
                consistency: pb::Consistency::Eventual as i32,
                max_staleness_ms: 0,
                ..Default::default()
            }),
            at_least_seq: 0,
            wait_ms: 0,
            sum_only: false,
        };
        let mut admin = AdminClient::new(channel);
        let call = admin.check_integrity(request);
        match tokio::time::timeout(self.options.attempt_timeout, call).await {
            Ok(result) => Ok(result?.into_inner()),
            Err(_) => Err(ClientError::Unavailable(
                format!("{address} did not answer").into(),
            )),
        }
    }

    /// What the node at `address` holds of `namespace` in its own storage.
    pub async fn namespace_presence_on(
        &self,
        address: &str,
        namespace: &str,
    ) -> Result<pb::NamespacePresenceResponse, ClientError> {
        let channel = self.channel(address)?;
        let request = pb::NamespacePresenceRequest {
            namespace: namespace.to_string(),
        };
        let mut admin = AdminClient::new(channel);
        let call = admin.namespace_presence(request);
        match tokio::time::timeout(self.options.attempt_timeout, call).await {
            Ok(result) => Ok(result?.into_inner()),
            Err(_) => Err(ClientError::Unavailable(
                format!("{address} did not answer").into(),
            )),
        }
    }

    /// One Admin call to the node at `address` (no redirects, no retries),
    /// answered within `limit` or UNAVAILABLE.
    async fn admin_on<T, Fut>(
        &self,
        address: &str,
        limit: Duration,
        call: impl FnOnce(AdminClient<Conn>) -> Fut,
    ) -> Result<T, ClientError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let admin = AdminClient::new(self.channel(address)?);
        match tokio::time::timeout(limit, call(admin)).await {
            Ok(result) => Ok(result?.into_inner()),
            Err(_) => Err(ClientError::Unavailable(
                format!("{address} did not answer within {} ms", limit.as_millis()).into(),
            )),
        }
    }

    /// Rotates the data key of the node at `address` and starts
    /// re-encrypting its stored values (or reports the pass running).
    pub async fn rekey_on(&self, address: &str) -> Result<pb::RekeyStatus, ClientError> {
        self.admin_on(
            address,
            self.options.attempt_timeout,
            |mut admin| async move { admin.rekey(pb::RekeyRequest {}).await },
        )
        .await
    }

    /// Where the re-encryption pass of the node at `address` stands.
    pub async fn rekey_status_on(&self, address: &str) -> Result<pb::RekeyStatus, ClientError> {
        self.admin_on(
            address,
            self.options.attempt_timeout,
            |mut admin| async move { admin.get_rekey_status(pb::GetRekeyStatusRequest {}).await },
        )
        .await
    }

    /// The named background workers of the process at `address` (any role:
    /// shard node, control-plane member, gateway).
    pub async fn workers_on(&self, address: &str) -> Result<pb::ListWorkersResponse, ClientError> {
        let mut workers = pb::workers_client::WorkersClient::new(self.channel(address)?);
        let limit = self.options.attempt_timeout;
        match tokio::time::timeout(limit, workers.list_workers(pb::ListWorkersRequest {})).await {
            Ok(result) => Ok(result?.into_inner()),
            Err(_) => Err(ClientError::Unavailable(
                format!("{address} did not answer within {} ms", limit.as_millis()).into(),
            )),
        }
    }

    /// Control plane: every shard that holds or held `namespace`'s bytes.
    pub async fn namespace_residency(
        &self,
        namespace: &str,
    ) -> Result<pb::NamespaceResidencyResponse, ClientError> {
        let request = pb::NamespaceResidencyRequest {
            namespace: namespace.to_string(),
        };
        self.call(CallKind::LeaderRead, |channel| {
            let request = request.clone();
            async move {
                ControlClient::new(channel)
                    .namespace_residency(request)
                    .await
            }
        })
        .await
    }

    /// Digest of `namespace` as of a linearizable point, from the leader.
    pub async fn check_integrity(
        &self,
        namespace: &str,
    ) -> Result<pb::CheckIntegrityResponse, ClientError> {
        self.check_integrity_at(namespace, 0, std::time::Duration::ZERO)
            .await
    }

    /// Digest of `namespace` from the leader once its copy holds change
    /// `at_least_seq` (waiting at most `wait`, up to 10 s): one round trip
    /// for "has it arrived, and what does it hold".
    pub async fn check_integrity_at(
        &self,
        namespace: &str,
        at_least_seq: u64,
        wait: std::time::Duration,
    ) -> Result<pb::CheckIntegrityResponse, ClientError> {
        self.integrity_request(namespace, at_least_seq, wait, false)
            .await
    }

    /// The running content sum of `namespace` (no scan: `digest` comes back
    /// empty) from the leader once its copy holds change `at_least_seq`
    /// (waiting at most `wait`, up to 10 s). An empty `content_sum` means
    /// the copy keeps none: compare with [`Client::check_integrity_at`].
    pub async fn content_sum_at(
        &self,
        namespace: &str,
        at_least_seq: u64,
        wait: std::time::Duration,
    ) -> Result<pb::CheckIntegrityResponse, ClientError> {
        self.integrity_request(namespace, at_least_seq, wait, true)
            .await
    }

    async fn integrity_request(
        &self,
        namespace: &str,
        at_least_seq: u64,
        wait: std::time::Duration,
        sum_only: bool,
    ) -> Result<pb::CheckIntegrityResponse, ClientError> {
        let request = pb::CheckIntegrityRequest {
            namespace: namespace.to_string(),
            read: None,
            at_least_seq,
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            sum_only,
        };
        self.call(CallKind::LeaderRead, |channel| {
            let request = request.clone();
            async move { AdminClient::new(channel).check_integrity(request).await }
        })
        .await
    }

    /// Exports a namespace as a list of chunks (header, batches, trailer).
    pub async fn export_namespace(
        &self,
        namespace: &str,
    ) -> Result<Vec<pb::ExportChunk>, ClientError> {
        use tokio_stream::StreamExt;
        let request = pb::ExportNamespaceRequest {
            namespace: namespace.to_string(),
        };
        let mut stream = self
            .call(CallKind::LeaderRead, |channel| {
                let request = request.clone();
                async move { AdminClient::new(channel).export_namespace(request).await }
            })
            .await?;
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next().await {
            chunks.push(chunk?);
        }
        Ok(chunks)
    }

    /// Imports exported chunks into the new namespace `target`.
    pub async fn import_namespace(
        &self,
        target: &str,
        mut chunks: Vec<pb::ExportChunk>,
    ) -> Result<pb::ImportNamespaceResponse, ClientError> {
        if let Some(first) = chunks.first_mut() {
            first.target_namespace = target.to_string();
        }
        // An import creates a namespace: not retried once sent.
        self.call(CallKind::Write, |channel| {
            let chunks = chunks.clone();
            async move {
                AdminClient::new(channel)
                    .max_encoding_message_size(64 << 20)
                    .import_namespace(tokio_stream::iter(chunks))
                    .await
            }
        })
        .await
    }

    /// Adds a node to the shard (learner first, then voter).
    pub async fn add_node(
        &self,
        node_id: u64,
        address: &str,
    ) -> Result<Vec<pb::Member>, ClientError> {
        let request = pb::AddNodeRequest {
            node_id,
            address: address.to_string(),
        };
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { AdminClient::new(channel).add_node(request).await }
            })
            .await?;
        Ok(response.members)
    }

    /// Control plane: a shard member announces itself.
    pub async fn register_member(
        &self,
        request: pb::RegisterMemberRequest,
    ) -> Result<(), ClientError> {
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).register_member(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Control plane: places a namespace (residency enforced).
    pub async fn place_namespace(
        &self,
        placement: pb::Placement,
    ) -> Result<pb::PlaceNamespaceResponse, ClientError> {
        let request = pb::PlaceNamespaceRequest {
            placement: Some(placement),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).place_namespace(request).await }
        })
        .await
    }

    /// Control plane: removes a namespace.
    pub async fn remove_namespace(
        &self,
        name: &str,
    ) -> Result<pb::RemoveNamespaceResponse, ClientError> {
        let request = pb::RemoveNamespaceRequest {
            name: name.to_string(),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).remove_namespace(request).await }
        })
        .await
    }

    /// Control plane: audit records after sequence `after` (at most `limit`; 0: the server's default).
    pub async fn audit_log(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<pb::AuditRecord>, ClientError> {
        let request = pb::AuditLogRequest { after, limit };
        let response = self
            .call(CallKind::LeaderRead, |channel| async move {
                ControlClient::new(channel).audit_log(request).await
            })
            .await?;
        Ok(response.records)
    }

    /// Control plane: one page of the audit log with the chain's anchor and
    /// the last sequence number written.
    pub async fn audit_page(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<pb::AuditLogResponse, ClientError> {
        let request = pb::AuditLogRequest { after, limit };
        self.call(CallKind::LeaderRead, |channel| async move {
            ControlClient::new(channel).audit_log(request).await
        })
        .await
    }

    /// Control plane: adds a region or changes it.
    pub async fn put_region(&self, region: pb::RegionInfo) -> Result<(), ClientError> {
        let request = pb::PutRegionRequest {
            region: Some(region),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).put_region(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Control plane: adds a backup location (or confirms the same one).
    pub async fn put_location(
        &self,
        location: pb::LocationInfo,
    ) -> Result<pb::LocationInfo, ClientError> {
        let request = pb::PutLocationRequest {
            location: Some(location),
        };
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { ControlClient::new(channel).put_location(request).await }
            })
            .await?;
        Ok(response.location.unwrap_or_default())
    }

    /// Asks the node at `address` to write a backup (the control plane's
    /// call; it can take minutes for a large namespace).
    pub async fn backup_on(
        &self,
        address: &str,
        request: pb::BackupRequest,
    ) -> Result<pb::BackupResponse, ClientError> {
        self.admin_on(address, LONG_NODE_CALL, |mut admin| async move {
            admin.backup(request).await
        })
        .await
    }

    /// Asks the node at `address` to read a backup back and check it.
    pub async fn validate_backup_on(
        &self,
        address: &str,
        request: pb::ValidateBackupRequest,
    ) -> Result<pb::BackupValidation, ClientError> {
        self.admin_on(address, LONG_NODE_CALL, |mut admin| async move {
            admin.validate_backup(request).await
        })
        .await
    }

    /// Control plane: reads a catalogued backup back and checks it.
    pub async fn validate_backup(
        &self,
        backup_id: &str,
    ) -> Result<pb::ValidateCatalogBackupResponse, ClientError> {
        let request = pb::ValidateCatalogBackupRequest {
            backup_id: backup_id.to_string(),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).validate_backup(request).await }
        })
        .await
    }

    /// Control plane: backs `namespace` up to `location` (a full backup).
    pub async fn snapshot(
        &self,
        namespace: &str,
        location: &str,
    ) -> Result<pb::BackupInfo, ClientError> {
        self.snapshot_with(pb::SnapshotRequest {
            namespace: namespace.to_string(),
            location: location.to_string(),
            incremental: false,
        })
        .await
    }

    /// Control plane: takes the backup `request` describes (full or
    /// incremental).
    pub async fn snapshot_with(
        &self,
        request: pb::SnapshotRequest,
    ) -> Result<pb::BackupInfo, ClientError> {
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { ControlClient::new(channel).snapshot(request).await }
            })
            .await?;
        Ok(response.backup.unwrap_or_default())
    }

    /// Shard: keeps `namespace`'s change log for incremental backups
    /// (`release` false), or lets go of what a backup holds through
    /// `release_through`.
    pub async fn hold_changes(
        &self,
        request: pb::HoldChangesRequest,
    ) -> Result<pb::HoldChangesResponse, ClientError> {
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { AdminClient::new(channel).hold_changes(request).await }
        })
        .await
    }

    /// Shard: loads a backup into a namespace on the shard's leader; the
    /// stream carries progress, the last message the result. Not retried
    /// once sent (the caller decides: a restore asked again starts over).
    pub async fn restore(
        &self,
        request: pb::RestoreRequest,
    ) -> Result<tonic::Streaming<pb::RestoreProgress>, ClientError> {
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { AdminClient::new(channel).restore(request).await }
        })
        .await
    }

    /// Shard: removes a backup from its location on the node at `address`.
    pub async fn delete_backup_on(
        &self,
        address: &str,
        request: pb::DeleteBackupRequest,
    ) -> Result<pb::DeleteBackupResponse, ClientError> {
        self.admin_on(address, LONG_NODE_CALL, |mut admin| async move {
            admin.delete_backup(request).await
        })
        .await
    }

    /// Control plane: starts moving a namespace's primary copy to another
    /// region (a job).
    pub async fn migrate_namespace(
        &self,
        request: pb::MigrateNamespaceRequest,
    ) -> Result<pb::JobInfo, ClientError> {
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { ControlClient::new(channel).migrate_namespace(request).await }
            })
            .await?;
        Ok(response.job.unwrap_or_default())
    }

    /// Control plane: starts restoring catalogued backup `request.backup_id`.
    pub async fn start_restore(
        &self,
        request: pb::RestoreBackupRequest,
    ) -> Result<pb::JobInfo, ClientError> {
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { ControlClient::new(channel).restore(request).await }
            })
            .await?;
        Ok(response.job.unwrap_or_default())
    }

    /// Control plane: backs the control plane's own state up to a location.
    pub async fn backup_control_plane(
        &self,
        location: &str,
    ) -> Result<pb::ControlBackupInfo, ClientError> {
        let request = pb::BackupControlPlaneRequest {
            location: location.to_string(),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move {
                ControlClient::new(channel)
                    .backup_control_plane(request)
                    .await
            }
        })
        .await
    }

    /// Control plane: the control-plane backups at a location (by name or URL).
    pub async fn list_control_backups(
        &self,
        request: pb::ListControlBackupsRequest,
    ) -> Result<Vec<pb::ControlBackupInfo>, ClientError> {
        let response = self
            .call(CallKind::LeaderRead, |channel| {
                let request = request.clone();
                async move {
                    ControlClient::new(channel)
                        .list_control_backups(request)
                        .await
                }
            })
            .await?;
        Ok(response.backups)
    }

    /// Control plane: sets (or, with `None`, removes) the control plane's
    /// own backup schedule.
    pub async fn set_control_backup_schedule(
        &self,
        schedule: Option<pb::ControlBackupSchedule>,
    ) -> Result<Option<pb::ControlBackupSchedule>, ClientError> {
        let request = pb::SetControlBackupScheduleRequest { schedule };
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move {
                    ControlClient::new(channel)
                        .set_control_backup_schedule(request)
                        .await
                }
            })
            .await?;
        Ok(response.schedule)
    }

    /// Control plane: the control-plane backups at a location and the
    /// control plane's backup schedule.
    pub async fn control_backups_and_schedule(
        &self,
        request: pb::ListControlBackupsRequest,
    ) -> Result<pb::ListControlBackupsResponse, ClientError> {
        self.call(CallKind::LeaderRead, |channel| {
            let request = request.clone();
            async move {
                ControlClient::new(channel)
                    .list_control_backups(request)
                    .await
            }
        })
        .await
    }

    /// Control plane: restores a control-plane backup into a new control
    /// plane and returns the rebuild job.
    pub async fn restore_control_plane(
        &self,
        request: pb::RestoreControlPlaneRequest,
    ) -> Result<pb::JobInfo, ClientError> {
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move {
                    ControlClient::new(channel)
                        .restore_control_plane(request)
                        .await
                }
            })
            .await?;
        Ok(response.job.unwrap_or_default())
    }

    /// Control plane: sets a namespace's backup schedule.
    pub async fn set_schedule(
        &self,
        schedule: pb::ScheduleInfo,
    ) -> Result<pb::ScheduleInfo, ClientError> {
        let request = pb::SetScheduleRequest {
            schedule: Some(schedule),
        };
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { ControlClient::new(channel).set_schedule(request).await }
            })
            .await?;
        Ok(response.schedule.unwrap_or_default())
    }

    /// Control plane: removes a namespace's backup schedule.
    pub async fn remove_schedule(&self, namespace: &str) -> Result<(), ClientError> {
        let request = pb::RemoveScheduleRequest {
            namespace: namespace.to_string(),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).remove_schedule(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Control plane: every backup schedule.
    pub async fn list_schedules(&self) -> Result<Vec<pb::ScheduleInfo>, ClientError> {
        let response = self
            .call(CallKind::LeaderRead, |channel| async move {
                ControlClient::new(channel)
                    .list_schedules(pb::ListSchedulesRequest {})
                    .await
            })
            .await?;
        Ok(response.schedules)
    }

    /// Control plane: every job.
    pub async fn list_jobs(&self) -> Result<Vec<pb::JobInfo>, ClientError> {
        let response = self
            .call(CallKind::LeaderRead, |channel| async move {
                ControlClient::new(channel)
                    .list_jobs(pb::ListJobsRequest {})
                    .await
            })
            .await?;
        Ok(response.jobs)
    }

    /// Control plane: one job.
    pub async fn get_job(&self, id: u64) -> Result<pb::JobInfo, ClientError> {
        let response = self
            .call(CallKind::LeaderRead, |channel| async move {
                ControlClient::new(channel)
                    .get_job(pb::GetJobRequest { id })
                    .await
            })
            .await?;
        Ok(response.job.unwrap_or_default())
    }

    /// Control plane: asks a running job to stop.
    pub async fn cancel_job(&self, id: u64) -> Result<pb::JobInfo, ClientError> {
        let response = self
            .call(CallKind::Write, |channel| async move {
                ControlClient::new(channel)
                    .cancel_job(pb::CancelJobRequest { id })
                    .await
            })
            .await?;
        Ok(response.job.unwrap_or_default())
    }

    /// Control plane: the backup catalog (of one namespace, or all).
    pub async fn list_backups(&self, namespace: &str) -> Result<Vec<pb::BackupInfo>, ClientError> {
        let request = pb::ListBackupsRequest {
            namespace: namespace.to_string(),
        };
        let response = self
            .call(CallKind::LeaderRead, |channel| {
                let request = request.clone();
                async move { ControlClient::new(channel).list_backups(request).await }
            })
            .await?;
        Ok(response.backups)
    }

    /// Control plane: the backup locations.
    pub async fn list_locations(&self) -> Result<Vec<pb::LocationInfo>, ClientError> {
        let response = self
            .call(CallKind::LeaderRead, |channel| async move {
                ControlClient::new(channel)
                    .list_locations(pb::ListLocationsRequest {})
                    .await
            })
            .await?;
        Ok(response.locations)
    }

    /// Control plane: calls a gateway or node refused, for the audit log.
    pub async fn report_refusals(
        &self,
        refused: Vec<pb::RefusedCallInfo>,
        dropped: u64,
    ) -> Result<(), ClientError> {
        let request = pb::ReportRefusalsRequest { refused, dropped };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).report_refusals(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Control plane: changes roles, grants, tokens or revoked identities.
    pub async fn change_access(
        &self,
        change: pb::change_access_request::Change,
    ) -> Result<pb::ChangeAccessResponse, ClientError> {
        let request = pb::ChangeAccessRequest {
            change: Some(change),
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).change_access(request).await }
        })
        .await
    }

    /// Control plane: roles, grants, live tokens and revoked identities.
    pub async fn list_access(&self) -> Result<pb::ListAccessResponse, ClientError> {
        self.call(CallKind::LeaderRead, |channel| async move {
            ControlClient::new(channel)
                .list_access(pb::ListAccessRequest {})
                .await
        })
        .await
    }

    /// Control plane: a new API token (its secret is in this answer only).
    pub async fn create_token(
        &self,
        role: &str,
        scope: &str,
        ttl_seconds: u64,
    ) -> Result<pb::CreateTokenResponse, ClientError> {
        let request = pb::CreateTokenRequest {
            role: role.to_string(),
            scope: scope.to_string(),
            ttl_seconds,
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { ControlClient::new(channel).create_token(request).await }
        })
        .await
    }

    /// Control plane: who it takes this client to be.
    pub async fn who_am_i(&self) -> Result<pb::WhoAmIResponse, ClientError> {
        self.call(CallKind::AnyMemberRead, |channel| async move {
            ControlClient::new(channel)
                .who_am_i(pb::WhoAmIRequest {})
                .await
        })
        .await
    }

    /// Control plane: every placement and the routing version.
    pub async fn list_placements(&self) -> Result<pb::ListPlacementsResponse, ClientError> {
        self.call(CallKind::LeaderRead, |channel| async move {
            ControlClient::new(channel)
                .list_placements(pb::ListPlacementsRequest {})
                .await
        })
        .await
    }

    /// Shard admin: sets a namespace's role and epoch; returns its change
    /// sequence position.
    pub async fn configure_namespace(
        &self,
        namespace: &str,
        role: pb::NamespaceRole,
        epoch: u64,
        settings: ReplicationSettings,
    ) -> Result<u64, ClientError> {
        let request = pb::ConfigureNamespaceRequest {
            namespace: namespace.to_string(),
            role: role as i32,
            epoch,
            sync: settings.sync,
            max_lag_entries: settings.max_lag_entries,
            max_lag_ms: settings.max_lag_ms,
        };
        // Idempotent at a given epoch: safe to retry like a read.
        let response = self
            .call(CallKind::LeaderRead, |channel| {
                let request = request.clone();
                async move { AdminClient::new(channel).configure_namespace(request).await }
            })
            .await?;
        Ok(response.change_seq)
    }

    /// Shard admin: ships a batch of changes to a standby; returns its position
    /// (and whether it needs a full copy).
    pub async fn replicate(
        &self,
        request: pb::ReplicateRequest,
    ) -> Result<pb::ReplicateResponse, ClientError> {
        // Standbys skip sequence numbers they have: safe to retry.
        self.call(CallKind::LeaderRead, |channel| {
            let request = request.clone();
            async move {
                ReplicationClient::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20)
                    .replicate(request)
                    .await
            }
        })
        .await
    }

    /// Shard admin: the control plane's probe of the shard leader (role and
    /// epoch convergence, write lease, positions).
    pub async fn lease(&self, request: pb::LeaseRequest) -> Result<pb::LeaseResponse, ClientError> {
        self.call(CallKind::LeaderRead, |channel| {
            let request = request.clone();
            async move { AdminClient::new(channel).lease(request).await }
        })
        .await
    }

    /// Shard admin: replication state of every replicated namespace (asks the
    /// leader, which knows each standby's lag).
    pub async fn replication_status(&self) -> Result<pb::ReplicationStatusResponse, ClientError> {
        self.call(CallKind::LeaderRead, |channel| async move {
            AdminClient::new(channel)
                .replication_status(pb::ReplicationStatusRequest {})
                .await
        })
        .await
    }

    /// Shard admin: writes set aside as lost when this shard was demoted.
    pub async fn lost_writes(&self, namespace: &str) -> Result<Vec<pb::LostWrite>, ClientError> {
        let request = pb::LostWritesRequest {
            namespace: namespace.to_string(),
        };
        let response = self
            .call(CallKind::LeaderRead, |channel| {
                let request = request.clone();
                async move { AdminClient::new(channel).lost_writes(request).await }
            })
            .await?;
        Ok(response.writes)
    }

    /// Active-active: one page of the conflicts this shard's copy of
    /// `namespace` resolved, newest first: those numbered below `before` (0:
    /// from the newest), at most `limit` (0: 1,000) and 3 MiB. Read on with
    /// the answer's `next_before` while it is `truncated`.
    pub async fn list_conflicts(
        &self,
        namespace: &str,
        before: u64,
        limit: u32,
    ) -> Result<pb::ListConflictsResponse, ClientError> {
        let request = pb::ListConflictsRequest {
            namespace: namespace.to_string(),
            limit,
            before,
        };
        self.call(CallKind::LeaderRead, |channel| {
            let request = request.clone();
            async move { AdminClient::new(channel).list_conflicts(request).await }
        })
        .await
    }

    /// Active-active: adds `delta` to a counter key.
    pub async fn increment(
        &self,
        namespace: &str,
        key: &[u8],
        delta: i64,
    ) -> Result<pb::IncrementResponse, ClientError> {
        let request = pb::IncrementRequest {
            namespace: namespace.to_string(),
            key: key.to_vec(),
            delta,
        };
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).increment(request).await }
        })
        .await
    }

    /// Active-active: reads a counter key.
    pub async fn get_counter(
        &self,
        request: pb::GetCounterRequest,
    ) -> Result<pb::GetCounterResponse, ClientError> {
        let consistency = request
            .read
            .as_ref()
            .map(|r| r.consistency())
            .unwrap_or_default();
        self.call(read_kind(consistency), |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).get_counter(request).await }
        })
        .await
    }

    /// Active-active: adds (`add`) or removes a member of a set key.
    pub async fn set_update(
        &self,
        request: pb::SetUpdateRequest,
        add: bool,
    ) -> Result<pb::SetUpdateResponse, ClientError> {
        self.call(CallKind::Write, |channel| {
            let request = request.clone();
            async move {
                if add {
                    KvClient::new(channel).set_add(request).await
                } else {
                    KvClient::new(channel).set_remove(request).await
                }
            }
        })
        .await
    }

    /// Active-active: lists a set key's members.
    pub async fn set_members(
        &self,
        request: pb::SetMembersRequest,
    ) -> Result<pb::SetMembersResponse, ClientError> {
        let consistency = request
            .read
            .as_ref()
            .map(|r| r.consistency())
            .unwrap_or_default();
        self.call(read_kind(consistency), |channel| {
            let request = request.clone();
            async move { KvClient::new(channel).set_members(request).await }
        })
        .await
    }

    /// Removes set-aside lost changes `(epoch, seq)` of `namespace` from this
    /// shard; returns how many were still there.
    pub async fn discard_lost_writes(
        &self,
        namespace: &str,
        changes: &[(u64, u64)],
    ) -> Result<u64, ClientError> {
        let request = pb::DiscardLostWritesRequest {
            namespace: namespace.to_string(),
            changes: changes
                .iter()
                .map(|&(epoch, seq)| pb::LostChangeId { epoch, seq })
                .collect(),
        };
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { AdminClient::new(channel).discard_lost_writes(request).await }
            })
            .await?;
        Ok(response.discarded)
    }

    /// Control plane: failovers, oldest first (of one namespace if given).
    pub async fn list_failovers(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<pb::FailoverInfo>, ClientError> {
        let request = pb::ListFailoversRequest {
            namespace: namespace.unwrap_or_default().to_string(),
        };
        let response = self
            .call(CallKind::LeaderRead, |channel| {
                let request = request.clone();
                async move { ControlClient::new(channel).list_failovers(request).await }
            })
            .await?;
        Ok(response.failovers)
    }

    /// Control plane: a manual failover (see `FailoverRequest`).
    pub async fn failover(
        &self,
        request: pb::FailoverRequest,
    ) -> Result<Vec<pb::FailoverInfo>, ClientError> {
        let response = self
            .call(CallKind::Write, |channel| {
                let request = request.clone();
                async move { ControlClient::new(channel).failover(request).await }
            })
            .await?;
        Ok(response.failovers)
    }

    /// Control plane: one namespace's route (linearizable), with the routing
    /// version it reflects.
    pub async fn get_route(&self, namespace: &str) -> Result<pb::GetRouteResponse, ClientError> {
        self.call(CallKind::LeaderRead, |channel| async move {
            ControlClient::new(channel)
                .get_route(pb::GetRouteRequest {
                    namespace: namespace.to_string(),
                })
                .await
        })
        .await
    }

    /// Control plane: every shard and its members.
    pub async fn list_shards(&self) -> Result<Vec<pb::ShardInfo>, ClientError> {
        let response = self
            .call(CallKind::LeaderRead, |channel| async move {
                ControlClient::new(channel)
                    .list_shards(pb::ListShardsRequest {})
                    .await
            })
            .await?;
        Ok(response.shards)
    }

    /// Control plane: every region.
    pub async fn list_regions(&self) -> Result<Vec<pb::RegionInfo>, ClientError> {
        let response = self
            .call(CallKind::LeaderRead, |channel| async move {
                ControlClient::new(channel)
                    .list_regions(pb::ListRegionsRequest {})
                    .await
            })
            .await?;
        Ok(response.regions)
    }

    /// Removes a node from the shard.
    pub async fn remove_node(&self, node_id: u64) -> Result<Vec<pb::Member>, ClientError> {
        let request = pb::RemoveNodeRequest { node_id };
        let response = self
            .call(CallKind::Write, |channel| async move {
                AdminClient::new(channel).remove_node(request).await
            })
            .await?;
        Ok(response.members)
    }
}

fn read_kind(consistency: pb::Consistency) -> CallKind {
    match consistency {
        pb::Consistency::Eventual => CallKind::AnyMemberRead,
        _ => CallKind::LeaderRead,
    }
}

/// Whether a transport failure happened before the request could reach the server
/// (so even a write may be retried).
fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut text = status.message().to_string();
    while let Some(error) = source {
        text.push_str(" | ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    [
        "Connection refused",
        "tcp connect error",
        "error trying to connect",
        "dns error",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}
