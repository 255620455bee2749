//! What a grant left behind: when a grant ends, the objects that confer
//! access that its holder made in its scope (`status.lastingObjects`) are
//! reported (Warning Event `PersistenceFound`, `kubepam_persistence_found_total`)
//! and, with the control's `removePersistence: true`, deleted.

use chrono::{DateTime, TimeDelta, Utc};
use kube::api::{DeleteParams, DynamicObject, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::Context;
use kubepam_core::api::{ElevationRequest, ElevationRequestStatus, LastingObject};

/// The most objects named in one Event (the rest are counted).
const EVENT_NAMES: usize = 10;

/// Deletes the objects at `places` of `status.lastingObjects`, each only if
/// it is still the very object made during the grant (its uid, created at or
/// after `since`): marks it `removed`. Objects reported by a caller kubepam
/// could not verify, or without a uid, are only reported.
pub async fn remove(
    ctx: &Context,
    status: &mut ElevationRequestStatus,
    places: &[usize],
    since: DateTime<Utc>,
) {
    for place in places {
        let Some(object) = status.lasting_objects.get_mut(*place) else {
            continue;
        };
        if object.removed || object.unverified || object.uid.is_empty() {
            continue;
        }
        match remove_one(ctx, object, since).await {
            Ok(removed) => object.removed = removed,
            Err(error) => {
                let object = object.describe();
                warn!(?object, %error, "cannot remove an object made during a grant");
            }
        }
    }
}

async fn remove_one(
    ctx: &Context,
    object: &LastingObject,
    since: DateTime<Utc>,
) -> Result<bool, kube::Error> {
    let gvk = GroupVersionKind::gvk(&object.api_group, &object.version, &object.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &object.resource);
    let api: Api<DynamicObject> = match &object.namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    let Some(found) = api.get_opt(&object.name).await? else {
        return Ok(false);
    };
    if found.metadata.uid.as_deref() != Some(object.uid.as_str()) {
        // Another object of that name (its creation failed, or it was
        // replaced): someone else's.
        return Ok(false);
    }
    // Only what was made in the window: a later object of the same name is someone else's.
    let made_in_window = found
        .creation_timestamp()
        .is_some_and(|t| kubepam_core::api::from_k8s_time(&t) >= since - TimeDelta::seconds(1));
    if !made_in_window {
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: found.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&object.name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// The Warning Event and the metric for what the grant left behind.
/// Reports the objects at `places` of `status.lastingObjects`.
pub async fn report_places(
    ctx: &Context,
    request: &ElevationRequest,
    status: &ElevationRequestStatus,
    places: &[usize],
) {
    let objects: Vec<LastingObject> = places
        .iter()
        .filter_map(|place| status.lasting_objects.get(*place).cloned())
        .collect();
    report(ctx, request, &objects).await;
}

async fn report(ctx: &Context, request: &ElevationRequest, objects: &[LastingObject]) {
    ctx.metrics
        .persistence_found
        .inc_by(u64::try_from(objects.len()).unwrap_or(u64::MAX));
    let mut named: Vec<String> = objects
        .iter()
        .take(EVENT_NAMES)
        .map(|o| {
            let state = if o.removed {
                "removed"
            } else {
                "left in place"
            };
            format!("{} ({state})", o.describe())
        })
        .collect();
    if objects.len() > EVENT_NAMES {
        named.push(format!("and {} more", objects.len() - EVENT_NAMES));
    }
    let kept = objects.iter().filter(|o| !o.removed).count();
    let advice = if kept == 0 {
        String::new()
    } else {
        "; review them, or set spec.removePersistence: true on the PrivilegedAccessControl to \
         have kubepam remove such objects when a grant ends"
            .to_owned()
    };
    let note = format!(
        "the grant ended and {} object(s) that confer access, made by {} during it, outlive it: \
         {}{advice}",
        objects.len(),
        request.spec.requester.as_deref().unwrap_or("the requester"),
        named.join("; ")
    );
    warn!(request = %request.name_any(), note = ?note, "objects made during a grant outlive it");
    super::publish_event(
        ctx,
        request,
        EventType::Warning,
        "PersistenceFound",
        "Review",
        &note,
    )
    .await;
}
