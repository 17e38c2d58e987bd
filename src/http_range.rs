//! Parsing of the HTTP `Range` and `If-Range` request headers (RFC 9110,
//! sections 14.1 to 14.4 and 13.1.5) against a representation of known
//! length.
//!
//! The parser returns a decision, not a response: the stream handler turns
//! [`RangeOutcome::Partial`] into `206 Partial Content` with a
//! `Content-Range`, [`RangeOutcome::Unsatisfiable`] into
//! `416 Range Not Satisfiable` with `Content-Range: bytes */{len}`, and
//! [`RangeOutcome::Full`] into `200 OK` with the whole body.
//!
//! A request with several ranges is served as a single range: the first
//! satisfiable one in the order the client listed them. RFC 9110 lets a
//! server send fewer parts than requested as long as the response describes
//! what it sends, and a single `Content-Range` is simpler for every client
//! than `multipart/byteranges`. A client that needs more can read the
//! `Content-Range` of the response and request the rest.

/// Maximum number of range specs examined in one header. A longer list is
/// ignored and the whole representation is served, because RFC 9110 allows
/// ignoring a set of many small ranges and this bounds the work one request
/// can cause.
pub const MAX_RANGE_SPECS: usize = 32;

/// Decision for a request, given its `Range` header and the length of the
/// representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Serve the whole representation with `200 OK`: the header was
    /// malformed, used an unknown unit or listed too many ranges.
    Full,
    /// Serve bytes `start..=end_inclusive` with `206 Partial Content`.
    Partial { start: u64, end_inclusive: u64 },
    /// Respond `416 Range Not Satisfiable`, because the header was valid but
    /// no range overlaps the representation.
    Unsatisfiable,
}

/// One syntactically valid range spec, before it is resolved against a
/// length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeSpec {
    /// `first-last` or `first-` (then `last` is `None`).
    Int { first: u64, last: Option<u64> },
    /// `-suffix`: the last `suffix` bytes.
    Suffix { length: u64 },
}

/// Parses one `Range` header value against a representation of `len` bytes.
///
/// The unit is matched case-insensitively, and whitespace around the value,
/// the `=`, the `-` and the commas is accepted. Positions too large for a
/// `u64` saturate, so they read as "beyond the end" instead of as malformed.
/// With `len == 0` every well-formed byte range is unsatisfiable, including
/// a suffix range, because there is no byte to send.
pub fn parse_range(header: &str, len: u64) -> RangeOutcome {
    let Some(specs) = parse_specs(header) else {
        return RangeOutcome::Full;
    };

    specs
        .into_iter()
        .find_map(|spec| resolve(spec, len))
        .map_or(RangeOutcome::Unsatisfiable, |(start, end_inclusive)| {
            RangeOutcome::Partial {
                start,
                end_inclusive,
            }
        })
}

/// Returns whether an `If-Range` value allows a partial response for a
/// representation whose current entity tag is `etag`.
///
/// RFC 9110 requires the strong comparison here: both tags must be strong
/// (no `W/` prefix) and their opaque parts byte-for-byte equal. An `If-Range`
/// holding an HTTP date never matches, because this server validates by
/// entity tag only, so the client gets the full, current representation.
/// `etag` is given as sent in the `ETag` header, quotes included.
pub fn if_range_matches(if_range: &str, etag: &str) -> bool {
    let (Some(requested), Some(current)) = (strong_tag(if_range), strong_tag(etag)) else {
        return false;
    };
    requested == current
}

/// Returns the opaque part of a strong entity tag, or `None` for a weak tag,
/// a date or anything else.
fn strong_tag(value: &str) -> Option<&str> {
    let value = value.trim();
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('"') {
        return None;
    }
    Some(inner)
}

/// Splits a header into range specs, or `None` when it is not a valid
/// `bytes` ranges-specifier with at most [`MAX_RANGE_SPECS`] specs.
fn parse_specs(header: &str) -> Option<Vec<RangeSpec>> {
    let (unit, set) = header.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }

    let mut specs = Vec::new();
    // The list syntax of RFC 9110 section 5.6.1 allows empty elements, which
    // a recipient skips.
    for element in set.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if specs.len() == MAX_RANGE_SPECS {
            return None;
        }
        specs.push(parse_spec(element)?);
    }

    if specs.is_empty() {
        return None;
    }
    Some(specs)
}

