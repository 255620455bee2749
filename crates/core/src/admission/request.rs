//! Identity rules for `ElevationRequest` (DESIGN §2.3, §3.3).
//!
//! - CREATE (mutating, [`request_create`]): `spec.requester` is set to the caller, or must
//!   already be the caller; no reviews yet. The validating pass ([`request_create_validate`])
//!   checks the same after mutation and never patches.
//! - UPDATE ([`request_update`]): only `spec.reviews` may change, each caller writes only their
//!   own entry, must be in the request's approver group, must not be the requester, and the
//!   decision must fit the phase.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use kube::core::ObjectMeta;

use super::{Caller, Reason, Verdict, deny};
use crate::api::{
    AccessPolicy, ElevationRequest, ElevationRequestSpec, Phase, PrivilegedAccessControl,
    ReviewDecision,
};
use crate::duration;
use crate::lifecycle::ControlView;
use chrono::{DateTime, Utc};

const NO_USERNAME: &str = "the API server sent no username for this call, so kubepam cannot tell who you are; call as an authenticated user";

/// Mutating check of a new request: patch `spec.requester` to the caller when it is absent (or
/// empty); refuse a request in someone else's name or one that arrives with reviews.
/// Also gives the request its cleanup finalizer at birth, which spares the
/// controller a write (and an admission round trip) per request.
pub fn request_create(caller: &Caller<'_>, request: &ElevationRequest) -> Verdict {
    let has_requester = match create_checks(caller, request) {
        Err(v) => return v,
        Ok(has) => has,
    };
    let mut operations = Vec::new();
    if !has_requester {
        operations.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["spec", "requester"]),
            value: serde_json::Value::String(caller.username.to_owned()),
        }));
    }
    match &request.metadata.finalizers {
        None => operations.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "finalizers"]),
            value: serde_json::json!([crate::grant::FINALIZER]),
        })),
        Some(existing) if !existing.iter().any(|f| f == crate::grant::FINALIZER) => {
            operations.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "finalizers", "-"]),
                value: serde_json::Value::String(crate::grant::FINALIZER.to_owned()),
            }));
        }
        Some(_) => {}
    }
    if operations.is_empty() {
        Verdict::Allow
    } else {
        Verdict::Patch(Patch(operations))
    }
}

/// Check a new request against its policy and the requester's other requests: the reason
/// pattern, the booked window, the extension and the quotas. It runs the controller's own
/// decision on the request as if it had just arrived, so admission and the controller apply
/// one rule set; only refusals a requester can fix by writing the request differently are
/// given here (a missing or unaccepted policy is left to the controller, as before).
pub fn request_fits_policy<'r>(
    caller: &Caller<'_>,
    request: &ElevationRequest,
    policy: Option<&AccessPolicy>,
    control: Option<&PrivilegedAccessControl>,
    extended: Option<&'r ElevationRequest>,
    mine: impl IntoIterator<Item = &'r ElevationRequest>,
    now: DateTime<Utc>,
) -> Verdict {
    use crate::lifecycle::{OpenCounts, PolicyView, Related, decide_with, reason};
    if let (Some(name), Some(extended)) = (&request.spec.extends, extended)
        && matches!(
            extended.status.as_ref().and_then(|s| s.phase),
            None | Some(crate::api::Phase::Pending)
        )
    {
        return deny(
            Reason::InvalidExtension,
            format!(
                "ElevationRequest {name} is not approved yet; extend it once it is (kubectl pam \
                 status {name})"
            ),
        );
    }
    let Some(policy) = policy.filter(|p| p.metadata.deletion_timestamp.is_none()) else {
        return Verdict::Allow;
    };
    if let refused @ Verdict::Deny(_) = emergency_fits(caller, request, policy) {
        return refused;
    }
    let mut probe = request.clone();
    probe.spec.requester = Some(caller.username.to_owned());
    if probe.spec.emergency && probe.spec.break_glass_group.is_none() {
        // As the mutating webhook sets it.
        probe.spec.break_glass_group = break_glass_group_of(caller, policy).cloned();
    }
    probe.status = None;
    probe.metadata.creation_timestamp = None;
    let related = Related {
        extended,
        extended_by: None,
        open_before: Some(OpenCounts::of(
            mine,
            caller.username,
            &request.spec.policy,
            None,
        )),
    };
    // Judged as accepted: whether it is, is the controller's to say.
    let view = PolicyView::Accepted(policy);
    let control = ControlView::from_control(control);
    let decision = decide_with(&probe, &view, &control, &related, now);
    let Some(transition) = decision.transition.filter(|t| t.to.is_final()) else {
        return Verdict::Allow;
    };
    let code = match transition.reason.as_str() {
        reason::REASON_MISMATCH => Reason::ReasonMismatch,
        reason::QUOTA_EXCEEDED => Reason::QuotaExceeded,
        reason::SCHEDULE_TOO_FAR_AHEAD | reason::WINDOW_PASSED => Reason::InvalidSchedule,
        reason::EXTENDED_NOT_FOUND
        | reason::NOT_EXTENDABLE
        | reason::EXTENDED_GRANT_ENDED
        | reason::EXTENSION_LIMIT_EXCEEDED => Reason::InvalidExtension,
        reason::INVALID_POLICY => Reason::InvalidPolicy,
        reason::EMERGENCY_NOT_ALLOWED | reason::EMERGENCY_DURATION_EXCEEDED => {
            Reason::EmergencyNotAllowed
        }
        _ => return Verdict::Allow,
    };
    deny(code, transition.message)
}

