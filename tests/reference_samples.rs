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
