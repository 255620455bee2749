//! kubepam as it runs in a pod, proven on the real control plane: configured
//! in-cluster (a service-account token from the TokenRequest API, the cluster
//! CA and `KUBERNETES_SERVICE_HOST/PORT`, mounted where a pod has them), it
//! authenticates as `system:serviceaccount:kubepam-system:kubepam`, holds
//! exactly the rights `manifests/` gives that account, and does its whole job
//! with them, serving its webhooks with a certificate from files laid out as
//! cert-manager's Secret is (`tls.crt`, `tls.key`, `ca.crt`) and following a
//! new CA into the caBundle without ever counting that as tampering.
//!
//! The mount is made in a private mount namespace (`unshare`), so nothing of
//! this machine's own `/var/run/secrets` is touched. Needs root, as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test
#![allow(clippy::too_many_lines)] // a scenario reads best as one story

use kubepam_testkit::cluster as support;
use kubepam_testkit::pam;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use kubepam_core::api::{ElevationRequest, Phase};
use serde_json::{Value, json};

use support::{Identity, TestCluster, eventually, free_port, http_get};

const SOON: Duration = Duration::from_secs(30);
const SERVICE_ACCOUNT: &str = "system:serviceaccount:kubepam-system:kubepam";

/// The cluster, with the CRDs and `manifests/`' namespace, account and RBAC installed.
fn installed() -> &'static TestCluster {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let cluster = support::cluster();
    INSTALLED.get_or_init(|| cluster.install_kubepam());
    cluster
}

/// A token for `namespace/account` from the TokenRequest API, as the kubelet gets one.
fn token_for(cluster: &TestCluster, namespace: &str, account: &str) -> String {
    let output = cluster.kubectl(
        Identity::Admin,
        &[
            "create",
            "token",
            account,
            "-n",
            namespace,
            "--duration",
            "1h",
        ],
    );
    assert!(
        output.status.success(),
        "kubectl create token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The API server's address and the CA that signed its certificate.
fn api_server(cluster: &TestCluster) -> (String, u16, PathBuf) {
    let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig_path).unwrap();
    let server = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .unwrap();
    let port = server.rsplit(':').next().unwrap().parse().unwrap();
    let ca = cluster.kubeconfig_path.parent().unwrap().join("pki/ca.crt");
    ("127.0.0.1".to_owned(), port, ca)
}

/// A client that presents only `token`, as a pod does.
async fn token_client(cluster: &TestCluster, token: &str) -> Client {
    let (host, port, ca) = api_server(cluster);
    let kubeconfig: Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "local", "cluster": {
            "server": format!("https://{host}:{port}"),
            "certificate-authority": ca,
        }}],
        "users": [{ "name": "token", "user": { "token": token } }],
        "contexts": [{ "name": "token", "context": { "cluster": "local", "user": "token" } }],
        "current-context": "token",
    }))
    .unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Every (verb, apiGroup, resource, resourceName) a set of rules allows;
/// `*` stays `*`, an absent resourceNames is `*`.
type Permission = (String, String, String, String);

fn permissions_of(rules: &[Value]) -> BTreeSet<Permission> {
    let strings = |rule: &Value, key: &str| -> Vec<String> {
        rule.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in rules {
        let names = match strings(rule, "resourceNames") {
            names if names.is_empty() => vec!["*".to_owned()],
            names => names,
        };
        for verb in strings(rule, "verbs") {
            for group in strings(rule, "apiGroups") {
                for resource in strings(rule, "resources") {
                    for name in &names {
                        out.insert((verb.clone(), group.clone(), resource.clone(), name.clone()));
                    }
                }
            }
        }
    }
    out
}

/// What the API server says `client` may do in `namespace` (resource rules only).
async fn rules_in(client: &Client, namespace: &str) -> BTreeSet<Permission> {
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.to_owned()),
        },
        ..SelfSubjectRulesReview::default()
    };
    let review = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let status = review.status.unwrap();
    assert!(!status.incomplete, "rules review incomplete: {status:?}");
    let rules: Vec<Value> = status
        .resource_rules
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    permissions_of(&rules)
}

