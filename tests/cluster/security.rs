//! kubepam must not be usable against itself: every test here acts as the
//! attacker (a colliding name, a squatted object, a forged metadata field,
//! a burst during a policy edit, a hostile policy name) on the real control
//! plane, and checks that nothing of anyone else's is touched.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use kubepam_core::api::{AccessPolicy, ElevationRequest, Phase};
use kubepam_core::webhook_configuration::GuardHook;
use serde_json::{Value, json};

use crate::pam::{
    create_policy, create_request, events_for, request_id, review, standard_control, task_policy,
    wait_phase, wait_policy_judged,
};
use crate::support::{Identity, TestCluster, TestNamespace, api_status, eventually, kubepam};

const SOON: Duration = Duration::from_secs(15);

/// The people of a scenario, the standard control, and a fresh namespace.
struct Scene {
    cluster: &'static TestCluster,
    admin: Client,
    alice: Client,
    bob: Client,
    ns: TestNamespace,
}

async fn scene(prefix: &str) -> Scene {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    Scene {
        cluster,
        alice: cluster.client(Identity::Alice).await,
        bob: cluster.client(Identity::Bob).await,
        ns: cluster.namespace(prefix).await,
        admin,
    }
}

/// A ClusterRole with explicit rules (the built-in ones are empty here).
async fn reader_role(admin: &Client, name: &str) {
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": name },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
}

/// A ClusterRoleBinding made by someone else, binding `user` to `role`.
async fn someone_elses_binding(
    admin: &Client,
    name: &str,
    role: &str,
    user: &str,
) -> ClusterRoleBinding {
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "team": "platform" } },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    }))
    .unwrap();
    let api = Api::<ClusterRoleBinding>::all(admin.clone());
    match api.create(&PostParams::default(), &binding).await {
        Ok(created) => created,
        // kubepam-operator exists already (kubepam's own).
        Err(_) => api.get(name).await.unwrap(),
    }
}

/// What must not change about an object that is not kubepam's.
fn fingerprint(binding: &ClusterRoleBinding) -> Value {
    json!({
        "uid": binding.metadata.uid,
        "labels": binding.metadata.labels,
        "roleRef": binding.role_ref,
        "subjects": binding.subjects,
    })
}

/// A request named `operator` (or after any existing `kubepam-<x>` binding)
/// once made kubepam force-apply over that binding and delete it at the end
/// of the grant, kubepam's own `kubepam-operator` included.
#[tokio::test]
async fn a_request_named_after_an_existing_binding_never_touches_it() {
    let Scene {
        admin,
        alice,
        bob,
        ns,
        ..
    } = scene("collide").await;
    let role = format!("{}-reader", ns.name);
    reader_role(&admin, &role).await;
    let policy = format!("{}-read", ns.name);
    create_policy(
        &admin,
        &policy,
        json!({ "type": "Role", "role": role, "approvalType": "Auto" }),
    )
    .await;
    let crbs = Api::<ClusterRoleBinding>::all(admin.clone());
    let victim = format!("{}-victim", ns.name);
    let kubepams_own = crbs.get("kubepam-operator").await.unwrap();
    let others = someone_elses_binding(&admin, &format!("kubepam-{victim}"), &role, "carol").await;

    for name in ["operator", victim.as_str()] {
        create_request(&alice, name, json!({ "policy": policy, "reason": "INC-7" })).await;
        let approved = wait_phase(&alice, name, Phase::Approved, SOON).await;
        let id = request_id(&approved);
        // Its objects are named after its id, and recorded once they are made.
        let recorded = eventually("the grant recorded", SOON, || async {
            let request = Api::<ElevationRequest>::all(admin.clone())
                .get(name)
                .await
                .ok()?;
            let objects = request.status?.rbac_objects;
            (!objects.is_empty()).then_some(objects)
        })
        .await;
        assert!(
            recorded.iter().all(|o| o.name.contains(&id)),
            "{recorded:?}"
        );
        review(&bob, name, "bob", "Revoke", "done").await.unwrap();
        wait_phase(&alice, name, Phase::Revoked, SOON).await;
    }
    // Give a wrong delete every chance to have happened.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for before in [kubepams_own, others] {
        let after = crbs.get(&before.name_any()).await.expect("still there");
        assert_eq!(
            fingerprint(&after),
            fingerprint(&before),
            "{}",
            before.name_any()
        );
    }
    for name in ["operator", victim.as_str()] {
        let _ = Api::<ElevationRequest>::all(admin.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
    let _ = crbs
        .delete(&format!("kubepam-{victim}"), &DeleteParams::default())
        .await;
}

/// An object squatting on the name a grant needs (made after its id became
/// known) is neither taken over nor deleted: the request says so instead.
#[tokio::test]
async fn an_object_squatting_on_a_grant_name_is_left_alone_and_reported() {
    let Scene {
        admin,
        alice,
        bob,
        ns,
        ..
    } = scene("squat").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;
    let name = format!("{}-req", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-8" }),
    )
    .await;
    let pending = wait_phase(&alice, &name, Phase::Pending, SOON).await;
    let id = request_id(&pending);
    let squatter: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": format!("kubepam-grant-{id}"), "namespace": ns.name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave" }],
    }))
    .unwrap();
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &ns.name);
    let squatter = bindings
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();

    review(&bob, &name, "bob", "Approve", "ok").await.unwrap();
    wait_phase(&alice, &name, Phase::Approved, SOON).await;
    let requests = Api::<ElevationRequest>::all(admin.clone());
    let blocked = eventually("the GrantBlocked condition", SOON, || async {
        let request = requests.get(&name).await.ok()?;
        request
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "GrantBlocked" && c.status == "True")
    })
    .await;
    assert_eq!(blocked.reason, "NameCollision");
    assert!(
        blocked.message.contains(&format!("kubepam-grant-{id}")),
        "{}",
        blocked.message
    );
    let events = eventually("the NameCollision Event", SOON, || async {
        let events = events_for(&admin, &name).await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("NameCollision"))
            .then_some(events)
    })
    .await;
    assert!(!events.is_empty());
    let request = requests.get(&name).await.unwrap();
    assert!(
        request
            .status
            .unwrap()
            .rbac_objects
            .iter()
            .all(|o| o.kind != "RoleBinding"),
        "a binding kubepam does not own is never recorded as the grant's"
    );

    review(&bob, &name, "bob", "Revoke", "done").await.unwrap();
    wait_phase(&alice, &name, Phase::Revoked, SOON).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = bindings
        .get(&squatter.name_any())
        .await
        .expect("the squatter is not deleted");
    assert_eq!(after.metadata.uid, squatter.metadata.uid);
    assert_eq!(
        after.subjects, squatter.subjects,
        "its subjects are not taken over"
    );
    assert_eq!(after.metadata.labels, squatter.metadata.labels);
    bindings
        .delete(&squatter.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    ns.delete().await;
}

