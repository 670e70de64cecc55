//! Active-active namespaces with real processes, TLS and the WAN emulator:
//! writers in us-east and eu-west on the same keys, a 20 s partition between
//! the two regions while both keep writing (each succeeds locally), then the
//! heal: both copies reach the same digest within seconds, every counter is
//! the sum of its acknowledged increments, the set holds exactly the add-wins
//! result, and every register write that lost to a concurrent one is in the
//! conflict list. Also: session reads across regions, the type rule, strong
//! reads refused, the residency rule for peers and a byte scan of a region
//! that is not a peer.

mod common;

use common::{lab_client, multi_region_lab, region_nodes};
use meridian_client::{Client, ClientError, Reason, pb};
use meridian_lab::{Lab, ProcessRole};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NS: &str = "carts";
/// Keys both regions write (registers `r-N`, counters `c-N`).
const HOT_KEYS: u64 = 4;
const PARTITION: Duration = Duration::from_secs(20);
/// Starts every value written, for the byte scans.
const MARKER: &str = "AAV-";

async fn wait_for<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An active-active placement of `name` homed in us-east with a peer in
/// `peer`, jurisdictions US and EU.
fn peers(name: &str, peer: &str) -> pb::Placement {
    pb::Placement {
        name: name.into(),
        home_region: "us-east".into(),
        mode: pb::NamespaceMode::ActiveActive as i32,
        standby_regions: vec![peer.into()],
        allowed_jurisdictions: vec!["US".into(), "EU".into()],
        ..Default::default()
    }
}

fn gateway(lab: &Lab, region: &str) -> Client {
    lab_client(
        lab,
        lab.state().endpoints(ProcessRole::Gateway, Some(region)),
        Duration::from_secs(3),
    )
}

/// What one region's writer had acknowledged.
#[derive(Debug, Default)]
struct Written {
    /// Per counter key: the sum of acknowledged increments.
    sums: BTreeMap<String, i64>,
    /// Per counter key: the sum of increments whose outcome is unknown.
    unknown_sums: BTreeMap<String, i64>,
    /// Per register key: the last value written during the partition, if
    /// it was acknowledged (`None`: the last attempt's outcome is unknown).
    last_in_partition: BTreeMap<String, Option<String>>,
    /// Writes acknowledged while the partition was on.
    during_partition: u64,
    /// Register writes acknowledged in all.
    acked: u64,
}

/// Writes registers and counters on the hot keys through `client` until
/// `stop`, recording what was acknowledged.
async fn write_loop(
    client: Client,
    region: &'static str,
    written: Arc<Mutex<Written>>,
    partitioned: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = i % HOT_KEYS;
        let in_partition = partitioned.load(Ordering::Relaxed);
        let register = format!("r-{key}");
        let value = format!("{MARKER}{region}-{i}");
        let acked = client
            .put(NS, register.as_bytes(), value.as_bytes())
            .await
            .is_ok();
        written.lock().unwrap().acked += u64::from(acked);
        // Only a write both started and answered inside the partition is
        // surely concurrent with the other region's.
        if in_partition && partitioned.load(Ordering::Relaxed) {
            let mut w = written.lock().unwrap();
            w.last_in_partition.insert(register, acked.then_some(value));
            w.during_partition += u64::from(acked);
        }
        let counter = format!("c-{key}");
        let delta = (i % 5 + 1) as i64;
        match client.increment(NS, counter.as_bytes(), delta).await {
            Ok(_) => *written.lock().unwrap().sums.entry(counter).or_default() += delta,
            Err(ClientError::OutcomeUnknown(_)) => {
                *written
                    .lock()
                    .unwrap()
                    .unknown_sums
                    .entry(counter)
                    .or_default() += delta
            }
            Err(_) => {}
        }
        i += 1;
    }
}

async fn set_op(client: &Client, member: &str, add: bool) -> pb::SetUpdateResponse {
    client
        .set_update(
            pb::SetUpdateRequest {
                namespace: NS.into(),
                key: b"tags".to_vec(),
                member: member.as_bytes().to_vec(),
            },
            add,
        )
        .await
        .unwrap_or_else(|e| panic!("set update {member} {add}: {e}"))
}

