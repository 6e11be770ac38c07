//! Usage plans: a token bucket per caller (governor), an optional daily quota per caller, and a
//! global bucket protecting the model that every caller shares, the stream consumer included.
//!
//! A caller's own bucket is checked first, so a caller flooding past its plan is turned away
//! before it can spend the global tokens other callers need; and the caller's plan (tokens and
//! daily quota) is charged only once the global limit has admitted the request, so a request the
//! global limit refuses costs the caller nothing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::auth::Caller;
use crate::config::{Config, OnRedisError};
use crate::error::{ApiError, ErrorKind};

/// A caller's usage plan, whichever way it authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub rate: u32,
    pub burst: u32,
    pub quota_per_day: Option<u64>,
    pub allow_cache_bypass: bool,
}

impl Plan {
    /// A plan from its configured keys; the burst defaults to the rate.
    pub fn new(rate: u32, burst: Option<u32>, quota_per_day: Option<u64>, bypass: bool) -> Self {
        Self {
            rate,
            burst: burst.unwrap_or(rate),
            quota_per_day,
            allow_cache_bypass: bypass,
        }
    }
}

mod staged;

use staged::StagedBucket;

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// Every configured caller's name and usage plan, API keys and SigV4 keys alike.
pub fn plans(config: &Config) -> impl Iterator<Item = (&str, Plan)> {
    let api_keys = config
        .auth
        .api_keys
        .iter()
        .map(|k| (k.name.as_str(), k.plan()));
    api_keys.chain(config.auth.sigv4.iter().map(|k| (k.name(), k.plan())))
}

/// Which limit turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Caller,
    Quota,
    Global,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Quota => "quota",
            Self::Global => "global",
        }
    }
}

/// The state of the limit a caller is closest to, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Tokens the bucket holds when full (or the daily quota).
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again (or the quota resets).
    pub reset_secs: u64,
}

impl RateInfo {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset_secs));
    }
}

/// A request turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub scope: Scope,
    /// Seconds until the request could succeed; `None` when it never can (a batch larger than
    /// the bucket).
    pub retry_after_secs: Option<u64>,
    pub info: RateInfo,
    pub detail: String,
}

/// One caller's limits.
struct CallerLimits<C: Clock + Clone> {
    bucket: Option<StagedBucket<C>>,
    plan: Plan,
    /// The daily quota's count. Locked for the whole of a check (with a quota or not), so that
    /// the caller's bucket and quota are checked, then charged, as one.
    used: Mutex<DayCount>,
}

#[derive(Debug, Default)]
struct DayCount {
    day: u64,
    used: u64,
}

/// Every configured limit.
pub struct RateLimits<C: Clock + Clone = DefaultClock> {
    callers: HashMap<Arc<str>, CallerLimits<C>>,
    global: Option<(Bucket<C>, u32, u32)>,
    clock: C,
}

impl<C: Clock + Clone> std::fmt::Debug for RateLimits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("callers", &self.callers.len())
            .field(
                "global",
                &self.global.as_ref().map(|(_, rps, burst)| (rps, burst)),
            )
            .finish()
    }
}

impl RateLimits<DefaultClock> {
    pub fn from_config(config: &Config) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(config: &Config, clock: C) -> Self {
        let mut callers = HashMap::new();
        for (name, plan) in plans(config) {
            let limits = CallerLimits {
                bucket: quota(plan.rate, plan.burst).map(|q| StagedBucket::new(q, clock.clone())),
                plan,
                used: Mutex::new(DayCount::default()),
            };
            callers.insert(Arc::from(name), limits);
        }
        let l = &config.limits;
        let global_burst = if l.global_burst == 0 {
            l.global_rps
        } else {
            l.global_burst
        };
        let global =
            bucket(l.global_rps, global_burst, &clock).map(|b| (b, l.global_rps, global_burst));
        Self {
            callers,
            global,
            clock,
        }
    }

