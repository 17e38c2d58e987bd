//! Raft consensus: the type configuration, the persistent log, the state
//! machine over the catalog, the network over QUIC, and the write path that
//! forwards proposals from any node to the leader.
//!
//! Raft node ids are `u64`s derived from the string node id
//! ([`raft_id_of`]); the string id, the QUIC address and the HTTP address of
//! every member travel inside the committed membership as [`Member`], which
//! is the source of truth for who is in the cluster.

mod log_store;
mod network;
mod snapshot_receiver;
mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use log_store::LogStore;
pub use network::Network;
pub use snapshot_receiver::{SnapshotChunk, SnapshotChunkError, SnapshotReceiver};
pub use state_machine::{SnapshotFile, StateMachine};

use crate::model::{Command, NodeId, WriteOutcome};

/// The Raft node id: the first 8 bytes of SHA-256 of the string node id.
pub type RaftId = u64;

/// A cluster member as recorded in the committed membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node id as given to `--id` and bound to the node's certificate.
    pub name: NodeId,
    /// Address other nodes dial over QUIC: `host:port`, where host may be a
    /// DNS name.
    pub quic_addr: String,
    /// Address of the public HTTP API: `host:port`.
    pub http_addr: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.quic_addr)
    }
}

/// The application data of one Raft entry: a catalog command and the
/// leader's wall-clock time when it proposed the entry, so every replica
/// applies the same timestamp.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub at_ms: i64,
    pub command: Command,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Command::AddTrack { track, .. } => write!(f, "add_track({})", track.file_id),
            Command::SetReplicas { file_id, .. } => write!(f, "set_replicas({file_id})"),
            Command::AcquireLock { name, owner, .. } => write!(f, "acquire_lock({name}, {owner})"),
            Command::ReleaseLock { name, owner, .. } => write!(f, "release_lock({name}, {owner})"),
            Command::SetDraining { node_id, draining } => {
                write!(f, "set_draining({node_id}, {draining})")
            }
            Command::ReportReplicaFault {
                file_id,
                node_id,
                fault,
            } => write!(
                f,
                "report_replica_fault({file_id}, {node_id}, {})",
                fault.label()
            ),
        }
    }
}

/// What applying one entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub outcome: WriteOutcome,
}

openraft::declare_raft_types!(
    /// Raft types of a Dispotify cluster. The term, leader id, vote and log
    /// entry keep openraft's defaults, whose serialized form is the one
    /// openraft 0.9 wrote, so a data directory written by 0.9 opens as is.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = RaftId,
        Node = Member,
);

pub type DispotifyRaft = Raft<TypeConfig, StateMachine>;

/// The Raft metrics of a Dispotify node.
pub type Metrics = openraft::RaftMetrics<TypeConfig>;

/// A vote: a term, the candidate or leader, and whether a quorum granted it.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;

/// A log id: the leader that proposed an entry and the entry's index.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;

/// A Raft log entry of a Dispotify cluster.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;

/// The membership in force after a log id.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;

/// The position and membership that a snapshot covers.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// A snapshot of the catalog, open for reading.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// Derives the Raft node id from a string node id.
pub fn raft_id_of(name: &str) -> RaftId {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Timing and log compaction settings of the Raft protocol.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Entries applied since the last snapshot before a new one is built.
    pub snapshot_every_entries: u64,
    /// Log entries kept after a snapshot, so a briefly lagging follower
    /// catches up from the log instead of receiving a whole snapshot.
    pub log_entries_kept_after_snapshot: u64,
}

impl Default for RaftSettings {
    /// Heartbeats every 25 ms and election timeouts of 80 to 120 ms.
    /// openraft 0.10.0-alpha.37 uses these values as follows:
    ///
    /// - a leader checks its timers on a tick of 13/64 of the heartbeat
    ///   interval (5 ms) and sends a heartbeat at the first tick after each
    ///   interval. Each heartbeat times out at the leader after one
    ///   interval, though the follower still handles a late one.
    /// - a follower that has heard from a leader waits the leader lease
    ///   plus an election timeout drawn afresh for every Pre-Vote round
    ///   and campaign. The lease is `election_timeout_max` and has no
    ///   setting of its own, so a follower starts a Pre-Vote after 200 to
    ///   240 ms of silence.
    /// - a voter rejects a Pre-Vote while its own lease from the leader
    ///   runs, so a follower that merely missed heartbeats does not raise
    ///   the term.
    ///
    /// The fault suite measured these settings on a shared 2-core machine.
    /// Over 20 leader losses, a failover to the first committed write took
    /// 246 ms at the median and 272 ms at p99. Two runs of 300 s of client
    /// load (`loaded_cluster_holds_no_election`) held no election, at load
    /// averages of up to 8. docs/benchmarks.md has the runs and their
    /// limits. On a network with round trips of more than a few
    /// milliseconds, raise all three values together.
    ///
    /// A snapshot every 5,000 entries keeps restarts short; 1,000 entries
    /// kept after it cover a follower that was down for a few minutes of
    /// uploads.
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval: Duration::from_millis(25),
            election_timeout_min: Duration::from_millis(80),
            election_timeout_max: Duration::from_millis(120),
            snapshot_every_entries: 5_000,
            log_entries_kept_after_snapshot: 1_000,
        }
    }
}

