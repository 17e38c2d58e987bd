//! Locks and replica faults as the state machine applies them, on both
//! databases.

use super::{add_all, entry, file_id, track, TestDatabases};
use crate::catalog::{ApplyOutcome, Catalog, EntryClock};
use crate::model::{Command, Fence, Lock, ReplicaFault};

/// Applies `command` as the entry at `log_index` with leader time `at_ms`.
async fn apply_at(
    catalog: &Catalog,
    log_index: u64,
    at_ms: i64,
    command: Command,
) -> anyhow::Result<ApplyOutcome> {
    let clock = EntryClock { log_index, at_ms };
    Ok(catalog
        .apply(&entry(log_index), Some(&command), clock)
        .await?)
}

fn acquire(name: &str, owner: &str, ttl_ms: u64) -> Command {
    Command::AcquireLock {
        name: name.to_owned(),
        owner: owner.to_owned(),
        ttl_ms,
    }
}

fn release(name: &str, owner: &str, token: u64) -> Command {
    Command::ReleaseLock {
        name: name.to_owned(),
        owner: owner.to_owned(),
        token,
    }
}

pub(super) async fn locks_grant_renew_expire_and_release(
    databases: &mut TestDatabases,
) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;

    println!("phase: a free lock is granted with the entry's index as token");
    let outcome = apply_at(&catalog, 10, 1_000, acquire("backup", "alice", 5_000)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::LockGranted {
            name: "backup".to_owned(),
            token: 10,
            expires_at_ms: 6_000
        }
    );

    println!("phase: another owner is refused while the lock is live");
    let outcome = apply_at(&catalog, 11, 5_999, acquire("backup", "bob", 5_000)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::LockHeld {
            name: "backup".to_owned(),
            owner: "alice".to_owned(),
            expires_at_ms: 6_000
        }
    );

    println!("phase: the owner renews and keeps its token");
    let outcome = apply_at(&catalog, 12, 5_000, acquire("backup", "alice", 5_000)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::LockGranted {
            name: "backup".to_owned(),
            token: 10,
            expires_at_ms: 10_000
        }
    );

    println!("phase: after expiry, by entry time, another owner gets a new token");
    let outcome = apply_at(&catalog, 13, 10_000, acquire("backup", "bob", 1_000)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::LockGranted {
            name: "backup".to_owned(),
            token: 13,
            expires_at_ms: 11_000
        }
    );

    println!("phase: the former owner cannot release, nor can a stale token");
    for (index, command) in [
        (14, release("backup", "alice", 10)),
        (15, release("backup", "bob", 10)),
    ] {
        let outcome = apply_at(&catalog, index, 10_500, command).await?;
        assert_eq!(
            outcome,
            ApplyOutcome::LockNotHeld {
                name: "backup".to_owned()
            }
        );
    }
    assert_eq!(
        catalog.locks().await?,
        [Lock {
            name: "backup".to_owned(),
            owner: "bob".to_owned(),
            token: 13,
            expires_at_ms: 11_000
        }]
    );

    println!("phase: the owner releases with its token and the lock is free");
    let outcome = apply_at(&catalog, 16, 10_600, release("backup", "bob", 13)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::LockReleased {
            name: "backup".to_owned()
        }
    );
    assert_eq!(catalog.locks().await?, []);
    let outcome = apply_at(&catalog, 17, 10_700, acquire("backup", "carol", 1)).await?;
    assert!(
        matches!(outcome, ApplyOutcome::LockGranted { token: 17, .. }),
        "{outcome:?}"
    );

    println!("phase: an expired lock cannot be released either");
    let outcome = apply_at(&catalog, 18, 10_701, release("backup", "carol", 17)).await?;
    assert!(
        matches!(outcome, ApplyOutcome::LockNotHeld { .. }),
        "{outcome:?}"
    );
    Ok(())
}

