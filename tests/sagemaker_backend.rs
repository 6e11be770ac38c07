//! The SageMaker model backend through the real AWS SDK, against real wire peers: moto's server,
//! a second infergate serving its SageMaker-compatible route, and a fault-injecting endpoint.

mod common;

use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_sagemakerruntime::config::{BehaviorVersion, Region};
use common::peers::{Fault, FaultyEndpoint, Moto};
use common::{TestApp, metric, spawn_app_env, transaction};
use infergate::Config;
use infergate::config::{Fallback, ModelKind, SigV4Config};
use serde_json::{Value, json};

const AKID: &str = "AKIDGATEWAYCLIENT";
const SECRET: &str = "gw7Hn2Kp4Rs6Tu8Vw0Xy2Za4Bc6De8Fg0Hi2Jk4L";

fn sdk_client(url: &str) -> aws_sdk_sagemakerruntime::Client {
    let config = aws_sdk_sagemakerruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new(AKID, SECRET, None, None, "test"))
        .retry_config(aws_sdk_sagemakerruntime::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sagemakerruntime::Client::from_conf(config)
}

/// A gateway whose model is the endpoint at `url`.
async fn gateway(url: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::default();
    config.model.kind = ModelKind::Sagemaker;
    config.model.sagemaker.endpoint_name = "fraud-xgb".into();
    config.model.sagemaker.endpoint_url = Some(url.to_owned());
    config.model.sagemaker.retry_base_ms = 5;
    config.model.sagemaker.retry_max_ms = 20;
    tweak(&mut config);
    let model = infergate::model::build(&config, Some(sdk_client(url)))
        .await
        .expect("the SageMaker model builds");
    spawn_app_env(config, model, &[]).await
}

