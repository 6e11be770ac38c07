//! Pipeline and batcher behaviour against a fake model whose batches the test can hold.

use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::*;
use crate::model::{BatchScores, PredictFuture};

#[derive(Default)]
struct FakeModel {
    /// The first feature of every row, per batch, in call order.
    batches: Mutex<Vec<Vec<f32>>>,
    /// When set, each batch takes one permit before answering: the test releases batches.
    gate: Option<Arc<Semaphore>>,
    delay: Duration,
    fail: bool,
}

impl FakeModel {
    fn gated() -> (Arc<Self>, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let model = Self {
            gate: Some(Arc::clone(&gate)),
            ..Self::default()
        };
        (Arc::new(model), gate)
    }

    fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }

    fn rows_seen(&self) -> Vec<f32> {
        self.batches.lock().unwrap().concat()
    }
}

impl Model for FakeModel {
    fn predict<'a>(&'a self, rows: &'a [FeatureRow], _deadline: Instant) -> PredictFuture<'a> {
        Box::pin(async move {
            self.batches
                .lock()
                .unwrap()
                .push(rows.iter().map(|r| r.0[0]).collect());
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err(ModelError::Unavailable("endpoint down".into()));
            }
            Ok(BatchScores {
                scores: rows.iter().map(|r| r.0[0] / 100.0).collect(),
                model: Arc::from("fake@1"),
            })
        })
    }

    fn label(&self) -> &str {
        "fake@1"
    }

    fn ready(&self) -> bool {
        true
    }
}

fn config(max_batch_size: usize, max_concurrent_batches: usize) -> BatchingConfig {
    BatchingConfig {
        max_batch_size,
        max_concurrent_batches,
        max_queue_rows: 100,
        max_queue_delay_ms: 0,
        deadline_ms: 30_000,
    }
}

fn row(tag: f32) -> FeatureRow {
    FeatureRow([tag; 9])
}

fn start(model: Arc<FakeModel>, config: &BatchingConfig) -> (Pipeline, TaskTracker) {
    let tracker = TaskTracker::new();
    let pipeline = Pipeline::start(model, config, &tracker);
    (pipeline, tracker)
}

/// Waits (in real time, briefly) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}

fn scores(outcomes: Vec<Result<ModelScore, ScoreError>>) -> Vec<f32> {
    outcomes.into_iter().map(|o| o.unwrap().score).collect()
}

#[tokio::test]
async fn answers_every_row_in_order_with_the_model_label() {
    let model = Arc::new(FakeModel::default());
    let (pipeline, _tasks) = start(Arc::clone(&model), &config(2, 1));
    let outcomes = pipeline
        .score(&[row(1.0), row(2.0), row(3.0)], Admit::TryNow)
        .await
        .unwrap();
    assert_eq!(&*outcomes[0].as_ref().unwrap().model, "fake@1");
    assert_eq!(scores(outcomes), [0.01, 0.02, 0.03]);
    assert_eq!(model.batch_sizes(), [2, 1], "cut at max_batch_size");
    assert_eq!(pipeline.queued_rows(), 0, "permits come back");
}

#[tokio::test]
async fn batches_grow_with_load_while_the_model_is_busy() {
    let (model, gate) = FakeModel::gated();
    let (pipeline, _tasks) = start(Arc::clone(&model), &config(64, 1));
    let first = tokio::spawn({
        let p = pipeline.clone();
        async move { p.score(&[row(0.0)], Admit::TryNow).await }
    });
    until("the first batch is at the model", || {
        model.batch_sizes() == [1]
    })
    .await;
    let mut callers = Vec::new();
    for i in 1..=10 {
        let p = pipeline.clone();
        callers.push(tokio::spawn(async move {
            p.score(&[row(i as f32)], Admit::TryNow).await
        }));
    }
    until("all rows are queued", || pipeline.queued_rows() == 11).await;
    gate.add_permits(2);
    first.await.unwrap().unwrap();
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    assert_eq!(
        model.batch_sizes(),
        [1, 10],
        "the ten waiting rows go as one batch"
    );
}

