//! The error type of every operation in this crate.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::identity::{MAX_NODE_ID_LEN, NODE_URI_PREFIX};
use crate::validity::format_time;

/// A failure while creating, loading or checking cluster certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The CA directory lacks `ca.pem` or `ca.key`.
    #[error(
        "no cluster CA found: {} does not exist; run `dispotify-certgen init --out {}` first",
        missing.display(),
        ca_dir.display()
    )]
    MissingCa { ca_dir: PathBuf, missing: PathBuf },

    /// A node id breaks the naming rule.
    #[error(
        "invalid node id {id:?}: {problem}; a node id is 1 to {MAX_NODE_ID_LEN} ASCII letters, \
         digits, '-', '_' or '.', and starts with a letter or digit"
    )]
    InvalidNodeId { id: String, problem: NodeIdProblem },

    /// `dispotify dev` keeps its CA in `DIR/ca`, so no node may be called `ca`.
    #[error("node id {id:?} cannot be used for dev certificates because {} holds the CA; choose another id", ca_dir.display())]
    DevIdTaken { id: String, ca_dir: PathBuf },

    #[error("failed to read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("failed to write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("failed to create directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("{} already exists; pass --force to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },

    #[error("invalid PEM in {}: {source}", path.display())]
    BadPem {
        path: PathBuf,
        source: pem::PemError,
    },

    #[error("no {label} PEM block in {}", path.display())]
    MissingPemBlock { path: PathBuf, label: &'static str },

    /// The bytes are not a well-formed X.509 certificate.
    #[error("invalid X.509 certificate{}: {source}", describe_origin(path))]
    BadCertificate {
        /// The file the certificate came from, when it came from a file.
        path: Option<PathBuf>,
        source: x509_parser::error::X509Error,
    },

    /// The certificate carries no URI SAN at all.
    #[error("certificate has no URI subject alternative name; a node certificate has exactly one, `{NODE_URI_PREFIX}<id>`")]
    MissingNodeUri,

    #[error("certificate has {count} URI subject alternative names; a node certificate has exactly one, `{NODE_URI_PREFIX}<id>`")]
    TooManyUris { count: usize },

    #[error("certificate URI {uri:?} does not start with `{NODE_URI_PREFIX}`")]
    ForeignUri { uri: String },

    #[error("{} is not a CA certificate (its basic constraints do not allow signing)", path.display())]
    NotCa { path: PathBuf },

    #[error("{} is not the private key of the certificate in {}", key_path.display(), cert_path.display())]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },

    #[error("invalid private key in {}: {source}", path.display())]
    BadKey { path: PathBuf, source: rcgen::Error },

    #[error(
        "invalid DNS name {name:?}: use dot-separated labels of 1 to 63 ASCII letters, digits, \
         '-' or '_', at most 253 characters in all, optionally starting with '*.'"
    )]
    BadDnsName { name: String },

    /// The period is empty, or one of its ends cannot be written in X.509.
    #[error(
        "invalid validity period from {} to {}: the end must be later than the start, and both \
         must fall in the years 1 to 9999",
        format_time(*not_before),
        format_time(*not_after)
    )]
    InvalidValidity {
        not_before: SystemTime,
        not_after: SystemTime,
    },

    #[error("validity of {days} days is out of range; use 1 to {max_days}")]
    ValidityDaysOutOfRange { days: u32, max_days: u32 },

    #[error("failed to generate {item}: {source}")]
    Generate {
        item: &'static str,
        source: rcgen::Error,
    },
}

fn describe_origin(path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => format!(" in {}", path.display()),
        None => String::new(),
    }
}

/// Reason a node id was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeIdProblem {
    Empty,
    TooLong { len: usize },
    BadFirstChar { ch: char },
    BadChar { ch: char, index: usize },
}

impl fmt::Display for NodeIdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "it is empty"),
            Self::TooLong { len } => write!(f, "it is {len} characters long"),
            Self::BadFirstChar { ch } => write!(f, "it starts with {ch:?}"),
            Self::BadChar { ch, index } => write!(f, "it contains {ch:?} at position {index}"),
        }
    }
}
