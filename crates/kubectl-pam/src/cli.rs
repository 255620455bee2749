//! The command line: kubectl's connection flags, and one command per seed cmdlet.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::render::Output;
use kubepam_core::api::{ApprovalType, Phase, ReviewDecision};

/// Privileged access management from kubectl: enable it, write policies, ask for a task,
/// approve, deny or revoke, and see what you may do.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-pam",
    bin_name = "kubectl pam",
    version,
    after_help = "Examples:
  # Turn privileged access on; members of pam-approvers decide
  kubectl pam enable --approver-group pam-approvers
  # Deleting Deployments in prod needs a manual approval
  kubectl pam policy create prod-delete-deployments --task 'delete deployments.apps' -n prod --approval Manual
  # Ask for it, and wait for the decision
  kubectl pam request prod-delete-deployments --reason 'INC-1234: stuck canary' --duration 30m --wait
  # As an approver: what waits for me, and approve it
  kubectl pam list --to-review
  kubectl pam approve prod-delete-deployments-x7k2p -m 'ok'"
)]
pub struct Cli {
    /// How to reach the cluster, as kubectl's own flags.
    #[command(flatten)]
    pub connection: Connection,
    /// Output format: json, yaml, wide or name (tables by default).
    #[arg(short, long, value_enum, global = true)]
    pub output: Option<Output>,
    /// The namespace: the scope of a policy (repeat it for several), the namespace of a request,
    /// or the namespace `can-i` asks about.
    #[arg(short, long = "namespace", global = true, value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's flags for choosing the cluster and the identity.
#[derive(Debug, Clone, Default, Args)]
pub struct Connection {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Act as this user (impersonation).
    #[arg(long = "as", global = true, value_name = "USERNAME")]
    pub as_user: Option<String>,
    /// Act with this group (impersonation); repeat for several.
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_groups: Vec<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn privileged access management on (Enable-ElevatedAccessControl).
    #[command(after_help = "Examples:
  kubectl pam enable --approver-group pam-approvers --system-account system:serviceaccount:ci:deployer
  # re-enable with the settings kept from before
  kubectl pam enable")]
    Enable(Enable),
    /// Turn it off; policies, requests and history are kept (Disable-ElevatedAccessControl).
    #[command(after_help = "Examples:
  kubectl pam disable")]
    Disable,
    /// Create, list and delete AccessPolicies.
    #[command(
        subcommand,
        after_help = "Examples:
  kubectl pam policy create prod-delete-deployments --task 'delete deployments.apps' -n prod --approval Manual
  kubectl pam policy list
  kubectl pam policy delete prod-delete-deployments"
    )]
    Policy(PolicyCommand),
    /// Ask for a policy's rights, for a reason and a time (New-ElevatedAccessRequest).
    #[command(after_help = "Examples:
  kubectl pam request prod-delete-deployments --reason 'INC-1234: stuck canary' --duration 30m
  # follow it until someone decides, and exit non-zero unless it is approved
  kubectl pam request prod-delete-deployments -n prod --reason 'INC-1234' --wait --timeout 1h")]
    Request(Request),
    /// Show one request (Get-ElevatedAccessRequest).
    #[command(after_help = "Examples:
  kubectl pam status prod-delete-deployments-x7k2p
  kubectl pam status 0b7c8e2a-1f9e-4c57-9f6c-8a1d2b3c4d5e -o json")]
    Status(Target),
    /// List requests, newest last.
    #[command(after_help = "Examples:
  kubectl pam list
  kubectl pam list --status Pending
  kubectl pam list --mine -o wide
  kubectl pam list --to-review")]
    List(List),
    /// Approve a request with your own review (Approve-ElevatedAccessRequest).
    #[command(after_help = "Examples:
  kubectl pam approve prod-delete-deployments-x7k2p -m 'ok, go ahead'")]
    Approve(Review),
    /// Deny a pending request (Deny-ElevatedAccessRequest).
    #[command(after_help = "Examples:
  kubectl pam deny prod-delete-deployments-x7k2p -m 'not during the freeze'")]
    Deny(Review),
    /// Withdraw an approval in force; the grant ends at once.
    #[command(after_help = "Examples:
  kubectl pam revoke prod-delete-deployments-x7k2p -m 'done'")]
    Revoke(Review),
    /// Which policy covers an operation, and whether you hold a grant for it.
    #[command(
        name = "can-i",
        after_help = "Examples:
  kubectl pam can-i delete deployments.apps -n prod
  kubectl pam can-i create pods/exec -n prod
  kubectl pam can-i delete deployments.apps web -n prod -o json"
    )]
    CanI(CanI),
    /// Who RBAC lets impersonate an identity kubepam trusts (system accounts,
    /// the control plane, nodes, approver groups, kubepam itself): they can
    /// pass the guard, decide or write status as those identities.
    #[command(after_help = "Examples:
  kubectl pam impersonators
  kubectl pam impersonators -o yaml")]
    Impersonators,
    /// Who holds, outside kubepam, standing rights to what the Task policies
    /// guard, and to impersonate, escalate and bind (read from RBAC; the
    /// group system:masters holds every right and is not listed).
    #[command(after_help = "Examples:
  kubectl pam standing
  kubectl pam standing -o json")]
    Standing,
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  source <(kubectl-pam completion bash)
  kubectl-pam completion zsh > \"${fpath[1]}/_kubectl-pam\"")]
    Completion(Completion),
}

