//! `ElevationRequest`: one person's request for one policy's rights, for a reason and a time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ApprovalType, GrantScope};
use super::notifications::Notification;

/// The most history entries kept in `status.history`; older ones are dropped.
pub const HISTORY_LIMIT: usize = 50;
/// The most notifications kept in `status.notifications`; the oldest delivered go first.
pub const NOTIFICATION_LIMIT: usize = 40;
/// The most executions kept in `status.lastExecutions`.
pub const EXECUTION_LIMIT: usize = 20;

/// A request for the rights of one AccessPolicy (the seed's `New-ElevatedAccessRequest`).
/// Everything in spec except `reviews` is fixed at creation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[kube(
    group = "kubepam.io",
    version = "v1alpha1",
    kind = "ElevationRequest",
    plural = "elevationrequests",
    shortname = "er",
    category = "pam",
    status = "ElevationRequestStatus",
    derive = "PartialEq",
    doc = "A request for the rights of one AccessPolicy, for a reason and a time.",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Requester","type":"string","jsonPath":".spec.requester"}"#,
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.namespace"}"#,
    printcolumn = r#"{"name":"Starts","type":"string","description":"when a booked window opens, while it has not","jsonPath":".status.startsAt"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","description":"grantedUntil while Approved, expiresAt while Pending","jsonPath":".status.deadline"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
// Field-level rules compare each field with its old value; this one catches an
// optional field being added or removed after creation.
#[x_kube(validation = Rule::new(
    "has(self.namespace) == has(oldSelf.namespace) && has(self.duration) == has(oldSelf.duration) \
     && has(self.requester) == has(oldSelf.requester) && has(self.startAt) == has(oldSelf.startAt) \
     && has(self.extends) == has(oldSelf.extends) \
     && (has(self.emergency) && self.emergency) == (has(oldSelf.emergency) && oldSelf.emergency) \
     && has(self.breakGlassGroup) == has(oldSelf.breakGlassGroup)"
).message("spec is immutable except reviews; create a new ElevationRequest instead"))]
#[x_kube(validation = Rule::new("!has(self.startAt) || !has(self.extends)").message(
    "an extension starts where the grant it extends ends: leave out startAt when setting extends"
))]
#[x_kube(validation = Rule::new(
    "!has(self.emergency) || !self.emergency || (!has(self.startAt) && !has(self.extends))"
).message(
    "an emergency request is for access now: leave out startAt and extends (file a new emergency request when it ends)"
))]
#[x_kube(validation = Rule::new(
    "!has(self.breakGlassGroup) || (has(self.emergency) && self.emergency)"
).message("breakGlassGroup names the group under which an emergency request breaks the glass: set emergency: true, or leave it out"))]
#[serde(rename_all = "camelCase")]
pub struct ElevationRequestSpec {
    /// The name of the AccessPolicy whose rights are requested.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self != ''").message("policy must name an AccessPolicy (kubectl get accesspolicies)"))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("policy must be the name of an AccessPolicy: lower-case letters, digits, '-' and '.', e.g. prod-delete-deployments (kubectl get accesspolicies)"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    pub policy: String,
    /// The namespace the access is wanted in. Required when the policy lists namespaces (must be
    /// one of them); for a cluster-wide policy it narrows the grant to this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("namespace must be a namespace name (lowercase letters, digits and '-', e.g. prod), or be left out"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    pub namespace: Option<String>,
    /// Why the access is needed; recorded for audit.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("reason must say why the access is needed, e.g. a ticket number"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    pub reason: String,
    /// How long the access should last once approved, e.g. `4h` or `1h30m` (the control's
    /// `defaultDuration` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("duration must be a number followed by s, m or h, e.g. 90s, 30m, 4h or 1h30m"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    pub duration: Option<String>,
    /// The authenticated user who created the request; set or checked by admission. A request
    /// can never be made in someone else's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("requester must be a username without control characters (newlines, tabs)"))]
    pub requester: Option<String>,
    /// When the access should start, in RFC 3339 (e.g. `2026-12-01T09:00:00Z`): a booked
    /// window from `startAt` to `startAt` plus the duration. Approval may come before it; the
    /// grant exists only inside the window (from the approval, if that is later). Now when
    /// absent. The policy's `maxScheduleAhead` caps how far ahead it may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    pub start_at: Option<DateTime<Utc>>,
    /// The name of your own Approved ElevationRequest whose grant this one continues (same
    /// policy and namespace). Once approved, the grant runs on from the old end for `duration`
    /// with no gap (`kubectl pam extend NAME --by 2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("extends must be the name of your own Approved ElevationRequest (kubectl get elevationrequests)"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    pub extends: Option<String>,
    /// Break glass: access now, without an approver, for a member of the policy's
    /// `breakGlass.groups`. It is approved at once, loudly (a Warning Event and notifications to
    /// the approvers), lasts at most `breakGlass.maxDuration`, and an approver must confirm or
    /// reject it afterwards (`kubectl pam confirm|reject NAME`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    pub emergency: bool,
    /// For an emergency request: the group of the policy's `breakGlass.groups` the requester
    /// breaks the glass as. Set by admission from the requester's own groups (it can only be
    /// one of them), so kubepam knows the requester was entitled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable except reviews; create a new ElevationRequest instead"))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("breakGlassGroup must be a group name without control characters (newlines, tabs)"))]
    pub break_glass_group: Option<String>,
    /// Decisions keyed by reviewer username; each approver writes only their own entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 512 && !k.matches('[[:cntrl:]]'))").message("reviews must be keyed by the reviewer's username (at most 512 characters, no control characters such as newlines)"))]
    pub reviews: BTreeMap<String, Review>,
}

