//! What deciding a request needs to know about the requester's other requests: the grant an
//! extension continues, the extensions that continue this one, and how many requests were
//! already open when it arrived (the quotas).

use chrono::{DateTime, Utc};

use crate::api::{ElevationRequest, Phase};

/// The requester's other requests, as far as one decision needs them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Related<'a> {
    /// For an extension: the request named by `spec.extends`, when it exists.
    pub extended: Option<&'a ElevationRequest>,
    /// An Approved extension of this request, if any: its end is this grant's true end.
    pub extended_by: Option<&'a ElevationRequest>,
    /// The requester's requests that were open before this one; `None` when not counted.
    pub open_before: Option<OpenCounts>,
}

/// How many requests one person holds open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenCounts {
    /// Pending or Approved requests under the same policy, extensions aside.
    pub same_policy: u32,
    /// Pending requests under any policy.
    pub pending: u32,
}

/// Whether a request is open: not yet decided, or Approved.
fn is_open(request: &ElevationRequest) -> bool {
    request.metadata.deletion_timestamp.is_none()
        && matches!(
            request.status.as_ref().and_then(|s| s.phase),
            None | Some(Phase::Pending | Phase::Approved)
        )
}

fn is_pending(request: &ElevationRequest) -> bool {
    matches!(
        request.status.as_ref().and_then(|s| s.phase),
        None | Some(Phase::Pending)
    )
}

/// Creation order: creation time, then name (as the policy limit orders policies).
fn created(request: &ElevationRequest) -> (Option<DateTime<Utc>>, &str) {
    (
        request
            .metadata
            .creation_timestamp
            .as_ref()
            .map(crate::api::from_k8s_time),
        request.metadata.name.as_deref().unwrap_or(""),
    )
}

impl OpenCounts {
    /// Count `requester`'s open requests among `others` under `policy`. With `before`, only
    /// those that came before it (and never itself) count: the requests it competes with for
    /// a place under the quota. A chain of a grant and its extensions counts once: an open
    /// extension counts only when the grant it continues is no longer open.
    pub fn of<'r>(
        others: impl IntoIterator<Item = &'r ElevationRequest>,
        requester: &str,
        policy: &str,
        before: Option<&ElevationRequest>,
    ) -> Self {
        let open: Vec<&ElevationRequest> = others
            .into_iter()
            .filter(|o| o.spec.requester.as_deref() == Some(requester) && is_open(o))
            .filter(|o| before.is_none_or(|this| came_before(o, this)))
            .collect();
        let is_open_name = |name: &str| {
            open.iter()
                .any(|o| o.metadata.name.as_deref() == Some(name))
        };
        let mut counts = Self::default();
        for other in &open {
            let heads_a_chain = other
                .spec
                .extends
                .as_deref()
                .is_none_or(|e| !is_open_name(e));
            if other.spec.policy == policy && heads_a_chain {
                counts.same_policy += 1;
            }
            if is_pending(other) {
                counts.pending += 1;
            }
        }
        counts
    }
}

/// Whether `other` came before `this`: kubepam has already seen it (it has a phase, and this
/// one, at its first sight, has none), or it was created earlier (creation time, which the
/// API server keeps to the second, then name).
fn came_before(other: &ElevationRequest, this: &ElevationRequest) -> bool {
    let (this_time, this_name) = created(this);
    let (time, name) = created(other);
    if name == this_name {
        return false;
    }
    if other.status.as_ref().and_then(|s| s.phase).is_some() {
        return true;
    }
    match (time, this_time) {
        (Some(t), Some(u)) => (t, name) < (u, this_name),
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => name < this_name,
    }
}

/// The request `request` extends, found among `others` (the requester's own requests).
pub fn extended_among<'r>(
    request: &ElevationRequest,
    others: impl IntoIterator<Item = &'r ElevationRequest>,
) -> Option<&'r ElevationRequest> {
    let name = request.spec.extends.as_deref()?;
    others
        .into_iter()
        .find(|o| o.metadata.name.as_deref() == Some(name))
}
