//! Approval routing: break glass with its review afterwards, and escalation.

use super::tests::{apply, at, enabled, policy, request, t0, with_reviews};
use super::*;
use crate::api::{EscalationStep, find_condition};
use proptest::prelude::*;

const H: i64 = 3600;

const BREAK_GLASS: &str = "{type: Task, approvalType: Manual, approverGroup: sre-leads, breakGlass: {groups: [oncall], maxDuration: 1h}, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";
const ESCALATING: &str = "{type: Task, approvalType: Manual, approverGroup: sre-leads, escalation: [{after: 1h, approverGroup: security}, {after: 30m, approverGroup: ops-leads}], task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";

fn condition<'a>(d: &'a Decision, type_: &str) -> Option<(&'a str, &'a str)> {
    find_condition(&d.status.conditions, type_).map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// An emergency request of alice, approved at `t0` under [`BREAK_GLASS`].
fn emergency_grant(extra: &str) -> (ElevationRequest, AccessPolicy) {
    let p = policy(BREAK_GLASS);
    let r = request(&format!(
        "  emergency: true\n  breakGlassGroup: oncall\n{extra}"
    ));
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), t0());
    assert_eq!(d.status.phase, Some(Phase::Approved), "{d:#?}");
    (apply(r, &d), p)
}

#[test]
fn an_emergency_request_is_approved_at_once_and_owes_a_review() {
    let p = policy(BREAK_GLASS);
    let r = request("  emergency: true\n  breakGlassGroup: oncall\n");
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), t0());
    assert_eq!(d.status.phase, Some(Phase::Approved));
    let t = d.transition.as_ref().unwrap();
    assert_eq!(t.reason, reason::BREAK_GLASS);
    assert_eq!(
        t.actor, "alice",
        "the one who broke the glass is on the record"
    );
    assert_eq!(d.status.decided_by, vec![ACTOR_KUBEPAM.to_owned()]);
    // Without a duration: the shorter of the control's default (4h) and maxDuration (1h).
    assert_eq!(d.status.granted_until, Some(at(H)));
    assert!(d.grant.is_some());
    assert_eq!(
        condition(&d, CONDITION_EMERGENCY),
        Some(("True", reason::BREAK_GLASS))
    );
    assert_eq!(
        condition(&d, CONDITION_REVIEW_REQUIRED),
        Some(("True", reason::AWAITING_REVIEW))
    );
    assert_eq!(d.status.review_due_at, Some(at(24 * H)));
    assert_eq!(d.status.approver_groups, vec!["sre-leads".to_owned()]);
    let last = d.status.history.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("alice", "Approved")
    );
}

#[test]
fn emergency_access_needs_break_glass_and_stays_within_its_max_duration() {
    let plain = policy(super::tests::TASK_MANUAL);
    let r = request("  emergency: true\n  breakGlassGroup: oncall\n");
    let d = decide(&r, &PolicyView::Accepted(&plain), &enabled(), t0());
    assert_eq!(d.status.phase, Some(Phase::Denied));
    assert_eq!(d.transition.unwrap().reason, reason::EMERGENCY_NOT_ALLOWED);

    let p = policy(BREAK_GLASS);
    let long = request("  emergency: true\n  breakGlassGroup: oncall\n  duration: 2h\n");
    let d = decide(&long, &PolicyView::Accepted(&p), &enabled(), t0());
    assert_eq!(d.status.phase, Some(Phase::Denied));
    let t = d.transition.unwrap();
    assert_eq!(t.reason, reason::EMERGENCY_DURATION_EXCEEDED);
    assert!(t.message.contains("at most 1h"), "{}", t.message);

    let short = request("  emergency: true\n  breakGlassGroup: oncall\n  duration: 20m\n");
    let d = decide(&short, &PolicyView::Accepted(&p), &enabled(), t0());
    assert_eq!(d.status.granted_until, Some(at(20 * 60)));
}

#[test]
fn an_emergency_request_must_name_a_break_glass_group() {
    let p = policy(BREAK_GLASS);
    for extra in ["", "  breakGlassGroup: developers\n"] {
        let r = request(&format!("  emergency: true\n{extra}"));
        let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), t0());
        assert_eq!(d.status.phase, Some(Phase::Denied), "{extra:?}");
        let t = d.transition.unwrap();
        assert_eq!(t.reason, reason::EMERGENCY_NOT_ALLOWED);
        assert!(t.message.contains("members of oncall"), "{}", t.message);
    }
}

