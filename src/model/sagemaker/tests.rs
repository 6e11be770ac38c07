use super::retry::backoff;
use super::*;

fn row(v: f32) -> FeatureRow {
    FeatureRow([v; crate::domain::N_FEATURES])
}

fn two_feature_layout() -> FeatureLayout {
    FeatureLayout::from_model(&["tx_count_1h".into(), "amount".into()], 2).unwrap()
}

#[test]
fn csv_bodies_hold_the_models_features_in_its_order_with_missing_values_empty() {
    let mut r = FeatureRow([0.0; crate::domain::N_FEATURES]);
    r.0[0] = 12.5; // amount
    r.0[7] = f32::NAN; // tx_count_1h
    let bodies = encode(&[r, row(1.0)], &two_feature_layout(), Codec::Csv, 1 << 20);
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        String::from_utf8(bodies[0].0.clone()).unwrap(),
        ",12.5\n1,1\n"
    );
    assert_eq!(bodies[0].1, 2);

    let json = encode(&[r], &two_feature_layout(), Codec::Json, 1 << 20);
    assert_eq!(
        String::from_utf8(json[0].0.clone()).unwrap(),
        "{\"instances\":[[null,12.5]]}"
    );
}

#[test]
fn payloads_are_split_under_the_limit_and_keep_every_row() {
    let rows: Vec<FeatureRow> = (0..100).map(|i| row(i as f32 + 1000.0)).collect();
    let layout = FeatureLayout::canonical();
    let bodies = encode(&rows, &layout, Codec::Csv, 200);
    assert!(bodies.len() > 1);
    assert!(bodies.iter().all(|(b, _)| b.len() <= 200));
    assert_eq!(bodies.iter().map(|(_, n)| n).sum::<usize>(), 100);
    let text: String = bodies
        .iter()
        .map(|(b, _)| String::from_utf8(b.clone()).unwrap())
        .collect();
    assert_eq!(text.lines().count(), 100, "no row lost or split");
    // A row larger than the limit still goes, alone.
    let alone = encode(&rows[..2], &layout, Codec::Csv, 10);
    assert_eq!(alone.len(), 2);
}

#[test]
fn answers_are_read_line_per_value_comma_joined_or_json() {
    assert_eq!(
        parse_scores(b"0.91\n0.02\n", 2, Codec::Csv).unwrap(),
        [0.91, 0.02]
    );
    assert_eq!(
        parse_scores(b"0.91,0.02", 2, Codec::Csv).unwrap(),
        [0.91, 0.02]
    );
    assert_eq!(
        parse_scores(
            br#"{"predictions":[{"score":0.5},{"score":0.25}]}"#,
            2,
            Codec::Json
        )
        .unwrap(),
        [0.5, 0.25]
    );
    assert_eq!(
        parse_scores(b"[0.5, 0.25]", 2, Codec::Csv).unwrap(),
        [0.5, 0.25]
    );
    assert!(matches!(
        parse_scores(b"0.91\n", 2, Codec::Csv),
        Err(ModelError::CountMismatch {
            expected: 2,
            got: 1
        })
    ));
    assert!(
        parse_scores(b"body", 1, Codec::Csv).is_err(),
        "moto's empty-queue answer"
    );
    assert!(parse_scores(b"{\"x\":1}", 1, Codec::Json).is_err());
}

#[test]
fn backoff_is_full_jitter_under_an_exponential_ceiling() {
    for attempt in 1..=8 {
        let ceiling = (25u64 << (attempt - 1)).min(1000);
        for _ in 0..50 {
            let d = backoff(attempt, 25, 1000).as_millis() as u64;
            assert!(d <= ceiling, "attempt {attempt}: {d} > {ceiling}");
        }
    }
    let draws: std::collections::HashSet<u64> = (0..50)
        .map(|_| backoff(6, 25, 1000).as_millis() as u64)
        .collect();
    assert!(draws.len() > 10, "jitter spreads retries: {draws:?}");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_consecutive_failures_then_half_opens() {
    let breaker = Breaker::new(3, Duration::from_secs(10));
    let now = Instant::now();
    breaker.failure(now);
    breaker.success();
    breaker.failure(now);
    breaker.failure(now);
    assert!(breaker.allow(now), "two consecutive failures: still closed");
    breaker.failure(now);
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(!breaker.allow(now + Duration::from_secs(9)));
    assert!(
        breaker.allow(now + Duration::from_secs(10)),
        "the trial call"
    );
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(
        !breaker.allow(now + Duration::from_secs(10)),
        "one trial at a time"
    );
    breaker.failure(now + Duration::from_secs(10));
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "a failed trial re-opens"
    );
    assert!(breaker.allow(now + Duration::from_secs(20)));
    breaker.success();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.allow(now + Duration::from_secs(20)));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_does_not_run_the_call() {
    let breaker = Breaker::new(1, Duration::from_secs(10));
    let failed: Option<Result<(), &str>> = breaker.call(async { Err("down") }).await;
    assert_eq!(failed, Some(Err("down")));
    assert_eq!(breaker.state(), BreakerState::Open);
    let mut ran = false;
    let skipped = breaker
        .call(async {
            ran = true;
            Ok::<(), &str>(())
        })
        .await;
    assert_eq!(skipped, None);
    assert!(!ran, "the call is not polled while the breaker is open");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trial_counts_as_a_failure_and_the_breaker_half_opens_again() {
    let breaker = Breaker::new(1, Duration::from_secs(10));
    let failed: Option<Result<(), &str>> = breaker.call(async { Err("down") }).await;
    assert_eq!(failed, Some(Err("down")));
    tokio::time::advance(Duration::from_secs(10)).await;

    // The trial call goes out, then its caller gives up (a timeout, a client that hung up).
    let trial = breaker.call(std::future::pending::<Result<(), &str>>());
    assert!(
        tokio::time::timeout(Duration::from_secs(1), trial)
            .await
            .is_err()
    );
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "an abandoned trial re-opens"
    );
    let early = breaker.call(async { Ok::<(), &str>(()) }).await;
    assert_eq!(early, None, "still cooling down");

    tokio::time::advance(Duration::from_secs(10)).await;
    let next = breaker.call(async { Ok::<(), &str>(()) }).await;
    assert_eq!(
        next,
        Some(Ok(())),
        "the next cool-down ends with a new trial"
    );
    assert_eq!(breaker.state(), BreakerState::Closed);
}
