//! Interim: which platforms run the device-action commands, by hand from Apple's command
//! schemas (mdm/commands/device.*.yaml, passcode.clear.yaml). Replaced by the digest that
//! `scripts/gen-command-support` derives from every command schema.

/// What we know about a device when deciding whether a command can run on it.
pub struct DeviceTraits<'a> {
    /// The schema's OS name: "iOS" (also for iPadOS), "macOS", "tvOS", "visionOS", "watchOS".
    pub platform: &'a str,
    pub os_version: Option<&'a str>,
    /// None when the device has not reported it yet.
    pub supervised: Option<bool>,
    pub user_enrollment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Supported,
    NotApplicable(String),
    NeedsFact(&'static str),
}

/// (RequestType, OS, needs supervision) for the platforms that run it.
const TABLE: &[(&str, &[(&str, bool)])] = &[
    (
        "DeviceLock",
        &[
            ("iOS", false),
            ("macOS", false),
            ("visionOS", false),
            ("watchOS", false),
        ],
    ),
    (
        "EraseDevice",
        &[
            ("iOS", false),
            ("macOS", false),
            ("tvOS", false),
            ("visionOS", false),
            ("watchOS", false),
        ],
    ),
    ("EnableLostMode", &[("iOS", true)]),
    ("DisableLostMode", &[("iOS", true)]),
    ("DeviceLocation", &[("iOS", true)]),
    (
        "RestartDevice",
        &[("iOS", true), ("macOS", false), ("tvOS", true)],
    ),
    ("ShutDownDevice", &[("iOS", true), ("macOS", false)]),
    ("ClearPasscode", &[("iOS", false)]),
];

pub fn command_support(request_type: &str, device: &DeviceTraits) -> Support {
    let Some((_, platforms)) = TABLE.iter().find(|(r, _)| *r == request_type) else {
        return Support::Supported;
    };
    let Some((_, supervised)) = platforms.iter().find(|(os, _)| *os == device.platform) else {
        return Support::NotApplicable(format!(
            "{request_type} is not available on {}",
            device.platform
        ));
    };
    if device.user_enrollment && request_type != "DeviceLock" {
        return Support::NotApplicable(format!(
            "{request_type} is not available with User Enrollment"
        ));
    }
    match (supervised, device.supervised) {
        (true, None) => Support::NeedsFact("IsSupervised"),
        (true, Some(false)) => Support::NotApplicable(format!(
            "{request_type} needs a supervised device ({})",
            device.platform
        )),
        _ => Support::Supported,
    }
}

pub fn unavailable_keys<'k>(
    request_type: &str,
    platform: &str,
    keys: impl IntoIterator<Item = &'k str>,
) -> Vec<String> {
    keys.into_iter()
        .filter(|k| match (*k, request_type) {
            ("PIN", "DeviceLock" | "EraseDevice") => platform != "macOS",
            ("PreserveDataPlan" | "DisallowProximitySetup" | "ReturnToService", "EraseDevice") => {
                platform != "iOS"
            }
            ("NotifyUser", "RestartDevice") => platform != "macOS",
            _ => false,
        })
        .map(str::to_string)
        .collect()
}
