//! Admission of approval routing, as the attacker tries it: emergency requests by outsiders,
//! self-confirmation, verdicts on ordinary requests, reviews by escalation groups before
//! their step, and approvers by RBAC.

use super::review::Pass;
use super::tests::{
    accepts, base_spec, caller, er, er_object, er_request, groups, now, policy, rejects,
};
use super::*;
use crate::api::ElevationRequest;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use serde_json::{Value, json};

fn break_glass_policy() -> crate::api::AccessPolicy {
    policy(
        "prod-delete",
        json!({
            "type": "Role", "role": "admin", "approvalType": "Manual", "approverGroup": "approvers",
            "breakGlass": {"groups": ["oncall"], "maxDuration": "1h"},
        }),
        true,
    )
}

fn emergency_spec() -> Value {
    let mut spec = base_spec();
    spec["emergency"] = json!(true);
    spec
}

fn create(who: &str, gs: &[&str], spec: Value, p: &crate::api::AccessPolicy) -> Verdict {
    let gs = groups(gs);
    request_fits_policy(
        &caller(who, &gs),
        &er(spec, json!({})),
        Some(p),
        None,
        None,
        std::iter::empty::<&ElevationRequest>(),
        now(),
    )
}

#[test]
fn only_a_break_glass_member_may_file_an_emergency_request() {
    let p = break_glass_policy();
    accepts(&create("alice", &["oncall"], emergency_spec(), &p));
    rejects(
        &create("alice", &["developers"], emergency_spec(), &p),
        Reason::NotBreakGlass,
        "only members of group(s) oncall may request emergency access",
    );
    // The refusal says what to do instead.
    rejects(
        &create("alice", &[], emergency_spec(), &p),
        Reason::NotBreakGlass,
        "file an ordinary request (without emergency) and ask group approvers to approve it",
    );
    // An ordinary request of the same person is fine.
    accepts(&create("alice", &["developers"], base_spec(), &p));
}

#[test]
fn a_policy_without_break_glass_refuses_emergency_requests() {
    let p = policy(
        "prod-delete",
        json!({"type": "Role", "role": "admin", "approvalType": "Manual", "approverGroup": "approvers"}),
        true,
    );
    rejects(
        &create("alice", &["oncall"], emergency_spec(), &p),
        Reason::EmergencyNotAllowed,
        "allows no emergency access (it has no breakGlass)",
    );
}

#[test]
fn an_emergency_request_longer_than_break_glass_allows_is_refused() {
    let mut spec = emergency_spec();
    spec["duration"] = json!("2h");
    rejects(
        &create("alice", &["oncall"], spec, &break_glass_policy()),
        Reason::EmergencyNotAllowed,
        "lasts at most 1h",
    );
}

fn granted_emergency() -> Value {
    json!({
        "phase": "Approved", "approverGroup": "approvers", "approverGroups": ["approvers"],
        "conditions": [{"type": "ReviewRequired", "status": "True", "reason": "AwaitingReview",
            "message": "", "lastTransitionTime": "2025-06-01T11:00:00Z"}],
    })
}

fn review(who: &str, gs: &[&str], spec: Value, status: Value, decision: &str) -> Verdict {
    review_as(who, gs, false, spec, status, decision)
}

fn review_as(
    who: &str,
    gs: &[&str],
    by_rbac: bool,
    spec: Value,
    status: Value,
    decision: &str,
) -> Verdict {
    let gs = groups(gs);
    let old = er(spec, status);
    let mut new = old.clone();
    new.spec.reviews.insert(
        who.to_owned(),
        serde_json::from_value(json!({"decision": decision, "comment": "seen"})).unwrap(),
    );
    let caller = Caller {
        approves_by_rbac: by_rbac,
        ..caller(who, &gs)
    };
    request_update(&caller, &old, &new, None, None)
}

#[test]
fn an_approver_confirms_or_rejects_an_emergency_grant() {
    for decision in ["Confirm", "Reject"] {
        accepts(&review(
            "bob",
            &["approvers"],
            emergency_spec(),
            granted_emergency(),
            decision,
        ));
    }
}

#[test]
fn nobody_confirms_their_own_emergency_access() {
    rejects(
        &review(
            "alice",
            &["approvers", "oncall"],
            emergency_spec(),
            granted_emergency(),
            "Confirm",
        ),
        Reason::SelfReview,
        "nobody can review their own request",
    );
}

