//! Models the pipeline can call. The pipeline holds one as `Arc<dyn Model>` and never knows
//! which: the embedded XGBoost evaluator or a SageMaker endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{Config, Fallback, ModelKind};
use crate::domain::{FeatureLayout, FeatureRow};
use embedded::EmbeddedError;
use sagemaker::SageMakerModel;

pub mod embedded;
pub mod sagemaker;
pub mod xgboost;

pub use embedded::EmbeddedModel;

/// A batch's scores and the model that produced them (a fallback may answer for another).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchScores {
    pub scores: Vec<f32>,
    pub model: Arc<str>,
}

/// A body the gateway passes through unparsed (SageMaker content types other than CSV).
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    pub body: &'a [u8],
    pub content_type: &'a str,
    pub accept: Option<&'a str>,
    /// SageMaker Clarify's `EnableExplanations`, passed on as it came.
    pub enable_explanations: Option<&'a str>,
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
pub type PredictFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BatchScores, ModelError>> + Send + 'a>>;

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

    /// Whether [`Model::explain`] can answer (else a SageMaker route request for Clarify's
    /// explanations goes to the model whole).
    fn explains(&self) -> bool {
        false
    }

    /// The exact contribution of each feature the model reads to `row`'s margin, and the
    /// expected margin; why not, for a model that cannot explain its scores.
    fn explain(&self, _row: &FeatureRow) -> Result<crate::domain::RawExplanation, String> {
        Err("explanations need the embedded XGBoost model (`model.kind = \"embedded\"`)".into())
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

/// Why the configured model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelBuildError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("`model.sagemaker.features`: {0}")]
    Features(String),
    #[error(
        "`explanations.mode = \"decline_and_review\"` explains every flagged score, but the \
         model cannot explain: {0}. Save the model with its node covers (XGBoost's JSON or \
         UBJSON has them), or set `explanations.mode = \"on_request\"`"
    )]
    Explanations(String),
}

/// The configured model. For SageMaker, `client` replaces the one built from the AWS chain
/// (tests pass one with static credentials).
pub async fn build(
    config: &Config,
    client: Option<aws_sdk_sagemakerruntime::Client>,
) -> Result<Arc<dyn Model>, ModelBuildError> {
    let threads = config.model_threads();
    let embedded = || -> Result<EmbeddedModel, ModelBuildError> {
        Ok(match &config.model.path {
            Some(path) => EmbeddedModel::from_path(path, threads)?,
            None => EmbeddedModel::default_model(threads)?,
        })
    };
    Ok(match config.model.kind {
        ModelKind::Embedded => {
            let model = embedded()?;
            // Explaining every flagged score is a promise the model must be able to keep.
            if config.explanations.mode == crate::config::ExplainMode::DeclineAndReview
                && let Err(why) = model.explain(&FeatureRow([0.0; crate::domain::N_FEATURES]))
            {
                return Err(ModelBuildError::Explanations(why));
            }
            Arc::new(model)
        }
        ModelKind::Sagemaker => {
            let sm = &config.model.sagemaker;
            // The local model both gives the endpoint's feature order (unless configured) and
            // answers while the endpoint fails, when asked to.
            let local = embedded()?;
            let layout = match &sm.features {
                Some(names) => FeatureLayout::from_model(names, names.len())
                    .map_err(ModelBuildError::Features)?,
                None => local.layout().clone(),
            };
            let fallback: Option<Arc<dyn Model>> = match sm.fallback {
                Some(Fallback::Embedded) => Some(Arc::new(local)),
                None => None,
            };
            let client = match client {
                Some(client) => client,
                None => sagemaker::client(sm).await,
            };
            Arc::new(SageMakerModel::new(client, sm.clone(), layout, fallback))
        }
    })
}
