//! Server side of the Raft transport: decodes peers' messages and hands them to
//! the local Raft instance.

use crate::network::PAYLOAD_FORMAT;
use crate::snapshot::SnapshotFile;
use crate::types::{MeridianRaft, SnapshotMeta, Vote};
use meridian_proto::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use meridian_proto::v1::{RaftPayload, SnapshotChunk};
use openraft::Snapshot;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The `RaftTransport` gRPC service of one node.
pub struct TransportService {
    raft: MeridianRaft,
    incoming_dir: PathBuf,
    next_incoming: AtomicU64,
    /// Who may call (by certificate identity).
    peers: meridian_net::peers::Peers,
    /// Keeps out callers that are not members of the group, when set.
    gate: Option<std::sync::Arc<crate::member_gate::MemberGate>>,
}

impl TransportService {
    /// A service feeding `raft`, answering only `peers` (and, with a `gate`,
    /// only the group's members among them); received snapshots are staged
    /// in `incoming_dir`.
    pub fn new(
        raft: MeridianRaft,
        incoming_dir: PathBuf,
        peers: meridian_net::peers::Peers,
        gate: Option<std::sync::Arc<crate::member_gate::MemberGate>>,
    ) -> Self {
        Self {
            raft,
            incoming_dir,
            next_incoming: AtomicU64::new(0),
            peers,
            gate,
        }
    }

    /// Refuses callers that are not among `peers`; returns the caller's
    /// identity for [`TransportService::admit_member`].
    fn admit<T>(&self, request: &Request<T>) -> Result<Option<meridian_net::Identity>, Status> {
        meridian_net::peers::check(request, &self.peers, "RaftTransport")?;
        Ok(meridian_net::peers::caller(request).and_then(Result::ok))
    }

    /// Refuses a caller that is not a member of the group (with a gate).
    async fn admit_member(&self, caller: Option<meridian_net::Identity>) -> Result<(), Status> {
        let (Some(gate), Some(caller)) = (&self.gate, caller) else {
            return Ok(());
        };
        let membership: Vec<String> = {
            use openraft::async_runtime::WatchReceiver;
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(_, node)| node.addr.clone())
                .collect()
        };
        gate.admit(&caller, membership).await.map_err(|refusal| {
            tracing::info!(%refusal, "raft call refused");
            Status::permission_denied(refusal)
        })
    }

    /// Wraps the service for a tonic router, with message limits large enough for
    /// batches of big entries.
    pub fn into_server(self) -> RaftTransportServer<Self> {
        RaftTransportServer::new(self)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, Status> {
    if payload.format != PAYLOAD_FORMAT {
        return Err(Status::invalid_argument(format!(
            "raft payload format {} is not supported (this node speaks {PAYLOAD_FORMAT})",
            payload.format
        )));
    }
    postcard::from_bytes(&payload.data)
        .map_err(|e| Status::invalid_argument(format!("malformed raft payload: {e}")))
}

fn encode_reply<T: Serialize>(message: &T) -> Result<RaftPayload, Status> {
    Ok(RaftPayload {
        format: PAYLOAD_FORMAT,
        data: postcard::to_stdvec(message)
            .map_err(|e| Status::internal(e.to_string()))?
            .into(),
        error: String::new(),
    })
}

fn answer<T: Serialize, E: std::fmt::Display>(
    result: Result<T, E>,
) -> Result<Response<RaftPayload>, Status> {
    let payload = match result {
        Ok(message) => RaftPayload {
            format: PAYLOAD_FORMAT,
            data: postcard::to_stdvec(&message)
                .map_err(|e| Status::internal(e.to_string()))?
                .into(),
            error: String::new(),
        },
        Err(err) => RaftPayload {
            format: PAYLOAD_FORMAT,
            data: Default::default(),
            error: err.to_string(),
        },
    };
    Ok(Response::new(payload))
}

/// Replies of a pipelined replication stream.
type StreamAppendReplies = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

#[tonic::async_trait]
impl RaftTransport for TransportService {
    type StreamAppendStream = StreamAppendReplies;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let caller = self.admit(&request)?;
        self.admit_member(caller).await?;
        // A malformed or failed item ends the request stream; the leader then
        // sees the reply stream end and starts a new one.
        let requests = request
            .into_inner()
            .map_while(|item| item.ok().and_then(|payload| decode(&payload).ok()));
        let replies = self.raft.stream_append(requests).map(|result| {
            let payload = match result {
                Ok(result) => encode_reply(&result)?,
                Err(fatal) => RaftPayload {
                    format: PAYLOAD_FORMAT,
                    data: Default::default(),
                    error: fatal.to_string(),
                },
            };
            Ok(payload)
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let caller = self.admit(&request)?;
        self.admit_member(caller).await?;
        let rpc = decode(request.get_ref())?;
        answer(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let caller = self.admit(&request)?;
        self.admit_member(caller).await?;
        let rpc = decode(request.get_ref())?;
        answer(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let caller = self.admit(&request)?;
        self.admit_member(caller).await?;
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let (vote, meta): (Vote, SnapshotMeta) = postcard::from_bytes(&first.meta)
            .map_err(|e| Status::invalid_argument(format!("malformed snapshot header: {e}")))?;
        let sequence = self.next_incoming.fetch_add(1, Ordering::Relaxed);
        std::fs::create_dir_all(&self.incoming_dir).map_err(|e| Status::internal(e.to_string()))?;
        let path = self
            .incoming_dir
            .join(format!("incoming-{}-{sequence}.part", std::process::id()));
        let result = async {
            let mut file =
                std::fs::File::create(&path).map_err(|e| Status::internal(e.to_string()))?;
            file.write_all(&first.data)
                .map_err(|e| Status::internal(e.to_string()))?;
            while let Some(chunk) = chunks.next().await {
                file.write_all(&chunk?.data)
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
            file.sync_all()
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok::<_, Status>(())
        }
        .await;
        if let Err(status) = result {
            let _ = std::fs::remove_file(&path);
            return Err(status);
        }
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotFile { path: path.clone() },
        };
        let outcome = self.raft.install_full_snapshot(vote, snapshot).await;
        // On success the state machine moved the file into place; anything left
        // here is a refused or failed transfer.
        let _ = std::fs::remove_file(&path);
        answer(outcome)
    }
}
