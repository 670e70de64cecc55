//! How namespaced keys and versioned values are laid out in the storage engine.
//!
//! A stored key is `namespace 0x00 user-key`. Namespace names never contain 0x00
//! (see [`crate::limits::validate_namespace_name`]), so every namespace is one
//! contiguous, prefix-addressable range and keys sort by user key inside it.
//! A stored value is `version (u64 big-endian) ++ user-value`.

/// Separator between namespace and user key; forbidden in namespace names.
const SEPARATOR: u8 = 0;

/// Storage key of `key` in `namespace`.
pub fn data_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + 1 + key.len());
    out.extend_from_slice(namespace.as_bytes());
    out.push(SEPARATOR);
    out.extend_from_slice(key);
    out
}

/// Prefix shared by every storage key of `namespace`.
pub fn namespace_prefix(namespace: &str) -> Vec<u8> {
    data_key(namespace, &[])
}

/// The user key inside a storage key of `namespace`.
pub fn user_key<'a>(namespace: &str, stored: &'a [u8]) -> &'a [u8] {
    stored.get(namespace.len() + 1..).unwrap_or_default()
}

/// Encodes a versioned value.
pub fn encode_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits a stored value into version and user value; `None` if it is too short to
/// have been written by [`encode_value`].
pub fn decode_value(stored: &[u8]) -> Option<(u64, &[u8])> {
    let (version, value) = stored.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*version), value))
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when
/// no such key exists (the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_do_not_interleave() {
        // "a" < "a\0..." < "ab": a namespace that is a prefix of another never mixes
        // its keys with the other's.
        let a_key = data_key("a", b"\xff\xff");
        let ab_key = data_key("ab", b"");
        assert!(a_key < ab_key);
        assert_eq!(user_key("a", &a_key), b"\xff\xff");
    }

    #[test]
    fn values_round_trip() {
        let stored = encode_value(42, b"hello");
        assert_eq!(decode_value(&stored), Some((42, &b"hello"[..])));
        assert_eq!(decode_value(b"short"), None);
    }

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
