//! Peak memory of real `dispotify serve` processes on loopback.
//!
//! Run with `cargo bench --bench memory`. The bench starts the release node
//! binary as child processes with development certificates, on 127.0.0.1
//! with free ports, in a temporary directory that it removes at the end,
//! also on failure or Ctrl-C. Linux only: it reads `/proc/<pid>/status`.
//!
//! 1. Large file. Four nodes with replication factor 3. The bench writes a
//!    [`LARGE_FILE_BYTES`] (1 GiB) WAV file (16-bit stereo 44.1 kHz PCM,
//!    pseudo-random samples) in blocks, uploads it through node1 as a
//!    streamed multipart body and waits until all three replicas hold it.
//!    Then it streams the file back from every node, one of which has
//!    no replica, and checks its SHA-256 each time. Per node it reports
//!    the peak RSS during the upload (until the last replica stored the
//!    file) and during the stream-backs, and the throughputs. Target:
//!    [`LARGE_FILE_TARGET_BYTES`].
//! 2. Catalog scale. A fresh three-node cluster. The bench uploads
//!    `DISPOTIFY_BENCH_TRACKS` (default [`DEFAULT_TRACK_COUNT`]) tiny
//!    distinct WAV files with RIFF INFO tags, [`UPLOADS_IN_FLIGHT`] at a
//!    time, round robin over the nodes. It reports the upload rate and
//!    each node's RSS when empty, during the uploads, at rest afterwards
//!    and while serving list and search requests. At rest it also splits
//!    RSS into `RssAnon` and `RssFile` and prints the sizes of the Raft
//!    log and catalog files. Target: [`CATALOG_TARGET_BYTES`].
//!
//! The peak of a phase is `VmHWM`, reset at the start of the phase by
//! writing `5` to `/proc/<pid>/clear_refs` (Linux 4.0 and later), and
//! cross-checked with the highest `VmRSS` sampled every
//! [`SAMPLE_INTERVAL`]. Memory figures are in MB (10^6 bytes), the unit
//! of the targets, and throughputs are in MiB/s.
//!
//! The bench process runs on the same machine as the nodes and hashes what
//! it sends and receives, so on a small machine it competes with them for
//! CPU. Figures depend on the machine and on what else runs on it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures::StreamExt as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

/// Size of the generated large file: about 100 minutes of CD-quality WAV,
/// half the default upload limit.
const LARGE_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Nodes of the large-file cluster: one more than the replication factor,
/// so one node streams the file without holding a replica.
const LARGE_CLUSTER_NODES: usize = 4;

/// Replication factor of both clusters, the node's default.
const REPLICATION_FACTOR: usize = 3;

/// `--max-upload-bytes` of the large-file cluster (2 GiB).
const MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Peak RSS target per node while a 1 GiB file is uploaded and streamed.
const LARGE_FILE_TARGET_BYTES: u64 = 150_000_000;

/// RSS target per node with the full catalog, at rest and serving queries.
const CATALOG_TARGET_BYTES: u64 = 100_000_000;

/// Tracks of the catalog-scale part unless `DISPOTIFY_BENCH_TRACKS` is set.
const DEFAULT_TRACK_COUNT: usize = 30_000;

/// Environment variable that sets the track count for a quicker run.
const TRACK_COUNT_ENV: &str = "DISPOTIFY_BENCH_TRACKS";

/// Tiny uploads in flight at once during the catalog-scale part.
const UPLOADS_IN_FLIGHT: usize = 16;

/// Attempts per tiny upload when the node returns 5xx or the connection
/// fails, as happens while a leader is elected.
const UPLOAD_ATTEMPTS: u32 = 3;

/// Pause before retrying a failed tiny upload.
const UPLOAD_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Bytes of PCM data in each tiny file: enough to make every file distinct.
const TINY_AUDIO_BYTES: usize = 256;

/// Distinct artist names among the tiny files.
const TINY_ARTISTS: usize = 500;

/// Distinct album names among the tiny files.
const TINY_ALBUMS: usize = 3_000;

/// Bytes written per block when generating the large file.
const WRITE_BLOCK_BYTES: usize = 1024 * 1024;

/// Read size of the streamed upload body.
const UPLOAD_READ_BYTES: usize = 256 * 1024;

