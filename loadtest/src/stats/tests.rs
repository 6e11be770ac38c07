use super::*;

#[test]
fn percentiles_and_counts_from_known_latencies() {
    let start = Instant::now();
    let mut a = Stats::new(start);
    for ms in 1..=100u64 {
        a.record(200, Duration::from_millis(ms), start);
    }
    let mut b = Stats::new(start);
    b.record(503, Duration::from_millis(500), start);
    b.record_error(start);
    b.record_error(start);
    b.record_dropped(start);
    a.merge(&b);
    let s = a.summary(Duration::from_secs(2));
    assert_eq!(s.ok, 100);
    assert_eq!(s.statuses["503"], 1);
    assert_eq!((s.sent, s.errors, s.dropped), (103, 2, 1));
    assert_eq!(s.achieved_rps, 50.5);
    assert!((s.latency_ms.p50 - 51.0).abs() < 0.1, "{:?}", s.latency_ms);
    assert!((s.latency_ms.p99 - 100.0).abs() < 0.1, "{:?}", s.latency_ms);
    assert!((s.latency_ms.max - 500.0).abs() < 0.5, "{:?}", s.latency_ms);
    // The 503 of 500 ms counts in every answer's latency, not in the successful ones'.
    assert!(
        (s.ok_latency_ms.max - 100.0).abs() < 0.1,
        "{:?}",
        s.ok_latency_ms
    );
    assert!(
        (s.ok_latency_ms.p50 - 50.0).abs() < 0.1,
        "{:?}",
        s.ok_latency_ms
    );
}

#[test]
fn completions_fall_in_the_second_they_end() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut s = Stats::new(start);
    // Second 0: ten answers of 10 ms and one 503; second 2: one answer of 80 ms, one failure
    // without an answer, one dropped. Second 1 is empty.
    for i in 0..10 {
        s.record(200, Duration::from_millis(10), at(i * 90));
    }
    s.record(503, Duration::from_millis(1), at(999));
    s.record(200, Duration::from_millis(80), at(2_000));
    s.record_error(at(2_500));
    s.record_dropped(at(2_999));
    let t = s.timeline();
    assert_eq!(t.len(), 3);
    assert_eq!(
        (t[0].second, t[0].completions, t[0].errors, t[0].dropped),
        (0, 11, 1, 0)
    );
    assert!((t[0].p50_ms.unwrap() - 10.0).abs() < 0.1, "{:?}", t[0]);
    assert!((t[0].p99_ms.unwrap() - 10.0).abs() < 0.1, "{:?}", t[0]);
    assert_eq!(
        t[1],
        SecondSummary {
            second: 1,
            completions: 0,
            errors: 0,
            dropped: 0,
            p50_ms: None,
            p99_ms: None
        }
    );
    assert_eq!((t[2].completions, t[2].errors, t[2].dropped), (2, 1, 1));
    assert!((t[2].p99_ms.unwrap() - 80.0).abs() < 0.5, "{:?}", t[2]);
}

#[test]
fn merged_timelines_add_up_second_by_second() {
    // Two connections of one run: the first saw fast answers in seconds 0 and 1, the second
    // slow ones in second 1 only and a longer run (second 3).
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut fast = Stats::new(start);
    let mut slow = Stats::new(start);
    for i in 0..50 {
        fast.record(200, Duration::from_millis(2), at(i * 10));
        fast.record(200, Duration::from_millis(2), at(1_000 + i * 10));
    }
    for i in 0..50 {
        slow.record(200, Duration::from_millis(200), at(1_000 + i * 10));
    }
    slow.record(429, Duration::from_millis(1), at(3_100));
    let mut total = Stats::new(start);
    total.merge(&fast);
    total.merge(&slow);
    let t = total.timeline();
    assert_eq!(
        t.iter().map(|s| s.completions).collect::<Vec<_>>(),
        [50, 100, 0, 1]
    );
    assert_eq!(t.iter().map(|s| s.errors).collect::<Vec<_>>(), [0, 0, 0, 1]);
    // Second 1 holds both connections' answers: half at 2 ms, half at 200 ms.
    assert!((t[1].p50_ms.unwrap() - 2.0).abs() < 0.05, "{:?}", t[1]);
    assert!((t[1].p99_ms.unwrap() - 200.0).abs() < 2.0, "{:?}", t[1]);
    assert!((t[0].p99_ms.unwrap() - 2.0).abs() < 0.05, "{:?}", t[0]);
    // The totals agree with the timeline.
    let s = total.summary(Duration::from_secs(4));
    assert_eq!(s.sent, t.iter().map(|s| s.completions).sum::<u64>());
    // Merging in the other order gives the same timeline.
    let mut other = Stats::new(start);
    other.merge(&slow);
    other.merge(&fast);
    assert_eq!(other.timeline(), t);
}

#[test]
fn live_snapshots_add_up_the_recorders() {
    let start = Instant::now();
    let live = Live::default();
    let (a, b) = (live.recorder(start), live.recorder(start));
    live.count_sent(5);
    lock(&a).record(200, Duration::from_millis(1), start);
    lock(&a).record(200, Duration::from_millis(1), start);
    lock(&b).record(503, Duration::from_millis(100), start);
    lock(&b).record_error(start);
    let s = live.snapshot();
    assert_eq!((s.sent, s.answered, s.ok, s.failed), (5, 3, 2, 2));
    assert!((s.p99_ms - 100.0).abs() < 0.1, "{s:?}");
    let total = live.total(start).summary(Duration::from_secs(1));
    assert_eq!((total.sent, total.ok, total.errors), (4, 2, 1));
}

#[test]
fn failed_answers_are_errors_in_the_summary_by_kind() {
    let start = Instant::now();
    let mut s = Stats::new(start);
    for _ in 0..5 {
        s.record(200, Duration::from_millis(1), start);
    }
    for _ in 0..3 {
        s.record(503, Duration::from_millis(1), start);
    }
    s.record(429, Duration::from_millis(1), start);
    s.record(500, Duration::from_millis(1), start);
    let summary = s.summary(Duration::from_secs(1));
    let line = summary.line("score open loop 10/s");
    assert!(!line.contains("errors 0"), "{line}");
    assert!(
        line.contains("ok 5 of 10, errors 5 (429: 1, 500: 1, 503: 3)"),
        "{line}"
    );
    // The statuses are still counted one by one.
    assert_eq!(summary.statuses["503"], 3);
}

#[test]
fn requests_without_an_answer_are_errors_too_and_merge() {
    let start = Instant::now();
    let mut a = Stats::new(start);
    a.record(200, Duration::from_millis(1), start);
    a.record(503, Duration::from_millis(1), start);
    let mut b = Stats::new(start);
    b.record(503, Duration::from_millis(1), start);
    b.record_error(start);
    a.merge(&b);
    let s = a.summary(Duration::from_secs(1));
    // `errors` keeps its meaning in the JSON (no answer); `failed` counts every failure.
    assert_eq!((s.sent, s.ok, s.errors, s.failed), (4, 1, 1, 3));
    assert_eq!(
        s.failed_by,
        BTreeMap::from([("503".to_owned(), 2), (NO_ANSWER.to_owned(), 1)])
    );
    let line = s.line("x");
    assert!(line.contains("errors 3 (503: 2, no answer: 1),"), "{line}");
    // A clean run says so, without kinds.
    let mut clean = Stats::new(start);
    clean.record(204, Duration::from_millis(1), start);
    let line = clean.summary(Duration::from_secs(1)).line("x");
    assert!(line.contains("ok 1 of 1, errors 0, dropped 0"), "{line}");
}
