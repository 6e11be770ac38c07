//! The HTTP server's sections: `[limits]` and `[http]`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Transactions per second across every caller, stream included; 0 = unlimited.
    pub global_rps: u32,
    /// Tokens available at once for the global limit; default (0): `global_rps`.
    pub global_burst: u32,
    pub body_limit_bytes: usize,
    /// Most transactions in one score-batch request.
    pub max_batch_items: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            global_rps: 0,
            global_burst: 0,
            body_limit_bytes: 6 * 1024 * 1024,
            max_batch_items: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Longest a request may take end to end, past the scoring deadline (0 = deadline + 5 s).
    pub request_timeout_ms: u64,
    /// Longest graceful shutdown waits for in-flight requests. Past it, the rows still queued
    /// or in a model call are answered 503 `shutting_down`, and the connections left are
    /// closed (at most about half a second later).
    pub shutdown_grace_ms: u64,
    /// Longest a connection may take to send a request's headers, counted from when it is
    /// ready for a request: this stops slow-loris clients. HTTP/1 starts this clock whenever
    /// a connection waits for its next request, so it also closes idle HTTP/1 keep-alive
    /// connections; an HTTP/2 connection must send its first request's headers within it.
    pub header_read_timeout_ms: u64,
    /// Longest a connection may stay open with no request in progress (HTTP/1 and HTTP/2;
    /// HTTP/2 connections get a GOAWAY). HTTP/2 connections are also sent a keep-alive PING
    /// every half of this and closed when one is not answered within another half, so a peer
    /// that has gone is noticed even while its requests wait.
    pub idle_timeout_ms: u64,
    /// Most connections open at once; further clients wait in the listen backlog until one
    /// closes. Each open connection holds about 20 KB (more while its request waits), so this
    /// bounds the memory a flood of connections can take.
    pub max_connections: usize,
    /// Longest a client may take to send a request's body once its headers are in (408 past
    /// it): a body that trickles or stops short cannot hold a request open.
    pub body_read_timeout_ms: u64,
    /// Most requests (streams) in progress at once on one HTTP/2 connection; more are refused
    /// until one ends.
    pub max_concurrent_streams: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 0,
            shutdown_grace_ms: 30_000,
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 4096,
            body_read_timeout_ms: 10_000,
            max_concurrent_streams: 100,
        }
    }
}
