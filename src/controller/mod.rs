//! The kube-rs wiring: three controllers that carry out the pure decisions of
//! [`crate::lifecycle`], [`crate::policy_limit`] and [`crate::grant`].
//!
//! Pipeline of a request: `look up policy and control -> decide (pure) ->
//! write status -> make RBAC match the grant -> announce the transition`.
//! Only the first step and the last three touch the API server.

mod caches;
mod control;
mod drift;
pub mod executions;
mod impersonation;
mod lasting;
pub mod leader;
mod notify;
pub mod policy;
mod rbac;
mod request;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
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
    /// Sends notifications and keeps each sink's health (used on the leader).
    pub notifier: Arc<notify::Notifier>,
    /// What the registrar knows of the guard (used on the leader).
    pub guard: webhooks::SharedGuardState,
    /// Who may impersonate identities kubepam trusts, once looked at (leader).
    pub impersonators: Arc<std::sync::Mutex<Option<Vec<crate::api::ImpersonationRight>>>>,
    /// kubepam's own namespace: no grant may reach it.
    pub namespace: String,
    /// Every ClusterRole but kubepam's, and every Role (the persistence guard).
    pub standing_cluster_roles: Store<ClusterRole>,
    pub roles: Store<Role>,
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

/// Every ClusterRole but kubepam's, every Role and every binding, as cached.
#[derive(Debug)]
pub struct RbacSnapshot {
    cluster_roles: Vec<Arc<ClusterRole>>,
    roles: Vec<Arc<Role>>,
    cluster_role_bindings: Vec<Arc<k8s_openapi::api::rbac::v1::ClusterRoleBinding>>,
    role_bindings: Vec<Arc<k8s_openapi::api::rbac::v1::RoleBinding>>,
}

impl RbacSnapshot {
    /// RBAC without kubepam's grants.
    pub fn standing(&self) -> crate::standing::Standing<'_> {
        crate::standing::Standing::new(
            self.cluster_roles.iter().map(|r| &**r),
            self.roles.iter().map(|r| &**r),
            self.cluster_role_bindings.iter().map(|b| &**b),
            self.role_bindings.iter().map(|b| &**b),
        )
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
    /// being unavailable or refusing a little later (a restarted API server
    /// answers 403 until its authorizer has caught up, and a grant due then
    /// must not wait long), and a grant that cannot be built only after a
    /// while (it needs a change of spec).
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
    publish_event_on(ctx, &request.object_ref(&()), type_, reason, action, note).await;
}

/// Publishes an Event about any object (see [`publish_event`]).
async fn publish_event_on(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
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
    if let Err(error) = ctx.recorder.publish(&event, object).await {
        warn!(
            object = object.name.as_deref().unwrap_or_default(),
            %error,
            "failed to publish event"
        );
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

/// Options of the controllers.
#[derive(Debug, Clone)]
pub struct Options {
    /// The name of this replica, reported on Events.
    pub instance: String,
    /// The admission webhooks; `None` runs without them.
    pub webhook: Option<WebhookOptions>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP).
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// Leader election; `None` reconciles without it (one replica only).
    pub leader: Option<leader::LeaderOptions>,
    /// Sends notifications, reading the Secrets sinks name in kubepam's own namespace.
    pub sender: crate::delivery::Sender,
    /// kubepam's own namespace: no grant may reach it.
    pub namespace: String,
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
    /// Who may call the webhooks.
    pub client_auth: tls::ClientAuth,
}

/// Runs kubepam until `shutdown` resolves: the caches and the admission
/// webhooks on every replica, the controllers on the one holding the Lease.
/// On shutdown, in-flight reconciles finish, the webhook server drains, the
/// uses it admitted are written and the Lease is given up.
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), webhook::Error> {
    let reporter = Reporter {
        controller: "kubepam".into(),
        instance: Some(options.instance.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let shutdown: leader::Stop = futures::FutureExt::shared(Box::pin(shutdown) as _);

    let (caches, cache_tasks) = caches::Caches::start(&client);
    let ctx = Arc::new(Context {
        client: client.clone(),
        policies: caches.policies.store(),
        controls: caches.controls.store(),
        requests: caches.requests.store(),
        rbac: caches.rbac_stores(),
        recorder,
        ready: Arc::new(AtomicBool::new(false)),
        metrics: Arc::new(Metrics::default()),
        notifier: Arc::new(notify::Notifier::new(options.sender.clone())),
        guard: webhooks::SharedGuardState::default(),
        impersonators: Arc::default(),
        namespace: options.namespace.clone(),
        standing_cluster_roles: caches.standing_cluster_roles.store(),
        roles: caches.roles.store(),
    });
    let readiness = ctx.clone();
    let synced = caches.clone();
    let mark_ready = tokio::spawn(async move {
        synced.synced().await;
        readiness.ready.store(true, Ordering::SeqCst);
        info!("caches synced");
    });

    let admission = match options.webhook {
        Some(webhook) => Some(start_webhooks(&ctx, webhook).await?),
        None => None,
    };
    let metrics_server = options.metrics_bind.map(|bind| {
        let server = webhook::serve_metrics(bind, ctx.clone());
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "metrics server stopped");
            }
        })
    });

    let registration = admission.as_ref().and_then(|a| a.registration.clone());
    leader::run_elected(client, options.leader, &ctx.metrics, shutdown, |stop| {
        // Boxed: the leader's work is a large future.
        Box::pin(lead(
            ctx.clone(),
            caches.clone(),
            registration.clone(),
            stop,
        ))
    })
    .await;

    if let Some(admission) = admission {
        admission.stop().await;
    }
    mark_ready.abort();
    for task in cache_tasks.into_iter().chain(metrics_server) {
        task.abort();
    }
    info!("kubepam stopped");
    Ok(())
}

