//! Load tools for infergate.
//!
//! - `loadtest http`: HTTP load on infergate's scoring routes with synthetic transactions, open
//!   loop (a constant arrival rate, latency timed from when each request was due) or closed loop
//!   (N connections), with an API key or SigV4-signed; HDR percentiles, counts by status, a
//!   per-second timeline, a JSON summary and an SVG plot.
//! - `loadtest kinesis`: the same transactions put into a Kinesis stream at a constant rate
//!   (optionally KPL-aggregated), timed until the gateway's consumer wrote their results.
//! - `loadtest fake-endpoint` stands in for a SageMaker endpoint in benchmarks (see `fake`):
//!   fixed latency plus a cost per row, bounded concurrency (beyond: wait, or throttle), an
//!   error rate, counters at `GET /stats`.
//! - `loadtest ceiling`: a minimal server answering a fixed JSON score, the most any HTTP
//!   gateway on this machine could do.

mod fake;
mod generator;
mod http;
mod kinesis;
mod kpl;
mod plot;
mod progress;
mod sigv4;
mod stats;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::post;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadtest", about = "Load tools for infergate")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP load on a scoring route.
    Http(HttpArgs),
    /// Transactions put into a Kinesis stream, timed until the gateway's consumer scored them.
    Kinesis(kinesis::KinesisArgs),
    /// A minimal HTTP server answering every POST with a fixed score (the ceiling).
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:18099")]
        bind: String,
    },
    /// A fake SageMaker endpoint: fixed latency, bounded concurrency, one score per CSV row.
    FakeEndpoint {
        #[arg(long, default_value = "127.0.0.1:5055")]
        bind: String,
        /// Time each invocation takes, whatever its size...
        #[arg(long, default_value_t = 5)]
        latency_ms: u64,
        /// ...plus this much per row.
        #[arg(long, default_value_t = 0)]
        cost_per_row_us: u64,
        /// Invocations served at once; more wait (or are throttled with --throttle).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// BatchScores `ThrottlingException` beyond the concurrency instead of waiting.
        #[arg(long)]
        throttle: bool,
        /// Share of invocations answered `ServiceUnavailable`.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

#[derive(clap::Args)]
struct HttpArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// `score`, `score-batch` or `sagemaker` (CSV rows on the SageMaker-compatible route).
    #[arg(long, default_value = "score")]
    target: String,
    /// Open loop: requests per second. Without it, closed loop over `--connections`.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: connections, each sending its next request when answered.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Transactions per request for `score-batch` and `sagemaker`.
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Sent as `x-api-key`.
    #[arg(long, env = "LOADTEST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Sign each request with SigV4 with this access key id (a caller of `auth.sigv4`); then
    /// no `x-api-key` is sent.
    #[arg(long)]
    sigv4_access_key: Option<String>,
    /// The access key's secret (better given by environment than on the command line).
    #[arg(long, env = "LOADTEST_SIGV4_SECRET_KEY", hide_env_values = true)]
    sigv4_secret_key: Option<String>,
    /// Region of the SigV4 credential scope.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Service of the SigV4 credential scope.
    #[arg(long, default_value = "sagemaker")]
    service: String,
    /// Repeat the same transactions (cache hits) instead of fresh transaction ids (misses).
    #[arg(long)]
    cache_hits: bool,
    #[arg(long, default_value_t = 0.01)]
    fraud_rate: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Open loop: most requests in flight; beyond, requests are counted as dropped.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    #[command(flatten)]
    output: Output,
}

/// What a run leaves behind, in every mode.
#[derive(clap::Args)]
struct Output {
    /// Write the JSON summary here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Write an SVG plot here: latency by percentile, and throughput per second.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// No progress line on stderr (there is none either when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
    /// Exit 1 if anything failed: a request not answered 2xx, a record not scored, or dropped.
    #[arg(long)]
    fail_on_errors: bool,
}

