//! Grants that give away the keys (pure).
//!
//! Some rights let whoever holds them make more rights for themselves: `escalate` and `bind`
//! write roles and bindings beyond one's own, `impersonate` acts as anyone, wildcards cover
//! all of these, `cluster-admin` is all of them, a `serviceaccounts/token` request mints a
//! credential of another identity (kubepam's own included) that outlives the grant, and
//! reading Secrets cluster-wide reads every such credential already minted. A policy whose
//! grant includes one of them is refused unless it says so: `allowImpersonation` for
//! `impersonate`, `allowPrivilegeEscalation` for the rest.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::api::{AccessPolicySpec, PolicyType};
use crate::impersonation::rules_impersonate;

/// The ClusterRole that holds every right.
pub const CLUSTER_ADMIN: &str = "cluster-admin";

/// The rules of the ClusterRoles a policy names, by name, as read when it is checked; a role
/// not in the map is not known (missing, or not read).
pub type NamedRoles = BTreeMap<String, Vec<PolicyRule>>;

/// One way a grant gives away the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyRight {
    /// `escalate` on roles: write roles with rights one does not hold.
    Escalate,
    /// `bind` on roles: bind roles one does not hold.
    Bind,
    /// `impersonate` users, groups or service accounts: act as anyone.
    Impersonate,
    /// `*` in verbs.
    WildcardVerbs,
    /// `*` in resources.
    WildcardResources,
    /// The ClusterRole `cluster-admin`.
    ClusterAdmin,
    /// `create` on `serviceaccounts/token`: mint a credential of another identity.
    TokenRequests,
    /// Any verb on `secrets` in every namespace: read every credential stored there.
    SecretsClusterWide,
    /// Writing admission configuration (webhook configurations, admission policies): code that
    /// sees or rewrites every call, which admission itself never checks.
    AdmissionConfiguration,
    /// `nodes/proxy`: the kubelet's API, whose exec reaches every pod of a node (and its
    /// service account token) without admission.
    NodeProxy,
}

impl KeyRight {
    /// How the right reads in a message, e.g. `bind`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Escalate => "escalate",
            Self::Bind => "bind",
            Self::Impersonate => "impersonate",
            Self::WildcardVerbs => "wildcard verbs",
            Self::WildcardResources => "wildcard resources",
            Self::ClusterAdmin => "cluster-admin",
            Self::TokenRequests => "serviceaccounts/token",
            Self::SecretsClusterWide => "secrets cluster-wide",
            Self::AdmissionConfiguration => "admission configuration",
            Self::NodeProxy => "nodes/proxy",
        }
    }

    /// The policy field that must say yes before the right is granted.
    pub fn opt_in(self) -> &'static str {
        match self {
            Self::Impersonate => "allowImpersonation",
            _ => "allowPrivilegeEscalation",
        }
    }
}

