//! One watch per kind, shared by everything in the process: the caches serve
//! admission on every replica, and their changes drive the controllers of
//! the replica that leads.
//!
//! kube's own shared streams (`ReflectHandle`) carry applied objects only,
//! but a deleted AccessPolicy must wake the requests it granted, so changes
//! are fanned out here with deletions included.

use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::mpsc;
use futures::{FutureExt, Stream, StreamExt, stream};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

use super::index::Index;
use kubepam_core::api::{AccessPolicy, ElevationRequest, PrivilegedAccessControl, RbacObjectRef};
use kubepam_core::{grant, lifecycle, reconcile};

/// A kind that can be watched, cached and reconciled.
pub trait Watched:
    Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A cache of one kind and the changes that reach it.
#[derive(Debug)]
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>>,
    /// True once the first listing is complete. Not `Store::wait_until_ready`:
    /// that wakes only the last of several tasks waiting on it, and the
    /// controllers wait on it too.
    filled: tokio::sync::watch::Sender<bool>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            subscribers: self.subscribers.clone(),
            filled: self.filled.clone(),
        }
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object changed or deleted from now on. Unbounded, so a slow
    /// consumer never stalls the cache that admission reads; a consumer
    /// that stops listening is dropped at the next change.
    pub fn changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sender);
        receiver
    }

    /// The changes of what objects ask for: a new `metadata.generation` (a status write
    /// leaves it alone), a new object, or one deleted. For watchers of the control, whose
    /// status kubepam itself writes several times a second while it audits.
    pub fn spec_changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        let mut seen: std::collections::HashMap<String, Option<i64>> = store
            .state()
            .iter()
            .map(|o| (o.name_any(), o.meta().generation))
            .collect();
        self.changes().filter(move |object| {
            let name = object.name_any();
            let generation = object.meta().generation;
            let gone = store.get(&reflector::ObjectRef::new(&name)).is_none();
            let changed = gone || seen.insert(name.clone(), generation) != Some(generation);
            if gone {
                seen.remove(&name);
            }
            futures::future::ready(changed)
        })
    }

    /// Every cached object, then every change: what a controller that
    /// starts now (after winning the lease) has to look at.
    pub fn everything(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        // Subscribe first, so nothing changed between the two is missed.
        let changes = self.changes();
        stream::iter(self.store.state()).chain(changes)
    }

    /// Resolves once the first listing is complete.
    pub async fn filled(&self) {
        let _ = self.filled.subscribe().wait_for(|filled| *filled).await;
    }

    fn publish(&self, object: &Arc<K>) {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|subscriber| subscriber.unbounded_send(object.clone()).is_ok());
    }
}

/// How long a failed watch waits before it tries again: from 0.5 s, doubling,
/// at most 2 s (kube's default goes up to 30 s). After an API server restart
/// or an etcd stall the caches must catch up within seconds: a request made
/// then must be seen, and a grant due then must end on time.
fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    let schedule = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(500))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(schedule),
        std::time::Duration::from_secs(60),
    )
}

/// Starts a watch of `api` into a new cache; the returned future keeps the
/// cache current and must be polled for as long as the cache is used.
fn watch<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
    indexes: Vec<Arc<Index<K>>>,
) -> (Cache<K>, impl Future<Output = ()> + Send + 'static) {
    let (store, writer) = reflector::store();
    let shared = Cache {
        store,
        subscribers: Arc::default(),
        filled: tokio::sync::watch::Sender::new(false),
    };
    let publisher = shared.clone();
    let kind = K::kind(&()).into_owned();
    // kubepam never reads managedFields or annotations of what it caches;
    // with thousands of requests (or every binding of a large cluster, some
    // carrying kubectl's last-applied copy) they would be most of its memory.
    let updates = reflector(
        writer,
        watcher(api, config)
            .backoff(watch_backoff())
            .modify(|object: &mut K| {
                let meta = object.meta_mut();
                meta.managed_fields = None;
                meta.annotations = None;
            }),
    )
    .for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(object)) => {
                for index in &indexes {
                    index.applied(&object);
                }
                publisher.publish(&Arc::new(object));
            }
            Ok(watcher::Event::InitApply(object)) => {
                for index in &indexes {
                    index.relisted(&object);
                }
                publisher.publish(&Arc::new(object));
            }
            Ok(watcher::Event::Delete(object)) => {
                for index in &indexes {
                    index.deleted(&object);
                }
                publisher.publish(&Arc::new(object));
            }
            Ok(watcher::Event::InitDone) => {
                for index in &indexes {
                    index.relist_done();
                }
                publisher.filled.send_replace(true);
            }
            Ok(watcher::Event::Init) => {
                for index in &indexes {
                    index.relist_started();
                }
            }
            Err(error) => warn!(%kind, %error, "watch failed; retrying"),
        }
        futures::future::ready(())
    });
    (shared, updates)
}

