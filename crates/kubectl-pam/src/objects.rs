//! The objects and patches each command sends: the same YAML and `kubectl patch` bodies a
//! person would write by hand, so that the plugin, `GitOps` and kubectl always agree.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use super::task;
use kubepam_core::api::{
    AccessPolicy, AccessPolicySpec, ApprovalType, BreakGlass, CONTROL_NAME, ElevationRequest,
    ElevationRequestSpec, EscalationStep, ExtensionPolicy, PolicyType, PrivilegedAccessControl,
    PrivilegedAccessControlSpec, ReviewDecision, Scope,
};
use kubepam_core::lifecycle::scope::{self, ScopeError};
use kubepam_core::{duration, justification};

/// Why an object could not be built from the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A task string that does not parse.
    #[error(transparent)]
    Task(#[from] task::Error),
    /// A duration that does not parse.
    #[error(transparent)]
    Duration(#[from] duration::Error),
    /// Not exactly one of `--task`, `--role`, `--roles`.
    #[error("say what the policy grants with exactly one of --task, --role or --roles")]
    WhatToGrant,
    /// `--roles` with no names.
    #[error("--roles needs at least one ClusterRole name, e.g. --roles view,edit")]
    NoRoles,
    /// `--required-approvals 0`.
    #[error("--required-approvals must be at least 1")]
    NoApprovals,
    /// `enable` with no control yet and no group.
    #[error(
        "there is no PrivilegedAccessControl yet: give --approver-group GROUP, the Kubernetes \
         group whose members approve requests"
    )]
    ApproverGroupRequired,
    /// A blank flag value.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// The request does not fit its policy's scope.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// A count flag that must be at least 1, e.g. `--max-open-per-requester 0`.
    #[error("{0} must be at least 1, or be left out for no limit")]
    ZeroLimit(&'static str),
    /// `--reason-pattern` that is not a regular expression.
    #[error("--reason-pattern: {0}")]
    ReasonPattern(String),
    /// `--start-at` that is not an RFC 3339 time.
    #[error(
        "invalid --start-at {0:?}: write a time in RFC 3339 with its offset, e.g. \
         2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00"
    )]
    StartAt(String),
    /// `--escalate-after` that is not `AFTER=GROUP`.
    #[error("invalid --escalate-after {0:?}: {ESCALATION_STEP_FORM}")]
    EscalationStep(String),
    /// `--escalate-after` on a policy approved at once.
    #[error(
        "--escalate-after applies to --approval Manual only: an Auto policy approves at once, so \
         nobody is waited for"
    )]
    EscalationNeedsManual,
    /// `--escalate-after` steps out of order.
    #[error(
        "--escalate-after steps must come in order of their wait: {later} comes after \
         {earlier}; give the shorter wait first"
    )]
    EscalationOrder {
        /// The step given first.
        earlier: String,
        /// The step given after it, with a wait no longer.
        later: String,
    },
    /// More escalation steps than the API allows.
    #[error("at most {ESCALATION_STEPS_MAX} --escalate-after steps, not {0}")]
    TooManyEscalationSteps(usize),
    /// `--break-glass-group` without how long an emergency grant may last.
    #[error(
        "--break-glass-group needs --break-glass-max-duration, the longest an emergency grant \
         may last, e.g. 1h"
    )]
    BreakGlassMaxDuration,
    /// `--emergency` with a booked window or as an extension.
    #[error(
        "an emergency request is for access now: leave out --start-at and --start-in (and file a \
         new emergency request rather than extending one)"
    )]
    EmergencyNow,
    /// A group flag given a blank or control-character value.
    #[error("{0} must name a Kubernetes group, without control characters")]
    Group(&'static str),
}

/// How to write `--escalate-after`.
pub const ESCALATION_STEP_FORM: &str = "write how long a request waits, '=', and the group that \
     may then also decide, e.g. 30m=ops-leads";

/// The most escalation steps a policy may have (the CRD's limit).
pub const ESCALATION_STEPS_MAX: usize = 8;

/// Whether `g` can name a Kubernetes group, as the CRD checks it: not blank, no control
/// characters.
fn is_group(g: &str) -> bool {
    !g.trim().is_empty() && !g.chars().any(char::is_control)
}

/// One `--escalate-after AFTER=GROUP`, e.g. `30m=ops-leads`.
pub fn parse_escalation_step(s: &str) -> Result<EscalationStep, Error> {
    let invalid = || Error::EscalationStep(s.to_owned());
    let (after, group) = s.split_once('=').ok_or_else(invalid)?;
    let (after, group) = (after.trim(), group.trim());
    if after.is_empty() || !is_group(group) {
        return Err(invalid());
    }
    duration::parse(after).map_err(|_| invalid())?;
    Ok(EscalationStep {
        after: after.to_owned(),
        approver_group: group.to_owned(),
    })
}

