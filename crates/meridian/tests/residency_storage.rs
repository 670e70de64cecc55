//! Residency, checked where it matters: after a mixed workload through every
//! region's gateway, the storage of every node outside the EU holds no byte of an
//! EU namespace's keys or values — log, state machine or snapshot — while the EU
//! shard does (which shows the scan can find them).

mod common;

use meridian_client::{Client, pb};
use meridian_lab::{Lab, LabSpec, ProcessRole};
use std::time::Duration;

const MARKER: &[u8] = b"EU-RESIDENT-";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_outside_the_eu_holds_eu_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(&LabSpec {
        dir: dir.path().join("lab"),
        regions: vec!["us-east".into(), "eu-west".into(), "ap-south".into()],
        nodes: 1,
        binary: env!("CARGO_BIN_EXE_meridian").into(),
        tls: false,
        wan: None,
        // Small snapshot thresholds, so snapshots are part of what is checked.
        env: vec![
            ("MERIDIAN__RAFT__SNAPSHOT_AFTER_ENTRIES".into(), "50".into()),
            (
                "MERIDIAN__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT".into(),
                "10".into(),
            ),
        ],
        encryption: true,
    })
    .unwrap()
    .kill_on_drop();
    lab.wait_ready(Duration::from_secs(90), |_, _| {})
        .await
        .unwrap();
    let control = Client::new(lab.state().endpoints(ProcessRole::Control, None)).unwrap();
    for (name, region, jurisdictions) in [
        ("eu-data", "eu-west", vec!["EU".to_string()]),
        ("us-data", "us-east", vec![]),
    ] {
        control
            .place_namespace(pb::Placement {
                name: name.into(),
                home_region: region.into(),
                allowed_jurisdictions: jurisdictions,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let refused = control
        .place_namespace(pb::Placement {
            name: "eu-data-2".into(),
            home_region: "ap-south".into(),
            allowed_jurisdictions: vec!["EU".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("residency rule"), "{refused}");

    // A mixed workload through every region's gateway.
    for region in ["us-east", "eu-west", "ap-south"] {
        let gateway =
            Client::new(lab.state().endpoints(ProcessRole::Gateway, Some(region))).unwrap();
        for i in 0..60 {
            let key = [MARKER, format!("key-{region}-{i}").as_bytes()].concat();
            let value = [MARKER, format!("value-{i}").as_bytes()].concat();
            gateway.put("eu-data", &key, &value).await.unwrap();
            gateway
                .put("us-data", format!("us-{region}-{i}").as_bytes(), b"plain")
                .await
                .unwrap();
            if i % 10 == 0 {
                gateway.delete("eu-data", &key).await.unwrap();
            }
        }
        let page = gateway
            .scan(pb::ScanRequest {
                namespace: "eu-data".into(),
                prefix: MARKER.to_vec(),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!page.kvs.is_empty());
    }

    // Stop everything (data stays on disk) and look at every node's storage.
    lab.down().unwrap();
    let mut checked = 0;
    for process in lab
        .state()
        .processes
        .iter()
        .filter(|p| matches!(p.role, ProcessRole::Node | ProcessRole::Control))
    {
        let data_dir = process.config.with_file_name("data");
        let key_file = lab.state().dir.join(meridian_lab::topology::KEY_FILE);
        let holds = common::storage_contains(&data_dir, &key_file, MARKER);
        let in_eu = process.region == "eu-west" && process.role == ProcessRole::Node;
        if in_eu {
            assert!(
                holds,
                "the EU shard node {} must hold the EU data",
                process.name
            );
        } else {
            assert!(
                !holds,
                "{} ({}) holds EU data",
                process.name, process.region
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 6,
        "three shard nodes and three control-plane members checked"
    );
}
