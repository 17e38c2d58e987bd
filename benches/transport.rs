//! Loopback throughput and latency of the node-to-node transport.
//!
//! Run with `cargo bench --bench transport` (about a minute). Every
//! throughput benchmark moves [`TRANSFER_BYTES`] (64 MiB) per iteration from
//! node "a" to node "b" on 127.0.0.1, and criterion reports it as bytes per
//! second (`thrpt`), so the groups compare directly:
//!
//! - `raw_quinn/1_stream`: one quinn stream with mutual TLS and quinn's
//!   default configuration, written with `write_all_chunks`, no framing.
//! - `raw_quinn/1_stream_node_datagrams`: the same with the node's datagram
//!   settings (`max_udp_payload`, `socket_buffer_bytes`,
//!   `receive_window_bytes`), so it differs from the transport's path by the
//!   framing alone.
//! - `bulk_frames/{1,4,8}_streams`: the transport's own path: the cached bulk
//!   connection, `StreamKind::Bulk` streams, `write_chunk_frame` /
//!   `read_chunk_frame` with 1 MiB chunks, the 64 MiB split evenly over the
//!   streams, all streams in parallel.
//! - `bulk_frames/8_streams_quinn_datagrams`: the same path with 8 streams
//!   and path MTU discovery capped at 1452 bytes, quinn's default, as the
//!   transport was before its datagram settings.
//! - `tcp/plain` and `tcp/tls13`: one TCP connection per iteration, without
//!   and with TLS 1.3 (tokio-rustls, mutual TLS with the same certificates),
//!   as what a TCP-based transport would get on the same machine.
//!
//! After the criterion group the bench prints, for each bulk connection,
//! the packet size path MTU discovery reached and the packets sent and lost.
//! Then it prints a table of ping RPC round
//! trips in milliseconds. Each call is `Ping::ping` through
//! `Endpoint::rpc_transport`, on its own QUIC stream, stream opening
//! included. The columns are p50, p99 and max over [`PING_SAMPLES`]
//! sequential calls and the throughput of the background bulk load while
//! they ran. `lost` counts the packets that node a's RPC connection declared
//! lost. `slow` counts the pings slower than [`SLOW_PING`], with the number
//! of them that saw such a loss in brackets.
//!
//! The first row is an idle endpoint. The next rows run 1, 4 and 8 bulk
//! streams through `Endpoint::open_stream`, which puts them on the peer's
//! bulk connection. The last rows open 4 and 8 bulk streams on the RPC
//! connection itself, so control and bulk streams share one congestion
//! controller and send buffer. The difference between the rows is how much
//! a bulk transfer delays a control RPC such as a Raft heartbeat.
//!
//! Loopback figures measure CPU cost (crypto, copies, framing, scheduling),
//! not network behaviour. Sender and receiver share the machine's cores, so
//! they depend on the machine and on what else runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dispotify_certs::NodeCertRequest;
use dispotify_transport::{
    bind_quinn_endpoint, datagram_transport_config, read_chunk_frame, read_header,
    serve_tarpc_stream, write_chunk_frame, write_header, BoxFuture, Endpoint, IncomingHandler,
    PeerId, StreamKind, TlsIdentity, TransportConfig,
};
use quinn::{RecvStream, SendStream};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tarpc::context::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// Bytes moved per throughput iteration.
const TRANSFER_BYTES: usize = 64 * 1024 * 1024;

/// Size of one write, and of one chunk frame on bulk streams.
const CHUNK_BYTES: usize = 1024 * 1024;

/// Ping calls per latency row.
const PING_SAMPLES: usize = 500;

/// Bulk stream counts of the throughput benchmarks and of the loaded latency
/// rows.
const BULK_STREAM_COUNTS: [usize; 3] = [1, 4, 8];

/// Round trip above which the latency table counts a ping as slow.
const SLOW_PING: Duration = Duration::from_millis(10);

/// Bulk stream counts of the latency rows that put them on the RPC
/// connection.
const SHARED_CONNECTION_STREAM_COUNTS: [usize; 2] = [4, 8];

/// Bytes each background bulk stream sends before the next one starts.
const LOAD_STREAM_BYTES: usize = 16 * 1024 * 1024;

/// quinn's default upper bound of path MTU discovery, for the baseline rows.
const QUINN_DEFAULT_MAX_UDP_PAYLOAD: u16 = 1452;

/// Bytes in a mebibyte, for the rates the bench prints.
const MIB: f64 = 1024.0 * 1024.0;