pub(super) async fn fenced_set_replicas_needs_the_current_token(
    databases: &mut TestDatabases,
) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    add_all(&catalog, vec![track(1, "song")]).await?;
    let lock = "repair/1";
    let set = |replicas: &[&str], token: u64| Command::SetReplicas {
        file_id: file_id(1),
        replicas: replicas.iter().map(|n| n.to_string()).collect(),
        verified: Vec::new(),
        fence: Some(Fence {
            lock: lock.to_owned(),
            token,
        }),
    };

    println!("phase: without the lock a fenced write changes nothing");
    let outcome = apply_at(&catalog, 20, 1_000, set(&["n4"], 20)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::LockNotHeld {
            name: lock.to_owned()
        }
    );

    println!("phase: holder 1 takes the lock, lets it expire, holder 2 takes it");
    apply_at(&catalog, 21, 2_000, acquire(lock, "leader-a", 1_000)).await?;
    apply_at(&catalog, 22, 3_500, acquire(lock, "leader-b", 10_000)).await?;

    println!("phase: the stale token is rejected, the current one applies");
    let outcome = apply_at(&catalog, 23, 4_000, set(&["n5"], 21)).await?;
    assert!(
        matches!(outcome, ApplyOutcome::LockNotHeld { .. }),
        "{outcome:?}"
    );
    let outcome = apply_at(&catalog, 24, 4_100, set(&["n6", "n2"], 22)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::ReplicasSet {
            file_id: file_id(1)
        }
    );
    let stored = catalog.track(&file_id(1)).await?;
    assert_eq!(
        stored.map(|t| t.replicas),
        Some(vec!["n6".into(), "n2".into()])
    );
    Ok(())
}

pub(super) async fn replica_faults_are_recorded_and_cleared(
    databases: &mut TestDatabases,
) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    add_all(&catalog, vec![track(1, "one"), track(2, "two")]).await?;
    let report = |file: u64, node: &str, fault| Command::ReportReplicaFault {
        file_id: file_id(file),
        node_id: node.to_owned(),
        fault,
    };

    println!("phase: faults are recorded per copy; a later report replaces one");
    apply_at(&catalog, 10, 1_000, report(1, "n1", ReplicaFault::Missing)).await?;
    apply_at(&catalog, 11, 2_000, report(1, "n1", ReplicaFault::Corrupt)).await?;
    apply_at(&catalog, 12, 3_000, report(1, "n2", ReplicaFault::Corrupt)).await?;
    apply_at(&catalog, 13, 4_000, report(2, "n3", ReplicaFault::Missing)).await?;
    let faults = catalog.replica_faults(&file_id(1)).await?;
    let summary: Vec<_> = faults
        .iter()
        .map(|f| (f.node_id.as_str(), f.fault, f.reported_at_ms))
        .collect();
    assert_eq!(
        summary,
        [
            ("n1", ReplicaFault::Corrupt, 2_000),
            ("n2", ReplicaFault::Corrupt, 3_000)
        ]
    );

    println!("phase: a fault against an unknown file changes nothing");
    let outcome = apply_at(&catalog, 14, 5_000, report(9, "n1", ReplicaFault::Missing)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::FaultTrackNotFound {
            file_id: file_id(9)
        }
    );
    assert_eq!(catalog.all_replica_faults().await?.len(), 3);

    println!("phase: SetReplicas clears faults of dropped and verified nodes only");
    let command = Command::SetReplicas {
        file_id: file_id(1),
        replicas: vec!["n2".into(), "n3".into(), "n4".into()],
        verified: vec!["n4".into()],
        fence: None,
    };
    apply_at(&catalog, 15, 6_000, command).await?;
    let left: Vec<_> = catalog
        .all_replica_faults()
        .await?
        .into_iter()
        .map(|f| (f.file_id, f.node_id))
        .collect();
    assert_eq!(
        left,
        [(file_id(1), "n2".to_owned()), (file_id(2), "n3".to_owned())]
    );
    let command = Command::SetReplicas {
        file_id: file_id(1),
        replicas: vec!["n2".into(), "n3".into(), "n4".into()],
        verified: vec!["n2".into()],
        fence: None,
    };
    apply_at(&catalog, 16, 7_000, command).await?;
    assert_eq!(catalog.replica_faults(&file_id(1)).await?, []);
    Ok(())
}
