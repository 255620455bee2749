//! `accepts(..)` / `rejects(..)` tests for every admission rule, on inline JSON.

// Fixtures take inline JSON by value: `json!(..)` at the call site reads best.
#![allow(clippy::needless_pass_by_value)]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation as AdmissionOperation};
use serde_json::{Value, json};

use super::*;
use crate::api::{AccessPolicy, ElevationRequest, PrivilegedAccessControl};

/// The policy rules with no ClusterRole read and kubepam in `kubepam-system`.
pub(super) fn policy_create(p: &AccessPolicy, live: usize) -> Verdict {
    super::policy_create(p, live, &PolicyFacts::default())
}

pub(super) fn policy_update(p: &AccessPolicy) -> Verdict {
    super::policy_update(p, &PolicyFacts::default())
}

pub(super) fn policy_warnings(p: &AccessPolicy) -> Vec<String> {
    super::policy_warnings(p, &PolicyFacts::default())
}

pub(super) fn admit_access_policy(
    req: &AdmissionRequest<DynamicObject>,
    live: impl FnOnce() -> usize,
) -> Verdict {
    super::admit_access_policy(req, live, &PolicyFacts::default())
}

/// kubepam's namespace in these tests.
pub(super) const KUBEPAM_NAMESPACE: &str = "kubepam-system";

pub(super) fn admit_elevation_request<P: std::borrow::Borrow<AccessPolicy>>(
    req: &AdmissionRequest<DynamicObject>,
    pass: Pass,
    policy: impl Fn(&str) -> Option<P>,
    control: Option<&PrivilegedAccessControl>,
    operator: &str,
) -> Verdict {
    super::admit_elevation_request(
        req,
        pass,
        &policy,
        control,
        operator,
        KUBEPAM_NAMESPACE,
        now(),
    )
}

pub(super) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

pub(super) fn groups(gs: &[&str]) -> Vec<String> {
    gs.iter().map(|g| (*g).to_owned()).collect()
}

#[track_caller]
pub(super) fn accepts(v: &Verdict) {
    assert!(v.is_allowed(), "expected to be admitted, got {v:?}");
}

#[track_caller]
pub(super) fn rejects(v: &Verdict, reason: Reason, needle: &str) {
    match v {
        Verdict::Deny(Refusal { reason: r, message }) => {
            assert_eq!(*r, reason, "reason of {message:?}");
            assert!(
                message.contains(needle),
                "message {message:?} lacks {needle:?}"
            );
        }
        other => panic!("expected a {reason:?} refusal containing {needle:?}, got {other:?}"),
    }
}

