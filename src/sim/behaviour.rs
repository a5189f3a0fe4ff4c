//! How a simulated device executes commands: the state it keeps (installed profiles, lock,
//! erase) and the result dictionary it reports, key for key as PROTOCOL.md §6 and Apple's
//! command schemas describe real devices answering.

use crate::protocol::profile::ProfileSummary;
use crate::protocol::ReportStatus;
use plist::{Dictionary, Value};
use std::collections::BTreeMap;

/// Hardware and OS of one simulated device.
#[derive(Debug, Clone)]
pub struct Hardware {
    pub udid: String,
    pub serial_number: String,
    pub platform: Platform,
    pub model: String,
    pub model_name: String,
    pub product_name: String,
    pub os_version: String,
    pub build_version: String,
    pub device_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    IPhone,
    IPad,
    Mac,
}

/// An installed profile as the device remembers it.
#[derive(Debug, Clone)]
pub struct InstalledProfile {
    pub summary: ProfileSummary,
    /// Installed from a signed (CMS) payload whose signature verified.
    pub signed: bool,
}

/// Mutable device state that commands change.
#[derive(Debug, Default)]
pub struct DeviceState {
    pub profiles: BTreeMap<String, InstalledProfile>,
    pub locked: bool,
    /// The PIN a Mac was locked with (what its user needs to unlock it).
    pub lock_pin: Option<String>,
    pub erased: bool,
    pub restarts: u32,
}

/// What the device answers: a status and the result keys to add to the report.
pub struct Answer {
    pub status: ReportStatus,
    pub keys: Dictionary,
}

impl Answer {
    fn ack(keys: Dictionary) -> Self {
        Self {
            status: ReportStatus::Acknowledged,
            keys,
        }
    }

    pub fn error(code: i64, domain: &str, description: &str) -> Self {
        let mut item = Dictionary::new();
        item.insert("ErrorCode".into(), Value::Integer(code.into()));
        item.insert("ErrorDomain".into(), Value::String(domain.into()));
        item.insert(
            "LocalizedDescription".into(),
            Value::String(description.into()),
        );
        item.insert(
            "USEnglishDescription".into(),
            Value::String(description.into()),
        );
        let mut keys = Dictionary::new();
        keys.insert(
            "ErrorChain".into(),
            Value::Array(vec![Value::Dictionary(item)]),
        );
        Self {
            status: ReportStatus::Error,
            keys,
        }
    }
}

/// Commands iOS never answers NotNow (Apple: handling NotNow status responses).
pub fn never_not_now(request_type: &str) -> bool {
    matches!(
        request_type,
        "DeviceInformation"
            | "ProfileList"
            | "DeviceLock"
            | "EraseDevice"
            | "ClearPasscode"
            | "ProvisioningProfileList"
            | "InstalledApplicationList"
            | "Restrictions"
    )
}

