//! Shard leases in a DynamoDB table, as KCL keeps them, so that several instances share a
//! stream: each shard is read by the one instance holding its lease.
//!
//! Every `failover_ms / 3` a worker renews the leases it holds (a conditional write that moves
//! the counter), reads the table, and takes free leases toward an even spread (see [`plan`]).
//! A lease is expired when its counter has not moved for `failover_ms` of *this* worker's
//! monotonic clock: no wall clocks are compared across machines. Checkpoints are fenced: each
//! is conditioned on the owner and counter, and a worker writes a page's results only while
//! its last renewal is younger than the failover time, so a paused or partitioned worker stops
//! before anyone else may have taken its shard. On shutdown the leases are released (owner
//! removed), so that the other instances take them on their next cycle. A lease stolen
//! toward an even spread is handed over the same way: its previous owner stops at a page
//! boundary, checkpoints, and only then does the new owner read (KCL 3's `checkpointOwner`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::KinesisError;
use super::checkpoint::Checkpoint;
use crate::config::{InitialPosition, LeasesConfig};
pub use table::{NewLease, Table, Written};

mod cycle;
mod plan;
mod table;
#[cfg(test)]
mod tests;

/// The checkpoint of an ended shard, as KCL writes it.
pub const SHARD_END: &str = "SHARD_END";
const SENTINELS: [&str; 3] = ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"];

/// One row of the lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard id.
    pub key: String,
    pub owner: Option<String>,
    pub counter: u64,
    /// A sequence number, [`SHARD_END`], or where the shard starts (`TRIM_HORIZON`, ...).
    pub checkpoint: String,
    pub sub_sequence: u64,
    pub parents: Vec<String>,
    /// While a stolen lease is handed over: the previous owner, who finishes its page in hand
    /// and checkpoints it before the new owner (`owner`) reads.
    pub checkpoint_owner: Option<String>,
}

impl Lease {
    pub fn ended(&self) -> bool {
        self.checkpoint == SHARD_END
    }

    /// The checkpoint in the consumer's terms.
    pub fn to_checkpoint(&self) -> Checkpoint {
        if self.ended() {
            return Checkpoint {
                sequence_number: None,
                sub_sequence_number: None,
                ended: true,
            };
        }
        let started = !self.checkpoint.is_empty() && !SENTINELS.contains(&self.checkpoint.as_str());
        Checkpoint {
            sequence_number: started.then(|| self.checkpoint.clone()),
            sub_sequence_number: (self.sub_sequence > 0).then_some(self.sub_sequence),
            ended: false,
        }
    }
}

/// The table's `checkpoint` value for a shard not read yet.
pub fn sentinel(position: InitialPosition) -> &'static str {
    match position {
        InitialPosition::TrimHorizon => "TRIM_HORIZON",
        InitialPosition::Latest => "LATEST",
        InitialPosition::AtTimestamp => "AT_TIMESTAMP",
    }
}

/// The `checkpoint` and `checkpointSubSequenceNumber` values for a checkpoint.
fn table_values(checkpoint: &Checkpoint, initial: &'static str) -> (String, u64) {
    if checkpoint.ended {
        return (SHARD_END.to_owned(), 0);
    }
    match &checkpoint.sequence_number {
        Some(sequence) => (
            sequence.clone(),
            checkpoint.sub_sequence_number.unwrap_or(0),
        ),
        None => (initial.to_owned(), 0),
    }
}

/// A lease this worker holds.
#[derive(Debug)]
pub struct Held {
    /// The counter the last write left, behind an async lock that serializes this lease's
    /// writes (renew, checkpoint, release): each expects the counter the previous one left.
    counter: tokio::sync::Mutex<u64>,
    checkpoint: Mutex<Checkpoint>,
    /// Until when this worker may write results for the shard: the last successful renewal's
    /// send time plus the failover time. No one else can have taken the lease before then.
    valid_until: Mutex<Instant>,
    /// Cancelled when the shard's reader must stop: the lease is lost, being handed over, or
    /// ended. (Not a child of the consumer's stop: at shutdown a reader still checkpoints its
    /// page in hand.)
    pub token: CancellationToken,
    /// Taken by someone else: nothing more may be written.
    lost: AtomicBool,
    /// Stolen: the page in hand may still be checkpointed, then the hand-off ends.
    handing_off: AtomicBool,
    /// A reader of the shard is running.
    reading: AtomicBool,
    /// The last renewal found the lease changed: the next table read says by whom.
    conflict: AtomicBool,
}

