//! One reconcile of an ElevationRequest as a plan: every write it makes, in
//! the order that keeps it safe, decided from what was read at one `now`.
//! The operator carries the steps out in order and decides nothing itself.
//!
//! The safety order:
//! - the cleanup finalizer exists before any RBAC object of the grant, so a
//!   deleted request can never leave rights behind;
//! - rights are added only after the status recording the decision that
//!   grants them (with its notification outbox) is written; a generated role
//!   binds nobody, so it is made while that status is written, and its
//!   binding follows once both are done;
//! - rights are taken away before the status says they are gone, and before
//!   the finalizer is removed;
//! - Events and logs about a transition come after the status recording it,
//!   so a crash repeats an announcement at worst, never loses a record.
//!
//! A step whose outcome matters for later ones (the RBAC apply, the prune)
//! is followed by steps that the executor completes from that outcome with
//! the pure helpers here ([`Plan::after_collision`], [`repair_found`]).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;

use crate::api::{
    AccessPolicy, DeliveryState, ElevationRequest, ElevationRequestStatus, Notification, Phase,
    PrivilegedAccessControl, RbacObjectRef, condition_true, find_condition, remove_condition,
    same_objects, set_condition,
};
use crate::audit;
use crate::grant::{self, DesiredRbac};
use crate::lifecycle::{self, ControlView, OpenCounts, PolicyView, Related, Transition};
use crate::notify::plan as notifications;

/// Condition type: present while the grant cannot be made, with why (an object kubepam did
/// not make holds a name the grant needs, or the grant cannot be built from the spec).
pub const CONDITION_GRANT_BLOCKED: &str = "GrantBlocked";

/// `GrantBlocked` reason: an object kubepam did not make holds a name the grant needs.
pub const REASON_NAME_COLLISION: &str = "NameCollision";
/// `GrantBlocked` reason: the grant cannot be built from the request and its policy.
pub const REASON_INVALID_GRANT: &str = "InvalidGrant";
/// How often a request whose grant cannot be built is looked at again (quietly).
pub const INVALID_GRANT_RECHECK: Duration = Duration::from_secs(30);

/// How long a grant blocked by an object of someone else waits before it looks again (a change
/// of any binding wakes it sooner).
pub const COLLISION_RETRY: Duration = Duration::from_secs(30);

/// How long after a grant is recorded its objects are surely in the cache:
/// one missing later was deleted by hand (earlier, it may just not have
/// been seen yet).
pub const CACHE_LAG: TimeDelta = TimeDelta::seconds(5);

/// Label kubepam puts on a request that has ended and has nothing left to do: no RBAC object,
/// nothing made during the grant left to report, no notification owed. kubepam watches only
/// requests without it, so its memory follows the requests that can still change, not every
/// request ever made. Like every label under `kubepam.io/`, only kubepam may set it.
pub const LABEL_SETTLED: &str = "kubepam.io/settled";

/// How long after its last transition an ended request is settled: what an admission call
/// already under way records late (a use, an object made during the grant) still finds it
/// watched, and is handled.
pub const SETTLE_AFTER: TimeDelta = TimeDelta::seconds(30);

/// The label selector of the requests kubepam watches: those not settled.
pub fn unsettled_selector() -> String {
    format!("!{LABEL_SETTLED}")
}

/// Whether kubepam has settled the request (see [`LABEL_SETTLED`]).
pub fn is_settled(request: &ElevationRequest) -> bool {
    request.labels().contains_key(LABEL_SETTLED)
}

/// How often a request held for its audit records to be exported looks again.
pub const AUDIT_EXPORT_RECHECK: Duration = Duration::from_secs(2);

/// Whether every audit record of the request is on the chain and with every sink.
fn trail_exported(status: Option<&ElevationRequestStatus>, observed: &Observed<'_>) -> bool {
    let control = observed.control;
    let through = audit::trail::exported_through(
        control.and_then(|c| c.spec.audit.as_ref()),
        control
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.audit.as_ref()),
    );
    audit::trail::exported(status, through)
}

