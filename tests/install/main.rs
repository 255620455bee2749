//! Installing kubepam with Helm (`charts/kubepam`) and with kustomize's cert-manager component
//! (`manifests/components/cert-manager`): the chart lints, renders what `manifests/` installs,
//! takes its webhook certificate from each source, refuses what cannot work, and installs,
//! upgrades, adopts a kustomize install and uninstalls on the real API server.
//!
//! The chart installs cluster-scoped objects (CRDs, ClusterRoles, bindings), so this suite has
//! a control plane of its own and its tests run one at a time. That control plane is a
//! kube-apiserver with etcd and nothing else: no node and no kube-controller-manager, so no Pod
//! ever runs and a Deployment creates nothing. What is tested here is what the API server
//! accepts and stores; kubepam running in a pod, with its certificate from files laid out as
//! cert-manager's Secret, is the `incluster` suite's.
//!
//! helm and cert-manager's CRDs come from `hack/build-tools.sh`; helm runs with its cache,
//! configuration and data in a temporary directory, with an explicit kubeconfig and context.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test

use kubepam_testkit::cluster as support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use serde::Deserialize as _;
use serde_json::{Value, json};
use support::{Identity, TestCluster, repo_root};

/// The only namespace kubepam runs in.
const NAMESPACE: &str = "kubepam-system";
const RELEASE: &str = "kubepam";
/// Where the chart and the component mount a webhook certificate's Secret.
const TLS_DIR: &str = "/etc/kubepam/webhook-tls";
/// What kubepam makes and keeps itself at run time; never part of an install.
const KUBEPAMS_OWN_KINDS: [&str; 4] = [
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Every value of the chart set to something other than its default (the certificate from
/// cert-manager, with durations of its own).
const EVERY_VALUE: &str = r#"
image:
  repository: registry.example.com/security/kubepam
  tag: 0.1.0-rc.1
  pullPolicy: Always
imagePullSecrets:
  - name: regcred
replicas: 3
resources:
  requests: { cpu: 50m, memory: 128Mi }
  limits: { memory: 256Mi }
leaderElection:
  leaseDuration: 15s
  renewGrace: 5s
log:
  level: kubepam=debug,kube=info
  format: text
clusterName: prod-eu-1
audit:
  volume:
    persistentVolumeClaim: { claimName: kubepam-audit }
webhook:
  certificate:
    source: cert-manager
    certManager:
      duration: 720h
      renewBefore: 240h
      caDuration: 43800h
  clientCAConfigMap: kubepam-webhook-client-ca
serviceAccount:
  annotations: { example.com/owner: platform }
rbac:
  persistenceCleanup: false
  user:
    create: true
    groups: [developers, pam-approvers]
podDisruptionBudget:
  enabled: true
  maxUnavailable: 2
networkPolicy:
  enabled: true
  podCIDRs: [10.244.0.0/16, 10.96.0.0/12]
  monitoringNamespace: observability
nodeSelector: { kubernetes.io/os: linux }
tolerations:
  - { key: dedicated, operator: Equal, value: security, effect: NoSchedule }
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - { key: kubernetes.io/arch, operator: In, values: [amd64, arm64] }
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: DoNotSchedule
    labelSelector:
      matchLabels: { app.kubernetes.io/name: kubepam }
priorityClassName: security-critical
podAnnotations: { example.com/reviewed: "2026-01" }
podLabels: { team: platform }
extraArgs: [--metrics-bind=0.0.0.0:8080]
extraEnv:
  - { name: RUST_BACKTRACE, value: "1" }
extraVolumes:
  - { name: scratch, emptyDir: {} }
extraVolumeMounts:
  - { name: scratch, mountPath: /tmp }
metrics:
  serviceMonitor: { enabled: false, interval: 1m, labels: { release: prometheus } }
"#;

/// The tests share one control plane and one release name: one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- tools -------------------------------------------------------------------------------

struct Tools {
    helm: PathBuf,
    cert_manager_crds: PathBuf,
}

/// helm and cert-manager's CRDs at the pinned versions (built once, cached).
fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let bin = support::tools_bin();
        Tools {
            helm: bin.join("helm"),
            cert_manager_crds: bin
                .parent()
                .expect("the tools directory")
                .join("cert-manager-crds"),
        }
    })
}

/// The control plane's Kubernetes version (`hack/controlplane.env`): what `helm template` and
/// `helm lint` render for, as `helm install` does for the cluster it talks to.
fn kubernetes_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let env = std::fs::read_to_string(repo_root().join("hack/controlplane.env")).unwrap();
        env.lines()
            .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .expect("KUBERNETES_VERSION in hack/controlplane.env")
    })
}

fn chart() -> String {
    repo_root().join("charts/kubepam").display().to_string()
}

/// helm with its cache, configuration and data in a directory of its own (nothing in `$HOME`),
/// removed when dropped, and nothing of the environment's helm or kubectl settings.
struct Helm {
    home: tempfile::TempDir,
}

impl Helm {
    fn new() -> Self {
        Helm {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&tools().helm);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("HELM_CACHE_HOME", self.home.path().join("cache"))
            .env("HELM_CONFIG_HOME", self.home.path().join("config"))
            .env("HELM_DATA_HOME", self.home.path().join("data"));
        command
    }

