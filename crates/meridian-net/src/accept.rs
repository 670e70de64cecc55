//! Accepting connections for every server, gRPC and HTTP alike: plain TCP,
//! or TLS with the process's current certificate ([`crate::credentials`]).
//! Handshakes run in their own tasks (with a deadline), so one slow client
//! cannot hold up the others. Each connection carries a [`Peer`]: its address
//! and the client certificate the handshake verified, which is how servers
//! learn who calls (`meridian_net::peers`, `meridian-access`).

use crate::NetError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A slow or silent client gets this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection (a request extension on gRPC, a
/// `ConnectInfo` on HTTP). Cheap to clone: tonic clones it into every
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The remote address.
    pub address: SocketAddr,
    /// `None` in plain text; over TLS, what the client certificate the
    /// handshake verified says (read once per connection, not per call).
    pub tls: Option<Arc<ClientCertificate>>,
}

/// The client certificate of a TLS connection, as far as identities go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertificate {
    /// The client presented none.
    Absent,
    /// It carries this identity.
    Identified(crate::Identity),
    /// It carries no usable identity (why).
    Unusable(String),
}

impl ClientCertificate {
    /// What the certificate `der` (if any) says.
    pub fn read(der: Option<&[u8]>) -> Self {
        match der {
            None => ClientCertificate::Absent,
            Some(der) => match crate::Identity::from_certificate(der) {
                Ok(identity) => ClientCertificate::Identified(identity),
                Err(err) => ClientCertificate::Unusable(err.to_string()),
            },
        }
    }
}

/// An accepted connection.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream, SocketAddr),
    /// TLS, handshake done; its peer read once.
    Tls(Box<TlsStream<TcpStream>>, Peer),
}

impl Peer {
    /// A peer on a TLS connection that presented `certificate` (DER).
    pub fn over_tls(address: SocketAddr, certificate: Option<&[u8]>) -> Self {
        Self {
            address,
            tls: Some(Arc::new(ClientCertificate::read(certificate))),
        }
    }
}

impl Conn {
    /// Who is on the other end.
    pub fn peer(&self) -> Peer {
        match self {
            Conn::Plain(_, address) => Peer {
                address: *address,
                tls: None,
            },
            Conn::Tls(_, peer) => peer.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_read(cx, buf),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_write(cx, buf),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(stream, _) => stream.is_write_vectored(),
            Conn::Tls(stream, _) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_flush(cx),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_shutdown(cx),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer()
    }
}

/// Accepted connections of one listener, as a stream (for tonic) and as an
/// axum listener.
pub struct Acceptor {
    local: SocketAddr,
    ready: mpsc::Receiver<Conn>,
    task: tokio::task::JoinHandle<()>,
}

impl Acceptor {
    /// Accepts on `listener`: TLS with `tls` (its certificate resolver
    /// decides which certificate each handshake presents), else plain TCP.
    /// Nagle's algorithm is off on every connection: small responses must
    /// not wait for the peer's delayed ACK (~40 ms per request/response).
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, NetError> {
        let local = listener.local_addr().map_err(NetError::Listen)?;
        let acceptor = tls.map(TlsAcceptor::from);
        let (sender, ready) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some(acceptor) = acceptor.clone() else {
                    if sender.send(Conn::Plain(stream, peer)).await.is_err() {
                        return;
                    }
                    continue;
                };
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .map(|cert| cert.as_ref());
                            let peer = Peer::over_tls(peer, certificate);
                            let _ = sender.send(Conn::Tls(Box::new(stream), peer)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake refused")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl tokio_stream::Stream for Acceptor {
    type Item = Result<Conn, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

impl axum::serve::Listener for Acceptor {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => {
                let address = conn.peer().address;
                (conn, address)
            }
            // The accepting task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Acceptor>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Acceptor>) -> Self {
        stream.io().peer()
    }
}
