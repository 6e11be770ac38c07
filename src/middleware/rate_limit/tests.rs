use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;
use crate::config::ApiKeyConfig;

fn key(name: &str, rate: u32, burst: u32, quota: Option<u64>) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.to_owned(),
        key_sha256: Some("0".repeat(64)),
        key_env: None,
        rate,
        burst: Some(burst),
        quota_per_day: quota,
        allow_cache_bypass: false,
    }
}

fn limits(
    keys: Vec<ApiKeyConfig>,
    global_rps: u32,
    global_burst: u32,
) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
    let mut config = Config::default();
    config.auth.api_keys = keys;
    config.limits.global_rps = global_rps;
    config.limits.global_burst = global_burst;
    let clock = FakeRelativeClock::default();
    (RateLimits::with_clock(&config, clock.clone()), clock)
}

/// Noon on some day, so quota resets are far away.
fn noon() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(20_000 * DAY_SECS + DAY_SECS / 2)
}

#[test]
fn burst_then_refill_at_the_rate() {
    let (limits, clock) = limits(vec![key("a", 2, 3, None)], 0, 0);
    for remaining in [2, 1, 0] {
        let info = limits.check(Some("a"), 1, noon()).unwrap().unwrap();
        assert_eq!((info.limit, info.remaining), (3, remaining));
    }
    let limited = limits.check(Some("a"), 1, noon()).unwrap_err();
    assert_eq!(limited.scope, Scope::Caller);
    assert_eq!(
        limited.retry_after_secs,
        Some(1),
        "a token every 0.5 s, rounded up"
    );
    assert_eq!(limited.info.remaining, 0);
    assert_eq!(limited.info.reset_secs, 2, "3 tokens at 2/s");
    assert!(
        limited.detail.contains("2 per second (burst 3)"),
        "{}",
        limited.detail
    );

    clock.advance(Duration::from_millis(500));
    assert!(
        limits.check(Some("a"), 1, noon()).is_ok(),
        "one token came back"
    );
    assert!(limits.check(Some("a"), 1, noon()).is_err());
}

#[test]
fn a_batch_costs_one_token_per_transaction() {
    let (limits, _clock) = limits(vec![key("a", 10, 10, None)], 0, 0);
    let info = limits.check(Some("a"), 7, noon()).unwrap().unwrap();
    assert_eq!(info.remaining, 3);
    assert!(limits.check(Some("a"), 4, noon()).is_err());
    let never = limits.check(Some("a"), 11, noon()).unwrap_err();
    assert_eq!(
        never.retry_after_secs, None,
        "larger than the burst: retrying cannot help"
    );
    assert!(never.detail.contains("split it"), "{}", never.detail);
}

#[test]
fn callers_do_not_share_buckets() {
    let (limits, _clock) = limits(vec![key("a", 1, 1, None), key("b", 1, 1, None)], 0, 0);
    assert!(limits.check(Some("a"), 1, noon()).is_ok());
    for _ in 0..100 {
        assert!(limits.check(Some("a"), 1, noon()).is_err());
    }
    assert!(
        limits.check(Some("b"), 1, noon()).is_ok(),
        "a's flood leaves b alone"
    );
}

#[test]
fn the_global_limit_is_shared_and_checked_after_the_callers_own() {
    let (limits, clock) = limits(vec![key("a", 1, 1, None), key("b", 100, 100, None)], 2, 2);
    assert!(limits.check(Some("a"), 1, noon()).is_ok());
    // a is over its own limit: turned away without spending global tokens.
    assert_eq!(
        limits.check(Some("a"), 1, noon()).unwrap_err().scope,
        Scope::Caller
    );
    assert!(limits.check(Some("b"), 1, noon()).is_ok());
    let global = limits.check(Some("b"), 1, noon()).unwrap_err();
    assert_eq!(global.scope, Scope::Global);
    assert!(
        limits.check(None, 1, noon()).is_err(),
        "anonymous callers share it too"
    );
    clock.advance(Duration::from_secs(1));
    assert!(limits.check(None, 2, noon()).is_ok());
}

