//! What the plugin prints: kubectl-like tables with relative times, a `describe`-like view of
//! one request, and `-o json|yaml|name` output. Pure functions of objects and `now`; colour is
//! written as ANSI codes and stripped on the way out when stdout is not a terminal.

use std::fmt::Write as _;
use std::io::Write as _;

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, TimeDelta, Utc};
use kube::Resource;
use serde::Serialize;

use super::select::{self, Caller, ReviewState, ToReview};
use super::task::format_task;
use kubepam_core::api::{
    AccessPolicy, CONDITION_ACCEPTED, ElevationRequest, ElevationRequestStatus, EscalationStep,
    Phase, PolicyType, ReviewDecision, find_condition, from_k8s_time,
};
use kubepam_core::duration;
use kubepam_core::lifecycle::{CONDITION_RELEASED, CONDITION_SCHEDULED, reason};
use kubepam_core::util::time_for_people;

/// How `-o` asked for output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// A table (the default).
    #[default]
    #[value(skip)]
    Table,
    /// A table with more columns.
    Wide,
    /// The objects as JSON.
    Json,
    /// The objects as YAML.
    Yaml,
    /// `kind.group/name` per object.
    Name,
}

/// A duration the way `kubectl get` prints ages (apimachinery's `HumanDuration`): `45s`,
/// `5m30s`, `3h`, `2d4h`, `1y20d`.
pub fn human_duration(d: TimeDelta) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// How long ago `t` was, as an AGE column shows it.
pub fn age(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(|| "<unknown>".to_owned(), |t| human_duration(now - t))
}

/// A moment relative to now: `in 28m` or `3m ago`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t > now {
        format!("in {}", human_duration(t - now))
    } else {
        format!("{} ago", human_duration(now - t))
    }
}

fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// A phase, coloured: green Approved, yellow Pending, red Denied and Revoked, dim Expired.
pub fn phase_cell(phase: Option<Phase>) -> String {
    let Some(phase) = phase else {
        return "<none>".to_owned();
    };
    let style = match phase {
        Phase::Approved => AnsiColor::Green.on_default(),
        Phase::Pending => AnsiColor::Yellow.on_default(),
        Phase::Denied | Phase::Revoked => AnsiColor::Red.on_default(),
        Phase::Expired => Style::new().dimmed(),
    };
    paint(style, phase.as_str())
}

/// `error: ` in bold red, as kubectl and cargo start an error line.
pub fn error_prefix() -> String {
    paint(AnsiColor::Red.on_default().bold(), "error:")
}

/// Lay out rows as `kubectl get` does: upper-case header, columns three spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new())
        .padding(3)
        .minwidth(0)
        .ansi(true);
    let mut text = header.join("\t");
    text.push('\n');
    for row in rows {
        // A tab or newline inside a cell would break the layout.
        let cells: Vec<String> = row.iter().map(|c| c.replace(['\t', '\n'], " ")).collect();
        text.push_str(&cells.join("\t"));
        text.push('\n');
    }
    // Writing to a Vec cannot fail; an error here would leave the text unaligned, not lost.
    if tw.write_all(text.as_bytes()).is_err() {
        return text;
    }
    match tw.into_inner() {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => text,
    }
}

/// `s` with every control character written as an escape (`\u{1b}`): text
/// from objects anyone may write, such as RBAC subject names, never moves the
/// cursor or sets colours on the reader's terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || is_invisible_format(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Characters that change how a line reads without showing: bidirectional overrides and
/// isolates (which can make `alice` read as another name), zero-width characters, and the
/// line and paragraph separators some terminals and shippers break lines on.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{061c}'
    )
}

fn or_none(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty())
        .map_or_else(|| "<none>".to_owned(), str::to_owned)
}

fn created(meta: &kube::api::ObjectMeta) -> Option<DateTime<Utc>> {
    meta.creation_timestamp.as_ref().map(from_k8s_time)
}

/// The table of `list` (the CRD's printer columns; `wide` adds id, approvers, deciders, the
/// request extended, and the reason).
pub fn requests_table(requests: &[ElevationRequest], now: DateTime<Utc>, wide: bool) -> String {
    requests_table_with(requests, now, wide, None)
}

/// An extra column of the requests table: its header and its cell for a request.
type Column<'a> = (&'a str, &'a dyn Fn(&ElevationRequest) -> String);

