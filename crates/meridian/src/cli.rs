//! The command-line grammar.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Meridian: a multi-region data and control plane.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
pub struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A readable table.
    Table,
    /// JSON, for scripts.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a shard node (`--config`), or act on running ones (`rekey`).
    Node(ShardNodeArgs),
    /// Run a control-plane member (`--config`), or back its state up and
    /// restore it (`backup`, `backups`, `restore`).
    Control(ControlArgs),
    /// Run a gateway.
    Gateway(NodeArgs),
    /// Read and write keys.
    Kv(KvArgs),
    /// Manage namespaces.
    Namespace(NamespaceArgs),
    /// Regions: list them, check their health.
    Region(RegionArgs),
    /// Run a whole topology on this machine.
    Lab(LabArgs),
    /// Move namespaces to a standby region (drained: nothing acknowledged is
    /// lost), and the failover history and lost writes.
    Failover(FailoverArgs),
    /// Replication state of active-passive namespaces.
    Replication(ReplicationArgs),
    /// Conflicts resolved in active-active namespaces.
    Conflicts(ConflictsArgs),
    /// Run the lab's WAN emulator (started by `meridian lab up`).
    Wan(NodeArgs),
    /// Development certificates for mutual TLS.
    Certs(CertsArgs),
    /// The control plane's audit log: list it, verify its hash chain.
    Audit(AuditArgs),
    /// Who may do what: roles, grants, API tokens, revoked identities.
    Auth(AuthArgs),
    /// Disaster recovery: backup locations, backups, validation, restores.
    Dr(DrArgs),
    /// Long-running jobs (restores): list, follow, cancel.
    Jobs(JobsArgs),
    /// Cost and recovery of a described deployment (regions, machines and
    /// a price table, namespaces and their modes, data size and write
    /// rate): monthly cost (compute, storage, cross-region transfer,
    /// backups), each namespace's expected RPO and RTO, and warnings about
    /// targets the topology cannot meet. Example: deploy/plan/topology.toml.
    Plan {
        /// The description (TOML).
        topology: PathBuf,
    },
    /// The named background workers of running processes (replication
    /// shippers, probers, lease and health loops, jobs) and their state:
    /// every process of the lab, one of them (`--node`), or the processes at
    /// `--endpoint`.
    Workers {
        #[command(flatten)]
        target: TargetArgs,
        /// Only this lab process (`us-east-1`, `control-2`,
        /// `gateway-eu-west`, as `meridian lab status` names them).
        #[arg(long)]
        node: Option<String>,
    },
}

/// `meridian jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// `meridian jobs ...`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job, oldest first: kind, state, step, progress.
    List,
    /// One job; with `--follow`, a progress bar until it ends (exits
    /// non-zero if it failed or was cancelled).
    Show {
        /// The job's id.
        id: u64,
        /// Follow it until it ends.
        #[arg(long)]
        follow: bool,
        /// Seconds to follow it.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Asks a running job to stop; it undoes what it made.
    Cancel {
        /// The job's id.
        id: u64,
    },
}

/// `meridian dr`.
#[derive(Debug, Args)]
pub struct DrArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: DrCommand,
}