#[test]
fn unlimited_callers_get_no_headers() {
    let (limits, _clock) = limits(vec![key("free", 0, 0, None)], 0, 0);
    for _ in 0..1000 {
        assert_eq!(limits.check(Some("free"), 5, noon()), Ok(None));
    }
    assert_eq!(limits.check(None, 5, noon()), Ok(None));
}

#[test]
fn daily_quota_counts_transactions_and_resets_at_midnight_utc() {
    let (limits, _clock) = limits(vec![key("q", 0, 0, Some(5))], 0, 0);
    let info = limits.check(Some("q"), 3, noon()).unwrap().unwrap();
    assert_eq!(
        (info.limit, info.remaining, info.reset_secs),
        (5, 2, DAY_SECS / 2)
    );
    let over = limits.check(Some("q"), 3, noon()).unwrap_err();
    assert_eq!(over.scope, Scope::Quota);
    assert_eq!(over.retry_after_secs, Some(DAY_SECS / 2));
    assert!(
        limits.check(Some("q"), 2, noon()).is_ok(),
        "what is left can still be used"
    );
    assert!(limits.check(Some("q"), 1, noon()).is_err());
    let tomorrow = noon() + Duration::from_secs(DAY_SECS / 2);
    assert_eq!(
        limits
            .check(Some("q"), 5, tomorrow)
            .unwrap()
            .unwrap()
            .remaining,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn the_stream_waits_for_global_tokens_instead_of_failing() {
    let mut config = Config::default();
    config.limits.global_rps = 1000;
    config.limits.global_burst = 1;
    let limits = RateLimits::from_config(&config);
    limits.wait_global(1).await;
    // The bucket is empty now; waiting for the next token returns once it refills.
    tokio::time::timeout(Duration::from_secs(5), limits.wait_global(1))
        .await
        .expect("a token comes back within a millisecond");
}

#[tokio::test(start_paused = true)]
async fn a_stream_chunk_over_the_global_burst_is_paced_in_bursts() {
    let (limits, clock) = limits(vec![], 10, 10);
    let wait = limits.wait_global(25);
    tokio::pin!(wait);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut wait)
            .await
            .is_err(),
        "25 tokens at 10 per second (burst 10) are not there at once"
    );
    assert!(
        limits.check(None, 1, noon()).is_err(),
        "the first burst went to the stream"
    );
    clock.advance(Duration::from_secs(1));
    assert!(
        tokio::time::timeout(Duration::from_secs(10), &mut wait)
            .await
            .is_err(),
        "the second burst is taken, the last 5 tokens are not back yet"
    );
    clock.advance(Duration::from_millis(500));
    tokio::time::timeout(Duration::from_secs(10), &mut wait)
        .await
        .expect("25 tokens are there after 1.5 s");
    assert!(
        limits.check(None, 1, noon()).is_err(),
        "the stream spent all 25"
    );
}

#[test]
fn a_request_the_global_limit_refuses_costs_the_caller_nothing() {
    let (limits, clock) = limits(
        vec![
            key("a", 1, 5, None),
            key("q", 0, 0, Some(5)),
            key("b", 100, 100, None),
        ],
        1,
        2,
    );
    assert!(limits.check(Some("b"), 2, noon()).is_ok());
    for caller in ["a", "q"] {
        for _ in 0..3 {
            let refused = limits.check(Some(caller), 1, noon()).unwrap_err();
            assert_eq!(refused.scope, Scope::Global);
        }
    }
    clock.advance(Duration::from_secs(2));
    let a = limits.check(Some("a"), 2, noon()).unwrap().unwrap();
    assert_eq!(
        a.remaining, 3,
        "the refused requests took none of a's tokens"
    );
    clock.advance(Duration::from_secs(2));
    let q = limits.check(Some("q"), 2, noon()).unwrap().unwrap();
    assert_eq!(
        q.remaining, 3,
        "the refused requests used none of q's daily quota"
    );
}
