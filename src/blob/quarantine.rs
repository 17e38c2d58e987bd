//! Quarantine of corrupt blobs and the age of committed ones.

use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    blocking, check_manifest, chunk_extent, sync_dir, validate_file_id, BlobError, BlobStore,
    Layout,
};
use crate::model::Manifest;

/// Outcome of [`BlobStore::quarantine`] for one copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quarantine {
    /// The copy failed verification and was moved to `quarantine/`.
    Moved,
    /// The copy in place matches the manifest, so it was kept: a verified
    /// copy replaced the bad one, or the earlier failure was not in the
    /// file.
    Intact,
    /// A different copy replaced the bad one while it was being verified.
    /// It was kept, and the next read or scrub verifies it.
    Replaced,
    /// There is no copy: another caller moved it, or it never existed.
    NotFound,
}

impl BlobStore {
    /// Verifies the copy of `file_id` in place against `manifest` and, if
    /// it is damaged, moves it out of `blobs/` into `quarantine/`. There it
    /// is never served or counted as a replica again, but stays on disk for
    /// an operator to inspect. A copy that passes, or that another copy
    /// replaced meanwhile, stays in place. So a caller that found a corrupt
    /// copy never moves the verified one a repair put in its place.
    pub async fn quarantine(
        &self,
        file_id: &str,
        manifest: &Manifest,
    ) -> Result<Quarantine, BlobError> {
        validate_file_id(file_id)?;
        check_manifest(file_id, manifest)?;
        let layout = self.layout.clone();
        let manifest = manifest.clone();
        let file_id = file_id.to_string();
        blocking(move || quarantine_if_damaged(&layout, &file_id, &manifest)).await
    }

    /// Returns how long ago committed blob `file_id` was last modified, which
    /// for a committed blob is when it was stored, or zero when the clock
    /// went back.
    pub async fn age(&self, file_id: &str) -> Result<Duration, BlobError> {
        validate_file_id(file_id)?;
        let path = self.layout.blob_path(file_id);
        let metadata = tokio::fs::metadata(&path).await.map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                BlobError::NotFound {
                    file_id: file_id.to_string(),
                }
            } else {
                BlobError::io("read metadata of", &path)(error)
            }
        })?;
        let modified = metadata
            .modified()
            .map_err(BlobError::io("read modification time of", &path))?;
        Ok(modified.elapsed().unwrap_or(Duration::ZERO))
    }
}

fn quarantine_if_damaged(
    layout: &Layout,
    file_id: &str,
    manifest: &Manifest,
) -> Result<Quarantine, BlobError> {
    match check_in_place(layout, file_id, manifest)? {
        Check::Damaged(checked) => move_if_unchanged(layout, file_id, &checked),
        Check::Intact => Ok(Quarantine::Intact),
        Check::NotFound => Ok(Quarantine::NotFound),
    }
}

/// Result of verifying the copy in place.
enum Check {
    Intact,
    /// The copy failed verification. The metadata identifies the file that
    /// failed.
    Damaged(std::fs::Metadata),
    NotFound,
}

fn check_in_place(layout: &Layout, file_id: &str, manifest: &Manifest) -> Result<Check, BlobError> {
    let path = layout.blob_path(file_id);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Check::NotFound),
        Err(error) => return Err(BlobError::io("open", &path)(error)),
    };
    if matches_manifest(&file, &path, manifest)? {
        return Ok(Check::Intact);
    }
    let checked = file
        .metadata()
        .map_err(BlobError::io("read metadata of", &path))?;
    Ok(Check::Damaged(checked))
}

/// Moves the copy of `file_id` to `quarantine/` if it is still the file
/// `checked` describes, the one found damaged.
fn move_if_unchanged(
    layout: &Layout,
    file_id: &str,
    checked: &std::fs::Metadata,
) -> Result<Quarantine, BlobError> {
    let from = layout.blob_path(file_id);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let to = layout.quarantine.join(format!("{file_id}.{stamp}"));
    {
        let _no_install = layout.lock_installs();
        let in_place = match std::fs::metadata(&from) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Quarantine::NotFound)
            }
            Err(error) => return Err(BlobError::io("read metadata of", &from)(error)),
        };
        if (in_place.dev(), in_place.ino()) != (checked.dev(), checked.ino()) {
            return Ok(Quarantine::Replaced);
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Quarantine::NotFound)
            }
            Err(error) => return Err(BlobError::io("quarantine", &from)(error)),
        }
    }
    sync_dir(&layout.quarantine)?;
    tracing::warn!(file_id, path = %to.display(), "quarantined corrupt blob");
    Ok(Quarantine::Moved)
}

/// Returns whether `file` has the manifest's size and every chunk matches
/// its BLAKE3 hash, which together pin its content to the manifest's.
fn matches_manifest(
    file: &std::fs::File,
    path: &Path,
    manifest: &Manifest,
) -> Result<bool, BlobError> {
    let size_bytes = file
        .metadata()
        .map_err(BlobError::io("read metadata of", path))?
        .len();
    if size_bytes != manifest.size_bytes {
        return Ok(false);
    }
    // A chunk is at most MAX_CHUNK_SIZE_BYTES, checked with the manifest.
    let mut buffer = vec![0u8; manifest.chunk_size as usize];
    for (index, expected_hash) in manifest.chunk_hashes.iter().enumerate() {
        let (offset, len) = chunk_extent(manifest, index as u32);
        let chunk = &mut buffer[..len as usize];
        match file.read_exact_at(chunk, offset) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(error) => return Err(BlobError::io("read", path)(error)),
        }
        if blake3::hash(chunk).as_bytes() != expected_hash {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::blob::manifest_for_bytes;

    const CHUNK_SIZE: u32 = 1000;

    #[tokio::test]
    async fn copy_replaced_after_its_check_is_not_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path().to_path_buf(), CHUNK_SIZE)
            .await
            .expect("open store");
        let data: Vec<u8> = (0..3500u32).map(|i| (i % 253) as u8).collect();
        let manifest = manifest_for_bytes(&data, CHUNK_SIZE);
        let file_id = hex::encode(manifest.sha256);
        let path = store.layout.blob_path(&file_id);
        let mut damaged = data.clone();
        damaged[2100] ^= 0x40;
        std::fs::write(&path, &damaged).expect("write damaged copy");

        let Check::Damaged(checked) =
            check_in_place(&store.layout, &file_id, &manifest).expect("check")
        else {
            panic!("the damaged copy passed its check");
        };

        let receiving = store
            .begin_receive(&file_id, &manifest)
            .await
            .expect("begin");
        for (index, chunk) in data.chunks(CHUNK_SIZE as usize).enumerate() {
            receiving
                .write_chunk(index as u32, Bytes::copy_from_slice(chunk))
                .await
                .expect("write chunk");
        }
        receiving.finish().await.expect("finish");

        let outcome = move_if_unchanged(&store.layout, &file_id, &checked).expect("move");
        assert_eq!(outcome, Quarantine::Replaced);
        assert_eq!(std::fs::read(&path).expect("read copy"), data);
        let quarantined = std::fs::read_dir(dir.path().join("quarantine"))
            .expect("list quarantine")
            .count();
        assert_eq!(quarantined, 0);
    }
}
