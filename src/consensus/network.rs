//! The Raft network: openraft's RPCs sent as tarpc calls over the QUIC
//! transport, each call on its own QUIC stream. Besides AppendEntries and
//! Vote there is Pre-Vote, and a snapshot goes as a series of chunk calls
//! that the follower's `SnapshotReceiver` puts back together.
//!
//! openraft bounds every call with its own timeout (one heartbeat interval
//! for AppendEntries) and drops the call when it expires. The deadline sent
//! to the peer is longer ([`RAFT_RPC_SERVER_DEADLINE`]), so a peer that
//! receives a request late still processes it.
//!
//! Each peer's cached QUIC connection is watched through the calls made on
//! it. A connection-level failure drops it from the transport's cache at
//! once. A peer that responds to no call for
//! [`REDIAL_AFTER_MISSED_HEARTBEATS`] heartbeat intervals, and at least
//! [`MIN_REDIAL_SILENCE`], has its connection dropped too, because a
//! restarted peer process never responds on the old process's connection
//! and QUIC notices that only after its idle timeout. The next call dials
//! again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dispotify_transport::Endpoint;
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use tarpc::client::RpcError;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    Member, RaftId, Snapshot, SnapshotChunk, SnapshotChunkError, SnapshotFile, TypeConfig, Vote,
};
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
/// heartbeat late now and then without a new handshake.
const REDIAL_AFTER_MISSED_HEARTBEATS: u32 = 3;

/// Shortest silence after which a peer's connection is dialed again,
/// whatever the heartbeat interval.
///
/// openraft gives up on a heartbeat after one heartbeat interval, so with
/// short heartbeats a healthy but loaded peer often looks silent. In a
/// loaded fault-suite run with 25 ms heartbeats, peers stayed silent for
/// 124 ms at the median and 298 ms at p90 before they responded again.
/// Redialing them every 75 ms cut every RPC in flight on the old
/// connection, added a handshake on a busy CPU, and led to elections.
/// A restarted peer waits up to this long for a new dial; with Pre-Vote it
/// cannot disturb the leader meanwhile.
const MIN_REDIAL_SILENCE: Duration = Duration::from_secs(1);

/// Bytes of snapshot data sent in one RPC when openraft names no chunk
/// size. Each chunk is one tarpc frame, which must stay under the
/// transport's frame limit.
const DEFAULT_SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

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
            redial_after: redial_after(heartbeat_interval),
            peers: Arc::new(Mutex::new(HashMap::new())),
        };
        Network {
            endpoint,
            discovery,
            links,
        }
    }
}

/// Returns the silence after which a peer is dialed again, for a Raft
/// heartbeat interval.
fn redial_after(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval * REDIAL_AFTER_MISSED_HEARTBEATS).max(MIN_REDIAL_SILENCE)
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

/// Reason a Raft RPC to a peer returned no response.
#[derive(Debug)]
enum CallError {
    /// The peer could not be dialed.
    Dial(DialError),
    /// The call was sent but failed in tarpc or on the connection.
    Rpc(RpcError),
}

impl From<CallError> for RPCError<TypeConfig> {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Dial(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Rpc(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl From<CallError> for StreamingError<TypeConfig> {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Dial(e) => StreamingError::Unreachable(Unreachable::new(&e)),
            CallError::Rpc(e) => StreamingError::Network(NetworkError::new(&e)),
        }
    }
}

/// Returns the tarpc context of a Raft RPC: the longer of openraft's
/// timeout and [`RAFT_RPC_SERVER_DEADLINE`], so the peer does not drop a
/// request that openraft gave up on.
fn raft_rpc_context(option: &RPCOption) -> tarpc::context::Context {
    crate::node::context_with_timeout(option.hard_ttl().max(RAFT_RPC_SERVER_DEADLINE))
}

impl Connection {
    async fn client(&self) -> Result<NodeRpcClient, DialError> {
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
            .map_err(|e| dial_error(e.to_string()))?;
        let transport = self
            .network
            .endpoint
            .rpc_transport(&self.member.name, addr)
            .await
            .map_err(|e| dial_error(e.to_string()))?;
        Ok(NodeRpcClient::new(tarpc::client::Config::default(), transport).spawn())
    }

