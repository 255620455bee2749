//! Unit tests for the state machine, on small inline YAML fixtures.

use super::*;
use crate::api::{AccessPolicy, PolicyType, PrivilegedAccessControl, TaskSpec, find_condition};
use chrono::TimeZone;

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).unwrap()
}

pub(crate) fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

const H: i64 = 3600;

/// A request created at `t0` by alice; `extra` is spliced into its spec.
pub(crate) fn request(extra: &str) -> ElevationRequest {
    let yaml = format!(
        r"
apiVersion: kubepam.io/v1alpha1
kind: ElevationRequest
metadata:
  name: fix-prod
  uid: 0b4c2a2e-4f4e-4e8e-9a55-8a1f0d3c9e01
  generation: 1
  creationTimestamp: '2025-01-01T08:00:00Z'
spec:
  policy: delete-pods
  reason: INC-42 stuck pod
  requester: alice
{extra}"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

pub(crate) fn with_reviews(
    mut r: ElevationRequest,
    reviews: &[(&str, ReviewDecision)],
) -> ElevationRequest {
    for (who, d) in reviews {
        r.spec.reviews.insert(
            (*who).to_owned(),
            Review {
                decision: *d,
                comment: Some(format!("{who} says {d:?}")),
            },
        );
    }
    r
}

/// An accepted policy `delete-pods`; `spec` is its YAML spec.
pub(crate) fn policy(spec: &str) -> AccessPolicy {
    let yaml = format!(
        r"
apiVersion: kubepam.io/v1alpha1
kind: AccessPolicy
metadata: {{name: delete-pods, generation: 1}}
spec: {spec}
status:
  conditions:
  - {{type: Accepted, status: 'True', reason: Accepted, message: ok, lastTransitionTime: '2025-01-01T00:00:00Z', observedGeneration: 1}}
"
    );
    let mut p: AccessPolicy = serde_yaml_ng::from_str(&yaml).unwrap();
    // As the policy controller judged them: each role reads pods.
    let rules: std::collections::BTreeMap<_, _> = p
        .spec
        .role_names()
        .into_iter()
        .map(|role| {
            (
                role,
                vec![crate::api::RoleRule {
                    verbs: vec!["get".into()],
                    api_groups: vec![String::new()],
                    resources: vec!["pods".into()],
                    ..Default::default()
                }],
            )
        })
        .collect();
    p.status.as_mut().unwrap().role_rules = rules;
    p
}

pub(crate) const TASK_MANUAL: &str = "{type: Task, approvalType: Manual, approverGroup: sre-leads, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";
const TASK_AUTO: &str =
    "{type: Task, approvalType: Auto, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";

pub(crate) fn control(spec: &str) -> PrivilegedAccessControl {
    let yaml = format!(
        "apiVersion: kubepam.io/v1alpha1\nkind: PrivilegedAccessControl\nmetadata: {{name: default}}\nspec: {spec}\n"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

pub(crate) fn enabled() -> ControlView {
    ControlView::from_control(Some(&control("{defaultApproverGroup: pam-approvers}")))
}

pub(crate) fn apply(mut r: ElevationRequest, d: &Decision) -> ElevationRequest {
    r.status = Some(d.status.clone());
    r
}

fn approved_condition(d: &Decision) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    find_condition(&d.status.conditions, CONDITION_APPROVED).unwrap()
}

fn assert_final(d: &Decision, phase: Phase, reason: &str) {
    assert_eq!(d.status.phase, Some(phase), "{d:#?}");
    let t = d.transition.as_ref().unwrap();
    assert_eq!(t.to, phase);
    assert_eq!(t.reason, reason);
    assert_eq!(d.grant, None);
    assert_eq!(d.requeue_after, None);
    assert_eq!(approved_condition(d).reason, reason);
    assert_eq!(d.status.history.last().unwrap().action, phase.as_str());
}

/// Approve `r` (manual, by bob) at `now` and return the applied request.
fn approved_request(r: ElevationRequest, p: &AccessPolicy, now: DateTime<Utc>) -> ElevationRequest {
    let r = with_reviews(r, &[("bob", ReviewDecision::Approve)]);
    let d = decide(&r, &PolicyView::Accepted(p), &enabled(), now);
    assert_eq!(d.status.phase, Some(Phase::Approved), "{d:#?}");
    apply(r, &d)
}

#[test]
fn first_sight_fills_in_pending_status() {
    let p = policy(TASK_MANUAL);
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(60));
    let s = &d.status;
    assert_eq!(s.phase, Some(Phase::Pending));
    assert_eq!(
        s.request_id.as_deref(),
        Some("0b4c2a2e-4f4e-4e8e-9a55-8a1f0d3c9e01")
    );
    assert_eq!(s.submitted_at, Some(t0()));
    assert_eq!(s.expires_at, Some(at(24 * H)));
    assert_eq!(s.deadline, Some(at(24 * H)));
    assert_eq!(s.approver_group.as_deref(), Some("sre-leads"));
    assert_eq!(s.approval_type, Some(ApprovalType::Manual));
    assert_eq!(s.required_approvals, Some(1));
    assert_eq!(s.observed_generation, Some(1));
    let t = d.transition.as_ref().unwrap();
    assert_eq!(
        (t.from, t.to, t.reason.as_str(), t.actor.as_str()),
        (None, Phase::Pending, "Submitted", "alice")
    );
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].comment.as_deref(), Some("INC-42 stuck pod"));
    assert_eq!(approved_condition(&d).status, "False");
    assert_eq!(approved_condition(&d).reason, reason::AWAITING_APPROVAL);
    assert_eq!(d.grant, None);
    assert_eq!(
        d.requeue_after,
        Some(std::time::Duration::from_secs((24 * H - 60).unsigned_abs()))
    );
}

