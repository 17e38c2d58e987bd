//! The replication manager: quorum writes of uploaded blobs to their
//! replica set, the receiving side of those writes, and verified reads of
//! byte ranges from the local copy or from remote replicas with failover.
//!
//! A push to one replica is three steps: `replicate_begin` (control RPC,
//! the replica preallocates a staging file), the chunks spread over
//! [`crate::limits::PUSH_STREAMS_PER_REPLICA`] bulk QUIC streams (the replica checks each
//! chunk's BLAKE3 before writing it), and `replicate_finish` (control RPC,
//! the replica checks the whole SHA-256, fsyncs and renames, then answers).

mod protocol;
mod push;
mod read;
mod receive;

pub use push::store_with_quorum;
pub use read::read_range;
pub use receive::{begin_receive, discard, finish_receive, receive_janitor, serve_bulk, Receiving};

/// Byte range `[from, to)` within chunk `index` that a request for bytes
/// `start..=end_inclusive` of a blob needs.
pub(crate) fn chunk_slice(
    index: u64,
    chunk_size: u64,
    chunk_len: u64,
    start: u64,
    end_inclusive: u64,
) -> (usize, usize) {
    let chunk_start = index * chunk_size;
    let from = start.saturating_sub(chunk_start).min(chunk_len);
    let to = (end_inclusive + 1)
        .saturating_sub(chunk_start)
        .min(chunk_len);
    (from as usize, to as usize)
}

/// Length of chunk `index` of a blob of `size_bytes`.
pub(crate) fn chunk_len(index: u64, chunk_size: u64, size_bytes: u64) -> u64 {
    size_bytes
        .saturating_sub(index * chunk_size)
        .min(chunk_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_of_middle_chunk_is_whole() {
        assert_eq!(chunk_slice(1, 10, 10, 5, 25), (0, 10));
    }

    #[test]
    fn slice_trims_first_and_last_chunk() {
        assert_eq!(chunk_slice(0, 10, 10, 5, 25), (5, 10));
        assert_eq!(chunk_slice(2, 10, 10, 5, 25), (0, 6));
        assert_eq!(chunk_slice(0, 10, 10, 0, 1), (0, 2));
    }

    #[test]
    fn chunk_len_of_tail() {
        assert_eq!(chunk_len(0, 10, 25), 10);
        assert_eq!(chunk_len(2, 10, 25), 5);
        assert_eq!(chunk_len(3, 10, 25), 0);
    }
}
