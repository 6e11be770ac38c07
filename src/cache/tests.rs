use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::model::ModelError;
use crate::pipeline::ScoreError;

fn cache(ttl_s: u64) -> ScoreCache {
    ScoreCache::new(&CacheConfig {
        ttl_s,
        max_entries: 100,
    })
}

fn scored(score: f32) -> ModelScore {
    ModelScore {
        score,
        model: Arc::from("m@1"),
        timing: Default::default(),
    }
}

fn key(id: &str) -> CacheKey {
    ScoreCache::key("m@1", id, &FeatureRow([1.0; 9]))
}

#[test]
fn keys_depend_on_model_id_and_features() {
    let row = FeatureRow([1.0; 9]);
    let mut other = row;
    other.0[8] = 2.0;
    let base = ScoreCache::key("m@1", "tx", &row);
    assert_eq!(base, ScoreCache::key("m@1", "tx", &row));
    assert_ne!(base, ScoreCache::key("m@2", "tx", &row));
    assert_ne!(base, ScoreCache::key("m@1", "tx2", &row));
    assert_ne!(base, ScoreCache::key("m@1", "tx", &other));
    assert_ne!(
        ScoreCache::key("ab", "c", &row),
        ScoreCache::key("a", "bc", &row)
    );
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_ttl_on_tokio_time() {
    let cache = cache(300);
    cache.insert(key("a"), scored(0.2)).await;
    assert_eq!(cache.get(&key("a")).await, Some(scored(0.2)));
    assert_eq!(cache.get(&key("b")).await, None);
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(cache.get(&key("a")).await.is_some());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        cache.get(&key("a")).await,
        None,
        "expired at exactly the TTL"
    );

    let calls = AtomicUsize::new(0);
    let compute = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<_, ScoreError>(scored(0.3))
    };
    cache
        .get_or_compute(key("c"), false, compute())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(301)).await;
    let (_, source) = cache
        .get_or_compute(key("c"), false, compute())
        .await
        .unwrap();
    assert_eq!(source, Origin::Model, "a stale entry is scored again");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_identical_requests_share_one_computation() {
    let cache = cache(300);
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (cache, calls, gate) = (cache.clone(), Arc::clone(&calls), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_compute(key("same"), false, async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok::<_, ScoreError>(scored(0.7))
                })
                .await
        }));
    }
    // Let every task reach the cache, then release the one computation.
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    gate.notify_waiters();
    gate.notify_one();
    let mut sources = Vec::new();
    for task in tasks {
        let (s, source) = task.await.unwrap().unwrap();
        assert_eq!(s, scored(0.7));
        sources.push(source);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(sources.iter().filter(|s| **s == Origin::Model).count(), 1);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let cache = cache(300);
    let failed = cache
        .get_or_compute(key("e"), false, async {
            Err(ScoreError::Model(ModelError::Unavailable("down".into())))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(cache.get(&key("e")).await, None);
    let (s, source) = cache
        .get_or_compute(key("e"), false, async { Ok::<_, ScoreError>(scored(0.1)) })
        .await
        .unwrap();
    assert_eq!((s, source), (scored(0.1), Origin::Model));
}

#[tokio::test]
async fn refresh_skips_the_read_and_replaces_the_entry() {
    let cache = cache(300);
    cache.insert(key("r"), scored(0.1)).await;
    let (s, source) = cache
        .get_or_compute(key("r"), true, async { Ok::<_, ScoreError>(scored(0.9)) })
        .await
        .unwrap();
    assert_eq!((s, source), (scored(0.9), Origin::Model));
    assert_eq!(cache.get(&key("r")).await, Some(scored(0.9)));
}

#[tokio::test]
async fn a_disabled_cache_always_computes() {
    let cache = ScoreCache::new(&CacheConfig {
        ttl_s: 300,
        max_entries: 0,
    });
    for _ in 0..2 {
        let (_, source) = cache
            .get_or_compute(key("d"), false, async { Ok::<_, ScoreError>(scored(0.5)) })
            .await
            .unwrap();
        assert_eq!(source, Origin::Model);
    }
    cache.insert(key("d"), scored(0.5)).await;
    assert_eq!(cache.get(&key("d")).await, None);
}

#[tokio::test]
async fn a_full_cache_keeps_the_newest_scores() {
    // LRU: the newest key always gets in and the least recently used one leaves. (With moka's
    // default TinyLFU, a key seen once is often refused by a full cache, so a retry that comes
    // seconds later would be scored again.)
    let cache = ScoreCache::new(&CacheConfig {
        ttl_s: 60,
        max_entries: 10,
    });
    for i in 0..10 {
        cache.insert(key(&format!("old-{i}")), scored(0.1)).await;
    }
    let pending = || cache.entries.as_ref().unwrap().run_pending_tasks();
    pending().await;
    assert!(
        cache.get(&key("old-0")).await.is_some(),
        "old-0 is now the most recently used"
    );
    pending().await;
    for i in 0..5 {
        cache.insert(key(&format!("new-{i}")), scored(0.2)).await;
        pending().await;
    }
    for i in 0..5 {
        assert!(
            cache.get(&key(&format!("new-{i}"))).await.is_some(),
            "new-{i} was turned away"
        );
    }
    assert!(
        cache.get(&key("old-0")).await.is_some(),
        "the recently read entry stays"
    );
    for i in 1..6 {
        assert!(
            cache.get(&key(&format!("old-{i}"))).await.is_none(),
            "old-{i} should have left"
        );
    }
    pending().await;
    assert_eq!(cache.entry_count(), 10);
}
