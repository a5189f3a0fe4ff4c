//! The typed Restrictions payload (`com.apple.applicationaccess`) that policy documents declare:
//! one field per key Pomona carries, with its documentation. What Apple's schema says about each
//! key — the platforms that honour it, those where it only works on supervised devices, its
//! range and allowed values — is not repeated here: it comes from the generated schema digest
//! (`payload_schema::key_facts`), and a test checks every field against it and against the
//! reference schema. It turns declared settings into payload content, validation errors and
//! per-platform warnings. It does no I/O (only its tests read the reference schema), and it
//! knows nothing of devices, profiles as a whole or the store.

use super::model::Platform;
use super::payload_schema::{key_facts, KeyFacts};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `PayloadType` of the Restrictions payload.
pub const PAYLOAD_TYPE: &str = "com.apple.applicationaccess";

/// The schema facts of a key `RestrictionSettings` carries.
fn facts(key: &str) -> KeyFacts {
    key_facts(PAYLOAD_TYPE, key).unwrap_or_else(|| {
        unreachable!("{key} is a RestrictionSettings field, so the schema digest has it (tested)")
    })
}

/// Restrictions (`com.apple.applicationaccess`) as declared in a `Restrictions` document. Keys
/// use Apple's names; unset keys are left out of the payload, so devices keep Apple's defaults
/// (nearly all permissive: `allow*` true, `force*` false). Unknown keys are errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RestrictionSettings {
    // Apps and the App Store
    /// Allow installing apps at all; false also blocks the App Store, alternative marketplaces and
    /// local installs (MDM can still install).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_app_installation: Option<bool>,
    /// Allow the App Store app; false hides it while local, marketplace and MDM installs keep
    /// working.
    #[serde(
        rename = "allowUIAppInstallation",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_ui_app_installation: Option<bool>,
    /// Allow users to delete apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_app_removal: Option<bool>,
    /// Allow users to delete Apple's built-in apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_system_app_removal: Option<bool>,
    /// Allow in-app purchases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_in_app_purchases: Option<bool>,
    /// Allow apps bought on other devices to download automatically (app updates are unaffected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_automatic_app_downloads: Option<bool>,
    /// Allow users to trust enterprise and developer app signers in Settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_enterprise_app_trust: Option<bool>,
    /// Allow App Clips; false also removes App Clips already on the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_app_clips: Option<bool>,
    /// Allow installing apps from alternative marketplaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_marketplace_app_installation: Option<bool>,
    /// Bundle IDs of apps that may not be shown or launched (`com.apple.webapp` covers all web
    /// clips).
    #[serde(
        rename = "blockedAppBundleIDs",
        skip_serializing_if = "Option::is_none"
    )]
    pub blocked_app_bundle_ids: Option<Vec<String>>,
    /// If set, only apps with these bundle IDs may be shown or launched (`com.apple.webapp` covers
    /// all web clips).
    #[serde(
        rename = "allowListedAppBundleIDs",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_listed_app_bundle_ids: Option<Vec<String>>,

    // Camera and screen
    /// Allow the camera; false disables it and hides the Camera app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_camera: Option<bool>,
    /// Allow screenshots and screen recordings (false also stops Classroom screen observation).
    #[serde(rename = "allowScreenShot", skip_serializing_if = "Option::is_none")]
    pub allow_screenshot: Option<bool>,
    /// Allow the Classroom app to observe this device's screen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_remote_screen_observation: Option<bool>,

    // Safari
    /// Allow the Safari app (false also blocks web clips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_safari: Option<bool>,
    /// Allow pop-up windows in Safari.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safari_allow_popups: Option<bool>,
    /// Allow JavaScript in Safari.
    #[serde(
        rename = "safariAllowJavaScript",
        skip_serializing_if = "Option::is_none"
    )]
    pub safari_allow_javascript: Option<bool>,
    /// Allow Safari AutoFill of passwords, contact details and cards.
    #[serde(
        rename = "safariAllowAutoFill",
        skip_serializing_if = "Option::is_none"
    )]
    pub safari_allow_autofill: Option<bool>,
    /// Force Safari's fraudulent-website warning on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safari_force_fraud_warning: Option<bool>,

    // iCloud and backups
    /// Allow backing up the device to iCloud.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_cloud_backup: Option<bool>,
    /// Allow document and key-value sync with iCloud.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_cloud_document_sync: Option<bool>,
    /// Allow iCloud Keychain sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_cloud_keychain_sync: Option<bool>,
    /// Allow iCloud Photos (false removes photos not fully downloaded to the device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_cloud_photo_library: Option<bool>,
    /// Allow managed apps to sync with iCloud.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_managed_apps_cloud_sync: Option<bool>,
    /// Allow iCloud Private Relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_cloud_private_relay: Option<bool>,
    /// Force backups to be encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_encrypted_backup: Option<bool>,

    // Content ratings
    /// Allow music, podcasts and videos marked explicit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_explicit_content: Option<bool>,
    /// Region whose rating scheme the rating values refer to (us, au, ca, de, fr, ie, jp, nz, gb);
    /// read by profile tools, not by devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating_region: Option<String>,
    /// Highest app age rating allowed (US labels): 0 none, 100 4+, 200 9+, 300 12+, 600 17+, 1000 all.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub rating_apps: Option<i64>,
    /// Highest movie rating allowed, 0 (none) to 1000 (all); steps depend on the region.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub rating_movies: Option<i64>,
    /// Highest TV show rating allowed, 0 (none) to 1000 (all); steps depend on the region.
    #[serde(rename = "ratingTVShows", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub rating_tv_shows: Option<i64>,

    // Game Center
    /// Allow Game Center.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_game_center: Option<bool>,
    /// Allow multiplayer games.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_multiplayer_gaming: Option<bool>,
    /// Allow adding Game Center friends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_adding_game_center_friends: Option<bool>,

    // Siri and the lock screen
    /// Allow Siri.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_assistant: Option<bool>,
    /// Allow Siri while the device is locked (only has an effect when a passcode is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_assistant_while_locked: Option<bool>,
    /// Allow Wallet notifications on the lock screen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_passbook_while_locked: Option<bool>,
    /// Allow Control Center on the lock screen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_lock_screen_control_center: Option<bool>,
    /// Allow the notification history view on the lock screen (new notifications still show).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_lock_screen_notifications_view: Option<bool>,

    // Device settings
    /// Allow users to install configuration profiles and certificates themselves.
    #[serde(
        rename = "allowUIConfigurationProfileInstallation",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_ui_configuration_profile_installation: Option<bool>,
    /// Allow adding, removing and changing accounts (Apple Account, Mail, Contacts, Calendar).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_account_modification: Option<bool>,
    /// Allow changing Bluetooth settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_bluetooth_modification: Option<bool>,
    /// Allow "Erase All Content and Settings" on the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_erase_content_and_settings: Option<bool>,
    /// Allow adding, changing or removing the passcode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_passcode_modification: Option<bool>,
    /// Allow Touch ID or Face ID to unlock the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_fingerprint_for_unlock: Option<bool>,
    /// Allow enrolling or removing Touch ID fingerprints and Face ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_fingerprint_modification: Option<bool>,
    /// Allow users to add VPN configurations.
    #[serde(rename = "allowVPNCreation", skip_serializing_if = "Option::is_none")]
    pub allow_vpn_creation: Option<bool>,
    /// Allow changing the device name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_device_name_modification: Option<bool>,
    /// Allow changing the wallpaper.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_wallpaper_modification: Option<bool>,
    /// Allow changing Personal Hotspot settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_personal_hotspot_modification: Option<bool>,
    /// Allow adding or removing eSIMs.
    #[serde(
        rename = "allowESIMModification",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_esim_modification: Option<bool>,
    /// Allow Find My Device in the Find My app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_find_my_device: Option<bool>,
    /// Allow pairing with computers other than the supervision host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_host_pairing: Option<bool>,
    /// Allow USB restricted mode; false lets USB accessories connect while locked (iOS) and new
    /// accessories connect without approval (macOS).
    #[serde(
        rename = "allowUSBRestrictedMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_usb_restricted_mode: Option<bool>,
    /// Allow sending diagnostic and usage data to Apple.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_diagnostic_submission: Option<bool>,
    /// Allow password AutoFill, saved-password prompts and strong-password suggestions.
    #[serde(
        rename = "allowPasswordAutoFill",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_password_autofill: Option<bool>,
    /// Force "Set Automatically" for date and time on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_automatic_date_and_time: Option<bool>,

    // Managed data flow
    /// Allow documents from managed apps and accounts to open in unmanaged ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_open_from_managed_to_unmanaged: Option<bool>,
    /// Allow documents from unmanaged apps and accounts to open in managed ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_open_from_unmanaged_to_managed: Option<bool>,
    /// Allow managed apps to write contacts to unmanaged accounts when managed-to-unmanaged opening
    /// is blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_managed_to_write_unmanaged_contacts: Option<bool>,
    /// Allow unmanaged apps to read managed contacts when managed-to-unmanaged opening is blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unmanaged_to_read_managed_contacts: Option<bool>,
    /// Apply the managed/unmanaged open-in rules to copy and paste as well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_managed_pasteboard: Option<bool>,
    /// Treat AirDrop as an unmanaged destination.
    #[serde(
        rename = "forceAirDropUnmanaged",
        skip_serializing_if = "Option::is_none"
    )]
    pub force_airdrop_unmanaged: Option<bool>,
    /// Allow AirDrop.
    #[serde(rename = "allowAirDrop", skip_serializing_if = "Option::is_none")]
    pub allow_airdrop: Option<bool>,
    /// Allow Handoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_activity_continuation: Option<bool>,
    /// Allow unlocking with an Apple Watch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_auto_unlock: Option<bool>,

    // Software updates
    /// Hide OS updates from users for `enforcedSoftwareUpdateDelay` days (30 if unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_delayed_software_updates: Option<bool>,
    /// Days (1-90) to hide an OS update after its release when updates are delayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 90))]
    pub enforced_software_update_delay: Option<i64>,

    // Apple Intelligence
    /// Allow creating Genmoji.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_genmoji: Option<bool>,
    /// Allow Image Playground image generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_image_playground: Option<bool>,
    /// Allow Apple Intelligence Writing Tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_writing_tools: Option<bool>,
}