impl Output {
    /// Writes the summary and the plot; the exit code, given whether anything `failed`.
    fn finish(
        &self,
        summary: &impl serde::Serialize,
        stats: &stats::Stats,
        title: &str,
        failed: bool,
    ) -> std::process::ExitCode {
        if let Some(path) = &self.out {
            let json = serde_json::to_string_pretty(summary).expect("a summary serializes");
            if let Err(e) = std::fs::write(path, json) {
                eprintln!("cannot write {}: {e}", path.display());
                return std::process::ExitCode::FAILURE;
            }
        }
        if let Some(path) = &self.plot
            && let Err(e) = plot::write(path, title, stats)
        {
            eprintln!("cannot plot to {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
        if self.fail_on_errors && failed {
            return std::process::ExitCode::FAILURE;
        }
        std::process::ExitCode::SUCCESS
    }
}

/// The fraud model's features, in its order, from a transaction (for CSV rows).
fn csv_row(tx: &serde_json::Value) -> String {
    let f = |k: &str| tx[k].as_f64().unwrap_or(0.0);
    let hour: u32 = tx["timestamp"]
        .as_str()
        .and_then(|t| t.get(11..13))
        .and_then(|h| h.parse().ok())
        .unwrap_or(0);
    let foreign = u8::from(tx["country"] != tx["home_country"]);
    let present = u8::from(tx["card_present"].as_bool().unwrap_or(false));
    format!(
        "{},{},{hour},{},{present},{foreign},{},{},{}",
        f("amount"),
        f("amount") / f("avg_amount_30d").max(1.0),
        f("merchant_category"),
        f("distance_from_home_km"),
        f("tx_count_1h"),
        f("tx_count_24h"),
    )
}

async fn http_load(args: HttpArgs) -> std::process::ExitCode {
    let mut generator = generator::Generator::new(args.seed, args.fraud_rate, "lt");
    let pool: Arc<Vec<serde_json::Value>> =
        Arc::new((0..10_000).map(|_| generator.next().0).collect());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight.max(args.connections))
        .build()
        .expect("an HTTP client");
    let (path, content_type) = match args.target.as_str() {
        "score" => ("/v1/transactions/score", "application/json"),
        "score-batch" => ("/v1/transactions/score-batch", "application/json"),
        "sagemaker" => ("/endpoints/fraud-xgb/invocations", "text/csv"),
        other => {
            eprintln!("unknown --target {other}: use score, score-batch or sagemaker");
            return std::process::ExitCode::from(2);
        }
    };
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    // SigV4 signs the Host header, so it must be the one reqwest sends for this URL.
    let signer = match (&args.sigv4_access_key, &args.sigv4_secret_key) {
        (None, _) => None,
        (Some(_), None) => {
            eprintln!("--sigv4-access-key needs --sigv4-secret-key (or LOADTEST_SIGV4_SECRET_KEY)");
            return std::process::ExitCode::from(2);
        }
        (Some(access_key), Some(secret_key)) => {
            let Some(host) = reqwest::Url::parse(&url)
                .ok()
                .and_then(|u| sigv4::host_header(&u))
            else {
                eprintln!("--url {} has no host to sign", args.url);
                return std::process::ExitCode::from(2);
            };
            let signer = sigv4::Signer::new(access_key, secret_key, &args.region, &args.service);
            // Whatever would stop every request from being signed shows here, once.
            if let Err(e) = signer.headers(&url, &host, content_type, b"", SystemTime::now()) {
                eprintln!("cannot sign requests to {url}: {e}");
                return std::process::ExitCode::from(2);
            }
            Some(Arc::new((signer, host)))
        }
    };
    let target = args.target.clone();
    let (batch, cache_hits) = (args.batch_size.max(1), args.cache_hits);
    let api_key = args.api_key.clone().filter(|_| signer.is_none());
    let send = move |i: u64| {
        let item = |k: u64| {
            let mut tx = pool[(k % pool.len() as u64) as usize].clone();
            if !cache_hits {
                tx["transaction_id"] = serde_json::json!(format!("lt-{i}-{k}"));
            }
            tx
        };
        let body: String = match target.as_str() {
            "score" => item(i).to_string(),
            "score-batch" => serde_json::json!({"transactions": (0..batch as u64).map(|k| item(i * batch as u64 + k)).collect::<Vec<_>>()}).to_string(),
            _ => (0..batch as u64).map(|k| csv_row(&item(i * batch as u64 + k)) + "\n").collect(),
        };
        let mut request = client.post(&url).header("content-type", content_type);
        if let Some(key) = &api_key {
            request = request.header("x-api-key", key);
        }
        // Counted as a request without an answer (it cannot fail after the check above).
        let mut signing_failed = false;
        if let Some(signer) = &signer {
            let (signer, host) = signer.as_ref();
            match signer.headers(&url, host, content_type, body.as_bytes(), SystemTime::now()) {
                Ok(headers) => {
                    for (name, value) in headers {
                        request = request.header(name, value);
                    }
                }
                Err(_) => signing_failed = true,
            }
        }
        let request = request.body(body);
        async move {
            if signing_failed {
                return Err(());
            }
            request
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|_| ())
        }
    };
    let duration = Duration::from_secs_f64(args.seconds);
    let live = stats::Live::default();
    let progress = {
        let (live, mut rate) = (live.clone(), progress::Rate::default());
        progress::Progress::start(duration, args.output.quiet, move || {
            let snapshot = live.snapshot();
            let rate = rate.update(tokio::time::Instant::now(), snapshot.answered);
            progress::http_message(&snapshot, rate)
        })
    };
    let (stats, elapsed) = match args.rate {
        Some(rate) => http::open_loop(rate, duration, args.max_in_flight, &live, send).await,
        None => http::closed_loop(args.connections, duration, &live, send).await,
    };
    progress.finish();
    let summary = stats.summary(elapsed);
    let mode = args
        .rate
        .map_or(format!("closed loop x{}", args.connections), |r| {
            format!("open loop {r}/s")
        });
    println!("{}", summary.line(&format!("{} {mode}", args.target)));
    let failed = summary.ok != summary.sent || summary.dropped > 0;
    if args.output.fail_on_errors && failed {
        eprintln!("some requests failed: {:?}", summary.statuses);
    }
    let title = format!("http {}: {mode}", args.target);
    args.output.finish(&summary, &stats, &title, failed)
}