fn requests_table_with(
    requests: &[ElevationRequest],
    now: DateTime<Utc>,
    wide: bool,
    extra: Option<Column<'_>>,
) -> String {
    let mut header = vec![
        "NAME",
        "STATUS",
        "REQUESTER",
        "POLICY",
        "NAMESPACE",
        "STARTS",
        "EXPIRES",
    ];
    if let Some((title, _)) = extra {
        header.push(title);
    }
    header.push("AGE");
    if wide {
        header.extend(["REQUEST-ID", "APPROVERS", "DECIDED-BY", "EXTENDS", "REASON"]);
    }
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            let status = r.status.as_ref();
            let phase = status.and_then(|s| s.phase);
            let deadline = status
                .and_then(|s| s.deadline)
                .filter(|_| phase.is_none_or(|p| !p.is_final()));
            let mut row = vec![
                or_none(r.metadata.name.as_deref()),
                phase_cell(phase),
                printable(&or_none(r.spec.requester.as_deref())),
                r.spec.policy.clone(),
                or_none(r.spec.namespace.as_deref()),
                status
                    .and_then(|s| s.starts_at)
                    .map_or_else(|| "<none>".to_owned(), |t| relative(t, now)),
                deadline.map_or_else(|| "<none>".to_owned(), |d| relative(d, now)),
            ];
            if let Some((_, cell)) = extra {
                row.push(cell(r));
            }
            row.push(age(created(&r.metadata), now));
            if wide {
                let decided_by = status.map(|s| s.decided_by.join(",")).unwrap_or_default();
                row.extend([
                    or_none(status.and_then(|s| s.request_id.as_deref())),
                    printable(&or_none(Some(&select::deciding_groups(r).join(",")))),
                    printable(&or_none(Some(&decided_by))),
                    or_none(r.spec.extends.as_deref()),
                    printable(&r.spec.reason),
                ]);
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// A review's due time for a table: `in 23h`, or `OVERDUE (due 2h ago)` in red.
fn review_due_cell(r: &ElevationRequest, now: DateTime<Utc>) -> String {
    let due = r.status.as_ref().and_then(|s| s.review_due_at);
    let overdue = select::review_state(r) == Some(ReviewState::Overdue);
    match (due, overdue) {
        (Some(due), true) => paint(
            AnsiColor::Red.on_default().bold(),
            &format!("OVERDUE (due {})", relative(due, now)),
        ),
        (None, true) => paint(AnsiColor::Red.on_default().bold(), "OVERDUE"),
        (Some(due), false) => relative(due, now),
        (None, false) => "<none>".to_owned(),
    }
}

/// The table of `list --to-review`: the requests table with a REVIEW column saying what is
/// asked of the caller: `decide` (approve or deny), or `emergency` (confirm or reject), with
/// `OVERDUE` when that review is late.
pub fn review_queue_table(
    requests: &[ElevationRequest],
    caller: &Caller,
    now: DateTime<Utc>,
    wide: bool,
) -> String {
    let cell = |r: &ElevationRequest| match select::to_review_by(r, caller) {
        Some(ToReview::Decide) => "decide".to_owned(),
        Some(ToReview::Emergency(ReviewState::Overdue)) => format!(
            "emergency, {}",
            paint(AnsiColor::Red.on_default().bold(), "OVERDUE")
        ),
        Some(ToReview::Emergency(_)) => paint(AnsiColor::Magenta.on_default(), "emergency"),
        None => "<none>".to_owned(),
    };
    requests_table_with(requests, now, wide, Some(("REVIEW", &cell)))
}

/// The table of `list --unreviewed`: emergency grants waiting for their review, with who took
/// them, under which policy, when they were granted and when the review is due.
pub fn unreviewed_table(requests: &[ElevationRequest], now: DateTime<Utc>, wide: bool) -> String {
    let mut header = vec![
        "NAME",
        "STATUS",
        "REQUESTER",
        "POLICY",
        "NAMESPACE",
        "GRANTED",
        "REVIEW-DUE",
    ];
    if wide {
        header.extend(["REQUEST-ID", "REVIEWERS", "REASON"]);
    }
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            let status = r.status.as_ref();
            let granted = status.and_then(|s| s.granted_from.or(s.decided_at));
            let mut row = vec![
                or_none(r.metadata.name.as_deref()),
                phase_cell(status.and_then(|s| s.phase)),
                printable(&or_none(r.spec.requester.as_deref())),
                r.spec.policy.clone(),
                or_none(r.spec.namespace.as_deref()),
                granted.map_or_else(|| "<none>".to_owned(), |t| relative(t, now)),
                review_due_cell(r, now),
            ];
            if wide {
                row.extend([
                    or_none(status.and_then(|s| s.request_id.as_deref())),
                    printable(&or_none(Some(&select::deciding_groups(r).join(",")))),
                    printable(&r.spec.reason),
                ]);
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// The line `request` prints once the request is created; an emergency request says it is
/// approved at once and reviewed afterwards.
pub fn created_line(r: &ElevationRequest) -> String {
    if r.spec.emergency {
        format!(
            "{} created: emergency access, approved at once without an approver; an approver \
             reviews it afterwards (kubectl pam confirm|reject)",
            object_name(r)
        )
    } else {
        format!("{} created", object_name(r))
    }
}

/// What a policy grants, as typed on the command line.
pub fn grants_cell(policy: &AccessPolicy) -> String {
    match policy.spec.policy_type {
        PolicyType::Task => policy
            .spec
            .task
            .as_ref()
            .map_or_else(|| "<none>".to_owned(), format_task),
        PolicyType::Role | PolicyType::RoleGroup => {
            format!("clusterroles {}", policy.spec.role_names().join(","))
        }
    }
}

/// `breakGlass.reviewWithin` when absent, as the API documents it.
const REVIEW_WITHIN_DEFAULT: &str = "24h";

/// A policy's break glass for a table: `oncall,sre (1h, review within 24h)`.
pub fn break_glass_cell(policy: &AccessPolicy) -> String {
    policy.spec.break_glass.as_ref().map_or_else(
        || "<none>".to_owned(),
        |b| {
            printable(&format!(
                "{} ({}, review within {})",
                b.groups.join(","),
                b.max_duration,
                b.review_within.as_deref().unwrap_or(REVIEW_WITHIN_DEFAULT)
            ))
        },
    )
}

/// A policy's escalation for a table, as `--escalate-after` takes it: `30m=ops-leads,2h=sre`.
pub fn escalation_cell(policy: &AccessPolicy) -> String {
    if policy.spec.escalation.is_empty() {
        return "<none>".to_owned();
    }
    let steps: Vec<String> = policy
        .spec
        .escalation
        .iter()
        .map(|s| format!("{}={}", s.after, s.approver_group))
        .collect();
    printable(&steps.join(","))
}

/// The table of `policy list`; `default_group` is the control's default approver group.
/// BREAK-GLASS and ESCALATION columns appear when a listed policy has them, and always in
/// `wide`.
pub fn policies_table(
    policies: &[AccessPolicy],
    default_group: Option<&str>,
    now: DateTime<Utc>,
    wide: bool,
) -> String {
    let mut header = vec![
        "NAME",
        "TYPE",
        "GRANTS",
        "SCOPE",
        "APPROVAL",
        "APPROVERS",
        "ACCEPTED",
        "AGE",
    ];
    let routing = wide
        || policies
            .iter()
            .any(|p| p.spec.break_glass.is_some() || !p.spec.escalation.is_empty());
    if routing {
        header.extend(["BREAK-GLASS", "ESCALATION"]);
    }
    if wide {
        header.extend(["POLICY-ID", "MAX-DURATION", "APPROVALS", "MESSAGE"]);
    }
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|p| {
            let conditions = p.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
            let accepted = find_condition(conditions, CONDITION_ACCEPTED);
            let namespaces = p.spec.namespaces();
            let approvers = match (&p.spec.approver_group, default_group) {
                (Some(g), _) => g.clone(),
                (None, Some(d)) => format!("{d} (default)"),
                (None, None) => "<default>".to_owned(),
            };
            let accepted_cell = match accepted {
                Some(c) if c.status == "True" => paint(AnsiColor::Green.on_default(), "True"),
                Some(c) => paint(
                    AnsiColor::Red.on_default(),
                    &format!("False ({})", c.reason),
                ),
                None => "<pending>".to_owned(),
            };
            let mut row = vec![
                or_none(p.metadata.name.as_deref()),
                p.spec.policy_type.as_str().to_owned(),
                grants_cell(p),
                if namespaces.is_empty() {
                    "<cluster>".to_owned()
                } else {
                    namespaces.join(",")
                },
                p.spec.approval_type.as_str().to_owned(),
                approvers,
                accepted_cell,
                age(created(&p.metadata), now),
            ];
            if routing {
                row.extend([break_glass_cell(p), escalation_cell(p)]);
            }
            if wide {
                row.extend([
                    or_none(p.status.as_ref().and_then(|s| s.policy_id.as_deref())),
                    or_none(p.spec.max_duration.as_deref()),
                    p.spec.required_approvals.unwrap_or(1).to_string(),
                    or_none(accepted.map(|c| c.message.as_str())),
                ]);
            }
            row
        })
        .collect();
    table(&header, &rows)
}

fn decision_cell(decision: ReviewDecision) -> String {
    match decision {
        ReviewDecision::Approve => paint(AnsiColor::Green.on_default(), "Approve"),
        ReviewDecision::Deny => paint(AnsiColor::Red.on_default(), "Deny"),
        ReviewDecision::Revoke => paint(AnsiColor::Red.on_default(), "Revoke"),
        ReviewDecision::Release => paint(AnsiColor::Cyan.on_default(), "Release"),
        ReviewDecision::Confirm => paint(AnsiColor::Green.on_default(), "Confirm"),
        ReviewDecision::Reject => paint(AnsiColor::Red.on_default(), "Reject"),
    }
}

/// A moment for `status`: `in 28m (2025-01-01T12:28:00Z)`.
fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(
        || "<none>".to_owned(),
        |t| format!("{} ({})", relative(t, now), time_for_people(t)),
    )
}

/// The window of a booked request (`spec.startAt`): when it opens or opened, or that it never
/// did; `None` for a request that opens at its approval.
fn window_line(
    r: &ElevationRequest,
    status: &ElevationRequestStatus,
    now: DateTime<Utc>,
) -> Option<String> {
    let booked = r.spec.start_at?;
    let opens = status.granted_from.unwrap_or(booked);
    let scheduled = find_condition(&status.conditions, CONDITION_SCHEDULED);
    let never_opened = scheduled
        .is_some_and(|c| c.status == "False" && c.reason != reason::WINDOW_OPENED)
        || status.granted_from.is_none();
    let text = match status.phase {
        Some(Phase::Approved) if opens > now => format!("booked: opens {}", when(Some(opens), now)),
        Some(Phase::Approved) => format!("opened {}", when(Some(opens), now)),
        Some(p) if p.is_final() && never_opened => {
            format!("never opened (booked for {})", when(Some(opens), now))
        }
        Some(p) if p.is_final() => format!("opened {}", when(Some(opens), now)),
        _ if opens > now => format!(
            "booked: opens {} once approved (at the approval, if that comes later)",
            when(Some(opens), now)
        ),
        _ => format!(
            "booked from {}: opens at the approval",
            when(Some(opens), now)
        ),
    };
    Some(text)
}

/// Which grant an extension continues, and where it sits in its chain.
fn extends_line(
    r: &ElevationRequest,
    status: &ElevationRequestStatus,
    now: DateTime<Utc>,
) -> Option<String> {
    let extends = r.spec.extends.as_deref()?;
    Some(match &status.extension {
        Some(record) => format!(
            "{extends} (extension {} of a grant first opened {}; continues from {})",
            record.number,
            when(Some(record.chain_start), now),
            when(Some(record.continues_from), now)
        ),
        None if status.phase.is_none_or(|p| p == Phase::Pending) => {
            format!("{extends} (continues its grant once approved)")
        }
        None => extends.to_owned(),
    })
}

/// Who released the grant and when: the requester's `Release` review, and the `Released`
/// condition once kubepam has ended the grant.
fn release_line(
    r: &ElevationRequest,
    status: &ElevationRequestStatus,
    now: DateTime<Utc>,
) -> Option<String> {
    let requester = r.spec.requester.as_deref()?;
    let review = r
        .spec
        .reviews
        .get(requester)
        .filter(|review| review.decision == ReviewDecision::Release)?;
    let at = find_condition(&status.conditions, CONDITION_RELEASED)
        .filter(|c| c.status == "True")
        .map_or_else(
            || "; kubepam ends the grant in a moment".to_owned(),
            |c| {
                format!(
                    " {}",
                    when(Some(from_k8s_time(&c.last_transition_time)), now)
                )
            },
        );
    let comment = review
        .comment
        .as_deref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    Some(format!("by {requester}{at}{comment}"))
}

/// The grant's part of `status`: when it opens and ends, the requests that extend it, and its
/// release.
fn grant_fields(
    r: &ElevationRequest,
    status: &ElevationRequestStatus,
    extended_by: &[ElevationRequest],
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if status.granted_from.is_some() {
        fields.push(("Granted from", when(status.granted_from, now)));
    }
    if status.granted_until.is_some() {
        fields.push(("Granted until", when(status.granted_until, now)));
    }
    if !extended_by.is_empty() {
        let names: Vec<String> = extended_by
            .iter()
            .map(|e| {
                let phase = e.status.as_ref().and_then(|s| s.phase);
                format!(
                    "{} ({})",
                    or_none(e.metadata.name.as_deref()),
                    phase.map_or("new", Phase::as_str)
                )
            })
            .collect();
        fields.push(("Extended by", names.join(", ")));
    }
    if let Some(released) = release_line(r, status, now) {
        fields.push(("Released", released));
    }
    fields
}

/// The escalation step that opens at `status.escalatesAt`: the one whose wait from submission
/// ends then, else the first whose group may not decide yet.
fn next_escalation<'a>(
    r: &ElevationRequest,
    status: &ElevationRequestStatus,
    policy: &'a AccessPolicy,
) -> Option<&'a EscalationStep> {
    let at = status.escalates_at?;
    let steps = &policy.spec.escalation;
    let opens_then = |step: &&EscalationStep| {
        let after = duration::parse(&step.after).ok()?;
        let opens = status.submitted_at?.checked_add_signed(after)?;
        Some((opens - at).num_seconds().abs() <= 1)
    };
    let deciding = select::deciding_groups(r);
    steps
        .iter()
        .find(|step| opens_then(step) == Some(true))
        .or_else(|| {
            steps
                .iter()
                .find(|step| !deciding.contains(&step.approver_group.as_str()))
        })
}

