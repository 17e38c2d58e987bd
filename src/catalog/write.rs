//! Writes: applying Raft entries and the bulk inserts shared with snapshot
//! import.

use std::collections::HashSet;

use sqlx::AnyConnection;

use super::keys::search_terms;
use super::locks::{
    acquire_lock, clear_faults, fence_holds, record_fault, release_lock, set_draining,
};
use super::rows::{
    bind_track, column, AnyQuery, ManifestRow, TrackRow, TRACK_INSERT_COLUMNS,
    TRACK_INSERT_COLUMN_COUNT,
};
use super::{encode_replicas, AppliedState, ApplyOutcome, Catalog, CatalogError, EntryClock};
use crate::model::{Command, Cover, Fence, FileId, Manifest, NodeId, Track};

/// Maximum bind parameters in one statement. SQLite's default limit is
/// 32766 (since 3.32) and PostgreSQL's is 65535, so multi-row inserts are
/// split to stay below the smaller one.
const MAX_BIND_PARAMETERS: usize = 32_766;

/// A track to insert with everything stored beside it.
pub struct NewTrack<'a> {
    pub track: &'a Track,
    pub manifest: &'a Manifest,
    pub cover: Option<&'a Cover>,
}

impl Catalog {
    /// Applies one Raft entry: the command, if any, and the new applied
    /// state, in one transaction.
    ///
    /// `AddTrack` inserts the track, its manifest, its cover and its search
    /// terms unless a track with that `file_id` exists, in which case it
    /// changes nothing. The stored `has_cover` is whether the command
    /// carries a cover, whatever the value of `track.has_cover`. `SetReplicas`
    /// replaces the replica set of an existing track and changes nothing for
    /// an unknown `file_id` or a fence that no longer holds. Lock commands
    /// take their token and time from `clock`. Every such case is reported
    /// in the outcome rather than as an error, so every node applies the
    /// same log identically.
    pub async fn apply(
        &self,
        applied: &AppliedState,
        command: Option<&Command>,
        clock: EntryClock,
    ) -> Result<ApplyOutcome, CatalogError> {
        const OPERATION: &str = "apply entry";
        let mut transaction = self.begin_write(OPERATION).await?;

        let outcome = apply_command(&mut transaction, command, clock).await?;
        write_applied_state(&mut transaction, applied).await?;

        transaction
            .commit()
            .await
            .map_err(CatalogError::database(OPERATION))?;
        tracing::debug!(?outcome, "applied catalog entry");
        Ok(outcome)
    }

    /// Applies several Raft entries in log order in one transaction, so that
    /// a batch costs one commit (one fsync on SQLite). The applied state of
    /// the last entry is the one left stored. Either every entry is applied
    /// or, on error, none is.
    pub async fn apply_batch(
        &self,
        entries: &[(AppliedState, Option<Command>, EntryClock)],
    ) -> Result<Vec<ApplyOutcome>, CatalogError> {
        const OPERATION: &str = "apply entry batch";
        let Some((last_applied, _, _)) = entries.last() else {
            return Ok(Vec::new());
        };
        let mut transaction = self.begin_write(OPERATION).await?;

        let mut outcomes = Vec::with_capacity(entries.len());
        for (_, command, clock) in entries {
            outcomes.push(apply_command(&mut transaction, command.as_ref(), *clock).await?);
        }
        write_applied_state(&mut transaction, last_applied).await?;

        transaction
            .commit()
            .await
            .map_err(CatalogError::database(OPERATION))?;
        tracing::debug!(entries = entries.len(), "applied catalog entry batch");
        Ok(outcomes)
    }
}

