//! Leader loss, follower restarts and a node cut off from the quorum, with
//! the default Raft timings. Writes must reach the next leader, and a
//! restarted follower must not cost an election. A cut-off node must reject
//! writes at once with `no_quorum`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::support::{phase, wait_until, Cluster, ClusterOptions, TestNode};
use super::{count_files, write_wav};

/// Held by every test of this file: their timings mean little when other
/// clusters of the same file share the two cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a write through a follower may take when the leader has just
/// been killed. It covers an election and a commit, with room for a loaded
/// machine. With the default timings a follower campaigns after 200 to
/// 240 ms of silence. The node's whole write timeout is 8 s.
const WRITE_AFTER_LEADER_LOSS_LIMIT: Duration = Duration::from_secs(5);

/// How long a node cut off from the quorum may take to reject a write. A
/// follower counts as cut off after the 120 ms maximum election timeout and
/// a round of pings of at most 1 s, a leader after 1 s without a majority,
/// and the rest is room for a loaded machine. Before the quorum check, a
/// lock write waited 8 s and an upload about 15 s.
const REJECTION_LIMIT: Duration = Duration::from_secs(4);

/// The Prometheus counter of leader changes a node has seen.
const LEADER_CHANGES: &str = "dispotify_raft_leader_changes_total";

/// How long the term is watched after a follower restarted.
const TERM_WATCH: Duration = Duration::from_secs(15);

/// Sends SIGSTOP or SIGCONT to a node's process.
fn signal(node: &TestNode, signal: &str) -> Result<()> {
    let pid = node.pid().context("node is not running")?;
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid} failed: {status}");
    Ok(())
}

/// Takes lock `name` through node `index`; returns the status, the body and
/// how long the request took.
async fn acquire_lock(
    cluster: &Cluster,
    index: usize,
    name: &str,
) -> Result<(u16, Value, Duration)> {
    let started = Instant::now();
    let (status, body) = cluster
        .lock_request(index, name, "failover-test", Duration::from_secs(60))
        .await?;
    Ok((status, body, started.elapsed()))
}

