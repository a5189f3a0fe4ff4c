//! How a simulated device executes commands: the state it keeps (installed profiles, lock,
//! Lost Mode, erase, restarts and shutdowns, passcode) and the result dictionary it reports,
//! key for key as PROTOCOL.md §6 and Apple's command schemas describe real devices answering.
//! Commands a real device of this platform or supervision would refuse are refused the same
//! way: an `Error` status whose ErrorChain says why. Secrets the device keeps (a Find My PIN,
//! its unlock token) never appear in Debug output.

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
    /// Supervised (as after Automated Device Enrollment or Apple Configurator). `sim::hardware`
    /// makes iPhones and iPads supervised and Macs not; a test wanting an unsupervised iPhone
    /// sets this to false before the device enrolls.
    pub supervised: bool,
    /// Where the device is, reported by DeviceLocation in Lost Mode.
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    IPhone,
    IPad,
    Mac,
}

impl Platform {
    /// iPhones and iPads (iOS and iPadOS share the schemas' "iOS").
    pub fn is_ios(self) -> bool {
        matches!(self, Platform::IPhone | Platform::IPad)
    }
}

/// A position in degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
}

/// An installed profile as the device remembers it.
#[derive(Debug, Clone)]
pub struct InstalledProfile {
    pub summary: ProfileSummary,
    /// Installed from a signed (CMS) payload whose signature verified.
    pub signed: bool,
}

/// Bytes the device keeps but never shows: Debug prints only that something is there.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The bytes, for the one place that must compare or send them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Compares without printing; for tests checking what reached the device.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0 == candidate
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// What a device in Lost Mode shows on its Lock Screen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LostMode {
    pub message: Option<String>,
    pub phone_number: Option<String>,
    pub footnote: Option<String>,
}

/// Mutable device state that commands change. Tests read it to see what a command did.
#[derive(Debug, Default)]
pub struct DeviceState {
    pub profiles: BTreeMap<String, InstalledProfile>,
    /// Locked by DeviceLock or EnableLostMode (the simulated user never unlocks it).
    pub locked: bool,
    /// The Find My PIN of the last DeviceLock on a Mac (None: locked without one).
    pub lock_pin: Option<Secret>,
    /// Set by EnableLostMode, cleared by DisableLostMode.
    pub lost_mode: Option<LostMode>,
    /// EraseDevice was acknowledged; the device no longer talks to the server.
    pub erased: bool,
    /// ShutDownDevice commands acknowledged.
    pub shutdowns: u32,
    /// RestartDevice commands acknowledged.
    pub restarts: u32,
    /// ClearPasscode succeeded: the device has no passcode.
    pub passcode_cleared: bool,
    /// The UnlockToken this device sent in TokenUpdate; ClearPasscode must carry it back.
    pub unlock_token: Secret,
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

/// The domain real devices use for MDM command errors.
const MDM_DOMAIN: &str = "MCMDMErrorDomain";
// Error codes are diagnostics only (PROTOCOL.md §5). 12067 is what Apple documents for
// DeviceLocation and DisableLostMode on a device not in Lost Mode; the others are the
// simulator's own, so nothing should depend on their values.
const ERR_MALFORMED: i64 = 12001;
const ERR_UNSUPPORTED: i64 = 12021;
const ERR_NOT_SUPERVISED: i64 = 12080;
const ERR_NOT_IN_LOST_MODE: i64 = 12067;
const ERR_BAD_UNLOCK_TOKEN: i64 = 12082;

/// Commands iOS never answers NotNow (Apple: handling NotNow status responses, as listed in
/// PROTOCOL.md §5). Lost Mode commands are not on Apple's list, so they may be NotNow'd.
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
        "DeviceLock" => device_lock(hw, state, command),
        "EraseDevice" => {
            if let Some(refusal) = check_mac_pin(hw, "EraseDevice", command) {
                return refusal;
            }
            // The device acknowledges, then wipes itself: `SimDevice::exchange` reports this
            // answer and then stops talking to the server. Erasing also ends Lost Mode.
            state.erased = true;
            state.lost_mode = None;
            Answer::ack(Dictionary::new())
        }
        "EnableLostMode" => {
            if let Some(refusal) = needs_supervised_ios(hw, "EnableLostMode") {
                return refusal;
            }
            let text = |key: &str| {
                command
                    .get(key)
                    .and_then(Value::as_string)
                    .filter(|v| !v.trim().is_empty())
                    .map(str::to_string)
            };
            let lost = LostMode {
                message: text("Message"),
                phone_number: text("PhoneNumber"),
                footnote: text("Footnote"),
            };
            if lost.message.is_none() && lost.phone_number.is_none() {
                return Answer::error(
                    ERR_MALFORMED,
                    MDM_DOMAIN,
                    "EnableLostMode needs a Message or a PhoneNumber to show on the Lock Screen.",
                );
            }
            state.lost_mode = Some(lost);
            state.locked = true; // Lost Mode locks the device.
            Answer::ack(Dictionary::new())
        }
        "DeviceLocation" => {
            if let Some(refusal) = needs_supervised_ios(hw, "DeviceLocation") {
                return refusal;
            }
            if state.lost_mode.is_none() {
                return Answer::error(
                    ERR_NOT_IN_LOST_MODE,
                    MDM_DOMAIN,
                    "DeviceLocation: the device is not in Lost Mode.",
                );
            }
            Answer::ack(location_keys(hw.location))
        }
        "DisableLostMode" => {
            if let Some(refusal) = needs_supervised_ios(hw, "DisableLostMode") {
                return refusal;
            }
            // Apple documents 12067 for a device that is not in Lost Mode.
            if state.lost_mode.take().is_none() {
                return Answer::error(
                    ERR_NOT_IN_LOST_MODE,
                    MDM_DOMAIN,
                    "DisableLostMode: the device is not in Lost Mode.",
                );
            }
            Answer::ack(Dictionary::new())
        }
        "ShutDownDevice" => {
            if hw.platform.is_ios() && !hw.supervised {
                return not_supervised("ShutDownDevice");
            }
            // A real device is offline from here until someone powers it on; the simulated
            // one keeps answering so a test can go on with it.
            state.shutdowns += 1;
            Answer::ack(Dictionary::new())
        }
        "RestartDevice" => {
            if hw.platform.is_ios() && !hw.supervised {
                return not_supervised("RestartDevice");
            }
            state.restarts += 1;
            Answer::ack(Dictionary::new())
        }
        "ClearPasscode" => clear_passcode(hw, state, command),
        other => unsupported(other),
    }
}

