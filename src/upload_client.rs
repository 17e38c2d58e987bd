//! The `dispotify upload` command: sends files from disk to a node's
//! `POST /music/upload` endpoint.
//!
//! Folders are expanded recursively. Hidden entries (names starting with a
//! dot) inside them are skipped, and symbolic links to folders are not
//! followed, so a link loop cannot make the walk endless. Every regular file
//! is sent, because the server decides what is audio and rejects the rest
//! with a reason. Each file is streamed from disk as the multipart field
//! `file`, so memory use does not grow with the file size.
//!
//! Output: one line per file on standard output (`added`, `exists`,
//! `rejected` or `failed`), a progress bar over the total bytes on standard
//! error when it is a terminal, and a final count line.
//!
//! Exit status, as mapped by the binary:
//!
//! - 0 when every file was stored or was already present;
//! - [`EXIT_SOME_REJECTED`] (2) when the server was reached but some files
//!   were rejected or failed;
//! - 1, an `Err` from [`run`], when the server is unreachable, every file
//!   failed, or no file was found.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::multipart::{Form, Part};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

/// Exit status for a run in which the server was reached but rejected at
/// least one file, so scripts notice partial failures.
pub const EXIT_SOME_REJECTED: u8 = 2;

/// Time allowed to open a TCP connection to the server. A node on a LAN
/// accepts within milliseconds, so past this the address is most likely wrong.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for the reachability check before the first upload.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Maximum size of a success body (the track JSON) read into memory. A track
/// record is a few hundred bytes. The cap only guards against a wrong URL
/// that streams a large page back.
const MAX_TRACK_JSON_BYTES: usize = 1024 * 1024;

/// Maximum size of an error body read into memory, for the same reason.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Maximum characters of a non-JSON error body shown to the user, so an HTML
/// error page from a proxy does not flood the terminal.
const MAX_SHOWN_ERROR_CHARS: usize = 200;

/// Number of hex digits of a `file_id` shown in result lines: enough to tell
/// tracks apart by eye and to find one with `grep`.
const SHORT_FILE_ID_CHARS: usize = 12;

/// Arguments of `dispotify upload`.
#[derive(Clone, Debug, clap::Args)]
pub struct UploadArgs {
    /// Base URL of any node's HTTP API, for example `http://127.0.0.1:8081`.
    #[arg(long, env = "DISPOTIFY_SERVER")]
    pub server: String,
    /// Files or folders to upload. Folders are walked recursively, skipping
    /// hidden entries.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Counts of what happened to each file of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadSummary {
    /// Files the server stored as new tracks (201).
    pub added: usize,
    /// Files whose content the catalog already had (200).
    pub existing: usize,
    /// Files for which the server returned an error status.
    pub rejected: usize,
    /// Files whose request did not complete, for example because the file
    /// could not be read.
    pub failed: usize,
    /// Total size of the files the server accepted (added or existing).
    pub accepted_bytes: u64,
}

impl UploadSummary {
    /// Returns the number of files attempted.
    pub fn files(&self) -> usize {
        self.added + self.existing + self.rejected + self.failed
    }

    /// Returns the process exit status for this run: 0 when every file was
    /// accepted, [`EXIT_SOME_REJECTED`] otherwise.
    pub fn exit_status(&self) -> u8 {
        if self.rejected + self.failed == 0 {
            0
        } else {
            EXIT_SOME_REJECTED
        }
    }

    /// Returns [`Self::exit_status`] as the binary's exit code.
    pub fn exit_code(&self) -> std::process::ExitCode {
        std::process::ExitCode::from(self.exit_status())
    }

    fn record(&mut self, outcome: &FileOutcome, size_bytes: u64) {
        match outcome {
            FileOutcome::Added(_) => {
                self.added += 1;
                self.accepted_bytes += size_bytes;
            }
            FileOutcome::Exists(_) => {
                self.existing += 1;
                self.accepted_bytes += size_bytes;
            }
            FileOutcome::Rejected { .. } => self.rejected += 1,
            FileOutcome::Failed { .. } => self.failed += 1,
        }
    }

    /// Formats the final line, for example
    /// `5 files: 3 added, 1 already present, 1 rejected, 0 failed (12.30 MiB accepted)`.
    pub fn count_line(&self) -> String {
        let files = self.files();
        let noun = if files == 1 { "file" } else { "files" };
        format!(
            "{files} {noun}: {} added, {} already present, {} rejected, {} failed ({} accepted)",
            self.added,
            self.existing,
            self.rejected,
            self.failed,
            HumanBytes(self.accepted_bytes),
        )
    }
}

