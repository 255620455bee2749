//! Helpers to drive kubepam the way people do: apply objects, patch reviews,
//! and ask the API server what a user may do.

#![allow(dead_code)] // shared by several test binaries, each using a part

use std::time::Duration;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubepam_core::api::{AccessPolicy, ElevationRequest, Phase, PrivilegedAccessControl};
use serde_json::{Value, json};

use crate::cluster::{Identity, TestNamespace, eventually, kubepam};

/// Applies the `default` control (server-side apply, as `kubectl apply --server-side`).
pub async fn apply_control(admin: &Client, spec: Value) {
    let control = json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "PrivilegedAccessControl",
        "metadata": { "name": "default" }, "spec": spec,
    });
    Api::<PrivilegedAccessControl>::all(admin.clone())
        .patch(
            "default",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&control),
        )
        .await
        .expect("applying the control");
}

/// The control every test of a shared binary uses: enabled, approvals by
/// `pam-approvers`, `ci-bot` as a system account.
pub async fn standard_control(admin: &Client) {
    standard_control_with(admin, json!({})).await;
}

/// The standard control with these fields of its spec added (e.g. `notifications`).
pub async fn standard_control_with(admin: &Client, extra: Value) {
    let mut spec = json!({
        "enabled": true,
        "defaultApproverGroup": "pam-approvers",
        "systemAccounts": ["system:serviceaccount:ci:deployer"],
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    apply_control(admin, spec).await;
}

/// Creates a policy and waits until the controller has judged it.
pub async fn create_policy(admin: &Client, name: &str, spec: Value) -> AccessPolicy {
    let api = Api::<AccessPolicy>::all(admin.clone());
    let policy: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": name }, "spec": spec,
    }))
    .expect("policy object");
    api.create(&PostParams::default(), &policy)
        .await
        .unwrap_or_else(|e| panic!("creating policy {name}: {e}"));
    wait_policy_judged(admin, name).await
}

/// Waits until the policy carries an `Accepted` condition for its generation.
pub async fn wait_policy_judged(admin: &Client, name: &str) -> AccessPolicy {
    let api = Api::<AccessPolicy>::all(admin.clone());
    eventually(
        &format!("policy {name} judged"),
        Duration::from_secs(20),
        || async {
            let policy = api.get(name).await.ok()?;
            let status = policy.status.as_ref()?;
            let judged = status.conditions.iter().any(|c| {
                c.type_ == "Accepted" && c.observed_generation >= policy.metadata.generation
            });
            judged.then_some(policy)
        },
    )
    .await
}

