//! The `meridian.v1.Admin` service of a shard node.

use super::finish;
use super::kv::unexpected;
use crate::command::{Command, CommandResult, NamespaceRole, Rejection, VersionedEntry};
use crate::digest::NamespaceDigest;
use crate::error::ShardError;
use crate::limits::{LimitError, validate_namespace_name};
use crate::node::ShardNode;

/// Longest wait a digest request may ask for (`at_least_seq`).
const MAX_INTEGRITY_WAIT_MS: u64 = 10_000;
use meridian_access::{Permission, Target};
use meridian_proto::v1 as pb;
use meridian_proto::v1::admin_server::Admin;
use openraft::{BasicNode, ChangeMembers};
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Version of the export stream format (header, batches, trailer).
pub const EXPORT_FORMAT: u32 = 1;
/// Key-values per export batch message.
const EXPORT_BATCH: usize = 512;

/// Serves administrative calls on one shard node.
pub struct AdminService {
    node: Arc<ShardNode>,
}

impl AdminService {
    /// A service over `node`.
    pub fn new(node: Arc<ShardNode>) -> Self {
        Self { node }
    }

    /// Creating or importing a namespace puts its bytes on this shard, so
    /// with a control plane only the control plane may (its placement
    /// checked residency); a standalone shard needs an admin.
    fn placement_only<T>(&self, request: &Request<T>, api: &str, name: &str) -> Result<(), Status> {
        if self.node.access.is_standalone() {
            let target = if name.is_empty() {
                Target::Cluster
            } else {
                Target::Namespace(name)
            };
            return self
                .node
                .access
                .check(request, Permission::Admin, target)
                .map(|_| ());
        }
        meridian_net::peers::check(request, &meridian_net::peers::Peers::ControlPlane, api)
    }

    /// Every member of a shard is in the shard's region, so a node joining
    /// it must be too — by the region its certificate names, not by what
    /// anyone says: a joining member receives every byte of every namespace
    /// here, and those may only live where their jurisdictions allow.
    async fn check_joining_region(&self, address: &str) -> Result<(), ShardError> {
        let region = &self.node.config.node.region;
        let identity = match self.node.dialer.server_identity(address).await {
            Ok(Some(identity)) => identity,
            // Plain text: nobody is authenticated, there is nothing to check.
            Ok(None) => return Ok(()),
            Err(err) => {
                return Err(ShardError::Residency(format!(
                    "cannot learn the region of the node at {address} from its certificate ({err}); it is not added"
                )));
            }
        };
        match &identity {
            meridian_net::Identity::Node { region: theirs, .. } if theirs == region => Ok(()),
            other => {
                let namespaces: Vec<String> = self
                    .node
                    .machine
                    .namespaces()
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect();
                Err(ShardError::Residency(format!(
                    "the node at {address} presents the certificate of {} ({}); shard {} is in region {region} and holds namespaces [{}], whose bytes may only reach nodes of region {region} — it is not added",
                    other.uri(),
                    other
                        .region()
                        .map_or("not a node".to_string(), |r| format!("region {r}")),
                    self.node.config.node.shard,
                    namespaces.join(", "),
                )))
            }
        }
    }

    fn namespace_info(&self, name: &str) -> Option<pb::NamespaceInfo> {
        self.node
            .machine
            .namespace(name)
            .map(|record| pb::NamespaceInfo {
                name: name.to_string(),
                created_index: record.created_index,
                key_count: record.key_count,
            })
    }

