//! What a simulated device reports about itself: the profiles it carries (installed, removed and
//! listed as ProfileList does), DeviceInformation queries, SecurityInfo and its applications.

use super::{
    one, Answer, DeviceState, Hardware, InstalledProfile, Platform, ERR_MALFORMED, MDM_DOMAIN,
};
use crate::protocol::profile::ProfileSummary;
use plist::{Dictionary, Value};

pub(super) fn profile_list(state: &DeviceState) -> Answer {
    Answer::ack(one(
        "ProfileList",
        Value::Array(state.profiles.values().map(profile_entry).collect()),
    ))
}

pub(super) fn install_profile(state: &mut DeviceState, command: &Dictionary) -> Answer {
    let Some(payload) = command.get("Payload").and_then(Value::as_data) else {
        return Answer::error(
            ERR_MALFORMED,
            MDM_DOMAIN,
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

pub(super) fn remove_profile(state: &mut DeviceState, command: &Dictionary) -> Answer {
    let Some(identifier) = command.get("Identifier").and_then(Value::as_string) else {
        return Answer::error(
            ERR_MALFORMED,
            MDM_DOMAIN,
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

pub(super) fn device_information(
    hw: &Hardware,
    state: &DeviceState,
    command: &Dictionary,
) -> Answer {
    let queries: Vec<&str> = command
        .get("Queries")
        .and_then(Value::as_array)
        .map(|q| q.iter().filter_map(Value::as_string).collect())
        .unwrap_or_default();
    let mut responses = Dictionary::new();
    for query in queries {
        if let Some(value) = query_response(hw, state, query) {
            responses.insert(query.to_string(), value);
        }
    }
    Answer::ack(one("QueryResponses", Value::Dictionary(responses)))
}

pub(super) fn security_info(state: &DeviceState) -> Answer {
    let mut info = Dictionary::new();
    info.insert("HardwareEncryptionCaps".into(), Value::Integer(3.into()));
    info.insert(
        "PasscodePresent".into(),
        Value::Boolean(!state.passcode_cleared),
    );
    info.insert("PasscodeCompliant".into(), Value::Boolean(true));
    info.insert("PasscodeCompliantWithProfiles".into(), Value::Boolean(true));
    let mut management = Dictionary::new();
    management.insert("EnrolledViaDEP".into(), Value::Boolean(false));
    management.insert("UserApprovedEnrollment".into(), Value::Boolean(true));
    management.insert("IsUserEnrollment".into(), Value::Boolean(false));
    info.insert("ManagementStatus".into(), Value::Dictionary(management));
    Answer::ack(one("SecurityInfo", Value::Dictionary(info)))
}

pub(super) fn installed_applications() -> Answer {
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

/// One DeviceInformation query answered, or `None` for a query the device does not know.
fn query_response(hw: &Hardware, state: &DeviceState, query: &str) -> Option<Value> {
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
        "IsSupervised" => Some(Value::Boolean(hw.supervised)),
        // The schema has this query on iOS only.
        "IsMDMLostModeEnabled" if hw.platform.is_ios() => {
            Some(Value::Boolean(state.lost_mode.is_some()))
        }
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
