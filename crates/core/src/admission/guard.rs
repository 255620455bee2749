//! The Task guard (DESIGN §3.2): an operation that an accepted `Task` policy describes is
//! refused to anyone who is not a system account and holds no active, approved grant that
//! covers it, even a cluster-admin.
//!
//! # From admission operations to RBAC verbs
//!
//! Admission reports `CREATE`, `UPDATE`, `DELETE` or `CONNECT`, not the RBAC verb. An operation
//! is *guarded* when a task matches **any** of its candidate verbs, and *covered* when the grant
//! matches any of them:
//!
//! | admission | candidate RBAC verbs |
//! |---|---|
//! | `CREATE` | `create` (a server-side apply that creates is admitted as `CREATE` too) |
//! | `UPDATE` | `update`, `patch` (admission cannot tell a patch from an update) |
//! | `DELETE` of one object | `delete` |
//! | `DELETE` with no name in the request (a collection) | `deletecollection`, `delete` (each item then reaches validating webhooks with its own old object, whose name is used) |
//! | `CONNECT` to `*/proxy` | `get`, `create`, `update`, `patch`, `delete` (the HTTP method, which decides the RBAC verb, is not in the review) |
//! | `CONNECT` to anything else (`pods/exec`, `pods/attach`, `pods/portforward`) | `create`, `get` (API servers that authorize WebSocket upgrades as `get`) |
//!
//! `get`, `list` and `watch` on ordinary resources never reach admission, so reads cannot be
//! guarded; [`guard_rules`] reports such verbs. Nor can verbs admission never sees (`bind`,
//! `escalate`, `impersonate`, `use`, ...).
//!
//! When the operation's object name is unknown, a task limited by `resourceNames` still guards
//! it (the name could be one of them) but no grant limited by `resourceNames` covers it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;
use kube::Resource;
use kube::core::admission::{AdmissionRequest, Operation as AdmissionOperation};

use super::{Caller, Reason, Refusal};
use crate::api::{
    AccessPolicy, ElevationRequest, Execution, Phase, PolicyType, PrivilegedAccessControl, TaskSpec,
};
use crate::grant::{self, Operation};
use crate::lifecycle::{self, ControlView, PolicyView};

/// RBAC's and admission's wildcard.
pub(crate) const WILDCARD: &str = "*";
/// Subresources reached by `CONNECT`.
const CONNECT_SUBRESOURCES: [&str; 4] = ["exec", "attach", "portforward", "proxy"];
const PROXY_VERBS: &[&str] = &["get", "create", "update", "patch", "delete"];

/// One API call as the guard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardOperation<'a> {
    /// What admission reports.
    pub operation: AdmissionOperation,
    /// The API group, `""` for core.
    pub api_group: &'a str,
    /// The resource, e.g. `pods`.
    pub resource: &'a str,
    /// The subresource, e.g. `exec`.
    pub subresource: Option<&'a str>,
    /// The object's name, when known (from the request, else the object or old object).
    pub name: Option<&'a str>,
    /// The namespace; `None` for cluster-scoped objects.
    pub namespace: Option<&'a str>,
    /// Whether the request names no object (`DELETE` of a collection).
    pub collection: bool,
}

impl<'a> GuardOperation<'a> {
    /// Read the operation from an admission request.
    pub fn from_request<T: Resource>(req: &'a AdmissionRequest<T>) -> Self {
        let non_empty = |s: &'a str| (!s.is_empty()).then_some(s);
        let name = non_empty(&req.name)
            .or_else(|| req.object.as_ref().and_then(|o| o.meta().name.as_deref()))
            .or_else(|| {
                req.old_object
                    .as_ref()
                    .and_then(|o| o.meta().name.as_deref())
            })
            .filter(|n| !n.is_empty());
        Self {
            operation: req.operation.clone(),
            api_group: &req.resource.group,
            resource: &req.resource.resource,
            subresource: req.sub_resource.as_deref().and_then(non_empty),
            name,
            namespace: req.namespace.as_deref().and_then(non_empty),
            collection: req.name.is_empty() && req.operation == AdmissionOperation::Delete,
        }
    }

