//! The request lifecycle as one pure function: [`decide`].
//!
//! `decide(request, policy, control, now) -> Decision` computes the complete desired status of an
//! `ElevationRequest`, the transition (if any) to announce, the rights that must exist right now,
//! and when to look again. It reads no clock and calls no API: the controller fetches the inputs,
//! carries out the decision (RBAC, status, Events) and requeues. Timers live in status
//! timestamps, so a restarted operator catches up at once.
//!
//! States (DESIGN §3.1): `Pending → {Approved, Denied, Expired}`, `Approved → {Expired,
//! Revoked}`; `Denied`, `Expired` and `Revoked` are final.

mod related;
mod routing;
pub mod scope;
mod timing;
mod views;

#[cfg(test)]
mod deadline_props;
#[cfg(test)]
mod props;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod time_tests;

use crate::util::time_for_people;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use kube::ResourceExt;

use crate::api::{
    AccessPolicy, ApprovalType, EXECUTION_LIMIT, ElevationRequest, ElevationRequestStatus,
    Execution, GrantScope, HISTORY_LIMIT, HistoryEntry, Phase, Review, ReviewDecision,
    condition_false, condition_true, from_k8s_time, remove_condition, set_condition,
};
use crate::duration;

pub use related::{OpenCounts, Related, extended_among};
pub use routing::{
    DEFAULT_REVIEW_WITHIN, approver_groups_at, groups_opened, review_overdue, review_pending,
    review_within,
};
use timing::Window;
pub use timing::{quota_refusal, unbounded_auto_extensions};
pub use views::{ControlSettings, ControlView, PolicyView, default_duration, default_request_ttl};

