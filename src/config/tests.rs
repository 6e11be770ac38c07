use clap::Parser;

use super::*;

fn args(extra: &[&str]) -> Args {
    let mut argv = vec!["infergate"];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).unwrap()
}

fn write_config(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(text)
}

/// A file under the target dir removed on drop; enough for these tests without a crate.
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn with(text: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "infergate-config-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn no_file_no_env_gives_the_defaults() {
    let config = Config::from_sources(&args(&[]), []).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(config.batching.max_batch_size, 64);
    assert_eq!(config.limits.body_limit_bytes, 6_291_456);
}

#[test]
fn file_then_env_then_flags() {
    let file = write_config(
        "bind = \"127.0.0.1:9000\"\n[batching]\nmax_batch_size = 16\nmax_queue_rows = 5000\n",
    );
    let path = file.0.to_str().unwrap();
    let env = [
        (
            "INFERGATE_BATCHING__MAX_BATCH_SIZE".to_owned(),
            "128".to_owned(),
        ),
        (
            "INFERGATE_MODEL__REVIEW_THRESHOLD".to_owned(),
            "0.4".to_owned(),
        ),
        ("INFERGATE_CONFIG".to_owned(), path.to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
    ];
    let config = Config::from_sources(
        &args(&[
            "--config",
            path,
            "--bind",
            "0.0.0.0:8081",
            "--log-format",
            "json",
            "--allow-anonymous",
        ]),
        env,
    )
    .unwrap();
    assert_eq!(config.bind.to_string(), "0.0.0.0:8081", "flag beats file");
    assert_eq!(config.batching.max_batch_size, 128, "env beats file");
    assert_eq!(config.batching.max_queue_rows, 5000, "file beats default");
    assert_eq!(config.model.review_threshold, 0.4);
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn every_bad_value_is_reported_with_its_key() {
    let file = write_config(
        "colour = \"blue\"\n\
         [batching]\nmax_batch_size = 0\n\
         [model]\nreview_threshold = 0.95\ndecline_threshold = 0.9\n\
         [limits]\nbody_limit = 5\n\
         [http]\nmax_connections = 0\nidle_timeout_ms = 0\nmax_concurrent_streams = 0\n",
    );
    let err = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), []).unwrap_err();
    let all = err.to_string();
    for needle in [
        "unknown key `colour`",
        "`limits`: unknown field `body_limit`",
        "`batching.max_batch_size` must be from 1",
        "`model.review_threshold` (0.95) must be <= `model.decline_threshold` (0.9)",
        "`http.max_connections` must be > 0",
        "`http.idle_timeout_ms` must be > 0",
        "`http.max_concurrent_streams` must be > 0",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(err.0.len(), 7, "{all}");
}

#[test]
fn wrong_types_and_bad_env_names_are_reported() {
    let env = [
        (
            "INFERGATE_BATCHING__DEADLINE_MS".to_owned(),
            "soon".to_owned(),
        ),
        ("INFERGATE_BIND__PORT".to_owned(), "1".to_owned()),
    ];
    let err = Config::from_sources(&args(&[]), env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`batching`"), "{err}");
    assert!(err.contains("deadline_ms"), "{err}");
    assert!(err.contains("`bind`"), "{err}");
}

#[test]
fn a_missing_file_is_an_error() {
    let err =
        Config::from_sources(&args(&["--config", "/nonexistent/infergate.toml"]), []).unwrap_err();
    assert!(err.to_string().contains("cannot read config file"), "{err}");
}

#[test]
fn a_public_bind_without_credentials_refuses_to_start() {
    let err = Config::from_sources(&args(&["--bind", "0.0.0.0:8080"]), [])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to serve 0.0.0.0:8080 without credentials"),
        "{err}"
    );
    assert!(err.contains("--allow-anonymous"), "{err}");

    let allowed = Config::from_sources(&args(&["--bind", "0.0.0.0:8080", "--allow-anonymous"]), []);
    assert!(allowed.unwrap().allow_anonymous);

    let with_key = [(
        "INFERGATE_AUTH__API_KEYS".to_owned(),
        "[{name = \"checkout\", key_env = \"CHECKOUT_KEY\", rate = 50}]".to_owned(),
    )];
    let config = Config::from_sources(&args(&["--bind", "0.0.0.0:8080"]), with_key).unwrap();
    assert_eq!(config.auth.api_keys[0].name, "checkout");
    let plan = config.auth.api_keys[0].plan();
    assert_eq!(
        (plan.rate, plan.burst),
        (50, 50),
        "burst defaults to the rate"
    );
}

#[test]
fn credential_entries_are_checked() {
    let file = write_config(
        "[[auth.api_keys]]\nname = \"a\"\nkey_sha256 = \"abc\"\n\
         [[auth.api_keys]]\nname = \"a\"\nkey_env = \"K\"\nkey_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n\
         [[auth.sigv4]]\naccess_key_id = \"AKID\"\nsecret_env = \"\"\nquota_per_day = 0\n",
    );
    let err = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), [])
        .unwrap_err()
        .to_string();
    for needle in [
        "`auth.api_keys[0].key_sha256` must be 64 hex digits",
        "`auth.api_keys[1].name` must be non-empty and unique",
        "`auth.api_keys[1]` needs exactly one of `key_sha256` and `key_env`",
        "`auth.sigv4[0].secret_env` must name an environment variable",
        "`auth.sigv4[0].quota_per_day` must be >= 1",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn sagemaker_content_types_parse_as_their_media_types() {
    for (text, codec) in [("text/csv", Codec::Csv), ("application/json", Codec::Json)] {
        let file = write_config(&format!(
            "[model]\nkind = \"sagemaker\"\n[model.sagemaker]\nendpoint_name = \"e\"\ncontent_type = \"{text}\"\n"
        ));
        let config =
            Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), []).unwrap();
        assert_eq!(config.model.sagemaker.content_type, codec);
        assert_eq!(codec.media_type(), text);
    }
}