/// One reviewer's decision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// `Approve`, `Deny`, `Revoke` (ends an approved grant early), `Release` (the requester's
    /// own, under their own username: "I'm done", ends their grant at once), or, for an
    /// emergency request, the review afterwards: `Confirm` (it was justified) or `Reject` (it was
    /// not; an active grant ends at once).
    pub decision: ReviewDecision,
    /// Free text recorded in the request's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("comment must be one line of text without control characters (newlines, tabs)"))]
    pub comment: Option<String>,
}

/// A reviewer's decision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ReviewDecision {
    /// Agree to the request.
    Approve,
    /// Refuse the request.
    Deny,
    /// Withdraw an approval that is in force.
    Revoke,
    /// The requester ends their own grant early; nobody else may use it.
    Release,
    /// An approver's review of an emergency grant: it was justified.
    Confirm,
    /// An approver's review of an emergency grant: it was not justified; an active grant ends
    /// at once.
    Reject,
}

impl ReviewDecision {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "Approve",
            Self::Deny => "Deny",
            Self::Revoke => "Revoke",
            Self::Release => "Release",
            Self::Confirm => "Confirm",
            Self::Reject => "Reject",
        }
    }
}

/// The state of a request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Waiting for a decision.
    Pending,
    /// Approved; the grant holds until `grantedUntil`.
    Approved,
    /// Refused (final).
    Denied,
    /// Not decided in time, or the grant window ended (final).
    Expired,
    /// An approval withdrawn early (final).
    Revoked,
}

impl Phase {
    /// Whether the phase can never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Denied | Self::Expired | Self::Revoked)
    }

    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Approved => "Approved",
            Self::Denied => "Denied",
            Self::Expired => "Expired",
            Self::Revoked => "Revoked",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of a request. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElevationRequestStatus {
    /// Pending, Approved, Denied, Expired or Revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The request's identity (a UUID), as the seed's request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The group whose members may decide (the policy's, else the control's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_group: Option<String>,
    /// The groups whose members may decide now: the approver group, and each escalation
    /// group whose step has opened. Anyone RBAC allows the verb `approve` on
    /// `accesspolicies/<policy>` may decide too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approver_groups: Vec<String>,
    /// When the next escalation step opens, while the request waits for a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalates_at: Option<DateTime<Utc>>,
    /// For an emergency grant: when its review (`Confirm` or `Reject`) is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_due_at: Option<DateTime<Utc>>,
    /// `Manual` or `Auto`, from the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_type: Option<ApprovalType>,
    /// Distinct approvals needed for a Manual policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub required_approvals: Option<u32>,
    /// When the request was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
    /// When a Pending request expires if nobody decides (submittedAt + requestTTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the phase ends by itself: expiresAt while Pending, grantedUntil while Approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// When the request was approved, denied or otherwise decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// Who decided: the approvers, the denier or revoker, or `kubepam`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decided_by: Vec<String>,
    /// When the grant opens: the approval, or the booked window's start if that is later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_from: Option<DateTime<Utc>>,
    /// When the grant ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_until: Option<DateTime<Utc>>,
    /// When a booked window (`spec.startAt`) opens, while it has not yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    /// For an extension: the chain it continues, as recorded at approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionRecord>,
    /// What the approval covered; the grant never goes beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantScope>,
    /// The RBAC objects kubepam made for the grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rbac_objects: Vec<RbacObjectRef>,
    /// How many uses of the granted task admission has recorded.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub execution_count: u64,
    /// The most recent recorded uses, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_executions: Vec<Execution>,
    /// Objects that confer access, made by the requester in the grant's scope while it was in
    /// force (bindings, roles, service accounts and their token Secrets, pods running as such an
    /// account, certificate requests, API services), at most 100. Reported when the
    /// grant ends (Event `PersistenceFound`), and removed with the control's
    /// `removePersistence: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lasting_objects: Vec<LastingObject>,
    /// Conditions, chiefly `Approved`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Notifications owed for the request and how their delivery went (the outbox), at most
    /// 40 entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
    /// Every transition, oldest first, at most 50 entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// This request's audit records not yet on the chain, and how many it has made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::RequestAudit>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl ElevationRequestStatus {
    /// The groups whose members may decide now, as recorded: `approverGroups`, else (a request
    /// recorded before escalation existed) `approverGroup`; empty before the first record.
    pub fn deciding_groups(&self) -> Vec<&str> {
        if self.approver_groups.is_empty() {
            self.approver_group.as_deref().into_iter().collect()
        } else {
            self.approver_groups.iter().map(String::as_str).collect()
        }
    }

    /// When a booked window opens, for a grant approved before its window: `grantedFrom` when
    /// it is after `decidedAt`. A grant that opened at its approval has none, so a replica whose
    /// clock is a little behind the one that approved never takes it for one still to open.
    pub fn booked_opening(&self) -> Option<DateTime<Utc>> {
        let opens = self.granted_from?;
        (opens > self.decided_at?).then_some(opens)
    }
}

