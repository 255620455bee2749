//! The audit trail, end to end: kubepam running as the `operator` identity seals every step
//! and every use onto the hash chain and exports it to a real HTTP receiver, a file and its
//! standard output; `kubectl pam audit verify` checks what arrived and catches tampering;
//! kills and a sink that is down lose nothing; retention removes only what is exported. The
//! tests change the control and restart the operator, so they run one at a time on their own
//! control plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test
#![allow(clippy::too_many_lines)] // a scenario reads best as one story

use kubepam_testkit::cluster as support;
use kubepam_testkit::pam;
use kubepam_testkit::receivers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use kubepam_core::api::{
    AuditHead, ElevationRequest, Phase, PrivilegedAccessControl, find_condition,
};
use kubepam_core::audit::{AuditRecord, ChainHead, Key, parse_lines, verify};
use serde_json::{Value, json};

use pam::{
    apply_control, create_policy, create_request, deployment, review, task_policy, wait_phase,
};
use receivers::HookReceiver;
use support::{Identity, TestCluster, eventually, free_port};

const SOON: Duration = Duration::from_secs(30);

/// The control with these audit sinks (and a retention, when given).
async fn control_with(admin: &Client, sinks: Value, retention: Option<&str>) {
    let mut spec = json!({
        "enabled": true,
        "defaultApproverGroup": "pam-approvers",
        "audit": { "sinks": sinks },
    });
    if let Some(retention) = retention {
        spec["retention"] = json!(retention);
    }
    apply_control(admin, spec).await;
}

async fn control(admin: &Client) -> PrivilegedAccessControl {
    Api::<PrivilegedAccessControl>::all(admin.clone())
        .get("default")
        .await
        .expect("the control")
}

/// The signing key, as an auditor reads it.
async fn key(admin: &Client) -> Key {
    let secret = Api::<Secret>::namespaced(admin.clone(), "kubepam-system")
        .get("kubepam-audit-key")
        .await
        .expect("the audit key Secret");
    assert_eq!(
        secret
            .labels()
            .get("kubepam.io/audit-key")
            .map(String::as_str),
        Some("true")
    );
    Key::new(secret.data.unwrap()["key"].0.clone())
}

fn chain_head(head: &AuditHead) -> ChainHead {
    ChainHead {
        sequence: head.sequence,
        digest: head.digest.clone(),
    }
}

/// Waits until no request holds an unsealed record and each of `sinks` has the whole chain;
/// returns the head.
async fn wait_exported(admin: &Client, sinks: &[&str], timeout: Duration) -> AuditHead {
    eventually("every record sealed and exported", timeout, || async {
        let requests = Api::<ElevationRequest>::all(admin.clone())
            .list(&kube::api::ListParams::default())
            .await
            .ok()?;
        let unsealed = requests.items.iter().any(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.audit.as_ref())
                .is_some_and(|a| !a.pending.is_empty())
        });
        if unsealed {
            return None;
        }
        let state = control(admin).await.status?.audit?;
        let head = state.head?;
        sinks
            .iter()
            .all(|name| {
                state
                    .sinks
                    .iter()
                    .any(|s| s.name == *name && s.exported_sequence == head.sequence)
            })
            .then_some(head)
    })
    .await
}

/// What the receiver was sent, in the order it arrived, each record once (a record sent
/// again after a crash has the same id).
fn received(receiver: &HookReceiver) -> Vec<AuditRecord> {
    let mut seen = BTreeSet::new();
    receiver
        .received()
        .into_iter()
        .flat_map(|call| {
            assert_eq!(
                call.content_type.as_deref(),
                Some("application/cloudevents-batch+json")
            );
            call.body
                .as_array()
                .cloned()
                .expect("a CloudEvents batch is a JSON array")
        })
        .map(|event| serde_json::from_value::<AuditRecord>(event).expect("a record"))
        .filter(|record| seen.insert(record.id.clone()))
        .collect()
}

