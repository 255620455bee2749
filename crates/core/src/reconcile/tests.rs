//! The reconcile plan: its order is what keeps a grant safe.

use super::*;
use crate::api::{LastingObject, ReviewDecision};
use crate::lifecycle::tests::{TASK_MANUAL, at, control, policy, request, with_reviews};
use proptest::prelude::*;

const CONTROL: &str = "{defaultApproverGroup: pam-approvers}";

fn observe<'a>(
    request: &'a ElevationRequest,
    policy: Option<&'a AccessPolicy>,
    control: Option<&'a PrivilegedAccessControl>,
    cached: &'a [RbacObjectRef],
    now: DateTime<Utc>,
) -> Observed<'a> {
    Observed {
        request,
        policy,
        control,
        kubepam_namespace: "kubepam-system",
        cached,
        extended: None,
        siblings: &[],
        now,
    }
}

fn time(at: DateTime<Utc>) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    serde_json::from_value(serde_json::json!(at.to_rfc3339())).unwrap()
}

fn position(plan: &Plan, wanted: impl Fn(&Step) -> bool) -> Option<usize> {
    plan.steps.iter().position(wanted)
}

fn is_apply(step: &Step) -> bool {
    matches!(step, Step::ApplyRbac(_))
}

fn is_announce(step: &Step) -> bool {
    matches!(step, Step::Announce(_))
}

/// A request approved by bob at `at(10)`, as status recorded it.
fn approved() -> (ElevationRequest, AccessPolicy, PrivilegedAccessControl) {
    let policy = policy(TASK_MANUAL);
    let control = with_head(control(CONTROL));
    let request = with_reviews(request(""), &[("bob", ReviewDecision::Approve)]);
    let first = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(10),
    ));
    let mut request = request;
    request.status = Some(first.status);
    request.status.as_mut().unwrap().rbac_objects = granted_objects(&request, &policy);
    // Added before any object of the grant.
    request.metadata.finalizers = Some(vec![crate::grant::FINALIZER.to_owned()]);
    (request, policy, control)
}

/// The chain has taken every record of the request so far.
fn chained(request: &mut ElevationRequest) {
    let status = request.status.as_mut().unwrap();
    let sealed: Vec<(String, u64)> = audit::trail::pending(Some(status))
        .iter()
        .zip(1..)
        .map(|(entry, sequence)| (entry.id.clone(), sequence))
        .collect();
    audit::trail::mark_sealed(status, &sealed);
}

/// The control once the chain's head is past every record of these tests (no sink: sealed is
/// all there is to wait for).
fn with_head(mut control: PrivilegedAccessControl) -> PrivilegedAccessControl {
    control.status.get_or_insert_default().audit = Some(crate::api::AuditStatus {
        head: Some(crate::api::AuditHead {
            sequence: 1000,
            digest: "d".repeat(64),
            sealed_at: None,
        }),
        ..crate::api::AuditStatus::default()
    });
    control
}

fn granted_objects(request: &ElevationRequest, policy: &AccessPolicy) -> Vec<RbacObjectRef> {
    let plan = plan(&observe(
        request,
        Some(policy),
        Some(&control(CONTROL)),
        &[],
        at(11),
    ));
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::ApplyRbac(desired) => Some(desired.object_refs()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a grant: {:?} {:?}", plan.steps, plan.status))
}

#[test]
fn an_approval_adds_the_finalizer_then_records_then_grants_then_announces() {
    let policy = policy(TASK_MANUAL);
    let control = with_head(control(CONTROL));
    let request = with_reviews(request(""), &[("bob", ReviewDecision::Approve)]);
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(10),
    ));
    assert_eq!(plan.status.phase, Some(Phase::Approved));
    let finalizer = position(&plan, |s| *s == Step::AddFinalizer).unwrap();
    let recorded = position(&plan, |s| *s == Step::WriteStatus).unwrap();
    let granted = position(&plan, is_apply).unwrap();
    let announced = position(&plan, is_announce).unwrap();
    assert!(
        finalizer < granted,
        "the finalizer exists before any RBAC object: {:?}",
        plan.steps
    );
    assert!(
        recorded < granted,
        "rights come only after the decision is recorded: {:?}",
        plan.steps
    );
    assert!(recorded < announced, "{:?}", plan.steps);
    // The Task's generated role binds nobody: it is made while the decision is written.
    let roles = position(&plan, |s| matches!(s, Step::PrepareRoles(_))).unwrap();
    assert!(
        finalizer < roles && roles + 1 == recorded,
        "{:?}",
        plan.steps
    );
    // What status may say the grant holds is recorded only after the apply made it.
    let recorded_objects = position(&plan, |s| *s == Step::RecordApplied).unwrap();
    assert!(granted < recorded_objects);
    assert!(plan.status.rbac_objects.is_empty(), "nothing made yet");
    assert_eq!(
        plan.steps.last(),
        Some(&Step::Announce(plan.transition.clone().unwrap()))
    );
}

