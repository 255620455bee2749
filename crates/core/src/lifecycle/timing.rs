//! Time and its limits: booked windows, extensions, quotas, and grants ended early by the
//! requester or with the grant they continued. Part of [`decide`](super::decide).

use chrono::{DateTime, TimeDelta, Utc};

use std::fmt::Write as _;

use super::{
    ACTOR_KUBEPAM, CONDITION_RELEASED, CONDITION_SCHEDULED, ControlView, Effect, OpenCounts,
    PolicyView, Step, reason, until,
};
use crate::api::{
    AccessPolicy, ExtensionRecord, Phase, ReviewDecision, condition_false, condition_true,
    set_condition,
};
use crate::duration;
use crate::util::time_for_people;

/// Why a new request is over a quota, as a sentence with the count and the limit; `None`
/// when within every quota. `policy_cap` is the policy's `maxOpenPerRequester` (not applied to
/// extensions), `pending_cap` the control's `maxPendingPerRequester`.
pub fn quota_refusal(
    policy: &str,
    open: OpenCounts,
    policy_cap: Option<u32>,
    pending_cap: Option<u32>,
) -> Option<String> {
    if let Some(cap) = policy_cap.filter(|cap| open.same_policy >= *cap) {
        return Some(format!(
            "you already hold {} open request(s) under policy {policy} (Pending or Approved), and \
             it allows {cap} at once; release an Approved one you no longer need (kubectl pam \
             release NAME), or wait until one is decided or ends",
            open.same_policy
        ));
    }
    if let Some(cap) = pending_cap.filter(|cap| open.pending >= *cap) {
        return Some(format!(
            "you already have {} Pending request(s), and the PrivilegedAccessControl allows {cap} \
             per person; wait until one is decided (or expires)",
            open.pending
        ));
    }
    None
}

/// A span in whole seconds, for people (`duration::format` takes whole seconds).
fn whole(span: TimeDelta) -> String {
    duration::format(TimeDelta::seconds(span.num_seconds().max(0)))
}

/// When an approval's grant holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Window {
    /// From the approval, for the duration.
    FromApproval(TimeDelta),
    /// A booked window: `start` to `start` plus the duration, opening at the approval if that
    /// is later.
    Booked {
        start: DateTime<Utc>,
        length: TimeDelta,
    },
    /// An extension: from where the grant it extends ends, for the duration. Its rights open
    /// at the approval (they are the ones already held, so nothing opens early and nothing is
    /// missing at the boundary), but never before the extended grant's own opening.
    Continues {
        record: ExtensionRecord,
        not_before: DateTime<Utc>,
        length: TimeDelta,
    },
}

impl Window {
    /// (opens, ends) for an approval at `stamp`.
    pub(super) fn bounds(&self, stamp: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let add = |t: DateTime<Utc>, d: TimeDelta| t.checked_add_signed(d).unwrap_or(t);
        match self {
            Self::FromApproval(length) => (stamp, add(stamp, *length)),
            Self::Booked { start, length } => ((*start).max(stamp), add(*start, *length)),
            Self::Continues {
                record,
                not_before,
                length,
            } => (
                (*not_before).max(stamp),
                add(record.continues_from, *length),
            ),
        }
    }
}

/// Why a policy's extension rules would let one approval grow without end: extensions
/// approved automatically under a policy whose first requests need an approver, with no
/// `extension.maxTotal`.
pub fn unbounded_auto_extensions(spec: &crate::api::AccessPolicySpec) -> Option<String> {
    let extension = spec.extension.as_ref()?;
    (extension.approval_type == Some(crate::api::ApprovalType::Auto)
        && spec.approval_type == crate::api::ApprovalType::Manual
        && extension.max_total.is_none())
    .then(|| {
        "extension.approvalType Auto on a Manual policy needs extension.maxTotal (e.g. 12h): \
         without it one approval could be extended without end, with nobody deciding"
            .to_owned()
    })
}

