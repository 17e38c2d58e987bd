//! A Dispotify node: every component wired together, the start-up
//! sequence, the Raft write path and the control RPC server.
//!
//! Start-up checks the node id against the data directory and the
//! certificate, binds QUIC and opens the catalog, the blob store and the Raft
//! storage. It then starts Raft, serves QUIC, bootstraps or joins and starts
//! the workers. HTTP is served until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispotify_transport::{Endpoint, TlsIdentity};
use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::blob::BlobStore;
use crate::catalog::Catalog;
use crate::config::NodeConfig;
use crate::consensus::{
    self, DispotifyRaft, LogStore, Member, Network, RaftId, Request, StateMachine,
};
use crate::discovery::Discovery;
use crate::model::{Command, NodeId};
use crate::rpc::{NodeRpcClient, RemoteError, WriteReceipt};
use crate::{api, replication, server, workers};

/// How long a write may wait for a leader and a commit before the client
/// receives a "no quorum" error. Several election timeouts, so one lost
/// election does not fail a write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(8);

/// Shortest silence from a majority after which a leader refuses writes at
/// once: a loaded node can miss a few heartbeat replies without being cut
/// off.
const MIN_QUORUM_SILENCE: Duration = Duration::from_secs(1);

/// How far the state machine may trail the commit index the leader last
/// reported for the node to count as caught up.
const READY_MAX_APPLY_LAG: u64 = 16;

/// Capacity of the in-process event channel; a subscriber that falls this
/// far behind skips to the newest events.
const EVENT_CHANNEL_CAPACITY: usize = 256;

/// Something that happened to the cluster, published in process for the
/// replication manager and discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    LeaderChanged { leader: Option<NodeId>, term: u64 },
    MembershipChanged { members: Vec<Member> },
}

