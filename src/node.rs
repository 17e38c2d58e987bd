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

use dispotify_transport::{Endpoint, TlsIdentity, TransportConfig};
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

/// How far the state machine may trail the local log for the node to count
/// as caught up.
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
    let transport_config = TransportConfig::default();
    let endpoint =
        Endpoint::bind(config.quic_addr, identity, transport_config).map_err(|source| {
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
    let network = Network::new(endpoint.clone(), discovery.clone());
    let raft_config = consensus::raft_config(&config.raft).map_err(|e| StartError::Raft {
        detail: e.to_string(),
    })?;
    let raft_id = consensus::raft_id_of(&config.id);
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
        catalog,
        blobs,
        endpoint,
        discovery,
        receiving: replication::Receiving::default(),
        upkeep,
        events,
        membership_changes: tokio::sync::Mutex::new(()),
        metrics: crate::metrics::Metrics::new(),
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
    let leader = node.raft.metrics().borrow().current_leader?;
    let member = consensus::members_of(&node.raft).get(&leader)?.clone();
    Some((leader, member))
}

/// Whether this node is a member, has a known leader, has applied its log
/// and has reconciled its blobs with the catalog once.
pub fn is_ready(node: &Node) -> bool {
    is_caught_up(node) && node.upkeep.is_reconciled()
}

/// Tells whether this node is a member, has a known leader and has applied
/// its log.
pub fn is_caught_up(node: &Node) -> bool {
    let metrics = node.raft.metrics().borrow().clone();
    let joined = metrics
        .membership_config
        .membership()
        .get_node(&node.raft_id)
        .is_some();
    let applied = metrics.last_applied.map_or(0, |l| l.index);
    let logged = metrics.last_log_index.unwrap_or(0);
    joined
        && metrics.current_leader.is_some()
        && logged.saturating_sub(applied) <= READY_MAX_APPLY_LAG
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
/// [`MIN_QUORUM_SILENCE`]) is cut off from it and refuses at once rather
/// than after [`WRITE_TIMEOUT`].
pub async fn propose_local(node: &Node, mut request: Request) -> Result<WriteReceipt, RemoteError> {
    let quorum_silence_ms = node.raft.metrics().borrow().millis_since_quorum_ack;
    let limit = (node.config.raft.election_timeout_max * 2).max(MIN_QUORUM_SILENCE);
    if let Some(silence_ms) = quorum_silence_ms {
        if u128::from(silence_ms) > limit.as_millis() {
            return Err(RemoteError::NoQuorum {
                detail: format!(
                    "the leader has not heard from a majority of the members for {silence_ms} ms"
                ),
            });
        }
    }
    request.at_ms = now_ms();
    let written = tokio::time::timeout(WRITE_TIMEOUT, node.raft.client_write(request)).await;
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

/// Commits `command` through Raft from any node: locally on the leader,
/// otherwise forwarded to the leader, retrying while leadership settles.
pub async fn write(node: &Arc<Node>, command: Command) -> Result<WriteReceipt, ApiError> {
    let started = Instant::now();
    let request = Request { at_ms: 0, command };
    let mut last_error = String::from("no leader elected");
    for attempt in 1..=crate::limits::MAX_FORWARD_ATTEMPTS {
        if started.elapsed() > WRITE_TIMEOUT {
            break;
        }
        let Some((leader_id, member)) = leader(node) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let proposed_at = Instant::now();
        let result = if leader_id == node.raft_id {
            propose_local(node, request.clone()).await
        } else {
            forward(node, &member, request.clone()).await
        };
        match result {
            Ok(receipt) => {
                node.metrics
                    .commit_seconds
                    .observe(proposed_at.elapsed().as_secs_f64());
                return Ok(receipt);
            }
            Err(RemoteError::NoQuorum { detail }) => return Err(ApiError::NoQuorum { detail }),
            Err(error) => {
                tracing::debug!(attempt, leader = %member.name, %error, "write not accepted, retrying");
                last_error = error.to_string();
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
        }
    }
    tracing::warn!(error = %last_error, "write failed: no leader accepted it");
    Err(ApiError::NoQuorum { detail: last_error })
}

async fn forward(
    node: &Node,
    leader: &Member,
    request: Request,
) -> Result<WriteReceipt, RemoteError> {
    let client = rpc_client(node, leader).await?;
    match client
        .propose(context_with_timeout(WRITE_TIMEOUT), request)
        .await
    {
        Ok(result) => result,
        Err(e) => Err(RemoteError::Failed {
            node_id: leader.name.clone(),
            detail: e.to_string(),
        }),
    }
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
    node.raft.metrics().borrow().state == ServerState::Leader
}
