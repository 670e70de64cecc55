//! How Meridian processes reach each other.
//!
//! - [`dial`]: the [`Dialer`] every outgoing gRPC connection is made with. It
//!   applies the process's *dial-via* table (the lab sends cross-region traffic
//!   through its WAN emulator by rewriting a peer's address to a proxy's) and its
//!   client TLS identity.
//! - [`tls`]: the `[network.tls]` files (cluster CA, certificate, key), loaded
//!   into the server and client configurations of mutual TLS.
//! - [`https`]: serving an HTTP router over the same mutual TLS.
//! - [`serve`]: listeners, the gRPC server builder and the health loop every
//!   Meridian server shares.
//! - [`certs`]: a development certificate authority for `meridian certs init`
//!   and the lab.
//! - [`coalesce`]: outgoing calls whose request is ready are sent in one HTTP/2
//!   frame (one write) instead of two.
//!
//! Mutual TLS means both sides prove themselves: servers present a certificate
//! signed by the cluster CA and require the same of every client, so a process
//! (or a user) without a certificate from that CA cannot call anything.

pub mod accept;
pub mod certs;
pub mod coalesce;
pub mod credentials;
pub mod dial;
pub mod https;
pub mod identity;
pub mod metrics_text;
pub mod peers;
pub mod reflection;
pub mod serve;
pub mod tls;
pub mod workers;

pub use dial::Dialer;
pub use identity::Identity;
pub use tls::{TlsFiles, TlsMaterial};

use std::path::PathBuf;

/// Errors of dialing, TLS set-up and certificate generation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An address that cannot be dialed.
    #[error("bad address {address:?}: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// PEM or certificate content is unusable.
    #[error("invalid TLS material in {what}: {reason}")]
    Material {
        /// Which file or item.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// An identity that is malformed, or a certificate without exactly one.
    #[error("identity {identity:?}: {reason}")]
    Identity {
        /// The identity (or where it came from).
        identity: String,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate certificate {name:?}: {reason}")]
    Generate {
        /// The certificate's name.
        name: String,
        /// The cause.
        reason: String,
    },
    /// A server stopped with an I/O error.
    #[error("cannot listen: {0}")]
    Listen(#[source] std::io::Error),
    /// A listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A process's transport settings, loaded once at start-up: its credentials
/// (if TLS is on; reloaded when the files change) and the dialer built from
/// them and the dial-via table.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// The certificate, key and CA; `None` means plain text.
    pub tls: Option<std::sync::Arc<credentials::Credentials>>,
    /// Dialer for every outgoing connection.
    pub dialer: Dialer,
}

impl Transport {
    /// Loads `tls` (failing with the file's name if one is unusable) and builds
    /// the dialer.
    pub fn load(
        tls: Option<&TlsFiles>,
        via: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, NetError> {
        let tls = tls.map(credentials::Credentials::watching).transpose()?;
        let dialer = Dialer::with_credentials(via.clone(), tls.clone())?;
        Ok(Self { tls, dialer })
    }

    /// The gRPC server's TLS configuration (HTTP/2), if TLS is on.
    pub fn grpc_tls(
        &self,
        clients: credentials::ClientCertificates,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, NetError> {
        self.tls
            .as_ref()
            .map(|c| c.server_config(&[b"h2"], clients))
            .transpose()
    }

    /// The HTTP server's TLS configuration (HTTP/1.1), if TLS is on.
    pub fn http_tls(
        &self,
        clients: credentials::ClientCertificates,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, NetError> {
        self.tls
            .as_ref()
            .map(|c| c.server_config(&[b"http/1.1"], clients))
            .transpose()
    }

    /// Reloads the certificate files when they change, as the worker
    /// `certificate-reloader` of `workers` (see [`credentials::watch`]);
    /// nothing to do in plain text.
    pub fn reload_certificates(&self, workers: &workers::Workers) {
        if let Some(credentials) = self.tls.clone() {
            // The worker ends with the registry's shutdown; the watch's own
            // stop signal is never needed.
            let (_keep, stop) = tokio::sync::watch::channel(false);
            workers.spawn("certificate-reloader", async move {
                let _keep = _keep;
                credentials::watch(credentials, stop).await;
            });
        }
    }
}
