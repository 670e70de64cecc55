//! The rule for namespace names, shared by every process that checks one
//! (shards store them in keys and file names; the control plane refuses a
//! bad one before a job starts).

/// Longest namespace name.
pub const MAX_NAMESPACE_NAME: usize = 63;

/// Whether `name` is a namespace name: 1..=63 characters of `[a-z0-9._-]`,
/// starting with a letter or digit. Keeping names to this set keeps them
/// safe in storage keys, file names, metric labels and URLs.
pub fn is_namespace_name(name: &str) -> bool {
    let ok_byte = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    name.len() <= MAX_NAMESPACE_NAME
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(ok_byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        let long = "a".repeat(MAX_NAMESPACE_NAME);
        let too_long = "a".repeat(MAX_NAMESPACE_NAME + 1);
        for (name, ok) in [
            ("orders", true),
            ("eu.orders-2_x", true),
            ("0rders", true),
            (long.as_str(), true),
            ("", false),
            ("-orders", false),
            (".orders", false),
            ("Orders", false),
            ("or ders", false),
            ("orders/1", false),
            (too_long.as_str(), false),
        ] {
            assert_eq!(is_namespace_name(name), ok, "{name:?}");
        }
    }
}