#[test]
fn a_verdict_needs_an_emergency_grant_waiting_for_review() {
    let ordinary = json!({"phase": "Approved", "approverGroup": "approvers"});
    rejects(
        &review("bob", &["approvers"], base_spec(), ordinary, "Confirm"),
        Reason::NotAnEmergency,
        "is not an emergency request",
    );
    rejects(
        &review(
            "bob",
            &["approvers"],
            emergency_spec(),
            json!({"phase": "Pending", "approverGroup": "approvers"}),
            "Reject",
        ),
        Reason::NothingToReview,
        "has not recorded an emergency grant",
    );
    let reviewed = json!({
        "phase": "Expired", "approverGroup": "approvers",
        "conditions": [{"type": "ReviewRequired", "status": "False", "reason": "EmergencyConfirmed",
            "message": "emergency access confirmed by carol", "lastTransitionTime": "2025-06-01T11:00:00Z"}],
    });
    rejects(
        &review("bob", &["approvers"], emergency_spec(), reviewed, "Reject"),
        Reason::AlreadyReviewed,
        "confirmed by carol",
    );
    // An ended grant still waiting for review can be reviewed.
    let mut ended = granted_emergency();
    ended["phase"] = json!("Expired");
    accepts(&review(
        "bob",
        &["approvers"],
        emergency_spec(),
        ended,
        "Reject",
    ));
    // Outsiders cannot.
    rejects(
        &review(
            "mallory",
            &["oncall"],
            emergency_spec(),
            granted_emergency(),
            "Confirm",
        ),
        Reason::NotAnApprover,
        "only members of group approvers may review",
    );
}

fn escalated_pending(groups_now: &[&str]) -> Value {
    json!({"phase": "Pending", "approverGroup": "approvers", "approverGroups": groups_now})
}

#[test]
fn an_escalation_group_decides_only_once_its_step_opened() {
    rejects(
        &review(
            "erin",
            &["ops-leads"],
            base_spec(),
            escalated_pending(&["approvers"]),
            "Approve",
        ),
        Reason::NotAnApprover,
        "only members of group approvers may review",
    );
    accepts(&review(
        "erin",
        &["ops-leads"],
        base_spec(),
        escalated_pending(&["approvers", "ops-leads"]),
        "Approve",
    ));
    rejects(
        &review(
            "mallory",
            &["devs"],
            base_spec(),
            escalated_pending(&["approvers", "ops-leads"]),
            "Approve",
        ),
        Reason::NotAnApprover,
        "members of groups approvers, ops-leads",
    );
}

#[test]
fn rbac_lets_an_approver_outside_every_group_decide() {
    accepts(&review_as(
        "carol",
        &[],
        true,
        base_spec(),
        escalated_pending(&["approvers"]),
        "Approve",
    ));
    let refused = review_as(
        "carol",
        &[],
        false,
        base_spec(),
        escalated_pending(&["approvers"]),
        "Approve",
    );
    rejects(
        &refused,
        Reason::NotAnApprover,
        "kubectl auth can-i approve accesspolicies/prod-delete",
    );
    // RBAC never lets anyone review their own request.
    rejects(
        &review_as(
            "alice",
            &[],
            true,
            base_spec(),
            escalated_pending(&["approvers"]),
            "Approve",
        ),
        Reason::SelfReview,
        "nobody can review their own request",
    );
    // Nor before the request was processed, when its group is unknown, does it matter.
    accepts(&review_as(
        "carol",
        &[],
        true,
        base_spec(),
        json!({}),
        "Approve",
    ));
}

fn update_review(who: &str, gs: &[&str], status: Value) -> AdmissionRequest<DynamicObject> {
    let old = er_object(base_spec(), status);
    let mut new = old.clone();
    new["spec"]["reviews"] = json!({ who: {"decision": "Approve"} });
    er_request("UPDATE", who, gs, new, old)
}