/// What `enable` does: create the control, or change the fields given on an existing one.
#[derive(Debug, Clone, PartialEq)]
pub enum EnablePlan {
    /// No control yet: create `default`.
    Create(Box<PrivilegedAccessControl>),
    /// Merge-patch the existing control; fields not given stay as they are.
    Patch(Value),
}

/// Settings `enable` may change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnableArgs {
    /// `--approver-group`.
    pub approver_group: Option<String>,
    /// `--system-account`, repeated; empty leaves the list as it is.
    pub system_accounts: Vec<String>,
    /// `--default-duration`.
    pub default_duration: Option<String>,
    /// `--request-ttl`.
    pub request_ttl: Option<String>,
    /// `--max-pending-per-requester`.
    pub max_pending_per_requester: Option<u32>,
}

/// Plan `enable` (Enable-ElevatedAccessControl) against the control as it is now.
pub fn enable_plan(
    existing: Option<&PrivilegedAccessControl>,
    args: &EnableArgs,
) -> Result<EnablePlan, Error> {
    if args
        .approver_group
        .as_deref()
        .is_some_and(|g| g.trim().is_empty())
    {
        return Err(Error::Empty("--approver-group"));
    }
    for d in [&args.default_duration, &args.request_ttl]
        .into_iter()
        .flatten()
    {
        duration::parse(d)?;
    }
    if args.max_pending_per_requester == Some(0) {
        return Err(Error::ZeroLimit("--max-pending-per-requester"));
    }
    if existing.is_none() {
        let group = args
            .approver_group
            .clone()
            .ok_or(Error::ApproverGroupRequired)?;
        let control = PrivilegedAccessControl {
            metadata: ObjectMeta {
                name: Some(CONTROL_NAME.to_owned()),
                ..ObjectMeta::default()
            },
            spec: PrivilegedAccessControlSpec {
                enabled: true,
                default_approver_group: group,
                system_accounts: args.system_accounts.clone(),
                default_duration: args.default_duration.clone(),
                request_ttl: args.request_ttl.clone(),
                remove_foreign_bindings: false,
                remove_persistence: false,
                max_pending_per_requester: args.max_pending_per_requester,
                notifications: None,
                audit: None,
                retention: None,
            },
            status: None,
        };
        return Ok(EnablePlan::Create(Box::new(control)));
    }
    let mut spec = serde_json::Map::new();
    spec.insert("enabled".into(), Value::Bool(true));
    if let Some(g) = &args.approver_group {
        spec.insert("defaultApproverGroup".into(), json!(g));
    }
    if !args.system_accounts.is_empty() {
        spec.insert("systemAccounts".into(), json!(args.system_accounts));
    }
    if let Some(d) = &args.default_duration {
        spec.insert("defaultDuration".into(), json!(d));
    }
    if let Some(d) = &args.request_ttl {
        spec.insert("requestTTL".into(), json!(d));
    }
    if let Some(n) = args.max_pending_per_requester {
        spec.insert("maxPendingPerRequester".into(), json!(n));
    }
    Ok(EnablePlan::Patch(json!({ "spec": spec })))
}

/// `disable` (Disable-ElevatedAccessControl): only the switch; policies and groups stay.
pub fn disable_patch() -> Value {
    json!({ "spec": { "enabled": false } })
}

/// What `policy create` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyArgs {
    /// The policy's name.
    pub name: String,
    /// `--task 'delete deployments.apps'`.
    pub task: Option<String>,
    /// `--role R`.
    pub role: Option<String>,
    /// `--roles R1,R2`.
    pub roles: Option<Vec<String>>,
    /// `--namespace N`, repeated; empty is cluster-wide.
    pub namespaces: Vec<String>,
    /// `--approval`.
    pub approval: ApprovalType,
    /// `--approver-group`.
    pub approver_group: Option<String>,
    /// `--max-duration`.
    pub max_duration: Option<String>,
    /// `--required-approvals`.
    pub required_approvals: Option<u32>,
    /// `--allow-impersonation`.
    pub allow_impersonation: bool,
    /// `--allow-privilege-escalation`.
    pub allow_privilege_escalation: bool,
    /// `--allow-persistence`.
    pub allow_persistence: bool,
    /// `--reason-pattern`.
    pub reason_pattern: Option<String>,
    /// `--reason-hint`.
    pub reason_hint: Option<String>,
    /// `--max-schedule-ahead`.
    pub max_schedule_ahead: Option<String>,
    /// `--max-open-per-requester`.
    pub max_open_per_requester: Option<u32>,
    /// `--extension-approval`.
    pub extension_approval: Option<ApprovalType>,
    /// `--max-extensions`.
    pub max_extensions: Option<u32>,
    /// `--max-extension-total`.
    pub max_extension_total: Option<String>,
    /// `--break-glass-group`, repeated; empty means no break glass.
    pub break_glass_groups: Vec<String>,
    /// `--break-glass-max-duration`.
    pub break_glass_max_duration: Option<String>,
    /// `--review-within`.
    pub review_within: Option<String>,
    /// `--escalate-after`, in the order given.
    pub escalation: Vec<EscalationStep>,
}

