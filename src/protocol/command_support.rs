//! Whether an MDM command can run on a given device, by Apple's command schemas: the OSes
//! that have it and since which version, whether it needs supervision, whether User
//! Enrollment forbids it, and which of its keys an OS does not know. The facts come from
//! `command_support.json`, a digest that `scripts/gen-command-support` derives from the
//! reference schemas (MIT); this module owns reading that digest and answering questions
//! about one command and one device. It is pure (no I/O, no clock) and never refuses what it
//! does not know: an unknown command or an unreported OS version leaves the decision to the
//! device.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// What we know about a device when deciding whether a command can run on it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceTraits<'a> {
    /// The schema's OS name: "iOS" (also for iPadOS), "macOS", "tvOS", "visionOS", "watchOS".
    pub platform: &'a str,
    pub os_version: Option<&'a str>,
    /// None when the device has not reported it yet.
    pub supervised: Option<bool>,
    pub user_enrollment: bool,
}

/// Whether a command can run on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// Will not run on this device; the reason names the command, the platform and why, e.g.
    /// "EnableLostMode is not available on macOS" / "ShutDownDevice needs a supervised device (iOS)" /
    /// "EraseDevice is not available with User Enrollment" / "DeviceLock needs iOS 4.0 or later; the device runs 3.1".
    NotApplicable(String),
    /// Cannot decide until the device reports this fact (e.g. "IsSupervised").
    NeedsFact(&'static str),
}

#[derive(Debug, Deserialize)]
struct Digest {
    commands: HashMap<String, CommandSchema>,
}

#[derive(Debug, Deserialize)]
struct CommandSchema {
    /// Only the OSes that have the command.
    platforms: BTreeMap<String, PlatformSupport>,
    /// Key → OSes on which the key is unavailable.
    #[serde(default)]
    unavailable_keys: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct PlatformSupport {
    introduced: String,
    #[serde(default)]
    removed: Option<String>,
    #[serde(default)]
    supervised: bool,
    /// Kept in the digest for completeness; Pomona does not know yet whether a device came
    /// through Automated Device Enrollment, so it is not checked.
    #[serde(default)]
    #[allow(dead_code)]
    requiresdep: bool,
    /// allowed | forbidden | required | ignored; absent where the OS has no User Enrollment.
    #[serde(default)]
    userenrollment: Option<String>,
}

fn digest() -> &'static Digest {
    static DIGEST: OnceLock<Digest> = OnceLock::new();
    DIGEST.get_or_init(|| {
        serde_json::from_str(include_str!("command_support.json"))
            .expect("command_support.json is generated valid JSON")
    })
}

/// Callers may pass the marketing name; the schemas file iPadOS under iOS.
fn schema_platform(platform: &str) -> &str {
    if platform.eq_ignore_ascii_case("iPadOS") {
        "iOS"
    } else {
        platform
    }
}

/// Whether Apple's schemas describe this RequestType.
pub fn is_known_command(request_type: &str) -> bool {
    digest().commands.contains_key(request_type)
}

/// Whether `request_type` can run on `device`. Definite refusals come before `NeedsFact`, so
/// a command that cannot run on the platform at all is never left waiting for a fact.
pub fn command_support(request_type: &str, device: &DeviceTraits) -> Support {
    match digest().commands.get(request_type) {
        Some(schema) => judge(request_type, schema, device),
        None => Support::Supported, // the device has the last word
    }
}

fn judge(request_type: &str, schema: &CommandSchema, device: &DeviceTraits) -> Support {
    let platform = schema_platform(device.platform);
    let Some(support) = schema.platforms.get(platform) else {
        return Support::NotApplicable(format!("{request_type} is not available on {platform}"));
    };
    match support.userenrollment.as_deref() {
        Some("forbidden") if device.user_enrollment => {
            return Support::NotApplicable(format!(
                "{request_type} is not available with User Enrollment ({platform})"
            ))
        }
        Some("required") if !device.user_enrollment => {
            return Support::NotApplicable(format!(
                "{request_type} is only available with User Enrollment ({platform})"
            ))
        }
        _ => {}
    }
    if let Some(running) = device.os_version.and_then(Version::parse) {
        let shown = device.os_version.unwrap_or_default().trim();
        if let Some(introduced) = Version::parse(&support.introduced) {
            if running < introduced {
                return Support::NotApplicable(format!(
                    "{request_type} needs {platform} {} or later; the device runs {shown}",
                    support.introduced
                ));
            }
        }
        if let Some(removed) = support.removed.as_deref() {
            if Version::parse(removed).is_some_and(|removed| running >= removed) {
                return Support::NotApplicable(format!(
                    "{request_type} was removed in {platform} {removed}; the device runs {shown}"
                ));
            }
        }
    }
    if support.supervised {
        match device.supervised {
            Some(true) => {}
            Some(false) => {
                return Support::NotApplicable(format!(
                    "{request_type} needs a supervised device ({platform})"
                ))
            }
            None => return Support::NeedsFact("IsSupervised"),
        }
    }
    Support::Supported
}