/// Where an extension sits in its chain of grants.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRecord {
    /// The request it extends.
    pub extends: String,
    /// 1 for the first extension of a grant, 2 for an extension of that, and so on.
    #[schemars(extend("format" = "int32"))]
    pub number: u32,
    /// When the first grant of the chain opened: the total time runs from here.
    pub chain_start: DateTime<Utc>,
    /// When the grant it extends ends (this one's access continues from there).
    pub continues_from: DateTime<Utc>,
}

/// A reference to an RBAC object made for a grant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RbacObjectRef {
    /// `ClusterRole`, `ClusterRoleBinding` or `RoleBinding`.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The object's namespace, for a RoleBinding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's uid, once kubepam made it: the object is kubepam's to
    /// delete whatever its labels say later, and no other object of the name is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl RbacObjectRef {
    /// Whether both name the same object (kind, name and namespace; uids aside).
    pub fn same_object(&self, other: &Self) -> bool {
        self.kind == other.kind && self.name == other.name && self.namespace == other.namespace
    }
}

/// Whether two lists name the same objects (uids aside).
pub fn same_objects(a: &[RbacObjectRef], b: &[RbacObjectRef]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x.same_object(y)))
}

/// One use of the granted rights, as admission recorded it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// When the API server admitted the operation.
    pub time: DateTime<Utc>,
    /// The verb, e.g. `delete`.
    pub verb: String,
    /// The resource, with subresource if any, e.g. `pods/exec`.
    pub resource: String,
    /// The resource's API group, e.g. `apps`; absent for the core group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// The object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The user who performed it.
    pub user: String,
    /// Reported by a caller kubepam could not verify as the API server (its
    /// webhooks run without `--webhook-client-ca-file`): it may be forged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

/// The most objects kept in `status.lastingObjects`.
pub const LASTING_LIMIT: usize = 100;

/// An object that confers access, made while a grant was in force.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastingObject {
    /// When the API server admitted its creation.
    pub time: DateTime<Utc>,
    /// API group, `""` for core.
    #[serde(default)]
    pub api_group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Resource (plural), e.g. `rolebindings`.
    pub resource: String,
    /// Kind, e.g. `RoleBinding`.
    pub kind: String,
    /// Namespace; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Its uid: kubepam removes only this very object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Removed by kubepam when the grant ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// Reported (Event `PersistenceFound`) once the grant ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reported: bool,
    /// Reported by a caller kubepam could not verify as the API server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

impl LastingObject {
    /// `RoleBinding prod/name`, `ClusterRoleBinding name`.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// One transition of the request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Who caused it: a username, several joined by commas, or `kubepam`.
    pub actor: String,
    /// The phase entered, or `Confirmed` / `Rejected` for the review of an emergency grant.
    pub action: String,
    /// The reviewer's comment, or why kubepam made the transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}