/// Who may decide now, and how the request escalates: the `Approvers`, `Escalates` and
/// `Check a user` lines of `status`.
fn routing_fields(
    r: &ElevationRequest,
    status: &ElevationRequestStatus,
    policy: Option<&AccessPolicy>,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let groups = select::deciding_groups(r);
    let mut approvers = if groups.is_empty() {
        "<none>".to_owned()
    } else {
        printable(&groups.join(", "))
    };
    if let Some(t) = status.approval_type {
        let _ = write!(
            approvers,
            " ({}, {} approval(s) needed)",
            t.as_str(),
            status.required_approvals.unwrap_or(1)
        );
    }
    let escalated = find_condition(&status.conditions, select::CONDITION_ESCALATED)
        .is_some_and(|c| c.status == "True");
    if escalated {
        approvers.push_str(", escalated");
    }
    let mut fields = vec![("Approvers", approvers)];
    if status.phase == Some(Phase::Pending)
        && let Some(at) = status.escalates_at
    {
        let step = policy.and_then(|p| next_escalation(r, status, p));
        let to = step.map_or_else(String::new, |s| {
            format!(": {} may also decide", printable(&s.approver_group))
        });
        fields.push(("Escalates", format!("{}{to}", when(Some(at), now))));
    }
    // Beside the groups, RBAC may let anyone decide (verb approve on the policy).
    let policy_name = printable(&r.spec.policy);
    fields.push((
        "Check a user",
        format!(
            "kubectl auth can-i approve accesspolicies/{policy_name} --as USER (whom RBAC \
             allows to approve the policy may decide too)"
        ),
    ));
    fields
}