/// `meridian dr ...`.
#[derive(Debug, Subcommand)]
pub enum DrCommand {
    /// Backup locations.
    Location {
        #[command(subcommand)]
        command: LocationCommand,
    },
    /// Backs a namespace up to a location: taken by a follower of its
    /// shard, compressed, encrypted, read back and digest-checked. Refused,
    /// naming the rule, if the location's jurisdictions are not allowed for
    /// the namespace.
    Snapshot {
        /// The namespace.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        namespace: Option<String>,
        /// Every namespace, one after another (those the location's
        /// jurisdictions do not allow are refused and listed; the command
        /// then exits non-zero).
        #[arg(long)]
        all: bool,
        /// The location (`meridian dr location list`).
        #[arg(long)]
        location: String,
        /// Only the changes since the namespace's latest backup in this
        /// location (refused when there is none, or the change log no longer
        /// reaches back to it: take a full backup then).
        #[arg(long)]
        incremental: bool,
    },
    /// Reads a backup back on a node of its namespace's shard: every object
    /// against the manifest, opened, digest compared. Names a missing or
    /// damaged object and exits non-zero (the catalog marks it unverified).
    Validate {
        /// The backup's id (`meridian dr list`).
        backup: String,
    },
    /// Restores a backup into a namespace, as a job the control plane runs
    /// (a new control-plane leader resumes it), with a progress bar; ends
    /// with the restored digest compared with the backup's. Refused, naming
    /// the rule, if the region is outside the backup's jurisdictions or the
    /// name is taken.
    Restore {
        /// The backup's id (`meridian dr list`).
        backup: String,
        /// The namespace to restore into (default: the backup's own name,
        /// which must be free — the namespace was lost or removed).
        #[arg(long = "as")]
        as_name: Option<String>,
        /// The region to restore into (default: the namespace's home region
        /// if it still exists, else the backup location's region).
        #[arg(long)]
        region: Option<String>,
        /// What to restore to (default: the backup's own change): a change
        /// sequence (anything from its chain's full backup through the
        /// backup), or a UTC time (`2026-12-01T07:30:00Z`): the namespace as
        /// it was at the last time mark at or before it (marks are about a
        /// second apart; nothing written after it is restored).
        #[arg(long)]
        at: Option<String>,
        /// Start the job and return without following it.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to follow the job.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Backs a namespace up on a schedule, from the control plane (jobs:
    /// `meridian jobs list`): incremental between full ones, and removes
    /// backups older than `--keep` (never the newest, nor one a kept
    /// backup's chain needs). `--off` removes the schedule (backups stay).
    Schedule {
        /// The namespace.
        namespace: String,
        /// The location (`meridian dr location list`).
        #[arg(long, required_unless_present = "off")]
        location: Option<String>,
        /// How often: a number and a unit, `s`, `m`, `h` or `d` (`6h`).
        #[arg(long, required_unless_present = "off")]
        every: Option<String>,
        /// How long backups are kept (`30d`); at least `--every`.
        #[arg(long, required_unless_present = "off")]
        keep: Option<String>,
        /// Incremental backups between two full ones (0: all full).
        #[arg(long, default_value_t = 6)]
        incrementals: u32,
        /// Remove the namespace's schedule.
        #[arg(long, conflicts_with_all = ["location", "every", "keep"])]
        off: bool,
    },
    /// The backup schedules, with each one's latest backup.
    Schedules,
    /// The backup catalog: state, size, change sequence, location, verified.
    List {
        /// Only this namespace's backups.
        #[arg(long)]
        namespace: Option<String>,
    },
}

/// `meridian dr location ...`.
#[derive(Debug, Subcommand)]
pub enum LocationCommand {
    /// Adds a place backups go: `file:///dir` (a directory on the node that
    /// writes the backup), or `s3://bucket/prefix` in builds with the `s3`
    /// feature. Its jurisdictions default to its region's and may only be
    /// among them; a namespace's backups only go where its jurisdictions allow.
    Add {
        /// Name (1-64 characters from a-z, 0-9, '-', '_').
        name: String,
        /// Object-store URL.
        url: String,
        /// The region it is in.
        #[arg(long)]
        region: String,
        /// Jurisdictions it may hold data of (comma-separated; default: the
        /// region's).
        #[arg(long = "jurisdiction", value_delimiter = ',')]
        jurisdictions: Vec<String>,
    },
    /// The backup locations.
    List,
}

/// `meridian auth`.
#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// `meridian auth ...`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Who the control plane takes you to be, and your grants.
    Whoami,
    /// Roles: built in (admin, writer, reader, viewer) and your own.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Grants a role to an identity (`user/alice` or its `spiffe://` URI).
    Grant {
        /// The identity.
        identity: String,
        /// The role.
        role: String,
        /// Only this namespace, or namespaces starting with `PREFIX*`
        /// (absent: all namespaces and the cluster).
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Takes a grant back.
    Revoke {
        /// The identity.
        identity: String,
        /// The role.
        role: String,
        /// The grant's scope, as granted.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Every grant, live token and revoked identity.
    List,
    /// API tokens, for tools that cannot present a certificate.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Refuses an identity everywhere (within the routing push's latency),
    /// whatever it was granted; for a lost or compromised certificate.
    RevokeIdentity {
        /// The identity.
        identity: String,
    },
    /// Takes an identity off the revoked list.
    RestoreIdentity {
        /// The identity.
        identity: String,
    },
}

/// `meridian auth role ...`.
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Defines (or redefines) a role.
    Create {
        /// Its name (a-z, 0-9, '-', '_').
        name: String,
        /// What it allows: read, write, view, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
    },
    /// Every role and what it allows.
    List,
    /// Deletes a role nobody holds.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `meridian auth token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a token; it is shown once. Send it as `authorization: Bearer TOKEN`
    /// (or `--token` / `MERIDIAN_TOKEN` with this CLI).
    Create {
        /// The role it carries.
        #[arg(long)]
        role: String,
        /// Only this namespace, or `PREFIX*` (absent: everywhere).
        #[arg(long)]
        namespace: Option<String>,
        /// How long it works: `90s`, `30m`, `24h`, `7d` (at most 90d).
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Live tokens (ids, roles, scopes, expiry; never secrets).
    List,
    /// Revokes a token by id.
    Revoke {
        /// Its id.
        id: String,
    },
}

/// `meridian audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// `meridian audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Records, oldest first.
    List {
        /// Only records at or after this time (Unix ms).
        #[arg(long)]
        since: Option<u64>,
        /// Only records of this actor.
        #[arg(long)]
        actor: Option<String>,
        /// Only records whose action names this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// At most this many (the newest ones).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Checks every record's hash and link: an edited, removed or reordered
    /// record is named. Exits non-zero if the chain is broken.
    Verify,
}

/// `meridian failover`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: Option<FailoverCommand>,
    /// The namespace to move.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Move every active-passive namespace homed in this region.
    #[arg(long)]
    pub from: Option<String>,
    /// The standby region to promote (default: the namespace's first standby).
    #[arg(long)]
    pub to: Option<String>,
    /// The primary is unreachable: do not drain, wait out its write lease.
    #[arg(long)]
    pub force: bool,
}

/// `meridian failover ...`.
#[derive(Debug, Subcommand)]
pub enum FailoverCommand {
    /// Every failover: cause, timing, and the possible loss window.
    History {
        /// Only this namespace's.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Writes an old primary acknowledged that never reached its successor.
    Lost {
        /// The namespace.
        namespace: String,
        /// Write each key's last lost value again through the current
        /// primary, only if the key has not changed since the failover
        /// (others are skipped and listed); then remove the records.
        #[arg(long, conflicts_with = "discard")]
        reapply: bool,
        /// Remove the records without writing anything.
        #[arg(long)]
        discard: bool,
    },
}

/// `--on-standby-loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StandbyLossArg {
    /// Refuse writes until standbys return.
    Refuse,
    /// Switch to async until standbys are current again.
    Degrade,
}

/// `meridian replication`.
#[derive(Debug, Args)]
pub struct ReplicationArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: ReplicationCommand,
}