/// The rules `manifests/` binds to kubepam's account: cluster-wide, and in `kubepam-system`.
fn manifest_rules(cluster: &TestCluster) -> (BTreeSet<Permission>, BTreeSet<Permission>) {
    let output = cluster.kubectl(
        Identity::Admin,
        &[
            "kustomize",
            support::repo_root().join("manifests").to_str().unwrap(),
        ],
    );
    assert!(output.status.success());
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_slice(&output.stdout)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .collect();
    let kind = |o: &Value| o["kind"].as_str().unwrap_or_default().to_owned();
    let name = |o: &Value| {
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let binds_kubepam = |binding: &Value| {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == "kubepam"
                    && s["namespace"] == "kubepam-system"
            })
    };
    let role_rules = |role_kind: &str, role_name: &str| -> Vec<Value> {
        objects
            .iter()
            .find(|o| kind(o) == role_kind && name(o) == role_name)
            .and_then(|o| o["rules"].as_array().cloned())
            .unwrap_or_else(|| panic!("{role_kind}/{role_name} is not in manifests/"))
    };
    let mut cluster_wide = Vec::new();
    let mut in_namespace = Vec::new();
    for binding in objects.iter().filter(|o| binds_kubepam(o)) {
        let role = &binding["roleRef"];
        let rules = role_rules(
            role["kind"].as_str().unwrap(),
            role["name"].as_str().unwrap(),
        );
        match kind(binding).as_str() {
            "ClusterRoleBinding" => cluster_wide.extend(rules),
            "RoleBinding" => {
                assert_eq!(binding["metadata"]["namespace"], "kubepam-system");
                in_namespace.extend(rules);
            }
            other => panic!("unexpected binding kind {other}"),
        }
    }
    assert!(!cluster_wide.is_empty() && !in_namespace.is_empty());
    (permissions_of(&cluster_wide), permissions_of(&in_namespace))
}

#[tokio::test]
async fn the_service_account_token_has_exactly_the_rights_of_the_manifests() {
    let cluster = installed();
    let admin = cluster.client(Identity::Admin).await;
    let kubepam = token_client(cluster, &token_for(cluster, "kubepam-system", "kubepam")).await;

    let review = Api::<SelfSubjectReview>::all(kubepam.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some(SERVICE_ACCOUNT));
    let groups = user.groups.unwrap_or_default();
    assert!(
        groups.contains(&"system:serviceaccounts:kubepam-system".to_owned()),
        "{groups:?}"
    );

    // What every service account in the namespace may do anyway (discovery,
    // self reviews): an account with no binding of its own shows it.
    let unbound = "kubepam-test-unbound";
    let _ = create_service_account(&admin, unbound).await;
    let nobody = token_client(cluster, &token_for(cluster, "kubepam-system", unbound)).await;

    let (cluster_wide, in_namespace) = manifest_rules(cluster);
    let other = cluster.namespace("elsewhere").await;
    for (namespace, expected) in [
        ("kubepam-system", &cluster_wide | &in_namespace),
        (other.name.as_str(), cluster_wide.clone()),
    ] {
        let baseline = rules_in(&nobody, namespace).await;
        let granted: BTreeSet<Permission> = rules_in(&kubepam, namespace)
            .await
            .difference(&baseline)
            .cloned()
            .collect();
        let expected: BTreeSet<Permission> = expected.difference(&baseline).cloned().collect();
        let extra: Vec<_> = granted.difference(&expected).collect();
        let missing: Vec<_> = expected.difference(&granted).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "in {namespace}: rights beyond manifests/: {extra:?}; rights of manifests/ missing: {missing:?}"
        );
    }
    other.delete().await;
}

async fn create_service_account(admin: &Client, name: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), "kubepam-system")
        .create(&PostParams::default(), &account)
        .await
        .map(|_| ())
}

/// A fresh CA and a serving certificate for 127.0.0.1 it signed, in PEM:
/// (ca.crt, tls.crt, tls.key), as cert-manager's Secret holds them.
fn certificate_files() -> (String, String, String) {
    kubepam::admission_server::tls::generate(&["127.0.0.1".to_owned()]).unwrap()
}

/// Writes the three files as the kubelet updates a mounted Secret: each
/// whole file appears at once (written aside, then renamed).
fn write_secret_files(dir: &Path, (ca, cert, key): &(String, String, String)) {
    for (name, content) in [("tls.key", key), ("tls.crt", cert), ("ca.crt", ca)] {
        let aside = dir.join(format!(".{name}.new"));
        std::fs::write(&aside, content).unwrap();
        std::fs::rename(&aside, dir.join(name)).unwrap();
    }
}

/// `kubepam run` configured as in a pod; killed when dropped.
struct InCluster {
    child: Child,
    log: PathBuf,
    metrics_port: u16,
    webhook_port: u16,
}

