//! Usage plans decided for the whole fleet: one `EVALSHA` of `limits.lua` per request (loaded
//! again by the client on `NOSCRIPT`), and a first stage in-process: once Redis has refused a
//! caller (or the global limit) until some time, requests before then are refused here without
//! a round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::{Fleet, FleetError};
use crate::config::Config;
use crate::middleware::rate_limit::{Plan, RateInfo, RateLimited, Scope, plans, secs_to_midnight};

static SCRIPT: &str = include_str!("limits.lua");

/// The plans of every caller and the global limit, and what Redis last refused.
pub struct FleetLimits {
    plans: HashMap<Arc<str>, Plan>,
    /// The global limit's rate and burst; 0 = none.
    global: (u32, u32),
    script: redis::Script,
    /// Refusals still in force, by caller (`""`: the global limit): until when, and the answer.
    refused: Mutex<HashMap<Arc<str>, (Instant, RateLimited)>>,
}

impl std::fmt::Debug for FleetLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLimits")
            .field("callers", &self.plans.len())
            .field("global", &self.global)
            .finish()
    }
}

/// The GCRA parameters of a rate and burst, in µs: the emission interval and the tolerance.
fn gcra(rate: u32, burst: u32) -> (f64, f64) {
    if rate == 0 {
        return (0.0, 0.0);
    }
    let interval = 1e6 / f64::from(rate);
    (interval, interval * f64::from(burst.max(1)))
}

impl FleetLimits {
    pub fn new(config: &Config) -> Self {
        let plans = plans(config)
            .map(|(name, plan)| (Arc::from(name), plan))
            .collect();
        let l = &config.limits;
        let burst = if l.global_burst == 0 {
            l.global_rps
        } else {
            l.global_burst
        };
        Self {
            plans,
            global: (l.global_rps, burst),
            script: redis::Script::new(SCRIPT),
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// Loads the script into Redis (`SCRIPT LOAD`), so that the first request's `EVALSHA`
    /// finds it; a Redis that lost it (a restart, `SCRIPT FLUSH`) gets it again on `NOSCRIPT`.
    pub async fn load(&self, fleet: &Fleet) -> Result<String, FleetError> {
        let script = &self.script;
        fleet
            .call("script_load", |mut connection| async move {
                script.load_async(&mut connection).await
            })
            .await
    }

    /// Charges `cost` to `caller`'s plan and the global limit, for the whole fleet: the
    /// caller's limit state for headers, or why the request is refused; `Err` when Redis
    /// gave no answer (the caller falls back).
    pub async fn check(
        &self,
        fleet: &Fleet,
        caller: Option<&str>,
        cost: u32,
        now: SystemTime,
    ) -> Result<Result<Option<RateInfo>, RateLimited>, FleetError> {
        let cost = cost.max(1);
        let plan = caller.and_then(|name| self.plans.get(name).copied());
        let name = caller.filter(|_| plan.is_some()).unwrap_or("");
        if let Some(refused) = self.still_refused(name) {
            return Ok(Err(refused));
        }
        let plan = plan.unwrap_or(Plan::new(0, None, None, false));
        let (interval, tolerance) = gcra(plan.rate, plan.burst);
        let (global_interval, global_tolerance) = gcra(self.global.0, self.global.1);
        let keys = [
            fleet.key(&["caller", name, "rate"]),
            fleet.key(&["caller", name, "quota"]),
            fleet.key(&["global", "rate"]),
        ];
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&keys[0])
            .key(&keys[1])
            .key(&keys[2])
            .arg(cost)
            .arg(interval)
            .arg(tolerance)
            .arg(plan.quota_per_day.unwrap_or(0))
            .arg(global_interval)
            .arg(global_tolerance);
        let (verdict, retry_ms, remaining, full_ms, used): (u8, i64, u64, u64, u64) = fleet
            .call("limits", |mut connection| async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        let retry = u64::try_from(retry_ms).ok().map(Duration::from_millis);
        let refused = |scope: Scope, rate: u32, burst: u32| match retry {
            Some(wait) => RateLimited::over_rate(scope, rate, burst, wait),
            None => RateLimited::over_burst(scope, rate, burst, cost),
        };
        let answer = match verdict {
            0 => {
                let mut info = (plan.rate > 0).then(|| {
                    let mut info = RateInfo::bucket(plan.rate, plan.burst, remaining);
                    info.reset_secs = full_ms.div_ceil(1000);
                    info
                });
                if let Some(per_day) = plan.quota_per_day {
                    let quota = RateInfo {
                        limit: per_day,
                        remaining: per_day.saturating_sub(used),
                        reset_secs: secs_to_midnight(now),
                    };
                    if info.is_none_or(|i| quota.remaining < i.remaining) {
                        info = Some(quota);
                    }
                }
                return Ok(Ok(info));
            }
            1 => refused(Scope::Caller, plan.rate, plan.burst),
            2 => RateLimited::over_quota(
                plan.quota_per_day.unwrap_or(0),
                used,
                secs_to_midnight(now),
            ),
            _ => refused(Scope::Global, self.global.0, self.global.1),
        };
        if let Some(wait) = retry {
            let whose = if answer.scope == Scope::Global {
                ""
            } else {
                name
            };
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            refused.insert(Arc::from(whose), (Instant::now() + wait, answer.clone()));
        }
        Ok(Err(answer))
    }

    /// A refusal Redis gave that is still in force, for `caller` or for everyone (the global
    /// limit), with the time left to wait.
    fn still_refused(&self, caller: &str) -> Option<RateLimited> {
        let now = Instant::now();
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.retain(|_, (until, _)| *until > now);
        let (until, answer) = refused.get(caller).or_else(|| refused.get(""))?;
        let mut answer = answer.clone();
        let wait = until.duration_since(now);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        answer.retry_after_secs = Some(secs.max(1));
        metrics::counter!("infergate_fleet_local_refusals_total").increment(1);
        Some(answer)
    }
}