fn lists(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// The key rights in `rules`; `cluster_wide` when they hold in every namespace.
pub fn rule_key_rights(rules: &[PolicyRule], cluster_wide: bool) -> BTreeSet<KeyRight> {
    let mut out = BTreeSet::new();
    if rules_impersonate(rules) {
        out.insert(KeyRight::Impersonate);
    }
    for rule in rules {
        let groups = rule.api_groups.as_deref().unwrap_or_default();
        let resources = rule.resources.as_deref().unwrap_or_default();
        if rule.verbs.iter().any(|v| v == "*") {
            out.insert(KeyRight::WildcardVerbs);
        }
        if resources.iter().any(|r| r == "*") {
            out.insert(KeyRight::WildcardResources);
        }
        let on_roles = lists(groups, crate::grant::RBAC_API_GROUP)
            && ["roles", "clusterroles"]
                .iter()
                .any(|r| lists(resources, r));
        if on_roles && rule.verbs.iter().any(|v| v == "escalate") {
            out.insert(KeyRight::Escalate);
        }
        if on_roles && rule.verbs.iter().any(|v| v == "bind") {
            out.insert(KeyRight::Bind);
        }
        let core = lists(groups, "");
        let tokens = resources
            .iter()
            .any(|r| r == "serviceaccounts/token" || r == "serviceaccounts/*");
        if core && tokens && lists(&rule.verbs, "create") {
            out.insert(KeyRight::TokenRequests);
        }
        if core && cluster_wide && resources.iter().any(|r| r == "secrets") {
            out.insert(KeyRight::SecretsClusterWide);
        }
        if core
            && resources
                .iter()
                .any(|r| r == "nodes/proxy" || r == "nodes/*")
        {
            out.insert(KeyRight::NodeProxy);
        }
        let writes = ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .any(|verb| lists(&rule.verbs, verb));
        if writes && lists(groups, "admissionregistration.k8s.io") && !resources.is_empty() {
            out.insert(KeyRight::AdmissionConfiguration);
        }
    }
    out
}

/// The key rights a policy's grant includes. A Task is judged on its rule; a Role or
/// RoleGroup on the rules of its ClusterRoles found in `roles` (and `cluster-admin` by name,
/// read or not).
pub fn policy_key_rights(spec: &AccessPolicySpec, roles: &NamedRoles) -> BTreeSet<KeyRight> {
    let cluster_wide = spec.namespaces().is_empty();
    match spec.policy_type {
        PolicyType::Task => spec.task.as_ref().map_or_else(BTreeSet::new, |task| {
            rule_key_rights(&[crate::grant::policy_rule(task)], cluster_wide)
        }),
        PolicyType::Role | PolicyType::RoleGroup => {
            let mut out = BTreeSet::new();
            for role in spec.role_names() {
                if role == CLUSTER_ADMIN {
                    out.insert(KeyRight::ClusterAdmin);
                }
                if let Some(rules) = roles.get(&role) {
                    out.extend(rule_key_rights(rules, cluster_wide));
                }
            }
            out
        }
    }
}

/// The key rights of `spec` that it has not opted into.
pub fn unconsented(spec: &AccessPolicySpec, roles: &NamedRoles) -> BTreeSet<KeyRight> {
    policy_key_rights(spec, roles)
        .into_iter()
        .filter(|right| match right {
            KeyRight::Impersonate => !spec.allow_impersonation,
            _ => !spec.allow_privilege_escalation,
        })
        .collect()
}

/// Why a policy is refused whatever the count: the reason (for the `Accepted` condition and
/// admission) and a message that says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefusal {
    /// `KubepamNamespace`, `GrantsImpersonation` or `GrantsPrivilegeEscalation`.
    pub reason: &'static str,
    /// What is wrong and what to change.
    pub message: String,
}

/// Reasons of a [`KeyRefusal`].
pub mod reason {
    /// The policy's scope names kubepam's own namespace.
    pub const KUBEPAM_NAMESPACE: &str = "KubepamNamespace";
    /// The policy grants `impersonate` without `allowImpersonation: true`.
    pub const GRANTS_IMPERSONATION: &str = "GrantsImpersonation";
    /// The policy grants another key right without `allowPrivilegeEscalation: true`.
    pub const GRANTS_PRIVILEGE_ESCALATION: &str = "GrantsPrivilegeEscalation";
}

/// Why `spec` (the policy `policy`) may not be in force whatever it is asked: its scope reaches
/// kubepam's namespace, or it grants key rights it has not opted into.
pub fn key_refusal(
    policy: &str,
    spec: &AccessPolicySpec,
    roles: &NamedRoles,
    kubepam_namespace: &str,
) -> Option<KeyRefusal> {
    if spec.namespaces().iter().any(|n| n == kubepam_namespace) {
        return Some(KeyRefusal {
            reason: reason::KUBEPAM_NAMESPACE,
            message: format!(
                "AccessPolicy {policy} names namespace {kubepam_namespace} in scope.namespaces: \
                 that is kubepam's own namespace (its service account, certificate and Lease), \
                 and no grant may reach it. Remove it from the scope"
            ),
        });
    }
    let rights = unconsented(spec, roles);
    if rights.is_empty() {
        return None;
    }
    let reason = if rights.iter().all(|r| *r == KeyRight::Impersonate) {
        reason::GRANTS_IMPERSONATION
    } else {
        reason::GRANTS_PRIVILEGE_ESCALATION
    };
    Some(KeyRefusal {
        reason,
        message: refusal_message(policy, &rights),
    })
}

/// A sentence naming `rights` and the fields that would allow them, e.g. for a refusal.
pub fn refusal_message(policy: &str, rights: &BTreeSet<KeyRight>) -> String {
    let named: Vec<&str> = rights.iter().map(|r| r.describe()).collect();
    let fields: BTreeSet<&str> = rights.iter().map(|r| r.opt_in()).collect();
    let fields: Vec<String> = fields.iter().map(|f| format!("spec.{f}: true")).collect();
    format!(
        "AccessPolicy {policy} would grant {}: whoever holds such a grant can give themselves \
         more rights, or act as others (approvers and kubepam itself included), beyond the \
         grant and its end. Narrow what it grants, or set {} to grant it knowingly",
        named.join(", "),
        fields.join(" and ")
    )
}

/// Whether `name` may be read as a ClusterRole name: only plain names reach a URL (`a?b` would
/// read another role).
pub fn is_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= crate::grant::MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:_@".contains(c))
}

