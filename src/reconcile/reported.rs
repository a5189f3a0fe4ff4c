//! What devices report, turned into what the planner and group selectors read: a ProfileList
//! result becomes `ReportedProfiles`; Authenticate facts and DeviceInformation answers become
//! `DeviceAttributes`. Pure functions over decoded plists.

use super::shared_text::{set_own, set_shared};
use crate::policy::model::Platform;
use crate::policy::selector::DeviceAttributes;
use crate::vocab::facts::ReportedFacts;
use crate::vocab::profiles::ReportedProfiles;
use plist::{Dictionary, Value};

/// The DeviceInformation queries whose answers groups can select on.
pub const INVENTORY_QUERIES: [&str; 6] = [
    "ProductName",
    "Model",
    "OSVersion",
    "SerialNumber",
    "IsSupervised",
    "DeviceName",
];

/// Reads a ProfileList result (`ProfileList`: array of dictionaries with PayloadIdentifier
/// and PayloadUUID). Entries without both are skipped; `None` when the result has no
/// ProfileList array.
pub fn profile_list(result: &Dictionary, reported_at: i64) -> Option<ReportedProfiles> {
    let list = result.get("ProfileList").and_then(Value::as_array)?;
    let profiles = list
        .iter()
        .filter_map(Value::as_dictionary)
        .filter_map(|p| {
            let id = p.get("PayloadIdentifier")?.as_string()?;
            let uuid = p.get("PayloadUUID")?.as_string()?;
            Some((id.to_string(), uuid.to_string()))
        })
        .collect();
    Some(ReportedProfiles {
        reported_at,
        profiles,
    })
}

/// The platform a device runs, from its ProductName or Model identifier ("iPhone15,2",
/// "iPad13,18", "Mac14,2", "AppleTV11,1", "Watch6,1", "RealityDevice14,1").
pub fn platform_of(product_or_model: &str) -> Option<Platform> {
    Platform::ALL.into_iter().find(|&platform| {
        product_prefixes(platform)
            .iter()
            .any(|prefix| product_or_model.starts_with(prefix))
    })
}

/// How the ProductName (or Model) identifiers of a platform's devices begin: what
/// `platform_of` reads, and what a device search by platform looks for in the store.
pub fn product_prefixes(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Ios => &["iPhone", "iPod"],
        Platform::IpadOs => &["iPad"],
        Platform::MacOs => &["Mac", "iMac", "VirtualMac"],
        Platform::TvOs => &["AppleTV"],
        Platform::WatchOs => &["Watch"],
        Platform::VisionOs => &["RealityDevice"],
    }
}

/// Reads a DeviceInformation answer (`QueryResponses`); None when it has none.
pub fn device_facts(result: &Dictionary) -> Option<ReportedFacts> {
    let answers = result
        .get("QueryResponses")
        .and_then(Value::as_dictionary)?;
    let text = |key: &str| {
        answers
            .get(key)
            .and_then(Value::as_string)
            .map(str::to_string)
    };
    Some(ReportedFacts {
        product_name: text("ProductName"),
        model: text("Model"),
        os_version: text("OSVersion"),
        serial_number: text("SerialNumber"),
        supervised: answers.get("IsSupervised").and_then(Value::as_boolean),
        device_name: text("DeviceName"),
    })
}

/// Attributes `apply_facts` can set, as bits of what it returns.
pub const FACT_PLATFORM: u8 = 1;
pub const FACT_MODEL: u8 = 2;
pub const FACT_OS_VERSION: u8 = 4;
pub const FACT_SERIAL: u8 = 8;

/// Folds reported facts into the attributes groups select on (absent facts change nothing);
/// returns which of the `FACT_*` attributes it set.
pub fn apply_facts(attributes: &mut DeviceAttributes, facts: &ReportedFacts) -> u8 {
    let mut set = 0;
    let platform = facts.product_name.as_deref().or(facts.model.as_deref());
    if let Some(platform) = platform.and_then(platform_of) {
        attributes.platform = Some(platform);
        set |= FACT_PLATFORM;
    }
    // Values unchanged since the last report are left as they are: nothing is allocated.
    if let Some(model) = &facts.model {
        set_shared(&mut attributes.model, model);
        set |= FACT_MODEL;
    }
    if let Some(os) = &facts.os_version {
        set_shared(&mut attributes.os_version, os);
        set |= FACT_OS_VERSION;
    }
    if let Some(serial) = &facts.serial_number {
        set_own(&mut attributes.serial_number, serial);
        set |= FACT_SERIAL;
    }
    if let Some(supervised) = facts.supervised {
        attributes.supervised = Some(supervised);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_list_results_become_identifier_to_uuid() {
        let xml = br#"<?xml version="1.0"?><plist version="1.0"><dict>
<key>ProfileList</key><array>
<dict><key>PayloadIdentifier</key><string>com.example.wifi</string><key>PayloadUUID</key><string>U1</string></dict>
<dict><key>PayloadIdentifier</key><string>broken</string></dict>
</array><key>Status</key><string>Acknowledged</string></dict></plist>"#;
        let dict: Dictionary = plist::from_bytes(xml).unwrap();
        let reported = profile_list(&dict, 7).unwrap();
        assert_eq!(reported.reported_at, 7);
        assert_eq!(reported.profiles.len(), 1);
        assert_eq!(reported.profiles["com.example.wifi"], "U1");
        assert!(profile_list(&Dictionary::new(), 7).is_none());
    }

    #[test]
    fn platforms_follow_product_names() {
        for (product, platform) in [
            ("iPhone15,2", Platform::Ios),
            ("iPad13,18", Platform::IpadOs),
            ("Mac14,2", Platform::MacOs),
            ("AppleTV11,1", Platform::TvOs),
            ("Watch6,1", Platform::WatchOs),
            ("RealityDevice14,1", Platform::VisionOs),
        ] {
            assert_eq!(platform_of(product), Some(platform), "{product}");
        }
        assert_eq!(platform_of("Toaster1,1"), None);
    }

    #[test]
    fn device_information_updates_selector_attributes() {
        let mut attributes = DeviceAttributes::default();
        let mut answers = Dictionary::new();
        answers.insert("ProductName".into(), Value::String("iPad13,18".into()));
        answers.insert("OSVersion".into(), Value::String("17.5".into()));
        answers.insert("IsSupervised".into(), Value::Boolean(true));
        let mut result = Dictionary::new();
        result.insert("QueryResponses".into(), Value::Dictionary(answers));
        apply_facts(&mut attributes, &device_facts(&result).unwrap());
        assert!(device_facts(&Dictionary::new()).is_none());
        assert_eq!(attributes.platform, Some(Platform::IpadOs));
        assert_eq!(attributes.os_version.as_deref(), Some("17.5"));
        assert_eq!(attributes.supervised, Some(true));
    }
}
