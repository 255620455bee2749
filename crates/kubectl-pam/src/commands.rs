//! Each command: read what it needs, let the pure modules decide, write, print.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

use chrono::Utc;
use clap::CommandFactory;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Client;

use super::access::{self, Facts, Query};
use super::audit::{self, Printout};
use super::cli::{self, AuditCommand, Cli, Command, PolicyCommand};
use super::client::{self, Kind, connect, list_in_all_namespaces, rbac_allows, whoami};
use super::error::{Error, exit};
use super::objects::{self, EnablePlan};
use super::render::{self, Output};
use super::select::{self, Filter};
use super::task;
use kubepam_core::api::{
    AccessPolicy, CONTROL_NAME, ElevationRequest, Phase, PrivilegedAccessControl, ReviewDecision,
};
use kubepam_core::audit::{ChainHead, Key};
use kubepam_core::duration;

/// Print to stdout through anstream, which drops colour unless stdout is a terminal (and
/// honours `NO_COLOR` / `CLICOLOR_FORCE`).
fn print(text: &str) -> Result<(), Error> {
    let mut out = anstream::stdout();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(e.to_string()))
}

fn println(text: &str) -> Result<(), Error> {
    print(&format!("{text}\n"))
}

/// Print one object in the `-o` format, or `line` for the default and `wide`.
fn print_object<K>(object: &K, output: Option<Output>, line: &str) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
{
    match output {
        Some(o @ (Output::Json | Output::Yaml)) => {
            print(&render::serialize(object, o).map_err(Error::Output)?)
        }
        Some(Output::Name) => println(&render::object_name(object)),
        _ => println(line),
    }
}

/// Print a list in the `-o` format; `false` when the caller prints its table instead (the
/// default and `wide`), or a notice when there is nothing to show.
fn print_list<K>(items: &[K], output: Option<Output>, kinds: &str) -> Result<bool, Error>
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
{
    match output {
        Some(o @ (Output::Json | Output::Yaml)) => {
            print(&render::serialize_list(items, o).map_err(Error::Output)?)?;
        }
        Some(Output::Name) => {
            for item in items {
                println(&render::object_name(item))?;
            }
        }
        _ if items.is_empty() => println(&format!("No {kinds} found."))?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Run the command; the exit code on success (`can-i` answers "no" with 1).
pub async fn run(cli: Cli) -> Result<u8, Error> {
    if let Command::Completion(c) = &cli.command {
        let mut out = Vec::new();
        clap_complete::generate(c.shell, &mut Cli::command(), "kubectl-pam", &mut out);
        let mut script = String::from_utf8_lossy(&out).into_owned();
        if c.shell == clap_complete::Shell::Bash {
            // clap_complete names a hyphenated program's subcommand states two
            // ways in bash (clap-rs/clap#6421), so nothing past the first
            // word completed; one name makes them meet.
            script = script.replace("kubectl__subcmd__pam", "kubectl__pam");
        }
        print(&script)?;
        return Ok(exit::OK);
    }
    if let Command::Audit(command) = &cli.command {
        return run_audit(&cli, command).await;
    }
    let (client, context_namespace) = connect(&cli.connection).await?;
    let output = cli.output;
    let one_namespace = || -> Result<Option<String>, Error> {
        match cli.namespaces.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(Error::Usage(
                "give one --namespace here (several are only for policy create)".into(),
            )),
        }
    };
    match &cli.command {
        Command::Enable(args) => enable(&client, args, output).await,
        Command::Disable => disable(&client, output).await,
        Command::Policy(PolicyCommand::Create(args)) => {
            policy_create(&client, args, &cli.namespaces, output).await
        }
        Command::Policy(PolicyCommand::List) => policy_list(&client, output).await,
        Command::Policy(PolicyCommand::Delete(target)) => {
            policy_delete(&client, &target.name, output).await
        }
        Command::Request(args) => request(&client, args, one_namespace()?, output).await,
        Command::Extend(args) => extend(&client, args, one_namespace()?, output).await,
        Command::Status(target) => status(&client, &target.name, output).await,
        Command::List(args) => list(&client, args, output).await,
        Command::Approve(review)
        | Command::Deny(review)
        | Command::Revoke(review)
        | Command::Release(review)
        | Command::Confirm(review)
        | Command::Reject(review) => {
            let decision = cli.command.decision().unwrap_or(ReviewDecision::Approve);
            decide(&client, review, decision, output).await
        }
        Command::CanI(args) => {
            let namespace = one_namespace()?.unwrap_or(context_namespace);
            can_i(&client, args, namespace, output).await
        }
        Command::Impersonators => impersonators(&client, output).await,
        Command::Standing => standing(&client, output).await,
        Command::Completion(_) | Command::Audit(_) => Ok(exit::OK),
    }
}

/// `audit ...` from the terminal: stdin is the export unless a FILE is named.
async fn run_audit(cli: &Cli, command: &AuditCommand) -> Result<u8, Error> {
    use std::io::IsTerminal as _;
    if !cli.namespaces.is_empty() {
        return Err(Error::Usage(
            "audit takes kubepam's namespace as --kubepam-namespace, not --namespace".into(),
        ));
    }
    let file = match command {
        AuditCommand::Verify(args) => args.file.as_deref(),
        AuditCommand::Show(args) => args.file.as_deref(),
    };
    if reads_stdin(file) && std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "give the export as FILE, or pipe it in (kubectl pam audit verify audit.jsonl)".into(),
        ));
    }
    let (printout, result) =
        audit(command, &cli.connection, cli.output, &mut std::io::stdin()).await;
    print(&printout.stdout)?;
    let mut err = anstream::stderr();
    err.write_all(printout.stderr.as_bytes())
        .map_err(|e| Error::Output(e.to_string()))?;
    result.map(|()| exit::OK)
}

