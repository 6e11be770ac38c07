//! `PutRecords` at a rate: the run's transactions generated in slot order, packed into Kinesis
//! records (KPL-aggregated when asked), batched into calls as they fall due, and put with the
//! gateway's own chunking and retry of failed entries, each outcome told to the tracker.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::put_records::PutRecordsError;
use aws_sdk_kinesis::types::PutRecordsResultEntry;
use infergate::kinesis::sink::{
    PUT_RECORDS_MAX, PutRecordsHandler, put_records, put_records_calls,
};
use serde::Serialize;
use tokio::time::Instant;

use super::tracker::{DROPPED, FAILED, Tracker};
use super::{KinesisArgs, aws_error};
use crate::generator::Generator;
use crate::http::Schedule;
use crate::kpl;
use crate::stats::{Live, lock};

/// Hands on the records of `slots` as they fall due, in consecutive ranges: as soon as
/// `per_call` are waiting, when the oldest waiting has lingered `linger` past its due instant,
/// and the last ones as soon as they are due. A record's latency runs from its due instant, so
/// the lingering is part of it (as with the KPL's buffering).
pub(super) async fn batches(
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
pub(super) struct PutCounts {
    /// Transactions accepted by Kinesis.
    pub(super) records: u64,
    /// Kinesis records accepted (fewer than `records` with aggregation).
    pub(super) kinesis_records: u64,
    pub(super) calls: u64,
    /// Transactions sent again after a partial failure (or a failed call).
    pub(super) retried_records: u64,
    /// Transactions given up after every attempt.
    pub(super) failed_records: u64,
}

#[derive(Default)]
pub(super) struct PutCounters {
    records: AtomicU64,
    kinesis_records: AtomicU64,
    calls: AtomicU64,
    retried_records: AtomicU64,
    failed_records: AtomicU64,
    pub(super) first_error: Mutex<Option<String>>,
}

impl PutCounters {
    pub(super) fn counts(&self) -> PutCounts {
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

/// The run's side of one call's [`put_records`]: every call and retry counted, the first error
/// kept, and each record accepted told to the tracker with its position.
struct Putter {
    tracker: Arc<Mutex<Tracker>>,
    counters: Arc<PutCounters>,
    live: Live,
}

impl PutRecordsHandler<Entry> for Putter {
    fn record<'a>(&self, entry: &'a Entry) -> (&'a str, &'a [u8]) {
        (&entry.key, &entry.data)
    }

    fn retrying(&mut self, pending: &[Entry]) {
        self.counters
            .retried_records
            .fetch_add(transactions(pending), Ordering::Relaxed);
    }

    fn calling(&mut self) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn call_failed(&mut self, e: &SdkError<PutRecordsError>) {
        self.counters.error(format!("PutRecords: {}", aws_error(e)));
    }

    /// Accepted: an entry with a shard and a sequence number and no error code; the others are
    /// sent again.
    fn answered(&mut self, sent: Vec<Entry>, results: &[PutRecordsResultEntry]) -> Vec<Entry> {
        let counters = &self.counters;
        let mut again = Vec::new();
        let mut tracker = lock(&self.tracker);
        for (entry, result) in sent.into_iter().zip(results) {
            match (
                result.error_code(),
                result.shard_id(),
                result.sequence_number(),
            ) {
                (None, Some(shard), Some(sequence)) => {
                    let n = entry.slots.end - entry.slots.start;
                    counters.records.fetch_add(n, Ordering::Relaxed);
                    counters.kinesis_records.fetch_add(1, Ordering::Relaxed);
                    self.live.count_sent(n);
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
        again
    }
}

/// Puts one call's entries, then again only those that failed, with back-off; entries still
/// failing after every attempt are given up.
async fn put_call(client: Client, stream: String, call: Vec<Entry>, mut putter: Putter) {
    let failing = put_records(&client, &stream, call, &mut putter).await;
    if failing.is_empty() {
        return;
    }
    putter
        .counters
        .failed_records
        .fetch_add(transactions(&failing), Ordering::Relaxed);
    let mut tracker = lock(&putter.tracker);
    for entry in failing {
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
    put_records_calls(entries, |e| e.key.len() + e.data.len())
}

/// Puts the run's `slots` transactions (ids `<prefix>-<slot>`) into the stream as they fall
/// due, at most `--max-in-flight` calls at once (beyond, a call's records are dropped), and
/// returns once every call has ended.
pub(super) async fn produce(
    args: &KinesisArgs,
    client: &Client,
    schedule: &Schedule,
    slots: u64,
    prefix: &str,
    tracker: &Arc<Mutex<Tracker>>,
    live: &Live,
) -> Arc<PutCounters> {
    let mut generator = Generator::new(args.seed, args.fraud_rate, prefix);
    let counters = Arc::new(PutCounters::default());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1)));
    let aggregate = args.aggregate as u64;
    let mut puts = tokio::task::JoinSet::new();
    batches(
        schedule,
        slots,
        PUT_RECORDS_MAX as u64 * aggregate,
        Duration::from_millis(args.linger_ms),
        |range| {
            for call in calls(entries(&mut generator, range, aggregate)) {
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    let mut tracker = lock(tracker);
                    for entry in call {
                        tracker.given_up(entry.slots, DROPPED, Instant::now());
                    }
                    continue;
                };
                let task = put_call(
                    client.clone(),
                    args.stream.clone(),
                    call,
                    Putter {
                        tracker: Arc::clone(tracker),
                        counters: Arc::clone(&counters),
                        live: live.clone(),
                    },
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
    counters
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

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
}
