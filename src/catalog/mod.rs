//! The catalog database: every committed track with its manifest, cover,
//! replica set and search terms, plus the Raft state machine's applied
//! position. The Raft state machine is its only writer; the public API reads
//! it.
//!
//! One code path serves SQLite (`sqlite://PATH`, the default) and PostgreSQL
//! (`postgres://...`) through `sqlx::Any`: every statement uses `$N`
//! placeholders, which both databases accept, and only portable SQL
//! (`ON CONFLICT`, `RETURNING`, `CAST`). The dialect matters in three places
//! only: the embedded migrations, the SQLite connection pragmas, and how a
//! transaction begins (see [`Catalog::begin_write`] and
//! [`Catalog::begin_read`]). Case- and accent-insensitive search and sorting
//! do not rely on either database's collations or extensions: tags are folded
//! in Rust (see `fold`) into sort keys and search terms that both databases
//! compare byte by byte.
//!
//! Writes go through a pool of one connection, so applies are serialized and
//! API reads, which use a separate pool, can never starve the state machine
//! of a connection. Each node needs a database of its own: the catalog is a
//! node's copy of the replicated state, never shared between nodes.

mod error;
mod fold;
mod keys;
mod library;
mod locks;
mod read;
mod rows;
mod snapshot;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};

pub use error::{CatalogError, SnapshotFormatError};
pub use library::{
    Album, AlbumQuery, AlbumSort, Artist, ArtistQuery, GroupKind, MAX_GROUP_ID_CHARS,
};
pub use locks::FaultRecord;
pub use snapshot::{MAX_SNAPSHOT_RECORD_BYTES, SNAPSHOT_FORMAT_VERSION};

use crate::model::{FileId, NodeId};

/// Default connections of the read pool, which serves API listings and
/// searches. SQLite in WAL mode runs readers in parallel with the writer.
/// Eight is an estimate of a node's concurrent catalog reads that keeps few
/// idle file handles or PostgreSQL backends open.
pub const DEFAULT_READ_CONNECTIONS: u32 = 8;

/// Connections of the write pool. One, because the Raft state machine
/// applies entries in log order and SQLite allows one writer at a time.
pub const WRITE_CONNECTIONS: u32 = 1;

/// Page cache of each SQLite connection: 512 KiB, where SQLite's default
/// is about 2 MB. A negative `cache_size` counts KiB. The pool hands out
/// its connections in turn, so each one fills its own cache, which with
/// the default cost up to 18 MB per node. Pages outside the cache are
/// read again from the operating system's page cache.
const SQLITE_CACHE_SIZE_PRAGMA: &str = "PRAGMA cache_size = -512";

/// Default time to wait for a free pooled connection before failing.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time a SQLite connection waits for a lock held by another
/// connection (a reader checkpointing the WAL, or another process) before
/// failing with "database is locked".
pub const DEFAULT_SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default page size of listings and searches when the caller gives none.
pub const DEFAULT_PAGE_LIMIT: i64 = 100;

/// Maximum items in one page of a listing or search; larger limits are
/// clamped. It bounds the rows and memory one request can take.
pub const MAX_PAGE_LIMIT: i64 = 500;

/// Maximum entries in one page of [`Catalog::replica_sets`]; larger limits
/// are clamped. Entries are small, so repair can walk the catalog in few
/// round trips.
pub const MAX_REPLICA_SETS_PAGE_LIMIT: u32 = 5_000;

/// Maximum characters of a search query. Longer queries are rejected, which
/// bounds the folding work one request can cause.
pub const MAX_QUERY_CHARS: usize = 256;

/// Maximum distinct words of a search query. Each word adds a range scan of
/// the search index, so longer queries are rejected.
pub const MAX_QUERY_WORDS: usize = 8;

// `sqlx::migrate!` is compiled only with sqlx's `macros` feature, which this
// crate leaves off because it uses no compile-time checked queries. The
// macro crate's `migrate!` is the same macro and embeds the SQL files at
// build time.
static SQLITE_MIGRATOR: Migrator = sqlx::sqlx_macros::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::sqlx_macros::migrate!("migrations/postgres");

/// Pool and timeout settings of a catalog connection.
#[derive(Clone, Debug)]
pub struct CatalogSettings {
    /// Connections of the read pool. Default [`DEFAULT_READ_CONNECTIONS`].
    pub read_connections: u32,
    /// Time to wait for a pooled connection. Default
    /// [`DEFAULT_ACQUIRE_TIMEOUT`].
    pub acquire_timeout: Duration,
    /// SQLite's busy timeout; unused with PostgreSQL. Default
    /// [`DEFAULT_SQLITE_BUSY_TIMEOUT`].
    pub sqlite_busy_timeout: Duration,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        CatalogSettings {
            read_connections: DEFAULT_READ_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            sqlite_busy_timeout: DEFAULT_SQLITE_BUSY_TIMEOUT,
        }
    }
}

