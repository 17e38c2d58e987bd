//! Tags read from every file of the shared audio corpus and checked against
//! the `expected` column of its `MANIFEST.tsv`, plus synthetic edge cases.

use std::collections::BTreeMap;
use std::io::Cursor;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::*;

const CORPUS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/audio");

/// Manifest keys this test does not compare, with the reason. Any other key
/// must be handled by `check_key`, so a new key in the manifest fails the
/// test until someone decides how to check it.
const NOT_CHECKED: &[(&str, &str)] = &[
    (
        "asserted_by",
        "names the upstream test that asserts the values",
    ),
    ("composer", "read_audio returns no composer"),
    ("grouping", "read_audio returns no grouping"),
    ("lyrics", "read_audio returns no lyrics"),
    ("comment", "read_audio returns no comment"),
    ("comments", "read_audio returns no comment"),
    ("bpm", "read_audio returns no tempo"),
    ("compilation", "read_audio returns no compilation flag"),
    ("label", "read_audio returns no label"),
    ("titlesort", "read_audio returns no sort names"),
    ("encodedby", "read_audio returns no encoder credit"),
    ("media", "read_audio returns no media type"),
    ("mb_trackid", "read_audio returns no MusicBrainz ids"),
    ("mb_releasetrackid", "read_audio returns no MusicBrainz ids"),
    ("mb_albumid", "read_audio returns no MusicBrainz ids"),
    ("mb_artistid", "read_audio returns no MusicBrainz ids"),
    ("freeform", "read_audio returns no freeform atoms"),
    ("encoder", "read_audio returns no encoder name"),
    ("encoder_settings", "read_audio returns no encoder settings"),
    ("date", "the year is checked through the `year` key"),
    ("artists", "checked together with `artist`"),
    ("picture1", "checked through `cover_to_pick`"),
    ("picture2", "checked through `cover_to_pick`"),
    ("pictures", "checked as the expected cover"),
    ("covers", "checked as the expected cover"),
    ("cover_to_pick", "checked as the expected cover"),
    (
        "bitrate",
        "libraries disagree on what a bit rate counts: tags or audio only, nominal or average",
    ),
    ("bitdepth", "TrackTags has no bit depth"),
    ("samples", "the duration derived from it is checked"),
    (
        "codec",
        "names the codec inside the container, and the container is checked",
    ),
    ("codecProfile", "names the encoder preset"),
    ("mpeg", "names the MPEG version and channel mode"),
    (
        "id3",
        "names the tag version, which read_audio does not return",
    ),
    (
        "tagTypes",
        "lists tag types, which read_audio does not return",
    ),
    (
        "id3v1",
        "repeats title, artist and album, which are checked",
    ),
    (
        "id3v2",
        "says a zero-length ID3 chunk must be skipped: checked by the read succeeding",
    ),
];

/// Manifest values that describe a case in words instead of giving a value,
/// with the value this reader must return and why.
const INTERPRETED: &[(&str, &str, &str, &str)] = &[(
    "mp3_id3v1_v2_conflict.mp3",
    "year",
    "2004",
    "ID3v2 TYER says 2004 and ID3v1 says 1337; ID3v2 wins",
)];

/// Manifest values lofty 0.22 does not return, with the reason. The test
/// fails if one of these starts to match, so the list stays current.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "mp3_id3v1_only.mp3",
        "duration_s",
        "the file holds 143 MPEG-1 Layer III frames of 1152 samples at 44.1 kHz, 3.7355 s, \
         which lofty reports; the expected 3.77 s is mutagen's estimate",
    ),
    (
        "mp3_no_tags_xing.mp3",
        "duration_s",
        "the file holds 79 frames of 1152 samples at 44.1 kHz, 2.0637 s, which lofty reports; \
         the expected 2.052 s is the file size over the bit rate (8208 bytes at 32 kbit/s), and \
         the Xing header sits past the first frame where no reader looks for it",
    ),
    (
        "m4a_aac_full.m4a",
        "channels",
        "the mp4a sample entry says 2 channels but the AAC decoder configuration, which lofty \
         reads and a decoder follows, says 1",
    ),
];

/// Tolerance for a duration the manifest gives without one: one
/// millisecond, the resolution of `duration_ms`.
const DEFAULT_DURATION_TOLERANCE_S: f64 = 0.001;

