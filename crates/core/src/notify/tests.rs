//! Unit and property tests of the notification plan, the outbox schedule, rendering and sink
//! health, on small inline YAML fixtures.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::health::{self, Change, FAILING_AFTER, SinkHealth};
use super::outbox::{self, FIRST_RETRY, GIVE_UP_AFTER, MAX_RETRY, Outcome};
use super::{plan, render};
use crate::api::{
    Audience, DeliveryState, ElevationRequest, ElevationRequestStatus, NOTIFICATION_LIMIT,
    Notification, NotificationEvent, Notifications, PayloadFormat, Phase, RequesterRoute,
};
use crate::lifecycle::{ACTOR_KUBEPAM, Transition};

use Audience::{Approvers, Requester};
use DeliveryState::{Failed, Pending, Sent};

const H: i64 = 3600;
const REQUEST_ID: &str = "5f0c6b4e-8d43-4f5a-9a0e-6f1f2a3b4c5d";
const UID: &str = "0b4c2a2e-4f4e-4e8e-9a55-8a1f0d3c9e01";
const WHOAMI: &str = "$(kubectl auth whoami -o jsonpath='{.status.userInfo.username}')";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// A mail sink and a webhook; routes for the approver groups `sre-leads` and `db-admins`, and
/// for requesters through both sinks (alice has a listed address, others the template's).
const CONFIG: &str = r"
sinks:
- {name: team-mail, smtp: {host: smtp.example.com, from: kubepam@example.com}}
- {name: chat, webhook: {url: 'https://chat.example.com/hooks/pam'}}
approverRoutes:
- {group: sre-leads, sink: team-mail, to: [sre-leads@example.com]}
- {group: sre-leads, sink: chat}
- {group: db-admins, sink: team-mail, to: [dba@example.com]}
requesterRoutes:
- {sink: team-mail, addresses: {alice: alice@corp.example.com}, addressTemplate: '{user}@example.com'}
- {sink: chat}
grantEndingNotice: 15m
";

/// The status a transition to Pending writes for a Manual policy of `sre-leads`.
const STATUS_PENDING: &str = "{phase: Pending, requestId: 5f0c6b4e-8d43-4f5a-9a0e-6f1f2a3b4c5d, approverGroup: sre-leads, approvalType: Manual, expiresAt: '2025-01-02T08:00:00Z'}";

