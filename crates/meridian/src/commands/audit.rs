//! `meridian audit list|verify`: the control plane's audit log and its hash
//! chain (`meridian_control::audit`).

use crate::cli::{AuditArgs, AuditCommand, OutputFormat};
use crate::output::emit;
use meridian_client::pb;
use meridian_control::audit::ChainBreak;
use meridian_control::model::AuditRecord;
use serde_json::json;

/// Records per call.
const PAGE: u32 = 5_000;

/// Every record, in order, with the chain's anchor.
async fn fetch(control: &meridian_client::Client) -> anyhow::Result<([u8; 32], Vec<AuditRecord>)> {
    let mut records = Vec::new();
    let mut after = 0;
    let mut anchor = None;
    loop {
        let page = control.audit_page(after, PAGE).await?;
        anchor.get_or_insert(page.anchor.clone());
        let done = page.records.is_empty()
            || page.records.last().map(|r| r.sequence) >= Some(page.last_sequence);
        for record in page.records {
            after = record.sequence;
            records.push(convert(record)?);
        }
        if done {
            break;
        }
    }
    let anchor = hash(&anchor.unwrap_or_default(), "anchor")?;
    Ok((anchor, records))
}

fn hash(bytes: &[u8], what: &str) -> anyhow::Result<[u8; 32]> {
    if bytes.is_empty() {
        return Ok(meridian_control::audit::GENESIS);
    }
    bytes.try_into().map_err(|_| {
        anyhow::anyhow!(
            "the control plane sent a {what} of {} bytes, not 32",
            bytes.len()
        )
    })
}

fn convert(r: pb::AuditRecord) -> anyhow::Result<AuditRecord> {
    Ok(AuditRecord {
        prev_hash: hash(&r.prev_hash, "previous-record hash")?,
        hash: hash(&r.hash, "record hash")?,
        sequence: r.sequence,
        at_unix_ms: r.at_unix_ms,
        actor: r.actor,
        target: r.target,
        action: r.action,
        outcome: r.outcome,
    })
}

pub async fn run(format: OutputFormat, args: AuditArgs) -> anyhow::Result<()> {
    let control = crate::target::control_client(&args.target)?;
    let (anchor, records) = fetch(&control).await?;
    match args.command {
        AuditCommand::List {
            since,
            actor,
            namespace,
            limit,
        } => {
            let mut selected: Vec<&AuditRecord> = records
                .iter()
                .filter(|r| since.is_none_or(|t| r.at_unix_ms >= t))
                .filter(|r| actor.as_ref().is_none_or(|a| &r.actor == a))
                .filter(|r| {
                    namespace.as_ref().is_none_or(|ns| {
                        if r.target.is_empty() {
                            // Written before targets were recorded: the
                            // namespace is named in the action.
                            r.action.split_whitespace().any(|w| w == ns)
                        } else {
                            r.target == format!("namespace {ns}")
                        }
                    })
                })
                .collect();
            if let Some(limit) = limit {
                let skip = selected.len().saturating_sub(limit);
                selected.drain(..skip);
            }
            let rows = selected
                .iter()
                .map(|r| {
                    vec![
                        r.sequence.to_string(),
                        r.at_unix_ms.to_string(),
                        r.actor.clone(),
                        r.target.clone(),
                        r.action.clone(),
                        r.outcome.clone(),
                    ]
                })
                .collect();
            let json_records: Vec<_> = selected
                .iter()
                .map(|r| {
                    json!({
                        "sequence": r.sequence,
                        "at_unix_ms": r.at_unix_ms,
                        "actor": r.actor,
                        "target": r.target,
                        "action": r.action,
                        "outcome": r.outcome,
                        "prev_hash": hex::encode(r.prev_hash),
                        "hash": hex::encode(r.hash),
                    })
                })
                .collect();
            emit(
                format,
                json!({ "records": json_records }),
                &["SEQ", "AT_MS", "ACTOR", "TARGET", "ACTION", "OUTCOME"],
                rows,
            );
            Ok(())
        }
        AuditCommand::Verify => {
            let verdict = meridian_control::audit::verify(&anchor, &records);
            let (first, last) = (
                records.first().map_or(0, |r| r.sequence),
                records.last().map_or(0, |r| r.sequence),
            );
            let (ok, detail) = match &verdict {
                Ok(count) => (true, format!("{count} records ({first}..={last}) verify")),
                Err(err) => (false, err.to_string()),
            };
            let broken_at = match verdict {
                Err(ChainBreak::Altered { sequence } | ChainBreak::Unlinked { sequence }) => {
                    Some(sequence)
                }
                Err(ChainBreak::Gap { after, .. }) => Some(after + 1),
                Ok(_) => None,
            };
            emit(
                format,
                json!({
                    "verified": ok,
                    "records": records.len(),
                    "first": first,
                    "last": last,
                    "anchor": hex::encode(anchor),
                    "broken_at": broken_at,
                    "detail": detail,
                }),
                &["VERIFIED", "DETAIL"],
                vec![vec![ok.to_string(), detail.clone()]],
            );
            if ok {
                Ok(())
            } else {
                anyhow::bail!("audit chain broken: {detail}")
            }
        }
    }
}
