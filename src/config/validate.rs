//! Validation: every range and cross-field check on a loaded [`Config`], each problem reported
//! with its key so that all of them show at once.

use std::collections::HashSet;

use super::{Config, InitialPosition, ModelKind};
use crate::middleware::auth::parse_key_sha256;
use crate::middleware::rate_limit::Plan;

impl Config {
    /// Cross-field and range checks.
    pub(super) fn check(&self, errors: &mut Vec<String>) {
        let m = &self.model;
        for (key, t) in [
            ("model.review_threshold", m.review_threshold),
            ("model.decline_threshold", m.decline_threshold),
        ] {
            if !(0.0..=1.0).contains(&t) {
                errors.push(format!("`{key}` must be within 0..=1. Given: {t}"));
            }
        }
        if m.review_threshold > m.decline_threshold {
            errors.push(format!(
                "`model.review_threshold` ({}) must be <= `model.decline_threshold` ({})",
                m.review_threshold, m.decline_threshold
            ));
        }
        for alias in &m.endpoint_aliases {
            if alias != "*" && !is_endpoint_name(alias) {
                errors.push(format!(
                    "`model.endpoint_aliases`: {alias:?} is not an endpoint name (1 to 63 \
                     letters, digits and inner hyphens) or \"*\""
                ));
            }
        }
        if m.kind == ModelKind::Sagemaker {
            let sm = &m.sagemaker;
            if sm.endpoint_name.is_empty() {
                errors.push(
                    "`model.sagemaker.endpoint_name` is required when `model.kind = \"sagemaker\"`"
                        .to_owned(),
                );
            }
            if sm.timeout_ms == 0 || sm.max_attempts == 0 || sm.max_payload_bytes < 1024 {
                errors.push(
                    "`model.sagemaker`: `timeout_ms` and `max_attempts` must be > 0, \
                     `max_payload_bytes` >= 1024"
                        .to_owned(),
                );
            }
        }
        let b = &self.batching;
        for (key, value, min, max) in [
            ("batching.max_batch_size", b.max_batch_size, 1, 100_000),
            (
                "batching.max_concurrent_batches",
                b.max_concurrent_batches,
                1,
                1024,
            ),
            ("batching.max_queue_rows", b.max_queue_rows, 1, 10_000_000),
        ] {
            if !(min..=max).contains(&value) {
                errors.push(format!(
                    "`{key}` must be from {min} to {max}. Given: {value}"
                ));
            }
        }
        if b.deadline_ms == 0 {
            errors.push("`batching.deadline_ms` must be > 0".to_owned());
        }
        if b.max_queue_delay_ms >= b.deadline_ms {
            errors.push(format!(
                "`batching.max_queue_delay_ms` ({}) must be < `batching.deadline_ms` ({})",
                b.max_queue_delay_ms, b.deadline_ms
            ));
        }
        self.check_auth(errors);
        let e = &self.explanations;
        if e.top == 0 || e.top > crate::domain::N_FEATURES {
            errors.push(format!(
                "`explanations.top` must be from 1 to {}. Given: {}",
                crate::domain::N_FEATURES,
                e.top
            ));
        }
        for (feature, reason) in &e.reasons {
            if reason.code.is_empty() || reason.text.is_empty() {
                errors.push(format!(
                    "`explanations.reasons.{feature}` needs a non-empty `code` and `text`"
                ));
            }
        }
        if let Some(f) = &self.fleet {
            if let Err(e) = redis::Client::open(f.redis_url.as_str()) {
                errors.push(format!("`fleet.redis_url` is not a Redis URL: {e}"));
            }
            if f.redis_timeout_ms == 0 {
                errors.push("`fleet.redis_timeout_ms` must be >= 1".to_owned());
            }
            if f.replicas_hint == 0 {
                errors.push("`fleet.replicas_hint` must be >= 1".to_owned());
            }
            if f.key_prefix.is_empty() || f.key_prefix.contains(['{', '}']) {
                errors.push(format!(
                    "`fleet.key_prefix` must be non-empty, without braces. Given: {:?}",
                    f.key_prefix
                ));
            }
        }
        if let Some(k) = &self.kinesis {
            if k.stream.is_empty() {
                errors.push("`kinesis.stream` must name a stream (or give its ARN)".to_owned());
            }
            if !(1..=10_000).contains(&k.max_records) {
                errors.push(format!(
                    "`kinesis.max_records` must be from 1 to 10000. Given: {}",
                    k.max_records
                ));
            }
            if k.stall_timeout_ms <= k.poll_interval_ms {
                errors.push(format!(
                    "`kinesis.stall_timeout_ms` ({}) must be > `kinesis.poll_interval_ms` ({}): \
                     an idle shard is read once per poll",
                    k.stall_timeout_ms, k.poll_interval_ms
                ));
            }
            if let super::CheckpointConfig::Dynamodb { table, .. } = &k.checkpoint
                && !(3..=255).contains(&table.len())
            {
                errors.push(format!(
                    "`kinesis.checkpoint.table` must be a DynamoDB table name (3 to 255 \
                     characters). Given: {table:?}"
                ));
            }
            if k.leases.failover_ms < 300 {
                errors.push(format!(
                    "`kinesis.leases.failover_ms` must be >= 300. Given: {}",
                    k.leases.failover_ms
                ));
            }
            if k.worker_id.as_ref().is_some_and(String::is_empty) {
                errors.push("`kinesis.worker_id` must not be empty".to_owned());
            }
            match (k.initial_position, &k.initial_timestamp) {
                (InitialPosition::AtTimestamp, None) => errors
                    .push("`kinesis.initial_timestamp` is required with `AT_TIMESTAMP`".to_owned()),
                (_, Some(t))
                    if time::OffsetDateTime::parse(
                        t,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_err() =>
                {
                    errors.push(format!(
                        "`kinesis.initial_timestamp` must be RFC 3339. Given: {t}"
                    ));
                }
                _ => {}
            }
        }
        let h = &self.http;
        for (key, value) in [
            ("http.header_read_timeout_ms", h.header_read_timeout_ms),
            ("http.idle_timeout_ms", h.idle_timeout_ms),
            ("http.body_read_timeout_ms", h.body_read_timeout_ms),
            ("http.max_connections", h.max_connections as u64),
            (
                "http.max_concurrent_streams",
                u64::from(h.max_concurrent_streams),
            ),
        ] {
            if value == 0 {
                errors.push(format!("`{key}` must be > 0"));
            }
        }
        let l = &self.limits;
        if l.body_limit_bytes < 1024 {
            errors.push(format!(
                "`limits.body_limit_bytes` must be >= 1024. Given: {}",
                l.body_limit_bytes
            ));
        }
        if l.max_batch_items == 0 || l.max_batch_items > b.max_queue_rows {
            errors.push(format!(
                "`limits.max_batch_items` must be from 1 to `batching.max_queue_rows` ({}). Given: {}",
                b.max_queue_rows, l.max_batch_items
            ));
        }
    }

    fn check_auth(&self, errors: &mut Vec<String>) {
        if self.admin_bind == Some(self.bind) && self.bind.port() != 0 {
            errors.push(format!(
                "`admin_bind` must differ from `bind` (both {})",
                self.bind
            ));
        }
        if !self.has_credentials() && !self.allow_anonymous && !self.bind.ip().is_loopback() {
            errors.push(format!(
                "refusing to serve {} without credentials: anyone who can reach it could use \
                 it. Configure `[[auth.api_keys]]` or `[[auth.sigv4]]`, bind a loopback \
                 address, or pass --allow-anonymous",
                self.bind
            ));
        }
        let mut names = HashSet::new();
        for (i, key) in self.auth.api_keys.iter().enumerate() {
            let at = format!("auth.api_keys[{i}]");
            if key.name.is_empty() || !names.insert(key.name.clone()) {
                errors.push(format!("`{at}.name` must be non-empty and unique"));
            }
            match (&key.key_sha256, &key.key_env) {
                (Some(hash), None) => {
                    if parse_key_sha256(hash).is_none() {
                        errors.push(format!(
                            "`{at}.key_sha256` must be 64 hex digits (sha256sum of the key)"
                        ));
                    }
                }
                (None, Some(_)) => {}
                _ => errors.push(format!(
                    "`{at}` needs exactly one of `key_sha256` and `key_env`"
                )),
            }
            check_plan(&at, key.plan(), errors);
        }
        let mut akids = HashSet::new();
        for (i, key) in self.auth.sigv4.iter().enumerate() {
            let at = format!("auth.sigv4[{i}]");
            if key.access_key_id.is_empty() || !akids.insert(key.access_key_id.clone()) {
                errors.push(format!("`{at}.access_key_id` must be non-empty and unique"));
            }
            if !names.insert(key.name().to_owned()) {
                errors.push(format!("`{at}.name` must be unique among all callers"));
            }
            if key.secret_env.is_empty() {
                errors.push(format!(
                    "`{at}.secret_env` must name an environment variable"
                ));
            }
            check_plan(&at, key.plan(), errors);
        }
        if self.limits.global_rps == 0 && self.limits.global_burst != 0 {
            errors.push("`limits.global_burst` needs `limits.global_rps`".to_owned());
        }
    }
}

fn check_plan(at: &str, plan: Plan, errors: &mut Vec<String>) {
    if plan.rate > 0 && plan.burst == 0 {
        errors.push(format!("`{at}.burst` must be >= 1 when `rate` is set"));
    }
    if plan.quota_per_day == Some(0) {
        errors.push(format!(
            "`{at}.quota_per_day` must be >= 1 (omit it for no quota)"
        ));
    }
}

/// SageMaker's endpoint name pattern: `^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`.
fn is_endpoint_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
