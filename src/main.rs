//! The `kubepam` operator binary.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kubepam::admission_server::tls;
use kubepam::leader::LeaderOptions;
use kubepam::runtime::WebhookOptions;
use kubepam_core::webhook_configuration::Endpoint;
use tracing_subscriber::EnvFilter;

/// Privileged access management for Kubernetes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator: reconcile PrivilegedAccessControl, AccessPolicy and
    /// ElevationRequest objects until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Print the `CustomResourceDefinitions` as YAML (what `crds/` holds).
    Crds,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Kubeconfig file; without it, KUBECONFIG, ~/.kube/config, then the
    /// in-cluster service account are tried, like kubectl.
    #[arg(long, env = "KUBEPAM_KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "KUBEPAM_CONTEXT")]
    context: Option<String>,
    /// Name of this replica (the pod name in a cluster): reported on Events
    /// and used as its identity on the leader Lease, so it must be unique
    /// among the replicas. Defaults to the host name and process id.
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Log format: json (default when not on a terminal) or text.
    #[arg(long, env = "KUBEPAM_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `kubepam=debug,kube=info`.
    #[arg(long, env = "KUBEPAM_LOG", default_value = "info")]
    log: String,
    /// Address of the plain-HTTP endpoints `/metrics` (Prometheus),
    /// `/healthz` and `/readyz` (ready once the caches are synced).
    #[arg(long, env = "KUBEPAM_METRICS_BIND", default_value = "0.0.0.0:8080")]
    metrics_bind: std::net::SocketAddr,
    /// kubepam's own namespace (the pod's namespace in a cluster): where the
    /// Secrets that notification sinks name are, and where no grant may reach.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubepam-system")]
    secret_namespace: String,
    /// The cluster's name, in every audit record's `source`
    /// (`kubepam.io/clusters/NAME`).
    #[arg(long, env = "KUBEPAM_CLUSTER_NAME", default_value = "kubernetes", value_parser = parse_cluster_name)]
    cluster_name: String,
    /// Where audit sinks of type `file` write (a volume a log shipper reads).
    #[arg(long, env = "KUBEPAM_AUDIT_DIR", default_value = "/var/log/kubepam")]
    audit_dir: std::path::PathBuf,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[command(flatten)]
    leader: LeaderArgs,
}

/// Leader election: every replica serves admission, only the holder of the
/// Lease reconciles.
#[derive(Debug, clap::Args)]
struct LeaderArgs {
    /// Reconcile without leader election. Only for a single replica: two
    /// replicas would both write.
    #[arg(long, env = "KUBEPAM_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Namespace of the Lease (the pod's namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubepam-system")]
    leader_namespace: String,
    /// Name of the Lease.
    #[arg(long, env = "KUBEPAM_LEADER_LEASE", default_value = "kubepam-leader")]
    leader_lease: String,
    /// How long the Lease lasts unrenewed: the longest the work waits after
    /// the leader crashes, e.g. `10s`.
    #[arg(long, env = "KUBEPAM_LEADER_LEASE_DURATION", default_value = "10s", value_parser = parse_seconds)]
    leader_lease_duration: std::time::Duration,
    /// How long before the Lease ends the leader renews it, e.g. `3s`;
    /// must be shorter than the Lease.
    #[arg(long, env = "KUBEPAM_LEADER_RENEW_GRACE", default_value = "3s", value_parser = parse_seconds)]
    leader_renew_grace: std::time::Duration,
}

impl LeaderArgs {
    fn options(&self, identity: &str) -> anyhow::Result<Option<LeaderOptions>> {
        if self.no_leader_election {
            return Ok(None);
        }
        if self.leader_renew_grace >= self.leader_lease_duration {
            anyhow::bail!(
                "--leader-renew-grace ({}s) must be shorter than --leader-lease-duration ({}s)",
                self.leader_renew_grace.as_secs(),
                self.leader_lease_duration.as_secs()
            );
        }
        Ok(Some(LeaderOptions {
            namespace: self.leader_namespace.clone(),
            lease: self.leader_lease.clone(),
            identity: identity.to_owned(),
            duration: self.leader_lease_duration,
            grace: self.leader_renew_grace,
        }))
    }
}