/// The database behind a catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Dialect::Sqlite => &SQLITE_MIGRATOR,
            Dialect::Postgres => &POSTGRES_MIGRATOR,
        }
    }
}

/// The Raft state machine's position, stored in the same transaction as the
/// entries it covers. Both fields are JSON written and read by the Raft layer
/// and opaque here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    /// The last applied log id, or `None` before the first entry.
    pub last_applied: Option<String>,
    /// The last applied membership configuration.
    pub last_membership: String,
}

/// The change made by applying one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The entry carried no command; only the applied state was written.
    NoCommand,
    /// `AddTrack` inserted a new track.
    TrackAdded { file_id: FileId },
    /// `AddTrack` named a file already in the catalog and changed nothing.
    TrackAlreadyPresent { file_id: FileId },
    /// `SetReplicas` replaced the replica set of a track.
    ReplicasSet { file_id: FileId },
    /// `SetReplicas` named a file not in the catalog and changed nothing.
    ReplicasTrackNotFound { file_id: FileId },
    /// `AcquireLock` granted or renewed the lock.
    LockGranted {
        name: String,
        token: u64,
        expires_at_ms: i64,
    },
    /// `AcquireLock` found the lock held by another owner.
    LockHeld {
        name: String,
        owner: String,
        expires_at_ms: i64,
    },
    /// `ReleaseLock` freed the lock.
    LockReleased { name: String },
    /// `ReleaseLock`, or a fenced `SetReplicas`, named a lock not held under
    /// that owner and token; nothing changed.
    LockNotHeld { name: String },
    /// `ReportReplicaFault` recorded the fault.
    FaultRecorded { file_id: FileId, node_id: NodeId },
    /// `ReportReplicaFault` named a file not in the catalog.
    FaultTrackNotFound { file_id: FileId },
    /// `SetDraining` changed whether the node drains.
    DrainingSet { node_id: NodeId, draining: bool },
    /// `SetDraining` asked for the state the node is already in.
    DrainingUnchanged { node_id: NodeId },
}

/// Where a command sits in the Raft log: its entry's index and the leader's
/// timestamp on the entry. Locks take their tokens and expiry from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryClock {
    pub log_index: u64,
    pub at_ms: i64,
}

/// The order of a track listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSort {
    /// Title, then artist; case and accents ignored.
    #[default]
    Title,
    /// Artist, album, disc, track number, title; missing artists last.
    Artist,
    /// Album, album artist, disc, track number, title; missing albums last.
    Album,
    /// Commit time from the Raft leader's clock.
    AddedAt,
}

/// The direction of a listing's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    Ascending,
    Descending,
}

/// A request for one page of the track listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackQuery {
    /// Maximum items to return, from 0; values above [`MAX_PAGE_LIMIT`] are
    /// clamped to it.
    pub limit: i64,
    /// Items to skip, from 0.
    pub offset: i64,
    pub sort: TrackSort,
    pub order: SortOrder,
}

impl Default for TrackQuery {
    fn default() -> Self {
        TrackQuery {
            limit: DEFAULT_PAGE_LIMIT,
            offset: 0,
            sort: TrackSort::default(),
            order: SortOrder::default(),
        }
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Number of matching items in the whole catalog.
    pub total: u64,
    /// The limit applied, after clamping.
    pub limit: u64,
    pub offset: u64,
}

/// The replica set of one file, as walked by repair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSet {
    pub file_id: FileId,
    pub replicas: Vec<NodeId>,
    pub size_bytes: u64,
    /// Commit time of the track, from the leader's clock.
    pub added_at_ms: i64,
}

/// A connection to one node's catalog database. Cloning is cheap and shares
/// the pools.
#[derive(Clone, Debug)]
pub struct Catalog {
    dialect: Dialect,
    writer: AnyPool,
    reader: AnyPool,
}

impl Catalog {
    /// Connects with [`CatalogSettings::default`]; see [`Catalog::connect_with`].
    pub async fn connect(url: &str) -> Result<Catalog, CatalogError> {
        Catalog::connect_with(url, &CatalogSettings::default()).await
    }

