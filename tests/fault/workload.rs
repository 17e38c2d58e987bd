//! Client traffic during a fault run: uploads of unique WAV files and
//! streams of random byte ranges through random nodes. Each operation is
//! recorded in a history with its node, start and end time and result. For
//! reads it also has the SHA-256 of the bytes served and of those expected.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Size of the WAV header written before the samples.
const WAV_HEADER_BYTES: u64 = 44;

/// Time a client waits for one upload. It is longer than the node's own
/// write timeout plus a blob push, so the node responds before the client
/// gives up.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a client waits for one read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the lock the failover probes take.
const PROBE_LOCK: &str = "fault-suite-failover-probe";

/// Time to connect to a node's HTTP port. A killed node refuses at once; a
/// paused one accepts into its backlog, so the request timeout covers that.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One uploaded file, described by the key of its sample generator, so any
/// byte range of it can be computed again without keeping it in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FileSpec {
    pub key: u64,
    pub data_bytes: u32,
}

impl FileSpec {
    pub fn size_bytes(&self) -> u64 {
        WAV_HEADER_BYTES + u64::from(self.data_bytes)
    }

    /// Bytes `start..end` of the file.
    pub fn bytes(&self, start: u64, end: u64) -> Vec<u8> {
        let header = self.header();
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut offset = start;
        while offset < end.min(WAV_HEADER_BYTES) {
            out.push(header[offset as usize]);
            offset += 1;
        }
        while offset < end {
            let data_offset = offset - WAV_HEADER_BYTES;
            let word = sample_word(self.key, data_offset / 8);
            let within = (data_offset % 8) as usize;
            let take = (8 - within).min((end - offset) as usize);
            out.extend_from_slice(&word.to_le_bytes()[within..within + take]);
            offset += take as u64;
        }
        out
    }

    pub fn content(&self) -> Vec<u8> {
        self.bytes(0, self.size_bytes())
    }

    /// Builds a 16-bit stereo PCM header at 44.1 kHz for `data_bytes` of
    /// samples.
    fn header(&self) -> [u8; WAV_HEADER_BYTES as usize] {
        let mut header = [0u8; WAV_HEADER_BYTES as usize];
        let fields: [&[u8]; 13] = [
            b"RIFF",
            &(36 + self.data_bytes).to_le_bytes(),
            b"WAVEfmt ",
            &16u32.to_le_bytes(),
            &1u16.to_le_bytes(),
            &2u16.to_le_bytes(),
            &44_100u32.to_le_bytes(),
            &(44_100u32 * 4).to_le_bytes(),
            &4u16.to_le_bytes(),
            &16u16.to_le_bytes(),
            b"data",
            &self.data_bytes.to_le_bytes(),
            &[],
        ];
        let mut at = 0;
        for field in fields {
            header[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        header
    }
}

/// The 8 sample bytes at word `index` of the file with generator `key`
/// (SplitMix64 of both), so any range can be computed on its own.
fn sample_word(key: u64, index: u64) -> u64 {
    let mut z = key ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Upload,
    Read,
    /// A lock acquisition sent to measure when a new leader accepts
    /// writes: a Raft write without a blob to replicate.
    FailoverProbe,
    /// An upload sent after healing to measure recovery.
    RecoveryWrite,
    /// An upload sent to a node on the minority side of a partition.
    MinorityWrite,
    /// A lock acquisition sent to a node on the minority side of a
    /// partition.
    MinorityLock,
    /// The upload that is in flight when every node is killed.
    UploadCutByKill,
    /// A read of a file whose replica on the node was corrupted.
    ReadCorrupted,
    FinalWrite,
    FinalRead,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Status {
        status: u16,
        error_code: Option<String>,
    },
    Transport {
        detail: String,
    },
    Timeout,
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn error_code(&self) -> Option<&str> {
        match self {
            Outcome::Status { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }

    pub fn acknowledged_upload(&self) -> bool {
        matches!(self.status(), Some(200 | 201))
    }

    /// Returns whether a lock probe was committed: granted (200) or found
    /// held by an earlier probe (409 lock_held).
    pub fn committed_lock_probe(&self) -> bool {
        self.status() == Some(200)
            || (self.status() == Some(409) && self.error_code() == Some("lock_held"))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status {
                status,
                error_code: Some(code),
            } => write!(f, "{status} {code}"),
            Outcome::Status { status, .. } => write!(f, "{status}"),
            Outcome::Transport { detail } => write!(f, "transport error: {detail}"),
            Outcome::Timeout => write!(f, "timed out"),
        }
    }
}

/// One entry of the history.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub kind: OpKind,
    pub node: usize,
    /// Seconds since the run started.
    pub start_secs: f64,
    pub end_secs: f64,
    pub outcome: Outcome,
    /// The file uploaded or read; `None` for a lock probe.
    pub file: Option<FileSpec>,
    /// Byte range requested by a read, end exclusive.
    pub range: Option<(u64, u64)>,
    pub sha256_served: Option<String>,
    pub sha256_expected: Option<String>,
    /// For uploads: the file id the node returned differs from the
    /// SHA-256 of the bytes sent.
    pub file_id_mismatch: bool,
    /// For reads: a 206 whose Content-Range is not the requested range.
    pub content_range_mismatch: bool,
    /// Index of the fault whose window contains the start, if any.
    pub fault: Option<usize>,
    /// Whether the node was expected to serve at the start: running, not
    /// paused and not on the minority side of a partition.
    pub node_expected_to_serve: bool,
}

impl Op {
    pub fn wrong_bytes(&self) -> bool {
        matches!(
            (&self.sha256_served, &self.sha256_expected),
            (Some(served), Some(expected)) if served != expected
        )
    }
}

/// A file whose upload a node acknowledged.
#[derive(Clone, Debug)]
pub struct Acked {
    pub file: FileSpec,
    pub file_id: String,
}

/// State shared by the clients and the fault injector.
pub struct Workload {
    pub started: Instant,
    pub seed: u64,
    http: reqwest::Client,
    node_urls: Vec<String>,
    serving: Vec<AtomicBool>,
    /// Index of the current fault plus one, or 0 between faults.
    fault: AtomicUsize,
    next_key: AtomicU64,
    acked: Mutex<Vec<Acked>>,
    history: Mutex<Vec<Op>>,
    pub stop: CancellationToken,
}

impl Workload {
    pub fn new(seed: u64, node_urls: Vec<String>) -> Result<Arc<Workload>> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Arc::new(Workload {
            started: Instant::now(),
            seed,
            http,
            serving: node_urls.iter().map(|_| AtomicBool::new(true)).collect(),
            node_urls,
            fault: AtomicUsize::new(0),
            next_key: AtomicU64::new(0),
            acked: Mutex::new(Vec::new()),
            history: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
        }))
    }

