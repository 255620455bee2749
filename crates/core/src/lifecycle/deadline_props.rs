//! Deadlines come from recorded timestamps only (issue 8: a clock jump cannot be staged on the
//! test control plane, so the pure state machine shows it instead).
//!
//! `decide` reads `now` only to compare it with `submittedAt + TTL` (`expiresAt`) and
//! `decidedAt + duration` (`grantedUntil`), which status records. These properties decide
//! recorded requests at arbitrary instants — before the record (a clock stepped back), around
//! the deadline, and centuries after it (a jump forward or a long outage) — and check that no
//! instant moves a deadline, lengthens a grant or revives a final request.

use super::tests::{apply, at, control, policy, request};
use super::*;
use proptest::prelude::*;

const H: i64 = 3600;
/// Two hundred years in seconds: far beyond any TTL or grant, well inside chrono's range.
const CENTURIES: i64 = 200 * 366 * 24 * H;

const AUTO: &str =
    "{type: Task, approvalType: Auto, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";
const AUTO_MAX_1H: &str = "{type: Task, approvalType: Auto, maxDuration: 1h, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";
const MANUAL: &str = "{type: Task, approvalType: Manual, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}";

/// Any instant: near the fixtures' `t0`, centuries away, or at the ends of time.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        4 => (-30 * H..30 * H).prop_map(at),
        2 => (-CENTURIES..CENTURIES).prop_map(at),
        1 => Just(DateTime::<Utc>::MAX_UTC),
        1 => Just(DateTime::<Utc>::MIN_UTC),
    ]
}

fn controls() -> [ControlView; 3] {
    [
        ControlView::from_control(Some(&control("{defaultApproverGroup: g}"))),
        ControlView::from_control(Some(&control("{defaultApproverGroup: g, requestTTL: 1s}"))),
        ControlView::from_control(Some(&control(
            "{defaultApproverGroup: g, requestTTL: 878400h, defaultDuration: 878400h}",
        ))),
    ]
}

/// `now + requeue_after`, the instant the controller is asked to look again.
fn wake_up(d: &Decision, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let after = TimeDelta::from_std(d.requeue_after?).ok()?;
    now.checked_add_signed(after)
}

/// An Approved request as status records it: decided at `decided`, granted until `until`.
fn approved_record(
    p: &crate::api::AccessPolicy,
    decided: DateTime<Utc>,
    until: DateTime<Utc>,
) -> ElevationRequest {
    let mut r = request("  namespace: shop\n");
    r.status = Some(ElevationRequestStatus {
        phase: Some(Phase::Approved),
        submitted_at: Some(decided - TimeDelta::minutes(5)),
        expires_at: Some(decided + TimeDelta::hours(24)),
        decided_at: Some(decided),
        decided_by: vec![ACTOR_KUBEPAM.to_owned()],
        granted_until: Some(until),
        deadline: Some(until),
        grant: scope::snapshot("delete-pods", &p.spec, Some("shop")).ok(),
        ..ElevationRequestStatus::default()
    });
    r
}

