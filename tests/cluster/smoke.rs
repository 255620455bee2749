//! Proof that the local control plane is real: real authentication, real RBAC
//! and real schema validation. Each test fails if the server were faked.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

use crate::support::{Identity, api_status, cluster, eventually};

#[tokio::test]
async fn self_subject_review_reports_each_identity() {
    let cluster = cluster();
    for who in Identity::ALL {
        let client = cluster.client(who).await;
        let reviews: Api<SelfSubjectReview> = Api::all(client);
        let review = reviews
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .unwrap_or_else(|e| panic!("SelfSubjectReview as {who:?}: {e}"));
        let user = review
            .status
            .and_then(|s| s.user_info)
            .expect("review has user info");
        assert_eq!(user.username.as_deref(), Some(who.username()), "{who:?}");
        let groups = user.groups.unwrap_or_default();
        for group in who.groups() {
            assert!(
                groups.iter().any(|g| g == group),
                "{who:?} lacks {group}: {groups:?}"
            );
        }
        assert!(
            groups.iter().any(|g| g == "system:authenticated"),
            "{who:?}: {groups:?}"
        );
        // Nobody but admin is a cluster administrator.
        assert_eq!(
            groups.iter().any(|g| g == "system:masters"),
            who == Identity::Admin,
            "{who:?}: {groups:?}"
        );
    }
}

#[tokio::test]
async fn rbac_refuses_alice_until_a_role_is_bound() {
    let cluster = cluster();
    let ns = cluster.namespace("smoke-rbac").await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;

    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "target" }, "data": { "k": "v" }
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let as_alice: Api<ConfigMap> = Api::namespaced(alice, &ns.name);
    let refused = as_alice.delete("target", &DeleteParams::default()).await;
    assert_eq!(
        api_status(&refused),
        Some(403),
        "alice must be forbidden: {refused:?}"
    );

    ns.bind_role(
        "configmap-deleter",
        "alice",
        json!([{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"] }]),
    )
    .await;

    // The RBAC authorizer reads from an informer: allow it to catch up.
    eventually(
        "alice may delete the ConfigMap",
        Duration::from_secs(10),
        || async {
            match as_alice.delete("target", &DeleteParams::default()).await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(status)) if status.code == 403 => None,
                Err(e) => panic!("unexpected error: {e}"),
            }
        },
    )
    .await;
    let gone = Api::<ConfigMap>::namespaced(admin, &ns.name)
        .get_opt("target")
        .await
        .unwrap();
    assert!(gone.is_none(), "the ConfigMap was really deleted");
    ns.delete().await;
}

#[tokio::test]
async fn server_refuses_objects_that_break_a_crd_schema() {
    let cluster = cluster();
    let admin = cluster.client(Identity::Admin).await;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": { "name": "widgets.smoke.kubepam.io" },
        "spec": {
            "group": "smoke.kubepam.io",
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object", "required": ["size"],
                        "properties": { "size": { "type": "integer", "minimum": 1 } }
                    }}
                }}
            }]
        }
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {} // attached to a reused cluster
        Err(e) => panic!("creating CRD: {e}"),
    }
    eventually(
        "the Widget CRD is Established",
        Duration::from_secs(20),
        || async {
            let crd = crds.get("widgets.smoke.kubepam.io").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .into_iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;

    let ns = cluster.namespace("smoke-schema").await;
    let gvk = GroupVersionKind::gvk("smoke.kubepam.io", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(admin, &ns.name, &ApiResource::from_gvk(&gvk));
    let widget = |name: &str, size: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "smoke.kubepam.io/v1", "kind": "Widget",
            "metadata": { "name": name }, "spec": { "size": size }
        }))
        .unwrap()
    };
    // Discovery of a new CRD's endpoint can lag its Established condition.
    eventually(
        "a valid Widget is accepted",
        Duration::from_secs(20),
        || async {
            widgets
                .create(&PostParams::default(), &widget("ok", json!(3)))
                .await
                .ok()
        },
    )
    .await;
    for (name, size) in [("wrong-type", json!("big")), ("too-small", json!(0))] {
        let refused = widgets
            .create(&PostParams::default(), &widget(name, size))
            .await;
        assert_eq!(
            api_status(&refused),
            Some(422),
            "{name} must be invalid: {refused:?}"
        );
    }
    ns.delete().await;
}