/// Verifies `records` up to `head`, from the first one's place on (an export may begin after
/// the chain did).
fn verify_to_head(records: &[AuditRecord], key: &Key, head: &AuditHead) -> usize {
    let first = records.first().expect("records");
    let from = ChainHead {
        sequence: first.kubepamsequence - 1,
        digest: first.kubepamprev.clone(),
    };
    let verified = verify(records, key, &from, Some(&chain_head(head)))
        .unwrap_or_else(|e| panic!("the export does not verify: {e}"));
    assert_eq!(verified.end.sequence, head.sequence);
    verified.records
}

/// A request's records as (type without `io.kubepam.`, actor), in chain order.
fn trail_of(records: &[AuditRecord], name: &str) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r.subject == name)
        .map(|r| {
            (
                r.event_type.trim_start_matches("io.kubepam.").to_owned(),
                r.data.actor.clone(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, a)| ((*t).to_owned(), (*a).to_owned()))
        .collect()
}

/// `kubectl pam ARGS` as the admin: (exit code, stdout, stderr).
fn pam(cluster: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(support::workspace_binary("kubectl-pam"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig_path)
        .arg("--context")
        .arg(Identity::Admin.context())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl-pam");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The export in `lines`, changed by `change`, written next to `original`.
fn tampered(original: &Path, suffix: &str, change: impl Fn(&mut Vec<String>)) -> PathBuf {
    let mut lines: Vec<String> = std::fs::read_to_string(original)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    change(&mut lines);
    let path = original.with_extension(suffix);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Every step and every use arrives once, in sequence, on every sink, and verifies; each way
/// of rewriting the export is caught, naming the record.
#[tokio::test]
async fn every_step_and_use_is_exported_once_and_tampering_is_caught() {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let carol = cluster.client(Identity::Carol).await;
    let receiver = HookReceiver::start(free_port(), Duration::ZERO).await;
    control_with(
        &admin,
        json!([
            { "name": "siem", "webhook": { "url": receiver.url() } },
            { "name": "file", "file": { "name": "trail.jsonl" } },
            { "name": "console", "stdout": true },
        ]),
        None,
    )
    .await;
    let ns = cluster.namespace("trail").await;
    let policy = format!("{}-delete", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Manual")).await;

    let used = format!("{}-used", ns.name);
    create_request(
        &alice,
        &used,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-1: stuck rollout" }),
    )
    .await;
    wait_phase(&admin, &used, Phase::Pending, SOON).await;
    review(&bob, &used, "bob", "Approve", "ok").await.unwrap();
    wait_phase(&admin, &used, Phase::Approved, SOON).await;
    pam::wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns.name);
    for name in ["web", "api"] {
        deployments
            .create(&PostParams::default(), &deployment(name))
            .await
            .unwrap();
    }
    let as_alice = Api::<Deployment>::namespaced(alice.clone(), &ns.name);
    for name in ["web", "api"] {
        eventually("alice's delete admitted", SOON, || async {
            as_alice.delete(name, &DeleteParams::default()).await.ok()
        })
        .await;
    }
    eventually("both uses recorded", SOON, || async {
        let request = Api::<ElevationRequest>::all(admin.clone())
            .get(&used)
            .await
            .ok()?;
        (request.status?.execution_count == 2).then_some(())
    })
    .await;
    review(&bob, &used, "bob", "Revoke", "done now")
        .await
        .unwrap();
    wait_phase(&admin, &used, Phase::Revoked, SOON).await;

    let denied = format!("{}-denied", ns.name);
    create_request(
        &alice,
        &denied,
        json!({ "policy": policy, "namespace": ns.name, "reason": "INC-2" }),
    )
    .await;
    wait_phase(&admin, &denied, Phase::Pending, SOON).await;
    review(&carol, &denied, "carol", "Deny", "not now")
        .await
        .unwrap();
    wait_phase(&admin, &denied, Phase::Denied, SOON).await;

    let head = wait_exported(&admin, &["siem", "file", "console"], SOON).await;
    let key = key(&admin).await;

    // The HTTP stream: CloudEvents batches, each record once, in sequence, verified.
    let stream = received(&receiver);
    verify_to_head(&stream, &key, &head);
    assert_eq!(
        trail_of(&stream, &used),
        pairs(&[
            ("request.submitted", "alice"),
            ("request.reviewed", "bob"),
            ("request.approved", "bob"),
            ("grant.used", "alice"),
            ("grant.used", "alice"),
            ("request.reviewed", "bob"),
            ("request.revoked", "bob"),
        ])
    );
    assert_eq!(
        trail_of(&stream, &denied),
        pairs(&[
            ("request.submitted", "alice"),
            ("request.reviewed", "carol"),
            ("request.denied", "carol"),
        ])
    );
    let grant_uses: Vec<&AuditRecord> = stream
        .iter()
        .filter(|r| r.subject == used && r.event_type == "io.kubepam.grant.used")
        .collect();
    let operations: BTreeSet<String> = grant_uses
        .iter()
        .map(|r| {
            let op = r.data.operation.as_ref().unwrap();
            format!(
                "{} {} {}",
                op.verb,
                op.qualified_resource(),
                op.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        operations,
        BTreeSet::from([
            "delete deployments.apps web".to_owned(),
            "delete deployments.apps api".to_owned()
        ])
    );
    let approved = stream
        .iter()
        .find(|r| r.subject == used && r.event_type == "io.kubepam.request.approved")
        .unwrap();
    assert_eq!(approved.data.reason, "INC-1: stuck rollout");
    assert_eq!(approved.data.scope.as_deref(), Some(ns.name.as_str()));
    assert!(approved.data.granted_until.is_some());

    // The file: the same chain, no record twice.
    let file = cluster.audit_dir().join("trail.jsonl");
    let written = parse_lines(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let ids: BTreeSet<&str> = written.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), written.len(), "no record twice in the file");
    verify_to_head(&written, &key, &head);
    assert_eq!(trail_of(&written, &used), trail_of(&stream, &used));

    // Standard output: the same records, one per line.
    let operator = guard.as_ref().unwrap();
    let printed = std::fs::read_to_string(operator.log_path.with_extension("stdout")).unwrap();
    let printed = parse_lines(&printed).expect("standard output holds records only");
    verify_to_head(&printed, &key, &head);

    // What an auditor runs. The file began with the chain's first record in this cluster's
    // life only if this test ran first: --partial either way.
    let path = file.to_str().unwrap();
    let (code, out, err) = pam(
        cluster,
        &["audit", "verify", path, "--against-cluster", "--partial"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified"), "{out}");
    let (code, out, err) = pam(cluster, &["audit", "show", &used, path]);
    assert_eq!(code, 0, "{out}{err}");
    for shown in [
        "submitted",
        "approved",
        "used",
        "revoked",
        "delete deployments.apps/web",
    ] {
        assert!(out.contains(shown), "{shown} missing from:\n{out}");
    }

    // Tampering, each named.
    let reason_changed = tampered(&file, "reason", |lines| {
        let mut record: Value = serde_json::from_str(&lines[2]).unwrap();
        record["data"]["reason"] = json!("nothing to see here");
        lines[2] = record.to_string();
    });
    let dropped = tampered(&file, "dropped", |lines| {
        lines.remove(1);
    });
    let swapped = tampered(&file, "swapped", |lines| lines.swap(1, 2));
    for (path, line) in [(&reason_changed, 3), (&dropped, 2), (&swapped, 2)] {
        let (code, out, err) = pam(
            cluster,
            &["audit", "verify", path.to_str().unwrap(), "--partial"],
        );
        assert_ne!(code, 0, "{} verified: {out}", path.display());
        assert!(
            format!("{out}{err}").contains(&format!("line {line}")),
            "{}: the failing record is not named: {out}{err}",
            path.display()
        );
    }
    let truncated = tampered(&file, "truncated", |lines| {
        lines.truncate(lines.len() - 2);
    });
    let truncated = truncated.to_str().unwrap();
    let (code, out, err) = pam(cluster, &["audit", "verify", truncated, "--partial"]);
    assert_eq!(code, 0, "alone, a cut export is a valid chain: {out}{err}");
    let (code, out, err) = pam(
        cluster,
        &[
            "audit",
            "verify",
            truncated,
            "--partial",
            "--against-cluster",
        ],
    );
    assert_ne!(code, 0, "a cut tail is caught against the cluster: {out}");
    assert!(format!("{out}{err}").contains("missing"), "{out}{err}");
    let other_key = file.with_extension("key");
    std::fs::write(&other_key, [7_u8; 32]).unwrap();
    let (code, out, err) = pam(
        cluster,
        &[
            "audit",
            "verify",
            path,
            "--partial",
            "--key-file",
            other_key.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0, "another key verified the export: {out}");
    assert!(format!("{out}{err}").contains("line 1"), "{out}{err}");
    ns.delete().await;
    drop(guard);
}

/// Requests made every `every` until `until`, by alice under an Auto policy, each lasting
/// two seconds; a create refused while kubepam's webhooks are down is tried again.
fn load(
    alice: Client,
    policy: String,
    namespace: String,
    until: Instant,
    every: Duration,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let api = Api::<ElevationRequest>::all(alice.clone());
        let mut made = Vec::new();
        let mut n = 0;
        while Instant::now() < until {
            let name = format!("{namespace}-{n}");
            let request: ElevationRequest = serde_json::from_value(json!({
                "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
                "metadata": { "name": name },
                "spec": { "policy": policy, "namespace": namespace, "reason": format!("load {n}"), "duration": "2s" },
            }))
            .unwrap();
            if api.create(&PostParams::default(), &request).await.is_ok() {
                made.push(name);
                n += 1;
            }
            tokio::time::sleep(every).await;
        }
        made
    })
}

/// The operator killed (SIGKILL) twice under load, a second replica sealing at the same time as the
/// leader (as an old leader that has not noticed it lost the Lease would), and a sink down for
/// a minute: once the sink is back the chain has no gap, no fork and no number used twice, and
/// every record of every request arrived exactly once.
#[tokio::test]
async fn kills_a_rival_sequencer_and_a_sink_down_for_a_minute_lose_nothing() {
    let (mut guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let port = free_port();
    let receiver = HookReceiver::start(port, Duration::ZERO).await;
    control_with(
        &admin,
        json!([
            { "name": "siem-faults", "webhook": { "url": receiver.url() } },
            { "name": "file-faults", "file": { "name": "faults.jsonl" } },
        ]),
        None,
    )
    .await;
    let ns = cluster.namespace("faults").await;
    let policy = format!("{}-auto", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;

    let started = Instant::now();
    let made = load(
        alice.clone(),
        policy.clone(),
        ns.name.clone(),
        started + Duration::from_secs(50),
        Duration::from_millis(200),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The sink goes down for a minute; what was sent to it so far is kept.
    let mut calls = receiver.received();
    drop(receiver);
    let down_at = Instant::now();

    // A rival that seals at the same time as the leader, for a while.
    let rival = cluster.spawn_operator_with(&support::OperatorSpec {
        args: vec!["--no-leader-election", "--no-register-webhooks"],
        ..support::OperatorSpec::default()
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    rival.kill();

    for _ in 0..2 {
        guard.take().unwrap().kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let operator = cluster.spawn_operator();
        operator.wait_registered(&admin).await;
        *guard = Some(operator);
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    tokio::time::sleep(
        (down_at + Duration::from_secs(60)).saturating_duration_since(Instant::now()),
    )
    .await;
    let receiver = HookReceiver::start(port, Duration::ZERO).await;
    let made = made.await.unwrap();
    assert!(
        made.len() > 50,
        "the load made only {} requests",
        made.len()
    );

    let head = wait_exported(
        &admin,
        &["siem-faults", "file-faults"],
        Duration::from_secs(120),
    )
    .await;
    let key = key(&admin).await;
    calls.extend(receiver.received());
    let mut by_sequence: BTreeMap<u64, String> = BTreeMap::new();
    let mut stream = Vec::new();
    for call in calls {
        for event in call.body.as_array().unwrap() {
            let record: AuditRecord = serde_json::from_value(event.clone()).unwrap();
            let digest = record.kubepamsignature.clone();
            if let Some(known) = by_sequence.get(&record.kubepamsequence) {
                // Sent again after a crash: it must be the very same record.
                assert_eq!(
                    *known, digest,
                    "two records numbered {}",
                    record.kubepamsequence
                );
            } else {
                by_sequence.insert(record.kubepamsequence, digest);
                stream.push(record);
            }
        }
    }
    stream.sort_by_key(|r| r.kubepamsequence);
    let verified = verify_to_head(&stream, &key, &head);
    assert_eq!(verified, stream.len());

    // Every record each request made is on the chain exactly once.
    let on_chain: BTreeMap<&str, usize> = stream.iter().fold(BTreeMap::new(), |mut ids, r| {
        *ids.entry(r.id.as_str()).or_default() += 1;
        ids
    });
    let requests = Api::<ElevationRequest>::all(admin.clone());
    for name in &made {
        let request = requests.get(name).await.unwrap();
        let status = request.status.unwrap();
        let id = status.request_id.unwrap();
        let trail = status.audit.unwrap();
        assert!(trail.recorded >= 2, "{name}: {trail:?}");
        assert_eq!(trail.unrecorded, 0);
        for n in 1..=trail.recorded {
            let record_id = format!("{id}/{n}");
            let copies: Vec<String> = stream
                .iter()
                .filter(|r| r.id == record_id)
                .map(|r| {
                    format!(
                        "{} {} {} {}",
                        r.kubepamsequence, r.event_type, r.time, r.data.actor
                    )
                })
                .collect();
            assert_eq!(
                on_chain.get(record_id.as_str()),
                Some(&1),
                "record {n} of {name} is not on the chain exactly once: {copies:#?}"
            );
        }
    }

    // The file sink went through the same kills, and the rival wrote to the same file: the
    // same chain; a record written twice is the very same record (verify skips the copy, and
    // fails on a different record under a number already read).
    let written =
        parse_lines(&std::fs::read_to_string(cluster.audit_dir().join("faults.jsonl")).unwrap())
            .unwrap();
    let in_file = verify_to_head(&written, &key, &head);
    assert!(
        in_file >= stream.len(),
        "the file holds the whole chain the receiver got"
    );
    ns.delete().await;
    drop(guard);
}

/// `retention` removes ended requests, but only once every sink has their records: behind a
/// failing sink a request stays, and deleting it waits for the export.
#[tokio::test]
async fn retention_removes_only_what_every_sink_has() {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let receiver = HookReceiver::start(free_port(), Duration::ZERO).await;
    let live = json!({ "name": "siem-retention", "webhook": { "url": receiver.url() } });
    control_with(&admin, json!([live]), Some("2s")).await;
    let ns = cluster.namespace("retain").await;
    let policy = format!("{}-auto", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let requests = Api::<ElevationRequest>::all(admin.clone());
    let spec = |reason: &str| json!({ "policy": policy, "namespace": ns.name, "reason": reason, "duration": "1s" });

    // Ended and exported: removed once settled and past retention.
    let kept_briefly = format!("{}-a", ns.name);
    create_request(&alice, &kept_briefly, spec("INC-1")).await;
    wait_phase(&admin, &kept_briefly, Phase::Expired, SOON).await;
    let settle = Duration::from_secs(
        kubepam_core::reconcile::SETTLE_AFTER
            .num_seconds()
            .unsigned_abs(),
    );
    eventually("the ended request removed", settle + SOON, || async {
        requests
            .get_opt(&kept_briefly)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let stream = received(&receiver);
    assert_eq!(
        trail_of(&stream, &kept_briefly).len(),
        3,
        "its records were exported before it went: {:?}",
        trail_of(&stream, &kept_briefly)
    );

    // Behind a sink that fails, a request stays.
    let stuck = json!({ "name": "stuck", "webhook": { "url": format!("http://127.0.0.1:{}/down", free_port()) } });
    control_with(&admin, json!([live, stuck]), Some("2s")).await;
    let held = format!("{}-b", ns.name);
    create_request(&alice, &held, spec("INC-2")).await;
    wait_phase(&admin, &held, Phase::Expired, SOON).await;
    let failing = eventually("the control says the sink fails", SOON, || async {
        let status = control(&admin).await.status?;
        let c = find_condition(&status.conditions, "AuditExported")?;
        (c.status == "False" && c.reason == "AuditSinkFailing").then(|| c.message.clone())
    })
    .await;
    assert!(failing.contains("stuck"), "{failing}");
    let operator = guard.as_ref().unwrap();
    eventually(
        "the backlog of the failing sink is measured",
        SOON,
        || async {
            (operator.metric("kubepam_audit_backlog{sink=\"stuck\"}")? > 0.0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(settle + Duration::from_secs(5)).await;
    let still = requests
        .get(&held)
        .await
        .expect("kept while a sink lacks its records");
    assert!(
        still
            .finalizers()
            .iter()
            .any(|f| f.starts_with("kubepam.io")),
        "{:?}",
        still.finalizers()
    );
    // Deleting it waits for the export instead of losing the records.
    requests
        .delete(&held, &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = requests
        .get(&held)
        .await
        .expect("deletion waits for the export");
    assert!(waiting.metadata.deletion_timestamp.is_some());

    // The sink is dropped from the control: nothing waits for it any more.
    control_with(&admin, json!([live]), Some("2s")).await;
    eventually("the deleted request gone once exported", SOON, || async {
        requests.get_opt(&held).await.ok()?.is_none().then_some(())
    })
    .await;
    let stream = received(&receiver);
    assert_eq!(
        trail_of(&stream, &held).len(),
        3,
        "{:?}",
        trail_of(&stream, &held)
    );
    ns.delete().await;
    drop(guard);
}

/// Someone with rights in kubepam's namespace forges a batch of the log, or replaces the
/// signing key with one they know: the forged batch is never taken for the chain, and with
/// another key kubepam stops sealing and says why, until the chain's key is back.
#[tokio::test]
async fn a_forged_batch_or_a_replaced_key_is_refused() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (mut guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let receiver = HookReceiver::start(free_port(), Duration::ZERO).await;
    control_with(
        &admin,
        json!([{ "name": "siem-forgery", "webhook": { "url": receiver.url() } }]),
        None,
    )
    .await;
    let ns = cluster.namespace("forge").await;
    let policy = format!("{}-auto", ns.name);
    create_policy(&admin, &policy, task_policy(&ns.name, "Auto")).await;
    let spec = |reason: &str| json!({ "policy": policy, "namespace": ns.name, "reason": reason });
    let first = format!("{}-1", ns.name);
    create_request(&alice, &first, spec("INC-1")).await;
    wait_phase(&admin, &first, Phase::Approved, SOON).await;
    let head = wait_exported(&admin, &["siem-forgery"], SOON).await;
    let key = key(&admin).await;

    // A batch at the chain's next place, linked to its head, signed with another key.
    let mut from = chain_head(&head);
    let forged = kubepam_core::audit::seal(
        AuditRecord::new(
            "io.kubepam.request.approved",
            "kubepam.io/clusters/kubernetes",
            "forged/1",
            chrono::Utc::now(),
            "approved-by-nobody",
            kubepam_core::audit::AuditData {
                actor: "ciso".into(),
                ..Default::default()
            },
        ),
        &mut from,
        &Key::new(vec![9_u8; 32]),
    );
    let place = format!("kubepam-audit-{:020}", head.sequence + 1);
    let maps = Api::<ConfigMap>::namespaced(admin.clone(), "kubepam-system");
    let batch: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": place, "labels": { "kubepam.io/audit-log": "true" } },
        "data": { "records.jsonl": format!("{}\n", serde_json::to_string(&forged).unwrap()) },
    }))
    .unwrap();
    maps.create(&PostParams::default(), &batch).await.unwrap();
    let second = format!("{}-2", ns.name);
    create_request(&alice, &second, spec("INC-2")).await;
    wait_phase(&admin, &second, Phase::Approved, SOON).await;
    eventually("the chain going on past the forged batch", SOON, || async {
        let head_now = control(&admin).await.status?.audit?.head?;
        (head_now.sequence > head.sequence + 1).then_some(())
    })
    .await;
    let later = wait_exported(&admin, &["siem-forgery"], SOON).await;
    // The place holds kubepam's own batch now, or nothing (exported and removed).
    let at_place = maps.get_opt(&place).await.unwrap();
    assert!(
        at_place.is_none_or(
            |m| !m.data.unwrap_or_default()["records.jsonl"].contains("approved-by-nobody")
        ),
        "the forged batch is gone"
    );
    let stream = received(&receiver);
    verify_to_head(&stream, &key, &later);
    assert!(stream.iter().all(|r| r.subject != "approved-by-nobody"));
    assert_eq!(
        trail_of(&stream, &second).len(),
        2,
        "{:?}",
        trail_of(&stream, &second)
    );

    // The key replaced by one the attacker knows, and kubepam restarted.
    let secrets = Api::<Secret>::namespaced(admin.clone(), "kubepam-system");
    let set_key = |bytes: Vec<u8>| {
        let secrets = secrets.clone();
        async move {
            let patch = json!({ "data": { "key": k8s_openapi::ByteString(bytes) } });
            secrets
                .patch(
                    "kubepam-audit-key",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .unwrap();
        }
    };
    let original = secrets
        .get("kubepam-audit-key")
        .await
        .unwrap()
        .data
        .unwrap()["key"]
        .0
        .clone();
    set_key(vec![7_u8; 32]).await;
    let restart = |guard: &mut Option<support::OperatorProcess>| {
        guard.take().unwrap().kill();
        cluster.spawn_operator()
    };
    let operator = restart(&mut guard);
    operator.wait_registered(&admin).await;
    *guard = Some(operator);
    let third = format!("{}-3", ns.name);
    create_request(&alice, &third, spec("INC-3")).await;
    wait_phase(&admin, &third, Phase::Approved, SOON).await;
    let said = eventually("the control says the key changed", SOON, || async {
        let status = control(&admin).await.status?;
        let c = find_condition(&status.conditions, "AuditExported")?;
        (c.status == "False" && c.reason == "AuditNotSealed").then(|| c.message.clone())
    })
    .await;
    assert!(said.contains("fingerprint"), "{said}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = Api::<ElevationRequest>::all(admin.clone())
        .get(&third)
        .await
        .unwrap();
    assert!(
        !waiting.status.unwrap().audit.unwrap().pending.is_empty(),
        "nothing is sealed with a key that is not the chain's"
    );

    // The chain's key back: sealing goes on, one chain.
    set_key(original).await;
    let operator = restart(&mut guard);
    operator.wait_registered(&admin).await;
    *guard = Some(operator);
    let head = wait_exported(&admin, &["siem-forgery"], SOON).await;
    let stream = received(&receiver);
    verify_to_head(&stream, &key, &head);
    assert_eq!(
        trail_of(&stream, &third).len(),
        2,
        "{:?}",
        trail_of(&stream, &third)
    );
    ns.delete().await;
    drop(guard);
}