/// What a reconcile read, at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub request: &'a ElevationRequest,
    pub policy: Option<&'a AccessPolicy>,
    pub control: Option<&'a PrivilegedAccessControl>,
    /// kubepam's own namespace: no grant may reach it.
    pub kubepam_namespace: &'a str,
    /// The RBAC objects cached with this request's id label.
    pub cached: &'a [RbacObjectRef],
    /// The request named by `spec.extends`, when there is one and it exists.
    pub extended: Option<&'a ElevationRequest>,
    /// The requester's other requests (the quotas, the extensions of this one).
    pub siblings: &'a [&'a ElevationRequest],
    /// The one clock reading of this reconcile.
    pub now: DateTime<Utc>,
}

/// One write (or announcement) of a reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Add the cleanup finalizer.
    AddFinalizer,
    /// Write [`Plan::status`] as it stands (server-side apply, guarded by the
    /// resourceVersion read).
    WriteStatus,
    /// Make the grant's generated ClusterRoles exist as wanted, carried out at the same time
    /// as the [`Step::WriteStatus`] that follows it: a role binds nobody, so it may exist
    /// before the decision is recorded, and the bindings that follow need not wait for it.
    /// On a collision the executor carries out [`Plan::after_collision`] instead of the steps
    /// that follow.
    PrepareRoles(Box<DesiredRbac>),
    /// Make the grant's RBAC objects exist as wanted (roles before the bindings that point at
    /// them; those [`Step::PrepareRoles`] made are not looked at again), over nothing but
    /// this request's own objects. On a collision the executor carries out
    /// [`Plan::after_collision`] instead of the steps that follow.
    ApplyRbac(Box<DesiredRbac>),
    /// Delete this request's RBAC objects but those `keep` names.
    Prune(Keep),
    /// Record in [`Plan::status`] the objects the apply made (what status may
    /// say the grant holds; see [`Plan::record_applied`]).
    RecordApplied,
    /// Report a grant in force that had to be put back (see [`repair_found`]).
    ReportRepair,
    /// Report objects labelled as this request's that the prune removed while
    /// the request holds nothing (made by hand, or left behind).
    ReportLeftovers,
    /// Delete the objects made during the grant at these places of
    /// [`Plan::status`]'s `lastingObjects`, each only if it is still the very
    /// object made in the window since `since`; marks them removed there.
    RemoveLasting {
        objects: Vec<usize>,
        since: DateTime<Utc>,
    },
    /// Report the objects made during the grant at these places of
    /// [`Plan::status`]'s `lastingObjects`.
    ReportLasting { objects: Vec<usize> },
    /// Report a name collision (Warning Event, metric, log).
    ReportCollision { message: String },
    /// Report a grant that cannot be built (Warning Event, log).
    ReportInvalidGrant { message: String },
    /// Remove the cleanup finalizer.
    RemoveFinalizer,
    /// Label the request [`LABEL_SETTLED`] (guarded by the resourceVersion read): it has
    /// ended and nothing is left to do, so kubepam stops watching it.
    Settle,
    /// An Event, a log line and a metric for a transition.
    Announce(Transition),
    /// Events for notifications that could not even be planned for delivery.
    ReportUndeliverable(Vec<Notification>),
    /// A Normal Event and a log line: a booked window opened (the phase stays Approved, so
    /// no transition says it), after the status that records it.
    ReportWindowOpened(String),
    /// An Event and a log line for a change of routing that no transition says, after the
    /// status that records it: an escalation step opened, an emergency grant's review was
    /// recorded or became overdue.
    ReportRouting(RoutingChange),
}

/// A change of who may decide, or of an emergency grant's review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingChange {
    /// A Warning Event (else Normal).
    pub warning: bool,
    /// The Event's reason, e.g. `EscalationStepOpened`.
    pub reason: String,
    /// The Event's action, e.g. `Escalate`.
    pub action: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl Step {
    /// The step's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::AddFinalizer => "AddFinalizer",
            Step::WriteStatus => "WriteStatus",
            Step::PrepareRoles(_) => "PrepareRoles",
            Step::ApplyRbac(_) => "ApplyRbac",
            Step::Prune(_) => "Prune",
            Step::RecordApplied => "RecordApplied",
            Step::ReportRepair => "ReportRepair",
            Step::ReportLeftovers => "ReportLeftovers",
            Step::RemoveLasting { .. } => "RemoveLasting",
            Step::ReportLasting { .. } => "ReportLasting",
            Step::ReportCollision { .. } => "ReportCollision",
            Step::ReportInvalidGrant { .. } => "ReportInvalidGrant",
            Step::RemoveFinalizer => "RemoveFinalizer",
            Step::Settle => "Settle",
            Step::Announce(_) => "Announce",
            Step::ReportUndeliverable(_) => "ReportUndeliverable",
            Step::ReportWindowOpened(_) => "ReportWindowOpened",
            Step::ReportRouting(_) => "ReportRouting",
        }
    }
}

