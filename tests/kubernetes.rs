//! deploy/kubernetes: every object a deployment needs, probes on the gateway's own routes and
//! ports, a non-root read-only container, and a ConfigMap whose TOML the gateway accepts.

mod common;

use std::process::Command;

use clap::Parser;
use common::{repo_path, test_venv_bin};
use infergate::config::{Args, Config};
use serde_json::Value;

fn manifests() -> Vec<Value> {
    let output = Command::new(test_venv_bin("python"))
        .arg(repo_path("tests/clients/kubernetes_manifests.py"))
        .arg(repo_path("deploy/kubernetes"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_manifests_deploy_a_gateway_the_way_it_runs() {
    let docs = manifests();
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        of_kind(&docs, kind);
    }
    let deployment = of_kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    for side in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                container["resources"][side][what].is_string(),
                "{side}.{what}"
            );
        }
    }
    let ports: Vec<(&str, u64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    for (probe, path) in [
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
        ("startupProbe", "/health/live"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = get["port"].as_str().unwrap();
        assert!(
            ports.iter().any(|(name, _)| *name == port),
            "{probe} port {port}"
        );
    }

    // The ConfigMap's TOML is a configuration the gateway accepts, listening where the
    // container ports and the probes say, with every key variable the pod provides.
    let toml = of_kind(&docs, "ConfigMap")["data"]["infergate.toml"]
        .as_str()
        .unwrap();
    let file = std::env::temp_dir().join(format!("infergate-k8s-{}.toml", std::process::id()));
    std::fs::write(&file, toml).unwrap();
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                "from-the-secret".to_owned(),
            )
        })
        .collect();
    let args = Args::parse_from(["infergate", "--config", file.to_str().unwrap()]);
    let config =
        Config::from_sources(&args, env.clone()).expect("the gateway accepts the ConfigMap");
    std::fs::remove_file(&file).unwrap();
    let port_of = |name: &str| ports.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(u64::from(config.bind.port()), port_of("http"));
    assert_eq!(
        u64::from(config.admin_bind.unwrap().port()),
        port_of("admin")
    );
    for key in &config.auth.api_keys {
        let var = key.key_env.as_deref().unwrap();
        assert!(
            env.iter().any(|(name, _)| name == var),
            "{var} comes from the Secret"
        );
    }
    let grace_s = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        config.http.shutdown_grace_ms / 1000 < grace_s,
        "shutdown finishes within the pod's grace period"
    );

    let service = of_kind(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"], "http",
        "the admin port stays private"
    );
    let hpa = of_kind(&docs, "HorizontalPodAutoscaler");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let pdb = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}
