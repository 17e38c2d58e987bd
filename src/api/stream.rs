//! `GET` and `HEAD /music/stream/{file_id}`: HTTP Range semantics over a
//! blob served from the local replica when this node has one, otherwise
//! fetched chunk by verified chunk from a replica over QUIC.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::error::{internal, ApiError};
use super::{parse_file_id, AppState};
use crate::http_range::{if_range_matches, parse_range, RangeOutcome};
use crate::replication;

/// What part of a blob a request gets, after Range and If-Range.
#[derive(Debug, PartialEq, Eq)]
enum Slice {
    Whole,
    Part { start: u64, end_inclusive: u64 },
    Unsatisfiable,
}

fn choose_slice(headers: &HeaderMap, etag: &str, len: u64) -> Slice {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Slice::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if !if_range_matches(if_range, etag) {
            return Slice::Whole;
        }
    }
    match parse_range(range, len) {
        RangeOutcome::Full => Slice::Whole,
        RangeOutcome::Partial {
            start,
            end_inclusive,
        } => Slice::Part {
            start,
            end_inclusive,
        },
        RangeOutcome::Unsatisfiable => Slice::Unsatisfiable,
    }
}

pub async fn stream(
    State(state): State<AppState>,
    method: Method,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file_id = parse_file_id(file_id)?;
    let node = &state.node;
    let track = node
        .catalog
        .track(&file_id)
        .await
        .map_err(|e| internal("read track", e))?;
    let Some(track) = track else {
        return Err(ApiError::TrackNotFound { file_id });
    };
    let Some(manifest) = node
        .catalog
        .manifest(&file_id)
        .await
        .map_err(|e| internal("read manifest", e))?
    else {
        return Err(ApiError::TrackNotFound { file_id });
    };

    let len = manifest.size_bytes;
    let etag = format!("\"{}\"", track.sha256);
    let slice = choose_slice(&headers, &etag, len);

    let mut response = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    if let Ok(content_type) = HeaderValue::from_str(&track.content_type) {
        response = response.header(header::CONTENT_TYPE, content_type);
    }

    let (status, start, end_inclusive) = match slice {
        Slice::Unsatisfiable => {
            let response = response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .map_err(|e| internal("build response", e))?;
            return Ok(response);
        }
        Slice::Whole => (StatusCode::OK, 0, len.checked_sub(1)),
        Slice::Part {
            start,
            end_inclusive,
        } => {
            response = response.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end_inclusive}/{len}"),
            );
            (StatusCode::PARTIAL_CONTENT, start, Some(end_inclusive))
        }
    };
    let body_len = end_inclusive.map_or(0, |end| end - start + 1);
    response = response
        .status(status)
        .header(header::CONTENT_LENGTH, body_len);

    let body = match (method == Method::HEAD, end_inclusive) {
        (true, _) | (false, None) => Body::empty(),
        (false, Some(end_inclusive)) => {
            let chunks =
                replication::read_range(node.clone(), track, manifest, start, end_inclusive)
                    .await?;
            Body::from_stream(chunks)
        }
    };
    response
        .body(body)
        .map_err(|e| internal("build response", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn no_range_is_whole() {
        assert_eq!(choose_slice(&headers(&[]), "\"e\"", 10), Slice::Whole);
    }

    #[test]
    fn if_range_mismatch_is_whole() {
        let h = headers(&[("range", "bytes=0-1"), ("if-range", "\"other\"")]);
        assert_eq!(choose_slice(&h, "\"e\"", 10), Slice::Whole);
    }

    #[test]
    fn if_range_match_keeps_range() {
        let h = headers(&[("range", "bytes=0-1"), ("if-range", "\"e\"")]);
        assert_eq!(
            choose_slice(&h, "\"e\"", 10),
            Slice::Part {
                start: 0,
                end_inclusive: 1
            }
        );
    }
}
