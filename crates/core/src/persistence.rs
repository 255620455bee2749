//! Access that outlives a grant (pure): which calls make it, and when the persistence guard
//! refuses one.
//!
//! A grant ends on time, but what its holder made with it may not: a binding to themselves, a
//! service account with a long token, a certificate, a webhook. While someone *acts through a
//! grant* — an active grant of theirs allows the call in its scope, and RBAC without kubepam's
//! grants ([`crate::standing`]) does not — kubepam refuses the calls that make lasting access,
//! unless the grant's policy says `allowPersistence: true`. A call they could make anyway is
//! never refused. Nothing in kubepam's own namespace is ever allowed through a grant.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::admission::{GuardOperation, Reason, Verdict, deny};
use crate::api::{ElevationRequestStatus, GrantScope, LASTING_LIMIT, LastingObject, PolicyType};
use crate::grant::{self, Operation};
use crate::standing::rule_allows;

/// A call that makes access outlive the grant it is made through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasting {
    /// Creating or changing a Role, ClusterRole, RoleBinding or ClusterRoleBinding.
    Rbac,
    /// A `serviceaccounts/token` request that outlives the grant; `seconds` as asked.
    Token {
        /// `spec.expirationSeconds` (the API server defaults it to an hour).
        seconds: i64,
        /// Bound to a Pod with the kubelet's 3607 seconds, which the API server extends to a
        /// year.
        extended: bool,
    },
    /// A Secret of type `kubernetes.io/service-account-token`: a token that never expires.
    TokenSecret,
    /// A `CertificateSigningRequest`, or its approval: a client certificate.
    CertificateRequest,
    /// An API service (admission configuration itself is never sent to webhooks: its writes
    /// are a key right, see [`crate::privilege`]): code that sees or changes calls.
    Admission,
    /// Anything in kubepam's own namespace, the namespace itself, kubepam's CRDs, its policies
    /// and its control.
    KubepamsOwn,
}

impl Lasting {
    /// What the call makes, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Rbac => "an RBAC role or binding",
            Self::Token { .. } => "a service account token longer than the grant",
            Self::TokenSecret => "a service account token Secret",
            Self::CertificateRequest => "a certificate signing request",
            Self::Admission => "an admission webhook, admission policy or API service",
            Self::KubepamsOwn => "a change of kubepam's own namespace, settings or API",
        }
    }
}

/// The kubelet's token lifetime, which the API server extends to a year for Pod-bound tokens
/// (`--service-account-extend-token-expiration`, on by default).
const EXTENDED_TOKEN_SECONDS: i64 = 3607;

/// What `op` (with `object`, the object admission decoded) makes that could outlast a grant;
/// `None` for everything else.
pub fn lasting(
    op: &GuardOperation<'_>,
    object: Option<&Value>,
    kubepam_namespace: &str,
) -> Option<Lasting> {
    use kube::core::admission::Operation as Admission;
    let kubepams = op.namespace == Some(kubepam_namespace)
        || (op.api_group.is_empty() && op.resource == "namespaces" && op.name == Some(kubepam_namespace))
        || (op.api_group == "apiextensions.k8s.io"
            && op.resource == "customresourcedefinitions"
            && op.name.is_some_and(|n| n.ends_with(".kubepam.io")))
        // kubepam's settings: system accounts, opt-ins, the switch itself.
        || (op.api_group == "kubepam.io"
            && matches!(op.resource, "accesspolicies" | "privilegedaccesscontrols"));
    if kubepams {
        return Some(Lasting::KubepamsOwn);
    }
    if !matches!(op.operation, Admission::Create | Admission::Update) {
        return None;
    }
    match (op.api_group, op.resource, op.subresource) {
        (
            grant::RBAC_API_GROUP,
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings",
            None,
        ) => Some(Lasting::Rbac),
        ("", "serviceaccounts", Some("token")) => {
            let spec = object.and_then(|o| o.get("spec"));
            let seconds = spec
                .and_then(|s| s.get("expirationSeconds"))
                .and_then(Value::as_i64)
                .unwrap_or(3600);
            let pod_bound = spec
                .and_then(|s| s.pointer("/boundObjectRef/kind"))
                .and_then(Value::as_str)
                == Some("Pod");
            Some(Lasting::Token {
                seconds,
                extended: pod_bound && seconds == EXTENDED_TOKEN_SECONDS,
            })
        }
        ("", "secrets", None)
            if object.and_then(|o| o.get("type")).and_then(Value::as_str)
                == Some("kubernetes.io/service-account-token") =>
        {
            Some(Lasting::TokenSecret)
        }
        ("certificates.k8s.io", "certificatesigningrequests", _) => {
            Some(Lasting::CertificateRequest)
        }
        ("admissionregistration.k8s.io", _, _) | ("apiregistration.k8s.io", "apiservices", _) => {
            Some(Lasting::Admission)
        }
        _ => None,
    }
}

/// One grant of the caller that is in force (its RBAC may still exist: past its end, until
/// kubepam has removed it), as the persistence guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct ActiveGrant<'a> {
    /// The request's name.
    pub request: &'a str,
    /// What it grants now.
    pub scope: &'a GrantScope,
    /// When it ends.
    pub until: DateTime<Utc>,
    /// Whether its policy says `allowPersistence: true`.
    pub allow_persistence: bool,
}

