//! Scoring a page through a model outage. A scoring error (the model failed, the deadline
//! passed, the queue was full) is never the record's own fault, so its row is not a dead
//! letter: the rows that failed are scored again, with capped exponential back-off, until every
//! row of the page has a score. The shard waits meanwhile, and nothing past the page is
//! checkpointed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{FeatureRow, Score};
use crate::pipeline::ScoreError;
use crate::scoring::Scoring;

/// The first wait before rows are scored again, and the longest.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// Waits that double from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first.min(max),
            max,
        }
    }

    /// The wait before the next attempt (each one twice the last, at most `max`).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(FIRST_RETRY, MAX_RETRY)
    }
}

/// The gateway began shutting down before every row had a score: the page is neither written
/// nor checkpointed, and is read again at the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Scores every item, in order, scoring the rows that failed again after each wait of
/// `backoff` until all have a score. `failed` is told of each round that left rows unscored
/// (the number of rows and the first error), before its wait.
pub async fn score_all(
    scoring: &Scoring,
    items: Vec<(String, FeatureRow)>,
    mut backoff: Backoff,
    stop: &CancellationToken,
    mut failed: impl FnMut(usize, &ScoreError),
) -> Result<Vec<Score>, Stopped> {
    let mut scores: Vec<Option<Score>> = vec![None; items.len()];
    let mut pending: Vec<usize> = (0..items.len()).collect();
    while !pending.is_empty() {
        let part = pending.iter().map(|&i| items[i].clone()).collect();
        let outcomes = scoring.paced(part).await.map_err(|_| Stopped)?;
        let mut still = Vec::new();
        let mut first_error = None;
        for (i, outcome) in pending.into_iter().zip(outcomes) {
            match outcome {
                Ok(score) => scores[i] = Some(score),
                Err(ScoreError::ShuttingDown) => return Err(Stopped),
                Err(e) => {
                    first_error.get_or_insert(e);
                    still.push(i);
                }
            }
        }
        pending = still;
        if let Some(error) = first_error {
            failed(pending.len(), &error);
            tokio::select! {
                () = stop.cancelled() => return Err(Stopped),
                () = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }
    Ok(scores
        .into_iter()
        .map(|s| s.expect("every row has a score once none is pending. This is a bug."))
        .collect())
}

#[cfg(test)]
mod tests;
