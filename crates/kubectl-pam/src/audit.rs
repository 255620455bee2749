//! `kubectl pam audit`: check an exported audit trail, and read one request's records from it.
//!
//! Pure: the export arrives as bytes, the key and the cluster's head as values (`commands`
//! reads them). Every string in an export is untrusted: whatever reaches a table or an error
//! line passes through [`render::printable`].

use chrono::SecondsFormat;
use serde::Serialize;
use serde_json::Value;

use super::render::{self, Output};
use kubepam_core::api::CONTROL_NAME;
use kubepam_core::audit::{
    AuditRecord, ChainHead, Failure, Key, VerifyError, chain::digest, parse_lines, verify,
};

/// The Secret in kubepam's namespace that holds the signing key.
pub const KEY_SECRET: &str = "kubepam-audit-key";
/// The Secret's data entry that is the key.
pub const KEY_SECRET_ENTRY: &str = "key";
/// Where kubepam runs unless `--kubepam-namespace` says otherwise.
pub const DEFAULT_KUBEPAM_NAMESPACE: &str = "kubepam-system";
/// Printed on stderr under `show`'s table: `show` reads records, it does not check them.
pub const VERIFY_HINT: &str =
    "(run kubectl pam audit verify on the same export to check the chain)";
/// The prefix of every record type, left out of `show`'s EVENT column.
const TYPE_PREFIX: &str = "io.kubepam.";

/// Why an export could not be read, or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The export or the key file could not be read.
    #[error("cannot read {what}: {why}")]
    Read {
        /// e.g. `the export audit.jsonl`.
        what: String,
        /// The system's reason.
        why: String,
    },
    /// A line that is not a record.
    #[error("line {line} is not an audit record: {why}")]
    NotARecord {
        /// 1-based, in the input.
        line: usize,
        /// The parser's reason.
        why: String,
    },
    /// Nothing to verify.
    #[error("the export holds no records")]
    Empty,
    /// The first record that fails.
    #[error("line {line}: record id {id}, sequence {sequence} (request {subject}): {failure}")]
    Record {
        /// 1-based, in the input.
        line: usize,
        /// Its `id`, made printable.
        id: String,
        /// Its `kubepamsequence`.
        sequence: u64,
        /// Its `subject`, made printable.
        subject: String,
        /// Why it fails.
        failure: Failure,
    },
    /// An export that does not start at the first record, without `--partial`.
    #[error(
        "the export starts at sequence {first}, so records 1..{} are missing; give --partial \
         to check an export that starts later",
        first - 1
    )]
    StartsLate {
        /// The first record's sequence (more than 1).
        first: u64,
    },
    /// The export's end does not match the cluster's head: a cut-off tail or a fork.
    #[error(transparent)]
    Head(VerifyError),
    /// `--against-cluster` without a control.
    #[error(
        "there is no PrivilegedAccessControl {CONTROL_NAME}, so there is no head to compare \
         with: leave out --against-cluster"
    )]
    NoControl,
    /// `--against-cluster` before kubepam keeps a head.
    #[error(
        "PrivilegedAccessControl {CONTROL_NAME} has no audit head yet (.status.audit.head): \
         kubepam has recorded nothing, or runs a version that keeps no head; leave out \
         --against-cluster to check the export alone"
    )]
    NoHead,
    /// A head that is not `{sequence, digest}`.
    #[error("PrivilegedAccessControl {CONTROL_NAME} has an unreadable .status.audit.head: {0}")]
    BadHead(String),
    /// No key Secret to read.
    #[error(
        "there is no Secret {KEY_SECRET} with an entry {KEY_SECRET_ENTRY:?} in namespace \
         {namespace}: give --kubepam-namespace if kubepam runs elsewhere, or the key with \
         --key-file"
    )]
    NoKey {
        /// Where it was looked for.
        namespace: String,
    },
    /// A key of no bytes would verify nothing an attacker could not sign.
    #[error("the key from {0} is empty")]
    EmptyKey(String),
    /// `show` of a request the export does not mention.
    #[error("no records of request {name} in the export ({})", count(*read, "record") + " read")]
    NoRecordsOf {
        /// The name asked for, made printable.
        name: String,
        /// How many records the export holds.
        read: usize,
    },
}

/// `1 record`, `2 records`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The records of an export, each with the line it was read from and that line's text.
#[derive(Debug, Clone)]
pub struct Export<'a> {
    records: Vec<AuditRecord>,
    lines: Vec<(usize, &'a str)>,
}

