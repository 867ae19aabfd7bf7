//! The deployment files in `deploy/`: the Kubernetes manifests validate
//! against a named Kubernetes version's schemas (`kubernetes-validate`,
//! which the test script installs), strictly, so a typo fails; and every
//! flag they pass to a Volley binary is one that binary has.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use volley_tests::processes::binary;

/// The Kubernetes version the manifests are written for.
const KUBERNETES_VERSION: &str = "1.33.0";

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        // kustomize's own file is not a Kubernetes object.
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

fn validate(files: &[PathBuf]) -> Output {
    Command::new("kubernetes-validate")
        .args(["-k", KUBERNETES_VERSION, "--strict"])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run kubernetes-validate ({e}): pip install kubernetes-validate \
                 (./test.sh installs it)"
            )
        })
}

#[test]
fn the_kubernetes_manifests_validate_strictly_against_the_named_version() {
    let output = validate(&manifests());
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_typo_in_a_manifest_fails_validation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = manifests()
        .into_iter()
        .find(|p| p.ends_with("scheduler.yaml"))
        .expect("scheduler.yaml");
    let text = std::fs::read_to_string(&scheduler).expect("read");
    let typo = dir.path().join("scheduler.yaml");
    std::fs::write(&typo, text.replace("containerPort:", "contanerPort:")).expect("write");
    assert!(!validate(&[typo]).status.success());
}

#[test]
fn every_flag_the_manifests_pass_is_one_the_binaries_have() {
    let mut help = String::new();
    for (name, args) in [
        ("volley-scheduler", vec!["--help"]),
        ("volley-executor", vec!["--help"]),
        ("volley", vec!["health", "--help"]),
    ] {
        let output = Command::new(binary(name))
            .args(&args)
            .output()
            .expect("run --help");
        help.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    for file in manifests() {
        let text = std::fs::read_to_string(&file).expect("read");
        for line in text.lines() {
            let Some(flag) = line.trim().strip_prefix("- --") else {
                continue;
            };
            let flag = format!("--{}", flag.split('=').next().unwrap_or(flag));
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{}: {flag} is not a flag of the binaries",
                file.display()
            );
        }
    }
}
