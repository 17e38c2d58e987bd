//! Errors of the catalog database and of its snapshot format.

use crate::model::FileId;

/// An error from a catalog operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The database URL names no supported database.
    #[error("unsupported catalog database url {url:?}: {reason}; expected sqlite://PATH or postgres://...")]
    UnsupportedUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        reason: &'static str,
    },

    /// The parent directory of a SQLite database file could not be created.
    #[error("failed to create the directory {path:?} for the catalog database: {source}")]
    CreateDirectory {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error("failed to connect to the catalog database: {source}")]
    Connect { source: sqlx::Error },

    #[error("failed to migrate the catalog database: {source}")]
    Migrate { source: sqlx::migrate::MigrateError },

    /// A statement or transaction failed; `operation` names the catalog
    /// operation it belonged to.
    #[error("catalog database operation {operation} failed: {source}")]
    Database {
        operation: &'static str,
        source: sqlx::Error,
    },

    /// A listing or search parameter is outside its allowed range.
    #[error("invalid {parameter} {value}: {expected}")]
    InvalidQuery {
        parameter: &'static str,
        value: String,
        expected: String,
    },

    /// A value of a command does not fit the column that stores it.
    #[error("value {value} of {field} for file {file_id} does not fit the catalog column")]
    ValueOutOfRange {
        file_id: FileId,
        field: &'static str,
        value: String,
    },

    /// A stored row fails a check that every row written by this code passes.
    #[error("corrupt catalog row for file {file_id}: {field} {problem}")]
    CorruptRow {
        file_id: FileId,
        field: &'static str,
        problem: String,
    },

    #[error("failed to read or write a catalog snapshot: {source}")]
    SnapshotIo { source: std::io::Error },

    #[error("invalid catalog snapshot: {source}")]
    InvalidSnapshot { source: SnapshotFormatError },

    #[error("failed to encode a catalog snapshot record: {source}")]
    SnapshotEncode { source: postcard::Error },
}

/// The reason a snapshot stream was rejected on import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFormatError {
    #[error("the stream does not start with the catalog snapshot magic bytes")]
    BadMagic,

    #[error("format version {found} is not supported; this build reads version {supported}")]
    UnsupportedVersion { found: u32, supported: u32 },

    #[error("the stream ends before the end marker")]
    Truncated,

    #[error("record of {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    RecordTooLarge { size_bytes: u64, max_bytes: u64 },

    #[error("record {index} cannot be decoded: {source}")]
    Decode { index: u64, source: postcard::Error },

    #[error("record {index} is a {found} where a {expected} was expected")]
    UnexpectedRecord {
        index: u64,
        found: &'static str,
        expected: &'static str,
    },

    #[error("the stream contains {found} tracks but its header announces {announced}")]
    TrackCountMismatch { announced: u64, found: u64 },

    #[error("the BLAKE3 checksum in the end marker does not match the stream")]
    ChecksumMismatch,

    #[error("track {file_id} appears more than once")]
    DuplicateTrack { file_id: FileId },

    #[error("data follows the end marker")]
    TrailingData,
}

impl CatalogError {
    pub(crate) fn database(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| CatalogError::Database { operation, source }
    }
}

impl From<SnapshotFormatError> for CatalogError {
    fn from(source: SnapshotFormatError) -> Self {
        CatalogError::InvalidSnapshot { source }
    }
}
