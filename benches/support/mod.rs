//! Pieces shared by the benches that run real `dispotify serve` processes:
//! a cluster of node processes on 127.0.0.1 in a temporary directory,
//! generated WAV files, uploads and stream-backs over HTTP, and plain-text
//! tables. Each bench uses only part of it.

// Each bench compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures::StreamExt as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

/// Environment variable naming another `dispotify` binary to run as the
/// nodes, so two builds can be compared under the same conditions. The
/// default is the release binary cargo builds for the bench.
pub const NODE_BINARY_ENV: &str = "DISPOTIFY_BENCH_NODE_BINARY";

/// Bytes written per block when generating a large file.
const WRITE_BLOCK_BYTES: usize = 1024 * 1024;

/// Read size of a streamed upload body.
const UPLOAD_READ_BYTES: usize = 256 * 1024;

/// How long a cluster may take to elect a leader and get every node ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Deadline of a large upload and of each large stream-back.
pub const LARGE_REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Deadline of every other request.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the replicas outside the write quorum may take to store a
/// large file after the upload returned.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Interval between two checks of a condition a bench waits for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------
// WAV files.

/// The `fmt ` chunk of a PCM WAV file.
#[derive(Clone, Copy)]
pub struct PcmFormat {
    pub channels: u16,
    pub sample_rate_hz: u32,
    pub bits_per_sample: u16,
}

impl PcmFormat {
    pub const CD_STEREO: PcmFormat = PcmFormat {
        channels: 2,
        sample_rate_hz: 44_100,
        bits_per_sample: 16,
    };
    pub const VOICE_MONO: PcmFormat = PcmFormat {
        channels: 1,
        sample_rate_hz: 8_000,
        bits_per_sample: 16,
    };
}

/// Builds a RIFF/WAVE header: the `fmt ` chunk, a `LIST` `INFO` chunk
/// when `info` is not empty, and the header of a `data` chunk of
/// `data_bytes`, which the caller writes next.
pub fn wave_header(format: PcmFormat, info: &[([u8; 4], String)], data_bytes: u32) -> Vec<u8> {
    let block_align = format.channels * format.bits_per_sample / 8;
    let mut fmt = Vec::with_capacity(16);
    fmt.extend_from_slice(&1u16.to_le_bytes());
    fmt.extend_from_slice(&format.channels.to_le_bytes());
    fmt.extend_from_slice(&format.sample_rate_hz.to_le_bytes());
    fmt.extend_from_slice(&(format.sample_rate_hz * u32::from(block_align)).to_le_bytes());
    fmt.extend_from_slice(&block_align.to_le_bytes());
    fmt.extend_from_slice(&format.bits_per_sample.to_le_bytes());
    let list = info_chunk(info);

    let riff_bytes = 4 + (8 + fmt.len() as u32) + list.len() as u32 + 8 + data_bytes;
    let mut header = Vec::with_capacity(64 + list.len());
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&riff_bytes.to_le_bytes());
    header.extend_from_slice(b"WAVE");
    header.extend_from_slice(b"fmt ");
    header.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    header.extend_from_slice(&fmt);
    header.extend_from_slice(&list);
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_bytes.to_le_bytes());
    header
}

/// Builds a `LIST` chunk of type `INFO` with NUL-terminated text fields,
/// each padded to an even length. Returns nothing when `info` is empty.
fn info_chunk(info: &[([u8; 4], String)]) -> Vec<u8> {
    if info.is_empty() {
        return Vec::new();
    }
    let mut body = b"INFO".to_vec();
    for (id, text) in info {
        let size = text.len() + 1;
        body.extend_from_slice(id);
        body.extend_from_slice(&(size as u32).to_le_bytes());
        body.extend_from_slice(text.as_bytes());
        body.push(0);
        if size % 2 == 1 {
            body.push(0);
        }
    }
    let mut chunk = b"LIST".to_vec();
    chunk.extend_from_slice(&(body.len() as u32).to_le_bytes());
    chunk.extend_from_slice(&body);
    chunk
}

/// The SplitMix64 generator: fast and seeded, so every run generates the
/// same sample bytes.
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let value = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
    }
}

