//! Which requests and policies a command is about: by name or by the seed's ids, and the
//! filters of `list`.

use std::collections::BTreeSet;

use kubepam_core::api::{AccessPolicy, ElevationRequest, Phase, ReviewDecision, find_condition};

/// Who is calling, as the API server sees them (from a `SelfSubjectReview`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Me {
    /// The username.
    pub username: String,
    /// The groups.
    pub groups: Vec<String>,
}

/// The filters of `list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `--status`.
    pub phase: Option<Phase>,
    /// `--mine`: requests the caller made.
    pub mine: bool,
    /// `--to-review`: Pending requests the caller may decide and has not yet reviewed, and
    /// emergency grants the caller may review.
    pub to_review: bool,
    /// `--unreviewed`: emergency grants that wait for their review.
    pub unreviewed: bool,
}

impl Filter {
    /// Whether the filter needs to know who the caller is.
    pub fn needs_me(&self) -> bool {
        self.mine || self.to_review
    }
}

/// The caller as `list --to-review` needs them: who they are, and the policies whose requests
/// RBAC lets them decide (verb `approve` on `accesspolicies.kubepam.io/<policy>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The username and groups.
    pub me: Me,
    /// Policy names RBAC lets the caller approve.
    pub approves: BTreeSet<String>,
}

impl From<Me> for Caller {
    fn from(me: Me) -> Self {
        Self {
            me,
            approves: BTreeSet::new(),
        }
    }
}

use kubepam_core::lifecycle::reason;
pub use kubepam_core::lifecycle::{
    CONDITION_EMERGENCY, CONDITION_ESCALATED, CONDITION_REVIEW_REQUIRED,
};

/// Where an emergency grant's review stands, from its `ReviewRequired` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewState {
    /// Waiting for an approver's review, not yet due.
    Awaiting,
    /// Waiting, and past due.
    Overdue,
    /// Confirmed by an approver.
    Confirmed,
    /// Rejected by an approver.
    Rejected,
}

impl ReviewState {
    /// Whether the review is still to be written.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Awaiting | Self::Overdue)
    }
}

/// The review state of an emergency grant; `None` for a request that needs no review (or
/// before kubepam has recorded the grant).
pub fn review_state(r: &ElevationRequest) -> Option<ReviewState> {
    let conditions = &r.status.as_ref()?.conditions;
    let c = find_condition(conditions, CONDITION_REVIEW_REQUIRED)?;
    match (c.status.as_str(), c.reason.as_str()) {
        ("True", reason::REVIEW_OVERDUE) => Some(ReviewState::Overdue),
        ("True", _) => Some(ReviewState::Awaiting),
        (_, reason::EMERGENCY_REJECTED) => Some(ReviewState::Rejected),
        (_, reason::EMERGENCY_CONFIRMED) => Some(ReviewState::Confirmed),
        _ => None,
    }
}

/// Whether `r` is an emergency request: `spec.emergency`, or the `Emergency` condition.
pub fn is_emergency(r: &ElevationRequest) -> bool {
    r.spec.emergency
        || r.status.as_ref().is_some_and(|s| {
            find_condition(&s.conditions, CONDITION_EMERGENCY).is_some_and(|c| c.status == "True")
        })
}

/// The groups whose members may decide `r` now: `status.approverGroups`, or for a request
/// kubepam processed before escalation existed, `status.approverGroup`.
pub fn deciding_groups(r: &ElevationRequest) -> Vec<&str> {
    r.status
        .as_ref()
        .map(kubepam_core::api::ElevationRequestStatus::deciding_groups)
        .unwrap_or_default()
}

/// Whether the caller may decide or review `r`: a member of a group that may decide now, or
/// allowed by RBAC to approve its policy; never its requester.
pub fn may_decide(r: &ElevationRequest, caller: &Caller) -> bool {
    let in_group = deciding_groups(r)
        .iter()
        .any(|g| caller.me.groups.iter().any(|mine| mine == g));
    let by_rbac = caller.approves.contains(&r.spec.policy);
    (in_group || by_rbac) && r.spec.requester.as_deref() != Some(caller.me.username.as_str())
}