#[test]
fn approver_group_falls_back_to_the_control_default() {
    let p = policy("{type: Role, role: admin, approvalType: Manual, requiredApprovals: 2}");
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_eq!(d.status.approver_group.as_deref(), Some("pam-approvers"));
    assert_eq!(d.status.required_approvals, Some(2));
}

#[test]
fn request_id_without_uid_is_derived_from_the_name() {
    let mut r = request("");
    r.metadata.uid = None;
    r.metadata.creation_timestamp = None;
    let p = policy(TASK_MANUAL);
    let a = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(5));
    let b = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(9));
    assert_eq!(a.status.request_id, b.status.request_id);
    assert!(uuid::Uuid::parse_str(a.status.request_id.as_deref().unwrap()).is_ok());
    // Without a creation time, submission is "now".
    assert_eq!(a.status.submitted_at, Some(at(5)));
}

#[test]
fn control_request_ttl_sets_the_deadline() {
    let c = ControlView::from_control(Some(&control("{defaultApproverGroup: g, requestTTL: 2h}")));
    let p = policy(TASK_MANUAL);
    let d = decide(&request(""), &PolicyView::Accepted(&p), &c, at(0));
    assert_eq!(d.status.expires_at, Some(at(2 * H)));
}

#[test]
fn pending_expires_at_the_ttl_even_when_disabled() {
    let p = policy(TASK_MANUAL);
    let c = ControlView::from_control(Some(&control("{defaultApproverGroup: g, enabled: false}")));
    let r = apply(
        request(""),
        &decide(&request(""), &PolicyView::Accepted(&p), &c, at(0)),
    );
    let d = decide(&r, &PolicyView::Accepted(&p), &c, at(24 * H - 1));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(approved_condition(&d).reason, reason::CONTROL_DISABLED);
    let d = decide(&r, &PolicyView::Accepted(&p), &c, at(24 * H));
    assert_final(&d, Phase::Expired, reason::REQUEST_TTL_EXCEEDED);
    assert_eq!(d.transition.unwrap().actor, ACTOR_KUBEPAM);
}

#[test]
fn missing_requester_is_denied() {
    let mut r = request("");
    r.spec.requester = None;
    let p = policy(TASK_AUTO);
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_final(&d, Phase::Denied, reason::MISSING_REQUESTER);
    assert_eq!(d.status.decided_by, ["kubepam"]);
    assert_eq!(d.status.decided_at, Some(at(0)));
}

#[test]
fn blank_reason_is_denied() {
    let mut r = request("");
    r.spec.reason = "  ".into();
    let p = policy(TASK_AUTO);
    assert_final(
        &decide(&r, &PolicyView::Accepted(&p), &enabled(), at(0)),
        Phase::Denied,
        reason::MISSING_REASON,
    );
}

