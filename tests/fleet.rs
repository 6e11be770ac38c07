//! Several gateway processes sharing one Redis (Debian's redis-server): usage plans, quotas and
//! the global limit hold for the fleet, not per replica, and a Redis outage falls back as
//! configured and recovers.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::peers::RedisServer;
use common::transaction;
use serde_json::{Value, json};

/// Three replicas, the test and redis-server share two cores: a Redis call may take longer
/// than the default 20 ms, and each replica's share of a plan (for a call that fails) is a
/// third.
const LOADED: &str = "redis_timeout_ms = 500\nreplicas_hint = 3";

/// One gateway process.
struct Replica {
    child: Child,
    url: String,
    client: reqwest::Client,
}

const KEYS: [(&str, &str); 4] = [
    ("HAMMER_KEY", "hammer-key-0123456789"),
    ("QUOTA_KEY", "quota-key-0123456789"),
    ("BATCH_KEY", "batch-key-0123456789"),
    ("OTHER_KEY", "other-key-0123456789"),
];

impl Replica {
    /// A replica with the test plans and `fleet` (TOML lines of the `[fleet]` section).
    async fn start(dir: &std::path::Path, redis: &RedisServer, fleet: &str, extra: &str) -> Self {
        let port = common::free_port();
        let config = dir.join(format!("replica-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "{extra}\n\
                 [[auth.api_keys]]\nname = \"hammer\"\nkey_env = \"HAMMER_KEY\"\nrate = 50\nburst = 50\n\
                 [[auth.api_keys]]\nname = \"quota\"\nkey_env = \"QUOTA_KEY\"\nrate = 10000\nquota_per_day = 100\n\
                 [[auth.api_keys]]\nname = \"batch\"\nkey_env = \"BATCH_KEY\"\nrate = 10000\n\
                 [[auth.api_keys]]\nname = \"other\"\nkey_env = \"OTHER_KEY\"\nrate = 30\nburst = 30\n\
                 [fleet]\nredis_url = \"{}\"\n{fleet}\n",
                redis.url()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("replica-{port}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_infergate"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .envs(KEYS)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the gateway binary starts");
        let replica = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        for _ in 0..200 {
            if replica
                .client
                .get(format!("{}/health/live", replica.url))
                .send()
                .await
                .is_ok()
            {
                return replica;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(dir.join(format!("replica-{port}.log"))).unwrap();
        panic!("the replica does not serve:\n{log}");
    }

    async fn ready(&self) -> Value {
        let url = format!("{}/health/ready", self.url);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = common::scrape(&self.url).await;
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Scores one transaction (or a batch of `n` > 1) as the caller holding `key`.
    async fn score(&self, key: &str, id: &str, n: usize) -> reqwest::Response {
        let request = if n == 1 {
            self.client
                .post(format!("{}/v1/transactions/score", self.url))
                .json(&transaction(id, json!({})))
        } else {
            let items: Vec<Value> = (0..n)
                .map(|i| transaction(&format!("{id}-{i}"), json!({})))
                .collect();
            self.client
                .post(format!("{}/v1/transactions/score-batch", self.url))
                .json(&json!({ "transactions": items }))
        };
        request.header("x-api-key", key).send().await.unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("infergate-fleet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn fleet(
    name: &str,
    n: usize,
    fleet: &str,
    extra: &str,
) -> (RedisServer, Dir, Vec<Arc<Replica>>) {
    let redis = RedisServer::start().await;
    let dir = Dir::new(name);
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(Arc::new(Replica::start(&dir.0, &redis, fleet, extra).await));
    }
    (redis, dir, replicas)
}

/// Runs the calls concurrently; their outcomes in order.
async fn all<T: Send + 'static>(calls: Vec<impl Future<Output = T> + Send + 'static>) -> Vec<T> {
    let handles: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.unwrap());
    }
    outcomes
}

/// The statuses of `n` single requests, one after another, and the time they took.
async fn statuses(replica: &Replica, key: &str, prefix: &str, n: usize) -> (Vec<u16>, f64) {
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..n {
        let response = replica.score(key, &format!("{prefix}-{i}"), 1).await;
        statuses.push(response.status().as_u16());
    }
    (statuses, started.elapsed().as_secs_f64())
}

/// Whether `accepted` is what a bucket of `burst` refilled at `rate` admits in `secs`.
fn bucket_admits(accepted: usize, burst: usize, rate: f64, secs: f64) -> bool {
    (burst..=burst + (rate * secs).ceil() as usize + 1).contains(&accepted)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_rate_holds_across_three_replicas_not_three_times() {
    let (_redis, _dir, replicas) = fleet("rate", 3, LOADED, "").await;
    let key = KEYS[0].1;
    let started = Instant::now();
    let window = Duration::from_secs(5);
    let mut clients = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for c in 0..4 {
            let replica = Arc::clone(replica);
            clients.push(async move {
                let (mut accepted, mut refused, mut bad_retry) = (0u32, 0u32, 0u32);
                let mut i = 0;
                while started.elapsed() < window {
                    let response = replica.score(key, &format!("h-{r}-{c}-{i}"), 1).await;
                    i += 1;
                    match response.status().as_u16() {
                        200 => accepted += 1,
                        429 => {
                            refused += 1;
                            let retry: u64 = response.headers()["retry-after"]
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            bad_retry += u32::from(retry != 1);
                        }
                        other => panic!("{other}: {}", response.text().await.unwrap()),
                    }
                }
                (accepted, refused, bad_retry)
            });
        }
    }
    let results = all(clients).await;
    let accepted: u32 = results.iter().map(|r| r.0).sum();
    let refused: u32 = results.iter().map(|r| r.1).sum();
    let bad_retry: u32 = results.iter().map(|r| r.2).sum();
    let elapsed = started.elapsed().as_secs_f64();
    let expected = 50.0 + 50.0 * elapsed;
    eprintln!(
        "rate 50/s burst 50 through 3 replicas for {elapsed:.2} s: {accepted} accepted \
         (expected {expected:.0}), {refused} refused"
    );
    assert!(
        (f64::from(accepted) - expected).abs() <= expected * 0.1,
        "{accepted} accepted, expected {expected:.0} ± 10%"
    );
    assert!(refused > 0);
    assert_eq!(bad_retry, 0, "a token every 20 ms: Retry-After is 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_spread_over_three_replicas_admits_exactly_its_size() {
    let (redis_server, _dir, replicas) = fleet("quota", 3, LOADED, "").await;
    let key = KEYS[1].1;
    // A Redis that forgets the script (restarted, flushed) is given it again (NOSCRIPT).
    let mut redis = redis::Client::open(redis_server.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let flushed: String = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(flushed, "OK");
    let mut calls = Vec::new();
    for i in 0..240 {
        let replica = Arc::clone(&replicas[i % 3]);
        calls.push(async move {
            let response = replica.score(key, &format!("q-{i}"), 1).await;
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        });
    }
    let mut accepted = 0;
    for (status, body) in all(calls).await {
        match status {
            200 => accepted += 1,
            429 => assert!(body.contains("daily quota of 100"), "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(accepted, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_holds_across_replicas_and_a_batch_costs_its_size() {
    let (_redis, _dir, replicas) = fleet(
        "global",
        3,
        "",
        "[limits]\nglobal_rps = 1\nglobal_burst = 40\n",
    )
    .await;
    let key = KEYS[2].1;
    // 30 of the 40 tokens on one replica...
    assert_eq!(replicas[0].score(key, "g-a", 30).await.status(), 200);
    // ... leave too few for a batch of 20 on another...
    let refused = replicas[1].score(key, "g-b", 20).await;
    assert_eq!(refused.status(), 429);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("global"),
        "{problem}"
    );
    // ... and about ten single ones on the third.
    let mut accepted = 0;
    for i in 0..20 {
        if replicas[2]
            .score(key, &format!("g-c-{i}"), 1)
            .await
            .status()
            == 200
        {
            accepted += 1;
        }
    }
    assert!((10..=11).contains(&accepted), "{accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_local_shares_or_denies_and_both_recover() {
    let (mut redis, dir, replicas) =
        fleet("outage", 1, "replicas_hint = 3\nredis_timeout_ms = 50", "").await;
    let deny = Replica::start(&dir.0, &redis, "on_redis_error = \"deny\"", "").await;
    let local = &replicas[0];
    let key = KEYS[3].1; // rate 30, burst 30: a local share of 10
    // 40 requests in a row: the burst of 30, and what refills (30/s) meanwhile.
    let (shared, secs) = statuses(local, key, "s", 40).await;
    assert!(
        bucket_admits(count(&shared, 200), 30, 30.0, secs),
        "{shared:?} in {secs} s"
    );

    assert_eq!(
        local.ready().await["fleet"],
        json!({"redis": "up", "mode": "shared"})
    );
    redis.kill();
    let (alone, secs) = statuses(local, key, "l", 40).await;
    assert_eq!(
        local.ready().await["fleet"],
        json!({"redis": "down", "mode": "local"})
    );
    assert!(
        bucket_admits(count(&alone, 200), 10, 10.0, secs),
        "a local share of 30/s among 3 replicas: {alone:?} in {secs} s"
    );
    assert!(alone.iter().all(|s| *s == 200 || *s == 429), "{alone:?}");
    let denied = deny.score(key, "d-0", 1).await;
    assert_eq!(denied.status(), 503);
    let problem: Value = denied.json().await.unwrap();
    assert_eq!(problem["type"], "urn:infergate:problem:limits_unavailable");

    redis.restart().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (again, secs) = statuses(local, key, "a", 40).await;
    assert!(
        bucket_admits(count(&again, 200), 30, 30.0, secs),
        "shared again: {again:?} in {secs} s"
    );
    assert_eq!(
        deny.score(KEYS[2].1, "d-1", 1).await.status(),
        200,
        "deny recovers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_score_computed_on_one_replica_is_served_from_the_shared_cache_by_another() {
    let (_redis, _dir, replicas) = fleet("cache", 2, "", "").await;
    let key = KEYS[2].1;
    let first: Value = replicas[0]
        .score(key, "l2-1", 1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["cached"], false);
    // Written to Redis in the background, just after the answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second: Value = replicas[1]
        .score(key, "l2-1", 1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["cached"], true, "{second}");
    assert_eq!(second["fraud_score"], first["fraud_score"]);
    assert_eq!(second["model"], first["model"]);

    // A batch: its misses are looked up together.
    let batch: Value = replicas[1]
        .score(key, "l2-b", 3)
        .await
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again: Value = replicas[0]
        .score(key, "l2-b", 3)
        .await
        .json()
        .await
        .unwrap();
    let results = |v: &Value| v["results"].as_array().unwrap().clone();
    for (a, b) in results(&batch).iter().zip(results(&again)) {
        assert_eq!(a["score"]["cached"], false, "{batch}");
        assert_eq!(b["score"]["cached"], true, "{again}");
        assert_eq!(a["score"]["fraud_score"], b["score"]["fraud_score"]);
    }
    let hits = replicas[0]
        .metric("infergate_cache_requests_total{cache=\"shared\",result=\"hit\"}")
        .await;
    assert_eq!(hits, 3.0);
}

/// `p` (0..=1) of the sorted `latencies`.
fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() - 1) as f64 * p).round() as usize]
}

/// 100 requests of the `other` key at 20/s through the replicas in turn: their latencies, and
/// how many were accepted.
async fn paced_other(replicas: &[Arc<Replica>], prefix: &str) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut accepted = 0;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    for i in 0..100 {
        every.tick().await;
        let started = Instant::now();
        let response = replicas[i % replicas.len()]
            .score(KEYS[3].1, &format!("{prefix}-{i}"), 1)
            .await;
        latencies.push(started.elapsed());
        accepted += usize::from(response.status() == 200);
    }
    (latencies, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_flood_does_not_take_another_keys_requests() {
    let (_redis, _dir, replicas) = fleet("flood", 3, LOADED, "").await;
    let (mut quiet, accepted) = paced_other(&replicas, "quiet").await;
    assert_eq!(accepted, 100);

    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut flood = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for c in 0..3 {
            let (replica, flooding) = (Arc::clone(replica), Arc::clone(&flooding));
            flood.push(tokio::spawn(async move {
                let mut i = 0;
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    replica.score(KEYS[0].1, &format!("f-{r}-{c}-{i}"), 1).await;
                    i += 1;
                }
                i
            }));
        }
    }
    let (mut loud, accepted) = paced_other(&replicas, "loud").await;
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut flooded = 0;
    for handle in flood {
        flooded += handle.await.unwrap();
    }
    eprintln!(
        "the other key at 20/s: p50 {:?} p99 {:?} alone, p50 {:?} p99 {:?} beside a flood of \
         {flooded} requests from the hammer key",
        percentile(&mut quiet, 0.5),
        percentile(&mut quiet, 0.99),
        percentile(&mut loud, 0.5),
        percentile(&mut loud, 0.99),
    );
    assert_eq!(
        accepted, 100,
        "the flood took none of the other key's tokens"
    );
    assert!(flooded > 500, "it was a flood: {flooded}");
}
