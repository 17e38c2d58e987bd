//! Blob store tests against real files in temporary directories.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use super::*;

/// Small chunks keep the tests fast while giving every blob several chunks.
const TEST_CHUNK_SIZE: u32 = 1000;

/// Deterministic content: a byte pattern that differs in every chunk, so a
/// chunk written at the wrong offset fails verification.
fn content(size_bytes: usize) -> Vec<u8> {
    (0..size_bytes)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

async fn open_store(root: &Path) -> BlobStore {
    BlobStore::open(root.to_path_buf(), TEST_CHUNK_SIZE)
        .await
        .expect("open blob store")
}

fn staging_entries(root: &Path) -> Vec<String> {
    read_dir_names(&root.join("staging")).expect("list staging")
}

/// Stages `data` through a writer in uneven pieces, then commits it.
async fn store_bytes(store: &BlobStore, data: &[u8]) -> StagedBlobInfo {
    let mut writer = store.staging_writer().await.expect("staging writer");
    for piece in data.chunks(777) {
        writer.write(piece).await.expect("write");
    }
    let staged = writer.finish().await.expect("finish");
    let info = StagedBlobInfo {
        file_id: staged.file_id.clone(),
        manifest: staged.manifest.clone(),
    };
    store.commit_staged(staged).await.expect("commit");
    info
}

struct StagedBlobInfo {
    file_id: FileId,
    manifest: Manifest,
}

async fn read_range(
    store: &BlobStore,
    file_id: &str,
    manifest: &Manifest,
    start: u64,
    end_inclusive: u64,
) -> Result<Vec<u8>, BlobError> {
    let pieces: Vec<Bytes> = store
        .open_range(file_id, manifest, start, end_inclusive)
        .try_collect()
        .await?;
    Ok(pieces.concat())
}

fn invalid<T>(result: &Result<T, BlobError>) -> bool {
    matches!(result, Err(BlobError::InvalidFileId { .. }))
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open blob for corruption");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read byte");
    byte[0] ^= 0x01;
    file.write_all_at(&byte, offset).expect("write byte");
}

