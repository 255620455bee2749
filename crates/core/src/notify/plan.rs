//! Which notifications a transition owes, to whom and through which sinks.

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{
    ApprovalType, Audience, DeliveryState, ElevationRequest, ElevationRequestStatus,
    NOTIFICATION_LIMIT, Notification, NotificationEvent, Notifications, Phase, Sink,
};
use crate::duration;
use crate::lifecycle::Transition;

/// The notifications a transition of `request` to `status` (the status the transition wrote)
/// owes under `config`. Entries that cannot be delivered as configured (a requester with no
/// mail address) come back `Failed`, with the reason, so nothing is dropped silently.
pub fn for_transition(
    request: &ElevationRequest,
    status: &ElevationRequestStatus,
    transition: &Transition,
    config: &Notifications,
    now: DateTime<Utc>,
) -> Vec<Notification> {
    let asked_approvers = transition.from == Some(Phase::Pending);
    let (event, approvers, requester) = match (transition.from, transition.to) {
        (_, Phase::Pending) => {
            let manual =
                status.approval_type.unwrap_or(ApprovalType::Manual) == ApprovalType::Manual;
            (NotificationEvent::Submitted, manual, false)
        }
        (_, Phase::Approved) => (NotificationEvent::Approved, asked_approvers, true),
        (_, Phase::Denied) => (NotificationEvent::Denied, asked_approvers, true),
        (_, Phase::Revoked)
            if transition.reason == crate::lifecycle::reason::RELEASED_BY_REQUESTER =>
        {
            (NotificationEvent::Released, true, true)
        }
        (_, Phase::Revoked) => (NotificationEvent::Revoked, true, true),
        (Some(Phase::Approved), Phase::Expired) => (NotificationEvent::Ended, false, true),
        (_, Phase::Expired) => (NotificationEvent::Expired, asked_approvers, true),
    };
    let mut owed = Vec::new();
    // The reviewer's comment, from the history line the transition wrote.
    let comment = status
        .history
        .last()
        .filter(|h| h.action == transition.to.as_str())
        .and_then(|h| h.comment.as_deref())
        .filter(|c| !c.is_empty() && !transition.message.contains(*c));
    let message = match comment {
        Some(comment) => format!("{}: {comment}", transition.message),
        None => transition.message.clone(),
    };
    let created = Created {
        event,
        actor: Some(transition.actor.clone()),
        message: Some(message),
        at: now,
    };
    if transition.reason == crate::lifecycle::reason::BREAK_GLASS {
        // Loud: every route of the approver groups, at once.
        let emergency = Created {
            event: NotificationEvent::Emergency,
            ..created.clone()
        };
        owed.extend(to_approvers(status, config, &emergency));
    } else if approvers {
        owed.extend(to_approvers(status, config, &created));
    }
    if requester {
        owed.extend(to_requester(request, config, &created));
    }
    owed
}

/// When the requester is to be told that the grant ends soon, while that is still owed:
/// `grantEndingNotice` before `grantedUntil`, only when that is after the approval (a grant
/// shorter than the notice gets none; the approval said when it ends), and not once the
/// notice is recorded.
pub fn grant_ending_at(
    request: &ElevationRequest,
    config: &Notifications,
) -> Option<DateTime<Utc>> {
    let notice = notice_period(config)?;
    let status = request.status.as_ref()?;
    let recorded = status
        .notifications
        .iter()
        .any(|n| n.event == NotificationEvent::GrantEnding);
    if status.phase != Some(Phase::Approved) || config.requester_routes.is_empty() || recorded {
        return None;
    }
    let until = status.granted_until?;
    let at = until.checked_sub_signed(notice)?;
    let decided = status.decided_at?;
    (at > decided).then_some(at)
}

/// The grant-ending notifications owed at `now`: none before [`grant_ending_at`], none after
/// the grant ended, and none once they are recorded.
pub fn grant_ending(
    request: &ElevationRequest,
    config: &Notifications,
    now: DateTime<Utc>,
) -> Vec<Notification> {
    let Some(at) = grant_ending_at(request, config) else {
        return Vec::new();
    };
    let Some(until) = request.status.as_ref().and_then(|s| s.granted_until) else {
        return Vec::new();
    };
    // Late (a restart, a sink long down) is fine; after the end it is not.
    if now < at || now >= until {
        return Vec::new();
    }
    let until = crate::util::time_for_people(until);
    let created = Created {
        event: NotificationEvent::GrantEnding,
        actor: Some(crate::lifecycle::ACTOR_KUBEPAM.to_owned()),
        message: Some(format!("the grant ends at {until}")),
        at: now,
    };
    to_requester(request, config, &created)
}