/// Errors that stop an upload run as a whole. A single file that the server
/// rejects is not an error here but a [`FileOutcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    #[error("invalid server URL {server:?}: {reason}")]
    InvalidServerUrl { server: String, reason: String },
    #[error("cannot read {path}")]
    ReadPath {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file or a folder")]
    NotAFileOrFolder { path: PathBuf },
    #[error("no files to upload under the given paths (hidden files are skipped)")]
    NoFiles,
    #[error("cannot connect to {server} (check that a node is running and that the URL is right)")]
    Unreachable {
        server: String,
        source: reqwest::Error,
    },
    #[error("failed to build the HTTP client")]
    HttpClient { source: reqwest::Error },
    #[error("{}", all_failed_message(*files))]
    AllFailed { files: usize },
}

/// Returns the message for an upload in which no file was accepted.
fn all_failed_message(files: usize) -> String {
    if files == 1 {
        "the file was not accepted".to_string()
    } else {
        format!("none of the {files} files was accepted")
    }
}

/// The fields of the server's track JSON that the upload command shows.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "TrackJson")]
pub struct UploadedTrack {
    pub file_id: String,
    pub title: String,
    pub artist: Option<String>,
    pub album: Option<String>,
    pub duration_ms: Option<u64>,
    pub size_bytes: Option<u64>,
    pub replicas: Vec<String>,
}

/// The track JSON as sent. The tag fields are read from a nested `tags`
/// object, as the node sends them, or from the top level.
#[derive(Deserialize)]
struct TrackJson {
    file_id: String,
    title: String,
    #[serde(default)]
    artist: Option<String>,
    #[serde(default)]
    album: Option<String>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    tags: Option<TagsJson>,
    #[serde(default)]
    size_bytes: Option<u64>,
    #[serde(default)]
    replicas: Vec<String>,
}

#[derive(Default, Deserialize)]
struct TagsJson {
    #[serde(default)]
    artist: Option<String>,
    #[serde(default)]
    album: Option<String>,
    #[serde(default)]
    duration_ms: Option<u64>,
}

impl From<TrackJson> for UploadedTrack {
    fn from(json: TrackJson) -> Self {
        let tags = json.tags.unwrap_or_default();
        Self {
            file_id: json.file_id,
            title: json.title,
            artist: json.artist.or(tags.artist),
            album: json.album.or(tags.album),
            duration_ms: json.duration_ms.or(tags.duration_ms),
            size_bytes: json.size_bytes,
            replicas: json.replicas,
        }
    }
}

/// The server's error body: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Result of uploading one file.
#[derive(Clone, Debug, PartialEq)]
pub enum FileOutcome {
    /// The server stored a new track (201 Created).
    Added(UploadedTrack),
    /// The catalog already had this content (200 OK).
    Exists(UploadedTrack),
    /// The server returned an error status.
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// The request did not complete: the file could not be read, the
    /// connection broke mid-upload, or the server's response was invalid.
    Failed { reason: String },
}

/// Formats the result line printed for `path`.
pub fn format_outcome(path: &Path, outcome: &FileOutcome) -> String {
    match outcome {
        FileOutcome::Added(track) => format!("added  {}", describe_track(track)),
        FileOutcome::Exists(track) => format!("exists {}", describe_track(track)),
        FileOutcome::Rejected { code, message, .. } => {
            format!("rejected {}: {code}: {message}", path.display())
        }
        FileOutcome::Failed { reason } => format!("failed {}: {reason}", path.display()),
    }
}

/// Formats `<title> — <artist> (<short file_id>)`, leaving out the artist
/// when the file has none.
fn describe_track(track: &UploadedTrack) -> String {
    let short_id: String = track.file_id.chars().take(SHORT_FILE_ID_CHARS).collect();
    match track.artist.as_deref() {
        Some(artist) if !artist.is_empty() => {
            format!("{} — {artist} ({short_id})", track.title)
        }
        _ => format!("{} ({short_id})", track.title),
    }
}

/// Expands `paths` into the list of files to upload: files as given, and the
/// regular files under each folder, depth first in byte order of their names.
/// Hidden entries inside folders are skipped, and so are symbolic links to
/// folders. A path given twice is uploaded once.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, UploadError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|source| UploadError::ReadPath {
            path: path.clone(),
            source,
        })?;
        if metadata.is_file() {
            files.push(path.clone());
        } else if metadata.is_dir() {
            walk_folder(path, &mut files)?;
        } else {
            return Err(UploadError::NotAFileOrFolder { path: path.clone() });
        }
    }

    let mut seen = HashSet::new();
    files.retain(|file| seen.insert(file.clone()));
    Ok(files)
}