impl Drop for InCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl InCluster {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether its admission server presents a certificate that `ca` alone
    /// verifies (as the API server, with the API server's client certificate).
    fn serves_a_certificate_of(&self, cluster: &TestCluster, ca: &str) -> bool {
        let pki = cluster.kubeconfig_path.parent().unwrap().join("pki");
        let ca_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca_file.path(), ca).unwrap();
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--max-time", "5", "--cacert"])
            .arg(ca_file.path())
            .arg("--cert")
            .arg(pki.join("apiserver-webhook-client.crt"))
            .arg("--key")
            .arg(pki.join("apiserver-webhook-client.key"))
            .arg(format!("https://127.0.0.1:{}/", self.webhook_port))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

/// Starts kubepam with no kubeconfig at all: the service-account directory
/// is mounted at `/var/run/secrets/kubernetes.io/serviceaccount` in a
/// private mount namespace and `KUBERNETES_SERVICE_HOST/PORT` name the API
/// server, as the kubelet sets them up.
fn spawn_in_cluster(
    cluster: &TestCluster,
    account_dir: &Path,
    tls_dir: &Path,
    home: &Path,
) -> InCluster {
    let (host, port, _) = api_server(cluster);
    let webhook_port = free_port();
    let metrics_port = free_port();
    let log = cluster.log_dir().join("in-cluster.log");
    let pki = cluster.kubeconfig_path.parent().unwrap().join("pki");
    // `/var/run` is where a pod has `/var/run/secrets`; a fresh tmpfs over it
    // in this namespace only, then the account's directory on top.
    let script = r#"set -e
mount -t tmpfs kubepam-test /var/run
mkdir -p /var/run/secrets/kubernetes.io/serviceaccount
mount --bind "$1" /var/run/secrets/kubernetes.io/serviceaccount
shift
exec "$@""#;
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(account_dir)
        .arg(support::workspace_binary("kubepam"))
        .arg("run")
        .args(["--webhook-bind", &format!("127.0.0.1:{webhook_port}")])
        .args([
            "--webhook-url",
            &format!("https://127.0.0.1:{webhook_port}"),
        ])
        .arg("--webhook-client-ca-file")
        .arg(pki.join("webhook-client-ca.crt"))
        .arg("--tls-cert-file")
        .arg(tls_dir.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(tls_dir.join("tls.key"))
        .arg("--tls-ca-file")
        .arg(tls_dir.join("ca.crt"))
        .args(["--metrics-bind", &format!("127.0.0.1:{metrics_port}")])
        .arg("--audit-dir")
        .arg(cluster.audit_dir())
        .args(["--log-format", "json", "--instance", "in-cluster"])
        // Nothing to find a kubeconfig with: in-cluster configuration only.
        .env_remove("KUBECONFIG")
        .env_remove("KUBEPAM_KUBECONFIG")
        .env_remove("KUBEPAM_CONTEXT")
        .env("HOME", home)
        .env("KUBERNETES_SERVICE_HOST", host)
        .env("KUBERNETES_SERVICE_PORT", port.to_string())
        .env("POD_NAME", "kubepam-5d8f-in-cluster")
        .env("POD_NAMESPACE", "kubepam-system")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // `unshare` and `sh` exec in place: this pid is kubepam's.
    let child = command.spawn().expect("starting unshare");
    support::kill_with_this_process(child.id());
    InCluster {
        child,
        log,
        metrics_port,
        webhook_port,
    }
}

fn ca_bundle(admin_view: &ValidatingWebhookConfiguration) -> Vec<Vec<u8>> {
    admin_view
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn in_a_pod_kubepam_works_as_its_service_account_and_follows_a_new_webhook_ca() {
    let cluster = installed();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;

    let scratch = tempfile::tempdir().unwrap();
    let account_dir = scratch.path().join("serviceaccount");
    let tls_dir = scratch.path().join("webhook-tls");
    let home = scratch.path().join("home");
    for dir in [&account_dir, &tls_dir, &home] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let (_, _, cluster_ca) = api_server(cluster);
    std::fs::write(
        account_dir.join("token"),
        token_for(cluster, "kubepam-system", "kubepam"),
    )
    .unwrap();
    std::fs::copy(&cluster_ca, account_dir.join("ca.crt")).unwrap();
    std::fs::write(account_dir.join("namespace"), "kubepam-system").unwrap();
    let first = certificate_files();
    // A careless issuer or person put the private key into ca.crt as well:
    // it must never reach the cluster-wide webhook configurations.
    let with_key = (
        format!("{}{}", first.0, first.2),
        first.1.clone(),
        first.2.clone(),
    );
    write_secret_files(&tls_dir, &with_key);

    let kubepam = spawn_in_cluster(cluster, &account_dir, &tls_dir, &home);
    eventually("kubepam is ready", Duration::from_secs(60), || async {
        match http_get(kubepam.metrics_port, "/readyz") {
            Ok((200, _)) => Some(()),
            _ => None,
        }
    })
    .await;
    let authenticated = kubepam
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "authenticated to the API server")
        .unwrap_or_else(|| panic!("no identity line in:\n{}", kubepam.log()));
    assert_eq!(authenticated["user"], SERVICE_ACCOUNT, "{authenticated}");

    assert!(kubepam.serves_a_certificate_of(cluster, &first.0));
    // It registers its webhooks with the CA from the files, not one of its own.
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
    eventually("webhooks registered with ca.crt", SOON, || async {
        let live = webhooks.get_opt("kubepam").await.ok()??;
        let bundles = ca_bundle(&live);
        (!bundles.is_empty()
            && bundles
                .iter()
                .all(|b| b.trim_ascii() == first.0.trim().as_bytes()))
        .then_some(())
    })
    .await;

    // The whole workflow, with only the account's rights: a Manual policy,
    // alice asks, bob approves, alice's guarded delete passes the webhook.
    pam::standard_control(&admin).await;
    let ns = cluster.namespace("pod").await;
    let policy = format!("{}-delete", ns.name);
    pam::create_policy(&admin, &policy, pam::task_policy(&ns.name, "Manual")).await;
    pam::wait_policy_judged(&admin, &policy).await;
    let name = format!("{}-req", ns.name);
    pam::create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-7: in a pod" }),
    )
    .await;
    pam::wait_phase(&admin, &name, Phase::Pending, SOON).await;
    pam::review(&bob, &name, "bob", "Approve", "ok")
        .await
        .unwrap();
    pam::wait_phase(&admin, &name, Phase::Approved, SOON).await;
    pam::wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns.name);
    for deployment in ["before", "after"] {
        deployments
            .create(&PostParams::default(), &pam::deployment(deployment))
            .await
            .unwrap();
    }
    let as_alice = Api::<Deployment>::namespaced(alice.clone(), &ns.name);
    as_alice
        .delete("before", &DeleteParams::default())
        .await
        .expect("alice's delete passes the guard served with the first certificate");
    let uses = || async {
        Api::<ElevationRequest>::all(admin.clone())
            .get(&name)
            .await
            .ok()?
            .status
            .map(|s| s.execution_count)
    };
    eventually("the first use recorded", SOON, || async {
        (uses().await? == 1).then_some(())
    })
    .await;

