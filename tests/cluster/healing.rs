//! Self-healing with real node processes: corrupt and deleted copies,
//! a node down past the grace period, and locks through the Raft log.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{phase, wait_until, Cluster, ClusterOptions};
use super::{track_replicas, wait_for_replicas, write_wav};

/// Settings that make scrub, repair and reconciliation act within seconds.
pub(super) const FAST_HEALING: &str = r#"
repair_interval = "500ms"
repair_grace = "3s"
scrub_pass_interval = "1s"
scrub_bytes_per_sec = 1073741824
orphan_grace = "2s"
"#;

/// Longest a repair may take in these tests.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until `condition` returns `Ok(true)`; an error counts as not yet.
pub(super) async fn wait_ok<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    wait_until(what, timeout, || {
        let checked = condition();
        async move { checked.await.unwrap_or(false) }
    })
    .await
}

pub(super) fn blob_path(data_dir: &Path, file_id: &str) -> PathBuf {
    data_dir.join("blobs").join(&file_id[..2]).join(file_id)
}

/// Returns the index of a node in `placed` that is not `leader`.
fn follower_replica(cluster: &Cluster, placed: &[String], leader: usize) -> Result<usize> {
    cluster
        .nodes
        .iter()
        .position(|n| placed.contains(&n.id) && n.id != cluster.nodes[leader].id)
        .context("no follower replica")
}

fn fast_cluster(nodes: usize) -> ClusterOptions {
    cluster_with(nodes, FAST_HEALING)
}

fn cluster_with(nodes: usize, config_toml: &str) -> ClusterOptions {
    ClusterOptions {
        nodes,
        config_toml: Some(config_toml.to_string()),
        ..Default::default()
    }
}

async fn upload_wav(
    cluster: &Cluster,
    dir: &Path,
    size: u32,
    seed: u64,
) -> Result<(String, Vec<u8>)> {
    let path = dir.join(format!("song-{seed}.wav"));
    write_wav(&path, size, seed)?;
    let (status, track) = cluster.upload(0, &path).await?;
    ensure!(status == 201, "upload {status}: {track}");
    let file_id = track["file_id"].as_str().context("file_id")?.to_string();
    Ok((file_id, std::fs::read(&path)?))
}

pub(super) async fn track_json(cluster: &Cluster, index: usize, file_id: &str) -> Result<Value> {
    let url = cluster.nodes[index].url(&format!("/music/tracks/{file_id}"));
    Ok(cluster.http.get(url).send().await?.json().await?)
}

/// Waits until node `index` reports every copy of `file_id` healthy on
/// exactly the nodes in `expected` (any order).
pub(super) async fn wait_healthy_on(
    cluster: &Cluster,
    index: usize,
    file_id: &str,
    expected: &[String],
) -> Result<()> {
    let mut expected = expected.to_vec();
    expected.sort();
    wait_ok("every copy healthy", HEAL_TIMEOUT, || {
        let expected = expected.clone();
        async move {
            let track = track_json(cluster, index, file_id).await?;
            let health = track["replica_health"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut nodes: Vec<String> = health
                .iter()
                .filter(|h| h["state"] == "ok")
                .filter_map(|h| h["node_id"].as_str().map(String::from))
                .collect();
            nodes.sort();
            Ok(nodes == expected && health.len() == expected.len())
        }
    })
    .await
}

/// Settings under which only the repair scheduler can fix a stale copy:
/// scrub reads too slowly to reach it and reconciliation keeps orphans for
/// an hour, as a node with the default settings does for ten minutes.
const REPAIR_ONLY: &str = r#"
repair_interval = "500ms"
repair_grace = "3s"
scrub_pass_interval = "1h"
scrub_bytes_per_sec = 4096
orphan_grace = "1h"
"#;

/// A copy deleted from a running node's disk is fetched back once a read
/// through that node finds it missing. With an hour's orphan grace the next
/// periodic reconciliation is 15 minutes away, and scrub only reads the
/// copies that are on disk, so only the read can have set it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_copy_is_noticed_by_a_read() -> Result<()> {
    phase("upload to a 3-node cluster that reconciles only every 15 minutes");
    let cluster = Cluster::start(cluster_with(3, REPAIR_ONLY)).await?;
    let dir = tempfile::tempdir()?;
    let (file_id, original) = upload_wav(&cluster, dir.path(), 256 * 1024, 23).await?;
    wait_for_replicas(&cluster, &file_id, 3).await?;

    phase("delete node 1's copy while it runs, then read through node 1");
    let path = blob_path(&cluster.nodes[0].data_dir, &file_id);
    std::fs::remove_file(&path)?;
    let (status, streamed) = cluster.download(0, &file_id).await?;
    ensure!(
        status == 200 && streamed == original,
        "read with the local copy gone: {status}, {} bytes",
        streamed.len()
    );

    phase("the copy is back on node 1's disk");
    wait_ok("copy fetched back", Duration::from_secs(20), || async {
        Ok(std::fs::read(&path).is_ok_and(|bytes| bytes == original))
    })
    .await
}

