//! The kube-rs wiring: three controllers that carry out the pure decisions of
//! [`crate::lifecycle`], [`crate::policy_limit`] and [`crate::grant`].
//!
//! Pipeline of a request: `look up policy and control -> decide (pure) ->
//! write status -> make RBAC match the grant -> announce the transition`.
//! Only the first step and the last three touch the API server.

mod control;
pub mod executions;

mod policy;
mod rbac;
mod request;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, controller::Action};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{AccessPolicy, CONTROL_NAME, ElevationRequest, PrivilegedAccessControl};
use crate::grant;
use crate::metrics::{ErrorLabels, KindLabels, Metrics};
use crate::webhook::{self, configuration::Endpoint, tls};

pub use control::control_status;

/// The field manager of every object and status kubepam writes.
pub const FIELD_MANAGER: &str = "kubepam";

/// Errors of the controllers. The variant name is the metric label and Event reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to write the status of {kind} {name}")]
    WriteStatus {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to read {what}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to apply {kind} {name}")]
    ApplyRbac {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to delete {kind} {name}")]
    DeleteRbac {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to update the finalizers of {name}")]
    Finalizer {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot build the grant of {name}")]
    BuildGrant {
        name: String,
        #[source]
        source: grant::Error,
    },
}

impl Error {
    /// A stable, low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Error::WriteStatus { .. } => "WriteStatus",
            Error::Read { .. } => "Read",
            Error::ApplyRbac { .. } => "ApplyRbac",
            Error::DeleteRbac { .. } => "DeleteRbac",
            Error::Finalizer { .. } => "Finalizer",
            Error::BuildGrant { .. } => "BuildGrant",
        }
    }
}

/// What every reconcile shares: the client, the caches and the event recorder.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub policies: Store<AccessPolicy>,
    pub controls: Store<PrivilegedAccessControl>,
    pub requests: Store<ElevationRequest>,
    pub rbac: rbac::RbacStores,
    pub recorder: Recorder,
    /// True once the policy, control and request caches are filled: until
    /// then the guard refuses rather than guessing (fail closed).
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn control(&self) -> Option<Arc<PrivilegedAccessControl>> {
        self.controls.get(&ObjectRef::new(CONTROL_NAME))
    }
}

impl Error {
    /// Whether the API server refused a write because the object changed
    /// since it was read (409): read it again and decide again.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::WriteStatus { source, .. } | Error::Finalizer { source, .. } => {
                matches!(source, kube::Error::Api(status) if status.code == 409)
            }
            _ => false,
        }
    }

    /// How long to wait before retrying: a write conflict is retried at once
    /// (someone else changed the object; read it again), the API server
    /// being unavailable a little later, and a grant that cannot be built
    /// only after a while (it needs a change of spec).
    pub fn retry_after(&self) -> Duration {
        let api = match self {
            Error::WriteStatus { source, .. }
            | Error::Read { source, .. }
            | Error::ApplyRbac { source, .. }
            | Error::DeleteRbac { source, .. }
            | Error::Finalizer { source, .. } => source,
            Error::BuildGrant { .. } => return Duration::from_secs(30),
        };
        match api {
            kube::Error::Api(status) if status.code == 409 => Duration::from_millis(50),
            kube::Error::Api(status) if status.code == 403 => Duration::from_secs(10),
            _ => Duration::from_secs(1),
        }
    }
}

/// Counts and times a reconcile, and its failure by reason.
async fn measured(
    kind: &'static str,
    ctx: Arc<Context>,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let start = std::time::Instant::now();
    let result = reconcile.await;
    let labels = KindLabels {
        kind: kind.to_owned(),
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    if let Err(error) = &result {
        ctx.metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
                reason: error.label().to_owned(),
            })
            .inc();
    }
    result
}

/// Publishes an Event about a request, its note cut to the 1 kB the API
/// allows. A failure is logged, never retried into a second transition.
async fn publish_event(
    ctx: &Context,
    request: &ElevationRequest,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    const LIMIT: usize = 1000;
    let mut note = note.to_owned();
    if note.len() > LIMIT {
        let mut end = LIMIT - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &request.object_ref(&())).await {
        warn!(request = %request.name_any(), %error, "failed to publish event");
    }
}