fn config(yaml: &str) -> Notifications {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// The request `fix-prod` by alice; `extra` is spliced into the document (e.g. a status).
fn request(extra: &str) -> ElevationRequest {
    let yaml = format!(
        r"
apiVersion: kubepam.io/v1alpha1
kind: ElevationRequest
metadata: {{name: fix-prod, uid: {UID}}}
spec:
  policy: delete-pods
  namespace: shop
  reason: INC-42 stuck pod
  duration: 2h
  requester: alice
{extra}"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn status(yaml: &str) -> ElevationRequestStatus {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// `STATUS_PENDING` with another phase.
fn status_in(phase: Phase) -> ElevationRequestStatus {
    ElevationRequestStatus {
        phase: Some(phase),
        ..status(STATUS_PENDING)
    }
}

fn transition(from: Option<Phase>, to: Phase) -> Transition {
    Transition {
        from,
        to,
        actor: "bob".to_owned(),
        reason: "Reviewed".to_owned(),
        message: "looks fine".to_owned(),
    }
}

/// What `from -> to` of alice's request owes under [`CONFIG`] at `at(60)`, the status the
/// transition wrote being `status`.
fn owed(from: Option<Phase>, to: Phase, status: &ElevationRequestStatus) -> Vec<Notification> {
    plan::for_transition(
        &request(""),
        status,
        &transition(from, to),
        &config(CONFIG),
        at(60),
    )
}

type Route<'a> = (Audience, &'a str, &'a str, Vec<&'a str>);

/// (audience, recipient, sink, to) of each entry, asserting that all are about `event`.
fn routed(owed: &[Notification], event: NotificationEvent) -> Vec<Route<'_>> {
    owed.iter()
        .map(|n| {
            assert_eq!(n.event, event, "{n:#?}");
            (
                n.audience,
                n.recipient.as_str(),
                n.sink.as_str(),
                n.to.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

fn to_sre_leads() -> Vec<Route<'static>> {
    vec![
        (
            Approvers,
            "sre-leads",
            "team-mail",
            vec!["sre-leads@example.com"],
        ),
        (Approvers, "sre-leads", "chat", vec![]),
    ]
}

fn to_alice() -> Vec<Route<'static>> {
    vec![
        (
            Requester,
            "alice",
            "team-mail",
            vec!["alice@corp.example.com"],
        ),
        (Requester, "alice", "chat", vec![]),
    ]
}

/// A bare outbox entry `id`, created at `t0`; a pending one is due at once.
fn entry(id: &str, state: DeliveryState) -> Notification {
    Notification {
        id: id.to_owned(),
        event: NotificationEvent::Approved,
        audience: Requester,
        recipient: "alice".to_owned(),
        sink: "chat".to_owned(),
        to: Vec::new(),
        actor: None,
        message: None,
        created_at: t0(),
        state,
        attempts: 0,
        next_attempt_at: (state == Pending).then(t0),
        sent_at: None,
        last_error: None,
    }
}

fn find<'a>(outbox: &'a [Notification], id: &str) -> &'a Notification {
    outbox.iter().find(|n| n.id == id).unwrap()
}

/// Every transition the state machine makes.
const TRANSITIONS: [(Option<Phase>, Phase); 8] = [
    (None, Phase::Pending),
    (None, Phase::Approved),
    (None, Phase::Denied),
    (Some(Phase::Pending), Phase::Approved),
    (Some(Phase::Pending), Phase::Denied),
    (Some(Phase::Pending), Phase::Expired),
    (Some(Phase::Approved), Phase::Revoked),
    (Some(Phase::Approved), Phase::Expired),
];

const EVENTS: [NotificationEvent; 7] = [
    NotificationEvent::Submitted,
    NotificationEvent::Approved,
    NotificationEvent::Denied,
    NotificationEvent::Revoked,
    NotificationEvent::Expired,
    NotificationEvent::Ended,
    NotificationEvent::GrantEnding,
];

// ---------------------------------------------------------------------------------------------
// plan::for_transition

#[test]
fn a_manual_request_submitted_tells_its_approver_group_only() {
    let owed = owed(None, Phase::Pending, &status(STATUS_PENDING));
    assert_eq!(routed(&owed, NotificationEvent::Submitted), to_sre_leads());
}

#[test]
fn a_request_without_approval_type_counts_as_manual() {
    let mut s = status(STATUS_PENDING);
    s.approval_type = None;
    let owed = owed(None, Phase::Pending, &s);
    assert_eq!(routed(&owed, NotificationEvent::Submitted), to_sre_leads());
}

#[test]
fn an_auto_request_waiting_in_pending_asks_no_approver() {
    let s = status("{phase: Pending, approverGroup: sre-leads, approvalType: Auto, requestId: x}");
    assert_eq!(owed(None, Phase::Pending, &s), []);
}

#[test]
fn the_approver_group_comes_from_the_status_the_transition_wrote() {
    // The stored status still names the old group; the new status is what counts.
    let r = request("status: {phase: Pending, approverGroup: sre-leads}");
    let s = status("{phase: Pending, approverGroup: db-admins, approvalType: Manual}");
    let owed = plan::for_transition(
        &r,
        &s,
        &transition(None, Phase::Pending),
        &config(CONFIG),
        at(0),
    );
    assert_eq!(
        routed(&owed, NotificationEvent::Submitted),
        [(Approvers, "db-admins", "team-mail", vec!["dba@example.com"])]
    );
}

#[test]
fn a_group_without_routes_is_told_nothing() {
    let s = status("{phase: Pending, approverGroup: nobody, approvalType: Manual}");
    assert_eq!(owed(None, Phase::Pending, &s), []);
    let s = status("{phase: Pending, approvalType: Manual}");
    assert_eq!(owed(None, Phase::Pending, &s), []);
}

#[test]
fn approving_a_pending_request_tells_the_approvers_and_the_requester() {
    let owed = owed(
        Some(Phase::Pending),
        Phase::Approved,
        &status_in(Phase::Approved),
    );
    let expected: Vec<_> = to_sre_leads().into_iter().chain(to_alice()).collect();
    assert_eq!(routed(&owed, NotificationEvent::Approved), expected);
}

#[test]
fn an_auto_approval_tells_only_the_requester() {
    let owed = owed(None, Phase::Approved, &status_in(Phase::Approved));
    assert_eq!(routed(&owed, NotificationEvent::Approved), to_alice());
}

#[test]
fn denying_a_pending_request_tells_the_approvers_and_the_requester() {
    let owed = owed(
        Some(Phase::Pending),
        Phase::Denied,
        &status_in(Phase::Denied),
    );
    let expected: Vec<_> = to_sre_leads().into_iter().chain(to_alice()).collect();
    assert_eq!(routed(&owed, NotificationEvent::Denied), expected);
}

#[test]
fn a_request_denied_on_first_sight_tells_only_the_requester() {
    let owed = owed(None, Phase::Denied, &status_in(Phase::Denied));
    assert_eq!(routed(&owed, NotificationEvent::Denied), to_alice());
}

#[test]
fn revoking_a_grant_tells_the_approvers_and_the_requester() {
    let owed = owed(
        Some(Phase::Approved),
        Phase::Revoked,
        &status_in(Phase::Revoked),
    );
    let expected: Vec<_> = to_sre_leads().into_iter().chain(to_alice()).collect();
    assert_eq!(routed(&owed, NotificationEvent::Revoked), expected);
}

#[test]
fn a_pending_request_expiring_tells_the_approvers_and_the_requester() {
    let owed = owed(
        Some(Phase::Pending),
        Phase::Expired,
        &status_in(Phase::Expired),
    );
    let expected: Vec<_> = to_sre_leads().into_iter().chain(to_alice()).collect();
    assert_eq!(routed(&owed, NotificationEvent::Expired), expected);
}

#[test]
fn a_grant_running_out_is_ended_to_the_requester_only() {
    let owed = owed(
        Some(Phase::Approved),
        Phase::Expired,
        &status_in(Phase::Expired),
    );
    assert_eq!(routed(&owed, NotificationEvent::Ended), to_alice());
}

#[test]
fn a_request_without_requester_tells_no_requester() {
    let mut r = request("");
    r.spec.requester = None;
    let owed = plan::for_transition(
        &r,
        &status_in(Phase::Approved),
        &transition(Some(Phase::Pending), Phase::Approved),
        &config(CONFIG),
        at(0),
    );
    assert_eq!(routed(&owed, NotificationEvent::Approved), to_sre_leads());
}

#[test]
fn routes_of_one_group_to_one_sink_make_one_entry_naming_each_address_once() {
    let c = config(
        r"
sinks:
- {name: team-mail, smtp: {host: smtp.example.com, from: kubepam@example.com}}
- {name: chat, webhook: {url: 'https://chat.example.com/hooks/pam'}}
approverRoutes:
- {group: sre-leads, sink: team-mail, to: [a@example.com, b@example.com, a@example.com]}
- {group: sre-leads, sink: chat}
- {group: sre-leads, sink: team-mail, to: [b@example.com, c@example.com]}
",
    );
    let owed = plan::for_transition(
        &request(""),
        &status(STATUS_PENDING),
        &transition(None, Phase::Pending),
        &c,
        at(0),
    );
    assert_eq!(
        routed(&owed, NotificationEvent::Submitted),
        [
            (
                Approvers,
                "sre-leads",
                "team-mail",
                vec!["a@example.com", "b@example.com", "c@example.com"]
            ),
            (Approvers, "sre-leads", "chat", vec![]),
        ]
    );
}

#[test]
fn the_requesters_listed_address_goes_before_the_template() {
    let c = config(CONFIG);
    let route = &c.requester_routes[0];
    assert_eq!(
        plan::requester_address(route, "alice").as_deref(),
        Some("alice@corp.example.com")
    );
    assert_eq!(
        plan::requester_address(route, "carol").as_deref(),
        Some("carol@example.com")
    );
    // The webhook route has neither.
    assert_eq!(
        plan::requester_address(&c.requester_routes[1], "alice"),
        None
    );
}

#[test]
fn a_requester_without_a_mail_address_gets_a_failed_entry_that_says_why() {
    let user = "system:serviceaccount:ns:sa";
    let mut r = request("");
    r.spec.requester = Some(user.to_owned());
    let owed = plan::for_transition(
        &r,
        &status_in(Phase::Approved),
        &transition(None, Phase::Approved),
        &config(CONFIG),
        at(60),
    );
    assert_eq!(
        routed(&owed, NotificationEvent::Approved),
        [
            (Requester, user, "team-mail", vec![]),
            (Requester, user, "chat", vec![]),
        ]
    );
    let mail = &owed[0];
    assert_eq!(mail.state, Failed);
    assert_eq!(mail.next_attempt_at, None);
    let error = mail.last_error.as_deref().unwrap();
    assert!(error.contains(&format!("{user:?}")), "{error}");
    assert!(error.contains("requesterRoutes[].addresses"), "{error}");
    assert!(error.contains("add it"), "{error}");
    // A webhook can do without an address.
    let hook = &owed[1];
    assert_eq!(hook.state, Pending);
    assert_eq!(hook.last_error, None);
    assert_eq!(hook.next_attempt_at, Some(at(60)));
}

#[test]
fn new_entries_are_pending_untried_and_due_at_once() {
    for (from, to) in TRANSITIONS {
        let owed = owed(from, to, &status_in(to));
        for n in &owed {
            assert_eq!(n.state, Pending, "{from:?} -> {to:?}: {n:#?}");
            assert_eq!(n.attempts, 0);
            assert_eq!(n.created_at, at(60));
            assert_eq!(n.next_attempt_at, Some(at(60)));
            assert_eq!(n.sent_at, None);
            assert_eq!(n.last_error, None);
            assert_eq!(n.actor.as_deref(), Some("bob"));
            assert_eq!(n.message.as_deref(), Some("looks fine"));
        }
    }
}

#[test]
fn entry_ids_are_unique_within_a_plan() {
    let c = config(
        r"
sinks:
- {name: team-mail, smtp: {host: smtp.example.com, from: kubepam@example.com}}
- {name: chat, webhook: {url: 'https://chat.example.com/hooks/pam'}}
approverRoutes:
- {group: sre-leads, sink: team-mail, to: [a@example.com]}
- {group: sre-leads, sink: chat}
- {group: sre-leads, sink: team-mail, to: [b@example.com]}
- {group: sre-leads, sink: chat, to: [c@example.com]}
requesterRoutes:
- {sink: team-mail, addressTemplate: '{user}@example.com'}
- {sink: chat}
- {sink: team-mail, addressTemplate: '{user}@other.example.com'}
",
    );
    for (from, to) in TRANSITIONS {
        let owed = plan::for_transition(
            &request(""),
            &status_in(to),
            &transition(from, to),
            &c,
            at(0),
        );
        let ids: BTreeSet<&str> = owed.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids.len(), owed.len(), "{from:?} -> {to:?}: {owed:#?}");
    }
}

