//! `loadtest kinesis`: synthetic transactions put into a Kinesis stream at a constant rate (open
//! loop: each record is due at its slot, whatever the stream or the gateway does), and the
//! end-to-end latency from that slot to the moment the gateway's consumer wrote its result.
//!
//! Each transaction's id is `<run prefix>-<slot>`, so a result names its record and so its due
//! instant; the prefix is new each run, so results of earlier runs in the same file or stream are
//! ignored. Dead letters carry the record's raw bytes (and so its id), or, for a model failure,
//! only its position in the stream: the position of every Kinesis record put is kept for those.
//!
//! This module sets the run up and reports it; [`producer`] puts the records, [`tracker`] keeps
//! what became of each, [`tail`] reads the gateway's output back, [`args`] is the command line.

mod args;
mod producer;
mod tail;
mod tracker;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::types::StreamStatus;
use serde::Serialize;
use tokio::time::Instant;

pub use args::KinesisArgs;
use producer::PutCounts;
use tail::Tail;
use tracker::Tracker;

use crate::http::Schedule;
use crate::progress::{Progress, Rate};
use crate::stats::{Live, Summary, lock};

/// An SDK error on one line: the service's code and message, or the whole chain of causes when
/// there is no code (no connection, a timeout).
fn aws_error<E: ProvideErrorMetadata + std::error::Error>(e: &E) -> String {
    match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
        None => DisplayErrorContext(e).to_string(),
    }
}

async fn client(args: &KinesisArgs) -> Client {
    use aws_config::meta::region::RegionProviderChain;
    let region = RegionProviderChain::first_try(args.region.clone().map(aws_config::Region::new))
        .or_default_provider()
        .or_else(aws_config::Region::new("us-east-1"));
    // Retries are this tool's own (and counted), so the SDK's are off.
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .build(),
        );
    if let Some(url) = &args.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// Creates `stream` with `shards` shards unless it exists, and waits until it is active.
async fn create_stream(client: &Client, stream: &str, shards: i32) -> Result<(), String> {
    let created = client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await;
    if let Err(e) = created
        && e.code() != Some("ResourceInUseException")
    {
        return Err(format!("cannot create stream {stream}: {}", aws_error(&e)));
    }
    for _ in 0..600 {
        let described = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await;
        if let Ok(out) = described
            && out
                .stream_description_summary()
                .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("stream {stream} did not become active within 60 s"))
}

/// The JSON summary: the HTTP mode's, plus the puts and what never came back.
#[derive(Serialize)]
struct KinesisSummary {
    #[serde(flatten)]
    summary: Summary,
    put: PutCounts,
    /// Put, and never seen in the gateway's output within the drain.
    lost: u64,
    /// Results seen again (the consumer is at-least-once).
    duplicates: u64,
}

