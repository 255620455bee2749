//! Approval routing: who may decide a request now (the approver group, then each escalation
//! group whose step has opened), and emergency access (break glass) with its review
//! afterwards. Part of [`decide`](super::decide).

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    ACTOR_KUBEPAM, CONDITION_EMERGENCY, CONDITION_ESCALATED, CONDITION_REVIEW_REQUIRED,
    ControlView, Effect, Step, reason, reviewers, until,
};
use crate::api::{
    AccessPolicy, BreakGlass, ElevationRequestStatus, EscalationStep, HISTORY_LIMIT, HistoryEntry,
    Phase, ReviewDecision, condition_false, condition_true, find_condition, set_condition,
};
use crate::duration;
use crate::util::time_for_people;

/// The longest an emergency request waits to be granted (the control disabled, its policy not
/// accepted yet) before it expires: break glass is for now.
pub const EMERGENCY_REQUEST_TTL: TimeDelta = TimeDelta::minutes(15);

/// How long approvers have to review an emergency grant when `breakGlass.reviewWithin` is
/// absent.
pub const DEFAULT_REVIEW_WITHIN: TimeDelta = TimeDelta::hours(24);

/// The groups whose members may decide a request submitted at `submitted`, at `now`: `base`,
/// then the group of each escalation step whose `after` has passed (in order of `after`, each
/// once), and when the next step opens. A step whose `after` does not parse never opens.
pub fn approver_groups_at(
    base: &str,
    steps: &[EscalationStep],
    submitted: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Vec<String>, Option<DateTime<Utc>>) {
    let mut timed: Vec<(DateTime<Utc>, &str)> = steps
        .iter()
        .filter_map(|step| {
            let after = duration::parse(&step.after).ok()?;
            Some((
                submitted.checked_add_signed(after)?,
                step.approver_group.as_str(),
            ))
        })
        .collect();
    timed.sort_by_key(|(at, _)| *at);
    let mut groups = vec![base.to_owned()];
    let mut next = None;
    for (at, group) in timed {
        if at <= now {
            if !groups.iter().any(|g| g == group) {
                groups.push(group.to_owned());
            }
        } else if next.is_none() {
            next = Some(at);
        }
    }
    (groups, next)
}

/// The escalation groups that may decide in `after` and did not in `before` (the status read
/// and the one written), with their place in `approverGroups`: each is told once.
pub fn groups_opened<'a>(
    before: Option<&ElevationRequestStatus>,
    after: &'a ElevationRequestStatus,
) -> Vec<(usize, &'a str)> {
    let had: &[String] = before.map_or(&[], |b| b.approver_groups.as_slice());
    after
        .approver_groups
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, g)| !had.contains(g))
        .map(|(step, g)| (step, g.as_str()))
        .collect()
}

/// The review period of an emergency grant.
pub fn review_within(break_glass: &BreakGlass) -> TimeDelta {
    break_glass
        .review_within
        .as_deref()
        .and_then(|text| duration::parse(text).ok())
        .filter(|period| *period > TimeDelta::zero())
        .unwrap_or(DEFAULT_REVIEW_WITHIN)
}

/// Whether an emergency grant waits for its review (`ReviewRequired` is True).
pub fn review_pending(status: &ElevationRequestStatus) -> bool {
    find_condition(&status.conditions, CONDITION_REVIEW_REQUIRED)
        .is_some_and(|c| c.status == "True")
}

/// Whether an emergency grant's review is overdue.
pub fn review_overdue(status: &ElevationRequestStatus) -> bool {
    find_condition(&status.conditions, CONDITION_REVIEW_REQUIRED)
        .is_some_and(|c| c.status == "True" && c.reason == reason::REVIEW_OVERDUE)
}

