//! The circuit breaker in front of the endpoint, so that a failing endpoint is not called on every
//! batch (and the fallback, if any, answers at once).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Closed: calls go through and consecutive failures are counted. Open: calls fail fast until
/// the cool-down ends. Half-open: one trial call; its outcome closes or re-opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub(super) struct Breaker {
    inner: Mutex<BreakerInner>,
    threshold: u32,
    cooldown: Duration,
}

#[derive(Debug)]
struct BreakerInner {
    state: BreakerState,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                failures: 0,
                open_until: None,
            }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Runs `call` if the breaker lets a call out now, and records its outcome; `None`, without
    /// running it, while the breaker is open.
    pub(super) async fn call<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Option<Result<T, E>> {
        if !self.allow(Instant::now()) {
            return None;
        }
        let outcome = call.await;
        match &outcome {
            Ok(_) => self.success(),
            Err(_) => self.failure(Instant::now()),
        }
        Some(outcome)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Whether a call may go out now.
    pub(super) fn allow(&self, now: Instant) -> bool {
        let mut b = self.lock();
        match b.state {
            BreakerState::Closed => true,
            BreakerState::Open if b.open_until.is_some_and(|t| now >= t) => {
                set_state(&mut b, BreakerState::HalfOpen);
                true
            }
            // One trial at a time while half-open.
            BreakerState::Open | BreakerState::HalfOpen => false,
        }
    }

    pub(super) fn success(&self) {
        let mut b = self.lock();
        b.failures = 0;
        set_state(&mut b, BreakerState::Closed);
    }

    pub(super) fn failure(&self, now: Instant) {
        let mut b = self.lock();
        b.failures += 1;
        if b.state == BreakerState::HalfOpen || b.failures >= self.threshold {
            b.open_until = Some(now + self.cooldown);
            set_state(&mut b, BreakerState::Open);
        }
    }
}

fn set_state(b: &mut BreakerInner, state: BreakerState) {
    b.state = state;
    let value = match state {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
    };
    metrics::gauge!("infergate_sagemaker_breaker_state").set(value);
}