/// The actor recorded when kubepam itself makes a transition.
pub const ACTOR_KUBEPAM: &str = "kubepam";
/// Condition type: `True` while Approved; `False` with the reason otherwise.
pub const CONDITION_APPROVED: &str = "Approved";
/// Condition type: present when reviews were ignored (the requester's own).
pub const CONDITION_REVIEWS_IGNORED: &str = "ReviewsIgnored";
/// Condition type: present while the active grant is narrower than the approval.
pub const CONDITION_GRANT_NARROWED: &str = "GrantNarrowed";
/// Condition type: `True` while an approved booked window has not opened yet, `False` once it
/// opened.
pub const CONDITION_SCHEDULED: &str = "Scheduled";
/// Condition type: `True` once the requester released their grant.
pub const CONDITION_RELEASED: &str = "Released";
/// Condition type: `True` on a grant taken under break glass (`spec.emergency`).
pub const CONDITION_EMERGENCY: &str = "Emergency";
/// Condition type: `True` while an emergency grant waits for an approver's `Confirm` or
/// `Reject` (reason `AwaitingReview`, then `ReviewOverdue`); `False` once reviewed.
pub const CONDITION_REVIEW_REQUIRED: &str = "ReviewRequired";
/// Condition type: `True` once an escalation step opened (more groups may decide).
pub const CONDITION_ESCALATED: &str = "Escalated";
/// How soon to look again while the policy has not been judged yet.
pub const UNJUDGED_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// CamelCase reasons used in transitions, conditions and Events.
pub mod reason {
    /// A new request was seen.
    pub const SUBMITTED: &str = "Submitted";
    /// Waiting for approvers.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// No `default` PrivilegedAccessControl.
    pub const CONTROL_MISSING: &str = "ControlMissing";
    /// The control has `enabled: false`.
    pub const CONTROL_DISABLED: &str = "ControlDisabled";
    /// The policy has not been judged yet.
    pub const POLICY_NOT_SETTLED: &str = "PolicyNotSettled";
    /// Approved at once by an Auto policy.
    pub const AUTO_APPROVED: &str = "AutoApproved";
    /// Approved by enough distinct approvers.
    pub const MANUAL_APPROVAL: &str = "ManualApproval";
    /// An approver denied.
    pub const DENIED_BY_APPROVER: &str = "DeniedByApprover";
    /// An approver revoked the grant.
    pub const REVOKED_BY_APPROVER: &str = "RevokedByApprover";
    /// No decision within the request TTL.
    pub const REQUEST_TTL_EXCEEDED: &str = "RequestTTLExceeded";
    /// The grant window ended.
    pub const GRANT_DURATION_ENDED: &str = "GrantDurationEnded";
    /// The request names no requester (admission was bypassed): fail closed.
    pub const MISSING_REQUESTER: &str = "MissingRequester";
    /// The request gives no reason.
    pub const MISSING_REASON: &str = "MissingReason";
    /// The policy does not exist.
    pub const POLICY_NOT_FOUND: &str = "PolicyNotFound";
    /// `spec.policy` is not an object name, so it can name no policy.
    pub const INVALID_POLICY_NAME: &str = "InvalidPolicyName";
    /// The policy was deleted while the grant was active.
    pub const POLICY_DELETED: &str = "PolicyDeleted";
    /// The policy no longer allows any of the approved rights.
    pub const POLICY_NARROWED: &str = "PolicyNarrowed";
    /// The request's duration does not parse.
    pub const INVALID_DURATION: &str = "InvalidDuration";
    /// The request's duration exceeds the policy's `maxDuration`.
    pub const DURATION_EXCEEDS_POLICY: &str = "DurationExceedsPolicy";
    /// The policy itself is unusable.
    pub const INVALID_POLICY: &str = "InvalidPolicy";
    /// The requester reviewed their own request.
    pub const SELF_REVIEW: &str = "SelfReview";
    /// The request narrows its grant to kubepam's own namespace.
    pub const KUBEPAM_NAMESPACE: &str = "KubepamNamespace";
    /// The status lacks what an Approved request must record: fail closed.
    pub const GRANT_RECORD_MISSING: &str = "GrantRecordMissing";
    /// The reason does not match the policy's `reasonPattern`.
    pub const REASON_MISMATCH: &str = "ReasonMismatch";
    /// `spec.startAt` is further ahead than the policy's `maxScheduleAhead`.
    pub const SCHEDULE_TOO_FAR_AHEAD: &str = "ScheduleTooFarAhead";
    /// The booked window ended before anyone decided.
    pub const WINDOW_PASSED: &str = "WindowPassed";
    /// Approved, waiting for the booked window to open.
    pub const WINDOW_BOOKED: &str = "WindowBooked";
    /// The booked window opened.
    pub const WINDOW_OPENED: &str = "WindowOpened";
    /// The request named by `spec.extends` does not exist.
    pub const EXTENDED_NOT_FOUND: &str = "ExtendedRequestNotFound";
    /// The request named by `spec.extends` is another person's, or for another policy or
    /// namespace.
    pub const NOT_EXTENDABLE: &str = "NotExtendable";
    /// The grant an extension continues ended before the extension was approved.
    pub const EXTENDED_GRANT_ENDED: &str = "ExtendedGrantEnded";
    /// The grant an extension continued was revoked or released.
    pub const EXTENDED_GRANT_REVOKED: &str = "ExtendedGrantRevoked";
    /// The policy's `extension` limits (number, total time) are reached.
    pub const EXTENSION_LIMIT_EXCEEDED: &str = "ExtensionLimitExceeded";
    /// The requester already holds as many open requests as a quota allows.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// The requester ended their own grant ("I'm done").
    pub const RELEASED_BY_REQUESTER: &str = "ReleasedByRequester";
    /// Approved at once under break glass (`spec.emergency`), without an approver.
    pub const BREAK_GLASS: &str = "BreakGlass";
    /// An emergency request under a policy without `breakGlass`.
    pub const EMERGENCY_NOT_ALLOWED: &str = "EmergencyNotAllowed";
    /// An emergency request longer than `breakGlass.maxDuration`.
    pub const EMERGENCY_DURATION_EXCEEDED: &str = "EmergencyDurationExceeded";
    /// An emergency grant waits for its review.
    pub const AWAITING_REVIEW: &str = "AwaitingReview";
    /// An emergency grant's review is past `breakGlass.reviewWithin`.
    pub const REVIEW_OVERDUE: &str = "ReviewOverdue";
    /// An approver confirmed an emergency grant.
    pub const EMERGENCY_CONFIRMED: &str = "EmergencyConfirmed";
    /// An approver rejected an emergency grant.
    pub const EMERGENCY_REJECTED: &str = "EmergencyRejected";
    /// An escalation step opened: another group may decide.
    pub const ESCALATION_STEP_OPENED: &str = "EscalationStepOpened";
}

/// A change of phase, to be announced as an Event and in notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The phase before (`None` for a request seen for the first time).
    pub from: Option<Phase>,
    /// The phase after.
    pub to: Phase,
    /// Who caused it: username(s) joined by ", ", or `kubepam`.
    pub actor: String,
    /// CamelCase reason, usable as an Event reason.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
}

/// What the controller must make true for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The complete desired status (fields the state machine does not own, such as
    /// `rbacObjects` and executions, are carried over unchanged).
    pub status: ElevationRequestStatus,
    /// The transition made, if any; publish an Event only then.
    pub transition: Option<Transition>,
    /// The rights that must exist right now; `None` means no RBAC object may exist.
    pub grant: Option<GrantScope>,
    /// When to look again (the next deadline); `None` for final phases.
    pub requeue_after: Option<std::time::Duration>,
}

