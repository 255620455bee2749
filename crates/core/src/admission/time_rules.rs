//! Admission of the time and justification rules: verified reasons, booked windows,
//! extensions, quotas and the requester's release.

#![allow(clippy::needless_pass_by_value)]

use chrono::TimeDelta;
use serde_json::{Value, json};

use super::tests::{
    accepts, base_spec, caller, er, now, pending, policy, policy_update, rejects, update,
    with_reviews,
};
use super::*;
use crate::api::{AccessPolicy, ElevationRequest};

/// A Task policy with every rule of this issue.
fn strict_policy() -> AccessPolicy {
    policy(
        "prod-delete",
        json!({
            "type": "Task", "approvalType": "Manual", "approverGroup": "approvers",
            "task": {"verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"]},
            "scope": {"namespaces": ["prod"]},
            "reasonPattern": "^(INC|CHG)-[0-9]+",
            "reasonHint": "an incident or change number, e.g. INC-1234",
            "maxScheduleAhead": "168h",
            "maxOpenPerRequester": 1,
            "extension": {"maxExtensions": 1, "maxTotal": "12h"},
        }),
        true,
    )
}

fn new_request(reason: &str, extra: Value) -> ElevationRequest {
    let mut spec = base_spec();
    spec["reason"] = json!(reason);
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    er(spec, json!({}))
}

/// alice's Approved request `grant` under the strict policy, granted until `until`.
fn granted(name: &str, until: chrono::DateTime<chrono::Utc>, status: Value) -> ElevationRequest {
    let mut r = er(base_spec(), json!({}));
    r.metadata.name = Some(name.to_owned());
    let mut st = json!({
        "phase": "Approved", "approverGroup": "approvers",
        "decidedAt": (now() - TimeDelta::hours(1)).to_rfc3339(),
        "grantedFrom": (now() - TimeDelta::hours(1)).to_rfc3339(),
        "grantedUntil": until.to_rfc3339(),
    });
    for (k, v) in status.as_object().unwrap() {
        st[k] = v.clone();
    }
    r.status = serde_json::from_value(st).unwrap();
    r
}

/// alice creates a request with `reason` and `extra` spec fields, extending `extended`.
pub(super) fn fits(reason: &str, extra: Value, extended: Option<&ElevationRequest>) -> Verdict {
    let p = strict_policy();
    request_fits_policy(
        &caller("alice", &[]),
        &new_request(reason, extra),
        Some(&p),
        None,
        extended,
        [],
        now(),
    )
}

/// alice already holds one open request under the strict policy, and asks for another.
pub(super) fn over_quota() -> Verdict {
    let p = strict_policy();
    let open = granted("first", now() + TimeDelta::hours(1), json!({}));
    request_fits_policy(
        &caller("alice", &[]),
        &new_request("INC-2", json!({})),
        Some(&p),
        None,
        None,
        [&open],
        now(),
    )
}

#[test]
fn a_reason_with_a_ticket_is_admitted_and_one_without_is_refused_with_the_hint() {
    accepts(&fits("INC-1234 web pods crash-loop", json!({}), None));
    rejects(
        &fits("fix", json!({}), None),
        Reason::ReasonMismatch,
        "an incident or change number, e.g. INC-1234",
    );
    // The pattern is anchored by its author: a ticket later in the text is not enough.
    rejects(
        &fits("fix, see INC-1", json!({}), None),
        Reason::ReasonMismatch,
        "does not",
    );
}

#[test]
fn a_policy_with_a_bad_pattern_is_refused_when_written() {
    let bad = policy(
        "p",
        json!({"type": "Role", "role": "view", "approvalType": "Manual", "reasonPattern": "(INC"}),
        false,
    );
    rejects(
        &policy_update(&bad),
        Reason::InvalidPolicy,
        "not a valid regular expression",
    );
}

#[test]
fn a_window_inside_the_policy_limit_is_admitted_and_one_beyond_is_refused() {
    let in_two_days = (now() + TimeDelta::hours(48)).to_rfc3339();
    accepts(&fits("INC-1", json!({"startAt": in_two_days}), None));
    let in_a_month = (now() + TimeDelta::days(30)).to_rfc3339();
    rejects(
        &fits("INC-1", json!({"startAt": in_a_month}), None),
        Reason::InvalidSchedule,
        "at most 168h",
    );
}

