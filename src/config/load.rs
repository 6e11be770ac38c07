//! Layering: the TOML file (every key optional), overridden by `INFERGATE_*` environment
//! variables, overridden by command-line flags, then validated (see `validate`).

use std::path::Path;

use super::{Args, Config, ConfigError};

/// Prefix of the environment variables that set configuration keys.
const ENV_PREFIX: &str = "INFERGATE_";
/// Environment variables that configure the process rather than the config tree.
const ENV_NOT_KEYS: [&str; 1] = ["INFERGATE_CONFIG"];

impl Config {
    /// Builds the configuration from a file (if any), the environment, then the flags.
    pub fn load(args: &Args) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_sources(args, env)
    }

    /// [`Config::load`] with the environment passed in, for tests.
    pub fn from_sources(
        args: &Args,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let mut tree = match &args.config {
            Some(path) => read_toml(path).unwrap_or_else(|e| {
                errors.push(e);
                toml::Table::new()
            }),
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Err(e) = apply_env(&mut tree, &name, &value) {
                errors.push(e);
            }
        }
        let mut config = from_table(tree, &mut errors);
        if let Some(bind) = args.bind {
            config.bind = bind;
        }
        if let Some(model) = &args.model {
            config.model.path = Some(model.clone());
        }
        if let Some(format) = args.log_format {
            config.log.format = format;
        }
        if args.allow_anonymous {
            config.allow_anonymous = true;
        }
        config.check(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(errors))
        }
    }
}

fn read_toml(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Deserializes each section on its own, so that a bad key in one section does not hide
/// another section's problems.
fn from_table(mut tree: toml::Table, errors: &mut Vec<String>) -> Config {
    let mut config = Config::default();
    macro_rules! section {
        ($key:literal, $field:ident) => {
            if let Some(value) = tree.remove($key) {
                match value.try_into() {
                    Ok(v) => config.$field = v,
                    Err(e) => errors.push(format!("`{}`: {}", $key, one_line(&e))),
                }
            }
        };
    }
    section!("bind", bind);
    section!("admin_bind", admin_bind);
    section!("allow_anonymous", allow_anonymous);
    section!("auth", auth);
    section!("model", model);
    section!("batching", batching);
    section!("limits", limits);
    section!("cache", cache);
    section!("explanations", explanations);
    section!("http", http);
    section!("kinesis", kinesis);
    section!("fleet", fleet);
    section!("log", log);
    for key in tree.keys() {
        errors.push(format!(
            "unknown key `{key}` (known: bind, admin_bind, allow_anonymous, auth, model, batching, \
             limits, cache, explanations, http, log, kinesis, fleet)"
        ));
    }
    config
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Applies `INFERGATE_BATCHING__MAX_BATCH_SIZE=128` as `batching.max_batch_size = 128`. The
/// value is read as a TOML value when it is one (numbers, booleans), else as a string.
fn apply_env(tree: &mut toml::Table, name: &str, value: &str) -> Result<(), String> {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if ENV_NOT_KEYS.contains(&name) {
        return Ok(());
    }
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("environment variable {name}: empty key segment"));
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().expect("split on a non-empty string");
    let mut table = tree;
    for key in parents {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(format!(
                    "environment variable {name}: `{key}` is not a section"
                ));
            }
        };
    }
    table.insert(last.clone(), parsed);
    Ok(())
}
