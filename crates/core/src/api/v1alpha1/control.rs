//! `PrivilegedAccessControl`: the cluster-wide switch, a singleton named `default`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::notifications::Notifications;

/// The only name kubepam honours for a `PrivilegedAccessControl`.
pub const CONTROL_NAME: &str = "default";
/// Grant duration used when neither the request nor the control sets one.
pub const DEFAULT_DURATION: &str = "4h";
/// How long a request may wait for a decision when the control does not say.
pub const DEFAULT_REQUEST_TTL: &str = "24h";

/// Turns privileged access management on or off for the whole cluster and names the default
/// approvers (the seed's `Enable-ElevatedAccessControl`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[kube(
    group = "kubepam.io",
    version = "v1alpha1",
    kind = "PrivilegedAccessControl",
    plural = "privilegedaccesscontrols",
    shortname = "pac",
    category = "pam",
    status = "PrivilegedAccessControlStatus",
    derive = "PartialEq",
    doc = "Cluster-wide switch for kubepam; must be named 'default'.",
    validation = Rule::new("self.metadata.name == 'default'").message("PrivilegedAccessControl must be named 'default'; kubepam honours only that object"),
    printcolumn = r#"{"name":"Enabled","type":"boolean","jsonPath":".spec.enabled"}"#,
    printcolumn = r#"{"name":"Default Approvers","type":"string","jsonPath":".spec.defaultApproverGroup"}"#,
    printcolumn = r#"{"name":"Policies","type":"integer","description":"accepted AccessPolicies","jsonPath":".status.acceptedPolicies"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PrivilegedAccessControlSpec {
    /// Whether kubepam gates privileged access and makes new grants. With `false`, policies,
    /// requests and history are kept and active grants run to their end.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The Kubernetes group (as the API server authenticates it) whose members approve requests
    /// when a policy names no approver group.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("defaultApproverGroup must name the Kubernetes group whose members approve requests, e.g. pam-approvers"))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("defaultApproverGroup must be a group name without control characters (newlines, tabs)"))]
    pub default_approver_group: String,
    /// Usernames that privileged access never gates, e.g.
    /// `system:serviceaccount:argocd:argocd-application-controller`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new("self.all(a, a.trim() == a && !a.matches('[[:cntrl:]]'))").message("systemAccounts must hold usernames exactly as the API server reports them: no control characters (newlines, tabs) and no leading or trailing spaces"))]
    pub system_accounts: Vec<String>,
    /// Grant duration when a request sets none, e.g. `4h` or `1h30m` (default `4h`).
    #[serde(default = "default_duration", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("defaultDuration must be a number followed by s, m or h, e.g. 90s, 30m, 4h or 1h30m"))]
    pub default_duration: Option<String>,
    /// How long a request may stay Pending before it expires, e.g. `24h` (default `24h`).
    #[serde(
        rename = "requestTTL",
        default = "default_request_ttl",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("requestTTL must be a number followed by s, m or h, e.g. 90s, 30m, 24h"))]
    pub request_ttl: Option<String>,
    /// Whether kubepam deletes bindings (`RoleBinding`, `ClusterRoleBinding`) made outside kubepam
    /// that bind a role kubepam generated for a grant (a standing copy of a temporary right).
    /// They are always reported (Event and metric); with `true` they are also removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_foreign_bindings: bool,
    /// Whether kubepam deletes, when a grant ends, the objects that confer access that the
    /// requester made in its scope while it was in force (`status.lastingObjects` of the
    /// request). They are always reported (Event `PersistenceFound` and metric); with `true`
    /// they are also removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_persistence: bool,
    /// The most Pending requests one person may have at once, across all policies; no limit
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxPendingPerRequester must be at least 1, or be left out for no limit"))]
    #[schemars(extend("format" = "int32"))]
    pub max_pending_per_requester: Option<u32>,
    /// Mail and webhook notifications to approver groups and requesters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
    /// Where the audit trail (every step and every use, hash-chained and signed) is exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::AuditSettings>,
    /// How long an ended request is kept, e.g. `90d`; kept forever when absent. A request is
    /// removed only once every audit sink has received all its records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[dhms])+$')").message("retention must be a duration such as 90d, 720h or 30m"))]
    pub retention: Option<String>,
}

#[allow(clippy::unnecessary_wraps)]
fn default_duration() -> Option<String> {
    Some(DEFAULT_DURATION.to_owned())
}

#[allow(clippy::unnecessary_wraps)]
fn default_request_ttl() -> Option<String> {
    Some(DEFAULT_REQUEST_TTL.to_owned())
}

fn default_true() -> bool {
    true
}

/// Observed state of the control.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivilegedAccessControlStatus {
    /// Conditions, chiefly `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Number of AccessPolicies accepted (at most `policyLimit`).
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub accepted_policies: u32,
    /// Number of AccessPolicies refused, e.g. beyond the limit.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub refused_policies: u32,
    /// The most AccessPolicies kubepam accepts (30).
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub policy_limit: u32,
    /// Number of ElevationRequests currently Approved with a grant in place.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub active_grants: u32,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Who RBAC lets impersonate an identity kubepam trusts: a system account, a control-plane
    /// identity, a node, an approver group or kubepam's own service account. Admission sees the
    /// impersonated user only, so these subjects can pass the guard, decide or write status as
    /// those identities (`kubectl pam impersonators`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impersonators: Vec<ImpersonationRight>,
    /// The audit chain's head and how far each sink has received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::AuditStatus>,
}

/// One subject that may impersonate identities kubepam trusts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImpersonationRight {
    /// `User NAME`, `Group NAME` or `ServiceAccount NAMESPACE/NAME`.
    pub subject: String,
    /// What it may impersonate, e.g. `group pam-approvers`.
    pub targets: Vec<String>,
    /// The bindings that give it the right, e.g. `ClusterRoleBinding/NAME`.
    pub via: Vec<String>,
}
