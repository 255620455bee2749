//! Property tests: random sequences of reviews, policy and control changes and time steps.

use super::tests::{apply, at, control, policy, request};
use super::*;
use proptest::prelude::*;

const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "dave"];
const REQUESTER: &str = "alice";

const POLICIES: [&str; 11] = [
    "{type: Task, approvalType: Manual, task: {verbs: [delete, create], apiGroups: [''], resources: [pods, pods/exec]}}",
    "{type: Task, approvalType: Manual, requiredApprovals: 2, task: {verbs: [delete, create], apiGroups: [''], resources: [pods, pods/exec]}}",
    "{type: Task, approvalType: Auto, task: {verbs: [delete, create], apiGroups: [''], resources: [pods, pods/exec]}}",
    "{type: Task, approvalType: Manual, scope: {namespaces: [shop]}, task: {verbs: [delete], apiGroups: [''], resources: [pods], resourceNames: [web-0]}}",
    "{type: Task, approvalType: Auto, task: {verbs: ['*'], apiGroups: ['*'], resources: ['*']}}",
    "{type: Task, approvalType: Manual, maxDuration: 1h, task: {verbs: [delete], apiGroups: [''], resources: [pods]}}",
    "{type: Role, role: admin, approvalType: Auto}",
    "{type: Role, role: admin, approvalType: Manual, scope: {namespaces: [shop, billing]}}",
    "{type: RoleGroup, roles: [view, edit], approvalType: Manual, requiredApprovals: 2}",
    "{type: RoleGroup, roles: [view, admin], approvalType: Auto, scope: {namespaces: [billing]}}",
    "{type: RoleGroup, roles: [edit], approvalType: Auto}",
];

#[derive(Debug, Clone)]
enum PolicyState {
    Missing,
    Refused,
    Unjudged(usize),
    Accepted(usize),
}

#[derive(Debug, Clone)]
enum Event {
    Review(usize, ReviewDecision),
    Policy(PolicyState),
    Control(u8),
    Advance(i64),
}

fn decision() -> impl Strategy<Value = ReviewDecision> {
    prop_oneof![
        3 => Just(ReviewDecision::Approve),
        1 => Just(ReviewDecision::Deny),
        1 => Just(ReviewDecision::Revoke),
    ]
}

fn policy_state() -> impl Strategy<Value = PolicyState> {
    prop_oneof![
        1 => Just(PolicyState::Missing),
        1 => Just(PolicyState::Refused),
        1 => (0..POLICIES.len()).prop_map(PolicyState::Unjudged),
        6 => (0..POLICIES.len()).prop_map(PolicyState::Accepted),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..PEOPLE.len(), decision()).prop_map(|(p, d)| Event::Review(p, d)),
        2 => policy_state().prop_map(Event::Policy),
        1 => (0u8..3).prop_map(Event::Control),
        4 => prop_oneof![0i64..120, 0i64..20_000, 0i64..200_000].prop_map(Event::Advance),
    ]
}

fn request_extra() -> impl Strategy<Value = String> {
    let ns = prop_oneof![
        Just(""),
        Just("  namespace: shop\n"),
        Just("  namespace: billing\n")
    ];
    let dur = prop_oneof![
        Just(""),
        Just("  duration: 30m\n"),
        Just("  duration: 2h\n"),
        Just("  duration: 9x\n")
    ];
    (ns, dur).prop_map(|(a, b)| format!("{a}{b}"))
}

fn legal(from: Option<Phase>, to: Phase) -> bool {
    use Phase::{Approved, Denied, Expired, Pending, Revoked};
    matches!(
        (from, to),
        (None, _)
            | (Some(Pending), Pending | Approved | Denied | Expired)
            | (Some(Approved), Approved | Expired | Revoked)
    ) || from == Some(to)
}

struct World {
    policies: Vec<crate::api::AccessPolicy>,
    unjudged: Vec<crate::api::AccessPolicy>,
    controls: [ControlView; 3],
}

