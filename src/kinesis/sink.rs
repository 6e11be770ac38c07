//! Where stream results go: JSON lines appended to a file, shared by every shard, each shard's
//! lines written (and flushed) as one block so that a shard's order is kept.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
#[error("sink file {path}: {source}")]
pub struct SinkError {
    path: PathBuf,
    source: std::io::Error,
}

#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl JsonlSink {
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let err = |source| SinkError {
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
            .map_err(|source| SinkError {
                path: self.path.clone(),
                source,
            })
    }

    /// Forces the data to the disk (at shutdown).
    pub fn sync(&self) -> Result<(), SinkError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.sync_data().map_err(|source| SinkError {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
