//! The receiving side of replication: blobs announced by `replicate_begin`,
//! their chunks arriving on bulk streams, and `replicate_finish`; plus the
//! serving side of fetches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dispotify_transport::{read_chunk_frame, read_header, write_chunk_frame, write_header};

use super::protocol::{BulkReply, BulkRequest, MAX_BULK_HEADER_BYTES};
use crate::blob::{validate_file_id, ReceivingBlob};
use crate::consensus::Member;
use crate::limits::RECEIVE_IDLE_TIMEOUT;
use crate::model::{FileId, Manifest, NodeId};
use crate::node::{ClusterEvent, Node};
use crate::rpc::RemoteError;

/// Blobs being received, by file id.
#[derive(Default)]
pub struct Receiving {
    inner: Mutex<HashMap<FileId, InFlight>>,
}

struct InFlight {
    blob: Arc<ReceivingBlob>,
    from: NodeId,
    last_activity: Instant,
}

impl Receiving {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileId, InFlight>> {
        // Every critical section is a single map operation, so a poisoned
        // lock still guards a consistent map.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that a chunk of `file_id` arrived, so the reception is not idle.
    fn touch(&self, file_id: &str) {
        if let Some(in_flight) = self.lock().get_mut(file_id) {
            in_flight.last_activity = Instant::now();
        }
    }

    fn get(&self, file_id: &str) -> Option<Arc<ReceivingBlob>> {
        self.lock().get(file_id).map(|f| f.blob.clone())
    }

    /// Drops receptions idle for longer than [`RECEIVE_IDLE_TIMEOUT`]; their
    /// staging files are deleted when the last handle goes.
    fn expire(&self) {
        self.lock().retain(|file_id, in_flight| {
            let keep = in_flight.last_activity.elapsed() < RECEIVE_IDLE_TIMEOUT;
            if !keep {
                tracing::warn!(file_id = %file_id, peer = %in_flight.from, "abandoned incoming replication expired");
            }
            keep
        });
    }