/// The policy's `breakGlass` block: present when groups are given.
fn break_glass(args: &PolicyArgs) -> Result<Option<BreakGlass>, Error> {
    if args.break_glass_groups.is_empty() {
        return Ok(None);
    }
    if !args.break_glass_groups.iter().all(|g| is_group(g)) {
        return Err(Error::Group("--break-glass-group"));
    }
    let max_duration = args
        .break_glass_max_duration
        .clone()
        .ok_or(Error::BreakGlassMaxDuration)?;
    for d in std::iter::once(&max_duration).chain(&args.review_within) {
        duration::parse(d)?;
    }
    Ok(Some(BreakGlass {
        groups: args.break_glass_groups.clone(),
        max_duration,
        review_within: args.review_within.clone(),
    }))
}

/// The policy's `escalation` steps, checked: Manual only, in order of their wait, at most
/// [`ESCALATION_STEPS_MAX`].
fn escalation(args: &PolicyArgs) -> Result<Vec<EscalationStep>, Error> {
    if args.escalation.is_empty() {
        return Ok(Vec::new());
    }
    if args.approval != ApprovalType::Manual {
        return Err(Error::EscalationNeedsManual);
    }
    if args.escalation.len() > ESCALATION_STEPS_MAX {
        return Err(Error::TooManyEscalationSteps(args.escalation.len()));
    }
    let step = |s: &EscalationStep| format!("{}={}", s.after, s.approver_group);
    for pair in args.escalation.windows(2) {
        if duration::parse(&pair[1].after)? <= duration::parse(&pair[0].after)? {
            return Err(Error::EscalationOrder {
                earlier: step(&pair[0]),
                later: step(&pair[1]),
            });
        }
    }
    for s in &args.escalation {
        if !is_group(&s.approver_group) {
            return Err(Error::EscalationStep(step(s)));
        }
    }
    Ok(args.escalation.clone())
}

/// The policy's `extension` block: present when any of its flags is given.
fn extension_policy(args: &PolicyArgs) -> Option<ExtensionPolicy> {
    let given = args.extension_approval.is_some()
        || args.max_extensions.is_some()
        || args.max_extension_total.is_some();
    given.then(|| ExtensionPolicy {
        approval_type: args.extension_approval,
        max_extensions: args.max_extensions,
        max_total: args.max_extension_total.clone(),
    })
}

/// Build the AccessPolicy of `policy create` (New-ElevatedAccessApprovalPolicy).
pub fn build_policy(args: &PolicyArgs) -> Result<AccessPolicy, Error> {
    let (policy_type, task, role, roles) = match (&args.task, &args.role, &args.roles) {
        (Some(t), None, None) => (PolicyType::Task, Some(task::parse_task(t)?), None, vec![]),
        (None, Some(r), None) if r.trim().is_empty() => return Err(Error::Empty("--role")),
        (None, Some(r), None) => (PolicyType::Role, None, Some(r.clone()), vec![]),
        (None, None, Some(rs)) => {
            let rs: Vec<String> = rs
                .iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect();
            if rs.is_empty() {
                return Err(Error::NoRoles);
            }
            (PolicyType::RoleGroup, None, None, rs)
        }
        _ => return Err(Error::WhatToGrant),
    };
    for d in [
        &args.max_duration,
        &args.max_schedule_ahead,
        &args.max_extension_total,
    ]
    .into_iter()
    .flatten()
    {
        duration::parse(d)?;
    }
    if args.required_approvals == Some(0) {
        return Err(Error::NoApprovals);
    }
    if args.max_open_per_requester == Some(0) {
        return Err(Error::ZeroLimit("--max-open-per-requester"));
    }
    if let Some(pattern) = &args.reason_pattern {
        if pattern.is_empty() {
            return Err(Error::Empty("--reason-pattern"));
        }
        justification::compile(pattern).map_err(Error::ReasonPattern)?;
    }
    if args
        .approver_group
        .as_deref()
        .is_some_and(|g| g.trim().is_empty())
    {
        return Err(Error::Empty("--approver-group"));
    }
    let break_glass = break_glass(args)?;
    let escalation = escalation(args)?;
    let scope = (!args.namespaces.is_empty()).then(|| Scope {
        namespaces: args.namespaces.clone(),
    });
    Ok(AccessPolicy {
        metadata: ObjectMeta {
            name: Some(args.name.clone()),
            ..ObjectMeta::default()
        },
        spec: AccessPolicySpec {
            policy_type,
            task,
            role,
            roles,
            scope,
            approval_type: args.approval,
            approver_group: args.approver_group.clone(),
            max_duration: args.max_duration.clone(),
            reason_pattern: args.reason_pattern.clone(),
            reason_hint: args.reason_hint.clone(),
            max_schedule_ahead: args.max_schedule_ahead.clone(),
            extension: extension_policy(args),
            max_open_per_requester: args.max_open_per_requester,
            break_glass,
            escalation,
            required_approvals: args.required_approvals,
            allow_impersonation: args.allow_impersonation,
            allow_privilege_escalation: args.allow_privilege_escalation,
            allow_persistence: args.allow_persistence,
        },
        status: None,
    })
}

