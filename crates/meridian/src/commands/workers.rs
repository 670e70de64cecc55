//! `meridian workers`: the named background workers of running processes.

use crate::cli::{OutputFormat, TargetArgs};
use crate::output;
use anyhow::Context;
use meridian_client::Client;
use meridian_lab::{LabState, ProcessRole};
use meridian_proto::v1 as pb;
use serde_json::json;

/// Lists the workers of every chosen process.
pub async fn run(
    format: OutputFormat,
    target: &TargetArgs,
    node: Option<&str>,
) -> anyhow::Result<()> {
    let processes = processes(target, node)?;
    let client = Client::with_dialer(
        processes
            .iter()
            .map(|(_, address)| address.clone())
            .collect::<Vec<String>>(),
        crate::target::dialer(target)?,
    )?;
    let mut listed = Vec::with_capacity(processes.len());
    for (name, address) in &processes {
        let answer = client
            .workers_on(address)
            .await
            .with_context(|| format!("listing the workers of {name} ({address})"))?;
        listed.push((name.clone(), answer));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let json = json!({
        "processes": listed.iter().map(|(name, answer)| json!({
            "name": name,
            "process": answer.process,
            "workers": answer.workers.iter().map(worker_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()
    });
    let rows = listed
        .iter()
        .flat_map(|(name, answer)| {
            answer.workers.iter().map(move |w| {
                vec![
                    name.clone(),
                    w.name.clone(),
                    state_name(w.state).to_string(),
                    ago(now, w.started_unix_ms),
                    ago(now, w.progress_unix_ms),
                    if w.failure.is_empty() {
                        w.detail.clone()
                    } else {
                        w.failure.clone()
                    },
                ]
            })
        })
        .collect();
    output::emit(
        format,
        json,
        &[
            "process", "worker", "state", "started", "progress", "detail",
        ],
        rows,
    );
    Ok(())
}

/// (name, gRPC address) of the processes to ask.
fn processes(target: &TargetArgs, node: Option<&str>) -> anyhow::Result<Vec<(String, String)>> {
    if !target.endpoint.is_empty() {
        if node.is_some() {
            anyhow::bail!(
                "--node names a lab process; with --endpoint, give that process's address"
            );
        }
        return Ok(target
            .endpoint
            .iter()
            .map(|address| (address.clone(), address.clone()))
            .collect());
    }
    let state = LabState::load(&target.lab).with_context(|| {
        format!(
            "no --endpoint given and no lab found in {}",
            target.lab.display()
        )
    })?;
    let running = state
        .processes
        .iter()
        .filter(|p| p.role != ProcessRole::Wan && p.pid.is_some());
    let chosen: Vec<(String, String)> = match node {
        Some(node) => running
            .filter(|p| p.name == node)
            .map(|p| (p.name.clone(), p.grpc.clone()))
            .collect(),
        None => running.map(|p| (p.name.clone(), p.grpc.clone())).collect(),
    };
    if chosen.is_empty() {
        let names: Vec<&str> = state
            .processes
            .iter()
            .filter(|p| p.role != ProcessRole::Wan && p.pid.is_some())
            .map(|p| p.name.as_str())
            .collect();
        anyhow::bail!(
            "no running lab process named {:?}; running: {}",
            node.unwrap_or_default(),
            names.join(", ")
        );
    }
    Ok(chosen)
}

fn state_name(state: i32) -> &'static str {
    match pb::WorkerState::try_from(state) {
        Ok(pb::WorkerState::Running) => "running",
        Ok(pb::WorkerState::Finished) => "finished",
        Ok(pb::WorkerState::Stopped) => "stopped",
        Ok(pb::WorkerState::Failed) => "failed",
        _ => "unknown",
    }
}

fn worker_json(w: &pb::WorkerInfo) -> serde_json::Value {
    json!({
        "name": w.name,
        "state": state_name(w.state),
        "detail": w.detail,
        "failure": w.failure,
        "started_unix_ms": w.started_unix_ms,
        "progress_unix_ms": w.progress_unix_ms,
        "ended_unix_ms": w.ended_unix_ms,
    })
}

/// "12s ago" for a Unix-ms time; "-" for 0 (never).
fn ago(now: u64, at: u64) -> String {
    if at == 0 {
        return "-".into();
    }
    let seconds = now.saturating_sub(at) / 1000;
    match seconds {
        0..=119 => format!("{seconds}s ago"),
        120..=7199 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}