    /// Connects to `sqlite://PATH` (the file and its directory are created
    /// when missing) or `postgres://...`, and runs the pending migrations.
    pub async fn connect_with(
        url: &str,
        settings: &CatalogSettings,
    ) -> Result<Catalog, CatalogError> {
        sqlx::any::install_default_drivers();
        let target = DatabaseUrl::parse(url)?;
        if let Some(directory) = &target.sqlite_directory {
            std::fs::create_dir_all(directory).map_err(|source| CatalogError::CreateDirectory {
                path: directory.clone(),
                source,
            })?;
        }

        let writer = pool_options(target.dialect, WRITE_CONNECTIONS, settings, PoolRole::Write)
            .connect(&target.url)
            .await
            .map_err(|source| CatalogError::Connect { source })?;
        target
            .dialect
            .migrator()
            .run(&writer)
            .await
            .map_err(|source| CatalogError::Migrate { source })?;
        let reader = pool_options(
            target.dialect,
            settings.read_connections.max(1),
            settings,
            PoolRole::Read,
        )
        .connect(&target.url)
        .await
        .map_err(|source| CatalogError::Connect { source })?;

        tracing::info!(
            dialect = target.dialect.name(),
            url = %target.redacted,
            read_connections = settings.read_connections,
            "catalog database ready"
        );
        Ok(Catalog {
            dialect: target.dialect,
            writer,
            reader,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Begins a write transaction on the single writer connection. SQLite
    /// takes the write lock at once (`BEGIN IMMEDIATE`) rather than at the
    /// first write, so a transaction cannot get SQLITE_BUSY halfway when it
    /// would upgrade a read lock to a write lock.
    async fn begin_write(
        &self,
        operation: &'static str,
    ) -> Result<Transaction<'static, Any>, CatalogError> {
        let begin = match self.dialect {
            Dialect::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.writer.begin().await,
        };
        begin.map_err(CatalogError::database(operation))
    }

    /// Begins a read transaction whose statements all read one consistent
    /// state. SQLite fixes the snapshot at the first read of a deferred
    /// transaction, and PostgreSQL needs REPEATABLE READ for the same.
    async fn begin_read(
        &self,
        operation: &'static str,
    ) -> Result<Transaction<'static, Any>, CatalogError> {
        let begin = match self.dialect {
            Dialect::Sqlite => self.reader.begin().await,
            Dialect::Postgres => {
                self.reader
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
            }
        };
        begin.map_err(CatalogError::database(operation))
    }
}

/// The pool a connection belongs to. Read connections of SQLite are set to
/// `query_only`, so a bug cannot write outside the writer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PoolRole {
    Write,
    Read,
}

fn pool_options(
    dialect: Dialect,
    max_connections: u32,
    settings: &CatalogSettings,
    role: PoolRole,
) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(settings.acquire_timeout);
    if dialect != Dialect::Sqlite {
        return options;
    }

    let busy_timeout_ms = settings.sqlite_busy_timeout.as_millis();
    options.after_connect(move |connection, _metadata| {
        Box::pin(async move {
            // WAL lets readers run beside the writer; it is a property of the
            // database file, so only the writer sets it. FULL syncs the WAL
            // on every commit, so an applied entry survives a power loss.
            if role == PoolRole::Write {
                connection.execute("PRAGMA journal_mode = WAL").await?;
            }
            connection.execute("PRAGMA synchronous = FULL").await?;
            connection.execute("PRAGMA foreign_keys = ON").await?;
            let busy_timeout = format!("PRAGMA busy_timeout = {busy_timeout_ms}");
            connection.execute(busy_timeout.as_str()).await?;
            if role == PoolRole::Read {
                connection.execute("PRAGMA query_only = ON").await?;
            }
            connection.execute(SQLITE_CACHE_SIZE_PRAGMA).await?;
            Ok(())
        })
    })
}

/// A database URL checked and prepared for `sqlx::Any`.
#[derive(Debug)]
struct DatabaseUrl {
    dialect: Dialect,
    /// The URL handed to sqlx; for SQLite with `mode=rwc` added unless the
    /// caller chose a mode.
    url: String,
    /// The URL with any password replaced, for logs and errors.
    redacted: String,
    /// The directory of a SQLite database file, created before connecting.
    sqlite_directory: Option<PathBuf>,
}