async fn members(client: &Client) -> BTreeSet<String> {
    client
        .set_members(pb::SetMembersRequest {
            namespace: NS.into(),
            key: b"tags".to_vec(),
            read: Some(pb::ReadOptions {
                consistency: pb::Consistency::Eventual as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .members
        .into_iter()
        .map(|m| String::from_utf8(m).unwrap())
        .collect()
}

async fn counter(client: &Client, key: &str) -> i64 {
    client
        .get_counter(pb::GetCounterRequest {
            namespace: NS.into(),
            key: key.as_bytes().to_vec(),
            read: Some(pb::ReadOptions {
                consistency: pb::Consistency::Eventual as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .value
}

async fn register(client: &Client, key: &str) -> Option<String> {
    client
        .get(NS, key.as_bytes(), pb::Consistency::Eventual)
        .await
        .unwrap()
        .map(|kv| String::from_utf8(kv.value).unwrap())
}

/// A bounded read (5 s, 1,000 changes) of `key` from the eu-west peer.
async fn bounded_read(eu_nodes: &Client, key: &[u8]) -> Result<pb::GetResponse, ClientError> {
    eu_nodes
        .get_request(pb::GetRequest {
            namespace: NS.into(),
            key: key.to_vec(),
            read: Some(pb::ReadOptions {
                consistency: pb::Consistency::Bounded as i32,
                max_staleness_ms: 5_000,
                max_staleness_entries: 1_000,
                ..Default::default()
            }),
        })
        .await
}

async fn digests_equal(us: &Client, eu: &Client) -> bool {
    converged_key_count(us, eu).await.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_regions_write_through_a_partition_and_converge_with_every_loser_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let lab = multi_region_lab(dir.path()).await;
    let control = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    // A peer outside the namespace's jurisdictions is refused, naming the
    // rule and the region.
    let refused = control
        .place_namespace(peers("bad-peers", "ap-south"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::FailedPrecondition(_))
            && refused.to_string().contains("ap-south")
            && refused.to_string().contains("residency"),
        "{refused}"
    );
    control.place_namespace(peers(NS, "eu-west")).await.unwrap();
    let us = gateway(&lab, "us-east");
    let eu = gateway(&lab, "eu-west");
    let us_nodes = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(5));
    let eu_nodes = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(5));

    // The type rule, and strong reads refused with what to use.
    us.put(NS, b"typed", b"a register").await.unwrap();
    let wrong = us.increment(NS, b"typed", 1).await.unwrap_err();
    assert!(
        matches!(wrong, ClientError::InvalidArgument(_))
            && matches!(wrong.reason(), Some(Reason::WrongKeyType { .. }))
            && wrong.to_string().contains("the key is a register"),
        "{wrong}"
    );
    let strong = us
        .get(NS, b"typed", pb::Consistency::Strong)
        .await
        .unwrap_err();
    assert!(
        matches!(strong, ClientError::InvalidArgument(_)) && strong.to_string().contains("session"),
        "{strong}"
    );

    // Session: written through us-east, read through eu-west with the
    // token: the write is always there (the eu-west copy waits for it).
    for i in 0..20 {
        let value = format!("{MARKER}mine-{i}");
        let put = us.put(NS, b"session-key", value.as_bytes()).await.unwrap();
        assert!(!put.session_token.is_empty());
        let read = wait_for("a session read", Duration::from_secs(10), async || {
            match eu
                .get_request(pb::GetRequest {
                    namespace: NS.into(),
                    key: b"session-key".to_vec(),
                    read: Some(pb::ReadOptions {
                        consistency: pb::Consistency::Session as i32,
                        session_token: put.session_token.clone(),
                        ..Default::default()
                    }),
                })
                .await
            {
                Ok(response) => Some(response),
                // Not caught up within the wait: refused, never stale.
                Err(err) if matches!(err.reason(), Some(Reason::SessionBehind { .. })) => None,
                Err(err) => panic!("session read: {err}"),
            }
        })
        .await;
        assert_eq!(
            read.kv.map(|kv| kv.value),
            Some(value.into_bytes()),
            "a session read through eu-west missed the session's own write {i}"
        );
    }

    // The set, before the partition: both regions add "shared"; us-east
    // adds "us-only".
    set_op(&us, "shared", true).await;
    set_op(&eu, "shared", true).await;
    set_op(&us, "us-only", true).await;
    wait_for("the set everywhere", Duration::from_secs(10), async || {
        let want: BTreeSet<String> = ["shared", "us-only"].map(String::from).into();
        (members(&us).await == want && members(&eu).await == want).then_some(())
    })
    .await;

    // Bounded reads: served while eu-west hears from us-east within 5 s.
    wait_for(
        "a bounded read from eu-west",
        Duration::from_secs(10),
        async || bounded_read(&eu_nodes, b"typed").await.ok(),
    )
    .await;

    // Writers in both regions on the same keys, before, during and after
    // the partition.
    let stop = Arc::new(AtomicBool::new(false));
    let partitioned = Arc::new(AtomicBool::new(false));
    let us_written = Arc::new(Mutex::new(Written::default()));
    let eu_written = Arc::new(Mutex::new(Written::default()));
    let writers = [
        tokio::spawn(write_loop(
            gateway(&lab, "us-east"),
            "us-east",
            us_written.clone(),
            partitioned.clone(),
            stop.clone(),
        )),
        tokio::spawn(write_loop(
            gateway(&lab, "eu-west"),
            "eu-west",
            eu_written.clone(),
            partitioned.clone(),
            stop.clone(),
        )),
    ];
    wait_for(
        "both regions writing",
        Duration::from_secs(30),
        async || {
            let acked = |w: &Mutex<Written>| w.lock().unwrap().acked;
            (acked(&us_written) >= 10 && acked(&eu_written) >= 10).then_some(())
        },
    )
    .await;
    lab.partition("us-east", "eu-west").unwrap();
    let partitioned_at = Instant::now();
    partitioned.store(true, Ordering::Relaxed);
    // During the partition: us-east removes "shared" and "us-only";
    // eu-west, not seeing that, adds "shared" again and adds "eu-new".
    set_op(&us, "shared", false).await;
    set_op(&us, "us-only", false).await;
    set_op(&eu, "shared", true).await;
    set_op(&eu, "eu-new", true).await;
    // The partition lasts PARTITION, with both regions writing throughout.
    wait_for(
        "the partition's length, both regions writing",
        PARTITION * 2,
        async || {
            let during = |w: &Mutex<Written>| w.lock().unwrap().during_partition;
            (partitioned_at.elapsed() >= PARTITION
                && during(&us_written) >= 20
                && during(&eu_written) >= 20)
                .then_some(())
        },
    )
    .await;
    // The writers stop before the heal: each region's last write of a key
    // during the partition is its last write of it.
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    // Both regions kept writing locally the whole time.
    let (us_during, eu_during) = (
        us_written.lock().unwrap().during_partition,
        eu_written.lock().unwrap().during_partition,
    );
    assert!(
        us_during >= 20 && eu_during >= 20,
        "writes acknowledged during the partition: us-east {us_during}, eu-west {eu_during}"
    );
    // The copies differ while cut off, and eu-west, cut off for longer
    // than the bound, refuses bounded reads naming the region behind.
    assert!(!digests_equal(&us_nodes, &eu_nodes).await);
    let stale = bounded_read(&eu_nodes, b"typed").await.unwrap_err();
    assert!(
        matches!(stale, ClientError::FailedPrecondition(_))
            && stale.to_string().contains("region us-east"),
        "{stale}"
    );
    lab.heal("us-east", "eu-west").unwrap();
    let healed = Instant::now();
    wait_for(
        "equal digests after the heal",
        Duration::from_secs(30),
        async || digests_equal(&us_nodes, &eu_nodes).await.then_some(()),
    )
    .await;
    let converged = healed.elapsed();
    eprintln!(
        "converged {converged:?} after the heal ({us_during} + {eu_during} writes acknowledged during the {PARTITION:?} partition)"
    );
    assert!(converged < Duration::from_secs(15), "{converged:?}");
    wait_for(
        "bounded reads again after the heal",
        Duration::from_secs(10),
        async || bounded_read(&eu_nodes, b"typed").await.ok(),
    )
    .await;

    // Counters: the sum of every acknowledged increment, in both regions.
    let us_w = std::mem::take(&mut *us_written.lock().unwrap());
    let eu_w = std::mem::take(&mut *eu_written.lock().unwrap());
    for key in 0..HOT_KEYS {
        let key = format!("c-{key}");
        let acked = us_w.sums.get(&key).unwrap_or(&0) + eu_w.sums.get(&key).unwrap_or(&0);
        let unknown =
            us_w.unknown_sums.get(&key).unwrap_or(&0) + eu_w.unknown_sums.get(&key).unwrap_or(&0);
        for client in [&us, &eu] {
            let value = counter(client, &key).await;
            assert!(
                value >= acked && value <= acked + unknown,
                "{key}: {value}, acknowledged increments sum to {acked} (+{unknown} unknown)"
            );
        }
    }

    // The set: exactly the add-wins result. "shared" was re-added in
    // eu-west concurrently with its removal in us-east, so it stays;
    // "us-only" was removed with nothing concurrent; "eu-new" was added.
    let want: BTreeSet<String> = ["eu-new", "shared"].map(String::from).into();
    assert_eq!(members(&us).await, want);
    assert_eq!(members(&eu).await, want);

    // Registers: each region's last write of a key during the partition
    // (its last write of it: the writers stopped before the heal) was
    // concurrent with the other's; one wins everywhere, the other is in the
    // conflict list with both values and regions.
    let conflicts = us_nodes.list_conflicts(NS, 0, 10_000).await.unwrap();
    assert!(!conflicts.truncated, "more than one answer holds");
    let conflicts = conflicts.conflicts;
    let eu_conflicts = eu_nodes
        .list_conflicts(NS, 0, 10_000)
        .await
        .unwrap()
        .conflicts;
    // Paging with the cursor reads the same records, each once.
    let mut paged = Vec::new();
    let mut before = 0;
    loop {
        let page = us_nodes.list_conflicts(NS, before, 7).await.unwrap();
        paged.extend(page.conflicts.iter().map(|c| c.number));
        if !page.truncated {
            break;
        }
        assert!(page.next_before > 0, "{:?}", page.next_before);
        before = page.next_before;
    }
    assert_eq!(
        paged,
        conflicts.iter().map(|c| c.number).collect::<Vec<_>>(),
        "pages of 7 differ from one answer"
    );
    let losers: BTreeSet<(Vec<u8>, Vec<u8>)> = conflicts
        .iter()
        .chain(&eu_conflicts)
        .filter(|c| c.kind == "register")
        .filter_map(|c| {
            let loser = c.loser.as_ref()?;
            Some((c.key.clone(), loser.value.clone()?))
        })
        .collect();
    let mut checked = 0;
    for key in 0..HOT_KEYS {
        let key = format!("r-{key}");
        let (Some(Some(mine)), Some(Some(theirs))) = (
            us_w.last_in_partition.get(&key),
            eu_w.last_in_partition.get(&key),
        ) else {
            continue;
        };
        let now = register(&us, &key).await;
        assert_eq!(
            now,
            register(&eu, &key).await,
            "{key} differs between the regions"
        );
        let now = now.unwrap_or_default();
        assert!(
            now == *mine || now == *theirs,
            "{key}: {now} is neither last write"
        );
        let loser = if now == *mine { theirs } else { mine };
        assert!(
            losers.contains(&(key.as_bytes().to_vec(), loser.as_bytes().to_vec())),
            "{key}: the concurrent write {loser:?} lost to {now:?} and is not in the conflict list"
        );
        checked += 1;
    }
    assert!(checked > 0, "no conflict of the partition was checked");
    // The CLI's view lists them too (both regions' records, merged, each
    // conflict once), every one of them when it pages with --all.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "conflicts",
            "list",
            NS,
            "--limit",
            "7",
            "--all",
            "--output",
            "json",
        ])
        .args(["--lab", lab.state().dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stamp = |side: &Option<pb::ConflictSide>| {
        side.as_ref()
            .map(|s| (s.wall_ms, s.logical, s.region.clone()))
    };
    let distinct: BTreeSet<_> = conflicts
        .iter()
        .chain(&eu_conflicts)
        .map(|c| (c.key.clone(), stamp(&c.winner), stamp(&c.loser)))
        .collect();
    assert_eq!(
        listed["conflicts"].as_array().map(Vec::len),
        Some(distinct.len()),
        "{listed}"
    );
    assert_eq!(listed["truncated"], false, "{listed}");

    // Residency: ap-south holds no copy, so no byte of the namespace may be
    // in the storage of any of its processes (values opened with the lab's
    // at-rest key); a peer's storage holds them (the scan can find them).
    let mut lab = lab;
    lab.down().unwrap();
    let key_file = lab.state().dir.join(meridian_lab::topology::KEY_FILE);
    let mut peers_checked = 0;
    for process in lab
        .state()
        .processes
        .iter()
        .filter(|p| matches!(p.role, ProcessRole::Node | ProcessRole::Control))
    {
        let data_dir = process.config.with_file_name("data");
        let holds = common::storage_contains(&data_dir, &key_file, MARKER.as_bytes());
        if process.region == "ap-south" {
            assert!(!holds, "{} in ap-south holds bytes of {NS}", process.name);
        } else if process.role == ProcessRole::Node {
            assert!(holds, "peer node {} must hold {NS}", process.name);
            peers_checked += 1;
        }
    }
    assert_eq!(peers_checked, 2);
}

/// A gauge's value in a Prometheus text page (the first series named so).
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A peer whose clock is injected 5 s ahead refuses active-active writes
/// with reason `clock-skew` once the control plane has measured it, says so
/// in its metrics, and its region's gateway sends the writes to the other
/// peer; fixed, it takes writes again. Losing a peer region's node needs no
/// promotion: that region's gateway keeps writing through the other peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skewed_peer_refuses_writes_and_its_region_writes_through_another_peer() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = multi_region_lab(dir.path()).await;
    let control = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    control.place_namespace(peers(NS, "eu-west")).await.unwrap();
    let eu_gateway = gateway(&lab, "eu-west");
    let us_nodes = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(5));
    eu_gateway.put(NS, b"before", b"1").await.unwrap();

    // Backups of an active-active namespace are refused, saying why, by the
    // control plane (now and as a schedule) and by a peer's shard asked
    // directly; nothing is written to the location.
    let vault = dir.path().join("us-vault");
    control
        .put_location(pb::LocationInfo {
            name: "us-vault".into(),
            url: format!("file://{}", vault.display()),
            region: "us-east".into(),
            jurisdictions: Vec::new(),
        })
        .await
        .unwrap();
    let refused = control.snapshot(NS, "us-vault").await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("is active-active: backups of active-active namespaces are not supported"),
        "{refused}"
    );
    let refused = control
        .set_schedule(pb::ScheduleInfo {
            namespace: NS.into(),
            location: "us-vault".into(),
            every_ms: 60_000,
            keep_ms: 600_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("is active-active"),
        "{refused}"
    );
    // The shard's own guard, asked as the control plane asks.
    let as_control = meridian_net::Dialer::new(
        Default::default(),
        Some(
            &meridian_net::TlsFiles::in_dir(lab.state().certs.as_ref().unwrap(), "control-1")
                .load()
                .unwrap(),
        ),
    );
    let us_member = region_nodes(&lab, "us-east").remove(0);
    let refused = meridian_proto::v1::admin_client::AdminClient::new(
        as_control.lazy(&as_control.endpoint(&us_member).unwrap()),
    )
    .backup(pb::BackupRequest {
        namespace: NS.into(),
        backup_id: "aa-direct".into(),
        location_name: "us-vault".into(),
        location_url: format!("file://{}", vault.display()),
        location_region: "us-east".into(),
        jurisdictions: vec!["US".into(), "EU".into()],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("is active-active"),
        "{refused:?}"
    );
    assert!(
        common::all_files(&vault).is_empty(),
        "a refused backup wrote to its location"
    );

    // eu-west-1's clock jumps 5 s ahead (max_clock_offset_ms is 250).
    let node = lab.process("eu-west-1").unwrap().clone();
    let original = std::fs::read_to_string(&node.config).unwrap();
    let skewed = original.replace("[clock]\noffset_ms = 0", "[clock]\noffset_ms = 5000");
    assert_ne!(
        skewed, original,
        "the lab's node config has no [clock] section"
    );
    std::fs::write(&node.config, skewed).unwrap();
    lab.restart("eu-west-1").unwrap();
    lab.wait_ready(Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    let eu_node = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(5));
    let refused = wait_for(
        "the skewed peer to refuse writes",
        Duration::from_secs(30),
        async || match eu_node.put(NS, b"skewed", b"x").await {
            Err(err) if matches!(err.reason(), Some(Reason::ClockSkew { .. })) => Some(err),
            _ => None,
        },
    )
    .await;
    assert!(
        refused.to_string().contains("max_clock_offset_ms"),
        "{refused}"
    );
    let (status, metrics) = common::lab_https_get(&lab, "admin", &node.http, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        gauge(&metrics, "meridian_clock_skewed"),
        Some(1.0),
        "{metrics}"
    );
    let offset = gauge(&metrics, "meridian_clock_offset_seconds").unwrap();
    assert!((4.0..6.0).contains(&offset), "{offset}");
    // Its region's clients still write: the gateway sends them to us-east.
    eu_gateway
        .put(NS, b"through-us", b"2")
        .await
        .expect("a write through the skewed region's gateway");
    let found = us_nodes
        .get(NS, b"through-us", pb::Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(found.map(|kv| kv.value), Some(b"2".to_vec()));

    // Fixed: it takes writes again once measured within the bound.
    std::fs::write(&node.config, &original).unwrap();
    lab.restart("eu-west-1").unwrap();
    lab.wait_ready(Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    wait_for(
        "the fixed peer to take writes",
        Duration::from_secs(30),
        async || eu_node.put(NS, b"fixed", b"3").await.ok(),
    )
    .await;

    // Losing eu-west's peer: no promotion, its gateway writes through us-east.
    lab.kill("eu-west-1").unwrap();
    let lost_at = Instant::now();
    wait_for(
        "a write after losing the eu-west peer",
        Duration::from_secs(30),
        async || eu_gateway.put(NS, b"after-loss", b"4").await.ok(),
    )
    .await;
    eprintln!(
        "writes through eu-west resumed {:?} after its peer was killed",
        lost_at.elapsed()
    );
    assert!(
        control.list_failovers(Some(NS)).await.unwrap().is_empty(),
        "an active-active namespace was failed over"
    );
    for i in 0..10 {
        eu_gateway
            .put(NS, format!("loss-{i}").as_bytes(), b"5")
            .await
            .unwrap();
    }
}

/// The same session token works for an active-passive namespace: a client
/// that wrote through the primary reads its write from the standby (which
/// waits until it holds the token's position, never answering from
/// behind), and a token from the future is refused with `session-behind`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_tokens_gate_reads_on_an_active_passive_standby() {
    let dir = tempfile::tempdir().unwrap();
    let lab = multi_region_lab(dir.path()).await;
    let control = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    control
        .place_namespace(common::us_east_with_eu_standby("ledger"))
        .await
        .unwrap();
    let us = gateway(&lab, "us-east");
    let standby = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(5));
    let session_read = |token: Vec<u8>, key: &'static [u8]| {
        standby.get_request(pb::GetRequest {
            namespace: "ledger".into(),
            key: key.to_vec(),
            read: Some(pb::ReadOptions {
                consistency: pb::Consistency::Session as i32,
                session_token: token,
                ..Default::default()
            }),
        })
    };
    // The primary takes writes once it holds its lease.
    let mut put = wait_for(
        "a write to the primary",
        Duration::from_secs(30),
        async || us.put("ledger", b"k", b"v0").await.ok(),
    )
    .await;
    for i in 1..=20 {
        let value = format!("v{i}");
        put = us.put("ledger", b"k", value.as_bytes()).await.unwrap();
        let read = session_read(put.session_token.clone(), b"k")
            .await
            .unwrap_or_else(|e| panic!("session read {i} at the standby: {e}"));
        assert_eq!(
            read.kv.map(|kv| kv.value),
            Some(value.into_bytes()),
            "the standby answered a session read from behind its token"
        );
        assert!(!read.session_token.is_empty());
    }
    // A token ahead of anything written: refused after the wait, typed.
    let mut ahead =
        meridian_replication::session::SessionToken::decode(&put.session_token).unwrap();
    for position in ahead.0.values_mut() {
        *position += 1_000;
    }
    let refused = session_read(ahead.encode(), b"k").await.unwrap_err();
    assert!(
        matches!(refused.reason(), Some(Reason::SessionBehind { .. })),
        "{refused}"
    );
}

/// `namespace`'s key count on a region's copy, once its digest equals the
/// other region's (`None` until then).
async fn converged_key_count(us: &Client, eu: &Client) -> Option<u64> {
    match (us.check_integrity(NS).await, eu.check_integrity(NS).await) {
        (Ok(a), Ok(b)) if a.digest == b.digest && a.key_count == b.key_count => Some(a.key_count),
        _ => None,
    }
}

/// Deleted keys of an active-active namespace do not stay forever: once
/// both copies have merged past a delete, each drops its tombstone (the
/// key count falls to the live keys on both, digests equal), reads still
/// find nothing, and a key written again after its tombstone went is a
/// plain new write everywhere — no conflict recorded against the delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_keys_are_collected_on_every_copy_and_can_be_written_again() {
    const DELETED: usize = 40;
    const LIVE: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let lab = multi_region_lab(dir.path()).await;
    let control = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    control.place_namespace(peers(NS, "eu-west")).await.unwrap();
    let us = gateway(&lab, "us-east");
    let eu = gateway(&lab, "eu-west");
    let us_nodes = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(5));
    let eu_nodes = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(5));

    for i in 0..DELETED {
        let key = format!("gone-{i}");
        us.put(NS, key.as_bytes(), format!("{MARKER}{i}").as_bytes())
            .await
            .unwrap();
        // Half deleted where written, half in the other region.
        let deleter = if i % 2 == 0 { &us } else { &eu };
        wait_for(
            "the write in the other region",
            Duration::from_secs(10),
            async || register(&eu, &key).await.map(|_| ()),
        )
        .await;
        deleter.delete(NS, key.as_bytes()).await.unwrap();
    }
    for i in 0..LIVE {
        eu.put(NS, format!("live-{i}").as_bytes(), b"kept")
            .await
            .unwrap();
    }
    // Every key, deleted or not, is held until both copies merged past it;
    // then the deleted ones go on both.
    let count = wait_for(
        "tombstones collected on both copies",
        Duration::from_secs(60),
        async || {
            converged_key_count(&us_nodes, &eu_nodes)
                .await
                .filter(|count| *count == LIVE as u64)
        },
    )
    .await;
    assert_eq!(count, LIVE as u64);
    for i in (0..DELETED).step_by(7) {
        let key = format!("gone-{i}");
        assert_eq!(register(&us, &key).await, None, "{key} in us-east");
        assert_eq!(register(&eu, &key).await, None, "{key} in eu-west");
    }
    // The collected count is exported per namespace on every node.
    let nodes: Vec<_> = lab
        .state()
        .processes
        .iter()
        .filter(|p| p.role == ProcessRole::Node && (p.region == "us-east" || p.region == "eu-west"))
        .cloned()
        .collect();
    for node in &nodes {
        let counts = wait_for("the node's gauges", Duration::from_secs(10), async || {
            let (status, page) = common::lab_https_get(&lab, "admin", &node.http, "/metrics").await;
            let counts = (
                gauge(&page, "meridian_active_tombstones_collected")?,
                gauge(&page, "meridian_active_tombstones")?,
            );
            (status == 200 && counts == (DELETED as f64, 0.0)).then_some(counts)
        })
        .await;
        assert_eq!(counts, (DELETED as f64, 0.0), "{}", node.name);
    }

    // Written again, in each region, after the tombstones went.
    let put = eu.put(NS, b"gone-0", b"again-eu").await.unwrap();
    us.put(NS, b"gone-1", b"again-us").await.unwrap();
    let count = wait_for(
        "the new writes merged",
        Duration::from_secs(30),
        async || {
            converged_key_count(&us_nodes, &eu_nodes)
                .await
                .filter(|count| *count == LIVE as u64 + 2)
        },
    )
    .await;
    assert_eq!(count, LIVE as u64 + 2);
    assert!(!put.session_token.is_empty());
    assert_eq!(register(&us, "gone-0").await.as_deref(), Some("again-eu"));
    assert_eq!(register(&eu, "gone-1").await.as_deref(), Some("again-us"));
    for nodes in [&us_nodes, &eu_nodes] {
        let conflicts = nodes.list_conflicts(NS, 0, 10_000).await.unwrap().conflicts;
        assert!(
            conflicts.is_empty(),
            "no write here was concurrent: {conflicts:?}"
        );
    }
}
