//! Lifecycle benchmark on the local control plane (`make bench`).
//!
//! Prints, for the operator running as its own identity:
//! - approval-to-access latency: review patch accepted -> SubjectAccessReview allows, without
//!   notifications and with a webhook sink that takes 2 s to answer, beside the floor (a
//!   RoleBinding written directly);
//! - expiry lag: grantedUntil -> SubjectAccessReview refuses;
//! - booked windows: startAt -> SubjectAccessReview allows; and refusals across the boundary
//!   of a grant and its extension;
//! - what kubepam's webhooks cost a create, and the throughput of Auto requests to granted;
//! - what exporting the audit trail costs that throughput, and its export lag;
//! - RSS of the leader of two replicas with 100,000 ended requests, and with 10,000 Pending;
//! - admission latency under load, from kubepam's own histogram;
//! - failover: the leader of two replicas killed, until the other leads.
//!
//! Each figure is printed beside its target as met or missed, and the whole
//! run ends with the markdown table BENCHMARKS.md takes, also written to
//! `target/bench/lifecycle.md`.
//!
//! Sizes can be lowered for a quick look: `KUBEPAM_BENCH_SCALE=0.1 make bench`; parts can be
//! chosen with `KUBEPAM_BENCH_ONLY=latency,expiry,schedule,throughput,audit,ended,pending,admission,failover`.
//! `KUBEPAM_BENCH_HEAPTRACK=DIR` records a heap profile (heaptrack) of the replica that takes
//! over with the Pending requests, written to `DIR/leader.zst` when it stops.

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
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use kubepam_core::api::{ElevationRequest, ElevationRequestStatus, Phase};
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

/// Whether the run has the size `n` a target is set for (memory grows with it).
fn full_size(n: usize) -> bool {
    scaled(n) >= n
}

/// A memory target set for `n` requests, judged in a full-size run only.
fn memory_target(target: &str, n: usize) -> String {
    if full_size(n) {
        target.to_owned()
    } else {
        format!("{target} with {n} requests (not judged at this scale)")
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

/// Whether the part `name` of the benchmark runs (`KUBEPAM_BENCH_ONLY`, all by default).
fn runs(name: &str) -> bool {
    std::env::var("KUBEPAM_BENCH_ONLY")
        .map_or(true, |only| only.split(',').any(|part| part.trim() == name))
}

/// A request object as `kubectl apply` would send it.
fn request_object(name: &str, policy: &str, ns: &str, duration: &str) -> ElevationRequest {
    serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": name },
        "spec": { "policy": policy, "namespace": ns, "reason": "benchmark", "duration": duration },
    }))
    .unwrap()
}

/// Creates `n` requests named `{prefix}-{i}` as `requester`, `concurrency` at a time; returns
/// how long that took.
async fn create_many(
    requester: &Client,
    prefix: &str,
    n: usize,
    concurrency: usize,
    policy: &str,
    ns: &str,
    duration: &str,
) -> Duration {
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let requester = requester.clone();
            async move {
                create(&requester, &format!("{prefix}-{i}"), policy, ns, duration).await;
            }
        })
        .await;
    start.elapsed()
}

