//! The S3 path against a real S3-compatible server: moto's server mode
//! (`python3 -m pip install 'moto[server]'`, which `.ci/run` does), started
//! on a free loopback port. Only with the `s3` feature:
//!
//!   cargo test -p meridian-dr --features s3 --test s3
#![cfg(feature = "s3")]

use meridian_dr::Record;
use meridian_dr::reader::{RecordDigest, read_manifest, validate};
use meridian_dr::writer::{BackupMeta, BackupWriter};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// moto's server, stopped when dropped.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain HTTP request to moto (it does not check signatures), returning
/// the status line.
fn http(port: u16, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[derive(Default)]
struct Sha(Sha256, u64);

impl RecordDigest for Sha {
    fn add(&mut self, record: &Record) {
        self.0.update(&record.key);
        self.0.update(record.version.to_be_bytes());
        self.0.update(&record.value);
        self.1 += 1;
    }
    fn finish(&mut self) -> (u64, String) {
        (self.1, hex::encode(std::mem::take(&mut self.0).finalize()))
    }
}

#[test]
fn a_backup_round_trips_through_an_s3_compatible_server() {
    let port = free_port();
    let moto = Moto(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server (python3 -m pip install 'moto[server]')"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let created = http(
        port,
        "PUT /meridian-backups HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(created.contains("200"), "creating the bucket: {created}");
    // SAFETY: set before any other thread of this test binary exists (the
    // runtime is built below); the builder reads them once.
    unsafe {
        std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"));
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let location = meridian_dr::location::open("s3://meridian-backups/eu").unwrap();
        let kek = [7u8; 32];
        let meta = BackupMeta {
            backup_id: "s3-1".into(),
            namespace: "orders".into(),
            jurisdictions: vec!["EU".into()],
            location: "eu-s3".into(),
            location_region: "eu-west".into(),
            source_shard: "eu-west-a".into(),
            source_node: 1,
            change_seq: 5,
            kind: meridian_dr::manifest::BackupKind::Full,
            parent: None,
            from_seq: 0,
            applied_index: 9,
            created_unix_ms: 1,
            time_marks: Vec::new(),
        };
        let mut writer = BackupWriter::new(&location, meta, &kek)
            .unwrap()
            .with_chunk_bytes(8 << 10);
        let mut digest = Sha::default();
        for i in 0..1_000u64 {
            let record = Record {
                key: format!("k{i:04}").into_bytes(),
                version: i,
                value: format!("S3-MARKER-{i}").into_bytes(),
            };
            digest.add(&record);
            writer.push(record).await.unwrap();
        }
        let (count, hex) = digest.finish();
        let manifest = writer.finish(count, hex).await.unwrap();
        assert!(manifest.objects.len() > 1, "{manifest:?}");
        let read = read_manifest(&location, "orders", "s3-1").await.unwrap();
        assert_eq!(read, manifest);
        let checked = validate(&location, &manifest, &kek, &mut Sha::default())
            .await
            .unwrap();
        assert_eq!(checked.records, 1_000);
        // What the server holds has no record in clear.
        let first = object_store::path::Path::from(manifest.objects[0].path.as_str());
        let stored = location
            .store
            .get(&first)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(!stored.windows(9).any(|w| w == b"S3-MARKER"));
        // A damaged object on the server is named.
        let mut damaged = stored.to_vec();
        damaged[20] ^= 1;
        location
            .store
            .put(&first, object_store::PutPayload::from(damaged))
            .await
            .unwrap();
        let err = validate(&location, &manifest, &kek, &mut Sha::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&manifest.objects[0].path), "{err}");
    });
    drop(moto);
}
