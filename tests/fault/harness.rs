//! A cluster of real node processes behind the fault proxy, with the
//! controls a fault needs (kill, restart, pause, resume, partition) and the
//! observations a check needs (status, leader, term, blob files on disk).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::proxy::FaultNetwork;
use crate::support::{Cluster, ClusterOptions, QuicAddrs};
use crate::workload::Workload;

/// Time one status request may take. A paused node never responds, and the
/// pollers must not wait on it.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Interval between two polls of a condition on the cluster.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What the harness did to a node last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Killed,
    Paused,
}

pub struct FaultCluster {
    pub cluster: Cluster,
    pub network: FaultNetwork,
    pub workload: Arc<Workload>,
    pub replication_factor: usize,
    states: Vec<NodeState>,
    status_http: reqwest::Client,
}

/// A view of the cluster on which every running node agrees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    pub leader: usize,
    pub term: u64,
}

impl FaultCluster {
    /// Starts `nodes` nodes, each behind its own proxy, with replication
    /// factor 3 and the given TOML settings.
    pub async fn start(
        seed: u64,
        nodes: usize,
        config_toml: Option<String>,
    ) -> Result<FaultCluster> {
        let mut private = Vec::new();
        for _ in 0..nodes {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            private.push(socket.local_addr()?);
        }
        let network = FaultNetwork::start(private.clone())?;
        let quic_addrs = private
            .iter()
            .enumerate()
            .map(|(index, listen)| QuicAddrs {
                listen: *listen,
                advertise: network.public_addr(index),
            })
            .collect();
        let replication_factor = 3;
        let cluster = Cluster::start(ClusterOptions {
            nodes,
            replication_factor,
            config_toml,
            quic_addrs,
            ..Default::default()
        })
        .await?;
        let urls = cluster
            .nodes
            .iter()
            .map(|node| format!("http://{}", node.http))
            .collect();
        let workload = Workload::new(seed, urls)?;
        let status_http = reqwest::Client::builder().timeout(STATUS_TIMEOUT).build()?;
        Ok(FaultCluster {
            cluster,
            network,
            workload,
            replication_factor,
            states: vec![NodeState::Running; nodes],
            status_http,
        })
    }

    pub fn len(&self) -> usize {
        self.cluster.nodes.len()
    }

    pub fn id(&self, node: usize) -> &str {
        &self.cluster.nodes[node].id
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.cluster.nodes.iter().position(|n| n.id == id)
    }

