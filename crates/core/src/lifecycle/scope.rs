//! Grant scopes: the snapshot taken at approval, its intersection with a changed policy, and
//! the subset relation that proves a grant never widens.

use crate::api::{AccessPolicySpec, GrantScope, PolicyType, RoleRule, TaskSpec};

/// Why a policy cannot yield a scope for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The policy lists namespaces and the request names none.
    #[error(
        "policy {policy} is limited to namespaces {namespaces:?}; set spec.namespace to one of them"
    )]
    NamespaceRequired {
        /// The policy's name.
        policy: String,
        /// The namespaces the policy allows.
        namespaces: Vec<String>,
    },
    /// The request names a namespace the policy does not list.
    #[error(
        "namespace {namespace} is not in the scope of policy {policy} ({namespaces:?}); request one of those namespaces"
    )]
    NamespaceNotInScope {
        /// The policy's name.
        policy: String,
        /// The namespace requested.
        namespace: String,
        /// The namespaces the policy allows.
        namespaces: Vec<String>,
    },
    /// The policy's spec does not describe any right (should be caught by the CRD's rules).
    #[error("policy {policy} grants nothing: {detail}")]
    EmptyPolicy {
        /// The policy's name.
        policy: String,
        /// What is missing.
        detail: String,
    },
}

impl ScopeError {
    /// A CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NamespaceRequired { .. } | Self::NamespaceNotInScope { .. } => {
                "NamespaceNotInScope"
            }
            Self::EmptyPolicy { .. } => "InvalidPolicy",
        }
    }
}

/// The scope an approval of `namespace` under `policy` covers right now.
pub fn snapshot(
    policy_name: &str,
    policy: &AccessPolicySpec,
    namespace: Option<&str>,
) -> Result<GrantScope, ScopeError> {
    let allowed = policy.namespaces();
    let namespaces = match (allowed.is_empty(), namespace) {
        (true, None) => Vec::new(),
        (true, Some(ns)) => vec![ns.to_owned()],
        (false, None) => {
            return Err(ScopeError::NamespaceRequired {
                policy: policy_name.to_owned(),
                namespaces: allowed.to_vec(),
            });
        }
        (false, Some(ns)) if allowed.iter().any(|a| a == ns) => vec![ns.to_owned()],
        (false, Some(ns)) => {
            return Err(ScopeError::NamespaceNotInScope {
                policy: policy_name.to_owned(),
                namespace: ns.to_owned(),
                namespaces: allowed.to_vec(),
            });
        }
    };
    let empty = |detail: &str| ScopeError::EmptyPolicy {
        policy: policy_name.to_owned(),
        detail: detail.to_owned(),
    };
    let (task, roles) = match policy.policy_type {
        PolicyType::Task => {
            let task = policy
                .task
                .as_ref()
                .map(normalize_task)
                .ok_or_else(|| empty("type Task without task"))?;
            if task_is_empty(&task) {
                return Err(empty("task needs verbs, apiGroups and resources"));
            }
            (Some(task), Vec::new())
        }
        PolicyType::Role | PolicyType::RoleGroup => {
            let mut roles = policy.role_names();
            roles.retain(|r| !r.is_empty());
            roles.sort();
            roles.dedup();
            if roles.is_empty() {
                return Err(empty("no ClusterRole named"));
            }
            (None, roles)
        }
    };
    Ok(GrantScope {
        policy_type: policy.policy_type,
        task,
        roles,
        namespaces,
        role_rules: std::collections::BTreeMap::new(),
    })
}

/// `scope` holding the rules of its ClusterRoles as `judged` (the policy's
/// `status.roleRules`), or the roles `judged` lacks.
pub fn with_role_rules(
    mut scope: GrantScope,
    judged: &std::collections::BTreeMap<String, Vec<RoleRule>>,
) -> Result<GrantScope, Vec<String>> {
    let missing: Vec<String> = scope
        .roles
        .iter()
        .filter(|r| !judged.contains_key(*r))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    scope.role_rules = scope
        .roles
        .iter()
        .filter_map(|r| Some((r.clone(), judged.get(r)?.clone())))
        .collect();
    Ok(scope)
}

/// The part of `snapshot` that `policy` still allows, or `None` when nothing is left.
/// The result is always within the snapshot, whatever the policy says.
pub fn intersect(snapshot: &GrantScope, policy: &AccessPolicySpec) -> Option<GrantScope> {
    if snapshot.policy_type != policy.policy_type {
        return None;
    }
    let namespaces = intersect_namespaces(&snapshot.namespaces, policy.namespaces())?;
    let (task, roles) = match snapshot.policy_type {
        PolicyType::Task => {
            let task = intersect_task(snapshot.task.as_ref()?, policy.task.as_ref()?)?;
            (Some(task), Vec::new())
        }
        PolicyType::Role | PolicyType::RoleGroup => {
            let allowed = policy.role_names();
            let roles: Vec<String> = snapshot
                .roles
                .iter()
                .filter(|r| allowed.contains(r))
                .cloned()
                .collect();
            if roles.is_empty() {
                return None;
            }
            (None, roles)
        }
    };
    // Only the approval's rules of the roles kept: never what the roles say now.
    let role_rules = snapshot
        .role_rules
        .iter()
        .filter(|(role, _)| roles.contains(role))
        .map(|(role, rules)| (role.clone(), rules.clone()))
        .collect();
    Some(GrantScope {
        policy_type: snapshot.policy_type,
        task,
        roles,
        namespaces,
        role_rules,
    })
}

