//! Bounded plist decoding: the only way bytes from outside (device bodies, admin `Raw`
//! commands, profiles in policies, stored results) become a `plist::Value`.
//!
//! A plist is read as a stream of events and built with an explicit stack, so neither reading
//! nor dropping the result recurses deeper than `max_depth`. Every event counts against the
//! limits as it is read, which matters for binary plists: an object may be referenced many
//! times, and each reference expands it again (a few kilobytes can describe a billion
//! leaves). The decoder stops at the first limit it crosses and names it.

use plist::stream::{Event, Reader};
use plist::{Dictionary, Value};

/// How large a decoded plist may become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlistLimits {
    /// Nesting of arrays and dictionaries; the top-level container is depth 1.
    pub max_depth: usize,
    /// Objects of any kind (containers, keys and leaves), counted every time they are reached.
    pub max_objects: usize,
    /// Bytes of strings, keys and data, plus a fixed charge per object, after expansion.
    pub max_expanded_bytes: usize,
}

/// What every decoder uses unless a caller has a reason to be stricter. The largest honest
/// device answers (InstalledApplicationList of a Mac with thousands of apps, CertificateList)
/// stay far below these: depth under 10, objects in the tens of thousands.
pub const DEFAULT_LIMITS: PlistLimits = PlistLimits {
    max_depth: 64,
    max_objects: 500_000,
    max_expanded_bytes: 64 * 1024 * 1024,
};

/// The charge for one object beyond its text or data: about what a `Value` costs in memory.
const OBJECT_OVERHEAD_BYTES: usize = 32;

/// Why bytes were not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlistDecodeError {
    #[error("not a valid plist: {0}")]
    Invalid(String),
    #[error("plist nests deeper than the limit of {limit} levels")]
    TooDeep { limit: usize },
    #[error(
        "plist has more than the limit of {limit} objects (shared references count each time)"
    )]
    TooManyObjects { limit: usize },
    #[error("plist expands to more than the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

impl PlistDecodeError {
    /// True when the document was refused for its size or shape rather than its syntax.
    pub fn is_limit(&self) -> bool {
        !matches!(self, Self::Invalid(_))
    }
}

/// A container being filled.
enum Open {
    Array(Vec<Value>),
    Dict {
        dict: Dictionary,
        pending_key: Option<String>,
    },
}

/// Decodes XML or binary plist bytes within `DEFAULT_LIMITS`.
pub fn decode(raw: &[u8]) -> Result<Value, PlistDecodeError> {
    decode_with(raw, &DEFAULT_LIMITS)
}

/// Decodes XML or binary plist bytes within `limits`.
pub fn decode_with(raw: &[u8], limits: &PlistLimits) -> Result<Value, PlistDecodeError> {
    if raw.is_empty() {
        return Err(PlistDecodeError::Invalid("empty document".into()));
    }
    // Only the encodings devices and profiles use. The old ASCII (OpenStep) form would read
    // almost any text as a string, which an error message might then repeat.
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let skip_bom = raw[start..]
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&raw[start..]);
    if !(raw.starts_with(b"bplist") || skip_bom.starts_with(b"<")) {
        return Err(PlistDecodeError::Invalid(
            "neither an XML nor a binary plist".into(),
        ));
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut objects = 0usize;
    let mut expanded = 0usize;
    for event in Reader::new(std::io::Cursor::new(raw)) {
        let event = event.map_err(|e| PlistDecodeError::Invalid(e.to_string()))?;
        objects += 1;
        if objects > limits.max_objects {
            return Err(PlistDecodeError::TooManyObjects {
                limit: limits.max_objects,
            });
        }
        expanded = expanded.saturating_add(OBJECT_OVERHEAD_BYTES + payload_len(&event));
        if expanded > limits.max_expanded_bytes {
            return Err(PlistDecodeError::TooLarge {
                limit: limits.max_expanded_bytes,
            });
        }
        let finished = match event {
            Event::StartArray(_) | Event::StartDictionary(_) => {
                if stack.len() >= limits.max_depth {
                    return Err(PlistDecodeError::TooDeep {
                        limit: limits.max_depth,
                    });
                }
                stack.push(match event {
                    Event::StartArray(_) => Open::Array(Vec::new()),
                    _ => Open::Dict {
                        dict: Dictionary::new(),
                        pending_key: None,
                    },
                });
                continue;
            }
            Event::EndCollection => match stack.pop() {
                Some(Open::Array(items)) => Value::Array(items),
                Some(Open::Dict {
                    dict,
                    pending_key: None,
                }) => Value::Dictionary(dict),
                Some(Open::Dict {
                    pending_key: Some(key),
                    ..
                }) => {
                    return Err(PlistDecodeError::Invalid(format!(
                        "dictionary key {key:?} has no value"
                    )))
                }
                None => return Err(PlistDecodeError::Invalid("unbalanced end".into())),
            },
            Event::Boolean(b) => Value::Boolean(b),
            Event::Data(d) => Value::Data(d.into_owned()),
            Event::Date(d) => Value::Date(writable_date(d)?),
            Event::Integer(i) => Value::Integer(i),
            Event::Real(r) => Value::Real(r),
            Event::String(s) => Value::String(s.into_owned()),
            // Archiver object references: no MDM message carries them, and an XML plist
            // (what commands are sent as) cannot hold them.
            Event::Uid(_) => {
                return Err(PlistDecodeError::Invalid(
                    "UID values (keyed-archiver references) are not accepted".into(),
                ))
            }
            _ => {
                return Err(PlistDecodeError::Invalid(
                    "unsupported plist element".into(),
                ))
            }
        };
        match stack.last_mut() {
            None => return Ok(finished),
            Some(Open::Array(items)) => items.push(finished),
            Some(Open::Dict { dict, pending_key }) => match pending_key.take() {
                Some(key) => {
                    dict.insert(key, finished);
                }
                None => match finished {
                    Value::String(key) => *pending_key = Some(key),
                    other => {
                        return Err(PlistDecodeError::Invalid(format!(
                            "dictionary key is {}, expected a string",
                            super::dict::kind(&other)
                        )))
                    }
                },
            },
        }
    }
    Err(PlistDecodeError::Invalid(if stack.is_empty() {
        "no value in document".into()
    } else {
        "document ends inside an array or dictionary".into()
    }))
}

