//! The delivery schedule of an outbox: what is due, when to look again, and what a try's
//! outcome does to an entry.

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{DeliveryState, Notification};

/// The first retry comes this long after a failure; each further one doubles it.
pub const FIRST_RETRY: TimeDelta = TimeDelta::seconds(1);
/// Retries are never further apart than this.
pub const MAX_RETRY: TimeDelta = TimeDelta::seconds(60);
/// A notification not delivered this long after its event is given up (`Failed`).
pub const GIVE_UP_AFTER: TimeDelta = TimeDelta::hours(24);

/// The result of one delivery try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sink accepted it.
    Sent,
    /// It may work later (the sink is down, slow, or refused for now).
    Retry(String),
    /// It cannot work as configured (the sink no longer exists).
    Fail(String),
}

/// The pending entries whose next try is due at `now`.
pub fn due(outbox: &[Notification], now: DateTime<Utc>) -> Vec<&Notification> {
    outbox
        .iter()
        .filter(|n| {
            n.state == DeliveryState::Pending && n.next_attempt_at.is_none_or(|at| at <= now)
        })
        .collect()
}

/// When a pending entry is next due, if any is pending.
pub fn next_due(outbox: &[Notification]) -> Option<DateTime<Utc>> {
    outbox
        .iter()
        .filter(|n| n.state == DeliveryState::Pending)
        .map(|n| n.next_attempt_at.unwrap_or(n.created_at))
        .min()
}

/// The wait before try number `attempts + 1`, after `attempts` failed tries.
pub fn backoff(attempts: u32) -> TimeDelta {
    let doublings = attempts.saturating_sub(1).min(16);
    let delay = FIRST_RETRY * (1_i32 << doublings);
    delay.min(MAX_RETRY)
}

/// Records a try's outcome on the entry `id`, if it is still pending. Returns whether anything
/// changed (an entry already recorded by an earlier write stays as it is).
pub fn record(
    outbox: &mut [Notification],
    id: &str,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> bool {
    let Some(entry) = outbox
        .iter_mut()
        .find(|n| n.id == id && n.state == DeliveryState::Pending)
    else {
        return false;
    };
    entry.attempts = entry.attempts.saturating_add(1);
    match outcome {
        Outcome::Sent => {
            entry.state = DeliveryState::Sent;
            entry.sent_at = Some(now);
            entry.next_attempt_at = None;
            entry.last_error = None;
        }
        Outcome::Fail(error) => {
            entry.state = DeliveryState::Failed;
            entry.next_attempt_at = None;
            entry.last_error = Some(error.clone());
        }
        Outcome::Retry(error) => {
            if now - entry.created_at >= GIVE_UP_AFTER {
                entry.state = DeliveryState::Failed;
                entry.next_attempt_at = None;
                entry.last_error = Some(format!(
                    "given up after {} tries over {}: {error}",
                    entry.attempts,
                    crate::duration::format(GIVE_UP_AFTER)
                ));
            } else {
                entry.next_attempt_at = Some(now + backoff(entry.attempts));
                entry.last_error = Some(error.clone());
            }
        }
    }
    true
}

/// How many entries wait for delivery.
pub fn backlog(outbox: &[Notification]) -> usize {
    outbox
        .iter()
        .filter(|n| n.state == DeliveryState::Pending)
        .count()
}
