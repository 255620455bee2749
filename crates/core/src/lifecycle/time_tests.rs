//! Booked windows, extensions, the requester's release, verified reasons and quotas, in the
//! pure state machine: unit tests, and properties over any times.

use super::tests::{TASK_MANUAL, apply, at, enabled, policy, request, with_reviews};
use super::*;
use crate::api::find_condition;
use proptest::prelude::*;

const H: i64 = 3600;
const AUTO: &str =
    "{type: Task, approvalType: Auto, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";

fn accepted(spec: &str) -> AccessPolicy {
    policy(spec)
}

fn step(
    r: &ElevationRequest,
    p: &AccessPolicy,
    related: &Related<'_>,
    now: DateTime<Utc>,
) -> Decision {
    decide_with(r, &PolicyView::Accepted(p), &enabled(), related, now)
}

fn extending(original: &ElevationRequest) -> Related<'_> {
    Related {
        extended: Some(original),
        ..Related::default()
    }
}

fn none() -> Related<'static> {
    Related::default()
}

fn scheduled(d: &Decision) -> Option<(String, String)> {
    find_condition(&d.status.conditions, CONDITION_SCHEDULED)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// alice books 08:00+2h for 1h; bob approves at 08:10.
fn booked_and_approved() -> (ElevationRequest, AccessPolicy) {
    let p = accepted(TASK_MANUAL);
    let r = request(&format!(
        "  startAt: '{}'\n  duration: 1h",
        at(2 * H).to_rfc3339()
    ));
    let r = apply(r.clone(), &step(&r, &p, &none(), at(0)));
    let r = with_reviews(r, &[("bob", ReviewDecision::Approve)]);
    let d = step(&r, &p, &none(), at(600));
    (apply(r, &d), p)
}

#[test]
fn a_booked_window_approved_early_grants_nothing_until_it_opens() {
    let (r, p) = booked_and_approved();
    let status = r.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Approved));
    assert_eq!(status.granted_from, Some(at(2 * H)));
    assert_eq!(status.granted_until, Some(at(3 * H)));
    assert_eq!(status.starts_at, Some(at(2 * H)));
    let waiting = step(&r, &p, &none(), at(H));
    assert_eq!(waiting.grant, None);
    assert_eq!(
        waiting.requeue_after,
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(
        scheduled(&waiting),
        Some(("True".into(), reason::WINDOW_BOOKED.into()))
    );
    let open = step(&r, &p, &none(), at(2 * H));
    assert!(open.grant.is_some());
    assert_eq!(open.transition, None, "the phase stays Approved");
    assert_eq!(open.status.starts_at, None);
    assert_eq!(
        scheduled(&open),
        Some(("False".into(), reason::WINDOW_OPENED.into()))
    );
    let r = apply(r, &open);
    let ended = step(&r, &p, &none(), at(3 * H));
    assert_eq!(ended.status.phase, Some(Phase::Expired));
    assert_eq!(ended.grant, None);
}

#[test]
fn a_window_approved_late_opens_at_the_approval_and_still_ends_on_time() {
    let p = accepted(TASK_MANUAL);
    let r = request(&format!(
        "  startAt: '{}'\n  duration: 1h",
        at(2 * H).to_rfc3339()
    ));
    let r = apply(r.clone(), &step(&r, &p, &none(), at(0)));
    let r = with_reviews(r, &[("bob", ReviewDecision::Approve)]);
    let d = step(&r, &p, &none(), at(2 * H + 1800));
    assert!(d.grant.is_some());
    assert_eq!(d.status.granted_from, Some(at(2 * H + 1800)));
    assert_eq!(d.status.granted_until, Some(at(3 * H)));
    assert_eq!(d.requeue_after, Some(std::time::Duration::from_secs(1800)));
}

#[test]
fn an_undecided_booked_request_expires_when_its_window_ends() {
    let p = accepted(TASK_MANUAL);
    let r = request(&format!(
        "  startAt: '{}'\n  duration: 1h",
        at(2 * H).to_rfc3339()
    ));
    let first = step(&r, &p, &none(), at(0));
    assert_eq!(
        first.status.expires_at,
        Some(at(3 * H)),
        "before the 24h TTL"
    );
    assert_eq!(first.status.starts_at, Some(at(2 * H)));
    let r = apply(r, &first);
    let d = step(&r, &p, &none(), at(3 * H));
    assert_eq!(d.status.phase, Some(Phase::Expired));
    assert_eq!(d.transition.unwrap().reason, reason::WINDOW_PASSED);
}

