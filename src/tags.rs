//! Reading an uploaded file's format, tags, audio properties and cover art
//! with lofty.
//!
//! The format is sniffed from the content, and the file name's extension is
//! only a hint, used when the content alone is not conclusive. A file is
//! read in up to three passes:
//!
//! 1. tags and properties;
//! 2. properties without tags, so a playable file with a broken tag is
//!    accepted;
//! 3. tags without properties, so a file whose format was recognized from
//!    its content and whose tags are readable is accepted even when its
//!    audio frames are not. It then has no duration.
//!
//! A file can carry several tags (ID3v2 and ID3v1 in an MP3, an ID3 chunk
//! and RIFF INFO in a WAV, APE and ID3v1 in a WavPack). Each field is taken
//! from the first tag that has it, in this order:
//!
//! 1. the format's primary tag: ID3v2 for MP3, WAV and AIFF, Vorbis comments
//!    for FLAC and Ogg, the `ilst` atom for MP4, APE for Monkey's Audio and
//!    WavPack;
//! 2. the format's other rich tags: APE, RIFF INFO, AIFF text chunks;
//! 3. ID3v1.
//!
//! So ID3v2 wins where it disagrees with ID3v1, and ID3v1 fills the fields
//! ID3v2 lacks.
//!
//! Multi-valued fields (several artists or genres) keep their first value as
//! lofty splits them: ID3v2.4 and Vorbis comment values are separate items,
//! while an ID3v2.3 `TPE1` with `/` inside stays one value, because `/` is
//! also part of real names such as "AC/DC". Names repeated in such a value
//! are dropped.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use lofty::config::{ParseOptions, ParsingMode};
use lofty::error::LoftyError;
use lofty::file::{AudioFile, FileType, TaggedFile, TaggedFileExt};
use lofty::picture::{MimeType, Picture, PictureType};
use lofty::probe::Probe;
use lofty::tag::{Accessor, ItemKey, Tag, TagType};

use crate::model::{AudioFormat, Cover, TrackTags};

/// Maximum size of an embedded picture kept as the cover. Larger pictures
/// are skipped, because the cover travels in the Raft log with the track
/// record and is sent to every client that shows the track. 4 MiB fits a
/// 3000x3000 JPEG at high quality.
pub const MAX_COVER_SIZE_BYTES: usize = 4 * 1024 * 1024;

/// Maximum number of bytes searched for the start of the audio stream when
/// sniffing the format. Some files carry padding or junk between a tag and
/// the first frame; 64 KiB covers large padding blocks while bounding the
/// work spent on a file that is not audio.
const MAX_JUNK_BYTES: usize = 64 * 1024;

/// Sample rate every Opus stream decodes at (RFC 7845, section 5.1). The
/// rate in the Opus header is only the rate of the original input.
const OPUS_DECODE_SAMPLE_RATE: u32 = 48_000;

/// Keys some taggers use for the track and disc totals and the disc number
/// where the format has no standard key, or lofty 0.22 does not map the one
/// they use, compared without case.
const TRACK_TOTAL_KEYS: &[&str] = &["TRACKTOTAL", "TOTALTRACKS", "TRACKC"];
const DISC_NUMBER_KEYS: &[&str] = &["DISCNUMBER", "DISC", "PART"];
const DISC_TOTAL_KEYS: &[&str] = &["DISCTOTAL", "TOTALDISCS", "DISCC"];
/// Year keys lofty leaves unmapped, such as a version 2.3 `TYER` frame
/// inside a version 2.4 tag, or `DATE` in an APE tag.
const YEAR_KEYS: &[&str] = &["TYER", "DATE", "YEAR"];

/// Format, tags and cover of an uploaded file.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioInfo {
    pub format: AudioFormat,
    pub tags: TrackTags,
    pub cover: Option<Cover>,
}

/// Failure to read an audio file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    #[error("file is empty")]
    Empty,

    #[error("{file_name} is not a supported audio file")]
    NotAudio {
        file_name: String,
        #[source]
        source: Option<LoftyError>,
    },

    #[error("failed to read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the format, tags, properties and cover of the file at `path`.
