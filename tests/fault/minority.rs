//! A partition that leaves the leader on the small side of five nodes.
//! Seed 1 of the fault run with five nodes found that the follower beside
//! such a leader still heard it, so it forwarded every write to a leader
//! that could commit nothing, and the client waited for the write timeout.
//! The follower now learns from the leader's ping reply that no majority
//! has acknowledged it, and refuses writes with `503 no_quorum` at once.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::harness::{FaultCluster, POLL_INTERVAL};
use crate::support::{count_files, phase};
use crate::workload::FileSpec;

/// How long the small side may take to reject a write once it is cut off.
/// The leader's last acknowledgement must age past its limit, and the
/// follower's view of it is at most 0.5 s old. The rest is room for a
/// loaded machine.
const REJECTION_LIMIT: Duration = Duration::from_secs(4);

/// How long the large side may take to elect a leader and commit.
const MAJORITY_WRITE_LIMIT: Duration = Duration::from_secs(15);

/// How long the cluster may take to agree again after the partition heals.
const HEAL_LIMIT: Duration = Duration::from_secs(30);

/// Sends a lock request, a Raft write with no file, through `node`, and
/// returns the status, the body and how long the response took.
async fn lock_through(
    fault: &FaultCluster,
    node: usize,
    owner: &str,
) -> Result<(u16, Value, Duration)> {
    let started = Instant::now();
    let (status, body) = fault
        .cluster
        .lock_request(node, "minority", owner, Duration::from_millis(1))
        .await?;
    Ok((status, body, started.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_beside_a_cut_off_leader_refuses_writes() -> Result<()> {
    let _one_cluster = crate::ONE_CLUSTER_AT_A_TIME.lock().await;
    phase("start five nodes, each behind its own proxy");
    let fault = FaultCluster::start(1, 5, None).await?;
    fault
        .wait_converged(HEAL_LIMIT)
        .await
        .map_err(anyhow::Error::msg)?;
    let leader = fault.agreement().await.map_err(anyhow::Error::msg)?.leader;
    let follower = (0..fault.len())
        .find(|&n| n != leader)
        .context("no follower")?;
    let small = [leader, follower];
    let large: Vec<usize> = (0..fault.len()).filter(|n| !small.contains(n)).collect();

    phase(&format!(
        "cut {} (leader) and {} off from the other three",
        fault.id(leader),
        fault.id(follower)
    ));
    fault.network.partition(&small, &large);
    for (node, owner) in [(follower, "small-follower"), (leader, "small-leader")] {
        let (status, body, took) = lock_through(&fault, node, owner).await?;
        ensure!(
            status == 503 && body["error"]["code"] == "no_quorum",
            "write through {} on the small side answered {status} after {took:?}: {body}",
            fault.id(node)
        );
        ensure!(
            took < REJECTION_LIMIT,
            "{} took {took:?} to refuse",
            fault.id(node)
        );
        eprintln!("{} refused a write after {took:?}", fault.id(node));
    }

    phase("an upload through the follower is refused before it is copied");
    let blobs = fault.data_dir(follower).join("blobs");
    let before = count_files(&blobs);
    let file = FileSpec {
        key: 1,
        data_bytes: 256 * 1024,
    };
    let started = Instant::now();
    let (status, body) = fault
        .cluster
        .upload_bytes(follower, "minority.wav", file.bytes(0, file.size_bytes()))
        .await?;
    let took = started.elapsed();
    ensure!(
        status == 503 && body["error"]["code"] == "no_quorum",
        "upload through the follower answered {status} after {took:?}: {body}"
    );
    ensure!(
        took < REJECTION_LIMIT,
        "the upload took {took:?} to be refused"
    );
    ensure!(
        count_files(&blobs) == before,
        "the refused upload left files in {}",
        blobs.display()
    );
    eprintln!("upload refused after {took:?}");

    phase("the large side elects a leader and commits");
    let started = Instant::now();
    loop {
        let (status, body, _) = lock_through(&fault, large[0], "large-side").await?;
        if status == 200 {
            break;
        }
        ensure!(
            started.elapsed() < MAJORITY_WRITE_LIMIT,
            "no write committed on the large side within {MAJORITY_WRITE_LIMIT:?}: last {status} {body}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    eprintln!("large side committed after {:?}", started.elapsed());

    phase("heal: every node agrees on one leader and term again");
    fault.network.heal();
    fault
        .wait_converged(HEAL_LIMIT)
        .await
        .map_err(anyhow::Error::msg)?;
    let (status, body, _) = lock_through(&fault, follower, "after-heal").await?;
    ensure!(
        status == 200 || status == 409,
        "write through the healed follower answered {status}: {body}"
    );
    Ok(())
}