/// When the requester is to be told that their booked window opened, while that is still
/// owed: when the window opens (only for a window that opened after its approval), and not
/// once the notice is recorded.
pub fn window_opens_at(
    request: &ElevationRequest,
    config: &Notifications,
) -> Option<DateTime<Utc>> {
    let status = request.status.as_ref()?;
    let recorded = status
        .notifications
        .iter()
        .any(|n| n.event == NotificationEvent::WindowOpened);
    if status.phase != Some(Phase::Approved) || config.requester_routes.is_empty() || recorded {
        return None;
    }
    status.booked_opening()
}

/// The window-opened notifications owed at `now`: none before the window opens, none after
/// the grant ended, and none once they are recorded.
pub fn window_opened(
    request: &ElevationRequest,
    config: &Notifications,
    now: DateTime<Utc>,
) -> Vec<Notification> {
    let Some(opens) = window_opens_at(request, config) else {
        return Vec::new();
    };
    let Some(until) = request.status.as_ref().and_then(|s| s.granted_until) else {
        return Vec::new();
    };
    if now < opens || now >= until {
        return Vec::new();
    }
    let created = Created {
        event: NotificationEvent::WindowOpened,
        actor: Some(crate::lifecycle::ACTOR_KUBEPAM.to_owned()),
        message: Some(format!(
            "the booked window opened at {}; the grant ends at {}",
            crate::util::time_for_people(opens),
            crate::util::time_for_people(until)
        )),
        at: now,
    };
    to_requester(request, config, &created)
}

/// Every notice owed at `now` that no transition announces: the booked window opened, the
/// grant ends soon.
pub fn notices(
    request: &ElevationRequest,
    config: &Notifications,
    now: DateTime<Utc>,
) -> Vec<Notification> {
    let mut owed = window_opened(request, config, now);
    owed.extend(grant_ending(request, config, now));
    owed
}