/// A request naming no valid policy (written before the schema refused it) is denied at once
/// with the reason, never looked up and never retried: `name?x` once read policy `name`.
#[test]
fn a_policy_name_that_is_no_object_name_is_denied() {
    let p = policy(
        "{type: Task, approvalType: Auto, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}",
    );
    for hostile in [
        "delete-pods?purpose=read-only",
        "delete-pods\nforged log line",
        "../delete-pods",
    ] {
        let mut r = request("");
        r.spec.policy = hostile.to_owned();
        // Even if a lookup went wrong and found a policy, the name alone decides.
        let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(0));
        assert_final(&d, Phase::Denied, reason::INVALID_POLICY_NAME);
        assert!(
            d.transition
                .unwrap()
                .message
                .contains(&format!("{hostile:?}"))
        );
        assert_eq!(d.requeue_after, None);
    }
}

#[test]
fn missing_or_refused_policy_is_denied() {
    let d = decide(&request(""), &PolicyView::Missing, &enabled(), at(0));
    assert_final(&d, Phase::Denied, reason::POLICY_NOT_FOUND);
    let refused = PolicyView::Refused {
        reason: "PolicyLimitExceeded".into(),
        message: "over 30".into(),
    };
    let d = decide(&request(""), &refused, &enabled(), at(0));
    assert_final(&d, Phase::Denied, "PolicyLimitExceeded");
    assert!(d.transition.unwrap().message.contains("over 30"));
}

#[test]
fn unsettled_policy_waits_briefly() {
    let mut p = policy(TASK_AUTO);
    p.status = None;
    let view = PolicyView::from_policy(Some(&p));
    assert!(matches!(view, PolicyView::Unjudged(_)));
    let d = decide(&request(""), &view, &enabled(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(approved_condition(&d).reason, reason::POLICY_NOT_SETTLED);
    assert_eq!(d.requeue_after, Some(UNJUDGED_RETRY));
}

#[test]
fn namespace_must_be_in_the_policy_scope() {
    let p = policy(
        "{type: Role, role: edit, approvalType: Auto, scope: {namespaces: [shop, billing]}}",
    );
    let d = decide(
        &request("  namespace: kube-system\n"),
        &PolicyView::Accepted(&p),
        &enabled(),
        at(0),
    );
    assert_final(&d, Phase::Denied, "NamespaceNotInScope");
    assert!(d.transition.unwrap().message.contains("kube-system"));
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_final(&d, Phase::Denied, "NamespaceNotInScope");
    let d = decide(
        &request("  namespace: shop\n"),
        &PolicyView::Accepted(&p),
        &enabled(),
        at(0),
    );
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert_eq!(d.grant.unwrap().namespaces, ["shop"]);
}

#[test]
fn cluster_wide_policy_narrows_to_the_requested_namespace() {
    let p = policy(TASK_AUTO);
    let d = decide(
        &request("  namespace: shop\n"),
        &PolicyView::Accepted(&p),
        &enabled(),
        at(0),
    );
    let g = d.grant.unwrap();
    assert_eq!(g.namespaces, ["shop"]);
    assert_eq!(g.policy_type, PolicyType::Task);
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0));
    assert!(d.grant.unwrap().namespaces.is_empty());
}

#[test]
fn no_request_narrows_a_grant_to_kubepams_namespace() {
    let p = policy(TASK_AUTO);
    let own = enabled().with_kubepam_namespace("kubepam-system");
    let d = decide(
        &request("  namespace: kubepam-system\n"),
        &PolicyView::Accepted(&p),
        &own,
        at(0),
    );
    assert_final(&d, Phase::Denied, reason::KUBEPAM_NAMESPACE);
    assert_eq!(d.grant, None);
    // Any other namespace, or none, is granted as before.
    let d = decide(
        &request("  namespace: shop\n"),
        &PolicyView::Accepted(&p),
        &own,
        at(0),
    );
    assert_eq!(d.status.phase, Some(Phase::Approved));
}

