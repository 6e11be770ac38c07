//! The XGBoost model evaluated in-process, on dedicated threads so that a large batch never
//! stalls the async runtime.
//!
//! Work reaches the threads through one channel that they share, so a busy thread never holds
//! up a batch another one could take; each job carries a oneshot for its answer.
//!
//! Small batches are evaluated where they are, on the async thread: a batch of at most
//! [`INLINE_TREE_WALKS`] tree walks takes about 20 µs, less than the hand-off to a model thread
//! and back costs (two thread wake-ups, which profiles of the scoring route showed as its largest
//! single cost). The bound keeps every inline evaluation well under the ~100 µs an async task
//! may run without yielding.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::xgboost::{LoadError, XgbModel};
use super::{BatchScores, Model, ModelError, PredictFuture};
use crate::domain::{FeatureLayout, FeatureRow};

/// The default model, compiled into the binary so that it scores from any directory.
pub static DEFAULT_MODEL: &[u8] = include_bytes!("../../models/fraud-xgb/model.json");

/// Name of the compiled-in model in score labels.
pub const DEFAULT_MODEL_NAME: &str = "fraud-xgb";

/// Why an embedded model could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load model {name}: {source}")]
    Load { name: String, source: LoadError },
    #[error("model {name} does not fit the transaction features: {message}")]
    Features { name: String, message: String },
}

/// Batches needing at most this many tree walks (rows × trees) are evaluated inline.
pub const INLINE_TREE_WALKS: usize = 4096;

struct Job {
    rows: Vec<f32>,
    n: usize,
    reply: oneshot::Sender<Vec<f32>>,
}

/// Handle to the model threads. Dropping it closes the channel and joins them.
pub struct EmbeddedModel {
    /// `None` only while dropping.
    jobs: Option<std_mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    model: Arc<XgbModel>,
    layout: FeatureLayout,
    label: Arc<str>,
    num_trees: usize,
}

impl std::fmt::Debug for EmbeddedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedModel")
            .field("label", &self.label)
            .field("features", &self.layout.names())
            .field("trees", &self.num_trees)
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl EmbeddedModel {
    /// Loads the compiled-in default model.
    pub fn default_model(threads: usize) -> Result<Self, EmbeddedError> {
        Self::from_bytes(DEFAULT_MODEL_NAME, DEFAULT_MODEL, threads)
    }

    /// Loads a model file (JSON, UBJSON or a SageMaker `model.tar.gz`); its file stem names it.
    pub fn from_path(path: &Path, threads: usize) -> Result<Self, EmbeddedError> {
        let bytes = std::fs::read(path).map_err(|source| EmbeddedError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = model_name_from_path(path);
        Self::from_bytes(&name, &bytes, threads)
    }

    pub fn from_bytes(name: &str, bytes: &[u8], threads: usize) -> Result<Self, EmbeddedError> {
        let model = XgbModel::from_bytes(bytes).map_err(|source| EmbeddedError::Load {
            name: name.to_owned(),
            source,
        })?;
        let layout = FeatureLayout::from_model(model.feature_names(), model.num_features())
            .map_err(|message| EmbeddedError::Features {
                name: name.to_owned(),
                message,
            })?;
        // The version is the artifact's content hash, so two replicas with the same file agree
        // and a retrained model never shares cache entries with its predecessor.
        let digest = Sha256::digest(bytes);
        let label = Arc::from(format!("{name}@{}", hex::encode(&digest[..6])));
        let num_trees = model.num_trees();
        Ok(Self::start(
            Arc::new(model),
            layout,
            label,
            num_trees,
            threads,
        ))
    }

    fn start(
        model: Arc<XgbModel>,
        layout: FeatureLayout,
        label: Arc<str>,
        num_trees: usize,
        threads: usize,
    ) -> Self {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx = Arc::clone(&rx);
                let model = Arc::clone(&model);
                std::thread::Builder::new()
                    .name(format!("model-{i}"))
                    .spawn(move || model_thread(&model, &rx))
                    .expect("spawning a model thread failed: the process is out of resources")
            })
            .collect();
        Self {
            jobs: Some(tx),
            threads,
            model,
            layout,
            label,
            num_trees,
        }
    }

    pub fn num_trees(&self) -> usize {
        self.num_trees
    }
}

fn model_name_from_path(path: &Path) -> String {
    let file = path.file_name().and_then(|s| s.to_str()).unwrap_or("model");
    // `models/fraud-xgb/model.json` is better named by its folder than by "model".
    let stem = file
        .trim_end_matches(".tar.gz")
        .trim_end_matches(".json")
        .trim_end_matches(".ubj");
    if matches!(stem, "model" | "xgboost-model")
        && let Some(dir) = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
    {
        return dir.to_owned();
    }
    stem.to_owned()
}