/// Whether `caller` may still decide `r`: Pending, may decide it, and no review of theirs yet.
pub fn awaits_review_by(r: &ElevationRequest, caller: &Caller) -> bool {
    r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Pending)
        && may_decide(r, caller)
        && !r.spec.reviews.contains_key(&caller.me.username)
}

/// Whether `r` is an emergency grant whose review is still to be written.
pub fn awaits_emergency_review(r: &ElevationRequest) -> bool {
    review_state(r).is_some_and(ReviewState::is_open)
}

/// Whether `caller` may review the emergency grant `r`, which still waits for its review, and
/// has not written a `Confirm` or `Reject` yet.
pub fn awaits_emergency_review_by(r: &ElevationRequest, caller: &Caller) -> bool {
    let reviewed =
        r.spec.reviews.get(&caller.me.username).is_some_and(|v| {
            matches!(v.decision, ReviewDecision::Confirm | ReviewDecision::Reject)
        });
    awaits_emergency_review(r) && may_decide(r, caller) && !reviewed
}

/// Why `r` is on the caller's `--to-review` list, or `None` when it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToReview {
    /// A Pending request to approve or deny.
    Decide,
    /// An emergency grant to confirm or reject.
    Emergency(ReviewState),
}

/// Why `r` waits for `caller`, if it does.
pub fn to_review_by(r: &ElevationRequest, caller: &Caller) -> Option<ToReview> {
    if awaits_review_by(r, caller) {
        Some(ToReview::Decide)
    } else if awaits_emergency_review_by(r, caller) {
        review_state(r).map(ToReview::Emergency)
    } else {
        None
    }
}

/// The policies `list --to-review` must ask RBAC about: those of requests that would wait for
/// the caller if RBAC let them approve, and that no group of theirs already lets them decide.
/// Each name once, so each is asked once per run.
pub fn policies_to_ask_about(requests: &[ElevationRequest], me: &Me) -> BTreeSet<String> {
    let as_member = Caller::from(me.clone());
    requests
        .iter()
        .filter(|r| {
            let mut as_approver = as_member.clone();
            as_approver.approves.insert(r.spec.policy.clone());
            to_review_by(r, &as_approver).is_some() && to_review_by(r, &as_member).is_none()
        })
        .map(|r| r.spec.policy.clone())
        .collect()
}

