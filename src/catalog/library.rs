//! Library views: albums and artists grouped from the tracks, and the
//! tracks of one album or artist.
//!
//! The groups are the columns added by migration 0003 (stored, filled by
//! triggers on SQLite and generated on PostgreSQL), which are prefixes of
//! the folded sort keys: `album_group` (album, then album artist
//! or artist), `album_artist_group` (the same components swapped) and
//! `artist_group`. Tags that differ only in case or accents therefore fall
//! in one group. A group's id in the API is the lowercase hex encoding of
//! its key, so it survives a URL path unchanged.
//!
//! A page of groups is read in two steps, like the track listing. An inner
//! query cuts the page from the group column's index alone, and only the
//! tracks of those groups are then read to compute names, counts and
//! covers. A deep page therefore costs an index walk, not a read of every
//! track before it.

use serde::{Deserialize, Serialize};

use super::keys::MAX_SORT_COMPONENT_CHARS;
use super::rows::{column, track_from_row, TRACK_SELECT};
use super::{checked_page, Catalog, CatalogError, Page, SortOrder, MAX_PAGE_LIMIT};
use crate::model::{FileId, Track};

/// Maximum characters of a group id. A group key has at most two components
/// of [`MAX_SORT_COMPONENT_CHARS`] characters plus a one-character prefix
/// each and a separator, every character takes at most four bytes in UTF-8,
/// and hex doubles that. Longer ids cannot name a group and are rejected
/// before they are decoded.
pub const MAX_GROUP_ID_CHARS: usize = 2 * 4 * (2 * (MAX_SORT_COMPONENT_CHARS + 1) + 1);

/// The order of an album listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlbumSort {
    /// Album, then album artist; case and accents ignored, missing albums
    /// last.
    #[default]
    Album,
    /// Album artist, then album; missing artists last.
    Artist,
}

/// A request for one page of albums.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlbumQuery {
    /// Maximum albums to return; values above [`MAX_PAGE_LIMIT`] are clamped.
    pub limit: i64,
    pub offset: i64,
    pub sort: AlbumSort,
    pub order: SortOrder,
}

/// A request for one page of artists, in artist order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtistQuery {
    /// Maximum artists to return; values above [`MAX_PAGE_LIMIT`] are
    /// clamped.
    pub limit: i64,
    pub offset: i64,
    pub order: SortOrder,
}

/// The tracks that share an album and album artist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Album {
    /// Hex of the group key; names the album in
    /// `/music/albums/{album_id}/tracks`.
    pub album_id: String,
    /// The album tag as written in one of the tracks, `None` for tracks
    /// without one.
    pub album: Option<String>,
    /// The album artist tag, or the artist of tracks without one.
    pub album_artist: Option<String>,
    pub track_count: u64,
    /// Sum of the known track durations.
    pub duration_ms: u64,
    /// The latest year tag of the album's tracks.
    pub year: Option<i32>,
    /// A track of the album with embedded cover art, to fetch from
    /// `/music/tracks/{file_id}/cover`.
    pub cover_file_id: Option<FileId>,
}

/// The tracks that share an artist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artist {
    /// Hex of the group key; names the artist in
    /// `/music/artists/{artist_id}/tracks`.
    pub artist_id: String,
    /// The artist tag as written in one of the tracks, `None` for tracks
    /// without one.
    pub artist: Option<String>,
    pub track_count: u64,
    /// Distinct albums among the artist's tracks.
    pub album_count: u64,
    /// A track of the artist with embedded cover art.
    pub cover_file_id: Option<FileId>,
}

/// The kind of group a track listing is restricted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    Album,
    Artist,
}

impl GroupKind {
    fn column(self) -> &'static str {
        match self {
            GroupKind::Album => "album_group",
            GroupKind::Artist => "artist_group",
        }
    }

    /// Returns the sort key that orders a group's tracks: disc, track
    /// number and title within an album, and albums in turn for an artist.
    fn track_order(self) -> &'static str {
        match self {
            GroupKind::Album => "album_key",
            GroupKind::Artist => "artist_key",
        }
    }

    fn id_parameter(self) -> &'static str {
        match self {
            GroupKind::Album => "album_id",
            GroupKind::Artist => "artist_id",
        }
    }
}

