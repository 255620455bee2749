//! The ElevationRequest controller: carries out [`lifecycle::decide`].
//!
//! Order matters for safety. Rights are added only after the decision that
//! grants them is recorded in status, and taken away before the record says
//! they are gone; a crash between the two steps leaves the record ahead of
//! the RBAC objects, and the next reconcile repairs it. Status writes carry
//! the resourceVersion that was read, so a decision made from a stale cache
//! is refused by the API server (409) and made again from fresh data.

use std::sync::Arc;

use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use super::{Context, Error, rbac};
use crate::shared::caches::Caches;
use kubepam_core::api::{
    AccessPolicy, ElevationRequest, Phase, condition_true, find_condition, remove_condition,
    same_objects, set_condition,
};
use kubepam_core::grant::{self, DesiredRbac};
use kubepam_core::lifecycle::{self, ControlView, PolicyView, Transition};
use kubepam_core::notify::plan;

use kubepam_core::grant::FINALIZER;

/// Condition type: present while an object kubepam did not make holds a name the grant needs.
pub const CONDITION_GRANT_BLOCKED: &str = "GrantBlocked";

/// The request controller, also woken by changes to policies, the control,
/// and RBAC objects that carry kubepam's labels (so a binding deleted by hand
/// is restored, and one edited by hand is put back).
pub fn controller(caches: &Caches) -> Controller<ElevationRequest> {
    let requests = caches.requests.store();
    let for_policy = requests.clone();
    let for_control = requests.clone();
    let owner = move |labels: &std::collections::BTreeMap<String, String>| {
        let id = labels.get(grant::LABEL_REQUEST_ID)?;
        requests
            .state()
            .into_iter()
            .find(|request| lifecycle::request_id(request) == *id)
            .map(|request| ObjectRef::from_obj(&*request))
    };
    let (rb, crb, cr) = (owner.clone(), owner.clone(), owner);
    Controller::for_shared_stream(caches.requests.everything(), caches.requests.store())
        .watches_shared_stream(caches.policies.changes(), move |policy| {
            let name = policy.name_any();
            for_policy
                .state()
                .into_iter()
                .filter(|request| request.spec.policy == name && !is_settled(request))
                .map(|request| ObjectRef::from_obj(&*request))
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(caches.controls.changes(), move |_| {
            for_control
                .state()
                .into_iter()
                .filter(|request| !is_settled(request))
                .map(|request| ObjectRef::from_obj(&*request))
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(caches.role_bindings.changes(), move |o| rb(o.labels()))
        .watches_shared_stream(caches.cluster_role_bindings.changes(), move |o| {
            crb(o.labels())
        })
        .watches_shared_stream(caches.cluster_roles.changes(), move |o| cr(o.labels()))
}

/// A request that is final and holds nothing: no change elsewhere can move it.
fn is_settled(request: &ElevationRequest) -> bool {
    request.status.as_ref().is_some_and(|status| {
        status.phase.is_some_and(Phase::is_final) && status.rbac_objects.is_empty()
    })
}

/// How many times a reconcile reads the request again after a write conflict
/// before it gives up and lets the controller retry later.
const CONFLICT_ATTEMPTS: usize = 3;

pub async fn reconcile(request: Arc<ElevationRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The cache can lag behind the operator's own last write (a change to a
    // binding wakes the request before its new status arrives). The guarded
    // write then fails with 409: read the request fresh and decide again.
    let api: Api<ElevationRequest> = Api::all(ctx.client.clone());
    let mut current = request;
    let mut attempt = 1;
    loop {
        match reconcile_once(&current, &ctx).await {
            Err(error) if error.is_conflict() && attempt < CONFLICT_ATTEMPTS => {
                attempt += 1;
                let name = current.name_any();
                match api.get_opt(&name).await {
                    Ok(Some(fresh)) => current = Arc::new(fresh),
                    Ok(None) => return Ok(Action::await_change()),
                    Err(source) => {
                        return Err(Error::Read {
                            what: format!("ElevationRequest {name}"),
                            source,
                        });
                    }
                }
            }
            result => return result,
        }
    }
}

// The pipeline reads best in its safety order, in one place.
#[allow(clippy::too_many_lines)]
async fn reconcile_once(request: &ElevationRequest, ctx: &Context) -> Result<Action, Error> {
    let name = request.name_any();
    let request_id = lifecycle::request_id(request);
    let api: Api<ElevationRequest> = Api::all(ctx.client.clone());

    let recorded = request
        .status
        .as_ref()
        .map(|s| s.rbac_objects.clone())
        .unwrap_or_default();
    if request.metadata.deletion_timestamp.is_some() {
        let removed = rbac::prune(&ctx.client, &ctx.rbac, &request_id, &recorded, &[]).await?;
        if removed > 0 {
            info!(request = %name, %request_id, removed, "grant removed with its deleted request");
        }
        set_finalizer(&api, request, request.resource_version(), false).await?;
        return Ok(Action::await_change());
    }

    let policy = lookup_policy(ctx, &request.spec.policy).await?;
    let control = ctx.control();
    let decision = lifecycle::decide(
        request,
        &PolicyView::from_policy(policy.as_deref()),
        &ControlView::from_control(control.as_deref()).with_kubepam_namespace(&ctx.namespace),
        Utc::now(),
    );
    let desired = match &decision.grant {
        Some(scope) => grant::desired_rbac(
            &name,
            &request_id,
            request.spec.requester.as_deref().unwrap_or_default(),
            scope,
        )
        .map_err(|source| Error::BuildGrant {
            name: name.clone(),
            source,
        })?,
        None => DesiredRbac::default(),
    };

    let mut status = decision.status.clone();
    let wanted = desired.object_refs();
    // Status records only objects known to be this request's: those recorded
    // before that are still wanted; new ones once they are made.
    status.rbac_objects = recorded
        .iter()
        .filter(|o| wanted.iter().any(|w| w.same_object(o)))
        .cloned()
        .collect();
    // Recorded in the same write as the transition: neither can be lost
    // without the other. The delivery controller sends them.
    let owed = owed_notifications(request, &status, &decision, control.as_deref());
    plan::enqueue(&mut status.notifications, owed.clone());
    // Each write returns the new resourceVersion, which guards the next one.
    let version = request.resource_version();
    if desired.is_empty() {
        // Also when nothing is recorded: an object may have been made by
        // hand, or created just before a crash, with this request's label.
        if !recorded.is_empty() || !ctx.rbac.objects_of(&request_id).is_empty() {
            let removed = rbac::prune(&ctx.client, &ctx.rbac, &request_id, &recorded, &[]).await?;
            if removed > 0 {
                info!(request = %name, %request_id, removed, "grant removed");
                // Nothing was in force: these were made by hand, or left behind.
                if decision.transition.is_none() && recorded.is_empty() {
                    report_leftovers(ctx, request, removed).await;
                }
            }
        }
        remove_condition(&mut status.conditions, CONDITION_GRANT_BLOCKED);
        // What the grant left behind is handled once it has ended, in the
        // write that marks it reported: a crash in between handles it again,
        // and what was recorded late is handled on the next pass.
        let finished = status.phase.is_some_and(Phase::is_final);
        let left: Vec<_> = if finished && status.lasting_objects.iter().any(|o| !o.reported) {
            if control.as_ref().is_some_and(|c| c.spec.remove_persistence) {
                let since = status.decided_at.unwrap_or_else(Utc::now);
                super::lasting::remove(ctx, &mut status, since).await;
            }
            let fresh = status
                .lasting_objects
                .iter()
                .filter(|o| !o.reported)
                .cloned()
                .collect();
            for object in &mut status.lasting_objects {
                object.reported = true;
            }
            fresh
        } else {
            Vec::new()
        };
        let version = super::apply_status(
            &ctx.client,
            request,
            request.status.as_ref(),
            &status,
            version,
        )
        .await?;
        if !left.is_empty() {
            super::lasting::report(ctx, request, &left).await;
        }
        if status.phase.is_some_and(Phase::is_final) {
            set_finalizer(&api, request, version, false).await?;
        }
    } else {
        let version = set_finalizer(&api, request, version, true).await?;
        let version = super::apply_status(
            &ctx.client,
            request,
            request.status.as_ref(),
            &status,
            version,
        )
        .await?;
        // Checked every time: a binding deleted or edited by hand comes back.
        let before = status.clone();
        let applied = match rbac::apply(&ctx.client, &ctx.rbac, &desired, &request_id, &recorded)
            .await?
        {
            Ok(applied) => applied,
            Err(collision) => {
                let requeue =
                    report_collision(ctx, request, &before, status, version, &collision).await?;
                if let Some(transition) = &decision.transition {
                    announce(ctx, request, &request_id, transition).await;
                }
                return Ok(requeue);
            }
        };
        let extra = rbac::prune(
            &ctx.client,
            &ctx.rbac,
            &request_id,
            &recorded,
            &applied.owned,
        )
        .await?;
        status.rbac_objects.clone_from(&applied.owned);
        remove_condition(&mut status.conditions, CONDITION_GRANT_BLOCKED);
        super::apply_status(&ctx.client, request, Some(&before), &status, version).await?;
        if decision.transition.is_none() && same_objects(&recorded, &status.rbac_objects) {
            report_drift(ctx, request, &status, &applied, extra).await;
        }
    }

    if let Some(transition) = &decision.transition {
        announce(ctx, request, &request_id, transition).await;
    }
    super::notify::report_undeliverable(ctx, request, &owed).await;
    Ok(match decision.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// The notifications a transition owes under the control's settings.
fn owed_notifications(
    request: &ElevationRequest,
    status: &kubepam_core::api::ElevationRequestStatus,
    decision: &lifecycle::Decision,
    control: Option<&kubepam_core::api::PrivilegedAccessControl>,
) -> Vec<kubepam_core::api::Notification> {
    let (Some(transition), Some(config)) = (
        &decision.transition,
        control.and_then(|c| c.spec.notifications.as_ref()),
    ) else {
        return Vec::new();
    };
    plan::for_transition(request, status, transition, config, Utc::now())
}

/// How long after a grant is recorded its objects are surely in the cache:
/// one missing later was deleted by hand (earlier, it may just not have
/// been seen yet).
const SETTLED: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// An Event and a metric when a grant in force had to be put back: objects
/// edited or deleted by hand, or extra objects labelled as part of it.
async fn report_drift(
    ctx: &Context,
    request: &ElevationRequest,
    status: &kubepam_core::api::ElevationRequestStatus,
    applied: &rbac::Applied,
    extra: usize,
) {
    let settled = status
        .decided_at
        .is_some_and(|decided| Utc::now() - decided > SETTLED);
    let restored = applied.changed + if settled { applied.missing } else { 0 };
    if restored == 0 && extra == 0 {
        return;
    }
    let mut what = Vec::new();
    if restored > 0 {
        what.push(format!(
            "restored {restored} RBAC object(s) of the grant that were edited or deleted by hand"
        ));
        ctx.metrics.drift_repaired("restored", restored);
    }
    if extra > 0 {
        what.push(format!(
            "removed {extra} RBAC object(s) labelled as part of the grant that are not"
        ));
        ctx.metrics.drift_repaired("removed-extra", extra);
    }
    publish_drift(ctx, request, "GrantRepaired", &what.join("; ")).await;
}

/// How long a grant blocked by an object of someone else waits before it looks again (a change
/// of any binding wakes it sooner).
const COLLISION_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// An object kubepam did not make holds a name the grant needs: nothing of it is touched; the
/// request says so in a `GrantBlocked` condition, with a Warning Event when it first happens.
async fn report_collision(
    ctx: &Context,
    request: &ElevationRequest,
    written: &kubepam_core::api::ElevationRequestStatus,
    mut status: kubepam_core::api::ElevationRequestStatus,
    version: Option<String>,
    collision: &rbac::Collision,
) -> Result<Action, Error> {
    let object = &collision.object;
    let place = object
        .namespace
        .as_deref()
        .map(|ns| format!(" in namespace {ns}"))
        .unwrap_or_default();
    let message = format!(
        "{} {}{place} exists and was not made by kubepam for this request, so the grant is not \
         made and that object is left alone; a cluster administrator should find out who made it \
         and delete it",
        object.kind, object.name
    );
    let first = find_condition(&written.conditions, CONDITION_GRANT_BLOCKED).is_none();
    set_condition(
        &mut status.conditions,
        condition_true(
            CONDITION_GRANT_BLOCKED,
            "NameCollision",
            message.clone(),
            Utc::now(),
            request.metadata.generation,
        ),
    );
    super::apply_status(&ctx.client, request, Some(written), &status, version).await?;
    if first {
        tracing::warn!(request = %request.name_any(), "{message}");
        ctx.metrics.drift_repaired("name-collision", 1);
        super::publish_event(
            ctx,
            request,
            EventType::Warning,
            "NameCollision",
            "Grant",
            &message,
        )
        .await;
    }
    Ok(Action::requeue(COLLISION_RETRY))
}

/// Objects labelled as this request's grant removed while it holds none:
/// made by hand, or left behind.
async fn report_leftovers(ctx: &Context, request: &ElevationRequest, removed: usize) {
    ctx.metrics.drift_repaired("removed-extra", removed);
    let note = format!(
        "removed {removed} RBAC object(s) labelled as part of a grant of this request, which holds none"
    );
    // A reason of its own: kube's recorder folds Events of the same reason
    // into one series and keeps the first note.
    publish_drift(ctx, request, "LeftoversRemoved", &note).await;
}

async fn publish_drift(ctx: &Context, request: &ElevationRequest, reason: &str, note: &str) {
    tracing::warn!(request = %request.name_any(), "{note}");
    super::publish_event(ctx, request, EventType::Warning, reason, "Repair", note).await;
}

/// The request's policy: from the cache, or from the API server when the
/// cache does not have it yet (a policy created just before the request must
/// not make the request fail).
async fn lookup_policy(ctx: &Context, name: &str) -> Result<Option<Arc<AccessPolicy>>, Error> {
    // Never put anything but an object name into a URL (the request is denied for it).
    if !grant::is_object_name(name) {
        return Ok(None);
    }
    if let Some(policy) = ctx.policies.get(&ObjectRef::new(name)) {
        return Ok(Some(policy));
    }
    let api: Api<AccessPolicy> = Api::all(ctx.client.clone());
    let policy = api.get_opt(name).await.map_err(|source| Error::Read {
        what: format!("AccessPolicy {name}"),
        source,
    })?;
    Ok(policy.map(Arc::new))
}

/// Adds or removes the cleanup finalizer, guarded by the resourceVersion read.
async fn set_finalizer(
    api: &Api<ElevationRequest>,
    request: &ElevationRequest,
    version: Option<String>,
    present: bool,
) -> Result<Option<String>, Error> {
    let mut finalizers = request.finalizers().to_vec();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    if has == present {
        return Ok(version);
    }
    if present {
        finalizers.push(FINALIZER.to_owned());
    } else {
        finalizers.retain(|f| f != FINALIZER);
    }
    let name = request.name_any();
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": version }
    });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(written) => Ok(written.resource_version()),
        // Deleted meanwhile: nothing left to hold.
        Err(kube::Error::Api(status)) if status.code == 404 && !present => Ok(None),
        Err(source) => Err(Error::Finalizer { name, source }),
    }
}

/// An Event and a log line for every transition. A failure to publish the
/// Event is logged, never retried into a second transition.
async fn announce(
    ctx: &Context,
    request: &ElevationRequest,
    request_id: &str,
    transition: &Transition,
) {
    let name = request.name_any();
    info!(
        request = %name,
        %request_id,
        policy = ?request.spec.policy,
        requester = ?request.spec.requester.as_deref().unwrap_or_default(),
        from = transition.from.map_or("New", Phase::as_str),
        to = transition.to.as_str(),
        actor = %transition.actor,
        reason = %transition.reason,
        "{}",
        transition.message
    );
    ctx.metrics
        .transitions
        .get_or_create(&crate::metrics::TransitionLabels {
            phase: transition.to.as_str().to_owned(),
            reason: transition.reason.clone(),
        })
        .inc();
    let type_ = match transition.to {
        Phase::Pending | Phase::Approved => EventType::Normal,
        Phase::Denied | Phase::Expired | Phase::Revoked => EventType::Warning,
    };
    let note = if transition.message.contains(&transition.actor) {
        transition.message.clone()
    } else {
        format!("{} (by {})", transition.message, transition.actor)
    };
    super::publish_event(
        ctx,
        request,
        type_,
        &transition.reason,
        transition.to.as_str(),
        &note,
    )
    .await;
}
