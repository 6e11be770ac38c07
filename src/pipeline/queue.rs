//! The batching queue's state: plain data and pure functions of an explicit `now`, so that the
//! batching rules are unit-tested without a runtime, channels or a clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;

use super::{ModelScore, ScoreError};
use crate::domain::FeatureRow;

/// One row waiting for a score.
#[derive(Debug)]
pub struct Entry {
    pub row: FeatureRow,
    /// Where the answer goes; closed when the caller has gone.
    pub reply: oneshot::Sender<Result<ModelScore, ScoreError>>,
    pub queued_at: Instant,
    /// After this instant the caller has already been answered 504; scoring it would be waste.
    pub deadline: Instant,
    /// The row's place in the bounded queue, given back when the entry is dropped.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// What the batcher should do next.
#[derive(Debug)]
pub enum NextBatch {
    /// Score these now.
    Ready(Vec<Entry>),
    /// Rows are waiting for the batch to fill (`max_queue_delay`); look again at this instant.
    WaitUntil(Instant),
    /// Nothing to score.
    Empty,
}

/// Counts of rows removed without being scored, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub caller_gone: u64,
    pub deadline: u64,
}

#[derive(Debug)]
pub struct State {
    entries: VecDeque<Entry>,
    max_batch_size: usize,
    max_queue_delay: Duration,
    skipped: Skipped,
}

impl State {
    pub fn new(max_batch_size: usize, max_queue_delay: Duration) -> Self {
        Self {
            entries: VecDeque::new(),
            max_batch_size: max_batch_size.max(1),
            max_queue_delay,
            skipped: Skipped::default(),
        }
    }

    pub fn append(&mut self, entry: Entry) {
        self.entries.push_back(entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Answers every queued row `ShuttingDown` and empties the queue; returns how many.
    pub fn abandon(&mut self) -> u64 {
        let n = self.entries.len() as u64;
        for entry in self.entries.drain(..) {
            let _ = entry.reply.send(Err(ScoreError::ShuttingDown));
        }
        n
    }

    /// Takes and resets the counts of skipped rows.
    pub fn take_skipped(&mut self) -> Skipped {
        std::mem::take(&mut self.skipped)
    }

    /// Cuts the next batch: the oldest rows, at most `max_batch_size`, skipping rows whose
    /// caller has gone and answering rows whose deadline has passed. With a `max_queue_delay`,
    /// a partial batch waits until its oldest row has waited that long, unless `draining`.
    pub fn next_batch(&mut self, now: Instant, draining: bool) -> NextBatch {
        loop {
            let Some(oldest) = self.entries.front() else {
                return NextBatch::Empty;
            };
            if !draining
                && !self.max_queue_delay.is_zero()
                && self.entries.len() < self.max_batch_size
            {
                let ready_at = oldest.queued_at + self.max_queue_delay;
                if now < ready_at {
                    return NextBatch::WaitUntil(ready_at);
                }
            }
            let mut batch = Vec::with_capacity(self.max_batch_size.min(self.entries.len()));
            while batch.len() < self.max_batch_size {
                let Some(entry) = self.entries.pop_front() else {
                    break;
                };
                if entry.reply.is_closed() {
                    self.skipped.caller_gone += 1;
                } else if entry.deadline <= now {
                    self.skipped.deadline += 1;
                    let deadline_ms = entry.deadline.saturating_duration_since(entry.queued_at);
                    let _ = entry.reply.send(Err(ScoreError::DeadlineExceeded {
                        deadline_ms: deadline_ms.as_millis() as u64,
                    }));
                } else {
                    batch.push(entry);
                }
            }
            if !batch.is_empty() {
                return NextBatch::Ready(batch);
            }
            // Everything taken was stale; look at what is left.
        }
    }
}

#[cfg(test)]
mod tests;
