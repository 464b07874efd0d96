//! Typed configuration from flags and environment, validated at start; the only reader of
//! the process environment. Bad values are one-line errors, never panics.

pub use crate::auth::discovery::AuthMode;
use crate::fhir::limits::Limits;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::fmt;
use std::net::SocketAddr;

/// Healporium: a FHIR R4 server for patients, doctors, pharmacies and insurers.
#[derive(Debug, Parser)]
#[command(
    name = "healporium",
    version,
    about = "Healporium: a FHIR R4 (4.0.1) server",
    long_about = "Healporium: a FHIR R4 (4.0.1) server.\n\n\
        Start it with `healporium serve`; it listens on http://127.0.0.1:8080 with the FHIR API \
        under /fhir (try http://127.0.0.1:8080/fhir/metadata) and keeps its data in the SQLite \
        file healporium.db, created on first start. Give --database-url postgres://… to use \
        PostgreSQL instead.\n\n\
        FHIR requests need SMART on FHIR access tokens: `healporium serve --demo` seeds demo \
        accounts and a demo app and prints how to sign in; `user add` and `client add` \
        register real ones."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the FHIR server.
    #[command(args_override_self = true)]
    Serve(Box<ServeArgs>),
    /// Rebuild the index rows of custom search parameters (online: the server may keep
    /// running against the same database).
    Reindex(ReindexArgs),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage user accounts (people who sign in to SMART apps).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage OAuth clients (SMART apps and backend services).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the token signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Inspect and steer the background job queue.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The finance ledger.
    #[command(subcommand)]
    Finance(FinanceCommand),
    /// Hospital feeds: the inbox's dead letters.
    #[command(subcommand)]
    Feeds(FeedsCommand),
    /// Import files: HL7 v2 messages.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
pub enum FeedsCommand {
    /// Messages that failed, by class (parse, unsupported, conflict, mapping, validation,
    /// transient-exhausted).
    #[command(name = "dead-letter", subcommand)]
    DeadLetter(DeadLetterCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Dead letters, newest first.
    List(DeadLetterListArgs),
    /// One dead letter: its error, its ACK and the message as received.
    Show(DeadLetterIdArgs),
    /// Process a dead letter's message again (after a fix of the map or the data).
    Replay(DeadLetterIdArgs),
}

#[derive(Debug, Args)]
pub struct DeadLetterListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this class.
    #[arg(long)]
    pub class: Option<String>,
    /// Include the ones a replay has resolved.
    #[arg(long)]
    pub all: bool,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct DeadLetterIdArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The message id (from `feeds dead-letter list`).
    pub id: String,
    /// The zone of timestamps without an offset, as the channel declares (`+01:00`).
    #[arg(long)]
    pub zone: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// HL7 v2 files (one or many messages each; a directory is read recursively), through the
    /// same inbox, maps and ACKs as a live feed.
    Hl7v2(ImportHl7v2Args),
    /// CSV files through a CSV map (patients, coverage, charges, payments, appointments, or a
    /// map file of your own): one resource per row, errors by row and column, the other rows
    /// imported; importing again changes nothing.
    Csv(ImportCsvArgs),
    /// FHIR NDJSON files (one resource per line; a directory: its `*.ndjson` files), as
    /// `$import` does: ids kept, every resource validated and indexed, failures reported by
    /// file and line, references checked once at the end.
    Ndjson(ImportNdjsonArgs),
}

#[derive(Debug, Args)]
pub struct ImportNdjsonArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// NDJSON files or directories.
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportCsvArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A CSV map: the name of a shipped one (patients, coverage, charges, payments,
    /// appointments) or a map file (kind CsvMap).
    #[arg(long)]
    pub map: String,
    /// CSV files with a header row.
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportHl7v2Args {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Files or directories.
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
    /// The zone of timestamps without an offset (`+01:00`).
    #[arg(long)]
    pub zone: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FinanceCommand {
    /// Check that every ledger entry balances per currency and the trial balance is zero;
    /// exit code 1 naming the first bad entry.
    Verify(FinanceVerifyArgs),
    /// Run the finance day for a date: interest of installments due by then, late fees and
    /// missed installments after the grace period (idempotent; the server runs it daily).
    RunDay(FinanceRunDayArgs),
}

/// What the credit extension is made of (docs/finance.md, "Products and plans").
#[derive(Debug, Args, Clone, Default)]
pub struct FinanceArgs {
    /// The canonical base of the credit extension's published artifacts (extension,
    /// profile, CodeSystem and OperationDefinition URLs). Set it once, before the first
    /// credit line: resources written earlier keep the URLs they were written with.
    #[arg(long, env = "HEALPORIUM_CANONICAL_BASE")]
    pub canonical_base: Option<String>,

    /// A JSON file with the credit products and repayment plans: a CodeSystem
    /// `credit-product` and/or `repayment-plan`, or a Bundle of them, replacing the
    /// compiled-in ones (docs/finance.md).
    #[arg(long, env = "HEALPORIUM_CREDIT_CATALOG")]
    pub credit_catalog: Option<std::path::PathBuf>,
}

impl FinanceArgs {
    /// The catalog these flags describe; a bad base or file is a one-line error.
    pub fn catalog(&self) -> Result<std::sync::Arc<crate::finance::catalog::Catalog>, String> {
        use crate::finance::catalog::Catalog;
        if self.canonical_base.is_none() && self.credit_catalog.is_none() {
            return Ok(Catalog::standard());
        }
        let file = match &self.credit_catalog {
            None => None,
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--credit-catalog {name}: {e}"))?;
                Some((name, text))
            }
        };
        Catalog::new(
            self.canonical_base.as_deref(),
            file.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        )
        .map(std::sync::Arc::new)
        .map_err(|e| e.replace('\n', " "))
    }
}

#[derive(Debug, Args)]
pub struct FinanceRunDayArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub finance: FinanceArgs,
    /// The day to run, YYYY-MM-DD.
    #[arg(long)]
    pub date: String,
}

