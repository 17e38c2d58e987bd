//! Scrub: every node re-reads and verifies its own blobs at a bounded rate,
//! and a copy found corrupt, whether by scrub or by a read, is quarantined
//! and reported through Raft so the leader repairs it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blob::BlobError;
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
                quarantine_and_report(node, &file_id, ReplicaFault::Corrupt).await;
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

/// Takes this node's copy of `file_id` out of service and reports the
/// fault through Raft, so the leader re-creates a good copy. A copy found
/// corrupt is moved to quarantine; a missing one has nothing to move.
pub async fn quarantine_and_report(node: &Arc<Node>, file_id: &str, fault: ReplicaFault) {
    if fault == ReplicaFault::Corrupt {
        match node.blobs.quarantine(file_id).await {
            Ok(true) => {
                node.metrics.corrupt_copies.inc();
            }
            // Another reader found the same corruption first and reports it.
            Ok(false) => return,
            Err(error) => {
                tracing::error!(node_id = %node.config.id, file_id, %error, "cannot quarantine corrupt blob");
            }
        }
    }
    let command = Command::ReportReplicaFault {
        file_id: file_id.to_string(),
        node_id: node.config.id.clone(),
        fault,
    };
    match node::write(node, command).await {
        Ok(_) => {
            tracing::warn!(node_id = %node.config.id, file_id, fault = fault.label(), "reported replica fault")
        }
        Err(error) => {
            tracing::warn!(node_id = %node.config.id, file_id, %error, "cannot report replica fault; the next scrub or reconcile retries")
        }
    }
}

/// Starts [`quarantine_and_report`] for a copy a read found corrupt, without
/// making the reader wait for the Raft write.
pub fn quarantine_in_background(node: &Arc<Node>, file_id: &str) {
    let node = node.clone();
    let file_id = file_id.to_string();
    tokio::spawn(async move {
        quarantine_and_report(&node, &file_id, ReplicaFault::Corrupt).await;
    });
}
