//! `can-i`: which accepted policy covers an operation, whether the caller holds an active
//! grant for it, and whether the API server would let it through (RBAC and kubepam's guard,
//! the guard decided by the same function the admission webhook runs).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::core::admission::Operation as AdmissionOperation;
use serde::Serialize;

use super::select::Me;
use super::task::Resource;
use kubepam_core::admission::Caller;
use kubepam_core::admission::guard::{GuardOperation, GuardVerdict, guard};
use kubepam_core::api::{
    AccessPolicy, ElevationRequest, GrantScope, Phase, PolicyType, PrivilegedAccessControl,
};
use kubepam_core::grant::{self, Operation};
use kubepam_core::lifecycle::{ControlView, PolicyView};
use kubepam_core::standing::rule_allows;

/// One operation, as `can-i` was asked about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The RBAC verb.
    pub verb: String,
    /// The resource.
    pub resource: Resource,
    /// The object's name, if given.
    pub name: Option<String>,
    /// The namespace; `None` for cluster-scoped objects or all namespaces.
    pub namespace: Option<String>,
}

impl Query {
    fn operation(&self) -> Operation<'_> {
        Operation {
            verb: &self.verb,
            api_group: &self.resource.group,
            resource: &self.resource.resource,
            subresource: self.resource.subresource.as_deref(),
            name: self.name.as_deref(),
            namespace: self.namespace.as_deref(),
        }
    }

    /// What admission would see for this verb, or `None` for reads and verbs that never reach
    /// admission (`get`, `list`, `watch`, `bind`, ...), which the guard cannot gate.
    pub fn admission(&self) -> Option<GuardOperation<'_>> {
        let connect = matches!(
            self.resource.subresource.as_deref(),
            Some("exec" | "attach" | "portforward" | "proxy")
        );
        let (operation, collection) = match self.verb.as_str() {
            "create" | "get" | "update" | "patch" | "delete" if connect => {
                (AdmissionOperation::Connect, false)
            }
            "create" => (AdmissionOperation::Create, false),
            "update" | "patch" => (AdmissionOperation::Update, false),
            "delete" => (AdmissionOperation::Delete, false),
            "deletecollection" => (AdmissionOperation::Delete, true),
            _ => return None,
        };
        Some(GuardOperation {
            operation,
            api_group: &self.resource.group,
            resource: &self.resource.resource,
            subresource: self.resource.subresource.as_deref(),
            name: self.name.as_deref(),
            namespace: self.namespace.as_deref(),
            collection,
        })
    }

    /// For messages: `delete deployments.apps "web" in namespace prod`.
    pub fn describe(&self) -> String {
        let mut out = format!("{} {}", self.verb, self.resource);
        if let Some(name) = &self.name {
            let _ = write!(out, " {name:?}");
        }
        match &self.namespace {
            Some(ns) => {
                let _ = write!(out, " in namespace {ns}");
            }
            None => out.push_str(" (cluster-wide)"),
        }
        out
    }
}

/// An accepted policy that covers the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoveringPolicy {
    /// The policy's name.
    pub name: String,
    /// `Task`, `Role` or `RoleGroup`.
    #[serde(rename = "type")]
    pub policy_type: String,
    /// `Manual` or `Auto`.
    pub approval_type: String,
    /// The approver group, resolved against the control.
    pub approver_group: Option<String>,
    /// The namespace to name in a request (the query's, when the policy is namespaced).
    pub namespace: Option<String>,
}

/// One of the caller's Approved requests whose grant covers the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveGrant {
    /// The ElevationRequest's name.
    pub request: String,
    /// When the grant ends.
    pub granted_until: DateTime<Utc>,
}

/// The answer to `can-i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// The operation, in words.
    pub operation: String,
    /// Accepted policies that cover it.
    pub policies: Vec<CoveringPolicy>,
    /// The caller's grants that cover it.
    pub grants: Vec<ActiveGrant>,
    /// What RBAC answers (`SelfSubjectAccessReview`).
    pub rbac_allowed: bool,
    /// Whether kubepam's guard would admit it; `None` when the verb never reaches admission.
    pub guard_allowed: Option<bool>,
    /// Why the guard answers as it does.
    pub guard: String,
    /// Whether the operation would go through.
    pub allowed: bool,
}