/// Who reviewed an emergency grant, when, and what they said: the history entry kubepam wrote
/// (`Confirmed` / `Rejected`), else the review itself.
fn verdict_by(r: &ElevationRequest, status: &ElevationRequestStatus, now: DateTime<Utc>) -> String {
    let entry = status
        .history
        .iter()
        .rev()
        .find(|h| h.action == "Confirmed" || h.action == "Rejected");
    if let Some(h) = entry {
        let comment = h
            .comment
            .as_deref()
            .map(|c| format!(": {}", printable(c)))
            .unwrap_or_default();
        return format!(
            " by {} {}{comment}",
            printable(&h.actor),
            when(Some(h.time), now)
        );
    }
    r.spec
        .reviews
        .iter()
        .find(|(_, v)| matches!(v.decision, ReviewDecision::Confirm | ReviewDecision::Reject))
        .map(|(who, v)| {
            let comment = v
                .comment
                .as_deref()
                .map(|c| format!(": {}", printable(c)))
                .unwrap_or_default();
            format!(" by {}{comment}", printable(who))
        })
        .unwrap_or_default()
}

/// The emergency part of `status`: that it was break glass, and where its review stands.
fn emergency_fields(
    r: &ElevationRequest,
    status: &ElevationRequestStatus,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    if !select::is_emergency(r) {
        return Vec::new();
    }
    let name = or_none(r.metadata.name.as_deref());
    let due = when(status.review_due_at, now);
    let review = match select::review_state(r) {
        Some(ReviewState::Awaiting) => {
            format!("awaiting an approver's review, due {due} (kubectl pam confirm|reject {name})")
        }
        Some(ReviewState::Overdue) => format!(
            "{}: was due {due} (kubectl pam confirm|reject {name})",
            paint(AnsiColor::Red.on_default().bold(), "OVERDUE")
        ),
        Some(ReviewState::Confirmed) => format!(
            "{}{}",
            paint(AnsiColor::Green.on_default(), "confirmed"),
            verdict_by(r, status, now)
        ),
        Some(ReviewState::Rejected) => format!(
            "{}{}",
            paint(AnsiColor::Red.on_default(), "rejected"),
            verdict_by(r, status, now)
        ),
        None if status.phase.is_none_or(|p| p == Phase::Pending) => {
            "due once kubepam has granted it".to_owned()
        }
        None => "<none>".to_owned(),
    };
    vec![
        (
            "Emergency",
            "yes (break glass: approved at once without an approver, reviewed afterwards)"
                .to_owned(),
        ),
        ("Review", review),
    ]
}

/// `status NAME`: one request the way `kubectl describe` shows an object, with the requests
/// that extend it (`extended_by`, oldest first).
pub fn describe_request(
    r: &ElevationRequest,
    extended_by: &[ElevationRequest],
    now: DateTime<Utc>,
) -> String {
    describe_request_with(r, extended_by, None, now)
}

/// [`describe_request`], with the request's policy when the caller may read it: it names the
/// group the next escalation step lets decide.
pub fn describe_request_with(
    r: &ElevationRequest,
    extended_by: &[ElevationRequest],
    policy: Option<&AccessPolicy>,
    now: DateTime<Utc>,
) -> String {
    let status = r.status.clone().unwrap_or_default();
    let when = |t: Option<DateTime<Utc>>| when(t, now);
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", or_none(r.metadata.name.as_deref())),
        ("Request ID", or_none(status.request_id.as_deref())),
        ("Status", phase_cell(status.phase)),
        ("Requester", or_none(r.spec.requester.as_deref())),
        ("Policy", r.spec.policy.clone()),
        ("Namespace", or_none(r.spec.namespace.as_deref())),
        ("Reason", r.spec.reason.clone()),
        ("Duration", or_none(r.spec.duration.as_deref())),
    ];
    if let Some(start) = r.spec.start_at {
        fields.push(("Start at", when(Some(start))));
    }
    if let Some(window) = window_line(r, &status, now) {
        fields.push(("Window", window));
    }
    if let Some(extends) = extends_line(r, &status, now) {
        fields.push(("Extends", extends));
    }
    fields.extend(emergency_fields(r, &status, now));
    fields.extend(routing_fields(r, &status, policy, now));
    fields.push(("Submitted", when(status.submitted_at)));
    if status.phase == Some(Phase::Pending) {
        fields.push(("Expires", when(status.expires_at)));
    }
    if status.decided_at.is_some() {
        let by = if status.decided_by.is_empty() {
            String::new()
        } else {
            format!(" by {}", status.decided_by.join(", "))
        };
        fields.push(("Decided", format!("{}{by}", when(status.decided_at))));
    }
    fields.extend(grant_fields(r, &status, extended_by, now));
    fields.push(("Executions", status.execution_count.to_string()));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (key, value) in &fields {
        let _ = writeln!(out, "{:<width$}{value}", format!("{key}:"));
    }
    if !r.spec.reviews.is_empty() {
        out.push_str("Reviews:\n");
        let rows: Vec<Vec<String>> = r
            .spec
            .reviews
            .iter()
            .map(|(who, review)| {
                vec![
                    format!("  {who}"),
                    decision_cell(review.decision),
                    or_none(review.comment.as_deref()),
                ]
            })
            .collect();
        out.push_str(&table(&["  REVIEWER", "DECISION", "COMMENT"], &rows));
    }
    if !status.history.is_empty() {
        out.push_str("History:\n");
        let rows: Vec<Vec<String>> = status
            .history
            .iter()
            .map(|h| {
                vec![
                    format!("  {}", relative(h.time, now)),
                    h.action.clone(),
                    h.actor.clone(),
                    or_none(h.comment.as_deref()),
                ]
            })
            .collect();
        out.push_str(&table(&["  WHEN", "ACTION", "ACTOR", "COMMENT"], &rows));
    }
    out
}

