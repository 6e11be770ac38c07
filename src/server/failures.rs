//! The log line for a failed response (5xx), at most one a second: under overload every shed
//! request is a 503, and one line each filled the log (53 MB in one overload run) while the
//! metrics already count them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::OnFailure;

/// Lets one event through per second and counts the rest, to be reported with the next one.
#[derive(Debug)]
pub(crate) struct LogGate {
    start: Instant,
    /// The second (since `start`) of the last event let through, plus one; 0: none yet.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, saying that `n` events were held back since the last line.
    pub(crate) fn pass(&self, now: Instant) -> Option<u64> {
        let second = now.saturating_duration_since(self.start).as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != second
            && self
                .last
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// `TraceLayer`'s failure hook, through a [`LogGate`].
#[derive(Debug, Clone)]
pub(crate) struct SampledFailures(Arc<LogGate>);

impl SampledFailures {
    pub(crate) fn new() -> Self {
        Self(Arc::new(LogGate::new()))
    }
}

impl OnFailure<ServerErrorsFailureClass> for SampledFailures {
    fn on_failure(
        &mut self,
        failure: ServerErrorsFailureClass,
        latency: Duration,
        _span: &tracing::Span,
    ) {
        if let Some(suppressed) = self.0.pass(Instant::now()) {
            tracing::error!(
                classification = %failure,
                latency_ms = latency.as_millis() as u64,
                suppressed,
                "response failed (at most one line a second; `suppressed` more since the last)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_a_second_passes_and_the_rest_are_counted() {
        let gate = LogGate::new();
        let t0 = gate.start;
        assert_eq!(gate.pass(t0), Some(0));
        for i in 1..100 {
            assert_eq!(gate.pass(t0 + Duration::from_millis(i * 5)), None);
        }
        assert_eq!(gate.pass(t0 + Duration::from_millis(1_200)), Some(99));
        assert_eq!(gate.pass(t0 + Duration::from_millis(1_300)), None);
        assert_eq!(gate.pass(t0 + Duration::from_secs(5)), Some(1));
    }

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// ERROR lines logged while `router` answers 50 requests (each a 503).
    fn error_lines(router: axum::Router) -> usize {
        use tower::ServiceExt;
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                for _ in 0..50 {
                    let request = axum::http::Request::new(axum::body::Body::empty());
                    let response = router.clone().oneshot(request).await.unwrap();
                    assert_eq!(response.status(), 503);
                }
            });
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().filter(|l| l.contains("ERROR")).count()
    }

    #[test]
    fn a_flood_of_503s_logs_one_line_a_second_not_one_each() {
        let shed = || {
            axum::Router::new().route(
                "/",
                axum::routing::get(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
            )
        };
        // tower-http's default, for comparison: one ERROR line per failed response.
        let every = error_lines(shed().layer(tower_http::trace::TraceLayer::new_for_http()));
        assert_eq!(every, 50);
        let sampled = error_lines(shed().layer(
            tower_http::trace::TraceLayer::new_for_http().on_failure(SampledFailures::new()),
        ));
        assert_eq!(sampled, 1);
    }
}