/// The export's path: FILE unless it is `-` (stdin).
fn export_path(file: Option<&Path>) -> Option<&Path> {
    file.filter(|f| *f != Path::new("-"))
}

fn reads_stdin(file: Option<&Path>) -> bool {
    export_path(file).is_none()
}

/// The export, as error messages name it.
fn export_label(file: Option<&Path>) -> String {
    export_path(file).map_or_else(
        || "the export from stdin".to_owned(),
        |path| format!("the export {}", path.display()),
    )
}

/// `audit verify|show`: what to print, and the failure to report after printing it. It
/// connects only when the key or the head must come from the cluster; `stdin` is the export
/// when no FILE is named.
pub async fn audit(
    command: &AuditCommand,
    connection: &cli::Connection,
    output: Option<Output>,
    stdin: &mut dyn Read,
) -> (Printout, Result<(), Error>) {
    if output == Some(Output::Name) {
        let usage = Error::Usage("audit prints no object names: use -o json or -o yaml".into());
        return (Printout::default(), Err(usage));
    }
    match command {
        AuditCommand::Verify(args) => {
            let inputs = async {
                let input = open_export(args.file.as_deref(), stdin)?;
                let (key, head) = verify_key_and_head(args, connection).await?;
                // The export is read after the head: records written meanwhile are then in
                // the export, past the head, not missing from it.
                let export = read_export(input, args.file.as_deref())?;
                Ok::<_, Error>((export, key, head))
            };
            match inputs.await {
                Ok((export, key, head)) => {
                    let (printout, result) =
                        audit::verify_command(&export, &key, head.as_ref(), args.partial, output);
                    (printout, result.map_err(Error::from))
                }
                Err(e) => (Printout::default(), Err(e)),
            }
        }
        AuditCommand::Show(args) => {
            let shown = open_export(args.file.as_deref(), stdin)
                .and_then(|input| read_export(input, args.file.as_deref()))
                .and_then(|export| {
                    Ok(audit::show_command(
                        &export,
                        &args.name,
                        args.request_id,
                        output,
                    )?)
                });
            match shown {
                Ok(printout) => (printout, Ok(())),
                Err(e) => (Printout::default(), Err(e)),
            }
        }
    }
}

