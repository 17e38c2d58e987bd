//! Uploads whose receiving node is killed with SIGKILL inside the two
//! windows of the write path: after the replicas stored the bytes but
//! before the Raft commit, and after the commit but before the reply. The
//! node waits at a pause point (debug builds only, see `src/pause.rs`), so
//! the kill lands inside the window every time.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use dispotify::pause::{PAUSE_AT_VAR, UPLOAD_BEFORE_COMMIT, UPLOAD_BEFORE_REPLY};
use tokio::task::JoinHandle;

use super::healing::{blob_path, track_json, wait_healthy_on, wait_ok, FAST_HEALING};
use super::support::{phase, Cluster, ClusterOptions};
use super::write_wav;

/// Maximum wait for a node to reach a pause point once the upload started.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum wait for orphan copies to be deleted: the orphan grace of
/// [`FAST_HEALING`] plus the node's shortest pause between two
/// reconciliations (30 s), with room for a loaded machine.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(75);

/// Restarts node `index` holding at `point`, waits until it is ready, and
/// starts an upload of `path` through it in the background.
async fn upload_into_pause(
    cluster: &mut Cluster,
    index: usize,
    point: &str,
    path: &Path,
) -> Result<JoinHandle<Result<(u16, serde_json::Value)>>> {
    let node = &mut cluster.nodes[index];
    node.env = vec![(PAUSE_AT_VAR.to_string(), point.to_string())];
    node.restart()?;
    cluster.wait_ready(index).await?;

    let bytes = std::fs::read(path)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("file name")?
        .to_string();
    let url = cluster.nodes[index].url("/music/upload");
    let http = cluster.http.clone();
    let upload = tokio::spawn(async move {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name);
        let form = reqwest::multipart::Form::new().part("file", part);
        let response = http.post(url).multipart(form).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or_default()))
    });

    let marker = cluster.nodes[index]
        .data_dir
        .join(format!("paused-at-{point}"));
    wait_ok(
        &format!("node {} at {point}", index + 1),
        PAUSE_TIMEOUT,
        || {
            let marker = marker.clone();
            async move { Ok(marker.exists()) }
        },
    )
    .await?;
    Ok(upload)
}

/// Kills node `index` with SIGKILL, checks that its client saw no success,
/// and starts it again without pause points.
async fn kill_and_restart(
    cluster: &mut Cluster,
    index: usize,
    upload: JoinHandle<Result<(u16, serde_json::Value)>>,
) -> Result<()> {
    cluster.nodes[index].kill();
    // The connection normally drops with the process. A response that was
    // sent before the kill must not be a success.
    if let Ok((status, body)) = upload.await? {
        ensure!(
            !(200..300).contains(&status),
            "the killed node answered {status}: {body}"
        );
    }
    for point in [UPLOAD_BEFORE_COMMIT, UPLOAD_BEFORE_REPLY] {
        let _ = std::fs::remove_file(
            cluster.nodes[index]
                .data_dir
                .join(format!("paused-at-{point}")),
        );
    }
    cluster.nodes[index].env.clear();
    cluster.nodes[index].restart()?;
    cluster.wait_ready(index).await
}

