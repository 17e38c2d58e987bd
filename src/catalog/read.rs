//! Reads for the public API, repair and the Raft layer.
//!
//! Search matches every query word as a prefix of a stored term (AND across
//! words) with one range scan of the `search_terms` primary key per word. It
//! needs no LIKE, and user input cannot contain a wildcard, because `%` and
//! `_` are not alphanumeric and folding drops them. A track's score is the sum, over
//! the query words, of the best score of each word: twice the weight of the
//! field it matches, less one unless the word equals the whole term. So a
//! title match outranks any artist match, and within one field a whole word
//! outranks a prefix. Results are ordered by score, then title.

use sqlx::AnyConnection;

use super::fold::{fold_words, prefix_upper_bound};
use super::rows::{
    column, cover_from_row, manifest_from_row, track_from_row, AnyQuery, COVER_SELECT,
    MANIFEST_SELECT, TRACK_SELECT,
};
use super::{
    checked_page, decode_replicas, AppliedState, Catalog, CatalogError, Page, ReplicaSet,
    SortOrder, TrackQuery, TrackSort, MAX_PAGE_LIMIT, MAX_QUERY_CHARS, MAX_QUERY_WORDS,
    MAX_REPLICA_SETS_PAGE_LIMIT,
};
use crate::model::{Cover, Manifest, Track};

impl Catalog {
    /// Returns the applied state written by the last apply or snapshot
    /// import, or `None` for a catalog that has applied nothing.
    pub async fn applied_state(&self) -> Result<Option<AppliedState>, CatalogError> {
        let mut connection = self
            .reader
            .acquire()
            .await
            .map_err(CatalogError::database("read applied state"))?;
        read_applied_state(&mut connection).await
    }