    /// Charges `cost` tokens (one per transaction) to `caller` (`None`: anonymous, only the
    /// global limit applies). On success, returns the caller's own limit state for headers.
    pub fn check(
        &self,
        caller: Option<&str>,
        cost: u32,
        now: SystemTime,
    ) -> Result<Option<RateInfo>, RateLimited> {
        let cost = NonZeroU32::new(cost.max(1)).expect("max(1) is non-zero");
        let Some(limits) = caller.and_then(|name| self.callers.get(name)) else {
            self.take_global(cost)?;
            return Ok(None);
        };
        // A poisoned lock only means another request panicked mid-check; the count is usable.
        let mut used = limits.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut info = None;
        // Checked here, charged below once the global limit has admitted the request.
        if let Some(bucket) = &limits.bucket {
            info = Some(self.take(
                bucket.check_n(cost),
                cost,
                limits.plan.rate,
                limits.plan.burst,
                Scope::Caller,
            )?);
        }
        if let Some(per_day) = limits.plan.quota_per_day {
            let quota_info = check_quota(&mut used, per_day, u64::from(cost.get()), now)?;
            if info.is_none_or(|i: RateInfo| quota_info.remaining < i.remaining) {
                info = Some(quota_info);
            }
        }
        self.take_global(cost)?;
        if let Some(bucket) = &limits.bucket {
            bucket.commit();
        }
        if limits.plan.quota_per_day.is_some() {
            used.used += u64::from(cost.get());
        }
        Ok(info)
    }

    fn take_global(&self, cost: NonZeroU32) -> Result<(), RateLimited> {
        if let Some((bucket, rps, burst)) = &self.global {
            self.take(bucket.check_n(cost), cost, *rps, *burst, Scope::Global)?;
        }
        Ok(())
    }

    /// Waits until the global limit admits `cost` tokens (for the stream consumer, which must
    /// slow down rather than be turned away). A cost over the global burst, which the bucket can
    /// never admit at once, is taken a burst at a time.
    pub async fn wait_global(&self, cost: u32) {
        let Some((bucket, _, burst)) = &self.global else {
            return;
        };
        let burst = (*burst).max(1);
        let mut left = cost.max(1);
        while left > 0 {
            let piece = left.min(burst);
            let n = NonZeroU32::new(piece).expect("piece >= 1");
            loop {
                match bucket.check_n(n) {
                    Ok(Ok(_)) => break,
                    Ok(Err(not_until)) => {
                        tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                    }
                    // Cannot happen (no piece is over the burst), and waiting would not help.
                    Err(_) => return,
                }
            }
            left -= piece;
        }
    }

    /// A bucket's answer to `check_n(cost)` as the caller's limit state, or why it refused.
    fn take(
        &self,
        checked: CheckN<C>,
        cost: NonZeroU32,
        rate: u32,
        burst: u32,
        scope: Scope,
    ) -> Result<RateInfo, RateLimited> {
        match checked {
            Ok(Ok(snapshot)) => Ok(RateInfo::bucket(
                rate,
                burst,
                u64::from(snapshot.remaining_burst_capacity()),
            )),
            Ok(Err(not_until)) => Err(RateLimited::over_rate(
                scope,
                rate,
                burst,
                not_until.wait_time_from(self.clock.now()),
            )),
            Err(_) => Err(RateLimited::over_burst(scope, rate, burst, cost.get())),
        }
    }
}

impl RateInfo {
    /// A bucket of `burst` tokens refilled at `rate` per second, holding `remaining`.
    pub fn bucket(rate: u32, burst: u32, remaining: u64) -> Self {
        let limit = u64::from(burst);
        Self {
            limit,
            remaining,
            reset_secs: limit
                .saturating_sub(remaining)
                .div_ceil(u64::from(rate.max(1))),
        }
    }
}

impl RateLimited {
    /// `scope`'s bucket admits the request in `wait`.
    pub fn over_rate(scope: Scope, rate: u32, burst: u32, wait: Duration) -> Self {
        let retry = ceil_secs(wait);
        let mut info = RateInfo::bucket(rate, burst, 0);
        info.reset_secs = info.reset_secs.max(retry);
        Self {
            scope,
            retry_after_secs: Some(retry),
            info,
            detail: format!(
                "{} rate limit of {rate} per second (burst {burst}) exceeded; retry in {retry} s",
                scope_name(scope)
            ),
        }
    }

    /// `cost` is more than `scope`'s bucket ever holds.
    pub fn over_burst(scope: Scope, rate: u32, burst: u32, cost: u32) -> Self {
        Self {
            scope,
            retry_after_secs: None,
            info: RateInfo::bucket(rate, burst, 0),
            detail: format!(
                "this request costs {cost} tokens (one per transaction), more than the {} burst of {burst}; split it",
                scope_name(scope)
            ),
        }
    }

