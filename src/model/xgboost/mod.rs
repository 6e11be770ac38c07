//! In-process evaluation of XGBoost `gbtree` models.
//!
//! Models are read from XGBoost's JSON or UBJSON model format (xgboost 1.0
//! and later), bare or inside a SageMaker `model.tar.gz`. Everything about a
//! model file is treated as untrusted: indices, counts and tree shapes are
//! checked while loading, so prediction itself can neither fail nor panic on
//! a loaded model, and only well-formed rows are asked of the caller.
//!
//! Loading runs through `format` (which encoding, which archive member),
//! `document` (the model file as serde types) and `build` (checks, then
//! flattening); scoring walks the trees in `forest` and maps the margins
//! through the `objective`.

use std::fmt;
use std::path::Path;

mod build;
mod document;
mod forest;
mod format;
mod objective;
mod shap;
mod ubjson;

#[cfg(test)]
mod tests;

pub use objective::Objective;

use forest::Trees;
use format::{is_gzip, unpack_gzip};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read model file {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A gzip/tar archive that is damaged or holds no single model.
    #[error("model archive: {0}")]
    Archive(String),
    /// Not JSON, UBJSON or an archive: legacy binary, pickle, or not a model.
    #[error("{0}")]
    Format(String),
    /// The bytes are not valid JSON/UBJSON, or not shaped like an XGBoost
    /// model document.
    #[error("malformed XGBoost {format} model: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    /// Well-formed but inconsistent: bad indices, cycles, mismatched lengths.
    #[error("invalid XGBoost model: {0}")]
    Invalid(String),
    /// A valid model that this evaluator cannot reproduce faithfully.
    #[error("unsupported XGBoost model: {0}")]
    Unsupported(String),
}

/// A loaded, validated `gbtree` model; immutable and cheap to share.
pub struct XgbModel {
    trees: Trees,
    /// TreeSHAP over the same trees, or why the model cannot be explained (no covers).
    explainer: Result<shap::Explainer, String>,
    base_margin: f32,
    base_score: f32,
    objective: Objective,
    num_features: usize,
    feature_names: Vec<String>,
}

impl fmt::Debug for XgbModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (trees, nodes, depth, layout) = self.trees.summary();
        f.debug_struct("XgbModel")
            .field("objective", &self.objective.name())
            .field("num_features", &self.num_features)
            .field("num_trees", &trees)
            .field("num_nodes", &nodes)
            .field("max_depth", &depth)
            .field("layout", &layout)
            .field("base_score", &self.base_score)
            .finish_non_exhaustive()
    }
}

impl XgbModel {
    /// Loads a model from the bytes of a JSON or UBJSON model file, or of a
    /// gzipped tar (SageMaker's `model.tar.gz`) holding one. The format is
    /// told from the bytes, never from a file name.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        if is_gzip(bytes) {
            let document = unpack_gzip(bytes)?;
            return Self::from_document(&document);
        }
        Self::from_document(bytes)
    }

    /// Reads and loads a model file; see [`XgbModel::from_bytes`].
    pub fn from_path(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Feature names recorded at training time, in input order; empty when
    /// the model was trained without them.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Values expected in each row.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Trees in the ensemble (boosting rounds times parallel trees).
    pub fn num_trees(&self) -> usize {
        self.trees.num_trees()
    }

    /// The objective, which decides how margins become scores.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// Scores one row of `num_features()` values, `NaN` marking a missing
    /// value.
    ///
    /// # Panics
    ///
    /// If `row` does not hold exactly `num_features()` values.
    pub fn predict_row(&self, row: &[f32]) -> f32 {
        assert_eq!(
            row.len(),
            self.num_features,
            "row has {} values, the model expects {}",
            row.len(),
            self.num_features
        );
        self.objective
            .transform(self.trees.row_margin(self.base_margin, row))
    }

    /// Scores rows laid out one after another in `rows` into `out`, one score
    /// per row; each score is bit for bit what [`XgbModel::predict_row`]
    /// gives for that row.
    ///
    /// # Panics
    ///
    /// If `rows.len() != out.len() * num_features()`.
    pub fn predict_batch(&self, rows: &[f32], out: &mut [f32]) {
        let width = self.num_features;
        assert_eq!(
            Some(rows.len()),
            out.len().checked_mul(width),
            "{} values given for {} rows of {} features",
            rows.len(),
            out.len(),
            width
        );
        if width == 0 {
            out.fill(self.predict_row(&[]));
            return;
        }
        let objective = self.objective;
        self.trees.batch(self.base_margin, rows, out, |margin| {
            objective.transform(margin)
        });
    }

    /// The exact Shapley values of `row`'s margin (TreeSHAP): one contribution per feature,
    /// and the bias (the expected margin) last, as XGBoost's `pred_contribs` lays them out;
    /// they add up to the margin. `Err` says why the model cannot be explained (it was saved
    /// without the node covers, `sum_hessian`).
    ///
    /// # Panics
    ///
    /// If `row` does not hold exactly `num_features()` values.
    pub fn explain_row(&self, row: &[f32]) -> Result<Vec<f64>, String> {
        let explainer = self.explainer.as_ref().map_err(Clone::clone)?;
        let mut contributions = vec![0.0; self.num_features + 1];
        explainer.contributions(row, &mut contributions[..self.num_features]);
        contributions[self.num_features] = explainer.bias();
        Ok(contributions)
    }

    /// Whether [`XgbModel::explain_row`] can answer (the model has its node covers).
    pub fn can_explain(&self) -> bool {
        self.explainer.is_ok()
    }

    /// The margin of `row` (before the objective's transform), as [`XgbModel::predict_row`]
    /// computes it.
    pub fn margin_row(&self, row: &[f32]) -> f32 {
        assert_eq!(row.len(), self.num_features);
        self.trees.row_margin(self.base_margin, row)
    }

    /// Loads a bare JSON or UBJSON document (a gzip stream here can only be
    /// an archive's member).
    fn from_document(bytes: &[u8]) -> Result<Self, LoadError> {
        build::build(format::read_document(bytes)?)
    }
}
