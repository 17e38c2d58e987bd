//! New content: an upload streamed into a staging file while it is hashed,
//! then committed into the store.

use std::io::{self, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{blocking, file_sha256, staging_file_name, validate_file_id, BlobError, BlobStore};
use crate::model::{FileId, Manifest};

/// Bytes collected from the caller before they are hashed and written in
/// one blocking task. Body frames are often a few KiB; batching them keeps
/// the number of blocking tasks per MiB small while bounding the copy held
/// here.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Buffer used to re-read a blob when checking that it matches a manifest.
const VERIFY_BUFFER_BYTES: usize = 256 * 1024;

/// A new blob being written to a staging file. Dropping it before
/// [`StagingWriter::finish`] deletes the file.
#[derive(Debug)]
pub struct StagingWriter {
    path: PathBuf,
    /// `None` while a blocking write runs, and for good once a write failed
    /// or its future was dropped mid-way.
    state: Option<Box<WriterState>>,
    buffer: Vec<u8>,
    /// Set once the file belongs to a [`StagedBlob`].
    handed_over: bool,
}

/// The staging file and the running hashes of what was written to it.
#[derive(Debug)]
struct WriterState {
    file: std::fs::File,
    sha256: Sha256,
    chunk_hasher: blake3::Hasher,
    chunk_size: u32,
    /// Bytes of the current, unfinished chunk fed to `chunk_hasher`.
    chunk_filled: u64,
    chunk_hashes: Vec<[u8; 32]>,
    size_bytes: u64,
}

impl WriterState {
    fn absorb(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.sha256.update(data);
        self.size_bytes += data.len() as u64;

        let chunk_size = u64::from(self.chunk_size);
        while !data.is_empty() {
            let room = chunk_size - self.chunk_filled;
            let take = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.chunk_hasher.update(&data[..take]);
            self.chunk_filled += take as u64;
            data = &data[take..];
            if self.chunk_filled == chunk_size {
                self.close_chunk();
            }
        }
        Ok(())
    }

    fn close_chunk(&mut self) {
        self.chunk_hashes
            .push(*self.chunk_hasher.finalize().as_bytes());
        self.chunk_hasher.reset();
        self.chunk_filled = 0;
    }

    fn into_manifest(mut self) -> io::Result<Manifest> {
        if self.chunk_filled > 0 {
            self.close_chunk();
        }
        self.file.sync_all()?;
        Ok(Manifest {
            size_bytes: self.size_bytes,
            sha256: self.sha256.finalize().into(),
            chunk_size: self.chunk_size,
            chunk_hashes: self.chunk_hashes,
        })
    }
}

impl StagingWriter {
    /// Appends `bytes` to the blob. The data is hashed and written in
    /// batches, so it may reach the file only at a later call or at
    /// [`StagingWriter::finish`].
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        if self.state.is_none() {
            return Err(BlobError::WriterUnusable);
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is buffered, fsyncs the file and returns the staged blob
    /// with its manifest.
    pub async fn finish(mut self) -> Result<StagedBlob, BlobError> {
        self.flush().await?;
        let state = self.state.take().ok_or(BlobError::WriterUnusable)?;
        let path = self.path.clone();
        let manifest = blocking(move || {
            state
                .into_manifest()
                .map_err(BlobError::io("fsync staging file", &path))
        })
        .await?;

        let file_id = hex::encode(manifest.sha256);
        tracing::debug!(file_id, size_bytes = manifest.size_bytes, "staged blob");
        self.handed_over = true;
        Ok(StagedBlob {
            path: self.path.clone(),
            manifest,
            file_id,
            armed: true,
        })
    }

    async fn flush(&mut self) -> Result<(), BlobError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut state = self.state.take().ok_or(BlobError::WriterUnusable)?;
        let buffer = std::mem::take(&mut self.buffer);
        let path = self.path.clone();

        let (state, mut buffer) = blocking(move || {
            state
                .absorb(&buffer)
                .map_err(BlobError::io("write staging file", &path))?;
            Ok((state, buffer))
        })
        .await?;

        buffer.clear();
        self.buffer = buffer;
        self.state = Some(state);
        Ok(())
    }
}

impl Drop for StagingWriter {
    fn drop(&mut self) {
        if !self.handed_over {
            remove_staging_file(&self.path);
        }
    }
}

/// A complete, fsynced blob in the staging directory, not yet in the store.
/// Dropping it without [`BlobStore::commit_staged`] deletes the file, so an
/// upload that fails after staging leaves nothing behind.
#[derive(Debug)]
pub struct StagedBlob {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// Lowercase hex SHA-256 of the content.
    pub file_id: FileId,
    /// Cleared once the file has been renamed into the store.
    armed: bool,
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if self.armed {
            remove_staging_file(&self.path);
        }
    }
}

fn remove_staging_file(path: &std::path::Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed abandoned staging file"),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "failed to remove staging file");
        }
    }
}

impl BlobStore {
    /// Creates an empty staging file for a new blob.
    pub async fn staging_writer(&self) -> Result<StagingWriter, BlobError> {
        let path = self.layout.staging.join(staging_file_name("upload"));
        let chunk_size = self.chunk_size;
        let open_path = path.clone();
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&open_path)
                .map_err(BlobError::io("create staging file", &open_path))
        })
        .await?;

        Ok(StagingWriter {
            path,
            state: Some(Box::new(WriterState {
                file,
                sha256: Sha256::new(),
                chunk_hasher: blake3::Hasher::new(),
                chunk_size,
                chunk_filled: 0,
                chunk_hashes: Vec::new(),
                size_bytes: 0,
            })),
            buffer: Vec::new(),
            handed_over: false,
        })
    }

    /// Moves a staged blob into the store and makes it durable. Committing
    /// content the store already has intact changes nothing, and a copy that
    /// no longer matches its id is replaced.
    pub async fn commit_staged(&self, mut staged: StagedBlob) -> Result<(), BlobError> {
        validate_file_id(&staged.file_id)?;
        let target = self.layout.blob_path(&staged.file_id);
        let layout = self.layout.clone();

        blocking(move || {
            if target.exists() {
                let (size_bytes, sha256) = file_sha256(&target, VERIFY_BUFFER_BYTES)?;
                if size_bytes == staged.manifest.size_bytes && sha256 == staged.manifest.sha256 {
                    tracing::debug!(file_id = staged.file_id, "blob already stored");
                    return Ok(());
                }
                tracing::warn!(
                    file_id = staged.file_id,
                    "stored copy does not match its id, replacing it"
                );
            }

            layout.install(&staged.path, &target)?;
            staged.armed = false;
            tracing::debug!(file_id = staged.file_id, "committed blob");
            Ok(())
        })
        .await
    }
}