struct ManifestEntry {
    file: String,
    /// The `format` column, such as `mp3 (ID3v1 only)` or `ogg opus`.
    format_column: String,
    expected: BTreeMap<String, String>,
}

fn manifest() -> Vec<ManifestEntry> {
    let path = Path::new(CORPUS_DIR).join("MANIFEST.tsv");
    let text = std::fs::read_to_string(&path).expect("read MANIFEST.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("manifest header").split('\t').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .expect("manifest column")
    };
    let (file_col, format_col, expected_col) =
        (column("file"), column("format"), column("expected"));

    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let expected = fields[expected_col]
                .split(';')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("key=value in expected column");
                    (key.trim().to_string(), value.trim().to_string())
                })
                .collect();
            ManifestEntry {
                file: fields[file_col].to_string(),
                format_column: fields[format_col].to_string(),
                expected,
            }
        })
        .collect()
}

/// Removes a trailing note in parentheses: `5 (no total)` becomes `5`.
fn strip_note(value: &str) -> &str {
    match value.rfind(" (") {
        Some(start) if value.ends_with(')') => value[..start].trim(),
        _ => value.trim(),
    }
}

/// Returns the container name in the `format` column: its first word,
/// except that Opus in Ogg is its own format.
fn expected_format(format_column: &str) -> String {
    if format_column.starts_with("ogg opus") {
        return "opus".to_string();
    }
    format_column
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Parses a value written `N` or `N/TOTAL`.
fn parse_position(value: &str) -> (u32, Option<u32>) {
    let value = strip_note(value);
    match value.split_once('/') {
        Some((number, total)) => (
            number.parse().expect("position number"),
            Some(total.parse().expect("position total")),
        ),
        None => (value.parse().expect("position number"), None),
    }
}

fn compare<T: PartialEq + std::fmt::Debug>(actual: T, expected: T) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!("got {actual:?}, expected {expected:?}"))
    }
}

/// Returns the first item of a `|`-separated list.
fn first_item(value: &str) -> &str {
    strip_note(value).split('|').next().unwrap_or_default()
}

/// Checks an artist against a list-valued manifest artist. It matches when
/// it is the first item, or when it is the whole list as an ID3v2.3 `TPE1`
/// stores it, with `/` between the names, which read_audio keeps unsplit.
/// The manifest's list has duplicates removed, so the stored list is
/// compared after the same.
fn check_artist(actual: Option<&str>, artist: &str, artists: Option<&str>) -> Result<(), String> {
    if actual == Some(artist) {
        return Ok(());
    }
    let Some(artists) = artists else {
        return compare(actual, Some(artist));
    };
    let expected_list: Vec<&str> = artists.split('|').collect();
    let mut stored: Vec<&str> = Vec::new();
    for name in actual.unwrap_or_default().split('/') {
        if !stored.contains(&name) {
            stored.push(name);
        }
    }
    if stored == expected_list {
        return Ok(());
    }
    Err(format!(
        "got {actual:?}, expected {artist:?} or the list {expected_list:?}"
    ))
}

fn check_duration(actual_ms: Option<u64>, value: &str) -> Result<(), String> {
    let value = strip_note(value);
    let (seconds, tolerance) = match value.split_once("+-") {
        Some((seconds, tolerance)) => (
            seconds.parse::<f64>().expect("duration"),
            tolerance.parse::<f64>().expect("tolerance"),
        ),
        None => (
            value.parse::<f64>().expect("duration"),
            DEFAULT_DURATION_TOLERANCE_S,
        ),
    };
    let Some(actual_ms) = actual_ms else {
        return Err(format!("no duration, expected {seconds} s"));
    };
    let actual = actual_ms as f64 / 1000.0;
    // The small epsilon absorbs the binary representation of the bounds.
    if (actual - seconds).abs() <= tolerance + 1e-9 {
        Ok(())
    } else {
        Err(format!(
            "got {actual} s, expected {seconds} s ± {tolerance}"
        ))
    }
}

