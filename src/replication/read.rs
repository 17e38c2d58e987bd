//! Verified reads of a byte range: from the local copy when there is one,
//! otherwise from the replicas in turn, switching to the next source from
//! the first chunk not yet sent when one fails mid-stream. A read from a
//! replica runs up to [`STREAM_READ_AHEAD_BYTES`] of verified chunks ahead
//! of the client, and the chunks read ahead from a failed replica are
//! dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dispotify_transport::{read_chunk_frame, read_header, write_header, StreamKind};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;

use super::protocol::{BulkReply, BulkRequest, MAX_BULK_HEADER_BYTES};
use super::{chunk_len, chunk_slice};
use crate::api::ApiError;
use crate::consensus::{self, Member};
use crate::limits::{STREAM_BUFFER_CHUNKS, STREAM_READ_AHEAD_BYTES};
use crate::metrics::Metrics;
use crate::model::{Manifest, Track};
use crate::node::{self, Node};

/// Time allowed to receive one chunk from a remote replica.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed to open a bulk stream to a remote replica, or for the
/// replica to reply to the fetch request, before the read fails over to the
/// next source. A replica that is up replies within milliseconds, and a
/// client waiting on a silent peer would otherwise wait for the QUIC idle
/// timeout.
const SOURCE_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

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
    } else if track.replicas.contains(&node.config.id) && node::is_ready(&node) {
        // The committed replica set lists this node, but its copy is gone:
        // deleted, or still arriving for a file committed moments ago.
        // Reconciliation fetches it from another replica; for a copy still
        // arriving that costs one transfer more and changes nothing.
        tracing::warn!(node_id = %node.config.id, file_id = %track.file_id, "assigned copy is missing; reading from another replica and reconciling");
        node.upkeep.request_reconcile();
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
    node: &Arc<Node>,
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
            .map_err(|error| {
                if super::is_corruption(&error) {
                    super::quarantine_in_background(node, file_id, manifest);
                }
                Stop::SourceFailed(error.to_string())
            })?;
        emit(&node.metrics, cursor, manifest, bytes, tx).await?;
    }
    Ok(())
}

/// Streams from one remote replica over one bulk stream. A fetch task reads
/// and verifies chunks up to [`ReadAhead::chunks`] ahead of the client,
/// while this task sends earlier ones on. A failed chunk stops the source,
/// and the fetch task is aborted when this function returns.
async fn from_remote(
    node: &Node,
    member: &Member,
    file_id: &str,
    manifest: &Manifest,
    cursor: &mut Cursor,
    tx: &Sender,
) -> Result<(), Stop> {
    let addr = node
        .discovery
        .resolve(&member.quic_addr)
        .await
        .map_err(|e| Stop::SourceFailed(e.to_string()))?;
    let opened = tokio::time::timeout(
        SOURCE_REPLY_TIMEOUT,
        node.endpoint
            .open_stream(&member.name, addr, StreamKind::Bulk),
    )
    .await
    .map_err(|_| Stop::SourceFailed(format!("no stream opened within {SOURCE_REPLY_TIMEOUT:?}")))?;
    let (send, recv) = opened.map_err(|e| Stop::SourceFailed(e.to_string()))?;
    let first = cursor.next_chunk as usize;
    let last = cursor.last_chunk as usize;
    let chunk_hashes = manifest.chunk_hashes.get(first..=last).ok_or_else(|| {
        Stop::SourceFailed(format!(
            "chunks {first}..={last} are outside the manifest's {} chunks",
            manifest.chunk_hashes.len()
        ))
    })?;
    let read_ahead = ReadAhead::for_chunk_size(u64::from(manifest.chunk_size));
    let (chunk_tx, mut chunk_rx) = mpsc::channel(read_ahead.chunks);
    let remote_fetch = RemoteFetch {
        file_id: file_id.to_string(),
        first_chunk: cursor.next_chunk,
        chunk_hashes: chunk_hashes.to_vec(),
        max_chunk_bytes: manifest.chunk_size as usize,
    };
    let _fetch_task = AbortOnDropHandle::new(tokio::spawn(remote_fetch.run(send, recv, chunk_tx)));

    while cursor.next_chunk <= cursor.last_chunk {
        let bytes = match chunk_rx.recv().await {
            Some(Ok(bytes)) => bytes,
            Some(Err(detail)) => return Err(Stop::SourceFailed(detail)),
            None => return Err(Stop::SourceFailed("fetch task ended early".to_string())),
        };
        emit(&node.metrics, cursor, manifest, bytes, tx).await?;
    }
    Ok(())
}

