//! Apple MDM wire types: check-in messages, command envelopes and payloads, command reports,
//! configuration profiles and the declarative-management answers, with their plist encoding.
//!
//! Everything here is pure data and codec: no I/O, no clock, no storage. Parsing is lenient
//! where devices are (unknown keys are ignored, channel-specific keys are optional) and strict
//! where a wrong value would break a device (`<data>` must be data, Status must be known).
//! Parse errors keep the raw bytes so the caller can log what the device actually sent.

pub mod bounded;
pub mod checkin;
pub mod command;
pub mod command_support;
pub mod ddm;
pub mod dict;
pub mod enrollment_profile;
pub mod json;
pub mod profile;
pub mod report;

pub use checkin::{Authenticate, Checkin, CheckinMessage, TokenUpdate};
pub use command::{CommandEnvelope, CommandRequest};
pub use dict::EnrollmentIds;
pub use report::{ErrorChainItem, Report, ReportStatus};

/// Content type of check-in requests; in one-URL mode it is what tells a check-in apart.
pub const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";
/// Content type devices use when reporting command results.
pub const CONNECT_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm; charset=UTF-8";
/// Content type of the command envelope the server answers with (as in Apple's example).
pub const COMMAND_CONTENT_TYPE: &str = "application/xml; charset=UTF-8";

/// A message from a device that could not be understood. Keeps the bytes that were received.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct ProtocolError {
    /// What was wrong, naming the key where there is one.
    pub reason: String,
    /// The body exactly as received, for logging an excerpt.
    pub raw: Vec<u8>,
}

impl ProtocolError {
    pub(crate) fn new(reason: impl Into<String>, raw: &[u8]) -> Self {
        Self {
            reason: reason.into(),
            raw: raw.to_vec(),
        }
    }

    /// A printable excerpt of the raw body, bounded, for logs.
    pub fn raw_excerpt(&self) -> String {
        const MAX: usize = 256;
        let shown = &self.raw[..self.raw.len().min(MAX)];
        let text = String::from_utf8_lossy(shown).replace(['\n', '\r', '\t'], " ");
        if self.raw.len() > MAX {
            format!("{text}… ({} bytes)", self.raw.len())
        } else {
            text
        }
    }
}

/// Encodes a plist value as XML, the encoding devices expect from the server.
pub fn to_xml(value: &plist::Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    value
        .to_writer_xml(&mut out)
        .expect("writing a plist into memory cannot fail");
    out
}