/// Returns the cover the manifest expects as (MIME type, size in bytes),
/// `Some(None)` for none, or `None` when the manifest gives no picture data.
fn expected_cover(expected: &BTreeMap<String, String>) -> Option<Option<(String, usize)>> {
    if let Some(pick) = expected.get("cover_to_pick") {
        // `the 'album cover' PNG` names the picture by its description.
        let description = pick.split('\'').nth(1).expect("quoted description");
        let needle = format!("desc '{description}'");
        let picture = expected
            .iter()
            .filter(|(key, _)| key.starts_with("picture") && key.as_str() != "pictures")
            .map(|(_, value)| value)
            .find(|value| value.contains(&needle))
            .expect("picture named by cover_to_pick");
        let mime = picture
            .split_whitespace()
            .next()
            .expect("picture mime")
            .to_string();
        let size = number_before(picture, " B)").expect("picture size");
        return Some(Some((mime, size)));
    }

    if expected.get("tags").map(String::as_str) == Some("none") {
        return Some(None);
    }
    let pictures = expected
        .get("pictures")
        .or_else(|| expected.get("covers"))?;
    if strip_note(pictures) == "0" {
        return Some(None);
    }
    // The note describes the first picture, which is the one picked when
    // no picture is a front cover or the first is one.
    let mime = if let Some(start) = pictures.find("image/") {
        pictures[start..]
            .split([',', ' ', ')'])
            .next()
            .unwrap_or_default()
            .to_string()
    } else if pictures.find("PNG") < pictures.find("JPEG").or(Some(usize::MAX)) {
        "image/png".to_string()
    } else {
        "image/jpeg".to_string()
    };
    let size = number_before(pictures, " bytes").expect("picture size in note");
    Some(Some((mime, size)))
}

/// Parses the number right before the first occurrence of `suffix`.
fn number_before(text: &str, suffix: &str) -> Option<usize> {
    let end = text.find(suffix)?;
    let digits_start = text[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    text[digits_start..end].parse().ok()
}

fn check_cover(actual: Option<&Cover>, expected: Option<&(String, usize)>) -> Result<(), String> {
    match (actual, expected) {
        (None, None) => Ok(()),
        (Some(cover), None) => Err(format!("got a {} cover, expected none", cover.mime)),
        (None, Some((mime, size))) => Err(format!("no cover, expected {mime} of {size} bytes")),
        (Some(cover), Some((mime, size))) => {
            compare(
                (cover.mime.as_str(), cover.data.len()),
                (mime.as_str(), *size),
            )?;
            let complete = match mime.as_str() {
                "image/png" => {
                    cover.data.starts_with(b"\x89PNG") && cover.data.ends_with(b"IEND\xaeB`\x82")
                }
                "image/jpeg" => {
                    cover.data.starts_with(&[0xff, 0xd8]) && cover.data.ends_with(&[0xff, 0xd9])
                }
                _ => true,
            };
            if complete {
                Ok(())
            } else {
                Err(format!(
                    "{mime} cover of {size} bytes is not a complete image"
                ))
            }
        }
    }
}

/// Checks one manifest key against a successful read.
fn check_key(
    entry: &ManifestEntry,
    info: &AudioInfo,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let tags = &info.tags;
    let text = |actual: &Option<String>| compare(actual.as_deref(), Some(strip_note(value)));
    let number =
        |actual: Option<u32>| compare(actual, Some(strip_note(value).parse().expect("number")));

    match key {
        "title" => text(&tags.title),
        "album" => text(&tags.album),
        "albumartist" => text(&tags.album_artist),
        "artist" => check_artist(
            tags.artist.as_deref(),
            strip_note(value),
            entry.expected.get("artists").map(|v| strip_note(v)),
        ),
        "genre" => compare(tags.genre.as_deref(), Some(first_item(value))),
        "track" => {
            let (number, total) = parse_position(value);
            compare(tags.track_number, Some(number))?;
            if total.is_some() || value.contains("(no total)") {
                compare(tags.track_total, total)?;
            }
            Ok(())
        }
        "disc" => {
            let (number, total) = parse_position(value);
            compare(tags.disc_number, Some(number))?;
            match total {
                Some(total) => compare(tags.disc_total, Some(total)),
                None => Ok(()),
            }
        }
        "tracktotal" => number(tags.track_total),
        "disctotal" => number(tags.disc_total),
        "year" => {
            let year: i32 = strip_note(value).parse().expect("year");
            compare(tags.year, Some(year))
        }
        "duration_s" => check_duration(tags.duration_ms, value),
        "samplerate" => number(tags.sample_rate),
        "channels" => compare(
            tags.channels,
            Some(strip_note(value).parse().expect("channels")),
        ),
        "format" | "type" => {
            let named = strip_note(value)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            // `format=AAC` in an m4a names the codec inside the container.
            let codec_in_mp4 = named == "aac" && info.format.format == "m4a";
            if named == info.format.format || codec_in_mp4 {
                Ok(())
            } else {
                Err(format!(
                    "got format {}, manifest names {named}",
                    info.format.format
                ))
            }
        }
        "tags" if strip_note(value) == "none" => {
            let empty = TrackTags {
                duration_ms: tags.duration_ms,
                sample_rate: tags.sample_rate,
                channels: tags.channels,
                bitrate_kbps: tags.bitrate_kbps,
                ..TrackTags::default()
            };
            compare(tags, &empty)
        }
        // A description of the tag layout, such as `ID3v1 only`.
        "tags" => Ok(()),
        "size_bytes" => {
            let size = std::fs::metadata(Path::new(CORPUS_DIR).join(&entry.file))
                .expect("metadata")
                .len();
            compare(size, strip_note(value).parse().expect("size"))
        }
        _ => panic!(
            "{}: manifest key {key:?} is neither checked nor in NOT_CHECKED",
            entry.file
        ),
    }
}

/// Value to compare for `key`: the manifest's, or its interpretation.
fn interpreted<'a>(file: &str, key: &str, value: &'a str) -> &'a str {
    INTERPRETED
        .iter()
        .find(|(f, k, _, _)| *f == file && *k == key)
        .map_or(value, |(_, _, interpretation, _)| interpretation)
}