#[test]
fn a_revoke_prunes_before_the_record_and_the_finalizer_go() {
    let (mut request, policy, control) = approved();
    request.spec.reviews.insert(
        "carol".into(),
        crate::api::Review {
            decision: ReviewDecision::Revoke,
            comment: None,
        },
    );
    let cached = request.status.as_ref().unwrap().rbac_objects.clone();
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &cached,
        at(60),
    ));
    assert_eq!(plan.status.phase, Some(Phase::Revoked), "{plan:#?}");
    let pruned = position(&plan, |s| *s == Step::Prune(Keep::Nothing)).unwrap();
    let recorded = position(&plan, |s| *s == Step::WriteStatus).unwrap();
    assert!(pruned < recorded, "rights go before the record says so");
    assert!(position(&plan, is_apply).is_none());
    assert!(
        !plan.steps.contains(&Step::ReportLeftovers),
        "a grant ended, nothing left over"
    );
    // The finalizer stays until the revocation's record is on the chain.
    assert!(!plan.steps.contains(&Step::RemoveFinalizer));
    assert_eq!(plan.requeue_after, Some(AUDIT_EXPORT_RECHECK));
    request.status = Some(plan.status);
    request.status.as_mut().unwrap().rbac_objects.clear();
    chained(&mut request);
    let later = super::plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(61),
    ));
    assert!(later.steps.contains(&Step::RemoveFinalizer), "{later:#?}");
}

#[test]
fn expiry_at_the_deadline_prunes_and_ends() {
    let (request, policy, control) = approved();
    let until = request.status.as_ref().unwrap().granted_until.unwrap();
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        until,
    ));
    assert_eq!(plan.status.phase, Some(Phase::Expired));
    assert_eq!(plan.steps.first(), Some(&Step::Prune(Keep::Nothing)));
}

/// An ended request that holds nothing and owes nothing is labelled settled
/// [`SETTLE_AFTER`] its last transition, and not before: until then the plan
/// says when to look again.
#[test]
fn an_ended_request_is_settled_once_nothing_is_left_to_do() {
    let (request, policy, control) = approved();
    let until = request.status.as_ref().unwrap().granted_until.unwrap();
    let cached = request.status.as_ref().unwrap().rbac_objects.clone();
    let ended = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &cached,
        until,
    ));
    assert_eq!(ended.status.phase, Some(Phase::Expired));
    assert!(
        !ended.steps.contains(&Step::Settle),
        "it still held objects"
    );
    let mut request = request;
    request.status = Some(ended.status.clone());
    request.status.as_mut().unwrap().rbac_objects.clear();
    chained(&mut request);

    let soon = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        until + TimeDelta::seconds(1),
    ));
    assert!(!soon.steps.contains(&Step::Settle));
    assert_eq!(
        soon.requeue_after,
        (SETTLE_AFTER - TimeDelta::seconds(1)).to_std().ok(),
        "looks again when it is due"
    );

    let due = until + SETTLE_AFTER;
    let settled = plan(&observe(&request, Some(&policy), Some(&control), &[], due));
    assert_eq!(settled.steps.last(), Some(&Step::Settle), "{settled:#?}");
    assert_eq!(settled.requeue_after, None);

    // Objects still labelled as its grant go first; settled on a later pass.
    let left = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &cached,
        due,
    ));
    assert!(!left.steps.contains(&Step::Settle));

    // A notification still owed keeps it watched (the delivery controller needs it).
    let mut owing = request.clone();
    owing.status.as_mut().unwrap().notifications.push(
        serde_json::from_value(serde_json::json!({
            "id": "expired.requester.mail", "event": "Expired", "audience": "Requester",
            "recipient": "alice", "sink": "mail", "createdAt": "2025-01-01T00:00:00Z",
            "state": "Pending",
        }))
        .unwrap(),
    );
    let owes = plan(&observe(&owing, Some(&policy), Some(&control), &[], due));
    assert!(!owes.steps.contains(&Step::Settle));

    // Settled already (an administrator may take the label off: then it is settled again).
    request
        .metadata
        .labels
        .get_or_insert_default()
        .insert(LABEL_SETTLED.into(), "true".into());
    let again = plan(&observe(&request, Some(&policy), Some(&control), &[], due));
    assert!(!again.steps.contains(&Step::Settle));
}

