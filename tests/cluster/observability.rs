//! `/metrics`, `/healthz` and `/readyz` of the running operator.

use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use kubepam_core::api::ElevationRequest;
use serde_json::json;

use crate::pam::{create_policy, create_request, standard_control, task_policy, wait_phase};
use crate::support::{Identity, OperatorSpec, eventually, http_get, kubepam, operator};

#[tokio::test]
async fn metrics_count_what_happens() {
    let cluster = kubepam();
    let port = operator().metrics_port;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    standard_control(&admin).await;
    eventually("ready", Duration::from_secs(15), || async {
        (http_get(port, "/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);

    let ns = cluster.namespace("metrics").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let name = format!("{}-req", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "m" }),
    )
    .await;
    wait_phase(
        &alice,
        &name,
        kubepam_core::api::Phase::Approved,
        Duration::from_secs(15),
    )
    .await;
    // A request in someone else's name: refused by the mutating webhook.
    let forged: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": format!("{}-forged", ns.name) },
        "spec": { "policy": policy, "namespace": ns.name, "reason": "m", "requester": "dave" },
    }))
    .unwrap();
    let refused = Api::<ElevationRequest>::all(alice.clone())
        .create(&PostParams::default(), &forged)
        .await;
    // The code reaches the client as the status's cause.
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403
            && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "ForgedRequester"))),
        "a forged requester must be refused: {refused:?}"
    );

    let (code, text) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    };
    assert!(value("kubepam_reconciles_total{kind=\"ElevationRequest\"}") >= 1.0);
    assert!(value("kubepam_transitions_total{phase=\"Approved\",reason=\"AutoApproved\"}") >= 1.0);
    assert!(value("kubepam_requests{phase=\"Approved\"}") >= 1.0);
    assert!(value("kubepam_active_grants") >= 1.0);
    assert!(
        value("kubepam_admission_requests_total{webhook=\"requester\",allowed=\"true\"}") >= 1.0
    );
    assert!(value("kubepam_reconcile_duration_seconds_count{kind=\"ElevationRequest\"}") >= 1.0);
    assert!(text.contains("kubepam_guard_executions_total"));
    assert!(
        value("kubepam_admission_refusals_total{webhook=\"requester\",reason=\"ForgedRequester\"}")
            >= 1.0
    );
    assert!(value("kubepam_leader") > 0.5, "the only replica leads");
    ns.delete().await;
}

/// `/readyz` stays 503 until every cache is filled: a replica whose identity
/// may not list what kubepam caches (here alice's) is alive (`/healthz` 200)
/// but never ready, and never leads. The operator above, able to list, is.
#[tokio::test]
async fn not_ready_until_the_caches_are_filled() {
    let cluster = kubepam();
    let replica = cluster.spawn_operator_with(&OperatorSpec {
        context: Some("alice"),
        args: vec!["--no-webhooks"],
        ..OperatorSpec::default()
    });
    eventually("alive", Duration::from_secs(15), || async {
        (http_get(replica.metrics_port, "/healthz").ok()?.0 == 200).then_some(())
    })
    .await;
    for _ in 0..3 {
        let (code, body) = http_get(replica.metrics_port, "/readyz").unwrap();
        assert_eq!(code, 503, "not ready without its caches: {body}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(!replica.is_leader());
    assert_eq!(http_get(operator().metrics_port, "/readyz").unwrap().0, 200);
    replica.kill();
}
