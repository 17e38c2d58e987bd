//! Conversion between the shared model types and catalog rows.
//!
//! Unsigned integers are stored in signed 64-bit columns, so every value is
//! range-checked in both directions: a command whose value does not fit is
//! rejected, and a stored value out of range is reported as a corrupt row.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Decode, Row, Type};

use super::keys::SortKeys;
use super::{decode_replicas, encode_replicas, CatalogError};
use crate::model::{Cover, Manifest, Track, TrackTags};

/// The track columns every read selects, qualified so that they can be
/// joined with other tables.
pub const TRACK_SELECT: &str = "tracks.file_id, tracks.file_name, tracks.title, tracks.title_tag, \
    tracks.artist, tracks.album, tracks.album_artist, tracks.track_number, \
    tracks.track_total, tracks.disc_number, tracks.disc_total, tracks.year, \
    tracks.genre, tracks.duration_ms, tracks.sample_rate, tracks.channels, \
    tracks.bitrate_kbps, tracks.format, tracks.content_type, tracks.size_bytes, \
    tracks.sha256, tracks.has_cover, tracks.replicas, tracks.added_at_ms";

/// The manifest columns, renamed so that they do not clash with the track
/// columns of the same name in a join.
pub const MANIFEST_SELECT: &str = "manifests.size_bytes AS manifest_size_bytes, \
    manifests.sha256 AS manifest_sha256, manifests.chunk_size AS manifest_chunk_size, \
    manifests.chunk_hashes AS manifest_chunk_hashes";

/// The cover columns; both are NULL in a LEFT JOIN for a track without one.
pub const COVER_SELECT: &str = "covers.mime AS cover_mime, covers.data AS cover_data";

/// The columns written by [`bind_track`], in bind order.
pub const TRACK_INSERT_COLUMNS: &str = "file_id, file_name, title, title_tag, artist, album, \
    album_artist, track_number, track_total, disc_number, disc_total, year, genre, \
    duration_ms, sample_rate, channels, bitrate_kbps, format, content_type, size_bytes, \
    sha256, has_cover, replicas, added_at_ms, title_key, artist_key, album_key";

/// Number of columns in [`TRACK_INSERT_COLUMNS`].
pub const TRACK_INSERT_COLUMN_COUNT: usize = 27;

/// Byte length of a SHA-256 or BLAKE3 hash.
const HASH_BYTES: usize = 32;

const DECODE_OPERATION: &str = "decode catalog row";

pub type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// A track prepared for insertion: range-checked values and derived columns.
pub struct TrackRow<'a> {
    track: &'a Track,
    size_bytes: i64,
    duration_ms: Option<i64>,
    has_cover: bool,
    replicas: String,
    keys: SortKeys,
}

impl<'a> TrackRow<'a> {
    pub fn new(track: &'a Track, has_cover: bool) -> Result<TrackRow<'a>, CatalogError> {
        let size_bytes = signed(&track.file_id, "size_bytes", track.size_bytes)?;
        let duration_ms = track
            .tags
            .duration_ms
            .map(|duration| signed(&track.file_id, "duration_ms", duration))
            .transpose()?;
        Ok(TrackRow {
            track,
            size_bytes,
            duration_ms,
            has_cover,
            replicas: encode_replicas(&track.replicas),
            keys: SortKeys::of(track),
        })
    }
}

/// Binds the values of [`TRACK_INSERT_COLUMNS`] for one track.
pub fn bind_track<'q>(query: AnyQuery<'q>, row: &'q TrackRow<'_>) -> AnyQuery<'q> {
    let track = row.track;
    let tags = &track.tags;
    query
        .bind(track.file_id.as_str())
        .bind(track.file_name.as_str())
        .bind(track.title.as_str())
        .bind(tags.title.as_deref())
        .bind(tags.artist.as_deref())
        .bind(tags.album.as_deref())
        .bind(tags.album_artist.as_deref())
        .bind(tags.track_number.map(i64::from))
        .bind(tags.track_total.map(i64::from))
        .bind(tags.disc_number.map(i64::from))
        .bind(tags.disc_total.map(i64::from))
        .bind(tags.year.map(i64::from))
        .bind(tags.genre.as_deref())
        .bind(row.duration_ms)
        .bind(tags.sample_rate.map(i64::from))
        .bind(tags.channels.map(i64::from))
        .bind(tags.bitrate_kbps.map(i64::from))
        .bind(track.format.as_str())
        .bind(track.content_type.as_str())
        .bind(row.size_bytes)
        .bind(track.sha256.as_str())
        .bind(i64::from(row.has_cover))
        .bind(row.replicas.as_str())
        .bind(track.added_at_ms)
        .bind(row.keys.title.as_str())
        .bind(row.keys.artist.as_str())
        .bind(row.keys.album.as_str())
}

