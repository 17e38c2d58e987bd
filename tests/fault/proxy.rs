//! A UDP fault proxy in front of every node's QUIC port, so a test can cut
//! the link between two nodes in one direction or both.
//!
//! Each node binds its QUIC endpoint on a private loopback port and
//! advertises the public port of its proxy, so every datagram between two
//! nodes crosses the receiver's proxy:
//!
//! ```text
//! node A (private port a) --> proxy of B (public) --> upstream socket --> node B (private port b)
//! node A (private port a) <-- proxy of B (public) <-- upstream socket <-- node B
//! ```
//!
//! The proxy works like a NAT: it opens one upstream socket per client
//! source address and sends the node's replies back from its public socket.
//! A node sends every datagram from its own QUIC port, so the source address
//! of a datagram names the sending node, and the proxy drops datagrams per
//! (from, to) pair. A source that is no node (the test itself) always
//! passes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Largest datagram relayed. A UDP payload on loopback can reach 64 KiB,
/// and quinn may probe for such a path MTU.
const MAX_DATAGRAM_BYTES: usize = 65_536;

/// Upstream sockets one proxy keeps. Every node and the test each take
/// one, so this is far above what a cluster of nine nodes needs, and
/// bounds the sockets a misbehaving sender could make the proxy open.
const MAX_SESSIONS_PER_PROXY: usize = 64;

/// Address the upstream sockets bind. It differs from the nodes'
/// 127.0.0.1, so an ephemeral upstream port can never take a port that a
/// node is about to bind.
const UPSTREAM_BIND: &str = "127.0.0.2:0";

/// Which node pairs may exchange datagrams, shared by every proxy.
struct Rules {
    /// Private QUIC address of each node, by node index.
    nodes: Vec<SocketAddr>,
    /// Directed pairs (from, to) whose datagrams are dropped.
    blocked: RwLock<HashSet<(usize, usize)>>,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl Rules {
    fn node_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|node| *node == addr)
    }

    /// Whether a datagram from `from` to `to` must be dropped, counting it.
    fn drops(&self, from: Option<usize>, to: usize) -> bool {
        let blocked = match from {
            Some(from) => self
                .blocked
                .read()
                .map(|set| set.contains(&(from, to)))
                .unwrap_or(false),
            None => false,
        };
        if blocked {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        blocked
    }
}

/// Datagram counts since the network started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub forwarded: u64,
    pub dropped: u64,
}

/// One proxy per node, all run on a thread of their own so that a busy test
/// runtime never delays a heartbeat.
pub struct FaultNetwork {
    rules: Arc<Rules>,
    public: Vec<SocketAddr>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultNetwork {
    /// Binds one public loopback socket per node address in `nodes` (the
    /// private QUIC addresses) and starts relaying.
    pub fn start(nodes: Vec<SocketAddr>) -> Result<FaultNetwork> {
        let mut sockets = Vec::new();
        for _ in &nodes {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("bind proxy socket")?;
            socket.set_nonblocking(true)?;
            sockets.push(socket);
        }
        let public = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let rules = Arc::new(Rules {
            nodes: nodes.clone(),
            blocked: RwLock::new(HashSet::new()),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let shutdown = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build proxy runtime")?;
        let thread_rules = rules.clone();
        let thread_shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = Vec::new();
                    for (index, socket) in sockets.into_iter().enumerate() {
                        let socket = match UdpSocket::from_std(socket) {
                            Ok(socket) => Arc::new(socket),
                            Err(error) => {
                                eprintln!("fault proxy {index}: cannot register socket: {error}");
                                continue;
                            }
                        };
                        tasks.push(tokio::spawn(relay_to_node(
                            index,
                            socket,
                            thread_rules.clone(),
                            thread_shutdown.clone(),
                        )));
                    }
                    thread_shutdown.cancelled().await;
                    for task in tasks {
                        let _ = task.await;
                    }
                })
            })
            .context("spawn proxy thread")?;
        Ok(FaultNetwork {
            rules,
            public,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Returns the address other nodes dial to reach node `node`.
    pub fn public_addr(&self, node: usize) -> SocketAddr {
        self.public[node]
    }

    fn edit(&self, change: impl FnOnce(&mut HashSet<(usize, usize)>)) {
        if let Ok(mut blocked) = self.rules.blocked.write() {
            change(&mut blocked);
        }
    }

    /// Drops every datagram from `from` to `to`, in that direction only.
    pub fn block_one_way(&self, from: usize, to: usize) {
        self.edit(|blocked| {
            blocked.insert((from, to));
        });
    }

    /// Drops every datagram between every node of `side_a` and every node
    /// of `side_b`, both ways.
    pub fn partition(&self, side_a: &[usize], side_b: &[usize]) {
        self.edit(|blocked| {
            for &a in side_a {
                for &b in side_b {
                    blocked.insert((a, b));
                    blocked.insert((b, a));
                }
            }
        });
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: usize) {
        let others: Vec<usize> = (0..self.rules.nodes.len()).filter(|n| *n != node).collect();
        self.partition(&[node], &others);
    }

    /// Lets every datagram through again.
    pub fn heal(&self) {
        self.edit(|blocked| blocked.clear());
    }

    pub fn counters(&self) -> Counters {
        Counters {
            forwarded: self.rules.forwarded.load(Ordering::Relaxed),
            dropped: self.rules.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultNetwork {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Relays datagrams arriving at node `index`'s public socket to the node,
/// through one upstream socket per source address.
async fn relay_to_node(
    index: usize,
    public: Arc<UdpSocket>,
    rules: Arc<Rules>,
    shutdown: CancellationToken,
) {
    let target = rules.nodes[index];
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES];
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            received = public.recv_from(&mut buffer) => received,
        };
        // Errors on an unconnected UDP socket are per datagram; the next
        // datagram is unaffected.
        let Ok((len, source)) = received else {
            continue;
        };
        let from = rules.node_of(source);
        if rules.drops(from, index) {
            continue;
        }
        let upstream = match sessions.get(&source) {
            Some(upstream) => upstream.clone(),
            None => {
                if sessions.len() >= MAX_SESSIONS_PER_PROXY {
                    continue;
                }
                let Ok(upstream) = UdpSocket::bind(UPSTREAM_BIND).await else {
                    continue;
                };
                let upstream = Arc::new(upstream);
                sessions.insert(source, upstream.clone());
                tokio::spawn(relay_to_client(
                    index,
                    upstream.clone(),
                    public.clone(),
                    source,
                    rules.clone(),
                    shutdown.clone(),
                ));
                upstream
            }
        };
        let _ = upstream.send_to(&buffer[..len], target).await;
    }
}

/// Relays node `index`'s replies on one upstream socket back to `client`,
/// from the node's public socket.
async fn relay_to_client(
    index: usize,
    upstream: Arc<UdpSocket>,
    public: Arc<UdpSocket>,
    client: SocketAddr,
    rules: Arc<Rules>,
    shutdown: CancellationToken,
) {
    let target = rules.nodes[index];
    let client_node = rules.node_of(client);
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES];
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            received = upstream.recv_from(&mut buffer) => received,
        };
        let Ok((len, source)) = received else {
            continue;
        };
        if source != target {
            continue;
        }
        let dropped = match client_node {
            Some(client_node) => rules.drops(Some(index), client_node),
            None => rules.drops(None, index),
        };
        if dropped {
            continue;
        }
        let _ = public.send_to(&buffer[..len], client).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How long a datagram that should arrive may take on loopback, and
    /// how long the test listens for one that should not.
    const WAIT: Duration = Duration::from_millis(300);

    async fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buffer = vec![0u8; 2048];
        match tokio::time::timeout(WAIT, socket.recv_from(&mut buffer)).await {
            Ok(Ok((len, from))) => Some((buffer[..len].to_vec(), from)),
            _ => None,
        }
    }

