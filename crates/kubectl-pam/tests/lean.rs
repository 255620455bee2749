//! The plugin links the core and a Kubernetes client, and none of the
//! operator's servers, mail, metrics, certificate or controller crates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// What only the operator needs.
const OPERATOR_ONLY: [&str; 7] = [
    "kubepam",
    "kube-runtime",
    "axum",
    "axum-server",
    "lettre",
    "rcgen",
    "prometheus-client",
];

#[test]
fn the_plugin_links_the_core_and_the_client_only() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--package",
            "kubectl-pam",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let tree = String::from_utf8(output.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for needed in ["kubepam-core", "kube-client"] {
        assert!(crates.contains(&needed), "{needed} missing: {crates:?}");
    }
    let found: Vec<&&str> = OPERATOR_ONLY
        .iter()
        .filter(|name| crates.contains(name))
        .collect();
    assert!(found.is_empty(), "kubectl-pam links {found:?}:\n{tree}");
}