    // cert-manager renews the CA: the bundle carries the new CA (beside the
    // replaced one), the serving certificate follows, and the guard keeps
    // answering; kubepam's own change is not taken for tampering.
    let second = certificate_files();
    write_secret_files(&tls_dir, &second);
    eventually("the new CA registered beside the old", SOON, || async {
        let live = webhooks.get_opt("kubepam").await.ok()??;
        let expected = format!("{}{}", second.0, first.0);
        ca_bundle(&live)
            .iter()
            .all(|b| b.trim_ascii() == expected.trim().as_bytes())
            .then_some(())
    })
    .await;
    eventually(
        "the certificate the new CA signed served",
        Duration::from_secs(40),
        || async {
            kubepam
                .serves_a_certificate_of(cluster, &second.0)
                .then_some(())
        },
    )
    .await;
    as_alice
        .delete("after", &DeleteParams::default())
        .await
        .expect("alice's delete passes the guard served with the new certificate");
    eventually("the second use recorded", SOON, || async {
        (uses().await? == 2).then_some(())
    })
    .await;
    // A CA that does not sign the certificate served beside it would make
    // every call fail: it is not taken, and the registered bundle stays.
    let (stranger, _, _) = certificate_files();
    std::fs::write(tls_dir.join(".ca.crt.new"), &stranger).unwrap();
    std::fs::rename(tls_dir.join(".ca.crt.new"), tls_dir.join("ca.crt")).unwrap();
    eventually("the stranger's CA refused", SOON, || async {
        kubepam
            .log()
            .contains("not taking the webhook CA file")
            .then_some(())
    })
    .await;
    let live = webhooks.get("kubepam").await.unwrap();
    let expected = format!("{}{}", second.0, first.0);
    assert!(
        ca_bundle(&live)
            .iter()
            .all(|b| b.trim_ascii() == expected.trim().as_bytes()),
        "the bundle changed to an unchecked CA"
    );
    let log = kubepam.log();
    assert!(log.contains("webhook certificate reloaded"), "{log}");
    assert!(!log.contains("behind kubepam's back"), "{log}");
    let (_, metrics) = http_get(kubepam.metrics_port, "/metrics").unwrap();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("kubepam_guard_repairs_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    drop(kubepam);
    ns.delete().await;
}