impl Step<'_> {
    /// Record who may decide now and when that widens (Manual policies with escalation steps).
    pub(super) fn route(&mut self, policy: &AccessPolicy) {
        let Some(base) = self.status.approver_group.clone() else {
            return;
        };
        let manual = self.status.approval_type == Some(crate::api::ApprovalType::Manual);
        let steps: &[EscalationStep] = if manual && !self.request.spec.emergency {
            &policy.spec.escalation
        } else {
            &[]
        };
        let submitted = self.status.submitted_at.unwrap_or(self.stamp);
        let (groups, next) = approver_groups_at(&base, steps, submitted, self.now);
        if groups.len() > 1 {
            let added = groups[1..].join(", ");
            let message = format!(
                "nobody decided in time, so group(s) {added} may decide too (besides {base})"
            );
            set_condition(
                &mut self.status.conditions,
                condition_true(
                    CONDITION_ESCALATED,
                    reason::ESCALATION_STEP_OPENED,
                    message,
                    self.stamp,
                    self.generation,
                ),
            );
        }
        self.status.approver_groups = groups;
        self.status.escalates_at = next;
    }

    /// How long an emergency grant may last: the requested duration (at most
    /// `breakGlass.maxDuration`), or without one the shorter of that and the control's default.
    /// `Err` carries the denial when the policy allows no emergency access or the duration is
    /// too long.
    #[allow(clippy::result_large_err)] // as `validate`: the Err is the outcome to return.
    pub(super) fn emergency_length(
        &mut self,
        policy_name: &str,
        accepted: &AccessPolicy,
        requested: Option<TimeDelta>,
        control: &ControlView,
    ) -> Result<TimeDelta, Effect> {
        let Some(break_glass) = &accepted.spec.break_glass else {
            let message = format!(
                "policy {policy_name} allows no emergency access (it has no breakGlass); file an \
                 ordinary request, without emergency, and ask an approver to approve it"
            );
            return Err(self.deny(reason::EMERGENCY_NOT_ALLOWED, message));
        };
        let max = match duration::parse(&break_glass.max_duration) {
            Ok(max) => max,
            Err(e) => {
                return Err(self.deny(
                    reason::INVALID_POLICY,
                    format!("policy {policy_name} breakGlass.maxDuration: {e}"),
                ));
            }
        };
        // Admission attests that the requester is in this group (it is one of their own).
        let entitled = self
            .request
            .spec
            .break_glass_group
            .as_ref()
            .is_some_and(|g| break_glass.groups.contains(g));
        if !entitled {
            let named = self
                .request
                .spec
                .break_glass_group
                .as_deref()
                .map_or_else(|| "none".to_owned(), |g| format!("{g:?}"));
            let message = format!(
                "emergency access under policy {policy_name} is for members of {} \
                 (breakGlass.groups), and the request names {named} (spec.breakGlassGroup, set by \
                 kubepam's webhook from your own groups); file an ordinary request instead",
                break_glass.groups.join(", ")
            );
            return Err(self.deny(reason::EMERGENCY_NOT_ALLOWED, message));
        }
        match requested {
            Some(length) if length > max => {
                let message = format!(
                    "emergency access under policy {policy_name} lasts at most {} \
                     (breakGlass.maxDuration), and {} was asked; request at most {}",
                    duration::format(max),
                    duration::format(length),
                    duration::format(max)
                );
                Err(self.deny(reason::EMERGENCY_DURATION_EXCEEDED, message))
            }
            Some(length) => Ok(length),
            None => Ok(control.default_duration().min(max)),
        }
    }

    /// Mark a grant just approved under break glass: loud, and owing a review.
    pub(super) fn note_emergency(&mut self, break_glass: &BreakGlass) {
        let due = self
            .stamp
            .checked_add_signed(review_within(break_glass))
            .unwrap_or(self.stamp);
        self.status.review_due_at = Some(due);
        let requester = self.requester().unwrap_or("unknown").to_owned();
        set_condition(
            &mut self.status.conditions,
            condition_true(
                CONDITION_EMERGENCY,
                reason::BREAK_GLASS,
                format!(
                    "emergency access taken by {requester} under break glass, without an approver"
                ),
                self.stamp,
                self.generation,
            ),
        );
        let groups = self.deciders();
        set_condition(
            &mut self.status.conditions,
            condition_true(
                CONDITION_REVIEW_REQUIRED,
                reason::AWAITING_REVIEW,
                format!(
                    "an approver ({groups}) must confirm or reject this emergency access by {}",
                    time_for_people(due)
                ),
                self.stamp,
                self.generation,
            ),
        );
    }

    /// The groups that may decide, for messages.
    fn deciders(&self) -> String {
        match self.status.approver_groups.as_slice() {
            [] => self
                .status
                .approver_group
                .clone()
                .map_or_else(|| "its approver group".to_owned(), |g| format!("group {g}")),
            [one] => format!("group {one}"),
            many => format!("groups {}", many.join(", ")),
        }
    }

    /// The review of an emergency grant, while it is owed: a `Reject` (which wins over a
    /// `Confirm` written at the same moment) or a `Confirm` by someone other than the requester
    /// is recorded. Returns the decision recorded, by whom, and their comments.
    fn record_verdict(&mut self) -> Option<(ReviewDecision, String, Option<String>)> {
        if !review_pending(&self.status) {
            return None;
        }
        let reviews = &self.request.spec.reviews;
        let requester = self.requester();
        let (decision, found) = [ReviewDecision::Reject, ReviewDecision::Confirm]
            .into_iter()
            .map(|d| (d, reviewers(reviews, requester, &[d])))
            .find(|(_, found)| !found.is_empty())?;
        let names: Vec<String> = found.iter().map(|(w, _)| (*w).to_owned()).collect();
        let actor = names.join(", ");
        let comment = super::joined_comments(&found);
        let (action, why, verdict) = match decision {
            ReviewDecision::Reject => ("Rejected", reason::EMERGENCY_REJECTED, "rejected"),
            _ => ("Confirmed", reason::EMERGENCY_CONFIRMED, "confirmed"),
        };
        let mut message = format!("emergency access {verdict} by {actor}");
        if let Some(c) = &comment {
            message = format!("{message}: {c}");
        }
        set_condition(
            &mut self.status.conditions,
            condition_false(
                CONDITION_REVIEW_REQUIRED,
                why,
                message,
                self.stamp,
                self.generation,
            ),
        );
        self.status.history.push(HistoryEntry {
            time: self.stamp,
            actor: actor.clone(),
            action: action.to_owned(),
            comment: comment.clone(),
        });
        let excess = self.status.history.len().saturating_sub(HISTORY_LIMIT);
        self.status.history.drain(..excess);
        Some((decision, actor, comment))
    }

    /// The review of an active emergency grant: a rejection ends it at once.
    pub(super) fn review_active_emergency(&mut self) -> Option<Effect> {
        let (decision, actor, comment) = self.record_verdict()?;
        if decision != ReviewDecision::Reject {
            return None;
        }
        let message = format!("emergency access rejected by {actor}; the grant ended at once");
        Some(self.final_state(
            Phase::Revoked,
            &actor,
            reason::EMERGENCY_REJECTED,
            message,
            comment,
        ))
    }

    /// An ended emergency grant still owes its review: record it when written, else say when
    /// it is overdue.
    pub(super) fn review_after_end(&mut self) -> Effect {
        self.record_verdict();
        (None, self.follow_review())
    }

    /// While a review is owed: mark it overdue once due, else say when to look again.
    pub(super) fn follow_review(&mut self) -> Option<std::time::Duration> {
        if !review_pending(&self.status) {
            return None;
        }
        let due = self.status.review_due_at?;
        if self.now < due {
            return Some(until(due, self.now));
        }
        if !review_overdue(&self.status) {
            let groups = self.deciders();
            set_condition(
                &mut self.status.conditions,
                condition_true(
                    CONDITION_REVIEW_REQUIRED,
                    reason::REVIEW_OVERDUE,
                    format!(
                        "the review of this emergency access was due at {}; an approver \
                         ({groups}) must confirm or reject it",
                        time_for_people(due)
                    ),
                    self.stamp,
                    self.generation,
                ),
            );
        }
        None
    }

    /// The actor of an emergency approval: the requester who broke the glass.
    pub(super) fn emergency_actor(&self) -> String {
        self.requester().unwrap_or(ACTOR_KUBEPAM).to_owned()
    }
}
