//! Where stream results go: JSON lines appended to a file (shared by every shard, each page's
//! lines written as one block so that a shard's order is kept, whole lines or none, synced to the
//! disk before the page is checkpointed), or records put to a Kinesis stream (partition key = the
//! card, so a card's results stay in order there too: see [`resend_in_key_order`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::page::OutputRecord;

/// A process killed mid-write leaves a last line without its newline. Those records were not
/// checkpointed, so they will be written again: the torn bytes go, and the file stays one JSON
/// document per line.
fn drop_torn_tail(file: &std::fs::File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut reader = file;
    let mut keep = len;
    let mut chunk = vec![0u8; 64 * 1024];
    // Walk back to the last newline.
    while keep > 0 {
        let start = keep.saturating_sub(chunk.len() as u64);
        let n = (keep - start) as usize;
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|b| *b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        keep = start;
    }
    if keep < len {
        tracing::warn!(
            dropped = len - keep,
            "dropping a torn last line from a sink file"
        );
        file.set_len(keep)?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("output stream {stream}: {message}")]
    Stream { stream: String, message: String },
}

/// A configured sink.
#[derive(Debug)]
pub enum Sink {
    File(JsonlSink),
    Kinesis(KinesisSink),
}

impl Sink {
    /// Writes the lines; once this returns they are durable in the sink (synced to the disk
    /// for a file, acknowledged by Kinesis for a stream), so the checkpoint may claim them.
    pub async fn write(&self, lines: &[OutputRecord]) -> Result<(), SinkError> {
        match self {
            Self::File(file) => {
                let lines: Vec<String> = lines.iter().map(|r| r.line.clone()).collect();
                // Writing and syncing block: not on the runtime's workers.
                let sink = file.clone();
                tokio::task::spawn_blocking(move || sink.write(&lines))
                    .await
                    .unwrap_or_else(|e| {
                        Err(SinkError::File {
                            path: file.path.clone(),
                            source: std::io::Error::other(e),
                        })
                    })
            }
            Self::Kinesis(stream) => stream.write(lines).await,
        }
    }

    pub fn sync(&self) -> Result<(), SinkError> {
        match self {
            Self::File(file) => file.sync(),
            Self::Kinesis(_) => Ok(()),
        }
    }
}

/// Most records in one `PutRecords` call, and most bytes (Kinesis' limits).
pub const PUT_RECORDS_MAX: usize = 500;
pub const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;
/// Attempts at the entries of a call sent again before they are given up (for the sink, the
/// page: its reader then starts again from its checkpoint, so nothing is lost).
pub const PUT_ATTEMPTS: u32 = 8;

/// Splits `entries` into `PutRecords` calls within Kinesis' limits, in order: a call takes
/// entries until it holds [`PUT_RECORDS_MAX`] or the next would take it past
/// [`PUT_RECORDS_MAX_BYTES`] (`size`: an entry's partition key plus its data, in bytes). An
/// entry that is over the limit alone still gets a call of its own.
pub fn put_records_calls<T>(
    entries: impl IntoIterator<Item = T>,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut calls: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let n = size(&entry);
        match calls.last_mut() {
            Some(call) if call.len() < PUT_RECORDS_MAX && bytes + n <= PUT_RECORDS_MAX_BYTES => {
                bytes += n;
                call.push(entry);
            }
            _ => {
                bytes = n;
                calls.push(vec![entry]);
            }
        }
    }
    calls
}

/// The caller's part in [`put_records`]: what an entry is as a Kinesis record, and what is made
/// of each call and its answer.
pub trait PutRecordsHandler<T> {
    /// The entry's partition key and data.
    fn record<'a>(&self, entry: &'a T) -> (&'a str, &'a [u8]);

    /// Before each attempt after the first (and its back-off), with the entries sent again.
    fn retrying(&mut self, _pending: &[T]) {}

    /// Just before each call.
    fn calling(&mut self) {}

    /// The call failed as a whole: all its entries are sent again.
    fn call_failed(
        &mut self,
        _error: &aws_sdk_kinesis::error::SdkError<
            aws_sdk_kinesis::operation::put_records::PutRecordsError,
        >,
    ) {
    }

    /// A call's answer, one result per entry sent and in order: the entries to send again, in
    /// the order sent. By default each failed entry and every later entry of its partition key
    /// ([`resend_in_key_order`]), so that a key's records stay in order.
    fn answered(
        &mut self,
        sent: Vec<T>,
        results: &[aws_sdk_kinesis::types::PutRecordsResultEntry],
    ) -> Vec<T> {
        resend_in_key_order(sent, results, |entry| self.record(entry).0)
    }
}

