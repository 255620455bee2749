//! What the control says of the export: its `AuditExported` condition.

use chrono::{DateTime, Utc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{PrivilegedAccessControl, condition_false, condition_true};

/// Condition type on the control: whether every audit sink has the whole chain.
pub const CONDITION_AUDIT_EXPORTED: &str = "AuditExported";

/// The control's `AuditExported` condition, from its audit settings, the chain's state in its
/// status and why the chain cannot be sealed (`problem`), if it cannot.
pub fn condition(
    control: &PrivilegedAccessControl,
    problem: Option<&str>,
    now: DateTime<Utc>,
) -> Condition {
    let generation = control.metadata.generation;
    let state = control
        .status
        .as_ref()
        .and_then(|s| s.audit.clone())
        .unwrap_or_default();
    let head = state.head.as_ref().map_or(0, |h| h.sequence);
    if let Some(problem) = problem {
        return condition_false(
            CONDITION_AUDIT_EXPORTED,
            "AuditNotSealed",
            format!("audit records wait in their requests and are not sealed: {problem}"),
            now,
            generation,
        );
    }
    let sinks = control
        .spec
        .audit
        .as_ref()
        .map(|a| a.sinks.as_slice())
        .unwrap_or_default();
    if sinks.is_empty() {
        return condition_false(
            CONDITION_AUDIT_EXPORTED,
            "NoAuditSink",
            format!(
                "no audit sink is configured: records are sealed onto the chain (head {head}) \
                 but kept nowhere outside the cluster, and retention removes nothing; add \
                 spec.audit.sinks"
            ),
            now,
            generation,
        );
    }
    let mut failing = Vec::new();
    let mut waiting = Vec::new();
    for sink in sinks {
        let known = state.sinks.iter().find(|s| s.name == sink.name);
        let exported = known.map_or(0, |k| k.exported_sequence);
        match known {
            Some(k) if k.failures > 0 => failing.push(format!(
                "sink {:?} failed {} tries in a row ({}), {} records wait",
                sink.name,
                k.failures,
                k.last_error.as_deref().unwrap_or("no reason given"),
                head.saturating_sub(exported)
            )),
            _ if exported < head => {
                waiting.push(format!("{} for {:?}", head - exported, sink.name));
            }
            _ => {}
        }
    }
    if !failing.is_empty() {
        return condition_false(
            CONDITION_AUDIT_EXPORTED,
            "AuditSinkFailing",
            format!("{}; they are retried with backoff", failing.join("; ")),
            now,
            generation,
        );
    }
    let message = if waiting.is_empty() {
        format!("every audit sink has the chain up to sequence {head}")
    } else {
        format!("records on their way: {}", waiting.join(", "))
    };
    condition_true(
        CONDITION_AUDIT_EXPORTED,
        "Exported",
        message,
        now,
        generation,
    )
}
