//! Repair and rebalancing, scheduled by the leader only.
//!
//! Every [`RepairSettings::interval`](crate::config::RepairSettings) the
//! leader walks the catalog and plans each file with [`plan_file`]: the
//! nodes that should hold it are the first R members clockwise on the ring,
//! skipping members down for longer than the grace period. A node that
//! should hold the file but has no good copy (never received one, reported
//! it corrupt or missing, or just joined) gets a copy from a node that has
//! one. Once every such node holds a good copy, the replica set is
//! committed as exactly those nodes and any extra copy is deleted, last.
//!
//! Each file's repair runs under the lock `repair/<file_id>` taken through
//! Raft, and the `SetReplicas` it commits carries the lock's token, so a
//! repair that outlived its lock, or a leader that lost leadership midway,
//! cannot overwrite a newer decision.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::copy::request_copy;
use crate::catalog::{ReplicaSet, MAX_REPLICA_SETS_PAGE_LIMIT};
use crate::consensus::{self, Member};
use crate::model::{Command, Fence, FileId, NodeId, WriteOutcome};
use crate::node::{self, Node};
use crate::placement::{Ring, DEFAULT_VNODES_PER_NODE};
use crate::rpc::RemoteError;

/// A file committed less than this long ago, or less than the repair grace
/// period if that is shorter, is left alone unless a fault was reported:
/// its upload may still be pushing the copies beyond the write quorum.
const YOUNG_FILE: Duration = Duration::from_secs(30);

/// Lock time for a repair on top of the copy time at the repair bandwidth.
const LOCK_TTL_BASE: Duration = Duration::from_secs(60);

/// Timeout of the RPC that drops an extra copy.
const DROP_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause after a file's first failed repair attempt, doubled after each
/// further failure up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Maximum pause between two attempts at one file. It keeps a file that
/// cannot be repaired (its target's disk is full, a peer is cut off) from
/// taking a repair slot at every scan, and a file whose cause of failure
/// passed waits at most this long.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Consecutive failed attempts at one file after which each further
/// failure is logged at error: by then, at [`MAX_RETRY_DELAY`], the file
/// has been under-replicated for minutes and an operator should look.
const ATTEMPTS_BEFORE_ERROR: u32 = 10;

/// Maximum time one scan keeps starting the jobs it planned before the
/// catalog is scanned again. A job never starts from a plan much older than
/// the committed state, and a fault reported meanwhile waits at most this
/// long for the scan that puts its file first.
const MAX_DISPATCH_TIME: Duration = Duration::from_secs(10);

/// The action one file needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every node that should hold the file holds a good copy, and the
    /// replica set lists exactly them, in any order.
    Healthy,
    /// `target` should hold a copy and has none; `sources` have good ones,
    /// the preferred first.
    Copy {
        target: NodeId,
        sources: Vec<NodeId>,
    },
    /// Every node that should hold the file does; commit `replicas` as the
    /// set and delete the copies of `drop`.
    Shrink {
        replicas: Vec<NodeId>,
        drop: Vec<NodeId>,
    },
    /// No reachable node holds a good copy: nothing to copy from until one
    /// comes back.
    Unavailable,
}

