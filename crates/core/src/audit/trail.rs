//! A request's records: made from what a status write changes, and kept in that same write
//! (an outbox), so a crash loses none; the sequencer later seals them onto the chain.
//!
//! What is recorded: each review as it is written, each history entry (submission, decision,
//! transition, release, emergency confirmation), each change of a grant in force, and each use
//! of the grant. A record's id is the request's id and its number within the request, so a
//! receiver can drop one it has seen.

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;

use super::record::{AuditData, AuditOperation, AuditRecord};
use crate::api::{
    AuditEntry, AuditSettings, AuditStatus, ElevationRequest, ElevationRequestStatus, Execution,
    HistoryEntry, Phase, RequestAudit, find_condition,
};
use crate::lifecycle::{self, reason};

/// The most records a request keeps waiting for the chain. The sequencer takes them within
/// a second; this bounds a request's size while it cannot (the excess is counted in
/// `unrecorded`, never dropped silently).
pub const PENDING_LIMIT: usize = 1000;

/// The prefix of every record's type.
pub const TYPE_PREFIX: &str = "io.kubepam.";

/// Record the changes between the status read (`before`) and the one about to be written
/// (`after`): new reviews, new history entries, a grant in force that changed or opened.
pub fn note_changes(
    request: &ElevationRequest,
    before: Option<&ElevationRequestStatus>,
    after: &mut ElevationRequestStatus,
    now: DateTime<Utc>,
) {
    let known: &[HistoryEntry] = before.map(|b| b.history.as_slice()).unwrap_or_default();
    let (submitted, transitions): (Vec<&HistoryEntry>, Vec<&HistoryEntry>) = after
        .history
        .iter()
        .filter(|h| !known.contains(h))
        .partition(|h| h.action == Phase::Pending.as_str());
    // In the order things happened: the submission, the reviews, what they caused.
    let mut entries: Vec<Draft> = submitted.iter().map(|h| from_history(h, after)).collect();
    let trail = after.audit.clone().unwrap_or_default();
    let mut reviews = trail.reviews.clone();
    for (reviewer, review) in &request.spec.reviews {
        let decision = review.decision.as_str();
        if reviews.get(reviewer).map(String::as_str) == Some(decision) {
            continue;
        }
        reviews.insert(reviewer.clone(), decision.to_owned());
        entries.push(Draft {
            kind: "request.reviewed".to_owned(),
            time: now,
            actor: reviewer.clone(),
            comment: review.comment.clone(),
            decision: Some(decision.to_owned()),
            ..Draft::default()
        });
    }
    entries.extend(transitions.iter().map(|h| from_history(h, after)));
    if let Some(before) = before {
        entries.extend(grant_change(before, after, now));
    }
    if entries.is_empty() && reviews == trail.reviews {
        return;
    }
    let audit = after.audit.get_or_insert_with(RequestAudit::default);
    audit.reviews = reviews;
    let id = after
        .request_id
        .clone()
        .unwrap_or_else(|| lifecycle::request_id(request));
    for draft in entries {
        push(audit, &id, draft);
    }
}

/// Record one use of the grant.
pub fn note_use(status: &mut ElevationRequestStatus, execution: &Execution) {
    let id = status.request_id.clone().unwrap_or_default();
    let audit = status.audit.get_or_insert_with(RequestAudit::default);
    push(
        audit,
        &id,
        Draft {
            kind: "grant.used".to_owned(),
            time: execution.time,
            actor: execution.user.clone(),
            comment: execution
                .unverified
                .then(|| "recorded while the request could not be confirmed".to_owned()),
            operation: Some(AuditOperation {
                user: execution.user.clone(),
                verb: execution.verb.clone(),
                resource: execution.resource.clone(),
                api_group: execution.api_group.clone(),
                namespace: execution.namespace.clone(),
                name: execution.name.clone(),
            }),
            ..Draft::default()
        },
    );
}

