//! Converts plist values to JSON for the admin API (decoded command results).
//! Data becomes base64 text and dates become RFC 3339 strings; nothing is dropped.

use base64::Engine as _;
use plist::Value;
use serde_json::Value as Json;

pub fn plist_to_json(value: &Value) -> Json {
    match value {
        Value::Array(items) => Json::Array(items.iter().map(plist_to_json).collect()),
        Value::Dictionary(dict) => Json::Object(
            dict.iter()
                .map(|(k, v)| (k.clone(), plist_to_json(v)))
                .collect(),
        ),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Data(bytes) => Json::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Value::Date(date) => Json::String(date.to_xml_format()),
        Value::Real(r) => serde_json::Number::from_f64(*r).map_or(Json::Null, Json::Number),
        Value::Integer(i) => match (i.as_signed(), i.as_unsigned()) {
            (Some(s), _) => Json::from(s),
            (None, Some(u)) => Json::from(u),
            _ => Json::Null,
        },
        Value::String(s) => Json::String(s.clone()),
        Value::Uid(u) => Json::from(u.get()),
        _ => Json::Null,
    }
}

/// Decodes plist bytes to JSON; undecodable bytes become an explanatory object.
pub fn plist_bytes_to_json(raw: &[u8]) -> Json {
    match super::bounded::decode(raw) {
        Ok(v) => plist_to_json(&v),
        Err(e) => serde_json::json!({ "undecodable": e.to_string(), "bytes": raw.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_nested_values() {
        let raw = br#"<plist version="1.0"><dict><key>A</key><array><integer>-3</integer><true/><data>AAE=</data><real>1.5</real></array></dict></plist>"#;
        assert_eq!(
            plist_bytes_to_json(raw),
            serde_json::json!({"A": [-3, true, "AAE=", 1.5]})
        );
    }
}
