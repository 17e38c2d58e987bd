//! The QUIC endpoint of a node: one UDP socket that serves peers and dials
//! them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quinn::{RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{ConnectionCache, Dialer};
use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::identity::TlsIdentity;
use crate::incoming::{accept_loop, AcceptContext, IncomingHandler};
use crate::rpc::{postcard_transport, ClientTransport};
use crate::stream::{PeerId, StreamKind};
use crate::tls::{server_config, ClientTls};

/// Application close code sent to every peer when the endpoint closes.
const CLOSE_CODE_SHUTDOWN: u32 = 0;

/// A node's QUIC endpoint.
///
/// It accepts connections from peers with a certificate from the cluster CA
/// (see [`Endpoint::serve`]) and dials peers, keeping one cached connection
/// per peer node id and stream kind (see [`Endpoint::connection_for`]).
/// Cloning is cheap and every clone is the same endpoint. When the last
/// clone is dropped the endpoint closes as with [`Endpoint::close`].
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    quinn: quinn::Endpoint,
    local_addr: SocketAddr,
    node_id: String,
    config: TransportConfig,
    cache: Arc<ConnectionCache>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    serving: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.quinn
            .close(CLOSE_CODE_SHUTDOWN.into(), b"endpoint dropped");
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("node_id", &self.inner.node_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds a UDP socket on `addr` and prepares to serve and dial with
    /// `identity`. Must be called inside a tokio runtime.
    ///
    /// Nothing is accepted until [`Endpoint::serve`] is called.
    pub fn bind(
        addr: SocketAddr,
        identity: TlsIdentity,
        config: TransportConfig,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        let server_transport = Arc::new(quinn_transport(
            &config,
            config.max_concurrent_bidi_streams,
        )?);
        // Peers do not open streams on connections this node dialed: their
        // requests arrive on the connections they dial themselves.
        let client_transport = Arc::new(quinn_transport(&config, 0)?);

        let server = server_config(&identity, server_transport)?;
        let client_tls = Arc::new(ClientTls::new(&identity, client_transport)?);
        let quinn = bind_quinn_endpoint(addr, &config, Some(server))
            .map_err(|source| TransportError::Bind { addr, source })?;
        let local_addr = quinn
            .local_addr()
            .map_err(|source| TransportError::Bind { addr, source })?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let cache = ConnectionCache::new(Dialer {
            quinn: quinn.clone(),
            tls: client_tls,
            connect_timeout: config.connect_timeout,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        });
        tracing::debug!(node_id = identity.node_id(), %local_addr, "bound QUIC endpoint");

        Ok(Self {
            inner: Arc::new(Inner {
                quinn,
                local_addr,
                node_id: identity.node_id().to_owned(),
                config,
                cache,
                shutdown,
                tasks,
                serving: AtomicBool::new(false),
            }),
        })
    }

    /// Returns the address the UDP socket is bound to (with the port chosen by the
    /// OS when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Returns this node's id, as named by its certificate.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Returns the number of connections open on this endpoint, the ones
    /// peers dialed and the ones this node dialed.
    pub fn open_connections(&self) -> usize {
        self.inner.quinn.open_connections()
    }

    /// Returns the configuration the endpoint was bound with.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Starts the accept loop in a background task: every stream a peer
    /// opens goes to `handler` according to its [`StreamKind`].
    ///
    /// Connections that fail the handshake (no certificate, another CA,
    /// expired, no node id) are logged at debug with the reason and dropped.
    /// The loop runs until [`Endpoint::close`].
    pub fn serve(&self, handler: Arc<dyn IncomingHandler>) -> Result<(), TransportError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(TransportError::EndpointClosed);
        }
        if self.inner.serving.swap(true, Ordering::SeqCst) {
            return Err(TransportError::AlreadyServing);
        }
        let context = AcceptContext {
            handler,
            shutdown: self.inner.shutdown.clone(),
            tasks: self.inner.tasks.clone(),
            handshake_timeout: self.inner.config.connect_timeout,
        };
        self.inner
            .tasks
            .spawn(accept_loop(self.inner.quinn.clone(), context));
        Ok(())
    }

    /// Returns the cached connection for control RPC streams to node
    /// `peer_id` at `addr`, as [`Endpoint::connection_for`] does with
    /// [`StreamKind::Rpc`].
    pub async fn connection(
        &self,
        peer_id: &str,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, TransportError> {
        self.connection_for(peer_id, addr, StreamKind::Rpc).await
    }

    /// Returns the cached connection that carries streams of `kind` to node
    /// `peer_id` at `addr`, dialing it when none is cached, the cached one
    /// has closed, or it goes to another address.
    ///
    /// Each kind has its own connection to a peer, so bulk data waiting in
    /// the bulk connection's send buffer and congestion window never holds
    /// back a control RPC on the other one. Concurrent calls for the same
    /// peer and kind share one dial. Every dial, whatever the kind, fails
    /// unless the server proves, with a certificate from the cluster CA,
    /// that it is `peer_id`.
    ///
    /// NOTE: with TLS 1.3 the client finishes its handshake before the server
    /// has checked the client certificate, so when the peer rejects this
    /// node's certificate the dial succeeds and the first stream fails with
    /// [`TransportError::ConnectionLost`] or a stream error.
    pub async fn connection_for(
        &self,
        peer_id: &str,
        addr: SocketAddr,
        kind: StreamKind,
    ) -> Result<quinn::Connection, TransportError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(TransportError::EndpointClosed);
        }
        self.inner.cache.connection(peer_id, kind, addr).await
    }

    /// Dials `addr` and accepts whichever cluster node responds, as long as
    /// its certificate comes from the cluster CA. Returns the node id that
    /// the certificate proves.
    ///
    /// For bootstrapping from seed addresses, where the node behind an
    /// address is not known yet. The connection is not cached: it lives as
    /// long as the returned handle or a stream opened on it.
    pub async fn connection_any(
        &self,
        addr: SocketAddr,
    ) -> Result<(PeerId, quinn::Connection), TransportError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(TransportError::EndpointClosed);
        }
        let (node_id, connection) = self.inner.cache.connect_any(addr).await?;
        Ok((PeerId::new(&node_id), connection))
    }

    /// Drops the cached connections to `peer_id` (of every stream kind), if
    /// any, so the next request dials again. Open streams on them keep
    /// working.
    pub fn invalidate(&self, peer_id: &str) {
        self.inner.cache.invalidate(peer_id, None, None);
    }

    /// Opens a bidirectional stream of `kind` to `peer_id`, on the cached
    /// connection for that kind (see [`Endpoint::connection_for`]), and sends
    /// the kind byte.
    ///
    /// When the cached connection turns out to be dead, it is dropped and the
    /// peer is dialed once more before the error is returned. Waiting for a
    /// free stream slot (the peer allows
    /// [`TransportConfig::max_concurrent_bidi_streams`] at once) is bounded
    /// by the connect timeout.
    pub async fn open_stream(
        &self,
        peer_id: &str,
        addr: SocketAddr,
        kind: StreamKind,
    ) -> Result<(SendStream, RecvStream), TransportError> {
        let connection = self.connection_for(peer_id, addr, kind).await?;
        let streams = match self.open_on(&connection, peer_id, kind).await {
            Err(TransportError::ConnectionLost { source, .. }) => {
                tracing::debug!(peer = peer_id, ?kind, %addr, error = %source, "cached connection lost; dialing again");
                self.inner
                    .cache
                    .invalidate(peer_id, Some(kind), Some(connection.stable_id()));
                let connection = self.connection_for(peer_id, addr, kind).await?;
                self.open_on(&connection, peer_id, kind).await?
            }
            other => other?,
        };
        Ok(streams)
    }

    async fn open_on(
        &self,
        connection: &quinn::Connection,
        peer_id: &str,
        kind: StreamKind,
    ) -> Result<(SendStream, RecvStream), TransportError> {
        let timeout = self.inner.config.connect_timeout;
        let (mut send, recv) = match tokio::time::timeout(timeout, connection.open_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(source)) => {
                return Err(TransportError::ConnectionLost {
                    peer: peer_id.to_owned(),
                    source,
                })
            }
            Err(_) => {
                return Err(TransportError::TimedOut {
                    peer: peer_id.to_owned(),
                    operation: "open stream",
                    timeout,
                })
            }
        };

        // Fails only if the stream is already closed, which the write below
        // reports.
        let _ = send.set_priority(kind.send_priority());
        match send.write_all(&[kind.to_byte()]).await {
            Ok(()) => Ok((send, recv)),
            Err(quinn::WriteError::ConnectionLost(source)) => Err(TransportError::ConnectionLost {
                peer: peer_id.to_owned(),
                source,
            }),
            Err(source) => Err(TransportError::StreamWrite { source }),
        }
    }

    /// Opens an RPC stream to `peer_id` and wraps it as a tarpc client
    /// transport for a service with request type `Req` and response type
    /// `Resp`.
    ///
    /// One stream serves one client: build the generated client on it
    /// (`EchoClient::new(Default::default(), transport).spawn()`), make the
    /// call with [`Endpoint::rpc_context`], and drop the client to finish the
    /// stream.
    pub async fn rpc_transport<Req, Resp>(
        &self,
        peer_id: &str,
        addr: SocketAddr,
    ) -> Result<ClientTransport<Req, Resp>, TransportError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let (send, recv) = self.open_stream(peer_id, addr, StreamKind::Rpc).await?;
        Ok(postcard_transport(
            send,
            recv,
            self.inner.config.max_rpc_frame_bytes,
        ))
    }

    /// Like [`Endpoint::rpc_transport`], but dials `addr` with
    /// [`Endpoint::connection_any`] and returns the node id the server
    /// proved along with the transport.
    pub async fn rpc_transport_any<Req, Resp>(
        &self,
        addr: SocketAddr,
    ) -> Result<(PeerId, ClientTransport<Req, Resp>), TransportError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let (peer, connection) = self.connection_any(addr).await?;
        let (send, recv) = self
            .open_on(&connection, peer.as_str(), StreamKind::Rpc)
            .await?;
        let transport = postcard_transport(send, recv, self.inner.config.max_rpc_frame_bytes);
        Ok((peer, transport))
    }

    /// Returns a tarpc context whose deadline is
    /// [`TransportConfig::rpc_timeout`] from now. The deadline travels with
    /// the request, and both client and server give up when it passes.
    pub fn rpc_context(&self) -> tarpc::context::Context {
        let mut context = tarpc::context::current();
        context.deadline = Instant::now() + self.inner.config.rpc_timeout;
        context
    }

    /// Stops accepting, closes every connection with an application close
    /// frame, and makes later dials fail with
    /// [`TransportError::EndpointClosed`].
    ///
    /// Streams in progress fail at their next read or write. Call
    /// [`Endpoint::wait_idle`] to wait until the handlers and the close
    /// frames are done.
    pub fn close(&self) {
        tracing::debug!(node_id = %self.inner.node_id, "closing QUIC endpoint");
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.cache.clear();
        self.inner
            .quinn
            .close(CLOSE_CODE_SHUTDOWN.into(), b"endpoint closed");
    }

    /// Waits until every task the endpoint started (accept loop, handlers,
    /// dials) has finished and every connection is fully closed. Returns only
    /// after [`Endpoint::close`].
    pub async fn wait_idle(&self) {
        self.inner.tasks.wait().await;
        self.inner.quinn.wait_idle().await;
    }
}

