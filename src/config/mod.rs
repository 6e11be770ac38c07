//! Configuration: a TOML file (every key optional), overridden by `INFERGATE_*` environment
//! variables, overridden by command-line flags. Every bad value is reported with its key, all at
//! once, before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// Environment variables that configure the process rather than the config tree.
const ENV_PREFIX: &str = "INFERGATE_";
const ENV_NOT_KEYS: [&str; 1] = ["INFERGATE_CONFIG"];

/// infergate: a real-time scoring gateway (REST and stream) in front of an XGBoost model.
#[derive(Debug, Parser)]
#[command(name = "infergate", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML configuration file. Every key has a default, so it may be omitted; keys are
    /// documented in the README. Unknown keys are refused.
    #[arg(long, env = "INFERGATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Address to listen on. Binding anything but loopback exposes the gateway to the network.
    #[arg(long, env = "INFERGATE_BIND", global = true)]
    pub bind: Option<SocketAddr>,

    /// Model file to serve (XGBoost JSON, UBJSON or a SageMaker model.tar.gz) instead of the
    /// fraud model compiled into the binary.
    #[arg(long, env = "INFERGATE_MODEL__PATH", global = true)]
    pub model: Option<PathBuf>,

    /// Serve callers without credentials even on a non-loopback address. Without it, a
    /// non-loopback bind with no `[[auth.api_keys]]` / `[[auth.sigv4]]` refuses to start.
    #[arg(long, env = "INFERGATE_ALLOW_ANONYMOUS", global = true)]
    pub allow_anonymous: bool,

    /// Log format: human-readable or one JSON object per line (for log shippers).
    #[arg(long, env = "INFERGATE_LOG__FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the gateway (the default).
    Serve,
    /// Print the OpenAPI document and exit.
    Openapi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// The whole configuration; see DESIGN's "Configuration file" for the shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub bind: SocketAddr,
    /// Serve without credentials on a non-loopback bind (on loopback it is always allowed when
    /// no credentials are configured).
    pub allow_anonymous: bool,
    pub auth: AuthConfig,
    pub model: ModelConfig,
    pub batching: BatchingConfig,
    pub limits: LimitsConfig,
    pub cache: CacheConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// The stream consumer; absent = none.
    pub kinesis: Option<KinesisConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allow_anonymous: false,
            auth: AuthConfig::default(),
            model: ModelConfig::default(),
            batching: BatchingConfig::default(),
            limits: LimitsConfig::default(),
            cache: CacheConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            kinesis: None,
        }
    }
}

/// The built-in Kinesis consumer. Credentials and, unless set here, the region come from the
/// standard AWS chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisConfig {
    /// Stream name or ARN.
    pub stream: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Where a shard without a checkpoint starts.
    #[serde(default)]
    pub initial_position: InitialPosition,
    /// RFC 3339, for `AT_TIMESTAMP`.
    #[serde(default)]
    pub initial_timestamp: Option<String>,
    /// Wait between `GetRecords` calls that returned nothing (the KCL waits 1.5 s).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Records per `GetRecords` (at most 10,000).
    #[serde(default = "default_max_records")]
    pub max_records: i32,
    /// How often the shard list is read again (new shards after a reshard).
    #[serde(default = "default_discovery_ms")]
    pub shard_discovery_ms: u64,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default = "default_sink")]
    pub sink: SinkConfig,
    #[serde(default = "default_dead_letter")]
    pub dead_letter: SinkConfig,
}

fn default_poll_interval_ms() -> u64 {
    1_000
}

fn default_max_records() -> i32 {
    10_000
}

fn default_discovery_ms() -> u64 {
    10_000
}

fn default_sink() -> SinkConfig {
    SinkConfig::File {
        path: PathBuf::from("data/scored.jsonl"),
    }
}

fn default_dead_letter() -> SinkConfig {
    SinkConfig::File {
        path: PathBuf::from("data/dead-letter.jsonl"),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InitialPosition {
    #[default]
    TrimHorizon,
    Latest,
    AtTimestamp,
}

/// Where shard checkpoints live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CheckpointConfig {
    /// A JSON file per stream in `dir`, replaced atomically on every checkpoint.
    File { dir: PathBuf },
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self::File {
            dir: PathBuf::from("data/checkpoints"),
        }
    }
}

