//! Latency and outcome bookkeeping: an HDR histogram of latencies (microseconds, 3 significant
//! digits), counts by outcome, and a timeline of per-second buckets, merged into a JSON summary.
//!
//! A run's recorders (one per closed-loop connection, one for an open loop) each own a `Stats`
//! behind a lock of their own, so recording never contends with other connections; `Live` lets
//! the progress line read them while the run goes, and `merge` adds them up at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// Highest latency recorded, in microseconds (longer ones count as this).
const MAX_LATENCY_US: u64 = 60_000_000;

/// What a request (or record) came to, as counted in the summary's `statuses`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// An HTTP status.
    Status(u16),
    /// A named outcome (the Kinesis mode's `scored`, or a dead letter's reason).
    Label(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status) => write!(f, "{status}"),
            Self::Label(label) => f.write_str(label),
        }
    }
}

/// The kind, in a summary's `failed_by`, of the requests that got no answer.
pub const NO_ANSWER: &str = "no_answer";

/// What ended in one second of the run.
#[derive(Debug, Clone, Default)]
struct Second {
    /// Answers of any kind, plus requests that got none.
    completions: u64,
    /// Of those, not successful: a non-2xx status (or a dead letter), or no answer.
    errors: u64,
    dropped: u64,
    /// Latencies answered in this second. Two significant digits (about 10 KB each) are plenty
    /// for a plot, and keep a closed loop's per-connection timelines small.
    latency_us: Option<Histogram<u32>>,
}

impl Second {
    fn merge(&mut self, other: &Second) {
        self.completions += other.completions;
        self.errors += other.errors;
        self.dropped += other.dropped;
        if let Some(theirs) = &other.latency_us {
            match &mut self.latency_us {
                Some(ours) => ours.add(theirs).expect("same bounds"),
                None => self.latency_us = Some(theirs.clone()),
            }
        }
    }
}

#[derive(Debug)]
pub struct Stats {
    /// The run's start: second `n` of the timeline is `[start + n s, start + n+1 s)`.
    start: Instant,
    latency_us: Histogram<u64>,
    /// Successful answers only: under overload, the latency of what was accepted, apart from the
    /// refusals answered at once.
    ok_latency_us: Histogram<u64>,
    outcomes: BTreeMap<Outcome, u64>,
    /// Of `outcomes`, those not successful (a non-2xx status, a dead letter).
    failed: BTreeMap<Outcome, u64>,
    ok: u64,
    /// Requests that got no answer (connection refused, reset, timeout).
    errors: u64,
    /// Requests not sent because too many were already in flight (the target is far behind).
    dropped: u64,
    timeline: Vec<Second>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub sent: u64,
    pub ok: u64,
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no answer (connection refused, reset, timeout), as this key has always
    /// counted; every failure is in `failed`.
    pub errors: u64,
    /// Every request that did not succeed: answered but not 2xx (503 shed, 429, 5xx, ...; in
    /// the Kinesis mode a dead letter), or not answered at all.
    pub failed: u64,
    /// `failed` by kind: each status (or dead letter's reason), and `no_answer`.
    pub failed_by: BTreeMap<String, u64>,
    pub dropped: u64,
    pub seconds: f64,
    pub achieved_rps: f64,
    /// Every answer's latency.
    pub latency_ms: Percentiles,
    /// Successful (2xx) answers' latency only.
    pub ok_latency_ms: Percentiles,
    pub timeline: Vec<SecondSummary>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(latency_us: &Histogram<u64>) -> Self {
        let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: latency_us.max() as f64 / 1000.0,
            mean: latency_us.mean() / 1000.0,
        }
    }
}

