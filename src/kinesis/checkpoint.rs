//! Shard checkpoints: the last (sequence, sub-sequence) number whose result the sink holds, or
//! that the shard has ended. The file store keeps one JSON document per stream and replaces it
//! atomically (write, fsync, rename), so a crash leaves the previous checkpoint or the new one,
//! never a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::KinesisError;
use super::lease::Leases;

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

/// Where one stream's checkpoints live: a file (one instance reads every shard) or a DynamoDB
/// lease table (each shard is read by the instance holding its lease). Two kinds, so an enum:
/// no boxed futures on the checkpoint path.
#[derive(Debug)]
pub enum Store {
    File(FileCheckpoints),
    Leases(std::sync::Arc<Leases>),
}

impl Store {
    /// The leases, when shards are shared with other instances.
    pub fn leases(&self) -> Option<&std::sync::Arc<Leases>> {
        match self {
            Self::File(_) => None,
            Self::Leases(leases) => Some(leases),
        }
    }

    pub fn get(&self, shard_id: &str) -> Option<Checkpoint> {
        match self {
            Self::File(file) => file.get(shard_id),
            Self::Leases(leases) => leases.get(shard_id),
        }
    }

    /// Saves a checkpoint; with leases, only while this instance holds the shard's lease.
    pub async fn save(&self, shard_id: &str, checkpoint: Checkpoint) -> Result<(), KinesisError> {
        match self {
            Self::File(file) => Ok(file.save(shard_id, checkpoint)?),
            Self::Leases(leases) => leases.save(shard_id, checkpoint).await,
        }
    }

    /// Whether a page's results for `shard_id` may be written now (fencing: never after the
    /// lease may have gone to another instance).
    pub fn may_write(&self, shard_id: &str) -> bool {
        match self {
            Self::File(_) => true,
            Self::Leases(leases) => leases.may_write(shard_id),
        }
    }

    /// The token a reader of `shard_id` stops on (`stop`, or the loss of its lease): a child
    /// of `stop`, which the reader may cancel; `None` when this instance may not read the
    /// shard now.
    pub fn reader_token(
        &self,
        shard_id: &str,
        stop: &CancellationToken,
    ) -> Option<CancellationToken> {
        match self {
            Self::File(_) => Some(stop.child_token()),
            Self::Leases(leases) => {
                let lease = leases.start_reading(shard_id)?;
                let reader = stop.child_token();
                let stops = reader.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = lease.cancelled() => stops.cancel(),
                        () = stops.cancelled() => {}
                    }
                });
                Some(reader)
            }
        }
    }

    /// The reader of `shard_id` stopped.
    pub fn reader_stopped(&self, shard_id: &str) {
        if let Self::Leases(leases) = self {
            leases.stopped_reading(shard_id);
        }
    }
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

impl FileCheckpoints {
    pub fn get(&self, shard_id: &str) -> Option<Checkpoint> {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(shard_id)
            .cloned()
    }

    pub fn save(&self, shard_id: &str, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
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
