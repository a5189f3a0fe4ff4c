//! What each custom resource has in force, and what falls back to what. Kubernetes accepts
//! objects one at a time, so Pomona judges them one at a time, and when in doubt it never
//! removes: an object whose current generation cannot be served falls back to the last spec it
//! had accepted (remembered in memory and in `status.inForce`, so a restarted controller has it
//! too), and only an object that never had one is left out. A Profile or Restrictions whose
//! DeviceGroup is deleted or turns invalid keeps that group's last definition for itself. Who
//! owns a PayloadIdentifier that two objects claim is settled here too: the object already
//! serving it, else the older one. Pure: no client, no clock.

use super::source::{Memory, Object, ObjectKey, Objects};
use crate::policy::crd::InForce;
use crate::policy::model::*;
use crate::policy::snapshot::{profile_identifier, restrictions_identifier};
use std::collections::BTreeMap;

/// The spec of one object, whatever its kind.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Spec {
    Group(DeviceGroupSpec),
    Profile(ProfileSpec),
    Restrictions(RestrictionsSpec),
    Labels(DeviceLabelsSpec),
    Action(DeviceActionSpec),
}

impl Spec {
    /// The DeviceGroups a Profile or Restrictions targets (none for other kinds).
    pub(super) fn groups(&self) -> &[String] {
        match self {
            Spec::Profile(s) => &s.groups,
            Spec::Restrictions(s) => &s.groups,
            _ => &[],
        }
    }

    /// Every DeviceGroup the spec names: a Profile's or Restrictions' groups, an action's
    /// target group.
    pub(super) fn group_refs(&self) -> Vec<&str> {
        match self {
            Spec::Action(s) => s.target.group.iter().map(String::as_str).collect(),
            other => other.groups().iter().map(String::as_str).collect(),
        }
    }

    pub(super) fn to_json(&self) -> serde_json::Value {
        let json = match self {
            Spec::Group(s) => serde_json::to_value(s),
            Spec::Profile(s) => serde_json::to_value(s),
            Spec::Restrictions(s) => serde_json::to_value(s),
            Spec::Labels(s) => serde_json::to_value(s),
            Spec::Action(s) => serde_json::to_value(s),
        };
        json.unwrap_or_default()
    }

    /// A remembered spec of the same kind as `self`; None when it no longer reads as one (it
    /// was edited by hand, or written by another version).
    fn parse_like(&self, value: &serde_json::Value) -> Option<Spec> {
        let v = value.clone();
        Some(match self {
            Spec::Group(_) => Spec::Group(serde_json::from_value(v).ok()?),
            Spec::Profile(_) => Spec::Profile(serde_json::from_value(v).ok()?),
            Spec::Restrictions(_) => Spec::Restrictions(serde_json::from_value(v).ok()?),
            Spec::Labels(_) => Spec::Labels(serde_json::from_value(v).ok()?),
            // Actions are never remembered: leaving one out undoes nothing on devices.
            Spec::Action(_) => return None,
        })
    }

    /// The PayloadIdentifier this spec compiles to (Profile and Restrictions).
    pub(super) fn identifier(&self, name: &str) -> Option<String> {
        match self {
            Spec::Profile(s) => profile_identifier(name, s),
            Spec::Restrictions(_) => Some(restrictions_identifier(name)),
            _ => None,
        }
    }
}

/// Which spec of an object the snapshot gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Choice {
    /// The current generation.
    Current,
    /// The current generation is refused; the last accepted spec stays in force.
    LastGood,
    /// Nothing: refused, with nothing accepted before (or that cannot be served either).
    Out,
}

/// The last spec an object had accepted.
#[derive(Debug, Clone)]
pub(super) struct LastGood {
    pub generation: Option<i64>,
    pub spec: Spec,
    /// For Profile and Restrictions: its groups as they were defined then.
    pub groups: BTreeMap<String, DeviceGroupSpec>,
}

/// One object being judged.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub key: ObjectKey,
    pub uid: String,
    pub generation: Option<i64>,
    /// Creation time (ms): the older of two objects claiming an identifier keeps it.
    pub created: i64,
    pub deleting: bool,
    pub current: Spec,
    pub last_good: Option<LastGood>,
    pub choice: Choice,
    /// What is wrong with the current generation (and, after it, with the last good one).
    pub errors: Vec<String>,
    /// Its current spec lost a PayloadIdentifier to another object before being built: what
    /// else is wrong with it is still to be found (see `source::diagnose`).
    pub lost_identifier: bool,
}

impl Entry {
    /// The spec the snapshot gets, unless the object is left out.
    pub(super) fn spec_in_use(&self) -> Option<&Spec> {
        match self.choice {
            _ if self.deleting => None,
            Choice::Current => Some(&self.current),
            Choice::LastGood => self.last_good.as_ref().map(|l| &l.spec),
            Choice::Out => None,
        }
    }

