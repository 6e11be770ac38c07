//! The Prometheus side of operations: Debian's `prometheus` scrapes a running gateway and
//! answers a query for one of its series, and every metric the alerting rules and the Grafana
//! dashboard read is one the gateway's code records.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo_path, spawn_app, transaction};
use infergate::Config;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway_and_answers_for_its_series() {
    let app = spawn_app(Config::default()).await;
    let scored = app
        .post_json("/v1/transactions/score", &transaction("p-1", json!({})))
        .await;
    assert_eq!(scored.status(), 200);
    let dir = std::env::temp_dir().join(format!("infergate-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let target = app.addr.to_string();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: infergate\n    static_configs:\n      - targets: [\"{target}\"]\n",
            repo_path("deploy/prometheus/alerts.yml").display()
        ),
    )
    .unwrap();
    let port = common::free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs: scripts/test installs it (apt-get install prometheus)");
    let client = reqwest::Client::new();
    let query = |q: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        }
    };
    let started = Instant::now();
    let (ready, scored) = loop {
        let ready = query("infergate_ready").await;
        let scored = query("infergate_rows_scored_total").await;
        let value = |v: &Option<Value>| {
            v.as_ref().and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_owned)
            })
        };
        if let (Some(r), Some(s)) = (value(&ready), value(&scored)) {
            break (r, s);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus never had the series: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ready, "1");
    assert!(scored.parse::<f64>().unwrap() >= 1.0, "{scored}");
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_read_is_recorded_by_the_gateway() {
    let dashboard = std::fs::read_to_string(repo_path("deploy/grafana/infergate.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().unwrap().len() >= 8);
    let rules =
        std::fs::read_to_string(repo_path("deploy/prometheus/alerts.yml")).unwrap() + &dashboard;
    let mut source = String::new();
    let mut dirs = vec![repo_path("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                source.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("infergate_"))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 15, "{names:?}");
    for name in names {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            source.contains(&format!("\"{base}\"")),
            "the alerts or the dashboard read {name}, which no code records"
        );
    }
}
