//! `meridian node`: run one shard member until SIGINT or SIGTERM, or act on
//! running ones (`rekey`).

use crate::cli::{NodeCommand, OutputFormat, ShardNodeArgs};
use crate::output::emit;
use anyhow::Context;
use meridian_client::{Client, pb};
use meridian_shard::NodeConfig;
use serde_json::json;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub async fn run(format: OutputFormat, args: ShardNodeArgs) -> anyhow::Result<()> {
    match args.command {
        None => {
            let config = NodeConfig::load(args.run.config.as_deref())?;
            if args.run.check {
                let summary = format!(
                    "node {} of shard {} in {}, {} initial member(s)",
                    config.node.id,
                    config.node.shard,
                    config.node.region,
                    config.cluster.initial_members.len()
                );
                return checked(format, &config, &summary);
            }
            meridian_shard::server::run(config, shutdown_signal())
                .await
                .context("node stopped with an error")
        }
        Some(NodeCommand::Rekey {
            target,
            no_wait,
            timeout,
        }) => rekey(format, &target, no_wait, Duration::from_secs(timeout)).await,
    }
}

/// `--check`: the configuration loaded and passed its checks; prints what
/// it resolved to (JSON: the whole configuration).
pub fn checked<T: serde::Serialize>(
    format: OutputFormat,
    config: &T,
    summary: &str,
) -> anyhow::Result<()> {
    let resolved = serde_json::to_value(config).context("configuration")?;
    crate::output::emit_message(
        format,
        json!({ "ok": true, "summary": summary, "config": resolved }),
        &format!("configuration OK: {summary}"),
    );
    Ok(())
}

/// Starts a re-encryption pass on every node, then (unless `no_wait`)
/// follows them with a progress bar until all have ended.
async fn rekey(
    format: OutputFormat,
    target: &crate::cli::TargetArgs,
    no_wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (nodes, dialer) = crate::target::shard_nodes(target)?;
    let client = Client::with_dialer(nodes.clone(), dialer)?;
    let mut statuses = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let status = client
            .rekey_on(node)
            .await
            .with_context(|| format!("starting re-encryption on {node}"))?;
        statuses.push(status);
    }
    if !no_wait {
        let interactive = std::io::stderr().is_terminal() && format == OutputFormat::Table;
        let bar = interactive.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} re-encrypting [{bar:20}] {pos}/{len} values ({elapsed})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        while statuses.iter().any(|s| s.running) {
            if Instant::now() >= deadline {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                anyhow::bail!(
                    "re-encryption still running after {} s (it goes on in the background; see `meridian node rekey --no-wait` for the status)",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (node, status) in nodes.iter().zip(statuses.iter_mut()) {
                if status.running {
                    *status = client
                        .rekey_status_on(node)
                        .await
                        .with_context(|| format!("asking {node} how re-encryption goes"))?;
                }
            }
            let (scanned, total) = statuses
                .iter()
                .fold((0, 0), |(s, t), x| (s + x.scanned, t + x.total));
            match &bar {
                Some(bar) => {
                    bar.set_length(total.max(scanned));
                    bar.set_position(scanned);
                }
                None if last_report.elapsed() >= Duration::from_secs(2) => {
                    eprintln!("rekey: {scanned}/{total} values looked at");
                    last_report = Instant::now();
                }
                None => {}
            }
        }
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
    }
    let rows = nodes
        .iter()
        .zip(&statuses)
        .map(|(node, s)| {
            vec![
                node.clone(),
                s.node_id.to_string(),
                format!("{:016x}", s.key_id),
                s.data_keys.to_string(),
                if s.running { "running" } else { "done" }.to_string(),
                format!("{}/{}", s.resealed, s.scanned),
                s.log_entries_under_old_keys.to_string(),
                s.error.clone(),
            ]
        })
        .collect();
    let json_nodes: Vec<_> = nodes
        .iter()
        .zip(&statuses)
        .map(|(node, s)| status_json(node, s))
        .collect();
    emit(
        format,
        json!({ "nodes": json_nodes }),
        &[
            "NODE",
            "ID",
            "KEY",
            "KEYS",
            "STATE",
            "RESEALED/SCANNED",
            "OLD-KEY LOG ENTRIES",
            "ERROR",
        ],
        rows,
    );
    if let Some(failed) = statuses.iter().find(|s| !s.error.is_empty()) {
        anyhow::bail!(
            "re-encryption failed on node {}: {}",
            failed.node_id,
            failed.error
        );
    }
    Ok(())
}

fn status_json(node: &str, s: &pb::RekeyStatus) -> serde_json::Value {
    json!({
        "address": node,
        "node_id": s.node_id,
        "encrypted": s.encrypted,
        "running": s.running,
        "key_id": format!("{:016x}", s.key_id),
        "data_keys": s.data_keys,
        "total": s.total,
        "scanned": s.scanned,
        "resealed": s.resealed,
        "log_entries_under_old_keys": s.log_entries_under_old_keys,
        "started_unix_ms": s.started_unix_ms,
        "finished_unix_ms": s.finished_unix_ms,
        "error": s.error,
    })
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
