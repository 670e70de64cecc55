//! What differs between the replication modes, one implementation each
//! (pure, table-tested): which copies a shard ships a namespace to, whose
//! writes those are, the role the namespace must have on the shipping
//! shard, and which of a receiver's positions is the durable cursor.
//!
//! - [`ActivePassive`]: the primary's shard ships its whole history to every
//!   standby; a standby applies it in order (its change position is the
//!   cursor).
//! - [`ActiveActive`]: every peer ships the writes made in its own region to
//!   every other peer; a peer merges them (its position in that region's log
//!   is the cursor).
//!
//! The shipper, applier and cursor are shared; they ask the mode.

use crate::replica::Role;
use meridian_client::pb;

/// One replication mode.
pub trait Mode: Send + Sync {
    /// The role a namespace has on a shard that ships it.
    fn shipping_role(&self) -> Role;
    /// The copies `shard` (in `region`) ships `route`'s namespace to, and
    /// whose writes they are (the origin region; empty: the primary's whole
    /// history). `None` when `shard` ships nothing of it.
    fn receivers(
        &self,
        route: &pb::Route,
        shard: &str,
        region: &str,
    ) -> Option<(Vec<pb::StandbyRoute>, String)>;
}

/// One primary, standbys that apply its history in order.
#[derive(Debug, Clone, Copy)]
pub struct ActivePassive;

/// Every region writes; peers merge each other's writes.
#[derive(Debug, Clone, Copy)]
pub struct ActiveActive;

impl Mode for ActivePassive {
    fn shipping_role(&self) -> Role {
        Role::Primary
    }

    fn receivers(
        &self,
        route: &pb::Route,
        shard: &str,
        _region: &str,
    ) -> Option<(Vec<pb::StandbyRoute>, String)> {
        (route.shard == shard && !route.standbys.is_empty())
            .then(|| (route.standbys.clone(), String::new()))
    }
}

impl ActiveActive {
    /// Why a backup of an active-active namespace is refused (by the control
    /// plane and by a peer's shard alike): a peer's copy holds typed key
    /// states and logs only its own region's writes, so a full backup of one
    /// peer misses what it has not merged yet, an incremental one misses
    /// every other region's writes, and a restore would turn counters and
    /// sets into opaque values. Refused until backups of the merged state
    /// and restores into an active-active set are built.
    pub fn backup_refusal(namespace: &str) -> String {
        format!(
            "namespace {namespace:?} is active-active: backups of active-active namespaces are not supported yet (a backup of one peer would miss what it has not merged, an incremental one every other region's writes, and a restore would lose the key types); refused rather than taken"
        )
    }
}

impl Mode for ActiveActive {
    fn shipping_role(&self) -> Role {
        Role::Peer
    }

    fn receivers(
        &self,
        route: &pb::Route,
        shard: &str,
        region: &str,
    ) -> Option<(Vec<pb::StandbyRoute>, String)> {
        let home = pb::StandbyRoute {
            region: route.region.clone(),
            shard: route.shard.clone(),
            jurisdictions: route.home_jurisdictions.clone(),
        };
        let copies: Vec<pb::StandbyRoute> = std::iter::once(home)
            .chain(route.standbys.iter().cloned())
            .collect();
        if !copies.iter().any(|c| c.shard == shard) {
            return None;
        }
        let others: Vec<pb::StandbyRoute> =
            copies.into_iter().filter(|c| c.shard != shard).collect();
        (!others.is_empty()).then(|| (others, region.to_string()))
    }
}

/// The mode a route is in.
pub fn of(route: &pb::Route) -> &'static dyn Mode {
    if route.active_active {
        &ActiveActive
    } else {
        &ActivePassive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(active_active: bool) -> pb::Route {
        let standby = |region: &str| pb::StandbyRoute {
            region: region.into(),
            shard: format!("{region}-s1"),
            jurisdictions: vec!["EU".into()],
        };
        pb::Route {
            namespace: "carts".into(),
            shard: "us-east-s1".into(),
            region: "us-east".into(),
            standbys: vec![standby("eu-west"), standby("eu-central")],
            active_active,
            home_jurisdictions: vec!["US".into()],
            ..Default::default()
        }
    }

    #[test]
    fn who_ships_what_to_whom() {
        // (active-active, this shard, its region, receivers, origin)
        type Case<'a> = (bool, &'a str, &'a str, Option<(&'a [&'a str], &'a str)>);
        let cases: [Case; 6] = [
            (
                false,
                "us-east-s1",
                "us-east",
                Some((&["eu-west-s1", "eu-central-s1"], "")),
            ),
            (false, "eu-west-s1", "eu-west", None),
            (false, "ap-south-s1", "ap-south", None),
            (
                true,
                "us-east-s1",
                "us-east",
                Some((&["eu-west-s1", "eu-central-s1"], "us-east")),
            ),
            (
                true,
                "eu-west-s1",
                "eu-west",
                Some((&["us-east-s1", "eu-central-s1"], "eu-west")),
            ),
            (true, "ap-south-s1", "ap-south", None),
        ];
        for (active_active, shard, region, expected) in cases {
            let route = route(active_active);
            let got = of(&route).receivers(&route, shard, region);
            let got = got.as_ref().map(|(receivers, origin)| {
                (
                    receivers
                        .iter()
                        .map(|r| r.shard.as_str())
                        .collect::<Vec<_>>(),
                    origin.as_str(),
                )
            });
            let expected = expected.map(|(receivers, origin)| (receivers.to_vec(), origin));
            assert_eq!(got, expected, "{active_active} {shard}");
        }
        // The home copy travels with its own region's jurisdictions.
        let route = route(true);
        let (receivers, _) = ActiveActive
            .receivers(&route, "eu-west-s1", "eu-west")
            .unwrap();
        assert_eq!(receivers[0].jurisdictions, ["US"]);
        assert_eq!(of(&route).shipping_role(), Role::Peer);
        assert_eq!(of(&self::route(false)).shipping_role(), Role::Primary);
        // A standby-less active-passive namespace ships nothing.
        let alone = pb::Route {
            standbys: Vec::new(),
            ..self::route(false)
        };
        assert!(
            ActivePassive
                .receivers(&alone, "us-east-s1", "us-east")
                .is_none()
        );
    }
}
