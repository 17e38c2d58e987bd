//! The one error type of the public API and its mapping to an HTTP status
//! and a JSON body `{"error": {"code": "...", "message": "..."}}`.
//!
//! `code` is stable and machine-readable (the web app translates it);
//! `message` is English and says what to fix. Internal details are logged
//! where the error is handled and never sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the upload is larger than the limit of {limit_bytes} bytes; upload a smaller file or ask the operator to raise max_upload_bytes")]
    PayloadTooLarge { limit_bytes: u64 },
    #[error("the file is not audio in a supported format (mp3, flac, ogg, opus, m4a, wav, aiff, ape, wavpack)")]
    NotAudio,
    #[error("the file is empty; choose an audio file with content")]
    EmptyFile,
    #[error("the request has no multipart field named \"file\"; send the audio as multipart/form-data with a part named file")]
    MissingFilePart,
    #[error("the request body is not valid multipart/form-data: {detail}")]
    InvalidMultipart { detail: String },
    #[error("no track with file id {file_id}")]
    TrackNotFound { file_id: String },
    #[error("no album with id {album_id}")]
    AlbumNotFound { album_id: String },
    #[error("no artist with id {artist_id}")]
    ArtistNotFound { artist_id: String },
    #[error("track {file_id} has no cover art")]
    CoverNotFound { file_id: String },
    #[error("{value:?} is not a file id: expected 64 lowercase hexadecimal characters")]
    InvalidFileId { value: String },
    #[error("invalid query parameter {name}: {reason}")]
    InvalidQuery { name: &'static str, reason: String },
    #[error("the request body is not valid: {detail}")]
    InvalidBody { detail: String },
    #[error("invalid field {name}: {reason}")]
    InvalidField { name: &'static str, reason: String },
    #[error("lock {name} is held by {owner} until {expires_at_ms} ms since the epoch; retry after it expires or is released")]
    LockHeld {
        name: String,
        owner: String,
        expires_at_ms: i64,
    },
    #[error("no cluster member has id {node_id}; GET /cluster/status lists the members")]
    MemberNotFound { node_id: String },
    #[error("lock {name} is not held under that owner and token: it expired, was released or was taken over")]
    LockNotHeld { name: String },
    #[error("the cluster cannot accept writes now: {detail}; retry in a few seconds")]
    NoQuorum { detail: String },
    #[error(
        "only {acknowledged} of the {required} replicas needed stored the file; retry the upload"
    )]
    ReplicationFailed {
        acknowledged: usize,
        required: usize,
    },
    #[error("no replica of file {file_id} is reachable; retry later")]
    NoReplicaAvailable { file_id: String },
    #[error("this node has not joined the cluster or is still catching up")]
    NotReady,
    #[error("no API endpoint {method} {path}; the README lists the endpoints")]
    RouteNotFound { method: String, path: String },
    #[error("internal error; the node's log has details")]
    Internal,
}

impl ApiError {
    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::NotAudio => "unsupported_media_type",
            ApiError::EmptyFile => "empty_file",
            ApiError::MissingFilePart => "missing_file_part",
            ApiError::InvalidMultipart { .. } => "invalid_multipart",
            ApiError::TrackNotFound { .. } => "track_not_found",
            ApiError::AlbumNotFound { .. } => "album_not_found",
            ApiError::ArtistNotFound { .. } => "artist_not_found",
            ApiError::CoverNotFound { .. } => "cover_not_found",
            ApiError::InvalidFileId { .. } => "invalid_file_id",
            ApiError::InvalidQuery { .. } => "invalid_query",
            ApiError::InvalidBody { .. } => "invalid_body",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::LockHeld { .. } => "lock_held",
            ApiError::MemberNotFound { .. } => "member_not_found",
            ApiError::LockNotHeld { .. } => "lock_not_held",
            ApiError::NoQuorum { .. } => "no_quorum",
            ApiError::ReplicationFailed { .. } => "replication_failed",
            ApiError::NoReplicaAvailable { .. } => "no_replica_available",
            ApiError::NotReady => "not_ready",
            ApiError::RouteNotFound { .. } => "route_not_found",
            ApiError::Internal => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotAudio => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::EmptyFile
            | ApiError::MissingFilePart
            | ApiError::InvalidMultipart { .. }
            | ApiError::InvalidFileId { .. }
            | ApiError::InvalidQuery { .. }
            | ApiError::InvalidBody { .. }
            | ApiError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            ApiError::LockHeld { .. } | ApiError::LockNotHeld { .. } => StatusCode::CONFLICT,
            ApiError::TrackNotFound { .. }
            | ApiError::AlbumNotFound { .. }
            | ApiError::ArtistNotFound { .. }
            | ApiError::CoverNotFound { .. }
            | ApiError::RouteNotFound { .. }
            | ApiError::MemberNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::NoQuorum { .. }
            | ApiError::ReplicationFailed { .. }
            | ApiError::NoReplicaAvailable { .. }
            | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        (self.status(), Json(body)).into_response()
    }
}

/// Logs an unexpected error with its context and returns the opaque
/// internal error the client sees.
pub fn internal(what: &'static str, error: impl std::fmt::Display) -> ApiError {
    tracing::error!(operation = what, %error, "request failed");
    ApiError::Internal
}