/// The caches of the whole process.
#[derive(Debug, Clone)]
pub struct Caches {
    pub requests: Cache<ElevationRequest>,
    pub policies: Cache<AccessPolicy>,
    pub controls: Cache<PrivilegedAccessControl>,
    pub role_bindings: Cache<RoleBinding>,
    pub cluster_role_bindings: Cache<ClusterRoleBinding>,
    pub cluster_roles: Cache<ClusterRole>,
    /// Every ClusterRole but kubepam's, and every Role: with the bindings,
    /// the rights people hold outside kubepam (the persistence guard).
    pub standing_cluster_roles: Cache<ClusterRole>,
    pub roles: Cache<Role>,
    /// Requests by requester (the guard's lookup of a caller's grants).
    pub requests_by_requester: Arc<Index<ElevationRequest>>,
    /// Requests by the label value of their id (a grant's objects name it).
    pub requests_by_id: Arc<Index<ElevationRequest>>,
    /// kubepam's RBAC objects by the request id they carry.
    pub rbac_by_request: RbacIndexes,
}

/// kubepam's RBAC objects (bindings of both kinds, generated roles) by the
/// request id label they carry.
#[derive(Debug, Clone)]
pub struct RbacIndexes {
    pub role_bindings: Arc<Index<RoleBinding>>,
    pub cluster_role_bindings: Arc<Index<ClusterRoleBinding>>,
    pub cluster_roles: Arc<Index<ClusterRole>>,
}

/// The request id label of an object kubepam made for a grant.
fn grant_request_id<K: Resource>(object: &K) -> Option<String> {
    let labels = object.meta().labels.as_ref()?;
    (labels.get(grant::LABEL_MANAGED_BY).map(String::as_str) == Some(grant::MANAGER))
        .then(|| labels.get(grant::LABEL_REQUEST_ID).cloned())
        .flatten()
}