pub(super) fn er(spec: Value, status: Value) -> ElevationRequest {
    serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "ElevationRequest",
        "metadata": {"name": "r1"},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

pub(super) fn base_spec() -> Value {
    json!({"policy": "prod-delete", "namespace": "prod", "reason": "INC-1", "requester": "alice"})
}

pub(super) fn with_reviews(reviews: Value) -> Value {
    let mut s = base_spec();
    s["reviews"] = reviews;
    s
}

/// kubepam's own username in these tests.
pub(super) const OPERATOR: &str = "system:serviceaccount:kubepam-system:kubepam";

pub(super) fn policy(name: &str, spec: Value, accepted: bool) -> AccessPolicy {
    let status = if accepted {
        json!({"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1}]})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name, "generation": 1},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

pub(super) fn task_policy(
    name: &str,
    verbs: &[&str],
    group: &str,
    resources: &[&str],
    namespaces: &[&str],
) -> AccessPolicy {
    policy(
        name,
        json!({
            "type": "Task", "approvalType": "Manual", "approverGroup": "approvers",
            "task": {"verbs": verbs, "apiGroups": [group], "resources": resources},
            "scope": {"namespaces": namespaces},
        }),
        true,
    )
}

pub(super) fn control(enabled: bool, system_accounts: &[&str]) -> PrivilegedAccessControl {
    serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "PrivilegedAccessControl",
        "metadata": {"name": "default"},
        "spec": {"enabled": enabled, "defaultApproverGroup": "default-approvers", "systemAccounts": system_accounts},
    }))
    .unwrap()
}

pub(super) fn caller<'a>(username: &'a str, groups: &'a [String]) -> Caller<'a> {
    Caller::new(username, groups)
}

// ---------------------------------------------------------------- ElevationRequest CREATE

#[test]
fn create_without_requester_is_patched_to_the_caller() {
    let mut spec = base_spec();
    spec.as_object_mut().unwrap().remove("requester");
    let v = request_create(&caller("alice", &[]), &er(spec.clone(), json!({})));
    let Verdict::Patch(patch) = &v else {
        panic!("expected a patch, got {v:?}")
    };
    let mut doc = json!({"metadata": {}, "spec": spec});
    json_patch::patch(&mut doc, patch).unwrap();
    assert_eq!(doc["spec"]["requester"], "alice");
    assert_eq!(
        doc["metadata"]["finalizers"],
        json!(["kubepam.io/grant-cleanup"])
    );
    // The validating pass refuses the same object: the mutating webhook did not run.
    rejects(
        &request_create_validate(&caller("alice", &[]), &er(spec, json!({}))),
        Reason::RequesterNotSet,
        "spec.requester is not set",
    );
}

#[test]
fn create_in_own_name_only_gets_the_cleanup_finalizer() {
    let v = request_create(&caller("alice", &[]), &er(base_spec(), json!({})));
    let Verdict::Patch(patch) = &v else {
        panic!("expected a patch, got {v:?}")
    };
    let mut doc = json!({"metadata": {"finalizers": ["someone.else/keep"]}, "spec": base_spec()});
    let mut request = er(base_spec(), json!({}));
    request.metadata.finalizers = Some(vec!["someone.else/keep".into()]);
    let Verdict::Patch(append) = request_create(&caller("alice", &[]), &request) else {
        panic!("expected a patch")
    };
    json_patch::patch(&mut doc, &append).unwrap();
    assert_eq!(
        doc["metadata"]["finalizers"],
        json!(["someone.else/keep", "kubepam.io/grant-cleanup"])
    );
    assert_eq!(patch.0.len(), 1, "the requester is left as written");
    request.metadata.finalizers = Some(vec!["kubepam.io/grant-cleanup".into()]);
    assert_eq!(
        request_create(&caller("alice", &[]), &request),
        Verdict::Allow
    );
    accepts(&request_create_validate(
        &caller("alice", &[]),
        &er(base_spec(), json!({})),
    ));
}

#[test]
fn create_in_someone_elses_name_is_refused() {
    let v = request_create(&caller("mallory", &[]), &er(base_spec(), json!({})));
    rejects(
        &v,
        Reason::ForgedRequester,
        "spec.requester must be your own username (mallory), or be left out",
    );
    rejects(
        &v,
        Reason::ForgedRequester,
        "never be made in someone else's name",
    );
}

#[test]
fn create_with_reviews_is_refused() {
    let spec = with_reviews(json!({"bob": {"decision": "Approve"}}));
    rejects(
        &request_create(&caller("alice", &[]), &er(spec, json!({}))),
        Reason::ReviewsAtCreation,
        "spec.reviews must be empty when a request is created",
    );
}

#[test]
fn create_with_bad_duration_or_no_username_is_refused() {
    let mut spec = base_spec();
    spec["duration"] = json!("0s");
    rejects(
        &request_create(&caller("alice", &[]), &er(spec, json!({}))),
        Reason::InvalidDuration,
        "spec.duration",
    );
    rejects(
        &request_create(&caller("", &[]), &er(base_spec(), json!({}))),
        Reason::NoUsername,
        "no username",
    );
}

// ---------------------------------------------------------------- ElevationRequest UPDATE

pub(super) fn pending() -> Value {
    json!({"phase": "Pending", "approverGroup": "approvers"})
}

pub(super) fn update(who: &str, gs: &[&str], old: (Value, Value), new_spec: Value) -> Verdict {
    let gs = groups(gs);
    let old = er(old.0, old.1);
    let mut new = old.clone();
    new.spec = serde_json::from_value(new_spec).unwrap();
    request_update(&caller(who, &gs), &old, &new, None, None)
}

#[test]
fn approver_adds_own_approval() {
    let v = update(
        "bob",
        &["approvers"],
        (base_spec(), pending()),
        with_reviews(json!({"bob": {"decision": "Approve", "comment": "ok"}})),
    );
    assert_eq!(v, Verdict::Allow);
}

#[test]
fn approver_changes_and_removes_own_review_while_pending() {
    let old = with_reviews(json!({"bob": {"decision": "Approve"}}));
    accepts(&update(
        "bob",
        &["approvers"],
        (old.clone(), pending()),
        with_reviews(json!({"bob": {"decision": "Deny"}})),
    ));
    accepts(&update(
        "bob",
        &["approvers"],
        (old, pending()),
        base_spec(),
    ));
}

#[test]
fn writing_someone_elses_review_is_refused() {
    rejects(
        &update(
            "bob",
            &["approvers"],
            (base_spec(), pending()),
            with_reviews(json!({"carol": {"decision": "Approve"}})),
        ),
        Reason::OthersReview,
        "the review by carol is theirs alone",
    );
    // Removing someone else's review too.
    let old = with_reviews(json!({"carol": {"decision": "Deny"}}));
    rejects(
        &update("bob", &["approvers"], (old, pending()), base_spec()),
        Reason::OthersReview,
        "the review by carol",
    );
}

#[test]
fn requester_cannot_review_own_request() {
    rejects(
        &update(
            "alice",
            &["approvers"],
            (base_spec(), pending()),
            with_reviews(json!({"alice": {"decision": "Approve"}})),
        ),
        Reason::SelfReview,
        "nobody can review their own request; a member of group approvers must review it",
    );
}

#[test]
fn non_member_is_refused_with_the_group_named() {
    rejects(
        &update(
            "bob",
            &["devs"],
            (base_spec(), pending()),
            with_reviews(json!({"bob": {"decision": "Approve"}})),
        ),
        Reason::NotAnApprover,
        "only members of group approvers may review",
    );
}

#[test]
fn other_spec_fields_are_immutable() {
    let mut spec = base_spec();
    spec["reason"] = json!("changed");
    rejects(
        &update("bob", &["approvers"], (base_spec(), pending()), spec),
        Reason::SpecImmutable,
        "spec.reason cannot change",
    );
    let mut spec = base_spec();
    spec["requester"] = json!("bob");
    rejects(
        &update("bob", &["approvers"], (base_spec(), pending()), spec),
        Reason::SpecImmutable,
        "spec.requester cannot change",
    );
    let mut spec = base_spec();
    spec["duration"] = json!("8h");
    rejects(
        &update("alice", &[], (base_spec(), pending()), spec),
        Reason::SpecImmutable,
        "spec.duration",
    );
}

#[test]
fn metadata_only_changes_are_allowed_for_anyone() {
    let old = er(
        with_reviews(json!({"bob": {"decision": "Approve"}})),
        json!({"phase": "Denied"}),
    );
    let mut new = old.clone();
    new.metadata.finalizers = Some(vec!["kubepam.io/cleanup".into()]);
    new.metadata.labels = Some([("x".to_owned(), "y".to_owned())].into());
    assert_eq!(
        request_update(&caller("anyone", &[]), &old, &new, None, None),
        Verdict::Allow
    );
}

#[test]
fn decisions_must_fit_the_phase() {
    let approve = with_reviews(json!({"bob": {"decision": "Approve"}}));
    let revoke = with_reviews(json!({"bob": {"decision": "Revoke"}}));
    let approved = json!({"phase": "Approved", "approverGroup": "approvers"});
    rejects(
        &update(
            "bob",
            &["approvers"],
            (base_spec(), pending()),
            revoke.clone(),
        ),
        Reason::NothingToRevoke,
        "no approval to revoke; use decision Deny",
    );
    // No phase yet counts as Pending (the group is then known from the status).
    accepts(&update(
        "bob",
        &["approvers"],
        (base_spec(), json!({"approverGroup": "approvers"})),
        with_reviews(json!({"bob": {"decision": "Deny"}})),
    ));
    accepts(&update(
        "bob",
        &["approvers"],
        (approve.clone(), approved.clone()),
        revoke.clone(),
    ));
    rejects(
        &update(
            "carol",
            &["approvers"],
            (approve.clone(), approved.clone()),
            with_reviews(json!({"bob": {"decision": "Approve"}, "carol": {"decision": "Approve"}})),
        ),
        Reason::AlreadyApproved,
        "already Approved",
    );
    rejects(
        &update(
            "bob",
            &["approvers"],
            (approve.clone(), approved),
            base_spec(),
        ),
        Reason::AlreadyApproved,
        "already Approved",
    );
    for phase in ["Denied", "Expired", "Revoked"] {
        let status = json!({"phase": phase, "approverGroup": "approvers"});
        rejects(
            &update(
                "carol",
                &["approvers"],
                (approve.clone(), status.clone()),
                with_reviews(
                    json!({"bob": {"decision": "Approve"}, "carol": {"decision": "Revoke"}}),
                ),
            ),
            Reason::PhaseFinal,
            "which is final",
        );
        rejects(
            &update(
                "bob",
                &["approvers"],
                (approve.clone(), status),
                base_spec(),
            ),
            Reason::PhaseFinal,
            "which is final",
        );
    }
}

#[test]
fn approver_group_falls_back_to_policy_then_control() {
    let gs = groups(&["pol-approvers"]);
    let old = er(base_spec(), json!({}));
    let mut new = old.clone();
    new.spec.reviews.insert(
        "bob".into(),
        serde_json::from_value(json!({"decision": "Approve"})).unwrap(),
    );
    let bob = caller("bob", &gs);
    // Nothing known: not processed yet.
    rejects(
        &request_update(&bob, &old, &new, None, None),
        Reason::ApproverGroupUnknown,
        "has not been processed yet",
    );
    let p = policy(
        "prod-delete",
        json!({"type": "Role", "role": "admin", "approvalType": "Manual", "approverGroup": "pol-approvers"}),
        true,
    );
    accepts(&request_update(&bob, &old, &new, Some(&p), None));
    // A policy without a group: the control's default.
    let p2 = policy(
        "prod-delete",
        json!({"type": "Role", "role": "admin", "approvalType": "Manual"}),
        true,
    );
    let c = control(true, &[]);
    rejects(
        &request_update(&bob, &old, &new, Some(&p2), Some(&c)),
        Reason::NotAnApprover,
        "only members of group default-approvers",
    );
    let dgs = groups(&["default-approvers"]);
    accepts(&request_update(
        &caller("bob", &dgs),
        &old,
        &new,
        Some(&p2),
        Some(&c),
    ));
    // The status wins once recorded.
    let old2 = er(
        base_spec(),
        json!({"phase": "Approved", "approverGroup": "pol-approvers"}),
    );
    let mut new2 = old2.clone();
    new2.spec.reviews.insert(
        "bob".into(),
        serde_json::from_value(json!({"decision": "Revoke"})).unwrap(),
    );
    accepts(&request_update(&bob, &old2, &new2, Some(&p2), Some(&c)));
}

#[test]
fn a_changing_approver_group_is_refused_while_pending() {
    let gs = groups(&["old-group"]);
    let old = er(
        base_spec(),
        json!({"phase": "Pending", "approverGroup": "old-group"}),
    );
    let mut new = old.clone();
    new.spec.reviews.insert(
        "bob".into(),
        serde_json::from_value(json!({"decision": "Approve"})).unwrap(),
    );
    let p = policy(
        "prod-delete",
        json!({"type": "Role", "role": "admin", "approvalType": "Manual", "approverGroup": "new-group"}),
        true,
    );
    rejects(
        &request_update(&caller("bob", &gs), &old, &new, Some(&p), None),
        Reason::ApproverGroupChanging,
        "changing from old-group to new-group",
    );
}

// ---------------------------------------------------------------- AccessPolicy

fn ap(spec: Value) -> AccessPolicy {
    policy("p", spec, false)
}

#[test]
fn policy_limit_is_enforced_at_create_only() {
    let p = ap(json!({"type": "Role", "role": "admin", "approvalType": "Manual"}));
    accepts(&policy_create(&p, 29));
    rejects(
        &policy_create(&p, 30),
        Reason::PolicyLimit,
        "kubepam accepts at most 30 AccessPolicies per cluster and 30 exist; delete one",
    );
    rejects(&policy_create(&p, 45), Reason::PolicyLimit, "45 exist");
    accepts(&policy_update(&p));
}

#[test]
fn policy_type_and_fields_must_agree() {
    let task = json!({"verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"]});
    accepts(&policy_update(&ap(
        json!({"type": "Task", "task": task, "approvalType": "Manual"}),
    )));
    rejects(
        &policy_update(&ap(json!({"type": "Task", "approvalType": "Manual"}))),
        Reason::InvalidPolicy,
        "type Task needs task",
    );
    rejects(
        &policy_update(&ap(
            json!({"type": "Task", "task": task, "role": "admin", "approvalType": "Manual"}),
        )),
        Reason::InvalidPolicy,
        "type Task needs task",
    );
    rejects(
        &policy_update(&ap(json!({"type": "Role", "approvalType": "Auto"}))),
        Reason::InvalidPolicy,
        "type Role needs role",
    );
    rejects(
        &policy_update(&ap(
            json!({"type": "Role", "role": "a", "roles": ["b"], "approvalType": "Auto"}),
        )),
        Reason::InvalidPolicy,
        "type Role needs role",
    );
    rejects(
        &policy_update(&ap(
            json!({"type": "Role", "role": " ", "approvalType": "Auto"}),
        )),
        Reason::InvalidPolicy,
        "role must name a ClusterRole",
    );
    rejects(
        &policy_update(&ap(json!({"type": "RoleGroup", "approvalType": "Auto"}))),
        Reason::InvalidPolicy,
        "type RoleGroup needs a non-empty roles list",
    );
    rejects(
        &policy_update(&ap(
            json!({"type": "RoleGroup", "roles": ["a", ""], "approvalType": "Auto"}),
        )),
        Reason::InvalidPolicy,
        "roles must not contain empty names",
    );
    accepts(&policy_update(&ap(
        json!({"type": "RoleGroup", "roles": ["a", "b"], "approvalType": "Auto"}),
    )));
}

#[test]
fn policy_task_durations_and_approvals_are_checked() {
    let spec = |task: Value, extra: Value| {
        let mut s = json!({"type": "Task", "task": task, "approvalType": "Manual"});
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        ap(s)
    };
    let good = json!({"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]});
    rejects(
        &policy_update(&spec(
            json!({"verbs": [], "apiGroups": [""], "resources": ["pods"]}),
            json!({}),
        )),
        Reason::InvalidPolicy,
        "task.verbs must list at least one verb",
    );
    rejects(
        &policy_update(&spec(
            json!({"verbs": ["delete"], "apiGroups": [], "resources": ["pods"]}),
            json!({}),
        )),
        Reason::InvalidPolicy,
        "task.apiGroups",
    );
    rejects(
        &policy_update(&spec(
            json!({"verbs": ["delete"], "apiGroups": [""], "resources": []}),
            json!({}),
        )),
        Reason::InvalidPolicy,
        "task.resources",
    );
    rejects(
        &policy_update(&spec(good.clone(), json!({"maxDuration": "4x"}))),
        Reason::InvalidPolicy,
        "maxDuration: invalid duration \"4x\"",
    );
    rejects(
        &policy_update(&spec(good.clone(), json!({"maxDuration": "0s"}))),
        Reason::InvalidPolicy,
        "maxDuration",
    );
    accepts(&policy_update(&spec(
        good.clone(),
        json!({"maxDuration": "8h", "requiredApprovals": 2}),
    )));
    rejects(
        &policy_update(&spec(good.clone(), json!({"requiredApprovals": 0}))),
        Reason::InvalidPolicy,
        "requiredApprovals must be at least 1",
    );
    rejects(
        &policy_update(&spec(good.clone(), json!({"approverGroup": " "}))),
        Reason::InvalidPolicy,
        "approverGroup must name",
    );
    rejects(
        &policy_update(&spec(good, json!({"scope": {"namespaces": ["prod", ""]}}))),
        Reason::InvalidPolicy,
        "scope.namespaces",
    );
}

#[test]
fn policy_warnings_name_unguardable_verbs_and_wildcards() {
    let p = task_policy("reads", &["get", "list", "delete"], "", &["secrets"], &[]);
    let w = policy_warnings(&p);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("get, list"), "{w:?}");
    assert!(
        policy_warnings(&task_policy(
            "exec",
            &["create", "get"],
            "",
            &["pods/exec"],
            &[]
        ))
        .is_empty()
    );
    assert_eq!(
        policy_warnings(&task_policy("all", &["delete"], "*", &["*"], &[])).len(),
        1
    );
}

// ---------------------------------------------------------------- the guard

fn approved_request(
    name: &str,
    who: &str,
    policy: &str,
    ns: Option<&str>,
    scope: &AccessPolicy,
    until: DateTime<Utc>,
) -> ElevationRequest {
    let grant = crate::lifecycle::scope::snapshot(policy, &scope.spec, ns).unwrap();
    let mut r = er(
        json!({"policy": policy, "namespace": ns, "reason": "INC-1", "requester": who}),
        json!({
            "phase": "Approved", "approverGroup": "approvers",
            "decidedAt": (until - TimeDelta::hours(4)).to_rfc3339(),
            "grantedUntil": until.to_rfc3339(),
        }),
    );
    r.metadata.name = Some(name.to_owned());
    r.status.as_mut().unwrap().grant = Some(grant);
    r
}

/// `request` with as many audit records waiting for the chain as the guard lets a grant have.
fn with_records_waiting(mut request: ElevationRequest) -> ElevationRequest {
    let entry = |n: usize| crate::api::AuditEntry {
        id: format!("r/{n}"),
        event_type: "io.kubepam.grant.used".into(),
        time: now(),
        actor: "alice".into(),
        comment: None,
        decision: None,
        condition_reason: None,
        granted_until: None,
        operation: None,
    };
    request.status.as_mut().unwrap().audit = Some(crate::api::RequestAudit {
        recorded: crate::admission::guard::USES_WAITING_LIMIT as u64,
        pending: (1..=crate::admission::guard::USES_WAITING_LIMIT)
            .map(entry)
            .collect(),
        ..crate::api::RequestAudit::default()
    });
    request
}

fn delete_deploy<'a>(ns: Option<&'a str>, name: Option<&'a str>) -> GuardOperation<'a> {
    GuardOperation {
        operation: AdmissionOperation::Delete,
        api_group: "apps",
        resource: "deployments",
        subresource: None,
        name,
        namespace: ns,
        collection: false,
    }
}

#[test]
fn guard_passes_operations_no_policy_describes() {
    let p = task_policy(
        "prod-delete",
        &["delete"],
        "apps",
        &["deployments"],
        &["prod"],
    );
    let c = control(true, &[]);
    let gs = groups(&[]);
    let alice = caller("alice", &gs);
    let op = delete_deploy(Some("dev"), Some("web"));
    assert_eq!(
        guard(&op, &alice, [&p], [], Some(&c), now()),
        GuardVerdict::NotGuarded
    );
    let mut update = delete_deploy(Some("prod"), Some("web"));
    update.operation = AdmissionOperation::Create;
    assert_eq!(
        guard(&update, &alice, [&p], [], Some(&c), now()),
        GuardVerdict::NotGuarded
    );
    // A refused policy guards nothing.
    let mut refused = policy("x", p.spec.clone().pipe_json(), false);
    refused.status = serde_json::from_value(json!({"conditions": [{"type": "Accepted", "status": "False", "reason": "PolicyLimitExceeded", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1}]})).unwrap();
    assert_eq!(
        guard(
            &delete_deploy(Some("prod"), None),
            &alice,
            [&refused],
            [],
            Some(&c),
            now()
        ),
        GuardVerdict::NotGuarded
    );
}

/// A policy created or edited a moment ago, not judged yet, guards at once by its new spec:
/// an edit never opens the guard.
#[test]
fn an_unsettled_policy_guards_by_its_new_spec() {
    let p = task_policy("x", &["delete"], "apps", &["deployments"], &["prod"]);
    let mut edited = p.clone();
    edited.metadata.generation = Some(2);
    let c = control(true, &[]);
    let gs = groups(&[]);
    let alice = caller("alice", &gs);
    let verdict = guard(
        &delete_deploy(Some("prod"), None),
        &alice,
        [&edited],
        [],
        Some(&c),
        now(),
    );
    assert_eq!(verdict.refusal().map(|r| r.reason), Some(Reason::NoGrant));
    let fresh = policy("x", p.spec.clone().pipe_json(), false);
    let verdict = guard(
        &delete_deploy(Some("prod"), None),
        &alice,
        [&fresh],
        [],
        Some(&c),
        now(),
    );
    assert_eq!(verdict.refusal().map(|r| r.reason), Some(Reason::NoGrant));
    assert!(!guard_rules([&fresh, &edited]).rules.is_empty());
}

/// While an edit waits to be accepted, what the last accepted generation guarded stays guarded
/// too (`status.guarded`), in the decision as in the webhook's rules.
#[test]
fn an_edit_keeps_guarding_what_the_accepted_generation_guarded() {
    let mut edited = task_policy("x", &["delete"], "apps", &["deployments"], &["prod"]);
    // The edit moved the task to another namespace and resource...
    edited.spec.task.as_mut().unwrap().resources = vec!["statefulsets".into()];
    edited.spec.scope = Some(crate::api::Scope {
        namespaces: vec!["dev".into()],
    });
    edited.metadata.generation = Some(2);
    // ... and the accepted generation guarded deployments in prod.
    edited.status.as_mut().unwrap().guarded = Some(crate::api::GuardedScope {
        task: task_policy("x", &["delete"], "apps", &["deployments"], &[])
            .spec
            .task
            .unwrap(),
        namespaces: vec!["prod".into()],
    });
    let c = control(true, &[]);
    let gs = groups(&[]);
    let alice = caller("alice", &gs);
    let old_op = delete_deploy(Some("prod"), Some("web"));
    let verdict = guard(&old_op, &alice, [&edited], [], Some(&c), now());
    assert_eq!(verdict.refusal().map(|r| r.reason), Some(Reason::NoGrant));
    let rules = guard_rules([&edited]).rules;
    assert!(rules.iter().any(|r| {
        r.resources
            .as_ref()
            .unwrap()
            .contains(&"deployments".to_owned())
    }));
    assert!(rules.iter().any(|r| {
        r.resources
            .as_ref()
            .unwrap()
            .contains(&"statefulsets".to_owned())
    }));
    // Once the new generation is accepted, only it guards.
    edited.status.as_mut().unwrap().conditions[0].observed_generation = Some(2);
    let verdict = guard(&old_op, &alice, [&edited], [], Some(&c), now());
    assert_eq!(verdict, GuardVerdict::NotGuarded);
}

fn with_metadata(metadata: Value) -> Value {
    let mut object = er_object(
        base_spec(),
        json!({"phase": "Pending", "approverGroup": "approvers"}),
    );
    object["metadata"] = metadata;
    object
}

fn metadata_verdict(who: &str, gs: &[&str], old: Value, new: Value) -> Verdict {
    let req = er_request("UPDATE", who, gs, with_metadata(new), with_metadata(old));
    admit_elevation_request(
        &req,
        Pass::Validating,
        |_| None::<AccessPolicy>,
        None,
        OPERATOR,
    )
}

#[test]
fn impersonation_needs_an_explicit_yes() {
    let mut p = task_policy("imp", &["impersonate"], "", &["groups"], &[]);
    let verdict = policy_update(&p);
    assert!(
        verdict.message().unwrap().contains("allowImpersonation"),
        "{verdict:?}"
    );
    p.spec.allow_impersonation = true;
    assert_eq!(policy_update(&p), Verdict::Allow);
    assert_eq!(
        policy_update(&task_policy("ok", &["delete"], "", &["users"], &[])),
        Verdict::Allow
    );
}

#[test]
fn key_rights_need_an_explicit_yes() {
    let rbac = "rbac.authorization.k8s.io";
    let refused = [
        task_policy("a", &["escalate"], rbac, &["roles"], &["prod"]),
        task_policy("b", &["bind"], rbac, &["clusterroles"], &["prod"]),
        task_policy("c", &["*"], "apps", &["deployments"], &["prod"]),
        task_policy("d", &["delete"], "", &["*"], &["prod"]),
        task_policy("e", &["create"], "", &["serviceaccounts/token"], &[]),
        task_policy("f", &["get"], "", &["secrets"], &[]),
        ap(
            json!({"type": "Role", "role": "cluster-admin", "approvalType": "Manual",
                  "scope": {"namespaces": ["prod"]}}),
        ),
    ];
    for mut p in refused {
        rejects(
            &policy_update(&p),
            Reason::GrantsPrivilegeEscalation,
            "spec.allowPrivilegeEscalation: true",
        );
        p.spec.allow_privilege_escalation = true;
        accepts(&policy_update(&p));
    }
    // Secrets in one namespace are a grant like any other.
    accepts(&policy_update(&task_policy(
        "g",
        &["get"],
        "",
        &["secrets"],
        &["prod"],
    )));
}

#[test]
fn a_role_is_judged_on_the_rules_read_at_admission() {
    let p = ap(
        json!({"type": "RoleGroup", "roles": ["view", "binder"], "approvalType": "Manual",
                      "scope": {"namespaces": ["prod"]}}),
    );
    accepts(&policy_update(&p));
    let roles = crate::privilege::NamedRoles::from([(
        "binder".to_owned(),
        vec![k8s_openapi::api::rbac::v1::PolicyRule {
            verbs: vec!["bind".into()],
            api_groups: Some(vec!["rbac.authorization.k8s.io".into()]),
            resources: Some(vec!["clusterroles".into()]),
            ..Default::default()
        }],
    )]);
    let facts = PolicyFacts {
        roles: &roles,
        kubepam_namespace: KUBEPAM_NAMESPACE,
    };
    rejects(
        &super::policy_update(&p, &facts),
        Reason::GrantsPrivilegeEscalation,
        "bind",
    );
}

#[test]
fn no_policy_reaches_kubepams_namespace_whatever_it_allows() {
    let mut p = task_policy(
        "own",
        &["delete"],
        "apps",
        &["deployments"],
        &["prod", KUBEPAM_NAMESPACE],
    );
    p.spec.allow_privilege_escalation = true;
    p.spec.allow_impersonation = true;
    rejects(
        &policy_update(&p),
        Reason::KubepamNamespace,
        "Remove it from the scope",
    );
}

#[test]
fn no_request_narrows_a_grant_to_kubepams_namespace() {
    let mut spec = base_spec();
    spec.as_object_mut().unwrap().remove("requester");
    spec["namespace"] = json!(KUBEPAM_NAMESPACE);
    for pass in [Pass::Mutating, Pass::Validating] {
        let req = er_request(
            "CREATE",
            "alice",
            &[],
            er_object(spec.clone(), json!(null)),
            Value::Null,
        );
        rejects(
            &admit_elevation_request(&req, pass, |_| None::<AccessPolicy>, None, OPERATOR),
            Reason::KubepamNamespace,
            "request another namespace",
        );
    }
}

#[test]
fn warnings_name_everyone_approvers_and_auto_approved_keys() {
    let mut p = task_policy(
        "t",
        &["bind"],
        "rbac.authorization.k8s.io",
        &["roles"],
        &["prod"],
    );
    p.spec.allow_privilege_escalation = true;
    p.spec.approval_type = crate::api::ApprovalType::Auto;
    p.spec.approver_group = Some("system:authenticated".into());
    let warnings = policy_warnings(&p);
    assert!(
        warnings.iter().any(|w| w.contains("system:authenticated")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("approvalType Auto grants bind")),
        "{warnings:?}"
    );
    p.spec.approval_type = crate::api::ApprovalType::Manual;
    p.spec.approver_group = Some("approvers".into());
    let warnings = policy_warnings(&p);
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("approverGroup") || w.contains("approvalType")),
        "{warnings:?}"
    );
}

