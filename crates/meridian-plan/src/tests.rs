use super::*;

const EXAMPLE: &str = include_str!("../../../deploy/plan/topology.toml");

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * b.abs().max(1.0)
}

#[test]
fn the_example_costs_what_the_arithmetic_by_hand_says() {
    let plan = plan(&Topology::parse(EXAMPLE).unwrap()).unwrap();
    // Compute: us-east and eu-west 6 x m6i.xlarge (3 nodes, 2 gateways, a
    // control member), ap-south 5 x m6i.large, 730 hours.
    let instances: Vec<u32> = plan.regions.iter().map(|r| r.instances).collect();
    assert_eq!(instances, [6, 6, 5]);
    assert!(close(
        plan.cost.compute,
        6.0 * 0.192 * 730.0 * 2.0 + 5.0 * 0.096 * 730.0
    ));
    // Storage: each copy x 1.5 overhead on each of 3 voters.
    let stored: Vec<f64> = plan.regions.iter().map(|r| r.stored_gb).collect();
    assert!(
        close(stored[0], 630.0) && close(stored[1], 630.0) && close(stored[2], 270.0),
        "{stored:?}"
    );
    assert!(close(plan.cost.storage, 1_530.0 * 0.08));
    // Transfer: orders ships 60 % of 2,000 x 512 B/s for 730 h to one
    // standby, payments 20 %, both at the default price.
    let month = 730.0 * 3_600.0;
    let orders_gb = 2_000.0 * 0.6 * 512.0 * month / 1e9;
    assert!(close(plan.namespaces[0].transfer_gb, orders_gb));
    assert!(close(
        plan.cost.transfer,
        (orders_gb + orders_gb / 3.0) * 0.02
    ));
    assert!(
        close(plan.cost.backups, 8_190.656 * 0.023),
        "{}",
        plan.cost.backups
    );
    assert!(close(
        plan.cost.total,
        plan.cost.compute + plan.cost.storage + plan.cost.transfer + plan.cost.backups
    ));
    // Recovery: async with 120 ms measured lag; sync; region-locked
    // restored from a 6-hourly backup at 21 MB/s.
    let rpo: Vec<Option<f64>> = plan.namespaces.iter().map(|n| n.rpo_seconds).collect();
    assert_eq!(rpo, [Some(0.12), Some(0.0), Some(21_600.0)]);
    let rto: Vec<Option<f64>> = plan.namespaces.iter().map(|n| n.rto_seconds).collect();
    assert_eq!(
        rto[0],
        Some(7.0),
        "3 probes of 1 s, a 3 s lease, a probe round"
    );
    assert!(close(rto[2].unwrap(), 60_000.0 / 21.0));
    let kinds: Vec<(WarningKind, &str)> = plan
        .warnings
        .iter()
        .map(|w| (w.kind, w.subject.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (WarningKind::SyncSingleStandby, "payments"),
            (WarningKind::RtoTargetMissed, "sessions-in"),
        ]
    );
}

/// A one-region topology to vary.
fn small() -> Topology {
    Topology::parse(
        r#"
[workload]
data_gb = 10.0
writes_per_second = 100.0
write_bytes = 1000.0
[prices]
storage_gb_month = 0.1
transfer_gb = 0.01
[prices.instance_hour]
"small" = 0.01
[[region]]
name = "a"
instance = "small"
nodes_per_shard = 3
[[region]]
name = "b"
instance = "small"
nodes_per_shard = 3
[[region]]
name = "c"
instance = "small"
nodes_per_shard = 3
control_member = false
[[namespace]]
name = "n"
home = "a"
mode = "active-passive"
standbys = ["b"]
data_share = 1.0
write_share = 1.0
"#,
    )
    .unwrap()
}

