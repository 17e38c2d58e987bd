//! Copies between replicas for repair and rebalancing: this node sends its
//! verified copy of a blob to another node, and drops a copy the committed
//! replica set no longer lists.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::push::{push, ChunkSource};
use super::scrub::{is_corruption, quarantine_and_report};
use crate::consensus::Member;
use crate::model::{FileId, Manifest, NodeId};
use crate::node::{self, Node};
use crate::rpc::RemoteError;

/// The chunks of a committed local blob, each verified against its BLAKE3
/// hash as it is read and sent no faster than the repair bandwidth.
#[derive(Clone)]
struct LocalChunks {
    node: Arc<Node>,
    file_id: FileId,
    /// The receiving node, for the progress count.
    to: NodeId,
}

impl ChunkSource for LocalChunks {
    async fn read(&self, manifest: &Manifest, index: usize) -> Result<Bytes, String> {
        let len = super::chunk_len(
            index as u64,
            u64::from(manifest.chunk_size),
            manifest.size_bytes,
        );
        self.node.upkeep.repair_throttle.take(len).await;
        match self
            .node
            .blobs
            .read_chunk(&self.file_id, manifest, index as u32)
            .await
        {
            Ok(bytes) => {
                self.node.metrics.repair_bytes.inc_by(len);
                self.node.upkeep.add_copied(&self.file_id, &self.to, len);
                Ok(bytes)
            }
            Err(error) => {
                if is_corruption(&error) {
                    quarantine_and_report(&self.node, &self.file_id, manifest).await;
                }
                Err(error.to_string())
            }
        }
    }
}

/// Sends this node's copy of `file_id` to `target`, which verifies every
/// chunk and the whole file before it stores it. Fails when this node has
/// no good copy; a corrupt one is quarantined and reported on the way.
pub async fn copy_to(node: &Arc<Node>, file_id: &str, target: &Member) -> Result<(), RemoteError> {
    let failed = |detail: String| RemoteError::Failed {
        node_id: node.config.id.clone(),
        detail,
    };
    let manifest = node
        .catalog
        .manifest(file_id)
        .await
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| RemoteError::Rejected {
            detail: format!("{file_id} is not in this node's catalog"),
        })?;
    if !node.blobs.contains(file_id).await {
        return Err(RemoteError::Rejected {
            detail: format!("node {} holds no copy of {file_id}", node.config.id),
        });
    }
    let chunks = LocalChunks {
        node: node.clone(),
        file_id: file_id.to_string(),
        to: target.name.clone(),
    };
    let _progress = node.upkeep.start_copy_out(file_id, &target.name);
    push(node, target, file_id, &manifest, chunks)
        .await
        .map_err(failed)?;
    tracing::info!(node_id = %node.config.id, file_id, peer = %target.name, size_bytes = manifest.size_bytes, "copied replica");
    Ok(())
}

/// Deletes this node's copy of `file_id` once this node has applied the
/// log up to `applied_index` and the committed replica set there does not
/// list this node. Returns whether a copy was deleted.
pub async fn drop_replica(
    node: &Node,
    file_id: &str,
    applied_index: u64,
) -> Result<bool, RemoteError> {
    let failed = |detail: String| RemoteError::Failed {
        node_id: node.config.id.clone(),
        detail,
    };
    crate::blob::validate_file_id(file_id).map_err(|e| RemoteError::Rejected {
        detail: e.to_string(),
    })?;
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(applied_index), "drop replica")
        .await
        .map_err(|e| failed(format!("log not applied up to {applied_index}: {e}")))?;
    let track = node
        .catalog
        .track(file_id)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if let Some(track) = &track {
        if track.replicas.contains(&node.config.id) {
            return Err(RemoteError::Rejected {
                detail: format!("{file_id} still lists {} as a replica", node.config.id),
            });
        }
    }
    let removed = node
        .blobs
        .remove(file_id)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if removed {
        tracing::info!(node_id = %node.config.id, file_id, "dropped extra copy");
    }
    Ok(removed)
}

/// Asks `source` (or this node, when it is the source) to copy `file_id`
/// to `target`.
pub async fn request_copy(
    node: &Arc<Node>,
    source: &Member,
    file_id: &str,
    target: &Member,
    timeout: Duration,
) -> Result<(), RemoteError> {
    if source.name == node.config.id {
        return copy_to(node, file_id, target).await;
    }
    let client = node::rpc_client(node, source).await?;
    client
        .copy_blob(
            node::context_with_timeout(timeout),
            file_id.to_string(),
            target.clone(),
        )
        .await
        .map_err(|e| RemoteError::Failed {
            node_id: source.name.clone(),
            detail: e.to_string(),
        })?
}
