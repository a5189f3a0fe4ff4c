//! The Kubernetes face of the policy model: the status every custom resource carries (kstatus
//! conditions `Ready` / `Reconciling` / `Stalled` with `observedGeneration`, device counts, a
//! bounded message), and the CustomResourceDefinitions generated from the spec types in
//! `model.rs` — what `pomona crds` prints and `crds/` holds. It owns no I/O and no policy logic.

use super::model::{
    DeviceActionResource, DeviceGroupResource, DeviceLabelsResource, ProfileResource,
    RestrictionsResource,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest `status.message`: detail stays in the store and the API, etcd objects stay small.
pub const MESSAGE_LIMIT: usize = 1024;

/// Status of every Pomona custom resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` in force on devices. A generation Pomona refuses is not
    /// observed (the conditions, whose `observedGeneration` is the current one, say why).
    /// Written as null when nothing is in force, so that a merge patch clears it.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus conventions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Devices the object applies to (a DeviceGroup: its members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeted: Option<i64>,
    /// Devices on which the profile is installed and confirmed by ProfileList.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<i64>,
    /// Devices on which it is queued, installing or awaiting verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// Devices that refused it too often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// Devices it is being removed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removing: Option<i64>,
    /// The policy revision in force when this status was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What devices get from this object: the last generation Pomona accepted. A rejected
    /// generation leaves it as it was, so a restarted controller keeps serving it. Written as
    /// null when nothing is in force (being deleted, or never accepted).
    #[serde(default)]
    pub in_force: Option<InForce>,
}

/// The spec an object last had accepted, kept in its status so that an invalid change, a
/// dangling reference or a controller restart never takes away what devices were given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InForce {
    /// The `metadata.generation` of `spec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The accepted spec, as written.
    #[schemars(schema_with = "kept_as_written")]
    pub spec: serde_json::Value,
    /// Profile and Restrictions: the DeviceGroups of `spec.groups` as they were defined then,
    /// by name. A group deleted under the object stays in force for it from this copy.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(schema_with = "kept_as_written")]
    pub groups: std::collections::BTreeMap<String, serde_json::Value>,
}

/// An object the API server stores as given (never pruned): a copy of a spec.
fn kept_as_written(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Status of a DeviceAction: per-state device counts, the devices themselves (bounded:
/// failures first), and the usual conditions. Never carries a secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Devices the action is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeted: Option<i64>,
    /// Waiting to be sent (queued, or waiting for a fact or for Lost Mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// Fetched by the device, no answer yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// Devices whose platform or supervision cannot run the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<i64>,
    /// Per-device outcome (at most 50; failures first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<ActionDeviceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// One device's part of a DeviceAction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionDeviceStatus {
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Pending, Sent, Acknowledged, Failed or NotApplicable.
    pub state: String,
    /// Why it failed, was not applicable, or is waiting (the device's ErrorChain for failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Locate: where the device was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<DeviceLocation>,
    /// RFC 3339.
    pub updated: String,
}

/// A DeviceLocation answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceLocation {
    pub latitude: f64,
    pub longitude: f64,
    /// Metres; negative when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_accuracy: Option<f64>,
    /// When the device took the fix (RFC 3339, as the device reported it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// A status condition, shaped like Kubernetes' `metav1.Condition`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Cuts `text` to at most `MESSAGE_LIMIT` bytes (on a character boundary), saying so.
pub fn bounded(text: &str) -> String {
    if text.len() <= MESSAGE_LIMIT {
        return text.to_string();
    }
    let mut end = MESSAGE_LIMIT - 20;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … (truncated)", &text[..end])
}

/// Every CustomResourceDefinition Pomona serves, in a stable order.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![
        DeviceGroupResource::crd(),
        ProfileResource::crd(),
        RestrictionsResource::crd(),
        DeviceLabelsResource::crd(),
        DeviceActionResource::crd(),
    ]
}

/// (file name, YAML) of each definition, as committed under `crds/`.
pub fn definition_files() -> Vec<(String, String)> {
    definitions()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_saphyr::to_string(&crd).expect("a CRD serialises to YAML");
            (
                format!("{name}.yaml"),
                format!(
                    "# Generated by `pomona crds` from src/policy/model.rs: do not edit.\n{yaml}"
                ),
            )
        })
        .collect()
}

/// All definitions as one YAML stream (`pomona crds`).
pub fn definitions_yaml() -> String {
    definition_files()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_match_the_rust_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut drifted = Vec::new();
        for (file, yaml) in definition_files() {
            let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
            if committed != yaml {
                drifted.push(file);
            }
        }
        assert!(
            drifted.is_empty(),
            "crds/ is out of date with src/policy/model.rs ({drifted:?}): run \
             `cargo run -- crds --output-dir crds` and commit the result"
        );
    }

    #[test]
    fn schemas_reject_what_they_can_express() {
        let profile = serde_json::to_value(ProfileResource::crd()).unwrap();
        let spec =
            &profile["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["groups"]), "{spec:#}");
        assert_eq!(spec["properties"]["groups"]["minItems"], 1);
        assert_eq!(
            spec["properties"]["groups"]["items"]["pattern"],
            crate::policy::model::NAME_PATTERN
        );
        assert_eq!(
            spec["properties"]["removalPolicy"]["enum"],
            serde_json::json!(["Remove", "Keep"]),
            "{spec:#}"
        );
        let versions = &profile["spec"]["versions"][0];
        assert_eq!(versions["subresources"]["status"], serde_json::json!({}));
        let columns: Vec<&str> = versions["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Targeted", "Verified", "Pending", "Failed", "Removing", "Ready", "Age", "Message"]
        );
        // The message is long: only `kubectl get -o wide` shows it.
        let message = &versions["additionalPrinterColumns"][7];
        assert_eq!(message["priority"], 1, "{message}");
    }

    #[test]
    fn long_messages_are_bounded() {
        let long = "é".repeat(2000);
        let cut = bounded(&long);
        assert!(cut.len() <= MESSAGE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with("(truncated)"));
        assert_eq!(bounded("short"), "short");
    }
}
