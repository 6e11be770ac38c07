use super::*;

type Receiver = oneshot::Receiver<Result<ModelScore, ScoreError>>;

/// An entry queued at `queued_at` with a 30 s deadline, and the receiver that keeps it alive.
fn entry(tag: f32, queued_at: Instant) -> (Entry, Receiver) {
    let (reply, rx) = oneshot::channel();
    let entry = Entry {
        row: FeatureRow([tag; 9]),
        reply,
        queued_at,
        deadline: queued_at + Duration::from_secs(30),
        permit: None,
    };
    (entry, rx)
}

fn tags(batch: &[Entry]) -> Vec<f32> {
    batch.iter().map(|e| e.row.0[0]).collect()
}

fn ready(next: NextBatch) -> Vec<Entry> {
    match next {
        NextBatch::Ready(batch) => batch,
        other => panic!("expected a batch, got {other:?}"),
    }
}

#[test]
fn empty_queue_has_no_batch() {
    let mut state = State::new(4, Duration::ZERO);
    assert!(matches!(
        state.next_batch(Instant::now(), false),
        NextBatch::Empty
    ));
}

#[test]
fn greedy_batches_take_what_is_queued_up_to_the_max_in_order() {
    let now = Instant::now();
    let mut state = State::new(4, Duration::ZERO);
    let mut receivers = Vec::new();
    for i in 0..6 {
        let (e, rx) = entry(i as f32, now);
        state.append(e);
        receivers.push(rx);
    }
    assert_eq!(
        tags(&ready(state.next_batch(now, false))),
        [0.0, 1.0, 2.0, 3.0]
    );
    assert_eq!(tags(&ready(state.next_batch(now, false))), [4.0, 5.0]);
    assert!(state.is_empty());
}

#[test]
fn a_single_row_is_not_delayed_without_max_queue_delay() {
    let now = Instant::now();
    let mut state = State::new(64, Duration::ZERO);
    let (e, _rx) = entry(1.0, now);
    state.append(e);
    assert_eq!(ready(state.next_batch(now, false)).len(), 1);
}

#[test]
fn rows_whose_caller_has_gone_are_skipped() {
    let now = Instant::now();
    let mut state = State::new(4, Duration::ZERO);
    let (gone, rx_gone) = entry(0.0, now);
    let (kept, _rx_kept) = entry(1.0, now);
    state.append(gone);
    state.append(kept);
    drop(rx_gone);
    assert_eq!(tags(&ready(state.next_batch(now, false))), [1.0]);
    assert_eq!(
        state.take_skipped(),
        Skipped {
            caller_gone: 1,
            deadline: 0
        }
    );
    assert_eq!(state.take_skipped(), Skipped::default(), "counts reset");
}

#[test]
fn expired_rows_are_answered_with_deadline_exceeded() {
    let start = Instant::now();
    let mut state = State::new(4, Duration::ZERO);
    let (old, mut rx_old) = entry(0.0, start);
    state.append(old);
    let later = start + Duration::from_secs(31);
    let (fresh, _rx) = entry(1.0, later);
    state.append(fresh);
    assert_eq!(tags(&ready(state.next_batch(later, false))), [1.0]);
    match rx_old.try_recv() {
        Ok(Err(ScoreError::DeadlineExceeded { deadline_ms })) => assert_eq!(deadline_ms, 30_000),
        other => panic!("expected a deadline error, got {other:?}"),
    }
    assert_eq!(state.take_skipped().deadline, 1);
}

#[test]
fn only_stale_rows_means_no_batch() {
    let now = Instant::now();
    let mut state = State::new(2, Duration::ZERO);
    for _ in 0..5 {
        let (e, rx) = entry(0.0, now);
        drop(rx);
        state.append(e);
    }
    assert!(matches!(state.next_batch(now, false), NextBatch::Empty));
    assert_eq!(state.take_skipped().caller_gone, 5);
}

#[test]
fn max_queue_delay_waits_for_a_partial_batch_to_fill() {
    let start = Instant::now();
    let delay = Duration::from_millis(5);
    let mut state = State::new(3, delay);
    let (a, _ra) = entry(0.0, start);
    state.append(a);
    match state.next_batch(start, false) {
        NextBatch::WaitUntil(t) => assert_eq!(t, start + delay),
        other => panic!("expected to wait, got {other:?}"),
    }
    // Once the oldest row has waited long enough, the partial batch goes.
    assert_eq!(ready(state.next_batch(start + delay, false)).len(), 1);

    // A full batch goes at once.
    let mut receivers = Vec::new();
    for i in 0..3 {
        let (e, rx) = entry(i as f32, start);
        state.append(e);
        receivers.push(rx);
    }
    assert_eq!(ready(state.next_batch(start, false)).len(), 3);

    // Draining flushes a partial batch without waiting.
    let (e, _r) = entry(9.0, start);
    state.append(e);
    assert_eq!(tags(&ready(state.next_batch(start, true))), [9.0]);
}
