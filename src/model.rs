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
    /// Replaces the replica set recorded for a file.
    SetReplicas {
        file_id: FileId,
        replicas: Vec<NodeId>,
    },
}