/// Requests that can still change are never settled, whatever the time.
#[test]
fn pending_and_approved_requests_are_never_settled() {
    let (request, policy, control) = approved();
    let cached = request.status.as_ref().unwrap().rbac_objects.clone();
    let live = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &cached,
        at(20) + SETTLE_AFTER,
    ));
    assert_eq!(live.status.phase, Some(Phase::Approved));
    assert!(!live.steps.contains(&Step::Settle));
    let pending = crate::lifecycle::tests::request("");
    let waiting = plan(&observe(
        &pending,
        Some(&policy),
        Some(&control),
        &[],
        at(1) + SETTLE_AFTER,
    ));
    assert_eq!(waiting.status.phase, Some(Phase::Pending));
    assert!(!waiting.steps.contains(&Step::Settle));
}

#[test]
fn a_deleted_request_prunes_before_its_finalizer_goes() {
    let (mut request, policy, control) = approved();
    request.metadata.deletion_timestamp = Some(time(at(30)));
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(30),
    ));
    assert_eq!(
        plan.steps,
        vec![Step::Prune(Keep::Nothing)],
        "records unsealed"
    );
    assert_eq!(plan.requeue_after, Some(AUDIT_EXPORT_RECHECK));
    chained(&mut request);
    let plan = super::plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(31),
    ));
    assert_eq!(
        plan.steps,
        vec![Step::Prune(Keep::Nothing), Step::RemoveFinalizer]
    );
}

#[test]
fn a_grant_in_force_is_checked_and_repairs_are_reported_without_a_transition() {
    let (request, policy, control) = approved();
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(30),
    ));
    assert!(plan.transition.is_none());
    assert!(position(&plan, is_apply).is_some(), "checked every time");
    assert!(plan.steps.contains(&Step::ReportRepair));
    assert!(!plan.steps.iter().any(is_announce));
    assert_eq!(
        plan.status.rbac_objects,
        request.status.as_ref().unwrap().rbac_objects,
        "status keeps what it recorded"
    );
}

#[test]
fn objects_labelled_as_a_pending_requests_are_removed_and_reported() {
    let policy = policy(TASK_MANUAL);
    let control = control(CONTROL);
    let mut request = request("");
    let first = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(1),
    ));
    request.status = Some(first.status);
    let planted = vec![RbacObjectRef {
        kind: "RoleBinding".into(),
        name: "kubepam-grant-x".into(),
        namespace: Some("prod".into()),
        uid: None,
    }];
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &planted,
        at(2),
    ));
    assert_eq!(
        &plan.steps[..3],
        &[
            Step::Prune(Keep::Nothing),
            Step::ReportLeftovers,
            Step::WriteStatus
        ]
    );
}

#[test]
fn what_a_grant_left_behind_is_marked_reported_in_the_write_then_reported() {
    let (mut request, policy, mut control) = approved();
    control.spec.remove_persistence = true;
    let status = request.status.as_mut().unwrap();
    status.lasting_objects.push(LastingObject {
        time: at(20),
        api_group: "rbac.authorization.k8s.io".into(),
        version: "v1".into(),
        resource: "rolebindings".into(),
        kind: "RoleBinding".into(),
        namespace: Some("prod".into()),
        name: "stay".into(),
        uid: "u1".into(),
        removed: false,
        reported: false,
        unverified: false,
    });
    let until = status.granted_until.unwrap();
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        until,
    ));
    let removed = position(&plan, |s| matches!(s, Step::RemoveLasting { .. })).unwrap();
    let written = position(&plan, |s| *s == Step::WriteStatus).unwrap();
    let reported = position(&plan, |s| matches!(s, Step::ReportLasting { .. })).unwrap();
    assert!(removed < written && written < reported, "{:?}", plan.steps);
    assert!(plan.status.lasting_objects.iter().all(|o| o.reported));
    // Reported once: the next reconcile finds nothing fresh.
    let mut ended = request.clone();
    ended.status = Some(plan.status.clone());
    let again = super::plan(&observe(&ended, Some(&policy), Some(&control), &[], until));
    assert!(
        !again
            .steps
            .iter()
            .any(|s| matches!(s, Step::ReportLasting { .. }))
    );
}