/// Appends the regular files under `root` to `files`, in sorted order.
fn walk_folder(root: &Path, files: &mut Vec<PathBuf>) -> Result<(), UploadError> {
    // A stack of folders still to visit, reversed so the first in sorted
    // order is popped first.
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let mut entries = read_visible_entries(&folder)?;
        entries.sort();

        let mut subfolders = Vec::new();
        for entry in entries {
            // `symlink_metadata` does not follow links, so a link to a folder
            // is seen as a link and skipped, while a link to a file is
            // resolved below.
            let link_metadata =
                std::fs::symlink_metadata(&entry).map_err(|source| UploadError::ReadPath {
                    path: entry.clone(),
                    source,
                })?;
            if link_metadata.is_dir() {
                subfolders.push(entry);
                continue;
            }
            let is_regular_file = if link_metadata.file_type().is_symlink() {
                std::fs::metadata(&entry).is_ok_and(|target| target.is_file())
            } else {
                link_metadata.is_file()
            };
            if is_regular_file {
                files.push(entry);
            }
        }
        // Files of a folder come before its subfolders' files, and the
        // subfolders are visited in sorted order.
        pending.extend(subfolders.into_iter().rev());
    }
    Ok(())
}

fn read_visible_entries(folder: &Path) -> Result<Vec<PathBuf>, UploadError> {
    let read_error = |source| UploadError::ReadPath {
        path: folder.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if entry.file_name().as_encoded_bytes().first() != Some(&b'.') {
            entries.push(entry.path());
        }
    }
    Ok(entries)
}

/// A client bound to one server.
pub struct Uploader {
    client: reqwest::Client,
    server: String,
    upload_url: Url,
    health_url: Url,
}

impl Uploader {
    /// Creates a client for the node at `server`, a base URL such as
    /// `http://127.0.0.1:8081`.
    pub fn new(server: &str) -> Result<Self, UploadError> {
        let invalid = |reason: String| UploadError::InvalidServerUrl {
            server: server.to_string(),
            reason,
        };
        let base = Url::parse(server).map_err(|error| invalid(error.to_string()))?;
        // NOTE: reqwest is built without a TLS backend, so only plain http
        // works. An https node needs a proxy or a TLS-enabled build.
        if base.scheme() != "http" {
            return Err(invalid(format!(
                "scheme {:?} is not supported, use http://HOST:PORT",
                base.scheme()
            )));
        }
        let join = |endpoint: &str| {
            let path = format!("{}/{endpoint}", base.path().trim_end_matches('/'));
            let mut url = base.clone();
            url.set_path(&path);
            url
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|source| UploadError::HttpClient { source })?;

        Ok(Self {
            client,
            server: server.to_string(),
            upload_url: join("music/upload"),
            health_url: join("health"),
        })
    }

    /// Checks that the server accepts connections. Any HTTP response counts,
    /// because a node that is not ready still returns an error body that
    /// explains each rejected upload.
    pub async fn check_reachable(&self) -> Result<(), UploadError> {
        self.client
            .get(self.health_url.clone())
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map(drop)
            .map_err(|source| UploadError::Unreachable {
                server: self.server.clone(),
                source,
            })
    }

    /// Uploads one file, streaming it from disk and advancing `progress` by
    /// the bytes read. Returns `Err` only when the server cannot be
    /// connected to, so the caller can stop instead of failing every
    /// remaining file the same way.
    pub async fn upload_file(
        &self,
        path: &Path,
        progress: &ProgressBar,
    ) -> Result<FileOutcome, UploadError> {
        let form = match file_form(path, progress).await {
            Ok(form) => form,
            Err(error) => {
                return Ok(FileOutcome::Failed {
                    reason: format!("cannot read the file: {error}"),
                })
            }
        };

        let response = match self
            .client
            .post(self.upload_url.clone())
            .multipart(form)
            .send()
            .await
        {
            Ok(response) => response,
            Err(source) if source.is_connect() => {
                return Err(UploadError::Unreachable {
                    server: self.server.clone(),
                    source,
                })
            }
            Err(error) => {
                return Ok(FileOutcome::Failed {
                    reason: error_chain(&error),
                })
            }
        };
        Ok(read_outcome(response).await)
    }
}

/// Builds the multipart form with the file as the streamed field `file`.
async fn file_form(path: &Path, progress: &ProgressBar) -> std::io::Result<Form> {
    let file = tokio::fs::File::open(path).await?;
    let size_bytes = file.metadata().await?.len();
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let content_type = mime_guess::from_path(path).first_or_octet_stream();

    // `take` stops at the announced length if the file grows while it is
    // read. A file that shrinks ends the body early, and the request fails.
    let counter = progress.clone();
    let stream = ReaderStream::new(file.take(size_bytes))
        .inspect_ok(move |chunk| counter.inc(chunk.len() as u64));
    let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), size_bytes)
        .file_name(file_name)
        .mime_str(content_type.essence_str())
        .map_err(std::io::Error::other)?;
    Ok(Form::new().part("file", part))
}

