//! The `[fleet]` section: what replicas behind one load balancer share through Redis.

use serde::{Deserialize, Serialize};

/// Usage plans, quotas, the global limit and the response cache shared by every replica
/// through one Redis (ElastiCache, MemoryDB). Absent: each replica decides alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://host:port[/db]`, or `rediss://` for TLS.
    pub redis_url: String,
    /// Bound on every Redis call; past it the call counts as failed.
    #[serde(default = "default_timeout")]
    pub redis_timeout_ms: u64,
    /// What a replica does while Redis cannot be reached.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// Replicas expected: while Redis is unreachable, each applies `rate / replicas_hint`
    /// (and the same share of the global limit and daily quotas) on its own.
    #[serde(default = "default_replicas_hint")]
    pub replicas_hint: u32,
    /// Prefix of every Redis key (one hash tag, so a Redis Cluster keeps them in one slot).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Share the response cache through Redis too (a second level behind the local one).
    #[serde(default = "default_true")]
    pub shared_cache: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// Decide with each replica's own limits at `rate / replicas_hint` (logged and counted).
    #[default]
    Local,
    /// Answer 503 `limits_unavailable`.
    Deny,
}

impl OnRedisError {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Deny => "deny",
        }
    }
}

fn default_timeout() -> u64 {
    20
}

fn default_replicas_hint() -> u32 {
    1
}

fn default_key_prefix() -> String {
    "infergate".to_owned()
}

fn default_true() -> bool {
    true
}