/// Groups that hold every authenticated (or every) caller: an approver group naming one lets
/// anyone approve.
pub const EVERYONE_GROUPS: [&str; 3] = [
    "system:authenticated",
    "system:unauthenticated",
    "system:serviceaccounts",
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::{AccessPolicySpec, ApprovalType, Scope, TaskSpec};

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        let owned = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        PolicyRule {
            verbs: owned(verbs),
            api_groups: Some(owned(groups)),
            resources: Some(owned(resources)),
            ..PolicyRule::default()
        }
    }

    fn task(
        verbs: &[&str],
        group: &str,
        resources: &[&str],
        namespaces: &[&str],
    ) -> AccessPolicySpec {
        let owned = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        AccessPolicySpec {
            policy_type: PolicyType::Task,
            task: Some(TaskSpec {
                verbs: owned(verbs),
                api_groups: vec![group.to_owned()],
                resources: owned(resources),
                resource_names: None,
            }),
            role: None,
            roles: Vec::new(),
            scope: (!namespaces.is_empty()).then(|| Scope {
                namespaces: owned(namespaces),
            }),
            approval_type: ApprovalType::Manual,
            approver_group: None,
            max_duration: None,
            required_approvals: None,
            reason_pattern: None,
            reason_hint: None,
            max_schedule_ahead: None,
            extension: None,
            max_open_per_requester: None,
            break_glass: None,
            escalation: Vec::new(),
            allow_impersonation: false,
            allow_privilege_escalation: false,
            allow_persistence: false,
        }
    }

    fn role_policy(roles: &[&str], namespaces: &[&str]) -> AccessPolicySpec {
        let mut spec = task(&["get"], "", &["pods"], namespaces);
        spec.policy_type = PolicyType::RoleGroup;
        spec.task = None;
        spec.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        spec
    }

    #[test]
    fn each_key_right_is_named() {
        let rbac = crate::grant::RBAC_API_GROUP;
        let cases: [(AccessPolicySpec, KeyRight); 9] = [
            (
                task(
                    &["create"],
                    "admissionregistration.k8s.io",
                    &["mutatingwebhookconfigurations"],
                    &[],
                ),
                KeyRight::AdmissionConfiguration,
            ),
            (
                task(&["get"], "", &["nodes/proxy"], &[]),
                KeyRight::NodeProxy,
            ),
            (
                task(&["escalate"], rbac, &["clusterroles"], &["prod"]),
                KeyRight::Escalate,
            ),
            (task(&["bind"], rbac, &["roles"], &["prod"]), KeyRight::Bind),
            (
                task(&["impersonate"], "", &["users"], &[]),
                KeyRight::Impersonate,
            ),
            (
                task(&["*"], "apps", &["deployments"], &["prod"]),
                KeyRight::WildcardVerbs,
            ),
            (
                task(&["delete"], "apps", &["*"], &["prod"]),
                KeyRight::WildcardResources,
            ),
            (
                task(&["create"], "", &["serviceaccounts/token"], &["prod"]),
                KeyRight::TokenRequests,
            ),
            (
                task(&["get"], "", &["secrets"], &[]),
                KeyRight::SecretsClusterWide,
            ),
        ];
        for (spec, right) in cases {
            let found = unconsented(&spec, &NamedRoles::new());
            assert!(found.contains(&right), "{right:?} not found in {found:?}");
            let refusal = key_refusal("p", &spec, &NamedRoles::new(), "kubepam-system").unwrap();
            assert!(
                refusal.message.contains(right.opt_in()),
                "{}",
                refusal.message
            );
            assert!(
                refusal.message.contains(right.describe()),
                "{}",
                refusal.message
            );
        }
    }

    #[test]
    fn ordinary_tasks_need_no_opt_in() {
        for spec in [
            task(&["delete"], "apps", &["deployments"], &["prod"]),
            task(&["create"], "", &["pods/exec"], &[]),
            // Secrets in one namespace: a grant like any other.
            task(&["get"], "", &["secrets"], &["prod"]),
            // `bind` means nothing on other resources.
            task(&["bind"], "", &["pods"], &["prod"]),
        ] {
            assert_eq!(
                key_refusal("p", &spec, &NamedRoles::new(), "kubepam-system"),
                None
            );
        }
    }

    #[test]
    fn roles_are_judged_on_their_rules_and_cluster_admin_by_name() {
        let spec = role_policy(&["cluster-admin"], &["prod"]);
        assert!(unconsented(&spec, &NamedRoles::new()).contains(&KeyRight::ClusterAdmin));
        let spec = role_policy(&["binder", "viewer"], &["prod"]);
        assert!(
            unconsented(&spec, &NamedRoles::new()).is_empty(),
            "unread roles"
        );
        let roles = NamedRoles::from([
            (
                "binder".to_owned(),
                vec![rule(
                    &["bind"],
                    &[crate::grant::RBAC_API_GROUP],
                    &["clusterroles"],
                )],
            ),
            ("viewer".to_owned(), vec![rule(&["get"], &[""], &["pods"])]),
        ]);
        assert_eq!(unconsented(&spec, &roles), BTreeSet::from([KeyRight::Bind]));
        let mut allowed = spec;
        allowed.allow_privilege_escalation = true;
        assert!(unconsented(&allowed, &roles).is_empty());
    }

    #[test]
    fn impersonation_has_its_own_opt_in() {
        let mut spec = task(&["impersonate"], "", &["users"], &[]);
        spec.allow_privilege_escalation = true;
        let refusal = key_refusal("p", &spec, &NamedRoles::new(), "kubepam-system").unwrap();
        assert_eq!(refusal.reason, reason::GRANTS_IMPERSONATION);
        spec.allow_impersonation = true;
        assert_eq!(
            key_refusal("p", &spec, &NamedRoles::new(), "kubepam-system"),
            None
        );
    }

    #[test]
    fn kubepams_namespace_is_refused_whatever_the_opt_ins() {
        let mut spec = task(
            &["delete"],
            "apps",
            &["deployments"],
            &["prod", "kubepam-system"],
        );
        spec.allow_impersonation = true;
        spec.allow_privilege_escalation = true;
        let refusal = key_refusal("p", &spec, &NamedRoles::new(), "kubepam-system").unwrap();
        assert_eq!(refusal.reason, reason::KUBEPAM_NAMESPACE);
        assert_eq!(key_refusal("p", &spec, &NamedRoles::new(), "pam"), None);
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            Just(String::new()),
            Just("escalate".to_owned()),
            Just("bind".to_owned()),
            Just("create".to_owned()),
            Just("get".to_owned()),
            Just("impersonate".to_owned()),
            Just("secrets".to_owned()),
            Just("serviceaccounts/token".to_owned()),
            Just("clusterroles".to_owned()),
            Just("users".to_owned()),
            Just(crate::grant::RBAC_API_GROUP.to_owned()),
            "[a-z/]{1,8}",
        ]
    }

    fn arbitrary_rule() -> impl Strategy<Value = PolicyRule> {
        let words = || proptest::collection::vec(word(), 0..4);
        (words(), words(), words()).prop_map(|(verbs, groups, resources)| PolicyRule {
            verbs,
            api_groups: Some(groups),
            resources: Some(resources),
            ..PolicyRule::default()
        })
    }

    proptest! {
        /// More rules, or the same rules in more namespaces, never hold fewer key rights.
        #[test]
        fn key_rights_only_grow_with_rules_and_scope(
            rules in proptest::collection::vec(arbitrary_rule(), 0..4),
            more in proptest::collection::vec(arbitrary_rule(), 0..3),
        ) {
            let some = rule_key_rights(&rules, false);
            let mut all = rules.clone();
            all.extend(more);
            prop_assert!(rule_key_rights(&all, false).is_superset(&some));
            prop_assert!(rule_key_rights(&rules, true).is_superset(&some));
        }

        /// A rule without a key verb, wildcard, token or secret resource holds no key right.
        #[test]
        fn rules_without_key_words_hold_no_key_right(rules in proptest::collection::vec(arbitrary_rule(), 0..4)) {
            let key = |w: &String| {
                ["*", "escalate", "bind", "impersonate", "secrets", "serviceaccounts/token"]
                    .contains(&w.as_str())
                    || w.starts_with("serviceaccounts")
                    || w.starts_with("nodes")
            };
            let plain = rules.iter().all(|r| {
                !r.verbs.iter().any(key)
                    && !r.resources.iter().flatten().any(key)
                    && !r.api_groups.iter().flatten().any(|g| g == "*")
            });
            if plain {
                prop_assert!(rule_key_rights(&rules, true).is_empty());
            }
        }

        /// With both opt-ins nothing is unconsented; without them, everything found is.
        #[test]
        fn opt_ins_consent_to_exactly_what_they_name(rules in proptest::collection::vec(arbitrary_rule(), 1..3), wide in any::<bool>()) {
            let mut spec = role_policy(&["r"], if wide { &[] } else { &["prod"] });
            let roles = NamedRoles::from([("r".to_owned(), rules)]);
            prop_assert_eq!(unconsented(&spec, &roles), policy_key_rights(&spec, &roles));
            spec.allow_impersonation = true;
            prop_assert!(!unconsented(&spec, &roles).contains(&KeyRight::Impersonate));
            spec.allow_privilege_escalation = true;
            prop_assert!(unconsented(&spec, &roles).is_empty());
        }
    }
}