    /// The RBAC verbs this operation may stand for, the likeliest first.
    pub fn verbs(&self) -> &'static [&'static str] {
        match self.operation {
            AdmissionOperation::Create => &["create"],
            AdmissionOperation::Update => &["update", "patch"],
            AdmissionOperation::Delete if self.collection => &["deletecollection", "delete"],
            AdmissionOperation::Delete => &["delete"],
            AdmissionOperation::Connect if self.subresource == Some("proxy") => PROXY_VERBS,
            AdmissionOperation::Connect => &["create", "get"],
        }
    }

    /// `resource` or `resource/subresource`, as RBAC writes it.
    pub fn full_resource(&self) -> String {
        self.as_grant_op(self.verbs()[0]).full_resource()
    }

    /// The operation with one RBAC verb, for [`grant::covers`] and [`grant::task_matches`].
    pub fn as_grant_op(&self, verb: &'a str) -> Operation<'a> {
        Operation {
            verb,
            api_group: self.api_group,
            resource: self.resource,
            subresource: self.subresource,
            name: self.name,
            namespace: self.namespace,
        }
    }

    /// For messages: `delete deployments.apps "web" in namespace prod`.
    pub fn describe(&self) -> String {
        let mut out = format!("{} {}", self.verbs()[0], self.resource);
        if !self.api_group.is_empty() {
            out.push('.');
            out.push_str(self.api_group);
        }
        if let Some(sub) = self.subresource {
            out.push('/');
            out.push_str(sub);
        }
        if let Some(name) = self.name {
            let _ = write!(out, " {name:?}");
        }
        match self.namespace {
            Some(ns) => {
                let _ = write!(out, " in namespace {ns}");
            }
            None => out.push_str(" (cluster-scoped)"),
        }
        out
    }
}

/// The guard's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardVerdict {
    /// No accepted Task policy describes the operation.
    NotGuarded,
    /// A policy describes it, but there is no enabled `default` PrivilegedAccessControl, so
    /// nothing is gated.
    ControlOff,
    /// The caller is one of the control's system accounts.
    SystemAccount,
    /// The caller's approved request `request` covers it; record the use against it.
    Allowed {
        /// The ElevationRequest's name.
        request: String,
    },
    /// Refused, with a code and a message for the caller.
    Denied(Refusal),
}

impl GuardVerdict {
    /// Whether the operation is admitted.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Self::Denied(_))
    }

    /// The refusal, if refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Denied(r) => Some(r),
            Self::NotGuarded | Self::ControlOff | Self::SystemAccount | Self::Allowed { .. } => {
                None
            }
        }
    }
}

/// The audit records a grant may have waiting for the chain before the guard refuses its
/// uses: well below what a request keeps ([`crate::audit::trail::PENDING_LIMIT`]), so uses
/// admitted while the count is read late still find room.
pub const USES_WAITING_LIMIT: usize = crate::audit::trail::PENDING_LIMIT / 2;

/// Decide whether `caller` may perform `op`.
///
/// `policies` are all AccessPolicies (only accepted Task policies guard), `requests` the
/// ElevationRequests (only the caller's own, Approved and unexpired ones are read; their current
/// grant is recomputed with [`lifecycle::decide`], so a narrowed or deleted policy is honoured).
/// With the control missing or disabled nothing is gated, but a covering grant is still
/// reported so its use is recorded.
pub fn guard<'p, 'r>(
    op: &GuardOperation<'_>,
    caller: &Caller<'_>,
    policies: impl IntoIterator<Item = &'p AccessPolicy>,
    requests: impl IntoIterator<Item = &'r ElevationRequest>,
    control: Option<&PrivilegedAccessControl>,
    now: DateTime<Utc>,
) -> GuardVerdict {
    let policies: Vec<&AccessPolicy> = policies.into_iter().collect();
    let mut guarding: Vec<&AccessPolicy> = policies
        .iter()
        .copied()
        .filter(|p| policy_guards(p, op))
        .collect();
    if guarding.is_empty() {
        return GuardVerdict::NotGuarded;
    }
    guarding.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let control = ControlView::from_control(control);
    if control.is_system_account(caller.username) {
        return GuardVerdict::SystemAccount;
    }
    let mine: Vec<&ElevationRequest> = requests
        .into_iter()
        .filter(|r| {
            !caller.username.is_empty() && r.spec.requester.as_deref() == Some(caller.username)
        })
        .collect();
    let covering = mine
        .iter()
        .filter(|r| request_covers(r, op, &policies, &control, &mine, now))
        .filter_map(|r| r.metadata.name.as_deref())
        .min();
    let backlog = covering.and_then(|name| {
        let request = mine
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))?;
        let waiting = crate::audit::trail::pending(request.status.as_ref()).len();
        (waiting >= USES_WAITING_LIMIT).then_some((name, waiting))
    });
    if let (Some((request, waiting)), true) = (backlog, control.is_enabled()) {
        return GuardVerdict::Denied(Refusal::new(
            Reason::AuditBacklog,
            format!(
                "{} is a privileged task and your grant {request} covers it, but {waiting} \
                 audit records of that grant wait to be sealed onto the audit chain; every use \
                 must be on the record, so try again in a moment (if this lasts, kubepam's \
                 AuditExported condition on the control says why)",
                op.describe()
            ),
        ));
    }
    match (covering, control.is_enabled()) {
        (Some(request), _) => GuardVerdict::Allowed {
            request: request.to_owned(),
        },
        (None, false) => GuardVerdict::ControlOff,
        (None, true) => GuardVerdict::Denied(Refusal::new(
            Reason::NoGrant,
            denial(op, &guarding, &mine, now),
        )),
    }
}

