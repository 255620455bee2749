//! Prometheus metrics (text exposition format), served on `/metrics`.

pub mod server;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use kubepam_core::api::{ElevationRequest, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub phase: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverdueLabels {
    /// `true` once past `breakGlass.reviewWithin`.
    pub overdue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: String,
    pub allowed: String,
}

/// A refusal's webhook and its stable code (`kubepam_core::admission::Reason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub webhook: String,
    pub reason: String,
}

/// A notification try's sink and result (`sent`, `retry`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub sink: String,
    pub result: String,
}

fn histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Admission answers sit on every API call they cover: fine buckets below
/// 10 ms, with a bound at 5 ms (the target for their 99th percentile).
fn admission_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ])
}

/// An approver's decision comes seconds to days after the request: 1 s .. 1 day.
fn decision_histogram() -> Histogram {
    Histogram::new([
        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
        28800.0, 86400.0,
    ])
}

/// Every metric kubepam exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub transitions: Family<TransitionLabels, Counter>,
    pub requests: Family<PhaseLabels, Gauge>,
    pub active_grants: Gauge,
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub admission_refusals: Family<RefusalLabels, Counter>,
    pub admission_duration: Family<WebhookLabels, Histogram, fn() -> Histogram>,
    pub guard_executions: Counter,
    pub leader: Gauge,
    /// 1 while this replica's caches are synced (as `/readyz`).
    pub ready: Gauge,
    /// Time from a request's submission to an approver's decision, by the
    /// phase decided (`Approved`, `Denied`).
    pub decision_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    pub drift_repairs: Family<ActionLabels, Counter>,
    pub foreign_bindings: Gauge,
    pub notifications: Family<DeliveryLabels, Counter>,
    pub notification_backlog: Gauge,
    /// Emergency grants waiting for their review, by whether the review is overdue.
    pub emergency_unreviewed: Family<OverdueLabels, Gauge>,
    /// Admission configurations of kubepam's found changed or deleted by
    /// someone else and restored, by object.
    pub guard_repairs: Family<ObjectLabels, Counter>,
    /// Subjects RBAC lets impersonate an identity kubepam trusts.
    pub impersonators: Gauge,
    /// Subjects holding, outside kubepam, a right to what a Task policy guards,
    /// or to impersonate, escalate or bind.
    pub standing_holders: Family<RightLabels, Gauge>,
    /// Objects that confer access, made during grants, found when they ended.
    pub persistence_found: Counter,
    /// The audit chain's last sequence number.
    pub audit_head: Gauge,
    /// Audit records made and not yet sealed onto the chain, as cached.
    pub audit_unsealed: Gauge,
    /// Audit records that found no room in their request while the chain was not taking
    /// them, as cached (should stay 0).
    pub audit_unrecorded: Gauge,
    /// Audit records sealed and not yet received by a sink, by sink.
    pub audit_backlog: Family<SinkLabels, Gauge>,
    /// Audit records received by a sink, by sink.
    pub audit_exported: Family<SinkLabels, Counter>,
    /// Failed audit export tries, by sink.
    pub audit_export_failures: Family<SinkLabels, Counter>,
}

/// An audit sink.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

/// A right of `kubectl pam standing`: `policy NAME`, `impersonate`, `escalate`, `bind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RightLabels {
    pub right: String,
}

/// One of kubepam's admission objects, e.g. `ValidatingWebhookConfiguration/kubepam-guard`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub object: String,
}