#[test]
fn a_window_that_has_already_ended_is_refused() {
    let yesterday = (now() - TimeDelta::hours(24)).to_rfc3339();
    rejects(
        &fits(
            "INC-1",
            json!({"startAt": yesterday, "duration": "1h"}),
            None,
        ),
        Reason::InvalidSchedule,
        "ended",
    );
}

#[test]
fn an_extension_of_ones_own_approved_grant_is_admitted() {
    let grant = granted("grant", now() + TimeDelta::hours(1), json!({}));
    accepts(&fits(
        "INC-1",
        json!({"extends": "grant", "duration": "2h"}),
        Some(&grant),
    ));
}

#[test]
fn an_extension_of_someone_elses_grant_is_refused() {
    let mut bobs = granted("bobs", now() + TimeDelta::hours(1), json!({}));
    bobs.spec.requester = Some("bob".to_owned());
    rejects(
        &fits("INC-1", json!({"extends": "bobs"}), Some(&bobs)),
        Reason::InvalidExtension,
        "only the requester may extend",
    );
}

#[test]
fn an_extension_of_an_ended_or_pending_grant_is_refused() {
    let ended = granted("ended", now() - TimeDelta::minutes(1), json!({}));
    rejects(
        &fits("INC-1", json!({"extends": "ended"}), Some(&ended)),
        Reason::InvalidExtension,
        "ended before",
    );
    let expired = granted(
        "expired",
        now() + TimeDelta::hours(1),
        json!({"phase": "Expired"}),
    );
    rejects(
        &fits("INC-1", json!({"extends": "expired"}), Some(&expired)),
        Reason::InvalidExtension,
        "ended before",
    );
    let waiting = granted(
        "waiting",
        now() + TimeDelta::hours(1),
        json!({"phase": "Pending"}),
    );
    rejects(
        &fits("INC-1", json!({"extends": "waiting"}), Some(&waiting)),
        Reason::InvalidExtension,
        "not approved yet",
    );
}

#[test]
fn an_extension_beyond_the_policy_limits_is_refused_with_what_is_left() {
    let grant = granted("grant", now() + TimeDelta::hours(1), json!({}));
    // Opened an hour ago, ends in one: 12h in all leaves 10h more.
    rejects(
        &fits(
            "INC-1",
            json!({"extends": "grant", "duration": "11h"}),
            Some(&grant),
        ),
        Reason::InvalidExtension,
        "extend by at most 10h",
    );
    let second = granted(
        "second",
        now() + TimeDelta::hours(1),
        json!({"extension": {
            "extends": "grant", "number": 1,
            "chainStart": (now() - TimeDelta::hours(3)).to_rfc3339(),
            "continuesFrom": (now() - TimeDelta::hours(1)).to_rfc3339(),
        }}),
    );
    rejects(
        &fits("INC-1", json!({"extends": "second"}), Some(&second)),
        Reason::InvalidExtension,
        "at most 1 extension",
    );
}

#[test]
fn the_policy_quota_counts_open_requests_and_says_the_count_and_the_limit() {
    rejects(
        &over_quota(),
        Reason::QuotaExceeded,
        "you already hold 1 open request(s) under policy prod-delete",
    );
    // An ended request does not count.
    let p = strict_policy();
    let ended = granted(
        "old",
        now() + TimeDelta::hours(1),
        json!({"phase": "Expired"}),
    );
    accepts(&request_fits_policy(
        &caller("alice", &[]),
        &new_request("INC-2", json!({})),
        Some(&p),
        None,
        None,
        [&ended],
        now(),
    ));
}

