//! The stream consumer's section: `[kinesis]`, its checkpoint store and its sinks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The built-in Kinesis consumer. Credentials and, unless set here, the region come from the
/// standard AWS chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisConfig {
    /// Stream name or ARN.
    pub stream: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Where a shard without a checkpoint starts.
    #[serde(default)]
    pub initial_position: InitialPosition,
    /// RFC 3339, for `AT_TIMESTAMP`.
    #[serde(default)]
    pub initial_timestamp: Option<String>,
    /// Wait between `GetRecords` calls that returned nothing (the KCL waits 1.5 s).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Records per `GetRecords` (at most 10,000).
    #[serde(default = "default_max_records")]
    pub max_records: i32,
    /// How often the shard list is read again (new shards after a reshard).
    #[serde(default = "default_discovery_ms")]
    pub shard_discovery_ms: u64,
    /// A shard whose reader has had no answer from `GetRecords` (and checkpointed no page) for
    /// this long makes the gateway unready, naming the shard and its last error.
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// A checkpoint the stream rejects (`InvalidArgumentException` for its sequence number: the
    /// stream was deleted and recreated, or the checkpoint is another stream's) is dropped, with
    /// a warning, and the shard read again from `initial_position`. Off: the shard is not read,
    /// and stalls (see `stall_timeout_ms`) until the operator decides.
    #[serde(default)]
    pub reset_invalid_checkpoints: bool,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Used with a DynamoDB checkpoint table.
    #[serde(default)]
    pub leases: LeasesConfig,
    /// This instance's name in the lease table's `leaseOwner` (and in logs); default: host
    /// name, process id and a random suffix. An instance restarted with the same id resumes
    /// its leases at once instead of waiting for them to expire.
    #[serde(default)]
    pub worker_id: Option<String>,
    #[serde(default = "default_sink")]
    pub sink: SinkConfig,
    #[serde(default = "default_dead_letter")]
    pub dead_letter: SinkConfig,
}

fn default_poll_interval_ms() -> u64 {
    1_000
}

fn default_max_records() -> i32 {
    10_000
}

fn default_discovery_ms() -> u64 {
    10_000
}

fn default_stall_timeout_ms() -> u64 {
    30_000
}

fn default_sink() -> SinkConfig {
    SinkConfig::File {
        path: PathBuf::from("data/scored.jsonl"),
    }
}

fn default_dead_letter() -> SinkConfig {
    SinkConfig::File {
        path: PathBuf::from("data/dead-letter.jsonl"),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InitialPosition {
    #[default]
    TrimHorizon,
    Latest,
    AtTimestamp,
}

/// Where shard checkpoints live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CheckpointConfig {
    /// A JSON file per stream in `dir`, replaced atomically on every checkpoint: one instance.
    File { dir: PathBuf },
    /// A DynamoDB lease table with KCL's attribute names: several instances share the stream's
    /// shards (see `[kinesis.leases]`).
    Dynamodb {
        table: String,
        /// Create the table (on-demand capacity) when it does not exist; otherwise a missing
        /// table stops the start with a clear message.
        #[serde(default)]
        create: bool,
        /// Override of DynamoDB's address (emulators); `AWS_ENDPOINT_URL_DYNAMODB` works too.
        #[serde(default)]
        endpoint_url: Option<String>,
    },
}

/// How instances sharing a DynamoDB lease table divide the shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeasesConfig {
    /// A lease whose counter has not moved for this long (on the observer's own clock) is
    /// expired and may be taken; holders renew every third of it.
    pub failover_ms: u64,
    /// Most leases one instance holds; 0 = no limit.
    pub max_leases_per_worker: usize,
}

impl Default for LeasesConfig {
    fn default() -> Self {
        Self {
            failover_ms: 10_000,
            max_leases_per_worker: 0,
        }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self::File {
            dir: PathBuf::from("data/checkpoints"),
        }
    }
}

/// Where scored records (or dead letters) go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// One JSON object per line, appended.
    File { path: PathBuf },
    /// Records put to a Kinesis stream (name or ARN) on the consumer's endpoint, partition key
    /// = the card (scores) or the input record's key (dead letters).
    Kinesis { stream: String },
}
