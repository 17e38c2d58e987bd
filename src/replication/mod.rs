//! The replication manager: quorum writes of uploaded blobs to their
//! replica set, the receiving side of those writes, and verified reads of
//! byte ranges from the local copy or from remote replicas with failover.
//!
//! A push to one replica is three steps: `replicate_begin` (control RPC,
//! the replica preallocates a staging file), the chunks spread over
//! [`crate::limits::PUSH_STREAMS_PER_REPLICA`] bulk QUIC streams (the replica checks each
//! chunk's BLAKE3 before writing it), and `replicate_finish` (control RPC,
//! the replica checks the whole SHA-256, fsyncs and renames, then answers).

mod copy;
mod protocol;
mod push;
mod read;
mod receive;
mod reconcile;
mod repair;
mod scrub;
mod throttle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub use copy::{copy_to, drop_replica};
pub use push::store_with_quorum;
pub use read::read_range;
pub use receive::{begin_receive, discard, finish_receive, receive_janitor, serve_bulk, Receiving};
pub use reconcile::reconcile_worker;
pub use repair::{plan_file, repair_worker, ActiveRepair, Plan, RepairStatus};
pub use scrub::{
    is_corruption, quarantine_and_report, quarantine_in_background, report_missing, scrub_worker,
    ScrubProgress,
};
pub use throttle::Throttle;

use crate::config::RepairSettings;
use crate::model::NodeId;

/// State of a node's upkeep work: scrub progress, the repair scheduler's
/// status, the rate limits they share, and whether the first
/// reconciliation has run.
#[derive(Debug)]
pub struct Upkeep {
    pub scrub_throttle: Throttle,
    pub repair_throttle: Throttle,
    scrub: Mutex<ScrubProgress>,
    repair: Mutex<RepairStatus>,
    reconciled: AtomicBool,
    /// The scrub progress and repair status each peer reported in its last
    /// health-check reply.
    peers: Mutex<HashMap<NodeId, PeerReport>>,
}

/// The upkeep state one peer sent in its last health-check reply.
#[derive(Clone, Debug, Default)]
pub struct PeerReport {
    pub scrub: ScrubProgress,
    pub repair: Option<RepairStatus>,
}

impl Upkeep {
    pub fn new(settings: &RepairSettings) -> Upkeep {
        Upkeep {
            scrub_throttle: Throttle::new(settings.scrub_bytes_per_sec),
            repair_throttle: Throttle::new(settings.bytes_per_sec),
            scrub: Mutex::default(),
            repair: Mutex::default(),
            reconciled: AtomicBool::new(false),
            peers: Mutex::default(),
        }
    }

    // Each update below is a short closure over plain counters, so a panic
    // inside one cannot leave the state half-changed in a way that matters.
    pub fn update_scrub<T>(&self, update: impl FnOnce(&mut ScrubProgress) -> T) -> T {
        update(&mut self.scrub.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn scrub(&self) -> ScrubProgress {
        self.update_scrub(|p| p.clone())
    }

    pub fn update_repair<T>(&self, update: impl FnOnce(&mut RepairStatus) -> T) -> T {
        update(&mut self.repair.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn repair(&self) -> RepairStatus {
        self.update_repair(|s| s.clone())
    }

    pub fn record_peer(&self, node_id: &str, scrub: ScrubProgress, repair: Option<RepairStatus>) {
        let report = PeerReport { scrub, repair };
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_string(), report);
    }

    /// Returns the last report of `node_id`, if it ever replied to a health
    /// check.
    pub fn peer(&self, node_id: &str) -> Option<PeerReport> {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node_id)
            .cloned()
    }

    pub fn mark_reconciled(&self) {
        self.reconciled.store(true, Ordering::Release);
    }

    pub fn is_reconciled(&self) -> bool {
        self.reconciled.load(Ordering::Acquire)
    }
}

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
