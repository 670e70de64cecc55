//! `meridian auth`: roles, grants, API tokens and revoked identities, kept in
//! the control plane's replicated state and pushed to every gateway and node.

use crate::cli::{AuthArgs, AuthCommand, OutputFormat, RoleCommand, TokenCommand};
use crate::output::{emit, emit_message};
use meridian_client::pb;
use meridian_client::pb::change_access_request::Change;
use serde_json::json;

/// Parses `90s`, `30m`, `24h`, `7d` into seconds.
pub fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => anyhow::bail!("--ttl {text:?}: use a number with s, m, h or d (e.g. 24h)"),
    };
    let number: u64 = number.parse().map_err(|_| {
        anyhow::anyhow!("--ttl {text:?}: use a number with s, m, h or d (e.g. 24h)")
    })?;
    number
        .checked_mul(scale)
        .filter(|s| *s > 0)
        .ok_or_else(|| anyhow::anyhow!("--ttl {text:?} is out of range"))
}

fn scope(namespace: Option<String>) -> String {
    namespace.unwrap_or_else(|| "*".into())
}

fn grant_json(g: &pb::GrantInfo) -> serde_json::Value {
    json!({ "identity": g.identity, "role": g.role, "scope": g.scope })
}

fn token_json(t: &pb::TokenInfo) -> serde_json::Value {
    json!({
        "id": t.id,
        "role": t.role,
        "scope": t.scope,
        "created_by": t.created_by,
        "created_at_unix_ms": t.created_at_unix_ms,
        "expires_at_unix_ms": t.expires_at_unix_ms,
    })
}

async fn change(
    format: OutputFormat,
    control: &meridian_client::Client,
    change: Change,
    done: String,
) -> anyhow::Result<()> {
    let response = control.change_access(change).await?;
    emit_message(
        format,
        json!({
            "changed": done,
            "policy_version": response.policy_version,
            "routing_version": response.routing_version,
        }),
        &format!(
            "{done} (policy version {}, pushed at routing version {})",
            response.policy_version, response.routing_version
        ),
    );
    Ok(())
}