/// The line `request --wait` and `extend --wait` end with once Approved: who approved, when a
/// booked window opens (if it has not yet), and until when the grant holds.
pub fn approved_line(r: &ElevationRequest, now: DateTime<Utc>) -> String {
    let status = r.status.clone().unwrap_or_default();
    let by = if status.decided_by.is_empty() {
        String::new()
    } else {
        format!(" by {}", status.decided_by.join(", "))
    };
    let opens = status
        .granted_from
        .filter(|from| *from > now)
        .map(|from| {
            format!(
                ", opens {} ({})",
                time_for_people(from),
                relative(from, now)
            )
        })
        .unwrap_or_default();
    let until = status
        .granted_until
        .map(|u| {
            format!(
                ", granted until {} ({})",
                time_for_people(u),
                relative(u, now)
            )
        })
        .unwrap_or_default();
    let emergency = if r.spec.emergency {
        "; emergency access, approved at once: an approver reviews it afterwards"
    } else {
        ""
    };
    format!(
        "{} {}{by}{opens}{until}{emergency}",
        object_name(r),
        phase_cell(status.phase)
    )
}

/// `kind.group/name`, as `kubectl get -o name` prints it.
pub fn object_name<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}.{}/{}",
        K::kind(&()).to_lowercase(),
        K::group(&()),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

/// One object as JSON (pretty, as kubectl prints it) or YAML.
pub fn serialize<T: Serialize>(value: &T, output: Output) -> Result<String, String> {
    match output {
        Output::Yaml => serde_yaml_ng::to_string(value).map_err(|e| e.to_string()),
        _ => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string()),
    }
}