    /// Without a cluster (`lint`, `template`).
    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("running helm")
    }

    /// Against `cluster`, as its administrator.
    fn on(&self, cluster: &TestCluster, args: &[&str]) -> Output {
        self.command()
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig_path)
            .args(["--kube-context", Identity::Admin.context()])
            .args(args)
            .output()
            .expect("running helm")
    }

    /// `helm template` of the chart as release `kubepam` into `namespace`.
    fn template(&self, namespace: &str, values: &[&str]) -> Output {
        let chart = chart();
        let mut args = vec![
            "template",
            RELEASE,
            &chart,
            "--namespace",
            namespace,
            "--kube-version",
            kubernetes_version(),
        ];
        args.extend_from_slice(values);
        self.run(&args)
    }

    /// The chart rendered into kubepam-system.
    fn render(&self, values: &[&str]) -> String {
        succeeded(&self.template(NAMESPACE, values), "helm template")
    }
}

/// Its standard output, once `output` is known to be a success.
fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Its standard error, once `output` is known to be a failure.
fn failed(output: &Output, what: &str) -> String {
    assert!(
        !output.status.success(),
        "{what} succeeded, but must not:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file holding `text`, removed when dropped.
fn file_with(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// `kubectl kustomize DIR`, without a cluster.
fn kustomize(dir: &Path) -> String {
    let output = Command::new(support::kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("running kubectl kustomize");
    succeeded(&output, &format!("kubectl kustomize {}", dir.display()))
}

/// A kustomization of `manifests/` with the cert-manager component, as a user writes one
/// (kustomize takes relative paths only).
fn kustomization_with_cert_manager() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().canonicalize().unwrap();
    let root = repo_root().canonicalize().unwrap();
    let up: PathBuf = here.components().skip(1).map(|_| "..").collect();
    let to_root = up.join(root.strip_prefix("/").unwrap());
    let manifests = to_root.join("manifests");
    let component = to_root.join("manifests/components/cert-manager");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {}\ncomponents:\n  - {}\n",
            manifests.display(),
            component.display()
        ),
    )
    .unwrap();
    dir
}

// ---- objects -----------------------------------------------------------------------------

/// The objects of a YAML stream (empty documents left out).
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("a YAML document"))
        .filter(|object| !object.is_null())
        .collect()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

/// `Kind namespace/name` or `Kind name`.
fn key(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{} {namespace}/{name}", kind(object)),
        None => format!("{} {name}", kind(object)),
    }
}

fn by_key(objects: Vec<Value>) -> BTreeMap<String, Value> {
    let mut index = BTreeMap::new();
    for object in objects {
        let key = key(&object);
        assert!(index.insert(key.clone(), object).is_none(), "{key} twice");
    }
    index
}

/// The one object of `kind` named `name`.
fn find<'a>(objects: &'a [Value], wanted: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == wanted && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {wanted} {name} among {:?}", keys(objects)))
}

fn keys(objects: &[Value]) -> Vec<String> {
    objects.iter().map(key).collect()
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .expect("the container's args")
        .iter()
        .map(|a| a.as_str().expect("a string argument").to_owned())
        .collect()
}

/// What must be equal between two installs of one object: the fields that decide what it does
/// (names, labels and the image aside).
fn what_matters(object: &Value) -> Value {
    let pick = |fields: &[&str]| {
        Value::Object(
            fields
                .iter()
                .map(|f| ((*f).to_owned(), object[*f].clone()))
                .collect(),
        )
    };
    match kind(object) {
        "ClusterRole" | "Role" => pick(&["rules", "aggregationRule"]),
        "ClusterRoleBinding" | "RoleBinding" => pick(&["roleRef", "subjects"]),
        "ServiceAccount" => pick(&["automountServiceAccountToken", "imagePullSecrets"]),
        "Deployment" => {
            let mut spec = object["spec"].clone();
            // The pod's labels (checked to include the selector's) and the image differ.
            spec["template"]
                .as_object_mut()
                .expect("a pod template")
                .remove("metadata");
            for container in spec["template"]["spec"]["containers"]
                .as_array_mut()
                .expect("containers")
            {
                let container = container.as_object_mut().expect("a container");
                container.remove("image");
                container.remove("imagePullPolicy");
            }
            json!({ "spec": spec })
        }
        _ => pick(&["spec"]),
    }
}

