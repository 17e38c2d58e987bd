//! One fault run: start a cluster behind the fault proxy, load it with
//! clients, inject faults chosen by the seed, heal, then check what the
//! cluster promised and print the figures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use crate::faults::{
    damage_blob, flip_log_tail, watch_corruption, CorruptionRecord, Failover, FaultKind,
    FaultRecord, NodeView, RaftLogOutcome, RaftLogRecord,
};
use crate::harness::{FaultCluster, NodeState, POLL_INTERVAL};
use crate::report::{self, RunReport};
use crate::support::phase;
use crate::workload::{sha256_hex, Acked, Op, OpKind, Workload};

/// Seed of the short run that CI executes.
pub const DEFAULT_SEED: u64 = 20_240_611;

/// Minimum warm-up before the first fault, so the cluster is under load.
const WARMUP_MIN: Duration = Duration::from_secs(8);
/// Maximum warm-up. A run that has not reached the traffic below by then
/// is invalid, because faults on an idle cluster prove nothing.
const WARMUP_MAX: Duration = Duration::from_secs(60);
/// Acknowledged uploads required before the first fault.
const WARMUP_MIN_UPLOADS: usize = 15;
/// Reads with verified bytes required before the first fault.
const WARMUP_MIN_READS: usize = 30;

/// Size of the large file uploaded at warm-up, the one a blob corruption
/// damages, so its repair also measures re-replication speed.
const LARGE_FILE_DATA_BYTES: u32 = 24 * 1024 * 1024;
/// Size of the upload in flight when every node is killed: several
/// chunks, so the kill lands while chunks are being pushed.
const CUT_UPLOAD_DATA_BYTES: u32 = 8 * 1024 * 1024;
/// Maximum wait for a replica to begin receiving the cut upload.
const CUT_UPLOAD_WAIT: Duration = Duration::from_secs(15);
/// Size of the uploads that probe the minority side and recovery.
const PROBE_DATA_BYTES: u32 = 4 * 1024;

/// Interval between two failover probes; it bounds the error of the
/// failover figure.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// Maximum time the probes try before the failover counts as failed.
const FAILOVER_BOUND: Duration = Duration::from_secs(20);
/// Probes in flight at once. A write that a follower forwards to a lost
/// leader can hang for the node's whole write timeout (8 s), which is 320
/// probes. The cap is above that, so hanging probes never stop new ones,
/// and it still bounds the probes sent to a cluster that never recovers.
const MAX_PROBES_IN_FLIGHT: usize = 512;

/// How long a node down or cut off stays so, drawn per fault.
const HOLD_MIN: Duration = Duration::from_secs(2);
const HOLD_MAX: Duration = Duration::from_secs(5);
/// Time to live of the lock whose holder is stopped.
const LOCK_HOLDER_TTL: Duration = Duration::from_secs(2);
/// How long that holder stays stopped: past the time to live, and past the
/// election timeout when it is the leader.
const LOCK_HOLDER_PAUSE: Duration = Duration::from_secs(5);
/// Time to live of the lock its successor takes; released at the end.
const LOCK_SUCCESSOR_TTL: Duration = Duration::from_secs(60);
/// Maximum time a write sent to the minority side may take to get a response.
const MINORITY_ANSWER_BOUND: Duration = Duration::from_secs(20);
/// Maximum time from healing until every node agrees again.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// Fault-free time after each recovery, in which elections are counted.
const FAULT_FREE_GAP: Duration = Duration::from_secs(2);
/// Time without a term change that counts as a settled cluster before a
/// measured leader loss.
const STABLE_TERM_WINDOW: Duration = Duration::from_secs(3);
/// Maximum wait for a settled cluster.
const STABLE_TERM_BOUND: Duration = Duration::from_secs(60);
/// How long a node started on a damaged Raft log may take to exit or
/// rejoin.
const RAFT_LOG_OBSERVE: Duration = Duration::from_secs(30);
/// Bound on detecting and repairing a damaged replica, from its node's
/// restart.
pub const REPAIR_BOUND: Duration = Duration::from_secs(120);
/// Bound on every file having R verified replicas, from the end of the
/// faults.
const REPLICATION_BOUND: Duration = Duration::from_secs(90);

/// What a run does between warm-up and healing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every fault kind once in a seeded order, then random faults for
    /// `fault_secs`.
    Faults,
    /// Load only, no fault, for this many seconds.
    LoadOnly { secs: u64 },
    /// This many leader losses, kills and pauses in turn.
    LeaderLosses { count: usize },
}

/// Settings of one run, from the environment with defaults per test.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Time to keep injecting faults once each kind ran once.
    pub fault_secs: u64,
    pub plan: Plan,
    pub uploaders: u64,
    pub readers: u64,
    /// TOML settings given to every node.
    pub config_toml: Option<String>,
}