fn parse_spec(element: &str) -> Option<RangeSpec> {
    let (first, last) = element.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());

    if first.is_empty() {
        return Some(RangeSpec::Suffix {
            length: parse_position(last)?,
        });
    }

    let first = parse_position(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(parse_position(last)?)
    };
    // A last position below the first makes the spec, and so the header,
    // invalid (RFC 9110 section 14.1.1).
    if last.is_some_and(|last| last < first) {
        return None;
    }
    Some(RangeSpec::Int { first, last })
}

/// Parses `1*DIGIT`, saturating at `u64::MAX`.
fn parse_position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |value, digit| {
        value
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

/// Resolves a spec against `len` into an inclusive byte range, or `None`
/// when it selects no byte.
fn resolve(spec: RangeSpec, len: u64) -> Option<(u64, u64)> {
    if len == 0 {
        return None;
    }
    let last_byte = len - 1;

    match spec {
        RangeSpec::Int { first, last } => {
            if first > last_byte {
                return None;
            }
            Some((first, last.map_or(last_byte, |last| last.min(last_byte))))
        }
        RangeSpec::Suffix { length } => {
            if length == 0 {
                return None;
            }
            Some((len.saturating_sub(length), last_byte))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeOutcome::{Full, Partial, Unsatisfiable};
    use super::*;

    fn partial(start: u64, end_inclusive: u64) -> RangeOutcome {
        Partial {
            start,
            end_inclusive,
        }
    }

    #[test]
    fn parse_range_cases() {
        let many_specs = format!("bytes={}", vec!["0-0"; MAX_RANGE_SPECS + 1].join(","));
        let max_specs = format!("bytes={}", vec!["5-6"; MAX_RANGE_SPECS].join(","));
        let cases: Vec<(&str, &str, u64, RangeOutcome)> = vec![
            // Single int ranges.
            ("safari probe", "bytes=0-1", 1000, partial(0, 1)),
            ("first byte", "bytes=0-0", 1000, partial(0, 0)),
            ("middle", "bytes=100-199", 1000, partial(100, 199)),
            ("whole by int", "bytes=0-999", 1000, partial(0, 999)),
            ("last byte by int", "bytes=999-999", 1000, partial(999, 999)),
            ("open ended", "bytes=500-", 1000, partial(500, 999)),
            ("open ended from zero", "bytes=0-", 1000, partial(0, 999)),
            ("end clamped", "bytes=900-5000", 1000, partial(900, 999)),
            (
                "end at u64 max",
                "bytes=0-18446744073709551615",
                10,
                partial(0, 9),
            ),
            (
                "end overflows u64",
                "bytes=3-99999999999999999999999",
                10,
                partial(3, 9),
            ),
            ("start at len", "bytes=1000-", 1000, Unsatisfiable),
            ("start past len", "bytes=1500-1600", 1000, Unsatisfiable),
            (
                "start overflows u64",
                "bytes=99999999999999999999999-",
                10,
                Unsatisfiable,
            ),
            // Suffix ranges.
            ("suffix", "bytes=-100", 1000, partial(900, 999)),
            ("suffix one", "bytes=-1", 1000, partial(999, 999)),
            ("suffix equal len", "bytes=-1000", 1000, partial(0, 999)),
            (
                "suffix larger than len",
                "bytes=-5000",
                1000,
                partial(0, 999),
            ),
            (
                "suffix overflows u64",
                "bytes=-99999999999999999999999",
                10,
                partial(0, 9),
            ),
            ("suffix zero", "bytes=-0", 1000, Unsatisfiable),
            // Empty representation.
            ("empty with int", "bytes=0-1", 0, Unsatisfiable),
            ("empty with open", "bytes=0-", 0, Unsatisfiable),
            ("empty with suffix", "bytes=-5", 0, Unsatisfiable),
            ("empty with malformed", "bytes=x", 0, Full),
            // One-byte representation.
            ("one byte open", "bytes=0-", 1, partial(0, 0)),
            ("one byte suffix", "bytes=-10", 1, partial(0, 0)),
            ("one byte past", "bytes=1-", 1, Unsatisfiable),
            // Units.
            ("unit uppercase", "BYTES=0-1", 1000, partial(0, 1)),
            ("unit mixed case", "Bytes=2-3", 1000, partial(2, 3)),
            ("unknown unit", "items=0-1", 1000, Full),
            ("unit prefix only", "byte=0-1", 1000, Full),
            // Whitespace.
            ("outer whitespace", "  bytes=0-1  ", 1000, partial(0, 1)),
            ("around equals", "bytes = 0-1", 1000, partial(0, 1)),
            ("around dash", "bytes=10 - 20", 1000, partial(10, 20)),
            ("around commas", "bytes=0-1 ,  5-6", 1000, partial(0, 1)),
            ("tab", "bytes=\t0-1", 1000, partial(0, 1)),
            // Malformed headers are ignored.
            ("empty header", "", 1000, Full),
            ("no equals", "bytes 0-1", 1000, Full),
            ("empty set", "bytes=", 1000, Full),
            ("only commas", "bytes=,,", 1000, Full),
            ("no dash", "bytes=100", 1000, Full),
            ("only dash", "bytes=-", 1000, Full),
            ("last before first", "bytes=20-10", 1000, Full),
            ("letters", "bytes=a-b", 1000, Full),
            ("plus sign", "bytes=+1-2", 1000, Full),
            ("negative", "bytes=--5", 1000, Full),
            ("double dash", "bytes=1--5", 1000, Full),
            ("decimal", "bytes=1.5-2", 1000, Full),
            ("space inside number", "bytes=1 0-20", 1000, Full),
            ("two equals", "bytes=0-1=2", 1000, Full),
            ("one bad spec spoils all", "bytes=0-1,x-y", 1000, Full),
            ("unicode digit", "bytes=\u{0661}-2", 1000, Full),
            // Several ranges: the first satisfiable one.
            ("two ranges", "bytes=0-1,5-6", 1000, partial(0, 1)),
            (
                "first unsatisfiable",
                "bytes=2000-3000,5-6",
                1000,
                partial(5, 6),
            ),
            ("suffix then int", "bytes=-10,0-1", 1000, partial(990, 999)),
            ("zero suffix then int", "bytes=-0,3-4", 1000, partial(3, 4)),
            (
                "all unsatisfiable",
                "bytes=2000-,3000-4000",
                1000,
                Unsatisfiable,
            ),
            (
                "empty elements skipped",
                "bytes=,0-1,,",
                1000,
                partial(0, 1),
            ),
            ("max specs", max_specs.as_str(), 1000, partial(5, 6)),
            ("too many specs", many_specs.as_str(), 1000, Full),
        ];

        for (name, header, len, expected) in cases {
            assert_eq!(
                parse_range(header, len),
                expected,
                "case {name}: {header:?} len={len}"
            );
        }
    }

    #[test]
    fn partial_never_exceeds_length() {
        let headers = [
            "bytes=0-",
            "bytes=-7",
            "bytes=3-100",
            "bytes=0-0",
            "bytes=-1",
        ];
        for len in 1..20u64 {
            for header in headers {
                if let Partial {
                    start,
                    end_inclusive,
                } = parse_range(header, len)
                {
                    assert!(start <= end_inclusive, "{header} len={len}");
                    assert!(end_inclusive < len, "{header} len={len}");
                }
            }
        }
    }

    #[test]
    fn if_range_cases() {
        let cases = [
            ("same strong tag", "\"abc\"", "\"abc\"", true),
            ("whitespace around", "  \"abc\" ", "\"abc\"", true),
            ("different tag", "\"abd\"", "\"abc\"", false),
            ("case differs", "\"ABC\"", "\"abc\"", false),
            ("weak if-range", "W/\"abc\"", "\"abc\"", false),
            ("weak etag", "\"abc\"", "W/\"abc\"", false),
            ("both weak", "W/\"abc\"", "W/\"abc\"", false),
            (
                "http date",
                "Wed, 21 Oct 2015 07:28:00 GMT",
                "\"abc\"",
                false,
            ),
            ("unquoted", "abc", "\"abc\"", false),
            ("unquoted both", "abc", "abc", false),
            ("missing closing quote", "\"abc", "\"abc\"", false),
            ("embedded quote", "\"a\"b\"", "\"a\"b\"", false),
            ("empty", "", "\"abc\"", false),
            ("empty tags", "\"\"", "\"\"", true),
            ("star", "*", "\"abc\"", false),
        ];
        for (name, if_range, etag, expected) in cases {
            assert_eq!(if_range_matches(if_range, etag), expected, "case {name}");
        }
    }
}
