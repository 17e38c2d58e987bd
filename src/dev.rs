//! The `dispotify dev` command: a local cluster of N nodes on 127.0.0.1,
//! each a child process running `dispotify serve`.
//!
//! Addresses, for `--http-port P` (default 8081) and node `i` from 1 to N:
//!
//! ```text
//! node id    nodeI
//! HTTP       127.0.0.1:(P + i - 1)         web app and public API
//! QUIC       127.0.0.1:(P + 100 + i - 1)   internal traffic, UDP
//! data       DATA/nodeI/                   blobs, Raft log, SQLite catalog
//! log        DATA/nodeI/node.log           the node's stdout and stderr, appended
//! certs      DATA/certs/nodeI/             node.pem, node.key, ca.pem
//! ```
//!
//! Node 1 bootstraps the cluster and is every other node's seed. Node 1 is
//! started first, and the rest once node 1 responds to `GET /health`. When
//! every node is healthy, the command waits up to [`READY_TIMEOUT`] for
//! `GET /ready` on each node and then prints the addresses.
//! Re-running the command reuses DATA, so the catalog, the blobs and the
//! certificates survive restarts.
//!
//! The children run in their own process group, so a Ctrl-C in the terminal
//! reaches only this process. It then sends SIGTERM to every node, waits up
//! to [`SHUTDOWN_GRACE`], and sends SIGKILL to those still running. A node
//! that dies while the cluster runs is reported with the end of its log, and
//! the others keep running.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// Largest number of nodes. Nine keeps node ids at one digit, so they sort
/// by name, and keeps the cluster light enough for a laptop.
pub const MAX_DEV_NODES: usize = 9;

/// Distance between a node's HTTP port and its QUIC port. It is larger than
/// [`MAX_DEV_NODES`], so the two port ranges never overlap.
pub const QUIC_PORT_OFFSET: u16 = 100;

/// Time a node waits between SIGTERM and SIGKILL at shutdown. A node drains
/// its open requests and flushes its Raft log in far less.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Time allowed for each start-up phase (node 1 alone, then the others) to
/// respond to `GET /health`. Opening an existing catalog and replaying the Raft
/// log of a dev cluster takes seconds, so this only catches a stuck node.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Time allowed, once every node is healthy, for every node to report
/// `GET /ready` (joined, leader known, log applied). Past it the cluster
/// keeps running and the summary names the nodes that are not ready yet.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two health probes of a starting node.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Time one health probe may take. A node on loopback responds within
/// milliseconds, so a slower probe is abandoned and retried.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between two checks of whether a child has exited, while the
/// cluster runs and while it stops.
const CHILD_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Number of log lines shown when a node fails.
const LOG_TAIL_LINES: usize = 20;

/// Maximum bytes read from the end of a log to find those lines, so a long
/// log is never read whole.
const LOG_TAIL_MAX_BYTES: u64 = 16 * 1024;

/// Arguments of `dispotify dev`.
#[derive(Clone, Debug, clap::Args)]
pub struct DevArgs {
    /// Number of nodes, from 1 to 9.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// HTTP port of node 1. Node i listens on this port + i - 1 for HTTP and
    /// on this port + 100 + i - 1 for QUIC.
    #[arg(long, default_value_t = 8081)]
    pub http_port: u16,
    /// Directory for every node's data, certificates and log.
    #[arg(long, default_value = ".dev-cluster")]
    pub data_dir: PathBuf,
}

impl Default for DevArgs {
    fn default() -> Self {
        Self {
            nodes: 3,
            http_port: 8081,
            data_dir: PathBuf::from(".dev-cluster"),
        }
    }
}

/// Errors of `dispotify dev`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    #[error("invalid node count {nodes}: use 1 to {MAX_DEV_NODES}")]
    InvalidNodeCount { nodes: usize },
    #[error(
        "HTTP port {http_port} with {nodes} nodes needs ports up to {highest_port}, \
         above 65535: choose a lower --http-port"
    )]
    PortsOutOfRange {
        http_port: u16,
        nodes: usize,
        highest_port: u32,
    },
    #[error("--http-port must not be 0, because every node needs a fixed port")]
    ZeroPort,
    #[error(
        "{protocol} port {port} on 127.0.0.1 is already in use (stop what uses it, \
         perhaps an earlier `dispotify dev`, or choose another --http-port)"
    )]
    PortBusy {
        port: u16,
        protocol: &'static str,
        source: std::io::Error,
    },
    #[error("cannot create {path}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot prepare dev certificates in {dir}")]
    Certificates {
        dir: PathBuf,
        source: dispotify_certs::CertError,
    },
    #[error("cannot find this program's path to start the nodes")]
    CurrentExe { source: std::io::Error },
    #[error("cannot open the log {path}")]
    OpenLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {node_id}")]
    Spawn {
        node_id: String,
        source: std::io::Error,
    },
    #[error("cannot listen for {signal}")]
    SignalHandler {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client for health checks")]
    HttpClient { source: reqwest::Error },
    #[error("{node_id} exited during start-up ({status}); last lines of {}:\n{log_tail}", log_path.display())]
    ExitedDuringStartup {
        node_id: String,
        status: ExitStatus,
        log_path: PathBuf,
        log_tail: String,
    },
    #[error(
        "{node_id} did not respond to {url} within {} s; last lines of {}:\n{log_tail}",
        timeout.as_secs(),
        log_path.display()
    )]
    NotHealthy {
        node_id: String,
        url: String,
        timeout: Duration,
        log_path: PathBuf,
        log_tail: String,
    },
    #[error("every node has exited; see the logs under {}", data_dir.display())]
    AllNodesExited { data_dir: PathBuf },
}

