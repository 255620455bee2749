//! The PrivilegedAccessControl controller: keeps the singleton's status
//! (Ready, policy counts, active grants) current.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::Controller;
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::ObjectRef;

use super::registration::GuardState;
use super::{Context, Error};
use crate::shared::caches::Caches;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kubepam_core::api::{
    CONDITION_ACCEPTED, CONTROL_NAME, Phase, PrivilegedAccessControl,
    PrivilegedAccessControlStatus, condition_false, condition_true, find_condition,
    remove_condition, set_condition,
};
use kubepam_core::lifecycle::ControlSettings;
use kubepam_core::notify::health;
use kubepam_core::policy_limit::POLICY_LIMIT;

/// The `Ready` condition of the control.
pub const CONDITION_READY: &str = "Ready";

/// Counts change with every request; write them at most about once a second.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// How often the active-grant count is refreshed. Request changes do not wake
/// the control: under a steady stream of them the debounce would never let
/// a reconcile through.
const RECOUNT_EVERY: Duration = Duration::from_secs(5);

/// Woken by any policy change, mapped to the singleton.
pub fn controller(caches: &Caches) -> Controller<PrivilegedAccessControl> {
    let singleton = || Some(ObjectRef::<PrivilegedAccessControl>::new(CONTROL_NAME));
    Controller::for_shared_stream(caches.controls.everything(), caches.controls.store())
        .with_config(Config::default().debounce(DEBOUNCE))
        .watches_shared_stream(caches.policies.changes(), move |_| singleton())
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

pub async fn reconcile(
    control: Arc<PrivilegedAccessControl>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if control.name_any() != CONTROL_NAME {
        // The CRD's CEL rule refuses any other name; nothing to do.
        return Ok(Action::await_change());
    }
    let (mut accepted, mut refused) = (0u32, 0u32);
    for policy in ctx.policies.state() {
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
    let active = ctx
        .requests
        .state()
        .iter()
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Approved))
        .count();
    let now = Utc::now();
    let mut status = control_status(
        &control,
        accepted,
        refused,
        u32::try_from(active).unwrap_or(u32::MAX),
        now,
    );
    let sinks: Vec<String> = control
        .spec
        .notifications
        .iter()
        .flat_map(|n| n.sinks.iter().map(|s| s.name.clone()))
        .collect();
    match health::condition(
        &sinks,
        &ctx.notifier.health(),
        now,
        control.metadata.generation,
    ) {
        Some(condition) => set_condition(&mut status.conditions, condition),
        None => remove_condition(&mut status.conditions, health::CONDITION_NOTIFICATIONS),
    }
    if let Some(found) = ctx
        .impersonators
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
    {
        status.impersonators = found;
    }
    let guard = ctx
        .guard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for (kind, condition) in guard_conditions(&guard, now, control.metadata.generation) {
        match condition {
            Some(condition) => set_condition(&mut status.conditions, condition),
            None => remove_condition(&mut status.conditions, kind),
        }
    }
    super::apply_status(
        &ctx.client,
        &*control,
        control.status.as_ref(),
        &status,
        None,
    )
    .await?;
    Ok(Action::requeue(RECOUNT_EVERY))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(yaml: &str) -> PrivilegedAccessControl {
        let spec = serde_yaml_ng::from_str(yaml).unwrap();
        PrivilegedAccessControl::new(CONTROL_NAME, spec)
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