/// The export's source: the file, or `stdin`. Opened before anything is read from the
/// cluster, so a wrong path fails at once.
fn open_export<'a>(
    file: Option<&Path>,
    stdin: &'a mut dyn Read,
) -> Result<Box<dyn Read + 'a>, Error> {
    match export_path(file) {
        None => Ok(Box::new(stdin)),
        Some(path) => std::fs::File::open(path)
            .map(|f| Box::new(f) as Box<dyn Read>)
            .map_err(|e| unreadable(&export_label(file), &e)),
    }
}

fn read_export(mut input: Box<dyn Read + '_>, file: Option<&Path>) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&export_label(file), &e))?;
    Ok(bytes)
}

fn unreadable(what: &str, e: &std::io::Error) -> Error {
    Error::from(audit::Error::Read {
        what: what.to_owned(),
        why: e.to_string(),
    })
}

/// The key (`--key-file`, else the Secret) and, with `--against-cluster`, the head.
async fn verify_key_and_head(
    args: &cli::AuditVerify,
    connection: &cli::Connection,
) -> Result<(Key, Option<ChainHead>), Error> {
    let mut client = None;
    let key = if let Some(path) = &args.key_file {
        let bytes = std::fs::read(path)
            .map_err(|e| unreadable(&format!("the key file {}", path.display()), &e))?;
        audit::key_from_file(bytes, &path.display().to_string())?
    } else {
        let (connected, _) = connect(connection).await?;
        let namespace = &args.kubepam_namespace;
        let bytes = client::secret_entry(
            &connected,
            namespace,
            audit::KEY_SECRET,
            audit::KEY_SECRET_ENTRY,
        )
        .await?
        .ok_or_else(|| audit::Error::NoKey {
            namespace: namespace.clone(),
        })?;
        client = Some(connected);
        audit::key_from_secret(bytes, namespace)?
    };
    if !args.against_cluster {
        return Ok((key, None));
    }
    let client = match client {
        Some(client) => client,
        None => connect(connection).await?.0,
    };
    let control = Kind::<PrivilegedAccessControl>::new(&client)
        .get_json_opt(CONTROL_NAME)
        .await?;
    Ok((key, Some(audit::head_of_control(control.as_ref())?)))
}

async fn enable(client: &Client, args: &cli::Enable, output: Option<Output>) -> Result<u8, Error> {
    let controls = Kind::<PrivilegedAccessControl>::new(client);
    let existing = controls.get_opt(CONTROL_NAME).await?;
    let plan = objects::enable_plan(
        existing.as_ref(),
        &objects::EnableArgs {
            approver_group: args.approver_group.clone(),
            system_accounts: args.system_accounts.clone(),
            default_duration: args.default_duration.clone(),
            request_ttl: args.request_ttl.clone(),
            max_pending_per_requester: args.max_pending_per_requester,
        },
    )?;
    let control = match plan {
        EnablePlan::Create(control) => controls.create(&control).await?,
        EnablePlan::Patch(patch) => controls
            .merge_patch(CONTROL_NAME, &patch)
            .await?
            .ok_or_else(|| Error::Transport("the control vanished while enabling it".into()))?,
    };
    let line = format!(
        "{} enabled: members of {} approve requests",
        render::object_name(&control),
        control.spec.default_approver_group
    );
    print_object(&control, output, &line)?;
    Ok(exit::OK)
}

async fn disable(client: &Client, output: Option<Output>) -> Result<u8, Error> {
    let controls = Kind::<PrivilegedAccessControl>::new(client);
    match controls
        .merge_patch(CONTROL_NAME, &objects::disable_patch())
        .await?
    {
        None => println(
            "kubepam is already off: there is no PrivilegedAccessControl default (kubectl pam \
             enable turns it on)",
        )?,
        Some(control) => print_object(
            &control,
            output,
            &format!(
                "{} disabled: nothing is gated and no new grant is made; policies, requests and \
                 grants in force are kept",
                render::object_name(&control)
            ),
        )?,
    }
    Ok(exit::OK)
}

