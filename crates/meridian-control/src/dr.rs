//! Disaster-recovery rules the control plane decides (pure, table-tested):
//! which backup locations may exist.

use crate::command::ControlRejection;
use crate::model::{BackupLocation, Region};
use std::collections::BTreeMap;

/// `location` completed (jurisdictions default to its region's) and
/// checked: a known region; a name of 1-64 characters from `a-z`, `0-9`,
/// `-`, `_`; only jurisdictions its region is tagged with (a location in
/// us-east cannot claim to be in the EU); and no different location under
/// the same name (locations are never changed in place — backups name them).
pub fn check_location(
    mut location: BackupLocation,
    regions: &BTreeMap<String, Region>,
    existing: &BTreeMap<String, BackupLocation>,
) -> Result<BackupLocation, ControlRejection> {
    let refuse = |reason: String| ControlRejection::Location {
        name: location.name.clone(),
        reason,
    };
    let name_ok = !location.name.is_empty()
        && location.name.len() <= 64
        && location
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(refuse(
            "a name is 1-64 characters from a-z, 0-9, '-', '_'".into(),
        ));
    }
    let Some(region) = regions.get(&location.region) else {
        return Err(refuse(format!(
            "unknown region {:?}; regions: {}",
            location.region,
            regions.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    if location.jurisdictions.is_empty() {
        location.jurisdictions = region.jurisdictions.clone();
    }
    let foreign: Vec<&String> = location
        .jurisdictions
        .difference(&region.jurisdictions)
        .collect();
    if !foreign.is_empty() {
        return Err(refuse(format!(
            "region {} is tagged {:?}; a location there cannot claim {:?}",
            region.name, region.jurisdictions, foreign
        )));
    }
    if let Some(current) = existing.get(&location.name)
        && *current != location
    {
        return Err(refuse(format!(
            "it exists as {} in region {} ({:?}); locations are not changed in place",
            current.url, current.region, current.jurisdictions
        )));
    }
    Ok(location)
}

/// Residency, failing closed: a backup of `namespace` (allowed in
/// `allowed`) may go to `location` only if the location's jurisdictions
/// share one with it — never to a default or a "nearest" place instead.
pub fn check_backup_target(
    namespace: &str,
    allowed: &std::collections::BTreeSet<String>,
    location: &BackupLocation,
) -> Result<(), String> {
    if meridian_access::residency::may_hold(allowed, &location.jurisdictions) {
        Ok(())
    } else {
        Err(format!(
            "residency: namespace {namespace:?} may only be held in jurisdictions {allowed:?}; location {} (region {}) holds {:?}, so no backup goes there",
            location.name, location.region, location.jurisdictions
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> BTreeMap<String, Region> {
        [("eu-west", &["EU"][..]), ("us-east", &["US", "US-VA"][..])]
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

    fn location(name: &str, region: &str, tags: &[&str]) -> BackupLocation {
        BackupLocation {
            name: name.into(),
            url: format!("file:///backups/{name}"),
            region: region.into(),
            jurisdictions: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn location_rules() {
        let existing: BTreeMap<String, BackupLocation> = [(
            "eu-vault".to_string(),
            location("eu-vault", "eu-west", &["EU"]),
        )]
        .into();
        // (case, location, refusal containing, or None when accepted)
        let cases = [
            (
                "defaults to the region's tags",
                location("us-vault", "us-east", &[]),
                None,
            ),
            (
                "a subset of the region's tags",
                location("va", "us-east", &["US-VA"]),
                None,
            ),
            (
                "the same one again",
                location("eu-vault", "eu-west", &["EU"]),
                None,
            ),
            (
                "a tag its region lacks",
                location("fake-eu", "us-east", &["EU"]),
                Some("cannot claim"),
            ),
            (
                "an unknown region",
                location("x", "mars", &[]),
                Some("unknown region"),
            ),
            (
                "a bad name",
                location("Bad Name", "eu-west", &[]),
                Some("1-64 characters"),
            ),
            (
                "a different one under a used name",
                location("eu-vault", "us-east", &["US"]),
                Some("not changed in place"),
            ),
        ];
        for (case, candidate, refusal) in cases {
            match (check_location(candidate, &regions(), &existing), refusal) {
                (Ok(_), None) => {}
                (Err(err), Some(why)) => assert!(err.to_string().contains(why), "{case}: {err}"),
                (other, _) => panic!("{case}: {other:?}"),
            }
        }
        let eu: std::collections::BTreeSet<String> = ["EU".to_string()].into();
        assert!(check_backup_target("gdpr", &eu, &location("v", "eu-west", &["EU"])).is_ok());
        let refused =
            check_backup_target("gdpr", &eu, &location("v", "us-east", &["US"])).unwrap_err();
        assert!(
            refused.contains("residency") && refused.contains("\"gdpr\""),
            "{refused}"
        );
        let completed =
            check_location(location("u", "us-east", &[]), &regions(), &existing).unwrap();
        assert_eq!(completed.jurisdictions, regions()["us-east"].jurisdictions);
    }
}
