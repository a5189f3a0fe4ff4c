//! The declared model, `mdm.pomona.dev/v1alpha1`: the documents administrators write (YAML in a
//! policy directory or git, and — with the same types — Kubernetes custom resources). Unknown
//! keys are errors everywhere: a typo must never be silently ignored.
//!
//! The spec types also derive `kube::CustomResource`: the custom resource definitions in
//! `crds/` are generated from exactly these types (see `crd.rs`), so YAML files and custom
//! resources are validated by the same code, and the OpenAPI schema rejects early whatever it
//! can express (enums, required fields, name patterns).

use super::crd::{ActionStatus, PolicyStatus};
use crate::vocab::profiles::RemovalPolicy;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const API_GROUP: &str = "mdm.pomona.dev";
pub const API_VERSION: &str = "mdm.pomona.dev/v1alpha1";

/// What a reference to another object's name must look like (a Kubernetes object name).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

/// Free-form payload keys: kept as written (the API server must not prune them).
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Names and labels of a document (the Kubernetes `metadata` subset we read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One policy document: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// Device platforms as groups and restrictions name them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Platform {
    #[serde(rename = "iOS")]
    Ios,
    #[serde(rename = "iPadOS")]
    IpadOs,
    #[serde(rename = "macOS")]
    MacOs,
    #[serde(rename = "tvOS")]
    TvOs,
    #[serde(rename = "visionOS")]
    VisionOs,
    #[serde(rename = "watchOS")]
    WatchOs,
}

impl Platform {
    pub const ALL: [Platform; 6] = [
        Platform::Ios,
        Platform::IpadOs,
        Platform::MacOs,
        Platform::TvOs,
        Platform::VisionOs,
        Platform::WatchOs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "iOS",
            Platform::IpadOs => "iPadOS",
            Platform::MacOs => "macOS",
            Platform::TvOs => "tvOS",
            Platform::VisionOs => "visionOS",
            Platform::WatchOs => "watchOS",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// The reference schemas describe iPadOS under "iOS".
    pub fn schema_name(self) -> &'static str {
        match self {
            Platform::IpadOs => "iOS",
            other => other.as_str(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DeviceGroup

/// Which devices belong to a group: a label selector over device labels and inventory
/// attributes, and/or explicit serial numbers and UDIDs. A device matching either is a member.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, CustomResource,
)]
#[kube(
    group = "mdm.pomona.dev",
    version = "v1alpha1",
    kind = "DeviceGroup",
    root = "DeviceGroupResource",
    namespaced,
    status = "PolicyStatus",
    shortname = "dg",
    category = "pomona",
    doc = "A set of Apple devices, by label selector and/or explicit serial numbers and UDIDs.",
    printcolumn(name = "Devices", type_ = "integer", json_path = ".status.targeted"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceGroupSpec {
    /// Label selector; inventory attributes are available as `pomona.dev/…` labels
    /// (platform, model, os-version, serial-number, supervised, enrollment-type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial_numbers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udids: Vec<String>,
}

/// Kubernetes-style label selector: all `matchLabels` and all `matchExpressions` must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorRequirement {
    #[schemars(length(min = 1))]
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `In`/`NotIn`/`Exists`/`DoesNotExist` as in Kubernetes, plus version comparisons for
/// `pomona.dev/os-version` (dotted numbers: 17.4 < 17.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// The value is a version at least `values[0]`.
    VersionAtLeast,
    /// The value is a version below `values[0]`.
    VersionBelow,
}

// ---------------------------------------------------------------------------------------------
// Profile

/// The custom resource attributes Profile and Restrictions share, written once: both install
/// content on the members of DeviceGroups, report the same status and show the same columns.
macro_rules! installed_on_groups {
    (
        kind = $kind:tt,
        root = $root:tt,
        plural = $plural:tt,
        shortname = $shortname:tt,
        doc = $doc:tt,
        $(#[$meta:meta])*
        pub struct $name:ident $body:tt
    ) => {
        #[derive(
            Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource,
        )]
        // clippy reads the repeated `type_ = …` of printcolumn(…) as a duplicated attribute.
        #[allow(clippy::duplicated_attributes)]
        #[kube(
            group = "mdm.pomona.dev",
            version = "v1alpha1",
            kind = $kind,
            plural = $plural,
            root = $root,
            namespaced,
            status = "PolicyStatus",
            shortname = $shortname,
            category = "pomona",
            doc = $doc,
            printcolumn(name = "Targeted", type_ = "integer", json_path = ".status.targeted"),
            printcolumn(name = "Verified", type_ = "integer", json_path = ".status.verified"),
            printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
            printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
            printcolumn(name = "Removing", type_ = "integer", json_path = ".status.removing"),
            printcolumn(
                name = "Ready",
                type_ = "string",
                json_path = ".status.conditions[?(@.type==\"Ready\")].status"
            ),
            printcolumn(
                name = "Age",
                type_ = "date",
                json_path = ".metadata.creationTimestamp"
            ),
            printcolumn(
                name = "Message",
                type_ = "string",
                json_path = ".status.conditions[?(@.type==\"Ready\")].message",
                priority = 1
            )
        )]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        $(#[$meta])*
        pub struct $name $body
    };
}

