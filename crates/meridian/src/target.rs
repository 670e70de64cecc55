//! Finding the cluster a client command talks to.
//!
//! With `--endpoint`, calls go straight to those addresses (shard members, or a
//! gateway). Otherwise the lab in `--lab` is used: data calls go to a gateway
//! (the one in `--region`, or the first), administrative calls to the control
//! plane.

use crate::cli::TargetArgs;
use anyhow::Context;
use meridian_client::Client;
use meridian_lab::{LabState, ProcessRole};
use meridian_net::{Dialer, TlsFiles};

/// What a command wants to reach.
// Built once per command; boxing the clients would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// Explicit addresses.
    Direct(Client),
    /// A lab: its gateway and its control plane.
    Lab {
        /// Client for the chosen gateway.
        gateway: Client,
        /// Client for the control plane.
        control: Client,
        /// The lab's regions, in order.
        regions: Vec<String>,
    },
}

fn lab(target: &TargetArgs) -> anyhow::Result<LabState> {
    LabState::load(&target.lab).with_context(|| {
        format!(
            "no --endpoint given and no lab found in {}",
            target.lab.display()
        )
    })
}

/// The dialer for `--endpoint`: TLS with `--certs` if given, else with the
/// certificates of the lab in `--lab` if one is there (an address of a lab
/// process needs the lab's CA and client certificate), else plain text.
fn endpoint_dialer(target: &TargetArgs) -> anyhow::Result<Dialer> {
    if target.certs.is_none()
        && let Ok(state) = LabState::load(&target.lab)
    {
        return lab_dialer(target, &state);
    }
    let dialer = match &target.certs {
        // A tool with a token and the CA but no certificate of its own.
        Some(dir)
            if target.token.is_some()
                && !TlsFiles::in_dir(dir, &target.cert_name).cert.exists() =>
        {
            Dialer::trusting_ca(Default::default(), &dir.join("ca.pem"))?
        }
        Some(dir) => {
            let material = TlsFiles::in_dir(dir, &target.cert_name).load()?;
            Dialer::new(Default::default(), Some(&material))
        }
        None => Dialer::plaintext(),
    };
    with_token(target, dialer)
}

/// `dialer`, sending `--token` with every call when one is given.
fn with_token(target: &TargetArgs, dialer: Dialer) -> anyhow::Result<Dialer> {
    Ok(match &target.token {
        Some(token) => dialer.with_bearer_token(token)?,
        None => dialer,
    })
}

/// The lab's dialer for `--cert-name` (and `--token`).
fn lab_dialer(target: &TargetArgs, state: &LabState) -> anyhow::Result<Dialer> {
    with_token(target, state.client_dialer_as(&target.cert_name)?)
}

/// The dialer a client command uses: `--certs` with `--endpoint`, else the
/// lab's own client certificate (if the lab runs with TLS).
pub fn dialer(target: &TargetArgs) -> anyhow::Result<Dialer> {
    if !target.endpoint.is_empty() || target.certs.is_some() {
        return endpoint_dialer(target);
    }
    lab_dialer(target, &lab(target)?)
}

/// Shard nodes to act on one by one: `--endpoint`, or every shard node of
/// the lab; with the dialer to reach them.
pub fn shard_nodes(target: &TargetArgs) -> anyhow::Result<(Vec<String>, Dialer)> {
    if !target.endpoint.is_empty() {
        return Ok((target.endpoint.clone(), endpoint_dialer(target)?));
    }
    let state = lab(target)?;
    let nodes = state.endpoints(ProcessRole::Node, None);
    if nodes.is_empty() {
        anyhow::bail!("the lab in {} has no shard nodes", target.lab.display());
    }
    Ok((nodes, lab_dialer(target, &state)?))
}

/// Resolves `--endpoint` / `--lab` (and `--region` for the gateway).
pub fn resolve(target: &TargetArgs, region: Option<&str>) -> anyhow::Result<Target> {
    if !target.endpoint.is_empty() {
        return Ok(Target::Direct(Client::with_dialer(
            target.endpoint.clone(),
            endpoint_dialer(target)?,
        )?));
    }
    let state = lab(target)?;
    let dialer = lab_dialer(target, &state)?;
    // The chosen region's gateway first; the others are tried only when it
    // cannot be reached (its region may be down).
    let mut gateways = state.endpoints(ProcessRole::Gateway, region);
    for other in state.endpoints(ProcessRole::Gateway, None) {
        if !gateways.contains(&other) {
            gateways.push(other);
        }
    }
    let control = state.endpoints(ProcessRole::Control, None);
    if gateways.is_empty() || control.is_empty() {
        anyhow::bail!(
            "the lab in {} has no gateway or control plane; use --endpoint",
            target.lab.display()
        );
    }
    Ok(Target::Lab {
        gateway: Client::with_dialer(gateways, dialer.clone())?,
        control: Client::with_dialer(control, dialer)?,
        regions: state.regions.clone(),
    })
}

/// The control-plane client of `--endpoint` / `--lab`.
pub fn control_client(target: &TargetArgs) -> anyhow::Result<Client> {
    Ok(match resolve(target, None)? {
        Target::Lab { control, .. } => control,
        Target::Direct(client) => client,
    })
}

/// A control-plane client for long operations (failover, drain, promote: each
/// pauses writes, waits for standbys and compares digests across regions).
pub fn long_control_client(target: &TargetArgs) -> anyhow::Result<Client> {
    let (endpoints, dialer) = if target.endpoint.is_empty() {
        let state = lab(target)?;
        (
            state.endpoints(ProcessRole::Control, None),
            lab_dialer(target, &state)?,
        )
    } else {
        (target.endpoint.clone(), endpoint_dialer(target)?)
    };
    Ok(Client::with_options(
        endpoints,
        meridian_client::ClientOptions {
            attempt_timeout: std::time::Duration::from_secs(120),
            retry_budget: std::time::Duration::from_secs(120),
            dialer,
            ..Default::default()
        },
    )?)
}

/// A client for data calls: `--endpoint`, or the lab's gateway.
pub fn data_client(target: &TargetArgs) -> anyhow::Result<Client> {
    region_data_client(target, None)
}

/// A client for data calls through `region`'s gateway first (in a lab).
pub fn region_data_client(target: &TargetArgs, region: Option<&str>) -> anyhow::Result<Client> {
    Ok(match resolve(target, region)? {
        Target::Direct(client) => client,
        Target::Lab { gateway, .. } => gateway,
    })
}
