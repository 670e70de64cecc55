//! How often each member of a group builds a snapshot (pure).
//!
//! Every member applies the same entries. With one threshold for all, every
//! member of a group reached it at the same entry and built its snapshot at
//! the same moment — on a machine shared by several members (the lab) all
//! of them competed for the CPU at once, and in any deployment a write that
//! needs a quorum found most of it busy. So each member's interval is the
//! configured one plus a tenth of it per *slot*, slots 0 to 4 taken by
//! member id and turned by the group's name: the members of a group of up
//! to five build at different intervals (1.0 to 1.4 times the setting) and
//! so at different entries, meeting only at multiples of two intervals;
//! groups whose members share ids (every shard's members are 1, 2, 3) are
//! turned apart by their names.

/// Different intervals a group's members take.
const SLOTS: u64 = 5;

/// Entries between snapshots for member `node_id` of `group`, configured
/// as `after`: between `after` and 1.4 × `after`.
pub fn interval(after: u64, group: &str, node_id: u64) -> u64 {
    let turn = group.bytes().fold(0u64, |sum, b| {
        sum.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let slot = node_id.wrapping_add(turn) % SLOTS;
    after.saturating_add(after / 10 * slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn members_of_a_group_differ_and_stay_in_bounds() {
        for group in ["us-east-s1", "eu-west-s1", "ap-south-s1", "control"] {
            for members in [1u64..=3, 1..=5] {
                let intervals: BTreeSet<u64> = members
                    .clone()
                    .map(|id| interval(20_000, group, id))
                    .collect();
                assert_eq!(intervals.len(), members.count(), "{group}");
                for every in &intervals {
                    assert!((20_000..=28_000).contains(every), "{group}: {every}");
                }
            }
        }
    }

    #[test]
    fn rows() {
        let rows = [
            ("a tiny setting stays as set", 5, "g", 1, 5),
            ("never below the setting", 20_000, "", 0, 20_000),
            ("slot 1", 20_000, "", 1, 22_000),
            ("slot 4 is the largest", 20_000, "", 4, 28_000),
            ("slots wrap", 20_000, "", 5, 20_000),
            ("no overflow", u64::MAX, "", 4, u64::MAX),
        ];
        for (name, after, group, id, expected) in rows {
            assert_eq!(interval(after, group, id), expected, "{name}");
        }
    }

    #[test]
    fn same_ids_in_different_groups_are_turned_apart() {
        let us: Vec<u64> = (1..=3)
            .map(|id| interval(20_000, "us-east-s1", id))
            .collect();
        let eu: Vec<u64> = (1..=3)
            .map(|id| interval(20_000, "eu-west-s1", id))
            .collect();
        assert_ne!(us, eu, "the lab's two busiest shards");
    }
}
