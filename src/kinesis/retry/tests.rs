//! Scoring through a model that fails its first calls, on a paused clock.

use std::sync::Arc;

use tokio::time::Instant;

use super::*;
use crate::config::Config;
use crate::scoring::testing::{self, ScriptedModel};

fn scoring(fail_first: usize, max_batch_size: usize) -> (Scoring, Arc<ScriptedModel>) {
    let mut config = Config::default();
    config.batching.max_batch_size = max_batch_size;
    testing::scoring(&config, ScriptedModel::failing_first(fail_first))
}

fn items(n: usize) -> Vec<(String, FeatureRow)> {
    (0..n)
        .map(|i| (format!("tx-{i}"), FeatureRow([i as f32; 9])))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn failed_rows_are_scored_again_after_doubling_waits_until_all_have_scores() {
    let (scoring, model) = scoring(3, 64);
    let mut rounds = Vec::new();
    let started = Instant::now();
    let scores = score_all(
        &scoring,
        items(5),
        Backoff::default(),
        &CancellationToken::new(),
        |rows, e| rounds.push((rows, e.code())),
    )
    .await
    .expect("not stopped");
    assert_eq!(
        scores
            .iter()
            .map(|s| s.transaction_id.as_str())
            .collect::<Vec<_>>(),
        ["tx-0", "tx-1", "tx-2", "tx-3", "tx-4"]
    );
    assert_eq!(scores[4].fraud_score, 0.04);
    assert_eq!(rounds, [(5, "model_error"); 3]);
    assert_eq!(
        model.batches().iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 5, 5, 5]
    );
    assert_eq!(
        started.elapsed().as_millis() / 100 * 100,
        100 + 200 + 400,
        "waits double from 100 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn only_the_rows_that_failed_are_scored_again() {
    // One row per model call: only the first call (the first row) fails.
    let (scoring, model) = scoring(1, 1);
    let mut rounds = Vec::new();
    let scores = score_all(
        &scoring,
        items(3),
        Backoff::default(),
        &CancellationToken::new(),
        |rows, _| rounds.push(rows),
    )
    .await
    .unwrap();
    assert_eq!(scores.len(), 3);
    assert_eq!(scores[0].transaction_id, "tx-0", "order is kept");
    assert_eq!(rounds, [1]);
    assert_eq!(model.batches().len(), 4, "3 rows, then the failed one");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_an_outage_stops_without_scores() {
    let (scoring, _model) = scoring(usize::MAX, 64);
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        trigger.cancel();
    });
    let mut rounds = 0;
    let started = Instant::now();
    let outcome = score_all(&scoring, items(2), Backoff::default(), &stop, |_, _| {
        rounds += 1
    })
    .await;
    assert_eq!(outcome.unwrap_err(), Stopped);
    assert!(started.elapsed() < Duration::from_secs(61));
    // 0.1 + 0.2 + ... + 6.4 s, then every 10 s: about 12 rounds in 60 s.
    assert!((10..=14).contains(&rounds), "{rounds}");
}

#[test]
fn waits_double_up_to_the_cap() {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
    let waits: Vec<u128> = (0..6).map(|_| backoff.next_wait().as_millis()).collect();
    assert_eq!(waits, [100, 200, 400, 700, 700, 700]);
}