async fn ceiling(bind: &str) {
    let app = Router::new().fallback(post(|| async {
        (
            [("content-type", "application/json")],
            r#"{"transaction_id":"tx","fraud_score":0.01,"decision":"approve","model":"ceiling@0","cached":false}"#,
        )
    }));
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {bind}: {e}"));
    eprintln!("ceiling server on {bind}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("the ceiling server serves");
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Args::parse().command {
        Command::Http(args) => return http_load(args).await,
        Command::Kinesis(args) => return kinesis::run(args).await,
        Command::Ceiling { bind } => ceiling(&bind).await,
        Command::FakeEndpoint {
            bind,
            latency_ms,
            cost_per_row_us,
            concurrency,
            throttle,
            error_rate,
            seed,
        } => {
            let app = fake::router(fake::Options {
                latency: Duration::from_millis(latency_ms),
                cost_per_row: Duration::from_micros(cost_per_row_us),
                concurrency,
                throttle,
                error_rate,
                seed,
            });
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .unwrap_or_else(|e| panic!("cannot listen on {bind}: {e}"));
            eprintln!(
                "fake endpoint on {bind}: {latency_ms} ms + {cost_per_row_us} us/row per invocation, \
                 {concurrency} at once{}",
                if throttle { ", throttling beyond" } else { "" }
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .expect("the fake endpoint serves");
        }
    }
    std::process::ExitCode::SUCCESS
}