#[test]
fn the_transition_and_its_notifications_are_in_the_same_write() {
    let policy = policy(TASK_MANUAL);
    let control = control(
        "{defaultApproverGroup: pam-approvers, notifications: {sinks: [{name: chat, webhook: {url: 'https://chat.example.com/hooks/pam'}}], approverRoutes: [{group: sre-leads, sink: chat}]}}",
    );
    let request = request("");
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(0),
    ));
    assert!(plan.transition.is_some());
    assert!(
        !plan.status.notifications.is_empty(),
        "the outbox is written with the transition: {plan:#?}"
    );
    let written = position(&plan, |s| *s == Step::WriteStatus).unwrap();
    let announced = position(&plan, is_announce).unwrap();
    assert!(written < announced);
}

#[test]
fn a_grant_that_cannot_be_built_says_why_once_and_waits_quietly() {
    // Only a hand-made object can get here (the CRD refuses such a
    // namespace): an Auto policy whose scope names no namespace name.
    let policy = policy(
        "{type: Task, approvalType: Auto, scope: {namespaces: [Not_A_Namespace]}, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}",
    );
    let control = control(CONTROL);
    let mut request = request("  namespace: Not_A_Namespace");
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(10),
    ));
    assert!(position(&plan, is_apply).is_none(), "{plan:#?}");
    assert!(plan.transition.is_none(), "no transition is written");
    assert_eq!(plan.steps.len(), 2, "{:?}", plan.steps);
    assert_eq!(plan.steps[0], Step::WriteStatus);
    assert!(matches!(plan.steps[1], Step::ReportInvalidGrant { .. }));
    let blocked = find_condition(&plan.status.conditions, CONDITION_GRANT_BLOCKED).unwrap();
    assert_eq!(blocked.reason, REASON_INVALID_GRANT);
    assert!(
        blocked.message.contains("Not_A_Namespace"),
        "{}",
        blocked.message
    );
    assert!(
        plan.requeue_after
            .is_some_and(|after| after <= INVALID_GRANT_RECHECK)
    );
    // Looked at again: said once.
    request.status = Some(plan.status);
    let again = super::plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(40),
    ));
    assert_eq!(again.steps, vec![Step::WriteStatus]);
}

#[test]
fn a_collision_blocks_the_grant_reports_once_and_looks_again() {
    let policy = policy(TASK_MANUAL);
    let control = with_head(control(CONTROL));
    let request = with_reviews(request(""), &[("bob", ReviewDecision::Approve)]);
    let plan = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(10),
    ));
    let found = RbacObjectRef {
        kind: "RoleBinding".into(),
        name: "kubepam-grant-0b4c".into(),
        namespace: Some("prod".into()),
        uid: Some("someone-elses".into()),
    };
    let blocked = plan.after_collision(&plan.status, &found, at(10));
    assert_eq!(
        find_condition(&blocked.status.conditions, CONDITION_GRANT_BLOCKED)
            .unwrap()
            .reason,
        REASON_NAME_COLLISION
    );
    assert_eq!(blocked.requeue_after, Some(COLLISION_RETRY));
    assert_eq!(blocked.steps[0], Step::WriteStatus);
    assert!(matches!(blocked.steps[1], Step::ReportCollision { .. }));
    assert!(
        blocked.steps.iter().any(is_announce),
        "the approval is still announced"
    );
    let condition = find_condition(&blocked.status.conditions, CONDITION_GRANT_BLOCKED).unwrap();
    assert_eq!(condition.reason, "NameCollision");
    // Looked at again: already reported, so only the write.
    let again = plan.after_collision(&blocked.status, &found, at(40));
    assert!(
        !again
            .steps
            .iter()
            .any(|s| matches!(s, Step::ReportCollision { .. }))
    );
}

