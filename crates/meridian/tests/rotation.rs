//! Certificate rotation without a restart: under a steady write load, every
//! process of a TLS lab gets its next certificate (`certs issue --replace`);
//! each starts presenting it on gRPC and HTTP within seconds, and no call
//! fails.

mod common;

use meridian_client::pb;
use meridian_lab::ProcessRole;
use meridian_net::{Identity, TlsFiles, TlsMaterial};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The certificate (DER) the server at `address` presents now.
async fn served_certificate(address: &str, tls: &TlsMaterial) -> Option<Vec<u8>> {
    let connector = tokio_rustls::TlsConnector::from(tls.rustls_client_config().ok()?);
    let stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from(meridian_net::tls::SERVER_NAME).ok()?;
    let stream = connector.connect(name, stream).await.ok()?;
    let der = stream
        .get_ref()
        .1
        .peer_certificates()?
        .first()?
        .as_ref()
        .to_vec();
    Some(der)
}

/// The first certificate (DER) in a PEM file.
fn certificate_in(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).unwrap();
    rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_failed_calls() {
    let dir = tempfile::tempdir().unwrap();
    let lab = common::us_east_lab(&dir.path().join("lab"), 3, true, &[]).await;
    let state = lab.state().clone();
    let certs = state.certs.clone().unwrap();
    let control = common::lab_client(
        &lab,
        state.endpoints(ProcessRole::Control, None),
        Duration::from_secs(30),
    );
    control
        .place_namespace(pb::Placement {
            name: "rot".into(),
            home_region: "us-east".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A steady load through the gateway for the whole rotation.
    let gateway = Arc::new(common::lab_client(
        &lab,
        state.endpoints(ProcessRole::Gateway, None),
        Duration::from_secs(10),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (gateway, stop, acked, failures) = (
            gateway.clone(),
            stop.clone(),
            acked.clone(),
            failures.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("k{}", i % 100);
                match gateway.put("rot", key.as_bytes(), &i.to_be_bytes()).await {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => failures.lock().unwrap().push(err.to_string()),
                }
            }
        })
    };
    let wait_for_writes = |more: u64| {
        let acked = acked.clone();
        async move {
            let target = acked.load(Ordering::Relaxed) + more;
            let deadline = Instant::now() + Duration::from_secs(30);
            while acked.load(Ordering::Relaxed) < target {
                assert!(Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for_writes(50).await;

    let admin = TlsFiles::in_dir(&certs, "admin").load().unwrap();
    let mut rotated = 0;
    for process in &state.processes {
        let identity = match process.role {
            ProcessRole::Node => Identity::Node {
                region: process.region.clone(),
                name: process.name.clone(),
            },
            ProcessRole::Gateway => Identity::Gateway {
                region: process.region.clone(),
                name: process.name.clone(),
            },
            ProcessRole::Control => Identity::Control {
                name: process.name.clone(),
            },
            ProcessRole::Wan => continue,
        };
        let before = served_certificate(&process.grpc, &admin).await.unwrap();
        meridian_net::certs::issue(&certs, std::slice::from_ref(&identity), true).unwrap();
        let next = certificate_in(&certs.join(format!("{}.pem", process.name)));
        assert_ne!(before, next);
        let started = Instant::now();
        for address in [&process.grpc, &process.http] {
            loop {
                if served_certificate(address, &admin).await.as_ref() == Some(&next) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{} does not present its new certificate on {address}",
                    process.name
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        println!("{} rotated in {:?}", process.name, started.elapsed());
        rotated += 1;
        wait_for_writes(20).await;
    }
    assert!(
        rotated >= 5,
        "nodes, gateway and control members: {rotated}"
    );

    // The CLI user's certificate rotates too: a new client with it works.
    meridian_net::certs::issue(&certs, &[Identity::parse("user/admin").unwrap()], true).unwrap();
    let fresh = meridian_client::Client::with_options(
        state.endpoints(ProcessRole::Gateway, None),
        meridian_client::ClientOptions {
            dialer: meridian_net::Dialer::new(
                Default::default(),
                Some(&TlsFiles::in_dir(&certs, "admin").load().unwrap()),
            ),
            ..Default::default()
        },
    )
    .unwrap();
    fresh.put("rot", b"after", b"rotation").await.unwrap();

    wait_for_writes(50).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} writes failed during rotation: {:?}",
        failures.len(),
        acked.load(Ordering::Relaxed) + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    println!(
        "{} writes, none failed, across the rotation of {rotated} processes",
        acked.load(Ordering::Relaxed)
    );
}
