//! Outgoing connections, one per peer and stream kind, dialed on demand and
//! shared.
//!
//! Each (peer node id, [`StreamKind`]) pair maps to either a dial in
//! progress or an established connection. Control RPCs and bulk transfers
//! to the same peer therefore run on two connections, each with its own
//! congestion controller, flow-control windows and send buffer. Bulk data
//! waiting in the bulk connection's send buffer or congestion window thus
//! holds back no control RPC, though both still share the UDP socket.
//!
//! Callers that ask for a pair while it is being dialed wait for that same
//! dial, so a burst of calls makes one handshake per kind. The dial runs in
//! its own task and stores its result in the cache itself, so a caller that
//! gives up early does not abandon the dial for the others.
//!
//! A cached connection that quinn reports closed (by the peer, idle timeout,
//! or a TLS alert) is replaced by a new dial on the next request. When a
//! peer is requested at a different address, every connection cached for
//! that peer at the old address is closed, whatever its kind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use quinn::crypto::rustls::NoInitialCipherSuite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::TransportError;
use crate::stream::StreamKind;
use crate::tls::{peer_node_id, ClientTls, ServerRejection, DIAL_SERVER_NAME};

/// The peer named in errors of a dial that accepts any cluster node.
const ANY_PEER: &str = "(any cluster node)";

/// Application close code sent on a cached connection that is replaced
/// because the peer is now requested at another address.
const CLOSE_CODE_ADDRESS_CHANGED: u32 = 1;

/// The failure of one dial. It is Clone because every caller waiting on the
/// dial gets a copy.
#[derive(Debug, Clone)]
enum DialError {
    EndpointClosed,
    QuicSetup(NoInitialCipherSuite),
    Rejected(quinn::ConnectError),
    Handshake(quinn::ConnectionError),
    Certificate(rustls::Error),
    IdentityMismatch { presented: String },
    TimedOut(Duration),
}

impl DialError {
    fn into_transport_error(self, peer: &str, addr: SocketAddr) -> TransportError {
        let peer = peer.to_owned();
        match self {
            Self::EndpointClosed | Self::Rejected(quinn::ConnectError::EndpointStopping) => {
                TransportError::EndpointClosed
            }
            Self::QuicSetup(source) => TransportError::TlsConfig {
                component: "QUIC client configuration",
                source: source.into(),
            },
            Self::Rejected(source) => TransportError::DialRejected { peer, addr, source },
            Self::Handshake(source) => TransportError::ConnectFailed { peer, addr, source },
            Self::Certificate(source) => TransportError::Tls { peer, addr, source },
            Self::IdentityMismatch { presented } => TransportError::PeerIdentityMismatch {
                addr,
                expected: peer,
                presented,
            },
            Self::TimedOut(timeout) => TransportError::TimedOut {
                peer,
                operation: "connect",
                timeout,
            },
        }
    }
}

type SharedDial = Shared<BoxFuture<'static, Result<quinn::Connection, DialError>>>;

/// The cache key: a peer node id and the kind of streams the connection
/// carries.
type Key = (String, StreamKind);

enum Entry {
    Dialing {
        addr: SocketAddr,
        dial_id: u64,
        dial: SharedDial,
    },
    Connected {
        addr: SocketAddr,
        connection: quinn::Connection,
    },
}

impl Entry {
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Dialing { addr, .. } | Self::Connected { addr, .. } => *addr,
        }
    }
}

/// The parts of the endpoint that a dial uses.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) quinn: quinn::Endpoint,
    pub(crate) tls: Arc<ClientTls>,
    pub(crate) connect_timeout: Duration,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Dialer {
    /// Dials `addr`, accepting only a server that proves it is `peer`, or
    /// any cluster node when `peer` is `None`.
    async fn dial(
        &self,
        peer: Option<&str>,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, DialError> {
        if self.shutdown.is_cancelled() {
            return Err(DialError::EndpointClosed);
        }
        let (config, verdict) = self.tls.for_peer(peer).map_err(DialError::QuicSetup)?;
        let connecting = self
            .quinn
            .connect_with(config, addr, DIAL_SERVER_NAME)
            .map_err(DialError::Rejected)?;

        let outcome = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Err(DialError::EndpointClosed),
            outcome = tokio::time::timeout(self.connect_timeout, connecting) => outcome,
        };
        match outcome {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(match verdict.rejection() {
                Some(ServerRejection::Certificate(error)) => DialError::Certificate(error),
                Some(ServerRejection::IdentityMismatch { presented }) => {
                    DialError::IdentityMismatch { presented }
                }
                None => DialError::Handshake(error),
            }),
            Err(_) => Err(DialError::TimedOut(self.connect_timeout)),
        }
    }
}

/// The connection cache of one endpoint.
pub(crate) struct ConnectionCache {
    entries: Mutex<HashMap<Key, Entry>>,
    next_dial_id: AtomicU64,
    dialer: Dialer,
}

