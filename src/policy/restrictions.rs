//! The typed subset of the Restrictions payload (`com.apple.applicationaccess`) that policy
//! documents declare, and its platform table: for every key, the platforms that honour it and the
//! platforms where it only works on supervised devices, as Apple's schema states them
//! (`reference/apple-device-management`, release iOS 18.1 / macOS 15.1). It turns declared
//! settings into payload content, validation errors and per-platform warnings. It does no I/O
//! (only its tests read the reference schema), and it knows nothing of devices, profiles
//! as a whole or the store.

use super::model::Platform;
use super::model::Platform::{Ios, IpadOs, MacOs, TvOs, VisionOs, WatchOs};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `PayloadType` of the Restrictions payload.
pub const PAYLOAD_TYPE: &str = "com.apple.applicationaccess";

/// The plist type of a restriction key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Boolean,
    Integer,
    String,
    /// An array of strings.
    StringArray,
}

/// What the schema says about one key of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// Apple's key, as it appears in the payload.
    pub key: &'static str,
    pub kind: ValueKind,
    /// Platforms whose devices honour the key (iPadOS as iOS: the schema describes both as iOS).
    pub platforms: &'static [Platform],
    /// Platforms on which the key only takes effect on supervised devices.
    pub supervised_only_on: &'static [Platform],
}

impl KeyInfo {
    pub fn supported_on(&self, platform: Platform) -> bool {
        self.platforms.contains(&platform)
    }

    pub fn requires_supervision_on(&self, platform: Platform) -> bool {
        self.supervised_only_on.contains(&platform)
    }
}

const fn entry(
    key: &'static str,
    kind: ValueKind,
    platforms: &'static [Platform],
    supervised_only_on: &'static [Platform],
) -> KeyInfo {
    KeyInfo {
        key,
        kind,
        platforms,
        supervised_only_on,
    }
}

