//! The command line of `loadtest kinesis`.

use std::path::PathBuf;

use crate::Output;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("results").args(["results_file", "output_stream"])))]
pub struct KinesisArgs {
    /// The Kinesis endpoint (kinesalite, LocalStack); default: AWS's for the region.
    #[arg(long)]
    pub(super) endpoint_url: Option<String>,
    /// The stream the gateway's consumer reads.
    #[arg(long)]
    pub(super) stream: String,
    /// Default: the AWS chain's (AWS_REGION, profile), else us-east-1.
    #[arg(long)]
    pub(super) region: Option<String>,
    /// Transactions (user records) per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(super) rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub(super) seconds: f64,
    /// Pack this many transactions into each Kinesis record (KPL aggregation; 1: none).
    #[arg(long, default_value_t = 1)]
    pub(super) aggregate: usize,
    /// Longest a due record waits for others to share its `PutRecords` call.
    #[arg(long, default_value_t = 50)]
    pub(super) linger_ms: u64,
    /// `PutRecords` calls in flight at once; beyond, their records are counted as dropped.
    #[arg(long, default_value_t = 64)]
    pub(super) max_in_flight: usize,
    /// The gateway's results file (`kinesis.sink`, kind file), read from where it ends at the
    /// start of the run. This or `--output-stream` is required.
    #[arg(long)]
    pub(super) results_file: Option<PathBuf>,
    /// The gateway's dead-letter file (`kinesis.dead_letter`, kind file), read the same way.
    #[arg(long)]
    pub(super) dead_letter_file: Option<PathBuf>,
    /// The gateway's output stream (`kinesis.sink`, kind kinesis), read on every shard from
    /// LATEST at the start of the run (dead letters too, if they go there).
    #[arg(long)]
    pub(super) output_stream: Option<String>,
    /// Wait after a `GetRecords` on the output stream that found nothing. AWS allows 5 calls a
    /// second per shard; the wait adds up to as much to the latency measured.
    #[arg(long, default_value_t = 200)]
    pub(super) poll_ms: u64,
    /// After the last put, how long to wait for the results still outstanding; those never seen
    /// count as lost.
    #[arg(long, default_value_t = 10.0)]
    pub(super) drain_seconds: f64,
    /// Create the stream (and the output stream) with this many shards, unless it exists, and
    /// wait until it is active. With `--seconds 0`, only that.
    #[arg(long)]
    pub(super) create_stream: Option<i32>,
    #[arg(long, default_value_t = 0.01)]
    pub(super) fraud_rate: f64,
    #[arg(long, default_value_t = 7)]
    pub(super) seed: u64,
    #[command(flatten)]
    pub(super) output: Output,
}