/// Keys of a command the schema marks unavailable on this platform (e.g. PIN on iOS for DeviceLock).
pub fn unavailable_keys<'k>(
    request_type: &str,
    platform: &str,
    keys: impl IntoIterator<Item = &'k str>,
) -> Vec<String> {
    let Some(schema) = digest().commands.get(request_type) else {
        return Vec::new();
    };
    let platform = schema_platform(platform);
    keys.into_iter()
        .filter(|key| {
            schema
                .unavailable_keys
                .get(*key)
                .is_some_and(|oses| oses.iter().any(|os| os == platform))
        })
        .map(str::to_string)
        .collect()
}

/// A dotted version compared number by number, missing parts as zero (17.4 < 17.10,
/// 17 == 17.0). Anything that is not dotted numbers is not a version we can compare.
#[derive(Debug)]
struct Version(Vec<u64>);

impl Version {
    fn parse(text: &str) -> Option<Self> {
        let parts = text
            .trim()
            .split('.')
            .map(|part| part.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(Self(parts))
    }
}

// Equality follows the ordering (17 == 17.0), which a derived one would not.
impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let len = self.0.len().max(other.0.len());
        (0..len)
            .map(|i| {
                let a = self.0.get(i).copied().unwrap_or(0);
                let b = other.0.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(
        platform: &'static str,
        os_version: Option<&'static str>,
        supervised: Option<bool>,
        user_enrollment: bool,
    ) -> DeviceTraits<'static> {
        DeviceTraits {
            platform,
            os_version,
            supervised,
            user_enrollment,
        }
    }

    const SUPERVISED_IPHONE: DeviceTraits<'static> = DeviceTraits {
        platform: "iOS",
        os_version: Some("17.4.1"),
        supervised: Some(true),
        user_enrollment: false,
    };

    fn not_applicable(reason: &str) -> Support {
        Support::NotApplicable(reason.into())
    }

    #[test]
    fn commands_are_judged_by_platform_version_supervision_and_enrollment() {
        let unsupervised_iphone = device("iOS", Some("17.4"), Some(false), false);
        let unknown_supervision = device("iOS", Some("17.4"), None, false);
        let mac = device("macOS", Some("14.5"), Some(false), false);
        let user_enrolled_iphone = device("iOS", Some("17.4"), Some(false), true);
        let watch = device("watchOS", Some("10.2"), Some(true), false);
        let old_iphone = device("iOS", Some("3.1"), Some(true), false);
        let cases: &[(&str, &DeviceTraits, Support)] = &[
            (
                "EnableLostMode",
                &mac,
                not_applicable("EnableLostMode is not available on macOS"),
            ),
            (
                "DeviceLocation",
                &mac,
                not_applicable("DeviceLocation is not available on macOS"),
            ),
            (
                "EnableLostMode",
                &unsupervised_iphone,
                not_applicable("EnableLostMode needs a supervised device (iOS)"),
            ),
            (
                "EnableLostMode",
                &unknown_supervision,
                Support::NeedsFact("IsSupervised"),
            ),
            ("EnableLostMode", &SUPERVISED_IPHONE, Support::Supported),
            ("DeviceLock", &mac, Support::Supported),
            ("DeviceLock", &unsupervised_iphone, Support::Supported),
            ("DeviceLock", &user_enrolled_iphone, Support::Supported),
            (
                "DeviceLock",
                &old_iphone,
                not_applicable("DeviceLock needs iOS 4.0 or later; the device runs 3.1"),
            ),
            (
                "EraseDevice",
                &user_enrolled_iphone,
                not_applicable("EraseDevice is not available with User Enrollment (iOS)"),
            ),
            ("EraseDevice", &unsupervised_iphone, Support::Supported),
            (
                "ShutDownDevice",
                &unsupervised_iphone,
                not_applicable("ShutDownDevice needs a supervised device (iOS)"),
            ),
            ("ShutDownDevice", &SUPERVISED_IPHONE, Support::Supported),
            ("ShutDownDevice", &mac, Support::Supported),
            (
                "RestartDevice",
                &watch,
                not_applicable("RestartDevice is not available on watchOS"),
            ),
            (
                "ClearPasscode",
                &mac,
                not_applicable("ClearPasscode is not available on macOS"),
            ),
            ("ClearPasscode", &unsupervised_iphone, Support::Supported),
            ("FlyToTheMoon", &mac, Support::Supported),
        ];
        for (command, traits, expected) in cases {
            assert_eq!(
                &command_support(command, traits),
                expected,
                "{command} on {traits:?}"
            );
        }
    }

