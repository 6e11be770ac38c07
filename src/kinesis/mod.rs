//! The built-in Kinesis consumer: the stream entry point into the same pipeline (cache, global
//! limit, batcher, model) as REST.
//!
//! A discovery loop lists the shards (again every `shard_discovery_ms`, and whenever a shard
//! ends) and runs one reader per shard, a child only once its parents have ended. A reader polls
//! `GetRecords`, de-aggregates KPL records, scores the transactions (waiting for pipeline room,
//! never shedding), writes results and dead letters in shard order, and only then checkpoints:
//! at-least-once, no gap. A reader that fails is started again from its checkpoint.

pub mod checkpoint;
pub mod kpl;
pub mod sink;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::{Record, Shard, ShardIteratorType};
use base64::Engine;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{CheckpointConfig, InitialPosition, KinesisConfig, SinkConfig};
use crate::domain::ValidTransaction;
use crate::pipeline::Admit;
use crate::state::AppState;
use checkpoint::{Checkpoint, CheckpointError, CheckpointStore, FileCheckpoints};
use sink::{JsonlSink, KinesisSink, Line, Sink, SinkError};

/// Rows scored per pipeline call: well under the queue's bound, so a large `GetRecords` page
/// never asks for more room than the queue has.
const SCORE_CHUNK: usize = 1000;

/// Why the consumer could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum KinesisError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("Kinesis {operation}: {message}")]
    Aws {
        operation: &'static str,
        message: String,
    },
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// The SDK client for the stream (see [`crate::aws`]). Throughput errors are retried by the
/// reader loop itself.
pub async fn client(config: &KinesisConfig) -> Client {
    let sdk =
        crate::aws::sdk_config(config.region.as_deref(), config.endpoint_url.as_deref()).await;
    Client::new(&sdk)
}

/// The stream's name from a name or an ARN (`arn:aws:kinesis:region:account:stream/NAME`):
/// some emulators accept only the name.
pub fn stream_name(stream: &str) -> &str {
    stream
        .rsplit_once(":stream/")
        .map_or(stream, |(_, name)| name)
}

pub struct Consumer {
    client: Client,
    config: KinesisConfig,
    stream: String,
    state: AppState,
    checkpoints: Arc<dyn CheckpointStore>,
    sink: Sink,
    dead_letters: Sink,
    /// Wakes discovery early when a shard ends, so its children start without waiting.
    shard_ended: tokio::sync::Notify,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.stream)
            .finish()
    }
}

struct ShardInfo {
    parents: Vec<String>,
    /// The shard has an ending sequence number: it is closed (after a reshard).
    closed: bool,
}

impl Consumer {
    pub fn new(
        client: Client,
        config: KinesisConfig,
        state: AppState,
    ) -> Result<Self, KinesisError> {
        let stream = stream_name(&config.stream).to_owned();
        let checkpoints: Arc<dyn CheckpointStore> = match &config.checkpoint {
            CheckpointConfig::File { dir } => Arc::new(FileCheckpoints::open(dir, &stream)?),
        };
        let open = |sink: &SinkConfig| -> Result<Sink, SinkError> {
            Ok(match sink {
                SinkConfig::File { path } => Sink::File(JsonlSink::open(path)?),
                SinkConfig::Kinesis { stream } => Sink::Kinesis(KinesisSink::new(
                    client.clone(),
                    stream_name(stream).to_owned(),
                )),
            })
        };
        Ok(Self {
            sink: open(&config.sink)?,
            dead_letters: open(&config.dead_letter)?,
            client,
            config,
            stream,
            state,
            checkpoints,
            shard_ended: tokio::sync::Notify::new(),
        })
    }