async fn policy_create(
    client: &Client,
    args: &cli::PolicyCreate,
    namespaces: &[String],
    output: Option<Output>,
) -> Result<u8, Error> {
    let policy = objects::build_policy(&objects::PolicyArgs {
        name: args.name.clone(),
        task: args.task.clone(),
        role: args.role.clone(),
        roles: args.roles.clone(),
        namespaces: namespaces.to_vec(),
        approval: args.approval.into(),
        approver_group: args.approver_group.clone(),
        max_duration: args.max_duration.clone(),
        required_approvals: args.required_approvals,
        allow_impersonation: args.allow_impersonation,
        allow_privilege_escalation: args.allow_privilege_escalation,
        allow_persistence: args.allow_persistence,
        reason_pattern: args.reason_pattern.clone(),
        reason_hint: args.reason_hint.clone(),
        max_schedule_ahead: args.max_schedule_ahead.clone(),
        max_open_per_requester: args.max_open_per_requester,
        extension_approval: args.extension_approval.map(Into::into),
        max_extensions: args.max_extensions,
        max_extension_total: args.max_extension_total.clone(),
        break_glass_groups: args.break_glass_groups.clone(),
        break_glass_max_duration: args.break_glass_max_duration.clone(),
        review_within: args.review_within.clone(),
        escalation: args.escalation.clone(),
    })?;
    let created = Kind::<AccessPolicy>::new(client).create(&policy).await?;
    print_object(
        &created,
        output,
        &format!("{} created", render::object_name(&created)),
    )?;
    Ok(exit::OK)
}

async fn standing(client: &Client, output: Option<Output>) -> Result<u8, Error> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let cluster_roles = Kind::<ClusterRole>::new(client).list().await?;
    let roles = list_in_all_namespaces::<Role>(client).await?;
    let cluster_role_bindings = Kind::<ClusterRoleBinding>::new(client).list().await?;
    let role_bindings = list_in_all_namespaces::<RoleBinding>(client).await?;
    let policies = Kind::<AccessPolicy>::new(client).list().await?;
    let standing = kubepam_core::standing::Standing::new(
        &cluster_roles,
        &roles,
        &cluster_role_bindings,
        &role_bindings,
    );
    let rights = kubepam_core::standing::report(&standing, &policies);
    match output {
        Some(Output::Json) => println(&serde_json::to_string_pretty(&rights).unwrap_or_default())?,
        Some(Output::Yaml) => print(&serde_yaml_ng::to_string(&rights).unwrap_or_default())?,
        _ if rights.is_empty() => println(
            "nobody holds standing rights to what the Task policies guard, or to impersonate, \
             escalate or bind (as RBAC says; members of system:masters can do anything)",
        )?,
        _ => {
            let rows: Vec<Vec<String>> = rights
                .iter()
                .map(|r| {
                    vec![
                        render::printable(&r.subject),
                        r.right.clone(),
                        render::printable(&r.via.join(", ")),
                    ]
                })
                .collect();
            print(&render::table(&["SUBJECT", "RIGHT", "VIA"], &rows))?;
        }
    }
    Ok(exit::OK)
}

