//! A replica's side of replication. Chunks of a blob arrive in any order,
//! possibly from several streams at once, and are verified one by one and
//! written in place. The whole file is verified before it is committed.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{
    blocking, check_chunk_index, check_manifest, chunk_extent, staging_file_name, validate_file_id,
    BlobError, BlobStore, Layout,
};
use crate::model::{FileId, Manifest};

/// Buffer used to re-read a received file for its SHA-256.
const VERIFY_BUFFER_BYTES: u64 = 256 * 1024;

/// A blob being received into a preallocated staging file. Its methods take
/// `&self`, so several tasks can write chunks at once through an `Arc`.
/// Dropping it before [`ReceivingBlob::finish`] succeeds deletes the file.
#[derive(Debug)]
pub struct ReceivingBlob {
    file_id: FileId,
    manifest: Arc<Manifest>,
    path: PathBuf,
    final_path: PathBuf,
    layout: Arc<Layout>,
    file: Arc<std::fs::File>,
    /// One flag per chunk, set once the chunk is verified and written.
    received: Mutex<Vec<bool>>,
    /// Cleared once the file has been renamed into the store.
    armed: bool,
}

impl ReceivingBlob {
    pub fn file_id(&self) -> &str {
        &self.file_id
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Chunk size of this blob, the largest chunk [`ReceivingBlob::write_chunk`]
    /// accepts.
    pub fn chunk_size(&self) -> u32 {
        self.manifest.chunk_size
    }

    /// Verifies chunk `index` against its length and BLAKE3 hash in the
    /// manifest and writes it at its offset. A chunk may be written more
    /// than once; a chunk that fails verification is not written.
    pub async fn write_chunk(&self, index: u32, bytes: Bytes) -> Result<(), BlobError> {
        check_chunk_index(&self.file_id, &self.manifest, index)?;
        let (offset, expected_len) = chunk_extent(&self.manifest, index);
        if bytes.len() as u64 != expected_len {
            return Err(BlobError::ChunkLengthMismatch {
                file_id: self.file_id.clone(),
                chunk_index: index,
                expected_bytes: expected_len,
                actual_bytes: bytes.len(),
            });
        }

        let expected_hash = self.manifest.chunk_hashes[index as usize];
        let file = self.file.clone();
        let path = self.path.clone();
        let file_id = self.file_id.clone();
        blocking(move || {
            if *blake3::hash(&bytes).as_bytes() != expected_hash {
                return Err(BlobError::ChunkHashMismatch {
                    file_id,
                    chunk_index: index,
                });
            }
            file.write_all_at(&bytes, offset)
                .map_err(BlobError::io("write chunk to", &path))
        })
        .await?;

        self.received()[index as usize] = true;
        Ok(())
    }

    /// Checks that every chunk arrived, re-reads the file to compare its
    /// SHA-256 with the manifest, then fsyncs it and renames it into the
    /// store, replacing any copy already there: that copy may be damaged,
    /// and the received one is verified. On any error the staging file is
    /// deleted.
    pub async fn finish(mut self) -> Result<(), BlobError> {
        self.check_all_received()?;

        let file = self.file.clone();
        let layout = self.layout.clone();
        let manifest = self.manifest.clone();
        let (path, final_path) = (self.path.clone(), self.final_path.clone());
        let file_id = self.file_id.clone();
        blocking(move || {
            let actual = file_sha256_at(&file, &path, &file_id, manifest.size_bytes)?;
            if actual != manifest.sha256 {
                return Err(BlobError::ContentMismatch {
                    file_id,
                    actual_sha256: hex::encode(actual),
                });
            }
            file.sync_all()
                .map_err(BlobError::io("fsync received file", &path))?;
            layout.install(&path, &final_path)
        })
        .await?;

        self.armed = false;
        tracing::debug!(
            file_id = self.file_id,
            size_bytes = self.manifest.size_bytes,
            "received blob"
        );
        Ok(())
    }

    fn received(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        // The lock is only held to set or read flags, which cannot leave
        // them inconsistent, so a poisoned lock is still usable.
        match self.received.lock() {
            Ok(received) => received,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn check_all_received(&self) -> Result<(), BlobError> {
        let received = self.received();
        let missing = received.iter().filter(|arrived| !**arrived).count();
        let Some(first_missing) = received.iter().position(|arrived| !arrived) else {
            return Ok(());
        };
        Err(BlobError::MissingChunks {
            file_id: self.file_id.clone(),
            missing,
            chunk_count: received.len(),
            first_missing: u32::try_from(first_missing).unwrap_or(u32::MAX),
        })
    }
}

impl Drop for ReceivingBlob {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(file_id = self.file_id, "removed unfinished received blob"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(file_id = self.file_id, %error, "failed to remove staging file");
            }
        }
    }
}

/// SHA-256 of the first `size_bytes` bytes of `file`, read with positioned
/// reads so concurrent users of the handle are not disturbed. The file must
/// be exactly `size_bytes` long.
fn file_sha256_at(
    file: &std::fs::File,
    path: &Path,
    file_id: &str,
    size_bytes: u64,
) -> Result<[u8; 32], BlobError> {
    let on_disk = file
        .metadata()
        .map_err(BlobError::io("read metadata of", path))?
        .len();
    if on_disk != size_bytes {
        return Err(BlobError::SizeMismatch {
            file_id: file_id.to_string(),
            expected_bytes: size_bytes,
            actual_bytes: on_disk,
        });
    }

    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; VERIFY_BUFFER_BYTES.min(size_bytes.max(1)) as usize];
    let mut offset = 0u64;
    while offset < size_bytes {
        let len = (size_bytes - offset).min(buffer.len() as u64) as usize;
        file.read_exact_at(&mut buffer[..len], offset)
            .map_err(BlobError::io("read back", path))?;
        hasher.update(&buffer[..len]);
        offset += len as u64;
    }
    Ok(hasher.finalize().into())
}

