//! The [`Dialer`]: one place that turns a peer's advertised address into a gRPC
//! endpoint.
//!
//! Processes always name peers by their *advertised* address (that is what
//! membership, routes and leader redirects carry). Only at the moment of
//! connecting does the dialer look the address up in its dial-via table and, if
//! present, connect to the listed address instead. The lab uses this to put its
//! WAN emulator between regions without any process knowing it is there: a node
//! in `us-east` dials `eu-west-1`'s advertised address, the table maps it to the
//! `us-east->eu-west:eu-west-1` link, and the link delays (or cuts) the bytes.
//! TLS is end to end through such a proxy: the proxy only moves TCP bytes.

use crate::tls::{SERVER_NAME, TlsMaterial};
use crate::{Identity, NetError};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// Makes endpoints for outgoing connections. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    via: BTreeMap<String, String>,
    tls: Option<ClientTlsConfig>,
    /// The same TLS files, for handshakes made outside tonic.
    material: Option<TlsMaterial>,
    /// `Bearer TOKEN`, sent with every call (tools without a certificate).
    authorization: Option<http::HeaderValue>,
}

impl Dialer {
    /// A dialer without rewrites or TLS.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// A dialer that rewrites addresses found in `via` and, with `tls`, presents
    /// that identity and trusts only that CA.
    pub fn new(via: BTreeMap<String, String>, tls: Option<&TlsMaterial>) -> Self {
        Self {
            inner: Arc::new(Inner {
                via,
                tls: tls.map(TlsMaterial::client_config),
                material: tls.cloned(),
                authorization: None,
            }),
        }
    }

    /// This dialer, sending `authorization: Bearer TOKEN` with every call
    /// (an API token from `meridian auth token create`).
    pub fn with_bearer_token(self, token: &str) -> Result<Self, NetError> {
        let mut value =
            http::HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                NetError::Material {
                    what: "API token".into(),
                    reason: "it must be printable ASCII".into(),
                }
            })?;
        value.set_sensitive(true);
        Ok(Self {
            inner: Arc::new(Inner {
                via: self.inner.via.clone(),
                tls: self.inner.tls.clone(),
                material: self.inner.material.clone(),
                authorization: Some(value),
            }),
        })
    }

    /// The identity in the certificate the server advertised as `address`
    /// presents, verified against the cluster CA by a TLS handshake (through
    /// the dial-via table like any connection); `None` in plain text. Used to
    /// learn a node's region from its certificate before letting it in.
    pub async fn server_identity(&self, address: &str) -> Result<Option<Identity>, NetError> {
        let Some(material) = &self.inner.material else {
            return Ok(None);
        };
        let unreachable = |reason: String| NetError::BadAddress {
            address: address.to_string(),
            reason,
        };
        let limit = std::time::Duration::from_secs(5);
        let connector = tokio_rustls::TlsConnector::from(material.rustls_client_config()?);
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let stream =
            tokio::time::timeout(limit, tokio::net::TcpStream::connect(self.resolve(address)))
                .await
                .map_err(|_| unreachable("no connection within 5 s".into()))?
                .map_err(|e| unreachable(e.to_string()))?;
        let tls = tokio::time::timeout(limit, connector.connect(name, stream))
            .await
            .map_err(|_| unreachable("no TLS handshake within 5 s".into()))?
            .map_err(|e| unreachable(format!("TLS handshake: {e}")))?;
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or_else(|| unreachable("the server presented no certificate".into()))?;
        Identity::from_certificate(certificate.as_ref()).map(Some)
    }

    /// The `authorization` header every call carries, if any.
    pub fn authorization(&self) -> Option<&http::HeaderValue> {
        self.inner.authorization.as_ref()
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// The address a connection to `address` actually goes to.
    pub fn resolve<'a>(&'a self, address: &'a str) -> &'a str {
        self.inner
            .via
            .get(address)
            .map(String::as_str)
            .unwrap_or(address)
    }

    /// An endpoint for the peer advertised as `address` (`host:port`). Callers add
    /// their own timeouts and keepalives.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, NetError> {
        let target = self.resolve(address);
        let scheme = if self.is_tls() { "https" } else { "http" };
        let bad = |reason: String| NetError::BadAddress {
            address: address.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{target}"))
            .map_err(|e| bad(e.to_string()))?;
        match &self.inner.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone().domain_name(SERVER_NAME))
                .map_err(|e| bad(e.to_string())),
            None => Ok(endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_listed_addresses() {
        let via = BTreeMap::from([("127.0.0.1:1000".to_string(), "127.0.0.1:2000".to_string())]);
        let dialer = Dialer::new(via, None);
        assert_eq!(dialer.resolve("127.0.0.1:1000"), "127.0.0.1:2000");
        assert_eq!(dialer.resolve("127.0.0.1:1001"), "127.0.0.1:1001");
        let endpoint = dialer.endpoint("127.0.0.1:1000").expect("endpoint");
        assert_eq!(endpoint.uri().to_string(), "http://127.0.0.1:2000/");
    }

    #[test]
    fn bad_address_is_named() {
        let err = Dialer::plaintext().endpoint("not an address").unwrap_err();
        assert!(err.to_string().contains("not an address"), "{err}");
    }
}
