//! Makes the RBAC objects of one grant exactly what [`crate::grant`] wants.
//!
//! kubepam watches every RBAC object that carries its label, so comparing
//! what exists with what is wanted costs no API call: objects are applied
//! (server-side) only when missing or different, and deleted when they
//! carry the request's id but are not wanted.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, FIELD_MANAGER};
use crate::api::RbacObjectRef;
use crate::grant::{self, DesiredRbac};

/// Caches of every RoleBinding and ClusterRoleBinding, and of the
/// ClusterRoles kubepam generated.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // reflector stores have no Debug
pub struct RbacStores {
    pub role_bindings: Store<RoleBinding>,
    pub cluster_role_bindings: Store<ClusterRoleBinding>,
    pub cluster_roles: Store<ClusterRole>,
}

impl RbacStores {
    /// Every object cached for the request with this id.
    pub fn objects_of(&self, request_id: &str) -> Vec<RbacObjectRef> {
        let ours = |labels: &std::collections::BTreeMap<String, String>| {
            labels.get(grant::LABEL_REQUEST_ID).map(String::as_str) == Some(request_id)
        };
        let mut found = Vec::new();
        for o in self.role_bindings.state() {
            if ours(o.labels()) {
                found.push(reference("RoleBinding", &*o));
            }
        }
        for o in self.cluster_role_bindings.state() {
            if ours(o.labels()) {
                found.push(reference("ClusterRoleBinding", &*o));
            }
        }
        for o in self.cluster_roles.state() {
            if ours(o.labels()) {
                found.push(reference("ClusterRole", &*o));
            }
        }
        found
    }
}

fn reference<K: Resource>(kind: &str, object: &K) -> RbacObjectRef {
    RbacObjectRef {
        kind: kind.to_owned(),
        name: object.name_any(),
        namespace: object.namespace(),
    }
}

/// What [`apply`] had to write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Objects not in the cache (new, or deleted by hand).
    pub missing: usize,
    /// Objects in the cache that differed (edited by hand).
    pub changed: usize,
}

/// Applies every wanted object that is missing or differs from what is
/// cached (roles first, so no binding points at nothing). A binding deleted
/// or edited by hand is put back this way.
pub async fn apply(
    client: &Client,
    stores: &RbacStores,
    desired: &DesiredRbac,
) -> Result<Applied, Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Applied::default();
    let mut count = |present: bool| {
        if present {
            applied.changed += 1;
        } else {
            applied.missing += 1;
        }
    };
    for role in &desired.cluster_roles {
        let current = stores.cluster_roles.get(&ObjectRef::from_obj(role));
        if current
            .as_ref()
            .is_none_or(|c| c.labels() != role.labels() || c.rules != role.rules)
        {
            apply_one(Api::<ClusterRole>::all(client.clone()), role, &params).await?;
            count(current.is_some());
        }
    }
    for binding in &desired.cluster_role_bindings {
        let current = stores
            .cluster_role_bindings
            .get(&ObjectRef::from_obj(binding));
        if current.as_ref().is_none_or(|c| {
            c.labels() != binding.labels()
                || c.role_ref != binding.role_ref
                || c.subjects != binding.subjects
        }) {
            apply_one(
                Api::<ClusterRoleBinding>::all(client.clone()),
                binding,
                &params,
            )
            .await?;
            count(current.is_some());
        }
    }
    for binding in &desired.role_bindings {
        let current = stores.role_bindings.get(&ObjectRef::from_obj(binding));
        if current.as_ref().is_none_or(|c| {
            c.labels() != binding.labels()
                || c.role_ref != binding.role_ref
                || c.subjects != binding.subjects
        }) {
            let namespace = binding.namespace().unwrap_or_default();
            let api = Api::<RoleBinding>::namespaced(client.clone(), &namespace);
            apply_one(api, binding, &params).await?;
            count(current.is_some());
        }
    }
    Ok(applied)
}

async fn apply_one<K>(api: Api<K>, object: &K, params: &PatchParams) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = object.name_any();
    api.patch(&name, params, &Patch::Apply(object))
        .await
        .map_err(|source| Error::ApplyRbac {
            kind: kind_of::<K>(),
            name,
            source,
        })?;
    Ok(())
}

/// Deletes the objects of the request with `request_id` that `keep` does not
/// list: those cached with its label, and those `recorded` in its status
/// (which covers an object created a moment ago and not cached yet).
/// Bindings go before roles. Returns how many were deleted.
pub async fn prune(
    client: &Client,
    stores: &RbacStores,
    request_id: &str,
    recorded: &[RbacObjectRef],
    keep: &[RbacObjectRef],
) -> Result<usize, Error> {
    let keep: BTreeSet<&RbacObjectRef> = keep.iter().collect();
    let mut doomed: Vec<RbacObjectRef> = stores
        .objects_of(request_id)
        .into_iter()
        .chain(recorded.iter().cloned())
        .filter(|o| !keep.contains(o))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Bindings before the roles they point at.
    doomed.sort_by_key(|o| o.kind == "ClusterRole");
    let mut deleted = 0;
    for object in doomed {
        if delete_object(client, &object).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes one RBAC object; `false` when it was already gone (or is not a
/// kind kubepam makes).
pub async fn delete_object(client: &Client, object: &RbacObjectRef) -> Result<bool, Error> {
    let result = match (object.kind.as_str(), &object.namespace) {
        ("RoleBinding", Some(namespace)) => {
            delete(
                Api::<RoleBinding>::namespaced(client.clone(), namespace),
                &object.name,
            )
            .await
        }
        ("ClusterRoleBinding", _) => {
            delete(Api::<ClusterRoleBinding>::all(client.clone()), &object.name).await
        }
        ("ClusterRole", _) => delete(Api::<ClusterRole>::all(client.clone()), &object.name).await,
        _ => Ok(false),
    };
    result.map_err(|source| Error::DeleteRbac {
        kind: static_kind(&object.kind),
        name: object.name.clone(),
        source,
    })
}

/// Deletes by name; `false` when it was already gone.
async fn delete<K>(api: Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
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