/// Builds the openraft configuration from the node's Raft settings.
// openraft's `ConfigError` is large, and this runs once at start-up.
#[allow(clippy::result_large_err)]
pub fn raft_config(
    settings: &RaftSettings,
) -> Result<Arc<openraft::Config>, openraft::ConfigError> {
    let config = openraft::Config {
        cluster_name: "dispotify".to_string(),
        heartbeat_interval: settings.heartbeat_interval.as_millis() as u64,
        election_timeout_min: settings.election_timeout_min.as_millis() as u64,
        election_timeout_max: settings.election_timeout_max.as_millis() as u64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_every_entries),
        max_in_snapshot_log_to_keep: settings.log_entries_kept_after_snapshot,
        // A follower that cannot hear the leader first sends the voters a
        // Pre-Vote request, which changes no term, so a node that was cut
        // off or starved of CPU does not raise the term of a healthy
        // cluster.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}

/// Returns the members of a membership config by Raft id.
pub fn members_of(raft: &DispotifyRaft) -> BTreeMap<RaftId, Member> {
    let metrics = raft.metrics().borrow_watched().clone();
    metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, member)| (*id, member.clone()))
        .collect()
}

/// Whether the node with `id` is a voter in the current membership.
pub fn is_voter(raft: &DispotifyRaft, id: RaftId) -> bool {
    let metrics = raft.metrics().borrow_watched().clone();
    let voters: BTreeSet<RaftId> = metrics.membership_config.membership().voter_ids().collect();
    voters.contains(&id)
}

/// Returns how long ago a majority last acknowledged this node as leader,
/// or `None` when it is not the leader or no majority has acknowledged it
/// yet.
pub fn quorum_ack_age(metrics: &Metrics) -> Option<Duration> {
    use openraft::Instant as _;

    metrics.last_quorum_acked.as_ref().map(|at| at.elapsed())
}

/// Whether this node is the leader right now, by its own metrics.
pub fn is_leader(raft: &DispotifyRaft) -> bool {
    raft.metrics().borrow_watched().state == ServerState::Leader
}

