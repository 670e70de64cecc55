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

use crate::credentials::Credentials;
use crate::tls::{SERVER_NAME, TlsMaterial};
use crate::{Identity, NetError};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint, Uri};

/// Makes endpoints for outgoing connections. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    via: BTreeMap<String, String>,
    /// The process's credentials (reloaded by a server when its files change).
    credentials: Option<Arc<Credentials>>,
    /// Client TLS configuration built from them (HTTP/2).
    client: Option<Arc<rustls::ClientConfig>>,
    /// Why TLS material given to [`Dialer::new`] is unusable; every dial then
    /// fails with it instead of falling back to plain text.
    broken: Option<String>,
    /// `Bearer TOKEN`, sent with every call (tools without a certificate).
    authorization: Option<http::HeaderValue>,
    /// Servers this dialer may talk to, by certificate identity
    /// ([`Dialer::only_to`]); any server of the cluster CA when `None`.
    servers: Option<crate::peers::Peers>,
}

impl Dialer {
    /// A dialer without rewrites or TLS.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// A dialer that rewrites addresses found in `via` and, with `tls`, presents
    /// that identity and trusts only that CA (fixed; for clients).
    pub fn new(via: BTreeMap<String, String>, tls: Option<&TlsMaterial>) -> Self {
        let credentials = tls.map(Credentials::from_material).transpose();
        match credentials {
            Ok(credentials) => Self::with_credentials(via.clone(), credentials)
                .unwrap_or_else(|err| Self::broken(via, err.to_string())),
            Err(err) => Self::broken(via, err.to_string()),
        }
    }

    fn broken(via: BTreeMap<String, String>, why: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                via,
                credentials: None,
                client: None,
                broken: Some(why),
                authorization: None,
                servers: None,
            }),
        }
    }

    /// A dialer that trusts the cluster CA in `ca` (PEM file) and presents no
    /// certificate: for a tool that authenticates with an API token
    /// ([`Dialer::with_bearer_token`]) to the control plane or a gateway.
    pub fn trusting_ca(
        via: BTreeMap<String, String>,
        ca: &std::path::Path,
    ) -> Result<Self, NetError> {
        let pem = std::fs::read(ca).map_err(|source| NetError::Read {
            path: ca.to_path_buf(),
            source,
        })?;
        Self::with_credentials(via, Some(Credentials::trusting(&pem)?))
    }

    /// A dialer presenting `credentials`' current certificate on every new
    /// connection (a server's, reloaded when its files change).
    pub fn with_credentials(
        via: BTreeMap<String, String>,
        credentials: Option<Arc<Credentials>>,
    ) -> Result<Self, NetError> {
        let client = credentials
            .as_ref()
            .map(|c| c.client_config(&[b"h2"]))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                via,
                credentials,
                client,
                broken: None,
                authorization: None,
                servers: None,
            }),
        })
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.inner.client.is_some() || self.inner.broken.is_some()
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
    /// their own timeouts and keepalives, then make channels with
    /// [`Dialer::lazy`] or [`Dialer::connect`] (which add TLS).
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, NetError> {
        if let Some(why) = &self.inner.broken {
            return Err(NetError::Material {
                what: "client TLS".into(),
                reason: why.clone(),
            });
        }
        let target = self.resolve(address);
        Endpoint::from_shared(format!("http://{target}")).map_err(|e| NetError::BadAddress {
            address: address.to_string(),
            reason: e.to_string(),
        })
    }

    /// A channel to `endpoint` that connects on first use (TLS when on).
    pub fn lazy(&self, endpoint: &Endpoint) -> Channel {
        match &self.inner.client {
            Some(config) => endpoint.connect_with_connector_lazy(TlsConnect {
                config: config.clone(),
                servers: self.inner.servers.clone(),
            }),
            None => endpoint.connect_lazy(),
        }
    }

    /// A channel to `endpoint`, connected now (TLS when on).
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.inner.client {
            Some(config) => {
                endpoint
                    .connect_with_connector(TlsConnect {
                        config: config.clone(),
                        servers: self.inner.servers.clone(),
                    })
                    .await
            }
            None => endpoint.connect().await,
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
                credentials: self.inner.credentials.clone(),
                client: self.inner.client.clone(),
                broken: self.inner.broken.clone(),
                authorization: Some(value),
                servers: self.inner.servers.clone(),
            }),
        })
    }

    /// This dialer, refusing to talk to a server whose certificate identity
    /// is not among `servers`: the connection is closed right after the
    /// handshake, before anything is sent. A shard shipping a namespace's
    /// changes uses it so they reach only nodes of the standby's region,
    /// whatever address the routing table lists. No effect in plain text.
    pub fn only_to(self, servers: crate::peers::Peers) -> Self {
        Self {
            inner: Arc::new(Inner {
                via: self.inner.via.clone(),
                credentials: self.inner.credentials.clone(),
                client: self.inner.client.clone(),
                broken: self.inner.broken.clone(),
                authorization: self.inner.authorization.clone(),
                servers: Some(servers),
            }),
        }
    }

    /// The identity in the certificate the server advertised as `address`
    /// presents, verified against the cluster CA by a TLS handshake (through
    /// the dial-via table like any connection); `None` in plain text. Used to
    /// learn a node's region from its certificate before letting it in.
    pub async fn server_identity(&self, address: &str) -> Result<Option<Identity>, NetError> {
        let Some(credentials) = &self.inner.credentials else {
            return Ok(None);
        };
        let unreachable = |reason: String| NetError::BadAddress {
            address: address.to_string(),
            reason,
        };
        let limit = std::time::Duration::from_secs(5);
        let connector = tokio_rustls::TlsConnector::from(credentials.client_config(&[])?);
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
}

