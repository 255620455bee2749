//! The thin kube-rs layer: load the kubeconfig as kubectl does, and the few API calls the
//! commands make, each mapped to an [`Error`] a person can act on.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::access::Query;
use super::cli::Connection;
use super::error::{Error, from_kube};
use super::select::Me;

/// The field manager the plugin's writes are recorded under (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "kubectl-pam";

/// A client for the cluster and identity the flags name, plus the context's namespace.
pub async fn connect(conn: &Connection) -> Result<(Client, String), Error> {
    if conn.as_user.is_none() && !conn.as_groups.is_empty() {
        return Err(Error::Usage(
            "--as-group needs --as: impersonating groups without a user is not allowed".into(),
        ));
    }
    let options = KubeConfigOptions {
        context: conn.context.clone(),
        cluster: conn.cluster.clone(),
        user: conn.user.clone(),
    };
    let chosen = conn.context.is_some() || conn.cluster.is_some() || conn.user.is_some();
    let kubeconfig_error = |e: &dyn std::fmt::Display| Error::Kubeconfig(e.to_string());
    let mut config = match &conn.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| kubeconfig_error(&e))?
        }
        None => match Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            // In a Pod without a kubeconfig, kubectl uses the service account; so do we.
            Err(e) if !chosen => Config::incluster().map_err(|_| kubeconfig_error(&e))?,
            Err(e) => return Err(kubeconfig_error(&e)),
        },
    };
    if let Some(user) = &conn.as_user {
        config.auth_info.impersonate = Some(user.clone());
        if !conn.as_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(conn.as_groups.clone());
        }
    }
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| from_kube(e, "kubepam.io"))?;
    Ok((client, namespace))
}

fn plural<K: Resource<DynamicType = ()>>() -> String {
    K::plural(&()).into_owned()
}

/// Every object of a namespaced kind, in every namespace.
pub async fn list_in_all_namespaces<K>(client: &Client) -> Result<Vec<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| from_kube(e, &plural::<K>()))
}

/// Cluster-scoped API calls for one kind, with errors mapped.
#[derive(Clone)]
pub struct Kind<K> {
    api: Api<K>,
}

impl<K> std::fmt::Debug for Kind<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind").finish_non_exhaustive()
    }
}

impl<K> Kind<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    /// The kind's API on `client`.
    pub fn new(client: &Client) -> Self {
        Self {
            api: Api::all(client.clone()),
        }
    }

    /// Waits until `done` holds for the object `name` and returns it; `None` once it is
    /// deleted. Watches from the version it read, and reads again when the watch ends.
    pub async fn wait_until(
        &self,
        name: &str,
        done: impl Fn(&K) -> bool,
    ) -> Result<Option<K>, Error> {
        use futures::{StreamExt as _, TryStreamExt as _};
        use kube::api::{WatchEvent, WatchParams};
        loop {
            let Some(current) = self.get_opt(name).await? else {
                return Ok(None);
            };
            if done(&current) {
                return Ok(Some(current));
            }
            let version = current.meta().resource_version.clone().unwrap_or_default();
            let params = WatchParams::default().fields(&format!("metadata.name={name}"));
            let mut events = self
                .api
                .watch(&params, &version)
                .await
                .map_err(Self::map)?
                .boxed();
            while let Some(event) = events.try_next().await.map_err(Self::map)? {
                match event {
                    WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                        if done(&object) {
                            return Ok(Some(object));
                        }
                    }
                    WatchEvent::Deleted(_) => return Ok(None),
                    WatchEvent::Bookmark(_) => {}
                    // The version read has expired (410 Gone): read again.
                    WatchEvent::Error(status) if status.code == 410 => break,
                    WatchEvent::Error(status) => {
                        return Err(Self::map(kube::Error::Api(status.boxed())));
                    }
                }
            }
        }
    }

    fn map(err: kube::Error) -> Error {
        from_kube(err, &plural::<K>())
    }

    /// Get one object; `None` when it does not exist (but an uninstalled CRD is an error).
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, Error> {
        match self.api.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(kube::Error::Api(s))
                if s.code == 404 && !super::error::is_missing_resource_type(&s) =>
            {
                Ok(None)
            }
            Err(e) => Err(Self::map(e)),
        }
    }

    /// Get one object as JSON, with the fields this plugin's types do not know (a newer
    /// kubepam's status); `None` when it does not exist.
    pub async fn get_json_opt(&self, name: &str) -> Result<Option<serde_json::Value>, Error> {
        let resource = ApiResource::erase::<K>(&());
        let api = Api::<DynamicObject>::all_with(self.api.clone().into_client(), &resource);
        match api.get(name).await {
            Ok(o) => serde_json::to_value(o)
                .map(Some)
                .map_err(|e| Error::Transport(e.to_string())),
            Err(kube::Error::Api(s))
                if s.code == 404 && !super::error::is_missing_resource_type(&s) =>
            {
                Ok(None)
            }
            Err(e) => Err(Self::map(e)),
        }
    }

    /// List every object.
    pub async fn list(&self) -> Result<Vec<K>, Error> {
        self.api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(Self::map)
    }

    /// Create an object.
    pub async fn create(&self, object: &K) -> Result<K, Error> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        self.api.create(&params, object).await.map_err(Self::map)
    }

    /// Merge-patch an object, as `kubectl patch --type merge`; `None` when it does not exist.
    pub async fn merge_patch(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Option<K>, Error> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match self.api.patch(name, &params, &Patch::Merge(patch)).await {
            Ok(o) => Ok(Some(o)),
            Err(kube::Error::Api(s))
                if s.code == 404 && !super::error::is_missing_resource_type(&s) =>
            {
                Ok(None)
            }
            Err(e) => Err(Self::map(e)),
        }
    }

    /// Delete an object; `false` when it does not exist.
    pub async fn delete(&self, name: &str) -> Result<bool, Error> {
        match self
            .api
            .delete(name, &kube::api::DeleteParams::default())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s))
                if s.code == 404 && !super::error::is_missing_resource_type(&s) =>
            {
                Ok(false)
            }
            Err(e) => Err(Self::map(e)),
        }
    }
}

