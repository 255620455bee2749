//! Unit tests for the RBAC builders and the Task matcher.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

const ID: &str = "0b4c2a2e-4f4e-4e8e-9a55-8a1f0d3c9e01";

fn task_scope(namespaces: &[&str]) -> GrantScope {
    GrantScope {
        policy_type: PolicyType::Task,
        task: Some(TaskSpec {
            verbs: vec!["create".into()],
            api_groups: vec![String::new()],
            resources: vec!["pods/exec".into()],
            resource_names: None,
        }),
        roles: vec![],
        namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
        role_rules: std::collections::BTreeMap::new(),
    }
}

fn roles_scope(kind: PolicyType, roles: &[&str], namespaces: &[&str]) -> GrantScope {
    GrantScope {
        policy_type: kind,
        task: None,
        roles: roles.iter().map(|s| (*s).to_owned()).collect(),
        namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
        role_rules: std::collections::BTreeMap::new(),
    }
}

#[test]
fn task_grant_makes_a_cluster_role_and_role_bindings_per_namespace() {
    let rbac = desired_rbac("fix-prod", ID, "alice", &task_scope(&["shop", "billing"])).unwrap();
    assert_eq!(rbac.cluster_roles.len(), 1);
    let role = &rbac.cluster_roles[0];
    assert_eq!(
        role.metadata.name.as_deref(),
        Some(format!("kubepam-task-{ID}").as_str())
    );
    let first_rule = &role.rules.as_ref().unwrap()[0];
    assert_eq!(first_rule.verbs, ["create"]);
    assert_eq!(
        first_rule.resources.as_deref(),
        Some(&["pods/exec".to_owned()][..])
    );
    assert!(rbac.cluster_role_bindings.is_empty());
    assert_eq!(rbac.role_bindings.len(), 2);
    for (rb, ns) in rbac.role_bindings.iter().zip(["shop", "billing"]) {
        assert_eq!(
            rb.metadata.name.as_deref(),
            Some(format!("kubepam-grant-{ID}").as_str())
        );
        assert_eq!(rb.metadata.namespace.as_deref(), Some(ns));
        assert_eq!(rb.role_ref.kind, "ClusterRole");
        assert_eq!(rb.role_ref.name, format!("kubepam-task-{ID}"));
        let s = &rb.subjects.as_ref().unwrap()[0];
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("User", "alice"));
        assert_eq!(s.api_group.as_deref(), Some("rbac.authorization.k8s.io"));
    }
    let labels = rbac.role_bindings[0].metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "kubepam");
    assert_eq!(labels["kubepam.io/request"], "fix-prod");
    assert_eq!(labels["kubepam.io/request-id"], ID);
    assert_eq!(role.metadata.labels, rbac.role_bindings[0].metadata.labels);
    assert_eq!(
        rbac.object_refs()
            .iter()
            .map(|r| (r.kind.as_str(), r.namespace.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("ClusterRole", None),
            ("RoleBinding", Some("billing")),
            ("RoleBinding", Some("shop"))
        ]
    );
}

#[test]
fn cluster_wide_grant_uses_a_cluster_role_binding() {
    let rbac = desired_rbac("fix-prod", ID, "alice", &task_scope(&[])).unwrap();
    assert!(rbac.role_bindings.is_empty());
    assert_eq!(rbac.cluster_role_bindings.len(), 1);
    assert_eq!(
        rbac.cluster_role_bindings[0].metadata.name.as_deref(),
        Some(format!("kubepam-grant-{ID}").as_str())
    );
}

#[test]
fn role_and_role_group_bind_existing_cluster_roles() {
    let rbac = desired_rbac(
        "r1",
        ID,
        "alice",
        &roles_scope(PolicyType::Role, &["admin"], &[]),
    )
    .unwrap();
    assert!(rbac.cluster_roles.is_empty());
    assert_eq!(
        rbac.cluster_role_bindings[0].metadata.name.as_deref(),
        Some(format!("kubepam-grant-{ID}").as_str())
    );
    assert_eq!(rbac.cluster_role_bindings[0].role_ref.name, "admin");

    let scope = roles_scope(
        PolicyType::RoleGroup,
        &["view", "system:aggregate-to-edit"],
        &["shop"],
    );
    let rbac = desired_rbac("r2", ID, "alice", &scope).unwrap();
    let names: Vec<_> = rbac
        .role_bindings
        .iter()
        .map(|b| b.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names[0], format!("kubepam-grant-{ID}-view"));
    assert!(
        names[1].starts_with(&format!("kubepam-grant-{ID}-system-aggregate-to-edit-")),
        "{names:?}"
    );
    assert_eq!(
        rbac.role_bindings[1].role_ref.name,
        "system:aggregate-to-edit"
    );
}