impl Catalog {
    /// Returns one page of albums in the requested order, with the total
    /// number of albums, from one consistent state of the database.
    pub async fn list_albums(&self, query: &AlbumQuery) -> Result<Page<Album>, CatalogError> {
        const OPERATION: &str = "list albums";
        let (limit, offset) = checked_page(query.limit, query.offset, MAX_PAGE_LIMIT)?;
        let key = match query.sort {
            AlbumSort::Album => "album_group",
            AlbumSort::Artist => "album_artist_group",
        };
        let direction = direction(query.order);
        // Both keys name the same groups, so grouping by the sort key and
        // reading `album_group` as the id is exact.
        let sql = format!(
            "WITH page AS (SELECT {key} AS group_key FROM tracks GROUP BY {key} \
             ORDER BY {key} {direction} LIMIT $1 OFFSET $2) \
             SELECT page.group_key, MIN(tracks.album_group) AS album_group, \
             MIN(tracks.album) AS album, \
             MIN(COALESCE(tracks.album_artist, tracks.artist)) AS album_artist, \
             COUNT(*) AS track_count, \
             CAST(COALESCE(SUM(tracks.duration_ms), 0) AS BIGINT) AS duration_ms, \
             MAX(tracks.year) AS year, \
             MIN(CASE WHEN tracks.has_cover <> 0 THEN tracks.file_id END) AS cover_file_id \
             FROM page CROSS JOIN tracks WHERE tracks.{key} = page.group_key \
             GROUP BY page.group_key ORDER BY page.group_key {direction}"
        );

        let mut transaction = self.begin_read(OPERATION).await?;
        let total = count_groups(&mut transaction, "album_group", OPERATION).await?;
        let rows = sqlx::query(&sql)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *transaction)
            .await
            .map_err(CatalogError::database(OPERATION))?;
        transaction
            .commit()
            .await
            .map_err(CatalogError::database(OPERATION))?;

        let items = rows
            .iter()
            .map(|row| {
                let group: String = column(row, "album_group")?;
                Ok(Album {
                    album_id: hex::encode(group.as_bytes()),
                    album: column(row, "album")?,
                    album_artist: column(row, "album_artist")?,
                    track_count: unsigned(column(row, "track_count")?),
                    duration_ms: unsigned(column(row, "duration_ms")?),
                    year: column::<Option<i64>>(row, "year")?
                        .and_then(|year| i32::try_from(year).ok()),
                    cover_file_id: column(row, "cover_file_id")?,
                })
            })
            .collect::<Result<_, CatalogError>>()?;
        Ok(Page {
            items,
            total,
            limit: limit.unsigned_abs(),
            offset: offset.unsigned_abs(),
        })
    }

    /// Returns one page of artists in artist order, with the total number
    /// of artists, from one consistent state of the database.
    pub async fn list_artists(&self, query: &ArtistQuery) -> Result<Page<Artist>, CatalogError> {
        const OPERATION: &str = "list artists";
        let (limit, offset) = checked_page(query.limit, query.offset, MAX_PAGE_LIMIT)?;
        let direction = direction(query.order);
        let sql = format!(
            "WITH page AS (SELECT artist_group AS group_key FROM tracks GROUP BY artist_group \
             ORDER BY artist_group {direction} LIMIT $1 OFFSET $2) \
             SELECT page.group_key, MIN(tracks.artist) AS artist, COUNT(*) AS track_count, \
             COUNT(DISTINCT tracks.album_group) AS album_count, \
             MIN(CASE WHEN tracks.has_cover <> 0 THEN tracks.file_id END) AS cover_file_id \
             FROM page CROSS JOIN tracks WHERE tracks.artist_group = page.group_key \
             GROUP BY page.group_key ORDER BY page.group_key {direction}"
        );

        let mut transaction = self.begin_read(OPERATION).await?;
        let total = count_groups(&mut transaction, "artist_group", OPERATION).await?;
        let rows = sqlx::query(&sql)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *transaction)
            .await
            .map_err(CatalogError::database(OPERATION))?;
        transaction
            .commit()
            .await
            .map_err(CatalogError::database(OPERATION))?;

        let items = rows
            .iter()
            .map(|row| {
                let group: String = column(row, "group_key")?;
                Ok(Artist {
                    artist_id: hex::encode(group.as_bytes()),
                    artist: column(row, "artist")?,
                    track_count: unsigned(column(row, "track_count")?),
                    album_count: unsigned(column(row, "album_count")?),
                    cover_file_id: column(row, "cover_file_id")?,
                })
            })
            .collect::<Result<_, CatalogError>>()?;
        Ok(Page {
            items,
            total,
            limit: limit.unsigned_abs(),
            offset: offset.unsigned_abs(),
        })
    }

    /// Returns one page of the tracks of an album or artist, in disc and
    /// track order, or `None` when no track belongs to `group_id`. An id
    /// that is not the hex of a possible group key is an
    /// [`CatalogError::InvalidQuery`].
    pub async fn group_tracks(
        &self,
        kind: GroupKind,
        group_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Option<Page<Track>>, CatalogError> {
        const OPERATION: &str = "list group tracks";
        let (limit, offset) = checked_page(limit, offset, MAX_PAGE_LIMIT)?;
        let group = decode_group_id(kind, group_id)?;
        let group_column = kind.column();
        let order = kind.track_order();
        let count_sql = format!("SELECT COUNT(*) AS total FROM tracks WHERE {group_column} = $1");
        let sql = format!(
            "SELECT {TRACK_SELECT} FROM tracks WHERE tracks.{group_column} = $1 \
             ORDER BY tracks.{order}, tracks.file_id LIMIT $2 OFFSET $3"
        );

        let mut transaction = self.begin_read(OPERATION).await?;
        let row = sqlx::query(&count_sql)
            .bind(group.as_str())
            .fetch_one(&mut *transaction)
            .await
            .map_err(CatalogError::database(OPERATION))?;
        let total = unsigned(column(&row, "total")?);
        if total == 0 {
            return Ok(None);
        }
        let rows = sqlx::query(&sql)
            .bind(group.as_str())
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *transaction)
            .await
            .map_err(CatalogError::database(OPERATION))?;
        transaction
            .commit()
            .await
            .map_err(CatalogError::database(OPERATION))?;

        let items = rows.iter().map(track_from_row).collect::<Result<_, _>>()?;
        Ok(Some(Page {
            items,
            total,
            limit: limit.unsigned_abs(),
            offset: offset.unsigned_abs(),
        }))
    }
}

