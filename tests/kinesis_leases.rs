//! Several gateway processes sharing one stream through a DynamoDB lease table (kinesalite and
//! dynalite): each shard read by one instance, an even spread, a graceful hand-off on SIGTERM,
//! failover after kill -9, and fencing of an instance that was paused past the failover time.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::peers::{Dynalite, Kinesalite};
use common::stream::{Dirs, create_stream, lines, put, transactions};
use serde_json::Value;

const TABLE: &str = "infergate-leases";
const PAGE: usize = 100;

/// One gateway process of the fleet, with its own results and dead-letter files.
struct Instance {
    worker: String,
    child: Child,
    scored: PathBuf,
}

impl Instance {
    fn start(
        dirs: &Dirs,
        worker: &str,
        stream: &str,
        kinesalite: &Kinesalite,
        dynalite: &Dynalite,
        failover_ms: u64,
    ) -> Self {
        let scored = dirs.root.join(format!("{worker}-scored.jsonl"));
        let config = dirs.root.join(format!("{worker}.toml"));
        std::fs::write(
            &config,
            format!(
                "[kinesis]\nstream = \"{stream}\"\nregion = \"us-east-1\"\n\
                 endpoint_url = \"{}\"\nmax_records = {PAGE}\npoll_interval_ms = 50\n\
                 shard_discovery_ms = 500\nworker_id = \"{worker}\"\n\
                 checkpoint = {{ kind = \"dynamodb\", table = \"{TABLE}\", create = true, \
                 endpoint_url = \"{}\" }}\n\
                 sink = {{ kind = \"file\", path = \"{}\" }}\n\
                 dead_letter = {{ kind = \"file\", path = \"{}\" }}\n\
                 [kinesis.leases]\nfailover_ms = {failover_ms}\n",
                kinesalite.url,
                dynalite.url,
                scored.display(),
                dirs.root.join(format!("{worker}-dead.jsonl")).display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dirs.root.join(format!("{worker}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_infergate"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .env("AWS_ACCESS_KEY_ID", "AKIDKINESISTEST")
            .env("AWS_SECRET_ACCESS_KEY", "kinesis-test-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "infergate=info")
            .env_remove("AWS_PROFILE")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the gateway binary starts");
        Self {
            worker: worker.to_owned(),
            child,
            scored,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// SIGTERM, and the time it took to exit.
    fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        self.signal("-TERM");
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} did not exit after SIGTERM",
                self.worker
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn transaction_ids(&self) -> Vec<String> {
        lines(&self.scored)
            .iter()
            .map(|l| l["transaction_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lease table's rows by shard id, each with every attribute as DynamoDB holds it.
async fn table(
    client: &aws_sdk_dynamodb::Client,
) -> BTreeMap<String, HashMap<String, AttributeValue>> {
    let Ok(out) = client
        .scan()
        .table_name(TABLE)
        .consistent_read(true)
        .send()
        .await
    else {
        return BTreeMap::new();
    };
    out.items()
        .iter()
        .map(|item| (item["leaseKey"].as_s().unwrap().clone(), item.clone()))
        .collect()
}

/// Shard id → owner (absent when released; `X->Y` while X hands it over to Y).
async fn owners(client: &aws_sdk_dynamodb::Client) -> BTreeMap<String, Option<String>> {
    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name).map(|o| o.as_s().unwrap().clone())
    };
    table(client)
        .await
        .into_iter()
        .map(|(shard, item)| {
            let owner = match (text(&item, "checkpointOwner"), text(&item, "leaseOwner")) {
                (Some(from), Some(to)) => Some(format!("{from}->{to}")),
                (_, owner) => owner,
            };
            (shard, owner)
        })
        .collect()
}

/// How many leases each owner holds.
fn load(owners: &BTreeMap<String, Option<String>>) -> BTreeMap<String, usize> {
    let mut load = BTreeMap::new();
    for owner in owners.values().flatten() {
        *load.entry(owner.clone()).or_insert(0) += 1;
    }
    load
}

/// Waits until the leases are held as `want` (owner → number of leases); how long it took.
async fn wait_for_load(
    client: &aws_sdk_dynamodb::Client,
    want: &[(&str, usize)],
    within: Duration,
) -> Duration {
    let want: BTreeMap<String, usize> = want.iter().map(|(w, n)| ((*w).to_owned(), *n)).collect();
    let started = Instant::now();
    loop {
        let now = owners(client).await;
        if load(&now) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the leases are not held as {want:?} after {within:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the instances' results together hold `n` distinct transactions.
async fn wait_for_union(instances: &[&Instance], n: usize, within: Duration) -> Vec<String> {
    let started = Instant::now();
    loop {
        let all: Vec<String> = instances.iter().flat_map(|i| i.transaction_ids()).collect();
        let distinct: HashSet<&String> = all.iter().collect();
        if distinct.len() >= n {
            return all;
        }
        assert!(
            started.elapsed() < within,
            "{} of {n} transactions scored after {within:?}",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shard_of(line: &Value) -> String {
    line["shard_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_shards_evenly_and_score_every_record_once() {
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "shared", 4).await;
    let dirs = Dirs::new("leases-shared");

    let a = Instance::start(&dirs, "a", "shared", &kinesalite, &dynalite, 1_500);
    wait_for_load(&dynamodb, &[("a", 4)], Duration::from_secs(20)).await;
    let b = Instance::start(&dirs, "b", "shared", &kinesalite, &dynalite, 1_500);
    // b steals toward an even spread, one lease per cycle.
    let spread = wait_for_load(&dynamodb, &[("a", 2), ("b", 2)], Duration::from_secs(20)).await;
    eprintln!("even spread reached {spread:?} after the second instance's leases were looked for");

    put(&kinesis, "shared", &transactions("s", 1_000)).await;
    let all = wait_for_union(&[&a, &b], 1_000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (in_a, in_b) = (lines(&a.scored), lines(&b.scored));
    assert_eq!(
        in_a.len() + in_b.len(),
        1_000,
        "each record scored once by one instance ({} lines seen first)",
        all.len()
    );
    assert!(!in_a.is_empty() && !in_b.is_empty(), "both instances read");
    let shards_a: HashSet<String> = in_a.iter().map(shard_of).collect();
    let shards_b: HashSet<String> = in_b.iter().map(shard_of).collect();
    assert!(
        shards_a.is_disjoint(&shards_b),
        "each shard read by one instance: {shards_a:?} {shards_b:?}"
    );

    // The table is KCL's: its attribute names, a sequence number as the checkpoint.
    let rows = table(&dynamodb).await;
    assert_eq!(rows.len(), 4);
    for (shard, row) in &rows {
        for name in [
            "leaseKey",
            "leaseOwner",
            "leaseCounter",
            "checkpoint",
            "checkpointSubSequenceNumber",
            "ownerSwitchesSinceCheckpoint",
            "startingHashKey",
            "endingHashKey",
        ] {
            assert!(row.contains_key(name), "{shard} has {name}: {row:?}");
        }
        let checkpoint = row["checkpoint"].as_s().unwrap();
        assert!(
            checkpoint.chars().all(|c| c.is_ascii_digit()),
            "{shard} checkpointed at a sequence number: {checkpoint}"
        );
        assert!(row["leaseCounter"].as_n().unwrap().parse::<u64>().unwrap() > 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_leases_and_another_instance_takes_them_before_the_failover_time() {
    const FAILOVER_MS: u64 = 6_000;
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "handoff", 4).await;
    let dirs = Dirs::new("leases-handoff");

    let a = Instance::start(&dirs, "a", "handoff", &kinesalite, &dynalite, FAILOVER_MS);
    wait_for_load(&dynamodb, &[("a", 4)], Duration::from_secs(20)).await;
    let mut b = Instance::start(&dirs, "b", "handoff", &kinesalite, &dynalite, FAILOVER_MS);
    // Each steal is a hand-off: a finishes its page, checkpoints, then b reads.
    let spread = wait_for_load(&dynamodb, &[("a", 2), ("b", 2)], Duration::from_secs(30)).await;
    eprintln!("two stolen leases handed over in {spread:?} (failover {FAILOVER_MS} ms)");
    put(&kinesis, "handoff", &transactions("h", 500)).await;
    wait_for_union(&[&a, &b], 500, Duration::from_secs(60)).await;

    let exit = b.terminate();
    // Released, not left to expire: no lease names b once it has exited.
    let after = owners(&dynamodb).await;
    assert!(
        after.values().all(|o| o.as_deref() != Some("b")),
        "b released its leases before exiting: {after:?}\n{}",
        std::fs::read_to_string(dirs.root.join("b.log")).unwrap()
    );
    let handoff = wait_for_load(&dynamodb, &[("a", 4)], Duration::from_secs(60)).await;
    eprintln!("SIGTERM to exit {exit:?}; exit to every lease taken by a {handoff:?}");
    // Released leases are taken on a's next cycle (every failover / 3), expired ones only
    // after the failover time.
    assert!(
        handoff < Duration::from_millis(FAILOVER_MS / 2),
        "taken as released leases, not as expired ones: {handoff:?}"
    );

    put(&kinesis, "handoff", &transactions("i", 500)).await;
    let all = wait_for_union(&[&a, &b], 1_000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = lines(&a.scored).len() + lines(&b.scored).len();
    assert_eq!(
        total,
        1_000,
        "a graceful hand-off scores nothing twice ({} lines seen first)",
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_leases_expire_and_every_record_is_scored() {
    const FAILOVER_MS: u64 = 2_000;
    const RECORDS: usize = 3_000;
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "failover", 4).await;
    let dirs = Dirs::new("leases-failover");

    let a = Instance::start(&dirs, "a", "failover", &kinesalite, &dynalite, FAILOVER_MS);
    wait_for_load(&dynamodb, &[("a", 4)], Duration::from_secs(20)).await;
    let mut b = Instance::start(&dirs, "b", "failover", &kinesalite, &dynalite, FAILOVER_MS);
    wait_for_load(&dynamodb, &[("a", 2), ("b", 2)], Duration::from_secs(30)).await;

    let records = transactions("f", RECORDS);
    put(&kinesis, "failover", &records[..RECORDS / 2]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.child.kill().expect("SIGKILL");
    b.child.wait().unwrap();
    let killed = Instant::now();
    put(&kinesis, "failover", &records[RECORDS / 2..]).await;
    let taken = wait_for_load(&dynamodb, &[("a", 4)], Duration::from_secs(30)).await;
    eprintln!(
        "kill -9 to every lease taken by a: {taken:?} (failover {FAILOVER_MS} ms; \
         {:?} since the kill)",
        killed.elapsed()
    );
    assert!(
        taken >= Duration::from_millis(FAILOVER_MS / 2),
        "a killed instance's leases are taken only once expired: {taken:?}"
    );
    let all = wait_for_union(&[&a, &b], RECORDS, Duration::from_secs(60)).await;
    let duplicates = all.len() - RECORDS;
    eprintln!("{duplicates} records scored twice after the kill");
    // Only b's pages in hand, not checkpointed when it died, are scored again.
    assert!(duplicates <= 2 * PAGE, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_paused_past_the_failover_time_writes_nothing_for_the_shards_it_lost() {
    const FAILOVER_MS: u64 = 1_500;
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "paused", 2).await;
    let dirs = Dirs::new("leases-paused");

    let a = Instance::start(&dirs, "a", "paused", &kinesalite, &dynalite, FAILOVER_MS);
    wait_for_load(&dynamodb, &[("a", 2)], Duration::from_secs(20)).await;
    let b = Instance::start(&dirs, "b", "paused", &kinesalite, &dynalite, FAILOVER_MS);
    wait_for_load(&dynamodb, &[("a", 1), ("b", 1)], Duration::from_secs(20)).await;
    put(&kinesis, "paused", &transactions("p", 200)).await;
    wait_for_union(&[&a, &b], 200, Duration::from_secs(30)).await;

    // A zombie: b stops (a GC pause, a frozen VM) with its lease and an iterator in hand.
    b.signal("-STOP");
    wait_for_load(&dynamodb, &[("a", 2)], Duration::from_secs(20)).await;
    put(&kinesis, "paused", &transactions("q", 200)).await;
    let started = Instant::now();
    while lines(&a.scored)
        .iter()
        .filter(|l| l["transaction_id"].as_str().unwrap().starts_with("q-"))
        .count()
        < 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a scores what b left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.signal("-CONT");
    // Its timers fire at once: the reader's poll with the old iterator, the renewal. The
    // records put while it was stopped are a's now, and b must not write them.
    tokio::time::sleep(Duration::from_millis(3 * FAILOVER_MS)).await;
    let zombie: Vec<String> = b
        .transaction_ids()
        .into_iter()
        .filter(|id| id.starts_with("q-"))
        .collect();
    assert!(
        zombie.is_empty(),
        "the paused instance wrote {} results for a lease it had lost",
        zombie.len()
    );
    let log = std::fs::read_to_string(dirs.root.join("b.log")).unwrap();
    assert!(log.contains("lost the shard's lease"), "b noticed:\n{log}");
}
