//! Data types shared by the catalog, the blob store, the Raft state machine
//! and the public API.
//!
//! These types cross the wire inside Raft entries encoded with postcard, which
//! is not self-describing: no `#[serde(flatten)]`, `untagged` or
//! `skip_serializing_if` here.

use serde::{Deserialize, Serialize};

/// A node's identity as given to `--id` and bound to its certificate.
pub type NodeId = String;

/// A file's identity: the lowercase hex SHA-256 of its content, so identical
/// uploads share one id and a name clash can never overwrite another song.
pub type FileId = String;

/// Integrity data for one blob: its size, its SHA-256 and a BLAKE3 hash per
/// chunk, so a reader can verify each chunk on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub size_bytes: u64,
    pub sha256: [u8; 32],
    pub chunk_size: u32,
    pub chunk_hashes: Vec<[u8; 32]>,
}

/// Tags read from an audio file. Every field is optional because real files
/// carry anything from a full tag set to nothing at all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackTags {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
    pub album_artist: Option<String>,
    pub track_number: Option<u32>,
    pub track_total: Option<u32>,
    pub disc_number: Option<u32>,
    pub disc_total: Option<u32>,
    pub year: Option<i32>,
    pub genre: Option<String>,
    pub duration_ms: Option<u64>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
    pub bitrate_kbps: Option<u32>,
}

/// Embedded cover art: the picture chosen to show for a track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cover {
    pub mime: String,
    pub data: Vec<u8>,
}

/// Recognized format of a file: its container format and the MIME type its
/// stream is served with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioFormat {
    /// Short name, for example `mp3`, `flac`, `ogg`, `opus`, `m4a`, `wav`.
    pub format: String,
    /// MIME type, for example `audio/mpeg`.
    pub content_type: String,
}

/// One track in the catalog, as committed through Raft and returned by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub file_id: FileId,
    /// The name the file was uploaded under, without any directory part.
    pub file_name: String,
    /// The title tag, or the file name without its extension when the file
    /// has no title.
    pub title: String,
    pub tags: TrackTags,
    pub format: String,
    pub content_type: String,
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the content (equal to `file_id`).
    pub sha256: String,
    pub has_cover: bool,
    /// The nodes that hold a verified copy, in ring order.
    pub replicas: Vec<NodeId>,
    /// When the track was committed, in milliseconds since the Unix epoch,
    /// from the Raft leader's clock.
    pub added_at_ms: i64,
}

/// A change to the catalog, proposed through Raft and applied in log order by
/// every node's state machine.
// A command is built once per write and moved along, never stored in bulk,
// so the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Adds a track whose blob has reached the write quorum. Applying it
    /// again for the same `file_id` changes nothing.
    AddTrack {
        track: Track,
        manifest: Manifest,
        cover: Option<Cover>,
    },
    /// Replaces the replica set recorded for a file. `verified` names the
    /// nodes of the new set whose copy was just written and verified, which
    /// clears any fault reported against them; faults of nodes left out of
    /// the set are cleared too. With a `fence`, the entry applies only while
    /// that lock is still held under that token, so a repair whose lock
    /// expired or moved to another holder cannot overwrite a newer decision.
    SetReplicas {
        file_id: FileId,
        replicas: Vec<NodeId>,
        verified: Vec<NodeId>,
        fence: Option<Fence>,
    },
    /// Takes the lock `name` for `owner` for `ttl_ms` milliseconds from the
    /// entry's leader timestamp, or renews it when `owner` holds it already.
    /// Granted when the lock is free, expired or held by `owner`.
    AcquireLock {
        name: String,
        owner: String,
        ttl_ms: u64,
    },
    /// Frees the lock `name` when `owner` holds it under `token`.
    ReleaseLock {
        name: String,
        owner: String,
        token: u64,
    },
    /// Records that `node_id`'s copy of a file is corrupt or missing. The
    /// copy is no longer counted as a replica until a repair replaces it.
    ReportReplicaFault {
        file_id: FileId,
        node_id: NodeId,
        fault: ReplicaFault,
    },
    /// Starts (`draining: true`) or ends the decommissioning of a member:
    /// while it drains, placement leaves it out and repair moves its copies
    /// to other nodes.
    SetDraining { node_id: NodeId, draining: bool },
}

/// A lock and the token it must still be held under for an entry to apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub lock: String,
    pub token: u64,
}

/// What is wrong with one node's copy of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaFault {
    /// A chunk or the whole file does not match its hashes; the copy is
    /// quarantined and never served.
    Corrupt,
    /// The node is listed as a replica but has no copy.
    Missing,
}

impl ReplicaFault {
    /// The label stored in the catalog and shown by the API.
    pub fn label(self) -> &'static str {
        match self {
            ReplicaFault::Corrupt => "corrupt",
            ReplicaFault::Missing => "missing",
        }
    }

    pub fn from_label(label: &str) -> Option<ReplicaFault> {
        match label {
            "corrupt" => Some(ReplicaFault::Corrupt),
            "missing" => Some(ReplicaFault::Missing),
            _ => None,
        }
    }
}

/// A lock as held in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub name: String,
    pub owner: String,
    /// The fencing token: the log index of the entry that granted the lock.
    pub token: u64,
    /// When the lock expires, by the leader timestamps of the log entries,
    /// in milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

/// What a committed write did, as decided by the state machine. Every node
/// decides the same for the same entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// The entry changed the replicated state.
    Changed,
    /// The entry was valid but changed nothing, for example an `AddTrack`
    /// for a file already in the catalog.
    #[default]
    Unchanged,
    /// `AcquireLock` granted or renewed the lock.
    LockGranted { token: u64, expires_at_ms: i64 },
    /// `AcquireLock` found the lock held by another owner.
    LockHeld { owner: String, expires_at_ms: i64 },
    /// `ReleaseLock` or a fenced entry named a lock that is not held under
    /// that owner and token (it expired, was released or was taken over).
    LockNotHeld { lock: String },
}

impl WriteOutcome {
    /// Whether the entry changed the replicated state.
    pub fn changed(&self) -> bool {
        matches!(
            self,
            WriteOutcome::Changed | WriteOutcome::LockGranted { .. }
        )
    }
}