/// One node of the dev cluster: its id, addresses and files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevNode {
    pub id: String,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub cert_dir: PathBuf,
    pub log_path: PathBuf,
}

impl DevNode {
    /// Returns the base URL of the node's web app and public API.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Builds the arguments of `dispotify serve` for this node.
    pub fn serve_args(&self, seed: SocketAddr, bootstrap: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--id".into(),
            self.id.clone().into(),
            "--data-dir".into(),
            self.data_dir.clone().into(),
            "--http".into(),
            self.http_addr.to_string().into(),
            "--quic".into(),
            self.quic_addr.to_string().into(),
            "--certs".into(),
            self.cert_dir.clone().into(),
            "--seeds".into(),
            seed.to_string().into(),
        ];
        if bootstrap {
            args.push("--bootstrap".into());
        }
        args
    }
}

/// Lays out the nodes for `args` under `data_dir`: ids, ports and paths.
pub fn plan_nodes(args: &DevArgs, data_dir: &Path) -> Result<Vec<DevNode>, DevError> {
    if args.nodes == 0 || args.nodes > MAX_DEV_NODES {
        return Err(DevError::InvalidNodeCount { nodes: args.nodes });
    }
    if args.http_port == 0 {
        return Err(DevError::ZeroPort);
    }
    // `nodes` is at most MAX_DEV_NODES here, so the cast is lossless.
    let last_offset = args.nodes as u32 - 1;
    let highest_port = u32::from(args.http_port) + u32::from(QUIC_PORT_OFFSET) + last_offset;
    if highest_port > u32::from(u16::MAX) {
        return Err(DevError::PortsOutOfRange {
            http_port: args.http_port,
            nodes: args.nodes,
            highest_port,
        });
    }

    let nodes = (0..args.nodes as u16)
        .map(|index| {
            let id = format!("node{}", index + 1);
            let http_port = args.http_port + index;
            let quic_port = args.http_port + QUIC_PORT_OFFSET + index;
            let node_dir = data_dir.join(&id);
            DevNode {
                http_addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, http_port).into(),
                quic_addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, quic_port).into(),
                cert_dir: data_dir.join("certs").join(&id),
                log_path: node_dir.join("node.log"),
                data_dir: node_dir,
                id,
            }
        })
        .collect();
    Ok(nodes)
}

/// Checks that every node's HTTP (TCP) and QUIC (UDP) port is free on
/// 127.0.0.1, naming the first busy one.
///
/// NOTE: another program can still take a port between this check and the
/// node's own bind. The node then fails to start and its log shows why.
pub fn check_ports_free(nodes: &[DevNode]) -> Result<(), DevError> {
    let mut held_tcp = Vec::new();
    let mut held_udp = Vec::new();
    for node in nodes {
        let listener =
            std::net::TcpListener::bind(node.http_addr).map_err(|source| DevError::PortBusy {
                port: node.http_addr.port(),
                protocol: "TCP",
                source,
            })?;
        held_tcp.push(listener);
    }
    for node in nodes {
        let socket =
            std::net::UdpSocket::bind(node.quic_addr).map_err(|source| DevError::PortBusy {
                port: node.quic_addr.port(),
                protocol: "UDP",
                source,
            })?;
        held_udp.push(socket);
    }
    Ok(())
}

/// Creates or reuses the dev CA and one certificate per node.
fn prepare_certificates(data_dir: &Path, nodes: &[DevNode]) -> Result<(), DevError> {
    let dir = data_dir.join("certs");
    let ids: Vec<String> = nodes.iter().map(|node| node.id.clone()).collect();
    dispotify_certs::dev_certificates(&dir, &ids)
        .map_err(|source| DevError::Certificates { dir, source })
}

/// A started node process.
struct RunningNode {
    node: DevNode,
    child: Child,
    /// Set once the process has exited and been reaped.
    exit_status: Option<ExitStatus>,
}

impl RunningNode {
    /// Checks whether the process has exited, without blocking. Returns the
    /// status only the first time it is seen.
    fn poll_newly_exited(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_some() {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit_status = Some(status);
                Some(status)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(node_id = %self.node.id, %error, "cannot check whether a dev node exited");
                None
            }
        }
    }
}

/// Environment variables that configure a node. The children do not
/// inherit them, so the flags alone decide each node's settings (a
/// `DISPOTIFY_DATABASE_URL` in the shell would otherwise point every node at
/// one database). `DISPOTIFY_LOG*` passes through to set the log filter.
fn is_node_setting(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b"DISPOTIFY_") && !name.starts_with(b"DISPOTIFY_LOG")
}