/// Owner references and finalizers are kubepam's; labels and annotations the requester's.
#[test]
fn metadata_is_written_only_by_whom_it_belongs_to() {
    let plain = json!({"name": "r1", "finalizers": ["kubepam.io/grant-cleanup"]});
    let owned = json!({"name": "r1", "finalizers": ["kubepam.io/grant-cleanup"], "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "5f1c1f7e-0000-4000-8000-000000000001"}]});
    let unfinalized = json!({"name": "r1"});
    let labelled =
        json!({"name": "r1", "finalizers": ["kubepam.io/grant-cleanup"], "labels": {"team": "a"}});
    let reserved = json!({"name": "r1", "finalizers": ["kubepam.io/grant-cleanup"], "labels": {"kubepam.io/ended": "true"}});
    for (who, gs) in [
        ("bob", &["approvers"][..]),
        ("alice", &["developers"][..]),
        ("mallory", &[][..]),
    ] {
        for tampered in [&owned, &unfinalized, &reserved] {
            let verdict = metadata_verdict(who, gs, plain.clone(), tampered.clone());
            assert_eq!(
                verdict.refusal().map(|r| r.reason),
                Some(Reason::MetadataReserved),
                "{who}: {tampered}"
            );
        }
    }
    // Labels: the requester's to set, nobody else's.
    assert_eq!(
        metadata_verdict("alice", &[], plain.clone(), labelled.clone()),
        Verdict::Allow
    );
    let verdict = metadata_verdict("bob", &["approvers"], plain.clone(), labelled.clone());
    assert!(
        verdict
            .message()
            .unwrap()
            .contains("only the requester (alice)"),
        "{verdict:?}"
    );
    // kubepam, cluster administrators (uninstalling) and the garbage collector may.
    for (who, gs) in [
        (OPERATOR, &[][..]),
        ("root", &["system:masters"][..]),
        (request::GARBAGE_COLLECTOR, &[][..]),
    ] {
        assert_eq!(
            metadata_verdict(who, gs, plain.clone(), unfinalized.clone()),
            Verdict::Allow,
            "{who}"
        );
    }
    // At creation, no owner, no finalizer but kubepam's and no kubepam.io/ keys.
    let held = json!({"name": "r1", "finalizers": ["example.com/keep-forever"]});
    for object in [owned, reserved, held] {
        let req = er_request("CREATE", "alice", &[], with_metadata(object), Value::Null);
        let verdict = admit_elevation_request(
            &req,
            Pass::Mutating,
            |_| None::<AccessPolicy>,
            None,
            OPERATOR,
        );
        assert_eq!(
            verdict.refusal().map(|r| r.reason),
            Some(Reason::MetadataReserved)
        );
    }
}

/// The settled label takes a request out of kubepam's watch: nobody, not kubepam nor a
/// cluster administrator, may put it on a request that can still change.
#[test]
fn only_an_ended_request_may_be_settled() {
    let validate = |req: &AdmissionRequest<DynamicObject>| {
        admit_elevation_request(
            req,
            Pass::Validating,
            |_| None::<AccessPolicy>,
            None,
            OPERATOR,
        )
    };
    let plain = json!({"name": "r1", "finalizers": [crate::grant::FINALIZER]});
    let settled = json!({"name": "r1", "finalizers": [crate::grant::FINALIZER],
        "labels": {"kubepam.io/settled": "true"}});
    let with_phase = |metadata: &Value, phase: &str| {
        let mut object = with_metadata(metadata.clone());
        object["status"]["phase"] = json!(phase);
        object
    };
    for phase in ["Pending", "Approved"] {
        for (who, gs) in [
            ("alice", &[][..]),
            (OPERATOR, &[][..]),
            ("root", &["system:masters"][..]),
        ] {
            let req = er_request(
                "UPDATE",
                who,
                gs,
                with_phase(&settled, phase),
                with_phase(&plain, phase),
            );
            let verdict = validate(&req);
            assert_eq!(
                verdict.refusal().map(|r| r.reason),
                Some(Reason::MetadataReserved),
                "{who} settling a {phase} request: {verdict:?}"
            );
            assert!(verdict.message().unwrap().contains("has ended"));
        }
    }
    // kubepam settles an ended request; the requester may not (the label is kubepam's).
    for (who, allowed) in [(OPERATOR, true), ("alice", false)] {
        let req = er_request(
            "UPDATE",
            who,
            &[],
            with_phase(&settled, "Expired"),
            with_phase(&plain, "Expired"),
        );
        let verdict = validate(&req);
        assert_eq!(verdict == Verdict::Allow, allowed, "{who}: {verdict:?}");
    }
    // Nor, not even kubepam, an ended emergency grant that still awaits its review.
    let owed = |metadata: &Value| {
        let mut object = with_phase(metadata, "Expired");
        object["spec"]["emergency"] = json!(true);
        object["status"]["conditions"] = json!([{"type": "ReviewRequired", "status": "True",
            "reason": "AwaitingReview", "message": "", "lastTransitionTime": "2025-06-01T11:00:00Z"}]);
        object
    };
    let req = er_request("UPDATE", OPERATOR, &[], owed(&settled), owed(&plain));
    let verdict = validate(&req);
    assert!(
        verdict
            .message()
            .unwrap_or_default()
            .contains("awaits review"),
        "{verdict:?}"
    );
    // Nobody creates a request settled.
    let req = er_request(
        "CREATE",
        "root",
        &["system:masters"],
        with_metadata(settled),
        Value::Null,
    );
    let verdict = validate(&req);
    assert_eq!(
        verdict.refusal().map(|r| r.reason),
        Some(Reason::MetadataReserved),
        "{verdict:?}"
    );
}

trait PipeJson {
    fn pipe_json(self) -> Value;
}
impl PipeJson for crate::api::AccessPolicySpec {
    fn pipe_json(self) -> Value {
        serde_json::to_value(self).unwrap()
    }
}

#[test]
fn guard_denies_without_a_request_and_says_how_to_ask() {
    let p = task_policy(
        "prod-delete-deployments",
        &["delete"],
        "apps",
        &["deployments"],
        &["prod"],
    );
    let c = control(true, &[]);
    let gs = groups(&["system:masters"]);
    let admin = caller("admin", &gs);
    let GuardVerdict::Denied(Refusal {
        reason: Reason::NoGrant,
        message: m,
    }) = guard(
        &delete_deploy(Some("prod"), Some("web")),
        &admin,
        [&p],
        [],
        Some(&c),
        now(),
    )
    else {
        panic!("a cluster-admin without a request must be refused");
    };
    assert!(m.starts_with("delete deployments.apps \"web\" in namespace prod is a privileged task (AccessPolicy prod-delete-deployments)"), "{m}");
    assert!(
        m.contains("`kubectl pam request prod-delete-deployments --namespace prod --reason ...`"),
        "{m}"
    );
    assert!(
        m.contains(
            "(spec.policy: prod-delete-deployments, spec.namespace: prod), then wait for approval"
        ),
        "{m}"
    );
}

#[test]
fn guard_allows_system_accounts_and_an_off_control() {
    let p = task_policy(
        "prod-delete",
        &["delete"],
        "apps",
        &["deployments"],
        &["prod"],
    );
    let gs = groups(&[]);
    let argo = caller("system:serviceaccount:argocd:argocd", &gs);
    let op = delete_deploy(Some("prod"), Some("web"));
    let c = control(true, &["system:serviceaccount:argocd:argocd"]);
    assert_eq!(
        guard(&op, &argo, [&p], [], Some(&c), now()),
        GuardVerdict::SystemAccount
    );
    assert_eq!(
        guard(&op, &argo, [&p], [], Some(&control(false, &[])), now()),
        GuardVerdict::ControlOff
    );
    assert_eq!(
        guard(&op, &argo, [&p], [], None, now()),
        GuardVerdict::ControlOff
    );
}

#[test]
fn guard_allows_an_approved_covering_request_and_names_it() {
    let p = task_policy(
        "prod-delete",
        &["delete"],
        "apps",
        &["deployments"],
        &["prod"],
    );
    let c = control(true, &[]);
    let gs = groups(&[]);
    let alice = caller("alice", &gs);
    let until = now() + TimeDelta::hours(1);
    let r = approved_request("r-alice", "alice", "prod-delete", Some("prod"), &p, until);
    let op = delete_deploy(Some("prod"), Some("web"));
    assert_eq!(
        guard(&op, &alice, [&p], [&r], Some(&c), now()),
        GuardVerdict::Allowed {
            request: "r-alice".into()
        }
    );
    // Someone else's request does not help.
    let gs2 = groups(&[]);
    assert!(matches!(
        guard(&op, &caller("bob", &gs2), [&p], [&r], Some(&c), now()),
        GuardVerdict::Denied(_)
    ));
    // Expired.
    assert!(matches!(
        guard(&op, &alice, [&p], [&r], Some(&c), until),
        GuardVerdict::Denied(_)
    ));
    // With the control off, the use is still attributed.
    assert_eq!(
        guard(&op, &alice, [&p], [&r], Some(&control(false, &[])), now()),
        GuardVerdict::Allowed {
            request: "r-alice".into()
        }
    );
    let e = execution(&op, &alice, now());
    assert_eq!(
        (
            e.verb.as_str(),
            e.resource.as_str(),
            e.name.as_deref(),
            e.user.as_str()
        ),
        ("delete", "deployments", Some("web"), "alice")
    );
}

#[test]
fn guard_respects_a_narrowed_or_deleted_policy() {
    let wide = task_policy("prod-delete", &["delete"], "apps", &["deployments"], &[]);
    let c = control(true, &[]);
    let gs = groups(&[]);
    let alice = caller("alice", &gs);
    let until = now() + TimeDelta::hours(1);
    let r = approved_request("r", "alice", "prod-delete", None, &wide, until);
    let stage = delete_deploy(Some("stage"), Some("web"));
    assert!(guard(&stage, &alice, [&wide], [&r], Some(&c), now()).is_allowed());
    // The policy narrows to prod: stage stays guarded by another policy, and the grant no longer covers it.
    let narrow = task_policy(
        "prod-delete",
        &["delete"],
        "apps",
        &["deployments"],
        &["prod"],
    );
    let other = task_policy(
        "stage-delete",
        &["delete"],
        "apps",
        &["deployments"],
        &["stage"],
    );
    assert!(matches!(
        guard(&stage, &alice, [&narrow, &other], [&r], Some(&c), now()),
        GuardVerdict::Denied(_)
    ));
    // Deleted policy: the grant ends.
    assert!(matches!(
        guard(&stage, &alice, [&other], [&r], Some(&c), now()),
        GuardVerdict::Denied(_)
    ));
}

#[test]
fn guard_mentions_a_pending_request() {
    let p = task_policy(
        "prod-delete",
        &["delete"],
        "apps",
        &["deployments"],
        &["prod"],
    );
    let c = control(true, &[]);
    let gs = groups(&[]);
    let r = er(
        base_spec(),
        json!({"phase": "Pending", "approverGroup": "approvers"}),
    );
    let mut r = r;
    r.spec.policy = "prod-delete".into();
    let GuardVerdict::Denied(Refusal {
        reason: Reason::NoGrant,
        message: m,
    }) = guard(
        &delete_deploy(Some("prod"), None),
        &caller("alice", &gs),
        [&p],
        [&r],
        Some(&c),
        now(),
    )
    else {
        panic!()
    };
    assert!(
        m.contains(
            "your ElevationRequest r1 is still Pending: a member of group approvers must approve it"
        ),
        "{m}"
    );
}

#[test]
fn guard_maps_update_patch_collections_and_connect() {
    let c = control(true, &[]);
    let gs = groups(&[]);
    let alice = caller("alice", &gs);
    // A policy on "patch" guards UPDATE.
    let patch = task_policy("patch", &["patch"], "apps", &["deployments"], &[]);
    let mut op = delete_deploy(Some("prod"), Some("web"));
    op.operation = AdmissionOperation::Update;
    assert!(matches!(
        guard(&op, &alice, [&patch], [], Some(&c), now()),
        GuardVerdict::Denied(_)
    ));
    // A policy on "deletecollection" guards a DELETE with no name.
    let dc = task_policy("dc", &["deletecollection"], "apps", &["deployments"], &[]);
    let mut coll = delete_deploy(Some("prod"), Some("web"));
    coll.collection = true;
    assert!(matches!(
        guard(&coll, &alice, [&dc], [], Some(&c), now()),
        GuardVerdict::Denied(_)
    ));
    assert_eq!(
        guard(
            &delete_deploy(Some("prod"), Some("web")),
            &alice,
            [&dc],
            [],
            Some(&c),
            now()
        ),
        GuardVerdict::NotGuarded
    );
    // exec is CONNECT on pods/exec, RBAC verb create.
    let exec = task_policy("exec", &["create"], "", &["pods/exec"], &["prod"]);
    let op = GuardOperation {
        operation: AdmissionOperation::Connect,
        api_group: "",
        resource: "pods",
        subresource: Some("exec"),
        name: Some("db-0"),
        namespace: Some("prod"),
        collection: false,
    };
    assert!(
        matches!(guard(&op, &alice, [&exec], [], Some(&c), now()), GuardVerdict::Denied(ref m) if m.message.starts_with("create pods/exec \"db-0\" in namespace prod"))
    );
    let r = approved_request(
        "r",
        "alice",
        "exec",
        Some("prod"),
        &exec,
        now() + TimeDelta::hours(1),
    );
    assert!(guard(&op, &alice, [&exec], [&r], Some(&c), now()).is_allowed());
}

#[test]
fn guard_treats_an_unknown_name_as_possibly_guarded() {
    let c = control(true, &[]);
    let gs = groups(&[]);
    let alice = caller("alice", &gs);
    let mut p = task_policy("db", &["delete"], "apps", &["deployments"], &[]);
    p.spec.task.as_mut().unwrap().resource_names = Some(vec!["db".into()]);
    assert!(matches!(
        guard(
            &delete_deploy(Some("prod"), None),
            &alice,
            [&p],
            [],
            Some(&c),
            now()
        ),
        GuardVerdict::Denied(_)
    ));
    assert_eq!(
        guard(
            &delete_deploy(Some("prod"), Some("web")),
            &alice,
            [&p],
            [],
            Some(&c),
            now()
        ),
        GuardVerdict::NotGuarded
    );
    // A grant limited to "db" does not cover an unnamed operation.
    let r = approved_request("r", "alice", "db", None, &p, now() + TimeDelta::hours(1));
    assert!(matches!(
        guard(
            &delete_deploy(Some("prod"), None),
            &alice,
            [&p],
            [&r],
            Some(&c),
            now()
        ),
        GuardVerdict::Denied(_)
    ));
    assert!(
        guard(
            &delete_deploy(Some("prod"), Some("db")),
            &alice,
            [&p],
            [&r],
            Some(&c),
            now()
        )
        .is_allowed()
    );
}

#[test]
fn guard_operation_reads_the_admission_request() {
    let req = request_json(json!({
        "uid": "u1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "", "namespace": "prod", "operation": "DELETE",
        "userInfo": {"username": "alice", "groups": ["devs"]},
        "oldObject": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "prod"}},
    }));
    let op = GuardOperation::from_request(&req);
    assert_eq!(op.name, Some("web"));
    assert!(op.collection);
    assert_eq!(op.verbs(), ["deletecollection", "delete"]);
    let caller = Caller::from_user_info(&req.user_info);
    assert_eq!(
        (caller.username, caller.groups),
        ("alice", &["devs".to_owned()][..])
    );
}

