//! Command reports: what a device PUTs to the ServerURL (Idle, or the result of a command).

use super::dict::{DeviceDict, EnrollmentIds};
use super::ProtocolError;
use plist::Value;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReportStatus {
    Idle,
    Acknowledged,
    Error,
    CommandFormatError,
    NotNow,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Acknowledged => "Acknowledged",
            Self::Error => "Error",
            Self::CommandFormatError => "CommandFormatError",
            Self::NotNow => "NotNow",
        }
    }

    /// A terminal status removes the command from the queue.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Acknowledged | Self::Error | Self::CommandFormatError
        )
    }
}

/// One entry of a device's ErrorChain (diagnostic text; values change between OS releases).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorChainItem {
    pub error_code: Option<i64>,
    pub error_domain: Option<String>,
    pub localized_description: Option<String>,
    pub us_english_description: Option<String>,
}

/// A decoded report. The raw bytes stay with the caller for storage.
#[derive(Debug, Clone)]
pub struct Report {
    pub ids: EnrollmentIds,
    pub status: ReportStatus,
    /// Absent exactly when status is Idle.
    pub command_uuid: Option<String>,
    pub error_chain: Vec<ErrorChainItem>,
}

impl Report {
    pub fn parse(raw: &[u8]) -> Result<Self, ProtocolError> {
        let d = DeviceDict::parse(raw)?;
        let ids = d.enrollment_ids()?;
        let status_text = d.string("Status")?;
        let status = match status_text.as_str() {
            "Idle" => ReportStatus::Idle,
            "Acknowledged" => ReportStatus::Acknowledged,
            "Error" => ReportStatus::Error,
            "CommandFormatError" => ReportStatus::CommandFormatError,
            "NotNow" => ReportStatus::NotNow,
            other => {
                return Err(d.error(format!(
                    "unknown Status {other:?}: expected Idle, Acknowledged, Error, CommandFormatError or NotNow"
                )))
            }
        };
        let command_uuid = d.opt_string("CommandUUID")?.filter(|s| !s.is_empty());
        if status != ReportStatus::Idle && command_uuid.is_none() {
            return Err(d.error(format!("Status {status_text} without a CommandUUID")));
        }
        let error_chain = match d.dict.get("ErrorChain") {
            Some(Value::Array(items)) => items.iter().filter_map(error_chain_item).collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            ids,
            status,
            command_uuid: if status == ReportStatus::Idle {
                None
            } else {
                command_uuid
            },
            error_chain,
        })
    }
}

fn error_chain_item(value: &Value) -> Option<ErrorChainItem> {
    let dict = value.as_dictionary()?;
    let text = |key: &str| dict.get(key).and_then(Value::as_string).map(str::to_string);
    Some(ErrorChainItem {
        error_code: dict.get("ErrorCode").and_then(|v| v.as_signed_integer()),
        error_domain: text("ErrorDomain"),
        localized_description: text("LocalizedDescription"),
        us_english_description: text("USEnglishDescription"),
    })
}

/// Builds a report plist the way a device does (used by the simulator and tests).
pub fn encode_report(
    device_id: &str,
    status: ReportStatus,
    command_uuid: Option<&str>,
    extra: plist::Dictionary,
) -> Vec<u8> {
    let mut dict = extra;
    dict.insert("UDID".into(), Value::String(device_id.to_string()));
    dict.insert("Status".into(), Value::String(status.as_str().to_string()));
    if let Some(uuid) = command_uuid {
        dict.insert("CommandUUID".into(), Value::String(uuid.to_string()));
    }
    super::to_xml(&Value::Dictionary(dict))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plist(body: &str) -> Vec<u8> {
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>{body}</dict></plist>"#)
            .into_bytes()
    }

    #[test]
    fn idle_has_no_command_uuid() {
        let r = Report::parse(&plist(
            "<key>UDID</key><string>U</string><key>Status</key><string>Idle</string>",
        ))
        .unwrap();
        assert_eq!(r.status, ReportStatus::Idle);
        assert_eq!(r.command_uuid, None);
    }

    #[test]
    fn error_report_keeps_the_error_chain() {
        let r = Report::parse(&plist(
            "<key>UDID</key><string>U</string><key>Status</key><string>Error</string>\
             <key>CommandUUID</key><string>C1</string>\
             <key>ErrorChain</key><array><dict><key>ErrorCode</key><integer>-909</integer>\
             <key>ErrorDomain</key><string>NSOSStatusErrorDomain</string></dict></array>",
        ))
        .unwrap();
        assert_eq!(r.status, ReportStatus::Error);
        assert_eq!(r.command_uuid.as_deref(), Some("C1"));
        assert_eq!(r.error_chain[0].error_code, Some(-909));
        assert_eq!(
            r.error_chain[0].error_domain.as_deref(),
            Some("NSOSStatusErrorDomain")
        );
    }

    #[test]
    fn table_of_invalid_reports() {
        let cases = [
            (
                "<key>UDID</key><string>U</string>",
                "required key Status is missing",
            ),
            (
                "<key>UDID</key><string>U</string><key>Status</key><string>Done</string>",
                "unknown Status \"Done\"",
            ),
            (
                "<key>UDID</key><string>U</string><key>Status</key><string>Acknowledged</string>",
                "Status Acknowledged without a CommandUUID",
            ),
            (
                "<key>Status</key><string>Idle</string>",
                "neither UDID nor EnrollmentID",
            ),
        ];
        for (body, expected) in cases {
            let err = Report::parse(&plist(body)).unwrap_err();
            assert!(err.reason.contains(expected), "{body}: {}", err.reason);
        }
    }

    #[test]
    fn encoded_reports_parse_back() {
        let raw = encode_report(
            "U",
            ReportStatus::NotNow,
            Some("C9"),
            plist::Dictionary::new(),
        );
        let r = Report::parse(&raw).unwrap();
        assert_eq!(r.status, ReportStatus::NotNow);
        assert_eq!(r.command_uuid.as_deref(), Some("C9"));
        assert_eq!(r.ids.device_id(), "U");
    }
}
