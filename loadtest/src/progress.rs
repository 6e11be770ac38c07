//! The live progress line on stderr while a run goes: elapsed of total seconds and what the run's
//! `render` says (counts, current rate, running p99). Hidden with `--quiet`, and by indicatif
//! itself when stderr is not a terminal (CI logs, redirects), so scripts see only the summary.

use std::collections::VecDeque;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::stats::Snapshot;

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(500);

pub struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// A line for a run of `total`, its message from `render` at every tick.
    pub fn start(
        total: Duration,
        quiet: bool,
        mut render: impl FnMut() -> String + Send + 'static,
    ) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total.as_secs().max(1)), target);
        bar.set_style(
            ProgressStyle::with_template("[{bar:20}] {pos:>3}/{len} s  {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        if bar.is_hidden() {
            // Nothing to draw: spare the run the snapshots.
            return Self { bar, ticker: None };
        }
        let start = Instant::now();
        let line = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                line.set_position(start.elapsed().as_secs());
                line.set_message(render());
            }
        });
        Self {
            bar,
            ticker: Some(ticker),
        }
    }

    /// The run goes on past its planned length (the Kinesis mode's drain): now `total` long.
    pub fn extend(&self, total: Duration) {
        self.bar.set_length(total.as_secs().max(1));
    }

    /// Removes the line, so the summary that follows stands alone.
    pub fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

/// A rate over about the last second, from successive totals (completions so far).
#[derive(Debug, Default)]
pub struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Takes the total at `now`; answers the rate since the oldest sample within the last second.
    pub fn update(&mut self, now: Instant, total: u64) -> f64 {
        self.samples.push_back((now, total));
        while self.samples.len() > 2
            && now.saturating_duration_since(self.samples[1].0) >= Duration::from_secs(1)
        {
            self.samples.pop_front();
        }
        let (then, before) = self.samples[0];
        let seconds = now.saturating_duration_since(then).as_secs_f64();
        if seconds > 0.0 {
            total.saturating_sub(before) as f64 / seconds
        } else {
            0.0
        }
    }
}

/// The HTTP mode's message: `sent 1200 ok 1198 errors 2 400 req/s p99 3.2 ms`.
pub fn http_message(snapshot: &Snapshot, rate: f64) -> String {
    format!(
        "sent {} ok {} errors {} {:.0} req/s p99 {:.2} ms",
        snapshot.sent, snapshot.ok, snapshot.failed, rate, snapshot.p99_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_covers_about_the_last_second() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut rate = Rate::default();
        assert_eq!(rate.update(at(0), 0), 0.0);
        assert_eq!(rate.update(at(500), 50), 100.0);
        assert_eq!(rate.update(at(1_000), 100), 100.0);
        // Faster from here: the window drops samples older than a second and follows.
        assert_eq!(rate.update(at(1_500), 400), 350.0);
        assert_eq!(rate.update(at(2_000), 700), 600.0);
        // A stall shows as zero once a second has passed without completions.
        rate.update(at(2_500), 700);
        assert_eq!(rate.update(at(3_000), 700), 0.0);
    }

    #[test]
    fn the_message_has_the_counts_the_rate_and_the_p99() {
        let snapshot = Snapshot {
            sent: 1200,
            answered: 1199,
            ok: 1198,
            failed: 2,
            p99_ms: 3.25,
        };
        assert_eq!(
            http_message(&snapshot, 400.4),
            "sent 1200 ok 1198 errors 2 400 req/s p99 3.25 ms"
        );
    }

    #[tokio::test]
    async fn a_quiet_line_is_hidden_and_never_renders() {
        let progress = Progress::start(Duration::from_secs(2), true, || {
            panic!("a hidden line renders nothing")
        });
        assert!(progress.bar.is_hidden());
        assert!(progress.ticker.is_none());
        progress.finish();
    }
}
