//! The install manifests are valid for the real API server: a server-side
//! dry run of `kubectl apply -k manifests/` succeeds without any warning.

use crate::support::{Identity, kubepam, repo_root};

#[test]
fn manifests_apply_cleanly_with_a_server_side_dry_run() {
    let cluster = kubepam();
    let manifests = repo_root().join("manifests");
    let output = cluster.kubectl(
        Identity::Admin,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "-k",
            manifests.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "dry run failed:\n{stderr}");
    assert!(
        !stderr.to_lowercase().contains("warning"),
        "warnings:\n{stderr}"
    );
    for kind in [
        "deployment.apps/kubepam",
        "service/kubepam",
        "poddisruptionbudget.policy/kubepam",
        "networkpolicy.networking.k8s.io/kubepam",
    ] {
        assert!(stdout.contains(kind), "{kind} missing from:\n{stdout}");
    }
}
