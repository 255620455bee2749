//! The sealed log, sans IO: which records the sequencer seals next and in what order, how a
//! batch is stored (one ConfigMap per batch, named by its first sequence number, so two
//! leaders can never store two batches at the same place in the chain), and which stored
//! batches every sink has received.

use std::collections::{BTreeMap, HashMap};

use super::chain::{ChainHead, Key, digest, seal};
use super::record::{AuditRecord, parse_lines};
use super::trail;
use crate::api::ElevationRequest;

/// The prefix of the name of every stored batch.
pub const SEGMENT_PREFIX: &str = "kubepam-audit-";
/// The label every stored batch carries.
pub const SEGMENT_LABEL: &str = "kubepam.io/audit-log";
/// The key of the records (JSON lines) in a stored batch.
pub const SEGMENT_KEY: &str = "records.jsonl";
/// The most records in one batch.
pub const BATCH_RECORDS: usize = 500;
/// The most bytes of records in one batch (a ConfigMap holds at most 1 MiB).
pub const BATCH_BYTES: usize = 512 * 1024;

/// The name of the batch whose first record has `first`: zero-padded, so names sort as
/// numbers do.
pub fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:020}")
}

/// The first sequence of the batch named `name`, if it is one.
pub fn segment_first(name: &str) -> Option<u64> {
    name.strip_prefix(SEGMENT_PREFIX)?.parse().ok()
}

/// The records to seal next, unsealed and in order: the requests whose first waiting record
/// is oldest first, each request's records in the order they were made; none already sealed
/// (`sealed`: ids on the log whose requests do not know it yet). At most [`BATCH_RECORDS`].
pub fn next_batch<'a, S: std::hash::BuildHasher>(
    requests: impl IntoIterator<Item = &'a ElevationRequest>,
    sealed: &HashMap<String, u64, S>,
    source: &str,
) -> Vec<AuditRecord> {
    let mut groups: Vec<(&ElevationRequest, Vec<AuditRecord>)> = requests
        .into_iter()
        .filter_map(|request| {
            let records: Vec<AuditRecord> = trail::pending(request.status.as_ref())
                .iter()
                .filter(|entry| !sealed.contains_key(&entry.id))
                .map(|entry| trail::to_record(request, entry, source))
                .collect();
            (!records.is_empty()).then_some((request, records))
        })
        .collect();
    groups.sort_by(|(a, ra), (b, rb)| {
        (ra[0].time, a.metadata.name.as_deref()).cmp(&(rb[0].time, b.metadata.name.as_deref()))
    });
    let mut batch = Vec::new();
    let mut bytes = 0;
    for record in groups.into_iter().flat_map(|(_, records)| records) {
        let size = serde_json::to_string(&record).map_or(0, |line| line.len() + 1);
        // A record a reason's worth bigger than a whole batch still goes, alone.
        if batch.len() >= BATCH_RECORDS || (!batch.is_empty() && bytes + size > BATCH_BYTES) {
            break;
        }
        bytes += size;
        batch.push(record);
    }
    batch
}

/// Seal `records` after `head`: numbered, linked and signed; `head` moves to the last.
pub fn seal_batch(records: Vec<AuditRecord>, head: &mut ChainHead, key: &Key) -> Vec<AuditRecord> {
    records
        .into_iter()
        .map(|record| seal(record, head, key))
        .collect()
}

/// A batch as stored: JSON lines.
pub fn encode(records: &[AuditRecord]) -> String {
    records
        .iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .map(|line| line + "\n")
        .collect()
}

/// What a stored batch holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its first and last sequence.
    pub first: u64,
    pub last: u64,
    /// The end of the chain after it.
    pub end: ChainHead,
    /// The digest its first record names as the one before (`kubepamprev`).
    pub prev: String,
    /// Each record's digest, in order.
    pub digests: Vec<String>,
    /// Its records' ids, with their sequence.
    pub ids: Vec<(String, u64)>,
    /// Its records, as JSON lines.
    pub text: String,
}

/// Why a stored batch cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("audit log batch {name}: line {line} is not a record: {reason}")]
    Unreadable {
        name: String,
        line: usize,
        reason: String,
    },
    #[error("audit log batch {name} holds no record")]
    Empty { name: String },
    #[error("audit log batch {name} does not start at sequence {first} as its name says")]
    Misplaced { name: String, first: u64 },
}

/// Reads a stored batch named `name`.
pub fn decode(name: &str, text: &str) -> Result<Segment, SegmentError> {
    let records = parse_lines(text).map_err(|(line, reason)| SegmentError::Unreadable {
        name: name.to_owned(),
        line,
        reason,
    })?;
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(SegmentError::Empty {
            name: name.to_owned(),
        });
    };
    if segment_first(name) != Some(first.kubepamsequence) {
        return Err(SegmentError::Misplaced {
            name: name.to_owned(),
            first: segment_first(name).unwrap_or_default(),
        });
    }
    Ok(Segment {
        first: first.kubepamsequence,
        last: last.kubepamsequence,
        end: ChainHead {
            sequence: last.kubepamsequence,
            digest: digest(last),
        },
        prev: first.kubepamprev.clone(),
        digests: records.iter().map(digest).collect(),
        ids: records
            .iter()
            .map(|r| (r.id.clone(), r.kubepamsequence))
            .collect(),
        text: text.to_owned(),
    })
}

