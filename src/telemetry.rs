//! Logs (tracing, human or JSON) and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global log subscriber. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests start many apps in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use. Metrics are process-global by
/// nature (the `metrics` facade has one recorder), so every app in a process shares it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Latencies here span 10 µs (a cached or embedded score) to the 30 s deadline.
        const SECONDS: &[f64] = &[
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        const ROWS: &[f64] = &[
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), ROWS))
            .expect("bucket lists are non-empty constants. This is a bug.")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "infergate_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "infergate_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route, method and status"
    );
    describe_histogram!("infergate_batch_rows", Unit::Count, "Rows per model call");
    describe_histogram!(
        "infergate_model_duration_seconds",
        Unit::Seconds,
        "Model call latency, per batch"
    );
    describe_histogram!(
        "infergate_queue_duration_seconds",
        Unit::Seconds,
        "Time a row waited in the queue before its batch was cut"
    );
    describe_gauge!(
        "infergate_queue_rows",
        Unit::Count,
        "Rows waiting in the queue"
    );
    describe_counter!("infergate_rows_scored_total", "Rows scored by the model");
    describe_counter!(
        "infergate_rows_shed_total",
        "Rows refused because the queue was full"
    );
    describe_counter!(
        "infergate_rows_skipped_total",
        "Queued rows dropped before a model call, by reason (caller_gone, deadline)"
    );
    describe_counter!("infergate_model_errors_total", "Failed model calls");
    describe_counter!(
        "infergate_model_calls_total",
        "Model calls (batches), by model"
    );
    describe_counter!(
        "infergate_cache_requests_total",
        "Response cache look-ups, by cache (score, raw) and result (hit, miss)"
    );
    describe_gauge!(
        "infergate_http_connections",
        Unit::Count,
        "Open client connections (at most http.max_connections)"
    );
    describe_gauge!(
        "infergate_cache_entries",
        Unit::Count,
        "Scores in the response cache, when scraped"
    );
    describe_gauge!(
        "infergate_raw_cache_bytes",
        Unit::Bytes,
        "Bytes of pass-through answers in the cache, when scraped"
    );
    describe_counter!("infergate_auth_failures_total", "Requests refused with 401");
    describe_counter!(
        "infergate_sigv4_refused_total",
        "SigV4 signatures refused, by reason"
    );
    describe_counter!(
        "infergate_rate_limited_total",
        "Requests refused with 429, by caller name and scope (caller, quota, global)"
    );
}

/// Sets `infergate_process_resident_memory_bytes` from `/proc/self/status` (Linux; elsewhere
/// it is not set). Read when scraped.
pub fn record_process_memory() {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let rss_kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        });
    if let Some(kb) = rss_kb {
        metrics::gauge!("infergate_process_resident_memory_bytes").set(kb * 1024.0);
    }
}