/// Whether `scope` allows `op`: the namespace is in scope (a cluster-wide grant covers every
/// namespace and cluster-scoped objects) and its rules allow the call. A Role grant approved
/// before rules were kept is taken to allow it.
pub fn scope_allows(scope: &GrantScope, op: &Operation<'_>) -> bool {
    match scope.policy_type {
        PolicyType::Task => grant::covers(scope, op),
        PolicyType::Role | PolicyType::RoleGroup => {
            scope.covers_namespace(op.namespace)
                && scope.roles.iter().any(|role| {
                    scope
                        .role_rules
                        .get(role)
                        .is_none_or(|rules| rules.iter().any(|rule| rule_allows(&rule.into(), op)))
                })
        }
    }
}

/// The persistence guard's answer for `op`, which makes `lasting`, by a caller whose active
/// grants are `grants`; `standing` says whether RBAC without kubepam's grants allows the call.
pub fn persistence_verdict(
    op: &GuardOperation<'_>,
    lasting: Lasting,
    grants: &[ActiveGrant<'_>],
    standing: bool,
    now: DateTime<Utc>,
) -> Verdict {
    let through: Vec<&ActiveGrant<'_>> = grants
        .iter()
        .filter(|g| {
            op.verbs()
                .iter()
                .any(|verb| scope_allows(g.scope, &op.as_grant_op(verb)))
        })
        .collect();
    if through.is_empty() || standing {
        return Verdict::Allow;
    }
    let allowed = match lasting {
        Lasting::KubepamsOwn => false,
        Lasting::Token { seconds, extended } => {
            // A token that ends with the grant outlives nothing.
            let ends_in = through
                .iter()
                .map(|g| (g.until - now).num_seconds())
                .max()
                .unwrap_or(0);
            (!extended && seconds <= ends_in) || through.iter().any(|g| g.allow_persistence)
        }
        _ => through.iter().any(|g| g.allow_persistence),
    };
    if allowed {
        return Verdict::Allow;
    }
    let mut requests: Vec<&str> = through.iter().map(|g| g.request).collect();
    requests.sort_unstable();
    requests.dedup();
    let advice = match lasting {
        Lasting::KubepamsOwn => {
            "no grant reaches kubepam's own namespace or API; ask an administrator".to_owned()
        }
        Lasting::Token { .. } => format!(
            "ask for a token that ends with the grant (spec.expirationSeconds at most {}), or \
             for a policy with allowPersistence: true",
            through
                .iter()
                .map(|g| (g.until - now).num_seconds())
                .max()
                .unwrap_or(0)
        ),
        _ => "ask for a policy with allowPersistence: true, or have someone with standing rights \
              make it"
            .to_owned(),
    };
    deny(
        Reason::PersistentAccess,
        format!(
            "{} would make {} that outlives your grant (request {}): only the grant allows it, \
             and access made through a grant ends with it; {advice}",
            op.describe(),
            lasting.describe(),
            requests.join(", ")
        ),
    )
}

/// Whether the creation `op` (of `object`) by the holder of a grant over `scope` makes an object
/// that confers access and is recorded on the request: RBAC roles and bindings, service accounts,
/// their token Secrets, certificate requests, API services, and pods that run as a
/// service account in `accounts` (those recorded on the request). Only creations in the grant's
/// scope count.
pub fn records(
    op: &GuardOperation<'_>,
    object: Option<&Value>,
    scope: &GrantScope,
    accounts: &[&str],
) -> bool {
    use kube::core::admission::Operation as Admission;
    if op.operation != Admission::Create || op.subresource.is_some() || op.name.is_none() {
        return false;
    }
    if !scope.covers_namespace(op.namespace) {
        return false;
    }
    let field = |pointer: &str| {
        object
            .and_then(|o| o.pointer(pointer))
            .and_then(Value::as_str)
    };
    match (op.api_group, op.resource) {
        (
            grant::RBAC_API_GROUP,
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings",
        )
        | ("", "serviceaccounts")
        | ("certificates.k8s.io", "certificatesigningrequests")
        | ("apiregistration.k8s.io", "apiservices") => true,
        ("", "secrets") => field("/type") == Some("kubernetes.io/service-account-token"),
        ("", "pods") => {
            field("/spec/serviceAccountName").is_some_and(|account| accounts.contains(&account))
        }
        _ => false,
    }
}

/// Adds `object` to `status.lastingObjects` (once; at most [`LASTING_LIMIT`]: admission refuses
/// what a full record could not hold, and the oldest, already handled, go first).
pub fn record_lasting(status: &mut ElevationRequestStatus, object: LastingObject) {
    let same = |o: &LastingObject| {
        o.api_group == object.api_group
            && o.resource == object.resource
            && o.namespace == object.namespace
            && o.name == object.name
    };
    if status.lasting_objects.iter().any(same) {
        return;
    }
    status.lasting_objects.push(object);
    let excess = status.lasting_objects.len().saturating_sub(LASTING_LIMIT);
    status.lasting_objects.drain(..excess);
}

#[cfg(test)]
mod tests;
