//! A minimal DER reader and writer for the parts of CMS and PKCS#10 that the openssl crate does
//! not expose: SCEP's signed attributes, the CSR's challengePassword, the certs-only SignedData
//! of a CertRep. Input is always DER; BER from devices is normalised by openssl before it gets
//! here. Only definite lengths and single-byte tags are supported, which is all DER uses here.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(pub String);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed DER: {}", self.0)
    }
}

impl std::error::Error for DerError {}

pub type DerResult<T> = Result<T, DerError>;

pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const BOOLEAN: u8 = 0x01;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0c;
pub const PRINTABLE_STRING: u8 = 0x13;
pub const IA5_STRING: u8 = 0x16;
pub const UTC_TIME: u8 = 0x17;
pub const GENERALIZED_TIME: u8 = 0x18;

/// Context-specific constructed tag `[n]`.
pub const fn context(n: u8) -> u8 {
    0xa0 | n
}

/// One decoded element: its tag, its content bytes and its whole encoding.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// A reader over this element's content (for constructed elements).
    pub fn reader(&self) -> Reader<'a> {
        Reader::new(self.content)
    }
}

/// Reads consecutive elements from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    pub fn read(&mut self) -> DerResult<Tlv<'a>> {
        let data = self.data;
        let tag = *data
            .first()
            .ok_or_else(|| DerError("unexpected end".into()))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError(format!(
                "multi-byte tag 0x{tag:02x} not supported"
            )));
        }
        let first = *data
            .get(1)
            .ok_or_else(|| DerError("missing length".into()))?;
        let (len, header) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 {
                return Err(DerError(
                    "indefinite length (BER) where DER is required".into(),
                ));
            }
            if count > 4 {
                return Err(DerError(format!("length of {count} bytes is too long")));
            }
            let bytes = data
                .get(2..2 + count)
                .ok_or_else(|| DerError("truncated length".into()))?;
            let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + count)
        };
        let end = header
            .checked_add(len)
            .filter(|end| *end <= data.len())
            .ok_or_else(|| {
                DerError(format!(
                    "element 0x{tag:02x} claims {len} bytes, {} left",
                    data.len() - header
                ))
            })?;
        self.data = &data[end..];
        Ok(Tlv {
            tag,
            content: &data[header..end],
            raw: &data[..end],
        })
    }

    /// Reads the next element and checks its tag.
    pub fn expect(&mut self, tag: u8, what: &str) -> DerResult<Tlv<'a>> {
        let tlv = self
            .read()
            .map_err(|e| DerError(format!("{what}: {}", e.0)))?;
        if tlv.tag != tag {
            return Err(DerError(format!(
                "{what}: expected tag 0x{tag:02x}, found 0x{:02x}",
                tlv.tag
            )));
        }
        Ok(tlv)
    }

    /// Reads the next element only if it has this tag.
    pub fn optional(&mut self, tag: u8) -> DerResult<Option<Tlv<'a>>> {
        if self.peek_tag() == Some(tag) {
            self.read().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Reads exactly one element spanning all of `data`.
pub fn parse_single<'a>(data: &'a [u8], what: &str) -> DerResult<Tlv<'a>> {
    let mut reader = Reader::new(data);
    let tlv = reader
        .read()
        .map_err(|e| DerError(format!("{what}: {}", e.0)))?;
    if !reader.is_empty() {
        return Err(DerError(format!("{what}: trailing bytes")));
    }
    Ok(tlv)
}

/// Encodes one element.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a constructed element from already encoded parts.
pub fn constructed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

pub fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    constructed(SEQUENCE, parts)
}

/// A DER `SET OF`: elements sorted by their encoding, as X.690 requires (verifiers such as Go's
/// re-encode signed attributes and would otherwise compute a different digest).
pub fn set_of(mut parts: Vec<Vec<u8>>) -> Vec<u8> {
    parts.sort();
    tlv(SET, &parts.concat())
}

/// Encodes a dotted object identifier. Panics on malformed input: OIDs are compile-time
/// constants in this crate.
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| a.parse().expect("numeric OID arc"))
        .collect();
    assert!(arcs.len() >= 2, "OID needs two arcs");
    let mut body = Vec::new();
    push_base128(&mut body, arcs[0] * 40 + arcs[1]);
    for arc in &arcs[2..] {
        push_base128(&mut body, *arc);
    }
    tlv(OID, &body)
}

fn push_base128(out: &mut Vec<u8>, value: u64) {
    let groups = (64 - value.leading_zeros()).div_ceil(7).max(1);
    for group in (0..groups).rev() {
        let more = if group == 0 { 0 } else { 0x80 };
        out.push(more | ((value >> (7 * group)) & 0x7f) as u8);
    }
}