/// `meridian replication ...`.
#[derive(Debug, Subcommand)]
pub enum ReplicationCommand {
    /// Lag of every standby, in changes and seconds.
    Lag {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
}

/// `meridian certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// `meridian certs ...`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a development CA and certificates signed by it, each carrying
    /// one identity (a `spiffe://meridian/...` URI). Nodes, gateways and
    /// control-plane members get server-and-client certificates; users get
    /// client-only ones. Give each process its own.
    Init {
        /// Directory to write `ca.pem`, `ca.key`, `NAME.pem` and `NAME.key` to
        /// (must not hold a CA already).
        #[arg(long)]
        dir: PathBuf,
        /// Identities: `node/REGION/NAME`, `gateway/REGION/NAME`,
        /// `control/NAME`, `user/NAME` (or the full `spiffe://meridian/...`
        /// URI). Files are named after NAME.
        #[arg(long = "identity", value_delimiter = ',', default_values_t = [String::from("node/local/node"), String::from("user/admin")])]
        identities: Vec<String>,
    },
    /// Sign more certificates with an existing development CA (`ca.pem`,
    /// `ca.key` in `--dir`): a new user, or a process's next certificate.
    Issue {
        /// Directory holding the CA; certificates are written next to it.
        #[arg(long)]
        dir: PathBuf,
        /// Identities, as for `init`.
        #[arg(long = "identity", value_delimiter = ',', required = true)]
        identities: Vec<String>,
        /// Overwrite existing `NAME.pem`/`NAME.key` (rotation: running
        /// processes reload them without a restart).
        #[arg(long)]
        replace: bool,
    },
}

