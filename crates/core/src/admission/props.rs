//! Properties of the admission rules and the envelope.

// Fixtures take inline JSON by value: `json!(..)` at the call site reads best.
#![allow(clippy::needless_pass_by_value)]

use std::collections::BTreeMap;

use chrono::TimeDelta;
use kube::core::admission::Operation as AdmissionOperation;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::guard::task_guards;
use super::request::changed_review_keys;
use super::tests::{
    OPERATOR, admit_access_policy, admit_elevation_request, control, er, groups, now, policy,
    policy_create, policy_update, policy_warnings,
};
use super::*;
use crate::api::{AccessPolicy, ElevationRequest, GrantScope, PolicyType, Review, TaskSpec};

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

fn user() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&USERS[..])
}

fn reviews() -> impl Strategy<Value = BTreeMap<String, Review>> {
    proptest::collection::btree_map(
        user().prop_map(str::to_owned),
        (
            proptest::sample::select(vec!["Approve", "Deny", "Revoke"]),
            proptest::option::of("[a-z]{0,3}"),
        )
            .prop_map(|(d, c)| {
                serde_json::from_value(json!({"decision": d, "comment": c})).unwrap()
            }),
        0..4,
    )
}

fn phase() -> impl Strategy<Value = Option<&'static str>> {
    proptest::option::of(proptest::sample::select(vec![
        "Pending", "Approved", "Denied", "Expired", "Revoked",
    ]))
}

proptest! {
    #[test]
    fn updates_only_ever_admit_the_callers_own_review_and_never_the_requesters(
        requester in proptest::option::of(user()),
        who in user(),
        in_group in any::<bool>(),
        recorded_group in any::<bool>(),
        phase in phase(),
        old_reviews in reviews(),
        new_reviews in reviews(),
    ) {
        let status = json!({"phase": phase, "approverGroup": recorded_group.then_some("approvers")});
        let mut old = er(json!({"policy": "p", "reason": "r", "requester": requester}), status);
        old.spec.reviews = old_reviews;
        let mut new = old.clone();
        new.spec.reviews = new_reviews;
        let gs = if in_group { groups(&["approvers"]) } else { groups(&["devs"]) };
        let p = policy("p", json!({"type": "Role", "role": "admin", "approvalType": "Manual", "approverGroup": "approvers"}), true);
        let caller = Caller::new(who, &gs);
        let verdict = request_update(&caller, &old, &new, Some(&p), None);
        let changed = changed_review_keys(&old.spec, &new.spec);
        if verdict.is_allowed() && !changed.is_empty() {
            prop_assert!(changed.iter().all(|k| *k == who), "{changed:?} admitted for {who}");
            prop_assert_ne!(requester, Some(who));
            prop_assert!(in_group);
            prop_assert!(!matches!(phase, Some("Denied" | "Expired" | "Revoked")));
        }
        // The requester can never add or change an approval of their own.
        if let Some(r) = requester
            && let Some(review) = new.spec.reviews.get(r)
            && old.spec.reviews.get(r) != Some(review)
        {
            prop_assert!(!verdict.is_allowed());
        }
        // A refusal names the first check that failed.
        if let Some(refusal) = verdict.refusal() {
            let expected: &[Reason] = if changed.iter().any(|k| *k != who) {
                &[Reason::OthersReview]
            } else if requester == Some(who) {
                &[Reason::SelfReview]
            } else if !in_group {
                &[Reason::NotAnApprover]
            } else {
                &[Reason::PhaseFinal, Reason::NothingToRevoke, Reason::AlreadyApproved]
            };
            prop_assert!(expected.contains(&refusal.reason), "{refusal:?}, expected one of {expected:?}");
        }
    }
}

// ---------------------------------------------------------------- the guard

const NAMESPACES: [&str; 2] = ["prod", "dev"];

