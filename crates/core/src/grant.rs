//! Pure builders for the RBAC objects that carry a grant, and the matcher the Task guard uses.
//!
//! A grant is: for a `Task`, a generated ClusterRole `kubepam-task-<request id>`; then a
//! RoleBinding per namespace (or one ClusterRoleBinding when cluster-wide) for each ClusterRole,
//! binding the requester. Every object carries the labels in [`labels`], so the controller can
//! find whatever it made and tell it from everything else.
//!
//! Names come from the request id (the request's `metadata.uid`, chosen by the API server), never
//! from the request's name: a user who picks a request name cannot make kubepam's objects land on
//! an existing object's name (`kubepam-operator`, a binding of someone else).

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use kube::core::ObjectMeta;

use crate::api::{GrantScope, PolicyType, RbacObjectRef, TaskSpec};
use crate::util::short_hash;

/// Standard label naming the tool that manages an object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on kubepam's objects.
pub const MANAGER: &str = "kubepam";
/// Label holding the request's name (shortened with a hash past 63 characters).
pub const LABEL_REQUEST: &str = "kubepam.io/request";
/// Label holding the request's id.
pub const LABEL_REQUEST_ID: &str = "kubepam.io/request-id";
/// The RBAC API group.
/// Keeps an ElevationRequest until the RBAC objects of its grant are
/// deleted. Admission adds it when the request is created; the controller
/// adds it too if it is missing.
pub const FINALIZER: &str = "kubepam.io/grant-cleanup";
/// The API group of RBAC objects.
pub const RBAC_API_GROUP: &str = "rbac.authorization.k8s.io";
/// Longest object name Kubernetes accepts.
pub const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_VALUE_LEN: usize = 63;

/// Why no RBAC objects can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request has no requester to bind.
    #[error("request {request} has no requester to bind")]
    MissingRequester {
        /// The request's name.
        request: String,
    },
    /// The scope grants nothing.
    #[error("grant scope of request {request} names no rights")]
    EmptyScope {
        /// The request's name.
        request: String,
    },
    /// A namespace of the scope cannot hold a RoleBinding.
    #[error(
        "grant scope of request {request} names namespace {namespace:?}, which is not a \
         namespace name (lower-case letters, digits and '-', at most 63 characters)"
    )]
    InvalidNamespace {
        /// The request's name.
        request: String,
        /// The namespace as written.
        namespace: String,
    },
}

/// The RBAC objects that must exist for one grant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DesiredRbac {
    /// Generated ClusterRoles (a Task's rules).
    pub cluster_roles: Vec<ClusterRole>,
    /// Cluster-wide bindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// Per-namespace bindings.
    pub role_bindings: Vec<RoleBinding>,
}

impl DesiredRbac {
    /// References to every object, sorted, for `status.rbacObjects`.
    pub fn object_refs(&self) -> Vec<RbacObjectRef> {
        let mut refs: Vec<RbacObjectRef> = self
            .cluster_roles
            .iter()
            .map(|o| obj_ref("ClusterRole", &o.metadata))
            .chain(
                self.cluster_role_bindings
                    .iter()
                    .map(|o| obj_ref("ClusterRoleBinding", &o.metadata)),
            )
            .chain(
                self.role_bindings
                    .iter()
                    .map(|o| obj_ref("RoleBinding", &o.metadata)),
            )
            .collect();
        refs.sort();
        refs
    }

    /// Whether there is nothing to create.
    pub fn is_empty(&self) -> bool {
        self.cluster_roles.is_empty()
            && self.cluster_role_bindings.is_empty()
            && self.role_bindings.is_empty()
    }
}

fn obj_ref(kind: &str, meta: &ObjectMeta) -> RbacObjectRef {
    RbacObjectRef {
        kind: kind.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone(),
        uid: None,
    }
}

/// The labels on every object made for the request.
pub fn labels(request_name: &str, request_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_REQUEST.to_owned(), label_value(request_name)),
        (LABEL_REQUEST_ID.to_owned(), label_value(request_id)),
    ])
}

/// A label selector matching every object made for the request with this id.
pub fn selector(request_id: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGER},{LABEL_REQUEST_ID}={}",
        label_value(request_id)
    )
}

/// A label selector matching every object kubepam made for any request.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER}")
}

/// Name of the ClusterRole generated for a Task grant of the request with this id.
pub fn task_cluster_role_name(request_id: &str) -> String {
    object_name(&format!("kubepam-task-{request_id}"))
}

