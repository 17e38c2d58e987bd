//! The Raft state machine: committed entries applied to the catalog
//! database, and snapshots of that database.
//!
//! The last applied log id and the last membership are written in the same
//! database transaction as the change each entry makes, so after a crash the
//! catalog and the applied position never disagree.
//!
//! A snapshot is a file under `<data dir>/raft/snapshots`: `current.snap`
//! contains the catalog export and `current.meta` its [`SnapshotMeta`]. Both are
//! written to a temporary name, fsynced and renamed, the metadata last.

use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::io::AsyncSeekExt;

use super::{LogId, Request, Response, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::catalog::{AppliedState, ApplyOutcome, Catalog, EntryClock};
use crate::model::{Command, WriteOutcome};

/// The last applied log id and the membership in force after it.
type AppliedPosition = (Option<LogId>, StoredMembership);

const SNAPSHOT_FILE: &str = "current.snap";
const SNAPSHOT_META_FILE: &str = "current.meta";
/// File name of a snapshot received from the leader, until it is
/// installed.
const RECEIVE_FILE: &str = "receive.tmp";

/// A snapshot's data: an open file and where it lies, so installing a
/// received snapshot can move its file into place.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub file: tokio::fs::File,
}

impl SnapshotFile {
    async fn open(path: PathBuf) -> io::Result<SnapshotFile> {
        let file = tokio::fs::File::open(&path).await?;
        Ok(SnapshotFile { path, file })
    }
}

/// Applies committed entries to the catalog.
#[derive(Clone)]
pub struct StateMachine {
    catalog: Catalog,
    snapshot_dir: PathBuf,
}

impl StateMachine {
    /// Opens the state machine over `catalog`, keeping snapshots in
    /// `snapshot_dir` (created when missing).
    pub fn open(catalog: Catalog, snapshot_dir: PathBuf) -> std::io::Result<StateMachine> {
        std::fs::create_dir_all(&snapshot_dir)?;
        Ok(StateMachine {
            catalog,
            snapshot_dir,
        })
    }

    /// Returns the path a snapshot received from the leader is written to
    /// before openraft installs it.
    pub fn receive_path(&self) -> PathBuf {
        self.snapshot_dir.join(RECEIVE_FILE)
    }

    async fn load_applied(&self) -> io::Result<AppliedPosition> {
        let Some(state) = self
            .catalog
            .applied_state()
            .await
            .map_err(io::Error::other)?
        else {
            return Ok((None, StoredMembership::default()));
        };
        decode_applied(&state)
    }

    /// Applies one entry and records its log id, and the membership when
    /// the entry carries one, in the same catalog transaction.
    async fn apply_entry(
        &self,
        entry: super::Entry,
        membership: &mut StoredMembership,
    ) -> io::Result<Response> {
        let log_id = entry.log_id;
        let mut clock = EntryClock {
            log_index: log_id.index,
            at_ms: 0,
        };
        let command = match entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Normal(request) => {
                clock.at_ms = request.at_ms;
                Some(stamp(request))
            }
            EntryPayload::Membership(m) => {
                *membership = StoredMembership::new(Some(log_id), m);
                None
            }
        };
        let state = encode_applied(&log_id, membership)?;
        let outcome = self
            .catalog
            .apply(&state, command.as_ref(), clock)
            .await
            .map_err(|e| io::Error::other(format!("apply log index {}: {e}", log_id.index)))?;
        Ok(Response {
            outcome: write_outcome(outcome),
        })
    }
}

fn decode_applied(state: &AppliedState) -> io::Result<AppliedPosition> {
    let last_applied = match &state.last_applied {
        Some(json) => Some(serde_json::from_str(json).map_err(io::Error::other)?),
        None => None,
    };
    let membership = serde_json::from_str(&state.last_membership).map_err(io::Error::other)?;
    Ok((last_applied, membership))
}

fn encode_applied(last_applied: &LogId, membership: &StoredMembership) -> io::Result<AppliedState> {
    Ok(AppliedState {
        last_applied: Some(serde_json::to_string(last_applied).map_err(io::Error::other)?),
        last_membership: serde_json::to_string(membership).map_err(io::Error::other)?,
    })
}

