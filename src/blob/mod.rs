//! The on-disk blob store: the content of every file this node has a
//! replica of, with the integrity data to verify it.
//!
//! Layout under the store's root directory:
//!
//! ```text
//! blobs/<first 2 hex digits of file_id>/<file_id>   committed blobs
//! staging/                                          temporary files
//! quarantine/<file_id>.<unix ms>                     blobs found corrupt, never served
//! ```
//!
//! A blob is written to a file in `staging/`, fsynced, renamed into
//! `blobs/` and the directory fsynced, so after a crash a blob is either
//! absent or complete. `staging/` is on the same filesystem as `blobs/`, so
//! the rename is atomic. It is emptied when the store opens, because
//! whatever it contains then belongs to an upload or a replication that the
//! crash interrupted.
//!
//! Integrity: a blob's [`Manifest`] records its size, its SHA-256 (whose hex
//! form is the `file_id`) and a BLAKE3 hash per chunk. New content is hashed
//! while it is written ([`StagingWriter`]); a replica verifies every chunk
//! as it arrives and the whole file before it commits ([`ReceivingBlob`]);
//! every read verifies the chunks it returns, so corruption on disk is
//! reported as [`BlobError::Corrupt`] and never served.
//!
//! One process owns a root directory: opening a second store on the same
//! root deletes the first one's staging files.

mod quarantine;
mod read;
mod receive;
mod staging;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::model::{FileId, Manifest};

pub use quarantine::Quarantine;
pub use receive::ReceivingBlob;
pub use staging::{StagedBlob, StagingWriter};

/// Default chunk size for new blobs. A chunk is the unit of verification,
/// transfer and read, so it is held in memory whole: 1 MiB keeps that small
/// while a 10 MiB song still has only 10 chunk hashes (320 bytes of
/// manifest).
pub const DEFAULT_CHUNK_SIZE_BYTES: u32 = 1024 * 1024;

/// Largest chunk size accepted in a manifest or at open. A read or a
/// received chunk is buffered whole, so this caps the memory one chunk
/// operation takes, whatever a peer's manifest declares.
pub const MAX_CHUNK_SIZE_BYTES: u32 = 16 * 1024 * 1024;

/// Length of a file id: the hex form of a 32-byte SHA-256.
const FILE_ID_LEN: usize = 64;

/// Failure of a blob store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("invalid file id {file_id:?}: expected 64 lowercase hex characters")]
    InvalidFileId { file_id: String },

    #[error("invalid chunk size {chunk_size}: expected 1 to {MAX_CHUNK_SIZE_BYTES} bytes")]
    InvalidChunkSize { chunk_size: u32 },

    #[error(
        "manifest of {file_id} lists {actual} chunk hashes, expected {expected} for {size_bytes} bytes"
    )]
    ChunkCountMismatch {
        file_id: FileId,
        size_bytes: u64,
        expected: u64,
        actual: usize,
    },

    #[error("manifest sha-256 {manifest_sha256} does not match file id {file_id}")]
    FileIdMismatch {
        file_id: FileId,
        manifest_sha256: String,
    },

    #[error("blob {file_id} not found")]
    NotFound { file_id: FileId },

    #[error("chunk {chunk_index} of blob {file_id} is corrupt on disk")]
    Corrupt { file_id: FileId, chunk_index: u32 },

    #[error(
        "chunk index {chunk_index} is out of range for blob {file_id} of {chunk_count} chunks"
    )]
    ChunkOutOfRange {
        file_id: FileId,
        chunk_index: u32,
        chunk_count: usize,
    },

    #[error(
        "chunk {chunk_index} of {file_id} has {actual_bytes} bytes, expected {expected_bytes}"
    )]
    ChunkLengthMismatch {
        file_id: FileId,
        chunk_index: u32,
        expected_bytes: u64,
        actual_bytes: usize,
    },

    #[error("chunk {chunk_index} of {file_id} does not match its blake3 hash in the manifest")]
    ChunkHashMismatch { file_id: FileId, chunk_index: u32 },

    #[error("missing {missing} of {chunk_count} chunks of {file_id}, the first is chunk {first_missing}")]
    MissingChunks {
        file_id: FileId,
        missing: usize,
        chunk_count: usize,
        first_missing: u32,
    },

    #[error("received content does not match file id {file_id}: its sha-256 is {actual_sha256}")]
    ContentMismatch {
        file_id: FileId,
        actual_sha256: String,
    },

    #[error("file of {file_id} has {actual_bytes} bytes, expected {expected_bytes}")]
    SizeMismatch {
        file_id: FileId,
        expected_bytes: u64,
        actual_bytes: u64,
    },

    #[error("range {start}-{end_inclusive} is outside blob {file_id} of {size_bytes} bytes")]
    RangeOutOfBounds {
        file_id: FileId,
        start: u64,
        end_inclusive: u64,
        size_bytes: u64,
    },

    #[error("staging writer is unusable after an earlier write failed or was cancelled")]
    WriterUnusable,

    #[error("failed to {operation} {path}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("blob store task panicked or was cancelled")]
    TaskFailed {
        #[source]
        source: tokio::task::JoinError,
    },
}

