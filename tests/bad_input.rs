//! Hostile and malformed input: every answer a bounded, documented 4xx problem.

mod common;

use common::{assert_problem, spawn_app};
use infergate::Config;
use serde_json::{Map, Value, json};

/// A transaction object made of `n` unknown fields (and none of the required ones).
fn unknown_fields(n: usize) -> Value {
    let fields: Map<String, Value> = (0..n).map(|i| (format!("f{i}"), json!(i))).collect();
    Value::Object(fields)
}

#[tokio::test]
async fn a_transaction_lists_at_most_100_problems_and_counts_the_rest() {
    let mut config = Config::default();
    config.limits.body_limit_bytes = 8 * 1024 * 1024;
    let app = spawn_app(config).await;
    let response = app
        .post_json("/v1/transactions/score", &unknown_fields(50_000))
        .await;
    let bytes = response.content_length();
    let problem = assert_problem(response, 400, "invalid_input").await;
    let listed = problem["errors"].as_array().unwrap().len();
    assert_eq!(listed, 100);
    let truncated = problem["truncated"].as_u64().expect("a truncated count") as usize;
    let total = listed + truncated;
    assert!(
        total > 50_000,
        "every unknown and missing field is counted: {total}"
    );
    assert_eq!(
        problem["detail"],
        format!("the transaction has {total} invalid field(s)")
    );
    assert!(
        bytes.is_some_and(|b| b < 20_000),
        "the response stays small: {bytes:?} bytes"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_response_lists_at_most_1000_problems() {
    let mut config = Config::default();
    config.limits.body_limit_bytes = 8 * 1024 * 1024;
    let app = spawn_app(config).await;
    let body = json!({"transactions": (0..40).map(|_| unknown_fields(300)).collect::<Vec<_>>()});
    let response = app.post_json("/v1/transactions/score-batch", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 40);
    let listed: usize = results
        .iter()
        .map(|r| r["error"]["errors"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(listed, 1000, "the budget of the whole response");
    for result in results {
        assert_eq!(result["status"], 400);
        let error = &result["error"];
        let shown = error["errors"].as_array().map_or(0, Vec::len);
        let truncated = error["truncated"].as_u64().unwrap_or(0) as usize;
        assert!(shown <= 100);
        assert_eq!(
            error["detail"],
            format!("the transaction has {} invalid field(s)", shown + truncated),
            "each item still counts all of its problems"
        );
    }
    app.stop().await.unwrap();
}
