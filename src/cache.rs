//! The response caches: one TTL cache, used for scores (by request) and for pass-through answers
//! (by body), so that a retried transaction or a redelivered stream record is not scored twice,
//! and concurrent identical requests share one model call.
//!
//! A score's key is a SHA-256 over the model's version, the transaction id and the features the
//! model sees: everything the score depends on, and nothing it does not (two requests that
//! differ only in, say, `currency` get the same score, so they may share it). Freshness is
//! judged on tokio's clock, so tests can pause and advance time; moka's own TTL, on the real
//! clock, only reclaims memory.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::policy::EvictionPolicy;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::domain::FeatureRow;
use crate::model::{RawAnswer, RawRequest};
use crate::pipeline::ModelScore;

/// Identifies one cached request.
pub type CacheKey = [u8; 32];

/// Keys are SHA-256 digests already, so a fast hasher is enough; it is still seeded at random
/// per process, so that nobody can aim many keys at one bucket. (moka's default, SipHash, was
/// about 1.5% of the scoring route.)
type KeyHasher = foldhash::fast::RandomState;

/// Scores by request.
pub type ScoreCache = TtlCache<ModelScore>;

/// Answers to pass-through calls (bodies the gateway does not parse), bounded by total bytes.
pub type RawCache = TtlCache<Arc<RawAnswer>>;

/// At most this many bytes of pass-through answers are cached.
const RAW_CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    stored_at: Instant,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Computed for this request.
    Model,
    /// Served from the cache, or from a concurrent identical request's model call.
    Cache,
}

/// A cache of values for `cache.ttl_s` on tokio's clock; disabled (every look-up a miss, every
/// insert dropped) when `cache.max_entries` or `cache.ttl_s` is zero.
#[derive(Clone)]
pub struct TtlCache<V> {
    entries: Option<Cache<CacheKey, Entry<V>, KeyHasher>>,
    ttl: Duration,
    counts: Counts,
}

impl<V> std::fmt::Debug for TtlCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("cache", &self.counts.name)
            .field("enabled", &self.entries.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl ScoreCache {
    pub fn new(config: &CacheConfig) -> Self {
        Self::build(config, "score", |builder| {
            // LRU rather than moka's default TinyLFU: the cache is there for retries and
            // redeliveries, which come soon after the first request, while TinyLFU would turn
            // away a new key in favour of entries seen more often. No eviction listener either:
            // with one, each insert into a full cache paid for a notification (8% of the miss
            // path's throughput); `infergate_cache_entries` shows the fill instead.
            builder
                .max_capacity(config.max_entries)
                .eviction_policy(EvictionPolicy::lru())
        })
    }

    pub fn key(model_version: &str, transaction_id: &str, features: &FeatureRow) -> CacheKey {
        let mut hasher = Sha256::new();
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for part in [model_version.as_bytes(), transaction_id.as_bytes()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        for value in features.0 {
            hasher.update(value.to_bits().to_le_bytes());
        }
        hasher.finalize().into()
    }
}

impl RawCache {
    pub fn new(config: &CacheConfig) -> Self {
        Self::build(config, "raw", |builder| {
            builder
                .max_capacity(RAW_CACHE_BYTES)
                .weigher(|_, entry: &Entry<Arc<RawAnswer>>| {
                    u32::try_from(entry.value.body.len()).unwrap_or(u32::MAX)
                })
        })
    }

    /// A hash of the model version, content type, accepted type and body.
    pub fn key(model_version: &str, request: &RawRequest<'_>) -> CacheKey {
        let mut hasher = Sha256::new();
        for part in [
            model_version.as_bytes(),
            request.content_type.as_bytes(),
            request.accept.unwrap_or("").as_bytes(),
            request.enable_explanations.unwrap_or("").as_bytes(),
            request.body,
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }
}

type Builder<V> = moka::future::CacheBuilder<CacheKey, Entry<V>, Cache<CacheKey, Entry<V>>>;

impl<V: Clone + Send + Sync + 'static> TtlCache<V> {
    fn build(
        config: &CacheConfig,
        name: &'static str,
        policy: impl FnOnce(Builder<V>) -> Builder<V>,
    ) -> Self {
        let ttl = Duration::from_secs(config.ttl_s);
        let entries = (config.max_entries > 0 && !ttl.is_zero()).then(|| {
            policy(Cache::builder())
                .time_to_live(ttl)
                .build_with_hasher(KeyHasher::default())
        });
        Self {
            entries,
            ttl,
            counts: Counts::new(name),
        }
    }

    /// Entries held (moka's count, which may lag inserts slightly).
    pub fn entry_count(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::entry_count)
    }

    /// Total weight held: bytes for the raw cache, entries for the score cache.
    pub fn weighted_size(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::weighted_size)
    }

    /// A fresh cached value.
    pub async fn get(&self, key: &CacheKey) -> Option<V> {
        let entries = self.entries.as_ref()?;
        let found = entries.get(key).await;
        let value = match found {
            Some(entry) if entry.stored_at.elapsed() < self.ttl => Some(entry.value),
            Some(_) => {
                entries.invalidate(key).await;
                None
            }
            None => None,
        };
        self.counts.count(value.is_some());
        value
    }

    pub async fn insert(&self, key: CacheKey, value: V) {
        if let Some(entries) = &self.entries {
            let entry = Entry {
                value,
                stored_at: Instant::now(),
            };
            entries.insert(key, entry).await;
        }
    }

    /// The cached value, or the one `compute` gives; concurrent calls for the same key wait for
    /// one computation. With `refresh`, the cache is not read (but is written). Errors are never
    /// cached.
    pub async fn get_or_compute<F, E>(
        &self,
        key: CacheKey,
        refresh: bool,
        compute: F,
    ) -> Result<(V, Origin), E>
    where
        F: Future<Output = Result<V, E>>,
        E: Clone + Send + Sync + 'static,
    {
        let Some(entries) = &self.entries else {
            return compute.await.map(|v| (v, Origin::Model));
        };
        if refresh {
            let value = compute.await?;
            self.insert(key, value.clone()).await;
            return Ok((value, Origin::Model));
        }
        if let Some(entry) = entries.get(&key).await
            && entry.stored_at.elapsed() >= self.ttl
        {
            entries.invalidate(&key).await;
        }
        let entry = entries
            .entry(key)
            .or_try_insert_with(async {
                compute.await.map(|value| Entry {
                    value,
                    stored_at: Instant::now(),
                })
            })
            .await
            .map_err(|e: Arc<E>| (*e).clone())?;
        let origin = if entry.is_fresh() {
            Origin::Model
        } else {
            Origin::Cache
        };
        self.counts.count(origin == Origin::Cache);
        Ok((entry.into_value().value, origin))
    }
}

/// The hit and miss counters of one cache, looked up once rather than per request.
#[derive(Clone)]
struct Counts {
    name: &'static str,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl Counts {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            hits: metrics::counter!("infergate_cache_requests_total", "cache" => name, "result" => "hit"),
            misses: metrics::counter!("infergate_cache_requests_total", "cache" => name, "result" => "miss"),
        }
    }

    fn count(&self, hit: bool) {
        if hit { &self.hits } else { &self.misses }.increment(1);
    }
}

#[cfg(test)]
mod tests;
