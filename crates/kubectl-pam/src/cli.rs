//! The command line: kubectl's connection flags, and one command per seed cmdlet.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::audit;
use super::objects;
use super::render::Output;
use kubepam_core::api::{ApprovalType, EscalationStep, Phase, ReviewDecision};

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
  kubectl pam approve prod-delete-deployments-x7k2p -m 'ok'
  # Break glass when nobody can approve in time, and review it afterwards
  kubectl pam request prod-delete-deployments --reason 'INC-999: outage' --emergency
  kubectl pam list --unreviewed
  kubectl pam confirm prod-delete-deployments-q8w3e -m 'justified: INC-999'
  # Need longer, or done early
  kubectl pam extend prod-delete-deployments-x7k2p --by 1h --reason 'INC-1234: rollout still running'
  kubectl pam release prod-delete-deployments-x7k2p -m 'done'
  # Check the audit trail an export holds, and read one request's records
  kubectl pam audit verify audit.jsonl --against-cluster
  kubectl pam audit show prod-delete-deployments-x7k2p audit.jsonl"
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
  kubectl pam enable
  # nobody may have more than 3 requests waiting for a decision
  kubectl pam enable --max-pending-per-requester 3")]
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
  kubectl pam request prod-delete-deployments -n prod --reason 'INC-1234' --wait --timeout 1h
  # book a window: from 09:00 UTC on 1 December, for 2 hours (approval may come before it)
  kubectl pam request prod-delete-deployments --reason 'CHG-77: release' --start-at 2026-12-01T09:00:00Z --duration 2h
  # book it for two hours from now; --wait ends once it is approved, not when it opens
  kubectl pam request prod-delete-deployments --reason 'CHG-78' --start-in 2h --duration 1h --wait
  # break glass (members of the policy's break-glass groups): access now, reviewed afterwards
  kubectl pam request prod-delete-deployments --reason 'INC-999: outage, no approver reachable' --emergency --duration 30m")]
    Request(Request),
    /// Continue your Approved grant with a new request under the same policy and namespace;
    /// once approved, access runs on from the old end with no gap.
    #[command(after_help = "Examples:
  kubectl pam extend prod-delete-deployments-x7k2p --by 1h --reason 'INC-1234: rollout still running'
  # wait for the extension's decision, and exit non-zero unless it is approved
  kubectl pam extend prod-delete-deployments-x7k2p --by 30m --reason 'INC-1234' --wait --timeout 15m")]
    Extend(Extend),
    /// Show one request (Get-ElevatedAccessRequest): its decision, its window, the grants it
    /// extends or that extend it, and its release.
    #[command(after_help = "Examples:
  kubectl pam status prod-delete-deployments-x7k2p
  kubectl pam status 0b7c8e2a-1f9e-4c57-9f6c-8a1d2b3c4d5e -o json")]
    Status(Target),
    /// List requests, oldest first.
    #[command(after_help = "Examples:
  kubectl pam list
  kubectl pam list --status Pending
  kubectl pam list --mine -o wide
  # what you may decide now, and emergency grants you may review
  kubectl pam list --to-review
  # emergency grants still waiting for an approver's review
  kubectl pam list --unreviewed")]
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
    /// Review emergency access after the fact: it was justified (an approver of the policy, never
    /// the requester).
    #[command(after_help = "Examples:
  kubectl pam confirm prod-delete-deployments-q8w3e -m 'justified: INC-999 outage'
  # what still waits for a review
  kubectl pam list --unreviewed")]
    Confirm(Review),
    /// Review emergency access after the fact: it was not justified; a grant still in force
    /// ends at once (an approver of the policy, never the requester).
    #[command(after_help = "Examples:
  kubectl pam reject prod-delete-deployments-q8w3e -m 'no incident: use an ordinary request'")]
    Reject(Review),
    /// End your own grant early ("I'm done"): only the requester may, while it is Approved.
    #[command(after_help = "Examples:
  kubectl pam release prod-delete-deployments-x7k2p -m 'INC-1234 fixed, done'
  # a booked window that is no longer needed
  kubectl pam release prod-delete-deployments-b4q9z")]
    Release(Review),
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
    /// Check an exported audit trail, and read one request's records from it.
    #[command(
        subcommand,
        after_help = "Examples:
  kubectl pam audit verify /var/log/kubepam/audit.jsonl --against-cluster
  kubectl pam audit show prod-delete-deployments-x7k2p audit.jsonl"
    )]
    Audit(AuditCommand),
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
    /// The most Pending requests one person may have at once, across all policies.
    #[arg(long, value_name = "COUNT")]
    pub max_pending_per_requester: Option<u32>,
}