/// Every difference between `a` and `b` below `path`; numbers compare by value
/// (`65535.0` is `65535`).
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let fields: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for field in fields {
                differences(
                    &format!("{path}.{field}"),
                    x.get(field).unwrap_or(&Value::Null),
                    y.get(field).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::Number(x), Value::Number(y))
            if x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits) => {}
        _ if a == b => {}
        _ => out.push(format!("{path}: {} vs {}", shown(a), shown(b))),
    }
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// The differences that matter between an install by kustomize (`expected`) and the chart's
/// (`actual`), by object and field; the Namespace is the chart's `--create-namespace`.
fn install_differences(expected: &str, actual: &str) -> Vec<String> {
    let expected = by_key(objects(expected));
    let actual = by_key(objects(actual));
    let mut out = Vec::new();
    for (key, want) in &expected {
        if kind(want) == "Namespace" {
            continue;
        }
        let Some(got) = actual.get(key) else {
            out.push(format!("{key}: missing from the chart"));
            continue;
        };
        differences(key, &what_matters(want), &what_matters(got), &mut out);
        let labels = |o: &Value, pointer: &str| {
            o.pointer(pointer)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        for pointer in ["/metadata/labels", "/spec/template/metadata/labels"] {
            let (want_labels, got_labels) = (labels(want, pointer), labels(got, pointer));
            for (label, value) in &want_labels {
                if got_labels.get(label) != Some(value) {
                    out.push(format!(
                        "{key}: {pointer} lacks {label}={value} (has {got_labels:?})"
                    ));
                }
            }
        }
    }
    for key in actual.keys().filter(|k| !expected.contains_key(*k)) {
        out.push(format!("{key}: only in the chart"));
    }
    out
}

// ---- the cluster ---------------------------------------------------------------------------

/// kubectl as admin, which must succeed; its standard output.
fn kubectl_ok(cluster: &TestCluster, args: &[&str]) -> String {
    succeeded(
        &cluster.kubectl(Identity::Admin, args),
        &format!("kubectl {}", args.join(" ")),
    )
}

/// The object, or `None` when it does not exist.
fn get(
    cluster: &TestCluster,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let mut args = vec!["get", resource, name, "--ignore-not-found", "-o", "json"];
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    let out = kubectl_ok(cluster, &args);
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).expect("kubectl's JSON"))
}

/// This suite's control plane with the namespace kubepam-system (the dry runs need it: a dry
/// run creates nothing, not even the Namespace in its stream) and cert-manager's CRDs, so that
/// Issuers and Certificates are checked against cert-manager's real schema.
fn prepared() -> &'static TestCluster {
    static PREPARED: OnceLock<()> = OnceLock::new();
    let cluster = support::cluster();
    PREPARED.get_or_init(|| {
        let namespace = repo_root().join("manifests/namespace.yaml");
        kubectl_ok(
            cluster,
            &["apply", "--server-side", "-f", namespace.to_str().unwrap()],
        );
        let crds = tools().cert_manager_crds.to_str().unwrap();
        kubectl_ok(cluster, &["apply", "--server-side", "-f", crds]);
        kubectl_ok(
            cluster,
            &[
                "wait",
                "--for",
                "condition=Established",
                "--timeout",
                "60s",
                "-f",
                crds,
            ],
        );
    });
    cluster
}

/// Removes what an earlier test installed (a release, a kustomize install, kubepam's CRDs),
/// so that each install starts from a cluster without kubepam. The namespace stays: with no
/// namespace controller, a deleted namespace would stay Terminating for good.
fn reset(cluster: &TestCluster, helm: &Helm) {
    succeeded(
        &helm.on(
            cluster,
            &[
                "uninstall",
                RELEASE,
                "--namespace",
                NAMESPACE,
                "--ignore-not-found",
            ],
        ),
        "helm uninstall",
    );
    let selector = "app.kubernetes.io/name=kubepam";
    kubectl_ok(
        cluster,
        &[
            "delete",
            "deployment,service,poddisruptionbudget,networkpolicy,serviceaccount,role,rolebinding,issuer,certificate",
            "-n",
            NAMESPACE,
            "-l",
            selector,
            "--ignore-not-found",
        ],
    );
    kubectl_ok(
        cluster,
        &[
            "delete",
            "clusterrole,clusterrolebinding",
            "-l",
            selector,
            "--ignore-not-found",
        ],
    );
    let crds = repo_root().join("crds/kubepam.io.yaml");
    kubectl_ok(
        cluster,
        &["delete", "--ignore-not-found", "-f", crds.to_str().unwrap()],
    );
}