#[test]
fn object_names_come_from_the_request_id_never_from_its_name() {
    // A request named after an existing binding (`kubepam-operator`, or `kubepam-<x>`) must not
    // make kubepam's objects land on that binding's name.
    for name in ["operator", "kubepam-operator", "x", "view"] {
        let rbac = desired_rbac(name, ID, "alice", &task_scope(&[])).unwrap();
        for r in rbac.object_refs() {
            assert!(r.name.contains(ID), "{name}: {r:?}");
            assert!(!r.name.contains(name) || name == "x", "{name}: {r:?}");
        }
    }
    assert!(owned_by(Some(&labels("r", ID)), ID));
    assert!(!owned_by(Some(&labels("r", ID)), "another-id"));
    let mut foreign = labels("r", ID);
    foreign.remove(LABEL_MANAGED_BY);
    assert!(!owned_by(Some(&foreign), ID));
    assert!(!owned_by(None, ID));
}

#[test]
fn refuses_to_build_nothing_or_for_nobody() {
    assert!(matches!(
        desired_rbac("r", ID, " ", &task_scope(&[])),
        Err(Error::MissingRequester { .. })
    ));
    assert!(matches!(
        desired_rbac(
            "r",
            ID,
            "alice",
            &roles_scope(PolicyType::RoleGroup, &[], &[])
        ),
        Err(Error::EmptyScope { .. })
    ));
    let mut no_task = task_scope(&[]);
    no_task.task = None;
    assert!(desired_rbac("r", ID, "alice", &no_task).is_err());
}

#[test]
fn long_names_are_shortened_with_a_hash() {
    let long = "a".repeat(250);
    let name = binding_name(&long, None);
    assert!(name.len() <= MAX_NAME_LEN);
    assert_ne!(name, binding_name(&"a".repeat(251), None));
    let role = "r".repeat(250);
    assert!(binding_name(ID, Some(&role)).len() <= MAX_NAME_LEN);
    assert_ne!(
        binding_name(ID, Some(&role)),
        binding_name(ID, Some(&"r".repeat(251)))
    );
    let label = label_value(&long);
    assert!(label.len() <= 63);
    assert_eq!(label_value("fix-prod"), "fix-prod");
    assert_eq!(
        selector(ID),
        format!("app.kubernetes.io/managed-by=kubepam,kubepam.io/request-id={ID}")
    );
}

#[test]
fn task_matching_follows_rbac_rules() {
    let scope = task_scope(&["shop"]);
    let exec = Operation {
        verb: "create",
        api_group: "",
        resource: "pods",
        subresource: Some("exec"),
        name: Some("web-0"),
        namespace: Some("shop"),
    };
    assert!(covers(&scope, &exec));
    assert!(!covers(
        &scope,
        &Operation {
            namespace: Some("billing"),
            ..exec
        }
    ));
    assert!(!covers(
        &scope,
        &Operation {
            subresource: None,
            ..exec
        }
    ));
    assert!(!covers(
        &scope,
        &Operation {
            verb: "delete",
            ..exec
        }
    ));
    assert!(covers(
        &task_scope(&[]),
        &Operation {
            namespace: Some("billing"),
            ..exec
        }
    ));
    let mut named = task_scope(&[]);
    if let Some(t) = named.task.as_mut() {
        t.resource_names = Some(vec!["web-1".into()]);
        t.resources = vec!["*/exec".into()];
    }
    assert!(!covers(&named, &exec));
    assert!(covers(
        &named,
        &Operation {
            name: Some("web-1"),
            ..exec
        }
    ));
    assert!(!covers(
        &roles_scope(PolicyType::Role, &["admin"], &[]),
        &exec
    ));
}

