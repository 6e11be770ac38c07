//! Which leases a worker takes in one cycle: pure, so that every case is a unit test.
//!
//! KCL's rules: expired and unowned leases first, toward an even spread (⌈leases / workers⌉,
//! the workers being the distinct live owners seen, this one included), at most
//! `max_leases_per_worker`; when none is free and this worker has fewer than its share, one
//! lease is stolen from the most loaded worker, if that one holds more than its share (a
//! steal is a hand-off: see [`super::table::Table::steal`]). A child
//! shard's lease is taken only once every parent's lease has ended (or is gone).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::Lease;

/// What to try to take this cycle (each take is a conditional write that can lose a race).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub take: Vec<String>,
    pub steal: Option<String>,
}

/// `expired`: the keys of leases whose counter has not moved for the failover time, as this
/// worker has seen them; `held`: the leases this worker holds in memory.
pub fn plan(
    me: &str,
    leases: &[Lease],
    expired: &HashSet<String>,
    held: &HashSet<String>,
    max_per_worker: usize,
) -> Plan {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let ready: Vec<&Lease> = leases
        .iter()
        .filter(|l| !l.ended())
        .filter(|l| {
            l.parents
                .iter()
                .all(|p| by_key.get(p.as_str()).is_none_or(|parent| parent.ended()))
        })
        .collect();
    if ready.is_empty() {
        return Plan::default();
    }
    // Live owners and what they hold.
    let mut load: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    load.insert(me, Vec::new());
    for lease in &ready {
        if let Some(owner) = lease.owner.as_deref()
            && !expired.contains(&lease.key)
        {
            load.entry(owner).or_default().push(lease);
        }
    }
    let workers = load.len();
    let mut target = ready.len().div_ceil(workers);
    if max_per_worker > 0 {
        target = target.min(max_per_worker);
    }
    // Held, or being handed over to this worker.
    let mine = ready
        .iter()
        .filter(|l| l.owner.as_deref() == Some(me))
        .filter(|l| {
            held.contains(&l.key) || (l.checkpoint_owner.is_some() && !expired.contains(&l.key))
        })
        .count();
    let Some(need) = target.checked_sub(mine).filter(|n| *n > 0) else {
        return Plan::default();
    };
    // Free: unowned, expired, or ours in the table but not in memory (a restart with the same
    // worker id resumes those at once). Ours first, then unowned, then expired; within each,
    // an order of this worker's own, so that workers starting together try different leases.
    let rank = |l: &Lease| match l.owner.as_deref() {
        Some(owner) if owner == me => 0,
        None => 1,
        Some(_) => 2,
    };
    let mut free: Vec<&Lease> = ready
        .iter()
        .copied()
        .filter(|l| !held.contains(&l.key))
        // A lease being handed over waits for its previous owner, unless that one is gone.
        .filter(|l| l.checkpoint_owner.is_none() || expired.contains(&l.key))
        .filter(|l| match l.owner.as_deref() {
            None => true,
            Some(owner) => owner == me || expired.contains(&l.key),
        })
        .collect();
    free.sort_by_key(|l| (rank(l), spread(me, &l.key)));
    if !free.is_empty() {
        return Plan {
            take: free.into_iter().take(need).map(|l| l.key.clone()).collect(),
            steal: None,
        };
    }
    // Nothing free: steal one from the most loaded worker holding more than its share.
    let victim = load
        .iter()
        .filter(|(owner, _)| **owner != me)
        .max_by_key(|(owner, leases)| (leases.len(), spread(me, owner)))
        .filter(|(_, leases)| leases.len() > target);
    Plan {
        take: Vec::new(),
        steal: victim.and_then(|(_, leases)| {
            leases
                .iter()
                .filter(|l| l.checkpoint_owner.is_none())
                .min_by_key(|l| spread(me, &l.key))
                .map(|l| l.key.clone())
        }),
    }
}

fn spread(me: &str, key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (me, key).hash(&mut hasher);
    hasher.finish()
}
