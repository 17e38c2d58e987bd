//! Prometheus metrics of a node, served as text at `/metrics`.
//!
//! Metric names use the `dispotify_` prefix; byte counts and latencies are
//! in bytes and seconds, as Prometheus conventions ask.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `created`, `duplicate` or `rejected` for uploads; `local` or
    /// `remote` for streams.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// Every metric a node exports.
pub struct Metrics {
    registry: Registry,
    pub uploads: Family<OutcomeLabels, Counter>,
    pub upload_seconds: Histogram,
    pub streams: Family<OutcomeLabels, Counter>,
    pub stream_bytes: Counter,
    pub raft_term: Gauge,
    pub leader_changes: Counter,
    pub commit_seconds: Histogram,
    pub replicated_bytes: Counter,
    pub peer_rtt_seconds: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    pub peer_up: Family<PeerLabels, Gauge>,
    pub scrub_files: Counter,
    pub scrub_bytes: Counter,
    pub scrub_errors: Counter,
    pub corrupt_copies: Counter,
    pub repair_bytes: Counter,
    pub repaired_files: Counter,
    pub repair_failures: Counter,
    pub repair_queue: Gauge,
    pub under_replicated: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dispotify");
        let uploads = Family::<OutcomeLabels, Counter>::default();
        registry.register("uploads", "Uploads by outcome", uploads.clone());
        // 10 ms to about 20 min: small files on loopback up to 2 GiB over a slow link.
        let upload_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 17));
        registry.register(
            "upload_seconds",
            "Time from upload start to the answer",
            upload_seconds.clone(),
        );
        let streams = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "streams",
            "Stream requests by where the bytes came from",
            streams.clone(),
        );
        let stream_bytes = Counter::default();
        registry.register(
            "stream_bytes",
            "Bytes sent to stream clients",
            stream_bytes.clone(),
        );
        let raft_term = Gauge::default();
        registry.register("raft_term", "Current Raft term", raft_term.clone());
        let leader_changes = Counter::default();
        registry.register(
            "raft_leader_changes",
            "Leader changes seen by this node",
            leader_changes.clone(),
        );
        // 1 ms to about 8 s: a loopback commit up to the write timeout.
        let commit_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "raft_commit_seconds",
            "Time to commit and apply a write",
            commit_seconds.clone(),
        );
        let replicated_bytes = Counter::default();
        registry.register(
            "replicated_bytes",
            "Blob bytes pushed to other replicas",
            replicated_bytes.clone(),
        );
        let peer_rtt_seconds = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "peer_rtt_seconds",
            "Round trip of the last health-check ping",
            peer_rtt_seconds.clone(),
        );
        let peer_up = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peer_up",
            "1 when the last health check of a peer succeeded",
            peer_up.clone(),
        );
        let scrub_files = Counter::default();
        registry.register(
            "scrub_files",
            "Blobs verified by scrub",
            scrub_files.clone(),
        );
        let scrub_bytes = Counter::default();
        registry.register(
            "scrub_bytes",
            "Bytes verified by scrub",
            scrub_bytes.clone(),
        );
        let corrupt_copies = Counter::default();
        registry.register(
            "corrupt_copies",
            "Local copies found corrupt, by scrub or by a read, and quarantined",
            corrupt_copies.clone(),
        );
        let scrub_errors = Counter::default();
        registry.register(
            "scrub_errors",
            "Corrupt or unreadable copies found by scrub",
            scrub_errors.clone(),
        );
        let repair_bytes = Counter::default();
        registry.register(
            "repair_bytes",
            "Bytes this node sent as repair or rebalancing copies",
            repair_bytes.clone(),
        );
        let repaired_files = Counter::default();
        registry.register(
            "repaired_files",
            "Copies re-created by repairs this node led",
            repaired_files.clone(),
        );
        let repair_failures = Counter::default();
        registry.register(
            "repair_failures",
            "Repairs this node led that failed and were retried",
            repair_failures.clone(),
        );
        let repair_queue = Gauge::default();
        registry.register(
            "repair_queue",
            "Files waiting for repair at the leader's last scan",
            repair_queue.clone(),
        );
        let under_replicated = Gauge::default();
        registry.register("under_replicated_files", "Files with fewer good reachable copies than the replication factor, at the leader's last scan", under_replicated.clone());
        Metrics {
            registry,
            uploads,
            upload_seconds,
            streams,
            stream_bytes,
            raft_term,
            leader_changes,
            commit_seconds,
            replicated_bytes,
            peer_rtt_seconds,
            peer_up,
            scrub_files,
            scrub_bytes,
            scrub_errors,
            corrupt_copies,
            repair_bytes,
            repaired_files,
            repair_failures,
            repair_queue,
            under_replicated,
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    pub fn count_upload(&self, outcome: &'static str) {
        self.uploads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn count_stream(&self, outcome: &'static str) {
        self.streams.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn record_peer(&self, peer: &str, rtt: Option<std::time::Duration>) {
        let labels = PeerLabels {
            peer: peer.to_string(),
        };
        self.peer_up
            .get_or_create(&labels)
            .set(i64::from(rtt.is_some()));
        if let Some(rtt) = rtt {
            self.peer_rtt_seconds
                .get_or_create(&labels)
                .set(rtt.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_recorded_values() {
        let metrics = Metrics::new();
        metrics.count_upload("created");
        metrics.record_peer("node2", Some(std::time::Duration::from_millis(2)));
        metrics.raft_term.set(7);
        let text = metrics.render().unwrap();
        assert!(
            text.contains("dispotify_uploads_total{outcome=\"created\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dispotify_peer_rtt_seconds{peer=\"node2\"} 0.002"),
            "{text}"
        );
        assert!(text.contains("dispotify_raft_term 7"), "{text}");
    }
}