#[test]
fn guard_rules_cover_accepted_task_policies_and_report_reads() {
    let mut refused = task_policy("refused", &["delete"], "", &["secrets"], &[]);
    refused.status = serde_json::from_value(json!({"conditions": [{"type": "Accepted", "status": "False", "reason": "PolicyLimitExceeded", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1}]})).unwrap();
    let role = policy(
        "role",
        json!({"type": "Role", "role": "admin", "approvalType": "Auto"}),
        true,
    );
    let policies = [
        task_policy(
            "deploy",
            &["delete", "patch", "get"],
            "apps",
            &["deployments", "deployments/scale"],
            &["prod"],
        ),
        task_policy("exec", &["create"], "", &["pods/exec", "pods/attach"], &[]),
        task_policy("all", &["*"], "example.com", &["*"], &[]),
        refused,
        role,
    ];
    let GuardRules { rules, unguarded } = guard_rules(&policies);
    let plain: Vec<(Vec<String>, Vec<String>, Vec<String>)> = rules
        .iter()
        .map(|r| {
            (
                r.operations.clone().unwrap(),
                r.api_groups.clone().unwrap(),
                r.resources.clone().unwrap(),
            )
        })
        .collect();
    let s = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        plain,
        vec![
            (s(&["CONNECT"]), s(&[""]), s(&["pods/attach", "pods/exec"])),
            (
                s(&["CONNECT", "CREATE", "DELETE", "UPDATE"]),
                s(&["example.com"]),
                s(&["*", "*/*"])
            ),
            (
                s(&["DELETE", "UPDATE"]),
                s(&["apps"]),
                s(&["deployments", "deployments/scale"])
            ),
        ]
    );
    assert!(
        rules
            .iter()
            .all(|r| r.api_versions == Some(vec!["*".into()]) && r.scope.as_deref() == Some("*"))
    );
    assert_eq!(
        unguarded,
        vec![UnguardedVerb {
            policy: "deploy".into(),
            verb: "get".into()
        }]
    );
    assert!(unguarded[0].message().contains("admission never sees it"));
    assert_eq!(guard_rules(std::iter::empty()), GuardRules::default());
}

