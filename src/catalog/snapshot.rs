//! Catalog snapshots for Raft: a stream that contains the whole catalog and
//! the applied state it corresponds to. It is written and read a page at a
//! time, so neither side keeps the catalog in memory.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "DSPFYCAT" | format version: u32 | frame*
//! frame = length: u32 | postcard-encoded Record of that length
//! frames: Header, one Track per track in file_id order, one Lock per
//!         lock row, one Fault per replica fault, one Draining per
//!         draining member, then End
//! ```
//!
//! The End record repeats the track count and carries the BLAKE3 hash of
//! every byte before the End frame, so import detects a truncated, reordered
//! or corrupted stream. Import applies everything in one transaction that is
//! committed only after the End record checks out, so a bad stream leaves
//! the existing catalog untouched.

use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::read::{count_tracks, read_applied_state};
use super::rows::{
    column, cover_from_row, manifest_from_row, track_from_row, COVER_SELECT, MANIFEST_SELECT,
    TRACK_SELECT,
};
use super::write::{insert_tracks, write_applied_state, NewTrack};
use super::{AppliedState, Catalog, CatalogError, FaultRecord, SnapshotFormatError};
use crate::model::{Cover, FileId, Lock, Manifest, NodeId, Track, TrackTags};

/// Version of the stream layout written by this build. Import rejects any
/// other version.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

/// Maximum encoded size of one record, most of which is the cover picture.
/// The cap keeps a corrupt length prefix from making import allocate without
/// bound. Export rejects a record above it, so it never writes a snapshot
/// that import would reject.
pub const MAX_SNAPSHOT_RECORD_BYTES: u64 = 64 * 1024 * 1024;

const MAGIC: [u8; 8] = *b"DSPFYCAT";

/// Tracks read per page on export. Each page keeps its covers in memory, so
/// this stays small.
const EXPORT_PAGE_TRACKS: i64 = 64;

/// Maximum tracks inserted per batch on import.
const IMPORT_BATCH_TRACKS: usize = 64;

/// Maximum encoded bytes of the records buffered for one import batch,
/// which bounds memory when covers are large.
const IMPORT_BATCH_BYTES: usize = 16 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
enum Record {
    Header(Header),
    Track(Box<TrackRecord>),
    End(End),
    Lock(Lock),
    Fault(FaultRecord),
    Draining { node_id: NodeId, since_ms: i64 },
}

