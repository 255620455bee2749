//! The `kubepam` operator binary.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
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
    Run(RunArgs),
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
    /// Name of this replica, reported on Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "kubepam")]
    instance: String,
    /// Log format: json (default when not on a terminal) or text.
    #[arg(long, env = "KUBEPAM_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `kubepam=debug,kube=info`.
    #[arg(long, env = "KUBEPAM_LOG", default_value = "info")]
    log: String,
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
            print!("{}", kubepam::api::crds_yaml());
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    let client = client(&args).await?;
    let options = kubepam::controller::Options {
        instance: args.instance,
    };
    kubepam::controller::run(client, options, shutdown_signal()).await;
    Ok(())
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
