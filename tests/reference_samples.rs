//! Every real plist under ../shared/reference/samples must decode: check-ins as check-ins,
//! command results as reports, envelopes as envelopes, profiles as profiles.
//! The folder is outside the repository. `.ci/run` finds it and sets POMONA_REFERENCE_DIR, which
//! makes it mandatory; a newcomer without it gets a notice instead.

use pomona::protocol::profile::ProfileSummary;
use pomona::protocol::{Checkin, CommandEnvelope, Report};
use std::path::{Path, PathBuf};

fn samples_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("POMONA_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"))
        .join("samples");
    dir.is_dir().then_some(dir)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "plist" || e == "mobileconfig")
        {
            out.push(path);
        }
    }
}

#[test]
fn every_reference_plist_decodes() {
    let Some(dir) = samples_dir() else {
        assert!(
            std::env::var_os("POMONA_REFERENCE_DIR").is_none(),
            "POMONA_REFERENCE_DIR is set but has no samples/ folder"
        );
        eprintln!("reference samples not found next to the repository; nothing to check here");
        return;
    };
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    assert!(
        paths.len() >= 12,
        "expected the 13 sample plists, found {}",
        paths.len()
    );
    let mut kinds = std::collections::BTreeMap::new();
    for path in &paths {
        let raw = std::fs::read(path).unwrap();
        let dict = plist::Value::from_reader(std::io::Cursor::new(&raw))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .into_dictionary()
            .unwrap_or_else(|| panic!("{}: not a dictionary", path.display()));
        let kind = if dict.contains_key("MessageType") {
            let c = Checkin::parse(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!c.ids.device_id().is_empty());
            "checkin"
        } else if dict.contains_key("Status") {
            let r = Report::parse(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                r.command_uuid.is_some(),
                "{}: result without CommandUUID",
                path.display()
            );
            "report"
        } else if dict.contains_key("Command") {
            CommandEnvelope::decode(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            "envelope"
        } else if dict.get("PayloadType").and_then(|v| v.as_string()) == Some("Configuration") {
            ProfileSummary::parse(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            "profile"
        } else {
            panic!("{}: unrecognised sample", path.display());
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    for kind in ["checkin", "report", "envelope", "profile"] {
        assert!(
            kinds.contains_key(kind),
            "no {kind} sample decoded: {kinds:?}"
        );
    }
}

/// One `- key:` entry of a reference profile schema: (indent, key, type, required).
type SchemaKey = (usize, String, String, bool);

/// The `- key:` / `type:` / `presence:` lines of a schema YAML, in order.
fn schema_keys(path: &Path) -> Vec<SchemaKey> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut keys: Vec<SchemaKey> = Vec::new();
    let mut in_payloadkeys = false;
    for line in text.lines() {
        if line.starts_with("payloadkeys:") {
            in_payloadkeys = true;
            continue;
        }
        if !in_payloadkeys {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(name) = trimmed.strip_prefix("- key: ") {
            keys.push((indent, name.trim().to_string(), String::new(), false));
        } else if let (Some(last), Some(kind)) = (keys.last_mut(), trimmed.strip_prefix("type: ")) {
            if last.2.is_empty() && indent == last.0 + 2 {
                last.2 = kind.trim().to_string();
            }
        } else if let (Some(last), Some(p)) = (keys.last_mut(), trimmed.strip_prefix("presence: "))
        {
            if indent == last.0 + 2 {
                last.3 = p.trim() == "required";
            }
        }
    }
    keys
}

fn plist_type(value: &plist::Value) -> &'static str {
    match value {
        plist::Value::String(_) => "<string>",
        plist::Value::Integer(_) => "<integer>",
        plist::Value::Boolean(_) => "<boolean>",
        plist::Value::Data(_) => "<data>",
        plist::Value::Array(_) => "<array>",
        plist::Value::Dictionary(_) => "<dictionary>",
        plist::Value::Real(_) => "<real>",
        plist::Value::Date(_) => "<date>",
        _ => "<other>",
    }
}

/// Checks one dictionary against the top-level keys of `schema` (indent 0) plus `extra`:
/// every key we write is known with the right type, every required key is present.
fn check_dict(what: &str, dict: &plist::Dictionary, schema: &[SchemaKey], extra: &[SchemaKey]) {
    let level: Vec<&SchemaKey> = schema
        .iter()
        .chain(extra)
        .filter(|k| k.0 == schema.iter().map(|k| k.0).min().unwrap_or(0))
        .collect();
    for (key, value) in dict {
        let known = level
            .iter()
            .find(|k| &k.1 == key)
            .unwrap_or_else(|| panic!("{what}: key {key:?} is not in the reference schema"));
        assert!(
            known.2 == "<any>" || known.2 == plist_type(value),
            "{what}: {key} is {} but the schema says {}",
            plist_type(value),
            known.2
        );
    }
    for required in level.iter().filter(|k| k.3) {
        assert!(
            dict.contains_key(&required.1),
            "{what}: required key {} is missing",
            required.1
        );
    }
}

#[test]
fn enrollment_profile_keys_match_the_reference_schemas() {
    let Some(samples) = samples_dir() else {
        assert!(std::env::var_os("POMONA_REFERENCE_DIR").is_none());
        eprintln!("reference schemas not found next to the repository; nothing to check here");
        return;
    };
    let profiles = samples.join("../apple-device-management/mdm/profiles");
    let spec = pomona::protocol::enrollment_profile::EnrollmentProfileSpec {
        server_url: "https://mdm.example/mdm/connect".into(),
        checkin_url: "https://mdm.example/mdm/checkin".into(),
        scep_url: "https://mdm.example/scep".into(),
        challenge: "c".into(),
        topic: "com.apple.mgmt.External.x".into(),
        tls_root_der: Some(vec![0x30, 0x00]),
        sign_message: false,
        organization: "Example".into(),
        access_rights: 8191,
    };
    let bytes = pomona::protocol::enrollment_profile::build(&spec);
    let top: plist::Dictionary = plist::from_bytes(&bytes).unwrap();
    check_dict(
        "top level",
        &top,
        &schema_keys(&profiles.join("TopLevel.yaml")),
        &[],
    );
    let common = schema_keys(&profiles.join("CommonPayloadKeys.yaml"));
    let mut seen = Vec::new();
    for payload in top["PayloadContent"].as_array().unwrap() {
        let payload = payload.as_dictionary().unwrap();
        let kind = payload["PayloadType"].as_string().unwrap();
        seen.push(kind.to_string());
        let schema = schema_keys(&profiles.join(format!("{kind}.yaml")));
        check_dict(kind, payload, &schema, &common);
        if kind == "com.apple.security.scep" {
            // The SCEP options live inside PayloadContent: check them against its subkeys.
            let start = schema.iter().position(|k| k.1 == "PayloadContent").unwrap();
            let sub: Vec<SchemaKey> = schema[start + 1..]
                .iter()
                .take_while(|k| k.0 > schema[start].0)
                .cloned()
                .collect();
            check_dict(
                "com.apple.security.scep PayloadContent",
                payload["PayloadContent"].as_dictionary().unwrap(),
                &sub,
                &[],
            );
        }
    }
    assert_eq!(
        seen,
        [
            "com.apple.security.root",
            "com.apple.security.scep",
            "com.apple.mdm"
        ]
    );
}
