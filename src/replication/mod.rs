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

use serde::{Deserialize, Serialize};

use crate::config::RepairSettings;
use crate::model::{FileId, NodeId};

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
    /// Repair copies this node is sending now.
    copies_out: Mutex<Vec<CopyProgress>>,
    /// Wakes the reconciliation worker before its next periodic run.
    reconcile_soon: tokio::sync::Notify,
}

/// The upkeep state one peer sent in its last health-check reply.
#[derive(Clone, Debug, Default)]
pub struct PeerReport {
    pub scrub: ScrubProgress,
    pub repair: Option<RepairStatus>,
    pub copies_out: Vec<CopyProgress>,
}

/// A repair copy a node is sending, reported to its peers with each
/// health-check reply so the leader can show how far it got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyProgress {
    pub file_id: FileId,
    pub to: NodeId,
    /// Bytes read from the local copy and handed to the transfer.
    pub bytes_sent: u64,
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
            copies_out: Mutex::default(),
            reconcile_soon: tokio::sync::Notify::new(),
        }
    }

    /// Asks for a reconciliation now rather than at the next period, for
    /// example because a read found a copy this node should hold missing.
    pub fn request_reconcile(&self) {
        self.reconcile_soon.notify_one();
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

    /// Returns the repair status with the progress of each active copy,
    /// from this node's own count when it sends the copy, else from the
    /// sender's last health-check reply.
    pub fn repair_with_progress(&self, own_id: &str) -> RepairStatus {
        let mut status = self.repair();
        for active in &mut status.active {
            let sent = if active.from == own_id {
                self.copies_out()
            } else {
                self.peer(&active.from)
                    .map(|report| report.copies_out)
                    .unwrap_or_default()
            };
            active.bytes_done = sent
                .iter()
                .find(|copy| copy.file_id == active.file_id && copy.to == active.to)
                .map(|copy| copy.bytes_sent);
        }
        status
    }

    fn lock_copies_out(&self) -> std::sync::MutexGuard<'_, Vec<CopyProgress>> {
        self.copies_out.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn copies_out(&self) -> Vec<CopyProgress> {
        self.lock_copies_out().clone()
    }

    /// Counts a repair copy of `file_id` to `to` as under way until the
    /// returned guard is dropped.
    pub fn start_copy_out<'a>(&'a self, file_id: &str, to: &str) -> CopyOutGuard<'a> {
        self.lock_copies_out().push(CopyProgress {
            file_id: file_id.to_string(),
            to: to.to_string(),
            bytes_sent: 0,
        });
        CopyOutGuard {
            upkeep: self,
            file_id: file_id.to_string(),
            to: to.to_string(),
        }
    }

    fn add_copied(&self, file_id: &str, to: &str, bytes: u64) {
        if let Some(copy) = self
            .lock_copies_out()
            .iter_mut()
            .find(|copy| copy.file_id == file_id && copy.to == to)
        {
            copy.bytes_sent += bytes;
        }
    }

    pub fn record_peer(
        &self,
        node_id: &str,
        scrub: ScrubProgress,
        repair: Option<RepairStatus>,
        copies_out: Vec<CopyProgress>,
    ) {
        let report = PeerReport {
            scrub,
            repair,
            copies_out,
        };
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

/// Keeps one repair copy in [`Upkeep::copies_out`] while it runs.
#[derive(Debug)]
pub struct CopyOutGuard<'a> {
    upkeep: &'a Upkeep,
    file_id: FileId,
    to: NodeId,
}

impl Drop for CopyOutGuard<'_> {
    fn drop(&mut self) {
        // Two copies of one file to one node never run at once: the
        // repair lock of the file is held for each.
        self.upkeep
            .lock_copies_out()
            .retain(|copy| !(copy.file_id == self.file_id && copy.to == self.to));
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

    fn active(file_id: &str, from: &str, to: &str) -> ActiveRepair {
        ActiveRepair {
            file_id: file_id.into(),
            from: from.into(),
            to: to.into(),
            bytes_total: 100,
            bytes_done: None,
            started_at_ms: 0,
        }
    }

    #[test]
    fn repair_progress_comes_from_the_sender() {
        let upkeep = Upkeep::new(&RepairSettings::default());
        upkeep.update_repair(|status| {
            status.active = vec![
                active("f1", "node1", "node2"),
                active("f2", "node3", "node2"),
                active("f3", "node3", "node4"),
            ]
        });
        let guard = upkeep.start_copy_out("f1", "node2");
        upkeep.add_copied("f1", "node2", 40);
        // Bytes for a copy to another node count elsewhere.
        upkeep.add_copied("f1", "node4", 7);
        let peer_copies = vec![CopyProgress {
            file_id: "f2".into(),
            to: "node2".into(),
            bytes_sent: 60,
        }];
        upkeep.record_peer("node3", ScrubProgress::default(), None, peer_copies);

        let done = |status: &RepairStatus| -> Vec<Option<u64>> {
            status.active.iter().map(|a| a.bytes_done).collect()
        };
        let status = upkeep.repair_with_progress("node1");
        assert_eq!(done(&status), [Some(40), Some(60), None]);

        drop(guard);
        assert!(upkeep.copies_out().is_empty());
        let status = upkeep.repair_with_progress("node1");
        assert_eq!(done(&status), [None, Some(60), None]);
    }

    #[test]
    fn chunk_len_of_tail() {
        assert_eq!(chunk_len(0, 10, 25), 10);
        assert_eq!(chunk_len(2, 10, 25), 5);
        assert_eq!(chunk_len(3, 10, 25), 0);
    }
}