#[test]
fn manifest_for_bytes_matches_definition() {
    let data = content(2500);
    let manifest = manifest_for_bytes(&data, TEST_CHUNK_SIZE);
    assert_eq!(manifest.size_bytes, 2500);
    assert_eq!(manifest.chunk_size, TEST_CHUNK_SIZE);
    assert_eq!(manifest.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(manifest.chunk_hashes.len(), 3);
    assert_eq!(
        manifest.chunk_hashes[0],
        *blake3::hash(&data[..1000]).as_bytes()
    );
    assert_eq!(
        manifest.chunk_hashes[1],
        *blake3::hash(&data[1000..2000]).as_bytes()
    );
    assert_eq!(
        manifest.chunk_hashes[2],
        *blake3::hash(&data[2000..]).as_bytes()
    );

    let empty = manifest_for_bytes(&[], TEST_CHUNK_SIZE);
    assert_eq!(empty.size_bytes, 0);
    assert!(empty.chunk_hashes.is_empty());
    assert_eq!(
        hex::encode(empty.sha256),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn validate_file_id_cases() {
    let valid = "a".repeat(64);
    assert!(validate_file_id(&valid).is_ok());
    assert!(validate_file_id(&hex::encode([0x5au8; 32])).is_ok());

    let invalid = [
        String::new(),
        "a".repeat(63),
        "a".repeat(65),
        "A".repeat(64),
        format!("{}g", "a".repeat(63)),
        format!("../{}", "a".repeat(61)),
        format!("{}/..", "a".repeat(61)),
        format!("/{}", "a".repeat(63)),
        "../../../../../../etc/passwd".to_string(),
        format!("{}\0", "a".repeat(63)),
        format!("{}é", "a".repeat(62)),
        format!(" {}", "a".repeat(63)),
    ];
    for file_id in invalid {
        assert!(
            matches!(
                validate_file_id(&file_id),
                Err(BlobError::InvalidFileId { .. })
            ),
            "accepted {file_id:?}"
        );
    }
}

#[tokio::test]
async fn open_creates_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    assert_eq!(store.chunk_size(), TEST_CHUNK_SIZE);
    for sub in ["blobs", "staging", "quarantine", "blobs/00", "blobs/ff"] {
        assert!(dir.path().join(sub).is_dir(), "missing {sub}");
    }
    assert!(store.inventory().await.expect("inventory").is_empty());

    for bad in [0, MAX_CHUNK_SIZE_BYTES + 1] {
        let result = BlobStore::open(dir.path().to_path_buf(), bad).await;
        assert!(matches!(result, Err(BlobError::InvalidChunkSize { .. })));
    }
}

#[tokio::test]
async fn round_trip_with_partial_last_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(10_500);

    let stored = store_bytes(&store, &data).await;
    assert_eq!(stored.manifest, manifest_for_bytes(&data, TEST_CHUNK_SIZE));
    assert_eq!(stored.file_id, hex::encode(Sha256::digest(&data)));
    assert!(store.contains(&stored.file_id).await);
    assert_eq!(
        store.size_bytes(&stored.file_id).await.expect("size"),
        10_500
    );
    assert_eq!(
        store.inventory().await.expect("inventory"),
        vec![stored.file_id.clone()]
    );
    assert!(staging_entries(dir.path()).is_empty());

    let on_disk = dir
        .path()
        .join("blobs")
        .join(&stored.file_id[..2])
        .join(&stored.file_id);
    assert_eq!(std::fs::read(on_disk).expect("read blob"), data);

    for index in 0..11u32 {
        let chunk = store
            .read_chunk(&stored.file_id, &stored.manifest, index)
            .await
            .expect("read chunk");
        let start = index as usize * 1000;
        let end = (start + 1000).min(data.len());
        assert_eq!(&chunk[..], &data[start..end], "chunk {index}");
    }
    let past_end = store
        .read_chunk(&stored.file_id, &stored.manifest, 11)
        .await;
    assert!(matches!(
        past_end,
        Err(BlobError::ChunkOutOfRange {
            chunk_index: 11,
            ..
        })
    ));
}

#[tokio::test]
async fn ranges_return_exact_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(10_500);
    let stored = store_bytes(&store, &data).await;

    let ranges = [
        (0, 0),
        (0, 1),
        (0, 999),
        (0, 1000),
        (999, 1000),
        (1000, 1999),
        (1234, 5678),
        (9999, 10_499),
        (10_499, 10_499),
        (0, 10_499),
    ];
    for (start, end_inclusive) in ranges {
        let bytes = read_range(
            &store,
            &stored.file_id,
            &stored.manifest,
            start,
            end_inclusive,
        )
        .await
        .expect("range");
        assert_eq!(
            bytes,
            &data[start as usize..=end_inclusive as usize],
            "range {start}-{end_inclusive}"
        );
    }

    for (start, end_inclusive) in [(10_500, 10_500), (5, 4), (0, 10_500)] {
        let result = read_range(
            &store,
            &stored.file_id,
            &stored.manifest,
            start,
            end_inclusive,
        )
        .await;
        assert!(
            matches!(result, Err(BlobError::RangeOutOfBounds { .. })),
            "range {start}-{end_inclusive} accepted"
        );
    }
}

#[tokio::test]
async fn range_yields_one_piece_per_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let stored = store_bytes(&store, &content(5000)).await;

    let pieces: Vec<Bytes> = store
        .open_range(&stored.file_id, &stored.manifest, 500, 3499)
        .try_collect()
        .await
        .expect("range");
    let lengths: Vec<usize> = pieces.iter().map(Bytes::len).collect();
    assert_eq!(lengths, vec![500, 1000, 1000, 500]);
}

#[tokio::test]
async fn sizes_around_chunk_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    for size in [1usize, 999, 1000, 1001, 1999, 2000, 2001, 300_000] {
        let data = content(size);
        let stored = store_bytes(&store, &data).await;
        assert_eq!(
            stored.manifest,
            manifest_for_bytes(&data, TEST_CHUNK_SIZE),
            "size {size}"
        );
        let all = read_range(
            &store,
            &stored.file_id,
            &stored.manifest,
            0,
            size as u64 - 1,
        )
        .await
        .expect("range");
        assert_eq!(all, data, "size {size}");
    }
}

