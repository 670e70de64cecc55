//! `meridian dr location add|list`: where backups go.

use crate::cli::{DrArgs, DrCommand, LocationCommand, OutputFormat};
use crate::output::emit;
use crate::target::{self, Target};
use meridian_client::pb;
use serde_json::json;

pub async fn run(format: OutputFormat, args: DrArgs) -> anyhow::Result<()> {
    let control = match target::resolve(&args.target, None)? {
        Target::Lab { control, .. } => control,
        Target::Direct(client) => client,
    };
    match args.command {
        DrCommand::Location { command } => match command {
            LocationCommand::Add {
                name,
                url,
                region,
                jurisdictions,
            } => {
                let stored = control
                    .put_location(pb::LocationInfo {
                        name,
                        url,
                        region,
                        jurisdictions,
                    })
                    .await?;
                print_locations(format, &[stored]);
            }
            LocationCommand::List => {
                let locations = control.list_locations().await?;
                print_locations(format, &locations);
            }
        },
    }
    Ok(())
}

fn print_locations(format: OutputFormat, locations: &[pb::LocationInfo]) {
    let rows = locations
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.region.clone(),
                l.jurisdictions.join(","),
                l.url.clone(),
            ]
        })
        .collect();
    let json_locations: Vec<_> = locations
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "url": l.url,
                "region": l.region,
                "jurisdictions": l.jurisdictions,
            })
        })
        .collect();
    emit(
        format,
        json!({ "locations": json_locations }),
        &["NAME", "REGION", "JURISDICTIONS", "URL"],
        rows,
    );
}