#[test]
fn warnings_table() {
    type Change = fn(&mut Topology);
    let cases: &[(&str, Change, &[WarningKind])] = &[
        (
            "two control regions",
            |_| {},
            &[WarningKind::LagAssumed, WarningKind::ControlQuorumAtRisk],
        ),
        (
            "measured lag, three control regions: nothing to say",
            |t| {
                t.namespaces[0].measured_lag_ms = Some(50.0);
                t.regions[2].control_member = true;
            },
            &[],
        ),
        (
            "sync with one standby",
            |t| {
                t.namespaces[0].sync = true;
                t.regions[2].control_member = true;
            },
            &[WarningKind::SyncSingleStandby],
        ),
        (
            "sync with two standbys",
            |t| {
                t.namespaces[0].sync = true;
                t.namespaces[0].standbys.push("c".into());
                t.regions[2].control_member = true;
            },
            &[],
        ),
        (
            "region-locked without backups",
            |t| {
                t.namespaces[0].mode = Mode::RegionLocked;
                t.namespaces[0].standbys.clear();
                t.regions[2].control_member = true;
            },
            &[WarningKind::NoRecoveryCopy],
        ),
        (
            "an RPO target the measured lag misses, an RTO target manual failover misses",
            |t| {
                t.namespaces[0].measured_lag_ms = Some(2_000.0);
                t.namespaces[0].rpo_target_seconds = Some(1.0);
                t.namespaces[0].rto_target_seconds = Some(60.0);
                t.failover.automatic = false;
                t.regions[2].control_member = true;
            },
            &[WarningKind::RpoTargetMissed, WarningKind::RtoTargetMissed],
        ),
        (
            "one-node shards",
            |t| {
                t.namespaces[0].measured_lag_ms = Some(50.0);
                t.regions[2].control_member = true;
                t.regions[1].nodes_per_shard = 1;
            },
            &[WarningKind::SmallShard],
        ),
    ];
    for (what, change, expected) in cases {
        let mut topology = small();
        change(&mut topology);
        let plan = plan(&topology).unwrap();
        let kinds: Vec<WarningKind> = plan.warnings.iter().map(|w| w.kind).collect();
        assert_eq!(&kinds, expected, "{what}: {:?}", plan.warnings);
    }
}

#[test]
fn active_active_ships_every_write_to_every_other_peer() {
    let mut topology = small();
    topology.namespaces[0].mode = Mode::ActiveActive;
    topology.namespaces[0].standbys = vec!["b".into(), "c".into()];
    topology.namespaces[0].measured_lag_ms = Some(300.0);
    let plan = plan(&topology).unwrap();
    let written = 100.0 * 1_000.0 * 730.0 * 3_600.0 / 1e9;
    // A third of the writes start in each region and go to two others.
    assert!(close(plan.namespaces[0].transfer_gb, written * 2.0));
    assert_eq!(plan.namespaces[0].rpo_seconds, Some(0.3));
    assert_eq!(plan.namespaces[0].rto_seconds, Some(3.0), "detection only");
}

#[test]
fn bad_descriptions_are_refused_naming_the_rule() {
    let base = EXAMPLE;
    let cases: &[(&str, &str, &str)] = &[
        (
            "instance = \"m6i.large\"",
            "instance = \"huge\"",
            "does not list",
        ),
        (
            "data_share = 0.5",
            "data_share = 0.9",
            "more than the whole workload",
        ),
        (
            "standbys = [\"eu-west\"]\ndata_share = 0.5",
            "standbys = [\"mars\"]\ndata_share = 0.5",
            "\"mars\"",
        ),
        (
            "writes_per_second = 2000.0",
            "writes_per_second = -1.0",
            "workload.writes_per_second",
        ),
        ("every_hours = 6", "every_hours = 0", "backups.every_hours"),
        (
            "mode = \"region-locked\"",
            "mode = \"region-locked\"\nstandbys = [\"us-east\"]",
            "cannot have standbys",
        ),
        (
            "failed_probes = 3",
            "failed_probes = 0",
            "failover.failed_probes",
        ),
        (
            "keep_days = 30",
            "keep_days = 30\nkeep_weeks = 4",
            "keep_weeks",
        ),
    ];
    for (from, to, named) in cases {
        assert!(base.contains(from), "{from}");
        let text = base.replacen(from, to, 1);
        let err = Topology::parse(&text).unwrap_err();
        assert!(err.to_string().contains(named), "{to}: {err}");
    }
}
