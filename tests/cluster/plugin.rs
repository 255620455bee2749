//! `kubectl pam` on the real control plane: the built `kubectl-pam` binary, run as each
//! person through their kubeconfig context, exactly as they would type it.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, Client};
use kubectl_pam::error::{Error as PluginError, from_kube};
use kubepam_core::api::{AccessPolicy, ElevationRequest, Phase};
use serde_json::Value;

use crate::pam::{
    accepted, deployment, phase, standard_control, wait_may_delete_deployments, wait_phase,
    wait_policy_judged,
};
use crate::support::{Identity, TestCluster, eventually, http_get, kubepam, operator};

const SOON: Duration = Duration::from_secs(20);
/// The plugin binary of this build.
fn plugin() -> std::path::PathBuf {
    crate::support::workspace_binary("kubectl-pam")
}

/// The cluster, once the operator answers `/readyz` (a first test may start with it).
async fn ready() -> &'static TestCluster {
    let cluster = kubepam();
    let port = operator().metrics_port;
    eventually("kubepam ready", Duration::from_secs(60), || async {
        (http_get(port, "/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
    cluster
}

/// What one run of the plugin printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts success and returns stdout.
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "kubectl pam failed: {self:#?}");
        self.stdout
    }
}

/// `kubectl pam ARGS` as `who`, with the cluster's kubeconfig.
fn command(cluster: &TestCluster, who: Identity, args: &[&str]) -> Command {
    let mut cmd = Command::new(plugin());
    cmd.arg("--kubeconfig")
        .arg(&cluster.kubeconfig_path)
        .arg("--context")
        .arg(who.context())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn pam(cluster: &TestCluster, who: Identity, args: &[&str]) -> Run {
    command(cluster, who, args)
        .output()
        .expect("running kubectl-pam")
        .into()
}

/// `kubectl pam ARGS` as `who`, in the background, its output kept for [`finish`].
fn spawn(cluster: &TestCluster, who: Identity, args: &[&str]) -> std::process::Child {
    command(cluster, who, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kubectl-pam")
}

/// The seed's policy through the plugin: deleting Deployments in `namespace` needs a manual
/// approval.
fn create_seed_policy(cluster: &TestCluster, policy: &str, namespace: &str) -> Run {
    let task = ["--task", "delete deployments.apps", "--approval", "Manual"];
    let mut args = vec!["policy", "create", policy, "-n", namespace];
    args.extend(task);
    pam(cluster, Identity::Admin, &args)
}

/// The name in `elevationrequest.kubepam.io/NAME created`.
fn created_name(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .next()
        .and_then(|w| w.split_once('/'))
        .map_or_else(
            || panic!("no object name in {stdout:?}"),
            |(_, name)| name.to_owned(),
        )
}

/// Waits for a background run to end.
async fn finish(mut child: std::process::Child) -> Run {
    let status = eventually("the background kubectl pam to finish", SOON, || {
        let status = child.try_wait().expect("polling kubectl-pam");
        async move { status }
    })
    .await;
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

async fn create_deployment(admin: &Client, namespace: &str, name: &str) {
    Api::<Deployment>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &deployment(name))
        .await
        .unwrap();
}

/// The seed walkthrough with nothing but the plugin: enable, policy, alice asks and waits,
/// bob approves, alice's task works, carol revokes, alice is refused again.
#[tokio::test]
async fn plugin_walkthrough_from_enable_to_revoke() {
    let cluster = ready().await;
    let admin = cluster.client(Identity::Admin).await;
    // The control is shared by every test here: make sure it exists with the standard
    // settings, then enable it with the same ones through the plugin.
    standard_control(&admin).await;
    let out = pam(
        cluster,
        Identity::Admin,
        &[
            "enable",
            "--approver-group",
            "pam-approvers",
            "--system-account",
            "system:serviceaccount:ci:deployer",
        ],
    )
    .ok();
    assert!(
        out.contains("privilegedaccesscontrol.kubepam.io/default enabled"),
        "{out}"
    );

    let ns = cluster.namespace("plugin-walk").await;
    let policy = format!("{}-delete-deployments", ns.name);
    let out = create_seed_policy(cluster, &policy, &ns.name).ok();
    assert_eq!(out, format!("accesspolicy.kubepam.io/{policy} created\n"));
    assert_eq!(
        accepted(&wait_policy_judged(&admin, &policy).await).0,
        "True"
    );
    let listed = pam(cluster, Identity::Alice, &["policy", "list"]).ok();
    let row = listed
        .lines()
        .find(|l| l.starts_with(&policy))
        .unwrap_or_else(|| panic!("{policy} in {listed}"));
    for cell in [
        "Task",
        "delete deployments.apps",
        &ns.name,
        "Manual",
        "pam-approvers",
        "True",
    ] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    assert!(
        !listed.contains('\u{1b}'),
        "no colour when not on a terminal"
    );

    create_deployment(&admin, &ns.name, "web").await;
    let before = pam(
        cluster,
        Identity::Alice,
        &["can-i", "delete", "deployments.apps", "-n", &ns.name],
    );
    assert_eq!(before.code, 1, "{before:#?}");
    assert!(before.stdout.contains(&policy) && before.stdout.ends_with("no\n"));
    assert!(
        before.stdout.contains(&format!(
            "kubectl pam request {policy} --namespace {}",
            ns.name
        )),
        "{}",
        before.stdout
    );

    // Alice asks and waits in the background, as she would in a second terminal.
    let name = format!("{}-alice", ns.name);
    let reason = "INC-1234: remove the stuck canary";
    let ask = ["request", &policy, "--name", &name, "--reason", reason];
    let waiting = spawn(
        cluster,
        Identity::Alice,
        &[&ask[..], &["--duration", "1h", "--wait"]].concat(),
    );
    let mut waiting = Some(waiting);
    let alice = cluster.client(Identity::Alice).await;
    let requests = Api::<ElevationRequest>::all(alice.clone());
    let pending = eventually(&format!("{name} Pending"), SOON, || {
        // A request that could not be created ends the wait at once: show why.
        if let Some(child) = waiting.as_mut()
            && child.try_wait().expect("polling kubectl-pam").is_some()
        {
            let child = waiting.take().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!("request --wait ended early: {:#?}", Run::from(output));
        }
        let requests = requests.clone();
        let name = name.clone();
        async move {
            let r = requests.get(&name).await.ok()?;
            (phase(&r) == Some(Phase::Pending)).then_some(r)
        }
    })
    .await;
    let waiting = waiting.unwrap();
    assert_eq!(pending.spec.requester.as_deref(), Some("alice"));
    assert_eq!(pending.spec.namespace.as_deref(), Some(ns.name.as_str()));

    let mine = pam(
        cluster,
        Identity::Alice,
        &["list", "--mine", "--status", "Pending"],
    )
    .ok();
    assert!(mine.starts_with("NAME "), "{mine}");
    assert!(
        mine.lines()
            .any(|l| l.starts_with(&name) && l.contains("Pending")),
        "{mine}"
    );
    let queue = pam(cluster, Identity::Bob, &["list", "--to-review"]).ok();
    assert!(queue.contains(&name), "{queue}");
    let not_dave = pam(cluster, Identity::Dave, &["list", "--to-review"]).ok();
    assert!(!not_dave.contains(&name), "{not_dave}");

    let out = pam(
        cluster,
        Identity::Bob,
        &["approve", &name, "-m", "ok, go ahead"],
    )
    .ok();
    assert!(
        out.starts_with(&format!(
            "elevationrequest.kubepam.io/{name} approved by bob"
        )),
        "{out}"
    );
    let waited = finish(waiting).await;
    assert_eq!(waited.code, 0, "{waited:#?}");
    assert!(waited.stdout.contains("created; waiting for a decision"));
    assert!(
        waited.stdout.contains("Approved by bob, granted until"),
        "{waited:#?}"
    );

    let status = pam(cluster, Identity::Alice, &["status", &name]).ok();
    assert!(status.contains("Status:        Approved\n"), "{status}");
    assert!(status.contains("ok, go ahead"), "{status}");

    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    let yes = pam(
        cluster,
        Identity::Alice,
        &["can-i", "delete", "deployments.apps", "-n", &ns.name],
    );
    assert_eq!(yes.code, 0, "{yes:#?}");
    assert!(
        yes.stdout.contains(&format!("grant:   {name} (Approved")),
        "{}",
        yes.stdout
    );
    assert!(yes.stdout.ends_with("yes\n"));
    let deleted = cluster.kubectl(
        Identity::Alice,
        &["-n", &ns.name, "delete", "deployment", "web"],
    );
    assert!(
        deleted.status.success(),
        "alice's task works: {}",
        String::from_utf8_lossy(&deleted.stderr)
    );

    let out = pam(cluster, Identity::Carol, &["revoke", &name, "-m", "done"]).ok();
    assert!(out.contains("revoked by carol"), "{out}");
    wait_phase(&alice, &name, Phase::Revoked, SOON).await;
    let status = pam(cluster, Identity::Alice, &["status", &name]).ok();
    assert!(status.contains("Status:        Revoked\n"), "{status}");
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    create_deployment(&admin, &ns.name, "web2").await;
    let refused = cluster.kubectl(
        Identity::Alice,
        &["-n", &ns.name, "delete", "deployment", "web2"],
    );
    assert!(!refused.status.success(), "refused after the revoke");
    let no = pam(
        cluster,
        Identity::Alice,
        &["can-i", "delete", "deployments.apps", "-n", &ns.name],
    );
    assert_eq!(no.code, 1, "{no:#?}");

    let out = pam(cluster, Identity::Admin, &["policy", "delete", &policy]).ok();
    assert_eq!(
        out,
        format!("accesspolicy.kubepam.io \"{policy}\" deleted\n")
    );
    ns.delete().await;
}

/// Every refusal reaches the person with the server's own words and a non-zero exit.
#[tokio::test]
async fn plugin_errors_say_what_to_do_and_exit_non_zero() {
    let cluster = ready().await;
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("plugin-err").await;
    let policy = format!("{}-policy", ns.name);
    create_seed_policy(cluster, &policy, &ns.name).ok();
    wait_policy_judged(&admin, &policy).await;

    // A policy that exists already: the API server's refusal, verbatim.
    let again = create_seed_policy(cluster, &policy, &ns.name);
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(
        again
            .stderr
            .starts_with("Error from server (AlreadyExists): "),
        "{again:#?}"
    );

    // No name given: the server generates one from the policy's.
    let out = pam(
        cluster,
        Identity::Alice,
        &["request", &policy, "--reason", "INC-42", "--duration", "1h"],
    )
    .ok();
    let name = created_name(&out);
    assert!(name.starts_with(&format!("{policy}-")), "{out}");
    let alice = cluster.client(Identity::Alice).await;
    wait_phase(&alice, &name, Phase::Pending, SOON).await;

    // Admission refusals: the webhook's message as kubectl would show it.
    let own = pam(cluster, Identity::Alice, &["approve", &name]);
    assert_eq!(own.code, 1, "{own:#?}");
    assert!(
        own.stderr.starts_with("Error from server (Forbidden): "),
        "{own:#?}"
    );
    assert!(
        own.stderr.contains("nobody can review their own request"),
        "{own:#?}"
    );
    // (The ValidatingAdmissionPolicy or the webhook, whichever answers first.)
    let outsider = pam(cluster, Identity::Dave, &["approve", &name, "-m", "sure"]);
    assert_eq!(outsider.code, 1);
    assert!(
        outsider.stderr.contains("pam-approvers may review"),
        "{outsider:#?}"
    );
    let early = pam(cluster, Identity::Bob, &["revoke", &name]);
    assert_eq!(early.code, 1);
    assert!(
        early.stderr.contains("there is no approval to revoke"),
        "{early:#?}"
    );

    // A denial ends `request --wait` with a failure that says who and why.
    let reason = format!("INC-43 in {}", ns.name);
    let ask = ["request", &policy, "--reason", &reason, "--wait"];
    let waiting = spawn(
        cluster,
        Identity::Alice,
        &[&ask[..], &["--timeout", "1m", "-o", "name"]].concat(),
    );
    let second = eventually("alice's second request", SOON, || async {
        Api::<ElevationRequest>::all(alice.clone())
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|r| r.spec.reason == reason && phase(r) == Some(Phase::Pending))
            .find_map(|r| r.metadata.name)
    })
    .await;
    pam(
        cluster,
        Identity::Carol,
        &["deny", &second, "-m", "not during the freeze"],
    )
    .ok();
    let denied = finish(waiting).await;
    assert_eq!(denied.code, 1, "{denied:#?}");
    assert!(
        denied.stderr.contains(&format!(
            "ElevationRequest {second} is Denied by carol: carol: not during the freeze"
        )),
        "{denied:#?}"
    );
    assert_eq!(
        denied.stdout,
        format!("elevationrequest.kubepam.io/{second}\n")
    );

    // What does not exist, and what cannot be asked.
    let missing = pam(cluster, Identity::Alice, &["status", "no-such-request"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("ElevationRequest \"no-such-request\" not found; kubectl pam list"),
        "{missing:#?}"
    );
    let no_policy = pam(
        cluster,
        Identity::Alice,
        &["request", "no-such-policy", "--reason", "x"],
    );
    assert_eq!(no_policy.code, 1);
    assert!(
        no_policy
            .stderr
            .contains("AccessPolicy \"no-such-policy\" not found"),
        "{no_policy:#?}"
    );
    let elsewhere = pam(
        cluster,
        Identity::Alice,
        &["request", &policy, "-n", "default", "--reason", "x"],
    );
    assert_eq!(elsewhere.code, 2, "{elsewhere:#?}");
    assert!(
        elsewhere
            .stderr
            .contains("namespace default is not in the scope of policy"),
        "{elsewhere:#?}"
    );
    let bad_task = pam(
        cluster,
        Identity::Admin,
        &[
            "policy",
            "create",
            "x",
            "--task",
            "delete",
            "--approval",
            "Auto",
        ],
    );
    assert_eq!(bad_task.code, 2);
    assert!(
        bad_task.stderr.contains("write VERB RESOURCE"),
        "{bad_task:#?}"
    );
    let no_grant = pam(
        cluster,
        Identity::Admin,
        &["policy", "create", "x", "--approval", "Auto"],
    );
    assert_eq!(no_grant.code, 2, "{no_grant:#?}");
    let bad_context = Run::from(
        Command::new(plugin())
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig_path)
            .args(["--context", "nobody", "list"])
            .output()
            .unwrap(),
    );
    assert_eq!(bad_context.code, 1);
    assert!(
        bad_context.stderr.contains("cannot load the kubeconfig"),
        "{bad_context:#?}"
    );

    // A resource type the API server does not serve, as when the CRDs are not installed:
    // the real 404s map to "kubepam is not installed", a missing object does not.
    for (group, plural) in [
        ("kubepam.io", "nosuchthings"),
        ("nothere.kubepam.io", "elevationrequests"),
    ] {
        let gvk = GroupVersionKind::gvk(group, "v1alpha1", "Thing");
        let api: Api<DynamicObject> = Api::all_with(
            admin.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        );
        let err = api.list(&ListParams::default()).await.unwrap_err();
        let mapped = from_kube(err, plural);
        assert!(
            matches!(mapped, PluginError::NotInstalled { .. }),
            "{group}/{plural}: {mapped:?}"
        );
        assert!(mapped.to_string().contains("kubepam is not installed"));
    }
    let err = Api::<ElevationRequest>::all(admin.clone())
        .get("no-such-request")
        .await
        .unwrap_err();
    assert!(matches!(
        from_kube(err, "elevationrequests"),
        PluginError::Server { ref reason, .. } if reason == "NotFound"
    ));

    pam(cluster, Identity::Admin, &["policy", "delete", &policy]).ok();
    ns.delete().await;
}

/// `-o json` and `-o yaml` are the API objects themselves.
#[tokio::test]
async fn plugin_output_round_trips_into_the_api_types() {
    let cluster = ready().await;
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("plugin-json").await;
    let policy = format!("{}-exec", ns.name);
    let out = pam(
        cluster,
        Identity::Admin,
        &[
            "policy",
            "create",
            &policy,
            "--task",
            "create pods/exec",
            "-n",
            &ns.name,
            "--approval",
            "Auto",
            "--max-duration",
            "2h",
            "-o",
            "json",
        ],
    )
    .ok();
    let created: AccessPolicy = serde_json::from_str(&out).unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some(policy.as_str()));
    assert_eq!(created.spec.task.as_ref().unwrap().resources, ["pods/exec"]);
    wait_policy_judged(&admin, &policy).await;
    let listed: Value = serde_json::from_str(
        &pam(cluster, Identity::Alice, &["policy", "list", "-o", "json"]).ok(),
    )
    .unwrap();
    let policies: Vec<AccessPolicy> = serde_json::from_value(listed["items"].clone()).unwrap();
    let judged = policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(policy.as_str()))
        .unwrap();
    assert!(judged.status.as_ref().unwrap().policy_id.is_some());

    let out = pam(
        cluster,
        Identity::Alice,
        &[
            "request",
            &policy,
            "--reason",
            "debug INC-7",
            "--duration",
            "30m",
            "-o",
            "json",
        ],
    )
    .ok();
    let request: ElevationRequest = serde_json::from_str(&out).unwrap();
    let name = request.metadata.name.clone().unwrap();
    assert_eq!(request.spec.requester.as_deref(), Some("alice"));
    let alice = cluster.client(Identity::Alice).await;
    let approved = wait_phase(&alice, &name, Phase::Approved, SOON).await;

    let json = pam(cluster, Identity::Alice, &["status", &name, "-o", "json"]).ok();
    let from_json: ElevationRequest = serde_json::from_str(&json).unwrap();
    assert_eq!(from_json.spec, approved.spec);
    assert_eq!(phase(&from_json), Some(Phase::Approved));
    let yaml = pam(cluster, Identity::Alice, &["status", &name, "-o", "yaml"]).ok();
    let from_yaml: ElevationRequest = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml.spec, approved.spec);
    // The seed's request id finds it too.
    let id = approved
        .status
        .as_ref()
        .unwrap()
        .request_id
        .clone()
        .unwrap();
    let by_id: ElevationRequest =
        serde_json::from_str(&pam(cluster, Identity::Bob, &["status", &id, "-o", "json"]).ok())
            .unwrap();
    assert_eq!(by_id.metadata.name.as_deref(), Some(name.as_str()));

    let list: Value = serde_json::from_str(
        &pam(
            cluster,
            Identity::Alice,
            &["list", "--mine", "--status", "Approved", "-o", "json"],
        )
        .ok(),
    )
    .unwrap();
    assert_eq!(list["kind"], "List");
    let items: Vec<ElevationRequest> = serde_json::from_value(list["items"].clone()).unwrap();
    assert!(
        items
            .iter()
            .any(|r| r.metadata.name.as_deref() == Some(name.as_str()))
    );
    assert!(
        items
            .iter()
            .all(|r| r.spec.requester.as_deref() == Some("alice"))
    );
    let wide = pam(cluster, Identity::Alice, &["list", "--mine", "-o", "wide"]).ok();
    assert!(
        wide.lines().next().unwrap().contains("REQUEST-ID"),
        "{wide}"
    );
    assert!(wide.contains(&id), "{wide}");
    // Colour only where asked for (a terminal, or CLICOLOR_FORCE as for any anstream tool).
    assert!(!wide.contains('\u{1b}'));
    let forced = Run::from(
        command(cluster, Identity::Alice, &["list", "--mine"])
            .env("CLICOLOR_FORCE", "1")
            .env_remove("NO_COLOR")
            .output()
            .unwrap(),
    )
    .ok();
    assert!(forced.contains("\u{1b}[32mApproved"), "{forced:?}");

    let answer: Value = serde_json::from_str(
        &pam(
            cluster,
            Identity::Alice,
            &["can-i", "create", "pods/exec", "-n", &ns.name, "-o", "json"],
        )
        .ok(),
    )
    .unwrap();
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(answer["policies"][0]["name"], policy.as_str());
    assert_eq!(answer["grants"][0]["request"], name.as_str());

    pam(cluster, Identity::Admin, &["policy", "delete", &policy]).ok();
    ns.delete().await;
}