    #[tokio::test]
    async fn proxy_forwards_and_drops_per_direction() -> Result<()> {
        let a = UdpSocket::bind("127.0.0.1:0").await?;
        let b = UdpSocket::bind("127.0.0.1:0").await?;
        let outsider = UdpSocket::bind("127.0.0.1:0").await?;
        let network = FaultNetwork::start(vec![a.local_addr()?, b.local_addr()?])?;
        let b_public = network.public_addr(1);

        // Open link: a datagram reaches B from an upstream socket, and B's
        // reply reaches A from B's public address.
        a.send_to(b"one", b_public).await?;
        let (bytes, upstream) = receive(&b).await.context("a -> b on an open link")?;
        assert_eq!(bytes, b"one");
        assert_ne!(
            upstream,
            a.local_addr()?,
            "the proxy must relay, not redirect"
        );
        b.send_to(b"reply one", upstream).await?;
        let (bytes, from) = receive(&a).await.context("b -> a on an open link")?;
        assert_eq!(bytes, b"reply one");
        assert_eq!(from, b_public, "replies come from the public address");

        // A to B blocked one way: A's datagrams are lost, B's replies pass.
        network.block_one_way(0, 1);
        a.send_to(b"two", b_public).await?;
        assert!(receive(&b).await.is_none(), "a -> b must be dropped");
        b.send_to(b"reply two", upstream).await?;
        let (bytes, _) = receive(&a)
            .await
            .context("b -> a while only a -> b is cut")?;
        assert_eq!(bytes, b"reply two");

        // B to A blocked one way: A's datagrams pass, B's replies are lost.
        network.heal();
        network.block_one_way(1, 0);
        a.send_to(b"three", b_public).await?;
        let (bytes, _) = receive(&b)
            .await
            .context("a -> b while only b -> a is cut")?;
        assert_eq!(bytes, b"three");
        b.send_to(b"reply three", upstream).await?;
        assert!(receive(&a).await.is_none(), "b -> a must be dropped");

        // Isolation cuts both ways between nodes, but a source that is no
        // node still passes.
        network.heal();
        network.isolate(1);
        a.send_to(b"four", b_public).await?;
        assert!(
            receive(&b).await.is_none(),
            "a -> isolated b must be dropped"
        );
        outsider.send_to(b"five", b_public).await?;
        let (bytes, outsider_upstream) = receive(&b).await.context("outsider -> b")?;
        assert_eq!(bytes, b"five");
        b.send_to(b"reply five", outsider_upstream).await?;
        let (bytes, _) = receive(&outsider).await.context("b -> outsider")?;
        assert_eq!(bytes, b"reply five");

        // Healing restores the link.
        network.heal();
        a.send_to(b"six", b_public).await?;
        let (bytes, _) = receive(&b).await.context("a -> b after heal")?;
        assert_eq!(bytes, b"six");

        let counters = network.counters();
        assert_eq!(counters.dropped, 3, "two, reply three and four are dropped");
        assert_eq!(counters.forwarded, 7);
        Ok(())
    }
}
