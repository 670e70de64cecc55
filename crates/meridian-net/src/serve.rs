//! What every Meridian server does the same way: bind its listeners, build a
//! gRPC server with the process's TLS, accept without Nagle, and keep the
//! standard health service in line with its own idea of readiness.

use crate::{NetError, Transport};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;

/// How long calls in flight get to finish once a server begins to shut down
/// (SIGTERM): a stopping process exits within about a second even when peers
/// keep connections open, which would otherwise hold a graceful shutdown.
pub const DRAIN_DEADLINE: Duration = Duration::from_millis(800);

/// Waits for the serving tasks to finish their calls in flight (they stopped
/// accepting when shutdown began), together and at most `deadline`; then
/// cuts off whatever still runs.
pub async fn drain(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
    deadline: Duration,
) {
    let tasks: Vec<_> = tasks.into_iter().collect();
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let all = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(deadline, all).await.is_err() {
        tracing::info!(
            deadline_ms = deadline.as_millis() as u64,
            "calls still in flight at the drain deadline were cut off"
        );
        for abort in aborts {
            abort.abort();
        }
    }
}

/// Runs a server's serving future as a task, logging its failure (`what`:
/// "gRPC", "HTTP"); the handle goes to [`drain`] at shutdown.
pub fn spawn_serving<E: std::fmt::Display>(
    what: &'static str,
    serving: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(err) = serving.await {
            tracing::error!(error = %err, "{what} server failed");
        }
    })
}

/// Binds `address`, naming it in the error.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, NetError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NetError::Bind { address, source })
}

/// A gRPC server builder with the settings every Meridian server uses. TLS is
/// not the builder's: connections come from [`incoming`], which makes the
/// handshakes with the process's current certificate.
pub fn grpc_server() -> Server {
    Server::builder().http2_keepalive_interval(Some(Duration::from_secs(10)))
}

/// Accepted gRPC connections on `listener`: TLS (HTTP/2) with `transport`'s
/// credentials when TLS is on, asking clients for certificates as `clients`
/// says; plain TCP otherwise. Nagle's algorithm is off on all of them.
pub fn incoming(
    listener: TcpListener,
    transport: &Transport,
    clients: crate::credentials::ClientCertificates,
) -> Result<crate::accept::Acceptor, NetError> {
    crate::accept::Acceptor::new(listener, transport.grpc_tls(clients)?)
}

/// Keeps `grpc.health.v1` in line with `is_ready` for the overall status ("")
/// and `service`, until `stop` turns true. Readiness is polled because it
/// depends on several things (leader, registration, catch-up) that change
/// without one event to wait on.
pub async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    service: &'static str,
    is_ready: impl Fn() -> bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let ready = is_ready();
        if last != Some(ready) {
            let status = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter.set_service_status(service, status).await;
            last = Some(ready);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}
