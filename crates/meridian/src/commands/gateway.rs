//! `meridian gateway`: run a gateway until SIGINT or SIGTERM.

use crate::cli::{NodeArgs, OutputFormat};
use anyhow::Context;
use meridian_gateway::config::GatewayConfig;

pub async fn run(format: OutputFormat, args: NodeArgs) -> anyhow::Result<()> {
    let config = GatewayConfig::load(args.config.as_deref())?;
    if args.check {
        let summary = format!(
            "gateway {} in {}, control plane at {}",
            config.gateway.name,
            config.gateway.region,
            config.control.endpoints.join(", ")
        );
        return super::node::checked(format, &config, &summary);
    }
    meridian_gateway::server::run(config, super::node::shutdown_signal())
        .await
        .context("gateway stopped with an error")
}