/// Every component of a running node.
pub struct Node {
    pub config: NodeConfig,
    pub me: Member,
    pub raft_id: RaftId,
    pub raft: DispotifyRaft,
    /// Collects the chunks of a snapshot that the leader sends.
    pub snapshot_receiver: consensus::SnapshotReceiver,
    pub catalog: Catalog,
    pub blobs: BlobStore,
    pub endpoint: Endpoint,
    pub discovery: Arc<Discovery>,
    pub receiving: replication::Receiving,
    pub upkeep: replication::Upkeep,
    pub events: broadcast::Sender<ClusterEvent>,
    /// Held by the leader while it changes the membership: openraft accepts
    /// one membership change at a time, so concurrent joins queue here.
    pub membership_changes: tokio::sync::Mutex<()>,
    pub metrics: crate::metrics::Metrics,
    /// When this node last heard from a leader, for the quorum check.
    pub leader_contact: LeaderContact,
    /// The last quorum check's result, reused for a short while.
    pub quorum_probe: tokio::sync::Mutex<Option<QuorumProbe>>,
    /// The follower's last probe of its leader's quorum: the leader, the
    /// time, and how long the majority had been silent.
    pub leader_quorum_probe: tokio::sync::Mutex<Option<LeaderQuorumProbe>>,
    pub shutdown: CancellationToken,
    /// Flag set when this node serves incoming RPCs. A node that started
    /// with an empty data directory and no `--bootstrap` serves none until
    /// the leader has checked that its id is not an existing member's,
    /// because Raft traffic meant for a node that lost its data must not
    /// reach it.
    pub admitted: std::sync::atomic::AtomicBool,
    /// Set when the cluster refused this node for good; `run` then exits
    /// with this error.
    pub refusal: std::sync::Mutex<Option<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} belongs to node {stored:?}, not {given:?}; use the matching --id or another --data-dir")]
    NodeIdMismatch {
        path: PathBuf,
        stored: String,
        given: String,
    },
    #[error("cannot load certificates from {path}: {source}")]
    Certificates {
        path: PathBuf,
        source: Box<dispotify_transport::TransportError>,
    },
    #[error("cannot bind QUIC on {addr}: {source}")]
    BindQuic {
        addr: std::net::SocketAddr,
        source: Box<dispotify_transport::TransportError>,
    },
    #[error("cannot bind HTTP on {addr}: {source}")]
    BindHttp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the catalog database: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("cannot open the blob store: {0}")]
    Blobs(#[from] crate::blob::BlobError),
    #[error("cannot open the raft log at {path}: {source}")]
    RaftLog {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("cannot start raft: {detail}")]
    Raft { detail: String },
    #[error("http server failed: {0}")]
    Http(std::io::Error),
    #[error("the cluster refused this node: {detail}")]
    Refused { detail: String },
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: NodeConfig) -> Result<(), StartError> {
    let node = start(config).await?;
    let listener = tokio::net::TcpListener::bind(node.config.http_addr)
        .await
        .map_err(|source| StartError::BindHttp {
            addr: node.config.http_addr,
            source,
        })?;
    tracing::info!(node_id = %node.config.id, http = %node.config.http_addr, "serving http");

    let shutdown = node.shutdown.clone();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    let app = api::router(node.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;

    stop(&node).await;
    let refusal = node
        .refusal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(detail) = refusal {
        return Err(StartError::Refused { detail });
    }
    served.map_err(StartError::Http)
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT, shutting down"),
        _ = terminate.recv() => tracing::info!("received SIGTERM, shutting down"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

/// Stops the workers, Raft and the QUIC endpoint.
pub async fn stop(node: &Node) {
    node.shutdown.cancel();
    if let Err(error) = node.raft.shutdown().await {
        tracing::warn!(%error, "raft did not shut down cleanly");
    }
    node.endpoint.close();
    tracing::info!(node_id = %node.config.id, "node stopped");
}

/// Starts every component except the HTTP server.
pub async fn start(config: NodeConfig) -> Result<Arc<Node>, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let fresh = check_node_id(&config.data_dir, &config.id)?;

    let identity = TlsIdentity::load(&config.certs_dir, &config.id).map_err(|source| {
        StartError::Certificates {
            path: config.certs_dir.clone(),
            source: Box::new(source),
        }
    })?;
    let endpoint =
        Endpoint::bind(config.quic_addr, identity, config.transport.clone()).map_err(|source| {
            StartError::BindQuic {
                addr: config.quic_addr,
                source: Box::new(source),
            }
        })?;

    let catalog = Catalog::connect(&config.database_url).await?;
    let blobs = BlobStore::open(config.data_dir.clone(), config.chunk_size_bytes).await?;

    let raft_dir = config.data_dir.join("raft");
    std::fs::create_dir_all(&raft_dir).map_err(|source| StartError::DataDir {
        path: raft_dir.clone(),
        source,
    })?;
    let log_path = raft_dir.join("log.redb");
    let log_store = LogStore::open(&log_path).map_err(|source| StartError::RaftLog {
        path: log_path.clone(),
        source,
    })?;
    let state_machine =
        StateMachine::open(catalog.clone(), raft_dir.join("snapshots")).map_err(|source| {
            StartError::DataDir {
                path: raft_dir.clone(),
                source,
            }
        })?;

    let discovery = Discovery::new(config.peer_cache_ttl);
    let network = Network::new(
        endpoint.clone(),
        discovery.clone(),
        config.raft.heartbeat_interval,
    );
    let raft_config = consensus::raft_config(&config.raft).map_err(|e| StartError::Raft {
        detail: e.to_string(),
    })?;
    let raft_id = consensus::raft_id_of(&config.id);
    let snapshot_receiver = consensus::SnapshotReceiver::new(state_machine.receive_path());
    let raft = DispotifyRaft::new(raft_id, raft_config, network, log_store, state_machine)
        .await
        .map_err(|e| StartError::Raft {
            detail: e.to_string(),
        })?;

    let me = Member {
        name: config.id.clone(),
        quic_addr: config.advertise_quic.clone(),
        http_addr: config.advertise_http.clone(),
    };
    let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
    let bootstrap = config.bootstrap;
    let upkeep = replication::Upkeep::new(&config.repair);
    let node = Arc::new(Node {
        config,
        me,
        raft_id,
        raft,
        snapshot_receiver,
        catalog,
        blobs,
        endpoint,
        discovery,
        receiving: replication::Receiving::default(),
        upkeep,
        events,
        membership_changes: tokio::sync::Mutex::new(()),
        metrics: crate::metrics::Metrics::new(),
        leader_contact: LeaderContact::new(),
        quorum_probe: tokio::sync::Mutex::new(None),
        leader_quorum_probe: tokio::sync::Mutex::new(None),
        shutdown: CancellationToken::new(),
        admitted: std::sync::atomic::AtomicBool::new(!fresh || bootstrap),
        refusal: std::sync::Mutex::new(None),
    });
    tracing::info!(node_id = %node.config.id, quic = %node.config.quic_addr, raft_id = node.raft_id, "node started");

    node.endpoint
        .serve(Arc::new(server::Incoming::new(node.clone())))
        .map_err(|source| StartError::BindQuic {
            addr: node.config.quic_addr,
            source: Box::new(source),
        })?;
    workers::spawn_all(&node);

    if node.config.bootstrap {
        consensus::bootstrap(&node.raft, node.raft_id, node.me.clone())
            .await
            .map_err(|e| StartError::Raft {
                detail: e.to_string(),
            })?;
    }
    // A bootstrapped node is the cluster's first voter and has no one to join.
    if !node.config.bootstrap && !consensus::is_voter(&node.raft, node.raft_id) {
        tokio::spawn(workers::join_cluster(node.clone()));
    }
    Ok(node)
}

/// Records the node id in the data directory on first start and rejects a
/// later start under another id. Returns true on the first start, when the
/// directory held no id yet.
fn check_node_id(data_dir: &Path, id: &str) -> Result<bool, StartError> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(stored) if stored.trim() == id => Ok(false),
        Ok(stored) => Err(StartError::NodeIdMismatch {
            path,
            stored: stored.trim().to_string(),
            given: id.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{id}\n"))
                .map(|()| true)
                .map_err(|source| StartError::DataDir { path, source })
        }
        Err(source) => Err(StartError::DataDir { path, source }),
    }
}

/// Milliseconds since the Unix epoch by this node's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Returns the member this node currently sees as leader, if any.
pub fn leader(node: &Node) -> Option<(RaftId, Member)> {
    let leader = node.raft.metrics().borrow_watched().current_leader?;
    let member = consensus::members_of(&node.raft).get(&leader)?.clone();
    Some((leader, member))
}

/// Whether this node is a member, has a known leader, has applied its log
/// and has reconciled its blobs with the catalog once.
pub fn is_ready(node: &Node) -> bool {
    is_caught_up(node) && node.upkeep.is_reconciled()
}

/// Tells whether this node is a member, has a known leader and has applied
/// what that leader reports as committed.
///
/// The local log is not compared: after a restart it contains only the
/// entries the node had, and the missing ones arrive in batches, so the
/// node would look caught up between two batches.
pub fn is_caught_up(node: &Node) -> bool {
    let metrics = node.raft.metrics().borrow_watched().clone();
    let joined = metrics
        .membership_config
        .membership()
        .get_node(&node.raft_id)
        .is_some();
    // None until a leader has sent its commit index since the node started.
    let Some(committed) = metrics.cluster_committed else {
        return false;
    };
    let applied = metrics.last_applied.map_or(0, |l| l.index);
    joined
        && metrics.current_leader.is_some()
        && committed.index.saturating_sub(applied) <= READY_MAX_APPLY_LAG
}

/// Opens a control RPC client to `member`.
pub async fn rpc_client(node: &Node, member: &Member) -> Result<NodeRpcClient, RemoteError> {
    let unreachable = |detail: String| RemoteError::Failed {
        node_id: member.name.clone(),
        detail,
    };
    let addr = node
        .discovery
        .resolve(&member.quic_addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let transport = node
        .endpoint
        .rpc_transport(&member.name, addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(NodeRpcClient::new(tarpc::client::Config::default(), transport).spawn())
}

/// Creates a tarpc context whose deadline is `timeout` from now.
pub fn context_with_timeout(timeout: Duration) -> tarpc::context::Context {
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + timeout;
    context
}

/// Proposes `request` on this node, which must be the leader. A leader that
/// has heard from no majority for two election timeouts (at least
/// [`MIN_QUORUM_SILENCE`]) is cut off from it, so it rejects the write at
/// once. A proposal that is waiting for its commit gives up at that point
/// rather than after [`WRITE_TIMEOUT`].
pub async fn propose_local(node: &Node, mut request: Request) -> Result<WriteReceipt, RemoteError> {
    let limit = quorum_silence_limit(node);
    if let Some(silence) = quorum_silence(&node.raft.metrics().borrow_watched(), limit) {
        return Err(no_quorum_at_leader(silence));
    }

    request.at_ms = now_ms();
    let mut metrics = node.raft.metrics();
    let cut_off = metrics.wait_until(|m| quorum_silence(m, limit).is_some());
    let written = tokio::select! {
        written = tokio::time::timeout(WRITE_TIMEOUT, node.raft.client_write(request)) => written,
        watched = cut_off => {
            let silence = watched.ok().and_then(|m| quorum_silence(&m, limit));
            return Err(match silence {
                Some(silence) => no_quorum_at_leader(silence),
                None => RemoteError::Failed {
                    node_id: node.config.id.clone(),
                    detail: "raft stopped".to_string(),
                },
            });
        }
    };
    match written {
        Err(_) => Err(RemoteError::NoQuorum {
            detail: format!("no commit within {WRITE_TIMEOUT:?}"),
        }),
        Ok(Ok(response)) => Ok(WriteReceipt {
            outcome: response.data.outcome,
            log_index: response.log_id.index,
        }),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(RemoteError::NotLeader {
                leader: forward.leader_node.map(|m| m.name),
            })
        }
        Ok(Err(e)) => Err(RemoteError::Failed {
            node_id: node.config.id.clone(),
            detail: e.to_string(),
        }),
    }
}

/// Silence from a majority after which a leader counts as cut off from it.
fn quorum_silence_limit(node: &Node) -> Duration {
    (node.config.raft.election_timeout_max * 2).max(MIN_QUORUM_SILENCE)
}

/// Returns how long a leader has heard from no majority, when that is
/// longer than `limit`.
fn quorum_silence(metrics: &consensus::Metrics, limit: Duration) -> Option<Duration> {
    if metrics.state != ServerState::Leader {
        return None;
    }
    let silence = consensus::quorum_ack_age(metrics)?;
    (silence > limit).then_some(silence)
}

fn no_quorum_at_leader(silence: Duration) -> RemoteError {
    RemoteError::NoQuorum {
        detail: format!(
            "the leader has not heard from a majority of the members for {} ms",
            silence.as_millis()
        ),
    }
}

/// Commits `command` through Raft from any node: locally on the leader,
/// otherwise forwarded to the leader. When the leader changes, stops
/// responding or cannot be reached, the write is sent again to the next
/// leader with capped exponential backoff, within [`WRITE_TIMEOUT`] in all.
/// A node that evidently cannot reach a quorum fails the write at once with
/// [`ApiError::NoQuorum`] (see [`check_quorum`]).
///
/// NOTE: a write whose forward was abandoned may still have been committed
/// by the leader it went to, so the command sent again can be applied
/// twice. A second `AddTrack` then reports no change, and a second
/// `ReleaseLock` reports the lock as not held.
pub async fn write(node: &Arc<Node>, command: Command) -> Result<WriteReceipt, ApiError> {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let request = Request { at_ms: 0, command };
    let mut backoff = FIRST_WRITE_RETRY_BACKOFF;
    let mut last_error = String::from("no leader elected");
    let mut attempt = 0;
    while attempt < crate::limits::MAX_FORWARD_ATTEMPTS && Instant::now() < deadline {
        check_quorum(node).await?;
        let term = node.raft.metrics().borrow_watched().current_term;
        let Some((leader_id, member)) = leader(node) else {
            if node
                .raft
                .metrics()
                .borrow_watched()
                .current_leader
                .is_none()
            {
                wait_for_new_leader(node, None, term, deadline).await;
            } else {
                // The leader is not in this node's membership yet.
                tokio::time::sleep_until(deadline.min(Instant::now() + backoff).into()).await;
            }
            continue;
        };
        attempt += 1;

        let proposed_at = Instant::now();
        let result = if leader_id == node.raft_id {
            propose_local(node, request.clone())
                .await
                .map_err(Retry::from)
        } else {
            forward_watched(node, leader_id, &member, term, request.clone(), deadline).await
        };
        let error = match result {
            Ok(receipt) => {
                node.metrics
                    .commit_seconds
                    .observe(proposed_at.elapsed().as_secs_f64());
                return Ok(receipt);
            }
            Err(Retry::Remote(RemoteError::NoQuorum { detail })) => {
                return Err(ApiError::NoQuorum { detail })
            }
            Err(error) => error,
        };
        tracing::info!(
            node_id = %node.config.id,
            peer = %member.name,
            term,
            attempt,
            %error,
            "write not accepted by the leader, retrying"
        );
        last_error = error.to_string();
        if let Retry::LeaderSilent { .. } = error {
            // A silent leader is either gone or cut off from this node, and
            // only the quorum check distinguishes the two.
            check_quorum(node).await?;
            let patience = Instant::now() + node.config.raft.election_timeout_max * 2;
            wait_for_new_leader(node, Some(leader_id), term, deadline.min(patience)).await;
        } else {
            tokio::time::sleep_until(deadline.min(Instant::now() + backoff).into()).await;
            backoff = (backoff * 2).min(MAX_WRITE_RETRY_BACKOFF);
        }
    }
    tracing::warn!(node_id = %node.config.id, error = %last_error, "write failed: no leader accepted it");
    Err(ApiError::NoQuorum { detail: last_error })
}

/// Wait before the first retry of a write that the leader did not accept.
/// Short, because most failures are a leader change that is already known.
const FIRST_WRITE_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// Maximum wait between two retries of a write, so several retries fit in
/// [`WRITE_TIMEOUT`] while a new leader is being elected.
const MAX_WRITE_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// How often a forwarded write, or an upload being copied to its replicas,
/// checks whether this node still hears from the leader. Shorter than any
/// sensible election timeout.
const LEADER_SILENCE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// The reason an attempt at a write ended without a commit.
#[derive(Debug, thiserror::Error)]
enum Retry {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("leader {leader} lost its place in term {term}")]
    LeaderChanged { leader: String, term: u64 },
    #[error("no message from leader {leader} for {silent_ms} ms")]
    LeaderSilent { leader: String, silent_ms: u64 },
}

/// Forwards `request` to the leader `member`, and abandons the call as
/// soon as the Raft metrics report another leader or term, or once both
/// the call and the silence from the leader last longer than the maximum
/// election timeout.
async fn forward_watched(
    node: &Node,
    leader_id: RaftId,
    member: &Member,
    term: u64,
    request: Request,
    deadline: Instant,
) -> Result<WriteReceipt, Retry> {
    let mut metrics = node.raft.metrics();
    let replaced =
        metrics.wait_until(|m| m.current_leader != Some(leader_id) || m.current_term != term);
    let silence_limit = node.config.raft.election_timeout_max;
    let started = Instant::now();
    let silent = async {
        let mut check = tokio::time::interval(LEADER_SILENCE_CHECK_INTERVAL);
        loop {
            check.tick().await;
            let silence = node.leader_contact.elapsed();
            if silence > silence_limit && started.elapsed() > silence_limit {
                return silence;
            }
        }
    };
    tokio::select! {
        result = forward(node, member, request, deadline) => result.map_err(Retry::from),
        _ = replaced => Err(Retry::LeaderChanged { leader: member.name.clone(), term }),
        silence = silent => Err(Retry::LeaderSilent {
            leader: member.name.clone(),
            silent_ms: silence.as_millis() as u64,
        }),
    }
}

async fn forward(
    node: &Node,
    leader: &Member,
    request: Request,
    deadline: Instant,
) -> Result<WriteReceipt, RemoteError> {
    let client = rpc_client(node, leader).await?;
    let mut context = tarpc::context::current();
    context.deadline = deadline;
    match client.propose(context, request).await {
        Ok(result) => result,
        Err(e) => Err(RemoteError::Failed {
            node_id: leader.name.clone(),
            detail: e.to_string(),
        }),
    }
}

/// Waits until the metrics name a leader other than `previous` or a term
/// other than `term`, or until `deadline`.
async fn wait_for_new_leader(node: &Node, previous: Option<RaftId>, term: u64, deadline: Instant) {
    let mut metrics = node.raft.metrics();
    let changed = metrics.wait_until(|m| {
        m.current_term != term || (m.current_leader.is_some() && m.current_leader != previous)
    });
    let _ = tokio::time::timeout_at(deadline.into(), changed).await;
}

/// How long a ping of the quorum check may take. A peer that does not
/// respond within it counts as unreachable, as in the health checks.
const QUORUM_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the result of a quorum check serves later writes, so a burst
/// of writes on a cut-off node sends one round of pings.
const QUORUM_PROBE_REUSE: Duration = Duration::from_millis(500);

/// When this node last accepted an AppendEntries from a leader. The node's
/// start counts as the first contact, so a node that has just started is
/// not taken for a cut-off one.
#[derive(Debug)]
pub struct LeaderContact {
    last: std::sync::Mutex<Instant>,
}

impl LeaderContact {
    pub fn new() -> LeaderContact {
        LeaderContact {
            last: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Records an AppendEntries accepted from the leader now.
    pub fn record(&self) {
        *self.lock() = Instant::now();
    }

    /// Time since the last AppendEntries from a leader.
    pub fn elapsed(&self) -> Duration {
        self.lock().elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        // The guarded value is a plain Instant, valid whatever a panicking
        // holder did.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact::new()
    }
}

/// The number of voters that responded to the last quorum check, and
/// when.
#[derive(Clone, Copy, Debug)]
pub struct QuorumProbe {
    at: Instant,
    reached: usize,
    voters: usize,
}

impl QuorumProbe {
    fn required(&self) -> usize {
        self.voters / 2 + 1
    }
}

/// Fails at once with [`ApiError::NoQuorum`] when this node evidently
/// cannot take part in a write quorum, so a client is not kept waiting for
/// [`WRITE_TIMEOUT`]:
///
/// - on the leader, when it has heard from no majority for two election
///   timeouts (at least [`MIN_QUORUM_SILENCE`]);
/// - on any other node, when it has accepted no AppendEntries from a
///   leader for longer than the election timeout and fewer than a
///   majority of the voters, itself included, respond to a ping within
///   [`QUORUM_PROBE_TIMEOUT`].
///
/// - on a follower that hears from its leader, when the leader reports
///   that it has heard from no majority for that long (see
///   [`check_leader_quorum`]).
///
/// A follower whose leader has a majority, or that reaches a majority
/// while a new leader is elected, passes: the write can then commit.
pub async fn check_quorum(node: &Node) -> Result<(), ApiError> {
    let metrics = node.raft.metrics().borrow_watched().clone();
    if metrics.state == ServerState::Leader {
        return match quorum_silence(&metrics, quorum_silence_limit(node)) {
            Some(silence) => Err(ApiError::NoQuorum {
                detail: no_quorum_at_leader(silence).to_string(),
            }),
            None => Ok(()),
        };
    }
    let silence = node.leader_contact.elapsed();
    if silence <= node.config.raft.election_timeout_max {
        return check_leader_quorum(node).await;
    }

    let probe = probe_voters(node, &metrics).await;
    if probe.reached >= probe.required() {
        return Ok(());
    }
    tracing::warn!(
        node_id = %node.config.id,
        silent_ms = silence.as_millis() as u64,
        reached = probe.reached,
        voters = probe.voters,
        "write rejected: no leader and no quorum reachable"
    );
    Err(ApiError::NoQuorum {
        detail: format!(
            "this node has heard from no leader for {} ms and reaches {} of the {} voters, \
             fewer than the {} a quorum needs",
            silence.as_millis(),
            probe.reached,
            probe.voters,
            probe.required()
        ),
    })
}

/// Fails when the leader this node hears from reports no majority
/// acknowledgement for longer than the leader's own limit. A leader on the
/// minority side of a partition keeps sending heartbeats to the followers
/// on its side, so those followers cannot tell from silence alone. A leader
/// that does not respond passes, and the write's forward then finds out.
/// The result is reused for [`QUORUM_PROBE_REUSE`].
async fn check_leader_quorum(node: &Node) -> Result<(), ApiError> {
    let Some((_, leader)) = leader(node) else {
        return Ok(());
    };
    let mut last = node.leader_quorum_probe.lock().await;
    let silence = match &*last {
        // A new leader's acknowledgements are its own, not the last one's.
        Some(probe) if probe.leader == leader.name && probe.at.elapsed() < QUORUM_PROBE_REUSE => {
            probe.silence
        }
        _ => {
            let reply = match rpc_client(node, &leader).await {
                Ok(client) => client
                    .ping(context_with_timeout(QUORUM_PROBE_TIMEOUT))
                    .await
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            let silence = match reply {
                Ok(reply) => reply.quorum_ack_age_ms.map(Duration::from_millis),
                Err(error) => {
                    tracing::debug!(node_id = %node.config.id, peer = %leader.name, %error, "leader did not respond to the quorum probe; the forward will find out");
                    None
                }
            };
            *last = Some(LeaderQuorumProbe {
                leader: leader.name.clone(),
                at: Instant::now(),
                silence,
            });
            silence
        }
    };
    match silence {
        Some(silence) if silence > quorum_silence_limit(node) => {
            tracing::warn!(
                node_id = %node.config.id,
                peer = %leader.name,
                silent_ms = silence.as_millis() as u64,
                "write rejected: the leader hears from no majority"
            );
            Err(ApiError::NoQuorum {
                detail: format!(
                    "leader {} has not heard from a majority of the members for {} ms",
                    leader.name,
                    silence.as_millis()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// The leader's reply to the last ping of [`check_leader_quorum`].
#[derive(Debug)]
pub struct LeaderQuorumProbe {
    leader: NodeId,
    at: Instant,
    /// Time since a majority last acknowledged the leader, when the reply
    /// carried it.
    silence: Option<Duration>,
}

/// Returns the error of [`check_quorum`] once this node can no longer
/// reach a write quorum, and never before. Raced against work that comes
/// before a Raft write and takes long, such as copying an upload to its
/// replicas.
pub async fn quorum_lost(node: &Node) -> ApiError {
    let mut check = tokio::time::interval(LEADER_SILENCE_CHECK_INTERVAL);
    loop {
        check.tick().await;
        if let Err(error) = check_quorum(node).await {
            return error;
        }
    }
}

/// Pings every other voter and counts the ones that respond within
/// [`QUORUM_PROBE_TIMEOUT`], this node included when it is a voter.
/// Reuses a result younger than [`QUORUM_PROBE_REUSE`].
async fn probe_voters(node: &Node, metrics: &consensus::Metrics) -> QuorumProbe {
    let mut last = node.quorum_probe.lock().await;
    if let Some(probe) = *last {
        if probe.at.elapsed() < QUORUM_PROBE_REUSE {
            return probe;
        }
    }

    let membership = metrics.membership_config.membership();
    let voters: Vec<(RaftId, Member)> = membership
        .voter_ids()
        .filter_map(|id| membership.get_node(&id).map(|m| (id, m.clone())))
        .collect();
    let is_voter = voters.iter().any(|(id, _)| *id == node.raft_id);
    let mut probe = QuorumProbe {
        at: Instant::now(),
        reached: usize::from(is_voter),
        voters: voters.len(),
    };
    let mut pings: futures::stream::FuturesUnordered<_> = voters
        .iter()
        .filter(|(id, _)| *id != node.raft_id)
        .map(|(_, member)| responds_to_ping(node, member))
        .collect();
    // Stops at a majority, so a dead voter's ping timeout delays nothing.
    while probe.reached < probe.required() {
        let Some(responded) = pings.next().await else {
            break;
        };
        probe.reached += usize::from(responded);
    }
    probe.at = Instant::now();
    *last = Some(probe);
    probe
}

async fn responds_to_ping(node: &Node, member: &Member) -> bool {
    let pinged = async {
        let client = rpc_client(node, member).await.ok()?;
        client
            .ping(context_with_timeout(QUORUM_PROBE_TIMEOUT))
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(QUORUM_PROBE_TIMEOUT, pinged).await,
        Ok(Some(_))
    )
}

/// Waits until this node has applied the entry at `log_index`, so a read
/// on this node returns the write it just made. Gives up after
/// [`WRITE_TIMEOUT`]; the write is committed either way.
pub async fn wait_applied(node: &Node, log_index: u64) {
    let waited = node
        .raft
        .wait(Some(WRITE_TIMEOUT))
        .applied_index_at_least(Some(log_index), "read own write")
        .await;
    if let Err(error) = waited {
        tracing::warn!(log_index, %error, "write committed but not yet applied locally");
    }
}

/// Whether this node's own metrics report it as leader.
pub fn is_leader(node: &Node) -> bool {
    node.raft.metrics().borrow_watched().state == ServerState::Leader
}