    /// Runs until `stop`: readers finish the batch in hand, checkpoint it, and the sinks are
    /// synced to disk.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut readers: HashMap<String, JoinHandle<Result<(), KinesisError>>> = HashMap::new();
        let mut ended: HashSet<String> = HashSet::new();
        let discovery = Duration::from_millis(self.config.shard_discovery_ms);
        loop {
            // Readers that stopped: ended shards are done, failed ones start again below.
            let finished: Vec<String> = readers
                .iter()
                .filter(|(_, h)| h.is_finished())
                .map(|(id, _)| id.clone())
                .collect();
            for shard_id in finished {
                let handle = readers.remove(&shard_id).expect("listed above");
                match handle.await {
                    Ok(Ok(())) if stop.is_cancelled() => {}
                    Ok(Ok(())) => {
                        ended.insert(shard_id);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(shard = %shard_id, error = %e, "shard reader failed; restarting it");
                        metrics::counter!("infergate_kinesis_reader_restarts_total").increment(1);
                    }
                    Err(e) => {
                        tracing::error!(shard = %shard_id, error = %e, "shard reader panicked; restarting it");
                        metrics::counter!("infergate_kinesis_reader_restarts_total").increment(1);
                    }
                }
            }
            if stop.is_cancelled() {
                break;
            }
            match self.list_shards().await {
                Ok(shards) => {
                    self.state.consumer_ok.store(true, Ordering::Relaxed);
                    for (shard_id, info) in &shards {
                        if readers.contains_key(shard_id) || ended.contains(shard_id) {
                            continue;
                        }
                        if self.checkpoints.get(shard_id).is_some_and(|c| c.ended) {
                            ended.insert(shard_id.clone());
                            continue;
                        }
                        // Children wait for their parents (those still listed) to end, so a
                        // partition key's records stay in order across a split or merge.
                        let parents_done = info.parents.iter().all(|p| {
                            !shards.contains_key(p)
                                || ended.contains(p)
                                || self.checkpoints.get(p).is_some_and(|c| c.ended)
                        });
                        if !parents_done {
                            continue;
                        }
                        let consumer = Arc::clone(&self);
                        let (id, closed, stop) = (shard_id.clone(), info.closed, stop.clone());
                        readers.insert(
                            shard_id.clone(),
                            tokio::spawn(
                                async move { consumer.read_shard(id, closed, stop).await },
                            ),
                        );
                    }
                    metrics::gauge!("infergate_kinesis_shards_reading").set(readers.len() as f64);
                }
                Err(e) => {
                    self.state.consumer_ok.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot list the stream's shards");
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(discovery) => {}
                () = self.shard_ended.notified() => {}
            }
        }
        for (shard_id, handle) in readers {
            if let Ok(Err(e)) = handle.await {
                tracing::warn!(shard = %shard_id, error = %e, "shard reader stopped with an error");
            }
        }
        for sink in [&self.sink, &self.dead_letters] {
            if let Err(e) = sink.sync() {
                tracing::error!(error = %e, "cannot sync a sink at shutdown");
            }
        }
        tracing::info!(stream = %self.stream, "consumer stopped");
    }

    async fn list_shards(&self) -> Result<HashMap<String, ShardInfo>, KinesisError> {
        let mut shards = HashMap::new();
        let mut next: Option<String> = None;
        loop {
            let mut call = self.client.list_shards();
            call = match &next {
                // With a token, the stream name must not be sent again.
                Some(token) => call.next_token(token),
                None => call.stream_name(&self.stream),
            };
            let out = call.send().await.map_err(|e| aws_error("ListShards", &e))?;
            for shard in out.shards() {
                shards.insert(shard.shard_id().to_owned(), shard_info(shard));
            }
            match out.next_token() {
                Some(token) => next = Some(token.to_owned()),
                None => return Ok(shards),
            }
        }
    }