/// Connects TCP to the endpoint's (already resolved) address and makes the
/// TLS handshake with the dialer's current client certificate; tonic then
/// speaks HTTP/2 over it. With `servers`, a server whose certificate
/// identity is not among them is refused after the handshake.
#[derive(Clone)]
struct TlsConnect {
    config: Arc<rustls::ClientConfig>,
    servers: Option<crate::peers::Peers>,
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                    std::io::Error,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<Uri> for TlsConnect {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        let servers = self.servers.clone();
        Box::pin(async move {
            let invalid =
                |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
            let authority = uri
                .authority()
                .ok_or_else(|| invalid("the endpoint has no address"))?
                .as_str()
                .to_string();
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
                .map_err(|_| invalid("bad server name"))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            if let Some(servers) = &servers {
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .ok_or_else(|| "the server presented no certificate".to_string())
                    .and_then(|der| {
                        Identity::from_certificate(der.as_ref()).map_err(|e| e.to_string())
                    });
                if let Err(refusal) = server_admitted(&identity, servers) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!("not talking to the server at {authority}: {refusal}"),
                    ));
                }
            }
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// Whether a server presenting `identity` is among `servers`.
fn server_admitted(
    identity: &Result<Identity, String>,
    servers: &crate::peers::Peers,
) -> Result<(), String> {
    match identity {
        Ok(identity) => crate::peers::admit(Some(&Ok(identity.clone())), servers, "this dialer")
            .map_err(|_| {
                format!(
                    "it presents {}, and only {servers} may be dialed",
                    identity.uri()
                )
            }),
        Err(why) => Err(format!("its certificate has no usable identity ({why})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_admitted_by_identity() {
        let eu = crate::peers::Peers::NodesOf("eu-west".into());
        let node = |s: &str| Ok(Identity::parse(s).unwrap());
        assert!(server_admitted(&node("node/eu-west/eu-west-1"), &eu).is_ok());
        let refused = server_admitted(&node("node/us-east/us-east-1"), &eu).unwrap_err();
        assert_eq!(
            refused,
            "it presents spiffe://meridian/node/us-east/us-east-1, and only shard nodes of region eu-west may be dialed"
        );
        assert!(server_admitted(&node("gateway/eu-west/gw-1"), &eu).is_err());
        assert!(server_admitted(&Err("none".into()), &eu).is_err());
    }

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