#[test]
fn kinesis_stall_timeout_and_checkpoint_reset_have_defaults_and_are_checked() {
    let file = write_config("[kinesis]\nstream = \"tx\"\n");
    let config = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), []).unwrap();
    let kinesis = config.kinesis.unwrap();
    assert_eq!(kinesis.stall_timeout_ms, 30_000);
    assert!(!kinesis.reset_invalid_checkpoints);

    let file = write_config(
        "[kinesis]\nstream = \"tx\"\nstall_timeout_ms = 500\nreset_invalid_checkpoints = true\n",
    );
    let err = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), [])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "`kinesis.stall_timeout_ms` (500) must be > `kinesis.poll_interval_ms` (1000)"
        ),
        "{err}"
    );
    let env = [(
        "INFERGATE_KINESIS__RESET_INVALID_CHECKPOINTS".to_owned(),
        "true".to_owned(),
    )];
    let file = write_config("[kinesis]\nstream = \"tx\"\n");
    let config = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), env).unwrap();
    assert!(config.kinesis.unwrap().reset_invalid_checkpoints);
}

#[test]
fn endpoint_aliases_and_admin_bind_are_checked() {
    let file = write_config(
        "bind = \"127.0.0.1:9000\"\nadmin_bind = \"127.0.0.1:9000\"\n\
         [model]\nendpoint_aliases = [\"fraud-v2\", \"*\", \"-bad\", \"\"]\n",
    );
    let err = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), []).unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("`admin_bind` must differ from `bind`"),
        "{all}"
    );
    assert!(all.contains("\"-bad\" is not an endpoint name"), "{all}");
    assert!(all.contains("\"\" is not an endpoint name"), "{all}");
    assert_eq!(err.0.len(), 3, "{all}");

    let file = write_config(
        "admin_bind = \"127.0.0.1:9001\"\n[model]\nendpoint_aliases = [\"fraud-v2\", \"*\"]\n",
    );
    let config = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), []).unwrap();
    assert_eq!(config.admin_bind.unwrap().port(), 9001);
    assert_eq!(config.model.endpoint_aliases, ["fraud-v2", "*"]);
}

#[test]
fn a_dynamodb_lease_table_and_its_settings_parse_and_are_checked() {
    let file = write_config(
        "[kinesis]\nstream = \"tx\"\nworker_id = \"gw-a\"\n\
         checkpoint = { kind = \"dynamodb\", table = \"leases\", create = true, endpoint_url = \"http://127.0.0.1:4567\" }\n\
         [kinesis.leases]\nfailover_ms = 3000\nmax_leases_per_worker = 8\n",
    );
    let config = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), []).unwrap();
    let kinesis = config.kinesis.unwrap();
    assert_eq!(
        kinesis.checkpoint,
        super::CheckpointConfig::Dynamodb {
            table: "leases".into(),
            create: true,
            endpoint_url: Some("http://127.0.0.1:4567".into()),
        }
    );
    assert_eq!(kinesis.worker_id.as_deref(), Some("gw-a"));
    assert_eq!(kinesis.leases.failover_ms, 3000);
    assert_eq!(kinesis.leases.max_leases_per_worker, 8);

    let file = write_config(
        "[kinesis]\nstream = \"tx\"\nworker_id = \"\"\n\
         checkpoint = { kind = \"dynamodb\", table = \"x\" }\n[kinesis.leases]\nfailover_ms = 100\n",
    );
    let err = Config::from_sources(&args(&["--config", file.0.to_str().unwrap()]), [])
        .unwrap_err()
        .to_string();
    for needle in [
        "`kinesis.checkpoint.table` must be a DynamoDB table name (3 to 255 characters). Given: \"x\"",
        "`kinesis.leases.failover_ms` must be >= 300. Given: 100",
        "`kinesis.worker_id` must not be empty",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}
