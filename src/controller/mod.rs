//! The controllers: each carries out what the core decides, and only that.
//!
//! - `request`: an ElevationRequest's lifecycle ([`kubepam_core::lifecycle`]) and its grant's
//!   RBAC ([`kubepam_core::grant`], written by `rbac`);
//! - `policy` and `control`: AccessPolicy and PrivilegedAccessControl status
//!   ([`kubepam_core::policy_limit`]);
//! - `notify`: notification delivery from each request's outbox;
//! - `registration`: the guard's webhook configurations;
//! - `drift`, `impersonation`, `lasting`: sweeps that report or undo what
//!   happened outside kubepam;
//! - `uses`: records the uses the admission server admitted.
//!
//! Only the leader runs them ([`lead`]); every replica serves admission.

pub mod audit;
mod control;
mod drift;
pub mod events;
mod impersonation;
mod lasting;
mod notify;
mod policy;
mod rbac;
pub mod registration;
mod request;
mod retry;
pub mod uses;

use std::ops::Deref;
use std::sync::Arc;

use futures::{StreamExt, future};
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::leader;
use crate::metrics::{ErrorLabels, KindLabels};
use crate::shared::Shared;
use crate::shared::caches::{Caches, Watched};
use kubepam_core::api::ElevationRequest;

pub use notify::Notifier;
pub use registration::Registration;

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
    #[error("failed to label ElevationRequest {name} as settled")]
    Settle {
        name: String,
        #[source]
        source: kube::Error,
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
            Error::Settle { .. } => "Settle",
        }
    }
}

/// What every reconcile shares: the replica's [`Shared`] state, the Event
/// recorder, the notifier and what the leader learned.
#[derive(Clone)]
pub struct Context {
    pub shared: Arc<Shared>,
    pub recorder: events::Events,
    /// Sends notifications and keeps each sink's health.
    pub notifier: Arc<Notifier>,
    /// What the registrar knows of the guard.
    pub guard: registration::SharedGuardState,
    /// Who may impersonate identities kubepam trusts, once looked at.
    pub impersonators: Arc<std::sync::Mutex<Option<Vec<kubepam_core::api::ImpersonationRight>>>>,
    /// Consecutive failed reconciles per object, for their backoff.
    pub failures: retry::Failures,
    /// The audit chain, as the leader knows it.
    pub auditor: Arc<audit::Auditor>,
}

impl Context {
    pub fn new(
        shared: Arc<Shared>,
        recorder: events::Events,
        notifier: Notifier,
        auditor: audit::Auditor,
    ) -> Self {
        Self {
            auditor: Arc::new(auditor),
            shared,
            recorder,
            notifier: Arc::new(notifier),
            guard: registration::SharedGuardState::default(),
            impersonators: Arc::default(),
            failures: retry::Failures::default(),
        }
    }
}

/// A reconcile reads the shared caches as its own.
impl Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Error {
    /// Whether the API server refused a write because the object changed
    /// since it was read (409): read it again and decide again.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::WriteStatus { source, .. }
            | Error::Finalizer { source, .. }
            | Error::Settle { source, .. } => {
                matches!(source, kube::Error::Api(status) if status.code == 409)
            }
            _ => false,
        }
    }
}

/// Counts and times a reconcile, and its failure by reason.
async fn measured(
    kind: &'static str,
    name: String,
    ctx: Arc<Context>,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let start = std::time::Instant::now();
    let result = reconcile.await;
    if result.is_ok() {
        ctx.failures.succeeded(kind, &name);
    }
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

/// Logs a failed reconcile of `kind` (the controller's name, as in the
/// metrics) and schedules the retry its error calls for. A conflict is
/// retried at once and does not count as a failure.
fn error_policy<K: Resource<DynamicType = ()>>(
    kind: &str,
    object: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    let name = object.name_any();
    let failures = if error.is_conflict() {
        0
    } else {
        ctx.failures.failed(kind, &name)
    };
    let after = retry::retry_after(error, failures);
    warn!(
        kind,
        %name,
        error = %error,
        source = ?std::error::Error::source(error),
        reason = error.label(),
        failures,
        retry_in_ms = after.as_millis(),
        "reconcile failed; retrying"
    );
    Action::requeue(after)
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

/// Runs one controller until `stop`, each reconcile measured and its
/// failures retried by [`error_policy`].
async fn run_controller<K: Watched, Fut>(
    kind: &'static str,
    controller: Controller<K>,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    ctx: Arc<Context>,
    stop: leader::Stop,
) where
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .graceful_shutdown_on(stop)
        .run(
            move |object, ctx| {
                let name = object.name_any();
                measured(kind, name, ctx.clone(), reconcile(object, ctx))
            },
            move |object, error, ctx| error_policy(kind, &*object, error, &ctx),
            ctx,
        )
        .for_each(|result| {
            log_result(kind, result);
            future::ready(())
        })
        .await;
}

/// The leader's work, until `stop`: the controllers, the sweeps and the
/// registration of the webhook configurations.
pub async fn lead(
    ctx: Arc<Context>,
    caches: Caches,
    registration: Option<Registration>,
    stop: leader::Stop,
) {
    if registration.is_some() {
        // Before any policy is judged: none is accepted ahead of the guard.
        registration::start_registering(&ctx.guard);
    }
    let requests = run_controller(
        "ElevationRequest",
        request::controller(&caches),
        request::reconcile,
        ctx.clone(),
        stop.clone(),
    );
    let policies = run_controller(
        "AccessPolicy",
        policy::controller(&caches),
        policy::reconcile,
        ctx.clone(),
        stop.clone(),
    );
    let controls = run_controller(
        "PrivilegedAccessControl",
        control::controller(&caches),
        control::reconcile,
        ctx.clone(),
        stop.clone(),
    );
    let deliveries = run_controller(
        "Notification",
        notify::controller(&caches),
        notify::reconcile,
        ctx.clone(),
        stop.clone(),
    );
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
    let auditor = audit::run(ctx.clone(), caches.clone(), stop.clone());
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
        registration::run(registrar, registration).await;
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
        impersonation,
        auditor
    );
    info!("kubepam controllers stopped");
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
