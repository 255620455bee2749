//! What a notification says: a subject and a text for people, and the JSON bodies of webhooks.

use serde_json::{Value, json};

use crate::api::{Audience, ElevationRequest, Notification, NotificationEvent, PayloadFormat};

/// A notification ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique per request and entry; the same for every try, so a receiver can drop repeats.
    pub id: String,
    /// One line.
    pub subject: String,
    /// Plain text, lines separated by `\n`.
    pub text: String,
}

/// Renders an outbox entry of `request`. `default_duration` is the control's grant duration,
/// shown when the request sets none.
pub fn message(
    request: &ElevationRequest,
    entry: &Notification,
    default_duration: &str,
) -> Message {
    let name = request.metadata.name.clone().unwrap_or_default();
    let facts = Facts::of(request, default_duration);
    let subject = subject(&name, &facts, entry);
    let mut lines = vec![opening(&name, &facts, entry), String::new()];
    for (label, value) in facts.table(&name, entry.event) {
        lines.push(format!("{label:<12} {value}"));
    }
    let note = entry.message.as_deref().filter(|m| !m.is_empty());
    if let Some(note) = note.filter(|_| entry.event != NotificationEvent::Submitted) {
        lines.push(format!("{:<12} {note}", "Note:"));
    }
    if entry.event == NotificationEvent::Submitted {
        let commands = commands(&name);
        lines.extend([
            String::new(),
            "To approve:".to_owned(),
            format!("  {}", commands.approve),
            format!("  {}", commands.approve_patch),
            "To deny:".to_owned(),
            format!("  {}", commands.deny),
            format!("  {}", commands.deny_patch),
        ]);
    } else if entry.audience == Audience::Approvers {
        lines.push(String::new());
        lines.push("Nothing is left to decide on this request.".to_owned());
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Message {
        id: message_id(request, entry),
        subject,
        text,
    }
}

/// The body a webhook sink posts.
pub fn webhook_body(
    request: &ElevationRequest,
    entry: &Notification,
    message: &Message,
    format: PayloadFormat,
    default_duration: &str,
) -> Value {
    match format {
        PayloadFormat::Slack => {
            json!({ "text": slack_escape(&format!("*{}*\n{}", message.subject, message.text)) })
        }
        PayloadFormat::Json => {
            let name = request.metadata.name.clone().unwrap_or_default();
            let facts = Facts::of(request, default_duration);
            let status = request.status.as_ref();
            let mut body = json!({
                "apiVersion": "kubepam.io/v1alpha1",
                "kind": "Notification",
                "id": message.id,
                "event": entry.event,
                "audience": entry.audience,
                "recipient": entry.recipient,
                "to": entry.to,
                "time": entry.created_at,
                "actor": entry.actor,
                "message": entry.message,
                "subject": message.subject,
                "text": message.text,
                "request": {
                    "name": name,
                    "requestId": status.and_then(|s| s.request_id.clone()),
                    "requester": facts.requester,
                    "policy": request.spec.policy,
                    "namespace": request.spec.namespace,
                    "duration": facts.duration,
                    "reason": request.spec.reason,
                    "phase": status.and_then(|s| s.phase),
                    "approverGroup": status.and_then(|s| s.approver_group.clone()),
                    "expiresAt": status.and_then(|s| s.expires_at),
                    "grantedUntil": status.and_then(|s| s.granted_until),
                    "decidedBy": status.map(|s| s.decided_by.clone()).unwrap_or_default(),
                },
            });
            if entry.event == NotificationEvent::Submitted {
                let commands = commands(&name);
                body["commands"] = json!({
                    "approve": commands.approve,
                    "approvePatch": commands.approve_patch,
                    "deny": commands.deny,
                    "denyPatch": commands.deny_patch,
                });
            }
            body
        }
    }
}

/// Slack's control characters: a reason such as `<!channel>` or `<https://x|Approve>` must
/// stay text, not ping a channel or make a link.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<request id>/<entry id>`: stable across tries and restarts.
pub fn message_id(request: &ElevationRequest, entry: &Notification) -> String {
    let request_id = request
        .status
        .as_ref()
        .and_then(|s| s.request_id.clone())
        .or_else(|| request.metadata.uid.clone())
        .unwrap_or_else(|| request.metadata.name.clone().unwrap_or_default());
    format!("{request_id}/{}", entry.id)
}

/// The exact lines an approver runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    pub approve: String,
    pub approve_patch: String,
    pub deny: String,
    pub deny_patch: String,
}

/// The plugin's commands and the `kubectl patch` equivalents, which write the review under the
/// approver's own username (admission refuses any other).
pub fn commands(name: &str) -> Commands {
    let patch = |decision: &str| {
        format!(
            "kubectl patch elevationrequest {name} --type=merge -p \"{{\\\"spec\\\":{{\\\"reviews\\\":{{\\\"$(kubectl auth whoami -o jsonpath='{{.status.userInfo.username}}')\\\":{{\\\"decision\\\":\\\"{decision}\\\"}}}}}}}}\""
        )
    };
    Commands {
        approve: format!("kubectl pam approve {name}"),
        approve_patch: patch("Approve"),
        deny: format!("kubectl pam deny {name} -m \"<why>\""),
        deny_patch: patch("Deny"),
    }
}