/// Counts the distinct values of a group column, from its index alone.
///
/// NOTE: the count walks one index entry per track, so at 100,000 tracks
/// an album or artist page takes tens of milliseconds on SQLite, above the
/// 50 ms target when the machine is busy. A per-group count kept by the
/// migration's triggers would make it constant.
async fn count_groups(
    connection: &mut sqlx::AnyConnection,
    group_column: &'static str,
    operation: &'static str,
) -> Result<u64, CatalogError> {
    let sql = format!(
        "SELECT COUNT(*) AS total FROM (SELECT {group_column} FROM tracks \
         GROUP BY {group_column}) AS groups"
    );
    let row = sqlx::query(&sql)
        .fetch_one(connection)
        .await
        .map_err(CatalogError::database(operation))?;
    Ok(unsigned(column(&row, "total")?))
}

/// Decodes a group id back into its key.
fn decode_group_id(kind: GroupKind, group_id: &str) -> Result<String, CatalogError> {
    let invalid = |expected: String| CatalogError::InvalidQuery {
        parameter: kind.id_parameter(),
        value: format!("{:?}", shorten(group_id)),
        expected,
    };
    if group_id.is_empty() || group_id.len() > MAX_GROUP_ID_CHARS {
        return Err(invalid(format!(
            "expected 1 to {MAX_GROUP_ID_CHARS} hexadecimal characters"
        )));
    }
    let bytes = hex::decode(group_id)
        .map_err(|_| invalid("expected an even number of hexadecimal characters".to_owned()))?;
    String::from_utf8(bytes).map_err(|_| invalid("expected the hex of UTF-8 text".to_owned()))
}

/// Cuts a rejected id for an error message, so a client cannot make the
/// message as long as its request.
fn shorten(value: &str) -> &str {
    const SHOWN_CHARS: usize = 80;
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => &value[..cut],
        None => value,
    }
}

fn direction(order: SortOrder) -> &'static str {
    match order {
        SortOrder::Ascending => "ASC",
        SortOrder::Descending => "DESC",
    }
}