async fn impersonators(client: &Client, output: Option<Output>) -> Result<u8, Error> {
    let control = Kind::<PrivilegedAccessControl>::new(client)
        .get_opt(CONTROL_NAME)
        .await?;
    let Some(control) = control else {
        println(
            "kubepam is off: there is no PrivilegedAccessControl default (kubectl pam enable)",
        )?;
        return Ok(exit::OK);
    };
    let rights = control.status.map(|s| s.impersonators).unwrap_or_default();
    match output {
        Some(Output::Json) => println(&serde_json::to_string_pretty(&rights).unwrap_or_default())?,
        Some(Output::Yaml) => print(&serde_yaml_ng::to_string(&rights).unwrap_or_default())?,
        _ if rights.is_empty() => println(
            "nobody holds impersonate rights on the identities kubepam trusts (as RBAC says; \
             members of system:masters can do anything)",
        )?,
        _ => {
            let rows: Vec<Vec<String>> = rights
                .iter()
                .map(|r| {
                    vec![
                        render::printable(&r.subject),
                        render::printable(&r.targets.join(", ")),
                        render::printable(&r.via.join(", ")),
                    ]
                })
                .collect();
            print(&render::table(
                &["SUBJECT", "MAY IMPERSONATE", "VIA"],
                &rows,
            ))?;
        }
    }
    Ok(exit::OK)
}

async fn policy_list(client: &Client, output: Option<Output>) -> Result<u8, Error> {
    let mut policies = Kind::<AccessPolicy>::new(client).list().await?;
    policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    if !print_list(&policies, output, "AccessPolicies")? {
        // The default group only fills a column: a control that cannot be read leaves it out.
        let control = Kind::<PrivilegedAccessControl>::new(client)
            .get_opt(CONTROL_NAME)
            .await
            .ok()
            .flatten();
        let default_group = control
            .as_ref()
            .map(|c| c.spec.default_approver_group.as_str());
        let wide = output == Some(Output::Wide);
        print(&render::policies_table(
            &policies,
            default_group,
            Utc::now(),
            wide,
        ))?;
    }
    Ok(exit::OK)
}

async fn policy_delete(client: &Client, what: &str, output: Option<Output>) -> Result<u8, Error> {
    let policies = Kind::<AccessPolicy>::new(client);
    let mut name = what.to_owned();
    let mut deleted = policies.delete(&name).await?;
    if !deleted && select::looks_like_id(what) {
        let all = policies.list().await?;
        if let Some(found) = select::find_policy(&all, what).and_then(|p| p.metadata.name.clone()) {
            deleted = policies.delete(&found).await?;
            name = found;
        }
    }
    if !deleted {
        return Err(Error::NotFound {
            kind: "AccessPolicy",
            what: what.to_owned(),
            hint: "kubectl pam policy list shows the policies and their ids",
        });
    }
    match output {
        Some(Output::Name) => println(&format!("accesspolicy.kubepam.io/{name}"))?,
        _ => println(&format!("accesspolicy.kubepam.io \"{name}\" deleted"))?,
    }
    Ok(exit::OK)
}

/// `--timeout`, parsed.
fn wait_timeout(timeout: Option<&str>) -> Result<Option<chrono::TimeDelta>, Error> {
    Ok(timeout
        .map(duration::parse)
        .transpose()
        .map_err(objects::Error::from)?)
}

async fn request(
    client: &Client,
    args: &cli::Request,
    namespace: Option<String>,
    output: Option<Output>,
) -> Result<u8, Error> {
    let timeout = wait_timeout(args.timeout.as_deref())?;
    let start_at = objects::start_time(
        args.start_at.as_deref(),
        args.start_in.as_deref(),
        Utc::now(),
    )?;
    let policy = Kind::<AccessPolicy>::new(client)
        .get_opt(&args.policy)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "AccessPolicy",
            what: args.policy.clone(),
            hint: "kubectl pam policy list shows what can be requested",
        })?;
    let namespace = objects::request_namespace(&args.policy, &policy.spec, namespace.as_deref())?;
    if args.emergency && policy.spec.break_glass.is_none() {
        return Err(Error::NoBreakGlass {
            policy: args.policy.clone(),
        });
    }
    let request = objects::build_request(&objects::RequestArgs {
        policy: args.policy.clone(),
        name: args.name.clone(),
        reason: args.reason.clone(),
        duration: args.duration.clone(),
        namespace,
        start_at,
        extends: None,
        emergency: args.emergency,
    })?;
    let created = Kind::<ElevationRequest>::new(client)
        .create(&request)
        .await?;
    let line = render::created_line(&created);
    if !args.wait {
        print_object(&created, output, &line)?;
        return Ok(exit::OK);
    }
    wait_for_decision(client, &created, &line, timeout, output).await
}