#[test]
fn a_confirmation_is_recorded_and_the_grant_goes_on() {
    let (r, p) = emergency_grant("");
    // The requester's own verdict counts for nothing.
    let own = with_reviews(r.clone(), &[("alice", ReviewDecision::Confirm)]);
    let d = decide(&own, &PolicyView::Accepted(&p), &enabled(), at(60));
    assert_eq!(
        condition(&d, CONDITION_REVIEW_REQUIRED),
        Some(("True", reason::AWAITING_REVIEW))
    );

    let r = with_reviews(r, &[("bob", ReviewDecision::Confirm)]);
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(60));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert!(d.grant.is_some());
    assert_eq!(d.transition, None);
    assert_eq!(
        condition(&d, CONDITION_REVIEW_REQUIRED),
        Some(("False", reason::EMERGENCY_CONFIRMED))
    );
    let last = d.status.history.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("bob", "Confirmed")
    );
    // Idempotent: deciding again records nothing more.
    let again = decide(&apply(r, &d), &PolicyView::Accepted(&p), &enabled(), at(61));
    assert_eq!(again.status.history.len(), d.status.history.len());
}

#[test]
fn a_rejection_of_an_active_grant_ends_it_at_once() {
    let (r, p) = emergency_grant("");
    let r = with_reviews(
        r,
        &[
            ("bob", ReviewDecision::Reject),
            ("carol", ReviewDecision::Confirm),
        ],
    );
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(60));
    assert_eq!(d.status.phase, Some(Phase::Revoked));
    assert_eq!(d.grant, None);
    let t = d.transition.as_ref().unwrap();
    assert_eq!(
        (t.actor.as_str(), t.reason.as_str()),
        ("bob", reason::EMERGENCY_REJECTED)
    );
    assert_eq!(
        condition(&d, CONDITION_REVIEW_REQUIRED),
        Some(("False", reason::EMERGENCY_REJECTED))
    );
    let actions: Vec<&str> = d.status.history.iter().map(|h| h.action.as_str()).collect();
    assert!(actions.ends_with(&["Rejected", "Revoked"]), "{actions:?}");
}

#[test]
fn an_ended_grant_still_owes_its_review_and_becomes_overdue() {
    let (r, p) = emergency_grant("");
    let ended = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(H));
    assert_eq!(ended.status.phase, Some(Phase::Expired));
    // Looked at again when the review falls due.
    assert_eq!(
        ended.requeue_after,
        Some(std::time::Duration::from_secs(23 * 3600))
    );
    let r = apply(r, &ended);
    let waiting = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(2 * H));
    assert_eq!(waiting.transition, None);
    assert_eq!(
        condition(&waiting, CONDITION_REVIEW_REQUIRED),
        Some(("True", reason::AWAITING_REVIEW))
    );
    let overdue = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(24 * H));
    assert_eq!(
        condition(&overdue, CONDITION_REVIEW_REQUIRED),
        Some(("True", reason::REVIEW_OVERDUE))
    );
    assert_eq!(overdue.requeue_after, None);
    assert!(review_overdue(&overdue.status));

    let r = with_reviews(apply(r, &overdue), &[("bob", ReviewDecision::Reject)]);
    let rejected = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(25 * H));
    assert_eq!(
        rejected.status.phase,
        Some(Phase::Expired),
        "the phase is final"
    );
    assert_eq!(
        condition(&rejected, CONDITION_REVIEW_REQUIRED),
        Some(("False", reason::EMERGENCY_REJECTED))
    );
    assert_eq!(rejected.status.history.last().unwrap().action, "Rejected");
    assert!(!review_pending(&rejected.status));
}

#[test]
fn a_reject_before_the_grant_is_recorded_refuses_it() {
    let p = policy(BREAK_GLASS);
    let r = with_reviews(
        request("  emergency: true\n  breakGlassGroup: oncall\n"),
        &[("bob", ReviewDecision::Reject)],
    );
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), t0());
    assert_eq!(d.status.phase, Some(Phase::Denied));
}

