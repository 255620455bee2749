//! Identity is the security core: every test here acts as the attacker
//! (another user, a forged field, an administrator with standing rights)
//! against the real admission path of the API server.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kubepam_core::api::{ElevationRequest, Phase};
use serde_json::json;

use crate::pam::{
    create_policy, create_request, delete_policy, deployment, events_for, review, standard_control,
    task_policy, wait_phase,
};
use crate::support::{Identity, TestNamespace, eventually, kubepam};

const SOON: Duration = Duration::from_secs(15);

/// A refused call's message (403 from a webhook), or a panic naming `what`.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => status.message,
        other => panic!("{what} must be refused: {other:?}"),
    }
}

async fn setup(prefix: &str, approval: &str) -> (TestNamespace, String) {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace(prefix).await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, approval)).await;
    (ns, policy)
}

#[tokio::test]
async fn the_requester_is_whoever_creates_the_request() {
    let cluster = kubepam();
    let (ns, policy) = setup("requester", "Manual").await;
    let alice = cluster.client(Identity::Alice).await;
    let name = format!("{}-mine", ns.name);
    let created = create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-1" }),
    )
    .await;
    assert_eq!(
        created.spec.requester.as_deref(),
        Some("alice"),
        "set from the caller"
    );

    // Forging someone else's name is refused, with what to do instead.
    let forged: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": format!("{}-forged", ns.name) },
        "spec": { "policy": policy, "namespace": ns.name, "reason": "INC-1", "requester": "dave" },
    }))
    .unwrap();
    let message = refusal(
        Api::<ElevationRequest>::all(alice.clone())
            .create(&PostParams::default(), &forged)
            .await,
        "a request in dave's name",
    );
    assert!(message.contains("alice"), "{message}");

    // Nobody can smuggle reviews in at creation.
    let pre_approved: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": format!("{}-preapproved", ns.name) },
        "spec": { "policy": policy, "namespace": ns.name, "reason": "INC-1",
                  "reviews": { "bob": { "decision": "Approve" } } },
    }))
    .unwrap();
    refusal(
        Api::<ElevationRequest>::all(alice.clone())
            .create(&PostParams::default(), &pre_approved)
            .await,
        "a request created with a review",
    );
    let admin = cluster.client(Identity::Admin).await;
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

#[tokio::test]
async fn only_approvers_write_only_their_own_review() {
    let cluster = kubepam();
    let (ns, policy) = setup("reviews", "Manual").await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let dave = cluster.client(Identity::Dave).await;
    let name = format!("{}-req", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-2" }),
    )
    .await;
    wait_phase(&alice, &name, Phase::Pending, SOON).await;

    // The requester approving herself.
    let message = refusal(
        review(&alice, &name, "alice", "Approve", "trust me").await,
        "alice approving her own request",
    );
    assert!(
        message.contains("nobody can review their own request"),
        "{message}"
    );
    // Someone outside the approver group, even with his own name.
    let message = refusal(
        review(&dave, &name, "dave", "Approve", "lgtm").await,
        "dave (not in pam-approvers) approving",
    );
    assert!(message.contains("pam-approvers"), "{message}");
    // A cluster administrator with standing rights is no approver either.
    refusal(
        review(&admin, &name, "admin", "Approve", "I am root").await,
        "admin approving",
    );
    // An approver writing a review under another approver's name.
    let message = refusal(
        review(&bob, &name, "carol", "Approve", "carol said ok").await,
        "bob writing carol's review",
    );
    assert!(message.contains("bob"), "{message}");
    // Alice forging bob's entry.
    refusal(
        review(&alice, &name, "bob", "Approve", "forged").await,
        "alice writing bob's review",
    );
    // Revoke only applies to an approved request.
    refusal(
        review(&bob, &name, "bob", "Revoke", "early").await,
        "a Revoke while Pending",
    );
    // None of that moved the request.
    let still = Api::<ElevationRequest>::all(admin.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(crate::pam::phase(&still), Some(Phase::Pending));
    assert!(still.spec.reviews.is_empty(), "{:?}", still.spec.reviews);

    // The real approver, with his own entry, is let through.
    review(&bob, &name, "bob", "Approve", "ok").await.unwrap();
    wait_phase(&alice, &name, Phase::Approved, SOON).await;
    // Once approved, an approval cannot be written again; the one written cannot be removed by others.
    let carol = cluster.client(Identity::Carol).await;
    refusal(
        review(&carol, &name, "carol", "Approve", "me too").await,
        "an Approve once approved",
    );
    let removal = json!({ "spec": { "reviews": { "bob": null } } });
    refusal(
        Api::<ElevationRequest>::all(carol.clone())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&removal))
            .await,
        "carol deleting bob's review",
    );
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

