//! Who holds the right to impersonate the identities kubepam trusts (pure).
//!
//! Admission sees the impersonated user, never the impersonator: whoever may
//! impersonate a system account or a control-plane identity passes the guard
//! as it, whoever may impersonate an approver decides as them, and whoever may
//! impersonate kubepam's service account writes status as kubepam. kubepam
//! cannot refuse that, so it reports it: from RBAC, every subject bound to a
//! rule that allows `impersonate` on one of those identities.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::standing::Standing;

/// An identity kubepam trusts, by how RBAC names it for `impersonate`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A username (`users`; a service account's `system:serviceaccount:NS:NAME` too).
    User(String),
    /// A group (`groups`).
    Group(String),
}

impl Target {
    /// `user NAME` or `group NAME`.
    pub fn describe(&self) -> String {
        match self {
            Self::User(name) => format!("user {name}"),
            Self::Group(name) => format!("group {name}"),
        }
    }
}

/// One subject that may impersonate some of the targets, and through what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Impersonator {
    /// `User alice`, `Group ops`, `ServiceAccount ns/name`.
    pub subject: String,
    /// The targets it may impersonate, sorted.
    pub targets: Vec<Target>,
    /// The bindings that give it the right, as `ClusterRoleBinding/NAME` or
    /// `RoleBinding/NS/NAME`, sorted.
    pub via: Vec<String>,
}

/// Whether `rules` allow impersonating anyone (users, groups, service accounts, uids or user
/// extras): a grant of them lets its holder act as anyone, kubepam's approvers and kubepam
/// itself included.
pub fn rules_impersonate(rules: &[PolicyRule]) -> bool {
    let any =
        |list: &[String], xs: &[&str]| list.iter().any(|v| v == "*" || xs.contains(&v.as_str()));
    rules.iter().any(|rule| {
        any(&rule.verbs, &["impersonate"])
            && any(
                rule.api_groups.as_deref().unwrap_or_default(),
                &["", "authentication.k8s.io"],
            )
            && rule
                .resources
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|r| {
                    r == "*"
                        || ["users", "groups", "serviceaccounts", "uids"].contains(&r.as_str())
                        || r.starts_with("userextras")
                })
    })
}

/// Whether `rule` allows impersonating `target` (`namespace` is where the rule
/// holds, for a RoleBinding; `None` cluster-wide).
pub fn rule_allows(rule: &PolicyRule, target: &Target, namespace: Option<&str>) -> bool {
    let any = |list: &[String], x: &str| list.iter().any(|v| v == "*" || v == x);
    if !any(&rule.verbs, "impersonate") {
        return false;
    }
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    let limited_to = rule.resource_names.as_deref().unwrap_or_default();
    let named = |name: &str| limited_to.is_empty() || limited_to.iter().any(|n| n == name);
    match target {
        Target::Group(group) => {
            namespace.is_none() && any(groups, "") && any(resources, "groups") && named(group)
        }
        Target::User(user) => {
            let as_user =
                namespace.is_none() && any(groups, "") && any(resources, "users") && named(user);
            // A service account is also impersonated as `serviceaccounts` in its namespace.
            let as_service_account = user
                .strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(ns, name)| {
                    namespace.is_none_or(|n| n == ns)
                        && any(groups, "")
                        && any(resources, "serviceaccounts")
                        && named(name)
                });
            as_user || as_service_account
        }
    }
}

/// The group the API server gives every right without RBAC; listing it says nothing new.
pub const ALL_POWERFUL_GROUP: &str = "system:masters";

/// Everyone RBAC, without kubepam's own grants, lets impersonate any of `targets`, sorted by
/// subject (but the group `system:masters`, which holds every right anyway).
pub fn impersonators(standing: &Standing<'_>, targets: &BTreeSet<Target>) -> Vec<Impersonator> {
    standing
        .reach(|rules, namespace| {
            targets
                .iter()
                .filter(|t| rules.iter().any(|rule| rule_allows(rule, t, namespace)))
                .cloned()
                .collect()
        })
        .into_iter()
        .map(|(subject, (targets, via))| Impersonator {
            subject,
            targets: targets.into_iter().collect(),
            via: via.into_iter().collect(),
        })
        .collect()
}