#[test]
fn durations_are_checked() {
    let p = policy("{type: Role, role: edit, approvalType: Auto, maxDuration: 2h}");
    let d = decide(
        &request("  duration: 4x\n"),
        &PolicyView::Accepted(&p),
        &enabled(),
        at(0),
    );
    assert_final(&d, Phase::Denied, reason::INVALID_DURATION);
    assert!(
        d.transition
            .unwrap()
            .message
            .contains("use a number followed by s, m or h")
    );
    let d = decide(
        &request("  duration: 3h\n"),
        &PolicyView::Accepted(&p),
        &enabled(),
        at(0),
    );
    assert_final(&d, Phase::Denied, reason::DURATION_EXCEEDS_POLICY);
    // The control's 4h default also exceeds 2h.
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_final(&d, Phase::Denied, reason::DURATION_EXCEEDS_POLICY);
    let d = decide(
        &request("  duration: 1h30m\n"),
        &PolicyView::Accepted(&p),
        &enabled(),
        at(0),
    );
    assert_eq!(d.status.granted_until, Some(at(90 * 60)));
}

#[test]
fn default_duration_comes_from_the_control_or_4h() {
    let p = policy(TASK_AUTO);
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_eq!(d.status.granted_until, Some(at(4 * H)));
    let c = ControlView::from_control(Some(&control(
        "{defaultApproverGroup: g, defaultDuration: 30m}",
    )));
    let d = decide(&request(""), &PolicyView::Accepted(&p), &c, at(0));
    assert_eq!(d.status.granted_until, Some(at(30 * 60)));
}

#[test]
fn control_missing_or_disabled_makes_no_grant() {
    let auto = policy(TASK_AUTO);
    let d = decide(
        &request(""),
        &PolicyView::Accepted(&auto),
        &ControlView::Missing,
        at(0),
    );
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.grant, None);
    assert_eq!(approved_condition(&d).reason, reason::CONTROL_MISSING);
    let disabled =
        ControlView::from_control(Some(&control("{defaultApproverGroup: g, enabled: false}")));
    let pending = apply(
        request(""),
        &decide(&request(""), &PolicyView::Accepted(&auto), &disabled, at(0)),
    );
    // Enabling it later approves the Auto request.
    let d = decide(&pending, &PolicyView::Accepted(&auto), &enabled(), at(10));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    let t = d.transition.unwrap();
    assert_eq!(
        (t.from, t.reason.as_str()),
        (Some(Phase::Pending), reason::AUTO_APPROVED)
    );
}

#[test]
fn auto_policy_approves_at_once() {
    let p = policy(TASK_AUTO);
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(30));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    let t = d.transition.as_ref().unwrap();
    assert_eq!(
        (t.from, t.to, t.actor.as_str(), t.reason.as_str()),
        (None, Phase::Approved, "kubepam", "AutoApproved")
    );
    assert_eq!(d.status.decided_at, Some(at(30)));
    assert_eq!(d.status.granted_until, Some(at(30 + 4 * H)));
    assert_eq!(d.status.deadline, d.status.granted_until);
    assert_eq!(
        d.status
            .history
            .iter()
            .map(|h| h.action.as_str())
            .collect::<Vec<_>>(),
        ["Pending", "Approved"]
    );
    let g = d.grant.clone().unwrap();
    assert_eq!(Some(&g), d.status.grant.as_ref());
    assert_eq!(
        g.task,
        Some(TaskSpec {
            verbs: vec!["delete".into()],
            api_groups: vec![String::new()],
            resources: vec!["pods".into()],
            resource_names: None
        })
    );
    assert_eq!(approved_condition(&d).status, "True");
    assert_eq!(
        d.requeue_after,
        Some(std::time::Duration::from_secs(4 * 3600))
    );
}

#[test]
fn requesters_own_review_never_approves() {
    let p = policy(TASK_MANUAL);
    let r = with_reviews(request(""), &[("alice", ReviewDecision::Approve)]);
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    let c = find_condition(&d.status.conditions, CONDITION_REVIEWS_IGNORED).unwrap();
    assert_eq!(c.reason, reason::SELF_REVIEW);
    assert!(c.message.contains("alice"));
    // Nor does the requester's own deny end it.
    let r = with_reviews(request(""), &[("alice", ReviewDecision::Deny)]);
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Pending));
}

