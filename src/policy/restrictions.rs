//! Placeholder: the typed subset of com.apple.applicationaccess (being written).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictionSettings {
    #[serde(rename = "allowCamera", default, skip_serializing_if = "Option::is_none")]
    pub allow_camera: Option<bool>,
}
