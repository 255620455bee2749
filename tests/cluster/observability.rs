//! `/metrics`, `/healthz` and `/readyz` of the running operator.

use std::time::Duration;

use serde_json::json;

use crate::pam::{create_policy, create_request, standard_control, task_policy, wait_phase};
use crate::support::{Identity, eventually, http_get, kubepam, operator};

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
        kubepam::api::Phase::Approved,
        Duration::from_secs(15),
    )
    .await;

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
    ns.delete().await;
}
