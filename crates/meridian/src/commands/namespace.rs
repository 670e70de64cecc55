//! `meridian namespace create|list|show|delete`.

use crate::cli::{NamespaceArgs, NamespaceCommand, OutputFormat};
use crate::output::{emit, emit_message};
use crate::target;
use serde_json::json;

pub async fn run(format: OutputFormat, args: NamespaceArgs) -> anyhow::Result<()> {
    let client = target::client(&args.target)?;
    match args.command {
        NamespaceCommand::Create { name } => {
            let info = client.create_namespace(&name).await?;
            emit_message(
                format,
                json!({ "name": info.name, "created_index": info.created_index }),
                &format!("created namespace {}", info.name),
            );
        }
        NamespaceCommand::List => {
            let namespaces = client.list_namespaces().await?;
            let json_rows: Vec<_> = namespaces
                .iter()
                .map(|n| json!({ "name": n.name, "keys": n.key_count, "created_index": n.created_index }))
                .collect();
            let rows = namespaces
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.key_count.to_string(),
                        n.created_index.to_string(),
                    ]
                })
                .collect();
            emit(
                format,
                json!({ "namespaces": json_rows }),
                &["name", "keys", "created_index"],
                rows,
            );
        }
        NamespaceCommand::Show { name } => {
            let namespaces = client.list_namespaces().await?;
            let info = namespaces
                .into_iter()
                .find(|n| n.name == name)
                .ok_or_else(|| anyhow::anyhow!("namespace {name:?} not found"))?;
            let integrity = client.check_integrity(&name).await?;
            let applied = integrity.header.map_or(0, |h| h.applied_index);
            emit(
                format,
                json!({ "name": info.name, "keys": info.key_count, "created_index": info.created_index, "digest": integrity.digest, "applied_index": applied }),
                &["name", "keys", "created_index", "digest"],
                vec![vec![
                    info.name,
                    info.key_count.to_string(),
                    info.created_index.to_string(),
                    integrity.digest,
                ]],
            );
        }
        NamespaceCommand::Delete { name } => {
            let keys = client.delete_namespace(&name).await?;
            emit_message(
                format,
                json!({ "name": name, "keys_deleted": keys }),
                &format!("deleted namespace {name} ({keys} keys)"),
            );
        }
    }
    Ok(())
}