#[test]
fn a_window_beyond_max_schedule_ahead_is_denied() {
    let p = accepted(
        "{type: Task, approvalType: Auto, maxScheduleAhead: 24h, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}",
    );
    let r = request(&format!("  startAt: '{}'", at(48 * H).to_rfc3339()));
    let d = step(&r, &p, &none(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Denied));
    let t = d.transition.unwrap();
    assert_eq!(t.reason, reason::SCHEDULE_TOO_FAR_AHEAD);
    assert!(t.message.contains("at most 24h ahead"), "{}", t.message);
}

#[test]
fn a_plain_grant_survives_a_replica_whose_clock_is_behind() {
    let p = accepted(AUTO);
    let r = request("");
    let d = step(&r, &p, &none(), at(100));
    let r = apply(r, &d);
    // Another replica, one second behind the one that approved.
    let behind = step(&r, &p, &none(), at(99));
    assert!(behind.grant.is_some());
    assert_eq!(scheduled(&behind), None);
}

fn approved_auto() -> (ElevationRequest, AccessPolicy) {
    let p = accepted(AUTO);
    let r = request("");
    let d = step(&r, &p, &none(), at(0));
    (apply(r, &d), p)
}

#[test]
fn the_requester_releases_their_grant_and_it_ends_at_once_as_theirs() {
    let (r, p) = approved_auto();
    let r = with_reviews(r, &[("alice", ReviewDecision::Release)]);
    let d = step(&r, &p, &none(), at(60));
    assert_eq!(d.status.phase, Some(Phase::Revoked));
    assert_eq!(d.grant, None);
    let t = d.transition.unwrap();
    assert_eq!(
        (t.actor.as_str(), t.reason.as_str()),
        ("alice", reason::RELEASED_BY_REQUESTER)
    );
    let released = find_condition(&d.status.conditions, CONDITION_RELEASED).unwrap();
    assert_eq!(released.status, "True");
}

#[test]
fn a_release_by_anyone_else_is_not_a_release() {
    // Admission refuses it; were it bypassed, the state machine still ignores it.
    let (r, p) = approved_auto();
    let r = with_reviews(r, &[("bob", ReviewDecision::Release)]);
    let d = step(&r, &p, &none(), at(60));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert!(d.grant.is_some());
}

#[test]
fn a_booked_window_can_be_released_before_it_opens() {
    let (r, p) = booked_and_approved();
    let r = with_reviews(r, &[("alice", ReviewDecision::Release)]);
    let d = step(&r, &p, &none(), at(H));
    assert_eq!(d.status.phase, Some(Phase::Revoked));
    assert_eq!(d.status.starts_at, None);
    assert_eq!(
        scheduled(&d).map(|s| s.0),
        Some("False".into()),
        "never opened"
    );
}