/// What a policy guards, as (task, namespaces) pairs (empty namespaces: cluster-wide): for an
/// accepted Task policy, its task; for one not judged yet (created or edited a moment ago), its
/// new task and what its last accepted generation guarded (`status.guarded`). Both at once fail
/// safe: an edit never opens a gap between the old rules leaving and the new ones arriving.
pub fn guarded_scopes(policy: &AccessPolicy) -> Vec<(&TaskSpec, &[String])> {
    let new = || {
        policy
            .spec
            .task
            .as_ref()
            .filter(|_| policy.spec.policy_type == PolicyType::Task)
            .map(|task| (task, policy.spec.namespaces()))
    };
    match PolicyView::from_policy(Some(policy)) {
        PolicyView::Accepted(_) => new().into_iter().collect(),
        PolicyView::Unjudged(_) => {
            let old = policy
                .status
                .as_ref()
                .and_then(|s| s.guarded.as_ref())
                .map(|g| (&g.task, g.namespaces.as_slice()));
            new().into_iter().chain(old).collect()
        }
        PolicyView::Missing | PolicyView::Refused { .. } => Vec::new(),
    }
}

/// Whether an accepted (or not yet judged) Task policy describes `op`.
fn policy_guards(policy: &AccessPolicy, op: &GuardOperation<'_>) -> bool {
    guarded_scopes(policy)
        .into_iter()
        .any(|(task, namespaces)| {
            let ns_ok = namespaces.is_empty()
                || op
                    .namespace
                    .is_some_and(|ns| namespaces.iter().any(|n| n == ns));
            ns_ok && task_guards(task, op)
        })
}

/// Whether `task` describes `op` for some candidate verb; an unknown name counts as matching.
pub(crate) fn task_guards(task: &TaskSpec, op: &GuardOperation<'_>) -> bool {
    let unnamed;
    let task = if op.name.is_none() && task.resource_names.is_some() {
        unnamed = TaskSpec {
            resource_names: None,
            ..task.clone()
        };
        &unnamed
    } else {
        task
    };
    op.verbs()
        .iter()
        .any(|v| grant::task_matches(task, &op.as_grant_op(v)))
}

/// Whether the request is Approved, unexpired, and its current grant covers `op`.
fn request_covers(
    request: &ElevationRequest,
    op: &GuardOperation<'_>,
    policies: &[&AccessPolicy],
    control: &ControlView,
    mine: &[&ElevationRequest],
    now: DateTime<Utc>,
) -> bool {
    let Some(status) = &request.status else {
        return false;
    };
    if request.metadata.deletion_timestamp.is_some()
        || status.phase != Some(Phase::Approved)
        || status.granted_until.is_none_or(|until| now >= until)
    {
        return false;
    }
    let policy = policies
        .iter()
        .copied()
        .find(|p| p.metadata.name.as_deref() == Some(request.spec.policy.as_str()));
    let view = PolicyView::from_policy(policy);
    let related = lifecycle::Related {
        extended: lifecycle::extended_among(request, mine.iter().copied()),
        ..lifecycle::Related::default()
    };
    let decision = lifecycle::decide_with(request, &view, control, &related, now);
    decision.status.phase == Some(Phase::Approved)
        && decision.grant.is_some_and(|scope| {
            op.verbs()
                .iter()
                .any(|v| grant::covers(&scope, &op.as_grant_op(v)))
        })
}

