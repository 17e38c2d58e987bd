//! Quorum writes: an uploaded blob is pushed to its replica set in parallel,
//! and the upload proceeds once the write quorum W = floor(R/2) + 1 has
//! stored it.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dispotify_transport::{read_header, write_chunk_frame, write_header, StreamKind};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::protocol::{BulkReply, BulkRequest, MAX_BULK_HEADER_BYTES};
use crate::api::ApiError;
use crate::blob::StagedBlob;
use crate::consensus::{self, Member};
use crate::limits::PUSH_STREAMS_PER_REPLICA;
use crate::model::{Command, FileId, Manifest, NodeId};
use crate::node::{self, Node};
use crate::placement::{Ring, DEFAULT_VNODES_PER_NODE};

/// Time allowed for a replica to verify and fsync a whole blob after the
/// last chunk, per GiB of blob, on top of [`FINISH_TIMEOUT_BASE`].
const FINISH_TIMEOUT_PER_GIB: Duration = Duration::from_secs(60);
const FINISH_TIMEOUT_BASE: Duration = Duration::from_secs(10);

/// Delay before the one retry of a failed push to a replica.
const PUSH_RETRY_DELAY: Duration = Duration::from_millis(300);

/// Returns the write quorum for a replica set of `replicas` nodes.
pub fn write_quorum(replicas: usize) -> usize {
    replicas / 2 + 1
}

/// Computes the replica set of `file_id` under the committed membership.
pub fn replica_set(node: &Node, file_id: &str) -> Vec<Member> {
    let members = consensus::members_of(&node.raft);
    let ring = Ring::new(
        members.values().map(|m| m.name.clone()),
        DEFAULT_VNODES_PER_NODE,
    );
    let names = ring.replica_set(file_id, node.config.replication_factor);
    let by_name: std::collections::HashMap<&str, &Member> =
        members.values().map(|m| (m.name.as_str(), m)).collect();
    names
        .iter()
        .filter_map(|name| by_name.get(name.as_str()).map(|m| (*m).clone()))
        .collect()
}

/// Stores `staged` on its replica set and returns the nodes that hold a
/// verified, durable copy once the write quorum is reached. The remaining
/// replicas finish in the background, and their arrival is committed with
/// `SetReplicas`.
pub async fn store_with_quorum(
    node: Arc<Node>,
    staged: StagedBlob,
) -> Result<Vec<NodeId>, ApiError> {
    let file_id = staged.file_id.clone();
    let manifest = staged.manifest.clone();
    let replicas = replica_set(&node, &file_id);
    let required = write_quorum(replicas.len());
    let source = std::fs::File::open(&staged.path)
        .map_err(|e| crate::api::error::internal("open staged blob", e))?;
    let source = Arc::new(source);

    let (results_tx, mut results_rx) = mpsc::channel(replicas.len().max(1));
    let mut staged = Some(staged);
    for member in &replicas {
        let tx = results_tx.clone();
        let task = if member.name == node.config.id {
            let staged = staged.take();
            let node = node.clone();
            tokio::spawn(async move {
                let stored = match staged {
                    Some(staged) => node
                        .blobs
                        .commit_staged(staged)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("staged blob already consumed".to_string()),
                };
                let _ = tx.send((node.config.id.clone(), stored)).await;
            })
        } else {
            let node = node.clone();
            let member = member.clone();
            let file_id = file_id.clone();
            let manifest = manifest.clone();
            let source = source.clone();
            let span = tracing::debug_span!("push", file_id = %file_id, peer = %member.name);
            tokio::spawn(
                async move {
                    let pushed = push_with_retry(&node, &member, &file_id, &manifest, source).await;
                    let _ = tx.send((member.name.clone(), pushed)).await;
                }
                .instrument(span),
            )
        };
        drop(task);
    }
    drop(results_tx);
    // `staged`, if this node is not a replica, is dropped here: its file
    // disappears from the directory while `source` keeps it readable.
    drop(staged);

    let mut acknowledged = Vec::new();
    let mut failures = 0;
    while acknowledged.len() < required {
        let Some((name, result)) = results_rx.recv().await else {
            break;
        };
        match result {
            Ok(()) => acknowledged.push(name),
            Err(detail) => {
                failures += 1;
                tracing::warn!(file_id = %file_id, peer = %name, %detail, "replica did not store blob");
                if replicas.len() - failures < required {
                    break;
                }
            }
        }
    }

    if acknowledged.len() < required {
        tracing::warn!(file_id = %file_id, acknowledged = acknowledged.len(), required, "write quorum not reached");
        tokio::spawn(discard_everywhere(
            node.clone(),
            file_id.clone(),
            replicas.clone(),
        ));
        return Err(ApiError::ReplicationFailed {
            acknowledged: acknowledged.len(),
            required,
        });
    }

    tokio::spawn(complete_in_background(
        node,
        file_id,
        acknowledged.clone(),
        results_rx,
    ));
    Ok(acknowledged)
}

