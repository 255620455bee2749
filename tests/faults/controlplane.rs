//! The test cluster's own processes, as `hack/cluster.sh` started them (pid
//! files in `<dir>/run`): kube-apiserver killed and started again with its
//! own command line, etcd paused and resumed.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::{Instant, sleep};

use crate::support::TestCluster;

/// The processes of one cluster started by `hack/cluster.sh`.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
}

impl ControlPlane {
    pub fn of(cluster: &TestCluster) -> Self {
        let dir = cluster
            .kubeconfig_path
            .parent()
            .expect("the kubeconfig lies in the cluster's directory")
            .to_path_buf();
        assert!(
            dir.join("run/apiserver.pid").is_file() && dir.join("run/etcd.pid").is_file(),
            "{} holds no run/apiserver.pid and run/etcd.pid: this case needs a cluster \
             started by hack/cluster.sh",
            dir.display()
        );
        Self { dir }
    }

    fn pid(&self, process: &str) -> u32 {
        let file = self.dir.join(format!("run/{process}.pid"));
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", file.display()))
    }

    /// SIGKILLs kube-apiserver, waits `down_for`, starts it again with the
    /// same command line (read from /proc, in a session of its own, its log
    /// appended to the same file, its pid written where `hack/cluster.sh
    /// down` looks), and returns once `/readyz` answers.
    pub async fn restart_apiserver(&self, down_for: Duration) {
        let pid = self.pid("apiserver");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_else(|e| panic!("reading the command line of kube-apiserver {pid}: {e}"));
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(
            argv.first().is_some_and(|a| a.ends_with("kube-apiserver")),
            "pid {pid} is not kube-apiserver: {argv:?}"
        );
        signal(pid, "KILL").await;
        let gone = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(
                Instant::now() < gone,
                "kube-apiserver {pid} outlived SIGKILL"
            );
            sleep(Duration::from_millis(20)).await;
        }
        sleep(down_for).await;

        let log = self.dir.join("logs/kube-apiserver.log");
        let started = Command::new("bash")
            .arg("-c")
            .arg(r#"setsid "$@" </dev/null >>"$0" 2>&1 & echo $!"#)
            .arg(&log)
            .args(&argv)
            .output()
            .await
            .expect("starting kube-apiserver again");
        let new_pid = String::from_utf8_lossy(&started.stdout).trim().to_owned();
        assert!(
            started.status.success() && new_pid.parse::<u32>().is_ok(),
            "starting kube-apiserver again: {started:?}"
        );
        std::fs::write(self.dir.join("run/apiserver.pid"), format!("{new_pid}\n"))
            .expect("writing the new apiserver pid");
        let new_pid: u32 = new_pid.parse().expect("a pid");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.apiserver_ready().await {
            assert!(
                alive(new_pid),
                "the restarted kube-apiserver exited; see {}",
                log.display()
            );
            assert!(
                Instant::now() < deadline,
                "the restarted kube-apiserver was not ready within 120 s; see {}",
                log.display()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether kube-apiserver answers `/readyz` (as `hack/cluster.sh` asks).
    async fn apiserver_ready(&self) -> bool {
        let port = std::fs::read_to_string(self.dir.join("run/apiserver.port")).unwrap_or_default();
        let pki = self.dir.join("pki");
        Command::new("curl")
            .args(["-sf", "--max-time", "2", "--cacert"])
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg(format!("https://127.0.0.1:{}/readyz", port.trim()))
            .output()
            .await
            .is_ok_and(|o| o.status.success())
    }

    /// Stops etcd (SIGSTOP) until the returned guard is dropped (SIGCONT),
    /// whatever happens in between.
    pub async fn pause_etcd(&self) -> PausedEtcd {
        let pid = self.pid("etcd");
        signal(pid, "STOP").await;
        PausedEtcd { pid }
    }
}

/// etcd, stopped; dropping this resumes it.
#[derive(Debug)]
pub struct PausedEtcd {
    pid: u32,
}

impl Drop for PausedEtcd {
    fn drop(&mut self) {
        // No panic here: this may run while a failed case unwinds.
        let resumed = std::process::Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
        if !resumed
            .as_ref()
            .is_ok_and(std::process::ExitStatus::success)
        {
            eprintln!("resuming etcd {} failed: {resumed:?}", self.pid);
        }
    }
}

async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Whether `pid` runs (a zombie waiting to be reaped does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}