#[test]
fn repairs_count_missing_objects_only_once_the_cache_has_caught_up() {
    let (request, _, _) = approved();
    let status = request.status.clone().unwrap();
    let recorded = status.rbac_objects.clone();
    let decided = status.decided_at.unwrap();
    assert_eq!(repair_found(&status, &recorded, 1, 0, 0, decided), None);
    assert_eq!(
        repair_found(&status, &recorded, 1, 0, 0, decided + TimeDelta::seconds(6)),
        Some(Repair {
            restored: 1,
            extra: 0
        })
    );
    assert_eq!(
        repair_found(&status, &recorded, 0, 1, 2, decided).map(|d| d.note()),
        Some(
            "restored 1 RBAC object(s) of the grant that were edited or deleted by hand; \
             removed 2 RBAC object(s) labelled as part of the grant that are not"
                .to_owned()
        )
    );
    // A grant made or changed on purpose is no repair.
    assert_eq!(
        repair_found(&status, &[], 3, 0, 0, decided + TimeDelta::hours(1)),
        None
    );
}

proptest! {
    /// Whatever the reviews and the time, the safety order holds.
    #[test]
    fn the_safety_order_holds_for_any_reviews_and_time(
        approvals in proptest::collection::vec((0usize..4, 0usize..4), 0..4),
        seconds in 0i64..(30 * 3600),
        cached in 0usize..2,
        deleting in any::<bool>(),
    ) {
        let people = ["bob", "carol", "alice", "dave"];
        let decisions = [ReviewDecision::Approve, ReviewDecision::Deny, ReviewDecision::Revoke, ReviewDecision::Approve];
        let policy = policy(TASK_MANUAL);
        let control = control(CONTROL);
        let mut request = request("");
        let mut now = at(0);
        let mut cached_objects = Vec::new();
        for (who, what) in approvals {
            request = with_reviews(request, &[(people[who], decisions[what])]);
            now += TimeDelta::seconds(seconds / 4);
            let step = plan(&observe(&request, Some(&policy), Some(&control), &cached_objects, now));
            if step.steps.iter().any(is_apply) {
                cached_objects = granted_objects(&request, &policy);
            }
            request.status = Some(step.status);
        }
        if deleting {
            request.metadata.deletion_timestamp = Some(time(now));
        }
        let cached = if cached == 1 { cached_objects } else { Vec::new() };
        let plan = plan(&observe(&request, Some(&policy), Some(&control), &cached, now));
        let first = |f: &dyn Fn(&Step) -> bool| position(&plan, f);
        let last = |f: &dyn Fn(&Step) -> bool| plan.steps.iter().rposition(f);
        if let Some(apply) = first(&is_apply) {
            prop_assert!(first(&|s| *s == Step::AddFinalizer).is_some_and(|f| f < apply));
            if plan.transition.is_some() {
                prop_assert!(first(&|s| *s == Step::WriteStatus).is_some_and(|w| w < apply));
            }
            prop_assert!(!plan.steps.contains(&Step::RemoveFinalizer));
        }
        if let Some(roles) = first(&|s| matches!(s, Step::PrepareRoles(_))) {
            // Only with the finalizer in place, and carried out beside the status write.
            prop_assert!(first(&|s| *s == Step::AddFinalizer).is_some_and(|f| f < roles));
            prop_assert_eq!(plan.steps.get(roles + 1), Some(&Step::WriteStatus));
            prop_assert!(first(&is_apply).is_some_and(|apply| roles < apply));
        }
        if let Some(release) = first(&|s| *s == Step::RemoveFinalizer) {
            prop_assert!(first(&|s| *s == Step::Prune(Keep::Nothing)).is_none_or(|p| p < release));
            prop_assert!(first(&is_apply).is_none());
        }
        if let (Some(prune), Some(write)) = (first(&|s| *s == Step::Prune(Keep::Nothing)), last(&|s| *s == Step::WriteStatus)) {
            prop_assert!(prune < write, "rights go before the record: {:?}", plan.steps);
        }
        if let Some(announce) = first(&is_announce) {
            prop_assert!(first(&|s| *s == Step::WriteStatus).is_some_and(|w| w < announce));
        }
        if let Some(settle) = first(&|s| *s == Step::Settle) {
            // Only an ended request that holds and owes nothing leaves the watch, last.
            prop_assert!(plan.status.phase.is_some_and(Phase::is_final));
            prop_assert!(plan.status.rbac_objects.is_empty() && cached.is_empty());
            prop_assert!(first(&|s| matches!(s, Step::Prune(_))).is_none());
            prop_assert_eq!(settle, plan.steps.len() - 1);
        }
    }
}

