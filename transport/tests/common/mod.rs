//! Shared fixtures for the transport integration tests: real certificates
//! made with `dispotify_certs` in temporary directories, real QUIC endpoints
//! on 127.0.0.1, a tarpc `Echo` service and a bulk receiver that checks
//! every byte.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use dispotify_certs::{NodeCertRequest, Validity};
use dispotify_transport::{
    read_chunk_frame, read_header, serve_tarpc_stream, write_chunk_frame, write_header, Endpoint,
    IncomingHandler, PeerId, TlsIdentity, TransportConfig,
};
use futures::future::BoxFuture;
use quinn::{RecvStream, SendStream};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Largest bulk header the tests accept.
pub const MAX_HEADER_BYTES: usize = 4 * 1024;

/// Largest chunk the bulk receiver accepts.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

#[tarpc::service]
pub trait Echo {
    /// Returns `message` unchanged.
    async fn echo(message: String) -> String;
    /// Returns the node id the server saw in the caller's certificate.
    async fn caller_id() -> String;
}

#[derive(Clone)]
struct EchoServer {
    caller: PeerId,
}

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, message: String) -> String {
        message
    }

    async fn caller_id(self, _: tarpc::context::Context) -> String {
        self.caller.to_string()
    }
}

/// The first message of a test bulk stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct BulkHeader {
    /// Seed of the pseudo-random payload, so the receiver can regenerate it.
    pub seed: u64,
    pub chunk_count: u32,
    pub chunk_bytes: u32,
}

/// The receiver's reply after the last chunk.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkReceipt {
    pub chunks: u32,
    pub bytes: u64,
    /// Index of the first chunk whose index or bytes differed, if any.
    pub first_bad_chunk: Option<u32>,
}

/// Fills `buffer` with the payload of chunk `index` of the stream with `seed`.
pub fn fill_chunk(seed: u64, index: u32, buffer: &mut [u8]) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(index) << 32));
    rng.fill_bytes(buffer);
}

/// Counts what the handler was given, so tests can check that rejected peers
/// never reached it.
#[derive(Default)]
pub struct HandlerCounts {
    pub rpc_streams: AtomicUsize,
    pub bulk_streams: AtomicUsize,
    /// The peer id the handler was given with each bulk stream, in order.
    bulk_peers: Mutex<Vec<String>>,
}

impl HandlerCounts {
    /// Returns the peer ids of the bulk streams handled so far.
    pub fn bulk_peers(&self) -> anyhow::Result<Vec<String>> {
        let peers = self
            .bulk_peers
            .lock()
            .map_err(|_| anyhow::anyhow!("a handler panicked while recording a bulk peer"))?;
        Ok(peers.clone())
    }
}

/// An accepted bulk stream handed to the test instead of the receiver.
pub type AcceptedBulk = (PeerId, SendStream, RecvStream);

/// Serves `Echo` on RPC streams and checks every byte of bulk streams, or
/// hands bulk streams to the test when `bulk_sink` is set.
pub struct TestHandler {
    pub counts: Arc<HandlerCounts>,
    pub max_rpc_frame_bytes: usize,
    pub bulk_sink: Option<mpsc::Sender<AcceptedBulk>>,
}

impl IncomingHandler for TestHandler {
    fn rpc<'a>(&'a self, peer: PeerId, send: SendStream, recv: RecvStream) -> BoxFuture<'a, ()> {
        self.counts.rpc_streams.fetch_add(1, Ordering::SeqCst);
        let server = EchoServer { caller: peer }.serve();
        Box::pin(serve_tarpc_stream(
            send,
            recv,
            self.max_rpc_frame_bytes,
            server,
        ))
    }

    fn bulk<'a>(&'a self, peer: PeerId, send: SendStream, recv: RecvStream) -> BoxFuture<'a, ()> {
        self.counts.bulk_streams.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut peers) = self.counts.bulk_peers.lock() {
            peers.push(peer.to_string());
        }
        Box::pin(async move {
            if let Some(sink) = &self.bulk_sink {
                let _ = sink.send((peer, send, recv)).await;
                return;
            }
            if let Err(error) = receive_bulk(send, recv).await {
                eprintln!("bulk receiver failed: {error:#}");
            }
        })
    }
}

async fn receive_bulk(mut send: SendStream, mut recv: RecvStream) -> anyhow::Result<()> {
    let header: BulkHeader = read_header(&mut recv, MAX_HEADER_BYTES).await?;
    let mut expected = vec![0u8; header.chunk_bytes as usize];
    let mut receipt = BulkReceipt {
        chunks: 0,
        bytes: 0,
        first_bad_chunk: None,
    };
    while let Some((index, payload)) = read_chunk_frame(&mut recv, MAX_CHUNK_BYTES).await? {
        fill_chunk(header.seed, receipt.chunks, &mut expected);
        let intact = index == receipt.chunks && payload[..] == expected[..payload.len()];
        if !intact && receipt.first_bad_chunk.is_none() {
            receipt.first_bad_chunk = Some(receipt.chunks);
        }
        receipt.chunks += 1;
        receipt.bytes += payload.len() as u64;
    }
    write_header(&mut send, &receipt, MAX_HEADER_BYTES).await?;
    send.finish()?;
    // Wait until the peer has read the receipt; finishing alone does not
    // keep the stream's data alive if the connection closes right after.
    let _ = send.stopped().await;
    Ok(())
}

