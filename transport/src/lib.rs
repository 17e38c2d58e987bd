//! Mutually authenticated QUIC transport between Dispotify nodes.
//!
//! Every node runs one [`Endpoint`]: a quinn endpoint on one UDP socket
//! that both accepts connections from peers and dials them. The crate does
//! not interpret what the node sends. It provides authenticated
//! connections, typed streams, tarpc over those streams, bulk framing and
//! retries.
//!
//! # Identity
//!
//! A node's identity is its certificate, issued by the cluster CA with the
//! node id in a `spiffe://dispotify/node/<id>` URI SAN ([`TlsIdentity`]).
//! Connections use TLS 1.3 only, with ALPN [`ALPN_PROTOCOL`], and both
//! sides present certificates:
//!
//! - the accepting side requires a client certificate that chains to the
//!   cluster CA, and takes the peer's node id ([`PeerId`]) from it, never
//!   from a message;
//! - the dialing side checks the server's chain and validity period against
//!   the CA and requires the certificate's node id to equal the node it
//!   dialed, so a dial to node X fails unless the peer proves it is X.
//!
//! # Streams
//!
//! Two connections per peer are cached and shared, one for each
//! [`StreamKind`] ([`Endpoint::connection_for`]). Each has its own
//! congestion controller, flow-control windows and send buffer, so bulk
//! data waiting to be sent never holds back a control RPC to the same peer
//! (the two still share the UDP socket and the CPU). Both are dialed and
//! authenticated the same way, and the accepting side serves both kinds of
//! streams on any connection. Every bidirectional stream starts with one
//! byte naming its kind:
//!
//! ```text
//! Rpc:  0x01 | length-delimited postcard frames of one tarpc exchange
//! Bulk: 0x02 | u32 length | postcard header | chunk frames ... | FIN
//! ```
//!
//! Each control RPC call opens its own stream ([`Endpoint::rpc_transport`],
//! [`serve_tarpc_stream`]), so calls never wait behind one another. RPC
//! streams are also sent at a higher priority than bulk streams, which
//! orders them on a connection that carries both kinds, such as one from
//! [`Endpoint::connection_any`]. Bulk streams carry chunked transfers with
//! the helpers in [`frame`].
//!
//! NOTE: both connections to a peer share the endpoint's UDP socket. Under
//! bulk load its receive buffer can overflow, and a control packet dropped
//! there is sent again only after quinn's probe timeout: the round-trip
//! time plus the peer's maximum ACK delay, 25 ms in quinn 0.11.
//!
//! # Failures
//!
//! Every operation has a timeout from [`TransportConfig`]. [`retry`]
//! repeats operations whose error is [`Transient`], with capped exponential
//! backoff and full jitter. Errors are [`TransportError`].

mod cache;
mod config;
mod endpoint;
mod error;
pub mod frame;
mod identity;
mod incoming;
mod retry;
pub mod rpc;
mod stream;
mod tls;

pub use config::*;
pub use endpoint::{bind_quinn_endpoint, datagram_transport_config, Endpoint};
pub use error::{CodecDirection, TransportError};
pub use frame::{read_chunk_frame, read_header, write_chunk_frame, write_header};
pub use identity::TlsIdentity;
pub use incoming::{IncomingHandler, MAX_CONCURRENT_HANDSHAKES};
pub use retry::*;
pub use rpc::{postcard_transport, serve_tarpc_stream};
pub use stream::{PeerId, StreamKind};
pub use tls::ALPN_PROTOCOL;

/// The future type [`IncomingHandler`] methods return.
pub use futures::future::BoxFuture;
