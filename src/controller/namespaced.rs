//! Namespaces keep their names to themselves: each namespace's objects are built on their own
//! by the policy builder (so a group named in a Profile resolves in the Profile's namespace,
//! and `mdm2/everyone` is no twin of `mdm/everyone`), and the results are merged into one
//! snapshot under qualified names — groups as `namespace/name`, profiles and actions as
//! `Kind/namespace/name`. A group a Profile still needs but that is gone is built from the
//! Profile's own copy of it (see `last_good.rs`). Problems the builder finds are handed back
//! to the objects they are about. Pure.

use super::last_good::{Choice, Entry, Spec};
use crate::policy::actions::ActionTarget;
use crate::policy::load::{Documents, Located, Severity};
use crate::policy::model::*;
use crate::policy::snapshot::{build, PolicySnapshot, ProfileOrigin};
use std::collections::{BTreeMap, BTreeSet};

/// One namespace, built.
pub(super) struct Part {
    pub namespace: String,
    pub snapshot: PolicySnapshot,
    /// Entry → the groups it targets that are gone, kept from its own copy.
    pub kept_groups: BTreeMap<usize, Vec<String>>,
    /// Entry → warnings about it.
    pub warnings: BTreeMap<usize, Vec<String>>,
}

/// What building one namespace came to.
pub(super) enum Outcome {
    Built(Box<Part>),
    /// These entries cannot be served as they are (entry, why).
    FallBack(Vec<(usize, String)>),
    /// A problem no object owns: nothing new should be served (every builder problem names its
    /// document, so this is not expected).
    Refused(Vec<String>),
}

/// Builds the objects of `namespace` from the specs `entries` have in use.
pub(super) fn build_namespace(namespace: &str, entries: &[Entry], secrets: &Secrets) -> Outcome {
    let mut input = Input::gather(namespace, entries, secrets);
    let not_theirs = input.kept_group_misuse(entries);
    if !not_theirs.is_empty() {
        return Outcome::FallBack(not_theirs);
    }
    for (name, definition) in std::mem::take(&mut input.kept) {
        let file = format!("{namespace}/{name}");
        input
            .docs
            .groups
            .push(document(&file, "DeviceGroup", namespace, &name, definition));
    }
    match build(&input.docs, &crate::policy::files::NoFiles, String::new()) {
        Ok(snapshot) => {
            let mut warnings: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for w in &snapshot.warnings {
                for &i in input.owners_of(w.document.as_deref()) {
                    if entries[i].choice == Choice::Current {
                        warnings.entry(i).or_default().push(w.message.clone());
                    }
                }
            }
            Outcome::Built(Box::new(Part {
                namespace: namespace.to_string(),
                snapshot,
                kept_groups: input.kept_groups,
                warnings,
            }))
        }
        Err(problems) => {
            let mut fall_back = Vec::new();
            let mut unowned = Vec::new();
            for p in problems.iter().filter(|p| p.severity == Severity::Error) {
                let owners = input.owners_of(p.document.as_deref());
                if owners.is_empty() {
                    unowned.push(format!("{namespace}: {}", p.message));
                }
                fall_back.extend(owners.iter().map(|&i| (i, p.message.clone())));
            }
            if unowned.is_empty() {
                Outcome::FallBack(fall_back)
            } else {
                Outcome::Refused(unowned)
            }
        }
    }
}

/// What one namespace's build is made of.
struct Input {
    /// The entries of the namespace.
    mine: Vec<usize>,
    docs: Documents,
    /// Document title (`Kind/name`) → the entries answerable for it (a kept group: the
    /// objects that kept it).
    owners: BTreeMap<String, Vec<usize>>,
    /// Groups that are gone, from the copies of the objects that still target them.
    kept: BTreeMap<String, DeviceGroupSpec>,
    /// Entry → the gone groups it keeps.
    kept_groups: BTreeMap<usize, Vec<String>>,
}

