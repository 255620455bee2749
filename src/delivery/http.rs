//! An HTTP POST of the notification's JSON body.

use serde_json::Value;

use super::{Error, Sender, chain};
use kubepam_core::api::WebhookSink;
use kubepam_core::notify::render::Message;

/// The header that carries the message id (the same on every try).
pub const ID_HEADER: &str = "X-Kubepam-Notification-Id";

pub(super) async fn send(
    sender: &Sender,
    sink: &str,
    hook: &WebhookSink,
    message: &Message,
    body: &Value,
) -> Result<(), Error> {
    let url = sender
        .webhook_url(hook.url.as_ref(), hook.url_secret.as_ref())
        .await?;
    let request = sender
        .http
        .post(&url)
        .header(ID_HEADER, &message.id)
        .json(body);
    let request = sender
        .with_token(request, sink, &url, hook.token_secret.as_ref())
        .await?;
    // Without the URL: it can be a credential (Slack's incoming webhooks).
    let response = request.send().await.map_err(|e| Error::Webhook {
        reason: chain(&e.without_url()),
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(Error::Webhook {
            reason: format!("the receiver answered {status}; redirects are not followed"),
        })
    } else {
        Err(Error::Webhook {
            reason: format!("the receiver answered {status}"),
        })
    }
}
