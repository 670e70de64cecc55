//! Mutual TLS material: the `[network.tls]` section of every process and the
//! server and client configurations built from it.

use crate::NetError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name every Meridian certificate carries and every client checks. Peers
/// are dialed by IP address, often through a proxy, so the name proves "a member
/// of this cluster" rather than one host; the CA decides who that is.
pub const SERVER_NAME: &str = "meridian";

/// Where a process finds its TLS files (PEM).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate: peers must present a certificate it signed.
    pub ca: PathBuf,
    /// This process's certificate.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The conventional file names for certificate `name` in a directory made by
    /// [`crate::certs::init`]: `ca.pem`, `NAME.pem`, `NAME.key`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// When the certificate in [`TlsFiles::cert`] (its first, the leaf)
    /// stops being valid, in Unix seconds, read from the file now (so a
    /// rotated certificate shows at once). `None` if it cannot be read.
    pub fn certificate_expiry_unix(&self) -> Option<i64> {
        let pem = std::fs::read(&self.cert).ok()?;
        let certs = parse_certs(&pem, &self.cert.display().to_string()).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// Reads and checks the three files.
    pub fn load(&self) -> Result<TlsMaterial, NetError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| NetError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let material = TlsMaterial {
            ca: read(&self.ca)?,
            cert: read(&self.cert)?,
            key: read(&self.key)?,
        };
        // Parse now so a bad file is reported at start-up, naming the file.
        material.rustls_roots(&self.ca.display().to_string())?;
        parse_certs(&material.cert, &self.cert.display().to_string())?;
        parse_key(&material.key, &self.key.display().to_string())?;
        Ok(material)
    }
}

/// Loaded TLS files.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Server side for HTTP (`/metrics`, `/health/*`, the admin API): the same
    /// rule as gRPC, as a rustls configuration speaking HTTP/1.1.
    pub fn rustls_server_config(&self) -> Result<Arc<rustls::ServerConfig>, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.rustls_roots("ca")?);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| material("ca", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| material("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                parse_certs(&self.cert, "cert")?,
                parse_key(&self.key, "key")?,
            )
            .map_err(|e| material("cert/key", e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Client side as a rustls configuration (for HTTP clients such as the lab).
    pub fn rustls_client_config(&self) -> Result<Arc<rustls::ClientConfig>, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| material("protocol versions", e))?
            .with_root_certificates(self.rustls_roots("ca")?)
            .with_client_auth_cert(
                parse_certs(&self.cert, "cert")?,
                parse_key(&self.key, "key")?,
            )
            .map_err(|e| material("cert/key", e))?;
        Ok(Arc::new(config))
    }

    pub(crate) fn certs(
        &self,
    ) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, NetError> {
        parse_certs(&self.cert, "cert")
    }

    pub(crate) fn key(&self) -> Result<rustls::pki_types::PrivateKeyDer<'static>, NetError> {
        parse_key(&self.key, "key")
    }

    pub(crate) fn roots(&self) -> Result<rustls::RootCertStore, NetError> {
        self.rustls_roots("ca")
    }

    fn rustls_roots(&self, what: &str) -> Result<rustls::RootCertStore, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in parse_certs(&self.ca, what)? {
            roots.add(cert).map_err(|e| material(what, e))?;
        }
        Ok(roots)
    }
}

fn material(what: &str, reason: impl std::fmt::Display) -> NetError {
    NetError::Material {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_certs(
    pem: &[u8],
    what: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, NetError> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| material(what, e))?;
    if certs.is_empty() {
        return Err(material(what, "no PEM certificate found"));
    }
    Ok(certs)
}

fn parse_key(
    pem: &[u8],
    what: &str,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, NetError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).map_err(|e| material(what, e))
}
