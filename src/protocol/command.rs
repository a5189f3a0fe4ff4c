//! Commands the server sends: typed requests (as the admin API accepts them), their `Command`
//! dictionaries, and the `{CommandUUID, Command}` envelope a device receives.

use super::ProtocolError;
use base64::Engine as _;
use plist::{Dictionary, Value};
use serde::Deserialize;

/// Why a requested command cannot be built; each message names the command and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("DeviceInformation: field queries must name at least one query (e.g. \"OSVersion\")")]
    NoQueries,
    #[error("DeviceInformation: field queries contains an empty name {0:?}")]
    EmptyQuery(String),
    #[error("InstallProfile: field payload is not valid base64: {0}")]
    PayloadNotBase64(String),
    #[error("InstallProfile: field payload is empty")]
    EmptyPayload,
    #[error("InstallProfile: field payload is not a configuration profile: {0}")]
    NotAProfile(String),
    #[error("InstallProfile: the profile has an empty PayloadIdentifier")]
    NoProfileIdentifier,
    #[error("RemoveProfile: field identifier must be the profile's top-level PayloadIdentifier")]
    NoIdentifier,
    /// The PIN itself is never part of the message.
    #[error("{command}: field pin must be exactly six digits (the value is not shown)")]
    BadPin { command: &'static str },
    #[error("Raw: field plist: {0}")]
    RawNotAPlist(String),
    #[error("Raw: field plist must be a <dict> (the Command dictionary)")]
    RawNotADictionary,
    #[error("Raw: the Command dictionary needs a RequestType string")]
    RawWithoutRequestType,
}

/// A command as an administrator asks for it. `Raw` is the escape hatch for any command this
/// type does not model: a plist `Command` dictionary with its `RequestType`.
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum CommandRequest {
    DeviceInformation {
        queries: Vec<String>,
    },
    ProfileList {
        #[serde(default)]
        managed_only: Option<bool>,
    },
    InstallProfile {
        /// The .mobileconfig bytes (plain or CMS-signed), base64 in JSON.
        payload: String,
    },
    RemoveProfile {
        identifier: String,
    },
    SecurityInfo {},
    InstalledApplicationList {
        #[serde(default)]
        identifiers: Vec<String>,
        #[serde(default)]
        managed_apps_only: Option<bool>,
    },
    DeviceLock {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        phone_number: Option<String>,
        /// macOS only, six digits; a secret: never logged or returned.
        #[serde(default)]
        pin: Option<String>,
    },
    EraseDevice {
        #[serde(default)]
        pin: Option<String>,
        #[serde(default)]
        preserve_data_plan: Option<bool>,
        #[serde(default)]
        disallow_proximity_setup: Option<bool>,
    },
    RestartDevice {
        #[serde(default)]
        notify_user: Option<bool>,
    },
    /// A whole `Command` dictionary as an XML plist string.
    Raw {
        plist: String,
    },
}

impl std::fmt::Debug for CommandRequest {
    // Payloads may carry PINs: only the request type is ever printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommandRequest({})", self.request_type_hint())
    }
}

/// A command ready to queue: its RequestType and the full `Command` dictionary.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub request_type: String,
    pub dict: Dictionary,
}