/// Logs a failed reconcile and schedules the retry its error calls for.
#[allow(clippy::needless_pass_by_value)] // the signature Controller::run requires
fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    warn!(
        kind = %K::kind(&()),
        name = %object.name_any(),
        error = %error,
        source = ?std::error::Error::source(error),
        reason = error.label(),
        "reconcile failed; retrying"
    );
    Action::requeue(error.retry_after())
}

/// Server-side apply of an object's whole status under kubepam's field
/// manager, only when it changed. With `version`, the write is refused (409)
/// if the object changed since it was read; returns the new resourceVersion.
async fn apply_status<K, S>(
    client: &Client,
    object: &K,
    current: Option<&S>,
    status: &S,
    version: Option<String>,
) -> Result<Option<String>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(version);
    }
    let name = object.name_any();
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(version) = version {
        metadata["resourceVersion"] = version.into();
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    let written = Api::<K>::all(client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::WriteStatus {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        })?;
    Ok(written.resource_version())
}

/// A controller whose cache drops `managedFields`: kubepam never reads them,
/// and with thousands of requests they would be most of its memory.
fn lean_controller<K>(api: Api<K>) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|object: &mut K| object.meta_mut().managed_fields = None),
    )
    .applied_objects();
    Controller::for_stream(stream, reader)
}

/// Options of the controllers.
#[derive(Debug, Clone)]
pub struct Options {
    /// The name of this replica, reported on Events.
    pub instance: String,
    /// The admission webhooks; `None` runs without them.
    pub webhook: Option<WebhookOptions>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP).
    pub metrics_bind: Option<std::net::SocketAddr>,
}

/// Where and how the admission webhooks are served and registered.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Address the HTTPS server listens on.
    pub bind: std::net::SocketAddr,
    /// How the API server reaches it (the CA bundle is filled in from the
    /// serving certificate when not given).
    pub endpoint: Endpoint,
    /// Where the serving certificate comes from.
    pub tls: tls::Source,
    /// Whether kubepam registers its webhook configurations itself.
    pub register: bool,
}

/// kubepam's own RBAC objects, cached so that comparing a grant with what
/// exists costs no API call; their changes wake the request they belong to.
fn rbac_watches(client: &Client) -> (rbac::RbacStores, request::RbacStreams) {
    let managed = watcher::Config::default().labels(&grant::managed_selector());
    let (role_bindings, rb_writer) = reflector::store::<RoleBinding>();
    let (cluster_role_bindings, crb_writer) = reflector::store::<ClusterRoleBinding>();
    let (cluster_roles, cr_writer) = reflector::store::<ClusterRole>();
    let rbac_streams = request::RbacStreams {
        role_bindings: reflector(
            rb_writer,
            watcher(Api::all(client.clone()), managed.clone()),
        )
        .default_backoff()
        .touched_objects()
        .boxed(),
        cluster_role_bindings: reflector(
            crb_writer,
            watcher(Api::all(client.clone()), managed.clone()),
        )
        .default_backoff()
        .touched_objects()
        .boxed(),
        cluster_roles: reflector(cr_writer, watcher(Api::all(client.clone()), managed))
            .default_backoff()
            .touched_objects()
            .boxed(),
    };

    let stores = rbac::RbacStores {
        role_bindings,
        cluster_role_bindings,
        cluster_roles,
    };
    (stores, rbac_streams)
}