/// Where scored records (or dead letters) go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// One JSON object per line, appended.
    File { path: PathBuf },
    /// Records put to a Kinesis stream (name or ARN) on the consumer's endpoint, partition key
    /// = the card (scores) or the input record's key (dead letters).
    Kinesis { stream: String },
}

/// Who may call the scoring routes. Empty = anonymous (see `allow_anonymous`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub api_keys: Vec<ApiKeyConfig>,
    pub sigv4: Vec<SigV4Config>,
}

/// An API key (`x-api-key` header) and its usage plan. The key itself is never in the file:
/// either its SHA-256 (hex) or the name of an environment variable holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Names the caller in metrics and logs.
    pub name: String,
    pub key_sha256: Option<String>,
    pub key_env: Option<String>,
    /// Requests (transactions, for batches) per second; 0 = unlimited.
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Tokens available at once; default: `rate`.
    pub burst: Option<u32>,
    /// Transactions per UTC day.
    pub quota_per_day: Option<u64>,
    /// Whether `Cache-Control: no-cache` from this caller bypasses (and refreshes) the cache.
    #[serde(default)]
    pub allow_cache_bypass: bool,
}

/// A SigV4 caller: access key id and the environment variable holding its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigV4Config {
    pub access_key_id: String,
    pub secret_env: String,
    /// Names the caller in metrics and logs; default: the access key id.
    pub name: Option<String>,
    #[serde(default = "default_rate")]
    pub rate: u32,
    pub burst: Option<u32>,
    pub quota_per_day: Option<u64>,
    #[serde(default)]
    pub allow_cache_bypass: bool,
}

fn default_rate() -> u32 {
    100
}

/// A caller's usage plan, whichever way it authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub rate: u32,
    pub burst: u32,
    pub quota_per_day: Option<u64>,
    pub allow_cache_bypass: bool,
}

impl Plan {
    /// A plan from its configured keys; the burst defaults to the rate.
    fn new(rate: u32, burst: Option<u32>, quota_per_day: Option<u64>, bypass: bool) -> Self {
        Self {
            rate,
            burst: burst.unwrap_or(rate),
            quota_per_day,
            allow_cache_bypass: bypass,
        }
    }
}

impl ApiKeyConfig {
    pub fn plan(&self) -> Plan {
        Plan::new(
            self.rate,
            self.burst,
            self.quota_per_day,
            self.allow_cache_bypass,
        )
    }
}

impl SigV4Config {
    pub fn plan(&self) -> Plan {
        Plan::new(
            self.rate,
            self.burst,
            self.quota_per_day,
            self.allow_cache_bypass,
        )
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.access_key_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long a score is served from the cache.
    pub ttl_s: u64,
    /// Most cached scores; 0 disables the cache.
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl_s: 300,
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `embedded` (in-process XGBoost) or `sagemaker` (an endpoint, via the AWS SDK).
    pub kind: ModelKind,
    /// Model file; `None` = the compiled-in fraud model.
    pub path: Option<PathBuf>,
    pub review_threshold: f32,
    pub decline_threshold: f32,
    /// Threads evaluating the embedded model; 0 = one per core.
    pub threads: usize,
    pub sagemaker: SageMakerConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::Embedded,
            path: None,
            review_threshold: 0.5,
            decline_threshold: 0.9,
            threads: 0,
            sagemaker: SageMakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Embedded,
    Sagemaker,
}

/// A SageMaker endpoint as the model (`model.kind = "sagemaker"`). Credentials and, unless set
/// here, the region come from the standard AWS chain (environment, profile, instance role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SageMakerConfig {
    pub endpoint_name: String,
    pub region: Option<String>,
    /// Override of the service address (tests, VPC endpoints); `AWS_ENDPOINT_URL` works too.
    pub endpoint_url: Option<String>,
    /// Request and answer format: `text/csv` (rows of features) or `application/json`
    /// (`{"instances": [[...]]}` -> `{"predictions": [{"score": ...}]}`).
    pub content_type: Codec,
    pub target_model: Option<String>,
    pub target_variant: Option<String>,
    pub custom_attributes: Option<String>,
    /// Per-call timeout.
    pub timeout_ms: u64,
    /// Largest request body; larger batches are split into several calls.
    pub max_payload_bytes: usize,
    /// Attempts per call (1 = no retries); retries stop at the rows' deadline anyway.
    pub max_attempts: u32,
    /// First retry waits up to this (full jitter), doubling per attempt...
    pub retry_base_ms: u64,
    /// ...up to this.
    pub retry_max_ms: u64,
    /// Consecutive failed calls that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails fast before letting one trial call through.
    pub breaker_cooldown_ms: u64,
    /// `"embedded"`: answer from the embedded model while the endpoint fails.
    pub fallback: Option<Fallback>,
    /// The endpoint's features, in its order; default: the embedded model's.
    pub features: Option<Vec<String>>,
}

