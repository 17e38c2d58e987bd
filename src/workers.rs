//! Long-running background workers of a node: joining the cluster, health
//! checks of every member, and publishing leadership and membership changes
//! on the in-process event channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;

use crate::consensus;
use crate::node::{self, ClusterEvent, Node};
use crate::replication;

/// Maximum wait between two rounds of join attempts.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Timeout of one health-check ping.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts the workers that run for the node's whole life.
pub fn spawn_all(node: &Arc<Node>) {
    let node_id = node.config.id.as_str();
    tokio::spawn(publish_events(node.clone()).instrument(tracing::info_span!("events", node_id)));
    tokio::spawn(
        health_checks(node.clone()).instrument(tracing::info_span!("health_checks", node_id)),
    );
    tokio::spawn(
        replication::scrub_worker(node.clone()).instrument(tracing::info_span!("scrub", node_id)),
    );
    tokio::spawn(
        replication::repair_worker(node.clone()).instrument(tracing::info_span!("repair", node_id)),
    );
    tokio::spawn(
        replication::reconcile_worker(node.clone())
            .instrument(tracing::info_span!("reconcile", node_id)),
    );
}

/// Dials the seeds until one of them makes this node a voter. A node that
/// restarts as a learner, because its promotion was interrupted, joins again.
pub async fn join_cluster(node: Arc<Node>) {
    let mut delay = Duration::from_millis(200);
    let mut round: u32 = 0;
    loop {
        if node.shutdown.is_cancelled() || consensus::is_voter(&node.raft, node.raft_id) {
            return;
        }
        round += 1;
        for seed in &node.config.seeds {
            match join_through(&node, seed).await {
                Ok(via) => {
                    tracing::info!(node_id = %node.config.id, seed = %seed, via = %via, "joined cluster");
                    return;
                }
                Err(error) if round == 1 || round % 10 == 0 => {
                    tracing::warn!(node_id = %node.config.id, seed = %seed, round, %error, "join attempt failed, retrying");
                }
                Err(error) => tracing::debug!(seed = %seed, round, %error, "join attempt failed"),
            }
        }
        tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(JOIN_RETRY_MAX);
    }
}

async fn join_through(node: &Arc<Node>, seed: &str) -> Result<String, String> {
    let addrs = node
        .discovery
        .resolve_all(seed)
        .await
        .map_err(|e| e.to_string())?;
    let mut last_error = String::from("the seed resolves only to this node");
    for addr in addrs {
        if addr == node.config.quic_addr {
            continue;
        }
        let (peer, transport) = match node.endpoint.rpc_transport_any(addr).await {
            Ok(dialed) => dialed,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        if peer.to_string() == node.config.id {
            continue;
        }
        let client =
            crate::rpc::NodeRpcClient::new(tarpc::client::Config::default(), transport).spawn();
        if !node.admitted.load(std::sync::atomic::Ordering::Acquire) {
            let admitted = client
                .admit(
                    node::context_with_timeout(Duration::from_secs(15)),
                    node.me.clone(),
                    true,
                )
                .await;
            match admitted {
                Ok(Ok(())) => node
                    .admitted
                    .store(true, std::sync::atomic::Ordering::Release),
                Ok(Err(crate::rpc::RemoteError::Refused { detail })) => {
                    tracing::error!(node_id = %node.config.id, %detail, "the cluster rejected this node");
                    *node.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(detail.clone());
                    node.shutdown.cancel();
                    return Err(detail);
                }
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    continue;
                }
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            }
        }
        let joined = client
            .join(
                node::context_with_timeout(Duration::from_secs(90)),
                node.me.clone(),
            )
            .await;
        match joined {
            Ok(Ok(())) => return Ok(peer.to_string()),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(last_error)
}

/// Pings every other member each health-check interval and records the
/// result; logs each change between up and down once.
async fn health_checks(node: Arc<Node>) {
    let mut events = node.events.subscribe();
    let mut interval = tokio::time::interval(node.config.health_check_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => return,
            _ = interval.tick() => {}
            event = events.recv() => match event {
                Ok(ClusterEvent::MembershipChanged { .. }) => {}
                Ok(ClusterEvent::LeaderChanged { .. }) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        }
        let members = consensus::members_of(&node.raft);
        let checks = members
            .values()
            .filter(|m| m.name != node.config.id)
            .map(|member| {
                let node = node.clone();
                let member = member.clone();
                async move { check_one(&node, &member).await }
            });
        futures::future::join_all(checks).await;
    }
}

async fn check_one(node: &Node, member: &consensus::Member) {
    let started = Instant::now();
    let pinged = async {
        let client = node::rpc_client(node, member)
            .await
            .map_err(|e| e.to_string())?;
        client
            .ping(node::context_with_timeout(PING_TIMEOUT))
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(PING_TIMEOUT, pinged).await {
        Ok(Ok(reply)) => {
            let rtt = started.elapsed();
            node.upkeep
                .record_peer(&member.name, reply.scrub, reply.repair, reply.copies_out);
            node.metrics.record_peer(&member.name, Some(rtt));
            let previous = node.discovery.record_up(&member.name, rtt);
            if matches!(previous, crate::discovery::PeerHealth::Down { .. }) {
                tracing::info!(peer = %member.name, "peer is reachable again");
            }
        }
        Ok(Err(error)) => mark_down(node, member, &error),
        Err(_) => mark_down(node, member, "ping timed out"),
    }
}

fn mark_down(node: &Node, member: &consensus::Member, error: &str) {
    node.metrics.record_peer(&member.name, None);
    if let crate::discovery::PeerHealth::Down {
        consecutive_failures: 1,
    } = node.discovery.record_down(&member.name)
    {
        tracing::warn!(peer = %member.name, quic_addr = %member.quic_addr, error, "peer is unreachable");
    }
}

/// Watches Raft metrics and publishes leadership and membership changes.
async fn publish_events(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    let mut last_leader = None;
    let mut last_term = 0;
    let mut last_members: Vec<consensus::Member> = Vec::new();
    loop {
        let current = metrics.borrow_and_update().clone();
        if current.current_leader != last_leader || current.current_term != last_term {
            if current.current_leader != last_leader {
                node.metrics.leader_changes.inc();
            }
            last_leader = current.current_leader;
            last_term = current.current_term;
            node.metrics.raft_term.set(last_term as i64);
            let leader = node::leader(&node).map(|(_, m)| m.name);
            tracing::info!(node_id = %node.config.id, leader = ?leader, term = last_term, "leader changed");
            let _ = node.events.send(ClusterEvent::LeaderChanged {
                leader,
                term: last_term,
            });
        }
        let members: Vec<consensus::Member> =
            consensus::members_of(&node.raft).into_values().collect();
        if members != last_members {
            last_members = members.clone();
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            tracing::info!(node_id = %node.config.id, members = ?names, "membership changed");
            let _ = node
                .events
                .send(ClusterEvent::MembershipChanged { members });
        }
        tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}
