//! One audit record: a CloudEvents 1.0 event (structured JSON) with kubepam's chain
//! attributes. CloudEvents extension attribute names are lower-case letters and digits only,
//! hence `kubepamsequence`, `kubepamprev` and `kubepamsignature`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The CloudEvents version of every record.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of every record's `data`.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// One step in a request's life, as an auditor reads it. Unknown fields are refused: the
/// signature covers what the record holds, so a field added to an export would otherwise be
/// shown as if it had been signed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Always `1.0`.
    pub specversion: String,
    /// What happened, e.g. `io.kubepam.request.approved`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Who recorded it, e.g. `kubepam.io/clusters/<cluster>`.
    pub source: String,
    /// Unique per record: a receiver drops a record it has seen.
    pub id: String,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The request it is about (its name).
    pub subject: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The facts.
    pub data: AuditData,
    /// Its place in the chain: 1 for the first record, then one more each time.
    pub kubepamsequence: u64,
    /// The digest (hex SHA-256) of the record before it, as signed; empty for the first.
    pub kubepamprev: String,
    /// HMAC-SHA-256 (hex) over the record without this attribute.
    #[serde(default)]
    pub kubepamsignature: String,
}

/// The facts of one step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditData {
    /// Who caused it: a username, several joined by commas, or `kubepam`.
    pub actor: String,
    /// The request's AccessPolicy.
    pub policy: String,
    /// Where the access holds, e.g. a namespace; absent when cluster-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The requester's reason.
    pub reason: String,
    /// A reviewer's comment, or why kubepam acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The request's id.
    pub request_id: String,
    /// A review's decision (`Approve`, `Deny`, `Revoke`, `Confirm`, `Reject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// kubepam's reason code for a transition, as in the request's `Approved` condition
    /// (e.g. `BreakGlass`, `ReleasedByRequester`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_reason: Option<String>,
    /// The end of the grant, on records that make or change one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_until: Option<DateTime<Utc>>,
    /// The use of the grant, on `io.kubepam.grant.used` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<AuditOperation>,
}

impl AuditOperation {
    /// The resource as kubectl names it: `deployments.apps`, `deployments.apps/scale`,
    /// `pods/exec`.
    pub fn qualified_resource(&self) -> String {
        let Some(group) = self.api_group.as_deref().filter(|g| !g.is_empty()) else {
            return self.resource.clone();
        };
        match self.resource.split_once('/') {
            Some((resource, sub)) => format!("{resource}.{group}/{sub}"),
            None => format!("{}.{group}", self.resource),
        }
    }
}

/// One use of a grant that the guard admitted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditOperation {
    /// Who used it.
    pub user: String,
    /// The verb, e.g. `delete`.
    pub verb: String,
    /// The resource, with subresource if any, e.g. `deployments` or `pods/exec`.
    pub resource: String,
    /// The resource's API group, e.g. `apps`; absent for the core group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// The object's namespace, when namespaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name, when the request names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl AuditRecord {
    /// An unsealed record of `event_type` about `subject`: [`crate::audit::seal`] numbers,
    /// links and signs it.
    pub fn new(
        event_type: &str,
        source: &str,
        id: &str,
        time: DateTime<Utc>,
        subject: &str,
        data: AuditData,
    ) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            event_type: event_type.to_owned(),
            source: source.to_owned(),
            id: id.to_owned(),
            time,
            subject: subject.to_owned(),
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            data,
            kubepamsequence: 0,
            kubepamprev: String::new(),
            kubepamsignature: String::new(),
        }
    }
}

/// Records from JSON lines (one event per line; blank lines are skipped). `Err` names
/// the line (1-based) that is not a record, and why: not JSON, not a record, or holding a
/// field a record does not have (it would not be covered by the signature).
pub fn parse_lines(text: &str) -> Result<Vec<AuditRecord>, (usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| parse_line(line).map_err(|e| (index + 1, e)))
        .collect()
}

fn parse_line(line: &str) -> Result<AuditRecord, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let record: AuditRecord = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let known = serde_json::to_value(&record).map_err(|e| e.to_string())?;
    match unknown_field(&value, &known, "") {
        Some(path) => Err(format!(
            "field {path} is not part of an audit record, so no signature covers it"
        )),
        None => Ok(record),
    }
}

/// The first field of `seen` that `known` (the record as kubepam writes it) lacks.
fn unknown_field(seen: &serde_json::Value, known: &serde_json::Value, at: &str) -> Option<String> {
    let (serde_json::Value::Object(seen), serde_json::Value::Object(known)) = (seen, known) else {
        return None;
    };
    seen.iter().find_map(|(key, value)| {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match known.get(key) {
            None if value.is_null() => None,
            None => Some(path),
            Some(inner) => unknown_field(value, inner, &path),
        }
    })
}
