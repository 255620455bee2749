//! Rules for `AccessPolicy` (DESIGN §2.2): the 30-policy cap at creation, and a spec that can
//! work. The CRD's CEL rules say much of this too; the webhook repeats it so that a cluster
//! without CEL validation (or an object written before a rule existed) gets the same answer.

use super::guard::{WILDCARD, verb_reaches_admission};
use super::{Reason, Verdict, deny};
use crate::api::{AccessPolicy, AccessPolicySpec, PolicyType};
use crate::duration;
use crate::policy_limit::{POLICY_LIMIT, admission_exceeds_limit};
use crate::privilege::{self, EVERYONE_GROUPS, NamedRoles};

/// What checking a policy needs beyond the policy itself.
#[derive(Debug, Clone, Copy)]
pub struct PolicyFacts<'a> {
    /// The rules of the ClusterRoles the policy names, as read now (missing ones left out).
    pub roles: &'a NamedRoles,
    /// kubepam's own namespace: no grant may reach it.
    pub kubepam_namespace: &'a str,
}

static NO_ROLES: NamedRoles = NamedRoles::new();

impl Default for PolicyFacts<'static> {
    /// No roles read, and kubepam in `kubepam-system`.
    fn default() -> Self {
        Self {
            roles: &NO_ROLES,
            kubepam_namespace: "kubepam-system",
        }
    }
}

/// Check a new policy. `live_policies` is the number of AccessPolicies that exist and are not
/// being deleted (not counting this one).
pub fn policy_create(policy: &AccessPolicy, live_policies: usize, facts: &PolicyFacts) -> Verdict {
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
    policy_update(policy, facts)
}

/// Check a changed policy: the same rules as at creation, without the count.
pub fn policy_update(policy: &AccessPolicy, facts: &PolicyFacts) -> Verdict {
    if let Some(problem) = spec_problem(&policy.spec) {
        return deny(
            Reason::InvalidPolicy,
            format!("AccessPolicy {}: {problem}", display_name(policy)),
        );
    }
    match privilege::key_refusal(
        display_name(policy),
        &policy.spec,
        facts.roles,
        facts.kubepam_namespace,
    ) {
        None => Verdict::Allow,
        Some(refusal) => {
            let reason = match refusal.reason {
                privilege::reason::KUBEPAM_NAMESPACE => Reason::KubepamNamespace,
                privilege::reason::GRANTS_IMPERSONATION => Reason::GrantsImpersonation,
                _ => Reason::GrantsPrivilegeEscalation,
            };
            deny(reason, refusal.message)
        }
    }
}

/// Things worth telling the author of an admitted policy (as admission warnings): an approver
/// group everyone is in, Auto approval of rights that give away the keys, verbs the guard cannot
/// gate, and wildcards that gate more than intended.
pub fn policy_warnings(policy: &AccessPolicy, facts: &PolicyFacts) -> Vec<String> {
    let spec = &policy.spec;
    let mut out = Vec::new();
    if let Some(group) = spec
        .approver_group
        .as_deref()
        .filter(|g| EVERYONE_GROUPS.contains(g))
    {
        out.push(format!(
            "approverGroup {group} holds every authenticated user (or every service account): \
             anyone but the requester can approve; name a group of approvers"
        ));
    }
    let keys = privilege::policy_key_rights(spec, facts.roles);
    if spec.approval_type == crate::api::ApprovalType::Auto && !keys.is_empty() {
        let named: Vec<&str> = keys.iter().map(|k| k.describe()).collect();
        out.push(format!(
            "approvalType Auto grants {} to anyone who asks, with nobody deciding; prefer Manual",
            named.join(", ")
        ));
    }
    let Some(task) = spec
        .task
        .as_ref()
        .filter(|_| spec.policy_type == PolicyType::Task)
    else {
        return out;
    };
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

/// What is wrong with the reason pattern and the time limits, if anything.
fn time_rules_problem(spec: &AccessPolicySpec) -> Option<String> {
    if let Some(pattern) = &spec.reason_pattern
        && let Err(problem) = crate::justification::compile(pattern)
    {
        return Some(problem);
    }
    if let Some(problem) = crate::lifecycle::unbounded_auto_extensions(spec) {
        return Some(problem);
    }
    [
        ("maxScheduleAhead", spec.max_schedule_ahead.as_ref()),
        (
            "extension.maxTotal",
            spec.extension.as_ref().and_then(|e| e.max_total.as_ref()),
        ),
    ]
    .into_iter()
    .find_map(|(field, value)| match value.map(|v| duration::parse(v)) {
        Some(Err(e)) => Some(format!("{field}: {e}")),
        _ => None,
    })
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
    if let Some(problem) = time_rules_problem(spec) {
        return Some(problem);
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