fn task_strategy() -> impl Strategy<Value = TaskSpec> {
    (
        proptest::sample::subsequence(
            vec![
                "create",
                "update",
                "patch",
                "delete",
                "deletecollection",
                "get",
                "*",
            ],
            1..3,
        ),
        proptest::sample::select(vec!["", "apps", "*"]),
        proptest::sample::subsequence(
            vec![
                "pods",
                "pods/exec",
                "pods/proxy",
                "deployments",
                "*",
                "*/exec",
            ],
            1..3,
        ),
        proptest::option::of(proptest::sample::subsequence(vec!["web", "db"], 0..2)),
    )
        .prop_map(|(verbs, group, resources, names)| TaskSpec {
            verbs: verbs.into_iter().map(str::to_owned).collect(),
            api_groups: vec![group.to_owned()],
            resources: resources.into_iter().map(str::to_owned).collect(),
            resource_names: names.map(|n| n.into_iter().map(str::to_owned).collect()),
        })
}

fn namespaces() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(NAMESPACES.to_vec(), 0..2)
        .prop_map(|n| n.into_iter().map(str::to_owned).collect())
}

fn policies() -> impl Strategy<Value = Vec<AccessPolicy>> {
    proptest::collection::vec((task_strategy(), namespaces(), any::<bool>()), 0..3).prop_map(|ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, (task, ns, accepted))| {
                policy(
                    &format!("p{i}"),
                    json!({"type": "Task", "task": task, "scope": {"namespaces": ns}, "approvalType": "Manual"}),
                    accepted,
                )
            })
            .collect()
    })
}

fn requests() -> impl Strategy<Value = Vec<ElevationRequest>> {
    proptest::collection::vec(
        (user(), 0..3usize, phase(), -2i64..3, task_strategy(), namespaces(), any::<bool>()),
        0..4,
    )
    .prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (who, p, phase, hours, task, ns, deleting))| {
                let until = now() + TimeDelta::hours(hours);
                let mut r = er(
                    json!({"policy": format!("p{p}"), "reason": "r", "requester": who}),
                    json!({"phase": phase, "grantedUntil": until, "decidedAt": now() - TimeDelta::hours(1)}),
                );
                r.metadata.name = Some(format!("r{i}"));
                if deleting {
                    r.metadata.deletion_timestamp = Some(crate::api::to_k8s_time(now()));
                }
                r.status.as_mut().unwrap().grant = Some(GrantScope {
                    policy_type: PolicyType::Task,
                    task: Some(task),
                    roles: Vec::new(),
                    namespaces: ns,
                    role_rules: std::collections::BTreeMap::new(),
                });
                r
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
struct Op {
    operation: AdmissionOperation,
    group: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    name: Option<&'static str>,
    namespace: Option<&'static str>,
    collection: bool,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let ordinary = (
        proptest::sample::select(vec![
            AdmissionOperation::Create,
            AdmissionOperation::Update,
            AdmissionOperation::Delete,
        ]),
        proptest::sample::select(vec![("", "pods"), ("apps", "deployments")]),
        proptest::option::of(proptest::sample::select(vec!["status", "scale"])),
        any::<bool>(),
    )
        .prop_map(
            |(operation, (group, resource), subresource, collection)| Op {
                collection: collection && operation == AdmissionOperation::Delete,
                operation,
                group,
                resource,
                subresource,
                name: None,
                namespace: None,
            },
        );
    let connect = proptest::sample::select(vec!["exec", "attach", "portforward", "proxy"])
        .prop_map(|sub| Op {
            operation: AdmissionOperation::Connect,
            group: "",
            resource: "pods",
            subresource: Some(sub),
            name: None,
            namespace: None,
            collection: false,
        });
    (
        prop_oneof![ordinary, connect],
        proptest::option::of(proptest::sample::select(vec!["web", "db", "other"])),
        proptest::option::of(proptest::sample::select(NAMESPACES.to_vec())),
    )
        .prop_map(|(mut op, name, ns)| {
            op.name = name;
            op.namespace = ns;
            op
        })
}

impl Op {
    fn as_guard(&self) -> GuardOperation<'static> {
        GuardOperation {
            operation: self.operation.clone(),
            api_group: self.group,
            resource: self.resource,
            subresource: self.subresource,
            name: self.name,
            namespace: self.namespace,
            collection: self.collection,
        }
    }
}

fn op_name(op: &AdmissionOperation) -> &'static str {
    match op {
        AdmissionOperation::Create => "CREATE",
        AdmissionOperation::Update => "UPDATE",
        AdmissionOperation::Delete => "DELETE",
        AdmissionOperation::Connect => "CONNECT",
    }
}

