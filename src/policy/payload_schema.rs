//! Checks profile payloads against what Apple's schemas say devices accept: the PayloadType
//! exists, the platforms the targeted groups can contain support it, keys are known, values
//! have the documented types and allowed values, and required keys are present. Everything
//! found is a warning — devices, not Pomona, have the last word, and custom payload types
//! exist — but each names the payload, the key and what the schema expects. The schema facts
//! come from `payload_schemas.json`, a digest that `scripts/gen-payload-schemas` derives from
//! the reference schemas (MIT).

use super::model::Platform;
use plist::{Dictionary, Value};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

#[derive(Debug, Deserialize)]
struct Digest {
    payloads: HashMap<String, PayloadSchema>,
}

#[derive(Debug, Deserialize)]
struct PayloadSchema {
    platforms: BTreeMap<String, PlatformSupport>,
    keys: BTreeMap<String, KeySchema>,
}

#[derive(Debug, Deserialize)]
struct PlatformSupport {
    introduced: String,
    #[serde(default)]
    removed: Option<String>,
    #[serde(default)]
    supervised: bool,
}

#[derive(Debug, Deserialize)]
struct KeySchema {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    values: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    items: Option<Box<KeySchema>>,
    #[serde(default)]
    keys: Option<BTreeMap<String, KeySchema>>,
    #[serde(default)]
    unsupported_on: Vec<String>,
    /// Top-level keys only: platforms on which the key needs a supervised device.
    #[serde(default)]
    supervised_on: Vec<String>,
    /// The schema's inclusive `range` (integers).
    #[serde(default)]
    range: Option<(i64, i64)>,
}

fn digest() -> &'static Digest {
    static DIGEST: OnceLock<Digest> = OnceLock::new();
    DIGEST.get_or_init(|| {
        serde_json::from_str(include_str!("payload_schemas.json"))
            .expect("payload_schemas.json is generated valid JSON")
    })
}

/// Whether the schemas know a PayloadType.
pub fn is_known(payload_type: &str) -> bool {
    digest().payloads.contains_key(payload_type)
}

/// What the schemas say about one top-level key of a payload type, for code that carries keys as
/// typed fields (the Restrictions settings): its type, where devices honour it, where it needs
/// supervision, and the values it takes.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts {
    payload: &'static PayloadSchema,
    key: &'static KeySchema,
}

impl KeyFacts {
    /// The schema's type name without brackets: `boolean`, `integer`, `string`, `array`, …
    pub fn kind(&self) -> &'static str {
        &self.key.kind
    }

    /// The type of an array's items, when the key is an array.
    pub fn item_kind(&self) -> Option<&'static str> {
        self.key.items.as_deref().map(|item| item.kind.as_str())
    }

    /// Whether devices of `platform` honour the key (iPadOS as iOS: the schemas describe both
    /// as iOS).
    pub fn supported_on(&self, platform: Platform) -> bool {
        let name = platform.schema_name();
        self.payload.platforms.contains_key(name)
            && !self.key.unsupported_on.iter().any(|p| p == name)
    }

    /// Whether the key only takes effect on supervised devices of `platform`.
    pub fn requires_supervision_on(&self, platform: Platform) -> bool {
        self.supported_on(platform)
            && self
                .key
                .supervised_on
                .iter()
                .any(|p| p == platform.schema_name())
    }

    /// The inclusive range of an integer key, when the schema gives one.
    pub fn range(&self) -> Option<(i64, i64)> {
        self.key.range
    }

    /// The values the key may take, when the schema lists them.
    pub fn allowed_values(&self) -> Option<&'static [serde_json::Value]> {
        self.key.values.as_deref()
    }
}

/// The schema facts of a top-level key of `payload_type`.
pub fn key_facts(payload_type: &str, key: &str) -> Option<KeyFacts> {
    let payload = digest().payloads.get(payload_type)?;
    let key = payload.keys.get(key)?;
    Some(KeyFacts { payload, key })
}

