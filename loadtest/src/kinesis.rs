//! `loadtest kinesis`: synthetic transactions put into a Kinesis stream at a constant rate (open
//! loop: each record is due at its slot, whatever the stream or the gateway does), and the
//! end-to-end latency from that slot to the moment the gateway's consumer wrote its result.
//!
//! Each transaction's id is `<run prefix>-<slot>`, so a result names its record and so its due
//! instant; the prefix is new each run, so results of earlier runs in the same file or stream are
//! ignored. Dead letters carry the record's raw bytes (and so its id), or, for a model failure,
//! only its position in the stream: the position of every Kinesis record put is kept for those.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::generator::Generator;
use crate::http::Schedule;
use crate::progress::{Progress, Rate};
use crate::stats::{Live, Outcome, Stats, Summary, lock};
use crate::{Output, kpl};

/// Most records in one `PutRecords` call, and most bytes (Kinesis' limits).
const PUT_RECORDS_MAX: usize = 500;
const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;
/// Attempts at a call's failed entries before they count as failed.
const PUT_ATTEMPTS: u32 = 8;
/// How often a results file is read for new lines.
const TAIL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("results").args(["results_file", "output_stream"])))]
pub struct KinesisArgs {
    /// The Kinesis endpoint (kinesalite, LocalStack); default: AWS's for the region.
    #[arg(long)]
    endpoint_url: Option<String>,
    /// The stream the gateway's consumer reads.
    #[arg(long)]
    stream: String,
    /// Default: the AWS chain's (AWS_REGION, profile), else us-east-1.
    #[arg(long)]
    region: Option<String>,
    /// Transactions (user records) per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Pack this many transactions into each Kinesis record (KPL aggregation; 1: none).
    #[arg(long, default_value_t = 1)]
    aggregate: usize,
    /// Longest a due record waits for others to share its `PutRecords` call.
    #[arg(long, default_value_t = 50)]
    linger_ms: u64,
    /// `PutRecords` calls in flight at once; beyond, their records are counted as dropped.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// The gateway's results file (`kinesis.sink`, kind file), read from where it ends at the
    /// start of the run. This or `--output-stream` is required.
    #[arg(long)]
    results_file: Option<PathBuf>,
    /// The gateway's dead-letter file (`kinesis.dead_letter`, kind file), read the same way.
    #[arg(long)]
    dead_letter_file: Option<PathBuf>,
    /// The gateway's output stream (`kinesis.sink`, kind kinesis), read on every shard from
    /// LATEST at the start of the run (dead letters too, if they go there).
    #[arg(long)]
    output_stream: Option<String>,
    /// Wait after a `GetRecords` on the output stream that found nothing. AWS allows 5 calls a
    /// second per shard; the wait adds up to as much to the latency measured.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// After the last put, how long to wait for the results still outstanding; those never seen
    /// count as lost.
    #[arg(long, default_value_t = 10.0)]
    drain_seconds: f64,
    /// Create the stream (and the output stream) with this many shards, unless it exists, and
    /// wait until it is active. With `--seconds 0`, only that.
    #[arg(long)]
    create_stream: Option<i32>,
    #[arg(long, default_value_t = 0.01)]
    fraud_rate: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[command(flatten)]
    output: Output,
}

/// What became of each slot's record.
const PUT: u8 = 1;
const FAILED: u8 = 2;
const DROPPED: u8 = 4;
const SEEN: u8 = 8;

/// The run's records by slot, shared by the putters and the readers.
struct Tracker {
    schedule: Schedule,
    prefix: String,
    slots: Vec<u8>,
    /// Kinesis records put: a hash of (shard, sequence number) → the slot of its first user
    /// record, for dead letters that carry only their position.
    positions: HashMap<u64, u64>,
    /// Put and not yet seen.
    outstanding: u64,
    duplicates: u64,
    stats: Arc<Mutex<Stats>>,
}

/// One line of the gateway's output, as far as the run is concerned.
#[derive(Debug, PartialEq)]
enum Seen {
    Scored {
        transaction_id: String,
    },
    DeadLetter {
        reason: String,
        /// From the record's data, when the gateway kept it and it is a transaction.
        transaction_id: Option<String>,
        /// Shard, sequence number and sub-sequence number (position in an aggregate).
        position: Option<(String, String, Option<u64>)>,
    },
}

