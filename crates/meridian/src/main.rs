//! `meridian`: one binary for the servers, the lab and the client.
//!
//! - [`cli`]: the command-line grammar.
//! - [`output`]: tables for people, JSON for scripts (`--output json`).
//! - [`target`]: finding the cluster to talk to (`--endpoint` or `--lab`).
//! - [`commands`]: one module per command group.

mod cli;
mod commands;
mod output;
mod target;

use clap::Parser;

/// mimalloc instead of the system allocator: the node's hot path (gRPC frames,
/// log entries, batches) allocates heavily, and glibc malloc was >10 % of the
/// leader's CPU in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let default_level = match cli.command {
        cli::Command::Node(_) | cli::Command::Control(_) | cli::Command::Gateway(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let output = cli.output;
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::print_error(output, &err);
            ExitCode::FAILURE
        }
    }
}
