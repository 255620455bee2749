//! The execution log: every use of a grant that the guard admits is recorded
//! on its ElevationRequest (count, last uses) with an Event. Uses arrive on
//! the admission server's queue ([`crate::admission_server::uses`]) and are
//! written in batches, so a burst of uses is a few writes, and admission
//! never waits for them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::retry::{on_fresh_request, read_request};
use super::{Context, Error};
use crate::admission_server::uses::{Entry, Use};
use kubepam_core::api::{ElevationRequest, Execution};
use kubepam_core::lifecycle::record_execution;
use kubepam_core::persistence::record_lasting;

/// How long uses are gathered before they are written.
pub const BATCH_WINDOW: Duration = Duration::from_millis(500);

/// Writes queued uses until the channel closes.
pub async fn run(ctx: Arc<Context>, mut receiver: mpsc::Receiver<Use>) {
    while let Some(first) = receiver.recv().await {
        let mut batch: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        batch.entry(first.request).or_default().push(first.entry);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
            batch.entry(next.request).or_default().push(next.entry);
        }
        for (request, entries) in batch {
            if let Err(error) = write(&ctx, &request, &entries).await {
                warn!(%request, entries = entries.len(), %error, "failed to record uses");
            }
        }
    }
}

/// Adds the uses to the request's status, guarded by resourceVersion and
/// retried on conflict with the controller's own writes.
async fn write(ctx: &Context, name: &str, entries: &[Entry]) -> Result<(), Error> {
    let executions: Vec<Execution> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Execution(execution) => Some(execution.clone()),
            Entry::Lasting(_) => None,
        })
        .collect();
    let Some(request) = read_request(ctx, name).await? else {
        return Ok(());
    };
    let written = on_fresh_request(ctx, Arc::new(request), |request| async move {
        let mut status = request.status.clone().unwrap_or_default();
        for entry in entries {
            match entry {
                Entry::Execution(execution) => record_execution(&mut status, execution.clone()),
                Entry::Lasting(object) => record_lasting(&mut status, object.clone()),
            }
        }
        super::apply_status(
            &ctx.client,
            &*request,
            request.status.as_ref(),
            &status,
            request.resource_version(),
        )
        .await?;
        Ok(request)
    })
    .await?;
    if let Some(request) = written
        && !executions.is_empty()
    {
        announce(ctx, &request, &executions).await;
    }
    Ok(())
}

async fn announce(ctx: &Context, request: &ElevationRequest, executions: &[Execution]) {
    let described: Vec<String> = executions
        .iter()
        .map(|e| {
            format!(
                "{} {}{}{} by {}",
                e.verb,
                e.resource,
                e.name
                    .as_deref()
                    .map(|n| format!("/{n}"))
                    .unwrap_or_default(),
                e.namespace
                    .as_deref()
                    .map(|n| format!(" in {n}"))
                    .unwrap_or_default(),
                e.user
            )
        })
        .collect();
    info!(request = %request.name_any(), uses = executions.len(), "{}", described.join("; "));
    let note = format!(
        "{} use(s) of the grant: {}",
        executions.len(),
        described.join("; ")
    );
    super::publish_event(
        ctx,
        request,
        EventType::Normal,
        "Executed",
        "Execute",
        &note,
    )
    .await;
}