impl ConnectionCache {
    pub(crate) fn new(dialer: Dialer) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            next_dial_id: AtomicU64::new(0),
            dialer,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        // Critical sections only move map entries and cannot leave the map
        // half-updated, so a lock poisoned by a panicking thread is usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the cached connection for streams of `kind` to `peer` at
    /// `addr`, dialing it if there is none, the cached one is closed, or it
    /// goes to another address.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        peer: &str,
        kind: StreamKind,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, TransportError> {
        let dial = {
            let mut entries = self.lock();
            let key = (peer.to_owned(), kind);
            match entries.get(&key) {
                Some(Entry::Connected {
                    addr: cached_addr,
                    connection,
                }) if *cached_addr == addr && connection.close_reason().is_none() => {
                    return Ok(connection.clone());
                }
                Some(Entry::Dialing {
                    addr: dialing_addr,
                    dial,
                    ..
                }) if *dialing_addr == addr => dial.clone(),
                _ => {
                    drop_other_addresses(&mut entries, peer, addr);
                    self.start_dial(&mut entries, key, addr)
                }
            }
        };
        dial.await
            .map_err(|error| error.into_transport_error(peer, addr))
    }

    /// Spawns a dial for `key` and records it in `entries`.
    fn start_dial(
        self: &Arc<Self>,
        entries: &mut HashMap<Key, Entry>,
        key: Key,
        addr: SocketAddr,
    ) -> SharedDial {
        let dial_id = self.next_dial_id.fetch_add(1, Ordering::Relaxed);
        let cache = Arc::downgrade(self);
        let dialer = self.dialer.clone();
        let (peer, kind) = &key;
        tracing::debug!(peer, ?kind, %addr, "dialing peer");

        let task_key = key.clone();
        let task = self.dialer.tasks.spawn(async move {
            let result = dialer.dial(Some(&task_key.0), addr).await;
            finish_dial(&cache, &task_key, addr, dial_id, &result);
            result
        });
        let dial = async move {
            // The dial task neither panics nor is aborted; a join error means
            // the runtime is shutting down.
            task.await.unwrap_or(Err(DialError::EndpointClosed))
        }
        .boxed()
        .shared();

        entries.insert(
            key,
            Entry::Dialing {
                addr,
                dial_id,
                dial: dial.clone(),
            },
        );
        dial
    }

    /// Dials `addr` without caching, accepting any node with a certificate
    /// from the cluster CA, and returns the connection with the node id the
    /// server presented.
    pub(crate) async fn connect_any(
        &self,
        addr: SocketAddr,
    ) -> Result<(String, quinn::Connection), TransportError> {
        let connection = self
            .dialer
            .dial(None, addr)
            .await
            .map_err(|error| error.into_transport_error(ANY_PEER, addr))?;
        match peer_node_id(&connection) {
            Some(node_id) => Ok((node_id, connection)),
            // The verifier accepts a certificate only after reading its node
            // id, so this branch is unreachable. It reports a certificate
            // failure instead of panicking.
            None => Err(TransportError::Tls {
                peer: ANY_PEER.to_owned(),
                addr,
                source: rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
            }),
        }
    }

    /// Drops cached connections to `peer` so the next request dials again.
    /// `kind` selects one stream kind's entry, and `None` selects every
    /// kind. With `stable_id`, only a connection with that id is dropped.
    pub(crate) fn invalidate(
        &self,
        peer: &str,
        kind: Option<StreamKind>,
        stable_id: Option<usize>,
    ) {
        let mut entries = self.lock();
        entries.retain(|(entry_peer, entry_kind), entry| {
            let selected = entry_peer == peer && kind.is_none_or(|kind| kind == *entry_kind);
            let matches = match entry {
                Entry::Connected { connection, .. } => {
                    stable_id.is_none_or(|id| id == connection.stable_id())
                }
                Entry::Dialing { .. } => stable_id.is_none(),
            };
            !(selected && matches)
        });
    }

    /// Empties the cache. Connections close when their last user drops them
    /// or when the endpoint closes.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

/// Removes every entry of `peer` at an address other than `addr` and closes
/// its connection, because the peer has moved to `addr`.
fn drop_other_addresses(entries: &mut HashMap<Key, Entry>, peer: &str, addr: SocketAddr) {
    entries.retain(|(entry_peer, kind), entry| {
        if entry_peer != peer || entry.addr() == addr {
            return true;
        }
        if let Entry::Connected {
            addr: old_addr,
            connection,
        } = entry
        {
            tracing::debug!(
                peer,
                ?kind,
                %old_addr,
                new_addr = %addr,
                "peer address changed; closing cached connection"
            );
            connection.close(CLOSE_CODE_ADDRESS_CHANGED.into(), b"peer address changed");
        }
        false
    });
}

/// Stores the outcome of dial `dial_id` unless a newer dial replaced it.
fn finish_dial(
    cache: &Weak<ConnectionCache>,
    key: &Key,
    addr: SocketAddr,
    dial_id: u64,
    result: &Result<quinn::Connection, DialError>,
) {
    let (peer, kind) = key;
    match result {
        Ok(_) => tracing::debug!(peer, ?kind, %addr, "connected to peer"),
        Err(error) => tracing::debug!(peer, ?kind, %addr, ?error, "failed to dial peer"),
    }
    let Some(cache) = cache.upgrade() else {
        return;
    };
    let mut entries = cache.lock();
    let current = matches!(
        entries.get(key),
        Some(Entry::Dialing { dial_id: id, .. }) if *id == dial_id
    );
    if !current {
        return;
    }
    match result {
        Ok(connection) => {
            entries.insert(
                key.clone(),
                Entry::Connected {
                    addr,
                    connection: connection.clone(),
                },
            );
        }
        Err(_) => {
            entries.remove(key);
        }
    }
}
