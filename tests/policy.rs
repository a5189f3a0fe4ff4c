//! Policy directories: a valid one builds a deterministic snapshot whose profiles reach exactly
//! the devices their groups select; invalid ones are refused with every problem located as
//! file:line; `pomona validate` exits 0 / 2 accordingly.

use pomona::policy::model::Platform;
use pomona::policy::selector::DeviceAttributes;
use pomona::policy::source::load_dir;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn device(platform: Platform, serial: &str, os: &str) -> DeviceAttributes {
    DeviceAttributes {
        device_id: format!("UDID-{serial}").into(),
        serial_number: Some(serial.into()),
        platform: Some(platform),
        os_version: Some(os.into()),
        ..DeviceAttributes::default()
    }
}

#[test]
fn a_valid_directory_builds_a_deterministic_snapshot() {
    let snapshot = load_dir(&fixture("policies-valid")).expect("valid fixture");
    assert_eq!(snapshot.groups.len(), 2);
    let keys: Vec<&str> = snapshot.profiles.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Profile/office-wifi",
            "Profile/raw-file",
            "Restrictions/no-camera"
        ]
    );
    let wifi = &snapshot.profiles["Profile/office-wifi"];
    assert_eq!(wifi.identifier, "dev.pomona.office-wifi");
    let text = String::from_utf8(wifi.mobileconfig.to_vec()).unwrap();
    assert!(text.contains("<key>SSID_STR</key>") && text.contains("<string>Office</string>"));
    assert_eq!(
        snapshot.profiles["Profile/raw-file"].identifier,
        "com.example.raw"
    );

    let again = load_dir(&fixture("policies-valid")).unwrap();
    assert_eq!(again.revision, snapshot.revision);
    // The same files under another directory name have the same revision (`plan --server` and
    // `plan --database` agree), and a changed file gives another.
    let copy = tempfile::tempdir().unwrap();
    let elsewhere = copy.path().join("another-name");
    copy_tree(&fixture("policies-valid"), &elsewhere);
    assert_eq!(load_dir(&elsewhere).unwrap().revision, snapshot.revision);
    let first = std::fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "yaml"))
        .unwrap();
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, format!("{text}\n# edited\n")).unwrap();
    assert_ne!(load_dir(&elsewhere).unwrap().revision, snapshot.revision);
    assert_eq!(
        again.profiles, snapshot.profiles,
        "compilation must be deterministic"
    );
}

#[test]
fn desired_profiles_follow_group_membership() {
    let snapshot = load_dir(&fixture("policies-valid")).unwrap();
    let names = |d: &DeviceAttributes| -> Vec<String> {
        let mut d = d.clone();
        d.labels = snapshot.declared_labels(d.serial_number.as_deref(), &d.device_id);
        snapshot
            .desired_for(&d)
            .iter()
            .map(|p| p.key.clone())
            .collect()
    };
    // SER1 is labelled team=sales in policy and runs 17.4: all three.
    assert_eq!(
        names(&device(Platform::Ios, "SER1", "17.4")),
        [
            "Profile/office-wifi",
            "Profile/raw-file",
            "Restrictions/no-camera"
        ]
    );
    // Same device on 16.7: too old for sales-modern.
    assert_eq!(
        names(&device(Platform::Ios, "SER1", "16.7")),
        ["Profile/office-wifi", "Restrictions/no-camera"]
    );
    // A Mac listed by serial in sales-modern only.
    assert_eq!(
        names(&device(Platform::MacOs, "C02XYZ123456", "14.5")),
        ["Profile/raw-file"]
    );
    assert!(names(&device(Platform::MacOs, "OTHER", "14.5")).is_empty());
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn every_problem_is_reported_with_file_line_and_document() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("policies");
    std::fs::create_dir(&root).unwrap();
    write(
        &root,
        "a.yaml",
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata:\n  name: Bad_Name\nspec:\n  selector:\n    matchExpressions:\n      - key: pomona.dev/os-version\n        operator: VersionAtLeast\n        values: [seventeen]\n",
    );
    write(
        &root,
        "b.yaml",
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: p\nspec:\n  groups: [nowhere]\n  mobileconfig: \"not a plist\"\n---\napiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: q\nspec:\n  groups: []\n  mobileconfigFile: ../../etc/passwd\n",
    );
    let problems = load_dir(&root).expect_err("invalid");
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let expect = [
        // Each at the line of the field it is about; the document's first line otherwise.
        "policies/a.yaml:4: error: DeviceGroup/Bad_Name: metadata.name \"Bad_Name\" must be lowercase",
        "policies/a.yaml:8: error: DeviceGroup/Bad_Name: spec.selector.matchExpressions[0]: VersionAtLeast takes exactly one dotted version",
        "policies/b.yaml:6: error: Profile/p: spec.groups: DeviceGroup \"nowhere\" is not declared (declared: Bad_Name)",
        "policies/b.yaml:1: error: Profile/p: the profile is not usable",
        "policies/b.yaml:14: error: Profile/q: spec.groups is empty",
        "policies/b.yaml:15: error: Profile/q: spec.mobileconfigFile \"../../etc/passwd\" must be a relative path inside the policy source",
    ];
    for e in expect {
        assert!(
            text.iter().any(|t| t.starts_with(e)),
            "missing {e:?} in {text:#?}"
        );
    }
    assert_eq!(text.len(), expect.len(), "{text:#?}");
}

