//! The error type of every fallible operation in this crate.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dispotify_certs::CertError;

/// A failure of the node-to-node transport.
///
/// Fields name the peer (its node id) and its address wherever the failing
/// operation knew them. Frame and codec errors come from stream helpers that
/// see only the stream, so they carry no peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Reading or parsing the local certificate, key or CA file failed.
    #[error("failed to load TLS identity from {}: {source}", certs_dir.display())]
    LoadIdentity {
        certs_dir: PathBuf,
        source: CertError,
    },

    /// The local certificate belongs to another node than the one configured.
    #[error(
        "certificate {} is issued to node {presented:?}, but this node is configured as \
         {expected:?}; issue a certificate for {expected:?} or fix the node id",
        path.display()
    )]
    LocalIdentityMismatch {
        path: PathBuf,
        expected: String,
        presented: String,
    },

    /// rustls or quinn rejected the local certificate, key or CA while
    /// building the TLS configuration.
    #[error("invalid TLS configuration: failed to build {component}: {source}")]
    TlsConfig {
        component: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A [`TransportConfig`](crate::TransportConfig) field is out of range.
    #[error("invalid transport configuration: {field} {problem}")]
    InvalidConfig {
        field: &'static str,
        problem: &'static str,
    },

    /// The UDP socket could not be bound.
    #[error("failed to bind QUIC endpoint on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },

    /// [`Endpoint::serve`](crate::Endpoint::serve) was called a second time.
    #[error("the endpoint already runs an accept loop")]
    AlreadyServing,

    /// The endpoint was closed, so it neither dials nor accepts.
    #[error("the endpoint is closed")]
    EndpointClosed,

    /// quinn refused to start a connection (for example an unusable remote
    /// address), before any packet was sent.
    #[error("failed to start connection to peer {peer} at {addr}: {source}")]
    DialRejected {
        peer: String,
        addr: SocketAddr,
        source: quinn::ConnectError,
    },

    /// The QUIC handshake with the peer did not complete.
    #[error("failed to connect to peer {peer} at {addr}: {source}")]
    ConnectFailed {
        peer: String,
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },

    /// An operation did not complete within its timeout.
    #[error("{operation} with peer {peer} timed out after {timeout:?}")]
    TimedOut {
        peer: String,
        operation: &'static str,
        timeout: Duration,
    },

    /// The peer presented a valid cluster certificate for another node id.
    #[error(
        "peer at {addr} presented a certificate for node {presented:?}, expected node \
         {expected:?}; check the address configured for {expected:?}"
    )]
    PeerIdentityMismatch {
        addr: SocketAddr,
        expected: String,
        presented: String,
    },

    /// The peer's certificate failed verification (unknown CA, expired, no
    /// node id) during the TLS handshake.
    #[error("TLS handshake with peer {peer} at {addr} failed: {source}")]
    Tls {
        peer: String,
        addr: SocketAddr,
        source: rustls::Error,
    },

    /// An established connection was closed or lost.
    #[error("connection to peer {peer} lost: {source}")]
    ConnectionLost {
        peer: String,
        source: quinn::ConnectionError,
    },

    /// Writing to a stream failed.
    #[error("failed to write to stream: {source}")]
    StreamWrite { source: quinn::WriteError },

    /// Reading from a stream failed.
    #[error("failed to read from stream: {source}")]
    StreamRead { source: quinn::ReadError },

    /// The peer finished its side of the stream in the middle of a message.
    #[error("stream closed by peer in the middle of {context} after {received_bytes} bytes")]
    StreamClosed {
        context: &'static str,
        received_bytes: usize,
    },

    /// A frame's length prefix exceeds the limit the reader accepts.
    #[error("frame of {length_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    FrameTooLarge { length_bytes: u64, max_bytes: usize },

    /// A message could not be encoded or decoded with postcard.
    #[error("failed to {direction} {message_type} with postcard: {source}")]
    Codec {
        direction: CodecDirection,
        message_type: &'static str,
        source: postcard::Error,
    },

    /// The first byte of an incoming stream names no known stream kind.
    #[error("unknown stream kind byte {kind_byte:#04x}")]
    UnknownStreamKind { kind_byte: u8 },
}

/// Whether a codec error happened while encoding or decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecDirection {
    Encode,
    Decode,
}

impl std::fmt::Display for CodecDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encode => f.write_str("encode"),
            Self::Decode => f.write_str("decode"),
        }
    }
}

impl TransportError {
    pub(crate) fn read_exact(error: quinn::ReadExactError, context: &'static str) -> Self {
        match error {
            quinn::ReadExactError::FinishedEarly(received_bytes) => Self::StreamClosed {
                context,
                received_bytes,
            },
            quinn::ReadExactError::ReadError(source) => Self::StreamRead { source },
        }
    }
}
