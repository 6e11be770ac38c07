//! The stream side of the consumer tests: a stream on kinesalite, its records, and the
//! results and dead-letter files a gateway writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use infergate::config::{
    CheckpointConfig, InitialPosition, KinesisConfig, LeasesConfig, SinkConfig,
};
use infergate::gateway::Clients;
use infergate::{Config, Gateway};
use serde_json::{Value, json};

use super::peers::Kinesalite;
use super::{TestApp, serve, transaction};

pub struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    pub fn new(name: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("infergate-kinesis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Self { root }
    }
    pub fn scored(&self) -> PathBuf {
        self.root.join("scored.jsonl")
    }
    pub fn dead(&self) -> PathBuf {
        self.root.join("dead.jsonl")
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn config(stream: &str, kinesalite: &Kinesalite, dirs: &Dirs, max_records: i32) -> Config {
    Config {
        kinesis: Some(KinesisConfig {
            stream: format!("arn:aws:kinesis:us-east-1:000000000000:stream/{stream}"),
            region: Some("us-east-1".into()),
            endpoint_url: Some(kinesalite.url.clone()),
            initial_position: InitialPosition::TrimHorizon,
            initial_timestamp: None,
            poll_interval_ms: 50,
            max_records,
            shard_discovery_ms: 500,
            stall_timeout_ms: 30_000,
            reset_invalid_checkpoints: false,
            checkpoint: CheckpointConfig::File {
                dir: dirs.root.join("checkpoints"),
            },
            sink: SinkConfig::File {
                path: dirs.scored(),
            },
            dead_letter: SinkConfig::File { path: dirs.dead() },
            leases: LeasesConfig::default(),
            worker_id: None,
        }),
        ..Config::default()
    }
}

pub async fn start(config: &Config, kinesalite: &Kinesalite) -> TestApp {
    let clients = Clients {
        kinesis: Some(kinesalite.client()),
        ..Clients::default()
    };
    let gateway = Gateway::build_with(config, clients)
        .await
        .expect("the gateway builds");
    serve(gateway).await
}

pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("the stream is created");
    wait_active(client, name).await;
}

/// Puts `(partition key, data)` records, 500 per call, retrying failed entries.
pub async fn put(client: &aws_sdk_kinesis::Client, stream: &str, records: &[(String, Vec<u8>)]) {
    for chunk in records.chunks(500) {
        let mut pending: Vec<&(String, Vec<u8>)> = chunk.iter().collect();
        while !pending.is_empty() {
            let entries = pending
                .iter()
                .map(|(key, data)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(data.clone()))
                        .build()
                        .unwrap()
                })
                .collect::<Vec<_>>();
            let out = client
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
                .expect("put_records");
            pending = pending
                .into_iter()
                .zip(out.records())
                .filter(|(_, r)| r.error_code().is_some())
                .map(|(p, _)| p)
                .collect();
        }
    }
}

/// The whole lines of a results file, each parsed. A last line without its newline is being
/// written (or was torn by a kill, to be cut at the sink's next start): it is not read yet.
pub fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| serde_json::from_str(l).expect("every whole line is JSON"))
        .collect()
}

pub async fn wait_for_lines(path: &Path, n: usize, within: Duration) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let got = lines(path);
        if got.len() >= n || started.elapsed() > within {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sequence numbers are decimal strings up to 128 bits: compare them as numbers.
pub fn seq_key(v: &Value) -> (usize, String) {
    let s = v["sequence_number"].as_str().unwrap().to_owned();
    (s.len(), s)
}

pub fn transactions(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let card = format!("card-{}", i % 97);
            let tx = transaction(
                &format!("{prefix}-{i}"),
                json!({"card_id": card, "amount": (i % 500) as f64 + 0.5}),
            );
            (card, tx.to_string().into_bytes())
        })
        .collect()
}

pub async fn wait_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    for _ in 0..200 {
        let d = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary()
            .map(|s| s.stream_status().as_str())
            == Some("ACTIVE")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the stream {stream} never became active");
}

/// The starting hash key halfway through a shard's range.
pub async fn midpoint(client: &aws_sdk_kinesis::Client, stream: &str, shard_id: &str) -> String {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let shard = shards
        .shards()
        .iter()
        .find(|s| s.shard_id() == shard_id)
        .expect("the shard is listed");
    let range = shard.hash_key_range().unwrap();
    let start: u128 = range.starting_hash_key().parse().unwrap();
    let end: u128 = range.ending_hash_key().parse().unwrap();
    (start + (end - start) / 2).to_string()
}

pub async fn open_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    shards
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .unwrap()
                .ending_sequence_number()
                .is_none()
        })
        .map(|s| s.shard_id().to_owned())
        .collect()
}

/// Splits `shard_id` at the middle of its hash range, once the stream is active again.
pub async fn split(client: &aws_sdk_kinesis::Client, stream: &str, shard_id: &str) {
    let hash = midpoint(client, stream, shard_id).await;
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(shard_id)
        .new_starting_hash_key(hash)
        .send()
        .await
        .expect("split");
    wait_active(client, stream).await;
}

/// Merges two adjacent shards, once the stream is active again.
pub async fn merge(client: &aws_sdk_kinesis::Client, stream: &str, shard: &str, adjacent: &str) {
    client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(shard)
        .adjacent_shard_to_merge(adjacent)
        .send()
        .await
        .expect("merge");
    wait_active(client, stream).await;
}