#[test]
fn corpus_matches_manifest() {
    let entries = manifest();
    let mut listed: Vec<&str> = entries.iter().map(|e| e.file.as_str()).collect();
    listed.sort_unstable();
    let mut on_disk: Vec<String> = std::fs::read_dir(CORPUS_DIR)
        .expect("list corpus")
        .map(|entry| {
            entry
                .expect("corpus entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != "MANIFEST.tsv")
        .collect();
    on_disk.sort_unstable();
    assert_eq!(listed, on_disk, "manifest and corpus list different files");

    let mut problems = Vec::new();
    let mut exceptions_seen = Vec::new();
    for entry in &entries {
        let path = Path::new(CORPUS_DIR).join(&entry.file);
        let result = read_audio(&path, &entry.file);

        if entry.expected.contains_key("error") {
            if !matches!(result, Err(TagError::Empty)) {
                problems.push(format!(
                    "{}: expected an error for the empty file, got {result:?}",
                    entry.file
                ));
            }
            continue;
        }
        let info = match result {
            Ok(info) => info,
            Err(error) => {
                problems.push(format!("{}: read failed: {error:?}", entry.file));
                continue;
            }
        };

        let format = expected_format(&entry.format_column);
        if info.format.format != format {
            problems.push(format!(
                "{}: format {} instead of {format}",
                entry.file, info.format.format
            ));
        }

        let mut outcomes: Vec<(&str, Result<(), String>)> = Vec::new();
        for (key, value) in &entry.expected {
            if NOT_CHECKED.iter().any(|(k, _)| k == key) {
                continue;
            }
            let value = interpreted(&entry.file, key, value);
            outcomes.push((key.as_str(), check_key(entry, &info, key, value)));
        }
        if let Some(cover) = expected_cover(&entry.expected) {
            outcomes.push(("cover", check_cover(info.cover.as_ref(), cover.as_ref())));
        }

        for (key, outcome) in outcomes {
            let excepted = EXCEPTIONS
                .iter()
                .find(|(f, k, _)| *f == entry.file && *k == key);
            match (outcome, excepted) {
                (Ok(()), None) => {}
                (Err(message), None) => problems.push(format!("{} {key}: {message}", entry.file)),
                (Err(message), Some((_, _, reason))) => {
                    println!("known exception {} {key}: {message} ({reason})", entry.file);
                    exceptions_seen.push((entry.file.clone(), key.to_string()));
                }
                (Ok(()), Some(_)) => problems.push(format!(
                    "{} {key}: listed in EXCEPTIONS but now matches, remove the exception",
                    entry.file
                )),
            }
        }
    }

    for (file, key, _) in EXCEPTIONS {
        if !exceptions_seen.iter().any(|(f, k)| f == file && k == key)
            && !problems.iter().any(|p| p.contains(file))
        {
            problems.push(format!("{file} {key}: exception never exercised"));
        }
    }
    assert!(
        problems.is_empty(),
        "corpus mismatches:\n{}",
        problems.join("\n")
    );
}

#[test]
fn multi_picture_files_pick_front_cover() {
    for name in [
        "mp3_apic_only_no_text.mp3",
        "flac_two_pictures.flac",
        "ogg_vorbis_pictures.ogg",
    ] {
        let info = read_audio(&Path::new(CORPUS_DIR).join(name), name).expect(name);
        let cover = info.cover.expect("cover");
        assert_eq!(cover.mime, "image/png", "{name}");
        assert_eq!(cover.data.len(), 155, "{name}");
    }
}

#[test]
fn double_unsynchronisation_is_avoided() {
    let name = "mp3_id3v24_unsync_2covers.mp3";
    let info = read_audio(&Path::new(CORPUS_DIR).join(name), name).expect("read");
    let cover = info.cover.expect("cover");
    assert_eq!(cover.mime, "image/jpeg");
    assert_eq!(cover.data.len(), 80_938);
    assert!(
        cover.data.ends_with(&[0xff, 0xd9]),
        "cover is not a complete JPEG"
    );
    assert_eq!(info.tags.title.as_deref(), Some("Home"));
    assert_eq!(info.tags.genre.as_deref(), Some("Soundtrack"));
}

#[test]
fn no_extension_is_sniffed() {
    let path = Path::new(CORPUS_DIR).join("no_ext");
    let info = read_audio(&path, "no_ext").expect("read");
    assert_eq!(info.format.format, "mp3");
    assert_eq!(info.format.content_type, "audio/mpeg");
    // The picture is declared image/jpeg but contains a PNG.
    assert_eq!(info.cover.expect("cover").mime, "image/png");
}

#[test]
fn content_wins_over_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flac = std::fs::read(Path::new(CORPUS_DIR).join("flac_vorbis_full.flac")).expect("read");
    let path = dir.path().join("song.mp3");
    std::fs::write(&path, flac).expect("write");
    let info = read_audio(&path, "song.mp3").expect("read");
    assert_eq!(info.format.format, "flac");
    assert_eq!(info.tags.title.as_deref(), Some("full"));
}

#[test]
fn content_types_per_format() {
    let cases = [
        ("mp3_id3v1_only.mp3", "mp3", "audio/mpeg"),
        ("flac_vorbis_full.flac", "flac", "audio/flac"),
        ("ogg_vorbis_full.ogg", "ogg", "audio/ogg"),
        ("opus_full.opus", "opus", "audio/ogg; codecs=opus"),
        ("m4a_aac_full.m4a", "m4a", "audio/mp4"),
        ("wav_no_tags.wav", "wav", "audio/wav"),
        ("aiff_id3_full.aiff", "aiff", "audio/aiff"),
        ("ape_full.ape", "ape", "audio/x-ape"),
        ("wavpack_full.wv", "wavpack", "audio/x-wavpack"),
    ];
    for (name, format, content_type) in cases {
        let info = read_audio(&Path::new(CORPUS_DIR).join(name), name).expect(name);
        assert_eq!(info.format.format, format, "{name}");
        assert_eq!(info.format.content_type, content_type, "{name}");
    }
}

#[test]
fn opus_reports_decode_sample_rate() {
    let info = read_audio(
        &Path::new(CORPUS_DIR).join("opus_full.opus"),
        "opus_full.opus",
    )
    .expect("read");
    assert_eq!(info.tags.sample_rate, Some(48_000));
}

#[test]
fn empty_files_are_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["empty.mp3", "empty"] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"").expect("write");
        assert!(
            matches!(read_audio(&path, name), Err(TagError::Empty)),
            "{name}"
        );
    }
}