#[derive(Debug, Args)]
pub struct FinanceVerifyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first, with their state, attempts and last error.
    List(JobsListArgs),
    /// One job with its payload and every attempt.
    Show(JobIdArgs),
    /// Queue a dead or cancelled job again, with fresh attempts.
    Retry(JobIdArgs),
    /// Cancel a queued or running job.
    Cancel(JobIdArgs),
    /// How many jobs there are per kind and state.
    Stats(JobsStatsArgs),
}

#[derive(Debug, Args)]
pub struct JobsListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only jobs in this state (queued, running, done, dead, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct JobIdArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The job's id (from `jobs list`).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct JobsStatsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// How this node runs background jobs and stops.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Job attempts this node runs at once (0: this node runs no jobs).
    #[arg(long, env = "HEALPORIUM_JOB_WORKERS", default_value_t = 4)]
    pub job_workers: usize,
    /// How often idle workers look for due jobs, in milliseconds.
    #[arg(long, env = "HEALPORIUM_JOB_POLL_MS", default_value_t = 1000)]
    pub job_poll_ms: u64,
    /// How long a claimed job stays this node's without a heartbeat, in seconds; a job of a
    /// node that died is taken over after it.
    #[arg(long, env = "HEALPORIUM_JOB_LEASE", default_value_t = 60)]
    pub job_lease: u64,
    /// This node's name in job leases (default: a random one per start).
    #[arg(long, env = "HEALPORIUM_NODE_ID")]
    pub node_id: Option<String>,
    /// On SIGTERM/SIGINT: how long requests and running jobs may take to finish, in seconds.
    #[arg(long, env = "HEALPORIUM_DRAIN_TIMEOUT", default_value_t = 10)]
    pub drain_timeout: u64,
    /// How often expired search cursors, codes, launches and token ids are purged, in seconds.
    #[arg(long, env = "HEALPORIUM_CLEANUP_EVERY", default_value_t = 300)]
    pub cleanup_every: u32,
    /// The time zone of daily jobs (an IANA name such as Europe/Berlin).
    #[arg(long, env = "HEALPORIUM_TIME_ZONE", default_value = "UTC")]
    pub time_zone: String,
}

/// The validated job settings of `serve`.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub worker: crate::jobs::WorkerOptions,
    pub cleanup_every_secs: u32,
    pub time_zone: String,
    pub drain_ms: u64,
}