impl CommandRequest {
    fn request_type_hint(&self) -> &'static str {
        match self {
            Self::DeviceInformation { .. } => "DeviceInformation",
            Self::ProfileList { .. } => "ProfileList",
            Self::InstallProfile { .. } => "InstallProfile",
            Self::RemoveProfile { .. } => "RemoveProfile",
            Self::SecurityInfo {} => "SecurityInfo",
            Self::InstalledApplicationList { .. } => "InstalledApplicationList",
            Self::DeviceLock { .. } => "DeviceLock",
            Self::EraseDevice { .. } => "EraseDevice",
            Self::RestartDevice { .. } => "RestartDevice",
            Self::Raw { .. } => "Raw",
        }
    }

    /// Validates the request and builds the `Command` dictionary. Errors name the field.
    pub fn build(&self) -> Result<Command, CommandError> {
        let mut d = Dictionary::new();
        let set_str = |d: &mut Dictionary, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                d.insert(k.into(), Value::String(v.clone()));
            }
        };
        let set_bool = |d: &mut Dictionary, k: &str, v: &Option<bool>| {
            if let Some(v) = v {
                d.insert(k.into(), Value::Boolean(*v));
            }
        };
        let request_type = match self {
            Self::DeviceInformation { queries } => {
                if queries.is_empty() {
                    return Err(CommandError::NoQueries);
                }
                if let Some(q) = queries.iter().find(|q| q.trim().is_empty()) {
                    return Err(CommandError::EmptyQuery(q.clone()));
                }
                d.insert("Queries".into(), strings(queries));
                "DeviceInformation"
            }
            Self::ProfileList { managed_only } => {
                set_bool(&mut d, "ManagedOnly", managed_only);
                "ProfileList"
            }
            Self::InstallProfile { payload } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(payload.trim())
                    .map_err(|e| CommandError::PayloadNotBase64(e.to_string()))?;
                check_profile_bytes(&bytes)?;
                d.insert("Payload".into(), Value::Data(bytes));
                "InstallProfile"
            }
            Self::RemoveProfile { identifier } => {
                if identifier.trim().is_empty() {
                    return Err(CommandError::NoIdentifier);
                }
                d.insert("Identifier".into(), Value::String(identifier.clone()));
                "RemoveProfile"
            }
            Self::SecurityInfo {} => "SecurityInfo",
            Self::InstalledApplicationList {
                identifiers,
                managed_apps_only,
            } => {
                if !identifiers.is_empty() {
                    d.insert("Identifiers".into(), strings(identifiers));
                }
                set_bool(&mut d, "ManagedAppsOnly", managed_apps_only);
                "InstalledApplicationList"
            }
            Self::DeviceLock {
                message,
                phone_number,
                pin,
            } => {
                check_pin("DeviceLock", pin)?;
                set_str(&mut d, "Message", message);
                set_str(&mut d, "PhoneNumber", phone_number);
                set_str(&mut d, "PIN", pin);
                "DeviceLock"
            }
            Self::EraseDevice {
                pin,
                preserve_data_plan,
                disallow_proximity_setup,
            } => {
                check_pin("EraseDevice", pin)?;
                set_str(&mut d, "PIN", pin);
                set_bool(&mut d, "PreserveDataPlan", preserve_data_plan);
                set_bool(&mut d, "DisallowProximitySetup", disallow_proximity_setup);
                "EraseDevice"
            }
            Self::RestartDevice { notify_user } => {
                set_bool(&mut d, "NotifyUser", notify_user);
                "RestartDevice"
            }
            Self::Raw { plist } => return raw_command(plist.as_bytes()),
        };
        d.insert("RequestType".into(), Value::String(request_type.into()));
        Ok(Command {
            request_type: request_type.into(),
            dict: d,
        })
    }
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
}

fn check_pin(command: &'static str, pin: &Option<String>) -> Result<(), CommandError> {
    match pin {
        Some(p) if p.len() != 6 || !p.bytes().all(|b| b.is_ascii_digit()) => {
            Err(CommandError::BadPin { command })
        }
        _ => Ok(()),
    }
}

/// A profile is either a plist whose PayloadType is Configuration, or CMS-signed DER
/// (which starts with a SEQUENCE tag). Anything else would be refused by the device.
fn check_profile_bytes(bytes: &[u8]) -> Result<(), CommandError> {
    if bytes.is_empty() {
        return Err(CommandError::EmptyPayload);
    }
    if bytes[0] == 0x30 {
        return Ok(()); // CMS SignedData (DER/BER); the device verifies it.
    }
    let profile = super::profile::ProfileSummary::parse(bytes)
        .map_err(|e| CommandError::NotAProfile(e.to_string()))?;
    if profile.identifier.is_empty() {
        return Err(CommandError::NoProfileIdentifier);
    }
    Ok(())
}

fn raw_command(bytes: &[u8]) -> Result<Command, CommandError> {
    let value =
        super::bounded::decode(bytes).map_err(|e| CommandError::RawNotAPlist(e.to_string()))?;
    let Value::Dictionary(dict) = value else {
        return Err(CommandError::RawNotADictionary);
    };
    let request_type = match dict.get("RequestType") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(CommandError::RawWithoutRequestType),
    };
    Ok(Command { request_type, dict })
}

/// The `{CommandUUID, Command}` plist a device receives for one queued command.
pub struct CommandEnvelope;

impl CommandEnvelope {
    pub fn encode(command_uuid: &str, command: &Dictionary) -> Vec<u8> {
        let mut top = Dictionary::new();
        top.insert("CommandUUID".into(), Value::String(command_uuid.into()));
        top.insert("Command".into(), Value::Dictionary(command.clone()));
        super::to_xml(&Value::Dictionary(top))
    }

    /// Decodes an envelope (the device side of the exchange).
    pub fn decode(raw: &[u8]) -> Result<(String, String, Dictionary), ProtocolError> {
        let d = super::dict::DeviceDict::parse(raw)?;
        let uuid = d.string("CommandUUID")?;
        let Some(Value::Dictionary(command)) = d.dict.get("Command") else {
            return Err(d.error("key Command must be a dictionary"));
        };
        let Some(Value::String(request_type)) = command.get("RequestType") else {
            return Err(d.error("Command has no RequestType string"));
        };
        Ok((uuid, request_type.clone(), command.clone()))
    }
}