/// Plans one file. `ring_order` is every member clockwise from the file's
/// ring position; `gone` are members down past the grace period;
/// `draining` are members being decommissioned, which may still send their
/// copies but should hold none; `faulty` are the nodes whose copy of this
/// file was reported bad.
pub fn plan_file(
    replicas: &[NodeId],
    ring_order: &[NodeId],
    replication_factor: usize,
    gone: &HashSet<NodeId>,
    draining: &HashSet<NodeId>,
    faulty: &HashSet<NodeId>,
) -> Plan {
    let is_member = |n: &NodeId| ring_order.contains(n);
    let live_good: Vec<NodeId> = replicas
        .iter()
        .filter(|n| is_member(n) && !faulty.contains(*n) && !gone.contains(*n))
        .cloned()
        .collect();
    if live_good.is_empty() {
        return Plan::Unavailable;
    }
    let desired: Vec<NodeId> = ring_order
        .iter()
        .filter(|n| !gone.contains(*n) && !draining.contains(*n))
        .take(replication_factor)
        .cloned()
        .collect();
    if let Some(target) = desired.iter().find(|n| !live_good.contains(n)) {
        let mut sources = live_good;
        // Prefer a source that keeps its copy, then ring order.
        sources.sort_by_key(|n| (!desired.contains(n), ring_order.iter().position(|m| m == n)));
        return Plan::Copy {
            target: target.clone(),
            sources,
        };
    }
    let listed: HashSet<&NodeId> = replicas.iter().collect();
    if listed != desired.iter().collect::<HashSet<_>>() {
        let drop = replicas
            .iter()
            .filter(|n| !desired.contains(n))
            .cloned()
            .collect();
        return Plan::Shrink {
            replicas: desired,
            drop,
        };
    }
    Plan::Healthy
}

/// A repair the leader is running, as shown in `/cluster/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRepair {
    pub file_id: FileId,
    pub from: NodeId,
    pub to: NodeId,
    pub bytes_total: u64,
    /// Bytes the sender has handed over so far, from its last report;
    /// null until it has reported.
    pub bytes_done: Option<u64>,
    pub started_at_ms: i64,
}

/// The repair scheduler's state, shown in `/cluster/status`. Only the
/// leader's is filled in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStatus {
    /// Files that need a copy or a replica set change, from the last scan.
    pub queue_length: u64,
    /// Files with fewer good, reachable copies than the replication factor.
    pub under_replicated: u64,
    /// Files with no good copy on a reachable node.
    pub unavailable: u64,
    pub active: Vec<ActiveRepair>,
    pub files_repaired_total: u64,
    pub bytes_moved_total: u64,
    pub last_scan_at_ms: Option<i64>,
}

/// Delay before the next attempt at a file whose last `failures`
/// consecutive attempts failed.
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_DELAY)
}

/// Failed attempts at one file's repair since its last success.
#[derive(Clone, Copy, Debug)]
struct Retry {
    failures: u32,
    not_before: Instant,
}

/// Record of the files with a job running and of those waiting for
/// their next attempt. Only the leader fills it in.
#[derive(Debug, Default)]
struct Scheduler {
    running: HashSet<FileId>,
    retries: HashMap<FileId, Retry>,
}

impl Scheduler {
    /// Marks `file_id` running and returns its attempt number, unless a
    /// job for it is running or it waits for its retry delay.
    fn start(&mut self, file_id: &str, now: Instant) -> Option<u32> {
        let retry = self.retries.get(file_id);
        if retry.is_some_and(|r| now < r.not_before) || self.running.contains(file_id) {
            return None;
        }
        self.running.insert(file_id.to_string());
        Some(retry.map_or(1, |r| r.failures + 1))
    }

    /// Records the end of a job and returns, after a failure, the count of
    /// consecutive failures and the delay before the next attempt.
    fn finish(&mut self, file_id: &str, failed: bool, now: Instant) -> Option<(u32, Duration)> {
        self.running.remove(file_id);
        if !failed {
            self.retries.remove(file_id);
            return None;
        }
        let failures = self.retries.get(file_id).map_or(0, |r| r.failures) + 1;
        let delay = retry_delay(failures);
        let retry = Retry {
            failures,
            not_before: now + delay,
        };
        self.retries.insert(file_id.to_string(), retry);
        Some((failures, delay))
    }

    /// Forgets the failures of files that no longer need a repair.
    fn keep_retries_of(&mut self, needed: &HashSet<&str>) {
        self.retries
            .retain(|file_id, _| needed.contains(file_id.as_str()));
    }
}

type SharedScheduler = Arc<Mutex<Scheduler>>;