pub fn execute(
    hw: &Hardware,
    state: &mut DeviceState,
    request_type: &str,
    command: &Dictionary,
) -> Answer {
    match request_type {
        "ProfileList" => Answer::ack(one(
            "ProfileList",
            Value::Array(state.profiles.values().map(profile_entry).collect()),
        )),
        "InstallProfile" => install_profile(state, command),
        "RemoveProfile" => {
            let Some(identifier) = command.get("Identifier").and_then(Value::as_string) else {
                return Answer::error(
                    12001,
                    "MCMDMErrorDomain",
                    "RemoveProfile without an Identifier",
                );
            };
            if state.profiles.remove(identifier).is_some() {
                Answer::ack(Dictionary::new())
            } else {
                Answer::error(
                    1001,
                    "MCProfileErrorDomain",
                    &format!("The profile “{identifier}” is not installed."),
                )
            }
        }
        "DeviceInformation" => {
            let queries: Vec<&str> = command
                .get("Queries")
                .and_then(Value::as_array)
                .map(|q| q.iter().filter_map(Value::as_string).collect())
                .unwrap_or_default();
            let mut responses = Dictionary::new();
            for query in queries {
                if let Some(value) = device_information(hw, state, query) {
                    responses.insert(query.to_string(), value);
                }
            }
            Answer::ack(one("QueryResponses", Value::Dictionary(responses)))
        }
        "SecurityInfo" => {
            let mut info = Dictionary::new();
            info.insert("HardwareEncryptionCaps".into(), Value::Integer(3.into()));
            info.insert("PasscodePresent".into(), Value::Boolean(true));
            info.insert("PasscodeCompliant".into(), Value::Boolean(true));
            info.insert("PasscodeCompliantWithProfiles".into(), Value::Boolean(true));
            let mut management = Dictionary::new();
            management.insert("EnrolledViaDEP".into(), Value::Boolean(false));
            management.insert("UserApprovedEnrollment".into(), Value::Boolean(true));
            management.insert("IsUserEnrollment".into(), Value::Boolean(false));
            info.insert("ManagementStatus".into(), Value::Dictionary(management));
            Answer::ack(one("SecurityInfo", Value::Dictionary(info)))
        }
        "InstalledApplicationList" => {
            let apps = [
                ("com.apple.mobilesafari", "Safari", "18.0"),
                ("com.example.notes", "Notes Pro", "2.4.1"),
            ];
            let list = apps
                .iter()
                .map(|(id, name, version)| {
                    let mut app = Dictionary::new();
                    app.insert("Identifier".into(), Value::String((*id).into()));
                    app.insert("Name".into(), Value::String((*name).into()));
                    app.insert("ShortVersion".into(), Value::String((*version).into()));
                    app.insert("Version".into(), Value::String((*version).into()));
                    app.insert("BundleSize".into(), Value::Integer(48_000_000.into()));
                    Value::Dictionary(app)
                })
                .collect();
            Answer::ack(one("InstalledApplicationList", Value::Array(list)))
        }
        "DeviceLock" => {
            state.locked = true;
            state.lock_pin = command
                .get("PIN")
                .and_then(Value::as_string)
                .map(str::to_string);
            Answer::ack(Dictionary::new())
        }
        "EraseDevice" => {
            state.erased = true;
            Answer::ack(Dictionary::new())
        }
        "RestartDevice" => {
            state.restarts += 1;
            Answer::ack(Dictionary::new())
        }
        other => Answer::error(
            12021,
            "MCMDMErrorDomain",
            &format!("The MDM command “{other}” is not supported."),
        ),
    }
}

fn one(key: &str, value: Value) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert(key.into(), value);
    d
}

fn install_profile(state: &mut DeviceState, command: &Dictionary) -> Answer {
    let Some(payload) = command.get("Payload").and_then(Value::as_data) else {
        return Answer::error(
            12001,
            "MCMDMErrorDomain",
            "InstallProfile Payload must be data",
        );
    };
    let Some(plist_bytes) = profile_plist(payload) else {
        return Answer::error(
            1000,
            "MCProfileErrorDomain",
            "The profile could not be read.",
        );
    };
    let signed = matches!(plist_bytes, std::borrow::Cow::Owned(_));
    match ProfileSummary::parse(&plist_bytes) {
        Ok(summary) => {
            state.profiles.insert(
                summary.identifier.clone(),
                InstalledProfile { summary, signed },
            );
            Answer::ack(Dictionary::new())
        }
        Err(reason) => Answer::error(
            1000,
            "MCProfileErrorDomain",
            &format!("The profile is malformed: {reason}"),
        ),
    }
}

/// The profile plist of an InstallProfile payload: as is, or unwrapped from a CMS signature
/// that must verify (a device refuses a profile whose signature is broken).
fn profile_plist(payload: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if payload.first() != Some(&0x30) {
        return Some(std::borrow::Cow::Borrowed(payload));
    }
    crate::pki::unwrap_signed_profile(payload)
        .ok()
        .map(std::borrow::Cow::Owned)
}

fn profile_entry(p: &InstalledProfile) -> Value {
    let s = &p.summary;
    let mut d = Dictionary::new();
    d.insert(
        "PayloadIdentifier".into(),
        Value::String(s.identifier.clone()),
    );
    d.insert("PayloadUUID".into(), Value::String(s.uuid.clone()));
    d.insert("PayloadVersion".into(), Value::Integer(s.version.into()));
    if let Some(name) = &s.display_name {
        d.insert("PayloadDisplayName".into(), Value::String(name.clone()));
    }
    if let Some(org) = &s.organization {
        d.insert("PayloadOrganization".into(), Value::String(org.clone()));
    }
    d.insert("IsManaged".into(), Value::Boolean(true));
    d.insert("HasRemovalPasscode".into(), Value::Boolean(false));
    d.insert("IsEncrypted".into(), Value::Boolean(false));
    d.insert("PayloadRemovalDisallowed".into(), Value::Boolean(false));
    let content = s
        .payload_types
        .iter()
        .map(|t| Value::Dictionary(one("PayloadType", Value::String(t.clone()))))
        .collect();
    d.insert("PayloadContent".into(), Value::Array(content));
    Value::Dictionary(d)
}

