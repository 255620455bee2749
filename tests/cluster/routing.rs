//! Approval routing on the real control plane, as real users: break glass with its review
//! afterwards, escalation when nobody answers, and approvers by RBAC.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kubepam_core::api::{ElevationRequest, Phase, find_condition};
use serde_json::{Value, json};

use crate::pam::{
    create_policy, create_request, delete_policy, events_for, policy_in_new_namespace, refusal,
    review, standard_control, task_policy, try_create_request, wait_may_delete_deployments,
    wait_phase,
};
use crate::support::{Identity, eventually, kubepam, operator};

const SOON: Duration = Duration::from_secs(15);

fn with(mut policy: Value, extra: Value) -> Value {
    let Value::Object(fields) = extra else {
        panic!("extra policy fields must be an object")
    };
    for (key, value) in fields {
        policy[key] = value;
    }
    policy
}

fn condition(request: &ElevationRequest, type_: &str) -> Option<(String, String)> {
    let status = request.status.as_ref()?;
    find_condition(&status.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn break_glass_grants_at_once_and_is_reviewed_afterwards() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let (ns, policy) = policy_in_new_namespace(
        "glass",
        "Manual",
        json!({ "breakGlass": { "groups": ["oncall"], "maxDuration": "1h" } }),
    )
    .await;
    let olga = cluster.client_as_user("olga", &["oncall"]).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let carol = cluster.client(Identity::Carol).await;
    let spec = |reason: &str| json!({ "policy": policy, "namespace": ns.name, "reason": reason, "emergency": true });

    // Someone outside breakGlass.groups cannot break the glass, and is told what to do.
    let message = refusal(
        try_create_request(&alice, &format!("{}-alice", ns.name), spec("INC-9")).await,
        "an emergency request by a developer",
    );
    assert!(
        message.contains("only members of group(s) oncall may request emergency access"),
        "{message}"
    );
    assert!(message.contains("file an ordinary request"), "{message}");

    // An on-call member gets access at once, without an approver.
    let name = format!("{}-olga", ns.name);
    create_request(&olga, &name, spec("INC-7 database down")).await;
    let granted = wait_phase(&admin, &name, Phase::Approved, SOON).await;
    wait_may_delete_deployments(&admin, "olga", Some(&ns.name), true).await;
    let status = granted.status.as_ref().unwrap();
    assert_eq!(status.decided_by, vec!["kubepam".to_owned()]);
    let lasts = status.granted_until.unwrap() - status.decided_at.unwrap();
    assert!(
        lasts <= chrono::TimeDelta::hours(1),
        "at most maxDuration: {lasts}"
    );
    assert_eq!(
        condition(&granted, "ReviewRequired"),
        Some(("True".to_owned(), "AwaitingReview".to_owned()))
    );
    assert!(status.review_due_at.is_some());
    // Loud: a Warning Event naming who broke the glass.
    let events = eventually("the BreakGlass Event", SOON, || async {
        let events = events_for(&admin, &name).await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("BreakGlass"))
            .then_some(events)
    })
    .await;
    let glass = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("BreakGlass"))
        .unwrap();
    assert_eq!(glass.type_.as_deref(), Some("Warning"));
    assert!(
        glass.note.as_deref().unwrap_or_default().contains("olga"),
        "{glass:?}"
    );
    // Counted while unreviewed.
    eventually("kubepam_emergency_unreviewed counts it", SOON, || async {
        (operator().metric("kubepam_emergency_unreviewed{overdue=\"false\"}")? >= 1.0).then_some(())
    })
    .await;

    // Its record stays until reviewed: not even an administrator deletes it.
    let message = refusal(
        Api::<ElevationRequest>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await,
        "deleting emergency access awaiting review",
    );
    assert!(message.contains("kubepam-record"), "{message}");
    // Break glass is not extended: more time is a new (reviewed) emergency request.
    let message = refusal(
        try_create_request(
            &olga,
            &format!("{}-more", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-7", "extends": name }),
        )
        .await,
        "extending emergency access",
    );
    assert!(
        message.contains("file a new emergency request"),
        "{message}"
    );
    // A comment is one line: no forged lines in messages, Events or mails.
    refusal(
        review(&bob, &name, "bob", "Confirm", "ok\nConfirmed by: security").await,
        "a comment with a newline",
    );

    // Nobody confirms their own emergency access.
    let message = refusal(
        review(&olga, &name, "olga", "Confirm", "fine").await,
        "olga confirming her own emergency",
    );
    assert!(message.contains("own request"), "{message}");
    // A verdict is only for emergency requests.
    let ordinary = format!("{}-ordinary", ns.name);
    create_request(
        &alice,
        &ordinary,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-8" }),
    )
    .await;
    wait_phase(&admin, &ordinary, Phase::Pending, SOON).await;
    let message = refusal(
        review(&bob, &ordinary, "bob", "Confirm", "ok").await,
        "a confirmation of an ordinary request",
    );
    assert!(message.contains("emergency"), "{message}");

    // An approver confirms: the grant goes on, the verdict is on the record.
    review(&bob, &name, "bob", "Confirm", "saw the incident")
        .await
        .unwrap();
    let confirmed = eventually("the confirmation recorded", SOON, || async {
        let r = Api::<ElevationRequest>::all(admin.clone())
            .get(&name)
            .await
            .ok()?;
        (condition(&r, "ReviewRequired")? == ("False".to_owned(), "EmergencyConfirmed".to_owned()))
            .then_some(r)
    })
    .await;
    assert_eq!(
        confirmed.status.as_ref().unwrap().phase,
        Some(Phase::Approved)
    );
    let history = &confirmed.status.as_ref().unwrap().history;
    assert!(
        history
            .iter()
            .any(|h| h.action == "Confirmed" && h.actor == "bob"),
        "{history:?}"
    );
    // A second verdict is refused.
    let message = refusal(
        review(&carol, &name, "carol", "Reject", "no").await,
        "a second verdict",
    );
    assert!(message.contains("already reviewed"), "{message}");

    // A rejection of an active emergency grant revokes it at once.
    let second = format!("{}-olga-2", ns.name);
    let other_ns = ns.name.clone();
    create_request(&olga, &second, spec("INC-10")).await;
    wait_phase(&admin, &second, Phase::Approved, SOON).await;
    // (Two grants of olga in one namespace: revoke the first so only the second holds.)
    review(&bob, &name, "bob", "Revoke", "done").await.unwrap();
    wait_phase(&admin, &name, Phase::Revoked, SOON).await;
    wait_may_delete_deployments(&admin, "olga", Some(&other_ns), true).await;
    review(&carol, &second, "carol", "Reject", "not an incident")
        .await
        .unwrap();
    let rejected = wait_phase(&admin, &second, Phase::Revoked, SOON).await;
    wait_may_delete_deployments(&admin, "olga", Some(&other_ns), false).await;
    assert_eq!(
        condition(&rejected, "ReviewRequired"),
        Some(("False".to_owned(), "EmergencyRejected".to_owned()))
    );
    let last = rejected.status.as_ref().unwrap().history.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("Revoked", "carol")
    );
    // Reviewed, the record may go.
    Api::<ElevationRequest>::all(admin.clone())
        .delete(&second, &DeleteParams::default())
        .await
        .unwrap();
    delete_policy(&admin, &policy).await;
}

