//! Pause points: named places on the write path where a debug build can be
//! made to wait, so that a test kills the process with SIGKILL inside a
//! precise window. The windows are after the replicas stored an upload but
//! before its commit, and after the commit but before the reply.
//!
//! `DISPOTIFY_PAUSE_AT` lists the points to hold at, comma separated. A
//! task that reaches a listed point logs it, creates the file
//! `paused-at-<point>` in the data directory for the test to wait on, and
//! never resumes; the rest of the node keeps running. Release builds
//! compile the points to nothing.

use std::path::Path;

/// Environment variable naming the pause points to hold at.
pub const PAUSE_AT_VAR: &str = "DISPOTIFY_PAUSE_AT";

/// After an upload's bytes are on a write quorum of replicas, before its
/// track is proposed to Raft.
pub const UPLOAD_BEFORE_COMMIT: &str = "upload-before-commit";

/// After an upload's track is committed and applied here, before the
/// response goes to the client.
pub const UPLOAD_BEFORE_REPLY: &str = "upload-before-reply";

/// Holds the calling task forever when `point` is listed in
/// [`PAUSE_AT_VAR`]; returns at once otherwise, and always in release
/// builds.
pub async fn pause_point(point: &'static str, data_dir: &Path) {
    if !cfg!(debug_assertions) || !is_listed(point, std::env::var(PAUSE_AT_VAR).ok().as_deref()) {
        return;
    }
    tracing::warn!(
        point,
        "holding at a pause point until the process is killed"
    );
    let marker = data_dir.join(format!("paused-at-{point}"));
    if let Err(error) = tokio::fs::write(&marker, b"").await {
        tracing::warn!(point, %error, "cannot create the pause point's marker file");
    }
    std::future::pending::<()>().await;
}

fn is_listed(point: &str, list: Option<&str>) -> bool {
    list.is_some_and(|list| list.split(',').any(|entry| entry.trim() == point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_points_hold() {
        assert!(is_listed(
            UPLOAD_BEFORE_COMMIT,
            Some("upload-before-commit")
        ));
        assert!(is_listed(
            UPLOAD_BEFORE_REPLY,
            Some("upload-before-commit, upload-before-reply")
        ));
        assert!(!is_listed(
            UPLOAD_BEFORE_REPLY,
            Some("upload-before-commit")
        ));
        assert!(!is_listed(UPLOAD_BEFORE_COMMIT, Some("")));
        assert!(!is_listed(UPLOAD_BEFORE_COMMIT, None));
    }

    #[tokio::test]
    async fn unlisted_point_returns_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The variable is not set by the test runner, so no point is listed.
        if std::env::var(PAUSE_AT_VAR).is_err() {
            pause_point(UPLOAD_BEFORE_COMMIT, dir.path()).await;
            assert!(!dir.path().join("paused-at-upload-before-commit").exists());
        }
    }
}
