//! What every HTTP handler shares. Cheap to clone: everything heavy sits behind an `Arc`.

use std::sync::Arc;

use crate::api::sagemaker::EndpointNames;
use crate::config::{Config, LimitsConfig};
use crate::fleet::Fleet;
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
    /// This replica's own limits: all of them, or with a fleet, its share for when Redis is
    /// unreachable.
    pub rate_limits: Arc<RateLimits>,
    /// The limits (and cache) shared with the other replicas, when `[fleet]` is configured.
    pub fleet: Option<Fleet>,
    pub limits: Arc<LimitsConfig>,
    /// The names the SageMaker route answers to.
    pub endpoints: Arc<EndpointNames>,
}

impl AppState {
    pub fn new(config: &Config, pipeline: Pipeline, auth: Auth) -> Self {
        let fleet = config.fleet.as_ref().map(|f| {
            Fleet::new(config, f).expect("`fleet.redis_url` was validated with the configuration")
        });
        let rate_limits = Arc::new(match &config.fleet {
            Some(f) => RateLimits::from_config(&crate::fleet::local_share(config, f.replicas_hint)),
            None => RateLimits::from_config(config),
        });
        let health = Health::new(Arc::clone(pipeline.model()));
        let endpoints =
            EndpointNames::new(pipeline.model().label(), &config.model.endpoint_aliases);
        Self {
            scoring: Scoring::new(config, pipeline, Arc::clone(&rate_limits), fleet.as_ref()),
            health,
            auth: Arc::new(auth),
            rate_limits,
            fleet,
            limits: Arc::new(config.limits.clone()),
            endpoints: Arc::new(endpoints),
        }
    }
}