    /// The generation whose spec is in use.
    pub(super) fn generation_in_use(&self) -> Option<i64> {
        match self.choice {
            Choice::LastGood => self.last_good.as_ref().and_then(|l| l.generation),
            _ => self.generation,
        }
    }

    /// The definition this object last had for its group `name`, if any.
    pub(super) fn remembered_group(&self, name: &str) -> Option<&DeviceGroupSpec> {
        self.last_good.as_ref()?.groups.get(name)
    }

    /// The spec in use could not be served: fall back one step (current → last good → out).
    pub(super) fn demote(&mut self, why: String) {
        match self.choice {
            Choice::Current => {
                self.errors.push(why);
                self.choice = match &self.last_good {
                    Some(_) => Choice::LastGood,
                    None => Choice::Out,
                };
            }
            Choice::LastGood => {
                let generation = self
                    .last_good
                    .as_ref()
                    .and_then(|l| l.generation)
                    .map_or_else(
                        || "the last accepted spec".into(),
                        |g| format!("generation {g}"),
                    );
                self.errors
                    .push(format!("{generation} cannot be served either: {why}"));
                self.choice = Choice::Out;
            }
            Choice::Out => {}
        }
    }
}

/// The objects to judge, each with its last good spec: the newer of what this process
/// remembers (`memory`, same object uid only) and what its status says (`status.inForce`).
pub(super) fn entries(objects: &Objects, memory: &Memory) -> Vec<Entry> {
    let mut out = Vec::new();
    push(&mut out, &objects.groups, memory, Spec::Group);
    push(&mut out, &objects.profiles, memory, Spec::Profile);
    push(&mut out, &objects.restrictions, memory, Spec::Restrictions);
    push(&mut out, &objects.labels, memory, Spec::Labels);
    push(&mut out, &objects.actions, memory, Spec::Action);
    out
}

fn push<S: Clone>(
    out: &mut Vec<Entry>,
    list: &[Object<S>],
    memory: &Memory,
    wrap: impl Fn(S) -> Spec,
) {
    for o in list {
        let current = wrap(o.spec.clone());
        let remembered = memory
            .get(&o.key)
            .filter(|r| r.uid == o.uid)
            .map(|r| &r.in_force);
        // On a tie this process's memory wins (the last of equals): its copies of the groups
        // may be newer than the status written so far.
        let newest = [o.persisted.as_ref(), remembered]
            .into_iter()
            .flatten()
            .max_by_key(|f| f.generation);
        let last_good = newest.and_then(|f| last_good(&current, f));
        out.push(Entry {
            key: o.key.clone(),
            uid: o.uid.clone(),
            generation: o.generation,
            created: o.created,
            deleting: o.deleting,
            current,
            last_good,
            choice: Choice::Current,
            errors: Vec::new(),
            lost_identifier: false,
        });
    }
}

fn last_good(current: &Spec, in_force: &InForce) -> Option<LastGood> {
    let spec = current.parse_like(&in_force.spec)?;
    let groups = in_force
        .groups
        .iter()
        .filter_map(|(name, g)| Some((name.clone(), serde_json::from_value(g.clone()).ok()?)))
        .collect();
    Some(LastGood {
        generation: in_force.generation,
        spec,
        groups,
    })
}

/// Two profiles with one PayloadIdentifier would replace each other on devices: each
/// identifier goes to one object — the one whose last good spec already uses it (it is what
/// devices have), else the older, else the first by namespace and name — and the others fall
/// back. Returns whether anything fell back.
pub(super) fn settle_identifiers(entries: &mut [Entry]) -> bool {
    let mut claims: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(id) = e.spec_in_use().and_then(|s| s.identifier(&e.key.name)) {
            claims.entry(id).or_default().push(i);
        }
    }
    let mut demoted = false;
    for (identifier, claimants) in claims.into_iter().filter(|(_, c)| c.len() > 1) {
        let holds = |e: &Entry| {
            e.last_good
                .as_ref()
                .and_then(|l| l.spec.identifier(&e.key.name))
                .as_deref()
                == Some(identifier.as_str())
        };
        let owner = *claimants
            .iter()
            .min_by_key(|&&i| {
                let e = &entries[i];
                (
                    !holds(e),
                    e.created,
                    e.key.namespace.clone(),
                    e.key.name.clone(),
                )
            })
            .expect("two or more claimants");
        let owner_name = entries[owner].key.to_string();
        for i in claimants.into_iter().filter(|&i| i != owner) {
            let fix = match entries[i].current {
                Spec::Restrictions(_) => "rename this object",
                _ => "set spec.identifier to one of its own",
            };
            entries[i].lost_identifier |= entries[i].choice == Choice::Current;
            entries[i].demote(format!(
                "PayloadIdentifier {identifier:?} is already used by {owner_name}: devices would \
                 replace one with the other; {fix}"
            ));
            demoted = true;
        }
    }
    demoted
}
