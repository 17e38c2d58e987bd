//! RPC and bulk streams between two real endpoints.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    echo, loopback, send_bulk, start_node, start_node_with_sink, AcceptedBulk, BulkReceipt,
    CertDirs, TestNode, MAX_HEADER_BYTES,
};
use dispotify_transport::{
    read_chunk_frame, read_header, write_chunk_frame, write_header, StreamKind, TransportError,
};
use tokio::sync::mpsc;

/// Starts nodes "a" and "b" with certificates from one CA.
fn two_nodes(certs: &CertDirs) -> anyhow::Result<(TestNode, TestNode)> {
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;
    Ok((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarpc_echo_handles_concurrent_calls() -> anyhow::Result<()> {
    const CALLS: usize = 100;
    let certs = CertDirs::new()?;
    let (a, b) = two_nodes(&certs)?;
    let b_addr = b.addr();

    let mut calls = tokio::task::JoinSet::new();
    for call in 0..CALLS {
        let endpoint = a.endpoint.clone();
        calls.spawn(async move {
            let message = format!("message {call}");
            let reply = echo(&endpoint, "b", b_addr, &message).await;
            (message, reply)
        });
    }
    let mut replies = 0;
    while let Some(joined) = calls.join_next().await {
        let (message, reply) = joined?;
        assert_eq!(reply?, message);
        replies += 1;
    }

    assert_eq!(replies, CALLS);
    assert_eq!(
        b.counts.rpc_streams.load(Ordering::SeqCst),
        CALLS,
        "each call should use its own stream"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_streams_do_not_block_rpc() -> anyhow::Result<()> {
    const STREAMS: u64 = 8;
    const CHUNK_BYTES: u32 = 256 * 1024;
    // 8 streams of 32 chunks of 256 KiB: 64 MiB in all.
    const CHUNKS_PER_STREAM: u32 = 32;
    /// Upper bound on one ping's round trip while the transfer runs. Debug
    /// builds on a loaded CI machine are slow, so this only catches pings
    /// that wait for the bulk transfer to finish.
    const MAX_PING_LATENCY: Duration = Duration::from_secs(2);
    /// Upper bound on what the RPC connection may send: the pings, not the
    /// 64 MiB of bulk data.
    const MAX_RPC_CONNECTION_BYTES: u64 = 1024 * 1024;

    let certs = CertDirs::new()?;
    let (a, b) = two_nodes(&certs)?;
    let b_addr = b.addr();
    // Dial first so the pings measure calls, not the handshake.
    echo(&a.endpoint, "b", b_addr, "warm up").await?;

    eprintln!("phase: {STREAMS} bulk streams of {CHUNKS_PER_STREAM} chunks while pinging");
    let started = Instant::now();
    let mut transfers = tokio::task::JoinSet::new();
    for seed in 0..STREAMS {
        let endpoint = a.endpoint.clone();
        transfers.spawn(async move {
            send_bulk(&endpoint, "b", b_addr, seed, CHUNKS_PER_STREAM, CHUNK_BYTES).await
        });
    }

    let mut ping_latencies = Vec::new();
    while !transfers.is_empty() {
        let ping_started = Instant::now();
        let reply = echo(&a.endpoint, "b", b_addr, "ping").await?;
        assert_eq!(reply, "ping");
        ping_latencies.push(ping_started.elapsed());

        while let Some(joined) = transfers.try_join_next() {
            let receipt = joined??;
            assert_eq!(
                receipt,
                BulkReceipt {
                    chunks: CHUNKS_PER_STREAM,
                    bytes: u64::from(CHUNKS_PER_STREAM) * u64::from(CHUNK_BYTES),
                    first_bad_chunk: None,
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();

    let total_bytes = STREAMS * u64::from(CHUNKS_PER_STREAM) * u64::from(CHUNK_BYTES);
    assert_eq!(total_bytes, 64 * 1024 * 1024);
    let slowest_ping = ping_latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "moved {total_bytes} bytes in {elapsed:?}; {} pings, slowest {slowest_ping:?}",
        ping_latencies.len()
    );
    assert_eq!(
        b.counts.bulk_streams.load(Ordering::SeqCst),
        STREAMS as usize
    );
    assert!(
        ping_latencies.len() >= 2,
        "pings should complete during the transfer, got {}",
        ping_latencies.len()
    );
    assert!(
        slowest_ping < MAX_PING_LATENCY,
        "slowest ping took {slowest_ping:?}"
    );

    eprintln!("phase: the bulk data went on the bulk connection, not the RPC one");
    let rpc_sent_bytes = a
        .endpoint
        .connection("b", b_addr)
        .await?
        .stats()
        .udp_tx
        .bytes;
    let bulk_sent_bytes = a
        .endpoint
        .connection_for("b", b_addr, StreamKind::Bulk)
        .await?
        .stats()
        .udp_tx
        .bytes;
    assert!(
        bulk_sent_bytes >= total_bytes,
        "the bulk connection sent {bulk_sent_bytes} bytes of {total_bytes}"
    );
    // Pings and acknowledgements are a few hundred bytes each.
    assert!(
        rpc_sent_bytes < MAX_RPC_CONNECTION_BYTES,
        "the RPC connection sent {rpc_sent_bytes} bytes during the bulk transfer"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_connection_grows_datagrams_on_loopback() -> anyhow::Result<()> {
    /// The largest UDP payload quinn accepts from a peer by default, above
    /// its default discovery bound of 1452 bytes.
    const QUINN_DEFAULT_BOUND: u16 = 1472;
    const DISCOVERY_LIMIT: Duration = Duration::from_secs(10);

    let certs = CertDirs::new()?;
    let (a, b) = two_nodes(&certs)?;
    let b_addr = b.addr();
    let bound = a.endpoint.config().max_udp_payload;
    assert!(bound > QUINN_DEFAULT_BOUND, "default bound is {bound}");

    let receipt = send_bulk(&a.endpoint, "b", b_addr, 7, 16, 256 * 1024).await?;
    assert_eq!(receipt.first_bad_chunk, None);
    let connection = a
        .endpoint
        .connection_for("b", b_addr, StreamKind::Bulk)
        .await?;
    let started = Instant::now();
    let mut mtu = connection.stats().path.current_mtu;
    while mtu <= QUINN_DEFAULT_BOUND && started.elapsed() < DISCOVERY_LIMIT {
        // Discovery needs traffic to probe alongside.
        send_bulk(&a.endpoint, "b", b_addr, 8, 4, 256 * 1024).await?;
        mtu = connection.stats().path.current_mtu;
    }

    assert!(
        mtu > QUINN_DEFAULT_BOUND,
        "path MTU stayed at {mtu} bytes after {DISCOVERY_LIMIT:?}"
    );
    assert!(mtu <= bound, "path MTU {mtu} is above the bound {bound}");
    Ok(())
}

#[tokio::test]
async fn bulk_receiver_detects_corrupt_chunk() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let (a, b) = two_nodes(&certs)?;

    let (mut send, mut recv) = a
        .endpoint
        .open_stream("b", b.addr(), StreamKind::Bulk)
        .await?;
    let header = common::BulkHeader {
        seed: 7,
        chunk_count: 2,
        chunk_bytes: 1024,
    };
    write_header(&mut send, &header, MAX_HEADER_BYTES).await?;
    let mut good = vec![0u8; 1024];
    common::fill_chunk(7, 0, &mut good);
    write_chunk_frame(&mut send, 0, Bytes::from(good)).await?;
    write_chunk_frame(&mut send, 1, Bytes::from(vec![0u8; 1024])).await?;
    send.finish()?;

    let receipt: BulkReceipt = read_header(&mut recv, MAX_HEADER_BYTES).await?;
    assert_eq!(receipt.first_bad_chunk, Some(1));
    assert_eq!(receipt.chunks, 2);
    Ok(())
}

#[tokio::test]
async fn unknown_stream_kind_is_reset() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let (a, b) = two_nodes(&certs)?;

    let connection = a.endpoint.connection("b", b.addr()).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&[0xee, 1, 2, 3]).await?;

    let mut buffer = [0u8; 16];
    let result = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut buffer)).await?;
    assert!(
        matches!(result, Err(quinn::ReadError::Reset(_))),
        "expected the server to reset the stream, got {result:?}"
    );
    assert_eq!(b.counts.rpc_streams.load(Ordering::SeqCst), 0);
    assert_eq!(b.counts.bulk_streams.load(Ordering::SeqCst), 0);

    // The connection itself stays usable.
    assert_eq!(
        echo(&a.endpoint, "b", b.addr(), "still here").await?,
        "still here"
    );
    Ok(())
}

#[tokio::test]
async fn header_over_limit_is_rejected_before_sending() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let (a, b) = two_nodes(&certs)?;
    let (mut send, _recv) = a
        .endpoint
        .open_stream("b", b.addr(), StreamKind::Bulk)
        .await?;

    let big = vec![7u8; 100];
    let err = write_header(&mut send, &big, 50).await.unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { max_bytes: 50, .. }),
        "{err:?}"
    );
    Ok(())
}

/// Starts "a" and a "b" whose bulk streams arrive on the returned channel,
/// so the test reads them with the frame helpers itself.
fn nodes_with_bulk_sink(
    certs: &CertDirs,
) -> anyhow::Result<(TestNode, TestNode, mpsc::Receiver<AcceptedBulk>)> {
    let ca = certs.ca("ca")?;
    let (sink, accepted) = mpsc::channel(4);
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node_with_sink(&certs.node(&ca, "b", "b")?, "b", loopback(), Some(sink))?;
    Ok((a, b, accepted))
}

async fn next_bulk(accepted: &mut mpsc::Receiver<AcceptedBulk>) -> anyhow::Result<AcceptedBulk> {
    tokio::time::timeout(Duration::from_secs(5), accepted.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("handler dropped the bulk sink"))
}

#[tokio::test]
async fn chunk_reader_rejects_frame_over_max_len() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let (a, b, mut accepted) = nodes_with_bulk_sink(&certs)?;

    let (mut send, _recv) = a
        .endpoint
        .open_stream("b", b.addr(), StreamKind::Bulk)
        .await?;
    write_chunk_frame(&mut send, 0, Bytes::from(vec![1u8; 1024])).await?;
    write_chunk_frame(&mut send, 1, Bytes::from(vec![2u8; 1025])).await?;
    send.finish()?;

    let (peer, _send, mut recv) = next_bulk(&mut accepted).await?;
    assert_eq!(peer.as_str(), "a");
    let (index, payload) = read_chunk_frame(&mut recv, 1024)
        .await?
        .expect("first frame");
    assert_eq!(index, 0);
    assert_eq!(payload, Bytes::from(vec![1u8; 1024]));

    let err = read_chunk_frame(&mut recv, 1024).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::FrameTooLarge {
                length_bytes: 1025,
                max_bytes: 1024
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn chunk_reader_rejects_huge_length_without_payload() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let (a, b, mut accepted) = nodes_with_bulk_sink(&certs)?;

    // A prefix announcing a 4 GiB - 1 chunk, and no payload: the reader must
    // fail on the length alone, before allocating or waiting for data.
    let (mut send, _recv) = a
        .endpoint
        .open_stream("b", b.addr(), StreamKind::Bulk)
        .await?;
    let mut prefix = 9u32.to_be_bytes().to_vec();
    prefix.extend_from_slice(&u32::MAX.to_be_bytes());
    send.write_all(&prefix).await?;

    let (_peer, _send, mut recv) = next_bulk(&mut accepted).await?;
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        read_chunk_frame(&mut recv, 1024 * 1024),
    )
    .await?;
    assert!(
        matches!(
            result,
            Err(TransportError::FrameTooLarge {
                length_bytes: 4_294_967_295,
                ..
            })
        ),
        "{result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn chunk_reader_reports_end_and_truncation() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let (a, b, mut accepted) = nodes_with_bulk_sink(&certs)?;

    eprintln!("phase: a stream finished at a frame boundary ends with None");
    let (mut send, _recv) = a
        .endpoint
        .open_stream("b", b.addr(), StreamKind::Bulk)
        .await?;
    write_header(&mut send, &"clip-1", MAX_HEADER_BYTES).await?;
    write_chunk_frame(&mut send, 5, Bytes::from_static(b"hello")).await?;
    send.finish()?;

    let (_peer, _send, mut recv) = next_bulk(&mut accepted).await?;
    let header: String = read_header(&mut recv, MAX_HEADER_BYTES).await?;
    assert_eq!(header, "clip-1");
    let frame = read_chunk_frame(&mut recv, 1024).await?;
    assert_eq!(frame, Some((5, Bytes::from_static(b"hello"))));
    assert_eq!(read_chunk_frame(&mut recv, 1024).await?, None);

    eprintln!("phase: a stream finished inside a payload is an error");
    let (mut send, _recv) = a
        .endpoint
        .open_stream("b", b.addr(), StreamKind::Bulk)
        .await?;
    let mut truncated = 0u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&100u32.to_be_bytes());
    truncated.extend_from_slice(&[0u8; 10]);
    send.write_all(&truncated).await?;
    send.finish()?;

    let (_peer, _send, mut recv) = next_bulk(&mut accepted).await?;
    let err = read_chunk_frame(&mut recv, 1024).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::StreamClosed {
                context: "chunk frame payload",
                received_bytes: 10
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn header_reader_rejects_header_over_max_len() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let (a, b, mut accepted) = nodes_with_bulk_sink(&certs)?;

    let (mut send, _recv) = a
        .endpoint
        .open_stream("b", b.addr(), StreamKind::Bulk)
        .await?;
    write_header(&mut send, &vec![7u8; 200], MAX_HEADER_BYTES).await?;

    let (_peer, _send, mut recv) = next_bulk(&mut accepted).await?;
    let err = read_header::<Vec<u8>>(&mut recv, 100).await.unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { max_bytes: 100, .. }),
        "{err:?}"
    );
    Ok(())
}
