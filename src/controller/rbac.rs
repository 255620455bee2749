//! Makes the RBAC objects of one grant exactly what [`crate::grant`] wants:
//! server-side apply of the wanted objects, deletion of every other object
//! labelled with the request's id.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, FIELD_MANAGER};
use crate::api::RbacObjectRef;
use crate::grant::{self, DesiredRbac};

/// Applies the wanted objects (roles first, so no binding points at nothing).
pub async fn apply(client: &Client, desired: &DesiredRbac) -> Result<(), Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for role in &desired.cluster_roles {
        apply_one(Api::<ClusterRole>::all(client.clone()), role, &params).await?;
    }
    for binding in &desired.cluster_role_bindings {
        apply_one(
            Api::<ClusterRoleBinding>::all(client.clone()),
            binding,
            &params,
        )
        .await?;
    }
    for binding in &desired.role_bindings {
        let namespace = binding.namespace().unwrap_or_default();
        let api = Api::<RoleBinding>::namespaced(client.clone(), &namespace);
        apply_one(api, binding, &params).await?;
    }
    Ok(())
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

/// Deletes every object labelled with `request_id` that `keep` does not list,
/// bindings before roles, and returns how many it deleted.
pub async fn prune(
    client: &Client,
    request_id: &str,
    keep: &[RbacObjectRef],
) -> Result<usize, Error> {
    let keep: BTreeSet<&RbacObjectRef> = keep.iter().collect();
    let selector = ListParams::default().labels(&grant::selector(request_id));
    let role_bindings = |namespace: Option<&str>| match namespace {
        Some(namespace) => Api::<RoleBinding>::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let cluster_role_bindings = |_: Option<&str>| Api::<ClusterRoleBinding>::all(client.clone());
    let cluster_roles = |_: Option<&str>| Api::<ClusterRole>::all(client.clone());
    let mut deleted = prune_kind(&role_bindings, &selector, &keep).await?;
    deleted += prune_kind(&cluster_role_bindings, &selector, &keep).await?;
    deleted += prune_kind(&cluster_roles, &selector, &keep).await?;
    Ok(deleted)
}

/// `api(None)` lists across the cluster; `api(Some(ns))` addresses one object's namespace.
async fn prune_kind<K>(
    api: &impl Fn(Option<&str>) -> Api<K>,
    selector: &ListParams,
    keep: &BTreeSet<&RbacObjectRef>,
) -> Result<usize, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = kind_of::<K>();
    let found = api(None)
        .list_metadata(selector)
        .await
        .map_err(|source| Error::Read {
            what: format!("{kind}s of a grant"),
            source,
        })?;
    let mut deleted = 0;
    for object in found {
        let reference = RbacObjectRef {
            kind: kind.to_owned(),
            name: object.name_any(),
            namespace: object.namespace(),
        };
        if keep.contains(&reference) {
            continue;
        }
        let result = api(reference.namespace.as_deref())
            .delete(&reference.name, &DeleteParams::default())
            .await;
        match result {
            Ok(_) => deleted += 1,
            // Already gone: what we wanted.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::DeleteRbac {
                    kind,
                    name: reference.name,
                    source,
                });
            }
        }
    }
    Ok(deleted)
}

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "ClusterRole" => "ClusterRole",
        "ClusterRoleBinding" => "ClusterRoleBinding",
        "RoleBinding" => "RoleBinding",
        _ => "object",
    }
}
