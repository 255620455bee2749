//! Test harness: one real control plane (etcd + kube-apiserver) per test
//! binary, started by `hack/cluster.sh` on loopback, with a `kube::Client`
//! per identity and a fresh namespace per test.
//!
//! Set `KUBEPAM_TEST_KUBECONFIG` to the kubeconfig of a running local cluster
//! (`make cluster` writes `.dev/kubeconfig`) to attach to it instead; that
//! cluster must have the same contexts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The people and programs of the local cluster, as its kubeconfig names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    Admin,
    Alice,
    Bob,
    Carol,
    Dave,
    CiBot,
    Operator,
}

impl Identity {
    pub const ALL: [Identity; 7] = [
        Identity::Admin,
        Identity::Alice,
        Identity::Bob,
        Identity::Carol,
        Identity::Dave,
        Identity::CiBot,
        Identity::Operator,
    ];

    pub fn context(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::Alice => "alice",
            Identity::Bob => "bob",
            Identity::Carol => "carol",
            Identity::Dave => "dave",
            Identity::CiBot => "ci-bot",
            Identity::Operator => "operator",
        }
    }

    pub fn username(self) -> &'static str {
        match self {
            Identity::CiBot => "system:serviceaccount:ci:deployer",
            Identity::Operator => "system:serviceaccount:kubepam-system:kubepam",
            other => other.context(),
        }
    }

    pub fn groups(self) -> &'static [&'static str] {
        match self {
            Identity::Admin => &["system:masters"],
            Identity::Alice => &["developers"],
            Identity::Bob | Identity::Carol => &["pam-approvers"],
            Identity::Dave => &["developers", "ops-approvers"],
            Identity::CiBot => &["system:serviceaccounts", "system:serviceaccounts:ci"],
            Identity::Operator => &[
                "system:serviceaccounts",
                "system:serviceaccounts:kubepam-system",
            ],
        }
    }
}

/// A running control plane this test binary can talk to.
#[derive(Debug)]
pub struct TestCluster {
    pub kubeconfig_path: PathBuf,
    kubeconfig: Kubeconfig,
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();

/// The workspace root (`crds/`, `manifests/`, `hack/`).
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// A binary of the workspace, built by the same `cargo test` as the running
/// test: test executables live in `target/<profile>/deps`, binaries one level
/// up. `cargo test --workspace` (`make test`) builds `kubepam` and `kubectl-pam`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("a test executable under target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is not built: run the tests with `make test` or `cargo test --workspace`, \
         which build every binary of the workspace",
        binary.display()
    );
    binary
}

/// The directory `hack/build-tools.sh` builds helm and promtool into (built
/// once, cached); cert-manager's CRDs are in its sibling `cert-manager-crds/`.
pub fn tools_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let output = Command::new(repo_root().join("hack/build-tools.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running hack/build-tools.sh");
        assert!(
            output.status.success(),
            "hack/build-tools.sh failed ({})",
            output.status
        );
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
}

/// The control plane of this test binary, started on first use.
pub fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(|| {
        let kubeconfig_path = match std::env::var_os("KUBEPAM_TEST_KUBECONFIG") {
            Some(path) => PathBuf::from(path),
            None => start_owned_cluster(),
        };
        let kubeconfig = Kubeconfig::read_from(&kubeconfig_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig_path.display()));
        TestCluster {
            kubeconfig_path,
            kubeconfig,
        }
    })
}