    pub fn nodes(&self) -> usize {
        self.node_urls.len()
    }

    pub fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn set_serving(&self, node: usize, serving: bool) {
        self.serving[node].store(serving, Ordering::SeqCst);
    }

    pub fn is_serving(&self, node: usize) -> bool {
        self.serving[node].load(Ordering::SeqCst)
    }

    pub fn set_fault(&self, fault: Option<usize>) {
        self.fault
            .store(fault.map_or(0, |f| f + 1), Ordering::SeqCst);
    }

    fn current_fault(&self) -> Option<usize> {
        self.fault.load(Ordering::SeqCst).checked_sub(1)
    }

    /// Creates a file whose sample data no other file of this run has.
    pub fn new_file(&self, data_bytes: u32) -> FileSpec {
        let counter = self.next_key.fetch_add(1, Ordering::SeqCst);
        FileSpec {
            key: sample_word(self.seed, counter) ^ counter,
            data_bytes,
        }
    }

    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn random_acked(&self, rng: &mut StdRng) -> Option<Acked> {
        let acked = self.acked.lock().ok()?;
        if acked.is_empty() {
            return None;
        }
        Some(acked[rng.gen_range(0..acked.len())].clone())
    }

    pub fn history(&self) -> Vec<Op> {
        self.history.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn record(&self, op: Op) {
        if let Ok(mut history) = self.history.lock() {
            history.push(op);
        }
    }

    fn url(&self, node: usize, path: &str) -> String {
        format!("{}{}", self.node_urls[node], path)
    }

    /// Uploads `file` through `node`, records the operation and, when the
    /// node acknowledges it, the file.
    pub async fn upload(&self, kind: OpKind, node: usize, file: FileSpec) -> Op {
        let content = file.content();
        let sha256 = sha256_hex(&content);
        let fault = self.current_fault();
        let node_expected_to_serve = self.is_serving(node);
        let start_secs = self.secs();
        let part = reqwest::multipart::Part::bytes(content)
            .file_name(format!("fault-{:016x}.wav", file.key));
        let form = reqwest::multipart::Form::new().part("file", part);
        let request = self
            .http
            .post(self.url(node, "/music/upload"))
            .multipart(form)
            .send();
        let (outcome, body) = match tokio::time::timeout(UPLOAD_TIMEOUT, async {
            let response = request.await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            Ok::<_, reqwest::Error>((status, body))
        })
        .await
        {
            Err(_) => (Outcome::Timeout, Value::Null),
            Ok(Err(error)) => (
                Outcome::Transport {
                    detail: error_chain(&error),
                },
                Value::Null,
            ),
            Ok(Ok((status, body))) => (
                Outcome::Status {
                    status,
                    error_code: body["error"]["code"].as_str().map(str::to_string),
                },
                body,
            ),
        };
        let end_secs = self.secs();
        let mut file_id_mismatch = false;
        if outcome.acknowledged_upload() {
            let returned = body["file_id"].as_str().unwrap_or_default();
            file_id_mismatch = returned != sha256;
            if let Ok(mut acked) = self.acked.lock() {
                acked.push(Acked {
                    file,
                    file_id: sha256.clone(),
                });
            }
        }
        let op = Op {
            kind,
            node,
            start_secs,
            end_secs,
            outcome,
            file: Some(file),
            range: None,
            sha256_served: None,
            sha256_expected: Some(sha256),
            file_id_mismatch,
            content_range_mismatch: false,
            fault,
            node_expected_to_serve,
        };
        self.record(op.clone());
        op
    }

    /// Streams bytes `range` (end exclusive) of an acknowledged file from
    /// `node`, or the whole file without a Range header when `range` is
    /// `None`, and records whether the bytes match the upload.
    pub async fn read(
        &self,
        kind: OpKind,
        node: usize,
        acked: &Acked,
        range: Option<(u64, u64)>,
    ) -> Op {
        let fault = self.current_fault();
        let node_expected_to_serve = self.is_serving(node);
        let start_secs = self.secs();
        let mut request = self
            .http
            .get(self.url(node, &format!("/music/stream/{}", acked.file_id)));
        if let Some((start, end)) = range {
            request = request.header("range", format!("bytes={start}-{}", end - 1));
        }
        let fetched = tokio::time::timeout(READ_TIMEOUT, async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let content_range = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, content_range, body))
        })
        .await;
        let end_secs = self.secs();
        let mut served = None;
        let mut expected = None;
        let mut content_range_mismatch = false;
        let outcome = match fetched {
            Err(_) => Outcome::Timeout,
            Ok(Err(error)) => Outcome::Transport {
                detail: error_chain(&error),
            },
            Ok(Ok((status, content_range, body))) => {
                let size = acked.file.size_bytes();
                let slice = match (status, range) {
                    (200, _) => Some((0, size)),
                    (206, Some(range)) => Some(range),
                    _ => None,
                };
                if let Some((start, end)) = slice {
                    served = Some(sha256_hex(&body));
                    expected = Some(sha256_hex(&acked.file.bytes(start, end)));
                }
                let error_code = if status >= 400 {
                    serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                } else {
                    None
                };
                // A 206 must describe exactly the requested range.
                if let (206, Some((start, end))) = (status, range) {
                    let expected = format!("bytes {start}-{}/{size}", end - 1);
                    content_range_mismatch = content_range.as_deref() != Some(expected.as_str());
                }
                Outcome::Status { status, error_code }
            }
        };
        let op = Op {
            kind,
            node,
            start_secs,
            end_secs,
            outcome,
            file: Some(acked.file),
            range,
            sha256_served: served,
            sha256_expected: expected,
            file_id_mismatch: false,
            content_range_mismatch,
            fault,
            node_expected_to_serve,
        };
        self.record(op.clone());
        op
    }

    /// Takes the probe lock through `node` for one millisecond under a new
    /// owner. 200 (granted) and 409 (still held) both mean a leader
    /// committed the request. `kind` is the reason it is sent.
    pub async fn lock_probe(&self, kind: OpKind, node: usize) -> Op {
        let owner = self.next_key.fetch_add(1, Ordering::SeqCst);
        let fault = self.current_fault();
        let node_expected_to_serve = self.is_serving(node);
        let start_secs = self.secs();
        let body = serde_json::json!({
            "name": PROBE_LOCK,
            "owner": format!("fault-probe-{owner}"),
            "ttl_ms": 1,
        });
        let request = self
            .http
            .post(self.url(node, "/cluster/locks"))
            .json(&body)
            .send();
        let outcome = match tokio::time::timeout(UPLOAD_TIMEOUT, async {
            let response = request.await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            Ok::<_, reqwest::Error>((status, body))
        })
        .await
        {
            Err(_) => Outcome::Timeout,
            Ok(Err(error)) => Outcome::Transport {
                detail: error_chain(&error),
            },
            Ok(Ok((status, body))) => Outcome::Status {
                status,
                error_code: body["error"]["code"].as_str().map(str::to_string),
            },
        };
        let op = Op {
            kind,
            node,
            start_secs,
            end_secs: self.secs(),
            outcome,
            file: None,
            range: None,
            sha256_served: None,
            sha256_expected: None,
            file_id_mismatch: false,
            content_range_mismatch: false,
            fault,
            node_expected_to_serve,
        };
        self.record(op.clone());
        op
    }

    /// Uploads files through random nodes until stopped.
    pub async fn run_uploader(self: Arc<Self>, client: u64) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (0x5550_0000 + client));
        while !self.stop.is_cancelled() {
            let node = rng.gen_range(0..self.nodes());
            // Mostly songs of a few seconds, some of several chunks.
            let data_bytes = if rng.gen_bool(0.8) {
                rng.gen_range(8 * 1024..256 * 1024)
            } else {
                rng.gen_range(512 * 1024..3 * 1024 * 1024)
            };
            let file = self.new_file(data_bytes);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = self.upload(OpKind::Upload, node, file) => {}
            }
            self.think(&mut rng, 20..150).await;
        }
    }

    /// Streams random ranges of acknowledged files from random nodes until
    /// stopped.
    pub async fn run_reader(self: Arc<Self>, client: u64) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (0x5245_0000 + client));
        while !self.stop.is_cancelled() {
            let Some(acked) = self.random_acked(&mut rng) else {
                self.think(&mut rng, 50..100).await;
                continue;
            };
            let node = rng.gen_range(0..self.nodes());
            let range = random_range(&mut rng, acked.file.size_bytes());
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = self.read(OpKind::Read, node, &acked, range) => {}
            }
            self.think(&mut rng, 10..80).await;
        }
    }

    async fn think(&self, rng: &mut StdRng, millis: std::ops::Range<u64>) {
        let pause = Duration::from_millis(rng.gen_range(millis));
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }

    /// Writes the history as JSON lines to `path`.
    pub fn write_history(&self, path: &std::path::Path) -> Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        );
        for op in self.history() {
            serde_json::to_writer(&mut out, &op)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }
}