#[tokio::test]
async fn writer_batches_large_and_tiny_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(700_000);

    let mut writer = store.staging_writer().await.expect("writer");
    writer.write(&data[..1]).await.expect("write");
    writer.write(&data[1..600_000]).await.expect("write");
    for byte in &data[600_000..600_100] {
        writer
            .write(std::slice::from_ref(byte))
            .await
            .expect("write");
    }
    writer.write(&data[600_100..]).await.expect("write");
    let staged = writer.finish().await.expect("finish");
    assert_eq!(staged.manifest, manifest_for_bytes(&data, TEST_CHUNK_SIZE));
}

#[tokio::test]
async fn zero_byte_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;

    let writer = store.staging_writer().await.expect("writer");
    let staged = writer.finish().await.expect("finish");
    assert_eq!(staged.manifest.size_bytes, 0);
    assert!(staged.manifest.chunk_hashes.is_empty());
    let file_id = staged.file_id.clone();
    let manifest = staged.manifest.clone();
    assert_eq!(file_id, hex::encode(Sha256::digest([])));
    store.commit_staged(staged).await.expect("commit");

    assert!(store.contains(&file_id).await);
    assert_eq!(store.size_bytes(&file_id).await.expect("size"), 0);
    let chunk = store.read_chunk(&file_id, &manifest, 0).await;
    assert!(matches!(chunk, Err(BlobError::ChunkOutOfRange { .. })));
    let range = read_range(&store, &file_id, &manifest, 0, 0).await;
    assert!(matches!(range, Err(BlobError::RangeOutOfBounds { .. })));

    // A replica receives an empty blob with no chunk at all.
    let other = tempfile::tempdir().expect("tempdir");
    let replica = open_store(other.path()).await;
    let receiving = replica
        .begin_receive(&file_id, &manifest)
        .await
        .expect("begin");
    receiving.finish().await.expect("finish");
    assert!(replica.contains(&file_id).await);
}

#[tokio::test]
async fn commit_is_idempotent_and_repairs_bad_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(4321);
    let stored = store_bytes(&store, &data).await;
    let again = store_bytes(&store, &data).await;
    assert_eq!(again.file_id, stored.file_id);
    assert_eq!(store.inventory().await.expect("inventory").len(), 1);
    assert!(staging_entries(dir.path()).is_empty());

    let path = store.layout.blob_path(&stored.file_id);
    flip_byte(&path, 2500);
    let corrupt = store.read_chunk(&stored.file_id, &stored.manifest, 2).await;
    assert!(matches!(
        corrupt,
        Err(BlobError::Corrupt { chunk_index: 2, .. })
    ));

    store_bytes(&store, &data).await;
    assert_eq!(std::fs::read(&path).expect("read blob"), data);
    assert!(staging_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn open_removes_crash_leftovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let kept = store_bytes(&store, &content(3000)).await;

    // What a crash mid-upload leaves: a writer's file, a receiver's
    // preallocated file and an unexpected directory.
    let mut writer = store.staging_writer().await.expect("writer");
    writer.write(&content(300_000)).await.expect("write");
    let receiving = store
        .begin_receive(&kept.file_id, &kept.manifest)
        .await
        .expect("begin");
    std::mem::forget(writer);
    std::mem::forget(receiving);
    std::fs::create_dir(dir.path().join("staging/odd-dir")).expect("mkdir");
    std::fs::write(dir.path().join("staging/odd-dir/file"), b"x").expect("write");
    assert_eq!(staging_entries(dir.path()).len(), 3);
    drop(store);

    let reopened = open_store(dir.path()).await;
    assert!(staging_entries(dir.path()).is_empty());
    assert!(reopened.contains(&kept.file_id).await);
    assert_eq!(
        reopened.inventory().await.expect("inventory"),
        vec![kept.file_id]
    );
}

