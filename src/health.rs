//! Readiness as data: whether the gateway is shutting down, whether its model can answer, and
//! how its stream consumer is doing, shard by shard. The consumer reports here; the health
//! routes and the SageMaker `/ping` read it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::Model;

/// What the consumer last reported of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    /// When its reader last got an answer from `GetRecords` (records or not) or checkpointed
    /// a page; before either, when its first reader started.
    pub last_read: Instant,
    /// Why its reader last failed, until it reads again.
    pub last_error: Option<String>,
    /// Set while the page in hand cannot be scored (a model outage: its rows are being
    /// scored again), with the reason.
    pub scoring_failure: Option<String>,
}

impl ShardStatus {
    fn new() -> Self {
        Self {
            last_read: Instant::now(),
            last_error: None,
            scoring_failure: None,
        }
    }
}

/// A shard that keeps the gateway from being ready, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardProblem {
    pub shard_id: String,
    pub reason: String,
}

impl std::fmt::Display for ShardProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.shard_id, self.reason)
    }
}

fn list(problems: &[ShardProblem]) -> String {
    problems
        .iter()
        .map(ShardProblem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why the gateway should not get traffic now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("the stream consumer cannot read its stream")]
    Stream,
    /// Shards that make no progress, each with its reason.
    #[error("stream shards make no progress: {}", list(.0))]
    Shards(Vec<ShardProblem>),
    #[error("the model is not ready")]
    Model,
    #[error("the stream consumer cannot reach its lease table: {0}")]
    Leases(String),
}

/// Shared by the health routes and the stream consumer; cheap to clone.
#[derive(Clone)]
pub struct Health {
    model: Arc<dyn Model>,
    inner: Arc<Inner>,
}

struct Inner {
    shutting_down: AtomicBool,
    stream: Mutex<StreamStatus>,
}

#[derive(Debug, Default)]
struct StreamStatus {
    /// Set while the consumer cannot read its stream (listing shards or reading one failed),
    /// with the reason; cleared by the next successful call.
    failing: Option<String>,
    /// Set while the consumer cannot read or renew its shard leases, with the reason.
    leases_failing: Option<String>,
    /// With DynamoDB leases: this instance's worker id and the shards it holds.
    leases: Option<(String, Vec<String>)>,
    shards: BTreeMap<String, ShardStatus>,
    /// The consumer's stream, and how long a shard may go without reading before it stalls
    /// (set when a consumer starts).
    watch: Option<(String, Duration)>,
}

impl StreamStatus {
    fn stalled(&self, status: &ShardStatus, now: Instant) -> bool {
        self.watch
            .as_ref()
            .is_some_and(|(_, timeout)| now - status.last_read >= *timeout)
    }

    fn shard(&mut self, shard_id: &str) -> &mut ShardStatus {
        self.shards
            .entry(shard_id.to_owned())
            .or_insert_with(ShardStatus::new)
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("model", &self.model.label())
            .field("shutting_down", &self.is_shutting_down())
            .field("stream", &*self.stream())
            .finish()
    }
}

impl Health {
    pub fn new(model: Arc<dyn Model>) -> Self {
        Self {
            model,
            inner: Arc::new(Inner {
                shutting_down: AtomicBool::new(false),
                stream: Mutex::new(StreamStatus::default()),
            }),
        }
    }

