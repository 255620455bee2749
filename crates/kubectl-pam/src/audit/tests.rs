//! Exports built with the core's `seal`, checked and shown as the commands do.

use super::*;
use chrono::{TimeDelta, TimeZone, Utc};
use clap::Parser as _;
use kubepam_core::audit::{AuditData, AuditOperation, seal};
use serde_json::json;

use crate::cli::{Cli, Command};
use crate::error::Error as CommandError;

const NAME: &str = "prod-delete-x7k2p";
const REQUEST_ID: &str = "0b7c8e2a-x7k2p";

fn key() -> Key {
    Key::new(b"the-audit-key-of-this-cluster".to_vec())
}

/// Record `n` (unsealed): odd ones are steps of [`NAME`], even ones of another request;
/// the uses of a grant name only the request id as their subject's request.
fn unsealed(n: u64) -> AuditRecord {
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let ours = n % 2 == 1;
    let event = match n {
        1 => "io.kubepam.request.submitted",
        3 => "io.kubepam.request.approved",
        5 => "io.kubepam.grant.used",
        _ => "io.kubepam.request.released",
    };
    let mut data = AuditData {
        actor: if n == 1 { "alice" } else { "bob" }.into(),
        policy: "prod-delete-deployments".into(),
        scope: Some("prod".into()),
        reason: "INC-1234: stuck canary".into(),
        request_id: if ours { REQUEST_ID } else { "other-id" }.into(),
        ..AuditData::default()
    };
    if n == 3 {
        data.decision = Some("Approve".into());
        data.granted_until = Some(t0 + TimeDelta::hours(2));
        data.comment = Some("ok\n\u{1b}[31mDENIED by eve".into());
    }
    if n == 5 {
        data.actor = "alice".into();
        data.operation = Some(AuditOperation {
            user: "alice".into(),
            verb: "delete".into(),
            resource: "deployments".into(),
            api_group: Some("apps".into()),
            namespace: Some("prod".into()),
            name: Some("web".into()),
        });
    }
    let subject = match n {
        5 => "prod-delete-renamed",
        _ if ours => NAME,
        _ => "staging-exec-q8w3e",
    };
    AuditRecord::new(
        event,
        "kubepam.io/clusters/test",
        &format!("rec-{n}"),
        t0 + TimeDelta::minutes(i64::try_from(n).unwrap()),
        subject,
        data,
    )
}

/// A chain of `n` records signed with `key`, and its head.
fn chain_with(n: u64, key: &Key) -> (Vec<AuditRecord>, ChainHead) {
    let mut head = ChainHead::default();
    let records = (1..=n).map(|i| seal(unsealed(i), &mut head, key)).collect();
    (records, head)
}

fn chain(n: u64) -> (Vec<AuditRecord>, ChainHead) {
    chain_with(n, &key())
}

fn lines(records: &[AuditRecord]) -> String {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

fn check(input: &str, head: Option<&ChainHead>, partial: bool) -> Result<String, Error> {
    let (printout, result) = verify_command(input.as_bytes(), &key(), head, partial, None);
    result.map(|()| printout.stdout)
}

fn failing_line(result: Result<String, Error>) -> (usize, u64, Failure) {
    match result {
        Err(Error::Record {
            line,
            sequence,
            failure,
            ..
        }) => (line, sequence, failure),
        other => panic!("expected a failing record, got {other:?}"),
    }
}

#[test]
fn a_whole_export_verifies_and_says_so_in_one_line() {
    let (records, head) = chain(5);
    let input = lines(&records);
    assert_eq!(
        check(&input, Some(&head), false).unwrap(),
        "verified 5 records, sequences 1..5; reaches the cluster's head at 5\n"
    );
    let alone = check(&input, None, false).unwrap();
    assert!(
        alone.starts_with(
            "verified 5 records, sequences 1..5; not compared with the cluster's head"
        ),
        "{alone}"
    );
}

#[test]
fn a_changed_reason_fails_at_its_line() {
    let (records, _) = chain(5);
    let mut changed = serde_json::to_value(&records[2]).unwrap();
    changed["data"]["reason"] = "INC-9999".into();
    let input = lines(&records[..2]) + &changed.to_string() + "\n" + &lines(&records[3..]);
    // A blank line counts in the numbering, as an editor shows it.
    let input = format!("\n{input}");
    let err = check(&input, None, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "line 4: record id rec-3, sequence 3 (request {NAME}): its signature does not match \
             its content (changed, or signed with another key)"
        )
    );
}

