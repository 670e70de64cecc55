//! Running the emulator as a process (`meridian wan --config FILE`): every link
//! of the configuration plus the control API, until shutdown.

use crate::{Link, LinkSpec, WanError};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// What a `meridian wan` process runs. Written by the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// Address of the control API.
    pub http_listen: SocketAddr,
    /// The links, each with a fixed listen address (other processes' dial-via
    /// tables point at them, so they must not move across restarts).
    #[serde(default)]
    pub links: Vec<LinkSpec>,
}

impl WanConfig {
    /// Reads a configuration file (TOML).
    pub fn load(path: &Path) -> Result<Self, WanError> {
        let text = std::fs::read_to_string(path).map_err(|e| WanError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| WanError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// Starts every link and the control API; serves until `shutdown` resolves.
pub async fn run(
    config: WanConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WanError> {
    let mut links = Vec::with_capacity(config.links.len());
    for spec in config.links {
        links.push(Link::start(spec).await?);
    }
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| WanError::Listen {
            address: config.http_listen.to_string(),
            source,
        })?;
    tracing::info!(links = links.len(), http = %config.http_listen, "WAN emulator started");
    let app = crate::control::router(Arc::new(links));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| WanError::Listen {
            address: config.http_listen.to_string(),
            source,
        })
}
