//! Which requests and policies a command is about: by name or by the seed's ids, and the
//! filters of `list`.

use kubepam_core::api::{AccessPolicy, ElevationRequest, Phase};

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
    /// `--to-review`: Pending requests the caller may decide and has not yet reviewed.
    pub to_review: bool,
}

impl Filter {
    /// Whether the filter needs to know who the caller is.
    pub fn needs_me(&self) -> bool {
        self.mine || self.to_review
    }
}

/// Whether `me` may still review `r`: Pending, in its approver group, not the requester, and
/// no review of theirs yet.
pub fn awaits_review_by(r: &ElevationRequest, me: &Me) -> bool {
    let status = r.status.as_ref();
    status.and_then(|s| s.phase) == Some(Phase::Pending)
        && status
            .and_then(|s| s.approver_group.as_deref())
            .is_some_and(|g| me.groups.iter().any(|mine| mine == g))
        && r.spec.requester.as_deref() != Some(me.username.as_str())
        && !r.spec.reviews.contains_key(&me.username)
}

/// Keep the requests that pass `filter`, oldest first (then by name), as people read a queue.
pub fn filter_requests(
    mut requests: Vec<ElevationRequest>,
    filter: &Filter,
    me: Option<&Me>,
) -> Vec<ElevationRequest> {
    requests.retain(|r| {
        let phase_ok = filter
            .phase
            .is_none_or(|p| r.status.as_ref().and_then(|s| s.phase) == Some(p));
        let mine_ok = !filter.mine
            || me.is_some_and(|me| r.spec.requester.as_deref() == Some(me.username.as_str()));
        let review_ok = !filter.to_review || me.is_some_and(|me| awaits_review_by(r, me));
        phase_ok && mine_ok && review_ok
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
        let names: Vec<_> = filter_requests(all.clone(), &filter, Some(&bob()))
            .into_iter()
            .filter_map(|r| r.metadata.name)
            .collect();
        assert_eq!(names, ["a"]);
        let dave = Me {
            username: "dave".into(),
            groups: vec!["ops-approvers".into()],
        };
        assert!(filter_requests(all.clone(), &filter, Some(&dave)).is_empty());
        let mine = Filter {
            mine: true,
            phase: Some(Phase::Pending),
            ..Filter::default()
        };
        let names: Vec<_> = filter_requests(all, &mine, Some(&bob()))
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

    proptest! {
        #[test]
        fn filtering_only_removes(phase in proptest::option::of(prop_oneof![Just(Phase::Pending), Just(Phase::Approved)]), mine: bool, to_review: bool) {
            let all = vec![
                request("a", "Pending", "alice", "{}"),
                request("b", "Approved", "bob", "{}"),
            ];
            let filter = Filter { phase, mine, to_review };
            let kept = filter_requests(all.clone(), &filter, Some(&bob()));
            prop_assert!(kept.len() <= all.len());
            prop_assert!(kept.iter().all(|k| all.contains(k)));
        }
    }
}
