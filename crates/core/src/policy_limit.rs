//! The 30-policy cap (DESIGN §2.2) and the AccessPolicy status it yields.
//!
//! Admission refuses the 31st policy; the controller is the final word: it accepts the 30 oldest
//! by (creationTimestamp, name) and refuses the rest, so a race between two creates can never
//! leave 31 live policies.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use crate::api::{
    AccessPolicy, AccessPolicyStatus, CONDITION_ACCEPTED, GuardedScope, condition_false,
    condition_true, set_condition,
};

/// The most AccessPolicies accepted per cluster.
pub const POLICY_LIMIT: usize = 30;

/// Reasons on the `Accepted` condition.
pub mod reason {
    /// The policy is in force.
    pub const ACCEPTED: &str = "Accepted";
    /// Beyond the 30 oldest.
    pub const POLICY_LIMIT_EXCEEDED: &str = "PolicyLimitExceeded";
    /// A named ClusterRole does not exist.
    pub const ROLE_NOT_FOUND: &str = "RoleNotFound";
}

/// Refuses a policy for a reason that holds whatever the count (see
/// [`crate::privilege::key_refusal`]); a refusal for another reason stands.
pub fn refuse_keys(
    status: &mut AccessPolicyStatus,
    refusal: &crate::privilege::KeyRefusal,
    now: DateTime<Utc>,
    generation: Option<i64>,
) {
    let accepted = crate::api::find_condition(&status.conditions, CONDITION_ACCEPTED)
        .is_some_and(|c| c.status == "True");
    if !accepted {
        return;
    }
    status.guarded = None;
    set_condition(
        &mut status.conditions,
        condition_false(
            CONDITION_ACCEPTED,
            refusal.reason,
            refusal.message.clone(),
            now,
            generation,
        ),
    );
}

/// Split policies, given as `(name, creationTimestamp)`, into the accepted (the
/// [`POLICY_LIMIT`] oldest by creation time, then name) and the refused. A policy without a
/// creation time sorts last. Duplicate names count once.
pub fn policy_acceptance(
    policies: &[(String, Option<DateTime<Utc>>)],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut sorted: Vec<(Option<DateTime<Utc>>, &str)> = policies
        .iter()
        .map(|(name, created)| (*created, name.as_str()))
        .collect();
    // None sorts after every time.
    sorted.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.1.cmp(b.1)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(b.1),
    });
    let mut accepted = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for (_, name) in sorted {
        if accepted.contains(name) || refused.contains(name) {
            continue;
        }
        if accepted.len() < POLICY_LIMIT {
            accepted.insert(name.to_owned());
        } else {
            refused.insert(name.to_owned());
        }
    }
    (accepted, refused)
}

/// Whether admission must refuse one more policy when `existing` live policies exist.
pub fn admission_exceeds_limit(existing: usize) -> bool {
    existing >= POLICY_LIMIT
}

/// The message admission and the `Accepted=False` condition give for a policy over the limit.
pub fn limit_message() -> String {
    format!(
        "kubepam accepts at most {POLICY_LIMIT} AccessPolicies per cluster; delete one you no longer need (kubectl get accesspolicies) before adding another"
    )
}

/// The policy's id: its `metadata.uid`, else one derived from its name.
pub fn policy_id(policy: &AccessPolicy) -> String {
    policy
        .metadata
        .uid
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            crate::util::uuid_from_name("accesspolicy", &policy.name_any()).to_string()
        })
}

/// The desired status of a policy: `within_limit` from [`policy_acceptance`], `missing_roles`
/// the ClusterRoles it names that do not exist. Keeps an existing `policyId` and the
/// condition's transition time when nothing changed.
pub fn policy_status(
    policy: &AccessPolicy,
    within_limit: bool,
    missing_roles: Vec<String>,
    now: DateTime<Utc>,
) -> AccessPolicyStatus {
    let mut status = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    if status.policy_id.is_none() {
        status.policy_id = Some(policy_id(policy));
    }
    status.observed_generation = generation;
    let condition = if !within_limit {
        condition_false(
            CONDITION_ACCEPTED,
            reason::POLICY_LIMIT_EXCEEDED,
            limit_message(),
            now,
            generation,
        )
    } else if !missing_roles.is_empty() {
        condition_false(
            CONDITION_ACCEPTED,
            reason::ROLE_NOT_FOUND,
            format!(
                "ClusterRole(s) {} do not exist; create them or change the policy",
                missing_roles.join(", ")
            ),
            now,
            generation,
        )
    } else {
        condition_true(
            CONDITION_ACCEPTED,
            reason::ACCEPTED,
            "the policy is in force",
            now,
            generation,
        )
    };
    let accepted = condition.status == "True";
    set_condition(&mut status.conditions, condition);
    status.missing_roles = missing_roles;
    status.guarded = guarded_scope(policy, accepted);
    status
}