#[test]
fn planning_the_same_transition_again_makes_the_same_ids() {
    let s = status_in(Phase::Approved);
    let t = transition(Some(Phase::Pending), Phase::Approved);
    let first = plan::for_transition(&request(""), &s, &t, &config(CONFIG), at(0));
    let again = plan::for_transition(&request(""), &s, &t, &config(CONFIG), at(90));
    let ids = |owed: &[Notification]| owed.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again));
}

// ---------------------------------------------------------------------------------------------
// plan::grant_ending_at and plan::grant_ending

/// Alice's request, approved at `at(decided)` until `at(until)`.
fn approved(decided: i64, until: i64) -> ElevationRequest {
    request(&format!(
        "status: {{phase: Approved, requestId: {REQUEST_ID}, approverGroup: sre-leads, decidedAt: '{}', grantedUntil: '{}'}}",
        at(decided).to_rfc3339(),
        at(until).to_rfc3339()
    ))
}

#[test]
fn the_grant_ending_notice_is_due_the_notice_period_before_the_grant_ends() {
    assert_eq!(
        plan::grant_ending_at(&approved(0, 2 * H), &config(CONFIG)),
        Some(at(2 * H - 15 * 60))
    );
}

#[test]
fn no_grant_ending_notice_without_the_setting() {
    let mut c = config(CONFIG);
    c.grant_ending_notice = None;
    assert_eq!(plan::grant_ending_at(&approved(0, 2 * H), &c), None);
    assert_eq!(plan::grant_ending(&approved(0, 2 * H), &c, at(2 * H)), []);
}

#[test]
fn no_grant_ending_notice_without_requester_routes() {
    let mut c = config(CONFIG);
    c.requester_routes.clear();
    assert_eq!(plan::grant_ending_at(&approved(0, 2 * H), &c), None);
}

#[test]
fn no_grant_ending_notice_unless_approved() {
    for phase in [
        Phase::Pending,
        Phase::Denied,
        Phase::Expired,
        Phase::Revoked,
    ] {
        let mut r = approved(0, 2 * H);
        r.status.as_mut().unwrap().phase = Some(phase);
        assert_eq!(plan::grant_ending_at(&r, &config(CONFIG)), None, "{phase}");
        assert_eq!(plan::grant_ending(&r, &config(CONFIG), at(2 * H)), []);
    }
    let mut r = approved(0, 2 * H);
    r.status = None;
    assert_eq!(plan::grant_ending_at(&r, &config(CONFIG)), None);
}

#[test]
fn a_grant_no_longer_than_the_notice_gets_no_notice() {
    let c = config(CONFIG);
    assert_eq!(plan::grant_ending_at(&approved(0, 10 * 60), &c), None);
    assert_eq!(plan::grant_ending_at(&approved(0, 15 * 60), &c), None);
    assert_eq!(
        plan::grant_ending_at(&approved(0, 15 * 60 + 1), &c),
        Some(at(1))
    );
}

#[test]
fn grant_ending_owes_nothing_before_its_time_and_nothing_once_recorded() {
    let c = config(CONFIG);
    let mut r = approved(0, 2 * H);
    let due = 2 * H - 15 * 60;
    assert_eq!(plan::grant_ending(&r, &c, at(due - 1)), []);
    let owed = plan::grant_ending(&r, &c, at(due));
    assert_eq!(routed(&owed, NotificationEvent::GrantEnding), to_alice());
    for n in &owed {
        assert_eq!(n.actor.as_deref(), Some(ACTOR_KUBEPAM));
        assert_eq!(
            n.message.as_deref(),
            Some("the grant ends at 2025-01-01T10:00:00Z")
        );
        assert_eq!((n.state, n.next_attempt_at), (Pending, Some(at(due))));
    }
    // Still owed a little later, as long as it is not recorded.
    assert_eq!(plan::grant_ending(&r, &c, at(due + 60)).len(), 2);

    let id = owed[0].id.clone();
    let outbox = &mut r.status.as_mut().unwrap().notifications;
    plan::enqueue(outbox, owed);
    assert!(outbox::record(outbox, &id, &Outcome::Sent, at(due)));
    assert_eq!(plan::grant_ending(&r, &c, at(due + 60)), []);
    assert_eq!(plan::grant_ending(&r, &c, at(2 * H)), []);
}