/// Whether every right in `inner` is also in `outer`.
pub fn is_within(inner: &GrantScope, outer: &GrantScope) -> bool {
    if inner.policy_type != outer.policy_type {
        return false;
    }
    let namespaces_ok = outer.namespaces.is_empty()
        || (!inner.namespaces.is_empty()
            && inner
                .namespaces
                .iter()
                .all(|n| outer.namespaces.contains(n)));
    let rights_ok = match inner.policy_type {
        PolicyType::Task => match (&inner.task, &outer.task) {
            (Some(i), Some(o)) => task_within(i, o),
            (None, _) => true,
            (Some(_), None) => false,
        },
        PolicyType::Role | PolicyType::RoleGroup => {
            inner.roles.iter().all(|r| outer.roles.contains(r))
        }
    };
    namespaces_ok && rights_ok
}

/// Whether the scope grants nothing at all.
pub fn is_empty(scope: &GrantScope) -> bool {
    match scope.policy_type {
        PolicyType::Task => scope.task.as_ref().is_none_or(task_is_empty),
        PolicyType::Role | PolicyType::RoleGroup => scope.roles.is_empty(),
    }
}

fn normalize_task(task: &TaskSpec) -> TaskSpec {
    TaskSpec {
        verbs: task.verbs.clone(),
        api_groups: task.api_groups.clone(),
        resources: task.resources.clone(),
        // RBAC reads an empty resourceNames as "any name".
        resource_names: task.resource_names.clone().filter(|n| !n.is_empty()),
    }
}

fn task_is_empty(task: &TaskSpec) -> bool {
    task.verbs.is_empty() || task.api_groups.is_empty() || task.resources.is_empty()
}

const WILDCARD: &str = "*";

fn intersect_list(a: &[String], b: &[String]) -> Option<Vec<String>> {
    let out: Vec<String> = if a.iter().any(|x| x == WILDCARD) {
        b.to_vec()
    } else if b.iter().any(|x| x == WILDCARD) {
        a.to_vec()
    } else {
        a.iter().filter(|x| b.contains(x)).cloned().collect()
    };
    (!out.is_empty()).then_some(out)
}

fn list_within(inner: &[String], outer: &[String]) -> bool {
    outer.iter().any(|x| x == WILDCARD) || inner.iter().all(|x| outer.contains(x))
}

fn intersect_task(snapshot: &TaskSpec, policy: &TaskSpec) -> Option<TaskSpec> {
    let snapshot = normalize_task(snapshot);
    let policy = normalize_task(policy);
    let resource_names = match (snapshot.resource_names, policy.resource_names) {
        (None, None) => None,
        (Some(n), None) | (None, Some(n)) => Some(n),
        (Some(a), Some(b)) => Some(a.into_iter().filter(|x| b.contains(x)).collect::<Vec<_>>())
            .filter(|n| !n.is_empty())
            .map(Some)?,
    };
    Some(TaskSpec {
        verbs: intersect_list(&snapshot.verbs, &policy.verbs)?,
        api_groups: intersect_list(&snapshot.api_groups, &policy.api_groups)?,
        resources: intersect_list(&snapshot.resources, &policy.resources)?,
        resource_names,
    })
}

fn task_within(inner: &TaskSpec, outer: &TaskSpec) -> bool {
    let inner = normalize_task(inner);
    let outer = normalize_task(outer);
    let names_ok = match (&inner.resource_names, &outer.resource_names) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(i), Some(o)) => i.iter().all(|x| o.contains(x)),
    };
    names_ok
        && list_within(&inner.verbs, &outer.verbs)
        && list_within(&inner.api_groups, &outer.api_groups)
        && list_within(&inner.resources, &outer.resources)
}

fn intersect_namespaces(snapshot: &[String], policy: &[String]) -> Option<Vec<String>> {
    match (snapshot.is_empty(), policy.is_empty()) {
        (true, _) => Some(policy.to_vec()),
        (false, true) => Some(snapshot.to_vec()),
        (false, false) => {
            let out: Vec<String> = snapshot
                .iter()
                .filter(|n| policy.contains(n))
                .cloned()
                .collect();
            (!out.is_empty()).then_some(out)
        }
    }
}