    /// An iterator after the checkpoint, or at the initial position.
    async fn iterator(&self, shard_id: &str) -> Result<Option<String>, KinesisError> {
        let mut call = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard_id);
        // A checkpoint always covers a whole record (results are written per GetRecords page),
        // so resuming after it skips nothing undone, aggregated or not.
        match self
            .checkpoints
            .get(shard_id)
            .and_then(|c| c.sequence_number)
        {
            Some(sequence) => {
                call = call
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(sequence);
            }
            None => {
                call = match self.config.initial_position {
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
                                OffsetDateTime::parse(
                                    t,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .ok()
                            })
                            .map_or(0.0, |t| t.unix_timestamp_nanos() as f64 / 1e9);
                        call.shard_iterator_type(ShardIteratorType::AtTimestamp)
                            .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs_f64(at))
                    }
                };
            }
        }
        let out = call
            .send()
            .await
            .map_err(|e| aws_error("GetShardIterator", &e))?;
        Ok(out.shard_iterator().map(str::to_owned))
    }

    /// Reads one shard until it ends (`Ok`), `stop` (`Ok`), or an error the discovery loop
    /// answers by starting the reader again.
    async fn read_shard(
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
                return self.end_shard(&shard_id);
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
                    if code == "ProvisionedThroughputExceededException"
                        || code == "LimitExceededException"
                    {
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
                    self.state.consumer_ok.store(false, Ordering::Relaxed);
                    return Err(aws_error("GetRecords", &e));
                }
            };
            self.state.consumer_ok.store(true, Ordering::Relaxed);
            if let Some(behind) = out.millis_behind_latest() {
                metrics::gauge!("infergate_kinesis_millis_behind_latest", &labels)
                    .set(behind as f64);
            }
            let records = out.records();
            if !records.is_empty() {
                // Not raced against `stop`: a page in hand is finished and checkpointed.
                self.process(&shard_id, records).await?;
            }
            iterator = out.next_shard_iterator().map(str::to_owned);
            // Some emulators never close a finished shard's iterator: a closed shard that has
            // nothing more and nothing behind is at its end.
            if closed && records.is_empty() && out.millis_behind_latest() == Some(0) {
                return self.end_shard(&shard_id);
            }
            if records.is_empty() && iterator.is_some() {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)) => {}
                }
            }
        }
    }

    fn end_shard(&self, shard_id: &str) -> Result<(), KinesisError> {
        let previous = self.checkpoints.get(shard_id);
        self.checkpoints.save(
            shard_id,
            Checkpoint {
                sequence_number: previous.as_ref().and_then(|c| c.sequence_number.clone()),
                sub_sequence_number: previous.and_then(|c| c.sub_sequence_number),
                ended: true,
            },
        )?;
        tracing::info!(shard = %shard_id, "shard ended");
        self.shard_ended.notify_one();
        Ok(())
    }

    /// Scores one page of records, writes every result or dead letter in order, then
    /// checkpoints the page.
    async fn process(&self, shard_id: &str, records: &[Record]) -> Result<(), KinesisError> {
        let labels = [("shard", shard_id.to_owned())];
        let received_at = OffsetDateTime::now_utc();
        // Every user record, in order, with what became of it.
        let mut entries: Vec<(Position, Result<ValidTransaction, DeadLetter>)> = Vec::new();
        let mut bytes = 0usize;
        for record in records {
            let data = record.data().as_ref();
            bytes += data.len();
            let (users, plain) = kpl::deaggregate(data, record.partition_key().unwrap_or(""));
            if let Some(reason) = plain.filter(kpl::Plain::is_corrupt) {
                metrics::counter!("infergate_kinesis_kpl_plain_total", "reason" => reason.code())
                    .increment(1);
            }
            for user in users {
                let position = Position {
                    sequence_number: record.sequence_number().to_owned(),
                    sub_sequence_number: user.sub_sequence_number,
                    partition_key: user.partition_key.clone(),
                };
                let outcome = match serde_json::from_slice::<Value>(&user.data) {
                    Err(e) => Err(("invalid_json".to_owned(), e.to_string(), user.data)),
                    Ok(value) => {
                        ValidTransaction::from_json(&value, received_at).map_err(|errors| {
                            let message = errors
                                .iter()
                                .map(|e| e.message.as_str())
                                .collect::<Vec<_>>()
                                .join("; ");
                            ("invalid_transaction".to_owned(), message, user.data)
                        })
                    }
                };
                entries.push((position, outcome));
            }
        }
        metrics::counter!("infergate_kinesis_records_total", &labels)
            .increment(records.len() as u64);
        metrics::counter!("infergate_kinesis_bytes_total", &labels).increment(bytes as u64);

        let valid: Vec<(String, crate::domain::FeatureRow)> = entries
            .iter()
            .filter_map(|(_, o)| o.as_ref().ok())
            .map(|tx| (tx.transaction_id.clone(), tx.features))
            .collect();
        let mut scores = Vec::with_capacity(valid.len());
        let chunk_rows = SCORE_CHUNK.min(self.state.pipeline.max_queue_rows()).max(1);
        for chunk in valid.chunks(chunk_rows) {
            self.state.rate_limits.wait_global(chunk.len() as u32).await;
            let outcomes = self
                .state
                .score_many(chunk, false, Admit::Wait)
                .await
                .map_err(|_| KinesisError::ShuttingDown)?;
            scores.extend(outcomes);
        }

        let mut scored_lines: Vec<Line> = Vec::with_capacity(valid.len());
        let mut dead_lines: Vec<Line> = Vec::new();
        let mut outcomes = scores.into_iter();
        for (position, entry) in entries.iter() {
            let dead = match entry {
                Ok(tx) => match outcomes
                    .next()
                    .expect("one outcome per valid record. This is a bug.")
                {
                    Ok((scored, source)) => {
                        let score = self.state.score(tx.transaction_id.clone(), scored, source);
                        let mut line =
                            serde_json::to_value(&score).expect("scores serialize. This is a bug.");
                        position.annotate(shard_id, &mut line);
                        scored_lines.push((tx.card_id.clone(), line.to_string()));
                        None
                    }
                    Err(e) => Some((e.code().to_owned(), e.to_string(), Vec::new())),
                },
                Err((code, message, data)) => Some((code.clone(), message.clone(), data.clone())),
            };
            if let Some((code, message, data)) = dead {
                let mut line = json!({
                    "error": {"code": code, "message": message},
                    "data_base64": base64::engine::general_purpose::STANDARD.encode(&data),
                });
                position.annotate(shard_id, &mut line);
                dead_lines.push((position.partition_key.clone(), line.to_string()));
            }
        }
        self.sink.write(&scored_lines).await?;
        self.dead_letters.write(&dead_lines).await?;
        metrics::counter!("infergate_kinesis_dead_letters_total", &labels)
            .increment(dead_lines.len() as u64);
        // The page's last record, even one that held no user record, is where the shard resumes.
        if let Some(last) = records.last() {
            let sequence_number = last.sequence_number().to_owned();
            let sub_sequence_number = entries
                .last()
                .filter(|(p, _)| p.sequence_number == sequence_number)
                .and_then(|(p, _)| p.sub_sequence_number);
            self.checkpoints.save(
                shard_id,
                Checkpoint {
                    sequence_number: Some(sequence_number),
                    sub_sequence_number,
                    ended: false,
                },
            )?;
        }
        metrics::counter!("infergate_kinesis_batches_total", &labels).increment(1);
        Ok(())
    }
}

