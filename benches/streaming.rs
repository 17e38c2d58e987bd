//! Streaming throughput from a node that holds a copy of the file against a
//! node that fetches it from a replica over QUIC, in the same run.
//!
//! Run with `cargo bench --bench streaming`. The bench starts three release
//! `dispotify serve` processes with replication factor 2 on 127.0.0.1, so
//! exactly one node holds no copy of an uploaded file. It uploads one
//! [`DEFAULT_FILE_MIB`] MiB WAV file (or `DISPOTIFY_BENCH_STREAM_MIB`), waits
//! until both replicas stored it, and streams it once from each kind of node
//! to check its SHA-256. Then it streams the whole file [`ROUNDS`] times from
//! each kind of node, alternating which goes first, and prints the
//! throughput of each stream, the ratio of local to remote throughput per
//! round and the medians. Timed streams count the bytes without hashing
//! them, so the bench process takes as little CPU from the nodes as it can.
//!
//! The nodes and the bench share the machine's cores. The ratio of two
//! figures from the same round is steadier than either figure on a machine
//! that also runs other work, and the bench prints the load average before
//! and after the timed rounds.

mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

use support::{
    load_average, print_table, stream_body, upload_file, wait_for_replicas, write_noise_wav,
    BenchCluster,
};

/// Size of the streamed file unless `DISPOTIFY_BENCH_STREAM_MIB` is set:
/// about 25 minutes of CD-quality WAV, long enough that a stream takes
/// about a second at several hundred MiB/s.
const DEFAULT_FILE_MIB: u64 = 256;

/// Environment variable that sets the file size in MiB.
const FILE_MIB_ENV: &str = "DISPOTIFY_BENCH_STREAM_MIB";

/// Smallest accepted file size: a few chunks of the default 1 MiB.
const MIN_FILE_MIB: u64 = 8;

/// Largest accepted file size, below the node's default upload limit of
/// 2 GiB.
const MAX_FILE_MIB: u64 = 1536;

/// Nodes of the cluster: one more than the replication factor.
const NODES: usize = 3;

/// Replication factor of the cluster, so one node holds no copy.
const REPLICATION_FACTOR: usize = 2;

/// Timed streams from each kind of node.
const ROUNDS: usize = 5;

/// Seed of the file's samples, fixed so every run streams the same file.
const FILE_SEED: u64 = 0x57_2ea3;

const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