/// Who RBAC lets decide requests without being in an approver group: every user, group and
/// service account bound cluster-wide to the verb `approve` (named, not by a wildcard, as
/// admission requires) on `accesspolicies.kubepam.io`, for some policy or every one. Whoever
/// may impersonate one of them decides as them.
pub fn rbac_approvers(standing: &Standing<'_>) -> BTreeSet<Target> {
    let has = |list: Option<&Vec<String>>, value: &str| {
        list.is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
    };
    let approves = |rule: &PolicyRule| {
        rule.verbs
            .iter()
            .any(|v| v == crate::admission::APPROVE_VERB)
            && has(rule.api_groups.as_ref(), "kubepam.io")
            && has(rule.resources.as_ref(), "accesspolicies")
    };
    standing
        .cluster_subjects(approves)
        .into_iter()
        .filter_map(|subject| match subject.kind.as_str() {
            "User" => Some(Target::User(subject.name.clone())),
            "Group" if subject.name != ALL_POWERFUL_GROUP => {
                Some(Target::Group(subject.name.clone()))
            }
            "ServiceAccount" => Some(Target::User(format!(
                "system:serviceaccount:{}:{}",
                subject.namespace.as_deref().unwrap_or_default(),
                subject.name
            ))),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use serde_json::json;

    use super::*;

    fn rule(value: serde_json::Value) -> PolicyRule {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn grants_that_impersonate_are_recognised() {
        let yes = [
            json!({"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}),
            json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
            json!({"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/scopes"], "verbs": ["impersonate"]}),
            json!({"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["*"]}),
        ];
        for r in yes {
            assert!(rules_impersonate(&[rule(r.clone())]), "{r}");
        }
        let no = [
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}),
            json!({"apiGroups": [""], "resources": ["users"], "verbs": ["get"]}),
            json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["impersonate"]}),
        ];
        for r in no {
            assert!(!rules_impersonate(&[rule(r.clone())]), "{r}");
        }
    }

    #[test]
    fn impersonate_rules_follow_rbac_matching() {
        let kubepam = Target::User("system:serviceaccount:kubepam-system:kubepam".into());
        let approvers = Target::Group("pam-approvers".into());
        let users =
            rule(json!({"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}));
        assert!(rule_allows(&users, &kubepam, None));
        assert!(!rule_allows(&users, &approvers, None));
        let star = rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
        assert!(rule_allows(&star, &kubepam, None) && rule_allows(&star, &approvers, None));
        let named = rule(
            json!({"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": ["other"]}),
        );
        assert!(!rule_allows(&named, &approvers, None));
        let sa = rule(
            json!({"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"], "resourceNames": ["kubepam"]}),
        );
        assert!(rule_allows(&sa, &kubepam, Some("kubepam-system")));
        assert!(
            !rule_allows(&sa, &kubepam, Some("default")),
            "only in its namespace"
        );
        let get = rule(json!({"apiGroups": [""], "resources": ["users"], "verbs": ["get"]}));
        assert!(!rule_allows(&get, &kubepam, None));
        // A RoleBinding never gives users or groups, which are cluster-wide.
        assert!(!rule_allows(&users, &kubepam, Some("kubepam-system")));
    }

    #[test]
    fn impersonators_are_found_through_bindings() {
        let roles: Vec<ClusterRole> = serde_json::from_value(json!([
            {"metadata": {"name": "impersonator"}, "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]},
            {"metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
        ]))
        .unwrap();
        let bindings: Vec<ClusterRoleBinding> = serde_json::from_value(json!([
            {"metadata": {"name": "mallory-can"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
             "subjects": [{"kind": "User", "name": "mallory"}, {"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}]},
            {"metadata": {"name": "alice-reads"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
             "subjects": [{"kind": "User", "name": "alice"}]},
        ]))
        .unwrap();
        let targets = BTreeSet::from([Target::Group("pam-approvers".into())]);
        let standing = Standing::new(&roles, [], &bindings, []);
        let found = impersonators(&standing, &targets);
        assert_eq!(
            found.iter().map(|i| i.subject.as_str()).collect::<Vec<_>>(),
            ["ServiceAccount ci/bot", "User mallory"]
        );
        assert_eq!(found[1].via, ["ClusterRoleBinding/mallory-can"]);
        assert!(impersonators(&standing, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn approvers_by_rbac_are_identities_kubepam_trusts() {
        let roles: Vec<ClusterRole> = serde_json::from_value(json!([
            {"metadata": {"name": "approve-prod"}, "rules": [{"apiGroups": ["kubepam.io"], "resources": ["accesspolicies"], "resourceNames": ["prod"], "verbs": ["approve"]}]},
            {"metadata": {"name": "everything"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
        ]))
        .unwrap();
        let bindings: Vec<ClusterRoleBinding> = serde_json::from_value(json!([
            {"metadata": {"name": "rita-approves"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "approve-prod"},
             "subjects": [{"kind": "User", "name": "rita"}, {"kind": "Group", "name": "release-managers"},
                          {"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}]},
            {"metadata": {"name": "admins"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "everything"},
             "subjects": [{"kind": "User", "name": "root"}]},
        ]))
        .unwrap();
        let standing = Standing::new(&roles, [], &bindings, []);
        assert_eq!(
            rbac_approvers(&standing),
            BTreeSet::from([
                Target::User("rita".into()),
                Target::Group("release-managers".into()),
                Target::User("system:serviceaccount:ci:bot".into()),
            ]),
            "a wildcard holder is no approver (admission refuses it)"
        );
    }
}
