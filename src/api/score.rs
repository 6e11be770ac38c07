//! `POST /v1/transactions/score` and `POST /v1/transactions/score-batch`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::json::JsonBody;
use super::timing::HandlerTiming;
use super::wants_refresh;
use crate::domain::{FeatureRow, FieldError, Score, Transaction, ValidTransaction, json_type};
use crate::error::{ApiError, Problem};
use crate::middleware::auth::Caller;
use crate::pipeline::Admit;
use crate::state::AppState;

/// Up to `limits.max_batch_items` (default 1000) transactions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreBatchRequest {
    /// Each item should be a `Transaction`. Items are checked one by one: an item that is not
    /// a valid transaction fails only itself (its result has status 400), so the array accepts
    /// any value.
    #[schema(min_items = 1, max_items = 1000)]
    pub transactions: Vec<Value>,
}

/// One result per transaction, in input order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScoreBatchResponse {
    pub results: Vec<BatchItem>,
}

/// The outcome for one transaction: a `score` (status 200) or an `error` (its status).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    /// Position in the request's `transactions`.
    pub index: usize,
    /// The status this transaction would have had on its own.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// The scoring routes' query.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScoreParams {
    /// `true`: each score carries its `explanation` (exact TreeSHAP contributions and reason
    /// codes; the embedded model only). Unless `explanations.mode = "off"`.
    pub explain: Option<bool>,
}

/// `explain` from the query (other parameters are ignored).
fn explain_asked(query: Option<&str>) -> Result<bool, ApiError> {
    let value = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| *name == "explain")
        .map(|(_, value)| value);
    match value {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(other) => {
            let message = format!(
                "`explain` must be `true` or `false`. Given: {:?}",
                crate::domain::clip(other, 32)
            );
            Err(ApiError::invalid(
                message.clone(),
                vec![FieldError::new("explain", "wrong_type", message)],
            ))
        }
    }
}

fn explain_error(message: String) -> ApiError {
    ApiError::invalid(
        message.clone(),
        vec![FieldError::new("explain", "unavailable", message)],
    )
}

/// Score one transaction.
#[utoipa::path(
    post,
    path = "/v1/transactions/score",
    tag = "scoring",
    params(ScoreParams),
    request_body(content = Transaction, content_type = "application/json"),
    security(("api_key" = []), ("sigv4" = [])),
    responses(
        (status = 200, description = "Scored", body = Score, headers(
                ("RateLimit-Limit" = u64, description = "The caller's bucket size (or daily quota, whichever is closer to running out); absent for unlimited callers"),
                ("RateLimit-Remaining" = u64, description = "Tokens left"),
                ("RateLimit-Reset" = u64, description = "Seconds until the bucket is full again (or the quota resets)"),
                ("Server-Timing" = String, description = "`auth` (credentials and usage plan), `queue` and `model` (absent for a cached score), `total`, in ms: `auth;dur=0.012, queue;dur=0.031, model;dur=0.008, total;dur=0.094`"),
            )),
        (status = 400, description = "Invalid input; `errors` lists every field problem",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown credentials (`x-api-key` or a SigV4 signature)",
            body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "The accepted schemes")),
            example = json!({"type": "urn:infergate:problem:unauthorized", "title": "Unauthorized", "status": 401,
                "detail": "credentials are required: an `x-api-key` header or a SigV4 `Authorization` header"})),

        (status = 413, description = "Body over `limits.body_limit_bytes`",
            body = Problem, content_type = "application/problem+json",
            example = json!({"type": "urn:infergate:problem:payload_too_large", "title": "Payload too large", "status": 413,
                "detail": "the body is larger than the configured limit (`limits.body_limit_bytes`)"})),
        (status = 415, description = "Content type is not JSON",
            body = Problem, content_type = "application/problem+json",
            example = json!({"type": "urn:infergate:problem:unsupported_media_type", "title": "Unsupported media type", "status": 415,
                "detail": "the body must be `application/json`. Given content type: \"text/plain\""})),
        (status = 429, description = "The caller's rate limit or daily quota, or the global limit, is exhausted",
            body = Problem, content_type = "application/problem+json",
            headers(
                ("Retry-After" = u64, description = "Seconds until the request can succeed (absent when it never can: a batch larger than the burst)"),
                ("RateLimit-Limit" = u64, description = "Tokens the exhausted bucket holds when full (or the daily quota)"),
                ("RateLimit-Remaining" = u64, description = "Tokens left"),
                ("RateLimit-Reset" = u64, description = "Seconds until the bucket is full again (or the quota resets)"),
            ),
            example = json!({"type": "urn:infergate:problem:rate_limited", "title": "Rate limited", "status": 429,
                "detail": "the caller's rate limit of 100 per second (burst 200) exceeded; retry in 1 s"})),

        (status = 503, description = "Queue full or model unavailable; retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying")),
            example = json!({"type": "urn:infergate:problem:overloaded", "title": "Overloaded", "status": 503,
                "detail": "the scoring queue is full (10000 rows); retry later"})),
        (status = 504, description = "No score within `batching.deadline_ms`",
            body = Problem, content_type = "application/problem+json",
            example = json!({"type": "urn:infergate:problem:deadline_exceeded", "title": "Deadline exceeded", "status": 504,
                "detail": "no score within the deadline of 30000 ms"})),
    )
)]
pub async fn score(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let asked = explain_asked(query.as_deref())?;
    state.scoring.may_explain(asked).map_err(explain_error)?;
    let tx = ValidTransaction::from_json(&body, OffsetDateTime::now_utc())
        .map_err(ApiError::invalid_transaction)?;
    let refresh = wants_refresh(&headers, &caller);
    // What is not needed any more is dropped before waiting for the score, so that a request
    // waiting in the queue holds only what it needs (under overload, thousands wait).
    drop((body, headers));
    let features = tx.features;
    let score = state
        .scoring
        .one(tx.transaction_id, tx.features, refresh)
        .await?;
    let mut score = score;
    state
        .scoring
        .add_explanations(asked, vec![(&mut score, features)])
        .await
        .map_err(explain_error)?;
    let timing = HandlerTiming::of(started, [&score]);
    let mut response = Json(score).into_response();
    response.extensions_mut().insert(timing);
    Ok(response)
}