/// Starts a cluster in `target/test-clusters/<pid>`, stopped by a watchdog
/// as soon as this process exits, whether it passes, panics or is killed.
fn start_owned_cluster() -> PathBuf {
    let base = repo_root().join("target/test-clusters");
    remove_stale_cluster_dirs(&base);
    let dir = base.join(std::process::id().to_string());
    let output = Command::new(repo_root().join("hack/cluster.sh"))
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running hack/cluster.sh");
    assert!(
        output.status.success(),
        "hack/cluster.sh up failed ({}); logs in {}",
        output.status,
        dir.join("logs").display()
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Directories of earlier runs whose owner is gone. Their watchdog stops
/// their servers, but may not have yet (it looks twice a second): the
/// servers are stopped here first, or removing the files under them would
/// leave a kube-apiserver running without its etcd.
fn remove_stale_cluster_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let stopped = Command::new(repo_root().join("hack/cluster.sh"))
                .arg("down")
                .arg("--dir")
                .arg(entry.path())
                .stderr(std::process::Stdio::null())
                .status();
            if stopped.is_ok_and(|s| s.success()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl TestCluster {
    /// A client authenticated as `who`, exactly as `kubectl --context who` is.
    pub async fn client(&self, who: Identity) -> Client {
        let options = KubeConfigOptions {
            context: Some(who.context().to_owned()),
            ..KubeConfigOptions::default()
        };
        let config = Config::from_custom_kubeconfig(self.kubeconfig.clone(), &options)
            .await
            .unwrap_or_else(|e| panic!("kubeconfig context {}: {e}", who.context()));
        Client::try_from(config).expect("building client")
    }

    /// A client for any `user`, through admin's impersonation (what
    /// `kubectl --as USER` does): the API server, admission included, sees
    /// that user.
    pub async fn client_as_user(&self, user: &str, groups: &[&str]) -> Client {
        let options = KubeConfigOptions {
            context: Some(Identity::Admin.context().to_owned()),
            ..KubeConfigOptions::default()
        };
        let mut config = Config::from_custom_kubeconfig(self.kubeconfig.clone(), &options)
            .await
            .expect("admin kubeconfig context");
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_owned()).collect());
        Client::try_from(config).expect("building client")
    }

    /// A fresh namespace for one test, created by admin.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let admin = self.client(Identity::Admin).await;
        let api: Api<Namespace> = Api::all(admin.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "kubepam.io/test": "true" } }
        }))
        .expect("namespace object");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("creating test namespace");
        TestNamespace { name, admin }
    }
}

/// A namespace made for one test. There is no namespace controller in the
/// test cluster, so deleting leaves it Terminating; its name is unique anyway.
pub struct TestNamespace {
    pub name: String,
    admin: Client,
}

impl TestNamespace {
    /// Gives `user` the rights `rules` (RBAC `PolicyRule`s as JSON) in this
    /// namespace, through a Role and RoleBinding named `name`, as admin.
    pub async fn bind_role(&self, name: &str, user: &str, rules: serde_json::Value) {
        use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
        let role: Role = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name }, "rules": rules,
        }))
        .expect("role object");
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }]
        }))
        .expect("role binding object");
        Api::<Role>::namespaced(self.admin.clone(), &self.name)
            .create(&PostParams::default(), &role)
            .await
            .expect("creating the role");
        Api::<RoleBinding>::namespaced(self.admin.clone(), &self.name)
            .create(&PostParams::default(), &binding)
            .await
            .expect("creating the role binding");
    }

    pub async fn delete(self) {
        let api: Api<Namespace> = Api::all(self.admin);
        let _ = api.delete(&self.name, &DeleteParams::default()).await;
    }
}

/// Waits until `check` returns `Some`, polling every 50 ms, or panics with
/// `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The HTTP status of a failed API call, if it was refused by the server.
pub fn api_status(result: &Result<impl Sized, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

/// kubectl at the version of the control plane (built with it, cached;
/// the build script runs once per test process).
pub fn kubectl() -> &'static Path {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL.get_or_init(|| {
        let output = Command::new(repo_root().join("hack/build-controlplane.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running hack/build-controlplane.sh");
        assert!(output.status.success(), "building the control plane failed");
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("kubectl")
    })
}