impl Input {
    fn gather(namespace: &str, entries: &[Entry], secrets: &Secrets) -> Self {
        let mine: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].key.namespace == namespace)
            .collect();
        let usable_groups: BTreeSet<&str> = mine
            .iter()
            .map(|&i| &entries[i])
            .filter(|e| matches!(e.spec_in_use(), Some(Spec::Group(_))))
            .map(|e| e.key.name.as_str())
            .collect();
        let mut input = Input {
            docs: Documents {
                secrets: secrets.clone(),
                ..Documents::default()
            },
            owners: BTreeMap::new(),
            kept: BTreeMap::new(),
            kept_groups: BTreeMap::new(),
            mine: Vec::new(),
        };
        for &i in &mine {
            let e = &entries[i];
            let Some(spec) = e.spec_in_use() else {
                continue;
            };
            input.owned(format!("{}/{}", e.key.kind, e.key.name), i);
            for group in spec.groups() {
                if usable_groups.contains(group.as_str()) {
                    continue;
                }
                if let Some(definition) = e.remembered_group(group) {
                    input
                        .kept
                        .entry(group.clone())
                        .or_insert_with(|| definition.clone());
                    input.kept_groups.entry(i).or_default().push(group.clone());
                    input.owned(format!("DeviceGroup/{group}"), i);
                }
            }
            let file = e.key.qualified_name();
            let docs = &mut input.docs;
            match spec.clone() {
                Spec::Group(s) => docs.groups.push(located(&file, e, s)),
                Spec::Profile(s) => docs.profiles.push(located(&file, e, s)),
                Spec::Restrictions(s) => docs.restrictions.push(located(&file, e, s)),
                Spec::Labels(s) => docs.labels.push(located(&file, e, s)),
                Spec::Action(s) => docs.actions.push(located(&file, e, s)),
            }
        }
        input.mine = mine;
        input
    }

    fn owned(&mut self, title: String, entry: usize) {
        self.owners.entry(title).or_default().push(entry);
    }

    fn owners_of(&self, title: Option<&str>) -> &[usize] {
        title
            .and_then(|t| self.owners.get(t))
            .map_or(&[], Vec::as_slice)
    }

    /// A kept group is for the objects that had it only: any other object naming it names a
    /// group that is not declared.
    fn kept_group_misuse(&self, entries: &[Entry]) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for &i in &self.mine {
            let Some(spec) = entries[i].spec_in_use() else {
                continue;
            };
            let theirs = self.kept_groups.get(&i).map_or(&[][..], Vec::as_slice);
            for g in spec.group_refs() {
                if self.kept.contains_key(g) && !theirs.iter().any(|k| k == g) {
                    found.push((
                        i,
                        format!(
                            "DeviceGroup {g:?} is not declared: it was deleted (or is not valid), \
                             and its last definition stays in force only for the objects that \
                             used it then"
                        ),
                    ));
                }
            }
        }
        found
    }
}

type Secrets = crate::policy::actions::SecretValues;

fn located<S>(file: &str, e: &Entry, spec: S) -> Located<S> {
    document(file, e.key.kind, &e.key.namespace, &e.key.name, spec)
}

fn document<S>(file: &str, kind: &str, namespace: &str, name: &str, spec: S) -> Located<S> {
    Located {
        file: file.to_string(),
        line: 0,
        fields: Default::default(),
        doc: Document {
            api_version: API_VERSION.to_string(),
            kind: kind.to_string(),
            metadata: Metadata {
                name: name.to_string(),
                namespace: Some(namespace.to_string()),
                ..Metadata::default()
            },
            spec,
        },
    }
}

/// Adds one namespace's snapshot to `into` under qualified names. Labels are per device, and
/// devices belong to no namespace: they merge (a later namespace wins a key both set).
pub(super) fn merge(into: &mut PolicySnapshot, namespace: &str, part: PolicySnapshot) {
    let qualified = |name: &str| format!("{namespace}/{name}");
    for (name, group) in part.groups {
        into.groups.insert(qualified(&name), group);
    }
    for (_, mut profile) in part.profiles {
        let kind = match profile.origin {
            ProfileOrigin::Profile => "Profile",
            ProfileOrigin::Restrictions => "Restrictions",
        };
        profile.key = format!("{kind}/{namespace}/{}", profile.name);
        profile.name = qualified(&profile.name);
        profile.groups = profile.groups.iter().map(|g| qualified(g)).collect();
        into.profiles.insert(profile.key.clone(), profile);
    }
    for (serial, labels) in part.labels_by_serial {
        into.labels_by_serial
            .entry(serial)
            .or_default()
            .extend(labels);
    }
    for (udid, labels) in part.labels_by_udid {
        into.labels_by_udid.entry(udid).or_default().extend(labels);
    }
    for (_, mut action) in part.actions {
        action.key = format!("DeviceAction/{namespace}/{}", action.name);
        action.name = qualified(&action.name);
        if let ActionTarget::Group(group) = &mut action.target {
            *group = qualified(group);
        }
        into.actions.insert(action.key.clone(), action);
    }
    into.warnings.extend(part.warnings);
}