/// What an accepted Task policy guards, for `status.guarded`; nothing otherwise.
fn guarded_scope(policy: &AccessPolicy, accepted: bool) -> Option<GuardedScope> {
    let spec = &policy.spec;
    spec.task
        .clone()
        .filter(|_| accepted && spec.policy_type == crate::api::PolicyType::Task)
        .map(|task| GuardedScope {
            task,
            namespaces: spec.namespaces().to_vec(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};
    use proptest::prelude::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(secs)
    }

    #[allow(clippy::unnecessary_wraps)] // fixtures want the Option the API gives
    fn t(secs: i64) -> Option<DateTime<Utc>> {
        Some(at(secs))
    }

    #[test]
    fn thirty_oldest_are_accepted_ties_broken_by_name() {
        let mut policies: Vec<(String, Option<DateTime<Utc>>)> =
            (0..31).map(|i| (format!("p{i:02}"), t(i))).collect();
        // Same time as p29: name decides, "a-late" < "p29".
        policies.push(("a-late".into(), t(29)));
        let (accepted, refused) = policy_acceptance(&policies);
        assert_eq!(accepted.len(), 30);
        assert!(accepted.contains("a-late"));
        assert!(!accepted.contains("p29"));
        assert_eq!(
            refused,
            BTreeSet::from(["p29".to_owned(), "p30".to_owned()])
        );
    }

    #[test]
    fn missing_creation_time_sorts_last() {
        let mut policies: Vec<_> = (0..30).map(|i| (format!("p{i}"), t(i))).collect();
        policies.insert(0, ("no-time".into(), None));
        let (_, refused) = policy_acceptance(&policies);
        assert_eq!(refused, BTreeSet::from(["no-time".to_owned()]));
    }

    #[test]
    fn admission_refuses_the_31st() {
        assert!(!admission_exceeds_limit(29));
        assert!(admission_exceeds_limit(30));
        assert!(limit_message().contains("at most 30"));
    }

    fn policy(yaml: &str) -> AccessPolicy {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const POLICY: &str = r"
apiVersion: kubepam.io/v1alpha1
kind: AccessPolicy
metadata: {name: p, uid: 11111111-2222-3333-4444-555555555555, generation: 3}
spec: {type: Role, role: admin, approvalType: Manual}
";

    #[test]
    fn status_accepts_refuses_and_keeps_ids() {
        let now = t(0).unwrap();
        let p = policy(POLICY);
        let s = policy_status(&p, true, vec![], now);
        assert_eq!(
            s.policy_id.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions[0].status, "True");
        let s = policy_status(&p, false, vec![], now);
        assert_eq!(s.conditions[0].reason, reason::POLICY_LIMIT_EXCEEDED);
        let s = policy_status(&p, true, vec!["admin".into()], now);
        assert_eq!(s.conditions[0].reason, reason::ROLE_NOT_FOUND);
        assert_eq!(s.missing_roles, ["admin"]);
        // The view the request controller builds from it.
        let mut refused = p.clone();
        refused.status = Some(s);
        assert!(matches!(
            crate::lifecycle::PolicyView::from_policy(Some(&refused)),
            crate::lifecycle::PolicyView::Refused { ref reason, .. } if reason == "RoleNotFound"
        ));
    }

    proptest! {
        #[test]
        fn acceptance_is_a_partition_capped_at_30(
            entries in proptest::collection::vec(("[a-e]{1,3}", proptest::option::of(0i64..50)), 0..60)
        ) {
            let policies: Vec<(String, Option<DateTime<Utc>>)> =
                entries.iter().map(|(n, s)| (n.clone(), s.and_then(t))).collect();
            let (accepted, refused) = policy_acceptance(&policies);
            let names: BTreeSet<String> = policies.iter().map(|(n, _)| n.clone()).collect();
            prop_assert!(accepted.len() <= POLICY_LIMIT);
            prop_assert!(accepted.is_disjoint(&refused));
            prop_assert_eq!(accepted.union(&refused).cloned().collect::<BTreeSet<_>>(), names.clone());
            prop_assert_eq!(accepted.len(), names.len().min(POLICY_LIMIT));
            // Order of input does not matter.
            let mut reversed = policies.clone();
            reversed.reverse();
            prop_assert_eq!(policy_acceptance(&reversed), (accepted, refused));
        }

        #[test]
        fn a_policys_status_always_says_whether_it_is_in_force_and_why_not(
            name in prop_oneof![Just(String::new()), "[a-z][-a-z0-9]{0,20}", "\\PC{0,40}"],
            uid in proptest::option::of(prop_oneof![Just(String::new()), ".{0,40}"]),
            generation in proptest::option::of(any::<i64>()),
            within_limit in any::<bool>(),
            missing in proptest::collection::vec("\\PC{0,20}", 0..4),
            now in proptest::option::of(-10_000i64..10_000),
        ) {
            let mut p = policy(POLICY);
            p.metadata.name = Some(name);
            p.metadata.uid = uid;
            p.metadata.generation = generation;
            let now = now.map_or(DateTime::<Utc>::MAX_UTC, at);
            let s = policy_status(&p, within_limit, missing.clone(), now);
            prop_assert!(s.policy_id.as_deref().is_some_and(|id| !id.is_empty()));
            prop_assert_eq!(s.observed_generation, generation);
            prop_assert_eq!(s.conditions.len(), 1);
            let c = &s.conditions[0];
            prop_assert_eq!(c.observed_generation, generation);
            match (within_limit, missing.is_empty()) {
                (false, _) => {
                    prop_assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", reason::POLICY_LIMIT_EXCEEDED));
                    prop_assert!(c.message.contains("at most 30"));
                }
                (true, false) => {
                    prop_assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", reason::ROLE_NOT_FOUND));
                    for role in &missing {
                        prop_assert!(c.message.contains(role.as_str()), "{} does not name {role:?}", c.message);
                    }
                }
                (true, true) => prop_assert_eq!(c.status.as_str(), "True"),
            }
            // Deciding again later on the written status keeps the id and the transition time.
            let mut written = p.clone();
            written.status = Some(s.clone());
            let later = now.checked_add_signed(TimeDelta::hours(1)).unwrap_or(now);
            prop_assert_eq!(policy_status(&written, within_limit, missing, later), s);
        }
    }
}
