//! The request lifecycle on the real control plane, with the operator running
//! as its own least-privilege identity and people acting as themselves.

use std::time::Duration;

use chrono::SubsecRound;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kubepam_core::api::{ElevationRequest, Phase};
use kubepam_core::reconcile::LABEL_SETTLED;
use serde_json::json;

use crate::pam::{
    accepted, create_policy, create_request, delete_policy, deployment, events_for, grant_objects,
    may_delete_deployments, phase, request_id, review, standard_control, task_policy, wait_allowed,
    wait_may_delete_deployments, wait_phase,
};
use crate::support::{Identity, eventually, kubepam};

const SOON: Duration = Duration::from_secs(15);

/// The seed walkthrough: a Manual Task policy, alice requests, bob approves,
/// alice deletes a Deployment, the window ends and the right disappears.
#[tokio::test]
async fn seed_walkthrough_manual_task_policy() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("walkthrough").await;
    let policy = format!("{}-delete-deployments", ns.name);
    let policy_obj = create_policy(
        &admin,
        &policy,
        json!({
            "type": "Task",
            "task": { "verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"] },
            "scope": { "namespaces": [ns.name] },
            "approvalType": "Manual",
        }),
    )
    .await;
    assert_eq!(accepted(&policy_obj).0, "True");
    let policy_id = policy_obj.status.as_ref().and_then(|s| s.policy_id.clone());
    assert!(
        policy_id.is_some_and(|id| uuid::Uuid::parse_str(&id).is_ok()),
        "policyId is a UUID"
    );

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deployment("web"))
        .await
        .unwrap();
    let as_alice: Api<Deployment> = Api::namespaced(alice.clone(), &ns.name);
    let refused = as_alice.delete("web", &DeleteParams::default()).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{refused:?}"
    );

    let name = format!("{}-alice", ns.name);
    create_request(
        &alice,
        &name,
        json!({
            "policy": policy, "namespace": ns.name, "reason": "INC-1234: stuck rollout",
            "duration": "5s", "requester": "alice",
        }),
    )
    .await;
    let pending = wait_phase(&alice, &name, Phase::Pending, SOON).await;
    let status = pending.status.clone().unwrap();
    assert_eq!(status.approver_group.as_deref(), Some("pam-approvers"));
    assert!(status.request_id.is_some() && status.expires_at.is_some());
    // Pending grants nothing.
    assert!(!may_delete_deployments(&admin, "alice", Some(&ns.name)).await);

    review(&bob, &name, "bob", "Approve", "ok, go ahead")
        .await
        .unwrap();
    wait_phase(&alice, &name, Phase::Approved, SOON).await;
    // The decision is recorded before the rights exist, and the objects
    // made for them in a second write (the safety order).
    let requests = Api::<ElevationRequest>::all(alice.clone());
    let approved = eventually("the grant's objects are recorded", SOON, || async {
        let request = requests.get(&name).await.ok()?;
        let status = request.status.as_ref()?;
        (!status.rbac_objects.is_empty()).then_some(request)
    })
    .await;
    let status = approved.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Approved));
    assert_eq!(status.decided_by, vec!["bob".to_owned()]);
    let (decided, until) = (status.decided_at.unwrap(), status.granted_until.unwrap());
    assert_eq!(
        (until - decided).num_seconds(),
        5,
        "the window is the requested duration"
    );
    assert!(
        !status.rbac_objects.is_empty(),
        "the grant's objects are recorded"
    );

    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    // Only in the policy's namespace, and only the task.
    assert!(!may_delete_deployments(&admin, "alice", Some("default")).await);
    assert!(
        !crate::pam::allowed(
            &admin,
            "alice",
            "create",
            "apps",
            "deployments",
            Some(&ns.name)
        )
        .await
    );
    as_alice
        .delete("web", &DeleteParams::default())
        .await
        .expect("alice deletes with her grant");

    let expired = wait_phase(&alice, &name, Phase::Expired, Duration::from_secs(20)).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    deployments
        .create(&PostParams::default(), &deployment("web2"))
        .await
        .unwrap();
    let refused = as_alice.delete("web2", &DeleteParams::default()).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{refused:?}"
    );
    assert!(
        grant_objects(&admin, &request_id(&expired))
            .await
            .is_empty(),
        "no binding is left"
    );

    // The record tells the story: history and Events.
    let history: Vec<_> = expired
        .status
        .as_ref()
        .unwrap()
        .history
        .iter()
        .map(|h| (h.action.clone(), h.actor.clone()))
        .collect();
    let actions: Vec<&str> = history.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["Pending", "Approved", "Expired"], "{history:?}");
    assert_eq!(history[0].1, "alice");
    assert_eq!(history[1].1, "bob");
    let approval = &expired.status.as_ref().unwrap().history[1];
    assert_eq!(approval.comment.as_deref(), Some("bob: ok, go ahead"));
    // Alice's delete went through the guard and is on the record.
    let status = expired.status.as_ref().unwrap();
    assert_eq!(status.execution_count, 1, "{:?}", status.last_executions);
    let used = &status.last_executions[0];
    assert_eq!(
        (
            used.verb.as_str(),
            used.resource.as_str(),
            used.name.as_deref(),
            used.user.as_str()
        ),
        ("delete", "deployments", Some("web"), "alice")
    );
    let events = crate::support::eventually("four events", SOON, || async {
        let events = events_for(&admin, &name).await;
        (events.len() >= 4).then_some(events)
    })
    .await;
    let reasons: Vec<_> = events.iter().filter_map(|e| e.action.clone()).collect();
    assert_eq!(reasons, ["Pending", "Approved", "Execute", "Expired"]);
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