    /// Drops receptions whose sender is no longer a cluster member: it will
    /// never finish them.
    fn drop_from_departed(&self, members: &[Member]) {
        self.lock().retain(|file_id, in_flight| {
            let keep = members.iter().any(|m| m.name == in_flight.from);
            if !keep {
                tracing::info!(file_id = %file_id, peer = %in_flight.from, "dropped replication from a departed node");
            }
            keep
        });
    }
}

/// Interval of the sweep that expires idle incoming replications.
const RECEIVE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// The replication manager's receive worker: expires idle incoming
/// replications and drops those of nodes that left the cluster, as
/// membership events arrive.
pub async fn receive_janitor(node: Arc<Node>) {
    let mut events = node.events.subscribe();
    let mut sweep = tokio::time::interval(RECEIVE_SWEEP_INTERVAL);
    loop {
        tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => return,
            event = events.recv() => match event {
                Ok(ClusterEvent::MembershipChanged { members }) => node.receiving.drop_from_departed(&members),
                Ok(ClusterEvent::LeaderChanged { .. }) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "receive janitor skipped cluster events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = sweep.tick() => node.receiving.expire(),
        }
    }
}

fn rejected(detail: impl ToString) -> RemoteError {
    RemoteError::Rejected {
        detail: detail.to_string(),
    }
}

fn failed(node: &Node, detail: impl ToString) -> RemoteError {
    RemoteError::Failed {
        node_id: node.config.id.clone(),
        detail: detail.to_string(),
    }
}

/// Checks that a manifest from a peer is self-consistent and within this
/// node's limits before any disk space is reserved for it.
fn check_manifest(node: &Node, manifest: &Manifest) -> Result<(), RemoteError> {
    if manifest.chunk_size == 0 {
        return Err(rejected("chunk size is 0"));
    }
    if manifest.size_bytes > node.config.max_upload_bytes {
        return Err(rejected(format!(
            "blob of {} bytes exceeds this node's limit of {} bytes",
            manifest.size_bytes, node.config.max_upload_bytes
        )));
    }
    let expected_chunks = manifest.size_bytes.div_ceil(u64::from(manifest.chunk_size));
    if manifest.chunk_hashes.len() as u64 != expected_chunks {
        return Err(rejected(format!(
            "manifest lists {} chunk hashes, a blob of {} bytes in chunks of {} has {expected_chunks}",
            manifest.chunk_hashes.len(),
            manifest.size_bytes,
            manifest.chunk_size
        )));
    }
    Ok(())
}

pub async fn begin_receive(
    node: &Node,
    peer: &str,
    file_id: FileId,
    manifest: Manifest,
) -> Result<(), RemoteError> {
    validate_file_id(&file_id).map_err(rejected)?;
    check_manifest(node, &manifest)?;
    node.receiving.expire();
    if node.blobs.contains(&file_id).await {
        tracing::debug!(file_id = %file_id, peer, "replica already present");
        return Ok(());
    }
    let blob = node
        .blobs
        .begin_receive(&file_id, &manifest)
        .await
        .map_err(|e| failed(node, e))?;
    let in_flight = InFlight {
        blob: Arc::new(blob),
        from: peer.to_string(),
        last_activity: Instant::now(),
    };
    node.receiving.lock().insert(file_id.clone(), in_flight);
    tracing::debug!(file_id = %file_id, peer, size_bytes = manifest.size_bytes, "receiving replica");
    Ok(())
}

pub async fn finish_receive(node: &Node, peer: &str, file_id: FileId) -> Result<(), RemoteError> {
    validate_file_id(&file_id).map_err(rejected)?;
    let in_flight = node.receiving.lock().remove(&file_id);
    let Some(in_flight) = in_flight else {
        if node.blobs.contains(&file_id).await {
            return Ok(());
        }
        return Err(rejected(format!(
            "no replication of {file_id} is in progress"
        )));
    };
    let blob = Arc::try_unwrap(in_flight.blob)
        .map_err(|_| failed(node, format!("chunks of {file_id} are still being written")))?;
    blob.finish().await.map_err(|e| {
        tracing::warn!(file_id = %file_id, peer, error = %e, "received replica failed verification");
        failed(node, e)
    })?;
    tracing::info!(file_id = %file_id, peer, "stored replica");
    Ok(())
}

pub async fn discard(node: &Node, peer: &str, file_id: FileId) -> Result<(), RemoteError> {
    validate_file_id(&file_id).map_err(rejected)?;
    let listed = node
        .catalog
        .track(&file_id)
        .await
        .map_err(|e| failed(node, e))?;
    if listed.is_some() {
        return Err(rejected(format!(
            "{file_id} is in the catalog and keeps its replicas"
        )));
    }
    node.receiving.lock().remove(&file_id);
    node.blobs
        .remove(&file_id)
        .await
        .map_err(|e| failed(node, e))?;
    tracing::info!(file_id = %file_id, peer, "discarded blob of a failed upload");
    Ok(())
}

/// Serves one bulk stream opened by `peer`.
pub async fn serve_bulk(
    node: Arc<Node>,
    peer: NodeId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let request: BulkRequest = match read_header(&mut recv, MAX_BULK_HEADER_BYTES).await {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(peer = %peer, %error, "invalid bulk stream header");
            return;
        }
    };
    let reply = match request {
        BulkRequest::Push { file_id } => receive_chunks(&node, &file_id, &mut recv).await,
        BulkRequest::Fetch {
            file_id,
            first_chunk,
            last_chunk,
        } => {
            send_chunks(&node, &file_id, first_chunk, last_chunk, &mut send).await;
            return;
        }
    };
    let reply = match reply {
        Ok(()) => BulkReply::Ok,
        Err(detail) => {
            tracing::debug!(peer = %peer, %detail, "bulk push failed");
            BulkReply::Failed { detail }
        }
    };
    if write_header(&mut send, &reply, MAX_BULK_HEADER_BYTES)
        .await
        .is_ok()
    {
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}

async fn receive_chunks(
    node: &Node,
    file_id: &str,
    recv: &mut quinn::RecvStream,
) -> Result<(), String> {
    let blob = node
        .receiving
        .get(file_id)
        .ok_or_else(|| format!("no replication of {file_id} is in progress"))?;
    let max_len = blob.chunk_size() as usize;
    loop {
        let frame = read_chunk_frame(recv, max_len)
            .await
            .map_err(|e| e.to_string())?;
        let Some((index, bytes)) = frame else {
            return Ok(());
        };
        blob.write_chunk(index, bytes)
            .await
            .map_err(|e| e.to_string())?;
        node.receiving.touch(file_id);
    }
}

async fn send_chunks(
    node: &Arc<Node>,
    file_id: &str,
    first_chunk: u32,
    last_chunk: u32,
    send: &mut quinn::SendStream,
) {
    let manifest = match node.catalog.manifest(file_id).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => {
            let _ = write_header(
                send,
                &BulkReply::Failed {
                    detail: format!("{file_id} is not in the catalog"),
                },
                MAX_BULK_HEADER_BYTES,
            )
            .await;
            return;
        }
        Err(e) => {
            let _ = write_header(
                send,
                &BulkReply::Failed {
                    detail: e.to_string(),
                },
                MAX_BULK_HEADER_BYTES,
            )
            .await;
            return;
        }
    };
    if !node.blobs.contains(file_id).await {
        let _ = write_header(
            send,
            &BulkReply::Failed {
                detail: format!("no local copy of {file_id}"),
            },
            MAX_BULK_HEADER_BYTES,
        )
        .await;
        return;
    }
    if write_header(send, &BulkReply::Ok, MAX_BULK_HEADER_BYTES)
        .await
        .is_err()
    {
        return;
    }
    let last_chunk = last_chunk.min(manifest.chunk_hashes.len().saturating_sub(1) as u32);
    for index in first_chunk..=last_chunk {
        let bytes = match node.blobs.read_chunk(file_id, &manifest, index).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(file_id, chunk_index = index, %error, "cannot serve chunk to peer");
                if super::is_corruption(&error) {
                    super::quarantine_in_background(node, file_id);
                }
                let _ = send.reset(quinn::VarInt::from_u32(1));
                return;
            }
        };
        if write_chunk_frame(send, index, bytes).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{manifest_for_bytes, BlobStore};

    async fn reception(store: &BlobStore, content: &[u8], from: &str) -> (FileId, InFlight) {
        let manifest = manifest_for_bytes(content, 4096);
        let file_id = hex::encode(manifest.sha256);
        let blob = store.begin_receive(&file_id, &manifest).await.unwrap();
        let in_flight = InFlight {
            blob: Arc::new(blob),
            from: from.to_string(),
            last_activity: Instant::now(),
        };
        (file_id, in_flight)
    }

    fn member(name: &str) -> Member {
        Member {
            name: name.to_string(),
            ..Member::default()
        }
    }

    #[tokio::test]
    async fn departed_sender_reception_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().to_path_buf(), 4096)
            .await
            .unwrap();
        let receiving = Receiving::default();
        let (kept_id, kept) = reception(&store, b"from a member", "node1").await;
        let (dropped_id, dropped) = reception(&store, b"from a departed node", "node9").await;
        receiving.lock().insert(kept_id.clone(), kept);
        receiving.lock().insert(dropped_id.clone(), dropped);

        receiving.drop_from_departed(&[member("node1"), member("node2")]);

        assert!(receiving.get(&kept_id).is_some());
        assert!(receiving.get(&dropped_id).is_none());
    }

    #[tokio::test]
    async fn idle_reception_expires_and_touched_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().to_path_buf(), 4096)
            .await
            .unwrap();
        let receiving = Receiving::default();
        let (idle_id, mut idle) = reception(&store, b"idle", "node1").await;
        let (busy_id, mut busy) = reception(&store, b"busy", "node1").await;
        let long_ago = Instant::now() - RECEIVE_IDLE_TIMEOUT - std::time::Duration::from_secs(1);
        idle.last_activity = long_ago;
        busy.last_activity = long_ago;
        receiving.lock().insert(idle_id.clone(), idle);
        receiving.lock().insert(busy_id.clone(), busy);

        receiving.touch(&busy_id);
        receiving.expire();

        assert!(receiving.get(&idle_id).is_none());
        assert!(receiving.get(&busy_id).is_some());
    }
}
