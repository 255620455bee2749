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
//! Every refusal says what was wrong and who may act or what to do instead.

pub mod guard;
pub mod policy;
pub mod request;
pub mod review;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use k8s_openapi::api::authentication::v1::UserInfo;

pub use guard::{
    GuardOperation, GuardRules, GuardVerdict, UnguardedVerb, execution, guard, guard_rules,
};
pub use policy::{policy_create, policy_update, policy_warnings};
pub use request::{request_create, request_create_validate, request_update};
pub use review::{
    Error, Pass, admit_access_policy, admit_elevation_request, decode, invalid, parse_review,
    respond, respond_guard, response_bytes,
};

/// The authenticated user making the API call, as the API server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// `userInfo.username`.
    pub username: &'a str,
    /// `userInfo.groups`.
    pub groups: &'a [String],
}

impl<'a> Caller<'a> {
    /// The caller of an admission request (empty username and no groups when absent).
    pub fn from_user_info(user: &'a UserInfo) -> Self {
        Self {
            username: user.username.as_deref().unwrap_or(""),
            groups: user.groups.as_deref().unwrap_or(&[]),
        }
    }

    /// Whether the caller is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The outcome of an admission rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Admit unchanged.
    Allow,
    /// Admit with this JSON patch applied (mutating webhooks only).
    Patch(json_patch::Patch),
    /// Refuse, with a message for the person who made the call.
    Deny(String),
}

impl Verdict {
    /// Whether the object is admitted (with or without a patch).
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Self::Deny(_))
    }

    /// The refusal message, if refused.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Deny(m) => Some(m),
            Self::Allow | Self::Patch(_) => None,
        }
    }
}

/// Shorthand for a refusal.
pub(crate) fn deny(message: impl Into<String>) -> Verdict {
    Verdict::Deny(message.into())
}