impl Caches {
    /// Starts every watch; the tasks keep the caches current until aborted.
    pub fn start(client: &Client) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let mut tasks = Vec::new();
        let mut spawn = |updates: futures::future::BoxFuture<'static, ()>| {
            tasks.push(tokio::spawn(updates));
        };
        let all = watcher::Config::default;
        // Every binding (one made by hand may bind a role kubepam generated),
        // but only kubepam's own ClusterRoles: the rest are none of its business.
        let managed = || watcher::Config::default().labels(&grant::managed_selector());

        let requests_by_requester =
            Arc::new(Index::new(|r: &ElevationRequest| r.spec.requester.clone()));
        let requests_by_id = Arc::new(Index::new(|r: &ElevationRequest| {
            Some(grant::label_value(&lifecycle::request_id(r)))
        }));
        let rbac_by_request = RbacIndexes {
            role_bindings: Arc::new(Index::new(grant_request_id)),
            cluster_role_bindings: Arc::new(Index::new(grant_request_id)),
            cluster_roles: Arc::new(Index::new(grant_request_id)),
        };
        // Only requests that can still change: a settled one has ended and
        // holds nothing, and there may be any number of them.
        let unsettled = watcher::Config::default().labels(&reconcile::unsettled_selector());
        let (requests, updates) = watch(
            Api::all(client.clone()),
            unsettled,
            vec![requests_by_requester.clone(), requests_by_id.clone()],
        );
        spawn(updates.boxed());
        let (policies, updates) = watch(Api::all(client.clone()), all(), Vec::new());
        spawn(updates.boxed());
        let (controls, updates) = watch(Api::all(client.clone()), all(), Vec::new());
        spawn(updates.boxed());
        let (role_bindings, updates) = watch(
            Api::all(client.clone()),
            all(),
            vec![rbac_by_request.role_bindings.clone()],
        );
        spawn(updates.boxed());
        let (cluster_role_bindings, updates) = watch(
            Api::all(client.clone()),
            all(),
            vec![rbac_by_request.cluster_role_bindings.clone()],
        );
        spawn(updates.boxed());
        let (cluster_roles, updates) = watch(
            Api::all(client.clone()),
            managed(),
            vec![rbac_by_request.cluster_roles.clone()],
        );
        spawn(updates.boxed());
        let not_managed = watcher::Config::default().labels(&format!(
            "{}!={}",
            grant::LABEL_MANAGED_BY,
            grant::MANAGER
        ));
        let (standing_cluster_roles, updates) =
            watch(Api::all(client.clone()), not_managed, Vec::new());
        spawn(updates.boxed());
        let (roles, updates) = watch(Api::all(client.clone()), all(), Vec::new());
        spawn(updates.boxed());

        let caches = Self {
            requests,
            policies,
            controls,
            role_bindings,
            cluster_role_bindings,
            cluster_roles,
            standing_cluster_roles,
            roles,
            requests_by_requester,
            requests_by_id,
            rbac_by_request,
        };
        (caches, tasks)
    }

    pub fn rbac_stores(&self) -> RbacStores {
        RbacStores {
            role_bindings: self.role_bindings.store(),
            cluster_role_bindings: self.cluster_role_bindings.store(),
            cluster_roles: self.cluster_roles.store(),
            by_request: self.rbac_by_request.clone(),
        }
    }

    /// Resolves once every cache holds a complete first listing.
    pub async fn synced(&self) {
        futures::join!(
            self.policies.filled(),
            self.controls.filled(),
            self.requests.filled(),
            self.role_bindings.filled(),
            self.cluster_role_bindings.filled(),
            self.cluster_roles.filled(),
            self.standing_cluster_roles.filled(),
            self.roles.filled(),
        );
    }
}

/// Caches of every RoleBinding and ClusterRoleBinding, and of the
/// ClusterRoles kubepam generated.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // reflector stores have no Debug
pub struct RbacStores {
    pub role_bindings: Store<RoleBinding>,
    pub cluster_role_bindings: Store<ClusterRoleBinding>,
    pub cluster_roles: Store<ClusterRole>,
    pub by_request: RbacIndexes,
}

impl RbacStores {
    /// Every object cached for the request with this id (an index lookup).
    pub fn objects_of(&self, request_id: &str) -> Vec<RbacObjectRef> {
        let id = grant::label_value(request_id);
        let indexes = &self.by_request;
        let mut found = Vec::new();
        for o in indexes.role_bindings.get(&id, &self.role_bindings) {
            found.push(reference("RoleBinding", &*o));
        }
        for o in indexes
            .cluster_role_bindings
            .get(&id, &self.cluster_role_bindings)
        {
            found.push(reference("ClusterRoleBinding", &*o));
        }
        for o in indexes.cluster_roles.get(&id, &self.cluster_roles) {
            found.push(reference("ClusterRole", &*o));
        }
        found
    }
}

pub(crate) fn reference<K: Resource>(kind: &str, object: &K) -> RbacObjectRef {
    RbacObjectRef {
        kind: kind.to_owned(),
        name: object.name_any(),
        namespace: object.namespace(),
        uid: object.meta().uid.clone(),
    }
}