/// Whether `encoded` (a whole OID element, as `Tlv::raw`) is the dotted OID `dotted`, read
/// without allocating: signatures are checked on every signed request, and encoding the OIDs
/// they are compared with cost more than the comparisons.
pub fn oid_is(encoded: &[u8], dotted: &str) -> bool {
    let Ok(element) = parse_single(encoded, "OID") else {
        return false;
    };
    if element.tag != OID {
        return false;
    }
    let mut arcs = dotted.split('.').map(|arc| arc.parse::<u64>().ok());
    let (Some(Some(first)), Some(Some(second))) = (arcs.next(), arcs.next()) else {
        return false;
    };
    let mut wanted = std::iter::once(Some(first * 40 + second)).chain(arcs);
    let mut content = element.content;
    while !content.is_empty() {
        let mut value: u64 = 0;
        loop {
            let Some((&byte, rest)) = content.split_first() else {
                return false; // the last arc's final byte is missing
            };
            content = rest;
            if value >> 57 != 0 {
                return false; // longer than any arc compared here
            }
            value = (value << 7) | u64::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                break;
            }
        }
        if wanted.next() != Some(Some(value)) {
            return false;
        }
    }
    wanted.next().is_none()
}

/// A small non-negative INTEGER.
pub fn integer(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut content = bytes[skip..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    tlv(INTEGER, &content)
}

pub fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, bytes)
}

pub fn printable_string(text: &str) -> Vec<u8> {
    tlv(PRINTABLE_STRING, text.as_bytes())
}

/// `AlgorithmIdentifier` with NULL parameters (RSA and digest algorithms).
pub fn algorithm(dotted: &str) -> Vec<u8> {
    sequence(&[&oid(dotted), &tlv(NULL, &[])])
}

/// Decodes the text of a string element (PrintableString, UTF8String, IA5String…).
pub fn string_value(tlv: &Tlv<'_>) -> DerResult<String> {
    match tlv.tag {
        PRINTABLE_STRING | UTF8_STRING | IA5_STRING | 0x14 | 0x1e => {
            if tlv.tag == 0x1e {
                // BMPString: UTF-16BE.
                let units: Vec<u16> = tlv
                    .content
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                    .collect();
                return String::from_utf16(&units)
                    .map_err(|_| DerError("BMPString is not valid UTF-16".into()));
            }
            String::from_utf8(tlv.content.to_vec())
                .map_err(|_| DerError("string is not valid UTF-8".into()))
        }
        other => Err(DerError(format!(
            "expected a string, found tag 0x{other:02x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_encode_like_the_standard_examples() {
        // 1.2.840.113549 is the RSADSI arc: 06 06 2a 86 48 86 f7 0d.
        assert_eq!(
            oid("1.2.840.113549"),
            vec![0x06, 0x06, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]
        );
        assert_eq!(
            oid("2.16.840.1.113733.1.9.2"),
            vec![0x06, 0x0a, 0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09, 0x02]
        );
    }

    #[test]
    fn oids_are_compared_without_encoding() {
        for dotted in [
            "1.2.840.113549",
            "2.16.840.1.113733.1.9.2",
            "1.3.14.3.2.26",
            "2.5.4.3",
        ] {
            assert!(oid_is(&oid(dotted), dotted), "{dotted}");
        }
        let sha256 = oid("2.16.840.1.101.3.4.2.1");
        for other in [
            "2.16.840.1.101.3.4.2",
            "2.16.840.1.101.3.4.2.1.0",
            "2.16.840.1.101.3.4.2.3",
        ] {
            assert!(!oid_is(&sha256, other), "{other}");
        }
        // Not an OID element, a truncated arc, trailing bytes, an unparsable dotted form.
        assert!(!oid_is(
            &octet_string(&sha256[2..]),
            "2.16.840.1.101.3.4.2.1"
        ));
        assert!(!oid_is(&[0x06, 0x02, 0x2a, 0x86], "1.2.6"));
        assert!(!oid_is(&[0x06, 0x01, 0x2a, 0x00], "1.2"));
        assert!(!oid_is(&sha256, "2.16.x"));
        // Arcs of every length encode as before.
        for value in [0u64, 127, 128, 16_383, 16_384, u64::from(u32::MAX)] {
            let dotted = format!("1.2.{value}");
            assert!(oid_is(&oid(&dotted), &dotted), "{dotted}");
        }
    }

    #[test]
    fn long_lengths_round_trip() {
        let content = vec![7u8; 300];
        let encoded = octet_string(&content);
        assert_eq!(&encoded[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let parsed = parse_single(&encoded, "test").unwrap();
        assert_eq!(parsed.content, &content[..]);
    }

    #[test]
    fn integers_stay_positive() {
        assert_eq!(integer(0), vec![0x02, 0x01, 0x00]);
        assert_eq!(integer(128), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(1), vec![0x02, 0x01, 0x01]);
    }

    #[test]
    fn truncated_and_indefinite_input_is_an_error_not_a_panic() {
        assert!(parse_single(&[0x30, 0x05, 0x01], "x").is_err());
        assert!(parse_single(&[0x30, 0x80, 0x00, 0x00], "x").is_err());
        assert!(parse_single(&[], "x").is_err());
        assert!(parse_single(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], "x").is_err());
    }

    #[test]
    fn sets_are_sorted_by_encoding() {
        let set = set_of(vec![vec![0x04, 0x01, 0x02], vec![0x02, 0x01, 0x05]]);
        assert_eq!(set, vec![0x31, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0x02]);
    }
}
