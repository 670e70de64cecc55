//! `meridian gateway`: run a gateway until SIGINT or SIGTERM.

use crate::cli::NodeArgs;
use anyhow::Context;
use meridian_gateway::config::GatewayConfig;

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = GatewayConfig::load(args.config.as_deref())?;
    meridian_gateway::server::run(config, super::node::shutdown_signal())
        .await
        .context("gateway stopped with an error")
}