#[test]
fn a_requesters_release_while_pending_is_ignored_and_said_so() {
    let p = accepted(TASK_MANUAL);
    let r = with_reviews(request(""), &[("alice", ReviewDecision::Release)]);
    let d = step(&r, &p, &none(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert!(find_condition(&d.status.conditions, CONDITION_REVIEWS_IGNORED).is_some());
}

/// alice's grant `fix-prod` approved at 08:00 for 1h, and her extension `more` asking 2h.
fn grant_and_extension(ext_policy: &str) -> (ElevationRequest, ElevationRequest, AccessPolicy) {
    let p = accepted(ext_policy);
    let original = with_reviews(
        request("  duration: 1h"),
        &[("bob", ReviewDecision::Approve)],
    );
    let original = apply(original.clone(), &step(&original, &p, &none(), at(0)));
    assert_eq!(
        original.status.as_ref().unwrap().phase,
        Some(Phase::Approved)
    );
    let mut ext = request("  extends: fix-prod\n  duration: 2h");
    ext.metadata.name = Some("more".into());
    ext.metadata.uid = Some("1b4c2a2e-4f4e-4e8e-9a55-8a1f0d3c9e02".into());
    (original, ext, p)
}

#[test]
fn an_approved_extension_continues_the_grant_from_its_end_with_no_gap() {
    let (original, ext, p) = grant_and_extension(AUTO);
    let related = extending(&original);
    let d = step(&ext, &p, &related, at(1800));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert!(
        d.grant.is_some(),
        "its rights exist before the old grant ends"
    );
    assert_eq!(
        d.status.granted_until,
        Some(at(3 * H)),
        "the old end plus 2h"
    );
    let record = d.status.extension.clone().unwrap();
    assert_eq!(
        (record.number, record.chain_start, record.continues_from),
        (1, at(0), at(H))
    );
    assert!(
        d.transition
            .as_ref()
            .unwrap()
            .message
            .contains("continues the grant of ElevationRequest fix-prod")
    );
    // At the boundary the old grant ends and names its continuation.
    let ext = apply(ext, &d);
    let related = Related {
        extended_by: Some(&ext),
        ..Related::default()
    };
    let end = step(&original, &p, &related, at(H));
    assert_eq!(end.status.phase, Some(Phase::Expired));
    assert!(
        end.transition
            .as_ref()
            .unwrap()
            .message
            .contains("continues under ElevationRequest more")
    );
    let related = Related {
        extended: Some(&apply(original.clone(), &end)),
        ..Related::default()
    };
    let after = step(&ext, &p, &related, at(H + 1));
    assert!(
        after.grant.is_some(),
        "the extension outlives the grant it continued"
    );
}

#[test]
fn an_extension_may_be_approved_differently_from_the_policy() {
    let manual_auto_ext = "{type: Task, approvalType: Manual, approverGroup: sre-leads, extension: {approvalType: Auto, maxTotal: 12h}, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";
    let (original, ext, p) = grant_and_extension(manual_auto_ext);
    let related = extending(&original);
    let d = step(&ext, &p, &related, at(1800));
    assert_eq!(d.status.phase, Some(Phase::Approved));
    assert_eq!(d.status.approval_type, Some(ApprovalType::Auto));
}

#[test]
fn an_extension_never_revives_an_ended_grant() {
    let (original, ext, p) = grant_and_extension(TASK_MANUAL);
    let related = extending(&original);
    let pending = step(&ext, &p, &related, at(1800));
    assert_eq!(pending.status.phase, Some(Phase::Pending));
    let ext = with_reviews(apply(ext, &pending), &[("bob", ReviewDecision::Approve)]);
    // bob approves a second after the old grant ended.
    let d = step(&ext, &p, &related, at(H + 1));
    assert_eq!(d.status.phase, Some(Phase::Expired));
    assert_eq!(d.grant, None);
    assert_eq!(d.transition.unwrap().reason, reason::EXTENDED_GRANT_ENDED);
}

#[test]
fn an_approved_extension_ends_when_the_grant_it_continues_is_revoked() {
    let (original, ext, p) = grant_and_extension(AUTO);
    let related = extending(&original);
    let ext = apply(ext.clone(), &step(&ext, &p, &related, at(1800)));
    let released = with_reviews(original, &[("alice", ReviewDecision::Release)]);
    let released = apply(released.clone(), &step(&released, &p, &none(), at(1900)));
    let related = extending(&released);
    let d = step(&ext, &p, &related, at(1901));
    assert_eq!(d.status.phase, Some(Phase::Revoked));
    assert_eq!(d.transition.unwrap().reason, reason::EXTENDED_GRANT_REVOKED);
}

#[test]
fn a_request_beyond_the_quota_is_denied_on_first_sight_only() {
    let p = accepted(
        "{type: Task, approvalType: Manual, maxOpenPerRequester: 1, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}",
    );
    let r = request("");
    let full = Related {
        open_before: Some(OpenCounts {
            same_policy: 1,
            pending: 1,
        }),
        ..Related::default()
    };
    let d = step(&r, &p, &full, at(0));
    assert_eq!(d.status.phase, Some(Phase::Denied));
    let t = d.transition.unwrap();
    assert_eq!(t.reason, reason::QUOTA_EXCEEDED);
    assert!(
        t.message.contains("1 open request(s)") && t.message.contains("allows 1"),
        "{}",
        t.message
    );
    let first = step(&r, &p, &none(), at(0));
    assert_eq!(first.status.phase, Some(Phase::Pending));
}

#[test]
fn a_reason_that_bypassed_admission_is_still_checked() {
    let p = accepted(
        "{type: Task, approvalType: Auto, reasonPattern: '^CHG-[0-9]+', reasonHint: a change number, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}",
    );
    let d = step(&request(""), &p, &none(), at(0));
    assert_eq!(d.status.phase, Some(Phase::Denied));
    let t = d.transition.unwrap();
    assert_eq!(t.reason, reason::REASON_MISMATCH);
    assert!(t.message.contains("a change number"), "{}", t.message);
}

/// Drive a request through decisions at increasing times, applying each status.
fn run(
    mut r: ElevationRequest,
    p: &AccessPolicy,
    related: &Related<'_>,
    times: &[DateTime<Utc>],
) -> (ElevationRequest, Vec<(DateTime<Utc>, Decision)>) {
    let mut seen = Vec::new();
    for now in times {
        let d = step(&r, p, related, *now);
        r = apply(r, &d);
        seen.push((*now, d));
    }
    (r, seen)
}

proptest! {
    /// A booked grant never exists before its start or after its end, whenever it is
    /// approved and whenever kubepam looks.
    #[test]
    fn a_booked_grant_never_opens_before_its_start_nor_outlasts_its_window(
        start in 0i64..(10 * H),
        length in 1i64..(5 * H),
        approve_at in 0i64..(12 * H),
        mut looks in proptest::collection::vec(0i64..(20 * H), 1..12),
    ) {
        let p = accepted(TASK_MANUAL);
        let r = request(&format!("  startAt: '{}'\n  duration: {length}s", at(start).to_rfc3339()));
        let (r, _) = run(r, &p, &none(), &[at(0)]);
        looks.sort_unstable();
        let r = with_reviews(r, &[("bob", ReviewDecision::Approve)]);
        let (r, seen) = run(r, &p, &none(), &[at(approve_at)]);
        let times: Vec<_> = looks.into_iter().filter(|t| *t >= approve_at).map(at).collect();
        let (_, later) = run(r, &p, &none(), &times);
        for (now, d) in seen.iter().chain(later.iter()) {
            if d.grant.is_some() {
                prop_assert!(*now >= at(start), "open at {now} before its start");
                prop_assert!(*now < at(start + length), "open at {now} after its end");
                prop_assert!(*now >= at(approve_at));
            }
        }
    }

    /// An extension's grant ends exactly at the old end plus its duration, exists only if the
    /// grant it continues was in force when it was approved, and ends with a revocation.
    #[test]
    fn an_extension_adds_exactly_its_duration_and_never_revives(
        old_length in 60i64..(3 * H),
        ext_length in 60i64..(3 * H),
        approve_at in 0i64..(4 * H),
        revoked_at in proptest::option::of(0i64..(4 * H)),
        look in 0i64..(8 * H),
    ) {
        let p = accepted(TASK_MANUAL);
        let original = request(&format!("  duration: {old_length}s"));
        let (original, _) = run(original, &p, &none(), &[at(0)]);
        let original = with_reviews(original, &[("bob", ReviewDecision::Approve)]);
        let (approved_original, _) = run(original, &p, &none(), &[at(0)]);
        let old_end = approved_original.status.as_ref().unwrap().granted_until.unwrap();
        // The grant it continues, as the cache shows it at `t`.
        let original_at = |t: i64| match revoked_at {
            Some(r) if r <= t && at(r) < old_end => {
                let o = with_reviews(approved_original.clone(), &[("carol", ReviewDecision::Revoke)]);
                run(o, &p, &none(), &[at(r)]).0
            }
            _ => run(approved_original.clone(), &p, &none(), &[at(t)]).0,
        };
        let mut ext = request(&format!("  extends: fix-prod\n  duration: {ext_length}s"));
        ext.metadata.name = Some("more".into());
        let at_zero = original_at(0);
        let (ext, _) = run(ext, &p, &extending(&at_zero), &[at(0)]);
        let ext = with_reviews(ext, &[("bob", ReviewDecision::Approve)]);
        let then = original_at(approve_at);
        let (ext, decided) = run(ext, &p, &extending(&then), &[at(approve_at)]);
        let look = approve_at.max(look);
        let later_original = original_at(look);
        let (_, later) = run(ext.clone(), &p, &extending(&later_original), &[at(look)]);
        let phase = |r: &ElevationRequest| r.status.as_ref().and_then(|s| s.phase);
        if phase(&ext) == Some(Phase::Approved) {
            prop_assert_eq!(phase(&then), Some(Phase::Approved), "approved an extension of a dead grant");
            prop_assert!(at(approve_at) < old_end);
            prop_assert_eq!(
                ext.status.as_ref().unwrap().granted_until,
                Some(old_end + TimeDelta::seconds(ext_length))
            );
        }
        for (now, d) in decided.iter().chain(later.iter()) {
            if d.grant.is_some() {
                prop_assert!(*now < old_end + TimeDelta::seconds(ext_length));
            }
        }
        if later[0].1.grant.is_some() {
            prop_assert_ne!(phase(&later_original), Some(Phase::Revoked), "outlived a revocation");
        }
    }
}

#[test]
fn an_extension_ends_when_the_grant_it_continues_is_cut_short() {
    let (original, ext, p) = grant_and_extension(AUTO);
    let ext = apply(
        ext.clone(),
        &step(&ext, &p, &extending(&original), at(1800)),
    );
    // The policy's maxDuration shrank to 30m: the original now ends before the extension's
    // continuation point.
    let mut cut = original.clone();
    cut.status.as_mut().unwrap().granted_until = Some(at(1800));
    let d = step(&ext, &p, &extending(&cut), at(1801));
    assert_eq!(d.status.phase, Some(Phase::Revoked));
    assert_eq!(d.transition.unwrap().reason, reason::EXTENDED_GRANT_REVOKED);
}

#[test]
fn an_approvers_revoke_is_recorded_as_theirs_beside_a_release() {
    let (r, p) = approved_auto();
    let r = with_reviews(
        r,
        &[
            ("alice", ReviewDecision::Release),
            ("bob", ReviewDecision::Revoke),
        ],
    );
    let d = step(&r, &p, &none(), at(60));
    assert_eq!(d.transition.unwrap().reason, reason::REVOKED_BY_APPROVER);
}

#[test]
fn a_manual_policy_with_unbounded_auto_extensions_extends_nothing() {
    let p = accepted(
        "{type: Task, approvalType: Manual, extension: {approvalType: Auto}, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}",
    );
    let original = with_reviews(
        request("  duration: 1h"),
        &[("bob", ReviewDecision::Approve)],
    );
    let original = apply(original.clone(), &step(&original, &p, &none(), at(0)));
    let mut ext = request("  extends: fix-prod\n  duration: 876000h");
    ext.metadata.name = Some("forever".into());
    let d = step(&ext, &p, &extending(&original), at(60));
    assert_eq!(d.status.phase, Some(Phase::Denied));
    assert_eq!(d.grant, None);
}

fn named(name: &str, extra: &str, status: Option<&str>) -> ElevationRequest {
    let mut r = request(extra);
    r.metadata.name = Some(name.into());
    if let Some(phase) = status {
        r.status = serde_yaml_ng::from_str(&format!("phase: {phase}")).unwrap();
    }
    r
}

#[test]
fn a_chain_of_a_grant_and_its_extensions_counts_once_toward_the_quota() {
    let a = named("a", "", Some("Approved"));
    let b = named("b", "  extends: a", Some("Approved"));
    let counts = OpenCounts::of([&a, &b], "alice", "delete-pods", None);
    assert_eq!(counts.same_policy, 1);
    // The grant it continued ended: the extension now holds the place.
    let a_ended = named("a", "", Some("Expired"));
    let counts = OpenCounts::of([&a_ended, &b], "alice", "delete-pods", None);
    assert_eq!(counts.same_policy, 1);
}

#[test]
fn a_request_kubepam_has_already_seen_came_before_one_it_sees_for_the_first_time() {
    // Created in the same second, the new one's name sorts first; the seen one still counts.
    let seen = named("zz-1", "", Some("Pending"));
    let new = named("aa-1", "", None);
    let counts = OpenCounts::of([&seen, &new], "alice", "delete-pods", Some(&new));
    assert_eq!(counts.same_policy, 1);
    // Two seen by nobody yet: creation order decides, and exactly one waits on the other.
    let other = named("zz-1", "", None);
    let first = OpenCounts::of([&other], "alice", "delete-pods", Some(&new)).same_policy;
    let second = OpenCounts::of([&new], "alice", "delete-pods", Some(&other)).same_policy;
    assert_eq!(first + second, 1);
}

#[test]
fn an_extension_of_a_grant_not_yet_seen_approved_waits_instead_of_ending() {
    // The cache can show the grant it extends as Pending a moment after its approval.
    let p = accepted(AUTO);
    let pending = request("  duration: 1h");
    let pending = apply(
        pending.clone(),
        &step(&pending, &accepted(TASK_MANUAL), &none(), at(0)),
    );
    assert_eq!(pending.status.as_ref().unwrap().phase, Some(Phase::Pending));
    let mut ext = request("  extends: fix-prod\n  duration: 2h");
    ext.metadata.name = Some("more".into());
    let d = step(&ext, &p, &extending(&pending), at(10));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.grant, None);
    assert_eq!(d.requeue_after, Some(UNJUDGED_RETRY));
}