/// Where a client command sends its calls.
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Member addresses (`host:port`, comma-separated). Overrides `--lab`.
    #[arg(long, global = true, value_delimiter = ',', env = "MERIDIAN_ENDPOINT")]
    pub endpoint: Vec<String>,
    /// Directory of a running lab whose nodes to use.
    #[arg(
        long,
        global = true,
        default_value = ".meridian-lab",
        env = "MERIDIAN_LAB"
    )]
    pub lab: PathBuf,
    /// With `--endpoint` on a TLS cluster: directory with `ca.pem` and this
    /// client's certificate (see `--cert-name`). A lab's are found by itself.
    #[arg(long, global = true, env = "MERIDIAN_CERTS")]
    pub certs: Option<PathBuf>,
    /// Name of the client certificate (`NAME.pem`, `NAME.key`) in `--certs`,
    /// or in a lab's certificates (`admin`, or `reader` for the read-only user).
    #[arg(long, global = true, default_value = "admin")]
    pub cert_name: String,
    /// An API token (`meridian auth token create`), sent as
    /// `authorization: Bearer ...` with every call; it decides what the call
    /// may do instead of the certificate.
    #[arg(long, global = true, env = "MERIDIAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `meridian node`: run one (`--config`), or a subcommand on running nodes.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ShardNodeArgs {
    #[command(flatten)]
    pub run: NodeArgs,
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
}

/// `meridian node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Encryption at rest: give each node a new data key and re-encrypt its
    /// stored values under it in the background, while it serves (a pass
    /// already running is reported, not restarted). Nodes: `--endpoint`, or
    /// every shard node of the lab.
    Rekey {
        #[command(flatten)]
        target: TargetArgs,
        /// Start the passes and return without waiting for them to end.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the passes to end.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

/// `meridian control`: run a member, or one of its subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ControlArgs {
    #[command(flatten)]
    pub run: NodeArgs,
    #[command(subcommand)]
    pub command: Option<ControlPlaneCommand>,
}

