//! What the controllers and the admission server share: the client, the
//! caches of one watch per kind, the metrics, readiness and kubepam's own
//! namespace. Both sides take an [`Arc<Shared>`]; neither knows the other.

pub mod caches;
pub mod index;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::metrics::Metrics;
use caches::RbacStores;
use kubepam_core::api::{
    AccessPolicy, AccessPolicySpec, CONTROL_NAME, ElevationRequest, PrivilegedAccessControl,
};
use kubepam_core::privilege::{NamedRoles, is_role_name};
use kubepam_core::standing::Standing;

/// The state every part of a replica reads.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub policies: Store<AccessPolicy>,
    pub controls: Store<PrivilegedAccessControl>,
    pub requests: Store<ElevationRequest>,
    /// Requests by requester.
    pub requests_by_requester: Arc<index::Index<ElevationRequest>>,
    pub rbac: RbacStores,
    /// Every ClusterRole but kubepam's, and every Role (the persistence guard).
    pub standing_cluster_roles: Store<ClusterRole>,
    pub roles: Store<Role>,
    /// True once the policy, control and request caches are filled: until
    /// then the guard refuses rather than guessing (fail closed).
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// kubepam's own namespace: no grant may reach it.
    pub namespace: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The caches of `caches`, nothing ready yet.
    pub fn new(
        client: Client,
        caches: &caches::Caches,
        metrics: Arc<Metrics>,
        namespace: String,
    ) -> Self {
        Self {
            client,
            policies: caches.policies.store(),
            controls: caches.controls.store(),
            requests: caches.requests.store(),
            requests_by_requester: caches.requests_by_requester.clone(),
            rbac: caches.rbac_stores(),
            standing_cluster_roles: caches.standing_cluster_roles.store(),
            roles: caches.roles.store(),
            ready: Arc::new(AtomicBool::new(false)),
            metrics,
            namespace,
        }
    }

    /// Whether the caches hold a complete first listing.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The cached requests `username` made.
    pub fn requests_of(&self, username: &str) -> Vec<Arc<ElevationRequest>> {
        self.requests_by_requester.get(username, &self.requests)
    }

    pub fn control(&self) -> Option<Arc<PrivilegedAccessControl>> {
        self.controls.get(&ObjectRef::new(CONTROL_NAME))
    }

    /// The cached RBAC objects, to evaluate rights held outside kubepam.
    pub fn rbac_snapshot(&self) -> RbacSnapshot {
        RbacSnapshot {
            cluster_roles: self.standing_cluster_roles.state(),
            roles: self.roles.state(),
            cluster_role_bindings: self.rbac.cluster_role_bindings.state(),
            role_bindings: self.rbac.role_bindings.state(),
        }
    }
}

/// `/metrics` counts requests by phase from the cache.
impl crate::metrics::server::Exposed for Shared {
    fn render(&self) -> String {
        let requests = self.requests.state();
        self.metrics.ready.set(i64::from(self.is_ready()));
        self.metrics.render(requests.iter().map(|r| &**r))
    }

    fn is_ready(&self) -> bool {
        Shared::is_ready(self)
    }
}

/// Every ClusterRole but kubepam's, every Role and every binding, as cached.
#[derive(Debug)]
pub struct RbacSnapshot {
    cluster_roles: Vec<Arc<ClusterRole>>,
    roles: Vec<Arc<Role>>,
    cluster_role_bindings: Vec<Arc<ClusterRoleBinding>>,
    role_bindings: Vec<Arc<RoleBinding>>,
}

impl RbacSnapshot {
    /// RBAC without kubepam's grants.
    pub fn standing(&self) -> Standing<'_> {
        Standing::new(
            self.cluster_roles.iter().map(|r| &**r),
            self.roles.iter().map(|r| &**r),
            self.cluster_role_bindings.iter().map(|b| &**b),
            self.role_bindings.iter().map(|b| &**b),
        )
    }
}

/// The rules of the ClusterRoles `spec` names that exist. Names that cannot be role names are
/// not read (only plain names reach a URL: `a?b` would read another role) and count as missing.
pub async fn read_named_roles(
    client: &Client,
    spec: &AccessPolicySpec,
) -> Result<NamedRoles, kube::Error> {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let mut roles = NamedRoles::new();
    for name in spec.role_names() {
        if !is_role_name(&name) || roles.contains_key(&name) {
            continue;
        }
        if let Some(role) = api.get_opt(&name).await? {
            roles.insert(name, role.rules.unwrap_or_default());
        }
    }
    Ok(roles)
}
