//! The PrivilegedAccessControl's status: whether kubepam is ready, the
//! policy and grant counts, the notification sinks' health, who may
//! impersonate kubepam, and the guard's registration.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{
    AccessPolicy, CONDITION_ACCEPTED, ElevationRequest, ImpersonationRight, Phase,
    PrivilegedAccessControl, PrivilegedAccessControlStatus, condition_false, condition_true,
    find_condition, remove_condition, set_condition,
};
use crate::lifecycle::ControlSettings;
use crate::notify::health::{self, SinkHealth};
use crate::policy_limit::POLICY_LIMIT;

/// The `Ready` condition of the control.
pub const CONDITION_READY: &str = "Ready";

/// Policy name → the uid and generation a guard holds.
pub type Enforced = BTreeMap<String, (Option<String>, i64)>;

/// What the registrar knows about the guard (the operator shares it between
/// the registrar and the policy and control controllers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuardState {
    /// Whether kubepam registers its webhook configurations (false with
    /// `--no-register-webhooks` or without webhooks: then nothing waits for it).
    pub registering: bool,
    /// Policy name → the uid and generation the registered guard holds.
    pub enforced: Enforced,
    /// Why the guard could not be written, while it cannot.
    pub write_error: Option<String>,
    /// What was found changed by someone else and is not restored yet.
    pub tampered: Option<String>,
    /// The last restore, for the `GuardIntact` message.
    pub last_restore: Option<String>,
}

impl GuardState {
    /// Whether the registered guard holds `generation` of the policy `name`
    /// with this uid (a policy deleted and made again is another policy);
    /// always, when kubepam does not register the guard.
    pub fn enforces(&self, name: &str, uid: Option<&str>, generation: Option<i64>) -> bool {
        !self.registering
            || self.enforced.get(name).is_some_and(|(held_uid, held)| {
                held_uid.as_deref() == uid && Some(*held) >= generation
            })
    }
}

/// What the control's status is made of, as read at one instant.
#[derive(Debug, Clone, Copy)]
pub struct ControlFacts<'a> {
    pub policies: &'a [&'a AccessPolicy],
    pub requests: &'a [&'a ElevationRequest],
    /// Each notification sink's health.
    pub sinks: &'a BTreeMap<String, SinkHealth>,
    /// Who may impersonate identities kubepam trusts, once looked at.
    pub impersonators: Option<&'a [ImpersonationRight]>,
    pub guard: &'a GuardState,
    /// Why the audit chain cannot be sealed, if it cannot.
    pub audit_problem: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// The control's whole desired status.
pub fn desired_status(
    control: &PrivilegedAccessControl,
    facts: &ControlFacts<'_>,
) -> PrivilegedAccessControlStatus {
    let (mut accepted, mut refused) = (0u32, 0u32);
    for policy in facts.policies {
        let condition = policy
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, CONDITION_ACCEPTED));
        match condition.map(|c| c.status.as_str()) {
            Some("True") => accepted += 1,
            Some("False") => refused += 1,
            _ => {}
        }
    }
    let active = facts
        .requests
        .iter()
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Approved))
        .count();
    let generation = control.metadata.generation;
    let mut status = control_status(
        control,
        accepted,
        refused,
        u32::try_from(active).unwrap_or(u32::MAX),
        facts.now,
    );
    let sinks: Vec<String> = control
        .spec
        .notifications
        .iter()
        .flat_map(|n| n.sinks.iter().map(|s| s.name.clone()))
        .collect();
    match health::condition(&sinks, facts.sinks, facts.now, generation) {
        Some(condition) => set_condition(&mut status.conditions, condition),
        None => remove_condition(&mut status.conditions, health::CONDITION_NOTIFICATIONS),
    }
    if let Some(found) = facts.impersonators {
        status.impersonators = found.to_vec();
    }
    set_condition(
        &mut status.conditions,
        crate::audit::export::condition(control, facts.audit_problem, facts.now),
    );
    // Written by the audit sequencer under its own field manager.
    status.audit = None;
    for (kind, condition) in guard_conditions(facts.guard, facts.now, generation) {
        match condition {
            Some(condition) => set_condition(&mut status.conditions, condition),
            None => remove_condition(&mut status.conditions, kind),
        }
    }
    status
}

