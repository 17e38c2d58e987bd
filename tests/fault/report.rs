//! The checks after a fault run and the table of figures it prints.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::faults::{marks_fault, replicas_of, RaftLogOutcome, WATCH_INTERVAL};
use crate::harness::POLL_INTERVAL;
use crate::run::Run;
use crate::support::phase;
use crate::workload::{sha256_hex, Acked, OpKind, Outcome};

/// The error code with which a node on the minority side must reject writes.
const NO_QUORUM_CODE: &str = "no_quorum";

/// The outcome of a run: its figures and everything it found wrong.
pub struct RunReport {
    pub seed: u64,
    pub nodes: usize,
    pub rows: Vec<(String, String)>,
    pub violations: Vec<String>,
    pub invalid: Option<String>,
    /// Write failover samples, for runs that gather many.
    pub failover_writes: Vec<Duration>,
    pub fault_free_elections: u64,
}

impl RunReport {
    pub fn print(&self) {
        eprintln!();
        eprintln!(
            "fault run figures, seed {} ({} nodes):",
            self.seed, self.nodes
        );
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (name, value) in &self.rows {
            eprintln!("  {name:<width$}  {value}");
        }
        if let Some(reason) = &self.invalid {
            eprintln!("INVALID RUN: {reason}");
        }
        eprintln!("{} violation(s)", self.violations.len());
        for violation in &self.violations {
            eprintln!("  - {violation}");
        }
        eprintln!(
            "rerun with DISPOTIFY_FAULT_SEED={} DISPOTIFY_FAULT_NODES={}",
            self.seed, self.nodes
        );
    }

    /// Fails with every violation when the run found any or was invalid.
    pub fn ensure_passed(&self) -> anyhow::Result<()> {
        if let Some(reason) = &self.invalid {
            anyhow::bail!("seed {}: invalid run: {reason}", self.seed);
        }
        anyhow::ensure!(
            self.violations.is_empty(),
            "seed {}: {} violation(s):\n{}",
            self.seed,
            self.violations.len(),
            self.violations.join("\n")
        );
        Ok(())
    }
}

/// Runs every check after the faults, adding what fails to the run's
/// violations.
pub async fn check(run: &mut Run) {
    phase("check: nodes still up, bytes served, acknowledged uploads");
    for exit in run.fc.unexpected_exits() {
        run.violations.push(exit);
    }
    check_history(run);
    check_catalogs(run).await;

    phase("check: every file has R verified replicas");
    check_replicas(run).await;

    phase("check: damaged replicas were detected and repaired");
    run.finish_watchers().await;
    check_corruptions(run);

    phase("check: the minority side answered writes with 503 no_quorum");
    check_minority_writes(run);

    phase("check: all nodes agree, and a final write and read succeed on each");
    if let Err(reason) = run.fc.agreement().await {
        run.violations
            .push(format!("nodes disagree at the end: {reason}"));
    }
    check_final_ops(run).await;
}

fn check_history(run: &mut Run) {
    let history = run.fc.workload.history();
    for op in &history {
        if op.wrong_bytes() {
            run.violations.push(format!(
                "{:?} of {:016x} range {:?} from {} at {:.1} s served bytes that differ from the upload",
                op.kind,
                op.file.map_or(0, |f| f.key),
                op.range,
                run.fc.id(op.node),
                op.start_secs
            ));
        }
        if op.file_id_mismatch {
            run.violations.push(format!(
                "upload of {:016x} through {} returned a file id other than its SHA-256",
                op.file.map_or(0, |f| f.key),
                run.fc.id(op.node)
            ));
        }
        if op.content_range_mismatch {
            run.violations.push(format!(
                "read of {:016x} range {:?} from {} returned another Content-Range",
                op.file.map_or(0, |f| f.key),
                op.range,
                run.fc.id(op.node)
            ));
        }
        if op.outcome == Outcome::Timeout {
            run.violations.push(format!(
                "{:?} through {} started at {:.1} s got no answer in time (node expected to serve: {})",
                op.kind,
                run.fc.id(op.node),
                op.start_secs,
                op.node_expected_to_serve
            ));
        }
    }
}

/// Time the catalogs may take to converge after healing: entries
/// committed last may still be applying on some nodes.
const CATALOG_BOUND: Duration = Duration::from_secs(30);

/// Checks that every acknowledged file is in every node's catalog and that
/// the catalogs are equal, within [`CATALOG_BOUND`].
async fn check_catalogs(run: &mut Run) {
    let started = Instant::now();
    loop {
        let problems = catalog_problems(run).await;
        if problems.is_empty() {
            return;
        }
        if started.elapsed() > CATALOG_BOUND {
            for problem in problems {
                run.violations
                    .push(format!("{problem} {CATALOG_BOUND:?} after healing"));
            }
            return;
        }
        tokio::time::sleep(POLL_INTERVAL * 5).await;
    }
}

