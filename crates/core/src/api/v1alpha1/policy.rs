//! `AccessPolicy`: what may be requested, in which scope, approved how and by whom.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::common::{ApprovalType, PolicyType, RoleRule, TaskSpec};

/// Condition type set on every AccessPolicy by the controller.
pub const CONDITION_ACCEPTED: &str = "Accepted";

/// A kind of privileged access that people may request (the seed's
/// `New-ElevatedAccessApprovalPolicy`). At most 30 are accepted per cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[kube(
    group = "kubepam.io",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    shortname = "ap",
    category = "pam",
    status = "AccessPolicyStatus",
    derive = "PartialEq",
    doc = "A kind of privileged access that people may request; at most 30 per cluster.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Approval","type":"string","jsonPath":".spec.approvalType"}"#,
    printcolumn = r#"{"name":"Approver Group","type":"string","jsonPath":".spec.approverGroup"}"#,
    printcolumn = r#"{"name":"Persistence","type":"boolean","jsonPath":".spec.allowPersistence"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.type != 'Task' || (has(self.task) && !has(self.role) && (!has(self.roles) || size(self.roles) == 0))").message("type Task needs task (verbs, apiGroups, resources) and neither role nor roles"),
    validation = Rule::new("self.type != 'Role' || (has(self.role) && !has(self.task) && (!has(self.roles) || size(self.roles) == 0))").message("type Role needs role (the name of a ClusterRole) and neither task nor roles"),
    validation = Rule::new("self.type != 'RoleGroup' || (has(self.roles) && size(self.roles) > 0 && !has(self.task) && !has(self.role))").message("type RoleGroup needs a non-empty roles list (ClusterRole names) and neither task nor role"),
    validation = Rule::new("self.approvalType == 'Manual' || !has(self.escalation) || size(self.escalation) == 0").message("escalation applies to approvalType Manual only: an Auto policy approves at once, so nobody is waited for")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// What the policy grants: `Task` (one operation), `Role` (one ClusterRole) or `RoleGroup`
    /// (several ClusterRoles).
    #[serde(rename = "type")]
    pub policy_type: PolicyType,
    /// For `type: Task`: the operation (verbs, apiGroups, resources, optional resourceNames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSpec>,
    /// For `type: Role`: the name of the ClusterRole granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self != ''").message("role must name a ClusterRole"))]
    pub role: Option<String>,
    /// For `type: RoleGroup`: the names of the ClusterRoles granted together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new("self.all(r, r != '')").message("roles must not contain empty names"))]
    pub roles: Vec<String>,
    /// Where the access holds; without it (or with no namespaces) the policy is cluster-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// `Manual` (approvers decide) or `Auto` (approved at once).
    pub approval_type: ApprovalType,
    /// The Kubernetes group whose members approve; the control's `defaultApproverGroup` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("approverGroup must name a Kubernetes group, or be left out to use the control's defaultApproverGroup"))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("approverGroup must be a group name without control characters (newlines, tabs)"))]
    pub approver_group: Option<String>,
    /// Longest duration a request may ask for, e.g. `8h`; no limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("maxDuration must be a number followed by s, m or h, e.g. 90s, 30m, 8h or 1h30m"))]
    pub max_duration: Option<String>,
    /// A regular expression the request's reason must match, e.g. `^(INC|CHG)-[0-9]+` for a
    /// ticket number (searched anywhere unless anchored; RE2 syntax). A request whose reason
    /// does not match is refused at creation, with `reasonHint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("reasonPattern must be one line without control characters; write \\n or \\t to match them"))]
    pub reason_pattern: Option<String>,
    /// What the reason must contain, in words, shown when a reason does not match
    /// `reasonPattern`, e.g. `an incident or change number, e.g. INC-1234`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("reasonHint must be one line of text without control characters"))]
    pub reason_hint: Option<String>,
    /// How far ahead of its submission a request may book its window (`spec.startAt`), e.g.
    /// `168h`; no limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("maxScheduleAhead must be a number followed by s, m or h, e.g. 24h or 168h"))]
    pub max_schedule_ahead: Option<String>,
    /// How grants of this policy may be extended (`spec.extends`); extensions are approved like
    /// any request of the policy, without limits, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionPolicy>,
    /// The most requests of this policy one person may hold open (Pending plus Approved) at
    /// once; no limit when absent. Extensions do not count: `extension.maxExtensions` bounds
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxOpenPerRequester must be at least 1, or be left out for no limit"))]
    #[schemars(extend("format" = "int32"))]
    pub max_open_per_requester: Option<u32>,
    /// Emergency access ("break glass"): members of these groups may file a request with
    /// `spec.emergency: true`, approved at once without an approver and reviewed afterwards.
    /// Refused when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
    /// For `Manual` approval: further groups that may also decide when nobody has decided for
    /// a while, each from `after` past submission (in order of `after`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub escalation: Vec<EscalationStep>,
    /// For `Manual` approval: how many distinct approvers must approve (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("requiredApprovals must be at least 1"))]
    #[schemars(extend("format" = "int32"))]
    pub required_approvals: Option<u32>,
    /// Whether the policy may grant `impersonate` on users, groups or service accounts. Whoever
    /// holds such a grant can act as anyone, kubepam's approvers and kubepam itself included, so
    /// such a policy is refused unless this says yes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_impersonation: bool,
    /// Whether the policy may grant rights that let their holder give themselves more:
    /// `escalate` or `bind` on roles, wildcard verbs or resources, `cluster-admin`,
    /// `serviceaccounts/token`, or `secrets` in every namespace. Such a policy is refused unless
    /// this says yes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_privilege_escalation: bool,
    /// Whether someone acting through a grant of this policy may make access that outlives the
    /// grant: RBAC roles and bindings, service account tokens longer than the grant or token
    /// Secrets, certificate signing requests, webhook configurations and admission policies.
    /// Refused without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_persistence: bool,
}