/// `policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create an AccessPolicy (New-ElevatedAccessApprovalPolicy); -n limits it to namespaces.
    #[command(after_help = "Examples:
  kubectl pam policy create prod-delete-deployments --task 'delete deployments.apps' -n prod --approval Manual
  kubectl pam policy create prod-exec --task 'create pods/exec' -n prod -n staging --approval Auto --max-duration 1h
  kubectl pam policy create cluster-admin --role cluster-admin --approval Manual --required-approvals 2
  kubectl pam policy create operators --roles view,edit --approval Manual --approver-group ops-approvers
  # every reason must carry a ticket number
  kubectl pam policy create prod-admin --role admin -n prod --approval Manual --reason-pattern '^(INC|CHG)-[0-9]+' --reason-hint 'a ticket, e.g. INC-1234'
  # windows booked at most a week ahead, and one open request per person
  kubectl pam policy create prod-admin --role admin -n prod --approval Manual --max-schedule-ahead 168h --max-open-per-requester 1
  # extensions approved at once, at most 2 of them, 8h in all
  kubectl pam policy create prod-exec --task 'create pods/exec' -n prod --approval Manual --extension-approval Auto --max-extensions 2 --max-extension-total 8h
  # on-call may break glass for up to 1h, reviewed within 24h; ops-leads may also decide
  # requests nobody decided within 30m, and sre-managers after 2h
  kubectl pam policy create prod-admin --role admin -n prod --approval Manual --break-glass-group oncall --break-glass-max-duration 1h --review-within 24h --escalate-after 30m=ops-leads --escalate-after 2h=sre-managers")]
    Create(Box<PolicyCreate>),
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
    /// A regular expression every request's reason must match, e.g. '^(INC|CHG)-[0-9]+'
    /// (searched anywhere unless anchored).
    #[arg(long, value_name = "REGEX")]
    pub reason_pattern: Option<String>,
    /// What the reason must give, in words, shown when a reason does not match.
    #[arg(long, requires = "reason_pattern", value_name = "TEXT")]
    pub reason_hint: Option<String>,
    /// How far ahead a request may book its window (--start-at), e.g. 168h.
    #[arg(long, value_name = "DURATION")]
    pub max_schedule_ahead: Option<String>,
    /// The most requests of this policy one person may hold open (Pending or Approved) at once;
    /// extensions do not count.
    #[arg(long, value_name = "COUNT")]
    pub max_open_per_requester: Option<u32>,
    /// How extensions (kubectl pam extend) are approved: Manual or Auto (default: as --approval).
    #[arg(long, value_enum, ignore_case = true)]
    pub extension_approval: Option<Approval>,
    /// The most extensions of one grant (0 allows none).
    #[arg(long, value_name = "COUNT")]
    pub max_extensions: Option<u32>,
    /// The longest a grant may last with all its extensions, from its first opening, e.g. 8h.
    #[arg(long, value_name = "DURATION")]
    pub max_extension_total: Option<String>,
    /// Break glass: members of this group may take emergency access (request --emergency),
    /// approved at once and reviewed afterwards; repeat for several. Needs
    /// --break-glass-max-duration.
    #[arg(
        long = "break-glass-group",
        value_name = "GROUP",
        requires = "break_glass_max_duration"
    )]
    pub break_glass_groups: Vec<String>,
    /// The longest an emergency grant may last, e.g. 1h.
    #[arg(long, value_name = "DURATION", requires = "break_glass_groups")]
    pub break_glass_max_duration: Option<String>,
    /// How soon an approver must confirm or reject an emergency grant, e.g. 24h (the default);
    /// past that it is overdue and the approvers are reminded.
    #[arg(long, value_name = "DURATION", requires = "break_glass_groups")]
    pub review_within: Option<String>,
    /// Escalation (Manual approval): once a request has waited AFTER with no decision, members
    /// of GROUP may also decide and are notified, e.g. 30m=ops-leads; repeat for further steps,
    /// in order.
    #[arg(long = "escalate-after", value_name = "AFTER=GROUP", value_parser = escalation_step)]
    pub escalation: Vec<EscalationStep>,
}