impl JobArgs {
    fn config(&self) -> Result<JobConfig, String> {
        if self.job_lease < 2 || self.job_lease > 24 * 3600 {
            return Err("--job-lease: between 2 seconds and 24 hours".to_string());
        }
        if self.job_poll_ms < 10 || self.job_poll_ms > 600_000 {
            return Err("--job-poll-ms: between 10 ms and 10 minutes".to_string());
        }
        if self.drain_timeout > 3600 {
            return Err("--drain-timeout: at most an hour".to_string());
        }
        if self.cleanup_every == 0 {
            return Err("--cleanup-every: at least one second".to_string());
        }
        crate::jobs::schedule::zone_named(&self.time_zone)
            .map_err(|e| format!("--time-zone: {e}"))?;
        let mut worker = crate::jobs::WorkerOptions {
            concurrency: self.job_workers,
            poll_ms: self.job_poll_ms,
            lease_ms: i64::try_from(self.job_lease).unwrap_or(60) * 1000,
            // running attempts get most of the drain; the rest is for giving the unfinished
            // ones back before the supervisor aborts what is left
            drain_ms: self.drain_timeout * 1000 - (self.drain_timeout * 1000 / 4).min(500),
            ..Default::default()
        };
        if let Some(node) = &self.node_id {
            if node.is_empty() || node.len() > 100 {
                return Err("--node-id: 1 to 100 characters".to_string());
            }
            worker.node = node.clone();
        }
        Ok(JobConfig {
            worker,
            cleanup_every_secs: self.cleanup_every,
            time_zone: self.time_zone.clone(),
            drain_ms: self.drain_timeout * 1000,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the AuditEvent hash chain and report the first record that was changed, removed
    /// or inserted (exit code 1), or how many records are intact.
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The audit key the server seals the chain with (default: beside the SQLite file, or
    /// ./healporium-audit.key for PostgreSQL).
    #[arg(long, env = "HEALPORIUM_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<std::path::PathBuf>,
}

/// Where the audit key of `database_url` lives unless configured: `<file>.audit-key` beside
/// a SQLite database, `healporium-audit.key` in the working directory for PostgreSQL.
pub fn default_audit_key(database_url: &str) -> std::path::PathBuf {
    match database_url.strip_prefix("sqlite:") {
        Some(rest) => {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            std::path::PathBuf::from(format!("{path}.audit-key"))
        }
        None => std::path::PathBuf::from("healporium-audit.key"),
    }
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// The database: `sqlite:PATH` or `postgres://USER@HOST:PORT/DATABASE`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite:healporium.db",
        hide_env_values = true
    )]
    pub database_url: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add an account. The password comes from --password, HEALPORIUM_PASSWORD or the first
    /// line of standard input.
    Add(UserAddArgs),
    /// Every account: username, role, fhirUser, created, disabled.
    List(AuthListArgs),
    /// One account.
    Show(UserNameArgs),
    /// Refuse the account's sign-ins, refreshes and access tokens (until `user enable`).
    Disable(UserNameArgs),
    /// Let a disabled account sign in again.
    Enable(UserNameArgs),
    /// Delete the account (its tokens are refused from then on).
    Remove(UserNameArgs),
    /// Set a new password and revoke the account's refresh tokens. The password comes from
    /// --password, HEALPORIUM_PASSWORD or the first line of standard input.
    ResetPassword(UserPasswordArgs),
}

/// `user list` and `client list`.
#[derive(Debug, Args)]
pub struct AuthListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct UserNameArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The name the user signs in with.
    pub username: String,
}

#[derive(Debug, Args)]
pub struct UserPasswordArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The name the user signs in with.
    pub username: String,
    /// The new password (prefer HEALPORIUM_PASSWORD or standard input: flags show in `ps`).
    #[arg(long, env = "HEALPORIUM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The database: `sqlite:PATH` or `postgres://USER@HOST:PORT/DATABASE`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite:healporium.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// The name the user signs in with.
    #[arg(long)]
    pub username: String,

    /// patient, practitioner, pharmacist, insurer or admin.
    #[arg(long)]
    pub role: String,

    /// The user's FHIR resource, e.g. Patient/123 or Practitioner/7 (required for patients).
    #[arg(long)]
    pub fhir_user: Option<String>,

    /// The password (prefer HEALPORIUM_PASSWORD or standard input: flags show in `ps`).
    #[arg(long, env = "HEALPORIUM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client. A confidential client's secret is printed once.
    Add(ClientAddArgs),
    /// Every client: id, type, created, disabled, name.
    List(AuthListArgs),
    /// One client (its keys by kid; never a secret).
    Show(ClientIdArgs),
    /// Refuse the client's token requests and its access tokens (until `client enable`).
    Disable(ClientIdArgs),
    /// Let a disabled client get tokens again.
    Enable(ClientIdArgs),
    /// Delete the client (its tokens are refused from then on).
    Remove(ClientIdArgs),
    /// Give a confidential client a new secret, printed once; the old one stops working.
    RotateSecret(ClientIdArgs),
}

#[derive(Debug, Args)]
pub struct ClientIdArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The client id.
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientType {
    /// A browser or native app without a secret (PKCE).
    Public,
    /// An app with a client secret (client_secret_basic); may also use client_credentials.
    Confidential,
    /// A backend service or asymmetric app authenticating with private_key_jwt.
    Backend,
}

#[derive(Debug, Args)]
pub struct ClientAddArgs {
    /// The database: `sqlite:PATH` or `postgres://USER@HOST:PORT/DATABASE`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite:healporium.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// The client id (default: generated).
    #[arg(long)]
    pub client_id: Option<String>,

    /// The name users see on the consent page.
    #[arg(long, default_value = "SMART app")]
    pub name: String,

    /// The kind of client.
    #[arg(long = "type", value_enum)]
    pub kind: ClientType,

    /// A redirect URI (exact match; repeat for several).
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,

    /// The scopes the client may be granted, space separated, e.g.
    /// "openid fhirUser launch launch/patient offline_access patient/*.rs user/*.rs".
    #[arg(long)]
    pub scope: String,

    /// Backend clients: a file holding the client's public JWK Set.
    #[arg(long)]
    pub jwks_file: Option<std::path::PathBuf>,

    /// Backend clients: where the client publishes its JWK Set.
    #[arg(long)]
    pub jwks_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a new signing key; older keys keep verifying until their tokens expire.
    Rotate(KeyRotateArgs),
}