// ---------------------------------------------------------------------------------------------
// plan::enqueue

#[test]
fn enqueue_keeps_an_entry_already_present_as_it_is() {
    let mut sent = entry("approved.requester.chat", Sent);
    sent.attempts = 2;
    sent.sent_at = Some(at(5));
    let mut outbox = vec![sent.clone()];
    plan::enqueue(
        &mut outbox,
        vec![
            entry("approved.requester.chat", Pending),
            entry("approved.approvers.chat", Pending),
        ],
    );
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox[0], sent);
    assert_eq!(outbox[1].id, "approved.approvers.chat");
}

#[test]
fn enqueue_beyond_the_limit_drops_the_oldest_delivered_entries_first() {
    let mut outbox: Vec<Notification> = (0..NOTIFICATION_LIMIT)
        .map(|i| {
            let state = match i {
                0 | 2 => Pending,
                3 => Failed,
                _ => Sent,
            };
            entry(&format!("old-{i}"), state)
        })
        .collect();
    plan::enqueue(
        &mut outbox,
        vec![entry("new-0", Pending), entry("new-1", Pending)],
    );
    assert_eq!(outbox.len(), NOTIFICATION_LIMIT);
    let ids: Vec<&str> = outbox.iter().map(|n| n.id.as_str()).collect();
    // old-1 (Sent) and old-3 (Failed) were the oldest not pending.
    assert_eq!(&ids[..4], ["old-0", "old-2", "old-4", "old-5"]);
    assert_eq!(&ids[NOTIFICATION_LIMIT - 2..], ["new-0", "new-1"]);
}

#[test]
fn enqueue_never_drops_a_pending_entry() {
    let mut outbox: Vec<Notification> = (0..NOTIFICATION_LIMIT)
        .map(|i| entry(&format!("old-{i}"), Pending))
        .collect();
    outbox[7].state = Sent;
    plan::enqueue(
        &mut outbox,
        (0..3)
            .map(|i| entry(&format!("new-{i}"), Pending))
            .collect(),
    );
    assert_eq!(outbox.len(), NOTIFICATION_LIMIT + 2);
    assert!(outbox.iter().all(|n| n.state == Pending));
}

// ---------------------------------------------------------------------------------------------
// outbox

#[test]
fn due_lists_only_pending_entries_whose_time_has_come() {
    let mut later = entry("later", Pending);
    later.next_attempt_at = Some(at(20));
    let mut soon = entry("soon", Pending);
    soon.next_attempt_at = Some(at(10));
    let outbox = vec![entry("sent", Sent), later, soon, entry("failed", Failed)];
    let ids = |now| -> Vec<String> {
        outbox::due(&outbox, now)
            .iter()
            .map(|n| n.id.clone())
            .collect()
    };
    assert_eq!(ids(at(9)), Vec::<String>::new());
    assert_eq!(ids(at(10)), ["soon"]);
    assert_eq!(ids(at(20)), ["later", "soon"]);
    assert_eq!(ids(at(10_000)), ["later", "soon"]);
}

#[test]
fn next_due_is_the_earliest_pending_time() {
    assert_eq!(outbox::next_due(&[]), None);
    let mut later = entry("later", Pending);
    later.next_attempt_at = Some(at(20));
    let mut soon = entry("soon", Pending);
    soon.next_attempt_at = Some(at(10));
    let mut failed = entry("failed", Failed);
    failed.created_at = at(-100);
    assert_eq!(outbox::next_due(&[failed.clone()]), None);
    assert_eq!(outbox::next_due(&[failed, later, soon]), Some(at(10)));
}

#[test]
fn backoff_starts_at_a_second_and_doubles_up_to_a_minute() {
    let secs = |attempts| outbox::backoff(attempts).num_seconds();
    assert_eq!(FIRST_RETRY, TimeDelta::seconds(1));
    assert_eq!(MAX_RETRY, TimeDelta::seconds(60));
    assert_eq!(
        [
            secs(1),
            secs(2),
            secs(3),
            secs(4),
            secs(5),
            secs(6),
            secs(7)
        ],
        [1, 2, 4, 8, 16, 32, 60]
    );
    assert_eq!(secs(0), 1);
    assert_eq!(secs(8), 60);
    assert_eq!(secs(17), 60);
    assert_eq!(secs(100), 60);
    assert_eq!(secs(u32::MAX), 60);
}

#[test]
fn sent_records_the_time_and_clears_the_error() {
    let mut outbox = vec![entry("a", Pending)];
    assert!(outbox::record(
        &mut outbox,
        "a",
        &Outcome::Retry("timeout".into()),
        at(1)
    ));
    assert!(outbox::record(&mut outbox, "a", &Outcome::Sent, at(5)));
    let a = &outbox[0];
    assert_eq!(a.state, Sent);
    assert_eq!(a.sent_at, Some(at(5)));
    assert_eq!(a.last_error, None);
    assert_eq!(a.next_attempt_at, None);
    assert_eq!(a.attempts, 2);
}

#[test]
fn a_retry_stays_pending_and_waits_the_backoff() {
    let mut outbox = vec![entry("a", Pending), entry("b", Pending)];
    for (attempts, now) in [(1, at(10)), (2, at(20)), (3, at(40))] {
        assert!(outbox::record(
            &mut outbox,
            "a",
            &Outcome::Retry(format!("503 number {attempts}")),
            now
        ));
        let a = find(&outbox, "a");
        assert_eq!(a.state, Pending);
        assert_eq!(a.attempts, attempts);
        assert_eq!(a.next_attempt_at, Some(now + outbox::backoff(attempts)));
        assert_eq!(
            a.last_error.as_deref(),
            Some(format!("503 number {attempts}").as_str())
        );
    }
    assert_eq!(outbox[1], entry("b", Pending));
}