    /// The control plane's probe: converge roles and epochs, then grant the
    /// write lease, then report positions.
    async fn lease_inner(
        &self,
        request: pb::LeaseRequest,
    ) -> Result<pb::LeaseResponse, ShardError> {
        if !self.node.raft.raft.is_leader() {
            return Err(self.node.not_leader());
        }
        if request.offset_measured {
            self.node.note_clock(
                meridian_replication::hlc::Offset {
                    ms: request.measured_offset_ms,
                    uncertainty_ms: request.offset_uncertainty_ms,
                },
                request.max_clock_offset_ms,
            );
        }
        for desired in &request.desired {
            let role = match desired.role() {
                pb::NamespaceRole::Primary => NamespaceRole::Primary,
                pb::NamespaceRole::Standby => NamespaceRole::Standby,
                pb::NamespaceRole::Peer => NamespaceRole::Peer,
                pb::NamespaceRole::Unspecified => continue,
            };
            let Some(record) = self.node.machine.namespace(&desired.namespace) else {
                continue;
            };
            if role == NamespaceRole::Peer {
                if record.role != NamespaceRole::Peer || record.epoch != desired.epoch {
                    self.node
                        .configure_peer(
                            &desired.namespace,
                            desired.epoch,
                            request.max_clock_offset_ms,
                        )
                        .await?;
                }
                continue;
            }

            let log_changes = !desired.without_standbys;
            let current = (
                record.role,
                record.epoch,
                record.log_changes,
                record.sync,
                record.max_lag_entries,
                record.max_lag_ms,
            );
            let wanted = (
                role,
                desired.epoch,
                log_changes,
                desired.sync,
                desired.max_lag_entries,
                desired.max_lag_ms,
            );
            if current == wanted || desired.epoch < record.epoch {
                continue;
            }
            tracing::info!(
                namespace = %desired.namespace,
                from = ?(record.role, record.epoch),
                to = ?(role, desired.epoch),
                "control plane changes this namespace's role"
            );
            // A control plane that reports takeovers: the copy computes where
            // its history leaves the current one and sets aside what lies
            // beyond (a standby as much as a former primary). Older control
            // planes send only a former primary's `fork_seq`.
            let legacy_fork = !desired.fork_from_takeovers;
            if !legacy_fork && role == NamespaceRole::Standby {
                let takeovers: Vec<crate::fork::Takeover> = desired
                    .takeovers
                    .iter()
                    .map(|t| crate::fork::Takeover {
                        epoch: t.epoch,
                        source_epoch: t.source_epoch,
                        seq: t.seq,
                    })
                    .collect();
                match crate::fork::fork_point(&takeovers, record.epoch, desired.epoch) {
                    Ok(Some(fork)) if record.change_seq > fork => {
                        tracing::warn!(
                            namespace = %desired.namespace,
                            epoch = record.epoch,
                            change_seq = record.change_seq,
                            fork,
                            "this copy holds changes the current history lacks; setting them aside as lost writes"
                        );
                        self.node
                            .propose(Command::SetAsideAfter {
                                namespace: desired.namespace.clone(),
                                fork_seq: fork,
                            })
                            .await?;
                    }
                    Ok(_) => {}
                    Err(why) => {
                        // Configured once the failovers on the way have
                        // reported where they took over.
                        tracing::info!(namespace = %desired.namespace, %why, "role change waits");
                        continue;
                    }
                }
            }
            self.node
                .propose(Command::ConfigureNamespace {
                    namespace: desired.namespace.clone(),
                    role,
                    epoch: desired.epoch,
                    log_changes,
                    fork_seq: (legacy_fork && role == NamespaceRole::Standby)
                        .then_some(desired.fork_seq),
                    sync: desired.sync,
                    max_lag_entries: desired.max_lag_entries,
                    max_lag_ms: desired.max_lag_ms,
                })
                .await?;
        }
        // Only after every demotion above is applied: a lease never covers a
        // namespace this shard no longer owns.
        // The lease covers exactly the namespaces the grant lists as primary
        // here, with their sync rule.
        let covered = request
            .desired
            .iter()
            .filter(|d| d.role() == pb::NamespaceRole::Primary)
            .map(|d| {
                (
                    d.namespace.clone(),
                    crate::node::SyncPolicy {
                        confirmations: d.sync_confirmations as usize,
                        former_primary: (!d.former_primary.is_empty())
                            .then(|| d.former_primary.clone()),
                    },
                )
            })
            .collect();
        let decision = self.node.apply_grant(
            covered,
            &crate::lease::Grant {
                lease_ms: request.lease_ms,
                sent_unix_ms: request.sent_unix_ms,
                max_clock_offset_ms: request.max_clock_offset_ms,
                order: (request.grant_term, request.grant_seq),
            },
        );
        let (held_ms, refused) = match decision {
            crate::lease::LeaseDecision::Hold(length) => (
                u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
                String::new(),
            ),
            crate::lease::LeaseDecision::Revoke | crate::lease::LeaseDecision::NoGrant => {
                (0, String::new())
            }
            crate::lease::LeaseDecision::Superseded => {
                (0, "superseded by a newer grant or revocation".to_string())
            }
            crate::lease::LeaseDecision::Refuse(refusal) => (0, refusal.to_string()),
        };
        let positions = self
            .node
            .machine
            .namespaces()
            .into_iter()
            .filter(|(_, r)| r.epoch > 0)
            .map(|(name, r)| pb::NamespacePosition {
                namespace: name,
                role: match r.role {
                    NamespaceRole::Primary => pb::NamespaceRole::Primary as i32,
                    NamespaceRole::Standby => pb::NamespaceRole::Standby as i32,
                    NamespaceRole::Peer => pb::NamespaceRole::Peer as i32,
                },
                epoch: r.epoch,
                change_seq: r.change_seq,
                resync_needed: r.resync_needed,
                promoted_from_epoch: r.promoted_from_epoch,
                promoted_seq: r.promoted_seq,
            })
            .collect();
        Ok(pb::LeaseResponse {
            node_id: self.node.id(),
            positions,
            held_ms,
            refused,
            node_unix_ms: crate::lease::now_unix_ms(),
        })
    }