fn main() -> ExitCode {
    // `cargo test --benches` runs bench targets without `--bench`, and a
    // test run should not start clusters and move gigabytes.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("streaming bench skipped: run it with `cargo bench --bench streaming`");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("streaming bench failed: start the tokio runtime: {error}");
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
            eprintln!("streaming bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Announces a bench phase on standard error.
fn phase(text: &str) {
    eprintln!("=== {text}");
}

/// The two nodes streamed from.
struct Pair {
    /// A node that holds a replica and reads its own disk.
    local: usize,
    /// The node without a replica, which fetches every chunk over QUIC.
    remote: usize,
}

/// One timed stream: its wall time and the CPU time spent during it.
#[derive(Clone, Copy, Default)]
struct Timed {
    elapsed: Duration,
    /// CPU time of the node that served the HTTP request.
    serving_node_cpu: Duration,
    /// CPU time of the other nodes, among them any replica it read from.
    other_nodes_cpu: Duration,
    /// CPU time of the bench process, the HTTP client.
    bench_cpu: Duration,
}

impl Timed {
    fn total_cpu(&self) -> Duration {
        self.serving_node_cpu + self.other_nodes_cpu + self.bench_cpu
    }
}

/// One round: a stream of each kind.
struct Round {
    local: Timed,
    remote: Timed,
}

async fn run() -> Result<()> {
    let file_mib = file_mib()?;
    let file_bytes = file_mib * 1024 * 1024;
    let work_dir = tempfile::tempdir().context("create the file's directory")?;
    let path = work_dir.path().join("bench-stream.wav");

    phase(&format!("write a {file_mib} MiB WAV file"));
    let write_path = path.clone();
    let expected_sha256 =
        tokio::task::spawn_blocking(move || write_noise_wav(&write_path, file_bytes, FILE_SEED))
            .await
            .context("join the file writer")??;

    phase(&format!(
        "start {NODES} nodes with replication factor {REPLICATION_FACTOR}"
    ));
    let mut cluster = BenchCluster::start(NODES, REPLICATION_FACTOR, &[]).await?;
    cluster.wait_ready().await?;

    let outcome = measure(&cluster, &path, file_bytes, &expected_sha256).await;
    let outcome = outcome.with_context(|| cluster.log_tails());
    let cleanup = cluster.remove().await;
    let (pair, rounds, load_before, load_after) = outcome?;
    cleanup?;

    print_report(&pair, &rounds, file_mib, &load_before, &load_after);
    Ok(())
}

fn file_mib() -> Result<u64> {
    let Some(value) = std::env::var_os(FILE_MIB_ENV) else {
        return Ok(DEFAULT_FILE_MIB);
    };
    let text = value.to_string_lossy();
    let mib: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{FILE_MIB_ENV}={text} is not a whole number"))?;
    ensure!(
        (MIN_FILE_MIB..=MAX_FILE_MIB).contains(&mib),
        "{FILE_MIB_ENV}={mib} is outside {MIN_FILE_MIB}..={MAX_FILE_MIB}"
    );
    Ok(mib)
}

/// Uploads the file, checks one stream from each kind of node and times
/// [`ROUNDS`] more. Returns the nodes, the rounds and the load averages
/// before and after the timed rounds.
async fn measure(
    cluster: &BenchCluster,
    path: &std::path::Path,
    file_bytes: u64,
    expected_sha256: &str,
) -> Result<(Pair, Vec<Round>, String, String)> {
    phase("upload through node1 and wait for both replicas");
    let track = upload_file(cluster, 0, path).await?;
    let file_id = track["file_id"].as_str().unwrap_or_default().to_string();
    ensure!(
        file_id == expected_sha256,
        "file_id {file_id} is not the SHA-256 of the file, {expected_sha256}"
    );
    let replicas = wait_for_replicas(cluster, 0, &file_id, REPLICATION_FACTOR).await?;
    let holds = |index: usize| replicas.contains(&cluster.nodes[index].id);
    let local = (0..NODES)
        .find(|&index| holds(index))
        .context("no node holds a replica")?;
    let remote = (0..NODES)
        .find(|&index| !holds(index))
        .context("every node holds a replica")?;
    let pair = Pair { local, remote };
    let stream_path = format!("/music/stream/{file_id}");

    phase("stream once from each node and check SHA-256");
    for index in [pair.local, pair.remote] {
        let url = cluster.nodes[index].url(&stream_path);
        let (size_bytes, sha256) = stream_body(&cluster.client, &url, true).await?;
        let id = &cluster.nodes[index].id;
        ensure!(
            size_bytes == file_bytes,
            "{id} streamed {size_bytes} bytes, expected {file_bytes}"
        );
        ensure!(
            sha256.as_deref() == Some(expected_sha256),
            "{id} streamed content with SHA-256 {sha256:?}, expected {expected_sha256}"
        );
    }

    phase(&format!("{ROUNDS} timed rounds"));
    let pids = cluster.pids();
    let load_before = load_average();
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        // Alternating the order spreads any drift in the machine's load
        // over both kinds of stream.
        let order = if round % 2 == 0 {
            [pair.local, pair.remote]
        } else {
            [pair.remote, pair.local]
        };
        let mut local = Timed::default();
        let mut remote = Timed::default();
        for index in order {
            let url = cluster.nodes[index].url(&stream_path);
            let cpu_before = cpu_times(&pids)?;
            let started = Instant::now();
            let (size_bytes, _) = stream_body(&cluster.client, &url, false).await?;
            let elapsed = started.elapsed();
            let cpu_after = cpu_times(&pids)?;
            let mut timed = Timed {
                elapsed,
                ..Timed::default()
            };
            for (position, (before, after)) in cpu_before.iter().zip(&cpu_after).enumerate() {
                let used = after.saturating_sub(*before);
                if position == index {
                    timed.serving_node_cpu += used;
                } else if position < pids.len() {
                    timed.other_nodes_cpu += used;
                } else {
                    timed.bench_cpu += used;
                }
            }
            ensure!(
                size_bytes == file_bytes,
                "{} streamed {size_bytes} bytes, expected {file_bytes}",
                cluster.nodes[index].id
            );
            if index == pair.local {
                local = timed;
            } else {
                remote = timed;
            }
        }
        rounds.push(Round { local, remote });
    }
    let load_after = load_average();
    Ok((pair, rounds, load_before, load_after))
}

fn mib_per_second(file_mib: u64, elapsed: Duration) -> f64 {
    file_mib as f64 / elapsed.as_secs_f64()
}

/// CPU milliseconds per MiB streamed.
fn cpu_ms_per_mib(file_mib: u64, cpu: Duration) -> f64 {
    cpu.as_secs_f64() * 1000.0 / file_mib as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Returns the user and system CPU time used so far by each process of
/// `pids`, in order, and then by this process, from `/proc/<pid>/stat`.
fn cpu_times(pids: &[u32]) -> Result<Vec<Duration>> {
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(
        ticks_per_second > 0,
        "sysconf(_SC_CLK_TCK) returned {ticks_per_second}"
    );
    let paths = pids
        .iter()
        .map(|pid| format!("/proc/{pid}/stat"))
        .chain(std::iter::once("/proc/self/stat".to_string()));
    let mut times = Vec::new();
    for path in paths {
        let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        // The command name in brackets may contain spaces, so fields are
        // counted from the closing bracket: utime and stime are fields 14
        // and 15 of the line, the 12th and 13th after it.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .with_context(|| format!("{path} has no command name"))?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let mut ticks = 0u64;
        for field in [11, 12] {
            let value: u64 = fields
                .get(field)
                .and_then(|text| text.parse().ok())
                .with_context(|| format!("{path} has no CPU time in field {}", field + 3))?;
            ticks += value;
        }
        times.push(Duration::from_secs_f64(
            ticks as f64 / ticks_per_second as f64,
        ));
    }
    Ok(times)
}

fn print_report(pair: &Pair, rounds: &[Round], file_mib: u64, before: &str, after: &str) {
    println!();
    println!(
        "streaming: one {file_mib} MiB file ({:.0} MB), {NODES} nodes, replication factor \
         {REPLICATION_FACTOR}; local is node{}, remote is node{}",
        file_mib as f64 * BYTES_PER_MIB / 1e6,
        pair.local + 1,
        pair.remote + 1
    );
    println!("load average {before} before the timed rounds and {after} after them");
    let mut rows = Vec::new();
    let mut columns: [Vec<f64>; 5] = Default::default();
    for (index, round) in rounds.iter().enumerate() {
        let local = mib_per_second(file_mib, round.local.elapsed);
        let remote = mib_per_second(file_mib, round.remote.elapsed);
        let values = [
            local,
            remote,
            local / remote,
            cpu_ms_per_mib(file_mib, round.local.total_cpu()),
            cpu_ms_per_mib(file_mib, round.remote.total_cpu()),
        ];
        for (column, value) in columns.iter_mut().zip(values) {
            column.push(value);
        }
        rows.push(row((index + 1).to_string(), values));
    }
    let medians = columns.map(median);
    rows.push(row("median".to_string(), medians));
    print_table(
        &[
            "round",
            "local MiB/s",
            "remote MiB/s",
            "local/remote",
            "local CPU ms/MiB",
            "remote CPU ms/MiB",
        ],
        &rows,
    );
    println!(
        "CPU ms/MiB is the user and system time of all nodes and the bench process \
         during the stream, per MiB"
    );

    println!();
    let mut rows = Vec::new();
    for (label, pick) in [
        (
            "local",
            (|round: &Round| round.local) as fn(&Round) -> Timed,
        ),
        ("remote", |round: &Round| round.remote),
    ] {
        let split = |cpu: fn(&Timed) -> Duration| {
            let values = rounds
                .iter()
                .map(|round| cpu_ms_per_mib(file_mib, cpu(&pick(round))))
                .collect();
            format!("{:.2}", median(values))
        };
        rows.push(vec![
            label.to_string(),
            split(|timed| timed.serving_node_cpu),
            split(|timed| timed.other_nodes_cpu),
            split(|timed| timed.bench_cpu),
        ]);
    }
    print_table(
        &[
            "median CPU ms/MiB",
            "serving node",
            "other nodes",
            "bench (client)",
        ],
        &rows,
    );
}

fn row(label: String, values: [f64; 5]) -> Vec<String> {
    let [local, remote, ratio, local_cpu, remote_cpu] = values;
    vec![
        label,
        format!("{local:.1}"),
        format!("{remote:.1}"),
        format!("{ratio:.2}"),
        format!("{local_cpu:.2}"),
        format!("{remote_cpu:.2}"),
    ]
}
