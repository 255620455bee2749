//! Makes the RBAC objects of one grant exactly what [`kubepam_core::grant`] wants.
//!
//! kubepam watches every RBAC object that carries its label, so comparing
//! what exists with what is wanted costs no API call: objects are applied
//! (server-side) only when missing or different, and deleted when they
//! carry the request's id but are not wanted.

use std::collections::BTreeSet;

use futures::future::try_join_all;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, FIELD_MANAGER};
use crate::shared::caches::{RbacStores, reference};
use kubepam_core::api::RbacObjectRef;
use kubepam_core::grant::{self, DesiredRbac};

/// The uid status recorded for the object `wanted` names, if any.
fn recorded_uid<'r>(
    recorded: &'r [RbacObjectRef],
    kind: &str,
    wanted: &impl Resource,
) -> Option<&'r str> {
    let wanted = reference(kind, wanted);
    recorded
        .iter()
        .find(|r| r.same_object(&wanted))
        .and_then(|r| r.uid.as_deref())
}

/// What [`apply`] had to write.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Objects not in the cache (new, or deleted by hand).
    pub missing: usize,
    /// Objects in the cache that differed (edited by hand).
    pub changed: usize,
    /// Every wanted object, now known to exist as kubepam's for this request: what status may
    /// record.
    pub owned: Vec<RbacObjectRef>,
}

/// What [`apply`] found in the way: an object with a wanted name that kubepam did not make for
/// this request. Nothing of it was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub object: RbacObjectRef,
}

/// Makes every wanted object exist as wanted (roles first, so no binding points at nothing),
/// but only ever over objects kubepam made for this very request: a missing object is created
/// (never applied over a name someone else holds), and one that exists is changed only when it
/// is the one status recorded (its uid), or carries this request's ownership labels, with its
/// uid as a precondition. A binding deleted or edited by hand (its labels too) is put back this
/// way. Stops at the first object held by someone else. `roles_done` is what
/// [`apply_roles`] made in this reconcile already: those roles are not looked at again.
pub async fn apply(
    client: &Client,
    stores: &RbacStores,
    desired: &DesiredRbac,
    request_id: &str,
    recorded: &[RbacObjectRef],
    roles_done: Option<Applied>,
) -> Result<Result<Applied, Collision>, Error> {
    let applied = match roles_done {
        Some(done) => done,
        None => match apply_roles(client, stores, desired, request_id, recorded).await? {
            Ok(done) => done,
            Err(collision) => return Ok(Err(collision)),
        },
    };
    apply_bindings(client, stores, desired, request_id, recorded, applied).await
}

/// The roles of [`apply`], all at once (they bind nobody, and none depends on another).
pub async fn apply_roles(
    client: &Client,
    stores: &RbacStores,
    desired: &DesiredRbac,
    request_id: &str,
    recorded: &[RbacObjectRef],
) -> Result<Result<Applied, Collision>, Error> {
    let same_role =
        |a: &ClusterRole, b: &ClusterRole| a.labels() == b.labels() && a.rules == b.rules;
    let api = Api::<ClusterRole>::all(client.clone());
    let outcomes = try_join_all(desired.cluster_roles.iter().map(|role| {
        let cached = stores.cluster_roles.get(&ObjectRef::from_obj(role));
        let ours = Ownership {
            request_id,
            uid: recorded_uid(recorded, "ClusterRole", role),
        };
        let api = api.clone();
        async move { ensure(api, role, cached.as_deref(), same_role, ours).await }
    }))
    .await?;
    let mut applied = Applied::default();
    for (outcome, role) in outcomes.into_iter().zip(&desired.cluster_roles) {
        if let Err(collision) = applied.count(outcome, "ClusterRole", role) {
            return Ok(Err(collision));
        }
    }
    Ok(Ok(applied))
}

