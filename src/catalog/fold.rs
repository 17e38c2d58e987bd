//! Folding of tag text into the words that search and sorting compare.
//!
//! Both databases compare the folded words byte by byte, so search and sort
//! orders are identical on SQLite and PostgreSQL whatever their collations
//! and extensions. Folding lowercases the text, decomposes it (NFKD) and
//! drops combining marks. It then spells out the Latin letters that have no
//! decomposition (`ß`, `æ`, `ø`, ...), drops apostrophes inside words and
//! splits on every other character that is not alphanumeric. So "Björk" and
//! "BJORK" both fold to `bjork`, "It's" to `its`, and "AC/DC" to `ac dc`.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Maximum characters kept of one folded word. Longer words are cut, which
/// keeps index entries small (PostgreSQL rejects B-tree entries above about
/// 2.7 KB) and still lets a query word match the cut word as a prefix.
pub const MAX_WORD_CHARS: usize = 64;

/// Splits `text` into folded words, in order, each cut to [`MAX_WORD_CHARS`].
pub fn fold_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut word_chars = 0;

    for c in folded_chars(text) {
        if is_apostrophe(c) {
            // "It's" and "its" fold alike, as listeners type them either way.
            continue;
        }
        if c.is_alphanumeric() {
            if word_chars < MAX_WORD_CHARS {
                word.push(c);
                word_chars += 1;
            }
        } else if !word.is_empty() {
            words.push(std::mem::take(&mut word));
            word_chars = 0;
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Whether `c` is an apostrophe: ASCII `'` or the typographic U+2019 that
/// tag editors often write.
fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Folds `text` into a sort key: its folded words joined by single spaces,
/// cut to `max_chars` characters.
pub fn fold_sort_key(text: &str, max_chars: usize) -> String {
    let joined = fold_words(text).join(" ");
    match joined.char_indices().nth(max_chars) {
        Some((cut, _)) => joined[..cut].to_owned(),
        None => joined,
    }
}

/// Returns the smallest string greater than every string that starts with
/// `prefix`, so `term >= prefix AND term < bound` selects the terms with that
/// prefix by a range scan. Returns `None` when no such string exists, which
/// only happens when every character of `prefix` is `char::MAX`.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = next_char(last) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Returns the character after `c` in code point order, skipping the
/// surrogate range. Code point order is also the byte order of UTF-8.
fn next_char(c: char) -> Option<char> {
    let mut code = u32::from(c) + 1;
    if (0xD800..=0xDFFF).contains(&code) {
        code = 0xE000;
    }
    char::from_u32(code)
}

fn folded_chars(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars()
        .flat_map(char::to_lowercase)
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(spell_out)
}

/// Replaces a lowercase letter that NFKD leaves whole with the letters a
/// reader would type for it on a plain keyboard.
fn spell_out(c: char) -> SpelledOut {
    let replacement: &'static str = match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'đ' | 'ð' => "d",
        'ł' => "l",
        'þ' => "th",
        'ı' => "i",
        'ħ' => "h",
        _ => return SpelledOut::Same(Some(c)),
    };
    SpelledOut::Replaced(replacement.chars())
}

enum SpelledOut {
    Same(Option<char>),
    Replaced(std::str::Chars<'static>),
}

impl Iterator for SpelledOut {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        match self {
            SpelledOut::Same(c) => c.take(),
            SpelledOut::Replaced(chars) => chars.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_words_drops_apostrophes_inside_words() {
        assert_eq!(fold_words("It's All Over"), ["its", "all", "over"]);
        assert_eq!(
            fold_words("Rock \u{2019}n\u{2019} Roll"),
            ["rock", "n", "roll"]
        );
        assert_eq!(fold_words("'quoted'"), ["quoted"]);
    }

    #[test]
    fn fold_words_drops_accents_and_case() {
        assert_eq!(fold_words("Björk"), ["bjork"]);
        assert_eq!(fold_words("BEYONCÉ"), ["beyonce"]);
        assert_eq!(fold_words("Mönchengladbach"), ["monchengladbach"]);
        assert_eq!(
            fold_words("Sigur Rós – Ágætis byrjun"),
            ["sigur", "ros", "agaetis", "byrjun"]
        );
    }

    #[test]
    fn fold_words_spells_out_undecomposed_letters() {
        assert_eq!(fold_words("Røyksopp"), ["royksopp"]);
        assert_eq!(fold_words("Straße"), ["strasse"]);
        assert_eq!(fold_words("STRASSE"), ["strasse"]);
        assert_eq!(fold_words("Łódź"), ["lodz"]);
        assert_eq!(fold_words("İstanbul"), ["istanbul"]);
    }

    #[test]
    fn fold_words_splits_on_punctuation() {
        assert_eq!(fold_words("AC/DC"), ["ac", "dc"]);
        assert_eq!(fold_words("  it's_100%  "), ["its", "100"]);
        assert_eq!(fold_words("%_*?"), Vec::<String>::new());
        assert_eq!(fold_words(""), Vec::<String>::new());
    }

    #[test]
    fn fold_words_expands_compatibility_forms() {
        assert_eq!(fold_words("ﬁre"), ["fire"]);
        assert_eq!(fold_words("Ｔｏｋｙｏ"), ["tokyo"]);
        assert_eq!(fold_words("²"), ["2"]);
    }

    #[test]
    fn fold_words_keeps_non_latin_scripts() {
        assert_eq!(fold_words("Кино"), ["кино"]);
        assert_eq!(fold_words("坂本 龍一"), ["坂本", "龍一"]);
    }

    #[test]
    fn fold_words_cuts_long_words() {
        let long = "a".repeat(MAX_WORD_CHARS * 3);
        let words = fold_words(&format!("{long} b"));
        assert_eq!(words.len(), 2);
        assert_eq!(words[0].chars().count(), MAX_WORD_CHARS);
        assert_eq!(words[1], "b");
    }

    #[test]
    fn fold_sort_key_joins_and_cuts() {
        assert_eq!(fold_sort_key("The  Beatles!", 100), "the beatles");
        assert_eq!(fold_sort_key("Émilie Simon", 5), "emili");
        assert_eq!(fold_sort_key("ÿÿÿ", 2), "yy");
    }

    #[test]
    fn prefix_upper_bound_bounds_every_extension() {
        assert_eq!(prefix_upper_bound("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_upper_bound("az").as_deref(), Some("a{"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);

        let bound = prefix_upper_bound("bjo").unwrap_or_default();
        for term in ["bjo", "bjork", "bjo\u{10FFFF}", "bjoz"] {
            assert!(term.as_bytes() >= "bjo".as_bytes(), "{term} below prefix");
            assert!(term.as_bytes() < bound.as_bytes(), "{term} not below bound");
        }
        assert!("bjp".as_bytes() >= bound.as_bytes());
    }
}