/// Writes a WAV file of exactly `size_bytes` (16-bit stereo 44.1 kHz PCM,
/// pseudo-random samples from `seed`) in blocks and returns its SHA-256 in
/// lowercase hex.
pub fn write_noise_wav(path: &Path, size_bytes: u64, seed: u64) -> Result<String> {
    let header_bytes = wave_header(PcmFormat::CD_STEREO, &[], 0).len() as u64;
    let data_bytes = size_bytes
        .checked_sub(header_bytes)
        .and_then(|bytes| u32::try_from(bytes).ok())
        .with_context(|| format!("{size_bytes} bytes do not fit a WAV file's data chunk"))?;
    let header = wave_header(PcmFormat::CD_STEREO, &[], data_bytes);

    let mut file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut hasher = Sha256::new();
    file.write_all(&header)?;
    hasher.update(&header);

    let mut random = SplitMix64::new(seed);
    let mut block = vec![0u8; WRITE_BLOCK_BYTES];
    let mut remaining = u64::from(data_bytes);
    while remaining > 0 {
        let length = remaining.min(WRITE_BLOCK_BYTES as u64) as usize;
        random.fill(&mut block[..length]);
        file.write_all(&block[..length])
            .with_context(|| format!("write {}", path.display()))?;
        hasher.update(&block[..length]);
        remaining -= length as u64;
    }
    file.sync_all()?;
    Ok(hex::encode(hasher.finalize()))
}

// ---------------------------------------------------------------------------
// Node processes.

pub struct BenchNode {
    pub id: String,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
}

impl BenchNode {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of node processes in a temporary directory. Dropping it kills
/// the nodes, then removes the directory.
pub struct BenchCluster {
    pub nodes: Vec<BenchNode>,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl BenchCluster {
    /// Starts `node_count` nodes with `replication_factor`: node1
    /// bootstraps, the others join through it. `extra_args` go to every
    /// node.
    pub async fn start(
        node_count: usize,
        replication_factor: usize,
        extra_args: &[String],
    ) -> Result<BenchCluster> {
        let dir = tempfile::tempdir().context("create the cluster directory")?;
        let ids: Vec<String> = (1..=node_count).map(|i| format!("node{i}")).collect();
        let certs_root = dir.path().join("certs");
        dispotify_certs::dev_certificates(&certs_root, &ids)?;

        let mut nodes = Vec::new();
        let mut seed = None;
        for id in &ids {
            let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()?).parse()?;
            let quic: SocketAddr = format!("127.0.0.1:{}", free_udp_port()?).parse()?;
            let data_dir = dir.path().join(id);
            std::fs::create_dir_all(&data_dir)?;
            let mut args = vec![
                "serve".to_string(),
                format!("--id={id}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--http={http}"),
                format!("--quic={quic}"),
                format!("--certs={}", certs_root.join(id).display()),
                format!("--replication-factor={replication_factor}"),
            ];
            match seed {
                None => {
                    args.push("--bootstrap".to_string());
                    seed = Some(quic);
                }
                Some(seed) => args.push(format!("--seeds={seed}")),
            }
            args.extend_from_slice(extra_args);
            let log_path = data_dir.join("node.log");
            let child = spawn_node(&args, &log_path).with_context(|| format!("spawn {id}"))?;
            nodes.push(BenchNode {
                id: id.clone(),
                http,
                data_dir,
                log_path,
                child: Some(child),
            });
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(SMALL_REQUEST_TIMEOUT)
            .build()?;
        Ok(BenchCluster {
            nodes,
            client,
            _dir: dir,
        })
    }

    /// Waits until every node returns 200 on `/ready` and lists every
    /// member, failing early with its log when a node exits.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        for index in 0..self.nodes.len() {
            loop {
                if self.is_ready(index).await {
                    break;
                }
                let node = &mut self.nodes[index];
                let exited = match node.child.as_mut() {
                    Some(child) => child.try_wait()?,
                    None => None,
                };
                if let Some(status) = exited {
                    bail!(
                        "{} exited with {status}. Last log lines:\n{}",
                        node.id,
                        node.log_tail(40)
                    );
                }
                if started.elapsed() > READY_TIMEOUT {
                    bail!(
                        "{} not ready after {READY_TIMEOUT:?}. Last log lines:\n{}",
                        node.id,
                        node.log_tail(40)
                    );
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        Ok(())
    }

    async fn is_ready(&self, index: usize) -> bool {
        let ready = self
            .client
            .get(self.nodes[index].url("/ready"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if !ready {
            return false;
        }
        match self.json(index, "/cluster/status", &[]).await {
            Ok(status) => status["members"].as_array().map(Vec::len) == Some(self.nodes.len()),
            Err(_) => false,
        }
    }

    /// Sends a GET to node `index` and parses a `200 OK` JSON body.
    pub async fn json(&self, index: usize, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let url = self.nodes[index].url(path);
        let response = self
            .client
            .get(&url)
            .query(query)
            .send()
            .await
            .with_context(|| format!("request {url}"))?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status.is_success(), "{url} returned {status}: {body}");
        serde_json::from_str(&body).with_context(|| format!("parse the body of {url}"))
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| node.child.as_ref().map(Child::id))
            .collect()
    }

    pub fn log_tails(&self) -> String {
        let mut text = String::from("last log lines:");
        for node in &self.nodes {
            text.push_str(&format!("\n--- {}\n{}", node.id, node.log_tail(15)));
        }
        text
    }

    /// Kills the nodes, then removes the cluster's directory and returns
    /// how long the removal took (minutes for tens of thousands of blobs on
    /// a slow disk).
    pub async fn remove(self) -> Result<Duration> {
        let BenchCluster {
            nodes, _dir: dir, ..
        } = self;
        drop(nodes);
        let started = Instant::now();
        tokio::task::spawn_blocking(move || dir.close())
            .await
            .context("join the directory removal")?
            .context("remove the cluster's directory")?;
        Ok(started.elapsed())
    }
}

fn spawn_node(args: &[String], log_path: &Path) -> Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let mut command = Command::new(node_binary());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // The nodes take their settings from the flags alone. Only the log
    // filter passes through from the bench's environment.
    for (name, _) in std::env::vars_os() {
        if is_node_setting(&name) {
            command.env_remove(name);
        }
    }
    Ok(command.spawn()?)
}

/// The node binary: [`NODE_BINARY_ENV`] when set, else the release
/// `dispotify` that cargo built for the bench.
fn node_binary() -> OsString {
    std::env::var_os(NODE_BINARY_ENV)
        .unwrap_or_else(|| OsString::from(env!("CARGO_BIN_EXE_dispotify")))
}

fn is_node_setting(name: &OsString) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("DISPOTIFY_") && !name.starts_with("DISPOTIFY_LOG")
}

fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------
// Uploads and stream-backs.

/// Uploads the file at `path` through node `index` with a body read from
/// disk as it is sent, and returns the track JSON of a `201 Created`.
pub async fn upload_file(cluster: &BenchCluster, index: usize, path: &Path) -> Result<Value> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("open {}", path.display()))?;
    let size_bytes = file.metadata().await?.len();
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(file, UPLOAD_READ_BYTES));
    let part = reqwest::multipart::Part::stream_with_length(body, size_bytes)
        .file_name(file_name)
        .mime_str("audio/wav")?;
    let form = reqwest::multipart::Form::new().part("file", part);
    let response = cluster
        .client
        .post(cluster.nodes[index].url("/music/upload"))
        .timeout(LARGE_REQUEST_TIMEOUT)
        .multipart(form)
        .send()
        .await
        .with_context(|| format!("upload {}", path.display()))?;
    let status = response.status();
    let body = response.text().await.context("read the upload response")?;
    ensure!(
        status == reqwest::StatusCode::CREATED,
        "the upload of {} returned {status}: {body}",
        path.display()
    );
    serde_json::from_str(&body).context("parse the upload response")
}

