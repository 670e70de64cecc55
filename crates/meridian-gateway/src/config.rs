//! Gateway configuration: TOML, then `MERIDIAN__SECTION__KEY` variables.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// Everything a `meridian gateway` needs.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Identity.
    pub gateway: GatewaySection,
    /// Listen addresses.
    pub network: GatewayNetwork,
    /// The control plane to follow.
    pub control: ControlEndpoints,
    /// Rate limits and circuit breakers.
    pub limits: GatewayLimits,
}

/// Protection of the gateway and of the shards behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayLimits {
    /// Average requests per second one client may make (0 = unlimited). A client
    /// is identified by its `meridian-client` metadata, else its IP address.
    pub requests_per_second: u32,
    /// Requests a client may make in a burst above the average.
    pub burst: u32,
    /// Consecutive failures of a shard that open its circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before one trial.
    pub breaker_open_ms: u64,
    /// Time a forwarded call may spend retrying inside the gateway.
    pub forward_budget_ms: u64,
    /// How often every shard member's round trip is measured (nearest-replica
    /// reads).
    pub probe_interval_ms: u64,
    /// HTTP/2 connections kept to each shard member; the gateway's calls are
    /// spread over them so that no single connection's task is the bottleneck.
    pub connections_per_member: usize,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            requests_per_second: 10_000,
            burst: 20_000,
            breaker_failures: 5,
            breaker_open_ms: 2_000,
            forward_budget_ms: 5_000,
            probe_interval_ms: 1_000,
            connections_per_member: 4,
        }
    }
}

/// Identity of a gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySection {
    /// Name, e.g. `gateway-us-east`.
    pub name: String,
    /// Region it runs in.
    pub region: String,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            name: "gateway".into(),
            region: "default".into(),
        }
    }
}

/// Where a gateway listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayNetwork {
    /// gRPC (`meridian.v1.Kv`, health, reflection).
    pub grpc_listen: SocketAddr,
    /// HTTP (`/health/*`, `/metrics`).
    pub http_listen: SocketAddr,
    /// Mutual TLS for clients, shards and the control plane; plain text when
    /// absent.
    pub tls: Option<meridian_net::TlsFiles>,
    /// Addresses to dial instead of advertised ones (the lab's WAN emulator).
    pub dial_via: std::collections::BTreeMap<String, String>,
}

impl GatewayNetwork {
    /// Loads the TLS files and builds the dialer.
    pub fn transport(&self) -> Result<meridian_net::Transport, meridian_net::NetError> {
        meridian_net::Transport::load(self.tls.as_ref(), &self.dial_via)
    }
}

impl Default for GatewayNetwork {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7501)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7502)),
            tls: None,
            dial_via: Default::default(),
        }
    }
}

/// The control plane a gateway follows.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ControlEndpoints {
    /// gRPC addresses of control-plane members.
    pub endpoints: Vec<String>,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum GatewayConfigError {
    /// Parsing failed.
    #[error("cannot load configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A key has an unusable value.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl GatewayConfig {
    /// Loads defaults, `file`, then the environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, GatewayConfigError> {
        let mut figment = Figment::from(Serialized::defaults(GatewayConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: GatewayConfig = figment
            .merge(Env::prefixed("MERIDIAN__").split("__"))
            .extract()
            .map_err(Box::new)?;
        if config.control.endpoints.is_empty() {
            return Err(GatewayConfigError::Invalid {
                key: "control.endpoints",
                reason: "a gateway needs at least one control-plane address to learn routes from"
                    .into(),
            });
        }
        if !(50..=60_000).contains(&config.limits.probe_interval_ms) {
            return Err(GatewayConfigError::Invalid {
                key: "limits.probe_interval_ms",
                reason: format!(
                    "{} is outside 50..=60000 ms",
                    config.limits.probe_interval_ms
                ),
            });
        }
        if !(1..=64).contains(&config.limits.connections_per_member) {
            return Err(GatewayConfigError::Invalid {
                key: "limits.connections_per_member",
                reason: format!("{} is outside 1..=64", config.limits.connections_per_member),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(body: &str) -> Result<GatewayConfig, GatewayConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, body).expect("write config");
        GatewayConfig::load(Some(&file))
    }

    const CONTROL: &str = "[control]\nendpoints = [\"127.0.0.1:7000\"]\n";

    #[test]
    fn a_file_with_a_control_plane_loads_with_defaults() {
        let config = load(CONTROL).expect("valid");
        assert_eq!(config.limits.connections_per_member, 4);
        assert_eq!(config.limits.probe_interval_ms, 1_000);
    }

    #[test]
    fn unusable_limits_are_refused_by_name() {
        for (limits, key) in [
            (
                "connections_per_member = 0",
                "limits.connections_per_member",
            ),
            (
                "connections_per_member = 65",
                "limits.connections_per_member",
            ),
            ("probe_interval_ms = 10", "limits.probe_interval_ms"),
        ] {
            match load(&format!("{CONTROL}[limits]\n{limits}\n")) {
                Err(GatewayConfigError::Invalid { key: refused, .. }) => {
                    assert_eq!(refused, key, "{limits}")
                }
                other => panic!("{limits}: {other:?}"),
            }
        }
        assert!(matches!(
            load("[control]\nendpoints = []\n"),
            Err(GatewayConfigError::Invalid {
                key: "control.endpoints",
                ..
            })
        ));
    }
}