/// kubectl finds the plugin on PATH: `kubectl pam ...` runs it.
#[tokio::test]
async fn kubectl_runs_the_plugin_from_path() {
    let cluster = ready().await;
    let binary = plugin();
    let dir = binary.parent().unwrap();
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let kubectl = |args: &[&str]| -> Run {
        Command::new(crate::support::kubectl())
            .args(args)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    let plugins = kubectl(&["plugin", "list"]);
    assert!(plugins.stdout.contains("kubectl-pam"), "{plugins:#?}");
    let kubeconfig = cluster.kubeconfig_path.to_str().unwrap();
    let out = kubectl(&[
        "pam",
        "--kubeconfig",
        kubeconfig,
        "--context",
        "bob",
        "list",
        "--to-review",
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    let help = kubectl(&["pam", "approve", "--help"]);
    assert!(
        help.stdout.contains("Examples:\n  kubectl pam approve"),
        "{help:#?}"
    );
    let completion = kubectl(&["pam", "completion", "bash"]).ok();
    assert!(
        completion.contains("kubectl-pam"),
        "a bash completion script"
    );
    let completion = kubectl(&["pam", "completion", "zsh"]).ok();
    assert!(
        completion.starts_with("#compdef kubectl-pam"),
        "{completion}"
    );
}

/// The value of `KEY:` in `kubectl pam status` output.
fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map_or_else(|| panic!("no {key}: in\n{status}"), str::trim)
}

/// A Task policy to delete Deployments in `namespace`, through the plugin with `extra` flags.
fn create_policy_with(cluster: &TestCluster, policy: &str, namespace: &str, extra: &[&str]) {
    let mut args = vec![
        "policy",
        "create",
        policy,
        "-n",
        namespace,
        "--task",
        "delete deployments.apps",
    ];
    args.extend(extra);
    let out = pam(cluster, Identity::Admin, &args).ok();
    assert_eq!(out, format!("accesspolicy.kubepam.io/{policy} created\n"));
}

/// A verified reason, a booked window that `--wait` does not wait for, and the requester
/// ending their own grant early while nobody else may.
#[tokio::test]
async fn plugin_books_a_window_and_the_requester_releases_a_grant() {
    let cluster = ready().await;
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("plugin-time").await;
    let policy = format!("{}-delete", ns.name);
    create_policy_with(
        cluster,
        &policy,
        &ns.name,
        &[
            "--approval",
            "Auto",
            "--reason-pattern",
            "^INC-[0-9]+",
            "--reason-hint",
            "an incident number, e.g. INC-1234",
            "--max-schedule-ahead",
            "24h",
        ],
    );
    let judged = wait_policy_judged(&admin, &policy).await;
    assert_eq!(accepted(&judged).0, "True");
    assert_eq!(judged.spec.reason_pattern.as_deref(), Some("^INC-[0-9]+"));
    assert_eq!(judged.spec.max_schedule_ahead.as_deref(), Some("24h"));

    // Admission refuses at creation, in its own words.
    let unverified = pam(
        cluster,
        Identity::Alice,
        &["request", &policy, "--reason", "fix it", "--start-in", "1h"],
    );
    assert_eq!(unverified.code, 1, "{unverified:#?}");
    assert!(
        unverified.stderr.starts_with("Error from server (")
            && unverified
                .stderr
                .contains("an incident number, e.g. INC-1234"),
        "{unverified:#?}"
    );
    let too_far = pam(
        cluster,
        Identity::Alice,
        &["request", &policy, "--reason", "INC-1", "--start-in", "48h"],
    );
    assert_eq!(too_far.code, 1, "{too_far:#?}");
    assert!(
        too_far.stderr.starts_with("Error from server (")
            && too_far.stderr.contains("books windows at most"),
        "{too_far:#?}"
    );

    // A window two hours ahead: approved at once, and --wait ends with the approval.
    let booked = pam(
        cluster,
        Identity::Alice,
        &[
            "request",
            &policy,
            "--reason",
            "INC-2: planned restart",
            "--start-in",
            "2h",
            "--duration",
            "30m",
            "--wait",
            "--timeout",
            "1m",
        ],
    )
    .ok();
    let booked_name = created_name(&booked);
    assert!(
        booked.contains("Approved by kubepam, opens ") && booked.contains(", granted until "),
        "{booked}"
    );
    let alice = cluster.client(Identity::Alice).await;
    let approved = wait_phase(&alice, &booked_name, Phase::Approved, SOON).await;
    let start = approved.spec.start_at.expect("spec.startAt");
    let from_now = start - chrono::Utc::now();
    assert!(
        from_now > chrono::TimeDelta::minutes(115) && from_now <= chrono::TimeDelta::hours(2),
        "startAt {start} is about 2h from now"
    );
    let status = pam(cluster, Identity::Alice, &["status", &booked_name]).ok();
    assert!(field(&status, "Start at").starts_with("in 1"), "{status}");
    assert!(
        field(&status, "Window").starts_with("booked: opens in 1"),
        "{status}"
    );
    assert!(
        field(&status, "Granted from").starts_with("in 1"),
        "{status}"
    );
    let listed = pam(cluster, Identity::Alice, &["list", "--mine"]).ok();
    assert!(
        listed.lines().next().unwrap().contains(" STARTS "),
        "{listed}"
    );
    let row = listed
        .lines()
        .find(|l| l.starts_with(&booked_name))
        .unwrap_or_else(|| panic!("{booked_name} in {listed}"));
    assert!(row.contains("   in 1"), "{row}");

    // A grant in force now.
    let out = pam(
        cluster,
        Identity::Alice,
        &[
            "request",
            &policy,
            "--reason",
            "INC-3: now",
            "--duration",
            "30m",
        ],
    )
    .ok();
    let name = created_name(&out);
    wait_phase(&alice, &name, Phase::Approved, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;

    // Nobody else may release it: the API server's refusal, verbatim.
    let not_bobs = pam(
        cluster,
        Identity::Bob,
        &["release", &name, "-m", "mine now"],
    );
    assert_eq!(not_bobs.code, 1, "{not_bobs:#?}");
    assert!(
        not_bobs
            .stderr
            .starts_with("Error from server (Forbidden): "),
        "{not_bobs:#?}"
    );
    assert!(
        not_bobs.stderr.contains("only the requester"),
        "{not_bobs:#?}"
    );

    let out = pam(
        cluster,
        Identity::Alice,
        &["release", &name, "-m", "INC-3 fixed"],
    )
    .ok();
    assert!(
        out.starts_with(&format!(
            "elevationrequest.kubepam.io/{name} released by alice"
        )),
        "{out}"
    );
    let released = wait_phase(&alice, &name, Phase::Revoked, SOON).await;
    assert_eq!(
        released.spec.reviews["alice"].decision,
        kubepam_core::api::ReviewDecision::Release
    );
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    let status = pam(cluster, Identity::Alice, &["status", &name]).ok();
    assert_eq!(field(&status, "Status"), "Revoked", "{status}");
    let release = field(&status, "Released");
    assert!(
        release.starts_with("by alice ") && release.ends_with(": INC-3 fixed"),
        "{status}"
    );

    // A booked window no longer needed is released before it opens.
    pam(cluster, Identity::Alice, &["release", &booked_name]).ok();
    wait_phase(&alice, &booked_name, Phase::Revoked, SOON).await;
    let status = pam(cluster, Identity::Alice, &["status", &booked_name]).ok();
    assert!(
        field(&status, "Window").starts_with("never opened"),
        "{status}"
    );

    pam(cluster, Identity::Admin, &["policy", "delete", &policy]).ok();
    ns.delete().await;
}

/// `extend` continues a grant with a new request that names it; the approvers decide it, and
/// `status` shows the chain from both ends.
#[tokio::test]
async fn plugin_extends_a_grant_and_shows_the_chain() {
    let cluster = ready().await;
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("plugin-extend").await;
    let policy = format!("{}-delete", ns.name);
    // Grants come at once; extensions need an approver.
    create_policy_with(
        cluster,
        &policy,
        &ns.name,
        &[
            "--approval",
            "Auto",
            "--extension-approval",
            "Manual",
            "--max-extensions",
            "2",
            "--max-extension-total",
            "4h",
        ],
    );
    let judged = wait_policy_judged(&admin, &policy).await;
    let extension = judged.spec.extension.expect("spec.extension");
    assert_eq!(
        extension.approval_type,
        Some(kubepam_core::api::ApprovalType::Manual)
    );
    assert_eq!(
        (extension.max_extensions, extension.max_total.as_deref()),
        (Some(2), Some("4h"))
    );

    let out = pam(
        cluster,
        Identity::Alice,
        &["request", &policy, "--reason", "INC-5", "--duration", "30m"],
    )
    .ok();
    let first = created_name(&out);
    let alice = cluster.client(Identity::Alice).await;
    wait_phase(&alice, &first, Phase::Approved, SOON).await;

    // What the plugin can see will not work, it says before asking.
    let missing = pam(
        cluster,
        Identity::Alice,
        &[
            "extend",
            "no-such-request",
            "--by",
            "1h",
            "--reason",
            "INC-5",
        ],
    );
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(
        missing
            .stderr
            .contains("ElevationRequest \"no-such-request\" not found"),
        "{missing:#?}"
    );
    let not_bobs = pam(
        cluster,
        Identity::Bob,
        &["extend", &first, "--by", "1h", "--reason", "INC-5"],
    );
    assert_eq!(not_bobs.code, 1, "{not_bobs:#?}");
    assert!(
        not_bobs.stderr.contains(&format!(
            "cannot extend ElevationRequest {first}: it is alice's request"
        )),
        "{not_bobs:#?}"
    );

    let out = pam(
        cluster,
        Identity::Alice,
        &[
            "extend",
            &first,
            "--by",
            "1h",
            "--reason",
            "INC-5: the rollout needs longer",
        ],
    )
    .ok();
    let second = created_name(&out);
    assert!(
        second.starts_with(&format!("{policy}-")),
        "named like any request: {out}"
    );
    assert!(out.contains(&format!("extends {first} by 1h")), "{out}");
    let pending = wait_phase(&alice, &second, Phase::Pending, SOON).await;
    assert_eq!(pending.spec.extends.as_deref(), Some(first.as_str()));
    assert_eq!(pending.spec.policy, policy);
    assert_eq!(pending.spec.namespace.as_deref(), Some(ns.name.as_str()));
    assert_eq!(pending.spec.duration.as_deref(), Some("1h"));
    assert_eq!(pending.spec.requester.as_deref(), Some("alice"));
    let early = pam(
        cluster,
        Identity::Alice,
        &["extend", &second, "--by", "1h", "--reason", "INC-5"],
    );
    assert_eq!(early.code, 1, "{early:#?}");
    assert!(early.stderr.contains("not approved yet"), "{early:#?}");

    pam(cluster, Identity::Bob, &["approve", &second, "-m", "ok"]).ok();
    let approved = wait_phase(&alice, &second, Phase::Approved, SOON).await;
    let record = approved
        .status
        .as_ref()
        .and_then(|s| s.extension.clone())
        .expect("status.extension");
    assert_eq!(
        (record.extends.as_str(), record.number),
        (first.as_str(), 1)
    );

    let status = pam(cluster, Identity::Alice, &["status", &second]).ok();
    assert!(
        field(&status, "Extends").starts_with(&format!("{first} (extension 1 of a grant")),
        "{status}"
    );
    // Its grant runs from the approval to an hour past the first one's end: no booked window.
    assert!(!status.contains("\nWindow:"), "{status}");
    assert!(
        field(&status, "Granted until").starts_with("in 8"),
        "{status}"
    );
    let status = pam(cluster, Identity::Alice, &["status", &first]).ok();
    assert_eq!(
        field(&status, "Extended by"),
        format!("{second} (Approved)"),
        "{status}"
    );
    let wide = pam(cluster, Identity::Alice, &["list", "--mine", "-o", "wide"]).ok();
    let row = wide
        .lines()
        .find(|l| l.starts_with(&second))
        .unwrap_or_else(|| panic!("{second} in {wide}"));
    assert!(row.contains(&format!("   {first}   ")), "{row}");

    pam(cluster, Identity::Admin, &["policy", "delete", &policy]).ok();
    ns.delete().await;
}

/// Waits until `name`'s `ReviewRequired` condition has `status` (the emergency grant is
/// recorded and waits for review: "True"; reviewed: "False").
async fn wait_review_required(client: &Client, name: &str, status: &str) -> ElevationRequest {
    let requests = Api::<ElevationRequest>::all(client.clone());
    eventually(&format!("{name} ReviewRequired={status}"), SOON, || {
        let requests = requests.clone();
        async move {
            let r = requests.get(name).await.ok()?;
            let conditions = &r.status.as_ref()?.conditions;
            (kubepam_core::api::find_condition(conditions, "ReviewRequired")?.status == status)
                .then_some(r)
        }
    })
    .await
}

/// Waits until `kubectl pam ARGS` as `who` prints something for which `done` holds.
async fn wait_output(
    cluster: &TestCluster,
    who: Identity,
    args: &[&str],
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    eventually(what, SOON, || {
        let run = pam(cluster, who, args);
        let out = (run.code == 0 && done(&run.stdout)).then_some(run.stdout);
        async move { out }
    })
    .await
}

/// Break glass from the plugin: an on-call member takes emergency access at once, approvers
/// find it in `list --unreviewed` and `--to-review`, one confirms it, another rejects a second
/// one (its grant ends at once), and a Confirm on an ordinary request is refused.
#[tokio::test]
async fn plugin_breaks_glass_and_approvers_review_it_afterwards() {
    let cluster = ready().await;
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("plugin-glass").await;
    let policy = format!("{}-delete", ns.name);
    // Members of developers (alice, dave) are on call.
    create_policy_with(
        cluster,
        &policy,
        &ns.name,
        &[
            "--approval",
            "Manual",
            "--break-glass-group",
            "developers",
            "--break-glass-max-duration",
            "1h",
            "--review-within",
            "24h",
        ],
    );
    let judged = wait_policy_judged(&admin, &policy).await;
    assert_eq!(accepted(&judged).0, "True", "{judged:?}");
    let glass = judged.spec.break_glass.expect("spec.breakGlass");
    assert_eq!(
        (glass.groups.as_slice(), glass.max_duration.as_str()),
        (&["developers".to_owned()][..], "1h")
    );
    let listed = pam(cluster, Identity::Bob, &["policy", "list"]).ok();
    let row = listed
        .lines()
        .find(|l| l.starts_with(&policy))
        .unwrap_or_else(|| panic!("{policy} in {listed}"));
    assert!(row.contains("developers (1h, review within 24h)"), "{row}");

    // Someone outside the break-glass groups is refused by the API server.
    let outsider = pam(
        cluster,
        Identity::Bob,
        &["request", &policy, "--reason", "INC-911", "--emergency"],
    );
    assert_eq!(outsider.code, 1, "{outsider:#?}");
    assert!(
        outsider.stderr.starts_with("Error from server ("),
        "{outsider:#?}"
    );

    // Alice breaks glass and waits: approved at once, without an approver.
    let alice = cluster.client(Identity::Alice).await;
    let out = pam(
        cluster,
        Identity::Alice,
        &[
            "request",
            &policy,
            "--reason",
            "INC-911: outage, nobody reachable",
            "--emergency",
            "--duration",
            "30m",
            "--wait",
            "--timeout",
            "1m",
        ],
    )
    .ok();
    let first = created_name(&out);
    assert!(
        out.contains("created: emergency access, approved at once without an approver"),
        "{out}"
    );
    assert!(
        out.contains("Approved") && out.contains("an approver reviews it afterwards"),
        "{out}"
    );
    let approved = wait_phase(&alice, &first, Phase::Approved, SOON).await;
    assert!(approved.spec.emergency);
    let recorded = wait_review_required(&alice, &first, "True").await;
    assert!(
        recorded.status.as_ref().unwrap().review_due_at.is_some(),
        "status.reviewDueAt: {recorded:?}"
    );
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;

    // The approvers see it waiting; its requester does not review it.
    let unreviewed = pam(cluster, Identity::Bob, &["list", "--unreviewed"]).ok();
    assert!(
        unreviewed.lines().next().unwrap().contains("REVIEW-DUE"),
        "{unreviewed}"
    );
    let row = unreviewed
        .lines()
        .find(|l| l.starts_with(&first))
        .unwrap_or_else(|| panic!("{first} in {unreviewed}"));
    assert!(
        row.contains("alice") && row.contains(&policy) && row.contains(" in 23h"),
        "{row}"
    );
    let queue = pam(cluster, Identity::Bob, &["list", "--to-review"]).ok();
    let row = queue
        .lines()
        .find(|l| l.starts_with(&first))
        .unwrap_or_else(|| panic!("{first} in {queue}"));
    assert!(row.contains("emergency"), "{row}");
    let own = pam(cluster, Identity::Alice, &["list", "--to-review"]).ok();
    assert!(!own.contains(&first), "{own}");
    let status = pam(cluster, Identity::Bob, &["status", &first]).ok();
    assert!(field(&status, "Emergency").starts_with("yes"), "{status}");
    assert!(
        field(&status, "Review").starts_with("awaiting an approver's review, due in 23h"),
        "{status}"
    );
    assert!(
        field(&status, "Check a user").starts_with(&format!(
            "kubectl auth can-i approve accesspolicies/{policy} --as USER"
        )),
        "{status}"
    );

    // Bob confirms: it leaves the unreviewed list, and the grant runs on.
    let out = pam(
        cluster,
        Identity::Bob,
        &["confirm", &first, "-m", "justified: INC-911"],
    )
    .ok();
    assert!(
        out.starts_with(&format!(
            "elevationrequest.kubepam.io/{first} confirmed by bob"
        )),
        "{out}"
    );
    wait_review_required(&alice, &first, "False").await;
    wait_output(
        cluster,
        Identity::Bob,
        &["list", "--unreviewed"],
        "the confirmed grant off the unreviewed list",
        |out| !out.contains(&first),
    )
    .await;
    let status = pam(cluster, Identity::Alice, &["status", &first]).ok();
    assert_eq!(field(&status, "Status"), "Approved", "{status}");
    assert!(
        field(&status, "Review").starts_with("confirmed by bob")
            && field(&status, "Review").ends_with(": justified: INC-911"),
        "{status}"
    );

    // A second emergency grant, rejected by carol: it ends at once.
    let out = pam(
        cluster,
        Identity::Alice,
        &[
            "request",
            &policy,
            "--reason",
            "INC-912: again",
            "--emergency",
        ],
    )
    .ok();
    let second = created_name(&out);
    assert!(out.contains("emergency access, approved at once"), "{out}");
    wait_phase(&alice, &second, Phase::Approved, SOON).await;
    wait_review_required(&alice, &second, "True").await;
    let out = pam(
        cluster,
        Identity::Carol,
        &["reject", &second, "-m", "no incident: ask an approver"],
    )
    .ok();
    assert!(out.contains("rejected by carol"), "{out}");
    let revoked = wait_phase(&alice, &second, Phase::Revoked, SOON).await;
    assert_eq!(
        revoked.spec.reviews["carol"].decision,
        kubepam_core::api::ReviewDecision::Reject
    );
    let status = pam(cluster, Identity::Alice, &["status", &second]).ok();
    assert_eq!(field(&status, "Status"), "Revoked", "{status}");
    assert!(
        field(&status, "Review").starts_with("rejected by carol"),
        "{status}"
    );

    // Confirm is only for emergency access: the API server says so.
    let out = pam(
        cluster,
        Identity::Alice,
        &["request", &policy, "--reason", "INC-913: ordinary"],
    )
    .ok();
    let ordinary = created_name(&out);
    assert!(!out.contains("emergency"), "{out}");
    wait_phase(&alice, &ordinary, Phase::Pending, SOON).await;
    let refused = pam(cluster, Identity::Bob, &["confirm", &ordinary, "-m", "ok"]);
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(
        refused
            .stderr
            .starts_with("Error from server (Forbidden): "),
        "{refused:#?}"
    );
    assert!(
        refused.stderr.contains("is not an emergency request"),
        "{refused:#?}"
    );

    pam(cluster, Identity::Admin, &["policy", "delete", &policy]).ok();
    ns.delete().await;
}

/// `list --to-review` and `status` follow who may decide now: an escalation group once its
/// step opens, and anyone RBAC allows to approve the policy.
#[tokio::test]
async fn plugin_to_review_follows_escalation_and_rbac() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let cluster = ready().await;
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("plugin-route").await;
    let alice = cluster.client(Identity::Alice).await;

    // After 2s without a decision, ops-approvers (dave) may decide too; after 1h, sre-managers.
    let escalating = format!("{}-esc", ns.name);
    create_policy_with(
        cluster,
        &escalating,
        &ns.name,
        &[
            "--approval",
            "Manual",
            "--escalate-after",
            "2s=ops-approvers",
            "--escalate-after",
            "1h=sre-managers",
        ],
    );
    let judged = wait_policy_judged(&admin, &escalating).await;
    assert_eq!(accepted(&judged).0, "True", "{judged:?}");
    assert_eq!(judged.spec.escalation.len(), 2);
    let bad = pam(
        cluster,
        Identity::Admin,
        &[
            "policy",
            "create",
            "never",
            "--role",
            "view",
            "--approval",
            "Manual",
            "--escalate-after",
            "30m",
        ],
    );
    assert_eq!(bad.code, 2, "{bad:#?}");
    assert!(bad.stderr.contains("e.g. 30m=ops-leads"), "{bad:#?}");

    let out = pam(
        cluster,
        Identity::Alice,
        &["request", &escalating, "--reason", "INC-20: waits"],
    )
    .ok();
    let waiting = created_name(&out);
    wait_phase(&alice, &waiting, Phase::Pending, SOON).await;
    wait_output(
        cluster,
        Identity::Dave,
        &["list", "--to-review"],
        "the escalated request in dave's queue",
        |out| {
            out.lines()
                .any(|l| l.starts_with(&waiting) && l.contains("decide"))
        },
    )
    .await;
    let status = pam(cluster, Identity::Bob, &["status", &waiting]).ok();
    assert!(
        field(&status, "Approvers").starts_with("pam-approvers, ops-approvers (Manual"),
        "{status}"
    );
    assert!(
        field(&status, "Escalates").ends_with(": sre-managers may also decide"),
        "{status}"
    );
    // Dave decides it as a member of the escalation group.
    pam(
        cluster,
        Identity::Dave,
        &["deny", &waiting, "-m", "not now"],
    )
    .ok();
    wait_phase(&alice, &waiting, Phase::Denied, SOON).await;

    // RBAC's approve on a policy lets dave decide it without any group.
    let signed = format!("{}-rbac", ns.name);
    create_policy_with(cluster, &signed, &ns.name, &["--approval", "Manual"]);
    wait_policy_judged(&admin, &signed).await;
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{signed}-approver") },
        "rules": [{ "apiGroups": ["kubepam.io"], "resources": ["accesspolicies"],
                    "verbs": ["approve"], "resourceNames": [signed] }],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{signed}-approver") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": format!("{signed}-approver") },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave" }],
    }))
    .unwrap();
    let roles = Api::<ClusterRole>::all(admin.clone());
    let bindings = Api::<ClusterRoleBinding>::all(admin.clone());
    roles.create(&PostParams::default(), &role).await.unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let out = pam(
        cluster,
        Identity::Alice,
        &["request", &signed, "--reason", "INC-21: signer"],
    )
    .ok();
    let asked = created_name(&out);
    wait_phase(&alice, &asked, Phase::Pending, SOON).await;
    wait_output(
        cluster,
        Identity::Dave,
        &["list", "--to-review"],
        "the request in the RBAC approver's queue",
        |out| out.lines().any(|l| l.starts_with(&asked)),
    )
    .await;
    let status = pam(cluster, Identity::Dave, &["status", &asked]).ok();
    assert!(
        field(&status, "Check a user").starts_with(&format!(
            "kubectl auth can-i approve accesspolicies/{signed} --as USER"
        )),
        "{status}"
    );
    let can = cluster.kubectl(
        Identity::Admin,
        &[
            "auth",
            "can-i",
            "approve",
            &format!("accesspolicies.kubepam.io/{signed}"),
            "--as",
            "dave",
        ],
    );
    assert!(can.status.success(), "{can:?}");
    let out = pam(cluster, Identity::Dave, &["approve", &asked, "-m", "ok"]).ok();
    assert!(out.contains("approved by dave"), "{out}");
    wait_phase(&alice, &asked, Phase::Approved, SOON).await;

    let delete = kube::api::DeleteParams::default();
    let name = format!("{signed}-approver");
    bindings.delete(&name, &delete).await.unwrap();
    roles.delete(&name, &delete).await.unwrap();
    for p in [&escalating, &signed] {
        pam(cluster, Identity::Admin, &["policy", "delete", p]).ok();
    }
    ns.delete().await;
}