/// Largest bulk header or acknowledgement in this bench.
const MAX_HEADER_BYTES: usize = 64;

#[tarpc::service]
trait Ping {
    async fn ping(sequence: u64) -> u64;
}

#[derive(Clone)]
struct PingServer;

impl Ping for PingServer {
    async fn ping(self, _: Context, sequence: u64) -> u64 {
        sequence
    }
}

/// Serves `Ping` on RPC streams and drains bulk streams, acknowledging the
/// byte count.
struct BenchHandler {
    max_rpc_frame_bytes: usize,
}

impl IncomingHandler for BenchHandler {
    fn rpc<'a>(&'a self, _peer: PeerId, send: SendStream, recv: RecvStream) -> BoxFuture<'a, ()> {
        Box::pin(serve_tarpc_stream(
            send,
            recv,
            self.max_rpc_frame_bytes,
            PingServer.serve(),
        ))
    }

    fn bulk<'a>(
        &'a self,
        _peer: PeerId,
        mut send: SendStream,
        mut recv: RecvStream,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut received_bytes = 0u64;
            loop {
                match read_chunk_frame(&mut recv, CHUNK_BYTES).await {
                    Ok(Some((_, payload))) => received_bytes += payload.len() as u64,
                    Ok(None) => break,
                    Err(error) => {
                        eprintln!("bulk stream failed: {error}");
                        return;
                    }
                }
            }
            if write_header(&mut send, &received_bytes, MAX_HEADER_BYTES)
                .await
                .is_ok()
            {
                let _ = send.finish();
                let _ = send.stopped().await;
            }
        })
    }
}

/// Certificates for nodes "a" and "b" from one fresh CA; "b" also names
/// `localhost` so standard verifiers (TLS over TCP, raw quinn) accept it.
struct Certificates {
    _root: tempfile::TempDir,
    a_dir: PathBuf,
    b_dir: PathBuf,
}

impl Certificates {
    fn create() -> anyhow::Result<Self> {
        let root = tempfile::tempdir()?;
        let ca_dir = root.path().join("ca");
        dispotify_certs::init_ca(&ca_dir, false)?;
        let a_dir = root.path().join("a");
        let b_dir = root.path().join("b");
        dispotify_certs::issue_node_cert(&ca_dir, &NodeCertRequest::new("a"), &a_dir, false)?;
        let b_request = NodeCertRequest {
            dns_names: vec!["localhost".to_owned()],
            ..NodeCertRequest::new("b")
        };
        dispotify_certs::issue_node_cert(&ca_dir, &b_request, &b_dir, false)?;
        Ok(Self {
            _root: root,
            a_dir,
            b_dir,
        })
    }
}

/// A node's chain, key and CA as rustls types.
struct RawIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<rustls::RootCertStore>,
}

