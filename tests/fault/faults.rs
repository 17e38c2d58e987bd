//! The faults a run injects, what each one recorded, and the damage done
//! to files of a stopped node: blob bit flips, truncation and deletion, and
//! bit flips in the tail of the Raft log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;

use crate::workload::sha256_hex;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL a random node, restart it after a while.
    KillRandom,
    /// SIGKILL the leader, restart it after a new leader took writes.
    KillLeader,
    /// SIGKILL every node while an upload is being replicated.
    KillAllMidUpload,
    /// SIGSTOP the leader past the election timeout, then SIGCONT.
    PauseLeader,
    /// SIGSTOP the node a lock was taken through past the lock's time to
    /// live, then SIGCONT.
    PauseLockHolder,
    /// Partition with the leader on the minority side.
    PartitionLeaderMinority,
    /// Partition with the leader on the majority side.
    PartitionLeaderMajority,
    /// Drop the datagrams of one direction between two nodes.
    PartitionOneWay,
    /// Cut one random node off from all others.
    IsolateNode,
    /// Flip a bit in, truncate or delete a blob of a stopped node.
    CorruptBlob,
    /// Flip bits in the tail of a stopped node's Raft log.
    CorruptRaftLog,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::KillRandom,
        FaultKind::KillLeader,
        FaultKind::KillAllMidUpload,
        FaultKind::PauseLeader,
        FaultKind::PauseLockHolder,
        FaultKind::PartitionLeaderMinority,
        FaultKind::PartitionLeaderMajority,
        FaultKind::PartitionOneWay,
        FaultKind::IsolateNode,
        FaultKind::CorruptBlob,
        FaultKind::CorruptRaftLog,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FaultKind::KillRandom => "kill random node",
            FaultKind::KillLeader => "kill leader",
            FaultKind::KillAllMidUpload => "kill all mid-upload",
            FaultKind::PauseLeader => "pause leader",
            FaultKind::PauseLockHolder => "pause lock holder",
            FaultKind::PartitionLeaderMinority => "partition, leader in minority",
            FaultKind::PartitionLeaderMajority => "partition, leader in majority",
            FaultKind::PartitionOneWay => "one-way partition",
            FaultKind::IsolateNode => "isolate one node",
            FaultKind::CorruptBlob => "corrupt blob",
            FaultKind::CorruptRaftLog => "corrupt raft log tail",
        }
    }
}

/// Time from losing the leader to a new leader.
#[derive(Clone, Copy, Debug)]
pub struct Failover {
    /// Until a node of the majority reports a new leader.
    pub election: Option<Duration>,
    /// Until an upload started after the loss is acknowledged.
    pub write: Option<Duration>,
}

/// What one injected fault did.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub index: usize,
    pub kind: FaultKind,
    pub detail: String,
    pub injected_secs: f64,
    pub healed_secs: f64,
    /// From healing until every node agrees and a write succeeded.
    pub recovery: Option<Duration>,
    pub failover: Option<Failover>,
}

/// How a blob was damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    FlipBit { offset: u64, bit: u8 },
    Truncate { to_bytes: u64 },
    Delete,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::FlipBit { offset, bit } => write!(f, "bit {bit} of byte {offset} flipped"),
            Damage::Truncate { to_bytes } => write!(f, "truncated to {to_bytes} bytes"),
            Damage::Delete => write!(f, "deleted"),
        }
    }
}

/// Damages the blob at `path` the way `rng` picks. Returns the damage and
/// the SHA-256 of what is left on disk, `None` when nothing is.
pub fn damage_blob(path: &Path, rng: &mut StdRng) -> Result<(Damage, Option<String>)> {
    let mut bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let damage = match rng.gen_range(0..3) {
        0 => Damage::FlipBit {
            offset: rng.gen_range(0..bytes.len() as u64),
            bit: rng.gen_range(0..8),
        },
        1 => Damage::Truncate {
            to_bytes: rng.gen_range(0..bytes.len() as u64),
        },
        _ => Damage::Delete,
    };
    match damage {
        Damage::FlipBit { offset, bit } => {
            bytes[offset as usize] ^= 1 << bit;
            std::fs::write(path, &bytes)?;
            Ok((damage, Some(sha256_hex(&bytes))))
        }
        Damage::Truncate { to_bytes } => {
            bytes.truncate(to_bytes as usize);
            std::fs::write(path, &bytes)?;
            Ok((damage, Some(sha256_hex(&bytes))))
        }
        Damage::Delete => {
            std::fs::remove_file(path)?;
            Ok((damage, None))
        }
    }
}

