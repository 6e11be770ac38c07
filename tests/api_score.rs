//! The REST API end to end, over a real socket, on the embedded model (or a test model where
//! timing must be controlled).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestModel, assert_problem, spawn_app, spawn_app_with, transaction};
use infergate::Config;
use infergate::model::xgboost::XgbModel;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

#[tokio::test]
async fn scores_a_transaction_like_the_evaluator_does() {
    let app = spawn_app(Config::default()).await;
    let risky = transaction(
        "tx-risky",
        json!({"amount": 1900.0, "avg_amount_30d": 40.0, "card_present": false, "country": "BR",
               "distance_from_home_km": 9800.0, "tx_count_1h": 7, "tx_count_24h": 15,
               "merchant_category": 5967, "timestamp": "2026-11-26T03:00:00Z"}),
    );
    let response = app.post_json("/v1/transactions/score", &risky).await;
    assert_eq!(response.status(), 200);
    let score: Value = response.json().await.unwrap();
    assert_eq!(score["transaction_id"], "tx-risky");
    assert_eq!(score["cached"], false);
    assert!(
        score["model"].as_str().unwrap().starts_with("fraud-xgb@"),
        "{score}"
    );

    // The same features through the evaluator directly, in the model's own order.
    let model = XgbModel::from_path(&common::repo_path("models/fraud-xgb/model.json")).unwrap();
    let features: Vec<f32> = model
        .feature_names()
        .iter()
        .map(|name| match name.as_str() {
            "amount" => 1900.0,
            "amount_ratio_30d" => 1900.0 / 40.0,
            "hour_of_day" => 3.0,
            "merchant_category" => 5967.0,
            "card_present" => 0.0,
            "foreign" => 1.0,
            "distance_from_home_km" => 9800.0,
            "tx_count_1h" => 7.0,
            "tx_count_24h" => 15.0,
            other => panic!("unexpected feature {other}"),
        })
        .collect();
    let expected = model.predict_row(&features);
    let got = score["fraud_score"].as_f64().unwrap() as f32;
    assert_eq!(got, expected);
    let decision = if expected >= 0.9 {
        "decline"
    } else if expected >= 0.5 {
        "review"
    } else {
        "approve"
    };
    assert_eq!(score["decision"], decision);

    let safe = app
        .post_json("/v1/transactions/score", &transaction("tx-safe", json!({})))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert!(
        safe["fraud_score"].as_f64().unwrap() < score["fraud_score"].as_f64().unwrap(),
        "a routine purchase scores below a risky one: {safe} vs {score}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_input_lists_every_field_error() {
    let app = spawn_app(Config::default()).await;
    let body = json!({
        "transaction_id": "tx-bad",
        "amount": -5,
        "merchant_category": "grocery",
        "card_present": true,
        "country": "DE",
        "home_country": "DE",
        "distance_from_home_km": 1.0,
        "tx_count_1h": 0,
        "tx_count_24h": 0,
        "avg_amount_30d": 10.0,
        "cvv": "123"
    });
    let problem = assert_problem(
        app.post_json("/v1/transactions/score", &body).await,
        400,
        "invalid_input",
    )
    .await;
    let mut fields: Vec<(String, String)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("amount", "out_of_range"),
            ("card_id", "missing"),
            ("cvv", "unknown_field"),
            ("merchant_category", "wrong_type"),
        ]
        .map(|(f, c)| (f.to_owned(), c.to_owned()))
    );
    assert!(
        !problem.to_string().contains("123\""),
        "values of unknown fields are not echoed"
    );

    // Not JSON at all, and a JSON number too large for a finite f64.
    for raw in ["{\"transaction_id\": ", "{\"amount\": 1e999}", "[1, NaN]"] {
        let response = app
            .client
            .post(app.url("/v1/transactions/score"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 400, "invalid_input").await;
        assert_eq!(
            problem["errors"][0]["code"], "invalid_json",
            "{raw}: {problem}"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_content_type_is_415_and_oversized_body_is_413() {
    let mut config = Config::default();
    config.limits.body_limit_bytes = 2048;
    let app = spawn_app(config).await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .client
            .post(app.url("/v1/transactions/score"))
            .body(transaction("tx", json!({})).to_string());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        assert_problem(request.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
    let big = transaction("tx", json!({"card_id": "x".repeat(4096)}));
    assert_problem(
        app.post_json("/v1/transactions/score", &big).await,
        413,
        "payload_too_large",
    )
    .await;
    // Same without a content-length: a chunked body is cut off at the limit too.
    let raw = big.to_string();
    let (a, b) = raw.split_at(1500);
    let request = format!(
        "POST /v1/transactions/score HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("urn:infergate:problem:payload_too_large"),
        "{answer}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let gate = Arc::new(Semaphore::new(0));
    let model = Arc::new(TestModel {
        gate: Some(Arc::clone(&gate)),
        ..TestModel::default()
    });
    let mut config = Config::default();
    config.batching.max_queue_rows = 1;
    config.limits.max_batch_items = 1;
    let app = spawn_app_with(config, model).await;
    let held = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/transactions/score");
        async move {
            client
                .post(url)
                .json(&transaction("tx-held", json!({})))
                .send()
                .await
        }
    });
    // Wait until the held row occupies the queue's only place.
    let mut full = false;
    for _ in 0..500 {
        let health: Value = app.get("/health/live").await.json().await.unwrap();
        if health["queued_rows"] == 1 {
            full = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(full, "the first request is queued");
    let response = app
        .post_json("/v1/transactions/score", &transaction("tx-shed", json!({})))
        .await;
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = assert_problem(response, 503, "overloaded").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("queue is full"),
        "{problem}"
    );
    gate.add_permits(1);
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_model_answers_504_at_the_deadline() {
    let model = Arc::new(TestModel {
        delay: Duration::from_secs(5),
        ..TestModel::default()
    });
    let mut config = Config::default();
    config.batching.deadline_ms = 200;
    let app = spawn_app_with(config, model).await;
    let started = std::time::Instant::now();
    let response = app
        .post_json("/v1/transactions/score", &transaction("tx-slow", json!({})))
        .await;
    let problem = assert_problem(response, 504, "deadline_exceeded").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the deadline, not after the model"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("200 ms"),
        "{problem}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn batch_scores_in_order_and_fails_only_invalid_items() {
    let app = spawn_app(Config::default()).await;
    let body = json!({"transactions": [
        transaction("tx-a", json!({})),
        transaction("tx-b", json!({"amount": "lots"})),
        transaction("tx-c", json!({"amount": 880.0, "card_present": false, "country": "US"})),
    ]});
    let response = app.post_json("/v1/transactions/score-batch", &body).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["index"], 0);
    assert_eq!(results[0]["status"], 200);
    assert_eq!(results[0]["score"]["transaction_id"], "tx-a");
    assert_eq!(results[1]["status"], 400);
    assert_eq!(
        results[1]["error"]["errors"][0]["field"],
        "transactions[1].amount"
    );
    assert_eq!(results[1]["error"]["errors"][0]["code"], "wrong_type");
    assert!(results[1].get("score").is_none());
    assert_eq!(results[2]["score"]["transaction_id"], "tx-c");

    // Each score equals the single-transaction endpoint's.
    for (i, id) in [(0, "tx-a"), (2, "tx-c")] {
        let single: Value = app
            .post_json("/v1/transactions/score", &body_tx(&body, i, id))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(single["fraud_score"], results[i]["score"]["fraud_score"]);
    }
    app.stop().await.unwrap();
}

fn body_tx(_: &Value, i: usize, id: &str) -> Value {
    match i {
        0 => transaction(id, json!({})),
        _ => transaction(
            id,
            json!({"amount": 880.0, "card_present": false, "country": "US"}),
        ),
    }
}

#[tokio::test]
async fn batch_request_problems_are_400() {
    let mut config = Config::default();
    config.limits.max_batch_items = 2;
    let app = spawn_app(config).await;
    let three = json!({"transactions": [
        transaction("1", json!({})), transaction("2", json!({})), transaction("3", json!({}))
    ]});
    let cases = [
        (json!([]), "wrong_type"),
        (json!({}), "missing"),
        (json!({"transactions": []}), "too_many"),
        (three, "too_many"),
        (json!({"transactions": {}}), "wrong_type"),
        (json!({"transactions": [], "extra": 1}), "unknown_field"),
    ];
    for (body, code) in cases {
        let problem = assert_problem(
            app.post_json("/v1/transactions/score-batch", &body).await,
            400,
            "invalid_input",
        )
        .await;
        let codes: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "{body}: {problem}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn health_metrics_docs_and_unknown_routes() {
    let app = spawn_app(Config::default()).await;
    let live: Value = app.get("/health/live").await.json().await.unwrap();
    assert_eq!(live["status"], "ok");
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);

    // Every response carries a request id: a new one, distinct per request, or the caller's own.
    let ids: Vec<String> = [
        app.post_json("/v1/transactions/score", &transaction("tx-m", json!({})))
            .await,
        app.get("/health/live").await,
    ]
    .iter()
    .map(|r| r.headers()["x-request-id"].to_str().unwrap().to_owned())
    .collect();
    assert_ne!(ids[0], ids[1]);
    let prefix = |id: &str| id.split('-').next().unwrap().to_owned();
    assert_eq!(prefix(&ids[0]), prefix(&ids[1]), "{ids:?}");
    assert_eq!(prefix(&ids[0]).len(), 16, "{ids:?}");
    let echoed = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "caller-chosen-7")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "caller-chosen-7");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for name in [
        "infergate_http_requests_total{route=\"/v1/transactions/score\",method=\"POST\",status=\"200\"}",
        "infergate_http_request_duration_seconds_bucket",
        "infergate_batch_rows_bucket",
        "infergate_model_duration_seconds_bucket",
        "infergate_queue_rows",
        "infergate_cache_entries",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }

    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["paths"]["/v1/transactions/score"]["post"].is_object());
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "Swagger UI is served"
    );

    assert_problem(app.get("/v1/nothing-here").await, 404, "not_found").await;
    let wrong_method = app.get("/v1/transactions/score").await;
    assert_eq!(wrong_method.status(), 405);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_fails_readiness() {
    let model = Arc::new(TestModel {
        delay: Duration::from_millis(400),
        ..TestModel::default()
    });
    let mut app = spawn_app_with(Config::default(), model).await;
    let in_flight = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/transactions/score");
        async move {
            client
                .post(url)
                .json(&transaction("tx-late", json!({})))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = app.begin_stop();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the in-flight request is answered");
    let score: Value = response.json().await.unwrap();
    assert_eq!(score["fraud_score"], 0.5);
    stopping.await.unwrap().unwrap();
    assert!(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_model_whose_features_cannot_be_derived_refuses_to_start() {
    let text = std::fs::read_to_string(common::repo_path("models/fraud-xgb/model.json")).unwrap();
    let mut model: Value = serde_json::from_str(&text).unwrap();
    let names = model["learner"]["feature_names"].as_array_mut().unwrap();
    names[0] = json!("zip_code");
    let path = std::env::temp_dir().join(format!(
        "infergate-bad-features-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, model.to_string()).unwrap();
    let mut config = Config::default();
    config.model.path = Some(path.clone());
    let err = infergate::Gateway::build(&config)
        .await
        .err()
        .expect("refused")
        .to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains("zip_code"), "{err}");
    assert!(
        err.contains("amount_ratio_30d"),
        "both lists are in the message: {err}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let mut config = Config::default();
    config.http.header_read_timeout_ms = 300;
    let app = spawn_app(config).await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /v1/transactions/score HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (possibly after a 408); the read then ends.
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    // Meanwhile, and after, well-behaved clients are served.
    let ok = app
        .post_json(
            "/v1/transactions/score",
            &transaction("tx-after-slow", json!({})),
        )
        .await;
    assert_eq!(ok.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    /// Whether a 200 arrives on `stream` within half a second.
    async fn answered(stream: &mut tokio::net::TcpStream) -> bool {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(n)) => n > 0 && buf.starts_with(b"HTTP/1.1 200"),
            _ => false,
        }
    }

    let mut config = Config::default();
    config.http.max_connections = 1;
    let mut app = spawn_app(config).await;
    // The harness's client keeps its readiness check's connection; a new client lets it go.
    app.client = reqwest::Client::new();
    let request = b"GET /health/live HTTP/1.1\r\nhost: test\r\n\r\n";
    // The first connection is served and stays open (keep-alive).
    let mut first = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    first.write_all(request).await.unwrap();
    assert!(answered(&mut first).await, "the first connection is served");
    // The second one connects (the backlog takes it) but is not served while the first is open.
    let mut second = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    second.write_all(request).await.unwrap();
    assert!(
        !answered(&mut second).await,
        "a connection past the limit was served"
    );
    // Once the first closes, the second is served.
    drop(first);
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("the waiting connection is served once a slot frees")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    app.stop().await.unwrap();
}

/// `Server-Timing`'s entries, name → milliseconds.
fn server_timing(response: &reqwest::Response) -> std::collections::BTreeMap<String, f64> {
    let header = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    header
        .split(',')
        .map(|entry| {
            let (name, dur) = entry.trim().split_once(";dur=").unwrap();
            (name.to_owned(), dur.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn scores_say_where_their_time_went_in_server_timing() {
    let app = spawn_app(Config::default()).await;
    let tx = transaction("timed", json!({}));
    let miss = app.post_json("/v1/transactions/score", &tx).await;
    let timing = server_timing(&miss);
    assert_eq!(
        timing.keys().collect::<Vec<_>>(),
        ["auth", "model", "queue", "total"],
        "{timing:?}"
    );
    assert!(timing["total"] >= timing["model"] && timing["total"] >= timing["auth"]);
    let hit = app.post_json("/v1/transactions/score", &tx).await;
    let timing = server_timing(&hit);
    assert_eq!(
        timing.keys().collect::<Vec<_>>(),
        ["auth", "total"],
        "a cached score: {timing:?}"
    );

    let batch = app
        .post_json(
            "/v1/transactions/score-batch",
            &json!({"transactions": [transaction("t-1", json!({})), transaction("t-2", json!({}))]}),
        )
        .await;
    assert!(server_timing(&batch).contains_key("model"));
    let csv = app
        .client
        .post(app.url("/endpoints/fraud-xgb/invocations"))
        .header("content-type", "text/csv")
        .body("1500,30,2,6051,0,1,9000,5,9\n")
        .send()
        .await
        .unwrap();
    assert!(server_timing(&csv).contains_key("queue"));
    // An error has none: it said nothing of a score.
    let bad = app.post_json("/v1/transactions/score", &json!({})).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.headers().get("server-timing").is_none());
}