/// `extend NAME`: a new request under NAME's policy and namespace that continues its grant.
/// The plugin refuses what it can see will not work (not the caller's, not Approved); the API
/// server's admission has the last word.
async fn extend(
    client: &Client,
    args: &cli::Extend,
    namespace: Option<String>,
    output: Option<Output>,
) -> Result<u8, Error> {
    let timeout = wait_timeout(args.timeout.as_deref())?;
    let requests = Kind::<ElevationRequest>::new(client);
    let extended = find_request(&requests, &args.name).await?;
    let name = extended.metadata.name.clone().unwrap_or_default();
    let me = whoami(client).await?;
    if let Some(why) = select::why_not_extendable(&extended, &me.username) {
        return Err(Error::NotExtendable { name, why });
    }
    if let Some(given) = namespace.filter(|n| Some(n) != extended.spec.namespace.as_ref()) {
        return Err(Error::Usage(format!(
            "an extension keeps the namespace of the grant it continues ({}), not {given}: \
             leave out --namespace",
            extended.spec.namespace.as_deref().unwrap_or("cluster-wide")
        )));
    }
    let request = objects::build_request(&objects::RequestArgs {
        policy: extended.spec.policy.clone(),
        name: None,
        reason: args.reason.clone(),
        duration: Some(args.by.clone()),
        namespace: extended.spec.namespace.clone(),
        start_at: None,
        extends: Some(name.clone()),
        emergency: false,
    })?;
    let created = requests.create(&request).await?;
    let line = format!(
        "{} created: extends {name} by {}",
        render::object_name(&created),
        args.by
    );
    if !args.wait {
        print_object(&created, output, &line)?;
        return Ok(exit::OK);
    }
    wait_for_decision(client, &created, &line, timeout, output).await
}

/// `--wait`: follow a new request until it leaves Pending. Approved counts at once, even while
/// a booked window has not opened.
async fn wait_for_decision(
    client: &Client,
    created: &ElevationRequest,
    line: &str,
    timeout: Option<chrono::TimeDelta>,
    output: Option<Output>,
) -> Result<u8, Error> {
    let name = created.metadata.name.clone().unwrap_or_default();
    if output.is_none() || output == Some(Output::Wide) {
        println(&format!(
            "{line}; waiting for a decision (Ctrl-C stops waiting, not the request)"
        ))?;
    }
    let decided = |r: &ElevationRequest| {
        r.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p != Phase::Pending)
    };
    let requests = Kind::<ElevationRequest>::new(client);
    let watch = requests.wait_until(&name, decided);
    let result = match timeout {
        Some(t) => tokio::time::timeout(t.to_std().unwrap_or_default(), watch)
            .await
            .map_err(|_| Error::Timeout(duration::format(t)))?,
        None => watch.await,
    };
    let finished = result?.ok_or_else(|| Error::NotFound {
        kind: "ElevationRequest",
        what: name.clone(),
        hint: "it was deleted while waiting",
    })?;
    outcome(&finished, output)
}

/// Print how a request ended; Approved exits 0, anything else is a failure.
fn outcome(request: &ElevationRequest, output: Option<Output>) -> Result<u8, Error> {
    let status = request.status.clone().unwrap_or_default();
    let name = request.metadata.name.clone().unwrap_or_default();
    let phase = status.phase.map_or("unknown", |p| p.as_str());
    if status.phase == Some(Phase::Approved) {
        print_object(request, output, &render::approved_line(request, Utc::now()))?;
        return Ok(exit::OK);
    }
    let by = if status.decided_by.is_empty() {
        String::new()
    } else {
        format!(" by {}", status.decided_by.join(", "))
    };
    let why = status
        .history
        .last()
        .and_then(|h| h.comment.clone())
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    if matches!(output, Some(Output::Json | Output::Yaml | Output::Name)) {
        print_object(request, output, "")?;
    }
    Err(Error::NotApproved {
        name,
        phase: phase.to_owned(),
        detail: format!("{by}{why}"),
    })
}

