//! A harness that runs real `dispotify serve` processes on loopback with
//! real certificates, and helpers to wait on conditions instead of sleeping.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/audio");

/// How long a cluster may take to elect a leader and get every node ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until `condition` returns true, polling every 100 ms.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if condition().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Announces a test phase in the test output.
pub fn phase(text: &str) {
    eprintln!("=== {text}");
}

fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The QUIC addresses of one node when something sits in front of its
/// port: the node binds `listen` and advertises `advertise` for other
/// nodes to dial.
#[derive(Clone, Copy, Debug)]
pub struct QuicAddrs {
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
}

/// Settings of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub replication_factor: usize,
    pub max_upload_bytes: Option<u64>,
    /// One PostgreSQL URL per node; SQLite when empty.
    pub database_urls: Vec<String>,
    /// TOML settings given to every node through `--config`.
    pub config_toml: Option<String>,
    /// QUIC addresses per node; when empty, each node binds a free loopback
    /// port and advertises it as it is.
    pub quic_addrs: Vec<QuicAddrs>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            replication_factor: 3,
            max_upload_bytes: None,
            database_urls: Vec::new(),
            config_toml: None,
            quic_addrs: Vec::new(),
        }
    }
}

pub struct TestNode {
    pub id: String,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Extra environment variables of the process, applied at its next
    /// start.
    pub env: Vec<(String, String)>,
    args: Vec<String>,
    child: Option<Child>,
}

