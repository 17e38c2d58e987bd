//! `POST /music/upload`: a multipart upload streamed to a staging file
//! while it is hashed, checked for audio, stored on a write quorum of
//! replicas and only then committed to the catalog through Raft.

use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use tracing::Instrument;

use super::error::{internal, ApiError};
use super::AppState;
use crate::blob::StagedBlob;
use crate::model::{Command, Track};
use crate::tags::{self, TagError};
use crate::{node, pause, replication};

/// Bytes of multipart framing (boundaries and part headers) allowed on top
/// of the upload size limit when judging a request by its Content-Length.
const MULTIPART_OVERHEAD_BYTES: u64 = 64 * 1024;

/// Maximum length of a file name kept from the client, in bytes.
const MAX_FILE_NAME_BYTES: usize = 255;

/// How long the rest of a rejected upload's body is read and discarded
/// after the error response is sent. Closing the connection while the
/// client is still sending can reset it before the client reads the
/// response, so the client would see a broken pipe instead of the 413.
const REJECTED_BODY_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Track>), ApiError> {
    let started = std::time::Instant::now();
    let result = receive(&state, headers, multipart).await;
    let metrics = &state.node.metrics;
    metrics
        .upload_seconds
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok((StatusCode::CREATED, _)) => "created",
        Ok(_) => "duplicate",
        Err(e) if e.status().is_client_error() => "rejected",
        Err(_) => "failed",
    };
    metrics.count_upload(outcome);
    result
}

async fn receive(
    state: &AppState,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Track>), ApiError> {
    let limit_bytes = state.node.config.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size_bytes) = declared {
        if size_bytes > limit_bytes.saturating_add(MULTIPART_OVERHEAD_BYTES) {
            tracing::info!(
                size_bytes,
                limit_bytes,
                "upload rejected by its declared length"
            );
            if let Ok(multipart) = multipart {
                discard_rest(multipart);
            }
            return Err(ApiError::PayloadTooLarge { limit_bytes });
        }
    }
    let mut multipart = multipart.map_err(|e| ApiError::InvalidMultipart {
        detail: e.body_text(),
    })?;
    let result = receive_file_part(state, &mut multipart, limit_bytes).await;
    if let Err(ApiError::PayloadTooLarge { .. }) = result {
        discard_rest(multipart);
    }
    result
}

/// Reads and drops what is left of a rejected body for at most
/// [`REJECTED_BODY_LINGER`], off the request's task, so that the error
/// goes out at once and still reaches a client that is mid-send.
fn discard_rest(mut multipart: Multipart) {
    tokio::spawn(async move {
        let drain = async {
            while let Ok(Some(mut field)) = multipart.next_field().await {
                while let Ok(Some(_)) = field.chunk().await {}
            }
        };
        let _ = tokio::time::timeout(REJECTED_BODY_LINGER, drain).await;
    });
}

async fn receive_file_part(
    state: &AppState,
    multipart: &mut Multipart,
    limit_bytes: u64,
) -> Result<(StatusCode, Json<Track>), ApiError> {
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::InvalidMultipart {
                detail: e.body_text(),
            })?;
        let Some(field) = field else {
            return Err(ApiError::MissingFilePart);
        };
        if field.name() != Some("file") {
            continue;
        }
        let file_name = clean_file_name(field.file_name());
        let staged = stage(state, field, limit_bytes).await?;
        return finish(state, staged, file_name).await;
    }
}

async fn stage(
    state: &AppState,
    mut field: Field<'_>,
    limit_bytes: u64,
) -> Result<StagedBlob, ApiError> {
    let mut writer = state
        .node
        .blobs
        .staging_writer()
        .await
        .map_err(|e| internal("create staging file", e))?;
    let mut received_bytes: u64 = 0;
    while let Some(bytes) = field
        .chunk()
        .await
        .map_err(|e| ApiError::InvalidMultipart {
            detail: e.body_text(),
        })?
    {
        received_bytes += bytes.len() as u64;
        if received_bytes > limit_bytes {
            return Err(ApiError::PayloadTooLarge { limit_bytes });
        }
        writer
            .write(&bytes)
            .await
            .map_err(|e| internal("write staging file", e))?;
    }
    writer
        .finish()
        .await
        .map_err(|e| internal("finish staging file", e))
}