impl<'a> Export<'a> {
    /// Parse JSON lines: one record per line, blank lines skipped.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()].split(|b| *b == b'\n').count();
            Error::NotARecord {
                line,
                why: "it is not UTF-8 text".to_owned(),
            }
        })?;
        // A byte order mark from an editor is not part of the first record.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let records = parse_lines(text).map_err(|(line, why)| Error::NotARecord {
            line,
            why: render::printable(&why),
        })?;
        // The lines `parse_lines` read, in the same order: blank ones are skipped alike.
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| (index + 1, line))
            .collect();
        debug_assert_eq!(records.len(), lines.len());
        Ok(Self { records, lines })
    }

    /// The records, in the order read.
    pub fn records(&self) -> &[AuditRecord] {
        &self.records
    }

    /// The input line (1-based) record `index` was read from.
    fn line_of(&self, index: usize) -> usize {
        self.lines.get(index).map_or(0, |(line, _)| *line)
    }
}

/// A key from a file's bytes, less one trailing newline (as `echo` or an editor leaves it).
pub fn key_from_file(mut bytes: Vec<u8>, path: &str) -> Result<Key, Error> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(Error::EmptyKey(path.to_owned()));
    }
    Ok(Key::new(bytes))
}

/// The key from the Secret's entry, byte for byte, as kubepam signs with it.
pub fn key_from_secret(bytes: Vec<u8>, namespace: &str) -> Result<Key, Error> {
    if bytes.is_empty() {
        return Err(Error::EmptyKey(format!("Secret {namespace}/{KEY_SECRET}")));
    }
    Ok(Key::new(bytes))
}

/// The head of the chain kubepam keeps in the control's `.status.audit.head`.
pub fn head_of_control(control: Option<&Value>) -> Result<ChainHead, Error> {
    let control = control.ok_or(Error::NoControl)?;
    match control.pointer("/status/audit/head") {
        None | Some(Value::Null) => Err(Error::NoHead),
        Some(head) => serde_json::from_value(head.clone())
            .map_err(|e| Error::BadHead(render::printable(&e.to_string()))),
    }
}

/// How the export's end compares with the cluster's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadCheck {
    /// No head was given: a cut-off tail would go unnoticed.
    NotAsked,
    /// The export ends at the head.
    Reaches(ChainHead),
    /// The export holds the head's record, and records written after it.
    Passes(ChainHead),
    /// The head's record lies before a partial export: nothing to compare.
    Before(ChainHead),
}

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records verified, each sequence once.
    pub records: usize,
    /// The first record's sequence.
    pub first: u64,
    /// The last sequence verified.
    pub last: u64,
    /// Exact copies of records already read, skipped.
    pub redelivered: usize,
    /// The export may start after the first record.
    pub partial: bool,
    /// How it ends against the cluster's head.
    pub head: HeadCheck,
}

impl Summary {
    /// The one line `verify` prints on success.
    pub fn line(&self) -> String {
        let copies = match self.redelivered {
            0 => String::new(),
            1 => " (1 copy delivered twice skipped)".to_owned(),
            n => format!(" ({n} copies delivered twice skipped)"),
        };
        let mut parts = vec![format!(
            "verified {}, sequences {}..{}{copies}",
            count(self.records, "record"),
            self.first,
            self.last
        )];
        if self.partial && self.first > 1 {
            parts.push(format!("records before {} were not checked", self.first));
        }
        parts.push(match &self.head {
            HeadCheck::NotAsked => "not compared with the cluster's head (--against-cluster), so \
                                    a cut-off tail would go unnoticed"
                .to_owned(),
            HeadCheck::Reaches(head) => {
                format!("reaches the cluster's head at {}", head.sequence)
            }
            HeadCheck::Passes(head) => format!(
                "holds the cluster's head at {} and {} written since",
                head.sequence,
                count(
                    usize::try_from(self.last - head.sequence).unwrap_or(usize::MAX),
                    "record"
                )
            ),
            HeadCheck::Before(head) => format!(
                "the cluster's head at {} lies before this export, so it was not compared",
                head.sequence
            ),
        });
        parts.join("; ")
    }
}