/// One second of the timeline in the summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecondSummary {
    /// Seconds since the start of the run.
    pub second: u64,
    pub completions: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Of the answers in this second; `null` when there were none.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Stats {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            ok_latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            outcomes: BTreeMap::new(),
            failed: BTreeMap::new(),
            ok: 0,
            errors: 0,
            dropped: 0,
            timeline: Vec::new(),
        }
    }

    /// The bucket of the second `at` falls in.
    fn second(&mut self, at: Instant) -> &mut Second {
        let index = at.saturating_duration_since(self.start).as_secs() as usize;
        if self.timeline.len() <= index {
            self.timeline.resize_with(index + 1, Second::default);
        }
        &mut self.timeline[index]
    }

    /// An HTTP answer with `status`, `latency` after the request was due, received `at`.
    pub fn record(&mut self, status: u16, latency: Duration, at: Instant) {
        self.record_outcome(
            Outcome::Status(status),
            (200..300).contains(&status),
            latency,
            at,
        );
    }

    /// An answer of any kind; `ok` says whether it counts as a success.
    pub fn record_outcome(&mut self, outcome: Outcome, ok: bool, latency: Duration, at: Instant) {
        if !ok {
            *self.failed.entry(outcome.clone()).or_default() += 1;
        }
        *self.outcomes.entry(outcome).or_default() += 1;
        self.ok += u64::from(ok);
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency_us.record(us).expect("clamped into range");
        if ok {
            self.ok_latency_us.record(us).expect("clamped into range");
        }
        let second = self.second(at);
        second.completions += 1;
        second.errors += u64::from(!ok);
        second
            .latency_us
            .get_or_insert_with(|| {
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid bounds")
            })
            .saturating_record(us);
    }

    /// A request that ended `at` without an answer.
    pub fn record_error(&mut self, at: Instant) {
        self.errors += 1;
        let second = self.second(at);
        second.completions += 1;
        second.errors += 1;
    }

    /// Requests given up without an instant of their own (the Kinesis mode's lost records):
    /// in the totals, not in the timeline.
    pub fn add_errors(&mut self, n: u64) {
        self.errors += n;
    }

    /// A request not sent `at` (too many in flight).
    pub fn record_dropped(&mut self, at: Instant) {
        self.dropped += 1;
        self.second(at).dropped += 1;
    }

    /// Adds another recorder's stats of the same run (same start).
    pub fn merge(&mut self, other: &Stats) {
        assert_eq!(self.start, other.start, "merging stats of different runs");
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.ok_latency_us
            .add(&other.ok_latency_us)
            .expect("same bounds");
        for (outcome, n) in &other.outcomes {
            *self.outcomes.entry(outcome.clone()).or_default() += n;
        }
        for (outcome, n) in &other.failed {
            *self.failed.entry(outcome.clone()).or_default() += n;
        }
        self.ok += other.ok;
        self.errors += other.errors;
        self.dropped += other.dropped;
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize_with(other.timeline.len(), Second::default);
        }
        for (ours, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            ours.merge(theirs);
        }
    }

    /// Latencies of every answer, in microseconds.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.latency_us
    }

    /// Answers received, of any kind.
    pub fn answered(&self) -> u64 {
        self.outcomes.values().sum()
    }

    pub fn timeline(&self) -> Vec<SecondSummary> {
        let ms = |h: &Histogram<u32>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (0u64..)
            .zip(&self.timeline)
            .map(|(second, s)| SecondSummary {
                second,
                completions: s.completions,
                errors: s.errors,
                dropped: s.dropped,
                p50_ms: s.latency_us.as_ref().map(|h| ms(h, 0.5)),
                p99_ms: s.latency_us.as_ref().map(|h| ms(h, 0.99)),
            })
            .collect()
    }

    pub fn summary(&self, elapsed: Duration) -> Summary {
        let answered = self.answered();
        let mut failed_by: BTreeMap<String, u64> = self
            .failed
            .iter()
            .map(|(outcome, n)| (outcome.to_string(), *n))
            .collect();
        if self.errors > 0 {
            failed_by.insert(NO_ANSWER.to_owned(), self.errors);
        }
        Summary {
            sent: answered + self.errors,
            ok: self.ok,
            statuses: self
                .outcomes
                .iter()
                .map(|(outcome, n)| (outcome.to_string(), *n))
                .collect(),
            errors: self.errors,
            failed: failed_by.values().sum(),
            failed_by,
            dropped: self.dropped,
            seconds: elapsed.as_secs_f64(),
            achieved_rps: answered as f64 / elapsed.as_secs_f64().max(1e-9),
            latency_ms: Percentiles::of(&self.latency_us),
            ok_latency_ms: Percentiles::of(&self.ok_latency_us),
            timeline: self.timeline(),
        }
    }
}

impl Summary {
    /// The HTTP mode's summary line, after `run` (the target and the loop): its `errors` are
    /// every request that failed (`failed`), with their kinds: `errors 4 (429: 1, 503: 2, no
    /// answer: 1)`.
    pub fn line(&self, run: &str) -> String {
        let l = &self.latency_ms;
        let kinds = if self.failed_by.is_empty() {
            String::new()
        } else {
            let kinds: Vec<String> = self
                .failed_by
                .iter()
                .map(|(kind, n)| format!("{}: {n}", kind.replace('_', " ")))
                .collect();
            format!(" ({})", kinds.join(", "))
        };
        format!(
            "{run}: {:.0} req/s, ok {} of {}, errors {}{kinds}, dropped {}, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.achieved_rps,
            self.ok,
            self.sent,
            self.failed,
            self.dropped,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        )
    }
}

/// A run's recorders, readable while it goes (for the progress line), and a count of requests
/// sent (answered or not yet).
#[derive(Debug, Clone, Default)]
pub struct Live {
    recorders: Arc<Mutex<Vec<Arc<Mutex<Stats>>>>>,
    sent: Arc<AtomicU64>,
}

/// The totals of a run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub sent: u64,
    pub answered: u64,
    pub ok: u64,
    /// Not ok: non-2xx answers, no answer, dropped.
    pub failed: u64,
    pub p99_ms: f64,
}

impl Live {
    /// A new recorder of the run that started at `start`.
    pub fn recorder(&self, start: Instant) -> Arc<Mutex<Stats>> {
        let stats = Arc::new(Mutex::new(Stats::new(start)));
        lock(&self.recorders).push(Arc::clone(&stats));
        stats
    }

    pub fn count_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let recorders = lock(&self.recorders).clone();
        let mut snapshot = Snapshot {
            sent: self.sent.load(Ordering::Relaxed),
            ..Snapshot::default()
        };
        let mut latency: Option<Histogram<u64>> = None;
        for recorder in &recorders {
            let stats = lock(recorder);
            let answered = stats.answered();
            snapshot.answered += answered;
            snapshot.ok += stats.ok;
            snapshot.failed += answered - stats.ok + stats.errors + stats.dropped;
            match &mut latency {
                Some(h) => h.add(&stats.latency_us).expect("same bounds"),
                None => latency = Some(stats.latency_us.clone()),
            }
        }
        snapshot.p99_ms = latency.map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
        snapshot
    }

    /// Every recorder's stats added up (once the run has ended).
    pub fn total(&self, start: Instant) -> Stats {
        let mut total = Stats::new(start);
        for recorder in lock(&self.recorders).iter() {
            total.merge(&lock(recorder));
        }
        total
    }
}

/// Locks, ignoring poisoning: a recorder's counts stay meaningful if a holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
