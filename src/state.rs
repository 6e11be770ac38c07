//! What every HTTP handler shares. Cheap to clone: everything heavy sits behind an `Arc`.

use std::sync::Arc;

use crate::api::sagemaker::EndpointNames;
use crate::config::{Config, LimitsConfig};
use crate::health::Health;
use crate::middleware::auth::Auth;
use crate::middleware::rate_limit::RateLimits;
use crate::pipeline::Pipeline;
use crate::scoring::Scoring;

#[derive(Clone, Debug)]
pub struct AppState {
    pub scoring: Scoring,
    pub health: Health,
    pub auth: Arc<Auth>,
    pub rate_limits: Arc<RateLimits>,
    pub limits: Arc<LimitsConfig>,
    /// The names the SageMaker route answers to.
    pub endpoints: Arc<EndpointNames>,
}

impl AppState {
    pub fn new(config: &Config, pipeline: Pipeline, auth: Auth) -> Self {
        let rate_limits = Arc::new(RateLimits::from_config(config));
        let health = Health::new(Arc::clone(pipeline.model()));
        let endpoints =
            EndpointNames::new(pipeline.model().label(), &config.model.endpoint_aliases);
        Self {
            scoring: Scoring::new(config, pipeline, Arc::clone(&rate_limits)),
            health,
            auth: Arc::new(auth),
            rate_limits,
            limits: Arc::new(config.limits.clone()),
            endpoints: Arc::new(endpoints),
        }
    }
}
