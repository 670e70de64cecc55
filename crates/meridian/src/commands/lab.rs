//! `meridian lab up|status|down|kill|restart`.

use crate::cli::{LabArgs, LabCommand, OutputFormat};
use crate::output::{emit, emit_message};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use meridian_client::{Client, ClientOptions};
use meridian_lab::{Lab, LabSpec, ProcessRole, WanSettings};
use serde_json::json;
use std::io::IsTerminal;
use std::time::Duration;

pub async fn run(format: OutputFormat, args: LabArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("cannot find the meridian binary")?;
    match args.command {
        LabCommand::Up {
            regions,
            nodes,
            detach,
            ready_timeout,
            plaintext,
            no_encryption,
            no_wan,
            wan,
            node_env,
        } => {
            let mut env = Vec::with_capacity(node_env.len());
            for setting in node_env {
                match setting.split_once('=') {
                    Some((key, value)) if key.starts_with("MERIDIAN__") => {
                        env.push((key.to_string(), value.to_string()))
                    }
                    _ => anyhow::bail!(
                        "--node-env {setting:?}: give MERIDIAN__SECTION__KEY=VALUE (a node setting)"
                    ),
                }
            }
            let wan = match (no_wan, wan) {
                (true, _) => None,
                (false, Some(path)) => Some(WanSettings::load(&path)?),
                (false, None) => Some(WanSettings::default()),
            };
            let spec = LabSpec {
                dir: args.dir.clone(),
                regions,
                nodes,
                binary,
                env,
                tls: !plaintext,
                wan,
                encryption: !no_encryption,
            };
            up(format, spec, detach, Duration::from_secs(ready_timeout)).await
        }
        LabCommand::Status => status(format, Lab::open(&args.dir, binary)?).await,
        LabCommand::Down => {
            let mut lab = Lab::open(&args.dir, binary)?;
            let stopped = lab.down()?;
            emit_message(
                format,
                json!({ "stopped": stopped }),
                &format!("stopped {} processes", stopped.len()),
            );
            Ok(())
        }
        LabCommand::Kill { target, wipe } => {
            let mut lab = Lab::open(&args.dir, binary)?;
            let killed = lab.resolve(&target)?;
            let wiped = if wipe {
                lab.kill_and_wipe(&target)?
            } else {
                lab.kill(&target)?;
                Vec::new()
            };
            let wiped: Vec<String> = wiped.iter().map(|p| p.display().to_string()).collect();
            emit_message(
                format,
                json!({ "killed": killed, "wiped": wiped }),
                &if wipe {
                    format!("killed {} and removed their storage", killed.join(", "))
                } else {
                    format!("killed {}", killed.join(", "))
                },
            );
            Ok(())
        }
        LabCommand::Partition { a, b } => {
            let lab = Lab::open(&args.dir, binary)?;
            lab.partition(&a, &b)?;
            emit_message(
                format,
                json!({ "partitioned": [a, b] }),
                &format!("partitioned {a} <-> {b}"),
            );
            Ok(())
        }
        LabCommand::Heal { a, b } => {
            let lab = Lab::open(&args.dir, binary)?;
            lab.heal(&a, &b)?;
            emit_message(
                format,
                json!({ "healed": [a, b] }),
                &format!("healed {a} <-> {b}"),
            );
            Ok(())
        }
        LabCommand::Restart { target } => {
            let mut lab = Lab::open(&args.dir, binary)?;
            let restarted = lab.restart(&target)?;
            lab.wait_ready(Duration::from_secs(60), |_, _| {}).await?;
            emit_message(
                format,
                json!({ "restarted": restarted }),
                &format!("restarted {}", restarted.join(", ")),
            );
            Ok(())
        }
    }
}

async fn up(
    format: OutputFormat,
    spec: LabSpec,
    detach: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    // Listen for Ctrl-C before starting anything, so an interrupt at any moment
    // stops the children instead of orphaning them.
    let stop = tokio::spawn(wait_for_stop_signal());
    let mut lab = Lab::up(&spec)?;
    let interactive = std::io::stderr().is_terminal() && format == OutputFormat::Table;
    let bar = if interactive {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} waiting for processes [{bar:20}] {pos}/{len} ready ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let mut stop = stop;
    let result = tokio::select! {
        result = lab.wait_ready(timeout, |ready, total| match &bar {
            Some(bar) => {
                bar.set_length(total as u64);
                bar.set_position(ready as u64);
            }
            None => eprintln!("lab: {ready}/{total} processes ready"),
        }) => result.map_err(anyhow::Error::from),
        _ = &mut stop => Err(anyhow::anyhow!("interrupted while starting; the lab was stopped")),
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Err(err) = result {
        let _ = lab.down();
        return Err(err);
    }
    print_processes(format, &lab, detach).await;
    if detach {
        return Ok(());
    }
    if format == OutputFormat::Table {
        eprintln!("lab running in the foreground; press Ctrl-C to stop it");
    }
    let _ = stop.await;
    eprintln!("stopping the lab...");
    let stopped = lab.down()?;
    if format == OutputFormat::Table {
        eprintln!("stopped {} processes", stopped.len());
    }
    Ok(())
}

async fn wait_for_stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn print_processes(format: OutputFormat, lab: &Lab, detached: bool) {
    let state = lab.state();
    let rows: Vec<Vec<String>> = state
        .processes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                format!("{:?}", p.role).to_lowercase(),
                p.region.clone(),
                p.grpc.clone(),
                p.http.clone(),
                p.pid.map_or("-".into(), |pid| pid.to_string()),
            ]
        })
        .collect();
    match format {
        OutputFormat::Json => emit(
            format,
            json!({ "lab": state, "detached": detached }),
            &[],
            Vec::new(),
        ),
        OutputFormat::Table => {
            crate::output::print_table(&["name", "role", "region", "grpc", "http", "pid"], &rows);
            let dir = state.dir.display();
            println!();
            let region = state.regions.first().cloned().unwrap_or_default();
            println!("lab ready in {dir}; try:");
            println!("  meridian namespace create demo --region {region} --lab {dir}");
            println!("  meridian kv put demo hello world --lab {dir}");
            println!("  meridian kv get demo hello --lab {dir}");
            println!("  meridian lab status --dir {dir}");
        }
    }
}

