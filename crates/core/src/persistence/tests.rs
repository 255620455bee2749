// A table of cases reads best as one list.
#![allow(clippy::too_many_lines)]

use chrono::{TimeDelta, TimeZone};
use kube::core::admission::Operation as Admission;
use serde_json::json;

use super::*;
use crate::api::{RoleRule, TaskSpec};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn op<'a>(
    operation: Admission,
    group: &'a str,
    resource: &'a str,
    sub: Option<&'a str>,
    namespace: Option<&'a str>,
) -> GuardOperation<'a> {
    GuardOperation {
        operation,
        api_group: group,
        resource,
        subresource: sub,
        name: Some("x"),
        namespace,
        collection: false,
    }
}

fn admin_of(namespaces: &[&str]) -> GrantScope {
    GrantScope {
        policy_type: PolicyType::Role,
        task: None,
        roles: vec!["admin".into()],
        namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
        role_rules: std::collections::BTreeMap::from([(
            "admin".to_owned(),
            vec![RoleRule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                ..RoleRule::default()
            }],
        )]),
    }
}

fn grant(scope: &GrantScope, allow: bool) -> ActiveGrant<'_> {
    ActiveGrant {
        request: "r1",
        scope,
        until: now() + TimeDelta::hours(1),
        allow_persistence: allow,
    }
}

const NS: &str = "kubepam-system";

#[test]
fn calls_that_make_lasting_access_are_named() {
    let rbac = grant::RBAC_API_GROUP;
    let cases = [
        (
            op(Admission::Create, rbac, "rolebindings", None, Some("prod")),
            None,
            Some(Lasting::Rbac),
        ),
        (
            op(Admission::Update, rbac, "clusterroles", None, None),
            None,
            Some(Lasting::Rbac),
        ),
        (
            op(Admission::Delete, rbac, "rolebindings", None, Some("prod")),
            None,
            None,
        ),
        (
            op(
                Admission::Create,
                "",
                "serviceaccounts",
                Some("token"),
                Some("prod"),
            ),
            Some(json!({"spec": {"expirationSeconds": 172_800}})),
            Some(Lasting::Token {
                seconds: 172_800,
                extended: false,
            }),
        ),
        (
            op(
                Admission::Create,
                "",
                "serviceaccounts",
                Some("token"),
                Some("prod"),
            ),
            Some(
                json!({"spec": {"expirationSeconds": 3607, "boundObjectRef": {"kind": "Pod", "name": "p"}}}),
            ),
            Some(Lasting::Token {
                seconds: 3607,
                extended: true,
            }),
        ),
        (
            op(Admission::Create, "", "secrets", None, Some("prod")),
            Some(json!({"type": "kubernetes.io/service-account-token"})),
            Some(Lasting::TokenSecret),
        ),
        (
            op(Admission::Create, "", "secrets", None, Some("prod")),
            Some(json!({"type": "Opaque"})),
            None,
        ),
        (
            op(
                Admission::Update,
                "certificates.k8s.io",
                "certificatesigningrequests",
                Some("approval"),
                None,
            ),
            None,
            Some(Lasting::CertificateRequest),
        ),
        (
            op(
                Admission::Create,
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                None,
                None,
            ),
            None,
            Some(Lasting::Admission),
        ),
        (
            op(Admission::Delete, "apps", "deployments", None, Some(NS)),
            None,
            Some(Lasting::KubepamsOwn),
        ),
        (
            op(Admission::Create, "", "pods", None, Some("prod")),
            None,
            None,
        ),
        (
            op(
                Admission::Update,
                "kubepam.io",
                "privilegedaccesscontrols",
                None,
                None,
            ),
            None,
            Some(Lasting::KubepamsOwn),
        ),
        (
            op(
                Admission::Delete,
                "kubepam.io",
                "accesspolicies",
                None,
                None,
            ),
            None,
            Some(Lasting::KubepamsOwn),
        ),
        (
            GuardOperation {
                name: Some(NS),
                ..op(Admission::Delete, "", "namespaces", None, None)
            },
            None,
            Some(Lasting::KubepamsOwn),
        ),
        (
            op(Admission::Delete, "", "namespaces", None, None),
            None,
            None,
        ),
        (
            op(
                Admission::Create,
                "apiregistration.k8s.io",
                "apiservices",
                None,
                None,
            ),
            None,
            Some(Lasting::Admission),
        ),
    ];
    for (call, object, want) in cases {
        assert_eq!(lasting(&call, object.as_ref(), NS), want, "{call:?}");
    }
}

