//! Delete means gone: removing an active-passive namespace deletes every copy
//! (primary, standby, lost writes), a removal that could not finish resumes
//! when asked again, and a re-created name never adopts an old copy.

use meridian_client::pb;
mod common;

use common::{lab_client, region_nodes};
use meridian_lab::ProcessRole;
use std::time::{Duration, Instant};

async fn holds(lab: &meridian_lab::Lab, region: &str, namespace: &str) -> bool {
    let shard = lab_client(lab, region_nodes(lab, region), Duration::from_secs(10));
    shard
        .list_namespaces()
        .await
        .unwrap()
        .iter()
        .any(|n| n.name == namespace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_every_copy_and_the_name_starts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = common::multi_region_lab(dir.path()).await;
    // One patient attempt per call: a removal waits for unreachable shards.
    let control = meridian_client::Client::with_options(
        lab.state().endpoints(ProcessRole::Control, None),
        meridian_client::ClientOptions {
            attempt_timeout: Duration::from_secs(20),
            retry_budget: Duration::from_secs(20),
            dialer: lab.dialer().clone(),
            ..Default::default()
        },
    )
    .unwrap();
    control
        .place_namespace(common::us_east_with_eu_standby("doomed"))
        .await
        .unwrap();
    let primary = lab_client(&lab, region_nodes(&lab, "us-east"), Duration::from_secs(10));
    let standby = lab_client(&lab, region_nodes(&lab, "eu-west"), Duration::from_secs(10));
    primary.put("doomed", b"secret", b"1").await.unwrap();
    // The standby has it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let copy = standby
            .get("doomed", b"secret", pb::Consistency::Eventual)
            .await;
        if matches!(copy, Ok(Some(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "the standby never got the write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The standby region is down during the removal: the route goes, the
    // primary's copy goes, and the removal says what remains.
    lab.kill("eu-west-1").unwrap();
    let refused = control.remove_namespace("doomed").await.unwrap_err();
    assert!(refused.to_string().contains("eu-west-s1"), "{refused}");
    assert!(!holds(&lab, "us-east", "doomed").await);
    // The name is reserved until every copy is gone.
    let again = control
        .place_namespace(common::us_east_with_eu_standby("doomed"))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("still being deleted"), "{again}");

    // The standby returns; asking again (or the background worker, which
    // may get there first: then the name is simply gone) finishes.
    lab.restart("eu-west-1").unwrap();
    lab.wait_ready(Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match control.remove_namespace("doomed").await {
            Ok(_) | Err(meridian_client::ClientError::NotFound(_)) => break,
            Err(err) => {
                assert!(Instant::now() < deadline, "removal never finished: {err}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    assert!(!holds(&lab, "eu-west", "doomed").await);
    assert!(!holds(&lab, "us-east", "doomed").await);

    // A new namespace of the same name starts empty everywhere.
    control
        .place_namespace(common::us_east_with_eu_standby("doomed"))
        .await
        .unwrap();
    for client in [&primary, &standby] {
        let found = client
            .get("doomed", b"secret", pb::Consistency::Eventual)
            .await
            .unwrap();
        assert!(
            found.is_none(),
            "the re-created namespace adopted an old copy"
        );
    }
}