/// `meridian control` subcommands.
#[derive(Debug, Subcommand)]
pub enum ControlPlaneCommand {
    /// Back the control plane's own state up (regions, shards, namespaces,
    /// routes, epochs, roles, failovers, jobs, the audit chain) to a backup
    /// location; read back and checked before it is reported.
    Backup {
        #[command(flatten)]
        target: TargetArgs,
        /// The location (`meridian dr location list`).
        #[arg(long)]
        location: String,
    },
    /// Back the control plane up on a schedule (from its leader), and
    /// remove backups older than `--keep` (never the newest). `--off`
    /// removes the schedule (backups stay).
    Schedule {
        #[command(flatten)]
        target: TargetArgs,
        /// The location (`meridian dr location list`).
        #[arg(long, required_unless_present = "off")]
        location: Option<String>,
        /// How often: a number and a unit, `s`, `m`, `h` or `d` (`1h`).
        #[arg(long, required_unless_present = "off")]
        every: Option<String>,
        /// How long backups are kept (`7d`); at least `--every`.
        #[arg(long, required_unless_present = "off")]
        keep: Option<String>,
        /// Remove the schedule.
        #[arg(long, conflicts_with_all = ["location", "every", "keep"])]
        off: bool,
    },
    /// The control-plane backups at a location, oldest first (and the
    /// schedule, if any).
    Backups {
        #[command(flatten)]
        target: TargetArgs,
        /// The location by name.
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        location: Option<String>,
        /// The location's URL (a new control plane knows no locations yet).
        #[arg(long)]
        from: Option<String>,
    },
    /// Rebuild a lost control plane: restore a backup into a new, empty
    /// one, then (a job) ask every shard what it holds before any lease is
    /// granted, and place each namespace where its newest primary is.
    /// Again while that job waits, with `--lost`, it stops waiting for
    /// shards that are gone.
    Restore {
        #[command(flatten)]
        target: TargetArgs,
        /// The location's URL (`file:///dir`, `s3://bucket/prefix`).
        #[arg(long)]
        from: Option<String>,
        /// The backup (default: the newest at the location).
        #[arg(long)]
        backup: Option<String>,
        /// A shard not to wait for (it is gone); repeat for several.
        #[arg(long = "lost")]
        lost: Vec<String>,
        /// Start the rebuild and return without following it.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to follow the rebuild.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

/// `meridian node`, `control`, `gateway`, `wan`: run one process.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Configuration file (TOML). Every key can be overridden with
    /// `MERIDIAN__SECTION__KEY` environment variables.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only load and check the configuration (syntax, values, limits; the
    /// files it names are not opened, no port is bound), print what it
    /// resolves to, and exit: non-zero, naming the problem, if it is wrong.
    #[arg(long)]
    pub check: bool,
}

/// `meridian kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// In a lab: go through this region's gateway (the first region's by
    /// default; the others only if it cannot be reached).
    #[arg(long, global = true)]
    pub via: Option<String>,
    #[command(subcommand)]
    pub command: KvCommand,
}

/// Read consistency on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// Linearizable.
    Strong,
    /// Leader-served without a quorum round while its lease holds.
    Bounded,
    /// Any replica, possibly stale.
    Eventual,
    /// Read-your-writes with a session token (active-active: the default
    /// a peer serves without a token is its own copy).
    Session,
}