    pub fn state(&self, node: usize) -> NodeState {
        self.states[node]
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|n| self.states[*n] == NodeState::Running)
            .collect()
    }

    pub fn http_addr(&self, node: usize) -> SocketAddr {
        self.cluster.nodes[node].http
    }

    /// Kills `node` with SIGKILL.
    pub fn kill(&mut self, node: usize) {
        self.workload.set_serving(node, false);
        self.cluster.nodes[node].kill();
        self.states[node] = NodeState::Killed;
    }

    /// Starts `node` again on its data directory. It counts as serving once
    /// [`FaultCluster::wait_converged`] has seen it ready.
    pub fn restart(&mut self, node: usize) -> Result<()> {
        self.workload.set_serving(node, false);
        self.cluster.nodes[node].restart()?;
        self.states[node] = NodeState::Running;
        Ok(())
    }

    /// Stops `node` with SIGSTOP.
    pub fn pause(&mut self, node: usize) -> Result<()> {
        self.signal(node, libc::SIGSTOP)?;
        self.workload.set_serving(node, false);
        self.states[node] = NodeState::Paused;
        Ok(())
    }

    /// Continues a paused `node` with SIGCONT.
    pub fn resume(&mut self, node: usize) -> Result<()> {
        self.signal(node, libc::SIGCONT)?;
        self.states[node] = NodeState::Running;
        Ok(())
    }

    fn signal(&self, node: usize, signal: libc::c_int) -> Result<()> {
        let pid = self.cluster.nodes[node]
            .pid()
            .with_context(|| format!("{} has no process", self.id(node)))?;
        let pid = libc::pid_t::try_from(pid)?;
        // SAFETY: kill(2) with a pid of a child this harness started and
        // has not yet reaped, so the pid cannot name another process.
        let result = unsafe { libc::kill(pid, signal) };
        if result != 0 {
            bail!(
                "kill({pid}, {signal}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Nodes that should be running but whose process has exited, with
    /// their exit status and last log lines. Each is marked killed.
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        let mut found = Vec::new();
        for node in 0..self.len() {
            if self.states[node] == NodeState::Killed {
                continue;
            }
            if let Some(status) = self.cluster.nodes[node].exit_status() {
                found.push(format!(
                    "{} exited on its own with {status}; last log lines:\n{}",
                    self.id(node),
                    self.cluster.nodes[node].log_tail(15)
                ));
                self.states[node] = NodeState::Killed;
                self.workload.set_serving(node, false);
            }
        }
        found
    }

    pub async fn status(&self, node: usize) -> Option<Value> {
        if self.states[node] != NodeState::Running {
            return None;
        }
        let response = self
            .status_http
            .get(self.cluster.nodes[node].url("/cluster/status"))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Returns the leader that node `node` reports, as a node index.
    pub async fn reported_leader(&self, node: usize) -> Option<usize> {
        let status = self.status(node).await?;
        self.index_of(status["leader_id"].as_str()?)
    }

    /// Returns the highest term any running node reports.
    pub async fn max_term(&self) -> Option<u64> {
        let mut max = None;
        for node in self.running() {
            if let Some(term) = self.status(node).await.and_then(|s| s["term"].as_u64()) {
                max = Some(max.map_or(term, |m: u64| m.max(term)));
            }
        }
        max
    }

    /// Checks that every node is running and ready, and that all report
    /// the same leader, term and membership of every node as voters.
    pub async fn agreement(&self) -> Result<Agreement, String> {
        let mut seen: Option<(String, u64, Vec<String>)> = None;
        for node in 0..self.len() {
            let Some(status) = self.status(node).await else {
                return Err(format!("{} does not answer /cluster/status", self.id(node)));
            };
            if status["ready"] != true {
                return Err(format!("{} is not ready", self.id(node)));
            }
            let Some(leader) = status["leader_id"].as_str() else {
                return Err(format!("{} knows no leader", self.id(node)));
            };
            let members: Vec<String> = status["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| format!("{}:{}", m["id"].as_str().unwrap_or("?"), m["voter"]))
                .collect();
            let view = (
                leader.to_string(),
                status["term"].as_u64().unwrap_or(0),
                members,
            );
            match &seen {
                None => seen = Some(view),
                Some(first) if *first != view => {
                    return Err(format!(
                        "{} reports {view:?}, another node {first:?}",
                        self.id(node)
                    ))
                }
                Some(_) => {}
            }
        }
        let Some((leader, term, members)) = seen else {
            return Err("no nodes".to_string());
        };
        let expected: Vec<String> = (0..self.len())
            .map(|n| format!("{}:true", self.id(n)))
            .collect();
        if members != expected {
            return Err(format!("membership is {members:?}, expected {expected:?}"));
        }
        let leader = self
            .index_of(&leader)
            .ok_or_else(|| format!("leader {leader} is not a member"))?;
        Ok(Agreement { leader, term })
    }

    /// Waits until [`FaultCluster::agreement`] holds, then marks every
    /// node as serving; returns how long that took.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < timeout {
            match self.agreement().await {
                Ok(_) => {
                    for node in 0..self.len() {
                        self.workload.set_serving(node, true);
                    }
                    return Ok(started.elapsed());
                }
                Err(reason) => last = reason,
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(format!(
            "cluster did not converge within {timeout:?}: {last}"
        ))
    }

    /// Returns the first leader that a node of `nodes` reports, if that
    /// leader is one of `nodes`.
    pub async fn leader_among(&self, nodes: &[usize]) -> Option<usize> {
        for &node in nodes {
            if let Some(leader) = self.reported_leader(node).await {
                if nodes.contains(&leader) {
                    return Some(leader);
                }
            }
        }
        None
    }

    pub fn data_dir(&self, node: usize) -> PathBuf {
        self.cluster.nodes[node].data_dir.clone()
    }

    /// Returns the path of node `node`'s copy of `file_id`.
    pub fn blob_path(&self, node: usize, file_id: &str) -> PathBuf {
        self.data_dir(node)
            .join("blobs")
            .join(&file_id[..2])
            .join(file_id)
    }

    pub fn raft_log_path(&self, node: usize) -> PathBuf {
        self.data_dir(node).join("raft").join("log.redb")
    }

    /// Returns the replica set of `file_id` as node `node`'s catalog
    /// records it.
    pub async fn catalog_replicas(&self, node: usize, file_id: &str) -> Option<Vec<String>> {
        let track = self.track(node, file_id).await?;
        Some(
            track["replicas"]
                .as_array()?
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
        )
    }

    /// Fetches the track record of `file_id` from node `node`'s catalog.
    pub async fn track(&self, node: usize, file_id: &str) -> Option<Value> {
        if self.states[node] != NodeState::Running {
            return None;
        }
        let response = self
            .status_http
            .get(self.cluster.nodes[node].url(&format!("/music/tracks/{file_id}")))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Lists every file id in node `node`'s catalog, sorted.
    pub async fn catalog_file_ids(&self, node: usize) -> Result<Vec<String>> {
        const PAGE: usize = 500;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut ids = Vec::new();
        loop {
            let url = self.cluster.nodes[node]
                .url(&format!("/music/tracks?limit={PAGE}&offset={}", ids.len()));
            let page: Value = http.get(url).send().await?.json().await?;
            let items = page["items"].as_array().context("listing without items")?;
            ids.extend(
                items
                    .iter()
                    .filter_map(|t| t["file_id"].as_str().map(str::to_string)),
            );
            if items.len() < PAGE {
                break;
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Copies every node's log into `dir`.
    pub fn save_logs(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for node in &self.cluster.nodes {
            let target = dir.join(format!("{}.log", node.id));
            if let Err(error) = std::fs::copy(&node.log_path, &target) {
                eprintln!("cannot copy {}: {error}", node.log_path.display());
            }
        }
        Ok(())
    }
}
