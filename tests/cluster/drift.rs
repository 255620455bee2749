//! RBAC changed by hand: a grant's binding deleted or edited comes back, an
//! object labelled as kubepam's that is no live grant goes, and a binding
//! made by hand to a role kubepam generated is reported — each with an Event.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubepam_core::api::Phase;
use serde_json::json;

use crate::pam::{
    create_policy, create_request, events_for, request_id, standard_control, task_policy,
    wait_may_delete_deployments, wait_phase,
};
use crate::support::{Identity, eventually, kubepam, operator};

const SOON: Duration = Duration::from_secs(15);

/// Events about one RBAC object, with this reason.
async fn events_on(admin: &Client, kind: &str, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
        })
        .collect()
}

fn binding(name: &str, namespace: &str, labels: &serde_json::Value, role: &str) -> RoleBinding {
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave" }],
    }))
    .unwrap()
}

#[tokio::test]
async fn rbac_changed_by_hand_is_repaired_and_reported() {
    let cluster = kubepam();
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    standard_control(&admin).await;
    let ns = cluster.namespace("drift").await;
    let policy = format!("{}-policy", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let name = format!("{}-req", ns.name);
    create_request(
        &alice,
        &name,
        json!({ "policy": policy, "namespace": ns.name, "reason": "drift", "duration": "1h" }),
    )
    .await;
    let approved = wait_phase(&alice, &name, Phase::Approved, SOON).await;
    let id = request_id(&approved);
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &ns.name);
    let granted = bindings
        .list(&ListParams::default().labels(&format!("kubepam.io/request-id={id}")))
        .await
        .unwrap()
        .items;
    assert_eq!(granted.len(), 1, "{granted:?}");
    let grant = granted[0].clone();
    let grant_name = grant.metadata.name.clone().unwrap();
    let generated_role = grant.role_ref.name.clone();
    assert!(
        Api::<ClusterRole>::all(admin.clone())
            .get_opt(&generated_role)
            .await
            .unwrap()
            .is_some()
    );
    // Deleted by hand: it comes back.
    bindings
        .delete(&grant_name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the grant's binding is restored", SOON, || async {
        bindings.get_opt(&grant_name).await.ok()?.map(|_| ())
    })
    .await;
    wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;

    // Edited by hand (dave added): it is put back as it should be.
    let widened = json!({ "subjects": [
        { "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice" },
        { "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave" },
    ]});
    bindings
        .patch(
            &grant_name,
            &PatchParams::default(),
            &Patch::Merge(&widened),
        )
        .await
        .unwrap();
    eventually("the edit is undone", SOON, || async {
        let subjects = bindings.get(&grant_name).await.ok()?.subjects?;
        (subjects.len() == 1 && subjects[0].name == "alice").then_some(())
    })
    .await;
    wait_may_delete_deployments(&admin, "dave", Some(&ns.name), false).await;
    let repaired = eventually("GrantRepaired Events", SOON, || async {
        let events: Vec<_> = events_for(&admin, &name)
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("GrantRepaired"))
            .collect();
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert!(
        repaired[0]
            .note
            .as_deref()
            .unwrap()
            .contains("edited or deleted by hand"),
        "{repaired:?}"
    );

    // Made by hand to look like a grant, of no live request: removed.
    let fake = binding(
        "looks-like-a-grant",
        &ns.name,
        &json!({ "app.kubernetes.io/managed-by": "kubepam", "kubepam.io/request-id": "00000000-0000-0000-0000-000000000000" }),
        "cluster-admin",
    );
    bindings
        .create(&PostParams::default(), &fake)
        .await
        .unwrap();
    eventually("the orphan is removed", SOON, || async {
        bindings
            .get_opt("looks-like-a-grant")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    eventually("an OrphanRemoved Event", SOON, || async {
        let events = events_on(&admin, "RoleBinding", "looks-like-a-grant", "OrphanRemoved").await;
        (!events.is_empty()).then_some(())
    })
    .await;
    wait_may_delete_deployments(&admin, "dave", Some(&ns.name), false).await;

    // Labelled as part of alice's grant, but not part of it: removed.
    let extra = binding(
        "extra-of-the-grant",
        &ns.name,
        &json!({ "app.kubernetes.io/managed-by": "kubepam", "kubepam.io/request-id": id }),
        &generated_role,
    );
    bindings
        .create(&PostParams::default(), &extra)
        .await
        .unwrap();
    eventually("the extra object is removed", SOON, || async {
        bindings
            .get_opt("extra-of-the-grant")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // Made outside kubepam, binding the generated role: reported, kept
    // (the control does not ask for removal).
    let copy = binding("standing-copy", &ns.name, &json!({}), &generated_role);
    bindings
        .create(&PostParams::default(), &copy)
        .await
        .unwrap();
    let reported = eventually("the foreign binding is reported", SOON, || async {
        let events = events_on(&admin, "RoleBinding", "standing-copy", "ForeignBinding").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert!(
        reported[0]
            .note
            .as_deref()
            .unwrap()
            .contains("removeForeignBindings"),
        "{reported:?}"
    );
    let gauge = operator().metric("kubepam_foreign_bindings").unwrap();
    assert!(gauge >= 1.0, "kubepam_foreign_bindings = {gauge}");
    assert!(bindings.get_opt("standing-copy").await.unwrap().is_some());
    let text = crate::support::http_get(operator().metrics_port, "/metrics")
        .unwrap()
        .1;
    for action in ["restored", "removed-orphan", "removed-extra"] {
        let series = format!("kubepam_drift_repairs_total{{action=\"{action}\"}}");
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }

    bindings
        .delete("standing-copy", &DeleteParams::default())
        .await
        .unwrap();

    // Once the grant has ended, an object made with its label goes too.
    crate::pam::review(
        &cluster.client(Identity::Bob).await,
        &name,
        "bob",
        "Revoke",
        "done",
    )
    .await
    .unwrap();
    wait_phase(&alice, &name, Phase::Revoked, SOON).await;
    let late = binding(
        "after-the-end",
        &ns.name,
        &json!({ "app.kubernetes.io/managed-by": "kubepam", "kubepam.io/request-id": id }),
        &generated_role,
    );
    bindings
        .create(&PostParams::default(), &late)
        .await
        .unwrap();
    eventually("the object of an ended grant is removed", SOON, || async {
        bindings
            .get_opt("after-the-end")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    eventually(
        "a GrantRepaired Event saying it holds none",
        SOON,
        || async {
            events_for(&admin, &name)
                .await
                .iter()
                .any(|e| {
                    e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("which holds none"))
                })
                .then_some(())
        },
    )
    .await;
    ns.delete().await;
}
