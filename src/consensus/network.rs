//! The Raft network: openraft's RPCs sent as tarpc calls over the QUIC
//! transport, each call on its own QUIC stream.
//!
//! openraft bounds every call with its own timeout (one heartbeat interval
//! for AppendEntries) and drops the call when it expires. The deadline sent
//! to the peer is longer ([`RAFT_RPC_SERVER_DEADLINE`]), so a peer that
//! receives a request late still processes it.
//!
//! Each peer's cached QUIC connection is watched through the calls made on
//! it. A connection-level failure drops it from the transport's cache at
//! once. A peer that responds to no call for
//! [`REDIAL_AFTER_MISSED_HEARTBEATS`] heartbeat intervals has its connection
//! dropped too, because a restarted peer process never responds on the old
//! process's connection and QUIC notices that only after its idle timeout.
//! The next call dials again.

// openraft's `RPCError` is a large enum and is what `RaftNetwork` must
// return; boxing it here would only move the copy into openraft.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dispotify_transport::Endpoint;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tarpc::client::RpcError;

use super::{Member, RaftId, TypeConfig};
use crate::discovery::Discovery;
use crate::rpc::NodeRpcClient;

/// Deadline that a Raft RPC carries to the peer, which drops the request
/// once it passes.
///
/// openraft's own timeout on AppendEntries is one heartbeat interval, but a
/// heartbeat that a loaded follower handles later than that still proves
/// the leader is alive and must reset the follower's election timer.
/// Dropping it made followers start elections. Two seconds covers a
/// follower that a busy CPU or a slow fsync held up; by then the leader has
/// sent newer heartbeats. The sender still gives up after openraft's
/// timeout.
const RAFT_RPC_SERVER_DEADLINE: Duration = Duration::from_secs(2);

/// Heartbeat intervals during which a peer may respond to no Raft RPC
/// before its cached QUIC connection is dropped and dialed again, at most
/// once per that period. Three intervals let a loaded peer respond to a
/// heartbeat late now and then without a new handshake. With the default
/// timings, a restarted peer gets a fresh dial at most 300 ms after it is
/// back, half the shortest election timeout.
const REDIAL_AFTER_MISSED_HEARTBEATS: u32 = 3;

/// Creates one [`Connection`] per Raft peer.
#[derive(Clone)]
pub struct Network {
    endpoint: Endpoint,
    discovery: Arc<Discovery>,
    links: Links,
}

