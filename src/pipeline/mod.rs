//! The scoring pipeline every entry point shares: admit -> queue -> batcher -> model.
//!
//! Admission is `max_queue_rows` permits, one per queued row, so the queue is bounded without the
//! batcher having to count: REST callers `try` (a full queue answers 503 at once), stream
//! consumers wait (the stream absorbs the back-pressure).
//!
//! The permits are in two semaphores: a share of the queue ([`HTTP_RESERVED_PERCENT`]) is reserved
//! for callers that `try`, and waiting callers only ever take from the rest. A semaphore hands
//! released permits to its waiters first, so with a single one a stream waiting for a chunk's
//! worth of room would take every row's place as it came free and HTTP would get 503 for as long
//! as the stream had a backlog. With the reserve a stream backlog never sheds REST: HTTP takes
//! from the shared part while it has room and from the reserved part when the stream has it all.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BatchingConfig;
use crate::domain::FeatureRow;
use crate::model::{Model, ModelError};

pub mod batcher;
pub mod queue;

use queue::Entry;

/// The percentage of `max_queue_rows` (rounded down) that waiting callers (the stream) can never
/// take, so that HTTP callers always find room behind a stream backlog.
pub const HTTP_RESERVED_PERCENT: usize = 25;

/// A score and what produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelScore {
    pub score: f32,
    /// The answering model's label (`name@version`).
    pub model: Arc<str>,
    /// How long the row waited for its batch and the batch's model call took (zero when the
    /// score did not come from a model call just now).
    pub timing: Timing,
}

/// Where a computed score's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub queue: std::time::Duration,
    pub model: std::time::Duration,
}

/// Why a row got no score.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScoreError {
    #[error("the scoring queue is full ({max_queue_rows} rows); retry later")]
    Overloaded { max_queue_rows: usize },
    #[error("no score within the deadline of {deadline_ms} ms")]
    DeadlineExceeded { deadline_ms: u64 },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl ScoreError {
    /// Stable snake_case label for metrics and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Overloaded { .. } => "overloaded",
            Self::DeadlineExceeded { .. } => "deadline_exceeded",
            Self::Model(_) => "model_error",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// How a caller waits for room in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Fail at once with `Overloaded` when the rows do not fit (HTTP).
    TryNow,
    /// Wait for room (stream consumers).
    Wait,
}

/// Cheap-to-clone handle to the shared pipeline.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unbounded because the semaphore already bounds what can be in it.
    entries: mpsc::UnboundedSender<Entry>,
    /// Places every caller may take: `max_queue_rows - reserved`.
    shared: Arc<Semaphore>,
    /// Places only `Admit::TryNow` callers take, when the shared ones are gone.
    reserved: Arc<Semaphore>,
    max_queue_rows: usize,
    /// The shared places: the most rows a waiting caller can ever hold.
    max_wait_rows: usize,
    deadline: Duration,
    model: Arc<dyn Model>,
    /// Cancelled when the gateway stops waiting for scores (see [`Pipeline::abandon_token`]).
    abandon: CancellationToken,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("model", &self.inner.model.label())
            .field("max_queue_rows", &self.inner.max_queue_rows)
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}

impl Pipeline {
    /// Starts the batching task on `tracker`. It runs until every handle is dropped and the
    /// queue is drained.
    pub fn start(model: Arc<dyn Model>, config: &BatchingConfig, tracker: &TaskTracker) -> Self {
        let (entries, rx) = mpsc::unbounded_channel();
        let abandon = CancellationToken::new();
        tracker.spawn(batcher::batching_task(
            rx,
            Arc::clone(&model),
            batcher::BatcherConfig::from(config),
            abandon.clone(),
        ));
        let max_queue_rows = config.max_queue_rows;
        let reserved = http_reserved_rows(max_queue_rows);
        Self {
            inner: Arc::new(Inner {
                entries,
                shared: Arc::new(Semaphore::new(max_queue_rows - reserved)),
                reserved: Arc::new(Semaphore::new(reserved)),
                max_queue_rows,
                max_wait_rows: max_queue_rows - reserved,
                deadline: Duration::from_millis(config.deadline_ms),
                model,
                abandon,
            }),
        }
    }

    /// Cancelling this token gives up on scoring: every row queued or in a model call, and
    /// every row queued from then on, is answered `ShuttingDown` at once (the model calls in
    /// flight are dropped). Shutdown does so at the end of its grace period.
    pub fn abandon_token(&self) -> CancellationToken {
        self.inner.abandon.clone()
    }

    pub fn model(&self) -> &Arc<dyn Model> {
        &self.inner.model
    }

    /// Rows admitted and not yet answered.
    pub fn queued_rows(&self) -> usize {
        let inner = &*self.inner;
        inner.max_queue_rows - inner.shared.available_permits() - inner.reserved.available_permits()
    }