fn unsupported(request_type: &str) -> Answer {
    Answer::error(
        ERR_UNSUPPORTED,
        MDM_DOMAIN,
        &format!("The MDM command “{request_type}” is not supported."),
    )
}

fn not_supervised(request_type: &str) -> Answer {
    Answer::error(
        ERR_NOT_SUPERVISED,
        MDM_DOMAIN,
        &format!("{request_type} requires a supervised device; this device is not supervised."),
    )
}

/// Lost Mode exists only on supervised iPhones and iPads.
fn needs_supervised_ios(hw: &Hardware, request_type: &str) -> Option<Answer> {
    if !hw.platform.is_ios() {
        Some(Answer::error(
            ERR_UNSUPPORTED,
            MDM_DOMAIN,
            &format!("The MDM command “{request_type}” is not supported on this platform (Lost Mode is iOS and iPadOS only)."),
        ))
    } else if !hw.supervised {
        Some(not_supervised(request_type))
    } else {
        None
    }
}

/// A Mac takes a six-character Find My PIN with DeviceLock and EraseDevice and refuses
/// anything else; other platforms do not know the key and ignore it.
fn check_mac_pin(hw: &Hardware, request_type: &str, command: &Dictionary) -> Option<Answer> {
    if hw.platform != Platform::Mac {
        return None;
    }
    match command.get("PIN") {
        None => None,
        Some(Value::String(pin)) if pin.chars().count() == 6 => None,
        // The PIN itself is never repeated in the answer.
        Some(_) => Some(Answer::error(
            ERR_MALFORMED,
            MDM_DOMAIN,
            &format!("{request_type}: the PIN must be a string of six characters."),
        )),
    }
}

fn device_lock(hw: &Hardware, state: &mut DeviceState, command: &Dictionary) -> Answer {
    if let Some(refusal) = check_mac_pin(hw, "DeviceLock", command) {
        return refusal;
    }
    let shows_text = ["Message", "PhoneNumber"]
        .iter()
        .any(|key| command.get(key).and_then(Value::as_string).is_some());
    let mut keys = Dictionary::new();
    if shows_text {
        // MessageResult values as the schema lists them.
        let result = if state.lost_mode.is_some() {
            "DeviceInLostMode"
        } else if state.passcode_cleared && hw.platform.is_ios() {
            "NoPasscodeSet"
        } else {
            "Success"
        };
        keys.insert("MessageResult".into(), Value::String(result.into()));
    }
    if hw.platform == Platform::Mac {
        state.lock_pin = command
            .get("PIN")
            .and_then(Value::as_string)
            .map(|pin| Secret::new(pin.as_bytes()));
    }
    state.locked = true;
    Answer::ack(keys)
}