/// Whole seconds, as `10s`, `2m` or a bare `10`.
fn parse_seconds(raw: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("{raw:?} is not a duration in whole seconds, e.g. 10s or 1m");
    let (number, unit) = match raw.strip_suffix('s') {
        Some(number) => (number, 1),
        None => match raw.strip_suffix('m') {
            Some(number) => (number, 60),
            None => (raw, 1),
        },
    };
    let value: u64 = number.parse().map_err(|_| invalid())?;
    if value == 0 {
        return Err(format!("{raw:?} must be at least one second"));
    }
    value
        .checked_mul(unit)
        .map(std::time::Duration::from_secs)
        .ok_or_else(invalid)
}

/// The admission webhooks (identity checks on requests and reviews, the
/// policy limit, and the guard on privileged tasks).
#[derive(Debug, clap::Args)]
struct WebhookArgs {
    /// Run without admission webhooks. Nothing then checks who asked or who
    /// decided, and privileged tasks are not gated: for trying things out only.
    #[arg(long, env = "KUBEPAM_NO_WEBHOOKS")]
    no_webhooks: bool,
    /// Address the HTTPS admission server listens on.
    #[arg(long, env = "KUBEPAM_WEBHOOK_BIND", default_value = "0.0.0.0:8443")]
    webhook_bind: std::net::SocketAddr,
    /// URL the API server uses to reach the webhooks (e.g.
    /// `https://127.0.0.1:8443` for a local API server). Without it, the
    /// Service given by --webhook-service is used.
    #[arg(long, env = "KUBEPAM_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The webhook Service as NAMESPACE/NAME:PORT.
    #[arg(
        long,
        env = "KUBEPAM_WEBHOOK_SERVICE",
        default_value = "kubepam-system/kubepam:443"
    )]
    webhook_service: String,
    /// Serving certificate (PEM), e.g. from cert-manager; reloaded when it
    /// changes. Without it, kubepam makes a CA and certificate at start.
    #[arg(long, env = "KUBEPAM_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<std::path::PathBuf>,
    /// Private key of --tls-cert-file (PEM).
    #[arg(long, env = "KUBEPAM_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<std::path::PathBuf>,
    /// CA bundle (PEM) the API server must trust for --tls-cert-file, e.g. the
    /// `ca.crt` of cert-manager's Secret; written as the webhooks' caBundle and
    /// followed when it changes. Without it the webhook configurations carry
    /// no caBundle and the API server trusts only its system roots. kubepam
    /// keeps its webhook configurations exactly as it writes them, so a CA
    /// injector's caBundle is undone: give the CA here instead.
    #[arg(long, env = "KUBEPAM_TLS_CA_FILE")]
    tls_ca_file: Option<std::path::PathBuf>,
    /// Secret (NAMESPACE/NAME) that keeps the certificate kubepam generates,
    /// so replicas and restarts share it; empty to keep it in memory only.
    #[arg(
        long,
        env = "KUBEPAM_TLS_SECRET",
        default_value = "kubepam-system/kubepam-webhook-tls"
    )]
    tls_secret: Option<String>,
    /// Do not register the webhook configurations (they are installed by
    /// other means).
    #[arg(long, env = "KUBEPAM_NO_REGISTER_WEBHOOKS")]
    no_register_webhooks: bool,
    /// CA (PEM) of the client certificate the API server presents to
    /// webhooks (the `kubeConfigFile` of its admission configuration): every caller
    /// must then present a certificate it signed. Use a CA that signs nothing
    /// else. Without it anyone who reaches the port may call the webhooks, and
    /// the uses they report are recorded as unverified.
    #[arg(long, env = "KUBEPAM_WEBHOOK_CLIENT_CA_FILE")]
    webhook_client_ca_file: Option<std::path::PathBuf>,
}

impl WebhookArgs {
    fn options(&self) -> anyhow::Result<Option<WebhookOptions>> {
        if self.no_webhooks {
            return Ok(None);
        }
        let service = parse_service(&self.webhook_service)?;
        let endpoint = Endpoint {
            url: self.webhook_url.clone(),
            service,
            ca_bundle: None,
        };
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => tls::Source::Files {
                cert: cert.clone(),
                key: key.clone(),
                ca: self.tls_ca_file.clone(),
            },
            _ => tls::Source::Generated {
                names: kubepam_core::webhook_configuration::certificate_names(&endpoint),
                secret: match &self.tls_secret {
                    Some(raw) if !raw.is_empty() => Some(parse_secret(raw)?),
                    _ => None,
                },
            },
        };
        let client_auth = match &self.webhook_client_ca_file {
            Some(path) => tls::ClientAuth::from_ca_file(path)?,
            None => tls::ClientAuth::default(),
        };
        Ok(Some(WebhookOptions {
            bind: self.webhook_bind,
            endpoint,
            tls,
            register: !self.no_register_webhooks,
            client_auth,
        }))
    }
}