#[tokio::test]
async fn dropped_writer_and_staged_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;

    let mut writer = store.staging_writer().await.expect("writer");
    writer.write(&content(400_000)).await.expect("write");
    assert_eq!(staging_entries(dir.path()).len(), 1);
    drop(writer);
    assert!(staging_entries(dir.path()).is_empty());

    let mut writer = store.staging_writer().await.expect("writer");
    writer.write(&content(5000)).await.expect("write");
    let staged = writer.finish().await.expect("finish");
    assert!(staged.path.exists());
    let file_id = staged.file_id.clone();
    drop(staged);
    assert!(staging_entries(dir.path()).is_empty());
    assert!(!store.contains(&file_id).await);
    assert!(store.inventory().await.expect("inventory").is_empty());
}

#[tokio::test]
async fn corrupt_chunk_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(5500);
    let stored = store_bytes(&store, &data).await;
    flip_byte(&store.layout.blob_path(&stored.file_id), 3456);

    for index in [0u32, 1, 2, 4, 5] {
        store
            .read_chunk(&stored.file_id, &stored.manifest, index)
            .await
            .expect("intact chunk");
    }
    let result = store.read_chunk(&stored.file_id, &stored.manifest, 3).await;
    match result {
        Err(BlobError::Corrupt {
            file_id,
            chunk_index,
        }) => {
            assert_eq!(file_id, stored.file_id);
            assert_eq!(chunk_index, 3);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // A range stream yields the intact chunks before the bad one, then the
    // error, then ends.
    let mut stream = Box::pin(store.open_range(&stored.file_id, &stored.manifest, 0, 5499));
    let mut good_bytes = 0;
    let error = loop {
        match stream.try_next().await {
            Ok(Some(piece)) => good_bytes += piece.len(),
            Ok(None) => panic!("stream ended without reporting the corrupt chunk"),
            Err(error) => break error,
        }
    };
    assert_eq!(good_bytes, 3000);
    assert!(matches!(error, BlobError::Corrupt { chunk_index: 3, .. }));
    assert!(stream
        .try_next()
        .await
        .expect("stream after error")
        .is_none());

    // A range that avoids the bad chunk still works.
    let tail = read_range(&store, &stored.file_id, &stored.manifest, 4000, 5499)
        .await
        .expect("range after bad chunk");
    assert_eq!(tail, &data[4000..]);
}

#[tokio::test]
async fn truncated_blob_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let stored = store_bytes(&store, &content(3500)).await;
    let path = store.layout.blob_path(&stored.file_id);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(3200).expect("truncate");

    let result = store.read_chunk(&stored.file_id, &stored.manifest, 3).await;
    assert!(matches!(
        result,
        Err(BlobError::Corrupt { chunk_index: 3, .. })
    ));
}

#[tokio::test]
async fn missing_blob_and_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(1500);
    let manifest = manifest_for_bytes(&data, TEST_CHUNK_SIZE);
    let file_id = hex::encode(manifest.sha256);

    assert!(!store.contains(&file_id).await);
    let read = store.read_chunk(&file_id, &manifest, 0).await;
    assert!(matches!(read, Err(BlobError::NotFound { .. })));
    let range = read_range(&store, &file_id, &manifest, 0, 10).await;
    assert!(matches!(range, Err(BlobError::NotFound { .. })));
    assert!(matches!(
        store.size_bytes(&file_id).await,
        Err(BlobError::NotFound { .. })
    ));
    assert!(!store.remove(&file_id).await.expect("remove absent"));

    store_bytes(&store, &data).await;
    assert!(store.remove(&file_id).await.expect("remove"));
    assert!(!store.contains(&file_id).await);
    assert!(store.inventory().await.expect("inventory").is_empty());
}

#[tokio::test]
async fn inventory_skips_foreign_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let first = store_bytes(&store, &content(100)).await;
    let second = store_bytes(&store, &content(200)).await;

    let blobs = dir.path().join("blobs");
    std::fs::write(blobs.join("ab").join("notes.txt"), b"x").expect("write");
    // A valid id in the wrong shard directory is not a blob of this store.
    let misplaced = if first.file_id.starts_with("00") {
        "01"
    } else {
        "00"
    };
    std::fs::write(blobs.join(misplaced).join(&first.file_id), b"x").expect("write");
    std::fs::write(blobs.join("stray-file"), b"x").expect("write");

    let mut expected = vec![first.file_id, second.file_id];
    expected.sort();
    assert_eq!(store.inventory().await.expect("inventory"), expected);
}