#[test]
fn a_dropped_record_and_two_swapped_are_named() {
    let (records, _) = chain(5);
    let dropped = [&records[..2], &records[3..]].concat();
    assert_eq!(
        failing_line(check(&lines(&dropped), None, false)),
        (
            3,
            4,
            Failure::Gap {
                expected: 3,
                found: 4
            }
        )
    );
    let mut swapped = records.clone();
    swapped.swap(1, 2);
    assert_eq!(
        failing_line(check(&lines(&swapped), None, false)),
        (
            2,
            3,
            Failure::Gap {
                expected: 2,
                found: 3
            }
        )
    );
}

#[test]
fn a_record_delivered_twice_is_skipped_and_counted() {
    let (records, head) = chain(5);
    let again = [&records[..3], &records[1..2], &records[3..]].concat();
    assert_eq!(
        check(&lines(&again), Some(&head), false).unwrap(),
        "verified 5 records, sequences 1..5 (1 copy delivered twice skipped); reaches the \
         cluster's head at 5\n"
    );
}

#[test]
fn another_key_fails_at_the_first_record() {
    let (records, _) = chain_with(3, &Key::new(b"a-key-of-another-cluster".to_vec()));
    assert_eq!(
        failing_line(check(&lines(&records), None, false)),
        (1, 1, Failure::BadSignature)
    );
}

#[test]
fn a_cut_off_tail_is_caught_against_the_head() {
    let (records, head) = chain(5);
    let err = check(&lines(&records[..3]), Some(&head), false).unwrap_err();
    assert_eq!(
        err,
        Error::Head(VerifyError::ShortOfHead { ends: 3, head: 5 })
    );
    assert_eq!(
        err.to_string(),
        "the export ends at sequence 3 but the cluster's chain reaches 5: records after 3 are \
         missing"
    );
}

#[test]
fn an_export_past_the_head_must_hold_the_heads_record() {
    let (records, _) = chain(5);
    let (_, head_at_3) = chain(3);
    assert_eq!(
        check(&lines(&records), Some(&head_at_3), false).unwrap(),
        "verified 5 records, sequences 1..5; holds the cluster's head at 3 and 2 records \
         written since\n"
    );
    // The cluster's chain has another record 3: the export forked before its end.
    let mut head = ChainHead::default();
    let mut other = unsealed(3);
    other.data.comment = Some("another".into());
    for record in [unsealed(1), unsealed(2), other] {
        seal(record, &mut head, &key());
    }
    let err = check(&lines(&records), Some(&head), false).unwrap_err();
    assert_eq!(err, Error::Head(VerifyError::NotTheHead { sequence: 3 }));
}

#[test]
fn an_export_that_starts_later_needs_partial_and_says_what_was_not_checked() {
    let (records, head) = chain(8);
    let later = lines(&records[4..]);
    let err = check(&later, None, false).unwrap_err();
    assert_eq!(err, Error::StartsLate { first: 5 });
    assert!(
        err.to_string()
            .contains("records 1..4 are missing; give --partial")
    );
    assert_eq!(
        check(&later, Some(&head), true).unwrap(),
        "verified 4 records, sequences 5..8; records before 5 were not checked; reaches the \
         cluster's head at 8\n"
    );
    // A head just before the export is the record its first one names.
    let (_, head_at_4) = chain(4);
    assert!(
        check(&later, Some(&head_at_4), true)
            .unwrap()
            .ends_with("holds the cluster's head at 4 and 4 records written since\n")
    );
    let (_, head_at_2) = chain(2);
    assert!(
        check(&later, Some(&head_at_2), true)
            .unwrap()
            .contains("the cluster's head at 2 lies before this export")
    );
    // What the first record says came before it is signed.
    let mut first = serde_json::to_value(&records[4]).unwrap();
    first["kubepamprev"] = "00".repeat(32).into();
    let forged = first.to_string() + "\n" + &lines(&records[5..]);
    assert_eq!(
        failing_line(check(&forged, None, true)),
        (1, 5, Failure::BadSignature)
    );
}