#[tokio::test]
async fn only_the_operator_writes_status() {
    let cluster = kubepam();
    let (ns, policy) = setup("status", "Manual").await;
    let alice = cluster.client(Identity::Alice).await;
    let name = format!("{}-req", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-3" }),
    )
    .await;
    wait_phase(&alice, &name, Phase::Pending, SOON).await;
    let forged =
        json!({ "status": { "phase": "Approved", "grantedUntil": "2099-01-01T00:00:00Z" } });
    let bob = cluster.client(Identity::Bob).await;
    for who in [&alice, &bob] {
        let result = Api::<ElevationRequest>::all(who.clone())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&forged))
            .await;
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403),
            "status must be refused by RBAC: {result:?}"
        );
    }
    let admin = cluster.client(Identity::Admin).await;
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

/// The Microsoft 365 behaviour: a privileged task is refused to anyone
/// without an approved request, a cluster administrator included; system
/// accounts are never gated; every admitted use is recorded.
#[tokio::test]
async fn the_guard_gates_privileged_tasks_even_for_cluster_admins() {
    let cluster = kubepam();
    let (ns, policy) = setup("guard", "Auto").await;
    let admin = cluster.client(Identity::Admin).await;
    let ci = cluster.client(Identity::CiBot).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns.name);
    for name in ["one", "two", "three"] {
        deployments
            .create(&PostParams::default(), &deployment(name))
            .await
            .unwrap();
    }

    // Admin, with standing rights and no request, is refused once the guard
    // knows the policy (asked by dry run, which admission answers the same
    // way but records nothing, until the policy's status reaches kubepam's
    // cache); the message says how to ask.
    let dry_run = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    eventually("the guard knows the policy", SOON, || async {
        match deployments.delete("one", &dry_run).await {
            Err(kube::Error::Api(status)) if status.code == 403 => Some(()),
            _ => None,
        }
    })
    .await;
    let message = match deployments.delete("one", &DeleteParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 403 => status.message,
        other => panic!("admin deleted a guarded deployment without a request: {other:?}"),
    };
    assert!(message.contains(&policy), "{message}");
    assert!(
        message.contains("ElevationRequest") || message.contains("kubectl pam request"),
        "{message}"
    );
    // Not guarded elsewhere: the policy covers only its namespace.
    let other = cluster.namespace("guard-other").await;
    let elsewhere: Api<Deployment> = Api::namespaced(admin.clone(), &other.name);
    elsewhere
        .create(&PostParams::default(), &deployment("free"))
        .await
        .unwrap();
    elsewhere
        .delete("free", &DeleteParams::default())
        .await
        .expect("unguarded delete");

    // A system account is never gated (it still needs RBAC, as always).
    ns.bind_role(
        "ci-deployer",
        "system:serviceaccount:ci:deployer",
        json!([{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"] }]),
    )
    .await;
    let as_ci: Api<Deployment> = Api::namespaced(ci, &ns.name);
    eventually("ci-bot deletes without a request", SOON, || async {
        as_ci
            .delete("two", &DeleteParams::default())
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    // Admin asks like everyone else, and is let through, on the record.
    let name = format!("{}-admin", ns.name);
    create_request(
        &admin,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "cleanup" }),
    )
    .await;
    wait_phase(&admin, &name, Phase::Approved, SOON).await;
    eventually("admin deletes with a grant", SOON, || async {
        deployments
            .delete("one", &DeleteParams::default())
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let recorded = eventually("the use is recorded", SOON, || async {
        let request = Api::<ElevationRequest>::all(admin.clone())
            .get(&name)
            .await
            .ok()?;
        let status = request.status?;
        (status.execution_count >= 1).then_some(status)
    })
    .await;
    let used = recorded.last_executions.last().unwrap();
    assert_eq!(
        (used.verb.as_str(), used.name.as_deref(), used.user.as_str()),
        ("delete", Some("one"), "admin")
    );
    assert_eq!(used.namespace.as_deref(), Some(ns.name.as_str()));
    eventually("an Executed event", SOON, || async {
        events_for(&admin, &name)
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Executed"))
            .then_some(())
    })
    .await;
    // A dry run is checked but not recorded.
    let before = recorded.execution_count;
    let dry = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    deployments
        .delete("three", &dry)
        .await
        .expect("dry run allowed with the grant");
    // Then a real use: uses are recorded in the order they were admitted,
    // so once it is on the record, a recorded dry run would be too.
    deployments
        .delete("three", &DeleteParams::default())
        .await
        .expect("the real delete with the grant");
    let after = eventually("the real use is recorded", SOON, || async {
        let status = Api::<ElevationRequest>::all(admin.clone())
            .get(&name)
            .await
            .ok()?
            .status?;
        let last = status.last_executions.last()?;
        (last.name.as_deref() == Some("three")).then_some(status)
    })
    .await;
    assert_eq!(
        after.execution_count,
        before + 1,
        "dry runs are not uses: {:?}",
        after.last_executions
    );

    Api::<ElevationRequest>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    delete_policy(&admin, &policy).await;
    ns.delete().await;
    other.delete().await;
}

/// Policies that cannot work are refused when they are written, with a
/// message that says what to change.
#[tokio::test]
async fn inconsistent_policies_are_refused_with_a_clear_message() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let ns = cluster.namespace("bad-policy").await;
    for (suffix, spec, expect) in [
        (
            "task-with-role",
            json!({ "type": "Task", "role": "edit", "approvalType": "Manual",
                    "task": { "verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"] } }),
            "Task",
        ),
        (
            "role-without-role",
            json!({ "type": "Role", "approvalType": "Manual" }),
            "role",
        ),
        (
            "empty-group",
            json!({ "type": "RoleGroup", "roles": [], "approvalType": "Auto" }),
            "roles",
        ),
        (
            "odd-approval",
            json!({ "type": "Role", "role": "edit", "approvalType": "Sometimes" }),
            "approvalType",
        ),
        (
            "bad-duration",
            json!({ "type": "Role", "role": "edit", "approvalType": "Auto", "maxDuration": "4 hours" }),
            "maxDuration",
        ),
    ] {
        // Sent as raw JSON: some of these are not even valid Rust values.
        let resource = kube::api::ApiResource::erase::<kubepam_core::api::AccessPolicy>(&());
        let raw = kube::api::DynamicObject::new(&format!("{}-{suffix}", ns.name), &resource)
            .data(json!({ "spec": spec }));
        let result = Api::<kube::api::DynamicObject>::all_with(admin.clone(), &resource)
            .create(&PostParams::default(), &raw)
            .await;
        let message = refusal(result, suffix);
        assert!(message.contains(expect), "{suffix}: {message}");
    }
    ns.delete().await;
}

/// A namespace that is not a namespace name is refused at the schema, with
/// what to write, before anything is granted (it could never be bound).
#[tokio::test]
async fn namespaces_must_be_namespace_names() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let policy: kubepam_core::api::AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": "bad-namespace-policy" },
        "spec": {
            "type": "Task",
            "task": { "verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"] },
            "scope": { "namespaces": ["prod", "Shop Floor"] },
            "approvalType": "Manual",
        },
    }))
    .unwrap();
    let refused = Api::<kubepam_core::api::AccessPolicy>::all(admin.clone())
        .create(&PostParams::default(), &policy)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("scope.namespaces must hold namespace names")),
        "{refused:?}"
    );
    let request: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": "bad-namespace-request" },
        "spec": { "policy": "any", "namespace": "Prod", "reason": "INC-1" },
    }))
    .unwrap();
    let refused = Api::<ElevationRequest>::all(alice.clone())
        .create(&PostParams::default(), &request)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("namespace must be a namespace name")),
        "{refused:?}"
    );
}