fn lock_scheduler(scheduler: &Mutex<Scheduler>) -> std::sync::MutexGuard<'_, Scheduler> {
    // Each critical section is one map or set update.
    scheduler
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the leader's repair scans until shutdown. On a follower it only
/// clears the status and the retry state, so a former leader shows no
/// stale queue.
pub async fn repair_worker(node: Arc<Node>) {
    let permits = Arc::new(Semaphore::new(node.config.repair.concurrency));
    let scheduler: SharedScheduler = Arc::default();
    let mut tick = tokio::time::interval(node.config.repair.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !node::is_leader(&node) || !node::is_ready(&node) {
            lock_scheduler(&scheduler).retries.clear();
            node.upkeep.update_repair(|status| {
                status.queue_length = 0;
                status.under_replicated = 0;
                status.unavailable = 0;
            });
            continue;
        }
        match scan(&node).await {
            Ok((jobs, members)) => dispatch(&node, jobs, &members, &permits, &scheduler).await,
            Err(error) => {
                tracing::warn!(node_id = %node.config.id, %error, "repair scan failed");
            }
        }
    }
}

/// One job found by a scan.
struct Job {
    set: ReplicaSet,
    plan: Plan,
    /// Good copies on reachable members when the scan planned the job.
    good_copies: usize,
}

/// Plans every file of the catalog, publishes the counts in the repair
/// status, and returns the jobs with the members they may involve.
async fn scan(
    node: &Arc<Node>,
) -> Result<(Vec<Job>, BTreeMap<NodeId, Member>), crate::catalog::CatalogError> {
    let members = consensus::members_of(&node.raft);
    let names: Vec<NodeId> = members.values().map(|m| m.name.clone()).collect();
    let ring = Ring::new(names.iter().cloned(), DEFAULT_VNODES_PER_NODE);
    let grace = node.config.repair.grace;
    let gone: HashSet<NodeId> = names
        .iter()
        .filter(|n| **n != node.config.id)
        .filter(|n| node.discovery.down_for(n).is_some_and(|d| d >= grace))
        .cloned()
        .collect();
    let mut faults: HashMap<FileId, HashSet<NodeId>> = HashMap::new();
    for fault in node.catalog.all_replica_faults().await? {
        faults
            .entry(fault.file_id)
            .or_default()
            .insert(fault.node_id);
    }
    let draining: HashSet<NodeId> = node
        .catalog
        .draining_nodes()
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let placeable = names.iter().filter(|n| !draining.contains(*n)).count();
    let replication_factor = node.config.replication_factor.min(placeable).max(1);
    let young_after_ms = node::now_ms() - YOUNG_FILE.min(grace).as_millis() as i64;
    let no_faults = HashSet::new();

    let mut jobs = Vec::new();
    let (mut under_replicated, mut unavailable) = (0_u64, 0_u64);
    let mut after: Option<FileId> = None;
    loop {
        let page = node
            .catalog
            .replica_sets(after.as_deref(), MAX_REPLICA_SETS_PAGE_LIMIT)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.file_id.clone());
        for set in page {
            let ring_order = ring.replica_set(&set.file_id, names.len());
            let faulty = faults.get(&set.file_id).unwrap_or(&no_faults);
            let plan = plan_file(
                &set.replicas,
                &ring_order,
                replication_factor,
                &gone,
                &draining,
                faulty,
            );
            let good_copies = set
                .replicas
                .iter()
                .filter(|n| !faulty.contains(*n) && !gone.contains(*n) && names.contains(n))
                .count();
            if good_copies < replication_factor {
                under_replicated += 1;
            }
            match plan {
                Plan::Healthy => {}
                Plan::Unavailable => unavailable += 1,
                // A young file's upload may still be adding copies; a
                // reported fault is acted on at once.
                Plan::Copy { .. } | Plan::Shrink { .. }
                    if set.added_at_ms > young_after_ms && faulty.is_empty() => {}
                plan => jobs.push(Job {
                    set,
                    plan,
                    good_copies,
                }),
            }
        }
    }
    // The files closest to being lost go first, so a file down to one good
    // copy does not wait behind a queue of files that only need a shrink.
    jobs.sort_by_key(|job| (job.good_copies, !matches!(job.plan, Plan::Copy { .. })));
    node.metrics.repair_queue.set(jobs.len() as i64);
    node.metrics.under_replicated.set(under_replicated as i64);
    node.upkeep.update_repair(|status| {
        status.queue_length = jobs.len() as u64;
        status.under_replicated = under_replicated;
        status.unavailable = unavailable;
        status.last_scan_at_ms = Some(node::now_ms());
    });
    if unavailable > 0 {
        tracing::warn!(node_id = %node.config.id, files = unavailable, "files have no reachable good copy");
    }

    for name in &draining {
        remove_if_drained(node, name).await;
    }

    let by_name: BTreeMap<NodeId, Member> =
        members.into_values().map(|m| (m.name.clone(), m)).collect();
    Ok((jobs, by_name))
}