/// The record of `entry` as sealed: the request's lasting facts added.
pub fn to_record(request: &ElevationRequest, entry: &AuditEntry, source: &str) -> AuditRecord {
    let status = request.status.as_ref();
    let data = AuditData {
        actor: entry.actor.clone(),
        policy: request.spec.policy.clone(),
        scope: request.spec.namespace.clone(),
        reason: request.spec.reason.clone(),
        comment: entry.comment.clone(),
        request_id: status
            .and_then(|s| s.request_id.clone())
            .unwrap_or_else(|| lifecycle::request_id(request)),
        decision: entry.decision.clone(),
        condition_reason: entry.condition_reason.clone(),
        granted_until: entry.granted_until,
        operation: entry.operation.clone(),
    };
    AuditRecord::new(
        &entry.event_type,
        source,
        &entry.id,
        entry.time,
        &request.name_any(),
        data,
    )
}

/// Mark the records `sealed` (id and sequence) as on the chain: they leave `pending`.
/// Returns whether anything changed (marking twice changes nothing).
pub fn mark_sealed(status: &mut ElevationRequestStatus, sealed: &[(String, u64)]) -> bool {
    let Some(audit) = status.audit.as_mut() else {
        return false;
    };
    let before = audit.pending.len();
    audit
        .pending
        .retain(|entry| !sealed.iter().any(|(id, _)| *id == entry.id));
    let last = sealed.iter().map(|(_, sequence)| *sequence).max();
    let moved = last.is_some_and(|l| audit.last_sequence.is_none_or(|known| known < l));
    if moved {
        audit.last_sequence = last;
    }
    moved || audit.pending.len() != before
}

/// How long a live request's records wait on it before it is told they are sealed: telling
/// takes a status write, and one that lands just before a deadline makes kubepam's own write
/// at the deadline read the request again.
pub const TELL_LIVE_AFTER: TimeDelta = TimeDelta::seconds(3);
/// A live request's deadline this close is left alone until it has passed.
pub const TELL_NOT_BEFORE_DEADLINE: TimeDelta = TimeDelta::seconds(2);
/// So many records waiting are told at once, whatever else (the guard refuses uses at
/// [`crate::admission::guard::USES_WAITING_LIMIT`]).
pub const TELL_AT_ONCE_FROM: usize = 50;

/// Whether the request should be told now that its sealed records are sealed (their leaving
/// `pending` is one status write). An ended or deleted request at once (its finalizer waits
/// for it); a live one once its records have waited [`TELL_LIVE_AFTER`], unless its
/// deadline is near; and any with [`TELL_AT_ONCE_FROM`] records waiting.
pub fn tell_now(request: &ElevationRequest, now: DateTime<Utc>) -> bool {
    let Some(status) = request.status.as_ref() else {
        return false;
    };
    let waiting = pending(Some(status));
    if waiting.is_empty() {
        return false;
    }
    let live = !status.phase.is_some_and(Phase::is_final);
    if !live || request.metadata.deletion_timestamp.is_some() || waiting.len() >= TELL_AT_ONCE_FROM
    {
        return true;
    }
    let waited = waiting
        .iter()
        .map(|e| e.time)
        .min()
        .is_some_and(|oldest| now - oldest >= TELL_LIVE_AFTER);
    let deadline_near = status
        .deadline
        .is_some_and(|d| d > now - TELL_NOT_BEFORE_DEADLINE && d - now < TELL_NOT_BEFORE_DEADLINE);
    waited && !deadline_near
}

/// The records of the request waiting for the chain.
pub fn pending(status: Option<&ElevationRequestStatus>) -> &[AuditEntry] {
    status
        .and_then(|s| s.audit.as_ref())
        .map(|a| a.pending.as_slice())
        .unwrap_or_default()
}

/// The sequence every configured sink has received; with no sink, every sequence (sealed is
/// all there is to wait for).
pub fn exported_through(settings: Option<&AuditSettings>, status: Option<&AuditStatus>) -> u64 {
    let sinks = settings.map(|s| s.sinks.as_slice()).unwrap_or_default();
    sinks
        .iter()
        .map(|sink| {
            status
                .and_then(|s| s.sinks.iter().find(|known| known.name == sink.name))
                .map_or(0, |known| known.exported_sequence)
        })
        .min()
        .unwrap_or(u64::MAX)
}

/// Whether every record of the request is on the chain and received by every sink: only
/// then may the request go (its finalizer held until now).
pub fn exported(status: Option<&ElevationRequestStatus>, through: u64) -> bool {
    let Some(audit) = status.and_then(|s| s.audit.as_ref()) else {
        return true;
    };
    audit.pending.is_empty() && audit.last_sequence.is_none_or(|last| last <= through)
}

