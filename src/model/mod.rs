//! Models the pipeline can call. The pipeline holds one as `Arc<dyn Model>` and never knows
//! which: the embedded XGBoost evaluator or a SageMaker endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use crate::domain::{FeatureLayout, FeatureRow};

pub mod embedded;
pub mod sagemaker;
pub mod xgboost;

pub use embedded::EmbeddedModel;

/// A batch's scores and the model that produced them (a fallback may answer for another).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub scores: Vec<f32>,
    pub model: Arc<str>,
}

/// A body the gateway passes through unparsed (SageMaker content types other than CSV).
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    pub body: &'a [u8],
    pub content_type: &'a str,
    pub accept: Option<&'a str>,
}

/// The endpoint's answer to a [`RawRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

/// The future of a pass-through call.
pub type RawFuture<'a> = Pin<Box<dyn Future<Output = Result<RawAnswer, ModelError>> + Send + 'a>>;

/// The future a model returns for one batch.
pub type PredictFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, ModelError>> + Send + 'a>>;

/// A scorer of feature rows.
pub trait Model: Send + Sync + 'static {
    /// Scores a batch; the answer has one score per row, in order. Work past `deadline` (the
    /// earliest of the rows') is wasted: its callers have been answered already.
    fn predict<'a>(&'a self, rows: &'a [FeatureRow], deadline: Instant) -> PredictFuture<'a>;

    /// What answered, as reported in each score's `model` field (`name@version`).
    fn label(&self) -> &str;

    /// Whether the model can take work now (readiness).
    fn ready(&self) -> bool;

    /// Passes a body through unparsed; `None` for models that only score feature rows.
    fn invoke_raw<'a>(
        &'a self,
        _request: RawRequest<'a>,
        _deadline: Instant,
    ) -> Option<RawFuture<'a>> {
        None
    }

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