async fn finish(
    state: &AppState,
    staged: StagedBlob,
    file_name: String,
) -> Result<(StatusCode, Json<Track>), ApiError> {
    let node = &state.node;
    if staged.manifest.size_bytes == 0 {
        return Err(ApiError::EmptyFile);
    }
    if let Some(track) = node
        .catalog
        .track(&staged.file_id)
        .await
        .map_err(|e| internal("read track", e))?
    {
        tracing::info!(file_id = %track.file_id, "upload matches an existing track");
        return Ok((StatusCode::OK, Json(track)));
    }

    let path = staged.path.clone();
    let name = file_name.clone();
    let audio = tokio::task::spawn_blocking(move || tags::read_audio(&path, &name))
        .await
        .map_err(|e| internal("read tags", e))?;
    let audio = match audio {
        Ok(audio) => audio,
        Err(TagError::Empty) => return Err(ApiError::EmptyFile),
        Err(TagError::NotAudio { .. }) => return Err(ApiError::NotAudio),
        Err(e) => return Err(internal("read tags", e)),
    };

    let title = audio
        .tags
        .title
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| file_stem(&file_name));
    let mut track = Track {
        file_id: staged.file_id.clone(),
        file_name,
        title,
        tags: audio.tags,
        format: audio.format.format,
        content_type: audio.format.content_type,
        size_bytes: staged.manifest.size_bytes,
        sha256: staged.file_id.clone(),
        has_cover: audio.cover.is_some(),
        replicas: Vec::new(),
        added_at_ms: 0,
    };
    let manifest = staged.manifest.clone();
    let span =
        tracing::info_span!("upload", file_id = %track.file_id, size_bytes = track.size_bytes);
    let receipt = async {
        // A node cut off from the quorum could not commit the track, so it
        // rejects the upload before it copies the file to any replica, or as
        // soon as it is cut off during the copy. The copy then goes on in its
        // task, and its blobs are discarded when it fails or deleted as
        // orphans by reconciliation.
        node::check_quorum(node).await?;
        let store =
            tokio::spawn(replication::store_with_quorum(node.clone(), staged).in_current_span());
        track.replicas = tokio::select! {
            stored = store => stored.map_err(|e| internal("store replicas", e))??,
            error = node::quorum_lost(node) => return Err(error),
        };
        pause::pause_point(pause::UPLOAD_BEFORE_COMMIT, &node.config.data_dir).await;
        let command = Command::AddTrack {
            track: track.clone(),
            manifest,
            cover: audio.cover,
        };
        let receipt = node::write(node, command).await?;
        node::wait_applied(node, receipt.log_index).await;
        Ok::<_, ApiError>(receipt)
    }
    .instrument(span)
    .await?;
    pause::pause_point(pause::UPLOAD_BEFORE_REPLY, &node.config.data_dir).await;

    let stored = node
        .catalog
        .track(&track.file_id)
        .await
        .map_err(|e| internal("read track", e))?;
    let stored = stored.unwrap_or(track);
    let status = if receipt.changed() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    tracing::info!(file_id = %stored.file_id, replicas = ?stored.replicas, created = receipt.changed(), "upload committed");
    Ok((status, Json(stored)))
}

/// Keeps the last path component of a client-supplied file name, without
/// control characters, capped at [`MAX_FILE_NAME_BYTES`].
fn clean_file_name(raw: Option<&str>) -> String {
    let raw = raw.unwrap_or("");
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String = last.chars().filter(|c| !c.is_control()).collect();
    while name.len() > MAX_FILE_NAME_BYTES {
        name.pop();
    }
    if name.trim().is_empty() || name == "." || name == ".." {
        "upload".to_string()
    } else {
        name
    }
}

fn file_stem(file_name: &str) -> String {
    match file_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => file_name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_keeps_last_component() {
        assert_eq!(clean_file_name(Some("a/b/song.mp3")), "song.mp3");
        assert_eq!(clean_file_name(Some("C:\\music\\song.mp3")), "song.mp3");
        assert_eq!(clean_file_name(Some("../..")), "upload");
        assert_eq!(clean_file_name(None), "upload");
        assert_eq!(clean_file_name(Some("a\u{0}b.mp3")), "ab.mp3");
    }

    #[test]
    fn long_file_name_is_capped() {
        let long = "é".repeat(300);
        assert!(clean_file_name(Some(&long)).len() <= MAX_FILE_NAME_BYTES);
    }

    #[test]
    fn stem_drops_extension() {
        assert_eq!(file_stem("song.mp3"), "song");
        assert_eq!(file_stem("no_ext"), "no_ext");
        assert_eq!(file_stem(".hidden"), ".hidden");
    }
}
