//! Where stream results go: JSON lines appended to a file (shared by every shard, each page's
//! lines written as one block so that a shard's order is kept), or records put to a Kinesis
//! stream (partition key = the card, so a card's results stay in order there too).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    /// Writes the lines; once this returns they are durable in the sink (in the OS for a file,
    /// acknowledged by Kinesis for a stream).
    pub async fn write(&self, lines: &[OutputRecord]) -> Result<(), SinkError> {
        match self {
            Self::File(file) => {
                let lines: Vec<String> = lines.iter().map(|r| r.line.clone()).collect();
                file.write(&lines)
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

/// Most records in one `PutRecords` call, and most bytes.
const PUT_RECORDS_MAX: usize = 500;
const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;
/// Attempts at the failed entries of a call before the page is given up (its reader then starts
/// again from its checkpoint, so nothing is lost).
const PUT_ATTEMPTS: u32 = 8;

/// A Kinesis output stream.
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
        let mut start = 0;
        while start < lines.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < lines.len() && end - start < PUT_RECORDS_MAX {
                let size = lines[end].partition_key.len() + lines[end].line.len();
                if end > start && bytes + size > PUT_RECORDS_MAX_BYTES {
                    break;
                }
                bytes += size;
                end += 1;
            }
            self.put(&lines[start..end]).await?;
            start = end;
        }
        Ok(())
    }

    /// Puts one call's worth, then again only the entries that failed, with back-off.
    async fn put(&self, lines: &[OutputRecord]) -> Result<(), SinkError> {
        let error = |message: String| SinkError::Stream {
            stream: self.stream.clone(),
            message,
        };
        let mut pending: Vec<&OutputRecord> = lines.iter().collect();
        for attempt in 0..PUT_ATTEMPTS {
            if attempt > 0 {
                metrics::counter!("infergate_kinesis_sink_retries_total").increment(1);
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(6))).await;
            }
            let entries = pending
                .iter()
                .map(|record| {
                    let key = record.partition_key.as_str();
                    aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                        .partition_key(if key.is_empty() { "-" } else { key })
                        .data(aws_sdk_kinesis::primitives::Blob::new(
                            record.line.as_bytes(),
                        ))
                        .build()
                        .map_err(|e| error(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = match self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "PutRecords failed");
                    continue;
                }
            };
            pending = failed(&pending, out.records());
            if pending.is_empty() {
                return Ok(());
            }
        }
        Err(error(format!(
            "{} records still failing after {PUT_ATTEMPTS} attempts",
            pending.len()
        )))
    }
}

/// The entries whose result carries an error code: only those are sent again.
fn failed<'a, T>(
    sent: &[&'a T],
    results: &[aws_sdk_kinesis::types::PutRecordsResultEntry],
) -> Vec<&'a T> {
    sent.iter()
        .zip(results)
        .filter(|(_, result)| result.error_code().is_some())
        .map(|(entry, _)| *entry)
        .collect()
}

#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: Mutex<std::fs::File>,
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
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends the lines (each a JSON document) and hands them to the OS before returning: once
    /// this returns, a crash of the process cannot lose them.
    pub fn write(&self, lines: &[String]) -> Result<(), SinkError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut block = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            block.push_str(line);
            block.push('\n');
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(block.as_bytes())
            .map_err(|source| SinkError::File {
                path: self.path.clone(),
                source,
            })
    }

    /// Forces the data to the disk (at shutdown).
    pub fn sync(&self) -> Result<(), SinkError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.sync_data().map_err(|source| SinkError::File {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failed_entries_are_sent_again() {
        use aws_sdk_kinesis::types::PutRecordsResultEntry;
        let ok = PutRecordsResultEntry::builder()
            .sequence_number("1")
            .shard_id("s")
            .build();
        let throttled = PutRecordsResultEntry::builder()
            .error_code("ProvisionedThroughputExceededException")
            .error_message("slow down")
            .build();
        let sent = ["a", "b", "c"];
        let refs: Vec<&&str> = sent.iter().collect();
        let again = failed(&refs, &[ok.clone(), throttled, ok]);
        assert_eq!(again, [&"b"]);
    }

    #[test]
    fn a_torn_last_line_is_dropped_on_open() {
        let path =
            std::env::temp_dir().join(format!("infergate-sink-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let sink = JsonlSink::open(&path).unwrap();
        sink.write(&["{\"d\":4}".to_owned()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n"
        );
        std::fs::write(&path, "no newline at all").unwrap();
        JsonlSink::open(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::remove_file(&path).unwrap();
    }
}
