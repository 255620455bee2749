//! Keeps kubepam's webhook configurations registered: the static ones (with
//! the current CA bundle) and the guard, whose rules follow the accepted Task
//! policies and whose exemptions follow the control's system accounts. The
//! guard exists only while the control is enabled and some Task policy is
//! accepted.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use tracing::{info, warn};

use super::{Context, FIELD_MANAGER};
use crate::admission;
use crate::api::{PolicyType, PrivilegedAccessControl};
use crate::lifecycle::PolicyView;
use crate::webhook::configuration::{self, Endpoint, GUARD_NAME};

/// How often the desired configurations are compared with what was applied.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How often the static configurations are applied again (repairs edits).
const REAPPLY_EVERY: Duration = Duration::from_secs(10);

/// The guard configuration that must exist now, if any.
pub fn desired_guard(
    ctx: &Context,
    endpoint: &Endpoint,
    operator: &str,
) -> Option<ValidatingWebhookConfiguration> {
    let control: Arc<PrivilegedAccessControl> = ctx.control()?;
    if !control.spec.enabled {
        return None;
    }
    let policies: Vec<_> = ctx
        .policies
        .state()
        .into_iter()
        .filter(|p| p.spec.policy_type == PolicyType::Task)
        .filter(|p| matches!(PolicyView::from_policy(Some(p)), PolicyView::Accepted(_)))
        .collect();
    let rules = admission::guard_rules(policies.iter().map(|p| &**p)).rules;
    if rules.is_empty() {
        return None;
    }
    let mut exempt = control.spec.system_accounts.clone();
    exempt.push(operator.to_owned());
    Some(configuration::guard(endpoint, &rules, &exempt))
}

/// Applies the configurations until the task is dropped.
pub async fn run(ctx: Arc<Context>, endpoint: Endpoint, operator: String) {
    let client = ctx.client.clone();
    let mut applied_guard: Option<Option<ValidatingWebhookConfiguration>> = None;
    let mut last_static: Option<tokio::time::Instant> = None;
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    loop {
        ticker.tick().await;
        if last_static.is_none_or(|t| t.elapsed() >= REAPPLY_EVERY) {
            match apply_static(&client, &endpoint).await {
                Ok(()) => last_static = Some(tokio::time::Instant::now()),
                Err(error) => warn!(%error, "failed to register the admission webhooks"),
            }
        }
        let desired = desired_guard(&ctx, &endpoint, &operator);
        if applied_guard.as_ref() == Some(&desired) {
            continue;
        }
        match set_guard(&client, desired.as_ref()).await {
            Ok(()) => {
                let rules = desired
                    .as_ref()
                    .and_then(|c| c.webhooks.as_ref())
                    .and_then(|w| w.first())
                    .and_then(|w| w.rules.as_ref())
                    .map_or(0, Vec::len);
                info!(rules, "guard webhook updated");
                applied_guard = Some(desired);
            }
            Err(error) => warn!(%error, "failed to update the guard webhook"),
        }
    }
}

async fn apply_static(client: &Client, endpoint: &Endpoint) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mutating = configuration::mutating(endpoint);
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(configuration::NAME, &params, &Patch::Apply(&mutating))
        .await?;
    let validating = configuration::validating(endpoint);
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(configuration::NAME, &params, &Patch::Apply(&validating))
        .await?;
    Ok(())
}

async fn set_guard(
    client: &Client,
    desired: Option<&ValidatingWebhookConfiguration>,
) -> Result<(), kube::Error> {
    let api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    match desired {
        Some(config) => {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(GUARD_NAME, &params, &Patch::Apply(config))
                .await?;
        }
        None => match api.delete(GUARD_NAME, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        },
    }
    Ok(())
}
