//! Each kind of bad input gets its documented status code, with a message naming
//! the limit or rule, and the node keeps serving.

mod common;

use common::TestShard;
use meridian_proto::v1 as pb;
use meridian_proto::v1::admin_client::AdminClient;
use meridian_proto::v1::kv_client::KvClient;
use tonic::Code;
use tonic::transport::Channel;

async fn kv(address: &str) -> KvClient<Channel> {
    KvClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn put(namespace: &str, key: &[u8], value: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        namespace: namespace.into(),
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn expect(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should name {needle:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_codes_and_the_node_keeps_serving() {
    let mut shard = TestShard::start(
        3,
        &[
            ("MERIDIAN__LIMITS__MAX_KEY_BYTES", "64"),
            ("MERIDIAN__LIMITS__MAX_VALUE_BYTES", "1024"),
            ("MERIDIAN__LIMITS__MAX_BATCH_OPS", "4"),
            ("MERIDIAN__LIMITS__MAX_NAMESPACES", "2"),
            ("MERIDIAN__LIMITS__MAX_SCAN_LIMIT", "100"),
        ],
    )
    .await;
    shard.client.create_namespace("limits").await.unwrap();
    let leader = shard.leader().await;
    let mut client = kv(&shard.address(&leader)).await;

    expect(
        client.put(put("limits", &[b'k'; 65], b"v")).await,
        Code::InvalidArgument,
        "max_key_bytes is 64",
    );
    expect(
        client.put(put("limits", b"k", &[0; 1025])).await,
        Code::InvalidArgument,
        "max_value_bytes is 1024",
    );
    expect(
        client.put(put("limits", b"", b"v")).await,
        Code::InvalidArgument,
        "key must not be empty",
    );
    expect(
        client.put(put("Not Valid", b"k", b"v")).await,
        Code::InvalidArgument,
        "invalid namespace name",
    );
    expect(
        client.put(put("missing", b"k", b"v")).await,
        Code::NotFound,
        "namespace \"missing\" not found",
    );
    expect(
        client
            .get(pb::GetRequest {
                namespace: "missing".into(),
                key: b"k".to_vec(),
                read: None,
            })
            .await,
        Code::NotFound,
        "not found",
    );
    expect(
        client
            .scan(pb::ScanRequest {
                namespace: "limits".into(),
                limit: 101,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "max_scan_limit",
    );
    expect(
        client
            .scan(pb::ScanRequest {
                namespace: "limits".into(),
                prefix: b"a".to_vec(),
                start: b"b".to_vec(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "either a prefix or a start/end range",
    );
    let op = |key: &str| pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(put("", key.as_bytes(), b"v"))),
    };
    expect(
        client
            .txn(pb::TxnRequest {
                namespace: "limits".into(),
                compare: vec![],
                success: (0..5).map(|i| op(&format!("k{i}"))).collect(),
                failure: vec![],
            })
            .await,
        Code::InvalidArgument,
        "max_batch_ops is 4",
    );
    expect(
        client
            .txn(pb::TxnRequest {
                namespace: "limits".into(),
                compare: vec![],
                success: vec![pb::TxnOp {
                    op: Some(pb::txn_op::Op::Put(put("other", b"k", b"v"))),
                }],
                failure: vec![],
            })
            .await,
        Code::InvalidArgument,
        "atomic within one namespace",
    );
    expect(
        client
            .txn(pb::TxnRequest {
                namespace: "limits".into(),
                compare: vec![pb::Compare {
                    key: b"k".to_vec(),
                    op: 0,
                    target: None,
                }],
                success: vec![],
                failure: vec![],
            })
            .await,
        Code::InvalidArgument,
        "compare.target is required",
    );

    // Namespace cap.
    let mut admin = AdminClient::connect(format!("http://{}", shard.address(&leader)))
        .await
        .unwrap();
    admin
        .create_namespace(pb::CreateNamespaceRequest {
            name: "second".into(),
        })
        .await
        .unwrap();
    expect(
        admin
            .create_namespace(pb::CreateNamespaceRequest {
                name: "third".into(),
            })
            .await,
        Code::ResourceExhausted,
        "max_namespaces is 2",
    );
    expect(
        admin
            .create_namespace(pb::CreateNamespaceRequest {
                name: "second".into(),
            })
            .await,
        Code::AlreadyExists,
        "already exists",
    );

    // A write sent to a follower is answered with the leader's address.
    let follower = shard.names().into_iter().find(|n| *n != leader).unwrap();
    let status = kv(&shard.address(&follower))
        .await
        .put(put("limits", b"k", b"v"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let redirect = status
        .metadata()
        .get("meridian-leader-address")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(redirect, shard.address(&leader));
    assert!(
        status.message().contains("not the leader"),
        "{}",
        status.message()
    );

    // A message larger than the transport limit is refused, not fatal.
    let huge = client
        .put(put("limits", b"k", &vec![0; 4 << 20]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            huge.code(),
            Code::ResourceExhausted | Code::InvalidArgument | Code::OutOfRange
        ),
        "{huge:?}"
    );

    // After all that, the node still serves.
    let ok = client
        .put(put("limits", b"k", b"v"))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.version > 0);
    for name in shard.names() {
        assert!(
            meridian_lab::lab::is_serving(&Default::default(), &shard.address(&name)).await,
            "{name} still serving"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_writes_with_a_clear_error_and_keeps_reads() {
    let shard = TestShard::start(
        1,
        &[(
            "MERIDIAN__LIMITS__MIN_FREE_DISK_BYTES",
            "18000000000000000000",
        )],
    )
    .await;
    let address = shard.address("us-east-1");
    let mut admin = AdminClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    expect(
        admin
            .create_namespace(pb::CreateNamespaceRequest {
                name: "full".into(),
            })
            .await,
        Code::ResourceExhausted,
        "min_free_disk_bytes",
    );
    // Reads and status keep working.
    let listed = admin
        .list_namespaces(pb::ListNamespacesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.namespaces.is_empty());
}
