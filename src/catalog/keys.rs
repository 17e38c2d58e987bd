//! The derived columns stored beside each track: one sort key per listing
//! order and the weighted search terms.
//!
//! A sort key concatenates folded components with a `\u{1}` separator, which
//! sorts below every character a folded component contains, so a shorter
//! component sorts before a longer one that extends it. A missing tag sorts
//! after every present one, in ascending order.

use std::collections::BTreeMap;

use super::fold::{fold_sort_key, fold_words};
use crate::model::Track;

/// Maximum characters of each folded component of a sort key. A key has at
/// most five components, so it stays far below PostgreSQL's B-tree entry
/// limit of about 2.7 KB even when every character takes four bytes.
pub const MAX_SORT_COMPONENT_CHARS: usize = 64;

/// Maximum distinct search terms stored per track. Terms of the most
/// important fields are kept first, so a track with pathological tags still
/// keeps its title words while the index stays bounded per track.
pub const MAX_TERMS_PER_TRACK: usize = 256;

/// Weight of a term found in the title.
pub const TITLE_WEIGHT: i64 = 8;
/// Weight of a term found in the artist.
pub const ARTIST_WEIGHT: i64 = 4;
/// Weight of a term found in the album artist.
pub const ALBUM_ARTIST_WEIGHT: i64 = 2;
/// Weight of a term found in the album.
pub const ALBUM_WEIGHT: i64 = 2;
/// Weight of a term found in the file name.
pub const FILE_NAME_WEIGHT: i64 = 1;

const SEPARATOR: char = '\u{1}';

/// The sort keys of one track.
#[derive(Debug, PartialEq, Eq)]
pub struct SortKeys {
    /// Title, then artist.
    pub title: String,
    /// Artist, album, disc number, track number, title.
    pub artist: String,
    /// Album, album artist (or artist), disc number, track number, title.
    pub album: String,
}

impl SortKeys {
    pub fn of(track: &Track) -> SortKeys {
        let tags = &track.tags;
        let title = text_component(Some(&track.title));
        let artist = text_component(tags.artist.as_deref());
        let album = text_component(tags.album.as_deref());
        let album_artist = text_component(tags.album_artist.as_deref().or(tags.artist.as_deref()));
        let disc = number_component(tags.disc_number);
        let track_number = number_component(tags.track_number);

        SortKeys {
            title: join(&[&title, &artist]),
            artist: join(&[&artist, &album, &disc, &track_number, &title]),
            album: join(&[&album, &album_artist, &disc, &track_number, &title]),
        }
    }
}

/// Formats a text component: a present value gets the prefix `0` and a
/// missing one is `1`, so missing values sort last.
fn text_component(value: Option<&str>) -> String {
    match value {
        Some(text) => format!("0{}", fold_sort_key(text, MAX_SORT_COMPONENT_CHARS)),
        None => "1".to_owned(),
    }
}

/// Zero-padded to the width of `u32::MAX` so that byte order is numeric order.
fn number_component(value: Option<u32>) -> String {
    match value {
        Some(number) => format!("0{number:010}"),
        None => "1".to_owned(),
    }
}

fn join(components: &[&str]) -> String {
    let mut key = String::new();
    for (index, component) in components.iter().enumerate() {
        if index > 0 {
            key.push(SEPARATOR);
        }
        key.push_str(component);
    }
    key
}

/// Returns the distinct folded words of a track's title, artist, album
/// artist, album and file name, each with the weight of the most important
/// field it occurs in, at most [`MAX_TERMS_PER_TRACK`] of them.
pub fn search_terms(track: &Track) -> Vec<(String, i64)> {
    let tags = &track.tags;
    let fields = [
        (Some(track.title.as_str()), TITLE_WEIGHT),
        (tags.artist.as_deref(), ARTIST_WEIGHT),
        (tags.album_artist.as_deref(), ALBUM_ARTIST_WEIGHT),
        (tags.album.as_deref(), ALBUM_WEIGHT),
        (Some(track.file_name.as_str()), FILE_NAME_WEIGHT),
    ];

    let mut terms: BTreeMap<String, i64> = BTreeMap::new();
    'fields: for (text, weight) in fields {
        let Some(text) = text else { continue };
        for word in fold_words(text) {
            if terms.len() >= MAX_TERMS_PER_TRACK && !terms.contains_key(&word) {
                break 'fields;
            }
            let stored = terms.entry(word).or_insert(weight);
            *stored = (*stored).max(weight);
        }
    }
    terms.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrackTags;

    fn track(title: &str, artist: Option<&str>, album: Option<&str>, number: Option<u32>) -> Track {
        Track {
            file_id: "0".repeat(64),
            file_name: "Some File.mp3".to_owned(),
            title: title.to_owned(),
            tags: TrackTags {
                artist: artist.map(str::to_owned),
                album: album.map(str::to_owned),
                track_number: number,
                ..TrackTags::default()
            },
            format: "mp3".to_owned(),
            content_type: "audio/mpeg".to_owned(),
            size_bytes: 1,
            sha256: "0".repeat(64),
            has_cover: false,
            replicas: Vec::new(),
            added_at_ms: 0,
        }
    }

    #[test]
    fn sort_keys_put_missing_tags_last() {
        let tagged = SortKeys::of(&track("A", Some("Zz Top"), None, None));
        let untagged = SortKeys::of(&track("A", None, None, None));
        assert!(tagged.artist < untagged.artist);
        assert!(tagged.title < untagged.title);
    }

    #[test]
    fn sort_keys_order_tracks_numerically() {
        let second = SortKeys::of(&track("Z", Some("X"), Some("Album"), Some(2)));
        let tenth = SortKeys::of(&track("A", Some("X"), Some("Album"), Some(10)));
        assert!(second.album < tenth.album);
        assert!(second.artist < tenth.artist);
    }

    #[test]
    fn sort_keys_put_prefix_first() {
        let short = SortKeys::of(&track("Abba", None, None, None));
        let long = SortKeys::of(&track("Abba Gold", None, None, None));
        assert!(short.title < long.title);
    }

    #[test]
    fn sort_keys_ignore_case_and_accents() {
        let plain = SortKeys::of(&track("Ete", Some("Bjork"), None, None));
        let accented = SortKeys::of(&track("ÉTÉ", Some("Björk"), None, None));
        assert_eq!(plain, accented);
    }

    #[test]
    fn search_terms_keep_highest_weight() {
        let terms = search_terms(&track("Love Song", Some("Love Band"), Some("Songs"), None));
        let weight = |word: &str| terms.iter().find(|(term, _)| term == word).map(|(_, w)| *w);
        assert_eq!(weight("love"), Some(TITLE_WEIGHT));
        assert_eq!(weight("band"), Some(ARTIST_WEIGHT));
        assert_eq!(weight("songs"), Some(ALBUM_WEIGHT));
        assert_eq!(weight("file"), Some(FILE_NAME_WEIGHT));
        assert_eq!(weight("mp3"), Some(FILE_NAME_WEIGHT));
        assert_eq!(weight("missing"), None);
    }

    #[test]
    fn search_terms_are_bounded() {
        let title: Vec<String> = (0..MAX_TERMS_PER_TRACK * 2)
            .map(|i| format!("w{i}"))
            .collect();
        let terms = search_terms(&track(&title.join(" "), Some("Artist"), None, None));
        assert_eq!(terms.len(), MAX_TERMS_PER_TRACK);
        assert!(terms.iter().all(|(_, weight)| *weight == TITLE_WEIGHT));
    }
}