/// Longest prefix kept for a generated name: what the API server keeps of `generateName`
/// (63 minus its five random characters).
pub const GENERATE_NAME_PREFIX_MAX: usize = 58;

/// The `generateName` of a request for `policy`: `<policy>-`, cut so the server's random
/// suffix fits, e.g. `prod-delete-deployments-` then `prod-delete-deployments-x7k2p`.
pub fn request_generate_name(policy: &str) -> String {
    let cleaned: String = policy
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(GENERATE_NAME_PREFIX_MAX - 1)
        .collect();
    let cleaned = cleaned.trim_matches('-');
    if cleaned.is_empty() {
        "request-".to_owned()
    } else {
        format!("{cleaned}-")
    }
}

/// What `request` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestArgs {
    /// The AccessPolicy's name.
    pub policy: String,
    /// `--name`; generated from the policy when absent.
    pub name: Option<String>,
    /// `--reason`.
    pub reason: String,
    /// `--duration`.
    pub duration: Option<String>,
    /// `-n/--namespace`.
    pub namespace: Option<String>,
    /// `--start-at` / `--start-in`, resolved: the booked window's start.
    pub start_at: Option<DateTime<Utc>>,
    /// `extend NAME`: the request whose grant this one continues.
    pub extends: Option<String>,
    /// `--emergency`: break glass, approved at once and reviewed afterwards.
    pub emergency: bool,
}

/// When a booked window starts: `--start-at` as written (an RFC 3339 time, in UTC), or
/// `--start-in` from `now` in whole seconds; `None` for "as soon as approved".
pub fn start_time(
    start_at: Option<&str>,
    start_in: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    if let Some(at) = start_at {
        let at =
            DateTime::parse_from_rfc3339(at.trim()).map_err(|_| Error::StartAt(at.to_owned()))?;
        return Ok(Some(at.with_timezone(&Utc)));
    }
    match start_in {
        None => Ok(None),
        Some(d) => {
            let delta = duration::parse(d)?;
            let start = now
                .trunc_subsecs(0)
                .checked_add_signed(delta)
                .ok_or_else(|| duration::Error::TooLong(d.to_owned()))?;
            Ok(Some(start))
        }
    }
}

/// The namespace a request should name under `policy`: the one given, or the policy's only
/// namespace; refused as the controller would refuse it (outside the scope, or ambiguous).
pub fn request_namespace(
    policy_name: &str,
    policy: &AccessPolicySpec,
    given: Option<&str>,
) -> Result<Option<String>, Error> {
    let namespace = match (given, policy.namespaces()) {
        (None, [only]) => Some(only.as_str()),
        (given, _) => given,
    };
    scope::snapshot(policy_name, policy, namespace)?;
    Ok(namespace.map(str::to_owned))
}

/// Build the ElevationRequest of `request` (New-ElevatedAccessRequest). The requester is left
/// out: admission fills it in with the caller, who cannot claim to be anyone else.
pub fn build_request(args: &RequestArgs) -> Result<ElevationRequest, Error> {
    if args.reason.trim().is_empty() {
        return Err(Error::Empty("--reason"));
    }
    if let Some(d) = &args.duration {
        duration::parse(d)?;
    }
    if args.emergency && (args.start_at.is_some() || args.extends.is_some()) {
        return Err(Error::EmergencyNow);
    }
    let metadata = match &args.name {
        Some(name) => ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        None => ObjectMeta {
            generate_name: Some(request_generate_name(&args.policy)),
            ..ObjectMeta::default()
        },
    };
    Ok(ElevationRequest {
        metadata,
        spec: ElevationRequestSpec {
            policy: args.policy.clone(),
            namespace: args.namespace.clone(),
            reason: args.reason.clone(),
            duration: args.duration.clone(),
            requester: None,
            start_at: args.start_at,
            extends: args.extends.clone(),
            emergency: args.emergency,
            // Set by kubepam from the caller's own groups.
            break_glass_group: None,
            reviews: BTreeMap::new(),
        },
        status: None,
    })
}

