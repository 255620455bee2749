//! The ElevationRequest controller: carries out [`lifecycle::decide`].
//!
//! Order matters for safety. Rights are added only after the decision that
//! grants them is recorded in status, and taken away before the record says
//! they are gone; a crash between the two steps leaves the record ahead of
//! the RBAC objects, and the next reconcile repairs it. Status writes carry
//! the resourceVersion that was read, so a decision made from a stale cache
//! is refused by the API server (409) and made again from fresh data.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::controller::Config;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use super::retry::on_fresh_request;
use super::{Context, Error, rbac};
use crate::shared::caches::Caches;
use kubepam_core::api::{AccessPolicy, ElevationRequest, ElevationRequestStatus, Phase};
use kubepam_core::grant::{self, FINALIZER};
use kubepam_core::lifecycle::{self, Transition};
use kubepam_core::reconcile::{self, Keep, Observed, Plan, Step};

/// The request controller, also woken by changes to policies, the control,
/// and RBAC objects that carry kubepam's labels (so a binding deleted by hand
/// is restored, and one edited by hand is put back).
pub fn controller(caches: &Caches) -> Controller<ElevationRequest> {
    let requests = caches.requests.store();
    let for_policy = requests.clone();
    let for_control = requests.clone();
    let by_id = caches.requests_by_id.clone();
    let owner = move |labels: &std::collections::BTreeMap<String, String>| {
        let id = labels.get(grant::LABEL_REQUEST_ID)?;
        by_id
            .get(id, &requests)
            .first()
            .map(|request| ObjectRef::from_obj(&**request))
    };
    let (rb, crb, cr) = (owner.clone(), owner.clone(), owner);
    // An extension follows the grant it continues (revoked or released, it ends too).
    let (for_extensions, by_requester) = (
        caches.requests.store(),
        caches.requests_by_requester.clone(),
    );
    let extensions_of = move |changed: Arc<ElevationRequest>| {
        let name = changed.name_any();
        changed
            .spec
            .requester
            .as_deref()
            .map(|requester| by_requester.get(requester, &for_extensions))
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.spec.extends.as_deref() == Some(name.as_str()) && !is_closed(r))
            .map(|r| ObjectRef::from_obj(&*r))
            .collect::<Vec<_>>()
    };
    Controller::for_shared_stream(caches.requests.everything(), caches.requests.store())
        .with_config(Config::default().concurrency(CONCURRENCY))
        .watches_shared_stream(caches.policies.changes(), move |policy| {
            let name = policy.name_any();
            for_policy
                .state()
                .into_iter()
                .filter(|request| request.spec.policy == name && !is_closed(request))
                .map(|request| ObjectRef::from_obj(&*request))
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(caches.controls.spec_changes(), move |_| {
            for_control
                .state()
                .into_iter()
                .filter(|request| !is_closed(request))
                .map(|request| ObjectRef::from_obj(&*request))
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(caches.role_bindings.changes(), move |o| rb(o.labels()))
        .watches_shared_stream(caches.cluster_role_bindings.changes(), move |o| {
            crb(o.labels())
        })
        .watches_shared_stream(caches.cluster_roles.changes(), move |o| cr(o.labels()))
        .watches_shared_stream(caches.requests.changes(), extensions_of)
}

/// Requests reconciled at once. Bounded, so a leader that takes over ten
/// thousand requests does not hold ten thousand reconciles (their reads,
/// writes and buffers) in memory at the same time; enough that the API
/// server, not the queue, sets the pace.
const CONCURRENCY: u16 = 64;

/// A request that is final and holds nothing: no change elsewhere can move it.
fn is_closed(request: &ElevationRequest) -> bool {
    request.status.as_ref().is_some_and(|status| {
        status.phase.is_some_and(Phase::is_final) && status.rbac_objects.is_empty()
    })
}

pub async fn reconcile(request: Arc<ElevationRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The cache can lag behind the operator's own last write (a change to a
    // binding wakes the request before its new status arrives). The guarded
    // write then fails with 409: read the request fresh and decide again.
    let ctx = &*ctx;
    let action = on_fresh_request(ctx, request, |current| async move {
        reconcile_once(&current, ctx).await
    })
    .await?;
    Ok(action.unwrap_or_else(Action::await_change))
}

async fn reconcile_once(request: &ElevationRequest, ctx: &Context) -> Result<Action, Error> {
    // One clock reading: the decision, its history and its outbox agree.
    let now = Utc::now();
    let policy = if request.metadata.deletion_timestamp.is_some() {
        None
    } else {
        lookup_policy(ctx, &request.spec.policy).await?
    };
    let control = ctx.control();
    let cached = ctx.rbac.objects_of(&lifecycle::request_id(request));
    // Only an object name may reach a lookup (the request is denied for anything else).
    let extended = request
        .spec
        .extends
        .as_deref()
        .filter(|name| grant::is_object_name(name))
        .and_then(|name| ctx.requests.get(&ObjectRef::new(name)));
    let siblings = request
        .spec
        .requester
        .as_deref()
        .map(|requester| ctx.requests_of(requester))
        .unwrap_or_default();
    let siblings: Vec<&ElevationRequest> = siblings.iter().map(|r| &**r).collect();
    let plan = reconcile::plan(&Observed {
        request,
        policy: policy.as_deref(),
        control: control.as_deref(),
        kubepam_namespace: &ctx.namespace,
        cached: &cached,
        extended: extended.as_deref(),
        siblings: &siblings,
        now,
    });
    execute(ctx, request, plan, now).await
}

/// Carries out `plan`'s steps in order; decides nothing but what an outcome
/// asks of the core (a collision, a repair to report).
async fn execute(
    ctx: &Context,
    request: &ElevationRequest,
    mut plan: Plan,
    now: chrono::DateTime<Utc>,
) -> Result<Action, Error> {
    let steps: VecDeque<Step> = plan.steps.drain(..).collect();
    let mut run = Execution {
        ctx,
        request,
        api: Api::all(ctx.client.clone()),
        now,
        version: request.resource_version(),
        written: request.status.clone(),
        plan,
        steps,
        applied: rbac::Applied::default(),
        roles_done: None,
        removed: 0,
    };
    while let Some(step) = run.steps.pop_front() {
        let (started, step_name) = (std::time::Instant::now(), step.name());
        run.step(step).await?;
        debug!(
            request = %request.name_any(),
            step = step_name,
            micros = started.elapsed().as_micros(),
            "step done"
        );
    }
    Ok(match run.plan.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// One reconcile's steps being carried out, and what the earlier ones left for the later.
struct Execution<'a> {
    ctx: &'a Context,
    request: &'a ElevationRequest,
    api: Api<ElevationRequest>,
    now: chrono::DateTime<Utc>,
    /// The resourceVersion of the last write, which guards the next one.
    version: Option<String>,
    /// The status as last written.
    written: Option<ElevationRequestStatus>,
    plan: Plan,
    steps: VecDeque<Step>,
    applied: rbac::Applied,
    /// What [`Step::PrepareRoles`] made.
    roles_done: Option<rbac::Applied>,
    removed: usize,
}

impl Execution<'_> {
    async fn step(&mut self, step: Step) -> Result<(), Error> {
        let (ctx, request) = (self.ctx, self.request);
        match step {
            Step::AddFinalizer => {
                self.version = set_finalizer(&self.api, request, self.version.take(), true).await?;
            }
            Step::RemoveFinalizer => {
                self.version =
                    set_finalizer(&self.api, request, self.version.take(), false).await?;
            }
            Step::Settle => self.version = settle(&self.api, request, self.version.take()).await?,
            Step::WriteStatus => self.write_status().await?,
            Step::PrepareRoles(desired) => self.prepare_roles(&desired).await?,
            Step::ApplyRbac(desired) => {
                let outcome = rbac::apply(
                    &ctx.client,
                    &ctx.rbac,
                    &desired,
                    &self.plan.request_id,
                    &self.plan.recorded,
                    self.roles_done.take(),
                )
                .await?;
                match outcome {
                    Ok(made) => self.applied = made,
                    Err(collision) => self.collided(&collision),
                }
            }
            Step::Prune(keep) => self.prune(keep).await?,
            Step::RecordApplied => self.plan.record_applied(&self.applied.owned),
            Step::ReportRepair => {
                let found = reconcile::repair_found(
                    &self.plan.status,
                    &self.plan.recorded,
                    self.applied.missing,
                    self.applied.changed,
                    self.removed,
                    self.now,
                );
                if let Some(repair) = found {
                    report_repair(ctx, request, repair).await;
                }
            }
            Step::ReportLeftovers => {
                if self.removed > 0 {
                    report_leftovers(ctx, request, self.removed).await;
                }
            }
            Step::RemoveLasting { objects, since } => {
                super::lasting::remove(ctx, &mut self.plan.status, &objects, since).await;
            }
            Step::ReportLasting { .. }
            | Step::ReportCollision { .. }
            | Step::ReportInvalidGrant { .. }
            | Step::Announce(_)
            | Step::ReportUndeliverable(_)
            | Step::ReportWindowOpened(_)
            | Step::ReportRouting(_) => report(ctx, request, &self.plan, step).await,
        }
        Ok(())
    }

    async fn write_status(&mut self) -> Result<(), Error> {
        self.version = super::apply_status(
            &self.ctx.client,
            self.request,
            self.written.as_ref(),
            &self.plan.status,
            self.version.take(),
        )
        .await?;
        self.written = Some(self.plan.status.clone());
        Ok(())
    }

    /// The roles, at the same time as the status write the plan puts after them.
    async fn prepare_roles(&mut self, desired: &grant::DesiredRbac) -> Result<(), Error> {
        let ctx = self.ctx;
        let write_status = matches!(self.steps.front(), Some(Step::WriteStatus));
        if write_status {
            self.steps.pop_front();
        }
        let (request_id, recorded) = (self.plan.request_id.clone(), self.plan.recorded.clone());
        let roles = rbac::apply_roles(&ctx.client, &ctx.rbac, desired, &request_id, &recorded);
        let status = async {
            if write_status {
                self.write_status().await
            } else {
                Ok(())
            }
        };
        let (roles, status) = futures::join!(roles, status);
        status?;
        match roles? {
            Ok(made) => self.roles_done = Some(made),
            Err(collision) => self.collided(&collision),
        }
        Ok(())
    }

    /// An object kubepam did not make holds a name the grant needs: the rest of the plan
    /// gives way to what the core says follows.
    fn collided(&mut self, collision: &rbac::Collision) {
        let base = self.written.clone().unwrap_or_default();
        self.plan = self
            .plan
            .after_collision(&base, &collision.object, self.now);
        self.steps = self.plan.steps.drain(..).collect();
    }

    async fn prune(&mut self, keep: Keep) -> Result<(), Error> {
        let keep = match keep {
            Keep::Nothing => &[][..],
            Keep::Applied => &self.applied.owned[..],
        };
        self.removed = rbac::prune(
            &self.ctx.client,
            &self.ctx.rbac,
            &self.plan.request_id,
            &self.plan.recorded,
            keep,
        )
        .await?;
        if self.removed > 0 && keep.is_empty() {
            info!(
                request = %self.request.name_any(),
                request_id = %self.plan.request_id,
                removed = self.removed,
                "grant removed"
            );
        }
        Ok(())
    }
}

/// Carries out a step that only tells: Events, logs and metrics.
async fn report(ctx: &Context, request: &ElevationRequest, plan: &Plan, step: Step) {
    match step {
        Step::ReportLasting { objects } => {
            super::lasting::report_places(ctx, request, &plan.status, &objects).await;
        }
        Step::ReportCollision { message } => report_collision(ctx, request, &message).await,
        Step::ReportInvalidGrant { message } => {
            tracing::warn!(request = %request.name_any(), "{message}");
            super::publish_event(
                ctx,
                request,
                EventType::Warning,
                reconcile::REASON_INVALID_GRANT,
                "Grant",
                &message,
            )
            .await;
        }
        Step::Announce(transition) => {
            announce(ctx, request, &plan.request_id, &transition).await;
        }
        Step::ReportUndeliverable(failed) => {
            super::notify::report_undeliverable(ctx, request, &failed).await;
        }
        Step::ReportRouting(change) => {
            info!(
                request = %request.name_any(),
                request_id = %plan.request_id,
                reason = %change.reason,
                "{}",
                change.message
            );
            let type_ = if change.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            super::publish_event(
                ctx,
                request,
                type_,
                &change.reason,
                change.action,
                &change.message,
            )
            .await;
        }
        Step::ReportWindowOpened(message) => {
            info!(request = %request.name_any(), request_id = %plan.request_id, "{message}");
            super::publish_event(
                ctx,
                request,
                EventType::Normal,
                lifecycle::reason::WINDOW_OPENED,
                "Open",
                &message,
            )
            .await;
        }
        // Writes are carried out by `execute`.
        _ => {}
    }
}

/// An object kubepam did not make holds a name the grant needs: a Warning
/// Event when it is first found.
async fn report_collision(ctx: &Context, request: &ElevationRequest, message: &str) {
    tracing::warn!(request = %request.name_any(), "{message}");
    ctx.metrics.drift_repaired("name-collision", 1);
    super::publish_event(
        ctx,
        request,
        EventType::Warning,
        reconcile::REASON_NAME_COLLISION,
        "Grant",
        message,
    )
    .await;
}

/// An Event and a metric when a grant in force had to be put back.
async fn report_repair(ctx: &Context, request: &ElevationRequest, repair: reconcile::Repair) {
    if repair.restored > 0 {
        ctx.metrics.drift_repaired("restored", repair.restored);
    }
    if repair.extra > 0 {
        ctx.metrics.drift_repaired("removed-extra", repair.extra);
    }
    publish_drift(ctx, request, "GrantRepaired", &repair.note()).await;
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
    let finalizers = json!({ "finalizers": finalizers });
    match patch_metadata(api, &name, version, finalizers).await {
        Ok(version) => Ok(version),
        // Deleted meanwhile: nothing left to hold.
        Err(kube::Error::Api(status)) if status.code == 404 && !present => Ok(None),
        Err(source) => Err(Error::Finalizer { name, source }),
    }
}

/// Labels an ended request that has nothing left to do as settled, guarded by the
/// resourceVersion read: the watch leaves it out from then on.
async fn settle(
    api: &Api<ElevationRequest>,
    request: &ElevationRequest,
    version: Option<String>,
) -> Result<Option<String>, Error> {
    let name = request.name_any();
    let label = json!({ "labels": { reconcile::LABEL_SETTLED: "true" } });
    match patch_metadata(api, &name, version, label).await {
        Ok(version) => Ok(version),
        // Deleted meanwhile: nothing left to watch.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(source) => Err(Error::Settle { name, source }),
    }
}

/// A merge patch of the request's `metadata`, refused (409) if the request changed since
/// `version` was read; returns the new resourceVersion.
async fn patch_metadata(
    api: &Api<ElevationRequest>,
    name: &str,
    version: Option<String>,
    mut metadata: serde_json::Value,
) -> Result<Option<String>, kube::Error> {
    metadata["resourceVersion"] = json!(version);
    let patch = json!({ "metadata": metadata });
    let written = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(written.resource_version())
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
    // An approver's decision: how long the request waited for it.
    if matches!(
        transition.reason.as_str(),
        lifecycle::reason::MANUAL_APPROVAL | lifecycle::reason::DENIED_BY_APPROVER
    ) && let Some(submitted) = request.status.as_ref().and_then(|s| s.submitted_at)
    {
        let waited = (Utc::now() - submitted).to_std().unwrap_or_default();
        ctx.metrics.decided(transition.to, waited);
    }
    // Break glass is loud: emergency access is a Warning, as every refusal and end.
    let type_ = match transition.to {
        _ if transition.reason == lifecycle::reason::BREAK_GLASS => EventType::Warning,
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
