// Fixtures take inline JSON by value: `json!(..)` at the call site reads best.
#![allow(clippy::needless_pass_by_value)]

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn cluster_role(name: &str, verbs: &[&str], group: &str, resources: &[&str]) -> ClusterRole {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "rules": [{ "verbs": verbs, "apiGroups": [group], "resources": resources }],
    }))
    .unwrap()
}

fn crb(name: &str, role: &str, subject: serde_json::Value, managed: bool) -> ClusterRoleBinding {
    let labels = if managed {
        json!({ "app.kubernetes.io/managed-by": "kubepam" })
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [subject],
    }))
    .unwrap()
}

fn rb(ns: &str, name: &str, kind: &str, role: &str, subject: serde_json::Value) -> RoleBinding {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role },
        "subjects": [subject],
    }))
    .unwrap()
}

fn user(name: &str) -> serde_json::Value {
    json!({ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name })
}

fn op<'a>(verb: &'a str, resource: &'a str, namespace: Option<&'a str>) -> Operation<'a> {
    Operation {
        verb,
        api_group: grant::RBAC_API_GROUP,
        resource,
        subresource: None,
        name: None,
        namespace,
    }
}

use crate::grant;

#[test]
fn kubepams_own_grants_are_not_standing_rights() {
    let binder = cluster_role(
        "binder",
        &["create"],
        grant::RBAC_API_GROUP,
        &["rolebindings"],
    );
    let roles = [binder];
    let alice = User {
        name: "alice",
        groups: &[],
    };
    let by_grant = [crb("kubepam-grant-x", "binder", user("alice"), true)];
    let standing = Standing::new(&roles, [], &by_grant, []);
    assert!(!standing.allows(&alice, &op("create", "rolebindings", Some("prod"))));
    let by_hand = [crb("platform", "binder", user("alice"), false)];
    let standing = Standing::new(&roles, [], &by_hand, []);
    assert!(standing.allows(&alice, &op("create", "rolebindings", Some("prod"))));
    assert!(standing.allows(&alice, &op("create", "rolebindings", None)));
    assert!(!standing.allows(&alice, &op("delete", "rolebindings", Some("prod"))));
}

#[test]
fn role_bindings_hold_in_their_namespace_only() {
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "binder", "namespace": "prod" },
        "rules": [{ "verbs": ["create"], "apiGroups": [grant::RBAC_API_GROUP], "resources": ["rolebindings"] }],
    }))
    .unwrap();
    let sa = json!({ "kind": "ServiceAccount", "name": "ci" });
    let bindings = [rb("prod", "ci", "Role", "binder", sa)];
    let roles = [role];
    let standing = Standing::new([], &roles, [], &bindings);
    let ci = User {
        name: "system:serviceaccount:prod:ci",
        groups: &[],
    };
    assert!(standing.allows(&ci, &op("create", "rolebindings", Some("prod"))));
    assert!(!standing.allows(&ci, &op("create", "rolebindings", Some("dev"))));
    assert!(!standing.allows(&ci, &op("create", "rolebindings", None)));
    let other = User {
        name: "system:serviceaccount:dev:ci",
        groups: &[],
    };
    assert!(!standing.allows(&other, &op("create", "rolebindings", Some("prod"))));
}

#[test]
fn groups_and_system_masters() {
    let roles = [cluster_role("all", &["*"], "*", &["*"])];
    let bindings = [crb(
        "ops",
        "all",
        json!({ "kind": "Group", "name": "ops" }),
        false,
    )];
    let standing = Standing::new(&roles, [], &bindings, []);
    let ops = ["ops".to_owned()];
    let masters = ["system:masters".to_owned()];
    assert!(standing.allows(
        &User {
            name: "x",
            groups: &ops
        },
        &op("escalate", "clusterroles", None)
    ));
    assert!(standing.allows(
        &User {
            name: "y",
            groups: &masters
        },
        &op("bind", "roles", Some("a"))
    ));
    assert!(!standing.allows(
        &User {
            name: "z",
            groups: &[]
        },
        &op("get", "roles", Some("a"))
    ));
    let holders = standing.holders(|rule, _| rule.verbs.iter().any(|v| v == "*"));
    assert_eq!(
        holders.keys().collect::<Vec<_>>(),
        ["Group ops"],
        "system:masters is not listed: it holds every right anyway"
    );
}

