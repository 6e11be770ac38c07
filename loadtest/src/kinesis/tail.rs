//! Reading the gateway's output back: its results and dead-letter files (tailed from where they
//! ended at the start of the run) or its output stream (every shard from LATEST), each line
//! handed to the tracker.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::ShardIteratorType;
use base64::Engine;
use infergate::kinesis::page::ResultLine;
use serde_json::Value;
use tokio::time::Instant;

use super::aws_error;
use super::tracker::{Seen, Tracker};
use crate::stats::lock;

/// How often a results file is read for new lines.
const TAIL_INTERVAL: Duration = Duration::from_millis(20);

/// Reads a line of the results sink or of the dead letters, as the gateway types them
/// ([`ResultLine`]); `None` for a line of neither kind.
pub(super) fn parse_line(line: &[u8]) -> Option<Seen> {
    Some(match serde_json::from_slice::<ResultLine>(line).ok()? {
        ResultLine::Scored(scored) => Seen::Scored {
            transaction_id: scored.transaction_id,
        },
        ResultLine::DeadLetter(dead) => {
            // A dead letter whose data is a transaction names it.
            let transaction_id = base64::engine::general_purpose::STANDARD
                .decode(&dead.data_base64)
                .ok()
                .and_then(|data| serde_json::from_slice::<Value>(&data).ok())
                .and_then(|tx| tx["transaction_id"].as_str().map(str::to_owned));
            Seen::DeadLetter {
                reason: dead.error.code,
                transaction_id,
                position: Some((
                    dead.shard_id,
                    dead.sequence_number,
                    dead.sub_sequence_number,
                )),
            }
        }
    })
}

/// Hands the lines read `at` to the tracker; those that are neither a result nor a dead letter
/// are skipped.
fn see<'a>(tracker: &Mutex<Tracker>, lines: impl IntoIterator<Item = &'a [u8]>, at: Instant) {
    let mut tracker = lock(tracker);
    for line in lines {
        if let Some(seen) = parse_line(line) {
            tracker.seen(seen, at);
        }
    }
}

/// A file read from where it ended when the run began, line by line as the gateway appends.
pub(super) struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    pub(super) fn at_end(path: PathBuf) -> Self {
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
pub(super) fn tail_files(
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
                    see(&tracker, lines.iter().map(Vec::as_slice), Instant::now());
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
pub(super) async fn latest_iterators(
    client: &Client,
    stream: &str,
) -> Result<Vec<(String, String)>, String> {
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
pub(super) async fn read_shard(
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
            see(
                &tracker,
                records.iter().map(|r| r.data().as_ref()),
                Instant::now(),
            );
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // A dead letter whose data is a transaction names it.
        let tx = serde_json::json!({"transaction_id": "ltrun-1"}).to_string();
        assert_eq!(
            parse_line(&dead_letter(
                "invalid_transaction",
                tx.as_bytes(),
                "2",
                None
            )),
            Some(Seen::DeadLetter {
                reason: "invalid_transaction".into(),
                transaction_id: Some("ltrun-1".into()),
                position: Some(("shardId-000000000001".into(), "2".into(), None)),
            })
        );
        assert_eq!(parse_line(br#"{"unrelated": true}"#), None);
        assert_eq!(parse_line(b"not json"), None);
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