/// Most field problems one batch response lists, over all its items; the rest are counted in
/// each item's `truncated`.
pub const MAX_BATCH_FIELD_ERRORS: usize = 1000;

/// Score many transactions in one request. An invalid transaction fails only itself: each
/// result carries its own status.
#[utoipa::path(
    post,
    path = "/v1/transactions/score-batch",
    tag = "scoring",
    params(ScoreParams),
    request_body(content = ScoreBatchRequest, content_type = "application/json"),
    security(("api_key" = []), ("sigv4" = [])),
    responses(
        (status = 200, description = "One result per transaction, in order", body = ScoreBatchResponse,
            headers(
                ("RateLimit-Limit" = u64, description = "The caller's bucket size (or daily quota, whichever is closer to running out); absent for unlimited callers"),
                ("RateLimit-Remaining" = u64, description = "Tokens left"),
                ("RateLimit-Reset" = u64, description = "Seconds until the bucket is full again (or the quota resets)"),
                ("Server-Timing" = String, description = "`auth`, `queue` and `model` (the longest among the batch's computed scores), `total`, in ms"),
            ),
            example = json!({"results": [
                {"index": 0, "status": 200, "score": {"transaction_id": "tx-1", "fraud_score": 0.004,
                    "decision": "approve", "model": "fraud-xgb@3be5a2c1f09e", "cached": false}},
                {"index": 1, "status": 400, "error": {"type": "urn:infergate:problem:invalid_input",
                    "title": "Invalid input", "status": 400, "detail": "the transaction has 1 invalid field(s)",
                    "errors": [{"field": "transactions[1].amount", "code": "missing",
                        "message": "`amount` is required (a number >= 0)"}]}}
            ]})),
        (status = 400, description = "The request itself is invalid (not an object, no `transactions`, too many)",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown credentials (`x-api-key` or a SigV4 signature)",
            body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "The accepted schemes"))
        ),

        (status = 413, description = "Body over `limits.body_limit_bytes`",
            body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The caller's rate limit or daily quota, or the global limit, is exhausted",
            body = Problem, content_type = "application/problem+json",
            headers(
                ("Retry-After" = u64, description = "Seconds until the request can succeed (absent when it never can: a batch larger than the burst)"),
                ("RateLimit-Limit" = u64, description = "Tokens the exhausted bucket holds when full (or the daily quota)"),
                ("RateLimit-Remaining" = u64, description = "Tokens left"),
                ("RateLimit-Reset" = u64, description = "Seconds until the bucket is full again (or the quota resets)"),
            )
        ),
        (status = 503, description = "The batch does not fit in the queue; retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn score_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let asked = explain_asked(query.as_deref())?;
    state.scoring.may_explain(asked).map_err(explain_error)?;
    let refresh = wants_refresh(&headers, &caller);
    let items = batch_items(&body, state.limits.max_batch_items)?;
    let received_at = OffsetDateTime::now_utc();
    let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(items.len());
    let mut valid = Vec::with_capacity(items.len());
    // Field problems the response may still list: the rest are only counted.
    let mut room = MAX_BATCH_FIELD_ERRORS;
    for (index, item) in items.iter().enumerate() {
        match ValidTransaction::from_json(item, received_at) {
            Ok(tx) => {
                valid.push((index, tx));
                results.push(None);
            }
            Err(mut invalid) => {
                let listed = invalid.errors.len().min(room);
                invalid.omitted += invalid.errors.len() - listed;
                invalid.errors.truncate(listed);
                room -= listed;
                let prefix = format!("transactions[{index}]");
                for error in &mut invalid.errors {
                    *error = std::mem::take(error).nested(&prefix);
                }
                let error = ApiError::invalid_transaction(invalid);
                results.push(Some(item_error(index, &error)));
            }
        }
    }
    let (indices, items): (Vec<usize>, Vec<_>) = valid
        .into_iter()
        .map(|(index, tx)| (index, (tx.transaction_id, tx.features)))
        .unzip();
    drop((body, headers));
    let features: Vec<FeatureRow> = items.iter().map(|(_, features)| *features).collect();
    let outcomes = state.scoring.many(items, refresh, Admit::TryNow).await?;
    let mut scored = Vec::with_capacity(outcomes.len());
    for ((index, outcome), features) in indices.into_iter().zip(outcomes).zip(features) {
        match outcome {
            Ok(score) => scored.push((index, score, features)),
            Err(e) => results[index] = Some(item_error(index, &ApiError::from(e))),
        }
    }
    let owed = scored
        .iter_mut()
        .map(|(_, score, features)| (score, *features))
        .collect();
    state
        .scoring
        .add_explanations(asked, owed)
        .await
        .map_err(explain_error)?;
    for (index, score, _) in scored {
        results[index] = Some(item_score(index, score));
    }
    let results: Vec<BatchItem> = results
        .into_iter()
        .map(|r| r.expect("every index gets a result. This is a bug."))
        .collect();
    let timing = HandlerTiming::of(started, results.iter().filter_map(|r| r.score.as_ref()));
    let mut response = Json(ScoreBatchResponse { results }).into_response();
    response.extensions_mut().insert(timing);
    Ok(response)
}