/// Decodes bytes into a serde type within `DEFAULT_LIMITS`.
pub fn decode_into<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, PlistDecodeError> {
    let value = decode(raw)?;
    // The decoder's own message quotes values, and a document may be a file it should not
    // be: say only what shape it has.
    plist::from_value(&value).map_err(|_| {
        PlistDecodeError::Invalid(format!(
            "not the expected structure (the top level is {})",
            super::dict::kind(&value)
        ))
    })
}

/// Dates that can be written back as XML (`<date>` is RFC 3339: years 0000–9999). A binary
/// plist can hold any number of seconds, and formatting one outside that range panics deep in
/// the plist crate, wherever the value is later shown or stored.
fn writable_date(date: plist::Date) -> Result<plist::Date, PlistDecodeError> {
    /// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z, in seconds from the Unix epoch.
    const FIRST: i64 = -62_167_219_200;
    const LAST: i64 = 253_402_300_799;
    let time = std::time::SystemTime::from(date);
    let seconds = match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs())
            .map(|s| -s)
            .unwrap_or(i64::MIN),
    };
    if (FIRST..=LAST).contains(&seconds) {
        Ok(date)
    } else {
        Err(PlistDecodeError::Invalid(
            "a date lies outside the years 0000–9999".into(),
        ))
    }
}

