//! `meridian-sim`: runs seeds of the simulation (`cargo sim --seeds 10000`),
//! or replays one (`cargo sim --seed 42 --trace`).

use clap::Parser;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Parser)]
#[command(about = "Seeded deterministic simulation of Meridian's failover protocol")]
struct Args {
    /// Replay exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print the run's trace (with --seed).
    #[arg(long)]
    trace: bool,
    /// Keep every message in the trace (with --seed).
    #[arg(long)]
    verbose: bool,
    /// Output format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = args.output == "json";
    if let Some(seed) = args.seed {
        let report = meridian_sim::run(seed, args.verbose)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            if args.trace || !report.violations.is_empty() {
                for line in &report.trace {
                    println!("{line}");
                }
            }
            println!("seed {seed}: {:?}", report.stats);
            for v in &report.violations {
                println!("VIOLATION [{}] {}", v.invariant, v.detail);
            }
        }
        if !report.violations.is_empty() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let next = Arc::new(AtomicU64::new(args.from));
    let done = Arc::new(AtomicUsize::new(0));
    let end = args.from.saturating_add(args.seeds);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let totals = Arc::new(Mutex::new((0usize, 0usize, 0usize, 0usize)));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, done, failures, totals) =
                (next.clone(), done.clone(), failures.clone(), totals.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return Ok(());
                    }
                    let report = meridian_sim::run(seed, false)?;
                    {
                        let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                        t.0 += report.stats.operations;
                        t.1 += report.stats.failovers;
                        t.2 += report.stats.lost_writes;
                        t.3 += usize::from(report.stats.linearizability_inconclusive);
                    }
                    if !report.violations.is_empty() {
                        for v in &report.violations {
                            eprintln!("\nseed {seed}: VIOLATION [{}] {}", v.invariant, v.detail);
                        }
                        eprintln!("replay: cargo sim --seed {seed} --trace");
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((seed, report.violations));
                    }
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if !json && (finished % 10 == 0 || finished as u64 == end - args.from) {
                        eprint!("\r{finished}/{} seeds", end - args.from);
                        let _ = std::io::stderr().flush();
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a simulation worker panicked"))??;
    }
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let totals = *totals.lock().unwrap_or_else(|e| e.into_inner());
    let elapsed = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "from": args.from, "seeds": args.seeds, "seconds": elapsed,
                "operations": totals.0, "failovers": totals.1, "lost_writes": totals.2,
                "inconclusive": totals.3,
                "failed_seeds": failures.iter().map(|(s, v)| serde_json::json!({"seed": s, "violations": v})).collect::<Vec<_>>(),
            })
        );
    } else {
        eprintln!();
        println!(
            "{} seeds from {} in {elapsed:.0} s: {} operations, {} failovers, {} lost writes recorded, {} inconclusive checks, {} failed seeds {:?}",
            args.seeds,
            args.from,
            totals.0,
            totals.1,
            totals.2,
            totals.3,
            failures.len(),
            failures.iter().map(|(s, _)| *s).collect::<Vec<_>>()
        );
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