    async fn create_namespace(&self, name: String) -> Result<pb::NamespaceInfo, ShardError> {
        validate_namespace_name(&name)?;
        let result = self
            .node
            .propose(Command::CreateNamespace {
                name: name.clone(),
                max_namespaces: self.node.config.limits.max_namespaces as u64,
            })
            .await?;
        match result {
            CommandResult::NamespaceCreated { created_index } => Ok(pb::NamespaceInfo {
                name,
                created_index,
                key_count: 0,
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_namespace(
        &self,
        name: String,
    ) -> Result<pb::DeleteNamespaceResponse, ShardError> {
        validate_namespace_name(&name)?;
        match self.node.propose(Command::DeleteNamespace { name }).await? {
            CommandResult::NamespaceDeleted { keys_deleted } => {
                Ok(pb::DeleteNamespaceResponse { keys_deleted })
            }
            other => Err(unexpected(other)),
        }
    }

    async fn list_namespaces(&self) -> Result<pb::ListNamespacesResponse, ShardError> {
        self.node.read_barrier(None).await?;
        Ok(pb::ListNamespacesResponse {
            namespaces: self
                .node
                .machine
                .namespaces()
                .into_iter()
                .map(|(name, record)| pb::NamespaceInfo {
                    name,
                    created_index: record.created_index,
                    key_count: record.key_count,
                })
                .collect(),
        })
    }

    async fn check_integrity(
        &self,
        request: pb::CheckIntegrityRequest,
    ) -> Result<pb::CheckIntegrityResponse, ShardError> {
        validate_namespace_name(&request.namespace)?;
        if u64::from(request.wait_ms) > MAX_INTEGRITY_WAIT_MS {
            return Err(LimitError::WaitTooLong {
                requested: u64::from(request.wait_ms),
                limit: MAX_INTEGRITY_WAIT_MS,
            }
            .into());
        }
        self.node.read_barrier(request.read.as_ref()).await?;
        let position = |node: &crate::node::ShardNode| {
            node.machine
                .namespace(&request.namespace)
                .map(|r| r.change_seq)
        };
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(u64::from(request.wait_ms));
        // Changes arrive by replication: poll the applied position until it
        // reaches the asked change or the wait is over.
        loop {
            match position(&self.node) {
                None => {
                    return Err(Rejection::NamespaceNotFound {
                        name: request.namespace,
                    }
                    .into());
                }
                Some(seq) if seq >= request.at_least_seq => break,
                Some(seq) if std::time::Instant::now() >= deadline => {
                    return Err(ShardError::NotYetAt {
                        namespace: request.namespace,
                        at: seq,
                        wanted: request.at_least_seq,
                        waited_ms: u64::from(request.wait_ms),
                    });
                }
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
            }
        }
        let sum_hex =
            |sum: Option<crate::digest::ContentSum>| sum.map(|s| s.to_hex()).unwrap_or_default();
        if request.sum_only {
            // One read of the record: sum, count and position belong
            // together by construction.
            let header = self.node.header();
            let Some(record) = self.node.machine.namespace(&request.namespace) else {
                return Err(Rejection::NamespaceNotFound {
                    name: request.namespace,
                }
                .into());
            };
            return Ok(pb::CheckIntegrityResponse {
                header: Some(header),
                digest: String::new(),
                key_count: record.key_count,
                change_seq: record.change_seq,
                content_sum: sum_hex(record.content_sum),
            });
        }
        let header = self.node.header();
        let machine = self.node.machine.clone();
        let namespace = request.namespace.clone();
        // One point-in-time view: the digest, the position and the kept
        // sum it is reported with belong together.
        let scan = tokio::task::spawn_blocking(move || machine.integrity_scan(&namespace))
            .await
            .map_err(|e| ShardError::Storage(std::io::Error::other(e)))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    ShardError::Rejected(Rejection::NamespaceNotFound {
                        name: request.namespace.clone(),
                    })
                }
                _ => ShardError::Storage(e),
            })?;
        if let Some(kept) = scan.kept_sum.filter(|kept| *kept != scan.scanned_sum) {
            tracing::error!(namespace = %request.namespace, change_seq = scan.change_seq, "running content sum differs from the entries");
            return Err(ShardError::ContentSumMismatch {
                namespace: request.namespace,
                change_seq: scan.change_seq,
                kept: kept.to_hex(),
                scanned: scan.scanned_sum.to_hex(),
            });
        }
        Ok(pb::CheckIntegrityResponse {
            header: Some(header),
            digest: scan.digest,
            key_count: scan.key_count,
            change_seq: scan.change_seq,
            content_sum: sum_hex(scan.kept_sum),
        })
    }

    async fn export(
        &self,
        request: pb::ExportNamespaceRequest,
    ) -> Result<ExportStream, ShardError> {
        validate_namespace_name(&request.namespace)?;
        self.node.read_barrier(None).await?;
        if self.node.machine.namespace(&request.namespace).is_none() {
            return Err(Rejection::NamespaceNotFound {
                name: request.namespace,
            }
            .into());
        }
        let header = pb::ExportChunk {
            item: Some(pb::export_chunk::Item::Header(pb::ExportHeader {
                format_version: EXPORT_FORMAT,
                namespace: request.namespace.clone(),
                applied_index: self.node.header().applied_index,
            })),
            target_namespace: String::new(),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<pb::ExportChunk, Status>>(8);
        let machine = self.node.machine.clone();
        let namespace = request.namespace;
        tokio::task::spawn_blocking(move || {
            if sender.blocking_send(Ok(header)).is_err() {
                return;
            }
            let mut digest = NamespaceDigest::default();
            let mut batch = Vec::with_capacity(EXPORT_BATCH);
            let mut receiver_gone = false;
            let send_batch = |batch: &mut Vec<pb::KeyValue>| {
                let kvs = std::mem::take(batch);
                sender
                    .blocking_send(Ok(pb::ExportChunk {
                        item: Some(pb::export_chunk::Item::Batch(pb::ExportBatch { kvs })),
                        target_namespace: String::new(),
                    }))
                    .is_ok()
            };
            let visited = machine.visit_namespace(&namespace, |key, version, value| {
                digest.add(&key, version, &value);
                batch.push(pb::KeyValue {
                    key,
                    value,
                    version,
                });
                if batch.len() == EXPORT_BATCH && !send_batch(&mut batch) {
                    receiver_gone = true;
                    return false;
                }
                true
            });
            if receiver_gone {
                return;
            }
            if let Err(err) = visited {
                let _ = sender.blocking_send(Err(ShardError::Storage(err).into()));
                return;
            }
            if !batch.is_empty() && !send_batch(&mut batch) {
                return;
            }
            let key_count = digest.count();
            let _ = sender.blocking_send(Ok(pb::ExportChunk {
                item: Some(pb::export_chunk::Item::Trailer(pb::ExportTrailer {
                    key_count,
                    digest: digest.finish(),
                })),
                target_namespace: String::new(),
            }));
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    async fn import(
        &self,
        mut chunks: Streaming<pb::ExportChunk>,
    ) -> Result<pb::ImportNamespaceResponse, ShardError> {
        let invalid = |message: &str| {
            ShardError::Invalid(LimitError::Conflict {
                message: message.into(),
            })
        };
        let first = chunks
            .next()
            .await
            .ok_or_else(|| invalid("import stream is empty; it must start with a header"))?
            .map_err(|s| invalid(&format!("import stream failed: {}", s.message())))?;
        let Some(pb::export_chunk::Item::Header(header)) = first.item else {
            return Err(invalid("import stream must start with a header"));
        };
        if header.format_version != EXPORT_FORMAT {
            return Err(invalid(&format!(
                "export format {} is not supported (this node reads {EXPORT_FORMAT})",
                header.format_version
            )));
        }
        let target = if first.target_namespace.is_empty() {
            header.namespace
        } else {
            first.target_namespace
        };
        self.create_namespace(target.clone()).await?;
        match self.import_into(&target, &mut chunks).await {
            Ok(response) => Ok(response),
            Err(err) => {
                // Leave nothing half-imported behind.
                if let Err(cleanup) = self.delete_namespace(target.clone()).await {
                    tracing::warn!(namespace = %target, error = %cleanup, "could not remove a failed import");
                }
                Err(err)
            }
        }
    }

    async fn import_into(
        &self,
        target: &str,
        chunks: &mut Streaming<pb::ExportChunk>,
    ) -> Result<pb::ImportNamespaceResponse, ShardError> {
        let limits = self.node.config.limits.clone();
        let invalid = |message: String| ShardError::Invalid(LimitError::Conflict { message });
        let mut digest = NamespaceDigest::default();
        let mut last_key: Option<Vec<u8>> = None;
        let mut trailer = None;
        while let Some(chunk) = chunks.next().await {
            let chunk =
                chunk.map_err(|s| invalid(format!("import stream failed: {}", s.message())))?;
            match chunk.item {
                Some(pb::export_chunk::Item::Batch(batch)) => {
                    if trailer.is_some() {
                        return Err(invalid("data after the trailer".into()));
                    }
                    let mut entries = Vec::with_capacity(batch.kvs.len());
                    for kv in batch.kvs {
                        limits.check_key(&kv.key)?;
                        limits.check_value(&kv.value)?;
                        if last_key.as_ref().is_some_and(|last| &kv.key <= last) {
                            return Err(invalid(
                                "import keys must arrive in strictly ascending order".into(),
                            ));
                        }
                        if kv.version == 0 {
                            return Err(invalid("imported keys need a version above 0".into()));
                        }
                        if kv.version > crate::limits::MAX_VERSION {
                            return Err(invalid(format!(
                                "imported version {} exceeds the limit MAX_VERSION = 2^62 (= {})",
                                kv.version,
                                crate::limits::MAX_VERSION
                            )));
                        }
                        digest.add(&kv.key, kv.version, &kv.value);
                        last_key = Some(kv.key.clone());
                        entries.push(VersionedEntry {
                            key: kv.key,
                            value: kv.value,
                            version: kv.version,
                        });
                    }
                    for part in entries.chunks(limits.max_batch_ops.max(1)) {
                        let command = Command::Import {
                            namespace: target.to_string(),
                            entries: part.to_vec(),
                        };
                        match self.node.propose(command).await? {
                            CommandResult::Imported { .. } => {}
                            other => return Err(unexpected(other)),
                        }
                    }
                }
                Some(pb::export_chunk::Item::Trailer(t)) => trailer = Some(t),
                Some(pb::export_chunk::Item::Header(_)) => {
                    return Err(invalid("a second header".into()));
                }
                None => return Err(invalid("an empty chunk".into())),
            }
        }
        let trailer =
            trailer.ok_or_else(|| invalid("the stream ended without a trailer".into()))?;
        let received_count = digest.count();
        let received = digest.finish();
        if trailer.key_count != received_count || trailer.digest != received {
            return Err(ShardError::ImportMismatch(format!(
                "received {received_count} keys with digest {received}, the trailer promised {} keys with digest {}",
                trailer.key_count, trailer.digest
            )));
        }
        // Check what was stored, not just what was received.
        let stored = self
            .check_integrity(pb::CheckIntegrityRequest {
                namespace: target.to_string(),
                read: None,
                at_least_seq: 0,
                wait_ms: 0,
                sum_only: false,
            })
            .await?;
        if stored.digest != trailer.digest {
            return Err(ShardError::ImportMismatch(format!(
                "stored digest {} differs from the exported {}",
                stored.digest, trailer.digest
            )));
        }
        Ok(pb::ImportNamespaceResponse {
            namespace: self.namespace_info(target),
            digest: stored.digest,
        })
    }

    fn members(&self) -> Vec<pb::Member> {
        let metrics = self.node.raft_metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| pb::Member {
                node_id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    fn rekey_status(&self) -> pb::RekeyStatus {
        let sealer = self.node.raft.engine.sealer();
        let node_id = self.node.id();
        if !sealer.is_on() {
            return pb::RekeyStatus {
                node_id,
                ..Default::default()
            };
        }
        let status = self.node.raft.reseal.status();
        pb::RekeyStatus {
            node_id,
            encrypted: true,
            running: status.running,
            key_id: sealer.current_key().unwrap_or(status.key_id),
            total: status.total,
            scanned: status.scanned,
            resealed: status.resealed,
            log_entries_under_old_keys: status.log_entries_under_old_keys,
            started_unix_ms: status.started_unix_ms,
            finished_unix_ms: status.finished_unix_ms,
            error: status.error.unwrap_or_default(),
            data_keys: u32::try_from(sealer.wrapped_keys().len()).unwrap_or(u32::MAX),
        }
    }

    fn cluster_status(&self) -> pb::ClusterStatusResponse {
        let metrics = self.node.raft_metrics();
        let (leader_id, leader_address) = self.node.leader();
        pb::ClusterStatusResponse {
            node_id: self.node.id(),
            shard: self.node.config.node.shard.clone(),
            region: self.node.config.node.region.clone(),
            leader_id: leader_id.unwrap_or(0),
            leader_address: leader_address.unwrap_or_default(),
            term: metrics.current_term,
            role: format!("{:?}", metrics.state),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index()),
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index()),
            purged_index: metrics.purged.map_or(0, |id| id.index()),
            members: self.members(),
        }
    }

    async fn add_node(
        &self,
        request: pb::AddNodeRequest,
    ) -> Result<pb::AddNodeResponse, ShardError> {
        if request.node_id == 0 || request.address.is_empty() {
            return Err(LimitError::MissingField {
                field: "node_id and address",
            }
            .into());
        }
        if !self.node.raft.raft.is_leader() {
            return Err(self.node.not_leader());
        }
        self.check_joining_region(&request.address).await?;
        let raft = &self.node.raft.raft;
        // A learner first, so the new node catches up without affecting quorum.
        raft.add_learner(request.node_id, BasicNode::new(request.address), true)
            .await
            .map_err(|e| ShardError::Raft(e.to_string()))?;
        raft.change_membership(
            ChangeMembers::AddVoterIds(BTreeSet::from([request.node_id])),
            false,
        )
        .await
        .map_err(|e| ShardError::Raft(e.to_string()))?;
        Ok(pb::AddNodeResponse {
            members: self.members(),
        })
    }

    async fn remove_node(
        &self,
        request: pb::RemoveNodeRequest,
    ) -> Result<pb::RemoveNodeResponse, ShardError> {
        if !self.node.raft.raft.is_leader() {
            return Err(self.node.not_leader());
        }
        let raft = &self.node.raft.raft;
        let voters: BTreeSet<u64> = self
            .node
            .raft_metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let change = if voters.contains(&request.node_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([request.node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([request.node_id]))
        };
        raft.change_membership(change, false)
            .await
            .map_err(|e| ShardError::Raft(e.to_string()))?;
        Ok(pb::RemoveNodeResponse {
            members: self.members(),
        })
    }
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn configure_namespace(
        &self,
        request: Request<pb::ConfigureNamespaceRequest>,
    ) -> Result<Response<pb::ConfigureNamespaceResponse>, Status> {
        // Roles and epochs are the control plane's to set.
        meridian_net::peers::check(
            &request,
            &meridian_net::peers::Peers::ControlPlane,
            "Admin.ConfigureNamespace",
        )?;
        let request = request.into_inner();
        let role = match request.role() {
            pb::NamespaceRole::Primary => NamespaceRole::Primary,
            pb::NamespaceRole::Standby => NamespaceRole::Standby,
            pb::NamespaceRole::Peer => NamespaceRole::Peer,
            pb::NamespaceRole::Unspecified => {
                return Err(Status::invalid_argument(
                    "role must be NAMESPACE_ROLE_PRIMARY, NAMESPACE_ROLE_STANDBY or NAMESPACE_ROLE_PEER",
                ));
            }
        };
        let result = async {
            validate_namespace_name(&request.namespace)?;
            if role == NamespaceRole::Peer {
                let offset = self.node.config.replication.max_clock_offset_ms;
                self.node
                    .configure_peer(&request.namespace, request.epoch, offset)
                    .await?;
                return Ok(pb::ConfigureNamespaceResponse {
                    change_seq: self
                        .node
                        .machine
                        .namespace(&request.namespace)
                        .map_or(0, |r| r.change_seq),
                });
            }
            match self
                .node
                .propose(Command::ConfigureNamespace {
                    namespace: request.namespace.clone(),
                    role,
                    epoch: request.epoch,
                    log_changes: true,
                    fork_seq: None,
                    sync: request.sync,
                    max_lag_entries: request.max_lag_entries,
                    max_lag_ms: request.max_lag_ms,
                })
                .await?
            {
                CommandResult::Configured => Ok(pb::ConfigureNamespaceResponse {
                    change_seq: self
                        .node
                        .machine
                        .namespace(&request.namespace)
                        .map_or(0, |r| r.change_seq),
                }),
                other => Err(unexpected(other)),
            }
        }
        .await;
        finish(
            &self.node.metrics,
            "ConfigureNamespace",
            None,
            Instant::now(),
            result,
        )
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let started = Instant::now();
        // Write leases (and desired roles) come from the control plane only.
        meridian_net::peers::check(
            &request,
            &meridian_net::peers::Peers::ControlPlane,
            "Admin.Lease",
        )?;
        let request = request.into_inner();
        let result = self.lease_inner(request).await;
        finish(&self.node.metrics, "Lease", None, started, result)
    }

    async fn lost_writes(
        &self,
        request: Request<pb::LostWritesRequest>,
    ) -> Result<Response<pb::LostWritesResponse>, Status> {
        // Lost writes carry the namespace's data.
        let target = Target::Namespace(&request.get_ref().namespace);
        self.node.access.check(&request, Permission::View, target)?;
        self.node.access.check(&request, Permission::Read, target)?;
        let started = Instant::now();
        let namespace = request.into_inner().namespace;
        let result = async {
            validate_namespace_name(&namespace)?;
            self.node.read_barrier(None).await?;
            let mut writes = Vec::new();
            for (epoch, change) in self.node.machine.lost_writes(&namespace)? {
                for write in change.writes {
                    writes.push(pb::LostWrite {
                        epoch,
                        seq: change.seq,
                        key: write.key,
                        value: write.value,
                        version: write.version,
                        previous_version: write.previous_version,
                    });
                }
            }
            Ok(pb::LostWritesResponse { writes })
        }
        .await;
        finish(&self.node.metrics, "LostWrites", None, started, result)
    }

    async fn list_conflicts(
        &self,
        request: Request<pb::ListConflictsRequest>,
    ) -> Result<Response<pb::ListConflictsResponse>, Status> {
        // Conflict records carry the namespace's data.
        let target = Target::Namespace(&request.get_ref().namespace);
        self.node.access.check(&request, Permission::View, target)?;
        self.node.access.check(&request, Permission::Read, target)?;
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            validate_namespace_name(&request.namespace)?;
            let Some(meta) = self.node.machine.active_meta(&request.namespace)? else {
                return Err(ShardError::Rejected(Rejection::NotActiveActive {
                    name: request.namespace.clone(),
                    operation: "listing conflicts".into(),
                }));
            };
            // 0 means a page of 1,000; no answer passes 3 MiB (a client
            // decodes at most 4).
            let limit = if request.limit == 0 {
                1_000
            } else {
                request.limit as usize
            };
            let (records, truncated) =
                self.node
                    .machine
                    .conflicts(&request.namespace, request.before, limit, 3 << 20)?;
            let next_before = if truncated {
                records.last().map_or(0, |(number, _)| *number)
            } else {
                0
            };
            let side = |v: &meridian_replication::crdt::Version| pb::ConflictSide {
                value: v.value.clone(),
                wall_ms: v.origin.stamp.wall_ms,
                logical: v.origin.stamp.logical,
                region: v.origin.region.clone(),
            };
            let conflicts = records
                .into_iter()
                .map(|(number, record)| {
                    let mut out = pb::Conflict {
                        number,
                        key: record.key,
                        resolved_at_ms: record.resolved_at_ms,
                        resolved_in: record.resolved_in,
                        ..Default::default()
                    };
                    match record.conflict {
                        meridian_replication::crdt::Conflict::Register { winner, loser } => {
                            out.kind = "register".into();
                            out.winner = Some(side(&winner));
                            out.loser = Some(side(&loser));
                        }
                        meridian_replication::crdt::Conflict::Type { winner, loser } => {
                            out.kind = "type".into();
                            out.loser_type = loser.0.to_string();
                            out.winner = Some(pb::ConflictSide {
                                value: None,
                                wall_ms: winner.1.stamp.wall_ms,
                                logical: winner.1.stamp.logical,
                                region: winner.1.region,
                            });
                            out.loser = Some(pb::ConflictSide {
                                value: None,
                                wall_ms: loser.1.stamp.wall_ms,
                                logical: loser.1.stamp.logical,
                                region: loser.1.region,
                            });
                        }
                    }
                    out
                })
                .collect();
            Ok(pb::ListConflictsResponse {
                conflicts,
                dropped: meta.dropped_conflicts,
                recorded: meta.next_conflict,
                truncated,
                next_before,
            })
        }
        .await;
        finish(&self.node.metrics, "ListConflicts", None, started, result)
    }

    async fn discard_lost_writes(
        &self,
        request: Request<pb::DiscardLostWritesRequest>,
    ) -> Result<Response<pb::DiscardLostWritesResponse>, Status> {
        self.node.access.check(
            &request,
            Permission::Admin,
            Target::Namespace(&request.get_ref().namespace),
        )?;
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            validate_namespace_name(&request.namespace)?;
            let limit = self.node.config.limits.max_batch_ops;
            if request.changes.len() > limit {
                return Err(LimitError::Malformed(format!(
                    "{} lost changes in one call; max_batch_ops is {limit}",
                    request.changes.len()
                ))
                .into());
            }
            let command = Command::DiscardLost {
                namespace: request.namespace,
                changes: request.changes.iter().map(|c| (c.epoch, c.seq)).collect(),
            };
            match self.node.propose(command).await? {
                CommandResult::Discarded { count } => {
                    Ok(pb::DiscardLostWritesResponse { discarded: count })
                }
                other => Err(ShardError::Raft(format!("unexpected result {other:?}"))),
            }
        }
        .await;
        finish(
            &self.node.metrics,
            "DiscardLostWrites",
            None,
            started,
            result,
        )
    }

    async fn replication_status(
        &self,
        request: Request<pb::ReplicationStatusRequest>,
    ) -> Result<Response<pb::ReplicationStatusResponse>, Status> {
        self.node
            .access
            .check(&request, Permission::View, Target::Cluster)?;
        let started = Instant::now();
        // Only the leader ships, so only it knows the standbys' positions.
        if !self.node.raft.raft.is_leader() {
            return finish(
                &self.node.metrics,
                "ReplicationStatus",
                None,
                started,
                Err(self.node.not_leader()),
            );
        }
        let progress = self.node.replication.snapshot();
        let mut namespaces = Vec::new();
        for (name, record) in self.node.machine.namespaces() {
            if record.epoch == 0 && !record.log_changes {
                continue;
            }
            let standbys = progress
                .iter()
                .filter(|((ns, _), _)| *ns == name)
                .map(|((_, shard), p)| pb::StandbyLag {
                    shard: shard.clone(),
                    region: p.region.clone(),
                    acked_seq: p.acked.unwrap_or(0),
                    lag_entries: record.change_seq.saturating_sub(p.acked.unwrap_or(0)),
                    lag_seconds: p.lag_seconds(),
                    bytes_sent: p.bytes_sent,
                })
                .collect();
            namespaces.push(pb::NamespaceReplication {
                namespace: name,
                role: match record.role {
                    NamespaceRole::Primary => pb::NamespaceRole::Primary as i32,
                    NamespaceRole::Standby => pb::NamespaceRole::Standby as i32,
                    NamespaceRole::Peer => pb::NamespaceRole::Peer as i32,
                },
                epoch: record.epoch,
                change_seq: record.change_seq,
                standbys,
            });
        }
        let response = pb::ReplicationStatusResponse {
            namespaces,
            raw_bytes_sent: self
                .node
                .replication
                .raw_bytes_sent
                .load(std::sync::atomic::Ordering::Relaxed),
        };
        finish(
            &self.node.metrics,
            "ReplicationStatus",
            None,
            started,
            Ok(response),
        )
    }

    async fn create_namespace(
        &self,
        request: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        self.placement_only(&request, "Admin.CreateNamespace", &request.get_ref().name)?;
        let started = Instant::now();
        let result = AdminService::create_namespace(self, request.into_inner().name)
            .await
            .map(|info| pb::CreateNamespaceResponse {
                namespace: Some(info),
            });
        finish(&self.node.metrics, "CreateNamespace", None, started, result)
    }

    async fn delete_namespace(
        &self,
        request: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<pb::DeleteNamespaceResponse>, Status> {
        self.node.access.check(
            &request,
            Permission::Admin,
            Target::Namespace(&request.get_ref().name),
        )?;
        let started = Instant::now();
        let result = AdminService::delete_namespace(self, request.into_inner().name).await;
        finish(&self.node.metrics, "DeleteNamespace", None, started, result)
    }

    async fn list_namespaces(
        &self,
        request: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        self.node
            .access
            .check(&request, Permission::View, Target::Cluster)?;
        let started = Instant::now();
        let result = AdminService::list_namespaces(self).await;
        finish(&self.node.metrics, "ListNamespaces", None, started, result)
    }

    async fn namespace_presence(
        &self,
        request: Request<pb::NamespacePresenceRequest>,
    ) -> Result<Response<pb::NamespacePresenceResponse>, Status> {
        self.node.access.check(
            &request,
            Permission::View,
            Target::Namespace(&request.get_ref().namespace),
        )?;
        let started = Instant::now();
        let namespace = request.into_inner().namespace;
        let result = validate_namespace_name(&namespace)
            .map_err(ShardError::from)
            .and_then(|()| Ok(self.node.machine.presence(&namespace)?))
            .map(|found| pb::NamespacePresenceResponse {
                node_id: self.node.id(),
                shard: self.node.config.node.shard.clone(),
                region: self.node.config.node.region.clone(),
                record: found.record,
                keys: found.keys,
                change_log_entries: found.changes,
                lost_writes: found.lost,
                bytes: found.bytes,
            });
        finish(
            &self.node.metrics,
            "NamespacePresence",
            None,
            started,
            result,
        )
    }

    type ExportNamespaceStream = ExportStream;

    async fn export_namespace(
        &self,
        request: Request<pb::ExportNamespaceRequest>,
    ) -> Result<Response<Self::ExportNamespaceStream>, Status> {
        // An export is every byte of the namespace.
        self.node.access.check(
            &request,
            Permission::Admin,
            Target::Namespace(&request.get_ref().namespace),
        )?;
        let started = Instant::now();
        let result = self.export(request.into_inner()).await;
        finish(&self.node.metrics, "ExportNamespace", None, started, result)
    }

    async fn import_namespace(
        &self,
        request: Request<Streaming<pb::ExportChunk>>,
    ) -> Result<Response<pb::ImportNamespaceResponse>, Status> {
        // Decided before a byte of the stream is read; the namespace's name
        // is in the stream, so a standalone shard checks the cluster scope.
        self.placement_only(&request, "Admin.ImportNamespace", "")?;
        let started = Instant::now();
        let result = self.import(request.into_inner()).await;
        finish(&self.node.metrics, "ImportNamespace", None, started, result)
    }

    async fn check_integrity(
        &self,
        request: Request<pb::CheckIntegrityRequest>,
    ) -> Result<Response<pb::CheckIntegrityResponse>, Status> {
        self.node.access.check(
            &request,
            Permission::View,
            Target::Namespace(&request.get_ref().namespace),
        )?;
        let started = Instant::now();
        let result = AdminService::check_integrity(self, request.into_inner()).await;
        finish(&self.node.metrics, "CheckIntegrity", None, started, result)
    }

    async fn rekey(
        &self,
        request: Request<pb::RekeyRequest>,
    ) -> Result<Response<pb::RekeyStatus>, Status> {
        self.node
            .access
            .check(&request, Permission::Admin, Target::Cluster)?;
        let started = Instant::now();
        let result = match self.node.raft.rekey() {
            Ok(_) => Ok(self.rekey_status()),
            Err(meridian_raft::RaftNodeError::Refused(why)) => Err(ShardError::NotApplicable(why)),
            Err(err) => Err(ShardError::Raft(err.to_string())),
        };
        finish(&self.node.metrics, "Rekey", None, started, result)
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        self.placement_only(&request, "Admin.Backup", &request.get_ref().namespace)?;
        let started = Instant::now();
        let result = crate::backup::write(&self.node, request.into_inner()).await;
        finish(&self.node.metrics, "Backup", None, started, result)
    }

    async fn validate_backup(
        &self,
        request: Request<pb::ValidateBackupRequest>,
    ) -> Result<Response<pb::BackupValidation>, Status> {
        self.placement_only(
            &request,
            "Admin.ValidateBackup",
            &request.get_ref().namespace,
        )?;
        let started = Instant::now();
        let result = crate::backup::validate(&self.node, request.into_inner()).await;
        finish(&self.node.metrics, "ValidateBackup", None, started, result)
    }

    async fn hold_changes(
        &self,
        request: Request<pb::HoldChangesRequest>,
    ) -> Result<Response<pb::HoldChangesResponse>, Status> {
        self.placement_only(&request, "Admin.HoldChanges", &request.get_ref().namespace)?;
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            validate_namespace_name(&request.namespace)?;
            let command = Command::HoldChanges {
                namespace: request.namespace,
                release_through: request.release.then_some(request.release_through),
            };
            match self.node.propose(command).await? {
                CommandResult::Held { hold, change_seq } => Ok(pb::HoldChangesResponse {
                    node_id: self.node.id(),
                    hold,
                    change_seq,
                }),
                CommandResult::Rejected(rejection) => Err(rejection.into()),
                other => Err(unexpected(other)),
            }
        }
        .await;
        finish(&self.node.metrics, "HoldChanges", None, started, result)
    }

    async fn delete_backup(
        &self,
        request: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::DeleteBackupResponse>, Status> {
        self.placement_only(&request, "Admin.DeleteBackup", &request.get_ref().namespace)?;
        let started = Instant::now();
        let result = crate::backup::delete(&self.node, request.into_inner()).await;
        finish(&self.node.metrics, "DeleteBackup", None, started, result)
    }

    type RestoreStream = crate::restore::RestoreStream;

    async fn restore(
        &self,
        request: Request<pb::RestoreRequest>,
    ) -> Result<Response<Self::RestoreStream>, Status> {
        self.placement_only(&request, "Admin.Restore", &request.get_ref().namespace)?;
        let started = Instant::now();
        let result = crate::restore::start(self.node.clone(), request.into_inner()).await;
        finish(&self.node.metrics, "Restore", None, started, result)
    }

    async fn get_rekey_status(
        &self,
        request: Request<pb::GetRekeyStatusRequest>,
    ) -> Result<Response<pb::RekeyStatus>, Status> {
        self.node
            .access
            .check(&request, Permission::View, Target::Cluster)?;
        let started = Instant::now();
        finish(
            &self.node.metrics,
            "GetRekeyStatus",
            None,
            started,
            Ok(self.rekey_status()),
        )
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.node
            .access
            .check(&request, Permission::View, Target::Cluster)?;
        let started = Instant::now();
        finish(
            &self.node.metrics,
            "ClusterStatus",
            None,
            started,
            Ok(self.cluster_status()),
        )
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        self.node
            .access
            .check(&request, Permission::Admin, Target::Cluster)?;
        let started = Instant::now();
        let result = AdminService::add_node(self, request.into_inner()).await;
        finish(&self.node.metrics, "AddNode", None, started, result)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.node
            .access
            .check(&request, Permission::Admin, Target::Cluster)?;
        let started = Instant::now();
        let result = AdminService::remove_node(self, request.into_inner()).await;
        finish(&self.node.metrics, "RemoveNode", None, started, result)
    }
}