/// Reads a line of the results sink (a score plus its position) or of the dead letters
/// (`error.code`, position, `data_base64`).
fn parse_line(line: &[u8]) -> Option<Seen> {
    let value: Value = serde_json::from_slice(line).ok()?;
    if let Some(id) = value["transaction_id"].as_str()
        && value.get("fraud_score").is_some()
    {
        return Some(Seen::Scored {
            transaction_id: id.to_owned(),
        });
    }
    let reason = value["error"]["code"].as_str()?.to_owned();
    let transaction_id = value["data_base64"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|data| serde_json::from_slice::<Value>(&data).ok())
        .and_then(|tx| tx["transaction_id"].as_str().map(str::to_owned));
    let position = match (
        value["shard_id"].as_str(),
        value["sequence_number"].as_str(),
    ) {
        (Some(shard), Some(sequence)) => Some((
            shard.to_owned(),
            sequence.to_owned(),
            value["sub_sequence_number"].as_u64(),
        )),
        _ => None,
    };
    Some(Seen::DeadLetter {
        reason,
        transaction_id,
        position,
    })
}

fn position_key(shard: &str, sequence: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (shard, sequence).hash(&mut hasher);
    hasher.finish()
}

impl Tracker {
    fn new(schedule: Schedule, prefix: String, slots: u64, stats: Arc<Mutex<Stats>>) -> Self {
        Self {
            schedule,
            prefix,
            slots: vec![0; usize::try_from(slots).expect("slots fit in memory")],
            positions: HashMap::new(),
            outstanding: 0,
            duplicates: 0,
            stats,
        }
    }

    fn slot_of(&self, transaction_id: &str) -> Option<u64> {
        let slot = transaction_id
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        (slot < self.slots.len() as u64).then_some(slot)
    }

    /// Kinesis accepted `slots` as one record at this position.
    fn put(&mut self, slots: Range<u64>, shard: &str, sequence: &str) {
        self.positions
            .insert(position_key(shard, sequence), slots.start);
        for slot in slots {
            let state = &mut self.slots[slot as usize];
            *state |= PUT;
            if *state & SEEN == 0 {
                self.outstanding += 1;
            }
        }
    }

    /// `slots` were given up `at`: `FAILED` (no put succeeded) or `DROPPED` (never sent).
    fn given_up(&mut self, slots: Range<u64>, how: u8, at: Instant) {
        let mut stats = lock(&self.stats);
        for slot in slots {
            self.slots[slot as usize] |= how;
            if how == DROPPED {
                stats.record_dropped(at);
            } else {
                stats.record_error(at);
            }
        }
    }

    /// A line of the gateway's output, read `at`.
    fn seen(&mut self, line: &[u8], at: Instant) {
        let Some(seen) = parse_line(line) else {
            return;
        };
        let (slot, outcome, ok) = match seen {
            Seen::Scored { transaction_id } => {
                let Some(slot) = self.slot_of(&transaction_id) else {
                    return;
                };
                (slot, "scored".to_owned(), true)
            }
            Seen::DeadLetter {
                reason,
                transaction_id,
                position,
            } => {
                let by_id = transaction_id.and_then(|id| self.slot_of(&id));
                let by_position = || {
                    let (shard, sequence, sub) = position?;
                    let first = self.positions.get(&position_key(&shard, &sequence))?;
                    let slot = first + sub.unwrap_or(0);
                    (slot < self.slots.len() as u64).then_some(slot)
                };
                let Some(slot) = by_id.or_else(by_position) else {
                    return;
                };
                (slot, reason, false)
            }
        };
        let state = &mut self.slots[slot as usize];
        if *state & SEEN != 0 {
            self.duplicates += 1;
            return;
        }
        *state |= SEEN;
        if *state & PUT != 0 {
            self.outstanding -= 1;
        }
        let latency = at.saturating_duration_since(self.schedule.due(slot));
        lock(&self.stats).record_outcome(Outcome::Label(outcome), ok, latency, at);
    }
}

