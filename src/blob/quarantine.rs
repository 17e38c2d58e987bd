//! Quarantine of corrupt blobs and the age of committed ones.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{blocking, validate_file_id, BlobError, BlobStore};

impl BlobStore {
    /// Moves committed blob `file_id` out of `blobs/` into `quarantine/`,
    /// so it is never served or counted as a replica again but stays on
    /// disk for an operator to inspect. Returns whether the blob existed.
    pub async fn quarantine(&self, file_id: &str) -> Result<bool, BlobError> {
        validate_file_id(file_id)?;
        let from = self.layout.blob_path(file_id);
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let to = self.layout.quarantine.join(format!("{file_id}.{stamp}"));
        let quarantine_dir = self.layout.quarantine.clone();
        let file_id = file_id.to_string();
        blocking(move || match std::fs::rename(&from, &to) {
            Ok(()) => {
                std::fs::File::open(&quarantine_dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(BlobError::io("fsync", &quarantine_dir))?;
                tracing::warn!(file_id, path = %to.display(), "quarantined corrupt blob");
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(BlobError::io("quarantine", &from)(error)),
        })
        .await
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