/// Decide the desired state of `request` at `now`, knowing nothing of the requester's other
/// requests (see [`decide_with`]).
pub fn decide(
    request: &ElevationRequest,
    policy: &PolicyView<'_>,
    control: &ControlView,
    now: DateTime<Utc>,
) -> Decision {
    decide_with(request, policy, control, &Related::default(), now)
}

/// Decide the desired state of `request` at `now`. Pure and idempotent: applying the returned
/// status and deciding again with the same inputs yields no transition and the same status.
pub fn decide_with(
    request: &ElevationRequest,
    policy: &PolicyView<'_>,
    control: &ControlView,
    related: &Related<'_>,
    now: DateTime<Utc>,
) -> Decision {
    let status = request.status.clone().unwrap_or_default();
    let from = status.phase;
    if from.is_some_and(Phase::is_final) && !review_pending(&status) {
        return Decision {
            status,
            transition: None,
            grant: None,
            requeue_after: None,
        };
    }
    let mut step = Step {
        request,
        now,
        // Milliseconds: a grant lasts its duration from the instant it was
        // decided, not from the start of that second.
        stamp: now.trunc_subsecs(3),
        generation: request.metadata.generation,
        status,
        from,
        transition: None,
        related,
    };
    step.status.observed_generation = request.metadata.generation;
    let (grant, mut requeue_after) = match from {
        None | Some(Phase::Pending) => step.pending(policy, control),
        Some(Phase::Approved) => step.approved(policy),
        // Only an emergency grant still owing its review gets here.
        Some(Phase::Denied | Phase::Expired | Phase::Revoked) => step.review_after_end(),
    };
    if from.is_none_or(|p| !p.is_final()) {
        let escalation = step.status.escalates_at.map(|at| until(at, now));
        for wake in [step.follow_review(), escalation].into_iter().flatten() {
            requeue_after = Some(requeue_after.map_or(wake, |r| r.min(wake)));
        }
    }
    step.note_ignored_reviews();
    Decision {
        status: step.status,
        transition: step.transition,
        grant,
        requeue_after,
    }
}

/// Record one admitted use of a grant: bump the count and keep the last [`EXECUTION_LIMIT`].
/// An unverified use (see [`Execution::unverified`]) never pushes out a verified one: the
/// oldest unverified use goes first, and an unverified use finds no room among verified ones.
pub fn record_execution(status: &mut ElevationRequestStatus, execution: Execution) {
    // Every use is on the audit trail, not only the last ones kept here.
    crate::audit::trail::note_use(status, &execution);
    status.execution_count = status.execution_count.saturating_add(1);
    status.last_executions.push(execution);
    while status.last_executions.len() > EXECUTION_LIMIT {
        let oldest_unverified = status.last_executions.iter().position(|e| e.unverified);
        status
            .last_executions
            .remove(oldest_unverified.unwrap_or(0));
    }
}

/// The request's id: its `metadata.uid` (already a UUID), else a UUID derived from its name.
pub fn request_id(request: &ElevationRequest) -> String {
    request
        .metadata
        .uid
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            crate::util::uuid_from_name("elevationrequest", &request.name_any()).to_string()
        })
}

/// Distinct reviewers other than the requester whose decision is one of `decisions`, sorted.
fn reviewers<'a>(
    reviews: &'a BTreeMap<String, Review>,
    requester: Option<&str>,
    decisions: &[ReviewDecision],
) -> Vec<(&'a str, &'a Review)> {
    reviews
        .iter()
        .filter(|(who, r)| Some(who.as_str()) != requester && decisions.contains(&r.decision))
        .map(|(who, r)| (who.as_str(), r))
        .collect()
}

