//! A fake SageMaker endpoint for benchmarks: `InvokeEndpoint`'s wire format, a fixed latency per
//! invocation plus a cost per row, a bounded number of invocations at once (beyond: wait, or
//! `ThrottlingException` with `--throttle`), an error rate, and counters at `GET /stats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct Options {
    pub latency: Duration,
    pub cost_per_row: Duration,
    pub concurrency: usize,
    /// Beyond `concurrency`, answer `ThrottlingException` instead of waiting.
    pub throttle: bool,
    /// Share of invocations answered `ServiceUnavailable` (503).
    pub error_rate: f64,
    pub seed: u64,
}

pub struct Endpoint {
    options: Options,
    slots: Arc<Semaphore>,
    rng: std::sync::Mutex<rand::rngs::StdRng>,
    invocations: AtomicU64,
    rows: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
}

pub fn router(options: Options) -> Router {
    let endpoint = Arc::new(Endpoint {
        slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
        rng: std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(options.seed)),
        options,
        invocations: AtomicU64::new(0),
        rows: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    Router::new()
        .route("/endpoints/{name}/invocations", post(invoke))
        .route("/stats", get(stats))
        .with_state(endpoint)
}

fn aws_error(status: StatusCode, code: &'static str) -> Response {
    let mut response = (
        status,
        axum::Json(serde_json::json!({"message": format!("fake endpoint: {code}")})),
    )
        .into_response();
    response.headers_mut().insert(
        "x-amzn-errortype",
        axum::http::HeaderValue::from_static(code),
    );
    response
}

async fn invoke(State(endpoint): State<Arc<Endpoint>>, body: String) -> Response {
    let o = &endpoint.options;
    let slot = if o.throttle {
        match Arc::clone(&endpoint.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                endpoint.throttled.fetch_add(1, Ordering::Relaxed);
                return aws_error(StatusCode::BAD_REQUEST, "ThrottlingException");
            }
        }
    } else {
        Arc::clone(&endpoint.slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    };
    let rows = body.lines().filter(|l| !l.trim().is_empty()).count();
    tokio::time::sleep(o.latency + o.cost_per_row * rows as u32).await;
    drop(slot);
    endpoint.invocations.fetch_add(1, Ordering::Relaxed);
    let fail = o.error_rate > 0.0
        && endpoint
            .rng
            .lock()
            .expect("no panics while locked")
            .random_bool(o.error_rate.min(1.0));
    if fail {
        endpoint.errors.fetch_add(1, Ordering::Relaxed);
        return aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
    }
    endpoint.rows.fetch_add(rows as u64, Ordering::Relaxed);
    ([("content-type", "text/csv")], "0.5\n".repeat(rows)).into_response()
}

async fn stats(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "invocations": endpoint.invocations.load(Ordering::Relaxed),
        "rows": endpoint.rows.load(Ordering::Relaxed),
        "throttled": endpoint.throttled.load(Ordering::Relaxed),
        "errors": endpoint.errors.load(Ordering::Relaxed),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(options: Options) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(options)).await.unwrap() });
        url
    }

    fn options() -> Options {
        Options {
            latency: Duration::from_millis(50),
            cost_per_row: Duration::ZERO,
            concurrency: 2,
            throttle: true,
            error_rate: 0.0,
            seed: 1,
        }
    }

    #[tokio::test]
    async fn beyond_its_concurrency_it_throttles_and_it_answers_a_score_per_row() {
        let url = start(options()).await;
        let client = reqwest::Client::new();
        let call = || {
            client
                .post(format!("{url}/endpoints/x/invocations"))
                .body("1,2,3\n4,5,6\n")
                .send()
        };
        let (a, b, c) = tokio::join!(call(), call(), call());
        let mut statuses = vec![
            a.unwrap().status().as_u16(),
            b.unwrap().status().as_u16(),
            c.unwrap().status().as_u16(),
        ];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 200, 400],
            "two slots, the third is throttled"
        );
        let ok = call().await.unwrap();
        assert_eq!(ok.text().await.unwrap(), "0.5\n0.5\n");
        let stats: serde_json::Value = client
            .get(format!("{url}/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["throttled"], 1);
        assert_eq!(stats["rows"], 6);
    }

    #[tokio::test]
    async fn the_error_rate_fails_that_share_of_invocations() {
        let url = start(Options {
            latency: Duration::ZERO,
            throttle: false,
            error_rate: 0.3,
            ..options()
        })
        .await;
        let client = reqwest::Client::new();
        let mut failed = 0;
        for _ in 0..200 {
            let r = client
                .post(format!("{url}/endpoints/x/invocations"))
                .body("1\n")
                .send()
                .await
                .unwrap();
            if r.status() == 503 {
                assert_eq!(r.headers()["x-amzn-errortype"], "ServiceUnavailable");
                failed += 1;
            }
        }
        assert!(
            (35..=85).contains(&failed),
            "{failed} of 200 failed at a 30% rate"
        );
    }
}