#[tokio::test]
async fn path_traversal_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path().join("store").as_path()).await;
    let outside = dir.path().join("secret");
    std::fs::write(&outside, b"secret").expect("write");
    let manifest = manifest_for_bytes(b"secret", TEST_CHUNK_SIZE);

    let attempts = [
        "../secret".to_string(),
        "../../secret".to_string(),
        format!("../{}", "a".repeat(61)),
        "/etc/passwd".to_string(),
        "..".to_string(),
        "ab/../../secret".to_string(),
        "".to_string(),
    ];
    for file_id in &attempts {
        assert!(!store.contains(file_id).await, "contains {file_id:?}");
        assert!(
            invalid(&store.read_chunk(file_id, &manifest, 0).await),
            "read {file_id:?}"
        );
        assert!(
            invalid(&store.size_bytes(file_id).await),
            "size {file_id:?}"
        );
        assert!(invalid(&store.remove(file_id).await), "remove {file_id:?}");
        assert!(
            invalid(&store.begin_receive(file_id, &manifest).await.map(|_| ())),
            "receive {file_id:?}"
        );
        let range = read_range(&store, file_id, &manifest, 0, 1).await;
        assert!(
            matches!(range, Err(BlobError::InvalidFileId { .. })),
            "range {file_id:?}"
        );
    }
    assert_eq!(std::fs::read(&outside).expect("read"), b"secret");
}

#[tokio::test]
async fn receive_verifies_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(3500);
    let manifest = manifest_for_bytes(&data, TEST_CHUNK_SIZE);
    let file_id = hex::encode(manifest.sha256);
    let chunk =
        |i: usize| Bytes::copy_from_slice(&data[i * 1000..((i + 1) * 1000).min(data.len())]);

    let receiving = store
        .begin_receive(&file_id, &manifest)
        .await
        .expect("begin");
    assert_eq!(receiving.chunk_size(), TEST_CHUNK_SIZE);
    assert_eq!(receiving.file_id(), file_id);
    assert_eq!(staging_entries(dir.path()).len(), 1);
    let staging_file = dir
        .path()
        .join("staging")
        .join(&staging_entries(dir.path())[0]);
    assert_eq!(
        std::fs::metadata(&staging_file).expect("metadata").len(),
        3500
    );

    // Chunk 1's bytes offered as chunk 0: right length, wrong hash.
    let swapped = receiving.write_chunk(0, chunk(1)).await;
    assert!(matches!(
        swapped,
        Err(BlobError::ChunkHashMismatch { chunk_index: 0, .. })
    ));

    let mut tampered = chunk(2).to_vec();
    tampered[10] ^= 0xff;
    let tampered = receiving.write_chunk(2, Bytes::from(tampered)).await;
    assert!(matches!(
        tampered,
        Err(BlobError::ChunkHashMismatch { chunk_index: 2, .. })
    ));

    let short = receiving.write_chunk(1, chunk(1).slice(..999)).await;
    assert!(matches!(
        short,
        Err(BlobError::ChunkLengthMismatch {
            chunk_index: 1,
            expected_bytes: 1000,
            actual_bytes: 999,
            ..
        })
    ));
    let last_too_long = receiving.write_chunk(3, chunk(2)).await;
    assert!(matches!(
        last_too_long,
        Err(BlobError::ChunkLengthMismatch { chunk_index: 3, .. })
    ));
    let out_of_range = receiving.write_chunk(4, chunk(3)).await;
    assert!(matches!(
        out_of_range,
        Err(BlobError::ChunkOutOfRange { chunk_index: 4, .. })
    ));

    // Rejected chunks count as not received.
    for index in [3, 1, 0, 2] {
        receiving
            .write_chunk(index, chunk(index as usize))
            .await
            .expect("write chunk");
    }
    // Writing a chunk twice is harmless.
    receiving
        .write_chunk(1, chunk(1))
        .await
        .expect("rewrite chunk");
    receiving.finish().await.expect("finish");

    assert!(staging_entries(dir.path()).is_empty());
    let read = read_range(&store, &file_id, &manifest, 0, 3499)
        .await
        .expect("range");
    assert_eq!(read, data);
}

