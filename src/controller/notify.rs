//! The delivery controller: sends the notifications recorded in requests' outboxes.
//!
//! It runs beside the request controller, on the leader, and never holds it up: the request
//! controller only records what is owed, in the same status write as the transition. Here
//! each due entry is tried, and its outcome recorded with a write guarded by resourceVersion;
//! a conflict reads the request again and records the outcome on the fresh copy. Tries that
//! fail are retried with backoff ([`outbox`]); a sink failing again and again is reported on
//! the control (Event and condition).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::runtime::Controller;
use kube::runtime::controller::{Action, Config};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::retry::{on_fresh_request, read_request};
use super::{Context, Error};
use crate::delivery::Sender;
use crate::shared::caches::Caches;
use kubepam_core::api::{
    DeliveryState, ElevationRequest, ElevationRequestStatus, Notification, Notifications, Phase,
};
use kubepam_core::duration;
use kubepam_core::lifecycle::ControlSettings;
use kubepam_core::notify::health::{self, Change, SinkHealth};
use kubepam_core::notify::outbox::{self, Outcome};
use kubepam_core::notify::{plan, render};

/// Requests whose notifications are being tried at once; a slow sink holds up no more.
const CONCURRENCY: u16 = 64;

/// What the delivery controller keeps between reconciles.
#[derive(Debug)]
pub struct Notifier {
    pub sender: Sender,
    health: Mutex<BTreeMap<String, SinkHealth>>,
    /// Outcomes of tries not yet recorded in status, by (request uid, entry id): a write
    /// that failed is retried with them instead of sending again.
    unrecorded: Mutex<BTreeMap<(String, String), Outcome>>,
}

impl Notifier {
    pub fn new(sender: Sender) -> Self {
        Self {
            sender,
            health: Mutex::new(BTreeMap::new()),
            unrecorded: Mutex::new(BTreeMap::new()),
        }
    }

    fn key(request: &ElevationRequest, entry: &Notification) -> (String, String) {
        (
            request.metadata.uid.clone().unwrap_or_default(),
            entry.id.clone(),
        )
    }

    /// The outcome of a try of `entry` that is not recorded yet, if any.
    fn held(&self, request: &ElevationRequest, entry: &Notification) -> Option<Outcome> {
        let unrecorded = self
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unrecorded.get(&Self::key(request, entry)).cloned()
    }

    fn hold(&self, request: &ElevationRequest, entries: &[Notification], outcomes: &[Outcome]) {
        let mut unrecorded = self
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A retry may simply be tried again; a delivery must not be.
        for (entry, outcome) in entries.iter().zip(outcomes) {
            if !matches!(outcome, Outcome::Retry(_)) {
                unrecorded.insert(Self::key(request, entry), outcome.clone());
            }
        }
    }

    fn release(&self, request: &ElevationRequest, entries: &[Notification]) {
        let mut unrecorded = self
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in entries {
            unrecorded.remove(&Self::key(request, entry));
        }
    }

    /// A copy of what is known of each sink.
    pub fn health(&self) -> BTreeMap<String, SinkHealth> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, sink: &str, error: Option<&str>, now: DateTime<Utc>) -> Option<Change> {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health::record(&mut health, sink, error, now)
    }
}