    #[test]
    fn a_refusal_for_the_platform_comes_before_waiting_for_supervision() {
        let mac_unknown = device("macOS", Some("14.5"), None, false);
        assert_eq!(
            command_support("EnableLostMode", &mac_unknown),
            not_applicable("EnableLostMode is not available on macOS")
        );
        // ShutDownDevice needs no supervision on macOS, so nothing is missing.
        assert_eq!(
            command_support("ShutDownDevice", &mac_unknown),
            Support::Supported
        );
    }

    #[test]
    fn an_unknown_or_unreadable_os_version_does_not_refuse() {
        for version in [None, Some(""), Some("beta"), Some("17.x")] {
            let traits = device("iOS", version, Some(true), false);
            assert_eq!(
                command_support("EnableLostMode", &traits),
                Support::Supported
            );
        }
    }

    #[test]
    fn ipados_is_read_as_ios() {
        let ipad = device("iPadOS", Some("17.5"), Some(false), false);
        assert_eq!(
            command_support("EnableLostMode", &ipad),
            not_applicable("EnableLostMode needs a supervised device (iOS)")
        );
        assert_eq!(
            unavailable_keys("DeviceLock", "iPadOS", ["PIN"]),
            vec!["PIN".to_string()]
        );
    }

    #[test]
    fn a_command_removed_from_an_os_is_refused_from_that_version_on() {
        let schema: CommandSchema = serde_json::from_str(
            r#"{"platforms":{"macOS":{"introduced":"10.7","removed":"14.0"}}}"#,
        )
        .unwrap();
        let on = |version| {
            judge(
                "OldThing",
                &schema,
                &device("macOS", Some(version), None, false),
            )
        };
        assert_eq!(on("13.6.1"), Support::Supported);
        assert_eq!(
            on("14.5"),
            not_applicable("OldThing was removed in macOS 14.0; the device runs 14.5")
        );
    }

    #[test]
    fn versions_compare_number_by_number() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("17.4") < v("17.10"));
        assert!(v("9.3") < v("10.0"));
        assert_eq!(v("17"), v("17.0.0"));
        assert!(v("17.4.1") > v("17.4"));
        assert!(Version::parse("17.4b").is_none());
    }

    #[test]
    fn pin_is_unavailable_on_ios_for_device_lock_and_erase_device() {
        for command in ["DeviceLock", "EraseDevice"] {
            assert_eq!(
                unavailable_keys(command, "iOS", ["Message", "PIN"].into_iter()),
                vec!["PIN".to_string()],
                "{command}"
            );
            assert!(
                unavailable_keys(command, "macOS", ["PIN"]).is_empty(),
                "{command} takes a PIN on macOS"
            );
        }
    }

    #[test]
    fn keys_an_os_inherits_as_unavailable_from_the_command_are_reported() {
        // EnableLostMode has no macOS at all; its keys inherit that.
        assert_eq!(
            unavailable_keys("EnableLostMode", "macOS", ["Message", "Footnote"]),
            vec!["Message".to_string(), "Footnote".to_string()]
        );
        // Keys the schema does not describe, and unknown commands, are left to the device.
        assert!(unavailable_keys("DeviceLock", "iOS", ["Bogus"]).is_empty());
        assert!(unavailable_keys("FlyToTheMoon", "iOS", ["PIN"]).is_empty());
    }

    #[test]
    fn the_digest_knows_every_device_action_command() {
        for command in [
            "DeviceLock",
            "EraseDevice",
            "EnableLostMode",
            "DeviceLocation",
            "DisableLostMode",
            "RestartDevice",
            "ShutDownDevice",
            "ClearPasscode",
        ] {
            assert!(is_known_command(command), "{command}");
        }
        assert!(!is_known_command("FlyToTheMoon"));
    }
}