fn refused_with(result: Result<ElevationRequest, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => status.message,
        other => panic!("{what} must be refused: {other:?}"),
    }
}

/// Owner references and finalizers are kubepam's; labels the requester's.
#[tokio::test]
async fn nobody_rewrites_the_metadata_of_someone_elses_request() {
    let Scene {
        cluster,
        admin,
        alice,
        bob,
        ns,
        ..
    } = scene("meta").await;
    let dave = cluster.client(Identity::Dave).await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;
    let daves = format!("{}-daves", ns.name);
    create_request(
        &dave,
        &daves,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-9" }),
    )
    .await;
    wait_phase(&dave, &daves, Phase::Pending, SOON).await;
    let patch = |client: &Client, body: Value| {
        let api = Api::<ElevationRequest>::all(client.clone());
        let name = daves.clone();
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
        }
    };
    let owner = json!({ "metadata": { "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "anything",
        "uid": "0b4c2a2e-4f4e-4e8e-9a55-8a1f0d3c9e01",
    }] } });
    let message = refused_with(patch(&alice, owner.clone()).await, "alice adding an owner");
    assert!(message.contains("ownerReferences"), "{message}");
    refused_with(patch(&bob, owner).await, "an approver adding an owner");
    let message = refused_with(
        patch(&alice, json!({ "metadata": { "finalizers": null } })).await,
        "alice removing the cleanup finalizer",
    );
    assert!(message.contains("finalizers"), "{message}");
    refused_with(
        patch(&dave, json!({ "metadata": { "finalizers": null } })).await,
        "the requester removing the cleanup finalizer",
    );
    let message = refused_with(
        patch(&bob, json!({ "metadata": { "labels": { "team": "x" } } })).await,
        "an approver labelling someone's request",
    );
    assert!(message.contains("only the requester"), "{message}");
    refused_with(
        patch(
            &dave,
            json!({ "metadata": { "labels": { "kubepam.io/ended": "true" } } }),
        )
        .await,
        "a kubepam.io/ label",
    );
    patch(&dave, json!({ "metadata": { "labels": { "team": "x" } } }))
        .await
        .expect("the requester labels their own request");
    let request = Api::<ElevationRequest>::all(admin.clone())
        .get(&daves)
        .await
        .unwrap();
    assert!(request.metadata.owner_references.is_none());
    assert!(
        request
            .finalizers()
            .iter()
            .any(|f| f == "kubepam.io/grant-cleanup")
    );
    // A cluster administrator uninstalling kubepam may remove the finalizer.
    patch(&admin, json!({ "metadata": { "finalizers": null } }))
        .await
        .expect("system:masters removes the finalizer");
    let _ = Api::<ElevationRequest>::all(admin.clone())
        .delete(&daves, &DeleteParams::default())
        .await;
    ns.delete().await;
}

/// `name?purpose=read-only` once reached a GET URL as a query string and was
/// approved with the rights of `name`; a newline left a request retried forever.
#[tokio::test]
async fn a_policy_name_that_is_no_object_name_is_refused_at_creation() {
    let Scene {
        admin, alice, ns, ..
    } = scene("badname").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    for (i, hostile) in [
        format!("{policy}?purpose=read-only"),
        format!("{policy}\nfake log line"),
        format!("../{policy}"),
        format!("{policy}/status"),
        policy.to_uppercase(),
    ]
    .into_iter()
    .enumerate()
    {
        let request: ElevationRequest = serde_json::from_value(json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
            "metadata": { "name": format!("{}-{i}", ns.name) },
            "spec": { "policy": hostile, "namespace": ns.name, "reason": "INC-10" },
        }))
        .unwrap();
        let result = Api::<ElevationRequest>::all(alice.clone())
            .create(&PostParams::default(), &request)
            .await;
        let message = refused_with(result, &format!("policy {hostile:?}"));
        assert!(
            message.contains("policy must be the name of an AccessPolicy"),
            "{message}"
        );
    }
    ns.delete().await;
}

