//! The group membership index: for each declared group, the devices that belong to it now.
//! It answers the driver's two fleet-wide questions without scanning the fleet: which devices a
//! policy change touches (the members of the groups that changed or that changed profiles
//! target) and how many devices each profile targets (for status). A device's memberships are
//! recomputed when what it reports or its labels change (cost: the number of groups); a
//! group's members are recomputed only when its selector changes. Pure data, no I/O.

use crate::policy::selector::{is_member, DeviceAttributes};
use crate::policy::snapshot::PolicySnapshot;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Membership {
    /// Member ids share the allocation of the fleet index's `DeviceAttributes::device_id`.
    by_group: HashMap<String, HashSet<Arc<str>>>,
}

/// Attributes plus the labels policy declares for the device (API labels win).
pub fn with_labels(snapshot: &PolicySnapshot, attributes: &DeviceAttributes) -> DeviceAttributes {
    let mut a = attributes.clone();
    let declared = snapshot.declared_labels(a.serial_number.as_deref(), &a.device_id);
    for (k, v) in declared {
        a.labels.entry(k).or_insert(v);
    }
    a
}

impl Membership {
    /// Computes every group's members from scratch.
    pub fn rebuild<'a>(
        snapshot: &PolicySnapshot,
        devices: impl IntoIterator<Item = &'a DeviceAttributes>,
    ) -> Self {
        let mut index = Self::default();
        for attributes in devices {
            index.update_device(snapshot, attributes);
        }
        index
    }

    /// Recomputes one device's memberships; true when any changed.
    pub fn update_device(
        &mut self,
        snapshot: &PolicySnapshot,
        attributes: &DeviceAttributes,
    ) -> bool {
        let labelled = with_labels(snapshot, attributes);
        let mut changed = false;
        for (name, spec) in &snapshot.groups {
            let member = is_member(spec, &labelled);
            let members = self.by_group.entry(name.clone()).or_default();
            changed |= if member {
                members.insert(attributes.device_id.clone())
            } else {
                members.remove(&attributes.device_id)
            };
        }
        changed
    }

    pub fn remove_device(&mut self, device_id: &str) {
        for members in self.by_group.values_mut() {
            members.remove(device_id);
        }
    }

    /// Moves the index from `old` to `new` and returns the devices whose desired profiles may
    /// differ: members (before or after) of groups whose selector changed or that a changed
    /// profile targets, and devices whose declared labels changed their memberships.
    pub fn apply_snapshot<'a, D>(
        &mut self,
        old: &PolicySnapshot,
        new: &PolicySnapshot,
        devices: D,
    ) -> BTreeSet<String>
    where
        D: IntoIterator<Item = &'a DeviceAttributes> + Clone,
    {
        let mut touched = BTreeSet::new();
        let labels_changed = old.labels_by_serial != new.labels_by_serial
            || old.labels_by_udid != new.labels_by_udid;
        if labels_changed {
            // Rare (a DeviceLabels edit): recompute everything, touch whoever moved.
            let before = std::mem::take(&mut self.by_group);
            *self = Self::rebuild(new, devices);
            for name in before.keys().chain(self.by_group.keys()) {
                let (a, b) = (before.get(name), self.by_group.get(name));
                let empty = HashSet::new();
                let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
                touched.extend(a.symmetric_difference(b).map(|id| id.to_string()));
            }
        } else {
            let changed_groups: BTreeSet<&String> = old
                .groups
                .keys()
                .chain(new.groups.keys())
                .filter(|name| old.groups.get(*name) != new.groups.get(*name))
                .collect();
            for name in changed_groups {
                if let Some(before) = self.by_group.remove(name) {
                    touched.extend(before.iter().map(|id| id.to_string()));
                }
                if let Some(spec) = new.groups.get(name) {
                    let members: HashSet<Arc<str>> = devices
                        .clone()
                        .into_iter()
                        .filter(|d| is_member(spec, &with_labels(new, d)))
                        .map(|d| d.device_id.clone())
                        .collect();
                    touched.extend(members.iter().map(|id| id.to_string()));
                    self.by_group.insert(name.clone(), members);
                }
            }
        }
        for key in old.profiles.keys().chain(new.profiles.keys()) {
            let (a, b) = (old.profiles.get(key), new.profiles.get(key));
            if a != b {
                for group in [a, b].into_iter().flatten().flat_map(|p| &p.groups) {
                    if let Some(members) = self.by_group.get(group) {
                        touched.extend(members.iter().map(|id| id.to_string()));
                    }
                }
            }
        }
        touched
    }

    /// How many devices each profile of `snapshot` targets (members of any of its groups).
    pub fn targeted_counts(&self, snapshot: &PolicySnapshot) -> HashMap<String, i64> {
        snapshot
            .profiles
            .values()
            .map(|p| {
                let count = match p.groups.as_slice() {
                    [one] => self.by_group.get(one).map_or(0, HashSet::len),
                    several => several
                        .iter()
                        .filter_map(|g| self.by_group.get(g))
                        .flatten()
                        .collect::<HashSet<_>>()
                        .len(),
                };
                (p.key.clone(), count as i64)
            })
            .collect()
    }

    pub fn members(&self, group: &str) -> Option<&HashSet<Arc<str>>> {
        self.by_group.get(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{DeviceGroupSpec, LabelSelector};

    fn device(id: &str, team: &str) -> DeviceAttributes {
        let mut a = DeviceAttributes {
            device_id: id.into(),
            ..DeviceAttributes::default()
        };
        a.labels.insert("team".into(), team.into());
        a
    }

    fn group(team: &str) -> DeviceGroupSpec {
        DeviceGroupSpec {
            selector: Some(LabelSelector {
                match_labels: [("team".to_string(), team.to_string())].into(),
                ..LabelSelector::default()
            }),
            ..DeviceGroupSpec::default()
        }
    }

    fn snapshot(groups: &[(&str, &str)]) -> PolicySnapshot {
        PolicySnapshot {
            groups: groups
                .iter()
                .map(|(name, team)| (name.to_string(), group(team)))
                .collect(),
            ..PolicySnapshot::default()
        }
    }

    fn fleet() -> HashMap<String, DeviceAttributes> {
        [("A", "red"), ("B", "red"), ("C", "blue")]
            .into_iter()
            .map(|(id, team)| (id.to_string(), device(id, team)))
            .collect()
    }

    #[test]
    fn a_changed_selector_touches_the_members_before_and_after_only() {
        let devices = fleet();
        let old = snapshot(&[("g", "red"), ("other", "blue")]);
        let mut index = Membership::rebuild(&old, devices.values());
        let new = snapshot(&[("g", "blue"), ("other", "blue")]);
        let touched = index.apply_snapshot(&old, &new, devices.values());
        assert_eq!(touched, ["A", "B", "C"].map(String::from).into());
        assert_eq!(index.members("g").unwrap().len(), 1);
        // Nothing changed: nothing touched.
        assert!(index
            .apply_snapshot(&new, &new, devices.values())
            .is_empty());
    }

    #[test]
    fn a_device_moves_between_groups_when_its_labels_change() {
        let devices = fleet();
        let s = snapshot(&[("red", "red"), ("blue", "blue")]);
        let mut index = Membership::rebuild(&s, devices.values());
        assert!(index.members("red").unwrap().contains("A"));
        assert!(index.update_device(&s, &device("A", "blue")));
        assert!(!index.members("red").unwrap().contains("A"));
        assert!(index.members("blue").unwrap().contains("A"));
        assert!(
            !index.update_device(&s, &device("A", "blue")),
            "no change the second time"
        );
        index.remove_device("A");
        assert!(!index.members("blue").unwrap().contains("A"));
    }
}
