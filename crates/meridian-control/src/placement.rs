//! Placement decisions: is a policy acceptable, and which shard takes a namespace.
//! Pure functions over the control plane's state.

use crate::model::{NamespaceMode, PlacementPolicy, Region, Shard};
use crate::residency::{self, ResidencyViolation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Why a placement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PlacementError {
    /// The residency rule forbids it (FAILED_PRECONDITION).
    #[error("{0}")]
    Residency(String),
    /// The policy is inconsistent (INVALID_ARGUMENT).
    #[error("invalid placement policy: {0}")]
    InvalidPolicy(String),
    /// The mode is not implemented yet (UNIMPLEMENTED): refused rather than
    /// accepted and silently served as something else.
    #[error("{0}")]
    NotImplemented(String),
    /// No shard can take the namespace (UNAVAILABLE / FAILED_PRECONDITION).
    #[error("no shard available in region {region:?}: {reason}")]
    NoShard {
        /// The region searched.
        region: String,
        /// Why none qualified.
        reason: String,
    },
}

impl From<ResidencyViolation> for PlacementError {
    fn from(violation: ResidencyViolation) -> Self {
        PlacementError::Residency(violation.to_string())
    }
}

fn region<'a>(
    regions: &'a BTreeMap<String, Region>,
    name: &str,
) -> Result<&'a Region, ResidencyViolation> {
    regions
        .get(name)
        .ok_or_else(|| ResidencyViolation::UnknownRegion {
            region: name.to_string(),
            known: regions.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}

/// Completes and checks a requested policy for namespace `name`: fills the allowed
/// jurisdictions from the home region when none are given, then checks that the
/// mode and standbys agree and that every region the namespace would occupy obeys
/// the residency rule.
pub fn resolve_policy(
    name: &str,
    mut policy: PlacementPolicy,
    regions: &BTreeMap<String, Region>,
) -> Result<PlacementPolicy, PlacementError> {
    let home = region(regions, &policy.home_region)?;
    if policy.allowed_jurisdictions.is_empty() {
        policy.allowed_jurisdictions = home.jurisdictions.clone();
    }
    residency::check_region(name, &policy.allowed_jurisdictions, home, "home")?;
    let mut seen = BTreeSet::from([policy.home_region.clone()]);
    for standby in &policy.standby_regions {
        if !seen.insert(standby.clone()) {
            return Err(PlacementError::InvalidPolicy(format!(
                "region {standby:?} is listed twice (home and standby regions must be distinct)"
            )));
        }
        let standby_region = region(regions, standby)?;
        let role = if policy.mode == NamespaceMode::ActiveActive {
            "peer"
        } else {
            "standby"
        };
        residency::check_region(name, &policy.allowed_jurisdictions, standby_region, role)?;
    }
    match policy.mode {
        NamespaceMode::RegionLocked if !policy.standby_regions.is_empty() => Err(PlacementError::InvalidPolicy(
            "a region-locked namespace has no standby regions".into(),
        )),
        NamespaceMode::ActivePassive { .. } | NamespaceMode::ActiveActive if policy.standby_regions.is_empty() => {
            Err(PlacementError::InvalidPolicy(
                "active-passive and active-active namespaces need at least one standby (or peer) region".into(),
            ))
        }
        _ => Ok(policy),
    }
}

/// The shard of `region` that should take a new namespace: the one holding the
/// fewest namespaces (ties go to the smallest id), among shards with members.
pub fn choose_shard<'a>(
    region: &str,
    shards: &'a BTreeMap<String, Shard>,
    namespaces_per_shard: &BTreeMap<String, usize>,
) -> Result<&'a Shard, PlacementError> {
    shards
        .values()
        .filter(|shard| shard.region == region && !shard.members.is_empty())
        .min_by_key(|shard| {
            (
                namespaces_per_shard.get(&shard.id).copied().unwrap_or(0),
                shard.id.clone(),
            )
        })
        .ok_or_else(|| PlacementError::NoShard {
            region: region.to_string(),
            reason: "no shard with registered members".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ShardMember;

    fn regions() -> BTreeMap<String, Region> {
        [
            ("us-east", &["US"][..]),
            ("eu-west", &["EU"]),
            ("eu-central", &["EU"]),
            ("ap-south", &["IN"]),
        ]
        .into_iter()
        .map(|(name, tags)| {
            (
                name.to_string(),
                Region {
                    name: name.into(),
                    jurisdictions: tags.iter().map(|t| t.to_string()).collect(),
                    latitude: 0.0,
                    longitude: 0.0,
                },
            )
        })
        .collect()
    }

    fn policy(
        home: &str,
        mode: NamespaceMode,
        standbys: &[&str],
        allowed: &[&str],
    ) -> PlacementPolicy {
        PlacementPolicy {
            home_region: home.into(),
            mode,
            standby_regions: standbys.iter().map(|s| s.to_string()).collect(),
            allowed_jurisdictions: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn policies() {
        let ap = NamespaceMode::ActivePassive { sync: false };
        let locked = NamespaceMode::RegionLocked;
        let cases: Vec<(&str, PlacementPolicy, Result<(), &str>)> = vec![
            (
                "EU home, EU standby",
                policy("eu-west", ap, &["eu-central"], &["EU"]),
                Ok(()),
            ),
            (
                "active-active within its jurisdictions",
                policy(
                    "eu-west",
                    NamespaceMode::ActiveActive,
                    &["eu-central"],
                    &["EU"],
                ),
                Ok(()),
            ),
            (
                "active-active with a peer outside its jurisdictions",
                policy(
                    "eu-west",
                    NamespaceMode::ActiveActive,
                    &["us-east"],
                    &["EU"],
                ),
                Err("residency rule"),
            ),
            (
                "active-active needs a peer",
                policy("eu-west", NamespaceMode::ActiveActive, &[], &["EU"]),
                Err("at least one standby (or peer) region"),
            ),
            (
                "EU namespace homed in us-east",
                policy("us-east", locked, &[], &["EU"]),
                Err("residency rule"),
            ),
            (
                "EU namespace with a us-east standby",
                policy("eu-west", ap, &["us-east"], &["EU"]),
                Err("residency rule"),
            ),
            (
                "default jurisdictions come from home",
                policy("eu-west", ap, &["us-east"], &[]),
                Err("residency rule"),
            ),
            (
                "EU+US namespace may span both",
                policy("eu-west", ap, &["us-east"], &["EU", "US"]),
                Ok(()),
            ),
            (
                "region-locked with standby",
                policy("eu-west", locked, &["eu-central"], &[]),
                Err("region-locked"),
            ),
            (
                "active-passive without standby",
                policy("eu-west", ap, &[], &[]),
                Err("at least one standby"),
            ),
            (
                "duplicate region",
                policy("eu-west", ap, &["eu-west"], &[]),
                Err("listed twice"),
            ),
            (
                "unknown region",
                policy("mars-1", locked, &[], &[]),
                Err("unknown region"),
            ),
        ];
        for (name, requested, expected) in cases {
            let result = resolve_policy("ns", requested, &regions());
            match (expected, result) {
                (Ok(()), Ok(resolved)) => {
                    assert!(!resolved.allowed_jurisdictions.is_empty(), "{name}")
                }
                (Err(needle), Err(err)) => {
                    assert!(err.to_string().contains(needle), "{name}: {err}")
                }
                (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn least_loaded_shard_wins() {
        let member = BTreeMap::from([(
            1,
            ShardMember {
                node_id: 1,
                address: "a".into(),
            },
        )]);
        let shards: BTreeMap<String, Shard> = [
            ("eu-west-s1", "eu-west"),
            ("eu-west-s2", "eu-west"),
            ("us-east-s1", "us-east"),
        ]
        .into_iter()
        .map(|(id, region)| {
            (
                id.to_string(),
                Shard {
                    id: id.into(),
                    region: region.into(),
                    members: member.clone(),
                },
            )
        })
        .collect();
        let load = BTreeMap::from([("eu-west-s1".to_string(), 3), ("eu-west-s2".to_string(), 1)]);
        assert_eq!(
            choose_shard("eu-west", &shards, &load).unwrap().id,
            "eu-west-s2"
        );
        assert_eq!(
            choose_shard("eu-west", &shards, &BTreeMap::new())
                .unwrap()
                .id,
            "eu-west-s1"
        );
        assert!(choose_shard("ap-south", &shards, &load).is_err());
    }
}