/// A server-side dry run of `manifests`: it must succeed without a single warning.
fn dry_run_cleanly(cluster: &TestCluster, manifests: &str, what: &str) -> String {
    let file = file_with(manifests);
    let output = cluster.kubectl(
        Identity::Admin,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "-f",
            file.path().to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what}: the dry run failed:\n{stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("warning"),
        "{what}: warnings:\n{stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The objects of the release, as installed: each labelled and annotated as Helm's.
fn assert_in_release(cluster: &TestCluster, objects: &[(&str, Option<&str>, &str)]) {
    for (resource, namespace, name) in objects {
        let object = get(cluster, resource, *namespace, name)
            .unwrap_or_else(|| panic!("{resource} {name} is not installed"));
        let metadata = &object["metadata"];
        assert_eq!(
            metadata["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{resource} {name}"
        );
        assert_eq!(
            metadata["labels"]["app.kubernetes.io/name"], "kubepam",
            "{resource} {name}"
        );
        assert_eq!(
            metadata["annotations"]["meta.helm.sh/release-name"], RELEASE,
            "{resource} {name}"
        );
        assert_eq!(
            metadata["annotations"]["meta.helm.sh/release-namespace"], NAMESPACE,
            "{resource} {name}"
        );
    }
}

/// What a default install makes, besides the CRDs.
const INSTALLED: [(&str, Option<&str>, &str); 13] = [
    ("deployment", Some(NAMESPACE), "kubepam"),
    ("service", Some(NAMESPACE), "kubepam"),
    ("poddisruptionbudget", Some(NAMESPACE), "kubepam"),
    ("networkpolicy", Some(NAMESPACE), "kubepam"),
    ("serviceaccount", Some(NAMESPACE), "kubepam"),
    ("role", Some(NAMESPACE), "kubepam-operator"),
    ("rolebinding", Some(NAMESPACE), "kubepam-operator"),
    ("clusterrole", None, "kubepam-operator"),
    ("clusterrole", None, "kubepam-persistence-cleanup"),
    ("clusterrole", None, "kubepam-user"),
    ("clusterrolebinding", None, "kubepam-operator"),
    ("clusterrolebinding", None, "kubepam-persistence-cleanup"),
    ("clusterrolebinding", None, "kubepam-user"),
];

const KUBEPAM_CRDS: [&str; 3] = [
    "privilegedaccesscontrols.kubepam.io",
    "accesspolicies.kubepam.io",
    "elevationrequests.kubepam.io",
];

// ---- the tests -----------------------------------------------------------------------------

/// `helm lint --strict` finds nothing, with the defaults, each certificate source and every
/// value set. (Lint only logs a template's `fail`, so a `Fail:` line is a failure here.)
#[test]
fn the_chart_lints_strictly_with_every_certificate_source() {
    let _one = one_at_a_time();
    let helm = Helm::new();
    let every_value = file_with(EVERY_VALUE);
    let cases: [(&str, Vec<&str>); 5] = [
        ("the defaults", vec![]),
        (
            "cert-manager",
            vec!["--set", "webhook.certificate.source=cert-manager"],
        ),
        (
            "cert-manager with an issuer of one's own",
            vec![
                "--set",
                "webhook.certificate.source=cert-manager",
                "--set",
                "webhook.certificate.certManager.issuerRef.name=corp-ca",
                "--set",
                "webhook.certificate.certManager.issuerRef.kind=Issuer",
            ],
        ),
        (
            "a Secret",
            vec![
                "--set",
                "webhook.certificate.source=secret",
                "--set",
                "webhook.certificate.secret.name=kubepam-webhook-corp",
            ],
        ),
        (
            "every value",
            vec!["--values", every_value.path().to_str().unwrap()],
        ),
    ];
    let chart = chart();
    for (case, values) in cases {
        let mut args = vec![
            "lint",
            "--strict",
            &chart,
            "--namespace",
            NAMESPACE,
            "--kube-version",
            kubernetes_version(),
        ];
        args.extend(values);
        let output = helm.run(&args);
        let stdout = succeeded(&output, &format!("helm lint ({case})"));
        assert!(
            stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{case}:\n{stdout}"
        );
        for finding in ["[WARNING]", "[ERROR]", "Fail:"] {
            assert!(!stdout.contains(finding), "{case}: {finding}\n{stdout}");
        }
    }
}

/// What the chart renders, with each certificate source and every value set, and what
/// kustomize builds with the cert-manager component, the API server accepts as it is: a
/// server-side dry run without a warning, Issuers and Certificates checked against
/// cert-manager's own CRDs.
#[test]
fn the_chart_and_the_component_apply_cleanly_with_a_server_side_dry_run() {
    let _one = one_at_a_time();
    let cluster = prepared();
    let helm = Helm::new();
    let every_value = file_with(EVERY_VALUE);
    let common = [
        "deployment.apps/kubepam",
        "service/kubepam",
        "poddisruptionbudget.policy/kubepam",
        "networkpolicy.networking.k8s.io/kubepam",
        "customresourcedefinition.apiextensions.k8s.io/elevationrequests.kubepam.io",
        "clusterrole.rbac.authorization.k8s.io/kubepam-operator",
    ];
    let certificates = [
        "issuer.cert-manager.io/kubepam-selfsigned",
        "certificate.cert-manager.io/kubepam-webhook-ca",
        "issuer.cert-manager.io/kubepam-webhook-ca",
        "certificate.cert-manager.io/kubepam-webhook",
    ];
    let cases: [(&str, Vec<&str>, &[&str]); 5] = [
        ("the chart's defaults", vec![], &[]),
        (
            "the chart with cert-manager",
            vec!["--set", "webhook.certificate.source=cert-manager"],
            &certificates,
        ),
        (
            "the chart with cert-manager and an issuer of one's own",
            vec![
                "--set",
                "webhook.certificate.source=cert-manager",
                "--set",
                "webhook.certificate.certManager.issuerRef.name=corp-ca",
                "--set",
                "webhook.certificate.certManager.issuerRef.kind=Issuer",
            ],
            &["certificate.cert-manager.io/kubepam-webhook"],
        ),
        (
            "the chart with a Secret",
            vec![
                "--set",
                "webhook.certificate.source=secret",
                "--set",
                "webhook.certificate.secret.name=kubepam-webhook-corp",
            ],
            &[],
        ),
        (
            "the chart with every value",
            vec!["--values", every_value.path().to_str().unwrap()],
            &certificates,
        ),
    ];
    for (case, values, extra) in cases {
        let applied = dry_run_cleanly(cluster, &helm.render(&values), case);
        for object in common.iter().chain(extra) {
            assert!(
                applied.contains(object),
                "{case}: {object} missing from:\n{applied}"
            );
        }
    }
    let kustomization = kustomization_with_cert_manager();
    let applied = dry_run_cleanly(
        cluster,
        &kustomize(kustomization.path()),
        "manifests/ with the cert-manager component",
    );
    for object in common.iter().chain(&certificates) {
        assert!(
            applied.contains(object),
            "the component: {object} missing from:\n{applied}"
        );
    }
}

/// Any release namespace but kubepam-system is refused before anything is installed, with
/// the command that works.
#[test]
fn a_namespace_other_than_kubepam_system_is_refused() {
    let _one = one_at_a_time();
    let helm = Helm::new();
    for namespace in ["default", "kube-system", "kubepam"] {
        let stderr = failed(
            &helm.template(namespace, &[]),
            &format!("helm template -n {namespace}"),
        );
        assert!(
            stderr.contains(&format!("not \"{namespace}\""))
                && stderr.contains("--namespace kubepam-system --create-namespace"),
            "{namespace}: {stderr}"
        );
    }
    let cluster = prepared();
    let chart = chart();
    let stderr = failed(
        &helm.on(
            cluster,
            &["install", RELEASE, &chart, "--namespace", "default"],
        ),
        "helm install -n default",
    );
    assert!(
        stderr.contains("--namespace kubepam-system --create-namespace"),
        "{stderr}"
    );
    assert!(get(cluster, "deployment", Some("default"), "kubepam").is_none());
    let releases = succeeded(
        &helm.on(cluster, &["list", "--namespace", "default", "--all", "-q"]),
        "helm list",
    );
    assert!(
        releases.trim().is_empty(),
        "releases in default: {releases}"
    );
}

/// Values that cannot work fail the render with what to do, and the control is rendered from
/// its values once kubepam's CRDs are there.
#[test]
fn values_that_cannot_work_are_refused_with_what_to_do() {
    let _one = one_at_a_time();
    let helm = Helm::new();
    let cases: [(&[&str], &str); 13] = [
        (
            &["--set", "webhook.certificate.source=vault"],
            "value must be one of 'generated', 'cert-manager', 'secret'",
        ),
        (
            &["--set", "webhook.certificate.source=secret"],
            "needs webhook.certificate.secret.name",
        ),
        (
            &["--set", "leaderElection.renewGrace=10s"],
            "leaderElection.renewGrace (10s) must be shorter than leaderElection.leaseDuration (10s)",
        ),
        (
            &["--set", "leaderElection.leaseDuration=1h"],
            "/leaderElection/leaseDuration",
        ),
        (
            &["--set", "control.create=true"],
            "control.create needs control.approverGroup",
        ),
        (
            &[
                "--set",
                "control.create=true",
                "--set",
                "control.approverGroup=pam-approvers",
            ],
            "install the chart without control.create first, then `helm upgrade` with control.create=true",
        ),
        // What would open kubepam up, refused as an attacker or a careless value would set it.
        (
            &[
                "--set",
                "webhook.certificate.source=cert-manager",
                "--set",
                "webhook.certificate.certManager.issuerRef.name=corp-ca",
                "--set",
                "webhook.certificate.certManager.issuerRef.kind=ClusterIssuer",
            ],
            "issuerRef names a ClusterIssuer",
        ),
        (
            &["--set", "extraArgs={--no-webhooks}"],
            "extraArgs may not set --no-webhooks",
        ),
        (
            &["--set", "extraArgs={--webhook-url=https://evil.example}"],
            "extraArgs may not set --webhook-url",
        ),
        (
            &[
                "--set",
                "extraEnv[0].name=KUBEPAM_NO_WEBHOOKS",
                "--set",
                "extraEnv[0].value=true",
            ],
            "extraEnv may not set KUBEPAM_NO_WEBHOOKS",
        ),
        (&["--set", "replicas=0"], "/replicas"),
        // A value that would smuggle a second argument past the extraArgs check.
        (
            &[
                "--set-string",
                "clusterName=prod\n            - --no-webhooks",
            ],
            "/clusterName",
        ),
        (
            &[
                "--set-string",
                "log.level=info\n            - --no-webhooks",
            ],
            "/log/level",
        ),
    ];
    for (values, message) in cases {
        let stderr = failed(&helm.template(NAMESPACE, values), &format!("{values:?}"));
        assert!(stderr.contains(message), "{values:?}: {stderr}");
    }
    let rendered = objects(&helm.render(&[
        "--api-versions",
        "kubepam.io/v1alpha1/PrivilegedAccessControl",
        "--set",
        "control.create=true",
        "--set",
        "control.approverGroup=pam-approvers",
        "--set",
        "control.systemAccounts={system:serviceaccount:ci:deployer}",
    ]));
    let control = find(&rendered, "PrivilegedAccessControl", "default");
    assert_eq!(
        control["spec"],
        json!({
            "enabled": true,
            "defaultApproverGroup": "pam-approvers",
            "systemAccounts": ["system:serviceaccount:ci:deployer"],
        })
    );
}

/// The chart's CRDs are `crds/` byte for byte (`make crds` writes `crds/`; copy it to
/// `charts/kubepam/files/crds/` with it).
#[test]
fn the_charts_crds_are_those_of_crds_byte_for_byte() {
    let generated = std::fs::read(repo_root().join("crds/kubepam.io.yaml")).unwrap();
    let chart =
        std::fs::read(repo_root().join("charts/kubepam/files/crds/kubepam.io.yaml")).unwrap();
    assert!(
        generated == chart,
        "charts/kubepam/files/crds/kubepam.io.yaml is not crds/kubepam.io.yaml: \
         cp crds/kubepam.io.yaml charts/kubepam/files/crds/"
    );
}

/// With its defaults the chart installs what `manifests/` installs: the same objects, every
/// rule and binding, the Deployment (arguments, environment, ports, probes, security
/// context, resources, volumes), the Service, the `PodDisruptionBudget`, the `NetworkPolicy` and
/// the CRDs, and the labels `manifests/` selects by.
#[test]
fn the_chart_renders_what_manifests_installs() {
    let _one = one_at_a_time();
    let helm = Helm::new();
    let manifests = kustomize(&repo_root().join("manifests"));
    let chart = helm.render(&[]);
    let differences = install_differences(&manifests, &chart);
    assert!(
        differences.is_empty(),
        "the chart (defaults) and manifests/ differ, by object and field \
         (manifests/ first, the chart second):\n{}",
        differences.join("\n")
    );
    // The comparison sees what it must: a changed rule is a difference.
    let changed = chart.replacen("\"roles\"", "\"rolez\"", 1);
    assert!(!install_differences(&manifests, &changed).is_empty());
}

/// The chart with its certificate from cert-manager installs what kustomize installs with the
/// cert-manager component.
#[test]
fn the_cert_manager_source_renders_what_the_component_installs() {
    let _one = one_at_a_time();
    let helm = Helm::new();
    let kustomization = kustomization_with_cert_manager();
    let component = kustomize(kustomization.path());
    let chart = helm.render(&["--set", "webhook.certificate.source=cert-manager"]);
    let differences = install_differences(&component, &chart);
    assert!(
        differences.is_empty(),
        "the chart (cert-manager) and manifests/ with the cert-manager component differ \
         (the component first, the chart second):\n{}",
        differences.join("\n")
    );
}

/// Where an install's webhook certificate must come from.
enum Source {
    /// kubepam generates it: nothing mounted, no cert-manager object.
    Generated,
    /// A Secret of the user's: mounted, no cert-manager object.
    Secret(&'static str),
    /// cert-manager, with the chart's (or the component's) self-signed CA.
    OwnCa,
    /// cert-manager, with this issuer of the user's.
    Issuer(Value),
}

/// Nothing in `rendered` is what kubepam registers itself, and nothing asks cert-manager's CA
/// injector to write a caBundle that kubepam keeps as it writes it.
fn assert_nothing_of_kubepams_own(case: &str, rendered: &[Value]) {
    for object in rendered {
        assert!(
            !KUBEPAMS_OWN_KINDS.contains(&kind(object)),
            "{case}: {} is kubepam's to register",
            key(object)
        );
        assert!(
            object["metadata"]["annotations"]
                .get("cert-manager.io/inject-ca-from")
                .is_none(),
            "{case}: {} asks for the CA injector",
            key(object)
        );
    }
}

/// The Secret mounted read-only at `TLS_DIR`, checked to be given to kubepam as its three
/// files; `None` when none is, checked to give kubepam none of those flags.
fn mounted_secret(case: &str, rendered: &[Value]) -> Option<String> {
    let deployment = find(rendered, "Deployment", "kubepam");
    let args = args(deployment);
    let mount = container(deployment)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == TLS_DIR);
    let Some(mount) = mount else {
        assert!(
            !args.iter().any(|a| a.starts_with("--tls-")),
            "{case}: {args:?}"
        );
        return None;
    };
    for (flag, file) in [("cert", "tls.crt"), ("key", "tls.key"), ("ca", "ca.crt")] {
        let flag = format!("--tls-{flag}-file={TLS_DIR}/{file}");
        assert!(args.contains(&flag), "{case}: {flag} missing from {args:?}");
    }
    assert_eq!(mount["readOnly"], true, "{case}");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{case}: no volume {}", mount["name"]));
    Some(volume["secret"]["secretName"].as_str().unwrap().to_owned())
}

/// The serving Certificate: into `secret`, for the webhook Service, a new key every renewal.
fn serving_certificate<'a>(case: &str, rendered: &'a [Value], secret: &str) -> &'a Value {
    let serving = find(rendered, "Certificate", "kubepam-webhook");
    assert_eq!(serving["spec"]["secretName"], secret, "{case}");
    assert_eq!(
        serving["spec"]["dnsNames"],
        json!([
            "kubepam.kubepam-system.svc",
            "kubepam.kubepam-system.svc.cluster.local"
        ]),
        "{case}"
    );
    assert_eq!(
        serving["spec"]["privateKey"]["rotationPolicy"], "Always",
        "{case}"
    );
    serving
}

/// self-signed Issuer -> CA Certificate -> CA Issuer -> the serving Certificate.
fn assert_own_ca(case: &str, rendered: &[Value], serving: &Value) {
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({ "group": "cert-manager.io", "kind": "Issuer", "name": "kubepam-webhook-ca" }),
        "{case}"
    );
    let ca_issuer = find(rendered, "Issuer", "kubepam-webhook-ca");
    let ca = find(rendered, "Certificate", "kubepam-webhook-ca");
    assert_eq!(ca["spec"]["secretName"], "kubepam-webhook-ca", "{case}");
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"], ca["spec"]["secretName"],
        "{case}"
    );
    assert_eq!(ca["spec"]["isCA"], true, "{case}");
    assert_eq!(
        ca["spec"]["issuerRef"]["name"], "kubepam-selfsigned",
        "{case}"
    );
    let selfsigned = find(rendered, "Issuer", "kubepam-selfsigned");
    assert_eq!(selfsigned["spec"]["selfSigned"], json!({}), "{case}");
}

