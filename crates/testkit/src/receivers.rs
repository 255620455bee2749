//! The receiving ends: a real SMTP server (aiosmtpd, run by `smtp_sink.py`) and an HTTP
//! receiver that records each POST.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;
use serde_json::Value;

use crate::cluster::{free_port, repo_root};

/// One mail as the SMTP server accepted it.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub rcpt_tos: Vec<String>,
    pub auth_user: Option<String>,
    /// Whether the mail came over TLS.
    pub encrypted: bool,
    pub from: String,
    pub subject: String,
    pub message_id: String,
    pub body: String,
}

/// aiosmtpd on a free loopback port, stopped when dropped.
pub struct SmtpServer {
    child: Child,
    out: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts the server; with `login`, it requires SMTP AUTH with exactly those credentials.
    pub fn start(login: Option<(&str, &str)>) -> Self {
        Self::start_with(login, None)
    }

    /// As [`Self::start`], speaking TLS with `tls`: (`starttls` or `implicit`, cert file,
    /// key file).
    pub fn start_with(
        login: Option<(&str, &str)>,
        tls: Option<(&str, &std::path::Path, &std::path::Path)>,
    ) -> Self {
        let python = repo_root().join("target/testtools/bin/python3");
        assert!(
            python.exists(),
            "{} is missing: run `make testtools` (make test does) to install the test SMTP server",
            python.display()
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let out = dir.path().join("mail.jsonl");
        let port = free_port();
        let mut command = Command::new(python);
        command
            .arg(repo_root().join("crates/testkit/smtp_sink.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--out")
            .arg(&out);
        if let Some((user, password)) = login {
            command.args(["--user", user, "--password", password]);
        }
        if let Some((mode, cert, key)) = tls {
            command.args(["--tls", mode]);
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the SMTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("reading the SMTP server's first line");
        assert!(line.starts_with("ready"), "the SMTP server said {line:?}");
        Self {
            child,
            out,
            port,
            _dir: dir,
        }
    }

    /// Every mail accepted so far.
    pub fn messages(&self) -> Vec<Mail> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a mail record"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One POST as the receiver answered it.
#[derive(Debug, Clone)]
pub struct Call {
    pub authorization: Option<String>,
    pub id_header: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
    /// When it arrived (before the answer's delay).
    pub received_at: std::time::SystemTime,
}

#[derive(Clone)]
struct Receiver {
    calls: Arc<Mutex<Vec<Call>>>,
    delay: Duration,
}

/// An HTTP server on a loopback port that answers every POST with 200 after `delay`, and
/// stops listening when dropped.
pub struct HookReceiver {
    calls: Arc<Mutex<Vec<Call>>>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl HookReceiver {
    pub async fn start(port: u16, delay: Duration) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let state = Receiver {
            calls: calls.clone(),
            delay,
        };
        let app = axum::Router::new()
            .route("/{*path}", post(record))
            .route("/", post(record))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("binding the receiver's port");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { calls, port, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Every call answered so far.
    pub fn received(&self) -> Vec<Call> {
        self.calls.lock().expect("the calls").clone()
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let received_at = std::time::SystemTime::now();
    tokio::time::sleep(receiver.delay).await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let call = Call {
        authorization: header("authorization"),
        id_header: header("x-kubepam-notification-id"),
        content_type: header("content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        received_at,
    };
    receiver.calls.lock().expect("the calls").push(call);
    StatusCode::OK
}