/// Kubernetes' `IsDNS1123Subdomain`: at most 253 characters of dot-separated labels, each
/// lower-case letters, digits and `-`, starting and ending with a letter or digit.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && label.starts_with(|c: char| c.is_ascii_alphanumeric())
                && label.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

proptest! {
    #[test]
    fn names_and_labels_are_always_valid(raw in prop_oneof![".{0,300}", "[a-zA-Z0-9.:_ -]{0,300}"]) {
        prop_assert!(is_dns_subdomain(&object_name(&raw)), "{}", object_name(&raw));
        prop_assert!(is_label_value(&label_value(&raw)), "{}", label_value(&raw));
    }

    #[test]
    fn every_object_binds_only_the_requester_and_carries_the_labels(
        roles in proptest::collection::btree_set("[a-z:]{1,12}", 1..4),
        namespaces in proptest::collection::btree_set("[a-z]{1,8}", 0..3),
        name in "[a-z0-9]([-a-z0-9.]{0,80}[a-z0-9])?",
    ) {
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let nss: Vec<&str> = namespaces.iter().map(String::as_str).collect();
        let scope = roles_scope(PolicyType::RoleGroup, &roles, &nss);
        let rbac = desired_rbac(&name, ID, "alice", &scope).unwrap();
        let per_role = if nss.is_empty() { 1 } else { nss.len() };
        prop_assert_eq!(rbac.role_bindings.len() + rbac.cluster_role_bindings.len(), roles.len() * per_role);
        let refs = rbac.object_refs();
        let mut dedup = refs.clone();
        dedup.dedup();
        prop_assert_eq!(refs.len(), dedup.len(), "names collide");
        for b in &rbac.role_bindings {
            prop_assert_eq!(b.subjects.as_ref().unwrap().len(), 1);
            prop_assert_eq!(&b.subjects.as_ref().unwrap()[0].name, "alice");
            prop_assert_eq!(b.metadata.labels.as_ref().unwrap().len(), 3);
            prop_assert!(is_dns_subdomain(b.metadata.name.as_deref().unwrap()));
        }
    }
}

#[test]
fn dots_that_do_not_separate_labels_become_dashes() {
    // Found by `names_and_labels_are_always_valid`: "A..b" was cleaned to "a..b-<hash>".
    for raw in ["A..b", "x.-y", "Z.", ".q", "a. b"] {
        let name = object_name(raw);
        assert!(is_dns_subdomain(&name), "{raw:?} gave {name:?}");
    }
    assert_eq!(object_name("kubepam-r.v1"), "kubepam-r.v1");
}

fn odd_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?",
        "[a-z0-9.:-]{1,300}",
        ".{0,80}",
        Just("a".repeat(253)),
        Just(format!("{}.{}", "b".repeat(120), "c".repeat(132))),
    ]
}

fn odd_scope() -> impl Strategy<Value = GrantScope> {
    let list = || proptest::collection::vec(odd_name(), 0..3);
    (
        proptest::sample::select(vec![
            PolicyType::Task,
            PolicyType::Role,
            PolicyType::RoleGroup,
        ]),
        proptest::option::of((list(), list(), list(), proptest::option::of(list()))),
        list(),
        proptest::collection::vec(
            prop_oneof!["[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", odd_name()],
            0..3,
        ),
    )
        .prop_map(|(policy_type, task, roles, namespaces)| GrantScope {
            policy_type,
            task: task.map(|(verbs, api_groups, resources, resource_names)| TaskSpec {
                verbs,
                api_groups,
                resources,
                resource_names,
            }),
            roles,
            namespaces,
            role_rules: std::collections::BTreeMap::new(),
        })
}