/// With cert-manager or a Secret, kubepam reads the Secret's tls.crt, tls.key and ca.crt from
/// files and writes ca.crt as its webhooks' caBundle itself: the Secret is mounted and the
/// three flags point into it, the Certificate names the webhook Service and gets a new key on
/// every renewal, and nothing asks cert-manager's CA injector to fight kubepam over the
/// caBundle. Generated: none of it. No source installs what kubepam registers itself.
#[test]
fn each_certificate_source_gives_kubepam_its_secret_as_files() {
    let _one = one_at_a_time();
    let helm = Helm::new();
    let kustomization = kustomization_with_cert_manager();
    let cases = [
        ("generated", helm.render(&[]), Source::Generated),
        (
            "cert-manager",
            helm.render(&["--set", "webhook.certificate.source=cert-manager"]),
            Source::OwnCa,
        ),
        (
            "cert-manager with an issuer of one's own",
            helm.render(&[
                "--set",
                "webhook.certificate.source=cert-manager",
                "--set",
                "webhook.certificate.certManager.issuerRef.name=corp-ca",
                "--set",
                "webhook.certificate.certManager.issuerRef.kind=Issuer",
            ]),
            Source::Issuer(
                json!({ "name": "corp-ca", "kind": "Issuer", "group": "cert-manager.io" }),
            ),
        ),
        (
            "a Secret",
            helm.render(&[
                "--set",
                "webhook.certificate.source=secret",
                "--set",
                "webhook.certificate.secret.name=kubepam-webhook-corp",
            ]),
            Source::Secret("kubepam-webhook-corp"),
        ),
        (
            "the kustomize component",
            kustomize(kustomization.path()),
            Source::OwnCa,
        ),
    ];
    for (case, yaml, source) in cases {
        let rendered = objects(&yaml);
        assert_nothing_of_kubepams_own(case, &rendered);
        let secret = mounted_secret(case, &rendered);
        let cert_manager: Vec<String> = rendered
            .iter()
            .filter(|o| {
                o["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("cert-manager.io/"))
            })
            .map(key)
            .collect();
        match source {
            Source::Generated => {
                assert_eq!(secret, None, "{case}");
                assert!(cert_manager.is_empty(), "{case}: {cert_manager:?}");
            }
            Source::Secret(name) => {
                assert_eq!(secret.as_deref(), Some(name), "{case}");
                assert!(cert_manager.is_empty(), "{case}: {cert_manager:?}");
            }
            Source::OwnCa => {
                let secret = secret.unwrap_or_else(|| panic!("{case}: no Secret mounted"));
                let serving = serving_certificate(case, &rendered, &secret);
                assert_own_ca(case, &rendered, serving);
            }
            Source::Issuer(issuer) => {
                let secret = secret.unwrap_or_else(|| panic!("{case}: no Secret mounted"));
                let serving = serving_certificate(case, &rendered, &secret);
                assert_eq!(serving["spec"]["issuerRef"], issuer, "{case}");
                assert_eq!(cert_manager.len(), 1, "{case}: {cert_manager:?}");
            }
        }
    }
}

/// Every argument the chart gives kubepam is one kubepam accepts: run with them (every value
/// set, and each certificate source), kubepam gets past its flags and its log filter to
/// reading its kubeconfig, where it stops for want of a cluster.
#[test]
fn every_argument_the_chart_passes_is_one_kubepam_accepts() {
    let _one = one_at_a_time();
    let helm = Helm::new();
    let every_value = file_with(EVERY_VALUE);
    let renders = [
        helm.render(&[]),
        helm.render(&["--values", every_value.path().to_str().unwrap()]),
        helm.render(&[
            "--set",
            "webhook.certificate.source=secret",
            "--set",
            "webhook.certificate.secret.name=kubepam-webhook-corp",
            "--set",
            "leaderElection.leaseDuration=2m",
            "--set",
            "leaderElection.renewGrace=30s",
            "--set",
            "log.format=json",
        ]),
    ];
    for yaml in renders {
        let rendered = objects(&yaml);
        let args = args(find(&rendered, "Deployment", "kubepam"));
        let output = Command::new(env!("CARGO_BIN_EXE_kubepam"))
            .args(&args)
            .args(["--kubeconfig", "/nonexistent/kubeconfig"])
            .env_clear()
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("running kubepam");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.code() == Some(1)
                && stderr.contains("reading kubeconfig /nonexistent/kubeconfig"),
            "kubepam {args:?} stopped before its kubeconfig ({}):\n{stderr}",
            output.status
        );
    }
}