/// Sends `chunk_count` chunks of `chunk_bytes` on a new bulk stream and
/// returns the receiver's receipt.
pub async fn send_bulk(
    endpoint: &Endpoint,
    peer: &str,
    addr: SocketAddr,
    seed: u64,
    chunk_count: u32,
    chunk_bytes: u32,
) -> anyhow::Result<BulkReceipt> {
    let (mut send, mut recv) = endpoint
        .open_stream(peer, addr, dispotify_transport::StreamKind::Bulk)
        .await?;
    let header = BulkHeader {
        seed,
        chunk_count,
        chunk_bytes,
    };
    write_header(&mut send, &header, MAX_HEADER_BYTES).await?;
    for index in 0..chunk_count {
        let mut payload = vec![0u8; chunk_bytes as usize];
        fill_chunk(seed, index, &mut payload);
        write_chunk_frame(&mut send, index, Bytes::from(payload)).await?;
    }
    send.finish()?;
    let receipt = read_header(&mut recv, MAX_HEADER_BYTES).await?;
    Ok(receipt)
}

/// Calls `Echo::echo` on a new RPC stream.
pub async fn echo(
    endpoint: &Endpoint,
    peer: &str,
    addr: SocketAddr,
    message: &str,
) -> anyhow::Result<String> {
    let transport = endpoint.rpc_transport(peer, addr).await?;
    let client = EchoClient::new(tarpc::client::Config::default(), transport).spawn();
    let reply = client
        .echo(endpoint.rpc_context(), message.to_owned())
        .await?;
    Ok(reply)
}

/// Calls `Echo::caller_id` on a new RPC stream.
pub async fn caller_id(
    endpoint: &Endpoint,
    peer: &str,
    addr: SocketAddr,
) -> anyhow::Result<String> {
    let transport = endpoint.rpc_transport(peer, addr).await?;
    let client = EchoClient::new(tarpc::client::Config::default(), transport).spawn();
    Ok(client.caller_id(endpoint.rpc_context()).await?)
}

/// A temporary directory with certificate authorities and node certificate
/// directories under it.
pub struct CertDirs {
    pub root: tempfile::TempDir,
}

impl CertDirs {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            root: tempfile::tempdir()?,
        })
    }

    /// Creates a CA named `name` and returns its directory.
    pub fn ca(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.path().join(name);
        dispotify_certs::init_ca(&dir, false).with_context(|| format!("creating CA {name}"))?;
        Ok(dir)
    }

    /// Issues a certificate for node `id` from `ca_dir` into a directory
    /// named `dir_name` and returns it.
    pub fn node(&self, ca_dir: &Path, id: &str, dir_name: &str) -> anyhow::Result<PathBuf> {
        self.node_with_validity(ca_dir, id, dir_name, Validity::default())
    }

    pub fn node_with_validity(
        &self,
        ca_dir: &Path,
        id: &str,
        dir_name: &str,
        validity: Validity,
    ) -> anyhow::Result<PathBuf> {
        let out = self.root.path().join(dir_name);
        let request = NodeCertRequest {
            validity,
            ..NodeCertRequest::new(id)
        };
        dispotify_certs::issue_node_cert(ca_dir, &request, &out, false)
            .with_context(|| format!("issuing certificate for {id}"))?;
        Ok(out)
    }
}

/// Returns a validity period that ended a day ago.
pub fn expired_validity() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now - Duration::from_secs(3 * 86_400),
        not_after: now - Duration::from_secs(86_400),
    }
}

/// A bound and serving endpoint with its handler's counters.
pub struct TestNode {
    pub endpoint: Endpoint,
    pub counts: Arc<HandlerCounts>,
}

impl TestNode {
    pub fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Loads the identity in `certs_dir`, binds on `addr` and serves
/// [`TestHandler`].
pub fn start_node(certs_dir: &Path, id: &str, addr: SocketAddr) -> anyhow::Result<TestNode> {
    start_node_with_sink(certs_dir, id, addr, None)
}

/// Like [`start_node`], with bulk streams sent to `bulk_sink` when given.
pub fn start_node_with_sink(
    certs_dir: &Path,
    id: &str,
    addr: SocketAddr,
    bulk_sink: Option<mpsc::Sender<AcceptedBulk>>,
) -> anyhow::Result<TestNode> {
    let identity = TlsIdentity::load(certs_dir, id)?;
    let config = TransportConfig::short_timeouts();
    let counts = Arc::new(HandlerCounts::default());
    let handler = TestHandler {
        counts: counts.clone(),
        max_rpc_frame_bytes: config.max_rpc_frame_bytes,
        bulk_sink,
    };
    let endpoint = Endpoint::bind(addr, identity, config)?;
    endpoint.serve(Arc::new(handler))?;
    Ok(TestNode { endpoint, counts })
}

/// Calls `start_node` until the address is free again or `timeout` passes;
/// a closed endpoint releases its UDP port only after its connections have
/// drained.
pub async fn start_node_when_free(
    certs_dir: &Path,
    id: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<TestNode> {
    let deadline = Instant::now() + timeout;
    loop {
        match start_node(certs_dir, id, addr) {
            Ok(node) => return Ok(node),
            Err(error) if Instant::now() < deadline => {
                eprintln!("address {addr} not free yet: {error:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
}
