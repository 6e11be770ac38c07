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
    pub model: ModelConfig,
    pub batching: BatchingConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model: ModelConfig::default(),
            batching: BatchingConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Only "embedded" for now.
    pub kind: ModelKind,
    /// Model file; `None` = the compiled-in fraud model.
    pub path: Option<PathBuf>,
    pub review_threshold: f32,
    pub decline_threshold: f32,
    /// Threads evaluating the embedded model; 0 = one per core.
    pub threads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::Embedded,
            path: None,
            review_threshold: 0.5,
            decline_threshold: 0.9,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
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
    pub body_limit_bytes: usize,
    /// Most transactions in one score-batch request.
    pub max_batch_items: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 0,
            shutdown_grace_ms: 30_000,
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
    section!("model", model);
    section!("batching", batching);
    section!("limits", limits);
    section!("http", http);
    section!("log", log);
    for key in tree.keys() {
        errors.push(format!(
            "unknown key `{key}` (known: bind, model, batching, limits, http, log)"
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