fn load_raw_identity(dir: &Path) -> anyhow::Result<RawIdentity> {
    let chain = dispotify_certs::read_pem_certs(&dir.join("node.pem"))?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(dispotify_certs::read_pem_key(
        &dir.join("node.key"),
    )?));
    let mut roots = rustls::RootCertStore::empty();
    for ca in dispotify_certs::read_pem_certs(&dir.join("ca.pem"))? {
        roots.add(CertificateDer::from(ca))?;
    }
    Ok(RawIdentity {
        chain,
        key,
        roots: Arc::new(roots),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a TLS 1.3 server configuration that requires a client certificate
/// from the CA.
fn rustls_server(identity: RawIdentity, alpn: &[u8]) -> anyhow::Result<rustls::ServerConfig> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(identity.roots, provider())
            .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Builds a TLS 1.3 client configuration that presents a client certificate.
fn rustls_client(identity: RawIdentity, alpn: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(identity.roots)
        .with_client_auth_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Returns the payload of every transfer, split into [`CHUNK_BYTES`] slices that
/// share one allocation.
fn payload_chunks() -> Vec<Bytes> {
    let payload = Bytes::from((0..TRANSFER_BYTES).map(|i| i as u8).collect::<Vec<u8>>());
    (0..TRANSFER_BYTES)
        .step_by(CHUNK_BYTES)
        .map(|start| payload.slice(start..start + CHUNK_BYTES))
        .collect()
}

/// Our two endpoints: "a" dials, "b" serves [`BenchHandler`].
struct Nodes {
    a: Endpoint,
    b: Endpoint,
}

fn start_nodes(certs: &Certificates, config: TransportConfig) -> anyhow::Result<Nodes> {
    let max_rpc_frame_bytes = config.max_rpc_frame_bytes;
    let a = Endpoint::bind(
        loopback(),
        TlsIdentity::load(&certs.a_dir, "a")?,
        config.clone(),
    )?;
    let b = Endpoint::bind(loopback(), TlsIdentity::load(&certs.b_dir, "b")?, config)?;
    b.serve(Arc::new(BenchHandler {
        max_rpc_frame_bytes,
    }))?;
    Ok(Nodes { a, b })
}

/// Where the bench opens a bulk stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkPath {
    /// `Endpoint::open_stream`, as the node does: the peer's bulk connection.
    BulkConnection,
    /// A bulk stream opened by hand on the connection that RPC streams use.
    RpcConnection,
}

/// Sends `chunks` on one bulk stream and waits for the byte count.
async fn bulk_transfer(nodes: &Nodes, chunks: &[Bytes]) -> anyhow::Result<u64> {
    bulk_transfer_on(nodes, chunks, BulkPath::BulkConnection).await
}

async fn bulk_transfer_on(nodes: &Nodes, chunks: &[Bytes], path: BulkPath) -> anyhow::Result<u64> {
    let b_addr = nodes.b.local_addr();
    let (mut send, mut recv) = match path {
        BulkPath::BulkConnection => nodes.a.open_stream("b", b_addr, StreamKind::Bulk).await?,
        BulkPath::RpcConnection => {
            let connection = nodes.a.connection("b", b_addr).await?;
            let (mut send, recv) = connection.open_bi().await?;
            // New streams have priority 0, the transport's bulk priority.
            send.write_all(&[StreamKind::Bulk.to_byte()]).await?;
            (send, recv)
        }
    };
    for (index, chunk) in chunks.iter().enumerate() {
        write_chunk_frame(&mut send, u32::try_from(index)?, chunk.clone()).await?;
    }
    send.finish()?;
    let received: u64 = read_header(&mut recv, MAX_HEADER_BYTES).await?;
    Ok(received)
}

/// Moves all of `chunks` over `streams` parallel bulk streams.
async fn parallel_bulk(nodes: &Nodes, chunks: &[Bytes], streams: usize) -> anyhow::Result<()> {
    let per_stream = chunks.len() / streams;
    let transfers = chunks
        .chunks(per_stream)
        .map(|part| bulk_transfer(nodes, part));
    let received: u64 = futures::future::try_join_all(transfers)
        .await?
        .into_iter()
        .sum();
    anyhow::ensure!(
        received == TRANSFER_BYTES as u64,
        "b received {received} bytes"
    );
    Ok(())
}

/// A plain quinn server and a client connection to it, with mutual TLS but
/// none of this crate's stream kinds or framing.
struct RawQuinn {
    _server: quinn::Endpoint,
    _client: quinn::Endpoint,
    connection: quinn::Connection,
}

/// Starts a raw quinn pair with quinn's defaults, or with the datagram
/// settings of `node_datagrams` when given.
async fn start_raw_quinn(
    certs: &Certificates,
    node_datagrams: Option<&TransportConfig>,
) -> anyhow::Result<RawQuinn> {
    const ALPN: &[u8] = b"bench-raw";
    let server_tls = rustls_server(load_raw_identity(&certs.b_dir)?, ALPN)?;
    let client_tls = rustls_client(load_raw_identity(&certs.a_dir)?, ALPN)?;
    let transport = Arc::new(
        node_datagrams.map_or_else(quinn::TransportConfig::default, datagram_transport_config),
    );
    let raw_endpoint = |server_config: Option<quinn::ServerConfig>| match node_datagrams {
        Some(config) => bind_quinn_endpoint(loopback(), config, server_config),
        None => match server_config {
            Some(server_config) => quinn::Endpoint::server(server_config, loopback()),
            None => quinn::Endpoint::client(loopback()),
        },
    };

    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
    ));
    server_config.transport_config(transport.clone());
    let server = raw_endpoint(Some(server_config))?;
    let server_addr = server.local_addr()?;

    let accepting = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let mut received_bytes = 0u64;
                        while let Ok(Some(chunk)) = recv.read_chunk(CHUNK_BYTES, true).await {
                            received_bytes += chunk.bytes.len() as u64;
                        }
                        let _ = send.write_all(&received_bytes.to_be_bytes()).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });

    let mut client = raw_endpoint(None)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
    ));
    client_config.transport_config(transport);
    client.set_default_client_config(client_config);
    let connection = client.connect(server_addr, "localhost")?.await?;
    Ok(RawQuinn {
        _server: server,
        _client: client,
        connection,
    })
}

