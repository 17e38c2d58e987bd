//! Catalog reads: listing, search, one track and its cover art.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{internal, ApiError};
use super::{parse_file_id, AppState};
use crate::catalog::{
    CatalogError, Page, SortOrder, TrackQuery, TrackSort, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
};
use crate::model::Track;

#[derive(Debug, Deserialize)]
pub struct PageParams {
    limit: Option<String>,
    offset: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    q: Option<String>,
}

fn parse_paging(params: &PageParams) -> Result<(i64, i64), ApiError> {
    let limit = match &params.limit {
        None => DEFAULT_PAGE_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => limit,
            _ => {
                return Err(ApiError::InvalidQuery {
                    name: "limit",
                    reason: format!("{raw:?} is not a whole number from 1 to {MAX_PAGE_LIMIT}"),
                })
            }
        },
    };
    let offset =
        match &params.offset {
            None => 0,
            Some(raw) => raw.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| {
                ApiError::InvalidQuery {
                    name: "offset",
                    reason: format!("{raw:?} is not a whole number of 0 or more"),
                }
            })?,
        };
    Ok((limit, offset))
}

fn parse_sort(params: &PageParams) -> Result<(TrackSort, SortOrder), ApiError> {
    let sort = match params.sort.as_deref() {
        None | Some("title") => TrackSort::Title,
        Some("artist") => TrackSort::Artist,
        Some("album") => TrackSort::Album,
        Some("added") => TrackSort::AddedAt,
        Some(other) => {
            return Err(ApiError::InvalidQuery {
                name: "sort",
                reason: format!("{other:?} is not one of title, artist, album, added"),
            })
        }
    };
    let order = match params.order.as_deref() {
        None | Some("asc") => SortOrder::Ascending,
        Some("desc") => SortOrder::Descending,
        Some(other) => {
            return Err(ApiError::InvalidQuery {
                name: "order",
                reason: format!("{other:?} is not asc or desc"),
            })
        }
    };
    Ok((sort, order))
}

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<Track>>, ApiError> {
    let (limit, offset) = parse_paging(&params)?;
    let (sort, order) = parse_sort(&params)?;
    let query = TrackQuery {
        limit,
        offset,
        sort,
        order,
    };
    let page = state
        .node
        .catalog
        .list_tracks(&query)
        .await
        .map_err(|e| catalog_error("list tracks", e))?;
    Ok(Json(page))
}

pub async fn search(
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<Track>>, ApiError> {
    let (limit, offset) = parse_paging(&params)?;
    let q = params.q.clone().unwrap_or_default();
    let page = state
        .node
        .catalog
        .search(&q, limit, offset)
        .await
        .map_err(|e| catalog_error("search", e))?;
    Ok(Json(page))
}

/// Maps a catalog error: a rejected parameter is the client's to fix, any
/// other failure is internal.
fn catalog_error(operation: &'static str, error: CatalogError) -> ApiError {
    match error {
        CatalogError::InvalidQuery {
            parameter,
            value,
            expected,
        } => ApiError::InvalidQuery {
            name: parameter,
            reason: format!("{value:?} is invalid: {expected}"),
        },
        other => internal(operation, other),
    }
}

/// One track with the health of each of its copies.
#[derive(Debug, serde::Serialize)]
pub struct TrackDetail {
    #[serde(flatten)]
    track: Track,
    replica_health: Vec<ReplicaHealth>,
}

#[derive(Debug, serde::Serialize)]
struct ReplicaHealth {
    node_id: String,
    /// `ok`, `corrupt` or `missing` (reported by the node through Raft), or
    /// `node_down` (this node's health checks cannot reach it).
    state: &'static str,
}

pub async fn track(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
) -> Result<Json<TrackDetail>, ApiError> {
    let file_id = parse_file_id(file_id)?;
    let node = &state.node;
    let Some(track) = node
        .catalog
        .track(&file_id)
        .await
        .map_err(|e| internal("read track", e))?
    else {
        return Err(ApiError::TrackNotFound { file_id });
    };
    let faults = node
        .catalog
        .replica_faults(&file_id)
        .await
        .map_err(|e| internal("read replica faults", e))?;
    let replica_health = track
        .replicas
        .iter()
        .map(|node_id| {
            let fault = faults.iter().find(|f| &f.node_id == node_id);
            let state = match fault {
                Some(fault) => fault.fault.label(),
                None if node_id != &node.config.id && !node.discovery.is_reachable(node_id) => {
                    "node_down"
                }
                None => "ok",
            };
            ReplicaHealth {
                node_id: node_id.clone(),
                state,
            }
        })
        .collect();
    Ok(Json(TrackDetail {
        track,
        replica_health,
    }))
}

pub async fn cover(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
) -> Result<Response, ApiError> {
    let file_id = parse_file_id(file_id)?;
    let catalog = &state.node.catalog;
    if catalog
        .track(&file_id)
        .await
        .map_err(|e| internal("read track", e))?
        .is_none()
    {
        return Err(ApiError::TrackNotFound { file_id });
    }
    let Some(cover) = catalog
        .cover(&file_id)
        .await
        .map_err(|e| internal("read cover", e))?
    else {
        return Err(ApiError::CoverNotFound { file_id });
    };
    let headers = [
        (header::CONTENT_TYPE, cover.mime),
        (
            header::CACHE_CONTROL,
            "public, max-age=31536000, immutable".to_string(),
        ),
    ];
    Ok((headers, cover.data).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(limit: Option<&str>, offset: Option<&str>) -> PageParams {
        PageParams {
            limit: limit.map(String::from),
            offset: offset.map(String::from),
            sort: None,
            order: None,
            q: None,
        }
    }

    #[test]
    fn paging_defaults() {
        assert_eq!(
            parse_paging(&params(None, None)).unwrap(),
            (DEFAULT_PAGE_LIMIT, 0)
        );
    }

    #[test]
    fn paging_rejects_out_of_range() {
        for bad in ["0", "-1", "abc", "501"] {
            assert!(
                parse_paging(&params(Some(bad), None)).is_err(),
                "limit {bad}"
            );
        }
        assert!(parse_paging(&params(None, Some("-3"))).is_err());
    }
}