fn item_score(index: usize, score: Score) -> BatchItem {
    BatchItem {
        index,
        status: 200,
        score: Some(score),
        error: None,
    }
}

fn item_error(index: usize, error: &ApiError) -> BatchItem {
    BatchItem {
        index,
        status: error.kind.status().as_u16(),
        score: None,
        error: Some(error.problem()),
    }
}

/// The request's `transactions`, after the checks on the request as a whole.
fn batch_items(body: &Value, max_items: usize) -> Result<&[Value], ApiError> {
    let invalid = |field: &str, code: &str, message: String| {
        ApiError::invalid(message.clone(), vec![FieldError::new(field, code, message)])
    };
    let Some(obj) = body.as_object() else {
        return Err(invalid(
            "",
            "wrong_type",
            format!(
                "the body must be an object with `transactions`. Given: {}",
                json_type(body)
            ),
        ));
    };
    let mut errors = Vec::new();
    for key in obj.keys().filter(|k| *k != "transactions") {
        errors.push(FieldError::new(
            key.as_str(),
            "unknown_field",
            format!("unknown field `{key}`"),
        ));
    }
    let items = match obj.get("transactions") {
        None => {
            errors.push(FieldError::new(
                "transactions",
                "missing",
                "`transactions` is required (an array of transactions)",
            ));
            None
        }
        Some(Value::Array(items)) if items.is_empty() || items.len() > max_items => {
            errors.push(FieldError::new(
                "transactions",
                "too_many",
                format!(
                    "`transactions` must have 1 to {max_items} items. Given: {}",
                    items.len()
                ),
            ));
            None
        }
        Some(Value::Array(items)) => Some(items.as_slice()),
        Some(other) => {
            errors.push(FieldError::new(
                "transactions",
                "wrong_type",
                format!(
                    "`transactions` must be an array. Given: {}",
                    json_type(other)
                ),
            ));
            None
        }
    };
    match items {
        Some(items) if errors.is_empty() => Ok(items),
        _ => Err(ApiError::invalid(
            format!("the request has {} problem(s)", errors.len()),
            errors,
        )),
    }
}

/// Cost of a score-batch body: its number of transactions (at least 1). A body that is not a
/// batch costs 1; validation then refuses it.
pub fn batch_cost(body: &[u8]) -> u32 {
    #[derive(serde::Deserialize)]
    struct Shape {
        transactions: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Shape>(body)
        .map(|s| {
            u32::try_from(s.transactions.len())
                .unwrap_or(u32::MAX)
                .max(1)
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::batch_cost;

    #[test]
    fn batch_cost_counts_transactions() {
        assert_eq!(batch_cost(br#"{"transactions": [{}, 1, "x"]}"#), 3);
        assert_eq!(batch_cost(br#"{"transactions": []}"#), 1);
        assert_eq!(batch_cost(b"not json"), 1);
    }
}