/// The entries of a `PutRecords` call to send again, given its answer (one result per entry, in
/// the order sent): each entry whose result carries an error code (or that has no result), and
/// every later entry of the same partition key (`key`), failed or not, in the order sent.
///
/// Kinesis puts a call's entries independently: a partial failure can leave a key's later
/// entries put and an earlier one not, and sending only the failed one again would put it after
/// them. Sending it again with all that followed it puts that key's records again in order, after
/// the copies already put: those are duplicates (at-least-once), which a reader recognises by the
/// source shard and sequence number each result carries. Other keys are not held back: a key
/// without a failure before an entry keeps what was put.
pub fn resend_in_key_order<T>(
    sent: Vec<T>,
    results: &[aws_sdk_kinesis::types::PutRecordsResultEntry],
    key: impl Fn(&T) -> &str,
) -> Vec<T> {
    let again: Vec<bool> = {
        let mut failed_keys = std::collections::HashSet::new();
        sent.iter()
            .enumerate()
            .map(|(i, entry)| {
                let key = key(entry);
                if results.get(i).is_none_or(|r| r.error_code().is_some()) {
                    failed_keys.insert(key);
                }
                failed_keys.contains(key)
            })
            .collect()
    };
    sent.into_iter()
        .zip(again)
        .filter_map(|(entry, again)| again.then_some(entry))
        .collect()
}

/// Puts one call's worth of `entries` (see [`put_records_calls`]) into `stream`, then again
/// those the handler picks from the answer (by default [`resend_in_key_order`]), with back-off,
/// in [`PUT_ATTEMPTS`] calls at most. Returns the entries still to send after the last: none
/// when all were put.
pub async fn put_records<T>(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: Vec<T>,
    handler: &mut impl PutRecordsHandler<T>,
) -> Vec<T> {
    let mut pending = entries;
    for attempt in 0..PUT_ATTEMPTS {
        if attempt > 0 {
            handler.retrying(&pending);
            tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(6))).await;
        }
        let records = pending
            .iter()
            .map(|entry| {
                let (key, data) = handler.record(entry);
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(aws_sdk_kinesis::primitives::Blob::new(data))
                    .build()
                    .expect("the partition key and the data, all a record needs, are set")
            })
            .collect();
        handler.calling();
        let out = match client
            .put_records()
            .stream_name(stream)
            .set_records(Some(records))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                handler.call_failed(&e);
                continue;
            }
        };
        pending = handler.answered(pending, out.records());
        if pending.is_empty() {
            break;
        }
    }
    pending
}

/// A Kinesis output stream. Each result is a record with the card as partition key, put in the
/// order of the page, call after call: a call is done (all its entries put) before the next is
/// made. On a partial failure a call sends again each failed entry and every later entry of the
/// same key, in order ([`resend_in_key_order`]), so a card's results stay in order on the
/// stream; the later ones that had been put appear twice (at-least-once: a result's
/// `shard_id` and `sequence_number` tell a duplicate).
#[derive(Debug)]
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

impl KinesisSink {
    pub fn new(client: aws_sdk_kinesis::Client, stream: String) -> Self {
        Self { client, stream }
    }

    async fn write(&self, lines: &[OutputRecord]) -> Result<(), SinkError> {
        for call in put_records_calls(lines, |r| r.partition_key.len() + r.line.len()) {
            self.put(call).await?;
        }
        Ok(())
    }

    /// Puts one call's worth, then again what a partial failure leaves out of order, with
    /// back-off.
    async fn put(&self, lines: Vec<&OutputRecord>) -> Result<(), SinkError> {
        let pending = put_records(&self.client, &self.stream, lines, &mut SinkPuts).await;
        if pending.is_empty() {
            return Ok(());
        }
        Err(SinkError::Stream {
            stream: self.stream.clone(),
            message: format!(
                "{} records still failing after {PUT_ATTEMPTS} attempts",
                pending.len()
            ),
        })
    }
}