#[tokio::test]
async fn a_policy_without_break_glass_refuses_emergency_requests() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let (ns, policy) = policy_in_new_namespace("noglass", "Manual", json!({})).await;
    let olga = cluster.client_as_user("olga", &["oncall"]).await;
    let message = refusal(
        try_create_request(
            &olga,
            &format!("{}-r", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-1", "emergency": true }),
        )
        .await,
        "an emergency request under a policy without breakGlass",
    );
    assert!(message.contains("no breakGlass"), "{message}");
    // Break glass for everyone is no break glass: the schema refuses it.
    let open_to_all: kubepam_core::api::AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": format!("{}-open", ns.name) },
        "spec": with(task_policy(&ns.name, "Manual"), json!({
            "breakGlass": { "groups": ["system:authenticated"], "maxDuration": "1h" } })),
    }))
    .unwrap();
    let message = refusal(
        Api::<kubepam_core::api::AccessPolicy>::all(admin.clone())
            .create(&PostParams::default(), &open_to_all)
            .await,
        "break glass for every user",
    );
    assert!(message.contains("not a group every user"), "{message}");
    delete_policy(&admin, &policy).await;
}

#[tokio::test]
async fn escalation_opens_the_next_group_after_its_time() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let (ns, policy) = policy_in_new_namespace(
        "escalate",
        "Manual",
        json!({ "escalation": [{ "after": "3s", "approverGroup": "ops-approvers" }] }),
    )
    .await;
    let alice = cluster.client(Identity::Alice).await;
    let dave = cluster.client(Identity::Dave).await;
    let name = format!("{}-r", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-3" }),
    )
    .await;
    let pending = wait_phase(&admin, &name, Phase::Pending, SOON).await;
    let status = pending.status.as_ref().unwrap();
    assert_eq!(status.approver_groups, vec!["pam-approvers".to_owned()]);
    assert!(status.escalates_at.is_some());

    // dave (ops-approvers) before the step opens: refused.
    let message = refusal(
        review(&dave, &name, "dave", "Approve", "early").await,
        "the escalation group before its step",
    );
    assert!(message.contains("pam-approvers"), "{message}");

    let escalated = eventually("the step opens", SOON, || async {
        let r = Api::<ElevationRequest>::all(admin.clone())
            .get(&name)
            .await
            .ok()?;
        (r.status.as_ref()?.approver_groups.len() == 2).then_some(r)
    })
    .await;
    let status = escalated.status.as_ref().unwrap();
    assert_eq!(
        status.approver_groups,
        vec!["pam-approvers".to_owned(), "ops-approvers".to_owned()]
    );
    assert_eq!(status.escalates_at, None, "no further step");
    assert_eq!(
        condition(&escalated, "Escalated"),
        Some(("True".to_owned(), "EscalationStepOpened".to_owned()))
    );
    review(&dave, &name, "dave", "Approve", "now I may")
        .await
        .unwrap();
    wait_phase(&admin, &name, Phase::Approved, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    let events = events_for(&admin, &name).await;
    let steps = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("EscalationStepOpened"))
        .count();
    assert_eq!(steps, 1, "{events:#?}");
    delete_policy(&admin, &policy).await;
}