/// Name of the binding for one ClusterRole of the request with this id; `role` is `None` when
/// the grant has only one.
pub fn binding_name(request_id: &str, role: Option<&str>) -> String {
    match role {
        None => object_name(&format!("kubepam-grant-{request_id}")),
        Some(role) => object_name(&format!("kubepam-grant-{request_id}-{role}")),
    }
}

/// Whether `labels` mark an object as made by kubepam for the request with this id: the only
/// objects kubepam may apply over, edit or delete for that request.
pub fn owned_by(labels: Option<&BTreeMap<String, String>>, request_id: &str) -> bool {
    labels.is_some_and(|labels| {
        labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGER)
            && labels.get(LABEL_REQUEST_ID) == Some(&label_value(request_id))
    })
}

/// Build the desired RBAC objects for a grant.
pub fn desired_rbac(
    request_name: &str,
    request_id: &str,
    requester: &str,
    scope: &GrantScope,
) -> Result<DesiredRbac, Error> {
    if requester.trim().is_empty() {
        return Err(Error::MissingRequester {
            request: request_name.to_owned(),
        });
    }
    let empty = || Error::EmptyScope {
        request: request_name.to_owned(),
    };
    if let Some(ns) = scope.namespaces.iter().find(|ns| !is_dns_label(ns)) {
        return Err(Error::InvalidNamespace {
            request: request_name.to_owned(),
            namespace: ns.clone(),
        });
    }
    let labels = labels(request_name, request_id);
    let mut out = DesiredRbac::default();
    // (binding name, ClusterRole name) pairs.
    let bindings: Vec<(String, String)> = match scope.policy_type {
        PolicyType::Task => {
            let task = scope.task.as_ref().ok_or_else(empty)?;
            if task.verbs.is_empty() || task.resources.is_empty() || task.api_groups.is_empty() {
                return Err(empty());
            }
            let role_name = task_cluster_role_name(request_id);
            out.cluster_roles.push(ClusterRole {
                metadata: meta(&role_name, None, &labels),
                rules: Some(vec![policy_rule(task)]),
                aggregation_rule: None,
            });
            vec![(binding_name(request_id, None), role_name)]
        }
        PolicyType::Role | PolicyType::RoleGroup => {
            if scope.roles.is_empty() {
                return Err(empty());
            }
            let single = scope.policy_type == PolicyType::Role && scope.roles.len() == 1;
            scope
                .roles
                .iter()
                .map(|role| {
                    let name = binding_name(request_id, (!single).then_some(role.as_str()));
                    let Some(rules) = scope.role_rules.get(role) else {
                        // An approval made before rules were kept binds the role itself.
                        return (name, role.clone());
                    };
                    // The approval's copy of the role, under the binding's name: a later
                    // edit or aggregation of the named role never reaches the grant.
                    out.cluster_roles.push(ClusterRole {
                        metadata: meta(&name, None, &labels),
                        rules: Some(rules.iter().map(PolicyRule::from).collect()),
                        aggregation_rule: None,
                    });
                    (name.clone(), name)
                })
                .collect()
        }
    };
    let subjects = Some(vec![Subject {
        api_group: Some(RBAC_API_GROUP.to_owned()),
        kind: "User".to_owned(),
        name: requester.to_owned(),
        namespace: None,
    }]);
    for (binding, role) in bindings {
        let role_ref = RoleRef {
            api_group: Some(RBAC_API_GROUP.to_owned()),
            kind: "ClusterRole".to_owned(),
            name: role,
        };
        if scope.namespaces.is_empty() {
            out.cluster_role_bindings.push(ClusterRoleBinding {
                metadata: meta(&binding, None, &labels),
                role_ref,
                subjects: subjects.clone(),
            });
        } else {
            for ns in &scope.namespaces {
                out.role_bindings.push(RoleBinding {
                    metadata: meta(&binding, Some(ns), &labels),
                    role_ref: role_ref.clone(),
                    subjects: subjects.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn meta(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    }
}

/// The RBAC rule for a task (resource rules only; non-resource URLs are not supported).
pub fn policy_rule(task: &TaskSpec) -> PolicyRule {
    PolicyRule {
        api_groups: Some(task.api_groups.clone()),
        resources: Some(task.resources.clone()),
        verbs: task.verbs.clone(),
        resource_names: task.resource_names.clone().filter(|n| !n.is_empty()),
        non_resource_urls: None,
    }
}

fn hash_suffix(raw: &str) -> String {
    short_hash(raw.as_bytes())
}

/// Whether `s` has the shape of one DNS-1123 label: lower-case letters, digits and `-`,
/// starting and ending with a letter or digit.
fn is_label_shape(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Whether `s` is a DNS-1123 label of at most 63 characters (a namespace name).
fn is_dns_label(s: &str) -> bool {
    s.len() <= MAX_LABEL_VALUE_LEN && is_label_shape(s)
}

/// Whether `s` is a valid name for most Kubernetes objects (a lower-case DNS subdomain of at
/// most 253 characters), such as an AccessPolicy's. Anything else must never reach a URL.
pub fn is_object_name(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && s.split('.').all(is_label_shape)
}

/// A valid object name (lower-case DNS subdomain, at most 253 characters) for `raw`: `raw` itself
/// when already valid, else a cleaned, shortened form plus a hash of `raw`, so distinct inputs
/// keep distinct names.
pub fn object_name(raw: &str) -> String {
    // A DNS subdomain is dot-separated labels: a dot sits between two letters or digits.
    if is_object_name(raw) {
        return raw.to_owned();
    }
    let mut cleaned: Vec<char> = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME_LEN - 17)
        .collect();
    for i in 0..cleaned.len() {
        let between_alphanumerics = i > 0
            && cleaned[i - 1].is_ascii_alphanumeric()
            && cleaned.get(i + 1).is_some_and(char::is_ascii_alphanumeric);
        if cleaned[i] == '.' && !between_alphanumerics {
            cleaned[i] = '-';
        }
    }
    let cleaned: String = cleaned.into_iter().collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let suffix = hash_suffix(raw);
    if cleaned.is_empty() {
        suffix
    } else {
        format!("{cleaned}-{suffix}")
    }
}

/// A valid label value for `raw` (at most 63 characters), shortened with a hash when needed.
pub fn label_value(raw: &str) -> String {
    let valid = raw.len() <= MAX_LABEL_VALUE_LEN
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (raw.is_empty()
            || (raw.starts_with(|c: char| c.is_ascii_alphanumeric())
                && raw.ends_with(|c: char| c.is_ascii_alphanumeric())));
    if valid {
        return raw.to_owned();
    }
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL_VALUE_LEN - 17)
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let suffix = hash_suffix(raw);
    if cleaned.is_empty() {
        suffix
    } else {
        format!("{cleaned}-{suffix}")
    }
}

/// One API operation as admission sees it, for the Task guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation<'a> {
    /// The verb, e.g. `delete` (admission's `CONNECT` on `pods/exec` is the RBAC verb `create`).
    pub verb: &'a str,
    /// The API group, `""` for core.
    pub api_group: &'a str,
    /// The resource, e.g. `pods`.
    pub resource: &'a str,
    /// The subresource, e.g. `exec`.
    pub subresource: Option<&'a str>,
    /// The object's name, when known.
    pub name: Option<&'a str>,
    /// The namespace, `None` for cluster-scoped objects.
    pub namespace: Option<&'a str>,
}

impl Operation<'_> {
    /// `resource` or `resource/subresource`, as RBAC writes it.
    pub fn full_resource(&self) -> String {
        match self.subresource {
            Some(sub) if !sub.is_empty() => format!("{}/{sub}", self.resource),
            _ => self.resource.to_owned(),
        }
    }
}

/// Whether `task` describes `op` (ignoring namespaces), with RBAC's matching rules: `*` matches
/// any verb, group or resource; `*/sub` matches that subresource of any resource; absent
/// `resourceNames` match any name.
pub fn task_matches(task: &TaskSpec, op: &Operation<'_>) -> bool {
    crate::standing::rule_allows(&policy_rule(task), op)
}

/// Whether a Task grant covers `op`: the task matches and the namespace is in scope
/// (cluster-wide grants cover every namespace and cluster-scoped objects).
pub fn covers(scope: &GrantScope, op: &Operation<'_>) -> bool {
    let Some(task) = scope
        .task
        .as_ref()
        .filter(|_| scope.policy_type == PolicyType::Task)
    else {
        return false;
    };
    scope.covers_namespace(op.namespace) && task_matches(task, op)
}

#[cfg(test)]
mod tests;