/// The `Accepted` condition's (status, reason).
pub fn accepted(policy: &AccessPolicy) -> (String, String) {
    policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Accepted"))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

pub async fn delete_policy(admin: &Client, name: &str) {
    let _ = Api::<AccessPolicy>::all(admin.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Creates a request as `client` (requester set as admission will set it).
pub async fn create_request(client: &Client, name: &str, spec: Value) -> ElevationRequest {
    try_create_request(client, name, spec)
        .await
        .unwrap_or_else(|e| panic!("creating request {name}: {e}"))
}

/// Waits until the request reaches `phase`.
pub async fn wait_phase(
    client: &Client,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> ElevationRequest {
    let api = Api::<ElevationRequest>::all(client.clone());
    eventually(&format!("request {name} {phase}"), timeout, || async {
        let request = api.get(name).await.ok()?;
        (request.status.as_ref()?.phase == Some(phase)).then_some(request)
    })
    .await
}

pub fn phase(request: &ElevationRequest) -> Option<Phase> {
    request.status.as_ref().and_then(|s| s.phase)
}

/// What an approver types:
/// `kubectl patch er NAME --type merge -p '{"spec":{"reviews":{"me":{...}}}}'`.
pub async fn review(
    client: &Client,
    request: &str,
    reviewer: &str,
    decision: &str,
    comment: &str,
) -> Result<ElevationRequest, kube::Error> {
    let patch = json!({ "spec": { "reviews": { reviewer: { "decision": decision, "comment": comment } } } });
    Api::<ElevationRequest>::all(client.clone())
        .patch(request, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// What the API server's authorizer answers for `user` (a `SubjectAccessReview`).
pub async fn allowed(
    admin: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "resourceAttributes": {
                "verb": verb, "group": group, "resource": resource, "namespace": namespace,
            }
        }
    }))
    .expect("review object");
    let answer = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

/// Waits until the authorizer's answer for `user` is `want`.
pub async fn wait_allowed(
    admin: &Client,
    user: &str,
    (verb, group, resource): (&str, &str, &str),
    namespace: Option<&str>,
    want: bool,
    timeout: Duration,
) {
    let what = format!("{user} {verb} {resource}.{group} in {namespace:?} allowed={want}");
    eventually(&what, timeout, || async {
        (allowed(admin, user, verb, group, resource, namespace).await == want).then_some(())
    })
    .await;
}

/// Events kubepam published about the request, oldest first.
pub async fn events_for(admin: &Client, request: &str) -> Vec<Event> {
    let mut events: Vec<Event> = Api::<Event>::namespaced(admin.clone(), "default")
        .list(&kube::api::ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("ElevationRequest") && r.name.as_deref() == Some(request)
            })
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
}

/// Names of RBAC objects labelled for a request id.
pub async fn grant_objects(admin: &Client, request_id: &str) -> Vec<String> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
    let selector =
        kube::api::ListParams::default().labels(&format!("kubepam.io/request-id={request_id}"));
    let mut names = Vec::new();
    for rb in Api::<RoleBinding>::all(admin.clone())
        .list_metadata(&selector)
        .await
        .unwrap()
    {
        names.push(format!(
            "RoleBinding/{}",
            rb.metadata.name.unwrap_or_default()
        ));
    }
    for crb in Api::<ClusterRoleBinding>::all(admin.clone())
        .list_metadata(&selector)
        .await
        .unwrap()
    {
        names.push(format!(
            "ClusterRoleBinding/{}",
            crb.metadata.name.unwrap_or_default()
        ));
    }
    for cr in Api::<ClusterRole>::all(admin.clone())
        .list_metadata(&selector)
        .await
        .unwrap()
    {
        names.push(format!(
            "ClusterRole/{}",
            cr.metadata.name.unwrap_or_default()
        ));
    }
    names.sort();
    names
}

pub fn request_id(request: &ElevationRequest) -> String {
    request
        .status
        .as_ref()
        .and_then(|s| s.request_id.clone())
        .expect("request has an id")
}

/// A Deployment for tests (no controller runs here, so it never makes Pods).
pub fn deployment(name: &str) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] }
            }
        }
    }))
    .expect("deployment object")
}

/// The seed's task: delete Deployments, in one namespace.
pub fn task_policy(namespace: &str, approval: &str) -> Value {
    json!({
        "type": "Task",
        "task": { "verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"] },
        "scope": { "namespaces": [namespace] },
        "approvalType": approval,
    })
}

/// Whether `user` may delete Deployments in `namespace` (the seed's task).
pub async fn may_delete_deployments(admin: &Client, user: &str, namespace: Option<&str>) -> bool {
    allowed(admin, user, "delete", "apps", "deployments", namespace).await
}

/// Waits until `user` may (or may no longer) delete Deployments in `namespace`.
pub async fn wait_may_delete_deployments(
    admin: &Client,
    user: &str,
    namespace: Option<&str>,
    want: bool,
) {
    let deployments = ("delete", "apps", "deployments");
    wait_allowed(
        admin,
        user,
        deployments,
        namespace,
        want,
        Duration::from_secs(15),
    )
    .await;
}

/// A Task policy (the seed's task, `approval` as given) in a fresh namespace, with `extra`
/// merged into its spec, under the standard control.
pub async fn policy_in_new_namespace(
    prefix: &str,
    approval: &str,
    extra: Value,
) -> (TestNamespace, String) {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    standard_control(&admin).await;
    let ns = cluster.namespace(prefix).await;
    let policy = format!("{}-policy", ns.name);
    let mut spec = task_policy(&ns.name, approval);
    if let Value::Object(fields) = extra {
        for (key, value) in fields {
            spec[key] = value;
        }
    }
    create_policy(&admin, &policy, spec).await;
    (ns, policy)
}

/// A refused call's message (403 from a webhook or an admission policy, 422 from the
/// schema), or a panic naming `what`.
pub fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => status.message,
        other => panic!("{what} must be refused: {other:?}"),
    }
}

/// Creates a request as `client`, returning the API server's answer.
pub async fn try_create_request(
    client: &Client,
    name: &str,
    spec: Value,
) -> Result<ElevationRequest, kube::Error> {
    let request: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": name }, "spec": spec,
    }))
    .expect("request object");
    Api::<ElevationRequest>::all(client.clone())
        .create(&PostParams::default(), &request)
        .await
}
