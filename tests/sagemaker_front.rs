//! The SageMaker-compatible route, called by real SageMaker Runtime clients (boto3 and the AWS
//! CLI, signing with SigV4) and over plain HTTP.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{TestApp, TestModel, repo_path, spawn_app_env, test_venv_bin};
use infergate::config::SigV4Config;
use infergate::model::EmbeddedModel;
use infergate::model::xgboost::XgbModel;
use infergate::{Config, config::ApiKeyConfig};
use serde_json::{Value, json};

const AKID: &str = "AKIDSAGEMAKERCLIENT";
const SECRET: &str = "sm2Lq8Vn4Rt6Yw0Zb2Dc4Fg6Hj8Kl0Mn2Pq4Rs6T";
const THROTTLED_AKID: &str = "AKIDTHROTTLEDCLIENT";
const THROTTLED_SECRET: &str = "th9Xa1Sd3Fg5Hj7Kl9Zx1Cv3Bn5Mq7We9Rt1Yu3I";
const API_KEY: &str = "sm_api_key_4f1c9e7a2b5d8e0f3a6c";

fn sigv4(akid: &str, env: &str, burst: u32) -> SigV4Config {
    SigV4Config {
        access_key_id: akid.into(),
        secret_env: env.into(),
        name: None,
        rate: 1,
        burst: Some(burst),
        quota_per_day: None,
        allow_cache_bypass: false,
    }
}

async fn app() -> TestApp {
    let mut config = Config::default();
    let mut main = sigv4(AKID, "SM_SECRET", 1000);
    main.rate = 1000;
    config.auth.sigv4 = vec![main, sigv4(THROTTLED_AKID, "SM_THROTTLED_SECRET", 1)];
    config.auth.api_keys = vec![ApiKeyConfig {
        name: "curl".into(),
        key_sha256: Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(API_KEY))),
        key_env: None,
        rate: 1000,
        burst: None,
        quota_per_day: None,
        allow_cache_bypass: false,
    }];
    let model = Arc::new(EmbeddedModel::default_model(2).unwrap());
    spawn_app_env(
        config,
        model,
        &[
            ("SM_SECRET", SECRET),
            ("SM_THROTTLED_SECRET", THROTTLED_SECRET),
        ],
    )
    .await
}

/// The first `n` rows of the parity fixture as model-order CSV (empty = missing), and what the
/// evaluator itself predicts for them.
fn fixture_rows(n: usize) -> (String, Vec<f32>) {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/xgb/fraud_parity.csv")).unwrap();
    let model = XgbModel::from_path(&repo_path("models/fraud-xgb/model.json")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        &header[..9],
        model.feature_names(),
        "the fixture is in the model's order"
    );
    let mut csv = String::new();
    let mut expected = Vec::new();
    // Skip ahead to rows that include missing values, so those travel too.
    for line in lines.skip(100).take(n) {
        let fields: Vec<&str> = line.split(',').collect();
        let row: Vec<f32> = fields[..9]
            .iter()
            .map(|f| {
                if f.is_empty() {
                    f32::NAN
                } else {
                    f.parse().unwrap()
                }
            })
            .collect();
        expected.push(model.predict_row(&row));
        csv.push_str(&fields[..9].join(","));
        csv.push('\n');
    }
    (csv, expected)
}

fn write_body(name: &str, body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("infergate-{name}-{}.csv", std::process::id()));
    std::fs::write(&path, body).unwrap();
    path
}

fn python_client(app: &TestApp, body: &Path, akid: &str, secret: &str, extra: &[&str]) -> Value {
    let output = Command::new(test_venv_bin("python"))
        .arg(repo_path("tests/clients/sagemaker_invoke.py"))
        .args([
            "--endpoint-url",
            &app.url(""),
            "--body-file",
            body.to_str().unwrap(),
        ])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", akid)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "boto3 client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}

