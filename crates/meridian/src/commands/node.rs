//! `meridian node`: run one shard member until SIGINT or SIGTERM.

use crate::cli::NodeArgs;
use anyhow::Context;
use meridian_shard::NodeConfig;

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::load(args.config.as_deref())?;
    meridian_shard::server::run(config, shutdown_signal())
        .await
        .context("node stopped with an error")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let shutdown = async {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    shutdown.await
}
