//! The raw model document as serde types, as far as prediction needs it, and
//! the readers of its parameters. Every field is optional here, so that a
//! booster or objective we do not support is reported as such instead of as
//! a missing field.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny};

use super::LoadError;

#[derive(Deserialize)]
pub(super) struct RawDocument {
    pub(super) learner: RawLearner,
}

#[derive(Deserialize)]
pub(super) struct RawLearner {
    #[serde(default)]
    pub(super) feature_names: Vec<String>,
    #[serde(default)]
    pub(super) feature_types: Vec<String>,
    pub(super) gradient_booster: RawBooster,
    pub(super) learner_model_param: RawLearnerParam,
    pub(super) objective: RawObjective,
}

#[derive(Deserialize)]
pub(super) struct RawObjective {
    pub(super) name: String,
}

#[derive(Deserialize)]
pub(super) struct RawLearnerParam {
    pub(super) base_score: Option<Param>,
    pub(super) num_class: Option<Param>,
    pub(super) num_feature: Option<Param>,
    pub(super) num_target: Option<Param>,
}

#[derive(Deserialize)]
pub(super) struct RawBooster {
    pub(super) name: String,
    #[serde(default)]
    pub(super) model: RawGbtree,
}

#[derive(Deserialize, Default)]
pub(super) struct RawGbtree {
    #[serde(default)]
    pub(super) gbtree_model_param: RawGbtreeParam,
    #[serde(default)]
    pub(super) trees: Vec<RawTree>,
    #[serde(default)]
    pub(super) tree_info: Vec<i64>,
    #[serde(default)]
    pub(super) cats: Option<RawCats>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawGbtreeParam {
    pub(super) num_trees: Option<Param>,
}

#[derive(Deserialize)]
pub(super) struct RawCats {
    #[serde(default)]
    pub(super) enc: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
pub(super) struct RawTree {
    #[serde(default)]
    pub(super) tree_param: RawTreeParam,
    #[serde(default)]
    pub(super) left_children: Vec<i64>,
    #[serde(default)]
    pub(super) right_children: Vec<i64>,
    #[serde(default)]
    pub(super) split_indices: Vec<i64>,
    #[serde(default)]
    pub(super) split_conditions: Vec<f32>,
    #[serde(default)]
    pub(super) default_left: Vec<Flag>,
    #[serde(default)]
    pub(super) split_type: Vec<i64>,
    /// Each node's cover (the hessian sum of the training rows through it): TreeSHAP's weights.
    #[serde(default)]
    pub(super) sum_hessian: Vec<f32>,
    #[serde(default)]
    pub(super) categories_nodes: Vec<IgnoredAny>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawTreeParam {
    pub(super) num_nodes: Option<Param>,
    pub(super) num_feature: Option<Param>,
    pub(super) size_leaf_vector: Option<Param>,
}

/// A model parameter: XGBoost writes them as strings ("9", "5E-1",
/// "[1.0285715E-2]"), but numbers are accepted too.
pub(super) struct Param(pub(super) String);

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Param;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter string or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Param, E> {
                Ok(Param(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Param, E> {
                Ok(Param(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Param, E> {
                Ok(Param(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Param, E> {
                Ok(Param(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `default_left` entries: integers 0/1 in most versions, booleans in some.
pub(super) struct Flag(pub(super) bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("0, 1 or a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Flag, E> {
                match v {
                    0 => Ok(Flag(false)),
                    1 => Ok(Flag(true)),
                    _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Flag, E> {
                match v {
                    0 => Ok(Flag(false)),
                    1 => Ok(Flag(true)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

pub(super) fn param_usize(param: Option<&Param>, what: &str) -> Result<Option<usize>, LoadError> {
    param
        .map(|p| {
            p.0.trim()
                .parse::<usize>()
                .map_err(|_| LoadError::Invalid(format!("{what} is `{}`, expected a count", p.0)))
        })
        .transpose()
}

/// `base_score` as written by xgboost 1.x/2.x ("5E-1") or 3.x, which keeps
/// one intercept per target in brackets ("[1.0285715E-2]").
pub(super) fn parse_base_score(text: &str) -> Result<f32, LoadError> {
    let inner = text.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(inner);
    let values = inner
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| LoadError::Invalid(format!("base_score `{text}` is not a number")))?;
    match values[..] {
        [value] => Ok(value),
        _ => Err(LoadError::Unsupported(format!(
            "base_score `{text}` holds {} intercepts; only single-output models are supported",
            values.len()
        ))),
    }
}
