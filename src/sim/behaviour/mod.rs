//! How a simulated device executes commands: the state it keeps (installed profiles, lock,
//! Lost Mode, erase, restarts and shutdowns, passcode) and the result dictionary it reports,
//! key for key as PROTOCOL.md §6 and Apple's command schemas describe real devices answering.
//! Commands a real device of this platform or supervision would refuse are refused the same
//! way: an `Error` status whose ErrorChain says why. Secrets the device keeps (a Find My PIN,
//! its unlock token) never appear in Debug output.

mod inventory;
mod security;
#[cfg(test)]
mod tests;

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

/// Executes one command as a device of this hardware would, changing `state`.
pub fn execute(
    hw: &Hardware,
    state: &mut DeviceState,
    request_type: &str,
    command: &Dictionary,
) -> Answer {
    match request_type {
        "ProfileList" => inventory::profile_list(state),
        "InstallProfile" => inventory::install_profile(state, command),
        "RemoveProfile" => inventory::remove_profile(state, command),
        "DeviceInformation" => inventory::device_information(hw, state, command),
        "SecurityInfo" => inventory::security_info(state),
        "InstalledApplicationList" => inventory::installed_applications(),
        "DeviceLock" => security::device_lock(hw, state, command),
        "EraseDevice" => security::erase_device(hw, state, command),
        "EnableLostMode" => security::enable_lost_mode(hw, state, command),
        "DeviceLocation" => security::device_location(hw, state),
        "DisableLostMode" => security::disable_lost_mode(hw, state),
        "ShutDownDevice" => security::shut_down(hw, state),
        "RestartDevice" => security::restart(hw, state),
        "ClearPasscode" => security::clear_passcode(hw, state, command),
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

fn one(key: &str, value: Value) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert(key.into(), value);
    d
}