/// Hands on the records of `slots` as they fall due, in consecutive ranges: as soon as
/// `per_call` are waiting, when the oldest waiting has lingered `linger` past its due instant,
/// and the last ones as soon as they are due. A record's latency runs from its due instant, so
/// the lingering is part of it (as with the KPL's buffering).
pub async fn batches(
    schedule: &Schedule,
    slots: u64,
    per_call: u64,
    linger: Duration,
    mut flush: impl FnMut(Range<u64>),
) {
    let per_call = per_call.max(1);
    let (mut first, mut next) = (0, 0);
    while first < slots {
        let now = Instant::now();
        while next < slots && schedule.due(next) <= now {
            next += 1;
        }
        while next - first >= per_call {
            flush(first..first + per_call);
            first += per_call;
        }
        if first < next && (next == slots || now >= schedule.due(first) + linger) {
            flush(first..next);
            first = next;
        }
        if first == slots {
            break;
        }
        // Here `next < slots`: the last record's arrival flushes everything above.
        let mut wake = schedule.due(next);
        if first < next {
            wake = wake.min(schedule.due(first) + linger);
        }
        tokio::time::sleep_until(wake).await;
    }
}

/// One Kinesis record: the slots it carries, its partition key and data.
struct Entry {
    slots: Range<u64>,
    key: String,
    data: Vec<u8>,
}

#[derive(Debug, Default, Serialize)]
struct PutCounts {
    /// Transactions accepted by Kinesis.
    records: u64,
    /// Kinesis records accepted (fewer than `records` with aggregation).
    kinesis_records: u64,
    calls: u64,
    /// Transactions sent again after a partial failure (or a failed call).
    retried_records: u64,
    /// Transactions given up after every attempt.
    failed_records: u64,
}

#[derive(Default)]
struct PutCounters {
    records: AtomicU64,
    kinesis_records: AtomicU64,
    calls: AtomicU64,
    retried_records: AtomicU64,
    failed_records: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl PutCounters {
    fn counts(&self) -> PutCounts {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        PutCounts {
            records: get(&self.records),
            kinesis_records: get(&self.kinesis_records),
            calls: get(&self.calls),
            retried_records: get(&self.retried_records),
            failed_records: get(&self.failed_records),
        }
    }

    fn error(&self, message: String) {
        lock(&self.first_error).get_or_insert(message);
    }
}

fn transactions(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.slots.end - e.slots.start).sum()
}

/// Puts one call's entries, then again only those that failed, with back-off; entries still
/// failing after `PUT_ATTEMPTS` are given up.
async fn put_call(
    client: Client,
    stream: String,
    mut pending: Vec<Entry>,
    tracker: Arc<Mutex<Tracker>>,
    counters: Arc<PutCounters>,
    live: Live,
) {
    for attempt in 0..PUT_ATTEMPTS {
        if attempt > 0 {
            counters
                .retried_records
                .fetch_add(transactions(&pending), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
        }
        let records = pending
            .iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&e.key)
                    .data(Blob::new(e.data.as_slice()))
                    .build()
                    .expect("key and data are set")
            })
            .collect();
        counters.calls.fetch_add(1, Ordering::Relaxed);
        let call = client
            .put_records()
            .stream_name(&stream)
            .set_records(Some(records))
            .send()
            .await;
        let out = match call {
            Ok(out) => out,
            Err(e) => {
                counters.error(format!("PutRecords: {}", aws_error(&e)));
                continue;
            }
        };
        let mut again = Vec::new();
        let mut tracker = lock(&tracker);
        for (entry, result) in pending.into_iter().zip(out.records()) {
            match (
                result.error_code(),
                result.shard_id(),
                result.sequence_number(),
            ) {
                (None, Some(shard), Some(sequence)) => {
                    let n = entry.slots.end - entry.slots.start;
                    counters.records.fetch_add(n, Ordering::Relaxed);
                    counters.kinesis_records.fetch_add(1, Ordering::Relaxed);
                    live.count_sent(n);
                    tracker.put(entry.slots, shard, sequence);
                }
                (code, ..) => {
                    if let Some(code) = code {
                        counters.error(format!(
                            "PutRecords entry: {code}: {}",
                            result.error_message().unwrap_or("")
                        ));
                    }
                    again.push(entry);
                }
            }
        }
        if again.is_empty() {
            return;
        }
        pending = again;
    }
    counters
        .failed_records
        .fetch_add(transactions(&pending), Ordering::Relaxed);
    let mut tracker = lock(&tracker);
    for entry in pending {
        tracker.given_up(entry.slots, FAILED, Instant::now());
    }
}

