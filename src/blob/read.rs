//! Reads of committed blobs. Every chunk is verified against its BLAKE3
//! hash before any of its bytes are returned.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use super::{
    blocking, check_chunk_index, check_manifest, chunk_extent, validate_file_id, BlobError,
    BlobStore,
};
use crate::model::{FileId, Manifest};

impl BlobStore {
    /// Reads chunk `index` of blob `file_id` and verifies it against
    /// `manifest`. A chunk that does not match, or a file too short to hold
    /// it, is [`BlobError::Corrupt`].
    pub async fn read_chunk(
        &self,
        file_id: &str,
        manifest: &Manifest,
        index: u32,
    ) -> Result<Bytes, BlobError> {
        validate_file_id(file_id)?;
        check_manifest(file_id, manifest)?;
        check_chunk_index(file_id, manifest, index)?;

        let path = self.layout.blob_path(file_id);
        let file_id = file_id.to_string();
        let (offset, len) = chunk_extent(manifest, index);
        let expected_hash = manifest.chunk_hashes[index as usize];
        blocking(move || {
            let file = open_blob(&path, &file_id)?;
            let chunk = ChunkLocation {
                file_id: &file_id,
                path: &path,
                index,
                offset,
                len,
                expected_hash,
            };
            chunk.read_verified(&file)
        })
        .await
    }

    /// Streams bytes `start..=end_inclusive` of blob `file_id`. The stream
    /// reads whole chunks one at a time, verifies each, and yields the part
    /// of it inside the range, so it keeps about one chunk in memory. It
    /// ends after the first error.
    pub fn open_range(
        &self,
        file_id: &str,
        manifest: &Manifest,
        start: u64,
        end_inclusive: u64,
    ) -> impl Stream<Item = Result<Bytes, BlobError>> + Send + 'static {
        let state = match RangeReader::new(self, file_id, manifest, start, end_inclusive) {
            Ok(reader) => RangeState::Reading(reader),
            Err(error) => RangeState::Failed(error),
        };

        futures::stream::unfold(state, |state| async move {
            match state {
                RangeState::Failed(error) => Some((Err(error), RangeState::Done)),
                RangeState::Done => None,
                RangeState::Reading(mut reader) => match reader.next_piece().await {
                    Ok(Some(bytes)) => Some((Ok(bytes), RangeState::Reading(reader))),
                    Ok(None) => None,
                    Err(error) => Some((Err(error), RangeState::Done)),
                },
            }
        })
    }
}

fn open_blob(path: &Path, file_id: &str) -> Result<std::fs::File, BlobError> {
    std::fs::File::open(path).map_err(|error| {
        if error.kind() == io::ErrorKind::NotFound {
            BlobError::NotFound {
                file_id: file_id.to_string(),
            }
        } else {
            BlobError::io("open", path)(error)
        }
    })
}

/// Location of one chunk in a blob file and its expected hash.
struct ChunkLocation<'a> {
    file_id: &'a str,
    path: &'a Path,
    index: u32,
    offset: u64,
    len: u64,
    expected_hash: [u8; 32],
}

impl ChunkLocation<'_> {
    fn read_verified(&self, file: &std::fs::File) -> Result<Bytes, BlobError> {
        let corrupt = || BlobError::Corrupt {
            file_id: self.file_id.to_string(),
            chunk_index: self.index,
        };

        // `len` is at most MAX_CHUNK_SIZE_BYTES, checked with the manifest.
        let mut buffer = vec![0u8; self.len as usize];
        match file.read_exact_at(&mut buffer, self.offset) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::warn!(
                    file_id = self.file_id,
                    chunk_index = self.index,
                    "blob is truncated"
                );
                return Err(corrupt());
            }
            Err(error) => return Err(BlobError::io("read", self.path)(error)),
        }

        if *blake3::hash(&buffer).as_bytes() != self.expected_hash {
            tracing::warn!(
                file_id = self.file_id,
                chunk_index = self.index,
                "chunk does not match its hash"
            );
            return Err(corrupt());
        }
        Ok(Bytes::from(buffer))
    }
}

enum RangeState {
    Failed(BlobError),
    Reading(RangeReader),
    Done,
}

/// Position of a range read between chunks.
struct RangeReader {
    file_id: FileId,
    path: PathBuf,
    manifest: Arc<Manifest>,
    /// Opened on the first read, so that creating the stream does no I/O.
    file: Option<Arc<std::fs::File>>,
    start: u64,
    end_inclusive: u64,
    next_chunk: u64,
    last_chunk: u64,
}

impl RangeReader {
    fn new(
        store: &BlobStore,
        file_id: &str,
        manifest: &Manifest,
        start: u64,
        end_inclusive: u64,
    ) -> Result<RangeReader, BlobError> {
        validate_file_id(file_id)?;
        check_manifest(file_id, manifest)?;
        if start > end_inclusive || end_inclusive >= manifest.size_bytes {
            return Err(BlobError::RangeOutOfBounds {
                file_id: file_id.to_string(),
                start,
                end_inclusive,
                size_bytes: manifest.size_bytes,
            });
        }

        let chunk_size = u64::from(manifest.chunk_size);
        let chunk_index = |offset: u64| offset / chunk_size;
        Ok(RangeReader {
            file_id: file_id.to_string(),
            path: store.layout.blob_path(file_id),
            manifest: Arc::new(manifest.clone()),
            file: None,
            start,
            end_inclusive,
            next_chunk: chunk_index(start),
            last_chunk: chunk_index(end_inclusive),
        })
    }

    /// Reads, verifies and slices the next chunk of the range.
    async fn next_piece(&mut self) -> Result<Option<Bytes>, BlobError> {
        if self.next_chunk > self.last_chunk {
            return Ok(None);
        }
        let index = u32::try_from(self.next_chunk).unwrap_or(u32::MAX);
        check_chunk_index(&self.file_id, &self.manifest, index)?;

        let (offset, len) = chunk_extent(&self.manifest, index);
        let expected_hash = self.manifest.chunk_hashes[index as usize];
        let (file_id, path, file) = (self.file_id.clone(), self.path.clone(), self.file.clone());

        let (file, chunk) = blocking(move || {
            let file = match file {
                Some(file) => file,
                None => Arc::new(open_blob(&path, &file_id)?),
            };
            let location = ChunkLocation {
                file_id: &file_id,
                path: &path,
                index,
                offset,
                len,
                expected_hash,
            };
            let chunk = location.read_verified(&file)?;
            Ok((file, chunk))
        })
        .await?;
        self.file = Some(file);
        self.next_chunk += 1;

        let from = self.start.max(offset) - offset;
        let to = (self.end_inclusive + 1).min(offset + len) - offset;
        Ok(Some(chunk.slice(from as usize..to as usize)))
    }
}
