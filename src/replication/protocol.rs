//! Messages at the head of bulk streams.

use serde::{Deserialize, Serialize};

use crate::model::FileId;

/// Largest bulk stream header or reply, in bytes.
pub const MAX_BULK_HEADER_BYTES: usize = 4096;

/// The first message on a bulk stream: what the opener wants.
#[derive(Debug, Serialize, Deserialize)]
pub enum BulkRequest {
    /// The opener sends chunks of a blob announced with `replicate_begin`,
    /// each frame tagged with its chunk index, then finishes the stream.
    Push { file_id: FileId },
    /// The opener wants chunks `first_chunk..=last_chunk` of a blob.
    Fetch {
        file_id: FileId,
        first_chunk: u32,
        last_chunk: u32,
    },
}

/// The receiver's answer: after a push, once every chunk is written; before
/// the chunk frames of a fetch.
#[derive(Debug, Serialize, Deserialize)]
pub enum BulkReply {
    Ok,
    Failed { detail: String },
}
