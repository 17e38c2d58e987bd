//! Timeouts and limits of an [`Endpoint`](crate::Endpoint).

use std::time::Duration;

use crate::error::TransportError;
use crate::retry::RetryPolicy;

/// Default time allowed for a QUIC handshake, TLS included.
///
/// A handshake takes one or two round trips. Five seconds covers a loaded
/// peer or a lossy path, and still releases callers soon when a node is down.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time without any packet from the peer after which a connection is
/// closed as dead.
///
/// Keep-alives keep healthy connections busy, so this is how long a silent
/// peer (crashed, partitioned) goes unnoticed by the connection cache.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default interval between QUIC keep-alive packets on an otherwise idle
/// connection.
///
/// Five keep-alives fit in [`DEFAULT_IDLE_TIMEOUT`], so a few lost packets do
/// not close a healthy connection.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// Default deadline of one control RPC, sent to the server in the tarpc
/// context so both sides give up at the same time.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Default number of bidirectional streams a peer may have open at once on
/// one connection.
///
/// Every control RPC call and every bulk transfer takes one stream, so this
/// caps concurrent calls per peer and the per-stream state a peer can make
/// this node hold.
pub const DEFAULT_MAX_CONCURRENT_BIDI_STREAMS: u32 = 256;

/// Default maximum size of one postcard-encoded RPC message.
///
/// Bulk data travels on bulk streams, so control messages (Raft entries,
/// membership, placement) stay far below this. The cap bounds the buffer a
/// peer can make this node allocate for one frame.
pub const DEFAULT_MAX_RPC_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Default upper bound of the UDP payload that path MTU discovery may reach,
/// which is also the largest payload this endpoint accepts from a peer.
///
/// Discovery starts at 1200 bytes and probes upward, so on a 1500-byte
/// Ethernet path or a Swarm overlay it settles below 1500 whatever the
/// bound. On loopback or jumbo frames it lets a connection send fewer,
/// larger packets. quinn spends a fixed amount of user-space work on each
/// packet (header, encryption call, acknowledgement), so bulk throughput
/// grows with the packet size: see the transport section of
/// docs/benchmarks.md.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 4096;

/// Default size requested for the UDP socket's receive and send buffers.
///
/// A burst of large datagrams overflows the kernel's default buffer (about
/// 208 KiB) and is dropped before quinn reads it. Each peer connection has
/// at most [`DEFAULT_RECEIVE_WINDOW_BYTES`] in flight, so this size has
/// room for the windows of a few peers sending at once.
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Default number of bytes a peer may have in flight on one connection
/// before this endpoint has read them (the QUIC connection flow-control
/// window).
///
/// quinn's default is unlimited, so a bulk transfer fills the socket buffer,
/// packets are dropped, and a Raft heartbeat on another connection waits
/// behind the queue. In the transport bench this window took the ping p99
/// under 8 bulk streams from 5 to 19 ms down to about 2 ms, with no packet
/// lost. A connection moves at most one window per round trip: 2 MiB at a
/// 10 ms round trip is 200 MiB/s, so links with a longer round trip need a
/// larger window.
pub const DEFAULT_RECEIVE_WINDOW_BYTES: u32 = 2 * 1024 * 1024;

/// Smallest UDP payload QUIC allows (RFC 9000, section 14).
const MIN_UDP_PAYLOAD: u16 = 1200;

/// Largest `max_udp_payload` accepted.
///
/// quinn 0.11 hands the kernel up to 10 datagrams in one segmentation
/// offload (GSO) call, and a UDP send is limited to 64 KiB. In the transport
/// bench, bounds of 8952 to 65507 bytes lost packets once discovery reached
/// them, and quinn declared a black hole and fell back to 1200-byte packets.
const MAX_UDP_PAYLOAD: u16 = 6500;

/// Largest frame a 4-byte length prefix can describe.
const MAX_ENCODABLE_FRAME_BYTES: usize = u32::MAX as usize;