fn model_thread(model: &XgbModel, jobs: &Mutex<std_mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting, so exactly one idle thread waits at a time.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let mut out = vec![0.0f32; job.n];
        model.predict_batch(&job.rows, &mut out);
        // The caller may have given up; its loss, nothing to clean up.
        let _ = job.reply.send(out);
    }
}

impl Model for EmbeddedModel {
    fn predict<'a>(&'a self, rows: &'a [FeatureRow], _deadline: Instant) -> PredictFuture<'a> {
        Box::pin(async move {
            let mut flat = Vec::with_capacity(rows.len() * self.layout.len());
            for row in rows {
                self.layout.gather_into(row, &mut flat);
            }
            if rows.len() * self.num_trees <= INLINE_TREE_WALKS {
                let mut scores = vec![0.0f32; rows.len()];
                self.model.predict_batch(&flat, &mut scores);
                return Ok(BatchScores {
                    scores,
                    model: Arc::clone(&self.label),
                });
            }
            let (reply, answer) = oneshot::channel();
            let job = Job {
                rows: flat,
                n: rows.len(),
                reply,
            };
            let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
            if !matches!(sent, Some(Ok(()))) {
                return Err(ModelError::Unavailable("the model threads stopped".into()));
            }
            let scores = answer
                .await
                .map_err(|_| ModelError::Unavailable("a model thread panicked".into()))?;
            Ok(BatchScores {
                scores,
                model: Arc::clone(&self.label),
            })
        })
    }

    fn explains(&self) -> bool {
        self.model.can_explain()
    }

    fn explain(&self, row: &FeatureRow) -> Result<crate::domain::RawExplanation, String> {
        let mut values = Vec::with_capacity(self.layout.len());
        self.layout.gather_into(row, &mut values);
        let explained = self.model.explain_row(&values)?;
        let (base_value, contributions) = explained
            .split_last()
            .expect("an explanation ends with its bias");
        Ok(crate::domain::RawExplanation {
            base_value: *base_value,
            contributions: self
                .layout
                .names()
                .iter()
                .zip(values)
                .zip(contributions)
                .map(|((name, value), &contribution)| (name.clone(), value, contribution))
                .collect(),
        })
    }
    fn label(&self) -> &str {
        &self.label
    }

    fn ready(&self) -> bool {
        self.jobs.is_some() && self.threads.iter().all(|t| !t.is_finished())
    }

    fn layout(&self) -> &FeatureLayout {
        &self.layout
    }
}

impl Drop for EmbeddedModel {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_models_by_folder_or_stem() {
        assert_eq!(
            model_name_from_path(Path::new("models/fraud-xgb/model.json")),
            "fraud-xgb"
        );
        assert_eq!(
            model_name_from_path(Path::new("/opt/ml/model/xgboost-model")),
            "model"
        );
        assert_eq!(
            model_name_from_path(Path::new("churn-v2.tar.gz")),
            "churn-v2"
        );
    }

    #[tokio::test]
    async fn scores_inline_and_on_model_threads_alike_and_as_the_evaluator() {
        let model = EmbeddedModel::default_model(2).unwrap();
        let direct = XgbModel::from_bytes(DEFAULT_MODEL).unwrap();
        let few = vec![
            FeatureRow([12.0, 0.5, 14.0, 5411.0, 1.0, 0.0, 3.0, 0.0, 2.0]),
            FeatureRow([900.0, 20.0, 3.0, 5967.0, 0.0, 1.0, 9000.0, 6.0, 14.0]),
            FeatureRow([f32::NAN; 9]),
        ];
        // Enough rows to go past the inline bound, so the model threads answer them.
        let many: Vec<FeatureRow> = (0..INLINE_TREE_WALKS / model.num_trees() + 7)
            .map(|i| {
                let mut row = few[i % 2];
                row.0[0] = i as f32 * 37.5;
                row
            })
            .collect();
        assert!(few.len() * model.num_trees() <= INLINE_TREE_WALKS);
        assert!(many.len() * model.num_trees() > INLINE_TREE_WALKS);
        for rows in [&few, &many] {
            let scores = model.predict(rows, Instant::now()).await.unwrap().scores;
            assert_eq!(scores.len(), rows.len());
            for (row, score) in rows.iter().zip(&scores) {
                let mut flat = Vec::new();
                model.layout().gather_into(row, &mut flat);
                assert_eq!(*score, direct.predict_row(&flat));
                assert!((0.0..=1.0).contains(score));
            }
        }
        let scores = model.predict(&few, Instant::now()).await.unwrap().scores;
        assert!(
            scores[1] > scores[0],
            "the risky row must score higher: {scores:?}"
        );
        assert!(model.ready());
        assert!(model.label().starts_with("fraud-xgb@"));
    }
}