async fn apply_command(
    connection: &mut AnyConnection,
    command: Option<&Command>,
    clock: EntryClock,
) -> Result<ApplyOutcome, CatalogError> {
    match command {
        None => Ok(ApplyOutcome::NoCommand),
        Some(Command::AddTrack {
            track,
            manifest,
            cover,
        }) => {
            let new_track = NewTrack {
                track,
                manifest,
                cover: cover.as_ref(),
            };
            let inserted = insert_tracks(connection, &[new_track]).await?;
            let file_id = track.file_id.clone();
            Ok(if inserted.contains(&file_id) {
                ApplyOutcome::TrackAdded { file_id }
            } else {
                ApplyOutcome::TrackAlreadyPresent { file_id }
            })
        }
        Some(Command::SetReplicas {
            file_id,
            replicas,
            verified,
            fence,
        }) => {
            set_replicas(
                connection,
                file_id,
                replicas,
                verified,
                fence.as_ref(),
                clock,
            )
            .await
        }
        Some(Command::AcquireLock {
            name,
            owner,
            ttl_ms,
        }) => acquire_lock(connection, name, owner, *ttl_ms, clock).await,
        Some(Command::ReleaseLock { name, owner, token }) => {
            release_lock(connection, name, owner, *token, clock).await
        }
        Some(Command::ReportReplicaFault {
            file_id,
            node_id,
            fault,
        }) => record_fault(connection, file_id, node_id, *fault, clock).await,
        Some(Command::SetDraining { node_id, draining }) => {
            set_draining(connection, node_id, *draining, clock).await
        }
    }
}

async fn set_replicas(
    connection: &mut AnyConnection,
    file_id: &FileId,
    replicas: &[NodeId],
    verified: &[NodeId],
    fence: Option<&Fence>,
    clock: EntryClock,
) -> Result<ApplyOutcome, CatalogError> {
    if let Some(fence) = fence {
        if !fence_holds(connection, fence, None, clock).await? {
            return Ok(ApplyOutcome::LockNotHeld {
                name: fence.lock.clone(),
            });
        }
    }
    let result = sqlx::query("UPDATE tracks SET replicas = $1 WHERE file_id = $2")
        .bind(encode_replicas(replicas))
        .bind(file_id.as_str())
        .execute(&mut *connection)
        .await
        .map_err(CatalogError::database("set replicas"))?;

    if result.rows_affected() == 0 {
        return Ok(ApplyOutcome::ReplicasTrackNotFound {
            file_id: file_id.clone(),
        });
    }
    clear_faults(connection, file_id, replicas, verified).await?;
    Ok(ApplyOutcome::ReplicasSet {
        file_id: file_id.clone(),
    })
}

pub(super) async fn write_applied_state(
    connection: &mut AnyConnection,
    applied: &AppliedState,
) -> Result<(), CatalogError> {
    sqlx::query(
        "INSERT INTO applied_state (id, last_applied, last_membership) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET last_applied = excluded.last_applied, \
         last_membership = excluded.last_membership",
    )
    .bind(applied.last_applied.as_deref())
    .bind(applied.last_membership.as_str())
    .execute(connection)
    .await
    .map_err(CatalogError::database("write applied state"))?;
    Ok(())
}

