//! One module per command group.

mod audit;
mod auth;
mod certs;
mod conflicts;
mod control;
mod dr;
mod failover;
mod gateway;
mod jobs;
mod kv;
mod lab;
mod namespace;
mod node;
mod plan;
mod region;
mod replication;
mod wan;
mod workers;

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Node(args) => node::run(cli.output, args).await,
        Command::Control(args) => control::run(cli.output, args).await,
        Command::Gateway(args) => gateway::run(cli.output, args).await,
        Command::Kv(args) => kv::run(cli.output, args).await,
        Command::Namespace(args) => namespace::run(cli.output, args).await,
        Command::Region(args) => region::run(cli.output, args).await,
        Command::Lab(args) => lab::run(cli.output, args).await,
        Command::Wan(args) => wan::run(args).await,
        Command::Failover(args) => failover::run(cli.output, args).await,
        Command::Replication(args) => replication::run(cli.output, args).await,
        Command::Conflicts(args) => conflicts::run(cli.output, args).await,
        Command::Certs(args) => certs::run(cli.output, args),
        Command::Audit(args) => audit::run(cli.output, args).await,
        Command::Auth(args) => auth::run(cli.output, args).await,
        Command::Dr(args) => dr::run(cli.output, args).await,
        Command::Jobs(args) => jobs::run(cli.output, args).await,
        Command::Plan { topology } => plan::run(cli.output, &topology),
        Command::Workers { target, node } => {
            workers::run(cli.output, &target, node.as_deref()).await
        }
    }
}
