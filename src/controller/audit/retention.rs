//! The control's `retention`: ended requests past it are removed, once every audit sink has
//! their records. Only settled requests are looked at (kubepam settles a request once it has
//! ended, holds nothing and owes nothing, its records exported included); they are read a page
//! at a time, as kubepam does not cache them.

use std::time::Duration;

use chrono::Utc;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::super::Context;
use kubepam_core::api::ElevationRequest;
use kubepam_core::audit::{retention, trail};
use kubepam_core::duration;
use kubepam_core::reconcile::LABEL_SETTLED;

/// How often ended requests are looked at, at most: more often for a short retention (half
/// of it, at least every second), so nothing stays much past it.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Requests read per page.
const PAGE: u32 = 500;

/// Removes what is due, every [`SWEEP_EVERY`] or sooner, forever (the caller stops it).
pub async fn run(ctx: &Context) {
    loop {
        if let Err(error) = sweep(ctx).await {
            warn!(%error, "retention sweep failed; trying again later");
        }
        let retention = ctx
            .control()
            .and_then(|c| c.spec.retention.clone())
            .and_then(|r| duration::parse_with_days(&r).ok())
            .and_then(|r| (r / 2).to_std().ok())
            .unwrap_or(SWEEP_EVERY);
        tokio::time::sleep(retention.clamp(Duration::from_secs(1), SWEEP_EVERY)).await;
    }
}

async fn sweep(ctx: &Context) -> Result<(), kube::Error> {
    let Some(control) = ctx.control() else {
        return Ok(());
    };
    let Some(kept_for) = control
        .spec
        .retention
        .as_deref()
        .and_then(|r| duration::parse_with_days(r).ok())
    else {
        return Ok(());
    };
    let settings = control.spec.audit.as_ref();
    if settings.is_none_or(|s| s.sinks.is_empty()) {
        // Nothing is exported, so nothing may go (the control's AuditExported condition
        // says so).
        return Ok(());
    }
    let through = trail::exported_through(settings, Some(&ctx.auditor.log().recorded));
    let api = Api::<ElevationRequest>::all(ctx.client.clone());
    let mut params = ListParams::default().labels(LABEL_SETTLED).limit(PAGE);
    let mut removed = 0_usize;
    loop {
        let page = api.list(&params).await?;
        let now = Utc::now();
        for request in &page.items {
            if !retention::due(request, kept_for, through, now) {
                continue;
            }
            let preconditions = Preconditions {
                uid: request.uid(),
                resource_version: request.resource_version(),
            };
            match api
                .delete(
                    &request.name_any(),
                    &DeleteParams::default().preconditions(preconditions),
                )
                .await
            {
                Ok(_) => removed += 1,
                // Changed or gone since the page was read: the next sweep decides again.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(error) => return Err(error),
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    if removed > 0 {
        info!(
            removed,
            retention = control.spec.retention.as_deref().unwrap_or_default(),
            "ended requests past retention removed"
        );
    }
    Ok(())
}
