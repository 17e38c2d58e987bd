//! The receiving end of a snapshot sent by the leader.
//!
//! openraft hands the leader's network a whole snapshot file. The network
//! sends it as a series of [`SnapshotChunk`] RPCs, in order, the last one
//! marked `done`. The follower writes the chunks to one file under its
//! snapshot directory and, after the last one, gives the file to openraft,
//! which installs it through the state machine.
//!
//! One transfer is received at a time. A chunk at offset 0 starts a new
//! transfer and discards an unfinished one, so a leader that restarts a
//! transfer after a failure needs no clean-up first.

use std::path::{Path, PathBuf};

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
    /// Metadata of the whole snapshot, the same in every chunk.
    pub meta: SnapshotMeta,
    /// Position of `data` in the snapshot file.
    pub offset: u64,
    pub data: Vec<u8>,
    /// True on the last chunk.
    pub done: bool,
}

/// Reason a follower rejected a snapshot chunk.
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
    /// `None`. The lock is held until the install ends, so a new transfer
    /// cannot truncate the file that is being installed.
    pub async fn receive(
        &self,
        raft: &DispotifyRaft,
        chunk: SnapshotChunk,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, SnapshotChunkError> {
        let mut in_progress = self.in_progress.lock().await;
        let Some((vote, snapshot)) = accept(&mut in_progress, &self.path, chunk).await? else {
            return Ok(None);
        };
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map(Some)
            .map_err(|e| SnapshotChunkError::RaftStopped {
                detail: e.to_string(),
            })
    }
}

/// Writes `chunk` to the file at `path` as part of the transfer in
/// `in_progress`, or starts a new transfer at offset 0. Returns the
/// leader's vote and the whole snapshot after the last chunk.
async fn accept(
    in_progress: &mut Option<InProgress>,
    path: &Path,
    chunk: SnapshotChunk,
) -> Result<Option<(Vote, Snapshot)>, SnapshotChunkError> {
    let storage = |e: std::io::Error| SnapshotChunkError::Storage {
        detail: e.to_string(),
    };
    if chunk.offset == 0 {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
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

    // The transfer is taken out while this chunk is handled, so a chunk
    // that fails leaves no transfer behind and the leader starts over.
    let mut progress = match in_progress.take() {
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
        *in_progress = Some(progress);
        return Ok(None);
    }

    progress.file.flush().await.map_err(storage)?;
    let snapshot = Snapshot {
        meta: chunk.meta,
        snapshot: SnapshotFile {
            path: path.to_path_buf(),
            file: progress.file,
        },
    };
    Ok(Some((chunk.vote, snapshot)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    fn chunk(offset: u64, data: &[u8], done: bool) -> SnapshotChunk {
        SnapshotChunk {
            vote: Vote::new_committed(2, 7),
            meta: SnapshotMeta::default(),
            offset,
            data: data.to_vec(),
            done,
        }
    }

    async fn contents(snapshot: Snapshot) -> Vec<u8> {
        let mut file = snapshot.snapshot.file;
        file.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await.expect("read");
        bytes
    }

    #[tokio::test]
    async fn chunks_in_order_make_the_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("receive.tmp");
        let mut in_progress = None;

        let first = accept(&mut in_progress, &path, chunk(0, b"abc", false)).await;
        assert!(matches!(first, Ok(None)));
        let last = accept(&mut in_progress, &path, chunk(3, b"de", true))
            .await
            .expect("last chunk accepted")
            .expect("snapshot complete");

        assert_eq!(last.0, Vote::new_committed(2, 7));
        assert_eq!(last.1.snapshot.path, path);
        assert_eq!(contents(last.1).await, b"abcde");
        assert!(in_progress.is_none());
    }

    #[tokio::test]
    async fn chunk_out_of_order_ends_the_transfer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("receive.tmp");
        let mut in_progress = None;

        accept(&mut in_progress, &path, chunk(0, b"abc", false))
            .await
            .expect("first chunk accepted");
        let skipped = accept(&mut in_progress, &path, chunk(5, b"fg", false)).await;

        assert_eq!(
            skipped.err(),
            Some(SnapshotChunkError::OutOfOrder {
                offset: 5,
                received: 3
            })
        );
        let resumed = accept(&mut in_progress, &path, chunk(3, b"de", true)).await;
        assert_eq!(
            resumed.err(),
            Some(SnapshotChunkError::OutOfOrder {
                offset: 3,
                received: 0
            })
        );
    }

    #[tokio::test]
    async fn offset_zero_restarts_the_transfer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("receive.tmp");
        let mut in_progress = None;

        accept(&mut in_progress, &path, chunk(0, b"old-data", false))
            .await
            .expect("first chunk accepted");
        let restarted = accept(&mut in_progress, &path, chunk(0, b"new", true))
            .await
            .expect("restart accepted")
            .expect("snapshot complete");

        assert_eq!(contents(restarted.1).await, b"new");
    }
}
