//! Time that fits the work, on the real control plane as real users: booked windows,
//! extensions without a gap, the requester's release, verified reasons and quotas. The
//! authorizer's own answer (a `SubjectAccessReview`) is the proof of access.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use kube::Api;
use kube::api::PostParams;
use kubepam_core::api::{ElevationRequest, Phase, find_condition};
use kubepam_core::lifecycle::{CONDITION_RELEASED, CONDITION_SCHEDULED, reason};
use serde_json::json;

use crate::pam::{
    create_request, events_for, may_delete_deployments, policy_in_new_namespace, refusal, review,
    try_create_request, wait_may_delete_deployments, wait_phase,
};
use crate::support::{Identity, eventually, kubepam};

const SOON: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_booked_window_opens_at_its_start_and_closes_at_its_end() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let (ns, policy) =
        policy_in_new_namespace("booked", "Manual", json!({"maxScheduleAhead": "1h"})).await;
    let start = (Utc::now() + chrono::TimeDelta::seconds(6)).trunc_subsecs(0);
    let name = format!("{}-alice", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "CHG-7 maintenance window",
                "startAt": start.to_rfc3339(), "duration": "4s" }),
    )
    .await;
    wait_phase(&alice, &name, Phase::Pending, SOON).await;
    // Approved before the window: Approved, but Scheduled and without rights.
    review(&bob, &name, "bob", "Approve", "for the change window")
        .await
        .unwrap();
    let approved = wait_phase(&alice, &name, Phase::Approved, SOON).await;
    let status = approved.status.unwrap();
    assert_eq!(status.starts_at, Some(start));
    assert_eq!(status.granted_from, Some(start));
    assert_eq!(
        status.granted_until,
        Some(start + chrono::TimeDelta::seconds(4))
    );
    let scheduled = find_condition(&status.conditions, CONDITION_SCHEDULED).unwrap();
    assert_eq!(
        (scheduled.status.as_str(), scheduled.reason.as_str()),
        ("True", reason::WINDOW_BOOKED)
    );
    // Polled across the opening: never allowed before the start.
    loop {
        let asked = Utc::now();
        let may = may_delete_deployments(&admin, "alice", Some(&ns.name)).await;
        if may {
            assert!(
                asked >= start,
                "allowed at {asked}, before the window opened at {start}"
            );
            break;
        }
        assert!(
            asked < start + chrono::TimeDelta::seconds(3),
            "the window opened at {start} but access is still refused at {asked}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = Api::<ElevationRequest>::all(alice.clone())
        .get(&name)
        .await
        .unwrap();
    let status = open.status.unwrap();
    assert_eq!(status.starts_at, None);
    let scheduled = find_condition(&status.conditions, CONDITION_SCHEDULED).unwrap();
    assert_eq!(scheduled.reason, reason::WINDOW_OPENED);
    eventually("an Event says the window opened", SOON, || async {
        events_for(&admin, &name)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason::WINDOW_OPENED))
    })
    .await;
    wait_phase(&alice, &name, Phase::Expired, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    ns.delete().await;
}

#[tokio::test]
async fn a_window_too_far_ahead_or_already_over_is_refused_at_creation() {
    let cluster = kubepam();
    let alice = cluster.client(Identity::Alice).await;
    let (ns, policy) =
        policy_in_new_namespace("ahead", "Auto", json!({"maxScheduleAhead": "1h"})).await;
    let far = Utc::now() + chrono::TimeDelta::hours(3);
    let message = refusal(
        try_create_request(
            &alice,
            &format!("{}-far", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "CHG-1",
                    "startAt": far.to_rfc3339() }),
        )
        .await,
        "a window three hours ahead under a 1h limit",
    );
    assert!(message.contains("at most 1h ahead"), "{message}");
    let past = Utc::now() - chrono::TimeDelta::hours(3);
    let message = refusal(
        try_create_request(
            &alice,
            &format!("{}-past", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "CHG-1",
                    "startAt": past.to_rfc3339(), "duration": "1h" }),
        )
        .await,
        "a window that ended two hours ago",
    );
    assert!(message.contains("ended"), "{message}");
    ns.delete().await;
}

