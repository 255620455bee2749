//! `hack/cluster.sh` (behind `make cluster` / `make cluster-down`): a second
//! `up` reuses the running cluster, and `down` leaves no process behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/cluster.sh")
}

fn cluster(args: &[&str], dir: &Path) -> std::process::Output {
    let output = Command::new(script())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cluster.sh {args:?} failed: {output:?}"
    );
    output
}

fn pid(dir: &Path, name: &str) -> u32 {
    std::fs::read_to_string(dir.join("run").join(format!("{name}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    // A zombie is not a server: only count processes that still run.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.split_whitespace()
            .nth(2)
            .is_some_and(|state| state != "Z")
    })
}

#[test]
fn up_is_idempotent_and_down_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let first = cluster(&["up"], dir.path());
    let (etcd, apiserver) = (pid(dir.path(), "etcd"), pid(dir.path(), "apiserver"));
    let port = std::fs::read_to_string(dir.path().join("run/apiserver.port")).unwrap();
    assert!(alive(etcd) && alive(apiserver));

    let second = cluster(&["up"], dir.path());
    assert_eq!(first.stdout, second.stdout, "same kubeconfig path");
    assert_eq!(
        pid(dir.path(), "apiserver"),
        apiserver,
        "the running apiserver was reused"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/apiserver.port")).unwrap(),
        port
    );
    let kubeconfig = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
    for context in [
        "admin", "alice", "bob", "carol", "dave", "ci-bot", "operator",
    ] {
        assert!(
            kubeconfig.contains(&format!("- name: {context}\n  context:")),
            "{context}"
        );
    }

    cluster(&["down"], dir.path());
    assert!(!alive(etcd), "etcd still running after down");
    assert!(!alive(apiserver), "kube-apiserver still running after down");
    let status = Command::new(script())
        .args(["status", "--dir"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "status must fail once the cluster is down"
    );
}