/// `enable`.
#[derive(Debug, Args)]
pub struct Enable {
    /// The Kubernetes group whose members approve requests (needed the first time).
    #[arg(long)]
    pub approver_group: Option<String>,
    /// A username never gated; repeat for several (replaces the list).
    #[arg(long = "system-account", value_name = "USERNAME")]
    pub system_accounts: Vec<String>,
    /// Grant duration when a request names none, e.g. 4h.
    #[arg(long)]
    pub default_duration: Option<String>,
    /// How long a request may wait for a decision, e.g. 24h.
    #[arg(long)]
    pub request_ttl: Option<String>,
}

/// `policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create an AccessPolicy (New-ElevatedAccessApprovalPolicy); -n limits it to namespaces.
    #[command(after_help = "Examples:
  kubectl pam policy create prod-delete-deployments --task 'delete deployments.apps' -n prod --approval Manual
  kubectl pam policy create prod-exec --task 'create pods/exec' -n prod -n staging --approval Auto --max-duration 1h
  kubectl pam policy create cluster-admin --role cluster-admin --approval Manual --required-approvals 2
  kubectl pam policy create operators --roles view,edit --approval Manual --approver-group ops-approvers")]
    Create(PolicyCreate),
    /// List AccessPolicies.
    #[command(after_help = "Examples:
  kubectl pam policy list
  kubectl pam policy list -o wide")]
    List,
    /// Delete an AccessPolicy by name or policy id (Remove-ElevatedAccessApprovalPolicy).
    #[command(after_help = "Examples:
  kubectl pam policy delete prod-delete-deployments")]
    Delete(Target),
}

/// `--approval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum Approval {
    /// Approvers decide.
    Manual,
    /// Approved at once.
    Auto,
}

impl From<Approval> for ApprovalType {
    fn from(a: Approval) -> Self {
        match a {
            Approval::Manual => Self::Manual,
            Approval::Auto => Self::Auto,
        }
    }
}

/// `policy create`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("grants").required(true).args(["task", "role", "roles"]))]
pub struct PolicyCreate {
    /// The policy's name.
    pub name: String,
    /// One operation: VERB RESOURCE[.GROUP][/SUBRESOURCE] [NAMES], e.g. 'delete deployments.apps'.
    #[arg(long)]
    pub task: Option<String>,
    /// One ClusterRole.
    #[arg(long)]
    pub role: Option<String>,
    /// Several ClusterRoles, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub roles: Option<Vec<String>>,
    /// Manual or Auto.
    #[arg(long, value_enum, ignore_case = true)]
    pub approval: Approval,
    /// The approving group (the control's default when absent).
    #[arg(long)]
    pub approver_group: Option<String>,
    /// The longest duration a request may ask for, e.g. 8h.
    #[arg(long)]
    pub max_duration: Option<String>,
    /// How many distinct approvers must approve (Manual).
    #[arg(long)]
    pub required_approvals: Option<u32>,
    /// Allow the policy to grant `impersonate` on users, groups or service
    /// accounts (refused without it: its holder could act as anyone).
    #[arg(long)]
    pub allow_impersonation: bool,
    /// Allow the policy to grant rights that let their holder give themselves
    /// more (escalate, bind, wildcards, cluster-admin, serviceaccounts/token,
    /// secrets cluster-wide); refused without it.
    #[arg(long)]
    pub allow_privilege_escalation: bool,
    /// Allow whoever holds a grant of the policy to make access that outlives
    /// it (RBAC bindings, long tokens, certificates, webhooks); refused without it.
    #[arg(long)]
    pub allow_persistence: bool,
}

/// `request`.
#[derive(Debug, Args)]
pub struct Request {
    /// The AccessPolicy to request.
    pub policy: String,
    /// Why you need it (recorded for audit).
    #[arg(long)]
    pub reason: String,
    /// How long, once approved, e.g. 30m or 4h (the control's default when absent).
    #[arg(long)]
    pub duration: Option<String>,
    /// The request's name (default: the policy's name and a random suffix).
    #[arg(long)]
    pub name: Option<String>,
    /// Follow the request until it is decided; exit non-zero unless it is approved.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long, e.g. 10m (default: wait until decided).
    #[arg(long, requires = "wait")]
    pub timeout: Option<String>,
}