/// Editing a policy once dropped its rule from the guard for about 250 ms,
/// and deletes fired meanwhile went through.
#[tokio::test]
async fn editing_a_policy_never_opens_the_guard() {
    let Scene { admin, ns, .. } = scene("edit").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns.name);
    let count = 60;
    for i in 0..count {
        deployments
            .create(
                &PostParams::default(),
                &crate::pam::deployment(&format!("d{i}")),
            )
            .await
            .unwrap();
    }
    // The guard holds the policy before anyone deletes.
    eventually("the guard refuses", SOON, || async {
        let probe = deployments
            .delete(
                "d0",
                &DeleteParams {
                    dry_run: true,
                    ..DeleteParams::default()
                },
            )
            .await;
        (api_status(&probe) == Some(403)).then_some(())
    })
    .await;
    let policies = Api::<AccessPolicy>::all(admin.clone());
    let mut admitted = Vec::new();
    for edit in 0..6 {
        let max = if edit % 2 == 0 { "2h" } else { "1h" };
        policies
            .patch(
                &policy,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "maxDuration": max } })),
            )
            .await
            .unwrap();
        // A burst right after the edit, while the new generation is judged.
        let burst = (0..10).map(|i| {
            let api = deployments.clone();
            let name = format!("d{}", edit * 10 + i);
            async move {
                (
                    name.clone(),
                    api.delete(&name, &DeleteParams::default()).await.is_ok(),
                )
            }
        });
        for (name, ok) in futures::future::join_all(burst).await {
            if ok {
                admitted.push(name);
            }
        }
        wait_policy_judged(&admin, &policy).await;
    }
    assert!(
        admitted.is_empty(),
        "deleted during policy edits: {admitted:?}"
    );
    assert_eq!(
        deployments
            .list(&kube::api::ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        count
    );
    let _ = policies.delete(&policy, &DeleteParams::default()).await;
    ns.delete().await;
}

/// The guard is sent only what policies cover, in their namespaces, and
/// Kubernetes' own controllers are never gated.
#[tokio::test]
async fn the_guard_covers_only_policy_namespaces_and_never_gates_the_control_plane() {
    let Scene {
        cluster, admin, ns, ..
    } = scene("scope").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;
    let hook_name = GuardHook::name_for(&policy);
    let hook = eventually("the policy's guard webhook", SOON, || async {
        let config = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get("kubepam-guard")
            .await
            .ok()?;
        config.webhooks?.into_iter().find(|w| w.name == hook_name)
    })
    .await;
    let expression = &hook.namespace_selector.unwrap().match_expressions.unwrap()[0];
    assert_eq!(expression.key, "kubernetes.io/metadata.name");
    assert_eq!(expression.values.as_deref(), Some(&[ns.name.clone()][..]));

    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns.name);
    for name in ["gc", "ns-controller", "mine"] {
        deployments
            .create(&PostParams::default(), &crate::pam::deployment(name))
            .await
            .unwrap();
    }
    let refused = deployments.delete("mine", &DeleteParams::default()).await;
    assert_eq!(api_status(&refused), Some(403), "an administrator is gated");
    for (name, user) in [
        (
            "gc",
            "system:serviceaccount:kube-system:generic-garbage-collector",
        ),
        (
            "ns-controller",
            "system:serviceaccount:kube-system:namespace-controller",
        ),
    ] {
        let controller = cluster
            .client_as_user(
                user,
                &[
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                    "system:masters",
                ],
            )
            .await;
        Api::<Deployment>::namespaced(controller, &ns.name)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{user} must not be gated: {e}"));
    }
    let _ = Api::<AccessPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await;
    ns.delete().await;
}