/// Every key `RestrictionSettings` can carry, in field order. Derived from
/// `mdm/profiles/com.apple.applicationaccess.yaml`: a key inherits the payload's `supportedOS`
/// per platform and overrides it field by field, so an absent platform or an absent
/// `introduced` means "as the payload" (iOS 4.0, macOS 10.7, tvOS 9.0, visionOS 1.1,
/// watchOS 10.0) and `introduced: n/a` means unsupported. The test
/// `every_key_matches_the_reference_schema` re-derives each row from the YAML.
pub static KEYS: &[KeyInfo] = &[
    // Apps and the App Store
    entry(
        "allowAppInstallation",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs, WatchOs],
        &[Ios, IpadOs, VisionOs, WatchOs],
    ),
    entry(
        "allowUIAppInstallation",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs, WatchOs],
        &[Ios, IpadOs, VisionOs, WatchOs],
    ),
    entry(
        "allowAppRemoval",
        ValueKind::Boolean,
        &[Ios, IpadOs, WatchOs],
        &[Ios, IpadOs, WatchOs],
    ),
    entry(
        "allowSystemAppRemoval",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "allowInAppPurchases",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[],
    ),
    entry(
        "allowAutomaticAppDownloads",
        ValueKind::Boolean,
        &[Ios, IpadOs, WatchOs],
        &[Ios, IpadOs, WatchOs],
    ),
    entry(
        "allowEnterpriseAppTrust",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "allowAppClips",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowMarketplaceAppInstallation",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[Ios, IpadOs],
    ),
    entry(
        "blockedAppBundleIDs",
        ValueKind::StringArray,
        &[Ios, IpadOs, TvOs],
        &[Ios, IpadOs, TvOs],
    ),
    entry(
        "allowListedAppBundleIDs",
        ValueKind::StringArray,
        &[Ios, IpadOs, TvOs],
        &[Ios, IpadOs, TvOs],
    ),
    // Camera and screen
    entry(
        "allowCamera",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, TvOs, VisionOs],
        &[],
    ),
    entry(
        "allowScreenShot",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs, WatchOs],
        &[],
    ),
    entry(
        "allowRemoteScreenObservation",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[],
    ),
    // Safari
    entry(
        "allowSafari",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[Ios, IpadOs],
    ),
    entry("safariAllowPopups", ValueKind::Boolean, &[Ios, IpadOs], &[]),
    entry(
        "safariAllowJavaScript",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[],
    ),
    entry(
        "safariAllowAutoFill",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "safariForceFraudWarning",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[],
    ),
    // iCloud and backups
    entry(
        "allowCloudBackup",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "allowCloudDocumentSync",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "allowCloudKeychainSync",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[],
    ),
    entry(
        "allowCloudPhotoLibrary",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[],
    ),
    entry(
        "allowManagedAppsCloudSync",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "allowCloudPrivateRelay",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "forceEncryptedBackup",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[],
    ),
    // Content ratings
    entry(
        "allowExplicitContent",
        ValueKind::Boolean,
        &[Ios, IpadOs, TvOs],
        &[Ios, IpadOs, TvOs],
    ),
    entry(
        "ratingRegion",
        ValueKind::String,
        &[Ios, IpadOs, MacOs, TvOs],
        &[],
    ),
    entry("ratingApps", ValueKind::Integer, &[Ios, IpadOs, TvOs], &[]),
    entry(
        "ratingMovies",
        ValueKind::Integer,
        &[Ios, IpadOs, TvOs],
        &[],
    ),
    entry(
        "ratingTVShows",
        ValueKind::Integer,
        &[Ios, IpadOs, TvOs],
        &[],
    ),
    // Game Center
    entry(
        "allowGameCenter",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowMultiplayerGaming",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowAddingGameCenterFriends",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    // Siri and the lock screen
    entry(
        "allowAssistant",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[],
    ),
    entry(
        "allowAssistantWhileLocked",
        ValueKind::Boolean,
        &[Ios, IpadOs, WatchOs],
        &[],
    ),
    entry(
        "allowPassbookWhileLocked",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[],
    ),
    entry(
        "allowLockScreenControlCenter",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[],
    ),
    entry(
        "allowLockScreenNotificationsView",
        ValueKind::Boolean,
        &[Ios, IpadOs, WatchOs],
        &[],
    ),
    // Device settings
    entry(
        "allowUIConfigurationProfileInstallation",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "allowAccountModification",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs, WatchOs],
        &[Ios, IpadOs, VisionOs, WatchOs],
    ),
    entry(
        "allowBluetoothModification",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowEraseContentAndSettings",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "allowPasscodeModification",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "allowFingerprintForUnlock",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[],
    ),
    entry(
        "allowFingerprintModification",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "allowVPNCreation",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "allowDeviceNameModification",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, TvOs, VisionOs],
        &[Ios, IpadOs, TvOs, VisionOs],
    ),
    entry(
        "allowWallpaperModification",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowPersonalHotspotModification",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowESIMModification",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowFindMyDevice",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowHostPairing",
        ValueKind::Boolean,
        &[Ios, IpadOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowUSBRestrictedMode",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowDiagnosticSubmission",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs, WatchOs],
        &[],
    ),
    entry(
        "allowPasswordAutoFill",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "forceAutomaticDateAndTime",
        ValueKind::Boolean,
        &[Ios, IpadOs, TvOs, VisionOs],
        &[Ios, IpadOs, TvOs, VisionOs],
    ),
    // Managed data flow
    entry(
        "allowOpenFromManagedToUnmanaged",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "allowOpenFromUnmanagedToManaged",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "allowManagedToWriteUnmanagedContacts",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "allowUnmanagedToReadManagedContacts",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "requireManagedPasteboard",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "forceAirDropUnmanaged",
        ValueKind::Boolean,
        &[Ios, IpadOs, VisionOs],
        &[],
    ),
    entry(
        "allowAirDrop",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[Ios, IpadOs, VisionOs],
    ),
    entry(
        "allowActivityContinuation",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, VisionOs],
        &[],
    ),
    entry(
        "allowAutoUnlock",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[],
    ),
    // Software updates
    entry(
        "forceDelayedSoftwareUpdates",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs, TvOs],
        &[Ios, IpadOs, TvOs],
    ),
    entry(
        "enforcedSoftwareUpdateDelay",
        ValueKind::Integer,
        &[Ios, IpadOs, MacOs, TvOs],
        &[Ios, IpadOs, TvOs],
    ),
    // Apple Intelligence
    entry(
        "allowGenmoji",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowImagePlayground",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
    entry(
        "allowWritingTools",
        ValueKind::Boolean,
        &[Ios, IpadOs, MacOs],
        &[Ios, IpadOs],
    ),
];

/// The schema's `range` for the integer keys we carry (inclusive).
const INTEGER_RANGES: &[(&str, i64, i64)] = &[
    ("ratingApps", 0, 1000),
    ("ratingMovies", 0, 1000),
    ("ratingTVShows", 0, 1000),
    ("enforcedSoftwareUpdateDelay", 1, 90),
];

