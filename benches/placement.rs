//! Replica-set lookups on the consistent hashing ring.
//!
//! Run with `cargo bench --bench placement` (about 20 seconds). Each
//! criterion iteration looks up [`LOOKUPS_PER_ITERATION`] distinct file ids
//! with replication factor 3, and criterion reports lookups per second
//! (`thrpt`, elements/s):
//!
//! - `replica_indices_into/{3,10,100}_nodes`: the allocation-free hot path
//!   on rings of 3, 10 and 100 nodes with the default vnode count.
//! - `replica_set/100_nodes`: the convenience call that returns owned node
//!   ids, for the cost of its allocations.
//!
//! After the criterion groups the bench times [`RATE_LOOKUPS`] lookups per
//! ring on one thread and prints lookups per second next to the target of
//! 2 million per second per core at 100 nodes. The figures depend on the
//! machine and on what else runs on it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use dispotify::placement::{Ring, DEFAULT_VNODES_PER_NODE};
use sha2::{Digest, Sha256};

/// Distinct file ids looked up per criterion iteration; enough that the
/// ids do not all sit in the CPU cache with their ring entries.
const LOOKUPS_PER_ITERATION: usize = 4096;

/// Lookups timed per ring for the printed rate.
const RATE_LOOKUPS: usize = 2_000_000;

/// Replication factor used throughout, the default of the cluster.
const REPLICATION_FACTOR: usize = 3;

/// Target lookup rate per core on a 100-node ring.
const TARGET_LOOKUPS_PER_SECOND: f64 = 2_000_000.0;

const RING_SIZES: [usize; 3] = [3, 10, 100];

fn ring_of(node_count: usize) -> Ring {
    Ring::new(
        (0..node_count).map(|i| format!("node-{i:03}")),
        DEFAULT_VNODES_PER_NODE,
    )
}

/// File ids shaped like real ones: lowercase hex SHA-256 of some content.
fn file_ids(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| hex::encode(Sha256::digest(format!("bench file {i}"))))
        .collect()
}

fn bench_lookups(criterion: &mut Criterion) {
    let ids = file_ids(LOOKUPS_PER_ITERATION);

    let mut group = criterion.benchmark_group("replica_indices_into");
    group.throughput(Throughput::Elements(LOOKUPS_PER_ITERATION as u64));
    for node_count in RING_SIZES {
        let ring = ring_of(node_count);
        let mut out = Vec::with_capacity(REPLICATION_FACTOR);
        group.bench_function(
            BenchmarkId::from_parameter(format!("{node_count}_nodes")),
            |b| {
                b.iter(|| {
                    for id in &ids {
                        ring.replica_indices_into(black_box(id), REPLICATION_FACTOR, &mut out);
                        black_box(&out);
                    }
                });
            },
        );
    }
    group.finish();

    let mut group = criterion.benchmark_group("replica_set");
    group.throughput(Throughput::Elements(LOOKUPS_PER_ITERATION as u64));
    let ring = ring_of(100);
    group.bench_function("100_nodes", |b| {
        b.iter(|| {
            for id in &ids {
                black_box(ring.replica_set(black_box(id), REPLICATION_FACTOR));
            }
        });
    });
    group.finish();
}

/// Times [`RATE_LOOKUPS`] lookups on each ring and prints the rates.
fn print_rates() {
    let ids = file_ids(LOOKUPS_PER_ITERATION);
    println!();
    println!("replica_indices_into, R = {REPLICATION_FACTOR}, one thread, {RATE_LOOKUPS} lookups per ring:");
    println!("{:>6}  {:>14}", "nodes", "lookups/s");
    for node_count in RING_SIZES {
        let ring = ring_of(node_count);
        let mut out = Vec::with_capacity(REPLICATION_FACTOR);
        let started = Instant::now();
        for id in ids.iter().cycle().take(RATE_LOOKUPS) {
            ring.replica_indices_into(black_box(id), REPLICATION_FACTOR, &mut out);
            black_box(&out);
        }
        let rate = RATE_LOOKUPS as f64 / started.elapsed().as_secs_f64();
        println!("{node_count:>6}  {rate:>14.0}");
        if node_count == 100 {
            let verdict = if rate >= TARGET_LOOKUPS_PER_SECOND {
                "meets"
            } else {
                "misses"
            };
            println!("100 nodes {verdict} the target of {TARGET_LOOKUPS_PER_SECOND:.0} lookups/s per core");
        }
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    bench_lookups(&mut criterion);
    criterion.final_summary();
    // `cargo test --benches` runs each benchmark once to check it works,
    // without `--bench`; the timed loop is skipped there.
    if std::env::args().any(|arg| arg == "--bench") {
        print_rates();
    }
}