/// Waits for the replicas still pending when the quorum was reached
/// and commits the grown replica set.
async fn complete_in_background(
    node: Arc<Node>,
    file_id: FileId,
    mut acknowledged: Vec<NodeId>,
    mut results: mpsc::Receiver<(NodeId, Result<(), String>)>,
) {
    let before = acknowledged.len();
    while let Some((name, result)) = results.recv().await {
        match result {
            Ok(()) => acknowledged.push(name),
            Err(detail) => {
                tracing::warn!(file_id = %file_id, peer = %name, %detail, "background replica failed")
            }
        }
    }
    if acknowledged.len() == before {
        return;
    }
    // The AddTrack entry may still be in flight: wait until it is applied.
    for _ in 0..50 {
        if matches!(node.catalog.track(&file_id).await, Ok(Some(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let command = Command::SetReplicas {
        file_id: file_id.clone(),
        replicas: acknowledged.clone(),
        verified: acknowledged.clone(),
        fence: None,
    };
    match node::write(&node, command).await {
        Ok(_) => {
            tracing::debug!(file_id = %file_id, replicas = ?acknowledged, "replica set complete")
        }
        Err(error) => {
            tracing::warn!(file_id = %file_id, %error, "cannot record completed replica set")
        }
    }
}

async fn discard_everywhere(node: Arc<Node>, file_id: FileId, replicas: Vec<Member>) {
    for member in replicas {
        if member.name == node.config.id {
            if let Err(error) = super::discard(&node, &node.config.id, file_id.clone()).await {
                tracing::debug!(file_id = %file_id, %error, "local discard skipped");
            }
            continue;
        }
        let discarded = async {
            let client = node::rpc_client(&node, &member).await?;
            client
                .discard_blob(
                    node::context_with_timeout(Duration::from_secs(5)),
                    file_id.clone(),
                )
                .await
                .map_err(|e| crate::rpc::RemoteError::Failed {
                    node_id: member.name.clone(),
                    detail: e.to_string(),
                })?
        };
        if let Err(error) = discarded.await {
            tracing::debug!(file_id = %file_id, peer = %member.name, %error, "discard after failed upload skipped");
        }
    }
}

async fn push_with_retry(
    node: &Node,
    member: &Member,
    file_id: &str,
    manifest: &Manifest,
    source: Arc<std::fs::File>,
) -> Result<(), String> {
    let chunks = StagedChunks { file: source };
    match push(node, member, file_id, manifest, chunks.clone()).await {
        Ok(()) => Ok(()),
        Err(first) => {
            tracing::info!(file_id, peer = %member.name, error = %first, "push failed, retrying once");
            tokio::time::sleep(PUSH_RETRY_DELAY).await;
            push(node, member, file_id, manifest, chunks).await
        }
    }
}

/// Where a push reads the chunks it sends.
pub(super) trait ChunkSource: Clone + Send + Sync + 'static {
    /// Reads chunk `index` of a blob described by `manifest`.
    fn read(
        &self,
        manifest: &Manifest,
        index: usize,
    ) -> impl std::future::Future<Output = Result<Bytes, String>> + Send;
}

/// The chunks of a staged upload, read from its open file. The replica
/// verifies each one, so they are not verified here.
#[derive(Clone)]
struct StagedChunks {
    file: Arc<std::fs::File>,
}

impl ChunkSource for StagedChunks {
    async fn read(&self, manifest: &Manifest, index: usize) -> Result<Bytes, String> {
        let chunk_size = u64::from(manifest.chunk_size);
        let len = super::chunk_len(index as u64, chunk_size, manifest.size_bytes) as usize;
        let offset = index as u64 * chunk_size;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut buffer = vec![0u8; len];
            file.read_exact_at(&mut buffer, offset)
                .map(|()| Bytes::from(buffer))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("read staged chunk {index}: {e}"))
    }
}

/// Pushes one blob to one replica: begin, chunks over parallel bulk
/// streams, finish.
pub(super) async fn push(
    node: &Node,
    member: &Member,
    file_id: &str,
    manifest: &Manifest,
    chunks: impl ChunkSource,
) -> Result<(), String> {
    let client = node::rpc_client(node, member)
        .await
        .map_err(|e| e.to_string())?;
    client
        .replicate_begin(
            node::context_with_timeout(Duration::from_secs(10)),
            file_id.to_string(),
            manifest.clone(),
        )
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;

    let addr = node
        .discovery
        .resolve(&member.quic_addr)
        .await
        .map_err(|e| e.to_string())?;
    let chunk_count = manifest.chunk_hashes.len();
    let streams = PUSH_STREAMS_PER_REPLICA.min(chunk_count).max(1);
    let stripes = (0..streams).map(|stripe| {
        let chunks = chunks.clone();
        async move {
            let (mut send, mut recv) = node
                .endpoint
                .open_stream(&member.name, addr, StreamKind::Bulk)
                .await
                .map_err(|e| e.to_string())?;
            write_header(
                &mut send,
                &BulkRequest::Push {
                    file_id: file_id.to_string(),
                },
                MAX_BULK_HEADER_BYTES,
            )
            .await
            .map_err(|e| e.to_string())?;
            for index in (stripe..chunk_count).step_by(streams) {
                let bytes = chunks.read(manifest, index).await?;
                let len = bytes.len() as u64;
                write_chunk_frame(&mut send, index as u32, bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                node.metrics.replicated_bytes.inc_by(len);
            }
            send.finish().map_err(|e| e.to_string())?;
            match read_header(&mut recv, MAX_BULK_HEADER_BYTES)
                .await
                .map_err(|e| e.to_string())?
            {
                BulkReply::Ok => Ok(()),
                BulkReply::Failed { detail } => Err(detail),
            }
        }
    });
    futures::future::try_join_all(stripes).await?;

    let gib = manifest.size_bytes as f64 / (1u64 << 30) as f64;
    let finish_timeout = FINISH_TIMEOUT_BASE + FINISH_TIMEOUT_PER_GIB.mul_f64(gib);
    client
        .replicate_finish(
            node::context_with_timeout(finish_timeout),
            file_id.to_string(),
        )
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_majority() {
        assert_eq!(write_quorum(1), 1);
        assert_eq!(write_quorum(2), 2);
        assert_eq!(write_quorum(3), 2);
        assert_eq!(write_quorum(5), 3);
    }
}