// ---------------------------------------------------------------- the envelope

pub(super) fn request_json(request: Value) -> AdmissionRequest<DynamicObject> {
    let body =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    parse_review(body.to_string().as_bytes()).unwrap()
}

pub(super) fn er_request(
    operation: &str,
    user: &str,
    gs: &[&str],
    object: Value,
    old: Value,
) -> AdmissionRequest<DynamicObject> {
    request_json(json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "kubepam.io", "version": "v1alpha1", "kind": "ElevationRequest"},
        "resource": {"group": "kubepam.io", "version": "v1alpha1", "resource": "elevationrequests"},
        "name": "r1", "operation": operation,
        "userInfo": {"username": user, "groups": gs},
        "object": object, "oldObject": old,
    }))
}

pub(super) fn er_object(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest", "metadata": {"name": "r1"}, "spec": spec, "status": status})
}

#[test]
fn envelope_mutates_a_create_and_the_response_carries_the_patch() {
    let mut spec = base_spec();
    spec.as_object_mut().unwrap().remove("requester");
    let req = er_request(
        "CREATE",
        "alice",
        &[],
        er_object(spec, json!(null)),
        Value::Null,
    );
    let v = admit_elevation_request(
        &req,
        Pass::Mutating,
        |_| None::<AccessPolicy>,
        None,
        OPERATOR,
    );
    let resp = respond(&req, v);
    assert!(resp.allowed);
    assert_eq!(resp.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    let patch: Value = serde_json::from_slice(resp.patch.as_ref().unwrap()).unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "add", "path": "/spec/requester", "value": "alice"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["kubepam.io/grant-cleanup"]},
        ])
    );
    let body: Value = serde_json::from_slice(&response_bytes(resp)).unwrap();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["patchType"], "JSONPatch");
}

