//! Membership changes made by operators: `/cluster/nodes/{id}/decommission`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::error::{internal, ApiError};
use super::AppState;
use crate::consensus;
use crate::model::Command;
use crate::node;

#[derive(Debug, Serialize)]
pub struct Decommission {
    node_id: String,
    draining: bool,
    /// Tracks that still list the node; it leaves the membership at 0.
    tracks_remaining: u64,
}

/// `POST /cluster/nodes/{id}/decommission`: starts draining a member. Its
/// copies move to other nodes under the repair bandwidth cap, then the
/// leader removes it from the membership. 202 while it drains.
pub async fn decommission(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
) -> Result<(StatusCode, Json<Decommission>), ApiError> {
    let node = &state.node;
    let members = consensus::members_of(&node.raft);
    if !members.values().any(|m| m.name == node_id) {
        return Err(ApiError::MemberNotFound { node_id });
    }
    let placeable = members.len().saturating_sub(1);
    if placeable == 0 {
        return Err(ApiError::InvalidField {
            name: "node id",
            reason: format!("{node_id} is the only member; a cluster needs at least one"),
        });
    }
    let command = Command::SetDraining {
        node_id: node_id.clone(),
        draining: true,
    };
    let receipt = node::write(node, command).await?;
    node::wait_applied(node, receipt.log_index).await;
    tracing::info!(peer = %node_id, "decommission requested");
    let tracks_remaining = node
        .catalog
        .tracks_listing(&node_id)
        .await
        .map_err(|e| internal("count tracks of a node", e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Decommission {
            node_id,
            draining: true,
            tracks_remaining,
        }),
    ))
}
