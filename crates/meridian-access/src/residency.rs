//! The residency rule, in one place for every process that moves a
//! namespace's bytes: the control plane placing copies and backups, and a
//! shard re-checking where it ships changes.

use std::collections::BTreeSet;

/// Whether a place tagged with `place_jurisdictions` (a region's, a backup
/// location's) may hold the bytes of a namespace allowed in `allowed`: it must
/// share at least one jurisdiction with it. A place with no jurisdictions may
/// hold nothing.
pub fn may_hold<'a>(
    allowed: &BTreeSet<String>,
    place_jurisdictions: impl IntoIterator<Item = &'a String>,
) -> bool {
    place_jurisdictions
        .into_iter()
        .any(|jurisdiction| allowed.contains(jurisdiction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residency_rule() {
        let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        // (case, allowed, place's jurisdictions, may hold)
        let cases = [
            ("same jurisdiction", set(&["EU"]), set(&["EU"]), true),
            (
                "one of several shared",
                set(&["EU", "UK"]),
                set(&["UK"]),
                true,
            ),
            (
                "a sub-jurisdiction tag too",
                set(&["US"]),
                set(&["US", "US-CA"]),
                true,
            ),
            ("no overlap", set(&["EU"]), set(&["US"]), false),
            ("untagged place", set(&["EU"]), set(&[]), false),
            ("nothing allowed", set(&[]), set(&["EU"]), false),
        ];
        for (case, allowed, place, expected) in cases {
            assert_eq!(may_hold(&allowed, &place), expected, "{case}");
        }
    }
}
