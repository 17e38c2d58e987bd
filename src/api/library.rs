//! Library reads for the web app: albums, artists and the tracks of each.
//!
//! `GET /music/albums?limit=&offset=&sort=album|artist&order=asc|desc`,
//! `GET /music/artists?limit=&offset=&order=`,
//! `GET /music/albums/{album_id}/tracks?limit=&offset=` and
//! `GET /music/artists/{artist_id}/tracks?limit=&offset=`. Ids are the ones
//! the listings return; an unknown id is a 404.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::error::{internal, ApiError};
use super::AppState;
use crate::catalog::{
    Album, AlbumQuery, AlbumSort, Artist, ArtistQuery, CatalogError, GroupKind, Page, SortOrder,
    DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
};
use crate::model::Track;

#[derive(Debug, Default, Deserialize)]
pub struct LibraryParams {
    limit: Option<String>,
    offset: Option<String>,
    sort: Option<String>,
    order: Option<String>,
}

pub async fn albums(
    State(state): State<AppState>,
    Query(params): Query<LibraryParams>,
) -> Result<Json<Page<Album>>, ApiError> {
    let (limit, offset) = parse_paging(&params)?;
    let sort = match params.sort.as_deref() {
        None | Some("album") => AlbumSort::Album,
        Some("artist") => AlbumSort::Artist,
        Some(other) => {
            return Err(ApiError::InvalidQuery {
                name: "sort",
                reason: format!("{other:?} is not album or artist"),
            })
        }
    };
    let query = AlbumQuery {
        limit,
        offset,
        sort,
        order: parse_order(&params)?,
    };
    let page = state
        .node
        .catalog
        .list_albums(&query)
        .await
        .map_err(|e| catalog_error("list albums", e))?;
    Ok(Json(page))
}

pub async fn artists(
    State(state): State<AppState>,
    Query(params): Query<LibraryParams>,
) -> Result<Json<Page<Artist>>, ApiError> {
    let (limit, offset) = parse_paging(&params)?;
    if let Some(sort) = params.sort.as_deref().filter(|sort| *sort != "artist") {
        return Err(ApiError::InvalidQuery {
            name: "sort",
            reason: format!("{sort:?} is not artist"),
        });
    }
    let query = ArtistQuery {
        limit,
        offset,
        order: parse_order(&params)?,
    };
    let page = state
        .node
        .catalog
        .list_artists(&query)
        .await
        .map_err(|e| catalog_error("list artists", e))?;
    Ok(Json(page))
}

pub async fn album_tracks(
    State(state): State<AppState>,
    Path(album_id): Path<String>,
    Query(params): Query<LibraryParams>,
) -> Result<Json<Page<Track>>, ApiError> {
    match group_tracks(&state, GroupKind::Album, &album_id, &params).await? {
        Some(page) => Ok(Json(page)),
        None => Err(ApiError::AlbumNotFound { album_id }),
    }
}

pub async fn artist_tracks(
    State(state): State<AppState>,
    Path(artist_id): Path<String>,
    Query(params): Query<LibraryParams>,
) -> Result<Json<Page<Track>>, ApiError> {
    match group_tracks(&state, GroupKind::Artist, &artist_id, &params).await? {
        Some(page) => Ok(Json(page)),
        None => Err(ApiError::ArtistNotFound { artist_id }),
    }
}

async fn group_tracks(
    state: &AppState,
    kind: GroupKind,
    group_id: &str,
    params: &LibraryParams,
) -> Result<Option<Page<Track>>, ApiError> {
    let (limit, offset) = parse_paging(params)?;
    state
        .node
        .catalog
        .group_tracks(kind, group_id, limit, offset)
        .await
        .map_err(|e| catalog_error("list group tracks", e))
}

fn parse_paging(params: &LibraryParams) -> Result<(i64, i64), ApiError> {
    let limit = match &params.limit {
        None => DEFAULT_PAGE_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE_LIMIT).contains(limit))
            .ok_or_else(|| ApiError::InvalidQuery {
                name: "limit",
                reason: format!("{raw:?} is not a whole number from 1 to {MAX_PAGE_LIMIT}"),
            })?,
    };
    let offset = match &params.offset {
        None => 0,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|offset| *offset >= 0)
            .ok_or_else(|| ApiError::InvalidQuery {
                name: "offset",
                reason: format!("{raw:?} is not a whole number of 0 or more"),
            })?,
    };
    Ok((limit, offset))
}

fn parse_order(params: &LibraryParams) -> Result<SortOrder, ApiError> {
    match params.order.as_deref() {
        None | Some("asc") => Ok(SortOrder::Ascending),
        Some("desc") => Ok(SortOrder::Descending),
        Some(other) => Err(ApiError::InvalidQuery {
            name: "order",
            reason: format!("{other:?} is not asc or desc"),
        }),
    }
}

/// Maps a catalog error: a rejected parameter or id is the client's to fix,
/// any other failure is internal.
fn catalog_error(operation: &'static str, error: CatalogError) -> ApiError {
    match error {
        CatalogError::InvalidQuery {
            parameter,
            value,
            expected,
        } => ApiError::InvalidQuery {
            name: parameter,
            reason: format!("{value} is invalid: {expected}"),
        },
        other => internal(operation, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(limit: Option<&str>, offset: Option<&str>, order: Option<&str>) -> LibraryParams {
        LibraryParams {
            limit: limit.map(String::from),
            offset: offset.map(String::from),
            sort: None,
            order: order.map(String::from),
        }
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(
            parse_paging(&params(None, None, None)).ok(),
            Some((DEFAULT_PAGE_LIMIT, 0))
        );
        assert_eq!(
            parse_paging(&params(Some("500"), Some("7"), None)).ok(),
            Some((500, 7))
        );
        for bad in ["0", "-1", "x", "501"] {
            assert!(
                parse_paging(&params(Some(bad), None, None)).is_err(),
                "limit {bad}"
            );
        }
        assert!(parse_paging(&params(None, Some("-1"), None)).is_err());
    }

    #[test]
    fn order_accepts_asc_and_desc_only() {
        assert_eq!(
            parse_order(&params(None, None, Some("desc"))).ok(),
            Some(SortOrder::Descending)
        );
        assert_eq!(
            parse_order(&params(None, None, None)).ok(),
            Some(SortOrder::Ascending)
        );
        assert!(parse_order(&params(None, None, Some("up"))).is_err());
    }
}