async fn raw_quinn_transfer(raw: &RawQuinn, chunks: &[Bytes]) -> anyhow::Result<()> {
    let (mut send, mut recv) = raw.connection.open_bi().await?;
    let mut parts = chunks.to_vec();
    send.write_all_chunks(&mut parts).await?;
    send.finish()?;
    let mut count = [0u8; 8];
    recv.read_exact(&mut count).await?;
    let received = u64::from_be_bytes(count);
    anyhow::ensure!(
        received == TRANSFER_BYTES as u64,
        "received {received} bytes"
    );
    Ok(())
}

/// Starts a TCP server that reads each connection to its end and replies
/// with the byte count. With `tls`, connections are wrapped in TLS 1.3.
async fn start_tcp_server(tls: Option<tokio_rustls::TlsAcceptor>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let result = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => drain_and_count(stream).await,
                        Err(error) => Err(error),
                    },
                    None => drain_and_count(stream).await,
                };
                if let Err(error) = result {
                    eprintln!("tcp bench server: {error}");
                }
            });
        }
    });
    Ok(addr)
}

async fn drain_and_count<S>(mut stream: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut received_bytes = 0u64;
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        received_bytes += read as u64;
    }
    stream.write_all(&received_bytes.to_be_bytes()).await?;
    stream.shutdown().await
}

async fn send_and_check<S>(mut stream: S, chunks: &[Bytes]) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for chunk in chunks {
        stream.write_all(chunk).await?;
    }
    stream.shutdown().await?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await?;
    let received = u64::from_be_bytes(count);
    anyhow::ensure!(
        received == TRANSFER_BYTES as u64,
        "received {received} bytes"
    );
    Ok(())
}

async fn tcp_transfer(addr: SocketAddr, chunks: &[Bytes]) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    send_and_check(stream, chunks).await
}

async fn tls_transfer(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    chunks: &[Bytes],
) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let stream = connector
        .connect(ServerName::try_from("localhost")?, stream)
        .await?;
    send_and_check(stream, chunks).await
}