#[derive(Default)]
struct Draft {
    kind: String,
    time: DateTime<Utc>,
    actor: String,
    comment: Option<String>,
    decision: Option<String>,
    condition_reason: Option<String>,
    granted_until: Option<DateTime<Utc>>,
    operation: Option<AuditOperation>,
}

fn push(audit: &mut RequestAudit, request_id: &str, draft: Draft) {
    if audit.pending.len() >= PENDING_LIMIT {
        audit.unrecorded = audit.unrecorded.saturating_add(1);
        return;
    }
    audit.recorded = audit.recorded.saturating_add(1);
    audit.pending.push(AuditEntry {
        id: format!("{request_id}/{}", audit.recorded),
        event_type: format!("{TYPE_PREFIX}{}", draft.kind),
        time: draft.time,
        actor: draft.actor,
        comment: draft.comment,
        decision: draft.decision,
        condition_reason: draft.condition_reason,
        granted_until: draft.granted_until,
        operation: draft.operation,
    });
}

fn from_history(entry: &HistoryEntry, after: &ElevationRequestStatus) -> Draft {
    let approved = find_condition(&after.conditions, lifecycle::CONDITION_APPROVED);
    let review = find_condition(&after.conditions, lifecycle::CONDITION_REVIEW_REQUIRED);
    let (kind, condition) = match entry.action.as_str() {
        "Pending" => ("request.submitted", approved),
        "Approved" => ("request.approved", approved),
        "Denied" => ("request.denied", approved),
        "Expired" => ("request.expired", approved),
        "Revoked" if approved.is_some_and(|c| c.reason == reason::RELEASED_BY_REQUESTER) => {
            ("request.released", approved)
        }
        "Revoked" => ("request.revoked", approved),
        "Confirmed" => ("request.confirmed", review),
        "Rejected" => ("request.rejected", review),
        _ => ("request.changed", None),
    };
    // The condition speaks for the latest entry only.
    let latest = after.history.last() == Some(entry);
    Draft {
        kind: kind.to_owned(),
        time: entry.time,
        actor: entry.actor.clone(),
        comment: entry.comment.clone(),
        condition_reason: condition.filter(|_| latest).map(|c| c.reason.clone()),
        granted_until: (entry.action == Phase::Approved.as_str())
            .then_some(after.granted_until)
            .flatten(),
        ..Draft::default()
    }
}

/// A grant in force that changed (narrowed, shortened) or whose booked window opened.
fn grant_change(
    before: &ElevationRequestStatus,
    after: &ElevationRequestStatus,
    now: DateTime<Utc>,
) -> Vec<Draft> {
    let approved = |s: &ElevationRequestStatus| s.phase == Some(Phase::Approved);
    if !approved(before) || !approved(after) {
        return Vec::new();
    }
    let mut drafts = Vec::new();
    let scheduled = |s: &ElevationRequestStatus| {
        find_condition(&s.conditions, lifecycle::CONDITION_SCHEDULED).cloned()
    };
    let opened =
        scheduled(after).filter(|c| c.status == "False" && c.reason == reason::WINDOW_OPENED);
    if let Some(opened) = opened
        && scheduled(before).is_some_and(|c| c.status == "True")
    {
        drafts.push(Draft {
            kind: "grant.opened".to_owned(),
            time: crate::api::from_k8s_time(&opened.last_transition_time),
            actor: "kubepam".to_owned(),
            comment: Some(opened.message),
            condition_reason: Some(opened.reason),
            granted_until: after.granted_until,
            ..Draft::default()
        });
    }
    if before.grant != after.grant || before.granted_until != after.granted_until {
        let narrowed = find_condition(&after.conditions, lifecycle::CONDITION_GRANT_NARROWED);
        drafts.push(Draft {
            kind: "grant.changed".to_owned(),
            time: now,
            actor: "kubepam".to_owned(),
            comment: narrowed.map(|c| c.message.clone()),
            condition_reason: narrowed.map(|c| c.reason.clone()),
            granted_until: after.granted_until,
            ..Draft::default()
        });
    }
    drafts
}