fn denial(
    op: &GuardOperation<'_>,
    guarding: &[&AccessPolicy],
    mine: &[&ElevationRequest],
    now: DateTime<Utc>,
) -> String {
    let names: Vec<&str> = guarding
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let first = names.first().copied().unwrap_or("?");
    let which = if names.len() == 1 {
        format!("AccessPolicy {first}")
    } else {
        format!("AccessPolicies {}", names.join(", "))
    };
    let (flag, field) = match op.namespace {
        Some(ns) => (
            format!(" --namespace {ns}"),
            format!(", spec.namespace: {ns}"),
        ),
        None => (String::new(), String::new()),
    };
    let mut message = format!(
        "{} is a privileged task ({which}): request it with `kubectl pam request {first}{flag} \
         --reason ...` or create an ElevationRequest (spec.policy: {first}{field}), then wait \
         for approval",
        op.describe()
    );
    // Say what became of the caller's own requests for these policies, if any.
    let own = mine
        .iter()
        .filter(|r| names.contains(&r.spec.policy.as_str()))
        .filter(|r| r.metadata.deletion_timestamp.is_none());
    for r in own {
        let name = r.metadata.name.as_deref().unwrap_or("?");
        let status = r.status.as_ref();
        let note = match status.and_then(|s| s.phase) {
            None | Some(Phase::Pending) => {
                let group = status
                    .and_then(|s| s.approver_group.as_deref())
                    .map_or_else(|| "its approver group".to_owned(), |g| format!("group {g}"));
                format!(
                    "your ElevationRequest {name} is still Pending: a member of {group} must approve it"
                )
            }
            Some(Phase::Approved)
                if status
                    .and_then(|s| s.granted_until)
                    .is_some_and(|u| now < u) =>
            {
                format!(
                    "your ElevationRequest {name} is Approved but its grant does not cover this \
                     operation (another namespace or name, or the policy narrowed)"
                )
            }
            Some(_) => continue,
        };
        message.push_str("; ");
        message.push_str(&note);
    }
    message
}

/// One admitted use, for `status.lastExecutions` of the request that allowed it.
pub fn execution(op: &GuardOperation<'_>, caller: &Caller<'_>, now: DateTime<Utc>) -> Execution {
    Execution {
        time: now,
        verb: op.verbs()[0].to_owned(),
        resource: op.full_resource(),
        api_group: Some(op.api_group.to_owned()).filter(|g| !g.is_empty()),
        name: op.name.map(str::to_owned),
        namespace: op.namespace.map(str::to_owned),
        user: caller.username.to_owned(),
        unverified: false,
    }
}

/// A verb of an accepted Task policy that admission never sees, so the guard cannot gate it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnguardedVerb {
    /// The AccessPolicy's name.
    pub policy: String,
    /// The verb, e.g. `get`.
    pub verb: String,
}

impl UnguardedVerb {
    /// A sentence for a condition or a log line.
    pub fn message(&self) -> String {
        format!(
            "AccessPolicy {} grants {} but admission never sees it, so the guard cannot gate it; \
             RBAC alone limits it",
            self.policy, self.verb
        )
    }
}

/// The guard webhook's rules and what they cannot cover.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GuardRules {
    /// Rules that send the guard exactly the operations accepted Task policies describe
    /// (sorted, deduplicated; empty when there are none).
    pub rules: Vec<RuleWithOperations>,
    /// Verbs that cannot be guarded, sorted.
    pub unguarded: Vec<UnguardedVerb>,
}

/// How a task resource reaches admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResourceClass {
    /// Create, update and delete (`pods`, `deployments/scale`).
    Ordinary,
    /// Reached by `CONNECT`; `proxy` takes every HTTP method.
    Connect { proxy: bool },
    /// `*`: every resource and subresource.
    Any,
}

