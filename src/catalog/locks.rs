//! Locks, replica faults and draining members in the replicated state: how the state machine
//! applies their commands, and the reads that the API and repair make.
//!
//! Every decision here depends only on the entry (its command, log index
//! and leader timestamp) and the rows already stored, so every node that
//! applies the same log decides the same.

use sqlx::AnyConnection;

use super::rows::column;
use super::{ApplyOutcome, Catalog, CatalogError, EntryClock};
use crate::model::{Fence, FileId, Lock, NodeId, ReplicaFault};

/// A fault reported against one node's copy of a file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultRecord {
    pub file_id: FileId,
    pub node_id: NodeId,
    pub fault: ReplicaFault,
    pub reported_at_ms: i64,
}

impl Catalog {
    /// Returns every lock row, held or expired, ordered by name.
    pub async fn locks(&self) -> Result<Vec<Lock>, CatalogError> {
        let rows = sqlx::query("SELECT name, owner, token, expires_at_ms FROM locks ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(CatalogError::database("read locks"))?;
        rows.iter().map(lock_from_row).collect()
    }

    /// Returns the faults reported against copies of `file_id`, ordered by
    /// node.
    pub async fn replica_faults(&self, file_id: &str) -> Result<Vec<FaultRecord>, CatalogError> {
        let rows = sqlx::query(
            "SELECT file_id, node_id, fault, reported_at_ms FROM replica_faults \
             WHERE file_id = $1 ORDER BY node_id",
        )
        .bind(file_id)
        .fetch_all(&self.reader)
        .await
        .map_err(CatalogError::database("read replica faults"))?;
        rows.iter().map(fault_from_row).collect()
    }

    /// Returns the members being decommissioned, each with the leader time
    /// when its draining started.
    pub async fn draining_nodes(&self) -> Result<Vec<(NodeId, i64)>, CatalogError> {
        let rows = sqlx::query("SELECT node_id, since_ms FROM draining_nodes ORDER BY node_id")
            .fetch_all(&self.reader)
            .await
            .map_err(CatalogError::database("read draining nodes"))?;
        rows.iter()
            .map(|row| Ok((column(row, "node_id")?, column(row, "since_ms")?)))
            .collect()
    }

    /// Counts the tracks that list `node_id` in their replica set.
    pub async fn tracks_listing(&self, node_id: &str) -> Result<u64, CatalogError> {
        // Replica sets are JSON arrays of quoted ids, and ids cannot hold a
        // quote, so the quoted id matches only that member.
        let pattern = format!("%\"{node_id}\"%");
        let row = sqlx::query("SELECT COUNT(*) AS listed FROM tracks WHERE replicas LIKE $1")
            .bind(pattern)
            .fetch_one(&self.reader)
            .await
            .map_err(CatalogError::database("count tracks of a node"))?;
        Ok(column::<i64>(&row, "listed")?.max(0) as u64)
    }

    /// Returns every reported fault, ordered by file and node.
    pub async fn all_replica_faults(&self) -> Result<Vec<FaultRecord>, CatalogError> {
        let rows = sqlx::query(
            "SELECT file_id, node_id, fault, reported_at_ms FROM replica_faults \
             ORDER BY file_id, node_id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(CatalogError::database("read replica faults"))?;
        rows.iter().map(fault_from_row).collect()
    }
}

pub(super) fn lock_from_row(row: &sqlx::any::AnyRow) -> Result<Lock, CatalogError> {
    Ok(Lock {
        name: column(row, "name")?,
        owner: column(row, "owner")?,
        token: column::<i64>(row, "token")? as u64,
        expires_at_ms: column(row, "expires_at_ms")?,
    })
}

pub(super) fn fault_from_row(row: &sqlx::any::AnyRow) -> Result<FaultRecord, CatalogError> {
    let label: String = column(row, "fault")?;
    let file_id: FileId = column(row, "file_id")?;
    let fault = ReplicaFault::from_label(&label).ok_or_else(|| CatalogError::CorruptRow {
        file_id: file_id.clone(),
        field: "replica_faults.fault",
        problem: format!("is the unknown label {label:?}"),
    })?;
    Ok(FaultRecord {
        file_id,
        node_id: column(row, "node_id")?,
        fault,
        reported_at_ms: column(row, "reported_at_ms")?,
    })
}

async fn read_lock(
    connection: &mut AnyConnection,
    name: &str,
) -> Result<Option<Lock>, CatalogError> {
    let row = sqlx::query("SELECT name, owner, token, expires_at_ms FROM locks WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *connection)
        .await
        .map_err(CatalogError::database("read lock"))?;
    row.as_ref().map(lock_from_row).transpose()
}

/// Grants `name` to `owner` when it is free, expired or already `owner`'s.
/// A renewal keeps the token; a new grant's token is the entry's index.
pub(super) async fn acquire_lock(
    connection: &mut AnyConnection,
    name: &str,
    owner: &str,
    ttl_ms: u64,
    clock: EntryClock,
) -> Result<ApplyOutcome, CatalogError> {
    let expires_at_ms = clock
        .at_ms
        .saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
    let token = match read_lock(connection, name).await? {
        Some(held) if held.owner != owner && held.expires_at_ms > clock.at_ms => {
            return Ok(ApplyOutcome::LockHeld {
                name: name.to_string(),
                owner: held.owner,
                expires_at_ms: held.expires_at_ms,
            });
        }
        Some(held) if held.owner == owner && held.expires_at_ms > clock.at_ms => held.token,
        _ => clock.log_index,
    };
    sqlx::query(
        "INSERT INTO locks (name, owner, token, expires_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token, \
         expires_at_ms = excluded.expires_at_ms",
    )
    .bind(name)
    .bind(owner)
    .bind(token as i64)
    .bind(expires_at_ms)
    .execute(&mut *connection)
    .await
    .map_err(CatalogError::database("write lock"))?;
    Ok(ApplyOutcome::LockGranted {
        name: name.to_string(),
        token,
        expires_at_ms,
    })
}

/// Frees `name` when `owner` holds it under `token` and it has not expired.
pub(super) async fn release_lock(
    connection: &mut AnyConnection,
    name: &str,
    owner: &str,
    token: u64,
    clock: EntryClock,
) -> Result<ApplyOutcome, CatalogError> {
    let fence = Fence {
        lock: name.to_string(),
        token,
    };
    if !fence_holds(connection, &fence, Some(owner), clock).await? {
        return Ok(ApplyOutcome::LockNotHeld {
            name: name.to_string(),
        });
    }
    sqlx::query("DELETE FROM locks WHERE name = $1")
        .bind(name)
        .execute(&mut *connection)
        .await
        .map_err(CatalogError::database("release lock"))?;
    Ok(ApplyOutcome::LockReleased {
        name: name.to_string(),
    })
}

/// Checks that the lock of `fence` is held under its token, unexpired at
/// the entry's time, and by `owner` when one is given.
pub(super) async fn fence_holds(
    connection: &mut AnyConnection,
    fence: &Fence,
    owner: Option<&str>,
    clock: EntryClock,
) -> Result<bool, CatalogError> {
    Ok(match read_lock(connection, &fence.lock).await? {
        Some(held) => {
            held.token == fence.token
                && held.expires_at_ms > clock.at_ms
                && owner.is_none_or(|owner| owner == held.owner)
        }
        None => false,
    })
}

/// Records a fault against `node_id`'s copy of `file_id`, replacing an
/// earlier report for the same copy.
pub(super) async fn record_fault(
    connection: &mut AnyConnection,
    file_id: &str,
    node_id: &str,
    fault: ReplicaFault,
    clock: EntryClock,
) -> Result<ApplyOutcome, CatalogError> {
    let result = sqlx::query(
        "INSERT INTO replica_faults (file_id, node_id, fault, reported_at_ms) \
         SELECT file_id, $2, $3, $4 FROM tracks WHERE file_id = $1 \
         ON CONFLICT (file_id, node_id) DO UPDATE SET fault = excluded.fault, \
         reported_at_ms = excluded.reported_at_ms",
    )
    .bind(file_id)
    .bind(node_id)
    .bind(fault.label())
    .bind(clock.at_ms)
    .execute(&mut *connection)
    .await
    .map_err(CatalogError::database("record replica fault"))?;
    let file_id = file_id.to_string();
    Ok(if result.rows_affected() == 0 {
        ApplyOutcome::FaultTrackNotFound { file_id }
    } else {
        ApplyOutcome::FaultRecorded {
            file_id,
            node_id: node_id.to_string(),
        }
    })
}

/// Clears the faults of `file_id` against nodes outside `replicas` and
/// against the nodes in `verified`.
pub(super) async fn clear_faults(
    connection: &mut AnyConnection,
    file_id: &str,
    replicas: &[NodeId],
    verified: &[NodeId],
) -> Result<(), CatalogError> {
    let stored = sqlx::query("SELECT node_id FROM replica_faults WHERE file_id = $1")
        .bind(file_id)
        .fetch_all(&mut *connection)
        .await
        .map_err(CatalogError::database("read replica faults"))?;
    for row in &stored {
        let node_id: String = column(row, "node_id")?;
        if replicas.contains(&node_id) && !verified.contains(&node_id) {
            continue;
        }
        sqlx::query("DELETE FROM replica_faults WHERE file_id = $1 AND node_id = $2")
            .bind(file_id)
            .bind(node_id.as_str())
            .execute(&mut *connection)
            .await
            .map_err(CatalogError::database("clear replica fault"))?;
    }
    Ok(())
}

/// Inserts lock rows read from a snapshot.
pub(super) async fn insert_locks(
    connection: &mut AnyConnection,
    locks: &[Lock],
) -> Result<(), CatalogError> {
    for lock in locks {
        sqlx::query(
            "INSERT INTO locks (name, owner, token, expires_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(lock.name.as_str())
        .bind(lock.owner.as_str())
        .bind(lock.token as i64)
        .bind(lock.expires_at_ms)
        .execute(&mut *connection)
        .await
        .map_err(CatalogError::database("import locks"))?;
    }
    Ok(())
}

/// Inserts replica faults read from a snapshot. A fault must name a track
/// the snapshot carried.
pub(super) async fn insert_faults(
    connection: &mut AnyConnection,
    faults: &[FaultRecord],
) -> Result<(), CatalogError> {
    for fault in faults {
        sqlx::query(
            "INSERT INTO replica_faults (file_id, node_id, fault, reported_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(fault.file_id.as_str())
        .bind(fault.node_id.as_str())
        .bind(fault.fault.label())
        .bind(fault.reported_at_ms)
        .execute(&mut *connection)
        .await
        .map_err(CatalogError::database("import replica faults"))?;
    }
    Ok(())
}

/// Starts or ends the draining of `node_id`.
pub(super) async fn set_draining(
    connection: &mut AnyConnection,
    node_id: &str,
    draining: bool,
    clock: EntryClock,
) -> Result<ApplyOutcome, CatalogError> {
    let result = if draining {
        sqlx::query(
            "INSERT INTO draining_nodes (node_id, since_ms) VALUES ($1, $2) \
             ON CONFLICT (node_id) DO NOTHING",
        )
        .bind(node_id)
        .bind(clock.at_ms)
        .execute(&mut *connection)
        .await
    } else {
        sqlx::query("DELETE FROM draining_nodes WHERE node_id = $1")
            .bind(node_id)
            .execute(&mut *connection)
            .await
    }
    .map_err(CatalogError::database("set draining"))?;
    let node_id = node_id.to_string();
    Ok(if result.rows_affected() == 0 {
        ApplyOutcome::DrainingUnchanged { node_id }
    } else {
        ApplyOutcome::DrainingSet { node_id, draining }
    })
}

/// Inserts draining members read from a snapshot.
pub(super) async fn insert_draining(
    connection: &mut AnyConnection,
    nodes: &[(NodeId, i64)],
) -> Result<(), CatalogError> {
    for (node_id, since_ms) in nodes {
        sqlx::query("INSERT INTO draining_nodes (node_id, since_ms) VALUES ($1, $2)")
            .bind(node_id.as_str())
            .bind(*since_ms)
            .execute(&mut *connection)
            .await
            .map_err(CatalogError::database("import draining nodes"))?;
    }
    Ok(())
}