/// Verify every signature, link and sequence of `export`; from the first record unless
/// `partial`, and up to `head` when given.
pub fn verify_export(
    export: &Export,
    key: &Key,
    head: Option<&ChainHead>,
    partial: bool,
) -> Result<Summary, Error> {
    let first = export.records.first().ok_or(Error::Empty)?;
    // A partial export is anchored on what its first record says came before it; that
    // record's signature covers the claim.
    let from = if partial {
        ChainHead {
            sequence: first.kubepamsequence.saturating_sub(1),
            digest: first.kubepamprev.clone(),
        }
    } else {
        ChainHead::default()
    };
    let verified = verify(&export.records, key, &from, head).map_err(|e| match e {
        VerifyError::Record {
            index: 0,
            failure: Failure::Gap { expected: 1, found },
            ..
        } if found > 1 => Error::StartsLate { first: found },
        VerifyError::Record {
            index,
            id,
            sequence,
            failure,
        } => Error::Record {
            line: export.line_of(index),
            id: render::printable(&id),
            sequence,
            subject: render::printable(
                export.records.get(index).map_or("", |r| r.subject.as_str()),
            ),
            failure,
        },
        other => Error::Head(other),
    })?;
    let head = match head {
        None => HeadCheck::NotAsked,
        Some(head) => past_head(export, &from, head, verified.end.sequence)?,
    };
    Ok(Summary {
        records: verified.records,
        first: from.sequence + 1,
        last: verified.end.sequence,
        redelivered: verified.redelivered,
        partial,
        head,
    })
}

/// The chain's verifier compares the head with the export's last record only; an export
/// that goes on past the head must still hold the head's very record, or it forked before it.
fn past_head(
    export: &Export,
    from: &ChainHead,
    head: &ChainHead,
    end: u64,
) -> Result<HeadCheck, Error> {
    if head.sequence == end {
        return Ok(HeadCheck::Reaches(head.clone()));
    }
    let digest_at_head = if head.sequence == from.sequence {
        Some(from.digest.clone())
    } else {
        // Every record with this sequence verified, so all of them are the same record.
        export
            .records
            .iter()
            .find(|r| r.kubepamsequence == head.sequence)
            .map(digest)
    };
    match digest_at_head {
        None => Ok(HeadCheck::Before(head.clone())),
        Some(digest) if digest == head.digest => Ok(HeadCheck::Passes(head.clone())),
        Some(_) => Err(Error::Head(VerifyError::NotTheHead {
            sequence: head.sequence,
        })),
    }
}

/// What a command prints: its stdout, and a note for stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Printout {
    /// The result.
    pub stdout: String,
    /// A note beside it, never part of it.
    pub stderr: String,
}

/// `verify`: what to print, and the failure, if any, to report after printing it (with
/// `-o json|yaml` the summary says `"verified": false` and the command still fails).
pub fn verify_command(
    input: &[u8],
    key: &Key,
    head: Option<&ChainHead>,
    partial: bool,
    output: Option<Output>,
) -> (Printout, Result<(), Error>) {
    let export = Export::parse(input);
    let result = export
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|export| verify_export(export, key, head, partial));
    let stdout = match output {
        Some(format @ (Output::Json | Output::Yaml)) => {
            let read = export.as_ref().map(|e| e.records.len()).ok();
            let summary = SummaryOutput::new(&result, read, head, partial);
            render::serialize(&summary, format).unwrap_or_default()
        }
        _ => result
            .as_ref()
            .map(|summary| format!("{}\n", summary.line()))
            .unwrap_or_default(),
    };
    let printout = Printout {
        stdout,
        stderr: String::new(),
    };
    (printout, result.map(|_| ()))
}

/// The `-o json|yaml` summary of `verify`: the counts of a verified export, or the first
/// failure and its line.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryOutput<'a> {
    verified: bool,
    records: Option<usize>,
    first: Option<u64>,
    last: Option<u64>,
    redelivered: Option<usize>,
    /// `--partial` was given.
    partial: bool,
    /// Records parsed, when the export parsed.
    read: Option<usize>,
    /// The cluster's head, when given.
    head: Option<&'a ChainHead>,
    /// Whether the export's record at the head was compared with it.
    head_checked: bool,
    error: Option<String>,
    line: Option<usize>,
}

impl<'a> SummaryOutput<'a> {
    fn new(
        result: &Result<Summary, Error>,
        read: Option<usize>,
        head: Option<&'a ChainHead>,
        partial: bool,
    ) -> Self {
        let verified = result.as_ref().ok();
        let line = match result {
            Err(Error::NotARecord { line, .. } | Error::Record { line, .. }) => Some(*line),
            _ => None,
        };
        Self {
            verified: verified.is_some(),
            records: verified.map(|s| s.records),
            first: verified.map(|s| s.first),
            last: verified.map(|s| s.last),
            redelivered: verified.map(|s| s.redelivered),
            partial,
            read,
            head,
            head_checked: verified
                .is_some_and(|s| matches!(s.head, HeadCheck::Reaches(_) | HeadCheck::Passes(_))),
            error: result.as_ref().err().map(ToString::to_string),
            line,
        }
    }
}