/// Starts `program args` as a node, with stdout and stderr appended to the
/// node's log and stdin closed, in a process group of its own.
fn spawn_node(program: &Path, args: &[OsString], node: &DevNode) -> Result<RunningNode, DevError> {
    std::fs::create_dir_all(&node.data_dir).map_err(|source| DevError::CreateDir {
        path: node.data_dir.clone(),
        source,
    })?;
    let open_log_error = |source| DevError::OpenLog {
        path: node.log_path.clone(),
        source,
    };
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log_path)
        .map_err(open_log_error)?;
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    writeln!(
        log,
        "==== dispotify dev: starting {} at unix time {started_at} ====",
        node.id
    )
    .map_err(open_log_error)?;
    let log_for_stderr = log.try_clone().map_err(open_log_error)?;

    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        .process_group(0)
        // Dropping the handle without a clean stop (an error or a panic
        // here) must not leave a node running in the background.
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os().filter(|(name, _)| is_node_setting(name)) {
        command.env_remove(name);
    }
    // The log is a file, so the node's text log format must not write
    // terminal colour codes. tracing-subscriber (0.3.23) honours NO_COLOR.
    command.env("NO_COLOR", "1");
    let child = command.spawn().map_err(|source| DevError::Spawn {
        node_id: node.id.clone(),
        source,
    })?;
    tracing::debug!(node_id = %node.id, pid = child.id(), "started dev node");

    Ok(RunningNode {
        node: node.clone(),
        child,
        exit_status: None,
    })
}

/// Waits until `running` responds to `GET /health` with a success status,
/// it exits, or `deadline` passes.
async fn wait_healthy(
    client: &reqwest::Client,
    running: &mut RunningNode,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), DevError> {
    let url = format!("{}/health", running.node.api_url());
    loop {
        if let Some(status) = running.poll_newly_exited() {
            return Err(DevError::ExitedDuringStartup {
                node_id: running.node.id.clone(),
                status,
                log_path: running.node.log_path.clone(),
                log_tail: log_tail(&running.node.log_path),
            });
        }
        let probe = client
            .get(&url)
            .timeout(HEALTH_REQUEST_TIMEOUT)
            .send()
            .await;
        if probe.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DevError::NotHealthy {
                node_id: running.node.id.clone(),
                url,
                timeout,
                log_path: running.node.log_path.clone(),
                log_tail: log_tail(&running.node.log_path),
            });
        }
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
    }
}

/// Starts node 1, waits for it, then starts and waits for the others.
/// Started nodes are pushed to `cluster` as they start, so the caller can
/// stop them whatever the result.
async fn start_nodes(
    program: &Path,
    nodes: &[DevNode],
    client: &reqwest::Client,
    cluster: &mut Vec<RunningNode>,
) -> Result<(), DevError> {
    let Some((first, rest)) = nodes.split_first() else {
        return Ok(());
    };
    let seed = first.quic_addr;

    cluster.push(spawn_node(program, &first.serve_args(seed, true), first)?);
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for running in cluster.iter_mut() {
        wait_healthy(client, running, deadline, STARTUP_TIMEOUT).await?;
    }

    for node in rest {
        cluster.push(spawn_node(program, &node.serve_args(seed, false), node)?);
    }
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for running in cluster.iter_mut().skip(1) {
        wait_healthy(client, running, deadline, STARTUP_TIMEOUT).await?;
    }
    Ok(())
}

/// Waits up to `timeout` for every node to return a success status from
/// `GET /ready`, and returns the ids of the nodes that did not.
async fn wait_ready(client: &reqwest::Client, nodes: &[DevNode], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut waiting: Vec<&DevNode> = nodes.iter().collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still_waiting = Vec::new();
        for node in waiting {
            let probe = client
                .get(format!("{}/ready", node.api_url()))
                .timeout(HEALTH_REQUEST_TIMEOUT)
                .send()
                .await;
            if !probe.is_ok_and(|response| response.status().is_success()) {
                still_waiting.push(node);
            }
        }
        waiting = still_waiting;
        if !waiting.is_empty() {
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }
    waiting.into_iter().map(|node| node.id.clone()).collect()
}