#[test]
fn a_binding_through_a_grant_is_refused_unless_the_policy_allows_it() {
    let scope = admin_of(&["prod"]);
    let call = op(
        Admission::Create,
        grant::RBAC_API_GROUP,
        "rolebindings",
        None,
        Some("prod"),
    );
    let refused = persistence_verdict(&call, Lasting::Rbac, &[grant(&scope, false)], false, now());
    let refusal = refused.refusal().expect("refused");
    assert_eq!(refusal.reason, Reason::PersistentAccess);
    assert!(
        refusal.message.contains("request r1"),
        "{}",
        refusal.message
    );
    assert!(
        refusal.message.contains("allowPersistence: true"),
        "{}",
        refusal.message
    );
    assert!(
        persistence_verdict(&call, Lasting::Rbac, &[grant(&scope, true)], false, now())
            .is_allowed()
    );
    // What the caller could do anyway is never refused.
    assert!(
        persistence_verdict(&call, Lasting::Rbac, &[grant(&scope, false)], true, now())
            .is_allowed()
    );
    // Outside the grant's scope it is not made through the grant.
    let elsewhere = op(
        Admission::Create,
        grant::RBAC_API_GROUP,
        "rolebindings",
        None,
        Some("dev"),
    );
    assert!(
        persistence_verdict(
            &elsewhere,
            Lasting::Rbac,
            &[grant(&scope, false)],
            false,
            now()
        )
        .is_allowed()
    );
    // Past its end, until its RBAC is removed, the grant still counts.
    let mut ended = grant(&scope, false);
    ended.until = now();
    assert!(!persistence_verdict(&call, Lasting::Rbac, &[ended], false, now()).is_allowed());
}

#[test]
fn a_token_may_live_as_long_as_the_grant() {
    let scope = admin_of(&[]);
    let call = op(
        Admission::Create,
        "",
        "serviceaccounts",
        Some("token"),
        Some("prod"),
    );
    let token = |seconds, extended| Lasting::Token { seconds, extended };
    let g = [grant(&scope, false)];
    assert!(persistence_verdict(&call, token(600, false), &g, false, now()).is_allowed());
    assert!(persistence_verdict(&call, token(3600, false), &g, false, now()).is_allowed());
    let long = persistence_verdict(&call, token(172_800, false), &g, false, now());
    assert!(
        long.message()
            .unwrap()
            .contains("expirationSeconds at most 3600"),
        "{long:?}"
    );
    assert!(!persistence_verdict(&call, token(3607, true), &g, false, now()).is_allowed());
    assert!(
        persistence_verdict(
            &call,
            token(172_800, false),
            &[grant(&scope, true)],
            false,
            now()
        )
        .is_allowed()
    );
}

#[test]
fn kubepams_own_namespace_is_refused_whatever_the_policy_allows() {
    let scope = admin_of(&[]);
    let call = op(
        Admission::Create,
        "",
        "serviceaccounts",
        Some("token"),
        Some(NS),
    );
    let v = persistence_verdict(
        &call,
        Lasting::KubepamsOwn,
        &[grant(&scope, true)],
        false,
        now(),
    );
    assert_eq!(
        v.refusal().map(|r| r.reason),
        Some(Reason::PersistentAccess)
    );
    assert!(
        persistence_verdict(
            &call,
            Lasting::KubepamsOwn,
            &[grant(&scope, true)],
            true,
            now()
        )
        .is_allowed()
    );
}

