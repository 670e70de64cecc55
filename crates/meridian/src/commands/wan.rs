//! `meridian wan`: run the lab's WAN emulator until SIGINT or SIGTERM.

use crate::cli::NodeArgs;
use anyhow::Context;
use meridian_wan::WanConfig;

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let path = args
        .config
        .context("meridian wan needs --config FILE (the lab writes one)")?;
    let config = WanConfig::load(&path)?;
    meridian_wan::server::run(config, super::node::shutdown_signal())
        .await
        .context("WAN emulator stopped with an error")
}
