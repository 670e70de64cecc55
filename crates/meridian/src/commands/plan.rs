//! `meridian plan TOPOLOGY.toml`: monthly cost, expected RPO and RTO, and
//! warnings for a described deployment (the arithmetic is
//! `meridian_plan::plan`; this only reads the file and prints).

use crate::cli::OutputFormat;
use crate::output::print_table;
use anyhow::Context;
use std::path::Path;

pub fn run(format: OutputFormat, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let topology = meridian_plan::topology::Topology::parse(&text)?;
    let plan = meridian_plan::plan(&topology)?;
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let money = |v: f64| format!("{v:.2}");
    println!("monthly cost (in the price table's currency)");
    let c = &plan.cost;
    print_table(
        &["compute", "storage", "transfer", "backups", "total"],
        &[vec![
            money(c.compute),
            money(c.storage),
            money(c.transfer),
            money(c.backups),
            money(c.total),
        ]],
    );
    println!();
    print_table(
        &["region", "instances", "compute", "stored GB"],
        &plan
            .regions
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.instances.to_string(),
                    money(r.compute),
                    format!("{:.0}", r.stored_gb),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!();
    let seconds = |v: Option<f64>, unbounded: &str| match v {
        Some(v) if v < 1.0 => format!("{:.0} ms", v * 1e3),
        Some(v) if v < 120.0 => format!("{v:.1} s"),
        Some(v) if v < 7_200.0 => format!("{:.1} min", v / 60.0),
        Some(v) => format!("{:.1} h", v / 3_600.0),
        None => unbounded.to_string(),
    };
    print_table(
        &["namespace", "mode", "RPO", "RTO", "cross-region GB/month"],
        &plan
            .namespaces
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.mode.clone(),
                    format!(
                        "{}{}",
                        seconds(n.rpo_seconds, "unbounded"),
                        if n.rpo_assumed { " (assumed lag)" } else { "" }
                    ),
                    seconds(n.rto_seconds, "by hand"),
                    format!("{:.0}", n.transfer_gb),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if !plan.warnings.is_empty() {
        println!();
        println!("warnings");
        for warning in &plan.warnings {
            println!("  - {}", warning.message);
        }
    }
    Ok(())
}
