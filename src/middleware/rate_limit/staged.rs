//! A bucket whose check does not spend: a caller's tokens are spent only once every other limit
//! (its daily quota, the global limit) has admitted the request too.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

use governor::clock::Clock;
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{InsufficientCapacity, NotUntil, Quota, RateLimiter};

/// A token bucket checked in two steps: [`StagedBucket::check_n`] answers as governor's
/// `check_n` does without spending, [`StagedBucket::commit`] spends what the last successful
/// check would have. The owner serializes check and commit (one lock per caller).
pub(super) struct StagedBucket<C: Clock> {
    limiter: RateLimiter<NotKeyed, StagedState, C, StateInformationMiddleware>,
    state: StagedState,
}

impl<C: Clock> StagedBucket<C> {
    pub(super) fn new(quota: Quota, clock: C) -> Self {
        let state = StagedState::default();
        Self {
            limiter: RateLimiter::new(quota, state.clone(), clock),
            state,
        }
    }

    /// Whether `n` tokens are there now; nothing is spent.
    pub(super) fn check_n(
        &self,
        n: NonZeroU32,
    ) -> Result<Result<StateSnapshot, NotUntil<C::Instant>>, InsufficientCapacity> {
        self.limiter.check_n(n)
    }

    /// Spends the tokens of the last successful [`StagedBucket::check_n`].
    pub(super) fn commit(&self) {
        let mut s = self.state.lock();
        if let Some(staged) = s.staged.take() {
            s.tat = Some(staged);
        }
    }
}

/// The bucket's state (its theoretical arrival time), and the one a check would leave.
#[derive(Clone, Default)]
pub(super) struct StagedState(Arc<Mutex<Staged>>);

#[derive(Default)]
struct Staged {
    tat: Option<Nanos>,
    staged: Option<Nanos>,
}

impl StagedState {
    fn lock(&self) -> MutexGuard<'_, Staged> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for StagedState {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut s = self.lock();
        s.staged = None;
        let (outcome, next) = f(s.tat)?;
        s.staged = Some(next);
        Ok(outcome)
    }
}