/// `meridian kv ...`.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Write a key.
    Put {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Read a key.
    Get {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Read consistency (default: the namespace's — strong, or for an
        /// active-active namespace the serving peer's copy).
        #[arg(long, value_enum)]
        consistency: Option<ConsistencyArg>,
    },
    /// Remove a key.
    Delete {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// List keys by prefix or range.
    Scan {
        /// Namespace.
        namespace: String,
        /// Only keys starting with this.
        #[arg(long, conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        /// Inclusive lower bound.
        #[arg(long)]
        start: Option<String>,
        /// Exclusive upper bound.
        #[arg(long)]
        end: Option<String>,
        /// Most keys to list in all.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Read consistency (default: the namespace's — strong, or for an
        /// active-active namespace the serving peer's copy).
        #[arg(long, value_enum)]
        consistency: Option<ConsistencyArg>,
    },
    /// Active-active: add a signed delta to a counter key (prints its value).
    Incr {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The delta (negative to decrement).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Active-active: read a counter key.
    Counter {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// Active-active: add a member to a set key.
    Sadd {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Member.
        member: String,
    },
    /// Active-active: remove a member from a set key.
    Srem {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Member.
        member: String,
    },
    /// Active-active: list a set key's members.
    Smembers {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
}

/// `meridian conflicts`.
#[derive(Debug, Args)]
pub struct ConflictsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: ConflictsCommand,
}

/// `meridian conflicts ...`.
#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// Writes to an active-active namespace that lost to a concurrent write,
    /// as every peer recorded them (both values, stamps and regions).
    List {
        /// The namespace.
        namespace: String,
        /// Most records to ask each peer for (newest first; 0: 1,000; an
        /// answer also stops at 3 MiB); with --all, the size of each page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Every record each peer keeps: reads on, page by page, until the
        /// oldest.
        #[arg(long)]
        all: bool,
    },
}

/// `meridian namespace`.
#[derive(Debug, Args)]
pub struct NamespaceArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: NamespaceCommand,
}

/// `meridian namespace ...`.
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Create a namespace.
    Create {
        /// Name: 1-63 of a-z, 0-9, '-', '_', '.'.
        name: String,
        /// Home region (lab: defaults to the first region).
        #[arg(long)]
        region: Option<String>,
        /// Jurisdictions the data may be stored in (default: the home region's).
        #[arg(long, value_delimiter = ',')]
        jurisdiction: Vec<String>,
        /// Replication mode.
        #[arg(long, value_enum, default_value_t = ModeArg::RegionLocked)]
        mode: ModeArg,
        /// Active-passive: acknowledge writes only once a standby region has them.
        #[arg(long)]
        sync: bool,
        /// Standby (or, active-active, peer) regions.
        #[arg(long, value_delimiter = ',', alias = "peers")]
        standby: Vec<String>,
        /// RPO gate: refuse writes while a standby is further behind than this —
        /// a number of changes (`500`) or a time (`2s`, `750ms`).
        #[arg(long, value_parser = parse_max_lag)]
        max_lag: Option<MaxLagArg>,
        /// Fail this namespace over after this many consecutive failed probes
        /// of its primary (default: the control plane's policy).
        #[arg(long)]
        failover_probes: Option<u32>,
        /// Also fail it over when its primary's probe p99 stays above this (ms).
        #[arg(long)]
        failover_p99_ms: Option<u64>,
        /// Never fail it over automatically; only `meridian failover` moves it.
        #[arg(long)]
        manual_failover: bool,
        /// Sync only: when too few standbys can confirm writes, `refuse`
        /// writes (default) or `degrade` to async (audited, in the failover
        /// history, a metric) until enough standbys are current again.
        #[arg(long, value_enum, default_value = "refuse")]
        on_standby_loss: StandbyLossArg,
    },
    /// List namespaces.
    List,
    /// Show one namespace with its integrity digest.
    Show {
        /// Name.
        name: String,
    },
    /// Delete a namespace and all its keys.
    Delete {
        /// Name.
        name: String,
    },
    /// Moves the namespace's primary copy to another region while it keeps
    /// serving: a copy there is filled and caught up, writes are blocked
    /// for a moment (at most `--max-blocked-ms`, measured and recorded)
    /// while the last changes ship and both digests are compared, the route
    /// switches, and after `--keep-source` the old copy is erased. Out of
    /// budget or with differing digests it rolls back, the source still
    /// primary. A job (`meridian jobs show ID`).
    Migrate {
        /// Name.
        name: String,
        /// The region to move to (within the namespace's jurisdictions).
        #[arg(long)]
        to: String,
        /// Longest write block allowed at the cutover, in ms.
        #[arg(long, default_value_t = 1000)]
        max_blocked_ms: u64,
        /// How long the former primary's copy is kept (as a standby) after
        /// the cutover before it is erased: a number and a unit (`1h`,
        /// `30s`, `0s`).
        #[arg(long, default_value = "1h")]
        keep_source: String,
        /// How long the new copy may take to catch up before the migration
        /// gives up (`30m`).
        #[arg(long, default_value = "30m")]
        catch_up_timeout: String,
        /// Start the job and return without following it.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to follow the job.
        #[arg(long, default_value_t = 7200)]
        timeout: u64,
    },
    /// Every region, shard and node that holds or held the namespace's bytes
    /// (its placement and failover history), and whether its jurisdictions
    /// allow each.
    Residency {
        /// Name.
        name: String,
        /// Also ask every node of every shard in the cluster to scan its own
        /// storage for the namespace, and show where its bytes really are;
        /// fails if any are outside its jurisdictions or a node cannot answer.
        #[arg(long)]
        verify: bool,
    },
}

/// A `--max-lag` bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxLagArg {
    /// Changes behind.
    Entries(u64),
    /// Milliseconds behind.
    Millis(u64),
}