#[test]
fn manual_approval_counts_distinct_approvers() {
    let p = policy("{type: Role, role: admin, approvalType: Manual, requiredApprovals: 2}");
    let r = with_reviews(
        request(""),
        &[
            ("carol", ReviewDecision::Approve),
            ("alice", ReviewDecision::Approve),
        ],
    );
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert!(approved_condition(&d).message.contains("1 of 2"));
    let r = with_reviews(apply(r, &d), &[("bob", ReviewDecision::Approve)]);
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(100));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert_eq!(d.status.decided_by, ["bob", "carol"]);
    let t = d.transition.unwrap();
    assert_eq!(
        (t.actor.as_str(), t.reason.as_str()),
        ("bob, carol", reason::MANUAL_APPROVAL)
    );
    assert_eq!(d.grant.unwrap().roles, ["admin"]);
    let last = d.status.history.last().unwrap();
    assert_eq!(
        last.comment.as_deref(),
        Some("bob: bob says Approve; carol: carol says Approve")
    );
}

#[test]
fn any_deny_while_pending_denies() {
    let p = policy(TASK_MANUAL);
    let r = with_reviews(
        request(""),
        &[
            ("bob", ReviewDecision::Approve),
            ("dave", ReviewDecision::Deny),
        ],
    );
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_final(&d, Phase::Denied, reason::DENIED_BY_APPROVER);
    assert_eq!(d.transition.as_ref().unwrap().actor, "dave");
    assert_eq!(d.status.decided_by, ["dave"]);
    assert_eq!(
        d.status.history.last().unwrap().comment.as_deref(),
        Some("dave: dave says Deny")
    );
}

#[test]
fn approved_grant_expires_at_granted_until() {
    let p = policy(TASK_MANUAL);
    let r = approved_request(request(""), &p, at(0));
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(4 * H - 1));
    assert_eq!(d.transition, None);
    assert!(d.grant.is_some());
    assert_eq!(d.requeue_after, Some(std::time::Duration::from_secs(1)));
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(4 * H));
    assert_final(&d, Phase::Expired, reason::GRANT_DURATION_ENDED);
    assert_eq!(d.status.deadline, None);
}

#[test]
fn revoke_by_an_approver_ends_the_grant_but_not_by_the_requester() {
    let p = policy(TASK_MANUAL);
    let r = approved_request(request(""), &p, at(0));
    let own = with_reviews(r.clone(), &[("alice", ReviewDecision::Revoke)]);
    let d = decide(&own, &PolicyView::Accepted(&p), &enabled(), at(60));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert!(d.grant.is_some());
    let revoked = with_reviews(r, &[("carol", ReviewDecision::Revoke)]);
    let d = decide(&revoked, &PolicyView::Accepted(&p), &enabled(), at(60));
    assert_final(&d, Phase::Revoked, reason::REVOKED_BY_APPROVER);
    assert_eq!(d.transition.unwrap().actor, "carol");
    // decidedBy still says who approved.
    assert_eq!(d.status.decided_by, ["bob"]);
}

#[test]
fn deleted_or_refused_policy_revokes() {
    let p = policy(TASK_MANUAL);
    let r = approved_request(request(""), &p, at(0));
    let d = decide(&r, &PolicyView::Missing, &enabled(), at(60));
    assert_final(&d, Phase::Revoked, reason::POLICY_DELETED);
    let refused = PolicyView::Refused {
        reason: "RoleNotFound".into(),
        message: "gone".into(),
    };
    let d = decide(&r, &refused, &enabled(), at(60));
    assert_final(&d, Phase::Revoked, "RoleNotFound");
}

#[test]
fn control_disabled_does_not_end_an_active_grant() {
    let p = policy(TASK_MANUAL);
    let r = approved_request(request(""), &p, at(0));
    for c in [
        ControlView::Missing,
        ControlView::from_control(Some(&control("{defaultApproverGroup: g, enabled: false}"))),
    ] {
        let d = decide(&r, &PolicyView::Accepted(&p), &c, at(60));
        assert_eq!(d.status.phase, Some(Phase::Approved));
        assert!(d.grant.is_some());
        assert_eq!(d.transition, None);
    }
}