    pub async fn track(&self, file_id: &str) -> Result<Option<Track>, CatalogError> {
        let sql = format!("SELECT {TRACK_SELECT} FROM tracks WHERE tracks.file_id = $1");
        let row = sqlx::query(&sql)
            .bind(file_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(CatalogError::database("read track"))?;
        row.as_ref().map(track_from_row).transpose()
    }

    pub async fn manifest(&self, file_id: &str) -> Result<Option<Manifest>, CatalogError> {
        let sql = format!("SELECT {MANIFEST_SELECT} FROM manifests WHERE manifests.file_id = $1");
        let row = sqlx::query(&sql)
            .bind(file_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(CatalogError::database("read manifest"))?;
        row.map(|row| manifest_from_row(file_id, &row)).transpose()
    }

    pub async fn cover(&self, file_id: &str) -> Result<Option<Cover>, CatalogError> {
        let sql = format!("SELECT {COVER_SELECT} FROM covers WHERE covers.file_id = $1");
        let row = sqlx::query(&sql)
            .bind(file_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(CatalogError::database("read cover"))?;
        Ok(row.as_ref().map(cover_from_row).transpose()?.flatten())
    }

    pub async fn track_count(&self) -> Result<u64, CatalogError> {
        let mut connection = self
            .reader
            .acquire()
            .await
            .map_err(CatalogError::database("count tracks"))?;
        count_tracks(&mut connection).await
    }

    /// Returns one page of the catalog in the requested order. Items and
    /// total come from one consistent state of the database.
    pub async fn list_tracks(&self, query: &TrackQuery) -> Result<Page<Track>, CatalogError> {
        const OPERATION: &str = "list tracks";
        let (limit, offset) = checked_page(query.limit, query.offset, MAX_PAGE_LIMIT)?;
        let sql = list_sql(query.sort, query.order);

        let mut transaction = self.begin_read(OPERATION).await?;
        let total = count_tracks(&mut transaction).await?;
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

        let items = rows.iter().map(track_from_row).collect::<Result<_, _>>()?;
        Ok(page(items, total, limit, offset))
    }

    /// Searches titles, artists, album artists, albums and file names,
    /// ignoring case and accents. Every word of `query` must start a word of
    /// one of those fields. A query without any word returns an empty page.
    ///
    /// NOTE: every hit is ranked before the page is cut, so a one-letter
    /// query that matches a third of 100k tracks takes a few hundred
    /// milliseconds, against a few for a full word.
    pub async fn search(
        &self,
        query: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Track>, CatalogError> {
        const OPERATION: &str = "search tracks";
        let (limit, offset) = checked_page(limit, offset, MAX_PAGE_LIMIT)?;
        let Some(ranges) = query_ranges(query)? else {
            return Ok(page(Vec::new(), 0, limit, offset));
        };
        let matches = search_matches_sql(ranges.len());
        // `ranked` orders the hits on narrow rows and cuts the page, and its
        // window count returns the total from the same evaluation of `hits`.
        // Only the tracks of the page are then read in full. A page past the
        // end has no row to carry the total, so it then takes a second query.
        let items_sql = format!(
            "{matches}, ranked AS (SELECT hits.file_id, hits.score, tracks.title_key, \
             COUNT(*) OVER () AS total FROM hits JOIN tracks ON tracks.file_id = hits.file_id \
             ORDER BY hits.score DESC, tracks.title_key, hits.file_id LIMIT ${} OFFSET ${}) \
             SELECT {TRACK_SELECT}, ranked.total FROM ranked CROSS JOIN tracks \
             WHERE tracks.file_id = ranked.file_id \
             ORDER BY ranked.score DESC, ranked.title_key, tracks.file_id",
            ranges.len() * 2 + 1,
            ranges.len() * 2 + 2
        );

        let mut transaction = self.begin_read(OPERATION).await?;
        let rows = bind_ranges(sqlx::query(&items_sql), &ranges)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *transaction)
            .await
            .map_err(CatalogError::database(OPERATION))?;
        let total: i64 = match rows.first() {
            Some(row) => column(row, "total")?,
            None => {
                let count_sql = format!("{matches} SELECT COUNT(*) AS total FROM hits");
                let row = bind_ranges(sqlx::query(&count_sql), &ranges)
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(CatalogError::database(OPERATION))?;
                column(&row, "total")?
            }
        };
        transaction
            .commit()
            .await
            .map_err(CatalogError::database(OPERATION))?;

        let items = rows.iter().map(track_from_row).collect::<Result<_, _>>()?;
        Ok(page(
            items,
            u64::try_from(total).unwrap_or(0),
            limit,
            offset,
        ))
    }

    /// Returns up to `limit` replica sets in `file_id` order, starting after
    /// `after` (from the start when `None`). Repair walks the whole catalog
    /// by passing the last `file_id` of each page to the next call; `limit`
    /// is clamped to [`MAX_REPLICA_SETS_PAGE_LIMIT`].
    pub async fn replica_sets(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReplicaSet>, CatalogError> {
        let limit = i64::from(limit.min(MAX_REPLICA_SETS_PAGE_LIMIT));
        let query = match after {
            Some(after) => sqlx::query(
                "SELECT file_id, replicas, size_bytes, added_at_ms FROM tracks \
                 WHERE file_id > $1 ORDER BY file_id LIMIT $2",
            )
            .bind(after)
            .bind(limit),
            None => sqlx::query(
                "SELECT file_id, replicas, size_bytes, added_at_ms FROM tracks \
                 ORDER BY file_id LIMIT $1",
            )
            .bind(limit),
        };
        let rows = query
            .fetch_all(&self.reader)
            .await
            .map_err(CatalogError::database("read replica sets"))?;

        rows.iter()
            .map(|row| {
                let file_id: String = column(row, "file_id")?;
                let replicas: String = column(row, "replicas")?;
                let replicas = decode_replicas(&file_id, &replicas)?;
                let size_bytes: i64 = column(row, "size_bytes")?;
                Ok(ReplicaSet {
                    size_bytes: u64::try_from(size_bytes).map_err(|_| {
                        CatalogError::CorruptRow {
                            file_id: file_id.clone(),
                            field: "size_bytes",
                            problem: format!("is negative: {size_bytes}"),
                        }
                    })?,
                    added_at_ms: column(row, "added_at_ms")?,
                    file_id,
                    replicas,
                })
            })
            .collect()
    }
}

pub(super) async fn read_applied_state(
    connection: &mut AnyConnection,
) -> Result<Option<AppliedState>, CatalogError> {
    let row = sqlx::query("SELECT last_applied, last_membership FROM applied_state WHERE id = 1")
        .fetch_optional(connection)
        .await
        .map_err(CatalogError::database("read applied state"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(AppliedState {
        last_applied: column(&row, "last_applied")?,
        last_membership: column(&row, "last_membership")?,
    }))
}

pub(super) async fn count_tracks(connection: &mut AnyConnection) -> Result<u64, CatalogError> {
    let row = sqlx::query("SELECT COUNT(*) AS total FROM tracks")
        .fetch_one(connection)
        .await
        .map_err(CatalogError::database("count tracks"))?;
    let total: i64 = column(&row, "total")?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Builds the listing query for one order, which binds the limit as `$1`
/// and the offset as `$2`. Each order is served by the index on its sort
/// key and `file_id`.
pub(super) fn list_sql(sort: TrackSort, order: SortOrder) -> String {
    let key = match sort {
        TrackSort::Title => "title_key",
        TrackSort::Artist => "artist_key",
        TrackSort::Album => "album_key",
        TrackSort::AddedAt => "added_at_ms",
    };
    let direction = match order {
        SortOrder::Ascending => "ASC",
        SortOrder::Descending => "DESC",
    };
    // The inner query skips `offset` entries of the index on (key, file_id)
    // alone, so a deep page reads full rows for its own tracks only. CROSS
    // JOIN makes SQLite loop over the page and look each track up, rather
    // than walk the whole table in index order; PostgreSQL plans it as an
    // inner join.
    format!(
        "SELECT {TRACK_SELECT} FROM (SELECT file_id FROM tracks \
         ORDER BY {key} {direction}, file_id {direction} LIMIT $1 OFFSET $2) AS page \
         CROSS JOIN tracks WHERE tracks.file_id = page.file_id \
         ORDER BY tracks.{key} {direction}, tracks.file_id {direction}"
    )
}

fn bind_ranges<'q>(query: AnyQuery<'q>, ranges: &'q [(String, String)]) -> AnyQuery<'q> {
    ranges.iter().fold(query, |query, (lower, upper)| {
        query.bind(lower.as_str()).bind(upper.as_str())
    })
}

fn page<T>(items: Vec<T>, total: u64, limit: i64, offset: i64) -> Page<T> {
    Page {
        items,
        total,
        limit: limit.unsigned_abs(),
        offset: offset.unsigned_abs(),
    }
}

/// Checks a search query and folds it into one `[lower, upper)` term range
/// per distinct word. Returns `None` when the query has no word that can
/// match.
fn query_ranges(query: &str) -> Result<Option<Vec<(String, String)>>, CatalogError> {
    let query_chars = query.chars().count();
    if query_chars > MAX_QUERY_CHARS {
        return Err(CatalogError::InvalidQuery {
            parameter: "search query",
            value: format!("of {query_chars} characters"),
            expected: format!("expected at most {MAX_QUERY_CHARS} characters"),
        });
    }

    let mut words = fold_words(query);
    let mut seen = std::collections::HashSet::new();
    words.retain(|word| seen.insert(word.clone()));
    if words.len() > MAX_QUERY_WORDS {
        return Err(CatalogError::InvalidQuery {
            parameter: "search query",
            value: format!("of {} distinct words", words.len()),
            expected: format!("expected at most {MAX_QUERY_WORDS} words"),
        });
    }
    if words.is_empty() {
        return Ok(None);
    }

    let mut ranges = Vec::with_capacity(words.len());
    for word in words {
        // Folded words are alphanumeric, so a bound always exists; a word
        // without one could match no stored term.
        let Some(upper) = prefix_upper_bound(&word) else {
            return Ok(None);
        };
        ranges.push((word, upper));
    }
    Ok(Some(ranges))
}

/// Builds the common table expressions `matches` (one row per word and
/// matching track, with the word's score) and `hits` (tracks that match
/// every word, with their total score). Word `i` binds `$2i+1` (the word)
/// and `$2i+2` (its upper bound).
pub(super) fn search_matches_sql(word_count: usize) -> String {
    let per_word: Vec<String> = (0..word_count)
        .map(|index| {
            let lower = index * 2 + 1;
            let upper = index * 2 + 2;
            format!(
                "SELECT file_id, MAX(CASE WHEN term = ${lower} THEN weight * 2 ELSE weight * 2 - 1 END) \
                 AS score FROM search_terms WHERE term >= ${lower} AND term < ${upper} \
                 GROUP BY file_id"
            )
        })
        .collect();
    format!(
        "WITH matches AS ({}), hits AS (SELECT file_id, CAST(SUM(score) AS BIGINT) AS score \
         FROM matches GROUP BY file_id HAVING COUNT(*) = {word_count})",
        per_word.join(" UNION ALL ")
    )
}