/// A booked window opening is said once, after the status that records it and the rights.
#[test]
fn a_booked_window_opening_is_reported_once_after_its_record() {
    let policy = policy(TASK_MANUAL);
    let control = control(CONTROL);
    let request = request(&format!(
        "  startAt: '{}'\n  duration: 1h",
        at(7200).to_rfc3339()
    ));
    let request = with_reviews(request, &[("bob", ReviewDecision::Approve)]);
    let approved = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(60),
    ));
    assert!(
        !approved
            .steps
            .iter()
            .any(|s| matches!(s, Step::ReportWindowOpened(_)))
    );
    assert!(
        !approved.steps.iter().any(is_apply),
        "nothing before the window"
    );
    let mut request = request;
    request.status = Some(approved.status);
    let opening = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(7200),
    ));
    let said = position(&opening, |s| matches!(s, Step::ReportWindowOpened(_)))
        .expect("the opening is reported");
    let recorded = opening
        .steps
        .iter()
        .rposition(|s| *s == Step::WriteStatus)
        .unwrap();
    let applied = position(&opening, is_apply).unwrap();
    assert!(applied < recorded && recorded < said, "{:?}", opening.steps);
    request.status = Some(opening.status);
    let again = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(7300),
    ));
    assert!(
        !again
            .steps
            .iter()
            .any(|s| matches!(s, Step::ReportWindowOpened(_)))
    );
}

fn trail(request: &ElevationRequest) -> Vec<(String, String, Option<String>)> {
    audit::trail::pending(request.status.as_ref())
        .iter()
        .map(|e| {
            (
                e.event_type.trim_start_matches("io.kubepam.").to_owned(),
                e.actor.clone(),
                e.decision.clone(),
            )
        })
        .collect()
}

/// Each step is on the record once, in the write that makes it: the submission, bob's review,
/// the approval; then carol's revoke and the revocation; a plan made again from the same
/// status records nothing more.
#[test]
fn every_step_is_recorded_once_in_the_write_that_makes_it() {
    let (mut request, policy, control) = approved();
    let events = |r: &ElevationRequest| {
        trail(r)
            .into_iter()
            .map(|(t, a, _)| (t, a))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        events(&request),
        [
            ("request.submitted".into(), "alice".into()),
            ("request.reviewed".into(), "bob".into()),
            ("request.approved".into(), "bob".into()),
        ],
        "{:#?}",
        request.status
    );
    let approved_entry = &audit::trail::pending(request.status.as_ref())[2];
    assert!(approved_entry.granted_until.is_some());
    let id = request.status.as_ref().unwrap().request_id.clone().unwrap();
    assert_eq!(approved_entry.id, format!("{id}/3"));

    // Planned again from what was written: nothing new.
    let again = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(20),
    ));
    assert_eq!(
        audit::trail::pending(Some(&again.status)).len(),
        3,
        "{:#?}",
        again.status.audit
    );

    chained(&mut request);
    request.spec.reviews.insert(
        "carol".into(),
        crate::api::Review {
            decision: ReviewDecision::Revoke,
            comment: Some("done".into()),
        },
    );
    let revoked = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        at(60),
    ));
    request.status = Some(revoked.status);
    assert_eq!(
        trail(&request),
        [
            (
                "request.reviewed".into(),
                "carol".into(),
                Some("Revoke".into())
            ),
            ("request.revoked".into(), "carol".into(), None),
        ]
    );
    let audit = request.status.as_ref().unwrap().audit.clone().unwrap();
    assert_eq!(audit.recorded, 5);
    assert_eq!(audit.pending[1].id, format!("{id}/5"));
    assert_eq!(
        audit.pending[1].condition_reason.as_deref(),
        Some("RevokedByApprover")
    );
}

/// Every use is recorded, beyond the last ones the status keeps, and the records' ids never
/// repeat.
#[test]
fn every_use_is_recorded_beyond_the_kept_ones() {
    let (mut request, _, _) = approved();
    chained(&mut request);
    let status = request.status.as_mut().unwrap();
    for n in 0..(crate::api::EXECUTION_LIMIT + 5) {
        crate::lifecycle::record_execution(
            status,
            crate::api::Execution {
                time: at(30),
                verb: "delete".into(),
                resource: "deployments.apps".into(),
                api_group: Some("apps".into()),
                name: Some(format!("web-{n}")),
                namespace: Some("prod".into()),
                user: "alice".into(),
                unverified: false,
            },
        );
    }
    let pending = audit::trail::pending(Some(status));
    assert_eq!(pending.len(), crate::api::EXECUTION_LIMIT + 5);
    assert_eq!(status.last_executions.len(), crate::api::EXECUTION_LIMIT);
    let ids: std::collections::BTreeSet<&str> = pending.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), pending.len());
    let operation = pending[0].operation.as_ref().unwrap();
    assert_eq!(
        (operation.verb.as_str(), operation.name.as_deref()),
        ("delete", Some("web-0"))
    );
}