/// Runs `transfer` `iterations` times and returns the total time, for
/// criterion's `iter_custom`.
fn time_transfers<F, Fut>(runtime: &Runtime, iterations: u64, mut transfer: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..iterations {
            if let Err(error) = transfer().await {
                panic!("transfer failed: {error:#}");
            }
        }
        started.elapsed()
    })
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for the bench");
    let certs = Certificates::create().expect("bench certificates");
    let chunks = payload_chunks();

    let node_config = TransportConfig::default();
    let nodes = runtime
        .block_on(async { start_nodes(&certs, node_config.clone()) })
        .expect("transport endpoints");
    let quinn_datagram_nodes = runtime
        .block_on(async {
            start_nodes(
                &certs,
                TransportConfig {
                    max_udp_payload: QUINN_DEFAULT_MAX_UDP_PAYLOAD,
                    ..node_config.clone()
                },
            )
        })
        .expect("transport endpoints with quinn's datagram bound");
    let raw = runtime
        .block_on(start_raw_quinn(&certs, None))
        .expect("raw quinn endpoints");
    let raw_node_datagrams = runtime
        .block_on(start_raw_quinn(&certs, Some(&node_config)))
        .expect("raw quinn endpoints with the node's datagram settings");
    let tcp_addr = runtime
        .block_on(start_tcp_server(None))
        .expect("tcp server");
    let (tls_addr, tls_connector) = runtime
        .block_on(async {
            let server = rustls_server(load_raw_identity(&certs.b_dir)?, b"bench-tls")?;
            let client = rustls_client(load_raw_identity(&certs.a_dir)?, b"bench-tls")?;
            let addr =
                start_tcp_server(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))).await?;
            anyhow::Ok((addr, tokio_rustls::TlsConnector::from(Arc::new(client))))
        })
        .expect("tls server");

    let mut group = c.benchmark_group("loopback_64MiB");
    group
        .throughput(Throughput::Bytes(TRANSFER_BYTES as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.bench_function("raw_quinn/1_stream", |bencher| {
        bencher.iter_custom(|iterations| {
            time_transfers(&runtime, iterations, || raw_quinn_transfer(&raw, &chunks))
        })
    });
    group.bench_function("raw_quinn/1_stream_node_datagrams", |bencher| {
        bencher.iter_custom(|iterations| {
            time_transfers(&runtime, iterations, || {
                raw_quinn_transfer(&raw_node_datagrams, &chunks)
            })
        })
    });
    for streams in BULK_STREAM_COUNTS {
        group.bench_function(format!("bulk_frames/{streams}_streams"), |bencher| {
            bencher.iter_custom(|iterations| {
                time_transfers(&runtime, iterations, || {
                    parallel_bulk(&nodes, &chunks, streams)
                })
            })
        });
    }
    group.bench_function("bulk_frames/8_streams_quinn_datagrams", |bencher| {
        bencher.iter_custom(|iterations| {
            time_transfers(&runtime, iterations, || {
                parallel_bulk(&quinn_datagram_nodes, &chunks, 8)
            })
        })
    });
    group.bench_function("tcp/plain", |bencher| {
        bencher.iter_custom(|iterations| {
            time_transfers(&runtime, iterations, || tcp_transfer(tcp_addr, &chunks))
        })
    });
    group.bench_function("tcp/tls13", |bencher| {
        bencher.iter_custom(|iterations| {
            time_transfers(&runtime, iterations, || {
                tls_transfer(tls_addr, &tls_connector, &chunks)
            })
        })
    });
    group.finish();

    runtime
        .block_on(datagram_table(&[
            ("bulk_frames (node settings)", &nodes),
            ("bulk_frames (quinn's bound)", &quinn_datagram_nodes),
        ]))
        .expect("datagram statistics");
    runtime
        .block_on(ping_latency_table(&nodes))
        .expect("ping latency measurement");
    for pair in [&nodes, &quinn_datagram_nodes] {
        pair.a.close();
        pair.b.close();
    }
}

/// Prints, for node a's bulk connection of each pair, the packet size that
/// path MTU discovery reached and the packets sent and declared lost over
/// the throughput rows.
async fn datagram_table(pairs: &[(&str, &Nodes)]) -> anyhow::Result<()> {
    println!();
    println!(
        "{:<30} {:>8} {:>12} {:>8} {:>11} {:>11}",
        "bulk connection", "MTU", "packets", "lost", "congestion", "black holes"
    );
    for (label, nodes) in pairs {
        let connection = nodes
            .a
            .connection_for("b", nodes.b.local_addr(), StreamKind::Bulk)
            .await?;
        let path = connection.stats().path;
        println!(
            "{:<30} {:>8} {:>12} {:>8} {:>11} {:>11}",
            label,
            path.current_mtu,
            path.sent_packets,
            path.lost_packets,
            path.congestion_events,
            path.black_holes_detected
        );
    }
    Ok(())
}

/// Makes one ping RPC on its own stream, as the node does, and returns its
/// round-trip time.
async fn ping_once(nodes: &Nodes, sequence: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let transport = nodes.a.rpc_transport("b", nodes.b.local_addr()).await?;
    let client = PingClient::new(tarpc::client::Config::default(), transport).spawn();
    let reply = client.ping(nodes.a.rpc_context(), sequence).await?;
    anyhow::ensure!(reply == sequence, "ping {sequence} returned {reply}");
    Ok(started.elapsed())
}

/// The pings of one latency row.
struct PingRun {
    /// Round-trip times, sorted.
    samples: Vec<Duration>,
    /// Packets that node a's RPC connection declared lost during the row.
    lost_packets: u64,
    /// Pings slower than [`SLOW_PING`].
    slow_pings: usize,
    /// Slow pings during which the RPC connection declared a packet lost.
    slow_pings_with_loss: usize,
}

async fn ping_samples(nodes: &Nodes) -> anyhow::Result<PingRun> {
    let connection = nodes.a.connection("b", nodes.b.local_addr()).await?;
    let lost_at_start = connection.stats().path.lost_packets;
    let mut run = PingRun {
        samples: Vec::with_capacity(PING_SAMPLES),
        lost_packets: 0,
        slow_pings: 0,
        slow_pings_with_loss: 0,
    };
    for sequence in 0..PING_SAMPLES as u64 {
        let lost_before = connection.stats().path.lost_packets;
        let sample = ping_once(nodes, sequence).await?;
        if sample > SLOW_PING {
            run.slow_pings += 1;
            if connection.stats().path.lost_packets > lost_before {
                run.slow_pings_with_loss += 1;
            }
        }
        run.samples.push(sample);
    }
    run.lost_packets = connection.stats().path.lost_packets - lost_at_start;
    run.samples.sort();
    Ok(run)
}

/// Returns the sample at quantile `q` of sorted `samples` (nearest rank).
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let rank = ((samples.len() as f64) * q).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// One row of the latency table: the pings and the bulk throughput in the
/// background while they ran.
struct LatencyRow {
    condition: String,
    pings: PingRun,
    load_mib_per_second: Option<f64>,
}

fn print_row(row: &LatencyRow) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let samples = &row.pings.samples;
    let load = row
        .load_mib_per_second
        .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.0}"));
    let slow = format!(
        "{} ({})",
        row.pings.slow_pings, row.pings.slow_pings_with_loss
    );
    println!(
        "{:<36} {:>7.3} {:>7.3} {:>7.3} {:>10} {:>7} {:>10}",
        row.condition,
        ms(quantile(samples, 0.50)),
        ms(quantile(samples, 0.99)),
        ms(samples[samples.len() - 1]),
        load,
        row.pings.lost_packets,
        slow,
    );
}

