//! Raft log and vote on local disk, in a redb database.
//!
//! redb commits are checksummed and atomic: after a crash the database opens
//! at the last fully committed transaction, so a torn write never surfaces
//! as a half-written entry. Every append commits with immediate durability
//! (fsync) before openraft is told the entries are flushed.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Builder, Database, ReadableTable, TableDefinition};

use super::{Entry, LogId, TypeConfig, Vote};

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

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io::Error::other)?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io::Error::other(e)),
        };
        let Some(value) = table.get(key).map_err(io::Error::other)? else {
            return Ok(None);
        };
        let decoded = postcard::from_bytes(value.value()).map_err(io::Error::other)?;
        Ok(Some(decoded))
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> io::Result<()> {
        let bytes = postcard::to_allocvec(value).map_err(io::Error::other)?;
        let txn = self.db.begin_write().map_err(io::Error::other)?;
        {
            let mut table = txn.open_table(META).map_err(io::Error::other)?;
            table
                .insert(key, bytes.as_slice())
                .map_err(io::Error::other)?;
        }
        txn.commit().map_err(io::Error::other)
    }

    fn read_range(&self, start: u64, end_exclusive: u64) -> io::Result<Vec<Entry>> {
        let txn = self.db.begin_read().map_err(io::Error::other)?;
        let table = match txn.open_table(LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(io::Error::other(e)),
        };
        let mut entries = Vec::new();
        for item in table
            .range(start..end_exclusive)
            .map_err(io::Error::other)?
        {
            let (_, value) = item.map_err(io::Error::other)?;
            let entry = postcard::from_bytes(value.value()).map_err(io::Error::other)?;
            entries.push(entry);
        }
        Ok(entries)
    }

    fn last_entry_log_id(&self) -> io::Result<Option<LogId>> {
        let txn = self.db.begin_read().map_err(io::Error::other)?;
        let table = match txn.open_table(LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io::Error::other(e)),
        };
        let Some((_, value)) = table.last().map_err(io::Error::other)? else {
            return Ok(None);
        };
        let entry: Entry = postcard::from_bytes(value.value()).map_err(io::Error::other)?;
        Ok(Some(entry.log_id))
    }

    /// Removes every entry with an index in `range` in one transaction, and
    /// optionally records `last_purged` in the same transaction.
    fn remove_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        last_purged: Option<&LogId>,
    ) -> io::Result<()> {
        let txn = self.db.begin_write().map_err(io::Error::other)?;
        {
            let mut table = txn.open_table(LOG).map_err(io::Error::other)?;
            table
                .retain_in(range, |_, _| false)
                .map_err(io::Error::other)?;
            if let Some(log_id) = last_purged {
                let bytes = postcard::to_allocvec(log_id).map_err(io::Error::other)?;
                let mut meta = txn.open_table(META).map_err(io::Error::other)?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                    .map_err(io::Error::other)?;
            }
        }
        txn.commit().map_err(io::Error::other)
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

impl LogStore {
    /// Runs `work` on the blocking pool with a clone of this store: every
    /// redb call blocks on disk I/O, and a commit waits for an fsync.
    async fn blocking<T, F>(&self, work: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(LogStore) -> io::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(io::Error::other)?
    }

    fn insert_all(&self, encoded: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let txn = self.db.begin_write().map_err(io::Error::other)?;
        {
            let mut table = txn.open_table(LOG).map_err(io::Error::other)?;
            for (index, bytes) in encoded {
                table
                    .insert(*index, bytes.as_slice())
                    .map_err(io::Error::other)?;
            }
        }
        txn.commit().map_err(io::Error::other)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end_exclusive) = to_bounds(&range);
        self.blocking(move |store| store.read_range(start, end_exclusive))
            .await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.read_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
        let last_entry = self.last_entry_log_id()?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last_entry.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.write_meta(KEY_VOTE, vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        self.write_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        let committed: Option<Option<LogId>> = self.read_meta(KEY_COMMITTED)?;
        Ok(committed.flatten())
    }

    /// Commits the entries in one redb transaction, fsynced, and only then
    /// reports them flushed.
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry).map_err(io::Error::other)?;
            encoded.push((entry.log_id.index, bytes));
        }
        let result = self.blocking(move |store| store.insert_all(&encoded)).await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let first_removed = last_log_id.as_ref().map_or(0, |log_id| log_id.index + 1);
        tracing::debug!(log_index = first_removed, "truncating raft log");
        self.blocking(move |store| {
            store.remove_range((Bound::Included(first_removed), Bound::Unbounded), None)
        })
        .await
    }

    /// Deletes the entries up to `log_id` on the blocking pool: a purge after
    /// a snapshot reads and rewrites thousands of entries' pages, which
    /// would otherwise hold a runtime worker thread for its whole duration.
    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        tracing::debug!(log_index = log_id.index, "purging raft log");
        self.blocking(move |store| {
            store.remove_range(
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some(&log_id),
            )
        })
        .await
    }
}