/// `file_name` is the name it was uploaded under; its extension is only a
/// hint for the format.
///
/// This does blocking file I/O: call it from `spawn_blocking`.
pub fn read_audio(path: &Path, file_name: &str) -> Result<AudioInfo, TagError> {
    let io_error = |source| TagError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size_bytes = std::fs::metadata(path).map_err(io_error)?.len();
    if size_bytes == 0 {
        return Err(TagError::Empty);
    }

    let not_audio = |source| TagError::NotAudio {
        file_name: file_name.to_string(),
        source,
    };
    let Some(sniffed) = sniff_file_type(path, file_name).map_err(io_error)? else {
        return Err(not_audio(None));
    };
    let Some(format) = audio_format(sniffed.file_type) else {
        return Err(not_audio(None));
    };

    let tagged = read_tagged(path, &sniffed).map_err(not_audio)?;

    let mut tags = merged_tags(&tagged);
    fill_properties(&mut tags, &tagged);
    let cover = pick_cover(tagged.tags());

    tracing::debug!(
        file_name,
        format = format.format,
        has_cover = cover.is_some(),
        "read audio tags"
    );
    Ok(AudioInfo {
        format,
        tags,
        cover,
    })
}

fn parse_options() -> ParseOptions {
    ParseOptions::new()
        .parsing_mode(ParsingMode::Relaxed)
        .max_junk_bytes(MAX_JUNK_BYTES)
}

/// A file type and where it came from.
struct Sniffed {
    file_type: FileType,
    /// Whether the content, not only the extension, identified the type.
    from_content: bool,
}

/// Determines the file type from the content, falling back to the
/// extension of `file_name` when the content is not conclusive. A file that
/// starts with an ID3v2 tag but has no audio frame lofty can find counts as
/// MPEG recognized from its content, because ID3v2 is MPEG audio's tag.
fn sniff_file_type(path: &Path, file_name: &str) -> std::io::Result<Option<Sniffed>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 3];
    let starts_with_id3v2 = reader.read_exact(&mut magic).is_ok() && &magic == b"ID3";
    reader.seek(SeekFrom::Start(0))?;

    let probe = Probe::new(reader)
        .options(parse_options())
        .guess_file_type()?;
    let from_content = probe
        .file_type()
        .or(starts_with_id3v2.then_some(FileType::Mpeg));
    if let Some(file_type) = from_content {
        return Ok(Some(Sniffed {
            file_type,
            from_content: true,
        }));
    }

    let hint = Path::new(file_name)
        .extension()
        .and_then(|extension| extension.to_str())
        .and_then(FileType::from_ext);
    Ok(hint.map(|file_type| Sniffed {
        file_type,
        from_content: false,
    }))
}

/// Reads the file in up to three passes, as the module documentation
/// describes. When no pass is acceptable, returns the error of the first,
/// or `None` if lofty panicked.
fn read_tagged(path: &Path, sniffed: &Sniffed) -> Result<TaggedFile, Option<LoftyError>> {
    let first_error = match read_pass(path, sniffed.file_type, parse_options()) {
        Ok(tagged) => return Ok(tagged),
        Err(error) => error,
    };
    tracing::debug!(error = ?first_error, "reading the file failed, retrying without tags");

    if let Ok(tagged) = read_pass(path, sniffed.file_type, parse_options().read_tags(false)) {
        return Ok(tagged);
    }

    if sniffed.from_content {
        let tags_only = parse_options().read_properties(false);
        if let Ok(tagged) = read_pass(path, sniffed.file_type, tags_only) {
            if has_content(&tagged) {
                tracing::debug!("audio frames unreadable, keeping the tags");
                return Ok(tagged);
            }
        }
    }
    Err(first_error)
}

