//! The node-to-node control service, defined with tarpc and carried over
//! the QUIC transport with postcard encoding: Raft messages, joining,
//! forwarded writes, replication control and health pings.
//!
//! Bulk chunk data does not go through these calls: it moves on bulk QUIC
//! streams (see `replication`), so a large transfer never queues behind or
//! in front of a Raft heartbeat.

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::consensus::{Member, Request, SnapshotChunk, SnapshotChunkError, TypeConfig};
use crate::model::{FileId, Manifest, NodeId, WriteOutcome};

/// A node's answer to a health ping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingReply {
    pub node_id: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub ready: bool,
    pub scrub: crate::replication::ScrubProgress,
    /// The repair scheduler's status, when this node is the leader.
    pub repair: Option<crate::replication::RepairStatus>,
    /// Repair copies this node is sending, with the bytes sent so far.
    pub copies_out: Vec<crate::replication::CopyProgress>,
    /// Milliseconds since a majority last acknowledged this node, when it
    /// is the leader. A follower that still hears a leader cut off from the
    /// majority learns from it that writes cannot commit.
    pub quorum_ack_age_ms: Option<u64>,
}

/// The outcome of a committed and applied write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReceipt {
    /// The state machine's decision for the entry.
    pub outcome: WriteOutcome,
    /// Index of the entry in the Raft log.
    pub log_index: u64,
}

impl WriteReceipt {
    /// False when the entry changed nothing, for example an `AddTrack` for a
    /// file already in the catalog.
    pub fn changed(&self) -> bool {
        self.outcome.changed()
    }
}

/// Why a remote node refused or failed a call, in a form that crosses the
/// wire. Transport failures are reported separately by the transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    #[error("this node is not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error("the cluster has no quorum: {detail}")]
    NoQuorum { detail: String },
    #[error("request rejected: {detail}")]
    Rejected { detail: String },
    /// A refusal that retrying cannot change.
    #[error("refused: {detail}")]
    Refused { detail: String },
    #[error("node {node_id} failed the request: {detail}")]
    Failed { node_id: NodeId, detail: String },
}

#[tarpc::service]
pub trait NodeRpc {
    /// Returns this node's view of the cluster.
    async fn ping() -> PingReply;

    async fn raft_append(
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>;

    async fn raft_vote(
        request: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>;

    /// Asks whether this node would vote for the candidate, without
    /// changing its term or vote.
    async fn raft_pre_vote(
        request: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>;

    /// Stores one chunk of a snapshot from the leader. The response to the
    /// last chunk is that of the installed snapshot.
    async fn raft_snapshot(
        chunk: SnapshotChunk,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, SnapshotChunkError>;

    /// Adds the calling node to the cluster as a learner and promotes it to
    /// voter once it has caught up. The member's name must equal the node id
    /// in the caller's certificate. Forwarded to the leader when needed.
    async fn join(member: Member) -> Result<(), RemoteError>;

    /// Checks, before a node with an empty data directory joins, that its
    /// id is not already a member's: a member that lost its data must come
    /// back under a new id. Forwarded to the leader when needed.
    async fn admit(member: Member, fresh: bool) -> Result<(), RemoteError>;

    /// Proposes a write through Raft on the leader. A node that is not the
    /// leader answers `NotLeader` and the caller retries at the leader.
    async fn propose(request: Request) -> Result<WriteReceipt, RemoteError>;

    /// Prepares to receive a blob's chunks on bulk streams.
    async fn replicate_begin(file_id: FileId, manifest: Manifest) -> Result<(), RemoteError>;

    /// Verifies the received blob against its manifest, fsyncs it and makes
    /// it readable. Returns only once the blob is durable.
    async fn replicate_finish(file_id: FileId) -> Result<(), RemoteError>;

    /// Deletes a blob this node holds, unless the catalog lists it: used to
    /// clean up after an upload that did not reach the write quorum.
    async fn discard_blob(file_id: FileId) -> Result<(), RemoteError>;

    /// Sends this node's verified copy of a blob to `target`, for repair and
    /// rebalancing. Only the leader or the target itself may send this request.
    async fn copy_blob(file_id: FileId, target: Member) -> Result<(), RemoteError>;

    /// Deletes this node's copy of a blob once the log is applied up to
    /// `applied_index` and the committed replica set there leaves this node
    /// out. Returns whether a copy was deleted.
    async fn drop_replica(file_id: FileId, applied_index: u64) -> Result<bool, RemoteError>;
}
