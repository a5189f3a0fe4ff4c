//! Group membership: what a device looks like to a selector (its labels plus inventory
//! attributes as `pomona.dev/…` labels) and whether it belongs to a DeviceGroup. Pure.

use super::model::{DeviceGroupSpec, LabelSelector, Platform, SelectorOperator};
use std::cmp::Ordering;
use std::collections::BTreeMap;

pub const LABEL_PLATFORM: &str = "pomona.dev/platform";
pub const LABEL_MODEL: &str = "pomona.dev/model";
pub const LABEL_OS_VERSION: &str = "pomona.dev/os-version";
pub const LABEL_SERIAL: &str = "pomona.dev/serial-number";
pub const LABEL_SUPERVISED: &str = "pomona.dev/supervised";
pub const LABEL_ENROLLMENT_TYPE: &str = "pomona.dev/enrollment-type";

/// The inventory labels a selector may use besides ordinary device labels.
pub const INVENTORY_LABELS: [&str; 6] = [
    LABEL_PLATFORM,
    LABEL_MODEL,
    LABEL_OS_VERSION,
    LABEL_SERIAL,
    LABEL_SUPERVISED,
    LABEL_ENROLLMENT_TYPE,
];

/// Why a device label is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label {key:?}: the pomona.dev/ prefix is reserved for inventory attributes ({})", INVENTORY_LABELS.join(", "))]
    Reserved { key: String },
    #[error("label key {key:?} is not valid: use [prefix/]name, name at most 63 characters of A-Z a-z 0-9 - _ . beginning and ending alphanumeric")]
    Key { key: String },
    #[error("label {key:?}: value {value:?} is not valid: at most 63 characters of A-Z a-z 0-9 - _ . beginning and ending alphanumeric")]
    Value { key: String, value: String },
}

/// Checks a device label as Kubernetes does (an optional DNS-style prefix and `/`, a name of at
/// most 63 of `A-Za-z0-9-_.` starting and ending alphanumeric; the value likewise, or empty).
/// The `pomona.dev/` prefix is reserved for inventory attributes.
pub fn check_label(key: &str, value: &str) -> Result<(), LabelError> {
    fn segment_ok(s: &str) -> bool {
        s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    }
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if prefix == Some("pomona.dev") {
        return Err(LabelError::Reserved { key: key.into() });
    }
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && !p.is_empty()
            && p.split('.')
                .all(|part| segment_ok(part) && !part.contains('_'))
    });
    if !prefix_ok || !segment_ok(name) {
        return Err(LabelError::Key { key: key.into() });
    }
    if !value.is_empty() && !segment_ok(value) {
        return Err(LabelError::Value {
            key: key.into(),
            value: value.into(),
        });
    }
    Ok(())
}

/// What is known about one device, for membership decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceAttributes {
    /// Shared with the fleet index's key and its group memberships (one allocation per device).
    pub device_id: std::sync::Arc<str>,
    // Boxed strings rather than `String`s: the fleet index keeps these for every enrolled
    // device, and a box is a third smaller and never holds spare capacity.
    pub serial_number: Option<Box<str>>,
    pub platform: Option<Platform>,
    /// The model and OS version are shared by the many devices reporting the same one
    /// (`reconcile::shared_text`).
    pub model: Option<std::sync::Arc<str>>,
    pub os_version: Option<std::sync::Arc<str>>,
    pub supervised: Option<bool>,
    /// "Device" or "UserEnrollment".
    pub enrollment_type: Option<&'static str>,
    /// Labels from policy (DeviceLabels) and from the admin API.
    pub labels: BTreeMap<String, String>,
}

impl DeviceAttributes {
    /// A label value: inventory attributes first (they cannot be overridden), then labels.
    pub fn label(&self, key: &str) -> Option<String> {
        let inventory = match key {
            LABEL_PLATFORM => self.platform.map(|p| p.as_str().to_string()),
            LABEL_MODEL => self.model.as_deref().map(str::to_string),
            LABEL_OS_VERSION => self.os_version.as_deref().map(str::to_string),
            LABEL_SERIAL => self.serial_number.as_deref().map(str::to_string),
            LABEL_SUPERVISED => self.supervised.map(|s| s.to_string()),
            LABEL_ENROLLMENT_TYPE => self.enrollment_type.map(str::to_string),
            _ => return self.labels.get(key).cloned(),
        };
        inventory
    }
}

/// Whether `device` is a member of the group.
pub fn is_member(group: &DeviceGroupSpec, device: &DeviceAttributes) -> bool {
    let listed = device
        .serial_number
        .as_ref()
        .is_some_and(|s| group.serial_numbers.iter().any(|x| **x == **s))
        || group.udids.iter().any(|u| **u == *device.device_id);
    listed
        || group
            .selector
            .as_ref()
            .is_some_and(|selector| selects(selector, device))
}

/// Whether a selector selects the device. An empty selector selects every device.
pub fn selects(selector: &LabelSelector, device: &DeviceAttributes) -> bool {
    let labels_hold = selector
        .match_labels
        .iter()
        .all(|(k, v)| device.label(k).as_deref() == Some(v.as_str()));
    labels_hold
        && selector.match_expressions.iter().all(|req| {
            let value = device.label(&req.key);
            match req.operator {
                SelectorOperator::In => value.is_some_and(|v| req.values.contains(&v)),
                SelectorOperator::NotIn => !value.is_some_and(|v| req.values.contains(&v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
                SelectorOperator::VersionAtLeast => {
                    compare_to_first(value.as_deref(), &req.values).is_some_and(Ordering::is_ge)
                }
                SelectorOperator::VersionBelow => {
                    compare_to_first(value.as_deref(), &req.values).is_some_and(Ordering::is_lt)
                }
            }
        })
}

fn compare_to_first(value: Option<&str>, values: &[String]) -> Option<Ordering> {
    compare_versions(value?, values.first()?)
}

/// Compares dotted numeric versions (17.4 < 17.10, 17 == 17.0). None if either is not one.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let parse = |v: &str| -> Option<Vec<u64>> {
        v.trim().split('.').map(|part| part.parse().ok()).collect()
    };
    let (mut a, mut b) = (parse(a)?, parse(b)?);
    let len = a.len().max(b.len());
    a.resize(len, 0);
    b.resize(len, 0);
    Some(a.cmp(&b))
}

