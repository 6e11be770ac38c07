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
pub mod lease;
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
use checkpoint::{CheckpointError, FileCheckpoints, Store};
use lease::{Leases, NewLease, Table};
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
    /// Another instance took the shard's lease: this one stops reading it (not a failure).
    #[error("the lease of shard {shard_id} is held by another instance now")]
    LeaseLost { shard_id: String },
    #[error("{0}")]
    LeaseTable(String),
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
    checkpoints: Store,
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
    hash_keys: Option<(String, String)>,
    /// The shard has an ending sequence number: it is closed (after a reshard).
    closed: bool,
}

impl Consumer {
    /// The consumer of `config`'s stream; `dynamodb` reaches its lease table, when it has
    /// one (`None`: a client from the standard chain).
    pub async fn new(
        client: Client,
        dynamodb: Option<aws_sdk_dynamodb::Client>,
        config: KinesisConfig,
        scoring: Scoring,
        health: Health,
    ) -> Result<Self, KinesisError> {
        let stream = stream_name(&config.stream).to_owned();
        health.watch_shards(&stream, Duration::from_millis(config.stall_timeout_ms));
        let checkpoints = match &config.checkpoint {
            CheckpointConfig::File { dir } => Store::File(FileCheckpoints::open(dir, &stream)?),
            CheckpointConfig::Dynamodb {
                table,
                create,
                endpoint_url,
            } => {
                let dynamodb = match dynamodb {
                    Some(client) => client,
                    None => {
                        let sdk = crate::aws::sdk_config(
                            config.region.as_deref(),
                            endpoint_url.as_deref(),
                        )
                        .await;
                        aws_sdk_dynamodb::Client::new(&sdk)
                    }
                };
                // A call that hangs must not hold a cycle (or the shutdown's release) for
                // long: fencing keeps it safe, this keeps it moving.
                let timeout = (Duration::from_millis(config.leases.failover_ms) / 3)
                    .clamp(Duration::from_secs(1), Duration::from_secs(5));
                let dynamodb = aws_sdk_dynamodb::Client::from_conf(
                    dynamodb
                        .config()
                        .to_builder()
                        .timeout_config(
                            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                                .operation_timeout(timeout)
                                .build(),
                        )
                        .build(),
                );
                let table = Table::open(dynamodb, table, *create).await?;
                let worker = config
                    .worker_id
                    .clone()
                    .unwrap_or_else(lease::default_worker_id);
                tracing::info!(worker = %worker, "sharing the stream's shards through leases");
                Store::Leases(Arc::new(Leases::new(
                    table,
                    worker,
                    &config.leases,
                    config.initial_position,
                )))
            }
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
    /// synced to disk; with leases, they are then released for the other instances.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let leases = self.checkpoints.leases().cloned();
        // Leases are renewed until the readers have checkpointed their last pages.
        let renewing = CancellationToken::new();
        let cycles = leases.clone().map(|leases| {
            tokio::spawn(lease_cycles(
                leases,
                self.health.clone(),
                stop.clone(),
                renewing.clone(),
            ))
        });
        let mut readers: HashMap<String, JoinHandle<Result<(), KinesisError>>> = HashMap::new();
        let mut ended: HashSet<String> = HashSet::new();
        let discovery = Duration::from_millis(self.config.shard_discovery_ms);
        loop {
            self.reap(&mut readers, &mut ended).await;
            if stop.is_cancelled() {
                break;
            }
            let listing_started = std::time::Instant::now();
            match self.list_shards().await {
                Ok(shards) => {
                    self.health.stream_ok();
                    if let Some(leases) = &leases
                        && let Err(e) = leases
                            .create_missing(&new_leases(&shards), listing_started)
                            .await
                    {
                        tracing::warn!(error = %e, "cannot create the leases of new shards");
                    }
                    for (shard_id, info) in &shards {
                        if readers.contains_key(shard_id) || ended.contains(shard_id) {
                            continue;
                        }
                        if self.checkpoints.get(shard_id).is_some_and(|c| c.ended) {
                            ended.insert(shard_id.clone());
                            continue;
                        }
                        // Children wait for their parents (those still listed) to end, so a
                        // partition key's records stay in order across a split or merge. With
                        // leases, a child's lease is taken only once its parents' have ended.
                        let parents_done = leases.is_some()
                            || info.parents.iter().all(|p| {
                                !shards.contains_key(p)
                                    || ended.contains(p)
                                    || self.checkpoints.get(p).is_some_and(|c| c.ended)
                            });
                        if !parents_done {
                            continue;
                        }
                        let Some(token) = self.checkpoints.reader_token(shard_id, &stop) else {
                            continue;
                        };
                        self.health.shard_started(shard_id);
                        let consumer = Arc::clone(&self);
                        let (id, closed) = (shard_id.clone(), info.closed);
                        // Cancelling its own token when the reader ends ends what watches it.
                        let done = token.clone().drop_guard();
                        readers.insert(
                            shard_id.clone(),
                            tokio::spawn(async move {
                                let _done = done;
                                consumer.read_shard(id, closed, token).await
                            }),
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
            let taken = async {
                match &leases {
                    Some(leases) => leases.taken.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(discovery) => {}
                () = self.shard_ended.notified() => {}
                () = taken => {}
            }
        }
        for (shard_id, handle) in readers {
            if let Ok(Err(e)) = handle.await {
                tracing::warn!(shard = %shard_id, error = %e, "shard reader stopped with an error");
            }
            self.checkpoints.reader_stopped(&shard_id);
        }
        for sink in [&self.sink, &self.dead_letters] {
            if let Err(e) = sink.sync() {
                tracing::error!(error = %e, "cannot sync a sink at shutdown");
            }
        }
        renewing.cancel();
        if let Some(cycles) = cycles {
            let _ = cycles.await;
        }
        // Bounded, so that a lease table that hangs cannot hold the shutdown: leases left
        // unreleased expire after the failover time instead.
        if let Some(leases) = &leases
            && tokio::time::timeout(Duration::from_secs(5), leases.release_all())
                .await
                .is_err()
        {
            tracing::warn!("the leases could not all be released in 5 s; the rest will expire");
        }
        tracing::info!(stream = %self.stream, "consumer stopped");
    }

    /// Collects the readers that stopped: ended shards are done, failed ones start again on
    /// the next discovery, and a shard whose lease went elsewhere is no longer this one's.
    async fn reap(
        &self,
        readers: &mut HashMap<String, JoinHandle<Result<(), KinesisError>>>,
        ended: &mut HashSet<String>,
    ) {
        let finished: Vec<String> = readers
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for shard_id in finished {
            let handle = readers.remove(&shard_id).expect("listed above");
            let outcome = handle.await;
            self.checkpoints.reader_stopped(&shard_id);
            match outcome {
                Ok(Ok(()) | Err(KinesisError::LeaseLost { .. })) => {
                    if self.checkpoints.get(&shard_id).is_some_and(|c| c.ended) {
                        ended.insert(shard_id);
                    } else {
                        // Stopped, or its lease is another instance's now.
                        self.health.shard_done(&shard_id);
                    }
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

/// Renews, reads and takes leases every `failover_ms / 3` (and at once when new leases were
/// created), reporting each cycle's outcome to readiness, until `renewing` is cancelled; from
/// `stop` on, it only renews.
async fn lease_cycles(
    leases: Arc<Leases>,
    health: Health,
    stop: CancellationToken,
    renewing: CancellationToken,
) {
    loop {
        let result = leases.cycle(&stop).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "lease cycle failed");
        }
        health.leases(result.map_err(|e| e.to_string()));
        health.leases_held(leases.worker(), leases.held_shards());
        tokio::select! {
            () = renewing.cancelled() => return,
            () = tokio::time::sleep(leases.cycle_every()) => {}
            () = leases.wake.notified() => {}
        }
    }
}

/// The listed shards as new leases, parents first (a child's id is always greater than its
/// parents'), so that no instance sees a child's lease without its parents'.
fn new_leases(shards: &HashMap<String, ShardInfo>) -> Vec<(String, NewLease)> {
    let mut leases: Vec<(String, NewLease)> = shards
        .iter()
        .map(|(id, info)| {
            let (starting, ending) = info.hash_keys.clone().unzip();
            let new = NewLease {
                parents: info.parents.clone(),
                starting_hash_key: starting,
                ending_hash_key: ending,
            };
            (id.clone(), new)
        })
        .collect();
    leases.sort_by(|a, b| a.0.cmp(&b.0));
    leases
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
    let hash_keys = shard.hash_key_range().map(|r| {
        (
            r.starting_hash_key().to_owned(),
            r.ending_hash_key().to_owned(),
        )
    });
    ShardInfo {
        parents,
        hash_keys,
        closed,
    }
}

pub(crate) fn aws_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
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
