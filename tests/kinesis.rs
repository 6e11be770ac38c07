//! The Kinesis consumer against kinesalite: every record scored or dead-lettered, exactly once
//! when nothing crashes, in shard order, resumed from checkpoints.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::peers::Kinesalite;
use common::serve;
use common::stream::{
    Dirs, config, create_stream, lines, merge, open_shards, put, seq_key, split, start,
    transactions, wait_for_lines,
};
use infergate::Gateway;
use infergate::config::SinkConfig;
use infergate::gateway::Clients;
use infergate::model::Model;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_scored_or_dead_lettered_once_in_shard_order() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "transactions", 4).await;
    let mut records = transactions("tx", 10_000);
    // Invalid records are dead-lettered with their reason, and never block the shard.
    records.insert(1234, ("card-x".into(), b"{not json".to_vec()));
    records.insert(
        5678,
        (
            "card-y".into(),
            json!({"transaction_id": "bad-1", "amount": -1})
                .to_string()
                .into_bytes(),
        ),
    );
    put(&client, "transactions", &records).await;

    let dirs = Dirs::new("once");
    let app = start(
        &config("transactions", &kinesalite, &dirs, 500),
        &kinesalite,
    )
    .await;
    let scored = wait_for_lines(&dirs.scored(), 10_000, Duration::from_secs(120)).await;
    let dead = wait_for_lines(&dirs.dead(), 2, Duration::from_secs(10)).await;
    app.stop().await.unwrap();

    let mut seen = HashSet::new();
    for line in &scored {
        assert!(
            seen.insert(line["transaction_id"].as_str().unwrap().to_owned()),
            "duplicate: {line}"
        );
        let score = line["fraud_score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert!(line["model"].as_str().unwrap().starts_with("fraud-xgb@"));
        assert!(line["shard_id"].as_str().unwrap().starts_with("shardId-"));
        assert!(line["sub_sequence_number"].is_null());
    }
    let expected: HashSet<String> = (0..10_000).map(|i| format!("tx-{i}")).collect();
    assert_eq!(seen, expected, "every transaction exactly once");

    // Within a shard, output follows the stream.
    let mut by_shard: HashMap<&str, Vec<(usize, String)>> = HashMap::new();
    for line in &scored {
        by_shard
            .entry(line["shard_id"].as_str().unwrap())
            .or_default()
            .push(seq_key(line));
    }
    assert_eq!(by_shard.len(), 4, "all four shards were read");
    for (shard, seqs) in &by_shard {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "shard {shard} out of order"
        );
    }

    let codes: HashSet<&str> = dead
        .iter()
        .map(|d| d["error"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        HashSet::from(["invalid_json", "invalid_transaction"]),
        "{dead:?}"
    );
    let bad_json = dead
        .iter()
        .find(|d| d["error"]["code"] == "invalid_json")
        .unwrap();
    assert_eq!(
        bad_json["data_base64"], "e25vdCBqc29u",
        "the raw bytes travel with the reason"
    );
    assert!(bad_json["sequence_number"].is_string() && bad_json["shard_id"].is_string());
    let invalid = dead
        .iter()
        .find(|d| d["error"]["code"] == "invalid_transaction")
        .unwrap();
    assert!(
        invalid["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`amount` must be >= 0"),
        "{invalid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_resumes_from_the_checkpoints_without_duplicates() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "restart", 2).await;
    put(&client, "restart", &transactions("r", 3_000)).await;

    let dirs = Dirs::new("restart");
    let config = config("restart", &kinesalite, &dirs, 50);
    let first = start(&config, &kinesalite).await;
    let partial = wait_for_lines(&dirs.scored(), 300, Duration::from_secs(60)).await;
    first.stop().await.unwrap();
    let after_stop = lines(&dirs.scored()).len();
    assert!(
        after_stop >= partial.len() && after_stop < 3_000,
        "stopped mid-stream at {after_stop}"
    );

    let second = start(&config, &kinesalite).await;
    let scored = wait_for_lines(&dirs.scored(), 3_000, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.stop().await.unwrap();
    let scored_final = lines(&dirs.scored());
    assert_eq!(
        scored_final.len(),
        scored.len(),
        "nothing more after the last record"
    );
    let ids: Vec<&str> = scored_final
        .iter()
        .map(|l| l["transaction_id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 3_000, "every record");
    assert_eq!(ids.len(), 3_000, "and none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpl_aggregated_and_plain_records_mix_and_a_corrupt_one_is_a_dead_letter() {
    let output = std::process::Command::new(common::test_venv_bin("python"))
        .arg(common::repo_path("tests/clients/kpl_records.py"))
        .args(["--prefix", "kpl", "--count", "400"])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let produced: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let aggregated = produced
        .iter()
        .filter(|r| r["kind"] == "aggregated")
        .count();
    assert!(aggregated >= 5, "several aggregated records: {aggregated}");
    use base64::Engine;
    let records: Vec<(String, Vec<u8>)> = produced
        .iter()
        .map(|r| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["data_base64"].as_str().unwrap())
                .unwrap();
            (r["partition_key"].as_str().unwrap().to_owned(), data)
        })
        .collect();

    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "kpl", 1).await;
    put(&client, "kpl", &records).await;

    let dirs = Dirs::new("kpl");
    let app = start(&config("kpl", &kinesalite, &dirs, 10_000), &kinesalite).await;
    let scored = wait_for_lines(&dirs.scored(), 400, Duration::from_secs(60)).await;
    let dead = wait_for_lines(&dirs.dead(), 1, Duration::from_secs(10)).await;
    app.stop().await.unwrap();

    let ids: HashSet<&str> = scored
        .iter()
        .map(|l| l["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        400,
        "every user record, aggregated or plain, once"
    );
    assert_eq!(scored.len(), 400);
    for line in &scored {
        let i: usize = line["transaction_id"].as_str().unwrap()["kpl-".len()..]
            .parse()
            .unwrap();
        if i.is_multiple_of(2) {
            assert!(line["sub_sequence_number"].is_u64(), "aggregated: {line}");
        } else {
            assert!(line["sub_sequence_number"].is_null(), "plain: {line}");
        }
    }
    // Within one aggregated record, user records keep their order.
    let mut subs: HashMap<&str, Vec<u64>> = HashMap::new();
    for line in scored.iter().filter(|l| l["sub_sequence_number"].is_u64()) {
        subs.entry(line["sequence_number"].as_str().unwrap())
            .or_default()
            .push(line["sub_sequence_number"].as_u64().unwrap());
    }
    for list in subs.values() {
        assert_eq!(*list, (0..list.len() as u64).collect::<Vec<_>>());
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0]["error"]["code"], "invalid_json",
        "the corrupt record read as plain"
    );
    assert!(dead[0]["sub_sequence_number"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_while_producing_keep_every_cards_order() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "reshard", 1).await;
    let all = transactions("s", 1_500);
    put(&client, "reshard", &all[..500]).await;

    let dirs = Dirs::new("reshard");
    let app = start(&config("reshard", &kinesalite, &dirs, 100), &kinesalite).await;
    wait_for_lines(&dirs.scored(), 100, Duration::from_secs(30)).await;

    // Split the only shard while the consumer reads it, then keep producing.
    let parent = open_shards(&client, "reshard").await.remove(0);
    split(&client, "reshard", &parent).await;
    put(&client, "reshard", &all[500..1_000]).await;

    // Merge the two children back, and produce the rest.
    let mut children = open_shards(&client, "reshard").await;
    children.sort();
    assert_eq!(children.len(), 2);
    merge(&client, "reshard", &children[0], &children[1]).await;
    put(&client, "reshard", &all[1_000..]).await;

    let scored = wait_for_lines(&dirs.scored(), 1_500, Duration::from_secs(60)).await;
    app.stop().await.unwrap();
    let ids: Vec<&str> = scored
        .iter()
        .map(|l| l["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        1_500,
        "nothing lost"
    );
    assert_eq!(ids.len(), 1_500, "nothing twice");
    let shards: HashSet<&str> = scored
        .iter()
        .map(|l| l["shard_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        shards.len(),
        4,
        "parent, two children, merged child: {shards:?}"
    );

    // Parents are read out before their children start, so each card's transactions come out
    // in the order they were produced.
    // (`transactions` gives transaction i to card i % 97.)
    let mut last: HashMap<usize, usize> = HashMap::new();
    for line in &scored {
        let i: usize = line["transaction_id"].as_str().unwrap()[2..]
            .parse()
            .unwrap();
        if let Some(previous) = last.insert(i % 97, i) {
            assert!(
                previous < i,
                "card-{} went back from {previous} to {i}",
                i % 97
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_point_loses_nothing() {
    const RECORDS: usize = 20_000;
    const SHARDS: usize = 4;
    const PAGE: usize = 200;
    const KILLS: usize = 5;
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "crash", SHARDS as i32).await;
    put(&client, "crash", &transactions("k", RECORDS)).await;

    let dirs = Dirs::new("crash");
    let config_file = dirs.root.join("gateway.toml");
    std::fs::write(
        &config_file,
        format!(
            "[kinesis]\nstream = \"crash\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
             max_records = {PAGE}\npoll_interval_ms = 50\nshard_discovery_ms = 500\n\
             checkpoint = {{ kind = \"file\", dir = \"{}\" }}\n\
             sink = {{ kind = \"file\", path = \"{}\" }}\n\
             dead_letter = {{ kind = \"file\", path = \"{}\" }}\n",
            kinesalite.url,
            dirs.root.join("checkpoints").display(),
            dirs.scored().display(),
            dirs.dead().display(),
        ),
    )
    .unwrap();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_infergate"))
            .args([
                "--config",
                config_file.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .env("AWS_ACCESS_KEY_ID", "AKIDKINESISTEST")
            .env("AWS_SECRET_ACCESS_KEY", "kinesis-test-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the gateway binary starts")
    };
    // Kill at different points: before the first page, mid-stream, near the end.
    let mut kills = 0;
    let mut progress = Vec::new();
    for delay_ms in [120u64, 450, 300, 700, 250] {
        let mut gateway = spawn();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        gateway.kill().expect("SIGKILL");
        gateway.wait().unwrap();
        kills += 1;
        progress.push(lines(&dirs.scored()).len());
    }
    assert_eq!(kills, KILLS);
    assert!(
        progress.iter().any(|&n| n > 0 && n < RECORDS),
        "some kill landed mid-stream: lines after each kill {progress:?}"
    );
    let mut last = spawn();
    let started = std::time::Instant::now();
    let scored = loop {
        let scored = lines(&dirs.scored());
        let unique: HashSet<&str> = scored
            .iter()
            .map(|l| l["transaction_id"].as_str().unwrap())
            .collect();
        if unique.len() >= RECORDS {
            break scored;
        }
        assert!(last.try_wait().unwrap().is_none(), "the gateway exited");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not done: {} of {RECORDS}",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    last.kill().unwrap();
    last.wait().unwrap();
    let unique: HashSet<&str> = scored
        .iter()
        .map(|l| l["transaction_id"].as_str().unwrap())
        .collect();
    let expected: HashSet<String> = (0..RECORDS).map(|i| format!("k-{i}")).collect();
    assert_eq!(unique.len(), RECORDS);
    assert!(
        expected.iter().all(|id| unique.contains(id.as_str())),
        "every record at least once"
    );
    // A kill can lose only the checkpoint of the pages in hand: at most one page per shard.
    let duplicates = scored.len() - RECORDS;
    assert!(
        duplicates <= (kills + 1) * SHARDS * PAGE,
        "{duplicates} duplicates after {kills} kills"
    );
    // Each line is whole: a kill never leaves a torn line that hides a record.
    assert!(
        std::fs::read_to_string(dirs.scored())
            .unwrap()
            .ends_with('\n')
    );
}

/// Every record of a stream's shards, read from the start.
async fn read_all(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_owned);
        while let Some(it) = iterator {
            let page = client
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .unwrap();
            for r in page.records() {
                let line: Value = serde_json::from_slice(r.data().as_ref()).unwrap();
                out.push((r.partition_key().unwrap_or_default().to_owned(), line));
            }
            if page.records().is_empty() {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_dead_letters_can_go_to_kinesis_streams() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "in", 2).await;
    create_stream(&client, "scored-out", 1).await;
    create_stream(&client, "dead-out", 1).await;
    let mut records = transactions("o", 1_000);
    records.push(("card-z".into(), b"nonsense".to_vec()));
    put(&client, "in", &records).await;

    let dirs = Dirs::new("streams");
    let mut config = config("in", &kinesalite, &dirs, 10_000);
    let kinesis = config.kinesis.as_mut().unwrap();
    kinesis.sink = SinkConfig::Kinesis {
        stream: "arn:aws:kinesis:us-east-1:000000000000:stream/scored-out".into(),
    };
    kinesis.dead_letter = SinkConfig::Kinesis {
        stream: "dead-out".into(),
    };
    let app = start(&config, &kinesalite).await;
    let started = std::time::Instant::now();
    let scored = loop {
        let scored = read_all(&client, "scored-out").await;
        if scored.len() >= 1_000 || started.elapsed() > Duration::from_secs(30) {
            break scored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dead = read_all(&client, "dead-out").await;
    app.stop().await.unwrap();

    assert_eq!(scored.len(), 1_000);
    let mut ids = HashSet::new();
    for (key, line) in &scored {
        let id = line["transaction_id"].as_str().unwrap();
        let i: usize = id[2..].parse().unwrap();
        assert_eq!(*key, format!("card-{}", i % 97), "partitioned by card");
        assert!(line["sequence_number"].is_string());
        ids.insert(id.to_owned());
    }
    assert_eq!(ids.len(), 1_000);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "card-z");
    assert_eq!(dead[0].1["error"]["code"], "invalid_json");
    assert!(
        !dirs.scored().exists(),
        "nothing went to the default file sink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_iterator_is_renewed_from_the_checkpoint() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "expiring", 1).await;
    put(&client, "expiring", &transactions("x", 300)).await;

    // The 3rd and 4th GetRecords calls find their iterator expired.
    let proxy = common::peers::ExpiringKinesis::start(&kinesalite.url, vec![3, 4]).await;
    let dirs = Dirs::new("expiring");
    let mut config = config("expiring", &kinesalite, &dirs, 50);
    config.kinesis.as_mut().unwrap().endpoint_url = Some(proxy.url.clone());
    let clients = Clients {
        kinesis: Some(aws_sdk_kinesis::Client::from_conf(
            kinesalite
                .client()
                .config()
                .to_builder()
                .endpoint_url(&proxy.url)
                .build(),
        )),
        ..Clients::default()
    };
    let app = serve(Gateway::build_with(&config, clients).await.unwrap()).await;
    let scored = wait_for_lines(&dirs.scored(), 300, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expired = common::metric(
        &app,
        "infergate_kinesis_expired_iterators_total{shard=\"shardId-000000000000\"}",
    )
    .await;

    app.stop().await.unwrap();
    let scored_final = lines(&dirs.scored());
    let ids: HashSet<&str> = scored_final
        .iter()
        .map(|l| l["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 300, "every record after the renewals");
    assert_eq!(
        scored_final.len(),
        300,
        "and none twice: renewed after the checkpoint"
    );
    assert_eq!(scored.len(), 300);
    assert!(expired.is_some_and(|n| n >= 2.0), "{expired:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outage_holds_the_shard_and_every_record_ends_scored() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "outage", 1).await;

    let dirs = Dirs::new("outage");
    let config = config("outage", &kinesalite, &dirs, 100);
    // The first calls fail as a model outage would: the rows are scored again, never
    // dead-lettered, and nothing is checkpointed past them meanwhile.
    let model = Arc::new(common::TestModel::labelled("outage"));
    *model.fail_first.lock().unwrap() = 3;
    let auth = infergate::middleware::auth::Auth::from_config(&config, |_| None).unwrap();
    let gateway = Gateway::with_model(&config, Arc::clone(&model) as Arc<dyn Model>, auth)
        .with_consumer(Clients {
            kinesis: Some(kinesalite.client()),
            ..Clients::default()
        })
        .await
        .expect("the consumer starts");
    let app = serve(gateway).await;
    put(&client, "outage", &transactions("m", 300)).await;

    let scored = wait_for_lines(&dirs.scored(), 300, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = app.get("/health/ready").await.status();
    app.stop().await.unwrap();

    assert!(model.calls() > 3, "the failed rows were scored again");
    let dead = lines(&dirs.dead());
    assert!(
        dead.is_empty(),
        "a model outage dead-letters nothing: {dead:?}"
    );
    let ids: HashSet<&str> = scored
        .iter()
        .map(|l| l["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 300, "every record scored");
    assert_eq!(scored.len(), 300, "once");
    let seqs: Vec<(usize, String)> = scored.iter().map(seq_key).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in shard order");
    assert_eq!(ready, 200, "ready again once the model answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_checkpoint_makes_the_shard_unready_until_reset_to_the_initial_position() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "rejected", 1).await;
    put(&client, "rejected", &transactions("j", 50)).await;

    // A checkpoint from another stream (or before this one was deleted and recreated).
    let dirs = Dirs::new("rejected");
    let checkpoints = dirs.root.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    let shard = "shardId-000000000000";
    std::fs::write(
        checkpoints.join("rejected.json"),
        json!({shard: {"sequence_number": "49590338271490256608559692538361571095921575989136588898",
            "sub_sequence_number": null, "ended": false}})
        .to_string(),
    )
    .unwrap();
    let mut config = config("rejected", &kinesalite, &dirs, 100);
    config.kinesis.as_mut().unwrap().stall_timeout_ms = 1_500;

    let app = start(&config, &kinesalite).await;
    let started = std::time::Instant::now();
    let response = loop {
        let response = app.get("/health/ready").await;
        if response.status() == 503 {
            break response;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "readiness never failed for the stalled shard"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stalled_after = started.elapsed();
    let problem = common::assert_problem(response, 503, "model_unavailable").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(shard), "{detail}");
    assert!(detail.contains("InvalidArgumentException"), "{detail}");
    assert!(
        detail.contains("reset_invalid_checkpoints"),
        "the way out: {detail}"
    );
    let stalled = common::metric(
        &app,
        "infergate_kinesis_shards_stalled{stream=\"rejected\"}",
    )
    .await;
    app.stop().await.unwrap();
    assert!(
        stalled_after >= Duration::from_millis(1_000),
        "not before the stall timeout: {stalled_after:?}"
    );
    assert_eq!(stalled, Some(1.0));
    assert!(
        lines(&dirs.scored()).is_empty(),
        "nothing read past a rejected checkpoint"
    );

    // The operator's way out: the shard starts again from the initial position.
    config.kinesis.as_mut().unwrap().reset_invalid_checkpoints = true;
    let app = start(&config, &kinesalite).await;
    let scored = wait_for_lines(&dirs.scored(), 50, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = app.get("/health/ready").await.status();
    app.stop().await.unwrap();
    assert_eq!(scored.len(), 50, "every record, from TRIM_HORIZON");
    assert_eq!(ready, 200);
    let saved: Value =
        serde_json::from_slice(&std::fs::read(checkpoints.join("rejected.json")).unwrap()).unwrap();
    assert_eq!(
        saved[shard]["sequence_number"],
        scored.last().unwrap()["sequence_number"],
        "checkpointed anew"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_decline_and_review_flagged_results_carry_their_reason_codes() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client();
    create_stream(&client, "reasons", 1).await;
    let flagged = common::transaction(
        "flagged",
        json!({"amount": 1500.0, "avg_amount_30d": 50.0, "card_present": false, "country": "BR",
               "home_country": "DE", "distance_from_home_km": 9000.0, "tx_count_1h": 5,
               "tx_count_24h": 9, "merchant_category": 6051}),
    );
    let routine = common::transaction("routine", json!({}));
    let records: Vec<(String, Vec<u8>)> = [flagged, routine]
        .iter()
        .map(|tx| ("card-7".to_owned(), tx.to_string().into_bytes()))
        .collect();
    put(&client, "reasons", &records).await;

    let dirs = Dirs::new("reasons");
    let mut config = config("reasons", &kinesalite, &dirs, 100);
    config.explanations.mode = infergate::config::ExplainMode::DeclineAndReview;
    let app = start(&config, &kinesalite).await;
    let scored = wait_for_lines(&dirs.scored(), 2, Duration::from_secs(30)).await;
    app.stop().await.unwrap();
    let line = |id: &str| {
        scored
            .iter()
            .find(|l| l["transaction_id"] == id)
            .unwrap()
            .clone()
    };
    let flagged = line("flagged");
    assert_ne!(flagged["decision"], "approve");
    let reasons = flagged["explanation"]["reason_codes"].as_array().unwrap();
    assert_eq!(reasons.len(), 3, "{flagged}");
    let routine = line("routine");
    assert_eq!(routine["decision"], "approve");
    assert!(routine.get("explanation").is_none(), "{routine}");
}