#[test]
fn narrowed_policy_shrinks_the_grant_and_widened_never_grows_it() {
    let p = policy("{type: RoleGroup, roles: [view, edit], approvalType: Manual}");
    let r = approved_request(request(""), &p, at(0));
    let narrowed = policy(
        "{type: RoleGroup, roles: [view, admin], approvalType: Manual, scope: {namespaces: [shop]}}",
    );
    let d = decide(&r, &PolicyView::Accepted(&narrowed), &enabled(), at(60));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    let g = d.grant.clone().unwrap();
    assert_eq!(g.roles, ["view"]);
    assert_eq!(g.namespaces, ["shop"]);
    assert!(find_condition(&d.status.conditions, CONDITION_GRANT_NARROWED).is_some());
    // The approval record is kept as it was.
    assert_eq!(d.status.grant.as_ref().unwrap().roles, ["edit", "view"]);
    let widened = policy("{type: RoleGroup, roles: [view, edit, admin], approvalType: Manual}");
    let d = decide(
        &apply(r.clone(), &d),
        &PolicyView::Accepted(&widened),
        &enabled(),
        at(120),
    );
    assert_eq!(d.grant.unwrap().roles, ["edit", "view"]);
    assert!(find_condition(&d.status.conditions, CONDITION_GRANT_NARROWED).is_none());
    let disjoint = policy("{type: RoleGroup, roles: [admin], approvalType: Manual}");
    let d = decide(&r, &PolicyView::Accepted(&disjoint), &enabled(), at(60));
    assert_final(&d, Phase::Revoked, reason::POLICY_NARROWED);
    let other_type = policy("{type: Role, role: view, approvalType: Manual}");
    let d = decide(&r, &PolicyView::Accepted(&other_type), &enabled(), at(60));
    assert_final(&d, Phase::Revoked, reason::POLICY_NARROWED);
}

#[test]
fn narrowed_task_intersects_rules() {
    let p = policy(
        "{type: Task, approvalType: Auto, task: {verbs: ['*'], apiGroups: ['', apps], resources: [pods, deployments]}}",
    );
    let r = apply(
        request(""),
        &decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0)),
    );
    let narrowed = policy(
        "{type: Task, approvalType: Auto, task: {verbs: [delete, get], apiGroups: [''], resources: ['*'], resourceNames: [web-0]}}",
    );
    let d = decide(&r, &PolicyView::Accepted(&narrowed), &enabled(), at(60));
    let task = d.grant.unwrap().task.unwrap();
    assert_eq!(task.verbs, ["delete", "get"]);
    assert_eq!(task.api_groups, [""]);
    assert_eq!(task.resources, ["pods", "deployments"]);
    assert_eq!(task.resource_names, Some(vec!["web-0".to_owned()]));
}

#[test]
fn shorter_max_duration_shortens_the_grant() {
    let p = policy("{type: Role, role: edit, approvalType: Auto}");
    let r = apply(
        request(""),
        &decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0)),
    );
    let capped = policy("{type: Role, role: edit, approvalType: Auto, maxDuration: 1h}");
    let d = decide(&r, &PolicyView::Accepted(&capped), &enabled(), at(60));
    assert_eq!(d.status.granted_until, Some(at(H)));
    assert_eq!(d.requeue_after, Some(std::time::Duration::from_secs(3540)));
    let d = decide(&r, &PolicyView::Accepted(&capped), &enabled(), at(H));
    assert_final(&d, Phase::Expired, reason::GRANT_DURATION_ENDED);
    // A longer maxDuration never lengthens it.
    let long = policy("{type: Role, role: edit, approvalType: Auto, maxDuration: 100h}");
    let d = decide(&r, &PolicyView::Accepted(&long), &enabled(), at(60));
    assert_eq!(d.status.granted_until, Some(at(4 * H)));
}

#[test]
fn approved_without_a_record_fails_closed() {
    let p = policy(TASK_MANUAL);
    let mut r = approved_request(request(""), &p, at(0));
    r.status.as_mut().unwrap().grant = None;
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(60));
    assert_final(&d, Phase::Revoked, reason::GRANT_RECORD_MISSING);
}

#[test]
fn final_phases_never_change() {
    let p = policy(TASK_AUTO);
    let r = apply(
        request(""),
        &decide(&request(""), &PolicyView::Missing, &enabled(), at(0)),
    );
    assert_eq!(r.status.as_ref().unwrap().phase, Some(Phase::Denied));
    let r = with_reviews(r, &[("bob", ReviewDecision::Approve)]);
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(60));
    assert_eq!(Some(&d.status), r.status.as_ref());
    assert_eq!((d.transition, d.grant, d.requeue_after), (None, None, None));
}