impl Network {
    /// Creates the network of one node. `heartbeat_interval` is the Raft
    /// heartbeat interval, which sets how soon a silent peer is redialed.
    pub fn new(
        endpoint: Endpoint,
        discovery: Arc<Discovery>,
        heartbeat_interval: Duration,
    ) -> Network {
        let links = Links {
            endpoint: endpoint.clone(),
            redial_after: heartbeat_interval * REDIAL_AFTER_MISSED_HEARTBEATS,
            peers: Arc::new(Mutex::new(HashMap::new())),
        };
        Network {
            endpoint,
            discovery,
            links,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftId, member: &Member) -> Connection {
        Connection {
            network: self.clone(),
            target,
            member: member.clone(),
        }
    }
}

/// The Raft view of one peer. The QUIC connection itself is cached by the
/// transport and shared with every other user of that peer.
pub struct Connection {
    network: Network,
    target: RaftId,
    member: Member,
}

/// A failure to reach the peer at all, as openraft's `Unreachable`.
#[derive(Debug, thiserror::Error)]
#[error("peer {peer} at {addr}: {detail}")]
struct DialError {
    peer: String,
    addr: String,
    detail: String,
}

/// Returns the tarpc context of a Raft RPC: the longer of openraft's
/// timeout and [`RAFT_RPC_SERVER_DEADLINE`], so the peer does not drop a
/// request that openraft gave up on.
fn raft_rpc_context(option: &RPCOption) -> tarpc::context::Context {
    crate::node::context_with_timeout(option.hard_ttl().max(RAFT_RPC_SERVER_DEADLINE))
}

impl Connection {
    async fn client<E: std::error::Error>(
        &self,
    ) -> Result<NodeRpcClient, RPCError<RaftId, Member, E>> {
        let dial_error = |detail: String| DialError {
            peer: self.member.name.clone(),
            addr: self.member.quic_addr.clone(),
            detail,
        };
        let addr = self
            .network
            .discovery
            .resolve(&self.member.quic_addr)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&dial_error(e.to_string()))))?;
        let transport = self
            .network
            .endpoint
            .rpc_transport(&self.member.name, addr)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&dial_error(e.to_string()))))?;
        Ok(NodeRpcClient::new(tarpc::client::Config::default(), transport).spawn())
    }

    /// Makes one call with `send` and records on the peer's link whether
    /// the peer responded. A call that openraft drops on its timeout counts
    /// as unanswered.
    async fn call<T, E, F, Fut>(
        &self,
        option: &RPCOption,
        send: F,
    ) -> Result<T, RPCError<RaftId, Member, RaftError<RaftId, E>>>
    where
        E: std::error::Error,
        F: FnOnce(NodeRpcClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = Result<Result<T, RaftError<RaftId, E>>, RpcError>>,
    {
        let mut pending = PendingCall {
            links: &self.network.links,
            peer: &self.member.name,
            outcome: CallOutcome::Unanswered,
        };
        let client = match self.client().await {
            Ok(client) => client,
            Err(error) => {
                pending.outcome = CallOutcome::ConnectionFailed;
                return Err(error);
            }
        };
        let result = send(client, raft_rpc_context(option)).await;
        pending.outcome = match &result {
            Ok(_) | Err(RpcError::Server(_)) => CallOutcome::Answered,
            Err(RpcError::DeadlineExceeded) => CallOutcome::Unanswered,
            Err(RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_)) => {
                CallOutcome::ConnectionFailed
            }
        };
        self.map_result(result)
    }

    fn map_result<T, E: std::error::Error>(
        &self,
        result: Result<Result<T, RaftError<RaftId, E>>, RpcError>,
    ) -> Result<T, RPCError<RaftId, Member, RaftError<RaftId, E>>> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(raft_error)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.member.clone(),
                raft_error,
            ))),
            Err(rpc_error) => Err(RPCError::Network(NetworkError::new(&rpc_error))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        self.call(&option, |client, context| async move {
            client.raft_append(context, request).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, Member, RaftError<RaftId, InstallSnapshotError>>,
    > {
        self.call(&option, |client, context| async move {
            client.raft_snapshot(context, request).await
        })
        .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        self.call(&option, |client, context| async move {
            client.raft_vote(context, request).await
        })
        .await
    }
}

/// The outcome of a Raft RPC to a peer, as far as the connection is
/// concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallOutcome {
    /// The peer sent a response, an error response included.
    Answered,
    /// No response before a deadline, or openraft dropped the call.
    Unanswered,
    /// The dial, the stream or the connection failed.
    ConnectionFailed,
}

/// Records the outcome of a call when dropped, so a call that openraft
/// cancels on its timeout is recorded as unanswered.
struct PendingCall<'a> {
    links: &'a Links,
    peer: &'a str,
    outcome: CallOutcome,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        self.links.record(self.peer, self.outcome, Instant::now());
    }
}

/// The recent Raft RPC outcomes of each peer, and the endpoint whose
/// cached connections they invalidate.
#[derive(Clone)]
struct Links {
    endpoint: Endpoint,
    redial_after: Duration,
    peers: Arc<Mutex<HashMap<String, LinkState>>>,
}

impl Links {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, LinkState>> {
        // Each critical section updates one entry with plain assignments, so
        // a lock poisoned by a panic leaves a usable map.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a call's outcome and drops the peer's cached connection
    /// when the outcome calls for a new dial.
    fn record(&self, peer: &str, outcome: CallOutcome, now: Instant) {
        let change = {
            let mut peers = self.lock();
            let link = peers.entry(peer.to_owned()).or_default();
            link.record(outcome, now, self.redial_after)
        };
        match change {
            None
            | Some(LinkChange::Answering {
                redialed: false, ..
            }) => {}
            Some(LinkChange::Answering {
                silent,
                redialed: true,
            }) => {
                tracing::info!(
                    peer,
                    silent_ms = silent.as_millis() as u64,
                    "peer responds to raft rpcs again"
                );
            }
            Some(LinkChange::Redial { first }) => {
                if first {
                    tracing::info!(
                        peer,
                        ?outcome,
                        "peer sent no raft rpc response; dialing it again"
                    );
                } else {
                    tracing::debug!(peer, ?outcome, "dialing silent peer again");
                }
                self.endpoint.invalidate(peer);
            }
        }
    }
}

/// A change in a peer's responses that the network acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkChange {
    /// A response after `silent` without one. `redialed` is true when the
    /// connection was dropped meanwhile.
    Answering { silent: Duration, redialed: bool },
    /// A new dial, for which the cached connection is dropped. `first` is
    /// true the first time since the peer last responded.
    Redial { first: bool },
}