/// The records of request `name` (its `subject`; with `by_id`, its `data.requestId`), in
/// sequence order, each once: a copy delivered again is left out. Never both at once: anyone
/// may name a request after another's request id.
pub fn trail<'e>(export: &'e Export, name: &str, by_id: bool) -> Vec<(&'e AuditRecord, &'e str)> {
    let mut found: Vec<(&AuditRecord, &str)> = Vec::new();
    for (record, (_, text)) in export.records.iter().zip(&export.lines) {
        let about = if by_id {
            record.data.request_id == name
        } else {
            record.subject == name
        };
        if about && !found.iter().any(|(seen, _)| *seen == record) {
            found.push((record, text));
        }
    }
    // Stable: two different records with one sequence (a fork) stay in the order read.
    found.sort_by_key(|(record, _)| record.kubepamsequence);
    found
}

/// `show`: request `name`'s records as a table, JSON lines as read, or a YAML list.
pub fn show_command(
    input: &[u8],
    name: &str,
    by_id: bool,
    output: Option<Output>,
) -> Result<Printout, Error> {
    let export = Export::parse(input)?;
    let trail = trail(&export, name, by_id);
    if trail.is_empty() {
        return Err(Error::NoRecordsOf {
            name: render::printable(name),
            read: export.records.len(),
        });
    }
    let printout = match output {
        Some(Output::Json) => Printout {
            stdout: trail.iter().flat_map(|(_, text)| [*text, "\n"]).collect(),
            stderr: String::new(),
        },
        Some(Output::Yaml) => {
            let records: Vec<&AuditRecord> = trail.iter().map(|(record, _)| *record).collect();
            Printout {
                stdout: serde_yaml_ng::to_string(&records).unwrap_or_default(),
                stderr: String::new(),
            }
        }
        _ => Printout {
            stdout: trail_table(&trail, output == Some(Output::Wide)),
            stderr: format!("{VERIFY_HINT}\n"),
        },
    };
    Ok(printout)
}

/// SEQ, TIME, EVENT, ACTOR, DETAILS (`wide` adds the record's ID), every cell printable.
fn trail_table(trail: &[(&AuditRecord, &str)], wide: bool) -> String {
    let rows: Vec<Vec<String>> = trail
        .iter()
        .map(|(record, _)| {
            let mut row = vec![
                record.kubepamsequence.to_string(),
                record.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                render::printable(
                    record
                        .event_type
                        .strip_prefix(TYPE_PREFIX)
                        .unwrap_or(&record.event_type),
                ),
                render::printable(&record.data.actor),
                render::printable(&details(record)),
            ];
            if wide {
                row.insert(1, render::printable(&record.id));
            }
            row
        })
        .collect();
    let header: &[&str] = if wide {
        &["SEQ", "ID", "TIME", "EVENT", "ACTOR", "DETAILS"]
    } else {
        &["SEQ", "TIME", "EVENT", "ACTOR", "DETAILS"]
    };
    render::table(header, &rows)
}

/// What a record adds to its type: the use of a grant (`delete deployments.apps/web in
/// prod`); or the policy, scope and reason of a submission; or a decision, reason code and
/// grant end, then the comment.
fn details(record: &AuditRecord) -> String {
    let data = &record.data;
    if let Some(op) = &data.operation {
        let name = op
            .name
            .as_ref()
            .map(|n| format!("/{n}"))
            .unwrap_or_default();
        let namespace = op
            .namespace
            .as_ref()
            .map(|n| format!(" in {n}"))
            .unwrap_or_default();
        let by = if op.user == data.actor {
            String::new()
        } else {
            format!(" by {}", op.user)
        };
        return format!(
            "{} {}{name}{namespace}{by}",
            op.verb,
            op.qualified_resource()
        );
    }
    let mut facts: Vec<String> = Vec::new();
    if record.event_type.ends_with(".submitted") {
        let scope = data.scope.as_deref().unwrap_or("cluster-wide");
        facts.push(format!("policy {} in {scope}", data.policy));
        facts.push(format!("reason: {}", data.reason));
    }
    facts.extend(data.decision.clone());
    facts.extend(data.condition_reason.clone());
    if let Some(until) = data.granted_until {
        facts.push(format!(
            "until {}",
            until.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    let facts = facts.join(", ");
    match data.comment.as_deref().filter(|c| !c.is_empty()) {
        Some(comment) if facts.is_empty() => comment.to_owned(),
        Some(comment) => format!("{facts}: {comment}"),
        None if facts.is_empty() => "<none>".to_owned(),
        None => facts,
    }
}

#[cfg(test)]
mod tests;