#[test]
fn the_controls_pending_quota_counts_pending_requests_under_every_policy() {
    let p = policy(
        "other",
        json!({"type": "Role", "role": "view", "approvalType": "Manual"}),
        true,
    );
    let control: crate::api::PrivilegedAccessControl = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "PrivilegedAccessControl",
        "metadata": {"name": "default"},
        "spec": {"defaultApproverGroup": "approvers", "maxPendingPerRequester": 2},
    }))
    .unwrap();
    let waiting = |name: &str| {
        granted(
            name,
            now() + TimeDelta::hours(1),
            json!({"phase": "Pending"}),
        )
    };
    let (a, b) = (waiting("a"), waiting("b"));
    rejects(
        &request_fits_policy(
            &caller("alice", &[]),
            &new_request("INC-2", json!({"policy": "other"})),
            Some(&p),
            Some(&control),
            None,
            [&a, &b],
            now(),
        ),
        Reason::QuotaExceeded,
        "you already have 2 Pending request(s)",
    );
    accepts(&request_fits_policy(
        &caller("alice", &[]),
        &new_request("INC-2", json!({"policy": "other"})),
        Some(&p),
        Some(&control),
        None,
        [&a],
        now(),
    ));
}

fn approved() -> Value {
    json!({"phase": "Approved", "approverGroup": "approvers"})
}

#[test]
fn the_requester_may_release_their_approved_grant() {
    accepts(&update(
        "alice",
        &[],
        (base_spec(), approved()),
        with_reviews(json!({"alice": {"decision": "Release", "comment": "done"}})),
    ));
}

#[test]
fn nobody_else_may_release_not_even_an_approver() {
    rejects(
        &update(
            "bob",
            &["approvers"],
            (base_spec(), approved()),
            with_reviews(json!({"bob": {"decision": "Release"}})),
        ),
        Reason::ReleaseNotYours,
        "only the requester (alice) may release",
    );
    // Nor may an approver write the release into the requester's entry.
    rejects(
        &update(
            "bob",
            &["approvers"],
            (base_spec(), approved()),
            with_reviews(json!({"alice": {"decision": "Release"}})),
        ),
        Reason::OthersReview,
        "theirs alone",
    );
}

#[test]
fn a_release_needs_a_grant_and_cannot_be_taken_back() {
    rejects(
        &update(
            "alice",
            &[],
            (base_spec(), pending()),
            with_reviews(json!({"alice": {"decision": "Release"}})),
        ),
        Reason::NothingToRelease,
        "no grant to release",
    );
    rejects(
        &update(
            "alice",
            &[],
            (
                with_reviews(json!({"alice": {"decision": "Release"}})),
                approved(),
            ),
            base_spec(),
        ),
        Reason::PhaseFinal,
        "cannot be taken back",
    );
}

#[test]
fn the_requesters_other_reviews_are_still_refused_and_point_to_release() {
    rejects(
        &update(
            "alice",
            &["approvers"],
            (base_spec(), approved()),
            with_reviews(json!({"alice": {"decision": "Revoke"}})),
        ),
        Reason::SelfReview,
        "decision Release",
    );
}

#[test]
fn start_at_and_extends_cannot_change_after_creation() {
    let mut booked = base_spec();
    booked["startAt"] = json!("2025-06-02T09:00:00Z");
    let mut moved = booked.clone();
    moved["startAt"] = json!("2025-06-01T09:00:00Z");
    rejects(
        &update("alice", &[], (booked, pending()), moved),
        Reason::SpecImmutable,
        "spec.startAt",
    );
    let mut extension = base_spec();
    extension["extends"] = json!("a");
    let mut other = extension.clone();
    other["extends"] = json!("b");
    rejects(
        &update("alice", &[], (extension, pending()), other),
        Reason::SpecImmutable,
        "spec.extends",
    );
}

#[test]
fn auto_extensions_of_a_manual_policy_need_a_total_limit() {
    // Without maxTotal one approval would grow without end: refused, even with
    // maxExtensions (it bounds how many, not how long).
    for extension in [
        json!({"approvalType": "Auto"}),
        json!({"approvalType": "Auto", "maxExtensions": 1}),
    ] {
        let unbounded = policy(
            "p",
            json!({"type": "Role", "role": "view", "approvalType": "Manual",
                   "extension": extension}),
            false,
        );
        rejects(
            &policy_update(&unbounded),
            Reason::InvalidPolicy,
            "needs extension.maxTotal",
        );
    }
    let bounded = policy(
        "p",
        json!({"type": "Role", "role": "view", "approvalType": "Manual",
               "extension": {"approvalType": "Auto", "maxTotal": "12h"}}),
        false,
    );
    accepts(&policy_update(&bounded));
}
