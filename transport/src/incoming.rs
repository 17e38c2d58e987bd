//! The accept loop: incoming connections, their streams, and dispatch by
//! stream kind to an [`IncomingHandler`].
//!
//! Task layout, all tracked by the endpoint so shutdown can wait for them:
//!
//! ```text
//! accept loop ── one task per incoming connection (handshake, then accept_bi loop)
//!                    └── one task per accepted stream (read kind byte, call handler)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use quinn::{RecvStream, SendStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::stream::{PeerId, StreamKind};
use crate::tls::peer_node_id;

/// Incoming handshakes in progress at once; connections beyond it are
/// refused.
///
/// A handshake costs a signature and a certificate chain check. The bound
/// keeps a burst of connection attempts from taking all CPU, and it still
/// lets every node of a large cluster reconnect at once.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 64;

/// Application close code for an accepted connection whose certificate
/// carries no readable node id.
const CLOSE_CODE_NO_NODE_ID: u32 = 2;

/// Stream error code sent when a stream's first byte names no known kind.
const STREAM_CODE_UNKNOWN_KIND: u32 = 1;

/// Receives the streams that peers open to this node.
///
/// Each method runs in its own task, inside a tracing span with the peer's
/// node id (`peer`) and address (`remote_addr`). The peer id comes from the
/// certificate the peer presented, never from anything it sent. The stream
/// kind byte has been read already.
pub trait IncomingHandler: Send + Sync + 'static {
    /// Handles one control RPC stream, typically with
    /// [`serve_tarpc_stream`](crate::serve_tarpc_stream).
    fn rpc<'a>(&'a self, peer: PeerId, send: SendStream, recv: RecvStream) -> BoxFuture<'a, ()>;

    /// Handles one bulk stream, typically with the helpers of
    /// [`crate::frame`].
    fn bulk<'a>(&'a self, peer: PeerId, send: SendStream, recv: RecvStream) -> BoxFuture<'a, ()>;
}

/// What the accept loop and its tasks share.
#[derive(Clone)]
pub(crate) struct AcceptContext {
    pub(crate) handler: Arc<dyn IncomingHandler>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// Time allowed for an incoming handshake and for a new stream's kind
    /// byte to arrive.
    pub(crate) handshake_timeout: Duration,
}

/// Accepts connections until `quinn` closes or shutdown is requested.
pub(crate) async fn accept_loop(quinn: quinn::Endpoint, context: AcceptContext) {
    let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    tracing::debug!(local_addr = ?quinn.local_addr().ok(), "accept loop started");
    loop {
        let incoming = tokio::select! {
            biased;
            _ = context.shutdown.cancelled() => break,
            incoming = quinn.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };

        let remote_addr = incoming.remote_address();
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(
                %remote_addr,
                limit = MAX_CONCURRENT_HANDSHAKES,
                "refusing connection: too many handshakes in progress"
            );
            incoming.refuse();
            continue;
        };
        context
            .tasks
            .spawn(handle_incoming(incoming, permit, context.clone()));
    }
    tracing::debug!("accept loop stopped");
}

/// Completes the handshake of one incoming connection and serves its
/// streams.
async fn handle_incoming(
    incoming: quinn::Incoming,
    permit: OwnedSemaphorePermit,
    context: AcceptContext,
) {
    let remote_addr = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            tracing::debug!(%remote_addr, %error, "failed to accept incoming connection");
            return;
        }
    };
    let connection = match tokio::time::timeout(context.handshake_timeout, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%remote_addr, %error, "rejected incoming connection: handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(
                %remote_addr,
                timeout = ?context.handshake_timeout,
                "rejected incoming connection: handshake timed out"
            );
            return;
        }
    };
    drop(permit);

    let Some(node_id) = peer_node_id(&connection) else {
        tracing::debug!(%remote_addr, "rejected incoming connection: no node id in certificate");
        connection.close(CLOSE_CODE_NO_NODE_ID.into(), b"no node id in certificate");
        return;
    };
    let peer = PeerId::new(&node_id);
    let span = tracing::debug_span!("peer_connection", %peer, %remote_addr);
    serve_connection(connection, peer, remote_addr, context)
        .instrument(span)
        .await;
}

/// Accepts streams on one connection until it closes or shutdown is
/// requested.
async fn serve_connection(
    connection: quinn::Connection,
    peer: PeerId,
    remote_addr: SocketAddr,
    context: AcceptContext,
) {
    tracing::debug!("accepted connection");
    loop {
        let (send, recv) = tokio::select! {
            biased;
            _ = context.shutdown.cancelled() => break,
            accepted = connection.accept_bi() => match accepted {
                Ok(streams) => streams,
                Err(error) => {
                    tracing::debug!(%error, "connection closed");
                    break;
                }
            },
        };

        let span =
            tracing::debug_span!("incoming_stream", %peer, %remote_addr, stream_id = %send.id());
        context.tasks.spawn(
            dispatch_stream(
                peer.clone(),
                send,
                recv,
                context.handler.clone(),
                context.handshake_timeout,
            )
            .instrument(span),
        );
    }
}

/// Reads the stream kind byte and hands the stream to the handler.
async fn dispatch_stream(
    peer: PeerId,
    mut send: SendStream,
    mut recv: RecvStream,
    handler: Arc<dyn IncomingHandler>,
    kind_timeout: Duration,
) {
    let mut kind_byte = [0u8; 1];
    match tokio::time::timeout(kind_timeout, recv.read_exact(&mut kind_byte)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, "failed to read stream kind");
            return;
        }
        Err(_) => {
            tracing::debug!(timeout = ?kind_timeout, "timed out waiting for stream kind");
            let _ = recv.stop(STREAM_CODE_UNKNOWN_KIND.into());
            let _ = send.reset(STREAM_CODE_UNKNOWN_KIND.into());
            return;
        }
    }

    let kind = match StreamKind::from_byte(kind_byte[0]) {
        Ok(kind) => kind,
        Err(error) => {
            tracing::debug!(%error, "rejecting stream");
            // Either call fails only if the stream is already closed, which
            // is the outcome wanted here.
            let _ = recv.stop(STREAM_CODE_UNKNOWN_KIND.into());
            let _ = send.reset(STREAM_CODE_UNKNOWN_KIND.into());
            return;
        }
    };
    // Fails only if the stream is already closed, and then the handler's
    // first write reports it.
    let _ = send.set_priority(kind.send_priority());

    match kind {
        StreamKind::Rpc => handler.rpc(peer, send, recv).await,
        StreamKind::Bulk => handler.bulk(peer, send, recv).await,
    }
}