/// How a test damages a copy on the disk of a stopped node.
#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipBit { offset: usize },
    Truncate { to_bytes: usize },
}

impl Damage {
    fn apply(self, path: &Path) -> Result<()> {
        let mut bytes = std::fs::read(path)?;
        match self {
            Damage::FlipBit { offset } => bytes[offset] ^= 0x10,
            Damage::Truncate { to_bytes } => bytes.truncate(to_bytes),
        }
        std::fs::write(path, &bytes)?;
        Ok(())
    }
}

/// Streams `file_id` from node `index` until `stop` is set, and fails on
/// the first response that is not the uploaded bytes. Returns the number
/// of complete streams.
async fn read_until(
    cluster: &Cluster,
    index: usize,
    file_id: &str,
    original: &[u8],
    stop: &std::sync::atomic::AtomicBool,
) -> Result<usize> {
    let mut reads = 0;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let (status, streamed) = cluster.download(index, file_id).await?;
        ensure!(status == 200, "stream {reads} answered {status}");
        ensure!(
            streamed == original,
            "stream {reads} returned {} bytes that differ from the upload",
            streamed.len()
        );
        reads += 1;
    }
    Ok(reads)
}

/// Damages one copy of a 3 MiB file on a stopped node and restarts the
/// node. Reads from it race the quarantine and the repair, and must never
/// return a damaged byte. The repair must put back a byte-identical copy.
async fn damaged_copy_is_replaced(damage: Damage, seed: u64) -> Result<()> {
    phase("upload a 3 MiB file to a 3-node cluster");
    let mut cluster = Cluster::start(fast_cluster(3)).await?;
    let dir = tempfile::tempdir()?;
    let (file_id, original) = upload_wav(&cluster, dir.path(), 3 * 1024 * 1024, seed).await?;
    let replicas = wait_for_replicas(&cluster, &file_id, 3).await?;

    let victim = 1;
    phase(&format!(
        "stop node {}, damage its copy ({damage:?}), start it",
        victim + 1
    ));
    cluster.nodes[victim].kill();
    let path = blob_path(&cluster.nodes[victim].data_dir, &file_id);
    damage.apply(&path)?;
    cluster.nodes[victim].restart()?;
    cluster.wait_ready(victim).await?;

    phase("reads from the damaged node race its quarantine and repair, and return the upload");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let healed = async {
        let quarantine = cluster.nodes[victim].data_dir.join("quarantine");
        let result = async {
            wait_ok("copy quarantined", HEAL_TIMEOUT, || {
                let quarantine = quarantine.clone();
                let file_id = file_id.clone();
                async move {
                    Ok(std::fs::read_dir(&quarantine)?
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(&file_id)))
                }
            })
            .await?;
            wait_healthy_on(&cluster, 0, &file_id, &replicas).await?;
            wait_ok("repaired copy on disk", HEAL_TIMEOUT, || {
                let path = path.clone();
                let original = original.clone();
                async move { Ok(std::fs::read(&path).is_ok_and(|b| b == original)) }
            })
            .await
        }
        .await;
        stop.store(true, std::sync::atomic::Ordering::Release);
        result
    };
    let reading = read_until(&cluster, victim, &file_id, &original, &stop);
    let (healed, reads) = tokio::join!(healed, reading);
    healed.with_context(|| {
        format!(
            "not repaired; log of the damaged node:\n{}",
            cluster.nodes[victim].log_tail(30)
        )
    })?;
    let reads = reads?;
    ensure!(reads >= 1, "no read completed while the copy was repaired");
    let (status, streamed) = cluster.download(victim, &file_id).await?;
    ensure!(
        status == 200 && streamed == original,
        "stream after repair differs"
    );

    phase("the repair is visible in status and metrics");
    let status = cluster.status(cluster.leader_index().await?).await?;
    let repaired = status["repair"]["files_repaired_total"]
        .as_u64()
        .unwrap_or(0);
    ensure!(repaired >= 1, "leader status shows no repair: {status}");
    let metrics = cluster.metrics_text(victim).await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("dispotify_corrupt_copies_total ") && !l.ends_with(" 0")),
        "corrupt copy not counted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_copy_is_quarantined_and_repaired() -> Result<()> {
    damaged_copy_is_replaced(Damage::FlipBit { offset: 1_500_000 }, 11).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_copy_is_quarantined_and_repaired() -> Result<()> {
    damaged_copy_is_replaced(
        Damage::Truncate {
            to_bytes: 2_000_000,
        },
        15,
    )
    .await
}

