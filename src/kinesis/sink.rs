//! Where stream results go: JSON lines appended to a file, shared by every shard, each shard's
//! lines written (and flushed) as one block so that a shard's order is kept.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
            .open(path)
            .map_err(err)?;
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
