//! Fault injection against a cluster of real node processes on loopback:
//! SIGKILL, SIGSTOP, network partitions through a UDP proxy in front of each
//! node's QUIC port, and damaged files on a stopped node's disk. Clients
//! load the cluster meanwhile, and every operation is recorded and checked.
//!
//! One seed drives every random choice; it is printed at the start and in
//! the report. Settings come from the environment:
//!
//! - `DISPOTIFY_FAULT_SEED`: the seed (the short run's default otherwise);
//! - `DISPOTIFY_FAULT_NODES`: 3 (default) or 5;
//! - `DISPOTIFY_FAULT_SECS`: seconds of random faults after every fault
//!   kind ran once;
//! - `DISPOTIFY_FAULT_CONFIG`: a TOML file of node settings;
//! - `DISPOTIFY_FAULT_SEED_COUNT`: seeds tried by `fault_runs_many_seeds`;
//! - `DISPOTIFY_FAULT_FAILOVERS`: leader losses in `failover_latency`.
//!
//! The history of each run (JSON lines) and the node logs are saved under
//! the target directory; the path is printed at the end.

#[allow(dead_code)]
#[path = "../cluster/support.rs"]
mod support;

mod faults;
mod harness;
mod minority;
mod proxy;
mod report;
mod run;
mod workload;

use std::time::{Duration, Instant};

use anyhow::Result;
use run::{env_number, Plan, RunConfig, DEFAULT_SEED};

/// Random faults after the first pass over every kind in the short run:
/// none, so the run stays within a few minutes.
const SHORT_RUN_EXTRA_FAULT_SECS: u64 = 0;

/// Held by every test that starts a cluster, so that clusters do not share
/// the machine's cores with each other and skew the timings.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_run_short() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    let started = Instant::now();
    let config = RunConfig::from_env(DEFAULT_SEED, SHORT_RUN_EXTRA_FAULT_SECS)?;
    let report = run::run(config).await?;
    report.print();
    eprintln!("wall time {:.0} s", started.elapsed().as_secs_f64());
    report.ensure_passed()
}

/// Five minutes of load without faults: a healthy cluster must hold no
/// election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for more than five minutes"]
async fn loaded_cluster_holds_no_election() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut config = RunConfig::from_env(DEFAULT_SEED, 0)?;
    config.plan = Plan::LoadOnly {
        secs: env_number("DISPOTIFY_FAULT_LOAD_SECS")?.unwrap_or(300),
    };
    config.uploaders = 4;
    config.readers = 4;
    let report = run::run(config).await?;
    report.print();
    report.ensure_passed()?;
    anyhow::ensure!(
        report.fault_free_elections == 0,
        "{} elections in a fault-free loaded run",
        report.fault_free_elections
    );
    Ok(())
}

/// Runs `DISPOTIFY_FAULT_SEED_COUNT` seeds from `DISPOTIFY_FAULT_SEED`
/// (default 1) with ten minutes of random faults each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for an hour or more"]
async fn fault_runs_many_seeds() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    let first = env_number("DISPOTIFY_FAULT_SEED")?.unwrap_or(1);
    let count = env_number("DISPOTIFY_FAULT_SEED_COUNT")?.unwrap_or(5);
    let mut failing = Vec::new();
    for seed in first..first + count {
        let mut config = RunConfig::from_env(seed, 600)?;
        config.seed = seed;
        let report = run::run(config).await?;
        report.print();
        if let Err(error) = report.ensure_passed() {
            eprintln!("{error:#}");
            failing.push(seed);
        }
    }
    anyhow::ensure!(failing.is_empty(), "failing seeds: {failing:?}");
    Ok(())
}

/// Kills or pauses the leader many times and prints the failover
/// percentiles; the figures in docs/benchmarks.md come from this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for several minutes"]
async fn failover_latency() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut config = RunConfig::from_env(DEFAULT_SEED, 0)?;
    let losses = env_number("DISPOTIFY_FAULT_FAILOVERS")?.unwrap_or(40) as usize;
    config.plan = Plan::LeaderLosses { count: losses };
    let report = run::run(config).await?;
    report.print();
    let p50 = report::percentile(&report.failover_writes, 50.0);
    let p99 = report::percentile(&report.failover_writes, 99.0);
    eprintln!("failover to a write over {losses} leader losses: p50 {p50:?}, p99 {p99:?}");
    report.ensure_passed()?;
    anyhow::ensure!(
        report.failover_writes.len() == losses,
        "only {} of {losses} leader losses ended in an acknowledged write",
        report.failover_writes.len()
    );
    anyhow::ensure!(
        p50 <= Some(Duration::from_millis(350)) && p99 <= Some(Duration::from_millis(800)),
        "failover p50 {p50:?} / p99 {p99:?} misses 350 ms / 800 ms"
    );
    Ok(())
}

/// Cluster options with the node settings of `DISPOTIFY_FAULT_CONFIG`, if
/// set, like the fault runs.
fn options_from_env() -> Result<support::ClusterOptions> {
    let config_toml = match std::env::var("DISPOTIFY_FAULT_CONFIG") {
        Ok(path) => Some(std::fs::read_to_string(path)?),
        Err(_) => None,
    };
    Ok(support::ClusterOptions {
        config_toml,
        ..Default::default()
    })
}

/// A follower that restarts has missed nothing a heartbeat cannot bring,
/// so it must rejoin without an election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_rejoins_without_election() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    support::phase("start 3 nodes on direct QUIC, no proxy");
    let mut cluster = support::Cluster::start(options_from_env()?).await?;
    let leader = cluster.leader_index().await?;
    let follower = (leader + 1) % cluster.nodes.len();
    let term = cluster.max_term().await;

    support::phase(&format!(
        "SIGKILL follower {}, restart it after 1 s",
        cluster.nodes[follower].id
    ));
    cluster.nodes[follower].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.nodes[follower].restart()?;
    cluster.wait_ready(follower).await?;

    support::phase("watch the term for 15 s");
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(15) {
        let now = cluster.max_term().await;
        anyhow::ensure!(
            now == term,
            "term went from {term:?} to {now:?} {:.1} s after the follower was ready again; \
             last log lines of the follower:\n{}\nlast log lines of the leader:\n{}",
            watched.elapsed().as_secs_f64(),
            cluster.nodes[follower].log_tail(20),
            cluster.nodes[leader].log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A write sent to a follower just after the leader died must be committed
/// by the next leader, not fail after the node's whole write timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_follower_survives_leader_loss() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    support::phase("start 3 nodes on direct QUIC, no proxy");
    let mut cluster = support::Cluster::start(options_from_env()?).await?;
    let leader = cluster.leader_index().await?;
    let follower = (leader + 1) % cluster.nodes.len();

    support::phase(&format!(
        "SIGKILL leader {}, then upload through follower {}",
        cluster.nodes[leader].id, cluster.nodes[follower].id
    ));
    cluster.nodes[leader].kill();
    let file = workload::FileSpec {
        key: DEFAULT_SEED,
        data_bytes: 64 * 1024,
    };
    let started = Instant::now();
    let (status, body) = cluster
        .upload_bytes(follower, "after-leader-loss.wav", file.content())
        .await?;
    let took = started.elapsed();
    anyhow::ensure!(
        status == 201,
        "upload through the follower answered {status} after {took:?}: {body}"
    );
    anyhow::ensure!(
        took < Duration::from_secs(5),
        "upload through the follower took {took:?}"
    );
    Ok(())
}
