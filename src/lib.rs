//! infergate: a real-time inference gateway. One binary that accepts card transactions over
//! REST, batches them, and scores them with an XGBoost model evaluated in-process.
//!
//! # Layout
//!
//! - [`config`]: command line, environment and TOML file into one validated [`Config`].
//! - [`domain`]: the transaction contract, its validation, and the features derived from it.
//! - [`model`]: the [`Model`](model::Model) trait, the XGBoost loader/evaluator, and the
//!   embedded model that runs it on dedicated threads.
//! - [`pipeline`]: the shared scoring path: admission, the bounded queue, the batcher.
//! - [`middleware`]: callers (API keys, SigV4) and their usage plans (rate limits, quotas).
//! - [`cache`]: the response cache, which also coalesces identical concurrent requests.
//! - [`kinesis`]: the stream consumer: shard readers, KPL de-aggregation, sinks, checkpoints.
//! - [`api`]: HTTP handlers and the OpenAPI document generated from them.
//! - [`server`]: router, middleware stack, serving and graceful shutdown.
//! - [`error`]: the REST error vocabulary (RFC 9457 problem details).
//! - [`aws`]: the one AWS SDK configuration builder.
//! - [`telemetry`], [`shutdown`]: logs, metrics, signals.

pub mod api;
pub mod aws;
pub mod cache;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod health;
pub mod kinesis;
pub mod middleware;
pub mod model;
pub mod pipeline;
pub mod scoring;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use gateway::Gateway;
