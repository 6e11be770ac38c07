//! The learning objectives: which ones are supported, and how each maps the
//! intercept and margins to scores.

use std::fmt;

use super::LoadError;

const SUPPORTED_OBJECTIVES: &str = "binary:logistic, reg:logistic, reg:squarederror";

/// The learning objectives whose predictions can be reproduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Probability of the positive class: sigmoid of the margin.
    BinaryLogistic,
    /// Regression on [0, 1]: sigmoid of the margin.
    RegLogistic,
    /// Plain regression: the margin itself.
    RegSquaredError,
}

impl Objective {
    /// The name XGBoost uses for the objective.
    pub fn name(self) -> &'static str {
        match self {
            Objective::BinaryLogistic => "binary:logistic",
            Objective::RegLogistic => "reg:logistic",
            Objective::RegSquaredError => "reg:squarederror",
        }
    }

    pub(super) fn from_name(name: &str) -> Result<Self, LoadError> {
        match name {
            "binary:logistic" => Ok(Objective::BinaryLogistic),
            "reg:logistic" => Ok(Objective::RegLogistic),
            // The pre-1.0 name of squared error; xgboost itself still loads it
            // as reg:squarederror.
            "reg:squarederror" | "reg:linear" => Ok(Objective::RegSquaredError),
            multi if multi.starts_with("multi:") => Err(LoadError::Unsupported(format!(
                "objective `{multi}` is multi-class, which is not supported; train a \
                 binary:logistic model (one-vs-rest) instead. Supported objectives: \
                 {SUPPORTED_OBJECTIVES}"
            ))),
            other => Err(LoadError::Unsupported(format!(
                "objective `{other}` is not supported; supported objectives: \
                 {SUPPORTED_OBJECTIVES}"
            ))),
        }
    }

    fn is_logistic(self) -> bool {
        matches!(self, Objective::BinaryLogistic | Objective::RegLogistic)
    }

    /// The intercept in margin space: XGBoost stores `base_score` as a
    /// prediction and maps it back through the inverse link when predicting.
    pub(super) fn prob_to_margin(self, base_score: f32) -> Result<f32, LoadError> {
        if !self.is_logistic() {
            return if base_score.is_finite() {
                Ok(base_score)
            } else {
                Err(LoadError::Invalid(format!(
                    "base_score {base_score} is not finite"
                )))
            };
        }
        if !(base_score > 0.0 && base_score < 1.0) {
            return Err(LoadError::Invalid(format!(
                "base_score {base_score} must lie strictly between 0 and 1 for {}",
                self.name()
            )));
        }
        Ok(-(1.0f32 / base_score - 1.0).ln())
    }

    #[inline]
    pub(super) fn transform(self, margin: f32) -> f32 {
        match self {
            Objective::BinaryLogistic | Objective::RegLogistic => {
                1.0f32 / (1.0f32 + (-margin).exp())
            }
            Objective::RegSquaredError => margin,
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