async fn score_batch(app: &TestApp, ids: &[&str]) -> Vec<Value> {
    let transactions: Vec<Value> = ids
        .iter()
        .enumerate()
        // Features differ per id, so that no two calls send the same body (moto answers a
        // repeated body with its remembered answer).
        .map(|(i, id)| {
            let salt: u32 = id.bytes().map(u32::from).sum();
            transaction(
                id,
                json!({"amount": 10.0 + i as f64 + f64::from(salt) / 1000.0}),
            )
        })
        .collect();
    let response = app
        .post_json(
            "/v1/transactions/score-batch",
            &json!({"transactions": transactions}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["results"].as_array().unwrap().clone()
}

fn scores(results: &[Value]) -> Vec<f64> {
    results
        .iter()
        .map(|r| {
            r["score"]["fraud_score"]
                .as_f64()
                .unwrap_or_else(|| panic!("no score: {r}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_answers_reach_the_right_rows_in_both_csv_shapes() {
    let moto = Moto::start().await;
    let app = gateway(&moto.url, |c| c.batching.max_queue_delay_ms = 100).await;

    moto.queue_results(&["0.91\n0.02\n"]).await;
    let results = score_batch(&app, &["m-1", "m-2"]).await;
    assert_eq!(scores(&results), [0.91, 0.02]);
    assert_eq!(results[0]["score"]["model"], "fraud-xgb@sagemaker");
    assert_eq!(results[0]["score"]["decision"], "decline");

    moto.queue_results(&["0.5,0.25"]).await;
    let results = score_batch(&app, &["m-3", "m-4"]).await;
    assert_eq!(
        scores(&results),
        [0.5, 0.25],
        "comma-joined answers are read too"
    );

    // One score for two rows: an error for both, never a misaligned score.
    moto.queue_results(&["0.7"]).await;
    let results = score_batch(&app, &["m-5", "m-6"]).await;
    for result in &results {
        assert_eq!(result["status"], 503, "{result}");
        let detail = result["error"]["detail"].as_str().unwrap();
        assert!(detail.contains("answered 1 scores for 2 rows"), "{detail}");
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_infergate_as_the_endpoint_gives_the_embedded_scores() {
    // The endpoint checks the SDK's SigV4 signatures.
    let mut endpoint_config = Config::default();
    endpoint_config.auth.sigv4 = vec![SigV4Config {
        access_key_id: AKID.into(),
        secret_env: "ENDPOINT_SECRET".into(),
        name: Some("gateway".into()),
        rate: 100_000,
        burst: None,
        quota_per_day: None,
        allow_cache_bypass: false,
    }];
    let local = infergate::model::EmbeddedModel::default_model(2).unwrap();
    let endpoint = spawn_app_env(
        endpoint_config,
        std::sync::Arc::new(local),
        &[("ENDPOINT_SECRET", SECRET)],
    )
    .await;
    let app = gateway(&endpoint.url(""), |_| {}).await;

    let ids = ["e-1", "e-2", "e-3", "e-4", "e-5"];
    let through_sdk = score_batch(&app, &ids).await;
    let direct = infergate::model::EmbeddedModel::default_model(1).unwrap();
    let direct_app = spawn_app_env(Config::default(), std::sync::Arc::new(direct), &[]).await;
    let local_scores = score_batch(&direct_app, &ids).await;
    assert_eq!(
        scores(&through_sdk),
        scores(&local_scores),
        "bit-identical through CSV and the SDK"
    );
    assert_eq!(through_sdk[0]["score"]["model"], "fraud-xgb@sagemaker");
    let calls = metric(&endpoint, "infergate_http_requests_total{route=\"/endpoints/{endpoint_name}/invocations\",method=\"POST\",status=\"200\"}").await;
    assert!(
        calls.is_some_and(|c| c >= 1.0),
        "the endpoint was called: {calls:?}"
    );
    for app in [app, endpoint, direct_app] {
        app.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_container_errors_are_not() {
    let endpoint =
        FaultyEndpoint::start(vec![Fault::Throttle, Fault::ServerError, Fault::Echo]).await;
    let app = gateway(&endpoint.url, |_| {}).await;
    let results = score_batch(&app, &["r-1"]).await;
    assert_eq!(scores(&results), [0.5]);
    assert_eq!(endpoint.calls().len(), 3, "two retries, then success");
    assert!(
        metric(
            &app,
            "infergate_sagemaker_retries_total{kind=\"throttling\"}"
        )
        .await
        .is_some()
    );

    for (fault, kind, words) in [
        (
            Fault::Invalid,
            "validation_error",
            "injected ValidationError",
        ),
        (
            Fault::ModelError,
            "model_error",
            "the container answered 500: container crashed",
        ),
        (Fault::Malformed, "", "unreadable endpoint answer"),
    ] {
        endpoint.set_script(vec![fault]);
        let before = endpoint.calls().len();
        let results = score_batch(&app, &[&format!("r-{kind}")]).await;
        assert_eq!(results[0]["status"], 503, "{results:?}");
        let detail = results[0]["error"]["detail"].as_str().unwrap();
        assert!(detail.contains(words), "{detail}");
        assert!(detail.contains(kind), "{detail}");
        assert_eq!(endpoint.calls().len() - before, 1, "not retried: {detail}");
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_is_cut_off_at_the_deadline() {
    let endpoint = FaultyEndpoint::start(vec![Fault::Slow(Duration::from_secs(3))]).await;
    let app = gateway(&endpoint.url, |c| {
        c.model.sagemaker.timeout_ms = 200;
        c.model.sagemaker.max_attempts = 10;
        c.batching.deadline_ms = 700;
    })
    .await;
    let started = Instant::now();
    let response = app
        .post_json("/v1/transactions/score", &transaction("slow", json!({})))
        .await;
    // 504 at the deadline, or 503 a little earlier when the next attempt could not finish in
    // time: either way, answered within the deadline and not after the endpoint.
    let status = response.status().as_u16();
    assert!(status == 504 || status == 503, "{status}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // Let the gateway's retries finish, then count them: within 700 ms, at most 4 calls of 200 ms.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let calls = endpoint.calls().len();
    assert!(
        (2..=4).contains(&calls),
        "timeouts retried only within the deadline: {calls} calls"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_fails_fast_and_the_fallback_answers() {
    let endpoint = FaultyEndpoint::start(vec![Fault::ServerError]).await;
    let app = gateway(&endpoint.url, |c| {
        c.model.sagemaker.max_attempts = 1;
        c.model.sagemaker.breaker_failures = 2;
        c.model.sagemaker.breaker_cooldown_ms = 60_000;
    })
    .await;
    for id in ["b-1", "b-2"] {
        assert_eq!(score_batch(&app, &[id]).await[0]["status"], 503);
    }
    assert_eq!(endpoint.calls().len(), 2);
    let fast = score_batch(&app, &["b-3"]).await;
    let detail = fast[0]["error"]["detail"].as_str().unwrap();
    assert!(detail.contains("circuit breaker"), "{detail}");
    assert_eq!(
        endpoint.calls().len(),
        2,
        "no call while the breaker is open"
    );
    assert_eq!(
        metric(&app, "infergate_sagemaker_breaker_state").await,
        Some(1.0)
    );
    app.stop().await.unwrap();

    let endpoint = FaultyEndpoint::start(vec![Fault::ServerError]).await;
    let app = gateway(&endpoint.url, |c| {
        c.model.sagemaker.max_attempts = 1;
        c.model.sagemaker.fallback = Some(Fallback::Embedded);
    })
    .await;
    let results = score_batch(&app, &["f-1"]).await;
    let model = results[0]["score"]["model"].as_str().unwrap();
    assert!(
        model.starts_with("fraud-xgb@") && !model.ends_with("@sagemaker"),
        "{model}"
    );
    assert!(
        metric(&app, "infergate_sagemaker_fallbacks_total")
            .await
            .is_some()
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_split_under_the_payload_limit() {
    let endpoint = FaultyEndpoint::start(vec![Fault::Echo]).await;
    let app = gateway(&endpoint.url, |c| {
        c.model.sagemaker.max_payload_bytes = 1024;
        c.batching.max_batch_size = 64;
        c.batching.max_queue_delay_ms = 100;
    })
    .await;
    let ids: Vec<String> = (0..40).map(|i| format!("p-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let results = score_batch(&app, &ids).await;
    assert_eq!(scores(&results), vec![0.5; 40]);
    let calls = endpoint.calls();
    assert!(calls.len() >= 2, "split into {} calls", calls.len());
    assert!(calls.iter().all(|body| body.len() <= 1024));
    assert_eq!(calls.iter().map(|b| b.lines().count()).sum::<usize>(), 40);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_types_pass_through_whole_and_are_cached_by_body() {
    let endpoint =
        FaultyEndpoint::start(vec![Fault::BatchScores("{\"predictions\":[0.42]}".into())]).await;
    let app = gateway(&endpoint.url, |c| c.allow_anonymous = true).await;
    let body = r#"{"instances":[[1,2,3]]}"#;
    let invoke = |body: &'static str| {
        app.client
            .post(app.url("/endpoints/fraud-xgb/invocations"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for _ in 0..2 {
        let response = invoke(body).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-amzn-invoked-production-variant"],
            "AllTraffic"
        );
        assert_eq!(response.text().await.unwrap(), "{\"predictions\":[0.42]}");
    }
    assert_eq!(
        endpoint.calls(),
        [body],
        "passed whole, once: the repeat came from the cache"
    );
    invoke(r#"{"instances":[[4,5,6]]}"#).await.unwrap();
    assert_eq!(endpoint.calls().len(), 2, "another body is another call");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clarifys_header_goes_through_to_a_sagemaker_endpoint_with_the_request() {
    let clarify = r#"{"version":"1.0","predictions":{"content_type":"text/csv","data":"0.5\n"},"explanations":{}}"#;
    let endpoint = FaultyEndpoint::start(vec![Fault::BatchScores(clarify.to_owned())]).await;
    let app = gateway(&endpoint.url, |_| {}).await;
    let response = app
        .client
        .post(app.url("/endpoints/fraud-xgb/invocations"))
        .header("content-type", "text/csv")
        .header("x-amzn-sagemaker-enable-explanations", "[0]>`0.5`")
        .body("1500,30,2,6051,0,1,9000,5,9\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        clarify,
        "the endpoint's answer, as it came"
    );
    assert_eq!(endpoint.explanations(), [Some("[0]>`0.5`".to_owned())]);
    assert_eq!(
        endpoint.calls(),
        ["1500,30,2,6051,0,1,9000,5,9\n"],
        "the body whole"
    );
}
