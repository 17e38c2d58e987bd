//! The receiving side of the QUIC transport: control RPCs served with
//! tarpc, and bulk streams handed to the replication manager.

use std::sync::Arc;

use dispotify_transport::PeerId;
use futures::future::BoxFuture;

use openraft::async_runtime::WatchReceiver;
use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use tarpc::context::Context;

use crate::consensus::{self, Member, Request, SnapshotChunk, SnapshotChunkError, TypeConfig};
use crate::model::{FileId, Manifest, NodeId};
use crate::node::{self, Node};
use crate::replication;
use crate::rpc::{NodeRpc, NodeRpcClient, PingReply, RemoteError, WriteReceipt};

/// Dispatches incoming QUIC streams by kind.
pub struct Incoming {
    node: Arc<Node>,
}

impl Incoming {
    pub fn new(node: Arc<Node>) -> Incoming {
        Incoming { node }
    }
}

impl dispotify_transport::IncomingHandler for Incoming {
    fn rpc(
        &self,
        peer: PeerId,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> BoxFuture<'_, ()> {
        let server = RpcServer {
            node: self.node.clone(),
            peer: peer.to_string(),
        };
        if !self
            .node
            .admitted
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tracing::debug!(peer = %peer, "rejected rpc stream before admission");
            return Box::pin(async {});
        }
        Box::pin(async move {
            dispotify_transport::serve_tarpc_stream(
                send,
                recv,
                crate::limits::MAX_RPC_FRAME_BYTES,
                server.serve(),
            )
            .await;
        })
    }

    fn bulk(
        &self,
        peer: PeerId,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> BoxFuture<'_, ()> {
        let node = self.node.clone();
        Box::pin(async move { replication::serve_bulk(node, peer.to_string(), send, recv).await })
    }
}

/// Serves one control stream; `peer` is the node id proven by the peer's
/// certificate.
#[derive(Clone)]
struct RpcServer {
    node: Arc<Node>,
    peer: NodeId,
}

impl RpcServer {
    fn failed(&self, detail: impl ToString) -> RemoteError {
        RemoteError::Failed {
            node_id: self.node.config.id.clone(),
            detail: detail.to_string(),
        }
    }

    /// Checks that a node joins under the id its certificate proves. A
    /// member may forward another node's request, having checked it itself.
    fn check_identity(&self, member: &Member) -> Result<(), RemoteError> {
        if member.name == self.peer || self.peer_is_member() {
            return Ok(());
        }
        Err(RemoteError::Rejected {
            detail: format!(
                "node {} presented a certificate for {}",
                member.name, self.peer
            ),
        })
    }

    /// Returns `None` on the leader, else a client of the leader to forward
    /// the request to.
    async fn leader_client(&self) -> Result<Option<NodeRpcClient>, RemoteError> {
        if node::is_leader(&self.node) {
            return Ok(None);
        }
        let Some((_, leader)) = node::leader(&self.node) else {
            return Err(RemoteError::NotLeader { leader: None });
        };
        node::rpc_client(&self.node, &leader).await.map(Some)
    }

    fn peer_is_member(&self) -> bool {
        consensus::members_of(&self.node.raft).contains_key(&consensus::raft_id_of(&self.peer))
    }
}

impl NodeRpc for RpcServer {
    async fn ping(self, _: Context) -> PingReply {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
        let leader = node::leader(&self.node).map(|(_, member)| member.name);
        PingReply {
            node_id: self.node.config.id.clone(),
            term: metrics.current_term,
            leader,
            ready: node::is_ready(&self.node),
            scrub: self.node.upkeep.scrub(),
            repair: node::is_leader(&self.node)
                .then(|| self.node.upkeep.repair_with_progress(&self.node.config.id)),
            copies_out: self.node.upkeep.copies_out(),
            quorum_ack_age_ms: (metrics.state == openraft::ServerState::Leader)
                .then(|| consensus::quorum_ack_age(&metrics))
                .flatten()
                .map(|age| age.as_millis() as u64),
        }
    }