/// Whether an accepted `policy` covers `op`; Role policies are judged by the rules of their
/// ClusterRoles in `roles` (roles that could not be read cover nothing).
fn policy_covers(
    policy: &AccessPolicy,
    op: &Operation<'_>,
    roles: &BTreeMap<String, Vec<PolicyRule>>,
) -> bool {
    let PolicyView::Accepted(p) = PolicyView::from_policy(Some(policy)) else {
        return false;
    };
    let scope = GrantScope {
        policy_type: p.spec.policy_type,
        task: p.spec.task.clone(),
        roles: p.spec.role_names(),
        namespaces: p.spec.namespaces().to_vec(),
        role_rules: BTreeMap::new(),
    };
    match p.spec.policy_type {
        PolicyType::Task => grant::covers(&scope, op),
        PolicyType::Role | PolicyType::RoleGroup => {
            scope.covers_namespace(op.namespace)
                && scope.roles.iter().any(|r| {
                    roles
                        .get(r)
                        .is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, op)))
                })
        }
    }
}

/// Everything `can-i` reads, gathered by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Who asks.
    pub me: &'a Me,
    /// All AccessPolicies.
    pub policies: &'a [AccessPolicy],
    /// The rules of the ClusterRoles named by Role policies, where readable.
    pub roles: &'a BTreeMap<String, Vec<PolicyRule>>,
    /// The caller's own ElevationRequests.
    pub requests: &'a [ElevationRequest],
    /// The `default` control.
    pub control: Option<&'a PrivilegedAccessControl>,
    /// The `SelfSubjectAccessReview`'s answer.
    pub rbac_allowed: bool,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Answer `can-i` for `query`.
pub fn can_i(query: &Query, facts: &Facts<'_>) -> Answer {
    let op = query.operation();
    let control = ControlView::from_control(facts.control);
    let default_group = control.settings().map(|s| s.default_approver_group.clone());
    let mut policies: Vec<CoveringPolicy> = facts
        .policies
        .iter()
        .filter(|p| policy_covers(p, &op, facts.roles))
        .map(|p| CoveringPolicy {
            name: p.metadata.name.clone().unwrap_or_default(),
            policy_type: p.spec.policy_type.as_str().to_owned(),
            approval_type: p.spec.approval_type.as_str().to_owned(),
            approver_group: p.spec.approver_group.clone().or(default_group.clone()),
            namespace: query
                .namespace
                .clone()
                .filter(|_| !p.spec.namespaces().is_empty()),
        })
        .collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    let mut grants: Vec<ActiveGrant> = facts
        .requests
        .iter()
        .filter(|r| r.spec.requester.as_deref() == Some(facts.me.username.as_str()))
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            let until = status.granted_until?;
            // A booked window that has not opened grants nothing yet.
            let opened = status.granted_from.is_none_or(|from| from <= facts.now);
            let active = status.phase == Some(Phase::Approved) && opened && until > facts.now;
            let covers = status.grant.as_ref().is_some_and(|scope| {
                grant::covers(scope, &op)
                    || (scope.policy_type != PolicyType::Task
                        && facts
                            .policies
                            .iter()
                            .filter(|p| p.metadata.name.as_deref() == Some(r.spec.policy.as_str()))
                            .any(|p| policy_covers(p, &op, facts.roles)))
            });
            (active && covers).then(|| ActiveGrant {
                request: r.metadata.name.clone().unwrap_or_default(),
                granted_until: until,
            })
        })
        .collect();
    grants.sort_by(|a, b| a.request.cmp(&b.request));
    let caller = Caller::new(&facts.me.username, &facts.me.groups);
    let (guard_allowed, guard_text) = match query.admission() {
        None => (
            None,
            "never consulted: Kubernetes does not send this verb to admission, so only RBAC \
             decides"
                .to_owned(),
        ),
        Some(admission) => {
            let verdict = guard(
                &admission,
                &caller,
                facts.policies,
                facts.requests,
                facts.control,
                facts.now,
            );
            let text = match &verdict {
                GuardVerdict::NotGuarded => {
                    "not a privileged task: no accepted Task policy describes it".to_owned()
                }
                GuardVerdict::ControlOff => {
                    "off: the PrivilegedAccessControl is missing or disabled".to_owned()
                }
                GuardVerdict::SystemAccount => {
                    "lets you through: you are a system account".to_owned()
                }
                GuardVerdict::Allowed { request } => {
                    format!("lets you through with ElevationRequest {request}")
                }
                GuardVerdict::Denied(message) => format!("refuses it: {message}"),
            };
            (Some(verdict.is_allowed()), text)
        }
    };
    Answer {
        operation: query.describe(),
        allowed: facts.rbac_allowed && guard_allowed.unwrap_or(true),
        policies,
        grants,
        rbac_allowed: facts.rbac_allowed,
        guard_allowed,
        guard: guard_text,
    }
}