fn parse_max_lag(text: &str) -> Result<MaxLagArg, String> {
    let number = |digits: &str| {
        digits
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!(
                    "{text:?}: expected a positive number of changes, or a time such as 2s or 750ms"
                )
            })
    };
    if let Some(ms) = text.strip_suffix("ms") {
        Ok(MaxLagArg::Millis(number(ms)?))
    } else if let Some(seconds) = text.strip_suffix('s') {
        Ok(MaxLagArg::Millis(number(seconds)?.saturating_mul(1_000)))
    } else {
        Ok(MaxLagArg::Entries(number(text)?))
    }
}

/// `meridian region`.
#[derive(Debug, Args)]
pub struct RegionArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: RegionCommand,
}

/// `meridian region ...`.
#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Regions with their jurisdictions, location, shards and nodes.
    List,
    /// Probe every shard member of every region (or of one).
    Health {
        /// Only this region.
        region: Option<String>,
    },
    /// Move every active-passive namespace homed in the region to a standby
    /// region, draining first (no acknowledged write lost).
    Drain {
        /// The region to empty.
        region: String,
    },
    /// Make the region primary for every namespace with a standby there.
    Promote {
        /// The region to promote.
        region: String,
        /// The current primaries are unreachable: do not drain.
        #[arg(long)]
        force: bool,
    },
}

/// Namespace replication modes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Only in the home region.
    RegionLocked,
    /// Primary at home, standbys elsewhere.
    ActivePassive,
    /// Writable in every region of its set.
    ActiveActive,
}

/// `meridian lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Lab directory (state, configs, data, logs).
    #[arg(
        long,
        global = true,
        default_value = ".meridian-lab",
        env = "MERIDIAN_LAB"
    )]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: LabCommand,
}

/// `meridian lab ...`.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start a lab and wait until it is ready.
    Up {
        /// Regions to start, one shard each.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "us-east,eu-west,ap-south"
        )]
        regions: Vec<String>,
        /// Nodes per shard.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Return once ready, leaving the lab running in the background.
        #[arg(long)]
        detach: bool,
        /// Seconds to wait for readiness.
        #[arg(long, default_value_t = 90)]
        ready_timeout: u64,
        /// Turn mutual TLS off (it is on by default).
        #[arg(long)]
        plaintext: bool,
        /// Store data in clear (encryption at rest is on by default).
        #[arg(long)]
        no_encryption: bool,
        /// No WAN emulation between regions (it is on by default).
        #[arg(long, conflicts_with = "wan")]
        no_wan: bool,
        /// Round trips between regions (TOML: `default_rtt_ms`, `[[link]] a b
        /// rtt_ms`) instead of the defaults.
        #[arg(long)]
        wan: Option<PathBuf>,
        /// A setting for every shard node, as its environment variable
        /// (`MERIDIAN__DR__BACKUP_MAX_BYTES_PER_SECOND=20000000`); repeatable.
        #[arg(long = "node-env", value_name = "KEY=VALUE")]
        node_env: Vec<String>,
    },
    /// Cut the WAN link between two regions (both directions).
    Partition {
        /// One region.
        a: String,
        /// The other.
        b: String,
    },
    /// Restore the WAN link between two regions.
    Heal {
        /// One region.
        a: String,
        /// The other.
        b: String,
    },
    /// List every process of the lab and the WAN links.
    Status,
    /// Stop every process of the lab.
    Down,
    /// Kill a process, every process of a region, or every control-plane
    /// member (`control`), at once (SIGKILL).
    Kill {
        /// Process name (e.g. `us-east-2`, `control-1`), region, or `control`.
        target: String,
        /// Remove their storage too, like losing their disks (`lab kill
        /// control --wipe` loses the whole control plane).
        #[arg(long)]
        wipe: bool,
    },
    /// Restart a process, every process of a region, or every control-plane
    /// member (`control`).
    Restart {
        /// Process name, region, or `control`.
        target: String,
    },
}