/// Starts the jobs of one scan as repair slots free up, skipping files
/// with a job running or a retry delay pending. It stops once every job
/// started, this node lost leadership, a job's Raft write failed, or
/// [`MAX_DISPATCH_TIME`] passed.
async fn dispatch(
    node: &Arc<Node>,
    jobs: Vec<Job>,
    members: &BTreeMap<NodeId, Member>,
    permits: &Arc<Semaphore>,
    scheduler: &SharedScheduler,
) {
    let needed: HashSet<&str> = jobs.iter().map(|j| j.set.file_id.as_str()).collect();
    lock_scheduler(scheduler).keep_retries_of(&needed);
    drop(needed);

    let deadline = Instant::now() + MAX_DISPATCH_TIME;
    let writes_failing = Arc::new(AtomicBool::new(false));
    for job in jobs {
        let permit = tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(deadline.into()) => return,
            permit = permits.clone().acquire_owned() => permit,
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { return };
        // A failed Raft write (no quorum, lost leadership) fails every other
        // job the same way, so the rest wait for the next scan.
        if !node::is_leader(node) || writes_failing.load(Ordering::Acquire) {
            return;
        }
        let file_id = job.set.file_id.clone();
        let Some(attempt) = lock_scheduler(scheduler).start(&file_id, Instant::now()) else {
            continue;
        };
        let node = node.clone();
        let members = members.clone();
        let scheduler = scheduler.clone();
        let writes_failing = writes_failing.clone();
        tokio::spawn(async move {
            let plan = job.plan.clone();
            let result = run_job(&node, job, &members).await;
            if matches!(result, Err(RepairError::Write(_))) {
                writes_failing.store(true, Ordering::Release);
            }
            let failed = matches!(result, Err(ref error) if error.is_failure());
            let retry = lock_scheduler(&scheduler).finish(&file_id, failed, Instant::now());
            drop(permit);
            match (result, retry) {
                (Err(error), Some((failures, retry_in))) => {
                    log_failure(&node, &file_id, &plan, failures, retry_in, &error);
                }
                (Err(error), None) => {
                    tracing::debug!(file_id = %file_id, plan = ?plan, %error, "repair skipped");
                }
                (Ok(()), _) if attempt > 1 => {
                    tracing::info!(file_id = %file_id, attempt, "repair succeeded after retries");
                }
                (Ok(()), _) => {}
            }
        });
    }
}

/// Logs one failed repair attempt: at warn, and at error once the file has
/// failed [`ATTEMPTS_BEFORE_ERROR`] times in a row.
fn log_failure(
    node: &Node,
    file_id: &str,
    plan: &Plan,
    failures: u32,
    retry_in: Duration,
    error: &RepairError,
) {
    node.metrics.repair_failures.inc();
    let node_id = node.config.id.as_str();
    let (peer, sources) = match plan {
        Plan::Copy { target, sources } => (target.as_str(), sources.join(",")),
        Plan::Shrink { drop, .. } => (drop.first().map_or("", String::as_str), String::new()),
        Plan::Healthy | Plan::Unavailable => ("", String::new()),
    };
    if failures >= ATTEMPTS_BEFORE_ERROR {
        tracing::error!(node_id, file_id, peer, sources, failures, ?retry_in, %error, "repair keeps failing; retrying");
    } else {
        tracing::warn!(node_id, file_id, peer, sources, failures, ?retry_in, %error, "repair failed; retrying");
    }
}

