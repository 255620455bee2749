//! Small deterministic helpers shared by the pure modules.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A stable short hash of `data` (16 hex digits of its SHA-256), used to keep
/// generated names unique when they must be shortened.
pub(crate) fn short_hash(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    format!("{:016x}", u64::from_be_bytes(first))
}

/// A deterministic UUID (version 5) for an object of `kind` named `name`, for
/// objects that lack a `metadata.uid` (only hand-built ones: the API server
/// always sets one).
pub(crate) fn uuid_from_name(kind: &str, name: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("kubepam.io/{kind}/{name}").as_bytes(),
    )
}

/// A time as people read it: RFC 3339 in whole seconds, UTC (`2026-12-01T09:00:00Z`).
/// Status keeps milliseconds; messages and terminals do not need them.
pub fn time_for_people(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hash_is_stable_hex() {
        let h = short_hash(b"kubepam");
        assert_eq!(h.len(), 16);
        assert_eq!(h, short_hash(b"kubepam"));
        assert_ne!(h, short_hash(b"kubepam "));
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn uuid_from_name_is_stable_and_distinct() {
        let a = uuid_from_name("er", "x");
        assert_eq!(a, uuid_from_name("er", "x"));
        assert_ne!(a, uuid_from_name("er", "y"));
        assert_eq!(a.get_version_num(), 5);
    }
}
