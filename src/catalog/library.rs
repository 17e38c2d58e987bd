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
//! query cuts the page from `library_groups` (migration 0004), which has
//! one row per group with its track count, kept exact by triggers on
//! `tracks`. Only the tracks of those groups are then read to compute
//! names, counts and covers. The number of groups is counted from the same
//! table. So a page costs a walk over the groups before it, not over their
//! tracks, and never a read of every track.

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
        let sql = albums_sql(key, direction(query.order));

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
        let sql = artists_sql(direction(query.order));

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

/// Builds the query of one page of albums cut by the group column `key`,
/// which is `album_group` or `album_artist_group`. Both columns name the
/// same groups, so cutting the page by the sort key and reading
/// `album_group` as the id is exact. The limit and offset are `$1` and `$2`.
fn albums_sql(key: &'static str, direction: &'static str) -> String {
    format!(
        "WITH page AS ({}) \
         SELECT page.group_key, MIN(tracks.album_group) AS album_group, \
         MIN(tracks.album) AS album, \
         MIN(COALESCE(tracks.album_artist, tracks.artist)) AS album_artist, \
         COUNT(*) AS track_count, \
         CAST(COALESCE(SUM(tracks.duration_ms), 0) AS BIGINT) AS duration_ms, \
         MAX(tracks.year) AS year, \
         MIN(CASE WHEN tracks.has_cover <> 0 THEN tracks.file_id END) AS cover_file_id \
         FROM page CROSS JOIN tracks WHERE tracks.{key} = page.group_key \
         GROUP BY page.group_key ORDER BY page.group_key {direction}",
        page_sql(key, direction)
    )
}

/// Builds the query of one page of artists. The limit and offset are `$1`
/// and `$2`.
fn artists_sql(direction: &'static str) -> String {
    format!(
        "WITH page AS ({}) \
         SELECT page.group_key, MIN(tracks.artist) AS artist, COUNT(*) AS track_count, \
         COUNT(DISTINCT tracks.album_group) AS album_count, \
         MIN(CASE WHEN tracks.has_cover <> 0 THEN tracks.file_id END) AS cover_file_id \
         FROM page CROSS JOIN tracks WHERE tracks.artist_group = page.group_key \
         GROUP BY page.group_key ORDER BY page.group_key {direction}",
        page_sql("artist_group", direction)
    )
}

/// Builds the query that returns the keys of one page of groups of
/// `group_column`, as `group_key`, from the group counts table. The limit
/// and offset are the parameters `$1` and `$2`.
fn page_sql(group_column: &'static str, direction: &'static str) -> String {
    format!(
        "SELECT group_key FROM library_groups WHERE group_column = '{group_column}' \
         ORDER BY group_key {direction} LIMIT $1 OFFSET $2"
    )
}

