//! `meridian certs init|issue`: a development CA and certificates.

use crate::cli::{CertsArgs, CertsCommand, OutputFormat};
use crate::output::emit_message;

pub fn run(format: OutputFormat, args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Init { dir, identities } => {
            let identities = parse(&identities)?;
            let issued = meridian_net::certs::init(&dir, &identities)?;
            report(format, &issued)
        }
        CertsCommand::Issue {
            dir,
            identities,
            replace,
        } => {
            let identities = parse(&identities)?;
            let issued = meridian_net::certs::issue(&dir, &identities, replace)?;
            report(format, &issued)
        }
    }
}

fn parse(identities: &[String]) -> anyhow::Result<Vec<meridian_net::Identity>> {
    Ok(identities
        .iter()
        .map(|text| meridian_net::Identity::parse(text))
        .collect::<Result<Vec<_>, _>>()?)
}

fn report(format: OutputFormat, issued: &meridian_net::certs::Issued) -> anyhow::Result<()> {
    let listing: Vec<String> = issued
        .certificates
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    emit_message(
        format,
        serde_json::to_value(issued)?,
        &format!(
            "CA: {}\ncertificates (key next to each, .key):\n  {}",
            issued.ca.display(),
            listing.join("\n  ")
        ),
    );
    Ok(())
}