#[test]
fn a_retry_a_day_after_the_event_gives_up() {
    let mut outbox = vec![entry("a", Pending)];
    let day = GIVE_UP_AFTER.num_seconds();
    let retry = Outcome::Retry("connection refused".into());
    assert!(outbox::record(&mut outbox, "a", &retry, at(day - 1)));
    assert_eq!(outbox[0].state, Pending);
    assert!(outbox::record(&mut outbox, "a", &retry, at(day)));
    let a = &outbox[0];
    assert_eq!(a.state, Failed);
    assert_eq!(a.next_attempt_at, None);
    assert_eq!(a.sent_at, None);
    let error = a.last_error.as_deref().unwrap();
    assert!(error.contains("given up after 2 tries"), "{error}");
    assert!(error.ends_with("connection refused"), "{error}");
}

#[test]
fn a_failure_fails_at_once() {
    let mut outbox = vec![entry("a", Pending)];
    assert!(outbox::record(
        &mut outbox,
        "a",
        &Outcome::Fail("sink \"gone\" is not configured".into()),
        at(1)
    ));
    let a = &outbox[0];
    assert_eq!((a.state, a.attempts, a.next_attempt_at), (Failed, 1, None));
    assert_eq!(
        a.last_error.as_deref(),
        Some("sink \"gone\" is not configured")
    );
}

#[test]
fn recording_on_a_settled_or_unknown_entry_changes_nothing() {
    let mut outbox = vec![entry("a", Pending), entry("b", Pending)];
    assert!(outbox::record(&mut outbox, "a", &Outcome::Sent, at(1)));
    assert!(outbox::record(
        &mut outbox,
        "b",
        &Outcome::Fail("bad".into()),
        at(1)
    ));
    let settled = outbox.clone();
    // The same outcome again, as after a conflict and a re-read, and any other outcome.
    for outcome in [
        Outcome::Sent,
        Outcome::Retry("again".into()),
        Outcome::Fail("worse".into()),
    ] {
        for id in ["a", "b", "unknown"] {
            assert!(!outbox::record(&mut outbox, id, &outcome, at(2)));
            assert_eq!(outbox, settled);
        }
    }
}

#[test]
fn backlog_counts_the_pending_entries() {
    let outbox = vec![
        entry("a", Pending),
        entry("b", Sent),
        entry("c", Failed),
        entry("d", Pending),
    ];
    assert_eq!(outbox::backlog(&outbox), 2);
}

// ---------------------------------------------------------------------------------------------
// render

/// The value of the table row `label` in a message's text.
fn row<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no row {label} in:\n{text}"))
        .trim()
}

/// The Submitted entry to `sre-leads` by mail, and the request in its new status.
fn submitted() -> (ElevationRequest, Notification) {
    let r = request(&format!("status: {STATUS_PENDING}"));
    let entry = owed(None, Phase::Pending, &status(STATUS_PENDING)).remove(0);
    (r, entry)
}

/// What a POSIX shell makes of the `-p "..."` argument of a patch command, `whoami` answering
/// `user`, parsed as JSON.
fn patch_as_run_by(command: &str, user: &str) -> Value {
    let (_, argument) = command.split_once(" -p \"").unwrap();
    let quoted = argument.strip_suffix('"').unwrap();
    let expanded = quoted.replace(WHOAMI, user);
    // Inside double quotes only `\"` may remain special: no other `"`, `$`, backquote or `\`.
    let rest = expanded.replace("\\\"", "");
    assert!(
        !rest.contains(['"', '$', '`', '\\']),
        "{command} leaves {rest}"
    );
    serde_json::from_str(&expanded.replace("\\\"", "\"")).unwrap()
}

#[test]
fn a_submitted_message_names_the_request_and_gives_the_exact_commands() {
    let (r, entry) = submitted();
    let m = render::message(&r, &entry, "1h");
    assert_eq!(
        m.subject,
        "[kubepam] alice requests access (fix-prod) for 2h: approval needed"
    );
    assert_eq!(row(&m.text, "Request:"), "fix-prod");
    assert_eq!(row(&m.text, "Requester:"), "alice");
    assert_eq!(row(&m.text, "Policy:"), "delete-pods");
    assert_eq!(row(&m.text, "Scope:"), "namespace shop");
    assert_eq!(row(&m.text, "Duration:"), "2h");
    assert_eq!(row(&m.text, "Reason:"), "INC-42 stuck pod");
    assert_eq!(
        row(&m.text, "Expires:"),
        "2025-01-02T08:00:00Z if nobody decides"
    );
    let lines: Vec<&str> = m.text.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"kubectl pam approve fix-prod"),
        "{}",
        m.text
    );
    assert!(
        lines.contains(&"kubectl pam deny fix-prod -m \"<why>\""),
        "{}",
        m.text
    );
    for decision in ["Approve", "Deny"] {
        let patch = lines
            .iter()
            .find(|l| {
                l.starts_with("kubectl patch elevationrequest fix-prod --type=merge -p ")
                    && l.contains(&format!("\\\"decision\\\":\\\"{decision}\\\""))
            })
            .unwrap_or_else(|| panic!("no {decision} patch in:\n{}", m.text));
        assert_eq!(
            patch_as_run_by(patch, "bob"),
            json!({"spec": {"reviews": {"bob": {"decision": decision}}}})
        );
    }
    // The transition's sentence is not repeated to approvers who still have to decide.
    assert!(!m.text.contains("Note:"), "{}", m.text);
    assert!(!m.text.contains("Nothing is left to decide"), "{}", m.text);
}

#[test]
fn the_patch_commands_make_the_approvers_own_review_in_a_shell() {
    let commands = render::commands("fix-prod");
    assert_eq!(commands.approve, "kubectl pam approve fix-prod");
    assert_eq!(
        patch_as_run_by(&commands.approve_patch, "carol@example.com"),
        json!({"spec": {"reviews": {"carol@example.com": {"decision": "Approve"}}}})
    );
    assert_eq!(
        patch_as_run_by(&commands.deny_patch, "bob"),
        json!({"spec": {"reviews": {"bob": {"decision": "Deny"}}}})
    );
}