struct Facts {
    requester: String,
    policy: String,
    scope: String,
    duration: String,
    reason: String,
    expires_at: Option<String>,
    granted_until: Option<String>,
}

impl Facts {
    fn of(request: &ElevationRequest, default_duration: &str) -> Self {
        let status = request.status.as_ref();
        Self {
            requester: request
                .spec
                .requester
                .clone()
                .unwrap_or_else(|| "(unknown)".to_owned()),
            scope: request.spec.namespace.as_ref().map_or_else(
                || "cluster-wide (as far as the policy allows)".to_owned(),
                |ns| format!("namespace {ns}"),
            ),
            policy: request.spec.policy.clone(),
            duration: request
                .spec
                .duration
                .clone()
                .unwrap_or_else(|| default_duration.to_owned()),
            reason: request.spec.reason.clone(),
            expires_at: status
                .and_then(|s| s.expires_at)
                .map(crate::util::time_for_people),
            granted_until: status
                .and_then(|s| s.granted_until)
                .map(crate::util::time_for_people),
        }
    }

    fn table(&self, name: &str, event: NotificationEvent) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("Request:", name.to_owned()),
            ("Requester:", self.requester.clone()),
            ("Policy:", self.policy.clone()),
            ("Scope:", self.scope.clone()),
            ("Duration:", self.duration.clone()),
            ("Reason:", self.reason.clone()),
        ];
        match event {
            NotificationEvent::Submitted
            | NotificationEvent::Expired
            | NotificationEvent::Escalated => {
                if let Some(at) = &self.expires_at {
                    rows.push(("Expires:", format!("{at} if nobody decides")));
                }
            }
            NotificationEvent::Approved
            | NotificationEvent::GrantEnding
            | NotificationEvent::WindowOpened
            | NotificationEvent::Emergency => {
                if let Some(until) = &self.granted_until {
                    rows.push(("Until:", until.clone()));
                }
            }
            NotificationEvent::Denied
            | NotificationEvent::Revoked
            | NotificationEvent::Ended
            | NotificationEvent::Released
            | NotificationEvent::ReviewOverdue => {}
        }
        rows
    }
}

fn subject(name: &str, facts: &Facts, entry: &Notification) -> String {
    let who = &facts.requester;
    match entry.event {
        NotificationEvent::Submitted => format!(
            "[kubepam] {who} requests access ({name}) for {}: approval needed",
            facts.duration
        ),
        NotificationEvent::Approved => format!("[kubepam] {name} approved: access for {who}"),
        NotificationEvent::Denied => format!("[kubepam] {name} denied: no access for {who}"),
        NotificationEvent::Revoked => format!("[kubepam] {name} revoked: access of {who} ended"),
        NotificationEvent::Expired => {
            format!("[kubepam] {name} expired: nobody decided in time")
        }
        NotificationEvent::Ended => format!("[kubepam] {name} ended: access of {who} is over"),
        NotificationEvent::GrantEnding => format!("[kubepam] {name}: access of {who} ends soon"),
        NotificationEvent::Released => {
            format!("[kubepam] {name} released: {who} ended their access early")
        }
        NotificationEvent::WindowOpened => {
            format!("[kubepam] {name}: the booked access of {who} is open")
        }
        NotificationEvent::Emergency => {
            format!("[kubepam] EMERGENCY access by {who} ({name}): review needed")
        }
        NotificationEvent::Escalated => {
            format!("[kubepam] {who} has waited for approval ({name}): your group may now decide")
        }
        NotificationEvent::ReviewOverdue => {
            format!("[kubepam] {name}: the review of emergency access by {who} is overdue")
        }
    }
}

fn opening(name: &str, facts: &Facts, entry: &Notification) -> String {
    let who = &facts.requester;
    let by = entry.actor.as_deref().unwrap_or("kubepam");
    match entry.event {
        NotificationEvent::Submitted => {
            format!("{who} asks for privileged access and waits for an approver in your group.")
        }
        NotificationEvent::Approved => format!("The request of {who} was approved by {by}."),
        NotificationEvent::Denied => format!("The request of {who} was denied by {by}."),
        NotificationEvent::Revoked => format!("The access of {who} was revoked by {by}."),
        NotificationEvent::Expired => {
            format!("The request of {who} expired: nobody decided before its deadline.")
        }
        NotificationEvent::Ended => format!("The access of {who} has ended."),
        NotificationEvent::GrantEnding => format!("The access of {who} ends soon."),
        NotificationEvent::Released => format!("{who} ended their own access early."),
        NotificationEvent::WindowOpened => format!("The booked access of {who} is now open."),
        NotificationEvent::Emergency => format!(
            "{who} took emergency access under break glass, without an approver. Review it: \
             kubectl pam confirm {name} -m COMMENT, or kubectl pam reject {name} -m COMMENT."
        ),
        NotificationEvent::Escalated => format!(
            "{who} asks for privileged access and nobody has decided yet; your group may now \
             decide too."
        ),
        NotificationEvent::ReviewOverdue => format!(
            "The emergency access {who} took is still not reviewed. Review it: \
             kubectl pam confirm {name} -m COMMENT, or kubectl pam reject {name} -m COMMENT."
        ),
    }
}