impl TestNode {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(env!("CARGO_BIN_EXE_dispotify"))
            .args(&self.args)
            .env(
                "DISPOTIFY_LOG",
                "info,dispotify=debug,openraft=warn,tarpc=warn",
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn node {}", self.id))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process with SIGKILL, giving it no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Returns how the process ended, if it has ended since it was started,
    /// without waiting.
    // The fault suite uses this; the cluster tests share the file.
    #[allow(dead_code)]
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub nodes: Vec<TestNode>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a cluster and waits until every node is ready.
    pub async fn start(options: ClusterOptions) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let ids: Vec<String> = (1..=options.nodes).map(|i| format!("node{i}")).collect();
        let certs_root = dir.path().join("certs");
        dispotify_certs::dev_certificates(&certs_root, &ids)?;

        let mut nodes = Vec::new();
        let mut seed = None;
        for (index, id) in ids.iter().enumerate() {
            let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()?).parse()?;
            let quic = match options.quic_addrs.get(index) {
                Some(addrs) => *addrs,
                None => {
                    let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()?).parse()?;
                    QuicAddrs {
                        listen: addr,
                        advertise: addr,
                    }
                }
            };
            let data_dir = dir.path().join(id);
            std::fs::create_dir_all(&data_dir)?;
            let certs_dir = certs_root.join(id);
            let mut args = vec![
                "serve".to_string(),
                format!("--id={id}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--http={http}"),
                format!("--quic={}", quic.listen),
                format!("--advertise-quic={}", quic.advertise),
                format!("--certs={}", certs_dir.display()),
                format!("--replication-factor={}", options.replication_factor),
            ];
            match seed {
                None => {
                    args.push("--bootstrap".to_string());
                    seed = Some(quic.advertise);
                }
                Some(seed) => args.push(format!("--seeds={seed}")),
            }
            if let Some(limit) = options.max_upload_bytes {
                args.push(format!("--max-upload-bytes={limit}"));
            }
            if let Some(toml) = &options.config_toml {
                let path = data_dir.join("node.toml");
                std::fs::write(&path, toml)?;
                args.push(format!("--config={}", path.display()));
            }
            if let Some(url) = options.database_urls.get(index) {
                args.push(format!("--database-url={url}"));
            }
            let log_path = data_dir.join("node.log");
            let mut node = TestNode {
                id: id.clone(),
                http,
                data_dir,
                log_path,
                env: Vec::new(),
                args,
                child: None,
            };
            node.spawn()?;
            nodes.push(node);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let cluster = Cluster {
            nodes,
            http,
            _dir: dir,
        };
        for index in 0..cluster.nodes.len() {
            cluster.wait_ready(index).await?;
        }
        Ok(cluster)
    }

    /// Waits until node `index` returns 200 on /ready and lists every member.
    pub async fn wait_ready(&self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let expected = self.nodes.len();
        let waited = wait_until(&format!("{} ready", node.id), READY_TIMEOUT, || async {
            let ready = self
                .http
                .get(node.url("/ready"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if !ready {
                return false;
            }
            match self.status(index).await {
                Ok(status) => status["members"].as_array().map(|m| m.len()) == Some(expected),
                Err(_) => false,
            }
        })
        .await;
        if let Err(error) = waited {
            bail!(
                "{error}\nlast log lines of {}:\n{}",
                node.id,
                node.log_tail(40)
            );
        }
        Ok(())
    }

    pub async fn status(&self, index: usize) -> Result<Value> {
        let response = self
            .http
            .get(self.nodes[index].url("/cluster/status"))
            .send()
            .await?;
        Ok(response.json().await?)
    }

    /// Index of the node every live node reports as leader.
    pub async fn leader_index(&self) -> Result<usize> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].pid().is_none() {
                continue;
            }
            if let Ok(status) = self.status(index).await {
                if let Some(leader) = status["leader_id"].as_str() {
                    if let Some(found) = self.nodes.iter().position(|n| n.id == leader) {
                        return Ok(found);
                    }
                }
            }
        }
        bail!("no live node reports a leader")
    }

    /// Returns the highest term any running node reports.
    pub async fn max_term(&self) -> Option<u64> {
        let mut max = None;
        for index in 0..self.nodes.len() {
            if self.nodes[index].pid().is_none() {
                continue;
            }
            if let Ok(status) = self.status(index).await {
                if let Some(term) = status["term"].as_u64() {
                    max = Some(max.map_or(term, |m: u64| m.max(term)));
                }
            }
        }
        max
    }

    /// Uploads `path` through node `index`; returns the status and JSON body.
    pub async fn upload(&self, index: usize, path: &Path) -> Result<(u16, Value)> {
        let bytes = std::fs::read(path)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("upload")
            .to_string();
        self.upload_bytes(index, &name, bytes).await
    }

    pub async fn upload_bytes(
        &self,
        index: usize,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<(u16, Value)> {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        let response = self
            .http
            .post(self.nodes[index].url("/music/upload"))
            .multipart(form)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Fetches node `index`'s `/metrics` page in the Prometheus text format.
    pub async fn metrics_text(&self, index: usize) -> Result<String> {
        let response = self
            .http
            .get(self.nodes[index].url("/metrics"))
            .send()
            .await?;
        Ok(response.text().await?)
    }

    /// Reads the value of the unlabelled Prometheus sample `name` from node
    /// `index`'s `/metrics`.
    pub async fn metric(&self, index: usize, name: &str) -> Result<f64> {
        let text = self.metrics_text(index).await?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("no sample {name} in /metrics"))?;
        Ok(value.trim().parse()?)
    }

    /// Requests lock `name` for `owner` through node `index`; returns the
    /// status and the JSON body.
    pub async fn lock_request(
        &self,
        index: usize,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(u16, Value)> {
        let body =
            serde_json::json!({ "name": name, "owner": owner, "ttl_ms": ttl.as_millis() as u64 });
        let response = self
            .http
            .post(self.nodes[index].url("/cluster/locks"))
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Streams a whole file from node `index`.
    pub async fn download(&self, index: usize, file_id: &str) -> Result<(u16, Vec<u8>)> {
        let url = self.nodes[index].url(&format!("/music/stream/{file_id}"));
        let response = self.http.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }

    pub async fn search(&self, index: usize, query: &str) -> Result<Value> {
        let response = self
            .http
            .get(self.nodes[index].url("/music/search"))
            .query(&[("q", query)])
            .send()
            .await?;
        Ok(response.json().await?)
    }
}

/// One row of MANIFEST.tsv: a file name and its expected key/value pairs.
pub type ManifestRow = (String, Vec<(String, String)>);

/// Parses MANIFEST.tsv.
pub fn corpus_manifest() -> Result<Vec<ManifestRow>> {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("MANIFEST.tsv"))?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let columns: Vec<&str> = line.split('\t').collect();
        if columns.len() < 6 {
            continue;
        }
        let pairs = columns[5]
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        rows.push((columns[0].to_string(), pairs));
    }
    Ok(rows)
}

/// Number of files under `dir`, at any depth; 0 when it does not exist.
pub fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                count_files(&path)
            } else {
                1
            }
        })
        .sum()
}