/// `--escalate-after AFTER=GROUP`, as clap parses it.
fn escalation_step(s: &str) -> Result<EscalationStep, String> {
    objects::parse_escalation_step(s).map_err(|_| objects::ESCALATION_STEP_FORM.to_owned())
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
    /// Book the window to start at this time, in RFC 3339, e.g. 2026-12-01T09:00:00Z.
    #[arg(long, value_name = "TIME", conflicts_with = "start_in")]
    pub start_at: Option<String>,
    /// Book the window to start this long from now, e.g. 2h.
    #[arg(long, value_name = "DURATION")]
    pub start_in: Option<String>,
    /// Break glass: access now, without waiting for an approver, for members of the policy's
    /// break-glass groups. It is approved at once, for at most the policy's break-glass
    /// duration, the approvers are told, and one of them must confirm or reject it afterwards
    /// (kubectl pam confirm|reject). Not with --start-at or --start-in.
    #[arg(long, conflicts_with_all = ["start_at", "start_in"])]
    pub emergency: bool,
}

/// `extend`.
#[derive(Debug, Args)]
pub struct Extend {
    /// Your Approved request to continue (name or request id).
    pub name: String,
    /// How much longer, e.g. 30m or 2h: the new request's duration.
    #[arg(long, value_name = "DURATION")]
    pub by: String,
    /// Why you need longer (recorded for audit).
    #[arg(long)]
    pub reason: String,
    /// Follow the extension until it is decided; exit non-zero unless it is approved.
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
    /// Only what waits for you: Pending requests you may still decide (as a member of a group
    /// that may decide now, or because RBAC lets you approve the policy), and emergency grants
    /// you may review; never your own.
    #[arg(long)]
    pub to_review: bool,
    /// Only emergency grants that still wait for an approver's review (confirm or reject),
    /// oldest first, with when the review is due.
    #[arg(long)]
    pub unreviewed: bool,
}

/// `approve`, `deny`, `revoke`, `release`, `confirm`, `reject`.
#[derive(Debug, Args)]
pub struct Review {
    /// The request's name or request id.
    pub name: String,
    /// A comment recorded with your decision.
    #[arg(short = 'm', long = "message", value_name = "COMMENT")]
    pub comment: Option<String>,
}

