//! The PrivilegedAccessControl controller: keeps the singleton's status
//! ([`kubepam_core::control::desired_status`]) current.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use kube::runtime::Controller;
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::ObjectRef;

use super::{Context, Error};
use crate::shared::caches::Caches;
use kubepam_core::api::{AccessPolicy, CONTROL_NAME, ElevationRequest, PrivilegedAccessControl};
use kubepam_core::control::{ControlFacts, desired_status};

/// Counts change with every request; write them at most about once a second.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// How often the active-grant count is refreshed. Request changes do not wake
/// the control: under a steady stream of them the debounce would never let
/// a reconcile through.
const RECOUNT_EVERY: Duration = Duration::from_secs(5);

/// Woken by any policy change, mapped to the singleton.
pub fn controller(caches: &Caches) -> Controller<PrivilegedAccessControl> {
    let singleton = || Some(ObjectRef::<PrivilegedAccessControl>::new(CONTROL_NAME));
    Controller::for_shared_stream(caches.controls.everything(), caches.controls.store())
        .with_config(Config::default().debounce(DEBOUNCE))
        .watches_shared_stream(caches.policies.changes(), move |_| singleton())
}

pub async fn reconcile(
    control: Arc<PrivilegedAccessControl>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if control.name_any() != CONTROL_NAME {
        // The CRD's CEL rule refuses any other name; nothing to do.
        return Ok(Action::await_change());
    }
    let policies = ctx.policies.state();
    let policies: Vec<&AccessPolicy> = policies.iter().map(|p| &**p).collect();
    let requests = ctx.requests.state();
    let requests: Vec<&ElevationRequest> = requests.iter().map(|r| &**r).collect();
    let sinks = ctx.notifier.health();
    let impersonators = ctx
        .impersonators
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let guard = ctx
        .guard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let audit = ctx.auditor.health();
    let status = desired_status(
        &control,
        &ControlFacts {
            policies: &policies,
            requests: &requests,
            sinks: &sinks,
            impersonators: impersonators.as_deref(),
            guard: &guard,
            audit_problem: audit.problem.as_deref(),
            now: Utc::now(),
        },
    );
    // `status.audit` is the audit sequencer's: compared and written without it.
    let mut current = control.status.clone();
    if let Some(current) = current.as_mut() {
        current.audit = None;
    }
    super::apply_status(&ctx.client, &*control, current.as_ref(), &status, None).await?;
    Ok(Action::requeue(RECOUNT_EVERY))
}