/// The schema's `rangelist` for `ratingRegion`.
pub const RATING_REGIONS: &[&str] = &["us", "au", "ca", "de", "fr", "ie", "jp", "nz", "gb"];

/// The schema row for an Apple key, if `RestrictionSettings` carries it.
pub fn key_info(key: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|info| info.key == key)
}

/// Restrictions (`com.apple.applicationaccess`) as declared in a `Restrictions` document. Keys
/// use Apple's names; unset keys are left out of the payload, so devices keep Apple's defaults
/// (nearly all permissive: `allow*` true, `force*` false). Unknown keys are errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictionSettings {
    // Apps and the App Store
    /// Allow installing apps at all; false also blocks the App Store, alternative marketplaces and
    /// local installs (MDM can still install).
    #[serde(
        rename = "allowAppInstallation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_app_installation: Option<bool>,
    /// Allow the App Store app; false hides it while local, marketplace and MDM installs keep
    /// working.
    #[serde(
        rename = "allowUIAppInstallation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_ui_app_installation: Option<bool>,
    /// Allow users to delete apps.
    #[serde(
        rename = "allowAppRemoval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_app_removal: Option<bool>,
    /// Allow users to delete Apple's built-in apps.
    #[serde(
        rename = "allowSystemAppRemoval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_system_app_removal: Option<bool>,
    /// Allow in-app purchases.
    #[serde(
        rename = "allowInAppPurchases",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_in_app_purchases: Option<bool>,
    /// Allow apps bought on other devices to download automatically (app updates are unaffected).
    #[serde(
        rename = "allowAutomaticAppDownloads",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_automatic_app_downloads: Option<bool>,
    /// Allow users to trust enterprise and developer app signers in Settings.
    #[serde(
        rename = "allowEnterpriseAppTrust",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_enterprise_app_trust: Option<bool>,
    /// Allow App Clips; false also removes App Clips already on the device.
    #[serde(
        rename = "allowAppClips",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_app_clips: Option<bool>,
    /// Allow installing apps from alternative marketplaces.
    #[serde(
        rename = "allowMarketplaceAppInstallation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_marketplace_app_installation: Option<bool>,
    /// Bundle IDs of apps that may not be shown or launched (`com.apple.webapp` covers all web
    /// clips).
    #[serde(
        rename = "blockedAppBundleIDs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub blocked_app_bundle_ids: Option<Vec<String>>,
    /// If set, only apps with these bundle IDs may be shown or launched (`com.apple.webapp` covers
    /// all web clips).
    #[serde(
        rename = "allowListedAppBundleIDs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_listed_app_bundle_ids: Option<Vec<String>>,

    // Camera and screen
    /// Allow the camera; false disables it and hides the Camera app.
    #[serde(
        rename = "allowCamera",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_camera: Option<bool>,
    /// Allow screenshots and screen recordings (false also stops Classroom screen observation).
    #[serde(
        rename = "allowScreenShot",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_screenshot: Option<bool>,
    /// Allow the Classroom app to observe this device's screen.
    #[serde(
        rename = "allowRemoteScreenObservation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_remote_screen_observation: Option<bool>,

    // Safari
    /// Allow the Safari app (false also blocks web clips).
    #[serde(
        rename = "allowSafari",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_safari: Option<bool>,
    /// Allow pop-up windows in Safari.
    #[serde(
        rename = "safariAllowPopups",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub safari_allow_popups: Option<bool>,
    /// Allow JavaScript in Safari.
    #[serde(
        rename = "safariAllowJavaScript",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub safari_allow_javascript: Option<bool>,
    /// Allow Safari AutoFill of passwords, contact details and cards.
    #[serde(
        rename = "safariAllowAutoFill",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub safari_allow_autofill: Option<bool>,
    /// Force Safari's fraudulent-website warning on.
    #[serde(
        rename = "safariForceFraudWarning",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub safari_force_fraud_warning: Option<bool>,

    // iCloud and backups
    /// Allow backing up the device to iCloud.
    #[serde(
        rename = "allowCloudBackup",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_cloud_backup: Option<bool>,
    /// Allow document and key-value sync with iCloud.
    #[serde(
        rename = "allowCloudDocumentSync",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_cloud_document_sync: Option<bool>,
    /// Allow iCloud Keychain sync.
    #[serde(
        rename = "allowCloudKeychainSync",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_cloud_keychain_sync: Option<bool>,
    /// Allow iCloud Photos (false removes photos not fully downloaded to the device).
    #[serde(
        rename = "allowCloudPhotoLibrary",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_cloud_photo_library: Option<bool>,
    /// Allow managed apps to sync with iCloud.
    #[serde(
        rename = "allowManagedAppsCloudSync",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_managed_apps_cloud_sync: Option<bool>,
    /// Allow iCloud Private Relay.
    #[serde(
        rename = "allowCloudPrivateRelay",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_cloud_private_relay: Option<bool>,
    /// Force backups to be encrypted.
    #[serde(
        rename = "forceEncryptedBackup",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub force_encrypted_backup: Option<bool>,

    // Content ratings
    /// Allow music, podcasts and videos marked explicit.
    #[serde(
        rename = "allowExplicitContent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_explicit_content: Option<bool>,
    /// Region whose rating scheme the rating values refer to (us, au, ca, de, fr, ie, jp, nz, gb);
    /// read by profile tools, not by devices.
    #[serde(
        rename = "ratingRegion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rating_region: Option<String>,
    /// Highest app age rating allowed (US labels): 0 none, 100 4+, 200 9+, 300 12+, 600 17+, 1000 all.
    #[serde(
        rename = "ratingApps",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 1000))]
    pub rating_apps: Option<i64>,
    /// Highest movie rating allowed, 0 (none) to 1000 (all); steps depend on the region.
    #[serde(
        rename = "ratingMovies",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 1000))]
    pub rating_movies: Option<i64>,
    /// Highest TV show rating allowed, 0 (none) to 1000 (all); steps depend on the region.
    #[serde(
        rename = "ratingTVShows",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 1000))]
    pub rating_tv_shows: Option<i64>,

    // Game Center
    /// Allow Game Center.
    #[serde(
        rename = "allowGameCenter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_game_center: Option<bool>,
    /// Allow multiplayer games.
    #[serde(
        rename = "allowMultiplayerGaming",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_multiplayer_gaming: Option<bool>,
    /// Allow adding Game Center friends.
    #[serde(
        rename = "allowAddingGameCenterFriends",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_adding_game_center_friends: Option<bool>,

    // Siri and the lock screen
    /// Allow Siri.
    #[serde(
        rename = "allowAssistant",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_assistant: Option<bool>,
    /// Allow Siri while the device is locked (only has an effect when a passcode is set).
    #[serde(
        rename = "allowAssistantWhileLocked",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_assistant_while_locked: Option<bool>,
    /// Allow Wallet notifications on the lock screen.
    #[serde(
        rename = "allowPassbookWhileLocked",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_passbook_while_locked: Option<bool>,
    /// Allow Control Center on the lock screen.
    #[serde(
        rename = "allowLockScreenControlCenter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_lock_screen_control_center: Option<bool>,
    /// Allow the notification history view on the lock screen (new notifications still show).
    #[serde(
        rename = "allowLockScreenNotificationsView",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_lock_screen_notifications_view: Option<bool>,

    // Device settings
    /// Allow users to install configuration profiles and certificates themselves.
    #[serde(
        rename = "allowUIConfigurationProfileInstallation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_ui_configuration_profile_installation: Option<bool>,
    /// Allow adding, removing and changing accounts (Apple Account, Mail, Contacts, Calendar).
    #[serde(
        rename = "allowAccountModification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_account_modification: Option<bool>,
    /// Allow changing Bluetooth settings.
    #[serde(
        rename = "allowBluetoothModification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_bluetooth_modification: Option<bool>,
    /// Allow "Erase All Content and Settings" on the device.
    #[serde(
        rename = "allowEraseContentAndSettings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_erase_content_and_settings: Option<bool>,
    /// Allow adding, changing or removing the passcode.
    #[serde(
        rename = "allowPasscodeModification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_passcode_modification: Option<bool>,
    /// Allow Touch ID or Face ID to unlock the device.
    #[serde(
        rename = "allowFingerprintForUnlock",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_fingerprint_for_unlock: Option<bool>,
    /// Allow enrolling or removing Touch ID fingerprints and Face ID.
    #[serde(
        rename = "allowFingerprintModification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_fingerprint_modification: Option<bool>,
    /// Allow users to add VPN configurations.
    #[serde(
        rename = "allowVPNCreation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_vpn_creation: Option<bool>,
    /// Allow changing the device name.
    #[serde(
        rename = "allowDeviceNameModification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_device_name_modification: Option<bool>,
    /// Allow changing the wallpaper.
    #[serde(
        rename = "allowWallpaperModification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_wallpaper_modification: Option<bool>,
    /// Allow changing Personal Hotspot settings.
    #[serde(
        rename = "allowPersonalHotspotModification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_personal_hotspot_modification: Option<bool>,
    /// Allow adding or removing eSIMs.
    #[serde(
        rename = "allowESIMModification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_esim_modification: Option<bool>,
    /// Allow Find My Device in the Find My app.
    #[serde(
        rename = "allowFindMyDevice",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_find_my_device: Option<bool>,
    /// Allow pairing with computers other than the supervision host.
    #[serde(
        rename = "allowHostPairing",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_host_pairing: Option<bool>,
    /// Allow USB restricted mode; false lets USB accessories connect while locked (iOS) and new
    /// accessories connect without approval (macOS).
    #[serde(
        rename = "allowUSBRestrictedMode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_usb_restricted_mode: Option<bool>,
    /// Allow sending diagnostic and usage data to Apple.
    #[serde(
        rename = "allowDiagnosticSubmission",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_diagnostic_submission: Option<bool>,
    /// Allow password AutoFill, saved-password prompts and strong-password suggestions.
    #[serde(
        rename = "allowPasswordAutoFill",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_password_autofill: Option<bool>,
    /// Force "Set Automatically" for date and time on.
    #[serde(
        rename = "forceAutomaticDateAndTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub force_automatic_date_and_time: Option<bool>,

    // Managed data flow
    /// Allow documents from managed apps and accounts to open in unmanaged ones.
    #[serde(
        rename = "allowOpenFromManagedToUnmanaged",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_open_from_managed_to_unmanaged: Option<bool>,
    /// Allow documents from unmanaged apps and accounts to open in managed ones.
    #[serde(
        rename = "allowOpenFromUnmanagedToManaged",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_open_from_unmanaged_to_managed: Option<bool>,
    /// Allow managed apps to write contacts to unmanaged accounts when managed-to-unmanaged opening
    /// is blocked.
    #[serde(
        rename = "allowManagedToWriteUnmanagedContacts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_managed_to_write_unmanaged_contacts: Option<bool>,
    /// Allow unmanaged apps to read managed contacts when managed-to-unmanaged opening is blocked.
    #[serde(
        rename = "allowUnmanagedToReadManagedContacts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_unmanaged_to_read_managed_contacts: Option<bool>,
    /// Apply the managed/unmanaged open-in rules to copy and paste as well.
    #[serde(
        rename = "requireManagedPasteboard",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub require_managed_pasteboard: Option<bool>,
    /// Treat AirDrop as an unmanaged destination.
    #[serde(
        rename = "forceAirDropUnmanaged",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub force_airdrop_unmanaged: Option<bool>,
    /// Allow AirDrop.
    #[serde(
        rename = "allowAirDrop",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_airdrop: Option<bool>,
    /// Allow Handoff.
    #[serde(
        rename = "allowActivityContinuation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_activity_continuation: Option<bool>,
    /// Allow unlocking with an Apple Watch.
    #[serde(
        rename = "allowAutoUnlock",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_auto_unlock: Option<bool>,

    // Software updates
    /// Hide OS updates from users for `enforcedSoftwareUpdateDelay` days (30 if unset).
    #[serde(
        rename = "forceDelayedSoftwareUpdates",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub force_delayed_software_updates: Option<bool>,
    /// Days (1-90) to hide an OS update after its release when updates are delayed.
    #[serde(
        rename = "enforcedSoftwareUpdateDelay",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 90))]
    pub enforced_software_update_delay: Option<i64>,

    // Apple Intelligence
    /// Allow creating Genmoji.
    #[serde(
        rename = "allowGenmoji",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_genmoji: Option<bool>,
    /// Allow Image Playground image generation.
    #[serde(
        rename = "allowImagePlayground",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_image_playground: Option<bool>,
    /// Allow Apple Intelligence Writing Tools.
    #[serde(
        rename = "allowWritingTools",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_writing_tools: Option<bool>,
}