/// A cluster name fit for a URI path segment: letters, digits, `.`, `_`, `-`,
/// at most 63, beginning and ending with a letter or digit. A `/`, `?` or a
/// newline would change what every audit record's `source` says.
fn parse_cluster_name(raw: &str) -> Result<String, String> {
    let edges_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let fits = raw.len() <= 63
        && edges_ok(raw.chars().next())
        && edges_ok(raw.chars().last())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fits {
        Ok(raw.to_owned())
    } else {
        Err("a cluster name is letters, digits, '.', '_' and '-', at most 63, beginning and ending with a letter or digit, e.g. prod-eu-1".to_owned())
    }
}

/// `NAMESPACE/NAME`.
fn parse_secret(raw: &str) -> anyhow::Result<(String, String)> {
    match raw.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => anyhow::bail!(
            "--tls-secret {raw:?} must look like NAMESPACE/NAME, e.g. kubepam-system/kubepam-webhook-tls"
        ),
    }
}

/// `NAMESPACE/NAME:PORT`.
fn parse_service(raw: &str) -> anyhow::Result<(String, String, i32)> {
    let invalid = || {
        anyhow::anyhow!(
            "--webhook-service {raw:?} must look like NAMESPACE/NAME:PORT, e.g. kubepam-system/kubepam:443"
        )
    };
    let (namespace, rest) = raw.split_once('/').ok_or_else(invalid)?;
    let (name, port) = rest.split_once(':').ok_or_else(invalid)?;
    let port: i32 = port.parse().map_err(|_| invalid())?;
    if namespace.is_empty() || name.is_empty() {
        return Err(invalid());
    }
    Ok((namespace.to_owned(), name.to_owned(), port))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", kubepam_core::api::crds_yaml());
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    // One TLS implementation for the whole process (kube's client and the
    // webhook server); an error only means one was installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client(&args).await?;
    let instance = args.instance.clone().unwrap_or_else(default_instance);
    let options = kubepam::runtime::Options {
        leader: args.leader.options(&instance)?,
        instance,
        webhook: args.webhook.options()?,
        metrics_bind: Some(args.metrics_bind),
        namespace: args.secret_namespace.clone(),
        sender: kubepam::delivery::Sender::new(client.clone(), args.secret_namespace.clone())
            .context("cannot start the HTTP client of notification webhooks")?,
        cluster_name: args.cluster_name.clone(),
        audit_dir: args.audit_dir.clone(),
    };
    kubepam::runtime::run(client, options, shutdown_signal()).await?;
    Ok(())
}

/// `HOST-PID`: unique among processes on one machine and across machines.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kubepam".to_owned());
    format!("{host}-{}", std::process::id())
}

fn init_logging(args: &RunArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log)
        .with_context(|| format!("invalid --log filter {:?}", args.log))?;
    let format = args
        .log_format
        .unwrap_or(if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

async fn client(args: &RunArgs) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_name_is_one_plain_uri_segment() {
        for good in ["kubernetes", "prod-eu-1", "a", "k8s.example_2"] {
            assert_eq!(parse_cluster_name(good).as_deref(), Ok(good));
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "-a",
            "a-",
            "a/b",
            "a?x=1",
            "a\nb",
            "a b",
            "ä",
            long.as_str(),
        ] {
            assert!(parse_cluster_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lease_durations_are_whole_seconds_or_minutes() {
        assert_eq!(parse_seconds("10s"), Ok(std::time::Duration::from_secs(10)));
        assert_eq!(parse_seconds("2m"), Ok(std::time::Duration::from_secs(120)));
        assert_eq!(parse_seconds("15"), Ok(std::time::Duration::from_secs(15)));
        for bad in [
            "",
            "0s",
            "1h",
            "-3s",
            "1.5s",
            "s",
            "99999999999999999999s",
            "18446744073709551615m",
        ] {
            let error = parse_seconds(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }

    #[test]
    fn the_renew_grace_must_be_shorter_than_the_lease() {
        let cli = Cli::try_parse_from([
            "kubepam",
            "run",
            "--leader-lease-duration",
            "5s",
            "--leader-renew-grace",
            "5s",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        let error = args.leader.options("me").unwrap_err().to_string();
        assert!(error.contains("--leader-renew-grace"), "{error}");
        let cli = Cli::try_parse_from(["kubepam", "run", "--no-leader-election"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert!(args.leader.options("me").unwrap().is_none());
    }
}
