//! Finding the cluster a client command talks to.

use crate::cli::TargetArgs;
use anyhow::Context;
use meridian_client::Client;
use meridian_lab::LabState;

/// A client for `--endpoint`, or else for the nodes of the lab in `--lab`.
pub fn client(target: &TargetArgs) -> anyhow::Result<Client> {
    let endpoints = if !target.endpoint.is_empty() {
        target.endpoint.clone()
    } else {
        let state = LabState::load(&target.lab).with_context(|| {
            format!(
                "no --endpoint given and no lab found in {}",
                target.lab.display()
            )
        })?;
        state.node_endpoints(None)
    };
    Ok(Client::new(endpoints)?)
}