#[tokio::test]
async fn an_extension_continues_the_grant_with_no_instant_without_access() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let (ns, policy) =
        policy_in_new_namespace("extend", "Auto", json!({"extension": {"maxExtensions": 1}})).await;
    let first = format!("{}-first", ns.name);
    create_request(
        &alice,
        &first,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-9 long migration",
                "duration": "5s" }),
    )
    .await;
    let granted = wait_phase(&alice, &first, Phase::Approved, SOON).await;
    let old_end = granted.status.unwrap().granted_until.unwrap();
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;

    // Someone else cannot extend alice's grant.
    let message = refusal(
        try_create_request(
            &bob,
            &format!("{}-bob", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-9",
                    "extends": first, "duration": "5s" }),
        )
        .await,
        "bob extending alice's grant",
    );
    assert!(
        message.contains("only the requester may extend"),
        "{message}"
    );

    let more = format!("{}-more", ns.name);
    create_request(
        &alice,
        &more,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-9 still migrating",
                "extends": first, "duration": "5s" }),
    )
    .await;
    let extension = wait_phase(&alice, &more, Phase::Approved, SOON).await;
    let status = extension.status.unwrap();
    let new_end = status.granted_until.unwrap();
    assert_eq!(new_end, old_end + chrono::TimeDelta::seconds(5));
    let record = status.extension.unwrap();
    assert_eq!(
        (record.extends.as_str(), record.number),
        (first.as_str(), 1)
    );
    // Polled across the old end: never refused.
    let mut asked = 0;
    while Utc::now() < old_end + chrono::TimeDelta::milliseconds(1500) {
        let at = Utc::now();
        assert!(
            may_delete_deployments(&admin, "alice", Some(&ns.name)).await,
            "refused at {at}, the old grant ending at {old_end} and its extension at {new_end}"
        );
        asked += 1;
    }
    assert!(asked > 10, "polled only {asked} times");
    let ended = wait_phase(&alice, &first, Phase::Expired, SOON).await;
    let last = ended.status.unwrap().history.last().cloned().unwrap();
    assert!(
        last.comment
            .unwrap_or_default()
            .contains(&format!("continues under ElevationRequest {more}")),
        "the old grant's history names its continuation"
    );
    // A second extension is beyond the policy's limit.
    let message = refusal(
        try_create_request(
            &alice,
            &format!("{}-again", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-9",
                    "extends": more, "duration": "5s" }),
        )
        .await,
        "a second extension under maxExtensions 1",
    );
    assert!(message.contains("at most 1 extension"), "{message}");
    wait_phase(&alice, &more, Phase::Expired, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    ns.delete().await;
}

