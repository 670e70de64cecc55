//! The `meridian.v1.Kv` service of a shard node.

use super::{convert, finish};
use crate::command::{Command, CommandResult};
use crate::error::ShardError;
use crate::keys;
use crate::limits::LimitError;
use crate::node::ShardNode;
use meridian_access::{Permission, Target};
use meridian_proto::v1 as pb;
use meridian_proto::v1::kv_server::Kv;
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

    async fn get(&self, request: pb::GetRequest) -> Result<pb::GetResponse, ShardError> {
        convert::namespace(&request.namespace)?;
        self.node.config.limits.check_key(&request.key)?;
        let admitted = self
            .node
            .read_gate(&request.namespace, request.read.as_ref())
            .await?;
        self.require_namespace(&request.namespace)?;
        let kv = self
            .node
            .machine
            .get(&request.namespace, &request.key)?
            .map(|(version, value)| pb::KeyValue {
                key: request.key,
                value,
                version,
            });
        self.node
            .confirm_read(&request.namespace, request.read.as_ref(), admitted)
            .await?;
        Ok(pb::GetResponse {
            header: Some(self.node.header()),
            kv,
        })
    }

    async fn put(&self, request: pb::PutRequest) -> Result<pb::PutResponse, ShardError> {
        convert::namespace(&request.namespace)?;
        let limits = &self.node.config.limits;
        limits.check_key(&request.key)?;
        limits.check_value(&request.value)?;
        // Existence is decided by the state machine when the write applies: a
        // follower, or a leader still applying its predecessor's entries, may not
        // have seen the namespace yet.
        let result = self
            .node
            .propose(Command::Put {
                namespace: request.namespace,
                key: request.key,
                value: request.value,
            })
            .await?;
        match result {
            CommandResult::Put(outcome) => Ok(convert::put_response(self.node.header(), outcome)),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(&self, request: pb::DeleteRequest) -> Result<pb::DeleteResponse, ShardError> {
        convert::namespace(&request.namespace)?;
        self.node.config.limits.check_key(&request.key)?;
        // Existence is decided by the state machine when the write applies: a
        // follower, or a leader still applying its predecessor's entries, may not
        // have seen the namespace yet.
        let result = self
            .node
            .propose(Command::Delete {
                namespace: request.namespace,
                key: request.key,
            })
            .await?;
        match result {
            CommandResult::Delete(outcome) => {
                Ok(convert::delete_response(self.node.header(), outcome))
            }
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
        Ok(pb::ScanResponse {
            header: Some(self.node.header()),
            kvs: entries
                .into_iter()
                .map(|(key, version, value)| pb::KeyValue {
                    key,
                    value,
                    version,
                })
                .collect(),
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
}