/// Whether the caller may break the glass under `policy`: only a member of its
/// `breakGlass.groups`. The controller cannot see groups: it trusts `spec.breakGlassGroup`,
/// which this and the admission policy `kubepam-identity` check is one of the caller's own.
fn emergency_fits(
    caller: &Caller<'_>,
    request: &ElevationRequest,
    policy: &AccessPolicy,
) -> Verdict {
    if !request.spec.emergency {
        return Verdict::Allow;
    }
    let name = &request.spec.policy;
    let ordinary = match &policy.spec.approver_group {
        Some(group) => format!(
            "file an ordinary request (without emergency) and ask group {group} to approve it"
        ),
        None => "file an ordinary request (without emergency) and ask an approver to approve it"
            .to_owned(),
    };
    let Some(break_glass) = &policy.spec.break_glass else {
        return deny(
            Reason::EmergencyNotAllowed,
            format!("policy {name} allows no emergency access (it has no breakGlass); {ordinary}"),
        );
    };
    if let Some(named) = &request.spec.break_glass_group {
        if !caller.in_group(named) || !break_glass.groups.contains(named) {
            return deny(
                Reason::NotBreakGlass,
                format!(
                    "spec.breakGlassGroup {named:?} must be one of your own groups and one of \
                     policy {name}'s breakGlass.groups ({}); leave it out and kubepam sets it",
                    break_glass.groups.join(", ")
                ),
            );
        }
        return Verdict::Allow;
    }
    if break_glass.groups.iter().any(|g| caller.in_group(g)) {
        return Verdict::Allow;
    }
    deny(
        Reason::NotBreakGlass,
        format!(
            "only members of group(s) {} may request emergency access under policy {name}, and \
             you ({}) are not one; {ordinary}",
            break_glass.groups.join(", "),
            caller.username
        ),
    )
}

/// The patch that records the group an emergency request breaks the glass as: the first of
/// the policy's `breakGlass.groups` the caller is in, when the request names none.
pub fn break_glass_group_patch(
    caller: &Caller<'_>,
    request: &ElevationRequest,
    policy: Option<&AccessPolicy>,
) -> Option<PatchOperation> {
    if !request.spec.emergency || request.spec.break_glass_group.is_some() {
        return None;
    }
    let group = break_glass_group_of(caller, policy?)?;
    Some(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(["spec", "breakGlassGroup"]),
        value: serde_json::Value::String(group.clone()),
    }))
}