fn payload_len(event: &Event<'_>) -> usize {
    match event {
        Event::Data(d) => d.len(),
        Event::String(s) => s.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_xml(depth: usize, open: &str, close: &str) -> Vec<u8> {
        let mut s = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0">"#);
        for _ in 0..depth {
            s.push_str(open);
        }
        for _ in 0..depth {
            s.push_str(close);
        }
        s.push_str("</plist>");
        s.into_bytes()
    }

    /// A binary plist of `levels` arrays, each holding the next one `fanout` times by
    /// reference: `fanout^levels` leaves from a few hundred bytes.
    pub(crate) fn shared_reference_bomb(levels: u8, fanout: u8) -> Vec<u8> {
        // Objects: 0 = the string leaf, 1..=levels = arrays, each referencing the previous.
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        offsets.push(out.len());
        out.extend_from_slice(&[0x51, b'x']); // ASCII string "x"
        for level in 1..=levels {
            offsets.push(out.len());
            out.push(0xA0 | fanout.min(14));
            for _ in 0..fanout.min(14) {
                out.push(level - 1); // one-byte object reference to the level below
            }
        }
        let offset_table = out.len();
        for o in &offsets {
            out.extend_from_slice(&(*o as u16).to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]);
        out.push(2); // offset size
        out.push(1); // object reference size
        out.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
        out.extend_from_slice(&(levels as u64).to_be_bytes()); // top object: the last array
        out.extend_from_slice(&(offset_table as u64).to_be_bytes());
        out
    }

    #[test]
    fn ordinary_documents_decode_as_the_plist_crate_decodes_them() {
        let xml = br#"<plist version="1.0"><dict><key>A</key><array><integer>-3</integer><true/><data>AAE=</data><real>1.5</real><dict/></array><key>B</key><string>b</string></dict></plist>"#;
        let ours = decode(xml).unwrap();
        let theirs = Value::from_reader_xml(&xml[..]).unwrap();
        assert_eq!(ours, theirs);
        let mut binary = Vec::new();
        theirs.to_writer_binary(&mut binary).unwrap();
        assert_eq!(decode(&binary).unwrap(), theirs);
    }

    #[test]
    fn a_deeply_nested_array_is_refused_naming_the_limit_without_overflowing_the_stack() {
        for depth in [65, 50_000, 200_000] {
            let err = decode(&nested_xml(depth, "<array>", "</array>")).unwrap_err();
            assert_eq!(
                err,
                PlistDecodeError::TooDeep { limit: 64 },
                "depth {depth}"
            );
        }
        let err = decode(&nested_xml(50_000, "<dict><key>k</key>", "</dict>")).unwrap_err();
        assert_eq!(err, PlistDecodeError::TooDeep { limit: 64 });
        assert!(err.to_string().contains("64 levels"), "{err}");
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        let value = decode(&nested_xml(64, "<array>", "</array>")).unwrap();
        let mut depth = 0;
        let mut at = &value;
        while let Value::Array(items) = at {
            depth += 1;
            match items.first() {
                Some(next) => at = next,
                None => break,
            }
        }
        assert_eq!(depth, 64);
    }

    #[test]
    fn shared_references_in_a_binary_plist_count_every_time_they_are_reached() {
        // 14^9 ≈ 20 billion leaves from under 200 bytes.
        let bomb = shared_reference_bomb(9, 14);
        assert!(bomb.len() < 200, "{} bytes", bomb.len());
        let err = decode(&bomb).unwrap_err();
        assert!(err.is_limit(), "{err}");
        // The same shape, small enough, decodes in full.
        let small = decode(&shared_reference_bomb(2, 3)).unwrap();
        assert_eq!(
            small,
            Value::Array(vec![Value::Array(vec![Value::String("x".into()); 3]); 3])
        );
    }

    #[test]
    fn each_limit_is_enforced_and_named() {
        let tight = PlistLimits {
            max_depth: 64,
            max_objects: 10,
            max_expanded_bytes: usize::MAX,
        };
        let many = br#"<plist><array><true/><true/><true/><true/><true/><true/><true/><true/><true/><true/></array></plist>"#;
        assert_eq!(
            decode_with(many, &tight).unwrap_err(),
            PlistDecodeError::TooManyObjects { limit: 10 }
        );
        let small = PlistLimits {
            max_depth: 64,
            max_objects: 100,
            max_expanded_bytes: 100,
        };
        let long = format!("<plist><string>{}</string></plist>", "a".repeat(200));
        let err = decode_with(long.as_bytes(), &small).unwrap_err();
        assert_eq!(err, PlistDecodeError::TooLarge { limit: 100 });
        assert!(err.to_string().contains("100 bytes"));
    }

    #[test]
    fn text_that_is_not_xml_or_binary_is_refused_without_being_repeated() {
        let err = decode(b"root:x:0:0:root:/root:/bin/bash\n").unwrap_err();
        assert!(!err.is_limit());
        assert!(!err.to_string().contains("root:x"), "{err}");
        let err = decode_into::<Dictionary>(b"<plist><string>s3cret</string></plist>").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(decode(b"\n  <plist><true/></plist>").is_ok());
    }

    #[test]
    fn dates_that_cannot_be_written_and_uids_are_refused() {
        // Found by the fuzzer: a binary date before year 0 decoded, then panicked wherever
        // it was formatted (status JSON, serde, XML).
        for name in [
            "date-before-year-0.bin.plist",
            "found-by-fuzzer-date-before-year-0.bin.plist",
        ] {
            let path = format!(
                "{}/fuzz/regressions/plist_bounded/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let raw = std::fs::read(&path).unwrap();
            assert!(decode(&raw).is_err(), "{name} decoded");
        }
        let minimal = std::fs::read(format!(
            "{}/fuzz/regressions/plist_bounded/date-before-year-0.bin.plist",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let err = decode(&minimal).unwrap_err();
        assert!(err.to_string().contains("years 0000"), "{err}");
        let ordinary = br#"<plist><date>2026-12-06T03:00:00Z</date></plist>"#;
        assert!(decode(ordinary).is_ok());
        let mut with_uid = Vec::new();
        Value::Uid(plist::Uid::new(7))
            .to_writer_binary(&mut with_uid)
            .unwrap();
        let err = decode(&with_uid).unwrap_err();
        assert!(err.to_string().contains("UID"), "{err}");
    }

    #[test]
    fn malformed_documents_are_invalid_not_limits() {
        for bad in [
            &b""[..],
            b"<plist><dict><key>a</key></dict></plist>",
            b"<plist><array><true/>",
            b"bplist00garbage",
        ] {
            let err = decode(bad).unwrap_err();
            assert!(!err.is_limit(), "{err}");
        }
    }
}