#[derive(Debug, Args)]
pub struct KeyRotateArgs {
    /// The database: `sqlite:PATH` or `postgres://USER@HOST:PORT/DATABASE`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite:healporium.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// The servers' access-token lifetime in seconds: retired keys older than this go.
    #[arg(long, env = "HEALPORIUM_ACCESS_TOKEN_TTL", default_value_t = 3600)]
    pub access_token_ttl: u64,
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// The database: `sqlite:PATH` or `postgres://USER@HOST:PORT/DATABASE`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite:healporium.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// The public URL of the FHIR API (absolute references under it index as local ones).
    #[arg(long, env = "HEALPORIUM_BASE_URL")]
    pub base_url: Option<String>,

    /// Rebuild every custom parameter, not only those waiting for a reindex.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Settings from a TOML file whose keys are these flags' names (`listen = "0.0.0.0:8080"`,
    /// `insecure-no-auth = true`, `trusted-hosts = ["a", "b"]`). Flags given on the command
    /// line win over the file, and the file over environment variables.
    #[arg(long, env = "HEALPORIUM_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Address and port to listen on.
    #[arg(long, env = "HEALPORIUM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Where data lives: `sqlite:PATH` (created on first start) or
    /// `postgres://USER@HOST:PORT/DATABASE`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite:healporium.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// PostgreSQL only: a read replica for searches (`postgres://…`). Searches and their
    /// counts run there; reads, writes, paging cursors and everything else on
    /// --database-url. A replica lags its primary: a search may not yet find what was just
    /// written.
    #[arg(long, env = "HEALPORIUM_SEARCH_REPLICA_URL", hide_env_values = true)]
    pub search_replica_url: Option<String>,

    /// The public URL of the FHIR API, as clients reach it (for links and Location headers),
    /// e.g. https://fhir.example.org/fhir. Default: http://<Host header>/fhir when the Host
    /// is trusted (--trusted-hosts), else http://localhost/fhir.
    #[arg(long, env = "HEALPORIUM_BASE_URL")]
    pub base_url: Option<String>,

    /// Without --base-url: host names (comma-separated, any port) whose Host header may make
    /// links, Location headers and the token issuer; loopback names always may. Any other
    /// Host gets links to http://localhost.
    #[arg(long, env = "HEALPORIUM_TRUSTED_HOSTS", value_delimiter = ',')]
    pub trusted_hosts: Vec<String>,

    /// Largest request body accepted, in bytes (larger bodies get 413).
    #[arg(long, env = "HEALPORIUM_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Referential integrity: reject references to local resources that do not exist, and
    /// deletes of resources others reference (unless `_cascade=delete`).
    #[arg(long, env = "HEALPORIUM_REFERENTIAL_INTEGRITY", value_enum, default_value_t = OnOff::On)]
    pub referential_integrity: OnOff,

    /// Record an AuditEvent for every read, search, write and operation (`off` only for
    /// experiments and benchmarks).
    #[arg(long, env = "HEALPORIUM_AUDIT", value_enum, default_value_t = OnOff::On)]
    pub audit: OnOff,

    /// How long search paging links (next/previous/first) keep working, in seconds.
    #[arg(long, env = "HEALPORIUM_SEARCH_PAGE_TTL", default_value_t = 3600)]
    pub search_page_ttl: u64,

    /// How long a finished Bulk Data export's manifest and files can be fetched, in seconds.
    #[arg(long, env = "HEALPORIUM_BULK_TTL", default_value_t = 3600)]
    pub bulk_ttl: u64,

    /// Size after which a Bulk Data output file is closed and the next one of its type
    /// begun, in megabytes.
    #[arg(long, env = "HEALPORIUM_BULK_FILE_SIZE", default_value_t = 64)]
    pub bulk_file_size: u64,

    /// The directory `$import` may read NDJSON files from (files elsewhere are refused;
    /// without it, `$import` takes only http(s) URLs).
    #[arg(long, env = "HEALPORIUM_IMPORT_DIR")]
    pub import_dir: Option<std::path::PathBuf>,

    /// How long a break-glass grant (a practitioner's emergency access to one patient,
    /// `Patient/[id]/$break-glass`) lasts, in seconds.
    #[arg(long, env = "HEALPORIUM_BREAK_GLASS_TTL", default_value_t = 1800)]
    pub break_glass_ttl: u64,

    /// Log line format.
    #[arg(long, env = "HEALPORIUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `healporium=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Serve without authorization: anyone who reaches the port may read and change
    /// everything. Only for local experiments; a warning is printed and published.
    #[arg(long, env = "HEALPORIUM_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Seed a demo data set, demo users for each role and a demo SMART app, and print how to
    /// sign in.
    #[arg(long)]
    pub demo: bool,

    /// Lifetime of access and id tokens, in seconds.
    #[arg(long, env = "HEALPORIUM_ACCESS_TOKEN_TTL", default_value_t = 3600)]
    pub access_token_ttl: u64,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub jobs: JobArgs,

    #[command(flatten)]
    pub finance: FinanceArgs,

    /// Also take HL7 v2 over MLLP on this address (e.g. 127.0.0.1:2575): the default channel,
    /// every supported message type.
    #[arg(long, env = "HEALPORIUM_MLLP")]
    pub mllp: Option<String>,