/// Several objects as kubectl prints a list: `kind: List` with `items`.
pub fn serialize_list<T: Serialize>(items: &[T], output: Output) -> Result<String, String> {
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": "" }, "items": items,
    });
    serialize(&list, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::Caller;

    #[test]
    fn text_that_would_read_differently_is_escaped() {
        // "alice" followed by a right-to-left override that would show "ecila".
        assert_eq!(printable("bob\u{202e}ecila"), "bob\\u{202e}ecila");
        assert_eq!(printable("a\u{2028}b\u{200b}c"), "a\\u{2028}b\\u{200b}c");
        assert_eq!(printable("zoë ok"), "zoë ok");
    }

    #[test]
    fn printable_escapes_what_would_drive_a_terminal() {
        assert_eq!(
            printable("User \u{1b}[2Jmallory\r"),
            "User \\u{1b}[2Jmallory\\u{d}"
        );
        assert_eq!(printable("Group ops-é"), "Group ops-é");
    }
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn strip(s: &str) -> String {
        let mut out = Vec::new();
        let mut stream = anstream::StripStream::new(&mut out);
        stream.write_all(s.as_bytes()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (3 * 86_400 + 3600, "3d1h"),
            (30 * 86_400, "30d"),
            (3 * 365 * 86_400 + 86_400, "3y1d"),
            (10 * 365 * 86_400, "10y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(TimeDelta::seconds(secs)), want, "{secs}s");
        }
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(relative(now + TimeDelta::minutes(28), now), "in 28m");
        assert_eq!(relative(now - TimeDelta::seconds(30), now), "30s ago");
    }

    #[test]
    fn tables_line_up_whatever_the_colour() {
        let rows = vec![
            vec![
                "a".to_owned(),
                phase_cell(Some(Phase::Approved)),
                "x".into(),
            ],
            vec!["longer-name".to_owned(), phase_cell(None), "y".into()],
        ];
        let out = strip(&table(&["NAME", "STATUS", "X"], &rows));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME          STATUS     X");
        assert_eq!(lines[1], "a             Approved   x");
        assert_eq!(lines[2], "longer-name   <none>     y");
    }

    /// The value of `key:` in a description.
    fn field<'a>(described: &'a str, key: &str) -> Option<&'a str> {
        described
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    }

    fn request(yaml: &str) -> ElevationRequest {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_request_row_and_description_tell_the_state() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let r = request(
            "apiVersion: kubepam.io/v1alpha1
kind: ElevationRequest
metadata: { name: alice-prod-cleanup, creationTimestamp: '2025-01-01T11:55:00Z' }
spec:
  policy: prod-delete-deployments
  namespace: prod
  reason: 'INC-1234: remove the stuck canary'
  duration: 30m
  requester: alice
  reviews: { bob: { decision: Approve, comment: ok } }
status:
  phase: Approved
  requestId: 0b7c
  approverGroup: pam-approvers
  approvalType: Manual
  deadline: '2025-01-01T12:28:00Z'
  decidedAt: '2025-01-01T11:58:00Z'
  decidedBy: [bob]
  grantedUntil: '2025-01-01T12:28:00Z'
  history:
    - { time: '2025-01-01T11:55:00Z', actor: alice, action: Pending }
    - { time: '2025-01-01T11:58:00Z', actor: bob, action: Approved, comment: 'bob: ok' }
",
        );
        let out = strip(&requests_table(std::slice::from_ref(&r), now, false));
        let row = out.lines().nth(1).unwrap();
        let cells: Vec<&str> = row
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            [
                "alice-prod-cleanup",
                "Approved",
                "alice",
                "prod-delete-deployments",
                "prod",
                "<none>",
                "in 28m",
                "5m"
            ]
        );
        let wide = strip(&requests_table(std::slice::from_ref(&r), now, true));
        assert!(wide.contains("0b7c") && wide.contains("INC-1234"));
        let described = strip(&describe_request(&r, &[], now));
        assert!(
            described.contains("Status:        Approved\n"),
            "{described}"
        );
        assert!(described.contains("Decided:       2m ago"), "{described}");
        assert!(described.contains("by bob"));
        assert!(described.contains("Granted until: in 28m"));
        assert!(described.contains("bob: ok"));
    }

    #[test]
    fn a_booked_window_shows_when_it_opens_in_the_row_and_the_description() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let booked = crate::fixtures::alice_request(
            "alice-booked",
            "{ startAt: '2025-01-01T14:00:00Z' }",
            "{ phase: Approved, decidedAt: '2025-01-01T11:58:00Z', decidedBy: [kubepam],
               grantedFrom: '2025-01-01T14:00:00Z', grantedUntil: '2025-01-01T16:00:00Z',
               startsAt: '2025-01-01T14:00:00Z', deadline: '2025-01-01T16:00:00Z',
               conditions: [{ type: Scheduled, status: 'True', reason: WindowBooked, message: m,
                              lastTransitionTime: '2025-01-01T11:58:00Z' }] }",
        );
        let out = strip(&requests_table(std::slice::from_ref(&booked), now, false));
        assert!(out.lines().next().unwrap().contains("STARTS"), "{out}");
        let row = out.lines().nth(1).unwrap();
        let cells: Vec<&str> = row
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells[4..7], ["prod", "in 120m", "in 4h"], "{row}");
        let described = strip(&describe_request(&booked, &[], now));
        for (key, value) in [
            ("Start at", "in 120m (2025-01-01T14:00:00Z)"),
            ("Window", "booked: opens in 120m (2025-01-01T14:00:00Z)"),
            ("Granted from", "in 120m (2025-01-01T14:00:00Z)"),
            ("Granted until", "in 4h (2025-01-01T16:00:00Z)"),
        ] {
            assert_eq!(field(&described, key), Some(value), "{described}");
        }
        // `--wait` ends here, before the window: it says when the grant opens.
        let line = strip(&approved_line(&booked, now));
        assert_eq!(
            line,
            "elevationrequest.kubepam.io/alice-booked Approved by kubepam, opens \
             2025-01-01T14:00:00Z (in 120m), granted until 2025-01-01T16:00:00Z (in 4h)"
        );
        // Once open, and once ended without opening.
        let later = now + TimeDelta::hours(3);
        let mut open = booked.clone();
        let status = open.status.as_mut().unwrap();
        status.starts_at = None;
        status.conditions[0].status = "False".into();
        status.conditions[0].reason = "WindowOpened".into();
        let described = strip(&describe_request(&open, &[], later));
        assert!(
            field(&described, "Window") == Some("opened 60m ago (2025-01-01T14:00:00Z)"),
            "{described}"
        );
        assert!(!strip(&approved_line(&open, later)).contains("opens"));
        let mut never = booked.clone();
        let status = never.status.as_mut().unwrap();
        status.phase = Some(Phase::Revoked);
        status.conditions[0].status = "False".into();
        status.conditions[0].reason = "ReleasedByRequester".into();
        let described = strip(&describe_request(&never, &[], now));
        assert!(
            field(&described, "Window")
                == Some("never opened (booked for in 120m (2025-01-01T14:00:00Z))"),
            "{described}"
        );
        // Pending: it opens at its start if approved by then.
        let pending = crate::fixtures::alice_request(
            "alice-booked",
            "{ startAt: '2025-01-01T14:00:00Z' }",
            "{ phase: Pending, startsAt: '2025-01-01T14:00:00Z' }",
        );
        let described = strip(&describe_request(&pending, &[], now));
        assert!(
            field(&described, "Window").is_some_and(
                |w| w.starts_with("booked: opens in 120m (2025-01-01T14:00:00Z) once approved")
            ),
            "{described}"
        );
        let late = describe_request(&pending, &[], now + TimeDelta::hours(3));
        assert_eq!(
            field(&strip(&late), "Window"),
            Some("booked from 60m ago (2025-01-01T14:00:00Z): opens at the approval")
        );
        // A request without a window has no such lines.
        let plain = crate::fixtures::alice_request("plain", "{}", "{ phase: Pending }");
        let described = strip(&describe_request(&plain, &[], now));
        assert!(
            !described.contains("Window") && !described.contains("Start at"),
            "{described}"
        );
    }

    #[test]
    fn an_extension_chain_shows_from_both_ends() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let first = crate::fixtures::alice_request(
            "alice-first",
            "{}",
            "{ phase: Approved, grantedFrom: '2025-01-01T11:00:00Z', grantedUntil: '2025-01-01T12:30:00Z' }",
        );
        let extension = crate::fixtures::alice_request(
            "alice-more",
            "{ extends: alice-first, duration: 1h }",
            "{ phase: Approved, grantedFrom: '2025-01-01T12:30:00Z', grantedUntil: '2025-01-01T13:30:00Z',
               extension: { extends: alice-first, number: 1, chainStart: '2025-01-01T11:00:00Z',
                            continuesFrom: '2025-01-01T12:30:00Z' } }",
        );
        let waiting = crate::fixtures::alice_request(
            "alice-even-more",
            "{ extends: alice-first }",
            "{ phase: Pending }",
        );
        let described = strip(&describe_request(&extension, &[], now));
        assert_eq!(
            field(&described, "Extends"),
            Some(
                "alice-first (extension 1 of a grant first opened 60m ago \
                 (2025-01-01T11:00:00Z); continues from in 30m (2025-01-01T12:30:00Z))"
            ),
            "{described}"
        );
        // Its grant opens at the approval: no booked window.
        assert_eq!(field(&described, "Window"), None, "{described}");
        let described = strip(&describe_request(&waiting, &[], now));
        assert!(
            field(&described, "Extends") == Some("alice-first (continues its grant once approved)"),
            "{described}"
        );
        let described = strip(&describe_request(
            &first,
            &[extension.clone(), waiting],
            now,
        ));
        assert!(
            field(&described, "Extended by")
                == Some("alice-more (Approved), alice-even-more (Pending)"),
            "{described}"
        );
        let wide = strip(&requests_table(std::slice::from_ref(&extension), now, true));
        assert!(wide.lines().next().unwrap().contains("EXTENDS"), "{wide}");
        assert!(
            wide.lines().nth(1).unwrap().contains("alice-first"),
            "{wide}"
        );
    }

    #[test]
    fn a_release_says_who_and_when() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let released = crate::fixtures::alice_request(
            "alice-done",
            "{ reviews: { bob: { decision: Approve }, alice: { decision: Release, comment: 'all done' } } }",
            "{ phase: Revoked,
               conditions: [{ type: Released, status: 'True', reason: ReleasedByRequester,
                              message: alice ended the grant early,
                              lastTransitionTime: '2025-01-01T11:58:00Z' }],
               history: [{ time: '2025-01-01T11:58:00Z', actor: alice, action: Revoked, comment: 'all done' }] }",
        );
        let described = strip(&describe_request(&released, &[], now));
        assert!(
            field(&described, "Released")
                == Some("by alice 2m ago (2025-01-01T11:58:00Z): all done"),
            "{described}"
        );
        assert!(
            described
                .lines()
                .any(|l| l.split_whitespace().eq(["alice", "Release", "all", "done"])),
            "{described}"
        );
        // Written, not yet acted on.
        let mut asked = released.clone();
        asked.status.as_mut().unwrap().phase = Some(Phase::Approved);
        asked.status.as_mut().unwrap().conditions.clear();
        let described = strip(&describe_request(&asked, &[], now));
        assert!(
            field(&described, "Released")
                == Some("by alice; kubepam ends the grant in a moment: all done"),
            "{described}"
        );
        // Someone else's Release is no release (admission refuses it anyway).
        let mut other = asked;
        let review = other.spec.reviews.remove("alice").unwrap();
        other.spec.reviews.insert("carol".into(), review);
        assert!(!strip(&describe_request(&other, &[], now)).contains("Released:"));
    }

    #[test]
    fn policy_rows_show_what_is_granted_and_whether_it_is_accepted() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let p = crate::fixtures::seed_policy();
        let out = strip(&policies_table(&[p], Some("pam-approvers"), now, false));
        let row = out.lines().nth(1).unwrap();
        for cell in [
            "delete deployments.apps",
            "prod",
            "Manual",
            "pam-approvers (default)",
            "True",
            "120m",
        ] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
    }

    /// An emergency grant of alice's, granted at 11:00 and due for review at `due`, with its
    /// `ReviewRequired` condition as `review` (`status/reason`).
    fn emergency_grant(name: &str, due: &str, review: &str) -> ElevationRequest {
        let (status, reason) = review.split_once('/').unwrap();
        crate::fixtures::alice_request(
            name,
            "{ emergency: true }",
            &format!(
                "{{ phase: Approved, approverGroup: pam-approvers, approverGroups: [pam-approvers],
                   decidedAt: '2025-01-01T11:00:00Z', decidedBy: [kubepam],
                   grantedFrom: '2025-01-01T11:00:00Z', grantedUntil: '2025-01-01T12:00:00Z',
                   deadline: '2025-01-01T12:00:00Z', reviewDueAt: '{due}',
                   conditions: [
                     {{ type: Emergency, status: 'True', reason: BreakGlass, message: m,
                        lastTransitionTime: '2025-01-01T11:00:00Z' }},
                     {{ type: ReviewRequired, status: '{status}', reason: {reason}, message: m,
                        lastTransitionTime: '2025-01-01T11:00:00Z' }}] }}"
            ),
        )
    }

    fn cells(line: &str) -> Vec<&str> {
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn unreviewed_grants_show_who_when_and_when_the_review_is_due() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let waiting = emergency_grant("waiting", "2025-01-02T11:00:00Z", "True/AwaitingReview");
        let mut late = emergency_grant("late", "2025-01-01T11:30:00Z", "True/ReviewOverdue");
        late.spec.requester = Some("mallory\u{1b}[2J".into());
        late.spec.reason = "INC-1\r\u{1b}[31m".into();
        let out = strip(&unreviewed_table(&[waiting, late.clone()], now, false));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            cells(lines[0]),
            [
                "NAME",
                "STATUS",
                "REQUESTER",
                "POLICY",
                "NAMESPACE",
                "GRANTED",
                "REVIEW-DUE"
            ]
        );
        assert_eq!(
            cells(lines[1]),
            [
                "waiting",
                "Approved",
                "alice",
                "prod-delete-deployments",
                "prod",
                "60m ago",
                "in 23h"
            ]
        );
        assert_eq!(cells(lines[2])[5..], ["60m ago", "OVERDUE (due 30m ago)"]);
        // A requester or reason never drives the reader's terminal.
        assert!(lines[2].contains("mallory\\u{1b}[2J"), "{out}");
        let wide = unreviewed_table(std::slice::from_ref(&late), now, true);
        assert!(!strip(&wide).contains('\u{1b}'), "{wide:?}");
        assert!(wide.contains("INC-1\\u{d}\\u{1b}[31m"), "{wide}");
    }

    #[test]
    fn the_review_queue_says_what_is_asked() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let pending = crate::fixtures::alice_request(
            "pending",
            "{}",
            "{ phase: Pending, approverGroup: pam-approvers }",
        );
        let late = emergency_grant("late", "2025-01-01T11:30:00Z", "True/ReviewOverdue");
        let waiting = emergency_grant("waiting", "2025-01-02T11:00:00Z", "True/AwaitingReview");
        let bob = Caller::from(crate::select::Me {
            username: "bob".into(),
            groups: vec!["pam-approvers".into()],
        });
        let out = strip(&review_queue_table(
            &[pending, late, waiting],
            &bob,
            now,
            false,
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(cells(lines[0])[7..], ["REVIEW", "AGE"], "{out}");
        assert_eq!(cells(lines[1])[6..], ["<none>", "decide", "60m"], "{out}");
        assert_eq!(cells(lines[2])[7], "emergency, OVERDUE", "{out}");
        assert_eq!(cells(lines[3])[7], "emergency", "{out}");
        // The ordinary table is unchanged.
        assert!(!strip(&requests_table(&[], now, false)).contains("REVIEW"));
    }

    #[test]
    fn status_shows_emergency_review_and_who_may_decide() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let waiting = emergency_grant("waiting", "2025-01-02T11:00:00Z", "True/AwaitingReview");
        let described = strip(&describe_request(&waiting, &[], now));
        assert_eq!(
            field(&described, "Emergency"),
            Some("yes (break glass: approved at once without an approver, reviewed afterwards)")
        );
        assert_eq!(
            field(&described, "Review"),
            Some(
                "awaiting an approver's review, due in 23h (2025-01-02T11:00:00Z) \
                 (kubectl pam confirm|reject waiting)"
            )
        );
        assert_eq!(
            field(&described, "Check a user").map(|l| l.split(" (").next()),
            Some(Some(
                "kubectl auth can-i approve accesspolicies/prod-delete-deployments --as USER"
            ))
        );
        let late = emergency_grant("late", "2025-01-01T11:30:00Z", "True/ReviewOverdue");
        assert!(
            field(&strip(&describe_request(&late, &[], now)), "Review")
                .is_some_and(|r| r.starts_with("OVERDUE: was due 30m ago")),
        );
        // Reviewed: the verdict, who and why, from kubepam's history.
        let mut rejected = emergency_grant("no", "2025-01-02T11:00:00Z", "False/EmergencyRejected");
        let status = rejected.status.as_mut().unwrap();
        status.phase = Some(Phase::Revoked);
        status.history = vec![serde_yaml_ng::from_str(
            "{ time: '2025-01-01T11:50:00Z', actor: bob, action: Rejected, comment: \"no \\e[2J incident\" }",
        )
        .unwrap()];
        let described = strip(&describe_request(&rejected, &[], now));
        assert_eq!(
            field(&described, "Review"),
            Some("rejected by bob 10m ago (2025-01-01T11:50:00Z): no \\u{1b}[2J incident"),
            "{described}"
        );
        // Without kubepam's entry yet, the review itself.
        let mut confirmed =
            emergency_grant("ok", "2025-01-02T11:00:00Z", "False/EmergencyConfirmed");
        confirmed.spec.reviews.insert(
            "carol".into(),
            serde_yaml_ng::from_str("{ decision: Confirm, comment: justified }").unwrap(),
        );
        assert_eq!(
            field(&strip(&describe_request(&confirmed, &[], now)), "Review"),
            Some("confirmed by carol: justified")
        );
        // An ordinary request has no emergency lines.
        let plain = crate::fixtures::alice_request("plain", "{}", "{ phase: Pending }");
        let described = strip(&describe_request(&plain, &[], now));
        assert_eq!(field(&described, "Emergency"), None, "{described}");
        assert_eq!(field(&described, "Review"), None, "{described}");
    }

    #[test]
    fn status_names_the_groups_deciding_now_and_the_next_step() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let request = crate::fixtures::alice_request(
            "escalating",
            "{}",
            "{ phase: Pending, approverGroup: pam-approvers, approvalType: Manual,
               approverGroups: [pam-approvers, ops-leads], submittedAt: '2025-01-01T11:00:00Z',
               escalatesAt: '2025-01-01T13:00:00Z',
               conditions: [{ type: Escalated, status: 'True', reason: EscalationStepOpened,
                              message: m, lastTransitionTime: '2025-01-01T11:30:00Z' }] }",
        );
        let mut policy = crate::fixtures::seed_policy();
        policy.spec.escalation = vec![
            crate::objects::parse_escalation_step("30m=ops-leads").unwrap(),
            crate::objects::parse_escalation_step("2h=sre-managers").unwrap(),
        ];
        let described = strip(&describe_request_with(&request, &[], Some(&policy), now));
        assert_eq!(
            field(&described, "Approvers"),
            Some("pam-approvers, ops-leads (Manual, 1 approval(s) needed), escalated")
        );
        assert_eq!(
            field(&described, "Escalates"),
            Some("in 60m (2025-01-01T13:00:00Z): sre-managers may also decide"),
            "{described}"
        );
        // Without the policy, only when.
        let described = strip(&describe_request(&request, &[], now));
        assert_eq!(
            field(&described, "Escalates"),
            Some("in 60m (2025-01-01T13:00:00Z)")
        );
    }

    #[test]
    fn emergency_lines_say_it_is_reviewed_afterwards() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let mut fresh = emergency_grant("e", "2025-01-02T11:00:00Z", "True/AwaitingReview");
        let line = strip(&approved_line(&fresh, now));
        assert!(
            line.ends_with(
                "; emergency access, approved at once: an approver reviews it afterwards"
            ),
            "{line}"
        );
        fresh.status = None;
        assert!(created_line(&fresh).starts_with(
            "elevationrequest.kubepam.io/e created: emergency access, approved at once"
        ));
        fresh.spec.emergency = false;
        assert_eq!(
            created_line(&fresh),
            "elevationrequest.kubepam.io/e created"
        );
    }

    #[test]
    fn policy_rows_show_break_glass_and_escalation_when_present() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let plain = crate::fixtures::seed_policy();
        let out = strip(&policies_table(
            std::slice::from_ref(&plain),
            None,
            now,
            false,
        ));
        assert!(!out.contains("BREAK-GLASS"), "{out}");
        let mut routed = plain.clone();
        routed.spec.break_glass = Some(kubepam_core::api::BreakGlass {
            groups: vec!["oncall".into(), "sre".into()],
            max_duration: "1h".into(),
            review_within: None,
        });
        routed.spec.escalation =
            vec![crate::objects::parse_escalation_step("30m=ops-leads").unwrap()];
        let out = strip(&policies_table(&[plain, routed], None, now, false));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(cells(lines[0])[8..], ["BREAK-GLASS", "ESCALATION"], "{out}");
        assert_eq!(cells(lines[1])[8..], ["<none>", "<none>"], "{out}");
        assert_eq!(
            cells(lines[2])[8..],
            ["oncall,sre (1h, review within 24h)", "30m=ops-leads"],
            "{out}"
        );
    }

    proptest! {
        #[test]
        fn human_durations_never_panic_and_are_short(secs in proptest::num::i64::ANY) {
            if let Some(d) = TimeDelta::try_seconds(secs) {
                prop_assert!(human_duration(d).len() <= 12);
            }
        }

        #[test]
        fn tables_keep_one_line_per_row(cells in proptest::collection::vec(".{0,12}", 0..12)) {
            let rows: Vec<Vec<String>> = cells.chunks(3).map(<[String]>::to_vec).collect();
            let out = table(&["A", "B", "C"], &rows);
            prop_assert_eq!(out.lines().count(), rows.len() + 1);
        }
    }
}
