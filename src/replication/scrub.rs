//! Scrub: every node re-reads and verifies its own blobs at a bounded rate,
//! and a copy found corrupt, whether by scrub or by a read, is quarantined
//! and reported through Raft so the leader repairs it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blob::{BlobError, Quarantine};
use crate::model::{Command, Manifest, ReplicaFault};
use crate::node::{self, Node};

/// How often a scrub worker checks whether its node is ready to start.
const READY_POLL: Duration = Duration::from_secs(1);

/// Progress of this node's scrub, shown in `/cluster/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubProgress {
    /// Passes started since the node started.
    pub pass: u64,
    /// Blobs verified in the current pass.
    pub files_checked: u64,
    /// Blobs on disk when the current pass started.
    pub files_total: u64,
    pub bytes_checked: u64,
    /// Corrupt or unreadable copies found since the node started.
    pub errors_found: u64,
    pub last_pass_completed_at_ms: Option<i64>,
}

/// Runs scrub passes until shutdown, pausing between passes.
pub async fn scrub_worker(node: Arc<Node>) {
    loop {
        while !node::is_ready(&node) {
            tokio::select! {
                _ = node.shutdown.cancelled() => return,
                _ = tokio::time::sleep(READY_POLL) => {}
            }
        }
        run_pass(&node).await;
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(node.config.repair.scrub_pass_interval) => {}
        }
    }
}

async fn run_pass(node: &Arc<Node>) {
    let inventory = match node.blobs.inventory().await {
        Ok(inventory) => inventory,
        Err(error) => {
            tracing::error!(node_id = %node.config.id, %error, "scrub cannot list blobs");
            return;
        }
    };
    let pass = node.upkeep.update_scrub(|p| {
        p.pass += 1;
        p.files_checked = 0;
        p.bytes_checked = 0;
        p.files_total = inventory.len() as u64;
        p.pass
    });
    tracing::debug!(node_id = %node.config.id, pass, files = inventory.len(), "scrub pass started");

    for file_id in inventory {
        if node.shutdown.is_cancelled() {
            return;
        }
        // A blob the catalog does not know is an orphan, left to
        // reconciliation; it is never served.
        let manifest = match node.catalog.manifest(&file_id).await {
            Ok(Some(manifest)) => manifest,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(node_id = %node.config.id, file_id = %file_id, %error, "scrub cannot read manifest");
                continue;
            }
        };
        match verify_blob(node, &file_id, &manifest).await {
            Ok(()) => {}
            Err(BlobError::NotFound { .. }) => {}
            Err(error) if is_corruption(&error) => {
                tracing::warn!(node_id = %node.config.id, file_id = %file_id, %error, "scrub found a corrupt copy");
                node.metrics.scrub_errors.inc();
                node.upkeep.update_scrub(|p| p.errors_found += 1);
                quarantine_and_report(node, &file_id, &manifest).await;
            }
            Err(error) => {
                tracing::warn!(node_id = %node.config.id, file_id = %file_id, %error, "scrub cannot read blob");
            }
        }
        node.metrics.scrub_files.inc();
        node.metrics.scrub_bytes.inc_by(manifest.size_bytes);
        node.upkeep.update_scrub(|p| {
            p.files_checked += 1;
            p.bytes_checked += manifest.size_bytes;
        });
    }
    node.upkeep
        .update_scrub(|p| p.last_pass_completed_at_ms = Some(node::now_ms()));
    tracing::info!(node_id = %node.config.id, pass, "scrub pass completed");
}

/// Tells whether a read error means the copy on disk is bad, as opposed to
/// an I/O failure that may pass.
pub fn is_corruption(error: &BlobError) -> bool {
    matches!(
        error,
        BlobError::Corrupt { .. }
            | BlobError::ChunkHashMismatch { .. }
            | BlobError::ChunkLengthMismatch { .. }
            | BlobError::SizeMismatch { .. }
            | BlobError::ContentMismatch { .. }
    )
}