/// The delivery controller, also woken by changes to the control (a sink fixed or a route
/// added).
pub fn controller(caches: &Caches) -> Controller<ElevationRequest> {
    let requests = caches.requests.store();
    // Only what may owe a notification: a leader that takes over ten thousand
    // Pending requests with nothing to send does not queue them here.
    let owing = futures::StreamExt::filter(caches.requests.everything(), |request| {
        futures::future::ready(may_owe(request))
    });
    Controller::for_shared_stream(owing, caches.requests.store())
        .with_config(Config::default().concurrency(CONCURRENCY))
        .watches_shared_stream(caches.controls.spec_changes(), move |_| {
            requests
                .state()
                .into_iter()
                .filter(|r| may_owe(r))
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
}

/// Whether a request may owe a notification: one is waiting in its outbox, or its grant is in
/// force (a grant-ending notice may come due).
fn may_owe(request: &ElevationRequest) -> bool {
    request
        .status
        .as_ref()
        .is_some_and(|s| s.phase == Some(Phase::Approved) || outbox::backlog(&s.notifications) > 0)
}

pub async fn reconcile(request: Arc<ElevationRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let control = ctx.control();
    let none = Notifications::default();
    let config = control
        .as_ref()
        .and_then(|c| c.spec.notifications.as_ref())
        .unwrap_or(&none);
    if request.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Most changes of a request owe nothing: decided without a copy.
    let ending = plan::notices(&request, config, Utc::now());
    if ending.is_empty() && due_entries(&request).is_empty() {
        return Ok(next_look(&request, config));
    }
    let default_duration = control.as_ref().map_or_else(
        || kubepam_core::api::DEFAULT_DURATION.to_owned(),
        |c| duration::format(ControlSettings::from_spec(&c.spec).default_duration),
    );

    let mut current = (*request).clone();
    if !ending.is_empty() {
        // Planned again on each copy written: a fresh one may have ended.
        current = record(&ctx, current, |request| {
            let owed = plan::notices(request, config, Utc::now());
            if let Some(status) = request.status.as_mut() {
                plan::enqueue(&mut status.notifications, owed);
            }
        })
        .await?;
        report_undeliverable(&ctx, &current, &ending).await;
    }
    // The cache can be behind this controller's own last record (a change
    // queued during a send wakes it before its write is seen): what was
    // sent is known only from the API server.
    current = read_request(&ctx, &current.name_any())
        .await?
        .unwrap_or(current);
    let due = due_entries(&current);
    if !due.is_empty() {
        let tries = due.iter().map(|entry| async {
            match ctx.notifier.held(&current, entry) {
                Some(outcome) => outcome,
                None => attempt(&ctx, config, &current, entry, &default_duration).await,
            }
        });
        let outcomes = futures::future::join_all(tries).await;
        let done = Utc::now();
        // Kept until written: a failed write must not send them again.
        ctx.notifier.hold(&current, &due, &outcomes);
        current = record(&ctx, current, |request| {
            if let Some(status) = request.status.as_mut() {
                for (entry, outcome) in due.iter().zip(&outcomes) {
                    outbox::record(&mut status.notifications, &entry.id, outcome, done);
                }
            }
        })
        .await?;
        ctx.notifier.release(&current, &due);
        for (entry, outcome) in due.iter().zip(&outcomes) {
            report(&ctx, &current, entry, outcome).await;
        }
    }
    Ok(next_look(&current, config))
}

/// Wakes the controller when the next entry is due, or the grant-ending notice.
fn next_look(request: &ElevationRequest, config: &Notifications) -> Action {
    let outbox = request
        .status
        .as_ref()
        .map(|s| s.notifications.as_slice())
        .unwrap_or_default();
    let next = [
        outbox::next_due(outbox),
        plan::next_notice_at(request, config),
    ]
    .into_iter()
    .flatten()
    .min();
    match next {
        Some(at) => Action::requeue(
            (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(50)),
        ),
        None => Action::await_change(),
    }
}

/// The entries of the request due now.
fn due_entries(request: &ElevationRequest) -> Vec<Notification> {
    let outbox = request
        .status
        .as_ref()
        .map(|s| s.notifications.as_slice())
        .unwrap_or_default();
    outbox::due(outbox, Utc::now())
        .into_iter()
        .cloned()
        .collect()
}

/// One try of one entry.
async fn attempt(
    ctx: &Context,
    config: &Notifications,
    request: &ElevationRequest,
    entry: &Notification,
    default_duration: &str,
) -> Outcome {
    let Some(sink) = plan::sink(config, &entry.sink) else {
        return Outcome::Fail(format!(
            "sink {:?} is not configured in the control's notifications.sinks",
            entry.sink
        ));
    };
    let format = sink
        .webhook
        .as_ref()
        .map(|hook| hook.format)
        .unwrap_or_default();
    let message = render::message(request, entry, default_duration);
    let body = render::webhook_body(request, entry, &message, format, default_duration);
    let started = std::time::Instant::now();
    let result = ctx.notifier.sender.send(sink, entry, &message, &body).await;
    let now = Utc::now();
    let outcome = match &result {
        Ok(()) => Outcome::Sent,
        // Wrong settings fail at once, with an Event that says what to fix;
        // retrying them for a day would only hide them.
        Err(error) if error.is_permanent() => Outcome::Fail(error.to_string()),
        Err(error) => Outcome::Retry(error.to_string()),
    };
    let change = ctx.notifier.record(
        &entry.sink,
        result.as_ref().err().map(ToString::to_string).as_deref(),
        now,
    );
    let name = request.name_any();
    match &outcome {
        Outcome::Sent => info!(
            request = %name,
            notification = %entry.id,
            sink = %entry.sink,
            event = entry.event.as_str(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "notification sent"
        ),
        Outcome::Retry(error) | Outcome::Fail(error) => warn!(
            request = %name,
            notification = %entry.id,
            sink = %entry.sink,
            attempt = entry.attempts + 1,
            %error,
            "notification not delivered"
        ),
    }
    if let Some(change) = change {
        announce_health(ctx, &entry.sink, &change).await;
    }
    outcome
}

/// Applies `change` to the request's outbox and writes the status, guarded by
/// resourceVersion; after a conflict, reads the request again and applies it to that.
async fn record(
    ctx: &Context,
    current: ElevationRequest,
    change: impl Fn(&mut ElevationRequest),
) -> Result<ElevationRequest, Error> {
    let change = &change;
    let recorded = on_fresh_request(ctx, Arc::new(current.clone()), |current| async move {
        let mut changed = (*current).clone();
        changed.status.get_or_insert_with(Default::default);
        change(&mut changed);
        let version = super::apply_status(
            &ctx.client,
            &*current,
            current.status.as_ref(),
            changed
                .status
                .as_ref()
                .unwrap_or(&ElevationRequestStatus::default()),
            current.resource_version(),
        )
        .await?;
        changed.metadata.resource_version = version;
        Ok(changed)
    })
    .await?;
    Ok(recorded.unwrap_or(current))
}

/// An Event for each notification given up (`Failed`), with why.
pub(super) async fn report_undeliverable(
    ctx: &Context,
    request: &ElevationRequest,
    entries: &[Notification],
) {
    for entry in entries.iter().filter(|n| n.state == DeliveryState::Failed) {
        let note = format!(
            "notification {} to {} through sink {:?} not delivered: {}",
            entry.id,
            entry.recipient,
            entry.sink,
            entry.last_error.as_deref().unwrap_or_default()
        );
        warn!(request = %request.name_any(), "{note}");
        super::publish_event(
            ctx,
            request,
            EventType::Warning,
            "NotificationFailed",
            "Notify",
            &note,
        )
        .await;
    }
}

/// Metrics, and an Event on the request when a notification is given up.
async fn report(
    ctx: &Context,
    request: &ElevationRequest,
    tried: &Notification,
    outcome: &Outcome,
) {
    let recorded = request
        .status
        .as_ref()
        .and_then(|s| s.notifications.iter().find(|n| n.id == tried.id));
    let given_up = recorded.filter(|n| n.state == DeliveryState::Failed);
    let result = match outcome {
        Outcome::Sent => "sent",
        Outcome::Retry(_) if given_up.is_none() => "retry",
        Outcome::Retry(_) | Outcome::Fail(_) => "failed",
    };
    ctx.metrics.notification_tried(&tried.sink, result);
    if let Some(entry) = given_up {
        report_undeliverable(ctx, request, std::slice::from_ref(entry)).await;
    }
}

/// An Event on the control when a sink starts or stops failing.
async fn announce_health(ctx: &Context, sink: &str, change: &Change) {
    let Some(control) = ctx.control() else {
        return;
    };
    let (type_, reason, note) = match change {
        Change::Failing { failures, error } => (
            EventType::Warning,
            "NotificationSinkFailing",
            format!(
                "sink {sink:?} failed {failures} tries in a row: {error}; notifications wait and are retried with backoff"
            ),
        ),
        Change::Recovered { failures } => (
            EventType::Normal,
            "NotificationSinkRecovered",
            format!("sink {sink:?} delivers again after {failures} failed tries"),
        ),
    };
    warn!(sink, "{note}");
    super::publish_event_on(
        ctx,
        &control.object_ref(&()),
        type_,
        reason,
        "Notify",
        &note,
    )
    .await;
}
