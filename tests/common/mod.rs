//! Shared test harness: a gateway on 127.0.0.1:0 with a real HTTP client, and models whose
//! timing the test controls.
#![allow(dead_code)]

pub mod peers;
pub mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infergate::domain::FeatureRow;
use infergate::middleware::auth::Auth;
use infergate::model::{BatchScores, Model, ModelError, PredictFuture};
use infergate::{Config, Gateway};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// The `/metrics` text of the gateway at `base` (`http://host:port`, a trailing slash allowed).
pub async fn scrape(base: &str) -> String {
    let url = format!("{}/metrics", base.trim_end_matches('/'));
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// A free loopback port (for a peer or a gateway process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A running gateway. Dropping it without `stop` aborts the server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request reaches the gateway")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the gateway")
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().expect("stopped once").send(());
        let server = self.server.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the gateway stops within 30 s")
            .expect("the server task does not panic")
    }

    /// Starts stopping without waiting.
    pub fn begin_stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().expect("stopped once").send(());
        self.server.take().expect("stopped once")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The gateway on the embedded default model.
pub async fn spawn_app(config: Config) -> TestApp {
    infergate::telemetry::prometheus();
    let gateway = Gateway::build(&config).await.expect("the gateway builds");
    serve(gateway).await
}

/// The gateway in front of `model`.
pub async fn spawn_app_with(config: Config, model: Arc<dyn Model>) -> TestApp {
    spawn_app_env(config, model, &[]).await
}

/// The gateway in front of `model`, its secrets read from `env` instead of the process's.
pub async fn spawn_app_env(config: Config, model: Arc<dyn Model>, env: &[(&str, &str)]) -> TestApp {
    infergate::telemetry::prometheus();
    let env: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let auth =
        Auth::from_config(&config, |name| env.get(name).cloned()).expect("credentials resolve");
    serve(Gateway::with_model(&config, model, auth)).await
}

/// Serves an already built gateway, and its operator routes on a second port (returned) when
/// the config has an `admin_bind`.
pub async fn serve_with_admin(gateway: Gateway, admin_bind: bool) -> (TestApp, Option<SocketAddr>) {
    if !admin_bind {
        return (serve(gateway).await, None);
    }
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = admin.local_addr().unwrap();
    (serve(gateway.with_admin_listener(admin)).await, Some(addr))
}

/// Serves an already built gateway.
pub async fn serve(gateway: Gateway) -> TestApp {
    infergate::telemetry::prometheus();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    let app = TestApp {
        addr,
        client: reqwest::Client::new(),
        stop: Some(stop),
        server: Some(server),
    };
    for _ in 0..200 {
        if let Ok(r) = app.client.get(app.url("/health/ready")).send().await
            && r.status() == 200
        {
            return app;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway did not become ready");
}

/// A valid transaction; `overrides` replaces or adds fields.
pub fn transaction(id: &str, overrides: Value) -> Value {
    let mut tx = json!({
        "transaction_id": id,
        "card_id": "card-7",
        "amount": 42.5,
        "currency": "EUR",
        "timestamp": "2026-11-26T14:05:00Z",
        "merchant_category": 5411,
        "card_present": true,
        "country": "DE",
        "home_country": "DE",
        "distance_from_home_km": 3.2,
        "tx_count_1h": 0,
        "tx_count_24h": 2,
        "avg_amount_30d": 51.0
    });
    if let (Some(tx), Some(over)) = (tx.as_object_mut(), overrides.as_object()) {
        for (k, v) in over {
            tx.insert(k.clone(), v.clone());
        }
    }
    tx
}

/// A model that answers 0.5 for every row after `delay`, or holds every batch until the test
/// adds permits to `gate`; it counts calls.
#[derive(Default)]
pub struct TestModel {
    pub delay: Duration,
    pub gate: Option<Arc<Semaphore>>,
    pub calls: Mutex<usize>,
    /// Calls that fail before the model answers.
    pub fail_first: Mutex<usize>,
    /// Distinguishes this model's metrics from other tests' in the same process.
    pub label: String,
}

impl TestModel {
    pub fn labelled(label: &str) -> Self {
        Self {
            label: format!("{label}@1"),
            ..Self::default()
        }
    }

    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

impl Model for TestModel {
    fn predict<'a>(
        &'a self,
        rows: &'a [FeatureRow],
        _deadline: tokio::time::Instant,
    ) -> PredictFuture<'a> {
        Box::pin(async move {
            *self.calls.lock().unwrap() += 1;
            if let Some(gate) = &self.gate {
                gate.acquire()
                    .await
                    .map_err(|_| ModelError::Unavailable("closed".into()))?
                    .forget();
            }
            tokio::time::sleep(self.delay).await;
            {
                let mut fail = self.fail_first.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return Err(ModelError::Unavailable("the test model fails".into()));
                }
            }
            Ok(BatchScores {
                scores: vec![0.5; rows.len()],
                model: Arc::from(self.label()),
            })
        })
    }

    fn label(&self) -> &str {
        if self.label.is_empty() {
            "test-model@1"
        } else {
            &self.label
        }
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Asserts an RFC 9457 problem response and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(
        body["type"],
        format!("urn:infergate:problem:{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The value of a Prometheus sample line starting with `series` in `/metrics`.
pub async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = scrape(&app.url("")).await;
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The virtualenv holding the Python test clients (boto3, awscli), as `scripts/test` sets it up.
/// Missing tools fail the test with a message saying how to install them: they are never
/// skipped.
pub fn test_venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("TEST_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/infergate/test-venv"))
        })
        .expect("TEST_VENV or HOME is set");
    let path = venv.join("bin").join(tool);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which installs the Python test clients \
         (scripts/requirements-test.txt) into {}",
        path.display(),
        venv.display()
    );
    path
}