/// A request by name, or by request id when no request has that name.
async fn find_request(
    requests: &Kind<ElevationRequest>,
    what: &str,
) -> Result<ElevationRequest, Error> {
    // Only an object name may reach a URL: `x/status` or `x?y` would name something else.
    if kubepam_core::grant::is_object_name(what)
        && let Some(r) = requests.get_opt(what).await?
    {
        return Ok(r);
    }
    let all = requests.list().await?;
    select::find_request(&all, what)
        .cloned()
        .ok_or_else(|| Error::NotFound {
            kind: "ElevationRequest",
            what: what.to_owned(),
            hint: "kubectl pam list shows the requests, -o wide their ids",
        })
}

async fn status(client: &Client, what: &str, output: Option<Output>) -> Result<u8, Error> {
    let requests = Kind::<ElevationRequest>::new(client);
    let request = find_request(&requests, what).await?;
    match output {
        Some(o @ (Output::Json | Output::Yaml)) => {
            print(&render::serialize(&request, o).map_err(Error::Output)?)?;
        }
        Some(Output::Name) => println(&render::object_name(&request))?,
        Some(Output::Wide) => print(&render::requests_table(
            std::slice::from_ref(&request),
            Utc::now(),
            true,
        ))?,
        Some(Output::Table) | None => {
            // The extensions only add a line: a caller who may not list requests still sees
            // the request itself.
            let name = request.metadata.name.as_deref().unwrap_or_default();
            let extensions = requests
                .list()
                .await
                .map(|all| select::extensions_of(&all, name))
                .unwrap_or_default();
            // The policy only names the next escalation group; unreadable, it is left out.
            let escalates = request
                .status
                .as_ref()
                .is_some_and(|s| s.escalates_at.is_some());
            let policy = if escalates && kubepam_core::grant::is_object_name(&request.spec.policy) {
                Kind::<AccessPolicy>::new(client)
                    .get_opt(&request.spec.policy)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            print(&render::describe_request_with(
                &request,
                &extensions,
                policy.as_ref(),
                Utc::now(),
            ))?;
        }
    }
    Ok(exit::OK)
}

async fn list(client: &Client, args: &cli::List, output: Option<Output>) -> Result<u8, Error> {
    let filter = Filter {
        phase: args.status.map(Into::into),
        mine: args.mine,
        to_review: args.to_review,
        unreviewed: args.unreviewed,
    };
    let me = if filter.needs_me() {
        Some(whoami(client).await?)
    } else {
        None
    };
    let all = Kind::<ElevationRequest>::new(client).list().await?;
    let caller = match me {
        Some(me) if filter.to_review => {
            let approves = policies_rbac_approves(client, &all, &me).await;
            Some(select::Caller { me, approves })
        }
        Some(me) => Some(select::Caller::from(me)),
        None => None,
    };
    let requests = select::filter_requests(all, &filter, caller.as_ref());
    if !print_list(&requests, output, "ElevationRequests")? {
        let wide = output == Some(Output::Wide);
        let now = Utc::now();
        let table = match &caller {
            _ if filter.unreviewed => render::unreviewed_table(&requests, now, wide),
            Some(caller) if filter.to_review => {
                render::review_queue_table(&requests, caller, now, wide)
            }
            _ => render::requests_table(&requests, now, wide),
        };
        print(&table)?;
    }
    Ok(exit::OK)
}

/// The policies RBAC lets the caller approve, among those that matter for `--to-review`: one
/// `SelfSubjectAccessReview` per policy name. A check that fails counts as "not allowed": the
/// listing still shows what the caller's groups let them decide.
async fn policies_rbac_approves(
    client: &Client,
    requests: &[ElevationRequest],
    me: &select::Me,
) -> BTreeSet<String> {
    let names = select::policies_to_ask_about(requests, me);
    let answers = futures::future::join_all(
        names
            .iter()
            .map(|policy| client::may_approve_policy(client, policy)),
    )
    .await;
    names
        .into_iter()
        .zip(answers)
        .filter_map(|(policy, allowed)| matches!(allowed, Ok(true)).then_some(policy))
        .collect()
}

async fn decide(
    client: &Client,
    args: &cli::Review,
    decision: ReviewDecision,
    output: Option<Output>,
) -> Result<u8, Error> {
    let me = whoami(client).await?;
    let patch = objects::review_patch(&me.username, decision, args.comment.as_deref());
    let requests = Kind::<ElevationRequest>::new(client);
    let by_name = if kubepam_core::grant::is_object_name(&args.name) {
        requests.merge_patch(&args.name, &patch).await?
    } else {
        None
    };
    let patched = if let Some(r) = by_name {
        r
    } else {
        // Not a name: perhaps the seed's request id.
        let found = find_request(&requests, &args.name).await?;
        let name = found.metadata.name.unwrap_or_default();
        let gone = Error::NotFound {
            kind: "ElevationRequest",
            what: name.clone(),
            hint: "it was deleted meanwhile",
        };
        requests.merge_patch(&name, &patch).await?.ok_or(gone)?
    };
    let verb = match decision {
        ReviewDecision::Approve => "approved",
        ReviewDecision::Deny => "denied",
        ReviewDecision::Revoke => "revoked",
        ReviewDecision::Release => "released",
        ReviewDecision::Confirm => "confirmed",
        ReviewDecision::Reject => "rejected",
    };
    let line = format!(
        "{} {verb} by {} (kubepam updates its status in a moment: kubectl pam status {})",
        render::object_name(&patched),
        me.username,
        patched.metadata.name.as_deref().unwrap_or_default()
    );
    print_object(&patched, output, &line)?;
    Ok(exit::OK)
}

async fn can_i(
    client: &Client,
    args: &cli::CanI,
    namespace: String,
    output: Option<Output>,
) -> Result<u8, Error> {
    let usage = |e: task::Error| Error::Usage(e.to_string());
    let query = Query {
        verb: task::parse_verb(&args.verb).map_err(usage)?,
        resource: task::parse_resource(&args.resource).map_err(usage)?,
        name: args.name.clone(),
        namespace: Some(namespace),
    };
    let me = whoami(client).await?;
    let policies = Kind::<AccessPolicy>::new(client).list().await?;
    let control = Kind::<PrivilegedAccessControl>::new(client)
        .get_opt(CONTROL_NAME)
        .await?;
    let requests: Vec<ElevationRequest> = Kind::<ElevationRequest>::new(client)
        .list()
        .await?
        .into_iter()
        .filter(|r| r.spec.requester.as_deref() == Some(me.username.as_str()))
        .collect();
    // ClusterRoles of Role policies, where the caller may read them; unreadable ones are
    // simply not matched.
    let mut roles = BTreeMap::new();
    let cluster_roles: kube::Api<ClusterRole> = kube::Api::all(client.clone());
    for name in policies.iter().flat_map(|p| p.spec.role_names()) {
        if roles.contains_key(&name) {
            continue;
        }
        if let Ok(role) = cluster_roles.get(&name).await {
            roles.insert(name, role.rules.unwrap_or_default());
        }
    }
    let rbac_allowed = rbac_allows(client, &query).await?;
    let now = Utc::now();
    let answer = access::can_i(
        &query,
        &Facts {
            me: &me,
            policies: &policies,
            roles: &roles,
            requests: &requests,
            control: control.as_ref(),
            rbac_allowed,
            now,
        },
    );
    match output {
        Some(o @ (Output::Json | Output::Yaml)) => {
            print(&render::serialize(&answer, o).map_err(Error::Output)?)?;
        }
        _ => print(&access::render(&answer, now))?,
    }
    Ok(if answer.allowed {
        exit::OK
    } else {
        exit::FAILURE
    })
}
