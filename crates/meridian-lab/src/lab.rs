//! The [`Lab`] handle: start, inspect, fault and stop a topology.

use crate::error::LabError;
use crate::process;
use crate::state::{CLIENT_CERT, LabState, ProcessRecord, ProcessRole, READER_CERT, STATE_FORMAT};
use crate::topology::{self, Wiring};
use crate::wan::{self, WanSettings};
use meridian_net::Dialer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The target naming every control-plane member (`lab kill control`).
pub const CONTROL_TARGET: &str = "control";

/// What to start.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Directory for state, configs, data and logs.
    pub dir: PathBuf,
    /// Regions, one shard each.
    pub regions: Vec<String>,
    /// Nodes per shard.
    pub nodes: usize,
    /// The `meridian` binary to run.
    pub binary: PathBuf,
    /// Extra `MERIDIAN__SECTION__KEY` settings for every shard node (not for
    /// control-plane members or gateways, whose configurations differ).
    pub env: Vec<(String, String)>,
    /// Mutual TLS between every process (and for clients).
    pub tls: bool,
    /// Emulated WAN between regions (ignored with a single region).
    pub wan: Option<WanSettings>,
    /// Encryption at rest for every process (one key file for the lab).
    pub encryption: bool,
}

/// A running (or stopped) lab.
pub struct Lab {
    state: LabState,
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// How this handle (and tests through it) reach the lab's processes.
    dialer: Dialer,
    /// Children this handle started, so they can be reaped (a killed child that is
    /// never waited for lingers as a zombie).
    children: HashMap<String, Child>,
    /// Kill every child when dropped (tests); a detached lab leaves them running.
    kill_on_drop: bool,
}

/// What `lab down` leaves behind for inspection (data, logs, certificates,
/// the at-rest key) and the next `lab up` in the same directory replaces.
const LEFTOVERS: [&str; 4] = ["nodes", "processes", "certs", topology::KEY_FILE];

/// Removes a stopped lab's leftovers from `dir` (only the entries a lab
/// makes; anything else in the directory stays).
fn remove_leftovers(dir: &Path) -> Result<(), LabError> {
    for name in LEFTOVERS {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabError::io(format!("removing {}", path.display()), e)),
        }
    }
    Ok(())
}

