//! Reconciliation of this node's blobs with the committed state, when the
//! node starts (before it reports ready) and periodically after: a file the
//! catalog assigns to this node but missing on disk is fetched from another
//! replica, or reported missing when no replica can send it; a blob no
//! committed track assigns to this node is deleted once older than the
//! orphan grace period. A read that finds an assigned copy missing
//! requests a pass before the next period.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::copy::request_copy;
use super::scrub::report_missing;
use crate::catalog::MAX_REPLICA_SETS_PAGE_LIMIT;
use crate::consensus;
use crate::model::FileId;
use crate::node::{self, Node};

/// How often a node that is not yet caught up checks again.
const CAUGHT_UP_POLL: Duration = Duration::from_millis(500);

/// Shortest pause between two periodic reconciliations after the first.
const MIN_RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// Shortest pause between two reconciliations when reads ask for them
/// ([`Upkeep::request_reconcile`](super::Upkeep::request_reconcile)): a
/// burst of reads of one missing copy leads to one pass at a time.
const REQUESTED_RECONCILE_GAP: Duration = Duration::from_secs(5);

/// Time one fetch of a missing copy may take before the next replica is
/// tried.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Rounds over every replica before a missing copy is reported: a replica
/// may still hold a connection to this node's previous process for a
/// moment after a restart.
const FETCH_ROUNDS: u32 = 3;

/// Pause between two rounds of fetch attempts.
const FETCH_ROUND_PAUSE: Duration = Duration::from_secs(1);

/// Reconciles once the node has caught up with the log, marks the node
/// reconciled (which [`node::is_ready`] waits for), then again
/// periodically until shutdown.
pub async fn reconcile_worker(node: Arc<Node>) {
    while !node::is_caught_up(&node) {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(CAUGHT_UP_POLL) => {}
        }
    }
    let interval = (node.config.repair.orphan_grace / 4).max(MIN_RECONCILE_INTERVAL);
    loop {
        match reconcile(&node).await {
            Ok(summary) => {
                if summary != Summary::default() {
                    tracing::info!(node_id = %node.config.id, fetched = summary.fetched, reported_missing = summary.reported_missing, orphans_deleted = summary.orphans_deleted, "reconciled blobs with the catalog");
                }
            }
            Err(error) => {
                tracing::warn!(node_id = %node.config.id, %error, "reconciliation failed; retrying later")
            }
        }
        node.upkeep.mark_reconciled();
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(REQUESTED_RECONCILE_GAP.min(interval)) => {}
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval.saturating_sub(REQUESTED_RECONCILE_GAP)) => {}
            _ = node.upkeep.reconcile_soon.notified() => {
                tracing::debug!(node_id = %node.config.id, "reconciling early on request");
            }
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    fetched: u64,
    reported_missing: u64,
    orphans_deleted: u64,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("cannot list blobs: {0}")]
    Blobs(#[from] crate::blob::BlobError),
    #[error("cannot read the catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
}

async fn reconcile(node: &Arc<Node>) -> Result<Summary, ReconcileError> {
    let me = node.config.id.clone();
    let mut orphans: HashSet<FileId> = node.blobs.inventory().await?.into_iter().collect();
    let members = consensus::members_of(&node.raft);
    let mut summary = Summary::default();

    let mut after: Option<FileId> = None;
    loop {
        let page = node
            .catalog
            .replica_sets(after.as_deref(), MAX_REPLICA_SETS_PAGE_LIMIT)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.file_id.clone());
        for set in page {
            if !set.replicas.contains(&me) {
                continue;
            }
            if orphans.remove(&set.file_id) {
                continue;
            }
            if node.shutdown.is_cancelled() {
                return Ok(summary);
            }
            let known = node.catalog.replica_faults(&set.file_id).await?;
            if known.iter().any(|f| f.node_id == me) {
                continue;
            }
            let sources: Vec<_> = set
                .replicas
                .iter()
                .filter(|n| **n != me)
                .filter_map(|n| members.values().find(|m| &m.name == n))
                .collect();
            let mut fetched = false;
            'rounds: for round in 1..=FETCH_ROUNDS {
                for source in &sources {
                    match request_copy(node, source, &set.file_id, &node.me, FETCH_TIMEOUT).await {
                        Ok(()) => {
                            fetched = true;
                            break 'rounds;
                        }
                        Err(error) => {
                            tracing::info!(node_id = %me, file_id = %set.file_id, peer = %source.name, round, %error, "cannot fetch missing copy, trying the next replica");
                        }
                    }
                }
                tokio::time::sleep(FETCH_ROUND_PAUSE).await;
            }
            if fetched {
                tracing::info!(node_id = %me, file_id = %set.file_id, "fetched missing copy");
                summary.fetched += 1;
            } else {
                report_missing(node, &set.file_id).await;
                summary.reported_missing += 1;
            }
        }
    }

    for file_id in orphans {
        // A blob being received may belong to a copy whose commit is in
        // flight; only old orphans go.
        match node.blobs.age(&file_id).await {
            Ok(age) if age >= node.config.repair.orphan_grace => {}
            _ => continue,
        }
        if node
            .catalog
            .track(&file_id)
            .await?
            .is_some_and(|t| t.replicas.contains(&me))
        {
            continue;
        }
        if node.blobs.remove(&file_id).await? {
            tracing::info!(node_id = %me, file_id = %file_id, "deleted orphan blob");
            summary.orphans_deleted += 1;
        }
    }
    Ok(summary)
}
