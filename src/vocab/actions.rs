//! The device actions an administrator or a DeviceAction can ask for (lock, erase, Lost
//! Mode…): the word policy documents, the admin API and the store all use for them, and the
//! MDM command each one sends.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a DeviceAction does to its devices; each maps to one MDM command.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum ActionKind {
    /// DeviceLock: lock the screen (message and phone number on the lock screen; a PIN on macOS).
    #[default]
    Lock,
    /// EraseDevice: wipe the device. Needs `confirm`.
    Erase,
    /// EnableLostMode: supervised iOS/iPadOS only.
    EnableLostMode,
    /// DeviceLocation: where a device in Lost Mode is.
    Locate,
    DisableLostMode,
    /// RestartDevice.
    Restart,
    /// ShutDownDevice.
    Shutdown,
    /// ClearPasscode, with the UnlockToken the device gave at enrollment.
    ClearPasscode,
}

impl ActionKind {
    pub const ALL: [ActionKind; 8] = [
        ActionKind::Lock,
        ActionKind::Erase,
        ActionKind::EnableLostMode,
        ActionKind::Locate,
        ActionKind::DisableLostMode,
        ActionKind::Restart,
        ActionKind::Shutdown,
        ActionKind::ClearPasscode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Lock => "Lock",
            ActionKind::Erase => "Erase",
            ActionKind::EnableLostMode => "EnableLostMode",
            ActionKind::Locate => "Locate",
            ActionKind::DisableLostMode => "DisableLostMode",
            ActionKind::Restart => "Restart",
            ActionKind::Shutdown => "Shutdown",
            ActionKind::ClearPasscode => "ClearPasscode",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// The MDM command's RequestType.
    pub fn request_type(self) -> &'static str {
        match self {
            ActionKind::Lock => "DeviceLock",
            ActionKind::Erase => "EraseDevice",
            ActionKind::EnableLostMode => "EnableLostMode",
            ActionKind::Locate => "DeviceLocation",
            ActionKind::DisableLostMode => "DisableLostMode",
            ActionKind::Restart => "RestartDevice",
            ActionKind::Shutdown => "ShutDownDevice",
            ActionKind::ClearPasscode => "ClearPasscode",
        }
    }
}
