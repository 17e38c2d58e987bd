//! Verified reads of a byte range: from the local copy when there is one,
//! otherwise from the replicas in turn, switching to the next source from
//! the first chunk not yet sent when one fails mid-stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dispotify_transport::{read_chunk_frame, read_header, write_header, StreamKind};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::protocol::{BulkReply, BulkRequest, MAX_BULK_HEADER_BYTES};
use super::{chunk_len, chunk_slice};
use crate::api::ApiError;
use crate::consensus::{self, Member};
use crate::limits::STREAM_BUFFER_CHUNKS;
use crate::metrics::Metrics;
use crate::model::{Manifest, Track};
use crate::node::Node;

/// Time allowed to receive one chunk from a remote replica.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

enum Source {
    Local,
    Remote(Member),
}

/// Read position: the next chunk to send and the requested byte range.
struct Cursor {
    next_chunk: u64,
    last_chunk: u64,
    start: u64,
    end_inclusive: u64,
}

/// Streams bytes `start..=end_inclusive` of a track's blob, each chunk
/// verified against the committed manifest before it is sent.
pub async fn read_range(
    node: Arc<Node>,
    track: Track,
    manifest: Manifest,
    start: u64,
    end_inclusive: u64,
) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>>, ApiError> {
    let mut sources = Vec::new();
    if node.blobs.contains(&track.file_id).await {
        sources.push(Source::Local);
    }
    let members = consensus::members_of(&node.raft);
    let mut remotes: Vec<Member> = track
        .replicas
        .iter()
        .filter(|name| **name != node.config.id)
        .filter_map(|name| members.values().find(|m| &m.name == name).cloned())
        .collect();
    // Replicas that passed their last health check come first.
    remotes.sort_by_key(|m| !node.discovery.is_reachable(&m.name));
    sources.extend(remotes.into_iter().map(Source::Remote));
    if sources.is_empty() {
        return Err(ApiError::NoReplicaAvailable {
            file_id: track.file_id,
        });
    }
    let first_source = match sources[0] {
        Source::Local => "local",
        Source::Remote(_) => "remote",
    };
    node.metrics.count_stream(first_source);

    let chunk_size = u64::from(manifest.chunk_size);
    let cursor = Cursor {
        next_chunk: start / chunk_size,
        last_chunk: end_inclusive / chunk_size,
        start,
        end_inclusive,
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER_CHUNKS);
    tokio::spawn(produce(node, track.file_id, manifest, sources, cursor, tx));
    Ok(ReceiverStream::new(rx))
}

type Sender = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Reason a source stopped serving.
enum Stop {
    /// The client went away: stop reading altogether.
    ClientGone,
    /// The source failed: try the next one.
    SourceFailed(String),
}

async fn produce(
    node: Arc<Node>,
    file_id: String,
    manifest: Manifest,
    sources: Vec<Source>,
    mut cursor: Cursor,
    tx: Sender,
) {
    for source in &sources {
        let served = match source {
            Source::Local => from_local(&node, &file_id, &manifest, &mut cursor, &tx).await,
            Source::Remote(member) => {
                from_remote(&node, member, &file_id, &manifest, &mut cursor, &tx).await
            }
        };
        match served {
            Ok(()) => return,
            Err(Stop::ClientGone) => return,
            Err(Stop::SourceFailed(detail)) => {
                let peer = match source {
                    Source::Local => node.config.id.as_str(),
                    Source::Remote(member) => member.name.as_str(),
                };
                tracing::warn!(file_id = %file_id, peer, chunk_index = cursor.next_chunk, %detail, "stream source failed, failing over");
            }
        }
    }
    tracing::error!(file_id = %file_id, chunk_index = cursor.next_chunk, "no replica could serve the stream");
    let error = std::io::Error::other(format!(
        "no replica could serve chunk {} of {file_id}",
        cursor.next_chunk
    ));
    let _ = tx.send(Err(error)).await;
}

/// Sends the wanted part of a verified chunk and advances the cursor.
async fn emit(
    metrics: &Metrics,
    cursor: &mut Cursor,
    manifest: &Manifest,
    bytes: Bytes,
    tx: &Sender,
) -> Result<(), Stop> {
    let chunk_size = u64::from(manifest.chunk_size);
    let len = chunk_len(cursor.next_chunk, chunk_size, manifest.size_bytes);
    let (from, to) = chunk_slice(
        cursor.next_chunk,
        chunk_size,
        len,
        cursor.start,
        cursor.end_inclusive,
    );
    if bytes.len() as u64 != len {
        return Err(Stop::SourceFailed(format!(
            "chunk {} has {} bytes, expected {len}",
            cursor.next_chunk,
            bytes.len()
        )));
    }
    let part = bytes.slice(from..to);
    let sent_bytes = part.len() as u64;
    tx.send(Ok(part)).await.map_err(|_| Stop::ClientGone)?;
    metrics.stream_bytes.inc_by(sent_bytes);
    cursor.next_chunk += 1;
    Ok(())
}

async fn from_local(
    node: &Node,
    file_id: &str,
    manifest: &Manifest,
    cursor: &mut Cursor,
    tx: &Sender,
) -> Result<(), Stop> {
    while cursor.next_chunk <= cursor.last_chunk {
        let bytes = node
            .blobs
            .read_chunk(file_id, manifest, cursor.next_chunk as u32)
            .await
            .map_err(|e| Stop::SourceFailed(e.to_string()))?;
        emit(&node.metrics, cursor, manifest, bytes, tx).await?;
    }
    Ok(())
}

async fn from_remote(
    node: &Node,
    member: &Member,
    file_id: &str,
    manifest: &Manifest,
    cursor: &mut Cursor,
    tx: &Sender,
) -> Result<(), Stop> {
    let failed = |e: String| Stop::SourceFailed(e);
    let addr = node
        .discovery
        .resolve(&member.quic_addr)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (mut send, mut recv) = node
        .endpoint
        .open_stream(&member.name, addr, StreamKind::Bulk)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let request = BulkRequest::Fetch {
        file_id: file_id.to_string(),
        first_chunk: cursor.next_chunk as u32,
        last_chunk: cursor.last_chunk as u32,
    };
    write_header(&mut send, &request, MAX_BULK_HEADER_BYTES)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let _ = send.finish();
    match read_header(&mut recv, MAX_BULK_HEADER_BYTES)
        .await
        .map_err(|e| failed(e.to_string()))?
    {
        BulkReply::Ok => {}
        BulkReply::Failed { detail } => return Err(failed(detail)),
    }
    let max_len = manifest.chunk_size as usize;
    while cursor.next_chunk <= cursor.last_chunk {
        let frame = tokio::time::timeout(CHUNK_TIMEOUT, read_chunk_frame(&mut recv, max_len))
            .await
            .map_err(|_| failed(format!("no chunk within {CHUNK_TIMEOUT:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        let Some((index, bytes)) = frame else {
            return Err(failed("stream ended early".to_string()));
        };
        if u64::from(index) != cursor.next_chunk {
            return Err(failed(format!(
                "sent chunk {index}, expected {}",
                cursor.next_chunk
            )));
        }
        let expected = manifest
            .chunk_hashes
            .get(index as usize)
            .ok_or_else(|| failed(format!("chunk {index} out of range")))?;
        if blake3::hash(&bytes).as_bytes() != expected {
            return Err(failed(format!("chunk {index} failed BLAKE3 verification")));
        }
        emit(&node.metrics, cursor, manifest, bytes, tx).await?;
    }
    Ok(())
}