impl DatabaseUrl {
    fn parse(url: &str) -> Result<DatabaseUrl, CatalogError> {
        let redacted = redact_password(url);
        let unsupported = |reason| CatalogError::UnsupportedUrl {
            url: redacted.clone(),
            reason,
        };

        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl {
                dialect: Dialect::Postgres,
                url: url.to_owned(),
                redacted,
                sqlite_directory: None,
            });
        }
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(unsupported("unknown scheme"));
        };

        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(unsupported("the sqlite url has no file path"));
        }
        let in_memory = path == ":memory:"
            || query.is_some_and(|query| query.split('&').any(|pair| pair == "mode=memory"));
        if in_memory {
            return Err(unsupported(
                "an in-memory sqlite database is not durable and each pool would get its own",
            ));
        }

        let has_mode = query.is_some_and(|query| query.split('&').any(|p| p.starts_with("mode=")));
        let url = match (query, has_mode) {
            (_, true) => url.to_owned(),
            (Some(_), false) => format!("{url}&mode=rwc"),
            (None, false) => format!("{url}?mode=rwc"),
        };
        let sqlite_directory = Path::new(path)
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map(Path::to_path_buf);
        Ok(DatabaseUrl {
            dialect: Dialect::Sqlite,
            url,
            redacted,
            sqlite_directory,
        })
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = rest[..at].find(':') else {
        return url.to_owned();
    };
    format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..])
}

/// Checks a page limit and offset, clamping the limit to `max_limit`.
fn checked_page(limit: i64, offset: i64, max_limit: i64) -> Result<(i64, i64), CatalogError> {
    if limit < 0 {
        return Err(CatalogError::InvalidQuery {
            parameter: "limit",
            value: limit.to_string(),
            expected: format!(
                "expected a value from 0 to {max_limit} (larger values are clamped to {max_limit})"
            ),
        });
    }
    if offset < 0 {
        return Err(CatalogError::InvalidQuery {
            parameter: "offset",
            value: offset.to_string(),
            expected: format!("expected a value from 0 to {}", i64::MAX),
        });
    }
    Ok((limit.min(max_limit), offset))
}

/// Decodes a stored replica list.
fn decode_replicas(file_id: &str, json: &str) -> Result<Vec<NodeId>, CatalogError> {
    serde_json::from_str(json).map_err(|error| CatalogError::CorruptRow {
        file_id: file_id.to_owned(),
        field: "replicas",
        problem: format!("is not a JSON array of node ids: {error}"),
    })
}

/// Encodes a replica list for storage.
fn encode_replicas(replicas: &[NodeId]) -> String {
    // A Vec<String> always serializes to JSON.
    serde_json::to_string(replicas).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn sqlite_url_gets_create_mode() {
        let parsed = DatabaseUrl::parse("sqlite:///var/lib/dispotify/catalog.db");
        let parsed = parsed.map_err(|error| error.to_string());
        let parsed = parsed.as_ref().map(|p| (p.dialect, p.url.as_str()));
        assert_eq!(
            parsed,
            Ok((
                Dialect::Sqlite,
                "sqlite:///var/lib/dispotify/catalog.db?mode=rwc"
            ))
        );
    }

    #[test]
    fn sqlite_url_keeps_explicit_mode() {
        let parsed = DatabaseUrl::parse("sqlite://data/c.db?mode=ro").map(|p| p.url);
        assert_eq!(parsed.ok().as_deref(), Some("sqlite://data/c.db?mode=ro"));
    }

    #[test]
    fn sqlite_url_directory() {
        let parsed = DatabaseUrl::parse("sqlite://data/catalog.db").map(|p| p.sqlite_directory);
        assert_eq!(parsed.ok().flatten(), Some(PathBuf::from("data")));
        let parsed = DatabaseUrl::parse("sqlite://catalog.db").map(|p| p.sqlite_directory);
        assert_eq!(parsed.ok().flatten(), None);
    }

    #[test]
    fn unsupported_urls_are_rejected() {
        for url in [
            "mysql://x/y",
            "sqlite::memory:",
            "sqlite://",
            "sqlite://a.db?mode=memory",
        ] {
            let result = DatabaseUrl::parse(url);
            assert!(
                matches!(result, Err(CatalogError::UnsupportedUrl { .. })),
                "{url} accepted"
            );
        }
    }

    #[test]
    fn password_is_redacted() {
        assert_eq!(
            redact_password("postgres://user:secret@db:5432/catalog"),
            "postgres://user:***@db:5432/catalog"
        );
        assert_eq!(
            redact_password("postgres://user@db/catalog"),
            "postgres://user@db/catalog"
        );
        assert_eq!(redact_password("sqlite://a@b/c.db"), "sqlite://a@b/c.db");
    }
}