/// Interval between `VmRSS` samples.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// How long a cluster may take to elect a leader and get every node ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Deadline of the large upload and of each large stream-back.
const LARGE_REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Deadline of every other request.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the replicas outside the write quorum may take to store the
/// large file after the upload returned.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Interval between two checks of a condition the bench waits for.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long followers may take to apply the last tiny upload.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Idle time after the uploads before the at-rest measurement, so that
/// background work triggered by the uploads has finished.
const SETTLE_TIME: Duration = Duration::from_secs(5);

/// Length of each at-rest sampling window.
const REST_WINDOW: Duration = Duration::from_secs(3);

/// Times every query runs against every node.
const QUERY_ROUNDS: usize = 3;

/// Page size of the list and search queries, the API's maximum.
const QUERY_PAGE_LIMIT: usize = 500;

/// Uploads between two progress lines.
const PROGRESS_EVERY: usize = 1_000;

const BYTES_PER_MB: f64 = 1_000_000.0;
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

fn main() -> ExitCode {
    // `cargo test --benches` runs bench targets without `--bench`, and a
    // test run should not start clusters and move gigabytes.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("memory bench skipped: run it with `cargo bench --bench memory`");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("memory bench failed: start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run() => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("memory bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let track_count = track_count()?;

    let started = Instant::now();
    let large = large_file_part().await?;
    let large_elapsed = started.elapsed();
    print_large_file_report(&large);
    println!(
        "part 1 took {:.0} s, of which {:.0} s removing the cluster's directory",
        large_elapsed.as_secs_f64(),
        large.cleanup_elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let catalog = catalog_part(track_count).await?;
    let catalog_elapsed = started.elapsed();
    print_catalog_report(&catalog);
    println!(
        "part 2 took {:.0} s, of which {:.0} s removing the cluster's directory",
        catalog_elapsed.as_secs_f64(),
        catalog.cleanup_elapsed.as_secs_f64()
    );

    print_verdicts(&large, &catalog);
    Ok(())
}

fn track_count() -> Result<usize> {
    let Some(value) = std::env::var_os(TRACK_COUNT_ENV) else {
        return Ok(DEFAULT_TRACK_COUNT);
    };
    let text = value.to_string_lossy();
    let count: usize = text
        .trim()
        .parse()
        .with_context(|| format!("{TRACK_COUNT_ENV}={text} is not a whole number"))?;
    ensure!(
        count >= QUERY_PAGE_LIMIT,
        "{TRACK_COUNT_ENV}={count} is too small: use at least {QUERY_PAGE_LIMIT}"
    );
    Ok(count)
}

/// Announces a bench phase on standard error.
fn phase(text: &str) {
    eprintln!("=== {text}");
}

// ---------------------------------------------------------------------------
// Part 1: one large file.

struct LargeFileReport {
    nodes: Vec<LargeFileNodeRow>,
    generate_elapsed: Duration,
    /// From the first byte sent to the `201 Created`, which comes once a
    /// write quorum of replicas stored the file.
    upload_elapsed: Duration,
    /// From the first byte sent until the track lists every replica.
    replicated_elapsed: Duration,
    /// Time taken to remove the cluster's directory after the nodes stopped.
    cleanup_elapsed: Duration,
}

struct LargeFileNodeRow {
    id: String,
    holds_replica: bool,
    upload_peak: PhasePeak,
    stream_peak: PhasePeak,
    stream_elapsed: Duration,
}

async fn large_file_part() -> Result<LargeFileReport> {
    let work_dir = tempfile::tempdir().context("create the large file's directory")?;
    let path = work_dir.path().join("bench-1GiB.wav");

    phase("part 1: write a 1 GiB WAV file");
    let started = Instant::now();
    let write_path = path.clone();
    let expected_sha256 = tokio::task::spawn_blocking(move || write_large_wav(&write_path))
        .await
        .context("join the file writer")??;
    let generate_elapsed = started.elapsed();

    phase("part 1: start 4 nodes with replication factor 3");
    let extra = [format!("--max-upload-bytes={MAX_UPLOAD_BYTES}")];
    let mut cluster = BenchCluster::start(LARGE_CLUSTER_NODES, &extra).await?;
    cluster.wait_ready().await?;

    phase("part 1: upload through node1 as a streamed multipart body");
    let sampler = RssSampler::start(&cluster.pids())?;
    let started = Instant::now();
    let outcome = async {
        let track = upload_large(&cluster, 0, &path).await?;
        let upload_elapsed = started.elapsed();
        let file_id = track["file_id"].as_str().unwrap_or_default().to_string();
        ensure!(
            file_id == expected_sha256,
            "file_id {file_id} is not the SHA-256 of the file, {expected_sha256}"
        );
        let replicas = wait_for_replicas(&cluster, 0, &file_id).await?;
        Ok((file_id, upload_elapsed, replicas))
    }
    .await;
    let replicated_elapsed = started.elapsed();
    let upload_peaks = sampler.finish()?;
    let (file_id, upload_elapsed, replicas) = outcome.with_context(|| cluster.log_tails())?;

    phase("part 1: stream the file back from every node and check SHA-256");
    let sampler = RssSampler::start(&cluster.pids())?;
    let mut stream_elapsed = Vec::new();
    for index in 0..cluster.nodes.len() {
        let started = Instant::now();
        let url = cluster.nodes[index].url(&format!("/music/stream/{file_id}"));
        let (size_bytes, sha256) = stream_and_hash(&cluster.client, &url).await?;
        stream_elapsed.push(started.elapsed());
        let id = &cluster.nodes[index].id;
        ensure!(
            size_bytes == LARGE_FILE_BYTES,
            "{id} streamed {size_bytes} bytes, expected {LARGE_FILE_BYTES}"
        );
        ensure!(
            sha256 == expected_sha256,
            "{id} streamed content with SHA-256 {sha256}, expected {expected_sha256}"
        );
    }
    let stream_peaks = sampler.finish()?;

    let nodes = cluster
        .nodes
        .iter()
        .zip(upload_peaks)
        .zip(stream_peaks)
        .zip(stream_elapsed)
        .map(
            |(((node, upload_peak), stream_peak), stream_elapsed)| LargeFileNodeRow {
                id: node.id.clone(),
                holds_replica: replicas.contains(&node.id),
                upload_peak,
                stream_peak,
                stream_elapsed,
            },
        )
        .collect();
    let cleanup_elapsed = cluster.remove().await?;
    Ok(LargeFileReport {
        nodes,
        generate_elapsed,
        upload_elapsed,
        replicated_elapsed,
        cleanup_elapsed,
    })
}

/// Writes a WAV file of exactly [`LARGE_FILE_BYTES`] in blocks and returns
/// its SHA-256 in lowercase hex.
fn write_large_wav(path: &Path) -> Result<String> {
    let header_bytes = wave_header(PcmFormat::CD_STEREO, &[], 0).len() as u64;
    let data_bytes = u32::try_from(LARGE_FILE_BYTES - header_bytes)
        .context("the large file's data does not fit a RIFF chunk")?;
    let header = wave_header(PcmFormat::CD_STEREO, &[], data_bytes);

    let mut file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut hasher = Sha256::new();
    file.write_all(&header)?;
    hasher.update(&header);

    let mut random = SplitMix64::new(0x5eed_1a26e);
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

/// Uploads the file at `path` through node `index` with a body read from
/// disk as it is sent, and returns the track JSON of a `201 Created`.
async fn upload_large(cluster: &BenchCluster, index: usize, path: &Path) -> Result<Value> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("open {}", path.display()))?;
    let size_bytes = file.metadata().await?.len();
    let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(file, UPLOAD_READ_BYTES));
    let part = reqwest::multipart::Part::stream_with_length(body, size_bytes)
        .file_name("bench-1GiB.wav")
        .mime_str("audio/wav")?;
    let form = reqwest::multipart::Form::new().part("file", part);
    let response = cluster
        .client
        .post(cluster.nodes[index].url("/music/upload"))
        .timeout(LARGE_REQUEST_TIMEOUT)
        .multipart(form)
        .send()
        .await
        .context("send the large upload")?;
    let status = response.status();
    let body = response.text().await.context("read the upload response")?;
    ensure!(
        status == reqwest::StatusCode::CREATED,
        "the large upload returned {status}: {body}"
    );
    serde_json::from_str(&body).context("parse the upload response")
}