/// Sealing marks records once; the request may go only when every sink has them.
#[test]
fn a_request_is_exported_once_every_sink_has_its_records() {
    let (mut request, _, _) = approved();
    let status = request.status.as_mut().unwrap();
    let ids: Vec<(String, u64)> = audit::trail::pending(Some(status))
        .iter()
        .zip(41..)
        .map(|(e, s)| (e.id.clone(), s))
        .collect();
    assert!(!audit::trail::exported(Some(status), 1000));
    assert!(audit::trail::mark_sealed(status, &ids));
    assert!(
        !audit::trail::mark_sealed(status, &ids),
        "marking twice changes nothing"
    );
    assert_eq!(status.audit.as_ref().unwrap().last_sequence, Some(43));
    assert!(!audit::trail::exported(Some(status), 42));
    assert!(audit::trail::exported(Some(status), 43));

    let settings: crate::api::AuditSettings = serde_json::from_value(serde_json::json!({
        "sinks": [{"name": "siem", "webhook": {"url": "https://siem.example"}},
                  {"name": "file", "file": {"name": "audit.jsonl"}}]
    }))
    .unwrap();
    let state: crate::api::AuditStatus = serde_json::from_value(serde_json::json!({
        "head": {"sequence": 50, "digest": "d"},
        "sinks": [{"name": "siem", "exportedSequence": 45}, {"name": "gone", "exportedSequence": 1}]
    }))
    .unwrap();
    // The file sink has not taken anything yet.
    assert_eq!(
        audit::trail::exported_through(Some(&settings), Some(&state)),
        0
    );
    assert_eq!(
        audit::trail::exported_through(None, Some(&state)),
        u64::MAX,
        "no sink: sealed is all"
    );
}

/// A use recorded on an ended request after its finalizer went (an admission call that was
/// under way) brings the finalizer back until the record is exported.
#[test]
fn records_made_after_the_end_hold_the_request_again() {
    let (request, policy, control) = approved();
    let until = request.status.as_ref().unwrap().granted_until.unwrap();
    let ended = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        until,
    ));
    let mut request = request;
    request.status = Some(ended.status);
    request.status.as_mut().unwrap().rbac_objects.clear();
    chained(&mut request);
    request.metadata.finalizers = None;
    crate::lifecycle::record_execution(
        request.status.as_mut().unwrap(),
        crate::api::Execution {
            time: until,
            verb: "delete".into(),
            resource: "deployments".into(),
            api_group: Some("apps".into()),
            name: Some("web".into()),
            namespace: Some("prod".into()),
            user: "alice".into(),
            unverified: false,
        },
    );
    let late = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        until + TimeDelta::seconds(1),
    ));
    assert_eq!(late.steps.first(), Some(&Step::AddFinalizer), "{late:#?}");
    assert!(!late.steps.contains(&Step::Settle));
}

/// A live request is told its records are sealed only once they have waited a little and not
/// next to its deadline (each telling is a status write); an ended one at once.
#[test]
fn a_live_request_is_told_of_sealed_records_away_from_its_deadline() {
    let (request, policy, control) = approved();
    let recorded = request
        .status
        .as_ref()
        .unwrap()
        .history
        .last()
        .unwrap()
        .time;
    let until = request.status.as_ref().unwrap().granted_until.unwrap();
    assert!(
        !audit::trail::tell_now(&request, recorded + TimeDelta::seconds(1)),
        "just made"
    );
    assert!(audit::trail::tell_now(
        &request,
        recorded + audit::trail::TELL_LIVE_AFTER
    ));
    assert!(
        !audit::trail::tell_now(&request, until - TimeDelta::seconds(1)),
        "its deadline is near"
    );
    let ended = plan(&observe(
        &request,
        Some(&policy),
        Some(&control),
        &[],
        until,
    ));
    let mut request = request;
    request.status = Some(ended.status);
    assert!(audit::trail::tell_now(&request, until));
}