/// The group the caller breaks the glass as under `policy`: the first of its
/// `breakGlass.groups` the caller is in.
fn break_glass_group_of<'p>(caller: &Caller<'_>, policy: &'p AccessPolicy) -> Option<&'p String> {
    policy
        .spec
        .break_glass
        .as_ref()?
        .groups
        .iter()
        .find(|g| caller.in_group(g))
}

/// Validating check of a new request, after mutation: like [`request_create`], but an absent
/// `spec.requester` is refused (the mutating webhook always sets it), and it never patches.
pub fn request_create_validate(caller: &Caller<'_>, request: &ElevationRequest) -> Verdict {
    match create_checks(caller, request) {
        Err(v) => v,
        Ok(true) if request.spec.emergency && request.spec.break_glass_group.is_none() => deny(
            Reason::NotBreakGlass,
            "spec.breakGlassGroup is not set, so kubepam's mutating webhook did not see this \
             emergency request; set it to your group among the policy's breakGlass.groups",
        ),
        Ok(true) => Verdict::Allow,
        Ok(false) => deny(
            Reason::RequesterNotSet,
            format!(
                "spec.requester is not set, so kubepam's mutating webhook did not see this request; \
             set spec.requester to your own username ({}) or ask a cluster administrator to \
             check the MutatingWebhookConfiguration kubepam",
                caller.username
            ),
        ),
    }
}

/// `Ok(true)` when the requester is the caller, `Ok(false)` when it is absent.
fn create_checks(caller: &Caller<'_>, request: &ElevationRequest) -> Result<bool, Verdict> {
    if caller.username.is_empty() {
        return Err(deny(Reason::NoUsername, NO_USERNAME));
    }
    let spec = &request.spec;
    let present = match spec.requester.as_deref() {
        None | Some("") => false,
        Some(r) if r == caller.username => true,
        Some(r) => {
            return Err(deny(
                Reason::ForgedRequester,
                format!(
                    "spec.requester must be your own username ({}), or be left out; a request can \
                 never be made in someone else's name (it says {r})",
                    caller.username
                ),
            ));
        }
    };
    if !spec.reviews.is_empty() {
        let keys: Vec<&str> = spec.reviews.keys().map(String::as_str).collect();
        return Err(deny(
            Reason::ReviewsAtCreation,
            format!(
                "spec.reviews must be empty when a request is created (it has reviews by {}); \
             approvers add their own review after it is submitted",
                keys.join(", ")
            ),
        ));
    }
    if let Some(d) = &spec.duration
        && let Err(e) = duration::parse(d)
    {
        return Err(deny(Reason::InvalidDuration, format!("spec.duration: {e}")));
    }
    Ok(present)
}

/// The garbage collector: it may remove ownerReferences and deletion finalizers.
pub const GARBAGE_COLLECTOR: &str = "system:serviceaccount:kube-system:generic-garbage-collector";
/// Cluster administrators, who may remove kubepam's finalizer when uninstalling.
pub const ADMIN_GROUP: &str = "system:masters";
/// Label and annotation keys with this prefix are kubepam's to set.
pub const RESERVED_PREFIX: &str = "kubepam.io/";