pub async fn run(args: KinesisArgs) -> ExitCode {
    if !(args.rate > 0.0 && args.seconds >= 0.0 && args.drain_seconds >= 0.0) {
        eprintln!("--rate must be positive, --seconds and --drain-seconds not negative");
        return ExitCode::from(2);
    }
    if !(1..=1000).contains(&args.aggregate) {
        eprintln!("--aggregate must be from 1 to 1000");
        return ExitCode::from(2);
    }
    let client = client(&args).await;
    if let Some(shards) = args.create_stream {
        for stream in std::iter::once(&args.stream).chain(&args.output_stream) {
            if let Err(e) = create_stream(&client, stream, shards).await {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.seconds == 0.0 {
        return ExitCode::SUCCESS;
    }
    if args.results_file.is_none() && args.output_stream.is_none() {
        eprintln!("where are results read? Give --results-file or --output-stream");
        return ExitCode::from(2);
    }
    // A stream that cannot be written shows here once, not as a run of failed puts.
    if let Err(e) = client
        .describe_stream_summary()
        .stream_name(&args.stream)
        .send()
        .await
    {
        eprintln!("stream {}: {}", args.stream, aws_error(&e));
        return ExitCode::FAILURE;
    }

    // Where results will be read, taken before the first put.
    let tails: Vec<Tail> = [&args.results_file, &args.dead_letter_file]
        .into_iter()
        .flatten()
        .map(|p| Tail::at_end(p.clone()))
        .collect();
    let iterators = match &args.output_stream {
        Some(stream) => match tail::latest_iterators(&client, stream).await {
            Ok(iterators) => iterators,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => Vec::new(),
    };

    let prefix = format!("lt{:08x}", rand::random::<u32>());
    let live = Live::default();
    let schedule = Schedule::new(Instant::now(), args.rate);
    let duration = Duration::from_secs_f64(args.seconds);
    let slots = schedule.slots(duration);
    let tracker = Arc::new(Mutex::new(Tracker::new(
        schedule,
        prefix.clone(),
        slots,
        live.recorder(schedule.start),
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let file_reader = (!tails.is_empty())
        .then(|| tail::tail_files(tails, Arc::clone(&tracker), Arc::clone(&stop)));
    let mut stream_readers = tokio::task::JoinSet::new();
    for (shard, iterator) in iterators {
        stream_readers.spawn(tail::read_shard(
            client.clone(),
            args.output_stream.clone().expect("iterators come from it"),
            shard,
            iterator,
            Arc::clone(&tracker),
            Duration::from_millis(args.poll_ms),
            Arc::clone(&stop),
        ));
    }

    let progress = {
        let (live, mut rate) = (live.clone(), Rate::default());
        Progress::start(duration, args.output.quiet, move || {
            let s = live.snapshot();
            format!(
                "put {} scored {} failed {} waiting {} {:.0} rec/s p99 {:.1} ms",
                s.sent,
                s.ok,
                s.failed,
                s.sent.saturating_sub(s.answered),
                rate.update(Instant::now(), s.answered),
                s.p99_ms
            )
        })
    };

    // Put: transactions generated in slot order (ids `<prefix>-<slot>`), batched into calls.
    let counters =
        producer::produce(&args, &client, &schedule, slots, &prefix, &tracker, &live).await;

    // Drain: wait for what is still outstanding.
    let drain = Duration::from_secs_f64(args.drain_seconds);
    progress.extend(schedule.start.elapsed() + drain);
    let deadline = Instant::now() + drain;
    while lock(&tracker).outstanding > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(reader) = file_reader {
        reader.join().expect("the file reader does not panic");
    }
    let readers_done = async { while stream_readers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), readers_done)
        .await
        .is_err()
    {
        stream_readers.abort_all();
    }
    let elapsed = schedule.start.elapsed();
    progress.finish();

    let (lost, duplicates) = {
        let tracker = lock(&tracker);
        (tracker.outstanding, tracker.duplicates)
    };
    let mut stats = live.total(schedule.start);
    stats.add_errors(lost);
    let put = counters.counts();
    let summary = KinesisSummary {
        summary: stats.summary(elapsed),
        put,
        lost,
        duplicates,
    };
    let s = &summary.summary;
    let l = &s.latency_ms;
    let dead: u64 = s
        .statuses
        .iter()
        .filter(|(k, _)| *k != "scored")
        .map(|(_, n)| n)
        .sum();
    println!(
        "kinesis open loop {}/s{}: scored {} of {} put ({} Kinesis records in {} calls), dead letters {}, lost {}, \
         put failed {}, retried {}, dropped {}, duplicates {}, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        args.rate,
        if args.aggregate > 1 {
            format!(" aggregated x{}", args.aggregate)
        } else {
            String::new()
        },
        s.ok,
        summary.put.records,
        summary.put.kinesis_records,
        summary.put.calls,
        dead,
        lost,
        summary.put.failed_records,
        summary.put.retried_records,
        s.dropped,
        duplicates,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
    if let Some(e) = lock(&counters.first_error).as_ref() {
        eprintln!("first put error: {e}");
    }
    let title = format!("kinesis: {} records/s into {}", args.rate, args.stream);
    let failed = s.ok != slots;
    if failed && s.statuses.len() > 1 {
        eprintln!("not scored: {:?}", s.statuses);
    }
    args.output.finish(&summary, &stats, &title, failed)
}