pub async fn run(format: OutputFormat, args: AuthArgs) -> anyhow::Result<()> {
    let control = crate::target::control_client(&args.target)?;
    match args.command {
        AuthCommand::Whoami => {
            let me = control.who_am_i().await?;
            let rows = me
                .grants
                .iter()
                .map(|g| vec![me.caller.clone(), g.role.clone(), g.scope.clone()])
                .collect();
            match format {
                OutputFormat::Json => emit(
                    format,
                    json!({
                        "caller": me.caller,
                        "plain_text": me.plain_text,
                        "grants": me.grants.iter().map(grant_json).collect::<Vec<_>>(),
                    }),
                    &[],
                    Vec::new(),
                ),
                OutputFormat::Table if me.plain_text => {
                    println!("{} (plain text: nothing is checked)", me.caller)
                }
                OutputFormat::Table if me.grants.is_empty() => {
                    println!("{} (no grants)", me.caller)
                }
                OutputFormat::Table => emit(format, json!({}), &["CALLER", "ROLE", "SCOPE"], rows),
            }
            Ok(())
        }
        AuthCommand::Role { command } => match command {
            RoleCommand::Create { name, permissions } => {
                let done = format!("role {name} = {}", permissions.join(", "));
                let role = pb::RoleInfo {
                    name,
                    permissions,
                    built_in: false,
                };
                change(format, &control, Change::PutRole(role), done).await
            }
            RoleCommand::Delete { name } => {
                let done = format!("role {name} deleted");
                change(format, &control, Change::DeleteRole(name), done).await
            }
            RoleCommand::List => {
                let access = control.list_access().await?;
                let rows = access
                    .roles
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.permissions.join(","),
                            if r.built_in { "built-in" } else { "custom" }.to_string(),
                        ]
                    })
                    .collect();
                emit(
                    format,
                    json!({ "roles": access.roles.iter().map(|r| json!({
                        "name": r.name, "permissions": r.permissions, "built_in": r.built_in,
                    })).collect::<Vec<_>>() }),
                    &["ROLE", "PERMISSIONS", "KIND"],
                    rows,
                );
                Ok(())
            }
        },
        AuthCommand::Grant {
            identity,
            role,
            namespace,
        } => {
            let scope = scope(namespace);
            let done = format!("granted {role} to {identity} on {scope}");
            let grant = pb::GrantInfo {
                identity,
                role,
                scope,
            };
            change(format, &control, Change::Grant(grant), done).await
        }
        AuthCommand::Revoke {
            identity,
            role,
            namespace,
        } => {
            let scope = scope(namespace);
            let done = format!("revoked {role} from {identity} on {scope}");
            let grant = pb::GrantInfo {
                identity,
                role,
                scope,
            };
            change(format, &control, Change::Revoke(grant), done).await
        }
        AuthCommand::RevokeIdentity { identity } => {
            let done = format!("{identity} revoked everywhere");
            change(format, &control, Change::RevokeIdentity(identity), done).await
        }
        AuthCommand::RestoreIdentity { identity } => {
            let done = format!("{identity} restored");
            change(format, &control, Change::RestoreIdentity(identity), done).await
        }
        AuthCommand::List => {
            let access = control.list_access().await?;
            let mut rows: Vec<Vec<String>> = access
                .grants
                .iter()
                .map(|g| {
                    vec![
                        "grant".into(),
                        g.identity.clone(),
                        g.role.clone(),
                        g.scope.clone(),
                    ]
                })
                .collect();
            rows.extend(access.tokens.iter().map(|t| {
                vec![
                    "token".into(),
                    format!("token:{}", t.id),
                    t.role.clone(),
                    t.scope.clone(),
                ]
            }));
            rows.extend(access.revoked.iter().map(|r| {
                vec![
                    "revoked".into(),
                    r.identity.clone(),
                    String::new(),
                    format!("by {}", r.revoked_by),
                ]
            }));
            emit(
                format,
                json!({
                    "policy_version": access.policy_version,
                    "grants": access.grants.iter().map(grant_json).collect::<Vec<_>>(),
                    "tokens": access.tokens.iter().map(token_json).collect::<Vec<_>>(),
                    "revoked": access.revoked.iter().map(|r| json!({
                        "identity": r.identity, "revoked_by": r.revoked_by, "at_unix_ms": r.at_unix_ms,
                    })).collect::<Vec<_>>(),
                }),
                &["KIND", "IDENTITY", "ROLE", "SCOPE"],
                rows,
            );
            Ok(())
        }
        AuthCommand::Token { command } => match command {
            TokenCommand::Create {
                role,
                namespace,
                ttl,
            } => {
                let ttl = parse_ttl(&ttl)?;
                let created = control.create_token(&role, &scope(namespace), ttl).await?;
                let info = created.info.unwrap_or_default();
                emit_message(
                    format,
                    json!({
                        "token": created.token,
                        "info": token_json(&info),
                        "routing_version": created.routing_version,
                    }),
                    &format!(
                        "{}\n(token {}: {} on {}, expires at {} ms; shown once — send it as `authorization: Bearer ...`)",
                        created.token, info.id, info.role, info.scope, info.expires_at_unix_ms
                    ),
                );
                Ok(())
            }
            TokenCommand::List => {
                let access = control.list_access().await?;
                let rows = access
                    .tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.role.clone(),
                            t.scope.clone(),
                            t.created_by.clone(),
                            t.expires_at_unix_ms.to_string(),
                        ]
                    })
                    .collect();
                emit(
                    format,
                    json!({ "tokens": access.tokens.iter().map(token_json).collect::<Vec<_>>() }),
                    &["ID", "ROLE", "SCOPE", "CREATED_BY", "EXPIRES_AT_MS"],
                    rows,
                );
                Ok(())
            }
            TokenCommand::Revoke { id } => {
                let done = format!("token {id} revoked");
                change(format, &control, Change::RevokeToken(id), done).await
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1_800);
        assert_eq!(parse_ttl("24h").unwrap(), 86_400);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        for bad in ["", "h", "24", "0h", "-1h", "1w", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