/// The entries of `slots`: `aggregate` transactions per Kinesis record (KPL-aggregated when more
/// than one), in order; the partition key is the (first) transaction's card.
fn entries(generator: &mut Generator, slots: Range<u64>, aggregate: u64) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut start = slots.start;
    while start < slots.end {
        let end = (start + aggregate.max(1)).min(slots.end);
        let records: Vec<(String, Vec<u8>)> = (start..end)
            .map(|_| {
                let (tx, _) = generator.next();
                let key = tx["card_id"].as_str().unwrap_or("-").to_owned();
                (
                    key,
                    serde_json::to_vec(&tx).expect("a transaction serializes"),
                )
            })
            .collect();
        let (key, data) = if aggregate > 1 {
            let data = kpl::aggregate(records.iter().map(|(k, d)| (k.as_str(), d.as_slice())));
            (records[0].0.clone(), data)
        } else {
            records.into_iter().next().expect("one record")
        };
        out.push(Entry {
            slots: start..end,
            key,
            data,
        });
        start = end;
    }
    out
}

/// Splits entries into calls within Kinesis' limits (500 records, 5 MiB).
fn calls(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut calls: Vec<Vec<Entry>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = entry.key.len() + entry.data.len();
        match calls.last_mut() {
            Some(call) if call.len() < PUT_RECORDS_MAX && bytes + size <= PUT_RECORDS_MAX_BYTES => {
                bytes += size;
                call.push(entry);
            }
            _ => {
                bytes = size;
                calls.push(vec![entry]);
            }
        }
    }
    calls
}

/// An SDK error on one line: the service's code and message, or the whole chain of causes when
/// there is no code (no connection, a timeout).
fn aws_error<E: ProvideErrorMetadata + std::error::Error>(e: &E) -> String {
    match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
        None => DisplayErrorContext(e).to_string(),
    }
}

async fn client(args: &KinesisArgs) -> Client {
    use aws_config::meta::region::RegionProviderChain;
    let region = RegionProviderChain::first_try(args.region.clone().map(aws_config::Region::new))
        .or_default_provider()
        .or_else(aws_config::Region::new("us-east-1"));
    // Retries are this tool's own (and counted), so the SDK's are off.
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .build(),
        );
    if let Some(url) = &args.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// Creates `stream` with `shards` shards unless it exists, and waits until it is active.
async fn create_stream(client: &Client, stream: &str, shards: i32) -> Result<(), String> {
    let created = client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await;
    if let Err(e) = created
        && e.code() != Some("ResourceInUseException")
    {
        return Err(format!("cannot create stream {stream}: {}", aws_error(&e)));
    }
    for _ in 0..600 {
        let described = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await;
        if let Ok(out) = described
            && out
                .stream_description_summary()
                .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("stream {stream} did not become active within 60 s"))
}

/// A file read from where it ended when the run began, line by line as the gateway appends.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn at_end(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self {
            path,
            offset,
            partial: Vec::new(),
        }
    }

    /// The complete lines appended since the last call.
    fn lines(&mut self) -> Vec<Vec<u8>> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            // Truncated (the gateway drops a torn last line when it starts): read it again;
            // lines already seen count as duplicates, not twice.
            self.offset = 0;
            self.partial.clear();
        }
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        complete
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }
}

/// Reads the files on a thread of its own (plain blocking reads, off the runtime that keeps
/// the schedule) until `stop`, then once more.
fn tail_files(
    mut tails: Vec<Tail>,
    tracker: Arc<Mutex<Tracker>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            for tail in &mut tails {
                let lines = tail.lines();
                if !lines.is_empty() {
                    let now = Instant::now();
                    let mut tracker = lock(&tracker);
                    for line in &lines {
                        tracker.seen(line, now);
                    }
                }
            }
            if stopping {
                return;
            }
            std::thread::sleep(TAIL_INTERVAL);
        }
    })
}

/// An iterator at LATEST for every shard of `stream`: where its readers start.
async fn latest_iterators(client: &Client, stream: &str) -> Result<Vec<(String, String)>, String> {
    let error = |op: &str, e: &dyn std::fmt::Display| format!("{op} on {stream}: {e}");
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let call = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = call
            .send()
            .await
            .map_err(|e| error("ListShards", &aws_error(&e)))?;
        shards.extend(out.shards().iter().map(|s| s.shard_id().to_owned()));
        match out.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    let mut iterators = Vec::new();
    for shard in shards {
        let out = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard)
            .shard_iterator_type(ShardIteratorType::Latest)
            .send()
            .await
            .map_err(|e| error("GetShardIterator", &aws_error(&e)))?;
        if let Some(iterator) = out.shard_iterator() {
            iterators.push((shard, iterator.to_owned()));
        }
    }
    Ok(iterators)
}

