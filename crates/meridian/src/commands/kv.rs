//! `meridian kv put|get|delete|scan`, and for active-active namespaces
//! `incr|counter|sadd|srem|smembers`.

use crate::cli::{ConsistencyArg, KvArgs, KvCommand, OutputFormat};
use crate::output::{emit, emit_message, show_bytes};
use crate::target;
use meridian_client::pb;
use serde_json::json;

pub(crate) fn consistency(arg: Option<ConsistencyArg>) -> pb::Consistency {
    let Some(arg) = arg else {
        return pb::Consistency::Unspecified;
    };
    match arg {
        ConsistencyArg::Strong => pb::Consistency::Strong,
        ConsistencyArg::Bounded => pb::Consistency::Bounded,
        ConsistencyArg::Eventual => pb::Consistency::Eventual,
        ConsistencyArg::Session => pb::Consistency::Session,
    }
}

pub async fn run(format: OutputFormat, args: KvArgs) -> anyhow::Result<()> {
    let client = target::region_data_client(&args.target, args.via.as_deref())?;
    let args_kind = match &args.command {
        KvCommand::Sadd { .. } => Kind::Add,
        _ => Kind::Other,
    };
    match args.command {
        KvCommand::Put {
            namespace,
            key,
            value,
        } => {
            let response = client
                .put(&namespace, key.as_bytes(), value.as_bytes())
                .await?;
            emit_message(
                format,
                json!({ "namespace": namespace, "key": key, "version": response.version, "previous_version": response.previous_version }),
                &format!("OK version={}", response.version),
            );
        }
        KvCommand::Get {
            namespace,
            key,
            consistency: level,
        } => {
            match client
                .get(&namespace, key.as_bytes(), consistency(level))
                .await?
            {
                Some(kv) => emit_message(
                    format,
                    json!({ "namespace": namespace, "key": key, "found": true, "value": show_bytes(&kv.value), "version": kv.version }),
                    &show_bytes(&kv.value),
                ),
                None => {
                    emit_message(
                        format,
                        json!({ "namespace": namespace, "key": key, "found": false }),
                        "(not found)",
                    );
                }
            }
        }
        KvCommand::Delete { namespace, key } => {
            let response = client.delete(&namespace, key.as_bytes()).await?;
            emit_message(
                format,
                json!({ "namespace": namespace, "key": key, "deleted": response.deleted, "previous_version": response.previous_version }),
                if response.deleted {
                    "deleted"
                } else {
                    "(not found)"
                },
            );
        }
        KvCommand::Scan {
            namespace,
            prefix,
            start,
            end,
            limit,
            consistency: level,
        } => {
            let mut token = Vec::new();
            let mut kvs = Vec::new();
            loop {
                let page = (limit - kvs.len()).min(1000) as u32;
                let response = client
                    .scan(pb::ScanRequest {
                        namespace: namespace.clone(),
                        prefix: prefix.clone().unwrap_or_default().into_bytes(),
                        start: start.clone().unwrap_or_default().into_bytes(),
                        end: end.clone().unwrap_or_default().into_bytes(),
                        limit: page,
                        continuation_token: token,
                        read: Some(pb::ReadOptions {
                            consistency: consistency(level) as i32,
                            max_staleness_ms: 0,
                            ..Default::default()
                        }),
                    })
                    .await?;
                kvs.extend(response.kvs);
                token = response.continuation_token;
                if token.is_empty() || kvs.len() >= limit {
                    break;
                }
            }
            let json_rows: Vec<_> = kvs
                .iter()
                .map(|kv| json!({ "key": show_bytes(&kv.key), "value": show_bytes(&kv.value), "version": kv.version }))
                .collect();
            let rows = kvs
                .iter()
                .map(|kv| {
                    vec![
                        show_bytes(&kv.key),
                        kv.version.to_string(),
                        show_bytes(&kv.value),
                    ]
                })
                .collect();
            emit(
                format,
                json!({ "namespace": namespace, "kvs": json_rows, "more": !token.is_empty() }),
                &["key", "version", "value"],
                rows,
            );
        }
        KvCommand::Incr {
            namespace,
            key,
            delta,
        } => {
            let response = client.increment(&namespace, key.as_bytes(), delta).await?;
            emit_message(
                format,
                json!({ "namespace": namespace, "key": key, "value": response.value }),
                &response.value.to_string(),
            );
        }
        KvCommand::Counter { namespace, key } => {
            let response = client
                .get_counter(pb::GetCounterRequest {
                    namespace: namespace.clone(),
                    key: key.as_bytes().to_vec(),
                    read: None,
                })
                .await?;
            emit_message(
                format,
                json!({ "namespace": namespace, "key": key, "found": response.exists, "value": response.value }),
                &response.value.to_string(),
            );
        }
        KvCommand::Sadd {
            namespace,
            key,
            member,
        }
        | KvCommand::Srem {
            namespace,
            key,
            member,
        } => {
            let add = matches!(&args_kind, Kind::Add);
            client
                .set_update(
                    pb::SetUpdateRequest {
                        namespace: namespace.clone(),
                        key: key.as_bytes().to_vec(),
                        member: member.as_bytes().to_vec(),
                    },
                    add,
                )
                .await?;
            emit_message(
                format,
                json!({ "namespace": namespace, "key": key, "member": member, "added": add }),
                "OK",
            );
        }
        KvCommand::Smembers { namespace, key } => {
            let response = client
                .set_members(pb::SetMembersRequest {
                    namespace: namespace.clone(),
                    key: key.as_bytes().to_vec(),
                    read: None,
                })
                .await?;
            let members: Vec<String> = response.members.iter().map(|m| show_bytes(m)).collect();
            emit(
                format,
                json!({ "namespace": namespace, "key": key, "found": response.exists, "members": members }),
                &["member"],
                members.iter().map(|m| vec![m.clone()]).collect(),
            );
        }
    }
    Ok(())
}

/// Which set update a `sadd`/`srem` is.
enum Kind {
    Add,
    Other,
}
