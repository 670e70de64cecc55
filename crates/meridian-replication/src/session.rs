//! Session tokens: what a client's last answer reflected, so a later read on
//! any copy is served only once that copy holds at least as much
//! (read-your-writes and monotonic reads across gateways and regions).
//!
//! A token maps each *history* to a position in it: for an active-active
//! namespace, each region's own change log (the region name); for an
//! active-passive one, the primary's log (the empty name). A copy covers a
//! token when, for every history the token names, it has applied at least
//! that position. Tokens from several answers combine by taking the larger
//! position of each history.
//!
//! Wire form: one format byte (1), then postcard of the map. Opaque to
//! clients; a token that does not decode is refused as INVALID_ARGUMENT.

use std::collections::BTreeMap;

/// Current token format.
pub const TOKEN_FORMAT: u8 = 1;
/// The history of an active-passive namespace (its primary's log).
pub const PRIMARY_HISTORY: &str = "";
/// Longest token accepted (histories are regions: a few dozen at most).
pub const MAX_TOKEN_BYTES: usize = 4_096;

/// Positions per history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionToken(pub BTreeMap<String, u64>);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("session token of {0} bytes is longer than the {MAX_TOKEN_BYTES} allowed")]
    TooLong(usize),
    /// Not a token of a known format.
    #[error("session token does not decode: {0}")]
    Malformed(String),
}

impl SessionToken {
    /// Decodes a token; an empty one is the empty token (no constraint).
    pub fn decode(raw: &[u8]) -> Result<SessionToken, TokenError> {
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong(raw.len()));
        }
        match raw.split_first() {
            None => Ok(SessionToken::default()),
            Some((&TOKEN_FORMAT, body)) => postcard::from_bytes(body)
                .map(SessionToken)
                .map_err(|e| TokenError::Malformed(e.to_string())),
            Some((other, _)) => Err(TokenError::Malformed(format!(
                "unknown format {other} (this build reads {TOKEN_FORMAT})"
            ))),
        }
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TOKEN_FORMAT];
        // A map of strings and integers always encodes.
        out.extend(postcard::to_stdvec(&self.0).unwrap_or_default());
        out
    }

    /// Takes in what `other` saw.
    pub fn join(&mut self, other: &SessionToken) {
        for (history, position) in &other.0 {
            let mine = self.0.entry(history.clone()).or_default();
            *mine = (*mine).max(*position);
        }
    }

    /// The histories where a copy at `positions` is behind the token, with
    /// (needed, held); empty when it covers the token.
    pub fn missing(&self, positions: &BTreeMap<String, u64>) -> Vec<(String, u64, u64)> {
        self.0
            .iter()
            .filter_map(|(history, needed)| {
                let held = positions.get(history).copied().unwrap_or(0);
                (held < *needed).then(|| (history.clone(), *needed, held))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(pairs: &[(&str, u64)]) -> SessionToken {
        SessionToken(pairs.iter().map(|(h, p)| (h.to_string(), *p)).collect())
    }

    #[test]
    fn a_copy_covers_a_token_only_when_it_holds_every_history_named() {
        let t = token(&[("eu-west", 7), ("us-east", 3)]);
        let at = |pairs: &[(&str, u64)]| token(pairs).0;
        // (copy's positions, histories it is behind in)
        type Case<'a> = (&'a [(&'a str, u64)], &'a [&'a str]);
        let cases: [Case; 4] = [
            (&[("eu-west", 7), ("us-east", 3)], &[]),
            (&[("eu-west", 9), ("us-east", 5), ("ap-south", 1)], &[]),
            (&[("eu-west", 6), ("us-east", 3)], &["eu-west"]),
            (&[], &["eu-west", "us-east"]),
        ];
        for (positions, behind) in cases {
            let missing: Vec<String> = t.missing(&at(positions)).into_iter().map(|m| m.0).collect();
            assert_eq!(missing, behind, "{positions:?}");
        }
        assert!(SessionToken::default().missing(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn tokens_join_and_round_trip_and_bad_ones_are_refused() {
        let mut a = token(&[("eu-west", 7)]);
        a.join(&token(&[("eu-west", 2), ("us-east", 4)]));
        assert_eq!(a, token(&[("eu-west", 7), ("us-east", 4)]));
        assert_eq!(SessionToken::decode(&a.encode()).unwrap(), a);
        assert_eq!(SessionToken::decode(&[]).unwrap(), SessionToken::default());
        let golden = [1u8, 1, 7, b'e', b'u', b'-', b'w', b'e', b's', b't', 7];
        assert_eq!(
            token(&[("eu-west", 7)]).encode(),
            golden,
            "token format changed"
        );
        assert!(matches!(
            SessionToken::decode(&[9, 0]),
            Err(TokenError::Malformed(m)) if m.contains("unknown format 9")
        ));
        assert!(matches!(
            SessionToken::decode(&vec![1; MAX_TOKEN_BYTES + 1]),
            Err(TokenError::TooLong(_))
        ));
    }
}
