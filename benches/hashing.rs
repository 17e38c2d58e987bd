//! Cost of the two hashes the blob store computes on every byte: SHA-256
//! (the file id and end-to-end checksum, `sha2`) and BLAKE3 (per-chunk
//! verification, `blake3`).
//!
//! Run with `cargo bench --bench hashing` (about 40 seconds). Criterion
//! reports bytes per second (`thrpt`) for each hash over inputs of 64 B,
//! 4 KiB, 64 KiB and 1 MiB, held in memory.
//!
//! After the criterion groups, when an `openssl` binary is on the `PATH`,
//! the bench writes a [`FILE_SIZE_BYTES`] (256 MiB) temporary file. It
//! hashes the file with `sha2` in [`READ_BUFFER_BYTES`] reads and with
//! `openssl dgst -sha256`, checks that both digests agree, and prints both
//! rates and their ratio. Each side runs [`FILE_RUNS`] times and the best
//! run counts, so the page cache is warm for both. Without `openssl` it
//! prints a note and skips the comparison.

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use criterion::{BenchmarkId, Criterion, Throughput};
use sha2::{Digest, Sha256};

const INPUT_SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (4 * 1024, "4KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

/// Size of the file hashed by both `sha2` and `openssl`: large enough that
/// process start-up is noise next to hashing.
const FILE_SIZE_BYTES: usize = 256 * 1024 * 1024;

/// Read size for hashing the file, the blob store's default chunk size.
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// Timed runs per side of the file comparison.
const FILE_RUNS: usize = 3;

fn input(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(131) >> 3) as u8)
        .collect()
}

fn bench_hashes(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("sha256");
    for (size, label) in INPUT_SIZES {
        let data = input(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| black_box(Sha256::digest(black_box(&data))));
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("blake3");
    for (size, label) in INPUT_SIZES {
        let data = input(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| black_box(blake3::hash(black_box(&data))));
        });
    }
    group.finish();
}

fn write_test_file(path: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path).context("create temporary file")?;
    let block = input(READ_BUFFER_BYTES);
    for _ in 0..FILE_SIZE_BYTES / READ_BUFFER_BYTES {
        file.write_all(&block).context("write temporary file")?;
    }
    file.sync_all().context("fsync temporary file")?;
    Ok(())
}

fn sha2_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).context("open temporary file")?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    loop {
        let read = file.read(&mut buffer).context("read temporary file")?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn openssl_file(path: &Path) -> anyhow::Result<String> {
    let output = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .arg(path)
        .output()
        .context("run openssl dgst")?;
    if !output.status.success() {
        bail!(
            "openssl dgst failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // `-r` prints "<hex digest> *<path>".
    let stdout = String::from_utf8(output.stdout).context("openssl output is not UTF-8")?;
    let digest = stdout
        .split_whitespace()
        .next()
        .context("empty openssl output")?;
    Ok(digest.to_string())
}

/// Runs `hash` [`FILE_RUNS`] times and returns its digest and best time.
fn best_of(hash: impl Fn() -> anyhow::Result<String>) -> anyhow::Result<(String, Duration)> {
    let mut best = Duration::MAX;
    let mut digest = String::new();
    for _ in 0..FILE_RUNS {
        let started = Instant::now();
        digest = hash()?;
        best = best.min(started.elapsed());
    }
    Ok((digest, best))
}

fn compare_with_openssl() -> anyhow::Result<()> {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("openssl not found on PATH: skipping the file comparison");
        return Ok(());
    }

    let dir = tempfile::tempdir().context("create temporary directory")?;
    let path = dir.path().join("hash-input.bin");
    write_test_file(&path)?;

    let (ours, ours_time) = best_of(|| sha2_file(&path))?;
    let (theirs, theirs_time) = best_of(|| openssl_file(&path))?;
    if ours != theirs {
        bail!("digests differ: sha2 {ours}, openssl {theirs}");
    }

    let mib = FILE_SIZE_BYTES as f64 / (1024.0 * 1024.0);
    let ours_rate = mib / ours_time.as_secs_f64();
    let theirs_rate = mib / theirs_time.as_secs_f64();
    println!();
    println!("SHA-256 of a {mib:.0} MiB file, best of {FILE_RUNS} runs, page cache warm:");
    println!(
        "  sha2 crate, {} KiB reads: {ours_rate:>8.0} MiB/s",
        READ_BUFFER_BYTES / 1024
    );
    println!("  openssl dgst -sha256:      {theirs_rate:>8.0} MiB/s (process start included)");
    println!(
        "  ratio sha2 / openssl:      {:>8.2}",
        ours_rate / theirs_rate
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    bench_hashes(&mut criterion);
    criterion.final_summary();
    // `cargo test --benches` runs each benchmark once to check it works,
    // without `--bench`; the 256 MiB comparison is skipped there.
    if std::env::args().any(|arg| arg == "--bench") {
        compare_with_openssl()?;
    }
    Ok(())
}
