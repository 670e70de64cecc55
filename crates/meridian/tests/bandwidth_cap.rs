//! The replication bandwidth cap: with `[replication] max_bytes_per_second` set,
//! a burst of incompressible writes reaches the standby no faster than the cap
//! allows, and all of it arrives.

mod common;

use common::{lab_client, region_nodes};
use meridian_lab::ProcessRole;
use std::time::{Duration, Instant};

/// Bytes per second the shard nodes may ship.
const CAP: u64 = 40_000;

/// Values that zstd cannot shrink (xorshift noise), so the bytes on the wire
/// are about the bytes written.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_never_outruns_the_bandwidth_cap_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cap = CAP.to_string();
    let lab = common::multi_region_lab_with(
        dir.path(),
        &[("MERIDIAN__REPLICATION__MAX_BYTES_PER_SECOND", &cap)],
    )
    .await;
    let control = lab_client(
        &lab,
        lab.state().endpoints(ProcessRole::Control, None),
        Duration::from_secs(20),
    );
    control
        .place_namespace(common::us_east_with_eu_standby("media"))
        .await
        .unwrap();
    let primary = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(20));
    let standby = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(20));

    // 160 KB of noise: four seconds' worth at the cap, one of which the
    // bucket's burst may cover.
    let started = Instant::now();
    let (count, size) = (80, 2_000);
    for i in 0..count {
        primary
            .put("media", format!("blob-{i:03}").as_bytes(), &noise(i, size))
            .await
            .unwrap();
    }
    let written = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let caught_up = loop {
        let status = primary.replication_status().await.unwrap();
        let entry = status
            .namespaces
            .iter()
            .find(|n| n.namespace == "media")
            .cloned()
            .expect("the namespace is replicated");
        if entry.change_seq >= count
            && !entry.standbys.is_empty()
            && entry
                .standbys
                .iter()
                .all(|s| s.acked_seq == entry.change_seq)
        {
            break (Instant::now(), entry);
        }
        assert!(Instant::now() < deadline, "no catch-up: {entry:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = caught_up.0.duration_since(started).as_secs_f64();
    let sent: u64 = caught_up.1.standbys.iter().map(|s| s.bytes_sent).sum();
    assert!(
        sent >= count * size as u64,
        "noise does not compress: {sent} bytes sent"
    );
    // The bucket starts full (one second's worth); the rest goes at the cap.
    let floor = (sent - CAP) as f64 / CAP as f64;
    assert!(
        elapsed >= floor * 0.9,
        "{sent} bytes reached the standby in {elapsed:.2} s; the cap allows no less than {floor:.2} s \
         (writes took {:.2} s)",
        written.duration_since(started).as_secs_f64()
    );
    // Everything arrived, with the primary's versions.
    let on_primary = primary.check_integrity("media").await.unwrap();
    let on_standby = standby.check_integrity("media").await.unwrap();
    assert_eq!(on_primary.digest, on_standby.digest);
    assert_eq!(on_standby.key_count, count);
}
