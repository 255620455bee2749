//! Sealing records onto the chain, and verifying a chain.
//!
//! A record is signed over its canonical JSON (keys sorted, no whitespace) without its
//! signature; its digest is SHA-256 over its canonical JSON with the signature, and the next
//! record carries that digest as `kubepamprev`. Changing, dropping, reordering or inserting a
//! record breaks a signature, a link or the numbering; cutting off the tail is seen against
//! the head kept in the cluster.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::record::AuditRecord;

/// The signing key (from a Secret in kubepam's namespace).
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// A key of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// A short fingerprint of the key, safe to show and to record: the chain notices when its
    /// key is replaced.
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"kubepam audit key id\0");
        hash.update(&self.0);
        hex(&hash.finalize())[..16].to_owned()
    }

    fn sign(&self, bytes: &[u8]) -> String {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(bytes);
        hex(&mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in a log line.
        f.write_str("Key(..)")
    }
}

/// The end of the chain: the last record's number and digest (kept in the control's status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    /// The last record's `kubepamsequence`; 0 before the first.
    pub sequence: u64,
    /// The last record's digest; empty before the first.
    pub digest: String,
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The signature does not match the record (changed, or signed with another key).
    #[error("its signature does not match its content (changed, or signed with another key)")]
    BadSignature,
    /// The record does not name the digest of the one before it.
    #[error("it does not follow the record before it (kubepamprev is not that record's digest)")]
    BrokenLink,
    /// A number is missing, or comes out of order.
    #[error("sequence {found} where {expected} was due (a record is missing or moved)")]
    Gap {
        /// The number due.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// A record with this number came before, with other content: two chains, or a record
    /// forged with the key.
    #[error("another record with sequence {0} came before it (the chain forked)")]
    Forked(u64),
}

/// The first record of a chain that fails, or the chain's end short of the head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Record `index` (0-based in the input), with `id`, fails.
    #[error("record {} (id {id}, sequence {sequence}): {failure}", index + 1)]
    Record {
        /// Its place in the input.
        index: usize,
        /// Its `id`.
        id: String,
        /// Its `kubepamsequence`.
        sequence: u64,
        /// Why.
        failure: Failure,
    },
    /// The chain ends before the head recorded in the cluster: its tail is missing.
    #[error(
        "the export ends at sequence {ends} but the cluster's chain reaches {head}: records \
         after {ends} are missing"
    )]
    ShortOfHead {
        /// The last sequence in the input.
        ends: u64,
        /// The head's sequence.
        head: u64,
    },
    /// The chain reaches the head's sequence with another digest: it forked.
    #[error("the export's record {sequence} is not the one the cluster's chain ends with")]
    NotTheHead {
        /// The head's sequence.
        sequence: u64,
    },
}

/// Seal `record` onto the chain that ends at `head`: number it, link it and sign it; `head`
/// moves to it.
pub fn seal(mut record: AuditRecord, head: &mut ChainHead, key: &Key) -> AuditRecord {
    record.kubepamsequence = head.sequence + 1;
    record.kubepamprev.clone_from(&head.digest);
    record.kubepamsignature = key.sign(&signed_bytes(&record));
    head.sequence = record.kubepamsequence;
    head.digest = digest(&record);
    record
}

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Where the export ends.
    pub end: ChainHead,
    /// Records verified (each sequence once).
    pub records: usize,
    /// Exact copies of records already read (delivery is at least once), skipped.
    pub redelivered: usize,
}

/// Verify `records`, which continue the chain after `from` (the default for an export from
/// the first record), and, when `head` is given, reach it exactly. An exact copy of a record
/// already read is skipped (a sink may be sent a record again after a crash); anything else
/// out of its place fails.
pub fn verify(
    records: &[AuditRecord],
    key: &Key,
    from: &ChainHead,
    head: Option<&ChainHead>,
) -> Result<Verified, VerifyError> {
    let mut at = from.clone();
    let mut seen: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let mut redelivered = 0;
    for (index, record) in records.iter().enumerate() {
        let fail = |failure| VerifyError::Record {
            index,
            id: record.id.clone(),
            sequence: record.kubepamsequence,
            failure,
        };
        if key.sign(&signed_bytes(record)) != record.kubepamsignature {
            return Err(fail(Failure::BadSignature));
        }
        let sequence = record.kubepamsequence;
        if sequence <= at.sequence {
            match seen.get(&sequence) {
                Some(known) if *known == digest(record) => {
                    redelivered += 1;
                    continue;
                }
                Some(_) => return Err(fail(Failure::Forked(sequence))),
                None => {}
            }
        }
        if sequence != at.sequence + 1 {
            return Err(fail(Failure::Gap {
                expected: at.sequence + 1,
                found: sequence,
            }));
        }
        if record.kubepamprev != at.digest {
            return Err(fail(Failure::BrokenLink));
        }
        at = ChainHead {
            sequence,
            digest: digest(record),
        };
        seen.insert(sequence, at.digest.clone());
    }
    match head {
        Some(head) if at.sequence < head.sequence => Err(VerifyError::ShortOfHead {
            ends: at.sequence,
            head: head.sequence,
        }),
        // Past the head or at it, the record at the head's place must be the head.
        Some(head)
            if head.sequence > from.sequence && seen.get(&head.sequence) != Some(&head.digest) =>
        {
            Err(VerifyError::NotTheHead {
                sequence: head.sequence,
            })
        }
        _ => Ok(Verified {
            records: seen.len(),
            end: at,
            redelivered,
        }),
    }
}

/// The digest a following record names: SHA-256 over the canonical record, signature
/// included.
pub fn digest(record: &AuditRecord) -> String {
    let value = serde_json::to_value(record).unwrap_or(Value::Null);
    hex(&Sha256::digest(canonical(&value).as_bytes()))
}

/// What is signed: the canonical record without its signature.
fn signed_bytes(record: &AuditRecord) -> Vec<u8> {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.remove("kubepamsignature");
    }
    canonical(&value).into_bytes()
}

/// JSON with object keys sorted and no whitespace: the same record always gives the same
/// bytes, whatever order a serializer or a log shipper wrote its keys in.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        canonical(&fields[k.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
