//! Library reads of the web app on a catalog of 100,000 tracks.
//!
//! Run with `cargo bench --bench library`. The bench creates a SQLite
//! catalog in a temporary directory. It fills it through the catalog's own
//! write path, `Catalog::apply_batch` with `AddTrack` commands as the Raft
//! state machine applies them, with `DISPOTIFY_BENCH_TRACKS` tracks (default
//! [`DEFAULT_TRACK_COUNT`]) in albums of [`TRACKS_PER_ALBUM`] tracks by
//! [`ARTIST_COUNT`] artists, with tags drawn from a seeded generator and
//! some accented letters. Then it times every read the web app's library,
//! album, artist and search screens make: one page of 100 items at the
//! start, in the middle and at the end of each listing, each in ascending
//! and descending order where the API offers both.
//!
//! Each figure is the read through the catalog API plus the encoding of the
//! page as JSON, which is what a node's handler does for a request, without
//! the HTTP layer (a few tens of microseconds on loopback). Each read runs
//! [`WARMUP_RUNS`] times untimed and then [`TIMED_RUNS`] times; the bench
//! prints the median and the maximum, and fails when a median exceeds
//! [`PAGE_TARGET`].

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use dispotify::catalog::{
    AlbumQuery, AlbumSort, AppliedState, ArtistQuery, Catalog, EntryClock, GroupKind, SortOrder,
    TrackQuery, TrackSort,
};
use dispotify::model::{Command, Manifest, Track, TrackTags};
use serde::Serialize;

/// Tracks in the generated catalog unless `DISPOTIFY_BENCH_TRACKS` sets
/// another count.
const DEFAULT_TRACK_COUNT: u64 = 100_000;

/// Tracks of one generated album, about a real album's length.
const TRACKS_PER_ALBUM: u64 = 10;

/// Distinct artists; albums are spread over them evenly.
const ARTIST_COUNT: u64 = 2_000;

/// Commands applied per transaction while filling the catalog, as a busy
/// Raft log would batch them.
const APPLY_BATCH: usize = 1_000;

/// Items per page, the web app's page size.
const PAGE_SIZE: i64 = 100;

/// Untimed runs before the timed ones, to warm SQLite's page cache.
const WARMUP_RUNS: usize = 3;

/// Timed runs of each read.
const TIMED_RUNS: usize = 21;

/// Maximum median time of one page read, the target of the library screens.
const PAGE_TARGET: Duration = Duration::from_millis(50);

/// Seed of the tag generator, printed with the results.
const SEED: u64 = 0x00d1_5907_1f1e;

/// Syllables of the generated words; a few carry accents so folding is
/// part of what is measured.
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "né", "ra", "sü", "to", "vi", "zé", "bo", "da", "fö", "gu", "ha", "jo", "ñu",
    "pe", "qui", "ru", "sa", "te", "ul", "we", "xo", "ya",
];

fn main() -> Result<()> {
    // `cargo test --benches` runs bench targets without `--bench`, and a
    // test run should not spend a minute filling a catalog.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("library bench skipped: run it with `cargo bench --bench library`");
        return Ok(());
    }
    let track_count: u64 = match std::env::var("DISPOTIFY_BENCH_TRACKS") {
        Ok(value) => value
            .parse()
            .context("DISPOTIFY_BENCH_TRACKS is not a number")?,
        Err(_) => DEFAULT_TRACK_COUNT,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(track_count))
}