/// Writes `bytes` to `dir/name` through a temporary file, fsyncs it, renames
/// it into place and fsyncs the directory.
fn write_durably(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let file = std::fs::File::create(&tmp)?;
    let mut writer = BufWriter::new(file);
    write(&mut writer)?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Sets the commit time of a new track from the leader's timestamp on the
/// entry, so every replica stores the same value.
fn stamp(request: Request) -> Command {
    match request.command {
        Command::AddTrack {
            mut track,
            manifest,
            cover,
        } => {
            track.added_at_ms = request.at_ms;
            Command::AddTrack {
                track,
                manifest,
                cover,
            }
        }
        other => other,
    }
}

/// Converts an apply outcome into the part returned to the entry's proposer.
fn write_outcome(outcome: ApplyOutcome) -> WriteOutcome {
    match outcome {
        ApplyOutcome::TrackAdded { .. }
        | ApplyOutcome::ReplicasSet { .. }
        | ApplyOutcome::LockReleased { .. }
        | ApplyOutcome::FaultRecorded { .. }
        | ApplyOutcome::DrainingSet { .. } => WriteOutcome::Changed,
        ApplyOutcome::NoCommand
        | ApplyOutcome::TrackAlreadyPresent { .. }
        | ApplyOutcome::ReplicasTrackNotFound { .. }
        | ApplyOutcome::FaultTrackNotFound { .. }
        | ApplyOutcome::DrainingUnchanged { .. } => WriteOutcome::Unchanged,
        ApplyOutcome::LockGranted {
            token,
            expires_at_ms,
            ..
        } => WriteOutcome::LockGranted {
            token,
            expires_at_ms,
        },
        ApplyOutcome::LockHeld {
            owner,
            expires_at_ms,
            ..
        } => WriteOutcome::LockHeld {
            owner,
            expires_at_ms,
        },
        ApplyOutcome::LockNotHeld { name } => WriteOutcome::LockNotHeld { lock: name },
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    /// Exports the catalog to a file, fsyncs it, then moves it and its
    /// metadata into place.
    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let tmp_path = self.snapshot_dir.join("build.tmp");
        let file = std::fs::File::create(&tmp_path)?;
        let mut writer = BufWriter::new(file);
        let state = self
            .catalog
            .export_snapshot(&mut writer)
            .await
            .map_err(io::Error::other)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);

        let (last_log_id, last_membership) = match &state {
            Some(state) => decode_applied(state)?,
            None => (None, StoredMembership::default()),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
        };

        let path = self.snapshot_dir.join(SNAPSHOT_FILE);
        std::fs::rename(&tmp_path, &path)?;
        write_meta(&self.snapshot_dir, &meta)?;
        tracing::info!(log_index = ?meta.last_log_id.as_ref().map(|l| l.index), "built snapshot");

        Ok(Snapshot {
            meta,
            snapshot: SnapshotFile::open(path).await?,
        })
    }
}

fn write_meta(dir: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    write_durably(dir, SNAPSHOT_META_FILE, |w| w.write_all(&bytes))
}

fn read_meta(dir: &Path) -> std::io::Result<Option<SnapshotMeta>> {
    let path = dir.join(SNAPSHOT_META_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(std::io::Error::other)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> io::Result<AppliedPosition> {
        self.load_applied().await
    }

    /// Applies each entry in its own catalog transaction and sends the
    /// response to its proposer, if any, once that transaction has
    /// committed.
    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let (_, mut membership) = self.load_applied().await?;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = self.apply_entry(entry, &mut membership).await?;
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// Replaces the catalog with the snapshot's content, then keeps the
    /// snapshot's file and metadata as the current snapshot.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> io::Result<()> {
        let SnapshotFile { path, mut file } = snapshot;
        file.sync_all().await?;
        file.seek(std::io::SeekFrom::Start(0)).await?;
        let file = file.into_std().await;
        self.catalog
            .import_snapshot(BufReader::new(file))
            .await
            .map_err(io::Error::other)?;

        let current = self.snapshot_dir.join(SNAPSHOT_FILE);
        if path != current {
            std::fs::rename(&path, &current)?;
        }
        write_meta(&self.snapshot_dir, meta)?;
        tracing::info!(log_index = ?meta.last_log_id.as_ref().map(|l| l.index), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let Some(meta) = read_meta(&self.snapshot_dir)? else {
            return Ok(None);
        };
        let snapshot = SnapshotFile::open(self.snapshot_dir.join(SNAPSHOT_FILE)).await?;
        Ok(Some(Snapshot { meta, snapshot }))
    }
}
