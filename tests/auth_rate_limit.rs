//! Gateway controls end to end: credentials (API keys, SigV4), usage plans, the response cache.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use common::{TestApp, TestModel, assert_problem, metric, spawn_app_env, transaction};
use infergate::Config;
use infergate::config::{ApiKeyConfig, SigV4Config};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CHECKOUT_KEY: &str = "ck_live_8f2b1c5e9a7d4f60b3e1";
const REPORTING_KEY: &str = "rk_live_0d4e6a2c8b1f3e5d7c9a";
const OPS_KEY: &str = "ops_live_5b7d9f1a3c5e7a9c1e3f";
const FLINK_AKID: &str = "AKIDFLINKSCORER";
const FLINK_SECRET: &str = "q8Xv2LmN4pR6sT8uW0yZ2bD4fH6jK8mN0pR2tV4x";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn api_key(name: &str, key: &str, rate: u32, burst: u32) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.to_owned(),
        key_sha256: Some(sha256_hex(key)),
        key_env: None,
        rate,
        burst: Some(burst),
        quota_per_day: None,
        allow_cache_bypass: false,
    }
}

/// Keys: checkout (rate 1/s, burst 2), reporting (generous, by environment), ops (may bypass
/// the cache); a SigV4 caller for the stream job.
fn secured_config() -> Config {
    let mut config = Config::default();
    let mut reporting = api_key("reporting", REPORTING_KEY, 1000, 1000);
    reporting.key_sha256 = None;
    reporting.key_env = Some("TEST_REPORTING_KEY".into());
    let mut ops = api_key("ops", OPS_KEY, 1000, 1000);
    ops.allow_cache_bypass = true;
    config.auth.api_keys = vec![api_key("checkout", CHECKOUT_KEY, 1, 2), reporting, ops];
    config.auth.sigv4 = vec![SigV4Config {
        access_key_id: FLINK_AKID.into(),
        secret_env: "TEST_FLINK_SECRET".into(),
        name: Some("flink".into()),
        rate: 1000,
        burst: Some(1000),
        quota_per_day: None,
        allow_cache_bypass: false,
    }];
    config
}

const ENV: &[(&str, &str)] = &[
    ("TEST_REPORTING_KEY", REPORTING_KEY),
    ("TEST_FLINK_SECRET", FLINK_SECRET),
];

/// Every log line of this test binary, at TRACE, so that tests can check no secret is logged.
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(logs))
            .try_init();
        logs
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// No configured key or secret in anything logged so far (by any test of this binary).
fn assert_no_secret_logged() {
    let logs = captured_logs().lock().unwrap();
    let text = String::from_utf8_lossy(&logs);
    assert!(!text.is_empty(), "the log capture works");
    for secret in [CHECKOUT_KEY, REPORTING_KEY, OPS_KEY, FLINK_SECRET] {
        assert!(!text.contains(secret), "a secret was logged");
    }
}

async fn secured_app(config: Config, model: TestModel) -> (TestApp, Arc<TestModel>) {
    captured_logs();
    let model = Arc::new(model);
    let app = spawn_app_env(config, Arc::clone(&model) as _, ENV).await;
    (app, model)
}