/// Keep the requests that pass `filter`, oldest first (then by name), as people read a queue.
pub fn filter_requests(
    mut requests: Vec<ElevationRequest>,
    filter: &Filter,
    caller: Option<&Caller>,
) -> Vec<ElevationRequest> {
    requests.retain(|r| {
        let phase_ok = filter
            .phase
            .is_none_or(|p| r.status.as_ref().and_then(|s| s.phase) == Some(p));
        let mine_ok = !filter.mine
            || caller.is_some_and(|c| r.spec.requester.as_deref() == Some(c.me.username.as_str()));
        let review_ok = !filter.to_review || caller.is_some_and(|c| to_review_by(r, c).is_some());
        let unreviewed_ok = !filter.unreviewed || awaits_emergency_review(r);
        phase_ok && mine_ok && review_ok && unreviewed_ok
    });
    requests.sort_by(|a, b| {
        let key = |r: &ElevationRequest| {
            (
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                r.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    requests
}

/// Why `me` cannot extend `r`, or `None` when the plugin sees no reason (admission has the
/// last word): only the requester may extend, and only a grant that is Approved.
pub fn why_not_extendable(r: &ElevationRequest, me: &str) -> Option<String> {
    let requester = r.spec.requester.as_deref().unwrap_or("unknown");
    if requester != me {
        return Some(format!(
            "it is {requester}'s request, and only the requester may extend a grant; ask for \
             your own with kubectl pam request {}",
            r.spec.policy
        ));
    }
    match r.status.as_ref().and_then(|s| s.phase) {
        Some(Phase::Approved) => None,
        None | Some(Phase::Pending) => Some(
            "it is not approved yet, so there is no grant to extend; ask for a longer \
             --duration in a new request, or wait for its decision"
                .to_owned(),
        ),
        Some(phase) => Some(format!(
            "it is {phase}, so there is no grant to extend; request access anew: kubectl pam \
             request {} --reason '...'",
            r.spec.policy
        )),
    }
}

/// The requests that extend the one named `name` (`spec.extends`), oldest first.
pub fn extensions_of(requests: &[ElevationRequest], name: &str) -> Vec<ElevationRequest> {
    let found = requests
        .iter()
        .filter(|r| r.spec.extends.as_deref() == Some(name))
        .cloned()
        .collect();
    filter_requests(found, &Filter::default(), None)
}

/// The object named `what`, else the one whose seed id is `what` (ids compare
/// case-insensitively, as UUIDs may be typed either way).
fn find_by_name_or_id<'a, K: kube::Resource>(
    items: &'a [K],
    what: &str,
    id: impl Fn(&K) -> Option<&str>,
) -> Option<&'a K> {
    items
        .iter()
        .find(|k| k.meta().name.as_deref() == Some(what))
        .or_else(|| {
            items
                .iter()
                .find(|k| id(k).is_some_and(|id| id.eq_ignore_ascii_case(what)))
        })
}

/// The request whose name or `status.requestId` is `what`.
pub fn find_request<'a>(
    requests: &'a [ElevationRequest],
    what: &str,
) -> Option<&'a ElevationRequest> {
    find_by_name_or_id(requests, what, |r| {
        r.status.as_ref().and_then(|s| s.request_id.as_deref())
    })
}

/// The policy whose name or `status.policyId` is `what`.
pub fn find_policy<'a>(policies: &'a [AccessPolicy], what: &str) -> Option<&'a AccessPolicy> {
    find_by_name_or_id(policies, what, |p| {
        p.status.as_ref().and_then(|s| s.policy_id.as_deref())
    })
}

