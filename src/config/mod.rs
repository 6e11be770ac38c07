//! Configuration: the shape of every section and its defaults. A TOML file (every key optional),
//! overridden by `INFERGATE_*` environment variables, overridden by command-line flags; every bad
//! value is reported with its key, all at once, before anything starts.
//!
//! - `args`: the command line.
//! - `http`, `kinesis`: those sections.
//! - `load`: the file, environment and flag layering.
//! - `validate`: the checks run on the result.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::middleware::rate_limit::Plan;
use crate::model::sagemaker::Codec;

mod args;
mod explanations;
mod fleet;
mod http;
mod kinesis;
mod load;
mod validate;

pub use args::{Args, Command};
pub use explanations::{ExplainMode, ExplanationsConfig};
pub use fleet::{FleetConfig, OnRedisError};
pub use http::{HttpConfig, LimitsConfig};
pub use kinesis::{CheckpointConfig, InitialPosition, KinesisConfig, LeasesConfig, SinkConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// The whole configuration, one field per top-level TOML key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub bind: SocketAddr,
    /// Where the operator routes (`/metrics`, and `/health/*` too) are served; absent: on
    /// `bind`. When set, `/metrics`, which names callers, is no longer served on `bind`.
    pub admin_bind: Option<SocketAddr>,
    /// Serve without credentials on a non-loopback bind (on loopback it is always allowed when
    /// no credentials are configured).
    pub allow_anonymous: bool,
    pub auth: AuthConfig,
    pub model: ModelConfig,
    pub batching: BatchingConfig,
    pub limits: LimitsConfig,
    pub cache: CacheConfig,
    pub explanations: ExplanationsConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// The stream consumer; absent = none.
    pub kinesis: Option<KinesisConfig>,
    /// Limits and cache shared by every replica through Redis; absent = each replica alone.
    pub fleet: Option<FleetConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_bind: None,
            allow_anonymous: false,
            auth: AuthConfig::default(),
            model: ModelConfig::default(),
            batching: BatchingConfig::default(),
            limits: LimitsConfig::default(),
            cache: CacheConfig::default(),
            explanations: ExplanationsConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            kinesis: None,
            fleet: None,
        }
    }
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
///
/// The plan fields (`rate` to `allow_cache_bypass`) repeat [`ApiKeyConfig`]'s: serde's `flatten`
/// could share them, but it does not work with `deny_unknown_fields`.
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
    /// More names the SageMaker route answers to, besides the model's own (the embedded
    /// model's name, `fraud-xgb` for the built-in one; the endpoint's name with a SageMaker
    /// backend). `"*"` answers any name. Other names get `ValidationError`, as SageMaker
    /// answers for an endpoint that does not exist.
    pub endpoint_aliases: Vec<String>,
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
            endpoint_aliases: Vec::new(),
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
    /// Whether any credentials are configured.
    pub fn has_credentials(&self) -> bool {
        !self.auth.api_keys.is_empty() || !self.auth.sigv4.is_empty()
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

#[cfg(test)]
mod tests;