    /// Whether traffic may be routed here, and if not, the first reason why.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.is_shutting_down() {
            return Err(NotReady::ShuttingDown);
        }
        if self.stream().failing.is_some() {
            return Err(NotReady::Stream);
        }
        if let Some(reason) = self.stream().leases_failing.clone() {
            return Err(NotReady::Leases(reason));
        }
        let problems = self.shard_problems();
        if !problems.is_empty() {
            return Err(NotReady::Shards(problems));
        }
        if !self.model.ready() {
            return Err(NotReady::Model);
        }
        Ok(())
    }

    /// Shutdown has begun: readiness fails from now on, so load balancers drain this instance.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// The consumer reached its stream.
    pub fn stream_ok(&self) {
        self.stream().failing = None;
    }

    /// The consumer cannot reach its stream, for `reason`.
    pub fn stream_failed(&self, reason: impl Into<String>) {
        self.stream().failing = Some(reason.into());
    }

    /// Whether the last lease cycle (renew, read the table, take) worked: `Err` with why not.
    pub fn leases(&self, result: Result<(), String>) {
        self.stream().leases_failing = result.err();
    }

    /// With DynamoDB leases, after each lease cycle: this instance's worker id and the shards
    /// it holds leases for.
    pub fn leases_held(&self, worker: &str, shards: Vec<String>) {
        self.stream().leases = Some((worker.to_owned(), shards));
    }

    /// The worker id and held shards last reported, when the consumer uses leases.
    pub fn lease_holding(&self) -> Option<(String, Vec<String>)> {
        self.stream().leases.clone()
    }

    /// Why the consumer cannot reach its stream, while it cannot.
    pub fn stream_failure(&self) -> Option<String> {
        self.stream().failing.clone()
    }

    /// A consumer of `stream` starts: from now on a shard whose reader has not read for
    /// `stall_timeout` makes the gateway unready.
    pub fn watch_shards(&self, stream: &str, stall_timeout: Duration) {
        self.stream().watch = Some((stream.to_owned(), stall_timeout));
    }

    /// A reader starts for `shard_id`. The first start begins its stall clock; a restart after
    /// a failure does not reset it.
    pub fn shard_started(&self, shard_id: &str) {
        self.stream().shard(shard_id);
    }

    /// The reader of `shard_id` failed, for `reason` (it is started again).
    pub fn shard_failed(&self, shard_id: &str, reason: impl Into<String>) {
        self.stream().shard(shard_id).last_error = Some(reason.into());
    }

    /// A reader got an answer from `GetRecords` for `shard_id`, or checkpointed a page.
    pub fn shard_read(&self, shard_id: &str) {
        let mut stream = self.stream();
        stream.failing = None;
        let status = stream.shard(shard_id);
        status.last_read = Instant::now();
        status.last_error = None;
    }

    /// The page in hand of `shard_id` cannot be scored, for `reason`: the shard is held until
    /// it is, and the gateway is not ready meanwhile.
    pub fn shard_scoring_failed(&self, shard_id: &str, reason: impl Into<String>) {
        self.stream().shard(shard_id).scoring_failure = Some(reason.into());
    }

    /// The page in hand of `shard_id` is scored.
    pub fn shard_scored(&self, shard_id: &str) {
        if let Some(status) = self.stream().shards.get_mut(shard_id) {
            status.scoring_failure = None;
        }
    }

    /// The shards that keep the gateway from being ready, in shard order: those whose page in
    /// hand cannot be scored, and those stalled (not read for the stall timeout).
    pub fn shard_problems(&self) -> Vec<ShardProblem> {
        let stream = self.stream();
        let now = Instant::now();
        stream
            .shards
            .iter()
            .filter_map(|(shard_id, status)| {
                let reason = if let Some(failure) = &status.scoring_failure {
                    format!("scoring fails, the page in hand is scored again: {failure}")
                } else if stream.stalled(status, now) {
                    let stalled = format!(
                        "stalled: no GetRecords answer for {:.1} s",
                        (now - status.last_read).as_secs_f64()
                    );
                    match &status.last_error {
                        Some(error) => format!("{stalled}; last error: {error}"),
                        None => format!("{stalled}; no error reported"),
                    }
                } else {
                    return None;
                };
                Some(ShardProblem {
                    shard_id: shard_id.clone(),
                    reason,
                })
            })
            .collect()
    }

    /// How many shards are stalled (not read for the stall timeout).
    pub fn stalled_shards(&self) -> usize {
        let stream = self.stream();
        let now = Instant::now();
        stream
            .shards
            .values()
            .filter(|status| stream.stalled(status, now))
            .count()
    }

    /// Sets `infergate_kinesis_shards_stalled` for the consumer's stream, if there is one.
    pub fn record_stalled_shards(&self) {
        let stream = self.stream().watch.as_ref().map(|(name, _)| name.clone());
        if let Some(stream) = stream {
            metrics::gauge!("infergate_kinesis_shards_stalled", "stream" => stream)
                .set(self.stalled_shards() as f64);
        }
    }

    /// `shard_id` has no reader any more (it ended, or the consumer stopped).
    pub fn shard_done(&self, shard_id: &str) {
        self.stream().shards.remove(shard_id);
    }

    /// The shards being read, with what their readers last reported.
    pub fn shards(&self) -> BTreeMap<String, ShardStatus> {
        self.stream().shards.clone()
    }

    fn stream(&self) -> std::sync::MutexGuard<'_, StreamStatus> {
        // The status is plain data, valid whatever a panicking holder was doing.
        self.inner
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
