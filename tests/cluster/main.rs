//! End-to-end tests of a cluster of real node processes over real QUIC with
//! real certificates, on loopback.

mod crash_windows;
mod failover;
mod healing;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use support::{corpus_manifest, count_files, phase, wait_until, Cluster, ClusterOptions, CORPUS};

fn corpus_file(name: &str) -> std::path::PathBuf {
    Path::new(CORPUS).join(name)
}

/// Checks the fields of an uploaded track against the manifest's expected
/// values for the fields both name.
fn check_tags(file: &str, track: &Value, expected: &[(String, String)]) -> Result<()> {
    let tags = &track["tags"];
    for (key, value) in expected {
        let actual = match key.as_str() {
            "title" => track["title"].as_str().map(str::to_string),
            "album" => tags["album"].as_str().map(str::to_string),
            "genre" => tags["genre"].as_str().map(str::to_string),
            "artist" => tags["artist"].as_str().map(str::to_string),
            _ => continue,
        };
        // Values with commentary in brackets, e.g. "x (present only in ID3v1)",
        // compare on the value; of a list ("a|b") the node keeps the first item.
        let value = value.split(" (").next().unwrap_or(value);
        let value = value.split('|').next().unwrap_or(value);
        let actual =
            actual.with_context(|| format!("{file}: {key} missing, expected {value:?}"))?;
        // The node keeps an ID3v2.3 list such as "A/B" whole, because "/" is also
        // part of names such as "AC/DC". Its first item must be the expected one.
        let first_of_list = actual
            .strip_prefix(value)
            .is_some_and(|rest| rest.starts_with('/'));
        ensure!(
            actual == value || first_of_list,
            "{file}: {key} is {actual:?}, expected {value:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_uploads_and_streams_from_every_node() -> Result<()> {
    phase("start a 3-node cluster");
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let manifest = corpus_manifest()?;
    ensure!(
        manifest.len() >= 20,
        "corpus manifest has only {} rows",
        manifest.len()
    );

    phase("upload every corpus file through node 1");
    let mut accepted = Vec::new();
    for (file, expected) in &manifest {
        let (status, body) = cluster.upload(0, &corpus_file(file)).await?;
        ensure!(status < 500, "{file}: server error {status}: {body}");
        if status == 201 || status == 200 {
            check_tags(file, &body, expected)?;
            let replicas = body["replicas"].as_array().map(|r| r.len()).unwrap_or(0);
            ensure!(
                replicas >= 2,
                "{file}: only {replicas} replicas acknowledged: {body}"
            );
            accepted.push((
                file.clone(),
                body["file_id"].as_str().unwrap_or_default().to_string(),
            ));
        } else {
            let code = body["error"]["code"].as_str().unwrap_or_default();
            ensure!(
                !code.is_empty(),
                "{file}: {status} without an error code: {body}"
            );
            ensure!(
                file.starts_with("empty"),
                "{file}: rejected with {status} {code}, expected it to be accepted"
            );
        }
    }
    ensure!(
        accepted.len() + 1 >= manifest.len(),
        "only {} of {} files accepted",
        accepted.len(),
        manifest.len()
    );

    phase("stream every accepted file back from each node, byte for byte");
    for (file, file_id) in &accepted {
        let original = std::fs::read(corpus_file(file))?;
        for index in 0..cluster.nodes.len() {
            let (status, bytes) = cluster.download(index, file_id).await?;
            ensure!(
                status == 200,
                "{file} from node {}: status {status}",
                index + 1
            );
            ensure!(
                bytes == original,
                "{file} from node {}: bytes differ",
                index + 1
            );
        }
    }

    phase("search is accent- and case-insensitive on every node");
    for index in 0..cluster.nodes.len() {
        let found = cluster.search(index, "MONAE").await?;
        let titles: Vec<&str> = found["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["tags"]["artist"].as_str())
            .collect();
        ensure!(
            titles.iter().any(|a| a.contains("Monáe")),
            "node {}: search for MONAE found {titles:?}",
            index + 1
        );
    }
    Ok(())
}

struct RangeCase {
    range: String,
    if_range: Option<String>,
    status: u16,
    content_range: Option<String>,
    body: Option<std::ops::Range<usize>>,
}

fn range_cases(len: usize, etag: &str) -> Vec<RangeCase> {
    let case = |range: &str,
                status,
                content_range: Option<String>,
                body: Option<std::ops::Range<usize>>| RangeCase {
        range: range.to_string(),
        if_range: None,
        status,
        content_range,
        body,
    };
    let last = len - 1;
    let mut cases = vec![
        case(
            "bytes=0-1",
            206,
            Some(format!("bytes 0-1/{len}")),
            Some(0..2),
        ),
        case(
            "bytes=0-",
            206,
            Some(format!("bytes 0-{last}/{len}")),
            Some(0..len),
        ),
        case(
            "bytes=10-",
            206,
            Some(format!("bytes 10-{last}/{len}")),
            Some(10..len),
        ),
        case(
            "bytes=-100",
            206,
            Some(format!("bytes {}-{last}/{len}", len - 100)),
            Some(len - 100..len),
        ),
        case(
            &format!("bytes=-{}", len + 10),
            206,
            Some(format!("bytes 0-{last}/{len}")),
            Some(0..len),
        ),
        case(
            "bytes=5-9",
            206,
            Some(format!("bytes 5-9/{len}")),
            Some(5..10),
        ),
        case(
            &format!("bytes=100-{}", len + 1000),
            206,
            Some(format!("bytes 100-{last}/{len}")),
            Some(100..len),
        ),
        case(
            &format!("bytes={last}-{last}"),
            206,
            Some(format!("bytes {last}-{last}/{len}")),
            Some(last..len),
        ),
        case(
            &format!("bytes={len}-"),
            416,
            Some(format!("bytes */{len}")),
            None,
        ),
        case("bytes=-0", 416, Some(format!("bytes */{len}")), None),
        case("bytes=abc", 200, None, Some(0..len)),
        case("items=0-1", 200, None, Some(0..len)),
        case("bytes=9-5", 200, None, Some(0..len)),
    ];
    cases.push(RangeCase {
        range: "bytes=0-1".into(),
        if_range: Some(etag.to_string()),
        status: 206,
        content_range: Some(format!("bytes 0-1/{len}")),
        body: Some(0..2),
    });
    cases.push(RangeCase {
        range: "bytes=0-1".into(),
        if_range: Some("\"not-the-etag\"".into()),
        status: 200,
        content_range: None,
        body: Some(0..len),
    });
    cases
}

/// The bootstrap node restarts with `--bootstrap` again, as `dispotify dev`
/// does on every start: it must skip the initialization quietly instead of
/// having openraft log a refused one as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_bootstrap_node_skips_initialization() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    phase("restart node 1, which started the cluster with --bootstrap");
    cluster.nodes[0].restart()?;
    cluster.wait_ready(0).await?;
    let log = std::fs::read_to_string(&cluster.nodes[0].log_path)?;
    ensure!(
        log.contains("Raft state already initialized"),
        "no sign of the skipped initialization in:\n{}",
        cluster.nodes[0].log_tail(40)
    );
    ensure!(
        !log.contains("Can not initialize"),
        "openraft refused an initialization:\n{}",
        cluster.nodes[0].log_tail(40)
    );
    Ok(())
}

/// A restarted node reports ready only once it has applied what the leader
/// committed while it was down, and it stays ready as those entries arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_ready_after_catch_up() -> Result<()> {
    use futures::stream::{self, StreamExt};

    const ENTRIES_MISSED: usize = 600;
    const CONCURRENT_REQUESTS: usize = 16;
    // The node's own tolerance, READY_MAX_APPLY_LAG in src/node.rs.
    const APPLY_LAG_ALLOWED: u64 = 16;
    const WATCH_AFTER_READY: Duration = Duration::from_secs(2);

    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let leader = cluster.leader_index().await?;
    let victim = (leader + 1) % cluster.nodes.len();

    phase(&format!(
        "stop node {} and commit {ENTRIES_MISSED} lock entries without it",
        victim + 1
    ));
    cluster.nodes[victim].kill();
    let cluster_ref = &cluster;
    let failures: Vec<String> = stream::iter(0..ENTRIES_MISSED)
        .map(|n| async move {
            let name = format!("catch-up-{n}");
            match cluster_ref
                .lock_request(leader, &name, "catch-up-test", Duration::from_secs(600))
                .await
            {
                Ok((200, _)) => None,
                Ok((status, body)) => Some(format!("{name}: {status} {body}")),
                Err(error) => Some(format!("{name}: {error:#}")),
            }
        })
        .buffer_unordered(CONCURRENT_REQUESTS)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    ensure!(failures.is_empty(), "lock requests failed: {failures:?}");
    let committed = cluster.status(leader).await?["last_applied_index"]
        .as_u64()
        .context("leader's last_applied_index")?;

    phase("restart it and watch its status from the first answer");
    cluster.nodes[victim].restart()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ready_at = loop {
        ensure!(
            std::time::Instant::now() < deadline,
            "node {} never became ready:\n{}",
            victim + 1,
            cluster.nodes[victim].log_tail(40)
        );
        if let Ok(status) = cluster.status(victim).await {
            if status["ready"] == true {
                let applied = status["last_applied_index"].as_u64().unwrap_or(0);
                ensure!(
                    applied + APPLY_LAG_ALLOWED >= committed,
                    "node {} reported ready at applied index {applied}, \
                     but the leader had committed {committed} before it restarted",
                    victim + 1
                );
                break std::time::Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    phase("once ready, it stays ready while nothing fails");
    while ready_at.elapsed() < WATCH_AFTER_READY {
        let status = cluster.status(victim).await?;
        ensure!(
            status["ready"] == true,
            "node {} went back to not ready: {status}",
            victim + 1
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ranges_from_non_replica() -> Result<()> {
    phase("start a 3-node cluster with R=2, so one node holds no copy of a file");
    let options = ClusterOptions {
        replication_factor: 2,
        ..Default::default()
    };
    let cluster = Cluster::start(options).await?;
    let path = corpus_file("mp3_id3v24_unsync_2covers.mp3");
    let original = std::fs::read(&path)?;
    let (status, track) = cluster.upload(0, &path).await?;
    ensure!(status == 201, "upload answered {status}: {track}");
    let file_id = track["file_id"].as_str().context("file_id")?.to_string();

    let remote_index = wait_for_full_replica_set(&cluster, &file_id, 2).await?;
    phase(&format!(
        "node {} holds no replica; range table against it",
        remote_index + 1
    ));
    let url = cluster.nodes[remote_index].url(&format!("/music/stream/{file_id}"));
    let etag = format!("\"{}\"", track["sha256"].as_str().context("sha256")?);
    for case in range_cases(original.len(), &etag) {
        let mut request = cluster.http.get(&url).header("range", &case.range);
        if let Some(if_range) = &case.if_range {
            request = request.header("if-range", if_range);
        }
        let response = request.send().await?;
        let label = format!("Range {:?} If-Range {:?}", case.range, case.if_range);
        ensure!(
            response.status().as_u16() == case.status,
            "{label}: status {}",
            response.status()
        );
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        ensure!(
            header("content-range") == case.content_range,
            "{label}: Content-Range {:?}",
            header("content-range")
        );
        ensure!(
            header("accept-ranges").as_deref() == Some("bytes"),
            "{label}: Accept-Ranges missing"
        );
        ensure!(
            header("etag").as_deref() == Some(etag.as_str()),
            "{label}: ETag {:?}",
            header("etag")
        );
        ensure!(
            header("content-type").as_deref() == Some("audio/mpeg"),
            "{label}: Content-Type {:?}",
            header("content-type")
        );
        let body = response.bytes().await?;
        match case.body {
            Some(range) => ensure!(
                body[..] == original[range.clone()],
                "{label}: body differs from bytes {range:?}"
            ),
            None => ensure!(body.is_empty(), "{label}: body should be empty"),
        }
    }

    phase("HEAD with a range returns headers only");
    let head = cluster
        .http
        .head(&url)
        .header("range", "bytes=0-1")
        .send()
        .await?;
    ensure!(
        head.status().as_u16() == 206,
        "HEAD status {}",
        head.status()
    );
    ensure!(
        head.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            == Some("2"),
        "HEAD Content-Length"
    );

    phase("metrics count the remote streams and the upload");
    let metrics = cluster.metrics_text(remote_index).await?;
    ensure!(
        metrics.contains("dispotify_streams_total{outcome=\"remote\"}"),
        "{metrics}"
    );
    let uploader_metrics = cluster.metrics_text(0).await?;
    ensure!(
        uploader_metrics.contains("dispotify_uploads_total{outcome=\"created\"} 1"),
        "{uploader_metrics}"
    );

    phase("ffprobe reads codec and duration from the node without a replica");
    let output = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name",
            "-of",
            "json",
            &url,
        ])
        .output()
        .context("run ffprobe (Debian package ffmpeg)")?;
    ensure!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let probed: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(
        probed["streams"][0]["codec_name"] == "mp3",
        "ffprobe codec: {probed}"
    );
    let duration: f64 = probed["format"]["duration"]
        .as_str()
        .context("duration")?
        .parse()?;
    ensure!((duration - 0.78).abs() < 0.1, "ffprobe duration {duration}");
    Ok(())
}

/// Waits until the track lists `count` replicas and returns the index of a
/// node outside its replica set.
async fn wait_for_full_replica_set(
    cluster: &Cluster,
    file_id: &str,
    count: usize,
) -> Result<usize> {
    let replicas = wait_for_replicas(cluster, file_id, count).await?;
    cluster
        .nodes
        .iter()
        .position(|n| !replicas.contains(&n.id))
        .context("every node is a replica")
}

/// Waits until every node lists the same `count` replicas for the track,
/// and returns them.
async fn wait_for_replicas(cluster: &Cluster, file_id: &str, count: usize) -> Result<Vec<String>> {
    // Every node must have applied the full replica set, not only the
    // uploader: a node that lags would answer 404 for the track.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let replicas = loop {
        let mut seen = Vec::new();
        for index in 0..cluster.nodes.len() {
            seen.push(
                track_replicas(cluster, index, file_id)
                    .await
                    .unwrap_or_default(),
            );
        }
        if seen.iter().all(|replicas| replicas.len() == count)
            && seen.windows(2).all(|w| w[0] == w[1])
        {
            break seen.swap_remove(0);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "replica sets per node still {seen:?} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_reject_bad_input_and_leave_nothing_behind() -> Result<()> {
    let limit: u64 = 200_000;
    let options = ClusterOptions {
        max_upload_bytes: Some(limit),
        ..Default::default()
    };
    let cluster = Cluster::start(options).await?;

    phase("duplicate upload returns the existing track with 200");
    let path = corpus_file("flac_vorbis_full.flac");
    let (first, track) = cluster.upload(0, &path).await?;
    ensure!(first == 201, "first upload {first}: {track}");
    let (second, again) = cluster.upload(1, &path).await?;
    ensure!(second == 200, "second upload {second}: {again}");
    ensure!(
        again["file_id"] == track["file_id"],
        "duplicate got another file id"
    );

    let blob_counts = |cluster: &Cluster| -> Vec<usize> {
        cluster
            .nodes
            .iter()
            .map(|n| count_files(&n.data_dir.join("blobs")))
            .collect()
    };
    let before = blob_counts(&cluster);

    phase("an upload over the limit gets 413 before and while reading");
    // The server responds before reading the body and closes the connection,
    // so these requests use connections of their own.
    let one_shot = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let big = vec![0x55u8; limit as usize + 100_000];
    let part = reqwest::multipart::Part::bytes(big.clone()).file_name("big.mp3");
    let form = reqwest::multipart::Form::new().part("file", part);
    let response = one_shot
        .post(cluster.nodes[0].url("/music/upload"))
        .multipart(form)
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 413,
        "declared oversize upload got {}",
        response.status()
    );
    let body: Value = response.json().await?;
    ensure!(body["error"]["code"] == "payload_too_large", "{body}");
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    ));
    let part = reqwest::multipart::Part::stream(chunked).file_name("big.mp3");
    let form = reqwest::multipart::Form::new().part("file", part);
    let response = one_shot
        .post(cluster.nodes[0].url("/music/upload"))
        .multipart(form)
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 413,
        "streamed oversize upload got {}",
        response.status()
    );

    phase("non-audio gets 415, empty gets 400, a request without a file part gets 400");
    let (status, body) = cluster
        .upload_bytes(
            0,
            "notes.mp3",
            b"these are not audio bytes, just text".repeat(100),
        )
        .await?;
    ensure!(status == 415, "text upload got {status}: {body}");
    ensure!(body["error"]["code"] == "unsupported_media_type", "{body}");
    let (status, body) = cluster.upload(0, &corpus_file("empty_0_bytes.mp3")).await?;
    ensure!(
        status == 400 && body["error"]["code"] == "empty_file",
        "empty upload got {status}: {body}"
    );
    let form = reqwest::multipart::Form::new().text("other", "x");
    let response = cluster
        .http
        .post(cluster.nodes[0].url("/music/upload"))
        .multipart(form)
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 400,
        "missing part got {}",
        response.status()
    );

    phase("rejected uploads left no file behind");
    ensure!(
        blob_counts(&cluster) == before,
        "blob files changed: {before:?} -> {:?}",
        blob_counts(&cluster)
    );

    phase("an overlong search query gets 400 with the parameter named");
    let long_query = "word ".repeat(100);
    let response = cluster
        .http
        .get(cluster.nodes[0].url("/music/search"))
        .query(&[("q", long_query.as_str())])
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 400,
        "long query got {}",
        response.status()
    );
    let body: Value = response.json().await?;
    ensure!(body["error"]["code"] == "invalid_query", "{body}");

    phase("an unknown API path gets a JSON 404, not the web page");
    let response = cluster
        .http
        .get(cluster.nodes[0].url("/music/nope"))
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 404,
        "unknown API path got {}",
        response.status()
    );
    let body: Value = response.json().await?;
    ensure!(body["error"]["code"] == "route_not_found", "{body}");

    phase("unknown and malformed ids get JSON errors");
    let response = cluster
        .http
        .get(cluster.nodes[0].url("/music/tracks/not-an-id"))
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 400,
        "malformed id got {}",
        response.status()
    );
    let missing = "0".repeat(64);
    let response = cluster
        .http
        .get(cluster.nodes[0].url(&format!("/music/stream/{missing}")))
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 404,
        "unknown id got {}",
        response.status()
    );
    let body: Value = response.json().await?;
    ensure!(body["error"]["code"] == "track_not_found", "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_is_survived_and_catches_up() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let seed = corpus_file("ogg_vorbis_full.ogg");
    let (status, before) = cluster.upload(0, &seed).await?;
    ensure!(status == 201, "upload {status}: {before}");

    let victim = cluster.leader_index().await?;
    phase(&format!("SIGKILL the leader, node {}", victim + 1));
    cluster.nodes[victim].kill();
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != victim).collect();

    phase("uploads, searches and streams keep working through the other two");
    let during = corpus_file("opus_full.opus");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let uploaded = loop {
        match cluster.upload(others[0], &during).await {
            Ok((201, body)) | Ok((200, body)) => break Some(body),
            _ if std::time::Instant::now() > deadline => break None,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let during_track = uploaded.context("upload body")?;
    let during_id = during_track["file_id"].as_str().context("file_id")?;
    for &index in &others {
        let (status, bytes) = cluster.download(index, during_id).await?;
        ensure!(
            status == 200 && bytes == std::fs::read(&during)?,
            "stream from node {} after kill",
            index + 1
        );
        let found = cluster.search(index, "the artist").await?;
        ensure!(
            found["total"].as_u64().unwrap_or(0) >= 1,
            "search on node {}: {found}",
            index + 1
        );
    }

    phase("restart the killed node; it catches up and serves again");
    cluster.nodes[victim].restart()?;
    cluster.wait_ready(victim).await?;
    let track_url = cluster.nodes[victim].url(&format!("/music/tracks/{during_id}"));
    wait_until(
        "restarted node has the new track",
        Duration::from_secs(30),
        || {
            let request = cluster.http.get(&track_url).send();
            async move {
                request
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        },
    )
    .await?;
    let (status, bytes) = cluster.download(victim, during_id).await?;
    ensure!(
        status == 200 && bytes == std::fs::read(&during)?,
        "stream from restarted node"
    );
    Ok(())
}

/// Creates one PostgreSQL database per node on the test server.
async fn postgres_databases(admin_url: &str, count: usize) -> Result<Vec<String>> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(admin_url).await?;
    let base = admin_url
        .rsplit_once('/')
        .map(|(base, _)| base)
        .context("database URL without a path")?;
    let mut urls = Vec::new();
    for index in 0..count {
        let name = format!("dispotify_cluster_{}_{index}", std::process::id());
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut connection)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await?;
        urls.push(format!("{base}/{name}"));
    }
    Ok(urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_on_postgres_uploads_searches_and_streams() -> Result<()> {
    let Ok(admin_url) = std::env::var("DISPOTIFY_TEST_POSTGRES_URL") else {
        ensure!(
            std::env::var("DISPOTIFY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "DISPOTIFY_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipped: DISPOTIFY_TEST_POSTGRES_URL is not set");
        return Ok(());
    };
    let database_urls = postgres_databases(&admin_url, 3).await?;
    let cluster = Cluster::start(ClusterOptions {
        database_urls,
        ..Default::default()
    })
    .await?;
    let mut ids = HashMap::new();
    for file in [
        "flac_vorbis_full.flac",
        "mp3_id3v23_latin1_nonascii.mp3",
        "m4a_two_covr_moov_at_end.m4a",
    ] {
        let (status, body) = cluster.upload(1, &corpus_file(file)).await?;
        ensure!(status == 201, "{file}: {status} {body}");
        ids.insert(
            file,
            body["file_id"].as_str().context("file_id")?.to_string(),
        );
    }
    for index in 0..3 {
        let found = cluster.search(index, "monae").await?;
        ensure!(found["total"] == 1, "node {} search: {found}", index + 1);
        let (status, bytes) = cluster
            .download(index, &ids["m4a_two_covr_moov_at_end.m4a"])
            .await?;
        ensure!(
            status == 200 && bytes == std::fs::read(corpus_file("m4a_two_covr_moov_at_end.m4a"))?,
            "node {} stream",
            index + 1
        );
    }
    let cover = cluster
        .http
        .get(cluster.nodes[2].url(&format!(
            "/music/tracks/{}/cover",
            ids["m4a_two_covr_moov_at_end.m4a"]
        )))
        .send()
        .await?;
    ensure!(cover.status() == 200, "cover status {}", cover.status());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_installs_snapshot() -> Result<()> {
    phase("start a cluster that snapshots every 5 entries and keeps no log after it");
    let config_toml = "raft_snapshot_every_entries = 5\nraft_log_entries_kept_after_snapshot = 0\n";
    let options = ClusterOptions {
        config_toml: Some(config_toml.to_string()),
        ..Default::default()
    };
    let mut cluster = Cluster::start(options).await?;
    let leader = cluster.leader_index().await?;
    let victim = (leader + 1) % cluster.nodes.len();

    phase(&format!(
        "stop node {} and upload while it is down",
        victim + 1
    ));
    cluster.nodes[victim].kill();
    let files = [
        "flac_vorbis_full.flac",
        "ogg_vorbis_full.ogg",
        "opus_full.opus",
        "wavpack_full.wv",
        "ape_full.ape",
        "aiff_id3_full.aiff",
        "m4a_aac_full.m4a",
        "mp3_id3v1_only.mp3",
    ];
    let mut last_id = String::new();
    for file in files {
        let (status, body) = cluster.upload(leader, &corpus_file(file)).await?;
        ensure!(status == 201, "{file}: {status} {body}");
        last_id = body["file_id"].as_str().context("file_id")?.to_string();
    }

    phase("restart it: the log it missed is gone, so it must install a snapshot");
    cluster.nodes[victim].restart()?;
    cluster.wait_ready(victim).await?;
    let list_url = cluster.nodes[victim].url("/music/tracks");
    wait_until(
        "restarted node lists every track",
        Duration::from_secs(30),
        || {
            let request = cluster.http.get(&list_url).send();
            async move {
                match request.await {
                    Ok(response) => response
                        .json::<Value>()
                        .await
                        .map(|page| page["total"] == files.len())
                        .unwrap_or(false),
                    Err(_) => false,
                }
            }
        },
    )
    .await?;
    let log = std::fs::read_to_string(&cluster.nodes[victim].log_path)?;
    ensure!(
        log.contains("installed snapshot"),
        "node log shows no snapshot install"
    );
    let (status, bytes) = cluster.download(victim, &last_id).await?;
    ensure!(status == 200, "stream after snapshot: {status}");
    ensure!(
        bytes == std::fs::read(corpus_file("mp3_id3v1_only.mp3"))?,
        "stream bytes differ"
    );
    Ok(())
}

/// Writes a WAV file of `data_bytes` deterministic pseudo-random 16-bit
/// stereo samples, without holding it in memory.
fn write_wav(path: &Path, data_bytes: u32, seed: u64) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(b"RIFF")?;
    out.write_all(&(36 + data_bytes).to_le_bytes())?;
    out.write_all(b"WAVEfmt ")?;
    out.write_all(&16u32.to_le_bytes())?;
    out.write_all(&1u16.to_le_bytes())?; // PCM
    out.write_all(&2u16.to_le_bytes())?; // channels
    out.write_all(&44_100u32.to_le_bytes())?;
    out.write_all(&(44_100u32 * 4).to_le_bytes())?; // byte rate
    out.write_all(&4u16.to_le_bytes())?; // block align
    out.write_all(&16u16.to_le_bytes())?; // bits per sample
    out.write_all(b"data")?;
    out.write_all(&data_bytes.to_le_bytes())?;
    let mut state = seed;
    let mut block = vec![0u8; 64 * 1024];
    let mut left = data_bytes as usize;
    while left > 0 {
        for byte in block.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *byte = (state >> 56) as u8;
        }
        let take = left.min(block.len());
        out.write_all(&block[..take])?;
        left -= take;
    }
    out.flush()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_fails_over_mid_song() -> Result<()> {
    phase("upload a 24 MiB file to a 3-node cluster with R=2");
    let options = ClusterOptions {
        replication_factor: 2,
        ..Default::default()
    };
    let mut cluster = Cluster::start(options).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("long.wav");
    write_wav(&path, 24 * 1024 * 1024, 7)?;
    let (status, track) = cluster.upload(0, &path).await?;
    ensure!(status == 201, "upload {status}: {track}");
    let file_id = track["file_id"].as_str().context("file_id")?.to_string();
    let reader = wait_for_full_replica_set(&cluster, &file_id, 2).await?;
    let replicas: Vec<String> = track_replicas(&cluster, reader, &file_id).await?;

    phase(&format!(
        "node {} streams it from a replica; read the first MiB",
        reader + 1
    ));
    let url = cluster.nodes[reader].url(&format!("/music/stream/{file_id}"));
    let mut response = cluster.http.get(&url).send().await?;
    ensure!(
        response.status() == 200,
        "stream status {}",
        response.status()
    );
    let mut received = Vec::new();
    while received.len() < 1024 * 1024 {
        let chunk = response.chunk().await?.context("stream ended early")?;
        received.extend_from_slice(&chunk);
    }

    // The reader tries replicas that passed their last health check in the
    // order the track lists them, so the first listed replica is serving.
    let serving = cluster
        .nodes
        .iter()
        .position(|n| n.id == replicas[0])
        .context("replica node")?;
    phase(&format!(
        "SIGKILL node {} mid-stream; the rest comes from the other replica",
        serving + 1
    ));
    cluster.nodes[serving].kill();
    while let Some(chunk) = response.chunk().await? {
        received.extend_from_slice(&chunk);
    }
    let original = std::fs::read(&path)?;
    ensure!(
        received.len() == original.len(),
        "received {} of {} bytes",
        received.len(),
        original.len()
    );
    ensure!(
        received == original,
        "streamed bytes differ from the upload"
    );
    let log = std::fs::read_to_string(&cluster.nodes[reader].log_path)?;
    ensure!(log.contains("failing over"), "reader log shows no failover");
    Ok(())
}

async fn track_replicas(cluster: &Cluster, index: usize, file_id: &str) -> Result<Vec<String>> {
    let url = cluster.nodes[index].url(&format!("/music/tracks/{file_id}"));
    let track: Value = cluster.http.get(url).send().await?.json().await?;
    Ok(track["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect())
}