/// The bindings of [`apply`], all at once, once the roles they point at are known to be this
/// request's (`applied`).
async fn apply_bindings(
    client: &Client,
    stores: &RbacStores,
    desired: &DesiredRbac,
    request_id: &str,
    recorded: &[RbacObjectRef],
    mut applied: Applied,
) -> Result<Result<Applied, Collision>, Error> {
    let same_cluster_binding = |a: &ClusterRoleBinding, b: &ClusterRoleBinding| {
        a.labels() == b.labels() && a.role_ref == b.role_ref && a.subjects == b.subjects
    };
    let same_role_binding = |a: &RoleBinding, b: &RoleBinding| {
        a.labels() == b.labels() && a.role_ref == b.role_ref && a.subjects == b.subjects
    };
    let cluster_bindings = try_join_all(desired.cluster_role_bindings.iter().map(|binding| {
        let api = Api::<ClusterRoleBinding>::all(client.clone());
        let cached = stores
            .cluster_role_bindings
            .get(&ObjectRef::from_obj(binding));
        let ours = Ownership {
            request_id,
            uid: recorded_uid(recorded, "ClusterRoleBinding", binding),
        };
        async move { ensure(api, binding, cached.as_deref(), same_cluster_binding, ours).await }
    }));
    let bindings = try_join_all(desired.role_bindings.iter().map(|binding| {
        let namespace = binding.namespace().unwrap_or_default();
        let api = Api::<RoleBinding>::namespaced(client.clone(), &namespace);
        let cached = stores.role_bindings.get(&ObjectRef::from_obj(binding));
        let ours = Ownership {
            request_id,
            uid: recorded_uid(recorded, "RoleBinding", binding),
        };
        async move { ensure(api, binding, cached.as_deref(), same_role_binding, ours).await }
    }));
    let (cluster_bindings, bindings) = futures::try_join!(cluster_bindings, bindings)?;
    for (outcome, binding) in cluster_bindings
        .into_iter()
        .zip(&desired.cluster_role_bindings)
    {
        if let Err(collision) = applied.count(outcome, "ClusterRoleBinding", binding) {
            return Ok(Err(collision));
        }
    }
    for (outcome, binding) in bindings.into_iter().zip(&desired.role_bindings) {
        if let Err(collision) = applied.count(outcome, "RoleBinding", binding) {
            return Ok(Err(collision));
        }
    }
    applied.owned.sort();
    Ok(Ok(applied))
}

impl Applied {
    fn count<K: Resource>(
        &mut self,
        (outcome, uid): (Ensured, Option<String>),
        kind: &str,
        object: &K,
    ) -> Result<(), Collision> {
        let mut reference = reference(kind, object);
        match outcome {
            Ensured::Unchanged => {}
            Ensured::Created => self.missing += 1,
            Ensured::Repaired => self.changed += 1,
            Ensured::HeldByOther => return Err(Collision { object: reference }),
        }
        reference.uid = uid;
        self.owned.push(reference);
        Ok(())
    }
}

/// What [`ensure`] did with one wanted object.
#[derive(Clone, Copy)]
enum Ensured {
    Unchanged,
    Created,
    Repaired,
    /// An object of that name exists without this request's ownership labels.
    HeldByOther,
}

/// How an existing object is known to be the request's.
#[derive(Clone, Copy)]
struct Ownership<'a> {
    /// It carries this request's ownership labels...
    request_id: &'a str,
    /// ... or it is the very object status recorded (whatever its labels say now).
    uid: Option<&'a str>,
}

impl Ownership<'_> {
    fn owns<K: Resource>(self, object: &K) -> bool {
        let meta = object.meta();
        grant::owned_by(meta.labels.as_ref(), self.request_id)
            || self.uid.is_some_and(|uid| meta.uid.as_deref() == Some(uid))
    }
}

/// Creates `wanted`, or brings the object of its name back to it when it is this request's.
/// Returns what it did and the object's uid.
async fn ensure<K>(
    api: Api<K>,
    wanted: &K,
    cached: Option<&K>,
    same: impl Fn(&K, &K) -> bool,
    ours: Ownership<'_>,
) -> Result<(Ensured, Option<String>), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = wanted.name_any();
    let failed = |source| Error::ApplyRbac {
        kind: kind_of::<K>(),
        name: name.clone(),
        source,
    };
    // Recorded but not cached: most likely made a moment ago and the cache
    // lags; one read tells (a create would fail and need the read anyway).
    let recorded = match (cached, ours.uid) {
        (None, Some(_)) => api.get_opt(&name).await.map_err(failed)?,
        _ => None,
    };
    let existing = match cached.cloned().or(recorded) {
        Some(current) => current,
        None => match api.create(&PostParams::default(), wanted).await {
            Ok(created) => return Ok((Ensured::Created, created.meta().uid.clone())),
            // Made meanwhile, by kubepam (the cache lags) or by someone else: look.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                match api.get_opt(&name).await.map_err(failed)? {
                    Some(found) => found,
                    None => return Ok((Ensured::Unchanged, None)),
                }
            }
            Err(source) => return Err(failed(source)),
        },
    };
    let uid = existing.meta().uid.clone();
    if !ours.owns(&existing) {
        return Ok((Ensured::HeldByOther, uid));
    }
    if same(&existing, wanted) {
        let found = cached.is_some() || ours.uid.is_some_and(|u| uid.as_deref() == Some(u));
        return Ok((
            if found {
                Ensured::Unchanged
            } else {
                Ensured::Created
            },
            uid,
        ));
    }
    // The uid makes the write fail if the object was replaced since it was checked.
    let mut object = wanted.clone();
    object.meta_mut().uid.clone_from(&uid);
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
    {
        Ok(_) => Ok((Ensured::Repaired, uid)),
        // A binding's roleRef cannot change: replace the object (it is ours).
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let params = DeleteParams {
                preconditions: uid.clone().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            api.delete(&name, &params).await.map_err(failed)?;
            let created = api
                .create(&PostParams::default(), wanted)
                .await
                .map_err(failed)?;
            Ok((Ensured::Repaired, created.meta().uid.clone()))
        }
        Err(source) => Err(failed(source)),
    }
}