/// Streams `url` to the end and returns the byte count, and the SHA-256 in
/// lowercase hex when `hash` is set.
pub async fn stream_body(
    client: &reqwest::Client,
    url: &str,
    hash: bool,
) -> Result<(u64, Option<String>)> {
    let response = client
        .get(url)
        .timeout(LARGE_REQUEST_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("request {url}"))?;
    ensure!(
        response.status() == reqwest::StatusCode::OK,
        "{url} returned {}",
        response.status()
    );
    let mut hasher = hash.then(Sha256::new);
    let mut size_bytes = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("read the body of {url}"))?;
        size_bytes += chunk.len() as u64;
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&chunk);
        }
    }
    Ok((
        size_bytes,
        hasher.map(|hasher| hex::encode(hasher.finalize())),
    ))
}

/// Waits until node `index` lists `replication_factor` replicas of the
/// track and returns their node ids. An upload returns once a write quorum
/// stored the file, and the remaining replicas finish later.
pub async fn wait_for_replicas(
    cluster: &BenchCluster,
    index: usize,
    file_id: &str,
    replication_factor: usize,
) -> Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let track = cluster
            .json(index, &format!("/music/tracks/{file_id}"), &[])
            .await?;
        let replicas = replica_ids(&track);
        if replicas.len() >= replication_factor {
            return Ok(replicas);
        }
        if started.elapsed() > REPLICATION_TIMEOUT {
            bail!(
                "{file_id} has replicas {replicas:?} after {REPLICATION_TIMEOUT:?}, \
                 expected {replication_factor}"
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn replica_ids(track: &Value) -> Vec<String> {
    let Some(replicas) = track["replicas"].as_array() else {
        return Vec::new();
    };
    replicas
        .iter()
        .filter_map(|replica| replica.as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------
// Output.

/// Prints rows under a header, each column as wide as its widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Returns the 1-, 5- and 15-minute load averages from `/proc/loadavg`, as
/// printed there.
pub fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => text
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "unknown".to_string(),
    }
}
