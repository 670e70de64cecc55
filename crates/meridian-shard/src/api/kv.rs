//! The `meridian.v1.Kv` service of a shard node.

use super::{convert, finish};
use crate::command::{Command, CommandResult, Rejection};
use crate::error::ShardError;
use crate::keys;
use crate::limits::LimitError;
use crate::node::ShardNode;
use meridian_access::{Permission, Target};
use meridian_proto::v1 as pb;
use meridian_proto::v1::kv_server::Kv;
use meridian_replication::crdt::{KeyState, KeyType, Op};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// Serves key-value calls from one shard node.
pub struct KvService {
    node: Arc<ShardNode>,
}

impl KvService {
    /// A service over `node`.
    pub fn new(node: Arc<ShardNode>) -> Self {
        Self { node }
    }

    /// Decides (by the pushed access policy) whether the caller may `needs`
    /// on `namespace`.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        namespace: &str,
        needs: &[Permission],
    ) -> Result<(), Status> {
        for need in needs {
            self.node
                .access
                .check(request, *need, Target::Namespace(namespace))?;
        }
        Ok(())
    }

    fn require_namespace(&self, namespace: &str) -> Result<(), ShardError> {
        convert::namespace(namespace)?;
        if self.node.machine.namespace(namespace).is_none() {
            return Err(crate::command::Rejection::NamespaceNotFound {
                name: namespace.to_string(),
            }
            .into());
        }
        Ok(())
    }

    async fn set_update(
        &self,
        request: Request<pb::SetUpdateRequest>,
        add: bool,
    ) -> Result<Response<pb::SetUpdateResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace, &[Permission::Write])?;
        let started = Instant::now();
        let request = request.into_inner();
        let (op, call) = if add {
            (Op::SetAdd(request.member), "SetAdd")
        } else {
            (Op::SetRemove(request.member), "SetRemove")
        };
        let result = async {
            self.typed_write(&request.namespace, request.key, op, call)
                .await?;
            Ok(pb::SetUpdateResponse {
                header: Some(self.node.header()),
                session_token: self.node.session_token(&request.namespace),
            })
        }
        .await;
        let metrics = &self.node.metrics;
        finish(metrics, call, Some(&metrics.write_seconds), started, result)
    }

    async fn get(&self, request: pb::GetRequest) -> Result<pb::GetResponse, ShardError> {
        convert::namespace(&request.namespace)?;
        self.node.config.limits.check_key(&request.key)?;
        let admitted = self
            .node
            .read_gate(&request.namespace, request.read.as_ref())
            .await?;
        self.require_namespace(&request.namespace)?;
        // The token first: what is read below holds at least that much.
        let session_token = self.node.session_token(&request.namespace);
        let kv = if admitted == crate::node::ReadAdmission::Peer {
            match self.node.key_state(&request.namespace, &request.key)? {
                None => None,
                Some(state) => {
                    self.expect_type(
                        &request.namespace,
                        &request.key,
                        &state,
                        KeyType::Register,
                        "Get",
                    )?;
                    state.value().map(|value| pb::KeyValue {
                        key: request.key.clone(),
                        value: value.to_vec(),
                        version: state.version(),
                    })
                }
            }
        } else {
            self.node
                .machine
                .get(&request.namespace, &request.key)?
                .map(|(version, value)| pb::KeyValue {
                    key: request.key,
                    value,
                    version,
                })
        };
        self.node
            .confirm_read(&request.namespace, request.read.as_ref(), admitted)
            .await?;
        Ok(pb::GetResponse {
            header: Some(self.node.header()),
            kv,
            session_token,
        })
    }

    /// Refuses a call of the wrong type for an active-active key, naming the
    /// key's type and the calls that read or write it.
    fn expect_type(
        &self,
        namespace: &str,
        key: &[u8],
        state: &KeyState,
        wanted: KeyType,
        call: &str,
    ) -> Result<(), ShardError> {
        match state.key_type() {
            Some(actual) if actual != wanted => Err(Rejection::KeyType {
                name: namespace.to_string(),
                key: String::from_utf8_lossy(key).into_owned(),
                why: format!(
                    "the key is a {actual} (its type is fixed by its first write); {call} is for a {wanted} — use {}",
                    match actual {
                        KeyType::Register => "Get, Put or Delete",
                        KeyType::Counter => "GetCounter or Increment",
                        KeyType::Set => "SetMembers, SetAdd or SetRemove",
                    }
                ),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// An active-active write; refused on other namespaces, naming the rule.
    async fn typed_write(
        &self,
        namespace: &str,
        key: Vec<u8>,
        op: Op,
        operation: &str,
    ) -> Result<crate::command::ActiveOutcome, ShardError> {
        convert::namespace(namespace)?;
        self.node.config.limits.check_key(&key)?;
        if let Op::SetAdd(member) | Op::SetRemove(member) = &op {
            self.node.config.limits.check_value(member)?;
        }
        if !self.node.is_peer(namespace) {
            self.require_namespace(namespace)?;
            return Err(Rejection::NotActiveActive {
                name: namespace.to_string(),
                operation: operation.to_string(),
            }
            .into());
        }
        self.node.active_write(namespace, key, op).await
    }

    /// A typed read of an active-active key: the gate, then its state.
    async fn typed_read(
        &self,
        namespace: &str,
        key: &[u8],
        read: Option<&pb::ReadOptions>,
        (wanted, operation): (KeyType, &str),
    ) -> Result<(Option<KeyState>, Vec<u8>), ShardError> {
        convert::namespace(namespace)?;
        self.node.config.limits.check_key(key)?;
        self.require_namespace(namespace)?;
        if !self.node.is_peer(namespace) {
            return Err(Rejection::NotActiveActive {
                name: namespace.to_string(),
                operation: operation.to_string(),
            }
            .into());
        }
        self.node.peer_read_gate(namespace, read).await?;
        let token = self.node.session_token(namespace);
        let state = self.node.key_state(namespace, key)?;
        if let Some(state) = &state {
            self.expect_type(namespace, key, state, wanted, operation)?;
        }
        Ok((state, token))
    }

    async fn put(&self, request: pb::PutRequest) -> Result<pb::PutResponse, ShardError> {
        convert::namespace(&request.namespace)?;
        let limits = &self.node.config.limits;
        limits.check_key(&request.key)?;
        limits.check_value(&request.value)?;
        if self.node.is_peer(&request.namespace) {
            let outcome = self
                .node
                .active_write(
                    &request.namespace,
                    request.key,
                    Op::Put(Some(request.value)),
                )
                .await?;
            return Ok(pb::PutResponse {
                header: Some(self.node.header()),
                version: outcome.version,
                previous_version: outcome.previous_version,
                session_token: self.node.session_token(&request.namespace),
            });
        }
        // Existence is decided by the state machine when the write applies: a
        // follower, or a leader still applying its predecessor's entries, may not
        // have seen the namespace yet.
        let namespace = request.namespace.clone();
        let result = self
            .node
            .propose(Command::Put {
                namespace: request.namespace,
                key: request.key,
                value: request.value,
            })
            .await?;
        match result {
            CommandResult::Put(outcome) => Ok(pb::PutResponse {
                session_token: self.node.session_token(&namespace),
                ..convert::put_response(self.node.header(), outcome)
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(&self, request: pb::DeleteRequest) -> Result<pb::DeleteResponse, ShardError> {
        convert::namespace(&request.namespace)?;
        self.node.config.limits.check_key(&request.key)?;
        if self.node.is_peer(&request.namespace) {
            // A delete is a register write of "absent" (kept, so it wins
            // where it should).
            let existed = self
                .node
                .key_state(&request.namespace, &request.key)?
                .is_some_and(|state| state.value().is_some());
            let outcome = self
                .node
                .active_write(&request.namespace, request.key, Op::Put(None))
                .await?;
            return Ok(pb::DeleteResponse {
                header: Some(self.node.header()),
                deleted: existed,
                previous_version: outcome.previous_version,
                session_token: self.node.session_token(&request.namespace),
            });
        }
        // Existence is decided by the state machine when the write applies: a
        // follower, or a leader still applying its predecessor's entries, may not
        // have seen the namespace yet.
        let namespace = request.namespace.clone();
        let result = self
            .node
            .propose(Command::Delete {
                namespace: request.namespace,
                key: request.key,
            })
            .await?;
        match result {
            CommandResult::Delete(outcome) => Ok(pb::DeleteResponse {
                session_token: self.node.session_token(&namespace),
                ..convert::delete_response(self.node.header(), outcome)
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn scan(&self, request: pb::ScanRequest) -> Result<pb::ScanResponse, ShardError> {
        convert::namespace(&request.namespace)?;
        let limits = &self.node.config.limits;
        let page = limits.scan_page(request.limit)?;
        let (mut start, end) = if request.prefix.is_empty() {
            let end = (!request.end.is_empty()).then_some(request.end);
            (request.start, end)
        } else {
            if !request.start.is_empty() || !request.end.is_empty() {
                return Err(LimitError::Conflict {
                    message: "scan takes either a prefix or a start/end range, not both".into(),
                }
                .into());
            }
            let end = keys::prefix_end(&request.prefix);
            (request.prefix, end)
        };
        for bound in std::iter::once(&start).chain(end.as_ref()) {
            if bound.len() > limits.max_key_bytes {
                return Err(LimitError::KeyTooLarge {
                    size: bound.len(),
                    limit: limits.max_key_bytes,
                }
                .into());
            }
        }
        if !request.continuation_token.is_empty() {
            // The token is the next key to return; it must lie inside the range.
            if request.continuation_token < start
                || end
                    .as_ref()
                    .is_some_and(|end| &request.continuation_token >= end)
            {
                return Err(LimitError::Conflict {
                    message: "continuation_token does not belong to this scan's range".into(),
                }
                .into());
            }
            start = request.continuation_token;
        }
        let admitted = self
            .node
            .read_gate(&request.namespace, request.read.as_ref())
            .await?;
        self.require_namespace(&request.namespace)?;
        let (entries, next) =
            self.node
                .machine
                .scan(&request.namespace, &start, end.as_deref(), page)?;
        self.node
            .confirm_read(&request.namespace, request.read.as_ref(), admitted)
            .await?;
        let peer = admitted == crate::node::ReadAdmission::Peer;
        let mut kvs = Vec::with_capacity(entries.len());
        for (key, version, value) in entries {
            if !peer {
                kvs.push(pb::KeyValue {
                    key,
                    value,
                    version,
                });
                continue;
            }
            // An active-active scan lists registers with a value; deletes
            // (kept as states) and counters and sets, which have their own
            // reads, are left out.
            let state = crate::state_machine::decode_state(&value)?;
            if let (Some(KeyType::Register), Some(value)) = (state.key_type(), state.value()) {
                kvs.push(pb::KeyValue {
                    key,
                    value: value.to_vec(),
                    version: state.version(),
                });
            }
        }
        Ok(pb::ScanResponse {
            header: Some(self.node.header()),
            kvs,
            continuation_token: next.unwrap_or_default(),
        })
    }

    async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, ShardError> {
        convert::namespace(&request.namespace)?;
        let limits = &self.node.config.limits;
        let ops = request.compare.len() + request.success.len().max(request.failure.len());
        limits.check_batch(ops)?;
        let namespace = request.namespace;
        let compares = request
            .compare
            .into_iter()
            .map(|c| convert::compare(limits, c))
            .collect::<Result<Vec<_>, _>>()?;
        let success = request
            .success
            .into_iter()
            .map(|op| convert::write_op(limits, &namespace, op))
            .collect::<Result<Vec<_>, _>>()?;
        let failure = request
            .failure
            .into_iter()
            .map(|op| convert::write_op(limits, &namespace, op))
            .collect::<Result<Vec<_>, _>>()?;
        let result = self
            .node
            .propose(Command::Txn {
                namespace,
                compares,
                success,
                failure,
            })
            .await?;
        match result {
            CommandResult::Txn {
                succeeded,
                outcomes,
            } => {
                let header = self.node.header();
                Ok(pb::TxnResponse {
                    header: Some(header),
                    succeeded,
                    results: outcomes
                        .into_iter()
                        .map(|outcome| convert::write_outcome(&header, outcome))
                        .collect(),
                })
            }
            other => Err(unexpected(other)),
        }
    }
}

/// A result of the wrong kind for the command: a bug, reported rather than
/// panicking.
pub(crate) fn unexpected(result: CommandResult) -> ShardError {
    ShardError::Storage(std::io::Error::other(format!(
        "state machine returned an unexpected result: {result:?}"
    )))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace, &[Permission::Read])?;
        let started = Instant::now();
        let result = KvService::get(self, request.into_inner()).await;
        let metrics = &self.node.metrics;
        finish(metrics, "Get", Some(&metrics.read_seconds), started, result)
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace, &[Permission::Write])?;
        let started = Instant::now();
        let result = KvService::put(self, request.into_inner()).await;
        let metrics = &self.node.metrics;
        finish(
            metrics,
            "Put",
            Some(&metrics.write_seconds),
            started,
            result,
        )
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace, &[Permission::Write])?;
        let started = Instant::now();
        let result = KvService::delete(self, request.into_inner()).await;
        let metrics = &self.node.metrics;
        finish(
            metrics,
            "Delete",
            Some(&metrics.write_seconds),
            started,
            result,
        )
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace, &[Permission::Read])?;
        let started = Instant::now();
        let result = KvService::scan(self, request.into_inner()).await;
        let metrics = &self.node.metrics;
        finish(
            metrics,
            "Scan",
            Some(&metrics.read_seconds),
            started,
            result,
        )
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        self.authorize(
            &request,
            &request.get_ref().namespace,
            &[Permission::Read, Permission::Write],
        )?;
        let started = Instant::now();
        let result = KvService::txn(self, request.into_inner()).await;
        let metrics = &self.node.metrics;
        finish(
            metrics,
            "Txn",
            Some(&metrics.write_seconds),
            started,
            result,
        )
    }

    async fn increment(
        &self,
        request: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace, &[Permission::Write])?;
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            let outcome = self
                .typed_write(
                    &request.namespace,
                    request.key,
                    Op::Increment(request.delta),
                    "Increment",
                )
                .await?;
            Ok(pb::IncrementResponse {
                header: Some(self.node.header()),
                value: outcome.counter.unwrap_or(0),
                session_token: self.node.session_token(&request.namespace),
            })
        }
        .await;
        let metrics = &self.node.metrics;
        finish(
            metrics,
            "Increment",
            Some(&metrics.write_seconds),
            started,
            result,
        )
    }

    async fn get_counter(
        &self,
        request: Request<pb::GetCounterRequest>,
    ) -> Result<Response<pb::GetCounterResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace, &[Permission::Read])?;
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            let (state, session_token) = self
                .typed_read(
                    &request.namespace,
                    &request.key,
                    request.read.as_ref(),
                    (KeyType::Counter, "GetCounter"),
                )
                .await?;
            let mut value = 0;
            if let Some(state) = &state {
                let total = state.counter_value().unwrap_or(0);
                value = i64::try_from(total).map_err(|_| Rejection::KeyType {
                    name: request.namespace.clone(),
                    key: String::from_utf8_lossy(&request.key).into_owned(),
                    why: format!(
                        "the counter's merged value {total} is outside the signed 64-bit range"
                    ),
                })?;
            }
            Ok(pb::GetCounterResponse {
                header: Some(self.node.header()),
                value,
                exists: state.is_some(),
                session_token,
            })
        }
        .await;
        let metrics = &self.node.metrics;
        finish(
            metrics,
            "GetCounter",
            Some(&metrics.read_seconds),
            started,
            result,
        )
    }

    async fn set_add(
        &self,
        request: Request<pb::SetUpdateRequest>,
    ) -> Result<Response<pb::SetUpdateResponse>, Status> {
        self.set_update(request, true).await
    }

    async fn set_remove(
        &self,
        request: Request<pb::SetUpdateRequest>,
    ) -> Result<Response<pb::SetUpdateResponse>, Status> {
        self.set_update(request, false).await
    }

    async fn set_members(
        &self,
        request: Request<pb::SetMembersRequest>,
    ) -> Result<Response<pb::SetMembersResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace, &[Permission::Read])?;
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            let (state, session_token) = self
                .typed_read(
                    &request.namespace,
                    &request.key,
                    request.read.as_ref(),
                    (KeyType::Set, "SetMembers"),
                )
                .await?;
            let mut members = Vec::new();
            if let Some(state) = &state {
                members = state
                    .members()
                    .unwrap_or_default()
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect();
            }
            Ok(pb::SetMembersResponse {
                header: Some(self.node.header()),
                members,
                exists: state.is_some(),
                session_token,
            })
        }
        .await;
        let metrics = &self.node.metrics;
        finish(
            metrics,
            "SetMembers",
            Some(&metrics.read_seconds),
            started,
            result,
        )
    }
}
