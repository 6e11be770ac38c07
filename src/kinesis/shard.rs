//! One shard's reader: get an iterator after the checkpoint, poll `GetRecords`, process each
//! page (decode, score, write, checkpoint), and mark the shard ended when it is.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use super::page::Page;
use super::retry;
use super::{Consumer, KinesisError, aws_error, aws_message};
use crate::config::InitialPosition;
use crate::pipeline::ScoreError;

impl Consumer {
    /// An iterator after the checkpoint, or at the initial position. A checkpoint the stream
    /// rejects stops the reader (the shard stalls, naming the way out), unless
    /// `reset_invalid_checkpoints` is set: then it is dropped, loudly, and the shard starts
    /// again from the initial position.
    async fn iterator(&self, shard_id: &str) -> Result<Option<String>, KinesisError> {
        // A checkpoint always covers a whole record (results are written per GetRecords page),
        // so resuming after it skips nothing undone, aggregated or not.
        if let Some(sequence) = self
            .checkpoints
            .get(shard_id)
            .and_then(|c| c.sequence_number)
        {
            let after = self
                .client
                .get_shard_iterator()
                .stream_name(&self.stream)
                .shard_id(shard_id)
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(&sequence)
                .send()
                .await;
            match after {
                Ok(out) => return Ok(out.shard_iterator().map(str::to_owned)),
                Err(e) if e.code() == Some("InvalidArgumentException") => {
                    self.rejected_checkpoint(shard_id, sequence, aws_message(&e))
                        .await?;
                }
                Err(e) => return Err(aws_error("GetShardIterator", &e)),
            }
        }
        let call = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard_id);
        let call = match self.config.initial_position {
            InitialPosition::TrimHorizon => {
                call.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            InitialPosition::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
            InitialPosition::AtTimestamp => {
                let at = self
                    .config
                    .initial_timestamp
                    .as_deref()
                    .and_then(|t| {
                        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .map_or(0.0, |t| t.unix_timestamp_nanos() as f64 / 1e9);
                call.shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs_f64(at))
            }
        };
        let out = call
            .send()
            .await
            .map_err(|e| aws_error("GetShardIterator", &e))?;
        Ok(out.shard_iterator().map(str::to_owned))
    }

    /// The stream answered `InvalidArgumentException` for the checkpoint of `shard_id`: an
    /// error that names the way out, or, with `reset_invalid_checkpoints`, the checkpoint
    /// dropped (saved without a sequence number, so the shard reads from the initial position
    /// until its next page is checkpointed).
    async fn rejected_checkpoint(
        &self,
        shard_id: &str,
        sequence_number: String,
        message: String,
    ) -> Result<(), KinesisError> {
        let error = KinesisError::RejectedCheckpoint {
            shard_id: shard_id.to_owned(),
            sequence_number,
            message,
        };
        if !self.config.reset_invalid_checkpoints {
            tracing::error!(shard = %shard_id, error = %error, "the shard is not read");
            return Err(error);
        }
        tracing::warn!(
            shard = %shard_id, error = %error,
            initial_position = ?self.config.initial_position,
            "`kinesis.reset_invalid_checkpoints` is set: the rejected checkpoint is dropped and \
             the shard is read again from `initial_position`"
        );
        metrics::counter!("infergate_kinesis_checkpoint_resets_total", "shard" => shard_id.to_owned())
            .increment(1);
        self.checkpoints
            .save(
                shard_id,
                Checkpoint {
                    sequence_number: None,
                    sub_sequence_number: None,
                    ended: false,
                },
            )
            .await
    }

    /// Reads one shard until it ends (`Ok`), `stop` (`Ok`), or an error the discovery loop
    /// answers by starting the reader again.
    pub(super) async fn read_shard(
        self: Arc<Self>,
        shard_id: String,
        closed: bool,
        stop: CancellationToken,
    ) -> Result<(), KinesisError> {
        let labels = [("shard", shard_id.clone())];
        let mut iterator = self.iterator(&shard_id).await?;
        let mut throttled = 0u32;
        loop {
            let Some(current) = iterator.clone() else {
                return self.end_shard(&shard_id).await;
            };
            let call = self
                .client
                .get_records()
                .shard_iterator(current)
                .limit(self.config.max_records)
                .send();
            let out = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                out = call => out,
            };
            let out = match out {
                Ok(out) => {
                    throttled = 0;
                    out
                }
                Err(e) => {
                    let code = e.code().unwrap_or("");
                    if code == "ExpiredIteratorException" {
                        metrics::counter!("infergate_kinesis_expired_iterators_total", &labels)
                            .increment(1);
                        iterator = self.iterator(&shard_id).await?;
                        continue;
                    }
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    if crate::aws::is_throttling(e.code(), status) {
                        throttled += 1;
                        metrics::counter!("infergate_kinesis_throttled_total", &labels)
                            .increment(1);
                        let wait = Duration::from_millis((100u64 << throttled.min(6)).min(5_000));
                        tokio::select! {
                            () = stop.cancelled() => return Ok(()),
                            () = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                    let error = aws_error("GetRecords", &e);
                    self.health.stream_failed(error.to_string());
                    return Err(error);
                }
            };
            self.health.shard_read(&shard_id);
            if let Some(behind) = out.millis_behind_latest() {
                metrics::gauge!("infergate_kinesis_millis_behind_latest", &labels)
                    .set(behind as f64);
            }
            let records = out.records();
            if !records.is_empty() {
                // Not raced against `stop`: a page in hand is finished and checkpointed, unless
                // its scoring waits out a model outage when `stop` comes.
                if !self.process(&shard_id, records, &stop).await? {
                    return Ok(());
                }
            }
            iterator = out.next_shard_iterator().map(str::to_owned);
            // Some emulators never close a finished shard's iterator: a closed shard that has
            // nothing more and nothing behind is at its end.
            if closed && records.is_empty() && out.millis_behind_latest() == Some(0) {
                return self.end_shard(&shard_id).await;
            }
            if records.is_empty() && iterator.is_some() {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)) => {}
                }
            }
        }
    }

    async fn end_shard(&self, shard_id: &str) -> Result<(), KinesisError> {
        let previous = self.checkpoints.get(shard_id);
        self.checkpoints
            .save(
                shard_id,
                Checkpoint {
                    sequence_number: previous.as_ref().and_then(|c| c.sequence_number.clone()),
                    sub_sequence_number: previous.and_then(|c| c.sub_sequence_number),
                    ended: true,
                },
            )
            .await?;
        tracing::info!(shard = %shard_id, "shard ended");
        self.health.shard_done(shard_id);
        self.shard_ended.notify_one();
        Ok(())
    }

    /// Scores one page of records (through a model outage: see [`super::retry`]), writes
    /// every result or dead letter in order, then checkpoints the page. `false` when `stop`
    /// came first: nothing of the page is written or checkpointed.
    async fn process(
        &self,
        shard_id: &str,
        records: &[Record],
        stop: &CancellationToken,
    ) -> Result<bool, KinesisError> {
        let labels = [("shard", shard_id.to_owned())];
        let page = Page::decode(records, OffsetDateTime::now_utc());
        for reason in &page.corrupt_aggregates {
            metrics::counter!("infergate_kinesis_kpl_plain_total", "reason" => reason.code())
                .increment(1);
        }
        metrics::counter!("infergate_kinesis_records_total", &labels)
            .increment(records.len() as u64);
        metrics::counter!("infergate_kinesis_bytes_total", &labels).increment(page.bytes as u64);

        let failed = |rows: usize, error: &ScoreError| {
            tracing::warn!(
                shard = %shard_id, rows, error = %error,
                "cannot score rows of the page; holding the shard and scoring them again"
            );
            metrics::counter!("infergate_kinesis_scoring_retries_total", &labels).increment(1);
            self.health
                .shard_scoring_failed(shard_id, format!("{}: {error}", error.code()));
        };
        let scored = retry::score_all(
            &self.scoring,
            page.items(),
            retry::Backoff::default(),
            stop,
            failed,
        )
        .await;
        self.health.shard_scored(shard_id);
        let Ok(mut scores) = scored else {
            return Ok(false);
        };
        // Flagged scores carry their reasons with `explanations.mode = "decline_and_review"`
        // (never asked here, so a model that cannot explain just leaves them out).
        if self.scoring.explains_flagged() {
            let owed = scores
                .iter_mut()
                .zip(page.items())
                .map(|(score, (_, features))| (score, features))
                .collect();
            let _ = self.scoring.add_explanations(false, owed).await;
        }
        // Fencing: once the lease may be another instance's, nothing more is written.
        if !self.checkpoints.may_write(shard_id) {
            return Err(KinesisError::LeaseLost {
                shard_id: shard_id.to_owned(),
            });
        }
        let lines = page.lines(shard_id, scores);
        self.sink.write(&lines.scored).await?;
        self.dead_letters.write(&lines.dead_letters).await?;
        metrics::counter!("infergate_kinesis_dead_letters_total", &labels)
            .increment(lines.dead_letters.len() as u64);
        if let Some(checkpoint) = page.checkpoint() {
            self.checkpoints.save(shard_id, checkpoint).await?;
        }
        self.health.shard_read(shard_id);
        metrics::counter!("infergate_kinesis_batches_total", &labels).increment(1);
        Ok(true)
    }
}