/// How many requests kubepam has not settled yet (a metadata list of those only).
async fn unsettled(admin: &Client) -> usize {
    let api = Api::<ElevationRequest>::all(admin.clone());
    let selector = kubepam_core::reconcile::unsettled_selector();
    api.list_metadata(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .len()
}

/// How many live (unsettled) requests named `{prefix}…` have a status that `wanted` accepts.
async fn count_live(
    admin: &Client,
    prefix: &str,
    wanted: impl Fn(&ElevationRequestStatus) -> bool,
) -> usize {
    let live = ListParams::default().labels(&kubepam_core::reconcile::unsettled_selector());
    Api::<ElevationRequest>::all(admin.clone())
        .list(&live)
        .await
        .unwrap()
        .items
        .iter()
        .filter(|r| r.name_any().starts_with(prefix))
        .filter(|r| r.status.as_ref().is_some_and(&wanted))
        .count()
}

/// The `/metrics` text of a replica.
fn metrics_text(process: &support::OperatorProcess) -> String {
    support::http_get(process.metrics_port, "/metrics")
        .map(|(_, text)| text)
        .unwrap_or_default()
}

/// The admission histogram of one webhook, summed over `texts`: (upper bound, count) per
/// bucket, cumulative, and the sum of the seconds.
fn admission_histogram(texts: &[String], webhook: &str) -> (Vec<(f64, f64)>, f64) {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut sum = 0.0;
    let label = format!("webhook=\"{webhook}\"");
    for text in texts {
        for line in text.lines().filter(|l| l.contains(&label)) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if series.starts_with("kubepam_admission_duration_seconds_sum") {
                sum += value;
            } else if series.starts_with("kubepam_admission_duration_seconds_bucket") {
                let le = series
                    .split("le=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .map_or(f64::INFINITY, |le| le.parse().unwrap_or(f64::INFINITY));
                match buckets
                    .iter_mut()
                    .find(|(bound, _)| bound.total_cmp(&le).is_eq())
                {
                    Some(bucket) => bucket.1 += value,
                    None => buckets.push((le, value)),
                }
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (buckets, sum)
}

/// Calls in `after` but not `before`: (bucket bounds with counts, total, sum of seconds).
fn histogram_delta(
    before: &[String],
    after: &[String],
    webhook: &str,
) -> (Vec<(f64, f64)>, f64, f64) {
    let (b, b_sum) = admission_histogram(before, webhook);
    let (a, a_sum) = admission_histogram(after, webhook);
    let delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, count)| {
            let earlier = b
                .iter()
                .find(|(l, _)| l.total_cmp(le).is_eq())
                .map_or(0.0, |(_, c)| *c);
            (*le, count - earlier)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, c)| *c);
    (delta, total, a_sum - b_sum)
}

/// The smallest bucket bound below which at least `p` percent of the calls fell.
fn bucket_percentile(delta: &[(f64, f64)], total: f64, p: f64) -> f64 {
    delta
        .iter()
        .find(|(_, count)| *count >= total * p / 100.0)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

/// Two replicas behind one address, as behind a Service.
struct Pair {
    url: String,
    replicas: Vec<Replica>,
}

struct Replica {
    port: u16,
    process: support::OperatorProcess,
}

impl Pair {
    async fn start(cluster: &support::TestCluster, admin: &Client) -> Pair {
        let ports = [support::free_port(), support::free_port()];
        let url = format!(
            "https://127.0.0.1:{}",
            support::balancer(ports.to_vec()).await
        );
        let mut pair = Pair {
            url,
            replicas: Vec::new(),
        };
        let first = pair.spawn(cluster, ports[0], Vec::new());
        while !first.process.is_leader() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first.process.wait_registered(admin).await;
        pair.replicas.push(first);
        pair.replace(cluster, ports[1], Vec::new()).await;
        pair
    }

    fn spawn(
        &self,
        cluster: &support::TestCluster,
        port: u16,
        env: Vec<(&'static str, String)>,
    ) -> Replica {
        Replica {
            port,
            process: cluster.spawn_operator_with(&support::OperatorSpec {
                webhook_port: Some(port),
                webhook_url: Some(self.url.clone()),
                env,
                ..Default::default()
            }),
        }
    }

    fn leader(&self) -> &support::OperatorProcess {
        &self
            .replicas
            .iter()
            .find(|r| r.process.is_leader())
            .expect("one replica leads")
            .process
    }

    fn standby(&self) -> &support::OperatorProcess {
        &self
            .replicas
            .iter()
            .find(|r| !r.process.is_leader())
            .expect("one replica stands by")
            .process
    }

    /// SIGKILLs the leader; returns when the other replica leads, with the time that took and
    /// the port to start a replacement on.
    async fn kill_leader(&mut self) -> (Duration, u16) {
        let leader = self
            .replicas
            .iter()
            .position(|r| r.process.is_leader())
            .expect("one replica leads");
        let Replica { port, process } = self.replicas.remove(leader);
        let started = Instant::now();
        process.kill();
        while !self.replicas[0].process.is_leader() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (started.elapsed(), port)
    }

    /// Starts a standby on `port` (with `env`) and waits until it is ready.
    async fn replace(
        &mut self,
        cluster: &support::TestCluster,
        port: u16,
        env: Vec<(&'static str, String)>,
    ) {
        let replica = self.spawn(cluster, port, env);
        wait_ready(&replica.process).await;
        self.replicas.push(replica);
    }

    fn processes(&self) -> Vec<&support::OperatorProcess> {
        self.replicas.iter().map(|r| &r.process).collect()
    }

    fn stop(self) {
        for replica in self.replicas {
            replica.process.terminate();
        }
    }
}

async fn wait_ready(replica: &support::OperatorProcess) {
    while !support::http_get(replica.metrics_port, "/readyz").is_ok_and(|(code, _)| code == 200) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `replica` has stopped reconciling requests (no reconcile for two seconds).
async fn wait_quiet(replica: &support::OperatorProcess) {
    let series = "kubepam_reconciles_total{kind=\"ElevationRequest\"}";
    let mut last = replica.metric(series);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = replica.metric(series);
        if now == last {
            return;
        }
        last = now;
    }
}

fn rss(process: &support::OperatorProcess) -> (u64, u64) {
    (
        rss_kib(process.pid(), "VmRSS:") / MIB,
        rss_kib(process.pid(), "VmHWM:") / MIB,
    )
}

/// Starts heaptrack's reader for a process started with the returned environment, when
/// `KUBEPAM_BENCH_HEAPTRACK` names a directory.
fn heaptrack_env() -> Vec<(&'static str, String)> {
    let Ok(dir) = std::env::var("KUBEPAM_BENCH_HEAPTRACK") else {
        return Vec::new();
    };
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = format!("{dir}/leader.fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Runs until the profiled process closes the pipe.
    #[allow(clippy::zombie_processes)]
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "/usr/lib/heaptrack/libexec/heaptrack_interpret < {fifo} | zstd -c > {dir}/leader.zst"
        ))
        .spawn()
        .expect("heaptrack_interpret");
    vec![
        (
            "LD_PRELOAD",
            "/usr/lib/heaptrack/libheaptrack_preload.so".to_owned(),
        ),
        ("DUMP_HEAPTRACK_OUTPUT", fifo),
    ]
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

    if runs("latency") {
        latency(cluster, &admin, &bob, &ns, &mut results).await;
    }
    if runs("expiry") {
        expiry(cluster, &admin, &ns, &mut results).await;
    }
    if runs("schedule") {
        schedule(cluster, &admin, &ns, &mut results).await;
        extension_boundaries(cluster, &admin, &ns, &mut results).await;
    }
    if runs("throughput") {
        throughput(cluster, &admin, &ns, &operator, &mut results).await;
    }
    if runs("audit") {
        audit(cluster, &admin, &ns, &mut results).await;
    }
    if runs("ended") {
        ended(cluster, &admin, &ns, &operator, &mut results).await;
    }
    operator.terminate();

    let mut pair = Pair::start(cluster, &admin).await;
    if runs("ended") {
        let ((leader, _), (standby, _)) = (rss(pair.leader()), rss(pair.standby()));
        let ended = scaled(100_000);
        results.row(
            &format!(
                "RSS with {ended} ended requests and 100 active, two replicas: leader / standby"
            ),
            format!("{leader} MiB / {standby} MiB"),
            memory_target("leader ≤ 40 MiB", 100_000),
            full_size(100_000).then_some(leader <= 40),
        );
    }
    if runs("pending") {
        pending(cluster, &admin, &ns, &mut pair, &mut results).await;
    }
    if runs("admission") {
        admission(cluster, &admin, &ns, &pair, &mut results).await;
    }
    if runs("failover") {
        failover(cluster, &ns, &mut pair, &mut results).await;
    }
    pair.stop();
    results.publish();
}

/// Approval-to-access, one request at a time, with the floor beside it; then the same with
/// every notification going to a sink that takes 2 s to answer.
async fn latency(
    cluster: &support::TestCluster,
    admin: &Client,
    bob: &Client,
    ns: &str,
    results: &mut Results,
) {
    let n = scaled(200);
    let latencies = approval_latencies(cluster, admin, bob, ns, "lat", n).await;
    let access = Bound {
        p50: Some(Duration::from_millis(10)),
        p99: Some(Duration::from_millis(30)),
    };
    results.latency(
        "approval-to-access (review patch accepted → SubjectAccessReview allows)",
        latencies,
        access,
    );
    let floor = floor_latencies(admin, ns, n).await;
    results.latency(
        "floor: a RoleBinding written directly (create returned → SubjectAccessReview allows)",
        floor,
        Bound::default(),
    );

    let slow = receivers::HookReceiver::start(support::free_port(), Duration::from_secs(2)).await;
    pam::standard_control_with(
        admin,
        json!({
            "notifications": {
                "sinks": [ { "name": "slow", "webhook": { "url": slow.url() } } ],
                "approverRoutes": [ { "group": "pam-approvers", "sink": "slow" } ],
                "requesterRoutes": [ { "sink": "slow" } ],
            },
        }),
    )
    .await;
    let n = scaled(100);
    let latencies = approval_latencies(cluster, admin, bob, ns, "slowsink", n).await;
    results.latency(
        "approval-to-access, every notification to a sink that takes 2 s",
        latencies,
        access,
    );
    let started = Instant::now();
    // Submitted to the approvers; Approved to the requester and to the approvers; Expired
    // to the requester.
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
    standard_control(admin).await;
    // Hour-long grants would count as active later on.
    delete_prefixed(admin, &["lat-", "slowsink-"]).await;
}

/// Deletes the live requests whose names start with one of `prefixes`.
async fn delete_prefixed(admin: &Client, prefixes: &[&str]) {
    let api = Api::<ElevationRequest>::all(admin.clone());
    let live = ListParams::default().labels(&kubepam_core::reconcile::unsettled_selector());
    let names: Vec<String> = api
        .list_metadata(&live)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect();
    stream::iter(names)
        .for_each_concurrent(20, |name| {
            let api = api.clone();
            async move {
                let _ = api.delete(&name, &kube::api::DeleteParams::default()).await;
            }
        })
        .await;
}

/// The floor of approval-to-access: a RoleBinding to a role that allows the task, written
/// by the client itself, until SubjectAccessReview allows.
async fn floor_latencies(admin: &Client, ns: &str, n: usize) -> Vec<Duration> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": "bench-floor" },
        "rules": [ { "verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"] } ],
    }))
    .unwrap();
    let _ = Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await;
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), ns);
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("floor-user-{i}");
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": { "name": format!("bench-floor-{i}") },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-floor" },
            "subjects": [ { "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user } ],
        }))
        .unwrap();
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        let written = Instant::now();
        let allowed_at = sar_until(admin, &user, ns, true).await;
        latencies.push(allowed_at - written);
    }
    for i in 0..n {
        let _ = bindings
            .delete(
                &format!("bench-floor-{i}"),
                &kube::api::DeleteParams::default(),
            )
            .await;
    }
    latencies
}

