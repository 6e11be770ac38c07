use std::collections::HashSet;

use super::plan::{Plan, plan};
use super::*;

fn lease(key: &str, owner: Option<&str>) -> Lease {
    Lease {
        key: key.to_owned(),
        owner: owner.map(str::to_owned),
        counter: 1,
        checkpoint: "TRIM_HORIZON".to_owned(),
        sub_sequence: 0,
        parents: Vec::new(),
        checkpoint_owner: None,
    }
}

fn keys(list: &[&str]) -> HashSet<String> {
    list.iter().map(|k| (*k).to_owned()).collect()
}

fn shards(n: usize, owner: Option<&str>) -> Vec<Lease> {
    (0..n)
        .map(|i| lease(&format!("shard-{i}"), owner))
        .collect()
}

#[test]
fn a_lone_worker_takes_every_unowned_lease() {
    let leases = shards(8, None);
    let got = plan("a", &leases, &keys(&[]), &keys(&[]), 0);
    assert_eq!(got.take.len(), 8);
    assert_eq!(got.steal, None);
    // ... unless capped.
    assert_eq!(plan("a", &leases, &keys(&[]), &keys(&[]), 3).take.len(), 3);
}

#[test]
fn a_worker_takes_only_its_share_of_what_is_free() {
    // b holds 3 of 8: two workers, so a's share is 4, all of them free ones.
    let mut leases = shards(8, None);
    for l in leases.iter_mut().take(3) {
        l.owner = Some("b".into());
    }
    let got = plan("a", &leases, &keys(&[]), &keys(&[]), 0);
    assert_eq!(got.take.len(), 4);
    assert!(
        got.take
            .iter()
            .all(|k| !["shard-0", "shard-1", "shard-2"].contains(&k.as_str()))
    );
}

#[test]
fn expired_leases_are_free_and_their_owner_is_not_a_worker() {
    // b's four leases have not moved for the failover time: b is gone, a takes them all.
    let leases = shards(4, Some("b"));
    let all = keys(&["shard-0", "shard-1", "shard-2", "shard-3"]);
    let got = plan("a", &leases, &all, &keys(&[]), 0);
    assert_eq!(got.take.len(), 4);
    // Not yet expired: nothing is free, and b holds 4 > a's share of 2: steal one, only one.
    let got = plan("a", &leases, &keys(&[]), &keys(&[]), 0);
    assert!(got.take.is_empty());
    assert!(got.steal.is_some());
}

#[test]
fn no_steal_when_the_spread_is_even_within_one() {
    // 8 shards, 3 workers: 3/3/2 is even; the worker with 2 steals nothing.
    let mut leases = shards(8, None);
    for (i, l) in leases.iter_mut().enumerate() {
        l.owner = Some(["a", "b", "c"][i % 3].into());
    }
    let held_by_c: HashSet<String> = leases
        .iter()
        .filter(|l| l.owner.as_deref() == Some("c"))
        .map(|l| l.key.clone())
        .collect();
    assert_eq!(held_by_c.len(), 2);
    assert_eq!(
        plan("c", &leases, &keys(&[]), &held_by_c, 0),
        Plan::default()
    );
}

#[test]
fn a_restarted_worker_resumes_its_own_leases_first() {
    let mut leases = shards(4, None);
    leases[2].owner = Some("a".into());
    let got = plan("a", &leases, &keys(&[]), &keys(&[]), 1);
    assert_eq!(got.take, ["shard-2"]);
}

#[test]
fn children_wait_for_every_parent_to_end() {
    let mut parent = lease("parent", Some("b"));
    let mut child = lease("child", None);
    child.parents = vec!["parent".into(), "gone".into()];
    let plan_for = |parent: &Lease| {
        plan(
            "a",
            &[parent.clone(), child.clone()],
            &keys(&[]),
            &keys(&[]),
            0,
        )
    };
    assert!(plan_for(&parent).take.is_empty());
    parent.checkpoint = SHARD_END.into();
    assert_eq!(plan_for(&parent).take, ["child"]);
    // Ended leases are never taken.
    assert!(!plan_for(&parent).take.contains(&"parent".to_owned()));
}

#[test]
fn a_lease_being_handed_over_waits_for_its_previous_owner_unless_that_one_is_gone() {
    // b stole shard-0 from a: b counts it as its own but does not take it while a finishes.
    let mut leases = shards(2, Some("a"));
    leases[0].owner = Some("b".into());
    leases[0].checkpoint_owner = Some("a".into());
    let got = plan("b", &leases, &keys(&[]), &keys(&[]), 0);
    assert_eq!(got, Plan::default(), "b has its share, pending");
    // a's writes stopped for the failover time: b takes it.
    let got = plan("b", &leases, &keys(&["shard-0"]), &keys(&[]), 0);
    assert_eq!(got.take, ["shard-0"]);
    // c, a third worker, never steals a lease being handed over.
    let mut leases = shards(3, Some("a"));
    leases[0].owner = Some("b".into());
    leases[0].checkpoint_owner = Some("a".into());
    leases[1].checkpoint_owner = Some("b".into());
    leases[1].owner = Some("a".into());
    let got = plan("c", &leases, &keys(&[]), &keys(&[]), 0);
    assert_ne!(got.steal.as_deref(), Some("shard-0"));
    assert_ne!(got.steal.as_deref(), Some("shard-1"));
}

#[test]
fn checkpoints_map_to_kcl_values_and_back() {
    let cases = [
        (
            Checkpoint {
                sequence_number: None,
                sub_sequence_number: None,
                ended: false,
            },
            ("TRIM_HORIZON", 0),
        ),
        (
            Checkpoint {
                sequence_number: Some("4960".into()),
                sub_sequence_number: None,
                ended: false,
            },
            ("4960", 0),
        ),
        (
            Checkpoint {
                sequence_number: Some("4960".into()),
                sub_sequence_number: Some(3),
                ended: false,
            },
            ("4960", 3),
        ),
        (
            Checkpoint {
                sequence_number: None,
                sub_sequence_number: None,
                ended: true,
            },
            (SHARD_END, 0),
        ),
    ];
    for (checkpoint, (value, sub)) in cases {
        assert_eq!(
            table_values(&checkpoint, "TRIM_HORIZON"),
            (value.to_owned(), sub)
        );
        let mut row = lease("s", None);
        row.checkpoint = value.into();
        row.sub_sequence = sub;
        assert_eq!(row.to_checkpoint(), checkpoint);
    }
    for sentinel in ["LATEST", "AT_TIMESTAMP"] {
        let mut row = lease("s", None);
        row.checkpoint = sentinel.into();
        assert_eq!(row.to_checkpoint().sequence_number, None);
    }
}