/// Reserves `size_bytes` of disk for `file`, so a full disk fails here and
/// not in the middle of a transfer. Filesystems without `fallocate` get a
/// sparse file of the right length instead.
fn preallocate(file: &std::fs::File, path: &Path, size_bytes: u64) -> Result<(), BlobError> {
    if size_bytes == 0 {
        return Ok(());
    }
    let len = libc::off_t::try_from(size_bytes).map_err(|_| BlobError::Io {
        operation: "preallocate",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::FileTooLarge),
    })?;

    // SAFETY: the descriptor belongs to `file`, which outlives the call, and
    // posix_fallocate only reads its integer arguments.
    let errno = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match errno {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file
            .set_len(size_bytes)
            .map_err(BlobError::io("set length of", path)),
        errno => Err(BlobError::io("preallocate", path)(
            std::io::Error::from_raw_os_error(errno),
        )),
    }
}

impl BlobStore {
    /// Starts receiving blob `file_id` described by `manifest`: checks that
    /// the manifest is consistent and belongs to `file_id`, then creates a
    /// staging file preallocated to the blob's size.
    pub async fn begin_receive(
        &self,
        file_id: &str,
        manifest: &Manifest,
    ) -> Result<ReceivingBlob, BlobError> {
        validate_file_id(file_id)?;
        check_manifest(file_id, manifest)?;
        let manifest_sha256 = hex::encode(manifest.sha256);
        if manifest_sha256 != file_id {
            return Err(BlobError::FileIdMismatch {
                file_id: file_id.to_string(),
                manifest_sha256,
            });
        }

        let path = self
            .layout
            .staging
            .join(staging_file_name(&format!("receive-{}", &file_id[..16])));
        let size_bytes = manifest.size_bytes;
        let create_path = path.clone();
        let file = blocking(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&create_path)
                .map_err(BlobError::io("create staging file", &create_path))?;
            if let Err(error) = preallocate(&file, &create_path, size_bytes) {
                let _ = std::fs::remove_file(&create_path);
                return Err(error);
            }
            Ok(file)
        })
        .await?;

        tracing::debug!(file_id, size_bytes, "receiving blob");
        Ok(ReceivingBlob {
            file_id: file_id.to_string(),
            received: Mutex::new(vec![false; manifest.chunk_hashes.len()]),
            manifest: Arc::new(manifest.clone()),
            final_path: self.layout.blob_path(file_id),
            layout: self.layout.clone(),
            path,
            file: Arc::new(file),
            armed: true,
        })
    }
}
