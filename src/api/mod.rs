//! The public HTTP/JSON API: music upload, streaming and catalog reads,
//! cluster status, health checks, and the web app at `/`.

mod catalog;
mod cluster;
pub mod error;
mod library;
mod locks;
mod members;
mod stream;
mod upload;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{any, get, post};
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use error::ApiError;

use crate::model::FileId;
use crate::node::Node;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
}

/// Builds the router with every route of the public API.
pub fn router(node: Arc<Node>) -> Router {
    let request_timeout = node.config.request_timeout;
    let web = web_app(&node);
    let state = AppState { node };

    let health = Router::new()
        .route("/health", get(cluster::health))
        .route("/ready", get(cluster::ready));

    Router::new()
        .route(
            "/music/upload",
            post(upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/music/stream/{file_id}",
            get(stream::stream).head(stream::stream),
        )
        .route("/music/search", get(catalog::search))
        .route("/music/tracks", get(catalog::list))
        .route("/music/tracks/{file_id}", get(catalog::track))
        .route("/music/tracks/{file_id}/cover", get(catalog::cover))
        .route("/music/albums", get(library::albums))
        .route(
            "/music/albums/{album_id}/tracks",
            get(library::album_tracks),
        )
        .route("/music/artists", get(library::artists))
        .route(
            "/music/artists/{artist_id}/tracks",
            get(library::artist_tracks),
        )
        .route("/cluster/status", get(cluster::status))
        .route("/cluster/locks", get(locks::list).post(locks::acquire))
        .route(
            "/cluster/locks/{name}",
            axum::routing::delete(locks::release),
        )
        .route(
            "/cluster/nodes/{node_id}/decommission",
            post(members::decommission),
        )
        .route("/metrics", get(cluster::metrics))
        .merge(health.clone())
        .nest("/internal", health)
        .route("/music/{*rest}", any(route_not_found))
        .route("/cluster/{*rest}", any(route_not_found))
        .route("/internal/{*rest}", any(route_not_found))
        .fallback_service(web)
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        // Handlers log the failures worth a warning or an error with their
        // context (a 503 no_quorum, a failed copy). The trace layer's own
        // line for every 5xx stays at debug, because a starting node that
        // returns 503 from /ready is not an error.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
}

/// Serves the built web app, or the placeholder page shipped in the
/// repository when no build exists.
fn web_app(node: &Node) -> ServeDir<ServeFile> {
    let dir = node.config.web_dir.clone().unwrap_or_else(default_web_dir);
    let index = dir.join("index.html");
    ServeDir::new(dir).fallback(ServeFile::new(index))
}

fn default_web_dir() -> std::path::PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("frontend");
    let built = repo.join("dist");
    if built.join("index.html").exists() {
        built
    } else {
        repo.join("dist-placeholder")
    }
}

/// Answers a path under an API prefix that matches no route with a JSON
/// 404, where the web app fallback would return its HTML page.
async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// Checks a file id taken from a URL before it reaches the catalog or a path.
fn parse_file_id(value: String) -> Result<FileId, ApiError> {
    match crate::blob::validate_file_id(&value) {
        Ok(()) => Ok(value),
        Err(_) => Err(ApiError::InvalidFileId { value }),
    }
}