/// Measures [`PING_SAMPLES`] pings while `streams` bulk streams keep
/// transferring on `path`, each restarted as soon as it finishes.
async fn loaded_row(
    nodes: &Nodes,
    streams: usize,
    path: BulkPath,
    condition: String,
) -> anyhow::Result<LatencyRow> {
    let stop = Arc::new(AtomicBool::new(false));
    let load_chunks: Vec<Bytes> = payload_chunks()
        .into_iter()
        .take(LOAD_STREAM_BYTES / CHUNK_BYTES)
        .collect();
    let background = (0..streams).map(|_| {
        let stop = stop.clone();
        let load_chunks = load_chunks.clone();
        async move {
            let mut transferred = 0u64;
            while !stop.load(Ordering::Relaxed) {
                transferred += bulk_transfer_on(nodes, &load_chunks, path).await?;
            }
            anyhow::Ok(transferred)
        }
    });
    let load = futures::future::try_join_all(background);
    let started = Instant::now();
    let measured = async {
        let samples = ping_samples(nodes).await;
        stop.store(true, Ordering::Relaxed);
        samples
    };
    let (pings, transferred) = tokio::join!(measured, load);
    // The load streams finish the transfer in progress after `stop`, so the
    // rate counts those bytes over the time they took.
    let elapsed = started.elapsed();
    let pings = pings.with_context(|| format!("pings with {condition}"))?;
    let transferred: u64 = transferred
        .with_context(|| format!("background load of {condition}"))?
        .iter()
        .sum();
    Ok(LatencyRow {
        condition,
        pings,
        load_mib_per_second: Some(transferred as f64 / elapsed.as_secs_f64() / MIB),
    })
}

async fn ping_latency_table(nodes: &Nodes) -> anyhow::Result<()> {
    // Warm both connections so no sample includes a handshake.
    ping_once(nodes, 0).await.context("warm-up ping")?;
    bulk_transfer(nodes, &payload_chunks()[..1])
        .await
        .context("warm-up bulk stream")?;

    let mut rows = vec![LatencyRow {
        condition: "idle".to_owned(),
        pings: ping_samples(nodes).await.context("idle pings")?,
        load_mib_per_second: None,
    }];
    for streams in BULK_STREAM_COUNTS {
        let condition = format!("{streams} bulk streams, bulk connection");
        rows.push(loaded_row(nodes, streams, BulkPath::BulkConnection, condition).await?);
    }
    for streams in SHARED_CONNECTION_STREAM_COUNTS {
        let condition = format!("{streams} bulk streams, RPC connection");
        rows.push(loaded_row(nodes, streams, BulkPath::RpcConnection, condition).await?);
    }

    println!();
    println!("ping RPC round trip, one stream per call, {PING_SAMPLES} calls per row (ms)");
    println!(
        "lost: packets the RPC connection declared lost; slow: pings over {SLOW_PING:?} \
         (of those, pings that saw a loss)"
    );
    println!(
        "{:<36} {:>7} {:>7} {:>7} {:>10} {:>7} {:>10}",
        "condition", "p50", "p99", "max", "bulk MiB/s", "lost", "slow"
    );
    for row in &rows {
        print_row(row);
    }
    Ok(())
}

criterion_group!(benches, throughput);
criterion_main!(benches);