async fn catalog_problems(run: &Run) -> Vec<String> {
    let acked: BTreeSet<String> = run
        .fc
        .workload
        .acked()
        .into_iter()
        .map(|a| a.file_id)
        .collect();
    let mut problems = Vec::new();
    let mut first: Option<(String, Vec<String>)> = None;
    for node in 0..run.fc.len() {
        let ids = match run.fc.catalog_file_ids(node).await {
            Ok(ids) => ids,
            Err(error) => {
                problems.push(format!(
                    "cannot list the catalog of {}: {error:#}",
                    run.fc.id(node)
                ));
                continue;
            }
        };
        let present: BTreeSet<&String> = ids.iter().collect();
        let lost: Vec<&String> = acked.iter().filter(|id| !present.contains(id)).collect();
        if !lost.is_empty() {
            problems.push(format!(
                "{} acknowledged uploads are missing from the catalog of {}, e.g. {}",
                lost.len(),
                run.fc.id(node),
                lost[0]
            ));
        }
        match &first {
            None => first = Some((run.fc.id(node).to_string(), ids)),
            Some((other, other_ids)) if *other_ids != ids => {
                let theirs: BTreeSet<&String> = other_ids.iter().collect();
                let only_here = ids.iter().find(|id| !theirs.contains(id));
                let only_there = other_ids.iter().find(|id| !present.contains(id));
                problems.push(format!(
                    "the catalogs of {} ({} tracks) and {other} ({} tracks) differ, e.g. {:?} only on {}, {:?} only on {other},",
                    run.fc.id(node),
                    ids.len(),
                    other_ids.len(),
                    only_here,
                    run.fc.id(node),
                    only_there
                ))
            }
            Some(_) => {}
        }
    }
    problems
}

/// Checks that every node lists the same `replication_factor` replicas
/// for the file, none marked faulty, each with a copy on disk whose SHA-256
/// is the file id. Returns the replica nodes, or the reason when not.
async fn verified_replicas(run: &Run, acked: &Acked) -> Result<Vec<usize>, String> {
    let mut replicas: Option<Vec<String>> = None;
    for node in 0..run.fc.len() {
        let Some(track) = run.fc.track(node, &acked.file_id).await else {
            return Err(format!("{} has no track record", run.fc.id(node)));
        };
        let listed = replicas_of(&track);
        if let Some(faulty) = listed.iter().find(|r| marks_fault(&track, r)) {
            return Err(format!("{} marks {faulty}'s copy faulty", run.fc.id(node)));
        }
        match &replicas {
            None => replicas = Some(listed),
            Some(first) if *first != listed => {
                return Err(format!(
                    "{} lists {listed:?}, another node {first:?}",
                    run.fc.id(node)
                ))
            }
            Some(_) => {}
        }
    }
    let replicas = replicas.unwrap_or_default();
    let distinct: BTreeSet<&String> = replicas.iter().collect();
    if distinct.len() != run.fc.replication_factor {
        return Err(format!("replica set {replicas:?}"));
    }
    let mut nodes = Vec::new();
    for id in &replicas {
        let node = run
            .fc
            .index_of(id)
            .ok_or_else(|| format!("replica {id} is not a member"))?;
        let path = run.fc.blob_path(node, &acked.file_id);
        let on_disk = std::fs::read(&path).map(|b| sha256_hex(&b));
        if on_disk.as_deref().ok() != Some(acked.file_id.as_str()) {
            return Err(format!("{id}'s copy on disk is missing or damaged"));
        }
        nodes.push(node);
    }
    Ok(nodes)
}

