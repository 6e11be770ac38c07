//! Models the pipeline can call. The pipeline holds one as `Arc<dyn Model>` and never knows
//! which: the embedded XGBoost evaluator today, a SageMaker endpoint later.

use std::future::Future;
use std::pin::Pin;

use crate::domain::{FeatureLayout, FeatureRow};

pub mod embedded;
pub mod ubjson;
pub mod xgboost;

pub use embedded::EmbeddedModel;

/// The future a model returns for one batch.
pub type PredictFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<f32>, ModelError>> + Send + 'a>>;

/// A scorer of feature rows.
pub trait Model: Send + Sync + 'static {
    /// Scores a batch; the result has one score per row, in order.
    fn predict<'a>(&'a self, rows: &'a [FeatureRow]) -> PredictFuture<'a>;

    /// What answered, as reported in each score's `model` field (`name@version`).
    fn label(&self) -> &str;

    /// Whether the model can take work now (readiness).
    fn ready(&self) -> bool;

    /// The features the model reads, in its own order (what a SageMaker CSV row holds).
    fn layout(&self) -> &FeatureLayout {
        FeatureLayout::canonical_ref()
    }
}

/// Why a model could not score a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("the model is not available: {0}")]
    Unavailable(String),
    #[error("the model answered {got} scores for {expected} rows")]
    CountMismatch { expected: usize, got: usize },
}
