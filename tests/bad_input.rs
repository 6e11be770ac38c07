//! Hostile and malformed input: every answer a bounded, documented 4xx problem.

mod common;

use std::time::{Duration, Instant};

use common::{assert_problem, spawn_app};
use infergate::Config;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response read off a raw connection: its head (status line and headers, lower-cased) and
/// its body.
struct Raw {
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }

    fn problem(&self) -> Value {
        assert!(
            self.head.contains("content-type: application/problem+json"),
            "{}",
            self.head
        );
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Sends `request` as is and reads the first response (whole, by its Content-Length), giving
/// up after `within`.
async fn exchange(stream: &mut TcpStream, request: &[u8], within: Duration) -> Raw {
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                if buf.len() >= end + 4 + length || n == 0 {
                    let body = buf[end + 4..].to_vec();
                    return Raw { head, body };
                }
            }
            assert!(
                n > 0,
                "closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("no response in time")
}

/// A transaction object made of `n` unknown fields (and none of the required ones).
fn unknown_fields(n: usize) -> Value {
    let fields: Map<String, Value> = (0..n).map(|i| (format!("f{i}"), json!(i))).collect();
    Value::Object(fields)
}

#[tokio::test]
async fn a_transaction_lists_at_most_100_problems_and_counts_the_rest() {
    let mut config = Config::default();
    config.limits.body_limit_bytes = 8 * 1024 * 1024;
    let app = spawn_app(config).await;
    let response = app
        .post_json("/v1/transactions/score", &unknown_fields(50_000))
        .await;
    let bytes = response.content_length();
    let problem = assert_problem(response, 400, "invalid_input").await;
    let listed = problem["errors"].as_array().unwrap().len();
    assert_eq!(listed, 100);
    let truncated = problem["truncated"].as_u64().expect("a truncated count") as usize;
    let total = listed + truncated;
    assert!(
        total > 50_000,
        "every unknown and missing field is counted: {total}"
    );
    assert_eq!(
        problem["detail"],
        format!("the transaction has {total} invalid field(s)")
    );
    assert!(
        bytes.is_some_and(|b| b < 20_000),
        "the response stays small: {bytes:?} bytes"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_response_lists_at_most_1000_problems() {
    let mut config = Config::default();
    config.limits.body_limit_bytes = 8 * 1024 * 1024;
    let app = spawn_app(config).await;
    let body = json!({"transactions": (0..40).map(|_| unknown_fields(300)).collect::<Vec<_>>()});
    let response = app.post_json("/v1/transactions/score-batch", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 40);
    let listed: usize = results
        .iter()
        .map(|r| r["error"]["errors"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(listed, 1000, "the budget of the whole response");
    for result in results {
        assert_eq!(result["status"], 400);
        let error = &result["error"];
        let shown = error["errors"].as_array().map_or(0, Vec::len);
        let truncated = error["truncated"].as_u64().unwrap_or(0) as usize;
        assert!(shown <= 100);
        assert_eq!(
            error["detail"],
            format!("the transaction has {} invalid field(s)", shown + truncated),
            "each item still counts all of its problems"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_at_once_without_100_continue() {
    let app = spawn_app(Config::default()).await;
    for expect in ["", "expect: 100-continue\r\n"] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let started = Instant::now();
        let request = format!(
            "POST /v1/transactions/score HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
             content-length: 7000000\r\n{expect}\r\n{{}}"
        );
        let raw = exchange(&mut stream, request.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(raw.status(), 413, "{expect:?}: {}", raw.head);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            raw.problem()["type"],
            "urn:infergate:problem:payload_too_large"
        );
        assert!(raw.head.contains("connection: close"), "{}", raw.head);
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_stops_short_is_408_within_the_body_timeout() {
    let mut config = Config::default();
    config.http.body_read_timeout_ms = 300;
    config.http.request_timeout_ms = 5_000;
    let app = spawn_app(config).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let raw = exchange(
        &mut stream,
        b"POST /v1/transactions/score HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"transaction",
        Duration::from_secs(4),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(raw.status(), 408, "{}", raw.head);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(
        raw.problem()["type"],
        "urn:infergate:problem:request_timeout"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_methods_and_undecodable_paths_get_error_bodies() {
    let app = spawn_app(Config::default()).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let raw = exchange(
        &mut stream,
        b"GET /v1/transactions/score HTTP/1.1\r\nhost: t\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(raw.status(), 405);
    assert!(raw.head.contains("allow: post"), "{}", raw.head);
    assert_eq!(
        raw.problem()["type"],
        "urn:infergate:problem:method_not_allowed"
    );

    let raw = exchange(
        &mut stream,
        b"POST /endpoints/%ff/invocations HTTP/1.1\r\nhost: t\r\ncontent-type: text/csv\r\n\
          content-length: 3\r\n\r\n1,2",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(raw.status(), 400, "{}", raw.head);
    assert!(
        raw.head.contains("x-amzn-errortype: validationerror"),
        "{}",
        raw.head
    );
    let error: Value = serde_json::from_slice(&raw.body).unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("endpoint name"),
        "{error}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn duplicate_keys_and_non_utf8_charsets_are_refused() {
    let app = spawn_app(Config::default()).await;
    let body = r#"{"transaction_id": "tx-1", "transaction_id": "tx-2", "card_id": "c"}"#;
    let response = app
        .client
        .post(app.url("/v1/transactions/score"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400, "invalid_input").await;
    assert_eq!(problem["errors"][0]["code"], "duplicate_field", "{problem}");

    let response = app
        .client
        .post(app.url("/v1/transactions/score"))
        .header("content-type", "application/json; charset=latin1")
        .body(r#"{"transaction_id": "caf\xe9"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_request_leaves_its_keep_alive_connection_usable() {
    // A plan of one request, then 429s: the refusals come after the body is read, so the
    // client's next request on the same connection is answered, not met by a closed socket.
    let mut config = Config::default();
    use sha2::Digest;
    config.auth.api_keys = vec![infergate::config::ApiKeyConfig {
        name: "one".into(),
        key_sha256: Some(hex::encode(sha2::Sha256::digest(b"k-one"))),
        key_env: None,
        rate: 1,
        burst: Some(1),
        quota_per_day: None,
        allow_cache_bypass: false,
    }];
    let app = spawn_app(config).await;
    let body = serde_json::to_string(&common::transaction("tx-keep", json!({}))).unwrap();
    let request = format!(
        "POST /v1/transactions/score HTTP/1.1\r\nhost: t\r\nx-api-key: k-one\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let mut statuses = Vec::new();
    // The body arrives in two parts, as a large one does over a real network.
    let (head, tail) = request.split_at(request.len() - 20);
    for _ in 0..4 {
        stream.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let raw = exchange(&mut stream, tail.as_bytes(), Duration::from_secs(3)).await;
        assert!(!raw.head.contains("connection: close"), "{}", raw.head);
        statuses.push(raw.status());
    }
    assert_eq!(statuses, [200, 429, 429, 429]);
    app.stop().await.unwrap();
}
