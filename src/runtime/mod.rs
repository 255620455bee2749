//! The composition root: options, start-up and shutdown of one replica. It
//! starts the caches ([`Shared`]), the admission server on every replica,
//! the metrics server, and the controllers on the replica that holds the
//! Lease ([`crate::leader`]). Only `main.rs` uses it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::runtime::events::Reporter;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::admission_server::{self, tls};
use crate::controller::{self, Context, Notifier, Registration};
use crate::leader;
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::shared::caches::Caches;
use kubepam_core::webhook_configuration::Endpoint;

/// Options of a replica.
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
    /// The cluster's name in audit records' `source`.
    pub cluster_name: String,
    /// Where audit file sinks write.
    pub audit_dir: std::path::PathBuf,
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
) -> Result<(), admission_server::Error> {
    let reporter = Reporter {
        controller: "kubepam".into(),
        instance: Some(options.instance.clone()),
    };
    let recorder = crate::controller::events::Events::new(client.clone(), reporter);
    let shutdown: leader::Stop = futures::FutureExt::shared(Box::pin(shutdown) as _);

    let (caches, cache_tasks) = Caches::start(&client);
    let shared = Arc::new(Shared::new(
        client.clone(),
        &caches,
        Arc::new(Metrics::default()),
        options.namespace.clone(),
    ));
    let ctx = Arc::new(Context::new(
        shared.clone(),
        recorder,
        Notifier::new(options.sender.clone()),
        controller::audit::Auditor::new(&options.cluster_name, options.audit_dir.clone()),
    ));
    let readiness = shared.clone();
    let synced = caches.clone();
    let mark_ready = tokio::spawn(async move {
        synced.synced().await;
        readiness.ready.store(true, Ordering::SeqCst);
        info!("caches synced");
    });

    let admission = match options.webhook {
        Some(webhook) => Some(start_admission(&ctx, webhook).await?),
        None => None,
    };
    let metrics_server = options.metrics_bind.map(|bind| {
        let server = crate::metrics::server::serve(bind, shared.clone());
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "metrics server stopped");
            }
        })
    });

    let registration = admission.as_ref().and_then(|a| a.registration.clone());
    leader::run_elected(client, options.leader, &ctx.metrics, shutdown, |stop| {
        // Boxed: the leader's work is a large future.
        Box::pin(controller::lead(
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

/// Starts the HTTPS server, the writer of the uses it admits and the
/// certificate reloader; the webhook configurations are registered by the leader.
async fn start_admission(
    ctx: &Arc<Context>,
    options: WebhookOptions,
) -> Result<Admission, admission_server::Error> {
    let loaded = match &options.tls {
        tls::Source::Files { cert, key, .. } => Some(tls::file_times(cert, key)),
        tls::Source::Generated { .. } => None,
    };
    // The name the API server calls the webhooks by, and checks the certificate for.
    let server_name = kubepam_core::webhook_configuration::certificate_names(&options.endpoint)
        .into_iter()
        .next()
        .unwrap_or_default();
    let serving = tls::load(
        &options.tls,
        &ctx.client,
        &options.client_auth,
        &server_name,
    )
    .await?;
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
        .map_err(admission_server::Error::Identity)?;
    // Which identity's rights kubepam works with: in a pod, its service account.
    tracing::info!(user = %operator, "authenticated to the API server");
    let (use_log, uses) = admission_server::uses::channel();
    let handle = axum_server::Handle::new();
    let server = admission_server::serve(
        options.bind,
        serving.config.clone(),
        ctx.shared.clone(),
        use_log,
        handle.clone(),
        operator.as_str().into(),
        options.client_auth.required(),
    );
    let server = tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "admission webhook server stopped");
        }
    });
    let executions = tokio::spawn(controller::uses::run(ctx.clone(), uses));
    let reloader = match &options.tls {
        tls::Source::Files { cert, key, .. } => Some(tokio::spawn(tls::watch_files(
            serving.config.clone(),
            cert.clone(),
            key.clone(),
            loaded.unwrap_or_default(),
            tls::RELOAD_CHECK,
            options.client_auth.clone(),
        ))),
        tls::Source::Generated { .. } => None,
    };
    let registration = options.register.then_some(Registration {
        endpoint,
        operator,
        ca_file: match &options.tls {
            tls::Source::Files {
                ca: Some(ca), cert, ..
            } => Some(controller::registration::CaSource {
                ca: ca.clone(),
                serving: cert.clone(),
                server_name,
            }),
            tls::Source::Files { ca: None, .. } | tls::Source::Generated { .. } => None,
        },
    });
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