#[test]
fn non_audio_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = 0x5eed_0001_u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut noise = vec![0u8; 64 * 1024];
    rng.fill_bytes(&mut noise);
    let text = "Track list\n1. Intro\n2. Outro\n".repeat(50);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("notes.txt", text.clone().into_bytes()),
        ("notes.mp3", text.into_bytes()),
        ("noise.bin", noise.clone()),
        ("noise.mp3", noise.clone()),
        ("noise", noise),
        (
            "fake.flac",
            b"fLaC but nothing else of a FLAC stream".to_vec(),
        ),
        (
            "tag_only_header.mp3",
            b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let result = read_audio(&path, name);
        assert!(
            matches!(result, Err(TagError::NotAudio { .. })),
            "{name} (noise seed {seed:#x}) gave {result:?}"
        );
    }
}

#[test]
fn broken_tag_keeps_properties() {
    // A FLAC file whose Vorbis comment block claims a vendor string longer
    // than the block: the tag cannot be read, the audio can.
    let mut bytes =
        std::fs::read(Path::new(CORPUS_DIR).join("flac_vorbis_full.flac")).expect("read");
    let comment_block = flac_block_offset(&bytes, 4).expect("vorbis comment block");
    bytes[comment_block + 4..comment_block + 8].copy_from_slice(&0xfff0_0000u32.to_le_bytes());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.flac");
    std::fs::write(&path, &bytes).expect("write");

    let full_read = read_pass(&path, FileType::Flac, parse_options());
    assert!(
        full_read.is_err(),
        "lofty read the broken tag, so this test no longer covers the retry"
    );

    let info = read_audio(&path, "broken.flac").expect("read");
    assert_eq!(info.format.format, "flac");
    assert_eq!(info.tags.title, None);
    assert_eq!(info.tags.duration_ms, Some(1000));
    assert_eq!(info.tags.sample_rate, Some(44_100));
}

