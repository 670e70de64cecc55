//! What deciding one call costs: finding the caller (the identity in the
//! client certificate the TLS handshake verified, as every server reads it
//! per call) and `meridian_access::decide` over a policy with many grants.
//! Reported per call and as a share of a core at a given call rate, so it
//! can be set against the shard and gateway benchmarks' throughput.
//!
//!   meridian-authz-bench [--calls 1000000] [--grants 1000]
//!
//! Not part of the test suite.

use clap::Parser;
use meridian_access::policy::AccessChange;
use meridian_access::{AccessPolicy, Grant, Permission, Scope, Target};
use meridian_net::Identity;
use rustls::pki_types::pem::PemObject;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Calls decided per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u32,
    /// Grants in the policy (to other identities) besides the caller's.
    #[arg(long, default_value_t = 1_000)]
    grants: u32,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("meridian-authz-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    meridian_net::certs::init(
        &dir,
        &[Identity::User {
            name: "alice".into(),
        }],
    )?;
    let pem = std::fs::read(dir.join("alice.pem"))?;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| anyhow::anyhow!("no certificate in alice.pem"))??
        .as_ref()
        .to_vec();
    let _ = std::fs::remove_dir_all(&dir);

    let now = meridian_access::now_unix_ms();
    let mut policy = AccessPolicy::default();
    policy.apply_by(
        &AccessChange::Bootstrap {
            grants: vec![Grant::new("user/admin", "admin", Scope::All)?],
        },
        "bench",
        now,
    )?;
    for i in 0..args.grants {
        policy.apply_by(
            &AccessChange::Grant(Grant::new(
                &format!("user/u{i}"),
                "writer",
                Scope::Namespace(format!("ns{i}")),
            )?),
            "bench",
            now,
        )?;
    }
    policy.apply_by(
        &AccessChange::Grant(Grant::new(
            "user/alice",
            "writer",
            Scope::Prefix("orders".into()),
        )?),
        "bench",
        now,
    )?;
    let peer = meridian_net::accept::Peer::over_tls("127.0.0.1:9".parse()?, Some(&der));

    // The whole per-call path: the connection's peer reaches the request
    // (tonic clones it into every request), the caller is read from it, and
    // the decision is made.
    let whole = measure(args.calls, || {
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(peer.clone());
        let caller = meridian_access::caller::of_grpc(&request);
        meridian_access::decide(
            Some(&policy),
            &caller,
            Permission::Write,
            Target::Namespace("orders-eu"),
            now,
        )
        .is_ok()
    });
    let caller = {
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(peer.clone());
        meridian_access::caller::of_grpc(&request)
    };
    let decide_only = measure(args.calls, || {
        meridian_access::decide(
            Some(&policy),
            &caller,
            Permission::Write,
            Target::Namespace("orders-eu"),
            now,
        )
        .is_ok()
    });
    let request_only = measure(args.calls, || {
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(peer.clone());
        request.extensions().len() == 1
    });
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "calls": args.calls,
                "grants": args.grants + 2,
                "ns_per_call_whole_path": whole,
                "ns_per_call_decide": decide_only,
                "ns_per_call_request_with_peer": request_only,
            })
        );
    } else {
        println!(
            "policy with {} grants, {} calls each",
            args.grants + 2,
            args.calls
        );
        println!("whole per-call path      {whole:>8.0} ns");
        println!("  decide() alone         {decide_only:>8.0} ns");
        println!("  request + peer only    {request_only:>8.0} ns");
        for rate in [10_000u32, 50_000, 100_000] {
            println!(
                "at {rate:>6} calls/s: {:.2} % of one core",
                whole * f64::from(rate) / 1e9 * 100.0
            );
        }
    }
    Ok(())
}

/// Mean nanoseconds per call of `call` over `calls` calls (after a warm-up).
fn measure(calls: u32, mut call: impl FnMut() -> bool) -> f64 {
    let mut admitted = 0u64;
    for _ in 0..calls / 10 {
        admitted += u64::from(call());
    }
    let started = Instant::now();
    for _ in 0..calls {
        admitted += u64::from(call());
    }
    let elapsed = started.elapsed();
    assert!(admitted > 0, "every call was refused");
    elapsed.as_nanos() as f64 / f64::from(calls)
}