impl Command {
    /// The review decision of `approve`, `deny`, `revoke`, `release`, `confirm` and `reject`.
    pub fn decision(&self) -> Option<ReviewDecision> {
        match self {
            Self::Approve(_) => Some(ReviewDecision::Approve),
            Self::Deny(_) => Some(ReviewDecision::Deny),
            Self::Revoke(_) => Some(ReviewDecision::Revoke),
            Self::Release(_) => Some(ReviewDecision::Release),
            Self::Confirm(_) => Some(ReviewDecision::Confirm),
            Self::Reject(_) => Some(ReviewDecision::Reject),
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

/// `audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an export of the audit trail: every record's signature, link and sequence.
    ///
    /// The export is JSON lines, one record per line. Each record's signature, its link to the
    /// record before it and its sequence are checked, and with --against-cluster that the
    /// export reaches the head kubepam keeps, so a changed, dropped, reordered, inserted or
    /// cut-off record is named by its line. Whoever holds the key can forge records: the
    /// Secret kubepam-audit-key must be readable only by kubepam and the auditors.
    #[command(after_help = "Examples:
  kubectl pam audit verify /var/log/kubepam/audit.jsonl --against-cluster
  # an export that starts later, e.g. after log rotation, checked with a copy of the key
  kubectl logs deploy/kubepam -n kubepam-system | grep '\"specversion\"' | kubectl pam audit verify --key-file key.bin --partial
  # a summary for scripts; exits non-zero unless the export verifies
  kubectl pam audit verify audit.jsonl -o json")]
    Verify(AuditVerify),
    /// Show one request's records from an export, in sequence order: who did what, when. It
    /// does not check them (kubectl pam audit verify does).
    #[command(after_help = "Examples:
  kubectl pam audit show prod-delete-deployments-x7k2p audit.jsonl
  # by request id, from stdin, as the records themselves
  kubectl pam audit show --request-id 0b7c8e2a-1f9e-4c57-9f6c-8a1d2b3c4d5e < audit.jsonl -o json")]
    Show(AuditShow),
}

/// `audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerify {
    /// The export, one record per line; - or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The signing key: this file's bytes, less one trailing newline (default: the entry
    /// `key` of the Secret kubepam-audit-key in kubepam's namespace).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Also check that the export reaches the head of the chain kept in the status of
    /// PrivilegedAccessControl default, so a cut-off tail or a fork is caught.
    #[arg(long)]
    pub against_cluster: bool,
    /// Accept an export that starts after the first record (e.g. after log rotation); the
    /// records before it are not checked.
    #[arg(long)]
    pub partial: bool,
    /// The namespace kubepam runs in, where its key Secret is.
    #[arg(long, value_name = "NAMESPACE", default_value = audit::DEFAULT_KUBEPAM_NAMESPACE)]
    pub kubepam_namespace: String,
}

/// `audit show`.
#[derive(Debug, Args)]
pub struct AuditShow {
    /// The request's name (with --request-id: its request id).
    pub name: String,
    /// NAME is a request id (`status.requestId`), not a name.
    #[arg(long)]
    pub request_id: bool,
    /// The export, one record per line; - or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
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

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-pam").chain(args.iter().copied()))
    }