/// A hand-made `AdmissionReview` sent to the guard once recorded a fake
/// "admin DELETE" on admin's approved request. Now only the API server, with
/// the client certificate of its admission configuration, reaches the
/// webhooks: no certificate, or a user's certificate, is turned away.
#[tokio::test]
async fn only_the_api_server_may_call_the_webhooks() {
    let operator = crate::support::operator();
    let Scene {
        cluster, admin, ns, ..
    } = scene("forged").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let name = format!("{}-admins", ns.name);
    create_request(
        &admin,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-11" }),
    )
    .await;
    wait_phase(&admin, &name, Phase::Approved, SOON).await;

    let config = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .get("kubepam")
        .await
        .unwrap();
    let ca = config.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap()
        .0;
    let forged = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-4000-8000-000000000001",
            "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "name": "fake", "namespace": ns.name, "operation": "DELETE",
            "userInfo": { "username": "admin", "groups": ["system:masters"] },
            "oldObject": { "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "fake", "namespace": ns.name } },
        },
    });
    let pki = cluster.kubeconfig_path.parent().unwrap().join("pki");
    let alice_pem = [
        std::fs::read(pki.join("alice.crt")).unwrap(),
        std::fs::read(pki.join("alice.key")).unwrap(),
    ]
    .concat();
    for identity in [None, Some(reqwest::Identity::from_pem(&alice_pem).unwrap())] {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(5));
        if let Some(identity) = identity.clone() {
            builder = builder.identity(identity);
        }
        let client = builder.build().unwrap();
        for _ in 0..25 {
            let answer = client
                .post(format!("{}/guard", operator.webhook_url))
                .json(&forged)
                .send()
                .await;
            assert!(
                answer.is_err(),
                "a caller that is not the API server was answered: {answer:?}"
            );
        }
    }
    // The API server's own calls are answered, and their uses recorded.
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &crate::pam::deployment("real"))
        .await
        .unwrap();
    deployments
        .delete("real", &DeleteParams::default())
        .await
        .unwrap();
    let requests = Api::<ElevationRequest>::all(admin.clone());
    let status = eventually("the real use recorded", SOON, || async {
        let status = requests.get(&name).await.ok()?.status?;
        (status.execution_count >= 1).then_some(status)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = requests.get(&name).await.unwrap().status.unwrap_or(status);
    assert_eq!(status.execution_count, 1, "{:?}", status.last_executions);
    let used = &status.last_executions[0];
    assert_eq!(used.name.as_deref(), Some("real"));
    assert!(!used.unverified);
    ns.delete().await;
}

/// Admission never sees an impersonator. A policy that would hand out
/// `impersonate` is refused without an explicit yes, and whoever RBAC lets
/// impersonate an approver group (or any identity kubepam trusts) is named.
#[tokio::test]
async fn impersonation_rights_are_refused_in_grants_and_reported() {
    let Scene {
        cluster, admin, ns, ..
    } = scene("imp").await;
    let policies = Api::<AccessPolicy>::all(admin.clone());
    let task: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": format!("{}-task", ns.name) },
        "spec": {
            "type": "Task", "approvalType": "Auto",
            "task": { "verbs": ["impersonate"], "apiGroups": [""], "resources": ["groups"] },
        },
    }))
    .unwrap();
    let refused = policies.create(&PostParams::default(), &task).await;
    match refused {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(s.message.contains("allowImpersonation"), "{}", s.message);
        }
        other => panic!("a Task policy granting impersonate must be refused: {other:?}"),
    }
    // A ClusterRole that impersonates, named by a Role policy.
    let role = format!("{}-impersonator", ns.name);
    let impersonator: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": role },
        "rules": [{ "apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": ["pam-approvers"] }],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &impersonator)
        .await
        .unwrap();
    // Admission reads the roles a policy names.
    let name = format!("{}-role", ns.name);
    let role_policy = |allow: bool| -> AccessPolicy {
        serde_json::from_value(json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
            "metadata": { "name": name },
            "spec": { "type": "Role", "role": role, "approvalType": "Manual", "allowImpersonation": allow },
        }))
        .unwrap()
    };
    match policies
        .create(&PostParams::default(), &role_policy(false))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(s.message.contains("allowImpersonation"), "{}", s.message);
            assert!(
                s.reason.contains("GrantsImpersonation") || s.message.contains("impersonate"),
                "{s:?}"
            );
        }
        other => panic!("a Role policy naming an impersonating role must be refused: {other:?}"),
    }
    policies
        .create(&PostParams::default(), &role_policy(true))
        .await
        .unwrap();
    let judged = wait_policy_judged(&admin, &name).await;
    assert_eq!(crate::pam::accepted(&judged).0, "True", "allowed knowingly");

    // Someone holds it standing: reported on the control and by the plugin.
    let mallory = format!("mallory-{}", ns.name);
    someone_elses_binding(&admin, &format!("{}-mallory", ns.name), &role, &mallory).await;
    let subject = format!("User {mallory}");
    let controls = Api::<kubepam_core::api::PrivilegedAccessControl>::all(admin.clone());
    let right = eventually("mallory reported", Duration::from_secs(45), || async {
        let control = controls.get("default").await.ok()?;
        control
            .status?
            .impersonators
            .into_iter()
            .find(|r| r.subject == subject)
    })
    .await;
    assert_eq!(right.targets, ["group pam-approvers"]);
    assert_eq!(
        right.via,
        [format!("ClusterRoleBinding/{}-mallory", ns.name)]
    );
    let output = std::process::Command::new(crate::support::workspace_binary("kubectl-pam"))
        .args([
            "--kubeconfig",
            cluster.kubeconfig_path.to_str().unwrap(),
            "--context",
            "alice",
            "impersonators",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && stdout.contains(&subject)
            && stdout.contains("group pam-approvers"),
        "{stdout}"
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), "default");
    eventually("the ImpersonationRights Event", SOON, || async {
        let list = events.list(&kube::api::ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ImpersonationRights")
                    && e.note.as_deref().is_some_and(|n| n.contains(&mallory))
            })
            .then_some(())
    })
    .await;
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&format!("{}-mallory", ns.name), &DeleteParams::default())
        .await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
    let _ = Api::<ClusterRole>::all(admin.clone())
        .delete(&role, &DeleteParams::default())
        .await;
    ns.delete().await;
}