#[tokio::test]
async fn receive_rejects_bad_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(2500);
    let manifest = manifest_for_bytes(&data, TEST_CHUNK_SIZE);
    let file_id = hex::encode(manifest.sha256);

    let other_id = hex::encode([7u8; 32]);
    let wrong_id = store.begin_receive(&other_id, &manifest).await;
    assert!(matches!(wrong_id, Err(BlobError::FileIdMismatch { .. })));

    let mut missing_hash = manifest.clone();
    missing_hash.chunk_hashes.pop();
    let result = store.begin_receive(&file_id, &missing_hash).await;
    assert!(matches!(
        result,
        Err(BlobError::ChunkCountMismatch {
            expected: 3,
            actual: 2,
            ..
        })
    ));

    let mut zero_chunk = manifest.clone();
    zero_chunk.chunk_size = 0;
    let result = store.begin_receive(&file_id, &zero_chunk).await;
    assert!(matches!(
        result,
        Err(BlobError::InvalidChunkSize { chunk_size: 0 })
    ));

    let mut huge_chunk = manifest.clone();
    huge_chunk.chunk_size = MAX_CHUNK_SIZE_BYTES + 1;
    huge_chunk.chunk_hashes.truncate(1);
    let result = store.begin_receive(&file_id, &huge_chunk).await;
    assert!(matches!(result, Err(BlobError::InvalidChunkSize { .. })));

    assert!(staging_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn missing_chunk_fails_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(4000);
    let manifest = manifest_for_bytes(&data, TEST_CHUNK_SIZE);
    let file_id = hex::encode(manifest.sha256);

    let receiving = store
        .begin_receive(&file_id, &manifest)
        .await
        .expect("begin");
    for index in [0u32, 1, 3] {
        let start = index as usize * 1000;
        receiving
            .write_chunk(index, Bytes::copy_from_slice(&data[start..start + 1000]))
            .await
            .expect("write chunk");
    }
    match receiving.finish().await {
        Err(BlobError::MissingChunks {
            missing,
            chunk_count,
            first_missing,
            ..
        }) => {
            assert_eq!(missing, 1);
            assert_eq!(chunk_count, 4);
            assert_eq!(first_missing, 2);
        }
        other => panic!("expected MissingChunks, got {other:?}"),
    }
    assert!(staging_entries(dir.path()).is_empty());
    assert!(!store.contains(&file_id).await);
}

#[tokio::test]
async fn whole_file_mismatch_fails_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(2500);
    // Chunk hashes of the real data under a SHA-256 that belongs to other
    // content: every chunk verifies, the whole file does not.
    let mut manifest = manifest_for_bytes(&data, TEST_CHUNK_SIZE);
    manifest.sha256 = Sha256::digest(b"other content").into();
    let file_id = hex::encode(manifest.sha256);

    let receiving = store
        .begin_receive(&file_id, &manifest)
        .await
        .expect("begin");
    for index in 0..3u32 {
        let start = index as usize * 1000;
        let end = (start + 1000).min(data.len());
        receiving
            .write_chunk(index, Bytes::copy_from_slice(&data[start..end]))
            .await
            .expect("write chunk");
    }
    let result = receiving.finish().await;
    match result {
        Err(BlobError::ContentMismatch { actual_sha256, .. }) => {
            assert_eq!(actual_sha256, hex::encode(Sha256::digest(&data)));
        }
        other => panic!("expected ContentMismatch, got {other:?}"),
    }
    assert!(staging_entries(dir.path()).is_empty());
    assert!(!store.contains(&file_id).await);
}

