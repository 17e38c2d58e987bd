//! Catalog tests. Every test function runs twice, against SQLite (a file in
//! a temporary directory) and against PostgreSQL (a database created for
//! the test on the server named by `DISPOTIFY_TEST_POSTGRES_URL` and dropped
//! afterwards). Without that variable the PostgreSQL variants print that
//! they were skipped, unless `DISPOTIFY_REQUIRE_POSTGRES=1` makes them fail.
//! `.ci/postgres.sh start` starts a suitable server.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::Connection;

use super::rows::column;
use super::*;
use crate::model::{Command, Cover, Manifest, Track, TrackTags};

const POSTGRES_URL_VAR: &str = "DISPOTIFY_TEST_POSTGRES_URL";
const REQUIRE_POSTGRES_VAR: &str = "DISPOTIFY_REQUIRE_POSTGRES";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sqlite,
    Postgres,
}

/// Creates fresh catalogs for one test and removes them afterwards.
struct TestDatabases {
    test_name: &'static str,
    directory: tempfile::TempDir,
    postgres_admin_url: Option<String>,
    postgres_databases: Vec<String>,
    catalogs: Vec<Catalog>,
}

static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDatabases {
    /// Returns `None` when the backend is unavailable and not required.
    fn new(kind: Kind, test_name: &'static str) -> anyhow::Result<Option<TestDatabases>> {
        let postgres_admin_url = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => match std::env::var(POSTGRES_URL_VAR) {
                Ok(url) if !url.is_empty() => Some(url),
                _ if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") => {
                    bail!("{REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is not set; run .ci/postgres.sh start")
                }
                _ => {
                    println!(
                        "skipped {test_name} on postgres: {POSTGRES_URL_VAR} is not set \
                         (.ci/postgres.sh start prints a server url for it)"
                    );
                    return Ok(None);
                }
            },
        };
        Ok(Some(TestDatabases {
            test_name,
            directory: tempfile::tempdir()?,
            postgres_admin_url,
            postgres_databases: Vec::new(),
            catalogs: Vec::new(),
        }))
    }

    /// Creates an empty database and returns its URL.
    async fn fresh_url(&mut self) -> anyhow::Result<String> {
        let number = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let Some(admin_url) = &self.postgres_admin_url else {
            let path = self.directory.path().join(format!("catalog-{number}.db"));
            return Ok(format!("sqlite://{}", path.display()));
        };

        let name: String = format!(
            "dispotify_{}_{}_{}",
            std::process::id(),
            number,
            self.test_name
        )
        .chars()
        .take(63)
        .collect();
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .context("connect to the postgres test server")?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .with_context(|| format!("create database {name}"))?;
        admin.close().await?;
        self.postgres_databases.push(name.clone());
        Ok(replace_database(admin_url, &name))
    }

    async fn connect(&mut self, url: &str) -> anyhow::Result<Catalog> {
        let catalog = Catalog::connect(url).await?;
        self.catalogs.push(catalog.clone());
        Ok(catalog)
    }

    async fn fresh_catalog(&mut self) -> anyhow::Result<Catalog> {
        let url = self.fresh_url().await?;
        self.connect(&url).await
    }

    async fn cleanup(self) {
        for catalog in &self.catalogs {
            catalog.close().await;
        }
        let Some(admin_url) = &self.postgres_admin_url else {
            return;
        };
        let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await else {
            eprintln!(
                "could not connect to drop the test databases {:?}",
                self.postgres_databases
            );
            return;
        };
        for name in &self.postgres_databases {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(error) = sqlx::query(&drop).execute(&mut admin).await {
                eprintln!("could not drop test database {name}: {error}");
            }
        }
    }
}

/// Replaces the database name at the end of a PostgreSQL URL.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

type TestBody = for<'a> fn(&'a mut TestDatabases) -> BoxFuture<'a, anyhow::Result<()>>;

