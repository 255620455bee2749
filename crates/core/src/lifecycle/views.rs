//! What [`decide`](super::decide) needs to know about the policy and the control, reduced to
//! the cases that matter, so the state machine never interprets raw objects twice.

use chrono::TimeDelta;

use crate::api::{
    AccessPolicy, CONDITION_ACCEPTED, CONTROL_NAME, PrivilegedAccessControl,
    PrivilegedAccessControlSpec, find_condition,
};
use crate::duration;

/// The request's policy as the request controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyView<'a> {
    /// No such AccessPolicy, or it is being deleted.
    Missing,
    /// The policy exists but the policy controller has not judged its current generation yet.
    /// A Pending request waits; an Approved one is still narrowed to the policy's spec.
    Unjudged(&'a AccessPolicy),
    /// The policy controller refused the policy (`Accepted=False`).
    Refused {
        /// The condition's reason, e.g. `PolicyLimitExceeded` or `RoleNotFound`.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The policy is accepted (`Accepted=True` for its current generation).
    Accepted(&'a AccessPolicy),
}

impl<'a> PolicyView<'a> {
    /// Classify a policy (or its absence) from its `Accepted` condition.
    pub fn from_policy(policy: Option<&'a AccessPolicy>) -> Self {
        let Some(policy) = policy else {
            return Self::Missing;
        };
        if policy.metadata.deletion_timestamp.is_some() {
            return Self::Missing;
        }
        let conditions = policy
            .status
            .as_ref()
            .map_or(&[][..], |s| s.conditions.as_slice());
        let Some(accepted) = find_condition(conditions, CONDITION_ACCEPTED) else {
            return Self::Unjudged(policy);
        };
        let current = match (accepted.observed_generation, policy.metadata.generation) {
            (Some(observed), Some(generation)) => observed >= generation,
            _ => true,
        };
        match (current, accepted.status.as_str()) {
            (true, "True") => Self::Accepted(policy),
            (true, "False") => Self::Refused {
                reason: accepted.reason.clone(),
                message: accepted.message.clone(),
            },
            _ => Self::Unjudged(policy),
        }
    }

    /// The policy object, when there is one worth reading.
    pub fn policy(&self) -> Option<&'a AccessPolicy> {
        match self {
            Self::Unjudged(p) | Self::Accepted(p) => Some(p),
            Self::Missing | Self::Refused { .. } => None,
        }
    }
}

/// The control's settings with durations parsed; invalid durations fall back to the defaults
/// and are listed in `problems` for the control's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// Approver group for policies that name none.
    pub default_approver_group: String,
    /// Usernames never gated.
    pub system_accounts: Vec<String>,
    /// Grant duration when a request sets none.
    pub default_duration: TimeDelta,
    /// How long a request may stay Pending.
    pub request_ttl: TimeDelta,
    /// The most Pending requests one person may have at once (`maxPendingPerRequester`).
    pub max_pending_per_requester: Option<u32>,
    /// Why a setting fell back to its default, one sentence each.
    pub problems: Vec<String>,
    /// kubepam's own namespace, which no grant may reach (not a field of the control: the
    /// operator knows it; `None` when not given).
    pub kubepam_namespace: Option<String>,
}

/// The built-in grant duration (4h).
pub fn default_duration() -> TimeDelta {
    TimeDelta::hours(4)
}

/// The built-in request TTL (24h).
pub fn default_request_ttl() -> TimeDelta {
    TimeDelta::hours(24)
}

impl ControlSettings {
    /// Read a control spec.
    pub fn from_spec(spec: &PrivilegedAccessControlSpec) -> Self {
        let mut problems = Vec::new();
        let mut parse_or = |field: &str, value: Option<&String>, fallback: TimeDelta| match value {
            None => fallback,
            Some(v) => duration::parse(v).unwrap_or_else(|e| {
                problems.push(format!(
                    "{field}: {e}; using {} instead",
                    duration::format(fallback)
                ));
                fallback
            }),
        };
        let default_duration = parse_or(
            "defaultDuration",
            spec.default_duration.as_ref(),
            default_duration(),
        );
        let request_ttl = parse_or(
            "requestTTL",
            spec.request_ttl.as_ref(),
            default_request_ttl(),
        );
        Self {
            default_approver_group: spec.default_approver_group.clone(),
            system_accounts: spec.system_accounts.clone(),
            default_duration,
            request_ttl,
            max_pending_per_requester: spec.max_pending_per_requester,
            problems,
            kubepam_namespace: None,
        }
    }
}

/// The cluster's `PrivilegedAccessControl` as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlView {
    /// No `default` control: nothing is gated, no new grant is made.
    Missing,
    /// `enabled: false`: no new grant is made; active grants run to their end.
    Disabled(ControlSettings),
    /// Gating and granting are on.
    Enabled(ControlSettings),
}

impl ControlView {
    /// Classify the control. Only an object named `default` that is not being deleted counts.
    pub fn from_control(control: Option<&PrivilegedAccessControl>) -> Self {
        let Some(control) = control else {
            return Self::Missing;
        };
        if control.metadata.name.as_deref() != Some(CONTROL_NAME)
            || control.metadata.deletion_timestamp.is_some()
        {
            return Self::Missing;
        }
        let settings = ControlSettings::from_spec(&control.spec);
        if control.spec.enabled {
            Self::Enabled(settings)
        } else {
            Self::Disabled(settings)
        }
    }

    /// The same control, knowing kubepam's own namespace (which no grant may reach).
    #[must_use]
    pub fn with_kubepam_namespace(mut self, namespace: &str) -> Self {
        if let Self::Disabled(s) | Self::Enabled(s) = &mut self {
            s.kubepam_namespace = Some(namespace.to_owned());
        }
        self
    }

    /// kubepam's own namespace, when known.
    pub fn kubepam_namespace(&self) -> Option<&str> {
        self.settings().and_then(|s| s.kubepam_namespace.as_deref())
    }

    /// The settings, whether enabled or not.
    pub fn settings(&self) -> Option<&ControlSettings> {
        match self {
            Self::Missing => None,
            Self::Disabled(s) | Self::Enabled(s) => Some(s),
        }
    }

    /// Whether new grants may be made.
    pub fn is_enabled(&self) -> bool {
        matches!(self, Self::Enabled(_))
    }

    /// The request TTL in force (24h without a control).
    pub fn request_ttl(&self) -> TimeDelta {
        self.settings()
            .map_or_else(default_request_ttl, |s| s.request_ttl)
    }

    /// The default grant duration in force (4h without a control).
    pub fn default_duration(&self) -> TimeDelta {
        self.settings()
            .map_or_else(default_duration, |s| s.default_duration)
    }

    /// Whether `username` is one of the control's system accounts (never gated).
    pub fn is_system_account(&self, username: &str) -> bool {
        self.settings()
            .is_some_and(|s| s.system_accounts.iter().any(|a| a == username))
    }
}
