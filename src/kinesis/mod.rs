//! The built-in Kinesis consumer: the stream entry point into the same pipeline (cache, global
//! limit, batcher, model) as REST.
//!
//! A discovery loop lists the shards (again every `shard_discovery_ms`, and whenever a shard
//! ends) and runs one reader per shard, a child only once its parents have ended. A reader polls
//! `GetRecords`, de-aggregates KPL records, scores the transactions (waiting for pipeline room,
//! never shedding, and through a model outage scoring failed rows again), writes results and
//! dead letters in shard order, and only then checkpoints: at-least-once, no gap. A reader that
//! fails is started again from its checkpoint.

pub mod checkpoint;
pub mod kpl;
pub mod page;
pub mod retry;
mod shard;
pub mod sink;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::Shard;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{CheckpointConfig, KinesisConfig, SinkConfig};
use crate::health::Health;
use crate::scoring::Scoring;
use checkpoint::{CheckpointError, CheckpointStore, FileCheckpoints};
use sink::{JsonlSink, KinesisSink, Sink, SinkError};

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
    #[error(
        "the stream rejects the checkpoint of shard {shard_id} (sequence number \
         {sequence_number}): {message}. Was the stream deleted and recreated, or is the \
         checkpoint another stream's? To read the shard again from `initial_position`, set \
         `kinesis.reset_invalid_checkpoints = true`"
    )]
    RejectedCheckpoint {
        shard_id: String,
        sequence_number: String,
        message: String,
    },
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
    scoring: Scoring,
    health: Health,
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
        scoring: Scoring,
        health: Health,
    ) -> Result<Self, KinesisError> {
        let stream = stream_name(&config.stream).to_owned();
        health.watch_shards(&stream, Duration::from_millis(config.stall_timeout_ms));
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
            scoring,
            health,
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
                        self.health.shard_failed(&shard_id, e.to_string());
                    }
                    Err(e) => {
                        tracing::error!(shard = %shard_id, error = %e, "shard reader panicked; restarting it");
                        metrics::counter!("infergate_kinesis_reader_restarts_total").increment(1);
                        self.health
                            .shard_failed(&shard_id, format!("the reader panicked: {e}"));
                    }
                }
            }
            if stop.is_cancelled() {
                break;
            }
            match self.list_shards().await {
                Ok(shards) => {
                    self.health.stream_ok();
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
                        self.health.shard_started(shard_id);
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
                    self.health.stream_failed(e.to_string());
                    tracing::warn!(error = %e, "cannot list the stream's shards");
                }
            }
            self.health.record_stalled_shards();
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
    KinesisError::Aws {
        operation,
        message: aws_message(e),
    }
}

/// The error code and message of a service error, or the start of any other error.
fn aws_message<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or("")
        ),
        other => crate::domain::clip(&format!("{other:?}"), 300).to_owned(),
    }
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
