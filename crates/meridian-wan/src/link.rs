//! One emulated link: `listen` → (one-way delay, partition) → `target`.

use crate::WanError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a link connects and how slow it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkSpec {
    /// Name, e.g. `us-east->eu-west:us-east-1`.
    pub name: String,
    /// Where the link listens (`127.0.0.1:0` picks a port).
    pub listen: SocketAddr,
    /// Where it forwards to.
    pub target: SocketAddr,
    /// Delay added to every byte in each direction.
    pub one_way_delay_ms: u64,
}

/// A link's state, as the control API reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkStatus {
    /// The link's name.
    pub name: String,
    /// The address it listens on.
    pub listen: SocketAddr,
    /// Where it forwards to.
    pub target: SocketAddr,
    /// One-way delay.
    pub one_way_delay_ms: u64,
    /// Whether traffic is currently cut.
    pub partitioned: bool,
    /// Connections accepted so far.
    pub connections: u64,
    /// Bytes forwarded so far (both directions).
    pub bytes: u64,
}

struct Shared {
    spec: LinkSpec,
    listen: SocketAddr,
    /// `true` while partitioned; pumps wait on it.
    partitioned: watch::Sender<bool>,
    connections: AtomicU64,
    bytes: AtomicU64,
    stopped: AtomicBool,
}

/// A running link. Dropping it stops the listener and every connection.
pub struct Link {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Binds the listener and starts forwarding.
    pub async fn start(spec: LinkSpec) -> Result<Self, WanError> {
        let listener = TcpListener::bind(spec.listen)
            .await
            .map_err(|source| WanError::Listen {
                address: spec.listen.to_string(),
                source,
            })?;
        let listen = listener.local_addr().map_err(|source| WanError::Listen {
            address: spec.listen.to_string(),
            source,
        })?;
        let (partitioned, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            spec,
            listen,
            partitioned,
            connections: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self { shared, task })
    }

    /// The address the link listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    /// Cuts (`true`) or restores (`false`) the link.
    pub fn set_partitioned(&self, partitioned: bool) {
        self.shared.partitioned.send_replace(partitioned);
    }

    /// Current state.
    pub fn status(&self) -> LinkStatus {
        LinkStatus {
            name: self.shared.spec.name.clone(),
            listen: self.shared.listen,
            target: self.shared.spec.target,
            one_way_delay_ms: self.shared.spec.one_way_delay_ms,
            partitioned: *self.shared.partitioned.borrow(),
            connections: self.shared.connections.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(inbound, shared.clone()));
    }
}

/// Waits while the link is partitioned. Returns false if the link stopped.
async fn wait_while_partitioned(shared: &Shared) -> bool {
    let mut state = shared.partitioned.subscribe();
    while *state.borrow_and_update() {
        if state.changed().await.is_err() {
            return false;
        }
    }
    !shared.stopped.load(Ordering::Relaxed)
}

async fn connection(inbound: TcpStream, shared: Arc<Shared>) {
    // A partitioned link accepts (the local kernel would) but cannot reach the
    // other side until healed.
    if !wait_while_partitioned(&shared).await {
        return;
    }
    let Ok(outbound) = TcpStream::connect(shared.spec.target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let delay = Duration::from_millis(shared.spec.one_way_delay_ms);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let forward = tokio::spawn(pump(in_read, out_write, delay, shared.clone()));
    let backward = tokio::spawn(pump(out_read, in_write, delay, shared.clone()));
    let _ = tokio::join!(forward, backward);
}

/// Copies one direction, delivering each chunk `delay` after it was read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    shared: Arc<Shared>,
) {
    // The queue between reader and writer is what lets many chunks be "in the
    // wire" at once; its bound caps the bytes in flight per direction.
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let writer_shared = shared.clone();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if !wait_while_partitioned(&writer_shared).await {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            writer_shared
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !wait_while_partitioned(&shared).await {
            break;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if sender
            .send((Instant::now() + delay, buffer[..read].to_vec()))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(sender);
    let _ = writer.await;
}
