//! Drives a rebuild after a control-plane restore: asks every shard what it
//! holds (a probe that grants nothing and configures nothing), waits until
//! every shard answered or was named lost, then places each namespace as
//! [`crate::rebuild::reconcile`] decides. Until it ends, the prober grants
//! no lease and fails nothing over, and the state refuses changes.
//!
//! A shard's answer cannot change while the rebuild runs — no control
//! plane grants it a lease or configures it — so each shard is asked until
//! it answers once. A new leader starts asking again from scratch.

use crate::command::ControlCommand;
use crate::jobs::{Attempt, ended, report, requester};
use crate::model::{Adoption, Job, JobProgress, JobSpec, JobState, RebuildOutcome, StandbyCopy};
use crate::node::{ControlNode, now_unix_ms};
use crate::rebuild::{CopyReport, CopyRole, Restored, Verdict};
use meridian_client::{Client, ClientOptions};
use meridian_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Pause between two rounds of asking.
const ROUND_EVERY: Duration = Duration::from_millis(500);
/// How long one shard may take to answer in a round.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What one shard said.
#[derive(Debug, Clone, Default)]
struct Answer {
    /// Namespaces it holds.
    held: BTreeSet<String>,
    /// Role, epoch and position of those configured with a role.
    positions: HashMap<String, pb::NamespacePosition>,
}

/// One start of a rebuild (see the module comment).
pub(crate) async fn drive(node: &Arc<ControlNode>, job: &Job, attempts: u32) -> Attempt {
    let mut answers: BTreeMap<String, Answer> = BTreeMap::new();
    loop {
        if !node.raft.raft.is_leader() {
            return Attempt::Retry("this member no longer leads".into());
        }
        let Some(lost) = node.with_state(|s| match s.jobs.get(&job.id).map(|j| &j.spec) {
            Some(JobSpec::Rebuild(r)) if s.jobs[&job.id].is_running() => {
                Some(r.lost.iter().cloned().collect::<BTreeSet<String>>())
            }
            _ => None,
        }) else {
            return Attempt::Retry("the rebuild is no longer running".into());
        };
        let shards: Vec<(String, Vec<String>)> = node.with_state(|s| {
            s.shards
                .values()
                .map(|shard| {
                    let members = shard.members.values().map(|m| m.address.clone()).collect();
                    (shard.id.clone(), members)
                })
                .collect()
        });
        let mut asks = tokio::task::JoinSet::new();
        for (id, members) in shards
            .iter()
            .filter(|(id, _)| !answers.contains_key(id) && !lost.contains(id))
        {
            let node = node.clone();
            let id = id.clone();
            let members = members.clone();
            asks.spawn(async move { (id, ask(&node, members).await) });
        }
        while let Some(joined) = asks.join_next().await {
            match joined {
                Ok((shard, Ok(answer))) => {
                    tracing::info!(%shard, namespaces = answer.held.len(), "shard reported for the rebuild");
                    answers.insert(shard, answer);
                }
                Ok((shard, Err(why))) => {
                    tracing::debug!(%shard, %why, "shard did not answer the rebuild yet")
                }
                Err(err) => tracing::warn!(%err, "a rebuild question failed"),
            }
        }
        let all: BTreeSet<String> = shards.iter().map(|(id, _)| id.clone()).collect();
        let answered: BTreeSet<String> = answers.keys().cloned().collect();
        let total = all.len() as u64;
        let done = all
            .iter()
            .filter(|s| answered.contains(*s) || lost.contains(*s))
            .count() as u64;
        let progress = |step: String| JobProgress {
            step,
            shard: String::new(),
            done_units: done,
            total_units: total,
            attempts,
        };
        if let Err(waiting) = crate::rebuild::ready(&all, &answered, &lost) {
            let step = format!("waiting for shards to report: {}", waiting.join(", "));
            if !report(node, job.id, progress(step)).await {
                return Attempt::Retry("the rebuild is no longer running".into());
            }
            tokio::time::sleep(ROUND_EVERY).await;
            continue;
        }
        let (adoptions, outcome, conflicts) = node.with_state(|s| decide(s, &answers, &lost));
        if !conflicts.is_empty() {
            let step = format!("held: {}", conflicts.join("; "));
            if !report(node, job.id, progress(step)).await {
                return Attempt::Retry("the rebuild is no longer running".into());
            }
            tokio::time::sleep(ROUND_EVERY).await;
            continue;
        }
        let summary = summarize(&outcome);
        // The bar ends full.
        if !report(node, job.id, progress("placing".into())).await {
            return Attempt::Retry("the rebuild is no longer running".into());
        }
        let command = ControlCommand::FinishRebuild {
            job: job.id,
            adoptions,
            outcome,
            requester: requester(node),
        };
        return match node.propose(command).await {
            Ok(_) => ended(JobState::Succeeded, summary, None),
            Err(crate::error::ControlError::Rejected(rejection)) => ended(
                JobState::Failed,
                format!("the rebuild's placements were refused: {rejection}"),
                None,
            ),
            Err(err) => Attempt::Retry(err.to_string()),
        };
    }
}