#[tokio::test]
async fn dropped_receive_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(2000);
    let manifest = manifest_for_bytes(&data, TEST_CHUNK_SIZE);
    let file_id = hex::encode(manifest.sha256);

    let receiving = store
        .begin_receive(&file_id, &manifest)
        .await
        .expect("begin");
    receiving
        .write_chunk(0, Bytes::copy_from_slice(&data[..1000]))
        .await
        .expect("write chunk");
    drop(receiving);
    assert!(staging_entries(dir.path()).is_empty());
    assert!(!store.contains(&file_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_chunk_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = Arc::new(content(200_500));
    let manifest = manifest_for_bytes(&data, TEST_CHUNK_SIZE);
    let file_id = hex::encode(manifest.sha256);
    let chunk_count = manifest.chunk_hashes.len();
    assert_eq!(chunk_count, 201);

    let receiving = Arc::new(
        store
            .begin_receive(&file_id, &manifest)
            .await
            .expect("begin"),
    );
    // Eight tasks, each writing every eighth chunk from the end backwards,
    // so writes land out of order and overlap in time.
    let mut tasks = Vec::new();
    for lane in 0..8usize {
        let receiving = receiving.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            for index in (0..chunk_count).rev().filter(|i| i % 8 == lane) {
                let start = index * 1000;
                let end = (start + 1000).min(data.len());
                let bytes = Bytes::copy_from_slice(&data[start..end]);
                receiving.write_chunk(index as u32, bytes).await?;
            }
            Ok::<(), BlobError>(())
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("lane");
    }

    let receiving = Arc::try_unwrap(receiving).expect("all lanes finished");
    receiving.finish().await.expect("finish");
    let read = read_range(&store, &file_id, &manifest, 0, 200_499)
        .await
        .expect("range");
    assert_eq!(&read, data.as_ref());
}

fn quarantined_entries(root: &Path) -> Vec<String> {
    read_dir_names(&root.join("quarantine")).expect("list quarantine")
}

#[tokio::test]
async fn quarantine_moves_only_damaged_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let intact = store_bytes(&store, &content(4200)).await;
    let flipped = store_bytes(&store, &content(3100)).await;
    let truncated = store_bytes(&store, &content(2500)).await;
    flip_byte(&store.layout.blob_path(&flipped.file_id), 2999);
    std::fs::OpenOptions::new()
        .write(true)
        .open(store.layout.blob_path(&truncated.file_id))
        .expect("open")
        .set_len(2000)
        .expect("truncate");

    let kept = store.quarantine(&intact.file_id, &intact.manifest).await;
    assert_eq!(kept.expect("quarantine intact"), Quarantine::Intact);
    assert!(store.contains(&intact.file_id).await);

    for damaged in [&flipped, &truncated] {
        let moved = store.quarantine(&damaged.file_id, &damaged.manifest).await;
        assert_eq!(moved.expect("quarantine damaged"), Quarantine::Moved);
        assert!(!store.contains(&damaged.file_id).await);
        let again = store.quarantine(&damaged.file_id, &damaged.manifest).await;
        assert_eq!(again.expect("quarantine again"), Quarantine::NotFound);
    }
    let mut names = quarantined_entries(dir.path());
    names.sort();
    assert_eq!(names.len(), 2);
    assert!(names.iter().any(|n| n.starts_with(&flipped.file_id)));
    assert!(names.iter().any(|n| n.starts_with(&truncated.file_id)));
}

#[tokio::test]
async fn received_blob_replaces_damaged_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let data = content(4500);
    let stored = store_bytes(&store, &data).await;
    let path = store.layout.blob_path(&stored.file_id);
    flip_byte(&path, 1234);
    let found = store.read_chunk(&stored.file_id, &stored.manifest, 1).await;
    assert!(matches!(found, Err(BlobError::Corrupt { .. })));

    // A repair sends the blob while the damaged copy is still in place.
    let receiving = store
        .begin_receive(&stored.file_id, &stored.manifest)
        .await
        .expect("begin");
    for (index, chunk) in data.chunks(TEST_CHUNK_SIZE as usize).enumerate() {
        receiving
            .write_chunk(index as u32, Bytes::copy_from_slice(chunk))
            .await
            .expect("write chunk");
    }
    receiving.finish().await.expect("finish");
    assert_eq!(std::fs::read(&path).expect("read copy"), data);

    // The reader that found the damage quarantines late: the verified copy
    // now in place stays in service.
    let late = store.quarantine(&stored.file_id, &stored.manifest).await;
    assert_eq!(late.expect("late quarantine"), Quarantine::Intact);
    assert!(quarantined_entries(dir.path()).is_empty());
    let read = read_range(&store, &stored.file_id, &stored.manifest, 0, 4499)
        .await
        .expect("range");
    assert_eq!(read, data);
}