    /// Serve GET /metrics (Prometheus) on the main listener to requests that carry this token
    /// (Authorization: Bearer …); at least 16 characters.
    #[arg(long, env = "HEALPORIUM_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Serve GET /metrics without a token on this address of its own (e.g. 127.0.0.1:9464),
    /// for a scraper on a private network.
    #[arg(long, env = "HEALPORIUM_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,

    /// The zone of HL7 v2 timestamps that carry no offset (`+01:00`); without it such a
    /// timestamp is an error (AE), never a guess.
    #[arg(long, env = "HEALPORIUM_FEED_ZONE")]
    pub feed_zone: Option<String>,

    /// A mapping set of your own, a directory laid out like mappings/ (structures, maps,
    /// vocabularies, identity systems, channels), in place of the compiled-in one; checked at
    /// start (a bad map is one line naming the file and field).
    #[arg(long, env = "HEALPORIUM_MAPPINGS")]
    pub mappings: Option<std::path::PathBuf>,

    /// The key the audit chain is sealed with, kept outside the database (created on first
    /// start; default: beside the SQLite file, or ./healporium-audit.key for PostgreSQL).
    /// Its signed head lives beside it (`<file>.head`).
    #[arg(long, env = "HEALPORIUM_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<std::path::PathBuf>,
}

/// What one request may ask of the server (docs/security.md, *Limits*). Over a limit, the
/// request gets a 400 `too-costly` OperationOutcome naming it.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Query parameters in one search.
    #[arg(long, env = "HEALPORIUM_MAX_SEARCH_PARAMS", default_value_t = Limits::default().search_params)]
    pub max_search_params: usize,
    /// Comma-separated (OR'ed) values in one search parameter.
    #[arg(long, env = "HEALPORIUM_MAX_OR_VALUES", default_value_t = Limits::default().or_values)]
    pub max_or_values: usize,
    /// Keys in one `_sort`.
    #[arg(long, env = "HEALPORIUM_MAX_SORT_KEYS", default_value_t = Limits::default().sort_keys)]
    pub max_sort_keys: usize,
    /// Chain links and `_has` levels in one search parameter.
    #[arg(long, env = "HEALPORIUM_MAX_CHAIN_DEPTH", default_value_t = Limits::default().chain_depth)]
    pub max_chain_depth: usize,
    /// `_include` and `_revinclude` parameters in one search.
    #[arg(long, env = "HEALPORIUM_MAX_INCLUDES", default_value_t = Limits::default().includes)]
    pub max_includes: usize,
    /// Resources `_include`/`_revinclude` add to one page at most.
    #[arg(long, env = "HEALPORIUM_MAX_INCLUDED", default_value_t = Limits::default().included)]
    pub max_included: usize,
    /// Entries in one batch or transaction Bundle.
    #[arg(long, env = "HEALPORIUM_MAX_BUNDLE_ENTRIES", default_value_t = Limits::default().bundle_entries)]
    pub max_bundle_entries: usize,
    /// Operations in one JSON Patch or FHIRPath Patch.
    #[arg(long, env = "HEALPORIUM_MAX_PATCH_OPERATIONS", default_value_t = Limits::default().patch_operations)]
    pub max_patch_operations: usize,
    /// Database time one statement may take, in milliseconds (PostgreSQL: every statement;
    /// SQLite: searches), before it is cancelled.
    #[arg(long, env = "HEALPORIUM_STATEMENT_TIMEOUT", default_value_t = Limits::default().statement_timeout_ms)]
    pub statement_timeout: u64,
}

impl LimitArgs {
    /// The limits, checked; `resource_bytes` is the body limit.
    pub fn limits(&self, resource_bytes: usize) -> Result<Limits, String> {
        let positive = [
            ("--max-search-params", self.max_search_params),
            ("--max-or-values", self.max_or_values),
            ("--max-sort-keys", self.max_sort_keys),
            ("--max-includes", self.max_includes),
            ("--max-bundle-entries", self.max_bundle_entries),
            ("--max-patch-operations", self.max_patch_operations),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(format!("{flag}: must be at least 1"));
            }
        }
        if self.statement_timeout < 100 || self.statement_timeout > 3_600_000 {
            return Err("--statement-timeout: between 100 ms and 1 hour".to_string());
        }
        Ok(Limits {
            search_params: self.max_search_params,
            or_values: self.max_or_values,
            sort_keys: self.max_sort_keys,
            chain_depth: self.max_chain_depth,
            includes: self.max_includes,
            included: self.max_included,
            bundle_entries: self.max_bundle_entries,
            patch_operations: self.max_patch_operations,
            resource_bytes,
            statement_timeout_ms: self.statement_timeout,
        })
    }
}

/// The process's arguments with `serve --config FILE` (or HEALPORIUM_CONFIG) expanded: the
/// file's settings become flags placed before the command line's own, which therefore win
/// (serve takes the last value of a flag given twice). Other commands pass through.
// config.rs is the one reader of the process environment (see .clippy.toml)
#[allow(clippy::disallowed_methods)]
pub fn args_with_config_file() -> Result<Vec<std::ffi::OsString>, String> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let from_env = std::env::var_os("HEALPORIUM_CONFIG").map(std::path::PathBuf::from);
    expand_config_file(args, from_env)
}