/// Picks a whole file (`None`), a range across a chunk boundary, or any
/// range.
fn random_range(rng: &mut StdRng, size: u64) -> Option<(u64, u64)> {
    const CHUNK_BYTES: u64 = 1024 * 1024;
    match rng.gen_range(0..10) {
        0..=2 => None,
        3..=4 if size > CHUNK_BYTES + 2 => {
            let start = rng.gen_range(CHUNK_BYTES.saturating_sub(4096)..CHUNK_BYTES);
            let end = rng.gen_range(CHUNK_BYTES + 1..=size.min(CHUNK_BYTES + 4096));
            Some((start, end))
        }
        _ => {
            let start = rng.gen_range(0..size);
            let end = rng.gen_range(start + 1..=size);
            Some((start, end))
        }
    }
}

/// Joins the error and its sources on one line, because reqwest puts the
/// useful part (connection refused, reset) in a source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ranges_match_whole_content() {
        let file = FileSpec {
            key: 42,
            data_bytes: 1000,
        };
        let whole = file.content();
        assert_eq!(whole.len() as u64, file.size_bytes());
        assert_eq!(&whole[..4], b"RIFF");
        assert_eq!(&whole[36..40], b"data");
        for (start, end) in [(0, 1), (0, 44), (43, 45), (44, 52), (45, 51), (100, 1044)] {
            assert_eq!(
                file.bytes(start, end),
                whole[start as usize..end as usize],
                "range {start}..{end}"
            );
        }
    }

    #[test]
    fn files_of_one_run_differ() {
        let workload = Workload::new(7, vec!["http://127.0.0.1:1".into()]).unwrap();
        let a = workload.new_file(64);
        let b = workload.new_file(64);
        assert_ne!(a.content(), b.content());
    }
}
