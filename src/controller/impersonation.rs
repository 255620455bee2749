//! Carries out [`kubepam_core::impersonation`] on the leader: every half minute,
//! who RBAC lets impersonate an identity kubepam trusts. The list goes to the
//! control's `status.impersonators` (`kubectl pam impersonators`), its size to
//! `kubepam_impersonators`, and each change of it to a Warning Event
//! `ImpersonationRights` on the control.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::{Context, publish_event_on};
use crate::leader::Stop;
use crate::metrics::RightLabels;
use crate::shared::caches::Caches;
use kubepam_core::api::{CONTROL_NAME, ImpersonationRight, PrivilegedAccessControl};
use kubepam_core::drift::is_managed;
use kubepam_core::impersonation::{Impersonator, Target, impersonators};
use kubepam_core::standing;
use kubepam_core::webhook_configuration::CONTROL_PLANE_USERS;

/// How often RBAC is read again, whatever changed.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// Changes within this window are looked at together.
const SETTLE: Duration = Duration::from_secs(2);
/// The most subjects named in one Event (the rest are counted).
const EVENT_NAMES: usize = 10;

/// Reports impersonation rights until `stop`: after bindings change (a new
/// right needs a binding), and every half minute (a role edited in place).
pub async fn run(ctx: Arc<Context>, caches: Caches, operator: Option<String>, stop: Stop) {
    // kubepam's own grants are not standing rights, and come by the thousand
    // in a busy hour: only bindings made by others wake the report.
    let not_kubepams = |labels: &std::collections::BTreeMap<String, String>| !is_managed(labels);
    let changes = stream::select_all([
        caches
            .role_bindings
            .changes()
            .filter(move |b| std::future::ready(not_kubepams(b.labels())))
            .map(|_| ())
            .boxed(),
        caches
            .cluster_role_bindings
            .changes()
            .filter(move |b| std::future::ready(not_kubepams(b.labels())))
            .map(|_| ())
            .boxed(),
        caches.controls.spec_changes().map(|_| ()).boxed(),
    ]);
    let mut changes = changes.ready_chunks(1024);
    tokio::select! {
        () = caches.synced() => {}
        () = stop.clone() => return,
    }
    let mut reported: Option<BTreeSet<String>> = None;
    loop {
        let found = look(&ctx, operator.as_deref());
        report(&ctx, &found, &mut reported).await;
        tokio::select! {
            () = stop.clone() => return,
            _ = changes.next() => tokio::time::sleep(SETTLE).await,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

/// The identities kubepam trusts: never gated, deciding, or writing as kubepam.
fn targets(ctx: &Context, operator: Option<&str>) -> BTreeSet<Target> {
    let mut targets: BTreeSet<Target> = CONTROL_PLANE_USERS
        .iter()
        .map(|u| Target::User((*u).to_owned()))
        .collect();
    targets.insert(Target::Group("system:nodes".to_owned()));
    targets.extend(operator.map(|o| Target::User(o.to_owned())));
    if let Some(control) = ctx.control() {
        targets.extend(
            control
                .spec
                .system_accounts
                .iter()
                .cloned()
                .map(Target::User),
        );
        targets.insert(Target::Group(control.spec.default_approver_group.clone()));
    }
    // Whoever may act as one of these groups may decide requests, or break the glass.
    for policy in ctx.policies.state() {
        let spec = &policy.spec;
        targets.extend(spec.approver_group.clone().map(Target::Group));
        targets.extend(
            spec.escalation
                .iter()
                .map(|step| Target::Group(step.approver_group.clone())),
        );
        targets.extend(
            spec.break_glass
                .iter()
                .flat_map(|b| b.groups.iter().cloned().map(Target::Group)),
        );
    }
    targets
}

/// Who may impersonate the identities kubepam trusts; on the way, the count
/// of standing holders of each right of `kubectl pam standing` goes to
/// `kubepam_standing_holders`.
fn look(ctx: &Context, operator: Option<&str>) -> Vec<Impersonator> {
    // Standing rights only: kubepam's own roles and grants are approved and
    // end on time.
    let rbac = ctx.rbac_snapshot();
    let standing = rbac.standing();
    let policies = ctx.policies.state();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for right in standing::report(&standing, policies.iter().map(|p| &**p)) {
        *counts.entry(right.right).or_default() += 1;
    }
    ctx.metrics.standing_holders.clear();
    for (right, count) in counts {
        ctx.metrics
            .standing_holders
            .get_or_create(&RightLabels { right })
            .set(count);
    }
    let mut targets = targets(ctx, operator);
    targets.extend(kubepam_core::impersonation::rbac_approvers(&standing));
    impersonators(&standing, &targets)
}

async fn report(ctx: &Context, found: &[Impersonator], reported: &mut Option<BTreeSet<String>>) {
    let rights: Vec<ImpersonationRight> = found
        .iter()
        .map(|i| ImpersonationRight {
            subject: i.subject.clone(),
            targets: i.targets.iter().map(Target::describe).collect(),
            via: i.via.clone(),
        })
        .collect();
    ctx.metrics
        .impersonators
        .set(i64::try_from(rights.len()).unwrap_or(i64::MAX));
    let subjects: BTreeSet<String> = rights.iter().map(|r| r.subject.clone()).collect();
    let changed = reported.as_ref() != Some(&subjects);
    *ctx.impersonators
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(rights.clone());
    if !changed || rights.is_empty() && reported.is_none() {
        *reported = Some(subjects);
        return;
    }
    *reported = Some(subjects);
    if rights.is_empty() {
        return;
    }
    let mut named: Vec<String> = rights
        .iter()
        .take(EVENT_NAMES)
        .map(|r| {
            format!(
                "{} ({}; via {})",
                r.subject,
                r.targets.join(", "),
                r.via.join(", ")
            )
        })
        .collect();
    if rights.len() > EVENT_NAMES {
        named.push(format!("and {} more", rights.len() - EVENT_NAMES));
    }
    let note = format!(
        "{} subject(s) may impersonate identities kubepam trusts, and so pass the guard, decide or \
         write status as them: {}. See kubectl pam impersonators",
        rights.len(),
        named.join("; ")
    );
    // Subject names come from RBAC and may hold any character (a newline):
    // logged as a quoted field, never as the message.
    warn!(note = ?note, "subjects may impersonate identities kubepam trusts");
    let control = ObjectReference {
        api_version: Some(PrivilegedAccessControl::api_version(&()).into_owned()),
        kind: Some(PrivilegedAccessControl::kind(&()).into_owned()),
        name: Some(CONTROL_NAME.to_owned()),
        ..ObjectReference::default()
    };
    publish_event_on(
        ctx,
        &control,
        EventType::Warning,
        "ImpersonationRights",
        "Report",
        &note,
    )
    .await;
}