    /// Makes one call with `send` and records on the peer's link whether
    /// the peer responded. A call that openraft drops on its timeout counts
    /// as unanswered.
    async fn call<T, F, Fut>(&self, option: &RPCOption, send: F) -> Result<T, CallError>
    where
        F: FnOnce(NodeRpcClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
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
                return Err(CallError::Dial(error));
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
        result.map_err(CallError::Rpc)
    }

    /// Makes one call of a Raft protocol RPC. A peer whose Raft has stopped
    /// counts as unreachable, so openraft backs off instead of retrying at
    /// once.
    async fn call_raft<T, F, Fut>(
        &self,
        option: &RPCOption,
        send: F,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        F: FnOnce(NodeRpcClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = Result<Result<T, RaftError<TypeConfig>>, RpcError>>,
    {
        self.call(option, send)
            .await?
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    /// Sends the snapshot in chunks of at most `chunk_bytes`, one RPC each,
    /// and returns the peer's response to the last one.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk_bytes = option
            .snapshot_chunk_size()
            .unwrap_or(DEFAULT_SNAPSHOT_CHUNK_BYTES)
            .clamp(1, DEFAULT_SNAPSHOT_CHUNK_BYTES);
        let Snapshot {
            meta,
            snapshot: SnapshotFile { mut file, .. },
        } = snapshot;
        let storage_error = |e: std::io::Error| StreamingError::Network(NetworkError::new(&e));
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(storage_error)?;

        let mut offset = 0u64;
        loop {
            let data = read_chunk(&mut file, chunk_bytes)
                .await
                .map_err(storage_error)?;
            let done = data.len() < chunk_bytes;
            let sent_bytes = data.len() as u64;
            let chunk = SnapshotChunk {
                vote,
                meta: meta.clone(),
                offset,
                data,
                done,
            };
            let answer = self
                .call(option, |client, context| async move {
                    client.raft_snapshot(context, chunk).await
                })
                .await?;
            match answer {
                Ok(Some(response)) => return Ok(response),
                Ok(None) if !done => offset += sent_bytes,
                Ok(None) => {
                    return Err(StreamingError::Network(NetworkError::from_string(
                        "peer sent no response to the last snapshot chunk",
                    )))
                }
                Err(error @ SnapshotChunkError::RaftStopped { .. }) => {
                    return Err(StreamingError::Unreachable(Unreachable::new(&error)))
                }
                Err(error) => return Err(StreamingError::Network(NetworkError::new(&error))),
            }
        }
    }
}

/// Reads up to `limit` bytes, fewer only at the end of the file.
async fn read_chunk(file: &mut tokio::fs::File, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(limit);
    (&mut *file)
        .take(limit as u64)
        .read_to_end(&mut data)
        .await?;
    Ok(data)
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call_raft(&option, |client, context| async move {
            client.raft_append(context, request).await
        })
        .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call_raft(&option, |client, context| async move {
            client.raft_vote(context, request).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call_raft(&option, |client, context| async move {
            client.raft_pre_vote(context, request).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tracing::debug!(
            peer = %self.member.name,
            raft_id = self.target,
            log_index = ?snapshot.meta.last_log_id.as_ref().map(|l| l.index),
            "sending snapshot"
        );
        tokio::select! {
            sent = self.send_snapshot(vote, snapshot, &option) => sent,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
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
    fn short_heartbeats_redial_after_min_silence() {
        assert_eq!(redial_after(Duration::from_millis(25)), MIN_REDIAL_SILENCE);
        assert_eq!(
            redial_after(Duration::from_millis(500)),
            Duration::from_millis(1500)
        );
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