/// Turns the server's response into a [`FileOutcome`].
async fn read_outcome(response: reqwest::Response) -> FileOutcome {
    let status = response.status();
    if status == StatusCode::CREATED || status == StatusCode::OK {
        return match read_capped(response, MAX_TRACK_JSON_BYTES).await {
            Ok(body) => match serde_json::from_slice::<UploadedTrack>(&body) {
                Ok(track) if status == StatusCode::CREATED => FileOutcome::Added(track),
                Ok(track) => FileOutcome::Exists(track),
                Err(error) => FileOutcome::Failed {
                    reason: format!(
                        "the server returned {status} with invalid track JSON: {error}"
                    ),
                },
            },
            Err(reason) => FileOutcome::Failed { reason },
        };
    }

    let body = match read_capped(response, MAX_ERROR_BODY_BYTES).await {
        Ok(body) => body,
        Err(reason) => {
            return FileOutcome::Rejected {
                status: status.as_u16(),
                code: status_code_name(status),
                message: reason,
            }
        }
    };
    rejection_from_body(status, &body)
}

/// Builds a rejection from an error body, falling back to the status and the
/// start of the body when it is not the server's error JSON (for example a
/// proxy's HTML page).
fn rejection_from_body(status: StatusCode, body: &[u8]) -> FileOutcome {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return FileOutcome::Rejected {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let mut message: String = text.trim().chars().take(MAX_SHOWN_ERROR_CHARS).collect();
    if message.is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string();
    }
    FileOutcome::Rejected {
        status: status.as_u16(),
        code: status_code_name(status),
        message,
    }
}

/// Names a status that came without an error code, for example `http_502`.
fn status_code_name(status: StatusCode) -> String {
    format!("http_{}", status.as_u16())
}

/// Reads a response body up to `max_bytes`, failing past that.
async fn read_capped(mut response: reqwest::Response, max_bytes: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_bytes {
                    return Err(format!(
                        "the server's response is larger than {max_bytes} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => {
                return Err(format!(
                    "reading the response failed: {}",
                    error_chain(&error)
                ))
            }
        }
    }
}

/// Joins an error and its sources, because reqwest's top-level message
/// ("error sending request") hides the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs `dispotify upload`: expands the paths, checks that the server is
/// reachable and uploads every file, printing one line per file and a count.
pub async fn run(args: UploadArgs) -> anyhow::Result<UploadSummary> {
    let files = expand_paths(&args.paths)?;
    if files.is_empty() {
        return Err(UploadError::NoFiles.into());
    }
    let uploader = Uploader::new(&args.server)?;
    uploader.check_reachable().await?;

    let total_bytes = files
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|metadata| metadata.len())
        .sum();
    let progress = terminal_progress_bar(total_bytes);
    let mut stdout = std::io::stdout();
    let result = upload_all(&uploader, &files, &progress, &mut stdout).await;
    progress.finish_and_clear();

    let summary = result?;
    println!("{}", summary.count_line());
    if summary.added + summary.existing == 0 {
        return Err(UploadError::AllFailed {
            files: summary.files(),
        }
        .into());
    }
    Ok(summary)
}

/// Uploads `files` in order, writing one result line per file to `out`.
/// Stops at the first file for which the server cannot be connected to.
pub async fn upload_all(
    uploader: &Uploader,
    files: &[PathBuf],
    progress: &ProgressBar,
    out: &mut dyn Write,
) -> Result<UploadSummary, UploadError> {
    let mut summary = UploadSummary::default();
    let mut position = 0u64;
    for file in files {
        let size_bytes = std::fs::metadata(file).map_or(0, |metadata| metadata.len());
        progress.set_message(file_label(file));

        let outcome = match uploader.upload_file(file, progress).await {
            Ok(outcome) => outcome,
            Err(error) => {
                progress.suspend(|| {
                    let _ = writeln!(out, "{}", summary.count_line());
                    let _ = writeln!(out, "stopped before {}", file.display());
                });
                return Err(error);
            }
        };
        summary.record(&outcome, size_bytes);

        // A failed file may have been read only in part, so the bar is set to
        // where this file ends rather than trusting the byte count.
        position += size_bytes;
        progress.set_position(position);
        let line = format_outcome(file, &outcome);
        progress.suspend(|| {
            // A closed standard output (for example `| head`) must not stop
            // the uploads, so write errors are ignored.
            let _ = writeln!(out, "{line}");
        });
    }
    Ok(summary)
}

