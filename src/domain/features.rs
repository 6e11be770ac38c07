//! The model features derived from a transaction, and how a model's own feature order is
//! gathered from them.

/// The features the gateway can derive from a transaction, in canonical order. A model names
/// the subset it uses, in its own order; see [`FeatureLayout`].
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "amount",
    "amount_ratio_30d",
    "hour_of_day",
    "merchant_category",
    "card_present",
    "foreign",
    "distance_from_home_km",
    "tx_count_1h",
    "tx_count_24h",
];

/// Number of derivable features.
pub const N_FEATURES: usize = 9;

/// Every derivable feature of one transaction, in [`FEATURE_NAMES`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureRow(pub [f32; N_FEATURES]);

/// How a model's feature vector is gathered from a [`FeatureRow`]: `indices[i]` is the
/// canonical index of the model's i-th feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureLayout {
    names: Vec<String>,
    indices: Vec<usize>,
}

impl FeatureLayout {
    /// Matches a model's feature names against the derivable ones. A model without names gets
    /// the canonical order, but only if it has exactly that many features.
    pub fn from_model(model_names: &[String], num_features: usize) -> Result<Self, String> {
        let derivable = FEATURE_NAMES.join(", ");
        if model_names.is_empty() {
            if num_features == N_FEATURES {
                return Ok(Self::canonical());
            }
            return Err(format!(
                "the model stores no feature names and has {num_features} features; the gateway \
                 derives {N_FEATURES} ({derivable}). Save the model from a DMatrix with \
                 `feature_names` set"
            ));
        }
        let mut indices = Vec::with_capacity(model_names.len());
        let mut unknown = Vec::new();
        for name in model_names {
            match FEATURE_NAMES.iter().position(|f| f == name) {
                Some(i) => indices.push(i),
                None => unknown.push(name.as_str()),
            }
        }
        if !unknown.is_empty() {
            return Err(format!(
                "the model's features [{}] include [{}], which the gateway cannot derive from a \
                 transaction; derivable features: [{derivable}]",
                model_names.join(", "),
                unknown.join(", ")
            ));
        }
        Ok(Self {
            names: model_names.to_vec(),
            indices,
        })
    }

    pub fn canonical() -> Self {
        Self {
            names: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            indices: (0..N_FEATURES).collect(),
        }
    }

    /// A shared canonical layout, for models that read every feature in canonical order.
    pub fn canonical_ref() -> &'static Self {
        static CANONICAL: std::sync::LazyLock<FeatureLayout> =
            std::sync::LazyLock::new(FeatureLayout::canonical);
        &CANONICAL
    }

    /// The row whose model view is `values` (in the model's order); features the model does not
    /// read are missing (NaN).
    pub fn scatter(&self, values: &[f32]) -> FeatureRow {
        debug_assert_eq!(values.len(), self.indices.len());
        let mut row = FeatureRow([f32::NAN; N_FEATURES]);
        for (&i, &v) in self.indices.iter().zip(values) {
            row.0[i] = v;
        }
        row
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Appends the model's view of `row` to `out`.
    pub fn gather_into(&self, row: &FeatureRow, out: &mut Vec<f32>) {
        out.extend(self.indices.iter().map(|&i| row.0[i]));
    }
}