/// Inserts tracks with their manifests, covers and search terms, skipping
/// every track whose `file_id` is already stored, and returns the ids of
/// the tracks inserted.
pub(super) async fn insert_tracks(
    connection: &mut AnyConnection,
    batch: &[NewTrack<'_>],
) -> Result<HashSet<FileId>, CatalogError> {
    let rows = batch
        .iter()
        .map(|new| TrackRow::new(new.track, new.cover.is_some()))
        .collect::<Result<Vec<_>, _>>()?;

    let mut inserted = HashSet::new();
    let rows_per_statement = MAX_BIND_PARAMETERS / TRACK_INSERT_COLUMN_COUNT;
    for chunk in rows.chunks(rows_per_statement) {
        let sql = format!(
            "INSERT INTO tracks ({TRACK_INSERT_COLUMNS}) VALUES {} \
             ON CONFLICT (file_id) DO NOTHING RETURNING file_id",
            placeholders(chunk.len(), TRACK_INSERT_COLUMN_COUNT)
        );
        let query = chunk
            .iter()
            .fold(sqlx::query(&sql), |query, row| bind_track(query, row));
        let returned = query
            .fetch_all(&mut *connection)
            .await
            .map_err(CatalogError::database("insert tracks"))?;
        for row in &returned {
            inserted.insert(column::<String>(row, "file_id")?);
        }
    }

    let fresh: Vec<&NewTrack<'_>> = batch
        .iter()
        .filter(|new| inserted.contains(&new.track.file_id))
        .collect();
    insert_manifests(connection, &fresh).await?;
    insert_covers(connection, &fresh).await?;
    insert_search_terms(connection, &fresh).await?;
    Ok(inserted)
}

async fn insert_manifests(
    connection: &mut AnyConnection,
    batch: &[&NewTrack<'_>],
) -> Result<(), CatalogError> {
    let rows = batch
        .iter()
        .map(|new| ManifestRow::new(&new.track.file_id, new.manifest))
        .collect::<Result<Vec<_>, _>>()?;

    insert_rows(
        connection,
        "insert manifests",
        "manifests (file_id, size_bytes, sha256, chunk_size, chunk_hashes)",
        5,
        &rows,
        |query, row| {
            query
                .bind(row.file_id)
                .bind(row.size_bytes)
                .bind(row.sha256)
                .bind(row.chunk_size)
                .bind(row.chunk_hashes.as_slice())
        },
    )
    .await
}

async fn insert_covers(
    connection: &mut AnyConnection,
    batch: &[&NewTrack<'_>],
) -> Result<(), CatalogError> {
    let rows: Vec<(&str, &Cover)> = batch
        .iter()
        .filter_map(|new| Some((new.track.file_id.as_str(), new.cover?)))
        .collect();

    insert_rows(
        connection,
        "insert covers",
        "covers (file_id, mime, data)",
        3,
        &rows,
        |query, (file_id, cover)| {
            query
                .bind(*file_id)
                .bind(cover.mime.as_str())
                .bind(cover.data.as_slice())
        },
    )
    .await
}

async fn insert_search_terms(
    connection: &mut AnyConnection,
    batch: &[&NewTrack<'_>],
) -> Result<(), CatalogError> {
    let mut rows: Vec<(&str, String, i64)> = Vec::new();
    for new in batch {
        let file_id = new.track.file_id.as_str();
        for (term, weight) in search_terms(new.track) {
            rows.push((file_id, term, weight));
        }
    }

    insert_rows(
        connection,
        "insert search terms",
        "search_terms (file_id, term, weight)",
        3,
        &rows,
        |query, (file_id, term, weight)| query.bind(*file_id).bind(term.as_str()).bind(*weight),
    )
    .await
}

/// Inserts `rows` into `table_and_columns` with as few multi-row INSERT
/// statements as the bind parameter limit allows.
async fn insert_rows<'r, T>(
    connection: &mut AnyConnection,
    operation: &'static str,
    table_and_columns: &str,
    column_count: usize,
    rows: &'r [T],
    bind: impl for<'q> Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> Result<(), CatalogError> {
    let rows_per_statement = MAX_BIND_PARAMETERS / column_count;
    for chunk in rows.chunks(rows_per_statement) {
        let sql = format!(
            "INSERT INTO {table_and_columns} VALUES {}",
            placeholders(chunk.len(), column_count)
        );
        let query = chunk.iter().fold(sqlx::query(&sql), &bind);
        query
            .execute(&mut *connection)
            .await
            .map_err(CatalogError::database(operation))?;
    }
    Ok(())
}

/// Builds `($1, $2), ($3, $4)` for `row_count` rows of `column_count`
/// columns.
fn placeholders(row_count: usize, column_count: usize) -> String {
    let mut sql = String::new();
    for row in 0..row_count {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..column_count {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * column_count + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
        assert_eq!(placeholders(0, 4), "");
    }
}
