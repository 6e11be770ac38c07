//! What a transaction's score means: the score as callers see it, and the decision the
//! thresholds draw from it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the model made of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "transaction_id": "tx-000123",
    "fraud_score": 0.93,
    "decision": "decline",
    "model": "fraud-xgb@3be5a2c1f09e",
    "cached": false
}))]
pub struct Score {
    pub transaction_id: String,
    /// Probability of fraud, 0..1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub fraud_score: f32,
    pub decision: Decision,
    /// The model that answered, `name@version`.
    pub model: String,
    /// Whether the score came from the response cache.
    pub cached: bool,
    /// Why: with `?explain=true`, or for every flagged score with
    /// `explanations.mode = "decline_and_review"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<super::Explanation>,
    /// Queue wait and model call of a score computed for this request (for `Server-Timing`;
    /// not serialized).
    #[serde(skip)]
    #[schema(ignore)]
    pub timing: Option<crate::pipeline::Timing>,
}

/// `decline` at or above the decline threshold (default 0.9), `review` at or above the review
/// threshold (default 0.5), else `approve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Review,
    Decline,
}

/// Score thresholds for the decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub review: f32,
    pub decline: f32,
}

impl Thresholds {
    pub fn decide(self, score: f32) -> Decision {
        if score >= self.decline {
            Decision::Decline
        } else if score >= self.review {
            Decision::Review
        } else {
            Decision::Approve
        }
    }
}
