//! The AccessPolicy controller: applies the 30-policy cap and reports missing
//! ClusterRoles on each policy's status (see [`crate::policy_limit`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use tracing::info;

use super::caches::Caches;
use super::webhooks::GuardState;
use super::{Context, Error};
use crate::api::{
    AccessPolicy, AccessPolicyStatus, CONDITION_ACCEPTED, PolicyType, find_condition, from_k8s_time,
};
use crate::impersonation::rules_impersonate;
use crate::policy_limit::{policy_acceptance, policy_status, refuse_impersonation};

/// How soon a Task policy looks again while the guard does not hold it yet.
const GUARD_WAIT: Duration = Duration::from_millis(100);

/// How often a policy that names a missing ClusterRole looks again.
const MISSING_ROLE_RECHECK: Duration = Duration::from_secs(10);

/// Any policy created or deleted can change which are the 30 oldest, so every
/// change wakes every policy.
pub fn controller(caches: &Caches) -> Controller<AccessPolicy> {
    let store = caches.policies.store();
    Controller::for_shared_stream(caches.policies.everything(), caches.policies.store())
        .watches_shared_stream(caches.policies.changes(), move |_| {
            store
                .state()
                .iter()
                .map(|policy| ObjectRef::from_obj(&**policy))
                .collect::<Vec<_>>()
        })
}

pub async fn reconcile(policy: Arc<AccessPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    if policy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let live: Vec<_> = ctx
        .policies
        .state()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            (
                p.name_any(),
                p.creation_timestamp().map(|t| from_k8s_time(&t)),
            )
        })
        .collect();
    let (accepted, _) = policy_acceptance(&live);
    let name = policy.name_any();
    let accepted_now = accepted.contains(&name);
    // A Task policy's generation is accepted only once the guard holds it:
    // `Accepted` never claims more than the API server enforces.
    if accepted_now
        && policy.spec.policy_type == PolicyType::Task
        && !GuardState::enforces(
            &ctx.guard,
            &name,
            policy.metadata.uid.as_deref(),
            policy.metadata.generation,
        )
    {
        return Ok(Action::requeue(GUARD_WAIT));
    }
    let (missing, impersonating) = named_roles(&ctx.client, &policy).await?;
    let recheck = !missing.is_empty();
    let mut status = policy_status(&policy, accepted_now, missing, Utc::now());
    if !impersonating.is_empty() && !policy.spec.allow_impersonation {
        refuse_impersonation(
            &mut status,
            &impersonating,
            Utc::now(),
            policy.metadata.generation,
        );
    }
    write_status(&ctx.client, &policy, &status).await?;
    Ok(if recheck {
        Action::requeue(MISSING_ROLE_RECHECK)
    } else {
        Action::await_change()
    })
}

/// The ClusterRoles the policy names that do not exist, and those whose
/// rules grant `impersonate` on users, groups or service accounts.
async fn named_roles(
    client: &Client,
    policy: &AccessPolicy,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let (mut missing, mut impersonating) = (Vec::new(), Vec::new());
    for role in policy.spec.role_names() {
        // Only plain names reach a URL (`a?b` would read another role).
        if role.is_empty()
            || !role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:_@".contains(c))
        {
            missing.push(role);
            continue;
        }
        let found = api.get_opt(&role).await.map_err(|source| Error::Read {
            what: format!("ClusterRole {role}"),
            source,
        })?;
        match found {
            None => missing.push(role),
            Some(found) if rules_impersonate(found.rules.as_deref().unwrap_or_default()) => {
                impersonating.push(role);
            }
            Some(_) => {}
        }
    }
    Ok((missing, impersonating))
}

async fn write_status(
    client: &Client,
    policy: &AccessPolicy,
    status: &AccessPolicyStatus,
) -> Result<(), Error> {
    if policy.status.as_ref() == Some(status) {
        return Ok(());
    }
    let name = policy.name_any();
    let before = policy
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_ACCEPTED))
        .map(|c| (c.status.clone(), c.reason.clone()));
    let after = find_condition(&status.conditions, CONDITION_ACCEPTED)
        .map(|c| (c.status.clone(), c.reason.clone()));
    super::apply_status(
        client,
        policy,
        policy.status.as_ref(),
        status,
        policy.resource_version(),
    )
    .await?;
    if before != after
        && let Some((accepted, reason)) = after
    {
        info!(policy = %name, accepted = %accepted, %reason, "policy acceptance changed");
    }
    Ok(())
}
