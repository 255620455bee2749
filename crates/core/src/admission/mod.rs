//! Admission decisions as pure functions (DESIGN §2.3, §3.2, §3.3).
//!
//! The HTTPS transport hands each `AdmissionReview` to [`review::parse_review`], looks up
//! what a rule needs from its caches, calls one of the rules below and turns the [`Verdict`]
//! into a response with [`review::respond`]. Nothing here reads a clock, a cache or the network,
//! so every rule is tested on inline objects.
//!
//! - [`request`]: who may create an `ElevationRequest` and who may write which review.
//! - [`policy`]: the 30-policy cap and the shape of an `AccessPolicy`.
//! - [`guard`]: the Task guard, and the webhook rules that send it exactly the guarded
//!   operations.
//! - [`review`]: the `AdmissionReview` envelope: parsing, decoding objects, building responses;
//!   never panics on any input.
//!
//! Every refusal says what was wrong and who may act or what to do instead, and carries a
//! stable [`Reason`] code for metrics and clients.

pub mod guard;
pub mod policy;
pub mod request;
pub mod review;

#[cfg(test)]
mod props;
#[cfg(test)]
mod routing_rules;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_rules;

use k8s_openapi::api::authentication::v1::UserInfo;

pub use guard::{
    GuardOperation, GuardRules, GuardVerdict, UnguardedVerb, execution, guard, guard_rules,
};
pub use policy::{PolicyFacts, policy_create, policy_update, policy_warnings};
pub use request::{
    metadata_change, request_create, request_create_validate, request_fits_policy, request_update,
};
pub use review::{
    Error, Pass, RequestLookup, admit_access_policy, admit_elevation_request,
    approval_right_needed, decode, invalid, parse_review, respond, respond_guard, response_bytes,
};

/// The verb RBAC grants on `accesspolicies/<name>` to let someone decide that policy's
/// requests without being in its approver groups (`kubectl auth can-i approve
/// accesspolicies/<name>`).
pub const APPROVE_VERB: &str = "approve";

/// A verb no Role names: RBAC allows it only to someone who holds every verb (`*`, as
/// `cluster-admin` and `system:masters` do). Such a standing wildcard never counts as the
/// right to approve: approval rights are given by name.
pub const WILDCARD_PROBE_VERB: &str = "kubepam-wildcard-probe";

/// The authenticated user making the API call, as the API server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// `userInfo.username`.
    pub username: &'a str,
    /// `userInfo.groups`.
    pub groups: &'a [String],
    /// Whether RBAC allows the caller the verb `approve` on the AccessPolicy of the request
    /// being reviewed (a `SubjectAccessReview` the transport made): such a caller may decide it
    /// as if in its approver groups.
    pub approves_by_rbac: bool,
}

impl<'a> Caller<'a> {
    /// The caller of an admission request (empty username and no groups when absent).
    pub fn from_user_info(user: &'a UserInfo) -> Self {
        Self {
            username: user.username.as_deref().unwrap_or(""),
            groups: user.groups.as_deref().unwrap_or(&[]),
            approves_by_rbac: false,
        }
    }

    /// A caller with no RBAC approval right.
    pub fn new(username: &'a str, groups: &'a [String]) -> Self {
        Self {
            username,
            groups,
            approves_by_rbac: false,
        }
    }