/// Streams `url` to the end and returns the byte count and the SHA-256.
async fn stream_and_hash(client: &reqwest::Client, url: &str) -> Result<(u64, String)> {
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
    let mut hasher = Sha256::new();
    let mut size_bytes = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("read the body of {url}"))?;
        size_bytes += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((size_bytes, hex::encode(hasher.finalize())))
}

/// Waits until node `index` lists [`REPLICATION_FACTOR`] replicas of the
/// track and returns their node ids. The upload returns once a write
/// quorum stored the file, and the remaining replicas finish later.
async fn wait_for_replicas(
    cluster: &BenchCluster,
    index: usize,
    file_id: &str,
) -> Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let track = cluster
            .json(index, &format!("/music/tracks/{file_id}"), &[])
            .await?;
        let replicas = replica_ids(&track);
        if replicas.len() >= REPLICATION_FACTOR {
            return Ok(replicas);
        }
        if started.elapsed() > REPLICATION_TIMEOUT {
            bail!(
                "{file_id} has replicas {replicas:?} after {REPLICATION_TIMEOUT:?}, \
                 expected {REPLICATION_FACTOR}"
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

fn print_large_file_report(report: &LargeFileReport) {
    let mib = LARGE_FILE_BYTES as f64 / BYTES_PER_MIB;
    println!();
    println!(
        "part 1: one 1 GiB file, {LARGE_CLUSTER_NODES} nodes, replication factor {REPLICATION_FACTOR}"
    );
    println!(
        "wrote the file in {:.1} s; upload through node1: 201 Created after {:.1} s ({:.1} MiB/s), \
         all {REPLICATION_FACTOR} replicas after {:.1} s",
        report.generate_elapsed.as_secs_f64(),
        report.upload_elapsed.as_secs_f64(),
        mib / report.upload_elapsed.as_secs_f64(),
        report.replicated_elapsed.as_secs_f64()
    );
    let target = megabytes(LARGE_FILE_TARGET_BYTES);
    let mut rows = Vec::new();
    for node in &report.nodes {
        let peak = node.upload_peak.bytes().max(node.stream_peak.bytes());
        rows.push(vec![
            node.id.clone(),
            if node.holds_replica { "yes" } else { "no" }.to_string(),
            megabytes(node.upload_peak.high_water_bytes),
            megabytes(node.upload_peak.max_sampled_bytes),
            megabytes(node.stream_peak.high_water_bytes),
            megabytes(node.stream_peak.max_sampled_bytes),
            format!("{:.1}", mib / node.stream_elapsed.as_secs_f64()),
            target.clone(),
            ratio(peak, LARGE_FILE_TARGET_BYTES),
        ]);
    }
    print_table(
        &[
            "node",
            "replica",
            "upload VmHWM MB",
            "upload VmRSS max MB",
            "stream VmHWM MB",
            "stream VmRSS max MB",
            "its stream MiB/s",
            "target MB",
            "peak/target",
        ],
        &rows,
    );
    println!(
        "stream columns cover all {LARGE_CLUSTER_NODES} stream-backs; \
         \"its stream\" is the one this node served"
    );
}

// ---------------------------------------------------------------------------
// Part 2: a catalog of many tracks.

struct CatalogReport {
    track_count: usize,
    nodes: Vec<CatalogNodeRow>,
    upload_elapsed: Duration,
    upload_retries: u32,
    queries: Vec<QueryRow>,
    /// Time taken to remove the cluster's directory after the nodes stopped.
    cleanup_elapsed: Duration,
}

struct CatalogNodeRow {
    id: String,
    empty: PhasePeak,
    ingest: PhasePeak,
    rest: PhasePeak,
    queries: PhasePeak,
    raft_log_bytes: u64,
    catalog_bytes: u64,
}

struct QueryRow {
    label: &'static str,
    total: u64,
    latencies: Vec<Duration>,
}

async fn catalog_part(track_count: usize) -> Result<CatalogReport> {
    phase("part 2: start 3 nodes with replication factor 3");
    let mut cluster = BenchCluster::start(3, &[]).await?;
    cluster.wait_ready().await?;
    let pids = cluster.pids();
    let empty = sample_at_rest(&pids).await?;

    phase(&format!(
        "part 2: upload {track_count} tiny tracks, {UPLOADS_IN_FLIGHT} in flight"
    ));
    let sampler = RssSampler::start(&pids)?;
    let started = Instant::now();
    let uploaded = upload_tiny_tracks(&cluster, track_count).await;
    let upload_elapsed = started.elapsed();
    let ingest = sampler.finish()?;
    let upload_retries = uploaded.with_context(|| cluster.log_tails())?;

    phase("part 2: wait until every node lists every track");
    for index in 0..cluster.nodes.len() {
        wait_for_total(&cluster, index, track_count as u64).await?;
    }

    phase("part 2: measure at rest");
    tokio::time::sleep(SETTLE_TIME).await;
    let rest = sample_at_rest(&pids).await?;
    let disk: Vec<(u64, u64)> = cluster
        .nodes
        .iter()
        .map(|node| {
            (
                raft_log_bytes(&node.data_dir),
                catalog_bytes(&node.data_dir),
            )
        })
        .collect();

    phase("part 2: serve list and search requests");
    let sampler = RssSampler::start(&pids)?;
    let queries = run_queries(&cluster, &catalog_queries(track_count)).await;
    let query_peaks = sampler.finish()?;
    let queries = queries?;

    let nodes = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(index, node)| CatalogNodeRow {
            id: node.id.clone(),
            empty: empty[index],
            ingest: ingest[index],
            rest: rest[index],
            queries: query_peaks[index],
            raft_log_bytes: disk[index].0,
            catalog_bytes: disk[index].1,
        })
        .collect();
    let cleanup_elapsed = cluster.remove().await?;
    Ok(CatalogReport {
        track_count,
        nodes,
        upload_elapsed,
        upload_retries,
        queries,
        cleanup_elapsed,
    })
}

/// Size of the node's Raft log file, or 0 when it cannot be read.
fn raft_log_bytes(data_dir: &Path) -> u64 {
    file_bytes(&data_dir.join("raft").join("log.redb"))
}

/// Size of the node's SQLite catalog with its write-ahead log, or 0 when
/// it cannot be read.
fn catalog_bytes(data_dir: &Path) -> u64 {
    ["catalog.sqlite", "catalog.sqlite-wal"]
        .iter()
        .map(|name| file_bytes(&data_dir.join(name)))
        .sum()
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// Samples every node for [`REST_WINDOW`] without sending requests.
async fn sample_at_rest(pids: &[u32]) -> Result<Vec<PhasePeak>> {
    let sampler = RssSampler::start(pids)?;
    tokio::time::sleep(REST_WINDOW).await;
    sampler.finish()
}

/// Uploads `count` distinct tiny tracks, round robin over the nodes, and
/// returns how many retries they needed. Fails on the first upload that
/// is not a `201 Created` after [`UPLOAD_ATTEMPTS`].
async fn upload_tiny_tracks(cluster: &BenchCluster, count: usize) -> Result<u32> {
    let started = Instant::now();
    let mut uploads = futures::stream::iter(0..count)
        .map(|index| upload_tiny(cluster, index))
        .buffer_unordered(UPLOADS_IN_FLIGHT);
    let mut done = 0usize;
    let mut retries = 0u32;
    while let Some(outcome) = uploads.next().await {
        retries += outcome?;
        done += 1;
        if done % PROGRESS_EVERY == 0 {
            let rate = done as f64 / started.elapsed().as_secs_f64();
            eprintln!("    {done}/{count} tracks uploaded, {rate:.0} tracks/s");
        }
    }
    Ok(retries)
}

/// Uploads tiny track `index` and returns the number of retries it took.
async fn upload_tiny(cluster: &BenchCluster, index: usize) -> Result<u32> {
    let node = &cluster.nodes[index % cluster.nodes.len()];
    let file_name = format!("track-{index:05}.wav");
    let bytes = tiny_wav(index);
    let mut attempt = 1;
    loop {
        let part = reqwest::multipart::Part::bytes(bytes.clone())
            .file_name(file_name.clone())
            .mime_str("audio/wav")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let sent = cluster
            .client
            .post(node.url("/music/upload"))
            .multipart(form)
            .send()
            .await;
        let failure = match sent {
            Ok(response) if response.status() == reqwest::StatusCode::CREATED => {
                return Ok(attempt - 1);
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let failure = format!("{file_name} through {} returned {status}: {body}", node.id);
                if !status.is_server_error() {
                    bail!(failure);
                }
                failure
            }
            Err(error) => format!("{file_name} through {} failed: {error}", node.id),
        };
        if attempt == UPLOAD_ATTEMPTS {
            bail!("{failure} (after {UPLOAD_ATTEMPTS} attempts)");
        }
        eprintln!("    retrying: {failure}");
        attempt += 1;
        tokio::time::sleep(UPLOAD_RETRY_DELAY).await;
    }
}

/// Builds tiny track `index`: a 16-bit mono 8 kHz WAV with a RIFF INFO
/// title, artist and album, and [`TINY_AUDIO_BYTES`] of samples that
/// depend on `index`, so that no two tracks share a file_id.
fn tiny_wav(index: usize) -> Vec<u8> {
    let info = [
        (*b"INAM", format!("Track {index:05}")),
        (*b"IART", format!("Artist {:03}", index % TINY_ARTISTS)),
        (*b"IPRD", format!("Album {:04}", index % TINY_ALBUMS)),
    ];
    let mut bytes = wave_header(PcmFormat::VOICE_MONO, &info, TINY_AUDIO_BYTES as u32);
    let start = bytes.len();
    bytes.resize(start + TINY_AUDIO_BYTES, 0);
    SplitMix64::new(index as u64).fill(&mut bytes[start..]);
    bytes
}

async fn wait_for_total(cluster: &BenchCluster, index: usize, expected: u64) -> Result<()> {
    let node = &cluster.nodes[index];
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < CONVERGE_TIMEOUT {
        let page = cluster
            .json(index, "/music/tracks", &[("limit", "1".to_string())])
            .await?;
        last = page["total"].as_u64().unwrap_or(0);
        if last == expected {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    bail!(
        "{} lists {last} tracks after {CONVERGE_TIMEOUT:?}, expected {expected}",
        node.id
    )
}

/// One list or search request of the catalog-scale part.
struct Query {
    label: &'static str,
    path: &'static str,
    params: Vec<(&'static str, String)>,
    /// The `total` the response must report, when it is known in advance.
    expected_total: Option<u64>,
}

/// Builds the list and search requests for a catalog of `track_count`
/// tiny tracks.
fn catalog_queries(track_count: usize) -> Vec<Query> {
    let limit = QUERY_PAGE_LIMIT.to_string();
    let list = |sort: &str, order: &str, offset: usize| {
        vec![
            ("limit", limit.clone()),
            ("offset", offset.to_string()),
            ("sort", sort.to_string()),
            ("order", order.to_string()),
        ]
    };
    let search = |q: String| vec![("q", q), ("limit", limit.clone())];
    let count = Some(track_count as u64);
    vec![
        Query {
            label: "list by title, first page",
            path: "/music/tracks",
            params: list("title", "asc", 0),
            expected_total: count,
        },
        Query {
            label: "list by artist desc, middle page",
            path: "/music/tracks",
            params: list("artist", "desc", track_count / 2),
            expected_total: count,
        },
        Query {
            label: "list by added, last page",
            path: "/music/tracks",
            params: list("added", "asc", track_count - QUERY_PAGE_LIMIT),
            expected_total: count,
        },
        // The title number also appears in the file name, of the same track.
        Query {
            label: "search one title",
            path: "/music/search",
            params: search(format!("track {:05}", track_count / 2)),
            expected_total: Some(1),
        },
        // "042" is a prefix of an artist, of some titles and of some albums.
        Query {
            label: "search one artist",
            path: "/music/search",
            params: search("artist 042".to_string()),
            expected_total: None,
        },
        Query {
            label: "search every track",
            path: "/music/search",
            params: search("track".to_string()),
            expected_total: count,
        },
    ]
}

/// Runs each query [`QUERY_ROUNDS`] times on every node, one request at a
/// time, and checks the totals.
async fn run_queries(cluster: &BenchCluster, queries: &[Query]) -> Result<Vec<QueryRow>> {
    let mut rows = Vec::new();
    for query in queries {
        let mut row = QueryRow {
            label: query.label,
            total: 0,
            latencies: Vec::new(),
        };
        for _ in 0..QUERY_ROUNDS {
            for index in 0..cluster.nodes.len() {
                let started = Instant::now();
                let page = cluster.json(index, query.path, &query.params).await?;
                row.latencies.push(started.elapsed());
                row.total = page["total"].as_u64().unwrap_or(0);
                if let Some(expected) = query.expected_total {
                    ensure!(
                        row.total == expected,
                        "{} on {} returned total {}, expected {expected}",
                        query.label,
                        cluster.nodes[index].id,
                        row.total
                    );
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

fn print_catalog_report(report: &CatalogReport) {
    let rate = report.track_count as f64 / report.upload_elapsed.as_secs_f64();
    println!();
    println!(
        "part 2: {} tiny tracks, 3 nodes, replication factor 3",
        report.track_count
    );
    println!(
        "uploaded in {:.0} s, {rate:.0} tracks/s with {UPLOADS_IN_FLIGHT} in flight, {} retries",
        report.upload_elapsed.as_secs_f64(),
        report.upload_retries
    );
    let target = megabytes(CATALOG_TARGET_BYTES);
    let mut rows = Vec::new();
    for node in &report.nodes {
        rows.push(vec![
            node.id.clone(),
            megabytes(node.empty.last_sampled_bytes),
            megabytes(node.ingest.bytes()),
            megabytes(node.rest.last_sampled_bytes),
            megabytes(node.queries.high_water_bytes),
            megabytes(node.queries.max_sampled_bytes),
            target.clone(),
            ratio(node.rest.last_sampled_bytes, CATALOG_TARGET_BYTES),
            ratio(node.queries.bytes(), CATALOG_TARGET_BYTES),
        ]);
    }
    print_table(
        &[
            "node",
            "empty MB",
            "upload peak MB",
            "at rest MB",
            "queries VmHWM MB",
            "queries VmRSS max MB",
            "target MB",
            "rest/target",
            "queries/target",
        ],
        &rows,
    );
    println!("empty and at rest are VmRSS at the end of a {REST_WINDOW:?} idle window");

    println!();
    let mut rows = Vec::new();
    for node in &report.nodes {
        rows.push(vec![
            node.id.clone(),
            megabytes(node.rest.last_sampled_bytes),
            megabytes(node.rest.anon_bytes),
            megabytes(node.rest.file_bytes),
            megabytes(node.raft_log_bytes),
            megabytes(node.catalog_bytes),
        ]);
    }
    print_table(
        &[
            "at rest",
            "VmRSS MB",
            "RssAnon MB",
            "RssFile MB",
            "raft/log.redb MB",
            "catalog.sqlite+wal MB",
        ],
        &rows,
    );

    println!();
    let mut rows = Vec::new();
    for query in &report.queries {
        let mut sorted = query.latencies.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        let max = sorted[sorted.len() - 1];
        rows.push(vec![
            query.label.to_string(),
            query.total.to_string(),
            format!("{:.1}", milliseconds(median)),
            format!("{:.1}", milliseconds(max)),
        ]);
    }
    print_table(&["query", "total", "median ms", "max ms"], &rows);
    println!(
        "each query ran {QUERY_ROUNDS} times on each node, one at a time, \
         {QUERY_PAGE_LIMIT} tracks per page"
    );
}

fn print_verdicts(large: &LargeFileReport, catalog: &CatalogReport) {
    let large_peak = large
        .nodes
        .iter()
        .map(|node| node.upload_peak.bytes().max(node.stream_peak.bytes()))
        .max()
        .unwrap_or(0);
    let catalog_peak = catalog
        .nodes
        .iter()
        .map(|node| node.rest.last_sampled_bytes.max(node.queries.bytes()))
        .max()
        .unwrap_or(0);
    println!();
    println!("targets");
    let rows = vec![
        verdict_row(
            "1 GiB upload and stream-back, peak per node",
            large_peak,
            LARGE_FILE_TARGET_BYTES,
        ),
        verdict_row(
            &format!(
                "{} tracks, at rest and serving queries, per node",
                catalog.track_count
            ),
            catalog_peak,
            CATALOG_TARGET_BYTES,
        ),
    ];
    print_table(
        &["target", "worst node MB", "target MB", "ratio", "met"],
        &rows,
    );
}

fn verdict_row(label: &str, measured_bytes: u64, target_bytes: u64) -> Vec<String> {
    vec![
        label.to_string(),
        megabytes(measured_bytes),
        megabytes(target_bytes),
        ratio(measured_bytes, target_bytes),
        if measured_bytes < target_bytes {
            "yes"
        } else {
            "no"
        }
        .to_string(),
    ]
}

// ---------------------------------------------------------------------------
// WAV files.

/// The `fmt ` chunk of a PCM WAV file.
#[derive(Clone, Copy)]
struct PcmFormat {
    channels: u16,
    sample_rate_hz: u32,
    bits_per_sample: u16,
}

impl PcmFormat {
    const CD_STEREO: PcmFormat = PcmFormat {
        channels: 2,
        sample_rate_hz: 44_100,
        bits_per_sample: 16,
    };
    const VOICE_MONO: PcmFormat = PcmFormat {
        channels: 1,
        sample_rate_hz: 8_000,
        bits_per_sample: 16,
    };
}

/// Builds a RIFF/WAVE header: the `fmt ` chunk, a `LIST` `INFO` chunk
/// when `info` is not empty, and the header of a `data` chunk of
/// `data_bytes`, which the caller writes next.
fn wave_header(format: PcmFormat, info: &[([u8; 4], String)], data_bytes: u32) -> Vec<u8> {
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
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let value = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------
// Node processes.

struct BenchNode {
    id: String,
    http: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl BenchNode {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the process with SIGKILL and reaps it.
    fn kill(&mut self) {
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
struct BenchCluster {
    nodes: Vec<BenchNode>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl BenchCluster {
    /// Starts `node_count` nodes: node1 bootstraps, the others join
    /// through it. `extra_args` go to every node.
    async fn start(node_count: usize, extra_args: &[String]) -> Result<BenchCluster> {
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
                format!("--replication-factor={REPLICATION_FACTOR}"),
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
    async fn wait_ready(&mut self) -> Result<()> {
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
    async fn json(&self, index: usize, path: &str, query: &[(&str, String)]) -> Result<Value> {
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

    fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| node.child.as_ref().map(Child::id))
            .collect()
    }

    fn log_tails(&self) -> String {
        let mut text = String::from("last log lines:");
        for node in &self.nodes {
            text.push_str(&format!("\n--- {}\n{}", node.id, node.log_tail(15)));
        }
        text
    }

    /// Kills the nodes, then removes the cluster's directory and returns
    /// how long the removal took (minutes for tens of thousands of blobs on
    /// a slow disk).
    async fn remove(self) -> Result<Duration> {
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
    let mut command = Command::new(env!("CARGO_BIN_EXE_dispotify"));
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
// Resident memory.

/// Memory of one process over one phase.
#[derive(Clone, Copy, Debug, Default)]
struct PhasePeak {
    /// `VmHWM` at the end of the phase, reset at its start.
    high_water_bytes: u64,
    /// Highest `VmRSS` sampled during the phase.
    max_sampled_bytes: u64,
    /// `VmRSS` of the last sample, taken when the phase ended.
    last_sampled_bytes: u64,
    /// `RssAnon` when the phase ended: heap, stacks and other private memory.
    anon_bytes: u64,
    /// `RssFile` when the phase ended: mapped files, the binary included.
    file_bytes: u64,
}

impl PhasePeak {
    /// Returns the phase's peak: the larger of the high-water mark and the
    /// highest sample.
    fn bytes(&self) -> u64 {
        self.high_water_bytes.max(self.max_sampled_bytes)
    }
}

/// Samples `VmRSS` of a set of processes on its own thread until finished.
struct RssSampler {
    pids: Vec<u32>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<(u64, u64)>>>,
}

impl RssSampler {
    /// Resets each process's `VmHWM` and starts sampling.
    fn start(pids: &[u32]) -> Result<RssSampler> {
        for pid in pids {
            let path = format!("/proc/{pid}/clear_refs");
            std::fs::write(&path, "5").with_context(|| format!("reset VmHWM through {path}"))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread_pids = pids.to_vec();
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || sample_until(&thread_pids, &thread_stop));
        Ok(RssSampler {
            pids: pids.to_vec(),
            stop,
            thread,
        })
    }

    /// Stops sampling and returns each process's figures, in the order of
    /// the pids given to [`RssSampler::start`].
    fn finish(self) -> Result<Vec<PhasePeak>> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = match self.thread.join() {
            Ok(samples) => samples?,
            Err(_) => bail!("the RSS sampling thread panicked"),
        };
        let mut peaks = Vec::new();
        for (pid, (max_sampled_bytes, last_sampled_bytes)) in self.pids.iter().zip(samples) {
            peaks.push(PhasePeak {
                high_water_bytes: status_field_bytes(*pid, "VmHWM")?,
                max_sampled_bytes,
                last_sampled_bytes,
                anon_bytes: status_field_bytes(*pid, "RssAnon")?,
                file_bytes: status_field_bytes(*pid, "RssFile")?,
            });
        }
        Ok(peaks)
    }
}

/// Samples `VmRSS` of every pid each [`SAMPLE_INTERVAL`] until `stop`, and
/// once more after it. Returns the highest and the last sample per pid.
fn sample_until(pids: &[u32], stop: &AtomicBool) -> Result<Vec<(u64, u64)>> {
    let mut figures = vec![(0u64, 0u64); pids.len()];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        for (pid, (max, last)) in pids.iter().zip(figures.iter_mut()) {
            *last = status_field_bytes(*pid, "VmRSS")?;
            *max = (*max).max(*last);
        }
        if stopping {
            return Ok(figures);
        }
        std::thread::sleep(SAMPLE_INTERVAL);
    }
}

/// Reads a `kB` field such as `VmRSS` from `/proc/<pid>/status`, in bytes.
fn status_field_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("{path} has no {field} line"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} in {path} is not a number of kB: {line}"))?;
    Ok(kib * 1024)
}

// ---------------------------------------------------------------------------
// Output.

fn megabytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / BYTES_PER_MB)
}

fn ratio(measured: u64, target: u64) -> String {
    format!("{:.2}", measured as f64 / target as f64)
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
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
