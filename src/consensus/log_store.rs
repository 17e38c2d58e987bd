//! Raft log and vote on local disk, in a redb database.
//!
//! redb commits are checksummed and atomic: after a crash the database opens
//! at the last fully committed transaction, so a torn write never surfaces
//! as a half-written entry. Every append commits with immediate durability
//! (fsync) before openraft is told the entries are flushed.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Builder, Database, ReadableTable, TableDefinition};

use super::{RaftId, TypeConfig};

/// Entries by log index, each encoded with postcard.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Small records by name: the vote, the committed log id and the last purged log id.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Bytes of redb's page cache for the log. redb 2.6 keeps every page that a
/// commit wrote in its read cache, which may use 90% of this size, and
/// buffers uncommitted dirty pages in the rest, writing the oldest to the
/// file early when they do not fit. With redb's default of 1 GiB the cache
/// ends up holding most of the log file, tens of MB after some thousands
/// of entries. Appends and replication touch the tail of the log, which a
/// few MiB hold. Durability does not depend on it, because every commit
/// still writes all its pages and fsyncs.
const LOG_CACHE_BYTES: usize = 8 * 1024 * 1024;

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// The Raft log store. Cloning shares the database handle; openraft uses one
/// clone as the storage and others as log readers for replication.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens or creates the log database at `path`.
    pub fn open(path: &Path) -> Result<LogStore, redb::DatabaseError> {
        let db = Builder::new()
            .set_cache_size(LOG_CACHE_BYTES)
            .create(path)?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let txn = self.db.begin_read().map_err(|e| AnyError::new(&e))?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(AnyError::new(&e)),
        };
        let Some(value) = table.get(key).map_err(|e| AnyError::new(&e))? else {
            return Ok(None);
        };
        let decoded = postcard::from_bytes(value.value()).map_err(|e| AnyError::new(&e))?;
        Ok(Some(decoded))
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), AnyError> {
        let bytes = postcard::to_allocvec(value).map_err(|e| AnyError::new(&e))?;
        let txn = self.db.begin_write().map_err(|e| AnyError::new(&e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| AnyError::new(&e))?;
            table
                .insert(key, bytes.as_slice())
                .map_err(|e| AnyError::new(&e))?;
        }
        txn.commit().map_err(|e| AnyError::new(&e))
    }

    fn read_range(
        &self,
        start: u64,
        end_exclusive: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, AnyError> {
        let txn = self.db.begin_read().map_err(|e| AnyError::new(&e))?;
        let table = match txn.open_table(LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(AnyError::new(&e)),
        };
        let mut entries = Vec::new();
        for item in table
            .range(start..end_exclusive)
            .map_err(|e| AnyError::new(&e))?
        {
            let (_, value) = item.map_err(|e| AnyError::new(&e))?;
            let entry = postcard::from_bytes(value.value()).map_err(|e| AnyError::new(&e))?;
            entries.push(entry);
        }
        Ok(entries)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<RaftId>>, AnyError> {
        let txn = self.db.begin_read().map_err(|e| AnyError::new(&e))?;
        let table = match txn.open_table(LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(AnyError::new(&e)),
        };
        let Some((_, value)) = table.last().map_err(|e| AnyError::new(&e))? else {
            return Ok(None);
        };
        let entry: Entry<TypeConfig> =
            postcard::from_bytes(value.value()).map_err(|e| AnyError::new(&e))?;
        Ok(Some(entry.log_id))
    }

    /// Removes every entry with an index in `range` in one transaction, and
    /// optionally records `last_purged` in the same transaction.
    fn remove_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        last_purged: Option<&LogId<RaftId>>,
    ) -> Result<(), AnyError> {
        let txn = self.db.begin_write().map_err(|e| AnyError::new(&e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| AnyError::new(&e))?;
            table
                .retain_in(range, |_, _| false)
                .map_err(|e| AnyError::new(&e))?;
            if let Some(log_id) = last_purged {
                let bytes = postcard::to_allocvec(log_id).map_err(|e| AnyError::new(&e))?;
                let mut meta = txn.open_table(META).map_err(|e| AnyError::new(&e))?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                    .map_err(|e| AnyError::new(&e))?;
            }
        }
        txn.commit().map_err(|e| AnyError::new(&e))
    }
}

fn to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end_exclusive = match range.end_bound() {
        Bound::Included(&n) => n.saturating_add(1),
        Bound::Excluded(&n) => n,
        Bound::Unbounded => u64::MAX,
    };
    (start, end_exclusive)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<RaftId>> {
        let (start, end_exclusive) = to_bounds(&range);
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_range(start, end_exclusive))
            .await
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?
            .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<RaftId>> {
        let last_purged: Option<LogId<RaftId>> = self
            .read_meta(KEY_LAST_PURGED)
            .map_err(StorageIOError::read_logs)?;
        let last_entry = self
            .last_entry_log_id()
            .map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last_entry.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), StorageError<RaftId>> {
        self.write_meta(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, StorageError<RaftId>> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<RaftId>>,
    ) -> Result<(), StorageError<RaftId>> {
        self.write_meta(KEY_COMMITTED, &committed)
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>, StorageError<RaftId>> {
        let committed: Option<Option<LogId<RaftId>>> = self
            .read_meta(KEY_COMMITTED)
            .map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), AnyError> {
            let txn = db.begin_write().map_err(|e| AnyError::new(&e))?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| AnyError::new(&e))?;
                for (index, bytes) in &encoded {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(|e| AnyError::new(&e))?;
                }
            }
            txn.commit().map_err(|e| AnyError::new(&e))
        })
        .await
        .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;

        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        tracing::debug!(log_index = log_id.index, "truncating raft log");
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.remove_range((Bound::Included(log_id.index), Bound::Unbounded), None)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?
        .map_err(|e| StorageIOError::write_logs(e).into())
    }

    /// Deletes the entries up to `log_id` on the blocking pool: a purge after
    /// a snapshot reads and rewrites thousands of entries' pages, which
    /// would otherwise hold a runtime worker thread for its whole duration.
    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        tracing::debug!(log_index = log_id.index, "purging raft log");
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.remove_range(
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some(&log_id),
            )
        })
        .await
        .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}
