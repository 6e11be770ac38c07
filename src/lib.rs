//! infergate: a real-time inference gateway. One binary that accepts card transactions over
//! REST (and a SageMaker-compatible route) and from a Kinesis stream, batches them, and scores
//! them with an XGBoost model evaluated in-process (the default) or a SageMaker endpoint.
//!
//! # Layout
//!
//! Two entry points share one scoring path: HTTP requests ([`server`] → [`api`]) and stream
//! records ([`kinesis`]); both call [`scoring`], which the [`pipeline`] serves from either
//! backend of [`model`] (the embedded XGBoost evaluator or a SageMaker endpoint).
//!
//! - [`gateway`]: builds everything from a [`Config`] and serves until shutdown.
//! - [`server`]: the accept loop, its connection limits and timers, the one middleware stack.
//! - [`api`]: HTTP handlers and the OpenAPI document generated from them.
//! - [`middleware`]: callers (API keys, SigV4) and their usage plans (rate limits, quotas).
//! - [`scoring`]: cache → admission → pipeline → decision, the one place scores come from.
//! - [`cache`]: the TTL cache for scores and pass-through answers, with coalescing.
//! - [`fleet`]: what replicas share through Redis: usage plans, quotas, the global limit.
//! - [`pipeline`]: admission, the bounded queue, the batcher.
//! - [`model`]: the [`Model`](model::Model) trait, the XGBoost loader/evaluator and its
//!   threads, the SageMaker backend.
//! - [`kinesis`]: the stream consumer: discovery, shard readers, pages, KPL, sinks, checkpoints.
//! - [`health`]: readiness as data (shutdown, model, stream consumer per shard).
//! - [`domain`]: the transaction contract, its validation, the features, the score's meaning.
//! - [`config`]: command line, environment and TOML file into one validated [`Config`].
//! - [`state`]: what the HTTP handlers share.
//! - [`error`]: the REST error vocabulary (RFC 9457 problem details).
//! - [`aws`]: the one AWS SDK configuration builder.
//! - [`telemetry`], [`shutdown`]: logs, metrics, signals.

pub mod api;
pub mod aws;
pub mod cache;
pub mod config;
pub mod domain;
pub mod error;
pub mod fleet;
/// Checks behind the fuzz targets in `fuzz/` and the replay of their corpus; not an API.
#[doc(hidden)]
pub mod fuzzing;
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
