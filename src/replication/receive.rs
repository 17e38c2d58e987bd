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

/// Blobs being received, by file id and sending node. Receptions of the
/// same blob from two nodes go to separate staging files, so neither can
/// disturb the other, and each one that verifies replaces the stored copy
/// with identical bytes.
#[derive(Default)]
pub struct Receiving {
    inner: Mutex<HashMap<ReceptionKey, InFlight>>,
}

/// A reception's file id and the node that sends it.
type ReceptionKey = (FileId, NodeId);

fn key(file_id: &str, peer: &str) -> ReceptionKey {
    (file_id.to_string(), peer.to_string())
}

struct InFlight {
    blob: Arc<ReceivingBlob>,
    last_activity: Instant,
}

/// Failure to find the reception a chunk stream or `replicate_finish`
/// names.
#[derive(Debug, thiserror::Error)]
enum ReceptionError {
    #[error("no replication of {file_id} from {peer} is in progress")]
    NotInProgress { file_id: FileId, peer: NodeId },
    #[error("chunks of {file_id} from {peer} are still being written")]
    StillWriting { file_id: FileId, peer: NodeId },
}

impl Receiving {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ReceptionKey, InFlight>> {
        // Every critical section is a single map operation, so a poisoned
        // lock still guards a consistent map.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a reception, replacing an earlier one of the same blob
    /// from the same node: that node restarted its push, and the earlier
    /// staging file is deleted once its last chunk write ends. Returns
    /// whether one was replaced.
    fn insert(&self, peer: &str, blob: ReceivingBlob) -> bool {
        let in_flight = InFlight {
            blob: Arc::new(blob),
            last_activity: Instant::now(),
        };
        let key = key(in_flight.blob.file_id(), peer);
        self.lock().insert(key, in_flight).is_some()
    }

    /// Records that a chunk of `file_id` from `peer` arrived, so the
    /// reception is not idle.
    fn touch(&self, file_id: &str, peer: &str) {
        if let Some(in_flight) = self.lock().get_mut(&key(file_id, peer)) {
            in_flight.last_activity = Instant::now();
        }
    }

    fn get(&self, file_id: &str, peer: &str) -> Option<Arc<ReceivingBlob>> {
        self.lock().get(&key(file_id, peer)).map(|f| f.blob.clone())
    }

    /// Takes the reception of `file_id` from `peer` out of the map for
    /// `replicate_finish`. A reception whose chunks a bulk stream is still
    /// writing stays, because a push that restarted may still complete it.
    fn take(&self, file_id: &str, peer: &str) -> Result<ReceivingBlob, ReceptionError> {
        let key = key(file_id, peer);
        let mut receptions = self.lock();
        let Some(in_flight) = receptions.remove(&key) else {
            return Err(ReceptionError::NotInProgress {
                file_id: key.0,
                peer: key.1,
            });
        };
        // Every other handle is a clone held by a bulk stream, taken under
        // the map lock, so none can appear while it is held.
        match Arc::try_unwrap(in_flight.blob) {
            Ok(blob) => Ok(blob),
            Err(blob) => {
                let in_flight = InFlight {
                    blob,
                    last_activity: in_flight.last_activity,
                };
                receptions.insert(key.clone(), in_flight);
                Err(ReceptionError::StillWriting {
                    file_id: key.0,
                    peer: key.1,
                })
            }
        }
    }

    /// Drops every reception of `file_id`, from any node.
    fn remove_all(&self, file_id: &str) {
        self.lock().retain(|(id, _), _| id != file_id);
    }

    /// Drops receptions idle for longer than [`RECEIVE_IDLE_TIMEOUT`]; their
    /// staging files are deleted when the last handle goes.
    fn expire(&self) {
        self.lock().retain(|(file_id, peer), in_flight| {
            let keep = in_flight.last_activity.elapsed() < RECEIVE_IDLE_TIMEOUT;
            if !keep {
                tracing::warn!(file_id = %file_id, peer = %peer, "abandoned incoming replication expired");
            }
            keep
        });
    }

