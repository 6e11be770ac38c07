//! The circuit breaker in front of the endpoint, so that a failing endpoint is not called on every
//! batch (and the fallback, if any, answers at once).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Closed: calls go through and consecutive failures are counted. Open: calls fail fast until
/// the cool-down ends. Half-open: one trial call; its outcome closes or re-opens (a trial dropped
/// before it finishes re-opens).
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
    ///
    /// A half-open breaker lets out one trial and refuses every other call until the trial's
    /// outcome is in, so the trial is held in a [`Pass`]: a trial dropped before it finishes (its
    /// caller hung up, a timeout) counts as a failure and re-opens the breaker, which half-opens
    /// again after the next cool-down instead of refusing calls for ever.
    pub(super) async fn call<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Option<Result<T, E>> {
        let pass = self.admit(Instant::now())?;
        let outcome = call.await;
        pass.record(outcome.is_ok());
        Some(outcome)
    }

    /// A pass for one call if the breaker lets it out now.
    fn admit(&self, now: Instant) -> Option<Pass<'_>> {
        let trial = self.let_out(now)?;
        Some(Pass {
            breaker: self,
            trial,
            recorded: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Whether a call may go out now (calls go out through [`Breaker::call`]).
    #[cfg(test)]
    pub(super) fn allow(&self, now: Instant) -> bool {
        self.let_out(now).is_some()
    }

    /// Whether a call may go out now, and if so whether it is the half-open trial.
    fn let_out(&self, now: Instant) -> Option<bool> {
        let mut b = self.lock();
        match b.state {
            BreakerState::Closed => Some(false),
            BreakerState::Open if b.open_until.is_some_and(|t| now >= t) => {
                set_state(&mut b, BreakerState::HalfOpen);
                Some(true)
            }
            // One trial at a time while half-open.
            BreakerState::Open | BreakerState::HalfOpen => None,
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

/// One call the breaker let out. Its outcome is recorded with [`Pass::record`]; dropping an
/// unrecorded trial pass counts as a failed trial (an ordinary call that is dropped counts as
/// nothing: the endpoint did not fail it).
struct Pass<'a> {
    breaker: &'a Breaker,
    /// Let out while half-open: the one call whose outcome closes or re-opens the breaker.
    trial: bool,
    recorded: bool,
}

impl Pass<'_> {
    fn record(mut self, ok: bool) {
        self.recorded = true;
        if ok {
            self.breaker.success();
        } else {
            self.breaker.failure(Instant::now());
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.recorded || !self.trial {
            return;
        }
        let mut b = self.breaker.lock();
        // Still waiting for this trial: nothing else can close or re-open the breaker.
        if b.state == BreakerState::HalfOpen {
            b.open_until = Some(Instant::now() + self.breaker.cooldown);
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