/// The bytes of entry `entry` of Secret `namespace/name`; `None` when the Secret or the entry
/// does not exist.
pub async fn secret_entry(
    client: &Client,
    namespace: &str,
    name: &str,
    entry: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = match secrets.get(name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        // RBAC on Secrets is not kubepam's: the generic hint would name the wrong role.
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(Error::Server {
                reason: "Forbidden".to_owned(),
                message: s.message,
                hint: Some(format!(
                    "reading the key needs get on secrets/{name} in {namespace}, which only \
                     kubepam and the auditors should have; or give the key with --key-file"
                )),
            });
        }
        Err(e) => return Err(from_kube(e, "secrets")),
    };
    Ok(secret
        .data
        .and_then(|mut data| data.remove(entry))
        .map(|bytes| bytes.0))
}

/// Who the API server says the caller is (a `SelfSubjectReview`, as `kubectl auth whoami`).
pub async fn whoami(client: &Client) -> Result<Me, Error> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| from_kube(e, "selfsubjectreviews"))?;
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let username = user.username.unwrap_or_default();
    if username.is_empty() {
        return Err(Error::Usage(
            "the API server did not say who you are (SelfSubjectReview without a username); \
             reviews need an authenticated user"
                .into(),
        ));
    }
    Ok(Me {
        username,
        groups: user.groups.unwrap_or_default(),
    })
}

/// What RBAC answers for the caller (a `SelfSubjectAccessReview`, as `kubectl auth can-i`).
pub async fn rbac_allows(client: &Client, query: &Query) -> Result<bool, Error> {
    access_review(
        client,
        ResourceAttributes {
            verb: Some(query.verb.clone()),
            group: Some(query.resource.group.clone()),
            resource: Some(query.resource.resource.clone()),
            subresource: query.resource.subresource.clone(),
            name: query.name.clone(),
            namespace: query.namespace.clone(),
            ..ResourceAttributes::default()
        },
    )
    .await
}

/// Whether RBAC lets the caller decide requests of `policy`: verb `approve` on
/// `accesspolicies.kubepam.io/<policy>`, as `kubectl auth can-i approve accesspolicies/<policy>`
/// (the `CertificateSigningRequest` signer model). The name travels in the review's body only.
/// A right held by a wildcard verb (as cluster-admin's) does not count, as kubepam's admission
/// rules say: the caller must not also be allowed a verb no Role names.
pub async fn may_approve_policy(client: &Client, policy: &str) -> Result<bool, Error> {
    let on_policy = |verb: &str| ResourceAttributes {
        verb: Some(verb.to_owned()),
        group: Some("kubepam.io".to_owned()),
        resource: Some("accesspolicies".to_owned()),
        name: Some(policy.to_owned()),
        ..ResourceAttributes::default()
    };
    let (approve, wildcard) = futures::future::join(
        access_review(client, on_policy(kubepam_core::admission::APPROVE_VERB)),
        access_review(
            client,
            on_policy(kubepam_core::admission::WILDCARD_PROBE_VERB),
        ),
    )
    .await;
    Ok(approve? && !wildcard?)
}

async fn access_review(client: &Client, attributes: ResourceAttributes) -> Result<bool, Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attributes),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| from_kube(e, "selfsubjectaccessreviews"))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}