/// The merge patch an approver writes by hand (DESIGN 3.3):
/// `{"spec":{"reviews":{"<me>":{"decision":"Approve","comment":"ok"}}}}`.
/// Without a comment, `comment` is `null` so that an earlier comment of the same reviewer
/// (say, on their approval) is not carried over onto a later revoke by the merge.
/// The requester's `Release` is the same patch under their own name.
pub fn review_patch(reviewer: &str, decision: ReviewDecision, comment: Option<&str>) -> Value {
    let decision = decision.as_str();
    json!({ "spec": { "reviews": { reviewer: { "decision": decision, "comment": comment } } } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seed_policy_args() -> PolicyArgs {
        PolicyArgs {
            name: "prod-delete-deployments".into(),
            task: Some("delete deployments.apps".into()),
            role: None,
            roles: None,
            namespaces: vec!["prod".into()],
            approval: ApprovalType::Manual,
            approver_group: None,
            max_duration: None,
            required_approvals: None,
            allow_impersonation: false,
            allow_privilege_escalation: false,
            allow_persistence: false,
            reason_pattern: None,
            reason_hint: None,
            max_schedule_ahead: None,
            max_open_per_requester: None,
            extension_approval: None,
            max_extensions: None,
            max_extension_total: None,
            break_glass_groups: Vec::new(),
            break_glass_max_duration: None,
            review_within: None,
            escalation: Vec::new(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_seed_policy_is_the_readme_yaml() {
        let policy = build_policy(&seed_policy_args()).unwrap();
        let yaml: AccessPolicy = serde_yaml_ng::from_str(
            "apiVersion: kubepam.io/v1alpha1
kind: AccessPolicy
metadata: { name: prod-delete-deployments }
spec:
  type: Task
  task: { verbs: [delete], apiGroups: [apps], resources: [deployments] }
  scope: { namespaces: [prod] }
  approvalType: Manual
",
        )
        .unwrap();
        assert_eq!(policy, yaml);
    }

    #[test]
    fn policies_grant_exactly_one_kind_of_thing() {
        let mut args = seed_policy_args();
        args.role = Some("view".into());
        assert_eq!(build_policy(&args), Err(Error::WhatToGrant));
        args.task = None;
        let role = build_policy(&args).unwrap();
        assert_eq!(role.spec.policy_type, PolicyType::Role);
        args.role = None;
        args.roles = Some(vec!["view".into(), " edit ".into()]);
        let group = build_policy(&args).unwrap();
        assert_eq!(group.spec.roles, ["view", "edit"]);
        args.roles = Some(vec![String::new()]);
        assert_eq!(build_policy(&args), Err(Error::NoRoles));
        args.roles = None;
        assert_eq!(build_policy(&args), Err(Error::WhatToGrant));
        let mut args = seed_policy_args();
        args.required_approvals = Some(0);
        assert_eq!(build_policy(&args), Err(Error::NoApprovals));
        args.required_approvals = None;
        args.max_duration = Some("8 hours".into());
        assert!(matches!(build_policy(&args), Err(Error::Duration(_))));
    }

    #[test]
    fn enable_creates_or_changes_only_what_is_given() {
        let args = EnableArgs {
            approver_group: Some("pam-approvers".into()),
            system_accounts: vec!["system:serviceaccount:ci:deployer".into()],
            ..EnableArgs::default()
        };
        let EnablePlan::Create(control) = enable_plan(None, &args).unwrap() else {
            panic!("no control yet: create it");
        };
        assert_eq!(control.metadata.name.as_deref(), Some("default"));
        assert!(control.spec.enabled);
        assert_eq!(
            enable_plan(None, &EnableArgs::default()),
            Err(Error::ApproverGroupRequired)
        );
        let existing = *control;
        assert_eq!(
            enable_plan(Some(&existing), &EnableArgs::default()).unwrap(),
            EnablePlan::Patch(json!({ "spec": { "enabled": true } }))
        );
        assert_eq!(
            enable_plan(Some(&existing), &args).unwrap(),
            EnablePlan::Patch(json!({ "spec": {
                "enabled": true, "defaultApproverGroup": "pam-approvers",
                "systemAccounts": ["system:serviceaccount:ci:deployer"],
            } }))
        );
        assert_eq!(disable_patch(), json!({ "spec": { "enabled": false } }));
    }

    #[test]
    fn a_request_names_the_policy_namespace_when_there_is_only_one() {
        let policy = build_policy(&seed_policy_args()).unwrap().spec;
        let name = "prod-delete-deployments";
        assert_eq!(
            request_namespace(name, &policy, None).unwrap().as_deref(),
            Some("prod")
        );
        assert!(matches!(
            request_namespace(name, &policy, Some("dev")),
            Err(Error::Scope(ScopeError::NamespaceNotInScope { .. }))
        ));
        let mut wide = policy.clone();
        wide.scope = None;
        assert_eq!(request_namespace(name, &wide, None).unwrap(), None);
        wide.scope = Some(Scope {
            namespaces: vec!["a".into(), "b".into()],
        });
        assert!(matches!(
            request_namespace(name, &wide, None),
            Err(Error::Scope(ScopeError::NamespaceRequired { .. }))
        ));
    }

    #[test]
    fn a_request_without_a_name_gets_one_from_the_server() {
        let args = RequestArgs {
            policy: "prod-delete-deployments".into(),
            reason: "INC-1234".into(),
            duration: Some("30m".into()),
            namespace: Some("prod".into()),
            ..RequestArgs::default()
        };
        let request = build_request(&args).unwrap();
        assert_eq!(
            request.metadata.generate_name.as_deref(),
            Some("prod-delete-deployments-")
        );
        assert_eq!(request.spec.requester, None, "admission sets it");
        let blank = RequestArgs {
            reason: "  ".into(),
            ..args
        };
        assert_eq!(build_request(&blank), Err(Error::Empty("--reason")));
    }

    #[test]
    fn a_policy_carries_its_reason_schedule_quota_and_extension_rules() {
        let args = PolicyArgs {
            reason_pattern: Some("^(INC|CHG)-[0-9]+".into()),
            reason_hint: Some("a ticket, e.g. INC-1234".into()),
            max_schedule_ahead: Some("168h".into()),
            max_open_per_requester: Some(1),
            extension_approval: Some(ApprovalType::Auto),
            max_extensions: Some(0),
            max_extension_total: Some("8h".into()),
            ..seed_policy_args()
        };
        let yaml: AccessPolicy = serde_yaml_ng::from_str(
            "apiVersion: kubepam.io/v1alpha1
kind: AccessPolicy
metadata: { name: prod-delete-deployments }
spec:
  type: Task
  task: { verbs: [delete], apiGroups: [apps], resources: [deployments] }
  scope: { namespaces: [prod] }
  approvalType: Manual
  reasonPattern: '^(INC|CHG)-[0-9]+'
  reasonHint: 'a ticket, e.g. INC-1234'
  maxScheduleAhead: 168h
  maxOpenPerRequester: 1
  extension: { approvalType: Auto, maxExtensions: 0, maxTotal: 8h }
",
        )
        .unwrap();
        assert_eq!(build_policy(&args).unwrap(), yaml);
        // One extension flag is enough for the block; none leaves it out.
        let only_total = PolicyArgs {
            max_extension_total: Some("8h".into()),
            ..seed_policy_args()
        };
        assert_eq!(
            build_policy(&only_total).unwrap().spec.extension,
            Some(ExtensionPolicy {
                max_total: Some("8h".into()),
                ..ExtensionPolicy::default()
            })
        );
        assert_eq!(
            build_policy(&seed_policy_args()).unwrap().spec.extension,
            None
        );
    }

    #[test]
    fn the_new_policy_rules_are_checked_before_they_are_sent() {
        let bad = |args: PolicyArgs| build_policy(&args).unwrap_err();
        assert_eq!(
            bad(PolicyArgs {
                max_open_per_requester: Some(0),
                ..seed_policy_args()
            }),
            Error::ZeroLimit("--max-open-per-requester")
        );
        let pattern = bad(PolicyArgs {
            reason_pattern: Some("(INC".into()),
            ..seed_policy_args()
        });
        assert!(
            matches!(&pattern, Error::ReasonPattern(m) if m.contains("not a valid regular expression")),
            "{pattern}"
        );
        assert!(pattern.to_string().starts_with("--reason-pattern: "));
        assert_eq!(
            bad(PolicyArgs {
                reason_pattern: Some(String::new()),
                ..seed_policy_args()
            }),
            Error::Empty("--reason-pattern")
        );
        for (ahead, total) in [(Some("a week"), None), (None, Some("0h"))] {
            let err = bad(PolicyArgs {
                max_schedule_ahead: ahead.map(Into::into),
                max_extension_total: total.map(Into::into),
                ..seed_policy_args()
            });
            assert!(matches!(err, Error::Duration(_)), "{err}");
        }
    }

    #[test]
    fn enable_sets_the_pending_quota_on_create_and_patch() {
        let args = EnableArgs {
            approver_group: Some("pam-approvers".into()),
            max_pending_per_requester: Some(3),
            ..EnableArgs::default()
        };
        let EnablePlan::Create(control) = enable_plan(None, &args).unwrap() else {
            panic!("no control yet: create it");
        };
        assert_eq!(control.spec.max_pending_per_requester, Some(3));
        let only_quota = EnableArgs {
            max_pending_per_requester: Some(3),
            ..EnableArgs::default()
        };
        assert_eq!(
            enable_plan(Some(&control), &only_quota).unwrap(),
            EnablePlan::Patch(json!({ "spec": { "enabled": true, "maxPendingPerRequester": 3 } }))
        );
        let zero = EnableArgs {
            max_pending_per_requester: Some(0),
            ..EnableArgs::default()
        };
        assert_eq!(
            enable_plan(Some(&control), &zero),
            Err(Error::ZeroLimit("--max-pending-per-requester"))
        );
    }

    #[test]
    fn a_window_starts_at_a_time_or_after_a_while() {
        let now = at("2026-11-30T08:15:42.5Z");
        assert_eq!(start_time(None, None, now), Ok(None));
        assert_eq!(
            start_time(Some("2026-12-01T09:00:00Z"), None, now),
            Ok(Some(at("2026-12-01T09:00:00Z")))
        );
        // An offset is kept as the moment it names, in UTC.
        assert_eq!(
            start_time(Some("2026-12-01T10:00:00+01:00"), None, now),
            Ok(Some(at("2026-12-01T09:00:00Z")))
        );
        // From now, in whole seconds.
        assert_eq!(
            start_time(None, Some("2h"), now),
            Ok(Some(at("2026-11-30T10:15:42Z")))
        );
        for bad in [
            "tomorrow",
            "2026-12-01",
            "2026-12-01 09:00",
            "2026-12-01T09:00:00",
        ] {
            let err = start_time(Some(bad), None, now).unwrap_err();
            assert_eq!(err, Error::StartAt(bad.to_owned()));
            assert!(err.to_string().contains("2026-12-01T09:00:00Z"), "{err}");
        }
        assert!(matches!(
            start_time(None, Some("2 hours"), now),
            Err(Error::Duration(_))
        ));
    }

    #[test]
    fn a_booked_request_and_an_extension_carry_start_at_and_extends() {
        let booked = build_request(&RequestArgs {
            policy: "prod-delete-deployments".into(),
            reason: "CHG-77".into(),
            duration: Some("2h".into()),
            namespace: Some("prod".into()),
            start_at: Some(at("2026-12-01T09:00:00Z")),
            ..RequestArgs::default()
        })
        .unwrap();
        let spec = serde_json::to_value(&booked.spec).unwrap();
        assert_eq!(spec["startAt"], "2026-12-01T09:00:00Z");
        assert!(spec.get("extends").is_none());
        let extension = build_request(&RequestArgs {
            policy: "prod-delete-deployments".into(),
            reason: "INC-1234: still rolling out".into(),
            duration: Some("1h".into()),
            namespace: Some("prod".into()),
            extends: Some("prod-delete-deployments-x7k2p".into()),
            ..RequestArgs::default()
        })
        .unwrap();
        // Named like any request: after the policy, by the server.
        assert_eq!(
            extension.metadata.generate_name.as_deref(),
            Some("prod-delete-deployments-")
        );
        let spec = serde_json::to_value(&extension.spec).unwrap();
        assert_eq!(spec["extends"], "prod-delete-deployments-x7k2p");
        assert_eq!(spec["duration"], "1h");
        assert!(spec.get("startAt").is_none());
    }

    #[test]
    fn the_review_patch_is_what_the_readme_shows() {
        assert_eq!(
            review_patch("bob", ReviewDecision::Approve, Some("ok")),
            json!({"spec":{"reviews":{"bob":{"decision":"Approve","comment":"ok"}}}})
        );
        assert_eq!(
            review_patch("carol", ReviewDecision::Revoke, None),
            json!({"spec":{"reviews":{"carol":{"decision":"Revoke","comment":null}}}})
        );
        // The requester's release: their own entry, like any review.
        assert_eq!(
            review_patch("alice", ReviewDecision::Release, Some("done")),
            json!({"spec":{"reviews":{"alice":{"decision":"Release","comment":"done"}}}})
        );
    }

    #[test]
    fn escalation_steps_are_a_wait_and_a_group() {
        assert_eq!(
            parse_escalation_step("30m=ops-leads"),
            Ok(EscalationStep {
                after: "30m".into(),
                approver_group: "ops-leads".into()
            })
        );
        assert_eq!(
            parse_escalation_step(" 1h30m = sre managers ").map(|s| (s.after, s.approver_group)),
            Ok(("1h30m".to_owned(), "sre managers".to_owned()))
        );
        for bad in [
            "30m",
            "ops-leads",
            "=ops-leads",
            "30m=",
            "30m= ",
            "half an hour=ops-leads",
            "30m=ops\nleads",
            "",
        ] {
            let err = parse_escalation_step(bad).unwrap_err();
            assert_eq!(err, Error::EscalationStep(bad.to_owned()));
            assert!(err.to_string().contains("e.g. 30m=ops-leads"), "{err}");
        }
    }

    #[test]
    fn a_policy_carries_break_glass_and_escalation() {
        let step = |s: &str| parse_escalation_step(s).unwrap();
        let args = PolicyArgs {
            break_glass_groups: vec!["oncall".into()],
            break_glass_max_duration: Some("1h".into()),
            review_within: Some("12h".into()),
            escalation: vec![step("30m=ops-leads"), step("2h=sre-managers")],
            ..seed_policy_args()
        };
        let yaml: AccessPolicy = serde_yaml_ng::from_str(
            "apiVersion: kubepam.io/v1alpha1
kind: AccessPolicy
metadata: { name: prod-delete-deployments }
spec:
  type: Task
  task: { verbs: [delete], apiGroups: [apps], resources: [deployments] }
  scope: { namespaces: [prod] }
  approvalType: Manual
  breakGlass: { groups: [oncall], maxDuration: 1h, reviewWithin: 12h }
  escalation:
    - { after: 30m, approverGroup: ops-leads }
    - { after: 2h, approverGroup: sre-managers }
",
        )
        .unwrap();
        assert_eq!(build_policy(&args).unwrap(), yaml);
        // Without its groups, no break glass at all; the default review time is the API's.
        let plain = build_policy(&seed_policy_args()).unwrap();
        assert_eq!(plain.spec.break_glass, None);
        assert!(plain.spec.escalation.is_empty());
        let default_review = build_policy(&PolicyArgs {
            review_within: None,
            ..args.clone()
        })
        .unwrap();
        assert_eq!(default_review.spec.break_glass.unwrap().review_within, None);
        // What the API would refuse, or a person would not mean, is said before sending.
        let refused = [
            (
                PolicyArgs {
                    approval: ApprovalType::Auto,
                    ..args.clone()
                },
                Error::EscalationNeedsManual,
            ),
            (
                PolicyArgs {
                    escalation: vec![step("2h=sre-managers"), step("30m=ops-leads")],
                    ..args.clone()
                },
                Error::EscalationOrder {
                    earlier: "2h=sre-managers".into(),
                    later: "30m=ops-leads".into(),
                },
            ),
            (
                PolicyArgs {
                    escalation: vec![step("1h=a"); 9],
                    ..args.clone()
                },
                Error::TooManyEscalationSteps(9),
            ),
            (
                PolicyArgs {
                    break_glass_max_duration: None,
                    ..args.clone()
                },
                Error::BreakGlassMaxDuration,
            ),
            (
                PolicyArgs {
                    break_glass_groups: vec![" ".into()],
                    ..args.clone()
                },
                Error::Group("--break-glass-group"),
            ),
        ];
        for (bad, want) in refused {
            assert_eq!(build_policy(&bad), Err(want));
        }
        let bad_duration = PolicyArgs {
            review_within: Some("a day".into()),
            ..args
        };
        assert!(matches!(
            build_policy(&bad_duration),
            Err(Error::Duration(_))
        ));
        assert!(
            Error::EscalationNeedsManual
                .to_string()
                .contains("--approval Manual")
        );
    }

    #[test]
    fn an_emergency_request_sets_the_flag_and_books_nothing() {
        let args = RequestArgs {
            policy: "prod-delete-deployments".into(),
            reason: "INC-999: outage".into(),
            emergency: true,
            ..RequestArgs::default()
        };
        let request = build_request(&args).unwrap();
        assert!(request.spec.emergency);
        let json = serde_json::to_value(&request.spec).unwrap();
        assert_eq!(json["emergency"], true);
        // An ordinary request leaves the field out, as a person would write it.
        let ordinary = build_request(&RequestArgs {
            emergency: false,
            ..args.clone()
        })
        .unwrap();
        assert!(
            serde_json::to_value(&ordinary.spec)
                .unwrap()
                .get("emergency")
                .is_none()
        );
        let booked = RequestArgs {
            start_at: Some(at("2026-12-01T09:00:00Z")),
            ..args.clone()
        };
        assert_eq!(build_request(&booked), Err(Error::EmergencyNow));
        let extension = RequestArgs {
            extends: Some("x".into()),
            ..args
        };
        assert_eq!(build_request(&extension), Err(Error::EmergencyNow));
    }

    proptest! {
        #[test]
        fn generated_names_are_valid_prefixes(policy in ".{0,300}") {
            let prefix = request_generate_name(&policy);
            prop_assert!(prefix.len() <= GENERATE_NAME_PREFIX_MAX);
            prop_assert!(prefix.ends_with('-'));
            prop_assert!(prefix.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()));
            prop_assert!(prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }

        #[test]
        fn review_patches_touch_only_the_reviewers_entry(
            reviewer in ".{1,40}", comment in proptest::option::of(".{0,40}"),
        ) {
            let patch = review_patch(&reviewer, ReviewDecision::Deny, comment.as_deref());
            let reviews = patch["spec"]["reviews"].as_object().unwrap();
            prop_assert_eq!(reviews.len(), 1);
            prop_assert!(reviews.contains_key(&reviewer));
            prop_assert_eq!(patch["spec"].as_object().unwrap().len(), 1);
        }

        #[test]
        fn building_never_panics(
            task in proptest::option::of(".{0,30}"), role in proptest::option::of(".{0,10}"),
            max in proptest::option::of(".{0,6}"), reason in ".{0,10}",
        ) {
            let _ = build_policy(&PolicyArgs { task, role, max_duration: max.clone(), ..seed_policy_args() });
            let _ = build_request(&RequestArgs { policy: "p".into(), reason, duration: max, ..RequestArgs::default() });
        }
    }
}
