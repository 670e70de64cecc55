//! Client side of the Raft transport: openraft's messages, postcard-encoded, over
//! the `meridian.v1.RaftTransport` gRPC service.
//!
//! Connections are lazy and every call has the deadline openraft asks for, so a
//! dead or partitioned peer costs one timeout, never a hung replication stream.

use crate::append_window::AppendWindow;
use crate::snapshot::SnapshotFile;
use crate::types::{TypeConfig, Vote};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use meridian_proto::v1::raft_transport_client::RaftTransportClient;
use meridian_proto::v1::{RaftPayload, SnapshotChunk};
use openraft::alias::SnapshotOf;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::io::Read;
use std::time::Duration;
use tonic::transport::Channel;

/// Format of [`RaftPayload`] bodies; a receiver refuses formats it does not know.
pub const PAYLOAD_FORMAT: u32 = 1;

/// Bytes per snapshot chunk on the wire.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Builds one [`PeerClient`] per peer.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    /// How peers are dialed (TLS, WAN rewrites).
    pub dialer: meridian_net::Dialer,
    /// Unanswered log-append requests per stream (0: no cap).
    pub append_window: usize,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerClient::new(target, &node.addr, &self.dialer, self.append_window)
    }
}

/// Connection to one peer's Raft transport.
pub struct PeerClient {
    target: u64,
    client: Result<RaftTransportClient<Channel>, String>,
    append_window: usize,
}

impl PeerClient {
    fn new(
        target: u64,
        address: &str,
        dialer: &meridian_net::Dialer,
        append_window: usize,
    ) -> Self {
        let client = dialer
            .endpoint(address)
            .map(|endpoint| {
                let channel = dialer.lazy(
                    &endpoint
                        .connect_timeout(Duration::from_secs(1))
                        .tcp_nodelay(true)
                        // Detect a dead peer behind a still-open pipelined stream quickly.
                        .http2_keep_alive_interval(Duration::from_secs(1))
                        .keep_alive_timeout(Duration::from_secs(2))
                        .keep_alive_while_idle(true),
                );
                RaftTransportClient::new(channel)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20)
            })
            .map_err(|e| e.to_string());
        Self {
            target,
            client,
            append_window,
        }
    }

    fn client(&self) -> Result<RaftTransportClient<Channel>, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }
}

fn encode_payload<T: Serialize>(message: &T) -> Result<RaftPayload, RPCError<TypeConfig>> {
    let data =
        postcard::to_stdvec(message).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    Ok(RaftPayload {
        format: PAYLOAD_FORMAT,
        data: data.into(),
        error: String::new(),
    })
}

fn decode_payload<T: DeserializeOwned>(payload: RaftPayload) -> Result<T, RPCError<TypeConfig>> {
    if !payload.error.is_empty() {
        // The peer is up but could not handle the call (e.g. it is shutting down):
        // back off as if unreachable.
        return Err(RPCError::Unreachable(Unreachable::from_string(
            payload.error,
        )));
    }
    if payload.format != PAYLOAD_FORMAT {
        return Err(RPCError::Network(NetworkError::from_string(format!(
            "peer answered with payload format {}, expected {PAYLOAD_FORMAT}",
            payload.format
        ))));
    }
    postcard::from_bytes(&payload.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

fn status_to_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

async fn with_deadline<T>(
    deadline: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RPCError<TypeConfig>> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status_to_error(status)),
        Err(_) => Err(RPCError::Unreachable(Unreachable::from_string(format!(
            "no answer within {deadline:?}"
        )))),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let payload = encode_payload(&rpc)?;
        let response = with_deadline(option.hard_ttl(), client.append_entries(payload)).await?;
        decode_payload(response)
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            let window = AppendWindow::new(self.append_window);
            let outbound = window.requests(input).map(|request| {
                encode_payload(&request).unwrap_or_else(|e| RaftPayload {
                    format: PAYLOAD_FORMAT,
                    data: Default::default(),
                    error: format!("cannot encode append request: {e}"),
                })
            });
            let replies = with_deadline(option.hard_ttl(), client.stream_append(outbound)).await?;
            let replies = window.replies(replies).map(|reply| match reply {
                Ok(payload) => decode_payload::<StreamAppendResult<TypeConfig>>(payload),
                Err(status) => Err(status_to_error(status)),
            });
            let replies: BoxStream<'s, _> = Box::pin(replies);
            Ok(replies)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let payload = encode_payload(&rpc)?;
        let response = with_deadline(option.hard_ttl(), client.vote(payload)).await?;
        decode_payload(response)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let chunks = read_chunks(&vote, &snapshot)?;
        let target = self.target;
        tracing::info!(target, chunks = chunks.len(), "sending snapshot");
        let send = with_deadline(
            option.hard_ttl(),
            client.install_snapshot(tokio_stream::iter(chunks)),
        );
        tokio::pin!(cancel);
        tokio::select! {
            closed = &mut cancel => Err(StreamingError::Closed(closed)),
            response = send => Ok(decode_payload(response?)?),
        }
    }
}

/// Reads a snapshot file into transport chunks; the first one carries the vote
/// and metadata.
fn read_chunks(
    vote: &Vote,
    snapshot: &SnapshotOf<TypeConfig, SnapshotFile>,
) -> Result<Vec<SnapshotChunk>, StreamingError<TypeConfig>> {
    let unreachable = |e: std::io::Error| StreamingError::Unreachable(Unreachable::new(&e));
    let meta = postcard::to_stdvec(&(vote, &snapshot.meta))
        .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
    let mut file = std::fs::File::open(&snapshot.snapshot.path).map_err(unreachable)?;
    let mut chunks = vec![SnapshotChunk {
        meta,
        data: Default::default(),
    }];
    loop {
        let mut buffer = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let read = file.read(&mut buffer).map_err(unreachable)?;
        if read == 0 {
            break;
        }
        buffer.truncate(read);
        chunks.push(SnapshotChunk {
            meta: Default::default(),
            data: buffer.into(),
        });
    }
    Ok(chunks)
}