/// A grantee allowed to edit role bindings once could strip kubepam's labels
/// off their own grant binding, after which kubepam no longer recognised it
/// and left it in place when the grant ended. kubepam now knows its objects
/// by the uid it recorded, puts the labels back, and removes the binding at
/// the end whatever its labels say.
#[tokio::test]
async fn a_grant_binding_stripped_of_its_labels_still_ends_with_the_grant() {
    let Scene {
        admin,
        alice,
        bob,
        ns,
        ..
    } = scene("strip").await;
    let role = format!("{}-binding-editor", ns.name);
    let editor: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": role },
        "rules": [{ "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["get", "list", "patch", "update"] }],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &editor)
        .await
        .unwrap();
    let policy = format!("{}-policy", ns.name);
    create_policy(
        &admin,
        &policy,
        // Editing a binding through the grant is persistence: allowed here knowingly.
        json!({ "type": "Role", "role": role, "scope": { "namespaces": [ns.name] }, "approvalType": "Auto", "allowPersistence": true }),
    )
    .await;
    let name = format!("{}-req", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-12" }),
    )
    .await;
    let approved = wait_phase(&alice, &name, Phase::Approved, SOON).await;
    let binding = format!("kubepam-grant-{}", request_id(&approved));
    let as_alice = Api::<RoleBinding>::namespaced(alice.clone(), &ns.name);
    let stripped = eventually("alice may edit her grant's binding", SOON, || async {
        as_alice
            .patch(
                &binding,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": null } })),
            )
            .await
            .ok()
    })
    .await;
    assert!(stripped.metadata.labels.is_none_or(|l| l.is_empty()));
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &ns.name);
    eventually("kubepam puts its labels back", SOON, || async {
        let labels = bindings.get(&binding).await.ok()?.metadata.labels?;
        (labels.get("kubepam.io/request-id") == Some(&request_id(&approved))).then_some(())
    })
    .await;
    let requests = Api::<ElevationRequest>::all(admin.clone());
    let request = requests.get(&name).await.unwrap();
    assert!(
        request
            .status
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "GrantBlocked"),
        "its own binding is not someone else's"
    );
    // Stripped again just before the end: still removed with the grant.
    as_alice
        .patch(
            &binding,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": null } })),
        )
        .await
        .unwrap();
    review(&bob, &name, "bob", "Revoke", "done").await.unwrap();
    wait_phase(&alice, &name, Phase::Revoked, SOON).await;
    eventually("the stripped binding is gone", SOON, || async {
        bindings
            .get_opt(&binding)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let _ = Api::<AccessPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(admin.clone())
        .delete(&role, &DeleteParams::default())
        .await;
    ns.delete().await;
}

/// Mutating admission could rewrite kubepam's own writes on their way in;
/// the API server's static policy refuses any that could.
#[tokio::test]
async fn nothing_may_rewrite_kubepams_writes_on_their_way_in() {
    let cluster = kubepam();
    for (kind, manifest) in [
        (
            "MutatingWebhookConfiguration",
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": { "name": "rewrite-status" },
                "webhooks": [{
                    "name": "rewrite.example.com", "clientConfig": { "url": "https://127.0.0.1:1/x" },
                    "rules": [{ "apiGroups": ["kubepam.io"], "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["elevationrequests/status"] }],
                    "sideEffects": "None", "admissionReviewVersions": ["v1"],
                }],
            }),
        ),
        (
            "MutatingAdmissionPolicy",
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
                "metadata": { "name": "rewrite-guard" },
                "spec": {
                    "matchConstraints": { "resourceRules": [{ "apiGroups": ["admissionregistration.k8s.io"], "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["validatingwebhookconfigurations"] }] },
                    "mutations": [{ "patchType": "ApplyConfiguration", "applyConfiguration": { "expression": "Object{}" } }],
                    "reinvocationPolicy": "Never",
                },
            }),
        ),
    ] {
        let file = std::env::temp_dir().join(format!("kubepam-{kind}-{}.json", std::process::id()));
        std::fs::write(&file, manifest.to_string()).unwrap();
        let output = cluster.kubectl(
            Identity::Admin,
            &["create", "--dry-run=server", "-f", file.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("kubepam"),
            "{kind}: {stderr}"
        );
        let _ = std::fs::remove_file(file);
    }
}

/// Rights that let their holder give themselves more (bind, escalate,
/// wildcards, cluster-admin, token requests, secrets cluster-wide) are
/// granted only by a policy that says so; a ClusterRole edited to hold them
/// after its policy was accepted takes the policy out of force; kubectl shows
/// the warnings.
#[tokio::test]
async fn policies_that_give_away_the_keys_need_an_explicit_yes() {
    let Scene {
        cluster,
        admin,
        alice,
        ns,
        ..
    } = scene("keys").await;
    let policies = Api::<AccessPolicy>::all(admin.clone());
    let binder = |name: &str, allow: bool| -> AccessPolicy {
        serde_json::from_value(json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
            "metadata": { "name": name },
            "spec": {
                "type": "Task", "approvalType": "Manual", "scope": { "namespaces": [ns.name] },
                "task": { "verbs": ["bind"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"] },
                "allowPrivilegeEscalation": allow,
            },
        }))
        .unwrap()
    };
    let name = format!("{}-bind", ns.name);
    match policies
        .create(&PostParams::default(), &binder(&name, false))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(s.message.contains("would grant bind"), "{}", s.message);
            assert!(
                s.message.contains("allowPrivilegeEscalation: true"),
                "{}",
                s.message
            );
        }
        other => panic!("a policy granting bind must be refused: {other:?}"),
    }
    policies
        .create(&PostParams::default(), &binder(&name, true))
        .await
        .unwrap();
    assert_eq!(
        crate::pam::accepted(&wait_policy_judged(&admin, &name).await).0,
        "True"
    );

    // A role that was harmless when its policy was accepted, then widened.
    let role = format!("{}-widened", ns.name);
    reader_role(&admin, &role).await;
    let role_policy = format!("{}-role", ns.name);
    let judged = create_policy(
        &admin,
        &role_policy,
        json!({ "type": "Role", "role": role, "approvalType": "Auto", "scope": { "namespaces": [ns.name] } }),
    )
    .await;
    assert_eq!(crate::pam::accepted(&judged).0, "True");
    Api::<ClusterRole>::all(admin.clone())
        .patch(
            &role,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "rules": [{ "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] }] }),
            ),
        )
        .await
        .unwrap();
    eventually(
        "the widened role takes its policy out of force",
        SOON,
        || async {
            let policy = policies.get(&role_policy).await.ok()?;
            (crate::pam::accepted(&policy)
                == ("False".to_owned(), "GrantsPrivilegeEscalation".to_owned()))
                .then_some(())
        },
    )
    .await;
    let request = format!("{}-after", ns.name);
    create_request(
        &alice,
        &request,
        json!({ "policy": role_policy, "namespace": ns.name, "reason": "INC-9" }),
    )
    .await;
    let denied = wait_phase(&alice, &request, Phase::Denied, SOON).await;
    let approved = denied
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Approved")
        .unwrap();
    assert_eq!(approved.reason, "GrantsPrivilegeEscalation");

    // kubectl shows the warnings of an admitted policy.
    let manifest = cluster.log_dir().join(format!("{}-warned.yaml", ns.name));
    std::fs::write(
        &manifest,
        serde_json::to_string(&json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
            "metadata": { "name": format!("{}-warned", ns.name) },
            "spec": {
                "type": "Task", "approvalType": "Auto", "approverGroup": "system:authenticated",
                "scope": { "namespaces": [ns.name] }, "allowPrivilegeEscalation": true,
                "task": { "verbs": ["create"], "apiGroups": [""], "resources": ["serviceaccounts/token"] },
            },
        }))
        .unwrap(),
    )
    .unwrap();
    let out = cluster.kubectl(
        Identity::Admin,
        &["apply", "--server-side", "-f", manifest.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: approverGroup system:authenticated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("approvalType Auto grants serviceaccounts/token"),
        "{stderr}"
    );
    ns.delete().await;
}

/// kubepam's own namespace holds its service account, certificate and Lease:
/// no policy may name it, and no request may narrow a cluster-wide policy to it.
#[tokio::test]
async fn no_grant_reaches_kubepams_namespace() {
    let Scene {
        admin, alice, ns, ..
    } = scene("own").await;
    let policies = Api::<AccessPolicy>::all(admin.clone());
    let scoped: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": format!("{}-scoped", ns.name) },
        "spec": {
            "type": "Task", "approvalType": "Auto", "allowPrivilegeEscalation": true,
            "scope": { "namespaces": [ns.name, "kubepam-system"] },
            "task": { "verbs": ["create"], "apiGroups": [""], "resources": ["serviceaccounts/token"] },
        },
    }))
    .unwrap();
    match policies.create(&PostParams::default(), &scoped).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(
                s.message.contains("kubepam's own namespace"),
                "{}",
                s.message
            );
        }
        other => panic!("a policy scoped to kubepam-system must be refused: {other:?}"),
    }
    // The attack of the report: token minting, cluster-wide, narrowed to kubepam.
    // (A Role policy: a Task policy would guard every token request of the cluster.)
    let wide = format!("{}-wide", ns.name);
    let minter: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": wide },
        "rules": [{ "apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"] }],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &minter)
        .await
        .unwrap();
    create_policy(
        &admin,
        &wide,
        json!({ "type": "Role", "role": wide, "approvalType": "Auto", "allowPrivilegeEscalation": true }),
    )
    .await;
    let requests = Api::<ElevationRequest>::all(alice.clone());
    let narrowed: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": format!("{}-mint", ns.name) },
        "spec": { "policy": wide, "namespace": "kubepam-system", "reason": "INC-1" },
    }))
    .unwrap();
    let refused = requests.create(&PostParams::default(), &narrowed).await;
    match refused {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(
                s.message.contains("kubepam's own namespace"),
                "{}",
                s.message
            );
        }
        other => panic!("a request narrowed to kubepam-system must be refused: {other:?}"),
    }
    assert!(
        !crate::pam::allowed(
            &admin,
            "alice",
            "create",
            "",
            "serviceaccounts/token",
            Some("kubepam-system")
        )
        .await
    );
    ns.delete().await;
}