/// How the API server matches a webhook rule (`*`, `*/*`, `*/sub`, `res/*`).
fn rule_matches(
    rule: &k8s_openapi::api::admissionregistration::v1::RuleWithOperations,
    op: &Op,
) -> bool {
    let has =
        |list: &Option<Vec<String>>, x: &str| list.iter().flatten().any(|v| v == "*" || v == x);
    let resources = rule.resources.iter().flatten();
    let resource_ok = resources.clone().any(|r| match op.subresource {
        None => r == "*" || r == op.resource,
        Some(sub) => {
            r == "*/*"
                || *r == format!("{}/{sub}", op.resource)
                || *r == format!("*/{sub}")
                || *r == format!("{}/*", op.resource)
        }
    });
    has(&rule.operations, op_name(&op.operation)) && has(&rule.api_groups, op.group) && resource_ok
}

proptest! {
    #[test]
    fn the_guard_admits_a_person_only_with_a_covering_approved_unexpired_request(
        op in op_strategy(),
        who in user(),
        system in any::<bool>(),
        enabled in any::<bool>(),
        policies in policies(),
        requests in requests(),
    ) {
        let gs = groups(&["system:masters"]);
        let caller = Caller::new(who, &gs);
        let accounts: &[&str] = if system { &["alice"] } else { &[] };
        let control = control(enabled, accounts);
        let g = op.as_guard();
        let verdict = guard(&g, &caller, &policies, &requests, Some(&control), now());
        let guarded = policies.iter().any(|p| {
            // Accepted and not-yet-judged policies both guard (fail safe).
            p.spec.task.as_ref().is_some_and(|t| task_guards(t, &g))
                && (p.spec.namespaces().is_empty() || g.namespace.is_some_and(|ns| p.spec.namespaces().iter().any(|n| n == ns)))
        });
        match &verdict {
            GuardVerdict::NotGuarded => prop_assert!(!guarded),
            GuardVerdict::SystemAccount => prop_assert!(system && who == "alice" && guarded),
            GuardVerdict::ControlOff => prop_assert!(!enabled),
            GuardVerdict::Denied(m) => prop_assert!(guarded && enabled && m.reason == Reason::NoGrant && m.message.contains("is a privileged task")),
            GuardVerdict::Allowed { request } => {
                let r = requests.iter().find(|r| r.metadata.name.as_deref() == Some(request.as_str()));
                prop_assert!(r.is_some());
                let r = r.unwrap();
                let status = r.status.as_ref().unwrap();
                prop_assert_eq!(r.spec.requester.as_deref(), Some(who));
                prop_assert_eq!(status.phase, Some(crate::api::Phase::Approved));
                prop_assert!(status.granted_until.is_some_and(|u| now() < u));
                prop_assert!(r.metadata.deletion_timestamp.is_none());
                // The approved scope itself covers it (the current grant is within it) ...
                let grant = status.grant.as_ref().unwrap();
                prop_assert!(g.verbs().iter().any(|v| crate::grant::covers(grant, &g.as_grant_op(v))));
                // ... and the request's policy still exists.
                prop_assert!(policies.iter().any(|p| p.metadata.name.as_deref() == Some(r.spec.policy.as_str())));
            }
        }
        // Whatever the guard would gate, the webhook rules send to it.
        if guarded {
            let rules = guard_rules(&policies).rules;
            prop_assert!(rules.iter().any(|rule| rule_matches(rule, &op)), "{op:?} not sent by {rules:?}");
        }
    }
}

