//! The AccessPolicy controller: applies the 30-policy cap and reports missing
//! ClusterRoles on each policy's status (see [`kubepam_core::policy_limit`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tracing::info;

use super::{Context, Error};
use crate::shared::caches::Caches;
use crate::shared::read_named_roles;
use kubepam_core::api::{
    AccessPolicy, AccessPolicyStatus, CONDITION_ACCEPTED, PolicyType, RoleRule, find_condition,
    from_k8s_time,
};
use kubepam_core::policy_limit::{policy_acceptance, policy_status, refuse_keys};
use kubepam_core::privilege::key_refusal;

/// How soon a Task policy looks again while the guard does not hold it yet.
const GUARD_WAIT: Duration = Duration::from_millis(100);

/// How often a policy that names ClusterRoles reads them again: a role may be
/// created, deleted, or edited to hold key rights after the policy was judged.
const ROLE_RECHECK: Duration = Duration::from_secs(10);

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
        && !super::registration::enforces(
            &ctx.guard,
            &name,
            policy.metadata.uid.as_deref(),
            policy.metadata.generation,
        )
    {
        return Ok(Action::requeue(GUARD_WAIT));
    }
    let roles = read_named_roles(&ctx.client, &policy.spec)
        .await
        .map_err(|source| Error::Read {
            what: format!("the ClusterRoles AccessPolicy {name} names"),
            source,
        })?;
    let missing: Vec<String> = policy
        .spec
        .role_names()
        .into_iter()
        .filter(|r| !roles.contains_key(r))
        .collect();
    let recheck = policy.spec.policy_type != PolicyType::Task;
    let mut status = policy_status(&policy, accepted_now, missing, Utc::now());
    // What an approval grants: these rules, as judged here, not the roles' later edits.
    status.role_rules = roles
        .iter()
        .map(|(role, rules)| (role.clone(), rules.iter().map(RoleRule::from).collect()))
        .collect();
    if let Some(refusal) = key_refusal(&name, &policy.spec, &roles, &ctx.namespace) {
        refuse_keys(
            &mut status,
            &refusal,
            Utc::now(),
            policy.metadata.generation,
        );
    }
    write_status(&ctx.client, &policy, &status).await?;
    Ok(if recheck {
        Action::requeue(ROLE_RECHECK)
    } else {
        Action::await_change()
    })
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
