//! Rights held outside kubepam (pure): RBAC evaluated as the API server's RBAC authorizer does,
//! over every Role, ClusterRole and binding but kubepam's own grants.
//!
//! Two questions use it: whether a caller could make a call without any kubepam grant (the
//! persistence guard refuses only what a grant alone allows), and who holds standing rights to
//! what the Task policies guard, or to `impersonate`, `escalate` and `bind` (`kubectl pam
//! standing`). Other authorizers (Node, webhook) are not seen; the group `system:masters` holds
//! every right.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use crate::drift::is_managed;
use crate::grant::Operation;
use crate::impersonation::ALL_POWERFUL_GROUP;

/// Whether `rule` allows `op`, by RBAC's matching: `*` matches any verb, group or resource,
/// `*/sub` that subresource of any resource, and `resourceNames` only calls that name one of
/// them.
pub fn rule_allows(rule: &PolicyRule, op: &Operation<'_>) -> bool {
    let has = |list: Option<&Vec<String>>, value: &str| {
        list.is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
    };
    let full = op.full_resource();
    let resource_ok = rule.resources.as_ref().is_some_and(|resources| {
        resources.iter().any(|r| {
            r == "*"
                || *r == full
                || r.strip_prefix("*/")
                    .is_some_and(|sub| op.subresource == Some(sub))
        })
    });
    let name_ok = match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => op.name.is_some_and(|n| names.iter().any(|x| x == n)),
    };
    has(Some(&rule.verbs), op.verb)
        && has(rule.api_groups.as_ref(), op.api_group)
        && resource_ok
        && name_ok
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    /// The username.
    pub name: &'a str,
    /// Its groups.
    pub groups: &'a [String],
}

/// Whether `subject` of a binding in `binding_namespace` (`None` for a ClusterRoleBinding)
/// names `user`.
fn names_user(subject: &Subject, user: &User<'_>, binding_namespace: Option<&str>) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(binding_namespace)
                .unwrap_or_default();
            user.name == format!("system:serviceaccount:{namespace}:{}", subject.name)
        }
        _ => false,
    }
}

/// `User alice`, `Group ops`, `ServiceAccount ns/name`.
fn describe_subject(subject: &Subject, binding_namespace: Option<&str>) -> String {
    match subject.kind.as_str() {
        "ServiceAccount" => format!(
            "ServiceAccount {}/{}",
            subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(binding_namespace)
                .unwrap_or_default(),
            subject.name
        ),
        kind => format!("{kind} {}", subject.name),
    }
}

/// One binding outside kubepam, with what it binds.
#[derive(Debug)]
struct Bound<'a> {
    /// `ClusterRoleBinding/NAME` or `RoleBinding/NS/NAME`.
    via: String,
    /// Where the rules hold: `None` everywhere, else one namespace.
    namespace: Option<&'a str>,
    subjects: &'a [Subject],
    rules: &'a [PolicyRule],
}

/// RBAC without kubepam's grants.
#[derive(Debug)]
pub struct Standing<'a> {
    bound: Vec<Bound<'a>>,
}

