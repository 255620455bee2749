//! How the controllers retry: one policy for every failed reconcile, and one
//! helper for the writes that must be made again on a fresh copy.
//!
//! - A write conflict (409) is retried at once on a fresh read: someone else
//!   changed the object, and the decision is made again from what is there.
//! - Any other failure is transient by assumption (what can never succeed is
//!   a status condition, not an error) and backs off per object, doubling
//!   from [`FIRST_RETRY`] to [`LONGEST_RETRY`]: a lasting 403 costs one call
//!   per object every few seconds, not a hot loop, while a grant due when
//!   the API server comes back is retried within seconds (the watches'
//!   relist wakes every request at once anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::Api;

use super::{Context, Error};
use kubepam_core::api::ElevationRequest;

/// The wait after a conflict: read again and decide again, at once.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(50);
/// The wait after an object's first failure.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between tries of one object.
pub const LONGEST_RETRY: Duration = Duration::from_secs(8);
/// The most objects whose failures are counted at once.
const TRACKED_LIMIT: usize = 10_000;
/// How many times a write is tried on a fresh copy of the request after a conflict.
pub const CONFLICT_ATTEMPTS: usize = 5;

/// The wait before the next try of an object that failed `failures` times in a row.
pub fn retry_after(error: &Error, failures: u32) -> Duration {
    if error.is_conflict() {
        return CONFLICT_RETRY;
    }
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY
        .saturating_mul(1 << doublings)
        .min(LONGEST_RETRY)
}

/// Consecutive failures per object, forgotten at its next success.
#[derive(Debug, Default, Clone)]
pub struct Failures {
    counts: Arc<Mutex<HashMap<(String, String), u32>>>,
}

impl Failures {
    /// Counts a failure of `kind` `name`; returns how many in a row.
    pub fn failed(&self, kind: &str, name: &str) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        // Objects deleted while failing are never seen again: bounded, the
        // worst a reset costs is one short wait per object.
        if counts.len() >= TRACKED_LIMIT {
            counts.clear();
        }
        let count = counts
            .entry((kind.to_owned(), name.to_owned()))
            .or_default();
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets the failures of `kind` `name`.
    pub fn succeeded(&self, kind: &str, name: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if !counts.is_empty() {
            counts.remove(&(kind.to_owned(), name.to_owned()));
        }
    }
}

/// Runs `write` on `request`, and after a write conflict on a fresh copy read
/// from the API server, up to [`CONFLICT_ATTEMPTS`] times in all. `Ok(None)`
/// when the request is gone.
pub async fn on_fresh_request<T, W, Fut>(
    ctx: &Context,
    request: Arc<ElevationRequest>,
    mut write: W,
) -> Result<Option<T>, Error>
where
    W: FnMut(Arc<ElevationRequest>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let name = kube::ResourceExt::name_any(&*request);
    let mut current = request;
    let mut attempt = 1;
    loop {
        match write(current.clone()).await {
            Err(error) if error.is_conflict() && attempt < CONFLICT_ATTEMPTS => {
                attempt += 1;
                match read_request(ctx, &name).await? {
                    Some(fresh) => current = Arc::new(fresh),
                    None => return Ok(None),
                }
            }
            result => return result.map(Some),
        }
    }
}

/// The request `name` as the API server has it now; `None` when it is gone.
pub async fn read_request(ctx: &Context, name: &str) -> Result<Option<ElevationRequest>, Error> {
    Api::<ElevationRequest>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .map_err(|source| Error::Read {
            what: format!("ElevationRequest {name}"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16) -> Error {
        Error::WriteStatus {
            kind: "ElevationRequest".into(),
            name: "x".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("refused", "Forbidden")
                    .with_code(code)
                    .boxed(),
            ),
        }
    }

    #[test]
    fn conflicts_are_retried_at_once_and_other_failures_back_off_growing() {
        assert_eq!(retry_after(&refused(409), 7), CONFLICT_RETRY);
        let waits: Vec<Duration> = (1..=6).map(|n| retry_after(&refused(403), n)).collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 8000].map(Duration::from_millis)
        );
        assert_eq!(retry_after(&refused(403), u32::MAX), LONGEST_RETRY);
    }

    #[test]
    fn failures_count_per_object_until_it_succeeds() {
        let failures = Failures::default();
        assert_eq!(failures.failed("ElevationRequest", "a"), 1);
        assert_eq!(failures.failed("ElevationRequest", "a"), 2);
        assert_eq!(failures.failed("ElevationRequest", "b"), 1);
        assert_eq!(failures.failed("AccessPolicy", "a"), 1);
        failures.succeeded("ElevationRequest", "a");
        assert_eq!(failures.failed("ElevationRequest", "a"), 1);
        assert_eq!(failures.failed("ElevationRequest", "b"), 2);
    }
}