async fn run(track_count: u64) -> Result<()> {
    let directory = tempfile::tempdir()?;
    let url = format!("sqlite://{}", directory.path().join("catalog.db").display());
    let catalog = Catalog::connect(&url).await?;

    println!("library bench: {track_count} tracks, seed {SEED:#x}");
    let started = Instant::now();
    fill(&catalog, track_count).await?;
    println!(
        "filled the catalog in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut slow = Vec::new();
    let albums = catalog
        .list_albums(&AlbumQuery {
            limit: 1,
            ..Default::default()
        })
        .await?;
    let artists = catalog
        .list_artists(&ArtistQuery {
            limit: 1,
            ..Default::default()
        })
        .await?;
    let album_id = albums
        .items
        .first()
        .map(|a| a.album_id.clone())
        .context("no album")?;
    let artist_id = artists
        .items
        .first()
        .map(|a| a.artist_id.clone())
        .context("no artist")?;
    println!(
        "{} albums, {} artists\n\n{:<44} {:>10} {:>10}",
        albums.total, artists.total, "read (page of 100)", "median ms", "max ms"
    );

    for (position, offset) in offsets(track_count as i64) {
        for sort in [
            TrackSort::Title,
            TrackSort::Artist,
            TrackSort::Album,
            TrackSort::AddedAt,
        ] {
            for order in [SortOrder::Ascending, SortOrder::Descending] {
                let query = TrackQuery {
                    limit: PAGE_SIZE,
                    offset,
                    sort,
                    order,
                };
                let name = format!("tracks {sort:?} {order:?} {position}");
                measure(&name, &mut slow, || catalog.list_tracks(&query)).await?;
            }
        }
    }
    for (position, offset) in offsets(albums.total as i64) {
        for sort in [AlbumSort::Album, AlbumSort::Artist] {
            for order in [SortOrder::Ascending, SortOrder::Descending] {
                let query = AlbumQuery {
                    limit: PAGE_SIZE,
                    offset,
                    sort,
                    order,
                };
                let name = format!("albums {sort:?} {order:?} {position}");
                measure(&name, &mut slow, || catalog.list_albums(&query)).await?;
            }
        }
    }
    for (position, offset) in offsets(artists.total as i64) {
        for order in [SortOrder::Ascending, SortOrder::Descending] {
            let query = ArtistQuery {
                limit: PAGE_SIZE,
                offset,
                order,
            };
            let name = format!("artists {order:?} {position}");
            measure(&name, &mut slow, || catalog.list_artists(&query)).await?;
        }
    }
    measure("album tracks", &mut slow, || async {
        catalog
            .group_tracks(GroupKind::Album, &album_id, PAGE_SIZE, 0)
            .await
    })
    .await?;
    measure("artist tracks", &mut slow, || async {
        catalog
            .group_tracks(GroupKind::Artist, &artist_id, PAGE_SIZE, 0)
            .await
    })
    .await?;
    for query in ["kalo", "ñu", "nu", "sü ra", "kalomi nera"] {
        let name = format!("search {query:?}");
        measure(&name, &mut slow, || catalog.search(query, PAGE_SIZE, 0)).await?;
    }

    catalog.close().await;
    ensure!(
        slow.is_empty(),
        "reads over the {} ms target: {slow:?}",
        PAGE_TARGET.as_millis()
    );
    println!("\nevery median is under {} ms", PAGE_TARGET.as_millis());
    Ok(())
}

/// Returns the offsets of the first, middle and last page of a listing of
/// `total` items.
fn offsets(total: i64) -> [(&'static str, i64); 3] {
    let last = (total - PAGE_SIZE).max(0);
    [("first", 0), ("middle", last / 2), ("last", last)]
}

/// Times `read` plus the JSON encoding of its result and prints the figures.
async fn measure<T, F, Fut, E>(name: &str, slow: &mut Vec<String>, read: F) -> Result<()>
where
    T: Serialize,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut samples = Vec::with_capacity(TIMED_RUNS);
    for run in 0..WARMUP_RUNS + TIMED_RUNS {
        let started = Instant::now();
        let result = read().await.with_context(|| format!("read {name}"))?;
        let body = serde_json::to_vec(&result)?;
        let elapsed = started.elapsed();
        ensure!(body.len() > 2, "{name} returned an empty body");
        if run >= WARMUP_RUNS {
            samples.push(elapsed);
        }
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "{name:<44} {:>10.2} {:>10.2}",
        median.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    if median > PAGE_TARGET {
        slow.push(name.to_owned());
    }
    Ok(())
}

/// A small deterministic generator (xorshift64), so every run builds the
/// same catalog.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn word(&mut self) -> String {
        let syllables = 2 + self.next() % 3;
        (0..syllables)
            .map(|_| SYLLABLES[(self.next() % SYLLABLES.len() as u64) as usize])
            .collect()
    }

    fn words(&mut self, count: u64) -> String {
        let words: Vec<String> = (0..count).map(|_| self.word()).collect();
        let mut text = words.join(" ");
        if let Some(first) = text.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        text
    }
}

async fn fill(catalog: &Catalog, track_count: u64) -> Result<()> {
    let mut generator = Generator(SEED);
    let artists: Vec<String> = (0..ARTIST_COUNT).map(|_| generator.words(2)).collect();
    let mut batch = Vec::with_capacity(APPLY_BATCH);
    let mut album = String::new();
    for n in 0..track_count {
        let track_number = n % TRACKS_PER_ALBUM + 1;
        let album_index = n / TRACKS_PER_ALBUM;
        if track_number == 1 {
            let words = 1 + generator.next() % 3;
            album = generator.words(words);
        }
        let artist = &artists[(album_index % ARTIST_COUNT) as usize];
        let words = 1 + generator.next() % 4;
        let title = generator.words(words);
        let track = track(n, title, artist, &album, track_number, album_index);
        let index = n + 1;
        let applied = AppliedState {
            last_applied: Some(format!(r#"{{"term":1,"index":{index}}}"#)),
            last_membership: r#"{"voters":["node1"]}"#.to_owned(),
        };
        let command = Command::AddTrack {
            manifest: Manifest {
                size_bytes: track.size_bytes,
                sha256: [0; 32],
                chunk_size: 1 << 20,
                chunk_hashes: vec![[0; 32]],
            },
            track,
            cover: None,
        };
        let clock = EntryClock {
            log_index: index,
            at_ms: 1_700_000_000_000 + index as i64,
        };
        batch.push((applied, Some(command), clock));
        if batch.len() == APPLY_BATCH {
            catalog.apply_batch(&batch).await?;
            batch.clear();
        }
    }
    catalog.apply_batch(&batch).await?;
    Ok(())
}

fn track(
    n: u64,
    title: String,
    artist: &str,
    album: &str,
    track_number: u64,
    album_index: u64,
) -> Track {
    let file_id = format!("{:064x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    Track {
        file_name: format!("{title}.flac"),
        tags: TrackTags {
            title: Some(title.clone()),
            artist: Some(artist.to_owned()),
            album: Some(album.to_owned()),
            album_artist: None,
            track_number: u32::try_from(track_number).ok(),
            track_total: u32::try_from(TRACKS_PER_ALBUM).ok(),
            disc_number: Some(1),
            disc_total: Some(1),
            year: i32::try_from(1960 + album_index % 60).ok(),
            genre: None,
            duration_ms: Some(120_000 + n % 240_000),
            sample_rate: Some(44_100),
            channels: Some(2),
            bitrate_kbps: Some(900),
        },
        title,
        format: "flac".to_owned(),
        content_type: "audio/flac".to_owned(),
        size_bytes: 20_000_000,
        sha256: file_id.clone(),
        has_cover: false,
        replicas: vec!["node1".to_owned()],
        added_at_ms: 1_700_000_000_000 + n as i64,
        file_id,
    }
}