#[test]
fn a_line_that_is_not_a_record_is_named() {
    let (records, _) = chain(3);
    let input = lines(&records[..1]) + "\n" + "{\"level\":\"INFO\"}\n" + &lines(&records[1..]);
    let err = check(&input, None, false).unwrap_err();
    assert!(matches!(err, Error::NotARecord { line: 3, .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("line 3 is not an audit record: ")
    );
    let not_utf8 = [lines(&records[..2]).into_bytes(), vec![0xff, b'\n']].concat();
    let (_, result) = verify_command(&not_utf8, &key(), None, false, None);
    assert_eq!(
        result.unwrap_err(),
        Error::NotARecord {
            line: 3,
            why: "it is not UTF-8 text".into()
        }
    );
    assert_eq!(check("\n \n", None, false).unwrap_err(), Error::Empty);
}

#[test]
fn the_json_summary_says_whether_it_verified() {
    let (records, head) = chain(5);
    let again = [&records[..], &records[4..]].concat();
    let (printout, result) = verify_command(
        lines(&again).as_bytes(),
        &key(),
        Some(&head),
        false,
        Some(Output::Json),
    );
    result.unwrap();
    let summary: Value = serde_json::from_str(&printout.stdout).unwrap();
    assert_eq!(summary["verified"], true);
    assert_eq!(
        (
            &summary["records"],
            &summary["first"],
            &summary["last"],
            &summary["redelivered"]
        ),
        (&json!(5), &json!(1), &json!(5), &json!(1))
    );
    assert_eq!(summary["head"]["sequence"], 5);
    assert_eq!(summary["error"], Value::Null);
    let (printout, result) = verify_command(
        lines(&records[..4]).as_bytes(),
        &key(),
        Some(&head),
        false,
        Some(Output::Json),
    );
    let err = result.unwrap_err();
    let summary: Value = serde_json::from_str(&printout.stdout).unwrap();
    assert_eq!(summary["verified"], false);
    assert_eq!(summary["error"], err.to_string());
    assert_eq!(summary["read"], 4);
}

fn show(input: &str, name: &str, output: Option<Output>) -> Result<Printout, Error> {
    show_command(input.as_bytes(), name, false, output)
}

fn show_by_id(input: &str, id: &str) -> Result<Printout, Error> {
    show_command(input.as_bytes(), id, true, None)
}

#[test]
fn show_prints_one_requests_trail_in_order_by_name_or_id() {
    let (records, _) = chain(6);
    // Out of order, with a copy delivered twice: show reads, it does not judge.
    let input = lines(&[
        records[4].clone(),
        records[0].clone(),
        records[1].clone(),
        records[2].clone(),
        records[0].clone(),
        records[3].clone(),
        records[5].clone(),
    ]);
    let by_name = show(&input, NAME, None).unwrap();
    let rows: Vec<&str> = by_name.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{}", by_name.stdout);
    assert!(
        rows[0].starts_with("SEQ   TIME                   EVENT"),
        "{}",
        rows[0]
    );
    assert!(rows[1].starts_with("1     2026-12-01T09:01:00Z   request.submitted   alice"));
    assert!(
        rows[1].ends_with("policy prod-delete-deployments in prod, reason: INC-1234: stuck canary")
    );
    assert!(rows[2].contains("request.approved    bob"), "{}", rows[2]);
    assert_eq!(by_name.stderr, format!("{VERIFY_HINT}\n"));
    // A name is never read as a request id: anyone may name a request after another's id.
    assert!(show(&input, REQUEST_ID, None).is_err());
    let by_id = show_by_id(&input, REQUEST_ID).unwrap();
    let sequences: Vec<&str> = by_id
        .stdout
        .lines()
        .skip(1)
        .map(|row| row.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(sequences, ["1", "3", "5"]);
    assert!(
        by_id
            .stdout
            .lines()
            .nth(3)
            .unwrap()
            .ends_with("delete deployments.apps/web in prod"),
        "{}",
        by_id.stdout
    );
}

#[test]
fn show_escapes_what_would_break_or_colour_a_line() {
    let (records, _) = chain(3);
    let table = show(&lines(&records), NAME, None).unwrap().stdout;
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.contains("Approve, until 2026-12-01T11:00:00Z: ok\\u{a}\\u{1b}[31mDENIED by eve"),
        "{table}"
    );
    let mut hostile = unsealed(1);
    hostile.data.actor = "mallory\r\u{7}".into();
    hostile.event_type = "io.kubepam.request.submitted\n1 x".into();
    let table = show(&lines(&[hostile]), NAME, Some(Output::Wide))
        .unwrap()
        .stdout;
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.contains("request.submitted\\u{a}1 x   mallory\\u{d}\\u{7}"),
        "{table}"
    );
}

#[test]
fn show_prints_the_records_as_read_in_json_or_as_yaml() {
    let (records, _) = chain(4);
    let input = lines(&records);
    let json = show(&input, NAME, Some(Output::Json)).unwrap();
    let ours: Vec<&str> = input.lines().step_by(2).collect();
    assert_eq!(json.stdout, ours.join("\n") + "\n");
    assert_eq!(json.stderr, "");
    let yaml = show(&input, NAME, Some(Output::Yaml)).unwrap();
    let back: Vec<AuditRecord> = serde_yaml_ng::from_str(&yaml.stdout).unwrap();
    assert_eq!(back, [records[0].clone(), records[2].clone()]);
}

#[test]
fn show_of_a_request_the_export_does_not_mention_fails() {
    let (records, _) = chain(5);
    let err = show(&lines(&records), "nope", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no records of request nope in the export (5 records read)"
    );
}

#[test]
fn a_key_file_loses_one_trailing_newline() {
    let line_key = Key::new(b"abc\n".to_vec());
    let (records, _) = chain_with(2, &line_key);
    let from_file = key_from_file(b"abc\n\n".to_vec(), "key.txt").unwrap();
    let (_, result) = verify_command(lines(&records).as_bytes(), &from_file, None, false, None);
    result.unwrap();
    assert_eq!(
        key_from_file(b"\n".to_vec(), "key.txt").unwrap_err(),
        Error::EmptyKey("key.txt".into())
    );
}

#[test]
fn the_head_is_read_from_the_controls_status() {
    assert_eq!(head_of_control(None).unwrap_err(), Error::NoControl);
    let control = json!({ "metadata": { "name": "default" }, "status": { "activeGrants": 0 } });
    assert_eq!(head_of_control(Some(&control)).unwrap_err(), Error::NoHead);
    assert!(Error::NoHead.to_string().contains("has no audit head yet"));
    let control = json!({ "status": { "audit": { "head": { "sequence": 7, "digest": "ab" } } } });
    assert_eq!(
        head_of_control(Some(&control)).unwrap(),
        ChainHead {
            sequence: 7,
            digest: "ab".into()
        }
    );
    let control = json!({ "status": { "audit": { "head": { "sequence": "seven" } } } });
    assert!(matches!(
        head_of_control(Some(&control)),
        Err(Error::BadHead(_))
    ));
}

/// A file under the system's temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("kubectl-pam-audit-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The command line as the binary runs it, with `stdin` as its input.
async fn run(args: &[&str], stdin: &str) -> (Printout, Result<(), CommandError>) {
    let cli =
        Cli::try_parse_from(std::iter::once("kubectl-pam").chain(args.iter().copied())).unwrap();
    let Command::Audit(command) = &cli.command else {
        panic!("not an audit command: {args:?}")
    };
    crate::commands::audit(command, &cli.connection, cli.output, &mut stdin.as_bytes()).await
}

#[tokio::test]
async fn the_commands_run_offline_from_a_key_file() {
    let (records, _) = chain(5);
    let key_file = TempFile::new("key", b"the-audit-key-of-this-cluster\n");
    let export = TempFile::new("export", lines(&records).as_bytes());
    let (printout, result) = run(
        &[
            "audit",
            "verify",
            export.path(),
            "--key-file",
            key_file.path(),
        ],
        "",
    )
    .await;
    result.unwrap();
    assert!(
        printout
            .stdout
            .starts_with("verified 5 records, sequences 1..5;")
    );
    let (printout, result) = run(
        &[
            "audit",
            "verify",
            "-",
            "--key-file",
            key_file.path(),
            "-o",
            "json",
        ],
        &lines(&records[1..]),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit::FAILURE);
    assert!(err.message().contains("--partial"), "{}", err.message());
    assert!(printout.stdout.contains("\"verified\": false"));
    let (printout, result) = run(&["audit", "show", NAME], &lines(&records)).await;
    result.unwrap();
    assert_eq!(printout.stdout.lines().count(), 3);
    let (_, result) = run(&["audit", "show", NAME, "/nonexistent/audit.jsonl"], "").await;
    assert!(
        result
            .unwrap_err()
            .message()
            .starts_with("cannot read the export /nonexistent/audit.jsonl: ")
    );
    let (_, result) = run(&["audit", "show", NAME, "-o", "name"], "").await;
    assert_eq!(result.unwrap_err().exit_code(), crate::error::exit::USAGE);
}

#[test]
fn verify_takes_its_flags_and_warns_about_the_key() {
    use clap::CommandFactory as _;
    let cli = Cli::try_parse_from(["kubectl-pam", "audit", "verify", "--against-cluster"]).unwrap();
    let Command::Audit(crate::cli::AuditCommand::Verify(args)) = cli.command else {
        panic!("audit verify")
    };
    assert!(args.against_cluster && !args.partial);
    assert_eq!(
        (args.file, args.key_file, args.kubepam_namespace.as_str()),
        (None, None, DEFAULT_KUBEPAM_NAMESPACE)
    );
    let help = Cli::command()
        .find_subcommand_mut("audit")
        .and_then(|audit| audit.find_subcommand_mut("verify"))
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(
        help.contains("Whoever holds the key can forge records"),
        "{help}"
    );
}