impl Record {
    fn kind(&self) -> &'static str {
        match self {
            Record::Header(_) => "header",
            Record::Track(_) => "track",
            Record::End(_) => "end marker",
            Record::Lock(_) => "lock",
            Record::Fault(_) => "replica fault",
            Record::Draining { .. } => "draining node",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    applied: Option<AppliedState>,
    track_count: u64,
}

/// A track with everything stored beside it. The fields mirror [`Track`]
/// without `has_cover`, which is `cover.is_some()`. A type of its own keeps
/// the snapshot format fixed when the API type changes.
#[derive(Serialize, Deserialize)]
struct TrackRecord {
    file_id: FileId,
    file_name: String,
    title: String,
    tags: TrackTags,
    format: String,
    content_type: String,
    size_bytes: u64,
    sha256: String,
    replicas: Vec<NodeId>,
    added_at_ms: i64,
    manifest: Manifest,
    cover: Option<Cover>,
}

impl TrackRecord {
    fn into_parts(self) -> (Track, Manifest, Option<Cover>) {
        let track = Track {
            file_id: self.file_id,
            file_name: self.file_name,
            title: self.title,
            tags: self.tags,
            format: self.format,
            content_type: self.content_type,
            size_bytes: self.size_bytes,
            sha256: self.sha256,
            has_cover: self.cover.is_some(),
            replicas: self.replicas,
            added_at_ms: self.added_at_ms,
        };
        (track, self.manifest, self.cover)
    }
}

#[derive(Serialize, Deserialize)]
struct End {
    track_count: u64,
    blake3: [u8; 32],
}

impl Catalog {
    /// Writes a snapshot of the whole catalog to `out` and returns the
    /// applied state it corresponds to (`None` for a catalog that has
    /// applied nothing). The catalog is read in pages within one read
    /// transaction, so applies may continue meanwhile without changing what
    /// the snapshot contains. `out` is written synchronously, so pass a file
    /// or a buffer, not a socket that can block for long.
    pub async fn export_snapshot(
        &self,
        out: impl Write + Send,
    ) -> Result<Option<AppliedState>, CatalogError> {
        const OPERATION: &str = "export snapshot";
        let mut out = HashingWriter::new(BufWriter::new(out));
        let mut transaction = self.begin_read(OPERATION).await?;
        let applied = read_applied_state(&mut transaction).await?;
        let track_count = count_tracks(&mut transaction).await?;

        out.write_all(&MAGIC).map_err(io_error)?;
        out.write_all(&SNAPSHOT_FORMAT_VERSION.to_le_bytes())
            .map_err(io_error)?;
        let header = Header {
            applied: applied.clone(),
            track_count,
        };
        write_frame(&mut out, &Record::Header(header))?;

        let mut written = 0_u64;
        let mut after: Option<FileId> = None;
        loop {
            let rows = export_page(&mut transaction, after.as_deref()).await?;
            let Some(last) = rows.last() else { break };
            after = Some(column(last, "file_id")?);
            for row in &rows {
                let record = track_record_from_row(row)?;
                write_frame(&mut out, &Record::Track(Box::new(record)))?;
                written += 1;
            }
        }
        for row in sqlx::query("SELECT name, owner, token, expires_at_ms FROM locks ORDER BY name")
            .fetch_all(&mut *transaction)
            .await
            .map_err(CatalogError::database(OPERATION))?
        {
            write_frame(&mut out, &Record::Lock(super::locks::lock_from_row(&row)?))?;
        }
        for row in sqlx::query(
            "SELECT file_id, node_id, fault, reported_at_ms FROM replica_faults \
             ORDER BY file_id, node_id",
        )
        .fetch_all(&mut *transaction)
        .await
        .map_err(CatalogError::database(OPERATION))?
        {
            write_frame(
                &mut out,
                &Record::Fault(super::locks::fault_from_row(&row)?),
            )?;
        }
        for row in sqlx::query("SELECT node_id, since_ms FROM draining_nodes ORDER BY node_id")
            .fetch_all(&mut *transaction)
            .await
            .map_err(CatalogError::database(OPERATION))?
        {
            let record = Record::Draining {
                node_id: column(&row, "node_id")?,
                since_ms: column(&row, "since_ms")?,
            };
            write_frame(&mut out, &record)?;
        }
        transaction
            .commit()
            .await
            .map_err(CatalogError::database(OPERATION))?;
        if written != track_count {
            // All reads of one read transaction return the same state, so
            // this means the database broke its isolation guarantee.
            return Err(SnapshotFormatError::TrackCountMismatch {
                announced: track_count,
                found: written,
            }
            .into());
        }

        let end = End {
            track_count,
            blake3: *out.hasher.finalize().as_bytes(),
        };
        write_frame(&mut out, &Record::End(end))?;
        out.flush().map_err(io_error)?;
        tracing::info!(track_count, "exported catalog snapshot");
        Ok(applied)
    }

    /// Replaces the whole catalog and its applied state with the snapshot
    /// read from `input`, in one transaction, and returns the applied state
    /// it carried. On any error (bad magic or version, truncated or corrupt
    /// stream, database failure) nothing is changed. `input` is read
    /// synchronously: pass a file or a buffer.
    pub async fn import_snapshot(
        &self,
        input: impl Read + Send,
    ) -> Result<Option<AppliedState>, CatalogError> {
        const OPERATION: &str = "import snapshot";
        let mut input = HashingReader::new(BufReader::new(input));
        read_preamble(&mut input)?;
        let header = match read_frame(&mut input, 0)? {
            Record::Header(header) => header,
            other => return Err(unexpected(0, &other, "header")),
        };

        let mut transaction = self.begin_write(OPERATION).await?;
        for table in [
            "draining_nodes",
            "replica_faults",
            "locks",
            "search_terms",
            "covers",
            "manifests",
            "tracks",
            "applied_state",
        ] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *transaction)
                .await
                .map_err(CatalogError::database(OPERATION))?;
        }

