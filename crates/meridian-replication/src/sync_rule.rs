//! When a sync namespace's write may be proposed, and when it may be
//! acknowledged (pure, table-tested).
//!
//! The control plane decides how many standby confirmations a write of a
//! sync namespace needs (`confirmations`, sent with every lease probe) so that
//! any standby it would promote is sure to hold every acknowledged write. The
//! primary's leader then:
//!
//! - proposes a write only while at least that many standbys can confirm
//!   (they answered recently and are not being rebuilt); otherwise the write
//!   is refused before anything is applied, naming the rule — never applied
//!   and then left waiting for a confirmation that cannot come;
//! - acknowledges it once that many standbys confirmed its sequence number.

use std::time::{Duration, Instant};

/// A standby answering within this long counts as able to confirm writes.
pub const ANSWERED_WITHIN: Duration = Duration::from_secs(2);

/// What the primary's leader knows about one standby, for the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyView {
    /// The standby's shard.
    pub shard: String,
    /// Last sequence number it confirmed.
    pub confirmed: Option<u64>,
    /// When it last answered.
    pub last_answer: Option<Instant>,
    /// Whether it is being rebuilt (a demoted primary): it cannot confirm.
    pub rebuilding: bool,
}

/// Why a sync write may not be proposed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooFewStandbys {
    /// Confirmations a write needs.
    pub needed: usize,
    /// Standbys able to confirm now.
    pub able: usize,
    /// Which standbys cannot, and why.
    pub detail: String,
}

/// Whether a write needing `needed` confirmations may be proposed at `now`.
/// `needed == 0` means the control plane has not said yet (no lease probe
/// since this node became leader): nothing may be proposed.
pub fn may_propose(
    needed: usize,
    standbys: &[StandbyView],
    now: Instant,
) -> Result<(), TooFewStandbys> {
    let mut unable = Vec::new();
    let mut able = 0;
    for standby in standbys {
        let why = if standby.rebuilding {
            Some("being rebuilt".to_string())
        } else {
            match standby.last_answer {
                None => Some("has not answered".to_string()),
                Some(at) if now.saturating_duration_since(at) > ANSWERED_WITHIN => Some(format!(
                    "last answered {} ms ago",
                    now.saturating_duration_since(at).as_millis()
                )),
                Some(_) => None,
            }
        };
        match why {
            Some(why) => unable.push(format!("{} {why}", standby.shard)),
            None => able += 1,
        }
    }
    if needed > 0 && able >= needed {
        return Ok(());
    }
    let detail = if needed == 0 {
        "the control plane has not yet said how many this shard needs".to_string()
    } else if unable.is_empty() {
        "no standby is known yet".to_string()
    } else {
        unable.join("; ")
    };
    Err(TooFewStandbys {
        needed: needed.max(1),
        able,
        detail,
    })
}

/// Whether a write at `seq` has the confirmations it needs.
pub fn acknowledged(needed: usize, standbys: &[StandbyView], seq: u64) -> bool {
    needed > 0
        && standbys
            .iter()
            .filter(|s| !s.rebuilding && s.confirmed.is_some_and(|c| c >= seq))
            .count()
            >= needed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(shard: &str, confirmed: Option<u64>, answered_ago_ms: Option<u64>) -> StandbyView {
        let now = Instant::now();
        StandbyView {
            shard: shard.into(),
            confirmed,
            last_answer: answered_ago_ms.map(|ms| now - Duration::from_millis(ms)),
            rebuilding: false,
        }
    }

    #[test]
    fn proposal_table() {
        let now = Instant::now();
        let fresh = |s: &str| view(s, Some(10), Some(100));
        let silent = |s: &str| view(s, Some(10), Some(5_000));
        let never = |s: &str| view(s, None, None);
        let rebuilding = StandbyView {
            rebuilding: true,
            ..fresh("c")
        };
        // (case, needed, standbys, may propose)
        let cases: Vec<(&str, usize, Vec<StandbyView>, bool)> = vec![
            ("one standby answering", 1, vec![fresh("a")], true),
            ("the only standby is gone", 1, vec![silent("a")], false),
            (
                "the only standby never answered",
                1,
                vec![never("a")],
                false,
            ),
            ("no standby known", 1, vec![], false),
            ("the control plane has not said", 0, vec![fresh("a")], false),
            (
                "two standbys, one gone",
                1,
                vec![fresh("a"), silent("b")],
                true,
            ),
            (
                "two standbys, both gone",
                1,
                vec![silent("a"), never("b")],
                false,
            ),
            (
                "three standbys need two, one gone",
                2,
                vec![fresh("a"), fresh("b"), silent("c")],
                true,
            ),
            (
                "three standbys need two, two gone",
                2,
                vec![fresh("a"), silent("b"), silent("c")],
                false,
            ),
            (
                "a rebuilding standby cannot confirm",
                1,
                vec![rebuilding],
                false,
            ),
        ];
        for (case, needed, standbys, expected) in cases {
            assert_eq!(
                may_propose(needed, &standbys, now).is_ok(),
                expected,
                "{case}"
            );
        }
        let refusal = may_propose(1, &[silent("eu-west-s1")], now).unwrap_err();
        assert_eq!((refusal.needed, refusal.able), (1, 0));
        assert!(
            refusal.detail.contains("eu-west-s1 last answered"),
            "{}",
            refusal.detail
        );
    }

    #[test]
    fn acknowledgement_table() {
        let standbys = [
            view("a", Some(7), Some(0)),
            view("b", Some(5), Some(0)),
            view("c", None, None),
        ];
        // (needed, seq, acknowledged)
        for (needed, seq, expected) in [
            (1, 5, true),
            (1, 7, true),
            (1, 8, false),
            (2, 5, true),
            (2, 6, false),
            (3, 1, false),
            (0, 1, false),
        ] {
            assert_eq!(
                acknowledged(needed, &standbys, seq),
                expected,
                "needed {needed} seq {seq}"
            );
        }
    }
}