/// Counts the groups of a group column: its rows in the group counts
/// table, one per distinct value. The count walks one row per group, so it
/// grows with the number of albums or artists, not with the tracks.
async fn count_groups(
    connection: &mut sqlx::AnyConnection,
    group_column: &'static str,
    operation: &'static str,
) -> Result<u64, CatalogError> {
    let sql = format!(
        "SELECT COUNT(*) AS total FROM library_groups WHERE group_column = '{group_column}'"
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
    use crate::catalog::keys::SortKeys;
    use crate::catalog::{AppliedState, Dialect, EntryClock};
    use crate::model::{Command, Cover, Manifest, TrackTags};

    const POSTGRES_URL_VAR: &str = "DISPOTIFY_TEST_POSTGRES_URL";
    const REQUIRE_POSTGRES_VAR: &str = "DISPOTIFY_REQUIRE_POSTGRES";

    /// A fresh catalog and what to drop when the test ends.
    struct TestCatalog {
        catalog: Catalog,
        url: String,
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
            url,
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
                    url,
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

    /// Builds the track of `spec` with file id `n`.
    fn spec_track(n: usize, spec: &Spec) -> Track {
        Track {
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
        }
    }

    /// Adds the tracks through the same apply path as the Raft state
    /// machine; track `i` gets file id `i + 1`.
    async fn add(catalog: &Catalog, specs: &[Spec]) -> anyhow::Result<()> {
        let numbered: Vec<(usize, &Spec)> =
            specs.iter().enumerate().map(|(i, s)| (i + 1, s)).collect();
        add_numbered(catalog, &numbered).await
    }

    /// Adds each `(n, spec)` as the track with file id `n`, in one batch
    /// of log entries numbered like the file ids.
    async fn add_numbered(catalog: &Catalog, specs: &[(usize, &Spec)]) -> anyhow::Result<()> {
        let mut entries = Vec::new();
        for &(n, spec) in specs {
            let command = Command::AddTrack {
                track: spec_track(n, spec),
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

    // --- Group counts ---

    /// The group columns of `tracks` that `library_groups` counts.
    const GROUP_COLUMNS: [&str; 3] = ["album_group", "album_artist_group", "artist_group"];

    /// One row of `library_groups`: group column, group key, track count.
    type GroupCount = (String, String, i64);

    /// Returns the rows of `library_groups`, sorted.
    async fn stored_group_counts(catalog: &Catalog) -> anyhow::Result<Vec<GroupCount>> {
        let rows = sqlx::query("SELECT group_column, group_key, track_count FROM library_groups")
            .fetch_all(&catalog.reader)
            .await?;
        let mut counts = rows
            .iter()
            .map(|row| {
                Ok((
                    column(row, "group_column")?,
                    column(row, "group_key")?,
                    column(row, "track_count")?,
                ))
            })
            .collect::<Result<Vec<GroupCount>, CatalogError>>()?;
        counts.sort();
        Ok(counts)
    }

    /// Counts the groups of every group column from the tracks themselves,
    /// sorted like [`stored_group_counts`].
    async fn recounted_groups(catalog: &Catalog) -> anyhow::Result<Vec<GroupCount>> {
        let mut counts = Vec::new();
        for group_column in GROUP_COLUMNS {
            let sql = format!(
                "SELECT {group_column} AS group_key, COUNT(*) AS track_count FROM tracks \
                 GROUP BY {group_column}"
            );
            for row in sqlx::query(&sql).fetch_all(&catalog.reader).await? {
                counts.push((
                    group_column.to_owned(),
                    column(&row, "group_key")?,
                    column(&row, "track_count")?,
                ));
            }
        }
        counts.sort();
        Ok(counts)
    }

    /// Checks that the stored group counts equal a recount from the tracks,
    /// and returns them.
    async fn assert_counts_exact(
        catalog: &Catalog,
        phase: &str,
    ) -> anyhow::Result<Vec<GroupCount>> {
        let stored = stored_group_counts(catalog).await?;
        let recounted = recounted_groups(catalog).await?;
        assert_eq!(
            stored,
            recounted,
            "{phase} on {:?}: stored group counts differ from a recount",
            catalog.dialect()
        );
        Ok(stored)
    }

    /// Deletes track `n` with plain SQL on the writer pool. No command
    /// deletes a single track, but the triggers must count every DELETE.
    async fn delete_track(catalog: &Catalog, n: usize) -> anyhow::Result<()> {
        let result = sqlx::query("DELETE FROM tracks WHERE file_id = $1")
            .bind(file_id(n))
            .execute(&catalog.writer)
            .await?;
        anyhow::ensure!(result.rows_affected() == 1, "track {n} was not deleted");
        Ok(())
    }

    /// Rewrites the tags and sort keys of track `n` as `spec` has them, as
    /// an edit of its tags would. No command edits tags, but the triggers
    /// must follow every change of the sort keys.
    async fn retag(catalog: &Catalog, n: usize, spec: &Spec) -> anyhow::Result<()> {
        let track = spec_track(n, spec);
        let keys = SortKeys::of(&track);
        let result = sqlx::query(
            "UPDATE tracks SET title = $1, artist = $2, album = $3, album_artist = $4, \
             title_key = $5, artist_key = $6, album_key = $7 WHERE file_id = $8",
        )
        .bind(track.title.as_str())
        .bind(track.tags.artist.as_deref())
        .bind(track.tags.album.as_deref())
        .bind(track.tags.album_artist.as_deref())
        .bind(keys.title.as_str())
        .bind(keys.artist.as_str())
        .bind(keys.album.as_str())
        .bind(file_id(n))
        .execute(&catalog.writer)
        .await?;
        anyhow::ensure!(result.rows_affected() == 1, "track {n} was not retagged");
        Ok(())
    }

    /// Reads every album in `sort` and `order` in pages of `page_size`,
    /// checking the total of each page.
    async fn all_albums(
        catalog: &Catalog,
        sort: AlbumSort,
        order: SortOrder,
        page_size: i64,
    ) -> anyhow::Result<Vec<Album>> {
        let mut albums = Vec::new();
        loop {
            let query = AlbumQuery {
                limit: page_size,
                offset: i64::try_from(albums.len())?,
                sort,
                order,
            };
            let page = catalog.list_albums(&query).await?;
            let reference = reference_groups(catalog, "album_group", order).await?;
            assert_eq!(page.total, reference.len() as u64, "album total");
            if page.items.is_empty() {
                return Ok(albums);
            }
            albums.extend(page.items);
        }
    }

    /// Reads every artist in `order` in pages of `page_size`.
    async fn all_artists(
        catalog: &Catalog,
        order: SortOrder,
        page_size: i64,
    ) -> anyhow::Result<Vec<Artist>> {
        let mut artists = Vec::new();
        loop {
            let query = ArtistQuery {
                limit: page_size,
                offset: i64::try_from(artists.len())?,
                order,
            };
            let page = catalog.list_artists(&query).await?;
            let reference = reference_groups(catalog, "artist_group", order).await?;
            assert_eq!(page.total, reference.len() as u64, "artist total");
            if page.items.is_empty() {
                return Ok(artists);
            }
            artists.extend(page.items);
        }
    }

    /// Lists the groups of `key` by grouping the tracks themselves, which
    /// defines what the listings must return: the hex id of each group (its
    /// `album_group` for album keys) and its track count, in `order`.
    async fn reference_groups(
        catalog: &Catalog,
        key: &str,
        order: SortOrder,
    ) -> anyhow::Result<Vec<(String, u64)>> {
        let id_column = if key == "artist_group" {
            "artist_group"
        } else {
            "album_group"
        };
        let sql = format!(
            "SELECT {key} AS group_key, MIN({id_column}) AS id_key, COUNT(*) AS track_count \
             FROM tracks GROUP BY {key} ORDER BY {key} {}",
            direction(order)
        );
        let rows = sqlx::query(&sql).fetch_all(&catalog.reader).await?;
        rows.iter()
            .map(|row| {
                let id_key: String = column(row, "id_key")?;
                let track_count: i64 = column(row, "track_count")?;
                Ok((hex::encode(id_key.as_bytes()), unsigned(track_count)))
            })
            .collect()
    }

    /// Checks every album and artist listing, read in pages, against
    /// [`reference_groups`].
    async fn assert_listings_match_reference(catalog: &Catalog, phase: &str) -> anyhow::Result<()> {
        const PAGE_SIZE: i64 = 3;
        for sort in [AlbumSort::Album, AlbumSort::Artist] {
            let key = match sort {
                AlbumSort::Album => "album_group",
                AlbumSort::Artist => "album_artist_group",
            };
            for order in [SortOrder::Ascending, SortOrder::Descending] {
                let listed: Vec<(String, u64)> = all_albums(catalog, sort, order, PAGE_SIZE)
                    .await?
                    .into_iter()
                    .map(|album| (album.album_id, album.track_count))
                    .collect();
                let expected = reference_groups(catalog, key, order).await?;
                assert_eq!(listed, expected, "{phase}: albums {sort:?} {order:?}");
            }
        }
        for order in [SortOrder::Ascending, SortOrder::Descending] {
            let listed: Vec<(String, u64)> = all_artists(catalog, order, PAGE_SIZE)
                .await?
                .into_iter()
                .map(|artist| (artist.artist_id, artist.track_count))
                .collect();
            let expected = reference_groups(catalog, "artist_group", order).await?;
            assert_eq!(listed, expected, "{phase}: artists {order:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn group_counts_follow_inserts_and_deletes() -> anyhow::Result<()> {
        for test in catalogs("counts_insert_delete").await? {
            let catalog = &test.catalog;
            println!(
                "phase: an empty catalog has no groups on {:?}",
                catalog.dialect()
            );
            assert!(assert_counts_exact(catalog, "empty").await?.is_empty());

            println!("phase: inserts count every group");
            add(catalog, &library()).await?;
            let full = assert_counts_exact(catalog, "inserted").await?;
            // 5 albums, listed by album and by album artist, and 6 artists.
            assert_eq!(full.len(), 5 + 5 + 6);
            let albums = all_albums(catalog, AlbumSort::Album, SortOrder::Ascending, 100).await?;
            assert_listings_match_reference(catalog, "inserted").await?;

            println!("phase: inserting the same tracks again changes nothing");
            add(catalog, &library()).await?;
            assert_eq!(assert_counts_exact(catalog, "inserted twice").await?, full);

            println!("phase: deleting the only track of a group removes its rows");
            // Track 7, "Untitled", is alone in its album and artist groups.
            delete_track(catalog, 7).await?;
            let without_untitled = assert_counts_exact(catalog, "deleted 7").await?;
            assert_eq!(without_untitled.len(), full.len() - 3);
            let page = catalog
                .list_albums(&albums_query(AlbumSort::Album, SortOrder::Ascending))
                .await?;
            assert_eq!(page.total, 4);
            assert_listings_match_reference(catalog, "deleted 7").await?;

            println!("phase: deleting one track of three lowers the count");
            // Track 1 is one of the three tracks of Miles Davis's album.
            delete_track(catalog, 1).await?;
            assert_counts_exact(catalog, "deleted 1").await?;
            let page = catalog
                .list_albums(&albums_query(AlbumSort::Album, SortOrder::Ascending))
                .await?;
            assert_eq!(
                album_names(&page)[3],
                (Some("KIND OF BLUE"), Some("Miles Davis"), 2)
            );
            assert_listings_match_reference(catalog, "deleted 1").await?;

            println!("phase: inserting the deleted tracks again restores every count");
            add(catalog, &library()).await?;
            assert_eq!(assert_counts_exact(catalog, "reinserted").await?, full);
            let again = all_albums(catalog, AlbumSort::Album, SortOrder::Ascending, 100).await?;
            assert_eq!(again, albums);

            println!("phase: deleting every track removes every group");
            sqlx::query("DELETE FROM tracks")
                .execute(&catalog.writer)
                .await?;
            assert!(assert_counts_exact(catalog, "cleared").await?.is_empty());
            let page = catalog
                .list_albums(&albums_query(AlbumSort::Album, SortOrder::Ascending))
                .await?;
            assert_eq!((page.total, page.items.len()), (0, 0));
            test.close().await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn group_counts_follow_tag_changes() -> anyhow::Result<()> {
        for test in catalogs("counts_tags").await? {
            let catalog = &test.catalog;
            add(catalog, &library()).await?;
            let full = assert_counts_exact(catalog, "inserted").await?;

            println!(
                "phase: moving a track into another album and artist on {:?}",
                catalog.dialect()
            );
            // Track 4, Bill Evans's "Kind of Blue", is alone in its groups.
            let moved = spec(
                "Kind of Blue",
                Some("Miles Davis"),
                Some("Kind of Blue"),
                None,
                None,
            );
            retag(catalog, 4, &moved).await?;
            let counts = assert_counts_exact(catalog, "moved 4").await?;
            assert_eq!(counts.len(), full.len() - 3);
            let page = catalog
                .list_albums(&albums_query(AlbumSort::Album, SortOrder::Ascending))
                .await?;
            assert_eq!(page.total, 4);
            assert_eq!(
                album_names(&page)[2],
                (Some("KIND OF BLUE"), Some("Miles Davis"), 4)
            );
            assert_listings_match_reference(catalog, "moved 4").await?;

            println!("phase: a change of case only keeps every group");
            let recased = spec(
                "Kind of Blue",
                Some("MILES DAVIS"),
                Some("kind of blue"),
                None,
                None,
            );
            retag(catalog, 4, &recased).await?;
            assert_eq!(assert_counts_exact(catalog, "recased 4").await?, counts);

            println!("phase: changing the replica set keeps every group");
            let replicas = Command::SetReplicas {
                file_id: file_id(4),
                replicas: vec!["n2".to_owned()],
                verified: Vec::new(),
                fence: None,
            };
            let applied = AppliedState {
                last_applied: Some(r#"{"term":1,"index":100}"#.to_owned()),
                last_membership: "{}".to_owned(),
            };
            catalog
                .apply(&applied, Some(&replicas), EntryClock::default())
                .await?;
            assert_eq!(assert_counts_exact(catalog, "replicas of 4").await?, counts);

            println!("phase: moving the track back restores every count");
            retag(catalog, 4, &library()[3]).await?;
            assert_eq!(assert_counts_exact(catalog, "moved back").await?, full);
            assert_listings_match_reference(catalog, "moved back").await?;
            test.close().await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn group_counts_follow_snapshot_import() -> anyhow::Result<()> {
        let sources = catalogs("counts_snapshot_source").await?;
        let targets = catalogs("counts_snapshot_target").await?;
        for (source, target) in sources.into_iter().zip(targets) {
            let dialect = source.catalog.dialect();
            println!("phase: a snapshot replaces the groups of the target on {dialect:?}");
            let mut empty_snapshot = Vec::new();
            target.catalog.export_snapshot(&mut empty_snapshot).await?;
            add(&source.catalog, &library()).await?;
            let mut snapshot = Vec::new();
            source.catalog.export_snapshot(&mut snapshot).await?;
            // Track 1 of the target has other tags than track 1 of the source.
            let others = [
                spec("Elsewhere", Some("Someone"), Some("Other"), None, None),
                spec("Unrelated", Some("Nobody"), None, None, None),
            ];
            add_numbered(&target.catalog, &[(1, &others[0]), (100, &others[1])]).await?;
            assert_counts_exact(&target.catalog, "target before import").await?;

            target.catalog.import_snapshot(snapshot.as_slice()).await?;
            let imported = assert_counts_exact(&target.catalog, "imported").await?;
            assert_eq!(imported, stored_group_counts(&source.catalog).await?);
            assert_listings_match_reference(&target.catalog, "imported").await?;
            for sort in [AlbumSort::Album, AlbumSort::Artist] {
                for order in [SortOrder::Ascending, SortOrder::Descending] {
                    assert_eq!(
                        all_albums(&target.catalog, sort, order, 2).await?,
                        all_albums(&source.catalog, sort, order, 2).await?,
                        "albums {sort:?} {order:?}"
                    );
                }
            }
            assert_eq!(
                all_artists(&target.catalog, SortOrder::Ascending, 2).await?,
                all_artists(&source.catalog, SortOrder::Ascending, 2).await?
            );

            println!("phase: a failed import leaves the groups unchanged");
            let truncated = &snapshot[..snapshot.len() / 2];
            assert!(target.catalog.import_snapshot(truncated).await.is_err());
            assert_eq!(
                assert_counts_exact(&target.catalog, "failed import").await?,
                imported
            );

            println!("phase: importing the same snapshot again keeps the groups");
            target.catalog.import_snapshot(snapshot.as_slice()).await?;
            assert_eq!(
                assert_counts_exact(&target.catalog, "imported again").await?,
                imported
            );

            println!("phase: an empty snapshot removes every group");
            target
                .catalog
                .import_snapshot(empty_snapshot.as_slice())
                .await?;
            assert!(assert_counts_exact(&target.catalog, "emptied")
                .await?
                .is_empty());
            let artists = target
                .catalog
                .list_artists(&ArtistQuery {
                    limit: 10,
                    offset: 0,
                    order: SortOrder::Ascending,
                })
                .await?;
            assert_eq!((artists.total, artists.items.len()), (0, 0));
            source.close().await?;
            target.close().await?;
        }
        Ok(())
    }

    /// Removes what migration 0004 created and its record, so that the
    /// next connection runs it again on the tracks already stored, as an
    /// upgrade of an existing catalog does.
    async fn undo_group_counts_migration(catalog: &Catalog) -> anyhow::Result<()> {
        let statements: &[&str] = match catalog.dialect() {
            Dialect::Sqlite => &[
                "DROP TRIGGER library_groups_on_insert",
                "DROP TRIGGER library_groups_on_update",
                "DROP TRIGGER library_groups_on_delete",
                "DROP TABLE library_groups",
            ],
            Dialect::Postgres => &[
                "DROP TRIGGER library_groups_on_insert ON tracks",
                "DROP TRIGGER library_groups_on_update ON tracks",
                "DROP TRIGGER library_groups_on_delete ON tracks",
                "DROP FUNCTION library_groups_count_inserted()",
                "DROP FUNCTION library_groups_count_deleted()",
                "DROP FUNCTION library_groups_count_updated()",
                "DROP FUNCTION library_groups_move(TEXT, TEXT, TEXT)",
                "DROP TABLE library_groups",
            ],
        };
        for statement in statements {
            sqlx::query(statement).execute(&catalog.writer).await?;
        }
        let result = sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 4")
            .execute(&catalog.writer)
            .await?;
        anyhow::ensure!(result.rows_affected() == 1, "migration 4 was not recorded");
        Ok(())
    }

    #[tokio::test]
    async fn group_counts_migration_counts_existing_tracks() -> anyhow::Result<()> {
        for mut test in catalogs("counts_migration").await? {
            let dialect = test.catalog.dialect();
            println!("phase: migration 0004 counts the tracks stored before it on {dialect:?}");
            add(&test.catalog, &library()).await?;
            let expected = assert_counts_exact(&test.catalog, "before the upgrade").await?;
            let albums =
                all_albums(&test.catalog, AlbumSort::Album, SortOrder::Ascending, 100).await?;
            undo_group_counts_migration(&test.catalog).await?;
            test.catalog.close().await;

            test.catalog = Catalog::connect(&test.url).await?;
            let upgraded = assert_counts_exact(&test.catalog, "after the upgrade").await?;
            assert_eq!(upgraded, expected);
            let upgraded_albums =
                all_albums(&test.catalog, AlbumSort::Album, SortOrder::Ascending, 100).await?;
            assert_eq!(upgraded_albums, albums);

            println!("phase: the triggers count the writes after the upgrade");
            delete_track(&test.catalog, 2).await?;
            assert_counts_exact(&test.catalog, "deleted after the upgrade").await?;
            add(&test.catalog, &library()).await?;
            assert_eq!(
                assert_counts_exact(&test.catalog, "reinserted").await?,
                expected
            );
            test.close().await?;
        }
        Ok(())
    }

    /// Steps of the random test, ten per track slot on average, so most
    /// slots are inserted, retagged and deleted more than once.
    const RANDOM_STEPS: usize = 240;

    /// Steps between two recounts in the random test.
    const RANDOM_CHECK_EVERY: usize = 30;

    /// Track slots of the random test. They are few, so groups empty and
    /// fill again often.
    const RANDOM_TRACKS: u64 = 24;

    #[tokio::test]
    async fn group_counts_stay_exact_under_random_changes() -> anyhow::Result<()> {
        const ARTISTS: [Option<&str>; 6] = [
            Some("Miles Davis"),
            Some("MILES DAVIS"),
            Some("Björk"),
            Some("Bjork"),
            Some("Sigur Rós"),
            None,
        ];
        const ALBUMS: [Option<&str>; 4] = [
            Some("Kind of Blue"),
            Some("Homogenic"),
            Some("Ágætis byrjun"),
            None,
        ];
        const ALBUM_ARTISTS: [Option<&str>; 3] = [None, None, Some("Various Artists")];
        let seed = 0x9e37_79b9_u64;
        for test in catalogs("counts_random").await? {
            let catalog = &test.catalog;
            println!(
                "phase: random inserts, retags and deletes on {:?}, seed {seed:#x}",
                catalog.dialect()
            );
            let mut state = seed;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut present = std::collections::BTreeSet::new();
            for step in 1..=RANDOM_STEPS {
                let n = usize::try_from(1 + next() % RANDOM_TRACKS)?;
                let pick =
                    |value: u64, len: usize| usize::try_from(value % len as u64).unwrap_or(0);
                let spec = Spec {
                    album_artist: ALBUM_ARTISTS[pick(next(), ALBUM_ARTISTS.len())],
                    ..spec(
                        "Track",
                        ARTISTS[pick(next(), ARTISTS.len())],
                        ALBUMS[pick(next(), ALBUMS.len())],
                        None,
                        None,
                    )
                };
                if !present.contains(&n) {
                    add_numbered(catalog, &[(n, &spec)]).await?;
                    present.insert(n);
                } else if next() % 2 == 0 {
                    retag(catalog, n, &spec).await?;
                } else {
                    delete_track(catalog, n).await?;
                    present.remove(&n);
                }
                if step % RANDOM_CHECK_EVERY == 0 {
                    let phase = format!("step {step} of seed {seed:#x}");
                    assert_counts_exact(catalog, &phase).await?;
                    assert_listings_match_reference(catalog, &phase).await?;
                }
            }
            test.close().await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn sqlite_group_pages_read_the_counts() -> anyhow::Result<()> {
        let directory = tempfile::tempdir()?;
        let url = format!("sqlite://{}", directory.path().join("plan.db").display());
        let catalog = Catalog::connect(&url).await?;
        let cases = [
            ("album_group", albums_sql("album_group", "ASC")),
            (
                "album_artist_group",
                albums_sql("album_artist_group", "DESC"),
            ),
            ("artist_group", artists_sql("ASC")),
        ];
        for (key, sql) in cases {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .bind(100_i64)
                .bind(0_i64)
                .fetch_all(&catalog.reader)
                .await?;
            let plan = rows
                .iter()
                .map(|row| column::<String>(row, "detail"))
                .collect::<Result<Vec<_>, _>>()?;
            println!("{key}: {plan:?}");
            let page_step = "SEARCH library_groups USING PRIMARY KEY (group_column=?)";
            assert!(plan.iter().any(|step| step == page_step), "{key}: {plan:?}");
            let tracks_step = format!("SEARCH tracks USING INDEX tracks_by_{key} ({key}=?)");
            assert!(plan.contains(&tracks_step), "{key}: {plan:?}");
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN tracks")),
                "{key} scans the tracks: {plan:?}"
            );
        }
        catalog.close().await;
        Ok(())
    }
}