/// Warnings for one payload (its keys, as in the profile) sent to devices of `platforms`.
pub fn check_payload(
    payload_type: &str,
    content: &Dictionary,
    platforms: &BTreeSet<Platform>,
) -> Vec<String> {
    let Some(schema) = digest().payloads.get(payload_type) else {
        return vec![format!(
            "PayloadType {payload_type:?} is not in Apple's profile schemas; devices reject \
             unknown payload types (check the spelling)"
        )];
    };
    let mut warnings = Vec::new();
    let schema_platforms: BTreeSet<&str> = platforms.iter().map(|p| p.schema_name()).collect();
    for platform in &schema_platforms {
        match schema.platforms.get(*platform) {
            None => warnings.push(format!(
                "{payload_type} is not supported on {platform}, which the targeted groups can contain (narrow them with pomona.dev/platform)"
            )),
            Some(support) => {
                if let Some(removed) = &support.removed {
                    warnings.push(format!(
                        "{payload_type} was removed in {platform} {removed} (introduced in {})",
                        support.introduced
                    ));
                }
                if support.supervised {
                    warnings.push(format!(
                        "{payload_type} needs supervised {platform} devices; unsupervised ones reject it (select pomona.dev/supervised: \"true\")"
                    ));
                }
            }
        }
    }
    check_keys(
        payload_type,
        "",
        content,
        &schema.keys,
        &schema_platforms,
        &mut warnings,
    );
    warnings
}

fn check_keys(
    payload_type: &str,
    path: &str,
    content: &Dictionary,
    keys: &BTreeMap<String, KeySchema>,
    platforms: &BTreeSet<&str>,
    warnings: &mut Vec<String>,
) {
    for (key, value) in content {
        let here = format!("{path}{key}");
        // Payload* keys are the common keys every payload has (Pomona sets most of them).
        if path.is_empty() && key.starts_with("Payload") && !keys.contains_key(key) {
            continue;
        }
        let Some(schema) = keys.get(key) else {
            warnings.push(format!(
                "{payload_type}: {here} is not a key of this payload in Apple's schema (a typo?)"
            ));
            continue;
        };
        let unsupported: Vec<&str> = schema
            .unsupported_on
            .iter()
            .map(String::as_str)
            .filter(|p| platforms.contains(p))
            .collect();
        if !unsupported.is_empty() {
            warnings.push(format!(
                "{payload_type}: {here} is not supported on {}",
                unsupported.join(", ")
            ));
        }
        check_value(payload_type, &here, value, schema, platforms, warnings);
    }
    for (key, schema) in keys {
        if schema.required && !content.contains_key(key) {
            warnings.push(format!(
                "{payload_type}: {path}{key} is required ({}) and missing",
                schema.kind
            ));
        }
    }
}

fn check_value(
    payload_type: &str,
    here: &str,
    value: &Value,
    schema: &KeySchema,
    platforms: &BTreeSet<&str>,
    warnings: &mut Vec<String>,
) {
    let fits = matches!(
        (schema.kind.as_str(), value),
        ("any", _)
            | ("string", Value::String(_))
            | ("boolean", Value::Boolean(_))
            | ("integer", Value::Integer(_))
            | ("real", Value::Real(_) | Value::Integer(_))
            | ("array", Value::Array(_))
            | ("dictionary", Value::Dictionary(_))
            | ("data", Value::Data(_))
            | ("date", Value::Date(_))
    );
    if !fits {
        warnings.push(format!(
            "{payload_type}: {here} should be {} but is {}",
            article(&schema.kind),
            describe(value)
        ));
        return;
    }
    if let Some(allowed) = &schema.values {
        let as_json = match value {
            Value::String(s) => Some(serde_json::Value::from(s.as_str())),
            Value::Integer(i) => i.as_signed().map(serde_json::Value::from),
            _ => None,
        };
        if let Some(v) = as_json {
            if !allowed.contains(&v) {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                warnings.push(format!(
                    "{payload_type}: {here} is {v}; allowed: {}",
                    list.join(", ")
                ));
            }
        }
    }
    if let (Some((min, max)), Some(number)) = (schema.range, value.as_signed_integer()) {
        if !(min..=max).contains(&number) {
            warnings.push(format!(
                "{payload_type}: {here} is {number}; the schema allows {min} to {max}"
            ));
        }
    }
    match value {
        Value::Dictionary(d) => {
            if let Some(keys) = &schema.keys {
                check_keys(
                    payload_type,
                    &format!("{here}."),
                    d,
                    keys,
                    platforms,
                    warnings,
                );
            }
        }
        Value::Array(items) => {
            if let Some(item) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    check_value(
                        payload_type,
                        &format!("{here}[{i}]"),
                        v,
                        item,
                        platforms,
                        warnings,
                    );
                }
            }
        }
        _ => {}
    }
}