#[test]
fn subresources_and_resource_names_match_as_rbac_does() {
    let rule: PolicyRule = serde_json::from_value(json!({
        "verbs": ["create"], "apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": ["ci"],
    }))
    .unwrap();
    let mut token = Operation {
        verb: "create",
        api_group: "",
        resource: "serviceaccounts",
        subresource: Some("token"),
        name: Some("ci"),
        namespace: Some("prod"),
    };
    assert!(rule_allows(&rule, &token));
    token.name = Some("kubepam");
    assert!(!rule_allows(&rule, &token));
    let any_token: PolicyRule = serde_json::from_value(json!({
        "verbs": ["create"], "apiGroups": [""], "resources": ["*/token"],
    }))
    .unwrap();
    assert!(rule_allows(&any_token, &token));
    token.subresource = None;
    assert!(!rule_allows(&any_token, &token));
}

proptest! {
    /// More bindings never take a right away; kubepam's own bindings never add one.
    #[test]
    fn standing_grows_with_bindings_and_ignores_kubepams(
        verbs in proptest::sample::subsequence(vec!["create", "update", "bind", "*"], 0..4),
        asked in proptest::sample::select(vec!["create", "update", "bind", "escalate"]),
        managed in any::<bool>(),
    ) {
        let roles = [cluster_role("r", &verbs, grant::RBAC_API_GROUP, &["rolebindings"])];
        let alice = User { name: "alice", groups: &[] };
        let call = op(asked, "rolebindings", Some("prod"));
        let none = Standing::new(&roles, [], [], []);
        prop_assert!(!none.allows(&alice, &call));
        let bindings = [crb("b", "r", user("alice"), managed)];
        let some = Standing::new(&roles, [], &bindings, []);
        let expected = !managed && verbs.iter().any(|v| *v == "*" || *v == asked);
        prop_assert_eq!(some.allows(&alice, &call), expected);
    }
}

fn accepted_task_policy(name: &str, namespaces: &[&str]) -> crate::api::AccessPolicy {
    serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": name, "generation": 1 },
        "spec": {
            "type": "Task", "approvalType": "Manual",
            "task": { "verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"] },
            "scope": { "namespaces": namespaces },
        },
        "status": { "conditions": [{ "type": "Accepted", "status": "True", "reason": "Accepted",
            "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1 }] },
    }))
    .unwrap()
}

#[test]
fn the_report_names_who_holds_guarded_and_key_rights_outside_kubepam() {
    let roles = [
        cluster_role("deleter", &["delete"], "apps", &["deployments"]),
        cluster_role(
            "binder",
            &["bind"],
            grant::RBAC_API_GROUP,
            &["clusterroles"],
        ),
        cluster_role("all", &["*"], "*", &["*"]),
    ];
    let cluster_bindings = [
        crb("ops-delete", "deleter", user("olga"), false),
        crb("kubepam-grant-1", "deleter", user("alice"), true),
        crb(
            "root",
            "all",
            json!({ "kind": "Group", "name": "system:masters" }),
            false,
        ),
        crb("binders", "binder", user("bert"), false),
    ];
    let bindings = [
        rb("prod", "paul", "ClusterRole", "deleter", user("paul")),
        rb("dev", "dina", "ClusterRole", "deleter", user("dina")),
    ];
    let standing = Standing::new(&roles, [], &cluster_bindings, &bindings);
    let policy = accepted_task_policy("prod-delete", &["prod"]);
    let report = report(&standing, [&policy]);
    let rows: Vec<(&str, &str)> = report
        .iter()
        .map(|r| (r.subject.as_str(), r.right.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("User bert", "bind"),
            ("User olga", "policy prod-delete"),
            ("User paul", "policy prod-delete"),
        ]
    );
    assert_eq!(report[2].via, ["RoleBinding/prod/paul"]);
}