impl BlobError {
    /// Returns a mapper from an I/O error to [`BlobError::Io`] naming the
    /// failed operation and its path, for use with `map_err`.
    fn io(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BlobError {
        let path = path.to_path_buf();
        move |source| BlobError::Io {
            operation,
            path,
            source,
        }
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T, F>(work: F) -> Result<T, BlobError>
where
    F: FnOnce() -> Result<T, BlobError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| BlobError::TaskFailed { source })?
}

/// Paths of a store's directories.
#[derive(Debug)]
struct Layout {
    blobs: PathBuf,
    staging: PathBuf,
    quarantine: PathBuf,
    /// Held across every rename into `blobs/` and across a quarantine's
    /// check that the copy it found corrupt is still the one in place, so a
    /// quarantine never moves a verified copy that replaced a corrupt one.
    installs: std::sync::Mutex<()>,
}

impl Layout {
    fn blob_path(&self, file_id: &str) -> PathBuf {
        self.blobs.join(&file_id[..2]).join(file_id)
    }

    /// Takes [`Layout::installs`]. It guards no data, only the order of
    /// renames, so a poisoned lock is still usable.
    fn lock_installs(&self) -> std::sync::MutexGuard<'_, ()> {
        self.installs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Renames the fsynced file `from` to `to` in `blobs/`, replacing any
    /// copy there, and makes the rename durable.
    fn install(&self, from: &Path, to: &Path) -> Result<(), BlobError> {
        let _installing = self.lock_installs();
        rename_durably(from, to)
    }
}

/// The blob store of one node. Cloning it is cheap and clones share the
/// same directories.
#[derive(Clone, Debug)]
pub struct BlobStore {
    layout: Arc<Layout>,
    chunk_size: u32,
}

impl BlobStore {
    /// Opens the store under `root`, creating its directories, and deletes
    /// what a previous run left in `staging/`. `chunk_size` is the chunk
    /// size of blobs written from now on; existing blobs keep theirs.
    pub async fn open(root: PathBuf, chunk_size: u32) -> Result<BlobStore, BlobError> {
        check_chunk_size(chunk_size)?;
        let layout = Layout {
            blobs: root.join("blobs"),
            staging: root.join("staging"),
            quarantine: root.join("quarantine"),
            installs: std::sync::Mutex::new(()),
        };

        let layout = blocking(move || {
            for dir in [&layout.blobs, &layout.staging, &layout.quarantine] {
                std::fs::create_dir_all(dir).map_err(BlobError::io("create directory", dir))?;
            }
            create_shard_dirs(&layout.blobs)?;
            let removed = clear_dir(&layout.staging)?;
            if removed > 0 {
                tracing::info!(
                    removed,
                    staging = %layout.staging.display(),
                    "removed leftover staging files from an interrupted run"
                );
            }
            Ok(layout)
        })
        .await?;

        tracing::debug!(blobs = %layout.blobs.display(), chunk_size, "opened blob store");
        Ok(BlobStore {
            layout: Arc::new(layout),
            chunk_size,
        })
    }

    /// Chunk size of blobs written from now on.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Returns whether committed blob `file_id` exists. An invalid id is
    /// never contained.
    pub async fn contains(&self, file_id: &str) -> bool {
        if validate_file_id(file_id).is_err() {
            return false;
        }
        let path = self.layout.blob_path(file_id);
        tokio::fs::try_exists(&path).await.unwrap_or(false)
    }

    /// Size of committed blob `file_id` on disk.
    pub async fn size_bytes(&self, file_id: &str) -> Result<u64, BlobError> {
        validate_file_id(file_id)?;
        let path = self.layout.blob_path(file_id);
        match tokio::fs::metadata(&path).await {
            Ok(metadata) => Ok(metadata.len()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound {
                file_id: file_id.to_string(),
            }),
            Err(error) => Err(BlobError::io("read metadata of", &path)(error)),
        }
    }

    /// Deletes committed blob `file_id`. Returns whether it existed.
    pub async fn remove(&self, file_id: &str) -> Result<bool, BlobError> {
        validate_file_id(file_id)?;
        let path = self.layout.blob_path(file_id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                tracing::debug!(file_id, "removed blob");
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(BlobError::io("remove", &path)(error)),
        }
    }

    /// Lists the file ids of all committed blobs, sorted. Entries whose name
    /// is not a valid file id, or that sit in the wrong shard directory, are
    /// skipped.
    pub async fn inventory(&self) -> Result<Vec<FileId>, BlobError> {
        let layout = self.layout.clone();
        blocking(move || {
            let mut file_ids = Vec::new();
            for shard in read_dir_names(&layout.blobs)? {
                let shard_path = layout.blobs.join(&shard);
                if !shard_path.is_dir() {
                    continue;
                }
                for name in read_dir_names(&shard_path)? {
                    if validate_file_id(&name).is_ok() && name.starts_with(&shard) {
                        file_ids.push(name);
                    }
                }
            }
            file_ids.sort_unstable();
            Ok(file_ids)
        })
        .await
    }
}

/// Checks that `s` is a file id: exactly 64 lowercase hex characters. Every
/// path built from a client's or a peer's string goes through this first,
/// so such a string can never name a path outside the store.
pub fn validate_file_id(s: &str) -> Result<(), BlobError> {
    let valid = s.len() == FILE_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(BlobError::InvalidFileId {
            file_id: s.chars().take(FILE_ID_LEN + 8).collect(),
        })
    }
}