#[test]
fn a_submitted_message_shows_the_default_duration_and_cluster_wide_scope_when_spec_has_none() {
    let (mut r, entry) = submitted();
    r.spec.duration = None;
    r.spec.namespace = None;
    let m = render::message(&r, &entry, "1h");
    assert_eq!(row(&m.text, "Duration:"), "1h");
    assert_eq!(
        row(&m.text, "Scope:"),
        "cluster-wide (as far as the policy allows)"
    );
    assert!(m.subject.contains("for 1h"), "{}", m.subject);
    let body = render::webhook_body(&r, &entry, &m, PayloadFormat::Json, "1h");
    assert_eq!(body["request"]["duration"], "1h");
    assert_eq!(body["request"]["namespace"], Value::Null);
}

#[test]
fn decision_messages_tell_approvers_that_nothing_is_left_to_decide() {
    for (from, to) in TRANSITIONS {
        let r = request(&format!("status: {{phase: {to}, requestId: {REQUEST_ID}}}"));
        for n in owed(from, to, &status_in(to)) {
            let m = render::message(&r, &n, "1h");
            let settled = m
                .text
                .contains("\nNothing is left to decide on this request.\n");
            let commands = m.text.contains("kubectl pam approve");
            match (n.event, n.audience) {
                (NotificationEvent::Submitted, _) => assert!(!settled && commands, "{}", m.text),
                (_, Approvers) => assert!(settled && !commands, "{}", m.text),
                (_, Requester) => assert!(!settled && !commands, "{}", m.text),
            }
            if n.event != NotificationEvent::Submitted {
                assert_eq!(row(&m.text, "Note:"), "looks fine");
            }
        }
    }
}

#[test]
fn a_decision_message_says_who_decided() {
    let r = approved(0, 2 * H);
    let owed = owed(
        Some(Phase::Pending),
        Phase::Approved,
        &status_in(Phase::Approved),
    );
    let m = render::message(&r, &owed[0], "1h");
    assert_eq!(m.subject, "[kubepam] fix-prod approved: access for alice");
    assert!(
        m.text
            .starts_with("The request of alice was approved by bob.\n"),
        "{}",
        m.text
    );
    assert_eq!(row(&m.text, "Until:"), "2025-01-01T10:00:00Z");
}

#[test]
fn the_json_body_has_the_documented_fields() {
    let r = approved(0, 2 * H);
    let owed = owed(
        Some(Phase::Pending),
        Phase::Approved,
        &status_in(Phase::Approved),
    );
    let n = &owed[0];
    let m = render::message(&r, n, "1h");
    let body = render::webhook_body(&r, n, &m, PayloadFormat::Json, "1h");
    assert_eq!(body["apiVersion"], "kubepam.io/v1alpha1");
    assert_eq!(body["kind"], "Notification");
    assert_eq!(
        body["id"],
        format!("{REQUEST_ID}/approved.approvers.team-mail")
    );
    assert_eq!(body["event"], "Approved");
    assert_eq!(body["audience"], "Approvers");
    assert_eq!(body["recipient"], "sre-leads");
    assert_eq!(body["to"], json!(["sre-leads@example.com"]));
    assert_eq!(body["actor"], "bob");
    assert_eq!(body["message"], "looks fine");
    assert_eq!(body["subject"], m.subject);
    assert_eq!(body["text"], m.text);
    let request = &body["request"];
    assert_eq!(request["name"], "fix-prod");
    assert_eq!(request["requestId"], REQUEST_ID);
    assert_eq!(request["requester"], "alice");
    assert_eq!(request["policy"], "delete-pods");
    assert_eq!(request["namespace"], "shop");
    assert_eq!(request["duration"], "2h");
    assert_eq!(request["reason"], "INC-42 stuck pod");
    assert_eq!(request["phase"], "Approved");
    assert_eq!(request["approverGroup"], "sre-leads");
    assert_eq!(body.get("commands"), None);
}

#[test]
fn only_a_submitted_body_carries_the_commands() {
    let (r, entry) = submitted();
    let m = render::message(&r, &entry, "1h");
    let body = render::webhook_body(&r, &entry, &m, PayloadFormat::Json, "1h");
    let commands = render::commands("fix-prod");
    assert_eq!(
        body["commands"],
        json!({
            "approve": commands.approve,
            "approvePatch": commands.approve_patch,
            "deny": commands.deny,
            "denyPatch": commands.deny_patch,
        })
    );
    for event in EVENTS {
        let n = Notification {
            event,
            ..entry.clone()
        };
        let m = render::message(&r, &n, "1h");
        let body = render::webhook_body(&r, &n, &m, PayloadFormat::Json, "1h");
        assert_eq!(
            body.get("commands").is_some(),
            event == NotificationEvent::Submitted,
            "{event:?}"
        );
    }
}

#[test]
fn a_slack_body_is_only_text_led_by_the_bold_subject() {
    let (r, entry) = submitted();
    let m = render::message(&r, &entry, "1h");
    let body = render::webhook_body(&r, &entry, &m, PayloadFormat::Slack, "1h");
    let object = body.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["text"]);
    let text = body["text"].as_str().unwrap();
    let escaped = format!("*{}*\n{}", m.subject, m.text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert_eq!(text, escaped);
}

#[test]
fn a_slack_body_keeps_what_people_wrote_as_text() {
    let (mut r, entry) = submitted();
    r.spec.reason = "<!channel> see <https://evil.example|Approve here> & hurry".to_owned();
    let m = render::message(&r, &entry, "1h");
    let body = render::webhook_body(&r, &entry, &m, PayloadFormat::Slack, "1h");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("&lt;!channel&gt; see &lt;https://evil.example|Approve here&gt; &amp; hurry"),
        "{text}"
    );
    assert!(!text.contains("<!channel>"));
}

#[test]
fn the_message_id_is_stable_for_a_request_and_entry() {
    let (r, entry) = submitted();
    let id = format!("{REQUEST_ID}/submitted.approvers.team-mail");
    assert_eq!(render::message(&r, &entry, "1h").id, id);
    assert_eq!(render::message(&r, &entry, "4h").id, id);
    // Planned again later (a transition decided again after a conflict): the same id.
    let again = plan::for_transition(
        &r,
        &status(STATUS_PENDING),
        &transition(None, Phase::Pending),
        &config(CONFIG),
        at(600),
    );
    assert_eq!(render::message_id(&r, &again[0]), id);
    // Another entry of the same request has another id.
    assert_ne!(render::message_id(&r, &again[1]), id);
    // Without a request id yet, the uid stands in.
    assert_eq!(
        render::message_id(&request(""), &entry),
        format!("{UID}/submitted.approvers.team-mail")
    );
}

