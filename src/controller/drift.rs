//! Carries out [`kubepam_core::drift`] on the leader: RBAC objects labelled as
//! kubepam's that belong to no live request are removed; bindings made
//! outside kubepam to a role it generated are reported, and removed when the
//! control says so. Each finding gives an Event on the object and a metric.
//! (A live request's own objects are repaired by its reconcile.)

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::{Context, publish_event_on, rbac};
use crate::leader::Stop;
use crate::shared::caches::Caches;
use kubepam_core::api::RbacObjectRef;
use kubepam_core::drift::{Drift, RbacItem, find_drift, is_managed};
use kubepam_core::lifecycle;

/// Changes arriving within this window are looked at together.
const QUIET_PERIOD: Duration = Duration::from_millis(200);
/// A full look now and then, whatever changed.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Looks for drift after every change of an RBAC object or the control, and
/// every minute, until `stop`. Request changes do not wake it: they come by
/// the thousand, and a request's own objects are its reconcile's business
/// (one deleted past its finalizer is caught by the minute's sweep).
pub async fn run(ctx: Arc<Context>, caches: Caches, stop: Stop) {
    let changes = stream::select_all([
        caches.role_bindings.changes().map(|_| ()).boxed(),
        caches.cluster_role_bindings.changes().map(|_| ()).boxed(),
        caches.cluster_roles.changes().map(|_| ()).boxed(),
        caches.controls.spec_changes().map(|_| ()).boxed(),
    ]);
    let mut changes = changes.ready_chunks(1024);
    let mut reported: BTreeSet<RbacObjectRef> = BTreeSet::new();
    tokio::select! {
        () = caches.synced() => {}
        () = stop.clone() => return,
    }
    loop {
        if let Err(error) = sweep(&ctx, &mut reported).await {
            warn!(%error, "drift repair failed; retrying");
        }
        tokio::select! {
            () = stop.clone() => return,
            _ = changes.next() => tokio::time::sleep(QUIET_PERIOD).await,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

async fn sweep(ctx: &Context, reported: &mut BTreeSet<RbacObjectRef>) -> Result<(), super::Error> {
    let requests = ctx.requests.state();
    let live: HashSet<String> = requests.iter().map(|r| lifecycle::request_id(r)).collect();
    let live: HashSet<&str> = live.iter().map(String::as_str).collect();
    let roles = ctx.rbac.cluster_roles.state();
    let generated: HashSet<&str> = roles
        .iter()
        .filter(|role| is_managed(role.labels()))
        .filter_map(|role| role.metadata.name.as_deref())
        .collect();
    let role_bindings = ctx.rbac.role_bindings.state();
    let cluster_role_bindings = ctx.rbac.cluster_role_bindings.state();

    let items = role_bindings
        .iter()
        .map(|b| RbacItem {
            reference: reference("RoleBinding", &**b),
            labels: b.labels(),
            binds_cluster_role: cluster_role(&b.role_ref.kind, &b.role_ref.name),
        })
        .chain(cluster_role_bindings.iter().map(|b| RbacItem {
            reference: reference("ClusterRoleBinding", &**b),
            labels: b.labels(),
            binds_cluster_role: cluster_role(&b.role_ref.kind, &b.role_ref.name),
        }))
        .chain(roles.iter().map(|r| RbacItem {
            reference: reference("ClusterRole", &**r),
            labels: r.labels(),
            binds_cluster_role: None,
        }));
    let mut found = find_drift(items, &live, &generated);
    // Bindings before the roles they bind.
    found
        .sort_by_key(|d| matches!(d, Drift::Orphan { object, .. } if object.kind == "ClusterRole"));

    let remove_foreign = ctx
        .control()
        .is_some_and(|c| c.spec.enabled && c.spec.remove_foreign_bindings);
    let mut foreign: i64 = 0;
    for drift in found {
        match drift {
            Drift::Orphan { object, request_id } => {
                remove_orphan(ctx, &object, request_id).await?;
            }
            Drift::ForeignBinding { binding, role } => {
                foreign += 1;
                if remove_foreign {
                    remove_foreign_binding(ctx, &binding, &role).await?;
                } else if reported.insert(binding.clone()) {
                    report_foreign_binding(ctx, &binding, &role).await;
                }
            }
        }
    }
    let foreign_left = if remove_foreign { 0 } else { foreign };
    ctx.metrics.foreign_bindings.set(foreign_left);
    Ok(())
}

/// The ClusterRole a binding binds, if it binds one.
fn cluster_role<'a>(kind: &str, name: &'a str) -> Option<&'a str> {
    (kind == "ClusterRole").then_some(name)
}

async fn remove_orphan(
    ctx: &Context,
    object: &RbacObjectRef,
    request_id: Option<String>,
) -> Result<(), super::Error> {
    let owner = request_id.map_or_else(
        || "no request id".to_owned(),
        |id| format!("request id {id}, which no ElevationRequest has"),
    );
    let note = format!(
        "removed {}: it carries kubepam's labels ({owner}) but is no live grant",
        describe(object)
    );
    remove(ctx, object, "OrphanRemoved", "removed-orphan", &note).await
}

async fn remove_foreign_binding(
    ctx: &Context,
    binding: &RbacObjectRef,
    role: &str,
) -> Result<(), super::Error> {
    let note = format!(
        "removed {}: made outside kubepam, it bound {role}, a role kubepam generated for a temporary grant (spec.removeForeignBindings on the PrivilegedAccessControl)",
        describe(binding)
    );
    remove(
        ctx,
        binding,
        "ForeignBindingRemoved",
        "removed-foreign",
        &note,
    )
    .await
}

/// Deletes `object` and, if it was there, says so: a log line, an Event on
/// it and the drift metric.
async fn remove(
    ctx: &Context,
    object: &RbacObjectRef,
    reason: &str,
    action: &str,
    note: &str,
) -> Result<(), super::Error> {
    // The uid the cache saw: an object replaced meanwhile is not the one judged.
    if !rbac::delete_object(&ctx.client, object, object.uid.clone()).await? {
        return Ok(());
    }
    info!(kind = %object.kind, name = %object.name, "{note}");
    publish_event_on(
        ctx,
        &object_reference(object),
        EventType::Warning,
        reason,
        "Delete",
        note,
    )
    .await;
    ctx.metrics.drift_repaired(action, 1);
    Ok(())
}

async fn report_foreign_binding(ctx: &Context, binding: &RbacObjectRef, role: &str) {
    let note = format!(
        "{} was made outside kubepam and binds {role}, a role kubepam generated for a temporary grant: it is a standing copy of that right. Delete it, or set spec.removeForeignBindings: true on the PrivilegedAccessControl to have kubepam remove such bindings",
        describe(binding)
    );
    warn!(kind = %binding.kind, name = %binding.name, "{note}");
    publish_event_on(
        ctx,
        &object_reference(binding),
        EventType::Warning,
        "ForeignBinding",
        "Report",
        &note,
    )
    .await;
}

fn reference<K: kube::Resource>(kind: &str, object: &K) -> RbacObjectRef {
    RbacObjectRef {
        kind: kind.to_owned(),
        name: object.name_any(),
        namespace: object.namespace(),
        uid: object.meta().uid.clone(),
    }
}

fn describe(object: &RbacObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!("{} {namespace}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}

fn object_reference(object: &RbacObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("rbac.authorization.k8s.io/v1".to_owned()),
        kind: Some(object.kind.clone()),
        name: Some(object.name.clone()),
        namespace: object.namespace.clone(),
        ..ObjectReference::default()
    }
}