/// `can-i` in words, ending with `yes` or `no` as `kubectl auth can-i` does.
pub fn render(answer: &Answer, now: DateTime<Utc>) -> String {
    let mut out = format!("{}\n", answer.operation);
    if answer.policies.is_empty() {
        out.push_str("  policy:  none covers it\n");
    }
    for p in &answer.policies {
        let _ = writeln!(
            out,
            "  policy:  {} ({}, {} approval by {})",
            p.name,
            p.policy_type,
            p.approval_type,
            p.approver_group.as_deref().unwrap_or("<default>")
        );
    }
    match (answer.grants.is_empty(), answer.policies.first()) {
        (true, Some(p)) => {
            let ns = p
                .namespace
                .as_ref()
                .map(|n| format!(" --namespace {n}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  grant:   none; ask with: kubectl pam request {}{ns} --reason '...'",
                p.name
            );
        }
        (true, None) => out.push_str("  grant:   none\n"),
        (false, _) => {}
    }
    for g in &answer.grants {
        let _ = writeln!(
            out,
            "  grant:   {} (Approved, ends {})",
            g.request,
            super::render::relative(g.granted_until, now)
        );
    }
    let rbac = if answer.rbac_allowed {
        "allows it"
    } else {
        "does not allow it"
    };
    let verdict = if answer.allowed { "yes" } else { "no" };
    let _ = writeln!(
        out,
        "  rbac:    {rbac}\n  guard:   {}\n{verdict}",
        answer.guard
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::parse_resource;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap()
    }

    fn policy() -> AccessPolicy {
        crate::fixtures::seed_policy()
    }

    fn control() -> PrivilegedAccessControl {
        serde_yaml_ng::from_str(
            "apiVersion: kubepam.io/v1alpha1
kind: PrivilegedAccessControl
metadata: { name: default }
spec: { enabled: true, defaultApproverGroup: pam-approvers }
",
        )
        .unwrap()
    }

    fn approved(requester: &str) -> ElevationRequest {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: kubepam.io/v1alpha1
kind: ElevationRequest
metadata: {{ name: alice-x7k2p }}
spec: {{ policy: prod-delete-deployments, namespace: prod, reason: r, requester: {requester} }}
status:
  phase: Approved
  grantedUntil: '2025-01-01T12:28:00Z'
  grant:
    type: Task
    task: {{ verbs: [delete], apiGroups: [apps], resources: [deployments] }}
    namespaces: [prod]
"
        ))
        .unwrap()
    }

    fn query(verb: &str, resource: &str, ns: Option<&str>) -> Query {
        Query {
            verb: verb.into(),
            resource: parse_resource(resource).unwrap(),
            name: None,
            namespace: ns.map(Into::into),
        }
    }

    fn alice() -> Me {
        Me {
            username: "alice".into(),
            groups: vec!["developers".into()],
        }
    }

    fn ask(q: &Query, requests: &[ElevationRequest], rbac: bool) -> Answer {
        let policies = [policy()];
        let control = control();
        let roles = BTreeMap::new();
        can_i(
            q,
            &Facts {
                me: &alice(),
                policies: &policies,
                roles: &roles,
                requests,
                control: Some(&control),
                rbac_allowed: rbac,
                now: now(),
            },
        )
    }

    #[test]
    fn without_a_grant_the_policy_is_named_and_the_answer_is_no() {
        let answer = ask(
            &query("delete", "deployments.apps", Some("prod")),
            &[],
            true,
        );
        assert_eq!(answer.policies.len(), 1);
        assert_eq!(
            answer.policies[0].approver_group.as_deref(),
            Some("pam-approvers")
        );
        assert!(answer.grants.is_empty());
        assert_eq!(answer.guard_allowed, Some(false));
        assert!(!answer.allowed, "the guard refuses even with RBAC");
        let text = render(&answer, now());
        assert!(text.contains("kubectl pam request prod-delete-deployments --namespace prod"));
        assert!(text.ends_with("no\n"));
    }

    #[test]
    fn an_active_grant_makes_it_yes() {
        let answer = ask(
            &query("delete", "deployments.apps", Some("prod")),
            &[approved("alice")],
            true,
        );
        assert_eq!(answer.grants[0].request, "alice-x7k2p");
        assert_eq!(answer.guard_allowed, Some(true));
        assert!(answer.allowed);
        assert!(render(&answer, now()).contains("ends in 28m"));
        // Someone else's grant is not mine.
        let theirs = ask(
            &query("delete", "deployments.apps", Some("prod")),
            &[approved("bob")],
            true,
        );
        assert!(theirs.grants.is_empty() && !theirs.allowed);
    }

    #[test]
    fn a_booked_window_that_has_not_opened_grants_nothing_yet() {
        let mut booked = approved("alice");
        let status = booked.status.as_mut().unwrap();
        status.granted_from = Some(now() + chrono::TimeDelta::minutes(10));
        let answer = ask(
            &query("delete", "deployments.apps", Some("prod")),
            std::slice::from_ref(&booked),
            true,
        );
        assert!(answer.grants.is_empty(), "{answer:?}");
        booked.status.as_mut().unwrap().granted_from = Some(now());
        let answer = ask(
            &query("delete", "deployments.apps", Some("prod")),
            &[booked],
            true,
        );
        assert_eq!(answer.grants.len(), 1, "{answer:?}");
    }

    #[test]
    fn outside_the_policy_only_rbac_decides() {
        let other_ns = ask(&query("delete", "deployments.apps", Some("dev")), &[], true);
        assert!(other_ns.policies.is_empty());
        assert_eq!(other_ns.guard_allowed, Some(true));
        assert!(other_ns.allowed);
        let read = ask(&query("get", "deployments.apps", Some("prod")), &[], false);
        assert_eq!(read.guard_allowed, None);
        assert!(!read.allowed);
        let exec = query("create", "pods/exec", Some("prod"));
        assert_eq!(
            exec.admission().map(|a| a.operation),
            Some(AdmissionOperation::Connect)
        );
    }

    #[test]
    fn role_policies_cover_what_their_cluster_roles_grant() {
        let mut p = policy();
        p.spec.policy_type = PolicyType::Role;
        p.spec.task = None;
        p.spec.role = Some("deployer".into());
        let rule: PolicyRule = serde_json::from_value(serde_json::json!({
            "verbs": ["delete", "create"], "apiGroups": ["apps"], "resources": ["deployments"],
        }))
        .unwrap();
        let roles = BTreeMap::from([("deployer".to_owned(), vec![rule])]);
        let op = query("create", "deployments.apps", Some("prod"));
        assert!(policy_covers(&p, &op.operation(), &roles));
        assert!(!policy_covers(&p, &op.operation(), &BTreeMap::new()));
        let elsewhere = query("create", "deployments.apps", Some("dev"));
        assert!(!policy_covers(&p, &elsewhere.operation(), &roles));
    }

    proptest! {
        #[test]
        fn can_i_never_panics(verb in "[a-z*]{1,10}", resource in "[a-z]{1,10}(\\.[a-z]{1,5})?(/[a-z]{1,6})?", ns in proptest::option::of("[a-z]{1,6}"), rbac: bool) {
            let q = query(&verb, &resource, ns.as_deref());
            let answer = ask(&q, &[approved("alice")], rbac);
            prop_assert!(!answer.allowed || rbac, "RBAC must allow what is allowed");
            let _ = render(&answer, now());
        }
    }
}