/// Runs one lofty read. A panic inside lofty, which a crafted upload could
/// trigger, becomes `Err(None)` instead of unwinding into the caller.
fn read_pass(
    path: &Path,
    file_type: FileType,
    options: ParseOptions,
) -> Result<TaggedFile, Option<LoftyError>> {
    let read = || -> Result<TaggedFile, LoftyError> {
        let mut reader = BufReader::new(File::open(path)?);
        let patch = id3v24_unsync_header_patch(&mut reader)?;
        let reader = PatchedReader::new(reader, patch);
        Probe::with_file_type(reader, file_type)
            .options(options)
            .read()
    };

    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result.map_err(Some),
        Err(_) => {
            tracing::warn!(path = %path.display(), ?file_type, "lofty panicked while reading a file");
            Err(None)
        }
    }
}

fn has_content(tagged: &TaggedFile) -> bool {
    tagged
        .tags()
        .iter()
        .any(|tag| tag.item_count() > 0 || tag.picture_count() > 0)
}

/// Offset of the flags byte in an ID3v2 header.
const ID3V2_FLAGS_OFFSET: u64 = 5;
/// ID3v2 header flag: the tag is unsynchronised.
const ID3V2_UNSYNC_FLAG: u8 = 0x80;

/// Works around lofty 0.22 decoding the unsynchronisation of an ID3v2.4 tag
/// twice, once over the whole tag and once per flagged frame. That shifts
/// frame boundaries and corrupts frames holding `FF 00` pairs, such as most
/// JPEG covers. Version 2.4 applies unsynchronisation per frame, so the
/// reader presents the header flag as cleared and lofty decodes each
/// flagged frame once (a corpus test checks the cover bytes). Returns the
/// flags byte to present, if any.
///
/// NOTE: a frame that a writer left unflagged while relying on the header
/// flag alone keeps its `00` stuffing bytes. lofty 0.25 fixes the double
/// decoding itself but needs Rust 1.89.
fn id3v24_unsync_header_patch<R: Read + Seek>(reader: &mut R) -> std::io::Result<Option<u8>> {
    let mut header = [0u8; 10];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    reader.seek(SeekFrom::Start(0))?;

    let flags = header[ID3V2_FLAGS_OFFSET as usize];
    let applies =
        filled == header.len() && header.starts_with(b"ID3\x04") && flags & ID3V2_UNSYNC_FLAG != 0;
    Ok(applies.then_some(flags & !ID3V2_UNSYNC_FLAG))
}

/// A reader that presents the byte at [`ID3V2_FLAGS_OFFSET`] as a given
/// value and is otherwise the underlying reader.
struct PatchedReader<R> {
    inner: R,
    patch: Option<u8>,
    position: u64,
}

impl<R> PatchedReader<R> {
    fn new(inner: R, patch: Option<u8>) -> Self {
        PatchedReader {
            inner,
            patch,
            position: 0,
        }
    }
}

impl<R: Read> Read for PatchedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        if let Some(value) = self.patch {
            let end = self.position + read as u64;
            if (self.position..end).contains(&ID3V2_FLAGS_OFFSET) {
                buf[(ID3V2_FLAGS_OFFSET - self.position) as usize] = value;
            }
        }
        self.position += read as u64;
        Ok(read)
    }
}

impl<R: Seek> Seek for PatchedReader<R> {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        self.position = self.inner.seek(position)?;
        Ok(self.position)
    }
}

/// Maps a lofty file type to the format name and MIME type a stream of it
/// is served with, or `None` for a type this server does not stream.
fn audio_format(file_type: FileType) -> Option<AudioFormat> {
    let (format, content_type) = match file_type {
        FileType::Mpeg => ("mp3", "audio/mpeg"),
        FileType::Flac => ("flac", "audio/flac"),
        FileType::Vorbis => ("ogg", "audio/ogg"),
        FileType::Opus => ("opus", "audio/ogg; codecs=opus"),
        FileType::Speex => ("speex", "audio/ogg; codecs=speex"),
        FileType::Mp4 => ("m4a", "audio/mp4"),
        FileType::Aac => ("aac", "audio/aac"),
        FileType::Wav => ("wav", "audio/wav"),
        FileType::Aiff => ("aiff", "audio/aiff"),
        FileType::Ape => ("ape", "audio/x-ape"),
        FileType::WavPack => ("wavpack", "audio/x-wavpack"),
        FileType::Mpc => ("mpc", "audio/x-musepack"),
        _ => return None,
    };
    Some(AudioFormat {
        format: format.to_string(),
        content_type: content_type.to_string(),
    })
}