fn clear_passcode(hw: &Hardware, state: &mut DeviceState, command: &Dictionary) -> Answer {
    if !hw.platform.is_ios() {
        return unsupported("ClearPasscode");
    }
    let Some(token) = command.get("UnlockToken").and_then(Value::as_data) else {
        return Answer::error(
            ERR_MALFORMED,
            MDM_DOMAIN,
            "ClearPasscode needs UnlockToken as <data> (the token from this device's TokenUpdate).",
        );
    };
    // Neither token is echoed: the unlock token is a secret.
    if state.unlock_token.expose().is_empty() || !state.unlock_token.matches(token) {
        return Answer::error(
            ERR_BAD_UNLOCK_TOKEN,
            MDM_DOMAIN,
            "ClearPasscode: the UnlockToken is not the one this device sent in TokenUpdate.",
        );
    }
    state.passcode_cleared = true;
    Answer::ack(Dictionary::new())
}

/// DeviceLocation's result keys, all required by the schema. Accuracy, altitude, speed and
/// course are plausible constants for a phone lying still; the time is now.
fn location_keys(location: Location) -> Dictionary {
    let mut keys = Dictionary::new();
    let mut real = |key: &str, value: f64| {
        keys.insert(key.into(), Value::Real(value));
    };
    real("Latitude", location.latitude);
    real("Longitude", location.longitude);
    real("HorizontalAccuracy", 12.0);
    real("VerticalAccuracy", 8.0);
    real("Altitude", 41.0);
    real("Speed", 0.0);
    real("Course", -1.0); // negative: unknown (the device is not moving)
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let timestamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());
    keys.insert("Timestamp".into(), Value::String(timestamp));
    keys
}

fn one(key: &str, value: Value) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert(key.into(), value);
    d
}

