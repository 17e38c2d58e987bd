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

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use tokio::io::AsyncSeekExt;

use super::{Member, RaftId, Request, Response, TypeConfig};
use crate::catalog::{AppliedState, ApplyOutcome, Catalog, EntryClock};
use crate::model::{Command, WriteOutcome};

/// The last applied log id and the membership in force after it.
type AppliedPosition = (Option<LogId<RaftId>>, StoredMembership<RaftId, Member>);

const SNAPSHOT_FILE: &str = "current.snap";
const SNAPSHOT_META_FILE: &str = "current.meta";

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

    async fn load_applied(&self) -> Result<AppliedPosition, AnyError> {
        let Some(state) = self
            .catalog
            .applied_state()
            .await
            .map_err(|e| AnyError::new(&e))?
        else {
            return Ok((None, StoredMembership::default()));
        };
        decode_applied(&state)
    }
}

fn decode_applied(state: &AppliedState) -> Result<AppliedPosition, AnyError> {
    let last_applied = match &state.last_applied {
        Some(json) => Some(serde_json::from_str(json).map_err(|e| AnyError::new(&e))?),
        None => None,
    };
    let membership = serde_json::from_str(&state.last_membership).map_err(|e| AnyError::new(&e))?;
    Ok((last_applied, membership))
}

fn encode_applied(
    last_applied: &LogId<RaftId>,
    membership: &StoredMembership<RaftId, Member>,
) -> Result<AppliedState, AnyError> {
    Ok(AppliedState {
        last_applied: Some(serde_json::to_string(last_applied).map_err(|e| AnyError::new(&e))?),
        last_membership: serde_json::to_string(membership).map_err(|e| AnyError::new(&e))?,
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
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftId>> {
        let tmp_path = self.snapshot_dir.join("build.tmp");
        let file = std::fs::File::create(&tmp_path)
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        let mut writer = BufWriter::new(file);
        let state = self
            .catalog
            .export_snapshot(&mut writer)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        let file = writer
            .into_inner()
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e.into_error())))?;
        file.sync_all()
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        drop(file);

        let (last_log_id, last_membership) = match &state {
            Some(state) => {
                decode_applied(state).map_err(|e| StorageIOError::write_snapshot(None, e))?
            }
            None => (None, StoredMembership::default()),
        };
        let snapshot_id = match &last_log_id {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id.term,
                log_id.index,
                rand::random::<u32>()
            ),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };

        std::fs::rename(&tmp_path, self.snapshot_dir.join(SNAPSHOT_FILE))
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        write_meta(&self.snapshot_dir, &meta)
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, log_index = ?meta.last_log_id.map(|l| l.index), "built snapshot");

        let file = tokio::fs::File::open(self.snapshot_dir.join(SNAPSHOT_FILE))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

fn write_meta(dir: &Path, meta: &SnapshotMeta<RaftId, Member>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    write_durably(dir, SNAPSHOT_META_FILE, |w| w.write_all(&bytes))
}

fn read_meta(dir: &Path) -> std::io::Result<Option<SnapshotMeta<RaftId, Member>>> {
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
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<AppliedPosition, StorageError<RaftId>> {
        self.load_applied()
            .await
            .map_err(|e| StorageIOError::read_state_machine(e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (_, mut membership) = self
            .load_applied()
            .await
            .map_err(StorageIOError::read_state_machine)?;
        let mut responses = Vec::new();
        for entry in entries {
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
                    membership = StoredMembership::new(Some(log_id), m);
                    None
                }
            };
            let state = encode_applied(&log_id, &membership)
                .map_err(|e| StorageIOError::apply(log_id, e))?;
            let outcome = self
                .catalog
                .apply(&state, command.as_ref(), clock)
                .await
                .map_err(|e| StorageIOError::apply(log_id, AnyError::new(&e)))?;
            responses.push(Response {
                outcome: write_outcome(outcome),
            });
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<RaftId>> {
        let path = self.snapshot_dir.join("receive.tmp");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, Member>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<RaftId>> {
        let signature = Some(meta.signature());
        snapshot
            .sync_all()
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e)))?;
        snapshot
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), AnyError::new(&e)))?;
        let file = snapshot.into_std().await;
        self.catalog
            .import_snapshot(BufReader::new(file))
            .await
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), AnyError::new(&e)))?;

        std::fs::rename(
            self.snapshot_dir.join("receive.tmp"),
            self.snapshot_dir.join(SNAPSHOT_FILE),
        )
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e)))?;
        write_meta(&self.snapshot_dir, meta)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e)))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, log_index = ?meta.last_log_id.map(|l| l.index), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftId>> {
        let Some(meta) = read_meta(&self.snapshot_dir)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?
        else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(self.snapshot_dir.join(SNAPSHOT_FILE))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