/// Drops the repeats from a `/`-separated list of names, as some taggers
/// write an ID3v2.3 `TPE1` ("A/B/C/B" becomes "A/B/C"). A value without a
/// repeated name stays as it is, so "AC/DC" is untouched.
fn without_repeated_names(value: String) -> String {
    let names: Vec<&str> = value.split('/').collect();
    let mut unique: Vec<&str> = Vec::with_capacity(names.len());
    for name in &names {
        if !unique.contains(name) {
            unique.push(name);
        }
    }
    if unique.len() == names.len() {
        value
    } else {
        unique.join("/")
    }
}

/// Orders the file's tags by precedence: primary tag first, ID3v1 last.
fn tags_by_precedence(tagged: &TaggedFile) -> Vec<&Tag> {
    let primary = tagged.primary_tag_type();
    let rank = |tag: &Tag| match tag.tag_type() {
        tag_type if tag_type == primary => 0,
        TagType::Id3v1 => 2,
        _ => 1,
    };
    let mut tags: Vec<&Tag> = tagged.tags().iter().collect();
    tags.sort_by_key(|tag| rank(tag));
    tags
}

/// Merges the text fields of all tags, each from the first tag that has a
/// usable value.
fn merged_tags(tagged: &TaggedFile) -> TrackTags {
    let tags = tags_by_precedence(tagged);
    let text =
        |read: fn(&Tag) -> Option<Cow<'_, str>>| tags.iter().find_map(|tag| non_empty(read(tag)));
    let number =
        |read: fn(&Tag) -> Option<u32>| tags.iter().find_map(|tag| read(tag).filter(|n| *n > 0));

    TrackTags {
        title: text(|tag| tag.title()),
        artist: text(|tag| tag.artist()).map(without_repeated_names),
        album: text(|tag| tag.album()),
        album_artist: text(|tag| tag.get_string(&ItemKey::AlbumArtist).map(Cow::Borrowed))
            .map(without_repeated_names),
        track_number: number(|tag| position_of(tag, &ItemKey::TrackNumber, &[]).0),
        track_total: number(track_total),
        disc_number: number(|tag| position_of(tag, &ItemKey::DiscNumber, DISC_NUMBER_KEYS).0),
        disc_total: number(disc_total),
        year: number(|tag| tag.year().or_else(|| unknown_number(tag, YEAR_KEYS)))
            .and_then(|year| i32::try_from(year).ok()),
        genre: text(|tag| tag.genre()).map(|genre| genre_name(&genre)),
        ..TrackTags::default()
    }
}

fn track_total(tag: &Tag) -> Option<u32> {
    tag.get_string(&ItemKey::TrackTotal)
        .and_then(leading_number)
        .or_else(|| unknown_number(tag, TRACK_TOTAL_KEYS))
        .or_else(|| position_of(tag, &ItemKey::TrackNumber, &[]).1)
}

fn disc_total(tag: &Tag) -> Option<u32> {
    tag.get_string(&ItemKey::DiscTotal)
        .and_then(leading_number)
        .or_else(|| unknown_number(tag, DISC_TOTAL_KEYS))
        .or_else(|| position_of(tag, &ItemKey::DiscNumber, DISC_NUMBER_KEYS).1)
}

fn non_empty(value: Option<Cow<'_, str>>) -> Option<String> {
    let value = value?;
    let trimmed = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if trimmed.is_empty() {
        return None;
    }
    Some(trimmed.to_string())
}

/// Reads a position such as a track number, written `N` or `N/TOTAL`, from
/// `key`, or else from the first of `fallback_keys` present as an unmapped
/// item.
fn position_of(tag: &Tag, key: &ItemKey, fallback_keys: &[&str]) -> (Option<u32>, Option<u32>) {
    let value = tag
        .get_string(key)
        .or_else(|| unknown_text(tag, fallback_keys));
    let Some(value) = value else {
        return (None, None);
    };
    match value.split_once('/') {
        Some((number, total)) => (leading_number(number), leading_number(total)),
        None => (leading_number(value), None),
    }
}