async fn run(kind: Kind, test_name: &'static str, body: TestBody) -> anyhow::Result<()> {
    let Some(mut databases) = TestDatabases::new(kind, test_name)? else {
        return Ok(());
    };
    println!("running {test_name} on {kind:?}");
    let result = AssertUnwindSafe(body(&mut databases)).catch_unwind().await;
    databases.cleanup().await;
    match result {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Declares each listed test function once per database.
macro_rules! on_both_databases {
    ($($(#[$attribute:meta])* $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                $(#[$attribute])*
                async fn $name() -> anyhow::Result<()> {
                    super::run(super::Kind::Sqlite, stringify!($name), |databases| {
                        Box::pin(super::$name(databases))
                    })
                    .await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                $(#[$attribute])*
                async fn $name() -> anyhow::Result<()> {
                    super::run(super::Kind::Postgres, stringify!($name), |databases| {
                        Box::pin(super::$name(databases))
                    })
                    .await
                }
            )*
        }
    };
}

on_both_databases!(
    add_track_reads_back_everything,
    add_track_twice_changes_nothing,
    set_replicas_replaces_the_list,
    applied_state_shares_the_transaction,
    apply_batch_is_all_or_nothing,
    reconnect_keeps_data,
    search_ignores_case_and_accents,
    search_matches_word_prefixes,
    search_treats_wildcards_as_text,
    search_ranks_title_first,
    search_pages_with_totals,
    list_tracks_sorts_in_every_order,
    list_tracks_pages_with_totals,
    page_limits_clamp_and_reject,
    snapshot_round_trip_is_identical,
    snapshot_of_empty_catalog_clears,
    snapshot_rejects_bad_input,
    locks_grant_renew_expire_and_release,
    fenced_set_replicas_needs_the_current_token,
    replica_faults_are_recorded_and_cleared,
    #[ignore = "loads 100k tracks; run with --ignored to measure"]
    pages_stay_fast_at_scale,
);

mod locks;
use locks::{
    fenced_set_replicas_needs_the_current_token, locks_grant_renew_expire_and_release,
    replica_faults_are_recorded_and_cleared,
};

// --- Test data ---

fn file_id(n: u64) -> String {
    format!("{n:064x}")
}

/// The clock of the entry at `index`, one second of leader time apart.
fn at(index: u64) -> EntryClock {
    EntryClock {
        log_index: index,
        at_ms: index as i64 * 1_000,
    }
}

fn entry(index: u64) -> AppliedState {
    AppliedState {
        last_applied: Some(format!(r#"{{"term":1,"index":{index}}}"#)),
        last_membership: format!(r#"{{"log_id":{index},"voters":["n1","n2","n3"]}}"#),
    }
}

/// Builds a track with every tag set. Tests overwrite the fields they compare.
fn track(n: u64, title: &str) -> Track {
    Track {
        file_id: file_id(n),
        file_name: format!("upload {n}.flac"),
        title: title.to_owned(),
        tags: TrackTags {
            title: Some(title.to_owned()),
            artist: Some("Some Artist".to_owned()),
            album: Some("Some Album".to_owned()),
            album_artist: Some("Some Album Artist".to_owned()),
            track_number: Some(3),
            track_total: Some(12),
            disc_number: Some(1),
            disc_total: Some(2),
            year: Some(1997),
            genre: Some("Electronic".to_owned()),
            duration_ms: Some(245_000),
            sample_rate: Some(44_100),
            channels: Some(2),
            bitrate_kbps: Some(900),
        },
        format: "flac".to_owned(),
        content_type: "audio/flac".to_owned(),
        size_bytes: 1_000 + n,
        sha256: file_id(n),
        has_cover: false,
        replicas: vec!["n1".to_owned(), "n2".to_owned(), "n3".to_owned()],
        added_at_ms: 1_700_000_000_000 + i64::try_from(n).unwrap_or(0),
    }
}

fn tagged(n: u64, title: &str, artist: Option<&str>, album: Option<&str>) -> Track {
    let mut track = track(n, title);
    track.tags.artist = artist.map(str::to_owned);
    track.tags.album = album.map(str::to_owned);
    track.tags.album_artist = None;
    track
}

fn manifest(n: u64) -> Manifest {
    let byte = |i: u64| u8::try_from((n + i) % 251).unwrap_or(0);
    Manifest {
        size_bytes: 1_000 + n,
        sha256: [byte(0); 32],
        chunk_size: 512,
        chunk_hashes: vec![[byte(1); 32], [byte(2); 32]],
    }
}

fn cover(n: u64) -> Cover {
    Cover {
        mime: "image/png".to_owned(),
        data: (0..300)
            .map(|i| u8::try_from((n + i) % 256).unwrap_or(0))
            .collect(),
    }
}

fn add_command(track: Track, cover: Option<Cover>) -> Command {
    let n = u64::from_str_radix(&track.file_id, 16).unwrap_or(0);
    Command::AddTrack {
        track,
        manifest: manifest(n),
        cover,
    }
}

/// Adds tracks in one batch, numbering entries from 1.
async fn add_all(catalog: &Catalog, tracks: Vec<Track>) -> anyhow::Result<()> {
    let entries: Vec<_> = tracks
        .into_iter()
        .enumerate()
        .map(|(index, track)| {
            (
                entry(index as u64 + 1),
                Some(add_command(track, None)),
                at(index as u64 + 1),
            )
        })
        .collect();
    let outcomes = catalog.apply_batch(&entries).await?;
    ensure!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, ApplyOutcome::TrackAdded { .. })),
        "not every track was new: {outcomes:?}"
    );
    Ok(())
}

async fn search_titles(catalog: &Catalog, query: &str) -> anyhow::Result<Vec<String>> {
    let page = catalog.search(query, MAX_PAGE_LIMIT, 0).await?;
    Ok(page.items.into_iter().map(|track| track.title).collect())
}

fn list(sort: TrackSort, order: SortOrder, limit: i64, offset: i64) -> TrackQuery {
    TrackQuery {
        limit,
        offset,
        sort,
        order,
    }
}

async fn all_titles(
    catalog: &Catalog,
    sort: TrackSort,
    order: SortOrder,
) -> anyhow::Result<Vec<String>> {
    let page = catalog
        .list_tracks(&list(sort, order, MAX_PAGE_LIMIT, 0))
        .await?;
    Ok(page.items.into_iter().map(|track| track.title).collect())
}

/// Everything a catalog returns, for comparing two catalogs.
#[derive(Debug, PartialEq)]
struct Contents {
    applied: Option<AppliedState>,
    tracks: Vec<Track>,
    manifests: Vec<Option<Manifest>>,
    covers: Vec<Option<Cover>>,
    replica_sets: Vec<ReplicaSet>,
    search: Vec<String>,
    locks: Vec<crate::model::Lock>,
    faults: Vec<FaultRecord>,
}

async fn contents(catalog: &Catalog) -> anyhow::Result<Contents> {
    let mut tracks = Vec::new();
    let mut offset = 0;
    loop {
        let query = list(
            TrackSort::AddedAt,
            SortOrder::Ascending,
            MAX_PAGE_LIMIT,
            offset,
        );
        let page = catalog.list_tracks(&query).await?;
        if page.items.is_empty() {
            break;
        }
        offset += i64::try_from(page.items.len())?;
        tracks.extend(page.items);
    }
    let mut manifests = Vec::new();
    let mut covers = Vec::new();
    for track in &tracks {
        manifests.push(catalog.manifest(&track.file_id).await?);
        covers.push(catalog.cover(&track.file_id).await?);
    }
    let search = catalog
        .search("bjork", MAX_PAGE_LIMIT, 0)
        .await?
        .items
        .into_iter()
        .map(|track| track.file_id)
        .collect();
    Ok(Contents {
        applied: catalog.applied_state().await?,
        tracks,
        manifests,
        covers,
        replica_sets: catalog
            .replica_sets(None, MAX_REPLICA_SETS_PAGE_LIMIT)
            .await?,
        search,
        locks: catalog.locks().await?,
        faults: catalog.all_replica_faults().await?,
    })
}

// --- Apply ---

async fn add_track_reads_back_everything(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    ensure!(
        catalog.applied_state().await?.is_none(),
        "fresh catalog has an applied state"
    );

    println!("phase: a fully tagged track with a cover reads back unchanged");
    let mut full = track(1, "Jóga");
    full.has_cover = true;
    let command = add_command(full.clone(), Some(cover(1)));
    let outcome = catalog.apply(&entry(1), Some(&command), at(1)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::TrackAdded {
            file_id: file_id(1)
        }
    );
    assert_eq!(catalog.track(&file_id(1)).await?, Some(full));
    assert_eq!(catalog.manifest(&file_id(1)).await?, Some(manifest(1)));
    assert_eq!(catalog.cover(&file_id(1)).await?, Some(cover(1)));
    assert_eq!(catalog.applied_state().await?, Some(entry(1)));

    println!("phase: an untagged empty file without a cover reads back unchanged");
    let mut bare = track(2, "untitled");
    bare.tags = TrackTags::default();
    bare.size_bytes = 0;
    bare.replicas = Vec::new();
    let empty_manifest = Manifest {
        size_bytes: 0,
        sha256: [7; 32],
        chunk_size: 1 << 20,
        chunk_hashes: Vec::new(),
    };
    let command = Command::AddTrack {
        track: bare.clone(),
        manifest: empty_manifest.clone(),
        cover: None,
    };
    catalog.apply(&entry(2), Some(&command), at(2)).await?;
    assert_eq!(catalog.track(&file_id(2)).await?, Some(bare));
    assert_eq!(catalog.manifest(&file_id(2)).await?, Some(empty_manifest));
    assert_eq!(catalog.cover(&file_id(2)).await?, None);

    println!("phase: has_cover follows the cover carried by the command");
    let mut claims_cover = track(3, "claims a cover");
    claims_cover.has_cover = true;
    catalog
        .apply(&entry(3), Some(&add_command(claims_cover, None)), at(3))
        .await?;
    let stored = catalog
        .track(&file_id(3))
        .await?
        .context("track 3 missing")?;
    assert!(!stored.has_cover);

    println!("phase: unknown file ids read as absent");
    assert_eq!(catalog.track(&file_id(99)).await?, None);
    assert_eq!(catalog.manifest(&file_id(99)).await?, None);
    assert_eq!(catalog.cover(&file_id(99)).await?, None);
    assert_eq!(catalog.track_count().await?, 3);

    println!("phase: values that do not fit a column are rejected");
    let mut huge = track(4, "huge");
    huge.size_bytes = u64::MAX;
    let error = catalog
        .apply(&entry(4), Some(&add_command(huge, None)), at(4))
        .await;
    assert!(
        matches!(
            error,
            Err(CatalogError::ValueOutOfRange {
                field: "size_bytes",
                ..
            })
        ),
        "{error:?}"
    );
    Ok(())
}

async fn add_track_twice_changes_nothing(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    let original = track(1, "First");
    let outcome = catalog
        .apply(
            &entry(1),
            Some(&add_command(original.clone(), Some(cover(1)))),
            at(1),
        )
        .await?;
    assert_eq!(
        outcome,
        ApplyOutcome::TrackAdded {
            file_id: file_id(1)
        }
    );

    println!("phase: the same file id with other data changes nothing");
    let mut changed = track(1, "Second");
    changed.replicas = vec!["n9".to_owned()];
    let outcome = catalog
        .apply(&entry(2), Some(&add_command(changed, None)), at(2))
        .await?;
    assert_eq!(
        outcome,
        ApplyOutcome::TrackAlreadyPresent {
            file_id: file_id(1)
        }
    );

    let mut expected = original;
    expected.has_cover = true;
    assert_eq!(catalog.track(&file_id(1)).await?, Some(expected));
    assert_eq!(catalog.cover(&file_id(1)).await?, Some(cover(1)));
    assert_eq!(catalog.track_count().await?, 1);
    assert_eq!(
        search_titles(&catalog, "second").await?,
        Vec::<String>::new()
    );
    assert_eq!(search_titles(&catalog, "first").await?, ["First"]);

    println!("phase: the applied state still advances");
    assert_eq!(catalog.applied_state().await?, Some(entry(2)));
    Ok(())
}

async fn set_replicas_replaces_the_list(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    add_all(&catalog, (1..=5).map(|n| track(n, "t")).collect()).await?;

    println!("phase: SetReplicas replaces the list in the given order");
    let replicas = vec!["n4".to_owned(), "n2".to_owned()];
    let command = Command::SetReplicas {
        file_id: file_id(3),
        replicas: replicas.clone(),
        verified: Vec::new(),
        fence: None,
    };
    let outcome = catalog.apply(&entry(10), Some(&command), at(10)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::ReplicasSet {
            file_id: file_id(3)
        }
    );
    let stored = catalog
        .track(&file_id(3))
        .await?
        .context("track 3 missing")?;
    assert_eq!(stored.replicas, replicas);
    let other = catalog
        .track(&file_id(2))
        .await?
        .context("track 2 missing")?;
    assert_eq!(other.replicas, ["n1", "n2", "n3"]);

    println!("phase: an unknown file id changes nothing but advances the state");
    let command = Command::SetReplicas {
        file_id: file_id(42),
        replicas: vec!["n1".to_owned()],
        verified: Vec::new(),
        fence: None,
    };
    let outcome = catalog.apply(&entry(11), Some(&command), at(11)).await?;
    assert_eq!(
        outcome,
        ApplyOutcome::ReplicasTrackNotFound {
            file_id: file_id(42)
        }
    );
    assert_eq!(catalog.applied_state().await?, Some(entry(11)));
    assert_eq!(catalog.track(&file_id(42)).await?, None);

    println!("phase: replica sets page in file id order");
    let first = catalog.replica_sets(None, 2).await?;
    let ids: Vec<_> = first.iter().map(|set| set.file_id.clone()).collect();
    assert_eq!(ids, [file_id(1), file_id(2)]);
    let rest = catalog.replica_sets(Some(&file_id(2)), 10).await?;
    let ids: Vec<_> = rest.iter().map(|set| set.file_id.clone()).collect();
    assert_eq!(ids, [file_id(3), file_id(4), file_id(5)]);
    assert_eq!(rest[0].replicas, replicas);
    assert!(catalog
        .replica_sets(Some(&file_id(5)), 10)
        .await?
        .is_empty());
    Ok(())
}

async fn applied_state_shares_the_transaction(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;

    println!("phase: an entry without a command records the state");
    let membership_only = AppliedState {
        last_applied: None,
        last_membership: r#"{"voters":["n1"]}"#.to_owned(),
    };
    assert_eq!(
        catalog.apply(&membership_only, None, at(0)).await?,
        ApplyOutcome::NoCommand
    );
    assert_eq!(catalog.applied_state().await?, Some(membership_only));
    catalog.apply(&entry(5), None, at(5)).await?;
    assert_eq!(catalog.applied_state().await?, Some(entry(5)));

    println!("phase: a failing command leaves the previous state");
    let mut bad = track(1, "bad");
    bad.tags.duration_ms = Some(u64::MAX);
    let result = catalog
        .apply(&entry(6), Some(&add_command(bad, None)), at(6))
        .await;
    assert!(
        matches!(result, Err(CatalogError::ValueOutOfRange { .. })),
        "{result:?}"
    );
    assert_eq!(catalog.applied_state().await?, Some(entry(5)));
    assert_eq!(catalog.track_count().await?, 0);

    println!("phase: a command and its state commit together");
    catalog
        .apply(&entry(6), Some(&add_command(track(1, "good"), None)), at(6))
        .await?;
    assert_eq!(catalog.applied_state().await?, Some(entry(6)));
    assert_eq!(catalog.track_count().await?, 1);
    Ok(())
}

async fn apply_batch_is_all_or_nothing(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    assert_eq!(catalog.apply_batch(&[]).await?, Vec::new());
    assert_eq!(catalog.applied_state().await?, None);

    println!("phase: a batch applies in log order and stores the last state");
    let entries = vec![
        (entry(1), Some(add_command(track(1, "one"), None)), at(1)),
        (entry(2), None, at(2)),
        (
            entry(3),
            Some(Command::SetReplicas {
                file_id: file_id(1),
                replicas: vec!["n7".to_owned()],
                verified: Vec::new(),
                fence: None,
            }),
            at(3),
        ),
        (
            entry(4),
            Some(add_command(track(1, "one again"), None)),
            at(4),
        ),
    ];
    let outcomes = catalog.apply_batch(&entries).await?;
    assert_eq!(
        outcomes,
        [
            ApplyOutcome::TrackAdded {
                file_id: file_id(1)
            },
            ApplyOutcome::NoCommand,
            ApplyOutcome::ReplicasSet {
                file_id: file_id(1)
            },
            ApplyOutcome::TrackAlreadyPresent {
                file_id: file_id(1)
            },
        ]
    );
    assert_eq!(catalog.applied_state().await?, Some(entry(4)));
    let stored = catalog
        .track(&file_id(1))
        .await?
        .context("track 1 missing")?;
    assert_eq!(stored.replicas, ["n7"]);

    println!("phase: a failing entry rolls back the whole batch");
    let mut bad = track(3, "bad");
    bad.size_bytes = u64::MAX;
    let entries = vec![
        (entry(5), Some(add_command(track(2, "two"), None)), at(5)),
        (entry(6), Some(add_command(bad, None)), at(6)),
    ];
    let result = catalog.apply_batch(&entries).await;
    assert!(
        matches!(result, Err(CatalogError::ValueOutOfRange { .. })),
        "{result:?}"
    );
    assert_eq!(catalog.track(&file_id(2)).await?, None);
    assert_eq!(catalog.applied_state().await?, Some(entry(4)));
    Ok(())
}

async fn reconnect_keeps_data(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let url = databases.fresh_url().await?;
    let catalog = databases.connect(&url).await?;
    catalog
        .apply(&entry(1), Some(&add_command(track(1, "kept"), None)), at(1))
        .await?;
    catalog.close().await;

    println!("phase: a second connection runs no migration twice and sees the data");
    let reopened = databases.connect(&url).await?;
    assert_eq!(reopened.applied_state().await?, Some(entry(1)));
    assert_eq!(search_titles(&reopened, "kept").await?, ["kept"]);
    Ok(())
}

// --- Search ---

async fn search_ignores_case_and_accents(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    add_all(
        &catalog,
        vec![
            tagged(1, "Jóga", Some("Björk"), Some("Homogenic")),
            tagged(2, "Halo", Some("Beyoncé"), Some("I Am... Sasha Fierce")),
            tagged(3, "Mönchengladbach Nights", None, None),
            tagged(4, "Eple", Some("Røyksopp"), Some("Melody A.M.")),
            tagged(5, "Unrelated", Some("Other"), None),
        ],
    )
    .await?;

    for (query, expected) in [
        ("bjork", "Jóga"),
        ("BJÖRK", "Jóga"),
        ("Björk", "Jóga"),
        ("BEYONCE", "Halo"),
        ("beyoncé", "Halo"),
        ("monchengladbach", "Mönchengladbach Nights"),
        ("MÖNCHENGLADBACH", "Mönchengladbach Nights"),
        ("royksopp", "Eple"),
        ("JOGA", "Jóga"),
    ] {
        assert_eq!(
            search_titles(&catalog, query).await?,
            [expected],
            "query {query:?}"
        );
    }
    Ok(())
}

async fn search_matches_word_prefixes(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    let mut named = tagged(3, "Intro", Some("Nobody"), None);
    named.file_name = "Secret Demo Tape.mp3".to_owned();
    let mut by_album_artist = tagged(4, "Track Four", Some("Guest"), Some("Compilation"));
    by_album_artist.tags.album_artist = Some("Various Composers".to_owned());
    add_all(
        &catalog,
        vec![
            tagged(1, "Jóga", Some("Björk"), Some("Homogenic")),
            tagged(2, "Hunter", Some("Björk"), Some("Homogenic")),
            named,
            by_album_artist,
            tagged(5, "Homeward", Some("Someone"), None),
        ],
    )
    .await?;

    println!("phase: a query word matches the start of a word");
    assert_eq!(search_titles(&catalog, "bj").await?.len(), 2);
    assert_eq!(search_titles(&catalog, "hun").await?, ["Hunter"]);
    assert_eq!(
        search_titles(&catalog, "unter").await?,
        Vec::<String>::new()
    );

    println!("phase: every query word must match, in any field");
    assert_eq!(search_titles(&catalog, "bjork hun").await?, ["Hunter"]);
    assert_eq!(search_titles(&catalog, "homogenic jog").await?, ["Jóga"]);
    assert_eq!(
        search_titles(&catalog, "bjork homeward").await?,
        Vec::<String>::new()
    );
    assert_eq!(search_titles(&catalog, "hom").await?.len(), 3);

    println!("phase: file names and album artists are searched");
    assert_eq!(search_titles(&catalog, "secret tape").await?, ["Intro"]);
    assert_eq!(
        search_titles(&catalog, "various composers").await?,
        ["Track Four"]
    );

    println!("phase: a query without words or matches returns an empty page");
    for query in ["", "   ", "nothingmatches", "bjork nothingmatches"] {
        let page = catalog.search(query, 10, 0).await?;
        assert_eq!(page.total, 0, "query {query:?}");
        assert!(page.items.is_empty(), "query {query:?}");
    }
    Ok(())
}

async fn search_treats_wildcards_as_text(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    add_all(
        &catalog,
        vec![
            tagged(1, "abc", None, None),
            tagged(2, "100% Pure", None, None),
            tagged(3, "snake_case", None, None),
            tagged(4, "It's [Bracketed] \\ back'slash", None, None),
        ],
    )
    .await?;

    println!("phase: LIKE wildcards alone match nothing");
    for query in ["%", "_", "%%", "%_%", "*", "'", "\\", "[a-z]%"] {
        let page = catalog.search(query, 10, 0).await?;
        assert_eq!(page.total, 0, "query {query:?} matched {:?}", page.items);
    }

    println!("phase: wildcards inside words do not match other letters");
    assert_eq!(search_titles(&catalog, "a%c").await?, Vec::<String>::new());
    assert_eq!(search_titles(&catalog, "a_c").await?, Vec::<String>::new());

    println!("phase: the words around punctuation still match");
    assert_eq!(search_titles(&catalog, "100%").await?, ["100% Pure"]);
    assert_eq!(search_titles(&catalog, "snake_case").await?, ["snake_case"]);
    assert_eq!(
        search_titles(&catalog, "bracketed'").await?,
        ["It's [Bracketed] \\ back'slash"]
    );
    Ok(())
}

async fn search_ranks_title_first(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    let mut in_file_name = tagged(5, "Nothing", None, None);
    in_file_name.file_name = "love.mp3".to_owned();
    // Titles run against the expected order, so only the score can produce it.
    add_all(
        &catalog,
        vec![
            tagged(1, "Other Song", None, Some("Love Album")),
            tagged(2, "Another", Some("Love Band"), None),
            tagged(3, "Young Lovers", None, None),
            tagged(4, "Zero Love", None, None),
            in_file_name,
            tagged(6, "Aardvark", Some("Lovecats"), None),
        ],
    )
    .await?;

    println!("phase: title word, title prefix, artist word, artist prefix, album, file name");
    assert_eq!(
        search_titles(&catalog, "love").await?,
        [
            "Zero Love",
            "Young Lovers",
            "Another",
            "Aardvark",
            "Other Song",
            "Nothing"
        ]
    );
    Ok(())
}

async fn search_pages_with_totals(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    let mut tracks: Vec<Track> = (1..=25)
        .map(|n| tagged(n, &format!("Song {n:02}"), Some("Band"), None))
        .collect();
    tracks.push(tagged(26, "Elsewhere", Some("Other"), None));
    add_all(&catalog, tracks).await?;

    let mut seen = Vec::new();
    for (offset, expected_len) in [(0, 10), (10, 10), (20, 5), (30, 0)] {
        let page = catalog.search("band song", 10, offset).await?;
        assert_eq!(page.total, 25, "offset {offset}");
        assert_eq!(page.items.len(), expected_len, "offset {offset}");
        assert_eq!((page.limit, page.offset), (10, offset.unsigned_abs()));
        seen.extend(page.items.into_iter().map(|track| track.title));
    }
    let expected: Vec<String> = (1..=25).map(|n| format!("Song {n:02}")).collect();
    assert_eq!(seen, expected);
    Ok(())
}

// --- Listing ---

async fn list_tracks_sorts_in_every_order(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    let mut tracks = vec![
        tagged(1, "beta", Some("Zed"), Some("Alpha Album")),
        tagged(2, "Älpha", Some("bravo"), Some("Zulu Album")),
        tagged(3, "Alpha Two", None, None),
        tagged(4, "charlie", Some("Bravo"), Some("Zulu Album")),
        tagged(5, "ÉCHO", Some("alpha"), None),
    ];
    tracks[1].tags.track_number = Some(10);
    tracks[3].tags.track_number = Some(2);
    // Added in reverse, so time order differs from number order.
    for (index, track) in tracks.iter_mut().enumerate() {
        track.added_at_ms = 2_000 - i64::try_from(index)?;
    }
    add_all(&catalog, tracks).await?;

    println!("phase: title order folds case and accents");
    let by_title = ["Älpha", "Alpha Two", "beta", "charlie", "ÉCHO"];
    assert_eq!(
        all_titles(&catalog, TrackSort::Title, SortOrder::Ascending).await?,
        by_title
    );
    let reversed: Vec<_> = by_title.iter().rev().copied().collect();
    assert_eq!(
        all_titles(&catalog, TrackSort::Title, SortOrder::Descending).await?,
        reversed
    );

    println!("phase: artist order groups albums and track numbers, missing artist last");
    assert_eq!(
        all_titles(&catalog, TrackSort::Artist, SortOrder::Ascending).await?,
        ["ÉCHO", "charlie", "Älpha", "beta", "Alpha Two"]
    );

    println!("phase: album order uses album artist and track numbers, missing album last");
    assert_eq!(
        all_titles(&catalog, TrackSort::Album, SortOrder::Ascending).await?,
        ["beta", "charlie", "Älpha", "ÉCHO", "Alpha Two"]
    );

    println!("phase: added order follows the commit time");
    assert_eq!(
        all_titles(&catalog, TrackSort::AddedAt, SortOrder::Ascending).await?,
        ["ÉCHO", "charlie", "Alpha Two", "Älpha", "beta"]
    );
    assert_eq!(
        all_titles(&catalog, TrackSort::AddedAt, SortOrder::Descending).await?,
        ["beta", "Älpha", "Alpha Two", "charlie", "ÉCHO"]
    );
    Ok(())
}

async fn list_tracks_pages_with_totals(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    // Equal titles check that ties break on file id, so pages never overlap.
    let tracks: Vec<Track> = (1..=23)
        .map(|n| tagged(n, &format!("Title {}", n % 4), None, None))
        .collect();
    add_all(&catalog, tracks).await?;
    assert_eq!(catalog.track_count().await?, 23);

    for order in [SortOrder::Ascending, SortOrder::Descending] {
        let full = catalog
            .list_tracks(&list(TrackSort::Title, order, 100, 0))
            .await?;
        assert_eq!(full.total, 23);
        let mut paged = Vec::new();
        for offset in (0..30).step_by(7) {
            let page = catalog
                .list_tracks(&list(TrackSort::Title, order, 7, offset))
                .await?;
            assert_eq!(page.total, 23, "offset {offset}");
            assert!(page.items.len() <= 7);
            paged.extend(page.items);
        }
        assert_eq!(paged, full.items, "{order:?}");
    }
    Ok(())
}

async fn page_limits_clamp_and_reject(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    add_all(&catalog, (1..=3).map(|n| track(n, "same")).collect()).await?;

    println!("phase: limits above the maximum are clamped");
    let page = catalog
        .list_tracks(&list(TrackSort::Title, SortOrder::Ascending, 1_000_000, 0))
        .await?;
    assert_eq!(page.limit, MAX_PAGE_LIMIT.unsigned_abs());
    assert_eq!(page.items.len(), 3);
    let page = catalog.search("same", i64::MAX, 0).await?;
    assert_eq!(page.limit, MAX_PAGE_LIMIT.unsigned_abs());

    println!("phase: a zero limit returns only the total, a large offset nothing");
    let page = catalog
        .list_tracks(&list(TrackSort::Title, SortOrder::Ascending, 0, 0))
        .await?;
    assert_eq!((page.items.len(), page.total), (0, 3));
    let page = catalog
        .list_tracks(&list(TrackSort::Title, SortOrder::Ascending, 10, i64::MAX))
        .await?;
    assert_eq!((page.items.len(), page.total), (0, 3));

    println!("phase: negative values are rejected with the allowed range");
    let error = catalog
        .list_tracks(&list(TrackSort::Title, SortOrder::Ascending, -1, 0))
        .await
        .err()
        .context("negative limit accepted")?;
    assert!(
        matches!(
            error,
            CatalogError::InvalidQuery {
                parameter: "limit",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("from 0 to 500"), "{error}");
    let error = catalog
        .search("same", 10, -5)
        .await
        .err()
        .context("negative offset accepted")?;
    assert!(
        matches!(
            error,
            CatalogError::InvalidQuery {
                parameter: "offset",
                ..
            }
        ),
        "{error:?}"
    );

    println!("phase: oversized queries are rejected");
    let long = "a".repeat(MAX_QUERY_CHARS + 1);
    let error = catalog
        .search(&long, 10, 0)
        .await
        .err()
        .context("long query accepted")?;
    assert!(
        matches!(error, CatalogError::InvalidQuery { .. }),
        "{error:?}"
    );
    let many_words = (0..=MAX_QUERY_WORDS)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let error = catalog
        .search(&many_words, 10, 0)
        .await
        .err()
        .context("many words accepted")?;
    assert!(error.to_string().contains("at most 8 words"), "{error}");
    let repeated = vec!["same"; MAX_QUERY_WORDS * 2].join(" ");
    assert_eq!(catalog.search(&repeated, 10, 0).await?.total, 3);
    Ok(())
}

// --- Snapshots ---

/// Fills a catalog with tracks that exercise every stored field.
async fn populate_for_snapshot(catalog: &Catalog, count: u64) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    for n in 1..=count {
        let mut track = tagged(
            n,
            &format!("Björk song {n}"),
            Some("Björk"),
            Some("Homogenic"),
        );
        if n % 3 == 0 {
            track.tags = TrackTags::default();
        }
        let cover = (n % 2 == 0).then(|| cover(n));
        track.has_cover = cover.is_some();
        entries.push((entry(n), Some(add_command(track, cover)), at(n)));
    }
    entries.push((
        entry(count + 1),
        Some(Command::SetReplicas {
            file_id: file_id(1),
            replicas: vec!["n5".to_owned()],
            verified: Vec::new(),
            fence: None,
        }),
        at(count + 1),
    ));
    let more = [
        Command::AcquireLock {
            name: "repair/1".to_owned(),
            owner: "n2".to_owned(),
            ttl_ms: 60_000,
        },
        Command::ReportReplicaFault {
            file_id: file_id(2),
            node_id: "n3".to_owned(),
            fault: crate::model::ReplicaFault::Corrupt,
        },
        Command::ReportReplicaFault {
            file_id: file_id(4),
            node_id: "n1".to_owned(),
            fault: crate::model::ReplicaFault::Missing,
        },
    ];
    for (offset, command) in (2..).zip(more) {
        entries.push((entry(count + offset), Some(command), at(count + offset)));
    }
    catalog.apply_batch(&entries).await?;
    Ok(())
}

async fn snapshot_round_trip_is_identical(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let source = databases.fresh_catalog().await?;
    // More tracks than one export page and one import batch.
    populate_for_snapshot(&source, 150).await?;
    let mut snapshot = Vec::new();
    let exported = source.export_snapshot(&mut snapshot).await?;
    assert_eq!(exported, Some(entry(154)));

    println!("phase: import replaces the previous contents of the target");
    let target = databases.fresh_catalog().await?;
    add_all(&target, vec![track(500, "to be replaced")]).await?;
    let imported = target.import_snapshot(snapshot.as_slice()).await?;
    assert_eq!(imported, Some(entry(154)));
    assert_eq!(target.track(&file_id(500)).await?, None);

    println!("phase: every read of the target matches the source");
    let expected = contents(&source).await?;
    assert_eq!(expected.tracks.len(), 150);
    assert_eq!(contents(&target).await?, expected);

    println!("phase: exporting the imported catalog gives the same bytes");
    let mut again = Vec::new();
    target.export_snapshot(&mut again).await?;
    assert!(again == snapshot, "second export differs from the first");
    Ok(())
}

async fn snapshot_of_empty_catalog_clears(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let empty = databases.fresh_catalog().await?;
    let mut snapshot = Vec::new();
    assert_eq!(empty.export_snapshot(&mut snapshot).await?, None);

    let target = databases.fresh_catalog().await?;
    populate_for_snapshot(&target, 3).await?;
    assert_eq!(target.import_snapshot(snapshot.as_slice()).await?, None);
    assert_eq!(target.track_count().await?, 0);
    assert_eq!(target.applied_state().await?, None);
    assert_eq!(target.search("bjork", 10, 0).await?.total, 0);
    Ok(())
}

async fn snapshot_rejects_bad_input(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let source = databases.fresh_catalog().await?;
    populate_for_snapshot(&source, 70).await?;
    let mut snapshot = Vec::new();
    source.export_snapshot(&mut snapshot).await?;

    let target = databases.fresh_catalog().await?;
    add_all(
        &target,
        vec![tagged(900, "Existing Björk", Some("x"), None)],
    )
    .await?;
    let before = contents(&target).await?;

    println!("phase: truncated streams fail and leave the catalog intact");
    let cuts = [
        0,
        4,
        8,
        11,
        12,
        20,
        snapshot.len() / 3,
        snapshot.len() / 2,
        snapshot.len() - 40,
        snapshot.len() - 1,
    ];
    for cut in cuts {
        let result = target.import_snapshot(&snapshot[..cut]).await;
        assert!(
            matches!(
                result,
                Err(CatalogError::InvalidSnapshot {
                    source: SnapshotFormatError::Truncated
                })
            ),
            "cut at {cut}: {result:?}"
        );
        assert_eq!(contents(&target).await?, before, "cut at {cut}");
    }

    println!("phase: garbage, other versions and altered bytes are rejected");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![("garbage", b"not a snapshot at all".to_vec())];
    let mut version = snapshot.clone();
    version[8] = 99;
    cases.push(("version", version));
    let mut flipped = snapshot.clone();
    let middle = snapshot.len() / 2;
    flipped[middle] ^= 0x01;
    cases.push(("flipped byte", flipped));
    let mut trailing = snapshot.clone();
    trailing.push(0);
    cases.push(("trailing byte", trailing));
    let mut huge_length = snapshot[..12].to_vec();
    huge_length.extend_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("huge record length", huge_length));

    for (name, bytes) in cases {
        let started = Instant::now();
        let result = target.import_snapshot(bytes.as_slice()).await;
        let error = match result {
            Ok(_) => bail!("{name} accepted"),
            Err(error) => error,
        };
        println!("{name}: {error} ({:?})", started.elapsed());
        assert!(
            matches!(error, CatalogError::InvalidSnapshot { .. }),
            "{name}: {error:?}"
        );
        assert_eq!(contents(&target).await?, before, "{name}");
    }

    println!("phase: the intact stream still imports");
    target.import_snapshot(snapshot.as_slice()).await?;
    assert_eq!(contents(&target).await?, contents(&source).await?);
    Ok(())
}

// --- Indexes and scale ---

fn sort_index(sort: TrackSort) -> &'static str {
    match sort {
        TrackSort::Title => "tracks_by_title",
        TrackSort::Artist => "tracks_by_artist",
        TrackSort::Album => "tracks_by_album",
        TrackSort::AddedAt => "tracks_by_added_at",
    }
}

/// Returns the plan SQLite chooses for `sql`, one line per step.
async fn sqlite_plan(catalog: &Catalog, sql: &str) -> anyhow::Result<Vec<String>> {
    let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(&catalog.reader)
        .await?;
    rows.iter()
        .map(|row| Ok(column::<String>(row, "detail")?))
        .collect()
}

#[tokio::test]
async fn sqlite_listing_reads_indexes_in_order() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let url = format!("sqlite://{}", directory.path().join("plan.db").display());
    let catalog = Catalog::connect(&url).await?;

    for sort in [
        TrackSort::Title,
        TrackSort::Artist,
        TrackSort::Album,
        TrackSort::AddedAt,
    ] {
        for order in [SortOrder::Ascending, SortOrder::Descending] {
            let plan = sqlite_plan(&catalog, &read::list_sql(sort, order)).await?;
            println!("{sort:?} {order:?}: {plan:?}");
            // The page of file ids comes from the covering index in order;
            // only the page itself is sorted again after the lookups.
            let skip_step = format!("SCAN tracks USING COVERING INDEX {}", sort_index(sort));
            assert!(
                plan.contains(&skip_step),
                "{sort:?} {order:?} skips without its index: {plan:?}"
            );
            let lookup_step = "SEARCH tracks USING INDEX sqlite_autoindex_tracks_1 (file_id=?)";
            assert!(
                plan.iter().any(|step| step == lookup_step),
                "{sort:?} {order:?}: {plan:?}"
            );
            let full_scans = plan
                .iter()
                .filter(|step| step.starts_with("SCAN tracks"))
                .count();
            assert_eq!(
                full_scans, 1,
                "{sort:?} {order:?} scans tracks twice: {plan:?}"
            );
        }
    }

    let plan = sqlite_plan(
        &catalog,
        &format!("{} SELECT COUNT(*) FROM hits", read::search_matches_sql(2)),
    )
    .await?;
    let term_scans = plan
        .iter()
        .filter(|step| step.contains("search_terms USING PRIMARY KEY (term>? AND term<?)"))
        .count();
    assert_eq!(
        term_scans, 2,
        "search does not range-scan the terms: {plan:?}"
    );
    catalog.close().await;
    Ok(())
}

/// Tracks loaded by the scale test: the catalog size a page of 100 must
/// stay fast at.
const SCALE_TRACKS: u64 = 100_000;

/// Maximum time for one page at scale, far above the milliseconds an index
/// read takes and below what sorting the whole table would, even on a busy
/// two-core machine.
const SCALE_MAX_PAGE_TIME: std::time::Duration = std::time::Duration::from_millis(500);

/// Maximum time for a one-letter search at scale. Such a prefix matches
/// about a third of the synthetic catalog and every hit is ranked, so it
/// costs hundreds of milliseconds rather than a few.
const SCALE_MAX_BROAD_SEARCH_TIME: std::time::Duration = std::time::Duration::from_millis(1_500);

/// A word from a seeded generator, so runs are repeatable.
fn synthetic_word(state: &mut u64) -> String {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "bra", "che", "dö", "fjo", "gri", "hé",
        "jun", "kri", "lam", "mor", "nø", "pla", "qui", "ste", "tra", "zu",
    ];
    let mut word = String::new();
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let syllables = 2 + (*state % 3);
    for shift in 0..syllables {
        let index = ((*state >> (8 + shift * 5)) % SYLLABLES.len() as u64) as usize;
        word.push_str(SYLLABLES[index]);
    }
    word
}

async fn pages_stay_fast_at_scale(databases: &mut TestDatabases) -> anyhow::Result<()> {
    let catalog = databases.fresh_catalog().await?;
    let seed = 0x5eed_cafe_u64;
    println!("phase: loading {SCALE_TRACKS} tracks (seed {seed:#x})");
    let mut state = seed;
    let started = Instant::now();
    let mut batch = Vec::new();
    for n in 1..=SCALE_TRACKS {
        let title = format!(
            "{} {}",
            synthetic_word(&mut state),
            synthetic_word(&mut state)
        );
        let artist = synthetic_word(&mut state);
        let album = synthetic_word(&mut state);
        let mut track = tagged(n, &title, Some(&artist), Some(&album));
        track.tags.track_number = Some(u32::try_from(n % 17)?);
        batch.push((entry(n), Some(add_command(track, None)), at(n)));
        if batch.len() == 1_000 {
            catalog.apply_batch(&batch).await?;
            batch.clear();
        }
    }
    println!("loaded in {:?}", started.elapsed());
    if catalog.dialect() == Dialect::Postgres {
        // Autovacuum vacuums and analyzes a table after this many inserts.
        // Doing it now gives the planner the row counts and lets index-only
        // scans skip the heap.
        sqlx::query("VACUUM ANALYZE")
            .execute(&catalog.writer)
            .await?;
    }

    println!("phase: listing pages");
    let last_page = i64::try_from(SCALE_TRACKS)? - 100;
    for sort in [
        TrackSort::Title,
        TrackSort::Artist,
        TrackSort::Album,
        TrackSort::AddedAt,
    ] {
        for order in [SortOrder::Ascending, SortOrder::Descending] {
            for offset in [0, last_page / 2, last_page] {
                let started = Instant::now();
                let page = catalog.list_tracks(&list(sort, order, 100, offset)).await?;
                let elapsed = started.elapsed();
                println!("list {sort:?} {order:?} offset {offset}: {elapsed:?}");
                assert_eq!(page.items.len(), 100);
                assert_eq!(page.total, SCALE_TRACKS);
                assert!(
                    elapsed < SCALE_MAX_PAGE_TIME,
                    "list {sort:?} {order:?} offset {offset} took {elapsed:?}"
                );
            }
        }
    }

    println!("phase: album and artist pages");
    for sort in [AlbumSort::Album, AlbumSort::Artist] {
        for order in [SortOrder::Ascending, SortOrder::Descending] {
            let first = AlbumQuery {
                limit: 100,
                offset: 0,
                sort,
                order,
            };
            let total = i64::try_from(catalog.list_albums(&first).await?.total)?;
            let last_page = (total - 100).max(0);
            for offset in [0, last_page / 2, last_page] {
                let query = AlbumQuery { offset, ..first };
                let started = Instant::now();
                let page = catalog.list_albums(&query).await?;
                let elapsed = started.elapsed();
                println!("albums {sort:?} {order:?} offset {offset} of {total}: {elapsed:?}");
                assert_eq!(page.items.len() as i64, (total - offset).min(100));
                assert!(
                    elapsed < SCALE_MAX_PAGE_TIME,
                    "albums {sort:?} {order:?} offset {offset} took {elapsed:?}"
                );
            }
        }
    }
    for order in [SortOrder::Ascending, SortOrder::Descending] {
        let first = ArtistQuery {
            limit: 100,
            offset: 0,
            order,
        };
        let total = i64::try_from(catalog.list_artists(&first).await?.total)?;
        let last_page = (total - 100).max(0);
        for offset in [0, last_page / 2, last_page] {
            let started = Instant::now();
            let page = catalog
                .list_artists(&ArtistQuery { offset, ..first })
                .await?;
            let elapsed = started.elapsed();
            println!("artists {order:?} offset {offset} of {total}: {elapsed:?}");
            assert_eq!(page.items.len() as i64, (total - offset).min(100));
            assert!(
                elapsed < SCALE_MAX_PAGE_TIME,
                "artists {order:?} offset {offset} took {elapsed:?}"
            );
        }
    }

    println!("phase: search pages");
    let mut state = seed;
    let common_word = synthetic_word(&mut state);
    let second_word = synthetic_word(&mut state);
    let two_words = format!("{common_word} {second_word}");
    for query in [
        "k",
        "kal",
        common_word.as_str(),
        two_words.as_str(),
        "zuzuzuzu",
    ] {
        let started = Instant::now();
        let page = catalog.search(query, 100, 0).await?;
        let elapsed = started.elapsed();
        println!("search {query:?}: {} hits, {elapsed:?}", page.total);
        let max_time = if query.chars().count() == 1 {
            SCALE_MAX_BROAD_SEARCH_TIME
        } else {
            SCALE_MAX_PAGE_TIME
        };
        assert!(elapsed < max_time, "search {query:?} took {elapsed:?}");
    }
    let page = catalog.search(&two_words, 100, 0).await?;
    assert!(
        page.total >= 1,
        "the first generated track does not match its own title"
    );
    Ok(())
}

#[test]
fn replace_database_keeps_parameters() {
    assert_eq!(
        replace_database("postgres://u@127.0.0.1:5432/postgres", "x"),
        "postgres://u@127.0.0.1:5432/x"
    );
    assert_eq!(
        replace_database("postgres://u@h/postgres?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
}