    #[test]
    fn a_request_books_its_window_at_a_time_or_after_a_while() {
        let cli = parse(&[
            "request",
            "p",
            "--reason",
            "r",
            "--start-at",
            "2026-12-01T09:00:00Z",
        ])
        .unwrap();
        let Command::Request(request) = cli.command else {
            panic!("request")
        };
        assert_eq!(request.start_at.as_deref(), Some("2026-12-01T09:00:00Z"));
        assert_eq!(request.start_in, None);
        let cli = parse(&[
            "request",
            "p",
            "--reason",
            "r",
            "--start-in",
            "2h",
            "--wait",
        ])
        .unwrap();
        let Command::Request(request) = cli.command else {
            panic!("request")
        };
        assert_eq!(request.start_in.as_deref(), Some("2h"));
        assert!(request.wait);
        let both = parse(&[
            "request",
            "p",
            "--reason",
            "r",
            "--start-at",
            "2026-12-01T09:00:00Z",
            "--start-in",
            "2h",
        ])
        .unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn extend_names_the_grant_how_much_longer_and_why() {
        let cli = parse(&[
            "extend",
            "r1",
            "--by",
            "2h",
            "--reason",
            "INC-1",
            "--wait",
            "--timeout",
            "5m",
        ])
        .unwrap();
        let Command::Extend(extend) = cli.command else {
            panic!("extend")
        };
        assert_eq!(
            (
                extend.name.as_str(),
                extend.by.as_str(),
                extend.reason.as_str()
            ),
            ("r1", "2h", "INC-1")
        );
        assert!(extend.wait);
        assert_eq!(extend.timeout.as_deref(), Some("5m"));
        for missing in [
            &["extend", "r1", "--reason", "INC-1"][..],
            &["extend", "r1", "--by", "2h"],
            &["extend", "--by", "2h", "--reason", "INC-1"],
        ] {
            assert_eq!(
                parse(missing).unwrap_err().kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{missing:?}"
            );
        }
        assert!(
            parse(&[
                "extend",
                "r1",
                "--by",
                "2h",
                "--reason",
                "x",
                "--timeout",
                "1m"
            ])
            .is_err()
        );
    }

    #[test]
    fn release_is_the_requesters_review() {
        let cli = parse(&["release", "r1", "-m", "done"]).unwrap();
        assert_eq!(cli.command.decision(), Some(ReviewDecision::Release));
        let Command::Release(review) = &cli.command else {
            panic!("release")
        };
        assert_eq!(
            (review.name.as_str(), review.comment.as_deref()),
            ("r1", Some("done"))
        );
        let cli = parse(&["release", "r1"]).unwrap();
        let Command::Release(review) = &cli.command else {
            panic!("release")
        };
        assert_eq!(review.comment, None);
    }

    #[test]
    fn policy_create_takes_the_time_and_justification_rules() {
        let cli = parse(&[
            "policy",
            "create",
            "p",
            "--role",
            "admin",
            "--approval",
            "Manual",
            "--reason-pattern",
            "^INC-[0-9]+",
            "--reason-hint",
            "a ticket",
            "--max-schedule-ahead",
            "168h",
            "--max-open-per-requester",
            "1",
            "--extension-approval",
            "auto",
            "--max-extensions",
            "0",
            "--max-extension-total",
            "8h",
        ])
        .unwrap();
        let Command::Policy(PolicyCommand::Create(create)) = cli.command else {
            panic!("policy create")
        };
        assert_eq!(create.reason_pattern.as_deref(), Some("^INC-[0-9]+"));
        assert_eq!(create.reason_hint.as_deref(), Some("a ticket"));
        assert_eq!(create.max_schedule_ahead.as_deref(), Some("168h"));
        assert_eq!(create.max_open_per_requester, Some(1));
        assert_eq!(create.extension_approval, Some(Approval::Auto));
        assert_eq!(create.max_extensions, Some(0));
        assert_eq!(create.max_extension_total.as_deref(), Some("8h"));
        // A hint explains a pattern; alone it would explain nothing.
        let hint_alone = parse(&[
            "policy",
            "create",
            "p",
            "--role",
            "admin",
            "--approval",
            "Manual",
            "--reason-hint",
            "a ticket",
        ])
        .unwrap_err();
        assert_eq!(
            hint_alone.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(
            parse(&[
                "policy",
                "create",
                "p",
                "--role",
                "admin",
                "--approval",
                "Manual",
                "--max-extensions",
                "-1",
            ])
            .is_err()
        );
        let cli = parse(&["enable", "--max-pending-per-requester", "3"]).unwrap();
        let Command::Enable(enable) = cli.command else {
            panic!("enable")
        };
        assert_eq!(enable.max_pending_per_requester, Some(3));
    }

    #[test]
    fn an_emergency_request_is_for_now() {
        let cli = parse(&["request", "p", "--reason", "INC-9", "--emergency", "--wait"]).unwrap();
        let Command::Request(request) = cli.command else {
            panic!("request")
        };
        assert!(request.emergency && request.wait);
        assert!(
            !parse(&["request", "p", "--reason", "r"])
                .map(|c| matches!(c.command, Command::Request(r) if r.emergency))
                .unwrap()
        );
        for booked in [
            &["--start-at", "2026-12-01T09:00:00Z"][..],
            &["--start-in", "2h"],
        ] {
            let args = [
                &["request", "p", "--reason", "r", "--emergency"][..],
                booked,
            ]
            .concat();
            assert_eq!(
                parse(&args).unwrap_err().kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{booked:?}"
            );
        }
    }

    #[test]
    fn confirm_and_reject_are_reviews_of_emergency_access() {
        for (command, decision) in [
            ("confirm", ReviewDecision::Confirm),
            ("reject", ReviewDecision::Reject),
        ] {
            let cli = parse(&[command, "r1", "-m", "INC-9"]).unwrap();
            assert_eq!(cli.command.decision(), Some(decision));
            let (Command::Confirm(review) | Command::Reject(review)) = &cli.command else {
                panic!("{command}")
            };
            assert_eq!(
                (review.name.as_str(), review.comment.as_deref()),
                ("r1", Some("INC-9"))
            );
            assert_eq!(
                parse(&[command]).unwrap_err().kind(),
                clap::error::ErrorKind::MissingRequiredArgument
            );
        }
        let help = Cli::command()
            .find_subcommand_mut("reject")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("ends at once"), "{help}");
    }

    #[test]
    fn list_takes_unreviewed_and_to_review() {
        let cli = parse(&["list", "--unreviewed", "--to-review", "-o", "wide"]).unwrap();
        let Command::List(list) = cli.command else {
            panic!("list")
        };
        assert!(list.unreviewed && list.to_review && !list.mine);
    }

    #[test]
    fn policy_create_takes_break_glass_and_escalation() {
        let cli = parse(&[
            "policy",
            "create",
            "p",
            "--role",
            "admin",
            "--approval",
            "Manual",
            "--break-glass-group",
            "oncall",
            "--break-glass-group",
            "sre",
            "--break-glass-max-duration",
            "1h",
            "--review-within",
            "12h",
            "--escalate-after",
            "30m=ops-leads",
            "--escalate-after",
            "2h=sre-managers",
        ])
        .unwrap();
        let Command::Policy(PolicyCommand::Create(create)) = cli.command else {
            panic!("policy create")
        };
        assert_eq!(create.break_glass_groups, ["oncall", "sre"]);
        assert_eq!(create.break_glass_max_duration.as_deref(), Some("1h"));
        assert_eq!(create.review_within.as_deref(), Some("12h"));
        let steps: Vec<(&str, &str)> = create
            .escalation
            .iter()
            .map(|s| (s.after.as_str(), s.approver_group.as_str()))
            .collect();
        assert_eq!(steps, [("30m", "ops-leads"), ("2h", "sre-managers")]);
        let base = [
            "policy",
            "create",
            "p",
            "--role",
            "admin",
            "--approval",
            "Manual",
        ];
        // A step without its group says how to write one.
        let no_group = parse(&[&base[..], &["--escalate-after", "30m"]].concat()).unwrap_err();
        assert_eq!(no_group.kind(), clap::error::ErrorKind::ValueValidation);
        let message = no_group.to_string();
        assert!(
            message.contains("invalid value '30m' for '--escalate-after <AFTER=GROUP>'")
                && message.contains("e.g. 30m=ops-leads"),
            "{message}"
        );
        for bad in ["=ops-leads", "30 minutes=ops-leads", "30m=", "30m= "] {
            assert!(
                parse(&[&base[..], &["--escalate-after", bad]].concat()).is_err(),
                "{bad}"
            );
        }
        // Break glass needs its longest grant; its other flags need its groups.
        for (args, kind) in [
            (
                &["--break-glass-group", "oncall"][..],
                clap::error::ErrorKind::MissingRequiredArgument,
            ),
            (
                &["--break-glass-max-duration", "1h"],
                clap::error::ErrorKind::MissingRequiredArgument,
            ),
            (
                &["--review-within", "24h"],
                clap::error::ErrorKind::MissingRequiredArgument,
            ),
        ] {
            assert_eq!(
                parse(&[&base[..], args].concat()).unwrap_err().kind(),
                kind,
                "{args:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(args in proptest::collection::vec(".{0,12}", 0..8)) {
            let _ = Cli::try_parse_from(std::iter::once("kubectl-pam".to_owned()).chain(args));
        }
    }
}