/// With three nodes and R=3, a leader down past the grace period leaves no
/// node to copy to, so repair cannot act, but the next leader's status must
/// still count the files as under-replicated until the node returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_replicated_count_while_node_gone() -> Result<()> {
    phase("upload to a 3-node cluster with R=3");
    let mut cluster = Cluster::start(fast_cluster(3)).await?;
    let dir = tempfile::tempdir()?;
    let (file_id, _) = upload_wav(&cluster, dir.path(), 64 * 1024, 21).await?;
    wait_for_replicas(&cluster, &file_id, 3).await?;
    let victim = cluster.leader_index().await?;

    phase("SIGKILL the leader; past the grace period the next one counts the file");
    cluster.nodes[victim].kill();
    let survivor = (victim + 1) % cluster.nodes.len();
    let new_leader = RefCell::new(None);
    wait_ok("a new leader", HEAL_TIMEOUT, || async {
        let status = cluster.status(survivor).await?;
        let leader_id = status["leader_id"].as_str().unwrap_or_default();
        *new_leader.borrow_mut() = cluster
            .nodes
            .iter()
            .position(|n| n.id == leader_id && n.id != cluster.nodes[victim].id);
        Ok(new_leader.borrow().is_some())
    })
    .await?;
    let leader = new_leader.into_inner().context("no new leader")?;
    let under_replicated = |status: &Value| status["repair"]["under_replicated"].as_u64();
    wait_ok(
        "the file counted as under-replicated",
        HEAL_TIMEOUT,
        || async { Ok(under_replicated(&cluster.status(leader).await?) >= Some(1)) },
    )
    .await?;

    phase("restart it: the count falls back to zero");
    cluster.nodes[victim].restart()?;
    cluster.wait_ready(victim).await?;
    wait_ok("no file under-replicated", HEAL_TIMEOUT, || async {
        Ok(under_replicated(&cluster.status(leader).await?) == Some(0))
    })
    .await
}