/// Bytes at the end of the Raft log file in which bits are flipped: the
/// pages redb wrote last.
const RAFT_LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Bits flipped in the Raft log tail.
const RAFT_LOG_FLIPPED_BITS: usize = 4;

/// Flips a few random bits in the tail of the file at `path`; returns the
/// offsets of the bytes changed.
pub fn flip_log_tail(path: &Path, rng: &mut StdRng) -> Result<Vec<u64>> {
    let mut bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let len = bytes.len() as u64;
    let tail = RAFT_LOG_TAIL_BYTES.min(len);
    let mut offsets = Vec::new();
    for _ in 0..RAFT_LOG_FLIPPED_BITS {
        let offset = len - tail + rng.gen_range(0..tail);
        bytes[offset as usize] ^= 1 << rng.gen_range(0..8);
        offsets.push(offset);
    }
    std::fs::write(path, &bytes)?;
    Ok(offsets)
}

/// What a node did when started on a Raft log with flipped bits.
#[derive(Clone, Debug)]
pub enum RaftLogOutcome {
    /// It started, joined and agreed with the others.
    StartedCleanly,
    /// It exited with an error message naming the problem.
    Refused { message: String },
    /// It exited by a panic, a signal, or without an error message.
    Crashed { message: String },
    /// It neither exited nor rejoined in time.
    Hung { reason: String },
}

#[derive(Clone, Debug)]
pub struct RaftLogRecord {
    pub node: String,
    pub offsets: Vec<u64>,
    pub outcome: RaftLogOutcome,
}

/// Observed life of one damaged replica, filled in by [`watch_corruption`].
#[derive(Clone, Debug)]
pub struct CorruptionRecord {
    pub node: String,
    pub file_id: String,
    pub size_bytes: u64,
    pub damage: Damage,
    /// When the damaged node was started again, in run seconds.
    pub restarted_secs: f64,
    /// When the cluster showed it knew: the damaged file was moved or
    /// replaced, or a catalog dropped the node from the replica set or
    /// marked its copy as faulty.
    pub detected_secs: Option<f64>,
    /// When the file again had R verified replicas.
    pub repaired_secs: Option<f64>,
}

/// Interval between two looks at a damaged replica.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// What the watcher needs to see a node's catalog and disk.
#[derive(Clone)]
pub struct NodeView {
    pub id: String,
    pub url: String,
    pub data_dir: PathBuf,
}

impl NodeView {
    fn blob_path(&self, file_id: &str) -> PathBuf {
        self.data_dir
            .join("blobs")
            .join(&file_id[..2])
            .join(file_id)
    }
}

/// State of a file on disk, hashed again only when its size or
/// modification time changes.
#[derive(Default)]
struct DiskCache {
    seen: std::collections::HashMap<PathBuf, (u64, std::time::SystemTime, String)>,
}

impl DiskCache {
    /// SHA-256 of the file at `path`, or `None` when it does not exist.
    fn sha256(&mut self, path: &Path) -> Option<String> {
        let metadata = std::fs::metadata(path).ok()?;
        let modified = metadata.modified().ok()?;
        if let Some((len, time, hash)) = self.seen.get(path) {
            if *len == metadata.len() && *time == modified {
                return Some(hash.clone());
            }
        }
        let hash = sha256_hex(&std::fs::read(path).ok()?);
        self.seen
            .insert(path.to_path_buf(), (metadata.len(), modified, hash.clone()));
        Some(hash)
    }
}