impl Step<'_> {
    /// When an undecided request expires: `requestTTL` after submission, or when its booked
    /// window ends if that comes first.
    pub(super) fn expiry_from(
        &self,
        submitted: DateTime<Utc>,
        control: &ControlView,
    ) -> DateTime<Utc> {
        let mut ttl_end = submitted
            .checked_add_signed(control.request_ttl())
            .unwrap_or(submitted);
        if self.request.spec.emergency {
            // An emergency is now: one that cannot be granted soon (kubepam disabled, the
            // policy not accepted yet) expires rather than open much later.
            let soon = submitted
                .checked_add_signed(super::routing::EMERGENCY_REQUEST_TTL)
                .unwrap_or(submitted);
            ttl_end = ttl_end.min(soon);
        }
        match self.booked_end(control) {
            Some(end) => ttl_end.min(end),
            None => ttl_end,
        }
    }

    /// The end of the booked window (`spec.startAt` plus the duration), if one is booked and
    /// its duration parses.
    pub(super) fn booked_end(&self, control: &ControlView) -> Option<DateTime<Utc>> {
        let start = self.request.spec.start_at?;
        let length = match &self.request.spec.duration {
            None => control.default_duration(),
            Some(d) => duration::parse(d).ok()?,
        };
        start.checked_add_signed(length)
    }

    /// Deny a new request beyond the requester's quota (the controller's word on a race that
    /// admission, counting before either request existed, could not see).
    pub(super) fn over_quota(
        &mut self,
        policy: &PolicyView<'_>,
        control: &ControlView,
    ) -> Option<Effect> {
        let counts = self.related.open_before?;
        let policy_cap = policy
            .policy()
            .and_then(|p| p.spec.max_open_per_requester)
            .filter(|_| self.request.spec.extends.is_none());
        let pending_cap = control.settings().and_then(|s| s.max_pending_per_requester);
        let message = quota_refusal(&self.request.spec.policy, counts, policy_cap, pending_cap)?;
        Some(self.deny(reason::QUOTA_EXCEEDED, message))
    }

    /// When the grant would hold if approved now, checked against the policy's schedule and
    /// extension limits.
    #[allow(clippy::result_large_err)] // as `validate`.
    pub(super) fn window(
        &mut self,
        policy_name: &str,
        accepted: &AccessPolicy,
        length: TimeDelta,
    ) -> Result<Window, Effect> {
        if self.request.spec.start_at.is_some() && self.request.spec.extends.is_some() {
            // The CRD refuses this; never let a booked window skip the extension rules.
            return Err(self.deny(
                reason::EXTENSION_LIMIT_EXCEEDED,
                "an extension starts where the grant it extends ends: leave out startAt when \
                 setting extends"
                    .to_owned(),
            ));
        }
        if let Some(start) = self.request.spec.start_at {
            let submitted = self.status.submitted_at.unwrap_or(self.stamp);
            if let Some(max) = &accepted.spec.max_schedule_ahead {
                match duration::parse(max) {
                    Ok(max) if start - submitted > max => {
                        let message = format!(
                            "startAt {} is {} after the request was submitted, and policy \
                             {policy_name} books windows at most {} ahead; choose a start before {}",
                            time_for_people(start),
                            whole(start - submitted),
                            duration::format(max),
                            time_for_people(submitted + max),
                        );
                        return Err(self.deny(reason::SCHEDULE_TOO_FAR_AHEAD, message));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(self.deny(
                            reason::INVALID_POLICY,
                            format!("policy {policy_name} maxScheduleAhead: {e}"),
                        ));
                    }
                }
            }
            return Ok(Window::Booked { start, length });
        }
        let Some(extended_name) = self.request.spec.extends.clone() else {
            return Ok(Window::FromApproval(length));
        };
        let (record, not_before) = self.extension_of(&extended_name, policy_name)?;
        let limits = accepted.spec.extension.clone().unwrap_or_default();
        if let Some(problem) = unbounded_auto_extensions(&accepted.spec) {
            return Err(self.deny(
                reason::INVALID_POLICY,
                format!("policy {policy_name}: {problem}"),
            ));
        }
        if let Some(max) = limits.max_extensions.filter(|max| record.number > *max) {
            let message = if max == 0 {
                format!("policy {policy_name} allows no extensions; request access anew")
            } else {
                format!(
                    "policy {policy_name} allows at most {max} extension(s) of a grant, and this \
                     would be number {}; request access anew",
                    record.number
                )
            };
            return Err(self.deny(reason::EXTENSION_LIMIT_EXCEEDED, message));
        }
        if let Some(max_total) = &limits.max_total {
            match duration::parse(max_total) {
                Ok(max) => {
                    let end = record
                        .continues_from
                        .checked_add_signed(length)
                        .unwrap_or(record.continues_from);
                    let total = end - record.chain_start;
                    if total > max {
                        let left = (record.chain_start + max - record.continues_from)
                            .max(TimeDelta::zero());
                        let message = format!(
                            "with this extension the grant would last {} in all, and policy \
                             {policy_name} allows at most {}; extend by at most {}",
                            whole(total),
                            duration::format(max),
                            whole(left),
                        );
                        return Err(self.deny(reason::EXTENSION_LIMIT_EXCEEDED, message));
                    }
                }
                Err(e) => {
                    return Err(self.deny(
                        reason::INVALID_POLICY,
                        format!("policy {policy_name} extension.maxTotal: {e}"),
                    ));
                }
            }
        }
        Ok(Window::Continues {
            record,
            not_before,
            length,
        })
    }

    /// Where an extension sits: the grant it continues must be the requester's own, under
    /// the same policy and namespace, and still in force. `Err` ends the extension.
    #[allow(clippy::result_large_err)] // as `validate`.
    pub(super) fn extension_of(
        &mut self,
        extended_name: &str,
        policy_name: &str,
    ) -> Result<(ExtensionRecord, DateTime<Utc>), Effect> {
        let Some(extended) = self.related.extended else {
            let message = format!(
                "ElevationRequest {extended_name} (spec.extends) does not exist, or ended and \
                 was settled long ago; extend one of your Approved requests (kubectl pam list)"
            );
            return Err(self.deny(reason::EXTENDED_NOT_FOUND, message));
        };
        let spec = &self.request.spec;
        if extended.spec.requester != spec.requester
            || extended.spec.policy != spec.policy
            || extended.spec.namespace != spec.namespace
        {
            let message = format!(
                "ElevationRequest {extended_name} is not yours under policy {policy_name} in the \
                 same namespace; only the requester may extend a grant, under its own policy and \
                 namespace"
            );
            return Err(self.deny(reason::NOT_EXTENDABLE, message));
        }
        if extended.spec.emergency {
            // Break glass is short and reviewed: more time is a new emergency request, which
            // is reviewed too.
            let message = format!(
                "ElevationRequest {extended_name} is emergency access (break glass), which is not \
                 extended: file a new emergency request when it ends, or an ordinary request"
            );
            return Err(self.deny(reason::NOT_EXTENDABLE, message));
        }
        let extended_phase = extended.status.as_ref().and_then(|s| s.phase);
        if matches!(extended_phase, None | Some(Phase::Pending)) {
            // Not decided yet (or decided a moment ago and not seen yet): wait for it.
            let message = format!(
                "waiting for ElevationRequest {extended_name}, which this extends, to be approved"
            );
            return Err(self.wait(
                reason::AWAITING_APPROVAL,
                message,
                Some(super::UNJUDGED_RETRY),
            ));
        }
        let in_force = extended.status.as_ref().and_then(|s| {
            s.granted_until
                .filter(|until| s.phase == Some(Phase::Approved) && self.now < *until)
                .map(|until| (s, until))
        });
        let Some((status, continues_from)) = in_force else {
            // Never revive an ended grant.
            let message = format!(
                "the grant of ElevationRequest {extended_name} ended before this extension was \
                 approved; request access anew"
            );
            return Err(self.final_state(
                Phase::Expired,
                ACTOR_KUBEPAM,
                reason::EXTENDED_GRANT_ENDED,
                message,
                None,
            ));
        };
        let opened = status
            .granted_from
            .or(status.decided_at)
            .unwrap_or(self.stamp);
        let record = match &status.extension {
            Some(before) => ExtensionRecord {
                extends: extended_name.to_owned(),
                number: before.number.saturating_add(1),
                chain_start: before.chain_start,
                continues_from,
            },
            None => ExtensionRecord {
                extends: extended_name.to_owned(),
                number: 1,
                chain_start: opened,
                continues_from,
            },
        };
        Ok((record, opened))
    }

    /// Approved, before the booked window opens: no rights yet, look again when it opens.
    pub(super) fn wait_for_window(&mut self, opens: DateTime<Utc>) -> Effect {
        self.status.starts_at = Some(opens);
        let already = crate::api::find_condition(&self.status.conditions, CONDITION_SCHEDULED)
            .is_some_and(|c| c.status == "True");
        if !already {
            set_condition(
                &mut self.status.conditions,
                condition_true(
                    CONDITION_SCHEDULED,
                    reason::WINDOW_BOOKED,
                    format!("the grant opens at {}", time_for_people(opens)),
                    self.stamp,
                    self.generation,
                ),
            );
        }
        (None, Some(until(opens, self.now)))
    }

    /// The booked window is open: say so once.
    pub(super) fn note_window_open(&mut self, opened: DateTime<Utc>) {
        self.status.starts_at = None;
        let waiting = crate::api::find_condition(&self.status.conditions, CONDITION_SCHEDULED)
            .is_some_and(|c| c.status == "True");
        if waiting {
            set_condition(
                &mut self.status.conditions,
                condition_false(
                    CONDITION_SCHEDULED,
                    reason::WINDOW_OPENED,
                    format!("the booked window opened at {}", time_for_people(opened)),
                    self.stamp,
                    self.generation,
                ),
            );
        }
    }

    /// The Approved extension that continues this grant, and where it ends.
    pub(super) fn continued_by(&self) -> Option<(String, DateTime<Utc>)> {
        let ext = self.related.extended_by?;
        let status = ext.status.as_ref()?;
        (status.phase == Some(Phase::Approved)).then_some(())?;
        Some((ext.metadata.name.clone()?, status.granted_until?))
    }

    /// The grant's end, shortened if the policy's `maxDuration` shrank (nothing lengthens it).
    /// The duration counts from where the window starts: the booked start, the end of the
    /// extended grant, or the approval.
    pub(super) fn shortened_end(
        &mut self,
        policy: &PolicyView<'_>,
        granted_until: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let window_start = self
            .status
            .extension
            .as_ref()
            .map(|e| e.continues_from)
            .or(self.request.spec.start_at)
            .or(self.status.decided_at);
        let Some(p) = policy.policy() else {
            return granted_until;
        };
        // An emergency grant is also held to breakGlass.maxDuration as it stands.
        let emergency_max = p
            .spec
            .break_glass
            .as_ref()
            .filter(|_| self.request.spec.emergency)
            .map(|b| b.max_duration.as_str());
        let shortest = [p.spec.max_duration.as_deref(), emergency_max]
            .into_iter()
            .flatten()
            .filter_map(|max| duration::parse(max).ok())
            .min();
        if let (Some(max), Some(start)) = (shortest, window_start)
            && let Some(end) = start.checked_add_signed(max)
            && end < granted_until
        {
            self.status.granted_until = Some(end);
            return end;
        }
        granted_until
    }

    /// The window is over: Expired, naming the extension that continues it, if any.
    pub(super) fn grant_ended(&mut self, granted_until: DateTime<Utc>) -> Effect {
        let mut message = format!("the grant ended at {}", time_for_people(granted_until));
        if let Some((name, until)) = self.continued_by() {
            let _ = write!(
                message,
                "; it continues under ElevationRequest {name} until {}",
                time_for_people(until)
            );
        }
        self.final_state(
            Phase::Expired,
            ACTOR_KUBEPAM,
            reason::GRANT_DURATION_ENDED,
            message,
            None,
        )
    }

    /// A grant that ends before its time without an approver: released by its requester, or
    /// an extension whose continued grant was revoked or released.
    pub(super) fn ended_early(&mut self) -> Option<Effect> {
        if let Some(requester) = self.requester().map(str::to_owned)
            && let Some(release) = self
                .request
                .spec
                .reviews
                .get(&requester)
                .filter(|r| r.decision == ReviewDecision::Release)
        {
            let comment = release.comment.clone();
            set_condition(
                &mut self.status.conditions,
                condition_true(
                    CONDITION_RELEASED,
                    reason::RELEASED_BY_REQUESTER,
                    format!("{requester} ended the grant early"),
                    self.stamp,
                    self.generation,
                ),
            );
            return Some(self.final_state(
                Phase::Revoked,
                &requester,
                reason::RELEASED_BY_REQUESTER,
                format!("released by the requester, {requester}"),
                comment,
            ));
        }
        if let (Some(record), Some(extended)) = (&self.status.extension, self.related.extended)
            && let Some(status) = extended.status.as_ref()
            && (status.phase == Some(Phase::Revoked)
                || crate::api::find_condition(&status.conditions, super::CONDITION_REVIEW_REQUIRED)
                    .is_some_and(|c| c.reason == reason::EMERGENCY_REJECTED)
                || status
                    .granted_until
                    .is_some_and(|end| end < record.continues_from))
        {
            // Revoked, released, or cut short (its policy's maxDuration shrank): an extension
            // never carries on what its grant no longer holds.
            let message = format!(
                "the grant it continues, ElevationRequest {}, was revoked, released or cut short",
                record.extends
            );
            return Some(self.final_state(
                Phase::Revoked,
                ACTOR_KUBEPAM,
                reason::EXTENDED_GRANT_REVOKED,
                message,
                None,
            ));
        }
        None
    }
}
