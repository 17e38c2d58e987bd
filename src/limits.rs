//! Named bounds that are not operator settings. Settings an operator may
//! change live in [`crate::config`]; ARCHITECTURE.md lists both.

use std::time::Duration;

/// Bulk streams used in parallel to push one blob to one replica. Several
/// streams keep a high-latency link busy; more than a few only add
/// scheduling overhead on loopback and LAN links.
pub const PUSH_STREAMS_PER_REPLICA: usize = 4;

/// Verified chunks buffered between a remote replica and an HTTP response,
/// which bounds a stream's memory to this many chunks.
pub const STREAM_BUFFER_CHUNKS: usize = 2;

/// Bytes of verified chunks that a stream through a node without a local
/// copy reads ahead of the HTTP response: 8 chunks of the default 1 MiB,
/// and at least one chunk of any size. A task of its own reads and verifies
/// them from the replica's bulk stream, so receiving and verifying overlap
/// with sending to the client. Together with [`STREAM_BUFFER_CHUNKS`], it
/// bounds the memory of one such stream.
pub const STREAM_READ_AHEAD_BYTES: u64 = 8 * 1024 * 1024;

/// How long an unfinished incoming replication may go without a chunk
/// before its staging file is deleted.
pub const RECEIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How many times a write is re-sent to a newly learned leader before the
/// client gets "no leader".
pub const MAX_FORWARD_ATTEMPTS: usize = 5;

/// Largest single Raft RPC frame. Entries carry a manifest of 32 bytes per
/// chunk plus a cover of at most a few MiB.
pub const MAX_RPC_FRAME_BYTES: usize = 16 * 1024 * 1024;