/// Where the text of the data value under `key` lies in an encoded envelope (the base64 between
/// `<data>` and `</data>`), when the key occurs exactly once: the span of an InstallProfile that
/// every command installing the same profile shares (`NewCommand::shared`).
pub fn data_span(envelope: &[u8], key: &str) -> Option<std::ops::Range<usize>> {
    let find = |from: usize, needle: &[u8]| {
        envelope[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|at| from + at)
    };
    let key_tag = format!("<key>{key}</key>");
    let key_at = find(0, key_tag.as_bytes())?;
    let after_key = key_at + key_tag.len();
    if find(after_key, key_tag.as_bytes()).is_some() {
        return None;
    }
    let open = find(after_key, b"<data>")?;
    if !envelope[after_key..open]
        .iter()
        .all(u8::is_ascii_whitespace)
    {
        return None;
    }
    let start = open + b"<data>".len();
    let end = find(start, b"</data>")?;
    Some(start..end)
}

/// Decodes a stored `Command` dictionary (plist bytes) back into a dictionary.
pub fn decode_command_dict(raw: &[u8]) -> Result<Dictionary, ProtocolError> {
    Ok(super::dict::DeviceDict::parse(raw)?.dict)
}

/// Encodes a `Command` dictionary for storage.
pub fn encode_command_dict(dict: &Dictionary) -> Vec<u8> {
    super::to_xml(&Value::Dictionary(dict.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<Command, String> {
        serde_json::from_str::<CommandRequest>(json)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_data_span_of_a_key_is_its_base64_text() {
        let mut command = Dictionary::new();
        command.insert("Payload".into(), Value::Data(vec![7; 300]));
        command.insert("RequestType".into(), Value::String("InstallProfile".into()));
        let envelope = CommandEnvelope::encode("u-1", &command);
        let span = data_span(&envelope, "Payload").unwrap();
        let text: String = String::from_utf8(envelope[span].to_vec())
            .unwrap()
            .split_whitespace()
            .collect();
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
            vec![7; 300]
        );
        assert_eq!(data_span(&envelope, "Identifier"), None);
        assert_eq!(
            data_span(&envelope, "RequestType"),
            None,
            "a string, not data"
        );
    }

    #[test]
    fn device_information_lists_its_queries() {
        let c =
            req(r#"{"type":"DeviceInformation","queries":["OSVersion","SerialNumber"]}"#).unwrap();
        assert_eq!(c.request_type, "DeviceInformation");
        let q = c.dict.get("Queries").unwrap().as_array().unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(
            c.dict.get("RequestType").unwrap().as_string(),
            Some("DeviceInformation")
        );
    }

    #[test]
    fn install_profile_carries_raw_bytes_as_data_not_base64_text() {
        let profile = br#"<?xml version="1.0"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>com.example.p</string><key>PayloadUUID</key><string>U</string>
<key>PayloadContent</key><array/></dict></plist>"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(profile);
        let c = req(&format!(r#"{{"type":"InstallProfile","payload":"{b64}"}}"#)).unwrap();
        assert_eq!(c.dict.get("Payload").unwrap().as_data(), Some(&profile[..]));
    }

    #[test]
    fn table_of_invalid_requests_names_the_field() {
        let cases = [
            (
                r#"{"type":"DeviceInformation","queries":[]}"#,
                "field queries",
            ),
            (
                r#"{"type":"InstallProfile","payload":"%%%"}"#,
                "not valid base64",
            ),
            (
                r#"{"type":"InstallProfile","payload":"aGVsbG8="}"#,
                "not a configuration profile",
            ),
            (
                r#"{"type":"RemoveProfile","identifier":" "}"#,
                "field identifier",
            ),
            (r#"{"type":"DeviceLock","pin":"12"}"#, "six digits"),
            (
                r#"{"type":"Raw","plist":"<plist><dict/></plist>"}"#,
                "needs a RequestType",
            ),
            (r#"{"type":"Nope"}"#, "unknown variant"),
            (r#"{"type":"SecurityInfo","extra":1}"#, "unknown field"),
        ];
        for (json, expected) in cases {
            let err = req(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn pin_never_appears_in_debug_output() {
        let r: CommandRequest =
            serde_json::from_str(r#"{"type":"DeviceLock","pin":"123456"}"#).unwrap();
        assert!(!format!("{r:?}").contains("123456"));
    }

    #[test]
    fn envelope_round_trips() {
        let c = req(r#"{"type":"ProfileList"}"#).unwrap();
        let bytes = CommandEnvelope::encode("CMD-1", &c.dict);
        let (uuid, rt, dict) = CommandEnvelope::decode(&bytes).unwrap();
        assert_eq!((uuid.as_str(), rt.as_str()), ("CMD-1", "ProfileList"));
        assert_eq!(dict, c.dict);
    }

    #[test]
    fn raw_commands_keep_every_key() {
        let c = req(r#"{"type":"Raw","plist":"<plist version=\"1.0\"><dict><key>RequestType</key><string>CertificateList</string><key>ManagedOnly</key><true/></dict></plist>"}"#).unwrap();
        assert_eq!(c.request_type, "CertificateList");
        assert_eq!(c.dict.get("ManagedOnly").unwrap().as_boolean(), Some(true));
    }
}