/// Reads one shard of the output stream until `stop` (after a page with nothing new).
async fn read_shard(
    client: Client,
    stream: String,
    shard: String,
    iterator: String,
    tracker: Arc<Mutex<Tracker>>,
    poll: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut iterator = Some(iterator);
    let mut last_sequence: Option<String> = None;
    let mut failures = 0u32;
    while let Some(current) = iterator.take() {
        let out = match client
            .get_records()
            .shard_iterator(&current)
            .limit(10_000)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                failures += 1;
                if e.code() == Some("ExpiredIteratorException") {
                    let call = client
                        .get_shard_iterator()
                        .stream_name(&stream)
                        .shard_id(&shard);
                    let call = match &last_sequence {
                        Some(s) => call
                            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                            .starting_sequence_number(s),
                        None => call.shard_iterator_type(ShardIteratorType::Latest),
                    };
                    iterator = call
                        .send()
                        .await
                        .ok()
                        .and_then(|o| o.shard_iterator().map(str::to_owned))
                        .or(Some(current));
                } else {
                    if failures == 1 {
                        eprintln!(
                            "GetRecords on {stream}/{shard}: {} (retrying)",
                            aws_error(&e)
                        );
                    }
                    iterator = Some(current);
                }
                tokio::time::sleep(Duration::from_millis(
                    (100u64 << failures.min(5)).min(3_000),
                ))
                .await;
                continue;
            }
        };
        failures = 0;
        let records = out.records();
        if let Some(last) = records.last() {
            last_sequence = Some(last.sequence_number().to_owned());
            let now = Instant::now();
            let mut tracker = lock(&tracker);
            for record in records {
                tracker.seen(record.data().as_ref(), now);
            }
        }
        iterator = out.next_shard_iterator().map(str::to_owned);
        if records.is_empty() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// The JSON summary: the HTTP mode's, plus the puts and what never came back.
#[derive(Serialize)]
struct KinesisSummary {
    #[serde(flatten)]
    summary: Summary,
    put: PutCounts,
    /// Put, and never seen in the gateway's output within the drain.
    lost: u64,
    /// Results seen again (the consumer is at-least-once).
    duplicates: u64,
}