/// The stored batches that are not the chain, to be discarded: batches a replica stored after
/// losing a race, at a place of the chain whose batch every sink had and which had been
/// removed. Such a batch always starts at or before the head the control records, and does
/// not lead to it: the chain is the batch holding the recorded head (its record there has the
/// recorded digest) or starting right after it, and the batches linking down to it. A batch
/// past the head that does not link on is not explained by any race: that is an error, and
/// nothing is discarded.
///
/// The head must be read before the batches are listed (a head is recorded only after its
/// batch is stored, so the listing holds it).
pub fn not_the_chain(
    segments: &BTreeMap<u64, Segment>,
    recorded: Option<&ChainHead>,
    exported_through: u64,
) -> Result<Vec<u64>, Inconsistent> {
    let Some(head) = recorded.filter(|r| r.sequence > 0) else {
        return Ok(Vec::new());
    };
    let links = |a: &Segment, b: &Segment| a.last + 1 == b.first && a.end.digest == b.prev;
    let holds_head = |s: &Segment| {
        s.first <= head.sequence
            && head.sequence <= s.last
            && usize::try_from(head.sequence - s.first)
                .ok()
                .and_then(|i| s.digests.get(i))
                == Some(&head.digest)
    };
    let ordered: Vec<&Segment> = segments.values().collect();
    let anchor = ordered.iter().position(|s| holds_head(s)).or_else(|| {
        ordered
            .iter()
            .position(|s| s.first == head.sequence + 1 && s.prev == head.digest)
    });
    // A loser's batch stands where every sink had the chain's own batch (that is why it had
    // been removed); a batch that does not link anywhere else is the chain's, with a batch
    // missing after it: kept, and an error for a person to look at.
    let losers_only = |batches: &[&Segment]| batches.iter().all(|s| s.last <= exported_through);
    let Some(anchor) = anchor else {
        // Every batch removed up to the head: whatever starts at or before it is a loser's.
        return if ordered.iter().all(|s| s.first <= head.sequence) && losers_only(&ordered) {
            Ok(ordered.iter().map(|s| s.first).collect())
        } else {
            Err(Inconsistent {
                head: head.sequence,
            })
        };
    };
    for pair in ordered[anchor..].windows(2) {
        if !links(pair[0], pair[1]) {
            return Err(Inconsistent {
                head: head.sequence,
            });
        }
    }
    let mut discarded = Vec::new();
    let mut at = anchor;
    for before in (0..anchor).rev() {
        if links(ordered[before], ordered[at]) {
            at = before;
        } else if losers_only(&[ordered[before]]) {
            discarded.push(ordered[before].first);
        } else {
            return Err(Inconsistent {
                head: head.sequence,
            });
        }
    }
    discarded.sort_unstable();
    Ok(discarded)
}

/// The stored batches do not make one chain through the head the control records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the stored audit log does not make one chain through the head the control records \
     (sequence {head}); nothing is sealed until it does"
)]
pub struct Inconsistent {
    /// The recorded head's sequence.
    pub head: u64,
}

/// Checks a stored batch with the key: every signature, and every link within it. A batch
/// that fails was not sealed by kubepam (or was changed since) and is never taken for the
/// chain.
pub fn check(segment: &Segment, key: &Key) -> Result<(), super::VerifyError> {
    let records = parse_lines(&segment.text).unwrap_or_default();
    let from = ChainHead {
        sequence: segment.first.saturating_sub(1),
        digest: segment.prev.clone(),
    };
    super::verify(&records, key, &from, None).map(|_| ())
}

/// The end of the chain: the last stored batch's end, or the head the control recorded when
/// every batch has been removed (or it is further on).
pub fn chain_end(segments: &BTreeMap<u64, Segment>, recorded: Option<&ChainHead>) -> ChainHead {
    let stored = segments.values().next_back().map(|s| s.end.clone());
    match (stored, recorded) {
        (Some(stored), Some(recorded)) if recorded.sequence > stored.sequence => recorded.clone(),
        (Some(stored), _) => stored,
        (None, Some(recorded)) => recorded.clone(),
        (None, None) => ChainHead::default(),
    }
}

/// The stored batches that may go: every sink has them (`exported_through`), the control's
/// status records a head at or past them, and no request still waits to learn that a record
/// of theirs is sealed (`oldest_unmarked`). The newest batch always stays: the log itself
/// then says where the chain ends, even if the control (and the head it records) is deleted.
pub fn removable(
    segments: &BTreeMap<u64, Segment>,
    exported_through: u64,
    recorded_head: u64,
    oldest_unmarked: Option<u64>,
) -> Vec<u64> {
    let limit = exported_through
        .min(recorded_head)
        .min(oldest_unmarked.map_or(u64::MAX, |s| s.saturating_sub(1)));
    let newest = segments.keys().next_back().copied();
    segments
        .values()
        .filter(|s| s.last <= limit && Some(s.first) != newest)
        .map(|s| s.first)
        .collect()
}

/// The records after `after`, up to `limit` of them, as JSON lines, and the last one's
/// sequence; `None` when there are none (yet).
pub fn records_after(
    segments: &BTreeMap<u64, Segment>,
    after: u64,
    limit: usize,
) -> Option<(Vec<String>, u64)> {
    let mut lines = Vec::new();
    let mut last = after;
    for segment in segments.values().filter(|s| s.last > after) {
        for (line, (_, sequence)) in segment.text.lines().zip(&segment.ids) {
            if *sequence <= last {
                continue;
            }
            if *sequence != last + 1 || lines.len() >= limit {
                // A hole (a batch not read yet): stop before it, never skip it.
                return (!lines.is_empty()).then_some((lines, last));
            }
            lines.push(line.to_owned());
            last = *sequence;
        }
    }
    (!lines.is_empty()).then_some((lines, last))
}
