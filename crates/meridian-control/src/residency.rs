//! The residency rule: a namespace's data may only be stored in regions that
//! belong to one of its allowed jurisdictions.
//!
//! Every placement, standby, migration target, failover target, restore target and
//! snapshot location goes through [`check_region`]; a refusal names the rule, the
//! namespace, the region and both sets of jurisdictions.

use crate::model::Region;
use std::collections::BTreeSet;

/// A placement the residency rule forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResidencyViolation {
    /// The region is in none of the namespace's allowed jurisdictions.
    #[error(
        "residency rule violated: namespace {namespace:?} may only be stored in jurisdictions {allowed:?}, but region {region:?} ({role}) is in {region_jurisdictions:?}"
    )]
    OutsideJurisdiction {
        /// The namespace.
        namespace: String,
        /// The refused region.
        region: String,
        /// What the region would have been: `home`, `standby`, ...
        role: String,
        /// The region's jurisdictions.
        region_jurisdictions: BTreeSet<String>,
        /// The namespace's allowed jurisdictions.
        allowed: BTreeSet<String>,
    },
    /// The region is not known to the control plane.
    #[error("unknown region {region:?}; known regions: {known}")]
    UnknownRegion {
        /// The unknown name.
        region: String,
        /// Regions that exist.
        known: String,
    },
}

/// Checks that `region` may hold data of `namespace`, whose allowed jurisdictions
/// are `allowed`, in the given `role`.
pub fn check_region(
    namespace: &str,
    allowed: &BTreeSet<String>,
    region: &Region,
    role: &str,
) -> Result<(), ResidencyViolation> {
    if meridian_access::residency::may_hold(allowed, &region.jurisdictions) {
        Ok(())
    } else {
        Err(ResidencyViolation::OutsideJurisdiction {
            namespace: namespace.to_string(),
            region: region.name.clone(),
            role: role.to_string(),
            region_jurisdictions: region.jurisdictions.clone(),
            allowed: allowed.clone(),
        })
    }
}

/// Where a namespace's bytes are or were ([`report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Residency {
    /// Its allowed jurisdictions.
    pub allowed: BTreeSet<String>,
    /// Every shard that holds or held a copy.
    pub copies: Vec<CopyPlace>,
}

/// One shard that holds or held a namespace's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlace {
    /// The shard.
    pub shard: String,
    /// Its region.
    pub region: String,
    /// The region's jurisdictions.
    pub region_jurisdictions: BTreeSet<String>,
    /// `primary`, `standby`, `former` (a failover moved the primary away;
    /// the copy stays as a standby or holds lost writes), or `erasing` /
    /// `erased` (a migration's copy handed to deletion / confirmed gone).
    pub role: &'static str,
    /// Whether the namespace's jurisdictions allow the region.
    pub allowed: bool,
}

/// Every shard that holds or ever held `namespace`'s bytes, from its
/// placement and its failover history (a namespace's shards change only by
/// failover): `None` if there is no such namespace.
pub fn report(state: &crate::state::ControlState, namespace: &str) -> Option<Residency> {
    let ns = state.namespaces.get(namespace)?;
    let mut places: Vec<(String, &'static str)> = vec![(ns.shard.clone(), "primary")];
    places.extend(ns.standbys.iter().map(|s| (s.shard.clone(), "standby")));
    for failover in state
        .failovers
        .values()
        .filter(|f| f.namespace == namespace)
    {
        for shard in [&failover.from_shard, &failover.to_shard] {
            if !places.iter().any(|(s, _)| s == shard) {
                places.push((shard.clone(), "former"));
            }
        }
    }
    // Copies a migration erased (or is erasing) left; one it holds again
    // keeps its current role.
    for erasure in state.erasures.get(namespace).into_iter().flatten() {
        let role = if erasure.erased_at_ms > 0 {
            "erased"
        } else {
            "erasing"
        };
        match places.iter_mut().find(|(s, _)| *s == erasure.shard) {
            Some((_, current)) if *current == "former" => *current = role,
            Some(_) => {}
            None => places.push((erasure.shard.clone(), role)),
        }
    }
    let copies = places
        .into_iter()
        .map(|(shard, role)| {
            let region = state
                .shards
                .get(&shard)
                .map(|s| s.region.clone())
                .unwrap_or_default();
            let region_jurisdictions = state
                .regions
                .get(&region)
                .map(|r| r.jurisdictions.clone())
                .unwrap_or_default();
            let allowed = region_jurisdictions
                .iter()
                .any(|j| ns.policy.allowed_jurisdictions.contains(j));
            CopyPlace {
                shard,
                region,
                region_jurisdictions,
                role,
                allowed,
            }
        })
        .collect();
    Some(Residency {
        allowed: ns.policy.allowed_jurisdictions.clone(),
        copies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str, tags: &[&str]) -> Region {
        Region {
            name: name.into(),
            jurisdictions: tags.iter().map(|t| t.to_string()).collect(),
            latitude: 0.0,
            longitude: 0.0,
        }
    }

    fn set(tags: &[&str]) -> BTreeSet<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn table_of_cases() {
        let cases = [
            (
                "EU namespace in EU region",
                &["EU"][..],
                region("eu-west", &["EU"]),
                true,
            ),
            (
                "EU namespace in US region",
                &["EU"][..],
                region("us-east", &["US"]),
                false,
            ),
            (
                "US-CA namespace in a region that is US and US-CA",
                &["US-CA"][..],
                region("us-west", &["US", "US-CA"]),
                true,
            ),
            (
                "US-CA namespace in a plain US region",
                &["US-CA"][..],
                region("us-east", &["US"]),
                false,
            ),
            (
                "US namespace in a US-CA region (also US)",
                &["US"][..],
                region("us-west", &["US", "US-CA"]),
                true,
            ),
            (
                "EU or BR namespace in BR",
                &["EU", "BR"][..],
                region("sa-east", &["BR"]),
                true,
            ),
            (
                "region without jurisdictions",
                &["EU"][..],
                region("nowhere", &[]),
                false,
            ),
        ];
        for (name, allowed, region, ok) in cases {
            let result = check_region("ns", &set(allowed), &region, "home");
            assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
        }
    }

    #[test]
    fn refusal_names_rule_region_and_jurisdictions() {
        let err = check_region(
            "gdpr",
            &set(&["EU"]),
            &region("us-east", &["US"]),
            "standby",
        )
        .unwrap_err();
        let message = err.to_string();
        for needle in [
            "residency rule",
            "\"gdpr\"",
            "\"us-east\"",
            "standby",
            "\"EU\"",
            "\"US\"",
        ] {
            assert!(message.contains(needle), "{needle} in {message}");
        }
    }
}
