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
use common::stream::{Dirs, create_stream, lines, merge, open_shards, put, split, transactions};
use serde_json::Value;

const TABLE: &str = "infergate-leases";

/// The tests here time failovers with several gateway processes on two shared cores: one test
/// at a time, so that none starves another's renewals.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}
const PAGE: usize = 100;

/// One gateway process of the fleet, with its own results and dead-letter files.
struct Instance {
    worker: String,
    child: Child,
    scored: PathBuf,
    /// Where it serves HTTP.
    url: String,
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dirs.root.join(format!("{worker}.log")))
            .unwrap();
        let port = common::free_port();
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_infergate"))
            .args(["--config", config.to_str().unwrap(), "--bind", &bind])
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
            url: format!("http://{bind}"),
        }
    }

    /// Its lease table calls so far, by purpose, from `/metrics`.
    async fn table_calls(&self) -> BTreeMap<String, f64> {
        let text = common::scrape(&self.url).await;
        text.lines()
            .filter_map(|line| {
                line.strip_prefix("infergate_kinesis_lease_table_calls_total{call=\"")
            })
            .filter_map(|rest| rest.split_once("\"} "))
            .map(|(call, value)| (call.to_owned(), value.parse().unwrap()))
            .collect()
    }

    /// Its `/health/ready` answer, once it serves.
    async fn ready(&self) -> Value {
        for _ in 0..100 {
            if let Ok(response) = reqwest::get(format!("{}/health/ready", self.url)).await {
                return response.json().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} does not serve", self.worker);
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
    let _serial = serial().await;
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

    // Readiness names each instance's shards, and they are the ones it read.
    for (instance, read) in [(&a, &shards_a), (&b, &shards_b)] {
        let ready = instance.ready().await;
        assert_eq!(ready["leases"]["worker_id"], instance.worker.as_str());
        let held: HashSet<String> = ready["leases"]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&held, read, "{ready}");
    }

    // In steady state, an idle shard costs its renewals only (one per cycle, every 500 ms
    // here), and each instance one scan per cycle.
    let before = (a.table_calls().await, b.table_calls().await);
    let window = Duration::from_secs(6);
    tokio::time::sleep(window).await;
    let after = (a.table_calls().await, b.table_calls().await);
    let delta = |call: &str| {
        after.0.get(call).unwrap_or(&0.0) + after.1.get(call).unwrap_or(&0.0)
            - before.0.get(call).unwrap_or(&0.0)
            - before.1.get(call).unwrap_or(&0.0)
    };
    let per_minute = 60.0 / window.as_secs_f64();
    let (renewals, scans, others) = (
        delta("renew") * per_minute / 4.0,
        delta("scan") * per_minute / 2.0,
        ["checkpoint", "take", "steal", "create_lease", "release"].map(delta),
    );
    eprintln!(
        "steady state, failover 1500 ms: {renewals:.0} renewals per shard per minute, \
         {scans:.0} scans per instance per minute, other calls {others:?}"
    );
    assert!(
        renewals <= 60_000.0 / 500.0 * 1.2,
        "{renewals} renewals per shard per minute"
    );
    assert_eq!(others, [0.0; 5], "an idle shard writes nothing else");

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
    let _serial = serial().await;
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
    let _serial = serial().await;
    const FAILOVER_MS: u64 = 2_000;
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 1_200;
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "failover", 4).await;
    let dirs = Dirs::new("leases-failover");

    let a = Instance::start(&dirs, "a", "failover", &kinesalite, &dynalite, FAILOVER_MS);
    wait_for_load(&dynamodb, &[("a", 4)], Duration::from_secs(20)).await;
    let records = transactions("f", ROUNDS * PER_ROUND);
    let mut killed = Vec::new();
    let mut failovers = Vec::new();
    for (round, chunk) in records.chunks(PER_ROUND).enumerate() {
        let worker = format!("b{round}");
        let mut b = Instance::start(
            &dirs,
            &worker,
            "failover",
            &kinesalite,
            &dynalite,
            FAILOVER_MS,
        );
        wait_for_load(
            &dynamodb,
            &[("a", 2), (&worker, 2)],
            Duration::from_secs(30),
        )
        .await;
        put(&kinesis, "failover", &chunk[..PER_ROUND / 2]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.child.kill().expect("SIGKILL");
        b.child.wait().unwrap();
        put(&kinesis, "failover", &chunk[PER_ROUND / 2..]).await;
        let taken = wait_for_load(&dynamodb, &[("a", 4)], Duration::from_secs(30)).await;
        assert!(
            taken >= Duration::from_millis(FAILOVER_MS / 2),
            "a killed instance's leases are taken only once expired: {taken:?}"
        );
        failovers.push(taken);
        killed.push(b);
    }
    failovers.sort();
    eprintln!(
        "kill -9 to every lease taken by the survivor (failover {FAILOVER_MS} ms, cycle {} ms): \
         median {:?}, min {:?}, max {:?}",
        FAILOVER_MS / 3,
        failovers[ROUNDS / 2],
        failovers[0],
        failovers[ROUNDS - 1]
    );
    let mut everyone: Vec<&Instance> = killed.iter().collect();
    everyone.push(&a);
    let all = wait_for_union(&everyone, records.len(), Duration::from_secs(60)).await;
    let duplicates = all.len() - records.len();
    eprintln!("{duplicates} records scored twice after {ROUNDS} kills");
    // Only the pages a killed instance had in hand, not checkpointed, are scored again: at
    // most one page for each of its two shards, each time.
    assert!(duplicates <= ROUNDS * 2 * PAGE, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_paused_past_the_failover_time_writes_nothing_for_the_shards_it_lost() {
    let _serial = serial().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_with_its_worker_id_resumes_its_leases_at_once() {
    let _serial = serial().await;
    const FAILOVER_MS: u64 = 60_000;
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "restart", 2).await;
    let dirs = Dirs::new("leases-restart");

    let mut a = Instance::start(&dirs, "a", "restart", &kinesalite, &dynalite, FAILOVER_MS);
    wait_for_load(&dynamodb, &[("a", 2)], Duration::from_secs(30)).await;
    put(&kinesis, "restart", &transactions("r", 300)).await;
    wait_for_union(&[&a], 300, Duration::from_secs(30)).await;
    a.child.kill().expect("SIGKILL");
    a.child.wait().unwrap();

    // Its leases still name it: restarted under the same id, it takes them back without
    // waiting a minute for them to expire, and goes on from their checkpoints.
    let started = Instant::now();
    let a = Instance::start(&dirs, "a", "restart", &kinesalite, &dynalite, FAILOVER_MS);
    put(&kinesis, "restart", &transactions("t", 300)).await;
    wait_for_union(&[&a], 600, Duration::from_secs(30)).await;
    let resumed = started.elapsed();
    eprintln!("restarted and resumed in {resumed:?}");
    assert!(
        resumed < Duration::from_millis(FAILOVER_MS / 4),
        "{resumed:?}"
    );
    let log = std::fs::read_to_string(dirs.root.join("a.log")).unwrap();
    assert_eq!(log.matches("\"resumed\"").count(), 2, "{log}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.transaction_ids().len(),
        600,
        "the pages before the kill were checkpointed: nothing is scored twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_spread_eight_shards_while_producing_and_lose_nothing() {
    let _serial = serial().await;
    const RECORDS: usize = 30_000;
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "fleet", 8).await;
    let dirs = Dirs::new("leases-fleet");

    let records = transactions("z", RECORDS);
    let producer = {
        let (kinesis, records) = (kinesis.clone(), records.clone());
        tokio::spawn(async move {
            for chunk in records.chunks(1_000) {
                put(&kinesis, "fleet", chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|w| Instance::start(&dirs, w, "fleet", &kinesalite, &dynalite, 1_500))
        .collect();
    // 3/3/2 in some order, each lease settled (no hand-off pending).
    let spread = loop {
        let mut held: Vec<usize> = load(&owners(&dynamodb).await).into_values().collect();
        held.sort();
        if held == [2, 3, 3] {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no even spread: {:?}",
            owners(&dynamodb).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("three instances started together: spread 3/3/2 after {spread:?} (cycle 500 ms)");
    producer.await.unwrap();
    let refs: Vec<&Instance> = instances.iter().collect();
    let all = wait_for_union(&refs, RECORDS, Duration::from_secs(120)).await;
    let duplicates = all.len() - RECORDS;
    eprintln!("{RECORDS} records while spreading: {duplicates} scored twice");
    // Steals are handed over at page boundaries: nothing twice.
    assert_eq!(duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_instances_a_child_shard_is_read_only_after_its_parents_ended() {
    let _serial = serial().await;
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "reshard", 2).await;
    let dirs = Dirs::new("leases-reshard");
    let instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|w| Instance::start(&dirs, w, "reshard", &kinesalite, &dynalite, 1_500))
        .collect();
    let all = transactions("m", 1_500);
    put(&kinesis, "reshard", &all[..500]).await;

    // Watch the table: no child's checkpoint moves past its start while a parent's lease is
    // there and not ended.
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let (dynamodb, watching) = (dynamodb.clone(), watching.clone());
        tokio::spawn(async move {
            let mut violations = Vec::new();
            while !watching.is_cancelled() {
                let rows = table(&dynamodb).await;
                for (shard, row) in &rows {
                    let started = row["checkpoint"]
                        .as_s()
                        .unwrap()
                        .starts_with(|c: char| c.is_ascii_digit());
                    let parents = row
                        .get("parentShardId")
                        .map(|p| p.as_ss().unwrap().clone())
                        .unwrap_or_default();
                    for parent in parents {
                        let ended = rows
                            .get(&parent)
                            .is_none_or(|p| p["checkpoint"].as_s().unwrap() == "SHARD_END");
                        if started && !ended {
                            violations.push(format!("{shard} started before {parent} ended"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            violations
        })
    };

    // Split a shard while it is read, produce, merge the two children, produce the rest.
    let parent = open_shards(&kinesis, "reshard")
        .await
        .into_iter()
        .min()
        .unwrap();
    split(&kinesis, "reshard", &parent).await;
    put(&kinesis, "reshard", &all[500..1_000]).await;
    let mut children: Vec<String> = open_shards(&kinesis, "reshard")
        .await
        .into_iter()
        .filter(|s| s.as_str() > "shardId-000000000001")
        .collect();
    children.sort();
    assert_eq!(children.len(), 2, "{children:?}");
    merge(&kinesis, "reshard", &children[0], &children[1]).await;
    put(&kinesis, "reshard", &all[1_000..]).await;

    let refs: Vec<&Instance> = instances.iter().collect();
    let scored = wait_for_union(&refs, 1_500, Duration::from_secs(60)).await;
    watching.cancel();
    let violations = watcher.await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let shards: HashSet<String> = instances
        .iter()
        .flat_map(|i| lines(&i.scored))
        .map(|l| shard_of(&l))
        .collect();
    assert_eq!(
        shards.len(),
        5,
        "two shards, two children, one merged: {shards:?}"
    );
    assert_eq!(scored.len(), 1_500, "nothing twice");
    // The children end once their readers reach the end of each: the parent of the split and
    // both children, all three kept in the table while the stream lists them.
    let started = Instant::now();
    let rows = loop {
        let rows = table(&dynamodb).await;
        let ended = rows
            .values()
            .filter(|r| r["checkpoint"].as_s().unwrap() == "SHARD_END")
            .count();
        if ended == 3 {
            break rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the split parent and both children ended: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The reshard is recorded on the parents, as KCL does.
    let children = |shard: &str| -> Vec<String> {
        let mut children = rows[shard]["childShardIds"].as_ss().unwrap().clone();
        children.sort();
        children
    };
    assert_eq!(children(&parent).len(), 2, "{rows:?}");
    for child in children(&parent) {
        assert_eq!(
            children(&child).len(),
            1,
            "{child} merged into one: {rows:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_table_that_hangs_makes_the_instance_unready_fenced_and_still_quick_to_stop() {
    let _serial = serial().await;
    const FAILOVER_MS: u64 = 3_000;
    let (kinesalite, dynalite) = (Kinesalite::start().await, Dynalite::start().await);
    let (kinesis, dynamodb) = (kinesalite.client(), dynalite.client());
    create_stream(&kinesis, "hang", 2).await;
    let dirs = Dirs::new("leases-hang");
    let mut a = Instance::start(&dirs, "a", "hang", &kinesalite, &dynalite, FAILOVER_MS);
    wait_for_load(&dynamodb, &[("a", 2)], Duration::from_secs(20)).await;
    put(&kinesis, "hang", &transactions("g", 200)).await;
    wait_for_union(&[&a], 200, Duration::from_secs(30)).await;

    dynalite.signal("-STOP");
    let started = Instant::now();
    loop {
        let response = reqwest::get(format!("{}/health/ready", a.url))
            .await
            .unwrap();
        if response.status() == 503 {
            let problem: Value = response.json().await.unwrap();
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("lease table"), "{problem}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "still ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unready = started.elapsed();
    // Past the failover time without a renewal, it may not know who holds its shards: it
    // writes nothing more.
    tokio::time::sleep(Duration::from_millis(FAILOVER_MS)).await;
    put(&kinesis, "hang", &transactions("h", 100)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        a.transaction_ids().len(),
        200,
        "nothing written while fenced"
    );
    let exit = a.terminate();
    eprintln!("unready {unready:?} after the table hung; SIGTERM to exit {exit:?}");
    assert!(exit < Duration::from_secs(10), "{exit:?}");

    // The table answers again: a restarted instance goes on from the checkpoints.
    dynalite.signal("-CONT");
    let a = Instance::start(&dirs, "a", "hang", &kinesalite, &dynalite, FAILOVER_MS);
    let all = wait_for_union(&[&a], 300, Duration::from_secs(30)).await;
    assert_eq!(all.len(), 300, "nothing lost, nothing twice");
}