/// Check what a caller changes in a request's metadata (on CREATE `old` is `None`).
///
/// - `ownerReferences` and `finalizers` are kubepam's: only kubepam (`operator`), members of
///   `system:masters` and the garbage collector may change them. An owner reference would let
///   the garbage collector delete the request and its record with its owner, and a removed
///   finalizer would let a request go before its grant is cleaned up.
/// - Labels and annotations are the requester's (their own bookkeeping, the tracking labels of
///   the tools that apply their requests); nobody else may change them, and keys under
///   `kubepam.io/` are kubepam's alone.
pub fn metadata_change(
    caller: &Caller<'_>,
    old: Option<&ElevationRequest>,
    new: &ElevationRequest,
    operator: &str,
) -> Verdict {
    // Not even kubepam or an administrator may settle a request that can still
    // change: kubepam stops watching what is settled, and a grant it no longer
    // watches would never end.
    let settles =
        crate::reconcile::is_settled(new) && !old.is_some_and(crate::reconcile::is_settled);
    let phase = new.status.as_ref().and_then(|s| s.phase);
    let review_owed = new
        .status
        .as_ref()
        .is_some_and(crate::lifecycle::review_pending);
    if settles && (!phase.is_some_and(Phase::is_final) || review_owed) {
        return deny(
            Reason::MetadataReserved,
            format!(
                "the label {} marks a request that has ended and holds nothing, and only kubepam \
                 sets it; ElevationRequest {} is {}{}: remove the label",
                crate::reconcile::LABEL_SETTLED,
                new.metadata.name.as_deref().unwrap_or(""),
                phase.map_or("new", Phase::as_str),
                if review_owed {
                    " and its emergency access awaits review"
                } else {
                    ""
                },
            ),
        );
    }
    let privileged = (!operator.is_empty() && caller.username == operator)
        || caller.in_group(ADMIN_GROUP)
        || caller.username == GARBAGE_COLLECTOR;
    if privileged {
        return Verdict::Allow;
    }
    let empty = ObjectMeta::default();
    let before = old.map_or(&empty, |o| &o.metadata);
    let after = &new.metadata;
    let name = after.name.as_deref().unwrap_or("");
    if before.owner_references != after.owner_references
        && !(old.is_none() && after.owner_references.as_ref().is_none_or(Vec::is_empty))
    {
        return deny(
            Reason::MetadataReserved,
            format!(
                "metadata.ownerReferences of ElevationRequest {name} are kubepam's: with an owner, \
                 the garbage collector would delete the request and its record; leave them out"
            ),
        );
    }
    // The finalizers kubepam's mutating webhook adds at creation are its own.
    let finalizers = |m: &ObjectMeta| {
        m.finalizers
            .iter()
            .flatten()
            .filter(|f| old.is_some() || *f != crate::grant::FINALIZER)
            .cloned()
            .collect::<Vec<_>>()
    };
    if finalizers(before) != finalizers(after) {
        return deny(
            Reason::MetadataReserved,
            format!(
                "metadata.finalizers of ElevationRequest {name} are kubepam's: its finalizer keeps \
                 the request until its grant is removed; a cluster administrator (system:masters) \
                 may remove it when uninstalling kubepam"
            ),
        );
    }
    let reserved = |m: &ObjectMeta| -> Vec<(String, String)> {
        m.labels
            .iter()
            .flatten()
            .chain(m.annotations.iter().flatten())
            .filter(|(k, _)| k.starts_with(RESERVED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if reserved(before) != reserved(after) {
        return deny(
            Reason::MetadataReserved,
            format!(
                "labels and annotations under {RESERVED_PREFIX} are kubepam's; remove them from \
                 ElevationRequest {name}"
            ),
        );
    }
    let requester = old.and_then(|o| o.spec.requester.as_deref());
    if old.is_some()
        && requester != Some(caller.username)
        && (before.labels != after.labels || before.annotations != after.annotations)
    {
        return deny(
            Reason::MetadataReserved,
            format!(
                "only the requester ({}) may change the labels and annotations of \
                 ElevationRequest {name}; you ({}) may only write your own review",
                requester.unwrap_or("unknown"),
                caller.username
            ),
        );
    }
    Verdict::Allow
}

/// Check an update of a request: only reviews may change, and only the caller's own, by a
/// member of the approver group who is not the requester, with a decision that fits the phase.
///
/// `policy` is the AccessPolicy named by `old.spec.policy` (if it exists) and `control` the
/// `default` PrivilegedAccessControl; both are read only while the request's status does not
/// yet record its approver group.
pub fn request_update(
    caller: &Caller<'_>,
    old: &ElevationRequest,
    new: &ElevationRequest,
    policy: Option<&AccessPolicy>,
    control: Option<&PrivilegedAccessControl>,
) -> Verdict {
    if let Some(field) = changed_field(&old.spec, &new.spec) {
        return deny(
            Reason::SpecImmutable,
            format!(
                "spec.{field} cannot change after creation (spec is immutable except reviews); \
             create a new ElevationRequest instead"
            ),
        );
    }
    let changed: Vec<&str> = changed_review_keys(&old.spec, &new.spec);
    if changed.is_empty() {
        // Metadata, finalizers, labels: RBAC governs those.
        return Verdict::Allow;
    }
    if caller.username.is_empty() {
        return deny(Reason::NoUsername, NO_USERNAME);
    }
    let name = old.metadata.name.as_deref().unwrap_or("");
    if let Some(other) = changed.iter().find(|k| **k != caller.username) {
        return deny(
            Reason::OthersReview,
            format!(
                "you ({me}) may only add, change or remove your own review, \
             spec.reviews[\"{me}\"]; the review by {other} is theirs alone to write",
                me = caller.username
            ),
        );
    }
    let phase = old.status.as_ref().and_then(|s| s.phase);
    let new_review = new.spec.reviews.get(caller.username);
    let is_requester = old.spec.requester.as_deref() == Some(caller.username);
    let releases =
        |r: Option<&crate::api::Review>| r.is_some_and(|r| r.decision == ReviewDecision::Release);
    if releases(new_review) || releases(old.spec.reviews.get(caller.username)) {
        return release_fits(name, caller, old, phase, releases(new_review));
    }
    let group = approver_group(old, policy, control);
    if is_requester {
        let who = match &group {
            Ok(g) => format!("a member of group {g}"),
            Err(_) => "a member of its approver group".to_owned(),
        };
        return deny(
            Reason::SelfReview,
            format!(
                "you ({}) requested ElevationRequest {name}, and nobody can review their own \
             request; {who} must review it (to end your own grant early, write decision Release: \
             kubectl pam release {name})",
                caller.username
            ),
        );
    }
    let groups = match group {
        Ok(base) => deciding_groups(old, base),
        // RBAC's answer does not depend on the group.
        Err(_) if caller.approves_by_rbac => Vec::new(),
        Err(v) => return v,
    };
    if !caller.approves_by_rbac && !groups.iter().any(|g| caller.in_group(g)) {
        let policy = &old.spec.policy;
        let members = match groups.as_slice() {
            [one] => format!("members of group {one}"),
            many => format!("members of groups {}", many.join(", ")),
        };
        return deny(
            Reason::NotAnApprover,
            format!(
                "only {members} may review ElevationRequest {name}, or whoever RBAC allows the \
                 verb approve on accesspolicies/{policy}, not by a wildcard (kubectl auth can-i \
                 approve accesspolicies/{policy}); you ({}) are neither, so ask one of them \
                 to review it",
                caller.username
            ),
        );
    }
    let verdict = |r: Option<&crate::api::Review>| {
        r.is_some_and(|r| matches!(r.decision, ReviewDecision::Confirm | ReviewDecision::Reject))
    };
    if verdict(new_review) {
        return review_fits(name, old);
    }
    if verdict(old.spec.reviews.get(caller.username))
        && new_review.map(|r| r.decision) != Some(ReviewDecision::Revoke)
    {
        return deny(
            Reason::AlreadyReviewed,
            format!(
                "your review of the emergency access of ElevationRequest {name} is part of the \
                 record: it can only give way to Revoke, which ends the grant"
            ),
        );
    }
    fits_phase(name, phase, new_review.map(|r| r.decision))
}

/// The groups whose members may decide now: those the operator recorded (the approver group
/// and each escalation group whose step opened), else the approver group alone.
fn deciding_groups(old: &ElevationRequest, base: String) -> Vec<String> {
    match old.status.as_ref().map(|s| &s.approver_groups) {
        Some(recorded) if !recorded.is_empty() => recorded.clone(),
        _ => vec![base],
    }
}

/// Whether a `Confirm` or `Reject` fits: only on an emergency request whose grant kubepam
/// recorded and that waits for its review.
fn review_fits(name: &str, old: &ElevationRequest) -> Verdict {
    if !old.spec.emergency {
        return deny(
            Reason::NotAnEmergency,
            format!(
                "ElevationRequest {name} is not an emergency request: Confirm and Reject review \
                 emergency access afterwards; decide an ordinary request with Approve or Deny \
                 (Pending), or end its grant with Revoke (Approved)"
            ),
        );
    }
    let status = old.status.clone().unwrap_or_default();
    if crate::lifecycle::review_pending(&status) {
        return Verdict::Allow;
    }
    match crate::api::find_condition(
        &status.conditions,
        crate::lifecycle::CONDITION_REVIEW_REQUIRED,
    ) {
        Some(done) => deny(
            Reason::AlreadyReviewed,
            format!(
                "the emergency access of ElevationRequest {name} was already reviewed ({}); the \
                 verdict is part of the record",
                done.message
            ),
        ),
        None => deny(
            Reason::NothingToReview,
            format!(
                "kubepam has not recorded an emergency grant for ElevationRequest {name} (it is \
                 {}); review it once it is Approved",
                status.phase.map_or("new", Phase::as_str)
            ),
        ),
    }
}

/// Whether the caller may write (`adds`) or change away from a `Release` review: only the
/// requester, only while the grant is Approved (booked or open), and never take it back.
fn release_fits(
    name: &str,
    caller: &Caller<'_>,
    old: &ElevationRequest,
    phase: Option<Phase>,
    adds: bool,
) -> Verdict {
    let requester = old.spec.requester.as_deref().unwrap_or("unknown");
    if requester != caller.username {
        return deny(
            Reason::ReleaseNotYours,
            format!(
                "only the requester ({requester}) may release ElevationRequest {name}; you ({}) \
                 may end it as an approver with decision Revoke",
                caller.username
            ),
        );
    }
    match phase {
        Some(p) if p.is_final() => deny(
            Reason::PhaseFinal,
            format!(
                "ElevationRequest {name} is {p}, which is final: its reviews are part of the \
                 record and cannot change"
            ),
        ),
        _ if !adds => deny(
            Reason::PhaseFinal,
            format!(
                "you released ElevationRequest {name}, and a release cannot be taken back; \
                 request access again if you need it"
            ),
        ),
        Some(Phase::Approved) => Verdict::Allow,
        _ => deny(
            Reason::NothingToRelease,
            format!(
                "ElevationRequest {name} is {}, so there is no grant to release; a request \
                 nobody decides expires by itself (status.expiresAt), or an approver may deny it",
                phase.map_or("new", Phase::as_str)
            ),
        ),
    }
}

/// The first spec field other than `reviews` that differs, by its YAML name.
fn changed_field(old: &ElevationRequestSpec, new: &ElevationRequestSpec) -> Option<&'static str> {
    if old.policy != new.policy {
        Some("policy")
    } else if old.namespace != new.namespace {
        Some("namespace")
    } else if old.reason != new.reason {
        Some("reason")
    } else if old.duration != new.duration {
        Some("duration")
    } else if old.requester != new.requester {
        Some("requester")
    } else if old.start_at != new.start_at {
        Some("startAt")
    } else if old.extends != new.extends {
        Some("extends")
    } else if old.emergency != new.emergency {
        Some("emergency")
    } else if old.break_glass_group != new.break_glass_group {
        Some("breakGlassGroup")
    } else {
        None
    }
}

/// Review keys added, changed or removed, sorted.
pub(crate) fn changed_review_keys<'a>(
    old: &'a ElevationRequestSpec,
    new: &'a ElevationRequestSpec,
) -> Vec<&'a str> {
    let mut keys: Vec<&str> = old
        .reviews
        .keys()
        .chain(new.reviews.keys())
        .map(String::as_str)
        .filter(|k| old.reviews.get(*k) != new.reviews.get(*k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The approver group of the request: the one the operator recorded in status; before that,
/// the one it will record (the policy's, else the control's default).
fn approver_group(
    old: &ElevationRequest,
    policy: Option<&AccessPolicy>,
    control: Option<&PrivilegedAccessControl>,
) -> Result<String, Verdict> {
    let recorded = old
        .status
        .as_ref()
        .and_then(|s| s.approver_group.clone())
        .filter(|g| !g.trim().is_empty());
    let phase = old.status.as_ref().and_then(|s| s.phase);
    let control = ControlView::from_control(control);
    // What the operator resolves on its next pass (lifecycle::decide does the same).
    let current = policy
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| {
            p.spec
                .approver_group
                .clone()
                .or_else(|| control.settings().map(|s| s.default_approver_group.clone()))
        })
        .filter(|g| !g.trim().is_empty());
    match (recorded, current) {
        // While Pending the operator re-resolves the group on every pass: refuse during the
        // short window where the policy (or the control) has moved on but the status has not.
        (Some(r), Some(c)) if r != c && matches!(phase, None | Some(Phase::Pending)) => Err(deny(
            Reason::ApproverGroupChanging,
            format!(
                "the approver group of this request is changing from {r} to {c} (its \
                 AccessPolicy or the control was edited); try again in a few seconds"
            ),
        )),
        (Some(r), _) => Ok(r),
        (None, Some(c)) => Ok(c),
        (None, None) => Err(deny(
            Reason::ApproverGroupUnknown,
            "the request has not been processed yet, so its approver group is not known; try \
             again in a few seconds",
        )),
    }
}

/// Whether the caller's new review (or its removal, `None`) fits the phase.
fn fits_phase(name: &str, phase: Option<Phase>, decision: Option<ReviewDecision>) -> Verdict {
    match (phase, decision) {
        (Some(p), _) if p.is_final() => deny(
            Reason::PhaseFinal,
            format!(
                "ElevationRequest {name} is {p}, which is final: its reviews are part of the record \
             and cannot change; the requester may create a new request"
            ),
        ),
        (
            None | Some(Phase::Pending),
            None | Some(ReviewDecision::Approve | ReviewDecision::Deny),
        )
        | (Some(Phase::Approved), Some(ReviewDecision::Revoke)) => Verdict::Allow,
        (None | Some(Phase::Pending), Some(ReviewDecision::Revoke)) => deny(
            Reason::NothingToRevoke,
            format!(
                "ElevationRequest {name} is Pending, so there is no approval to revoke; use decision \
             Deny to refuse it"
            ),
        ),
        (_, Some(ReviewDecision::Release)) => deny(
            Reason::ReleaseNotYours,
            format!("only the requester may release ElevationRequest {name}"),
        ),
        (_, Some(ReviewDecision::Confirm | ReviewDecision::Reject)) => deny(
            Reason::NotAnEmergency,
            format!(
                "ElevationRequest {name} is not an emergency request: Confirm and Reject review \
                 emergency access afterwards; decide an ordinary request with Approve or Deny \
                 (Pending), or end its grant with Revoke (Approved)"
            ),
        ),
        (Some(Phase::Approved), _) => deny(
            Reason::AlreadyApproved,
            format!(
                "ElevationRequest {name} is already Approved: the only review that can still be \
             recorded is your own with decision Revoke, which ends the grant early"
            ),
        ),
        // Final phases are handled by the first arm.
        (Some(Phase::Denied | Phase::Expired | Phase::Revoked), _) => deny(
            Reason::PhaseFinal,
            format!("ElevationRequest {name} is final; its reviews cannot change"),
        ),
    }
}
