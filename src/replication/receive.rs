//! The receiving side of replication: blobs announced by `replicate_begin`,
//! their chunks arriving on bulk streams, and `replicate_finish`; plus the
//! serving side of fetches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dispotify_transport::{read_chunk_frame, read_header, write_chunk_frame, write_header};

use super::protocol::{BulkReply, BulkRequest, MAX_BULK_HEADER_BYTES};
use crate::blob::{validate_file_id, ReceivingBlob};
use crate::limits::RECEIVE_IDLE_TIMEOUT;
use crate::model::{FileId, Manifest, NodeId};
use crate::node::Node;
use crate::rpc::RemoteError;

/// Blobs being received, by file id.
#[derive(Default)]
pub struct Receiving {
    inner: Mutex<HashMap<FileId, InFlight>>,
}

struct InFlight {
    blob: Arc<ReceivingBlob>,
    from: NodeId,
    started: Instant,
}

impl Receiving {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileId, InFlight>> {
        // Every critical section is a single map operation, so a poisoned
        // lock still guards a consistent map.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, file_id: &str) -> Option<Arc<ReceivingBlob>> {
        self.lock().get(file_id).map(|f| f.blob.clone())
    }

    /// Drops receptions idle for longer than [`RECEIVE_IDLE_TIMEOUT`]; their
    /// staging files are deleted when the last handle goes.
    fn expire(&self) {
        self.lock().retain(|file_id, in_flight| {
            let keep = in_flight.started.elapsed() < RECEIVE_IDLE_TIMEOUT;
            if !keep {
                tracing::warn!(file_id = %file_id, peer = %in_flight.from, "abandoned incoming replication expired");
            }
            keep
        });
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
        started: Instant::now(),
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
    }
}

async fn send_chunks(
    node: &Node,
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
