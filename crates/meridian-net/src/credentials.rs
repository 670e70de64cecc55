//! A process's certificate and key as rustls uses them, reloaded from their
//! files when they change — certificate rotation without a restart. Every TLS
//! handshake (server and client side, gRPC and HTTP) asks [`Credentials`] for
//! the current pair; connections made before a reload keep the pair they
//! were made with until they close.

use crate::NetError;
use crate::tls::{TlsFiles, TlsMaterial};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// How often the files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Whether a server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Every client presents one from the cluster CA (nodes).
    Required,
    /// A client may come without one, to present an API token instead
    /// (control plane, gateways); one it does present must verify. Calls
    /// without either are refused by authorization, not by TLS.
    Optional,
}

/// Size and modification time of the certificate and key files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    cert: (SystemTime, u64),
    key: (SystemTime, u64),
}

fn stamp_of(files: &TlsFiles) -> Option<Stamp> {
    let of = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    Some(Stamp {
        cert: of(&files.cert)?,
        key: of(&files.key)?,
    })
}

/// The current certificate and key, the cluster CA, and where they came from.
pub struct Credentials {
    files: Option<TlsFiles>,
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// `None` for a client that only trusts the CA (it sends an API token).
    current: RwLock<Option<Arc<CertifiedKey>>>,
    stamp: Mutex<Option<Stamp>>,
    reloads: AtomicU64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Credentials")
            .field("files", &self.files)
            .field("reloads", &self.reloads.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn certified(material: &TlsMaterial, provider: &CryptoProvider) -> Result<CertifiedKey, NetError> {
    CertifiedKey::from_der(material.certs()?, material.key()?, provider).map_err(|e| {
        NetError::Material {
            what: "certificate and key".into(),
            reason: e.to_string(),
        }
    })
}

impl Credentials {
    /// Fixed credentials from loaded material (clients such as the CLI).
    pub fn from_material(material: &TlsMaterial) -> Result<Arc<Self>, NetError> {
        Self::build(material, None).map(Arc::new)
    }

    /// Credentials read from `files`, reloaded by [`Credentials::reload_if_changed`]
    /// (servers run [`watch`]).
    pub fn watching(files: &TlsFiles) -> Result<Arc<Self>, NetError> {
        // Stamp first: a change while loading is then seen at the next check.
        let stamp = stamp_of(files);
        let material = files.load()?;
        let mut credentials = Self::build(&material, Some(files.clone()))?;
        credentials.stamp = Mutex::new(stamp);
        Ok(Arc::new(credentials))
    }

    fn build(material: &TlsMaterial, files: Option<TlsFiles>) -> Result<Self, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(Self {
            files,
            roots: Arc::new(material.roots()?),
            current: RwLock::new(Some(Arc::new(certified(material, &provider)?))),
            provider,
            stamp: Mutex::new(None),
            reloads: AtomicU64::new(0),
        })
    }

    /// A client that trusts the cluster CA in `ca_pem` and has no certificate
    /// of its own (a tool that presents an API token instead).
    pub fn trusting(ca_pem: &[u8]) -> Result<Arc<Self>, NetError> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| material_error("ca", e))?;
            roots.add(cert).map_err(|e| material_error("ca", e))?;
        }
        if roots.is_empty() {
            return Err(material_error("ca", "no PEM certificate found"));
        }
        Ok(Arc::new(Self {
            files: None,
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            current: RwLock::new(None),
            stamp: Mutex::new(None),
            reloads: AtomicU64::new(0),
        }))
    }

    /// The certificate and key handshakes use now (`None`: CA only).
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times new files were taken in.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Takes in the certificate and key files if their size or modification
    /// time changed and they load and match; keeps the current pair
    /// otherwise (a half-written or mismatched pair is tried again at the
    /// next check). `Ok(true)` when a new pair is in use.
    pub fn reload_if_changed(&self) -> Result<bool, NetError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let now = stamp_of(files);
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_none() || now == *stamp {
            return Ok(false);
        }
        let material = files.load()?;
        let pair = certified(&material, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pair));
        *stamp = now;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// A rustls server configuration presenting the current certificate and
    /// verifying clients against the cluster CA.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        clients: ClientCertificates,
    ) -> Result<Arc<rustls::ServerConfig>, NetError> {
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        );
        let builder = match clients {
            ClientCertificates::Required => builder,
            ClientCertificates::Optional => builder.allow_unauthenticated(),
        };
        let verifier = builder.build().map_err(|e| material_error("ca", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| material_error("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Current(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A rustls client configuration presenting the current certificate and
    /// trusting only the cluster CA.
    pub fn client_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ClientConfig>, NetError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| material_error("protocol versions", e))?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(Arc::new(Current(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn material_error(what: &str, reason: impl std::fmt::Display) -> NetError {
    NetError::Material {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Hands rustls the current pair on every handshake.
#[derive(Debug)]
struct Current(Arc<Credentials>);

impl rustls::server::ResolvesServerCert for Current {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }
}

impl rustls::client::ResolvesClientCert for Current {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

/// Checks the files every [`RELOAD_CHECK`] until `stop` turns true, logging
/// each reload (and each pair that could not be taken in).
pub async fn watch(credentials: Arc<Credentials>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match credentials.reload_if_changed() {
            Ok(true) => tracing::info!(
                reloads = credentials.reloads(),
                "certificate files changed: new handshakes use the new certificate"
            ),
            Ok(false) => {}
            Err(err) => tracing::warn!(
                error = %err,
                "certificate files changed but cannot be used yet; keeping the current ones"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_CHECK) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn changed_files_are_taken_in_and_broken_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let node = Identity::parse("node/us-east/n1").unwrap();
        crate::certs::init(dir.path(), std::slice::from_ref(&node)).unwrap();
        let files = TlsFiles::in_dir(dir.path(), "n1");
        let credentials = Credentials::watching(&files).unwrap();
        let current = || credentials.current().unwrap().cert[0].clone();
        let first = current();
        assert!(!credentials.reload_if_changed().unwrap(), "nothing changed");

        // A broken key file (e.g. half written): the current pair stays.
        std::fs::write(&files.key, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        assert!(credentials.reload_if_changed().is_err());
        assert_eq!(current(), first);

        // The next certificate: taken in.
        crate::certs::issue(dir.path(), std::slice::from_ref(&node), true).unwrap();
        assert!(credentials.reload_if_changed().unwrap());
        assert_ne!(current(), first);
        assert_eq!(credentials.reloads(), 1);
    }
}
