//! Wire peers for the SageMaker backend: moto's server (a real SageMaker Runtime wire
//! implementation) and a fault-injecting endpoint that answers as SageMaker does when it
//! throttles, fails, stalls or talks nonsense.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::test_venv_bin;

/// moto's server on a free loopback port, stopped on drop.
pub struct Moto {
    pub url: String,
    child: Child,
}

impl Moto {
    pub async fn start() -> Self {
        let port = super::free_port();
        let child = Command::new(test_venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("{}/moto-api/", moto.url)).send().await
                && r.status() == 200
            {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not answer on {} within 15 s", moto.url);
    }

    /// Queues canned InvokeEndpoint answers (moto answers from this queue, in order).
    pub async fn queue_results(&self, bodies: &[&str]) {
        let results: Vec<_> = bodies
            .iter()
            .map(|body| {
                json!({"Body": body, "ContentType": "text/csv",
                       "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""})
            })
            .collect();
        let response = reqwest::Client::new()
            .post(format!(
                "{}/moto-api/static/sagemaker/endpoint-results",
                self.url
            ))
            .json(&json!({"results": results}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "moto took the canned results");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves a test peer on a free loopback port; the task is aborted by its owner's `Drop`.
async fn serve_router(app: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), server)
}

/// What the fault-injecting endpoint does with one call.
#[derive(Debug, Clone)]
pub enum Fault {
    /// BatchScores this body (`text/csv`).
    BatchScores(String),
    /// BatchScores one score per CSV row: `0.5`.
    Echo,
    Throttle,
    /// A 5xx with SageMaker's error code for it.
    ServerError,
    /// The container failed: SageMaker's `ModelError` (424).
    ModelError,
    /// A `ValidationError` (400).
    Invalid,
    /// Wait, then answer like `Echo`.
    Slow(Duration),
    /// A 200 whose body is not scores.
    Malformed,
}

#[derive(Default)]
struct Script {
    faults: Vec<Fault>,
    calls: Vec<String>,
    /// Each call's `X-Amzn-SageMaker-Enable-Explanations`, if it sent one.
    explanations: Vec<Option<String>>,
}

/// An in-process endpoint speaking SageMaker Runtime's wire API, following a script of faults;
/// once the script is used up it repeats its last entry.
pub struct FaultyEndpoint {
    pub url: String,
    script: Arc<Mutex<Script>>,
    server: tokio::task::JoinHandle<()>,
}

impl FaultyEndpoint {
    pub async fn start(faults: Vec<Fault>) -> Self {
        let script = Arc::new(Mutex::new(Script {
            faults,
            ..Script::default()
        }));
        let app = Router::new()
            .route("/endpoints/{name}/invocations", post(invoke))
            .with_state(Arc::clone(&script));
        let (url, server) = serve_router(app).await;
        Self {
            url,
            script,
            server,
        }
    }

    /// The bodies received, in order.
    pub fn calls(&self) -> Vec<String> {
        self.script.lock().unwrap().calls.clone()
    }

    /// Each call's Clarify `EnableExplanations` header, in order.
    pub fn explanations(&self) -> Vec<Option<String>> {
        self.script.lock().unwrap().explanations.clone()
    }

    pub fn set_script(&self, faults: Vec<Fault>) {
        self.script.lock().unwrap().faults = faults;
    }
}

impl Drop for FaultyEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn aws_error(status: u16, code: &str, extra: serde_json::Value) -> Response {
    let mut body = json!({"message": format!("injected {code}")});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-amzn-errortype", code.parse().unwrap());
    response
}

fn echo(body: &str) -> Response {
    let rows = body.lines().filter(|l| !l.trim().is_empty()).count();
    let text: String = (0..rows).map(|_| "0.5\n").collect();
    ([("content-type", "text/csv")], text).into_response()
}

async fn invoke(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let fault = {
        let mut s = script.lock().unwrap();
        s.calls.push(body.clone());
        let explanations = headers
            .get("x-amzn-sagemaker-enable-explanations")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        s.explanations.push(explanations);
        let n = s.calls.len();
        s.faults
            .get(n - 1)
            .or(s.faults.last())
            .cloned()
            .unwrap_or(Fault::Echo)
    };
    match fault {
        Fault::BatchScores(text) => ([("content-type", "text/csv")], text).into_response(),
        Fault::Echo => echo(&body),
        Fault::Throttle => aws_error(400, "ThrottlingException", json!({})),
        Fault::ServerError => aws_error(503, "ServiceUnavailable", json!({})),
        Fault::ModelError => aws_error(
            424,
            "ModelError",
            json!({"OriginalStatusCode": 500, "OriginalMessage": "container crashed", "LogStreamArn": "arn:test"}),
        ),
        Fault::Invalid => aws_error(400, "ValidationError", json!({})),
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            echo(&body)
        }
        Fault::Malformed => ([("content-type", "text/csv")], "<html>oops</html>").into_response(),
    }
}

/// kinesalite (npm) on a free loopback port, stopped on drop. `scripts/test` installs it under
/// `TEST_NODE_DIR` (default `~/.cache/infergate/node`).
pub struct Kinesalite {
    pub url: String,
    child: Child,
}

impl Kinesalite {
    pub async fn start() -> Self {
        let (url, child) = node_peer(
            "kinesalite",
            &[
                "--createStreamMs",
                "0",
                "--deleteStreamMs",
                "0",
                "--updateStreamMs",
                "0",
            ],
        )
        .await;
        Self { url, child }
    }

    pub fn client(&self) -> aws_sdk_kinesis::Client {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIDKINESISTEST",
                "kinesis-test-secret",
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_kinesis::Client::from_conf(config)
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the npm package `package`'s CLI (installed into `TEST_NODE_DIR` by scripts/test) on a
/// free loopback port: its URL once it listens, and the process.
async fn node_peer(package: &str, args: &[&str]) -> (String, Child) {
    let dir = std::env::var_os("TEST_NODE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/infergate/node"))
        })
        .expect("TEST_NODE_DIR or HOME is set");
    let cli = dir.join("node_modules").join(package).join("cli.js");
    assert!(
        cli.exists(),
        "{} is missing: run scripts/test, which installs {package} (npm) into {}",
        cli.display(),
        dir.display()
    );
    let port = super::free_port();
    let mut child = Command::new("node")
        .arg(&cli)
        .args(["--port", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("node runs {package}: {e}"));
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (format!("http://127.0.0.1:{port}"), child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{package} did not listen on port {port} within 15 s");
}

/// dynalite (DynamoDB on LevelDB, in memory) on a free loopback port, stopped on drop.
pub struct Dynalite {
    pub url: String,
    child: Child,
}

impl Dynalite {
    pub async fn start() -> Self {
        let (url, child) = node_peer(
            "dynalite",
            &[
                "--createTableMs",
                "0",
                "--deleteTableMs",
                "0",
                "--updateTableMs",
                "0",
            ],
        )
        .await;
        Self { url, child }
    }

    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIDDYNAMODBTEST",
                "dynamodb-test-secret",
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}

impl Dynalite {
    /// Stops (SIGSTOP) or resumes (SIGCONT) the server: stopped, it accepts connections and
    /// answers nothing, as a DynamoDB endpoint that hangs.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} dynalite");
    }
}

impl Drop for Dynalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's redis-server on a loopback port, in memory only, stopped on drop; it can be killed
/// and started again on the same port.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = super::free_port();
        let mut redis = Self { port, child: None };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone with it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on its port, once it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server does not run ({e}): scripts/test installs it \
                     (apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "redis-server did not listen on port {} within 5 s",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A proxy in front of a Kinesis endpoint that answers chosen `GetRecords` calls (by their
/// 1-based number) with `ExpiredIteratorException`, and forwards everything else untouched.
pub struct ExpiringKinesis {
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ExpiringState {
    upstream: String,
    expire_calls: Arc<Vec<usize>>,
    get_records: Arc<Mutex<usize>>,
    client: reqwest::Client,
}

impl ExpiringKinesis {
    pub async fn start(upstream: &str, expire_calls: Vec<usize>) -> Self {
        let state = ExpiringState {
            upstream: upstream.to_owned(),
            expire_calls: Arc::new(expire_calls),
            get_records: Arc::new(Mutex::new(0)),
            client: reqwest::Client::new(),
        };
        let app = Router::new().route("/", post(forward)).with_state(state);
        let (url, server) = serve_router(app).await;
        Self { url, server }
    }
}

impl Drop for ExpiringKinesis {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(State(state): State<ExpiringState>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if target.ends_with(".GetRecords") {
        let n = {
            let mut calls = state.get_records.lock().unwrap();
            *calls += 1;
            *calls
        };
        if state.expire_calls.contains(&n) {
            let body = json!({"__type": "ExpiredIteratorException", "message": "Iterator expired (injected)"});
            return (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/x-amz-json-1.1")],
                body.to_string(),
            )
                .into_response();
        }
    }
    let mut request = state.client.post(&state.upstream).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let upstream = request.send().await.expect("the upstream answers");
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap();
    let content_type = upstream
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-amz-json-1.1")
        .to_owned();
    let bytes = upstream.bytes().await.unwrap();
    (status, [("content-type", content_type)], bytes).into_response()
}