#[test]
fn the_approval_right_is_asked_for_only_when_groups_do_not_answer() {
    let member = update_review("bob", &["approvers"], escalated_pending(&["approvers"]));
    assert_eq!(approval_right_needed(&member), None);
    let escalated = update_review(
        "erin",
        &["ops-leads"],
        escalated_pending(&["approvers", "ops-leads"]),
    );
    assert_eq!(approval_right_needed(&escalated), None);
    let outsider = update_review("carol", &["devs"], escalated_pending(&["approvers"]));
    assert_eq!(
        approval_right_needed(&outsider),
        Some("prod-delete".to_owned())
    );
    let requester = update_review("alice", &[], escalated_pending(&["approvers"]));
    assert_eq!(approval_right_needed(&requester), None);
}

/// One refusal of each routing reason, for the table of every reason.
pub(super) fn refusal_scenarios() -> Vec<(&'static str, Verdict, Reason)> {
    let no_break_glass = policy(
        "prod-delete",
        json!({"type": "Role", "role": "admin", "approvalType": "Manual"}),
        true,
    );
    let reviewed = json!({
        "phase": "Approved", "approverGroup": "approvers",
        "conditions": [{"type": "ReviewRequired", "status": "False", "reason": "EmergencyConfirmed",
            "message": "confirmed", "lastTransitionTime": "2025-06-01T11:00:00Z"}],
    });
    vec![
        (
            "a confirmation of an ordinary request",
            review(
                "bob",
                &["approvers"],
                base_spec(),
                json!({"phase": "Approved", "approverGroup": "approvers"}),
                "Confirm",
            ),
            Reason::NotAnEmergency,
        ),
        (
            "an emergency request under a policy without break glass",
            create("alice", &["oncall"], emergency_spec(), &no_break_glass),
            Reason::EmergencyNotAllowed,
        ),
        (
            "an emergency request by an outsider",
            create("mallory", &[], emergency_spec(), &break_glass_policy()),
            Reason::NotBreakGlass,
        ),
        (
            "a rejection before the grant",
            review(
                "bob",
                &["approvers"],
                emergency_spec(),
                json!({"phase": "Pending", "approverGroup": "approvers"}),
                "Reject",
            ),
            Reason::NothingToReview,
        ),
        (
            "a second verdict",
            review("bob", &["approvers"], emergency_spec(), reviewed, "Reject"),
            Reason::AlreadyReviewed,
        ),
    ]
}

fn create_review(who: &str, gs: &[&str], spec: Value) -> AdmissionRequest<DynamicObject> {
    er_request("CREATE", who, gs, er_object(spec, json!(null)), Value::Null)
}

#[test]
fn the_webhook_records_the_group_the_glass_is_broken_as() {
    let p = break_glass_policy();
    let lookup = |_: &str| Some(p.clone());
    let mut spec = emergency_spec();
    spec.as_object_mut().unwrap().remove("requester");
    let req = create_review("alice", &["developers", "oncall"], spec);
    let verdict = super::tests::admit_elevation_request(&req, Pass::Mutating, lookup, None, "op");
    let Verdict::Patch(patch) = verdict else {
        panic!("expected a patch, got {verdict:?}")
    };
    let mut doc = json!({"metadata": {}, "spec": {}});
    json_patch::patch(&mut doc, &patch).unwrap();
    assert_eq!(doc["spec"]["breakGlassGroup"], "oncall");
    assert_eq!(doc["spec"]["requester"], "alice");
}

#[test]
fn a_forged_break_glass_group_is_refused() {
    let p = break_glass_policy();
    let lookup = |_: &str| Some(p.clone());
    let mut spec = emergency_spec();
    spec["breakGlassGroup"] = json!("oncall");
    // alice is not on call, whatever her request says.
    for pass in [Pass::Mutating, Pass::Validating] {
        let req = create_review("alice", &["developers"], spec.clone());
        rejects(
            &super::tests::admit_elevation_request(&req, pass, lookup, None, "op"),
            Reason::NotBreakGlass,
            "must be one of your own groups",
        );
    }
    // The validating pass refuses an emergency request the mutating webhook never saw.
    let mut unpatched = emergency_spec();
    unpatched["requester"] = json!("olga");
    let req = create_review("olga", &["oncall"], unpatched);
    rejects(
        &super::tests::admit_elevation_request(&req, Pass::Validating, lookup, None, "op"),
        Reason::NotBreakGlass,
        "spec.breakGlassGroup is not set",
    );
}