/// The leader's work, until `stop`: the three controllers and the
/// registration of the webhook configurations.
async fn lead(
    ctx: Arc<Context>,
    caches: caches::Caches,
    registration: Option<Registration>,
    stop: leader::Stop,
) {
    if registration.is_some() {
        // Before any policy is judged: none is accepted ahead of the guard.
        webhooks::GuardState::start_registering(&ctx.guard);
    }
    let requests = request::controller(&caches)
        .graceful_shutdown_on(stop.clone())
        .run(
            |o, c| measured("ElevationRequest", c.clone(), request::reconcile(o, c)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            log_result("ElevationRequest", result);
            future::ready(())
        });
    let policies = policy::controller(&caches)
        .graceful_shutdown_on(stop.clone())
        .run(
            |o, c| measured("AccessPolicy", c.clone(), policy::reconcile(o, c)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            log_result("AccessPolicy", result);
            future::ready(())
        });
    let controls = control::controller(&caches)
        .graceful_shutdown_on(stop.clone())
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
    let deliveries = notify::controller(&caches)
        .graceful_shutdown_on(stop.clone())
        .run(
            |o, c| measured("Notification", c.clone(), notify::reconcile(o, c)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            log_result("Notification", result);
            future::ready(())
        });
    // Notifications are tried only once the control is known: its sinks say
    // where they go.
    let synced = caches.clone();
    let deliveries = async move {
        synced.synced().await;
        deliveries.await;
    };
    // Requests are decided only once the policies and the control are known,
    // so a restart never denies a request for a policy it has not read yet,
    // and RBAC is compared only with a complete cache of it.
    let synced = caches.clone();
    let requests = async move {
        synced.synced().await;
        requests.await;
    };
    let janitor = drift::run(ctx.clone(), caches.clone(), stop.clone());
    let impersonation = impersonation::run(
        ctx.clone(),
        caches.clone(),
        registration.as_ref().map(|r| r.operator.clone()),
        stop.clone(),
    );
    let registrar = ctx.clone();
    let register = async move {
        let Some(registration) = registration else {
            return;
        };
        // Register only once the caches are filled, so the API server never
        // calls a webhook that cannot decide.
        caches.synced().await;
        webhooks::run(registrar, registration.endpoint, registration.operator).await;
    };
    let register = async move {
        tokio::select! {
            () = register => {}
            () = stop => {}
        }
    };
    info!("kubepam controllers started");
    futures::join!(
        requests,
        deliveries,
        policies,
        controls,
        register,
        janitor,
        impersonation
    );
    info!("kubepam controllers stopped");
}

/// What the leader needs to register the webhook configurations.
#[derive(Debug, Clone)]
struct Registration {
    endpoint: Endpoint,
    operator: String,
}

/// The admission side of a replica: the HTTPS server and its helpers.
#[derive(Debug)]
struct Admission {
    server: tokio::task::JoinHandle<()>,
    handle: axum_server::Handle<std::net::SocketAddr>,
    executions: tokio::task::JoinHandle<()>,
    reloader: Option<tokio::task::JoinHandle<()>>,
    registration: Option<Registration>,
}

/// How long a shutdown waits for admission calls in flight and for the
/// uses they admitted to be written.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Admission {
    /// Stops taking calls, lets those in flight finish, then writes the
    /// uses they admitted (the recorder closes with the server).
    async fn stop(self) {
        self.handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.server).await;
        if tokio::time::timeout(DRAIN_TIMEOUT, self.executions)
            .await
            .is_err()
        {
            warn!("uses admitted before shutdown not all recorded in time");
        }
        if let Some(reloader) = self.reloader {
            reloader.abort();
        }
    }
}

/// Starts the HTTPS server, the execution log writer and the certificate
/// reloader; the webhook configurations are registered by the leader.
async fn start_webhooks(
    ctx: &Arc<Context>,
    options: WebhookOptions,
) -> Result<Admission, webhook::Error> {
    let serving = tls::load(&options.tls, &ctx.client, &options.client_auth).await?;
    if !options.client_auth.required() {
        warn!(
            "the webhooks accept calls from anyone who reaches them (no --webhook-client-ca-file): \
             uses they report are recorded as unverified"
        );
    }
    let mut endpoint = options.endpoint.clone();
    if endpoint.ca_bundle.is_none() {
        endpoint.ca_bundle = serving.ca_bundle.clone();
    }
    let operator = whoami(&ctx.client)
        .await
        .map_err(webhook::Error::Identity)?;
    let (recorder, uses) = executions::channel();
    let handle = axum_server::Handle::new();
    let server = webhook::serve(
        options.bind,
        serving.config.clone(),
        ctx.clone(),
        recorder,
        handle.clone(),
        operator.as_str().into(),
        options.client_auth.required(),
    );
    let server = tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "admission webhook server stopped");
        }
    });
    let executions = tokio::spawn(executions::run(ctx.clone(), uses));
    let reloader = match &options.tls {
        tls::Source::Files { cert, key, .. } => Some(tokio::spawn(tls::watch_files(
            serving.config.clone(),
            cert.clone(),
            key.clone(),
            tls::RELOAD_CHECK,
            options.client_auth.clone(),
        ))),
        tls::Source::Generated { .. } => None,
    };
    let registration = options
        .register
        .then_some(Registration { endpoint, operator });
    Ok(Admission {
        server,
        handle,
        executions,
        reloader,
        registration,
    })
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
