//! `meridian control`: run one control-plane member until SIGINT or SIGTERM.

use crate::cli::NodeArgs;
use anyhow::Context;
use meridian_control::config::ControlConfig;

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = ControlConfig::load(args.config.as_deref())?;
    meridian_control::server::run(config, super::node::shutdown_signal())
        .await
        .context("control-plane member stopped with an error")
}
