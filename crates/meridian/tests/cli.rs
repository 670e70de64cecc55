//! The `meridian` command line end to end: a detached lab, client commands with
//! `--output json`, fault commands, and a foreground lab stopped by Ctrl-C.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .output()
        .expect("run meridian")
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let output = meridian(&all);
    assert!(
        output.status.success(),
        "meridian {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "meridian {args:?} printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Stops the lab in `dir` when dropped, even if the test fails.
/// The two tests start labs from separate `meridian` processes, which pick
/// free ports independently: run them one at a time so they cannot be handed
/// the same port.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct LabGuard<'a>(&'a Path);

impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        let _ = meridian(&["lab", "down", "--dir", &self.0.to_string_lossy()]);
    }
}

#[test]
fn detached_lab_and_client_commands() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let lab_arg = lab.to_string_lossy().to_string();
    let up = json(&[
        "lab",
        "up",
        "--dir",
        &lab_arg,
        "--regions",
        "us-east",
        "--detach",
    ]);
    let _guard = LabGuard(&lab);
    // Three control-plane members, three shard nodes, one gateway.
    assert_eq!(up["lab"]["processes"].as_array().unwrap().len(), 7);

    let status = json(&["lab", "status", "--dir", &lab_arg]);
    let all = status["processes"].as_array().unwrap();
    assert_eq!(all.len(), 7);
    for role in ["control", "gateway"] {
        assert!(
            all.iter()
                .any(|p| p["role"] == role && p["state"] == "running"),
            "{role}: {status}"
        );
    }
    assert_eq!(
        all.iter()
            .filter(|p| p["role"] == "control" && p["raft_role"] == "leader")
            .count(),
        1,
        "one control-plane leader: {status}"
    );
    let processes: Vec<&Value> = all.iter().filter(|p| p["role"] == "node").collect();
    assert_eq!(processes.len(), 3);
    for process in &processes {
        assert_eq!(process["role"], "node");
        assert_eq!(process["region"], "us-east");
        assert!(process["pid"].as_u64().is_some(), "{process}");
        assert!(
            process["endpoints"]["grpc"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
    assert_eq!(
        processes
            .iter()
            .filter(|p| p["raft_role"] == "leader")
            .count(),
        1,
        "exactly one leader: {status}"
    );

    let created = json(&["namespace", "create", "cli", "--lab", &lab_arg]);
    assert_eq!(created["placement"]["home_region"], "us-east");
    assert_eq!(created["placement"]["shard"], "us-east-s1");
    // Residency: a namespace that must stay in the EU cannot live in us-east.
    let refused = meridian(&[
        "namespace",
        "create",
        "eu-only",
        "--jurisdiction",
        "EU",
        "--lab",
        &lab_arg,
        "--output",
        "json",
    ]);
    assert!(!refused.status.success());
    let error: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("residency rule"),
        "{error}"
    );
    let put = json(&["kv", "put", "cli", "greeting", "hello", "--lab", &lab_arg]);
    assert!(put["version"].as_u64().unwrap() > 0);
    let get = json(&["kv", "get", "cli", "greeting", "--lab", &lab_arg]);
    assert_eq!(get["value"], "hello");
    assert_eq!(get["version"], put["version"]);
    let scan = json(&["kv", "scan", "cli", "--prefix", "gr", "--lab", &lab_arg]);
    assert_eq!(scan["kvs"].as_array().unwrap().len(), 1);
    let list = json(&["namespace", "list", "--lab", &lab_arg]);
    assert_eq!(list["namespaces"][0]["name"], "cli");

    // Errors are JSON too, with a failing exit status.
    let missing = meridian(&[
        "kv", "get", "nope", "k", "--lab", &lab_arg, "--output", "json",
    ]);
    assert!(!missing.status.success());
    let error: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("not found"),
        "{error}"
    );

    // Regions as the control plane knows them, and the health of their members.
    let regions = json(&["region", "list", "--lab", &lab_arg]);
    assert_eq!(regions["regions"][0]["name"], "us-east");
    assert_eq!(regions["regions"][0]["jurisdictions"][0], "US");
    assert_eq!(
        regions["regions"][0]["shards"][0]["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let health = json(&["region", "health", "--lab", &lab_arg]);
    let members = health["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["ready"] == true), "{health}");

    // The audit log: the changes above are in it, and its hash chain holds.
    let audit = json(&["audit", "list", "--lab", &lab_arg]);
    let records = audit["records"].as_array().unwrap();
    // The actor is the identity in the caller's certificate: the CLI's user,
    // and each node registering itself.
    let created = records
        .iter()
        .find(|r| {
            r["action"]
                .as_str()
                .unwrap()
                .contains("create namespace cli")
        })
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(created["target"], "namespace cli", "{created}");
    assert_eq!(
        created["actor"], "spiffe://meridian/user/admin",
        "{created}"
    );
    assert!(
        records.iter().any(|r| r["actor"]
            .as_str()
            .unwrap()
            .starts_with("spiffe://meridian/node/us-east/")),
        "{audit}"
    );
    assert!(
        records
            .windows(2)
            .all(|w| w[1]["prev_hash"] == w[0]["hash"]),
        "{audit}"
    );
    let only = json(&[
        "audit",
        "list",
        "--namespace",
        "cli",
        "--limit",
        "1",
        "--lab",
        &lab_arg,
    ]);
    assert_eq!(only["records"].as_array().unwrap().len(), 1, "{only}");
    let verified = json(&["audit", "verify", "--lab", &lab_arg]);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["records"], records.len(), "{verified}");

    // Backup locations: jurisdictions default to the region's and may not
    // claim another's; an s3:// URL needs the s3 build; adding the same one
    // again is a no-op; the audit log names the location.
    let vault = format!("file://{}", dir.path().join("us-vault").display());
    let added = json(&[
        "dr", "location", "add", "us-vault", &vault, "--region", "us-east", "--lab", &lab_arg,
    ]);
    assert_eq!(added["locations"][0]["jurisdictions"][0], "US", "{added}");
    json(&[
        "dr", "location", "add", "us-vault", &vault, "--region", "us-east", "--lab", &lab_arg,
    ]);
    let refused = |args: &[&str], why: &str| {
        let output = meridian(args);
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(
            !output.status.success() && stderr.contains(why),
            "{args:?}: {stderr}"
        );
    };
    refused(
        &[
            "dr",
            "location",
            "add",
            "fake-eu",
            "file:///tmp/fake-eu",
            "--region",
            "us-east",
            "--jurisdiction",
            "EU",
            "--lab",
            &lab_arg,
        ],
        "cannot claim",
    );
    refused(
        &[
            "dr",
            "location",
            "add",
            "cloud",
            "s3://bucket/backups",
            "--region",
            "us-east",
            "--lab",
            &lab_arg,
        ],
        "s3",
    );
    refused(
        &[
            "dr",
            "location",
            "add",
            "us-vault",
            "file:///elsewhere",
            "--region",
            "us-east",
            "--lab",
            &lab_arg,
        ],
        "not changed in place",
    );
    let listed = json(&["dr", "location", "list", "--lab", &lab_arg]);
    let names: Vec<&str> = listed["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["us-vault"], "{listed}");
    // A backup there: read back and checked before it is listed.
    let taken = json(&[
        "dr",
        "snapshot",
        "cli",
        "--location",
        "us-vault",
        "--lab",
        &lab_arg,
    ]);
    assert_eq!(taken["backups"][0]["verified"], true, "{taken}");
    let catalog = json(&["dr", "list", "--namespace", "cli", "--lab", &lab_arg]);
    assert_eq!(
        catalog["backups"][0]["backup_id"], taken["backups"][0]["backup_id"],
        "{catalog}"
    );
    let id = taken["backups"][0]["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    let valid = json(&["dr", "validate", &id, "--lab", &lab_arg]);
    assert_eq!(valid["ok"], true, "{valid}");
    // Damage one object: validation names it, exits non-zero, and the
    // catalog no longer lists the backup as verified.
    let chunk = dir
        .path()
        .join("us-vault/backups/cli")
        .join(&id)
        .join("chunk-000000");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&chunk, &bytes).unwrap();
    let output = meridian(&["dr", "validate", &id, "--output", "json", "--lab", &lab_arg]);
    assert!(!output.status.success(), "a damaged backup validated");
    // A failing command prints its report, then its error (both JSON).
    let report: Value = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(report["problem"], "damaged", "{report}");
    assert!(
        report["object"].as_str().unwrap().ends_with("chunk-000000"),
        "{report}"
    );
    let catalog = json(&["dr", "list", "--namespace", "cli", "--lab", &lab_arg]);
    assert_eq!(catalog["backups"][0]["verified"], false, "{catalog}");
    // Every namespace at once.
    let every = json(&[
        "dr",
        "snapshot",
        "--all",
        "--location",
        "us-vault",
        "--lab",
        &lab_arg,
    ]);
    assert_eq!(every["refused"].as_array().unwrap().len(), 0, "{every}");
    let taken = every["backups"].as_array().unwrap();
    assert!(
        taken.iter().any(|b| b["namespace"] == "cli")
            && taken.iter().all(|b| b["verified"] == true),
        "{every}"
    );
    let audit = json(&["audit", "list", "--lab", &lab_arg]);
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["target"] == "location us-vault" && r["outcome"] == "ok"),
        "{audit}"
    );
    // A restore into a new name runs as a job, followed to its end; the
    // restored digest is the backup's.
    let latest = taken.iter().find(|b| b["namespace"] == "cli").unwrap();
    let latest_id = latest["backup_id"].as_str().unwrap();
    let restored = json(&[
        "dr", "restore", latest_id, "--as", "cli-copy", "--lab", &lab_arg,
    ]);
    let job = &restored["jobs"][0];
    assert_eq!(job["state"], "succeeded", "{restored}");
    assert_eq!(job["namespace"], "cli-copy", "{restored}");
    assert_eq!(job["digest"], latest["digest"], "{restored}");
    let jobs = json(&["jobs", "list", "--lab", &lab_arg]);
    assert!(
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == job["id"] && j["kind"] == "restore"),
        "{jobs}"
    );
    let job_id = job["id"].to_string();
    let shown = json(&["jobs", "show", &job_id, "--lab", &lab_arg]);
    assert_eq!(shown["jobs"][0]["state"], "succeeded", "{shown}");
    refused(&["jobs", "cancel", &job_id, "--lab", &lab_arg], "has ended");
    refused(
        &[
            "dr",
            "restore",
            latest_id,
            "--as",
            "x",
            "--at",
            "yesterday",
            "--lab",
            &lab_arg,
        ],
        "change sequence",
    );
    refused(
        &["dr", "restore", latest_id, "--as", "cli", "--lab", &lab_arg],
        "already exists",
    );
    // A migration names what stops it before anything moves (a one-region
    // lab has nowhere to go; tests/migrate.rs moves namespaces).
    refused(
        &[
            "namespace",
            "migrate",
            "cli",
            "--to",
            "us-east",
            "--lab",
            &lab_arg,
        ],
        "its primary is in us-east already",
    );
    refused(
        &[
            "namespace",
            "migrate",
            "cli",
            "--to",
            "mars",
            "--lab",
            &lab_arg,
        ],
        "unknown region",
    );
    refused(
        &[
            "namespace",
            "migrate",
            "cli",
            "--to",
            "eu-west",
            "--keep-source",
            "5x",
            "--lab",
            &lab_arg,
        ],
        "--keep-source",
    );

    // The control plane's own backup: written, read back and checked;
    // listed; a restore is refused into a control plane that holds
    // namespaces; a schedule with a bad duration is refused naming it.
    let backup = json(&[
        "control",
        "backup",
        "--location",
        "us-vault",
        "--lab",
        &lab_arg,
    ]);
    assert_eq!(backup["backups"][0]["verified"], true, "{backup}");
    let backup_id = backup["backups"][0]["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = json(&["control", "backups", "--from", &vault, "--lab", &lab_arg]);
    assert_eq!(
        listed["backups"][0]["backup_id"],
        backup_id.as_str(),
        "{listed}"
    );
    assert!(listed["schedule"].is_null(), "{listed}");
    refused(
        &["control", "restore", "--from", &vault, "--lab", &lab_arg],
        "restores only into a new control plane",
    );
    refused(
        &[
            "control",
            "schedule",
            "--location",
            "us-vault",
            "--every",
            "1h",
            "--keep",
            "5x",
            "--lab",
            &lab_arg,
        ],
        "--keep",
    );
    refused(&["control", "restore", "--lab", &lab_arg], "url:");

    // The lab's read-only user reads, and is refused a write with a message
    // that names it and what it lacks; the refusal is in the audit log.
    let me = json(&["auth", "whoami", "--cert-name", "reader", "--lab", &lab_arg]);
    assert_eq!(me["caller"], "spiffe://meridian/user/reader", "{me}");
    assert_eq!(me["grants"][0]["role"], "reader", "{me}");
    let read = json(&[
        "kv",
        "get",
        "cli",
        "greeting",
        "--cert-name",
        "reader",
        "--lab",
        &lab_arg,
    ]);
    assert_eq!(read["value"], "hello", "{read}");
    let refused = meridian(&[
        "namespace",
        "create",
        "nope",
        "--cert-name",
        "reader",
        "--lab",
        &lab_arg,
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("permission denied")
            && stderr.contains("spiffe://meridian/user/reader may not administer namespace nope"),
        "{stderr}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = json(&[
            "audit",
            "list",
            "--actor",
            "spiffe://meridian/user/reader",
            "--lab",
            &lab_arg,
        ]);
        if audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"].as_str().unwrap().starts_with("refused"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal is not in the audit log: {audit}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Kill the leader through the CLI; the data is still there.
    let leader = processes
        .iter()
        .find(|p| p["raft_role"] == "leader")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    json(&["lab", "kill", &leader, "--dir", &lab_arg]);
    let get = json(&["kv", "get", "cli", "greeting", "--lab", &lab_arg]);
    assert_eq!(get["value"], "hello");
    // Readiness follows the election within a moment: poll until it settles.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = json(&["region", "health", "us-east", "--lab", &lab_arg]);
        let down = health["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["ready"] == false)
            .count();
        if down == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed node (and only it) should be reported: {health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    json(&["lab", "restart", &leader, "--dir", &lab_arg]);
    let status = json(&["lab", "status", "--dir", &lab_arg]);
    assert!(
        status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "running")
    );

    // Named workers: each role lists its background loops by name.
    let names_of = |listing: &Value, process: &str| -> Vec<(String, String)> {
        listing["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == process)
            .flat_map(|p| p["workers"].as_array().unwrap().clone())
            .map(|w| {
                (
                    w["name"].as_str().unwrap().to_string(),
                    w["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let everyone = json(&["workers", "--lab", &lab_arg]);
    assert_eq!(
        everyone["processes"].as_array().unwrap().len(),
        7,
        "{everyone}"
    );
    for (process, expected) in [
        (
            leader.as_str(),
            &[
                "routes-follower",
                "replicator",
                "raft-watcher",
                "health-reporter",
                "refusal-reporter",
                "certificate-reloader",
            ][..],
        ),
        (
            "control-1",
            &["prober", "job-runner", "deleter", "health-reporter"][..],
        ),
        (
            "gateway-us-east",
            &["routes-follower", "replica-prober", "health-reporter"][..],
        ),
    ] {
        let workers = names_of(&everyone, process);
        for name in expected {
            assert!(
                workers
                    .iter()
                    .any(|(n, state)| n == name && state == "running"),
                "{process} should run worker {name}: {workers:?}"
            );
        }
    }
    // --endpoint with --lab: the lab's certificates are used for the address.
    let node_address = processes[0]["endpoints"]["grpc"].as_str().unwrap();
    let one = json(&["workers", "--endpoint", node_address, "--lab", &lab_arg]);
    assert_eq!(one["processes"].as_array().unwrap().len(), 1, "{one}");
    assert!(
        names_of(&one, node_address)
            .iter()
            .any(|(n, _)| n == "replicator"),
        "{one}"
    );
    let only = json(&["workers", "--lab", &lab_arg, "--node", "control-2"]);
    assert_eq!(only["processes"].as_array().unwrap().len(), 1, "{only}");

    // A stopping server exits within about a second even though its peers
    // hold connections to it (a graceful gRPC shutdown waits for them): a
    // restart of a control-plane member used to take over 5 s.
    let started = Instant::now();
    json(&["lab", "restart", "control-2", "--dir", &lab_arg]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "restarting one member took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let down = json(&["lab", "down", "--dir", &lab_arg]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "lab down took {:?}",
        started.elapsed()
    );
    assert_eq!(down["stopped"].as_array().unwrap().len(), 7);
    for process in all {
        let pid = process["pid"].as_u64().unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "pid {pid} still runs"
        );
    }
    // The directory a lab was brought down in takes a new lab (the old
    // one's leftovers are replaced).
    let again = json(&[
        "lab",
        "up",
        "--dir",
        &lab_arg,
        "--regions",
        "us-east",
        "--detach",
    ]);
    assert_eq!(
        again["lab"]["processes"].as_array().unwrap().len(),
        7,
        "{again}"
    );
    let down = json(&["lab", "down", "--dir", &lab_arg]);
    assert_eq!(down["stopped"].as_array().unwrap().len(), 7);
}

fn is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn foreground_lab_stops_cleanly_on_ctrl_c() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let lab_arg = lab.to_string_lossy().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "lab",
            "up",
            "--dir",
            &lab_arg,
            "--regions",
            "us-east",
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = LabGuard(&lab);
    // `lab up` prints the lab (pretty JSON) once every node is ready.
    let stdout = child.stdout.take().unwrap();
    let mut printed = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.unwrap();
        let done = line == "}";
        printed.push_str(&line);
        printed.push('\n');
        if done {
            break;
        }
    }
    let up: Value = serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"));
    let pids: Vec<u64> = up["lab"]["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("lab up did not print a lab: {up}"))
        .iter()
        .map(|p| {
            p["pid"]
                .as_u64()
                .unwrap_or_else(|| panic!("a process without a pid: {up}"))
        })
        .collect();
    assert_eq!(pids.len(), 7);
    // SAFETY: signalling the child this test started.
    unsafe { libc_kill(child.id() as i32, 2) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "lab up exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lab up did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "node pid {pid} still runs"
        );
    }
    assert!(!lab.join("lab.json").exists(), "lab state removed");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn check_validates_a_configuration_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("node.toml");
    std::fs::write(
        &good,
        "[node]\nid = 2\nshard = \"us-east-s1\"\nregion = \"us-east\"\ndata_dir = \"/nonexistent/data\"\n\n[network]\ngrpc_listen = \"127.0.0.1:1\"\nhttp_listen = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let checked = json(&["node", "--config", good.to_str().unwrap(), "--check"]);
    assert_eq!(checked["ok"], true);
    assert_eq!(checked["config"]["node"]["id"], 2);
    // Nothing was created where the data would go.
    assert!(!Path::new("/nonexistent/data").exists());
    // A wrong value is named, with a non-zero exit.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nshard = \"s\"\nregion = \"r\"\n").unwrap();
    let refused = meridian(&["node", "--config", bad.to_str().unwrap(), "--check"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("node.id"), "{said}");
    // An unknown key too (every section refuses keys it does not know).
    std::fs::write(
        &bad,
        "[gateway]\nname = \"g\"\nregion = \"r\"\nnmae = \"typo\"\n",
    )
    .unwrap();
    let refused = meridian(&["gateway", "--config", bad.to_str().unwrap(), "--check"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("nmae"), "{said}");
}

#[test]
fn plan_prices_the_example_topology_and_names_what_it_cannot_do() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/plan/topology.toml");
    let plan = json(&["plan", example.to_str().unwrap()]);
    let total = plan["cost"]["total"].as_f64().unwrap();
    assert!((total - 2_386.16).abs() < 0.01, "{total}");
    let kinds: Vec<&str> = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["sync-single-standby", "rto-target-missed"]);
    assert_eq!(plan["namespaces"][1]["rpo_seconds"], 0.0);
    // A description that breaks a rule is refused, naming it.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&example).unwrap().replacen(
        "data_share = 0.5",
        "data_share = 0.9",
        1,
    );
    std::fs::write(&bad, text).unwrap();
    let refused = meridian(&["plan", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("more than the whole workload"), "{said}");
}