// ---------------------------------------------------------------- the envelope

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
        proptest::sample::select(vec![
            "CREATE", "UPDATE", "DELETE", "CONNECT", "Approve", "Revoke", "Pending", "Approved",
            "Task", "Role", "alice"
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(vec![
                    "uid",
                    "kind",
                    "resource",
                    "name",
                    "namespace",
                    "operation",
                    "userInfo",
                    "username",
                    "groups",
                    "object",
                    "oldObject",
                    "spec",
                    "status",
                    "metadata",
                    "reviews",
                    "policy",
                    "reason",
                    "requester",
                    "phase",
                    "type",
                    "task",
                    "verbs",
                    "x",
                ])
                .prop_map(str::to_owned),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Run everything the transport would on a body; must never panic.
fn exercise(body: &[u8]) {
    match parse_review(body) {
        Err(e) => {
            let _ = response_bytes(invalid(&e));
        }
        Ok(req) => {
            let p = policy(
                "p",
                json!({"type": "Role", "role": "admin", "approvalType": "Manual"}),
                true,
            );
            for pass in [Pass::Mutating, Pass::Validating] {
                let v = admit_elevation_request(
                    &req,
                    pass,
                    |_| Some(&p),
                    Some(&control(true, &[])),
                    OPERATOR,
                );
                let _ = response_bytes(respond(&req, v));
            }
            let v = admit_access_policy(&req, || 30);
            let _ = response_bytes(respond(&req, v));
            let op = GuardOperation::from_request(&req);
            let caller = Caller::from_user_info(&req.user_info);
            let verdict = guard(&op, &caller, [&p], [], None, now());
            let _ = response_bytes(respond_guard(&req, &verdict));
            let _ = execution(&op, &caller, now());
        }
    }
}

fn review_around(request: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_envelope_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise(&body);
    }

    #[test]
    fn the_envelope_never_panics_on_strings(body in ".{0,128}") {
        exercise(body.as_bytes());
    }

    #[test]
    fn the_envelope_never_panics_on_json(value in json_value()) {
        exercise(value.to_string().as_bytes());
        exercise(review_around(value).to_string().as_bytes());
    }

    #[test]
    fn the_envelope_never_panics_on_near_reviews(
        operation in proptest::sample::select(vec!["CREATE", "UPDATE", "DELETE", "CONNECT"]),
        object in json_value(),
        old in json_value(),
        spec in json_value(),
        user in json_value(),
    ) {
        let obj = |spec: Value| json!({"apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest", "metadata": {"name": "r"}, "spec": spec});
        for (o, oo) in [(object.clone(), old.clone()), (obj(spec.clone()), obj(json!({"policy": "p", "reason": "r"}))), (obj(spec), old)] {
            let request = json!({
                "uid": "u", "kind": {"group": "kubepam.io", "version": "v1alpha1", "kind": "ElevationRequest"},
                "resource": {"group": "kubepam.io", "version": "v1alpha1", "resource": "elevationrequests"},
                "operation": operation, "userInfo": {"username": "alice", "groups": ["approvers"]},
                "object": o, "oldObject": oo,
            });
            exercise(review_around(request).to_string().as_bytes());
        }
        let request = json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "exec",
            "operation": operation, "userInfo": user, "object": object,
        });
        exercise(review_around(request).to_string().as_bytes());
    }
}

// ---------------------------------------------------------------- arbitrary policy specs

/// Strings as people (and broken tools) write them: empty, blank, plausible, anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        1 => Just("  ".to_owned()),
        1 => Just("*".to_owned()),
        3 => "[a-z][-a-z0-9]{0,10}",
        2 => ".{0,12}",
        1 => "\\PC{0,300}",
    ]
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(), 0..4)
}