/// Whether text is a dotted numeric version (for validation).
pub fn is_version(text: &str) -> bool {
    compare_versions(text, "0").is_some()
}

#[cfg(test)]
mod label_tests {
    use super::check_label;

    #[test]
    fn labels_follow_kubernetes_syntax_and_inventory_names_are_reserved() {
        assert!(check_label("team", "sales").is_ok());
        assert!(check_label("example.com/cost-centre", "4711").is_ok());
        assert!(check_label("team", "").is_ok());
        assert!(check_label("-team", "x").is_err());
        assert!(check_label("team", "has space").is_err());
        assert!(check_label(&"k".repeat(64), "x").is_err());
        let reserved = check_label("pomona.dev/supervised", "true").unwrap_err();
        assert!(matches!(reserved, super::LabelError::Reserved { .. }));
        assert!(reserved.to_string().contains("reserved"), "{reserved}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::SelectorRequirement;

    fn iphone() -> DeviceAttributes {
        DeviceAttributes {
            device_id: "UDID-1".into(),
            serial_number: Some("SER1".into()),
            platform: Some(Platform::Ios),
            model: Some("iPhone15,2".into()),
            os_version: Some("17.4.1".into()),
            supervised: Some(true),
            enrollment_type: Some("Device"),
            labels: [("team".to_string(), "sales".to_string())].into(),
        }
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn selector_table() {
        use SelectorOperator::*;
        let cases: Vec<(&str, LabelSelector, bool)> = vec![
            ("empty selects all", LabelSelector::default(), true),
            (
                "matchLabels on a label",
                LabelSelector {
                    match_labels: [("team".into(), "sales".into())].into(),
                    ..Default::default()
                },
                true,
            ),
            (
                "matchLabels mismatch",
                LabelSelector {
                    match_labels: [("team".into(), "eng".into())].into(),
                    ..Default::default()
                },
                false,
            ),
            (
                "platform In",
                LabelSelector {
                    match_expressions: vec![req(LABEL_PLATFORM, In, &["iOS", "iPadOS"])],
                    ..Default::default()
                },
                true,
            ),
            (
                "platform NotIn",
                LabelSelector {
                    match_expressions: vec![req(LABEL_PLATFORM, NotIn, &["iOS"])],
                    ..Default::default()
                },
                false,
            ),
            (
                "missing label NotIn",
                LabelSelector {
                    match_expressions: vec![req("floor", NotIn, &["3"])],
                    ..Default::default()
                },
                true,
            ),
            (
                "Exists",
                LabelSelector {
                    match_expressions: vec![req("team", Exists, &[])],
                    ..Default::default()
                },
                true,
            ),
            (
                "DoesNotExist",
                LabelSelector {
                    match_expressions: vec![req("team", DoesNotExist, &[])],
                    ..Default::default()
                },
                false,
            ),
            (
                "version at least 17.4",
                LabelSelector {
                    match_expressions: vec![req(LABEL_OS_VERSION, VersionAtLeast, &["17.4"])],
                    ..Default::default()
                },
                true,
            ),
            (
                "version at least 17.10",
                LabelSelector {
                    match_expressions: vec![req(LABEL_OS_VERSION, VersionAtLeast, &["17.10"])],
                    ..Default::default()
                },
                false,
            ),
            (
                "version below 18",
                LabelSelector {
                    match_expressions: vec![req(LABEL_OS_VERSION, VersionBelow, &["18"])],
                    ..Default::default()
                },
                true,
            ),
            (
                "supervised true",
                LabelSelector {
                    match_labels: [(LABEL_SUPERVISED.into(), "true".into())].into(),
                    ..Default::default()
                },
                true,
            ),
            (
                "all must hold",
                LabelSelector {
                    match_labels: [("team".into(), "sales".into())].into(),
                    match_expressions: vec![req(LABEL_PLATFORM, In, &["macOS"])],
                },
                false,
            ),
        ];
        let device = iphone();
        for (name, selector, expected) in cases {
            assert_eq!(selects(&selector, &device), expected, "{name}");
        }
    }

    #[test]
    fn explicit_lists_make_members_without_a_selector() {
        let device = iphone();
        let by_serial = DeviceGroupSpec {
            serial_numbers: vec!["SER1".into()],
            ..Default::default()
        };
        let by_udid = DeviceGroupSpec {
            udids: vec!["UDID-1".into()],
            ..Default::default()
        };
        let neither = DeviceGroupSpec {
            serial_numbers: vec!["OTHER".into()],
            ..Default::default()
        };
        assert!(is_member(&by_serial, &device));
        assert!(is_member(&by_udid, &device));
        assert!(!is_member(&neither, &device));
    }

    #[test]
    fn labels_cannot_shadow_inventory() {
        let mut device = iphone();
        device.labels.insert(LABEL_PLATFORM.into(), "macOS".into());
        assert_eq!(device.label(LABEL_PLATFORM).as_deref(), Some("iOS"));
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("17.10", "17.4"), Some(Ordering::Greater));
        assert_eq!(compare_versions("17", "17.0.0"), Some(Ordering::Equal));
        assert_eq!(compare_versions("17.beta", "17"), None);
    }
}