impl<'a> Standing<'a> {
    /// Every binding but kubepam's (labelled `app.kubernetes.io/managed-by: kubepam`), with the
    /// rules of the role it names; a binding to a role that does not exist grants nothing.
    pub fn new(
        cluster_roles: impl IntoIterator<Item = &'a ClusterRole>,
        roles: impl IntoIterator<Item = &'a Role>,
        cluster_role_bindings: impl IntoIterator<Item = &'a ClusterRoleBinding>,
        role_bindings: impl IntoIterator<Item = &'a RoleBinding>,
    ) -> Self {
        let cluster_roles: BTreeMap<&str, &[PolicyRule]> = cluster_roles
            .into_iter()
            .filter_map(|r| {
                Some((
                    r.metadata.name.as_deref()?,
                    r.rules.as_deref().unwrap_or_default(),
                ))
            })
            .collect();
        let roles: BTreeMap<(&str, &str), &[PolicyRule]> = roles
            .into_iter()
            .filter_map(|r| {
                Some((
                    (
                        r.metadata.namespace.as_deref()?,
                        r.metadata.name.as_deref()?,
                    ),
                    r.rules.as_deref().unwrap_or_default(),
                ))
            })
            .collect();
        let kubepams = |labels: Option<&BTreeMap<String, String>>| labels.is_some_and(is_managed);
        let role_rules = |role_ref: &RoleRef, namespace: Option<&str>| -> &'a [PolicyRule] {
            match (role_ref.kind.as_str(), namespace) {
                ("ClusterRole", _) => cluster_roles
                    .get(role_ref.name.as_str())
                    .copied()
                    .unwrap_or_default(),
                ("Role", Some(ns)) => roles
                    .get(&(ns, role_ref.name.as_str()))
                    .copied()
                    .unwrap_or_default(),
                _ => &[],
            }
        };
        let mut bound = Vec::new();
        for binding in cluster_role_bindings {
            if kubepams(binding.metadata.labels.as_ref()) {
                continue;
            }
            bound.push(Bound {
                via: format!(
                    "ClusterRoleBinding/{}",
                    binding.metadata.name.as_deref().unwrap_or_default()
                ),
                namespace: None,
                subjects: binding.subjects.as_deref().unwrap_or_default(),
                rules: role_rules(&binding.role_ref, None),
            });
        }
        for binding in role_bindings {
            let Some(namespace) = binding.metadata.namespace.as_deref() else {
                continue;
            };
            if kubepams(binding.metadata.labels.as_ref()) {
                continue;
            }
            bound.push(Bound {
                via: format!(
                    "RoleBinding/{namespace}/{}",
                    binding.metadata.name.as_deref().unwrap_or_default()
                ),
                namespace: Some(namespace),
                subjects: binding.subjects.as_deref().unwrap_or_default(),
                rules: role_rules(&binding.role_ref, Some(namespace)),
            });
        }
        Self { bound }
    }

    /// Whether `user` may make `op` without any kubepam grant.
    pub fn allows(&self, user: &User<'_>, op: &Operation<'_>) -> bool {
        if user.groups.iter().any(|g| g == ALL_POWERFUL_GROUP) {
            return true;
        }
        self.bound.iter().any(|b| {
            b.namespace.is_none_or(|ns| op.namespace == Some(ns))
                && b.subjects.iter().any(|s| names_user(s, user, b.namespace))
                && b.rules.iter().any(|rule| rule_allows(rule, op))
        })
    }

    /// Every subject holding a rule for which `holds(rule, namespace)` is true (`namespace`:
    /// where the binding holds, `None` everywhere), with the bindings that give it; sorted.
    pub fn holders(
        &self,
        holds: impl Fn(&PolicyRule, Option<&str>) -> bool,
    ) -> BTreeMap<String, BTreeSet<String>> {
        self.reach(|rules, namespace| {
            if rules.iter().any(|rule| holds(rule, namespace)) {
                BTreeSet::from([()])
            } else {
                BTreeSet::new()
            }
        })
        .into_iter()
        .map(|(subject, (_, via))| (subject, via))
        .collect()
    }

    /// The subjects of cluster-wide bindings (`ClusterRoleBinding`s) to a rule for which `holds`
    /// is true, each once.
    pub fn cluster_subjects(&self, holds: impl Fn(&PolicyRule) -> bool) -> Vec<&'a Subject> {
        let mut found: Vec<&'a Subject> = Vec::new();
        for b in self
            .bound
            .iter()
            .filter(|b| b.namespace.is_none() && b.rules.iter().any(&holds))
        {
            for subject in b.subjects {
                if !found.contains(&subject) {
                    found.push(subject);
                }
            }
        }
        found
    }

    /// For every subject, what `reached(rules, namespace)` finds in the rules bound to it (the
    /// union over its bindings), with the bindings that reach something; subjects that reach
    /// nothing, and the group `system:masters` (which holds everything anyway), are left out.
    pub fn reach<T: Ord + Clone>(
        &self,
        reached: impl Fn(&[PolicyRule], Option<&str>) -> BTreeSet<T>,
    ) -> BTreeMap<String, (BTreeSet<T>, BTreeSet<String>)> {
        let mut out: BTreeMap<String, (BTreeSet<T>, BTreeSet<String>)> = BTreeMap::new();
        for b in &self.bound {
            let found = reached(b.rules, b.namespace);
            if found.is_empty() {
                continue;
            }
            for subject in b.subjects {
                if subject.kind == "Group" && subject.name == ALL_POWERFUL_GROUP {
                    continue;
                }
                let entry = out
                    .entry(describe_subject(subject, b.namespace))
                    .or_default();
                entry.0.extend(found.iter().cloned());
                entry.1.insert(b.via.clone());
            }
        }
        out
    }
}

