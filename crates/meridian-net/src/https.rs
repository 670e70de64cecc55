//! Serving an HTTP router (`/metrics`, `/health/*`, the admin API) over TLS
//! with the process's current certificate, or in plain text when TLS is off.
//! Handlers learn the caller from `ConnectInfo<Peer>`.

use crate::NetError;
use crate::accept::{Acceptor, Peer};
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `shutdown` resolves: HTTPS with `tls` (a
/// configuration from [`crate::credentials::Credentials::server_config`]
/// speaking HTTP/1.1), else plain HTTP.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NetError> {
    let acceptor = Acceptor::new(listener, tls)?;
    axum::serve(acceptor, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(NetError::Listen)
}
