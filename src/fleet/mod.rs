//! What replicas share through Redis (`[fleet]`): usage plans, daily quotas and the global
//! limit, decided in one Lua script per request (GCRA, so rate and burst hold across the fleet
//! with no window edges), and a second level of the response cache.
//!
//! Every call has a deadline (`fleet.redis_timeout_ms`); its request falls back on its own, and
//! three failed calls in a row mark Redis down: the replicas then decide alone (`on_redis_error = "local"`, at `rate / replicas_hint`) or answer
//! 503 (`"deny"`), without calling Redis per request, while a background probe waits for it to
//! answer again.

mod cache;
mod limits;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{Config, FleetConfig, OnRedisError};
pub use limits::FleetLimits;

/// `config` with every usage plan, quota and the global limit divided by `replicas`: what
/// each replica applies alone while Redis is unreachable (`on_redis_error = "local"`).
pub fn local_share(config: &Config, replicas: u32) -> Config {
    let n = replicas.max(1);
    let part = |v: u32| if v == 0 { 0 } else { v.div_ceil(n) };
    let share = |rate: &mut u32, burst: &mut Option<u32>, quota: &mut Option<u64>| {
        *rate = part(*rate);
        *burst = burst.map(part);
        *quota = quota.map(|q| q.div_ceil(u64::from(n)));
    };
    let mut local = config.clone();
    for key in &mut local.auth.api_keys {
        share(&mut key.rate, &mut key.burst, &mut key.quota_per_day);
    }
    for key in &mut local.auth.sigv4 {
        share(&mut key.rate, &mut key.burst, &mut key.quota_per_day);
    }
    local.limits.global_rps = part(local.limits.global_rps);
    local.limits.global_burst = part(local.limits.global_burst);
    local
}

/// Calls failed in a row before Redis is marked down (one slow call under load is not an
/// outage; its request alone falls back).
const FAILURES_TO_DOWN: u32 = 3;

/// Why Redis gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("Redis is unreachable (a call failed recently; probing in the background)")]
    Down,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The shared Redis of a fleet, from one replica's side. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    timeout: Duration,
    on_error: OnRedisError,
    up: AtomicBool,
    /// Calls failed in a row; Redis is marked down at [`FAILURES_TO_DOWN`].
    failures: AtomicU32,
    prefix: String,
    shared_cache: bool,
    limits: FleetLimits,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("up", &self.is_up())
            .field("on_error", &self.inner.on_error)
            .finish()
    }
}

impl Fleet {
    /// Connects lazily: a Redis that is down at start-up is a fallback, not a failed start.
    /// Starts the background probe (it ends with the runtime).
    pub fn new(config: &Config, fleet: &FleetConfig) -> Result<Self, FleetError> {
        let client = redis::Client::open(fleet.redis_url.as_str())?;
        let timeout = Duration::from_millis(fleet.redis_timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, manager)?;
        let prefix = format!("{{{}}}", fleet.key_prefix);
        let fleet = Self {
            inner: Arc::new(Inner {
                connection,
                timeout,
                on_error: fleet.on_redis_error,
                up: AtomicBool::new(true),
                failures: AtomicU32::new(0),
                limits: FleetLimits::new(config),
                prefix,
                shared_cache: fleet.shared_cache,
            }),
        };
        let probe = fleet.clone();
        tokio::spawn(async move { probe.probe().await });
        Ok(fleet)
    }

    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    pub fn on_error(&self) -> OnRedisError {
        self.inner.on_error
    }

    pub fn limits(&self) -> &FleetLimits {
        &self.inner.limits
    }

    /// Whether scores are shared through Redis too.
    pub fn shares_cache(&self) -> bool {
        self.inner.shared_cache
    }

    /// The Redis key for `parts` under this fleet's prefix.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.inner.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Runs one Redis call with the deadline, counting it; any failure marks Redis down.
    pub async fn call<T, F>(
        &self,
        operation: &'static str,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, FleetError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(FleetError::Down);
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.inner.timeout, call(self.inner.connection.clone()))
            .await
            .map_err(|_| FleetError::Timeout(self.inner.timeout))
            .and_then(|r| r.map_err(FleetError::from));
        metrics::histogram!("infergate_redis_call_duration_seconds", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(_) => self.inner.failures.store(0, Ordering::Relaxed),
            Err(e) => {
                metrics::counter!("infergate_redis_errors_total", "operation" => operation)
                    .increment(1);
                let failures = self.inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= FAILURES_TO_DOWN && self.inner.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e, failures,
                        "Redis failed: deciding without it until it answers again"
                    );
                }
            }
        }
        outcome
    }

    /// Loads the limits script, then, while Redis is marked down, pings it every 500 ms and
    /// marks it up once it answers.
    async fn probe(self) {
        if let Err(e) = self.inner.limits.load(&self).await {
            tracing::warn!(error = %e, "cannot load the limits script into Redis yet");
        }
        let mut every = tokio::time::interval(Duration::from_millis(500));
        loop {
            every.tick().await;
            if self.is_up() {
                continue;
            }
            let mut connection = self.inner.connection.clone();
            let ping = redis::cmd("PING");
            let answer = ping.query_async::<String>(&mut connection);
            if let Ok(Ok(_)) = tokio::time::timeout(self.inner.timeout * 5, answer).await {
                self.inner.failures.store(0, Ordering::Relaxed);
                self.inner.up.store(true, Ordering::Relaxed);
                tracing::info!("Redis answers again: limits are shared again");
            }
        }
    }
}
