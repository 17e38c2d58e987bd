//! Node configuration: one type loaded from command-line flags,
//! `DISPOTIFY_*` environment variables and an optional TOML file (in that
//! order of precedence), validated once into typed values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use dispotify_transport::{TransportConfig, TransportError};

use crate::consensus::RaftSettings;
use crate::model::NodeId;

/// Default replication factor R: each file is kept on this many nodes.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;
/// Default largest upload accepted, in bytes (2 GiB): larger than any album
/// track in a lossless format, small enough to bound staging disk use.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default time a whole HTTP request may take before it is cut off: long
/// enough for a 2 GiB upload on a slow home link, short enough that a stuck
/// client does not hold a staging file forever.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default interval between health checks of every member.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Default lifetime of a resolved peer address in the discovery cache.
pub const DEFAULT_PEER_CACHE_TTL: Duration = Duration::from_secs(30);

/// Default pause between two scans of the catalog by the leader's repair
/// scheduler.
pub const DEFAULT_REPAIR_INTERVAL: Duration = Duration::from_secs(5);
/// Default time a member must have failed its health checks before the
/// copies it holds are re-created elsewhere. A restart or a short network
/// hiccup takes less, and costs no copying.
pub const DEFAULT_REPAIR_GRACE: Duration = Duration::from_secs(60);
/// Default number of files repaired at the same time, cluster-wide.
pub const DEFAULT_REPAIR_CONCURRENCY: usize = 2;
/// Default bandwidth a node spends sending repair and rebalancing copies,
/// in bytes per second: a third of a gigabit link, leaving room for
/// uploads and streams.
pub const DEFAULT_REPAIR_BYTES_PER_SEC: u64 = 40 * 1024 * 1024;
/// Default rate at which each node re-reads and verifies its blobs, in
/// bytes per second: a full pass over 1 TiB takes about a day, with little
/// load on the disk.
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 16 * 1024 * 1024;
/// Default pause between the end of one scrub pass and the start of the
/// next.
pub const DEFAULT_SCRUB_PASS_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Default age a blob that no committed track assigns to this node must
/// reach before it is deleted. Younger ones may belong to an upload whose
/// commit is still in flight.
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(10 * 60);

/// Scrub, repair and orphan collection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairSettings {
    pub interval: Duration,
    pub grace: Duration,
    pub concurrency: usize,
    pub bytes_per_sec: u64,
    pub scrub_bytes_per_sec: u64,
    pub scrub_pass_interval: Duration,
    pub orphan_grace: Duration,
}

impl Default for RepairSettings {
    fn default() -> Self {
        RepairSettings {
            interval: DEFAULT_REPAIR_INTERVAL,
            grace: DEFAULT_REPAIR_GRACE,
            concurrency: DEFAULT_REPAIR_CONCURRENCY,
            bytes_per_sec: DEFAULT_REPAIR_BYTES_PER_SEC,
            scrub_bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
            scrub_pass_interval: DEFAULT_SCRUB_PASS_INTERVAL,
            orphan_grace: DEFAULT_ORPHAN_GRACE,
        }
    }
}

/// `dispotify serve` flags. Each is also read from the environment
/// variable named beside it and, failing both, from the `--config` file.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "DISPOTIFY_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id; must match the node id in its certificate.
    #[arg(long, env = "DISPOTIFY_ID")]
    pub id: Option<String>,
    /// Directory for the Raft log, blobs, the SQLite catalog and the node id.
    #[arg(long, env = "DISPOTIFY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the public HTTP API listens on, e.g. 0.0.0.0:8081.
    #[arg(long = "http", env = "DISPOTIFY_HTTP")]
    pub http: Option<SocketAddr>,
    /// UDP address the internal QUIC endpoint listens on, e.g. 0.0.0.0:8181.
    #[arg(long = "quic", env = "DISPOTIFY_QUIC")]
    pub quic: Option<SocketAddr>,
    /// HTTP address other nodes and clients are told to use (host:port);
    /// defaults to --http, which must then not be a wildcard address.
    #[arg(long, env = "DISPOTIFY_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// QUIC address other nodes dial (host:port); defaults to --quic.
    #[arg(long, env = "DISPOTIFY_ADVERTISE_QUIC")]
    pub advertise_quic: Option<String>,
    /// Directory with node.pem, node.key and ca.pem (see dispotify-certgen).
    #[arg(long, env = "DISPOTIFY_CERTS")]
    pub certs: Option<PathBuf>,
    /// QUIC addresses (host:port, comma separated) of nodes to join through.
    #[arg(long, env = "DISPOTIFY_SEEDS", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Initialize a new cluster with this node as its first member.
    #[arg(long, env = "DISPOTIFY_BOOTSTRAP")]
    pub bootstrap: bool,
    /// Catalog database: sqlite://PATH or postgres://...; default SQLite in the data directory.
    #[arg(long, env = "DISPOTIFY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Number of nodes that keep a copy of each file.
    #[arg(long, env = "DISPOTIFY_REPLICATION_FACTOR")]
    pub replication_factor: Option<usize>,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "DISPOTIFY_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Blob chunk size in bytes: the unit of hashing, transfer and verification.
    #[arg(long, env = "DISPOTIFY_CHUNK_SIZE_BYTES")]
    pub chunk_size_bytes: Option<u32>,
    /// Directory of the built web app served at `/`.
    #[arg(long, env = "DISPOTIFY_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
}

