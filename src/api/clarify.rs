//! SageMaker Clarify's online explainability on the SageMaker route: the
//! `X-Amzn-SageMaker-Enable-Explanations` header (`EnableExplanations` in boto3) and the JSON
//! shape Clarify answers for CSV input, with exact TreeSHAP values where Clarify computes
//! Kernel SHAP approximations.
//!
//! The header is a JMESPath expression over a record's prediction. Supported: `` `true` ``,
//! `` `false` ``, and a comparison of the first output with a number, `` [0]>`0.5` `` (also
//! `>=`, `<`, `<=`, `==`, `!=`): what Clarify's documentation uses; anything else is a
//! `ValidationError` that says so.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::domain::Explanation;

pub const HEADER: &str = "x-amzn-sagemaker-enable-explanations";

/// Which records to explain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Filter {
    Always(bool),
    /// The first output (the score) compared with a number.
    Compare(Op, f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Filter {
    /// The request's filter, if it sent the header.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, String> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let text = value
            .to_str()
            .map_err(|_| "EnableExplanations must be ASCII text".to_owned())?;
        Self::parse(text).map(Some)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let unsupported = || {
            format!(
                "EnableExplanations {:?} is not supported: use `true`, `false` or a comparison \
                 of the score such as [0]>`0.5`",
                crate::domain::clip(text, 64)
            )
        };
        match text {
            "`true`" => return Ok(Self::Always(true)),
            "`false`" => return Ok(Self::Always(false)),
            _ => {}
        }
        let rest = text
            .strip_prefix("[0]")
            .ok_or_else(unsupported)?
            .trim_start();
        let (op, rest) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .into_iter()
        .find_map(|(token, op)| rest.strip_prefix(token).map(|r| (op, r)))
        .ok_or_else(unsupported)?;
        let number = rest
            .trim()
            .strip_prefix('`')
            .and_then(|r| r.strip_suffix('`'))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite())
            .ok_or_else(unsupported)?;
        Ok(Self::Compare(op, number))
    }

    /// Whether a record with this score is explained: the score as the answer prints it
    /// (`0.8`, not the f32's 0.800000011920929) is compared, as Clarify reads the prediction.
    pub fn admits(self, score: f32) -> bool {
        let score: f64 = score.to_string().parse().unwrap_or(f64::NAN);
        match self {
            Self::Always(yes) => yes,
            Self::Compare(op, n) => match op {
                Op::Gt => score > n,
                Op::Ge => score >= n,
                Op::Lt => score < n,
                Op::Le => score <= n,
                Op::Eq => score == n,
                Op::Ne => score != n,
            },
        }
    }
}

/// SageMaker Clarify's online-explainability answer for CSV input.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "version": "1.0",
    "predictions": {"content_type": "text/csv", "data": "0.92125046\n0.0010378546\n"},
    "explanations": {"kernel_shap": [[
        [{"feature_header": "amount", "attributions": [{"attribution": [0.0406]}]},
         {"feature_header": "distance_from_home_km", "attributions": [{"attribution": [2.0709]}]}],
        null
    ]]}
}))]
pub struct ClarifyAnswer {
    /// Always `1.0`.
    pub version: String,
    pub predictions: ClarifyPredictions,
    /// `{}` when no record is explained, else `kernel_shap`: per record (`null` when left
    /// out), per feature, `{feature_header, attributions: [{attribution: [value]}]}`.
    #[schema(value_type = Object)]
    pub explanations: Value,
}

/// The answer the route gives without explanations, as Clarify wraps it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClarifyPredictions {
    #[schema(example = "text/csv")]
    pub content_type: String,
    /// One score per line.
    pub data: String,
}

/// Clarify's answer: the predictions as the CSV the route would have returned, and per record
/// each feature's attribution (`null` for a record the filter left out; `{}` when none is
/// explained). Attributions are on the margin (log-odds) scale, as Clarify's with `UseLogit`.
pub fn response(csv: String, explained: Vec<Option<Explanation>>) -> Response {
    let explanations = if explained.iter().all(Option::is_none) {
        json!({})
    } else {
        let records: Vec<Value> = explained
            .into_iter()
            .map(|explanation| match explanation {
                None => Value::Null,
                Some(e) => Value::Array(
                    e.contributions
                        .into_iter()
                        .map(|c| {
                            json!({
                                "feature_header": c.feature,
                                "attributions": [{"attribution": [c.contribution]}],
                            })
                        })
                        .collect(),
                ),
            })
            .collect();
        json!({ "kernel_shap": [records] })
    };
    let body = ClarifyAnswer {
        version: "1.0".to_owned(),
        predictions: ClarifyPredictions {
            content_type: "text/csv".to_owned(),
            data: csv,
        },
        explanations,
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        "x-amzn-invoked-production-variant",
        HeaderValue::from_static(super::sagemaker::VARIANT),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_expressions_parse_and_others_are_refused() {
        assert_eq!(Filter::parse("`true`"), Ok(Filter::Always(true)));
        assert_eq!(Filter::parse("`false`"), Ok(Filter::Always(false)));
        assert_eq!(Filter::parse("[0]>`0.8`"), Ok(Filter::Compare(Op::Gt, 0.8)));
        assert_eq!(
            Filter::parse(" [0] >= `0.5` "),
            Ok(Filter::Compare(Op::Ge, 0.5))
        );
        assert!(Filter::parse("[0]>`0.8`").unwrap().admits(0.9));
        assert!(!Filter::parse("[0]>`0.8`").unwrap().admits(0.8));
        assert!(Filter::parse("[0]!=`1`").unwrap().admits(0.5));
        for bad in [
            "true",
            "[1]>`0.5`",
            "[0]>0.5",
            "[0]~`1`",
            "[0]>`nan`",
            "score > `1`",
            "",
        ] {
            let why = Filter::parse(bad).unwrap_err();
            assert!(why.contains("not supported"), "{bad}: {why}");
        }
    }
}