async fn track_status(cluster: &Cluster, index: usize, file_id: &str) -> Result<u16> {
    let url = cluster.nodes[index].url(&format!("/music/tracks/{file_id}"));
    Ok(cluster.http.get(url).send().await?.status().as_u16())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_before_commit_collects_orphans() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        config_toml: Some(FAST_HEALING.to_string()),
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("before-commit.wav");
    write_wav(&path, 1024 * 1024, 71)?;
    let file_id = sha256_hex(&std::fs::read(&path)?);

    phase("node 1 stores an upload on a write quorum and is killed before the commit");
    let upload = upload_into_pause(&mut cluster, 0, UPLOAD_BEFORE_COMMIT, &path).await?;
    let stored_on: Vec<usize> = (0..3)
        .filter(|&i| blob_path(&cluster.nodes[i].data_dir, &file_id).exists())
        .collect();
    ensure!(
        stored_on.len() >= 2,
        "a write quorum should hold the bytes at the pause point, found {stored_on:?}"
    );
    kill_and_restart(&mut cluster, 0, upload).await?;

    phase("no node has a catalog entry for the upload");
    for index in 0..3 {
        let status = track_status(&cluster, index, &file_id).await?;
        ensure!(status == 404, "node {} answered {status}", index + 1);
    }

    phase("every copy is collected as an orphan within the bound");
    wait_ok("orphan copies deleted", ORPHAN_TIMEOUT, || {
        let paths: Vec<_> = cluster
            .nodes
            .iter()
            .map(|n| blob_path(&n.data_dir, &file_id))
            .collect();
        async move { Ok(paths.iter().all(|p| !p.exists())) }
    })
    .await?;

    phase("the client's retry stores the track with every copy");
    let (status, track) = cluster.upload(1, &path).await?;
    ensure!(status == 201, "retry answered {status}: {track}");
    ensure!(track["file_id"] == file_id.as_str(), "{track}");
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    wait_healthy_on(&cluster, 2, &file_id, &names).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_kill_before_commit_is_idempotent() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        config_toml: Some(FAST_HEALING.to_string()),
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("retried.wav");
    write_wav(&path, 1024 * 1024, 72)?;
    let original = std::fs::read(&path)?;
    let file_id = sha256_hex(&original);

    phase("node 1 is killed before the commit; the client retries through node 2 at once");
    let upload = upload_into_pause(&mut cluster, 0, UPLOAD_BEFORE_COMMIT, &path).await?;
    cluster.nodes[0].kill();
    let (status, track) = cluster.upload(1, &path).await?;
    ensure!(status == 201, "retry answered {status}: {track}");
    ensure!(track["file_id"] == file_id.as_str(), "{track}");
    let (again, _) = cluster.upload(2, &path).await?;
    ensure!(again == 200, "a second retry answered {again}");
    kill_and_restart(&mut cluster, 0, upload).await?;

    phase("the track ends with a verified copy on every node and streams intact");
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    wait_healthy_on(&cluster, 0, &file_id, &names).await?;
    for index in 0..3 {
        let (status, bytes) = cluster.download(index, &file_id).await?;
        ensure!(status == 200, "node {} streamed {status}", index + 1);
        ensure!(bytes == original, "node {} streamed other bytes", index + 1);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_commit_leaves_a_complete_track() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        config_toml: Some(FAST_HEALING.to_string()),
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("after-commit.wav");
    write_wav(&path, 1024 * 1024, 73)?;
    let original = std::fs::read(&path)?;
    let file_id = sha256_hex(&original);

    phase("node 1 commits an upload and is killed before it answers");
    let upload = upload_into_pause(&mut cluster, 0, UPLOAD_BEFORE_REPLY, &path).await?;
    cluster.nodes[0].kill();
    for index in 1..3 {
        let cluster = &cluster;
        let file_id = file_id.as_str();
        wait_ok(
            &format!("node {} lists the track", index + 1),
            Duration::from_secs(20),
            || async move { Ok(track_status(cluster, index, file_id).await? == 200) },
        )
        .await?;
    }
    kill_and_restart(&mut cluster, 0, upload).await?;

    phase("every copy is verified, and the client's retry gets the same track");
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    wait_healthy_on(&cluster, 1, &file_id, &names).await?;
    let (status, track) = cluster.upload(0, &path).await?;
    ensure!(status == 200, "retry answered {status}: {track}");
    let stored = track_json(&cluster, 2, &file_id).await?;
    ensure!(track["sha256"] == stored["sha256"], "{track} vs {stored}");
    let (status, bytes) = cluster.download(0, &file_id).await?;
    ensure!(
        status == 200 && bytes == original,
        "stream after the retry: {status}"
    );
    Ok(())
}
