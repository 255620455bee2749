//! Notification settings (on the control) and the per-request outbox (in the request's status).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where kubepam sends notifications, and who hears about what. Kubernetes Events are always
/// published as well.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.approverRoutes) || self.approverRoutes.all(r, has(self.sinks) && self.sinks.exists(s, s.name == r.sink))").message("every approverRoutes[].sink must name one of sinks[].name"),
    validation = Rule::new("!has(self.requesterRoutes) || self.requesterRoutes.all(r, has(self.sinks) && self.sinks.exists(s, s.name == r.sink))").message("every requesterRoutes[].sink must name one of sinks[].name"),
    validation = Rule::new("!has(self.approverRoutes) || !has(self.sinks) || self.approverRoutes.all(r, (has(r.to) && size(r.to) > 0) || !self.sinks.exists(s, s.name == r.sink && has(s.smtp)))").message("an approverRoutes entry to an smtp sink needs to (the addresses that reach the group), e.g. [pam-approvers@example.com]"),
    validation = Rule::new("!has(self.requesterRoutes) || !has(self.sinks) || self.requesterRoutes.all(r, has(r.addressTemplate) || (has(r.addresses) && size(r.addresses) > 0) || !self.sinks.exists(s, s.name == r.sink && has(s.smtp)))").message("a requesterRoutes entry to an smtp sink needs addresses (username: address) or addressTemplate, e.g. '{user}@example.com'")
)]
pub struct Notifications {
    /// Named destinations: SMTP servers and HTTP webhooks.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("sinks[].name must be unique"))]
    pub sinks: Vec<Sink>,
    /// Which sinks tell an approver group about new requests and decisions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub approver_routes: Vec<ApproverRoute>,
    /// Which sinks tell requesters about decisions, revocation, expiry and a grant's end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub requester_routes: Vec<RequesterRoute>,
    /// How long before a grant ends its requester is told, e.g. `15m`; no such notice when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[hms])+$')").message("grantEndingNotice must be a number followed by s, m or h, e.g. 15m"))]
    pub grant_ending_notice: Option<String>,
}

/// One destination. Exactly one of `smtp` and `webhook` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.smtp) != has(self.webhook)").message("a sink sets exactly one of smtp and webhook"))]
pub struct Sink {
    /// The sink's name, used by routes and in status (lowercase letters, digits and '-').
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("sinks[].name must be lowercase letters, digits and '-', e.g. team-mail"))]
    pub name: String,
    /// Mail through an SMTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSink>,
    /// An HTTP POST of a JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSink>,
}

/// An SMTP server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.credentialsSecret) || (has(self.security) && self.security != 'None') || self.host in ['localhost', '127.0.0.1', '::1']").message("smtp.credentialsSecret needs security StartTLS or TLS: kubepam sends a password in clear only to a loopback relay"))]
pub struct SmtpSink {
    /// The server's host name, e.g. `smtp.example.com`.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("smtp.host must name the SMTP server, e.g. smtp.example.com"))]
    pub host: String,
    /// The server's port; 587 for `StartTLS`, 465 for `TLS`, 25 for `None` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// `StartTLS` (default), `TLS` (implicit TLS), or `None` (plain text; only for a relay on a
    /// trusted network).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The sender address, e.g. `kubepam@example.com`.
    #[schemars(length(max = 254))]
    #[x_kube(validation = Rule::new("self.matches('^[^@\\\\s]+@[^@\\\\s]+$')").message("smtp.from must be a mail address, e.g. kubepam@example.com"))]
    pub from: String,
    /// A Secret in kubepam's namespace with keys `username` and `password` for SMTP AUTH; no
    /// authentication when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub credentials_secret: Option<String>,
}

/// How the SMTP connection is protected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which the server must offer.
    #[default]
    StartTLS,
    /// TLS from the first byte (SMTPS).
    #[serde(rename = "TLS")]
    Tls,
    /// No encryption.
    None,
}

/// An HTTP endpoint that receives a POST per notification. Exactly one of `url` and
/// `urlSecret` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.url) != has(self.urlSecret)").message("a webhook sets exactly one of url and urlSecret (use urlSecret when the URL itself is a credential, as for Slack)"),
    validation = Rule::new("!has(self.tokenSecret) || !has(self.url) || self.url.startsWith('https://') || self.url.matches('^http://(localhost|127[.]0[.]0[.]1)([:/].*)?$')").message("webhook.tokenSecret needs an https:// url: kubepam sends a token in clear only to a loopback address")
)]
pub struct WebhookSink {
    /// The URL, e.g. `https://chat.example.com/hooks/pam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("webhook.url must start with https:// or http://"))]
    pub url: Option<String>,
    /// A key of a Secret in kubepam's namespace that holds the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<SecretKeyRef>,
    /// A key of a Secret in kubepam's namespace that holds a bearer token, sent as
    /// `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyRef>,
    /// `JSON` (default; kubepam's documented body) or `Slack` (`{"text": ...}`, for Slack and
    /// compatible incoming webhooks).
    #[serde(default)]
    pub format: PayloadFormat,
}