fn joined_comments(reviews: &[(&str, &Review)]) -> Option<String> {
    let parts: Vec<String> = reviews
        .iter()
        .filter_map(|(who, r)| r.comment.as_ref().map(|c| format!("{who}: {c}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn until(deadline: DateTime<Utc>, now: DateTime<Utc>) -> std::time::Duration {
    (deadline - now)
        .to_std()
        .unwrap_or(std::time::Duration::ZERO)
}

struct Step<'a> {
    request: &'a ElevationRequest,
    now: DateTime<Utc>,
    stamp: DateTime<Utc>,
    generation: Option<i64>,
    status: ElevationRequestStatus,
    from: Option<Phase>,
    transition: Option<Transition>,
    related: &'a Related<'a>,
}

/// What a step of the decision leaves in force: the grant to hold, and when to look again.
type Effect = (Option<GrantScope>, Option<std::time::Duration>);

/// A Pending request that passed every check against its policy.
struct Valid<'p> {
    requester: String,
    policy: &'p AccessPolicy,
    policy_name: String,
    snapshot: GrantScope,
    window: Window,
}

impl Step<'_> {
    fn requester(&self) -> Option<&str> {
        self.request
            .spec
            .requester
            .as_deref()
            .filter(|r| !r.trim().is_empty())
    }

    /// Enter `to`, recording history, the `Approved` condition and the transition.
    fn enter(
        &mut self,
        to: Phase,
        actor: &str,
        reason: &str,
        message: String,
        comment: Option<String>,
    ) {
        self.status.phase = Some(to);
        self.status.history.push(HistoryEntry {
            time: self.stamp,
            actor: actor.to_owned(),
            action: to.as_str().to_owned(),
            comment: Some(comment.unwrap_or_else(|| message.clone())),
        });
        let excess = self.status.history.len().saturating_sub(HISTORY_LIMIT);
        self.status.history.drain(..excess);
        let condition = if to == Phase::Approved {
            condition_true(
                CONDITION_APPROVED,
                reason,
                message.clone(),
                self.stamp,
                self.generation,
            )
        } else {
            condition_false(
                CONDITION_APPROVED,
                reason,
                message.clone(),
                self.stamp,
                self.generation,
            )
        };
        set_condition(&mut self.status.conditions, condition);
        if to != Phase::Pending {
            self.status.escalates_at = None;
        }
        self.status.deadline = match to {
            Phase::Pending => self.status.expires_at,
            Phase::Approved => self.status.granted_until,
            Phase::Denied | Phase::Expired | Phase::Revoked => None,
        };
        if to.is_final() {
            remove_condition(&mut self.status.conditions, CONDITION_GRANT_NARROWED);
            self.status.starts_at = None;
            if let Some(c) = self
                .status
                .conditions
                .iter_mut()
                .find(|c| c.type_ == CONDITION_SCHEDULED && c.status == "True")
            {
                // Never opened: the record says so rather than dropping the booking.
                "False".clone_into(&mut c.status);
                reason.clone_into(&mut c.reason);
                "the booked window never opened".clone_into(&mut c.message);
                c.last_transition_time = crate::api::to_k8s_time(self.stamp);
            }
        }
        self.transition = Some(Transition {
            from: self.from,
            to,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            message,
        });
    }

    fn final_state(
        &mut self,
        to: Phase,
        actor: &str,
        reason: &str,
        message: String,
        comment: Option<String>,
    ) -> Effect {
        self.enter(to, actor, reason, message, comment);
        (None, None)
    }

    /// Deny by kubepam with a reason.
    fn deny(&mut self, reason: &str, message: String) -> Effect {
        self.status.decided_at = Some(self.stamp);
        self.status.decided_by = vec![ACTOR_KUBEPAM.to_owned()];
        self.final_state(Phase::Denied, ACTOR_KUBEPAM, reason, message, None)
    }

    /// Stay Pending, explaining why on the `Approved` condition.
    fn wait(
        &mut self,
        reason: &str,
        message: String,
        retry: Option<std::time::Duration>,
    ) -> Effect {
        set_condition(
            &mut self.status.conditions,
            condition_false(
                CONDITION_APPROVED,
                reason,
                message,
                self.stamp,
                self.generation,
            ),
        );
        let mut requeue = self
            .status
            .expires_at
            .map_or(std::time::Duration::ZERO, |e| until(e, self.now));
        if let Some(retry) = retry {
            requeue = requeue.min(retry);
        }
        (None, Some(requeue))
    }

    fn first_sight(&mut self, control: &ControlView) {
        if self.status.request_id.is_none() {
            self.status.request_id = Some(request_id(self.request));
        }
        let submitted = *self.status.submitted_at.get_or_insert_with(|| {
            self.request
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(self.stamp, from_k8s_time)
        });
        if self.status.expires_at.is_none() {
            self.status.expires_at = Some(self.expiry_from(submitted, control));
        }
        let actor = self.requester().unwrap_or("unknown").to_owned();
        let message = self.submission_message();
        let comment = Some(self.request.spec.reason.clone());
        self.enter(Phase::Pending, &actor, reason::SUBMITTED, message, comment);
    }

    /// What the submission says, for the history, the Event and the approvers' notification.
    fn submission_message(&self) -> String {
        let spec = &self.request.spec;
        let policy = &spec.policy;
        let how_long = spec
            .duration
            .as_deref()
            .map_or_else(String::new, |d| format!(" for {d}"));
        if let Some(extended) = &spec.extends {
            let running = self
                .related
                .extended
                .and_then(|o| o.status.as_ref())
                .and_then(|s| s.granted_from.or(s.decided_at))
                .map_or_else(String::new, |from| {
                    let ran = (self.stamp - from).max(TimeDelta::zero());
                    format!(
                        " (it has run {} since {})",
                        duration::format(TimeDelta::seconds(ran.num_seconds().max(1))),
                        time_for_people(from)
                    )
                });
            return format!(
                "requested an extension{how_long} of ElevationRequest {extended}{running} under \
                 policy {policy}"
            );
        }
        match spec.start_at {
            Some(start) => format!(
                "requested access under policy {policy}{how_long} from {}",
                time_for_people(start)
            ),
            None => format!("requested access under policy {policy}"),
        }
    }

    fn resolve_approval(&mut self, policy: &AccessPolicy, control: &ControlView) {
        let spec = &policy.spec;
        self.status.approver_group = spec
            .approver_group
            .clone()
            .or_else(|| control.settings().map(|s| s.default_approver_group.clone()));
        let approval_type = if self.request.spec.extends.is_some() {
            spec.extension
                .as_ref()
                .and_then(|e| e.approval_type)
                .unwrap_or(spec.approval_type)
        } else {
            spec.approval_type
        };
        self.status.approval_type = Some(approval_type);
        self.status.required_approvals = match approval_type {
            ApprovalType::Manual => Some(spec.required_approvals.unwrap_or(1).max(1)),
            ApprovalType::Auto => None,
        };
    }

    fn pending(&mut self, policy: &PolicyView<'_>, control: &ControlView) -> Effect {
        if self.status.phase.is_none() {
            self.first_sight(control);
        }
        if let Some(p) = policy.policy() {
            self.resolve_approval(p, control);
            self.route(p);
        }
        // A hand-edited status may have lost its deadline: rebuild it from submission.
        let submitted = self.status.submitted_at.unwrap_or(self.stamp);
        let expires_at = if let Some(e) = self.status.expires_at {
            e
        } else {
            let e = self.expiry_from(submitted, control);
            self.status.expires_at = Some(e);
            e
        };
        self.status.deadline = Some(expires_at);
        self.status.starts_at = self.request.spec.start_at.filter(|s| *s > self.now);
        if self.now >= expires_at {
            let booked_end = self.booked_end(control);
            let (why, message) = if booked_end.is_some_and(|end| end <= expires_at) {
                (
                    reason::WINDOW_PASSED,
                    format!(
                        "the booked window ended at {} before anyone decided",
                        time_for_people(expires_at)
                    ),
                )
            } else {
                (
                    reason::REQUEST_TTL_EXCEEDED,
                    format!("no decision before {}", time_for_people(expires_at)),
                )
            };
            return self.final_state(Phase::Expired, ACTOR_KUBEPAM, why, message, None);
        }
        if self.from.is_none()
            && let Some(outcome) = self.over_quota(policy, control)
        {
            return outcome;
        }
        let Valid {
            requester,
            policy: accepted,
            policy_name,
            snapshot,
            window,
        } = match self.validate(policy, control) {
            Ok(v) => v,
            Err(outcome) => return outcome,
        };
        let reviews = &self.request.spec.reviews;
        // A Reject written before an emergency grant is recorded refuses it all the same.
        let deniers = reviewers(
            reviews,
            Some(&requester),
            &[
                ReviewDecision::Deny,
                ReviewDecision::Revoke,
                ReviewDecision::Reject,
            ],
        );
        if !deniers.is_empty() {
            let names: Vec<String> = deniers.iter().map(|(w, _)| (*w).to_owned()).collect();
            let actor = names.join(", ");
            let comment = joined_comments(&deniers);
            self.status.decided_at = Some(self.stamp);
            self.status.decided_by = names;
            let message = format!("denied by {actor}");
            return self.final_state(
                Phase::Denied,
                &actor,
                reason::DENIED_BY_APPROVER,
                message,
                comment,
            );
        }
        match control {
            ControlView::Missing => {
                return self.wait(
                    reason::CONTROL_MISSING,
                    "no PrivilegedAccessControl named default exists, so no grant is made; create it to enable kubepam".to_owned(),
                    None,
                );
            }
            ControlView::Disabled(_) => {
                return self.wait(
                    reason::CONTROL_DISABLED,
                    "PrivilegedAccessControl default has enabled: false, so no grant is made until it is enabled".to_owned(),
                    None,
                );
            }
            ControlView::Enabled(_) => {}
        }
        self.approve_if_ready(Valid {
            requester,
            policy: accepted,
            policy_name,
            snapshot,
            window,
        })
    }

    /// Approve when the policy's approval rule is met, else keep waiting.
    fn approve_if_ready(&mut self, valid: Valid<'_>) -> Effect {
        let Valid {
            requester,
            policy: accepted,
            policy_name,
            snapshot,
            window,
        } = valid;
        let reviews = &self.request.spec.reviews;
        if self.request.spec.emergency
            && let Some(break_glass) = &accepted.spec.break_glass
        {
            let actor = self.emergency_actor();
            let message = format!(
                "approved at once under break glass: emergency access by {actor} under policy \
                 {policy_name}, without an approver; an approver must confirm or reject it"
            );
            let effect = self.approve(
                snapshot,
                &window,
                vec![ACTOR_KUBEPAM.to_owned()],
                reason::BREAK_GLASS,
                message,
                Some(self.request.spec.reason.clone()),
            );
            if let Some(t) = self.transition.as_mut() {
                t.actor.clone_from(&actor);
            }
            if let Some(entry) = self.status.history.last_mut() {
                entry.actor = actor;
            }
            self.note_emergency(break_glass);
            return effect;
        }
        match self
            .status
            .approval_type
            .unwrap_or(accepted.spec.approval_type)
        {
            ApprovalType::Auto => {
                let message = format!("approved automatically by policy {policy_name}");
                self.approve(
                    snapshot,
                    &window,
                    vec![ACTOR_KUBEPAM.to_owned()],
                    reason::AUTO_APPROVED,
                    message,
                    None,
                )
            }
            ApprovalType::Manual => {
                let required = self.status.required_approvals.unwrap_or(1).max(1);
                let approvers = reviewers(reviews, Some(&requester), &[ReviewDecision::Approve]);
                let have = u32::try_from(approvers.len()).unwrap_or(u32::MAX);
                if have >= required {
                    let names: Vec<String> =
                        approvers.iter().map(|(w, _)| (*w).to_owned()).collect();
                    let comment = joined_comments(&approvers);
                    let message = format!("approved by {}", names.join(", "));
                    self.approve(
                        snapshot,
                        &window,
                        names,
                        reason::MANUAL_APPROVAL,
                        message,
                        comment,
                    )
                } else {
                    let group = self
                        .status
                        .approver_group
                        .clone()
                        .unwrap_or_else(|| "(none)".to_owned());
                    let message = format!("{have} of {required} approvals from group {group}");
                    self.wait(reason::AWAITING_APPROVAL, message, None)
                }
            }
        }
    }

    /// What an approval under `accepted` would grant now: its scope for the requested
    /// namespace (never kubepam's own), holding the rules of its ClusterRoles as judged.
    #[allow(clippy::result_large_err)] // as `validate`: the Err is the outcome to return.
    fn grant_snapshot(
        &mut self,
        policy_name: &str,
        accepted: &AccessPolicy,
        control: &ControlView,
    ) -> Result<GrantScope, Effect> {
        let snapshot = match scope::snapshot(
            policy_name,
            &accepted.spec,
            self.request.spec.namespace.as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => return Err(self.deny(e.reason(), e.to_string())),
        };
        if let Some(own) = control
            .kubepam_namespace()
            .filter(|own| snapshot.namespaces.iter().any(|n| n == own))
        {
            let message = format!(
                "namespace {own} is kubepam's own namespace (its service account, certificate and \
                 Lease), and no grant may reach it; request another namespace"
            );
            return Err(self.deny(reason::KUBEPAM_NAMESPACE, message));
        }
        let judged = accepted.status.as_ref().map(|s| &s.role_rules);
        match scope::with_role_rules(snapshot, judged.unwrap_or(&BTreeMap::new())) {
            Ok(s) => Ok(s),
            Err(unread) => {
                // Fail closed: grant nothing whose rules were not judged.
                let message = format!(
                    "waiting for kubepam to read ClusterRole(s) {} of AccessPolicy {}",
                    unread.join(", "),
                    self.request.spec.policy
                );
                Err(self.wait(reason::POLICY_NOT_SETTLED, message, Some(UNJUDGED_RETRY)))
            }
        }
    }

    /// Check the request against its policy; `Err` carries the outcome when it cannot proceed.
    // The error is the ordinary outcome tuple, built once per reconcile; boxing buys nothing.
    #[allow(clippy::result_large_err)]
    fn validate<'p>(
        &mut self,
        policy: &PolicyView<'p>,
        control: &ControlView,
    ) -> Result<Valid<'p>, Effect> {
        let Some(requester) = self.requester().map(str::to_owned) else {
            return Err(self.deny(
                reason::MISSING_REQUESTER,
                "the request names no requester; kubepam's admission webhook sets it, so recreate the request with the webhook running".to_owned(),
            ));
        };
        if self.request.spec.reason.trim().is_empty() {
            return Err(self.deny(
                reason::MISSING_REASON,
                "the request gives no reason; recreate it with spec.reason".to_owned(),
            ));
        }
        // Only an object name may reach a lookup: `name?x` or a name with a newline would
        // otherwise be read as another policy (or fail on every try).
        if !crate::grant::is_object_name(&self.request.spec.policy) {
            let message = format!(
                "spec.policy {:?} is not an AccessPolicy name (lower-case letters, digits, '-' and \
                 '.'); recreate the request naming an existing policy (kubectl get accesspolicies)",
                self.request.spec.policy
            );
            return Err(self.deny(reason::INVALID_POLICY_NAME, message));
        }
        let accepted = match policy {
            PolicyView::Missing => {
                let message = format!(
                    "AccessPolicy {} does not exist; recreate the request naming an existing policy (kubectl get accesspolicies)",
                    self.request.spec.policy
                );
                return Err(self.deny(reason::POLICY_NOT_FOUND, message));
            }
            PolicyView::Refused { reason, message } => {
                let message = format!(
                    "AccessPolicy {} is not accepted: {message}",
                    self.request.spec.policy
                );
                return Err(self.deny(reason, message));
            }
            PolicyView::Unjudged(_) => {
                let message = format!(
                    "waiting for AccessPolicy {} to be accepted",
                    self.request.spec.policy
                );
                return Err(self.wait(reason::POLICY_NOT_SETTLED, message, Some(UNJUDGED_RETRY)));
            }
            PolicyView::Accepted(p) => *p,
        };
        let policy_name = accepted.metadata.name.clone().unwrap_or_default();
        let asked_for = match &self.request.spec.duration {
            None => None,
            Some(d) => match duration::parse(d) {
                Ok(d) => Some(d),
                Err(e) => {
                    return Err(self.deny(reason::INVALID_DURATION, format!("spec.duration: {e}")));
                }
            },
        };
        let grant_duration = if self.request.spec.emergency {
            self.emergency_length(&policy_name, accepted, asked_for, control)?
        } else {
            asked_for.unwrap_or_else(|| control.default_duration())
        };
        if let Some(max) = &accepted.spec.max_duration {
            match duration::parse(max) {
                Ok(max) if grant_duration > max => {
                    let message = format!(
                        "duration {} exceeds the maximum {} of policy {policy_name}; request at most {}",
                        duration::format(grant_duration),
                        duration::format(max),
                        duration::format(max)
                    );
                    return Err(self.deny(reason::DURATION_EXCEEDS_POLICY, message));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(self.deny(
                        reason::INVALID_POLICY,
                        format!("policy {policy_name} maxDuration: {e}"),
                    ));
                }
            }
        }
        match crate::justification::check(&policy_name, &accepted.spec, &self.request.spec.reason) {
            Ok(()) => {}
            Err(crate::justification::Refusal::BadPattern(message)) => {
                return Err(self.deny(reason::INVALID_POLICY, message));
            }
            Err(crate::justification::Refusal::Mismatch(message)) => {
                return Err(self.deny(reason::REASON_MISMATCH, message));
            }
        }
        let window = self.window(&policy_name, accepted, grant_duration)?;
        let snapshot = self.grant_snapshot(&policy_name, accepted, control)?;
        Ok(Valid {
            requester,
            policy: accepted,
            policy_name,
            snapshot,
            window,
        })
    }

    fn approve(
        &mut self,
        snapshot: GrantScope,
        window: &Window,
        decided_by: Vec<String>,
        reason: &str,
        mut message: String,
        comment: Option<String>,
    ) -> Effect {
        let (opens, until_time) = window.bounds(self.stamp);
        self.status.decided_at = Some(self.stamp);
        self.status.granted_from = Some(opens);
        self.status.granted_until = Some(until_time);
        self.status.grant = Some(snapshot.clone());
        if let Window::Continues { record, .. } = window {
            let _ = write!(
                message,
                "; continues the grant of ElevationRequest {} (ending {}) until {}",
                record.extends,
                time_for_people(record.continues_from),
                time_for_people(until_time)
            );
            self.status.extension = Some(record.clone());
        }
        let actor = decided_by.join(", ");
        self.status.decided_by = decided_by;
        self.enter(Phase::Approved, &actor, reason, message, comment);
        if self.now >= until_time {
            return (None, Some(std::time::Duration::ZERO));
        }
        if self.now < opens {
            return self.wait_for_window(opens);
        }
        (Some(snapshot), Some(until(until_time, self.now)))
    }

    fn approved(&mut self, policy: &PolicyView<'_>) -> Effect {
        let (Some(snapshot), Some(granted_until)) =
            (self.status.grant.clone(), self.status.granted_until)
        else {
            return self.final_state(
                Phase::Revoked,
                ACTOR_KUBEPAM,
                reason::GRANT_RECORD_MISSING,
                "the status lacks the approved scope or grantedUntil; request access again"
                    .to_owned(),
                None,
            );
        };
        let granted_until = self.shortened_end(policy, granted_until);
        self.status.deadline = Some(granted_until);
        if self.now >= granted_until {
            return self.grant_ended(granted_until);
        }
        if let Some(outcome) = self.review_active_emergency() {
            return outcome;
        }
        // An approver's Revoke is recorded as theirs even when the requester released at
        // the same moment.
        let revokers = reviewers(
            &self.request.spec.reviews,
            self.requester(),
            &[ReviewDecision::Revoke, ReviewDecision::Deny],
        );
        if !revokers.is_empty() {
            let names: Vec<String> = revokers.iter().map(|(w, _)| (*w).to_owned()).collect();
            let actor = names.join(", ");
            let comment = joined_comments(&revokers);
            let message = format!("revoked by {actor}");
            return self.final_state(
                Phase::Revoked,
                &actor,
                reason::REVOKED_BY_APPROVER,
                message,
                comment,
            );
        }
        if let Some(outcome) = self.ended_early() {
            return outcome;
        }
        let current = match self.policy_in_force(policy) {
            Ok(current) => current,
            Err(ended) => return ended,
        };
        let Some(grant) = scope::intersect(&snapshot, &current.spec) else {
            let message = format!(
                "AccessPolicy {} no longer allows any of the approved rights",
                self.request.spec.policy
            );
            return self.final_state(
                Phase::Revoked,
                ACTOR_KUBEPAM,
                reason::POLICY_NARROWED,
                message,
                None,
            );
        };
        if let Some(opens) = self.status.booked_opening().filter(|o| self.now < *o) {
            return self.wait_for_window(opens);
        }
        if let Some(opened) = self.status.granted_from {
            self.note_window_open(opened);
        }
        if grant == snapshot {
            remove_condition(&mut self.status.conditions, CONDITION_GRANT_NARROWED);
        } else {
            set_condition(
                &mut self.status.conditions,
                condition_true(
                    CONDITION_GRANT_NARROWED,
                    reason::POLICY_NARROWED,
                    format!(
                        "AccessPolicy {} narrowed; the grant shrank with it",
                        self.request.spec.policy
                    ),
                    self.stamp,
                    self.generation,
                ),
            );
        }
        (Some(grant), Some(until(granted_until, self.now)))
    }

    /// The policy an approved grant still holds under; `Err` ends the grant when the policy
    /// is gone, refused, or no longer allows emergency access for an emergency grant.
    #[allow(clippy::result_large_err)] // as `validate`: the Err is the outcome to return.
    fn policy_in_force<'p>(&mut self, policy: &PolicyView<'p>) -> Result<&'p AccessPolicy, Effect> {
        let current = match policy {
            PolicyView::Missing => {
                let message = format!("AccessPolicy {} was deleted", self.request.spec.policy);
                return Err(self.final_state(
                    Phase::Revoked,
                    ACTOR_KUBEPAM,
                    reason::POLICY_DELETED,
                    message,
                    None,
                ));
            }
            PolicyView::Refused { reason, message } => {
                let message = format!(
                    "AccessPolicy {} is no longer accepted: {message}",
                    self.request.spec.policy
                );
                return Err(self.final_state(Phase::Revoked, ACTOR_KUBEPAM, reason, message, None));
            }
            PolicyView::Unjudged(p) | PolicyView::Accepted(p) => *p,
        };
        if self.request.spec.emergency && current.spec.break_glass.is_none() {
            let message = format!(
                "AccessPolicy {} no longer allows emergency access (its breakGlass was removed)",
                self.request.spec.policy
            );
            return Err(self.final_state(
                Phase::Revoked,
                ACTOR_KUBEPAM,
                reason::EMERGENCY_NOT_ALLOWED,
                message,
                None,
            ));
        }
        Ok(current)
    }

    /// Note reviews the state machine ignores (the requester's own) in a condition.
    fn note_ignored_reviews(&mut self) {
        if self.status.phase.is_some_and(Phase::is_final) {
            return;
        }
        let requester = self.request.spec.requester.as_deref();
        // The requester's own Release of an approved grant is theirs to write; any other
        // review of theirs is not.
        let approved = self.status.phase == Some(Phase::Approved);
        let ignored = |r: &&str| {
            self.request
                .spec
                .reviews
                .get(*r)
                .is_some_and(|review| !(approved && review.decision == ReviewDecision::Release))
        };
        match requester.filter(ignored) {
            Some(r) => set_condition(
                &mut self.status.conditions,
                condition_true(
                    CONDITION_REVIEWS_IGNORED,
                    reason::SELF_REVIEW,
                    format!("the review by {r} is ignored: nobody can review their own request"),
                    self.stamp,
                    self.generation,
                ),
            ),
            None => remove_condition(&mut self.status.conditions, CONDITION_REVIEWS_IGNORED),
        }
    }
}