/// When the next of [`notices`] falls due.
pub fn next_notice_at(request: &ElevationRequest, config: &Notifications) -> Option<DateTime<Utc>> {
    [
        window_opens_at(request, config),
        grant_ending_at(request, config),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// The configured notice period, when it parses (the CRD schema checks its form).
fn notice_period(config: &Notifications) -> Option<TimeDelta> {
    config
        .grant_ending_notice
        .as_deref()
        .and_then(|text| duration::parse(text).ok())
        .filter(|period| *period > TimeDelta::zero())
}

/// The notifications owed for what routing changed between `before` and `after` (the status
/// a reconcile read and the one it writes): each escalation group that may now decide is told
/// once (`Escalated`), and the approvers are reminded once when an emergency grant's review
/// becomes overdue (`ReviewOverdue`). Ids name the step, so deciding again owes nothing twice.
pub fn for_routing(
    before: Option<&ElevationRequestStatus>,
    after: &ElevationRequestStatus,
    config: &Notifications,
    now: DateTime<Utc>,
) -> Vec<Notification> {
    let mut owed = Vec::new();
    for (step, group) in crate::lifecycle::groups_opened(before, after) {
        let created = Created {
            event: NotificationEvent::Escalated,
            actor: Some(crate::lifecycle::ACTOR_KUBEPAM.to_owned()),
            message: Some(format!(
                "nobody has decided yet; members of group {group} may now decide too"
            )),
            at: now,
        };
        for mut entry in to_group(group, config, &created) {
            entry.id = format!(
                "escalated-{step}.{}",
                entry.id.trim_start_matches("escalated.")
            );
            owed.push(entry);
        }
    }
    let overdue_now = crate::lifecycle::review_overdue(after);
    if overdue_now && !before.is_some_and(crate::lifecycle::review_overdue) {
        let due = after.review_due_at.map_or_else(String::new, |d| {
            format!(" (due {})", crate::util::time_for_people(d))
        });
        let created = Created {
            event: NotificationEvent::ReviewOverdue,
            actor: Some(crate::lifecycle::ACTOR_KUBEPAM.to_owned()),
            message: Some(format!(
                "the review of this emergency access is overdue{due}"
            )),
            at: now,
        };
        owed.extend(to_approvers(after, config, &created));
    }
    owed
}

/// Adds `new` to an outbox: an id already present is kept as it is (a transition decided
/// again after a conflict owes nothing twice); beyond [`NOTIFICATION_LIMIT`] the oldest entries
/// no longer pending go first.
pub fn enqueue(outbox: &mut Vec<Notification>, new: Vec<Notification>) {
    for entry in new {
        if !outbox.iter().any(|n| n.id == entry.id) {
            outbox.push(entry);
        }
    }
    while outbox.len() > NOTIFICATION_LIMIT {
        match outbox
            .iter()
            .position(|n| n.state != DeliveryState::Pending)
        {
            Some(index) => {
                outbox.remove(index);
            }
            // All pending: keep them all; the CRD's limit is not enforced on status.
            None => break,
        }
    }
}

#[derive(Clone)]
struct Created {
    event: NotificationEvent,
    actor: Option<String>,
    message: Option<String>,
    at: DateTime<Utc>,
}

fn to_approvers(
    status: &ElevationRequestStatus,
    config: &Notifications,
    created: &Created,
) -> Vec<Notification> {
    match status.approver_group.as_deref() {
        Some(group) => to_group(group, config, created),
        None => Vec::new(),
    }
}

/// One entry per sink for the routes of `group`.
fn to_group(group: &str, config: &Notifications, created: &Created) -> Vec<Notification> {
    let group = group.to_owned();
    let mut owed: Vec<Notification> = Vec::new();
    for route in config.approver_routes.iter().filter(|r| r.group == group) {
        let id = entry_id(created.event, Audience::Approvers, &route.sink);
        // Several routes of one group to one sink make one message to all their addresses,
        // each named once.
        let index = if let Some(index) = owed.iter().position(|n| n.id == id) {
            index
        } else {
            owed.push(entry(
                id,
                created,
                Audience::Approvers,
                &group,
                &route.sink,
                Vec::new(),
            ));
            owed.len() - 1
        };
        let to = &mut owed[index].to;
        for address in &route.to {
            if !to.contains(address) {
                to.push(address.clone());
            }
        }
    }
    owed
}

fn to_requester(
    request: &ElevationRequest,
    config: &Notifications,
    created: &Created,
) -> Vec<Notification> {
    let Some(user) = request.spec.requester.as_deref() else {
        return Vec::new();
    };
    let mut owed: Vec<Notification> = Vec::new();
    for route in &config.requester_routes {
        let id = entry_id(created.event, Audience::Requester, &route.sink);
        if owed.iter().any(|n| n.id == id) {
            continue;
        }
        let address = requester_address(route, user);
        let is_mail = sink(config, &route.sink).is_some_and(|s| s.smtp.is_some());
        let mut notification = entry(
            id,
            created,
            Audience::Requester,
            user,
            &route.sink,
            address.iter().cloned().collect(),
        );
        if is_mail && address.is_none() {
            notification.state = DeliveryState::Failed;
            notification.next_attempt_at = None;
            notification.last_error = Some(format!(
                "no mail address for requester {user:?}: add it to requesterRoutes[].addresses \
                 of sink {:?}, or set an addressTemplate that makes one",
                route.sink
            ));
        }
        owed.push(notification);
    }
    owed
}

/// The requester's address on a route: the `addresses` entry, else the template, when it makes
/// something that looks like a mail address.
pub fn requester_address(route: &crate::api::RequesterRoute, user: &str) -> Option<String> {
    let address = route.addresses.get(user).cloned().or_else(|| {
        route
            .address_template
            .as_ref()
            .map(|template| template.replace("{user}", user))
    })?;
    looks_like_mail_address(&address).then_some(address)
}

/// One `@` with something on both sides and no whitespace, control character or angle bracket
/// (which would break a mail header).
pub fn looks_like_mail_address(address: &str) -> bool {
    let mut parts = address.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ':'))
}

/// The configured sink of that name.
pub fn sink<'a>(config: &'a Notifications, name: &str) -> Option<&'a Sink> {
    config.sinks.iter().find(|s| s.name == name)
}

fn entry_id(event: NotificationEvent, audience: Audience, sink: &str) -> String {
    let audience = match audience {
        Audience::Approvers => "approvers",
        Audience::Requester => "requester",
    };
    format!("{}.{audience}.{sink}", event.as_str().to_ascii_lowercase())
}

fn entry(
    id: String,
    created: &Created,
    audience: Audience,
    recipient: &str,
    sink: &str,
    to: Vec<String>,
) -> Notification {
    Notification {
        id,
        event: created.event,
        audience,
        recipient: recipient.to_owned(),
        sink: sink.to_owned(),
        to,
        actor: created.actor.clone(),
        message: created.message.clone(),
        created_at: created.at,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: Some(created.at),
        sent_at: None,
        last_error: None,
    }
}