/// Expiry lag: grants of 3 s, 20 at a time, from `grantedUntil` to SubjectAccessReview
/// refusing; and how long each grant was in force as SubjectAccessReview saw it.
async fn expiry(cluster: &support::TestCluster, admin: &Client, ns: &str, results: &mut Results) {
    let n = scaled(200);
    let outcomes: Vec<(Duration, Duration)> = stream::iter(0..n)
        .map(|i| {
            let admin = admin.clone();
            async move {
                let (name, user) = (format!("exp-{i}"), format!("exp-user-{i}"));
                let requester = cluster.client_as_user(&user, &["developers"]).await;
                create(&requester, &name, "bench-auto", ns, "3s").await;
                let approved = wait_phase(&admin, &name, Phase::Approved, WAIT).await;
                let status = approved.status.unwrap();
                let (decided, until) = (status.decided_at.unwrap(), status.granted_until.unwrap());
                let wait = (until - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                sar_until(&admin, &user, ns, false).await;
                let ended = Utc::now();
                (
                    (ended - until).to_std().unwrap_or_default(),
                    (until - decided).to_std().unwrap_or_default(),
                )
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let (lags, windows): (Vec<Duration>, Vec<Duration>) = outcomes.into_iter().unzip();
    results.latency(
        "expiry lag (`grantedUntil` → SubjectAccessReview refuses), 20 at a time",
        lags,
        Bound {
            p50: None,
            p99: Some(Duration::from_secs(1)),
        },
    );
    let exact = windows
        .iter()
        .filter(|w| **w == Duration::from_secs(3))
        .count();
    results.row(
        "3 s grants whose record runs exactly 3 s from the decision (grantedUntil − decidedAt)",
        format!("{exact}/{}", windows.len()),
        "all".to_owned(),
        Some(exact == windows.len()),
    );
}

/// One booked window: from `startAt` until a SubjectAccessReview allows, whether any allowed
/// before it, and whether the benchmark itself reached the start late (its lag would then
/// count the benchmark's own delay, so it is left out).
async fn booked_window(
    cluster: &support::TestCluster,
    admin: &Client,
    ns: &str,
    i: usize,
    lead: chrono::TimeDelta,
) -> (Option<Duration>, bool) {
    let (name, user) = (format!("book-{i}"), format!("book-user-{i}"));
    let requester = cluster.client_as_user(&user, &["developers"]).await;
    let start = Utc::now() + lead;
    let request: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": name },
        "spec": { "policy": "bench-auto", "namespace": ns, "reason": "benchmark",
                  "duration": "10s", "startAt": start.to_rfc3339() },
    }))
    .unwrap();
    Api::<ElevationRequest>::all(requester)
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    wait_phase(admin, &name, Phase::Approved, WAIT).await;
    let mut early = allowed(admin, &user, "delete", "apps", "deployments", Some(ns)).await;
    // Polled from just before the start (polling all along would load the API server the
    // lag is measured on): any allow there is a grant opened early.
    let wait = (start - chrono::TimeDelta::milliseconds(100) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let late = Utc::now() > start;
    loop {
        let asked = Utc::now();
        if allowed(admin, &user, "delete", "apps", "deployments", Some(ns)).await {
            early |= asked < start;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lag = (Utc::now() - start).to_std().unwrap_or_default();
    ((!late).then_some(lag), early)
}

/// Booked windows one at a time, then 20 at a time (the same method as the expiry lag).
async fn schedule(cluster: &support::TestCluster, admin: &Client, ns: &str, results: &mut Results) {
    let single = scaled(20);
    let mut alone = Vec::new();
    let mut early = 0;
    for i in 0..single {
        let (lag, opened_early) =
            booked_window(cluster, admin, ns, i, chrono::TimeDelta::seconds(2)).await;
        alone.extend(lag);
        early += usize::from(opened_early);
    }
    results.latency(
        "booked window lag (`startAt` → SubjectAccessReview allows), one at a time",
        alone,
        Bound {
            p50: None,
            p99: Some(Duration::from_secs(1)),
        },
    );
    let n = scaled(100);
    let outcomes: Vec<(Option<Duration>, bool)> = stream::iter(single..single + n)
        .map(|i| async move {
            booked_window(cluster, admin, ns, i, chrono::TimeDelta::seconds(5)).await
        })
        .buffer_unordered(20)
        .collect()
        .await;
    early += outcomes.iter().filter(|(_, e)| *e).count();
    let late = outcomes.iter().filter(|(lag, _)| lag.is_none()).count();
    let lags: Vec<Duration> = outcomes.into_iter().filter_map(|(lag, _)| lag).collect();
    results.latency(
        &format!(
            "booked window lag, 20 at a time ({late} of {n} left out: the benchmark reached \
             their start late)"
        ),
        lags,
        Bound {
            p50: None,
            p99: Some(Duration::from_secs(1)),
        },
    );
    results.row(
        "booked windows allowed before their start",
        format!("{early}/{}", single + n),
        "0".to_owned(),
        Some(early == 0),
    );
}

/// Grants of 8 s, each extended by 3 s as soon as it is approved; SubjectAccessReviews polled
/// from 300 ms before the old end to 700 ms after it, 10 grants at a time.
async fn extension_boundaries(
    cluster: &support::TestCluster,
    admin: &Client,
    ns: &str,
    results: &mut Results,
) {
    let n = scaled(50);
    let outcomes: Vec<(usize, usize)> = stream::iter(0..n)
        .map(|i| {
            let admin = admin.clone();
            async move {
                let (name, user) = (format!("ext-{i}"), format!("ext-user-{i}"));
                let requester = cluster.client_as_user(&user, &["developers"]).await;
                create(&requester, &name, "bench-auto", ns, "8s").await;
                let approved = wait_phase(&admin, &name, Phase::Approved, WAIT).await;
                let old_end = approved.status.unwrap().granted_until.unwrap();
                let extension: ElevationRequest = serde_json::from_value(json!({
                    "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
                    "metadata": { "name": format!("{name}-more") },
                    "spec": { "policy": "bench-auto", "namespace": ns, "reason": "benchmark",
                              "duration": "3s", "extends": name },
                }))
                .unwrap();
                Api::<ElevationRequest>::all(requester)
                    .create(&PostParams::default(), &extension)
                    .await
                    .unwrap();
                wait_phase(&admin, &format!("{name}-more"), Phase::Approved, WAIT).await;
                let from = old_end - chrono::TimeDelta::milliseconds(300);
                let wait = (from - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let (mut asked, mut refused) = (0, 0);
                while Utc::now() < old_end + chrono::TimeDelta::milliseconds(700) {
                    asked += 1;
                    if !allowed(&admin, &user, "delete", "apps", "deployments", Some(ns)).await {
                        refused += 1;
                    }
                }
                (asked, refused)
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    let asked: usize = outcomes.iter().map(|(a, _)| a).sum();
    let refused: usize = outcomes.iter().map(|(_, r)| r).sum();
    results.row(
        &format!(
            "SubjectAccessReviews refused across {n} grant → extension boundaries ({asked} asked)"
        ),
        refused.to_string(),
        "0".to_owned(),
        Some(refused == 0),
    );
}

/// What kubepam's webhooks cost a create, then Auto requests created 50 at a time until
/// all are granted.
async fn throughput(
    cluster: &support::TestCluster,
    admin: &Client,
    ns: &str,
    operator: &support::OperatorProcess,
    results: &mut Results,
) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let n = scaled(500);
    let maps = Api::<ConfigMap>::namespaced(admin.clone(), ns);
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(50, |i| {
            let maps = maps.clone();
            async move {
                let map: ConfigMap =
                    serde_json::from_value(json!({ "metadata": { "name": format!("cm-{i}") } }))
                        .unwrap();
                maps.create(&PostParams::default(), &map).await.unwrap();
            }
        })
        .await;
    let plain = start.elapsed();
    let requester = cluster.client_as_user("cost-user", &["developers"]).await;
    let before = [metrics_text(operator)];
    let through = create_many(&requester, "cost", n, 50, "bench-manual", ns, "1m").await;
    let after = [metrics_text(operator)];
    // A create passes one kubepam webhook (`requester`): the time its handler took.
    let (_, count, sum) = histogram_delta(&before, &after, "requester");
    let costs = [format!(
        "requester {:.2} ms over {count} calls",
        sum / count.max(1.0) * 1e3
    )];
    delete_prefixed(admin, &["cost-"]).await;
    results.row(
        &format!("{n} creates, 50 at a time: ElevationRequests through kubepam's webhooks / ConfigMaps (no webhook)"),
        format!(
            "{:.2} s / {:.2} s; kubepam's handler, mean per call: {}",
            through.as_secs_f64(),
            plain.as_secs_f64(),
            costs.join(", ")
        ),
        String::new(),
        None,
    );

    let n = scaled(1000);
    let (rate, total, created) = grant_rate(cluster, admin, ns, "tp", n).await;
    results.row(
        &format!("throughput: {n} Auto requests created 50 at a time, until all are Approved with their RBAC objects"),
        format!(
            "{rate:.1} grants/s ({n} in {:.2} s; creation alone, through the webhooks: {:.2} s)",
            total.as_secs_f64(),
            created.as_secs_f64()
        ),
        "≥ 150 grants/s".to_owned(),
        Some(rate >= 150.0),
    );
}

/// `n` Auto requests named `PREFIX-i` created 50 at a time by one user: grants per second
/// until all are Approved with their RBAC objects, the time that took, and the creation's.
async fn grant_rate(
    cluster: &support::TestCluster,
    admin: &Client,
    ns: &str,
    prefix: &str,
    n: usize,
) -> (f64, Duration, Duration) {
    let requester = cluster
        .client_as_user(&format!("{prefix}-user"), &["developers"])
        .await;
    let start = Instant::now();
    let created = create_many(&requester, prefix, n, 50, "bench-auto", ns, "2m").await;
    let granted =
        |s: &ElevationRequestStatus| s.phase == Some(Phase::Approved) && !s.rbac_objects.is_empty();
    let named = format!("{prefix}-");
    loop {
        let done = count_live(admin, &named, granted).await;
        if done == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {done}/{n} granted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = start.elapsed();
    (n as f64 / total.as_secs_f64(), total, created)
}

/// What exporting the audit trail costs: grants per second without an audit sink and then
/// with an HTTP sink (the records are sealed onto the chain either way), in the same run; and
/// the export lag, from a transition (the record's `time`) to its arrival at the receiver,
/// under that load and one request at a time.
async fn audit(cluster: &support::TestCluster, admin: &Client, ns: &str, results: &mut Results) {
    let n = scaled(500);
    let (without, _, _) = grant_rate(cluster, admin, ns, "au0", n).await;
    let receiver = receivers::HookReceiver::start(support::free_port(), Duration::ZERO).await;
    pam::standard_control_with(
        admin,
        json!({ "audit": { "sinks": [{ "name": "bench", "webhook": { "url": receiver.url() } }] } }),
    )
    .await;
    let (with, _, _) = grant_rate(cluster, admin, ns, "au1", n).await;
    let lags = |prefix: &str, per_request: usize, count: usize| {
        let receiver = &receiver;
        let prefix = prefix.to_owned();
        async move {
            let start = Instant::now();
            loop {
                let lags: Vec<Duration> = receiver
                    .received()
                    .iter()
                    .flat_map(|call| {
                        let at = chrono::DateTime::<Utc>::from(call.received_at);
                        call.body
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(move |event| {
                                let record: kubepam_core::audit::AuditRecord =
                                    serde_json::from_value(event).ok()?;
                                Some((record, at))
                            })
                    })
                    .filter(|(record, _)| record.subject.starts_with(&prefix))
                    .map(|(record, at)| (at - record.time).to_std().unwrap_or(Duration::ZERO))
                    .collect();
                if lags.len() >= count * per_request {
                    return lags;
                }
                assert!(
                    start.elapsed() < WAIT * 5,
                    "only {} records arrived",
                    lags.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // Each Auto request makes two records while it is granted: submitted, approved.
    let loaded = lags("au1-", 2, n).await;
    results.row(
        &format!(
            "throughput with an audit sink (HTTP) / without, {n} Auto requests each, same run"
        ),
        format!(
            "{with:.1} / {without:.1} grants/s ({:+.0}%)",
            (with / without - 1.0) * 100.0
        ),
        String::new(),
        None,
    );
    results.latency(
        "export lag, transition → record at the HTTP receiver, under that load",
        loaded,
        Bound::default(),
    );
    let requester = cluster.client_as_user("au2-user", &["developers"]).await;
    let single = scaled(20).max(5);
    for i in 0..single {
        create(&requester, &format!("au2-{i}"), "bench-auto", ns, "2m").await;
        wait_phase(admin, &format!("au2-{i}"), Phase::Approved, WAIT).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let one_at_a_time = lags("au2-", 2, single).await;
    results.latency(
        "export lag, one request at a time",
        one_at_a_time,
        Bound::default(),
    );
    delete_prefixed(admin, &["au0-", "au1-", "au2-"]).await;
    standard_control(admin).await;
}

/// Many ended requests (denied at once: their policy does not exist) and 100 active ones;
/// waits until kubepam has settled every ended one.
async fn ended(
    cluster: &support::TestCluster,
    admin: &Client,
    ns: &str,
    operator: &support::OperatorProcess,
    results: &mut Results,
) {
    let n = scaled(100_000);
    let requester = cluster.client_as_user("ended-user", &["developers"]).await;
    let took = create_many(&requester, "ended", n, 50, "bench-gone", ns, "1h").await;
    println!(
        "{n} requests for a missing policy created in {:.1} s",
        took.as_secs_f64()
    );
    let active = 100;
    let requester = cluster.client_as_user("active-user", &["developers"]).await;
    create_many(&requester, "active", active, 10, "bench-auto", ns, "1h").await;
    let start = Instant::now();
    loop {
        let left = unsettled(admin).await;
        if left <= active {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "{left} requests still unsettled"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (current, peak) = rss(operator);
    results.row(
        &format!(
            "operator RSS after {n} requests ended and were settled ({active} active), one replica"
        ),
        format!("{current} MiB (peak {peak} MiB)"),
        String::new(),
        None,
    );
}

/// Many Pending requests (Manual, never decided), created through the pair; then the leader
/// killed, so the other takes over every request at once.
async fn pending(
    cluster: &support::TestCluster,
    admin: &Client,
    ns: &str,
    pair: &mut Pair,
    results: &mut Results,
) {
    let n = scaled(10_000);
    let requester = cluster.client_as_user("rss-user", &["developers"]).await;
    create_many(&requester, "rss", n, 50, "bench-manual", ns, "1h").await;
    while count_live(admin, "rss-", |s| s.phase == Some(Phase::Pending)).await < n {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cached = unsettled(admin).await;
    let ((leader, leader_peak), (standby, _)) = (rss(pair.leader()), rss(pair.standby()));
    results.row(
        &format!("RSS with {cached} live requests ({n} Pending) after creating them, two replicas: leader / standby"),
        format!("{leader} MiB (peak {leader_peak} MiB) / {standby} MiB"),
        memory_target("leader ≤ 64 MiB", 10_000),
        full_size(10_000).then_some(leader <= 64),
    );
    // The standby becomes the leader; its replacement is the one profiled, if asked.
    let (_, port) = pair.kill_leader().await;
    wait_quiet(pair.leader()).await;
    let (leader, leader_peak) = rss(pair.leader());
    pair.replace(cluster, port, heaptrack_env()).await;
    let (standby, _) = rss(pair.standby());
    results.row(
        &format!("the same after the leader is killed and the standby takes over all {cached}: new leader / new standby"),
        format!("{leader} MiB (peak {leader_peak} MiB) / {standby} MiB"),
        memory_target("leader ≤ 64 MiB", 10_000),
        full_size(10_000).then_some(leader <= 64),
    );
    if std::env::var("KUBEPAM_BENCH_HEAPTRACK").is_ok() {
        // The profiled standby takes over, with every request to reconcile.
        let (_, port) = pair.kill_leader().await;
        wait_quiet(pair.leader()).await;
        pair.replace(cluster, port, Vec::new()).await;
    }
}

/// The guard and the request webhooks at 200 calls per second (half each), with every
/// cached request of the run; p99 from kubepam's own histogram, both replicas together.
async fn admission(
    cluster: &support::TestCluster,
    admin: &Client,
    ns: &str,
    pair: &Pair,
    results: &mut Results,
) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    // A user whose standing RBAC allows the guarded task: the guard refuses it.
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "bench-guarded" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-floor" },
        "subjects": [ { "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "guarded-user" } ],
    }))
    .unwrap();
    let _ = Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await;
    let _ = Api::<Deployment>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &pam::deployment("guarded"))
        .await;
    let guarded = cluster.client_as_user("guarded-user", &[]).await;
    let requester = cluster.client_as_user("dry-user", &["developers"]).await;
    let deployments = Api::<Deployment>::namespaced(guarded, ns);
    let requests = Api::<ElevationRequest>::all(requester);
    let ns = ns.to_owned();
    let cached = unsettled(admin).await;
    let texts = || -> Vec<String> { pair.processes().into_iter().map(metrics_text).collect() };
    let before = texts();
    let calls = scaled(2000).max(200);
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..calls {
        ticker.tick().await;
        if i % 2 == 0 {
            let deployments = deployments.clone();
            tasks.spawn(async move {
                let params = kube::api::DeleteParams::default().dry_run();
                let refused = deployments.delete("guarded", &params).await;
                assert!(
                    matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
                    "the guard refuses: {refused:?}"
                );
            });
        } else {
            let requests = requests.clone();
            let ns = ns.clone();
            tasks.spawn(async move {
                let params = PostParams {
                    dry_run: true,
                    ..Default::default()
                };
                let object = request_object(&format!("dry-{i}"), "bench-manual", &ns, "1h");
                let _ = requests.create(&params, &object).await;
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let after = texts();
    for webhook in ["guard", "requester", "reviews"] {
        let (delta, total, sum) = histogram_delta(&before, &after, webhook);
        if total == 0.0 {
            continue;
        }
        let within = delta
            .iter()
            .find(|(le, _)| (*le - 0.005).abs() < 1e-9)
            .map_or(0.0, |(_, c)| *c);
        let p99 = bucket_percentile(&delta, total, 99.0);
        results.row(
            &format!("admission `{webhook}` at 200 calls/s (guard and requests), {cached} requests cached, n={total}"),
            format!(
                "mean {:.2} ms, p99 ≤ {} ms (bucket), {:.2} % within 5 ms",
                sum / total * 1e3,
                p99 * 1e3,
                within / total * 100.0
            ),
            "p99 ≤ 5 ms".to_owned(),
            Some(within >= total * 0.99),
        );
    }
}

/// Failover: SIGKILL the leader, time until the other leads and until an Auto request made
/// right after the kill is granted, start a new replica in its place; repeat.
async fn failover(
    cluster: &support::TestCluster,
    ns: &str,
    pair: &mut Pair,
    results: &mut Results,
) {
    let requester = cluster
        .client_as_user("failover-user", &["developers"])
        .await;
    let (mut takeovers, mut grants) = (Vec::new(), Vec::new());
    for kill in 0..scaled(5).max(5) {
        let name = format!("failover-{kill}");
        let killed = Instant::now();
        let create_after_kill = {
            let requester = requester.clone();
            let name = name.clone();
            let ns = ns.to_owned();
            tokio::spawn(async move {
                // Right after the kill (kill_leader kills first, then waits).
                tokio::time::sleep(Duration::from_millis(10)).await;
                create(&requester, &name, "bench-auto", &ns, "1h").await;
            })
        };
        let (takeover, port) = pair.kill_leader().await;
        takeovers.push(takeover);
        create_after_kill.await.unwrap();
        wait_phase(&requester, &name, Phase::Approved, WAIT).await;
        grants.push(killed.elapsed());
        pair.replace(cluster, port, Vec::new()).await;
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
}