/// A key of a Secret in kubepam's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// The key within the Secret's data.
    #[schemars(length(max = 253))]
    pub key: String,
}

/// The body of a webhook notification.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PayloadFormat {
    /// kubepam's JSON body (see the README).
    #[default]
    #[serde(rename = "JSON")]
    Json,
    /// `{"text": "..."}`, as Slack's incoming webhooks take.
    Slack,
}

/// Tells an approver group through a sink.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproverRoute {
    /// The approver group (as a policy's `approverGroup` or the control's
    /// `defaultApproverGroup` names it).
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("approverRoutes[].group must name an approver group, e.g. pam-approvers"))]
    pub group: String,
    /// The sink's name.
    #[schemars(length(max = 63))]
    pub sink: String,
    /// Addresses that reach the group: required for an SMTP sink; passed on in a webhook's body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 254)))]
    #[x_kube(validation = Rule::new("self.all(a, a.matches('^[^@ ,:<>]+@[^@ ,:<>]+$'))").message("approverRoutes[].to must hold mail addresses, e.g. pam-approvers@example.com"))]
    pub to: Vec<String>,
}

/// Tells requesters through a sink.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequesterRoute {
    /// The sink's name.
    #[schemars(length(max = 63))]
    pub sink: String,
    /// Addresses by username, e.g. `alice: alice@example.com`; looked up before the template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 1024))]
    pub addresses: BTreeMap<String, String>,
    /// An address made from the username, e.g. `{user}@example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    #[x_kube(validation = Rule::new("self.contains('{user}')").message("addressTemplate must contain {user}, e.g. '{user}@example.com'"))]
    pub address_template: Option<String>,
}

/// What a notification is about.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NotificationEvent {
    /// A request waits for approval (to the approvers).
    Submitted,
    /// The request was approved.
    Approved,
    /// The request was denied.
    Denied,
    /// The grant was revoked early.
    Revoked,
    /// Nobody decided in time.
    Expired,
    /// The grant's window ended.
    Ended,
    /// The grant ends soon (to the requester).
    GrantEnding,
    /// The requester ended their own grant early (to the approvers and the requester).
    Released,
    /// A booked window opened and the grant is in force (to the requester).
    WindowOpened,
    /// Emergency access was taken under break glass and awaits review (to the approvers).
    Emergency,
    /// Nobody decided in time: an escalation group may now decide (to that group).
    Escalated,
    /// An emergency grant's review is overdue (to the approvers).
    ReviewOverdue,
}

impl NotificationEvent {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "Submitted",
            Self::Approved => "Approved",
            Self::Denied => "Denied",
            Self::Revoked => "Revoked",
            Self::Expired => "Expired",
            Self::Ended => "Ended",
            Self::GrantEnding => "GrantEnding",
            Self::Released => "Released",
            Self::WindowOpened => "WindowOpened",
            Self::Emergency => "Emergency",
            Self::Escalated => "Escalated",
            Self::ReviewOverdue => "ReviewOverdue",
        }
    }
}

/// Who a notification is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Audience {
    /// The request's approver group.
    Approvers,
    /// The requester.
    Requester,
}

/// Where a notification's delivery stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DeliveryState {
    /// Not delivered yet; retried with backoff.
    Pending,
    /// Accepted by the sink.
    Sent,
    /// Given up; `lastError` says why.
    Failed,
}

/// One notification owed for a request: the outbox entry. Recorded in the same write as the
/// transition it reports, so it is neither lost nor made twice by a restart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Unique within the request, e.g. `approved.requester.team-mail`; with the request id it
    /// identifies the message to receivers (a mail's Message-ID, a webhook's `id`).
    pub id: String,
    /// What it is about.
    pub event: NotificationEvent,
    /// Who it is for.
    pub audience: Audience,
    /// The approver group or the requester's username.
    pub recipient: String,
    /// The sink that carries it.
    pub sink: String,
    /// Mail addresses (for an SMTP sink, or passed on in a webhook's body).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Who caused the event: username(s) or `kubepam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The transition's sentence, e.g. the reviewer's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// `Pending`, `Sent` or `Failed`.
    pub state: DeliveryState,
    /// How many deliveries were tried.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub attempts: u32,
    /// When a Pending notification is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the sink accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// Why the last try failed (never a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