fn classify(resource: &str) -> ResourceClass {
    if resource == WILDCARD {
        return ResourceClass::Any;
    }
    match resource.split_once('/') {
        Some((_, sub)) if CONNECT_SUBRESOURCES.contains(&sub) => ResourceClass::Connect {
            proxy: sub == "proxy",
        },
        _ => ResourceClass::Ordinary,
    }
}

/// The admission operations in which an RBAC `verb` on `resource` shows up (the inverse of
/// [`GuardOperation::verbs`]).
fn verb_operations(verb: &str, resource: &str) -> BTreeSet<&'static str> {
    let ordinary = |verb: &str| -> &'static [&'static str] {
        match verb {
            WILDCARD => &["CREATE", "UPDATE", "DELETE"],
            "create" => &["CREATE"],
            "update" | "patch" => &["UPDATE"],
            "delete" | "deletecollection" => &["DELETE"],
            _ => &[],
        }
    };
    let connect = |verb: &str, proxy: bool| -> &'static [&'static str] {
        let hit = verb == WILDCARD
            || if proxy {
                PROXY_VERBS.contains(&verb)
            } else {
                matches!(verb, "create" | "get")
            };
        if hit { &["CONNECT"] } else { &[] }
    };
    let ops: Vec<&'static str> = match classify(resource) {
        ResourceClass::Ordinary => ordinary(verb).to_vec(),
        ResourceClass::Connect { proxy } => connect(verb, proxy).to_vec(),
        ResourceClass::Any => [ordinary(verb), connect(verb, true)].concat(),
    };
    ops.into_iter().collect()
}

/// Whether the guard can gate `verb` on every one of `resources` (reads of ordinary resources
/// and verbs such as `bind` or `impersonate` never reach admission).
pub(crate) fn verb_reaches_admission(verb: &str, resources: &[String]) -> bool {
    let read = matches!(verb, "get" | "list" | "watch");
    resources.iter().all(|r| {
        !verb_operations(verb, r).is_empty()
            && (!read || matches!(classify(r), ResourceClass::Connect { .. }))
    })
}

/// The guard webhook's rules for the Task policies among `policies` that guard (see
/// [`guarded_scopes`]).
///
/// Each rule keeps its policy's API groups; `*` in resources becomes `*` and `*/*` (admission's
/// `*` leaves out subresources, RBAC's does not); versions and scope are `*` (namespaces are
/// checked by the guard itself).
pub fn guard_rules<'p>(policies: impl IntoIterator<Item = &'p AccessPolicy>) -> GuardRules {
    // (operations, apiGroups) -> resources
    let mut grouped: BTreeMap<(Vec<String>, Vec<String>), BTreeSet<String>> = BTreeMap::new();
    let mut unguarded = BTreeSet::new();
    for (p, task) in policies.into_iter().flat_map(|p| {
        guarded_scopes(p)
            .into_iter()
            .map(move |(task, _)| (p, task))
    }) {
        let name = p.metadata.name.clone().unwrap_or_default();
        for verb in &task.verbs {
            if !verb_reaches_admission(verb, &task.resources) {
                unguarded.insert(UnguardedVerb {
                    policy: name.clone(),
                    verb: verb.clone(),
                });
            }
        }
        let mut groups = task.api_groups.clone();
        groups.sort();
        groups.dedup();
        for resource in &task.resources {
            let ops: BTreeSet<&str> = task
                .verbs
                .iter()
                .flat_map(|v| verb_operations(v, resource))
                .collect();
            if ops.is_empty() {
                continue;
            }
            let ops: Vec<String> = ops.into_iter().map(str::to_owned).collect();
            let entry = grouped.entry((ops, groups.clone())).or_default();
            if resource == WILDCARD {
                entry.insert(WILDCARD.to_owned());
                entry.insert("*/*".to_owned());
            } else {
                entry.insert(resource.clone());
            }
        }
    }
    let rules = grouped
        .into_iter()
        .map(|((operations, api_groups), resources)| RuleWithOperations {
            api_groups: Some(api_groups),
            api_versions: Some(vec![WILDCARD.to_owned()]),
            operations: Some(operations),
            resources: Some(resources.into_iter().collect()),
            scope: Some(WILDCARD.to_owned()),
        })
        .collect();
    GuardRules {
        rules,
        unguarded: unguarded.into_iter().collect(),
    }
}