pub async fn run(args: KinesisArgs) -> ExitCode {
    if !(args.rate > 0.0 && args.seconds >= 0.0 && args.drain_seconds >= 0.0) {
        eprintln!("--rate must be positive, --seconds and --drain-seconds not negative");
        return ExitCode::from(2);
    }
    if !(1..=1000).contains(&args.aggregate) {
        eprintln!("--aggregate must be from 1 to 1000");
        return ExitCode::from(2);
    }
    let client = client(&args).await;
    if let Some(shards) = args.create_stream {
        for stream in std::iter::once(&args.stream).chain(&args.output_stream) {
            if let Err(e) = create_stream(&client, stream, shards).await {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.seconds == 0.0 {
        return ExitCode::SUCCESS;
    }
    if args.results_file.is_none() && args.output_stream.is_none() {
        eprintln!("where are results read? Give --results-file or --output-stream");
        return ExitCode::from(2);
    }
    // A stream that cannot be written shows here once, not as a run of failed puts.
    if let Err(e) = client
        .describe_stream_summary()
        .stream_name(&args.stream)
        .send()
        .await
    {
        eprintln!("stream {}: {}", args.stream, aws_error(&e));
        return ExitCode::FAILURE;
    }

    // Where results will be read, taken before the first put.
    let tails: Vec<Tail> = [&args.results_file, &args.dead_letter_file]
        .into_iter()
        .flatten()
        .map(|p| Tail::at_end(p.clone()))
        .collect();
    let iterators = match &args.output_stream {
        Some(stream) => match latest_iterators(&client, stream).await {
            Ok(iterators) => iterators,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => Vec::new(),
    };

    let prefix = format!("lt{:08x}", rand::random::<u32>());
    let live = Live::default();
    let schedule = Schedule::new(Instant::now(), args.rate);
    let duration = Duration::from_secs_f64(args.seconds);
    let slots = schedule.slots(duration);
    let tracker = Arc::new(Mutex::new(Tracker::new(
        schedule,
        prefix.clone(),
        slots,
        live.recorder(schedule.start),
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let file_reader =
        (!tails.is_empty()).then(|| tail_files(tails, Arc::clone(&tracker), Arc::clone(&stop)));
    let mut stream_readers = tokio::task::JoinSet::new();
    for (shard, iterator) in iterators {
        stream_readers.spawn(read_shard(
            client.clone(),
            args.output_stream.clone().expect("iterators come from it"),
            shard,
            iterator,
            Arc::clone(&tracker),
            Duration::from_millis(args.poll_ms),
            Arc::clone(&stop),
        ));
    }

    let progress = {
        let (live, mut rate) = (live.clone(), Rate::default());
        Progress::start(duration, args.output.quiet, move || {
            let s = live.snapshot();
            format!(
                "put {} scored {} failed {} waiting {} {:.0} rec/s p99 {:.1} ms",
                s.sent,
                s.ok,
                s.failed,
                s.sent.saturating_sub(s.answered),
                rate.update(Instant::now(), s.answered),
                s.p99_ms
            )
        })
    };

    // Put: transactions generated in slot order (ids `<prefix>-<slot>`), batched into calls.
    let mut generator = Generator::new(args.seed, args.fraud_rate, &prefix);
    let counters = Arc::new(PutCounters::default());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1)));
    let aggregate = args.aggregate as u64;
    let mut puts = tokio::task::JoinSet::new();
    batches(
        &schedule,
        slots,
        PUT_RECORDS_MAX as u64 * aggregate,
        Duration::from_millis(args.linger_ms),
        |range| {
            for call in calls(entries(&mut generator, range, aggregate)) {
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    let mut tracker = lock(&tracker);
                    for entry in call {
                        tracker.given_up(entry.slots, DROPPED, Instant::now());
                    }
                    continue;
                };
                let task = put_call(
                    client.clone(),
                    args.stream.clone(),
                    call,
                    Arc::clone(&tracker),
                    Arc::clone(&counters),
                    live.clone(),
                );
                puts.spawn(async move {
                    task.await;
                    drop(permit);
                });
            }
            while puts.try_join_next().is_some() {}
        },
    )
    .await;
    while puts.join_next().await.is_some() {}

    // Drain: wait for what is still outstanding.
    let drain = Duration::from_secs_f64(args.drain_seconds);
    progress.extend(schedule.start.elapsed() + drain);
    let deadline = Instant::now() + drain;
    while lock(&tracker).outstanding > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(reader) = file_reader {
        reader.join().expect("the file reader does not panic");
    }
    let readers_done = async { while stream_readers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), readers_done)
        .await
        .is_err()
    {
        stream_readers.abort_all();
    }
    let elapsed = schedule.start.elapsed();
    progress.finish();

    let (lost, duplicates) = {
        let tracker = lock(&tracker);
        (tracker.outstanding, tracker.duplicates)
    };
    let mut stats = live.total(schedule.start);
    stats.add_errors(lost);
    let put = counters.counts();
    let summary = KinesisSummary {
        summary: stats.summary(elapsed),
        put,
        lost,
        duplicates,
    };
    let s = &summary.summary;
    let l = &s.latency_ms;
    let dead: u64 = s
        .statuses
        .iter()
        .filter(|(k, _)| *k != "scored")
        .map(|(_, n)| n)
        .sum();
    println!(
        "kinesis open loop {}/s{}: scored {} of {} put ({} Kinesis records in {} calls), dead letters {}, lost {}, \
         put failed {}, retried {}, dropped {}, duplicates {}, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        args.rate,
        if aggregate > 1 {
            format!(" aggregated x{aggregate}")
        } else {
            String::new()
        },
        s.ok,
        summary.put.records,
        summary.put.kinesis_records,
        summary.put.calls,
        dead,
        lost,
        summary.put.failed_records,
        summary.put.retried_records,
        s.dropped,
        duplicates,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
    if let Some(e) = lock(&counters.first_error).as_ref() {
        eprintln!("first put error: {e}");
    }
    let title = format!("kinesis: {} records/s into {}", args.rate, args.stream);
    let failed = s.ok != slots;
    if failed && s.statuses.len() > 1 {
        eprintln!("not scored: {:?}", s.statuses);
    }
    args.output.finish(&summary, &stats, &title, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(slots: u64) -> Tracker {
        let start = Instant::now();
        Tracker::new(
            Schedule::new(start, 100.0),
            "ltrun".into(),
            slots,
            Arc::new(Mutex::new(Stats::new(start))),
        )
    }

    fn scored(id: &str) -> Vec<u8> {
        serde_json::json!({"transaction_id": id, "fraud_score": 0.1, "decision": "approve",
            "model": "m@1", "cached": false, "shard_id": "shardId-000000000000",
            "sequence_number": "1", "sub_sequence_number": null})
        .to_string()
        .into_bytes()
    }

    fn dead_letter(code: &str, data: &[u8], sequence: &str, sub: Option<u64>) -> Vec<u8> {
        serde_json::json!({"shard_id": "shardId-000000000001", "sequence_number": sequence,
            "sub_sequence_number": sub, "error": {"code": code, "message": "m"},
            "data_base64": base64::engine::general_purpose::STANDARD.encode(data)})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn results_and_dead_letters_find_their_records() {
        let mut t = tracker(10);
        let start = t.schedule.start;
        t.put(0..1, "shardId-000000000000", "1");
        t.put(1..2, "shardId-000000000000", "2");
        // An aggregate of four records, 2..6.
        t.put(2..6, "shardId-000000000001", "77");
        assert_eq!(t.outstanding, 6);
        let at = start + Duration::from_millis(250);
        t.seen(&scored("ltrun-0"), at);
        // Another run's result, and a line that is neither, are ignored.
        t.seen(&scored("ltother-1"), at);
        t.seen(b"not json", at);
        // A dead letter carrying its transaction, and one carrying only its position (the
        // third record of the aggregate).
        let tx = serde_json::json!({"transaction_id": "ltrun-1"}).to_string();
        t.seen(
            &dead_letter("invalid_transaction", tx.as_bytes(), "2", None),
            at,
        );
        t.seen(&dead_letter("model_error", b"", "77", Some(2)), at);
        // Seen again: a duplicate, not a second answer.
        t.seen(&scored("ltrun-0"), at);
        assert_eq!((t.outstanding, t.duplicates), (3, 1));
        let s = lock(&t.stats).summary(Duration::from_secs(1));
        assert_eq!(s.ok, 1);
        assert_eq!(s.statuses["scored"], 1);
        assert_eq!(s.statuses["invalid_transaction"], 1);
        assert_eq!(s.statuses["model_error"], 1);
        // Slot 0 was due at the start: 250 ms; slot 4 at 40 ms: 210 ms.
        assert!((s.latency_ms.max - 250.0).abs() < 0.5, "{:?}", s.latency_ms);
        assert!((s.latency_ms.p50 - 240.0).abs() < 0.5, "{:?}", s.latency_ms);
        assert_eq!(t.slots[4] & SEEN, SEEN);
    }

    #[test]
    fn a_result_seen_before_its_put_returns_is_not_outstanding() {
        let mut t = tracker(2);
        let at = t.schedule.start;
        t.seen(&scored("ltrun-1"), at);
        t.put(1..2, "s", "9");
        t.put(0..1, "s", "8");
        assert_eq!(t.outstanding, 1, "only slot 0 is still awaited");
    }

    #[test]
    fn lines_of_the_gateway_sinks_are_read() {
        assert_eq!(
            parse_line(&scored("a-1")),
            Some(Seen::Scored {
                transaction_id: "a-1".into()
            })
        );
        assert_eq!(
            parse_line(&dead_letter("invalid_json", b"{oops", "5", Some(1))),
            Some(Seen::DeadLetter {
                reason: "invalid_json".into(),
                transaction_id: None,
                position: Some(("shardId-000000000001".into(), "5".into(), Some(1))),
            })
        );
        assert_eq!(parse_line(br#"{"unrelated": true}"#), None);
    }

    #[tokio::test(start_paused = true)]
    async fn records_wait_at_most_the_linger_and_calls_fill_up() {
        // 100 records a second for a second, calls of up to 500, lingering 50 ms: each call
        // takes what fell due in about 50 ms, none waits longer.
        let schedule = Schedule::new(Instant::now(), 100.0);
        let mut flushed: Vec<(Range<u64>, Instant)> = Vec::new();
        batches(&schedule, 100, 500, Duration::from_millis(50), |r| {
            flushed.push((r, Instant::now()));
        })
        .await;
        let covered: Vec<u64> = flushed.iter().flat_map(|(r, _)| r.clone()).collect();
        assert_eq!(
            covered,
            (0..100).collect::<Vec<_>>(),
            "every slot once, in order"
        );
        for (range, at) in &flushed {
            let waited = *at - schedule.due(range.start);
            assert!(
                waited <= Duration::from_millis(50),
                "{range:?} waited {waited:?}"
            );
            assert!(
                *at >= schedule.due(range.end - 1),
                "{range:?} sent before due"
            );
        }
        assert!(flushed.len() < 25, "batched: {} calls", flushed.len());
        // The last call goes as soon as the last record is due.
        assert_eq!(flushed.last().unwrap().1, schedule.due(99));

        // Calls of at most 4: a call goes as soon as it is full.
        let schedule = Schedule::new(Instant::now(), 100.0);
        let mut flushed = Vec::new();
        batches(&schedule, 10, 4, Duration::from_secs(1), |r| {
            flushed.push((r, Instant::now() - schedule.start));
        })
        .await;
        let ms = Duration::from_millis;
        assert_eq!(
            flushed,
            [(0..4, ms(30)), (4..8, ms(70)), (8..10, ms(90))],
            "full calls at once, the rest when the last is due"
        );
    }

    #[test]
    fn aggregated_entries_carry_their_slots_and_deaggregate() {
        let mut generator = Generator::new(7, 0.0, "ltrun");
        let entries = entries(&mut generator, 0..7, 3);
        let ranges: Vec<Range<u64>> = entries.iter().map(|e| e.slots.clone()).collect();
        assert_eq!(ranges, [0..3, 3..6, 6..7]);
        let (users, plain) = infergate::kinesis::kpl::deaggregate(&entries[1].data, "k");
        assert_eq!(plain, None);
        let ids: Vec<String> = users
            .iter()
            .map(|u| {
                serde_json::from_slice::<Value>(&u.data).unwrap()["transaction_id"].to_string()
            })
            .collect();
        assert_eq!(ids, [r#""ltrun-3""#, r#""ltrun-4""#, r#""ltrun-5""#]);
        assert_eq!(
            entries[1].key, users[0].partition_key,
            "keyed by its first card"
        );
        // Not aggregated: the transaction itself.
        let plain = super::entries(&mut Generator::new(7, 0.0, "ltrun"), 0..2, 1);
        let tx: Value = serde_json::from_slice(&plain[1].data).unwrap();
        assert_eq!(tx["transaction_id"], "ltrun-1");
        assert_eq!(plain[1].key, tx["card_id"].as_str().unwrap());
    }

    #[test]
    fn calls_stay_within_the_put_records_limits() {
        let entry = |size: usize| Entry {
            slots: 0..1,
            key: "k".into(),
            data: vec![0; size],
        };
        let sizes = |calls: &[Vec<Entry>]| calls.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(
            sizes(&calls((0..1200).map(|_| entry(10)).collect())),
            [500, 500, 200]
        );
        // 1 MiB records: five to a call.
        assert_eq!(
            sizes(&calls((0..7).map(|_| entry(1024 * 1024 - 1)).collect())),
            [5, 2]
        );
    }

    #[test]
    fn files_are_read_from_their_end_at_the_start_and_by_whole_lines() {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("loadtest-tail-{}.jsonl", std::process::id()));
        std::fs::write(&path, "old line\n").unwrap();
        let mut tail = Tail::at_end(path.clone());
        assert!(tail.lines().is_empty());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"one\ntw").unwrap();
        assert_eq!(tail.lines(), [b"one".to_vec()]);
        file.write_all(b"o\n").unwrap();
        assert_eq!(tail.lines(), [b"two".to_vec()]);
        std::fs::remove_file(&path).unwrap();
        // A file that does not exist yet is read from its start once it does.
        let mut tail = Tail::at_end(path.clone());
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(tail.lines(), [b"first".to_vec()]);
        std::fs::remove_file(&path).unwrap();
    }
}