#[test]
fn envelope_validates_an_update_with_the_policy_looked_up() {
    let old = er_object(base_spec(), json!({"phase": "Pending"}));
    let new = er_object(
        with_reviews(json!({"bob": {"decision": "Approve"}})),
        json!({"phase": "Pending"}),
    );
    let req = er_request("UPDATE", "bob", &["pol"], new, old);
    let p = policy(
        "prod-delete",
        json!({"type": "Role", "role": "admin", "approvalType": "Manual", "approverGroup": "pol"}),
        true,
    );
    let asked = std::cell::RefCell::new(None);
    let v = admit_elevation_request(
        &req,
        Pass::Validating,
        |name| {
            *asked.borrow_mut() = Some(name.to_owned());
            Some(&p)
        },
        None,
        OPERATOR,
    );
    assert_eq!(v, Verdict::Allow);
    assert_eq!(asked.borrow().as_deref(), Some("prod-delete"));
    let denied = respond(&req, deny(Reason::NotAnApprover, "no"));
    assert!(!denied.allowed);
    assert_eq!(denied.result.message, "no");
    assert_refusal_status(&denied.result, Reason::NotAnApprover);
}

/// A refusal is a 403 Forbidden whose one cause carries the reason code.
#[track_caller]
fn assert_refusal_status(status: &kube::core::Status, reason: Reason) {
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    let causes: Vec<&str> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .map(|c| c.reason.as_str())
        .collect();
    assert_eq!(causes, [reason.as_str()]);
}