/// How far a remote read runs ahead of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReadAhead {
    /// Verified chunks buffered between the fetch task and the sender.
    chunks: usize,
}

impl ReadAhead {
    /// Fits [`STREAM_READ_AHEAD_BYTES`] with chunks of `chunk_size` bytes,
    /// at least one.
    fn for_chunk_size(chunk_size: u64) -> ReadAhead {
        let chunks = (STREAM_READ_AHEAD_BYTES / chunk_size.max(1)).max(1);
        ReadAhead {
            chunks: usize::try_from(chunks).unwrap_or(usize::MAX),
        }
    }
}

/// A read of consecutive chunks from a remote replica.
struct RemoteFetch {
    file_id: String,
    first_chunk: u64,
    /// Committed BLAKE3 hashes of the chunks to read, in order.
    chunk_hashes: Vec<[u8; 32]>,
    max_chunk_bytes: usize,
}

impl RemoteFetch {
    /// Requests the chunks on the bulk stream `send`/`recv` and passes each
    /// on through `chunks` once it is verified against the committed
    /// manifest. Stops after the first failure, which it passes on too, or
    /// when the receiver is dropped.
    async fn run(
        self,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        chunks: mpsc::Sender<Result<Bytes, String>>,
    ) {
        if let Err(detail) = self.read(send, recv, &chunks).await {
            let _ = chunks.send(Err(detail)).await;
        }
    }

    async fn read(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        chunks: &mpsc::Sender<Result<Bytes, String>>,
    ) -> Result<(), String> {
        let last_chunk = self.first_chunk + self.chunk_hashes.len() as u64 - 1;
        let request = BulkRequest::Fetch {
            file_id: self.file_id.clone(),
            first_chunk: self.first_chunk as u32,
            last_chunk: last_chunk as u32,
        };
        let exchange = async {
            write_header(&mut send, &request, MAX_BULK_HEADER_BYTES).await?;
            let _ = send.finish();
            read_header(&mut recv, MAX_BULK_HEADER_BYTES).await
        };
        let reply = tokio::time::timeout(SOURCE_REPLY_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no reply within {SOURCE_REPLY_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        match reply {
            BulkReply::Ok => {}
            BulkReply::Failed { detail } => return Err(detail),
        }

        for (expected_index, expected_hash) in (self.first_chunk..).zip(&self.chunk_hashes) {
            let frame = tokio::time::timeout(
                CHUNK_TIMEOUT,
                read_chunk_frame(&mut recv, self.max_chunk_bytes),
            )
            .await
            .map_err(|_| format!("no chunk within {CHUNK_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
            let Some((index, bytes)) = frame else {
                return Err("stream ended early".to_string());
            };
            if u64::from(index) != expected_index {
                return Err(format!("sent chunk {index}, expected {expected_index}"));
            }
            if blake3::hash(&bytes).as_bytes() != expected_hash {
                return Err(format!("chunk {index} failed BLAKE3 verification"));
            }
            if chunks.send(Ok(bytes)).await.is_err() {
                // The stream moved on or the client went away.
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn read_ahead_of_default_chunks() {
        let read_ahead = ReadAhead::for_chunk_size(MIB);
        assert_eq!(read_ahead.chunks as u64, STREAM_READ_AHEAD_BYTES / MIB);
    }

    #[test]
    fn read_ahead_rounds_down_to_whole_chunks() {
        let chunk_size = 3 * MIB;
        let read_ahead = ReadAhead::for_chunk_size(chunk_size);
        assert!(read_ahead.chunks as u64 * chunk_size <= STREAM_READ_AHEAD_BYTES);
        assert!((read_ahead.chunks as u64 + 1) * chunk_size > STREAM_READ_AHEAD_BYTES);
    }

    #[test]
    fn read_ahead_of_huge_chunks_keeps_one() {
        assert_eq!(ReadAhead::for_chunk_size(16 * MIB).chunks, 1);
    }

    #[test]
    fn read_ahead_of_zero_chunk_size_is_bounded() {
        let read_ahead = ReadAhead::for_chunk_size(0);
        assert_eq!(read_ahead.chunks as u64, STREAM_READ_AHEAD_BYTES);
    }
}
