//! Lifecycle benchmark on the local control plane (`make bench`).
//!
//! Prints, for the operator running as its own identity:
//! - approval-to-access latency: review patch accepted -> SubjectAccessReview allows, without
//!   notifications and with a webhook sink that takes 2 s to answer;
//! - expiry lag: grantedUntil -> SubjectAccessReview refuses;
//! - throughput of Auto requests to granted;
//! - operator peak RSS with many ElevationRequests;
//! - failover: the leader of two replicas killed, until the other leads.
//!
//! Each figure is printed beside its target as met or missed, and the whole
//! run ends with the markdown table BENCHMARKS.md takes, also written to
//! `target/bench/lifecycle.md`.
//!
//! Sizes can be lowered for a quick look: `KUBEPAM_BENCH_SCALE=0.1 make bench`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::doc_markdown
)]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // figures for people

use kubepam_testkit::cluster as support;
use kubepam_testkit::pam;
use kubepam_testkit::receivers;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, stream};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use kubepam_core::api::{ElevationRequest, Phase};
use serde_json::json;

use pam::{allowed, create_policy, review, standard_control, wait_phase};
use support::{Identity, cluster};

const WAIT: Duration = Duration::from_secs(60);

fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("KUBEPAM_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).round() as usize).max(1)
}

/// Whether the run has the sizes the targets are set for (memory grows with them).
fn full_size() -> bool {
    scaled(10_000) >= 10_000
}

/// A memory target, which holds for the full-size run only.
fn memory_target(target: &str) -> String {
    if full_size() {
        target.to_owned()
    } else {
        format!("{target} with 10,000 requests (not judged at this scale)")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A target on a latency's percentiles.
#[derive(Clone, Copy, Default)]
struct Bound {
    p50: Option<Duration>,
    p99: Option<Duration>,
}

/// One line of the results table.
struct Row {
    what: String,
    result: String,
    target: String,
    met: Option<bool>,
}

/// The figures of one run, each beside its target and whether it was met:
/// printed as they come, then as the markdown table BENCHMARKS.md takes
/// (also written to `target/bench/lifecycle.md`).
#[derive(Default)]
struct Results {
    rows: Vec<Row>,
}

impl Results {
    fn latency(&mut self, what: &str, mut samples: Vec<Duration>, bound: Bound) {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (p50, p90, p99) = (
            percentile(&samples, 50.0),
            percentile(&samples, 90.0),
            percentile(&samples, 99.0),
        );
        let max = *samples.last().unwrap();
        let result = format!(
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(p50),
            ms(p90),
            ms(p99),
            ms(max)
        );
        let mut target = Vec::new();
        let mut met = None;
        for (name, wanted, got) in [("p50", bound.p50, p50), ("p99", bound.p99, p99)] {
            if let Some(wanted) = wanted {
                target.push(format!("{name} ≤ {}", human(wanted)));
                met = Some(met.unwrap_or(true) && got <= wanted);
            }
        }
        self.row(
            &format!("{what}, n={}", samples.len()),
            result,
            target.join(", "),
            met,
        );
    }

    fn row(&mut self, what: &str, result: String, target: String, met: Option<bool>) {
        let verdict = match met {
            Some(true) => " (met)",
            Some(false) => " (MISSED)",
            None => "",
        };
        println!(
            "{what}: {result}{}{verdict}",
            if target.is_empty() {
                String::new()
            } else {
                format!("; target {target}")
            }
        );
        self.rows.push(Row {
            what: what.to_owned(),
            result,
            target,
            met,
        });
    }

    fn table(&self) -> String {
        let mut table = String::from("| what | result | target |\n|------|--------|--------|\n");
        for row in &self.rows {
            let target = match row.met {
                Some(true) => format!("{}: met", row.target),
                Some(false) => format!("{}: **missed**", row.target),
                None => row.target.clone(),
            };
            let _ = writeln!(table, "| {} | {} | {} |", row.what, row.result, target);
        }
        table
    }

    fn publish(&self) {
        let table = self.table();
        println!("\n{table}");
        let dir = support::repo_root().join("target/bench");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lifecycle.md");
        std::fs::write(&path, &table).unwrap();
        println!("table written to {}", path.display());
    }
}

fn human(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{} s", duration.as_secs_f64())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

const MIB: u64 = 1024;

/// Creates a request as `requester` (a client impersonating that user).
async fn create(requester: &Client, name: &str, policy: &str, ns: &str, duration: &str) {
    let request: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": name },
        "spec": { "policy": policy, "namespace": ns, "reason": "benchmark", "duration": duration },
    }))
    .unwrap();
    let api = Api::<ElevationRequest>::all(requester.clone());
    // Under load the API server may close a connection; a retried create
    // that already went through answers 409, which is success here.
    for attempt in 1.. {
        match api.create(&PostParams::default(), &request).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => return,
            Err(error) if attempt < 5 => {
                eprintln!("create {name}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("create {name}: {error}"),
        }
    }
}

/// Approval-to-access of `n` Manual requests, one at a time, each by a user of its own:
/// from bob's review patch accepted to a SubjectAccessReview that allows.
async fn approval_latencies(
    cluster: &support::TestCluster,
    admin: &Client,
    bob: &Client,
    ns: &str,
    prefix: &str,
    n: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let (name, user) = (format!("{prefix}-{i}"), format!("{prefix}-user-{i}"));
        let requester = cluster.client_as_user(&user, &["developers"]).await;
        create(&requester, &name, "bench-manual", ns, "1h").await;
        wait_phase(admin, &name, Phase::Pending, WAIT).await;
        review(bob, &name, "bob", "Approve", "bench").await.unwrap();
        let accepted = Instant::now();
        let allowed_at = sar_until(admin, &user, ns, true).await;
        latencies.push(allowed_at - accepted);
    }
    latencies
}