    /// Whether the caller is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Why a call was refused: a stable, low-cardinality code, named in `UpperCamelCase` like a
/// Kubernetes `reason`. It labels `kubepam_admission_refusals_total` and is sent as the cause of
/// a refusal (`status.details.causes[0].reason`); the same condition always has the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The API server sent no username, so kubepam cannot tell who is calling.
    NoUsername,
    /// A new request names someone other than its creator in `spec.requester`.
    ForgedRequester,
    /// A new request reached the validating webhook without `spec.requester` (the mutating
    /// webhook did not see it).
    RequesterNotSet,
    /// A new request already carries reviews.
    ReviewsAtCreation,
    /// A new request's `spec.duration` does not parse.
    InvalidDuration,
    /// An update changes a spec field other than `reviews`.
    SpecImmutable,
    /// The caller adds, changes or removes someone else's review.
    OthersReview,
    /// The requester reviews their own request.
    SelfReview,
    /// The caller is not in the request's approver group.
    NotAnApprover,
    /// The approver group is being re-resolved (its policy or the control was just edited).
    ApproverGroupChanging,
    /// The request has not been processed yet, so its approver group is not known.
    ApproverGroupUnknown,
    /// The request is Denied, Expired or Revoked: its reviews are part of the record.
    PhaseFinal,
    /// A Revoke on a request that is still Pending.
    NothingToRevoke,
    /// A review other than Revoke on a request that is already Approved.
    AlreadyApproved,
    /// Creating one more AccessPolicy would exceed the per-cluster cap.
    PolicyLimit,
    /// An AccessPolicy spec that cannot work.
    InvalidPolicy,
    /// The review lacks the object or old object the operation needs, or it does not decode.
    MalformedObject,
    /// The body is not an `AdmissionReview` with a request.
    MalformedReview,
    /// A privileged task without an approved grant that covers it (the guard).
    NoGrant,
    /// A privileged task whose grant cannot have one more use recorded yet: its audit
    /// records wait for the chain (the guard fails closed rather than let a use go
    /// unrecorded).
    AuditBacklog,
    /// The guard is starting and its caches are not filled yet.
    NotReady,
    /// A policy would grant `impersonate` without `allowImpersonation: true`.
    GrantsImpersonation,
    /// The caller changes metadata that is kubepam's (owner references, finalizers, `kubepam.io/`
    /// keys) or someone else's (another person's labels and annotations).
    MetadataReserved,
    /// A policy would grant rights that give away the keys (escalate, bind, wildcards,
    /// cluster-admin, token requests, secrets cluster-wide) without
    /// `allowPrivilegeEscalation: true`.
    GrantsPrivilegeEscalation,
    /// A policy or request reaches kubepam's own namespace.
    KubepamNamespace,
    /// A call through a grant would make access that outlives it (a binding, a long token, a
    /// certificate, a webhook), and the grant's policy does not say `allowPersistence: true`.
    PersistentAccess,
    /// A Release review by anyone but the requester.
    ReleaseNotYours,
    /// A Release while the request is not Approved.
    NothingToRelease,
    /// A new request's reason does not match its policy's `reasonPattern`.
    ReasonMismatch,
    /// The requester already holds as many open requests as a quota allows.
    QuotaExceeded,
    /// A new request's `spec.startAt` is too far ahead, or its window has passed.
    InvalidSchedule,
    /// A new request extends a request that is not the caller's own Approved grant under the same policy and namespace, or beyond the policy's extension limits.
    InvalidExtension,
    /// A Confirm or Reject on a request that is not an emergency request.
    NotAnEmergency,
    /// An emergency request under a policy without `breakGlass`, or beyond its `maxDuration`.
    EmergencyNotAllowed,
    /// An emergency request by someone outside the policy's `breakGlass.groups`.
    NotBreakGlass,
    /// A Confirm or Reject before kubepam recorded the emergency grant.
    NothingToReview,
    /// A Confirm or Reject of an emergency grant that was already reviewed.
    AlreadyReviewed,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 37] = [
        Self::NoUsername,
        Self::ForgedRequester,
        Self::RequesterNotSet,
        Self::ReviewsAtCreation,
        Self::InvalidDuration,
        Self::SpecImmutable,
        Self::OthersReview,
        Self::SelfReview,
        Self::NotAnApprover,
        Self::ApproverGroupChanging,
        Self::ApproverGroupUnknown,
        Self::PhaseFinal,
        Self::NothingToRevoke,
        Self::AlreadyApproved,
        Self::PolicyLimit,
        Self::InvalidPolicy,
        Self::MalformedObject,
        Self::MalformedReview,
        Self::NoGrant,
        Self::AuditBacklog,
        Self::NotReady,
        Self::MetadataReserved,
        Self::GrantsImpersonation,
        Self::GrantsPrivilegeEscalation,
        Self::KubepamNamespace,
        Self::PersistentAccess,
        Self::ReleaseNotYours,
        Self::NothingToRelease,
        Self::ReasonMismatch,
        Self::QuotaExceeded,
        Self::InvalidSchedule,
        Self::InvalidExtension,
        Self::NotAnEmergency,
        Self::EmergencyNotAllowed,
        Self::NotBreakGlass,
        Self::NothingToReview,
        Self::AlreadyReviewed,
    ];

    /// The code, e.g. `ForgedRequester`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoUsername => "NoUsername",
            Self::ForgedRequester => "ForgedRequester",
            Self::RequesterNotSet => "RequesterNotSet",
            Self::ReviewsAtCreation => "ReviewsAtCreation",
            Self::InvalidDuration => "InvalidDuration",
            Self::SpecImmutable => "SpecImmutable",
            Self::OthersReview => "OthersReview",
            Self::SelfReview => "SelfReview",
            Self::NotAnApprover => "NotAnApprover",
            Self::ApproverGroupChanging => "ApproverGroupChanging",
            Self::ApproverGroupUnknown => "ApproverGroupUnknown",
            Self::PhaseFinal => "PhaseFinal",
            Self::NothingToRevoke => "NothingToRevoke",
            Self::AlreadyApproved => "AlreadyApproved",
            Self::PolicyLimit => "PolicyLimit",
            Self::InvalidPolicy => "InvalidPolicy",
            Self::MalformedObject => "MalformedObject",
            Self::MalformedReview => "MalformedReview",
            Self::NoGrant => "NoGrant",
            Self::AuditBacklog => "AuditBacklog",
            Self::NotReady => "NotReady",
            Self::MetadataReserved => "MetadataReserved",
            Self::GrantsImpersonation => "GrantsImpersonation",
            Self::GrantsPrivilegeEscalation => "GrantsPrivilegeEscalation",
            Self::KubepamNamespace => "KubepamNamespace",
            Self::PersistentAccess => "PersistentAccess",
            Self::ReleaseNotYours => "ReleaseNotYours",
            Self::NothingToRelease => "NothingToRelease",
            Self::ReasonMismatch => "ReasonMismatch",
            Self::QuotaExceeded => "QuotaExceeded",
            Self::InvalidSchedule => "InvalidSchedule",
            Self::InvalidExtension => "InvalidExtension",
            Self::NotAnEmergency => "NotAnEmergency",
            Self::EmergencyNotAllowed => "EmergencyNotAllowed",
            Self::NotBreakGlass => "NotBreakGlass",
            Self::NothingToReview => "NothingToReview",
            Self::AlreadyReviewed => "AlreadyReviewed",
        }
    }
}

/// A refusal: its code and a message for the person who made the call. Displays as the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code, for metrics and clients.
    pub reason: Reason,
    /// What was wrong and who may act or what to do instead.
    pub message: String,
}

impl Refusal {
    /// A refusal for `reason` with `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The outcome of an admission rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Admit unchanged.
    Allow,
    /// Admit with this JSON patch applied (mutating webhooks only).
    Patch(json_patch::Patch),
    /// Refuse, with a code and a message for the person who made the call.
    Deny(Refusal),
}

impl Verdict {
    /// Whether the object is admitted (with or without a patch).
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Self::Deny(_))
    }

    /// The refusal, if refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Deny(r) => Some(r),
            Self::Allow | Self::Patch(_) => None,
        }
    }

    /// The refusal message, if refused.
    pub fn message(&self) -> Option<&str> {
        self.refusal().map(|r| r.message.as_str())
    }
}

/// Shorthand for a refusal.
pub(crate) fn deny(reason: Reason, message: impl Into<String>) -> Verdict {
    Verdict::Deny(Refusal::new(reason, message))
}