/// Verifies the size, every chunk and the SHA-256 of one local blob, at
/// the scrub rate.
async fn verify_blob(node: &Node, file_id: &str, manifest: &Manifest) -> Result<(), BlobError> {
    let actual_bytes = node.blobs.size_bytes(file_id).await?;
    if actual_bytes != manifest.size_bytes {
        return Err(BlobError::SizeMismatch {
            file_id: file_id.to_string(),
            expected_bytes: manifest.size_bytes,
            actual_bytes,
        });
    }
    let mut sha256 = Sha256::new();
    for index in 0..manifest.chunk_hashes.len() {
        let chunk_bytes = super::chunk_len(
            index as u64,
            u64::from(manifest.chunk_size),
            manifest.size_bytes,
        );
        node.upkeep.scrub_throttle.take(chunk_bytes).await;
        let chunk = node
            .blobs
            .read_chunk(file_id, manifest, index as u32)
            .await?;
        sha256.update(&chunk);
    }
    let digest: [u8; 32] = sha256.finalize().into();
    if digest != manifest.sha256 {
        return Err(BlobError::ContentMismatch {
            file_id: file_id.to_string(),
            actual_sha256: hex::encode(digest),
        });
    }
    Ok(())
}

/// Attempts at reporting a replica fault before the report is left to
/// reconciliation: a few seconds of retries cover a leader election.
const FAULT_REPORT_ATTEMPTS: u32 = 4;

/// Pause before the first retry of a fault report, doubled before each
/// further one.
const FAULT_REPORT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Verifies this node's copy of `file_id` again and, if it is damaged,
/// moves it to quarantine and reports the fault through Raft, so the
/// leader re-creates a good copy. A copy that passes, or that a repair
/// replaced meanwhile, stays in service and is not reported.
pub async fn quarantine_and_report(node: &Arc<Node>, file_id: &str, manifest: &Manifest) {
    match node.blobs.quarantine(file_id, manifest).await {
        Ok(Quarantine::Moved) => {
            node.metrics.corrupt_copies.inc();
            report_fault(node, file_id, ReplicaFault::Corrupt).await;
        }
        Ok(Quarantine::Intact) => {
            tracing::info!(node_id = %node.config.id, file_id, "copy passed verification again; kept in service");
        }
        Ok(Quarantine::Replaced) => {
            tracing::debug!(node_id = %node.config.id, file_id, "corrupt copy was replaced before its quarantine");
        }
        // Another reader found the same corruption first and reports it.
        Ok(Quarantine::NotFound) => {}
        Err(error) => {
            tracing::error!(node_id = %node.config.id, file_id, %error, "cannot quarantine corrupt blob");
            report_fault(node, file_id, ReplicaFault::Corrupt).await;
        }
    }
}

/// Reports through Raft that this node has no copy of `file_id` although
/// the committed replica set lists it.
pub async fn report_missing(node: &Arc<Node>, file_id: &str) {
    report_fault(node, file_id, ReplicaFault::Missing).await;
}

async fn report_fault(node: &Arc<Node>, file_id: &str, fault: ReplicaFault) {
    let mut delay = FAULT_REPORT_RETRY_DELAY;
    for attempt in 1..=FAULT_REPORT_ATTEMPTS {
        let command = Command::ReportReplicaFault {
            file_id: file_id.to_string(),
            node_id: node.config.id.clone(),
            fault,
        };
        match node::write(node, command).await {
            Ok(_) => {
                tracing::warn!(node_id = %node.config.id, file_id, fault = fault.label(), "reported replica fault");
                return;
            }
            Err(error) if attempt < FAULT_REPORT_ATTEMPTS => {
                tracing::warn!(node_id = %node.config.id, file_id, attempt, retry_in = ?delay, %error, "cannot report replica fault; retrying");
            }
            Err(error) => {
                tracing::warn!(node_id = %node.config.id, file_id, attempt, %error, "cannot report replica fault; reconciliation fetches the copy again or reports it later");
                return;
            }
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay *= 2;
    }
}

/// Starts [`quarantine_and_report`] for a copy a read found corrupt, without
/// making the reader wait for the verification and the Raft write.
pub fn quarantine_in_background(node: &Arc<Node>, file_id: &str, manifest: &Manifest) {
    let node = node.clone();
    let file_id = file_id.to_string();
    let manifest = manifest.clone();
    tokio::spawn(async move {
        quarantine_and_report(&node, &file_id, &manifest).await;
    });
}