#[tokio::test]
async fn one_deny_denies_and_grants_nothing() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let carol = cluster.client(Identity::Carol).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("deny").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;
    let name = format!("{}-req", ns.name);
    create_request(&alice, &name, request_spec(&policy, &ns.name, "1h")).await;
    wait_phase(&alice, &name, Phase::Pending, SOON).await;
    review(&carol, &name, "carol", "Deny", "not during the freeze")
        .await
        .unwrap();
    let denied = wait_phase(&alice, &name, Phase::Denied, SOON).await;
    let status = denied.status.as_ref().unwrap();
    assert!(status.granted_until.is_none() && status.rbac_objects.is_empty());
    let last = status.history.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.comment.as_deref()),
        ("carol", Some("carol: not during the freeze"))
    );
    assert!(!may_delete_deployments(&admin, "alice", Some(&ns.name)).await);
    // Final: a later approval is refused at admission, and changes nothing.
    let bob = cluster.client(Identity::Bob).await;
    let late = review(&bob, &name, "bob", "Approve", "too late").await;
    match late {
        Err(kube::Error::Api(status)) => {
            assert!(status.message.contains("Denied"), "{}", status.message);
        }
        other => panic!("a review of a final request must be refused: {other:?}"),
    }
    let still = Api::<ElevationRequest>::all(alice.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(phase(&still), Some(Phase::Denied));
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

#[tokio::test]
async fn revoke_ends_an_active_grant_early() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let carol = cluster.client(Identity::Carol).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("revoke").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;
    let name = format!("{}-req", ns.name);
    create_request(&alice, &name, request_spec(&policy, &ns.name, "1h")).await;
    wait_phase(&alice, &name, Phase::Pending, SOON).await;
    review(&bob, &name, "bob", "Approve", "ok").await.unwrap();
    let approved = wait_phase(&alice, &name, Phase::Approved, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;

    review(&carol, &name, "carol", "Revoke", "done with it")
        .await
        .unwrap();
    let revoked = wait_phase(&alice, &name, Phase::Revoked, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    assert!(
        grant_objects(&admin, &request_id(&approved))
            .await
            .is_empty()
    );
    assert_eq!(
        revoked
            .status
            .as_ref()
            .unwrap()
            .history
            .last()
            .unwrap()
            .actor,
        "carol"
    );
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

#[tokio::test]
async fn auto_policy_approves_at_once() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("auto").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let name = format!("{}-req", ns.name);
    create_request(&alice, &name, request_spec(&policy, &ns.name, "1h")).await;
    let approved = wait_phase(&alice, &name, Phase::Approved, SOON).await;
    assert_eq!(
        approved.status.as_ref().unwrap().decided_by,
        vec!["kubepam".to_owned()]
    );
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    // Deleting the request takes the grant with it (finalizer, no GC here).
    Api::<ElevationRequest>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    crate::support::eventually("the request is gone", SOON, || async {
        Api::<ElevationRequest>::all(admin.clone())
            .get_opt(&name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        grant_objects(&admin, &request_id(&approved))
            .await
            .is_empty()
    );
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

/// A grant lasts its whole duration from the instant it was granted, to the
/// millisecond: a 3 s grant asked for at T is in force at every look before
/// T + 3 s, and its record says exactly 3 s from its decision.
#[tokio::test]
async fn a_grant_lasts_its_whole_duration_from_the_instant_it_was_granted() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("window").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let name = format!("{}-req", ns.name);
    let asked = chrono::Utc::now();
    create_request(&alice, &name, request_spec(&policy, &ns.name, "3s")).await;
    let approved = wait_phase(&alice, &name, Phase::Approved, SOON).await;
    let status = approved.status.unwrap();
    let (decided, until) = (status.decided_at.unwrap(), status.granted_until.unwrap());
    assert!(
        decided >= asked.trunc_subsecs(3),
        "decided at {decided}, before the request was made at {asked}"
    );
    assert_eq!(until - decided, chrono::TimeDelta::seconds(3));
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    loop {
        let allowed = may_delete_deployments(&admin, "alice", Some(&ns.name)).await;
        let answered = chrono::Utc::now();
        if !allowed {
            assert!(
                answered >= until,
                "the grant ended before grantedUntil {until} (refused at {answered})"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        wait_phase(&alice, &name, Phase::Expired, SOON)
            .await
            .status
            .unwrap()
            .granted_until,
        Some(until)
    );
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

/// An ended request that holds nothing is labelled settled and leaves kubepam's
/// watch; nobody may settle one that can still change, and a settled request
/// is deleted without waiting for kubepam.
#[tokio::test]
async fn an_ended_request_is_settled_and_a_live_one_cannot_be() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("settle").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let (live, short) = (format!("{}-live", ns.name), format!("{}-short", ns.name));
    create_request(&alice, &live, request_spec(&policy, &ns.name, "1h")).await;
    create_request(&alice, &short, request_spec(&policy, &ns.name, "1s")).await;
    wait_phase(&alice, &live, Phase::Approved, SOON).await;

    let settle = json!({ "metadata": { "labels": { LABEL_SETTLED: "true" } } });
    for (who, what) in [
        (&alice, "its requester"),
        (&admin, "a cluster administrator"),
    ] {
        let result = Api::<ElevationRequest>::all(who.clone())
            .patch(&live, &PatchParams::default(), &Patch::Merge(&settle))
            .await;
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("has ended")),
            "{what} settling an Approved request: {result:?}"
        );
    }

    let ended = wait_phase(&alice, &short, Phase::Expired, SOON).await;
    let api = Api::<ElevationRequest>::all(admin.clone());
    let settled = crate::support::eventually(
        "the ended request is settled",
        Duration::from_secs(
            kubepam_core::reconcile::SETTLE_AFTER
                .num_seconds()
                .unsigned_abs(),
        ) + SOON,
        || async {
            let request = api.get(&short).await.ok()?;
            request
                .labels()
                .contains_key(LABEL_SETTLED)
                .then_some(request)
        },
    )
    .await;
    assert!(
        settled.finalizers().is_empty(),
        "{:?}",
        settled.finalizers()
    );
    // Only the audit trail moves on: its records were sealed onto the chain meanwhile.
    let without_trail = |r: &ElevationRequest| {
        let mut status = r.status.clone().unwrap();
        let trail = status.audit.take().unwrap();
        (status, trail)
    };
    let (settled_status, settled_trail) = without_trail(&settled);
    let (ended_status, ended_trail) = without_trail(&ended);
    assert_eq!(settled_status, ended_status, "settling changes no record");
    assert!(settled_trail.pending.is_empty(), "{settled_trail:?}");
    assert_eq!(settled_trail.recorded, ended_trail.recorded);
    assert!(
        grant_objects(&admin, &request_id(&settled))
            .await
            .is_empty()
    );
    // Out of kubepam's watch, deleted at once (no finalizer to wait for).
    api.delete(&short, &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt(&short).await.unwrap().is_none());
    assert!(
        !api.get(&live)
            .await
            .unwrap()
            .labels()
            .contains_key(LABEL_SETTLED),
        "a live request is never settled"
    );
    api.delete(&live, &DeleteParams::default()).await.unwrap();
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

/// Role and RoleGroup policies bind existing ClusterRoles (with explicit
/// rules: the built-in aggregated roles are empty without a controller manager).
#[tokio::test]
async fn role_and_role_group_policies_bind_cluster_roles() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let dave = cluster.client(Identity::Dave).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("roles").await;
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let scaler = format!("{}-scaler", ns.name);
    let secrets = format!("{}-secret-reader", ns.name);
    for (role, group, resource, verb) in [
        (&scaler, "apps", "deployments", "patch"),
        (&secrets, "", "secrets", "get"),
    ] {
        let cr: ClusterRole = serde_json::from_value(json!({
            "metadata": { "name": role },
            "rules": [{ "apiGroups": [group], "resources": [resource], "verbs": [verb] }]
        }))
        .unwrap();
        roles.create(&PostParams::default(), &cr).await.unwrap();
    }

    let role_policy = format!("{}-role", ns.name);
    create_policy(
        &admin,
        &role_policy,
        json!({ "type": "Role", "role": scaler, "scope": { "namespaces": [ns.name] }, "approvalType": "Auto" }),
    )
    .await;
    let group_policy = format!("{}-group", ns.name);
    create_policy(
        &admin,
        &group_policy,
        // Secrets in every namespace are a key right: granted knowingly.
        json!({ "type": "RoleGroup", "roles": [scaler, secrets], "approvalType": "Auto", "allowPrivilegeEscalation": true }),
    )
    .await;

    let role_req = format!("{}-role-req", ns.name);
    create_request(&dave, &role_req, json!({
        "policy": role_policy, "namespace": ns.name, "reason": "scale for load test", "requester": "dave",
    }))
    .await;
    wait_phase(&dave, &role_req, Phase::Approved, SOON).await;
    wait_allowed(
        &admin,
        "dave",
        ("patch", "apps", "deployments"),
        Some(&ns.name),
        true,
        SOON,
    )
    .await;
    assert!(!crate::pam::allowed(&admin, "dave", "get", "", "secrets", Some(&ns.name)).await);

    // Cluster-wide RoleGroup: both roles, in every namespace.
    let group_req = format!("{}-group-req", ns.name);
    create_request(
        &dave,
        &group_req,
        json!({
            "policy": group_policy, "reason": "audit", "requester": "dave", "duration": "1h",
        }),
    )
    .await;
    let approved = wait_phase(&dave, &group_req, Phase::Approved, SOON).await;
    wait_allowed(
        &admin,
        "dave",
        ("get", "", "secrets"),
        Some("default"),
        true,
        SOON,
    )
    .await;
    wait_allowed(
        &admin,
        "dave",
        ("patch", "apps", "deployments"),
        Some("kube-system"),
        true,
        SOON,
    )
    .await;
    let objects = grant_objects(&admin, &request_id(&approved)).await;
    // A copy of each role as approved, and a cluster-wide binding to each copy.
    assert_eq!(objects.len(), 4, "{objects:?}");
    for binding in objects
        .iter()
        .filter_map(|o| o.strip_prefix("ClusterRoleBinding/"))
    {
        assert!(
            objects.contains(&format!("ClusterRole/{binding}")),
            "{objects:?}"
        );
    }

    // A policy naming a missing ClusterRole is refused and says which.
    let broken = format!("{}-broken", ns.name);
    let policy = create_policy(
        &admin,
        &broken,
        json!({ "type": "Role", "role": format!("{}-nope", ns.name), "approvalType": "Auto" }),
    )
    .await;
    assert_eq!(
        accepted(&policy),
        ("False".to_owned(), "RoleNotFound".to_owned())
    );
    assert_eq!(
        policy.status.as_ref().unwrap().missing_roles,
        vec![format!("{}-nope", ns.name)]
    );

    for name in [&role_req, &group_req] {
        Api::<ElevationRequest>::all(admin.clone())
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_allowed(
        &admin,
        "dave",
        ("get", "", "secrets"),
        Some("default"),
        false,
        SOON,
    )
    .await;
    for p in [&role_policy, &group_policy, &broken] {
        delete_policy(&admin, p).await;
    }
    for r in [&scaler, &secrets] {
        let _ = roles.delete(r, &DeleteParams::default()).await;
    }
    ns.delete().await;
}

#[tokio::test]
async fn deleting_the_policy_ends_an_active_grant() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("policy-gone").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let name = format!("{}-req", ns.name);
    create_request(&alice, &name, request_spec(&policy, &ns.name, "1h")).await;
    let approved = wait_phase(&alice, &name, Phase::Approved, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    delete_policy(&admin, &policy).await;
    let revoked = wait_phase(&alice, &name, Phase::Revoked, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    assert!(
        grant_objects(&admin, &request_id(&approved))
            .await
            .is_empty()
    );
    let last = revoked
        .status
        .as_ref()
        .unwrap()
        .history
        .last()
        .unwrap()
        .clone();
    assert_eq!(last.actor, "kubepam");
    ns.delete().await;
}

#[tokio::test]
async fn requests_that_break_their_policy_are_denied_with_the_reason() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("broken-req").await;
    let policy = format!("{}-policy", ns.name);
    let mut spec = task_policy(&ns.name, "Auto");
    spec["maxDuration"] = json!("1h");
    create_policy(&admin, &policy, spec).await;
    for (suffix, spec, reason) in [
        (
            "other-ns",
            request_spec(&policy, "default", "30m"),
            "NamespaceNotInScope",
        ),
        (
            "too-long",
            request_spec(&policy, &ns.name, "2h"),
            "DurationExceedsPolicy",
        ),
        (
            "no-policy",
            request_spec("no-such-policy", &ns.name, "30m"),
            "PolicyNotFound",
        ),
    ] {
        let name = format!("{}-{suffix}", ns.name);
        create_request(&alice, &name, spec).await;
        wait_phase(&alice, &name, Phase::Denied, SOON).await;
        crate::support::eventually(&format!("a {reason} event for {suffix}"), SOON, || async {
            events_for(&admin, &name)
                .await
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason))
                .then_some(())
        })
        .await;
    }
    // The schema refuses a request without a reason, with a message to act on.
    let refused = Api::<ElevationRequest>::all(alice.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
                "metadata": { "name": format!("{}-blank", ns.name) },
                "spec": { "policy": policy, "reason": "  ", "requester": "alice" }
            }))
            .unwrap(),
        )
        .await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("reason must say why"),
                "{}",
                status.message
            );
        }
        other => panic!("a blank reason must be refused: {other:?}"),
    }
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

#[tokio::test]
async fn spec_is_immutable_except_reviews() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("immutable").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;
    let name = format!("{}-req", ns.name);
    create_request(&alice, &name, request_spec(&policy, &ns.name, "1h")).await;
    let api = Api::<ElevationRequest>::all(alice.clone());
    for patch in [
        json!({ "spec": { "duration": "100h" } }),
        json!({ "spec": { "reason": "something else" } }),
        json!({ "spec": { "requester": "bob" } }),
    ] {
        let result = api
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await;
        match result {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{patch}");
                assert!(
                    status.message.contains("spec is immutable except reviews"),
                    "{}",
                    status.message
                );
            }
            other => panic!("{patch} must be refused: {other:?}"),
        }
    }
    delete_policy(&admin, &policy).await;
    ns.delete().await;
}

fn request_spec(policy: &str, namespace: &str, duration: &str) -> serde_json::Value {
    json!({
        "policy": policy, "namespace": namespace, "reason": "INC-42", "duration": duration,
        "requester": "alice",
    })
}