async fn sar_until(admin: &Client, user: &str, ns: &str, want: bool) -> Instant {
    loop {
        if allowed(admin, user, "delete", "apps", "deployments", Some(ns)).await == want {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let cluster = cluster();
    cluster.install_kubepam();
    let operator = cluster.spawn_operator();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let admin = cluster.client(Identity::Admin).await;
    operator.wait_registered(&admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("bench").await.name;
    let task = |approval: &str| {
        json!({
            "type": "Task",
            "task": { "verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"] },
            "scope": { "namespaces": [ns] },
            "approvalType": approval,
        })
    };
    create_policy(&admin, "bench-manual", task("Manual")).await;
    create_policy(&admin, "bench-auto", task("Auto")).await;
    let bob = cluster.client(Identity::Bob).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut results = Results::default();
    results.row(
        "operator RSS, idle",
        format!(
            "{:.1} MiB",
            rss_kib(operator.pid(), "VmRSS:") as f64 / MIB as f64
        ),
        String::new(),
        None,
    );

    // 1. Approval-to-access latency, one request at a time.
    let n = scaled(200);
    let latencies = approval_latencies(cluster, &admin, &bob, &ns, "lat", n).await;
    let access = Bound {
        p50: Some(Duration::from_millis(100)),
        p99: Some(Duration::from_millis(500)),
    };
    results.latency(
        "approval-to-access (review patch accepted → SubjectAccessReview allows)",
        latencies,
        access,
    );

    // 1b. The same with every notification going to a sink that takes 2 s to answer.
    let slow = receivers::HookReceiver::start(support::free_port(), Duration::from_secs(2)).await;
    pam::apply_control(
        &admin,
        json!({
            "enabled": true,
            "defaultApproverGroup": "pam-approvers",
            "systemAccounts": ["system:serviceaccount:ci:deployer"],
            "notifications": {
                "sinks": [ { "name": "slow", "webhook": { "url": slow.url() } } ],
                "approverRoutes": [ { "group": "pam-approvers", "sink": "slow" } ],
                "requesterRoutes": [ { "sink": "slow" } ],
            },
        }),
    )
    .await;
    let n = scaled(100);
    let latencies = approval_latencies(cluster, &admin, &bob, &ns, "slowsink", n).await;
    results.latency(
        "approval-to-access, every notification to a sink that takes 2 s",
        latencies,
        access,
    );
    let started = Instant::now();
    // Submitted to the approvers; Approved to the requester and to the approvers.
    let owed = 3 * n;
    while slow.received().len() < owed && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = slow.received().len();
    results.row(
        "notifications delivered to the 2 s sink",
        format!("{delivered}/{owed}"),
        "all".to_owned(),
        Some(delivered >= owed),
    );
    standard_control(&admin).await;

    // 2. Expiry lag: grants of 3s, 20 at a time.
    let n = scaled(200);
    let lags: Vec<Duration> = stream::iter(0..n)
        .map(|i| {
            let admin = admin.clone();
            let ns = ns.clone();
            async move {
                let (name, user) = (format!("exp-{i}"), format!("exp-user-{i}"));
                let requester = cluster.client_as_user(&user, &["developers"]).await;
                create(&requester, &name, "bench-auto", &ns, "3s").await;
                let approved = wait_phase(&admin, &name, Phase::Approved, WAIT).await;
                let until = approved.status.unwrap().granted_until.unwrap();
                let wait = (until - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                sar_until(&admin, &user, &ns, false).await;
                (Utc::now() - until).to_std().unwrap_or_default()
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    results.latency(
        "expiry lag (`grantedUntil` → SubjectAccessReview refuses), 20 at a time",
        lags,
        Bound {
            p50: None,
            p99: Some(Duration::from_secs(1)),
        },
    );

    // 3. Throughput: Auto requests created 50 at a time, until all are granted.
    let n = scaled(1000);
    let requester = cluster.client_as_user("tp-user", &["developers"]).await;
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(50, |i| {
            let requester = requester.clone();
            let ns = ns.clone();
            async move {
                create(&requester, &format!("tp-{i}"), "bench-auto", &ns, "1h").await;
            }
        })
        .await;
    let created = start.elapsed();
    let api = Api::<ElevationRequest>::all(admin.clone());
    loop {
        let list = api.list(&ListParams::default().labels("")).await.unwrap();
        let granted = list
            .items
            .iter()
            .filter(|r| {
                r.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("tp-"))
            })
            .filter(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Some(Phase::Approved) && !s.rbac_objects.is_empty())
            })
            .count();
        if granted == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {granted}/{n} granted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = start.elapsed();
    let rate = n as f64 / total.as_secs_f64();
    results.row(
        &format!("throughput: {n} Auto requests created 50 at a time, until all are Approved with their RBAC objects"),
        format!(
            "{rate:.1} grants/s ({n} in {:.2} s; creation alone, through the webhooks: {:.2} s)",
            total.as_secs_f64(),
            created.as_secs_f64()
        ),
        "≥ 50 grants/s".to_owned(),
        Some(rate >= 50.0),
    );

    // 4. Peak RSS with many requests (Pending: Manual, never decided).
    let n = scaled(10_000);
    let requester = cluster.client_as_user("rss-user", &["developers"]).await;
    stream::iter(0..n)
        .for_each_concurrent(50, |i| {
            let requester = requester.clone();
            let ns = ns.clone();
            async move {
                create(&requester, &format!("rss-{i}"), "bench-manual", &ns, "1h").await;
            }
        })
        .await;
    loop {
        let list = api.list(&ListParams::default()).await.unwrap();
        let pending = list
            .items
            .iter()
            .filter(|r| {
                r.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("rss-"))
            })
            .filter(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Some(Phase::Pending))
            })
            .count();
        if pending == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total = api
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    let (current, peak) = (
        rss_kib(operator.pid(), "VmRSS:") / MIB,
        rss_kib(operator.pid(), "VmHWM:") / MIB,
    );
    results.row(
        &format!("operator RSS with {total} ElevationRequests ({n} Pending), one replica"),
        format!("{current} MiB (peak {peak} MiB)"),
        memory_target("≤ 64 MiB"),
        full_size().then_some(current <= 64),
    );
    operator.terminate();

    failover(cluster, &admin, &ns, &mut results).await;
    results.publish();
}

/// Failover (section 5): two replicas behind one address, as behind a Service. SIGKILL the
/// leader, time until the other leads and until an Auto request made right
/// after the kill is granted, start a new replica in its place; repeat.
async fn failover(cluster: &support::TestCluster, admin: &Client, ns: &str, results: &mut Results) {
    struct Replica {
        port: u16,
        process: support::OperatorProcess,
    }
    let ports = [support::free_port(), support::free_port()];
    let url = format!(
        "https://127.0.0.1:{}",
        support::balancer(ports.to_vec()).await
    );
    let start = |port: u16| Replica {
        port,
        process: cluster.spawn_operator_with(&support::OperatorSpec {
            webhook_port: Some(port),
            webhook_url: Some(url.clone()),
            ..Default::default()
        }),
    };
    let ready = |replica: &Replica| {
        support::http_get(replica.process.metrics_port, "/readyz")
            .is_ok_and(|(code, _)| code == 200)
    };
    let mut replicas = vec![start(ports[0])];
    while !replicas[0].process.is_leader() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replicas[0].process.wait_registered(admin).await;
    replicas.push(start(ports[1]));
    while !ready(&replicas[1]) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, standby) = (
        rss_kib(replicas[0].process.pid(), "VmRSS:") / MIB,
        rss_kib(replicas[1].process.pid(), "VmRSS:") / MIB,
    );
    results.row(
        "RSS with the same requests, two replicas: leader / standby",
        format!("{leader} MiB / {standby} MiB"),
        memory_target("leader ≤ 64 MiB"),
        full_size().then_some(leader <= 64),
    );
    let requester = cluster
        .client_as_user("failover-user", &["developers"])
        .await;
    let (mut takeovers, mut grants) = (Vec::new(), Vec::new());
    for kill in 0..scaled(5).max(5) {
        let leader = replicas
            .iter()
            .position(|r| r.process.is_leader())
            .expect("one replica leads");
        let Replica { port, process } = replicas.remove(leader);
        let killed = Instant::now();
        process.kill();
        let name = format!("failover-{kill}");
        create(&requester, &name, "bench-auto", ns, "1h").await;
        while !replicas[0].process.is_leader() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        takeovers.push(killed.elapsed());
        wait_phase(&requester, &name, Phase::Approved, WAIT).await;
        grants.push(killed.elapsed());
        replicas.push(start(port));
        while !ready(&replicas[1]) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the new standby settle before the next kill.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    results.latency(
        "failover: leader SIGKILLed → the standby leads",
        takeovers,
        Bound {
            p50: None,
            p99: Some(Duration::from_secs(15)),
        },
    );
    results.latency(
        "failover: leader SIGKILLed → an Auto request made right after is granted",
        grants,
        Bound::default(),
    );
    for replica in replicas {
        replica.process.terminate();
    }
}