/// Counts and sums are never negative; a negative value reads as 0.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    //! Each test runs on SQLite in a temporary directory, and on PostgreSQL
    //! when `DISPOTIFY_TEST_POSTGRES_URL` names a server (required when
    //! `DISPOTIFY_REQUIRE_POSTGRES=1`), in a database created and dropped
    //! for the test.

    use sqlx::Connection;

    use super::*;
    use crate::catalog::{AppliedState, EntryClock};
    use crate::model::{Command, Cover, Manifest, TrackTags};

    const POSTGRES_URL_VAR: &str = "DISPOTIFY_TEST_POSTGRES_URL";
    const REQUIRE_POSTGRES_VAR: &str = "DISPOTIFY_REQUIRE_POSTGRES";

    /// A fresh catalog and what to drop when the test ends.
    struct TestCatalog {
        catalog: Catalog,
        _directory: Option<tempfile::TempDir>,
        postgres: Option<(String, String)>,
    }

    impl TestCatalog {
        async fn close(self) -> anyhow::Result<()> {
            self.catalog.close().await;
            if let Some((admin_url, name)) = self.postgres {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
            }
            Ok(())
        }
    }

    /// Catalogs for one test: SQLite always, PostgreSQL when configured.
    async fn catalogs(test: &str) -> anyhow::Result<Vec<TestCatalog>> {
        let directory = tempfile::tempdir()?;
        let url = format!("sqlite://{}", directory.path().join("catalog.db").display());
        let mut catalogs = vec![TestCatalog {
            catalog: Catalog::connect(&url).await?,
            _directory: Some(directory),
            postgres: None,
        }];

        match std::env::var(POSTGRES_URL_VAR) {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("dispotify_library_{}_{test}", std::process::id());
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut admin)
                    .await?;
                let base = admin_url.split('?').next().unwrap_or(&admin_url);
                let authority = base.find("://").map_or(0, |index| index + 3);
                let root = match base[authority..].rfind('/') {
                    Some(slash) => &base[..authority + slash],
                    None => base,
                };
                let url = format!("{root}/{name}");
                catalogs.push(TestCatalog {
                    catalog: Catalog::connect(&url).await?,
                    _directory: None,
                    postgres: Some((admin_url, name)),
                });
            }
            _ if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") => {
                anyhow::bail!("{REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is not set")
            }
            _ => println!("skipped {test} on postgres: {POSTGRES_URL_VAR} is not set"),
        }
        Ok(catalogs)
    }

    struct Spec {
        title: &'static str,
        artist: Option<&'static str>,
        album: Option<&'static str>,
        album_artist: Option<&'static str>,
        disc: Option<u32>,
        track: Option<u32>,
        year: Option<i32>,
        cover: bool,
    }

    const fn spec(
        title: &'static str,
        artist: Option<&'static str>,
        album: Option<&'static str>,
        disc: Option<u32>,
        track: Option<u32>,
    ) -> Spec {
        Spec {
            title,
            artist,
            album,
            album_artist: None,
            disc,
            track,
            year: None,
            cover: false,
        }
    }

    fn file_id(n: usize) -> String {
        format!("{n:064x}")
    }

    /// Adds the tracks through the same apply path as the Raft state
    /// machine; track `i` gets file id `i + 1`.
    async fn add(catalog: &Catalog, specs: &[Spec]) -> anyhow::Result<()> {
        let mut entries = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let n = index + 1;
            let track = Track {
                file_id: file_id(n),
                file_name: format!("{}.flac", spec.title),
                title: spec.title.to_owned(),
                tags: TrackTags {
                    title: Some(spec.title.to_owned()),
                    artist: spec.artist.map(str::to_owned),
                    album: spec.album.map(str::to_owned),
                    album_artist: spec.album_artist.map(str::to_owned),
                    track_number: spec.track,
                    disc_number: spec.disc,
                    year: spec.year,
                    duration_ms: Some(1_000 * n as u64),
                    ..TrackTags::default()
                },
                format: "flac".to_owned(),
                content_type: "audio/flac".to_owned(),
                size_bytes: 100,
                sha256: file_id(n),
                has_cover: spec.cover,
                replicas: vec!["n1".to_owned()],
                added_at_ms: n as i64,
            };
            let command = Command::AddTrack {
                track,
                manifest: Manifest {
                    size_bytes: 100,
                    sha256: [0; 32],
                    chunk_size: 4096,
                    chunk_hashes: vec![[0; 32]],
                },
                cover: spec.cover.then(|| Cover {
                    mime: "image/png".to_owned(),
                    data: vec![1, 2, 3],
                }),
            };
            let applied = AppliedState {
                last_applied: Some(format!(r#"{{"term":1,"index":{n}}}"#)),
                last_membership: "{}".to_owned(),
            };
            let clock = EntryClock {
                log_index: n as u64,
                at_ms: n as i64,
            };
            entries.push((applied, Some(command), clock));
        }
        catalog.apply_batch(&entries).await?;
        Ok(())
    }

    fn albums_query(sort: AlbumSort, order: SortOrder) -> AlbumQuery {
        AlbumQuery {
            limit: 100,
            offset: 0,
            sort,
            order,
        }
    }

    fn album_names(page: &Page<Album>) -> Vec<(Option<&str>, Option<&str>, u64)> {
        page.items
            .iter()
            .map(|album| {
                (
                    album.album.as_deref(),
                    album.album_artist.as_deref(),
                    album.track_count,
                )
            })
            .collect()
    }

    fn library() -> Vec<Spec> {
        vec![
            Spec {
                year: Some(1959),
                ..spec(
                    "So What",
                    Some("Miles Davis"),
                    Some("Kind of Blue"),
                    Some(1),
                    Some(1),
                )
            },
            Spec {
                year: Some(1960),
                cover: true,
                ..spec(
                    "Freddie Freeloader",
                    Some("Miles Davis"),
                    Some("KIND OF BLUE"),
                    Some(1),
                    Some(2),
                )
            },
            spec(
                "Blue in Green",
                Some("Miles Davis"),
                Some("Kind of Blue"),
                Some(1),
                Some(3),
            ),
            spec(
                "Kind of Blue",
                Some("Bill Evans"),
                Some("Kind of Blue"),
                None,
                None,
            ),
            Spec {
                album_artist: Some("Björk"),
                ..spec(
                    "Jóga",
                    Some("Bjork & friends"),
                    Some("Homogenic"),
                    Some(1),
                    Some(2),
                )
            },
            Spec {
                album_artist: Some("BJÖRK"),
                ..spec("Hunter", Some("Björk"), Some("Homogenic"), Some(1), Some(1))
            },
            spec("Untitled", None, None, None, None),
            spec(
                "Ágætis byrjun",
                Some("Sigur Rós"),
                Some("Ágætis byrjun"),
                Some(2),
                Some(1),
            ),
            spec(
                "Svefn-g-englar",
                Some("Sigur Rós"),
                Some("Ágætis byrjun"),
                Some(1),
                Some(1),
            ),
        ]
    }

    #[tokio::test]
    async fn albums_group_by_folded_album_and_artist() -> anyhow::Result<()> {
        for test in catalogs("albums_group").await? {
            let catalog = &test.catalog;
            add(catalog, &library()).await?;
            println!("phase: albums by album on {:?}", catalog.dialect());

            let page = catalog
                .list_albums(&albums_query(AlbumSort::Album, SortOrder::Ascending))
                .await?;
            assert_eq!(page.total, 5);
            assert_eq!(
                album_names(&page),
                vec![
                    (Some("Ágætis byrjun"), Some("Sigur Rós"), 2),
                    (Some("Homogenic"), Some("BJÖRK"), 2),
                    (Some("Kind of Blue"), Some("Bill Evans"), 1),
                    (Some("KIND OF BLUE"), Some("Miles Davis"), 3),
                    (None, None, 1),
                ]
            );
            let miles = &page.items[3];
            assert_eq!(miles.duration_ms, 1_000 + 2_000 + 3_000);
            assert_eq!(miles.year, Some(1960));
            assert_eq!(miles.cover_file_id.as_deref(), Some(file_id(2).as_str()));
            assert_eq!(page.items[1].cover_file_id, None);

            let descending = catalog
                .list_albums(&albums_query(AlbumSort::Album, SortOrder::Descending))
                .await?;
            let mut reversed = album_names(&page);
            reversed.reverse();
            assert_eq!(album_names(&descending), reversed);

            println!("phase: albums by artist");
            let by_artist = catalog
                .list_albums(&albums_query(AlbumSort::Artist, SortOrder::Ascending))
                .await?;
            let artists: Vec<Option<&str>> = by_artist
                .items
                .iter()
                .map(|album| album.album_artist.as_deref())
                .collect();
            assert_eq!(
                artists,
                vec![
                    Some("Bill Evans"),
                    Some("BJÖRK"),
                    Some("Miles Davis"),
                    Some("Sigur Rós"),
                    None
                ]
            );
            let ids: std::collections::BTreeSet<&str> = by_artist
                .items
                .iter()
                .map(|a| a.album_id.as_str())
                .collect();
            let same: std::collections::BTreeSet<&str> =
                page.items.iter().map(|a| a.album_id.as_str()).collect();
            assert_eq!(ids, same, "both orders name the same albums");
            test.close().await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn albums_page_with_totals() -> anyhow::Result<()> {
        for test in catalogs("albums_page").await? {
            let catalog = &test.catalog;
            add(catalog, &library()).await?;
            let mut query = albums_query(AlbumSort::Album, SortOrder::Ascending);
            query.limit = 2;
            query.offset = 3;
            let page = catalog.list_albums(&query).await?;
            assert_eq!((page.total, page.limit, page.offset), (5, 2, 3));
            assert_eq!(
                album_names(&page),
                vec![
                    (Some("KIND OF BLUE"), Some("Miles Davis"), 3),
                    (None, None, 1)
                ]
            );
            query.offset = 10;
            let past_end = catalog.list_albums(&query).await?;
            assert!(past_end.items.is_empty());
            assert_eq!(past_end.total, 5);
            query.offset = -1;
            assert!(matches!(
                catalog.list_albums(&query).await,
                Err(CatalogError::InvalidQuery { .. })
            ));
            test.close().await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn artists_group_with_counts() -> anyhow::Result<()> {
        for test in catalogs("artists_group").await? {
            let catalog = &test.catalog;
            add(catalog, &library()).await?;
            let query = ArtistQuery {
                limit: 100,
                offset: 0,
                order: SortOrder::Ascending,
            };
            let page = catalog.list_artists(&query).await?;
            let rows: Vec<(Option<&str>, u64, u64)> = page
                .items
                .iter()
                .map(|a| (a.artist.as_deref(), a.track_count, a.album_count))
                .collect();
            assert_eq!(
                rows,
                vec![
                    (Some("Bill Evans"), 1, 1),
                    (Some("Björk"), 1, 1),
                    (Some("Bjork & friends"), 1, 1),
                    (Some("Miles Davis"), 3, 1),
                    (Some("Sigur Rós"), 2, 1),
                    (None, 1, 1),
                ]
            );
            assert_eq!(page.total, 6);
            let miles = &page.items[3];
            assert_eq!(miles.cover_file_id.as_deref(), Some(file_id(2).as_str()));
            test.close().await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn group_tracks_in_disc_and_track_order() -> anyhow::Result<()> {
        for test in catalogs("group_tracks").await? {
            let catalog = &test.catalog;
            add(catalog, &library()).await?;
            let albums = catalog
                .list_albums(&albums_query(AlbumSort::Album, SortOrder::Ascending))
                .await?;
            let sigur = &albums.items[0].album_id;
            let page = catalog
                .group_tracks(GroupKind::Album, sigur, 100, 0)
                .await?
                .ok_or_else(|| anyhow::anyhow!("album not found"))?;
            let titles: Vec<&str> = page.items.iter().map(|t| t.title.as_str()).collect();
            assert_eq!(titles, ["Svefn-g-englar", "Ágætis byrjun"]);
            assert_eq!(page.total, 2);

            let artists = catalog
                .list_artists(&ArtistQuery {
                    limit: 100,
                    offset: 0,
                    order: SortOrder::Ascending,
                })
                .await?;
            let miles = &artists.items[3].artist_id;
            let page = catalog
                .group_tracks(GroupKind::Artist, miles, 2, 1)
                .await?
                .ok_or_else(|| anyhow::anyhow!("artist not found"))?;
            let titles: Vec<&str> = page.items.iter().map(|t| t.title.as_str()).collect();
            assert_eq!(titles, ["Freddie Freeloader", "Blue in Green"]);
            assert_eq!((page.total, page.offset), (3, 1));

            let unknown = hex::encode("0nothing\u{1}1");
            assert!(catalog
                .group_tracks(GroupKind::Album, &unknown, 10, 0)
                .await?
                .is_none());
            for invalid in ["", "zz", "abc", "ff", &"a".repeat(MAX_GROUP_ID_CHARS + 2)] {
                assert!(
                    matches!(
                        catalog.group_tracks(GroupKind::Album, invalid, 10, 0).await,
                        Err(CatalogError::InvalidQuery { .. })
                    ),
                    "{invalid:?} accepted"
                );
            }
            test.close().await?;
        }
        Ok(())
    }
}
