//! End-to-end latency bookkeeping: what became of each slot's record, from its put to its
//! result (or dead letter) in the gateway's output, timed from the slot's due instant.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::http::Schedule;
use crate::stats::{Outcome, Stats, lock};

/// What became of each slot's record.
const PUT: u8 = 1;
pub(super) const FAILED: u8 = 2;
pub(super) const DROPPED: u8 = 4;
const SEEN: u8 = 8;

/// The run's records by slot, shared by the putters and the readers.
pub(super) struct Tracker {
    schedule: Schedule,
    prefix: String,
    slots: Vec<u8>,
    /// Kinesis records put: a hash of (shard, sequence number) → the slot of its first user
    /// record, for dead letters that carry only their position.
    positions: HashMap<u64, u64>,
    /// Put and not yet seen.
    pub(super) outstanding: u64,
    pub(super) duplicates: u64,
    stats: Arc<Mutex<Stats>>,
}

/// One line of the gateway's output, as far as the run is concerned (read by
/// [`super::tail::parse_line`]).
#[derive(Debug, PartialEq)]
pub(super) enum Seen {
    Scored {
        transaction_id: String,
    },
    DeadLetter {
        reason: String,
        /// From the record's data, when the gateway kept it and it is a transaction.
        transaction_id: Option<String>,
        /// Shard, sequence number and sub-sequence number (position in an aggregate).
        position: Option<(String, String, Option<u64>)>,
    },
}

fn position_key(shard: &str, sequence: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (shard, sequence).hash(&mut hasher);
    hasher.finish()
}

impl Tracker {
    pub(super) fn new(
        schedule: Schedule,
        prefix: String,
        slots: u64,
        stats: Arc<Mutex<Stats>>,
    ) -> Self {
        Self {
            schedule,
            prefix,
            slots: vec![0; usize::try_from(slots).expect("slots fit in memory")],
            positions: HashMap::new(),
            outstanding: 0,
            duplicates: 0,
            stats,
        }
    }

    fn slot_of(&self, transaction_id: &str) -> Option<u64> {
        let slot = transaction_id
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        (slot < self.slots.len() as u64).then_some(slot)
    }

    /// Kinesis accepted `slots` as one record at this position.
    pub(super) fn put(&mut self, slots: Range<u64>, shard: &str, sequence: &str) {
        self.positions
            .insert(position_key(shard, sequence), slots.start);
        for slot in slots {
            let state = &mut self.slots[slot as usize];
            *state |= PUT;
            if *state & SEEN == 0 {
                self.outstanding += 1;
            }
        }
    }

    /// `slots` were given up `at`: `FAILED` (no put succeeded) or `DROPPED` (never sent).
    pub(super) fn given_up(&mut self, slots: Range<u64>, how: u8, at: Instant) {
        let mut stats = lock(&self.stats);
        for slot in slots {
            self.slots[slot as usize] |= how;
            if how == DROPPED {
                stats.record_dropped(at);
            } else {
                stats.record_error(at);
            }
        }
    }

    /// What a line of the gateway's output said, read `at`.
    pub(super) fn seen(&mut self, seen: Seen, at: Instant) {
        let (slot, outcome, ok) = match seen {
            Seen::Scored { transaction_id } => {
                let Some(slot) = self.slot_of(&transaction_id) else {
                    return;
                };
                (slot, "scored".to_owned(), true)
            }
            Seen::DeadLetter {
                reason,
                transaction_id,
                position,
            } => {
                let by_id = transaction_id.and_then(|id| self.slot_of(&id));
                let by_position = || {
                    let (shard, sequence, sub) = position?;
                    let first = self.positions.get(&position_key(&shard, &sequence))?;
                    let slot = first + sub.unwrap_or(0);
                    (slot < self.slots.len() as u64).then_some(slot)
                };
                let Some(slot) = by_id.or_else(by_position) else {
                    return;
                };
                (slot, reason, false)
            }
        };
        let state = &mut self.slots[slot as usize];
        if *state & SEEN != 0 {
            self.duplicates += 1;
            return;
        }
        *state |= SEEN;
        if *state & PUT != 0 {
            self.outstanding -= 1;
        }
        let latency = at.saturating_duration_since(self.schedule.due(slot));
        lock(&self.stats).record_outcome(Outcome::Label(outcome), ok, latency, at);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tracker(slots: u64) -> Tracker {
        let start = Instant::now();
        Tracker::new(
            Schedule::new(start, 100.0),
            "ltrun".into(),
            slots,
            Arc::new(Mutex::new(Stats::new(start))),
        )
    }

    fn scored(id: &str) -> Seen {
        Seen::Scored {
            transaction_id: id.into(),
        }
    }

    /// A dead letter from shard 1, with the transaction id its data held, if any.
    fn dead_letter(reason: &str, id: Option<&str>, sequence: &str, sub: Option<u64>) -> Seen {
        Seen::DeadLetter {
            reason: reason.into(),
            transaction_id: id.map(str::to_owned),
            position: Some(("shardId-000000000001".into(), sequence.into(), sub)),
        }
    }

    #[test]
    fn results_and_dead_letters_find_their_records() {
        let mut t = tracker(10);
        let start = t.schedule.start;
        t.put(0..1, "shardId-000000000000", "1");
        t.put(1..2, "shardId-000000000000", "2");
        // An aggregate of four records, 2..6.
        t.put(2..6, "shardId-000000000001", "77");
        assert_eq!(t.outstanding, 6);
        let at = start + Duration::from_millis(250);
        t.seen(scored("ltrun-0"), at);
        // Another run's result is ignored (a line that is neither never gets here: see
        // `tail::parse_line`).
        t.seen(scored("ltother-1"), at);
        // A dead letter carrying its transaction, and one carrying only its position (the
        // third record of the aggregate).
        t.seen(
            dead_letter("invalid_transaction", Some("ltrun-1"), "2", None),
            at,
        );
        t.seen(dead_letter("model_error", None, "77", Some(2)), at);
        // Seen again: a duplicate, not a second answer.
        t.seen(scored("ltrun-0"), at);
        assert_eq!((t.outstanding, t.duplicates), (3, 1));
        let s = lock(&t.stats).summary(Duration::from_secs(1));
        assert_eq!(s.ok, 1);
        assert_eq!(s.statuses["scored"], 1);
        assert_eq!(s.statuses["invalid_transaction"], 1);
        assert_eq!(s.statuses["model_error"], 1);
        // Slot 0 was due at the start: 250 ms; slot 4 at 40 ms: 210 ms.
        assert!((s.latency_ms.max - 250.0).abs() < 0.5, "{:?}", s.latency_ms);
        assert!((s.latency_ms.p50 - 240.0).abs() < 0.5, "{:?}", s.latency_ms);
        assert_eq!(t.slots[4] & SEEN, SEEN);
    }

    #[test]
    fn a_result_seen_before_its_put_returns_is_not_outstanding() {
        let mut t = tracker(2);
        let at = t.schedule.start;
        t.seen(scored("ltrun-1"), at);
        t.put(1..2, "s", "9");
        t.put(0..1, "s", "8");
        assert_eq!(t.outstanding, 1, "only slot 0 is still awaited");
    }
}