/// Grace period for a clean stop before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Lab {
    /// Plans and starts every process of `spec`. Refuses if a lab is already
    /// running in the directory. Does not wait for readiness; see
    /// [`Lab::wait_ready`].
    pub fn up(spec: &LabSpec) -> Result<Self, LabError> {
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| LabError::io(format!("creating {}", spec.dir.display()), e))?;
        let dir = std::fs::canonicalize(&spec.dir)
            .map_err(|e| LabError::io(format!("resolving {}", spec.dir.display()), e))?;
        match LabState::load(&dir) {
            Ok(existing) => {
                let pids: Vec<u32> = existing
                    .processes
                    .iter()
                    .filter_map(|p| p.pid)
                    .filter(|pid| process::is_alive(*pid))
                    .collect();
                if !pids.is_empty() {
                    return Err(LabError::AlreadyRunning { dir, pids });
                }
                return Err(LabError::Invalid(format!(
                    "{} holds a stopped lab; remove it with `meridian lab down --dir {}` first",
                    dir.display(),
                    dir.display()
                )));
            }
            Err(LabError::NotFound { .. }) => remove_leftovers(&dir)?,
            Err(other) => return Err(other),
        }
        if spec.regions.is_empty() {
            return Err(LabError::Invalid("at least one region is needed".into()));
        }
        for region in &spec.regions {
            topology::validate_region(region)?;
        }
        // Allocate every process first: each configuration needs the others'
        // addresses (memberships, control endpoints, the WAN's dial-via tables).
        let mut processes = topology::allocate_control(&dir, &spec.regions)?;
        for region in &spec.regions {
            processes.extend(topology::allocate_region(&dir, region, spec.nodes)?);
        }
        for region in &spec.regions {
            processes.push(topology::allocate_gateway(&dir, region)?);
        }
        let mut wiring = Wiring {
            control: processes
                .iter()
                .filter(|p| p.role == ProcessRole::Control)
                .map(|p| p.grpc.clone())
                .collect(),
            control_regions: control_regions(&processes),
            certs: None,
            wan: None,
            regions: spec.regions.clone(),
            key_file: None,
        };
        // Encryption at rest: one key-encryption key for the lab.
        if spec.encryption {
            let key_file = dir.join(topology::KEY_FILE);
            meridian_raft::at_rest::create_key_file(&key_file)
                .map_err(|e| LabError::Invalid(format!("creating {}: {e}", key_file.display())))?;
            wiring.key_file = Some(key_file);
        }
        if let Some(settings) = spec.wan.as_ref().filter(|_| spec.regions.len() > 1) {
            settings.validate()?;
            let record = topology::allocate_wan(&dir)?;
            let http = topology::parse_addr(&record.http)?;
            wiring.wan = Some(wan::plan_links(&processes, &spec.regions, settings, http)?);
            // First, so links exist before anyone dials through them.
            processes.insert(0, record);
        }
        if spec.tls {
            let certs = dir.join("certs");
            // One identity per process (its region from the lab's plan, so
            // a node's certificate says where it runs), and the CLI's user.
            let mut identities: Vec<meridian_net::Identity> = processes
                .iter()
                .filter_map(|p| {
                    let (region, name) = (p.region.clone(), p.name.clone());
                    match p.role {
                        ProcessRole::Node => Some(meridian_net::Identity::Node { region, name }),
                        ProcessRole::Gateway => {
                            Some(meridian_net::Identity::Gateway { region, name })
                        }
                        ProcessRole::Control => Some(meridian_net::Identity::Control { name }),
                        ProcessRole::Wan => None,
                    }
                })
                .collect();
            // The CLI's users: an administrator and a read-only user (the
            // control plane's `[auth]` grants them their roles).
            for user in [CLIENT_CERT, READER_CERT] {
                identities.push(meridian_net::Identity::User {
                    name: user.to_string(),
                });
            }
            meridian_net::certs::init(&certs, &identities)
                .map_err(|e| LabError::Invalid(format!("creating lab certificates: {e}")))?;
            wiring.certs = Some(certs);
        }
        for record in &processes {
            topology::write_config(record, &processes, &wiring)?;
        }
        let state = LabState {
            format: STATE_FORMAT,
            dir,
            regions: spec.regions.clone(),
            certs: wiring.certs.clone(),
            processes,
            node_env: spec.env.clone(),
        };
        let mut lab = Self {
            dialer: state.client_dialer()?,
            state,
            binary: spec.binary.clone(),
            env: spec.env.clone(),
            children: HashMap::new(),
            kill_on_drop: false,
        };
        lab.state.save()?;
        let names: Vec<String> = lab.state.processes.iter().map(|p| p.name.clone()).collect();
        for name in names {
            if let Err(err) = lab.start_process(&name) {
                let _ = lab.down();
                return Err(err);
            }
        }
        Ok(lab)
    }

    /// Opens the lab recorded in `dir`.
    pub fn open(dir: &Path, binary: PathBuf) -> Result<Self, LabError> {
        let state = LabState::load(dir)?;
        Ok(Self {
            dialer: state.client_dialer()?,
            env: state.node_env.clone(),
            state,
            binary,
            children: HashMap::new(),
            kill_on_drop: false,
        })
    }

    /// Makes dropping this handle kill every process it knows (for tests).
    pub fn kill_on_drop(mut self) -> Self {
        self.kill_on_drop = true;
        self
    }

    /// The recorded state.
    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// The lab directory.
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    /// The record of the process called `name`.
    pub fn process(&self, name: &str) -> Option<&ProcessRecord> {
        self.state.processes.iter().find(|p| p.name == name)
    }

    /// Whether the named process is running.
    pub fn is_running(&mut self, name: &str) -> bool {
        if let Some(child) = self.children.get_mut(name)
            && matches!(child.try_wait(), Ok(Some(_)))
        {
            self.children.remove(name);
            return false;
        }
        self.process(name)
            .and_then(|p| p.pid)
            .is_some_and(process::is_alive)
    }

    /// Names of the processes `target` designates: a process name, every
    /// process of a region, or `control`: every control-plane member.
    pub fn resolve(&self, target: &str) -> Result<Vec<String>, LabError> {
        let matches: Vec<String> = self
            .state
            .processes
            .iter()
            .filter(|p| {
                p.name == target
                    || p.region == target
                    || (target == CONTROL_TARGET && p.role == ProcessRole::Control)
            })
            .map(|p| p.name.clone())
            .collect();
        if matches.is_empty() {
            let mut known: Vec<String> = self
                .state
                .processes
                .iter()
                .map(|p| p.name.clone())
                .collect();
            known.extend(self.state.regions.iter().cloned());
            known.push(CONTROL_TARGET.to_string());
            return Err(LabError::UnknownTarget {
                name: target.to_string(),
                known: known.join(", "),
            });
        }
        Ok(matches)
    }

    fn record_mut(&mut self, name: &str) -> Result<&mut ProcessRecord, LabError> {
        self.state
            .processes
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| LabError::UnknownTarget {
                name: name.to_string(),
                known: String::new(),
            })
    }

    fn start_process(&mut self, name: &str) -> Result<(), LabError> {
        let record = self.record_mut(name)?.clone();
        let config = record.config.to_string_lossy().to_string();
        let env: &[(String, String)] = match record.role {
            ProcessRole::Node => &self.env,
            _ => &[],
        };
        let child = process::spawn(
            &self.binary,
            &[record.role.command(), "--config", &config],
            env,
            &record.log,
        )?;
        let pid = child.id();
        self.children.insert(name.to_string(), child);
        self.record_mut(name)?.pid = Some(pid);
        self.state.save()
    }

    /// Starts one more node for the shard of `region`, outside its membership (add
    /// it with `AddNode`). Returns the new node's name.
    pub fn add_node(&mut self, region: &str) -> Result<String, LabError> {
        let shard = self
            .state
            .processes
            .iter()
            .find(|p| p.region == region && p.role == ProcessRole::Node)
            .and_then(|p| p.shard.clone())
            .ok_or_else(|| LabError::UnknownTarget {
                name: region.to_string(),
                known: self.state.regions.join(", "),
            })?;
        // Node ids are never reused within a shard.
        let node_id = self
            .state
            .processes
            .iter()
            .filter(|p| p.shard.as_deref() == Some(shard.as_str()))
            .filter_map(|p| p.node_id)
            .max()
            .unwrap_or(0)
            + 1;
        let wiring = self.wiring()?;
        let record = topology::plan_extra_node(&self.state.dir, region, &shard, node_id, &wiring)?;
        let name = record.name.clone();
        if let Some(certs) = &wiring.certs {
            // Its own identity, placing it in its region, like every node.
            meridian_net::certs::issue(
                certs,
                &[meridian_net::Identity::Node {
                    region: region.to_string(),
                    name: name.clone(),
                }],
                false,
            )
            .map_err(|e| LabError::Invalid(format!("issuing {name}'s certificate: {e}")))?;
        }
        self.state.processes.push(record);
        self.state.save()?;
        self.start_process(&name)?;
        Ok(name)
    }

    /// The wiring the lab's configurations were written with.
    fn wiring(&self) -> Result<Wiring, LabError> {
        let wan = match self.state.wan() {
            Some(record) => Some(
                meridian_wan::WanConfig::load(&record.config)
                    .map_err(|e| LabError::Invalid(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Wiring {
            control: self.state.endpoints(ProcessRole::Control, None),
            control_regions: control_regions(&self.state.processes),
            certs: self.state.certs.clone(),
            wan,
            regions: self.state.regions.clone(),
            key_file: Some(self.state.dir.join(topology::KEY_FILE)).filter(|p| p.exists()),
        })
    }

    /// A dialer that reaches this lab's processes as a client (with the lab's
    /// client certificate when mutual TLS is on).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Cuts every link between regions `a` and `b`, both directions.
    pub fn partition(&self, a: &str, b: &str) -> Result<String, LabError> {
        self.set_partition(a, b, true)
    }

    /// Restores every link between regions `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) -> Result<String, LabError> {
        self.set_partition(a, b, false)
    }

    fn set_partition(&self, a: &str, b: &str, partitioned: bool) -> Result<String, LabError> {
        for region in [a, b] {
            if !self.state.regions.iter().any(|r| r == region) {
                return Err(LabError::UnknownTarget {
                    name: region.to_string(),
                    known: self.state.regions.join(", "),
                });
            }
        }
        if a == b {
            return Err(LabError::Invalid(format!(
                "cannot partition {a} from itself; name two regions"
            )));
        }
        let wan = self.state.wan().ok_or_else(|| {
            LabError::Invalid(
                "this lab has no WAN emulator (one region, or started without it)".into(),
            )
        })?;
        wan::set_partition(&wan.http, a, b, partitioned)
    }

    /// The WAN links and their state (empty without an emulator).
    pub fn links(&self) -> Result<Vec<meridian_wan::LinkStatus>, LabError> {
        match self.state.wan() {
            Some(wan) => wan::links(&wan.http),
            None => Ok(Vec::new()),
        }
    }

    /// Kills the designated processes at once (SIGKILL), like a crash.
    pub fn kill(&mut self, target: &str) -> Result<Vec<String>, LabError> {
        let names = self.resolve(target)?;
        for name in &names {
            if let Some(pid) = self.record_mut(name)?.pid.take() {
                process::kill(pid, self.children.get_mut(name))?;
                self.children.remove(name);
            }
        }
        self.state.save()?;
        Ok(names)
    }

    /// Kills the designated processes and removes their storage, like the
    /// loss of their disks: a restart starts them empty (a node as a new
    /// member, a control-plane member as a new control plane when all of
    /// them are wiped). Returns the removed directories.
    pub fn kill_and_wipe(&mut self, target: &str) -> Result<Vec<PathBuf>, LabError> {
        let names = self.kill(target)?;
        let mut removed = Vec::new();
        for name in &names {
            let data = self.record_mut(name)?.config.with_file_name("data");
            if data.exists() {
                std::fs::remove_dir_all(&data)
                    .map_err(|e| LabError::io(format!("removing {}", data.display()), e))?;
                removed.push(data);
            }
        }
        Ok(removed)
    }

    /// Stops the designated processes cleanly (SIGTERM, then SIGKILL after a grace
    /// period).
    pub fn stop(&mut self, target: &str) -> Result<Vec<String>, LabError> {
        let names = self.resolve(target)?;
        self.stop_together(&names)?;
        self.state.save()?;
        Ok(names)
    }

    /// Signals every named process at once and waits for them together (a
    /// server exits within about a second of SIGTERM; SIGKILL after the
    /// grace period).
    fn stop_together(&mut self, names: &[String]) -> Result<(), LabError> {
        let mut pids = Vec::new();
        for name in names {
            if let Some(pid) = self.record_mut(name)?.pid.take() {
                pids.push((pid, self.children.remove(name)));
            }
        }
        process::stop_all(pids, STOP_GRACE)
    }

    /// Restarts the designated processes (stopping any that still run) with the
    /// same configuration, ports and data.
    pub fn restart(&mut self, target: &str) -> Result<Vec<String>, LabError> {
        let names = self.stop(target)?;
        for name in &names {
            self.start_process(name)?;
        }
        Ok(names)
    }

    /// Stops every process and removes the lab's state file (data and logs stay
    /// in the directory for inspection).
    pub fn down(&mut self) -> Result<Vec<String>, LabError> {
        let names: Vec<String> = self
            .state
            .processes
            .iter()
            .map(|p| p.name.clone())
            .collect();
        self.stop_together(&names)?;
        let path = LabState::path(&self.state.dir);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabError::io(format!("removing {}", path.display()), e)),
        }
        Ok(names)
    }

    /// Waits until every running node reports SERVING on the gRPC health service,
    /// calling `progress(ready, total)` as nodes become ready.
    pub async fn wait_ready(
        &mut self,
        timeout: Duration,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let started = Instant::now();
        let total = self
            .state
            .processes
            .iter()
            .filter(|p| p.pid.is_some())
            .count();
        let mut last_reported = usize::MAX;
        loop {
            let mut waiting = Vec::new();
            for record in self.state.processes.iter().filter(|p| p.pid.is_some()) {
                let serving = match record.role {
                    ProcessRole::Wan => wan::links(&record.http).is_ok(),
                    _ => is_serving(&self.dialer, &record.grpc).await,
                };
                if !serving {
                    waiting.push(record.name.clone());
                }
            }
            let ready = total - waiting.len();
            if ready != last_reported {
                progress(ready, total);
                last_reported = ready;
            }
            if waiting.is_empty() {
                return Ok(());
            }
            let dead: Vec<String> = waiting
                .iter()
                .filter(|name| !self.is_running(name))
                .cloned()
                .collect();
            if !dead.is_empty() {
                return Err(LabError::NotReady {
                    seconds: started.elapsed().as_secs(),
                    waiting: format!("{} exited", dead.join(", ")),
                    dir: self.state.dir.clone(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotReady {
                    seconds: timeout.as_secs(),
                    waiting: waiting.join(", "),
                    dir: self.state.dir.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The region of each control-plane member, by gRPC address.
fn control_regions(processes: &[ProcessRecord]) -> std::collections::BTreeMap<String, String> {
    processes
        .iter()
        .filter(|p| p.role == ProcessRole::Control)
        .map(|p| (p.grpc.clone(), p.region.clone()))
        .collect()
}

/// Whether the gRPC health service at `address` reports SERVING.
pub async fn is_serving(dialer: &Dialer, address: &str) -> bool {
    let Ok(endpoint) = dialer.endpoint(address) else {
        return false;
    };
    let endpoint = endpoint
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_millis(500));
    let Ok(channel) = dialer.connect(&endpoint).await else {
        return false;
    };
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(response) => response.into_inner().status == ServingStatus::Serving as i32,
        Err(_) => false,
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.kill_on_drop {
            for (_, child) in self.children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
