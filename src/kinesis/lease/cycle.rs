//! One worker's lease cycle: renew, read the table, notice what others took, take or steal
//! toward an even spread, end the hand-offs whose readers have stopped, clean up; and the
//! release of everything at shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::table::Written;
use super::{Held, Lease, Leases, Seen, lock, plan};
use crate::kinesis::KinesisError;

impl Leases {
    /// One cycle. From `stop` on, nothing more is taken: the leases held are only renewed
    /// while their readers finish.
    pub async fn cycle(&self, stop: &CancellationToken) -> Result<(), KinesisError> {
        self.renew_all().await;
        let rows = self.table.scan().await?;
        let expired = self.observe(&rows, Instant::now());
        *lock(&self.rows) = rows.iter().map(|l| (l.key.clone(), l.clone())).collect();
        for lease in &rows {
            self.notice(lease);
        }
        self.finish_handoffs().await;
        metrics::gauge!("infergate_kinesis_leases_owned").set(lock(&self.held).len() as f64);
        if stop.is_cancelled() {
            return Ok(());
        }
        let held: HashSet<String> = lock(&self.held).keys().cloned().collect();
        let plan = plan::plan(&self.worker, &rows, &expired, &held, self.max_per_worker);
        let by_key: HashMap<&str, &Lease> = rows.iter().map(|l| (l.key.as_str(), l)).collect();
        for key in &plan.take {
            let lease = by_key[key.as_str()];
            let reason = match lease.owner.as_deref() {
                None if lease.counter == 0 => "new",
                None => "released",
                Some(owner) if owner == self.worker && lease.checkpoint_owner.is_some() => {
                    "expired"
                }
                Some(owner) if owner == self.worker && lock(&self.stealing).contains(key) => {
                    "stolen"
                }
                Some(owner) if owner == self.worker => "resumed",
                Some(_) => "expired",
            };
            self.take(lease, reason).await?;
            lock(&self.stealing).remove(key);
        }
        if let Some(key) = &plan.steal {
            let lease = by_key[key.as_str()];
            if let Written::Done = self.table.steal(lease, &self.worker).await? {
                if let Some(row) = lock(&self.rows).get_mut(key) {
                    row.checkpoint_owner = row.owner.replace(self.worker.clone());
                    row.counter += 1;
                }
                lock(&self.stealing).insert(key.clone());
                tracing::info!(
                    shard = %key, from = lease.owner.as_deref().unwrap_or("-"),
                    "stealing the shard's lease toward an even spread; its owner hands it over"
                );
                metrics::counter!("infergate_kinesis_lease_steals_total").increment(1);
            }
        }
        self.clean_up(&rows).await
    }