/// A request or policy by name or id.
#[derive(Debug, Args)]
pub struct Target {
    /// The name, or the request id / policy id.
    pub name: String,
}

/// `--status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum PhaseArg {
    /// Waiting for a decision.
    Pending,
    /// Granted.
    Approved,
    /// Refused.
    Denied,
    /// Not decided in time, or over.
    Expired,
    /// Withdrawn early.
    Revoked,
}

impl From<PhaseArg> for Phase {
    fn from(p: PhaseArg) -> Self {
        match p {
            PhaseArg::Pending => Self::Pending,
            PhaseArg::Approved => Self::Approved,
            PhaseArg::Denied => Self::Denied,
            PhaseArg::Expired => Self::Expired,
            PhaseArg::Revoked => Self::Revoked,
        }
    }
}

/// `list`.
#[derive(Debug, Args)]
pub struct List {
    /// Only requests in this state.
    #[arg(long, value_enum, ignore_case = true)]
    pub status: Option<PhaseArg>,
    /// Only your own requests.
    #[arg(long)]
    pub mine: bool,
    /// Only Pending requests you may still decide.
    #[arg(long)]
    pub to_review: bool,
}

/// `approve`, `deny`, `revoke`.
#[derive(Debug, Args)]
pub struct Review {
    /// The request's name or request id.
    pub name: String,
    /// A comment recorded with your decision.
    #[arg(short = 'm', long = "message", value_name = "COMMENT")]
    pub comment: Option<String>,
}

impl Command {
    /// The review decision of `approve`, `deny` and `revoke`.
    pub fn decision(&self) -> Option<ReviewDecision> {
        match self {
            Self::Approve(_) => Some(ReviewDecision::Approve),
            Self::Deny(_) => Some(ReviewDecision::Deny),
            Self::Revoke(_) => Some(ReviewDecision::Revoke),
            _ => None,
        }
    }
}

/// `can-i`.
#[derive(Debug, Args)]
pub struct CanI {
    /// The verb, e.g. delete.
    pub verb: String,
    /// RESOURCE[.GROUP][/SUBRESOURCE], e.g. deployments.apps or pods/exec.
    pub resource: String,
    /// An object's name.
    pub name: Option<String>,
}

/// `completion`.
#[derive(Debug, Args)]
pub struct Completion {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use proptest::prelude::*;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_help_with_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" {
                    let help = sub
                        .get_after_help()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    if !help.contains("Examples:\n  ") || sub.get_about().is_none() {
                        missing.push(here.clone());
                    }
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "kubectl pam", &mut missing);
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
    }

    #[test]
    fn kubectl_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-pam",
            "--context",
            "bob",
            "approve",
            "r1",
            "-m",
            "ok",
            "--as",
            "carol",
            "--as-group",
            "pam-approvers",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.connection.context.as_deref(), Some("bob"));
        assert_eq!(cli.connection.as_user.as_deref(), Some("carol"));
        assert_eq!(cli.connection.as_groups, ["pam-approvers"]);
        assert_eq!(cli.output, Some(Output::Json));
        let Command::Approve(review) = &cli.command else {
            panic!("approve")
        };
        assert_eq!(review.comment.as_deref(), Some("ok"));
        assert_eq!(cli.command.decision(), Some(ReviewDecision::Approve));
    }

    #[test]
    fn policy_create_takes_repeated_namespaces_and_one_grant() {
        let cli = Cli::try_parse_from([
            "kubectl-pam",
            "policy",
            "create",
            "p",
            "--task",
            "delete deployments.apps",
            "-n",
            "a",
            "--namespace",
            "b",
            "--approval",
            "manual",
        ])
        .unwrap();
        assert_eq!(cli.namespaces, ["a", "b"]);
        assert!(
            Cli::try_parse_from(["kubectl-pam", "policy", "create", "p", "--approval", "Auto"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "kubectl-pam",
                "policy",
                "create",
                "p",
                "--role",
                "r",
                "--task",
                "t",
                "--approval",
                "Auto",
            ])
            .is_err()
        );
        let cli =
            Cli::try_parse_from(["kubectl-pam", "list", "--status", "pending", "--mine"]).unwrap();
        let Command::List(list) = cli.command else {
            panic!("list")
        };
        assert_eq!(list.status, Some(PhaseArg::Pending));
        assert!(
            Cli::try_parse_from([
                "kubectl-pam",
                "request",
                "p",
                "--reason",
                "r",
                "--timeout",
                "1m"
            ])
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(args in proptest::collection::vec(".{0,12}", 0..8)) {
            let _ = Cli::try_parse_from(std::iter::once("kubectl-pam".to_owned()).chain(args));
        }
    }
}