/// The same settings as [`ServeArgs`], read from a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub quic: Option<SocketAddr>,
    pub advertise_http: Option<String>,
    pub advertise_quic: Option<String>,
    pub certs: Option<PathBuf>,
    pub seeds: Option<Vec<String>>,
    pub bootstrap: Option<bool>,
    pub database_url: Option<String>,
    pub replication_factor: Option<usize>,
    pub max_upload_bytes: Option<u64>,
    pub chunk_size_bytes: Option<u32>,
    pub web_dir: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub health_check_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub peer_cache_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub raft_heartbeat_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub raft_election_timeout_min: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub raft_election_timeout_max: Option<Duration>,
    pub raft_snapshot_every_entries: Option<u64>,
    pub raft_log_entries_kept_after_snapshot: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub repair_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub repair_grace: Option<Duration>,
    pub repair_concurrency: Option<usize>,
    pub repair_bytes_per_sec: Option<u64>,
    pub scrub_bytes_per_sec: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub scrub_pass_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub orphan_grace: Option<Duration>,
    pub quic_max_udp_payload: Option<u16>,
    pub quic_socket_buffer_bytes: Option<usize>,
    pub quic_receive_window_bytes: Option<u32>,
}

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub advertise_http: String,
    pub advertise_quic: String,
    pub certs_dir: PathBuf,
    pub seeds: Vec<String>,
    pub bootstrap: bool,
    pub database_url: String,
    pub replication_factor: usize,
    pub max_upload_bytes: u64,
    pub chunk_size_bytes: u32,
    pub web_dir: Option<PathBuf>,
    pub request_timeout: Duration,
    pub health_check_interval: Duration,
    pub peer_cache_ttl: Duration,
    pub raft: RaftSettings,
    pub repair: RepairSettings,
    /// QUIC endpoint settings; the timeouts keep the transport's defaults.
    pub transport: TransportConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing setting {name}: pass --{flag} or set {env}")]
    Missing {
        name: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    ParseFile {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl NodeConfig {
    /// Merges flags and environment (already in `args`) over the file named
    /// by `--config`, applies defaults and validates the result.
    pub fn load(args: ServeArgs) -> Result<NodeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    fn merge(args: ServeArgs, file: FileConfig) -> Result<NodeConfig, ConfigError> {
        let id = args.id.or(file.id).ok_or(ConfigError::Missing {
            name: "id",
            flag: "id",
            env: "DISPOTIFY_ID",
        })?;
        dispotify_certs::validate_node_id(&id).map_err(|e| ConfigError::Invalid {
            name: "id",
            reason: e.to_string(),
        })?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .ok_or(ConfigError::Missing {
                name: "data directory",
                flag: "data-dir",
                env: "DISPOTIFY_DATA_DIR",
            })?;
        let http_addr = args.http.or(file.http).ok_or(ConfigError::Missing {
            name: "HTTP address",
            flag: "http",
            env: "DISPOTIFY_HTTP",
        })?;
        let quic_addr = args.quic.or(file.quic).ok_or(ConfigError::Missing {
            name: "QUIC address",
            flag: "quic",
            env: "DISPOTIFY_QUIC",
        })?;
        let certs_dir = args.certs.or(file.certs).ok_or(ConfigError::Missing {
            name: "certificate directory",
            flag: "certs",
            env: "DISPOTIFY_CERTS",
        })?;
        let advertise_http = advertised(
            "advertise-http",
            args.advertise_http.or(file.advertise_http),
            http_addr,
        )?;
        let advertise_quic = advertised(
            "advertise-quic",
            args.advertise_quic.or(file.advertise_quic),
            quic_addr,
        )?;
        let seeds: Vec<String> = args
            .seeds
            .or(file.seeds)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .collect();
        for seed in &seeds {
            validate_host_port("seeds", seed)?;
        }
        let bootstrap = args.bootstrap || file.bootstrap.unwrap_or(false);
        if !bootstrap && seeds.is_empty() {
            return Err(ConfigError::Invalid {
                name: "seeds",
                reason: "a node needs --seeds to join a cluster, or --bootstrap to start a new one"
                    .to_string(),
            });
        }
        let database_url = args
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| default_database_url(&data_dir));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                name: "database-url",
                reason: format!("{database_url:?} is neither sqlite://PATH nor postgres://..."),
            });
        }
        let replication_factor = args
            .replication_factor
            .or(file.replication_factor)
            .unwrap_or(DEFAULT_REPLICATION_FACTOR);
        if !(1..=9).contains(&replication_factor) {
            return Err(ConfigError::Invalid {
                name: "replication-factor",
                reason: format!("{replication_factor} is outside 1..=9"),
            });
        }
        let max_upload_bytes = args
            .max_upload_bytes
            .or(file.max_upload_bytes)
            .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES);
        if max_upload_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "max-upload-bytes",
                reason: "must be greater than 0".to_string(),
            });
        }
        let chunk_size_bytes = args
            .chunk_size_bytes
            .or(file.chunk_size_bytes)
            .unwrap_or(crate::blob::DEFAULT_CHUNK_SIZE_BYTES);
        if !(4096..=16 * 1024 * 1024).contains(&chunk_size_bytes) {
            return Err(ConfigError::Invalid {
                name: "chunk-size-bytes",
                reason: format!("{chunk_size_bytes} is outside 4096..=16777216"),
            });
        }
        let defaults = RaftSettings::default();
        let raft = RaftSettings {
            heartbeat_interval: file
                .raft_heartbeat_interval
                .unwrap_or(defaults.heartbeat_interval),
            election_timeout_min: file
                .raft_election_timeout_min
                .unwrap_or(defaults.election_timeout_min),
            election_timeout_max: file
                .raft_election_timeout_max
                .unwrap_or(defaults.election_timeout_max),
            snapshot_every_entries: file
                .raft_snapshot_every_entries
                .unwrap_or(defaults.snapshot_every_entries),
            log_entries_kept_after_snapshot: file
                .raft_log_entries_kept_after_snapshot
                .unwrap_or(defaults.log_entries_kept_after_snapshot),
        };
        if raft.snapshot_every_entries == 0 {
            return Err(ConfigError::Invalid {
                name: "raft_snapshot_every_entries",
                reason: "must be at least 1".to_string(),
            });
        }
        if raft.election_timeout_min <= raft.heartbeat_interval
            || raft.election_timeout_max <= raft.election_timeout_min
        {
            return Err(ConfigError::Invalid {
                name: "raft timing",
                reason: "need heartbeat interval < election timeout min < election timeout max"
                    .to_string(),
            });
        }
        let repair = RepairSettings {
            interval: file.repair_interval.unwrap_or(DEFAULT_REPAIR_INTERVAL),
            grace: file.repair_grace.unwrap_or(DEFAULT_REPAIR_GRACE),
            concurrency: file
                .repair_concurrency
                .unwrap_or(DEFAULT_REPAIR_CONCURRENCY),
            bytes_per_sec: file
                .repair_bytes_per_sec
                .unwrap_or(DEFAULT_REPAIR_BYTES_PER_SEC),
            scrub_bytes_per_sec: file
                .scrub_bytes_per_sec
                .unwrap_or(DEFAULT_SCRUB_BYTES_PER_SEC),
            scrub_pass_interval: file
                .scrub_pass_interval
                .unwrap_or(DEFAULT_SCRUB_PASS_INTERVAL),
            orphan_grace: file.orphan_grace.unwrap_or(DEFAULT_ORPHAN_GRACE),
        };
        for (name, value) in [
            ("repair_concurrency", repair.concurrency as u64),
            ("repair_bytes_per_sec", repair.bytes_per_sec),
            ("scrub_bytes_per_sec", repair.scrub_bytes_per_sec),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be at least 1".to_string(),
                });
            }
        }
        if repair.interval.is_zero() {
            return Err(ConfigError::Invalid {
                name: "repair_interval",
                reason: "must be longer than 0".to_string(),
            });
        }
        let transport_defaults = TransportConfig::default();
        let transport = TransportConfig {
            max_udp_payload: file
                .quic_max_udp_payload
                .unwrap_or(transport_defaults.max_udp_payload),
            socket_buffer_bytes: file
                .quic_socket_buffer_bytes
                .unwrap_or(transport_defaults.socket_buffer_bytes),
            receive_window_bytes: file
                .quic_receive_window_bytes
                .unwrap_or(transport_defaults.receive_window_bytes),
            ..transport_defaults
        };
        if let Err(TransportError::InvalidConfig { field, problem }) = transport.validate() {
            let name = match field {
                "max_udp_payload" => "quic_max_udp_payload",
                "socket_buffer_bytes" => "quic_socket_buffer_bytes",
                "receive_window_bytes" => "quic_receive_window_bytes",
                other => other,
            };
            return Err(ConfigError::Invalid {
                name,
                reason: problem.to_string(),
            });
        }
        Ok(NodeConfig {
            id,
            data_dir,
            http_addr,
            quic_addr,
            advertise_http,
            advertise_quic,
            certs_dir,
            seeds,
            bootstrap,
            database_url,
            replication_factor,
            max_upload_bytes,
            chunk_size_bytes,
            web_dir: args.web_dir.or(file.web_dir),
            request_timeout: file.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            health_check_interval: file
                .health_check_interval
                .unwrap_or(DEFAULT_HEALTH_CHECK_INTERVAL),
            peer_cache_ttl: file.peer_cache_ttl.unwrap_or(DEFAULT_PEER_CACHE_TTL),
            raft,
            repair,
            transport,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_path_buf(),
        source,
    })
}

fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("catalog.sqlite").display())
}

fn advertised(
    name: &'static str,
    given: Option<String>,
    bind: SocketAddr,
) -> Result<String, ConfigError> {
    match given {
        Some(addr) => {
            validate_host_port(name, &addr)?;
            Ok(addr)
        }
        None if bind.ip().is_unspecified() => Err(ConfigError::Invalid {
            name,
            reason: format!("the listen address {bind} is a wildcard; pass --{name} with the host:port other nodes should use"),
        }),
        None => Ok(bind.to_string()),
    }
}

fn validate_host_port(name: &'static str, value: &str) -> Result<(), ConfigError> {
    let valid = match value.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name,
            reason: format!("{value:?} is not host:port"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> ServeArgs {
        ServeArgs {
            id: Some("n1".into()),
            data_dir: Some("/tmp/d".into()),
            http: Some("127.0.0.1:8081".parse().unwrap()),
            quic: Some("127.0.0.1:8181".parse().unwrap()),
            certs: Some("/tmp/c".into()),
            bootstrap: true,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_unset_settings() {
        let config = NodeConfig::merge(minimal(), FileConfig::default()).unwrap();
        assert_eq!(config.replication_factor, DEFAULT_REPLICATION_FACTOR);
        assert_eq!(config.advertise_quic, "127.0.0.1:8181");
        assert_eq!(config.database_url, "sqlite:///tmp/d/catalog.sqlite");
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileConfig = toml::from_str(
            "replication_factor = 2\nmax_upload_bytes = 10\nrequest_timeout = \"5s\"",
        )
        .unwrap();
        let mut args = minimal();
        args.max_upload_bytes = Some(20);
        let config = NodeConfig::merge(args, file).unwrap();
        assert_eq!(config.replication_factor, 2);
        assert_eq!(config.max_upload_bytes, 20);
        assert_eq!(config.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn missing_id_names_flag_and_env() {
        let mut args = minimal();
        args.id = None;
        let error = NodeConfig::merge(args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("--id"), "{error}");
        assert!(error.contains("DISPOTIFY_ID"), "{error}");
    }

    #[test]
    fn node_without_seeds_or_bootstrap_is_rejected() {
        let mut args = minimal();
        args.bootstrap = false;
        let error = NodeConfig::merge(args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("--seeds"), "{error}");
    }

    #[test]
    fn wildcard_bind_needs_advertised_address() {
        let mut args = minimal();
        args.quic = Some("0.0.0.0:8181".parse().unwrap());
        assert!(NodeConfig::merge(args.clone(), FileConfig::default()).is_err());
        args.advertise_quic = Some("node1.example:8181".into());
        assert!(NodeConfig::merge(args, FileConfig::default()).is_ok());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("replication_factr = 2").is_err());
    }

    #[test]
    fn invalid_values_are_rejected() {
        let mut args = minimal();
        args.replication_factor = Some(0);
        assert!(NodeConfig::merge(args, FileConfig::default()).is_err());
        let mut args = minimal();
        args.seeds = Some(vec!["no-port".into()]);
        assert!(NodeConfig::merge(args, FileConfig::default()).is_err());
    }

    #[test]
    fn quic_settings_come_from_file() {
        let file: FileConfig = toml::from_str(
            "quic_max_udp_payload = 1452\nquic_socket_buffer_bytes = 262144\n\
             quic_receive_window_bytes = 8388608",
        )
        .unwrap();
        let config = NodeConfig::merge(minimal(), file).unwrap();
        assert_eq!(config.transport.max_udp_payload, 1452);
        assert_eq!(config.transport.socket_buffer_bytes, 262_144);
        assert_eq!(config.transport.receive_window_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn oversized_udp_payload_names_setting() {
        let file: FileConfig = toml::from_str("quic_max_udp_payload = 9000").unwrap();
        let error = NodeConfig::merge(minimal(), file).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Invalid {
                    name: "quic_max_udp_payload",
                    ..
                }
            ),
            "{error}"
        );
    }
}