/// One subject's standing right to something an auditor asks about first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct StandingRight {
    /// `User alice`, `Group ops`, `ServiceAccount ns/name`.
    pub subject: String,
    /// `policy NAME` (the operation a Task policy guards), `impersonate`, `escalate` or `bind`.
    pub right: String,
    /// The bindings that give it, as `ClusterRoleBinding/NAME` or `RoleBinding/NS/NAME`.
    pub via: Vec<String>,
}

/// Whether `rule` allows some call of `task` (a name the task lists, or any, may be named).
fn rule_overlaps_task(rule: &PolicyRule, task: &crate::api::TaskSpec) -> bool {
    let names_meet = match (
        rule.resource_names.as_deref(),
        task.resource_names.as_deref(),
    ) {
        (None | Some([]), _) | (_, None | Some([])) => true,
        (Some(a), Some(b)) => a.iter().any(|n| b.contains(n)),
    };
    let unnamed = PolicyRule {
        resource_names: None,
        ..rule.clone()
    };
    names_meet
        && task.verbs.iter().any(|verb| {
            task.api_groups.iter().any(|group| {
                task.resources.iter().any(|full| {
                    let (resource, subresource) = match full.split_once('/') {
                        Some((r, s)) => (r, Some(s)),
                        None => (full.as_str(), None),
                    };
                    rule_allows(
                        &unnamed,
                        &Operation {
                            verb,
                            api_group: group,
                            resource,
                            subresource,
                            name: None,
                            namespace: None,
                        },
                    )
                })
            })
        })
}

/// Whether `rule` allows `verb` on roles or cluster roles (on some of them by name, too).
fn on_roles(rule: &PolicyRule, verb: &str) -> bool {
    let unnamed = PolicyRule {
        resource_names: None,
        ..rule.clone()
    };
    ["roles", "clusterroles"].iter().any(|resource| {
        rule_allows(
            &unnamed,
            &Operation {
                verb,
                api_group: crate::grant::RBAC_API_GROUP,
                resource,
                subresource: None,
                name: None,
                namespace: None,
            },
        )
    })
}

/// Who holds, outside kubepam, a right to what each accepted Task policy guards (in its
/// namespaces), and to `impersonate`, `escalate` and `bind`: sorted by subject, then right.
pub fn report<'p>(
    standing: &Standing<'_>,
    policies: impl IntoIterator<Item = &'p crate::api::AccessPolicy>,
) -> Vec<StandingRight> {
    let mut out = Vec::new();
    let mut add = |right: String, holders: BTreeMap<String, BTreeSet<String>>| {
        out.extend(holders.into_iter().map(|(subject, via)| StandingRight {
            subject,
            right: right.clone(),
            via: via.into_iter().collect(),
        }));
    };
    for policy in policies {
        let crate::lifecycle::PolicyView::Accepted(p) =
            crate::lifecycle::PolicyView::from_policy(Some(policy))
        else {
            continue;
        };
        let Some(task) = p
            .spec
            .task
            .as_ref()
            .filter(|_| p.spec.policy_type == crate::api::PolicyType::Task)
        else {
            continue;
        };
        let namespaces = p.spec.namespaces();
        let holders = standing.holders(|rule, bound_in| {
            let in_scope = namespaces.is_empty()
                || bound_in.is_none_or(|ns| namespaces.iter().any(|n| n == ns));
            in_scope && rule_overlaps_task(rule, task)
        });
        add(
            format!("policy {}", p.metadata.name.as_deref().unwrap_or_default()),
            holders,
        );
    }
    add(
        "impersonate".to_owned(),
        standing
            .holders(|rule, _| crate::impersonation::rules_impersonate(std::slice::from_ref(rule))),
    );
    for verb in ["escalate", "bind"] {
        add(
            verb.to_owned(),
            standing.holders(|rule, _| on_roles(rule, verb)),
        );
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests;