impl Default for Metrics {
    // One registration per metric, in one list.
    #[allow(clippy::too_many_lines)]
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubepam");
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(histogram),
            transitions: Family::default(),
            requests: Family::default(),
            active_grants: Gauge::default(),
            admission_requests: Family::default(),
            admission_refusals: Family::default(),
            admission_duration: Family::new_with_constructor(admission_histogram),
            guard_executions: Counter::default(),
            leader: Gauge::default(),
            ready: Gauge::default(),
            decision_duration: Family::new_with_constructor(decision_histogram),
            drift_repairs: Family::default(),
            foreign_bindings: Gauge::default(),
            notifications: Family::default(),
            notification_backlog: Gauge::default(),
            emergency_unreviewed: Family::default(),
            guard_repairs: Family::default(),
            impersonators: Gauge::default(),
            standing_holders: Family::default(),
            persistence_found: Counter::default(),
            audit_head: Gauge::default(),
            audit_unsealed: Gauge::default(),
            audit_unrecorded: Gauge::default(),
            audit_backlog: Family::default(),
            audit_exported: Family::default(),
            audit_export_failures: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "persistence_found",
            "Objects that confer access (bindings, roles, service accounts, token Secrets, pods running as them, certificate requests, API services) made by requesters during their grants, found when the grants ended",
            metrics.persistence_found.clone(),
        );
        registry.register(
            "standing_holders",
            "Subjects that RBAC, outside kubepam's grants, gives a right to what a Task policy guards (right=\"policy NAME\") or to impersonate, escalate or bind",
            metrics.standing_holders.clone(),
        );
        registry.register(
            "impersonators",
            "Subjects that RBAC lets impersonate a system account, a control-plane identity, a node, an approver group or kubepam itself",
            metrics.impersonators.clone(),
        );
        registry.register(
            "guard_repairs",
            "kubepam's webhook configurations found changed or deleted by someone else and restored",
            metrics.guard_repairs.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles by kind",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and error",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, by kind",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "transitions",
            "Request transitions (decisions) by new phase and reason",
            metrics.transitions.clone(),
        );
        registry.register(
            "requests",
            "ElevationRequests by phase, as cached",
            metrics.requests.clone(),
        );
        registry.register(
            "active_grants",
            "Approved requests holding a grant",
            metrics.active_grants.clone(),
        );
        registry.register(
            "admission_requests",
            "Admission reviews answered, by webhook and outcome",
            metrics.admission_requests.clone(),
        );
        registry.register(
            "admission_refusals",
            "Admission refusals, by webhook and reason code",
            metrics.admission_refusals.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, by webhook",
            metrics.admission_duration.clone(),
        );
        registry.register(
            "guard_executions",
            "Uses of a grant admitted by the guard",
            metrics.guard_executions.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and reconciles",
            metrics.leader.clone(),
        );
        registry.register(
            "ready",
            "1 while this replica's caches are synced and it can decide (as /readyz)",
            metrics.ready.clone(),
        );
        registry.register(
            "time_to_decision_seconds",
            "Time from a request's submission to an approver's decision, by phase decided \
             (Approved, Denied)",
            metrics.decision_duration.clone(),
        );
        registry.register(
            "drift_repairs",
            "RBAC drift repaired, by action: restored (a grant's object put back), removed-extra (an object labelled as a grant but not part of it), removed-orphan (labelled as kubepam's, no live request), removed-foreign (a hand-made binding of a generated role)",
            metrics.drift_repairs.clone(),
        );
        registry.register(
            "foreign_bindings",
            "Bindings made outside kubepam to a ClusterRole kubepam generated for a grant",
            metrics.foreign_bindings.clone(),
        );
        registry.register(
            "notifications",
            "Notification delivery tries, by sink and result (sent, retry, failed)",
            metrics.notifications.clone(),
        );
        registry.register(
            "notification_backlog",
            "Notifications recorded and not yet delivered, as cached",
            metrics.notification_backlog.clone(),
        );
        registry.register(
            "emergency_unreviewed",
            "Emergency grants (break glass) not yet confirmed or rejected by an approver, by \
             whether the review is overdue, as cached",
            metrics.emergency_unreviewed.clone(),
        );
        registry.register(
            "audit_head_sequence",
            "The audit chain's last sequence number",
            metrics.audit_head.clone(),
        );
        registry.register(
            "audit_unsealed",
            "Audit records made and not yet sealed onto the chain, as cached",
            metrics.audit_unsealed.clone(),
        );
        registry.register(
            "audit_unrecorded",
            "Audit records that found no room in their request while the chain was not taking \
             them, as cached (should stay 0)",
            metrics.audit_unrecorded.clone(),
        );
        registry.register(
            "audit_backlog",
            "Audit records sealed and not yet received by the sink",
            metrics.audit_backlog.clone(),
        );
        registry.register(
            "audit_exported",
            "Audit records the sink received",
            metrics.audit_exported.clone(),
        );
        registry.register(
            "audit_export_failures",
            "Failed audit export tries, by sink",
            metrics.audit_export_failures.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts one repair of RBAC drift.
    pub fn drift_repaired(&self, action: &str, count: usize) {
        self.drift_repairs
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc_by(count as u64);
    }

    /// Observes an approver's decision, `waited` after the request was submitted.
    pub fn decided(&self, phase: Phase, waited: std::time::Duration) {
        self.decision_duration
            .get_or_create(&PhaseLabels {
                phase: phase.as_str().to_owned(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Counts one notification try.
    pub fn notification_tried(&self, sink: &str, result: &str) {
        self.notifications
            .get_or_create(&DeliveryLabels {
                sink: sink.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Refreshes the gauges that are read off the cache, then renders the
    /// text exposition format.
    pub fn render<'a>(&self, requests: impl IntoIterator<Item = &'a ElevationRequest>) -> String {
        let mut counts = [0i64; 5];
        let mut backlog = 0usize;
        let mut unreviewed = [0i64; 2];
        for request in requests {
            if let Some(status) = &request.status {
                backlog += kubepam_core::notify::outbox::backlog(&status.notifications);
                if kubepam_core::lifecycle::review_pending(status) {
                    unreviewed[usize::from(kubepam_core::lifecycle::review_overdue(status))] += 1;
                }
            }
            if let Some(phase) = request.status.as_ref().and_then(|s| s.phase) {
                counts[phase_index(phase)] += 1;
            }
        }
        for phase in [
            Phase::Pending,
            Phase::Approved,
            Phase::Denied,
            Phase::Expired,
            Phase::Revoked,
        ] {
            self.requests
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().to_owned(),
                })
                .set(counts[phase_index(phase)]);
        }
        self.active_grants.set(counts[phase_index(Phase::Approved)]);
        self.notification_backlog
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        for (overdue, count) in ["false", "true"].into_iter().zip(unreviewed) {
            self.emergency_unreviewed
                .get_or_create(&OverdueLabels {
                    overdue: overdue.to_owned(),
                })
                .set(count);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::Pending => 0,
        Phase::Approved => 1,
        Phase::Denied => 2,
        Phase::Expired => 3,
        Phase::Revoked => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_decisions_in_buckets_by_phase() {
        let metrics = Metrics::default();
        metrics.decided(Phase::Approved, std::time::Duration::from_secs(90));
        let text = metrics.render(std::iter::empty());
        for series in [
            "kubepam_time_to_decision_seconds_bucket{le=\"60.0\",phase=\"Approved\"} 0",
            "kubepam_time_to_decision_seconds_bucket{le=\"120.0\",phase=\"Approved\"} 1",
            "kubepam_time_to_decision_seconds_count{phase=\"Approved\"} 1",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn renders_every_family_with_the_prefix() {
        let metrics = Metrics::default();
        metrics
            .reconciles
            .get_or_create(&KindLabels {
                kind: "ElevationRequest".into(),
            })
            .inc();
        metrics.guard_executions.inc();
        metrics
            .admission_refusals
            .get_or_create(&RefusalLabels {
                webhook: "requester".into(),
                reason: "ForgedRequester".into(),
            })
            .inc();
        let text = metrics.render(std::iter::empty());
        for series in [
            "kubepam_reconciles_total{kind=\"ElevationRequest\"} 1",
            "kubepam_guard_executions_total 1",
            "kubepam_requests{phase=\"Approved\"} 0",
            "kubepam_active_grants 0",
            "kubepam_emergency_unreviewed{overdue=\"true\"} 0",
            "kubepam_admission_refusals_total{webhook=\"requester\",reason=\"ForgedRequester\"} 1",
            "# HELP kubepam_admission_refusals Admission refusals, by webhook and reason code",
            "# TYPE kubepam_admission_refusals counter",
            "kubepam_ready 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }
}