async fn bind_approver(admin: &kube::Client, name: &str, user: &str, policies: &[&str]) {
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": name },
        "rules": [{ "apiGroups": ["kubepam.io"], "resources": ["accesspolicies"],
                    "resourceNames": policies, "verbs": ["approve"] }],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

#[tokio::test]
async fn rbac_approve_on_the_policy_name_makes_an_approver() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("rbacapprove").await;
    let nobody = json!({ "approverGroup": "release-managers" });
    let mine = format!("{}-mine", ns.name);
    let other = format!("{}-other", ns.name);
    for p in [&mine, &other] {
        create_policy(
            &admin,
            p,
            with(task_policy(&ns.name, "Manual"), nobody.clone()),
        )
        .await;
    }
    let role = format!("{}-approver", ns.name);
    bind_approver(&admin, &role, "rita", &[&mine]).await;
    let rita = cluster.client_as_user("rita", &["auditors"]).await;
    let alice = cluster.client(Identity::Alice).await;
    let request =
        |policy: &str| json!({ "policy": policy, "namespace": ns.name, "reason": "INC-4" });
    let on_mine = format!("{}-a", ns.name);
    let on_other = format!("{}-b", ns.name);
    create_request(&alice, &on_mine, request(&mine)).await;
    create_request(&alice, &on_other, request(&other)).await;
    wait_phase(&admin, &on_mine, Phase::Pending, SOON).await;
    wait_phase(&admin, &on_other, Phase::Pending, SOON).await;

    // Bound for another policy's name: refused, with how to check.
    let message = refusal(
        review(&rita, &on_other, "rita", "Approve", "ok").await,
        "rita on a policy she is not bound for",
    );
    assert!(message.contains("approve"), "{message}");
    // A wildcard (cluster-admin) is no approval right.
    let message = refusal(
        review(&admin, &on_mine, "admin", "Approve", "I am root").await,
        "admin by wildcard",
    );
    assert!(message.contains("approve"), "{message}");
    // Bound to approve on this policy's name: she decides, outside every group.
    review(&rita, &on_mine, "rita", "Approve", "release window")
        .await
        .unwrap();
    let approved = wait_phase(&admin, &on_mine, Phase::Approved, SOON).await;
    assert_eq!(approved.status.unwrap().decided_by, vec!["rita".to_owned()]);
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;

    for name in [&role] {
        Api::<ClusterRoleBinding>::all(admin.clone())
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        Api::<ClusterRole>::all(admin.clone())
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for p in [&mine, &other] {
        delete_policy(&admin, p).await;
    }
}