#[test]
fn deciding_twice_is_idempotent() {
    let p = policy(TASK_MANUAL);
    let cases = [
        (request(""), PolicyView::Accepted(&p)),
        (
            with_reviews(request(""), &[("bob", ReviewDecision::Approve)]),
            PolicyView::Accepted(&p),
        ),
        (
            with_reviews(request(""), &[("alice", ReviewDecision::Approve)]),
            PolicyView::Accepted(&p),
        ),
        (request(""), PolicyView::Missing),
    ];
    for (r, view) in cases {
        let first = decide(&r, &view, &enabled(), at(7));
        let again = decide(&apply(r, &first), &view, &enabled(), at(7));
        assert_eq!(again.transition, None);
        assert_eq!(again.status, first.status);
        assert_eq!(again.grant, first.grant);
        assert_eq!(again.requeue_after, first.requeue_after);
    }
}

#[test]
fn history_is_capped_at_50() {
    let p = policy(TASK_MANUAL);
    let mut r = apply(
        request(""),
        &decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0)),
    );
    let status = r.status.as_mut().unwrap();
    for i in 0..60 {
        status.history.push(HistoryEntry {
            time: at(i),
            actor: "x".into(),
            action: format!("old-{i}"),
            comment: None,
        });
    }
    let d = decide(&r, &PolicyView::Missing, &enabled(), at(100));
    assert_eq!(d.status.history.len(), HISTORY_LIMIT);
    assert_eq!(d.status.history.last().unwrap().action, "Denied");
}

#[test]
fn a_grant_lasts_its_duration_to_the_millisecond() {
    let p = policy(TASK_AUTO);
    // Microseconds below the millisecond are dropped, never rounded up.
    let now = at(10) + TimeDelta::microseconds(700_999);
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), now);
    let decided = at(10) + TimeDelta::milliseconds(700);
    assert_eq!(d.status.decided_at, Some(decided));
    assert_eq!(
        d.status.granted_until,
        Some(decided + TimeDelta::hours(4)),
        "a 4h grant decided at .700 ends at .700, not at the whole second before"
    );
    // Status keeps the milliseconds through JSON.
    let json = serde_json::to_value(&d.status).unwrap();
    assert_eq!(json["grantedUntil"], "2025-01-01T12:00:10.700Z");
}

/// Forged reports (from callers not proven to be the API server) never push a real use out.
#[test]
fn unverified_uses_never_displace_verified_ones() {
    let use_at = |i: i64, unverified: bool| Execution {
        time: at(i),
        verb: "delete".into(),
        resource: "pods".into(),
        api_group: Some("apps".into()),
        name: Some(format!("web-{i}")),
        namespace: Some("shop".into()),
        user: "alice".into(),
        unverified,
    };
    let mut s = ElevationRequestStatus::default();
    record_execution(&mut s, use_at(0, false));
    for i in 1..40 {
        record_execution(&mut s, use_at(i, true));
    }
    assert_eq!(s.last_executions.len(), EXECUTION_LIMIT);
    assert_eq!(s.last_executions[0], use_at(0, false), "the real use stays");
    for i in 40..80 {
        record_execution(&mut s, use_at(i, false));
    }
    assert!(s.last_executions.iter().all(|e| !e.unverified));
    record_execution(&mut s, use_at(80, true));
    assert!(
        s.last_executions.iter().all(|e| !e.unverified),
        "no room among verified uses"
    );
    assert_eq!(s.execution_count, 81);
}

#[test]
fn executions_are_counted_and_bounded() {
    let mut s = ElevationRequestStatus::default();
    for i in 0..30 {
        record_execution(
            &mut s,
            Execution {
                time: at(i),
                verb: "delete".into(),
                resource: "pods".into(),
                api_group: Some("apps".into()),
                name: Some(format!("web-{i}")),
                namespace: Some("shop".into()),
                user: "alice".into(),
                unverified: false,
            },
        );
    }
    assert_eq!(s.execution_count, 30);
    assert_eq!(s.last_executions.len(), EXECUTION_LIMIT);
    assert_eq!(
        s.last_executions.last().unwrap().name.as_deref(),
        Some("web-29")
    );
}