impl Default for SageMakerConfig {
    fn default() -> Self {
        Self {
            endpoint_name: String::new(),
            region: None,
            endpoint_url: None,
            content_type: Codec::Csv,
            target_model: None,
            target_variant: None,
            custom_attributes: None,
            timeout_ms: 2_000,
            max_payload_bytes: 6 * 1024 * 1024,
            max_attempts: 3,
            retry_base_ms: 25,
            retry_max_ms: 1_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 10_000,
            fallback: None,
            features: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    #[serde(rename = "text/csv")]
    Csv,
    #[serde(rename = "application/json")]
    Json,
}

impl Codec {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv",
            Self::Json => "application/json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Embedded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    pub max_batch_size: usize,
    pub max_concurrent_batches: usize,
    pub max_queue_rows: usize,
    pub max_queue_delay_ms: u64,
    pub deadline_ms: u64,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            max_concurrent_batches: 8,
            max_queue_rows: 10_000,
            max_queue_delay_ms: 0,
            deadline_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Transactions per second across every caller, stream included; 0 = unlimited.
    pub global_rps: u32,
    /// Tokens available at once for the global limit; default (0): `global_rps`.
    pub global_burst: u32,
    pub body_limit_bytes: usize,
    /// Most transactions in one score-batch request.
    pub max_batch_items: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            global_rps: 0,
            global_burst: 0,
            body_limit_bytes: 6 * 1024 * 1024,
            max_batch_items: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Longest a request may take end to end, past the scoring deadline (0 = deadline + 5 s).
    pub request_timeout_ms: u64,
    /// Longest graceful shutdown waits for in-flight requests before closing them.
    pub shutdown_grace_ms: u64,
    /// Longest a connection may take to send a request's headers, counted from when it is
    /// ready for a request: this stops slow-loris clients and also closes idle keep-alive
    /// connections.
    pub header_read_timeout_ms: u64,
    /// Most connections open at once; further clients wait in the listen backlog until one
    /// closes. Each open connection holds about 20 KB (more while its request waits), so this
    /// bounds the memory a flood of connections can take.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 0,
            shutdown_grace_ms: 30_000,
            header_read_timeout_ms: 30_000,
            max_connections: 4096,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// Every problem found in the configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Builds the configuration from a file (if any), the environment, then the flags.
    pub fn load(args: &Args) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_sources(args, env)
    }

    /// [`Config::load`] with the environment passed in, for tests.
    pub fn from_sources(
        args: &Args,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let mut tree = match &args.config {
            Some(path) => read_toml(path).unwrap_or_else(|e| {
                errors.push(e);
                toml::Table::new()
            }),
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Err(e) = apply_env(&mut tree, &name, &value) {
                errors.push(e);
            }
        }
        let mut config = from_table(tree, &mut errors);
        if let Some(bind) = args.bind {
            config.bind = bind;
        }
        if let Some(model) = &args.model {
            config.model.path = Some(model.clone());
        }
        if let Some(format) = args.log_format {
            config.log.format = format;
        }
        if args.allow_anonymous {
            config.allow_anonymous = true;
        }
        config.check(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(errors))
        }
    }

