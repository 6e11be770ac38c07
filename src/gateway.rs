//! The gateway as a whole: build it from a [`Config`] (model -> pipeline -> scoring -> state,
//! and the stream consumer when configured), then serve until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::kinesis::{Consumer, KinesisError};
use crate::middleware::auth::{Auth, AuthConfigError};
use crate::model::{self, Model, ModelBuildError};
use crate::pipeline::Pipeline;
use crate::server::{admin_app, app, serve_connections};
use crate::state::AppState;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] ModelBuildError),
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error(transparent)]
    Kinesis(#[from] KinesisError),
}

/// A built gateway, not yet serving: the shared state and the tasks it started.
pub struct Gateway {
    pub state: AppState,
    config: Config,
    tasks: TaskTracker,
    consumer: Option<Arc<Consumer>>,
    /// Where the operator routes are served, when `admin_bind` is configured.
    admin: Option<TcpListener>,
}

/// AWS clients to use instead of the ones built from the standard chain (tests pass clients
/// with static credentials).
#[derive(Debug, Default, Clone)]
pub struct Clients {
    pub sagemaker: Option<aws_sdk_sagemakerruntime::Client>,
    pub kinesis: Option<aws_sdk_kinesis::Client>,
    pub dynamodb: Option<aws_sdk_dynamodb::Client>,
}

impl Gateway {
    /// Loads the model (or connects the SageMaker client) and starts the pipeline. Must run
    /// inside a tokio runtime.
    pub async fn build(config: &Config) -> Result<Self, StartError> {
        Self::build_with(config, Clients::default()).await
    }

    /// [`Gateway::build`] with some AWS clients given.
    pub async fn build_with(config: &Config, clients: Clients) -> Result<Self, StartError> {
        let auth = Auth::from_config(config, |name| std::env::var(name).ok())?;
        let model = model::build(config, clients.sagemaker.clone()).await?;
        tracing::info!(model = model.label(), "model ready");
        Self::with_model(config, model, auth)
            .with_consumer(clients)
            .await
    }

    /// Adds the stream consumer of the `[kinesis]` section, with the clients given (tests put
    /// one in front of a custom model) and the others from the standard chain; without that
    /// section, the gateway as it is.
    pub async fn with_consumer(mut self, clients: Clients) -> Result<Self, StartError> {
        if let Some(kinesis) = &self.config.kinesis {
            let client = match clients.kinesis {
                Some(client) => client,
                None => crate::kinesis::client(kinesis).await,
            };
            let consumer = Consumer::new(
                client,
                clients.dynamodb,
                kinesis.clone(),
                self.state.scoring.clone(),
                self.state.health.clone(),
            )
            .await?;
            self.consumer = Some(Arc::new(consumer));
        }
        Ok(self)
    }

    /// A gateway in front of any model (tests use slow or failing ones).
    pub fn with_model(config: &Config, model: Arc<dyn Model>, auth: Auth) -> Self {
        let tasks = TaskTracker::new();
        let pipeline = Pipeline::start(model, &config.batching, &tasks);
        Self {
            state: AppState::new(config, pipeline, auth),
            config: config.clone(),
            tasks,
            consumer: None,
            admin: None,
        }
    }

    /// Serves the operator routes (`/metrics`, `/health/*`) on `listener` too: the
    /// `admin_bind` address, which the caller binds so that it can report a failure.
    pub fn with_admin_listener(mut self, listener: TcpListener) -> Self {
        self.admin = Some(listener);
        self
    }

    /// The router with its middleware, for serving or for `oneshot` tests.
    pub fn router(&self) -> Router {
        app(self.state.clone(), &self.config)
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish,
    /// and drains the queue before returning. All of that gets `http.shutdown_grace_ms`: then
    /// the rows still queued or in a model call are answered 503 `shutting_down` and the
    /// connections left are closed, so that it returns shortly after.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        let Self {
            state,
            config,
            tasks,
            consumer,
            admin,
        } = self;
        let stop = CancellationToken::new();
        // Fired when the grace period is over: the pipeline answers what it holds 503
        // (`shutting_down`), and the server closes the connections still open.
        let grace_over = state.scoring.pipeline().abandon_token();
        let grace = Duration::from_millis(config.http.shutdown_grace_ms);
        let health = state.health.clone();
        let trigger = stop.clone();
        let timer = grace_over.clone();
        let signal = tokio::spawn(async move {
            shutdown.await;
            health.begin_shutdown();
            trigger.cancel();
            tokio::time::sleep(grace).await;
            timer.cancel();
        });
        let consumer = consumer.map(|c| tokio::spawn(c.run(stop.clone())));
        // Its own accept loop, so that a flood on `bind` holds none of its connection slots.
        let admin = admin.map(|listener| {
            let routes = admin_app(state.clone(), &config);
            let (http, stop, grace_over) = (config.http.clone(), stop.clone(), grace_over.clone());
            tokio::spawn(async move {
                serve_connections(listener, routes, &http, stop, grace_over).await
            })
        });
        let result = serve_connections(listener, router, &config.http, stop, grace_over).await;
        if let Some(admin) = admin {
            match admin.await {
                Ok(Err(e)) => tracing::error!(error = %e, "the operator listener failed"),
                Err(e) => tracing::error!(error = %e, "the operator listener panicked"),
                Ok(Ok(())) => {}
            }
        }
        // The consumer finishes its pages in hand and checkpoints them; it needs the pipeline
        // until then.
        if let Some(consumer) = consumer
            && let Err(e) = consumer.await
        {
            tracing::error!(error = %e, "the stream consumer panicked");
        }
        // The router's copies of the state are gone with the server; dropping ours closes the
        // queue, and the batcher scores what is left before its task ends.
        drop(state);
        tasks.close();
        tasks.wait().await;
        signal.abort();
        tracing::info!("stopped");
        result
    }
}
