//! The core decides and never does IO: no Kubernetes client or controller
//! runtime, no async executor, no HTTP or mail stack among its dependencies.
//! A decision that wanted to call the API server would not compile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Crates that carry IO, and so belong to the operator or the plugin.
const FORBIDDEN: [&str; 12] = [
    "kube-client",
    "kube-runtime",
    "tokio",
    "hyper",
    "hyper-util",
    "tower",
    "axum",
    "axum-server",
    "reqwest",
    "lettre",
    "rustls",
    "prometheus-client",
];

#[test]
fn the_core_depends_on_no_client_runtime_or_async_crate() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--package",
            "kubepam-core",
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
    assert!(
        crates.contains(&"kube-core"),
        "the tree was read: {crates:?}"
    );
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|f| crates.contains(f)).collect();
    assert!(
        found.is_empty(),
        "kubepam-core must stay free of IO, but depends on {found:?}:\n{tree}"
    );
}
