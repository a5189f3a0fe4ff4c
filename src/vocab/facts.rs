//! What a device reported about itself, as it is stored: the facts of its latest
//! DeviceInformation answer. `reconcile::reported` reads them out of the answer and into the
//! attributes groups select on; `store::inventory` keeps them. They live here so that the
//! reconciler's reading of device answers does not import the store for them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A device's answers to the DeviceInformation queries groups select on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReportedFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervised: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}
