//! Leader election on a `coordination.k8s.io` Lease: every replica keeps its
//! caches and serves admission, but only the holder of the Lease reconciles
//! and writes, so two replicas never race each other's decisions.

use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info, warn};

use crate::metrics::Metrics;

/// Where the Lease lives and how this replica holds it.
#[derive(Debug, Clone)]
pub struct LeaderOptions {
    pub namespace: String,
    pub lease: String,
    /// Unique per replica (the pod name); a process restarted under the
    /// same identity takes its Lease back at once.
    pub identity: String,
    /// How long a Lease lasts without renewal: the longest a crashed
    /// leader can leave the work undone.
    pub duration: Duration,
    /// How long before the end of the Lease the holder renews it.
    pub grace: Duration,
}

/// How long to wait before trying again to set up the Lease.
const SETUP_RETRY: Duration = Duration::from_secs(5);
/// How long a graceful shutdown waits for the Lease to be given up.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

pub type Stop = Shared<BoxFuture<'static, ()>>;

/// Runs `lead` whenever this replica holds the Lease (always, without
/// `options`), with a future that resolves when it must stop: the Lease is
/// lost or `shutdown` resolves. Returns after `shutdown`, the Lease given up.
pub async fn run_elected<F, Fut>(
    client: Client,
    options: Option<LeaderOptions>,
    metrics: &Metrics,
    shutdown: Stop,
    lead: F,
) where
    F: Fn(Stop) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(options) = options else {
        metrics.leader.set(1);
        lead(shutdown).await;
        metrics.leader.set(0);
        return;
    };
    let Some(manager) = set_up(&client, &options, shutdown.clone()).await else {
        return;
    };
    let (mut leading, lease_task) = manager.watch().await;
    loop {
        tokio::select! {
            () = shutdown.clone() => break,
            changed = leading.wait_for(|leader| *leader) => {
                if changed.is_err() {
                    error!("leader election stopped; no longer reconciling");
                    break;
                }
            }
        }
        info!(identity = %options.identity, lease = %options.lease, "leading");
        metrics.leader.set(1);
        let mut watching = leading.clone();
        let lost = async move {
            let _ = watching.wait_for(|leader| !*leader).await;
        };
        let stop = futures::future::select(shutdown.clone(), Box::pin(lost))
            .map(|_| ())
            .boxed()
            .shared();
        lead(stop).await;
        metrics.leader.set(0);
        if shutdown.peek().is_some() {
            break;
        }
        warn!(identity = %options.identity, "lost the lease; no longer reconciling");
    }
    // Closing the channel makes the manager give the Lease up, so another
    // replica takes over at once instead of waiting for it to expire.
    drop(leading);
    match tokio::time::timeout(RELEASE_TIMEOUT, lease_task).await {
        Ok(Ok(Ok(_))) => info!("lease released"),
        Ok(Ok(Err(error))) => warn!(%error, "failed to release the lease"),
        Ok(Err(error)) => warn!(%error, "leader election task failed"),
        Err(_) => warn!("lease not released in time; it will expire"),
    }
}

/// Makes the manager, retrying while the API server refuses (the Lease's
/// namespace or RBAC may be applied after kubepam starts).
async fn set_up(
    client: &Client,
    options: &LeaderOptions,
    shutdown: Stop,
) -> Option<kube_lease_manager::LeaseManager> {
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &options.lease)
            .with_namespace(&options.namespace)
            .with_identity(&options.identity)
            .with_duration(options.duration.as_secs().max(2))
            .with_grace(
                options
                    .grace
                    .as_secs()
                    .clamp(1, options.duration.as_secs().max(2) - 1),
            )
            .build()
            .await;
        match built {
            Ok(manager) => return Some(manager),
            Err(error) => {
                warn!(
                    namespace = %options.namespace,
                    lease = %options.lease,
                    %error,
                    "cannot use the leader Lease; retrying"
                );
            }
        }
        tokio::select! {
            () = shutdown.clone() => return None,
            () = tokio::time::sleep(SETUP_RETRY) => {}
        }
    }
}
