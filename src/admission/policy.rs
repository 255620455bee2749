//! Rules for `AccessPolicy` (DESIGN §2.2): the 30-policy cap at creation, and a spec that can
//! work. The CRD's CEL rules say much of this too; the webhook repeats it so that a cluster
//! without CEL validation (or an object written before a rule existed) gets the same answer.

use super::guard::{WILDCARD, verb_reaches_admission};
use super::{Reason, Verdict, deny};
use crate::api::{AccessPolicy, AccessPolicySpec, PolicyType};
use crate::duration;
use crate::impersonation;
use crate::policy_limit::{POLICY_LIMIT, admission_exceeds_limit};

/// Check a new policy. `live_policies` is the number of AccessPolicies that exist and are not
/// being deleted (not counting this one).
pub fn policy_create(policy: &AccessPolicy, live_policies: usize) -> Verdict {
    if admission_exceeds_limit(live_policies) {
        return deny(
            Reason::PolicyLimit,
            format!(
                "kubepam accepts at most {POLICY_LIMIT} AccessPolicies per cluster and \
             {live_policies} exist; delete one you no longer need (kubectl get accesspolicies) \
             before adding {}",
                display_name(policy)
            ),
        );
    }
    policy_update(policy)
}

/// Check a changed policy: the same shape rules as at creation, without the count.
pub fn policy_update(policy: &AccessPolicy) -> Verdict {
    if let Some(problem) = spec_problem(&policy.spec) {
        return deny(
            Reason::InvalidPolicy,
            format!("AccessPolicy {}: {problem}", display_name(policy)),
        );
    }
    let spec = &policy.spec;
    let impersonates = spec
        .task
        .as_ref()
        .filter(|_| spec.policy_type == PolicyType::Task)
        .is_some_and(|task| impersonation::rules_impersonate(&[crate::grant::policy_rule(task)]));
    if impersonates && !spec.allow_impersonation {
        return deny(
            Reason::GrantsImpersonation,
            format!(
                "AccessPolicy {} would grant impersonate on users, groups or service accounts: \
                 whoever holds it can act as anyone, approvers and kubepam itself included. \
                 Narrow the task, or set spec.allowImpersonation: true to grant it knowingly",
                display_name(policy)
            ),
        );
    }
    Verdict::Allow
}

/// Things worth telling the author of an admitted policy (as admission warnings): verbs the
/// guard cannot gate, and wildcards that gate more than intended.
pub fn policy_warnings(policy: &AccessPolicy) -> Vec<String> {
    let spec = &policy.spec;
    let Some(task) = spec
        .task
        .as_ref()
        .filter(|_| spec.policy_type == PolicyType::Task)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let unguarded: Vec<&str> = task
        .verbs
        .iter()
        .map(String::as_str)
        .filter(|v| !verb_reaches_admission(v, &task.resources))
        .collect();
    if !unguarded.is_empty() {
        out.push(format!(
            "verbs {} are granted but cannot be guarded: reads and such verbs never reach \
             admission webhooks, so users with standing rights keep them",
            unguarded.join(", ")
        ));
    }
    if task.api_groups.iter().any(|g| g == WILDCARD) || task.resources.iter().any(|r| r == WILDCARD)
    {
        out.push(
            "a wildcard in apiGroups or resources guards every matching operation by every \
             user, controllers included; list the controllers' usernames in the control's \
             systemAccounts"
                .to_owned(),
        );
    }
    if task.api_groups.iter().any(|g| g == "kubepam.io") {
        out.push(
            "guarding kubepam.io resources can stop approvers from reviewing requests; prefer \
             RBAC for those"
                .to_owned(),
        );
    }
    out
}

fn display_name(policy: &AccessPolicy) -> &str {
    policy
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("(unnamed)")
}

/// The first thing wrong with a policy spec, as a sentence that says how to fix it.
fn spec_problem(spec: &AccessPolicySpec) -> Option<String> {
    let has_role = spec.role.is_some();
    let has_roles = !spec.roles.is_empty();
    let has_task = spec.task.is_some();
    match spec.policy_type {
        PolicyType::Task => {
            if !has_task || has_role || has_roles {
                return Some(
                    "type Task needs task (verbs, apiGroups, resources) and neither role nor \
                     roles"
                        .to_owned(),
                );
            }
        }
        PolicyType::Role => {
            if !has_role || has_task || has_roles {
                return Some(
                    "type Role needs role (the name of a ClusterRole) and neither task nor roles"
                        .to_owned(),
                );
            }
        }
        PolicyType::RoleGroup => {
            if !has_roles || has_task || has_role {
                return Some(
                    "type RoleGroup needs a non-empty roles list (ClusterRole names) and neither \
                     task nor role"
                        .to_owned(),
                );
            }
        }
    }
    if spec.role.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Some("role must name a ClusterRole".to_owned());
    }
    if spec.roles.iter().any(|r| r.trim().is_empty()) {
        return Some("roles must not contain empty names".to_owned());
    }
    if let Some(task) = &spec.task {
        if task.verbs.is_empty() {
            return Some("task.verbs must list at least one verb, e.g. [delete]".to_owned());
        }
        if task.verbs.iter().any(|v| v.trim().is_empty()) {
            return Some("task.verbs must not contain empty verbs".to_owned());
        }
        if task.api_groups.is_empty() {
            return Some(
                "task.apiGroups must list at least one API group; use \"\" for the core group \
                 (pods, secrets)"
                    .to_owned(),
            );
        }
        if task.resources.is_empty() {
            return Some(
                "task.resources must list at least one resource, e.g. [pods/exec]".to_owned(),
            );
        }
        if task.resources.iter().any(|r| r.trim().is_empty()) {
            return Some("task.resources must not contain empty names".to_owned());
        }
        if task
            .resource_names
            .iter()
            .flatten()
            .any(|n| n.trim().is_empty())
        {
            return Some("task.resourceNames must not contain empty names".to_owned());
        }
    }
    if spec.namespaces().iter().any(|n| n.trim().is_empty()) {
        return Some(
            "scope.namespaces must not contain empty names; leave the list out for a \
             cluster-wide policy"
                .to_owned(),
        );
    }
    if spec
        .approver_group
        .as_deref()
        .is_some_and(|g| g.trim().is_empty())
    {
        return Some(
            "approverGroup must name a Kubernetes group, or be left out to use the control's \
             defaultApproverGroup"
                .to_owned(),
        );
    }
    if let Some(max) = &spec.max_duration
        && let Err(e) = duration::parse(max)
    {
        return Some(format!("maxDuration: {e}"));
    }
    if spec.required_approvals == Some(0) {
        return Some("requiredApprovals must be at least 1".to_owned());
    }
    None
}