/// Binds a UDP socket on `addr` with the receive and send buffer sizes
/// that `config` requests.
///
/// The kernel caps both sizes at `net.core.rmem_max` and `net.core.wmem_max`.
/// A smaller buffer drops more datagrams in bursts, which costs bulk
/// throughput but nothing else, so a capped size is logged, not refused.
fn bind_udp_socket(
    addr: SocketAddr,
    config: &TransportConfig,
) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    sock.set_recv_buffer_size(config.socket_buffer_bytes)?;
    sock.set_send_buffer_size(config.socket_buffer_bytes)?;
    // Linux doubles a granted size for its bookkeeping and reports the
    // doubled value (socket(7)).
    let granted = |reported: usize| {
        if cfg!(target_os = "linux") {
            reported / 2
        } else {
            reported
        }
    };
    let receive = granted(sock.recv_buffer_size()?);
    let send = granted(sock.send_buffer_size()?);
    if receive < config.socket_buffer_bytes || send < config.socket_buffer_bytes {
        tracing::info!(
            %addr,
            requested = config.socket_buffer_bytes,
            receive,
            send,
            "the kernel granted smaller UDP buffers than requested; raise \
             net.core.rmem_max and net.core.wmem_max for faster replication"
        );
    }
    Ok(socket)
}

