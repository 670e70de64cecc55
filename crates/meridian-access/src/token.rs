//! API tokens for tools that cannot present a certificate: `mrdt_ID_SECRET`,
//! sent as `Authorization: Bearer mrdt_...`. The id is public (listings,
//! revocation); only the SHA-256 of the 256-bit random secret is stored and
//! pushed, so the policy's copies on every server cannot be replayed as tokens.

use crate::AccessError;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every token starts with this.
pub const PREFIX: &str = "mrdt_";

/// A token as presented: its id and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Presented {
    /// The public id.
    pub id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Presented")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A new token: what to hand the user once, and what to store.
pub struct Minted {
    /// The whole token, shown once.
    pub token: String,
    /// Its id.
    pub id: String,
    /// SHA-256 of its secret.
    pub secret_sha256: [u8; 32],
}

/// Makes a token from fresh randomness.
pub fn mint() -> Minted {
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    Minted {
        token: format!("{PREFIX}{id}_{}", hex::encode(secret)),
        secret_sha256: Sha256::digest(secret).into(),
        id,
    }
}

/// Reads a presented token.
pub fn parse(token: &str) -> Result<Presented, AccessError> {
    let malformed = || AccessError::Invalid("malformed API token (expected mrdt_ID_SECRET)".into());
    let rest = token.strip_prefix(PREFIX).ok_or_else(malformed)?;
    let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
    if id.len() != 16 || secret.len() != 64 {
        return Err(malformed());
    }
    hex::decode(id).map_err(|_| malformed())?;
    let secret = hex::decode(secret).map_err(|_| malformed())?;
    Ok(Presented {
        id: id.to_string(),
        secret,
    })
}

impl Presented {
    /// Whether its secret hashes to `stored` (compared in constant time).
    pub fn matches(&self, stored: &[u8; 32]) -> bool {
        let digest: [u8; 32] = Sha256::digest(&self.secret).into();
        digest
            .iter()
            .zip(stored)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_and_match_only_their_hash() {
        let minted = mint();
        let presented = parse(&minted.token).unwrap();
        assert_eq!(presented.id, minted.id);
        assert!(presented.matches(&minted.secret_sha256));
        assert!(!presented.matches(&[0; 32]));
        let other = mint();
        assert!(!parse(&other.token).unwrap().matches(&minted.secret_sha256));
        assert!(!format!("{presented:?}").contains(&minted.token[22..]));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = mint().token;
        for bad in [
            "",
            "mrdt_",
            "bearer",
            &good[1..],
            &good[..good.len() - 1],
            &good.replace('_', "-"),
            &format!("{}zz", &good[..good.len() - 2]),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
