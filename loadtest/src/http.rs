//! The HTTP load: open loop (a constant arrival rate, each request timed from when it was *due*,
//! so a slow server cannot hide its queueing the way closed-loop tools let it: coordinated
//! omission) or closed loop (N connections, each sending its next request when the last is
//! answered).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::stats::Stats;

/// When request `i` of an open-loop run is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub interval: Duration,
}

impl Schedule {
    pub fn new(start: Instant, rate: f64) -> Self {
        Self {
            start,
            interval: Duration::from_secs_f64(1.0 / rate.max(1e-9)),
        }
    }

    pub fn due(&self, i: u64) -> Instant {
        self.start + self.interval.mul_f64(i as f64)
    }
}

/// What one request came to: an HTTP status, or no answer.
pub type Outcome = Result<u16, ()>;

/// Sends `send(i)` at a constant rate for `duration`, at most `max_in_flight` at once (beyond,
/// requests are counted as dropped rather than queued: queueing them would hide the overload).
pub async fn open_loop<F, Fut>(
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    send: F,
) -> (Stats, Duration)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let stats = Arc::new(Mutex::new(Stats::default()));
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let schedule = Schedule::new(Instant::now(), rate);
    let end = schedule.start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0.. {
        let due = schedule.due(i);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            stats.lock().expect("no panics while locked").dropped += 1;
            continue;
        };
        let request = send(i);
        let stats = Arc::clone(&stats);
        tasks.spawn(async move {
            let outcome = request.await;
            let latency = Instant::now().saturating_duration_since(due);
            let mut stats = stats.lock().expect("no panics while locked");
            match outcome {
                Ok(status) => stats.record(status, latency),
                Err(()) => stats.errors += 1,
            }
            drop(slot);
        });
        // Reap finished requests as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = schedule.start.elapsed();
    let stats = Arc::try_unwrap(stats)
        .expect("every request task has ended")
        .into_inner()
        .expect("no panics while locked");
    (stats, elapsed)
}

/// `connections` loops, each sending its next request when the previous one is answered.
pub async fn closed_loop<F, Fut>(
    connections: usize,
    duration: Duration,
    send: F,
) -> (Stats, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let send = Arc::new(send);
    let start = Instant::now();
    let end = start + duration;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (send, counter) = (Arc::clone(&send), Arc::clone(&counter));
        loops.spawn(async move {
            let mut stats = Stats::default();
            while Instant::now() < end {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sent = Instant::now();
                match send(i).await {
                    Ok(status) => stats.record(status, sent.elapsed()),
                    Err(()) => stats.errors += 1,
                }
            }
            stats
        });
    }
    let mut total = Stats::default();
    while let Some(stats) = loops.join_next().await {
        total.merge(&stats.expect("a connection loop panicked"));
    }
    (total, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_a_constant_rate() {
        let start = Instant::now();
        let s = Schedule::new(start, 200.0);
        assert_eq!(s.due(0), start);
        assert_eq!(s.due(1) - start, Duration::from_millis(5));
        assert_eq!(s.due(200) - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_sends_on_schedule_and_times_from_the_due_instant() {
        // A server that takes 30 ms: with 100 requests a second for a second, every request is
        // sent, and each is timed at 30 ms because it was sent when due.
        let (stats, elapsed) = open_loop(100.0, Duration::from_secs(1), 1000, |_| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(200)
        })
        .await;
        let s = stats.summary(elapsed);
        assert_eq!(s.ok, 100);
        assert_eq!(s.dropped, 0);
        assert!((s.latency_ms.p50 - 30.0).abs() < 0.1, "{:?}", s.latency_ms);
        assert!(elapsed >= Duration::from_millis(990) && elapsed < Duration::from_millis(1100));
    }

    #[tokio::test(start_paused = true)]
    async fn overload_is_dropped_not_queued() {
        // Two at a time, each taking a second: the rest of 10 requests in 100 ms are dropped.
        let (stats, elapsed) = open_loop(100.0, Duration::from_millis(100), 2, |_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(200)
        })
        .await;
        let s = stats.summary(elapsed);
        assert_eq!((s.ok, s.dropped), (2, 8));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_keeps_n_requests_in_flight() {
        let (stats, elapsed) = closed_loop(4, Duration::from_secs(1), |_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(200)
        })
        .await;
        let s = stats.summary(elapsed);
        assert_eq!(s.ok, 40, "4 connections x 10 requests of 100 ms");
    }
}