#[test]
fn pomona_validate_exits_0_for_valid_and_2_for_invalid() {
    let bin = env!("CARGO_BIN_EXE_pomona");
    let ok = std::process::Command::new(bin)
        .args(["validate"])
        .arg(fixture("policies-valid"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}");
    assert!(out.contains("valid (2 groups, 3 profiles"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "x.yaml",
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: x\nspec:\n  groups: [g]\n  mobileconfg: x\n",
    );
    let bad = std::process::Command::new(bin)
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(2), "{out}");
    // The file is named by the directory as given on the command line.
    let expected = format!(
        "{}/x.yaml:7: error: Profile: unknown field `mobileconfg`",
        dir.path().display()
    );
    assert!(out.contains(&expected), "{out}");
}

#[test]
fn restrictions_warn_only_about_platforms_their_groups_can_contain() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "r.yaml",
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata: {name: macs}\nspec:\n  selector:\n    matchLabels: {pomona.dev/platform: macOS}\n---\napiVersion: mdm.pomona.dev/v1alpha1\nkind: Restrictions\nmetadata: {name: r}\nspec:\n  groups: [macs]\n  settings:\n    allowCamera: false\n    allowAppRemoval: false\n",
    );
    let snapshot = load_dir(dir.path()).expect("warnings do not invalidate");
    let text: Vec<String> = snapshot.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        text.iter()
            .all(|w| w.contains("macOS") && !w.contains("watchOS")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|w| w.contains("allowAppRemoval")),
        "allowAppRemoval is iOS-only: expected a macOS warning in {text:#?}"
    );
}

#[test]
fn payloads_are_checked_against_apple_schemas_with_located_warnings() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wifi.yaml",
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata: {name: phones}\nspec:\n  selector:\n    matchLabels: {pomona.dev/platform: iOS}\n---\napiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {name: wifi}\nspec:\n  groups: [phones]\n  payloads:\n    - payloadType: com.apple.wifi.managed\n      content: {SSID_STR: Office, AutoJoin: 'yes', EncryptionType: WPA9}\n    - payloadType: com.apple.MCX.FileVault2\n      content: {Enable: 'On'}\n",
    );
    let snapshot = load_dir(dir.path()).expect("warnings do not invalidate");
    let text: Vec<String> = snapshot.warnings.iter().map(|w| w.to_string()).collect();
    let all = text.join("\n");
    for expected in [
        "spec.payloads[0]: com.apple.wifi.managed: AutoJoin should be a boolean but is a string",
        "spec.payloads[0]: com.apple.wifi.managed: EncryptionType is \"WPA9\"; allowed:",
        "spec.payloads[1]: com.apple.MCX.FileVault2 is not supported on iOS",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in\n{all}");
    }
    assert!(
        text.iter().all(|w| w.contains("wifi.yaml:")),
        "every warning names the file and line: {all}"
    );
}

#[test]
fn invalid_device_actions_are_refused_with_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/short.pin"), "12345\n").unwrap();
    std::fs::write(
        dir.path().join("actions.yaml"),
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceAction
metadata: {name: wipe}
spec:
  target: {serialNumber: C02XYZ}
  action: Erase
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceAction
metadata: {name: restart}
spec:
  target: {serialNumber: C02XYZ, udid: ABC}
  action: Restart
  message: hello
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceAction
metadata: {name: lock}
spec:
  target: {group: nowhere}
  action: Lock
  pin: {file: secrets/short.pin}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceAction
metadata: {name: lock-kube}
spec:
  target: {udid: ABC}
  action: Lock
  pin: {secretKeyRef: {name: pins, key: mac}}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceAction
metadata: {name: lost}
spec:
  target: {udid: ABC}
  action: EnableLostMode
  footnote: only a footnote
",
    )
    .unwrap();
    let problems: Vec<String> = load_dir(dir.path())
        .expect_err("invalid actions")
        .iter()
        .map(|p| p.to_string())
        .collect();
    let expect = [
        // spec.confirm is missing: the line of spec.
        ("actions.yaml:4: error: DeviceAction/wipe: spec.confirm: Erase wipes every targeted device; set confirm: \"C02XYZ\""),
        ("actions.yaml:12: error: DeviceAction/restart: spec.target: give exactly one of serialNumber, udid or group"),
        ("DeviceAction/restart: spec: message does not apply to Restart"),
        ("DeviceAction/lock: spec.target.group: DeviceGroup \"nowhere\" is not declared"),
        ("DeviceAction/lock: spec.pin: the PIN must be exactly six digits (the value is not shown)"),
        ("DeviceAction/lock-kube: spec.pin: secretKeyRef: key \"mac\" of Secret \"pins\" is not available"),
        ("DeviceAction/lost: spec: EnableLostMode needs a message or a phoneNumber"),
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "missing {e:?} in {problems:#?}"
        );
    }
    assert!(
        !problems.iter().any(|p| p.contains("12345")),
        "a PIN never appears in a problem"
    );
}
