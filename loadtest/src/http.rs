//! The HTTP load: open loop (a constant arrival rate, each request timed from when it was *due*,
//! so a slow server cannot hide its queueing the way closed-loop tools let it: coordinated
//! omission) or closed loop (N connections, each sending its next request when the last is
//! answered).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::stats::{Live, Stats, lock};

/// When request `i` of an open-loop run is due: `i / rate` seconds after the start, computed
/// from `i` each time (no interval rounded once and multiplied, so 300/s for 3 s is 900 requests,
/// not 901).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    rate: f64,
}

impl Schedule {
    pub fn new(start: Instant, rate: f64) -> Self {
        Self {
            start,
            rate: rate.max(1e-9),
        }
    }

    pub fn due(&self, i: u64) -> Instant {
        self.start + self.offset(i)
    }

    /// How long after the start request `i` is due.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::try_from_secs_f64(i as f64 / self.rate).unwrap_or(Duration::MAX)
    }

    /// How many requests are due within `duration` of the start (those due before its end).
    pub fn slots(&self, duration: Duration) -> u64 {
        let mut n = (duration.as_secs_f64() * self.rate).ceil() as u64;
        // The product may round either way; settle on the same rule as `offset`.
        while n > 0 && self.offset(n - 1) >= duration {
            n -= 1;
        }
        while self.offset(n) < duration {
            n += 1;
        }
        n
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
    live: &Live,
    send: F,
) -> (Stats, Duration)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let schedule = Schedule::new(Instant::now(), rate);
    let stats = live.recorder(schedule.start);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..schedule.slots(duration) {
        let due = schedule.due(i);
        tokio::time::sleep_until(due).await;
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            lock(&stats).record_dropped(Instant::now());
            continue;
        };
        live.count_sent(1);
        let request = send(i);
        let stats = Arc::clone(&stats);
        tasks.spawn(async move {
            let outcome = request.await;
            let now = Instant::now();
            let mut stats = lock(&stats);
            match outcome {
                Ok(status) => stats.record(status, now.saturating_duration_since(due), now),
                Err(()) => stats.record_error(now),
            }
            drop(slot);
        });
        // Reap finished requests as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = schedule.start.elapsed();
    (live.total(schedule.start), elapsed)
}

/// `connections` loops, each sending its next request when the previous one is answered. Each
/// keeps stats of its own (no lock shared between connections); they are merged at the end.
pub async fn closed_loop<F, Fut>(
    connections: usize,
    duration: Duration,
    live: &Live,
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
        let (send, counter, live) = (Arc::clone(&send), Arc::clone(&counter), live.clone());
        let stats = live.recorder(start);
        loops.spawn(async move {
            while Instant::now() < end {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                live.count_sent(1);
                let sent = Instant::now();
                let outcome = send(i).await;
                let now = Instant::now();
                let mut stats = lock(&stats);
                match outcome {
                    Ok(status) => stats.record(status, now - sent, now),
                    Err(()) => stats.record_error(now),
                }
            }
        });
    }
    while let Some(ended) = loops.join_next().await {
        ended.expect("a connection loop panicked");
    }
    (live.total(start), start.elapsed())
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
        assert_eq!(s.slots(Duration::from_secs(1)), 200);
        assert_eq!(s.slots(Duration::from_millis(1001)), 201);
        assert_eq!(
            Schedule::new(start, 300.0).slots(Duration::from_secs(3)),
            900
        );
        assert_eq!(Schedule::new(start, 0.1).slots(Duration::from_secs(3)), 1);
        let third = Schedule::new(start, 3.0);
        assert_eq!(third.slots(Duration::from_secs(2)), 6);
        assert!(third.due(5) < start + Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_sends_on_schedule_and_times_from_the_due_instant() {
        // A server that takes 30 ms: with 100 requests a second for a second, every request is
        // sent, and each is timed at 30 ms because it was sent when due.
        let (stats, elapsed) = open_loop(
            100.0,
            Duration::from_secs(1),
            1000,
            &Live::default(),
            |_| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(200)
            },
        )
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
        let (stats, elapsed) = open_loop(
            100.0,
            Duration::from_millis(100),
            2,
            &Live::default(),
            |_| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(200)
            },
        )
        .await;
        let s = stats.summary(elapsed);
        assert_eq!((s.ok, s.dropped), (2, 8));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_keeps_n_requests_in_flight() {
        let (stats, elapsed) =
            closed_loop(4, Duration::from_secs(1), &Live::default(), |_| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(200)
            })
            .await;
        let s = stats.summary(elapsed);
        assert_eq!(s.ok, 40, "4 connections x 10 requests of 100 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_timelines_merge_across_connections() {
        // 4 connections, answers every 100 ms for 3 s: at 0.1 s to 0.9 s in second 0, 1.0 s to
        // 1.9 s in second 1, ..., the last at 3.0 s; each second holds all four connections'.
        let (stats, elapsed) =
            closed_loop(4, Duration::from_secs(3), &Live::default(), |_| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(200)
            })
            .await;
        let s = stats.summary(elapsed);
        let completions: Vec<u64> = s.timeline.iter().map(|t| t.completions).collect();
        assert_eq!(completions, [36, 40, 40, 4]);
        assert_eq!(completions.iter().sum::<u64>(), s.ok);
        for second in &s.timeline {
            assert!((second.p50_ms.unwrap() - 100.0).abs() < 1.0, "{second:?}");
        }
    }
}