        let mut batch = ImportBatch::default();
        let mut locks = Vec::new();
        let mut faults = Vec::new();
        let mut draining = Vec::new();
        let mut index = 1_u64;
        let end = loop {
            let hash_before_frame = input.hasher.finalize();
            let (record, size_bytes) = read_frame_sized(&mut input, index)?;
            match record {
                Record::Track(record)
                    if locks.is_empty() && faults.is_empty() && draining.is_empty() =>
                {
                    batch.push(*record, size_bytes);
                    if batch.is_full() {
                        batch.flush(&mut transaction).await?;
                    }
                }
                Record::Lock(lock) if faults.is_empty() && draining.is_empty() => locks.push(lock),
                Record::Fault(fault) if draining.is_empty() => faults.push(fault),
                Record::Draining { node_id, since_ms } => draining.push((node_id, since_ms)),
                Record::End(end) => {
                    if end.blake3 != *hash_before_frame.as_bytes() {
                        return Err(SnapshotFormatError::ChecksumMismatch.into());
                    }
                    break end;
                }
                other => {
                    return Err(unexpected(
                        index,
                        &other,
                        "track, lock, replica fault, draining node or end marker in that order",
                    ))
                }
            }
            index += 1;
        };
        batch.flush(&mut transaction).await?;
        check_end(&mut input, &header, &end, batch.imported)?;
        super::locks::insert_locks(&mut transaction, &locks).await?;
        super::locks::insert_faults(&mut transaction, &faults).await?;
        super::locks::insert_draining(&mut transaction, &draining).await?;

        if let Some(applied) = &header.applied {
            write_applied_state(&mut transaction, applied).await?;
        }
        transaction
            .commit()
            .await
            .map_err(CatalogError::database(OPERATION))?;
        tracing::info!(track_count = end.track_count, "imported catalog snapshot");
        Ok(header.applied)
    }
}

async fn export_page(
    connection: &mut sqlx::AnyConnection,
    after: Option<&str>,
) -> Result<Vec<AnyRow>, CatalogError> {
    let select = format!(
        "SELECT {TRACK_SELECT}, {MANIFEST_SELECT}, {COVER_SELECT} FROM tracks \
         LEFT JOIN manifests ON manifests.file_id = tracks.file_id \
         LEFT JOIN covers ON covers.file_id = tracks.file_id"
    );
    let query = match after {
        Some(after) => {
            let sql =
                format!("{select} WHERE tracks.file_id > $1 ORDER BY tracks.file_id LIMIT $2");
            sqlx::query(&sql)
                .bind(after)
                .bind(EXPORT_PAGE_TRACKS)
                .fetch_all(connection)
                .await
        }
        None => {
            let sql = format!("{select} ORDER BY tracks.file_id LIMIT $1");
            sqlx::query(&sql)
                .bind(EXPORT_PAGE_TRACKS)
                .fetch_all(connection)
                .await
        }
    };
    query.map_err(CatalogError::database("export snapshot"))
}

fn track_record_from_row(row: &AnyRow) -> Result<TrackRecord, CatalogError> {
    let track = track_from_row(row)?;
    let manifest_present: Option<Vec<u8>> = column(row, "manifest_sha256")?;
    if manifest_present.is_none() {
        return Err(CatalogError::CorruptRow {
            file_id: track.file_id,
            field: "manifest",
            problem: "is missing".to_owned(),
        });
    }
    let manifest = manifest_from_row(&track.file_id, row)?;
    let cover = cover_from_row(row)?;

    Ok(TrackRecord {
        file_id: track.file_id,
        file_name: track.file_name,
        title: track.title,
        tags: track.tags,
        format: track.format,
        content_type: track.content_type,
        size_bytes: track.size_bytes,
        sha256: track.sha256,
        replicas: track.replicas,
        added_at_ms: track.added_at_ms,
        manifest,
        cover,
    })
}

/// Track records read but not yet inserted.
#[derive(Default)]
struct ImportBatch {
    records: Vec<TrackRecord>,
    size_bytes: usize,
    imported: u64,
}

impl ImportBatch {
    fn push(&mut self, record: TrackRecord, size_bytes: usize) {
        self.records.push(record);
        self.size_bytes += size_bytes;
    }

    fn is_full(&self) -> bool {
        self.records.len() >= IMPORT_BATCH_TRACKS || self.size_bytes >= IMPORT_BATCH_BYTES
    }

