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
//! `DISPOTIFY_BENCH_PARTS=1` or `=2` runs one part only, and
//! `DISPOTIFY_BENCH_NODE_BINARY=PATH` runs another build of the node, so
//! that two builds can be compared one after the other. The bench prints
//! the load average at the start and end of each part.
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

mod support;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures::StreamExt as _;

use support::{
    load_average, print_table, stream_body, upload_file, wait_for_replicas, wave_header,
    write_noise_wav, BenchCluster, PcmFormat, SplitMix64, POLL_INTERVAL,
};

/// Size of the generated large file: about 100 minutes of CD-quality WAV,
/// half the default upload limit.
const LARGE_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Seed of the large file's samples, fixed so every run uploads the same file.
const LARGE_FILE_SEED: u64 = 0x5eed_1a26e;

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

/// Environment variable that selects the parts to run: `1`, `2` or `1,2`.
const PARTS_ENV: &str = "DISPOTIFY_BENCH_PARTS";

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

/// Interval between `VmRSS` samples.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

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
    let parts = parts()?;
    let track_count = track_count()?;

    let mut large = None;
    if parts.large_file {
        println!("part 1 starts at load average {}", load_average());
        let started = Instant::now();
        let report = large_file_part().await?;
        let elapsed = started.elapsed();
        print_large_file_report(&report);
        println!(
            "part 1 took {:.0} s, of which {:.0} s removing the cluster's directory; \
             load average {} at its end",
            elapsed.as_secs_f64(),
            report.cleanup_elapsed.as_secs_f64(),
            load_average()
        );
        large = Some(report);
    }

    let mut catalog = None;
    if parts.catalog {
        println!();
        println!("part 2 starts at load average {}", load_average());
        let started = Instant::now();
        let report = catalog_part(track_count).await?;
        let elapsed = started.elapsed();
        print_catalog_report(&report);
        println!(
            "part 2 took {:.0} s, of which {:.0} s removing the cluster's directory; \
             load average {} at its end",
            elapsed.as_secs_f64(),
            report.cleanup_elapsed.as_secs_f64(),
            load_average()
        );
        catalog = Some(report);
    }

    print_verdicts(large.as_ref(), catalog.as_ref());
    Ok(())
}

/// The parts of the bench to run.
struct Parts {
    large_file: bool,
    catalog: bool,
}

/// Reads [`PARTS_ENV`]: `1`, `2` or `1,2` (the default).
fn parts() -> Result<Parts> {
    let Some(value) = std::env::var_os(PARTS_ENV) else {
        return Ok(Parts {
            large_file: true,
            catalog: true,
        });
    };
    let text = value.to_string_lossy();
    let mut parts = Parts {
        large_file: false,
        catalog: false,
    };
    for part in text.split(',') {
        match part.trim() {
            "1" => parts.large_file = true,
            "2" => parts.catalog = true,
            other => bail!("{PARTS_ENV}={text} names part {other:?}: expected 1, 2 or 1,2"),
        }
    }
    Ok(parts)
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
    let expected_sha256 = tokio::task::spawn_blocking(move || {
        write_noise_wav(&write_path, LARGE_FILE_BYTES, LARGE_FILE_SEED)
    })
    .await
    .context("join the file writer")??;
    let generate_elapsed = started.elapsed();

    phase("part 1: start 4 nodes with replication factor 3");
    let extra = [format!("--max-upload-bytes={MAX_UPLOAD_BYTES}")];
    let mut cluster = BenchCluster::start(LARGE_CLUSTER_NODES, REPLICATION_FACTOR, &extra).await?;
    cluster.wait_ready().await?;

    phase("part 1: upload through node1 as a streamed multipart body");
    let sampler = RssSampler::start(&cluster.pids())?;
    let started = Instant::now();
    let outcome = async {
        let track = upload_file(&cluster, 0, &path).await?;
        let upload_elapsed = started.elapsed();
        let file_id = track["file_id"].as_str().unwrap_or_default().to_string();
        ensure!(
            file_id == expected_sha256,
            "file_id {file_id} is not the SHA-256 of the file, {expected_sha256}"
        );
        let replicas = wait_for_replicas(&cluster, 0, &file_id, REPLICATION_FACTOR).await?;
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
        let (size_bytes, sha256) = stream_body(&cluster.client, &url, true).await?;
        let sha256 = sha256.unwrap_or_default();
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
    let mut cluster = BenchCluster::start(3, REPLICATION_FACTOR, &[]).await?;
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

fn print_verdicts(large: Option<&LargeFileReport>, catalog: Option<&CatalogReport>) {
    let mut rows = Vec::new();
    if let Some(large) = large {
        let large_peak = large
            .nodes
            .iter()
            .map(|node| node.upload_peak.bytes().max(node.stream_peak.bytes()))
            .max()
            .unwrap_or(0);
        rows.push(verdict_row(
            "1 GiB upload and stream-back, peak per node",
            large_peak,
            LARGE_FILE_TARGET_BYTES,
        ));
    }
    if let Some(catalog) = catalog {
        let catalog_peak = catalog
            .nodes
            .iter()
            .map(|node| node.rest.last_sampled_bytes.max(node.queries.bytes()))
            .max()
            .unwrap_or(0);
        rows.push(verdict_row(
            &format!(
                "{} tracks, at rest and serving queries, per node",
                catalog.track_count
            ),
            catalog_peak,
            CATALOG_TARGET_BYTES,
        ));
    }
    println!();
    println!("targets");
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