#[tokio::test]
async fn the_requester_releases_their_grant_and_nobody_else_may() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let (ns, policy) = policy_in_new_namespace("release", "Manual", json!({})).await;
    let name = format!("{}-alice", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-3", "duration": "1h" }),
    )
    .await;
    wait_phase(&alice, &name, Phase::Pending, SOON).await;
    let message = refusal(
        review(&alice, &name, "alice", "Release", "never mind").await,
        "a release before any grant",
    );
    assert!(message.contains("no grant to release"), "{message}");
    review(&bob, &name, "bob", "Approve", "ok").await.unwrap();
    wait_phase(&alice, &name, Phase::Approved, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;

    // An approver may revoke, but not release in the requester's place.
    let message = refusal(
        review(&bob, &name, "bob", "Release", "she is done").await,
        "bob releasing alice's grant",
    );
    // The webhook or the API server's own policy, whichever answers first.
    assert!(message.contains("only the requester"), "{message}");
    let message = refusal(
        review(&bob, &name, "alice", "Release", "as alice").await,
        "bob writing alice's release",
    );
    assert!(message.contains("alice"), "{message}");

    review(&alice, &name, "alice", "Release", "done early")
        .await
        .unwrap();
    let released = wait_phase(&alice, &name, Phase::Revoked, SOON).await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), false).await;
    let status = released.status.unwrap();
    let last = status.history.last().unwrap();
    assert_eq!(last.actor, "alice");
    assert_eq!(last.comment.as_deref(), Some("done early"));
    let condition = find_condition(&status.conditions, CONDITION_RELEASED).unwrap();
    assert_eq!(condition.reason, reason::RELEASED_BY_REQUESTER);
    let message = refusal(
        review(&alice, &name, "alice", "Approve", "take it back").await,
        "changing a release",
    );
    assert!(
        ["final", "taken back", "review their own"]
            .iter()
            .any(|m| message.contains(m)),
        "{message}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_reason_without_a_ticket_is_refused_with_the_hint_and_a_bad_pattern_with_the_error() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let (ns, policy) = policy_in_new_namespace(
        "ticket",
        "Auto",
        json!({"reasonPattern": "^(INC|CHG)-[0-9]+",
               "reasonHint": "an incident or change number, e.g. INC-1234"}),
    )
    .await;
    let message = refusal(
        try_create_request(
            &alice,
            &format!("{}-fix", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "fix" }),
        )
        .await,
        "a reason without a ticket",
    );
    assert!(
        message.contains("an incident or change number, e.g. INC-1234"),
        "{message}"
    );
    create_request(
        &alice,
        &format!("{}-ticket", ns.name),
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-1234 stuck rollout" }),
    )
    .await;
    wait_phase(
        &alice,
        &format!("{}-ticket", ns.name),
        Phase::Approved,
        SOON,
    )
    .await;

    let bad: kubepam_core::api::AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": format!("{}-bad", ns.name) },
        "spec": { "type": "Role", "role": "view", "approvalType": "Manual",
                  "reasonPattern": "(INC" },
    }))
    .unwrap();
    let message = refusal(
        Api::<kubepam_core::api::AccessPolicy>::all(admin.clone())
            .create(&PostParams::default(), &bad)
            .await,
        "a policy whose reasonPattern does not compile",
    );
    assert!(
        message.contains("not a valid regular expression"),
        "{message}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn the_request_beyond_the_policy_quota_is_refused_with_the_count_and_the_limit() {
    let cluster = kubepam();
    let alice = cluster.client(Identity::Alice).await;
    let (ns, policy) =
        policy_in_new_namespace("quota", "Manual", json!({"maxOpenPerRequester": 1})).await;
    let first = format!("{}-first", ns.name);
    create_request(
        &alice,
        &first,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-1" }),
    )
    .await;
    wait_phase(&alice, &first, Phase::Pending, SOON).await;
    let message = refusal(
        try_create_request(
            &alice,
            &format!("{}-second", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-2" }),
        )
        .await,
        "a second open request under a quota of one",
    );
    assert!(
        message.contains("1 open request(s)") && message.contains("allows 1"),
        "{message}"
    );
    // Once the first has ended, there is room again.
    let admin = cluster.client(Identity::Admin).await;
    Api::<ElevationRequest>::all(admin.clone())
        .delete(&first, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    eventually("the first request gone", SOON, || async {
        Api::<ElevationRequest>::all(alice.clone())
            .get_opt(&first)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    eventually("a new request admitted", SOON, || async {
        try_create_request(
            &alice,
            &format!("{}-third", ns.name),
            json!({ "policy": policy, "namespace": ns.name, "reason": "INC-3" }),
        )
        .await
        .ok()
    })
    .await;
    ns.delete().await;
}

/// `kubectl explain` documents every field added for time and for approval routing, from the
/// CRDs as installed.
#[tokio::test]
async fn kubectl_explain_documents_every_new_field() {
    let cluster = kubepam();
    for (field, words) in [
        ("elevationrequests.spec.startAt", "booked window"),
        ("elevationrequests.spec.extends", "continues"),
        ("elevationrequests.spec.reviews.decision", "Release"),
        ("elevationrequests.status.grantedFrom", "opens"),
        ("elevationrequests.status.startsAt", "booked window"),
        ("elevationrequests.status.extension", "chain"),
        ("accesspolicies.spec.reasonPattern", "regular expression"),
        ("accesspolicies.spec.reasonHint", "reasonPattern"),
        ("accesspolicies.spec.maxScheduleAhead", "startAt"),
        ("accesspolicies.spec.extension.maxTotal", "extensions"),
        ("accesspolicies.spec.maxOpenPerRequester", "open"),
        (
            "privilegedaccesscontrols.spec.maxPendingPerRequester",
            "Pending",
        ),
        // Approval routing.
        ("elevationrequests.spec.emergency", "Break glass"),
        (
            "elevationrequests.spec.breakGlassGroup",
            "breakGlass.groups",
        ),
        ("elevationrequests.spec.reviews.decision", "Confirm"),
        ("elevationrequests.status.approverGroups", "may decide now"),
        ("elevationrequests.status.escalatesAt", "escalation step"),
        ("elevationrequests.status.reviewDueAt", "review"),
        ("accesspolicies.spec.breakGlass.groups", "emergency request"),
        (
            "accesspolicies.spec.breakGlass.maxDuration",
            "emergency grant",
        ),
        (
            "accesspolicies.spec.breakGlass.reviewWithin",
            "ReviewOverdue",
        ),
        ("accesspolicies.spec.escalation.after", "after submission"),
        (
            "accesspolicies.spec.escalation.approverGroup",
            "may also decide",
        ),
    ] {
        let out = cluster.kubectl(Identity::Alice, &["explain", field]);
        // Descriptions wrap: compare with single spaces.
        let text = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            out.status.success() && text.contains(words),
            "kubectl explain {field} must describe it ({words:?}):\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