    /// Cross-field and range checks.
    fn check(&self, errors: &mut Vec<String>) {
        let m = &self.model;
        for (key, t) in [
            ("model.review_threshold", m.review_threshold),
            ("model.decline_threshold", m.decline_threshold),
        ] {
            if !(0.0..=1.0).contains(&t) {
                errors.push(format!("`{key}` must be within 0..=1. Given: {t}"));
            }
        }
        if m.review_threshold > m.decline_threshold {
            errors.push(format!(
                "`model.review_threshold` ({}) must be <= `model.decline_threshold` ({})",
                m.review_threshold, m.decline_threshold
            ));
        }
        if m.kind == ModelKind::Sagemaker {
            let sm = &m.sagemaker;
            if sm.endpoint_name.is_empty() {
                errors.push(
                    "`model.sagemaker.endpoint_name` is required when `model.kind = \"sagemaker\"`"
                        .to_owned(),
                );
            }
            if sm.timeout_ms == 0 || sm.max_attempts == 0 || sm.max_payload_bytes < 1024 {
                errors.push(
                    "`model.sagemaker`: `timeout_ms` and `max_attempts` must be > 0, \
                     `max_payload_bytes` >= 1024"
                        .to_owned(),
                );
            }
        }
        let b = &self.batching;
        for (key, value, min, max) in [
            ("batching.max_batch_size", b.max_batch_size, 1, 100_000),
            (
                "batching.max_concurrent_batches",
                b.max_concurrent_batches,
                1,
                1024,
            ),
            ("batching.max_queue_rows", b.max_queue_rows, 1, 10_000_000),
        ] {
            if !(min..=max).contains(&value) {
                errors.push(format!(
                    "`{key}` must be from {min} to {max}. Given: {value}"
                ));
            }
        }
        if b.deadline_ms == 0 {
            errors.push("`batching.deadline_ms` must be > 0".to_owned());
        }
        if b.max_queue_delay_ms >= b.deadline_ms {
            errors.push(format!(
                "`batching.max_queue_delay_ms` ({}) must be < `batching.deadline_ms` ({})",
                b.max_queue_delay_ms, b.deadline_ms
            ));
        }
        self.check_auth(errors);
        if let Some(k) = &self.kinesis {
            if k.stream.is_empty() {
                errors.push("`kinesis.stream` must name a stream (or give its ARN)".to_owned());
            }
            if !(1..=10_000).contains(&k.max_records) {
                errors.push(format!(
                    "`kinesis.max_records` must be from 1 to 10000. Given: {}",
                    k.max_records
                ));
            }
            match (k.initial_position, &k.initial_timestamp) {
                (InitialPosition::AtTimestamp, None) => errors
                    .push("`kinesis.initial_timestamp` is required with `AT_TIMESTAMP`".to_owned()),
                (_, Some(t))
                    if time::OffsetDateTime::parse(
                        t,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_err() =>
                {
                    errors.push(format!(
                        "`kinesis.initial_timestamp` must be RFC 3339. Given: {t}"
                    ));
                }
                _ => {}
            }
        }
        if self.http.header_read_timeout_ms == 0 {
            errors.push("`http.header_read_timeout_ms` must be > 0".to_owned());
        }
        if self.http.max_connections == 0 {
            errors.push("`http.max_connections` must be > 0".to_owned());
        }
        let l = &self.limits;
        if l.body_limit_bytes < 1024 {
            errors.push(format!(
                "`limits.body_limit_bytes` must be >= 1024. Given: {}",
                l.body_limit_bytes
            ));
        }
        if l.max_batch_items == 0 || l.max_batch_items > b.max_queue_rows {
            errors.push(format!(
                "`limits.max_batch_items` must be from 1 to `batching.max_queue_rows` ({}). Given: {}",
                b.max_queue_rows, l.max_batch_items
            ));
        }
    }

    /// Whether any credentials are configured.
    pub fn has_credentials(&self) -> bool {
        !self.auth.api_keys.is_empty() || !self.auth.sigv4.is_empty()
    }

    fn check_auth(&self, errors: &mut Vec<String>) {
        if !self.has_credentials() && !self.allow_anonymous && !self.bind.ip().is_loopback() {
            errors.push(format!(
                "refusing to serve {} without credentials: anyone who can reach it could use \
                 it. Configure `[[auth.api_keys]]` or `[[auth.sigv4]]`, bind a loopback \
                 address, or pass --allow-anonymous",
                self.bind
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, key) in self.auth.api_keys.iter().enumerate() {
            let at = format!("auth.api_keys[{i}]");
            if key.name.is_empty() || !names.insert(key.name.clone()) {
                errors.push(format!("`{at}.name` must be non-empty and unique"));
            }
            match (&key.key_sha256, &key.key_env) {
                (Some(hash), None) => {
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        errors.push(format!(
                            "`{at}.key_sha256` must be 64 hex digits (sha256sum of the key)"
                        ));
                    }
                }
                (None, Some(_)) => {}
                _ => errors.push(format!(
                    "`{at}` needs exactly one of `key_sha256` and `key_env`"
                )),
            }
            check_plan(&at, key.plan(), errors);
        }
        let mut akids = std::collections::HashSet::new();
        for (i, key) in self.auth.sigv4.iter().enumerate() {
            let at = format!("auth.sigv4[{i}]");
            if key.access_key_id.is_empty() || !akids.insert(key.access_key_id.clone()) {
                errors.push(format!("`{at}.access_key_id` must be non-empty and unique"));
            }
            if !names.insert(key.name().to_owned()) {
                errors.push(format!("`{at}.name` must be unique among all callers"));
            }
            if key.secret_env.is_empty() {
                errors.push(format!(
                    "`{at}.secret_env` must name an environment variable"
                ));
            }
            check_plan(&at, key.plan(), errors);
        }
        if self.limits.global_rps == 0 && self.limits.global_burst != 0 {
            errors.push("`limits.global_burst` needs `limits.global_rps`".to_owned());
        }
    }

    /// The end-to-end HTTP timeout: the configured one, or the scoring deadline plus slack.
    pub fn request_timeout(&self) -> std::time::Duration {
        let ms = match self.http.request_timeout_ms {
            0 => self.batching.deadline_ms + 5_000,
            ms => ms,
        };
        std::time::Duration::from_millis(ms)
    }

    /// Threads for the embedded model.
    pub fn model_threads(&self) -> usize {
        match self.model.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

fn check_plan(at: &str, plan: Plan, errors: &mut Vec<String>) {
    if plan.rate > 0 && plan.burst == 0 {
        errors.push(format!("`{at}.burst` must be >= 1 when `rate` is set"));
    }
    if plan.quota_per_day == Some(0) {
        errors.push(format!(
            "`{at}.quota_per_day` must be >= 1 (omit it for no quota)"
        ));
    }
}

fn read_toml(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Deserializes each section on its own, so that a bad key in one section does not hide
/// another section's problems.
fn from_table(mut tree: toml::Table, errors: &mut Vec<String>) -> Config {
    let mut config = Config::default();
    macro_rules! section {
        ($key:literal, $field:ident) => {
            if let Some(value) = tree.remove($key) {
                match value.try_into() {
                    Ok(v) => config.$field = v,
                    Err(e) => errors.push(format!("`{}`: {}", $key, one_line(&e))),
                }
            }
        };
    }
    section!("bind", bind);
    section!("allow_anonymous", allow_anonymous);
    section!("auth", auth);
    section!("model", model);
    section!("batching", batching);
    section!("limits", limits);
    section!("cache", cache);
    section!("http", http);
    section!("kinesis", kinesis);
    section!("log", log);
    for key in tree.keys() {
        errors.push(format!(
            "unknown key `{key}` (known: bind, allow_anonymous, auth, model, batching, \
             limits, cache, http, log, kinesis)"
        ));
    }
    config
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Applies `INFERGATE_BATCHING__MAX_BATCH_SIZE=128` as `batching.max_batch_size = 128`. The
/// value is read as a TOML value when it is one (numbers, booleans), else as a string.
fn apply_env(tree: &mut toml::Table, name: &str, value: &str) -> Result<(), String> {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if ENV_NOT_KEYS.contains(&name) {
        return Ok(());
    }
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("environment variable {name}: empty key segment"));
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().expect("split on a non-empty string");
    let mut table = tree;
    for key in parents {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(format!(
                    "environment variable {name}: `{key}` is not a section"
                ));
            }
        };
    }
    table.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests;