installed_on_groups! {
    kind = "Profile",
    root = "ProfileResource",
    plural = "profiles",
    shortname = "mdmprofile",
    doc = "A configuration profile installed on the members of some DeviceGroups.",
    /// A configuration profile installed on the members of some groups. Exactly one of
    /// `mobileconfig`, `mobileconfigFile` or `payloads` gives the content.
    pub struct ProfileSpec {
        /// DeviceGroup names whose members get the profile.
        #[schemars(length(min = 1), inner(regex(pattern = NAME_PATTERN)))]
        pub groups: Vec<String>,
        #[serde(default)]
        pub removal_policy: RemovalPolicy,
        /// A whole .mobileconfig (XML plist), inline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mobileconfig: Option<String>,
        /// Path of a .mobileconfig, relative to the policy source's root.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mobileconfig_file: Option<String>,
        /// Payloads Pomona assembles into a profile.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub payloads: Option<Vec<PayloadSpec>>,
        /// Top-level PayloadIdentifier for assembled profiles (default `dev.pomona.<name>`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub identifier: Option<String>,
        /// PayloadDisplayName for assembled profiles (default: the document name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub display_name: Option<String>,
        /// CMS-sign the profile with the server's certificate before installing it.
        #[serde(default)]
        pub sign: bool,
    }
}

/// One payload of an assembled profile: its PayloadType and its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PayloadSpec {
    #[schemars(length(min = 1))]
    pub payload_type: String,
    /// PayloadIdentifier (default: the profile identifier + "." + index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// The payload's own keys, as in Apple's documentation. Binary values are written as
    /// `{ "base64": "…" }`.
    #[serde(default)]
    #[schemars(schema_with = "free_form")]
    pub content: BTreeMap<String, serde_json::Value>,
}

// ---------------------------------------------------------------------------------------------
// Restrictions

installed_on_groups! {
    kind = "Restrictions",
    root = "RestrictionsResource",
    plural = "restrictions",
    shortname = "restr",
    doc = "Typed device restrictions (com.apple.applicationaccess) for the members of some DeviceGroups.",
    /// A typed subset of `com.apple.applicationaccess`, compiled into a profile.
    pub struct RestrictionsSpec {
        #[schemars(length(min = 1), inner(regex(pattern = NAME_PATTERN)))]
        pub groups: Vec<String>,
        #[serde(default)]
        pub removal_policy: RemovalPolicy,
        pub settings: super::restrictions::RestrictionSettings,
    }
}

// ---------------------------------------------------------------------------------------------
// DeviceLabels

/// Labels for devices, by serial number or UDID, declared next to the policies.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, CustomResource,
)]
#[kube(
    group = "mdm.pomona.dev",
    version = "v1alpha1",
    kind = "DeviceLabels",
    plural = "devicelabels",
    root = "DeviceLabelsResource",
    namespaced,
    status = "PolicyStatus",
    shortname = "dlabels",
    category = "pomona",
    doc = "Labels for devices, by serial number or UDID, for DeviceGroup selectors.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceLabelsSpec {
    pub devices: Vec<LabelledDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelledDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    pub labels: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// DeviceAction

pub use crate::vocab::actions::ActionKind;

/// Which devices an action is for: exactly one of a serial number, a UDID or a DeviceGroup.
/// A group action runs on each member once, including devices that join the group later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ActionTargetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub group: Option<String>,
}

/// Where a secret (a PIN) comes from: a file (policy directories and git: relative to the
/// policy root, or an absolute path on the server) or a Kubernetes Secret in the object's
/// namespace. The value itself is never written in the document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A one-off action on devices (lock, erase, Lost Mode, locate, restart, shut down, clear the
/// passcode). It runs once per targeted device, survives restarts, and re-applying it
/// unchanged sends nothing; change any field (or `runId`) to run it again.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, CustomResource,
)]
// clippy reads the repeated `type_ = …` of printcolumn(…) as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "mdm.pomona.dev",
    version = "v1alpha1",
    kind = "DeviceAction",
    root = "DeviceActionResource",
    namespaced,
    status = "ActionStatus",
    shortname = "dact",
    category = "pomona",
    doc = "A one-off action (lock, erase, Lost Mode, locate, restart, shut down, clear passcode) on a device or the members of a DeviceGroup.",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Targeted", type_ = "integer", json_path = ".status.targeted"),
    printcolumn(
        name = "Acknowledged",
        type_ = "integer",
        json_path = ".status.acknowledged"
    ),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceActionSpec {
    pub target: ActionTargetSpec,
    pub action: ActionKind,
    /// Lock and EnableLostMode: the message shown on the lock screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Lock and EnableLostMode: the phone number shown on the lock screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// EnableLostMode: the footnote shown on the lock screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footnote: Option<String>,
    /// Lock and Erase on macOS: the six-digit PIN that unlocks the Mac afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<SecretSource>,
    /// Erase (iOS): keep the cellular data plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_data_plan: Option<bool>,
    /// Erase (iOS): disable Proximity Setup on the next Setup Assistant run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallow_proximity_setup: Option<bool>,
    /// Erase (iOS 17 and later): return to service — re-enroll by itself after the erase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to_service: Option<bool>,
    /// Restart (macOS): ask the user to restart instead of restarting at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_user: Option<bool>,
    /// Erase: must repeat the target (its serial number, UDID or group name). Erasing wipes
    /// every targeted device, so it is never implied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    /// Any text: change it to run the same action again (e.g. to locate a device once more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// The document kinds this version understands.
pub const KINDS: [&str; 5] = [
    "DeviceGroup",
    "Profile",
    "Restrictions",
    "DeviceLabels",
    "DeviceAction",
];