    async fn flush(&mut self, connection: &mut sqlx::AnyConnection) -> Result<(), CatalogError> {
        let parts: Vec<_> = self
            .records
            .drain(..)
            .map(TrackRecord::into_parts)
            .collect();
        self.size_bytes = 0;
        let new_tracks: Vec<NewTrack<'_>> = parts
            .iter()
            .map(|(track, manifest, cover)| NewTrack {
                track,
                manifest,
                cover: cover.as_ref(),
            })
            .collect();

        let inserted = insert_tracks(connection, &new_tracks).await?;
        if let Some((track, _, _)) = parts
            .iter()
            .find(|(t, _, _)| !inserted.contains(&t.file_id))
        {
            return Err(SnapshotFormatError::DuplicateTrack {
                file_id: track.file_id.clone(),
            }
            .into());
        }
        self.imported += parts.len() as u64;
        Ok(())
    }
}

fn check_end(
    input: &mut HashingReader<impl Read>,
    header: &Header,
    end: &End,
    imported: u64,
) -> Result<(), CatalogError> {
    for announced in [header.track_count, end.track_count] {
        if announced != imported {
            return Err(SnapshotFormatError::TrackCountMismatch {
                announced,
                found: imported,
            }
            .into());
        }
    }
    let mut byte = [0_u8; 1];
    match input.read(&mut byte) {
        Ok(0) => Ok(()),
        Ok(_) => Err(SnapshotFormatError::TrailingData.into()),
        Err(source) => Err(CatalogError::SnapshotIo { source }),
    }
}

fn read_preamble(input: &mut impl Read) -> Result<(), CatalogError> {
    let mut magic = [0_u8; MAGIC.len()];
    read_exact(input, &mut magic)?;
    if magic != MAGIC {
        return Err(SnapshotFormatError::BadMagic.into());
    }
    let mut version = [0_u8; 4];
    read_exact(input, &mut version)?;
    let version = u32::from_le_bytes(version);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotFormatError::UnsupportedVersion {
            found: version,
            supported: SNAPSHOT_FORMAT_VERSION,
        }
        .into());
    }
    Ok(())
}

fn read_frame(input: &mut impl Read, index: u64) -> Result<Record, CatalogError> {
    read_frame_sized(input, index).map(|(record, _)| record)
}

/// Reads one frame and returns its record and encoded size.
fn read_frame_sized(input: &mut impl Read, index: u64) -> Result<(Record, usize), CatalogError> {
    let mut length = [0_u8; 4];
    read_exact(input, &mut length)?;
    let length = u64::from(u32::from_le_bytes(length));
    if length > MAX_SNAPSHOT_RECORD_BYTES {
        return Err(SnapshotFormatError::RecordTooLarge {
            size_bytes: length,
            max_bytes: MAX_SNAPSHOT_RECORD_BYTES,
        }
        .into());
    }

    // Growing the buffer as bytes arrive, rather than allocating `length`
    // up front, keeps a truncated stream from costing the full length.
    let mut encoded = Vec::new();
    input
        .take(length)
        .read_to_end(&mut encoded)
        .map_err(io_error)?;
    if (encoded.len() as u64) < length {
        return Err(SnapshotFormatError::Truncated.into());
    }
    let record = postcard::from_bytes(&encoded)
        .map_err(|source| SnapshotFormatError::Decode { index, source })?;
    Ok((record, encoded.len()))
}

fn write_frame(out: &mut impl Write, record: &Record) -> Result<(), CatalogError> {
    let encoded =
        postcard::to_stdvec(record).map_err(|source| CatalogError::SnapshotEncode { source })?;
    let length = encoded.len() as u64;
    let too_large = SnapshotFormatError::RecordTooLarge {
        size_bytes: length,
        max_bytes: MAX_SNAPSHOT_RECORD_BYTES,
    };
    if length > MAX_SNAPSHOT_RECORD_BYTES {
        return Err(too_large.into());
    }
    let length = u32::try_from(length).map_err(|_| too_large)?;
    out.write_all(&length.to_le_bytes()).map_err(io_error)?;
    out.write_all(&encoded).map_err(io_error)
}

fn read_exact(input: &mut impl Read, buffer: &mut [u8]) -> Result<(), CatalogError> {
    input
        .read_exact(buffer)
        .map_err(|error| match error.kind() {
            ErrorKind::UnexpectedEof => SnapshotFormatError::Truncated.into(),
            _ => io_error(error),
        })
}

fn io_error(source: std::io::Error) -> CatalogError {
    CatalogError::SnapshotIo { source }
}

fn unexpected(index: u64, found: &Record, expected: &'static str) -> CatalogError {
    SnapshotFormatError::UnexpectedRecord {
        index,
        found: found.kind(),
        expected,
    }
    .into()
}

/// A writer that hashes every byte it passes on.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes every byte it returns.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}