#[test]
fn envelope_refuses_objects_that_do_not_decode() {
    let req = er_request(
        "CREATE",
        "alice",
        &[],
        json!({"apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest", "metadata": {"name": "r1"}, "spec": {"policy": 5}}),
        Value::Null,
    );
    rejects(
        &admit_elevation_request(
            &req,
            Pass::Mutating,
            |_| None::<AccessPolicy>,
            None,
            OPERATOR,
        ),
        Reason::MalformedObject,
        "object is not a valid ElevationRequest",
    );
    let req = er_request(
        "UPDATE",
        "alice",
        &[],
        er_object(base_spec(), json!({})),
        Value::Null,
    );
    rejects(
        &admit_elevation_request(
            &req,
            Pass::Validating,
            |_| None::<AccessPolicy>,
            None,
            OPERATOR,
        ),
        Reason::MalformedObject,
        "the admission request has no oldObject",
    );
    let req = er_request("CREATE", "alice", &[], json!({"spec": []}), Value::Null);
    rejects(
        &admit_access_policy(&req, || 0),
        Reason::MalformedObject,
        "object is not a valid AccessPolicy",
    );
}

#[test]
fn envelope_counts_policies_only_on_create() {
    let obj = json!({"apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "p31"}, "spec": {"type": "Role", "role": "admin", "approvalType": "Auto"}});
    let mk = |op: &str| {
        request_json(json!({
            "uid": "u", "kind": {"group": "kubepam.io", "version": "v1alpha1", "kind": "AccessPolicy"},
            "resource": {"group": "kubepam.io", "version": "v1alpha1", "resource": "accesspolicies"},
            "name": "p31", "operation": op, "userInfo": {"username": "admin"}, "object": obj, "oldObject": obj,
        }))
    };
    rejects(
        &admit_access_policy(&mk("CREATE"), || 30),
        Reason::PolicyLimit,
        "at most 30 AccessPolicies per cluster and 30 exist",
    );
    accepts(&admit_access_policy(&mk("UPDATE"), || {
        panic!("no count on update")
    }));
    accepts(&admit_access_policy(&mk("DELETE"), || {
        panic!("no count on delete")
    }));
}

#[test]
fn envelope_answers_garbage_with_an_invalid_response() {
    let err = parse_review(b"not json").unwrap_err();
    let resp = invalid(&err);
    assert!(!resp.allowed);
    assert!(
        resp.result
            .message
            .contains("not an admission.k8s.io/v1 AdmissionReview")
    );
    // A body with a uid but a broken request keeps the uid.
    let err = parse_review(br#"{"request": {"uid": "abc", "operation": "EXPLODE"}}"#).unwrap_err();
    assert_eq!(invalid(&err).uid, "abc");
    let err = parse_review(br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#)
        .unwrap_err();
    assert!(matches!(err, Error::NoRequest));
    let body: Value = serde_json::from_slice(&response_bytes(invalid(&err))).unwrap();
    assert_eq!(body["response"]["allowed"], false);
}

#[test]
fn guard_response_names_the_request_in_the_audit_log() {
    let req = er_request("DELETE", "alice", &[], Value::Null, Value::Null);
    let resp = respond_guard(
        &req,
        &GuardVerdict::Allowed {
            request: "r-alice".into(),
        },
    );
    assert!(resp.allowed);
    assert_eq!(
        resp.audit_annotations
            .get(review::AUDIT_REQUEST)
            .map(String::as_str),
        Some("r-alice")
    );
    let resp = respond_guard(
        &req,
        &GuardVerdict::Denied(Refusal::new(Reason::NoGrant, "nope")),
    );
    assert!(!resp.allowed);
    assert_eq!(resp.result.message, "nope");
    assert_refusal_status(&resp.result, Reason::NoGrant);
}

// ---------------------------------------------------------------- reason codes

#[test]
fn reason_codes_are_distinct_upper_camel_case() {
    let codes: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(codes.len(), Reason::ALL.len(), "codes must be distinct");
    for reason in Reason::ALL {
        let code = reason.as_str();
        assert_eq!(
            format!("{reason:?}"),
            code,
            "the code is the variant's name"
        );
        assert!(
            code.starts_with(|c: char| c.is_ascii_uppercase())
                && code.chars().all(|c| c.is_ascii_alphanumeric()),
            "{code} is not UpperCamelCase"
        );
    }
    let refusal = Refusal::new(Reason::NoGrant, "why");
    assert_eq!(refusal.to_string(), "why", "displays as its message");
}

/// Every refusal path, one scenario each, with the code it must carry. Only
/// [`Reason::NotReady`] is missing: the webhook transport refuses with it before any rule runs.
#[test]
#[allow(clippy::too_many_lines)]
fn each_refusal_path_yields_its_reason() {
    let code = |v: Verdict| v.refusal().map(|r| r.reason);
    let approvers = groups(&["approvers"]);
    let no_groups = groups(&[]);
    let alice = caller("alice", &no_groups);
    let bob = caller("bob", &approvers);
    let mut no_requester = base_spec();
    no_requester.as_object_mut().unwrap().remove("requester");
    let mut bad_duration = base_spec();
    bad_duration["duration"] = json!("0s");
    let mut changed_reason = base_spec();
    changed_reason["reason"] = json!("changed");
    let approve = |who: &str| with_reviews(json!({ who: {"decision": "Approve"} }));
    let revoke = with_reviews(json!({"bob": {"decision": "Revoke"}}));
    let approved = json!({"phase": "Approved", "approverGroup": "approvers"});
    let unprocessed = er(base_spec(), json!({}));
    let mut reviewed = unprocessed.clone();
    reviewed.spec.reviews =
        serde_json::from_value(json!({"bob": {"decision": "Approve"}})).unwrap();
    let moved = policy(
        "prod-delete",
        json!({"type": "Role", "role": "admin", "approvalType": "Manual", "approverGroup": "new"}),
        true,
    );
    let role = ap(json!({"type": "Role", "role": "admin", "approvalType": "Manual"}));
    let guarded = task_policy(
        "prod-delete",
        &["delete"],
        "apps",
        &["deployments"],
        &["prod"],
    );
    let guard_code = |verdict: GuardVerdict| verdict.refusal().map(|r| r.reason);
    let undecodable = er_request("CREATE", "alice", &[], json!({"spec": []}), Value::Null);

    let create =
        |who: &str, spec: Value| code(request_create(&caller(who, &[]), &er(spec, json!({}))));
    let validate = |who: &str, spec: Value| {
        code(request_create_validate(
            &caller(who, &[]),
            &er(spec, json!({})),
        ))
    };

    let table: Vec<(&str, Option<Reason>, Reason)> = vec![
        (
            "create without a username",
            create("", base_spec()),
            Reason::NoUsername,
        ),
        (
            "update without a username",
            code(update("", &[], (base_spec(), pending()), approve(""))),
            Reason::NoUsername,
        ),
        (
            "create in someone else's name",
            create("mallory", base_spec()),
            Reason::ForgedRequester,
        ),
        (
            "validating pass, in someone else's name",
            validate("mallory", base_spec()),
            Reason::ForgedRequester,
        ),
        (
            "validating pass without a requester",
            validate("alice", no_requester),
            Reason::RequesterNotSet,
        ),
        (
            "create with reviews",
            create("alice", approve("bob")),
            Reason::ReviewsAtCreation,
        ),
        (
            "create with a bad duration",
            create("alice", bad_duration),
            Reason::InvalidDuration,
        ),
        (
            "a changed spec field",
            code(update(
                "bob",
                &["approvers"],
                (base_spec(), pending()),
                changed_reason,
            )),
            Reason::SpecImmutable,
        ),
        (
            "someone else's review",
            code(update(
                "bob",
                &["approvers"],
                (base_spec(), pending()),
                approve("carol"),
            )),
            Reason::OthersReview,
        ),
        (
            "the requester's own review",
            code(update(
                "alice",
                &["approvers"],
                (base_spec(), pending()),
                approve("alice"),
            )),
            Reason::SelfReview,
        ),
        (
            "a reviewer outside the group",
            code(update(
                "bob",
                &["devs"],
                (base_spec(), pending()),
                approve("bob"),
            )),
            Reason::NotAnApprover,
        ),
        (
            "a group being re-resolved",
            code(request_update(
                &caller("bob", &groups(&["approvers"])),
                &er(base_spec(), pending()),
                &{
                    let mut n = er(base_spec(), pending());
                    n.spec.reviews = reviewed.spec.reviews.clone();
                    n
                },
                Some(&moved),
                None,
            )),
            Reason::ApproverGroupChanging,
        ),
        (
            "a request not processed yet",
            code(request_update(&bob, &unprocessed, &reviewed, None, None)),
            Reason::ApproverGroupUnknown,
        ),
        (
            "a review of a final request",
            code(update(
                "bob",
                &["approvers"],
                (
                    base_spec(),
                    json!({"phase": "Expired", "approverGroup": "approvers"}),
                ),
                approve("bob"),
            )),
            Reason::PhaseFinal,
        ),
        (
            "a revoke while pending",
            code(update(
                "bob",
                &["approvers"],
                (base_spec(), pending()),
                revoke,
            )),
            Reason::NothingToRevoke,
        ),
        (
            "an approval once approved",
            code(update(
                "bob",
                &["approvers"],
                (base_spec(), approved),
                approve("bob"),
            )),
            Reason::AlreadyApproved,
        ),
        (
            "one policy too many",
            code(policy_create(&role, 30)),
            Reason::PolicyLimit,
        ),
        (
            "a policy spec that cannot work (create)",
            code(policy_create(
                &ap(json!({"type": "Role", "approvalType": "Auto"})),
                0,
            )),
            Reason::InvalidPolicy,
        ),
        (
            "a policy spec that cannot work (update)",
            code(policy_update(&ap(
                json!({"type": "RoleGroup", "approvalType": "Auto"}),
            ))),
            Reason::InvalidPolicy,
        ),
        (
            "an object that does not decode",
            code(admit_access_policy(&undecodable, || 0)),
            Reason::MalformedObject,
        ),
        (
            "an update without its old object",
            code(admit_elevation_request(
                &er_request(
                    "UPDATE",
                    "alice",
                    &[],
                    er_object(base_spec(), json!({})),
                    Value::Null,
                ),
                Pass::Validating,
                |_| None::<AccessPolicy>,
                None,
                OPERATOR,
            )),
            Reason::MalformedObject,
        ),
        (
            "a task that impersonates, without the opt-in",
            code(policy_update(&task_policy(
                "imp",
                &["impersonate"],
                "",
                &["users"],
                &[],
            ))),
            Reason::GrantsImpersonation,
        ),
        (
            "a task that binds roles, without the opt-in",
            code(policy_update(&task_policy(
                "binder",
                &["bind"],
                "rbac.authorization.k8s.io",
                &["clusterroles"],
                &["prod"],
            ))),
            Reason::GrantsPrivilegeEscalation,
        ),
        (
            "a call through a grant that would outlive it",
            code(crate::persistence::persistence_verdict(
                &delete_deploy(Some("prod"), Some("web")),
                crate::persistence::Lasting::KubepamsOwn,
                &[crate::persistence::ActiveGrant {
                    request: "r1",
                    scope: &crate::lifecycle::scope::snapshot("p", &guarded.spec, Some("prod"))
                        .unwrap(),
                    until: now() + chrono::TimeDelta::hours(1),
                    allow_persistence: true,
                }],
                false,
                now(),
            )),
            Reason::PersistentAccess,
        ),
        (
            "a policy scoped to kubepam's namespace",
            code(policy_update(&task_policy(
                "own",
                &["delete"],
                "apps",
                &["deployments"],
                &["kubepam-system"],
            ))),
            Reason::KubepamNamespace,
        ),
        (
            "an owner reference added by an approver",
            code(metadata_verdict(
                "bob",
                &["approvers"],
                json!({"name": "r1"}),
                json!({"name": "r1", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "5f1c1f7e-0000-4000-8000-000000000001"}]}),
            )),
            Reason::MetadataReserved,
        ),
        (
            "a body that is not a review",
            parse_review(b"not json").err().map(|e| e.reason()),
            Reason::MalformedReview,
        ),
        (
            "a review without a request",
            parse_review(br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#)
                .err()
                .map(|e| e.reason()),
            Reason::MalformedReview,
        ),
        (
            "a guarded operation without a grant",
            guard_code(guard(
                &delete_deploy(Some("prod"), Some("web")),
                &alice,
                [&guarded],
                [],
                Some(&control(true, &[])),
                now(),
            )),
            Reason::NoGrant,
        ),
        (
            "a guarded operation whose grant has too many records waiting for the chain",
            guard_code(guard(
                &delete_deploy(Some("prod"), Some("web")),
                &alice,
                [&guarded],
                [&with_records_waiting(approved_request(
                    "r-busy",
                    "alice",
                    guarded.metadata.name.as_deref().unwrap(),
                    Some("prod"),
                    &guarded,
                    now() + TimeDelta::hours(1),
                ))],
                Some(&control(true, &[])),
                now(),
            )),
            Reason::AuditBacklog,
        ),
        (
            "a release by an approver",
            code(update(
                "bob",
                &["approvers"],
                (
                    base_spec(),
                    json!({"phase": "Approved", "approverGroup": "approvers"}),
                ),
                with_reviews(json!({"bob": {"decision": "Release"}})),
            )),
            Reason::ReleaseNotYours,
        ),
        (
            "a release while pending",
            code(update(
                "alice",
                &[],
                (base_spec(), pending()),
                with_reviews(json!({"alice": {"decision": "Release"}})),
            )),
            Reason::NothingToRelease,
        ),
        (
            "a reason without a ticket",
            code(super::time_rules::fits("fix", json!({}), None)),
            Reason::ReasonMismatch,
        ),
        (
            "one request too many",
            code(super::time_rules::over_quota()),
            Reason::QuotaExceeded,
        ),
        (
            "a window booked too far ahead",
            code(super::time_rules::fits(
                "INC-1",
                json!({"startAt": "2025-06-30T12:00:00Z"}),
                None,
            )),
            Reason::InvalidSchedule,
        ),
        (
            "an extension of a request that does not exist",
            code(super::time_rules::fits(
                "INC-1",
                json!({"extends": "gone"}),
                None,
            )),
            Reason::InvalidExtension,
        ),
    ]
    .into_iter()
    .chain(
        super::routing_rules::refusal_scenarios()
            .into_iter()
            .map(|(scenario, verdict, want)| (scenario, code(verdict), want)),
    )
    .collect::<Vec<_>>();
    for (scenario, got, want) in &table {
        assert_eq!(*got, Some(*want), "{scenario}");
    }
    let covered: std::collections::BTreeSet<Reason> = table.iter().map(|(_, _, r)| *r).collect();
    let missing: Vec<Reason> = Reason::ALL
        .into_iter()
        .filter(|r| !covered.contains(r) && *r != Reason::NotReady)
        .collect();
    assert!(missing.is_empty(), "no scenario for {missing:?}");
}
