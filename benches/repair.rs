//! Repair of a corrupt copy, end to end, with real node processes: how long
//! until scrub finds a flipped bit in a 100 MiB file, and how long until the
//! leader has re-created the copy, beside the time the same cluster takes
//! to upload that file to all three replicas in the same run.
//!
//! `cargo bench --bench repair`. Scrub runs at its default rate, repair at
//! its default bandwidth; only the pauses between scrub passes and repair
//! scans are shortened, so the figures show the work and not the waiting.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use support::{
    load_average, print_table, upload_file, wait_for_replicas, write_noise_wav, BenchCluster,
};

/// Size of the file repaired.
const FILE_BYTES: u64 = 100 * 1024 * 1024;

/// Runs of the whole scenario; each starts a fresh cluster.
const RUNS: usize = 3;

/// Longest a detection or a repair may take before the run fails.
const TIMEOUT: Duration = Duration::from_secs(300);

const SETTINGS: &str = r#"
repair_interval = "200ms"
scrub_pass_interval = "200ms"
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut rows = Vec::new();
    for run in 1..=RUNS {
        let (upload, detect, repair) = run_once(run as u64).await?;
        rows.push(vec![
            run.to_string(),
            format!("{:.2}", upload.as_secs_f64()),
            format!("{:.2}", detect.as_secs_f64()),
            format!("{:.2}", repair.as_secs_f64()),
            format!("{:.2}", repair.as_secs_f64() / upload.as_secs_f64()),
            format!(
                "{:.1}",
                repair.as_secs_f64() / (FILE_BYTES as f64 / (1u64 << 30) as f64)
            ),
            load_average(),
        ]);
    }
    println!(
        "\nrepair of one corrupt copy of a {} MiB file, 3 nodes, R=3",
        FILE_BYTES >> 20
    );
    print_table(
        &[
            "run",
            "upload s",
            "detect s",
            "detect+repair s",
            "repair/upload",
            "s per GiB",
            "load",
        ],
        &rows,
    );
    Ok(())
}

/// Uploads the file, flips one bit in a follower's copy, and returns the
/// upload time, the time until the copy is quarantined, and the time until
/// every copy is healthy again.
async fn run_once(seed: u64) -> Result<(Duration, Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("repair.toml");
    std::fs::write(&config, SETTINGS)?;
    let mut cluster =
        BenchCluster::start(3, 3, &[format!("--config={}", config.display())]).await?;
    cluster.wait_ready().await?;

    let path = dir.path().join("large.wav");
    write_noise_wav(&path, FILE_BYTES, seed)?;
    let uploaded_bytes = std::fs::metadata(&path)?.len();
    let started = Instant::now();
    let track = upload_file(&cluster, 0, &path).await?;
    let file_id = track["file_id"].as_str().context("file_id")?.to_string();
    let replicas = wait_for_replicas(&cluster, 0, &file_id, 3).await?;
    let upload = started.elapsed();

    let status = cluster.json(0, "/cluster/status", &[]).await?;
    let leader = status["leader_id"].as_str().context("leader")?.to_string();
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.id != leader && replicas.contains(&n.id))
        .context("no follower replica")?;
    let blob = cluster.nodes[victim]
        .data_dir
        .join("blobs")
        .join(&file_id[..2])
        .join(&file_id);
    flip_bit_in_middle(&blob)?;

    let started = Instant::now();
    let quarantine = cluster.nodes[victim].data_dir.join("quarantine");
    let mut detect = None;
    loop {
        if detect.is_none()
            && std::fs::read_dir(&quarantine)?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&file_id))
        {
            detect = Some(started.elapsed());
        }
        if let Some(detect) = detect {
            let track = cluster
                .json(0, &format!("/music/tracks/{file_id}"), &[])
                .await?;
            let health = track["replica_health"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let healthy = health.len() == 3 && health.iter().all(|h| h["state"] == "ok");
            if healthy && std::fs::metadata(&blob).is_ok_and(|m| m.len() == uploaded_bytes) {
                let repair = started.elapsed();
                cluster.remove().await?;
                return Ok((upload, detect, repair));
            }
        }
        if started.elapsed() > TIMEOUT {
            bail!("no repair within {TIMEOUT:?}:\n{}", cluster.log_tails());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Flips one bit in the middle byte of the file at `path` in place. Only
/// that byte is written, so a scrub reading the file meanwhile reads either
/// the intact copy or the flipped bit, never a half-rewritten file.
fn flip_bit_in_middle(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::FileExt;

    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let middle = file.metadata()?.len() / 2;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, middle)?;
    byte[0] ^= 0x01;
    file.write_all_at(&byte, middle)?;
    Ok(())
}