/// Why a record was not scored: a stable code, a message, and its raw bytes.
type DeadLetter = (String, String, Vec<u8>);

/// Where a user record sits in the stream.
struct Position {
    sequence_number: String,
    sub_sequence_number: Option<u64>,
    /// The user record's partition key: the key its dead letter is put with.
    partition_key: String,
}

impl Position {
    fn annotate(&self, shard_id: &str, line: &mut Value) {
        if let Some(obj) = line.as_object_mut() {
            obj.insert("shard_id".into(), json!(shard_id));
            obj.insert("sequence_number".into(), json!(self.sequence_number));
            obj.insert(
                "sub_sequence_number".into(),
                json!(self.sub_sequence_number),
            );
        }
    }
}

fn shard_info(shard: &Shard) -> ShardInfo {
    let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
        .into_iter()
        .flatten()
        .map(str::to_owned)
        .collect();
    let closed = shard
        .sequence_number_range()
        .and_then(|r| r.ending_sequence_number())
        .is_some();
    ShardInfo { parents, closed }
}

fn aws_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    operation: &'static str,
    e: &SdkError<E, R>,
) -> KinesisError {
    let message = match e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or("")
        ),
        other => crate::domain::clip(&format!("{other:?}"), 300).to_owned(),
    };
    KinesisError::Aws { operation, message }
}

#[cfg(test)]
mod tests {
    use super::stream_name;

    #[test]
    fn stream_names_from_arns() {
        assert_eq!(stream_name("transactions"), "transactions");
        assert_eq!(
            stream_name("arn:aws:kinesis:us-east-1:123456789012:stream/transactions"),
            "transactions"
        );
    }
}