impl RunConfig {
    /// Reads DISPOTIFY_FAULT_SEED, DISPOTIFY_FAULT_NODES (3 or 5),
    /// DISPOTIFY_FAULT_SECS and DISPOTIFY_FAULT_CONFIG (a TOML file for
    /// every node) over the given defaults.
    pub fn from_env(seed: u64, fault_secs: u64) -> Result<RunConfig> {
        let seed = env_number("DISPOTIFY_FAULT_SEED")?.unwrap_or(seed);
        let nodes = env_number("DISPOTIFY_FAULT_NODES")?.unwrap_or(3) as usize;
        anyhow::ensure!(
            nodes == 3 || nodes == 5,
            "DISPOTIFY_FAULT_NODES must be 3 or 5, not {nodes}"
        );
        let fault_secs = env_number("DISPOTIFY_FAULT_SECS")?.unwrap_or(fault_secs);
        let config_toml = match std::env::var("DISPOTIFY_FAULT_CONFIG") {
            Ok(path) => Some(std::fs::read_to_string(&path)?),
            Err(_) => None,
        };
        Ok(RunConfig {
            seed,
            nodes,
            fault_secs,
            plan: Plan::Faults,
            uploaders: 2,
            readers: 2,
            config_toml,
        })
    }
}

pub fn env_number(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(text) => Ok(Some(text.trim().parse().map_err(|e| {
            anyhow::anyhow!("{name}={text:?} is not a whole number: {e}")
        })?)),
        Err(_) => Ok(None),
    }
}

/// Everything a run observed, for the checks and the figures.
pub struct Run {
    pub config: RunConfig,
    pub fc: FaultCluster,
    rng: StdRng,
    pub faults: Vec<FaultRecord>,
    pub corruptions: Vec<Arc<Mutex<CorruptionRecord>>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    pub raft_logs: Vec<RaftLogRecord>,
    pub minority_writes: Vec<(usize, Op)>,
    pub violations: Vec<String>,
    /// Term increments seen in fault-free periods after the warm-up, and
    /// their length.
    pub fault_free_elections: u64,
    /// Term increments while the cluster formed and warmed up.
    pub warmup_elections: u64,
    pub fault_free_secs: f64,
    pub invalid: Option<String>,
    large_file: Option<Acked>,
    pub faults_ended_secs: f64,
    /// The machine's 1-minute load average at the start, for the figures:
    /// other processes on the machine slow every node down.
    pub load_average_start: Option<f64>,
}

/// Reads the 1-minute load average from /proc/loadavg.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs the whole fault run described by `config` and returns its report.
pub async fn run(config: RunConfig) -> Result<RunReport> {
    eprintln!(
        "fault run: DISPOTIFY_FAULT_SEED={} DISPOTIFY_FAULT_NODES={} DISPOTIFY_FAULT_SECS={}",
        config.seed, config.nodes, config.fault_secs
    );
    phase(&format!(
        "start {} nodes behind fault proxies",
        config.nodes
    ));
    let fc = FaultCluster::start(config.seed, config.nodes, config.config_toml.clone()).await?;
    let mut run = Run {
        rng: StdRng::seed_from_u64(config.seed),
        config,
        fc,
        faults: Vec::new(),
        corruptions: Vec::new(),
        watchers: Vec::new(),
        raft_logs: Vec::new(),
        minority_writes: Vec::new(),
        violations: Vec::new(),
        fault_free_elections: 0,
        warmup_elections: 0,
        fault_free_secs: 0.0,
        invalid: None,
        large_file: None,
        faults_ended_secs: 0.0,
        load_average_start: load_average(),
    };
    let clients = run.start_clients();
    run.warm_up().await;
    if run.invalid.is_none() {
        run.follow_plan().await;
    }
    run.faults_ended_secs = run.fc.workload.secs();

    phase("heal everything and wait for the cluster to converge");
    run.heal_all().await;
    run.fc.workload.stop.cancel();
    for client in clients {
        let _ = client.await;
    }
    report::check(&mut run).await;
    let report = report::figures(&run);
    run.save_history_and_logs();
    Ok(report)
}

impl Run {
    async fn follow_plan(&mut self) {
        match self.config.plan {
            Plan::Faults => self.inject_faults().await,
            Plan::LoadOnly { secs } => self.load_without_faults(secs).await,
            Plan::LeaderLosses { count } => {
                for index in 0..count {
                    let kind = if index % 2 == 0 {
                        FaultKind::KillLeader
                    } else {
                        FaultKind::PauseLeader
                    };
                    self.wait_stable_term().await;
                    self.inject_one(index, kind).await;
                }
            }
        }
    }