/// What a prune keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: the request may hold no RBAC object.
    Nothing,
    /// The objects the preceding apply made.
    Applied,
}

/// The writes of one reconcile, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The request's id (its uid), which labels its RBAC objects.
    pub request_id: String,
    /// The status the [`Step::WriteStatus`] steps write.
    pub status: ElevationRequestStatus,
    /// The RBAC objects status recorded when the reconcile began.
    pub recorded: Vec<RbacObjectRef>,
    pub steps: Vec<Step>,
    /// When to reconcile again; `None` waits for a change.
    pub requeue_after: Option<Duration>,
    /// The transition this reconcile makes, announced after its status is written.
    pub transition: Option<Transition>,
    generation: Option<i64>,
}

/// Plans the reconcile of `observed.request`.
/// The message of a booked window that opened in this reconcile: `Scheduled` went from True
/// to False with reason `WindowOpened`.
fn window_opened(
    before: Option<&ElevationRequestStatus>,
    after: &ElevationRequestStatus,
) -> Option<String> {
    let scheduled = |s: &ElevationRequestStatus| {
        find_condition(&s.conditions, lifecycle::CONDITION_SCHEDULED).cloned()
    };
    let was_waiting = before
        .and_then(scheduled)
        .is_some_and(|c| c.status == "True");
    let now = scheduled(after)?;
    (was_waiting && now.status == "False" && now.reason == lifecycle::reason::WINDOW_OPENED).then(
        || {
            let until = after
                .granted_until
                .map(|u| format!("; access until {}", crate::util::time_for_people(u)))
                .unwrap_or_default();
            format!("{}{until}", now.message)
        },
    )
}

/// What changed in routing between the status read and the one written, that no transition
/// announces.
fn routing_changes(
    before: Option<&ElevationRequestStatus>,
    after: &ElevationRequestStatus,
    transition: Option<&Transition>,
) -> Vec<RoutingChange> {
    let mut changes = Vec::new();
    let opened: Vec<&str> = lifecycle::groups_opened(before, after)
        .into_iter()
        .map(|(_, group)| group)
        .collect();
    if !opened.is_empty() {
        changes.push(RoutingChange {
            warning: false,
            reason: lifecycle::reason::ESCALATION_STEP_OPENED.to_owned(),
            action: "Escalate",
            message: format!(
                "nobody has decided yet: group(s) {} may now decide too",
                opened.join(", ")
            ),
        });
    }
    let review = |s: &ElevationRequestStatus| {
        find_condition(&s.conditions, lifecycle::CONDITION_REVIEW_REQUIRED)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let was = before.and_then(review);
    if let Some((status, why, message)) = review(after)
        && was.as_ref().is_some_and(|(s, r, _)| (s, r) != (&status, &why))
        // A rejection that ended the grant is announced by its transition.
        && transition.is_none_or(|t| t.reason != why)
    {
        let warning = why != lifecycle::reason::EMERGENCY_CONFIRMED;
        changes.push(RoutingChange {
            warning,
            reason: why,
            action: "Review",
            message,
        });
    }
    changes
}

/// The reports after the writes: what changed without a transition to say it, and the
/// notifications that could not even be planned for delivery.
fn reports(
    request: &ElevationRequest,
    status: &ElevationRequestStatus,
    transition: Option<&Transition>,
    owed: Vec<Notification>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(message) = window_opened(request.status.as_ref(), status) {
        steps.push(Step::ReportWindowOpened(message));
    }
    steps.extend(
        routing_changes(request.status.as_ref(), status, transition)
            .into_iter()
            .map(Step::ReportRouting),
    );
    let failed: Vec<Notification> = owed
        .into_iter()
        .filter(|n| n.state == DeliveryState::Failed)
        .collect();
    if !failed.is_empty() {
        steps.push(Step::ReportUndeliverable(failed));
    }
    steps
}

/// What the decision needs of the requester's other requests.
fn related<'a>(observed: &Observed<'a>) -> Related<'a> {
    let request = observed.request;
    let name = request.metadata.name.as_deref();
    let first_sight = request.status.as_ref().and_then(|s| s.phase).is_none();
    Related {
        extended: observed.extended,
        extended_by: observed
            .siblings
            .iter()
            .copied()
            .filter(|s| name.is_some() && s.spec.extends.as_deref() == name)
            .find(|s| s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Approved)),
        open_before: first_sight.then(|| {
            OpenCounts::of(
                observed.siblings.iter().copied(),
                request.spec.requester.as_deref().unwrap_or_default(),
                &request.spec.policy,
                Some(request),
            )
        }),
    }
}