/// A node down past the grace period keeps its copies on disk. When it
/// comes back, the leader copies each file to it again, and the verified
/// copy replaces the stale one whether that is intact or damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_node_stale_copies_are_replaced() -> Result<()> {
    phase("upload two files to a 4-node cluster with R=3");
    let mut cluster = Cluster::start(cluster_with(4, REPAIR_ONLY)).await?;
    let dir = tempfile::tempdir()?;
    let (intact_id, intact) = upload_wav(&cluster, dir.path(), 2 * 1024 * 1024, 16).await?;
    let (flipped_id, flipped) = upload_wav(&cluster, dir.path(), 2 * 1024 * 1024, 17).await?;
    let intact_placed = wait_for_replicas(&cluster, &intact_id, 3).await?;
    let flipped_placed = wait_for_replicas(&cluster, &flipped_id, 3).await?;
    let leader = cluster.leader_index().await?;
    let victim = cluster
        .nodes
        .iter()
        .position(|n| {
            intact_placed.contains(&n.id)
                && flipped_placed.contains(&n.id)
                && n.id != cluster.nodes[leader].id
        })
        .context("no follower holds both files")?;
    let victim_id = cluster.nodes[victim].id.clone();

    phase(&format!(
        "SIGKILL {victim_id}; both files move to the other three nodes"
    ));
    cluster.nodes[victim].kill();
    for file_id in [&intact_id, &flipped_id] {
        wait_ok("replica set without the stopped node", HEAL_TIMEOUT, || {
            let file_id = file_id.clone();
            let victim_id = victim_id.clone();
            let cluster = &cluster;
            async move {
                let replicas = track_replicas(cluster, leader, &file_id).await?;
                Ok(replicas.len() == 3 && !replicas.contains(&victim_id))
            }
        })
        .await?;
    }

    phase("flip a bit in one stale copy, keep the other intact, restart the node");
    let intact_path = blob_path(&cluster.nodes[victim].data_dir, &intact_id);
    let flipped_path = blob_path(&cluster.nodes[victim].data_dir, &flipped_id);
    ensure!(
        std::fs::read(&intact_path)? == intact,
        "stale copy changed while its node was down"
    );
    Damage::FlipBit { offset: 1_200_000 }.apply(&flipped_path)?;
    cluster.nodes[victim].restart()?;
    cluster.wait_ready(victim).await?;

    phase("the node gets its place back with verified copies of both files");
    for (file_id, placed, original, path) in [
        (&intact_id, &intact_placed, &intact, &intact_path),
        (&flipped_id, &flipped_placed, &flipped, &flipped_path),
    ] {
        wait_healthy_on(&cluster, leader, file_id, placed)
            .await
            .with_context(|| {
                format!(
                    "{file_id} not restored; log of {victim_id}:\n{}",
                    cluster.nodes[victim].log_tail(30)
                )
            })?;
        ensure!(
            std::fs::read(path)? == *original,
            "copy of {file_id} on {victim_id} differs from the upload"
        );
        let (status, streamed) = cluster.download(victim, file_id).await?;
        ensure!(
            status == 200 && streamed == *original,
            "stream of {file_id} from {victim_id} differs"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_copy_is_fetched_back_before_ready() -> Result<()> {
    phase("upload to a 3-node cluster");
    let mut cluster = Cluster::start(fast_cluster(3)).await?;
    let dir = tempfile::tempdir()?;
    let (file_id, original) = upload_wav(&cluster, dir.path(), 2 * 1024 * 1024, 12).await?;
    wait_for_replicas(&cluster, &file_id, 3).await?;

    let victim = 2;
    phase(&format!(
        "stop node {}, delete its copy, start it",
        victim + 1
    ));
    cluster.nodes[victim].kill();
    let path = blob_path(&cluster.nodes[victim].data_dir, &file_id);
    std::fs::remove_file(&path)?;
    cluster.nodes[victim].restart()?;
    cluster.wait_ready(victim).await?;

    phase("the copy is back, byte-identical, as soon as the node is ready");
    let restored = std::fs::read(&path).with_context(|| {
        format!(
            "copy not fetched back before ready; node log:\n{}",
            cluster.nodes[victim].log_tail(30)
        )
    })?;
    ensure!(restored == original, "fetched copy differs");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_down_past_grace_is_replaced_then_restored() -> Result<()> {
    phase("upload to a 4-node cluster with R=3");
    let mut cluster = Cluster::start(fast_cluster(4)).await?;
    let dir = tempfile::tempdir()?;
    let (file_id, original) = upload_wav(&cluster, dir.path(), 2 * 1024 * 1024, 13).await?;
    let placed = wait_for_replicas(&cluster, &file_id, 3).await?;
    let spare = cluster
        .nodes
        .iter()
        .position(|n| !placed.contains(&n.id))
        .context("no spare node")?;
    let leader = cluster.leader_index().await?;
    let victim = follower_replica(&cluster, &placed, leader)?;

    phase(&format!(
        "SIGKILL node {}; after the grace period node {} gets a copy",
        victim + 1,
        spare + 1
    ));
    cluster.nodes[victim].kill();
    let mut stand_in: Vec<String> = placed
        .iter()
        .filter(|n| **n != cluster.nodes[victim].id)
        .cloned()
        .collect();
    stand_in.push(cluster.nodes[spare].id.clone());
    wait_ok("re-replicated to the spare", HEAL_TIMEOUT, || {
        let mut stand_in = stand_in.clone();
        let file_id = file_id.clone();
        let cluster = &cluster;
        async move {
            let mut replicas = track_replicas(cluster, leader, &file_id).await?;
            replicas.sort();
            stand_in.sort();
            Ok(replicas == stand_in)
        }
    })
    .await?;
    let spare_copy = blob_path(&cluster.nodes[spare].data_dir, &file_id);
    ensure!(
        std::fs::read(&spare_copy)? == original,
        "spare copy differs"
    );

    phase("restart the node: it gets its place back and the spare drops its copy");
    cluster.nodes[victim].restart()?;
    cluster.wait_ready(victim).await?;
    wait_healthy_on(&cluster, leader, &file_id, &placed).await?;
    wait_ok("spare copy dropped", HEAL_TIMEOUT, || {
        let spare_copy = spare_copy.clone();
        async move { Ok(!spare_copy.exists()) }
    })
    .await?;
    let (status, streamed) = cluster.download(victim, &file_id).await?;
    ensure!(
        status == 200 && streamed == original,
        "stream after restore differs"
    );
    Ok(())
}

/// Repair bandwidth for the progress test: an 8 MiB copy takes 4 s.
const SLOW_REPAIR: &str = r#"
repair_interval = "500ms"
repair_grace = "3s"
repair_bytes_per_sec = 2097152
scrub_pass_interval = "1h"
orphan_grace = "1h"
"#;

/// While a repair copy runs, the leader's `/cluster/status` shows how many
/// bytes its sender has handed over, from the sender's health-check replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_copy_reports_its_progress() -> Result<()> {
    phase("upload 8 MiB to a 4-node cluster whose repairs send 2 MiB/s");
    let mut cluster = Cluster::start(cluster_with(4, SLOW_REPAIR)).await?;
    let dir = tempfile::tempdir()?;
    let (file_id, _) = upload_wav(&cluster, dir.path(), 8 * 1024 * 1024, 17).await?;
    let placed = wait_for_replicas(&cluster, &file_id, 3).await?;
    let leader = cluster.leader_index().await?;
    let victim = follower_replica(&cluster, &placed, leader)?;

    phase("SIGKILL a replica; the leader's status shows the copy's bytes grow");
    cluster.nodes[victim].kill();
    let seen: RefCell<Vec<u64>> = RefCell::default();
    let total = Cell::new(0);
    wait_ok(
        "the copy finished after reporting progress",
        HEAL_TIMEOUT,
        || {
            let (cluster, file_id, seen, total) = (&cluster, &file_id, &seen, &total);
            async move {
                let status = cluster.status(leader).await?;
                let active = status["repair"]["active"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                match active.iter().find(|a| a["file_id"] == file_id.as_str()) {
                    Some(copy) => {
                        total.set(copy["bytes_total"].as_u64().context("bytes_total")?);
                        if let Some(done) = copy["bytes_done"].as_u64() {
                            seen.borrow_mut().push(done);
                        }
                        Ok(false)
                    }
                    None => Ok(!seen.borrow().is_empty()
                        && status["repair"]["files_repaired_total"].as_u64() >= Some(1)),
                }
            }
        },
    )
    .await?;
    let (seen, total) = (seen.into_inner(), total.get());
    phase(&format!("progress seen: {seen:?} of {total}"));
    ensure!(
        seen.windows(2).all(|pair| pair[0] <= pair[1]),
        "progress went backwards: {seen:?}"
    );
    ensure!(
        seen.iter().any(|&done| done > 0 && done < total),
        "no report between start and end: {seen:?} of {total}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_grant_fence_expire_and_release() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let locks = |index: usize| cluster.nodes[index].url("/cluster/locks");

    phase("alice takes a lock through node 1");
    let body = json!({"name": "nightly-backup", "owner": "alice", "ttl_ms": 60_000});
    let response = cluster.http.post(locks(0)).json(&body).send().await?;
    ensure!(response.status() == 200, "acquire {}", response.status());
    let granted: Value = response.json().await?;
    let token = granted["token"].as_u64().context("token")?;

    phase("bob is refused through node 2 with 409 lock_held");
    let body = json!({"name": "nightly-backup", "owner": "bob", "ttl_ms": 60_000});
    let response = cluster.http.post(locks(1)).json(&body).send().await?;
    ensure!(
        response.status() == 409,
        "second acquire {}",
        response.status()
    );
    let error: Value = response.json().await?;
    ensure!(error["error"]["code"] == "lock_held", "{error}");

    phase("every node lists the lock with the same token");
    for index in 0..3 {
        let url = locks(index);
        let http = cluster.http.clone();
        wait_ok("lock listed", Duration::from_secs(10), || {
            let (url, http) = (url.clone(), http.clone());
            async move {
                let list: Value = http.get(url).send().await?.json().await?;
                Ok(list["locks"][0]["token"].as_u64() == Some(token)
                    && list["locks"][0]["owner"] == "alice")
            }
        })
        .await?;
    }

    phase("a wrong token or owner cannot release; the right one can");
    for query in [
        format!("owner=alice&token={}", token + 1),
        format!("owner=bob&token={token}"),
    ] {
        let url = format!("{}/nightly-backup?{query}", locks(2));
        let response = cluster.http.delete(url).send().await?;
        ensure!(
            response.status() == 409,
            "bad release {}",
            response.status()
        );
    }
    let url = format!("{}/nightly-backup?owner=alice&token={token}", locks(2));
    let response = cluster.http.delete(url).send().await?;
    ensure!(response.status() == 204, "release {}", response.status());

    phase("a short lock expires by the log's clock and bob gets a newer token");
    let body = json!({"name": "nightly-backup", "owner": "alice", "ttl_ms": 300});
    let first: Value = cluster
        .http
        .post(locks(0))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let body = json!({"name": "nightly-backup", "owner": "bob", "ttl_ms": 60_000});
    let response = cluster.http.post(locks(1)).json(&body).send().await?;
    ensure!(
        response.status() == 200,
        "acquire after expiry {}",
        response.status()
    );
    let second: Value = response.json().await?;
    ensure!(
        second["token"].as_u64() > first["token"].as_u64(),
        "token did not grow: {first} then {second}"
    );

    phase("bad requests get 400 with a code");
    for body in [
        json!({"name": "", "owner": "a", "ttl_ms": 10}),
        json!({"name": "x", "owner": "a", "ttl_ms": 0}),
        json!({"name": "x"}),
    ] {
        let response = cluster.http.post(locks(0)).json(&body).send().await?;
        ensure!(response.status() == 400, "{body}: {}", response.status());
        let error: Value = response.json().await?;
        ensure!(error["error"]["code"].is_string(), "{error}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_member_is_refused_under_its_old_id() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let victim = 2;
    phase("stop node 3 and wipe its data directory");
    cluster.nodes[victim].kill();
    for entry in std::fs::read_dir(&cluster.nodes[victim].data_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "node.log" || name == "node.toml" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }

    phase("restarted under the same id, it exits with an error naming the fix");
    cluster.nodes[victim].restart()?;
    let node = &mut cluster.nodes[victim];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = node.exit_status() {
            break status;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "wiped node still running; log:\n{}",
            node.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(!status.success(), "wiped node exited with {status}");
    let log = node.log_tail(40);
    ensure!(
        log.contains("new --id"),
        "log does not name the fix:\n{log}"
    );

    phase("the other two nodes still accept writes");
    let dir = tempfile::tempdir()?;
    let (file_id, original) = upload_wav(&cluster, dir.path(), 256 * 1024, 14).await?;
    let cluster = &cluster;
    wait_ok("stream from node 2", Duration::from_secs(20), || {
        let (file_id, original) = (file_id.clone(), original.clone());
        async move {
            let (status, streamed) = cluster.download(1, &file_id).await?;
            Ok(status == 200 && streamed == original)
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioned_node_is_drained_then_removed() -> Result<()> {
    phase("upload three files to a 4-node cluster with R=3");
    let cluster = Cluster::start(fast_cluster(4)).await?;
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for seed in 20..23 {
        let (file_id, original) = upload_wav(&cluster, dir.path(), 512 * 1024, seed).await?;
        wait_for_replicas(&cluster, &file_id, 3).await?;
        files.push((file_id, original));
    }
    let leader = cluster.leader_index().await?;
    let victim = (leader + 1) % cluster.nodes.len();
    let victim_id = cluster.nodes[victim].id.clone();

    phase("an unknown id gets 404 member_not_found");
    let url = cluster.nodes[leader].url("/cluster/nodes/nobody/decommission");
    let response = cluster.http.post(url).send().await?;
    ensure!(
        response.status() == 404,
        "unknown member {}",
        response.status()
    );
    let error: Value = response.json().await?;
    ensure!(error["error"]["code"] == "member_not_found", "{error}");

    phase(&format!("decommission {victim_id} through another node"));
    let via = (victim + 1) % cluster.nodes.len();
    let url = cluster.nodes[via].url(&format!("/cluster/nodes/{victim_id}/decommission"));
    let response = cluster.http.post(url).send().await?;
    ensure!(
        response.status() == 202,
        "decommission {}",
        response.status()
    );

    phase("its copies move away and it leaves the membership");
    let cluster_ref = &cluster;
    wait_ok("node removed", HEAL_TIMEOUT, || {
        let victim_id = victim_id.clone();
        let cluster = cluster_ref;
        async move {
            let status = cluster.status(leader).await?;
            let members = status["members"].as_array().cloned().unwrap_or_default();
            Ok(members.len() == 3 && members.iter().all(|m| m["id"] != victim_id.as_str()))
        }
    })
    .await?;
    for (file_id, original) in &files {
        let replicas = track_replicas(&cluster, leader, file_id).await?;
        ensure!(
            replicas.len() == 3 && !replicas.contains(&victim_id),
            "{file_id} still placed on {replicas:?}"
        );
        let (status, streamed) = cluster.download(leader, file_id).await?;
        ensure!(
            status == 200 && &streamed == original,
            "stream of {file_id} differs"
        );
    }
    Ok(())
}