fn file_label(file: &Path) -> String {
    file.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Creates a byte progress bar on standard error, hidden when standard
/// error is not a terminal.
fn terminal_progress_bar(total_bytes: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
    )
    .map(|style| style.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr()).with_style(style)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::{DefaultBodyLimit, Multipart, State};
    use axum::http::StatusCode as AxumStatus;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use sha2::{Digest, Sha256};
    use tokio::sync::{mpsc, Notify};

    use super::*;

    fn track(artist: Option<&str>) -> UploadedTrack {
        UploadedTrack {
            file_id: "0123456789abcdef0123456789abcdef".to_string(),
            title: "Blue in Green".to_string(),
            artist: artist.map(str::to_string),
            album: None,
            duration_ms: Some(337_000),
            size_bytes: Some(5_000_000),
            replicas: vec!["node1".to_string()],
        }
    }

    fn touch(path: &Path) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, path.to_string_lossy().as_bytes()).unwrap();
    }

    #[test]
    fn expand_walks_folders_sorted_and_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            "b.mp3",
            "a.flac",
            ".hidden.mp3",
            ".git/config",
            "sub/c.ogg",
            "sub/.DS_Store",
            "zsub/deeper/d.wav",
        ] {
            touch(&root.join(name));
        }
        std::os::unix::fs::symlink(root.join("a.flac"), root.join("link_to_file")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("link_to_sub")).unwrap();
        std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();

        let files = expand_paths(&[root.to_path_buf()]).unwrap();

        let relative: Vec<_> = files
            .iter()
            .map(|file| {
                file.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            relative,
            [
                "a.flac",
                "b.mp3",
                "link_to_file",
                "sub/c.ogg",
                "zsub/deeper/d.wav"
            ]
        );
    }

    #[test]
    fn expand_keeps_explicit_files_and_drops_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let hidden = dir.path().join(".named-on-purpose.mp3");
        let song = dir.path().join("song.mp3");
        touch(&hidden);
        touch(&song);

        let files =
            expand_paths(&[hidden.clone(), dir.path().to_path_buf(), song.clone()]).unwrap();

        assert_eq!(files, [hidden, song]);
    }

    #[test]
    fn expand_reports_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-album");

        let error = expand_paths(std::slice::from_ref(&missing)).unwrap_err();

        assert!(matches!(&error, UploadError::ReadPath { path, .. } if *path == missing));
        assert!(error.to_string().contains("no-such-album"), "{error}");
    }

    #[test]
    fn expand_of_empty_folder_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join(".only-hidden"));

        let files = expand_paths(&[dir.path().to_path_buf()]).unwrap();

        assert!(files.is_empty(), "{files:?}");
    }

    #[test]
    fn outcome_lines_are_formatted() {
        let path = Path::new("music/notes.txt");
        let cases = [
            (
                FileOutcome::Added(track(Some("Miles Davis"))),
                "added  Blue in Green — Miles Davis (0123456789ab)",
            ),
            (
                FileOutcome::Added(track(None)),
                "added  Blue in Green (0123456789ab)",
            ),
            (
                FileOutcome::Exists(track(Some(""))),
                "exists Blue in Green (0123456789ab)",
            ),
            (
                FileOutcome::Rejected {
                    status: 415,
                    code: "unsupported_format".to_string(),
                    message: "upload an audio file".to_string(),
                },
                "rejected music/notes.txt: unsupported_format: upload an audio file",
            ),
            (
                FileOutcome::Failed {
                    reason: "connection reset".to_string(),
                },
                "failed music/notes.txt: connection reset",
            ),
        ];
        for (outcome, expected) in cases {
            assert_eq!(format_outcome(path, &outcome), expected);
        }
    }

    #[test]
    fn track_json_reads_nested_or_top_level_tags() {
        let nested = r#"{"file_id": "ab", "file_name": "a.flac", "title": "Song",
            "tags": {"title": "Song", "artist": "Band", "album": "Record", "duration_ms": 1068},
            "size_bytes": 5862, "replicas": ["node1", "node3"]}"#;
        let flat = r#"{"file_id": "ab", "title": "Song", "artist": "Band",
            "album": "Record", "duration_ms": 1068, "size_bytes": 5862,
            "replicas": ["node1", "node3"]}"#;
        let untagged = r#"{"file_id": "ab", "title": "Song", "tags": {"artist": null}}"#;

        let expected = UploadedTrack {
            file_id: "ab".to_string(),
            title: "Song".to_string(),
            artist: Some("Band".to_string()),
            album: Some("Record".to_string()),
            duration_ms: Some(1068),
            size_bytes: Some(5862),
            replicas: vec!["node1".to_string(), "node3".to_string()],
        };
        assert_eq!(
            serde_json::from_str::<UploadedTrack>(nested).unwrap(),
            expected
        );
        assert_eq!(
            serde_json::from_str::<UploadedTrack>(flat).unwrap(),
            expected
        );
        let untagged: UploadedTrack = serde_json::from_str(untagged).unwrap();
        assert_eq!(untagged.artist, None);
        assert!(untagged.replicas.is_empty());
    }

    #[test]
    fn rejection_reads_error_json() {
        let body =
            br#"{"error": {"code": "file_too_large", "message": "files over 1 GiB are rejected"}}"#;

        let outcome = rejection_from_body(StatusCode::PAYLOAD_TOO_LARGE, body);

        assert_eq!(
            outcome,
            FileOutcome::Rejected {
                status: 413,
                code: "file_too_large".to_string(),
                message: "files over 1 GiB are rejected".to_string(),
            }
        );
    }

    #[test]
    fn rejection_without_json_shows_status_and_text() {
        let page = format!("<html>{}</html>", "x".repeat(1000));

        let outcome = rejection_from_body(StatusCode::BAD_GATEWAY, page.as_bytes());
        let FileOutcome::Rejected { code, message, .. } = outcome else {
            panic!("expected a rejection, got {outcome:?}");
        };
        assert_eq!(code, "http_502");
        assert_eq!(message.chars().count(), MAX_SHOWN_ERROR_CHARS);
        assert!(message.starts_with("<html>"));

        let empty = rejection_from_body(StatusCode::SERVICE_UNAVAILABLE, b"");
        let FileOutcome::Rejected { message, .. } = empty else {
            panic!("expected a rejection, got {empty:?}");
        };
        assert_eq!(message, "Service Unavailable");
    }

    #[test]
    fn summary_counts_and_exit_code() {
        let mut summary = UploadSummary::default();
        summary.record(&FileOutcome::Added(track(None)), 1000);
        summary.record(&FileOutcome::Exists(track(None)), 24);
        assert_eq!(summary.exit_status(), 0);

        summary.record(
            &FileOutcome::Rejected {
                status: 415,
                code: "unsupported_format".to_string(),
                message: "upload an audio file".to_string(),
            },
            5,
        );

        assert_eq!(summary.exit_status(), EXIT_SOME_REJECTED);
        assert_eq!(summary.files(), 3);
        assert_eq!(
            summary.count_line(),
            "3 files: 1 added, 1 already present, 1 rejected, 0 failed (1.00 KiB accepted)"
        );
    }

    #[test]
    fn server_url_must_be_http() {
        assert!(Uploader::new("http://127.0.0.1:8081").is_ok());
        assert!(matches!(
            Uploader::new("https://127.0.0.1:8081"),
            Err(UploadError::InvalidServerUrl { .. })
        ));
        assert!(matches!(
            Uploader::new("127.0.0.1:8081"),
            Err(UploadError::InvalidServerUrl { .. })
        ));
    }

    #[test]
    fn endpoint_urls_keep_base_path() {
        let uploader = Uploader::new("http://127.0.0.1:8081/dispotify/").unwrap();

        assert_eq!(
            uploader.upload_url.as_str(),
            "http://127.0.0.1:8081/dispotify/music/upload"
        );
        assert_eq!(
            uploader.health_url.as_str(),
            "http://127.0.0.1:8081/dispotify/health"
        );
    }

    /// Record of one multipart field as the test server received it.
    #[derive(Clone, Debug)]
    struct ReceivedField {
        field_name: Option<String>,
        file_name: Option<String>,
        content_type: Option<String>,
        size_bytes: u64,
        sha256_hex: String,
    }

    /// Makes the test server stop reading a body once it has this many bytes
    /// of it, report on `paused`, and wait for `release`.
    struct Pause {
        after_bytes: u64,
        paused: mpsc::Sender<()>,
        release: Arc<Notify>,
    }

    #[derive(Clone, Default)]
    struct TestServer {
        received: Arc<Mutex<Vec<ReceivedField>>>,
        stored: Arc<Mutex<HashSet<String>>>,
        pause: Arc<Mutex<Option<Pause>>>,
    }

    fn json_error(
        status: AxumStatus,
        code: &str,
        message: &str,
    ) -> (AxumStatus, Json<serde_json::Value>) {
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        (status, Json(body))
    }

    /// Accepts an upload the way the node's endpoint does: hashes the field
    /// as it streams in, returns 201 for new content and 200 for content it
    /// has seen, and rejects `.txt` names with the node's error JSON shape.
    /// Names starting with `too-large` get 413 before the body is read.
    async fn accept_upload(
        State(server): State<TestServer>,
        mut multipart: Multipart,
    ) -> (AxumStatus, Json<serde_json::Value>) {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return json_error(AxumStatus::BAD_REQUEST, "missing_file", "no field"),
            Err(error) => {
                return json_error(AxumStatus::BAD_REQUEST, "bad_multipart", &error.to_string())
            }
        };
        let field_name = field.name().map(str::to_string);
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(str::to_string);
        if file_name
            .as_deref()
            .is_some_and(|name| name.starts_with("too-large"))
        {
            // Respond before reading the body, then discard the rest of it
            // while the response goes out. Closing at once would let the
            // client's body write fail with a broken pipe before it reads
            // the response, depending on timing.
            drop(field);
            tokio::spawn(async move {
                while let Ok(Some(mut rest)) = multipart.next_field().await {
                    while let Ok(Some(_)) = rest.chunk().await {}
                }
            });
            return json_error(
                AxumStatus::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the upload is over the limit",
            );
        }

        let mut hasher = Sha256::new();
        let mut size_bytes = 0u64;
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(error) => {
                    return json_error(AxumStatus::BAD_REQUEST, "bad_multipart", &error.to_string())
                }
            };
            size_bytes += chunk.len() as u64;
            hasher.update(&chunk);

            let pause = server
                .pause
                .lock()
                .unwrap()
                .take_if(|pause| size_bytes >= pause.after_bytes);
            if let Some(pause) = pause {
                pause.paused.send(()).await.unwrap();
                pause.release.notified().await;
            }
        }
        let sha256_hex = hex::encode(hasher.finalize());
        server.received.lock().unwrap().push(ReceivedField {
            field_name,
            file_name: file_name.clone(),
            content_type,
            size_bytes,
            sha256_hex: sha256_hex.clone(),
        });

        let file_name = file_name.unwrap_or_default();
        if file_name.ends_with(".txt") {
            return json_error(
                AxumStatus::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_format",
                "upload an audio file",
            );
        }
        let is_new = server.stored.lock().unwrap().insert(sha256_hex.clone());
        let status = if is_new {
            AxumStatus::CREATED
        } else {
            AxumStatus::OK
        };
        let title = Path::new(&file_name)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let track = serde_json::json!({
            "file_id": sha256_hex,
            "title": title,
            "artist": null,
            "album": null,
            "duration_ms": null,
            "size_bytes": size_bytes,
            "replicas": ["node1"],
        });
        (status, Json(track))
    }

    async fn start_server(server: TestServer) -> String {
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/music/upload", post(accept_upload))
            .layer(DefaultBodyLimit::disable())
            .with_state(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn sha256_of_file(path: &Path) -> String {
        let mut file = std::fs::File::open(path).unwrap();
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).unwrap();
        hex::encode(hasher.finalize())
    }

    #[tokio::test]
    async fn upload_sends_file_field_and_reports_each_result() {
        let server = TestServer::default();
        let url = start_server(server.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let song = dir.path().join("First Song.mp3");
        let notes = dir.path().join("notes.txt");
        std::fs::write(&song, b"ID3 pretend mp3 frames").unwrap();
        std::fs::write(&notes, b"not music").unwrap();
        let uploader = Uploader::new(&url).unwrap();
        uploader.check_reachable().await.unwrap();

        let files = [song.clone(), notes.clone(), song.clone()];
        let mut out = Vec::new();
        let summary = upload_all(&uploader, &files, &ProgressBar::hidden(), &mut out)
            .await
            .unwrap();

        let song_id = sha256_of_file(&song);
        let short_id = &song_id[..SHORT_FILE_ID_CHARS];
        let lines = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(
            lines,
            [
                format!("added  First Song ({short_id})"),
                format!(
                    "rejected {}: unsupported_format: upload an audio file",
                    notes.display()
                ),
                format!("exists First Song ({short_id})"),
            ]
        );
        assert_eq!(summary.added, 1);
        assert_eq!(summary.existing, 1);
        assert_eq!(summary.rejected, 1);
        assert_eq!(summary.exit_status(), EXIT_SOME_REJECTED);

        let received = server.received.lock().unwrap().clone();
        assert_eq!(received.len(), 3);
        let first = &received[0];
        assert_eq!(first.field_name.as_deref(), Some("file"));
        assert_eq!(first.file_name.as_deref(), Some("First Song.mp3"));
        assert_eq!(first.content_type.as_deref(), Some("audio/mpeg"));
        assert_eq!(first.sha256_hex, song_id);
        assert_eq!(received[1].file_name.as_deref(), Some("notes.txt"));
        assert_eq!(received[1].content_type.as_deref(), Some("text/plain"));
    }

    #[tokio::test]
    async fn large_file_is_streamed_from_disk() {
        const FILE_BYTES: u64 = 64 * 1024 * 1024;
        const PAUSE_AFTER_BYTES: u64 = 1024 * 1024;

        let (paused_tx, mut paused_rx) = mpsc::channel(1);
        let release = Arc::new(Notify::new());
        let server = TestServer::default();
        *server.pause.lock().unwrap() = Some(Pause {
            after_bytes: PAUSE_AFTER_BYTES,
            paused: paused_tx,
            release: release.clone(),
        });
        let url = start_server(server.clone()).await;

        // A byte pattern that differs per block, so a reordered or repeated
        // block changes the checksum.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long mix.flac");
        let mut writer = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for block in 0..(FILE_BYTES / 4096) {
            writer.write_all(&[(block % 251) as u8; 4096]).unwrap();
        }
        writer.into_inner().unwrap().sync_all().unwrap();

        let uploader = Uploader::new(&url).unwrap();
        let progress = ProgressBar::hidden();
        let upload = {
            let progress = progress.clone();
            let path = path.clone();
            tokio::spawn(async move { uploader.upload_file(&path, &progress).await })
        };

        // While the server pauses reading the body, the client can read ahead
        // only as far as the socket buffers reach, far less than the whole file.
        tokio::time::timeout(Duration::from_secs(30), paused_rx.recv())
            .await
            .expect("server did not receive the first megabyte within 30 s")
            .unwrap();
        let mut highest_position = 0;
        for _ in 0..40 {
            highest_position = highest_position.max(progress.position());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            highest_position < FILE_BYTES / 2,
            "client read {highest_position} of {FILE_BYTES} bytes while the server was paused"
        );
        release.notify_one();

        let outcome = upload.await.unwrap().unwrap();
        assert!(matches!(outcome, FileOutcome::Added(_)), "{outcome:?}");
        assert_eq!(progress.position(), FILE_BYTES);
        let received = server.received.lock().unwrap().clone();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].size_bytes, FILE_BYTES);
        assert_eq!(received[0].sha256_hex, sha256_of_file(&path));
        assert_eq!(received[0].file_name.as_deref(), Some("long mix.flac"));
    }

    #[tokio::test]
    async fn early_rejection_keeps_error_code() {
        // The server responds before reading the body, as a node does for an
        // upload over its size limit, so the client is still sending.
        let url = start_server(TestServer::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("too-large.flac");
        std::fs::write(&path, vec![7u8; 32 * 1024 * 1024]).unwrap();
        let uploader = Uploader::new(&url).unwrap();

        let outcome = uploader
            .upload_file(&path, &ProgressBar::hidden())
            .await
            .unwrap();

        assert_eq!(
            outcome,
            FileOutcome::Rejected {
                status: 413,
                code: "payload_too_large".to_string(),
                message: "the upload is over the limit".to_string(),
            }
        );
    }

    #[tokio::test]
    async fn unreachable_server_is_an_error() {
        // Binding and dropping a listener leaves a loopback port with
        // nothing behind it, so connecting is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let uploader = Uploader::new(&format!("http://{address}")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let song = dir.path().join("song.mp3");
        std::fs::write(&song, b"ID3").unwrap();

        let probe = uploader.check_reachable().await;
        let upload = uploader.upload_file(&song, &ProgressBar::hidden()).await;

        assert!(
            matches!(probe, Err(UploadError::Unreachable { .. })),
            "{probe:?}"
        );
        assert!(
            matches!(upload, Err(UploadError::Unreachable { .. })),
            "{upload:?}"
        );
    }

    #[test]
    fn all_failed_message_counts_files() {
        assert_eq!(all_failed_message(1), "the file was not accepted");
        assert_eq!(all_failed_message(3), "none of the 3 files was accepted");
    }

    #[tokio::test]
    async fn run_fails_when_every_file_is_rejected() {
        let url = start_server(TestServer::default()).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"one").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"two").unwrap();

        let result = run(UploadArgs {
            server: url,
            paths: vec![dir.path().to_path_buf()],
        })
        .await;

        let error = result.unwrap_err();
        assert!(
            matches!(
                error.downcast_ref(),
                Some(UploadError::AllFailed { files: 2 })
            ),
            "{error:#}"
        );
    }
}