#[test]
fn policy_view_reads_the_accepted_condition() {
    assert_eq!(PolicyView::from_policy(None), PolicyView::Missing);
    let p = policy(TASK_AUTO);
    assert!(matches!(
        PolicyView::from_policy(Some(&p)),
        PolicyView::Accepted(_)
    ));
    let mut stale = p.clone();
    stale.metadata.generation = Some(2);
    assert!(matches!(
        PolicyView::from_policy(Some(&stale)),
        PolicyView::Unjudged(_)
    ));
    let mut deleting = p.clone();
    deleting.metadata.deletion_timestamp = p
        .status
        .as_ref()
        .map(|s| s.conditions[0].last_transition_time.clone());
    assert_eq!(
        PolicyView::from_policy(Some(&deleting)),
        PolicyView::Missing
    );
    let mut refused = p;
    let c = &mut refused.status.as_mut().unwrap().conditions[0];
    c.status = "False".into();
    c.reason = "PolicyLimitExceeded".into();
    assert!(matches!(
        PolicyView::from_policy(Some(&refused)),
        PolicyView::Refused { reason, .. } if reason == "PolicyLimitExceeded"
    ));
}

#[test]
fn control_view_honours_only_default_and_reports_bad_durations() {
    assert_eq!(ControlView::from_control(None), ControlView::Missing);
    let mut other = control("{defaultApproverGroup: g}");
    other.metadata.name = Some("other".into());
    assert_eq!(
        ControlView::from_control(Some(&other)),
        ControlView::Missing
    );
    let c = ControlView::from_control(Some(&control(
        "{defaultApproverGroup: g, defaultDuration: 4x, requestTTL: 0s, systemAccounts: ['system:serviceaccount:argocd:app']}",
    )));
    let s = c.settings().unwrap();
    assert_eq!(s.default_duration, TimeDelta::hours(4));
    assert_eq!(s.request_ttl, TimeDelta::hours(24));
    assert_eq!(s.problems.len(), 2);
    assert!(s.problems[0].starts_with("defaultDuration: invalid duration \"4x\""));
    assert!(c.is_enabled());
    assert!(c.is_system_account("system:serviceaccount:argocd:app"));
    assert!(!c.is_system_account("alice"));
    assert_eq!(ControlView::Missing.request_ttl(), TimeDelta::hours(24));
    assert_eq!(ControlView::Missing.default_duration(), TimeDelta::hours(4));
}

#[test]
fn enabled_defaults_to_true_and_durations_default() {
    let c = control("{defaultApproverGroup: g}");
    assert!(c.spec.enabled);
    assert_eq!(c.spec.default_duration.as_deref(), Some("4h"));
    assert_eq!(c.spec.request_ttl.as_deref(), Some("24h"));
    let json = serde_json::to_value(&c.spec).unwrap();
    assert_eq!(json["requestTTL"], "24h");
}

#[test]
fn status_round_trips_through_json() {
    let p = policy(TASK_AUTO);
    let d = decide(
        &request("  namespace: shop\n"),
        &PolicyView::Accepted(&p),
        &enabled(),
        at(0),
    );
    let json = serde_json::to_string(&d.status).unwrap();
    assert!(
        json.contains("\"grantedUntil\":\"2025-01-01T12:00:00Z\""),
        "{json}"
    );
    let back: ElevationRequestStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d.status);
}

#[test]
fn a_role_grant_keeps_the_rules_of_its_approval() {
    let mut p = policy("{type: Role, role: scaler, approvalType: Auto}");
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    let approved_rules = d.grant.clone().unwrap().role_rules;
    assert_eq!(approved_rules["scaler"][0].verbs, ["get"]);
    let r = apply(request(""), &d);
    // The role is widened and judged again: the grant in force keeps what was approved.
    p.status.as_mut().unwrap().role_rules.insert(
        "scaler".into(),
        vec![crate::api::RoleRule {
            verbs: vec!["*".into()],
            ..Default::default()
        }],
    );
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(60));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert_eq!(d.grant.unwrap().role_rules, approved_rules);
}

#[test]
fn a_role_whose_rules_were_not_judged_is_not_granted() {
    let mut p = policy("{type: Role, role: scaler, approvalType: Auto}");
    p.status.as_mut().unwrap().role_rules.clear();
    let d = decide(&request(""), &PolicyView::Accepted(&p), &enabled(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.grant, None);
    assert_eq!(approved_condition(&d).reason, reason::POLICY_NOT_SETTLED);
    assert!(approved_condition(&d).message.contains("scaler"));
}
