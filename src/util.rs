//! Small deterministic helpers shared by the pure modules.

use uuid::Uuid;

/// 64-bit FNV-1a: a stable hash (unlike `DefaultHasher`, which may change between releases),
/// good enough to shorten names, never used for security.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A deterministic UUID (version 8, custom) derived from a string, for objects that lack a
/// `metadata.uid` (only in tests or hand-built objects: the API server always sets one).
pub(crate) fn uuid_from_name(namespace: &str, name: &str) -> Uuid {
    let a = fnv1a64(format!("{namespace}/{name}").as_bytes());
    let b = fnv1a64(format!("{name}\u{0}{namespace}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn uuid_from_name_is_stable_and_distinct() {
        let a = uuid_from_name("er", "x");
        assert_eq!(a, uuid_from_name("er", "x"));
        assert_ne!(a, uuid_from_name("er", "y"));
        assert_eq!(a.get_version_num(), 8);
    }
}
