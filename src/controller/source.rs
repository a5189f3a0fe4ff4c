//! Custom resources → `PolicySnapshot`, through the same builder and validation as the policy
//! directory (`policy::snapshot::build`). Kubernetes accepts objects one at a time, so one
//! invalid object must not block the others: objects whose problems the builder attributes to
//! them are set aside (their verdict says why) and the snapshot is rebuilt from the rest, until
//! it builds. Pure: no client, no clock.

use crate::policy::load::{Documents, Located, Problem, Severity};
use crate::policy::model::*;
use crate::policy::snapshot::{build, PolicySnapshot};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};

/// Identifies a custom resource: (kind, namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// The snapshot's profile key (`Profile/name`) for Profile and Restrictions objects.
    pub fn profile_key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// How problems locate the object (`namespace/name`, in place of a file).
    fn location(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One object as the source sees it.
#[derive(Debug, Clone)]
pub struct Object<S> {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    /// `metadata.deletionTimestamp` is set: it no longer contributes to the snapshot.
    pub deleting: bool,
    pub spec: S,
}

/// Every watched object, by kind.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub groups: Vec<Object<DeviceGroupSpec>>,
    pub profiles: Vec<Object<ProfileSpec>>,
    pub restrictions: Vec<Object<RestrictionsSpec>>,
    pub labels: Vec<Object<DeviceLabelsSpec>>,
    pub actions: Vec<Object<DeviceActionSpec>>,
    /// Values of the Secrets DeviceActions refer to, keyed by
    /// `policy::actions::secret_key(namespace, name, key)`.
    pub secrets: crate::policy::actions::SecretValues,
    /// Secrets DeviceActions refer to that could not be read, by (namespace, name): why (not
    /// found, forbidden…). Never a value.
    pub unreadable_secrets: BTreeMap<(String, String), String>,
}

/// The Secrets (namespace, name) that live DeviceActions refer to: what the controller reads,
/// each from the object's own namespace.
pub fn referenced_secrets(actions: &[Object<DeviceActionSpec>]) -> BTreeSet<(String, String)> {
    actions
        .iter()
        .filter(|o| !o.deleting)
        .filter_map(|o| {
            let r = o.spec.pin.as_ref()?.secret_key_ref.as_ref()?;
            Some((o.key.namespace.clone(), r.name.clone()))
        })
        .collect()
}

/// What is wrong with a DeviceAction's `spec.pin.secretKeyRef` as far as the Secrets read
/// tell: the Secret cannot be read, or lacks the key. The message names the Secret, the key
/// and the fix, never a value.
fn secret_problem(objects: &Objects, o: &Object<DeviceActionSpec>) -> Option<String> {
    let r = o.spec.pin.as_ref()?.secret_key_ref.as_ref()?;
    let ns = &o.key.namespace;
    if let Some(why) = objects
        .unreadable_secrets
        .get(&(ns.clone(), r.name.clone()))
    {
        return Some(format!(
            "spec.pin.secretKeyRef: Secret {ns}/{} {why}",
            r.name
        ));
    }
    let key = crate::policy::actions::secret_key(Some(ns), &r.name, &r.key);
    if objects.secrets.contains_key(&key) {
        return None;
    }
    Some(format!(
        "spec.pin.secretKeyRef: Secret {ns}/{} has no key {:?}: add it (a six-digit PIN) or \
         name an existing key in spec.pin.secretKeyRef.key",
        r.name, r.key
    ))
}

/// What the source concluded about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// In the snapshot, with these warnings.
    Accepted { warnings: Vec<String> },
    /// Left out: these errors (messages name the field and the fix).
    Invalid { errors: Vec<String> },
    /// Being deleted: left out so the reconciler removes it from devices.
    Deleting,
}