async fn check_replicas(run: &mut Run) {
    let started = Instant::now();
    let bound = run.replication_bound();
    let mut pending = run.fc.workload.acked();
    let mut reasons = Vec::new();
    let mut verified = Vec::new();
    while !pending.is_empty() {
        reasons.clear();
        let mut still = Vec::new();
        for acked in pending {
            match verified_replicas(run, &acked).await {
                Ok(nodes) => verified.push((acked, nodes)),
                Err(reason) => {
                    reasons.push(format!("{}: {reason}", &acked.file_id[..12]));
                    still.push(acked);
                }
            }
        }
        pending = still;
        if pending.is_empty() || started.elapsed() > bound {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL * 10).await;
    }
    if !pending.is_empty() {
        run.violations.push(format!(
            "{} of {} acknowledged files lack {} verified replicas {bound:?} after the faults ended, e.g. {}",
            pending.len(),
            pending.len() + verified.len(),
            run.fc.replication_factor,
            reasons.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    // Each replica node must also stream the file's exact bytes.
    for (acked, nodes) in &verified {
        for &node in nodes {
            let op = run
                .fc
                .workload
                .read(OpKind::FinalRead, node, acked, None)
                .await;
            if op.outcome.status() != Some(200) {
                run.violations.push(format!(
                    "streaming {} from replica {} at the end: {}",
                    &acked.file_id[..12],
                    run.fc.id(node),
                    op.outcome
                ));
            } else if op.wrong_bytes() {
                run.violations.push(format!(
                    "replica {} streamed bytes of {} that differ from the upload",
                    run.fc.id(node),
                    &acked.file_id[..12]
                ));
            }
        }
    }
}

fn check_corruptions(run: &mut Run) {
    for record in &run.corruptions {
        let Ok(record) = record.lock() else { continue };
        if record.detected_secs.is_none() {
            run.violations.push(format!(
                "the damaged copy of {} on {} ({}) was never detected",
                &record.file_id[..12],
                record.node,
                record.damage
            ));
        }
        if record.repaired_secs.is_none() {
            run.violations.push(format!(
                "the damaged copy of {} on {} ({}) was not repaired to R verified replicas within {:?}",
                &record.file_id[..12],
                record.node,
                record.damage,
                crate::run::REPAIR_BOUND
            ));
        }
    }
}

fn check_minority_writes(run: &mut Run) {
    for (fault, op) in &run.minority_writes {
        let rejected_no_quorum =
            op.outcome.status() == Some(503) && op.outcome.error_code() == Some(NO_QUORUM_CODE);
        if !rejected_no_quorum {
            run.violations.push(format!(
                "fault {fault}: {:?} to {} on the minority side got {} after {:.1} s, expected 503 {NO_QUORUM_CODE}",
                op.kind,
                run.fc.id(op.node),
                op.outcome,
                op.end_secs - op.start_secs
            ));
        }
    }
}

/// Time a node may take to apply a committed track before a read of it
/// through that node counts as failed.
const APPLY_BOUND: Duration = Duration::from_secs(10);

async fn check_final_ops(run: &mut Run) {
    for node in 0..run.fc.len() {
        let file = run.fc.workload.new_file(64 * 1024);
        let op = run.fc.workload.upload(OpKind::FinalWrite, node, file).await;
        if !op.outcome.acknowledged_upload() {
            run.violations.push(format!(
                "final write through {}: {}",
                run.fc.id(node),
                op.outcome
            ));
            continue;
        }
        let acked = Acked {
            file,
            file_id: sha256_hex(&file.content()),
        };
        // Another node may apply the entry a moment later than the node
        // that acknowledged the upload.
        let reader = (node + 1) % run.fc.len();
        let started = Instant::now();
        while run.fc.track(reader, &acked.file_id).await.is_none()
            && started.elapsed() < APPLY_BOUND
        {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let read = run
            .fc
            .workload
            .read(OpKind::FinalRead, reader, &acked, Some((10, 5000)))
            .await;
        if read.outcome.status() != Some(206) || read.wrong_bytes() {
            run.violations.push(format!(
                "final read from {} of the file written through {}: {}{}",
                run.fc.id(reader),
                run.fc.id(node),
                read.outcome,
                if read.wrong_bytes() {
                    ", wrong bytes"
                } else {
                    ""
                }
            ));
        }
    }
}

/// Nearest-rank percentile of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn millis(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{} ms", d.as_millis()))
}

fn availability(run: &Run, kinds: &[OpKind]) -> String {
    let ops: Vec<_> = run
        .fc
        .workload
        .history()
        .into_iter()
        .filter(|op| kinds.contains(&op.kind) && op.fault.is_some() && op.node_expected_to_serve)
        .collect();
    if ops.is_empty() {
        return "- (no operations)".to_string();
    }
    let ok = ops
        .iter()
        .filter(|op| matches!(op.outcome.status(), Some(200 | 201 | 206)) && !op.wrong_bytes())
        .count();
    format!(
        "{:.1}% of {} to nodes expected to serve",
        100.0 * ok as f64 / ops.len() as f64,
        ops.len()
    )
}

/// Builds the table of figures of a finished run.
pub fn figures(run: &Run) -> RunReport {
    let mut rows = Vec::new();
    let history = run.fc.workload.history();
    let acked = run.fc.workload.acked().len();
    let reads = history
        .iter()
        .filter(|op| op.kind == OpKind::Read && op.sha256_served.is_some())
        .count();
    rows.push((
        "traffic".to_string(),
        format!(
            "{} operations, {acked} acknowledged uploads, {reads} verified reads",
            history.len()
        ),
    ));
    rows.push(("faults injected".to_string(), run.faults.len().to_string()));
    rows.push((
        "load average, start / end".to_string(),
        format!(
            "{} / {} (1 min, 2 cores)",
            run.load_average_start
                .map_or("-".to_string(), |l| format!("{l:.1}")),
            crate::run::load_average().map_or("-".to_string(), |l| format!("{l:.1}"))
        ),
    ));

    let mut writes: Vec<Duration> = run
        .faults
        .iter()
        .filter_map(|f| f.failover.and_then(|f| f.write))
        .collect();
    writes.sort();
    let mut elections: Vec<Duration> = run
        .faults
        .iter()
        .filter_map(|f| f.failover.and_then(|f| f.election))
        .collect();
    elections.sort();
    let failed = run
        .faults
        .iter()
        .filter(|f| f.failover.is_some_and(|f| f.write.is_none()))
        .count();
    rows.push((
        "failover to a write, p50 / p99".to_string(),
        format!(
            "{} / {} ({} samples, {failed} without a write in time)",
            millis(percentile(&writes, 50.0)),
            millis(percentile(&writes, 99.0)),
            writes.len()
        ),
    ));
    rows.push((
        "failover to a new leader, p50 / p99".to_string(),
        format!(
            "{} / {}",
            millis(percentile(&elections, 50.0)),
            millis(percentile(&elections, 99.0))
        ),
    ));
    rows.push((
        "write availability during faults".to_string(),
        availability(run, &[OpKind::Upload]),
    ));
    rows.push((
        "read availability during faults".to_string(),
        availability(run, &[OpKind::Read]),
    ));
    for record in &run.corruptions {
        let Ok(record) = record.lock() else { continue };
        let detect = record.detected_secs.map(|d| d - record.restarted_secs);
        let repair = record.repaired_secs.map(|r| r - record.restarted_secs);
        let size_gib = record.size_bytes as f64 / (1u64 << 30) as f64;
        let speed = match (record.detected_secs, record.repaired_secs) {
            // Seen in one look, the copy may have begun at any time since
            // the restart, so only the time from the restart bounds it.
            (Some(d), Some(r)) if r - d < WATCH_INTERVAL.as_secs_f64() => format!(
                "at most {:.0} s/GiB (from the restart; detection and repair were seen in one look)",
                (r - record.restarted_secs) / size_gib
            ),
            (Some(d), Some(r)) => format!("{:.1} s/GiB", (r - d) / size_gib),
            _ => "-".to_string(),
        };
        rows.push((
            format!("corrupt replica ({})", record.damage),
            format!(
                "detected after {}, repaired after {}, re-replication {speed} ({} bytes)",
                detect.map_or("never".to_string(), |d| format!("{d:.1} s")),
                repair.map_or("never".to_string(), |r| format!("{r:.1} s")),
                record.size_bytes
            ),
        ));
    }
    let mut recoveries: Vec<Duration> = run.faults.iter().filter_map(|f| f.recovery).collect();
    recoveries.sort();
    rows.push((
        "recovery after healing, p50 / max".to_string(),
        format!(
            "{} / {}",
            millis(percentile(&recoveries, 50.0)),
            millis(recoveries.last().copied())
        ),
    ));
    rows.push((
        "elections in fault-free periods".to_string(),
        format!(
            "{} term increments in {:.0} s",
            run.fault_free_elections, run.fault_free_secs
        ),
    ));
    rows.push((
        "elections while warming up".to_string(),
        format!("{} term increments", run.warmup_elections),
    ));
    for record in &run.raft_logs {
        let outcome = match &record.outcome {
            RaftLogOutcome::StartedCleanly => "started cleanly".to_string(),
            RaftLogOutcome::Refused { message } => format!("refused: {message}"),
            RaftLogOutcome::Crashed { .. } => "crashed".to_string(),
            RaftLogOutcome::Hung { .. } => "hung".to_string(),
        };
        rows.push((
            format!("raft log tail bit flips on {}", record.node),
            format!("{outcome} (bytes {:?})", record.offsets),
        ));
    }
    let network = run.fc.network.counters();
    rows.push((
        "proxy datagrams".to_string(),
        format!(
            "{} forwarded, {} dropped",
            network.forwarded, network.dropped
        ),
    ));
    for fault in &run.faults {
        rows.push((
            format!(
                "fault {} at {:.0}-{:.0} s",
                fault.index, fault.injected_secs, fault.healed_secs
            ),
            format!("{}: {}", fault.kind.label(), fault.detail),
        ));
    }
    RunReport {
        seed: run.config.seed,
        nodes: run.config.nodes,
        rows,
        violations: run.violations.clone(),
        invalid: run.invalid.clone(),
        failover_writes: writes,
        fault_free_elections: run.fault_free_elections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let values: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&values, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