    /// Hands the request to Raft in a task of its own, so that it is
    /// handled and the leader contact recorded even when the caller gives
    /// up first and tarpc drops this call.
    async fn raft_append(
        self,
        _: Context,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> {
        let node = self.node.clone();
        let handled = tokio::spawn(async move {
            let response = node.raft.append_entries(request).await;
            // Every response but HigherVote accepts the sender as the leader
            // of the current term.
            let from_leader = match &response {
                Ok(AppendEntriesResponse::HigherVote(_)) | Err(_) => false,
                Ok(_) => true,
            };
            if from_leader {
                node.leader_contact.record();
            }
            response
        });
        match handled.await {
            Ok(response) => response,
            Err(join_error) if join_error.is_panic() => {
                Err(RaftError::Fatal(openraft::error::Fatal::Panicked))
            }
            Err(_) => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
        }
    }

    async fn raft_vote(
        self,
        _: Context,
        request: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> {
        self.node.raft.vote(request).await
    }

    async fn raft_pre_vote(
        self,
        _: Context,
        request: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> {
        self.node.raft.pre_vote(request).await
    }

    /// Stores the chunk in a task of its own, so that a chunk being written
    /// or a snapshot being installed is not cut off halfway when the
    /// caller gives up and tarpc drops this call.
    async fn raft_snapshot(
        self,
        _: Context,
        chunk: SnapshotChunk,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, SnapshotChunkError> {
        let node = self.node.clone();
        let handled =
            tokio::spawn(async move { node.snapshot_receiver.receive(&node.raft, chunk).await });
        match handled.await {
            Ok(result) => result,
            Err(join_error) => Err(SnapshotChunkError::RaftStopped {
                detail: join_error.to_string(),
            }),
        }
    }

    async fn join(self, _: Context, member: Member) -> Result<(), RemoteError> {
        self.check_identity(&member)?;
        if let Some(client) = self.leader_client().await? {
            return client
                .join(node::context_with_timeout(JOIN_TIMEOUT), member)
                .await
                .map_err(|e| self.failed(e))?;
        }
        tracing::info!(peer = %member.name, quic_addr = %member.quic_addr, "join requested");
        let _one_change_at_a_time = self.node.membership_changes.lock().await;
        match tokio::time::timeout(
            JOIN_TIMEOUT,
            consensus::add_voter(&self.node.raft, member.clone()),
        )
        .await
        {
            Ok(Ok(())) => {
                tracing::info!(peer = %member.name, "node joined as voter");
                Ok(())
            }
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed(format!("join did not complete within {JOIN_TIMEOUT:?}"))),
        }
    }

    async fn admit(self, _: Context, member: Member, fresh: bool) -> Result<(), RemoteError> {
        self.check_identity(&member)?;
        if let Some(client) = self.leader_client().await? {
            return client
                .admit(node::context_with_timeout(ADMIT_TIMEOUT), member, fresh)
                .await
                .map_err(|e| self.failed(e))?;
        }
        let known = consensus::members_of(&self.node.raft)
            .contains_key(&consensus::raft_id_of(&member.name));
        if fresh && known {
            tracing::warn!(peer = %member.name, "rejected a member that lost its data directory");
            return Err(RemoteError::Refused {
                detail: format!(
                    "node id {} is already a cluster member, but this node started with an empty \
                     data directory, so the member's data is lost; start it with a new --id and \
                     decommission {} with POST /cluster/nodes/{}/decommission",
                    member.name, member.name, member.name
                ),
            });
        }
        Ok(())
    }

    async fn propose(self, _: Context, request: Request) -> Result<WriteReceipt, RemoteError> {
        if !self.peer_is_member() {
            return Err(RemoteError::Rejected {
                detail: format!("{} is not a cluster member", self.peer),
            });
        }
        node::propose_local(&self.node, request).await
    }

    async fn replicate_begin(
        self,
        _: Context,
        file_id: FileId,
        manifest: Manifest,
    ) -> Result<(), RemoteError> {
        replication::begin_receive(&self.node, &self.peer, file_id, manifest).await
    }

    async fn replicate_finish(self, _: Context, file_id: FileId) -> Result<(), RemoteError> {
        replication::finish_receive(&self.node, &self.peer, file_id).await
    }

    async fn discard_blob(self, _: Context, file_id: FileId) -> Result<(), RemoteError> {
        replication::discard(&self.node, &self.peer, file_id).await
    }

    async fn copy_blob(
        self,
        _: Context,
        file_id: FileId,
        target: Member,
    ) -> Result<(), RemoteError> {
        let members = consensus::members_of(&self.node.raft);
        let leader = node::leader(&self.node).map(|(_, m)| m.name);
        let caller_may_ask =
            leader.as_deref() == Some(self.peer.as_str()) || target.name == self.peer;
        if !caller_may_ask {
            return Err(RemoteError::Rejected {
                detail: format!(
                    "{} is neither the leader nor the copy's target {}",
                    self.peer, target.name
                ),
            });
        }
        // Dial the target at the address the committed membership records,
        // whatever address the caller passed.
        let Some(target) = members.into_values().find(|m| m.name == target.name) else {
            return Err(RemoteError::Rejected {
                detail: format!("{} is not a cluster member", target.name),
            });
        };
        replication::copy_to(&self.node, &file_id, &target).await
    }

    async fn drop_replica(
        self,
        _: Context,
        file_id: FileId,
        applied_index: u64,
    ) -> Result<bool, RemoteError> {
        if !self.peer_is_member() {
            return Err(RemoteError::Rejected {
                detail: format!("{} is not a cluster member", self.peer),
            });
        }
        replication::drop_replica(&self.node, &file_id, applied_index).await
    }
}

/// How long the admission check may take, forwarding included.
const ADMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a join may take: the learner must catch up with the log before
/// it is promoted.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