fn install_profile(state: &mut DeviceState, command: &Dictionary) -> Answer {
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
            supervised: true,
            location: Location {
                latitude: 52.520008,
                longitude: 13.404954,
            },
        }
    }

    /// (what the case is, the device, the command's keys, what the error must say)
    type Case<'a> = (&'a str, Hardware, &'a [(&'a str, Value)], &'a str);

    fn unsupervised_iphone() -> Hardware {
        Hardware {
            supervised: false,
            ..hw()
        }
    }

    fn mac() -> Hardware {
        Hardware {
            platform: Platform::Mac,
            supervised: false,
            os_version: "14.5".into(),
            ..hw()
        }
    }

    fn command(pairs: &[(&str, Value)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn text(v: &str) -> Value {
        Value::String(v.into())
    }

    /// The ErrorChain's description of an Error answer (panics on anything else).
    fn error_description(answer: &Answer) -> String {
        assert_eq!(answer.status, ReportStatus::Error);
        answer.keys["ErrorChain"].as_array().unwrap()[0]
            .as_dictionary()
            .unwrap()["USEnglishDescription"]
            .as_string()
            .unwrap()
            .to_string()
    }

    fn run(
        hw: &Hardware,
        state: &mut DeviceState,
        request_type: &str,
        c: &[(&str, Value)],
    ) -> Answer {
        execute(hw, state, request_type, &command(c))
    }

    fn in_lost_mode() -> DeviceState {
        let mut state = DeviceState::default();
        let a = run(
            &hw(),
            &mut state,
            "EnableLostMode",
            &[("Message", text("Lost"))],
        );
        assert_eq!(a.status, ReportStatus::Acknowledged);
        state
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

    #[test]
    fn device_lock_locks_and_reports_the_message_result_only_with_a_message() {
        let mut state = DeviceState::default();
        let a = run(&hw(), &mut state, "DeviceLock", &[]);
        assert_eq!(a.status, ReportStatus::Acknowledged);
        assert!(a.keys.is_empty(), "no MessageResult without a message");
        assert!(state.locked);

        let mut state = DeviceState::default();
        let a = run(
            &hw(),
            &mut state,
            "DeviceLock",
            &[("PhoneNumber", text("+1 555 0100"))],
        );
        assert_eq!(a.keys["MessageResult"].as_string(), Some("Success"));

        let mut state = in_lost_mode();
        let a = run(
            &hw(),
            &mut state,
            "DeviceLock",
            &[("Message", text("Call IT"))],
        );
        assert_eq!(
            a.keys["MessageResult"].as_string(),
            Some("DeviceInLostMode")
        );
    }

    #[test]
    fn a_mac_keeps_the_find_my_pin_of_device_lock_without_showing_it() {
        let mut state = DeviceState::default();
        let a = run(
            &mac(),
            &mut state,
            "DeviceLock",
            &[("PIN", text("123456")), ("Message", text("Call IT"))],
        );
        assert_eq!(a.status, ReportStatus::Acknowledged);
        assert_eq!(a.keys["MessageResult"].as_string(), Some("Success"));
        assert!(state.locked);
        assert!(state
            .lock_pin
            .as_ref()
            .is_some_and(|p| p.matches(b"123456")));
        let debug = format!("{state:?}");
        assert!(
            !debug.contains("123456"),
            "the PIN leaked into Debug: {debug}"
        );
    }

    #[test]
    fn a_mac_refuses_a_pin_that_is_not_six_characters_and_does_not_echo_it() {
        for request_type in ["DeviceLock", "EraseDevice"] {
            let mut state = DeviceState::default();
            let a = run(&mac(), &mut state, request_type, &[("PIN", text("12345"))]);
            let why = error_description(&a);
            assert!(
                why.contains("six characters") && !why.contains("12345"),
                "{why}"
            );
            assert!(!state.locked && !state.erased, "{request_type}");
        }
    }

    #[test]
    fn erase_device_acknowledges_and_marks_the_device_erased_ending_lost_mode() {
        let mut state = in_lost_mode();
        let a = run(&hw(), &mut state, "EraseDevice", &[]);
        assert_eq!(a.status, ReportStatus::Acknowledged);
        assert!(state.erased);
        assert!(state.lost_mode.is_none());
        let mut state = DeviceState::default();
        let a = run(
            &mac(),
            &mut state,
            "EraseDevice",
            &[("PIN", text("654321"))],
        );
        assert_eq!(a.status, ReportStatus::Acknowledged);
        assert!(state.erased);
    }

    #[test]
    fn enable_lost_mode_shows_the_message_phone_and_footnote_on_a_supervised_iphone() {
        let mut state = DeviceState::default();
        let a = run(
            &hw(),
            &mut state,
            "EnableLostMode",
            &[
                ("Message", text("Lost")),
                ("PhoneNumber", text("+1 555 0100")),
                ("Footnote", text("Acme")),
            ],
        );
        assert_eq!(a.status, ReportStatus::Acknowledged);
        assert_eq!(
            state.lost_mode,
            Some(LostMode {
                message: Some("Lost".into()),
                phone_number: Some("+1 555 0100".into()),
                footnote: Some("Acme".into()),
            })
        );
        assert!(state.locked);
    }

    #[test]
    fn enable_lost_mode_is_refused_without_supervision_on_a_mac_and_without_text() {
        let message = [("Message", text("Lost"))];
        let cases: [Case; 3] = [
            (
                "unsupervised iPhone",
                unsupervised_iphone(),
                &message,
                "requires a supervised device",
            ),
            ("Mac", mac(), &message, "not supported on this platform"),
            (
                "no message nor phone",
                hw(),
                &[("Footnote", text("Acme"))],
                "needs a Message or a PhoneNumber",
            ),
        ];
        for (what, hardware, c, expected) in cases {
            let mut state = DeviceState::default();
            let why = error_description(&run(&hardware, &mut state, "EnableLostMode", c));
            assert!(why.contains(expected), "{what}: {why}");
            assert!(state.lost_mode.is_none(), "{what}");
        }
    }

    #[test]
    fn device_location_answers_every_schema_key_in_lost_mode() {
        let mut state = in_lost_mode();
        let a = run(&hw(), &mut state, "DeviceLocation", &[]);
        assert_eq!(a.status, ReportStatus::Acknowledged);
        assert_eq!(a.keys["Latitude"].as_real(), Some(52.520008));
        assert_eq!(a.keys["Longitude"].as_real(), Some(13.404954));
        for key in [
            "HorizontalAccuracy",
            "VerticalAccuracy",
            "Altitude",
            "Speed",
            "Course",
        ] {
            assert!(a.keys[key].as_real().is_some(), "{key} must be a real");
        }
        let timestamp = a.keys["Timestamp"].as_string().unwrap();
        let parsed =
            time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("Timestamp {timestamp:?} is not RFC 3339: {e}"));
        assert_eq!(parsed.offset(), time::UtcOffset::UTC);
    }

    #[test]
    fn device_location_outside_lost_mode_is_an_error_saying_so() {
        let why = error_description(&run(
            &hw(),
            &mut DeviceState::default(),
            "DeviceLocation",
            &[],
        ));
        assert!(why.contains("not in Lost Mode"), "{why}");
        let why = error_description(&run(
            &mac(),
            &mut DeviceState::default(),
            "DeviceLocation",
            &[],
        ));
        assert!(why.contains("not supported"), "{why}");
    }

    #[test]
    fn disable_lost_mode_clears_it_and_is_an_error_when_not_in_lost_mode() {
        let mut state = in_lost_mode();
        let a = run(&hw(), &mut state, "DisableLostMode", &[]);
        assert_eq!(a.status, ReportStatus::Acknowledged);
        assert!(state.lost_mode.is_none());
        let why = error_description(&run(&hw(), &mut state, "DisableLostMode", &[]));
        assert!(why.contains("not in Lost Mode"), "{why}");
        let why = error_description(&run(
            &unsupervised_iphone(),
            &mut DeviceState::default(),
            "DisableLostMode",
            &[],
        ));
        assert!(why.contains("supervised"), "{why}");
    }

    #[test]
    fn shut_down_and_restart_are_counted_on_supervised_iphones_and_macs_only() {
        for hardware in [hw(), mac()] {
            let mut state = DeviceState::default();
            for request_type in ["ShutDownDevice", "RestartDevice", "RestartDevice"] {
                let a = run(&hardware, &mut state, request_type, &[]);
                assert_eq!(
                    a.status,
                    ReportStatus::Acknowledged,
                    "{request_type} on {:?}",
                    hardware.platform
                );
            }
            assert_eq!((state.shutdowns, state.restarts), (1, 2));
        }
        let mut state = DeviceState::default();
        for request_type in ["ShutDownDevice", "RestartDevice"] {
            let why =
                error_description(&run(&unsupervised_iphone(), &mut state, request_type, &[]));
            assert!(
                why.contains(request_type) && why.contains("supervised"),
                "{why}"
            );
        }
        assert_eq!((state.shutdowns, state.restarts), (0, 0));
    }

    #[test]
    fn clear_passcode_needs_this_devices_unlock_token() {
        let token = vec![7u8; 32];
        let fresh = || DeviceState {
            unlock_token: Secret::new(token.clone()),
            ..DeviceState::default()
        };
        let mut state = fresh();
        let a = run(
            &hw(),
            &mut state,
            "ClearPasscode",
            &[("UnlockToken", Value::Data(token.clone()))],
        );
        assert_eq!(a.status, ReportStatus::Acknowledged);
        assert!(state.passcode_cleared);
        let security = run(&hw(), &mut state, "SecurityInfo", &[]);
        assert_eq!(
            security.keys["SecurityInfo"].as_dictionary().unwrap()["PasscodePresent"].as_boolean(),
            Some(false)
        );

        let cases: [Case; 4] = [
            (
                "wrong token",
                hw(),
                &[("UnlockToken", Value::Data(vec![8u8; 32]))],
                "not the one this device sent",
            ),
            (
                "token as a string",
                hw(),
                &[("UnlockToken", text("0707"))],
                "as <data>",
            ),
            ("no token", hw(), &[], "as <data>"),
            (
                "on a Mac",
                mac(),
                &[("UnlockToken", Value::Data(token.clone()))],
                "not supported",
            ),
        ];
        for (what, hardware, c, expected) in cases {
            let mut state = fresh();
            let why = error_description(&run(&hardware, &mut state, "ClearPasscode", c));
            assert!(why.contains(expected), "{what}: {why}");
            assert!(!state.passcode_cleared, "{what}");
        }
        assert!(
            !format!("{:?}", fresh()).contains("7, 7"),
            "the unlock token leaked into Debug"
        );
    }

    #[test]
    fn device_information_reports_supervision_and_lost_mode_from_the_device() {
        let queries = [(
            "Queries",
            Value::Array(vec![text("IsSupervised"), text("IsMDMLostModeEnabled")]),
        )];
        let answer = |hardware: &Hardware, state: &mut DeviceState| {
            let a = run(hardware, state, "DeviceInformation", &queries);
            a.keys["QueryResponses"].as_dictionary().unwrap().clone()
        };
        let r = answer(&unsupervised_iphone(), &mut DeviceState::default());
        assert_eq!(r["IsSupervised"].as_boolean(), Some(false));
        assert_eq!(r["IsMDMLostModeEnabled"].as_boolean(), Some(false));
        let r = answer(&hw(), &mut in_lost_mode());
        assert_eq!(r["IsSupervised"].as_boolean(), Some(true));
        assert_eq!(r["IsMDMLostModeEnabled"].as_boolean(), Some(true));
        let r = answer(&mac(), &mut DeviceState::default());
        assert_eq!(r["IsSupervised"].as_boolean(), Some(false));
        assert!(
            r.get("IsMDMLostModeEnabled").is_none(),
            "Macs do not know this query"
        );
    }
}