/// Deletes the objects of the request with `request_id` that `keep` does not
/// list: those `recorded` in its status, by their uid (whatever their labels
/// say now: a grantee who strips the labels off a binding does not keep it),
/// and those cached with its ownership labels (made just before a crash, or by
/// hand), by the uid the cache saw. Any other object of a recorded name is
/// left alone. Bindings go before roles. Returns how many were deleted.
pub async fn prune(
    client: &Client,
    stores: &RbacStores,
    request_id: &str,
    recorded: &[RbacObjectRef],
    keep: &[RbacObjectRef],
) -> Result<usize, Error> {
    let kept = |o: &RbacObjectRef| {
        keep.iter()
            .any(|k| k.same_object(o) && (k.uid.is_none() || o.uid.is_none() || k.uid == o.uid))
    };
    let mut doomed: Vec<RbacObjectRef> = recorded
        .iter()
        .cloned()
        .chain(stores.objects_of(request_id))
        .filter(|o| !kept(o))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Bindings before the roles they point at.
    doomed.sort_by_key(|o| o.kind == "ClusterRole");
    let mut deleted = 0;
    for object in doomed {
        let gone = match &object.uid {
            Some(uid) => delete_object(client, &object, Some(uid.clone())).await?,
            // Recorded before uids were: only if it carries the labels.
            None => delete_owned(client, &object, request_id).await?,
        };
        if gone {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes `object` if it carries the ownership labels of the request with
/// `request_id`; `false` when it is gone, or is not that request's.
async fn delete_owned(
    client: &Client,
    object: &RbacObjectRef,
    request_id: &str,
) -> Result<bool, Error> {
    let failed = |source| Error::DeleteRbac {
        kind: static_kind(&object.kind),
        name: object.name.clone(),
        source,
    };
    let uid = match (object.kind.as_str(), &object.namespace) {
        ("RoleBinding", Some(namespace)) => {
            owned_uid(
                Api::<RoleBinding>::namespaced(client.clone(), namespace),
                &object.name,
                request_id,
            )
            .await
        }
        ("ClusterRoleBinding", _) => {
            owned_uid(
                Api::<ClusterRoleBinding>::all(client.clone()),
                &object.name,
                request_id,
            )
            .await
        }
        ("ClusterRole", _) => {
            owned_uid(
                Api::<ClusterRole>::all(client.clone()),
                &object.name,
                request_id,
            )
            .await
        }
        _ => Ok(None),
    }
    .map_err(failed)?;
    match uid {
        Some(uid) => delete_object(client, object, Some(uid)).await,
        None => Ok(false),
    }
}

/// The uid of the object of this name if it is the request's own.
async fn owned_uid<K>(
    api: Api<K>,
    name: &str,
    request_id: &str,
) -> Result<Option<String>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(found) = api.get_metadata_opt(name).await? else {
        return Ok(None);
    };
    if grant::owned_by(found.metadata.labels.as_ref(), request_id) {
        Ok(found.metadata.uid)
    } else {
        tracing::warn!(
            name = ?name,
            request_id,
            "an object of a recorded name is not this request's; it is left alone"
        );
        Ok(None)
    }
}

/// Deletes one RBAC object (only if its uid is still `uid`, when given);
/// `false` when it was already gone (or is not a kind kubepam makes).
pub async fn delete_object(
    client: &Client,
    object: &RbacObjectRef,
    uid: Option<String>,
) -> Result<bool, Error> {
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let result = match (object.kind.as_str(), &object.namespace) {
        ("RoleBinding", Some(namespace)) => {
            delete(
                Api::<RoleBinding>::namespaced(client.clone(), namespace),
                &object.name,
                &params,
            )
            .await
        }
        ("ClusterRoleBinding", _) => {
            delete(
                Api::<ClusterRoleBinding>::all(client.clone()),
                &object.name,
                &params,
            )
            .await
        }
        ("ClusterRole", _) => {
            delete(
                Api::<ClusterRole>::all(client.clone()),
                &object.name,
                &params,
            )
            .await
        }
        _ => Ok(false),
    };
    result.map_err(|source| Error::DeleteRbac {
        kind: static_kind(&object.kind),
        name: object.name.clone(),
        source,
    })
}

/// Deletes by name; `false` when it was already gone, or replaced (its uid
/// changed: then it is no longer the object that was meant).
async fn delete<K>(api: Api<K>, name: &str, params: &DeleteParams) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    static_kind(&K::kind(&()))
}

fn static_kind(kind: &str) -> &'static str {
    match kind {
        "ClusterRole" => "ClusterRole",
        "ClusterRoleBinding" => "ClusterRoleBinding",
        "RoleBinding" => "RoleBinding",
        _ => "object",
    }
}
