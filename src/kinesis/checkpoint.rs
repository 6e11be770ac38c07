//! Shard checkpoints: the last (sequence, sub-sequence) number whose result the sink holds, or
//! that the shard has ended. The file store keeps one JSON document per stream and replaces it
//! atomically (write, fsync, rename), so a crash leaves the previous checkpoint or the new one,
//! never a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Where a shard's consumer has got to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last record done, absent when the shard ended before any record.
    pub sequence_number: Option<String>,
    /// For an aggregated record, the last user record done inside it.
    pub sub_sequence_number: Option<u64>,
    /// The shard reached its end and every record is done: children may start.
    #[serde(default)]
    pub ended: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint file {path}: {source}")]
pub struct CheckpointError {
    path: PathBuf,
    source: std::io::Error,
}

/// Checkpoints of one stream's shards.
pub trait CheckpointStore: Send + Sync + 'static {
    fn get(&self, shard_id: &str) -> Option<Checkpoint>;
    fn save(&self, shard_id: &str, checkpoint: Checkpoint) -> Result<(), CheckpointError>;
}

/// Checkpoints in `dir/<stream>.json`.
#[derive(Debug)]
pub struct FileCheckpoints {
    path: PathBuf,
    shards: Mutex<BTreeMap<String, Checkpoint>>,
}

impl FileCheckpoints {
    pub fn open(dir: &Path, stream: &str) -> Result<Self, CheckpointError> {
        let file_name: String = stream
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{file_name}.json"));
        let err = |source| CheckpointError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let shards = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err(e)),
        };
        Ok(Self {
            path,
            shards: Mutex::new(shards),
        })
    }

    fn write(&self, shards: &BTreeMap<String, Checkpoint>) -> Result<(), CheckpointError> {
        let err = |source| CheckpointError {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes =
            serde_json::to_vec_pretty(shards).expect("checkpoints serialize. This is a bug.");
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        // The rename itself must reach the disk too.
        if let Some(dir) = self.path.parent()
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl CheckpointStore for FileCheckpoints {
    fn get(&self, shard_id: &str) -> Option<Checkpoint> {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(shard_id)
            .cloned()
    }

    fn save(&self, shard_id: &str, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        // Held across the write so that two shards' saves cannot interleave their files.
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards.insert(shard_id.to_owned(), checkpoint);
        self.write(&shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("infergate-ckpt-{}", std::process::id()));
        let store = FileCheckpoints::open(&dir, "arn:aws:kinesis:us-east-1:1:stream/tx").unwrap();
        assert_eq!(store.get("shardId-000000000000"), None);
        let cp = Checkpoint {
            sequence_number: Some("4960".into()),
            sub_sequence_number: Some(3),
            ended: false,
        };
        store.save("shardId-000000000000", cp.clone()).unwrap();
        store
            .save(
                "shardId-000000000001",
                Checkpoint {
                    sequence_number: None,
                    sub_sequence_number: None,
                    ended: true,
                },
            )
            .unwrap();
        let again = FileCheckpoints::open(&dir, "arn:aws:kinesis:us-east-1:1:stream/tx").unwrap();
        assert_eq!(again.get("shardId-000000000000"), Some(cp));
        assert!(again.get("shardId-000000000001").unwrap().ended);
        assert!(
            !dir.join("arn_aws_kinesis_us-east-1_1_stream_tx.json.tmp")
                .exists()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
