//! Scoring against a scripted model that records every batch it is given.

use super::testing::{self, ScriptedModel};
use super::*;
use crate::domain::Decision;

fn scoring(max_queue_rows: usize) -> (Scoring, Arc<ScriptedModel>) {
    let mut config = Config::default();
    config.batching.max_queue_rows = max_queue_rows;
    config.batching.max_queue_delay_ms = 0;
    testing::scoring(&config, ScriptedModel::default())
}

fn item(id: &str, tag: f32) -> (String, FeatureRow) {
    (id.to_owned(), FeatureRow([tag; 9]))
}

fn rows_scored(model: &ScriptedModel) -> Vec<f32> {
    model.batches().concat()
}

#[tokio::test]
async fn many_answers_hits_from_the_cache_and_sends_only_the_misses() {
    let (scoring, model) = scoring(100);
    let first = scoring
        .many(vec![item("a", 10.0)], false, Admit::TryNow)
        .await
        .unwrap();
    assert!(!first[0].as_ref().unwrap().cached);

    let items = vec![item("b", 95.0), item("a", 10.0), item("c", 60.0)];
    let outcomes = scoring.many(items, false, Admit::TryNow).await.unwrap();
    let scores: Vec<Score> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        scores
            .iter()
            .map(|s| (s.transaction_id.as_str(), s.cached, s.decision))
            .collect::<Vec<_>>(),
        [
            ("b", false, Decision::Decline),
            ("a", true, Decision::Approve),
            ("c", false, Decision::Review),
        ],
        "in input order, the hit marked cached, each decided by the thresholds"
    );
    assert_eq!(scores[0].fraud_score, 0.95);
    assert_eq!(scores[1].model, "scripted@1");
    assert_eq!(
        rows_scored(&model),
        [10.0, 95.0, 60.0],
        "`a` was scored once"
    );
}

#[tokio::test]
async fn refresh_scores_again_and_one_shares_the_cache() {
    let (scoring, model) = scoring(100);
    let score = scoring
        .one("a".into(), FeatureRow([20.0; 9]), false)
        .await
        .unwrap();
    assert!(!score.cached);
    let again = scoring
        .one("a".into(), FeatureRow([20.0; 9]), false)
        .await
        .unwrap();
    assert!(again.cached, "one() reads what it cached");
    let batch = scoring
        .many(vec![item("a", 20.0)], false, Admit::TryNow)
        .await
        .unwrap();
    assert!(
        batch[0].as_ref().unwrap().cached,
        "many() reads what one() cached"
    );
    let fresh = scoring
        .many(vec![item("a", 20.0)], true, Admit::TryNow)
        .await
        .unwrap();
    assert!(!fresh[0].as_ref().unwrap().cached);
    assert_eq!(rows_scored(&model), [20.0, 20.0]);
}

#[tokio::test]
async fn a_batch_larger_than_the_queue_is_refused_whole() {
    let (scoring, model) = scoring(2);
    let items = vec![item("a", 1.0), item("b", 2.0), item("c", 3.0)];
    let refused = scoring.many(items, false, Admit::TryNow).await;
    assert!(matches!(
        refused,
        Err(ScoreError::Overloaded { max_queue_rows: 2 })
    ));
    assert!(rows_scored(&model).is_empty());
}

#[tokio::test]
async fn paced_scores_a_page_larger_than_the_queue_in_chunks() {
    let (scoring, model) = scoring(2);
    let items: Vec<_> = (0..5).map(|i| item(&format!("t{i}"), i as f32)).collect();
    let outcomes = scoring.paced(items).await.unwrap();
    let ids: Vec<String> = outcomes
        .into_iter()
        .map(|o| o.unwrap().transaction_id)
        .collect();
    assert_eq!(ids, ["t0", "t1", "t2", "t3", "t4"]);
    assert_eq!(rows_scored(&model), [0.0, 1.0, 2.0, 3.0, 4.0]);
    assert!(
        model.batches().iter().all(|b| b.len() <= 2),
        "no call asked for more room than the queue has"
    );
}

#[tokio::test]
async fn paced_fails_a_page_whose_rows_shutdown_gave_up() {
    let (scoring, model) = scoring(100);
    scoring.pipeline().abandon_token().cancel();
    let items: Vec<_> = (0..3).map(|i| item(&format!("t{i}"), i as f32)).collect();
    let page = scoring.paced(items).await;
    assert!(
        matches!(page, Err(ScoreError::ShuttingDown)),
        "a page cut off is not written as dead letters: {page:?}"
    );
    assert!(rows_scored(&model).is_empty());
}

#[tokio::test]
async fn raw_is_none_for_a_model_that_only_scores_rows() {
    let (scoring, _) = scoring(10);
    let request = RawRequest {
        body: b"{}",
        content_type: "application/json",
        accept: None,
        enable_explanations: None,
    };
    assert!(scoring.raw(request, false).await.unwrap().is_none());
}