proptest! {
    #[test]
    fn grants_for_any_names_build_only_valid_objects_or_say_why_not(
        name in odd_name(),
        id in prop_oneof![Just(ID.to_owned()), ".{0,80}"],
        requester in prop_oneof![Just("alice".to_owned()), ".{0,20}"],
        scope in odd_scope(),
    ) {
        match desired_rbac(&name, &id, &requester, &scope) {
            Ok(rbac) => {
                let metas = rbac.cluster_roles.iter().map(|o| &o.metadata)
                    .chain(rbac.cluster_role_bindings.iter().map(|o| &o.metadata))
                    .chain(rbac.role_bindings.iter().map(|o| &o.metadata));
                for m in metas {
                    let n = m.name.as_deref().unwrap();
                    prop_assert!(is_dns_subdomain(n), "object name {n:?}");
                    if let Some(ns) = &m.namespace {
                        prop_assert!(ns.len() <= 63 && is_dns_subdomain(ns) && !ns.contains('.'), "namespace {ns:?}");
                    }
                    for (k, v) in m.labels.as_ref().unwrap() {
                        prop_assert!(is_label_value(v), "label {k}={v:?}");
                    }
                }
                for b in &rbac.role_bindings {
                    prop_assert_eq!(&b.subjects.as_ref().unwrap()[0].name, &requester);
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(&name), "{message:?} does not name request {name:?}");
                if let Error::InvalidNamespace { namespace, .. } = &e {
                    let quoted = format!("{namespace:?}");
                    prop_assert!(message.contains(&quoted), "{message:?}");
                    prop_assert!(scope.namespaces.contains(namespace));
                }
            }
        }
    }
}

#[test]
fn a_namespace_that_is_no_namespace_name_is_refused() {
    for bad in ["Shop", "shop floor", "a.b", &"n".repeat(64), "-x"] {
        let err = desired_rbac("r", ID, "alice", &task_scope(&[bad])).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidNamespace { namespace, .. } if namespace == bad),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("not a namespace name"));
    }
    assert!(desired_rbac("r", ID, "alice", &task_scope(&[&"n".repeat(63)])).is_ok());
}

proptest! {
    /// Whatever a user names a request, its objects' names depend on the request id alone, and
    /// two requests never share a name.
    #[test]
    fn object_names_depend_on_the_request_id_alone(
        name_a in odd_name(),
        name_b in odd_name(),
        id_b in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        scope in odd_scope(),
    ) {
        let (Ok(a), Ok(same_id)) = (
            desired_rbac(&name_a, ID, "alice", &scope),
            desired_rbac(&name_b, ID, "alice", &scope),
        ) else {
            return Ok(());
        };
        let names = |rbac: &DesiredRbac| rbac.object_refs().into_iter().map(|r| r.name).collect::<BTreeSet<_>>();
        prop_assert_eq!(names(&a), names(&same_id));
        prop_assume!(id_b != ID);
        let other = desired_rbac(&name_a, &id_b, "alice", &scope).unwrap();
        prop_assert!(names(&a).is_disjoint(&names(&other)));
    }
}

#[test]
fn a_role_grant_holds_the_rules_its_approval_saw() {
    let mut scope = roles_scope(PolicyType::RoleGroup, &["view", "scaler"], &["shop"]);
    let rule = crate::api::RoleRule {
        verbs: vec!["get".into()],
        api_groups: vec![String::new()],
        resources: vec!["pods".into()],
        ..Default::default()
    };
    scope.role_rules = std::collections::BTreeMap::from([
        ("view".to_owned(), vec![rule.clone()]),
        ("scaler".to_owned(), Vec::new()),
    ]);
    let rbac = desired_rbac("r", ID, "alice", &scope).unwrap();
    let roles: Vec<_> = rbac
        .cluster_roles
        .iter()
        .map(|r| (r.metadata.name.clone().unwrap(), r.rules.clone().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            (
                format!("kubepam-grant-{ID}-view"),
                vec![PolicyRule::from(&rule)]
            ),
            (format!("kubepam-grant-{ID}-scaler"), Vec::new()),
        ]
    );
    // Each binding names the copy, never the role the policy names.
    for binding in &rbac.role_bindings {
        assert_eq!(
            binding.role_ref.name,
            binding.metadata.name.clone().unwrap()
        );
        assert!(owned_by(binding.metadata.labels.as_ref(), ID));
    }
    assert!(
        rbac.cluster_roles
            .iter()
            .all(|r| r.aggregation_rule.is_none())
    );
}
