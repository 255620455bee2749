//! Which ended requests the control's `retention` removes.

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::ElevationRequest;
use crate::lifecycle;

/// When the request ended (its last recorded step), if it has.
pub fn ended_at(request: &ElevationRequest) -> Option<DateTime<Utc>> {
    let status = request.status.as_ref()?;
    if !status.phase.is_some_and(crate::api::Phase::is_final) || lifecycle::review_pending(status) {
        return None;
    }
    status
        .history
        .iter()
        .map(|h| h.time)
        .chain(status.decided_at)
        .max()
}

/// Whether the request is past `retention` and every sink has its records (`exported_through`
/// from [`super::trail::exported_through`]): only then is it removed.
pub fn due(
    request: &ElevationRequest,
    retention: TimeDelta,
    exported_through: u64,
    now: DateTime<Utc>,
) -> bool {
    ended_at(request).is_some_and(|ended| ended + retention <= now)
        && super::trail::exported(request.status.as_ref(), exported_through)
}
