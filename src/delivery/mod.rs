//! The notification transports (SMTP and HTTP webhooks) and the audit export transports
//! ([`audit`]), with credentials read from Secrets in kubepam's namespace at send time. Error texts name what failed and never carry a credential
//! or a webhook URL (which can itself be one).

pub mod audit;
mod http;
mod smtp;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde_json::Value;

use kubepam_core::api::{Notification, SecretKeyRef, Sink};
use kubepam_core::notify::render::Message;

/// The label a Secret needs before kubepam sends any of it: without it, whoever edits the
/// control could have kubepam send another Secret of its namespace to a server of theirs.
pub const SECRET_LABEL: &str = "kubepam.io/notifications";

/// How long one try may take before it counts as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a try failed. Every text is safe to log and to record in status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read Secret {namespace}/{name}: {reason}")]
    Secret {
        namespace: String,
        name: String,
        reason: String,
        /// The Secret exists but is not labelled for notifications.
        unlabelled: bool,
    },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("sink {sink:?}: {reason}")]
    Config { sink: String, reason: String },
    #[error("SMTP {server}: {reason}")]
    Smtp { server: String, reason: String },
    #[error("webhook: {reason}")]
    Webhook { reason: String },
    #[error("timed out after {}s", SEND_TIMEOUT.as_secs())]
    Timeout,
    #[error("file: {reason}")]
    File { reason: String },
}

impl Error {
    /// Whether the settings are wrong (a Secret not labelled or without the key, an address
    /// that does not parse, a credential that would go in clear): trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::SecretKey { .. } | Error::Config { .. } => true,
            Error::Secret { unlabelled, .. } => *unlabelled,
            Error::Smtp { .. } | Error::Webhook { .. } | Error::Timeout | Error::File { .. } => {
                false
            }
        }
    }
}

/// Sends notifications; one per replica, shared by every delivery.
#[derive(Clone)]
pub struct Sender {
    client: Client,
    namespace: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender that reads Secrets in `namespace` with `client`.
    ///
    /// # Errors
    /// When the HTTP client cannot be made (its TLS backend fails to start).
    pub fn new(client: Client, namespace: String) -> Result<Self, reqwest::Error> {
        // No redirects: a 3xx would turn the POST into a GET elsewhere and
        // count as delivered.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(SEND_TIMEOUT)
            .user_agent(concat!("kubepam/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            namespace,
            http,
        })
    }

    /// The namespace credentials are read from.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// One try to deliver `message` for `entry` through `sink`; `body` is the webhook body.
    pub async fn send(
        &self,
        sink: &Sink,
        entry: &Notification,
        message: &Message,
        body: &Value,
    ) -> Result<(), Error> {
        let attempt = async {
            match (&sink.smtp, &sink.webhook) {
                (Some(smtp), _) => smtp::send(self, &sink.name, smtp, entry, message).await,
                (None, Some(hook)) => http::send(self, &sink.name, hook, message, body).await,
                (None, None) => Err(Error::Config {
                    sink: sink.name.clone(),
                    reason: "sets neither smtp nor webhook".to_owned(),
                }),
            }
        };
        tokio::time::timeout(SEND_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// The value of `key` in the Secret `name`, as text.
    async fn secret(&self, name: &str, key: &str) -> Result<Credential, Error> {
        let mut values = self.secret_values(name, &[key]).await?;
        Ok(values.remove(0))
    }

    /// The values of `keys` in the Secret `name` (one read), in their order.
    async fn secret_values(&self, name: &str, keys: &[&str]) -> Result<Vec<Credential>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = api.get(name).await.map_err(|error| Error::Secret {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            reason: match error {
                kube::Error::Api(status) => status.message,
                other => other.to_string(),
            },
            unlabelled: false,
        })?;
        let labelled = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SECRET_LABEL))
            .is_some_and(|value| value == "true");
        if !labelled {
            return Err(Error::Secret {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                reason: format!(
                    "it is not labelled {SECRET_LABEL}=true; kubepam sends only Secrets labelled for notifications"
                ),
                unlabelled: true,
            });
        }
        keys.iter()
            .map(|key| {
                secret
                    .data
                    .as_ref()
                    .and_then(|data| data.get(*key))
                    .map(|bytes| String::from_utf8_lossy(&bytes.0).trim_end().to_owned())
                    .map(Credential)
                    .ok_or_else(|| Error::SecretKey {
                        namespace: self.namespace.clone(),
                        name: name.to_owned(),
                        key: (*key).to_owned(),
                    })
            })
            .collect()
    }
}

impl Sender {
    /// A webhook's URL: given, or read from its Secret.
    async fn webhook_url(
        &self,
        url: Option<&String>,
        secret: Option<&SecretKeyRef>,
    ) -> Result<String, Error> {
        match (url, secret) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(secret)) => Ok(self
                .secret(&secret.name, &secret.key)
                .await?
                .expose()
                .to_owned()),
            (None, None) => Err(Error::Webhook {
                reason: "sets neither url nor urlSecret".to_owned(),
            }),
        }
    }

    /// `request` with the bearer token of `secret`, if any: only over https, or to loopback.
    async fn with_token(
        &self,
        request: reqwest::RequestBuilder,
        sink: &str,
        url: &str,
        secret: Option<&SecretKeyRef>,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let Some(secret) = secret else {
            return Ok(request);
        };
        let clear = reqwest::Url::parse(url).map_or(true, |parsed| {
            parsed.scheme() != "https" && !parsed.host_str().is_some_and(is_loopback)
        });
        if clear {
            return Err(Error::Config {
                sink: sink.to_owned(),
                reason: "tokenSecret needs an https:// URL: kubepam sends a token in clear only to a loopback address".to_owned(),
            });
        }
        let token = self.secret(&secret.name, &secret.key).await?;
        Ok(request.bearer_auth(token.expose()))
    }
}

/// A credential read from a Secret; its `Debug` never shows it.
struct Credential(String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Credential {
    fn expose(&self) -> &str {
        &self.0
    }
}

/// Whether `host` is this machine (in a cluster: the pod, e.g. a relay beside kubepam), the
/// only place a credential may be sent without TLS.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error's whole chain of causes in one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