    /// The most rows that can wait at once: no single call may ask for more.
    pub fn max_queue_rows(&self) -> usize {
        self.inner.max_queue_rows
    }

    /// The most rows an `Admit::Wait` call may ask for: the queue less the share reserved for
    /// `Admit::TryNow` callers.
    pub fn max_wait_rows(&self) -> usize {
        self.inner.max_wait_rows
    }

    pub fn deadline(&self) -> Duration {
        self.inner.deadline
    }

    /// Scores rows, each within the pipeline's deadline. Admission is all or nothing: either
    /// every row is queued or the call fails with `Overloaded`. Each row then gets its own
    /// outcome, in order. `Admit::TryNow` may use the whole queue; `Admit::Wait` only the part
    /// not reserved for `TryNow` (at most [`Pipeline::max_wait_rows`] rows).
    pub async fn score(
        &self,
        rows: &[FeatureRow],
        admit: Admit,
    ) -> Result<Vec<Result<ModelScore, ScoreError>>, ScoreError> {
        let inner = &*self.inner;
        let n = rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let overloaded = || {
            metrics::counter!("infergate_rows_shed_total").increment(n as u64);
            ScoreError::Overloaded {
                max_queue_rows: inner.max_queue_rows,
            }
        };
        let count = u32::try_from(n).map_err(|_| overloaded())?;
        let fits = match admit {
            Admit::TryNow => inner.max_queue_rows,
            Admit::Wait => inner.max_wait_rows,
        };
        if n > fits {
            return Err(overloaded());
        }
        let mut places = match admit {
            Admit::TryNow => inner.try_admit(count).ok_or_else(overloaded)?,
            Admit::Wait => Places {
                shared: Some(
                    Arc::clone(&inner.shared)
                        .acquire_many_owned(count)
                        .await
                        .map_err(|_| ScoreError::ShuttingDown)?,
                ),
                reserved: None,
            },
        };

        let queued_at = Instant::now();
        let deadline = queued_at + inner.deadline;
        let mut answers = Vec::with_capacity(n);
        for row in rows {
            let (reply, answer) = oneshot::channel();
            let entry = Entry {
                row: *row,
                reply,
                queued_at,
                deadline,
                permit: places.take_one(),
            };
            if inner.entries.send(entry).is_err() {
                return Err(ScoreError::ShuttingDown);
            }
            answers.push(answer);
        }

        let deadline_ms = inner.deadline.as_millis() as u64;
        let mut out = Vec::with_capacity(n);
        // The rows are all queued already, so awaiting them one after another costs no more
        // than the slowest of them.
        for answer in answers {
            let outcome = match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(outcome)) => outcome,
                // The batcher dropped the row: only a panic in a model call or shutdown does.
                Ok(Err(_)) => Err(ScoreError::Model(ModelError::Unavailable(
                    "the model call failed".into(),
                ))),
                Err(_) => Err(ScoreError::DeadlineExceeded { deadline_ms }),
            };
            out.push(outcome);
        }
        Ok(out)
    }
}

/// The rows of a queue of `max_queue_rows` reserved for `Admit::TryNow` (never all of them: a
/// waiting caller always has room for at least one row).
fn http_reserved_rows(max_queue_rows: usize) -> usize {
    max_queue_rows * HTTP_RESERVED_PERCENT / 100
}

impl Inner {
    /// `count` places at once, or `None`: shared places first, the reserved ones for the rest.
    fn try_admit(&self, count: u32) -> Option<Places> {
        let available = u32::try_from(self.shared.available_permits()).unwrap_or(u32::MAX);
        let from_shared = count.min(available);
        // Another caller may take them first: then the reserved places must hold all of them.
        let shared = (from_shared > 0)
            .then(|| {
                Arc::clone(&self.shared)
                    .try_acquire_many_owned(from_shared)
                    .ok()
            })
            .flatten();
        let rest = count - shared.as_ref().map_or(0, |p| p.num_permits() as u32);
        let reserved = if rest > 0 {
            Some(
                Arc::clone(&self.reserved)
                    .try_acquire_many_owned(rest)
                    .ok()?,
            )
        } else {
            None
        };
        Some(Places { shared, reserved })
    }
}

/// The places one call was admitted with, handed out one per row.
struct Places {
    shared: Option<OwnedSemaphorePermit>,
    reserved: Option<OwnedSemaphorePermit>,
}

impl Places {
    fn take_one(&mut self) -> Option<OwnedSemaphorePermit> {
        let one = |p: &mut Option<OwnedSemaphorePermit>| p.as_mut().and_then(|p| p.split(1));
        one(&mut self.shared).or_else(|| one(&mut self.reserved))
    }
}

#[cfg(test)]
mod tests;
