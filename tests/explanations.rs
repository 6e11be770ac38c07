//! Reason codes on the scoring routes: `?explain=true` adds the exact TreeSHAP explanation of
//! the embedded model's score; `explanations.mode` turns them off or on for every flagged score.

mod common;

use common::{assert_problem, spawn_app, transaction};
use infergate::Config;
use infergate::config::ExplainMode;
use serde_json::{Value, json};

fn risky(id: &str) -> Value {
    transaction(
        id,
        // The README's example: flagged.
        json!({"amount": 1500.0, "avg_amount_30d": 50.0, "card_present": false, "country": "BR",
               "home_country": "DE", "distance_from_home_km": 9000.0, "tx_count_1h": 5,
               "tx_count_24h": 9, "merchant_category": 6051}),
    )
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

#[tokio::test]
async fn explain_true_adds_contributions_that_add_up_to_the_score_and_reason_codes() {
    let app = spawn_app(Config::default()).await;
    let plain: Value = app
        .post_json("/v1/transactions/score", &risky("e-0"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        plain.get("explanation").is_none(),
        "only when asked: {plain}"
    );

    for cached in [false, true] {
        let response = app
            .post_json("/v1/transactions/score?explain=true", &risky("e-1"))
            .await;
        assert_eq!(response.status(), 200);
        let score: Value = response.json().await.unwrap();
        assert_eq!(score["cached"], cached, "{score}");
        let explanation = &score["explanation"];
        let contributions = explanation["contributions"].as_array().unwrap();
        assert_eq!(contributions.len(), 9, "{explanation}");
        let margin: f64 = explanation["base_value"].as_f64().unwrap()
            + contributions
                .iter()
                .map(|c| c["contribution"].as_f64().unwrap())
                .sum::<f64>();
        let fraud_score = score["fraud_score"].as_f64().unwrap();
        assert!(
            (margin - logit(fraud_score)).abs() < 1e-3,
            "base + contributions = {margin}, logit(score) = {}",
            logit(fraud_score)
        );
        let amount = contributions
            .iter()
            .find(|c| c["feature"] == "amount")
            .unwrap();
        assert_eq!(amount["value"], 1500.0);
        let reasons = explanation["reason_codes"].as_array().unwrap();
        assert_eq!(reasons.len(), 3, "{explanation}");
        let sizes: Vec<f64> = reasons
            .iter()
            .map(|r| r["contribution"].as_f64().unwrap())
            .collect();
        assert!(
            sizes.windows(2).all(|w| w[0] >= w[1]) && sizes[2] > 0.0,
            "{sizes:?}"
        );
        let largest = contributions
            .iter()
            .map(|c| c["contribution"].as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(
            sizes[0], largest,
            "the first reason is the largest contribution"
        );
        for reason in reasons {
            let code = reason["code"].as_str().unwrap();
            assert!(code.starts_with('R') && code.len() == 3, "{reason}");
            assert!(!reason["text"].as_str().unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn a_batch_explains_each_score_and_a_bad_explain_value_is_a_400() {
    let app = spawn_app(Config::default()).await;
    let body =
        json!({"transactions": [risky("b-1"), transaction("b-2", json!({})), {"amount": -1}]});
    let response = app
        .post_json("/v1/transactions/score-batch?explain=true", &body)
        .await;
    assert_eq!(response.status(), 200);
    let batch: Value = response.json().await.unwrap();
    let results = batch["results"].as_array().unwrap();
    for item in &results[..2] {
        assert_eq!(item["status"], 200);
        assert_eq!(
            item["score"]["explanation"]["contributions"]
                .as_array()
                .unwrap()
                .len(),
            9
        );
    }
    assert_eq!(results[2]["status"], 400);

    let response = app
        .post_json("/v1/transactions/score?explain=maybe", &risky("b-3"))
        .await;
    let problem = assert_problem(response, 400, "invalid_input").await;
    assert_eq!(problem["errors"][0]["field"], "explain", "{problem}");
}

#[tokio::test]
async fn explanations_off_refuse_to_explain_and_decline_and_review_explains_flagged_scores() {
    let mut config = Config::default();
    config.explanations.mode = ExplainMode::Off;
    let app = spawn_app(config).await;
    let response = app
        .post_json("/v1/transactions/score?explain=true", &risky("o-1"))
        .await;
    let problem = assert_problem(response, 400, "invalid_input").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("off"),
        "{problem}"
    );

    let mut config = Config::default();
    config.explanations.mode = ExplainMode::DeclineAndReview;
    let app = spawn_app(config).await;
    let flagged: Value = app
        .post_json("/v1/transactions/score", &risky("d-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(flagged["decision"], "approve", "{flagged}");
    assert!(
        flagged["explanation"].is_object(),
        "unasked for a flagged score: {flagged}"
    );
    let routine: Value = app
        .post_json("/v1/transactions/score", &transaction("d-2", json!({})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(routine["decision"], "approve");
    assert!(routine.get("explanation").is_none(), "{routine}");
}
