//! The emulated link delays each direction by its one-way delay, keeps order,
//! and pauses traffic while partitioned.

use meridian_wan::{Link, LinkSpec};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                loop {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if socket.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    address
}

async fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, payload);
    started.elapsed()
}

#[tokio::test]
async fn delays_both_directions_and_pauses_when_partitioned() {
    let target = echo_server().await;
    let link = Link::start(LinkSpec {
        name: "a->b:echo".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        target,
        one_way_delay_ms: 40,
    })
    .await
    .unwrap();
    let mut stream = TcpStream::connect(link.local_addr()).await.unwrap();
    let rtt = round_trip(&mut stream, b"ping").await;
    assert!(
        rtt >= Duration::from_millis(80),
        "round trip {rtt:?} includes both delays"
    );

    // Pipelined: ten messages sent back to back take about one round trip, not ten.
    let started = Instant::now();
    for i in 0..10u8 {
        stream.write_all(&[i; 100]).await.unwrap();
    }
    let mut back = vec![0u8; 1000];
    stream.read_exact(&mut back).await.unwrap();
    let elapsed = started.elapsed();
    for (i, chunk) in back.chunks(100).enumerate() {
        assert!(chunk.iter().all(|b| *b == i as u8), "order kept");
    }
    assert!(
        elapsed < Duration::from_millis(400),
        "pipelined, took {elapsed:?}"
    );

    link.set_partitioned(true);
    stream.write_all(b"held").await.unwrap();
    let mut held = [0u8; 4];
    let waited =
        tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut held)).await;
    assert!(waited.is_err(), "nothing crosses a partitioned link");
    assert!(link.status().partitioned);

    link.set_partitioned(false);
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut held))
        .await
        .expect("traffic resumes after heal")
        .unwrap();
    assert_eq!(&held, b"held");
    assert!(link.status().bytes > 0);
}