/// A Role policy's grant holds the rules its approval saw: an edit of the
/// named ClusterRole after approval never widens a grant in force. An edit
/// to key rights takes the policy out of force (and the grant with it);
/// with the opt-in, the grant still keeps the approval's rules.
#[tokio::test]
async fn a_role_edited_after_approval_never_widens_the_grant() {
    let Scene {
        admin,
        alice,
        bob,
        ns,
        ..
    } = scene("widen").await;
    let roles = Api::<ClusterRole>::all(admin.clone());
    let mut grants = Vec::new();
    for (suffix, allow) in [("plain", false), ("knowing", true)] {
        let role = format!("{}-{suffix}", ns.name);
        reader_role(&admin, &role).await;
        let policy = format!("{}-{suffix}", ns.name);
        create_policy(
            &admin,
            &policy,
            json!({
                "type": "Role", "role": role, "approvalType": "Auto",
                "scope": { "namespaces": [ns.name] },
                "allowPrivilegeEscalation": allow, "allowImpersonation": allow,
            }),
        )
        .await;
        let request = format!("{}-{suffix}", ns.name);
        create_request(
            &alice,
            &request,
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-3" }),
        )
        .await;
        wait_phase(&alice, &request, Phase::Approved, SOON).await;
        crate::pam::wait_allowed(
            &admin,
            "alice",
            ("get", "", "configmaps"),
            Some(&ns.name),
            true,
            SOON,
        )
        .await;
        grants.push((role, policy, request));
    }
    // Widened without key rights: the grant keeps reading only.
    let (plain_role, plain_policy, plain_request) = &grants[0];
    roles
        .patch(
            plain_role,
            &PatchParams::default(),
            &Patch::Merge(json!({ "rules": [{ "apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "delete"] }] })),
        )
        .await
        .unwrap();
    // Judged again (every 10 s); still accepted, the grant is the approval's.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let policies = Api::<AccessPolicy>::all(admin.clone());
    let judged = policies.get(plain_policy).await.unwrap();
    assert_eq!(crate::pam::accepted(&judged).0, "True");
    assert!(
        judged.status.unwrap().role_rules[plain_role.as_str()][0]
            .verbs
            .contains(&"delete".to_owned()),
        "the policy's status shows the role as it is now"
    );
    for (verb, resource) in [("delete", "configmaps"), ("get", "secrets")] {
        assert!(
            !crate::pam::allowed(&admin, "alice", verb, "", resource, Some(&ns.name)).await,
            "{verb} {resource} came with the widened role"
        );
    }
    assert!(crate::pam::allowed(&admin, "alice", "get", "", "configmaps", Some(&ns.name)).await);

    // Widened to everything: without the opt-in, the policy and its grant end.
    for (role, _, _) in &grants {
        roles
            .patch(
                role,
                &PatchParams::default(),
                &Patch::Merge(json!({ "rules": [{ "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] }] })),
            )
            .await
            .unwrap();
    }
    let ended = wait_phase(
        &alice,
        plain_request,
        Phase::Revoked,
        Duration::from_secs(30),
    )
    .await;
    let why = ended
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Approved")
        .unwrap();
    assert_eq!(why.reason, "GrantsPrivilegeEscalation", "{}", why.message);
    // With the opt-in the policy stays in force, and the grant stays as approved.
    let (_, knowing_policy, knowing_request) = &grants[1];
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        crate::pam::accepted(&policies.get(knowing_policy).await.unwrap()).0,
        "True"
    );
    let requests = Api::<ElevationRequest>::all(bob.clone());
    let knowing = requests.get(knowing_request).await.unwrap();
    assert_eq!(knowing.status.unwrap().phase, Some(Phase::Approved));
    assert!(
        !crate::pam::allowed(
            &admin,
            "alice",
            "delete",
            "apps",
            "deployments",
            Some(&ns.name)
        )
        .await
    );
    assert!(!crate::pam::allowed(&admin, "alice", "get", "", "secrets", Some(&ns.name)).await);
    ns.delete().await;
}

/// The report's attack: alice, granted a role in one namespace, binds it to
/// herself, mints a 48-hour token and a token Secret for a service account,
/// so that the access outlives the grant. Each is refused while only the
/// grant allows it; a token that ends with the grant, a call she could make
/// anyway, and a policy with `allowPersistence: true` pass.
#[tokio::test]
async fn an_elevation_cannot_mint_access_that_outlives_it() {
    let Scene {
        admin,
        alice,
        bob,
        ns,
        ..
    } = scene("persist").await;
    let role = format!("{}-builder", ns.name);
    let builder: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": role },
        "rules": [
            { "apiGroups": [""], "resources": ["configmaps", "serviceaccounts", "secrets"], "verbs": ["get", "create"] },
            { "apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"] },
            { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"] },
        ],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &builder)
        .await
        .unwrap();
    let mut grants = Vec::new();
    for (who, client, allow) in [("alice", &alice, false), ("bob", &bob, true)] {
        let policy = format!("{}-{who}", ns.name);
        create_policy(
            &admin,
            &policy,
            json!({
                "type": "Role", "role": role, "approvalType": "Auto", "allowPrivilegeEscalation": true,
                "scope": { "namespaces": [ns.name] }, "allowPersistence": allow,
            }),
        )
        .await;
        let request = format!("{}-{who}", ns.name);
        create_request(
            client,
            &request,
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-5", "duration": "1h" }),
        )
        .await;
        wait_phase(client, &request, Phase::Approved, SOON).await;
        crate::pam::wait_allowed(
            &admin,
            who,
            ("create", "rbac.authorization.k8s.io", "rolebindings"),
            Some(&ns.name),
            true,
            SOON,
        )
        .await;
        grants.push(request);
    }
    let self_binding = |name: &str, user: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": ns.name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
        }))
        .unwrap()
    };
    let refused = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(
                s.message.contains("outlives your grant"),
                "{what}: {}",
                s.message
            );
            assert!(s.message.contains(&grants[0]), "{what}: {}", s.message);
        }
        other => panic!("{what} through a grant must be refused: {other:?}"),
    };
    let alices_bindings = Api::<RoleBinding>::namespaced(alice.clone(), &ns.name);
    refused(
        alices_bindings
            .create(&PostParams::default(), &self_binding("mine", "alice"))
            .await
            .map(|_| ()),
        "a binding to herself",
    );
    // A service account with a token for two days, and a token Secret.
    let accounts =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(alice.clone(), &ns.name);
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "helper" } })).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let token = |seconds: i64| -> k8s_openapi::api::authentication::v1::TokenRequest {
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": seconds } }))
            .unwrap()
    };
    refused(
        accounts
            .create_token_request("helper", &PostParams::default(), &token(172_800))
            .await
            .map(|_| ()),
        "a 48-hour token",
    );
    let short = accounts
        .create_token_request("helper", &PostParams::default(), &token(600))
        .await;
    assert!(
        short.is_ok(),
        "a token that ends before the grant: {short:?}"
    );
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": "helper-token", "annotations": { "kubernetes.io/service-account.name": "helper" } },
        "type": "kubernetes.io/service-account-token",
    }))
    .unwrap();
    refused(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(alice.clone(), &ns.name)
            .create(&PostParams::default(), &secret)
            .await
            .map(|_| ()),
        "a token Secret",
    );
    // An ordinary object is no persistence.
    let config: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "notes" } })).unwrap();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(alice.clone(), &ns.name)
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    // With the opt-in, bob's policy allows it, a two-day token included.
    Api::<RoleBinding>::namespaced(bob.clone(), &ns.name)
        .create(&PostParams::default(), &self_binding("bobs", "bob"))
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(bob.clone(), &ns.name)
        .create_token_request("helper", &PostParams::default(), &token(172_800))
        .await
        .unwrap();
    // A right alice holds standing is hers to use, grant or not.
    let standing_role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": format!("{}-standing", ns.name) },
        "rules": [{ "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"] }],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &standing_role)
        .await
        .unwrap();
    let mut standing = self_binding("alice-standing", "alice");
    standing.role_ref.name = format!("{}-standing", ns.name);
    Api::<RoleBinding>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &standing)
        .await
        .unwrap();
    eventually("a standing right is seen", SOON, || async {
        alices_bindings
            .create(&PostParams::default(), &self_binding("mine", "alice"))
            .await
            .ok()
    })
    .await;
    ns.delete().await;
}