impl Held {
    fn new(counter: u64, checkpoint: Checkpoint, valid_until: Instant) -> Self {
        Self {
            counter: tokio::sync::Mutex::new(counter),
            checkpoint: Mutex::new(checkpoint),
            valid_until: Mutex::new(valid_until),
            token: CancellationToken::new(),
            lost: AtomicBool::new(false),
            handing_off: AtomicBool::new(false),
            reading: AtomicBool::new(false),
            conflict: AtomicBool::new(false),
        }
    }

    /// Whether results may be written for the shard now.
    fn writable(&self) -> bool {
        !self.lost.load(Ordering::Relaxed) && Instant::now() < *lock(&self.valid_until)
    }

    /// Whether a reader may start now.
    fn readable(&self) -> bool {
        self.writable() && !self.token.is_cancelled()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A counter value and when this worker first saw it.
#[derive(Debug)]
struct Seen {
    counter: u64,
    owner: Option<String>,
    since: Instant,
}

/// The leases of one stream, from one worker's side.
#[derive(Debug)]
pub struct Leases {
    table: Table,
    worker: String,
    failover: Duration,
    max_per_worker: usize,
    initial: &'static str,
    held: Mutex<HashMap<String, Arc<Held>>>,
    /// The table as last read.
    rows: Mutex<HashMap<String, Lease>>,
    seen: Mutex<HashMap<String, Seen>>,
    /// The shards the stream listed last, and when that listing started (known once the
    /// consumer has listed them).
    listed: Mutex<Option<(HashSet<String>, Instant)>>,
    /// Leases this worker stole and waits to be handed over.
    stealing: Mutex<HashSet<String>>,
    /// Wakes the consumer's discovery loop when a lease is taken.
    pub taken: tokio::sync::Notify,
    /// Wakes the lease cycle early: leases were created, or a reader of a lease being handed
    /// over stopped.
    pub wake: tokio::sync::Notify,
}

impl Leases {
    pub fn new(
        table: Table,
        worker: String,
        config: &LeasesConfig,
        initial: InitialPosition,
    ) -> Self {
        Self {
            table,
            worker,
            failover: Duration::from_millis(config.failover_ms),
            max_per_worker: config.max_leases_per_worker,
            initial: sentinel(initial),
            held: Mutex::new(HashMap::new()),
            rows: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            listed: Mutex::new(None),
            stealing: Mutex::new(HashSet::new()),
            taken: tokio::sync::Notify::new(),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// How often leases are renewed and taken.
    pub fn cycle_every(&self) -> Duration {
        self.failover / 3
    }

    /// A reader of `shard_id` starts, if this worker holds its lease and may read it: the
    /// token it stops on.
    pub fn start_reading(&self, shard_id: &str) -> Option<CancellationToken> {
        let held = lock(&self.held)
            .get(shard_id)
            .filter(|h| h.readable())
            .cloned()?;
        held.reading.store(true, Ordering::Relaxed);
        Some(held.token.clone())
    }

    /// The reader of `shard_id` stopped: a hand-off it held up can end now.
    pub fn stopped_reading(&self, shard_id: &str) {
        if let Some(held) = lock(&self.held).get(shard_id) {
            held.reading.store(false, Ordering::Relaxed);
            if held.handing_off.load(Ordering::Relaxed) {
                self.wake.notify_one();
            }
        }
    }

    /// The shards this worker holds leases for.
    pub fn held_shards(&self) -> Vec<String> {
        let mut shards: Vec<String> = lock(&self.held).keys().cloned().collect();
        shards.sort();
        shards
    }

    /// Whether a page's results for `shard_id` may be written now.
    pub fn may_write(&self, shard_id: &str) -> bool {
        lock(&self.held).get(shard_id).is_some_and(|h| h.writable())
    }

    /// The checkpoint of `shard_id`: this worker's own for a lease it holds, else the table's
    /// as last read.
    pub fn get(&self, shard_id: &str) -> Option<Checkpoint> {
        if let Some(held) = lock(&self.held).get(shard_id) {
            return Some(lock(&held.checkpoint).clone());
        }
        lock(&self.rows).get(shard_id).map(Lease::to_checkpoint)
    }

    /// Writes the checkpoint of a lease this worker holds (or is handing over), fenced by its
    /// owner and counter. A lease found taken is dropped (its reader stops) and the write
    /// refused.
    pub async fn save(&self, shard_id: &str, checkpoint: Checkpoint) -> Result<(), KinesisError> {
        let lost = || KinesisError::LeaseLost {
            shard_id: shard_id.to_owned(),
        };
        let held = lock(&self.held).get(shard_id).cloned().ok_or_else(lost)?;
        let mut counter = held.counter.lock().await;
        if !held.writable() {
            return Err(lost());
        }
        let (value, sub) = table_values(&checkpoint, self.initial);
        match self
            .table
            .checkpoint(shard_id, &self.worker, *counter, &value, sub)
            .await?
        {
            Written::Done => {
                *counter += 1;
                if let Some(row) = lock(&self.rows).get_mut(shard_id) {
                    (row.checkpoint, row.sub_sequence) = (value, sub);
                }
                let ended = checkpoint.ended;
                *lock(&held.checkpoint) = checkpoint;
                if ended && !held.handing_off.load(Ordering::Relaxed) {
                    // An ended lease is kept (its children wait for it) but not renewed.
                    self.drop_held(shard_id, "ended");
                }
                Ok(())
            }
            Written::Conflict => {
                drop(counter);
                self.lose(shard_id);
                Err(lost())
            }
        }
    }

    /// Creates the leases of the listed shards that have none (a conditional put, so two
    /// workers never both create one), in the order given (parents first). A shard that is
    /// the parent of a lease in the table is not given a lease again: its children started
    /// after it ended.
    pub async fn create_missing(
        &self,
        shards: &[(String, NewLease)],
        listing_started: Instant,
    ) -> Result<(), KinesisError> {
        let listed = shards.iter().map(|(id, _)| id.clone()).collect();
        *lock(&self.listed) = Some((listed, listing_started));
        let mut created = false;
        for (shard_id, new) in shards {
            let known = {
                let rows = lock(&self.rows);
                rows.contains_key(shard_id)
                    || rows.values().any(|row| row.parents.contains(shard_id))
            };
            if known {
                continue;
            }
            if let Written::Done = self.table.create_lease(shard_id, self.initial, new).await? {
                tracing::info!(shard = %shard_id, "created the shard's lease");
                created = true;
                for parent in &new.parents {
                    self.table.add_child(parent, shard_id).await?;
                }
            }
        }
        if created {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The lease was taken by someone else (or could not be renewed in time): its reader
    /// stops before writing anything more.
    fn lose(&self, shard_id: &str) {
        if let Some(held) = self.drop_held(shard_id, "lost") {
            held.lost.store(true, Ordering::Relaxed);
            metrics::counter!("infergate_kinesis_lease_losses_total").increment(1);
            tracing::warn!(shard = %shard_id, "lost the shard's lease; its reader stops");
        }
    }

    fn drop_held(&self, shard_id: &str, why: &str) -> Option<Arc<Held>> {
        let held = lock(&self.held).remove(shard_id)?;
        held.token.cancel();
        tracing::debug!(shard = %shard_id, why, "no longer holding the lease");
        Some(held)
    }
}

/// This instance's default worker id: host name, process id and a random suffix.
pub fn default_worker_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "infergate".to_owned());
    let suffix = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{host}:{}:{:06x}", std::process::id(), suffix & 0xff_ffff)
}
