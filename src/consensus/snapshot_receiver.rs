//! The receiving end of a snapshot sent by the leader.
//!
//! openraft hands the leader's network a whole snapshot file; the network
//! sends it as a series of [`SnapshotChunk`] RPCs, in order, the last one
//! marked `done`. The follower writes the chunks to one file under its
//! snapshot directory and, after the last one, gives the file to openraft,
//! which installs it through the state machine.
//!
//! One transfer is received at a time. A chunk at offset 0 starts a new
//! transfer and discards an unfinished one, so a leader that restarts a
//! transfer after a failure needs no clean-up first.

use std::path::PathBuf;

use openraft::raft::SnapshotResponse;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{DispotifyRaft, LogId, Snapshot, SnapshotFile, SnapshotMeta, TypeConfig, Vote};

/// One piece of a snapshot, sent by the leader to a follower.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The leader's vote, checked by openraft when the snapshot is
    /// installed.
    pub vote: Vote,
    /// What the whole snapshot covers; the same in every chunk.
    pub meta: SnapshotMeta,
    /// Position of `data` in the snapshot file.
    pub offset: u64,
    pub data: Vec<u8>,
    /// True on the last chunk.
    pub done: bool,
}

/// Why a follower refused a snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotChunkError {
    /// The chunk does not continue the transfer in progress; the leader
    /// starts the snapshot again from offset 0.
    #[error("snapshot chunk at offset {offset} does not follow the {received} bytes received")]
    OutOfOrder { offset: u64, received: u64 },
    #[error("cannot store the received snapshot: {detail}")]
    Storage { detail: String },
    #[error("raft is stopped on the receiver: {detail}")]
    RaftStopped { detail: String },
}

/// A transfer under way: the file written so far and what it belongs to.
struct InProgress {
    vote: Vote,
    last_log_id: Option<LogId>,
    file: tokio::fs::File,
    received: u64,
}

impl InProgress {
    fn continued_by(&self, chunk: &SnapshotChunk) -> bool {
        self.vote == chunk.vote
            && self.last_log_id == chunk.meta.last_log_id
            && self.received == chunk.offset
    }
}

/// Receives snapshot chunks into a file and installs the snapshot once
/// complete.
pub struct SnapshotReceiver {
    path: PathBuf,
    in_progress: Mutex<Option<InProgress>>,
}

impl SnapshotReceiver {
    /// Receives into the file at `path`, which the state machine moves into
    /// place when it installs the snapshot.
    pub fn new(path: PathBuf) -> SnapshotReceiver {
        SnapshotReceiver {
            path,
            in_progress: Mutex::new(None),
        }
    }

    /// Stores one chunk. After the last chunk, installs the snapshot and
    /// returns openraft's response for the leader; before it, returns
    /// `None`.
    pub async fn receive(
        &self,
        raft: &DispotifyRaft,
        chunk: SnapshotChunk,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, SnapshotChunkError> {
        let storage = |e: std::io::Error| SnapshotChunkError::Storage {
            detail: e.to_string(),
        };
        let mut in_progress = self.in_progress.lock().await;
        if chunk.offset == 0 {
            let file = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)
                .await
                .map_err(storage)?;
            tracing::info!(log_index = ?chunk.meta.last_log_id.as_ref().map(|l| l.index), "receiving snapshot");
            *in_progress = Some(InProgress {
                vote: chunk.vote,
                last_log_id: chunk.meta.last_log_id,
                file,
                received: 0,
            });
        }

        let progress = match in_progress.as_mut() {
            Some(progress) if progress.continued_by(&chunk) => progress,
            other => {
                return Err(SnapshotChunkError::OutOfOrder {
                    offset: chunk.offset,
                    received: other.map_or(0, |p| p.received),
                })
            }
        };
        progress
            .file
            .write_all(&chunk.data)
            .await
            .map_err(storage)?;
        progress.received += chunk.data.len() as u64;
        if !chunk.done {
            return Ok(None);
        }

        let Some(InProgress { mut file, .. }) = in_progress.take() else {
            return Ok(None);
        };
        file.flush().await.map_err(storage)?;
        let snapshot = Snapshot {
            meta: chunk.meta,
            snapshot: SnapshotFile {
                path: self.path.clone(),
                file,
            },
        };
        raft.install_full_snapshot(chunk.vote, snapshot)
            .await
            .map(Some)
            .map_err(|e| SnapshotChunkError::RaftStopped {
                detail: e.to_string(),
            })
    }
}