/// The sink's side of [`put_records`]: an empty key goes as `-`; retries are counted and failed
/// calls logged; what is sent again is [`put_records`]' default ([`resend_in_key_order`]).
struct SinkPuts;

impl PutRecordsHandler<&OutputRecord> for SinkPuts {
    fn record<'a>(&self, record: &'a &OutputRecord) -> (&'a str, &'a [u8]) {
        let key = record.partition_key.as_str();
        (
            if key.is_empty() { "-" } else { key },
            record.line.as_bytes(),
        )
    }

    fn retrying(&mut self, _pending: &[&OutputRecord]) {
        metrics::counter!("infergate_kinesis_sink_retries_total").increment(1);
    }

    fn call_failed(
        &mut self,
        e: &aws_sdk_kinesis::error::SdkError<
            aws_sdk_kinesis::operation::put_records::PutRecordsError,
        >,
    ) {
        tracing::warn!(error = %aws_sdk_kinesis::error::DisplayErrorContext(e), "PutRecords failed");
    }
}

/// The file under a [`JsonlSink`]: a [`std::fs::File`] opened for appending (tests put a file
/// that fails in its place).
pub trait SinkFile: Write + Send + std::fmt::Debug {
    /// The file's length in bytes.
    fn file_len(&self) -> std::io::Result<u64>;
    /// Cuts the file to `len` bytes.
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    /// Forces the file's data to the disk.
    fn sync_data(&self) -> std::io::Result<()>;
}

impl SinkFile for std::fs::File {
    fn file_len(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        std::fs::File::set_len(self, len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

/// JSON lines appended to a file, whole lines only: a write that fails (a full disk) is cut
/// back to the last whole line, so the page written again after it starts on a line of its own.
#[derive(Debug, Clone)]
pub struct JsonlSink {
    path: PathBuf,
    file: Arc<Mutex<Open>>,
}

#[derive(Debug)]
struct Open {
    file: Box<dyn SinkFile>,
    /// Where the last whole line ends: the file's length after the last write that succeeded.
    good: Option<u64>,
}

impl JsonlSink {
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let err = |source| SinkError::File {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(err)?;
        drop_torn_tail(&file).map_err(err)?;
        Ok(Self::with_file(path, Box::new(file)))
    }

    /// A sink on an open file, which appends, holds `path` and ends with a whole line.
    pub fn with_file(path: &Path, file: Box<dyn SinkFile>) -> Self {
        // Unknown when the length cannot be read: then it is read before the first write.
        let good = file.file_len().ok();
        Self {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(Open { file, good })),
        }
    }

    /// Appends the lines (each a JSON document) and forces them to the disk before returning:
    /// once this returns, neither a crash of the process nor of the machine loses them, so the
    /// checkpoint that claims them may follow. On an error, none of them is in the file.
    pub fn write(&self, lines: &[String]) -> Result<(), SinkError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut block = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            block.push_str(line);
            block.push('\n');
        }
        let mut open = self.file.lock().unwrap_or_else(|e| e.into_inner());
        open.append(block.as_bytes()).map_err(|source| {
            metrics::counter!("infergate_kinesis_sink_write_errors_total").increment(1);
            SinkError::File {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// Forces the data to the disk (at shutdown).
    pub fn sync(&self) -> Result<(), SinkError> {
        let open = self.file.lock().unwrap_or_else(|e| e.into_inner());
        open.file.sync_data().map_err(|source| SinkError::File {
            path: self.path.clone(),
            source,
        })
    }
}

impl Open {
    /// Writes and syncs `block`, or cuts the file back to where it was.
    fn append(&mut self, block: &[u8]) -> std::io::Result<()> {
        let good = match self.good {
            Some(good) => good,
            None => {
                let len = self.file.file_len()?;
                self.good = Some(len);
                len
            }
        };
        // An earlier write that failed, and whose cut failed too, left part of its block: the
        // file is longer than `good`, and is cut now. (Shorter: someone else cut it; it is
        // not extended.)
        let len = self.file.file_len()?;
        let good = if len > good {
            self.file.set_len(good)?;
            good
        } else {
            len
        };
        let written = self
            .file
            .write_all(block)
            .and_then(|()| self.file.flush())
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.good = Some(good + block.len() as u64);
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(good) {
                    tracing::error!(
                        error = %cut,
                        "cannot cut a failed write from a sink file; it is cut before the next"
                    );
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
