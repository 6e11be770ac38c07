//! Load tools for infergate.
//!
//! `loadtest fake-endpoint` stands in for a SageMaker endpoint in benchmarks: it speaks
//! `InvokeEndpoint`'s wire format, takes a fixed time per invocation, serves a bounded number of
//! invocations at once (later ones wait their turn, as on an instance with N workers), and
//! counts invocations and rows at `GET /stats`. The open-loop HTTP load generator comes next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::{Parser, Subcommand};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(name = "loadtest", about = "Load tools for infergate")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A fake SageMaker endpoint: fixed latency, bounded concurrency, one score per CSV row.
    FakeEndpoint {
        #[arg(long, default_value = "127.0.0.1:5055")]
        bind: String,
        /// Time each invocation takes, whatever its size.
        #[arg(long, default_value_t = 5)]
        latency_ms: u64,
        /// Invocations served at once; more wait.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

struct Endpoint {
    latency: Duration,
    slots: Semaphore,
    invocations: AtomicU64,
    rows: AtomicU64,
}

async fn invoke(State(endpoint): State<Arc<Endpoint>>, body: String) -> impl IntoResponse {
    let _slot = endpoint
        .slots
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::time::sleep(endpoint.latency).await;
    let rows = body.lines().filter(|l| !l.trim().is_empty()).count();
    endpoint.invocations.fetch_add(1, Ordering::Relaxed);
    endpoint.rows.fetch_add(rows as u64, Ordering::Relaxed);
    ([("content-type", "text/csv")], "0.5\n".repeat(rows))
}

async fn stats(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "invocations": endpoint.invocations.load(Ordering::Relaxed),
        "rows": endpoint.rows.load(Ordering::Relaxed),
    }))
}

#[tokio::main]
async fn main() {
    match Args::parse().command {
        Command::FakeEndpoint {
            bind,
            latency_ms,
            concurrency,
        } => {
            let endpoint = Arc::new(Endpoint {
                latency: Duration::from_millis(latency_ms),
                slots: Semaphore::new(concurrency.max(1)),
                invocations: AtomicU64::new(0),
                rows: AtomicU64::new(0),
            });
            let app = Router::new()
                .route("/endpoints/{name}/invocations", post(invoke))
                .route("/stats", get(stats))
                .with_state(endpoint);
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .unwrap_or_else(|e| panic!("cannot listen on {bind}: {e}"));
            eprintln!(
                "fake endpoint on {bind}: {latency_ms} ms per invocation, {concurrency} at once"
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .expect("the fake endpoint serves");
        }
    }
}