impl World {
    fn new() -> Self {
        let policies: Vec<_> = POLICIES.iter().map(|s| policy(s)).collect();
        let unjudged = policies
            .iter()
            .cloned()
            .map(|mut p| {
                p.status = None;
                p
            })
            .collect();
        Self {
            policies,
            unjudged,
            controls: [
                ControlView::Missing,
                ControlView::from_control(Some(&control(
                    "{defaultApproverGroup: g, enabled: false}",
                ))),
                ControlView::from_control(Some(&control(
                    "{defaultApproverGroup: g, requestTTL: 6h}",
                ))),
            ],
        }
    }

    fn view(&self, state: &PolicyState) -> PolicyView<'_> {
        match state {
            PolicyState::Missing => PolicyView::Missing,
            PolicyState::Refused => PolicyView::Refused {
                reason: "PolicyLimitExceeded".into(),
                message: "over the limit".into(),
            },
            PolicyState::Unjudged(i) => PolicyView::Unjudged(&self.unjudged[*i]),
            PolicyState::Accepted(i) => PolicyView::Accepted(&self.policies[*i]),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn lifecycle_invariants_hold(
        extra in request_extra(),
        initial_policy in policy_state(),
        initial_control in 0u8..3,
        events in proptest::collection::vec(event(), 0..40),
    ) {
        let world = World::new();
        let mut req = request(&extra);
        let mut policy_state = initial_policy;
        let mut control_idx = usize::from(initial_control);
        let mut now = at(0);
        let mut events = events.into_iter();
        loop {
            let view = world.view(&policy_state);
            let control = &world.controls[control_idx];
            let before = req.status.clone();
            let from = before.as_ref().and_then(|s| s.phase);
            let d = decide(&req, &view, control, now);
            let to = d.status.phase.expect("decide always sets a phase");

            // Phases only move forward; finals never change.
            prop_assert!(legal(from, to), "{from:?} -> {to:?}");
            if from.is_some_and(Phase::is_final) {
                prop_assert_eq!(Some(&d.status), before.as_ref());
                prop_assert!(d.transition.is_none());
            }
            prop_assert_eq!(d.transition.is_some(), from != Some(to));
            if let Some(t) = &d.transition {
                prop_assert_eq!(t.from, from);
                prop_assert_eq!(t.to, to);
                prop_assert!(!t.reason.is_empty() && t.reason.chars().all(|c| c.is_ascii_alphanumeric()));
            }
            prop_assert_eq!(d.requeue_after.is_none(), to.is_final());
            prop_assert!(d.status.history.len() <= crate::api::HISTORY_LIMIT);

            // A grant exists only while Approved, inside [decidedAt, grantedUntil), within the
            // approved snapshot.
            if let Some(grant) = &d.grant {
                prop_assert_eq!(to, Phase::Approved);
                let decided = d.status.decided_at.expect("approved has decidedAt");
                let until = d.status.granted_until.expect("approved has grantedUntil");
                prop_assert!(decided <= now && now < until, "{decided} <= {now} < {until}");
                let snapshot = d.status.grant.as_ref().expect("approved has a snapshot");
                prop_assert!(scope::is_within(grant, snapshot), "{grant:?} not within {snapshot:?}");
                prop_assert!(!scope::is_empty(grant));
            } else {
                prop_assert!(to != Phase::Approved, "an Approved request always carries its grant");
            }

            // Entering Approved needs an enabled control, and a manual approval never counts
            // the requester.
            if to == Phase::Approved && from != Some(Phase::Approved) {
                prop_assert!(control.is_enabled());
                let t = d.transition.as_ref().expect("transition");
                if t.reason == reason::MANUAL_APPROVAL {
                    prop_assert!(!d.status.decided_by.iter().any(|a| a == REQUESTER));
                    let required = usize::try_from(d.status.required_approvals.unwrap_or(1)).unwrap();
                    prop_assert!(d.status.decided_by.len() >= required);
                    for a in &d.status.decided_by {
                        prop_assert_eq!(req.spec.reviews.get(a).map(|r| r.decision), Some(ReviewDecision::Approve));
                    }
                } else {
                    prop_assert_eq!(t.reason.as_str(), reason::AUTO_APPROVED);
                }
            }

            // Idempotent: deciding again on the applied status changes nothing.
            let again = decide(&apply(req.clone(), &d), &view, control, now);
            prop_assert!(again.transition.is_none());
            prop_assert_eq!(&again.status, &d.status);
            prop_assert_eq!(&again.grant, &d.grant);
            prop_assert_eq!(again.requeue_after, d.requeue_after);

            req = apply(req, &d);
            let Some(event) = events.next() else { break };
            match event {
                Event::Review(who, decision) => {
                    req.spec.reviews.insert(PEOPLE[who].to_owned(), Review { decision, comment: None });
                }
                Event::Policy(state) => policy_state = state,
                Event::Control(c) => control_idx = usize::from(c),
                Event::Advance(secs) => now += TimeDelta::seconds(secs),
            }
        }
    }

    #[test]
    fn only_the_requesters_reviews_never_approve_a_manual_request(
        decisions in proptest::collection::vec(decision(), 1..5),
        idx in prop_oneof![Just(0usize), Just(1usize), Just(5usize), Just(8usize)],
        steps in proptest::collection::vec(0i64..3000, 1..10),
    ) {
        let world = World::new();
        let p = &world.policies[idx];
        let mut req = request("  namespace: shop\n  duration: 30m\n");
        let mut now = at(0);
        for (decision, step) in decisions.iter().cycle().zip(steps) {
            req.spec.reviews.insert(REQUESTER.to_owned(), Review { decision: *decision, comment: None });
            let d = decide(&req, &PolicyView::Accepted(p), &world.controls[2], now);
            prop_assert!(matches!(d.status.phase, Some(Phase::Pending | Phase::Expired)));
            prop_assert!(d.grant.is_none());
            req = apply(req, &d);
            now += TimeDelta::seconds(step);
        }
    }

    #[test]
    fn decide_never_panics_on_odd_statuses(
        phase in proptest::option::of(prop_oneof![
            Just(Phase::Pending), Just(Phase::Approved), Just(Phase::Denied), Just(Phase::Expired), Just(Phase::Revoked)
        ]),
        granted in proptest::option::of(-100_000i64..100_000),
        expires in proptest::option::of(-100_000i64..100_000),
        decided in proptest::option::of(-100_000i64..100_000),
        with_grant in any::<bool>(),
        idx in 0..POLICIES.len(),
        now in -100_000i64..100_000,
        requester in proptest::option::of("[a-z ]{0,6}"),
        duration in proptest::option::of(".{0,6}"),
    ) {
        let world = World::new();
        let mut req = request("");
        req.spec.requester = requester;
        req.spec.duration = duration;
        let snapshot = scope::snapshot("p", &world.policies[idx].spec, Some("shop")).ok();
        req.status = Some(ElevationRequestStatus {
            phase,
            granted_until: granted.map(at),
            expires_at: expires.map(at),
            decided_at: decided.map(at),
            grant: if with_grant { snapshot } else { None },
            ..ElevationRequestStatus::default()
        });
        for c in &world.controls {
            let d = decide(&req, &PolicyView::Accepted(&world.policies[idx]), c, at(now));
            if let Some(g) = &d.grant {
                prop_assert!(d.status.granted_until.is_some_and(|u| at(now) < u));
                prop_assert!(scope::is_within(g, d.status.grant.as_ref().expect("snapshot")));
            }
        }
    }
}

/// Instants from the fixtures' day to the ends of chrono's range.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        4 => (-100_000i64..100_000).prop_map(at),
        2 => (min..=max).prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range")),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
    ]
}