#[test]
fn a_task_grant_covers_only_its_task() {
    let scope = GrantScope {
        policy_type: PolicyType::Task,
        task: Some(TaskSpec {
            verbs: vec!["delete".into()],
            api_groups: vec!["apps".into()],
            resources: vec!["deployments".into()],
            resource_names: None,
        }),
        roles: Vec::new(),
        namespaces: Vec::new(),
        role_rules: std::collections::BTreeMap::new(),
    };
    let call = op(
        Admission::Create,
        grant::RBAC_API_GROUP,
        "rolebindings",
        None,
        Some("prod"),
    );
    // Not made through this grant: RBAC allowed it for another reason.
    assert!(
        persistence_verdict(&call, Lasting::Rbac, &[grant(&scope, false)], false, now())
            .is_allowed()
    );
}

proptest::proptest! {
    /// Standing rights, or no grant that allows the call, always pass; a refusal always names
    /// the request it was made through.
    #[test]
    fn only_calls_made_through_a_grant_are_refused(
        standing in proptest::bool::ANY,
        allow in proptest::bool::ANY,
        namespaced in proptest::bool::ANY,
        wide in proptest::bool::ANY,
        seconds in 0i64..200_000,
    ) {
        let scope = admin_of(if wide { &[] } else { &["prod"] });
        let ns = namespaced.then_some("prod");
        let call = op(Admission::Create, "", "serviceaccounts", Some("token"), ns);
        let v = persistence_verdict(&call, Lasting::Token { seconds, extended: false }, &[grant(&scope, allow)], standing, now());
        let through = wide || namespaced;
        if standing || !through || allow || seconds <= 3600 {
            proptest::prop_assert!(v.is_allowed());
        } else {
            proptest::prop_assert!(v.message().unwrap().contains("r1"));
        }
    }
}

#[test]
fn what_is_recorded_on_the_request() {
    let scope = admin_of(&["prod"]);
    let create = |group, resource, ns| op(Admission::Create, group, resource, None, ns);
    let rbac = grant::RBAC_API_GROUP;
    assert!(records(
        &create(rbac, "rolebindings", Some("prod")),
        None,
        &scope,
        &[]
    ));
    assert!(records(
        &create("", "serviceaccounts", Some("prod")),
        None,
        &scope,
        &[]
    ));
    // Outside the grant's scope, or not a creation: not the grant's doing.
    assert!(!records(
        &create("", "serviceaccounts", Some("dev")),
        None,
        &scope,
        &[]
    ));
    assert!(!records(
        &op(Admission::Update, rbac, "rolebindings", None, Some("prod")),
        None,
        &scope,
        &[]
    ));
    // A pod counts when it runs as an account made during the grant.
    let pod = json!({"spec": {"serviceAccountName": "helper"}});
    let pods = create("", "pods", Some("prod"));
    assert!(records(&pods, Some(&pod), &scope, &["helper"]));
    assert!(!records(&pods, Some(&pod), &scope, &["other"]));
    assert!(!records(
        &create("", "configmaps", Some("prod")),
        None,
        &scope,
        &[]
    ));
}

#[test]
fn lasting_objects_are_kept_once_and_bounded() {
    let mut status = ElevationRequestStatus::default();
    let object = |name: &str| LastingObject {
        time: now(),
        api_group: String::new(),
        version: "v1".into(),
        resource: "serviceaccounts".into(),
        kind: "ServiceAccount".into(),
        namespace: Some("prod".into()),
        name: name.into(),
        uid: String::new(),
        removed: false,
        reported: false,
        unverified: false,
    };
    record_lasting(&mut status, object("a"));
    record_lasting(&mut status, object("a"));
    assert_eq!(status.lasting_objects.len(), 1);
    for i in 0..150 {
        record_lasting(&mut status, object(&format!("n{i}")));
    }
    assert_eq!(status.lasting_objects.len(), LASTING_LIMIT);
    assert_eq!(status.lasting_objects.last().unwrap().name, "n149");
}