/// Computes the manifest of `data` split into chunks of `chunk_size` bytes.
/// A `chunk_size` of 0 is treated as 1.
pub fn manifest_for_bytes(data: &[u8], chunk_size: u32) -> Manifest {
    let chunk_size = chunk_size.max(1);
    Manifest {
        size_bytes: data.len() as u64,
        sha256: Sha256::digest(data).into(),
        chunk_size,
        chunk_hashes: data
            .chunks(chunk_size as usize)
            .map(|chunk| *blake3::hash(chunk).as_bytes())
            .collect(),
    }
}

/// Number of chunks of a blob of `size_bytes` in chunks of `chunk_size`.
fn chunk_count(size_bytes: u64, chunk_size: u32) -> u64 {
    size_bytes.div_ceil(u64::from(chunk_size.max(1)))
}

/// Offset and length of chunk `index` of a blob described by `manifest`.
fn chunk_extent(manifest: &Manifest, index: u32) -> (u64, u64) {
    let chunk_size = u64::from(manifest.chunk_size);
    let offset = u64::from(index) * chunk_size;
    let len = chunk_size.min(manifest.size_bytes.saturating_sub(offset));
    (offset, len)
}

fn check_chunk_size(chunk_size: u32) -> Result<(), BlobError> {
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE_BYTES {
        return Err(BlobError::InvalidChunkSize { chunk_size });
    }
    Ok(())
}

/// Checks that a manifest is self-consistent, so that chunk arithmetic on
/// it cannot go out of bounds.
fn check_manifest(file_id: &str, manifest: &Manifest) -> Result<(), BlobError> {
    check_chunk_size(manifest.chunk_size)?;
    let expected = chunk_count(manifest.size_bytes, manifest.chunk_size);
    if expected != manifest.chunk_hashes.len() as u64 {
        return Err(BlobError::ChunkCountMismatch {
            file_id: file_id.to_string(),
            size_bytes: manifest.size_bytes,
            expected,
            actual: manifest.chunk_hashes.len(),
        });
    }
    Ok(())
}

fn check_chunk_index(file_id: &str, manifest: &Manifest, index: u32) -> Result<(), BlobError> {
    if index as usize >= manifest.chunk_hashes.len() {
        return Err(BlobError::ChunkOutOfRange {
            file_id: file_id.to_string(),
            chunk_index: index,
            chunk_count: manifest.chunk_hashes.len(),
        });
    }
    Ok(())
}

/// Creates the 256 shard directories `00` to `ff` and makes their entries
/// durable, so committing a blob never has to create a directory.
fn create_shard_dirs(blobs: &Path) -> Result<(), BlobError> {
    for shard in 0..=255u8 {
        let dir = blobs.join(format!("{shard:02x}"));
        std::fs::create_dir_all(&dir).map_err(BlobError::io("create directory", &dir))?;
    }
    sync_dir(blobs)
}

/// Deletes every entry of `dir` and returns how many there were.
fn clear_dir(dir: &Path) -> Result<usize, BlobError> {
    let mut removed = 0;
    for name in read_dir_names(dir)? {
        let path = dir.join(&name);
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(BlobError::io("remove", &path))?;
        removed += 1;
    }
    Ok(removed)
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, BlobError> {
    let entries = std::fs::read_dir(dir).map_err(BlobError::io("list", dir))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(BlobError::io("list", dir))?;
        // A name that is not UTF-8 cannot be a file id or a staging file
        // this store created.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Makes the entries of `dir` durable, for example a rename into it.
fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(BlobError::io("fsync directory", dir))
}

/// Renames a fsynced temporary file to its final place and makes the rename
/// durable.
fn rename_durably(from: &Path, to: &Path) -> Result<(), BlobError> {
    std::fs::rename(from, to).map_err(BlobError::io("rename into place", to))?;
    match to.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Size and SHA-256 of a whole file, read in pieces of at most `buffer_bytes`.
fn file_sha256(path: &Path, buffer_bytes: usize) -> Result<(u64, [u8; 32]), BlobError> {
    use std::io::Read;

    let mut file = std::fs::File::open(path).map_err(BlobError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; buffer_bytes.max(1)];
    let mut size_bytes = 0u64;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(BlobError::io("read", path)(error)),
        };
        hasher.update(&buffer[..read]);
        size_bytes += read as u64;
    }
    Ok((size_bytes, hasher.finalize().into()))
}

/// Name for a new staging file: a prefix saying what wrote it and random
/// hex, so concurrent writers never collide.
fn staging_file_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}.tmp", rand::random::<u64>())
}

#[cfg(test)]
mod tests;