proptest! {
    #[test]
    fn an_approved_grant_ends_at_its_recorded_deadline_whatever_now_is(
        decided in (-30 * H..30 * H).prop_map(at),
        length in prop_oneof![1i64..2 * H, 1i64..CENTURIES],
        capped in any::<bool>(),
        nows in proptest::collection::vec(instant(), 1..6),
    ) {
        let p = policy(if capped { AUTO_MAX_1H } else { AUTO });
        let recorded = decided + TimeDelta::seconds(length);
        let r = approved_record(&p, decided, recorded);
        // The deadline: the recorded one, shortened (never lengthened) by the policy's
        // maxDuration counted from the recorded decision.
        let deadline = if capped { recorded.min(decided + TimeDelta::hours(1)) } else { recorded };
        for now in nows {
            for c in &controls() {
                let d = decide(&r, &PolicyView::Accepted(&p), c, now);
                prop_assert_eq!(d.status.granted_until, Some(deadline), "at {}", now);
                prop_assert_eq!(d.status.decided_at, Some(decided));
                if now < deadline {
                    prop_assert_eq!(d.status.phase, Some(Phase::Approved));
                    prop_assert!(d.grant.is_some());
                    prop_assert_eq!(d.status.deadline, Some(deadline));
                    // The controller is woken exactly at the recorded deadline.
                    prop_assert_eq!(wake_up(&d, now), Some(deadline));
                } else {
                    // However late (a clock jumped forward, an outage of centuries), the
                    // grant ends and nothing is granted.
                    prop_assert_eq!(d.status.phase, Some(Phase::Expired));
                    prop_assert_eq!(d.grant, None);
                    prop_assert_eq!(d.requeue_after, None);
                    let t = d.transition.expect("a transition to Expired");
                    prop_assert_eq!(t.reason.as_str(), reason::GRANT_DURATION_ENDED);
                    prop_assert!(t.message.contains(&crate::util::time_for_people(deadline)), "{}", t.message);
                }
            }
        }
    }

    #[test]
    fn a_pending_requests_expiry_is_its_recorded_one_whatever_now_or_the_ttl(
        submitted in (-30 * H..30 * H).prop_map(at),
        ttl in prop_oneof![1i64..48 * H, 1i64..CENTURIES],
        record_expiry in any::<bool>(),
        auto in any::<bool>(),
        nows in proptest::collection::vec(instant(), 1..6),
    ) {
        let p = policy(if auto { AUTO } else { MANUAL });
        let mut r = request("  namespace: shop\n  duration: 30m\n");
        let recorded = submitted + TimeDelta::seconds(ttl);
        r.status = Some(ElevationRequestStatus {
            phase: Some(Phase::Pending),
            submitted_at: Some(submitted),
            expires_at: record_expiry.then_some(recorded),
            ..ElevationRequestStatus::default()
        });
        for now in nows {
            for c in &controls() {
                // A lost expiresAt is rebuilt from the recorded submission, not from now.
                let expiry = if record_expiry { recorded } else { submitted + c.request_ttl() };
                let d = decide(&r, &PolicyView::Accepted(&p), c, now);
                prop_assert_eq!(d.status.expires_at, Some(expiry), "at {}", now);
                prop_assert_eq!(d.status.submitted_at, Some(submitted));
                let phase = d.status.phase.expect("a phase");
                if now >= expiry {
                    // Too late to decide, even for a policy that would approve at once.
                    prop_assert_eq!(phase, Phase::Expired);
                    prop_assert_eq!(d.grant, None);
                    let t = d.transition.expect("a transition to Expired");
                    prop_assert_eq!(t.reason.as_str(), reason::REQUEST_TTL_EXCEEDED);
                } else if auto {
                    // Approved now: the grant runs from the recorded decision for the
                    // requested 30 minutes, no longer.
                    prop_assert_eq!(phase, Phase::Approved);
                    let decided = d.status.decided_at.expect("decidedAt");
                    prop_assert_eq!(decided, now.trunc_subsecs(3));
                    prop_assert_eq!(d.status.granted_until, decided.checked_add_signed(TimeDelta::minutes(30)).or(Some(decided)));
                } else {
                    prop_assert_eq!(phase, Phase::Pending);
                    prop_assert_eq!(d.status.deadline, Some(expiry));
                    prop_assert_eq!(wake_up(&d, now), Some(expiry));
                }
            }
        }
    }

    #[test]
    fn re_deciding_at_later_or_earlier_instants_never_extends_a_deadline_or_revives_a_request(
        auto in any::<bool>(),
        duration in prop_oneof![Just("1s"), Just("30m"), Just("878400h")],
        start in instant(),
        steps in proptest::collection::vec(
            prop_oneof![
                4 => 0i64..2 * H,
                2 => -2 * H..0,
                1 => -CENTURIES..CENTURIES,
            ],
            1..30,
        ),
        approve_at in proptest::option::of(0usize..30),
    ) {
        let p = policy(if auto { AUTO } else { MANUAL });
        let c = &controls()[0];
        let mut r = request(&format!("  namespace: shop\n  duration: {duration}\n"));
        let requested = duration::parse(duration).expect("a valid duration");
        let mut now = start;
        let mut before: Option<ElevationRequestStatus> = None;
        for (i, step) in steps.into_iter().enumerate() {
            if approve_at == Some(i) {
                r.spec.reviews.insert("bob".to_owned(), Review { decision: ReviewDecision::Approve, comment: None });
            }
            let d = decide(&r, &PolicyView::Accepted(&p), c, now);
            let s = &d.status;
            if let Some(b) = &before {
                // Recorded instants never move once written.
                for (was, is) in [
                    (b.submitted_at, s.submitted_at),
                    (b.expires_at, s.expires_at),
                    (b.decided_at, s.decided_at),
                ] {
                    if was.is_some() {
                        prop_assert_eq!(was, is);
                    }
                }
                // A grant's end only ever comes earlier.
                if let (Some(was), Some(is)) = (b.granted_until, s.granted_until) {
                    prop_assert!(is <= was, "grantedUntil moved from {was} to {is} at {now}");
                }
                // A final request stays final, with no grant, whatever the clock says.
                if b.phase.is_some_and(Phase::is_final) {
                    prop_assert_eq!(s, b);
                    prop_assert_eq!(d.grant.as_ref(), None);
                }
            }
            if let (Some(decided), Some(until)) = (s.decided_at, s.granted_until) {
                prop_assert!(until - decided <= requested, "{decided} .. {until} is longer than {requested}");
            }
            if d.grant.is_some() {
                prop_assert!(s.granted_until.is_some_and(|u| now < u));
            }
            before = Some(s.clone());
            r = apply(r, &d);
            now = now.checked_add_signed(TimeDelta::seconds(step)).unwrap_or(now);
        }
    }

    #[test]
    fn a_clock_stepped_back_never_revives_an_ended_grant(
        decided in (-30 * H..30 * H).prop_map(at),
        length in 1i64..48 * H,
        late in 0i64..CENTURIES,
        back in prop_oneof![1i64..H, 1i64..CENTURIES],
    ) {
        let p = policy(AUTO);
        let until = decided + TimeDelta::seconds(length);
        let c = &controls()[0];
        let ended = decide(&approved_record(&p, decided, until), &PolicyView::Accepted(&p), c, until + TimeDelta::seconds(late));
        prop_assert_eq!(ended.status.phase, Some(Phase::Expired));
        let r = apply(approved_record(&p, decided, until), &ended);
        // The clock steps back before the deadline, even before the decision.
        let earlier = until + TimeDelta::seconds(late) - TimeDelta::seconds(back);
        let d = decide(&r, &PolicyView::Accepted(&p), c, earlier);
        prop_assert_eq!(&d.status, &ended.status);
        prop_assert_eq!(d.grant, None);
        prop_assert!(d.transition.is_none());
    }
}