fn article(kind: &str) -> String {
    match kind {
        "array" | "integer" => format!("an {kind}"),
        other => format!("a {other}"),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Array(_) => "an array",
        Value::Dictionary(_) => "a dictionary",
        Value::Data(_) => "data",
        Value::Date(_) => "a date",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: &[(&str, Value)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn ios() -> BTreeSet<Platform> {
        [Platform::Ios].into()
    }

    #[test]
    fn a_correct_wifi_payload_has_no_warnings() {
        let content = dict(&[
            ("SSID_STR", Value::String("Office".into())),
            ("AutoJoin", Value::Boolean(true)),
            ("EncryptionType", Value::String("WPA2".into())),
        ]);
        assert_eq!(
            check_payload("com.apple.wifi.managed", &content, &ios()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn wrong_types_unknown_keys_bad_values_and_missing_required_keys_are_named() {
        let content = dict(&[
            ("SSID_STR", Value::Integer(5.into())),
            ("AutoJion", Value::Boolean(true)),
            ("EncryptionType", Value::String("WPA4".into())),
            (
                "EAPClientConfiguration",
                Value::Dictionary(dict(&[("UserName", Value::String("x".into()))])),
            ),
        ]);
        let warnings = check_payload("com.apple.wifi.managed", &content, &ios()).join("\n");
        assert!(
            warnings.contains("SSID_STR should be a string but is an integer"),
            "{warnings}"
        );
        assert!(warnings.contains("AutoJion is not a key"), "{warnings}");
        assert!(
            warnings.contains("EncryptionType is \"WPA4\"; allowed:"),
            "{warnings}"
        );
        assert!(
            warnings.contains("EAPClientConfiguration.AcceptEAPTypes is required"),
            "{warnings}"
        );
    }

    #[test]
    fn integers_outside_the_schema_range_are_named() {
        let content = dict(&[("ratingApps", Value::Integer(2000.into()))]);
        let warnings = check_payload("com.apple.applicationaccess", &content, &ios());
        assert_eq!(
            warnings,
            ["com.apple.applicationaccess: ratingApps is 2000; the schema allows 0 to 1000"]
        );
    }

    #[test]
    fn key_facts_carry_platforms_supervision_and_ranges() {
        let safari = key_facts("com.apple.applicationaccess", "allowSafari").unwrap();
        assert_eq!(safari.kind(), "boolean");
        assert!(safari.supported_on(Platform::IpadOs));
        assert!(safari.requires_supervision_on(Platform::Ios));
        assert!(!safari.supported_on(Platform::MacOs));
        assert!(!safari.requires_supervision_on(Platform::MacOs));
        let delay =
            key_facts("com.apple.applicationaccess", "enforcedSoftwareUpdateDelay").unwrap();
        assert_eq!(delay.range(), Some((1, 90)));
        let ids = key_facts("com.apple.applicationaccess", "blockedAppBundleIDs").unwrap();
        assert_eq!((ids.kind(), ids.item_kind()), ("array", Some("string")));
        assert!(key_facts("com.apple.applicationaccess", "allowCamra").is_none());
        assert!(key_facts("com.apple.nothing", "allowCamera").is_none());
    }

    #[test]
    fn unknown_payload_types_and_unsupported_platforms_are_warned_about() {
        let none = Dictionary::new();
        let w = check_payload("com.apple.wifi.manged", &none, &ios());
        assert!(w[0].contains("not in Apple's profile schemas"), "{w:?}");
        assert!(is_known("com.apple.wifi.managed"));
        // FileVault is a macOS payload: iOS devices would reject it.
        let w = check_payload("com.apple.MCX.FileVault2", &none, &ios()).join("\n");
        assert!(w.contains("not supported on iOS"), "{w}");
    }
}