/// The result of building: the snapshot of every acceptable object, and a verdict per object
/// with the generation it describes.
#[derive(Debug, Clone)]
pub struct Built {
    pub snapshot: PolicySnapshot,
    pub verdicts: BTreeMap<ObjectKey, (Option<i64>, Verdict)>,
}

/// Builds a snapshot from whatever objects are valid; never fails as a whole.
pub fn build_snapshot(objects: &Objects) -> Built {
    let mut invalid: BTreeMap<ObjectKey, Vec<String>> = BTreeMap::new();
    for p in &objects.profiles {
        if p.spec.mobileconfig_file.is_some() {
            invalid.entry(p.key.clone()).or_default().push(
                "spec.mobileconfigFile is for policy directories: give the profile inline as \
                 spec.mobileconfig or as spec.payloads"
                    .into(),
            );
        }
    }
    for a in objects.actions.iter().filter(|a| !a.deleting) {
        if let Some(problem) = secret_problem(objects, a) {
            invalid.entry(a.key.clone()).or_default().push(problem);
        }
    }
    let all_keys: Vec<ObjectKey> = keys(objects).collect();
    // Each round sets aside at least one object, so this ends.
    for _ in 0..=all_keys.len() {
        let docs = documents(objects, |k| !invalid.contains_key(k));
        let revision = revision_of(objects, |k| !invalid.contains_key(k));
        match build(&docs, std::path::Path::new("/nonexistent"), revision) {
            Ok(snapshot) => {
                let mut warnings: BTreeMap<ObjectKey, Vec<String>> = BTreeMap::new();
                for w in &snapshot.warnings {
                    if let Some(key) = owner(&all_keys, w) {
                        warnings.entry(key).or_default().push(w.message.clone());
                    }
                }
                let verdicts = verdicts(objects, &invalid, &mut warnings);
                return Built { snapshot, verdicts };
            }
            Err(problems) => {
                let mut attributed = false;
                for p in problems.iter().filter(|p| p.severity == Severity::Error) {
                    if let Some(key) = owner(&all_keys, p) {
                        invalid.entry(key).or_default().push(p.message.clone());
                        attributed = true;
                    }
                }
                if !attributed {
                    // Not expected: every builder error names its document. Serve nothing
                    // new rather than guess; every object says why.
                    let text: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
                    for key in &all_keys {
                        invalid.entry(key.clone()).or_default().extend(text.clone());
                    }
                }
            }
        }
    }
    let verdicts = verdicts(objects, &invalid, &mut BTreeMap::new());
    Built {
        snapshot: PolicySnapshot {
            revision: "kube:none".into(),
            ..PolicySnapshot::default()
        },
        verdicts,
    }
}

fn keys(objects: &Objects) -> impl Iterator<Item = ObjectKey> + '_ {
    objects
        .groups
        .iter()
        .map(|o| o.key.clone())
        .chain(objects.profiles.iter().map(|o| o.key.clone()))
        .chain(objects.restrictions.iter().map(|o| o.key.clone()))
        .chain(objects.labels.iter().map(|o| o.key.clone()))
        .chain(objects.actions.iter().map(|o| o.key.clone()))
}

/// The object a problem is about: its `Kind/name` and its location (`namespace/name`).
fn owner(keys: &[ObjectKey], problem: &Problem) -> Option<ObjectKey> {
    let document = problem.document.as_deref()?;
    keys.iter()
        .find(|k| format!("{}/{}", k.kind, k.name) == document && k.location() == problem.file)
        .cloned()
}

