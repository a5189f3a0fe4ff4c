//! Configuration profiles (.mobileconfig): reading the top-level identity of a profile.
//! Building profiles belongs to the policy and enrollment issues; this is the part both the
//! server (validating an InstallProfile) and the simulator (recording it) need today.

use plist::Value;

/// Why bytes are not a configuration profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Not a plist within the decoder's limits (the decoder's reason).
    #[error("{0}")]
    NotAPlist(String),
    #[error("top level must be a dictionary")]
    NotADictionary,
    #[error("PayloadType is {0:?}, expected \"Configuration\"")]
    NotAConfiguration(String),
    #[error("PayloadType is missing (expected \"Configuration\")")]
    NoPayloadType,
    /// A required top-level key (PayloadIdentifier, PayloadUUID).
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("a PayloadContent entry has no PayloadType")]
    PayloadWithoutType,
    #[error("PayloadContent must be an array")]
    ContentNotAnArray,
}

/// The top-level keys that identify an installed profile, as ProfileList reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSummary {
    pub identifier: String,
    pub uuid: String,
    pub display_name: Option<String>,
    pub organization: Option<String>,
    pub version: i64,
    /// PayloadType of each inner payload, in order.
    pub payload_types: Vec<String>,
}

impl ProfileSummary {
    /// Parses an unsigned .mobileconfig (XML or binary plist).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProfileError> {
        let value =
            super::bounded::decode(bytes).map_err(|e| ProfileError::NotAPlist(e.to_string()))?;
        let dict = value.as_dictionary().ok_or(ProfileError::NotADictionary)?;
        let text = |key: &str| dict.get(key).and_then(Value::as_string).map(str::to_string);
        match text("PayloadType").as_deref() {
            Some("Configuration") => {}
            Some(other) => return Err(ProfileError::NotAConfiguration(other.to_string())),
            None => return Err(ProfileError::NoPayloadType),
        }
        let identifier =
            text("PayloadIdentifier").ok_or(ProfileError::Missing("PayloadIdentifier"))?;
        let uuid = text("PayloadUUID").ok_or(ProfileError::Missing("PayloadUUID"))?;
        let payload_types = match dict.get("PayloadContent") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| {
                    p.as_dictionary()
                        .and_then(|d| d.get("PayloadType"))
                        .and_then(Value::as_string)
                        .map(str::to_string)
                        .ok_or(ProfileError::PayloadWithoutType)
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ProfileError::ContentNotAnArray),
            None => Vec::new(),
        };
        Ok(Self {
            identifier,
            uuid,
            display_name: text("PayloadDisplayName"),
            organization: text("PayloadOrganization"),
            version: dict
                .get("PayloadVersion")
                .and_then(Value::as_signed_integer)
                .unwrap_or(1),
            payload_types,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_identity_and_payload_types() {
        let p = br#"<?xml version="1.0"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadIdentifier</key><string>com.example.wifi</string>
<key>PayloadUUID</key><string>8C5A1E3B-0000-4000-8000-000000000001</string>
<key>PayloadDisplayName</key><string>Wi-Fi</string>
<key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.wifi.managed</string></dict></array>
</dict></plist>"#;
        let s = ProfileSummary::parse(p).unwrap();
        assert_eq!(s.identifier, "com.example.wifi");
        assert_eq!(s.display_name.as_deref(), Some("Wi-Fi"));
        assert_eq!(s.payload_types, vec!["com.apple.wifi.managed"]);
    }

    #[test]
    fn rejects_a_payload_that_is_not_a_profile() {
        let p = br#"<plist version="1.0"><dict><key>PayloadType</key><string>com.apple.mdm</string></dict></plist>"#;
        let error = ProfileSummary::parse(p).unwrap_err();
        assert_eq!(
            error,
            ProfileError::NotAConfiguration("com.apple.mdm".into())
        );
        assert!(error.to_string().contains("expected \"Configuration\""));
    }
}
