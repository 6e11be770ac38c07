//! The response cache: scores by request, for `cache.ttl_s`, so that a retried transaction or a
//! redelivered stream record is not scored twice, and concurrent identical requests share one
//! model call.
//!
//! The key is a SHA-256 over the model's version, the transaction id and the features the model
//! sees: everything the score depends on, and nothing it does not (two requests that differ
//! only in, say, `currency` get the same score, so they may share it). Freshness is judged on
//! tokio's clock, so tests can pause and advance time; moka's own TTL, on the real clock, only
//! reclaims memory.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::policy::EvictionPolicy;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::domain::FeatureRow;
use crate::model::{RawAnswer, RawRequest};
use crate::pipeline::{ScoreError, Scored};

/// Identifies one scoring request.
pub type CacheKey = [u8; 32];

/// Keys are SHA-256 digests already, so a fast hasher is enough; it is still seeded at random
/// per process, so that nobody can aim many keys at one bucket. (moka's default, SipHash, was
/// about 1.5% of the scoring route.)
type KeyHasher = foldhash::fast::RandomState;

#[derive(Debug, Clone)]
struct Entry {
    scored: Scored,
    stored_at: Instant,
}

/// Where a score came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Computed for this request.
    Model,
    /// Served from the cache, or from a concurrent identical request's model call.
    Cache,
}

#[derive(Clone)]
pub struct ScoreCache {
    entries: Option<Cache<CacheKey, Entry, KeyHasher>>,
    ttl: Duration,
    counts: Counts,
}

impl std::fmt::Debug for ScoreCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreCache")
            .field("enabled", &self.entries.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl ScoreCache {
    pub fn new(config: &CacheConfig) -> Self {
        let ttl = Duration::from_secs(config.ttl_s);
        let entries = (config.max_entries > 0 && !ttl.is_zero()).then(|| {
            // LRU rather than moka's default TinyLFU: the cache is there for retries and
            // redeliveries, which come soon after the first request, while TinyLFU would turn
            // away a new key in favour of entries seen more often. No eviction listener either:
            // with one, each insert into a full cache paid for a notification (8% of the miss
            // path's throughput); `infergate_cache_entries` shows the fill instead.
            Cache::builder()
                .max_capacity(config.max_entries)
                .eviction_policy(EvictionPolicy::lru())
                .time_to_live(ttl)
                .build_with_hasher(KeyHasher::default())
        });
        Self {
            entries,
            ttl,
            counts: Counts::new(),
        }
    }

    /// Scores held (moka's count, which may lag inserts slightly).
    pub fn entry_count(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::entry_count)
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

    /// A fresh cached score.
    pub async fn get(&self, key: &CacheKey) -> Option<Scored> {
        let entries = self.entries.as_ref()?;
        let found = entries.get(key).await;
        let scored = match found {
            Some(entry) if entry.stored_at.elapsed() < self.ttl => Some(entry.scored),
            Some(_) => {
                entries.invalidate(key).await;
                None
            }
            None => None,
        };
        self.counts.count(scored.is_some());
        scored
    }

    pub async fn insert(&self, key: CacheKey, scored: Scored) {
        if let Some(entries) = &self.entries {
            let entry = Entry {
                scored,
                stored_at: Instant::now(),
            };
            entries.insert(key, entry).await;
        }
    }

    /// The cached score, or the one `score` computes; concurrent calls for the same key wait for
    /// one computation. With `refresh`, the cache is not read (but is written). Errors are never
    /// cached.
    pub async fn get_or_score<F>(
        &self,
        key: CacheKey,
        refresh: bool,
        score: F,
    ) -> Result<(Scored, Source), ScoreError>
    where
        F: Future<Output = Result<Scored, ScoreError>>,
    {
        let Some(entries) = &self.entries else {
            return score.await.map(|s| (s, Source::Model));
        };
        if refresh {
            let scored = score.await?;
            self.insert(key, scored.clone()).await;
            return Ok((scored, Source::Model));
        }
        if let Some(entry) = entries.get(&key).await
            && entry.stored_at.elapsed() >= self.ttl
        {
            entries.invalidate(&key).await;
        }
        let entry = entries
            .entry(key)
            .or_try_insert_with(async {
                score.await.map(|scored| Entry {
                    scored,
                    stored_at: Instant::now(),
                })
            })
            .await
            .map_err(|e: Arc<ScoreError>| (*e).clone())?;
        let source = if entry.is_fresh() {
            Source::Model
        } else {
            Source::Cache
        };
        self.counts.count(source == Source::Cache);
        Ok((entry.into_value().scored, source))
    }
}

/// The hit and miss counters, looked up once rather than per request.
#[derive(Clone)]
struct Counts {
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl Counts {
    fn new() -> Self {
        Self {
            hits: metrics::counter!("infergate_cache_requests_total", "result" => "hit"),
            misses: metrics::counter!("infergate_cache_requests_total", "result" => "miss"),
        }
    }

    fn count(&self, hit: bool) {
        if hit { &self.hits } else { &self.misses }.increment(1);
    }
}

#[cfg(test)]
mod tests;

/// Cached answers to pass-through calls (bodies the gateway does not parse), keyed by a hash of
/// the model version, content type, accepted type and body; bounded by total bytes.
#[derive(Clone)]
pub struct RawCache {
    entries: Option<Cache<CacheKey, (Arc<RawAnswer>, Instant), KeyHasher>>,
    ttl: Duration,
    counts: Counts,
}

/// At most this many bytes of pass-through answers are cached.
const RAW_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl RawCache {
    pub fn new(config: &CacheConfig) -> Self {
        let ttl = Duration::from_secs(config.ttl_s);
        let entries = (config.max_entries > 0 && !ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(RAW_CACHE_BYTES)
                .weigher(|_, (answer, _): &(Arc<RawAnswer>, Instant)| {
                    u32::try_from(answer.body.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build_with_hasher(KeyHasher::default())
        });
        Self {
            entries,
            ttl,
            counts: Counts::new(),
        }
    }

    /// Bytes of answers held (moka's count, which may lag inserts slightly).
    pub fn weighted_size(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::weighted_size)
    }

    pub fn key(model_version: &str, request: &RawRequest<'_>) -> CacheKey {
        let mut hasher = Sha256::new();
        for part in [
            model_version.as_bytes(),
            request.content_type.as_bytes(),
            request.accept.unwrap_or("").as_bytes(),
            request.body,
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }

    pub async fn get(&self, key: &CacheKey) -> Option<Arc<RawAnswer>> {
        let entries = self.entries.as_ref()?;
        let fresh = entries
            .get(key)
            .await
            .filter(|(_, stored_at)| stored_at.elapsed() < self.ttl)
            .map(|(answer, _)| answer);
        self.counts.count(fresh.is_some());
        fresh
    }

    pub async fn insert(&self, key: CacheKey, answer: Arc<RawAnswer>) {
        if let Some(entries) = &self.entries {
            entries.insert(key, (answer, Instant::now())).await;
        }
    }
}

impl std::fmt::Debug for RawCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCache")
            .field("enabled", &self.entries.is_some())
            .finish()
    }
}