/// [`args_with_config_file`] over given arguments and environment value.
pub fn expand_config_file(
    args: Vec<std::ffi::OsString>,
    from_env: Option<std::path::PathBuf>,
) -> Result<Vec<std::ffi::OsString>, String> {
    let Some(serve) = args.iter().position(|a| a == "serve") else {
        return Ok(args);
    };
    let mut path = from_env;
    let mut i = serve + 1;
    while let Some(a) = args.get(i) {
        let a = a.to_string_lossy();
        if a == "--config" {
            path = args.get(i + 1).map(std::path::PathBuf::from);
            i += 1;
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(std::path::PathBuf::from(p));
        }
        i += 1;
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let flags = config_file_flags(&path)?;
    let mut out: Vec<std::ffi::OsString> = Vec::with_capacity(args.len() + flags.len());
    out.extend(args.iter().take(serve + 1).cloned());
    out.extend(flags.into_iter().map(Into::into));
    out.extend(args.iter().skip(serve + 1).cloned());
    Ok(out)
}

/// The flags a config file stands for, in its order; an unknown key, a table or a bad file is a
/// one-line error naming the file (and the key).
fn config_file_flags(path: &std::path::Path) -> Result<Vec<String>, String> {
    use clap::CommandFactory;
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("--config {shown}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("--config {shown}: {}", e.message()))?;
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .ok_or_else(|| "--config: no serve command".to_string())?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config" && key != "help")
        else {
            return Err(format!(
                "--config {shown}: '{key}' is not a setting of serve (see serve --help)"
            ));
        };
        let takes_value = arg.get_action().takes_values();
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(format!(
                "--config {shown}: '{key}' takes a string, number or boolean"
            )),
        };
        match (&value, takes_value) {
            (toml::Value::Boolean(true), false) => flags.push(format!("--{key}")),
            (toml::Value::Boolean(false), false) => {}
            (_, false) => {
                return Err(format!("--config {shown}: '{key}' is true or false"));
            }
            (toml::Value::Array(items), true) => {
                for item in items {
                    flags.push(format!("--{key}"));
                    flags.push(scalar(item)?);
                }
            }
            (v, true) => {
                flags.push(format!("--{key}"));
                flags.push(scalar(v)?);
            }
        }
    }
    Ok(flags)
}