/// What `helm install` with the defaults leaves on the API server: every object, Helm's, the
/// CRDs kept on uninstall, the Deployment as `manifests/` has it, the Service's two ports.
fn assert_default_install(cluster: &TestCluster) {
    assert_in_release(cluster, &INSTALLED);
    for crd in KUBEPAM_CRDS {
        assert_in_release(cluster, &[("customresourcedefinition", None, crd)]);
        let crd = get(cluster, "customresourcedefinition", None, crd).unwrap();
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    let deployment = get(cluster, "deployment", Some(NAMESPACE), "kubepam").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(args(&deployment), ["run", "--webhook-bind", "0.0.0.0:8443"]);
    let service = get(cluster, "service", Some(NAMESPACE), "kubepam").unwrap();
    let ports: Vec<(Value, Value)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["port"].clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (json!("webhook"), json!(443)),
            (json!("metrics"), json!(8080))
        ]
    );
}

/// `helm install`, `helm upgrade` with other values, and `helm uninstall`, on the API server.
/// Pods never run on this control plane (no node, no kube-controller-manager), so the release
/// is not waited for and what is checked is what the API server holds: the objects, the
/// upgraded Deployment's spec, the control, the release's revision, and what uninstall leaves
/// (the CRDs, so that no policy, request or audit record goes with them).
#[test]
fn install_upgrade_and_uninstall_on_the_control_plane() {
    let _one = one_at_a_time();
    let cluster = prepared();
    let helm = Helm::new();
    reset(cluster, &helm);
    let chart = chart();

    succeeded(
        &helm.on(
            cluster,
            &[
                "install",
                RELEASE,
                &chart,
                "--namespace",
                NAMESPACE,
                "--create-namespace",
                "--wait=false",
            ],
        ),
        "helm install",
    );
    assert_default_install(cluster);

    // The CRDs are there now: the control can be part of the release.
    succeeded(
        &helm.on(
            cluster,
            &[
                "upgrade",
                RELEASE,
                &chart,
                "--namespace",
                NAMESPACE,
                "--set",
                "replicas=3",
                "--set",
                "log.level=debug",
                "--set",
                "control.create=true",
                "--set",
                "control.approverGroup=pam-approvers",
                "--set",
                "control.systemAccounts={system:serviceaccount:ci:deployer}",
            ],
        ),
        "helm upgrade",
    );
    let deployment = get(cluster, "deployment", Some(NAMESPACE), "kubepam").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        args(&deployment),
        ["run", "--webhook-bind", "0.0.0.0:8443", "--log=debug"]
    );
    assert_in_release(cluster, &[("privilegedaccesscontrol", None, "default")]);
    let control = get(cluster, "privilegedaccesscontrol", None, "default").unwrap();
    assert_eq!(control["spec"]["defaultApproverGroup"], "pam-approvers");
    assert_eq!(
        control["spec"]["systemAccounts"],
        json!(["system:serviceaccount:ci:deployer"])
    );
    let status: Value = serde_json::from_str(&succeeded(
        &helm.on(
            cluster,
            &["status", RELEASE, "--namespace", NAMESPACE, "-o", "json"],
        ),
        "helm status",
    ))
    .unwrap();
    assert_eq!(status["version"], 2, "{status}");
    assert_eq!(status["info"]["status"], "deployed", "{status}");

    let uninstalled = succeeded(
        &helm.on(cluster, &["uninstall", RELEASE, "--namespace", NAMESPACE]),
        "helm uninstall",
    );
    for (resource, namespace, name) in
        INSTALLED
            .iter()
            .copied()
            .chain([("privilegedaccesscontrol", None, "default")])
    {
        assert!(
            get(cluster, resource, namespace, name).is_none(),
            "{resource} {name} is left after helm uninstall"
        );
    }
    for crd in KUBEPAM_CRDS {
        assert!(
            get(cluster, "customresourcedefinition", None, crd).is_some(),
            "the CRD {crd} went with the release:\n{uninstalled}"
        );
    }
}