/// Decodes the columns of [`TRACK_SELECT`].
pub fn track_from_row(row: &AnyRow) -> Result<Track, CatalogError> {
    let file_id: String = column(row, "file_id")?;
    let id = file_id.as_str();
    let replicas: String = column(row, "replicas")?;

    let tags = TrackTags {
        title: column(row, "title_tag")?,
        artist: column(row, "artist")?,
        album: column(row, "album")?,
        album_artist: column(row, "album_artist")?,
        track_number: optional_narrow(id, "track_number", column(row, "track_number")?)?,
        track_total: optional_narrow(id, "track_total", column(row, "track_total")?)?,
        disc_number: optional_narrow(id, "disc_number", column(row, "disc_number")?)?,
        disc_total: optional_narrow(id, "disc_total", column(row, "disc_total")?)?,
        year: optional_narrow(id, "year", column(row, "year")?)?,
        genre: column(row, "genre")?,
        duration_ms: optional_narrow(id, "duration_ms", column(row, "duration_ms")?)?,
        sample_rate: optional_narrow(id, "sample_rate", column(row, "sample_rate")?)?,
        channels: optional_narrow(id, "channels", column(row, "channels")?)?,
        bitrate_kbps: optional_narrow(id, "bitrate_kbps", column(row, "bitrate_kbps")?)?,
    };
    let has_cover: i64 = column(row, "has_cover")?;

    Ok(Track {
        file_name: column(row, "file_name")?,
        title: column(row, "title")?,
        tags,
        format: column(row, "format")?,
        content_type: column(row, "content_type")?,
        size_bytes: narrow(id, "size_bytes", column(row, "size_bytes")?)?,
        sha256: column(row, "sha256")?,
        has_cover: has_cover != 0,
        replicas: decode_replicas(id, &replicas)?,
        added_at_ms: column(row, "added_at_ms")?,
        file_id,
    })
}

/// Decodes the columns of [`MANIFEST_SELECT`].
pub fn manifest_from_row(file_id: &str, row: &AnyRow) -> Result<Manifest, CatalogError> {
    let sha256: Vec<u8> = column(row, "manifest_sha256")?;
    let chunk_hashes: Vec<u8> = column(row, "manifest_chunk_hashes")?;
    let corrupt = |field, problem: String| CatalogError::CorruptRow {
        file_id: file_id.to_owned(),
        field,
        problem,
    };

    let sha256: [u8; HASH_BYTES] = sha256.as_slice().try_into().map_err(|_| {
        corrupt(
            "sha256",
            format!("has {} bytes instead of 32", sha256.len()),
        )
    })?;
    if chunk_hashes.len() % HASH_BYTES != 0 {
        let problem = format!("has {} bytes, not a multiple of 32", chunk_hashes.len());
        return Err(corrupt("chunk_hashes", problem));
    }
    let chunk_hashes = chunk_hashes
        .chunks_exact(HASH_BYTES)
        .map(|hash| {
            let mut array = [0; HASH_BYTES];
            array.copy_from_slice(hash);
            array
        })
        .collect();

    Ok(Manifest {
        size_bytes: narrow(
            file_id,
            "manifest size_bytes",
            column(row, "manifest_size_bytes")?,
        )?,
        sha256,
        chunk_size: narrow(file_id, "chunk_size", column(row, "manifest_chunk_size")?)?,
        chunk_hashes,
    })
}

/// Decodes the columns of [`COVER_SELECT`], which are NULL for no cover.
pub fn cover_from_row(row: &AnyRow) -> Result<Option<Cover>, CatalogError> {
    let mime: Option<String> = column(row, "cover_mime")?;
    let data: Option<Vec<u8>> = column(row, "cover_data")?;
    Ok(mime.zip(data).map(|(mime, data)| Cover { mime, data }))
}

/// Manifest values ready to bind, range-checked.
pub struct ManifestRow<'a> {
    pub file_id: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a [u8],
    pub chunk_size: i64,
    pub chunk_hashes: Vec<u8>,
}

impl<'a> ManifestRow<'a> {
    pub fn new(file_id: &'a str, manifest: &'a Manifest) -> Result<ManifestRow<'a>, CatalogError> {
        Ok(ManifestRow {
            file_id,
            size_bytes: signed(file_id, "manifest size_bytes", manifest.size_bytes)?,
            sha256: &manifest.sha256,
            chunk_size: i64::from(manifest.chunk_size),
            chunk_hashes: manifest.chunk_hashes.concat(),
        })
    }
}

pub fn column<'r, T>(row: &'r AnyRow, name: &'static str) -> Result<T, CatalogError>
where
    T: Decode<'r, Any> + Type<Any>,
{
    row.try_get(name)
        .map_err(CatalogError::database(DECODE_OPERATION))
}

fn signed(file_id: &str, field: &'static str, value: u64) -> Result<i64, CatalogError> {
    i64::try_from(value).map_err(|_| CatalogError::ValueOutOfRange {
        file_id: file_id.to_owned(),
        field,
        value: value.to_string(),
    })
}

fn narrow<T: TryFrom<i64>>(
    file_id: &str,
    field: &'static str,
    value: i64,
) -> Result<T, CatalogError> {
    T::try_from(value).map_err(|_| CatalogError::CorruptRow {
        file_id: file_id.to_owned(),
        field,
        problem: format!("value {value} is out of range"),
    })
}

fn optional_narrow<T: TryFrom<i64>>(
    file_id: &str,
    field: &'static str,
    value: Option<i64>,
) -> Result<Option<T>, CatalogError> {
    value.map(|value| narrow(file_id, field, value)).transpose()
}