fn verdicts(
    objects: &Objects,
    invalid: &BTreeMap<ObjectKey, Vec<String>>,
    warnings: &mut BTreeMap<ObjectKey, Vec<String>>,
) -> BTreeMap<ObjectKey, (Option<i64>, Verdict)> {
    let mut out = BTreeMap::new();
    let mut add = |key: &ObjectKey, generation: Option<i64>, deleting: bool| {
        let verdict = if let Some(errors) = invalid.get(key) {
            let mut errors = errors.clone();
            errors.dedup();
            Verdict::Invalid { errors }
        } else if deleting {
            Verdict::Deleting
        } else {
            Verdict::Accepted {
                warnings: warnings.remove(key).unwrap_or_default(),
            }
        };
        out.insert(key.clone(), (generation, verdict));
    };
    for o in &objects.groups {
        add(&o.key, o.generation, o.deleting);
    }
    for o in &objects.profiles {
        add(&o.key, o.generation, o.deleting);
    }
    for o in &objects.restrictions {
        add(&o.key, o.generation, o.deleting);
    }
    for o in &objects.labels {
        add(&o.key, o.generation, o.deleting);
    }
    for o in &objects.actions {
        add(&o.key, o.generation, o.deleting);
    }
    out
}

fn located<S: Clone>(o: &Object<S>) -> Located<S> {
    Located {
        file: o.key.location(),
        line: 0,
        doc: Document {
            api_version: API_VERSION.to_string(),
            kind: o.key.kind.to_string(),
            metadata: Metadata {
                name: o.key.name.clone(),
                namespace: Some(o.key.namespace.clone()),
                ..Metadata::default()
            },
            spec: o.spec.clone(),
        },
    }
}

fn documents(objects: &Objects, keep: impl Fn(&ObjectKey) -> bool) -> Documents {
    fn pick<S: Clone>(list: &[Object<S>], keep: &impl Fn(&ObjectKey) -> bool) -> Vec<Located<S>> {
        list.iter()
            .filter(|o| !o.deleting && keep(&o.key))
            .map(located)
            .collect()
    }
    Documents {
        groups: pick(&objects.groups, &keep),
        profiles: pick(&objects.profiles, &keep),
        restrictions: pick(&objects.restrictions, &keep),
        labels: pick(&objects.labels, &keep),
        actions: pick(&objects.actions, &keep),
        secrets: objects.secrets.clone(),
    }
}

