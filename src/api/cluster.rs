//! Cluster status and health endpoints.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use openraft::async_runtime::WatchReceiver;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::consensus;
use crate::node;
use crate::placement::{Ring, DEFAULT_VNODES_PER_NODE};
use crate::replication::{RepairStatus, ScrubProgress};

#[derive(Debug, Serialize)]
pub struct MemberStatus {
    pub id: String,
    pub quic_addr: String,
    pub http_addr: String,
    pub voter: bool,
    /// `up`, `down` or `unknown` (not checked yet), from this node's health checks.
    pub health: &'static str,
    pub rtt_ms: Option<f64>,
    /// The member's scrub progress, from its last health-check reply (this
    /// node's own for itself).
    pub scrub: Option<ScrubProgress>,
    /// True while the member is being decommissioned.
    pub draining: bool,
}

/// One member's part of the placement ring.
#[derive(Debug, Serialize)]
pub struct RingShare {
    pub node_id: String,
    /// Fraction of the ring, from 0 to 1, whose files have this node as
    /// their first replica.
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub node_id: String,
    pub leader_id: Option<String>,
    pub term: u64,
    pub state: String,
    pub last_applied_index: Option<u64>,
    pub ready: bool,
    pub replication_factor: usize,
    pub members: Vec<MemberStatus>,
    /// Every member's share of the ring, in node id order.
    pub ring: Vec<RingShare>,
    /// The leader's repair scheduler: queue, active copies and totals. This
    /// node's own when it leads, else the leader's last health-check reply.
    pub repair: Option<RepairStatus>,
}

pub async fn status(State(state): State<AppState>) -> Json<ClusterStatus> {
    let node = &state.node;
    // Listed without draining marks when the catalog cannot be read: the
    // status page stays up for the operator who needs it most then.
    let draining: std::collections::HashSet<String> = match node.catalog.draining_nodes().await {
        Ok(nodes) => nodes.into_iter().map(|(name, _)| name).collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot read draining nodes for the status");
            Default::default()
        }
    };
    let metrics = node.raft.metrics().borrow_watched().clone();
    let members = consensus::members_of(&node.raft);
    let voters: std::collections::BTreeSet<u64> =
        metrics.membership_config.membership().voter_ids().collect();
    let leader_id = metrics
        .current_leader
        .and_then(|id| members.get(&id).map(|m| m.name.clone()));
    let mut member_status: Vec<MemberStatus> = members
        .iter()
        .map(|(raft_id, member)| {
            let health = node
                .discovery
                .health(&member.name, member.name == node.config.id);
            MemberStatus {
                id: member.name.clone(),
                quic_addr: member.quic_addr.clone(),
                http_addr: member.http_addr.clone(),
                voter: voters.contains(raft_id),
                health: health.label(),
                rtt_ms: health.rtt().map(|d| d.as_secs_f64() * 1000.0),
                draining: draining.contains(&member.name),
                scrub: if member.name == node.config.id {
                    Some(node.upkeep.scrub())
                } else {
                    node.upkeep.peer(&member.name).map(|report| report.scrub)
                },
            }
        })
        .collect();
    member_status.sort_by(|a, b| a.id.cmp(&b.id));
    let ring = Ring::new(
        members.values().map(|m| m.name.clone()),
        DEFAULT_VNODES_PER_NODE,
    );
    let ring_shares = ring
        .nodes()
        .iter()
        .map(|node_id| RingShare {
            node_id: node_id.clone(),
            share: ring.share(node_id),
        })
        .collect();
    let repair = if node::is_leader(node) {
        Some(node.upkeep.repair_with_progress(&node.config.id))
    } else {
        leader_id
            .as_deref()
            .and_then(|leader| node.upkeep.peer(leader))
            .and_then(|report| report.repair)
    };
    Json(ClusterStatus {
        node_id: node.config.id.clone(),
        leader_id,
        term: metrics.current_term,
        state: format!("{:?}", metrics.state),
        last_applied_index: metrics.last_applied.map(|l| l.index),
        ready: node::is_ready(node),
        replication_factor: node.config.replication_factor,
        members: member_status,
        ring: ring_shares,
        repair,
    })
}

#[derive(Debug, Serialize)]
pub struct Health {
    status: &'static str,
    node_id: String,
}

/// Liveness: the process is up and serving HTTP.
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        node_id: state.node.config.id.clone(),
    })
}

/// Readiness: joined the cluster, a leader is known and the state machine
/// has caught up with the log.
pub async fn ready(State(state): State<AppState>) -> Result<(StatusCode, Json<Health>), ApiError> {
    if node::is_ready(&state.node) {
        Ok((
            StatusCode::OK,
            Json(Health {
                status: "ready",
                node_id: state.node.config.id.clone(),
            }),
        ))
    } else {
        Err(ApiError::NotReady)
    }
}

/// Prometheus metrics in the text exposition format.
pub async fn metrics(
    State(state): State<AppState>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let text = state
        .node
        .metrics
        .render()
        .map_err(|e| super::error::internal("render metrics", e))?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text))
}