/// Nothing in kubepam's own namespace is reachable through a grant, even a
/// cluster-wide one that allows it; an administrator's standing rights are
/// untouched.
#[tokio::test]
async fn a_cluster_wide_grant_never_reaches_kubepams_namespace() {
    let Scene {
        cluster, admin, ns, ..
    } = scene("ownwide").await;
    // dave: no other scenario grants him anything.
    let dave = cluster.client(Identity::Dave).await;
    let role = format!("{}-minter", ns.name);
    let token_role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": role },
        "rules": [
            { "apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"] },
            { "apiGroups": [""], "resources": ["namespaces"], "verbs": ["patch"] },
            { "apiGroups": ["kubepam.io"], "resources": ["privilegedaccesscontrols"], "verbs": ["patch"] },
        ],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &token_role)
        .await
        .unwrap();
    let policy = format!("{}-tokens", ns.name);
    create_policy(
        &admin,
        &policy,
        json!({
            "type": "Role", "role": role, "approvalType": "Auto",
            "allowPrivilegeEscalation": true, "allowPersistence": true,
        }),
    )
    .await;
    let request = format!("{}-tokens", ns.name);
    create_request(
        &dave,
        &request,
        json!({ "policy": policy, "reason": "INC-6", "duration": "1h" }),
    )
    .await;
    wait_phase(&dave, &request, Phase::Approved, SOON).await;
    crate::pam::wait_allowed(
        &admin,
        "dave",
        ("create", "", "serviceaccounts/token"),
        Some("kubepam-system"),
        true,
        SOON,
    )
    .await;
    let short: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 600 } }))
            .unwrap();
    let minted = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
        dave.clone(),
        "kubepam-system",
    )
    .create_token_request("kubepam", &PostParams::default(), &short)
    .await;
    match minted {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(
                s.message.contains("kubepam's own namespace"),
                "{}",
                s.message
            );
        }
        other => panic!("a token for kubepam's own account must be refused: {other:?}"),
    }
    // Nor kubepam's namespace itself, nor its settings (a system account
    // for oneself would be exempt from every guard).
    let label = json!({ "metadata": { "labels": { "owned": "dave" } } });
    let patched = Api::<k8s_openapi::api::core::v1::Namespace>::all(dave.clone())
        .patch(
            "kubepam-system",
            &PatchParams::default(),
            &Patch::Merge(&label),
        )
        .await;
    assert_eq!(api_status(&patched), Some(403), "{patched:?}");
    let me = json!({ "spec": { "systemAccounts": ["dave"] } });
    let patched = Api::<kubepam_core::api::PrivilegedAccessControl>::all(dave.clone())
        .patch("default", &PatchParams::default(), &Patch::Merge(&me))
        .await;
    assert_eq!(api_status(&patched), Some(403), "{patched:?}");
    // Elsewhere the same grant works.
    let accounts =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &ns.name);
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "worker" } })).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(dave.clone(), &ns.name)
        .create_token_request("worker", &PostParams::default(), &short)
        .await
        .unwrap();
    ns.delete().await;
}