// ---------------------------------------------------------------------------------------------
// health

#[test]
fn a_sink_is_reported_failing_once_when_its_failures_reach_the_threshold() {
    let mut health = BTreeMap::new();
    for failure in 1..FAILING_AFTER {
        let error = format!("refused {failure}");
        assert_eq!(
            health::record(&mut health, "chat", Some(&error), at(failure.into())),
            None
        );
    }
    assert_eq!(
        health::record(&mut health, "chat", Some("refused"), at(100)),
        Some(Change::Failing {
            failures: FAILING_AFTER,
            error: "refused".to_owned()
        })
    );
    assert_eq!(
        health::record(&mut health, "chat", Some("refused again"), at(200)),
        None
    );
    let chat = &health["chat"];
    assert!(chat.is_failing());
    assert_eq!(chat.consecutive_failures, FAILING_AFTER + 1);
    assert_eq!(chat.failing_since, Some(at(1)));
    assert_eq!(chat.last_error.as_deref(), Some("refused again"));
}

#[test]
fn a_failing_sink_is_reported_recovered_once_on_its_next_success() {
    let mut health = BTreeMap::new();
    for i in 0..=FAILING_AFTER {
        health::record(&mut health, "chat", Some("down"), at(i.into()));
    }
    assert_eq!(
        health::record(&mut health, "chat", None, at(50)),
        Some(Change::Recovered {
            failures: FAILING_AFTER + 1
        })
    );
    assert_eq!(health["chat"], SinkHealth::default());
    assert_eq!(health::record(&mut health, "chat", None, at(60)), None);
}

#[test]
fn a_success_on_a_sink_not_failing_reports_nothing_and_resets_the_count() {
    let mut health = BTreeMap::new();
    assert_eq!(health::record(&mut health, "chat", None, at(0)), None);
    for i in 1..FAILING_AFTER {
        health::record(&mut health, "chat", Some("down"), at(i.into()));
    }
    assert_eq!(health::record(&mut health, "chat", None, at(10)), None);
    // A new run of failures starts from zero.
    for i in 1..FAILING_AFTER {
        assert_eq!(
            health::record(&mut health, "chat", Some("down"), at(10 + i64::from(i))),
            None
        );
    }
    assert!(!health["chat"].is_failing());
}

#[test]
fn the_condition_is_absent_without_sinks() {
    assert_eq!(
        health::condition(&[], &BTreeMap::new(), t0(), Some(1)),
        None
    );
}

#[test]
fn the_condition_is_true_when_no_sink_fails() {
    let mut health = BTreeMap::new();
    health::record(&mut health, "chat", Some("once"), at(0));
    let sinks = ["team-mail".to_owned(), "chat".to_owned()];
    let c = health::condition(&sinks, &health, at(5), Some(3)).unwrap();
    assert_eq!(c.type_, health::CONDITION_NOTIFICATIONS);
    assert_eq!(c.status, "True");
    assert_eq!(c.reason, "Delivering");
    assert_eq!(c.message, "every sink delivers");
    assert_eq!(c.observed_generation, Some(3));
}

#[test]
fn the_condition_is_false_naming_the_failing_sink_and_its_error() {
    let mut health = BTreeMap::new();
    for i in 0..FAILING_AFTER {
        health::record(&mut health, "chat", Some("HTTP 503"), at(i.into()));
    }
    health::record(&mut health, "team-mail", Some("timeout"), at(0));
    let sinks = ["team-mail".to_owned(), "chat".to_owned()];
    let c = health::condition(&sinks, &health, at(5), Some(3)).unwrap();
    assert_eq!(c.status, "False");
    assert_eq!(c.reason, "SinkFailing");
    assert!(c.message.contains("sink \"chat\""), "{}", c.message);
    assert!(c.message.contains("HTTP 503"), "{}", c.message);
    // Stable while the news is: no counts that change at every try.
    let later = {
        let mut health = health.clone();
        health::record(&mut health, "chat", Some("HTTP 503"), at(9));
        health::condition(&sinks, &health, at(10), Some(3)).unwrap()
    };
    assert_eq!(later.message, c.message);
    assert!(!c.message.contains("team-mail"), "{}", c.message);
    assert!(!c.message.contains("timeout"), "{}", c.message);
}

// ---------------------------------------------------------------------------------------------
// Properties

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        2 => Just(Outcome::Sent),
        5 => "[a-z ]{0,12}".prop_map(Outcome::Retry),
        1 => "[a-z ]{0,12}".prop_map(Outcome::Fail),
    ]
}

/// Seconds between two records: mostly short, sometimes hours (so that retries give up).
fn step() -> impl Strategy<Value = i64> {
    prop_oneof![4 => 0i64..120, 1 => 0i64..(12 * H)]
}

fn attempts() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..40, any::<u32>(), Just(u32::MAX)]
}

/// Strings as a hand-edited or hostile spec may hold them.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just("{user}".to_owned()),
        "[a-z][-a-z0-9.@]{0,12}",
        ".{0,12}",
        "\\PC{0,60}",
        "[\"\\\\$`'{}<>\n\r\t :@,]{0,12}",
    ]
}

fn template() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("{user}@example.com".to_owned()),
        Just("{user}".to_owned()),
        Just("pam+{user}@example.com".to_owned()),
        any_text(),
        (any_text(), any_text()).prop_map(|(a, b)| format!("{a}{{user}}{b}")),
    ])
}