/// Strings as a hand-edited or hostile spec may hold them.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        "[a-z][-a-z0-9]{0,8}",
        ".{0,12}",
        "\\PC{0,80}",
    ]
}

fn any_duration() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1s".to_owned()),
        Just("878400h".to_owned()), // the longest accepted: 100 (leap) years
        Just("878401h".to_owned()),
        Just("99999999999999999999h".to_owned()),
        Just("0s".to_owned()),
        "-?[0-9]{1,22}[hmsd]?",
        ".{0,8}",
    ]
}

fn any_phase() -> impl Strategy<Value = Option<Phase>> {
    proptest::option::of(proptest::sample::select(vec![
        Phase::Pending,
        Phase::Approved,
        Phase::Denied,
        Phase::Expired,
        Phase::Revoked,
    ]))
}

proptest! {
    #[test]
    fn decide_never_panics_on_any_request_and_explains_every_refusal(
        (policy_name, reason_text, namespace, requester) in (any_text(), any_text(), proptest::option::of(any_text()), proptest::option::of(any_text())),
        duration in proptest::option::of(any_duration()),
        reviews in proptest::collection::btree_map(any_text(), (decision(), proptest::option::of(any_text())), 0..4),
        created in proptest::option::of(any_instant()),
        phase in any_phase(),
        (submitted, expires, decided, granted) in (
            proptest::option::of(any_instant()),
            proptest::option::of(any_instant()),
            proptest::option::of(any_instant()),
            proptest::option::of(any_instant()),
        ),
        with_grant in any::<bool>(),
        idx in 0..POLICIES.len(),
        view in 0u8..4,
        now in any_instant(),
    ) {
        let mut world = World::new();
        world.controls[2] = ControlView::from_control(Some(&control(
            "{defaultApproverGroup: g, requestTTL: 878400h, defaultDuration: 878400h}",
        )));
        let mut req = request("");
        req.spec.policy = policy_name;
        req.spec.reason = reason_text;
        req.spec.namespace = namespace;
        req.spec.requester = requester;
        req.spec.duration = duration.clone();
        req.spec.reviews = reviews
            .into_iter()
            .map(|(who, (decision, comment))| (who, Review { decision, comment }))
            .collect();
        req.metadata.creation_timestamp = created.map(crate::api::to_k8s_time);
        let snapshot = scope::snapshot("p", &world.policies[idx].spec, Some("shop")).ok();
        req.status = Some(ElevationRequestStatus {
            phase,
            submitted_at: submitted,
            expires_at: expires,
            decided_at: decided,
            granted_until: granted,
            grant: if with_grant { snapshot } else { None },
            ..ElevationRequestStatus::default()
        });
        let state = match view {
            0 => PolicyState::Missing,
            1 => PolicyState::Refused,
            2 => PolicyState::Unjudged(idx),
            _ => PolicyState::Accepted(idx),
        };
        let view = world.view(&state);
        for c in &world.controls {
            let d = decide(&req, &view, c, now);
            let to = d.status.phase.expect("decide always sets a phase");
            prop_assert_eq!(d.requeue_after.is_none(), to.is_final());
            if let Some(g) = &d.grant {
                prop_assert_eq!(to, Phase::Approved);
                prop_assert!(d.status.granted_until.is_some_and(|u| now < u));
                prop_assert!(scope::is_within(g, d.status.grant.as_ref().expect("snapshot")));
            }
            if let Some(t) = &d.transition {
                prop_assert!(!t.message.trim().is_empty() && !t.reason.is_empty());
                if t.reason == reason::INVALID_DURATION {
                    let quoted = format!("{:?}", duration.as_deref().unwrap_or_default());
                    prop_assert!(t.message.starts_with("spec.duration: invalid duration "), "{}", t.message);
                    prop_assert!(t.message.contains(&quoted), "{} does not name {quoted}", t.message);
                }
            }
            // Idempotent at the extremes too.
            let again = decide(&apply(req.clone(), &d), &view, c, now);
            prop_assert!(again.transition.is_none(), "{:?}", again.transition);
            prop_assert_eq!(&again.status, &d.status);
        }
    }
}
