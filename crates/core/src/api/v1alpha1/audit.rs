//! Audit settings (on the control), the chain's state (in the control's status) and each
//! request's records not yet on the chain (in the request's status).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::notifications::SecretKeyRef;
use crate::audit::AuditOperation;

/// Where the audit trail is exported. Every record goes to every sink, in sequence order, at
/// least once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSettings {
    /// The destinations of the records.
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("audit.sinks[].name must be unique"))]
    pub sinks: Vec<AuditSink>,
}

/// One destination of the records. Exactly one of `webhook`, `file` and `stdout` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.webhook), has(self.file), has(self.stdout) && self.stdout].exists_one(x, x)").message("an audit sink sets exactly one of webhook, file and stdout: true"))]
pub struct AuditSink {
    /// The sink's name, used in status and metrics (lowercase letters, digits and '-').
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("audit.sinks[].name must be lowercase letters, digits and '-', e.g. siem"))]
    pub name: String,
    /// An HTTP endpoint: records are sent (POST) in batches, as a CloudEvents batch
    /// (`application/cloudevents-batch+json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<AuditWebhook>,
    /// A file in the operator's audit directory (`--audit-dir`), one record per line, for a
    /// log shipper to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<AuditFile>,
    /// The operator's standard output, one record per line (log lines go to standard error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<bool>,
}

/// An HTTP endpoint for records.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.urlSecret)").message("an audit webhook sets exactly one of url and urlSecret"))]
pub struct AuditWebhook {
    /// The URL (https, or http to a loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("audit webhook url must start with https:// (or http:// for a receiver on loopback)"))]
    pub url: Option<String>,
    /// The URL, read from a Secret in kubepam's namespace labelled `kubepam.io/notifications=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<SecretKeyRef>,
    /// A bearer token sent as `Authorization: Bearer`, from a Secret labelled as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyRef>,
}

/// A file of records.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditFile {
    /// The file's name in the operator's audit directory (a name, not a path).
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9._-]*$')").message("audit file name must be a plain file name (letters, digits, '.', '_', '-'), e.g. audit.jsonl; it is kept in the operator's --audit-dir"))]
    pub name: String,
}

/// The audit chain as the cluster knows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditStatus {
    /// The end of the chain: the last sealed record's sequence and digest. An export that
    /// verifies and reaches it is complete (`kubectl pam audit verify --against-cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<AuditHead>,
    /// How far each sink has received the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<AuditSinkStatus>,
    /// The fingerprint of the key the chain is signed with: kubepam stops sealing, and says
    /// so, if the key is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// The end of the chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditHead {
    /// The last record's `kubepamsequence`.
    pub sequence: u64,
    /// The last record's digest (hex SHA-256).
    pub digest: String,
    /// When it was sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_at: Option<DateTime<Utc>>,
}

/// How far one sink has received the chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSinkStatus {
    /// The sink's name.
    pub name: String,
    /// Every record up to this sequence was accepted by the sink.
    #[serde(default)]
    pub exported_sequence: u64,
    /// When it last accepted records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_at: Option<DateTime<Utc>>,
    /// Failed tries since the last success.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int32"))]
    pub failures: u32,
    /// Why the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A request's part of the audit trail: the records made and not yet sealed onto the chain,
/// written in the same status write as the change each records.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestAudit {
    /// How many records were made for this request; the next one's id ends in this number
    /// plus one.
    #[serde(default)]
    pub recorded: u64,
    /// Records made and not yet on the chain, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<AuditEntry>,
    /// The chain sequence of the last of this request's records on the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<u64>,
    /// The decision on record for each reviewer, so each review is recorded once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reviews: BTreeMap<String, String>,
    /// Records that found no room while the chain was not taking them (see
    /// [`crate::audit::trail::PENDING_LIMIT`]); counted so the gap is never silent.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub unrecorded: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// One record not yet on the chain. The request's policy, scope, reason and id are added when
/// it is sealed (they cannot change).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// The record's id: the request's id, `/`, its number.
    pub id: String,
    /// The CloudEvents type, e.g. `io.kubepam.request.approved`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Who caused it.
    pub actor: String,
    /// A reviewer's comment, or why kubepam acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// A review's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// kubepam's reason code for a transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_reason: Option<String>,
    /// The end of the grant, on records that make or change one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_until: Option<DateTime<Utc>>,
    /// The use, on `io.kubepam.grant.used` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<AuditOperation>,
}