/// Whether `what` could be a seed id (a UUID) rather than a name; only then is a name lookup
/// that failed worth a second look through the list.
pub fn looks_like_id(what: &str) -> bool {
    uuid::Uuid::parse_str(what).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(name: &str, phase: &str, requester: &str, reviews: &str) -> ElevationRequest {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: kubepam.io/v1alpha1
kind: ElevationRequest
metadata: {{ name: {name} }}
spec: {{ policy: p, reason: r, requester: {requester}, reviews: {reviews} }}
status: {{ phase: {phase}, requestId: ID-{name}, approverGroup: pam-approvers }}
"
        ))
        .unwrap()
    }

    fn bob() -> Me {
        Me {
            username: "bob".into(),
            groups: vec!["pam-approvers".into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn to_review_is_pending_in_my_group_not_mine_and_not_yet_reviewed() {
        let all = vec![
            request("a", "Pending", "alice", "{}"),
            request("b", "Approved", "alice", "{}"),
            request("c", "Pending", "bob", "{}"),
            request("d", "Pending", "alice", "{ bob: { decision: Approve } }"),
        ];
        let filter = Filter {
            to_review: true,
            ..Filter::default()
        };
        let names: Vec<_> = filter_requests(all.clone(), &filter, Some(&Caller::from(bob())))
            .into_iter()
            .filter_map(|r| r.metadata.name)
            .collect();
        assert_eq!(names, ["a"]);
        let dave = Me {
            username: "dave".into(),
            groups: vec!["ops-approvers".into()],
        };
        assert!(filter_requests(all.clone(), &filter, Some(&Caller::from(dave))).is_empty());
        let mine = Filter {
            mine: true,
            phase: Some(Phase::Pending),
            ..Filter::default()
        };
        let names: Vec<_> = filter_requests(all, &mine, Some(&Caller::from(bob())))
            .into_iter()
            .filter_map(|r| r.metadata.name)
            .collect();
        assert_eq!(names, ["c"]);
    }

    #[test]
    fn requests_are_found_by_name_or_id() {
        let all = vec![
            request("a", "Pending", "alice", "{}"),
            request("b", "Pending", "alice", "{}"),
        ];
        assert_eq!(
            find_request(&all, "b")
                .and_then(|r| r.metadata.name.clone())
                .as_deref(),
            Some("b")
        );
        assert_eq!(
            find_request(&all, "id-a")
                .and_then(|r| r.metadata.name.clone())
                .as_deref(),
            Some("a")
        );
        assert!(find_request(&all, "c").is_none());
        assert!(looks_like_id("0b7c8e2a-1f9e-4c57-9f6c-8a1d2b3c4d5e"));
        assert!(!looks_like_id("alice-prod-cleanup"));
    }

    #[test]
    fn only_my_approved_grant_can_be_extended() {
        use crate::fixtures::alice_request;
        let approved = alice_request("x", "{}", "{ phase: Approved }");
        assert_eq!(why_not_extendable(&approved, "alice"), None);
        let theirs = why_not_extendable(&approved, "bob").unwrap();
        assert!(theirs.contains("it is alice's request"), "{theirs}");
        assert!(
            theirs.contains("kubectl pam request prod-delete-deployments"),
            "{theirs}"
        );
        for status in ["{}", "{ phase: Pending }"] {
            let pending = alice_request("x", "{}", status);
            let why = why_not_extendable(&pending, "alice").unwrap();
            assert!(why.contains("not approved yet"), "{why}");
        }
        for phase in ["Denied", "Expired", "Revoked"] {
            let ended = alice_request("x", "{}", &format!("{{ phase: {phase} }}"));
            let why = why_not_extendable(&ended, "alice").unwrap();
            assert!(
                why.starts_with(&format!("it is {phase}, so there is no grant")),
                "{why}"
            );
        }
    }

    #[test]
    fn extensions_are_the_requests_that_name_it() {
        use crate::fixtures::alice_request;
        // Oldest first; these were made in the same second, so by name.
        let all = vec![
            alice_request("x-2", "{ extends: x }", "{ phase: Pending }"),
            alice_request("x", "{}", "{ phase: Approved }"),
            alice_request("x-1", "{ extends: x }", "{ phase: Approved }"),
            alice_request("y-1", "{ extends: y }", "{}"),
        ];
        let names: Vec<_> = extensions_of(&all, "x")
            .into_iter()
            .filter_map(|r| r.metadata.name)
            .collect();
        assert_eq!(names, ["x-1", "x-2"]);
        assert!(extensions_of(&all, "x-1").is_empty());
    }

    fn names(requests: Vec<ElevationRequest>) -> Vec<String> {
        requests
            .into_iter()
            .filter_map(|r| r.metadata.name)
            .collect()
    }

    fn caller(name: &str, groups: &[&str], approves: &[&str]) -> Caller {
        Caller {
            me: Me {
                username: name.into(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            },
            approves: approves.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// An emergency grant of `requester`'s whose review is in `state` (a `ReviewRequired`
    /// status and reason), created at `created`.
    fn emergency(name: &str, requester: &str, created: &str, review: &str) -> ElevationRequest {
        let (status, reason) = review.split_once('/').unwrap();
        let mut r = crate::fixtures::alice_request(
            name,
            "{ emergency: true }",
            &format!(
                "{{ phase: Approved, approverGroup: pam-approvers, approverGroups: [pam-approvers],
                   reviewDueAt: '2025-01-02T11:00:00Z',
                   conditions: [
                     {{ type: Emergency, status: 'True', reason: BreakGlass, message: m,
                        lastTransitionTime: '2025-01-01T11:00:00Z' }},
                     {{ type: ReviewRequired, status: '{status}', reason: {reason}, message: m,
                        lastTransitionTime: '2025-01-01T11:00:00Z' }}] }}"
            ),
        );
        r.spec.requester = Some(requester.into());
        r.metadata.creation_timestamp =
            Some(serde_json::from_value(serde_json::json!(created)).unwrap());
        r
    }

    #[test]
    fn to_review_follows_the_groups_that_may_decide_now() {
        use crate::fixtures::alice_request;
        let escalated = alice_request(
            "escalated",
            "{}",
            "{ phase: Pending, approverGroup: pam-approvers,
               approverGroups: [pam-approvers, ops-leads] }",
        );
        let not_yet = alice_request(
            "not-yet",
            "{}",
            "{ phase: Pending, approverGroup: pam-approvers, approverGroups: [pam-approvers],
               escalatesAt: '2025-01-01T11:30:00Z' }",
        );
        // Processed before escalation existed: only approverGroup.
        let older = alice_request(
            "older",
            "{}",
            "{ phase: Pending, approverGroup: pam-approvers }",
        );
        let all = vec![escalated.clone(), not_yet.clone(), older.clone()];
        let to_review = Filter {
            to_review: true,
            ..Filter::default()
        };
        let lead = caller("erin", &["ops-leads"], &[]);
        assert_eq!(
            names(filter_requests(all.clone(), &to_review, Some(&lead))),
            ["escalated"]
        );
        let bob = caller("bob", &["pam-approvers"], &[]);
        assert_eq!(
            names(filter_requests(all.clone(), &to_review, Some(&bob))),
            ["escalated", "not-yet", "older"]
        );
        assert_eq!(deciding_groups(&older), ["pam-approvers"]);
        assert_eq!(deciding_groups(&escalated), ["pam-approvers", "ops-leads"]);
        // RBAC's approve on the policy is enough, without any group.
        let signer = caller("frank", &[], &["prod-delete-deployments"]);
        assert_eq!(
            names(filter_requests(all.clone(), &to_review, Some(&signer))),
            ["escalated", "not-yet", "older"]
        );
        let other_policy = caller("frank", &[], &["another-policy"]);
        assert!(filter_requests(all.clone(), &to_review, Some(&other_policy)).is_empty());
        // Never my own request, whatever RBAC and my groups say.
        let alice = caller(
            "alice",
            &["pam-approvers", "ops-leads"],
            &["prod-delete-deployments"],
        );
        assert!(filter_requests(all, &to_review, Some(&alice)).is_empty());
    }

    #[test]
    fn emergency_grants_wait_for_review_until_confirmed_or_rejected() {
        let all = vec![
            emergency(
                "late",
                "alice",
                "2025-01-01T09:00:00Z",
                "True/ReviewOverdue",
            ),
            emergency(
                "waiting",
                "alice",
                "2025-01-01T10:00:00Z",
                "True/AwaitingReview",
            ),
            emergency(
                "early",
                "alice",
                "2025-01-01T08:00:00Z",
                "True/AwaitingReview",
            ),
            emergency("mine", "bob", "2025-01-01T08:30:00Z", "True/AwaitingReview"),
            emergency(
                "ok",
                "alice",
                "2025-01-01T07:00:00Z",
                "False/EmergencyConfirmed",
            ),
            emergency(
                "no",
                "alice",
                "2025-01-01T07:00:00Z",
                "False/EmergencyRejected",
            ),
            crate::fixtures::alice_request("plain", "{}", "{ phase: Approved }"),
        ];
        let unreviewed = Filter {
            unreviewed: true,
            ..Filter::default()
        };
        // Anyone may see what waits, oldest first.
        assert_eq!(
            names(filter_requests(all.clone(), &unreviewed, None)),
            ["early", "mine", "late", "waiting"]
        );
        assert_eq!(review_state(&all[0]), Some(ReviewState::Overdue));
        assert_eq!(review_state(&all[1]), Some(ReviewState::Awaiting));
        assert_eq!(review_state(&all[4]), Some(ReviewState::Confirmed));
        assert_eq!(review_state(&all[5]), Some(ReviewState::Rejected));
        assert_eq!(review_state(&all[6]), None);
        assert!(is_emergency(&all[4]) && !is_emergency(&all[6]));
        // An approver sees them in their queue, marked, but not their own.
        let bob = caller("bob", &["pam-approvers"], &[]);
        let to_review = Filter {
            to_review: true,
            ..Filter::default()
        };
        let queue = filter_requests(all.clone(), &to_review, Some(&bob));
        assert_eq!(names(queue.clone()), ["early", "late", "waiting"]);
        assert_eq!(
            to_review_by(&queue[1], &bob),
            Some(ToReview::Emergency(ReviewState::Overdue))
        );
        // Once bob wrote his Confirm, it leaves his queue before kubepam catches up.
        let mut confirmed = all[1].clone();
        confirmed.spec.reviews.insert(
            "bob".into(),
            serde_yaml_ng::from_str("{ decision: Confirm }").unwrap(),
        );
        assert_eq!(to_review_by(&confirmed, &bob), None);
        // Outsiders see nothing to review; the filters combine.
        let dave = caller("dave", &["developers"], &[]);
        assert!(filter_requests(all.clone(), &to_review, Some(&dave)).is_empty());
        let both = Filter {
            to_review: true,
            unreviewed: true,
            ..Filter::default()
        };
        let alice = caller("alice", &["pam-approvers"], &[]);
        assert_eq!(names(filter_requests(all, &both, Some(&alice))), ["mine"]);
    }

    #[test]
    fn rbac_is_asked_once_per_policy_only_where_groups_do_not_decide() {
        use crate::fixtures::alice_request;
        let pending = |name: &str, policy: &str, groups: &str| {
            let mut r = alice_request(
                name,
                "{}",
                &format!("{{ phase: Pending, approverGroups: [{groups}] }}"),
            );
            r.spec.policy = policy.into();
            r
        };
        let all = vec![
            pending("a1", "a", "pam-approvers"),
            pending("a2", "a", "pam-approvers"),
            pending("b1", "b", "ops-leads"),
            pending("c1", "c", "pam-approvers"),
            emergency("e1", "alice", "2025-01-01T09:00:00Z", "True/AwaitingReview"),
            crate::fixtures::alice_request("done", "{}", "{ phase: Denied }"),
        ];
        let erin = Me {
            username: "erin".into(),
            groups: vec!["ops-leads".into()],
        };
        let asked: Vec<String> = policies_to_ask_about(&all, &erin).into_iter().collect();
        assert_eq!(asked, ["a", "c", "prod-delete-deployments"]);
        // My own requests never need the question.
        let alice = Me {
            username: "alice".into(),
            groups: vec![],
        };
        assert!(policies_to_ask_about(&all, &alice).is_empty());
    }

    proptest! {
        #[test]
        fn filtering_only_removes(phase in proptest::option::of(prop_oneof![Just(Phase::Pending), Just(Phase::Approved)]), mine: bool, to_review: bool, unreviewed: bool) {
            let all = vec![
                request("a", "Pending", "alice", "{}"),
                request("b", "Approved", "bob", "{}"),
            ];
            let filter = Filter { phase, mine, to_review, unreviewed };
            let kept = filter_requests(all.clone(), &filter, Some(&Caller::from(bob())));
            prop_assert!(kept.len() <= all.len());
            prop_assert!(kept.iter().all(|k| all.contains(k)));
        }
    }
}