#[test]
fn a_running_emergency_grant_follows_its_policy_as_it_stands() {
    let (r, _) = emergency_grant("");
    // breakGlass.maxDuration lowered to 10m: the grant ends 10m after it began.
    let shorter = policy(&BREAK_GLASS.replace("maxDuration: 1h", "maxDuration: 10m"));
    let d = decide(&r, &PolicyView::Accepted(&shorter), &enabled(), at(60));
    assert_eq!(d.status.granted_until, Some(at(10 * 60)));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    let d = decide(&r, &PolicyView::Accepted(&shorter), &enabled(), at(10 * 60));
    assert_eq!(d.status.phase, Some(Phase::Expired));
    // breakGlass removed: the emergency grant ends at once, and still owes its review.
    let closed = policy(super::tests::TASK_MANUAL);
    let d = decide(&r, &PolicyView::Accepted(&closed), &enabled(), at(60));
    assert_eq!(d.status.phase, Some(Phase::Revoked));
    assert_eq!(d.transition.unwrap().reason, reason::EMERGENCY_NOT_ALLOWED);
    assert!(review_pending(&d.status));
}

#[test]
fn an_emergency_that_cannot_be_granted_soon_expires() {
    let p = policy(BREAK_GLASS);
    let disabled = ControlView::from_control(Some(&super::tests::control(
        "{enabled: false, defaultApproverGroup: pam-approvers}",
    )));
    let r = request("  emergency: true\n  breakGlassGroup: oncall\n");
    let d = decide(&r, &PolicyView::Accepted(&p), &disabled, t0());
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.status.expires_at, Some(at(15 * 60)));
    let d = decide(
        &apply(r, &d),
        &PolicyView::Accepted(&p),
        &enabled(),
        at(15 * 60),
    );
    assert_eq!(d.status.phase, Some(Phase::Expired));
}

#[test]
fn emergency_access_is_never_extended() {
    let (emergency, p) = emergency_grant("");
    let mut extension = request("  extends: fix-prod\n  duration: 1h\n");
    extension.metadata.name = Some("fix-prod-more".to_owned());
    let related = Related {
        extended: Some(&emergency),
        ..Related::default()
    };
    let d = decide_with(
        &extension,
        &PolicyView::Accepted(&p),
        &enabled(),
        &related,
        at(60),
    );
    assert_eq!(d.status.phase, Some(Phase::Denied));
    let t = d.transition.unwrap();
    assert_eq!(t.reason, reason::NOT_EXTENDABLE);
    assert!(
        t.message.contains("file a new emergency request"),
        "{}",
        t.message
    );
}

#[test]
fn escalation_widens_who_may_decide_step_by_step() {
    let p = policy(ESCALATING);
    let r = request("");
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), t0());
    assert_eq!(d.status.approver_groups, vec!["sre-leads".to_owned()]);
    assert_eq!(d.status.escalates_at, Some(at(30 * 60)));
    assert_eq!(
        d.requeue_after,
        Some(std::time::Duration::from_secs(30 * 60))
    );
    assert_eq!(condition(&d, CONDITION_ESCALATED), None);

    let r = apply(r, &d);
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(31 * 60));
    assert_eq!(
        d.status.approver_groups,
        vec!["sre-leads".to_owned(), "ops-leads".to_owned()]
    );
    assert_eq!(d.status.escalates_at, Some(at(H)));
    assert_eq!(
        condition(&d, CONDITION_ESCALATED),
        Some(("True", reason::ESCALATION_STEP_OPENED))
    );
    assert_eq!(d.transition, None);

    let r = with_reviews(apply(r, &d), &[("erin", ReviewDecision::Approve)]);
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(2 * H));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert_eq!(
        d.status.escalates_at, None,
        "nothing escalates once decided"
    );
    assert_eq!(d.status.approver_groups.len(), 3);
}

#[test]
fn an_auto_policy_or_an_emergency_never_escalates() {
    let steps = "escalation: [{after: 1s, approverGroup: ops-leads}], ";
    let p = policy(&BREAK_GLASS.replacen('{', &format!("{{{steps}"), 1));
    let r = request("  emergency: true\n  breakGlassGroup: oncall\n");
    let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), at(10));
    assert_eq!(d.status.approver_groups, vec!["sre-leads".to_owned()]);
    assert_eq!(d.status.escalates_at, None);
}

fn step(after: &str, group: &str) -> EscalationStep {
    EscalationStep {
        after: after.to_owned(),
        approver_group: group.to_owned(),
    }
}

