//! Distributed locks for operators: `/cluster/locks`.
//!
//! A lock is taken and released through the Raft log, so every node agrees
//! on who holds it. Expiry is decided by the leader's timestamps on the log
//! entries, never by the clock of the node that handles the request.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{internal, ApiError};
use super::AppState;
use crate::model::{Command, Lock, WriteOutcome};
use crate::node;

/// Maximum length of a lock's name or owner, in bytes. Both are stored in every
/// node's catalog and in the Raft log, so they stay short.
pub const MAX_LOCK_NAME_BYTES: usize = 200;

/// Maximum time a lock may be taken for. A holder that needs longer renews
/// it; a lock that outlives a crashed holder by hours would block others.
pub const MAX_LOCK_TTL_MS: u64 = 60 * 60 * 1000;

#[derive(Debug, Deserialize)]
pub struct AcquireBody {
    name: String,
    owner: String,
    ttl_ms: u64,
}

#[derive(Debug, Deserialize)]
pub struct ReleaseQuery {
    owner: Option<String>,
    token: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct LockView {
    name: String,
    owner: String,
    /// The fencing token: the log index of the entry that granted the lock.
    token: u64,
    expires_at_ms: i64,
    /// Whether the lock is still held by this node's clock. Only the log
    /// decides expiry; this flag is a hint for people reading the list.
    held: bool,
}

#[derive(Debug, Serialize)]
pub struct LockList {
    locks: Vec<LockView>,
}

fn view(lock: Lock, now_ms: i64) -> LockView {
    LockView {
        held: lock.expires_at_ms > now_ms,
        name: lock.name,
        owner: lock.owner,
        token: lock.token,
        expires_at_ms: lock.expires_at_ms,
    }
}

/// `GET /cluster/locks`: every lock in this node's catalog, held or
/// expired.
pub async fn list(State(state): State<AppState>) -> Result<Json<LockList>, ApiError> {
    let locks = state
        .node
        .catalog
        .locks()
        .await
        .map_err(|e| internal("list locks", e))?;
    let now_ms = node::now_ms();
    Ok(Json(LockList {
        locks: locks.into_iter().map(|lock| view(lock, now_ms)).collect(),
    }))
}

/// `POST /cluster/locks` with `{"name", "owner", "ttl_ms"}`: takes or renews
/// the lock. 200 with the lock and its token, or 409 `lock_held`.
pub async fn acquire(
    State(state): State<AppState>,
    body: Result<Json<AcquireBody>, JsonRejection>,
) -> Result<Json<LockView>, ApiError> {
    let Json(body) = body.map_err(|rejection| ApiError::InvalidBody {
        detail: rejection.body_text(),
    })?;
    check_text("name", &body.name)?;
    check_text("owner", &body.owner)?;
    if body.ttl_ms == 0 || body.ttl_ms > MAX_LOCK_TTL_MS {
        return Err(ApiError::InvalidField {
            name: "ttl_ms",
            reason: format!("must be from 1 to {MAX_LOCK_TTL_MS} milliseconds"),
        });
    }
    let command = Command::AcquireLock {
        name: body.name.clone(),
        owner: body.owner.clone(),
        ttl_ms: body.ttl_ms,
    };
    let receipt = node::write(&state.node, command).await?;
    match receipt.outcome {
        WriteOutcome::LockGranted {
            token,
            expires_at_ms,
        } => {
            tracing::info!(lock = %body.name, owner = %body.owner, token, "lock granted");
            Ok(Json(view(
                Lock {
                    name: body.name,
                    owner: body.owner,
                    token,
                    expires_at_ms,
                },
                node::now_ms(),
            )))
        }
        WriteOutcome::LockHeld {
            owner,
            expires_at_ms,
        } => Err(ApiError::LockHeld {
            name: body.name,
            owner,
            expires_at_ms,
        }),
        other => Err(internal(
            "acquire lock",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

/// `DELETE /cluster/locks/{name}?owner=&token=`: releases the lock when the
/// owner holds it under that token. 204, or 409 `lock_not_held`.
pub async fn release(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ReleaseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::InvalidQuery {
        name: "owner/token",
        reason: rejection.body_text(),
    })?;
    check_text("name", &name)?;
    let owner = query.owner.ok_or(ApiError::InvalidQuery {
        name: "owner",
        reason: "is required: the owner the lock was acquired for".to_string(),
    })?;
    check_text("owner", &owner)?;
    let token = query.token.ok_or(ApiError::InvalidQuery {
        name: "token",
        reason: "is required: the token returned when the lock was acquired".to_string(),
    })?;
    let command = Command::ReleaseLock {
        name: name.clone(),
        owner: owner.clone(),
        token,
    };
    let receipt = node::write(&state.node, command).await?;
    match receipt.outcome {
        WriteOutcome::Changed => {
            tracing::info!(lock = %name, %owner, token, "lock released");
            Ok(StatusCode::NO_CONTENT)
        }
        WriteOutcome::LockNotHeld { lock } => Err(ApiError::LockNotHeld { name: lock }),
        other => Err(internal(
            "release lock",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

fn check_text(name: &'static str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_LOCK_NAME_BYTES {
        return Err(ApiError::InvalidField {
            name,
            reason: format!("must be 1 to {MAX_LOCK_NAME_BYTES} bytes long"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::InvalidField {
            name,
            reason: "must not contain control characters".to_string(),
        });
    }
    Ok(())
}