/// SIGINT (Ctrl-C) and SIGTERM, the two requests to stop the cluster.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self, DevError> {
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| DevError::SignalHandler {
                signal: name,
                source,
            })
        };
        Ok(Self {
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Waits for either signal and returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Watches the running nodes until a shutdown signal arrives, reporting
/// each node that exits. Fails when no node is left.
async fn supervise(
    cluster: &mut [RunningNode],
    signals: &mut ShutdownSignals,
    data_dir: &Path,
) -> Result<(), DevError> {
    loop {
        tokio::select! {
            biased;
            signal = signals.recv() => {
                tracing::debug!(signal, "stopping the dev cluster");
                return Ok(());
            }
            _ = tokio::time::sleep(CHILD_POLL_INTERVAL) => {}
        }

        for message in reap_exited(cluster) {
            eprintln!("{message}");
        }
        if cluster.iter().all(|running| running.exit_status.is_some()) {
            return Err(DevError::AllNodesExited {
                data_dir: data_dir.to_path_buf(),
            });
        }
    }
}

/// Checks every node for an exit and returns one report per node that has
/// exited since the last check.
fn reap_exited(cluster: &mut [RunningNode]) -> Vec<String> {
    let mut reports = Vec::new();
    for running in cluster.iter_mut() {
        let Some(status) = running.poll_newly_exited() else {
            continue;
        };
        tracing::warn!(node_id = %running.node.id, %status, "dev node exited");
        reports.push(format!(
            "{} exited unexpectedly ({status}); the other nodes keep running. \
             Last lines of {}:\n{}",
            running.node.id,
            running.node.log_path.display(),
            log_tail(&running.node.log_path),
        ));
    }
    reports
}

/// Final state of one node after the cluster was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopOutcome {
    /// The node had already exited before the stop began.
    AlreadyExited,
    /// The node exited after SIGTERM.
    Stopped,
    /// The node was still running after the grace period and got SIGKILL.
    Killed,
}

/// Stops every node: SIGTERM to all, up to `grace` for them to exit, then
/// SIGKILL to those left. Returns each node's id with how it ended.
async fn stop_all(cluster: &mut [RunningNode], grace: Duration) -> Vec<(String, StopOutcome)> {
    let mut outcomes: Vec<(String, StopOutcome)> = Vec::new();
    for running in cluster.iter_mut() {
        let outcome = if running.exit_status.is_some() || running.poll_newly_exited().is_some() {
            StopOutcome::AlreadyExited
        } else {
            send_sigterm(&running.child);
            StopOutcome::Stopped
        };
        outcomes.push((running.node.id.clone(), outcome));
    }

    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && cluster.iter().any(|running| running.exit_status.is_none()) {
        tokio::time::sleep(CHILD_POLL_INTERVAL.min(grace)).await;
        for running in cluster.iter_mut() {
            running.poll_newly_exited();
        }
    }

    for (running, (_, outcome)) in cluster.iter_mut().zip(outcomes.iter_mut()) {
        if running.exit_status.is_some() {
            continue;
        }
        tracing::warn!(node_id = %running.node.id, grace_s = grace.as_secs(), "dev node ignored SIGTERM, sending SIGKILL");
        if let Err(error) = running.child.kill().await {
            tracing::warn!(node_id = %running.node.id, %error, "cannot kill dev node");
        }
        running.exit_status = running.child.try_wait().ok().flatten();
        *outcome = StopOutcome::Killed;
    }
    outcomes
}

/// Sends SIGTERM to `child` unless it has already been reaped.
fn send_sigterm(child: &Child) {
    // `id` returns None once the child has been reaped, so the pid below
    // still belongs to this child and cannot have been reused.
    let Some(pid) = child.id() else {
        return;
    };
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes two integers and reads or writes no memory of
    // this process.
    let result = unsafe { libc::kill(pid, libc::SIGTERM) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(pid, %error, "cannot send SIGTERM to dev node");
    }
}

/// Returns the last [`LOG_TAIL_LINES`] lines of the log at `path`, indented
/// for display, or a note saying why they cannot be read.
fn log_tail(path: &Path) -> String {
    match read_tail(path, LOG_TAIL_MAX_BYTES) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            if lines.is_empty() {
                return "    (the log is empty)".to_string();
            }
            lines[start..]
                .iter()
                .map(|line| format!("    {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(error) => format!("    (cannot read the log: {error})"),
    }
}

/// Reads at most `max_bytes` from the end of the file at `path`, dropping a
/// first line cut in the middle.
fn read_tail(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let start = length.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(max_bytes).read_to_end(&mut bytes)?;

    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start == 0 {
        return Ok(text);
    }
    Ok(match text.split_once('\n') {
        Some((_, rest)) => rest.to_string(),
        None => String::new(),
    })
}

/// Starts the nodes, then waits for them to be ready, and returns the ids
/// of the nodes that are running but not ready yet.
async fn start_and_wait_ready(
    program: &Path,
    nodes: &[DevNode],
    client: &reqwest::Client,
    cluster: &mut Vec<RunningNode>,
) -> Result<Vec<String>, DevError> {
    start_nodes(program, nodes, client, cluster).await?;
    Ok(wait_ready(client, nodes, READY_TIMEOUT).await)
}

/// Prints the addresses, logs and next steps once every node is healthy.
fn print_summary(nodes: &[DevNode], data_dir: &Path, not_ready: &[String]) {
    let Some(first) = nodes.first() else {
        return;
    };
    println!(
        "Dispotify dev cluster is running: {} nodes, data in {}",
        nodes.len(),
        data_dir.display()
    );

    println!();
    println!(
        "  {:<6} {:<24} {:<17} log",
        "node", "web app and API", "QUIC (UDP)"
    );
    for node in nodes {
        println!(
            "  {:<6} {:<24} {:<17} {}",
            node.id,
            node.api_url(),
            node.quic_addr.to_string(),
            node.log_path.display()
        );
    }

    if !not_ready.is_empty() {
        println!();
        println!(
            "Not ready after {} s (still joining the cluster): {}. \
             Uploads may be rejected until /ready returns 200 on every node.",
            READY_TIMEOUT.as_secs(),
            not_ready.join(", ")
        );
    }

    println!();
    println!("Upload a folder of music:");
    println!(
        "  cargo run --release -- upload --server {} path/to/music",
        first.api_url()
    );
    println!("Cluster status: {}/cluster/status", first.api_url());
    println!();
    println!("Press Ctrl-C to stop.");
}

fn print_stop_report(outcomes: &[(String, StopOutcome)]) {
    for (node_id, outcome) in outcomes {
        match outcome {
            StopOutcome::AlreadyExited => println!("{node_id} had already exited"),
            StopOutcome::Stopped => println!("{node_id} stopped"),
            StopOutcome::Killed => println!(
                "{node_id} killed: still running {} s after SIGTERM",
                SHUTDOWN_GRACE.as_secs()
            ),
        }
    }
}

/// Runs `dispotify dev`: starts the cluster, prints where everything is, and
/// keeps it running until Ctrl-C or SIGTERM. A failed start stops the nodes
/// already started and returns the error, with the failing node's log tail.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.data_dir).map_err(|source| DevError::CreateDir {
        path: args.data_dir.clone(),
        source,
    })?;
    let nodes = plan_nodes(&args, &data_dir)?;
    check_ports_free(&nodes)?;
    ensure_web_app_built().await?;
    std::fs::create_dir_all(&data_dir).map_err(|source| DevError::CreateDir {
        path: data_dir.clone(),
        source,
    })?;
    prepare_certificates(&data_dir, &nodes)?;
    let program = std::env::current_exe().map_err(|source| DevError::CurrentExe { source })?;
    let mut signals = ShutdownSignals::install()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|source| DevError::HttpClient { source })?;

    println!(
        "Starting {} nodes; logs go to {}/nodeN/node.log",
        nodes.len(),
        data_dir.display()
    );
    let mut cluster = Vec::with_capacity(nodes.len());
    let started = tokio::select! {
        biased;
        signal = signals.recv() => {
            tracing::debug!(signal, "start-up interrupted");
            None
        }
        result = start_and_wait_ready(&program, &nodes, &client, &mut cluster) => Some(result),
    };
    let outcome = match started {
        None => Ok(()),
        Some(Err(error)) => Err(error),
        Some(Ok(not_ready)) => {
            print_summary(&nodes, &data_dir, &not_ready);
            supervise(&mut cluster, &mut signals, &data_dir).await
        }
    };

    println!(
        "Stopping the dev cluster (up to {} s)",
        SHUTDOWN_GRACE.as_secs()
    );
    let stop_outcomes = stop_all(&mut cluster, SHUTDOWN_GRACE).await;
    print_stop_report(&stop_outcomes);
    Ok(outcome?)
}