/// Removes a draining member from the Raft membership once no track lists
/// it, then ends its draining.
async fn remove_if_drained(node: &Arc<Node>, name: &str) {
    match node.catalog.tracks_listing(name).await {
        Ok(0) => {}
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(peer = name, %error, "cannot count the tracks of a draining node");
            return;
        }
    }
    let raft_id = consensus::raft_id_of(name);
    if consensus::members_of(&node.raft).contains_key(&raft_id) {
        let _one_change_at_a_time = node.membership_changes.lock().await;
        if let Err(error) = consensus::remove_member(&node.raft, raft_id).await {
            tracing::warn!(peer = name, %error, "cannot remove drained node from the membership; retrying");
            return;
        }
        tracing::info!(node_id = %node.config.id, peer = name, "decommissioned node removed from the cluster");
    }
    let command = Command::SetDraining {
        node_id: name.to_string(),
        draining: false,
    };
    if let Err(error) = node::write(node, command).await {
        tracing::warn!(peer = name, %error, "cannot clear the draining mark; retrying");
    }
}

#[derive(Debug, thiserror::Error)]
enum RepairError {
    #[error("lock {lock} is held by {owner}")]
    LockHeld { lock: String, owner: String },
    #[error("lock {lock} was lost before the commit")]
    LockLost { lock: String },
    #[error("no source could copy the file: {detail}")]
    NoSource { detail: String },
    #[error("{0}")]
    Write(#[from] crate::api::ApiError),
    #[error("node {name} is not a member")]
    UnknownNode { name: NodeId },
    #[error("the replica set changed during the repair")]
    Changed,
    #[error("catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
}

impl RepairError {
    /// Tells whether the attempt failed, as opposed to finding that another
    /// repair has locked the file or that its replica set moved on, which the
    /// next scan plans afresh.
    fn is_failure(&self) -> bool {
        !matches!(self, RepairError::LockHeld { .. } | RepairError::Changed)
    }
}

async fn run_job(
    node: &Arc<Node>,
    job: Job,
    members: &BTreeMap<NodeId, Member>,
) -> Result<(), RepairError> {
    let lock = format!("repair/{}", job.set.file_id);
    let copy_time = Duration::from_secs_f64(
        job.set.size_bytes as f64 / node.config.repair.bytes_per_sec as f64,
    );
    let ttl = LOCK_TTL_BASE + copy_time * 2;
    let fence = acquire(node, &lock, ttl).await?;
    let outcome = match &job.plan {
        Plan::Copy { target, sources } => {
            copy(node, &job.set, target, sources, members, &fence).await
        }
        Plan::Shrink { replicas, drop } => {
            shrink(node, &job.set, replicas, drop, members, &fence).await
        }
        Plan::Healthy | Plan::Unavailable => Ok(()),
    };
    release(node, &fence).await;
    outcome
}

async fn acquire(node: &Arc<Node>, lock: &str, ttl: Duration) -> Result<Fence, RepairError> {
    let command = Command::AcquireLock {
        name: lock.to_string(),
        owner: node.config.id.clone(),
        ttl_ms: ttl.as_millis() as u64,
    };
    match node::write(node, command).await?.outcome {
        WriteOutcome::LockGranted { token, .. } => Ok(Fence {
            lock: lock.to_string(),
            token,
        }),
        WriteOutcome::LockHeld { owner, .. } => Err(RepairError::LockHeld {
            lock: lock.to_string(),
            owner,
        }),
        _ => Err(RepairError::LockLost {
            lock: lock.to_string(),
        }),
    }
}

async fn release(node: &Arc<Node>, fence: &Fence) {
    let command = Command::ReleaseLock {
        name: fence.lock.clone(),
        owner: node.config.id.clone(),
        token: fence.token,
    };
    if let Err(error) = node::write(node, command).await {
        tracing::debug!(lock = %fence.lock, %error, "cannot release repair lock; it expires");
    }
}

/// Reads the file's committed replica set and checks it is still the one
/// the plan was made from.
async fn current_replicas(node: &Node, set: &ReplicaSet) -> Result<Vec<NodeId>, RepairError> {
    let track = node
        .catalog
        .track(&set.file_id)
        .await?
        .ok_or(RepairError::Changed)?;
    if track.replicas != set.replicas {
        return Err(RepairError::Changed);
    }
    Ok(track.replicas)
}

async fn copy(
    node: &Arc<Node>,
    set: &ReplicaSet,
    target: &NodeId,
    sources: &[NodeId],
    members: &BTreeMap<NodeId, Member>,
    fence: &Fence,
) -> Result<(), RepairError> {
    let member = |name: &NodeId| {
        members
            .get(name)
            .ok_or_else(|| RepairError::UnknownNode { name: name.clone() })
    };
    let target_member = member(target)?;
    let timeout = LOCK_TTL_BASE
        + Duration::from_secs_f64(set.size_bytes as f64 / node.config.repair.bytes_per_sec as f64);
    let mut failures = Vec::new();
    let mut copied_from = None;
    for source in sources {
        let source_member = member(source)?;
        let started_at_ms = node::now_ms();
        node.upkeep.update_repair(|status| {
            status.active.push(ActiveRepair {
                file_id: set.file_id.clone(),
                from: source.clone(),
                to: target.clone(),
                bytes_total: set.size_bytes,
                bytes_done: None,
                started_at_ms,
            })
        });
        let copied = request_copy(node, source_member, &set.file_id, target_member, timeout).await;
        node.upkeep.update_repair(|status| {
            status
                .active
                .retain(|a| !(a.file_id == set.file_id && a.started_at_ms == started_at_ms))
        });
        match copied {
            Ok(()) => {
                copied_from = Some(source);
                break;
            }
            Err(error) => {
                tracing::debug!(file_id = %set.file_id, peer = %source, target = %target, %error, "repair copy failed, trying the next source");
                failures.push(format!("{source}: {error}"));
            }
        }
    }
    let Some(source) = copied_from else {
        return Err(RepairError::NoSource {
            detail: failures.join("; "),
        });
    };

    let mut replicas = current_replicas(node, set).await?;
    if !replicas.contains(target) {
        replicas.push(target.clone());
    }
    let command = Command::SetReplicas {
        file_id: set.file_id.clone(),
        replicas: replicas.clone(),
        verified: vec![target.clone()],
        fence: Some(fence.clone()),
    };
    if let WriteOutcome::LockNotHeld { lock } = node::write(node, command).await?.outcome {
        return Err(RepairError::LockLost { lock });
    }
    node.metrics.repaired_files.inc();
    node.upkeep.update_repair(|status| {
        status.files_repaired_total += 1;
        status.bytes_moved_total += set.size_bytes;
    });
    tracing::info!(node_id = %node.config.id, file_id = %set.file_id, peer = %source, target = %target, replicas = ?replicas, "repaired copy committed");
    Ok(())
}

async fn shrink(
    node: &Arc<Node>,
    set: &ReplicaSet,
    replicas: &[NodeId],
    drop: &[NodeId],
    members: &BTreeMap<NodeId, Member>,
    fence: &Fence,
) -> Result<(), RepairError> {
    current_replicas(node, set).await?;
    let command = Command::SetReplicas {
        file_id: set.file_id.clone(),
        replicas: replicas.to_vec(),
        verified: Vec::new(),
        fence: Some(fence.clone()),
    };
    let receipt = node::write(node, command).await?;
    if let WriteOutcome::LockNotHeld { lock } = receipt.outcome {
        return Err(RepairError::LockLost { lock });
    }
    tracing::info!(node_id = %node.config.id, file_id = %set.file_id, replicas = ?replicas, dropped = ?drop, "replica set committed");

    // The copies outside the new set go last, once the set without them is
    // committed. A node that is down drops its copy as an orphan later.
    for name in drop {
        let Some(member) = members.get(name) else {
            continue;
        };
        if !node.discovery.is_reachable(name) {
            continue;
        }
        let dropped = drop_remote(node, member, &set.file_id, receipt.log_index).await;
        if let Err(error) = dropped {
            tracing::info!(file_id = %set.file_id, peer = %name, %error, "extra copy not dropped; it is collected as an orphan");
        }
    }
    Ok(())
}

async fn drop_remote(
    node: &Arc<Node>,
    member: &Member,
    file_id: &str,
    log_index: u64,
) -> Result<bool, RemoteError> {
    if member.name == node.config.id {
        return super::copy::drop_replica(node, file_id, log_index).await;
    }
    let client = node::rpc_client(node, member).await?;
    client
        .drop_replica(
            node::context_with_timeout(DROP_TIMEOUT),
            file_id.to_string(),
            log_index,
        )
        .await
        .map_err(|e| RemoteError::Failed {
            node_id: member.name.clone(),
            detail: e.to_string(),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn set(names: &[&str]) -> HashSet<NodeId> {
        names.iter().map(|n| n.to_string()).collect()
    }

    const RING: [&str; 5] = ["b", "d", "a", "e", "c"];

    #[test]
    fn placed_file_is_healthy() {
        let plan = plan_file(
            &ids(&["b", "d", "a"]),
            &ids(&RING),
            3,
            &set(&[]),
            &set(&[]),
            &set(&[]),
        );
        assert_eq!(plan, Plan::Healthy);
    }

    #[test]
    fn missing_third_copy_is_copied_from_a_holder() {
        let plan = plan_file(
            &ids(&["b", "d"]),
            &ids(&RING),
            3,
            &set(&[]),
            &set(&[]),
            &set(&[]),
        );
        assert_eq!(
            plan,
            Plan::Copy {
                target: "a".into(),
                sources: ids(&["b", "d"])
            }
        );
    }

    #[test]
    fn gone_node_replaced_by_next_on_ring() {
        let plan = plan_file(
            &ids(&["b", "d", "a"]),
            &ids(&RING),
            3,
            &set(&["d"]),
            &set(&[]),
            &set(&[]),
        );
        assert_eq!(
            plan,
            Plan::Copy {
                target: "e".into(),
                sources: ids(&["b", "a"])
            }
        );
        // After the copy, the set is shrunk to the nodes that should hold it.
        let plan = plan_file(
            &ids(&["b", "d", "a", "e"]),
            &ids(&RING),
            3,
            &set(&["d"]),
            &set(&[]),
            &set(&[]),
        );
        assert_eq!(
            plan,
            Plan::Shrink {
                replicas: ids(&["b", "a", "e"]),
                drop: ids(&["d"])
            }
        );
    }

    #[test]
    fn corrupt_copy_is_replaced_on_the_same_node() {
        let plan = plan_file(
            &ids(&["b", "d", "a"]),
            &ids(&RING),
            3,
            &set(&[]),
            &set(&[]),
            &set(&["d"]),
        );
        assert_eq!(
            plan,
            Plan::Copy {
                target: "d".into(),
                sources: ids(&["b", "a"])
            }
        );
    }

    #[test]
    fn returning_node_replaces_stand_in() {
        // "d" came back after "e" stood in for it: "d" holds no copy in the
        // committed set, so it gets one first, then "e" is dropped.
        let plan = plan_file(
            &ids(&["b", "a", "e"]),
            &ids(&RING),
            3,
            &set(&[]),
            &set(&[]),
            &set(&[]),
        );
        assert_eq!(
            plan,
            Plan::Copy {
                target: "d".into(),
                sources: ids(&["b", "a", "e"])
            }
        );
        let plan = plan_file(
            &ids(&["b", "a", "e", "d"]),
            &ids(&RING),
            3,
            &set(&[]),
            &set(&[]),
            &set(&[]),
        );
        assert_eq!(
            plan,
            Plan::Shrink {
                replicas: ids(&["b", "d", "a"]),
                drop: ids(&["e"])
            }
        );
    }

    #[test]
    fn no_good_reachable_copy_is_unavailable() {
        let plan = plan_file(
            &ids(&["b", "d"]),
            &ids(&RING),
            3,
            &set(&["b"]),
            &set(&[]),
            &set(&["d"]),
        );
        assert_eq!(plan, Plan::Unavailable);
    }

    #[test]
    fn draining_member_hands_over_copy() {
        let plan = plan_file(
            &ids(&["b", "d", "a"]),
            &ids(&RING),
            3,
            &set(&[]),
            &set(&["d"]),
            &set(&[]),
        );
        assert_eq!(
            plan,
            Plan::Copy {
                target: "e".into(),
                sources: ids(&["b", "a", "d"])
            }
        );
        let plan = plan_file(
            &ids(&["b", "d", "a", "e"]),
            &ids(&RING),
            3,
            &set(&[]),
            &set(&["d"]),
            &set(&[]),
        );
        assert_eq!(
            plan,
            Plan::Shrink {
                replicas: ids(&["b", "a", "e"]),
                drop: ids(&["d"])
            }
        );
    }

    #[test]
    fn departed_member_is_dropped_from_the_set() {
        // "x" left the cluster; the ring no longer has it.
        let plan = plan_file(
            &ids(&["b", "x", "d", "a"]),
            &ids(&RING),
            3,
            &set(&[]),
            &set(&[]),
            &set(&[]),
        );
        assert_eq!(
            plan,
            Plan::Shrink {
                replicas: ids(&["b", "d", "a"]),
                drop: ids(&["x"])
            }
        );
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        assert_eq!(retry_delay(1), FIRST_RETRY_DELAY);
        assert_eq!(retry_delay(2), FIRST_RETRY_DELAY * 2);
        assert_eq!(retry_delay(3), FIRST_RETRY_DELAY * 4);
        assert_eq!(retry_delay(40), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn scheduler_runs_one_job_per_file() {
        let mut scheduler = Scheduler::default();
        let now = Instant::now();
        assert_eq!(scheduler.start("f", now), Some(1));
        assert_eq!(scheduler.start("f", now), None);
        assert_eq!(scheduler.start("g", now), Some(1));
        assert_eq!(scheduler.finish("f", false, now), None);
        assert_eq!(scheduler.start("f", now), Some(1));
    }

    #[test]
    fn failed_file_waits_then_is_retried() {
        let mut scheduler = Scheduler::default();
        let now = Instant::now();
        scheduler.start("f", now);
        assert_eq!(
            scheduler.finish("f", true, now),
            Some((1, FIRST_RETRY_DELAY))
        );
        assert_eq!(scheduler.start("f", now), None, "started before its delay");
        let later = now + FIRST_RETRY_DELAY;
        assert_eq!(scheduler.start("f", later), Some(2));
        assert_eq!(
            scheduler.finish("f", true, later),
            Some((2, FIRST_RETRY_DELAY * 2))
        );
        let much_later = later + FIRST_RETRY_DELAY * 2;
        assert_eq!(scheduler.start("f", much_later), Some(3));
        assert_eq!(scheduler.finish("f", false, much_later), None);
        assert_eq!(scheduler.start("f", much_later), Some(1));
    }

    #[test]
    fn healthy_files_lose_their_retry_state() {
        let mut scheduler = Scheduler::default();
        let now = Instant::now();
        for file_id in ["f", "g"] {
            scheduler.start(file_id, now);
            scheduler.finish(file_id, true, now);
        }
        scheduler.keep_retries_of(&HashSet::from(["g"]));
        assert_eq!(scheduler.start("f", now), Some(1));
        assert_eq!(scheduler.start("g", now), None);
    }
}