async fn score_with_key(app: &TestApp, key: &str, tx: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/transactions/score"))
        .header("x-api-key", key)
        .json(tx)
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn requests_without_valid_credentials_are_401() {
    let (app, model) = secured_app(secured_config(), TestModel::default()).await;
    let tx = transaction("tx-auth", json!({}));

    let anonymous = app.post_json("/v1/transactions/score", &tx).await;
    assert!(header(&anonymous, "www-authenticate").contains("x-api-key"));
    let problem = assert_problem(anonymous, 401, "unauthorized").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("credentials are required")
    );

    let wrong = score_with_key(&app, "ck_live_not_a_real_key", &tx).await;
    let problem = assert_problem(wrong, 401, "unauthorized").await;
    assert!(
        !problem.to_string().contains("ck_live_not_a_real_key"),
        "the key is not echoed"
    );

    // Authentication comes before anything else: even an invalid body gets 401.
    let response = app
        .client
        .post(app.url("/v1/transactions/score-batch"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(model.calls(), 0);

    let ok = score_with_key(&app, REPORTING_KEY, &tx).await;
    assert_eq!(ok.status(), 200, "a key given by environment works");
    assert_eq!(header(&ok, "ratelimit-limit"), "1000");
    assert_eq!(header(&ok, "ratelimit-remaining"), "999");
    // Health, metrics and docs stay open.
    assert_eq!(app.get("/health/ready").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 200);
    app.stop().await.unwrap();
    assert_no_secret_logged();
}

#[tokio::test]
async fn burst_exceeded_is_429_with_retry_after_and_then_recovers() {
    let (app, _model) = secured_app(secured_config(), TestModel::default()).await;
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..3 {
        let response = score_with_key(
            &app,
            CHECKOUT_KEY,
            &transaction(&format!("tx-{i}"), json!({})),
        )
        .await;
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    assert_eq!(statuses, [200, 200, 429], "burst of 2");
    let limited = last.unwrap();
    assert_eq!(header(&limited, "retry-after"), "1", "one token per second");
    assert_eq!(header(&limited, "ratelimit-limit"), "2");
    assert_eq!(header(&limited, "ratelimit-remaining"), "0");
    assert_eq!(header(&limited, "ratelimit-reset"), "2");
    let problem = assert_problem(limited, 429, "rate_limited").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("1 per second (burst 2)"),
        "{problem}"
    );

    tokio::time::sleep(Duration::from_millis(1050)).await;
    let after = score_with_key(&app, CHECKOUT_KEY, &transaction("tx-after", json!({}))).await;
    assert_eq!(after.status(), 200, "a request after Retry-After succeeds");

    // A batch costs one token per transaction: 3 transactions never fit a burst of 2.
    let batch = app
        .client
        .post(app.url("/v1/transactions/score-batch"))
        .header("x-api-key", CHECKOUT_KEY)
        .json(&json!({"transactions": [transaction("b1", json!({})), transaction("b2", json!({})), transaction("b3", json!({}))]}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(batch, 429, "rate_limited").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("costs 3 tokens"),
        "{problem}"
    );
    app.stop().await.unwrap();
    assert_no_secret_logged();
}

#[tokio::test]
async fn an_exhausted_daily_quota_is_429_until_midnight() {
    let mut config = secured_config();
    config.auth.api_keys[1].quota_per_day = Some(3);
    let (app, _model) = secured_app(config, TestModel::default()).await;
    let batch = app
        .client
        .post(app.url("/v1/transactions/score-batch"))
        .header("x-api-key", REPORTING_KEY)
        .json(
            &json!({"transactions": [transaction("q1", json!({})), transaction("q2", json!({}))]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 200);
    assert_eq!(
        header(&batch, "ratelimit-limit"),
        "3",
        "the quota is the tighter limit"
    );
    assert_eq!(header(&batch, "ratelimit-remaining"), "1");
    assert_eq!(
        score_with_key(&app, REPORTING_KEY, &transaction("q3", json!({})))
            .await
            .status(),
        200
    );
    let over = score_with_key(&app, REPORTING_KEY, &transaction("q4", json!({}))).await;
    let until_midnight = 86_400
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 86_400;
    let retry: u64 = header(&over, "retry-after").parse().unwrap();
    assert!(
        retry.abs_diff(until_midnight) <= 2,
        "{retry} vs {until_midnight}"
    );
    let problem = assert_problem(over, 429, "rate_limited").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("daily quota of 3"),
        "{problem}"
    );
    app.stop().await.unwrap();
    assert_no_secret_logged();
}

#[tokio::test]
async fn one_callers_flood_does_not_slow_another_caller() {
    let (app, _model) = secured_app(secured_config(), TestModel::default()).await;
    let flood = {
        let client = app.client.clone();
        let url = app.url("/v1/transactions/score");
        tokio::spawn(async move {
            let mut limited = 0;
            for i in 0..200 {
                let response = client
                    .post(&url)
                    .header("x-api-key", CHECKOUT_KEY)
                    .json(&transaction(&format!("flood-{i}"), json!({})))
                    .send()
                    .await
                    .unwrap();
                if response.status() == 429 {
                    limited += 1;
                }
            }
            limited
        })
    };
    for i in 0..40 {
        let response = score_with_key(
            &app,
            REPORTING_KEY,
            &transaction(&format!("other-{i}"), json!({})),
        )
        .await;
        assert_eq!(response.status(), 200, "the other caller is never limited");
    }
    let limited = flood.await.unwrap();
    assert!(
        limited >= 190,
        "the flooding key is held to its plan: {limited} of 200 limited"
    );
    app.stop().await.unwrap();
    assert_no_secret_logged();
}

/// A request signed the way the AWS SDK signs, at `time`, with `secret`.
fn signed(app: &TestApp, body: &[u8], secret: &str, time: SystemTime) -> reqwest::Request {
    let url = app.url("/v1/transactions/score");
    let identity = Credentials::new(FLINK_AKID, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = app.addr.to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    request.build().unwrap()
}

#[tokio::test]
async fn sigv4_callers_are_verified() {
    let (app, _model) = secured_app(secured_config(), TestModel::default()).await;
    let body = transaction("tx-signed", json!({})).to_string();
    let now = SystemTime::now();

    let ok = app
        .client
        .execute(signed(&app, body.as_bytes(), FLINK_SECRET, now))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.json::<Value>().await.unwrap()["transaction_id"],
        "tx-signed"
    );

    // The body is changed after signing.
    let mut tampered = signed(&app, body.as_bytes(), FLINK_SECRET, now);
    *tampered.body_mut() = Some(body.replace("tx-signed", "tx-forged").into());
    let response = app.client.execute(tampered).await.unwrap();
    let problem = assert_problem(response, 401, "unauthorized").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{problem}"
    );

    let wrong_secret = signed(&app, body.as_bytes(), "not-the-secret", now);
    assert_problem(
        app.client.execute(wrong_secret).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    let stale = signed(
        &app,
        body.as_bytes(),
        FLINK_SECRET,
        now - Duration::from_secs(6 * 60),
    );
    let problem = assert_problem(
        app.client.execute(stale).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("X-Amz-Date"),
        "{problem}"
    );
    app.stop().await.unwrap();
    assert_no_secret_logged();
}

#[tokio::test]
async fn identical_concurrent_requests_make_one_model_call() {
    let model = TestModel {
        delay: Duration::from_millis(300),
        ..TestModel::labelled("coalesce")
    };
    let (app, model) = secured_app(secured_config(), model).await;
    let tx = transaction("tx-same", json!({"amount": 77.0}));
    let mut requests = Vec::new();
    for _ in 0..10 {
        let (client, url, tx) = (
            app.client.clone(),
            app.url("/v1/transactions/score"),
            tx.clone(),
        );
        requests.push(tokio::spawn(async move {
            client
                .post(url)
                .header("x-api-key", REPORTING_KEY)
                .json(&tx)
                .send()
                .await
                .unwrap()
        }));
    }
    let mut cached = Vec::new();
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status(), 200);
        let score: Value = response.json().await.unwrap();
        cached.push(score["cached"].as_bool().unwrap());
    }
    assert_eq!(cached.iter().filter(|c| !**c).count(), 1, "{cached:?}");
    let calls = metric(&app, "infergate_model_calls_total{model=\"coalesce@1\"}").await;
    assert_eq!(calls, Some(1.0), "one model call, per the metric");
    assert_eq!(model.calls(), 1);

    let again: Value = score_with_key(&app, REPORTING_KEY, &tx)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["cached"], true);
    assert!(
        metric(
            &app,
            "infergate_cache_requests_total{cache=\"score\",result=\"hit\"}"
        )
        .await
        .unwrap()
            >= 10.0
    );
    app.stop().await.unwrap();
    assert_no_secret_logged();
}

#[tokio::test]
async fn no_cache_refreshes_only_for_plans_that_allow_it() {
    let (app, model) = secured_app(secured_config(), TestModel::default()).await;
    let tx = transaction("tx-fresh", json!({}));
    let send = |key: &'static str, no_cache: bool| {
        let mut request = app
            .client
            .post(app.url("/v1/transactions/score"))
            .header("x-api-key", key)
            .json(&tx);
        if no_cache {
            request = request.header("cache-control", "no-cache");
        }
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(send(OPS_KEY, false).await["cached"], false);
    assert_eq!(
        send(REPORTING_KEY, true).await["cached"],
        true,
        "this plan may not bypass"
    );
    assert_eq!(model.calls(), 1);
    assert_eq!(
        send(OPS_KEY, true).await["cached"],
        false,
        "bypassed and refreshed"
    );
    assert_eq!(model.calls(), 2);
    assert_eq!(send(REPORTING_KEY, false).await["cached"], true);
    app.stop().await.unwrap();
    assert_no_secret_logged();
}

#[tokio::test]
async fn a_failed_model_call_is_not_cached() {
    let model = TestModel {
        fail_first: Mutex::new(1),
        ..TestModel::default()
    };
    let (app, model) = secured_app(secured_config(), model).await;
    let tx = transaction("tx-flaky", json!({}));
    assert_problem(
        score_with_key(&app, REPORTING_KEY, &tx).await,
        503,
        "model_unavailable",
    )
    .await;
    let second: Value = score_with_key(&app, REPORTING_KEY, &tx)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["cached"], false, "{second}");
    assert_eq!(second["fraud_score"], 0.5);
    assert_eq!(model.calls(), 2);
    app.stop().await.unwrap();
    assert_no_secret_logged();
}

#[test]
fn a_public_bind_without_credentials_refuses_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_infergate"))
        .args(["--bind", "0.0.0.0:0"])
        .env_remove("INFERGATE_ALLOW_ANONYMOUS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:0 without credentials"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-anonymous"), "{stderr}");
}