/// Returns whether a track record marks `node_id`'s copy as corrupt or
/// missing: an object that contains both the node id and one of those
/// labels, or the node id as a key whose value is one of them.
pub fn marks_fault(track: &Value, node_id: &str) -> bool {
    let is_label = |v: &Value| matches!(v.as_str(), Some("corrupt" | "missing"));
    match track {
        Value::Object(map) => {
            let names_node = map.values().any(|v| v.as_str() == Some(node_id));
            if names_node && map.values().any(is_label) {
                return true;
            }
            if map.get(node_id).is_some_and(is_label) {
                return true;
            }
            map.values().any(|v| marks_fault(v, node_id))
        }
        Value::Array(items) => items.iter().any(|v| marks_fault(v, node_id)),
        _ => false,
    }
}

/// Replica ids of a track record.
pub fn replicas_of(track: &Value) -> Vec<String> {
    track["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect()
}

/// Returns whether `file_id` has `replication_factor` verified replicas:
/// every node that responds lists the same replica set of that size with
/// no fault marked, and each replica's file on disk hashes to `file_id`.
async fn fully_replicated(
    http: &reqwest::Client,
    nodes: &[NodeView],
    file_id: &str,
    replication_factor: usize,
    disk: &mut DiskCache,
) -> bool {
    let mut views = Vec::new();
    for node in nodes {
        let url = format!("{}/music/tracks/{file_id}", node.url);
        let Ok(response) = http.get(url).send().await else {
            continue;
        };
        if let Ok(track) = response.json::<Value>().await {
            views.push(track);
        }
    }
    let Some(first) = views.first() else {
        return false;
    };
    let replicas = replicas_of(first);
    let distinct: std::collections::BTreeSet<&String> = replicas.iter().collect();
    if distinct.len() != replication_factor {
        return false;
    }
    for view in &views {
        if replicas_of(view) != replicas || replicas.iter().any(|r| marks_fault(view, r)) {
            return false;
        }
    }
    replicas.iter().all(|replica| {
        nodes
            .iter()
            .find(|n| &n.id == replica)
            .and_then(|n| disk.sha256(&n.blob_path(file_id)))
            .is_some_and(|hash| hash == file_id)
    })
}

/// Watches one damaged replica until it is repaired or `bound` passes,
/// updating `record` as the cluster detects and repairs it.
pub async fn watch_corruption(
    record: Arc<Mutex<CorruptionRecord>>,
    nodes: Vec<NodeView>,
    damaged_sha256: Option<String>,
    replication_factor: usize,
    started: Instant,
    bound: Duration,
) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return;
    };
    let (node_id, file_id) = match record.lock() {
        Ok(r) => (r.node.clone(), r.file_id.clone()),
        Err(_) => return,
    };
    let Some(node) = nodes.iter().find(|n| n.id == node_id).cloned() else {
        return;
    };
    let mut disk = DiskCache::default();
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        let now_secs = started.elapsed().as_secs_f64();
        let detected = record
            .lock()
            .map(|r| r.detected_secs.is_some())
            .unwrap_or(true);
        if !detected {
            let on_disk = disk.sha256(&node.blob_path(&file_id));
            let mut seen = on_disk != damaged_sha256;
            for view in &nodes {
                let url = format!("{}/music/tracks/{file_id}", view.url);
                let Ok(response) = http.get(url).send().await else {
                    continue;
                };
                if let Ok(track) = response.json::<Value>().await {
                    if !replicas_of(&track).contains(&node_id) || marks_fault(&track, &node_id) {
                        seen = true;
                    }
                }
            }
            if seen {
                if let Ok(mut r) = record.lock() {
                    r.detected_secs = Some(now_secs);
                }
            }
        }
        if fully_replicated(&http, &nodes, &file_id, replication_factor, &mut disk).await {
            if let Ok(mut r) = record.lock() {
                r.detected_secs.get_or_insert(now_secs);
                r.repaired_secs = Some(now_secs);
            }
            return;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fault_marks_are_found_in_any_shape() {
        let clean = json!({"file_id": "x", "replicas": ["node1", "node2"]});
        assert!(!marks_fault(&clean, "node1"));
        let listed = json!({"replica_faults": [{"node_id": "node1", "fault": "corrupt"}]});
        assert!(marks_fault(&listed, "node1"));
        assert!(!marks_fault(&listed, "node2"));
        let keyed = json!({"faults": {"node2": "missing"}});
        assert!(marks_fault(&keyed, "node2"));
        assert!(!marks_fault(&keyed, "node1"));
    }
}