impl RestrictionSettings {
    /// The keys that are set, with their plist values, in `KEYS` order.
    pub fn entries(&self) -> Vec<(&'static str, plist::Value)> {
        // Serde knows the Apple name of every field; `KEYS` gives the order.
        let Ok(plist::Value::Dictionary(mut set)) = plist::to_value(self) else {
            unreachable!("RestrictionSettings serializes to a plist dictionary")
        };
        let entries: Vec<_> = KEYS
            .iter()
            .filter_map(|info| set.remove(info.key).map(|value| (info.key, value)))
            .collect();
        debug_assert!(set.is_empty(), "fields missing from KEYS: {set:?}");
        entries
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// The payload's own keys (no `Payload*` keys: the profile builder adds those).
    pub fn to_payload_content(&self) -> plist::Dictionary {
        self.entries()
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }

    /// What devices of `platform` will not do with these settings: keys the platform ignores, and
    /// keys that only take effect there on supervised devices. One message per key.
    pub fn warnings_for(&self, platform: Platform) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter_map(|(key, _)| {
                let info = key_info(key)?;
                if !info.supported_on(platform) {
                    Some(format!(
                        "{key} is not supported on {platform}; devices on that platform ignore it",
                        platform = platform.as_str()
                    ))
                } else if info.requires_supervision_on(platform) {
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

    /// Values the schema rules out: integers outside their range, an unknown `ratingRegion`, empty
    /// or repeated bundle IDs. Each message names the key and the fix.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (key, value) in self.entries() {
            let (Some(value), Some(&(_, min, max))) = (
                value.as_signed_integer(),
                INTEGER_RANGES.iter().find(|range| range.0 == key),
            ) else {
                continue;
            };
            if !(min..=max).contains(&value) {
                errors.push(format!("{key} is {value}; use a value from {min} to {max}"));
            }
        }
        if let Some(region) = self
            .rating_region
            .as_deref()
            .filter(|r| !RATING_REGIONS.contains(r))
        {
            errors.push(format!(
                "ratingRegion {region:?} is not a region Apple defines ratings for; use one of {}",
                RATING_REGIONS.join(", ")
            ));
        }
        for (key, ids) in [
            ("blockedAppBundleIDs", &self.blocked_app_bundle_ids),
            ("allowListedAppBundleIDs", &self.allow_listed_app_bundle_ids),
        ] {
            let Some(ids) = ids else { continue };
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
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    const SCHEMA_FILE: &str =
        "apple-device-management/mdm/profiles/com.apple.applicationaccess.yaml";

    /// Every field set, written without `..Default::default()` so that a new field does not
    /// compile until it is added here (and then must have a `KEYS` row, see below).
    fn every_field_set() -> RestrictionSettings {
        let ids = || Some(vec!["com.example.app".to_owned()]);
        RestrictionSettings {
            allow_app_installation: Some(false),
            allow_ui_app_installation: Some(false),
            allow_app_removal: Some(false),
            allow_system_app_removal: Some(false),
            allow_in_app_purchases: Some(false),
            allow_automatic_app_downloads: Some(false),
            allow_enterprise_app_trust: Some(false),
            allow_app_clips: Some(false),
            allow_marketplace_app_installation: Some(false),
            blocked_app_bundle_ids: ids(),
            allow_listed_app_bundle_ids: ids(),
            allow_camera: Some(false),
            allow_screenshot: Some(false),
            allow_remote_screen_observation: Some(false),
            allow_safari: Some(false),
            safari_allow_popups: Some(false),
            safari_allow_javascript: Some(false),
            safari_allow_autofill: Some(false),
            safari_force_fraud_warning: Some(true),
            allow_cloud_backup: Some(false),
            allow_cloud_document_sync: Some(false),
            allow_cloud_keychain_sync: Some(false),
            allow_cloud_photo_library: Some(false),
            allow_managed_apps_cloud_sync: Some(false),
            allow_cloud_private_relay: Some(false),
            force_encrypted_backup: Some(true),
            allow_explicit_content: Some(false),
            rating_region: Some("us".to_owned()),
            rating_apps: Some(300),
            rating_movies: Some(300),
            rating_tv_shows: Some(300),
            allow_game_center: Some(false),
            allow_multiplayer_gaming: Some(false),
            allow_adding_game_center_friends: Some(false),
            allow_assistant: Some(false),
            allow_assistant_while_locked: Some(false),
            allow_passbook_while_locked: Some(false),
            allow_lock_screen_control_center: Some(false),
            allow_lock_screen_notifications_view: Some(false),
            allow_ui_configuration_profile_installation: Some(false),
            allow_account_modification: Some(false),
            allow_bluetooth_modification: Some(false),
            allow_erase_content_and_settings: Some(false),
            allow_passcode_modification: Some(false),
            allow_fingerprint_for_unlock: Some(false),
            allow_fingerprint_modification: Some(false),
            allow_vpn_creation: Some(false),
            allow_device_name_modification: Some(false),
            allow_wallpaper_modification: Some(false),
            allow_personal_hotspot_modification: Some(false),
            allow_esim_modification: Some(false),
            allow_find_my_device: Some(false),
            allow_host_pairing: Some(false),
            allow_usb_restricted_mode: Some(false),
            allow_diagnostic_submission: Some(false),
            allow_password_autofill: Some(false),
            force_automatic_date_and_time: Some(true),
            allow_open_from_managed_to_unmanaged: Some(false),
            allow_open_from_unmanaged_to_managed: Some(false),
            allow_managed_to_write_unmanaged_contacts: Some(true),
            allow_unmanaged_to_read_managed_contacts: Some(true),
            require_managed_pasteboard: Some(true),
            force_airdrop_unmanaged: Some(true),
            allow_airdrop: Some(false),
            allow_activity_continuation: Some(false),
            allow_auto_unlock: Some(false),
            force_delayed_software_updates: Some(true),
            enforced_software_update_delay: Some(30),
            allow_genmoji: Some(false),
            allow_image_playground: Some(false),
            allow_writing_tools: Some(false),
        }
    }

    fn table_keys() -> Vec<&'static str> {
        KEYS.iter().map(|info| info.key).collect()
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
                "notice: {} not found; set POMONA_REFERENCE_DIR to check KEYS against Apple's \
                 schema",
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

    fn schema_type(kind: ValueKind) -> &'static str {
        match kind {
            ValueKind::Boolean => "<boolean>",
            ValueKind::Integer => "<integer>",
            ValueKind::String => "<string>",
            ValueKind::StringArray => "<array>",
        }
    }

    #[test]
    fn every_key_matches_the_reference_schema() {
        let Some(schema) = reference_schema() else {
            return;
        };
        assert_eq!(schema["payload"]["payloadtype"], PAYLOAD_TYPE);
        let keys = schema["payloadkeys"]
            .as_array()
            .expect("payloadkeys is a list");
        let mut problems = Vec::new();
        for info in KEYS {
            let Some(key) = keys.iter().find(|k| k["key"] == info.key) else {
                problems.push(format!("{}: not in payloadkeys", info.key));
                continue;
            };
            if key["type"] != schema_type(info.kind) {
                problems.push(format!(
                    "{}: type is {}, table says {:?}",
                    info.key, key["type"], info.kind
                ));
            }
            if info.kind == ValueKind::StringArray && key["subkeys"][0]["type"] != "<string>" {
                problems.push(format!("{}: array items are not strings", info.key));
            }
            let mut supported = Vec::new();
            let mut supervised = Vec::new();
            for platform in Platform::ALL {
                let entry = effective_os_entry(&schema, key, platform.schema_name());
                let introduced = entry.get("introduced").and_then(Json::as_str);
                if introduced.is_none_or(|version| version == "n/a") {
                    continue;
                }
                supported.push(platform);
                if entry.get("supervised") == Some(&Json::Bool(true)) {
                    supervised.push(platform);
                }
                for retired in ["deprecated", "removed"] {
                    if let Some(version) = entry.get(retired) {
                        problems.push(format!(
                            "{}: {retired} in {} {version}; carry its replacement instead",
                            info.key,
                            platform.as_str()
                        ));
                    }
                }
            }
            if info.platforms != supported {
                problems.push(format!(
                    "{}: platforms {:?}, schema says {supported:?}",
                    info.key, info.platforms
                ));
            }
            if info.supervised_only_on != supervised {
                problems.push(format!(
                    "{}: supervised_only_on {:?}, schema says {supervised:?}",
                    info.key, info.supervised_only_on
                ));
            }
            if info.kind == ValueKind::Integer {
                let ours = INTEGER_RANGES.iter().find(|range| range.0 == info.key);
                let theirs = (key["range"]["min"].as_i64(), key["range"]["max"].as_i64());
                match (ours, theirs) {
                    (Some(&(_, min, max)), (Some(smin), Some(smax)))
                        if (min, max) == (smin, smax) => {}
                    _ => problems.push(format!(
                        "{}: INTEGER_RANGES has {ours:?}, schema range is {theirs:?}",
                        info.key
                    )),
                }
            }
        }
        let regions = keys
            .iter()
            .find(|k| k["key"] == "ratingRegion")
            .map(|k| k["rangelist"].clone());
        assert_eq!(regions, Some(serde_json::json!(RATING_REGIONS)));
        assert!(
            problems.is_empty(),
            "KEYS disagrees with the schema:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn keys_table_has_one_row_per_field_in_field_order() {
        assert!(KEYS.len() >= 30, "only {} keys", KEYS.len());
        let unique: BTreeSet<_> = table_keys().into_iter().collect();
        assert_eq!(unique.len(), KEYS.len(), "a key appears twice in KEYS");

        // plist dictionaries keep insertion order, which is serde's field order.
        let plist::Value::Dictionary(serialized) = plist::to_value(&every_field_set()).unwrap()
        else {
            panic!("settings serialize to a dictionary")
        };
        let field_keys: Vec<&str> = serialized.keys().map(String::as_str).collect();
        assert_eq!(field_keys, table_keys());

        let entries = every_field_set().entries();
        assert_eq!(
            entries.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            table_keys()
        );
        for (key, value) in &entries {
            let kind = key_info(key).unwrap().kind;
            let matches = match value {
                plist::Value::Boolean(_) => kind == ValueKind::Boolean,
                plist::Value::Integer(_) => kind == ValueKind::Integer,
                plist::Value::String(_) => kind == ValueKind::String,
                plist::Value::Array(items) => {
                    kind == ValueKind::StringArray
                        && items.iter().all(|item| item.as_string().is_some())
                }
                _ => false,
            };
            assert!(matches, "{key}: value {value:?} is not a {kind:?}");
        }
    }

    #[test]
    fn json_schema_describes_exactly_the_table_keys() {
        let schema = schemars::schema_for!(RestrictionSettings);
        let schema = schema.as_value();
        let properties = schema["properties"].as_object().expect("properties");
        let names: BTreeSet<&str> = properties.keys().map(String::as_str).collect();
        assert_eq!(names, table_keys().into_iter().collect::<BTreeSet<_>>());
        assert_eq!(schema["additionalProperties"], Json::Bool(false));
        for (name, property) in properties {
            assert!(
                property["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{name} has no description"
            );
        }
        assert_eq!(properties["enforcedSoftwareUpdateDelay"]["minimum"], 1);
        assert_eq!(properties["enforcedSoftwareUpdateDelay"]["maximum"], 90);
        assert_eq!(properties["ratingApps"]["maximum"], 1000);
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
    fn payload_content_holds_only_the_set_keys_in_table_order() {
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
            assert!(every_field_set().warnings_for(platform).len() <= KEYS.len());
        }
    }

    #[test]
    fn ipados_rows_follow_ios() {
        for info in KEYS {
            assert_eq!(
                info.supported_on(Platform::Ios),
                info.supported_on(Platform::IpadOs),
                "{}",
                info.key
            );
            assert_eq!(
                info.requires_supervision_on(Platform::Ios),
                info.requires_supervision_on(Platform::IpadOs),
                "{}",
                info.key
            );
            for platform in info.supervised_only_on {
                assert!(info.supported_on(*platform), "{}", info.key);
            }
        }
    }

    #[test]
    fn key_info_finds_table_rows_by_apple_name() {
        let camera = key_info("allowCamera").unwrap();
        assert_eq!(camera.kind, ValueKind::Boolean);
        assert!(camera.supported_on(Platform::TvOs));
        assert!(!camera.supported_on(Platform::WatchOs));
        assert_eq!(
            key_info("ratingRegion").map(|info| info.kind),
            Some(ValueKind::String)
        );
        assert!(key_info("allow_camera").is_none());
        assert!(key_info("PayloadType").is_none());
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
                "ratingApps is -1; use a value from 0 to 1000",
                "enforcedSoftwareUpdateDelay is 120; use a value from 1 to 90",
                "ratingRegion \"xx\" is not a region Apple defines ratings for; use one of us, au, \
                 ca, de, fr, ie, jp, nz, gb",
                "blockedAppBundleIDs[1] is empty; give a bundle ID or remove it",
                "blockedAppBundleIDs[2] repeats \"com.a\"; remove the duplicate",
            ]
        );
    }
}