async fn status(format: OutputFormat, mut lab: Lab) -> anyhow::Result<()> {
    let names: Vec<String> = lab
        .state()
        .processes
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let mut json_rows = Vec::new();
    let mut rows = Vec::new();
    let options = ClientOptions {
        attempt_timeout: Duration::from_millis(800),
        dialer: lab.dialer().clone(),
        ..ClientOptions::default()
    };
    for name in names {
        let running = lab.is_running(&name);
        let Some(record) = lab.process(&name).cloned() else {
            continue;
        };
        let raft = if running {
            match Client::with_options([record.grpc.clone()], options.clone()) {
                Ok(client) => match record.role {
                    ProcessRole::Node => client.cluster_status_of(&record.grpc).await.ok(),
                    ProcessRole::Control => client.control_status_of(&record.grpc).await.ok(),
                    ProcessRole::Gateway | ProcessRole::Wan => None,
                },
                Err(_) => None,
            }
        } else {
            None
        };
        let raft_role = raft
            .as_ref()
            .map_or("-".to_string(), |s| s.role.to_lowercase());
        let state = if running { "running" } else { "stopped" };
        rows.push(vec![
            record.name.clone(),
            format!("{:?}", record.role).to_lowercase(),
            record.region.clone(),
            record.shard.clone().unwrap_or_default(),
            state.to_string(),
            raft_role.clone(),
            raft.as_ref().map_or("-".into(), |s| s.term.to_string()),
            raft.as_ref()
                .map_or("-".into(), |s| s.applied_index.to_string()),
            record.grpc.clone(),
            record.http.clone(),
            record
                .pid
                .filter(|_| running)
                .map_or("-".into(), |p| p.to_string()),
        ]);
        json_rows.push(json!({
            "name": record.name,
            "role": record.role,
            "region": record.region,
            "shard": record.shard,
            "node_id": record.node_id,
            "state": state,
            "raft_role": raft.as_ref().map(|s| s.role.to_lowercase()),
            "term": raft.as_ref().map(|s| s.term),
            "leader_id": raft.as_ref().map(|s| s.leader_id),
            "applied_index": raft.as_ref().map(|s| s.applied_index),
            "endpoints": { "grpc": record.grpc, "http": record.http },
            "pid": record.pid.filter(|_| running),
            "config": record.config,
            "log": record.log,
        }));
    }
    // A stopped emulator has no links to report; that is not an error here.
    let wan = lab.state().wan().map(|w| w.name.clone());
    let links = if wan.is_some_and(|name| lab.is_running(&name)) {
        lab.links().unwrap_or_default()
    } else {
        Vec::new()
    };
    match format {
        OutputFormat::Json => emit(
            format,
            json!({
                "dir": lab.dir(),
                "regions": lab.state().regions,
                "tls": lab.state().certs.is_some(),
                "processes": json_rows,
                "links": links,
            }),
            &[],
            Vec::new(),
        ),
        OutputFormat::Table => {
            crate::output::print_table(
                &[
                    "name", "role", "region", "shard", "state", "raft", "term", "applied", "grpc",
                    "http", "pid",
                ],
                &rows,
            );
            if !links.is_empty() {
                println!();
                print_links(&links);
            }
        }
    }
    Ok(())
}

/// One row per region pair: its delay and whether it is cut (the emulator has
/// one link per remote process; they share a pair's settings).
fn print_links(links: &[meridian_wan::LinkStatus]) {
    let mut pairs: std::collections::BTreeMap<String, (u64, bool, u64, usize)> =
        std::collections::BTreeMap::new();
    for link in links {
        let pair = link
            .name
            .split(':')
            .next()
            .unwrap_or(&link.name)
            .to_string();
        let entry = pairs
            .entry(pair)
            .or_insert((link.one_way_delay_ms * 2, false, 0, 0));
        entry.1 |= link.partitioned;
        entry.2 += link.bytes;
        entry.3 += 1;
    }
    let rows = pairs
        .into_iter()
        .map(|(pair, (rtt, partitioned, bytes, count))| {
            vec![
                pair,
                format!("{rtt} ms"),
                if partitioned { "PARTITIONED" } else { "up" }.to_string(),
                count.to_string(),
                bytes.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    crate::output::print_table(&["wan link", "rtt", "state", "targets", "bytes"], &rows);
}