    /// The daily quota of `per_day` has `used` counted, and resets in `reset_secs`.
    pub fn over_quota(per_day: u64, used: u64, reset_secs: u64) -> Self {
        Self {
            scope: Scope::Quota,
            retry_after_secs: Some(reset_secs),
            info: RateInfo {
                limit: per_day,
                remaining: per_day - used.min(per_day),
                reset_secs,
            },
            detail: format!(
                "the caller's daily quota of {per_day} transactions is used up; it resets at 00:00 UTC, in {reset_secs} s"
            ),
        }
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Caller => "the caller's",
        Scope::Quota => "the caller's daily",
        Scope::Global => "the gateway's global",
    }
}

/// What `check_n` answers on a bucket with `StateInformationMiddleware`.
type CheckN<C> = Result<
    Result<governor::middleware::StateSnapshot, governor::NotUntil<<C as Clock>::Instant>>,
    governor::InsufficientCapacity,
>;

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

fn bucket<C: Clock + Clone>(rate: u32, burst: u32, clock: &C) -> Option<Bucket<C>> {
    let quota = quota(rate, burst)?;
    Some(RateLimiter::direct_with_clock(quota, clock.clone()).with_middleware())
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs.max(1)
    }
}

pub const DAY_SECS: u64 = 86_400;

/// Seconds until the next 00:00 UTC.
pub fn secs_to_midnight(now: SystemTime) -> u64 {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DAY_SECS - secs % DAY_SECS
}

/// Whether `cost` more transactions fit in today's quota, and the quota's state once they are
/// counted; nothing is counted here (the caller adds `cost` to `count.used` once the request is
/// admitted).
fn check_quota(
    count: &mut DayCount,
    per_day: u64,
    cost: u64,
    now: SystemTime,
) -> Result<RateInfo, RateLimited> {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let day = secs / DAY_SECS;
    let reset_secs = DAY_SECS - secs % DAY_SECS;
    if count.day != day {
        *count = DayCount { day, used: 0 };
    }
    if count.used + cost > per_day {
        return Err(RateLimited::over_quota(per_day, count.used, reset_secs));
    }
    Ok(RateInfo {
        limit: per_day,
        remaining: per_day - count.used - cost,
        reset_secs,
    })
}

/// How many tokens a request costs, from its body (one per transaction).
pub type CostFn = fn(&[u8]) -> u32;

/// State of the rate-limit middleware on one route.
#[derive(Clone)]
pub struct RateLimitState {
    pub limits: Arc<RateLimits>,
    /// Limits shared through Redis: decided there first, `limits` only when Redis fails.
    pub fleet: Option<crate::fleet::Fleet>,
    /// `None`: every request costs one token and the body is not read here.
    pub cost: Option<CostFn>,
    pub body_limit: usize,
}

/// Charges the caller's plan and the global limit; 429 with `Retry-After` and `RateLimit-*`
/// headers when either is exhausted, and the caller's `RateLimit-*` state on every response.
pub async fn rate_limit(
    State(state): State<RateLimitState>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous);
    let (request, cost) = match state.cost {
        None => (request, 1),
        Some(cost_of) => {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, state.body_limit).await else {
                return ApiError::payload_too_large().into_response();
            };
            let cost = cost_of(&bytes);
            (
                Request::from_parts(parts, axum::body::Body::from(bytes)),
                cost,
            )
        }
    };
    let name = (!caller.is_anonymous()).then_some(&*caller.name);
    let now = SystemTime::now();
    let decision = match &state.fleet {
        None => state.limits.check(name, cost, now),
        Some(fleet) => match fleet.limits().check(fleet, name, cost, now).await {
            Ok(decision) => decision,
            Err(e) => {
                let mode = fleet.on_error();
                metrics::counter!("infergate_fleet_fallbacks_total", "mode" => mode.as_str())
                    .increment(1);
                if mode == OnRedisError::Deny {
                    return ApiError::new(
                        ErrorKind::LimitsUnavailable,
                        format!("the fleet's shared usage plans cannot be checked: {e}"),
                    )
                    .into_response();
                }
                state.limits.check(name, cost, now)
            }
        },
    };
    match decision {
        Ok(info) => {
            let mut response = next.run(request).await;
            if let Some(info) = info {
                info.write_headers(response.headers_mut());
            }
            response
        }
        Err(limited) => {
            metrics::counter!(
                "infergate_rate_limited_total",
                "caller" => caller.name.to_string(),
                "scope" => limited.scope.as_str()
            )
            .increment(1);
            let mut error = ApiError::new(ErrorKind::RateLimited, limited.detail);
            limited.info.write_headers(&mut error.headers);
            if let Some(secs) = limited.retry_after_secs {
                error.headers.insert("retry-after", HeaderValue::from(secs));
            }
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests;