/// The auditor's first list: who holds, outside kubepam, standing rights to
/// what a Task policy guards, or to impersonate, escalate and bind; from the
/// plugin, and counted per right in `kubepam_standing_holders`.
#[tokio::test]
async fn standing_rights_are_listed_and_counted() {
    let Scene {
        cluster, admin, ns, ..
    } = scene("standing").await;
    let policy = format!("{}-delete", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;
    let deleter = format!("{}-deleter", ns.name);
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": deleter },
        "rules": [
            { "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"] },
            { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"] },
        ],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let holder = format!("olga-{}", ns.name);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "olga", "namespace": ns.name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": deleter },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": holder }],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let output = std::process::Command::new(crate::support::workspace_binary("kubectl-pam"))
        .args([
            "--kubeconfig",
            cluster.kubeconfig_path.to_str().unwrap(),
            "--context",
            "admin",
            "standing",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rights: Vec<kubepam_core::standing::StandingRight> =
        serde_json::from_slice(&output.stdout).unwrap();
    let subject = format!("User {holder}");
    let held: Vec<&str> = rights
        .iter()
        .filter(|r| r.subject == subject)
        .map(|r| r.right.as_str())
        .collect();
    // A RoleBinding's bind right holds in its namespace: still a standing right to bind there.
    assert_eq!(
        held,
        ["bind", format!("policy {policy}").as_str()],
        "{rights:?}"
    );
    let via = &rights.iter().find(|r| r.subject == subject).unwrap().via;
    assert_eq!(via, &[format!("RoleBinding/{}/olga", ns.name)]);
    // The operator counts them, per right (the control plane's own accounts
    // hold some too, and are listed like anyone).
    let holders = rights
        .iter()
        .filter(|r| r.right == format!("policy {policy}"))
        .count();
    let line = format!("kubepam_standing_holders{{right=\"policy {policy}\"}} {holders}");
    eventually("the count is exported", Duration::from_secs(45), || async {
        let (_, text) = crate::support::http_get(kubepam_metrics_port(), "/metrics").ok()?;
        text.contains(&line).then_some(())
    })
    .await;
    ns.delete().await;
}

fn kubepam_metrics_port() -> u16 {
    crate::support::operator().metrics_port
}