/// Initializes a new single-node cluster with this node as its only voter.
/// Calling it on an already initialized node changes nothing: `dispotify
/// dev` passes `--bootstrap` to its first node on every start.
pub async fn bootstrap(
    raft: &DispotifyRaft,
    me: RaftId,
    member: Member,
) -> Result<(), RaftError<TypeConfig, InitializeError<TypeConfig>>> {
    // Asked first, because openraft logs a refused initialization as an
    // error.
    if raft.is_initialized().await.map_err(RaftError::Fatal)? {
        tracing::info!(node_id = %member.name, "Raft state already initialized; --bootstrap has nothing to do");
        return Ok(());
    }
    let mut nodes = BTreeMap::new();
    nodes.insert(me, member);
    match raft.initialize(nodes).await {
        Ok(()) => Ok(()),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Adds `member` as a learner, waits until it has caught up, then promotes
/// it to voter. Must run on the leader.
pub async fn add_voter(
    raft: &DispotifyRaft,
    member: Member,
) -> Result<(), RaftError<TypeConfig, ClientWriteError<TypeConfig>>> {
    let id = raft_id_of(&member.name);
    let known = members_of(raft);
    if known.get(&id) != Some(&member) {
        tracing::info!(peer = %member.name, quic_addr = %member.quic_addr, "adding learner");
        raft.add_learner(id, member.clone(), true).await?;
    }
    if !is_voter(raft, id) {
        tracing::info!(peer = %member.name, "promoting learner to voter");
        let mut add = BTreeSet::new();
        add.insert(id);
        raft.change_membership(ChangeMembers::AddVoterIds(add), false)
            .await?;
    }
    Ok(())
}

/// Removes the member `id` from the voters, then from the membership. Must
/// run on the leader.
pub async fn remove_member(
    raft: &DispotifyRaft,
    id: RaftId,
) -> Result<(), RaftError<TypeConfig, ClientWriteError<TypeConfig>>> {
    let removed: BTreeSet<RaftId> = [id].into_iter().collect();
    if is_voter(raft, id) {
        raft.change_membership(ChangeMembers::RemoveVoters(removed.clone()), false)
            .await?;
    }
    if members_of(raft).contains_key(&id) {
        raft.change_membership(ChangeMembers::RemoveNodes(removed), false)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;
    use openraft::{EntryPayload, Membership};

    /// Encodings that openraft 0.9.25 wrote for node `n1`, captured from
    /// that version: postcard in the Raft log (`log.redb`), JSON in the
    /// catalog's applied state and in `current.meta`. A data directory
    /// written before the move to 0.10 contains exactly these forms.
    const V09_VOTE: &str = "03fdcc9ce784f7e2b56701";
    const V09_ENTRY_MEMBERSHIP: &str = "03fdcc9ce784f7e2b5672a020101fdcc9ce784f7e2b56701fdcc9ce784f7e2b567026e310e3132372e302e302e313a373030310e3132372e302e302e313a38303031";
    const V09_ENTRY_NORMAL: &str = "03fdcc9ce784f7e2b5672b0180a0abfef96205026e3101";
    const V09_ENTRY_BLANK: &str = "04fdcc9ce784f7e2b5672c00";
    const V09_JSON_MEMBERSHIP: &str = r#"{"log_id":{"leader_id":{"term":3,"node_id":7452203632095078013},"index":42},"membership":{"configs":[[7452203632095078013]],"nodes":{"7452203632095078013":{"name":"n1","quic_addr":"127.0.0.1:7001","http_addr":"127.0.0.1:8001"}}}}"#;
    const V09_JSON_SNAPSHOT_META: &str = r#"{"last_log_id":{"leader_id":{"term":3,"node_id":7452203632095078013},"index":42},"last_membership":{"log_id":{"leader_id":{"term":3,"node_id":7452203632095078013},"index":42},"membership":{"configs":[[7452203632095078013]],"nodes":{"7452203632095078013":{"name":"n1","quic_addr":"127.0.0.1:7001","http_addr":"127.0.0.1:8001"}}}},"snapshot_id":"3-42-7"}"#;

    fn n1() -> (RaftId, Member) {
        let member = Member {
            name: "n1".into(),
            quic_addr: "127.0.0.1:7001".into(),
            http_addr: "127.0.0.1:8001".into(),
        };
        (raft_id_of(&member.name), member)
    }

    fn log_id(term: u64, index: u64) -> LogId {
        let (id, _) = n1();
        LogId::new(
            openraft::impls::leader_id_adv::LeaderId { term, node_id: id },
            index,
        )
    }

    fn membership() -> Membership<RaftId, Member> {
        let (id, member) = n1();
        let voters: BTreeSet<RaftId> = [id].into_iter().collect();
        let nodes: BTreeMap<RaftId, Member> = [(id, member)].into_iter().collect();
        Membership::new(vec![voters], nodes).expect("the only voter has a node entry")
    }

    /// Decodes `hex_bytes` as postcard and checks that it gives `expected`
    /// and that encoding `expected` again gives the same bytes.
    fn assert_postcard<T>(hex_bytes: &str, expected: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = hex::decode(hex_bytes).expect("fixture is hex");
        let decoded: T = postcard::from_bytes(&bytes).expect("0.9 encoding decodes");
        assert_eq!(&decoded, expected);
        assert_eq!(postcard::to_allocvec(expected).expect("encodes"), bytes);
    }

    #[test]
    fn v09_log_encodings_decode() {
        let (id, _) = n1();
        assert_postcard(V09_VOTE, &Vote::new_committed(3, id));
        assert_postcard(
            V09_ENTRY_MEMBERSHIP,
            &Entry {
                log_id: log_id(3, 42),
                payload: EntryPayload::Membership(membership()),
            },
        );
        assert_postcard(
            V09_ENTRY_NORMAL,
            &Entry {
                log_id: log_id(3, 43),
                payload: EntryPayload::Normal(Request {
                    at_ms: 1_700_000_000_000,
                    command: Command::SetDraining {
                        node_id: "n1".into(),
                        draining: true,
                    },
                }),
            },
        );
        assert_postcard(
            V09_ENTRY_BLANK,
            &Entry {
                log_id: log_id(4, 44),
                payload: EntryPayload::Blank,
            },
        );
    }

    #[test]
    fn v09_applied_state_decodes() {
        let stored: StoredMembership =
            serde_json::from_str(V09_JSON_MEMBERSHIP).expect("0.9 membership decodes");
        assert_eq!(
            stored,
            StoredMembership::new(Some(log_id(3, 42)), membership())
        );

        let meta: SnapshotMeta =
            serde_json::from_str(V09_JSON_SNAPSHOT_META).expect("0.9 snapshot meta decodes");
        assert_eq!(meta.last_log_id, Some(log_id(3, 42)));
        assert_eq!(meta.last_membership, stored);
    }
}
