//! The chain catches every way of rewriting an export: a changed field, a dropped, repeated,
//! reordered or inserted record, a truncated tail, another key.

use super::chain::digest;
use super::*;
use chrono::{TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

fn key() -> Key {
    Key::new(b"the-audit-key-of-this-cluster".to_vec())
}

fn unsealed(n: u64) -> AuditRecord {
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    AuditRecord::new(
        "io.kubepam.request.approved",
        "kubepam.io/clusters/test",
        &format!("rec-{n}"),
        t0 + TimeDelta::seconds(i64::try_from(n).unwrap()),
        &format!("prod-delete-{n}"),
        AuditData {
            actor: "bob".into(),
            policy: "prod-delete-deployments".into(),
            scope: Some("prod".into()),
            reason: format!("INC-{n}"),
            comment: Some("ok".into()),
            request_id: format!("id-{n}"),
            ..AuditData::default()
        },
    )
}

/// A chain of `n` records and its head.
fn chain(n: u64) -> (Vec<AuditRecord>, ChainHead) {
    let mut head = ChainHead::default();
    let records = (1..=n)
        .map(|i| seal(unsealed(i), &mut head, &key()))
        .collect();
    (records, head)
}

fn failure_at(result: Result<Verified, VerifyError>) -> (usize, Failure) {
    match result {
        Err(VerifyError::Record { index, failure, .. }) => (index, failure),
        other => panic!("expected a failing record, got {other:?}"),
    }
}

#[test]
fn a_sealed_chain_verifies_and_reaches_its_head() {
    let (records, head) = chain(5);
    assert_eq!(head.sequence, 5);
    assert_eq!(head.digest, digest(&records[4]));
    let verified = verify(&records, &key(), &ChainHead::default(), Some(&head)).unwrap();
    assert_eq!(verified.end, head);
    assert_eq!((verified.records, verified.redelivered), (5, 0));
    assert_eq!(records[0].kubepamprev, "");
    assert_eq!(records[1].kubepamprev, digest(&records[0]));
}

#[test]
fn the_records_are_cloudevents_in_json_lines() {
    let (records, head) = chain(3);
    let lines: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for attribute in [
        "specversion",
        "type",
        "source",
        "id",
        "time",
        "subject",
        "data",
    ] {
        assert!(
            first.get(attribute).is_some(),
            "{attribute} missing: {first}"
        );
    }
    assert_eq!(first["specversion"], "1.0");
    assert_eq!(first["data"]["requestId"], "id-1");
    let parsed = parse_lines(&format!("{lines}\n")).unwrap();
    assert_eq!(parsed, records);
    verify(&parsed, &key(), &ChainHead::default(), Some(&head)).unwrap();
    assert_eq!(parse_lines("{}\nnot json").unwrap_err().0, 1);
}

#[test]
fn key_order_does_not_matter_but_content_does() {
    let (records, _) = chain(2);
    // A log shipper may write keys in another order: the same record.
    let mut value = serde_json::to_value(&records[1]).unwrap();
    let reordered: serde_json::Map<String, serde_json::Value> = value
        .as_object()
        .unwrap()
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let back: AuditRecord = serde_json::from_value(serde_json::Value::Object(reordered)).unwrap();
    // A field added to a record is refused, not silently dropped from what is checked.
    let mut added = serde_json::to_value(&records[1]).unwrap();
    added["data"]["approvedBy"] = "the-ceo".into();
    assert!(serde_json::from_value::<AuditRecord>(added).is_err());
    let mut added = serde_json::to_value(&records[1]).unwrap();
    added["kubepamnote"] = "fine".into();
    assert!(serde_json::from_value::<AuditRecord>(added).is_err());
    let mut added = serde_json::to_value(&records[1]).unwrap();
    added["data"]["operation"] =
        serde_json::json!({ "user": "a", "verb": "get", "resource": "pods", "approvedBy": "x" });
    let line = serde_json::to_string(&added).unwrap();
    let (at, why) = parse_lines(&format!("\n{line}\n")).unwrap_err();
    assert_eq!(at, 2);
    assert!(why.contains("data.operation.approvedBy"), "{why}");
    verify(
        &[records[0].clone(), back],
        &key(),
        &ChainHead::default(),
        None,
    )
    .unwrap();
    value["data"]["reason"] = "INC-9999".into();
    let changed: AuditRecord = serde_json::from_value(value).unwrap();
    let (index, failure) = failure_at(verify(
        &[records[0].clone(), changed],
        &key(),
        &ChainHead::default(),
        None,
    ));
    assert_eq!((index, failure), (1, Failure::BadSignature));
}

#[test]
fn tampering_is_caught_and_the_first_failing_record_named() {
    let (records, head) = chain(6);
    let check =
        |records: &[AuditRecord]| verify(records, &key(), &ChainHead::default(), Some(&head));

    let mut dropped = records.clone();
    dropped.remove(2);
    assert_eq!(
        failure_at(check(&dropped)),
        (
            2,
            Failure::Gap {
                expected: 3,
                found: 4
            }
        )
    );

    let mut swapped = records.clone();
    swapped.swap(1, 2);
    assert_eq!(
        failure_at(check(&swapped)),
        (
            1,
            Failure::Gap {
                expected: 2,
                found: 3
            }
        )
    );

    // A record sent again after a crash is the same record: skipped, and counted.
    let mut redelivered = records.clone();
    redelivered.insert(3, records[1].clone());
    redelivered.insert(4, records[2].clone());
    let verified = check(&redelivered).unwrap();
    assert_eq!((verified.records, verified.redelivered), (6, 2));

    // A second record with a number already used, even signed with the key, is a fork.
    let mut fork_head = ChainHead {
        sequence: 1,
        digest: digest(&records[0]),
    };
    let fork = seal(unsealed(77), &mut fork_head, &key());
    let mut two_chains = records.clone();
    two_chains.insert(3, fork);
    assert_eq!(failure_at(check(&two_chains)), (3, Failure::Forked(2)));
    // A changed copy of an earlier record fails its signature.
    let mut changed_copy = records[1].clone();
    changed_copy.data.comment = Some("not what was said".into());
    let mut repeated = records.clone();
    repeated.insert(3, changed_copy);
    assert_eq!(failure_at(check(&repeated)), (3, Failure::BadSignature));

    // A record forged with the right number but not linked to its predecessor.
    let mut forged_head = ChainHead {
        sequence: 2,
        digest: "0".repeat(64),
    };
    let forged = seal(unsealed(99), &mut forged_head, &key());
    let mut inserted = records.clone();
    inserted[2] = forged;
    assert_eq!(failure_at(check(&inserted)).1, Failure::BrokenLink);

    let truncated = &records[..4];
    assert_eq!(
        check(truncated),
        Err(VerifyError::ShortOfHead { ends: 4, head: 6 })
    );
    assert!(verify(truncated, &key(), &ChainHead::default(), None).is_ok());

    // An export past the head that forked before it is not the cluster's chain.
    let mut other_branch = ChainHead {
        sequence: 3,
        digest: digest(&records[2]),
    };
    let mut forked_tail = records[..3].to_vec();
    forked_tail.extend((0..5).map(|n| seal(unsealed(50 + n), &mut other_branch, &key())));
    assert_eq!(
        check(&forked_tail),
        Err(VerifyError::NotTheHead { sequence: 6 })
    );

    let other = Key::new(b"another key".to_vec());
    let err = verify(&records, &other, &ChainHead::default(), Some(&head)).unwrap_err();
    assert!(err.to_string().contains("record 1 (id rec-1"), "{err}");
}

#[test]
fn an_export_may_start_after_the_first_record() {
    let (records, head) = chain(5);
    let from = ChainHead {
        sequence: 2,
        digest: digest(&records[1]),
    };
    assert_eq!(
        verify(&records[2..], &key(), &from, Some(&head)).map(|v| v.end),
        Ok(head)
    );
}

#[test]
fn the_key_never_shows() {
    assert_eq!(format!("{:?}", key()), "Key(..)");
}

proptest! {
    /// Whatever single field of whatever record is changed, the chain no longer verifies, and
    /// the failure names that record.
    #[test]
    fn any_changed_record_is_named(n in 2u64..12, at in 0usize..12, field in 0usize..6) {
        let (mut records, head) = chain(n);
        let at = at % records.len();
        let r = &mut records[at];
        match field {
            0 => r.data.actor.push('x'),
            1 => r.data.reason.push('x'),
            2 => r.time += TimeDelta::milliseconds(1),
            3 => r.subject.push('x'),
            4 => r.event_type = "io.kubepam.request.denied".into(),
            _ => r.data.comment = None,
        }
        let (index, failure) = failure_at(verify(&records, &key(), &ChainHead::default(), Some(&head)));
        prop_assert_eq!(index, at);
        prop_assert_eq!(failure, Failure::BadSignature);
    }

    /// Dropping any non-empty run of records is caught: inside by the numbering, at the end
    /// against the head.
    #[test]
    fn any_dropped_run_is_caught(n in 2u64..12, start in 0usize..12, len in 1usize..4) {
        let (records, head) = chain(n);
        let start = start % records.len();
        let end = (start + len).min(records.len());
        let mut kept = records.clone();
        kept.drain(start..end);
        prop_assert!(verify(&kept, &key(), &ChainHead::default(), Some(&head)).is_err());
    }
}

mod stored_log {
    use super::*;
    use crate::audit::log::{
        Segment, decode, encode, not_the_chain, records_after, removable, segment_name,
    };
    use std::collections::BTreeMap;

    /// The chain of `n` records stored in batches of `size`.
    fn stored(n: u64, size: usize) -> (BTreeMap<u64, Segment>, Vec<ChainHead>) {
        let (records, _) = chain(n);
        let mut segments = BTreeMap::new();
        let mut heads = vec![ChainHead::default()];
        for batch in records.chunks(size) {
            let first = batch[0].kubepamsequence;
            let segment = decode(&segment_name(first), &encode(batch)).unwrap();
            heads.extend(batch.iter().map(|r| ChainHead {
                sequence: r.kubepamsequence,
                digest: digest(r),
            }));
            segments.insert(first, segment);
        }
        (segments, heads)
    }

    #[test]
    fn a_batch_is_named_by_its_first_record_and_read_back() {
        let (segments, heads) = stored(7, 3);
        assert_eq!(segments.keys().copied().collect::<Vec<_>>(), [1, 4, 7]);
        assert_eq!(segments[&4].end, heads[6]);
        assert!(
            decode(&segment_name(5), &segments[&4].text).is_err(),
            "a batch stored under another number's name is refused"
        );
        let (lines, last) = records_after(&segments, 2, 3).unwrap();
        assert_eq!((lines.len(), last), (3, 5));
        assert_eq!(records_after(&segments, 7, 10), None);
    }

    #[test]
    fn only_what_every_sink_has_and_the_control_records_is_removed() {
        let (segments, _) = stored(9, 3);
        assert_eq!(removable(&segments, 6, 9, None), [1, 4]);
        assert_eq!(
            removable(&segments, 9, 5, None),
            [1],
            "the head must be recorded past it"
        );
        assert_eq!(
            removable(&segments, 9, 9, Some(5)),
            [1],
            "a request not yet told"
        );
        assert_eq!(
            removable(&segments, u64::MAX, 9, None),
            [1, 4],
            "the newest stays: the log says where the chain ends"
        );
    }

    proptest! {
        /// A batch stored by a replica that lost the race (at a place whose batch had been
        /// removed once every sink had it) is never taken for the chain, wherever the head
        /// the control records is; the chain's own batches always are.
        #[test]
        fn a_batch_off_the_chain_is_found(n in 6u64..30, size in 1usize..5, pruned in 0usize..6, head_at in 0u64..30) {
            let (mut segments, heads) = stored(n, size);
            let firsts: Vec<u64> = segments.keys().copied().collect();
            let pruned = pruned.min(firsts.len() - 1);
            for first in &firsts[..pruned] {
                segments.remove(first);
            }
            let oldest = *segments.keys().next().unwrap();
            // The recorded head is at or past the removed batches, and not past the chain.
            let head_at = head_at.clamp(oldest.saturating_sub(1), n);
            let recorded = heads[usize::try_from(head_at).unwrap()].clone();
            prop_assert_eq!(not_the_chain(&segments, Some(&recorded), head_at), Ok(Vec::<u64>::new()));
            if pruned > 0 {
                // The loser stored other records at the first removed place.
                let place = firsts[0];
                let mut from = heads[usize::try_from(place - 1).unwrap()].clone();
                let other: Vec<AuditRecord> = (0..1).map(|i| seal(unsealed(100 + i), &mut from, &key())).collect();
                let loser = decode(&segment_name(place), &encode(&other)).unwrap();
                segments.insert(place, loser);
                prop_assert_eq!(not_the_chain(&segments, Some(&recorded), head_at), Ok(vec![place]));
            }
        }

        /// With every batch of the chain removed up to the head, a loser's batch is discarded;
        /// a batch past the head that does not link on is an error, never discarded.
        #[test]
        fn nothing_past_the_head_is_discarded(n in 4u64..20) {
            let (segments, heads) = stored(n, 2);
            let recorded = heads[usize::try_from(n).unwrap()].clone();
            let mut from = heads[1].clone();
            let other: Vec<AuditRecord> = (0..2).map(|i| seal(unsealed(200 + i), &mut from, &key())).collect();
            let loser = decode(&segment_name(2), &encode(&other)).unwrap();
            let alone = BTreeMap::from([(2, loser.clone())]);
            prop_assert_eq!(not_the_chain(&alone, Some(&recorded), n), Ok(vec![2]));
            let mut broken = segments.clone();
            let last = *broken.keys().next_back().unwrap();
            let mut tail = broken.remove(&last).unwrap();
            tail.prev = "0".repeat(64);
            broken.insert(last, tail);
            let earlier = heads[usize::try_from(last - 1).unwrap()].clone();
            prop_assert!(not_the_chain(&broken, Some(&earlier), n).is_err());
        }

        /// A batch of the chain deleted by hand before every sink had the one before it: that
        /// one is kept (never discarded as a loser's), and the log is an error to look at.
        #[test]
        fn a_batch_before_a_hole_is_never_discarded(n in 6u64..20, exported in 0u64..2) {
            let (mut segments, heads) = stored(n, 2);
            segments.remove(&3);
            let recorded = heads[usize::try_from(n).unwrap()].clone();
            prop_assert!(not_the_chain(&segments, Some(&recorded), exported).is_err());
        }
    }
}

mod control_side {
    use crate::api::{ElevationRequest, PrivilegedAccessControl};
    use crate::audit::export::{CONDITION_AUDIT_EXPORTED, condition};
    use crate::audit::retention;
    use chrono::{TimeDelta, TimeZone, Utc};

    fn control(spec: &serde_json::Value, audit: &serde_json::Value) -> PrivilegedAccessControl {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "PrivilegedAccessControl",
            "metadata": { "name": "default", "generation": 3 },
            "spec": spec,
            "status": { "audit": audit },
        }))
        .unwrap()
    }

    fn said(control: &PrivilegedAccessControl, problem: Option<&str>) -> (String, String, String) {
        let c = condition(control, problem, Utc::now());
        assert_eq!(c.type_, CONDITION_AUDIT_EXPORTED);
        (c.status, c.reason, c.message)
    }

    #[test]
    fn the_control_says_whether_every_sink_has_the_chain() {
        let sinks = serde_json::json!({
            "defaultApproverGroup": "pam-approvers",
            "audit": { "sinks": [{ "name": "siem", "webhook": { "url": "https://siem.example" } },
                                 { "name": "file", "file": { "name": "audit.jsonl" } }] },
        });
        let all = control(
            &sinks,
            &serde_json::json!({ "head": { "sequence": 9, "digest": "d" },
                                "sinks": [{ "name": "siem", "exportedSequence": 9 },
                                          { "name": "file", "exportedSequence": 9 }] }),
        );
        assert_eq!(said(&all, None).0, "True");
        let behind = control(
            &sinks,
            &serde_json::json!({ "head": { "sequence": 9, "digest": "d" },
                                "sinks": [{ "name": "siem", "exportedSequence": 9 },
                                          { "name": "file", "exportedSequence": 4 }] }),
        );
        let (status, _, message) = said(&behind, None);
        assert_eq!(status, "True", "on their way is not failing");
        assert!(message.contains("5 for \"file\""), "{message}");
        let failing = control(
            &sinks,
            &serde_json::json!({ "head": { "sequence": 9, "digest": "d" },
                                "sinks": [{ "name": "siem", "exportedSequence": 2, "failures": 3,
                                            "lastError": "the receiver answered 503" }] }),
        );
        let (status, reason, message) = said(&failing, None);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "AuditSinkFailing")
        );
        assert!(
            message.contains("siem")
                && message.contains("503")
                && message.contains("7 records wait"),
            "{message}"
        );
        let none = control(
            &serde_json::json!({ "defaultApproverGroup": "g" }),
            &serde_json::json!({}),
        );
        assert_eq!(said(&none, None).1, "NoAuditSink");
        assert_eq!(said(&none, Some("Secret unusable")).1, "AuditNotSealed");
    }

    #[test]
    fn retention_waits_for_the_end_and_the_export() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let request = |phase: &str, last_sequence: u64, pending: bool| -> ElevationRequest {
            let pending = if pending {
                serde_json::json!([{ "id": "x/3", "type": "io.kubepam.request.expired", "time": t0, "actor": "kubepam" }])
            } else {
                serde_json::json!([])
            };
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
                "metadata": { "name": "r" },
                "spec": { "policy": "p", "reason": "INC-1" },
                "status": { "phase": phase, "decidedAt": t0,
                            "history": [{ "time": t0, "actor": "kubepam", "action": phase }],
                            "audit": { "recorded": 3, "lastSequence": last_sequence, "pending": pending } },
            }))
            .unwrap()
        };
        let day = TimeDelta::days(1);
        let later = t0 + day + TimeDelta::seconds(1);
        assert!(retention::due(&request("Expired", 7, false), day, 7, later));
        assert!(
            !retention::due(
                &request("Expired", 7, false),
                day,
                7,
                t0 + TimeDelta::hours(23)
            ),
            "not yet"
        );
        assert!(
            !retention::due(&request("Expired", 7, false), day, 6, later),
            "a sink lacks a record"
        );
        assert!(
            !retention::due(&request("Expired", 7, true), day, 7, later),
            "a record not sealed"
        );
        assert!(
            !retention::due(&request("Approved", 7, false), day, 7, later),
            "not ended"
        );
    }
}