/// Returns the first unmapped item whose key is one of `keys`, compared
/// without case.
fn unknown_text<'a>(tag: &'a Tag, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|wanted| {
        tag.items().find_map(|item| match item.key() {
            ItemKey::Unknown(key) if key.eq_ignore_ascii_case(wanted) => item.value().text(),
            _ => None,
        })
    })
}

fn unknown_number(tag: &Tag, keys: &[&str]) -> Option<u32> {
    leading_number(unknown_text(tag, keys)?)
}

/// Parses the digits at the start of `value` after spaces, so that `01`,
/// `2001-01-01` and `2018-04-26T13:26:19-05:00` all give a number.
fn leading_number(value: &str) -> Option<u32> {
    let value = value.trim_start();
    let digits = value.len() - value.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    value[..digits].parse().ok()
}

/// Replaces an ID3v1 genre index written as `17` or `(17)` by its name. A
/// refinement after the index, as in `(3)Dance`, is the name itself.
fn genre_name(genre: &str) -> String {
    let (index, refinement) = match genre.strip_prefix('(') {
        Some(rest) => match rest.split_once(')') {
            Some(parts) => parts,
            None => return genre.to_string(),
        },
        None => (genre, ""),
    };
    let is_index = (1..=3).contains(&index.len()) && index.bytes().all(|b| b.is_ascii_digit());
    if !is_index {
        return genre.to_string();
    }
    if !refinement.trim().is_empty() {
        return refinement.trim().to_string();
    }
    index
        .parse::<usize>()
        .ok()
        .and_then(|index| lofty::id3::v1::GENRES.get(index))
        .map_or_else(|| genre.to_string(), |name| (*name).to_string())
}

fn fill_properties(tags: &mut TrackTags, tagged: &TaggedFile) {
    let properties = tagged.properties();
    let duration_ms = u64::try_from(properties.duration().as_millis()).unwrap_or(u64::MAX);
    tags.duration_ms = (duration_ms > 0).then_some(duration_ms);
    tags.sample_rate = properties.sample_rate().filter(|rate| *rate > 0);
    if tagged.file_type() == FileType::Opus && tags.sample_rate.is_some() {
        tags.sample_rate = Some(OPUS_DECODE_SAMPLE_RATE);
    }
    tags.channels = properties.channels().filter(|channels| *channels > 0);
    // The audio bit rate leaves out tags, which can be most of a short file.
    tags.bitrate_kbps = properties
        .audio_bitrate()
        .or(properties.overall_bitrate())
        .filter(|rate| *rate > 0);
}

/// Picks the cover: the first front cover (picture type 3) within
/// [`MAX_COVER_SIZE_BYTES`], else the first picture within that size.
fn pick_cover(tags: &[Tag]) -> Option<Cover> {
    let pictures = || {
        tags.iter()
            .flat_map(|tag| tag.pictures())
            .filter(|picture| !picture.data().is_empty())
            .filter(|picture| picture.data().len() <= MAX_COVER_SIZE_BYTES)
    };
    let chosen = pictures()
        .find(|picture| picture.pic_type() == PictureType::CoverFront)
        .or_else(|| pictures().next())?;
    Some(Cover {
        mime: cover_mime(chosen),
        data: chosen.data().to_vec(),
    })
}

/// Determines the picture's MIME type from its magic bytes when possible,
/// because the declared type is often wrong (a PNG declared as `image/jpeg`, or an
/// ID3v2.2 `PIC` format code instead of a MIME type).
fn cover_mime(picture: &Picture) -> String {
    let data = picture.data();
    let sniffed = if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some("image/webp")
    } else if data.starts_with(b"BM") {
        Some("image/bmp")
    } else {
        None
    };
    if let Some(mime) = sniffed {
        return mime.to_string();
    }

    match picture.mime_type() {
        Some(MimeType::Unknown(declared)) if declared.starts_with("image/") => declared.clone(),
        Some(MimeType::Unknown(_)) | None => "application/octet-stream".to_string(),
        Some(known) => known.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests;
