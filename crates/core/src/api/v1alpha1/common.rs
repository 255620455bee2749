//! Types shared by the three kinds, and small pure constructors for conditions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an [`AccessPolicy`](super::AccessPolicy) grants.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum PolicyType {
    /// One Kubernetes operation (verbs on resources), granted through a generated ClusterRole.
    Task,
    /// One existing ClusterRole.
    Role,
    /// Several existing ClusterRoles granted together.
    RoleGroup,
}

impl PolicyType {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "Task",
            Self::Role => "Role",
            Self::RoleGroup => "RoleGroup",
        }
    }
}

/// How a request under a policy is approved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ApprovalType {
    /// Members of the approver group must approve (`requiredApprovals` of them).
    Manual,
    /// Approved as soon as kubepam sees the request.
    Auto,
}

impl ApprovalType {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "Manual",
            Self::Auto => "Auto",
        }
    }
}

/// One Kubernetes operation, expressed like an RBAC policy rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// Verbs of the operation, e.g. `delete`, `create`, `patch` (`get`, `list` and `watch` can be
    /// granted but not guarded by admission).
    #[x_kube(validation = Rule::new("size(self) > 0").message("verbs must list at least one verb, e.g. [delete]"))]
    pub verbs: Vec<String>,
    /// API groups of the resources; use `""` for the core group (pods, secrets, ...).
    #[x_kube(validation = Rule::new("size(self) > 0").message("apiGroups must list at least one API group; use \"\" for the core group (pods, secrets)"))]
    pub api_groups: Vec<String>,
    /// Resources, in plural lower case; subresources such as `pods/exec` are allowed.
    #[x_kube(validation = Rule::new("size(self) > 0").message("resources must list at least one resource, e.g. [pods/exec]"))]
    pub resources: Vec<String>,
    /// Optional names the operation is limited to; absent means any name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_names: Option<Vec<String>>,
}

/// The rights an approval covered, frozen at approval time. A grant is never wider than this.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantScope {
    /// The policy type the approval was for.
    #[serde(rename = "type")]
    pub policy_type: PolicyType,
    /// For a Task policy: the operation granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSpec>,
    /// For Role and RoleGroup policies: the ClusterRoles granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Namespaces the grant holds in; empty means cluster-wide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// For Role and RoleGroup policies: the rules of each ClusterRole as the approval saw them.
    /// The grant holds these, in a role kubepam generates, so a later edit or aggregation of the
    /// named ClusterRole never widens it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_rules: BTreeMap<String, Vec<RoleRule>>,
}

impl GrantScope {
    /// Whether the grant holds in `namespace` (`None`: a cluster-scoped object). A cluster-wide
    /// grant holds everywhere, cluster-scoped objects included.
    pub fn covers_namespace(&self, namespace: Option<&str>) -> bool {
        self.namespaces.is_empty()
            || namespace.is_some_and(|ns| self.namespaces.iter().any(|n| n == ns))
    }
}

/// One RBAC rule of a ClusterRole, as kubepam keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRule {
    /// Verbs.
    pub verbs: Vec<String>,
    /// API groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Resource names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource URLs.
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

impl From<&PolicyRule> for RoleRule {
    fn from(rule: &PolicyRule) -> Self {
        Self {
            verbs: rule.verbs.clone(),
            api_groups: rule.api_groups.clone().unwrap_or_default(),
            resources: rule.resources.clone().unwrap_or_default(),
            resource_names: rule.resource_names.clone().unwrap_or_default(),
            non_resource_urls: rule.non_resource_urls.clone().unwrap_or_default(),
        }
    }
}

impl From<&RoleRule> for PolicyRule {
    fn from(rule: &RoleRule) -> Self {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        Self {
            verbs: rule.verbs.clone(),
            api_groups: some(&rule.api_groups),
            resources: some(&rule.resources),
            resource_names: some(&rule.resource_names),
            non_resource_urls: some(&rule.non_resource_urls),
        }
    }
}

/// Convert a chrono time into the Kubernetes `Time` used by conditions (whole seconds).
pub fn to_k8s_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Convert a Kubernetes `Time` (e.g. `metadata.creationTimestamp`) into chrono.
pub fn from_k8s_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().unsigned_abs())
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A condition with status `True`.
pub fn condition_true(
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    now: DateTime<Utc>,
    observed_generation: Option<i64>,
) -> Condition {
    condition(type_, "True", reason, message, now, observed_generation)
}

/// A condition with status `False`.
pub fn condition_false(
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    now: DateTime<Utc>,
    observed_generation: Option<i64>,
) -> Condition {
    condition(type_, "False", reason, message, now, observed_generation)
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    now: DateTime<Utc>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        last_transition_time: to_k8s_time(now),
        message: message.into(),
        observed_generation,
        reason: reason.to_owned(),
        status: status.to_owned(),
        type_: type_.to_owned(),
    }
}

/// Insert or update a condition the apimachinery way (`meta.SetStatusCondition`): the
/// `lastTransitionTime` only moves when the condition's status changes.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        let keep_time = existing.status == new.status;
        let time = existing.last_transition_time.clone();
        *existing = new;
        if keep_time {
            existing.last_transition_time = time;
        }
    } else {
        conditions.push(new);
    }
}

/// Remove a condition by type.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Find a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn set_condition_keeps_transition_time_when_status_unchanged() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let t1 = Utc.with_ymd_and_hms(2025, 1, 1, 1, 0, 0).unwrap();
        let mut cs = vec![condition_true("Ready", "A", "a", t0, Some(1))];
        set_condition(&mut cs, condition_true("Ready", "B", "b", t1, Some(2)));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].reason, "B");
        assert_eq!(cs[0].last_transition_time, to_k8s_time(t0));
        set_condition(&mut cs, condition_false("Ready", "C", "c", t1, Some(2)));
        assert_eq!(cs[0].last_transition_time, to_k8s_time(t1));
        remove_condition(&mut cs, "Ready");
        assert!(cs.is_empty());
    }

    #[test]
    fn time_conversion_round_trips_whole_seconds() {
        let t = Utc.with_ymd_and_hms(2025, 6, 1, 12, 30, 5).unwrap();
        assert_eq!(from_k8s_time(&to_k8s_time(t)), t);
    }
}