/// A hash of the objects that make up the snapshot: unchanged objects, unchanged revision.
fn revision_of(objects: &Objects, keep: impl Fn(&ObjectKey) -> bool) -> String {
    let mut parts: Vec<(ObjectKey, String)> = Vec::new();
    fn add<S: serde::Serialize>(
        parts: &mut Vec<(ObjectKey, String)>,
        list: &[Object<S>],
        keep: &impl Fn(&ObjectKey) -> bool,
    ) {
        for o in list.iter().filter(|o| !o.deleting && keep(&o.key)) {
            parts.push((
                o.key.clone(),
                serde_json::to_string(&o.spec).unwrap_or_default(),
            ));
        }
    }
    add(&mut parts, &objects.groups, &keep);
    add(&mut parts, &objects.profiles, &keep);
    add(&mut parts, &objects.restrictions, &keep);
    add(&mut parts, &objects.labels, &keep);
    add(&mut parts, &objects.actions, &keep);
    parts.sort();
    let mut hash = sha2::Sha256::new();
    for (key, spec) in &parts {
        hash.update(key.to_string().as_bytes());
        hash.update([0]);
        hash.update(spec.as_bytes());
        hash.update([0]);
    }
    format!("kube:{}", &hex::encode(hash.finalize())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &'static str, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: "mdm".into(),
            name: name.into(),
        }
    }

    fn object<S>(kind: &'static str, name: &str, spec: S) -> Object<S> {
        Object {
            key: key(kind, name),
            generation: Some(1),
            deleting: false,
            spec,
        }
    }

    fn everyone() -> DeviceGroupSpec {
        DeviceGroupSpec {
            selector: Some(LabelSelector::default()),
            ..DeviceGroupSpec::default()
        }
    }

    fn wifi(groups: &[&str]) -> ProfileSpec {
        ProfileSpec {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            payloads: Some(vec![PayloadSpec {
                payload_type: "com.apple.wifi.managed".into(),
                identifier: None,
                content: [("SSID_STR".to_string(), serde_json::json!("Office"))].into(),
            }]),
            ..ProfileSpec::default()
        }
    }

    #[test]
    fn an_invalid_object_is_set_aside_and_the_others_are_served() {
        let objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![
                object("Profile", "wifi", wifi(&["everyone"])),
                object("Profile", "typo", wifi(&["everyon"])),
                object(
                    "Profile",
                    "empty",
                    ProfileSpec {
                        groups: vec!["everyone".into()],
                        ..ProfileSpec::default()
                    },
                ),
            ],
            ..Objects::default()
        };
        let built = build_snapshot(&objects);
        assert_eq!(
            built.snapshot.profiles.keys().collect::<Vec<_>>(),
            ["Profile/wifi"]
        );
        let (_, typo) = &built.verdicts[&key("Profile", "typo")];
        match typo {
            Verdict::Invalid { errors } => assert!(
                errors[0].contains("DeviceGroup \"everyon\" is not declared"),
                "{errors:?}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &built.verdicts[&key("Profile", "empty")].1,
            Verdict::Invalid { errors } if errors[0].contains("exactly one of")
        ));
        assert_eq!(
            built.verdicts[&key("Profile", "wifi")].1,
            Verdict::Accepted { warnings: vec![] }
        );
    }

    #[test]
    fn an_invalid_group_stalls_the_profiles_that_need_it() {
        let objects = Objects {
            groups: vec![object("DeviceGroup", "nobody", DeviceGroupSpec::default())],
            profiles: vec![object("Profile", "wifi", wifi(&["nobody"]))],
            ..Objects::default()
        };
        let built = build_snapshot(&objects);
        assert!(built.snapshot.profiles.is_empty());
        assert!(matches!(
            &built.verdicts[&key("DeviceGroup", "nobody")].1,
            Verdict::Invalid { errors } if errors[0].contains("needs a selector")
        ));
        assert!(matches!(
            &built.verdicts[&key("Profile", "wifi")].1,
            Verdict::Invalid { .. }
        ));
    }

    #[test]
    fn deleting_objects_leave_the_snapshot_and_the_revision_follows_content() {
        let mut objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![object("Profile", "wifi", wifi(&["everyone"]))],
            ..Objects::default()
        };
        let first = build_snapshot(&objects);
        assert_eq!(first.revision(), build_snapshot(&objects).revision());
        objects.profiles[0].deleting = true;
        let second = build_snapshot(&objects);
        assert!(second.snapshot.profiles.is_empty());
        assert_ne!(first.revision(), second.revision());
        assert_eq!(
            second.verdicts[&key("Profile", "wifi")].1,
            Verdict::Deleting
        );
    }

    #[test]
    fn mobileconfig_files_are_refused_with_the_fix() {
        let mut spec = wifi(&["everyone"]);
        spec.payloads = None;
        spec.mobileconfig_file = Some("wifi.mobileconfig".into());
        let objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![object("Profile", "wifi", spec)],
            ..Objects::default()
        };
        let built = build_snapshot(&objects);
        assert!(matches!(
            &built.verdicts[&key("Profile", "wifi")].1,
            Verdict::Invalid { errors } if errors[0].contains("spec.mobileconfig or as spec.payloads")
        ));
    }

    fn lock(secret: &str, key: &str) -> DeviceActionSpec {
        DeviceActionSpec {
            target: ActionTargetSpec {
                serial_number: Some("C02MAC000001".into()),
                ..ActionTargetSpec::default()
            },
            action: ActionKind::Lock,
            pin: Some(SecretSource {
                file: None,
                secret_key_ref: Some(SecretKeyRef {
                    name: secret.into(),
                    key: key.into(),
                }),
            }),
            ..DeviceActionSpec::default()
        }
    }

    type SecretEntry = ((String, String), crate::policy::actions::Secret);

    fn secret(namespace: &str, name: &str, key: &str, value: &str) -> SecretEntry {
        (
            crate::policy::actions::secret_key(Some(namespace), name, key),
            crate::policy::actions::Secret::new(value),
        )
    }

    fn with_secrets(actions: Vec<Object<DeviceActionSpec>>, secrets: &[SecretEntry]) -> Objects {
        Objects {
            actions,
            secrets: secrets.iter().cloned().collect(),
            ..Objects::default()
        }
    }

    #[test]
    fn a_device_action_takes_its_pin_from_a_secret_of_its_own_namespace() {
        let objects = with_secrets(
            vec![object("DeviceAction", "lock-mac", lock("lock-pin", "pin"))],
            &[secret("mdm", "lock-pin", "pin", "246801")],
        );
        let built = build_snapshot(&objects);
        assert_eq!(
            built.verdicts[&key("DeviceAction", "lock-mac")].1,
            Verdict::Accepted { warnings: vec![] }
        );
        let action = &built.snapshot.actions["DeviceAction/lock-mac"];
        assert_eq!(
            action.spec.params.pin.as_ref().map(|p| p.expose()),
            Some("246801")
        );
        assert!(!built.snapshot.revision.contains("246801"));
    }

    #[test]
    fn a_secret_of_another_namespace_is_never_used() {
        // Same Secret name and key, but in namespace "other": the action in "mdm" cannot see it.
        let objects = with_secrets(
            vec![object("DeviceAction", "lock-mac", lock("lock-pin", "pin"))],
            &[secret("other", "lock-pin", "pin", "246801")],
        );
        let built = build_snapshot(&objects);
        assert!(built.snapshot.actions.is_empty());
        match &built.verdicts[&key("DeviceAction", "lock-mac")].1 {
            Verdict::Invalid { errors } => {
                assert!(
                    errors[0].contains("Secret mdm/lock-pin has no key \"pin\""),
                    "{errors:?}"
                );
                assert!(!errors.join(" ").contains("246801"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreadable_secret_or_a_missing_key_is_named_without_its_value() {
        let mut objects = with_secrets(
            vec![
                object("DeviceAction", "no-secret", lock("absent", "pin")),
                object("DeviceAction", "no-key", lock("lock-pin", "code")),
            ],
            &[secret("mdm", "lock-pin", "pin", "135790")],
        );
        objects.unreadable_secrets.insert(
            ("mdm".into(), "absent".into()),
            "does not exist: create it".into(),
        );
        let built = build_snapshot(&objects);
        let errors = |name: &str| match &built.verdicts[&key("DeviceAction", name)].1 {
            Verdict::Invalid { errors } => errors.join("; "),
            other => panic!("{other:?}"),
        };
        assert!(
            errors("no-secret").contains("spec.pin.secretKeyRef: Secret mdm/absent does not exist"),
            "{}",
            errors("no-secret")
        );
        assert!(
            errors("no-key").contains("has no key \"code\""),
            "{}",
            errors("no-key")
        );
        assert!(!errors("no-key").contains("135790"));
        // A PIN that is not six digits is refused without being shown.
        let objects = with_secrets(
            vec![object("DeviceAction", "lock-mac", lock("lock-pin", "pin"))],
            &[secret("mdm", "lock-pin", "pin", "12ab")],
        );
        let built = build_snapshot(&objects);
        match &built.verdicts[&key("DeviceAction", "lock-mac")].1 {
            Verdict::Invalid { errors } => {
                assert!(errors[0].contains("six digits"), "{errors:?}");
                assert!(!errors[0].contains("12ab"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            referenced_secrets(&objects.actions)
                .into_iter()
                .collect::<Vec<_>>(),
            [("mdm".to_string(), "lock-pin".to_string())]
        );
    }

    impl Built {
        fn revision(&self) -> &str {
            &self.snapshot.revision
        }
    }
}