/// A secret (a token) whose Display and Debug never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, to compare with. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A database URL; its Display and Debug hide any password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn parse(s: &str) -> Result<DatabaseUrl, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if path.is_empty() || path.starts_with(":memory:") {
                return Err(
                    "--database-url: give SQLite a file, e.g. sqlite:healporium.db".to_string(),
                );
            }
            Ok(DatabaseUrl(s.to_string()))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(DatabaseUrl(s.to_string()))
        } else {
            Err(format!(
                "--database-url: unsupported URL {}; use sqlite:PATH or postgres://USER@HOST/DB",
                redact(s)
            ))
        }
    }

    /// The URL itself, for the store to connect with. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres")
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.chars().take(40).collect();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The validated configuration of `healporium serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    /// A PostgreSQL read replica for searches.
    pub search_replica_url: Option<DatabaseUrl>,
    pub base_url: Option<String>,
    pub trusted_hosts: Vec<String>,
    /// Path prefix of the FHIR API.
    pub prefix: String,
    pub max_body_bytes: usize,
    pub referential_integrity: bool,
    /// Lifetime of search paging cursors, in milliseconds.
    pub search_page_ttl_ms: i64,
    /// Lifetime of break-glass grants, in milliseconds.
    pub break_glass_ttl_ms: i64,
    /// Bulk Data results' lifetime and file size.
    pub bulk: crate::interaction::bulk::Settings,
    pub audit: bool,
    pub log_format: LogFormat,
    pub log: String,
    /// Whether FHIR requests need SMART tokens (on unless `--insecure-no-auth`).
    pub auth: AuthMode,
    /// Seed the demo data set and accounts.
    pub demo: bool,
    pub access_token_ttl_secs: i64,
    pub limits: Limits,
    pub audit_key_file: std::path::PathBuf,
    /// Background jobs and stopping.
    pub jobs: JobConfig,
    /// The credit extension's base, artifacts, products and plans.
    pub finance: std::sync::Arc<crate::finance::catalog::Catalog>,
    /// The MLLP listener's address, if any.
    pub mllp: Option<SocketAddr>,
    /// The token of GET /metrics on the main listener (never printed).
    pub metrics_token: Option<Secret>,
    /// The address of a metrics listener of its own.
    pub metrics_listen: Option<SocketAddr>,
    /// The default zone of HL7 v2 timestamps.
    pub feed_zone: Option<String>,
    /// An operator's mapping set (None: the compiled-in one).
    pub mappings: Option<std::sync::Arc<crate::feeds::mapping_set::MappingSet>>,
}

/// A feed's default zone as an RFC 3339 offset: `+01:00`, `-05:00` or `Z`.
pub fn feed_zone(z: &str) -> Result<String, String> {
    let b = z.as_bytes();
    let ok = z == "Z"
        || (b.len() == 6
            && matches!(b.first(), Some(b'+' | b'-'))
            && b.get(3) == Some(&b':')
            && [1, 2, 4, 5]
                .iter()
                .all(|&i| b.get(i).is_some_and(u8::is_ascii_digit)));
    if ok {
        Ok(z.to_string())
    } else {
        Err(format!(
            "--feed-zone: '{z}' is not an offset such as +01:00 or Z"
        ))
    }
}

impl Config {
    pub fn from_args(args: ServeArgs) -> Result<Config, String> {
        let listen: SocketAddr = args.listen.parse().map_err(|_| {
            format!(
                "--listen: '{}' is not an address such as 127.0.0.1:8080",
                args.listen
            )
        })?;
        let database_url = DatabaseUrl::parse(&args.database_url)?;
        let search_replica_url = match &args.search_replica_url {
            None => None,
            Some(u) => {
                let replica = DatabaseUrl::parse(u)
                    .map_err(|e| e.replace("--database-url", "--search-replica-url"))?;
                if !replica.is_postgres() || !database_url.is_postgres() {
                    return Err(
                        "--search-replica-url: a PostgreSQL replica of a PostgreSQL --database-url"
                            .to_string(),
                    );
                }
                Some(replica)
            }
        };
        let base_url = match args.base_url {
            None => None,
            Some(b) => {
                let b = b.trim_end_matches('/').to_string();
                if !(b.starts_with("http://") || b.starts_with("https://")) || b.contains(' ') {
                    return Err(format!(
                        "--base-url: '{b}' is not an http(s) URL such as https://fhir.example.org/fhir"
                    ));
                }
                Some(b)
            }
        };
        if args.max_body_bytes < 1024 {
            return Err("--max-body-bytes: must be at least 1024".to_string());
        }
        if args.search_page_ttl == 0 || args.search_page_ttl > 7 * 24 * 3600 {
            return Err("--search-page-ttl: between 1 second and 7 days".to_string());
        }
        if args.bulk_ttl < 60 || args.bulk_ttl > 7 * 24 * 3600 {
            return Err("--bulk-ttl: between 1 minute and 7 days".to_string());
        }
        if args.bulk_file_size == 0 || args.bulk_file_size > 4096 {
            return Err("--bulk-file-size: between 1 and 4096 megabytes".to_string());
        }
        if args.break_glass_ttl < 60 || args.break_glass_ttl > 24 * 3600 {
            return Err("--break-glass-ttl: between 1 minute and 24 hours".to_string());
        }
        if args.access_token_ttl < 10 || args.access_token_ttl > 24 * 3600 {
            return Err("--access-token-ttl: between 10 seconds and 24 hours".to_string());
        }
        let limits = args.limits.limits(args.max_body_bytes)?;
        let jobs = args.jobs.config()?;
        if tracing_subscriber::EnvFilter::try_new(&args.log).is_err() {
            return Err(format!("--log: '{}' is not a valid log filter", args.log));
        }
        Ok(Config {
            listen,
            database_url,
            search_replica_url,
            base_url,
            trusted_hosts: args
                .trusted_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            prefix: "/fhir".to_string(),
            max_body_bytes: args.max_body_bytes,
            referential_integrity: args.referential_integrity == OnOff::On,
            search_page_ttl_ms: i64::try_from(args.search_page_ttl).unwrap_or(3600) * 1000,
            break_glass_ttl_ms: i64::try_from(args.break_glass_ttl).unwrap_or(1800) * 1000,
            bulk: crate::interaction::bulk::Settings {
                ttl_ms: i64::try_from(args.bulk_ttl).unwrap_or(3600) * 1000,
                file_bytes: usize::try_from(args.bulk_file_size).unwrap_or(64) << 20,
                import_dir: args.import_dir.clone(),
                ..crate::interaction::bulk::Settings::default()
            },
            audit: args.audit == OnOff::On,
            log_format: args.log_format,
            log: args.log,
            auth: if args.insecure_no_auth {
                AuthMode::Off
            } else {
                AuthMode::On
            },
            demo: args.demo,
            access_token_ttl_secs: i64::try_from(args.access_token_ttl).unwrap_or(3600),
            limits,
            audit_key_file: args
                .audit_key_file
                .clone()
                .unwrap_or_else(|| default_audit_key(&args.database_url)),
            jobs,
            finance: args.finance.catalog()?,
            mllp: match &args.mllp {
                None => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    format!("--mllp: '{a}' is not an address such as 127.0.0.1:2575")
                })?),
            },
            metrics_token: match &args.metrics_token {
                None => None,
                Some(t) if t.chars().count() < 16 => {
                    return Err("--metrics-token: at least 16 characters".to_string());
                }
                Some(t) => Some(Secret(t.clone())),
            },
            metrics_listen: match &args.metrics_listen {
                None => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    format!("--metrics-listen: '{a}' is not an address such as 127.0.0.1:9464")
                })?),
            },
            feed_zone: match &args.feed_zone {
                None => None,
                Some(z) => Some(feed_zone(z)?),
            },
            mappings: match &args.mappings {
                None => None,
                Some(dir) => Some(std::sync::Arc::new(
                    crate::feeds::mapping_set::MappingSet::from_dir(dir)
                        .map_err(|e| format!("--mappings: {e}"))?,
                )),
            },
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_search_replica_needs_postgresql_on_both_sides() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["healporium", "serve"];
            argv.extend_from_slice(extra);
            match <Cli as clap::Parser>::try_parse_from(argv) {
                Ok(Cli {
                    command: Command::Serve(a),
                    ..
                }) => Config::from_args(*a),
                _ => Err("not serve".to_string()),
            }
        };
        let pg = "postgres://u@db/fhir";
        let replica = "postgres://u@replica/fhir";
        let c = parse(&["--database-url", pg, "--search-replica-url", replica]).unwrap();
        assert_eq!(
            c.search_replica_url.map(|u| u.expose().to_string()),
            Some(replica.to_string())
        );
        let e = parse(&["--search-replica-url", replica]).unwrap_err();
        assert!(e.contains("--search-replica-url"), "{e}");
        let e = parse(&["--database-url", pg, "--search-replica-url", "sqlite:x.db"]).unwrap_err();
        assert!(e.contains("--search-replica-url"), "{e}");
        assert!(
            parse(&["--database-url", pg])
                .unwrap()
                .search_replica_url
                .is_none()
        );
    }

    use super::*;

    fn args(extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["healporium", "serve"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Serve(a) => Config::from_args(*a),
            _ => Err("not serve".to_string()),
        }
    }

    fn with_file(toml: &str, extra: &[&str]) -> Result<Config, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("healporium.toml");
        std::fs::write(&path, toml).map_err(|e| e.to_string())?;
        let mut argv: Vec<std::ffi::OsString> = vec!["healporium".into(), "serve".into()];
        argv.push("--config".into());
        argv.push(path.clone().into());
        argv.extend(extra.iter().map(Into::into));
        let argv = expand_config_file(argv, None)?;
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Serve(a) => Config::from_args(*a),
            _ => Err("not serve".to_string()),
        }
    }

    #[test]
    fn a_config_file_sets_flags_and_the_command_line_wins() {
        let file = "listen = \"0.0.0.0:9090\"\ndatabase-url = \"sqlite:/tmp/x.db\"\n\
                    insecure-no-auth = true\ntrusted-hosts = [\"a.example\", \"b.example\"]\n\
                    max-body-bytes = 2048\n";
        let c = with_file(file, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(c.database_url.expose(), "sqlite:/tmp/x.db");
        assert_eq!(c.auth, AuthMode::Off);
        assert_eq!(c.trusted_hosts, vec!["a.example", "b.example"]);
        let c = with_file(file, &["--listen", "127.0.0.1:7000"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.database_url.expose(), "sqlite:/tmp/x.db");
        // false leaves a switch off
        let c = with_file("insecure-no-auth = false\n", &[]).unwrap();
        assert_eq!(c.auth, AuthMode::On);
    }

    #[test]
    fn a_bad_config_file_is_one_line_naming_the_key() {
        let e = with_file("lisen = \"x\"\n", &[]).unwrap_err();
        assert!(e.contains("'lisen' is not a setting of serve"), "{e}");
        let e = with_file("listen = { a = 1 }\n", &[]).unwrap_err();
        assert!(e.contains("'listen' takes a string"), "{e}");
        let e = with_file("insecure-no-auth = \"yes\"\n", &[]).unwrap_err();
        assert!(e.contains("'insecure-no-auth' is true or false"), "{e}");
        let e = with_file("listen = \n", &[]).unwrap_err();
        assert!(e.starts_with("--config "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn defaults() {
        let c = args(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url.expose(), "sqlite:healporium.db");
        assert_eq!(c.prefix, "/fhir");
        assert_eq!(c.auth, AuthMode::On, "secure by default");
        assert_eq!(args(&["--insecure-no-auth"]).unwrap().auth, AuthMode::Off);
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for bad in [
            &["--listen", "nowhere"][..],
            &["--database-url", "mysql://x"],
            &["--database-url", "sqlite::memory:"],
            &["--base-url", "ftp://x"],
            &["--max-body-bytes", "10"],
            &["--log", "[[["],
            &["--access-token-ttl", "1"],
            &["--canonical-base", "ftp://x"],
            &["--credit-catalog", "/nonexistent/catalog.json"],
        ] {
            let e = args(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn passwords_never_print() {
        let u = DatabaseUrl::parse("postgres://app:hunter2@db:5432/fhir").unwrap();
        assert!(!format!("{u} {u:?}").contains("hunter2"));
        let e = DatabaseUrl::parse("mysql://app:hunter2@db/x").unwrap_err();
        assert!(!e.contains("hunter2"));
    }
}