    /// What the table says of a lease this worker holds: taken by another (lost), stolen
    /// (hand it over), or ours still, with a renewal that found it changed (resume it anew).
    fn notice(&self, lease: &Lease) {
        let Some(held) = lock(&self.held).get(&lease.key).cloned() else {
            return;
        };
        let ours = lease.owner.as_deref() == Some(self.worker.as_str());
        if lease.checkpoint_owner.as_deref() == Some(self.worker.as_str()) && !ours {
            if !held.handing_off.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    shard = %lease.key, to = lease.owner.as_deref().unwrap_or("-"),
                    "handing the shard's lease over after the page in hand"
                );
                held.token.cancel();
            }
        } else if !ours || held.conflict.load(Ordering::Relaxed) {
            self.lose(&lease.key);
        }
    }

    /// Records counter movements; the keys of leases expired as of `now`.
    fn observe(&self, rows: &[Lease], now: Instant) -> HashSet<String> {
        let mut seen = lock(&self.seen);
        seen.retain(|key, _| rows.iter().any(|l| &l.key == key));
        let mut expired = HashSet::new();
        for lease in rows {
            let entry = seen.entry(lease.key.clone()).or_insert_with(|| Seen {
                counter: lease.counter,
                owner: lease.owner.clone(),
                since: now,
            });
            if entry.counter != lease.counter || entry.owner != lease.owner {
                *entry = Seen {
                    counter: lease.counter,
                    owner: lease.owner.clone(),
                    since: now,
                };
            }
            if lease.owner.is_some() && now.duration_since(entry.since) >= self.failover {
                expired.insert(lease.key.clone());
            }
        }
        expired
    }

    async fn take(&self, lease: &Lease, reason: &'static str) -> Result<(), KinesisError> {
        let sent = Instant::now();
        let Some(now) = self.table.take(lease, &self.worker).await? else {
            tracing::debug!(shard = %lease.key, "lost the race for a lease");
            return Ok(());
        };
        tracing::info!(
            shard = %lease.key, reason, previous_owner = lease.owner.as_deref().unwrap_or("-"),
            "took the shard's lease"
        );
        metrics::counter!("infergate_kinesis_lease_takes_total", "reason" => reason).increment(1);
        let held = Held::new(now.counter, now.to_checkpoint(), sent + self.failover);
        lock(&self.held).insert(lease.key.clone(), Arc::new(held));
        self.taken.notify_one();
        Ok(())
    }

    async fn renew_all(&self) {
        let held: Vec<(String, Arc<Held>)> = lock(&self.held)
            .iter()
            .map(|(k, h)| (k.clone(), Arc::clone(h)))
            .collect();
        for (shard_id, held) in held {
            if held.handing_off.load(Ordering::Relaxed) {
                continue;
            }
            let mut counter = held.counter.lock().await;
            let sent = Instant::now();
            match self.table.renew(&shard_id, &self.worker, *counter).await {
                Ok(Written::Done) => {
                    *counter += 1;
                    *lock(&held.valid_until) = sent + self.failover;
                }
                Ok(Written::Conflict) => {
                    // Stolen or taken: the reader stops at its page boundary, and the table
                    // read that follows says which.
                    held.conflict.store(true, Ordering::Relaxed);
                    held.token.cancel();
                }
                Err(e) => {
                    metrics::counter!("infergate_kinesis_lease_renew_failures_total").increment(1);
                    tracing::warn!(shard = %shard_id, error = %e, "cannot renew the shard's lease");
                    if !held.writable() {
                        drop(counter);
                        self.lose(&shard_id);
                    }
                }
            }
        }
    }

    /// Ends the hand-off of every stolen lease whose reader has stopped (its page in hand is
    /// checkpointed), so that the new owner reads on its next cycle.
    async fn finish_handoffs(&self) {
        let done: Vec<String> = lock(&self.held)
            .iter()
            .filter(|(_, h)| {
                h.handing_off.load(Ordering::Relaxed) && !h.reading.load(Ordering::Relaxed)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for shard_id in done {
            self.finish_handoff(&shard_id).await;
        }
    }

    async fn finish_handoff(&self, shard_id: &str) {
        match self.table.finish_handoff(shard_id, &self.worker).await {
            Ok(written) => {
                if let Written::Done = written {
                    metrics::counter!("infergate_kinesis_lease_handoffs_total").increment(1);
                    tracing::info!(shard = %shard_id, "handed the shard's lease over");
                }
                // Done, or the new owner took it already (it judged this worker gone).
                self.drop_held(shard_id, "handed over");
            }
            Err(e) => {
                tracing::warn!(shard = %shard_id, error = %e, "cannot hand the lease over yet");
            }
        }
    }

    /// Gives up every held lease (at shutdown, once the readers have checkpointed): released
    /// (owner removed), or for a lease being handed over, the hand-off ended; a lease being
    /// handed over to this worker goes back to its previous owner.
    pub async fn release_all(&self) {
        let held: Vec<(String, Arc<Held>)> = lock(&self.held)
            .iter()
            .map(|(k, h)| (k.clone(), Arc::clone(h)))
            .collect();
        for (shard_id, held) in held {
            held.token.cancel();
            if held.handing_off.load(Ordering::Relaxed) {
                self.finish_handoff(&shard_id).await;
                continue;
            }
            let counter = held.counter.lock().await;
            match self.table.release(&shard_id, &self.worker, *counter).await {
                Ok(Written::Done) => {
                    metrics::counter!("infergate_kinesis_lease_releases_total").increment(1);
                    tracing::info!(shard = %shard_id, "released the shard's lease");
                }
                Ok(Written::Conflict) => {}
                Err(e) => tracing::warn!(shard = %shard_id, error = %e, "cannot release the lease"),
            }
            drop(counter);
            self.drop_held(&shard_id, "released");
        }
        let pending: Vec<Lease> = lock(&self.rows)
            .values()
            .filter(|l| l.owner.as_deref() == Some(self.worker.as_str()))
            .filter(|l| l.checkpoint_owner.is_some())
            .cloned()
            .collect();
        for lease in pending {
            if let Err(e) = self.table.cancel_steal(&lease, &self.worker).await {
                tracing::warn!(shard = %lease.key, error = %e, "cannot give a stolen lease back");
            }
        }
    }

    /// Deletes the ended leases of shards the stream no longer lists (past its retention), so
    /// that the table does not grow with every reshard. A listed shard keeps its lease: with
    /// it gone, the shard would look new. A lease counts as unlisted only for a listing that
    /// began after this worker saw the lease as it is, so that a listing older than a reshard
    /// (its shards unknown to it yet) deletes nothing.
    async fn clean_up(&self, rows: &[Lease]) -> Result<(), KinesisError> {
        let Some((listed, listing_started)) = lock(&self.listed).clone() else {
            return Ok(());
        };
        let seen_before_listing = |key: &str| {
            lock(&self.seen)
                .get(key)
                .is_some_and(|seen| seen.since < listing_started)
        };
        for lease in rows
            .iter()
            .filter(|l| l.ended() && !listed.contains(&l.key) && seen_before_listing(&l.key))
        {
            if let Written::Done = self.table.delete_ended(&lease.key).await? {
                tracing::info!(shard = %lease.key, "deleted the lease of a shard past retention");
            }
        }
        Ok(())
    }
}
