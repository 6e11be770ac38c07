//! The command line: flags for the few settings worth overriding per run, each also readable from
//! its `INFERGATE_*` variable; they win over the file and the environment (see `load`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::LogFormat;

/// infergate: a real-time scoring gateway (REST and stream) in front of an XGBoost model.
#[derive(Debug, Parser)]
#[command(name = "infergate", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML configuration file. Every key has a default, so it may be omitted; keys are
    /// documented in the README. Unknown keys are refused.
    #[arg(long, env = "INFERGATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Address to listen on. Binding anything but loopback exposes the gateway to the network.
    #[arg(long, env = "INFERGATE_BIND", global = true)]
    pub bind: Option<SocketAddr>,

    /// Model file to serve (XGBoost JSON, UBJSON or a SageMaker model.tar.gz) instead of the
    /// fraud model compiled into the binary.
    #[arg(long, env = "INFERGATE_MODEL__PATH", global = true)]
    pub model: Option<PathBuf>,

    /// Serve callers without credentials even on a non-loopback address. Without it, a
    /// non-loopback bind with no `[[auth.api_keys]]` / `[[auth.sigv4]]` refuses to start.
    #[arg(long, env = "INFERGATE_ALLOW_ANONYMOUS", global = true)]
    pub allow_anonymous: bool,

    /// Log format: human-readable or one JSON object per line (for log shippers).
    #[arg(long, env = "INFERGATE_LOG__FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the gateway (the default).
    Serve,
    /// Print the OpenAPI document and exit.
    Openapi,
}
