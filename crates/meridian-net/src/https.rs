//! Serving an HTTP router (`/metrics`, `/health/*`, the admin API) over mutual
//! TLS, or in plain text when TLS is off.

use crate::NetError;
use crate::tls::TlsMaterial;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A slow or silent client gets this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves: HTTPS requiring a client
/// certificate from the cluster CA when `tls` is given, else plain HTTP.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<&TlsMaterial>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NetError> {
    match tls {
        None => axum::serve(
            listener,
            app.into_make_service_with_connect_info::<HttpPeer>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(NetError::Listen),
        Some(tls) => {
            let listener = TlsListener::new(listener, tls)?;
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<HttpPeer>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(NetError::Listen)
        }
    }
}

/// Who is on the other end of an HTTP connection (an axum `ConnectInfo`):
/// handlers read the caller's certificate from it.
#[derive(Debug, Clone)]
pub struct HttpPeer {
    /// The remote address.
    pub address: SocketAddr,
    /// `None` in plain text; over TLS, the client's certificate (DER) if it
    /// presented one.
    pub tls: Option<Option<Vec<u8>>>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>>
    for HttpPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Self {
            address: *stream.remote_addr(),
            tls: None,
        }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for HttpPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let certificate = stream
            .io()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.as_ref().to_vec());
        Self {
            address: *stream.remote_addr(),
            tls: Some(certificate),
        }
    }
}

/// A listener whose connections have completed a TLS handshake. Handshakes run
/// in their own tasks so one slow client cannot hold up the others.
struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, tls: &TlsMaterial) -> Result<Self, NetError> {
        let local = listener.local_addr().map_err(NetError::Listen)?;
        let acceptor = TlsAcceptor::from(tls.rustls_server_config()?);
        let (sender, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(async move {
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
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake refused")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