proptest! {
    /// Whatever the requested duration, the control's default and the policy's limits, an
    /// emergency grant never lasts longer than `breakGlass.maxDuration`.
    #[test]
    fn an_emergency_grant_never_exceeds_its_max_duration(
        requested in proptest::option::of(1u32..20_000),
        max in 1u32..20_000,
        default in 1u32..20_000,
        policy_max in proptest::option::of(1u32..20_000),
        now in 0i64..100,
    ) {
        let policy_max = policy_max.map_or_else(String::new, |m| format!("maxDuration: {m}s, "));
        let p = policy(&format!(
            "{{type: Task, approvalType: Manual, {policy_max}breakGlass: {{groups: [oncall], maxDuration: {max}s}}, task: {{verbs: [delete], apiGroups: [''], resources: [pods]}}}}"
        ));
        let duration = requested.map_or_else(String::new, |d| format!("  duration: {d}s\n"));
        let r = request(&format!("  emergency: true\n  breakGlassGroup: oncall\n{duration}"));
        let control = ControlView::from_control(Some(&super::tests::control(&format!(
            "{{defaultApproverGroup: pam-approvers, defaultDuration: {default}s}}"
        ))));
        let d = decide(&r, &PolicyView::Accepted(&p), &control, at(now));
        if d.status.phase == Some(Phase::Approved) {
            let lasts = d.status.granted_until.unwrap() - d.status.decided_at.unwrap();
            prop_assert!(lasts <= TimeDelta::seconds(i64::from(max)), "{lasts:?} > {max}s");
        }
    }

    /// Time only widens who may decide: a group that may decide never loses that while the
    /// policy stays the same.
    #[test]
    fn escalation_never_shrinks_the_eligible_groups(
        steps in proptest::collection::vec((0u32..7200, 0usize..4), 0..6),
        t1 in 0i64..10_000,
        later in 0i64..10_000,
    ) {
        let groups = ["ops-leads", "security", "sre-leads", "cto"];
        let steps: Vec<EscalationStep> = steps
            .iter()
            .map(|(after, g)| step(&format!("{after}s"), groups[*g]))
            .collect();
        let (before, next) = approver_groups_at("sre-leads", &steps, t0(), at(t1));
        let (after, _) = approver_groups_at("sre-leads", &steps, t0(), at(t1 + later));
        prop_assert_eq!(&before[0], "sre-leads");
        for g in &before {
            prop_assert!(after.contains(g), "{g} lost between {t1}s and {}s", t1 + later);
        }
        if let Some(next) = next {
            prop_assert!(next > at(t1));
            let (at_next, after_next) = approver_groups_at("sre-leads", &steps, t0(), next);
            prop_assert!(after_next.is_none_or(|n| n > next));
            prop_assert!(at_next.len() >= before.len());
        }
    }

    /// Once an approver's Reject of an emergency request is recorded, whatever else happens
    /// (more reviews, time passing), it is never Approved again.
    #[test]
    fn a_rejected_emergency_request_is_never_approved_again(
        reject_after in 0usize..4,
        events in proptest::collection::vec((0usize..4, 0usize..5, 0i64..4000), 1..10),
    ) {
        let p = policy(BREAK_GLASS);
        let people = ["bob", "carol", "dave", "alice"];
        let decisions = [
            ReviewDecision::Approve,
            ReviewDecision::Confirm,
            ReviewDecision::Revoke,
            ReviewDecision::Deny,
            ReviewDecision::Release,
        ];
        let mut r = request("  emergency: true\n  breakGlassGroup: oncall\n");
        let mut now = t0();
        let mut rejected = false;
        for (i, (who, decision, wait)) in events.into_iter().enumerate() {
            if i == reject_after {
                r = with_reviews(r, &[("erin", ReviewDecision::Reject)]);
            }
            if people[who] != "erin" {
                r = with_reviews(r, &[(people[who], decisions[decision])]);
            }
            now += TimeDelta::seconds(wait);
            let d = decide(&r, &PolicyView::Accepted(&p), &enabled(), now);
            if rejected {
                prop_assert_ne!(d.status.phase, Some(Phase::Approved));
            }
            // Rejected once the decision recorded the verdict (the first verdict stands;
            // admission refuses a second one).
            rejected |= d.status.history.iter().any(|h| h.action == "Rejected");
            if rejected {
                prop_assert_ne!(d.status.phase, Some(Phase::Approved));
            }
            r = apply(r, &d);
        }
    }
}
