//! The batching task: whenever one of `max_concurrent_batches` dispatch slots is free, cut the
//! next batch from the queue and hand it to the model. Batches grow with load and a quiet system
//! adds no delay (unless `max_queue_delay` asks for it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::{Entry, NextBatch, State};
use super::{ModelScore, ScoreError};
use crate::config::BatchingConfig;
use crate::domain::FeatureRow;
use crate::model::{Model, ModelError};

#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    pub max_batch_size: usize,
    pub max_concurrent_batches: usize,
    pub max_queue_delay: Duration,
}

impl From<&BatchingConfig> for BatcherConfig {
    fn from(c: &BatchingConfig) -> Self {
        Self {
            max_batch_size: c.max_batch_size,
            max_concurrent_batches: c.max_concurrent_batches,
            max_queue_delay: Duration::from_millis(c.max_queue_delay_ms),
        }
    }
}

/// The batcher's metric handles, looked up once: a lookup hashes the name and labels, which
/// per row and per batch showed in profiles.
#[derive(Clone)]
struct BatchMetrics {
    queue_duration: metrics::Histogram,
    batch_rows: metrics::Histogram,
    model_calls: metrics::Counter,
    model_duration: metrics::Histogram,
    rows_scored: metrics::Counter,
    model_errors: metrics::Counter,
}

impl BatchMetrics {
    fn new(model: &dyn Model) -> Self {
        Self {
            queue_duration: metrics::histogram!("infergate_queue_duration_seconds"),
            batch_rows: metrics::histogram!("infergate_batch_rows"),
            model_calls: metrics::counter!("infergate_model_calls_total", "model" => model.label().to_owned()),
            model_duration: metrics::histogram!("infergate_model_duration_seconds"),
            rows_scored: metrics::counter!("infergate_rows_scored_total"),
            model_errors: metrics::counter!("infergate_model_errors_total"),
        }
    }
}

/// Runs until the entry channel closes, then drains: every queued row is scored (or answered)
/// and every batch in flight finishes before it returns. Once `abandon` is cancelled, every
/// row queued, in a model call or queued later is answered `ShuttingDown` instead.
pub async fn batching_task(
    mut entries: mpsc::UnboundedReceiver<Entry>,
    model: Arc<dyn Model>,
    config: BatcherConfig,
    abandon: CancellationToken,
) {
    let mut state = State::new(config.max_batch_size, config.max_queue_delay);
    let batch_metrics = Arc::new(BatchMetrics::new(model.as_ref()));
    let queue_rows = metrics::gauge!("infergate_queue_rows");
    let mut in_flight = JoinSet::new();
    let mut closed = false;
    let mut abandoned = false;
    loop {
        let mut wake_at = None;
        abandoned |= abandon.is_cancelled();
        if abandoned {
            let n = state.abandon();
            if n > 0 {
                metrics::counter!("infergate_rows_skipped_total", "reason" => "shutting_down")
                    .increment(n);
            }
        }
        while !abandoned && in_flight.len() < config.max_concurrent_batches.max(1) {
            match state.next_batch(Instant::now(), closed) {
                NextBatch::Ready(batch) => {
                    in_flight.spawn(run_batch(
                        Arc::clone(&model),
                        batch,
                        Arc::clone(&batch_metrics),
                        abandon.clone(),
                    ));
                }
                NextBatch::WaitUntil(t) => {
                    wake_at = Some(t);
                    break;
                }
                NextBatch::Empty => break,
            }
        }
        let skipped = state.take_skipped();
        if skipped.caller_gone > 0 {
            metrics::counter!("infergate_rows_skipped_total", "reason" => "caller_gone")
                .increment(skipped.caller_gone);
        }
        if skipped.deadline > 0 {
            metrics::counter!("infergate_rows_skipped_total", "reason" => "deadline")
                .increment(skipped.deadline);
        }
        queue_rows.set(state.len() as f64);

        if closed && state.is_empty() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Err(e) = done {
                    // The batch's rows were dropped with the task, so their callers already
                    // know; what is left is to say why.
                    tracing::error!(error = %e, "a model call panicked");
                }
            }
            entry = entries.recv(), if !closed => match entry {
                Some(entry) => {
                    state.append(entry);
                    // Take everything already waiting, so the next batch is as full as load makes it.
                    while let Ok(entry) = entries.try_recv() {
                        state.append(entry);
                    }
                }
                None => closed = true,
            },
            () = sleep_until(wake_at), if wake_at.is_some() => {}
            () = abandon.cancelled(), if !abandoned => abandoned = true,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run_batch(
    model: Arc<dyn Model>,
    batch: Vec<Entry>,
    m: Arc<BatchMetrics>,
    abandon: CancellationToken,
) {
    let started = Instant::now();
    for entry in &batch {
        m.queue_duration
            .record(started.duration_since(entry.queued_at).as_secs_f64());
    }
    m.batch_rows.record(batch.len() as f64);
    let rows: Vec<FeatureRow> = batch.iter().map(|e| e.row).collect();
    m.model_calls.increment(1);
    let deadline = batch
        .iter()
        .map(|e| e.deadline)
        .min()
        .expect("a batch is never empty. This is a bug.");
    let result = tokio::select! {
        biased;
        () = abandon.cancelled() => {
            metrics::counter!("infergate_rows_skipped_total", "reason" => "shutting_down")
                .increment(batch.len() as u64);
            for entry in batch {
                let _ = entry.reply.send(Err(ScoreError::ShuttingDown));
            }
            return;
        }
        result = model.predict(&rows, deadline) => result,
    };
    m.model_duration.record(started.elapsed().as_secs_f64());
    let outcome = match result {
        Ok(answer) if answer.scores.len() == rows.len() => Ok(answer),
        Ok(answer) => Err(ModelError::CountMismatch {
            expected: rows.len(),
            got: answer.scores.len(),
        }),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(answer) => {
            m.rows_scored.increment(answer.scores.len() as u64);
            for (entry, score) in batch.into_iter().zip(answer.scores) {
                let timing = super::Timing {
                    queue: started.duration_since(entry.queued_at),
                    model: started.elapsed(),
                };
                let _ = entry.reply.send(Ok(ModelScore {
                    score,
                    model: Arc::clone(&answer.model),
                    timing,
                }));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, rows = batch.len(), "model call failed");
            m.model_errors.increment(1);
            for entry in batch {
                let _ = entry.reply.send(Err(ScoreError::Model(e.clone())));
            }
        }
    }
}