impl TestCluster {
    /// Runs kubectl as `who` against this cluster and returns its output.
    pub fn kubectl(&self, who: Identity, args: &[&str]) -> std::process::Output {
        Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .arg("--context")
            .arg(who.context())
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// Installs what `make run` installs: the CRDs and `manifests/` (namespace,
    /// service account, the operator's RBAC), and waits for the CRDs.
    pub fn install_kubepam(&self) {
        // manifests/ without the Deployment: kubepam runs as a local process.
        let manifests = repo_root().join("hack/local");
        let crds = repo_root().join("crds/kubepam.io.yaml");
        for args in [
            vec!["apply", "--server-side", "-k", manifests.to_str().unwrap()],
            vec![
                "wait",
                "--for",
                "condition=Established",
                "--timeout",
                "60s",
                "-f",
                crds.to_str().unwrap(),
            ],
        ] {
            let output = self.kubectl(Identity::Admin, &args);
            assert!(
                output.status.success(),
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Where this cluster keeps its logs.
    /// Where the operators' audit file sinks write (`--audit-dir`).
    pub fn audit_dir(&self) -> PathBuf {
        let dir = self
            .kubeconfig_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            .join("audit");
        std::fs::create_dir_all(&dir).expect("creating the audit directory");
        dir
    }

    pub fn log_dir(&self) -> PathBuf {
        let dir = self
            .kubeconfig_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            .join("logs");
        std::fs::create_dir_all(&dir).expect("creating the log directory");
        dir
    }

    /// Starts the `kubepam` binary as the `operator` identity, logging to
    /// `logs/operator-<n>.log`. It is killed when this test process exits.
    pub fn spawn_operator(&self) -> OperatorProcess {
        self.spawn_operator_with(&OperatorSpec::default())
    }

    /// Starts the `kubepam` binary as described by `spec`.
    pub fn spawn_operator_with(&self, spec: &OperatorSpec) -> OperatorProcess {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let instance = spec.instance.clone().unwrap_or_else(|| format!("test-{n}"));
        let log_path = self.log_dir().join(format!("operator-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("creating the operator log");
        // Its standard output is an audit sink of its own (`stdout: true`).
        let stdout = std::fs::File::create(self.log_dir().join(format!("operator-{n}.stdout")))
            .expect("creating the operator's standard output");
        // The API server calls the webhooks on loopback, as in `make run`.
        let port = spec.webhook_port.unwrap_or_else(free_port);
        let webhook_url = spec
            .webhook_url
            .clone()
            .unwrap_or_else(|| format!("https://127.0.0.1:{port}"));
        let metrics_port = free_port();
        // Only the API server may call the webhooks: it presents a
        // certificate from this CA (hack/cluster.sh).
        let client_ca = self
            .kubeconfig_path
            .parent()
            .map(|dir| dir.join("pki/webhook-client-ca.crt"))
            .filter(|ca| ca.exists());
        let mut command = Command::new(workspace_binary("kubepam"));
        command.arg("run");
        if let Some(ca) = client_ca {
            command.arg("--webhook-client-ca-file").arg(ca);
        }
        let child = command
            .arg("--metrics-bind")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--webhook-bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--webhook-url")
            .arg(&webhook_url)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .arg("--audit-dir")
            .arg(self.audit_dir())
            .args(&spec.args)
            // As manifests/deployment.yaml sets it.
            .env("MALLOC_ARENA_MAX", "2")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .args([
                "--context",
                spec.context.unwrap_or("operator"),
                "--log-format",
                "json",
                "--instance",
            ])
            .arg(&instance)
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("starting kubepam");
        kill_with_this_process(child.id());
        OperatorProcess {
            child,
            log_path,
            metrics_port,
            instance,
            webhook_url,
        }
    }
}

/// How to start one `kubepam run`; the defaults pick fresh values.
#[derive(Debug, Default, Clone)]
pub struct OperatorSpec {
    /// Its name and identity on the leader Lease: the name of a killed one
    /// models its container restarted in the same pod.
    pub instance: Option<String>,
    /// Where its admission server listens.
    pub webhook_port: Option<u16>,
    /// How the API server reaches the webhooks (e.g. a [`balancer`] in front
    /// of several replicas, as a Service would be).
    pub webhook_url: Option<String>,
    /// The identity it runs as; `operator` unless given.
    pub context: Option<&'static str>,
    /// More arguments to `kubepam run`.
    pub args: Vec<&'static str>,
    /// More environment variables.
    pub env: Vec<(&'static str, String)>,
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A TCP load balancer on loopback standing in for a Service in front of
/// several replicas: each connection goes to the next backend that accepts
/// it, so a dead replica is skipped. Returns its port; it runs until the
/// test's runtime ends.
pub async fn balancer(backends: Vec<u16>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the balancer");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            next += 1;
            let order: Vec<u16> = (0..backends.len())
                .map(|i| backends[(next + i) % backends.len()])
                .collect();
            tokio::spawn(async move {
                for backend in order {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Kills `pid` as soon as this test process exits, however it exits.
#[allow(clippy::zombie_processes)] // the watchdog must outlive this process
pub fn kill_with_this_process(pid: u32) {
    let script = "while kill -0 \"$0\" 2>/dev/null; do sleep 0.5; done; kill -9 \"$1\" 2>/dev/null";
    Command::new("setsid")
        .args(["bash", "-c", script])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting the watchdog");
}

/// A running `kubepam run`.
#[derive(Debug)]
pub struct OperatorProcess {
    child: std::process::Child,
    pub log_path: PathBuf,
    /// Where its `/metrics`, `/healthz` and `/readyz` answer (plain HTTP).
    pub metrics_port: u16,
    /// Its name, and identity on the leader Lease.
    pub instance: String,
    /// How the API server reaches its webhooks.
    pub webhook_url: String,
}

impl OperatorProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One series of its `/metrics`, e.g. `kubepam_leader`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = http_get(self.metrics_port, "/metrics").ok()?;
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(series))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// Waits until the webhook configurations send the API server to this
    /// replica's URL (the leader registers them once its caches are synced).
    pub async fn wait_registered(&self, admin: &Client) {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
        };
        // Each webhook's URL is this base and its own path.
        let ours = |url: Option<&String>| url.is_some_and(|u| u.starts_with(&self.webhook_url));
        let validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
        let mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone());
        eventually(
            "kubepam registers its webhooks",
            Duration::from_secs(60),
            || async {
                let v = validating.get_opt("kubepam").await.ok()??;
                let m = mutating.get_opt("kubepam").await.ok()??;
                let v_url = v.webhooks?.first()?.client_config.url.clone();
                let m_url = m.webhooks?.first()?.client_config.url.clone();
                (ours(v_url.as_ref()) && ours(m_url.as_ref())).then_some(())
            },
        )
        .await;
        wait_admission_policies_loaded(admin).await;
    }

    /// Whether it holds the leader Lease and reconciles.
    pub fn is_leader(&self) -> bool {
        self.metric("kubepam_leader") == Some(1.0)
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for it to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("waiting for kubepam to exit")
    }

    /// SIGKILL, as a crash or an evicted pod would stop it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until kubepam's admission policies exist and the API server has had time to load
/// them: it compiles new policies and bindings on a timer (about once a second), so for a
/// moment after kubepam creates them they are not in force yet. Tests start after that, as a
/// cluster does once kubepam has been installed for more than a moment.
async fn wait_admission_policies_loaded(admin: &Client) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let (policies, bindings) = kubepam_core::webhook_configuration::admission_policies();
    let names = |v: Vec<Option<String>>| v.into_iter().flatten().collect::<Vec<_>>();
    let policy_names = names(policies.into_iter().map(|p| p.metadata.name).collect());
    let binding_names = names(bindings.into_iter().map(|b| b.metadata.name).collect());
    let policy_api = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let binding_api = Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone());
    let newest = eventually(
        "kubepam creates its admission policies",
        Duration::from_secs(60),
        || async {
            let mut made = Vec::new();
            for name in &policy_names {
                made.push(policy_api.get_opt(name).await.ok()??.metadata);
            }
            for name in &binding_names {
                made.push(binding_api.get_opt(name).await.ok()??.metadata);
            }
            made.into_iter()
                .map(|meta| meta.creation_timestamp.map(|t| t.0))
                .collect::<Option<Vec<_>>>()?
                .into_iter()
                .max()
        },
    )
    .await;
    // Creation times are whole seconds: two more cover the API server's timer.
    let loaded = newest + std::time::Duration::from_secs(3);
    let now = k8s_openapi::jiff::Timestamp::now();
    if let Ok(left) = std::time::Duration::try_from(loaded - now) {
        tokio::time::sleep(left).await;
    }
}

static OPERATOR: OnceLock<OperatorProcess> = OnceLock::new();

/// The cluster with kubepam installed and one operator running for this
/// whole test binary.
pub fn kubepam() -> &'static TestCluster {
    let cluster = cluster();
    OPERATOR.get_or_init(|| {
        cluster.install_kubepam();
        let operator = cluster.spawn_operator();
        // Tests start once the webhooks are in place, as after `make run`.
        // (On a runtime of its own: this may be called from a sync context.)
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime")
                        .block_on(async {
                            let admin = cluster.client(Identity::Admin).await;
                            operator.wait_registered(&admin).await;
                        });
                })
                .join()
                .expect("waiting for the webhooks");
        });
        operator
    });
    cluster
}

/// The operator started by [`kubepam`].
pub fn operator() -> &'static OperatorProcess {
    kubepam();
    OPERATOR.get().expect("started by kubepam()")
}

/// A plain HTTP GET on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The operator of a binary whose tests change cluster-wide state (the
/// control, the operator process), held by one test at a time.
pub static EXCLUSIVE: tokio::sync::Mutex<Option<OperatorProcess>> =
    tokio::sync::Mutex::const_new(None);

/// Holds the cluster for one test: kubepam installed, one operator running
/// (started on first use, or again after a test took it away).
pub async fn exclusive_operator() -> (
    tokio::sync::MutexGuard<'static, Option<OperatorProcess>>,
    &'static TestCluster,
) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let cluster = cluster();
    INSTALLED.get_or_init(|| cluster.install_kubepam());
    let mut guard = EXCLUSIVE.lock().await;
    if guard.is_none() {
        let admin = cluster.client(Identity::Admin).await;
        let operator = cluster.spawn_operator();
        operator.wait_registered(&admin).await;
        *guard = Some(operator);
    }
    (guard, cluster)
}
