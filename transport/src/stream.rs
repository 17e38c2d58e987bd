//! Stream kinds and peer ids.

use std::fmt;
use std::sync::Arc;

use crate::error::TransportError;

/// Send priority of RPC streams.
///
/// quinn packs data of higher-priority streams into the next packet first.
/// That orders only data already in the connection's send buffer. On a
/// connection busy with bulk data, an RPC write still waits for room in
/// that buffer and its packets for room in the congestion window, which is
/// why the endpoint caches a separate connection per stream kind. The
/// priority matters where one connection carries both kinds, as one from
/// `Endpoint::connection_any` may.
const RPC_STREAM_PRIORITY: i32 = 1;

/// Send priority of bulk streams, below [`RPC_STREAM_PRIORITY`].
const BULK_STREAM_PRIORITY: i32 = 0;

/// The kind of a bidirectional stream, sent by the opener as the stream's
/// first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamKind {
    /// One tarpc control call (postcard messages in length-delimited frames).
    Rpc,
    /// A bulk transfer: a header, then chunk frames (see [`crate::frame`]).
    Bulk,
}

impl StreamKind {
    /// Returns the byte that announces this kind on the wire. Zero is not used, so a
    /// stream that starts with a zeroed buffer is rejected.
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Rpc => 1,
            Self::Bulk => 2,
        }
    }

    /// Parses the first byte of an incoming stream.
    pub fn from_byte(kind_byte: u8) -> Result<Self, TransportError> {
        match kind_byte {
            1 => Ok(Self::Rpc),
            2 => Ok(Self::Bulk),
            _ => Err(TransportError::UnknownStreamKind { kind_byte }),
        }
    }

    pub(crate) const fn send_priority(self) -> i32 {
        match self {
            Self::Rpc => RPC_STREAM_PRIORITY,
            Self::Bulk => BULK_STREAM_PRIORITY,
        }
    }
}

/// The node id of a connected peer, taken from the certificate it presented
/// in the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(Arc<str>);

impl PeerId {
    pub(crate) fn new(node_id: &str) -> Self {
        Self(Arc::from(node_id))
    }

    /// Returns the node id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PeerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_kind_round_trips_through_byte() {
        for kind in [StreamKind::Rpc, StreamKind::Bulk] {
            assert_eq!(StreamKind::from_byte(kind.to_byte()).unwrap(), kind);
        }
    }

    #[test]
    fn unknown_stream_kind_byte_is_rejected() {
        for kind_byte in [0, 3, 0xff] {
            let err = StreamKind::from_byte(kind_byte).unwrap_err();
            assert!(
                matches!(err, TransportError::UnknownStreamKind { kind_byte: got } if got == kind_byte),
                "{err:?}"
            );
        }
    }

    #[test]
    fn rpc_streams_outrank_bulk_streams() {
        assert!(StreamKind::Rpc.send_priority() > StreamKind::Bulk.send_priority());
    }
}