/// Runs the three controllers, and the admission webhooks when configured,
/// until `shutdown` resolves.
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), webhook::Error> {
    let reporter = Reporter {
        controller: "kubepam".into(),
        instance: Some(options.instance.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let shutdown = futures::FutureExt::shared(shutdown);

    let requests_api: Api<ElevationRequest> = Api::all(client.clone());
    let policies_api: Api<AccessPolicy> = Api::all(client.clone());
    let controls_api: Api<PrivilegedAccessControl> = Api::all(client.clone());

    let request_controller = lean_controller(requests_api);
    let policy_controller = lean_controller(policies_api);
    let control_controller = lean_controller(controls_api);

    let (rbac_stores, rbac_streams) = rbac_watches(&client);

    let ctx = Arc::new(Context {
        client: client.clone(),
        policies: policy_controller.store(),
        controls: control_controller.store(),
        requests: request_controller.store(),
        rbac: rbac_stores,
        recorder,
        ready: Arc::new(AtomicBool::new(false)),
        metrics: Arc::new(Metrics::default()),
    });

    let requests = request::controller(request_controller, &ctx, rbac_streams)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| measured("ElevationRequest", c.clone(), request::reconcile(o, c)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            log_result("ElevationRequest", result);
            future::ready(())
        });
    let policies = policy::controller(policy_controller, client.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| measured("AccessPolicy", c.clone(), policy::reconcile(o, c)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            log_result("AccessPolicy", result);
            future::ready(())
        });
    let controls = control::controller(control_controller, &ctx)
        .graceful_shutdown_on(shutdown)
        .run(
            |o, c| {
                measured(
                    "PrivilegedAccessControl",
                    c.clone(),
                    control::reconcile(o, c),
                )
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            log_result("PrivilegedAccessControl", result);
            future::ready(())
        });
    // Requests are decided only once the policies and the control are known,
    // so a restart never denies a request for a policy it has not read yet.
    // (The RBAC caches fill as the request controller runs: until then a
    // grant is applied again, which changes nothing, and removals also use
    // the objects recorded in status.)
    let stores = ctx.clone();
    let requests = async move {
        stores.policies.wait_until_ready().await.ok();
        stores.controls.wait_until_ready().await.ok();
        requests.await;
    };
    let readiness = ctx.clone();
    let mark_ready = async move {
        readiness.policies.wait_until_ready().await.ok();
        readiness.controls.wait_until_ready().await.ok();
        readiness.requests.wait_until_ready().await.ok();
        readiness.ready.store(true, Ordering::SeqCst);
        info!("caches synced");
    };
    let mut background = match options.webhook {
        Some(webhook) => start_webhooks(&ctx, webhook).await?,
        None => Vec::new(),
    };
    if let Some(bind) = options.metrics_bind {
        let server = webhook::serve_metrics(bind, ctx.clone());
        background.push(tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "metrics server stopped");
            }
        }));
    }
    info!("kubepam controllers started");
    futures::join!(requests, policies, controls, mark_ready);
    for task in background {
        task.abort();
    }
    info!("kubepam controllers stopped");
    Ok(())
}

/// Starts the HTTPS server, the execution log writer, the certificate
/// reloader and the registration of the webhook configurations.
async fn start_webhooks(
    ctx: &Arc<Context>,
    options: WebhookOptions,
) -> Result<Vec<tokio::task::JoinHandle<()>>, webhook::Error> {
    let serving = tls::load(&options.tls, &ctx.client).await?;
    let mut endpoint = options.endpoint.clone();
    if endpoint.ca_bundle.is_none() {
        endpoint.ca_bundle = serving.ca_bundle.clone();
    }
    let operator = whoami(&ctx.client)
        .await
        .map_err(webhook::Error::Identity)?;
    let (recorder, uses) = executions::channel();
    let handle = axum_server::Handle::new();
    let mut tasks = Vec::new();
    let server = webhook::serve(
        options.bind,
        serving.config.clone(),
        ctx.clone(),
        recorder,
        handle.clone(),
    );
    tasks.push(tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "admission webhook server stopped");
        }
    }));
    tasks.push(tokio::spawn(executions::run(ctx.clone(), uses)));
    if let tls::Source::Files { cert, key, .. } = &options.tls {
        tasks.push(tokio::spawn(tls::watch_files(
            serving.config.clone(),
            cert.clone(),
            key.clone(),
            tls::RELOAD_CHECK,
        )));
    }
    if options.register {
        let registrar = ctx.clone();
        tasks.push(tokio::spawn(async move {
            // Register only once the server answers and the caches are
            // filled, so the API server never calls a webhook that cannot decide.
            let _ = handle.listening().await;
            while !registrar.ready.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            webhooks::run(registrar, endpoint, operator).await;
        }));
    }
    Ok(tasks)
}

/// The operator's own username, as the API server authenticates it.
async fn whoami(client: &Client) -> Result<String, kube::Error> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}

fn log_result<K, E, Q>(
    kind: &str,
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E, Q>>,
) where
    E: std::error::Error + 'static,
    Q: std::error::Error + 'static,
    K: kube::Resource,
    K::DynamicType: std::fmt::Debug,
{
    match result {
        // Reconcile errors are logged (with their source chain) by error_policy.
        Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        // A change to a related object named an object deleted meanwhile.
        Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
            tracing::debug!(kind, %object, "object gone before its reconcile");
        }
        Err(error) => warn!(kind, %error, "controller stream error"),
    }
}
