//! Why a transaction got its score: each feature's exact contribution to the model's margin
//! (TreeSHAP), the expected margin they start from, and reason codes for the features that
//! pushed the score toward fraud the most.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A model's explanation of one row, in the model's features.
#[derive(Debug, Clone, PartialEq)]
pub struct RawExplanation {
    /// The expected margin (log-odds for the fraud model).
    pub base_value: f64,
    /// `(feature, value, contribution)` in the model's feature order; `NaN` for a missing value.
    pub contributions: Vec<(String, f32, f64)>,
}

/// What the model made of each feature of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "base_value": -4.8399,
    "contributions": [
        {"feature": "amount", "value": 1500.0, "contribution": 1.21},
        {"feature": "amount_ratio_30d", "value": 30.0, "contribution": 2.87},
        {"feature": "foreign", "value": 1.0, "contribution": 0.93}
    ],
    "reason_codes": [
        {"code": "R01", "feature": "amount_ratio_30d", "text": "amount far above the card's 30-day average", "value": 30.0, "contribution": 2.87},
        {"code": "R02", "feature": "amount", "text": "large amount", "value": 1500.0, "contribution": 1.21}
    ]
}))]
pub struct Explanation {
    /// The model's expected margin (log-odds), where every explanation starts: `base_value`
    /// plus every contribution is the transaction's margin, whose logistic is `fraud_score`.
    pub base_value: f64,
    /// Each feature the model reads, in the model's order, with the exact Shapley value of its
    /// contribution to the margin (TreeSHAP; positive pushes toward fraud).
    pub contributions: Vec<Contribution>,
    /// The features that pushed the score toward fraud the most (at most
    /// `explanations.top`, largest first; only positive contributions).
    pub reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Contribution {
    pub feature: String,
    /// The feature's value (`null` when missing).
    pub value: Option<f64>,
    pub contribution: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReasonCode {
    /// A stable code from `[explanations.reasons]`.
    #[schema(example = "R01")]
    pub code: String,
    pub feature: String,
    /// The reason in words.
    pub text: String,
    pub value: Option<f64>,
    pub contribution: f64,
}

/// A feature's reason code and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub code: String,
    pub text: String,
}

/// The reason codes of the fraud model's features.
pub fn default_reasons() -> BTreeMap<String, Reason> {
    [
        (
            "amount_ratio_30d",
            "R01",
            "amount far above the card's 30-day average",
        ),
        ("amount", "R02", "large amount"),
        (
            "foreign",
            "R03",
            "merchant country differs from the card's home country",
        ),
        (
            "distance_from_home_km",
            "R04",
            "far from the cardholder's home",
        ),
        ("card_present", "R05", "card not present"),
        (
            "tx_count_1h",
            "R06",
            "many transactions on the card in the last hour",
        ),
        (
            "tx_count_24h",
            "R07",
            "many transactions on the card in the last 24 hours",
        ),
        (
            "merchant_category",
            "R08",
            "merchant category often seen in fraud",
        ),
        ("hour_of_day", "R09", "unusual hour for a transaction"),
    ]
    .into_iter()
    .map(|(feature, code, text)| {
        let reason = Reason {
            code: code.to_owned(),
            text: text.to_owned(),
        };
        (feature.to_owned(), reason)
    })
    .collect()
}

impl Explanation {
    /// The explanation with reason codes for the `top` largest positive contributions; a
    /// feature without a configured reason is named by itself (code `feature:<name>`).
    pub fn new(raw: RawExplanation, top: usize, reasons: &BTreeMap<String, Reason>) -> Self {
        let contributions: Vec<Contribution> = raw
            .contributions
            .into_iter()
            .map(|(feature, value, contribution)| Contribution {
                feature,
                value: value.is_finite().then_some(f64::from(value)),
                contribution,
            })
            .collect();
        let mut toward_fraud: Vec<&Contribution> = contributions
            .iter()
            .filter(|c| c.contribution > 0.0)
            .collect();
        toward_fraud.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
        let reason_codes = toward_fraud
            .into_iter()
            .take(top)
            .map(|c| {
                let (code, text) = match reasons.get(&c.feature) {
                    Some(r) => (r.code.clone(), r.text.clone()),
                    None => (format!("feature:{}", c.feature), c.feature.clone()),
                };
                ReasonCode {
                    code,
                    feature: c.feature.clone(),
                    text,
                    value: c.value,
                    contribution: c.contribution,
                }
            })
            .collect();
        Self {
            base_value: raw.base_value,
            contributions,
            reason_codes,
        }
    }
}