proptest! {
    #[test]
    fn a_settled_entry_never_changes_and_a_pending_one_waits_for_the_future(
        records in proptest::collection::vec((0usize..4, outcome(), step()), 0..60),
    ) {
        let ids = ["a", "b", "c", "unknown"];
        let mut outbox: Vec<Notification> =
            ids[..3].iter().map(|id| entry(id, Pending)).collect();
        let mut last_record: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        let mut now = t0();
        for (which, outcome, step) in records {
            now += TimeDelta::seconds(step);
            let id = ids[which];
            let before = outbox.clone();
            let was_pending = before.iter().any(|n| n.id == id && n.state == Pending);
            let changed = outbox::record(&mut outbox, id, &outcome, now);
            prop_assert_eq!(changed, was_pending);
            if changed {
                last_record.insert(id, now);
            } else {
                prop_assert_eq!(&outbox, &before);
            }
            for (old, new) in before.iter().zip(&outbox) {
                if old.state != Pending {
                    prop_assert_eq!(old, new);
                }
                prop_assert!(new.attempts >= old.attempts);
                match new.state {
                    Pending => {
                        if let Some(recorded) = last_record.get(new.id.as_str()) {
                            prop_assert!(new.next_attempt_at.is_some_and(|t| t >= *recorded));
                        }
                    }
                    Sent => prop_assert!(new.sent_at.is_some() && new.last_error.is_none()),
                    Failed => prop_assert!(new.last_error.is_some() && new.next_attempt_at.is_none()),
                }
            }
        }
    }

    #[test]
    fn backoff_never_shrinks_with_more_attempts_and_stays_within_its_bounds(
        a in attempts(),
        b in attempts(),
    ) {
        let (few, many) = (a.min(b), a.max(b));
        prop_assert!(outbox::backoff(few) <= outbox::backoff(many));
        prop_assert!(outbox::backoff(a) <= outbox::backoff(a.saturating_add(1)));
        for n in [a, b] {
            prop_assert!((FIRST_RETRY..=MAX_RETRY).contains(&outbox::backoff(n)));
        }
    }

    #[test]
    fn a_requester_address_is_a_mail_address_or_none(
        user in any_text(),
        address_template in template(),
        listed in proptest::option::of(any_text()),
    ) {
        let route = RequesterRoute {
            sink: "team-mail".to_owned(),
            addresses: listed.iter().map(|a| (user.clone(), a.clone())).collect(),
            address_template,
        };
        if let Some(address) = plan::requester_address(&route, &user) {
            prop_assert!(plan::looks_like_mail_address(&address), "{:?}", address);
        }
    }

    #[test]
    fn a_plain_username_gets_its_templated_address(user in "[a-z][-a-z0-9._]{0,20}") {
        let route = RequesterRoute {
            sink: "team-mail".to_owned(),
            addresses: BTreeMap::new(),
            address_template: Some("{user}@example.com".to_owned()),
        };
        prop_assert_eq!(
            plan::requester_address(&route, &user),
            Some(format!("{user}@example.com"))
        );
    }

    #[test]
    fn rendering_never_panics_and_the_json_body_carries_the_reason(
        (name, reason, namespace, requester) in (
            proptest::option::of(any_text()),
            any_text(),
            proptest::option::of(any_text()),
            proptest::option::of(any_text()),
        ),
        (duration, default_duration, note) in (
            proptest::option::of(any_text()),
            any_text(),
            proptest::option::of(any_text()),
        ),
        with_status in any::<bool>(),
    ) {
        let mut r = if with_status {
            approved(0, 2 * H)
        } else {
            request("")
        };
        r.metadata.name = name;
        r.spec.reason.clone_from(&reason);
        r.spec.namespace = namespace;
        r.spec.requester = requester;
        r.spec.duration = duration;
        for event in EVENTS {
            for audience in [Approvers, Requester] {
                let n = Notification {
                    event,
                    audience,
                    message: note.clone(),
                    ..entry("x.y.z", Pending)
                };
                let m = render::message(&r, &n, &default_duration);
                prop_assert!(m.text.contains(&reason));
                let body = render::webhook_body(&r, &n, &m, PayloadFormat::Json, &default_duration);
                prop_assert_eq!(&body["request"]["reason"], &json!(reason));
                prop_assert_eq!(&body["id"], &json!(m.id));
                let slack = render::webhook_body(&r, &n, &m, PayloadFormat::Slack, &default_duration);
                let text = slack["text"].as_str().unwrap_or_default();
                let escape = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                let bold_subject = escape(&format!("*{}*", m.subject));
                prop_assert!(text.starts_with(&bold_subject));
                // Nothing a requester writes can become Slack markup.
                prop_assert!(!text.contains('<') && !text.contains('>'));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The requester's release and the booked window

#[test]
fn a_release_tells_the_approvers_and_the_requester_as_a_release() {
    let t = Transition {
        reason: crate::lifecycle::reason::RELEASED_BY_REQUESTER.to_owned(),
        actor: "alice".to_owned(),
        ..transition(Some(Phase::Approved), Phase::Revoked)
    };
    let owed = plan::for_transition(
        &request(""),
        &status_in(Phase::Revoked),
        &t,
        &config(CONFIG),
        at(60),
    );
    let expected: Vec<_> = to_sre_leads().into_iter().chain(to_alice()).collect();
    assert_eq!(routed(&owed, NotificationEvent::Released), expected);
}

/// Alice's request, approved at `at(decided)` for a window from `at(opens)` to `at(until)`.
fn booked(decided: i64, opens: i64, until: i64) -> ElevationRequest {
    request(&format!(
        "status: {{phase: Approved, requestId: {REQUEST_ID}, approverGroup: sre-leads, decidedAt: '{}', grantedFrom: '{}', grantedUntil: '{}'}}",
        at(decided).to_rfc3339(),
        at(opens).to_rfc3339(),
        at(until).to_rfc3339()
    ))
}

#[test]
fn the_requester_is_told_once_when_a_booked_window_opens() {
    let c = config(CONFIG);
    let r = booked(0, 2 * H, 3 * H);
    assert_eq!(plan::window_opens_at(&r, &c), Some(at(2 * H)));
    assert_eq!(plan::next_notice_at(&r, &c), Some(at(2 * H)));
    assert_eq!(plan::window_opened(&r, &c, at(2 * H - 1)), []);
    let owed = plan::window_opened(&r, &c, at(2 * H));
    assert_eq!(routed(&owed, NotificationEvent::WindowOpened), to_alice());
    assert!(owed[0].message.as_deref().unwrap().contains("opened"));
    // Recorded: owed no more.
    let mut r = r;
    plan::enqueue(&mut r.status.as_mut().unwrap().notifications, owed);
    assert_eq!(plan::window_opened(&r, &c, at(2 * H + 60)), []);
    // After the grant ended, too late to say it opened.
    assert_eq!(
        plan::window_opened(&booked(0, 2 * H, 3 * H), &c, at(3 * H)),
        []
    );
}

#[test]
fn a_grant_that_opened_at_its_approval_owes_no_window_notice() {
    let r = booked(60, 60, 3 * H);
    assert_eq!(plan::window_opens_at(&r, &config(CONFIG)), None);
}