/// Starts a quinn endpoint on `addr` with the socket buffers of `config`,
/// accepting datagrams up to its `max_udp_payload`, and serving with
/// `server` when given.
///
/// [`Endpoint::bind`] starts its endpoint with it. The transport bench
/// uses it for a plain quinn baseline with the same datagram settings.
pub fn bind_quinn_endpoint(
    addr: SocketAddr,
    config: &TransportConfig,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = bind_udp_socket(addr, config)?;
    let mut endpoint = quinn::EndpointConfig::default();
    endpoint
        .max_udp_payload_size(config.max_udp_payload)
        .map_err(|_| std::io::Error::other("max_udp_payload must be between 1200 and 65527"))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no tokio runtime to run the QUIC endpoint on"))?;
    quinn::Endpoint::new(endpoint, server, socket, runtime)
}

/// Returns quinn's transport parameters with the datagram settings of
/// `config`: the path MTU discovery bound and the connection receive window.
pub fn datagram_transport_config(config: &TransportConfig) -> quinn::TransportConfig {
    let mut mtu_discovery = quinn::MtuDiscoveryConfig::default();
    mtu_discovery.upper_bound(config.max_udp_payload);

    let mut transport = quinn::TransportConfig::default();
    transport
        .mtu_discovery_config(Some(mtu_discovery))
        .receive_window(config.receive_window_bytes.into());
    transport
}

/// Builds quinn's transport parameters from `config`, allowing the peer
/// `peer_bidi_streams` concurrent bidirectional streams and no
/// unidirectional ones.
fn quinn_transport(
    config: &TransportConfig,
    peer_bidi_streams: u32,
) -> Result<quinn::TransportConfig, TransportError> {
    let idle_timeout = quinn::IdleTimeout::try_from(config.idle_timeout).map_err(|_| {
        TransportError::InvalidConfig {
            field: "idle_timeout",
            problem: "is too long for QUIC (at most 2^62 milliseconds)",
        }
    })?;

    let mut transport = datagram_transport_config(config);
    transport
        .max_concurrent_bidi_streams(peer_bidi_streams.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(idle_timeout))
        .keep_alive_interval(Some(config.keep_alive_interval));
    Ok(transport)
}