/// Timeouts, limits and retry policy of an endpoint.
///
/// Every field has a named default; [`TransportConfig::default`] uses them
/// all. [`TransportConfig::validate`] runs when an endpoint is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Time allowed for a QUIC handshake (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Silence after which a connection is closed (default [`DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// Interval between keep-alive packets (default [`DEFAULT_KEEP_ALIVE_INTERVAL`]).
    pub keep_alive_interval: Duration,
    /// Deadline of one control RPC (default [`DEFAULT_RPC_TIMEOUT`]).
    pub rpc_timeout: Duration,
    /// Streams a peer may open at once on one connection (default
    /// [`DEFAULT_MAX_CONCURRENT_BIDI_STREAMS`]).
    pub max_concurrent_bidi_streams: u32,
    /// Maximum size of one RPC message in bytes (default
    /// [`DEFAULT_MAX_RPC_FRAME_BYTES`]).
    pub max_rpc_frame_bytes: usize,
    /// Upper bound of path MTU discovery and largest UDP payload accepted,
    /// in bytes (default [`DEFAULT_MAX_UDP_PAYLOAD`]).
    pub max_udp_payload: u16,
    /// Receive and send buffer size requested for the UDP socket, in bytes
    /// (default [`DEFAULT_SOCKET_BUFFER_BYTES`]).
    pub socket_buffer_bytes: usize,
    /// Bytes a peer may have in flight on one connection (default
    /// [`DEFAULT_RECEIVE_WINDOW_BYTES`]).
    pub receive_window_bytes: u32,
    /// Retry policy for callers that use [`crate::retry`] (default
    /// [`RetryPolicy::default`]).
    pub retry: RetryPolicy,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            max_concurrent_bidi_streams: DEFAULT_MAX_CONCURRENT_BIDI_STREAMS,
            max_rpc_frame_bytes: DEFAULT_MAX_RPC_FRAME_BYTES,
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            socket_buffer_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
            receive_window_bytes: DEFAULT_RECEIVE_WINDOW_BYTES,
            retry: RetryPolicy::default(),
        }
    }
}

impl TransportConfig {
    /// Returns a configuration with timeouts of a second or two, for tests
    /// and local clusters where waiting out the defaults would only slow
    /// failure detection.
    pub fn short_timeouts() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            keep_alive_interval: Duration::from_millis(500),
            rpc_timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
            },
            ..Self::default()
        }
    }

    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<(), TransportError> {
        let invalid = |field, problem| Err(TransportError::InvalidConfig { field, problem });

        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be greater than zero");
        }
        if self.idle_timeout.is_zero() {
            return invalid("idle_timeout", "must be greater than zero");
        }
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval >= self.idle_timeout {
            return invalid(
                "keep_alive_interval",
                "must be greater than zero and shorter than idle_timeout",
            );
        }
        if self.rpc_timeout.is_zero() {
            return invalid("rpc_timeout", "must be greater than zero");
        }
        if self.max_concurrent_bidi_streams == 0 {
            return invalid("max_concurrent_bidi_streams", "must be at least 1");
        }
        if self.max_rpc_frame_bytes == 0 || self.max_rpc_frame_bytes > MAX_ENCODABLE_FRAME_BYTES {
            return invalid(
                "max_rpc_frame_bytes",
                "must be between 1 and 4294967295 (a 4-byte length prefix)",
            );
        }
        if !(MIN_UDP_PAYLOAD..=MAX_UDP_PAYLOAD).contains(&self.max_udp_payload) {
            return invalid(
                "max_udp_payload",
                "must be between 1200 (the QUIC minimum) and 6500 (10 datagrams per 64 KiB offload batch)",
            );
        }
        if self.socket_buffer_bytes == 0 {
            return invalid("socket_buffer_bytes", "must be greater than zero");
        }
        if self.receive_window_bytes == 0 {
            return invalid("receive_window_bytes", "must be greater than zero");
        }
        self.retry.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(TransportConfig::default().validate().is_ok());
        assert!(TransportConfig::short_timeouts().validate().is_ok());
    }

    #[test]
    fn keep_alive_must_be_shorter_than_idle_timeout() {
        let config = TransportConfig {
            keep_alive_interval: DEFAULT_IDLE_TIMEOUT,
            ..TransportConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::InvalidConfig {
                    field: "keep_alive_interval",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn out_of_range_limits_are_rejected() {
        let cases = [
            (
                "connect_timeout",
                TransportConfig {
                    connect_timeout: Duration::ZERO,
                    ..TransportConfig::default()
                },
            ),
            (
                "rpc_timeout",
                TransportConfig {
                    rpc_timeout: Duration::ZERO,
                    ..TransportConfig::default()
                },
            ),
            (
                "max_concurrent_bidi_streams",
                TransportConfig {
                    max_concurrent_bidi_streams: 0,
                    ..TransportConfig::default()
                },
            ),
            (
                "max_rpc_frame_bytes",
                TransportConfig {
                    max_rpc_frame_bytes: 0,
                    ..TransportConfig::default()
                },
            ),
            (
                "max_udp_payload",
                TransportConfig {
                    max_udp_payload: 1199,
                    ..TransportConfig::default()
                },
            ),
            (
                "max_udp_payload",
                TransportConfig {
                    max_udp_payload: 6501,
                    ..TransportConfig::default()
                },
            ),
            (
                "socket_buffer_bytes",
                TransportConfig {
                    socket_buffer_bytes: 0,
                    ..TransportConfig::default()
                },
            ),
            (
                "receive_window_bytes",
                TransportConfig {
                    receive_window_bytes: 0,
                    ..TransportConfig::default()
                },
            ),
        ];
        for (expected_field, config) in cases {
            match config.validate() {
                Err(TransportError::InvalidConfig { field, .. }) => {
                    assert_eq!(field, expected_field)
                }
                other => panic!("{expected_field}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
}