pub fn plan(observed: &Observed<'_>) -> Plan {
    let request = observed.request;
    let request_id = lifecycle::request_id(request);
    let recorded = request
        .status
        .as_ref()
        .map(|s| s.rbac_objects.clone())
        .unwrap_or_default();
    let mut plan = Plan {
        request_id,
        status: request.status.clone().unwrap_or_default(),
        recorded,
        steps: Vec::new(),
        requeue_after: None,
        transition: None,
        generation: request.metadata.generation,
    };
    if request.metadata.deletion_timestamp.is_some() {
        plan.steps = vec![Step::Prune(Keep::Nothing)];
        // Its records go to the auditors before it goes.
        if trail_exported(request.status.as_ref(), observed) {
            plan.steps.push(Step::RemoveFinalizer);
        } else {
            plan.requeue_after = Some(AUDIT_EXPORT_RECHECK);
        }
        return plan;
    }

    let decision = lifecycle::decide_with(
        request,
        &PolicyView::from_policy(observed.policy),
        &ControlView::from_control(observed.control)
            .with_kubepam_namespace(observed.kubepam_namespace),
        &related(observed),
        observed.now,
    );
    plan.requeue_after = decision.requeue_after;
    let requester = request.spec.requester.as_deref().unwrap_or_default();
    let desired = match &decision.grant {
        Some(scope) => {
            match grant::desired_rbac(&request.name_any(), &plan.request_id, requester, scope) {
                Ok(desired) => desired,
                Err(error) => return plan.cannot_build(&error, observed.now),
            }
        }
        None => DesiredRbac::default(),
    };

    let mut status = decision.status.clone();
    let wanted = desired.object_refs();
    // Status records only objects known to be this request's: those recorded
    // before that are still wanted; new ones once they are made.
    status.rbac_objects = plan
        .recorded
        .iter()
        .filter(|o| wanted.iter().any(|w| w.same_object(o)))
        .cloned()
        .collect();
    // Recorded in the same write as the transition: neither can be lost
    // without the other. The delivery controller sends them.
    let owed = owed_notifications(request, &status, &decision, observed);
    notifications::enqueue(&mut status.notifications, owed.clone());
    audit::trail::note_changes(request, request.status.as_ref(), &mut status, observed.now);

    let mut steps;
    if desired.is_empty() {
        let settle_in;
        (steps, settle_in) = steps_without_grant(
            &mut status,
            &plan.recorded,
            observed,
            decision.transition.is_none(),
        );
        plan.requeue_after = match (plan.requeue_after, settle_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    } else {
        steps = vec![Step::AddFinalizer];
        // A decision is recorded before the rights it grants. A grant already decided (a
        // booked window opening, a check of a grant in force) goes straight to its rights,
        // and one status write after them records the rest.
        if decision.transition.is_some() {
            if !desired.cluster_roles.is_empty() {
                steps.push(Step::PrepareRoles(Box::new(desired.clone())));
            }
            steps.push(Step::WriteStatus);
        }
        steps.extend([
            // Checked every time: a binding deleted or edited by hand comes back.
            Step::ApplyRbac(Box::new(desired)),
            Step::Prune(Keep::Applied),
            Step::RecordApplied,
            Step::WriteStatus,
        ]);
        if decision.transition.is_none() {
            steps.push(Step::ReportRepair);
        }
    }
    if let Some(transition) = &decision.transition {
        steps.push(Step::Announce(transition.clone()));
    }
    steps.extend(reports(
        request,
        &status,
        decision.transition.as_ref(),
        owed,
    ));
    plan.status = status;
    plan.steps = steps;
    plan.transition = decision.transition;
    plan
}

/// The steps of a reconcile after which the request holds no RBAC object: what exists goes
/// first, then the record; what the grant left behind is handled once it has ended. An ended
/// request with nothing left to do is settled [`SETTLE_AFTER`] its last transition; until
/// then, the second value says when to look again.
fn steps_without_grant(
    status: &mut ElevationRequestStatus,
    recorded: &[RbacObjectRef],
    observed: &Observed<'_>,
    no_transition: bool,
) -> (Vec<Step>, Option<Duration>) {
    let mut steps = Vec::new();
    remove_condition(&mut status.conditions, CONDITION_GRANT_BLOCKED);
    // Also when nothing is recorded: an object may have been made by
    // hand, or created just before a crash, with this request's label.
    if !recorded.is_empty() || !observed.cached.is_empty() {
        steps.push(Step::Prune(Keep::Nothing));
        // Nothing was in force: these were made by hand, or left behind.
        if no_transition && recorded.is_empty() {
            steps.push(Step::ReportLeftovers);
        }
    }
    // Handled in the write that marks it reported: a crash in between
    // handles it again, and what was recorded late is handled on the next pass.
    let finished = status.phase.is_some_and(Phase::is_final);
    let fresh: Vec<usize> = status
        .lasting_objects
        .iter()
        .enumerate()
        .filter(|(_, o)| finished && !o.reported)
        .map(|(place, _)| place)
        .collect();
    if !fresh.is_empty() {
        if observed.control.is_some_and(|c| c.spec.remove_persistence) {
            steps.push(Step::RemoveLasting {
                objects: fresh.clone(),
                since: status.decided_at.unwrap_or(observed.now),
            });
        }
        for object in &mut status.lasting_objects {
            object.reported = true;
        }
    }
    steps.push(Step::WriteStatus);
    let reported_now = !fresh.is_empty();
    if reported_now {
        steps.push(Step::ReportLasting { objects: fresh });
    }
    let mut settle_in = None;
    // The finalizer holds it until its records are exported and no review is owed (a
    // review would make records of its own); nothing wakes it when a sink takes them, so it
    // looks again. Records made after the finalizer went (a late use) bring it back.
    let exported = trail_exported(Some(status), observed) && !lifecycle::review_pending(status);
    if finished && !exported {
        settle_in = Some(AUDIT_EXPORT_RECHECK);
        let held = observed
            .request
            .finalizers()
            .iter()
            .any(|f| f == grant::FINALIZER);
        if !held && !audit::trail::pending(Some(status)).is_empty() {
            steps.insert(0, Step::AddFinalizer);
        }
    }
    if finished && exported {
        steps.push(Step::RemoveFinalizer);
        let holds_nothing = recorded.is_empty() && observed.cached.is_empty() && !reported_now;
        let owes_nothing = crate::notify::outbox::backlog(&status.notifications) == 0
            && !lifecycle::review_pending(status);
        if holds_nothing && owes_nothing && !is_settled(observed.request) {
            let last_change = status
                .history
                .iter()
                .map(|entry| entry.time)
                .chain(status.decided_at)
                .max()
                .unwrap_or(observed.now);
            let due = last_change + SETTLE_AFTER;
            if observed.now >= due {
                steps.push(Step::Settle);
            } else {
                settle_in = (due - observed.now).to_std().ok();
            }
        }
    }
    (steps, settle_in)
}

impl Plan {
    /// The grant cannot be built from the spec: no transition and no RBAC change, only a
    /// condition that says why (reported when it is new). Not an error to retry: the request
    /// is looked at again quietly after [`INVALID_GRANT_RECHECK`] (or at its next deadline,
    /// if sooner), so it still expires when its time is up.
    fn cannot_build(mut self, error: &grant::Error, now: DateTime<Utc>) -> Plan {
        let message = format!("the grant cannot be made: {error}");
        let new = find_condition(&self.status.conditions, CONDITION_GRANT_BLOCKED)
            .is_none_or(|c| c.reason != REASON_INVALID_GRANT || c.message != message);
        set_condition(
            &mut self.status.conditions,
            condition_true(
                CONDITION_GRANT_BLOCKED,
                REASON_INVALID_GRANT,
                message.clone(),
                now,
                self.generation,
            ),
        );
        self.steps = vec![Step::WriteStatus];
        if new {
            self.steps.push(Step::ReportInvalidGrant { message });
        }
        self.requeue_after = Some(
            self.requeue_after
                .map_or(INVALID_GRANT_RECHECK, |at| at.min(INVALID_GRANT_RECHECK)),
        );
        self
    }

    /// The apply made `owned`: status says the grant holds them, and nothing blocks it.
    pub fn record_applied(&mut self, owned: &[RbacObjectRef]) {
        self.status.rbac_objects = owned.to_vec();
        remove_condition(&mut self.status.conditions, CONDITION_GRANT_BLOCKED);
    }

    /// What follows a collision: the grant is not made and the object found is left alone;
    /// the status written so far gains a `GrantBlocked` condition (reported when it is new),
    /// the transition is still announced, and the request looks again later.
    #[must_use]
    pub fn after_collision(
        &self,
        written: &ElevationRequestStatus,
        collision: &RbacObjectRef,
        now: DateTime<Utc>,
    ) -> Plan {
        let place = collision
            .namespace
            .as_deref()
            .map(|ns| format!(" in namespace {ns}"))
            .unwrap_or_default();
        let message = format!(
            "{} {}{place} exists and was not made by kubepam for this request, so the grant is \
             not made and that object is left alone; a cluster administrator should find out \
             who made it and delete it",
            collision.kind, collision.name
        );
        // New unless the same collision was reported already.
        let first = find_condition(&written.conditions, CONDITION_GRANT_BLOCKED)
            .is_none_or(|c| c.reason != REASON_NAME_COLLISION || c.message != message);
        let mut status = written.clone();
        set_condition(
            &mut status.conditions,
            condition_true(
                CONDITION_GRANT_BLOCKED,
                REASON_NAME_COLLISION,
                message.clone(),
                now,
                self.generation,
            ),
        );
        let mut steps = vec![Step::WriteStatus];
        if first {
            steps.push(Step::ReportCollision { message });
        }
        if let Some(transition) = &self.transition {
            steps.push(Step::Announce(transition.clone()));
        }
        Plan {
            request_id: self.request_id.clone(),
            status,
            recorded: self.recorded.clone(),
            steps,
            requeue_after: Some(COLLISION_RETRY),
            transition: self.transition.clone(),
            generation: self.generation,
        }
    }
}

/// A grant in force that had to be put back: objects edited or deleted by hand, or extra
/// objects labelled as part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    /// Objects of the grant restored after an edit or deletion by hand.
    pub restored: usize,
    /// Objects labelled as part of the grant that are not, removed.
    pub extra: usize,
}

