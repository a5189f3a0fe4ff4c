//! Check-in messages (`MessageType` on the CheckInURL): decoding into typed messages.

use super::dict::{DeviceDict, EnrollmentIds};
use super::ProtocolError;

/// A decoded check-in request: who sent it and what it says.
#[derive(Debug, Clone)]
pub struct Checkin {
    pub ids: EnrollmentIds,
    pub message: CheckinMessage,
}

#[derive(Debug, Clone)]
pub enum CheckinMessage {
    Authenticate(Authenticate),
    TokenUpdate(TokenUpdate),
    CheckOut,
    UserAuthenticate {
        digest_response: Option<String>,
    },
    SetBootstrapToken {
        bootstrap_token: Option<Vec<u8>>,
    },
    GetBootstrapToken,
    DeclarativeManagement {
        endpoint: String,
        data: Option<Vec<u8>>,
    },
    GetToken {
        token_service_type: String,
    },
    ReturnToService,
    /// A MessageType this server does not know; kept so it can be answered and logged.
    Unknown(String),
}

impl CheckinMessage {
    /// The MessageType as it appears on the wire (for metrics and logs).
    pub fn message_type(&self) -> &str {
        match self {
            Self::Authenticate(_) => "Authenticate",
            Self::TokenUpdate(_) => "TokenUpdate",
            Self::CheckOut => "CheckOut",
            Self::UserAuthenticate { .. } => "UserAuthenticate",
            Self::SetBootstrapToken { .. } => "SetBootstrapToken",
            Self::GetBootstrapToken => "GetBootstrapToken",
            Self::DeclarativeManagement { .. } => "DeclarativeManagement",
            Self::GetToken { .. } => "GetToken",
            Self::ReturnToService => "ReturnToService",
            Self::Unknown(name) => name,
        }
    }
}

/// Device facts sent with Authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authenticate {
    pub topic: String,
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub device_name: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
}

/// Push credentials sent with TokenUpdate. `unlock_token` absent means "keep the stored one".
#[derive(Clone, PartialEq, Eq)]
pub struct TokenUpdate {
    pub topic: String,
    pub token: Vec<u8>,
    pub push_magic: String,
    pub unlock_token: Option<Vec<u8>>,
    pub awaiting_configuration: bool,
}

// Token, PushMagic and UnlockToken are secrets: Debug names them but never prints them.
impl std::fmt::Debug for TokenUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenUpdate")
            .field("topic", &self.topic)
            .field("token_len", &self.token.len())
            .field("has_unlock_token", &self.unlock_token.is_some())
            .field("awaiting_configuration", &self.awaiting_configuration)
            .finish_non_exhaustive()
    }
}