/// Environment variable that skips the web app build, for a machine
/// without Node.js; the nodes then serve whatever `frontend/` holds.
pub const SKIP_WEB_BUILD_VAR: &str = "DISPOTIFY_SKIP_WEB_BUILD";

/// Errors of building the web app before the cluster starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebBuildError {
    #[error(
        "npm was not found, and the web app in {} needs building: install Node.js 20.19 \
         or newer with npm, or set {SKIP_WEB_BUILD_VAR}=1 to start without the web app",
        frontend.display()
    )]
    NpmMissing {
        frontend: PathBuf,
        source: std::io::Error,
    },
    #[error("`npm {step}` failed in {} ({status}); its output is above", frontend.display())]
    StepFailed {
        step: &'static str,
        frontend: PathBuf,
        status: ExitStatus,
    },
    #[error("cannot run `npm {step}` in {}", frontend.display())]
    StepSpawn {
        step: &'static str,
        frontend: PathBuf,
        source: std::io::Error,
    },
}

/// Files and directories of `frontend/` whose changes call for a rebuild.
const WEB_SOURCES: &[&str] = &[
    "src",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
];

/// Builds `frontend/dist` with `npm ci` and `npm run build` when it is
/// missing or older than the app's sources, so the first `dispotify dev`
/// on a fresh checkout serves the real app. Does nothing when the binary
/// runs outside its source tree or [`SKIP_WEB_BUILD_VAR`] is set.
async fn ensure_web_app_built() -> Result<(), WebBuildError> {
    let frontend = Path::new(env!("CARGO_MANIFEST_DIR")).join("frontend");
    if std::env::var_os(SKIP_WEB_BUILD_VAR).is_some() || !frontend.join("package.json").exists() {
        return Ok(());
    }
    let built = modified(&frontend.join("dist").join("index.html"));
    let newest_source = WEB_SOURCES
        .iter()
        .filter_map(|name| newest_modified(&frontend.join(name)))
        .max();
    if let (Some(built), Some(source)) = (built, newest_source) {
        if built >= source {
            return Ok(());
        }
    }

    let npm_check = Command::new("npm").arg("--version").output().await;
    if let Err(source) = npm_check {
        return Err(WebBuildError::NpmMissing { frontend, source });
    }
    let installed = modified(&frontend.join("node_modules").join(".package-lock.json"));
    let locked = modified(&frontend.join("package-lock.json"));
    let steps: &[(&str, &[&str])] = if installed.is_some() && installed >= locked {
        &[("run build", &["run", "build"])]
    } else {
        &[
            ("ci", &["ci", "--no-audit", "--no-fund"]),
            ("run build", &["run", "build"]),
        ]
    };
    println!(
        "Building the web app in {} (npm ci, then vite build); the first build takes a minute or two",
        frontend.display()
    );
    for (step, args) in steps {
        let status = Command::new("npm")
            .args(*args)
            .current_dir(&frontend)
            .status()
            .await
            .map_err(|source| WebBuildError::StepSpawn {
                step,
                frontend: frontend.clone(),
                source,
            })?;
        if !status.success() {
            return Err(WebBuildError::StepFailed {
                step,
                frontend,
                status,
            });
        }
    }
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Newest modification time of a file, or of any file under a directory.
fn newest_modified(path: &Path) -> Option<SystemTime> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_dir() {
        return metadata.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| newest_modified(&entry.path()))
        .max()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::routing::get;
    use axum::Router;

    use super::*;

    fn args(nodes: usize, http_port: u16) -> DevArgs {
        DevArgs {
            nodes,
            http_port,
            data_dir: PathBuf::from("/unused"),
        }
    }

    /// Builds a dev node whose files live in `dir` and whose HTTP port is `http_port`.
    fn node_in(dir: &Path, http_port: u16) -> DevNode {
        let data_dir = Path::new(dir).join("data");
        DevNode {
            id: "node1".to_string(),
            http_addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, http_port).into(),
            quic_addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1).into(),
            log_path: data_dir.join("node.log"),
            cert_dir: dir.join("certs"),
            data_dir,
        }
    }

    fn shell(node: &DevNode, script: &str) -> RunningNode {
        let args = ["-c".into(), script.into()];
        spawn_node(Path::new("/bin/sh"), &args, node).unwrap()
    }

    /// Finds a loopback port with nothing listening on it.
    fn unused_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[test]
    fn plan_assigns_ids_ports_and_paths() {
        let data_dir = Path::new("/tmp/cluster");

        let nodes = plan_nodes(&args(3, 8081), data_dir).unwrap();

        let ids: Vec<&str> = nodes.iter().map(|node| node.id.as_str()).collect();
        assert_eq!(ids, ["node1", "node2", "node3"]);
        let third = &nodes[2];
        assert_eq!(third.http_addr.to_string(), "127.0.0.1:8083");
        assert_eq!(third.quic_addr.to_string(), "127.0.0.1:8183");
        assert_eq!(third.data_dir, Path::new("/tmp/cluster/node3"));
        assert_eq!(third.cert_dir, Path::new("/tmp/cluster/certs/node3"));
        assert_eq!(third.log_path, Path::new("/tmp/cluster/node3/node.log"));
        assert_eq!(third.api_url(), "http://127.0.0.1:8083");
    }

    #[test]
    fn plan_rejects_bad_node_counts() {
        for nodes in [0, MAX_DEV_NODES + 1] {
            let result = plan_nodes(&args(nodes, 8081), Path::new("/tmp"));
            assert!(
                matches!(result, Err(DevError::InvalidNodeCount { nodes: n }) if n == nodes),
                "{nodes} nodes: {result:?}"
            );
        }
        assert_eq!(
            plan_nodes(&args(MAX_DEV_NODES, 8081), Path::new("/tmp"))
                .unwrap()
                .len(),
            9
        );
    }

    #[test]
    fn plan_rejects_ports_past_65535() {
        let result = plan_nodes(&args(3, 65_434), Path::new("/tmp"));

        assert!(
            matches!(
                result,
                Err(DevError::PortsOutOfRange {
                    highest_port: 65_536,
                    ..
                })
            ),
            "{result:?}"
        );
        let highest_fitting = plan_nodes(&args(3, 65_433), Path::new("/tmp")).unwrap();
        assert_eq!(highest_fitting[2].quic_addr.port(), 65_535);
        assert!(matches!(
            plan_nodes(&args(3, 0), Path::new("/tmp")),
            Err(DevError::ZeroPort)
        ));
    }

    #[test]
    fn only_node1_bootstraps_and_all_seed_from_it() {
        let nodes = plan_nodes(&args(2, 9000), Path::new("/data")).unwrap();
        let seed = nodes[0].quic_addr;

        let first = nodes[0].serve_args(seed, true);
        let second = nodes[1].serve_args(seed, false);

        let expected_second: Vec<OsString> = [
            "serve",
            "--id",
            "node2",
            "--data-dir",
            "/data/node2",
            "--http",
            "127.0.0.1:9001",
            "--quic",
            "127.0.0.1:9101",
            "--certs",
            "/data/certs/node2",
            "--seeds",
            "127.0.0.1:9100",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        assert_eq!(second, expected_second);
        assert_eq!(first.last().unwrap(), "--bootstrap");
        assert!(first
            .windows(2)
            .any(|pair| pair == ["--seeds", "127.0.0.1:9100"]));
    }

    #[test]
    fn busy_tcp_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let node = node_in(dir.path(), port);

        let error = check_ports_free(&[node]).unwrap_err();

        assert!(
            matches!(error, DevError::PortBusy { port: p, protocol: "TCP", .. } if p == port),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&format!("TCP port {port}")),
            "{error}"
        );
    }

    #[test]
    fn busy_udp_port_is_named() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut node = node_in(dir.path(), unused_port());
        node.quic_addr = socket.local_addr().unwrap();

        let error = check_ports_free(&[node]).unwrap_err();

        assert!(
            matches!(error, DevError::PortBusy { port: p, protocol: "UDP", .. } if p == port),
            "{error:?}"
        );
    }

    #[test]
    fn free_ports_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut node = node_in(dir.path(), unused_port());
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        node.quic_addr = socket.local_addr().unwrap();
        drop(socket);

        check_ports_free(&[node]).unwrap();
    }

    #[test]
    fn node_settings_are_not_inherited() {
        assert!(is_node_setting("DISPOTIFY_DATABASE_URL".as_ref()));
        assert!(is_node_setting("DISPOTIFY_SEEDS".as_ref()));
        assert!(!is_node_setting("DISPOTIFY_LOG".as_ref()));
        assert!(!is_node_setting("DISPOTIFY_LOG_JSON".as_ref()));
        assert!(!is_node_setting("RUST_LOG".as_ref()));
    }

    #[test]
    fn newest_modified_walks_directories() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("src").join("views");
        std::fs::create_dir_all(&nested).unwrap();
        let old = dir.path().join("src").join("old.ts");
        let new = nested.join("new.ts");
        std::fs::write(&old, "old").unwrap();
        std::fs::write(&new, "new").unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();

        let newest = newest_modified(&dir.path().join("src"));
        assert_eq!(newest, modified(&new));
        assert!(newest > Some(hour_ago));
        assert_eq!(newest_modified(&old), Some(hour_ago));
        assert_eq!(newest_modified(&dir.path().join("missing")), None);
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let text: String = (1..=50).map(|line| format!("line {line}\n")).collect();
        std::fs::write(&path, text).unwrap();

        let tail = log_tail(&path);

        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), LOG_TAIL_LINES);
        assert_eq!(lines[0], "    line 31");
        assert_eq!(lines[LOG_TAIL_LINES - 1], "    line 50");
    }

    #[test]
    fn log_tail_skips_start_of_long_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let long_line = "x".repeat(2 * LOG_TAIL_MAX_BYTES as usize);
        std::fs::write(&path, format!("{long_line}\nsecond to last\nlast\n")).unwrap();

        let tail = read_tail(&path, LOG_TAIL_MAX_BYTES).unwrap();

        assert_eq!(tail, "second to last\nlast\n");
    }

    #[test]
    fn log_tail_of_missing_or_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        assert!(log_tail(&path).contains("cannot read the log"));

        std::fs::write(&path, "").unwrap();
        assert_eq!(log_tail(&path), "    (the log is empty)");
    }

    #[tokio::test]
    async fn spawned_node_output_goes_to_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let node = node_in(dir.path(), unused_port());
        std::fs::create_dir_all(&node.data_dir).unwrap();
        std::fs::write(&node.log_path, "from an earlier run\n").unwrap();

        let mut running = shell(
            &node,
            "echo to stdout; echo to stderr >&2; echo \"NO_COLOR=$NO_COLOR\"; exit 3",
        );
        let status = running.child.wait().await.unwrap();

        assert_eq!(status.code(), Some(3));
        let log = std::fs::read_to_string(&node.log_path).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "from an earlier run");
        assert!(
            lines[1].starts_with("==== dispotify dev: starting node1"),
            "{log}"
        );
        assert_eq!(lines[2..], ["to stdout", "to stderr", "NO_COLOR=1"]);
    }

    #[tokio::test]
    async fn startup_reports_early_exit_with_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let node = node_in(dir.path(), unused_port());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut running = shell(&node, "echo 'bind failed: address in use' >&2; exit 1");

        let deadline = Instant::now() + Duration::from_secs(30);
        let error = wait_healthy(&client, &mut running, deadline, STARTUP_TIMEOUT)
            .await
            .unwrap_err();

        let DevError::ExitedDuringStartup {
            node_id,
            status,
            log_tail,
            ..
        } = &error
        else {
            panic!("expected an early exit, got {error:?}");
        };
        assert_eq!(node_id, "node1");
        assert_eq!(status.code(), Some(1));
        assert!(
            log_tail.contains("bind failed: address in use"),
            "{log_tail}"
        );
        assert!(
            error.to_string().contains("node1 exited during start-up"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn startup_times_out_when_health_never_answers() {
        let dir = tempfile::tempdir().unwrap();
        let node = node_in(dir.path(), unused_port());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut running = shell(&node, "echo still starting; exec sleep 30");
        wait_for_log(&node.log_path, "still starting").await;

        let timeout = Duration::from_millis(600);
        let error = wait_healthy(&client, &mut running, Instant::now() + timeout, timeout)
            .await
            .unwrap_err();

        assert!(
            matches!(&error, DevError::NotHealthy { node_id, .. } if node_id == "node1"),
            "{error:?}"
        );
        assert!(error.to_string().contains("still starting"), "{error}");
        let outcomes = stop_all(std::slice::from_mut(&mut running), SHUTDOWN_GRACE).await;
        assert_eq!(outcomes, [("node1".to_string(), StopOutcome::Stopped)]);
    }

    #[tokio::test]
    async fn startup_succeeds_once_health_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new().route("/health", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let node = node_in(dir.path(), port);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut running = shell(&node, "exec sleep 30");

        let deadline = Instant::now() + Duration::from_secs(30);
        wait_healthy(&client, &mut running, deadline, STARTUP_TIMEOUT)
            .await
            .unwrap();

        let outcomes = stop_all(std::slice::from_mut(&mut running), SHUTDOWN_GRACE).await;
        assert_eq!(outcomes, [("node1".to_string(), StopOutcome::Stopped)]);
        assert_eq!(running.exit_status.and_then(|status| status.code()), None);
    }

    /// Waits up to 10 s for the log at `path` to contain `needle`, because a
    /// child writes its output some time after it was started, and returns
    /// the log.
    async fn wait_for_log(path: &Path, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{} never contained {needle:?}:\n{log}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Binds HTTP listeners on `count` consecutive loopback ports and returns
    /// them, so the test owns the ports that `plan_nodes` will assign.
    fn bind_consecutive_ports(count: u16) -> Vec<std::net::TcpListener> {
        for _ in 0..100 {
            let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let base = first.local_addr().unwrap().port();
            if base > u16::MAX - QUIC_PORT_OFFSET - count {
                continue;
            }
            let mut listeners = vec![first];
            for offset in 1..count {
                match std::net::TcpListener::bind(("127.0.0.1", base + offset)) {
                    Ok(listener) => listeners.push(listener),
                    Err(_) => break,
                }
            }
            if listeners.len() == usize::from(count) {
                return listeners;
            }
        }
        panic!("found no {count} consecutive free loopback ports");
    }

    #[tokio::test]
    async fn start_bootstraps_node1_then_joins_rest() {
        // Each node is a shell that logs its arguments and sleeps, while
        // this test serves `/health` on the node's HTTP port in its place.
        let listeners = bind_consecutive_ports(2);
        let http_port = listeners[0].local_addr().unwrap().port();
        for listener in listeners {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = Router::new().route("/health", get(|| async { "ok" }));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-node.sh");
        std::fs::write(&script, "#!/bin/sh\necho \"args: $*\"\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let nodes = plan_nodes(&args(2, http_port), dir.path()).unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();

        let mut cluster = Vec::new();
        start_nodes(&script, &nodes, &client, &mut cluster)
            .await
            .unwrap();

        assert_eq!(cluster.len(), 2);
        let seed = format!("--seeds 127.0.0.1:{}", http_port + QUIC_PORT_OFFSET);
        let first_log = wait_for_log(&nodes[0].log_path, "args:").await;
        let second_log = wait_for_log(&nodes[1].log_path, "args:").await;
        assert!(first_log.contains("args: serve --id node1 "), "{first_log}");
        assert!(first_log.contains(&seed), "{first_log}");
        assert!(first_log.contains("--bootstrap"), "{first_log}");
        assert!(
            second_log.contains("args: serve --id node2 "),
            "{second_log}"
        );
        assert!(second_log.contains(&seed), "{second_log}");
        assert!(!second_log.contains("--bootstrap"), "{second_log}");
        let outcomes = stop_all(&mut cluster, SHUTDOWN_GRACE).await;
        assert!(outcomes
            .iter()
            .all(|(_, outcome)| *outcome == StopOutcome::Stopped));
    }

    #[tokio::test]
    async fn wait_ready_names_nodes_never_ready() {
        // node1 reports 503 twice and then 200, as a node that is still
        // joining does. node2 has nothing listening.
        let probes = Arc::new(AtomicUsize::new(0));
        let app = Router::new().route(
            "/ready",
            get({
                let probes = probes.clone();
                move || async move {
                    if probes.fetch_add(1, Ordering::SeqCst) < 2 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let joining_port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let joining = node_in(&dir.path().join("joining"), joining_port);
        let mut absent = node_in(&dir.path().join("absent"), unused_port());
        absent.id = "node2".to_string();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();

        let not_ready = wait_ready(&client, &[joining, absent], Duration::from_secs(3)).await;

        assert_eq!(not_ready, ["node2"]);
        assert!(probes.load(Ordering::SeqCst) >= 3);
    }

    #[tokio::test]
    async fn stop_kills_node_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let polite = node_in(&dir.path().join("polite"), unused_port());
        let mut stubborn = node_in(&dir.path().join("stubborn"), unused_port());
        stubborn.id = "node2".to_string();
        let mut exited = node_in(&dir.path().join("exited"), unused_port());
        exited.id = "node3".to_string();

        // The stubborn shell ignores SIGTERM and reports that it is ready,
        // so the test does not send the signal before the trap is set.
        let mut cluster = vec![
            shell(&polite, "exec sleep 30"),
            shell(
                &stubborn,
                "trap '' TERM; echo ready; while :; do sleep 1; done",
            ),
            shell(&exited, "exit 0"),
        ];
        wait_for_log(&stubborn.log_path, "ready").await;
        cluster[2].child.wait().await.unwrap();
        cluster[2].exit_status = cluster[2].child.try_wait().unwrap();

        let grace = Duration::from_millis(500);
        let started = Instant::now();
        let outcomes = stop_all(&mut cluster, grace).await;

        assert!(
            started.elapsed() >= grace,
            "stopped after {:?}",
            started.elapsed()
        );
        assert_eq!(
            outcomes,
            [
                ("node1".to_string(), StopOutcome::Stopped),
                ("node2".to_string(), StopOutcome::Killed),
                ("node3".to_string(), StopOutcome::AlreadyExited),
            ]
        );
        assert!(cluster.iter().all(|running| running.exit_status.is_some()));
    }

    #[tokio::test]
    async fn reap_reports_dead_node_once() {
        let dir = tempfile::tempdir().unwrap();
        let survivor = node_in(&dir.path().join("survivor"), unused_port());
        let mut crasher = node_in(&dir.path().join("crasher"), unused_port());
        crasher.id = "node2".to_string();
        let mut cluster = vec![
            shell(&survivor, "exec sleep 30"),
            shell(&crasher, "echo 'raft log is corrupt' >&2; exit 7"),
        ];

        let deadline = Instant::now() + Duration::from_secs(10);
        let mut reports = Vec::new();
        while reports.is_empty() {
            assert!(Instant::now() < deadline, "the crash was never reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
            reports = reap_exited(&mut cluster);
        }

        assert_eq!(reports.len(), 1);
        assert!(
            reports[0].starts_with("node2 exited unexpectedly"),
            "{}",
            reports[0]
        );
        assert!(reports[0].contains("raft log is corrupt"), "{}", reports[0]);
        assert!(reap_exited(&mut cluster).is_empty(), "reported twice");
        assert!(cluster[0].exit_status.is_none(), "survivor was touched");
        let outcomes = stop_all(&mut cluster, SHUTDOWN_GRACE).await;
        assert_eq!(outcomes[0], ("node1".to_string(), StopOutcome::Stopped));
        assert_eq!(
            outcomes[1],
            ("node2".to_string(), StopOutcome::AlreadyExited)
        );
    }
}