#[tokio::test]
async fn a_full_queue_sheds_at_once_and_waiters_wait() {
    let (model, gate) = FakeModel::gated();
    let mut cfg = config(64, 1);
    cfg.max_queue_rows = 3;
    let (pipeline, _tasks) = start(Arc::clone(&model), &cfg);
    let held = tokio::spawn({
        let p = pipeline.clone();
        async move {
            p.score(&[row(1.0), row(2.0), row(3.0)], Admit::TryNow)
                .await
        }
    });
    until("the queue is full", || pipeline.queued_rows() == 3).await;

    let shed = pipeline
        .score(&[row(4.0)], Admit::TryNow)
        .await
        .unwrap_err();
    assert!(
        matches!(shed, ScoreError::Overloaded { max_queue_rows: 3 }),
        "{shed:?}"
    );
    let too_big = pipeline
        .score(&[row(0.0); 4], Admit::Wait)
        .await
        .unwrap_err();
    assert!(
        matches!(too_big, ScoreError::Overloaded { .. }),
        "can never fit"
    );

    let waiter = tokio::spawn({
        let p = pipeline.clone();
        async move { p.score(&[row(5.0)], Admit::Wait).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "a waiting caller waits for room");
    gate.add_permits(10);
    assert_eq!(scores(held.await.unwrap().unwrap()), [0.01, 0.02, 0.03]);
    assert_eq!(scores(waiter.await.unwrap().unwrap()), [0.05]);
    assert_eq!(
        model.rows_seen(),
        [1.0, 2.0, 3.0, 5.0],
        "the shed row never reached the model"
    );
}

#[tokio::test]
async fn rows_of_callers_that_hung_up_never_reach_the_model() {
    let (model, gate) = FakeModel::gated();
    let (pipeline, _tasks) = start(Arc::clone(&model), &config(64, 1));
    let first = tokio::spawn({
        let p = pipeline.clone();
        async move { p.score(&[row(1.0)], Admit::TryNow).await }
    });
    until("the first batch is at the model", || {
        model.batch_sizes() == [1]
    })
    .await;
    let gone = tokio::spawn({
        let p = pipeline.clone();
        async move { p.score(&[row(2.0)], Admit::TryNow).await }
    });
    until("the second row is queued", || pipeline.queued_rows() == 2).await;
    gone.abort();
    let _ = gone.await;
    let kept = tokio::spawn({
        let p = pipeline.clone();
        async move { p.score(&[row(3.0)], Admit::TryNow).await }
    });
    until("the third row is queued", || pipeline.queued_rows() == 3).await;
    gate.add_permits(10);
    first.await.unwrap().unwrap();
    kept.await.unwrap().unwrap();
    assert_eq!(model.rows_seen(), [1.0, 3.0]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_model_gets_a_deadline_exceeded() {
    let model = Arc::new(FakeModel {
        delay: Duration::from_secs(60),
        ..FakeModel::default()
    });
    let (pipeline, _tasks) = start(model, &config(64, 1));
    let started = Instant::now();
    let outcome = pipeline
        .score(&[row(1.0)], Admit::TryNow)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        matches!(
            outcome,
            Err(ScoreError::DeadlineExceeded {
                deadline_ms: 30_000
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn max_queue_delay_lets_a_batch_fill() {
    let model = Arc::new(FakeModel::default());
    let mut cfg = config(8, 1);
    cfg.max_queue_delay_ms = 10;
    let (pipeline, _tasks) = start(Arc::clone(&model), &cfg);
    let started = Instant::now();
    let a = tokio::spawn({
        let p = pipeline.clone();
        async move { p.score(&[row(1.0)], Admit::TryNow).await }
    });
    tokio::time::sleep(Duration::from_millis(4)).await;
    let b = pipeline.score(&[row(2.0)], Admit::TryNow).await.unwrap();
    a.await.unwrap().unwrap();
    assert_eq!(scores(b), [0.02]);
    assert_eq!(model.batch_sizes(), [2], "both rows in one batch");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(10),
        "sent when the oldest row had waited 10 ms"
    );
}

#[tokio::test]
async fn a_model_error_reaches_every_row_of_the_batch() {
    let model = Arc::new(FakeModel {
        fail: true,
        ..FakeModel::default()
    });
    let (pipeline, _tasks) = start(model, &config(64, 1));
    let outcomes = pipeline
        .score(&[row(1.0), row(2.0)], Admit::TryNow)
        .await
        .unwrap();
    for outcome in outcomes {
        let e = outcome.unwrap_err();
        assert_eq!(e.code(), "model_error");
        assert!(e.to_string().contains("endpoint down"), "{e}");
    }
}

#[tokio::test]
async fn the_batcher_drains_and_ends_when_the_last_handle_is_dropped() {
    let model = Arc::new(FakeModel::default());
    let (pipeline, tasks) = start(Arc::clone(&model), &config(64, 4));
    pipeline.score(&[row(1.0)], Admit::TryNow).await.unwrap();
    drop(pipeline);
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the batching task ends");
}

#[tokio::test]
async fn a_stream_backlog_never_sheds_http() {
    let (model, gate) = FakeModel::gated();
    let (pipeline, _tasks) = start(Arc::clone(&model), &config(64, 1));
    // A stream with more rows than the queue holds: chunks of 25 rows waiting for room.
    let stream: Vec<_> = (0..5)
        .map(|i| {
            let p = pipeline.clone();
            tokio::spawn(async move { p.score(&[row(i as f32); 25], Admit::Wait).await })
        })
        .collect();
    until("the stream has filled the queue", || {
        pipeline.queued_rows() >= 75
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        stream.iter().any(|s| !s.is_finished()),
        "a stream caller is waiting for room"
    );

    let stream_rows = pipeline.queued_rows();
    let http = tokio::spawn({
        let p = pipeline.clone();
        async move { p.score(&[row(99.0)], Admit::TryNow).await }
    });
    until("the HTTP row is admitted or shed", || {
        http.is_finished() || pipeline.queued_rows() > stream_rows
    })
    .await;
    if http.is_finished() {
        let shed = http.await.unwrap();
        panic!("an HTTP row was turned away behind the stream: {shed:?}");
    }
    assert_eq!(
        pipeline.queued_rows(),
        76,
        "the stream took at most its share of the queue, HTTP the reserved room"
    );
    gate.add_permits(1000);
    assert_eq!(scores(http.await.unwrap().unwrap()), [0.99]);
    for s in stream {
        assert_eq!(
            s.await.unwrap().unwrap().len(),
            25,
            "the stream is slowed, not shed"
        );
    }
}

#[tokio::test]
async fn abandoning_answers_queued_and_in_flight_rows_and_ends_the_batcher() {
    let (model, _gate) = FakeModel::gated();
    let (pipeline, tasks) = start(Arc::clone(&model), &config(1, 1));
    let call = |tag: f32| {
        let p = pipeline.clone();
        tokio::spawn(async move { p.score(&[row(tag)], Admit::TryNow).await })
    };
    // One row in a model call that never returns, one queued behind it.
    let in_model = call(1.0);
    until("the first row is at the model", || {
        model.batch_sizes() == [1]
    })
    .await;
    let queued = call(2.0);
    until("the second row is queued", || pipeline.queued_rows() == 2).await;

    pipeline.abandon_token().cancel();
    for caller in [in_model, queued] {
        let outcomes = caller.await.unwrap().unwrap();
        assert!(
            matches!(outcomes[..], [Err(ScoreError::ShuttingDown)]),
            "{outcomes:?}"
        );
    }
    // Rows queued from now on are answered at once, without the model.
    let late = pipeline.score(&[row(3.0)], Admit::Wait).await.unwrap();
    assert!(
        matches!(late[..], [Err(ScoreError::ShuttingDown)]),
        "{late:?}"
    );
    assert_eq!(model.batch_sizes(), [1], "the model saw only the first row");
    assert_eq!(pipeline.queued_rows(), 0, "permits come back");

    drop(pipeline);
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the batcher ends although its model call never returned");
}
