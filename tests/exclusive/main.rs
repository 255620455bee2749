//! Tests that change cluster-wide state (the control, the policy cap, the
//! operator process itself), so they run one at a time against their own
//! control plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test
#![allow(clippy::too_many_lines)] // a scenario reads best as one story

use kubepam_testkit::cluster as support;
use kubepam_testkit::pam;

use chrono::SubsecRound;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingWebhookConfiguration,
};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use kubepam_core::api::{AccessPolicy, ElevationRequest, Phase, PrivilegedAccessControl};
use serde_json::json;
use tokio::sync::MutexGuard;

use pam::{
    accepted, apply_control, create_policy, create_request, grant_objects, request_id,
    standard_control, task_policy, wait_may_delete_deployments, wait_phase, wait_policy_judged,
};
use support::{Identity, OperatorProcess, TestCluster, eventually};

const SOON: Duration = Duration::from_secs(15);

async fn exclusive() -> (
    MutexGuard<'static, Option<OperatorProcess>>,
    &'static TestCluster,
) {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    remove_all_policies(&admin).await;
    standard_control(&admin).await;
    (guard, cluster)
}

async fn remove_all_policies(admin: &Client) {
    let api = Api::<AccessPolicy>::all(admin.clone());
    for policy in api.list(&ListParams::default()).await.unwrap() {
        let _ = api
            .delete(&policy.name_any(), &DeleteParams::default())
            .await;
    }
    eventually("no policy left", SOON, || async {
        api.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

fn request_spec(policy: &str, namespace: &str, duration: &str) -> serde_json::Value {
    json!({
        "policy": policy, "namespace": namespace, "reason": "INC-7", "duration": duration,
        "requester": "alice",
    })
}

/// The 31st policy is refused at admission with the limit and the count;
/// if admission is bypassed (or two creates race past it), the controller is
/// the final word: only the 30 oldest, by creation time then name, are
/// accepted, and requests against the others are denied.
#[tokio::test]
async fn at_most_thirty_policies_are_accepted() {
    let (_guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let ns = cluster.namespace("cap").await;
    let policies = Api::<AccessPolicy>::all(admin.clone());
    let policy_object = |name: &str| -> AccessPolicy {
        serde_json::from_value(json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
            "metadata": { "name": name }, "spec": task_policy(&ns.name, "Auto"),
        }))
        .unwrap()
    };

    for i in 0..30 {
        let policy = create_policy(
            &admin,
            &format!("cap-{i:02}"),
            task_policy(&ns.name, "Auto"),
        )
        .await;
        assert_eq!(accepted(&policy).0, "True", "policy {i}");
    }
    let refused = policies
        .create(&PostParams::default(), &policy_object("cap-30"))
        .await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert!(
                status.message.contains("at most 30") && status.message.contains("30 exist"),
                "{}",
                status.message
            );
        }
        other => panic!("the 31st policy must be refused: {other:?}"),
    }

    // Bypass admission (as if the webhook were down or raced): the
    // controller still refuses the 31st. Only kubepam's own identity may
    // remove its webhooks (the API server's static admission policy).
    Api::<ValidatingWebhookConfiguration>::all(cluster.client(Identity::Operator).await)
        .delete("kubepam", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the 31st gets past admission", SOON, || async {
        match policies
            .create(&PostParams::default(), &policy_object("cap-30"))
            .await
        {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
            Err(_) => None,
        }
    })
    .await;
    let refused = wait_policy_judged(&admin, "cap-30").await;
    assert_eq!(
        accepted(&refused),
        ("False".to_owned(), "PolicyLimitExceeded".to_owned())
    );
    create_request(
        &alice,
        "cap-req",
        json!({ "policy": "cap-30", "namespace": ns.name, "reason": "INC-7" }),
    )
    .await;
    let denied = wait_phase(&alice, "cap-req", Phase::Denied, SOON).await;
    let last = denied
        .status
        .as_ref()
        .unwrap()
        .history
        .last()
        .unwrap()
        .clone();
    assert!(
        last.comment
            .as_deref()
            .unwrap_or_default()
            .contains("at most 30"),
        "{last:?}"
    );
    let control = eventually("control counts", SOON, || async {
        let c = Api::<PrivilegedAccessControl>::all(admin.clone())
            .get("default")
            .await
            .ok()?;
        let s = c.status.clone()?;
        (s.accepted_policies == 30 && s.refused_policies == 1).then_some(s)
    })
    .await;
    assert_eq!(control.policy_limit, 30);
    // kubepam puts its webhook back by itself.
    eventually(
        "the webhook is registered again",
        Duration::from_secs(30),
        || async {
            Api::<ValidatingWebhookConfiguration>::all(admin.clone())
                .get_opt("kubepam")
                .await
                .ok()?
                .map(|_| ())
        },
    )
    .await;

    // Deleting one accepted policy lets the refused one in.
    policies
        .delete("cap-00", &DeleteParams::default())
        .await
        .unwrap();
    eventually("cap-30 accepted once a slot frees", SOON, || async {
        let p = policies.get("cap-30").await.ok()?;
        (accepted(&p).0 == "True").then_some(())
    })
    .await;
    let _ = Api::<ElevationRequest>::all(admin.clone())
        .delete("cap-req", &DeleteParams::default())
        .await;

    // A race: 31 created at once. Admission may let a few too many through;
    // never more than 30 are accepted, and the refused are the youngest.
    remove_all_policies(&admin).await;
    let concurrent_creates = (0..31).map(|i| {
        let policies = policies.clone();
        let object = policy_object(&format!("race-{i:02}"));
        async move { policies.create(&PostParams::default(), &object).await.ok() }
    });
    let created: Vec<AccessPolicy> = join_all(concurrent_creates)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(created.len() >= 30, "at least 30 fit: {}", created.len());
    for policy in &created {
        wait_policy_judged(&admin, &policy.name_any()).await;
    }
    let expected_refused = created.len() - 30;
    let refused = eventually("30 accepted, the rest refused", SOON, || async {
        let all = policies.list(&ListParams::default()).await.ok()?;
        let ok = all.items.iter().filter(|p| accepted(p).0 == "True").count();
        let refused: Vec<_> = all
            .items
            .iter()
            .filter(|p| accepted(p) == ("False".to_owned(), "PolicyLimitExceeded".to_owned()))
            .cloned()
            .collect();
        (ok == 30 && refused.len() == expected_refused).then_some(refused)
    })
    .await;
    let mut by_age = created.clone();
    by_age.sort_by_key(|p| (p.creation_timestamp().map(|t| t.0), p.name_any()));
    let youngest: Vec<String> = by_age[30..].iter().map(ResourceExt::name_any).collect();
    let mut refused: Vec<String> = refused.iter().map(ResourceExt::name_any).collect();
    refused.sort();
    let mut youngest = youngest;
    youngest.sort();
    assert_eq!(refused, youngest);
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// `enabled: false` (or no control at all) makes no new grant and says why;
/// a grant in force runs on; enabling again lets waiting requests through.
#[tokio::test]
async fn disabled_or_missing_control_makes_no_new_grant() {
    let (_guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let ns = cluster.namespace("disabled").await;
    create_policy(&admin, "auto-delete", task_policy(&ns.name, "Auto")).await;
    create_request(
        &alice,
        "before-disable",
        request_spec("auto-delete", &ns.name, "1h"),
    )
    .await;
    wait_phase(&alice, "before-disable", Phase::Approved, SOON).await;

    apply_control(
        &admin,
        json!({ "enabled": false, "defaultApproverGroup": "pam-approvers" }),
    )
    .await;
    eventually("control reports Disabled", SOON, || async {
        let c = Api::<PrivilegedAccessControl>::all(admin.clone())
            .get("default")
            .await
            .ok()?;
        let ready = c
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "False" && ready.reason == "Disabled").then_some(())
    })
    .await;
    create_request(
        &alice,
        "while-disabled",
        request_spec("auto-delete", &ns.name, "1h"),
    )
    .await;
    let api = Api::<ElevationRequest>::all(alice.clone());
    let waiting = eventually("the request says why it waits", SOON, || async {
        let r = api.get("while-disabled").await.ok()?;
        let reasons: Vec<_> = r
            .status
            .as_ref()?
            .conditions
            .iter()
            .map(|c| c.reason.clone())
            .collect();
        reasons.iter().any(|r| r == "ControlDisabled").then_some(r)
    })
    .await;
    assert_eq!(pam::phase(&waiting), Some(Phase::Pending));
    // The grant made before still holds.
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    let before = api.get("before-disable").await.unwrap();
    assert_eq!(pam::phase(&before), Some(Phase::Approved));

    // No control object at all: same.
    Api::<PrivilegedAccessControl>::all(admin.clone())
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    create_request(
        &alice,
        "no-control",
        request_spec("auto-delete", &ns.name, "1h"),
    )
    .await;
    eventually("ControlMissing is reported", SOON, || async {
        let r = api.get("no-control").await.ok()?;
        let reasons: Vec<_> = r
            .status
            .as_ref()?
            .conditions
            .iter()
            .map(|c| c.reason.clone())
            .collect();
        reasons.iter().any(|r| r == "ControlMissing").then_some(())
    })
    .await;

    standard_control(&admin).await;
    wait_phase(&alice, "while-disabled", Phase::Approved, SOON).await;
    wait_phase(&alice, "no-control", Phase::Approved, SOON).await;
    for name in ["before-disable", "while-disabled", "no-control"] {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// A request nobody decides expires after the control's requestTTL.
#[tokio::test]
async fn undecided_request_expires_after_the_ttl() {
    let (_guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    apply_control(
        &admin,
        json!({ "enabled": true, "defaultApproverGroup": "pam-approvers", "requestTTL": "3s" }),
    )
    .await;
    let ns = cluster.namespace("ttl").await;
    create_policy(&admin, "manual-delete", task_policy(&ns.name, "Manual")).await;
    create_request(
        &alice,
        "ttl-req",
        request_spec("manual-delete", &ns.name, "1h"),
    )
    .await;
    let pending = wait_phase(&alice, "ttl-req", Phase::Pending, SOON).await;
    let status = pending.status.clone().unwrap();
    let ttl = status.expires_at.unwrap() - status.submitted_at.unwrap();
    assert_eq!(ttl.num_seconds(), 3);
    let expired = wait_phase(&alice, "ttl-req", Phase::Expired, SOON).await;
    let last = expired
        .status
        .as_ref()
        .unwrap()
        .history
        .last()
        .unwrap()
        .clone();
    assert_eq!(last.actor, "kubepam");
    // Too late to approve now: admission refuses, and nothing changes.
    let bob = cluster.client(Identity::Bob).await;
    let late = pam::review(&bob, "ttl-req", "bob", "Approve", "sorry, was away").await;
    assert!(
        matches!(&late, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("Expired")),
        "{late:?}"
    );
    let still = Api::<ElevationRequest>::all(alice.clone())
        .get("ttl-req")
        .await
        .unwrap();
    assert_eq!(pam::phase(&still), Some(Phase::Expired));
    let _ = Api::<ElevationRequest>::all(admin.clone())
        .delete("ttl-req", &DeleteParams::default())
        .await;
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// Deadlines live in status, not in memory: an operator that was down when a
/// grant should have ended ends it as soon as it is back.
#[tokio::test]
async fn restarted_operator_catches_up_on_missed_deadlines() {
    let (mut guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    apply_control(
        &admin,
        json!({ "enabled": true, "defaultApproverGroup": "pam-approvers", "requestTTL": "4s" }),
    )
    .await;
    let ns = cluster.namespace("restart").await;
    create_policy(&admin, "auto-delete", task_policy(&ns.name, "Auto")).await;
    create_policy(&admin, "manual-delete", task_policy(&ns.name, "Manual")).await;
    create_request(
        &alice,
        "short-grant",
        request_spec("auto-delete", &ns.name, "3s"),
    )
    .await;
    let approved = wait_phase(&alice, "short-grant", Phase::Approved, SOON).await;
    create_request(
        &alice,
        "never-decided",
        request_spec("manual-delete", &ns.name, "1h"),
    )
    .await;
    wait_phase(&alice, "never-decided", Phase::Pending, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;

    let ca_bundle = |admin: Client| async move {
        Api::<ValidatingWebhookConfiguration>::all(admin)
            .get("kubepam")
            .await
            .ok()
            .and_then(|c| c.webhooks?.first()?.client_config.ca_bundle.clone())
    };
    let ca_before = ca_bundle(admin.clone())
        .await
        .expect("a registered caBundle");
    // The operator crashes; its container restarts in the same pod (same
    // identity, so it takes its Lease back at once).
    let crashed = guard.take().unwrap();
    let instance = crashed.instance.clone();
    crashed.kill();
    let until = approved.status.as_ref().unwrap().granted_until.unwrap();
    // Stay down well past both deadlines: nobody is there to take the right back.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(chrono::Utc::now() > until + chrono::TimeDelta::seconds(2));
    assert!(
        pam::may_delete_deployments(&admin, "alice", Some(&ns.name)).await,
        "without an operator the binding stays (this is what the restart must repair)"
    );

    let restarted = Instant::now();
    *guard = Some(cluster.spawn_operator_with(&support::OperatorSpec {
        instance: Some(instance),
        ..Default::default()
    }));
    wait_phase(&alice, "short-grant", Phase::Expired, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    let caught_up = restarted.elapsed();
    wait_phase(&alice, "never-decided", Phase::Expired, SOON).await;
    assert!(
        grant_objects(&admin, &request_id(&approved))
            .await
            .is_empty()
    );
    println!("restart catch-up: grant ended {caught_up:?} after the operator started");
    // The certificate is kept in a Secret: a restarted (or second) replica
    // serves the same one, and the caBundle does not change.
    assert_eq!(ca_bundle(admin.clone()).await, Some(ca_before));

    let api = Api::<ElevationRequest>::all(admin.clone());
    for name in ["short-grant", "never-decided"] {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// A booked window is a timestamp in status, not a timer in memory: an operator restarted
/// between the approval and the start still opens the grant on time, and not before.
#[tokio::test]
async fn a_booked_window_opens_on_time_across_an_operator_restart() {
    let (mut guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let ns = cluster.namespace("booked-restart").await;
    create_policy(&admin, "auto-delete", task_policy(&ns.name, "Auto")).await;
    let start = (chrono::Utc::now() + chrono::TimeDelta::seconds(10)).trunc_subsecs(0);
    let mut spec = request_spec("auto-delete", &ns.name, "5s");
    spec["startAt"] = json!(start.to_rfc3339());
    create_request(&alice, "booked", spec).await;
    wait_phase(&alice, "booked", Phase::Approved, SOON).await;
    assert!(!pam::may_delete_deployments(&admin, "alice", Some(&ns.name)).await);

    let crashed = guard.take().unwrap();
    let instance = crashed.instance.clone();
    crashed.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    *guard = Some(cluster.spawn_operator_with(&support::OperatorSpec {
        instance: Some(instance),
        ..Default::default()
    }));
    assert!(
        chrono::Utc::now() < start,
        "the restart must come before the window opens"
    );
    let opened = loop {
        let asked = chrono::Utc::now();
        if pam::may_delete_deployments(&admin, "alice", Some(&ns.name)).await {
            assert!(
                asked >= start,
                "allowed at {asked}, before the start {start}"
            );
            break asked;
        }
        assert!(
            asked < start + chrono::TimeDelta::seconds(2),
            "the window opened at {start}, and at {asked} access is still refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "booked window opened {} ms after its start, across a restart",
        (opened - start).num_milliseconds()
    );
    wait_phase(&alice, "booked", Phase::Expired, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    let _ = Api::<ElevationRequest>::all(admin.clone())
        .delete("booked", &DeleteParams::default())
        .await;
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// The control's per-person cap on Pending requests holds across policies, and says the
/// count and the limit.
#[tokio::test]
async fn the_controls_pending_quota_refuses_one_request_too_many() {
    let (_guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    apply_control(
        &admin,
        json!({ "enabled": true, "defaultApproverGroup": "pam-approvers",
                "maxPendingPerRequester": 2 }),
    )
    .await;
    let ns = cluster.namespace("pending-quota").await;
    create_policy(&admin, "manual-a", task_policy(&ns.name, "Manual")).await;
    create_policy(&admin, "manual-b", task_policy(&ns.name, "Manual")).await;
    create_request(&alice, "quota-1", request_spec("manual-a", &ns.name, "1h")).await;
    create_request(&alice, "quota-2", request_spec("manual-b", &ns.name, "1h")).await;
    wait_phase(&alice, "quota-2", Phase::Pending, SOON).await;
    let third: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": "quota-3" },
        "spec": request_spec("manual-a", &ns.name, "1h"),
    }))
    .unwrap();
    let result = Api::<ElevationRequest>::all(alice.clone())
        .create(&PostParams::default(), &third)
        .await;
    assert!(
        matches!(&result, Err(kube::Error::Api(s)) if s.code == 403
            && s.message.contains("2 Pending request(s)") && s.message.contains("allows 2")),
        "a third Pending request must be refused: {result:?}"
    );
    for name in ["quota-1", "quota-2"] {
        let _ = Api::<ElevationRequest>::all(admin.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
    standard_control(&admin).await;
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// The identity rules also live in the API server (ValidatingAdmissionPolicy):
/// with kubepam down and its webhooks removed, nobody can forge a requester
/// or someone else's review, the requester cannot approve, and nobody but
/// kubepam writes status. A request that slipped in without a requester is
/// denied once kubepam is back (it fails closed).
#[tokio::test]
async fn identity_rules_hold_without_the_webhooks() {
    let (mut guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let dave = cluster.client(Identity::Dave).await;
    let ns = cluster.namespace("no-webhook").await;
    create_policy(&admin, "manual-delete", task_policy(&ns.name, "Manual")).await;
    create_request(
        &alice,
        "vap-req",
        json!({ "policy": "manual-delete", "namespace": ns.name, "reason": "INC-9" }),
    )
    .await;
    wait_phase(&alice, "vap-req", Phase::Pending, SOON).await;

    let stopped = guard.take().unwrap();
    let instance = stopped.instance.clone();
    stopped.kill();
    // Only kubepam's own identity may remove its webhook configurations (the
    // API server's static admission policy): as if its token had leaked.
    let as_kubepam = cluster.client(Identity::Operator).await;
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(as_kubepam.clone());
    for name in ["kubepam", "kubepam-guard"] {
        let _ = webhooks.delete(name, &DeleteParams::default()).await;
    }
    let _ = Api::<MutatingWebhookConfiguration>::all(as_kubepam.clone())
        .delete("kubepam", &DeleteParams::default())
        .await;
    let requests = Api::<ElevationRequest>::all(alice.clone());
    // Admission plugins see the deletion within moments.
    let forged: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": "vap-forged" },
        "spec": { "policy": "manual-delete", "namespace": ns.name, "reason": "x", "requester": "dave" },
    }))
    .unwrap();
    let message = eventually("the policy refuses a forged requester", SOON, || async {
        match requests.create(&PostParams::default(), &forged).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("someone else") => {
                Some(s.message)
            }
            _ => None,
        }
    })
    .await;
    assert!(message.contains("kubepam-identity"), "{message}");

    for (who, key, what) in [
        (&alice, "alice", "the requester approving"),
        (&dave, "dave", "someone outside the approver group"),
        (&bob, "carol", "bob writing carol's review"),
        (&admin, "admin", "a cluster administrator"),
    ] {
        let result = pam::review(who, "vap-req", key, "Approve", "x").await;
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kubepam-identity")),
            "{what} must be refused by the policy: {result:?}"
        );
    }
    // Only the requester may release: not an approver, even with the webhooks gone.
    let result = pam::review(&bob, "vap-req", "bob", "Release", "x").await;
    assert!(
        matches!(&result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("only the requester may release")),
        "an approver's Release must be refused by the policy: {result:?}"
    );
    // Settled requests are out of kubepam's watch: a live one must never be
    // labelled so, not by its requester and not by an administrator.
    let settle = json!({ "metadata": { "labels": { "kubepam.io/settled": "true" } } });
    for (who, what) in [
        (&alice, "the requester"),
        (&admin, "a cluster administrator"),
    ] {
        let result = Api::<ElevationRequest>::all(who.clone())
            .patch(
                "vap-req",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&settle),
            )
            .await;
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kubepam.io/settled")),
            "{what} settling a Pending request must be refused by the policy: {result:?}"
        );
    }
    let forged_status = json!({ "status": { "phase": "Approved" } });
    let result = Api::<ElevationRequest>::all(admin.clone())
        .patch_status(
            "vap-req",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&forged_status),
        )
        .await;
    assert!(
        matches!(&result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("only kubepam writes it")),
        "even admin cannot write status: {result:?}"
    );
    // A request without a requester gets in (nothing sets it now) ...
    create_request(
        &alice,
        "vap-anonymous",
        json!({ "policy": "manual-delete", "namespace": ns.name, "reason": "x" }),
    )
    .await;
    // ... and the real approver's own review is let through.
    pam::review(&bob, "vap-req", "bob", "Approve", "ok")
        .await
        .unwrap();

    *guard = Some(cluster.spawn_operator_with(&support::OperatorSpec {
        instance: Some(instance),
        ..Default::default()
    }));
    wait_phase(&alice, "vap-req", Phase::Approved, SOON).await;
    let anonymous = wait_phase(&alice, "vap-anonymous", Phase::Denied, SOON).await;
    let last = anonymous.status.unwrap().history.last().cloned().unwrap();
    assert_eq!(last.actor, "kubepam");
    eventually("kubepam registers its webhooks again", SOON, || async {
        webhooks.get_opt("kubepam").await.ok()?.map(|_| ())
    })
    .await;
    for name in ["vap-req", "vap-anonymous"] {
        let _ = Api::<ElevationRequest>::all(admin.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// Approval routing with kubepam down and its webhooks removed: the admission policies alone
/// refuse a reviewer outside the groups and unbound by RBAC, a Confirm of an ordinary request,
/// and an emergency request by someone outside breakGlass.groups; they let an approver bound by
/// RBAC through.
#[tokio::test]
async fn routing_rules_hold_without_the_webhooks() {
    let (mut guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let dave = cluster.client(Identity::Dave).await;
    let ns = cluster.namespace("routing-vap").await;
    let mut spec = task_policy(&ns.name, "Manual");
    spec["approverGroup"] = json!("release-managers");
    spec["breakGlass"] = json!({ "groups": ["oncall"], "maxDuration": "1h" });
    create_policy(&admin, "routed", spec).await;
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": "routed-approver" },
        "rules": [{ "apiGroups": ["kubepam.io"], "resources": ["accesspolicies"],
                    "resourceNames": ["routed"], "verbs": ["approve"] }],
    }))
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "routed-approver" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "routed-approver" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "rita" }],
    }))
    .unwrap();
    let roles = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin.clone());
    let bindings = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone());
    roles.create(&PostParams::default(), &role).await.unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let rita = cluster.client_as_user("rita", &["auditors"]).await;
    create_request(
        &alice,
        "routed-req",
        json!({ "policy": "routed", "namespace": ns.name, "reason": "CHG-5" }),
    )
    .await;
    wait_phase(&alice, "routed-req", Phase::Pending, SOON).await;

    let stopped = guard.take().unwrap();
    let instance = stopped.instance.clone();
    stopped.kill();
    let as_kubepam = cluster.client(Identity::Operator).await;
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(as_kubepam.clone());
    for name in ["kubepam", "kubepam-guard"] {
        let _ = webhooks.delete(name, &DeleteParams::default()).await;
    }
    let _ = Api::<MutatingWebhookConfiguration>::all(as_kubepam.clone())
        .delete("kubepam", &DeleteParams::default())
        .await;
    // The policy alone: dave is in no approver group and unbound.
    let message = eventually("the policy alone refuses dave", SOON, || async {
        match pam::review(&dave, "routed-req", "dave", "Approve", "x").await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kubepam-identity") => {
                Some(s.message)
            }
            _ => None,
        }
    })
    .await;
    assert!(message.contains("release-managers"), "{message}");
    assert!(message.contains("accesspolicies/routed"), "{message}");
    // Nor does cluster-admin's wildcard make an approver.
    let result = pam::review(&admin, "routed-req", "admin", "Approve", "x").await;
    assert!(
        matches!(&result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kubepam-identity")),
        "a wildcard must not approve: {result:?}"
    );
    // A Confirm is for emergency grants only.
    let result = pam::review(&bob, "routed-req", "rita", "Confirm", "x").await;
    assert!(
        matches!(&result, Err(kube::Error::Api(s)) if s.code == 403),
        "{result:?}"
    );
    let result = pam::review(&rita, "routed-req", "rita", "Confirm", "x").await;
    assert!(
        matches!(&result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("not an emergency request")),
        "a Confirm of an ordinary request must be refused by the policy: {result:?}"
    );
    // Break glass is for breakGlass.groups only: the group it is broken as must be one's own.
    // (With the webhooks gone, nothing sets spec.requester: each names themselves.)
    let emergency = |name: &str, requester: &str, group: Option<&str>| {
        let mut spec = json!({ "policy": "routed", "namespace": ns.name, "reason": "INC-1",
                               "emergency": true, "requester": requester });
        if let Some(group) = group {
            spec["breakGlassGroup"] = json!(group);
        }
        serde_json::from_value::<ElevationRequest>(json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
            "metadata": { "name": name }, "spec": spec,
        }))
        .unwrap()
    };
    for (group, what) in [
        (None, "without a group"),
        (Some("oncall"), "as a group not hers"),
    ] {
        let result = Api::<ElevationRequest>::all(alice.clone())
            .create(
                &PostParams::default(),
                &emergency("routed-glass", "alice", group),
            )
            .await;
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kubepam-identity") && s.message.contains("breakGlassGroup")),
            "an emergency request by a developer {what} must be refused by the policy: {result:?}"
        );
    }
    let olga = cluster.client_as_user("olga", &["oncall"]).await;
    Api::<ElevationRequest>::all(olga.clone())
        .create(
            &PostParams::default(),
            &emergency("routed-olga", "olga", Some("oncall")),
        )
        .await
        .unwrap();
    // rita, bound to approve on this policy's name, is let through.
    pam::review(&rita, "routed-req", "rita", "Approve", "release window")
        .await
        .unwrap();

    *guard = Some(cluster.spawn_operator_with(&support::OperatorSpec {
        instance: Some(instance),
        ..Default::default()
    }));
    let approved = wait_phase(&alice, "routed-req", Phase::Approved, SOON).await;
    assert_eq!(approved.status.unwrap().decided_by, vec!["rita".to_owned()]);
    // The on-call member's emergency request, admitted by the policy alone, is granted.
    wait_phase(&admin, "routed-olga", Phase::Approved, SOON).await;
    // Reviewed, its record may go.
    pam::review(&rita, "routed-olga", "rita", "Confirm", "on call")
        .await
        .unwrap();
    eventually("the confirmation recorded", SOON, || async {
        let r = Api::<ElevationRequest>::all(admin.clone())
            .get("routed-olga")
            .await
            .ok()?;
        (!kubepam_core::lifecycle::review_pending(&r.status?)).then_some(())
    })
    .await;
    eventually("kubepam registers its webhooks again", SOON, || async {
        webhooks.get_opt("kubepam").await.ok()?.map(|_| ())
    })
    .await;
    for name in ["routed-req", "routed-olga"] {
        let _ = Api::<ElevationRequest>::all(admin.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
    let _ = bindings
        .delete("routed-approver", &DeleteParams::default())
        .await;
    let _ = roles
        .delete("routed-approver", &DeleteParams::default())
        .await;
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// An escalation step that falls while kubepam is down opens once it is back: not skipped,
/// and told once (one Event, one delivery to the new group).
#[tokio::test]
async fn an_escalation_step_opens_once_across_an_operator_restart() {
    let (mut guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let ns = cluster.namespace("escalate-restart").await;
    let hook =
        kubepam_testkit::receivers::HookReceiver::start(support::free_port(), Duration::ZERO).await;
    apply_control(
        &admin,
        json!({
            "enabled": true,
            "defaultApproverGroup": "pam-approvers",
            "notifications": {
                "sinks": [ { "name": "hook", "webhook": { "url": hook.url() } } ],
                "approverRoutes": [ { "group": "ops-approvers", "sink": "hook" } ],
            },
        }),
    )
    .await;
    let mut spec = task_policy(&ns.name, "Manual");
    spec["escalation"] = json!([{ "after": "6s", "approverGroup": "ops-approvers" }]);
    create_policy(&admin, "escalating", spec).await;
    create_request(
        &alice,
        "escalate-req",
        json!({ "policy": "escalating", "namespace": ns.name, "reason": "CHG-6" }),
    )
    .await;
    let pending = wait_phase(&alice, "escalate-req", Phase::Pending, SOON).await;
    let opens = pending.status.unwrap().escalates_at.unwrap();

    let crashed = guard.take().unwrap();
    let instance = crashed.instance.clone();
    crashed.kill();
    let wait = (opens - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_secs(2)).await;
    *guard = Some(cluster.spawn_operator_with(&support::OperatorSpec {
        instance: Some(instance),
        ..Default::default()
    }));
    let requests = Api::<ElevationRequest>::all(admin.clone());
    eventually("the step opened after the restart", SOON, || async {
        let r = requests.get("escalate-req").await.ok()?;
        (r.status?.approver_groups.len() == 2).then_some(())
    })
    .await;
    let told = || {
        hook.received()
            .into_iter()
            .filter(|h| {
                h.body["request"]["name"] == "escalate-req" && h.body["event"] == "Escalated"
            })
            .count()
    };
    eventually("ops-approvers told", SOON, || async {
        (told() > 0).then_some(())
    })
    .await;
    // Anything repeated would show by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(told(), 1, "told once");
    let events = pam::events_for(&admin, "escalate-req").await;
    let opened = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("EscalationStepOpened"))
        .count();
    assert_eq!(opened, 1, "{events:#?}");
    let _ = requests
        .delete("escalate-req", &DeleteParams::default())
        .await;
    remove_all_policies(&admin).await;
    standard_control(&admin).await;
    ns.delete().await;
}

/// Two replicas. The leader is killed (SIGKILL) while requests come and go;
/// the standby takes over within 15 s, every request is granted exactly once
/// and taken back, deadlines that fall after the takeover are met on time,
/// and those that fell while nobody led are met as soon as it leads.
#[tokio::test]
async fn the_standby_takes_over_when_the_leader_is_killed() {
    const REQUESTS: usize = 30;
    let (mut guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    // Two replicas behind one address, as behind a Service.
    guard.take().unwrap().terminate();
    let ports = [support::free_port(), support::free_port()];
    let url = format!(
        "https://127.0.0.1:{}",
        support::balancer(ports.to_vec()).await
    );
    let replica = |port: u16| support::OperatorSpec {
        webhook_port: Some(port),
        webhook_url: Some(url.clone()),
        ..Default::default()
    };
    let leader = cluster.spawn_operator_with(&replica(ports[0]));
    eventually(
        "the first replica leads",
        Duration::from_secs(30),
        || async { leader.is_leader().then_some(()) },
    )
    .await;
    leader.wait_registered(&admin).await;
    let standby = cluster.spawn_operator_with(&replica(ports[1]));
    eventually("the standby is ready", SOON, || async {
        (support::http_get(standby.metrics_port, "/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!standby.is_leader(), "only one replica leads");

    let ns = cluster.namespace("failover").await;
    create_policy(&admin, "failover-auto", task_policy(&ns.name, "Auto")).await;
    wait_policy_judged(&admin, "failover-auto").await;
    let names: Vec<String> = (0..REQUESTS).map(|i| format!("failover-{i}")).collect();
    let workload = {
        let (alice, names, namespace) = (alice.clone(), names.clone(), ns.name.clone());
        tokio::spawn(async move {
            for name in names {
                create_request(
                    &alice,
                    &name,
                    request_spec("failover-auto", &namespace, "6s"),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = chrono::Utc::now();
    let killed = Instant::now();
    leader.kill();
    eventually("the standby leads", Duration::from_secs(30), || async {
        standby.is_leader().then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    println!("failover: the standby led {takeover:?} after the leader was killed");
    assert!(
        takeover < Duration::from_secs(15),
        "takeover took {takeover:?}"
    );
    let leading_since = killed_at + chrono::TimeDelta::from_std(takeover).unwrap();
    workload.await.unwrap();

    let mut worst_late = chrono::TimeDelta::MIN;
    for name in &names {
        let request = wait_phase(&alice, name, Phase::Expired, Duration::from_secs(60)).await;
        let status = request.status.clone().unwrap();
        let actions: Vec<&str> = status.history.iter().map(|h| h.action.as_str()).collect();
        assert_eq!(
            actions.iter().filter(|a| **a == "Approved").count(),
            1,
            "{name} granted exactly once: {actions:?}"
        );
        let expired = status
            .history
            .iter()
            .find(|h| h.action == "Expired")
            .unwrap()
            .time;
        let until = status.granted_until.unwrap();
        // A deadline is due at its own time, or when the standby leads if
        // it fell while nobody did.
        let due = until.max(leading_since);
        let late = expired - due;
        worst_late = worst_late.max(late);
        assert!(
            late < chrono::TimeDelta::seconds(2),
            "{name}: expired at {expired}, due at {due} (granted until {until})"
        );
        assert!(
            grant_objects(&admin, &request_id(&request))
                .await
                .is_empty(),
            "{name} left RBAC objects behind"
        );
    }
    println!(
        "failover: {REQUESTS} requests granted once and ended, worst lateness {} ms",
        worst_late.num_milliseconds()
    );
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;

    // The balancer ends with this test: the next test starts its own replica.
    standby.terminate();
    let api = Api::<ElevationRequest>::all(admin.clone());
    for name in &names {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// SIGTERM: the operator finishes its work, exits 0 and gives its Lease up
/// (it holds nothing a successor must wait for); a successor then leads.
#[tokio::test]
async fn a_terminated_leader_gives_its_lease_up() {
    use k8s_openapi::api::coordination::v1::Lease;
    let (mut guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let leases = Api::<Lease>::namespaced(admin.clone(), "kubepam-system");
    let holder = |leases: Api<Lease>| async move {
        leases
            .get("kubepam-leader")
            .await
            .ok()
            .and_then(|lease| lease.spec?.holder_identity)
    };
    let leader = guard.take().unwrap();
    eventually("the replica leads", SOON, || async {
        leader.is_leader().then_some(())
    })
    .await;
    assert_eq!(holder(leases.clone()).await, Some(leader.instance.clone()));
    let successor = cluster.spawn_operator();
    eventually("the successor is ready", SOON, || async {
        (support::http_get(successor.metrics_port, "/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
    let stopped = Instant::now();
    let exit = leader.terminate();
    println!("graceful shutdown: exited in {:?}", stopped.elapsed());
    assert!(exit.success(), "kubepam exits 0 on SIGTERM: {exit:?}");
    let after_exit = holder(leases.clone()).await;
    assert!(
        after_exit.is_none() || after_exit == Some(successor.instance.clone()),
        "the Lease was given up, not left to expire: held by {after_exit:?}"
    );
    eventually("the successor leads", SOON, || async {
        successor.is_leader().then_some(())
    })
    .await;
    assert_eq!(holder(leases).await, Some(successor.instance.clone()));
    successor.wait_registered(&admin).await;
    *guard = Some(successor);
}

/// With `spec.removeForeignBindings`, a binding made by hand to a role
/// kubepam generated for a grant is removed, with an Event on it.
#[tokio::test]
async fn foreign_bindings_are_removed_when_the_control_says_so() {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let (_guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let ns = cluster.namespace("foreign").await;
    create_policy(&admin, "auto-delete", task_policy(&ns.name, "Auto")).await;
    create_request(
        &alice,
        "foreign-req",
        request_spec("auto-delete", &ns.name, "1h"),
    )
    .await;
    let approved = wait_phase(&alice, "foreign-req", Phase::Approved, SOON).await;
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &ns.name);
    let grant = bindings
        .list(
            &ListParams::default()
                .labels(&format!("kubepam.io/request-id={}", request_id(&approved))),
        )
        .await
        .unwrap()
        .items
        .pop()
        .expect("the grant's binding");
    apply_control(
        &admin,
        json!({
            "enabled": true,
            "defaultApproverGroup": "pam-approvers",
            "removeForeignBindings": true,
        }),
    )
    .await;
    let copy: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "standing-copy", "namespace": ns.name },
        "roleRef": grant.role_ref,
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave" }],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &copy)
        .await
        .unwrap();
    eventually("the foreign binding is removed", SOON, || async {
        bindings
            .get_opt("standing-copy")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    eventually("a ForeignBindingRemoved Event", SOON, || async {
        let events =
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), &ns.name)
                .list(&ListParams::default())
                .await
                .ok()?;
        events
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ForeignBindingRemoved")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("standing-copy")
            })
            .then_some(())
    })
    .await;
    // The grant itself is untouched.
    assert!(
        bindings
            .get_opt(&grant.metadata.name.unwrap())
            .await
            .unwrap()
            .is_some()
    );
    let _ = Api::<ElevationRequest>::all(admin.clone())
        .delete("foreign-req", &DeleteParams::default())
        .await;
    standard_control(&admin).await;
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// The guard's configuration edited around (an `objectSelector` that matches
/// nothing, a shorter timeout) or deleted is restored to exactly kubepam's,
/// within seconds, and said: an Event, the metric and `GuardIntact`.
#[tokio::test]
async fn the_guard_is_restored_exactly_and_loudly() {
    use k8s_openapi::api::apps::v1::Deployment;
    let (guard, cluster) = exclusive().await;
    let operator = guard.as_ref().unwrap();
    let admin = cluster.client(Identity::Admin).await;
    let ns = cluster.namespace("tamper").await;
    create_policy(&admin, "tamper-delete", task_policy(&ns.name, "Manual")).await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &pam::deployment("web"))
        .await
        .unwrap();
    let refused = || async {
        let result = deployments
            .delete(
                "web",
                &DeleteParams {
                    dry_run: true,
                    ..DeleteParams::default()
                },
            )
            .await;
        support::api_status(&result) == Some(403)
    };
    eventually("the guard refuses", SOON, || async {
        refused().await.then_some(())
    })
    .await;
    let original = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .get("kubepam-guard")
        .await
        .unwrap();
    // The API server's static policy refuses everyone but kubepam, cluster
    // administrators included, and no API call can remove that policy.
    let mut edited = original.clone();
    edited
        .webhooks
        .iter_mut()
        .flatten()
        .for_each(|h| h.timeout_seconds = Some(1));
    let refused_edit = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .replace("kubepam-guard", &PostParams::default(), &edited)
        .await;
    match refused_edit {
        Err(kube::Error::Api(s))
            if s.code == 403 && s.message.contains("only kubepam changes it") => {}
        other => panic!("an administrator's edit of the guard must be refused: {other:?}"),
    }
    for (kind, name) in [
        ("validatingadmissionpolicies", "kubepam-identity"),
        ("validatingadmissionpolicybindings", "kubepam-status"),
    ] {
        let output = cluster.kubectl(Identity::Admin, &["delete", kind, name, "--dry-run=server"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("cannot be deleted"),
            "{kind}/{name}: {stderr}"
        );
    }
    // With kubepam's own identity (a leaked token, or a cluster without the
    // static policy), edits get through, and kubepam puts its own back.
    let as_kubepam = cluster.client(Identity::Operator).await;
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(as_kubepam.clone());

    // Edited around: a selector that matches nothing, and a shorter timeout.
    let mut edited = original.clone();
    for hook in edited.webhooks.iter_mut().flatten() {
        hook.object_selector =
            serde_json::from_value(json!({ "matchLabels": { "nothing": "matches" } })).unwrap();
        hook.timeout_seconds = Some(1);
    }
    webhooks
        .replace("kubepam-guard", &PostParams::default(), &edited)
        .await
        .unwrap();
    eventually("the guard restored", SOON, || async {
        let live = webhooks.get("kubepam-guard").await.ok()?;
        (live.webhooks == original.webhooks).then_some(())
    })
    .await;
    assert!(refused().await);
    let series =
        "kubepam_guard_repairs_total{object=\"ValidatingWebhookConfiguration/kubepam-guard\"}";
    eventually("the repair counted", SOON, || async {
        (operator.metric(series)? >= 1.0).then_some(())
    })
    .await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), "default");
    eventually("the GuardTampered Event", SOON, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("GuardTampered")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("kubepam-guard was changed"))
            })
            .then_some(())
    })
    .await;
    let controls = Api::<PrivilegedAccessControl>::all(admin.clone());
    eventually(
        "GuardIntact says it was restored",
        Duration::from_secs(20),
        || async {
            let control = controls.get("default").await.ok()?;
            control
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "GuardIntact" && c.status == "True" && c.reason == "Restored")
        },
    )
    .await;

    // Deleted: registered again.
    webhooks
        .delete("kubepam-guard", &DeleteParams::default())
        .await
        .unwrap();
    let mutating = Api::<MutatingWebhookConfiguration>::all(as_kubepam.clone());
    mutating
        .delete("kubepam", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted configurations are back", SOON, || async {
        let guard = webhooks.get_opt("kubepam-guard").await.ok()??;
        mutating.get_opt("kubepam").await.ok()??;
        (guard.webhooks == original.webhooks).then_some(())
    })
    .await;
    assert!(refused().await);
    eventually("the deletion counted", SOON, || async {
        (operator.metric(series)? >= 2.0).then_some(())
    })
    .await;

    // An admission policy weakened: refused to an administrator by the
    // static policy; done with kubepam's own identity, put back as kubepam
    // ships it.
    let shipped = Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .get("kubepam-identity")
        .await
        .unwrap();
    let mut weakened = shipped.clone();
    if let Some(spec) = weakened.spec.as_mut() {
        spec.validations = Some(vec![
            serde_json::from_value(json!({ "expression": "true" })).unwrap(),
        ]);
    }
    let refused = Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .replace("kubepam-identity", &PostParams::default(), &weakened)
        .await;
    assert_eq!(support::api_status(&refused), Some(403), "{refused:?}");
    let vaps = Api::<ValidatingAdmissionPolicy>::all(as_kubepam.clone());
    vaps.replace("kubepam-identity", &PostParams::default(), &weakened)
        .await
        .unwrap();
    eventually("the admission policy restored", SOON, || async {
        let live = vaps.get("kubepam-identity").await.ok()?;
        (live.spec == shipped.spec).then_some(())
    })
    .await;
    let policy_series =
        "kubepam_guard_repairs_total{object=\"ValidatingAdmissionPolicy/kubepam-identity\"}";
    eventually("the policy's repair counted", SOON, || async {
        (operator.metric(policy_series)? >= 1.0).then_some(())
    })
    .await;
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// While the guard cannot be registered (here: kubepam lost its RBAC on
/// webhook configurations), a new Task policy is not reported `Accepted`,
/// and the control says why (`GuardReady=False`).
#[tokio::test]
async fn a_task_policy_is_accepted_only_once_the_guard_holds_it() {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let (_guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let roles = Api::<ClusterRole>::all(admin.clone());
    let mut role = roles.get("kubepam-operator").await.unwrap();
    let full = role.clone();
    role.rules = role.rules.map(|rules| {
        rules
            .into_iter()
            .filter(|r| {
                !r.resources
                    .iter()
                    .flatten()
                    .any(|res| res == "validatingwebhookconfigurations")
            })
            .collect()
    });
    roles
        .replace("kubepam-operator", &PostParams::default(), &role)
        .await
        .unwrap();
    let ns = cluster.namespace("unregistered").await;
    let policies = Api::<AccessPolicy>::all(admin.clone());
    let policy: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": "unregistered-delete" }, "spec": task_policy(&ns.name, "Manual"),
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let controls = Api::<PrivilegedAccessControl>::all(admin.clone());
    // Observe first, then give kubepam its rights back, then assert: a failed
    // step must not leave the operator crippled for the tests after this one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut ready = None;
    while ready.is_none() && tokio::time::Instant::now() < deadline {
        ready = controls.get("default").await.ok().and_then(|control| {
            control
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "GuardReady" && c.status == "False")
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let judged = policies.get("unregistered-delete").await.unwrap();
    let current = roles.get("kubepam-operator").await.unwrap();
    let mut restored = full.clone();
    restored.metadata.resource_version = current.metadata.resource_version;
    roles
        .replace("kubepam-operator", &PostParams::default(), &restored)
        .await
        .unwrap();
    let ready = ready.expect("GuardReady=False while the guard cannot be registered");
    assert_eq!(ready.reason, "RegistrationFailed");
    assert!(ready.message.contains("kubepam-guard"), "{}", ready.message);
    assert!(
        judged.status.as_ref().is_none_or(|s| !s
            .conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True")),
        "Accepted before the guard holds it: {:?}",
        judged.status
    );
    let judged = wait_policy_judged(&admin, "unregistered-delete").await;
    assert_eq!(accepted(&judged).0, "True");
    eventually("GuardReady=True", Duration::from_secs(20), || async {
        let control = controls.get("default").await.ok()?;
        control
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "GuardReady" && c.status == "True")
    })
    .await;
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// With every replica of kubepam down, the guard fails closed only where
/// policies reach: elsewhere, and for Kubernetes' own controllers, nothing
/// changes.
#[tokio::test]
async fn with_kubepam_down_only_what_policies_cover_is_refused() {
    use k8s_openapi::api::apps::v1::Deployment;
    let (mut guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let guarded = cluster.namespace("down-guarded").await;
    let elsewhere = cluster.namespace("down-elsewhere").await;
    create_policy(&admin, "down-delete", task_policy(&guarded.name, "Manual")).await;
    for ns in [&guarded.name, &elsewhere.name] {
        let deployments = Api::<Deployment>::namespaced(admin.clone(), ns);
        for name in ["a", "b"] {
            deployments
                .create(&PostParams::default(), &pam::deployment(name))
                .await
                .unwrap();
        }
    }
    let in_guarded = Api::<Deployment>::namespaced(admin.clone(), &guarded.name);
    eventually("the guard refuses", SOON, || async {
        let result = in_guarded
            .delete(
                "a",
                &DeleteParams {
                    dry_run: true,
                    ..DeleteParams::default()
                },
            )
            .await;
        (support::api_status(&result) == Some(403)).then_some(())
    })
    .await;
    let stopped = guard.take().unwrap();
    let instance = stopped.instance.clone();
    stopped.kill();

    Api::<Deployment>::namespaced(admin.clone(), &elsewhere.name)
        .delete("a", &DeleteParams::default())
        .await
        .expect("a namespace no policy names does not depend on kubepam");
    let refused = in_guarded.delete("a", &DeleteParams::default()).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 500 || s.code == 403),
        "a guarded task fails closed while kubepam is down: {refused:?}"
    );
    let gc = cluster
        .client_as_user(
            "system:serviceaccount:kube-system:generic-garbage-collector",
            &["system:serviceaccounts", "system:masters"],
        )
        .await;
    Api::<Deployment>::namespaced(gc, &guarded.name)
        .delete("b", &DeleteParams::default())
        .await
        .expect("the garbage collector never waits for kubepam");

    *guard = Some(cluster.spawn_operator_with(&support::OperatorSpec {
        instance: Some(instance),
        ..Default::default()
    }));
    guard.as_ref().unwrap().wait_registered(&admin).await;
    remove_all_policies(&admin).await;
    guarded.delete().await;
    elsewhere.delete().await;
}

/// A newline in a system account once broke the guard's CEL and left a Task
/// policy accepted but never enforced. Control characters are refused at the
/// schema; quotes, backslashes and non-ASCII letters are escaped.
#[tokio::test]
async fn system_accounts_never_break_the_guard() {
    use k8s_openapi::api::apps::v1::Deployment;
    let (_guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let controls = Api::<PrivilegedAccessControl>::all(admin.clone());
    for hostile in ["ci\nsystem:masters", "ci\ttab", " padded"] {
        let control = json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "PrivilegedAccessControl",
            "metadata": { "name": "default" },
            "spec": { "enabled": true, "defaultApproverGroup": "pam-approvers", "systemAccounts": [hostile] },
        });
        let result = controls
            .patch(
                "default",
                &kube::api::PatchParams::apply("test").force(),
                &kube::api::Patch::Apply(&control),
            )
            .await;
        match result {
            Err(kube::Error::Api(s)) if s.code == 422 => {
                assert!(s.message.contains("systemAccounts"), "{}", s.message);
            }
            other => panic!("system account {hostile:?} must be refused: {other:?}"),
        }
    }
    apply_control(
        &admin,
        json!({
            "enabled": true,
            "defaultApproverGroup": "pam-approvers",
            "systemAccounts": ["system:serviceaccount:ci:it's \"odd\" \\ é", "system:serviceaccount:ci:deployer"],
        }),
    )
    .await;
    let ns = cluster.namespace("odd-accounts").await;
    let policy = create_policy(&admin, "odd-delete", task_policy(&ns.name, "Manual")).await;
    assert_eq!(accepted(&policy).0, "True");
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &pam::deployment("web"))
        .await
        .unwrap();
    // Accepted means enforced: the very first delete is refused.
    let result = deployments.delete("web", &DeleteParams::default()).await;
    assert_eq!(support::api_status(&result), Some(403), "{result:?}");
    let control = eventually("GuardReady", Duration::from_secs(20), || async {
        let control = controls.get("default").await.ok()?;
        control
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "GuardReady")
    })
    .await;
    assert_eq!(
        (control.status.as_str(), control.reason.as_str()),
        ("True", "Registered")
    );
    standard_control(&admin).await;
    remove_all_policies(&admin).await;
    ns.delete().await;
}

/// What a grant's holder made in its scope that confers access (a service
/// account, a binding for it, a pod running as it) is recorded on the
/// request, reported when the grant ends, and removed with the control's
/// `removePersistence: true`; what others made, and ordinary objects, are
/// left alone.
#[tokio::test]
async fn what_a_grant_left_behind_is_reported_and_removed() {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
    let (_guard, cluster) = exclusive().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let ns = cluster.namespace("left").await;
    let role = format!("{}-maker", ns.name);
    let maker: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": role },
        "rules": [
            { "apiGroups": [""], "resources": ["serviceaccounts", "pods", "configmaps"], "verbs": ["get", "create"] },
            { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"] },
        ],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &maker)
        .await
        .unwrap();
    let policy = format!("{}-maker", ns.name);
    create_policy(
        &admin,
        &policy,
        json!({
            "type": "Role", "role": role, "approvalType": "Manual", "allowPersistence": true,
            "scope": { "namespaces": [ns.name] },
        }),
    )
    .await;
    let requests = Api::<ElevationRequest>::all(admin.clone());
    let mut left_by = Vec::new();
    for (round, remove) in [("kept", false), ("removed", true)] {
        apply_control(
            &admin,
            json!({
                "enabled": true, "defaultApproverGroup": "pam-approvers",
                "systemAccounts": ["system:serviceaccount:ci:deployer"], "removePersistence": remove,
            }),
        )
        .await;
        let request = format!("{}-{round}", ns.name);
        create_request(
            &alice,
            &request,
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-8" }),
        )
        .await;
        wait_phase(&alice, &request, Phase::Pending, SOON).await;
        pam::review(&bob, &request, "bob", "Approve", "ok")
            .await
            .unwrap();
        wait_phase(&alice, &request, Phase::Approved, SOON).await;
        pam::wait_allowed(
            &admin,
            "alice",
            ("create", "", "serviceaccounts"),
            Some(&ns.name),
            true,
            SOON,
        )
        .await;
        let account = format!("helper-{round}");
        // A colleague's account: alice's failed create of the same name is
        // no reason for kubepam to delete it.
        let colleague = format!("colleague-{round}");
        let theirs: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": colleague } })).unwrap();
        Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
            .create(&PostParams::default(), &theirs)
            .await
            .unwrap();
        let again = Api::<ServiceAccount>::namespaced(alice.clone(), &ns.name)
            .create(&PostParams::default(), &theirs)
            .await;
        assert!(again.is_err(), "{again:?}");
        let sa: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": account } })).unwrap();
        Api::<ServiceAccount>::namespaced(alice.clone(), &ns.name)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        // Recorded before the pod, so the pod is known to run as it.
        eventually("the account is recorded", SOON, || async {
            let status = requests.get(&request).await.ok()?.status?;
            status
                .lasting_objects
                .iter()
                .any(|o| o.name == account)
                .then_some(())
        })
        .await;
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": { "name": format!("{account}-binding") },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": ns.name }],
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(alice.clone(), &ns.name)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": format!("{account}-pod") },
            "spec": {
                "serviceAccountName": account, "automountServiceAccountToken": false,
                "containers": [{ "name": "c", "image": "registry.invalid/none:1" }],
            },
        }))
        .unwrap();
        Api::<Pod>::namespaced(alice.clone(), &ns.name)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        let notes: ConfigMap =
            serde_json::from_value(json!({ "metadata": { "name": format!("notes-{round}") } }))
                .unwrap();
        Api::<ConfigMap>::namespaced(alice.clone(), &ns.name)
            .create(&PostParams::default(), &notes)
            .await
            .unwrap();
        // The colleague's name too: alice's create of it was admitted, then failed.
        let recorded = eventually("four objects recorded", SOON, || async {
            let status = requests.get(&request).await.ok()?.status?;
            (status.lasting_objects.len() == 4).then_some(status.lasting_objects)
        })
        .await;
        let kinds: Vec<&str> = recorded.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "ServiceAccount", "RoleBinding", "Pod"]
        );

        pam::review(&bob, &request, "bob", "Revoke", "done")
            .await
            .unwrap();
        let ended = wait_phase(&alice, &request, Phase::Revoked, SOON).await;
        let objects = ended.status.unwrap().lasting_objects;
        assert!(
            objects
                .iter()
                .all(|o| o.removed == (remove && o.name != colleague)),
            "{objects:?}"
        );
        let events = eventually("PersistenceFound", SOON, || async {
            let found: Vec<_> = pam::events_for(&admin, &request)
                .await
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("PersistenceFound"))
                .collect();
            (!found.is_empty()).then_some(found)
        })
        .await;
        let note = events[0].note.clone().unwrap_or_default();
        assert!(
            note.contains(&format!("ServiceAccount {}/{account}", ns.name)),
            "{note}"
        );
        let exists = Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
            .get_opt(&account)
            .await
            .unwrap()
            .is_some();
        assert_eq!(exists, !remove, "{round}");
        let pod_exists = Api::<Pod>::namespaced(admin.clone(), &ns.name)
            .get_opt(&format!("{account}-pod"))
            .await
            .unwrap()
            .is_some();
        assert_eq!(pod_exists, !remove, "{round}");
        assert!(
            Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
                .get_opt(&colleague)
                .await
                .unwrap()
                .is_some(),
            "{round}: the colleague's account is theirs"
        );
        left_by.push(account);
    }
    // Ordinary objects are never touched.
    for round in ["kept", "removed"] {
        assert!(
            Api::<ConfigMap>::namespaced(admin.clone(), &ns.name)
                .get_opt(&format!("notes-{round}"))
                .await
                .unwrap()
                .is_some()
        );
    }
    standard_control(&admin).await;
    ns.delete().await;
}