fn arbitrary_spec() -> impl Strategy<Value = crate::api::AccessPolicySpec> {
    let task = (texts(), texts(), texts(), proptest::option::of(texts())).prop_map(
        |(verbs, api_groups, resources, resource_names)| TaskSpec {
            verbs,
            api_groups,
            resources,
            resource_names,
        },
    );
    let max_duration = prop_oneof!["[0-9]{1,4}[hms]", "-?[0-9]{0,25}[hmsdx]?", ".{0,10}",];
    (
        (
            proptest::sample::select(vec![
                PolicyType::Task,
                PolicyType::Role,
                PolicyType::RoleGroup,
            ]),
            proptest::option::of(task),
            proptest::option::of(text()),
            texts(),
            proptest::option::of(texts()),
        ),
        (
            proptest::sample::select(vec![
                crate::api::ApprovalType::Auto,
                crate::api::ApprovalType::Manual,
            ]),
            proptest::option::of(text()),
            proptest::option::of(max_duration),
            proptest::option::of(prop_oneof![
                Just(0u32),
                Just(1),
                Just(u32::MAX),
                any::<u32>()
            ]),
        ),
    )
        .prop_map(
            |(
                (policy_type, task, role, roles, namespaces),
                (approval_type, approver_group, max_duration, required_approvals),
            )| {
                crate::api::AccessPolicySpec {
                    policy_type,
                    task,
                    role,
                    roles,
                    scope: namespaces.map(|namespaces| crate::api::Scope { namespaces }),
                    approval_type,
                    approver_group,
                    max_duration,
                    required_approvals,
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
            },
        )
}

/// The spec fields a refusal may name (as written in YAML).
const POLICY_FIELDS: [&str; 10] = [
    "type ",
    "task",
    "role",
    "roles",
    "task.verbs",
    "task.apiGroups",
    "task.resources",
    "scope.namespaces",
    "approverGroup",
    "maxDuration",
];

proptest! {
    #[test]
    fn every_refused_policy_spec_names_the_policy_and_the_field_to_fix(
        spec in arbitrary_spec(),
        name in prop_oneof![Just(String::new()), "[a-z][-a-z0-9]{0,20}"],
        live in 0usize..40,
    ) {
        let mut p = AccessPolicy::new(&name, spec);
        p.metadata.generation = Some(1);
        let shown = if name.is_empty() { "(unnamed)" } else { name.as_str() };
        let _ = policy_warnings(&p);
        let _ = guard_rules(std::slice::from_ref(&p));
        let created = policy_create(&p, live);
        let updated = policy_update(&p);
        if let Some(r) = created.refusal() {
            prop_assert!(r.message.contains(shown), "{} does not name {shown}", r.message);
            if live >= crate::policy_limit::POLICY_LIMIT {
                prop_assert_eq!(r.reason, Reason::PolicyLimit);
                prop_assert!(r.message.contains("at most 30") && r.message.contains(&live.to_string()));
            } else {
                prop_assert_eq!(Some(r), updated.refusal());
            }
        } else {
            prop_assert!(updated.is_allowed());
        }
        if let Some(r) = updated.refusal().filter(|r| r.reason != Reason::InvalidPolicy) {
            // Refused for what it would grant, or where: the message names the field to change.
            match r.reason {
                Reason::GrantsImpersonation | Reason::GrantsPrivilegeEscalation => prop_assert!(
                    r.message.contains(shown) && r.message.contains("set spec.allow"),
                    "{}", r.message
                ),
                Reason::KubepamNamespace => prop_assert!(
                    r.message.contains(shown) && r.message.contains("scope.namespaces"),
                    "{}", r.message
                ),
                other => prop_assert!(false, "unexpected {other:?}: {}", r.message),
            }
        } else if let Some(r) = updated.refusal() {
            let prefix = format!("AccessPolicy {shown}: ");
            let problem = r.message.strip_prefix(&prefix);
            prop_assert!(problem.is_some(), "{} does not start with {prefix:?}", r.message);
            let problem = problem.unwrap_or_default();
            prop_assert!(
                POLICY_FIELDS.iter().any(|f| problem.starts_with(f)) || problem.starts_with("requiredApprovals"),
                "{problem:?} does not start with the field to fix"
            );
            if problem.starts_with("maxDuration") {
                let quoted = format!("{:?}", p.spec.max_duration.as_deref().unwrap_or_default());
                prop_assert!(problem.contains(&quoted), "{problem:?}");
            }
        } else {
            // An admitted policy yields a grant scope for one of its namespaces, and the RBAC
            // builder either makes valid objects or names the namespace it cannot use.
            let ns = p.spec.namespaces().first().map(String::as_str);
            let scope = crate::lifecycle::scope::snapshot(shown, &p.spec, ns);
            prop_assert!(scope.is_ok(), "{scope:?}");
            let scope = scope.unwrap_or_else(|_| unreachable!());
            match crate::grant::desired_rbac("r", "id", "alice", &scope) {
                Ok(rbac) => prop_assert!(!rbac.is_empty()),
                Err(e) => prop_assert!(
                    matches!(&e, crate::grant::Error::InvalidNamespace { namespace, .. } if Some(namespace.as_str()) == ns),
                    "{e}"
                ),
            }
        }
        // The controller's view of it never panics either.
        let status = crate::policy_limit::policy_status(&p, live < 30, p.spec.role_names(), now());
        prop_assert!(status.policy_id.is_some_and(|id| !id.is_empty()));
    }
}
