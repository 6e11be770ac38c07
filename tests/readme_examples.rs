//! The README's client examples, run as written (only the gateway's address swapped for the
//! test's) against the default gateway: anonymous on loopback, the embedded model.

mod common;

use std::process::Command;

use common::{repo_path, spawn_app, test_venv_bin};
use infergate::Config;

/// The fenced code blocks of `lang` in the README section headed `section`.
fn blocks(section: &str, lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let start = readme
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("no README section {section:?}"));
    let body = &readme[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
    let fence = format!("```{lang}\n");
    body.split(&fence)
        .skip(1)
        .map(|rest| rest[..rest.find("```").unwrap()].to_owned())
        .collect()
}

/// Runs an example in `dir`, with no AWS profile or instance metadata to fall back on.
fn run(what: &str, command: &mut Command, dir: &std::path::Path) -> std::process::Output {
    let output = command
        .current_dir(dir)
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn venv_path() -> String {
    let bin = test_venv_bin("python");
    let dir = bin.parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_and_boto3_examples_run_against_the_default_gateway() {
    let app = spawn_app(Config::default()).await;
    let url = app.url("");
    let url = url.trim_end_matches('/');
    let dir = std::env::temp_dir().join(format!("infergate-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let sh = blocks("Point existing clients at infergate", "sh");
    assert_eq!(sh.len(), 1, "one shell example");
    let script = sh[0].replace("http://127.0.0.1:8080", url);
    let mut bash = Command::new("bash");
    bash.args(["-euo", "pipefail", "-c", &script])
        .env("PATH", venv_path());
    run("the AWS CLI example", &mut bash, &dir);
    let scores = std::fs::read_to_string(dir.join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 2, "one score per row: {scores:?}");

    let python = blocks("Point existing clients at infergate", "python");
    assert_eq!(python.len(), 1, "one Python example");
    let program = python[0].replace("http://127.0.0.1:8080", url);
    let mut python3 = Command::new(test_venv_bin("python"));
    // Dummy credentials, as a newcomer's machine has some or none.
    python3
        .args(["-c", &program])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-real-secret");
    let output = run("the boto3 example", &mut python3, &dir);
    // The example's comment shows what it prints.
    let printed = String::from_utf8_lossy(&output.stdout);
    let shown = python[0].split("# ").last().unwrap().trim().to_owned();
    assert_eq!(printed.trim(), shown, "the README shows what boto3 prints");
    std::fs::remove_dir_all(&dir).unwrap();
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explanation_example_runs_against_the_default_gateway() {
    let app = spawn_app(Config::default()).await;
    let url = app.url("");
    let sh = blocks("Why was it declined?", "sh");
    assert_eq!(sh.len(), 1, "one shell example");
    let script = sh[0].replace("http://127.0.0.1:8080", url.trim_end_matches('/'));
    let dir = std::env::temp_dir();
    let output = run(
        "the explanation example",
        Command::new("bash").args(["-euo", "pipefail", "-c", &script]),
        &dir,
    );
    let score: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(score["decision"], "decline");
    let reasons: Vec<&str> = score["explanation"]["reason_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    // As the README shows them.
    assert_eq!(reasons, ["R04", "R08", "R06"]);
}