/// Asks one shard what it holds: a probe that grants and configures
/// nothing, and its namespace list.
async fn ask(node: &ControlNode, members: Vec<String>) -> Result<Answer, String> {
    let client = Client::with_options(
        members,
        ClientOptions {
            attempt_timeout: ASK_TIMEOUT,
            retry_budget: ASK_TIMEOUT,
            backoff: Duration::from_millis(50),
            dialer: node.dialer.clone(),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let probe = pb::LeaseRequest {
        lease_ms: 0,
        desired: Vec::new(),
        sent_unix_ms: now_unix_ms(),
        max_clock_offset_ms: node.config.failover.max_clock_offset_ms,
        grant_term: 0,
        grant_seq: 0,
        ..Default::default()
    };
    let positions = client
        .lease(probe)
        .await
        .map_err(|e| e.to_string())?
        .positions;
    let held = client
        .list_namespaces()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|n| n.name)
        .collect();
    Ok(Answer {
        held,
        positions: positions
            .into_iter()
            .map(|p| (p.namespace.clone(), p))
            .collect(),
    })
}

/// Every namespace's verdict from the answers: the adoptions to make, every
/// outcome, and the conflicts that hold the rebuild.
fn decide(
    state: &crate::state::ControlState,
    answers: &BTreeMap<String, Answer>,
    lost: &BTreeSet<String>,
) -> (Vec<Adoption>, Vec<RebuildOutcome>, Vec<String>) {
    let mut adoptions = Vec::new();
    let mut outcome = Vec::new();
    let mut conflicts = Vec::new();
    for namespace in state.namespaces.values() {
        let copies: Vec<CopyReport> = answers
            .iter()
            .filter_map(|(shard, answer)| {
                let position = answer.positions.get(&namespace.name);
                if position.is_none() && !answer.held.contains(&namespace.name) {
                    return None;
                }
                let region_name = state.shards.get(shard)?.region.clone();
                let allowed = state.regions.get(&region_name).is_some_and(|region| {
                    crate::residency::check_region(
                        &namespace.name,
                        &namespace.policy.allowed_jurisdictions,
                        region,
                        "copy",
                    )
                    .is_ok()
                });
                let (role, epoch, change_seq, promoted_from) = match position {
                    Some(p) => (
                        if p.role == pb::NamespaceRole::Primary as i32 {
                            CopyRole::Primary
                        } else {
                            CopyRole::Standby
                        },
                        p.epoch,
                        p.change_seq,
                        (p.promoted_from_epoch, p.promoted_seq),
                    ),
                    None => (CopyRole::Unconfigured, 0, 0, (0, 0)),
                };
                Some(CopyReport {
                    shard: shard.clone(),
                    region: region_name,
                    allowed,
                    role,
                    epoch,
                    change_seq,
                    promoted_from,
                })
            })
            .collect();
        let restored = Restored {
            primary: namespace.shard.clone(),
            epoch: namespace.epoch,
        };
        let (verdict, shard, epoch) = match crate::rebuild::reconcile(&restored, &copies, lost) {
            Verdict::Keep => ("kept", namespace.shard.clone(), namespace.epoch),
            Verdict::Missing => ("missing", namespace.shard.clone(), namespace.epoch),
            Verdict::Conflict(why) => {
                conflicts.push(format!("{}: {why}", namespace.name));
                continue;
            }
            Verdict::Adopt {
                primary,
                region,
                epoch,
                standbys,
                takeover,
                promoted,
            } => {
                adoptions.push(Adoption {
                    namespace: namespace.name.clone(),
                    shard: primary.clone(),
                    region,
                    epoch,
                    standbys: standbys
                        .into_iter()
                        .map(|(shard, region)| StandbyCopy { region, shard })
                        .collect(),
                    takeover: takeover.map(|t| crate::model::Takeover {
                        source_epoch: t.source_epoch,
                        seq: t.seq,
                    }),
                    promoted,
                });
                (
                    if promoted { "promoted" } else { "adopted" },
                    primary,
                    epoch,
                )
            }
        };
        outcome.push(RebuildOutcome {
            namespace: namespace.name.clone(),
            verdict: verdict.into(),
            shard,
            epoch,
        });
    }
    // Held by a shard, unknown to the backup (made after it) and not being
    // deleted: reported, not routed — its policy is not known here.
    let mut unknown: BTreeSet<(String, String)> = BTreeSet::new();
    for (shard, answer) in answers {
        for name in &answer.held {
            if !state.namespaces.contains_key(name) && !state.deletions.contains_key(name) {
                unknown.insert((name.clone(), shard.clone()));
            }
        }
    }
    for (name, shard) in unknown {
        outcome.push(RebuildOutcome {
            namespace: name,
            verdict: "unknown".into(),
            shard,
            epoch: 0,
        });
    }
    (adoptions, outcome, conflicts)
}

fn summarize(outcome: &[RebuildOutcome]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcome {
        *counts.entry(o.verdict.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    format!(
        "rebuilt: {}",
        if parts.is_empty() {
            "no namespaces".into()
        } else {
            parts.join(", ")
        }
    )
}
