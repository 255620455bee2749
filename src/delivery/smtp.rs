//! Mail through an SMTP server, with lettre.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Error, Sender, chain};
use kubepam_core::api::{Notification, SmtpSecurity, SmtpSink};
use kubepam_core::notify::render::Message;

pub(super) async fn send(
    sender: &Sender,
    sink_name: &str,
    smtp: &SmtpSink,
    entry: &Notification,
    message: &Message,
) -> Result<(), Error> {
    let config = |reason: String| Error::Config {
        sink: sink_name.to_owned(),
        reason,
    };
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| config(format!("from {:?} is not a mail address: {e}", smtp.from)))?;
    let mut to = Mailboxes::new();
    for address in &entry.to {
        let mailbox: Mailbox = address
            .parse()
            .map_err(|e| config(format!("{address:?} is not a mail address: {e}")))?;
        to.push(mailbox);
    }
    if to.iter().next().is_none() {
        return Err(config("the notification names no mail address".to_owned()));
    }
    // The same Message-ID on every try, so a receiver can drop a repeat.
    let message_id = format!("<{}@kubepam.io>", message.id.replace('/', "."));
    let mail = lettre::Message::builder()
        .from(from)
        .mailbox(lettre::message::header::To::from(to))
        .subject(message.subject.clone())
        .message_id(Some(message_id))
        .header(ContentType::TEXT_PLAIN)
        .body(message.text.clone())
        .map_err(|e| config(format!("cannot build the mail: {e}")))?;

    let server = format!("{}:{}", smtp.host, port(smtp));
    let smtp_error = |e: &dyn std::error::Error| Error::Smtp {
        server: server.clone(),
        reason: chain(e),
    };
    let builder = match smtp.security {
        SmtpSecurity::StartTLS => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
            .map_err(|e| smtp_error(&e))?,
        SmtpSecurity::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(|e| smtp_error(&e))?
        }
        SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    let mut builder = builder.port(port(smtp)).timeout(Some(super::SEND_TIMEOUT));
    if let Some(secret) = &smtp.credentials_secret {
        if smtp.security == SmtpSecurity::None && !super::is_loopback(&smtp.host) {
            return Err(config(
                "credentialsSecret needs security StartTLS or TLS: kubepam sends a password in clear only to a loopback relay".to_owned(),
            ));
        }
        let login = sender
            .secret_values(secret, &["username", "password"])
            .await?;
        builder = builder.credentials(Credentials::new(
            login[0].expose().to_owned(),
            login[1].expose().to_owned(),
        ));
    }
    builder
        .build()
        .send(mail)
        .await
        .map(drop)
        .map_err(|e| smtp_error(&e))
}

/// The configured port, else the usual one for the security.
fn port(smtp: &SmtpSink) -> u16 {
    smtp.port.unwrap_or(match smtp.security {
        SmtpSecurity::StartTLS => 587,
        SmtpSecurity::Tls => 465,
        SmtpSecurity::None => 25,
    })
}