/// The control's desired status, from its spec and the counts (pure).
pub fn control_status(
    control: &PrivilegedAccessControl,
    accepted_policies: u32,
    refused_policies: u32,
    active_grants: u32,
    now: DateTime<Utc>,
) -> PrivilegedAccessControlStatus {
    let mut status = control.status.clone().unwrap_or_default();
    let generation = control.metadata.generation;
    let settings = ControlSettings::from_spec(&control.spec);
    let ready = if !control.spec.enabled {
        condition_false(
            CONDITION_READY,
            "Disabled",
            "privileged access management is disabled: nothing is gated and no new grant is made; grants in force run to their end",
            now,
            generation,
        )
    } else if settings.problems.is_empty() {
        condition_true(
            CONDITION_READY,
            "Enabled",
            "privileged access management is enabled",
            now,
            generation,
        )
    } else {
        condition_true(
            CONDITION_READY,
            "EnabledWithDefaults",
            settings.problems.join("; "),
            now,
            generation,
        )
    };
    set_condition(&mut status.conditions, ready);
    status.accepted_policies = accepted_policies;
    status.refused_policies = refused_policies;
    status.policy_limit = u32::try_from(POLICY_LIMIT).unwrap_or(u32::MAX);
    status.active_grants = active_grants;
    status.observed_generation = generation;
    status
}

/// Condition type: whether kubepam could register its admission configuration.
pub const CONDITION_GUARD_READY: &str = "GuardReady";
/// Condition type: whether kubepam's admission configuration is as kubepam registered it.
pub const CONDITION_GUARD_INTACT: &str = "GuardIntact";

/// The `GuardReady` and `GuardIntact` conditions (absent when kubepam does
/// not register its webhooks).
pub fn guard_conditions(
    guard: &GuardState,
    now: DateTime<Utc>,
    generation: Option<i64>,
) -> [(&'static str, Option<Condition>); 2] {
    if !guard.registering {
        return [
            (CONDITION_GUARD_READY, None),
            (CONDITION_GUARD_INTACT, None),
        ];
    }
    let ready = match &guard.write_error {
        None => condition_true(
            CONDITION_GUARD_READY,
            "Registered",
            "the guard and kubepam's webhooks are registered with the API server",
            now,
            generation,
        ),
        Some(error) => condition_false(
            CONDITION_GUARD_READY,
            "RegistrationFailed",
            format!("{error}; Task policies not yet registered are not accepted until it works"),
            now,
            generation,
        ),
    };
    let intact = match (&guard.tampered, &guard.last_restore) {
        (Some(what), _) => condition_false(
            CONDITION_GUARD_INTACT,
            "Tampered",
            format!("{what} behind kubepam's back and is not restored yet"),
            now,
            generation,
        ),
        (None, Some(restore)) => condition_true(
            CONDITION_GUARD_INTACT,
            "Restored",
            format!("as kubepam registered it; last change by someone else: {restore}"),
            now,
            generation,
        ),
        (None, None) => condition_true(
            CONDITION_GUARD_INTACT,
            "AsRegistered",
            "kubepam's webhook configurations are exactly as kubepam registered them",
            now,
            generation,
        ),
    };
    [
        (CONDITION_GUARD_READY, Some(ready)),
        (CONDITION_GUARD_INTACT, Some(intact)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(yaml: &str) -> PrivilegedAccessControl {
        let spec = serde_yaml_ng::from_str(yaml).unwrap();
        PrivilegedAccessControl::new(crate::api::CONTROL_NAME, spec)
    }

    #[test]
    fn enabled_control_is_ready_and_counts() {
        let c = control("{enabled: true, defaultApproverGroup: pam-approvers}");
        let status = control_status(&c, 3, 1, 2, Utc::now());
        let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Enabled")
        );
        assert_eq!(
            (
                status.accepted_policies,
                status.refused_policies,
                status.policy_limit,
                status.active_grants
            ),
            (3, 1, 30, 2)
        );
    }

    #[test]
    fn disabled_control_is_not_ready() {
        let c = control("{enabled: false, defaultApproverGroup: pam-approvers}");
        let ready = control_status(&c, 0, 0, 0, Utc::now());
        let ready = find_condition(&ready.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Disabled")
        );
    }

    #[test]
    fn bad_durations_are_reported_with_the_fallback() {
        let c = control("{enabled: true, defaultApproverGroup: g, defaultDuration: 4x}");
        let status = control_status(&c, 0, 0, 0, Utc::now());
        let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
        assert_eq!(ready.reason, "EnabledWithDefaults");
        assert!(
            ready.message.contains("defaultDuration"),
            "{}",
            ready.message
        );
    }
}