fn device_information(hw: &Hardware, state: &DeviceState, query: &str) -> Option<Value> {
    let s = |v: &str| Some(Value::String(v.to_string()));
    match query {
        "UDID" => s(&hw.udid),
        "SerialNumber" => s(&hw.serial_number),
        "DeviceName" => s(&hw.device_name),
        "OSVersion" => s(&hw.os_version),
        "BuildVersion" => s(&hw.build_version),
        "Model" => s(&hw.model),
        "ModelName" => s(&hw.model_name),
        "ProductName" => s(&hw.product_name),
        "IsSupervised" => Some(Value::Boolean(hw.platform != Platform::Mac)),
        "IsDeviceLocatorServiceEnabled" => Some(Value::Boolean(true)),
        "IsActivationLockEnabled" => Some(Value::Boolean(false)),
        "DeviceCapacity" => Some(Value::Real(128.0)),
        "AvailableDeviceCapacity" => Some(Value::Real(71.5)),
        "BatteryLevel" if hw.platform != Platform::Mac => Some(Value::Real(0.82)),
        "IsMultiUser" => Some(Value::Boolean(false)),
        "WiFiMAC" => s("a4:83:e7:10:20:30"),
        "BluetoothMAC" => s("a4:83:e7:10:20:31"),
        "AwaitingConfiguration" => Some(Value::Boolean(false)),
        "IsLocked" => Some(Value::Boolean(state.locked)),
        _ => None, // Devices omit queries they do not know.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw() -> Hardware {
        Hardware {
            udid: "U".into(),
            serial_number: "S".into(),
            platform: Platform::IPhone,
            model: "iPhone15,2".into(),
            model_name: "iPhone".into(),
            product_name: "iPhone15,2".into(),
            os_version: "17.4".into(),
            build_version: "21E219".into(),
            device_name: "Test".into(),
        }
    }

    fn profile(identifier: &str) -> Vec<u8> {
        format!(
            "<plist version=\"1.0\"><dict><key>PayloadType</key><string>Configuration</string>\
             <key>PayloadIdentifier</key><string>{identifier}</string><key>PayloadUUID</key><string>X</string>\
             <key>PayloadContent</key><array/></dict></plist>"
        )
        .into_bytes()
    }

    #[test]
    fn installed_profiles_appear_in_profile_list_until_removed() {
        let mut state = DeviceState::default();
        let mut install = Dictionary::new();
        install.insert("Payload".into(), Value::Data(profile("com.example.a")));
        assert_eq!(
            execute(&hw(), &mut state, "InstallProfile", &install).status,
            ReportStatus::Acknowledged
        );
        let list = execute(&hw(), &mut state, "ProfileList", &Dictionary::new());
        let entries = list.keys.get("ProfileList").unwrap().as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let mut remove = Dictionary::new();
        remove.insert("Identifier".into(), Value::String("com.example.a".into()));
        assert_eq!(
            execute(&hw(), &mut state, "RemoveProfile", &remove).status,
            ReportStatus::Acknowledged
        );
        assert_eq!(
            execute(&hw(), &mut state, "RemoveProfile", &remove).status,
            ReportStatus::Error
        );
        assert!(state.profiles.is_empty());
    }

    #[test]
    fn device_information_answers_only_the_asked_queries() {
        let mut q = Dictionary::new();
        q.insert(
            "Queries".into(),
            Value::Array(vec![
                Value::String("OSVersion".into()),
                Value::String("Bogus".into()),
            ]),
        );
        let a = execute(&hw(), &mut DeviceState::default(), "DeviceInformation", &q);
        let r = a
            .keys
            .get("QueryResponses")
            .unwrap()
            .as_dictionary()
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r.get("OSVersion").unwrap().as_string(), Some("17.4"));
    }

    #[test]
    fn unknown_commands_answer_error_with_an_error_chain() {
        let a = execute(
            &hw(),
            &mut DeviceState::default(),
            "FlyToTheMoon",
            &Dictionary::new(),
        );
        assert_eq!(a.status, ReportStatus::Error);
        assert!(a.keys.get("ErrorChain").unwrap().as_array().unwrap().len() == 1);
    }
}