/// Who may use emergency access under a policy, and for how long.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlass {
    /// The Kubernetes groups whose members may file an emergency request (e.g. `oncall`).
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new("self.all(g, g.trim() != '' && !g.matches('[[:cntrl:]]'))").message("breakGlass.groups must name Kubernetes groups, without control characters (newlines, tabs)"))]
    #[x_kube(validation = Rule::new("self.all(g, !(g in ['system:authenticated', 'system:unauthenticated', 'system:serviceaccounts']))").message("breakGlass.groups must name the people on call, not a group every user or service account is in"))]
    pub groups: Vec<String>,
    /// The longest an emergency grant may last, e.g. `1h`; a request without a duration gets
    /// this or the control's `defaultDuration`, whichever is shorter.
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("breakGlass.maxDuration must be a number followed by s, m or h, e.g. 30m or 1h"))]
    pub max_duration: String,
    /// How soon after the grant an approver must confirm or reject it (default `24h`); past
    /// that, the request says `ReviewOverdue` and the approvers are reminded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("breakGlass.reviewWithin must be a number followed by s, m or h, e.g. 24h"))]
    pub review_within: Option<String>,
}

/// One step of escalation: a further group that may decide once a request has waited `after`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EscalationStep {
    /// How long after submission the step opens, e.g. `30m`.
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("escalation[].after must be a number followed by s, m or h, e.g. 30m"))]
    pub after: String,
    /// The Kubernetes group whose members may also decide from then on, and are notified.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.trim() != '' && !self.matches('[[:cntrl:]]')").message("escalation[].approverGroup must name a Kubernetes group, without control characters (newlines, tabs)"))]
    #[x_kube(validation = Rule::new("!(self in ['system:authenticated', 'system:unauthenticated', 'system:serviceaccounts'])").message("escalation[].approverGroup must name approvers, not a group every user or service account is in"))]
    pub approver_group: String,
}

/// How grants of a policy may be extended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionPolicy {
    /// How an extension is approved; the policy's `approvalType` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_type: Option<ApprovalType>,
    /// The most extensions of one grant (an extension of an extension counts again); 0 allows
    /// none. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_extensions: Option<u32>,
    /// The longest a grant may last with all its extensions, from its first opening to the end
    /// of its last extension, e.g. `12h`. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("maxTotal must be a number followed by s, m or h, e.g. 12h"))]
    pub max_total: Option<String>,
}

/// Namespaces a policy is limited to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// Namespaces where the access holds; a request must name one of them. Empty means
    /// cluster-wide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 63)))]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("scope.namespaces must hold namespace names (lowercase letters, digits and '-', e.g. prod)"))]
    pub namespaces: Vec<String>,
}

/// Observed state of an AccessPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// `Accepted` True, or False with a reason such as `PolicyLimitExceeded` or `RoleNotFound`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The policy's identity (a UUID), as the seed's policy GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ClusterRoles named by the policy that do not exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_roles: Vec<String>,
    /// For a Task policy, what its last accepted generation guards: while a newer generation
    /// waits to be accepted, the guard refuses what this describes as well (it never opens
    /// during an edit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarded: Option<GuardedScope>,
    /// For a Role or RoleGroup policy: the rules of each named ClusterRole as last judged. An
    /// approval grants these (not whatever the role says later).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_rules: BTreeMap<String, Vec<RoleRule>>,
}

/// The operation and namespaces a Task policy's accepted generation guards.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardedScope {
    /// The task.
    pub task: TaskSpec,
    /// Its namespaces; empty means cluster-wide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

impl AccessPolicySpec {
    /// The namespaces the policy is limited to; empty means cluster-wide.
    pub fn namespaces(&self) -> &[String] {
        self.scope.as_ref().map_or(&[], |s| s.namespaces.as_slice())
    }

    /// The ClusterRoles the policy grants (empty for a Task policy).
    pub fn role_names(&self) -> Vec<String> {
        match self.policy_type {
            PolicyType::Task => Vec::new(),
            PolicyType::Role => self.role.iter().cloned().collect(),
            PolicyType::RoleGroup => self.roles.clone(),
        }
    }
}
