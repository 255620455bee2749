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
    let url = match (&hook.url, &hook.url_secret) {
        (Some(url), _) => url.clone(),
        (None, Some(secret)) => sender
            .secret(&secret.name, &secret.key)
            .await?
            .expose()
            .to_owned(),
        (None, None) => {
            return Err(Error::Webhook {
                reason: "sets neither url nor urlSecret".to_owned(),
            });
        }
    };
    let mut request = sender
        .http
        .post(&url)
        .header(ID_HEADER, &message.id)
        .json(body);
    if let Some(secret) = &hook.token_secret {
        let clear = reqwest::Url::parse(&url).map_or(true, |parsed| {
            parsed.scheme() != "https" && !parsed.host_str().is_some_and(super::is_loopback)
        });
        if clear {
            return Err(Error::Config {
                sink: sink.to_owned(),
                reason: "tokenSecret needs an https:// URL: kubepam sends a token in clear only to a loopback address".to_owned(),
            });
        }
        let token = sender.secret(&secret.name, &secret.key).await?;
        request = request.bearer_auth(token.expose());
    }
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