    /// Drops receptions whose sender is no longer a cluster member: it will
    /// never finish them.
    fn drop_from_departed(&self, members: &[Member]) {
        self.lock().retain(|(file_id, peer), _| {
            let keep = members.iter().any(|m| &m.name == peer);
            if !keep {
                tracing::info!(file_id = %file_id, peer = %peer, "dropped replication from a departed node");
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

/// Starts receiving `file_id` from `peer`. A copy already on this node's
/// disk does not stop the transfer, because the sender pushes only when the
/// committed state lacks a verified copy here. The copy on disk may be
/// damaged, so the received blob is verified and then replaces it.
pub async fn begin_receive(
    node: &Node,
    peer: &str,
    file_id: FileId,
    manifest: Manifest,
) -> Result<(), RemoteError> {
    validate_file_id(&file_id).map_err(rejected)?;
    check_manifest(node, &manifest)?;
    node.receiving.expire();
    let has_copy = node.blobs.contains(&file_id).await;
    let blob = node
        .blobs
        .begin_receive(&file_id, &manifest)
        .await
        .map_err(|e| failed(node, e))?;
    let restarted = node.receiving.insert(peer, blob);
    tracing::debug!(file_id = %file_id, peer, size_bytes = manifest.size_bytes, has_copy, restarted, "receiving replica");
    Ok(())
}

/// Verifies and stores the blob `peer` has sent, replacing any copy of it
/// on disk.
pub async fn finish_receive(node: &Node, peer: &str, file_id: FileId) -> Result<(), RemoteError> {
    validate_file_id(&file_id).map_err(rejected)?;
    let blob = node.receiving.take(&file_id, peer).map_err(|error| {
        tracing::info!(file_id = %file_id, peer, %error, "cannot finish replication");
        rejected(error)
    })?;
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
    node.receiving.remove_all(&file_id);
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
        BulkRequest::Push { file_id } => receive_chunks(&node, &peer, &file_id, &mut recv).await,
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
    peer: &str,
    file_id: &str,
    recv: &mut quinn::RecvStream,
) -> Result<(), String> {
    let blob = node.receiving.get(file_id, peer).ok_or_else(|| {
        ReceptionError::NotInProgress {
            file_id: file_id.to_string(),
            peer: peer.to_string(),
        }
        .to_string()
    })?;
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
        node.receiving.touch(file_id, peer);
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
                    super::quarantine_in_background(node, file_id, &manifest);
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

    const CHUNK_SIZE: u32 = 4096;

    fn chunks(content: &[u8]) -> impl Iterator<Item = (u32, bytes::Bytes)> + '_ {
        content
            .chunks(CHUNK_SIZE as usize)
            .enumerate()
            .map(|(index, chunk)| (index as u32, bytes::Bytes::copy_from_slice(chunk)))
    }

    async fn open_store(dir: &tempfile::TempDir) -> BlobStore {
        BlobStore::open(dir.path().to_path_buf(), CHUNK_SIZE)
            .await
            .unwrap()
    }

    /// Starts a reception of `content` from `peer` and returns its file id.
    async fn begin(receiving: &Receiving, store: &BlobStore, content: &[u8], peer: &str) -> FileId {
        let manifest = manifest_for_bytes(content, CHUNK_SIZE);
        let file_id = hex::encode(manifest.sha256);
        let blob = store.begin_receive(&file_id, &manifest).await.unwrap();
        receiving.insert(peer, blob);
        file_id
    }

    async fn send_all(receiving: &Receiving, file_id: &str, peer: &str, content: &[u8]) {
        let blob = receiving.get(file_id, peer).unwrap();
        for (index, bytes) in chunks(content) {
            blob.write_chunk(index, bytes).await.unwrap();
        }
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
        let store = open_store(&dir).await;
        let receiving = Receiving::default();
        let kept = begin(&receiving, &store, b"from a member", "node1").await;
        let dropped = begin(&receiving, &store, b"from a departed node", "node9").await;

        receiving.drop_from_departed(&[member("node1"), member("node2")]);

        assert!(receiving.get(&kept, "node1").is_some());
        assert!(receiving.get(&dropped, "node9").is_none());
    }

    #[tokio::test]
    async fn idle_reception_expires_and_touched_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let receiving = Receiving::default();
        let idle = begin(&receiving, &store, b"idle", "node1").await;
        let busy = begin(&receiving, &store, b"busy", "node1").await;
        let long_ago = Instant::now() - RECEIVE_IDLE_TIMEOUT - std::time::Duration::from_secs(1);
        for in_flight in receiving.lock().values_mut() {
            in_flight.last_activity = long_ago;
        }

        receiving.touch(&busy, "node1");
        receiving.expire();

        assert!(receiving.get(&idle, "node1").is_none());
        assert!(receiving.get(&busy, "node1").is_some());
    }

    #[tokio::test]
    async fn two_peers_store_same_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let receiving = Receiving::default();
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let file_id = begin(&receiving, &store, &content, "node1").await;
        begin(&receiving, &store, &content, "node2").await;

        send_all(&receiving, &file_id, "node2", &content).await;
        send_all(&receiving, &file_id, "node1", &content).await;
        receiving
            .take(&file_id, "node1")
            .unwrap()
            .finish()
            .await
            .unwrap();
        receiving
            .take(&file_id, "node2")
            .unwrap()
            .finish()
            .await
            .unwrap();

        let manifest = manifest_for_bytes(&content, CHUNK_SIZE);
        let mut stored = Vec::new();
        for index in 0..manifest.chunk_hashes.len() as u32 {
            stored.extend(store.read_chunk(&file_id, &manifest, index).await.unwrap());
        }
        assert_eq!(stored, content);
        assert!(matches!(
            receiving.take(&file_id, "node1"),
            Err(ReceptionError::NotInProgress { .. })
        ));
    }

    #[tokio::test]
    async fn finish_leaves_reception_a_stream_still_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let receiving = Receiving::default();
        let content = vec![7u8; 5000];
        let file_id = begin(&receiving, &store, &content, "node1").await;
        let stream_handle = receiving.get(&file_id, "node1").unwrap();

        let early = receiving.take(&file_id, "node1");
        assert!(matches!(early, Err(ReceptionError::StillWriting { .. })));
        assert!(receiving.get(&file_id, "node1").is_some());

        for (index, bytes) in chunks(&content) {
            stream_handle.write_chunk(index, bytes).await.unwrap();
        }
        drop(stream_handle);
        receiving
            .take(&file_id, "node1")
            .unwrap()
            .finish()
            .await
            .unwrap();
        assert!(store.contains(&file_id).await);
    }

    #[tokio::test]
    async fn restarted_push_replaces_reception_of_same_peer() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let receiving = Receiving::default();
        let content = vec![9u8; 9000];
        let file_id = begin(&receiving, &store, &content, "node1").await;
        let first = receiving.get(&file_id, "node1").unwrap();
        let (index, bytes) = chunks(&content).next().unwrap();
        first.write_chunk(index, bytes).await.unwrap();

        begin(&receiving, &store, &content, "node1").await;
        drop(first);
        send_all(&receiving, &file_id, "node1", &content).await;
        receiving
            .take(&file_id, "node1")
            .unwrap()
            .finish()
            .await
            .unwrap();

        assert!(store.contains(&file_id).await);
        let staging = std::fs::read_dir(dir.path().join("staging"))
            .unwrap()
            .count();
        assert_eq!(staging, 0, "the replaced reception left its staging file");
    }
}
