//! Placeholder: the typed subset of com.apple.applicationaccess (being written).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictionSettings {
    #[serde(
        rename = "allowCamera",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_camera: Option<bool>,
}

impl RestrictionSettings {
    pub fn to_payload_content(&self) -> plist::Dictionary {
        let mut d = plist::Dictionary::new();
        if let Some(v) = self.allow_camera {
            d.insert("allowCamera".into(), plist::Value::Boolean(v));
        }
        d
    }

    pub fn warnings_for(&self, _platform: super::model::Platform) -> Vec<String> {
        Vec::new()
    }
}