/// Uploads a generated WAV file through node `index`; returns the status,
/// the body and how long the request took.
async fn upload_wav(
    cluster: &Cluster,
    index: usize,
    name: &str,
    seed: u64,
) -> Result<(u16, Value, Duration)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(name);
    write_wav(&path, 256 * 1024, seed)?;
    let started = Instant::now();
    let (status, body) = cluster.upload(index, &path).await?;
    Ok((status, body, started.elapsed()))
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_write_reaches_next_leader() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    phase("start a 3-node cluster");
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let leader = cluster.leader_index().await?;
    let follower = (leader + 1) % cluster.nodes.len();
    let (status, body, _) = acquire_lock(&cluster, follower, "before-loss").await?;
    ensure!(
        status == 200,
        "lock before the leader loss: {status} {body}"
    );
    let changes_before = cluster.metric(follower, LEADER_CHANGES).await?;

    phase("SIGKILL the leader, then take a lock through a follower");
    cluster.nodes[leader].kill();
    let (status, body, took) = acquire_lock(&cluster, follower, "after-loss").await?;
    ensure!(
        status == 200,
        "lock through the follower answered {status} after {took:?}: {body}\n\
         last log lines of the follower:\n{}",
        cluster.nodes[follower].log_tail(30)
    );
    ensure!(
        took < WRITE_AFTER_LEADER_LOSS_LIMIT,
        "lock through the follower took {took:?}"
    );
    eprintln!("lock committed after {took:?}");
    let changes_after = cluster.metric(follower, LEADER_CHANGES).await?;
    ensure!(
        changes_after > changes_before,
        "{LEADER_CHANGES} went from {changes_before} to {changes_after} across a failover"
    );

    phase("upload through the other follower");
    let other = (leader + 2) % cluster.nodes.len();
    let (status, body, took) = upload_wav(&cluster, other, "after-loss.wav", 7).await?;
    ensure!(
        status == 201,
        "upload after the leader loss: {status} {body}"
    );
    ensure!(
        took < WRITE_AFTER_LEADER_LOSS_LIMIT,
        "upload after the leader loss took {took:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_causes_no_election() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    phase("start a 3-node cluster");
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let leader = cluster.leader_index().await?;
    let follower = (leader + 1) % cluster.nodes.len();
    let term = cluster.max_term().await;
    ensure!(term.is_some(), "no node reports a term");

    phase("SIGKILL a follower and restart it after 1 s on the same address");
    cluster.nodes[follower].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.nodes[follower].restart()?;
    cluster.wait_ready(follower).await?;

    phase("the term must not change");
    let watched = Instant::now();
    while watched.elapsed() < TERM_WATCH {
        let now = cluster.max_term().await;
        ensure!(
            now == term,
            "term went from {term:?} to {now:?} {:.1} s after the follower was ready again\n\
             last log lines of the follower:\n{}\nlast log lines of the leader:\n{}",
            watched.elapsed().as_secs_f64(),
            cluster.nodes[follower].log_tail(20),
            cluster.nodes[leader].log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    phase("the restarted follower takes writes");
    let (status, body, _) = acquire_lock(&cluster, follower, "after-restart").await?;
    ensure!(
        status == 200,
        "lock through the restarted follower: {status} {body}"
    );
    Ok(())
}

/// Stops every node but `survivor` with SIGSTOP and checks that `survivor`
/// rejects a lock and an upload sent at once with `no_quorum`, quickly.
/// Checks that an upload sent once it is cut off is rejected before any
/// blob is stored. Then resumes the others and waits for a write to
/// succeed again.
async fn check_cut_off_node(cluster: &Cluster, survivor: usize) -> Result<()> {
    let stopped: Vec<usize> = (0..cluster.nodes.len())
        .filter(|i| *i != survivor)
        .collect();
    for &index in &stopped {
        signal(&cluster.nodes[index], "STOP")?;
    }

    let (lock, upload) = tokio::join!(
        acquire_lock(cluster, survivor, "cut-off"),
        upload_wav(cluster, survivor, "cut-off-early.wav", 11),
    );
    let (status, body, took) = lock?;
    ensure!(
        status == 503 && error_code(&body) == "no_quorum",
        "lock on the cut-off node answered {status} after {took:?}: {body}"
    );
    ensure!(took < REJECTION_LIMIT, "lock rejection took {took:?}");
    eprintln!("lock rejected after {took:?}");
    let (status, body, took) = upload?;
    ensure!(
        status == 503 && error_code(&body) == "no_quorum",
        "upload sent as the node was cut off answered {status} after {took:?}: {body}"
    );
    ensure!(took < REJECTION_LIMIT, "upload rejection took {took:?}");
    eprintln!("upload sent at once rejected after {took:?}");

    let blobs_before = count_files(&cluster.nodes[survivor].data_dir.join("blobs"));
    let (status, body, took) = upload_wav(cluster, survivor, "cut-off-late.wav", 13).await?;
    ensure!(
        status == 503 && error_code(&body) == "no_quorum",
        "upload on the cut-off node answered {status} after {took:?}: {body}"
    );
    ensure!(took < REJECTION_LIMIT, "upload rejection took {took:?}");
    eprintln!("upload sent later rejected after {took:?}");
    let blobs_after = count_files(&cluster.nodes[survivor].data_dir.join("blobs"));
    ensure!(
        blobs_after == blobs_before,
        "the rejected upload left {} blob files on the cut-off node",
        blobs_after.saturating_sub(blobs_before)
    );

    for &index in &stopped {
        signal(&cluster.nodes[index], "CONT")?;
    }
    wait_until(
        "a lock write after the nodes resumed",
        Duration::from_secs(30),
        || async {
            matches!(
                acquire_lock(cluster, survivor, "healed").await,
                Ok((200, _, _))
            )
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_node_refuses_writes_at_once() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    phase("start a 3-node cluster and store a file on it");
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let (status, body, _) = upload_wav(&cluster, 0, "survivor.wav", 3).await?;
    ensure!(status == 201, "first upload: {status} {body}");
    let file_id = body["file_id"].as_str().unwrap_or_default().to_string();
    let content = {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("survivor.wav");
        write_wav(&path, 256 * 1024, 3)?;
        std::fs::read(path)?
    };

    let leader = cluster.leader_index().await?;
    let follower = (leader + 1) % cluster.nodes.len();
    phase("stop every node but a follower");
    check_cut_off_node(&cluster, follower).await?;

    let leader = cluster.leader_index().await?;
    phase("stop every node but the leader");
    check_cut_off_node(&cluster, leader).await?;

    phase("the file stored before the cuts streams from every node");
    for index in 0..cluster.nodes.len() {
        let (status, bytes) = cluster.download(index, &file_id).await?;
        ensure!(status == 200, "stream from node {index}: {status}");
        ensure!(bytes == content, "stream from node {index} differs");
    }
    Ok(())
}

/// Time to live of the lock held by the stopped leader. Shorter than the
/// time the leader stays stopped, so the lock expires while it is stopped.
const PAUSED_HOLDER_TTL: Duration = Duration::from_secs(2);

/// How long the lock holder stays stopped: past its lock's time to live
/// and past an election.
const HOLDER_PAUSE: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_lock_holder_loses_its_lock() -> Result<()> {
    let _one_cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let holder = cluster.leader_index().await?;
    let other = (holder + 1) % cluster.nodes.len();

    phase("the leader's worker takes a short lock, then the leader is stopped");
    // The leader stamps the lock between these two instants, so its expiry
    // is no earlier than the request plus the time to live.
    let requested_at = Instant::now();
    let (status, granted) = cluster
        .lock_request(holder, "nightly-job", "worker-a", PAUSED_HOLDER_TTL)
        .await?;
    ensure!(status == 200, "first acquire: {status} {granted}");
    let granted_at = Instant::now();
    let first_token = granted["token"].as_u64().context("token")?;
    signal(&cluster.nodes[holder], "STOP")?;

    phase("another worker gets the lock once it expired, with a larger token");
    let second = loop {
        ensure!(
            granted_at.elapsed() < HOLDER_PAUSE,
            "no grant to the second worker while the holder was stopped"
        );
        let (status, body) = cluster
            .lock_request(other, "nightly-job", "worker-b", Duration::from_secs(60))
            .await?;
        if status == 200 {
            break body;
        }
        ensure!(
            [409, 503].contains(&status),
            "acquire during the pause: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        requested_at.elapsed() >= PAUSED_HOLDER_TTL,
        "granted {:?} after the first request, before its time to live ran out",
        requested_at.elapsed()
    );
    let second_token = second["token"].as_u64().context("token")?;
    ensure!(
        second_token > first_token,
        "token {second_token} is not larger than {first_token}"
    );

    phase("the resumed holder cannot release the lock with its stale token");
    tokio::time::sleep(HOLDER_PAUSE.saturating_sub(granted_at.elapsed())).await;
    signal(&cluster.nodes[holder], "CONT")?;
    cluster.wait_ready(holder).await?;
    let url = format!(
        "{}/nightly-job?owner=worker-a&token={first_token}",
        cluster.nodes[holder].url("/cluster/locks")
    );
    // Right after SIGCONT the old leader may still act as the leader of its
    // old term and return 503 no_quorum until the new leader's first
    // heartbeat reaches it. A client retries.
    let retry_until = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let response = cluster.http.delete(&url).send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 503 || Instant::now() > retry_until {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(status == 409, "stale release: {status} {body}");
    ensure!(body["error"]["code"] == "lock_not_held", "{body}");

    phase("every node lists the second worker's lock");
    for index in 0..cluster.nodes.len() {
        let url = cluster.nodes[index].url("/cluster/locks");
        let http = cluster.http.clone();
        wait_until("lock listed", Duration::from_secs(10), || {
            let (url, http) = (url.clone(), http.clone());
            async move {
                let Ok(response) = http.get(url).send().await else {
                    return false;
                };
                let list: Value = response.json().await.unwrap_or(Value::Null);
                list["locks"][0]["owner"] == "worker-b"
                    && list["locks"][0]["token"].as_u64() == Some(second_token)
            }
        })
        .await?;
    }
    Ok(())
}