/// An install made with `kubectl apply -k manifests/` becomes a Helm release in place
/// (`helm install --take-ownership`): the same Deployment (its selector cannot change, and the
/// chart's is the same), now Helm's, upgraded and uninstalled like any release.
#[test]
fn a_kustomize_install_moves_to_helm_in_place() {
    let _one = one_at_a_time();
    let cluster = prepared();
    let helm = Helm::new();
    reset(cluster, &helm);
    let chart = chart();
    let manifests = repo_root().join("manifests");
    kubectl_ok(
        cluster,
        &["apply", "--server-side", "-k", manifests.to_str().unwrap()],
    );
    let before = get(cluster, "deployment", Some(NAMESPACE), "kubepam").unwrap();

    succeeded(
        &helm.on(
            cluster,
            &[
                "install",
                RELEASE,
                &chart,
                "--namespace",
                NAMESPACE,
                "--take-ownership",
            ],
        ),
        "helm install --take-ownership",
    );
    assert_in_release(cluster, &INSTALLED);
    for crd in KUBEPAM_CRDS {
        assert_in_release(cluster, &[("customresourcedefinition", None, crd)]);
    }
    let after = get(cluster, "deployment", Some(NAMESPACE), "kubepam").unwrap();
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "the Deployment was replaced"
    );
    assert_eq!(after["spec"]["selector"], before["spec"]["selector"]);
    succeeded(
        &helm.on(
            cluster,
            &[
                "upgrade",
                RELEASE,
                &chart,
                "--namespace",
                NAMESPACE,
                "--set",
                "replicas=1",
            ],
        ),
        "helm upgrade",
    );
    let upgraded = get(cluster, "deployment", Some(NAMESPACE), "kubepam").unwrap();
    assert_eq!(upgraded["spec"]["replicas"], 1);

    succeeded(
        &helm.on(cluster, &["uninstall", RELEASE, "--namespace", NAMESPACE]),
        "helm uninstall",
    );
    for (resource, namespace, name) in INSTALLED {
        assert!(
            get(cluster, resource, namespace, name).is_none(),
            "{resource} {name} is left after helm uninstall"
        );
    }
    assert!(get(cluster, "namespace", None, NAMESPACE).is_some());
}
