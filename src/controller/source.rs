//! Custom resources → `PolicySnapshot`, through the same builder and validation as the policy
//! directory (`policy::snapshot::build`), one namespace at a time (`namespaced.rs`). Kubernetes
//! accepts objects one at a time, so one invalid object must not block the others, and must
//! not take away what it gave: an object whose current generation cannot be served keeps its
//! last good spec in force (`last_good.rs`), its verdict says why, and only one that never had
//! a good spec is left out. Deleting an object is what removes it. Pure: no client, no clock.

use super::last_good::{self, Choice, Entry};
use super::namespaced::{self, Outcome};
use crate::policy::crd::InForce;
use crate::policy::model::*;
use crate::policy::snapshot::PolicySnapshot;
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
    /// `namespace/name`: how the snapshot names a DeviceGroup, and how messages name objects.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The snapshot's key for a Profile, Restrictions or DeviceAction: `Kind/namespace/name`
    /// (what the store records devices' profiles and actions under).
    pub fn snapshot_key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
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
    /// `metadata.uid`: an object deleted and created again under its name starts afresh.
    pub uid: String,
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`, in ms.
    pub created: i64,
    /// `metadata.deletionTimestamp` is set: it no longer contributes to the snapshot.
    pub deleting: bool,
    pub spec: S,
    /// `status.inForce`: the spec it last had accepted, as the leader wrote it.
    pub persisted: Option<InForce>,
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
    /// In the snapshot, but DeviceGroups it targets are gone (deleted, or no longer valid):
    /// their last definitions stay in force for this object.
    GroupsMissing {
        groups: Vec<String>,
        warnings: Vec<String>,
    },
    /// The current generation is refused (the messages name the field and the fix);
    /// `in_force`: the generation devices keep getting instead, if there is one.
    Invalid {
        errors: Vec<String>,
        in_force: Option<i64>,
    },
    /// Being deleted: left out so the reconciler removes it from devices.
    Deleting,
}

/// What each object has in force, by object: carried from one build to the next, and written
/// to the objects' status so that a restarted controller starts from it.
pub type Memory = BTreeMap<ObjectKey, Remembered>;

/// The spec one object has in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// The object it belongs to (`metadata.uid`).
    pub uid: String,
    pub in_force: InForce,
}

/// The result of building: the snapshot, a verdict per object with the generation it
/// describes, and what each object has in force.
#[derive(Debug, Clone)]
pub struct Built {
    pub snapshot: PolicySnapshot,
    pub verdicts: BTreeMap<ObjectKey, (Option<i64>, Verdict)>,
    pub in_force: Memory,
}

/// Builds a snapshot from the objects, each with the spec it can serve (see `last_good.rs`),
/// given what was in force before (`memory`). Err only for a problem no object owns: then
/// nothing new should be served (the messages say what happened).
pub fn build_snapshot(objects: &Objects, memory: &Memory) -> Result<Built, Vec<String>> {
    let mut entries = last_good::entries(objects, memory);
    for e in entries.iter_mut().filter(|e| !e.deleting) {
        if let last_good::Spec::Profile(spec) = &e.current {
            if spec.mobileconfig_file.is_some() {
                e.demote(
                    "spec.mobileconfigFile is for policy directories: give the profile inline as \
                     spec.mobileconfig or as spec.payloads"
                        .into(),
                );
            }
        }
    }
    for a in objects.actions.iter().filter(|a| !a.deleting) {
        if let Some(problem) = secret_problem(objects, a) {
            if let Some(e) = entries.iter_mut().find(|e| e.key == a.key) {
                e.demote(problem);
            }
        }
    }
    // A namespace's build depends on its own objects only: after a round, only the namespaces
    // of objects that fell back are built again.
    let mut unbuilt: BTreeSet<String> = entries.iter().map(|e| e.key.namespace.clone()).collect();
    let mut built: BTreeMap<String, namespaced::Part> = BTreeMap::new();
    // Each round without a result sets one object at least one step back (current → last
    // good → out), so this ends.
    for _ in 0..=2 * entries.len() + 1 {
        let before: Vec<Choice> = entries.iter().map(|e| e.choice).collect();
        if last_good::settle_identifiers(&mut entries) {
            unbuilt.extend(changed_namespaces(&entries, &before));
            continue;
        }
        let mut fall_back = Vec::new();
        for namespace in std::mem::take(&mut unbuilt) {
            match namespaced::build_namespace(&namespace, &entries, &objects.secrets) {
                Outcome::Built(part) => {
                    built.insert(namespace, *part);
                }
                Outcome::FallBack(found) => {
                    fall_back.extend(found);
                    // Never left out of the snapshot: built again next round.
                    unbuilt.insert(namespace);
                }
                Outcome::Refused(problems) => return Err(problems),
            }
        }
        if fall_back.is_empty() {
            diagnose(&mut entries, &objects.secrets);
            return Ok(finish(entries, built.into_values().collect()));
        }
        for (i, why) in fall_back {
            entries[i].demote(why);
        }
        unbuilt.extend(changed_namespaces(&entries, &before));
    }
    Err(vec![
        "the custom resources could not be settled into a snapshot (a bug): the previous \
         snapshot keeps serving"
            .into(),
    ])
}

/// The namespaces of the entries whose choice differs from `before`.
fn changed_namespaces(entries: &[Entry], before: &[Choice]) -> Vec<String> {
    entries
        .iter()
        .zip(before)
        .filter(|(e, choice)| e.choice != **choice)
        .map(|(e, _)| e.key.namespace.clone())
        .collect()
}

/// An object refused for an identifier another object owns was never built: build its
/// namespace once more with its current spec in and the owner out, so that its status lists
/// every problem at once rather than one per edit.
fn diagnose(entries: &mut [Entry], secrets: &crate::policy::actions::SecretValues) {
    for i in 0..entries.len() {
        if !entries[i].lost_identifier {
            continue;
        }
        let mut trial = entries.to_vec();
        let mine = trial[i].current.identifier(&trial[i].key.name);
        for (j, other) in trial.iter_mut().enumerate() {
            let theirs = other
                .spec_in_use()
                .and_then(|s| s.identifier(&other.key.name));
            if j != i && theirs.is_some() && theirs == mine {
                other.choice = Choice::Out;
            }
        }
        trial[i].choice = Choice::Current;
        let namespace = trial[i].key.namespace.clone();
        if let Outcome::FallBack(found) = namespaced::build_namespace(&namespace, &trial, secrets) {
            let more = found
                .into_iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, why)| why);
            entries[i].errors.extend(more);
        }
    }
}

/// The snapshot of the namespaces built, the verdicts and what is in force.
fn finish(entries: Vec<Entry>, parts: Vec<namespaced::Part>) -> Built {
    let mut snapshot = PolicySnapshot::default();
    let mut kept_groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut warnings: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut groups_by_namespace: BTreeMap<String, BTreeMap<String, DeviceGroupSpec>> =
        BTreeMap::new();
    for part in parts {
        kept_groups.extend(part.kept_groups);
        warnings.extend(part.warnings);
        groups_by_namespace.insert(part.namespace.clone(), part.snapshot.groups.clone());
        namespaced::merge(&mut snapshot, &part.namespace, part.snapshot);
    }
    snapshot.revision = revision_of(&entries, &kept_groups);

    let mut verdicts = BTreeMap::new();
    let mut in_force = Memory::new();
    for (i, e) in entries.iter().enumerate() {
        let verdict = if e.deleting {
            Verdict::Deleting
        } else if e.choice != Choice::Current {
            let mut errors = e.errors.clone();
            errors.dedup();
            Verdict::Invalid {
                errors,
                in_force: (e.choice == Choice::LastGood)
                    .then(|| e.generation_in_use())
                    .flatten(),
            }
        } else {
            let warnings = warnings.remove(&i).unwrap_or_default();
            match kept_groups.get(&i) {
                Some(groups) => Verdict::GroupsMissing {
                    groups: groups.clone(),
                    warnings,
                },
                None => Verdict::Accepted { warnings },
            }
        };
        verdicts.insert(e.key.clone(), (e.generation, verdict));
        let Some(spec) = e.spec_in_use() else {
            continue;
        };
        if matches!(spec, last_good::Spec::Action(_)) {
            continue; // actions are not remembered (see `last_good.rs`)
        }
        let resolved = groups_by_namespace.get(&e.key.namespace);
        let groups = spec
            .groups()
            .iter()
            .filter_map(|g| {
                let definition = resolved?.get(g)?;
                Some((g.clone(), serde_json::to_value(definition).ok()?))
            })
            .collect();
        in_force.insert(
            e.key.clone(),
            Remembered {
                uid: e.uid.clone(),
                in_force: InForce {
                    generation: e.generation_in_use(),
                    spec: spec.to_json(),
                    groups,
                },
            },
        );
    }
    Built {
        snapshot,
        verdicts,
        in_force,
    }
}

/// A hash of what the snapshot is made of: the spec each object has in use, and the groups
/// kept for objects whose groups are gone. Unchanged content, unchanged revision.
fn revision_of(entries: &[Entry], kept_groups: &BTreeMap<usize, Vec<String>>) -> String {
    let mut parts: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| Some((e.key.to_string(), e.spec_in_use()?.to_json().to_string())))
        .collect();
    for (&i, groups) in kept_groups {
        let e = &entries[i];
        for g in groups {
            let definition = e
                .remembered_group(g)
                .and_then(|d| serde_json::to_string(d).ok());
            parts.push((
                format!("{} keeps DeviceGroup {}/{g}", e.key, e.key.namespace),
                definition.unwrap_or_default(),
            ));
        }
    }
    parts.sort();
    let mut hash = sha2::Sha256::new();
    for (key, spec) in &parts {
        hash.update(key.as_bytes());
        hash.update([0]);
        hash.update(spec.as_bytes());
        hash.update([0]);
    }
    format!("kube:{}", &hex::encode(hash.finalize())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_in(namespace: &str, kind: &'static str, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn key(kind: &'static str, name: &str) -> ObjectKey {
        key_in("mdm", kind, name)
    }

    fn object_in<S>(namespace: &str, kind: &'static str, name: &str, spec: S) -> Object<S> {
        Object {
            key: key_in(namespace, kind, name),
            uid: format!("uid-{namespace}-{name}"),
            generation: Some(1),
            created: 0,
            deleting: false,
            spec,
            persisted: None,
        }
    }

    fn object<S>(kind: &'static str, name: &str, spec: S) -> Object<S> {
        object_in("mdm", kind, name, spec)
    }

    /// A build with nothing in force before.
    fn build(objects: &Objects) -> Built {
        build_snapshot(objects, &Memory::new()).expect("builds")
    }

    /// The next build, after `before`.
    fn rebuild(objects: &Objects, before: &Built) -> Built {
        build_snapshot(objects, &before.in_force).expect("builds")
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

    fn verdict<'a>(built: &'a Built, key: &ObjectKey) -> &'a Verdict {
        &built.verdicts[key].1
    }

    fn errors(built: &Built, key: &ObjectKey) -> String {
        match verdict(built, key) {
            Verdict::Invalid { errors, .. } => errors.join("; "),
            other => panic!("{key}: {other:?}"),
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
        let built = build(&objects);
        assert_eq!(
            built.snapshot.profiles.keys().collect::<Vec<_>>(),
            ["Profile/mdm/wifi"]
        );
        assert_eq!(
            built.snapshot.profiles["Profile/mdm/wifi"].groups,
            ["mdm/everyone"]
        );
        assert!(errors(&built, &key("Profile", "typo"))
            .contains("DeviceGroup \"everyon\" is not declared"));
        assert!(errors(&built, &key("Profile", "empty")).contains("exactly one of"));
        assert_eq!(
            verdict(&built, &key("Profile", "typo")),
            &Verdict::Invalid {
                errors: vec![errors(&built, &key("Profile", "typo"))],
                in_force: None
            },
            "never accepted: nothing in force"
        );
        assert_eq!(
            verdict(&built, &key("Profile", "wifi")),
            &Verdict::Accepted { warnings: vec![] }
        );
    }

    #[test]
    fn a_typo_keeps_the_last_good_spec_in_force() {
        let mut objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![object("Profile", "wifi", wifi(&["everyone"]))],
            ..Objects::default()
        };
        let good = build(&objects);
        let served = good.snapshot.profiles["Profile/mdm/wifi"].clone();
        objects.profiles[0].spec = wifi(&["everyon"]);
        objects.profiles[0].generation = Some(2);
        let typo = rebuild(&objects, &good);
        assert_eq!(typo.snapshot.profiles["Profile/mdm/wifi"], served);
        assert_eq!(
            typo.revision(),
            good.revision(),
            "nothing changed for devices"
        );
        match verdict(&typo, &key("Profile", "wifi")) {
            Verdict::Invalid { errors, in_force } => {
                assert!(
                    errors[0].contains("\"everyon\" is not declared"),
                    "{errors:?}"
                );
                assert_eq!(*in_force, Some(1));
            }
            other => panic!("{other:?}"),
        }
        let remembered = &typo.in_force[&key("Profile", "wifi")].in_force;
        assert_eq!(remembered.generation, Some(1));
        assert_eq!(remembered.spec["groups"], serde_json::json!(["everyone"]));
        // Still refused on the next build: still generation 1.
        let again = rebuild(&objects, &typo);
        assert_eq!(again.snapshot.profiles["Profile/mdm/wifi"], served);
        // Fixed: generation 3 is in force.
        objects.profiles[0].spec = wifi(&["everyone"]);
        objects.profiles[0].generation = Some(3);
        let fixed = rebuild(&objects, &again);
        assert_eq!(
            verdict(&fixed, &key("Profile", "wifi")),
            &Verdict::Accepted { warnings: vec![] }
        );
        assert_eq!(
            fixed.in_force[&key("Profile", "wifi")].in_force.generation,
            Some(3)
        );
    }

    #[test]
    fn after_a_restart_the_last_good_spec_comes_from_status() {
        let mut objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![object("Profile", "wifi", wifi(&["everyone"]))],
            ..Objects::default()
        };
        let good = build(&objects);
        let served = good.snapshot.profiles["Profile/mdm/wifi"].clone();
        // What the leader wrote to status.inForce; then a typo, and a fresh process.
        objects.profiles[0].persisted =
            Some(good.in_force[&key("Profile", "wifi")].in_force.clone());
        objects.groups[0].persisted = Some(
            good.in_force[&key("DeviceGroup", "everyone")]
                .in_force
                .clone(),
        );
        objects.profiles[0].spec = wifi(&["everyon"]);
        objects.profiles[0].generation = Some(2);
        let restarted = build(&objects);
        assert_eq!(restarted.snapshot.profiles["Profile/mdm/wifi"], served);
        // Even with its group deleted meanwhile: the profile's own copy of it serves.
        objects.groups.clear();
        let restarted = build(&objects);
        assert_eq!(restarted.snapshot.profiles["Profile/mdm/wifi"], served);
        assert_eq!(restarted.snapshot.groups["mdm/everyone"], everyone());
    }

    #[test]
    fn an_object_created_again_under_its_name_starts_afresh() {
        let mut objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![object("Profile", "wifi", wifi(&["everyone"]))],
            ..Objects::default()
        };
        let good = build(&objects);
        objects.profiles[0].uid = "another".into();
        objects.profiles[0].spec = wifi(&["everyon"]);
        let recreated = rebuild(&objects, &good);
        assert!(recreated.snapshot.profiles.is_empty());
        assert!(matches!(
            verdict(&recreated, &key("Profile", "wifi")),
            Verdict::Invalid { in_force: None, .. }
        ));
    }

    #[test]
    fn an_invalid_group_keeps_its_last_good_definition() {
        let mut objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![object("Profile", "wifi", wifi(&["everyone"]))],
            ..Objects::default()
        };
        let good = build(&objects);
        objects.groups[0].spec = DeviceGroupSpec::default();
        objects.groups[0].generation = Some(2);
        let bad = rebuild(&objects, &good);
        assert_eq!(bad.snapshot, good.snapshot);
        assert!(errors(&bad, &key("DeviceGroup", "everyone")).contains("needs a selector"));
        assert_eq!(
            verdict(&bad, &key("Profile", "wifi")),
            &Verdict::Accepted { warnings: vec![] },
            "the profile is not affected"
        );
    }

    #[test]
    fn an_invalid_group_stalls_the_new_profiles_that_need_it() {
        let objects = Objects {
            groups: vec![object("DeviceGroup", "nobody", DeviceGroupSpec::default())],
            profiles: vec![object("Profile", "wifi", wifi(&["nobody"]))],
            ..Objects::default()
        };
        let built = build(&objects);
        assert!(built.snapshot.profiles.is_empty());
        assert!(errors(&built, &key("DeviceGroup", "nobody")).contains("needs a selector"));
        assert!(matches!(
            verdict(&built, &key("Profile", "wifi")),
            Verdict::Invalid { .. }
        ));
    }

    #[test]
    fn a_deleted_group_stays_in_force_for_the_profiles_that_used_it_and_no_others() {
        let mut objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![object("Profile", "wifi", wifi(&["everyone"]))],
            ..Objects::default()
        };
        let good = build(&objects);
        objects.groups.clear();
        objects
            .profiles
            .push(object("Profile", "late", wifi(&["everyone"])));
        let gone = rebuild(&objects, &good);
        assert_eq!(
            gone.snapshot.profiles["Profile/mdm/wifi"],
            good.snapshot.profiles["Profile/mdm/wifi"]
        );
        assert_eq!(gone.snapshot.groups["mdm/everyone"], everyone());
        assert_eq!(
            verdict(&gone, &key("Profile", "wifi")),
            &Verdict::GroupsMissing {
                groups: vec!["everyone".into()],
                warnings: vec![]
            }
        );
        assert!(errors(&gone, &key("Profile", "late")).contains("\"everyone\" is not declared"));
        assert_ne!(gone.revision(), good.revision());
        // The copy is kept from build to build, and the group created again replaces it.
        let still = rebuild(&objects, &gone);
        assert_eq!(still.revision(), gone.revision());
        let mut lab = everyone();
        lab.serial_numbers = vec!["C02LAB".into()];
        objects
            .groups
            .push(object("DeviceGroup", "everyone", lab.clone()));
        let back = rebuild(&objects, &still);
        assert_eq!(back.snapshot.groups["mdm/everyone"], lab);
        assert_eq!(
            verdict(&back, &key("Profile", "wifi")),
            &Verdict::Accepted { warnings: vec![] }
        );
    }

    #[test]
    fn deleting_objects_leave_the_snapshot_and_the_revision_follows_content() {
        let mut objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![object("Profile", "wifi", wifi(&["everyone"]))],
            ..Objects::default()
        };
        let first = build(&objects);
        assert_eq!(first.revision(), build(&objects).revision());
        objects.profiles[0].deleting = true;
        let second = rebuild(&objects, &first);
        assert!(second.snapshot.profiles.is_empty());
        assert_ne!(first.revision(), second.revision());
        assert_eq!(
            verdict(&second, &key("Profile", "wifi")),
            &Verdict::Deleting
        );
        assert!(!second.in_force.contains_key(&key("Profile", "wifi")));
    }

    #[test]
    fn namespaces_keep_their_names_to_themselves() {
        let nobody = DeviceGroupSpec {
            udids: vec!["NOBODY".into()],
            ..DeviceGroupSpec::default()
        };
        let mut twin = wifi(&["everyone"]);
        twin.identifier = Some("dev.pomona.other.wifi".into());
        let objects = Objects {
            groups: vec![
                object("DeviceGroup", "everyone", everyone()),
                object_in("other", "DeviceGroup", "everyone", nobody.clone()),
            ],
            profiles: vec![
                object("Profile", "wifi", wifi(&["everyone"])),
                object_in("other", "Profile", "wifi", twin),
                object_in("other", "Profile", "typo", wifi(&["missing"])),
            ],
            ..Objects::default()
        };
        let built = build(&objects);
        assert_eq!(built.snapshot.groups["mdm/everyone"], everyone());
        assert_eq!(built.snapshot.groups["other/everyone"], nobody);
        assert_eq!(
            built.snapshot.profiles["Profile/mdm/wifi"].groups,
            ["mdm/everyone"]
        );
        assert_eq!(
            built.snapshot.profiles["Profile/other/wifi"].groups,
            ["other/everyone"]
        );
        for k in [
            key("DeviceGroup", "everyone"),
            key_in("other", "DeviceGroup", "everyone"),
            key("Profile", "wifi"),
            key_in("other", "Profile", "wifi"),
        ] {
            assert_eq!(
                verdict(&built, &k),
                &Verdict::Accepted { warnings: vec![] },
                "{k}"
            );
        }
        assert!(errors(&built, &key_in("other", "Profile", "typo")).contains("\"missing\""));
    }

    #[test]
    fn an_identifier_stays_with_the_profile_that_has_it() {
        let mut older = object("Profile", "wifi", wifi(&["everyone"]));
        older.created = 1_000;
        let mut newer = object_in("other", "Profile", "wifi", wifi(&["everyone"]));
        newer.created = 2_000;
        let mut objects = Objects {
            groups: vec![
                object("DeviceGroup", "everyone", everyone()),
                object_in("other", "DeviceGroup", "everyone", everyone()),
            ],
            profiles: vec![newer, older],
            ..Objects::default()
        };
        let built = build(&objects);
        assert!(built.snapshot.profiles.contains_key("Profile/mdm/wifi"));
        assert!(!built.snapshot.profiles.contains_key("Profile/other/wifi"));
        let clash = errors(&built, &key_in("other", "Profile", "wifi"));
        assert!(
            clash.contains("\"dev.pomona.wifi\" is already used by Profile mdm/wifi")
                && clash.contains("spec.identifier"),
            "{clash}"
        );
        // The one devices have keeps it even against an older object that wants it later.
        let mut own = wifi(&["everyone"]);
        own.identifier = Some("dev.pomona.other.wifi".into());
        objects.profiles[0].spec = own;
        let both = build(&objects);
        objects.profiles[1].spec.identifier = Some("dev.pomona.other.wifi".into());
        objects.profiles[1].generation = Some(2);
        let later = rebuild(&objects, &both);
        assert!(
            later.snapshot.profiles["Profile/other/wifi"].identifier == "dev.pomona.other.wifi"
        );
        assert_eq!(
            later.snapshot.profiles["Profile/mdm/wifi"].identifier, "dev.pomona.wifi",
            "the older object keeps its last good identifier"
        );
        assert!(matches!(
            verdict(&later, &key("Profile", "wifi")),
            Verdict::Invalid {
                in_force: Some(1),
                ..
            }
        ));
    }

    #[test]
    fn a_profile_refused_for_its_identifier_lists_its_other_problems_too() {
        let mut older = object("Profile", "wifi", wifi(&["everyone"]));
        older.created = 1_000;
        let mut newer = object_in("other", "Profile", "wifi", wifi(&["missing"]));
        newer.created = 2_000;
        let objects = Objects {
            groups: vec![object("DeviceGroup", "everyone", everyone())],
            profiles: vec![older, newer],
            ..Objects::default()
        };
        let built = build(&objects);
        let problems = errors(&built, &key_in("other", "Profile", "wifi"));
        assert!(
            problems.contains("is already used by Profile mdm/wifi")
                && problems.contains("DeviceGroup \"missing\" is not declared"),
            "{problems}"
        );
        assert_eq!(
            verdict(&built, &key("Profile", "wifi")),
            &Verdict::Accepted { warnings: vec![] }
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
        let built = build(&objects);
        assert!(errors(&built, &key("Profile", "wifi"))
            .contains("spec.mobileconfig or as spec.payloads"));
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
        let built = build(&objects);
        assert_eq!(
            built.verdicts[&key("DeviceAction", "lock-mac")].1,
            Verdict::Accepted { warnings: vec![] }
        );
        let action = &built.snapshot.actions["DeviceAction/mdm/lock-mac"];
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
        let built = build(&objects);
        assert!(built.snapshot.actions.is_empty());
        match &built.verdicts[&key("DeviceAction", "lock-mac")].1 {
            Verdict::Invalid { errors, .. } => {
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
        let built = build(&objects);
        let errors = |name: &str| match &built.verdicts[&key("DeviceAction", name)].1 {
            Verdict::Invalid { errors, .. } => errors.join("; "),
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
        let built = build(&objects);
        match &built.verdicts[&key("DeviceAction", "lock-mac")].1 {
            Verdict::Invalid { errors, .. } => {
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
