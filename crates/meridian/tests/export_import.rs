//! Export a namespace and import it elsewhere: contents, versions and digest
//! survive; a damaged stream is refused and leaves nothing behind.

mod common;

use common::TestShard;
use meridian_client::{ClientError, pb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_gives_equal_digests() {
    let shard = TestShard::start(3, &[]).await;
    let client = &shard.client;
    client.create_namespace("source").await.unwrap();
    for i in 0..1500 {
        client
            .put(
                "source",
                format!("key/{i:04}").as_bytes(),
                &vec![b'x'; i % 300],
            )
            .await
            .unwrap();
    }
    for i in (0..1500).step_by(7) {
        client
            .put("source", format!("key/{i:04}").as_bytes(), b"rewritten")
            .await
            .unwrap();
    }
    client.delete("source", b"key/0003").await.unwrap();
    // Binary keys and values.
    client
        .put("source", &[0, 255, 1], &[0, 0, 0])
        .await
        .unwrap();

    let source = client.check_integrity("source").await.unwrap();
    let chunks = client.export_namespace("source").await.unwrap();
    assert!(matches!(
        chunks.first().and_then(|c| c.item.as_ref()),
        Some(pb::export_chunk::Item::Header(_))
    ));
    let imported = client
        .import_namespace("copy", chunks.clone())
        .await
        .unwrap();
    assert_eq!(imported.digest, source.digest);
    let copy = client.check_integrity("copy").await.unwrap();
    assert_eq!(copy.digest, source.digest);
    assert_eq!(copy.key_count, source.key_count);

    // Versions are preserved, and later writes still get larger versions.
    let original = client
        .get("source", b"key/0007", pb::Consistency::Strong)
        .await
        .unwrap()
        .unwrap();
    let copied = client
        .get("copy", b"key/0007", pb::Consistency::Strong)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(original.version, copied.version);
    let next = client.put("copy", b"key/0007", b"again").await.unwrap();
    assert!(next.version > copied.version);

    // A damaged stream: drop one batch. The import is refused with DATA_LOSS
    // and the half-imported namespace is removed.
    let mut damaged = chunks;
    let batch = damaged
        .iter()
        .position(|c| matches!(c.item, Some(pb::export_chunk::Item::Batch(_))))
        .unwrap();
    damaged.remove(batch);
    let err = client
        .import_namespace("broken", damaged)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::DataLoss(_)), "{err}");
    let names: Vec<String> = client
        .list_namespaces()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert!(!names.contains(&"broken".to_string()), "{names:?}");

    // Importing over an existing namespace is refused.
    let chunks = client.export_namespace("source").await.unwrap();
    let err = client.import_namespace("copy", chunks).await.unwrap_err();
    assert!(matches!(err, ClientError::AlreadyExists(_)), "{err}");
}