/// Offset of the first FLAC metadata block of `block_type`, at its 4-byte
/// block header.
fn flac_block_offset(bytes: &[u8], block_type: u8) -> Option<usize> {
    let mut offset = 4;
    loop {
        let header = bytes.get(offset..offset + 4)?;
        let length = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        if header[0] & 0x7f == block_type {
            return Some(offset);
        }
        if header[0] & 0x80 != 0 {
            return None;
        }
        offset += 4 + length;
    }
}

/// A picture to embed: ID3v2 picture type, declared MIME type and data.
type PictureSpec<'a> = (u8, &'a str, Vec<u8>);

/// A cover choice case: file name, embedded pictures and the expected cover
/// as (MIME type, size in bytes).
type CoverCase<'a> = (&'a str, Vec<PictureSpec<'a>>, Option<(&'a str, usize)>);

/// Builds an ID3v2.3 tag with the given pictures as APIC frames.
fn id3v23_with_pictures(pictures: &[PictureSpec<'_>]) -> Vec<u8> {
    let mut frames = Vec::new();
    for (picture_type, mime, data) in pictures {
        let mut body = vec![0u8];
        body.extend_from_slice(mime.as_bytes());
        body.push(0);
        body.push(*picture_type);
        body.push(0);
        body.extend_from_slice(data);
        frames.extend_from_slice(b"APIC");
        frames.extend_from_slice(&u32::try_from(body.len()).expect("frame size").to_be_bytes());
        frames.extend_from_slice(&[0, 0]);
        frames.extend_from_slice(&body);
    }
    let size = u32::try_from(frames.len()).expect("tag size");
    let syncsafe = [
        (size >> 21) as u8 & 0x7f,
        (size >> 14) as u8 & 0x7f,
        (size >> 7) as u8 & 0x7f,
        size as u8 & 0x7f,
    ];
    let mut tag = b"ID3\x03\x00\x00".to_vec();
    tag.extend_from_slice(&syncsafe);
    tag.extend_from_slice(&frames);
    tag
}

fn png_of(size: usize) -> Vec<u8> {
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    data.resize(size, 0x42);
    data
}

fn jpeg_of(size: usize) -> Vec<u8> {
    let mut data = vec![0xff, 0xd8, 0xff, 0xe0];
    data.resize(size, 0x42);
    data
}

fn mp3_with_pictures(dir: &Path, name: &str, pictures: &[PictureSpec<'_>]) -> PathBuf {
    let audio = std::fs::read(Path::new(CORPUS_DIR).join("mp3_no_tags_xing.mp3")).expect("read");
    let mut bytes = id3v23_with_pictures(pictures);
    bytes.extend_from_slice(&audio);
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

#[test]
fn cover_choice_rules() {
    const OTHER: u8 = 0;
    const FRONT: u8 = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let oversized = MAX_COVER_SIZE_BYTES + 1;

    let cases: Vec<CoverCase<'_>> = vec![
        (
            "front_second.mp3",
            vec![
                (OTHER, "image/jpeg", jpeg_of(300)),
                (FRONT, "image/png", png_of(200)),
            ],
            Some(("image/png", 200)),
        ),
        (
            "no_front.mp3",
            vec![
                (OTHER, "image/jpeg", jpeg_of(300)),
                (OTHER, "image/png", png_of(200)),
            ],
            Some(("image/jpeg", 300)),
        ),
        (
            "front_too_big.mp3",
            vec![
                (FRONT, "image/png", png_of(oversized)),
                (OTHER, "image/png", png_of(200)),
            ],
            Some(("image/png", 200)),
        ),
        (
            "front_at_limit.mp3",
            vec![
                (OTHER, "image/png", png_of(200)),
                (FRONT, "image/jpeg", jpeg_of(MAX_COVER_SIZE_BYTES)),
            ],
            Some(("image/jpeg", MAX_COVER_SIZE_BYTES)),
        ),
        (
            "only_too_big.mp3",
            vec![(FRONT, "image/png", png_of(oversized))],
            None,
        ),
        (
            "declared_wrong.mp3",
            vec![(FRONT, "image/jpeg", png_of(200))],
            Some(("image/png", 200)),
        ),
    ];
    for (name, pictures, expected) in cases {
        let path = mp3_with_pictures(dir.path(), name, &pictures);
        let info = read_audio(&path, name).expect(name);
        let actual = info
            .cover
            .as_ref()
            .map(|cover| (cover.mime.as_str(), cover.data.len()));
        assert_eq!(actual, expected, "{name}");
        assert!(
            info.tags.duration_ms.is_some(),
            "{name}: audio not read after the tag"
        );
    }
}

#[test]
fn patched_reader_rewrites_one_byte() {
    let data: Vec<u8> = (0u8..32).collect();
    let mut reader = PatchedReader::new(Cursor::new(data.clone()), Some(0xaa));
    let mut all = Vec::new();
    let mut piece = [0u8; 3];
    loop {
        let read = reader.read(&mut piece).expect("read");
        if read == 0 {
            break;
        }
        all.extend_from_slice(&piece[..read]);
    }
    let mut expected = data.clone();
    expected[ID3V2_FLAGS_OFFSET as usize] = 0xaa;
    assert_eq!(all, expected);

    reader.seek(SeekFrom::Start(4)).expect("seek");
    let mut two = [0u8; 2];
    reader.read_exact(&mut two).expect("read");
    assert_eq!(two, [4, 0xaa]);

    let mut untouched = PatchedReader::new(Cursor::new(data.clone()), None);
    let mut copy = Vec::new();
    untouched.read_to_end(&mut copy).expect("read");
    assert_eq!(copy, data);
}

#[test]
fn unsync_patch_applies_only_to_v24_tags() {
    let header = |version: u8, flags: u8| {
        let mut bytes = vec![b'I', b'D', b'3', version, 0, flags, 0, 0, 1, 0];
        bytes.extend_from_slice(b"TIT2\x00\x00\x00\x05\x00\x02");
        bytes
    };
    let cases = [
        ("v2.4 unsynchronised", header(4, 0x80), Some(0x00)),
        (
            "v2.4 unsynchronised with extended header",
            header(4, 0xc0),
            Some(0x40),
        ),
        ("v2.4 plain", header(4, 0x00), None),
        ("v2.4 extended header only", header(4, 0x40), None),
        ("v2.3 unsynchronised", header(3, 0x80), None),
        ("v2.2 unsynchronised", header(2, 0x80), None),
        (
            "not a tag",
            b"RIFF\x00\x00\x80\x00\x00\x00\x00".to_vec(),
            None,
        ),
        ("too short", b"ID3\x04\x00\x80".to_vec(), None),
    ];
    for (name, bytes, expected) in cases {
        let mut reader = Cursor::new(bytes);
        assert_eq!(
            id3v24_unsync_header_patch(&mut reader).expect("patch"),
            expected,
            "{name}"
        );
        assert_eq!(reader.position(), 0, "{name}: reader not rewound");
    }
}

#[test]
fn genre_names() {
    let cases = [
        ("(17)", "Rock"),
        ("17", "Rock"),
        ("121", "Punk Rock"),
        ("(0)", "Blues"),
        ("(3)Dance", "Dance"),
        ("Rock", "Rock"),
        ("(999)", "(999)"),
        ("1999", "1999"),
        ("(17", "(17"),
        ("17abc", "17abc"),
        ("()", "()"),
        ("the genre", "the genre"),
    ];
    for (raw, expected) in cases {
        assert_eq!(genre_name(raw), expected, "{raw:?}");
    }
}

#[test]
fn leading_numbers() {
    let cases = [
        ("01", Some(1)),
        ("2001-01-01", Some(2001)),
        ("2018-04-26T13:26:19-05:00", Some(2018)),
        (" 7", Some(7)),
        ("3/11", Some(3)),
        ("", None),
        ("x1", None),
        ("99999999999", None),
    ];
    for (raw, expected) in cases {
        assert_eq!(leading_number(raw), expected, "{raw:?}");
    }
}

#[test]
fn manifest_value_helpers() {
    assert_eq!(strip_note("5 (no total)"), "5");
    assert_eq!(
        strip_note("Friday Night Lights [Original Movie Soundtrack]"),
        "Friday Night Lights [Original Movie Soundtrack]"
    );
    assert_eq!(
        parse_position("3/11 (ID3v2 value wins over the ID3v1 one)"),
        (3, Some(11))
    );
    assert_eq!(
        number_before(
            "image/png desc 'album cover' type 3 front cover (bytes identical to x 155 B)",
            " B)"
        ),
        Some(155)
    );
    assert_eq!(expected_format("ogg opus"), "opus");
    assert_eq!(expected_format("m4a (AAC, covr)"), "m4a");
    assert!(check_artist(Some("a/b/a"), "a", Some("a|b")).is_ok());
    assert!(check_artist(Some("a"), "a", Some("a|b")).is_ok());
    assert!(check_artist(Some("b"), "a", Some("a|b")).is_err());
    assert!(check_duration(Some(1000), "1.0+-0.1").is_ok());
    assert!(check_duration(Some(1101), "1.0+-0.1").is_err());
}

#[test]
fn tags_without_audio_frames_are_kept() {
    // An ID3v2.3 tag followed by zero bytes and no MPEG frame: the format
    // comes from the tag, the values from its Latin-1 frames.
    let name = "mp3_id3v23_latin1_nonascii.mp3";
    let info = read_audio(&Path::new(CORPUS_DIR).join(name), name).expect("read");
    assert_eq!(info.format.format, "mp3");
    assert_eq!(info.tags.title.as_deref(), Some("Suite II Overture"));
    assert_eq!(
        info.tags.artist.as_deref(),
        Some("Janelle Monáe/Roman Gianarthur/Nate Wonder")
    );
    assert_eq!(info.tags.album.as_deref(), Some("The Archandroid"));
    assert_eq!(info.tags.genre.as_deref(), Some("Rock"));
    assert_eq!(info.tags.duration_ms, None);
}

#[test]
fn bitrate_excludes_tag_bytes() {
    // 160 KB of cover art in front of 0.78 s of 128 kbit/s CBR audio. lofty
    // estimates the audio rate from the stream's bytes and duration, which
    // lands near 128; counting the tag would give about 1800.
    let name = "mp3_id3v24_unsync_2covers.mp3";
    let info = read_audio(&Path::new(CORPUS_DIR).join(name), name).expect("read");
    let bitrate_kbps = info.tags.bitrate_kbps.expect("bit rate");
    assert!(
        (120..=140).contains(&bitrate_kbps),
        "bit rate {bitrate_kbps} kbit/s"
    );
}

#[test]
fn errors_cross_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<TagError>();
    assert_send_sync::<AudioInfo>();
}

#[test]
fn repeated_names_dropped_from_list() {
    let cases = [
        ("A/B/C/B", "A/B/C"),
        ("A/A", "A"),
        ("AC/DC", "AC/DC"),
        ("Björk", "Björk"),
        ("A/B/C", "A/B/C"),
    ];
    for (stored, expected) in cases {
        assert_eq!(
            without_repeated_names(stored.to_string()),
            expected,
            "{stored}"
        );
    }
}