    /// Saves the history and every node's log under the target directory,
    /// in a directory named after the seed, the node count, the time and
    /// the process id, so that runs of the same seed keep their own logs.
    fn save_history_and_logs(&self) {
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "fault-{}-{}n-{now_secs}-{}",
            self.config.seed,
            self.config.nodes,
            std::process::id()
        ));
        let saved = std::fs::create_dir_all(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|_| self.fc.workload.write_history(&dir.join("history.jsonl")))
            .and_then(|_| self.fc.save_logs(&dir));
        match saved {
            Ok(()) => eprintln!("history and node logs: {}", dir.display()),
            Err(error) => eprintln!("cannot save the history and logs: {error:#}"),
        }
    }

    fn start_clients(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut clients = Vec::new();
        for client in 0..self.config.uploaders {
            clients.push(tokio::spawn(self.fc.workload.clone().run_uploader(client)));
        }
        for client in 0..self.config.readers {
            clients.push(tokio::spawn(self.fc.workload.clone().run_reader(client)));
        }
        clients
    }

    fn violation(&mut self, text: String) {
        eprintln!("VIOLATION: {text}");
        self.violations.push(text);
    }

    /// Loads the cluster until the warm-up traffic is reached, uploading the
    /// large file on the way; marks the run invalid when it is not.
    async fn warm_up(&mut self) {
        phase("warm up: upload a large file and wait for steady traffic");
        let started = Instant::now();
        let term_before = self.fc.max_term().await;
        let large = self.fc.workload.new_file(LARGE_FILE_DATA_BYTES);
        let op = self.fc.workload.upload(OpKind::Upload, 0, large).await;
        if op.outcome.acknowledged_upload() {
            self.large_file = self
                .fc
                .workload
                .acked()
                .into_iter()
                .find(|a| a.file == large);
        } else {
            self.violation(format!(
                "the large file upload on a healthy cluster failed: {}",
                op.outcome
            ));
        }
        loop {
            let history = self.fc.workload.history();
            let uploads = history
                .iter()
                .filter(|op| op.kind == OpKind::Upload && op.outcome.acknowledged_upload())
                .count();
            let reads = history
                .iter()
                .filter(|op| op.kind == OpKind::Read && op.sha256_served.is_some())
                .count();
            if started.elapsed() >= WARMUP_MIN
                && uploads >= WARMUP_MIN_UPLOADS
                && reads >= WARMUP_MIN_READS
            {
                eprintln!(
                    "warm-up: {uploads} uploads and {reads} reads in {:?}",
                    started.elapsed()
                );
                break;
            }
            if started.elapsed() >= WARMUP_MAX {
                self.invalid = Some(format!(
                    "too little traffic before the faults: {uploads} acknowledged uploads \
                     (need {WARMUP_MIN_UPLOADS}) and {reads} verified reads (need \
                     {WARMUP_MIN_READS}) in {WARMUP_MAX:?}"
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let term_after = self.fc.max_term().await;
        if let (Some(before), Some(after)) = (term_before, term_after) {
            self.warmup_elections = after.saturating_sub(before);
        }
    }

    async fn count_fault_free(&mut self, term_before: Option<u64>, since: Instant) {
        let term_after = self.fc.max_term().await;
        if let (Some(before), Some(after)) = (term_before, term_after) {
            if after > before {
                eprintln!(
                    "term {before} -> {after} in a fault-free period of {:.1} s ending at {:.1} s",
                    since.elapsed().as_secs_f64(),
                    self.fc.workload.secs()
                );
            }
            self.fault_free_elections += after.saturating_sub(before);
            self.fault_free_secs += since.elapsed().as_secs_f64();
        }
    }

    /// Keeps the clients running without faults, polling the term.
    async fn load_without_faults(&mut self, secs: u64) {
        phase(&format!(
            "load the cluster for {secs} s without faults, counting elections"
        ));
        let started = Instant::now();
        let term_before = self.fc.max_term().await;
        let mut last_term = term_before;
        while started.elapsed() < Duration::from_secs(secs) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let term = self.fc.max_term().await;
            if term != last_term {
                eprintln!(
                    "term changed from {last_term:?} to {term:?} at {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                last_term = term;
            }
            for exit in self.fc.unexpected_exits() {
                self.violation(exit);
            }
        }
        self.count_fault_free(term_before, started).await;
    }

    /// Injects every fault kind once in a seeded order, then random kinds
    /// until the fault time is up.
    async fn inject_faults(&mut self) {
        let mut schedule = FaultKind::ALL.to_vec();
        schedule.shuffle(&mut self.rng);
        let started = Instant::now();
        let mut index = 0;
        loop {
            let kind = if index < schedule.len() {
                schedule[index]
            } else if started.elapsed() < Duration::from_secs(self.config.fault_secs) {
                FaultKind::ALL[self.rng.gen_range(0..FaultKind::ALL.len())]
            } else {
                break;
            };
            self.inject_one(index, kind).await;
            index += 1;
        }
    }

    /// Injects one fault, heals it, waits for recovery and then counts
    /// elections in a fault-free gap.
    async fn inject_one(&mut self, index: usize, kind: FaultKind) {
        for exit in self.fc.unexpected_exits() {
            self.violation(exit);
        }
        self.restart_exited().await;
        phase(&format!("fault {index}: {}", kind.label()));
        self.fc.workload.set_fault(Some(index));
        let injected_secs = self.fc.workload.secs();
        let (detail, failover) = match self.inject(kind).await {
            Ok(result) => result,
            Err(error) => {
                self.violation(format!(
                    "fault {index} ({}) failed: {error:#}",
                    kind.label()
                ));
                (String::new(), None)
            }
        };
        let healed_secs = self.fc.workload.secs();
        let recovery = self.recover(index).await;
        self.fc.workload.set_fault(None);
        if let Some(failover) = failover {
            eprintln!(
                "failover: election {:?}, write {:?}",
                failover.election, failover.write
            );
        }
        eprintln!("{detail}; recovered in {recovery:?}");
        self.faults.push(FaultRecord {
            index,
            kind,
            detail,
            injected_secs,
            healed_secs,
            recovery,
            failover,
        });
        let gap_started = Instant::now();
        let term_before = self.fc.max_term().await;
        tokio::time::sleep(FAULT_FREE_GAP).await;
        self.count_fault_free(term_before, gap_started).await;
    }

    async fn inject(&mut self, kind: FaultKind) -> Result<(String, Option<Failover>)> {
        match kind {
            FaultKind::KillRandom => {
                let node = self.rng.gen_range(0..self.fc.len());
                self.kill_and_restart(node).await
            }
            FaultKind::KillLeader => {
                let leader = self.leader().await?;
                self.kill_and_restart(leader).await
            }
            FaultKind::KillAllMidUpload => self.kill_all_mid_upload().await,
            FaultKind::PauseLeader => self.pause_leader().await,
            FaultKind::PauseLockHolder => self.pause_lock_holder().await,
            FaultKind::PartitionLeaderMinority => {
                let leader = self.leader().await?;
                let mut followers = self.others(leader);
                followers.shuffle(&mut self.rng);
                let minority_size = (self.fc.len() - 1) / 2;
                let mut minority = vec![leader];
                minority.extend(followers.drain(..minority_size - 1));
                self.partition(minority, Some(leader)).await
            }
            FaultKind::PartitionLeaderMajority => {
                let leader = self.leader().await?;
                let mut followers = self.others(leader);
                followers.shuffle(&mut self.rng);
                let minority_size = (self.fc.len() - 1) / 2;
                let minority = followers.drain(..minority_size).collect();
                self.partition(minority, None).await
            }
            FaultKind::PartitionOneWay => self.one_way().await,
            FaultKind::IsolateNode => {
                let node = self.rng.gen_range(0..self.fc.len());
                let leader = self.leader().await?;
                self.partition(vec![node], (node == leader).then_some(leader))
                    .await
            }
            FaultKind::CorruptBlob => self.corrupt_blob().await,
            FaultKind::CorruptRaftLog => self.corrupt_raft_log().await,
        }
    }

    /// Returns the leader every node agrees on, after waiting for the
    /// cluster to converge.
    async fn leader(&self) -> Result<usize> {
        if let Err(reason) = self.fc.wait_converged(RECOVERY_BOUND).await {
            anyhow::bail!("no agreed leader before the fault: {reason}");
        }
        match self.fc.agreement().await {
            Ok(agreement) => Ok(agreement.leader),
            Err(reason) => anyhow::bail!("no agreed leader before the fault: {reason}"),
        }
    }

    fn others(&self, node: usize) -> Vec<usize> {
        (0..self.fc.len()).filter(|n| *n != node).collect()
    }

    fn hold(&mut self) -> Duration {
        let millis = self
            .rng
            .gen_range(HOLD_MIN.as_millis() as u64..=HOLD_MAX.as_millis() as u64);
        Duration::from_millis(millis)
    }

    async fn kill_and_restart(&mut self, node: usize) -> Result<(String, Option<Failover>)> {
        let leader = self.leader().await.ok();
        let hold = self.hold();
        let injected = Instant::now();
        self.fc.kill(node);
        let failover = if leader == Some(node) {
            Some(self.measure_failover(node, self.others(node)).await)
        } else {
            None
        };
        sleep_until(injected + hold).await;
        self.fc.restart(node)?;
        let role = if leader == Some(node) {
            "leader"
        } else {
            "follower"
        };
        Ok((
            format!("SIGKILL {} ({role}) for {hold:?}", self.fc.id(node)),
            failover,
        ))
    }

    async fn pause_leader(&mut self) -> Result<(String, Option<Failover>)> {
        let leader = self.leader().await?;
        let hold = self.hold();
        let injected = Instant::now();
        self.fc.pause(leader)?;
        let failover = self.measure_failover(leader, self.others(leader)).await;
        sleep_until(injected + hold).await;
        self.fc.resume(leader)?;
        Ok((
            format!("SIGSTOP leader {} for {hold:?}", self.fc.id(leader)),
            Some(failover),
        ))
    }

    /// Takes a lock through a random node and stops that node past the
    /// lock's time to live. Another node must then grant the lock to a
    /// second owner with a larger fencing token. The log entry of that grant
    /// must not be older than the first grant's expiry. Once the holder runs
    /// again, its stale token must release nothing.
    async fn pause_lock_holder(&mut self) -> Result<(String, Option<Failover>)> {
        let leader = self.leader().await?;
        let holder = self.rng.gen_range(0..self.fc.len());
        let others = self.others(holder);
        let successor = others[self.rng.gen_range(0..others.len())];
        let name = format!("fault-lock-{}", self.faults.len());
        let (status, first) = self
            .fc
            .cluster
            .lock_request(holder, &name, "stopped-holder", LOCK_HOLDER_TTL)
            .await?;
        anyhow::ensure!(status == 200, "first acquire answered {status}: {first}");
        let first_token = first["token"].as_u64().unwrap_or(0);
        let first_expiry = first["expires_at_ms"].as_i64().unwrap_or(i64::MAX);

        let injected = Instant::now();
        self.fc.pause(holder)?;
        let failover = if holder == leader {
            Some(self.measure_failover(holder, others.clone()).await)
        } else {
            None
        };
        let second = loop {
            let (status, body) = self
                .fc
                .cluster
                .lock_request(successor, &name, "successor", LOCK_SUCCESSOR_TTL)
                .await?;
            if status == 200 {
                break body;
            }
            anyhow::ensure!(
                [409, 503].contains(&status),
                "second acquire answered {status}: {body}"
            );
            anyhow::ensure!(
                injected.elapsed() < FAILOVER_BOUND,
                "no second grant within {FAILOVER_BOUND:?}: last {status} {body}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let second_token = second["token"].as_u64().unwrap_or(0);
        let second_granted =
            second["expires_at_ms"].as_i64().unwrap_or(0) - LOCK_SUCCESSOR_TTL.as_millis() as i64;
        if second_token <= first_token {
            self.violation(format!(
                "lock {name}: second token {second_token} is not larger than {first_token}"
            ));
        }
        if second_granted < first_expiry {
            self.violation(format!(
                "lock {name}: granted again at {second_granted} ms, before the first grant expired at {first_expiry} ms"
            ));
        }

        sleep_until(injected + LOCK_HOLDER_PAUSE).await;
        self.fc.resume(holder)?;
        // Until the new leader's heartbeat reaches it, a resumed old leader
        // responds with 503; a client retries.
        let retry_until = Instant::now() + RECOVERY_BOUND;
        let (status, body) = loop {
            let (status, body) = self
                .lock_release(holder, &name, "stopped-holder", first_token)
                .await?;
            if status != 503 || Instant::now() > retry_until {
                break (status, body);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        if status != 409 || body["error"]["code"] != "lock_not_held" {
            self.violation(format!(
                "lock {name}: the stale holder's release answered {status}: {body}"
            ));
        }
        let (status, body) = self
            .lock_release(successor, &name, "successor", second_token)
            .await?;
        anyhow::ensure!(
            status == 204,
            "successor's release answered {status}: {body}"
        );
        let role = if holder == leader {
            "leader"
        } else {
            "follower"
        };
        Ok((
            format!(
                "SIGSTOP lock holder {} ({role}) for {LOCK_HOLDER_PAUSE:?}; tokens {first_token} then {second_token}",
                self.fc.id(holder)
            ),
            failover,
        ))
    }

    async fn lock_release(
        &self,
        node: usize,
        name: &str,
        owner: &str,
        token: u64,
    ) -> Result<(u16, serde_json::Value)> {
        let url = format!(
            "{}/{name}?owner={owner}&token={token}",
            self.fc.cluster.nodes[node].url("/cluster/locks")
        );
        let response = self.fc.cluster.http.delete(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or_default()))
    }

    /// Starts an upload of several chunks and kills every node once a node
    /// other than the uploader has begun to receive it.
    async fn kill_all_mid_upload(&mut self) -> Result<(String, Option<Failover>)> {
        let uploader = self.rng.gen_range(0..self.fc.len());
        let extra_delay = Duration::from_millis(self.rng.gen_range(0..30));
        let file = self.fc.workload.new_file(CUT_UPLOAD_DATA_BYTES);
        // A replica receives into a staging file named after the file id.
        let receiving = format!("receive-{}", &sha256_hex(&file.content())[..16]);
        let workload = self.fc.workload.clone();
        let upload = tokio::spawn(async move {
            workload
                .upload(OpKind::UploadCutByKill, uploader, file)
                .await
        });

        let started = Instant::now();
        let mut seen_in_flight = false;
        while started.elapsed() < CUT_UPLOAD_WAIT {
            if self
                .others(uploader)
                .into_iter()
                .any(|n| dir_has_file_starting(&self.fc.data_dir(n).join("staging"), &receiving))
            {
                seen_in_flight = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(extra_delay).await;
        let cut_after = started.elapsed();
        for node in 0..self.fc.len() {
            self.fc.kill(node);
        }

        let hold = self.hold();
        tokio::time::sleep(hold).await;
        for node in 0..self.fc.len() {
            self.fc.restart(node)?;
        }
        let outcome = match upload.await {
            Ok(op) => op.outcome.to_string(),
            Err(error) => format!("upload task failed: {error}"),
        };
        let when = if seen_in_flight {
            "while a replica received it".to_string()
        } else {
            format!(
                "before any replica received it (not seen in flight within {CUT_UPLOAD_WAIT:?})"
            )
        };
        Ok((
            format!(
                "SIGKILL all nodes {when}, {cut_after:?} after the upload started through {}; upload: {outcome}; down for {hold:?}",
                self.fc.id(uploader)
            ),
            None,
        ))
    }

    /// Cuts `minority` off from the other nodes, sends a write to each
    /// minority node and keeps the partition until each gets a response.
    async fn partition(
        &mut self,
        minority: Vec<usize>,
        lost_leader: Option<usize>,
    ) -> Result<(String, Option<Failover>)> {
        let majority: Vec<usize> = (0..self.fc.len())
            .filter(|n| !minority.contains(n))
            .collect();
        let hold = self.hold();
        let injected = Instant::now();
        self.fc.network.partition(&minority, &majority);
        for &node in &minority {
            self.fc.workload.set_serving(node, false);
        }
        // Each minority node gets an upload and a lock request: the first
        // needs a blob pushed to replicas, the second only a Raft commit.
        let mut writes = Vec::new();
        for &node in &minority {
            let workload = self.fc.workload.clone();
            let file = workload.new_file(PROBE_DATA_BYTES);
            writes.push((
                node,
                tokio::spawn(async move {
                    tokio::time::timeout(
                        MINORITY_ANSWER_BOUND,
                        workload.upload(OpKind::MinorityWrite, node, file),
                    )
                    .await
                }),
            ));
            let workload = self.fc.workload.clone();
            writes.push((
                node,
                tokio::spawn(async move {
                    tokio::time::timeout(
                        MINORITY_ANSWER_BOUND,
                        workload.lock_probe(OpKind::MinorityLock, node),
                    )
                    .await
                }),
            ));
        }
        let failover = match lost_leader {
            Some(leader) => Some(self.measure_failover(leader, majority.clone()).await),
            None => None,
        };
        let fault = self.faults.len();
        for (node, write) in writes {
            match write.await {
                Ok(Ok(op)) => self.minority_writes.push((fault, op)),
                Ok(Err(_)) => self.violation(format!(
                    "a write to {} on the minority side got no answer within {MINORITY_ANSWER_BOUND:?}",
                    self.fc.id(node)
                )),
                Err(error) => self.violation(format!("minority write task failed: {error}")),
            }
        }
        sleep_until(injected + hold).await;
        self.fc.network.heal();
        let names = |nodes: &[usize]| {
            nodes
                .iter()
                .map(|n| self.fc.id(*n).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        Ok((
            format!(
                "partition {{{}}} | {{{}}} for {:?}",
                names(&minority),
                names(&majority),
                injected.elapsed()
            ),
            failover,
        ))
    }

    /// Drops the datagrams from one node to another, half the time from
    /// the leader.
    async fn one_way(&mut self) -> Result<(String, Option<Failover>)> {
        let leader = self.leader().await?;
        let (from, to) = if self.rng.gen_bool(0.5) {
            let others = self.others(leader);
            (leader, others[self.rng.gen_range(0..others.len())])
        } else {
            let from = self.rng.gen_range(0..self.fc.len());
            let others = self.others(from);
            (from, others[self.rng.gen_range(0..others.len())])
        };
        let hold = self.hold();
        self.fc.network.block_one_way(from, to);
        tokio::time::sleep(hold).await;
        let leader_during = self.fc.leader_among(&self.fc.running()).await;
        self.fc.network.heal();
        Ok((
            format!(
                "drop {} -> {} for {hold:?} (leader before {}, during {})",
                self.fc.id(from),
                self.fc.id(to),
                self.fc.id(leader),
                leader_during.map_or("none".to_string(), |l| self.fc.id(l).to_string())
            ),
            None,
        ))
    }

    /// Stops a replica of the large file, damages its copy, starts it
    /// again, reads the file from it and watches for the repair.
    async fn corrupt_blob(&mut self) -> Result<(String, Option<Failover>)> {
        let Some(target) = self.corruption_target().await else {
            anyhow::bail!("no acknowledged file has a copy on disk to damage");
        };
        let (node, acked) = target;
        let path = self.fc.blob_path(node, &acked.file_id);
        self.fc.kill(node);
        let (damage, damaged_sha256) = damage_blob(&path, &mut self.rng)?;
        self.fc.restart(node)?;
        let record = Arc::new(Mutex::new(CorruptionRecord {
            node: self.fc.id(node).to_string(),
            file_id: acked.file_id.clone(),
            size_bytes: acked.file.size_bytes(),
            damage,
            restarted_secs: self.fc.workload.secs(),
            detected_secs: None,
            repaired_secs: None,
        }));
        self.corruptions.push(record.clone());
        let views = (0..self.fc.len())
            .map(|n| NodeView {
                id: self.fc.id(n).to_string(),
                url: format!("http://{}", self.fc.http_addr(n)),
                data_dir: self.fc.data_dir(n),
            })
            .collect();
        self.watchers.push(tokio::spawn(watch_corruption(
            record,
            views,
            damaged_sha256,
            self.fc.replication_factor,
            self.fc.workload.started,
            REPAIR_BOUND,
        )));
        // The damaged node must serve the file's true bytes or an error,
        // never the damaged bytes.
        if let Err(reason) = self.fc.wait_converged(RECOVERY_BOUND).await {
            self.violation(format!("after damaging a blob: {reason}"));
        }
        for _ in 0..3 {
            self.fc
                .workload
                .read(OpKind::ReadCorrupted, node, &acked, None)
                .await;
        }
        Ok((
            format!(
                "{} of {} ({} bytes) on {}",
                damage,
                &acked.file_id[..12],
                acked.file.size_bytes(),
                self.fc.id(node)
            ),
            None,
        ))
    }

    /// Picks the large file and one of its replicas with a copy on disk, or
    /// any acknowledged file and replica when the large file has none.
    async fn corruption_target(&mut self) -> Option<(usize, Acked)> {
        // The number of acknowledged files depends on timing, so the
        // shuffles draw from a generator of their own and leave the run's
        // sequence of choices the same for every run of a seed.
        let mut rng = StdRng::seed_from_u64(self.rng.gen());
        let mut candidates: Vec<Acked> = self.large_file.iter().cloned().collect();
        let mut others = self.fc.workload.acked();
        others.shuffle(&mut rng);
        candidates.extend(others);
        for acked in candidates {
            let leader = self.leader().await.ok()?;
            let replicas = self.fc.catalog_replicas(leader, &acked.file_id).await?;
            let mut holders: Vec<usize> = replicas
                .iter()
                .filter_map(|id| self.fc.index_of(id))
                .filter(|n| self.fc.blob_path(*n, &acked.file_id).exists())
                .collect();
            holders.shuffle(&mut rng);
            if let Some(node) = holders.first() {
                return Some((*node, acked));
            }
        }
        None
    }

    /// Stops a node, flips bits in the tail of its Raft log and starts it
    /// again. Records whether it started cleanly or refused to start, and
    /// restores the log from a copy when it did not start.
    async fn corrupt_raft_log(&mut self) -> Result<(String, Option<Failover>)> {
        let node = self.rng.gen_range(0..self.fc.len());
        let path = self.fc.raft_log_path(node);
        self.fc.kill(node);
        let backup = path.with_extension("redb.before-fault");
        std::fs::copy(&path, &backup)?;
        let offsets = flip_log_tail(&path, &mut self.rng)?;
        self.fc.restart(node)?;
        let outcome = self.observe_start(node).await;
        let id = self.fc.id(node).to_string();
        let restored = !matches!(outcome, RaftLogOutcome::StartedCleanly);
        match &outcome {
            RaftLogOutcome::StartedCleanly | RaftLogOutcome::Refused { .. } => {}
            RaftLogOutcome::Crashed { message } => self.violation(format!(
                "{id} crashed on a Raft log with flipped bits instead of refusing with an error: {message}"
            )),
            RaftLogOutcome::Hung { reason } => self.violation(format!(
                "{id} neither started nor refused on a Raft log with flipped bits: {reason}"
            )),
        }
        if restored {
            self.fc.kill(node);
            std::fs::copy(&backup, &path)?;
            self.fc.restart(node)?;
        }
        let _ = std::fs::remove_file(&backup);
        let detail = format!(
            "flipped bits at {offsets:?} of {id}'s raft log: {outcome:?}{}",
            if restored {
                "; log restored from a copy"
            } else {
                ""
            }
        );
        self.raft_logs.push(RaftLogRecord {
            node: id,
            offsets,
            outcome,
        });
        Ok((detail, None))
    }

    async fn observe_start(&mut self, node: usize) -> RaftLogOutcome {
        let started = Instant::now();
        while started.elapsed() < RAFT_LOG_OBSERVE {
            if let Some(status) = self.fc.cluster.nodes[node].exit_status() {
                let log = self.fc.cluster.nodes[node].log_tail(20);
                let error_line = log
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("error:"))
                    .map(str::to_string);
                return match error_line {
                    Some(line) if !log.contains("panicked") => {
                        RaftLogOutcome::Refused { message: line }
                    }
                    _ => RaftLogOutcome::Crashed {
                        message: format!("{status}; last log lines:\n{log}"),
                    },
                };
            }
            if self.fc.agreement().await.is_ok() {
                return RaftLogOutcome::StartedCleanly;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let reason = match self.fc.agreement().await {
            Ok(_) => "agreement reached at the last moment".to_string(),
            Err(reason) => reason,
        };
        RaftLogOutcome::Hung { reason }
    }

    /// Probes the majority with small uploads from now on and returns when
    /// a new leader was reported and a probe was acknowledged.
    async fn measure_failover(&self, old_leader: usize, majority: Vec<usize>) -> Failover {
        let started = Instant::now();
        let election = async {
            while started.elapsed() < FAILOVER_BOUND {
                if let Some(leader) = self.fc.leader_among(&majority).await {
                    if leader != old_leader {
                        return Some(started.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        };
        let write = probe_writes(&self.fc.workload, &majority, started);
        let (election, write) = tokio::join!(election, write);
        Failover { election, write }
    }

    /// Waits until no node's term changed for [`STABLE_TERM_WINDOW`], so
    /// one leader loss does not start while the last one still echoes.
    async fn wait_stable_term(&mut self) {
        let started = Instant::now();
        let mut term = self.fc.max_term().await;
        let mut since = Instant::now();
        while since.elapsed() < STABLE_TERM_WINDOW {
            if started.elapsed() > STABLE_TERM_BOUND {
                self.violation(format!(
                    "terms still changing {STABLE_TERM_BOUND:?} after the last fault"
                ));
                return;
            }
            tokio::time::sleep(POLL_INTERVAL * 2).await;
            let now = self.fc.max_term().await;
            if now != term {
                term = now;
                since = Instant::now();
            }
        }
        if started.elapsed() > STABLE_TERM_WINDOW + POLL_INTERVAL * 4 {
            eprintln!(
                "terms settled {:.1} s after the fault-free gap began",
                started.elapsed().as_secs_f64()
            );
        }
    }

    /// Waits until every node agrees and a write succeeds; returns the
    /// time that took, or records a violation.
    async fn recover(&mut self, index: usize) -> Option<Duration> {
        let started = Instant::now();
        self.restart_exited().await;
        if let Err(reason) = self.fc.wait_converged(RECOVERY_BOUND).await {
            self.violation(format!("fault {index}: {reason}"));
            return None;
        }
        let node = self.rng.gen_range(0..self.fc.len());
        loop {
            let file = self.fc.workload.new_file(PROBE_DATA_BYTES);
            let op = self
                .fc
                .workload
                .upload(OpKind::RecoveryWrite, node, file)
                .await;
            if op.outcome.acknowledged_upload() {
                return Some(started.elapsed());
            }
            if started.elapsed() > RECOVERY_BOUND {
                self.violation(format!(
                    "fault {index}: no write succeeded through {} within {RECOVERY_BOUND:?} of healing; last: {}",
                    self.fc.id(node),
                    op.outcome
                ));
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts nodes that exited on their own, after their exit was
    /// recorded as a violation.
    async fn restart_exited(&mut self) {
        for exit in self.fc.unexpected_exits() {
            self.violation(exit);
        }
        for node in 0..self.fc.len() {
            if self.fc.state(node) == NodeState::Killed {
                if let Err(error) = self.fc.restart(node) {
                    self.violation(format!("cannot restart {}: {error}", self.fc.id(node)));
                }
            }
        }
    }

    /// Heals the network, continues paused nodes, restarts stopped ones and
    /// waits for the cluster to converge.
    async fn heal_all(&mut self) {
        self.fc.network.heal();
        for node in 0..self.fc.len() {
            if self.fc.state(node) == NodeState::Paused {
                if let Err(error) = self.fc.resume(node) {
                    self.violation(format!("cannot resume {}: {error}", self.fc.id(node)));
                }
            }
        }
        self.restart_exited().await;
        if let Err(reason) = self.fc.wait_converged(RECOVERY_BOUND).await {
            self.violation(format!("after healing everything: {reason}"));
        }
    }

    /// Waits for the corruption watchers, at most until their bound.
    pub async fn finish_watchers(&mut self) {
        for watcher in self.watchers.drain(..) {
            let _ = watcher.await;
        }
    }

    pub fn replication_bound(&self) -> Duration {
        REPLICATION_BOUND
    }
}

/// Starts a lock probe on the next node of `nodes` every
/// [`PROBE_INTERVAL`] and returns the time from `started` to the first
/// committed one.
async fn probe_writes(
    workload: &Arc<Workload>,
    nodes: &[usize],
    started: Instant,
) -> Option<Duration> {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<bool>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    let mut sent = 0usize;
    while started.elapsed() < FAILOVER_BOUND {
        tokio::select! {
            biased;
            Some(acknowledged) = done_rx.recv() => {
                if acknowledged {
                    return Some(started.elapsed());
                }
            }
            _ = ticker.tick() => {
                if in_flight.load(Ordering::SeqCst) >= MAX_PROBES_IN_FLIGHT {
                    continue;
                }
                let node = nodes[sent % nodes.len()];
                sent += 1;
                let workload = workload.clone();
                let done_tx = done_tx.clone();
                let in_flight = in_flight.clone();
                in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let op = workload.lock_probe(OpKind::FailoverProbe, node).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let _ = done_tx.send(op.outcome.committed_lock_probe());
                });
            }
        }
    }
    None
}

async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
}

/// Returns whether `dir` has a file whose name starts with `prefix`.
fn dir_has_file_starting(dir: &std::path::Path, prefix: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
}