impl Repair {
    pub fn note(&self) -> String {
        let mut what = Vec::new();
        if self.restored > 0 {
            what.push(format!(
                "restored {} RBAC object(s) of the grant that were edited or deleted by hand",
                self.restored
            ));
        }
        if self.extra > 0 {
            what.push(format!(
                "removed {} RBAC object(s) labelled as part of the grant that are not",
                self.extra
            ));
        }
        what.join("; ")
    }
}

/// Whether a reconcile that made no transition repaired its grant: `missing` objects were
/// created, `changed` ones put back, `extra` ones pruned. An object missing just after the
/// grant was recorded may only not be cached yet, so it counts once [`CACHE_LAG`] has
/// passed.
pub fn repair_found(
    status: &ElevationRequestStatus,
    recorded: &[RbacObjectRef],
    missing: usize,
    changed: usize,
    extra: usize,
    now: DateTime<Utc>,
) -> Option<Repair> {
    if !same_objects(recorded, &status.rbac_objects) {
        // The grant changed on purpose (first made, or its scope followed a role).
        return None;
    }
    let settled = status
        .decided_at
        .is_some_and(|decided| now - decided > CACHE_LAG);
    let restored = changed + if settled { missing } else { 0 };
    (restored > 0 || extra > 0).then_some(Repair { restored, extra })
}

/// The notifications a transition, and a change of routing, owe under the control's
/// settings.
fn owed_notifications(
    request: &ElevationRequest,
    status: &ElevationRequestStatus,
    decision: &lifecycle::Decision,
    observed: &Observed<'_>,
) -> Vec<Notification> {
    let Some(config) = observed.control.and_then(|c| c.spec.notifications.as_ref()) else {
        return Vec::new();
    };
    let mut owed = match &decision.transition {
        Some(transition) => {
            notifications::for_transition(request, status, transition, config, observed.now)
        }
        None => Vec::new(),
    };
    owed.extend(notifications::for_routing(
        request.status.as_ref(),
        status,
        config,
        observed.now,
    ));
    owed
}

#[cfg(test)]
mod tests;