fn parse_scores(body: &str) -> Vec<f32> {
    body.lines().map(|l| l.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_invoke_endpoint_gets_the_embedded_models_scores() {
    let app = app().await;
    let (csv, expected) = fixture_rows(25);
    let body = write_body("boto3", &csv);
    let result = python_client(&app, &body, AKID, SECRET, &[]);
    assert_eq!(result["content_type"], "text/csv", "{result}");
    assert_eq!(result["variant"], "AllTraffic");
    assert_eq!(
        parse_scores(result["body"].as_str().unwrap()),
        expected,
        "exactly the evaluator's scores"
    );

    let json = python_client(&app, &body, AKID, SECRET, &["--accept", "application/json"]);
    let predictions: Value = serde_json::from_str(json["body"].as_str().unwrap()).unwrap();
    let scores: Vec<f32> = predictions["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["score"].as_f64().unwrap() as f32)
        .collect();
    assert_eq!(scores, expected);
    std::fs::remove_file(body).unwrap();
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_raises_validation_error_and_throttling_exception() {
    let app = app().await;
    let bad = write_body("bad", "1,2,3,4,5,6,7,8\n1,2,3,4,5,6,7,8,x\n");
    let result = python_client(&app, &bad, AKID, SECRET, &[]);
    assert_eq!(result["exception"], "ValidationError", "{result}");
    assert_eq!(
        result["modelled"], true,
        "boto3's modelled exception: {result}"
    );
    assert_eq!(result["status"], 400);
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("row 1 has 8 values; the model reads 9 features"),
        "{message}"
    );
    assert!(message.contains("row 2 column 9"), "{message}");

    let (csv, _) = fixture_rows(1);
    let one = write_body("throttled", &csv);
    let result = python_client(
        &app,
        &one,
        THROTTLED_AKID,
        THROTTLED_SECRET,
        &["--calls", "2"],
    );
    assert_eq!(result["code"], "ThrottlingException", "{result}");
    assert_eq!(result["status"], 429);

    let result = python_client(&app, &one, AKID, "wrong-secret", &[]);
    assert_eq!(result["code"], "UnrecognizedClientException", "{result}");
    for path in [bad, one] {
        std::fs::remove_file(path).unwrap();
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_invoke_endpoint_writes_the_scores() {
    let app = app().await;
    let (csv, expected) = fixture_rows(3);
    let body = write_body("awscli", &csv);
    let out = std::env::temp_dir().join(format!("infergate-awscli-out-{}.csv", std::process::id()));
    let output = Command::new(test_venv_bin("aws"))
        .args([
            "sagemaker-runtime",
            "invoke-endpoint",
            "--endpoint-url",
            &app.url(""),
        ])
        .args([
            "--region",
            "us-east-1",
            "--endpoint-name",
            "fraud-xgb",
            "--content-type",
            "text/csv",
        ])
        .arg("--body")
        .arg(format!("fileb://{}", body.display()))
        .arg(&out)
        .env("AWS_ACCESS_KEY_ID", AKID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("aws runs");
    assert!(
        output.status.success(),
        "aws failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(meta["ContentType"], "text/csv");
    assert_eq!(meta["InvokedProductionVariant"], "AllTraffic");
    assert_eq!(
        parse_scores(&std::fs::read_to_string(&out).unwrap()),
        expected
    );
    std::fs::remove_file(body).unwrap();
    std::fs::remove_file(out).unwrap();
    app.stop().await.unwrap();
}

#[tokio::test]
async fn plain_http_errors_are_rest_json() {
    let app = app().await;
    let post = |body: &'static str, content_type: &'static str, key: Option<&'static str>| {
        let mut request = app
            .client
            .post(app.url("/endpoints/fraud-xgb/invocations"))
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send()
    };
    let check = |response: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["x-amzn-errortype"], code);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        body
    };
    check(
        post("1,2", "text/csv", None).await.unwrap(),
        401,
        "UnrecognizedClientException",
    )
    .await;
    check(
        post("{}", "application/json", Some(API_KEY)).await.unwrap(),
        415,
        "ValidationError",
    )
    .await;
    check(
        post("", "text/csv", Some(API_KEY)).await.unwrap(),
        400,
        "ValidationError",
    )
    .await;
    let nan = post("1,2,3,4,5,6,7,8,NaN\n", "text/csv", Some(API_KEY))
        .await
        .unwrap();
    let body = check(nan, 400, "ValidationError").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a finite number"),
        "{body}"
    );

    let ok = post(
        "912.5,18.93,3,5967,0,1,9500,4,11\n",
        "text/csv",
        Some(API_KEY),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["x-amzn-invoked-production-variant"],
        "AllTraffic"
    );
    assert_eq!(app.get("/ping").await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_model_is_a_model_error() {
    let model = Arc::new(TestModel {
        fail_first: std::sync::Mutex::new(1),
        ..TestModel::default()
    });
    let config = Config {
        allow_anonymous: true,
        ..Config::default()
    };
    let app = spawn_app_env(config, model, &[]).await;
    let response = app
        .client
        .post(app.url("/endpoints/test-model/invocations"))
        .header("content-type", "text/csv")
        .body("1,2,3,4,5,6,7,8,9\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 424);
    assert_eq!(response.headers()["x-amzn-errortype"], "ModelError");
    app.stop().await.unwrap();
}

/// SageMaker answers `ValidationError` for an endpoint that does not exist; so does the gateway
/// for a name that is neither its model's nor an alias (before, any name was scored).
#[tokio::test]
async fn an_unknown_endpoint_name_is_a_validation_error() {
    let invoke = |app: &TestApp, name: &str| {
        app.client
            .post(app.url(&format!("/endpoints/{name}/invocations")))
            .header("content-type", "text/csv")
            .body("1500,30,2,6051,0,1,9000,5,9\n")
            .send()
    };
    let open = |aliases: &[&str]| {
        let mut config = Config {
            allow_anonymous: true,
            ..Config::default()
        };
        config.model.endpoint_aliases = aliases.iter().map(|a| (*a).to_owned()).collect();
        config
    };
    let model = || Arc::new(EmbeddedModel::default_model(1).unwrap());

    let app = spawn_app_env(open(&["fraud-v2"]), model(), &[]).await;
    for name in ["fraud-xgb", "fraud-v2"] {
        assert_eq!(invoke(&app, name).await.unwrap().status(), 200, "{name}");
    }
    let response = invoke(&app, "fraud-xgbx").await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-amzn-errortype"], "ValidationError");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Endpoint fraud-xgbx not found.");
    app.stop().await.unwrap();

    let app = spawn_app_env(open(&["*"]), model(), &[]).await;
    assert_eq!(invoke(&app, "anything").await.unwrap().status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_gets_clarify_shaped_explanations_for_the_records_its_expression_selects() {
    let app = app().await;
    // A flagged row and a routine one, in the model's feature order.
    let body = write_body(
        "clarify",
        "1500,30,2,6051,0,1,9000,5,9\n42.5,0.83,14,5411,1,0,3.2,0,2\n",
    );
    let selected = python_client(
        &app,
        &body,
        AKID,
        SECRET,
        &["--enable-explanations", "[0]>`0.5`"],
    );
    assert_eq!(selected["content_type"], "application/json", "{selected}");
    let answer: Value = serde_json::from_str(selected["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["version"], "1.0");
    let scores = parse_scores(answer["predictions"]["data"].as_str().unwrap());
    assert!(scores[0] > 0.5 && scores[1] < 0.5, "{scores:?}");
    let records = answer["explanations"]["kernel_shap"][0].as_array().unwrap();
    assert_eq!(records.len(), 2);
    let features = records[0].as_array().unwrap();
    assert_eq!(features.len(), 9, "{answer}");
    assert_eq!(features[0]["feature_header"], "amount");
    assert!(features[0]["attributions"][0]["attribution"][0].is_f64());
    assert!(
        records[1].is_null(),
        "the routine row is not explained: {answer}"
    );

    let none = python_client(
        &app,
        &body,
        AKID,
        SECRET,
        &["--enable-explanations", "`false`"],
    );
    let answer: Value = serde_json::from_str(none["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        answer["explanations"],
        json!({}),
        "as Clarify answers when none is explained"
    );

    let bad = python_client(
        &app,
        &body,
        AKID,
        SECRET,
        &["--enable-explanations", "score > 1"],
    );
    assert_eq!(bad["code"], "ValidationError", "{bad}");
    std::fs::remove_file(body).unwrap();
    app.stop().await.unwrap();
}