impl Checkin {
    /// Decodes a check-in body (XML or binary plist).
    pub fn parse(raw: &[u8]) -> Result<Self, ProtocolError> {
        let d = DeviceDict::parse(raw)?;
        let message_type = d.string("MessageType")?;
        let ids = d.enrollment_ids()?;
        let message = match message_type.as_str() {
            "Authenticate" => CheckinMessage::Authenticate(Authenticate {
                topic: d.string("Topic")?,
                serial_number: d.opt_string("SerialNumber")?,
                model: d.opt_string("Model")?,
                model_name: d.opt_string("ModelName")?,
                product_name: d.opt_string("ProductName")?,
                os_version: d.opt_string("OSVersion")?,
                build_version: d.opt_string("BuildVersion")?,
                device_name: d.opt_string("DeviceName")?,
                imei: d.opt_string("IMEI")?,
                meid: d.opt_string("MEID")?,
            }),
            "TokenUpdate" => {
                let token = d.data("Token")?;
                if token.is_empty() {
                    return Err(d.error("key Token is empty: expected the APNs device token"));
                }
                CheckinMessage::TokenUpdate(TokenUpdate {
                    topic: d.string("Topic")?,
                    token,
                    push_magic: d.string("PushMagic")?,
                    unlock_token: d.opt_data("UnlockToken")?.filter(|t| !t.is_empty()),
                    awaiting_configuration: d.opt_bool("AwaitingConfiguration")?.unwrap_or(false),
                })
            }
            "CheckOut" => CheckinMessage::CheckOut,
            "UserAuthenticate" => CheckinMessage::UserAuthenticate {
                digest_response: d.opt_string("DigestResponse")?,
            },
            "SetBootstrapToken" => CheckinMessage::SetBootstrapToken {
                bootstrap_token: d.opt_data("BootstrapToken")?.filter(|t| !t.is_empty()),
            },
            "GetBootstrapToken" => CheckinMessage::GetBootstrapToken,
            "DeclarativeManagement" => CheckinMessage::DeclarativeManagement {
                endpoint: d.string("Endpoint")?,
                data: d.opt_data("Data")?,
            },
            "GetToken" => CheckinMessage::GetToken {
                token_service_type: d.string("TokenServiceType")?,
            },
            "ReturnToService" => CheckinMessage::ReturnToService,
            _ => CheckinMessage::Unknown(message_type),
        };
        Ok(Self { ids, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plist(body: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>{body}</dict></plist>"#
        )
        .into_bytes()
    }

    #[test]
    fn authenticate_records_device_facts_and_ignores_unknown_keys() {
        let raw = plist(
            "<key>MessageType</key><string>Authenticate</string>\
             <key>Topic</key><string>com.apple.mgmt.External.x</string>\
             <key>UDID</key><string>UDID-1</string>\
             <key>SerialNumber</key><string>C02ABC</string>\
             <key>Model</key><string>iPhone15,2</string>\
             <key>OSVersion</key><string>17.4</string>\
             <key>Challenge</key><data>YXBwbGU=</data>",
        );
        let c = Checkin::parse(&raw).unwrap();
        assert_eq!(c.ids.device_id(), "UDID-1");
        let CheckinMessage::Authenticate(a) = c.message else {
            panic!("not Authenticate")
        };
        assert_eq!(a.serial_number.as_deref(), Some("C02ABC"));
        assert_eq!(a.model.as_deref(), Some("iPhone15,2"));
        assert_eq!(a.os_version.as_deref(), Some("17.4"));
        assert_eq!(a.topic, "com.apple.mgmt.External.x");
    }

    #[test]
    fn token_update_reads_data_fields_as_raw_bytes() {
        let raw = plist(
            "<key>MessageType</key><string>TokenUpdate</string>\
             <key>Topic</key><string>t</string><key>UDID</key><string>U</string>\
             <key>Token</key><data>AAEC</data><key>PushMagic</key><string>magic</string>",
        );
        let CheckinMessage::TokenUpdate(t) = Checkin::parse(&raw).unwrap().message else {
            panic!("not TokenUpdate")
        };
        assert_eq!(t.token, vec![0, 1, 2]);
        assert_eq!(t.push_magic, "magic");
        assert_eq!(t.unlock_token, None);
        assert!(!t.awaiting_configuration);
    }

    #[test]
    fn token_sent_as_string_is_rejected_naming_the_key() {
        let raw = plist(
            "<key>MessageType</key><string>TokenUpdate</string>\
             <key>Topic</key><string>t</string><key>UDID</key><string>U</string>\
             <key>Token</key><string>AAEC</string><key>PushMagic</key><string>m</string>",
        );
        let err = Checkin::parse(&raw).unwrap_err();
        assert_eq!(err.reason, "key Token must be data, found a string");
        assert_eq!(err.raw, raw);
    }

    #[test]
    fn user_enrollment_is_identified_by_enrollment_id() {
        let raw = plist(
            "<key>MessageType</key><string>CheckOut</string>\
             <key>Topic</key><string>t</string><key>EnrollmentID</key><string>E-1</string>",
        );
        let c = Checkin::parse(&raw).unwrap();
        assert_eq!(c.ids.device_id(), "E-1");
        assert!(c.ids.is_user_enrollment());
        assert!(matches!(c.message, CheckinMessage::CheckOut));
    }

    #[test]
    fn table_of_malformed_bodies_names_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty body"),
            (b"not a plist", "not a valid plist"),
            (b"<plist version=\"1.0\"><array/></plist>", "top level is an array"),
            (
                &plist("<key>UDID</key><string>U</string>"),
                "required key MessageType is missing",
            ),
            (
                &plist("<key>MessageType</key><string>CheckOut</string>"),
                "neither UDID nor EnrollmentID",
            ),
            (
                &plist("<key>MessageType</key><string>Authenticate</string><key>UDID</key><string>U</string>"),
                "required key Topic is missing",
            ),
        ];
        for (raw, expected) in cases {
            let err = Checkin::parse(raw).unwrap_err();
            assert!(
                err.reason.contains(expected),
                "for {:?}: {:?} does not mention {expected:?}",
                String::from_utf8_lossy(raw),
                err.reason
            );
        }
    }

    #[test]
    fn unknown_message_types_are_kept_by_name() {
        let raw = plist(
            "<key>MessageType</key><string>FutureThing</string><key>UDID</key><string>U</string>",
        );
        let c = Checkin::parse(&raw).unwrap();
        assert_eq!(c.message.message_type(), "FutureThing");
    }
}
