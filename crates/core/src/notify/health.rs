//! Whether each sink works: consecutive failures, and the control's condition about them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{condition_false, condition_true};

/// The control's condition about notification delivery.
pub const CONDITION_NOTIFICATIONS: &str = "NotificationsDelivering";
/// A sink is reported failing after this many failed tries in a row.
pub const FAILING_AFTER: u32 = 3;

/// What is known of one sink since this replica started leading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkHealth {
    /// Failed tries since the last success.
    pub consecutive_failures: u32,
    /// The last failure's reason (never a credential).
    pub last_error: Option<String>,
    /// When the current run of failures began.
    pub failing_since: Option<DateTime<Utc>>,
}

impl SinkHealth {
    /// Whether the sink counts as failing.
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures >= FAILING_AFTER
    }
}

/// A change worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The sink just reached [`FAILING_AFTER`] failures in a row.
    Failing { failures: u32, error: String },
    /// A failing sink delivered again.
    Recovered { failures: u32 },
}

/// Records a try on `sink`; returns the change, if the sink started or stopped failing.
pub fn record(
    health: &mut BTreeMap<String, SinkHealth>,
    sink: &str,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Change> {
    let entry = health.entry(sink.to_owned()).or_default();
    match error {
        None => {
            let was_failing = entry.is_failing();
            let failures = entry.consecutive_failures;
            *entry = SinkHealth::default();
            was_failing.then_some(Change::Recovered { failures })
        }
        Some(error) => {
            entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
            entry.last_error = Some(error.to_owned());
            entry.failing_since.get_or_insert(now);
            (entry.consecutive_failures == FAILING_AFTER).then(|| Change::Failing {
                failures: entry.consecutive_failures,
                error: error.to_owned(),
            })
        }
    }
}

/// The control's `NotificationsDelivering` condition: `None` without sinks, `False` naming the
/// failing sinks, else `True`.
pub fn condition(
    sinks: &[String],
    health: &BTreeMap<String, SinkHealth>,
    now: DateTime<Utc>,
    generation: Option<i64>,
) -> Option<Condition> {
    if sinks.is_empty() {
        return None;
    }
    let failing: Vec<String> = sinks
        .iter()
        .filter_map(|name| {
            let h = health.get(name).filter(|h| h.is_failing())?;
            // No counts: the message changes only when the news does, so
            // the control is not rewritten at every try.
            let since = h.failing_since.map(|t| t.to_rfc3339()).unwrap_or_default();
            Some(format!(
                "sink {name:?} fails since {since}: {}",
                h.last_error.as_deref().unwrap_or("unknown error")
            ))
        })
        .collect();
    Some(if failing.is_empty() {
        condition_true(
            CONDITION_NOTIFICATIONS,
            "Delivering",
            "every sink delivers",
            now,
            generation,
        )
    } else {
        condition_false(
            CONDITION_NOTIFICATIONS,
            "SinkFailing",
            format!(
                "{}; notifications wait and are retried with backoff (kubepam_notification_backlog)",
                failing.join("; ")
            ),
            now,
            generation,
        )
    })
}