impl RestrictionSettings {
    /// The keys that are set, with their plist values, in field order.
    pub fn entries(&self) -> Vec<(String, plist::Value)> {
        // Serde knows the Apple name of every field, and plist dictionaries keep serde's order.
        let Ok(plist::Value::Dictionary(set)) = plist::to_value(self) else {
            unreachable!("RestrictionSettings serializes to a plist dictionary")
        };
        set.into_iter().collect()
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// The payload's own keys (no `Payload*` keys: the profile builder adds those).
    pub fn to_payload_content(&self) -> plist::Dictionary {
        self.entries().into_iter().collect()
    }

    /// What devices of `platform` will not do with these settings: keys the platform ignores, and
    /// keys that only take effect there on supervised devices. One message per key.
    pub fn warnings_for(&self, platform: Platform) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter_map(|(key, _)| {
                let facts = facts(&key);
                if !facts.supported_on(platform) {
                    Some(format!(
                        "{key} is not supported on {platform}; devices on that platform ignore it",
                        platform = platform.as_str()
                    ))
                } else if facts.requires_supervision_on(platform) {
                    Some(format!(
                        "{key} requires supervision on {platform}; unsupervised devices ignore it",
                        platform = platform.as_str()
                    ))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Values the schema rules out: integers outside their range, strings outside the schema's
    /// list (`ratingRegion`), empty or repeated bundle IDs. Each message names the key and the fix.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (key, value) in self.entries() {
            let facts = facts(&key);
            if let (Some((min, max)), Some(number)) = (facts.range(), value.as_signed_integer()) {
                if !(min..=max).contains(&number) {
                    errors.push(format!(
                        "{key} is {number}; use a value from {min} to {max}"
                    ));
                }
            }
            if let (Some(allowed), Some(text)) = (facts.allowed_values(), value.as_string()) {
                if !allowed.iter().any(|a| a.as_str() == Some(text)) {
                    let listed: Vec<&str> = allowed.iter().filter_map(|a| a.as_str()).collect();
                    errors.push(format!(
                        "{key} {text:?} is not a value Apple's schema lists; use one of {}",
                        listed.join(", ")
                    ));
                }
            }
            if let Some(items) = value.as_array() {
                let ids: Vec<&str> = items.iter().filter_map(plist::Value::as_string).collect();
                for (index, id) in ids.iter().enumerate() {
                    if id.trim().is_empty() {
                        errors.push(format!(
                            "{key}[{index}] is empty; give a bundle ID or remove it"
                        ));
                    } else if ids[..index].contains(id) {
                        errors.push(format!(
                            "{key}[{index}] repeats {id:?}; remove the duplicate"
                        ));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;
    use std::path::PathBuf;

    const SCHEMA_FILE: &str =
        "apple-device-management/mdm/profiles/com.apple.applicationaccess.yaml";

    /// The JSON schema properties of `RestrictionSettings`: one per field, by Apple name.
    fn properties() -> serde_json::Map<String, Json> {
        let schema = schemars::schema_for!(RestrictionSettings);
        schema.as_value()["properties"]
            .as_object()
            .expect("RestrictionSettings has properties")
            .clone()
    }

    /// A property's JSON type, without the `null` that `Option` adds.
    fn json_type(property: &Json) -> &str {
        match &property["type"] {
            Json::String(kind) => kind,
            Json::Array(kinds) => kinds
                .iter()
                .filter_map(Json::as_str)
                .find(|kind| *kind != "null")
                .expect("a non-null type"),
            other => panic!("unexpected type {other}"),
        }
    }

    /// Every field set to a value the schema accepts, built from the fields themselves so that a
    /// new field is covered without being listed here.
    fn every_field_set() -> RestrictionSettings {
        let object: serde_json::Map<String, Json> = properties()
            .iter()
            .map(|(key, property)| {
                let facts = facts(key);
                let value = match json_type(property) {
                    "boolean" => Json::Bool(false),
                    "integer" => Json::from(facts.range().map_or(1, |(min, _)| min)),
                    "string" => facts
                        .allowed_values()
                        .and_then(|values| values.first().cloned())
                        .unwrap_or_else(|| Json::from("value")),
                    "array" => serde_json::json!(["com.example.app"]),
                    other => panic!("{key}: no sample for {other}"),
                };
                (key.clone(), value)
            })
            .collect();
        serde_json::from_value(Json::Object(object)).expect("every field set deserializes")
    }

    #[test]
    fn every_field_is_in_the_schema_digest_with_its_type_and_range() {
        let properties = properties();
        assert!(properties.len() >= 30, "only {} fields", properties.len());
        let schema = schemars::schema_for!(RestrictionSettings);
        assert_eq!(schema.as_value()["additionalProperties"], Json::Bool(false));
        for (key, property) in &properties {
            let facts = key_facts(PAYLOAD_TYPE, key)
                .unwrap_or_else(|| panic!("{key} is not a key of {PAYLOAD_TYPE}"));
            assert_eq!(json_type(property), facts.kind(), "{key}");
            if facts.kind() == "array" {
                assert_eq!(facts.item_kind(), Some("string"), "{key}");
            }
            // The CRD schema advertises the range validate() enforces.
            let advertised = (property["minimum"].as_i64(), property["maximum"].as_i64());
            let range = facts.range().map(|(min, max)| (Some(min), Some(max)));
            assert_eq!(advertised, range.unwrap_or((None, None)), "{key}");
            assert!(
                property["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{key} has no description"
            );
        }
    }

    /// The reference schema, or `None` (with a notice) when the checkout has no reference
    /// directory and `POMONA_REFERENCE_DIR` does not name one.
    fn reference_schema() -> Option<Json> {
        let configured = std::env::var_os("POMONA_REFERENCE_DIR").map(PathBuf::from);
        let dir = configured.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference")
        });
        if configured.is_none() && !dir.is_dir() {
            eprintln!(
                "notice: {} not found; set POMONA_REFERENCE_DIR to check the digest against \
                 Apple's schema",
                dir.display()
            );
            return None;
        }
        let path = dir.join(SCHEMA_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Some(
            serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display())),
        )
    }

    /// The schema's per-platform facts for one key: a key starts from the payload's
    /// `supportedOS` entry for that OS and its own entry overrides field by field.
    fn effective_os_entry(schema: &Json, key: &Json, os: &str) -> serde_json::Map<String, Json> {
        let mut merged = match &schema["payload"]["supportedOS"][os] {
            Json::Object(entry) => entry.clone(),
            _ => serde_json::Map::new(),
        };
        if let Json::Object(own) = &key["supportedOS"][os] {
            merged.extend(own.clone());
        }
        merged
    }

    /// Re-derives, from Apple's YAML, what the generated digest says about every field: a check
    /// of `scripts/gen-payload-schemas` independent of it.
    #[test]
    fn every_field_matches_the_reference_schema() {
        let Some(schema) = reference_schema() else {
            return;
        };
        assert_eq!(schema["payload"]["payloadtype"], PAYLOAD_TYPE);
        let keys = schema["payloadkeys"]
            .as_array()
            .expect("payloadkeys is a list");
        let mut problems = Vec::new();
        for name in properties().keys() {
            let Some(key) = keys.iter().find(|k| k["key"] == name.as_str()) else {
                problems.push(format!("{name}: not in payloadkeys"));
                continue;
            };
            let facts = facts(name);
            if key["type"] != format!("<{}>", facts.kind()) {
                problems.push(format!(
                    "{name}: type is {}, digest says {}",
                    key["type"],
                    facts.kind()
                ));
            }
            for platform in Platform::ALL {
                let entry = effective_os_entry(&schema, key, platform.schema_name());
                let introduced = entry.get("introduced").and_then(Json::as_str);
                let supported = introduced.is_some_and(|version| version != "n/a");
                let supervised = supported && entry.get("supervised") == Some(&Json::Bool(true));
                if facts.supported_on(platform) != supported
                    || facts.requires_supervision_on(platform) != supervised
                {
                    problems.push(format!(
                        "{name} on {}: schema says supported {supported}, supervised {supervised}",
                        platform.as_str()
                    ));
                }
                for retired in ["deprecated", "removed"] {
                    if let Some(version) = entry.get(retired).filter(|_| supported) {
                        problems.push(format!(
                            "{name}: {retired} in {} {version}; carry its replacement instead",
                            platform.as_str()
                        ));
                    }
                }
            }
            let range = (key["range"]["min"].as_i64(), key["range"]["max"].as_i64());
            let digest_range = facts.range().map(|(min, max)| (Some(min), Some(max)));
            if digest_range.unwrap_or((None, None)) != range {
                problems.push(format!(
                    "{name}: range {range:?}, digest says {:?}",
                    facts.range()
                ));
            }
            let listed = facts
                .allowed_values()
                .map(|values| Json::from(values.to_vec()));
            if key.get("rangelist").cloned() != listed {
                problems.push(format!("{name}: rangelist differs from the digest"));
            }
        }
        assert!(
            problems.is_empty(),
            "the digest disagrees with the schema (run scripts/gen-payload-schemas):\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn yaml_with_apple_key_names_deserializes() {
        let settings: RestrictionSettings = serde_saphyr::from_str(
            "allowCamera: false\n\
             ratingApps: 200\n\
             blockedAppBundleIDs:\n  - com.example.game\n",
        )
        .unwrap();
        assert_eq!(
            settings,
            RestrictionSettings {
                allow_camera: Some(false),
                rating_apps: Some(200),
                blocked_app_bundle_ids: Some(vec!["com.example.game".to_owned()]),
                ..Default::default()
            }
        );
        let again: RestrictionSettings =
            serde_saphyr::from_str(&serde_saphyr::to_string(&settings).unwrap()).unwrap();
        assert_eq!(again, settings);
        let everything = every_field_set();
        let json = serde_json::to_string(&everything).unwrap();
        assert_eq!(
            serde_json::from_str::<RestrictionSettings>(&json).unwrap(),
            everything
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let error = serde_saphyr::from_str::<RestrictionSettings>("allowCamra: false\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("allowCamra"), "{error}");
        // Rust field names are not accepted either: documents use Apple's names.
        let error = serde_saphyr::from_str::<RestrictionSettings>("allow_camera: false\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("allow_camera"), "{error}");
    }

    #[test]
    fn value_of_the_wrong_type_is_an_error() {
        assert!(serde_saphyr::from_str::<RestrictionSettings>("allowCamera: 7\n").is_err());
        assert!(serde_saphyr::from_str::<RestrictionSettings>("ratingApps: all\n").is_err());
        assert!(
            serde_saphyr::from_str::<RestrictionSettings>("blockedAppBundleIDs: com.x\n").is_err()
        );
    }

    #[test]
    fn restrictions_document_carries_typed_settings() {
        use crate::policy::model::{Document, RestrictionsSpec};
        let doc: Document<RestrictionsSpec> = serde_saphyr::from_str(
            "apiVersion: mdm.pomona.dev/v1alpha1\n\
             kind: Restrictions\n\
             metadata:\n  name: kiosk\n\
             spec:\n  groups: [kiosks]\n  settings:\n    allowCamera: false\n    allowSafari: false\n",
        )
        .unwrap();
        assert_eq!(doc.spec.settings.allow_camera, Some(false));
        assert_eq!(doc.spec.settings.allow_safari, Some(false));
        let typo =
            "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Restrictions\nmetadata:\n  name: k\n\
                    spec:\n  groups: [kiosks]\n  settings:\n    allowSafary: false\n";
        let error = serde_saphyr::from_str::<Document<RestrictionsSpec>>(typo)
            .unwrap_err()
            .to_string();
        assert!(error.contains("allowSafary"), "{error}");
    }

    #[test]
    fn payload_content_holds_only_the_set_keys_in_field_order() {
        assert!(RestrictionSettings::default().is_empty());
        assert!(RestrictionSettings::default()
            .to_payload_content()
            .is_empty());

        let settings = RestrictionSettings {
            enforced_software_update_delay: Some(14),
            allow_camera: Some(false),
            blocked_app_bundle_ids: Some(vec!["com.example.a".into(), "com.example.b".into()]),
            force_encrypted_backup: Some(true),
            ..Default::default()
        };
        assert!(!settings.is_empty());
        let content = settings.to_payload_content();
        let keys: Vec<&str> = content.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "blockedAppBundleIDs",
                "allowCamera",
                "forceEncryptedBackup",
                "enforcedSoftwareUpdateDelay"
            ]
        );
        assert!(keys.iter().all(|key| !key.starts_with("Payload")));
        assert_eq!(content["allowCamera"], plist::Value::Boolean(false));
        assert_eq!(content["forceEncryptedBackup"], plist::Value::Boolean(true));
        assert_eq!(
            content["enforcedSoftwareUpdateDelay"],
            plist::Value::Integer(14.into())
        );
        assert_eq!(
            content["blockedAppBundleIDs"],
            plist::Value::Array(vec![
                plist::Value::String("com.example.a".into()),
                plist::Value::String("com.example.b".into()),
            ])
        );
        // It is a valid plist dictionary as a device would receive it.
        let mut xml = Vec::new();
        plist::Value::Dictionary(content.clone())
            .to_writer_xml(&mut xml)
            .unwrap();
        let back = plist::Value::from_reader_xml(xml.as_slice()).unwrap();
        assert_eq!(back, plist::Value::Dictionary(content));
    }

    #[test]
    fn warnings_name_unsupported_platforms_and_supervision() {
        let settings = RestrictionSettings {
            allow_camera: Some(false),
            allow_safari: Some(false),
            allow_screenshot: Some(false),
            ..Default::default()
        };
        assert_eq!(
            settings.warnings_for(Platform::Ios),
            ["allowSafari requires supervision on iOS; unsupervised devices ignore it"]
        );
        assert_eq!(
            settings.warnings_for(Platform::IpadOs),
            ["allowSafari requires supervision on iPadOS; unsupervised devices ignore it"]
        );
        assert_eq!(
            settings.warnings_for(Platform::MacOs),
            ["allowSafari is not supported on macOS; devices on that platform ignore it"]
        );
        assert_eq!(
            settings.warnings_for(Platform::WatchOs),
            [
                "allowCamera is not supported on watchOS; devices on that platform ignore it",
                "allowSafari is not supported on watchOS; devices on that platform ignore it",
            ]
        );
        assert!(RestrictionSettings::default()
            .warnings_for(Platform::TvOs)
            .is_empty());
        // Every set key yields at most one message per platform.
        for platform in Platform::ALL {
            let everything = every_field_set();
            assert!(everything.warnings_for(platform).len() <= everything.entries().len());
        }
    }

    #[test]
    fn ipados_follows_ios_and_supervision_implies_support() {
        for key in properties().keys() {
            let facts = facts(key);
            for ask in [KeyFacts::supported_on, KeyFacts::requires_supervision_on] {
                assert_eq!(
                    ask(&facts, Platform::Ios),
                    ask(&facts, Platform::IpadOs),
                    "{key}"
                );
            }
            for platform in Platform::ALL {
                if facts.requires_supervision_on(platform) {
                    assert!(facts.supported_on(platform), "{key}");
                }
            }
        }
    }

    #[test]
    fn validate_rejects_values_outside_the_schema() {
        assert_eq!(every_field_set().validate(), Ok(()));
        let settings = RestrictionSettings {
            enforced_software_update_delay: Some(120),
            rating_apps: Some(-1),
            rating_region: Some("xx".into()),
            blocked_app_bundle_ids: Some(vec!["com.a".into(), " ".into(), "com.a".into()]),
            ..Default::default()
        };
        let errors = settings.validate().unwrap_err();
        assert_eq!(
            errors,
            [
                // In field order.
                "blockedAppBundleIDs[1] is empty; give a bundle ID or remove it",
                "blockedAppBundleIDs[2] repeats \"com.a\"; remove the duplicate",
                "ratingRegion \"xx\" is not a value Apple's schema lists; use one of us, au, ca, \
                 de, fr, ie, jp, nz, gb",
                "ratingApps is -1; use a value from 0 to 1000",
                "enforcedSoftwareUpdateDelay is 120; use a value from 1 to 90",
            ]
        );
    }
}