/// The recent history of Raft RPCs to one peer.
#[derive(Clone, Debug, Default)]
struct LinkState {
    /// When the first call since the last response failed or went
    /// unanswered.
    silent_since: Option<Instant>,
    /// When the connection was last dropped for a new dial.
    redialed_at: Option<Instant>,
}

impl LinkState {
    /// Applies one call's outcome at `now`. Asks for a new dial at once
    /// after a connection failure, and after `redial_after` of silence
    /// otherwise, at most once per `redial_after`.
    fn record(
        &mut self,
        outcome: CallOutcome,
        now: Instant,
        redial_after: Duration,
    ) -> Option<LinkChange> {
        if outcome == CallOutcome::Answered {
            let since = self.silent_since.take()?;
            let redialed = self.redialed_at.take().is_some();
            return Some(LinkChange::Answering {
                silent: now.duration_since(since),
                redialed,
            });
        }

        let since = *self.silent_since.get_or_insert(now);
        let silent_long_enough =
            outcome == CallOutcome::ConnectionFailed || now.duration_since(since) >= redial_after;
        let redialed_recently = self
            .redialed_at
            .is_some_and(|at| now.duration_since(at) < redial_after);
        if !silent_long_enough || redialed_recently {
            return None;
        }
        let first = self.redialed_at.replace(now).is_none();
        Some(LinkChange::Redial { first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIAL_AFTER: Duration = Duration::from_millis(300);

    #[test]
    fn deadline_outlasts_heartbeat_timeout() {
        let sent_at = Instant::now();
        let context = raft_rpc_context(&RPCOption::new(Duration::from_millis(100)));
        assert!(context.deadline >= sent_at + RAFT_RPC_SERVER_DEADLINE);
    }

    #[test]
    fn deadline_keeps_longer_openraft_timeout() {
        let sent_at = Instant::now();
        let snapshot_timeout = RAFT_RPC_SERVER_DEADLINE * 3;
        let context = raft_rpc_context(&RPCOption::new(snapshot_timeout));
        assert!(context.deadline >= sent_at + snapshot_timeout);
    }

    #[test]
    fn link_redials_after_silence() {
        let start = Instant::now();
        let mut link = LinkState::default();
        let at = |ms| start + Duration::from_millis(ms);

        assert_eq!(
            link.record(CallOutcome::Unanswered, at(0), REDIAL_AFTER),
            None
        );
        assert_eq!(
            link.record(CallOutcome::Unanswered, at(150), REDIAL_AFTER),
            None
        );
        assert_eq!(
            link.record(CallOutcome::Unanswered, at(300), REDIAL_AFTER),
            Some(LinkChange::Redial { first: true })
        );
        assert_eq!(
            link.record(CallOutcome::Unanswered, at(450), REDIAL_AFTER),
            None
        );
        assert_eq!(
            link.record(CallOutcome::Unanswered, at(600), REDIAL_AFTER),
            Some(LinkChange::Redial { first: false })
        );
    }

    #[test]
    fn link_answer_resets_silence() {
        let start = Instant::now();
        let mut link = LinkState::default();
        let at = |ms| start + Duration::from_millis(ms);

        assert_eq!(
            link.record(CallOutcome::Unanswered, at(0), REDIAL_AFTER),
            None
        );
        assert_eq!(
            link.record(CallOutcome::Answered, at(200), REDIAL_AFTER),
            Some(LinkChange::Answering {
                silent: Duration::from_millis(200),
                redialed: false
            })
        );
        assert_eq!(
            link.record(CallOutcome::Unanswered, at(400), REDIAL_AFTER),
            None
        );
        assert_eq!(
            link.record(CallOutcome::Unanswered, at(650), REDIAL_AFTER),
            None
        );
        assert_eq!(
            link.record(CallOutcome::Unanswered, at(700), REDIAL_AFTER),
            Some(LinkChange::Redial { first: true })
        );
    }

    #[test]
    fn link_redials_at_once_on_connection_failure() {
        let start = Instant::now();
        let mut link = LinkState::default();

        assert_eq!(
            link.record(CallOutcome::ConnectionFailed, start, REDIAL_AFTER),
            Some(LinkChange::Redial { first: true })
        );
        assert_eq!(
            link.record(
                CallOutcome::ConnectionFailed,
                start + Duration::from_millis(10),
                REDIAL_AFTER
            ),
            None
        );
    }
}
