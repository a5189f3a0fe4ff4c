//! The reconciler's in-memory index of the fleet: each enrolled device's attributes (what
//! Authenticate, TokenUpdate, DeviceInformation answers and API labels say), the group
//! membership kept in step with them and with the snapshot, and each device's latest facts.
//! Planning reads it instead of the store, so a policy change touches only the devices whose
//! groups or profiles it changes. Lock order inside: devices, then membership, then facts.

use super::driver::{lock, read, write};
use super::membership::Membership;
use super::reported;
use crate::policy::actions::ActionTarget;
use crate::policy::selector::DeviceAttributes;
use crate::policy::snapshot::PolicySnapshot;
use crate::store::inventory::DeviceInventory;
use crate::store::Enrollment;
use crate::vocab::facts::ReportedFacts;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

#[derive(Default)]
pub(super) struct Fleet {
    devices: RwLock<HashMap<String, DeviceAttributes>>,
    /// Group → member devices, kept in step with `devices` and the snapshot.
    membership: RwLock<Membership>,
    /// Each device's latest answer to our DeviceInformation queries, and when (Unix ms).
    /// Facts override what Authenticate said (they are newer), until the next Authenticate.
    facts: Mutex<HashMap<String, (ReportedFacts, i64)>>,
}

impl Fleet {
    /// Records what an enrollment (not checked out) says about a device: Authenticate facts,
    /// TokenUpdate. Facts reported before its last Authenticate may be stale: they are dropped
    /// (and asked again).
    pub fn observe_enrollment(&self, e: &Enrollment, snapshot: &PolicySnapshot) {
        let mut devices = write(&self.devices);
        let attributes = devices
            .entry(e.device_id.clone())
            .or_insert_with(|| DeviceAttributes {
                device_id: e.device_id.clone(),
                ..DeviceAttributes::default()
            });
        attributes.serial_number = e.serial_number.clone().or(attributes.serial_number.take());
        attributes.model = e.model.clone().or(attributes.model.take());
        attributes.os_version = e.os_version.clone().or(attributes.os_version.take());
        attributes.enrollment_type = Some(e.enrollment_type.as_str().to_string());
        let product = e.product_name.as_deref().or(e.model.as_deref());
        if let Some(platform) = product.and_then(reported::platform_of) {
            attributes.platform = Some(platform);
        }
        {
            let mut facts = lock(&self.facts);
            match facts.get(&e.device_id) {
                Some((_, at)) if *at < e.authenticated_at => {
                    facts.remove(&e.device_id);
                }
                Some((known, _)) => reported::apply_facts(attributes, known),
                None => {}
            }
        }
        write(&self.membership).update_device(snapshot, attributes);
    }

    /// Drops a device that left (checked out, wiped).
    pub fn forget(&self, device_id: &str) {
        let mut devices = write(&self.devices);
        devices.remove(device_id);
        write(&self.membership).remove_device(device_id);
        lock(&self.facts).remove(device_id);
    }

    /// Folds a stored inventory row (facts, API labels) into the index (start-up).
    pub fn observe_inventory(&self, inventory: DeviceInventory, snapshot: &PolicySnapshot) {
        let mut devices = write(&self.devices);
        let Some(attributes) = devices.get_mut(&inventory.device_id) else {
            return; // not enrolled (any more)
        };
        attributes.labels = inventory.labels;
        if let Some((facts, _)) = &inventory.facts {
            reported::apply_facts(attributes, facts);
        }
        write(&self.membership).update_device(snapshot, attributes);
        if let Some(facts) = inventory.facts {
            lock(&self.facts).insert(inventory.device_id, facts);
        }
    }

    /// Replaces a device's API labels.
    pub fn set_labels(
        &self,
        device_id: &str,
        labels: BTreeMap<String, String>,
        snapshot: &PolicySnapshot,
    ) {
        if let Some(attributes) = write(&self.devices).get_mut(device_id) {
            attributes.labels = labels;
            write(&self.membership).update_device(snapshot, attributes);
        }
    }

    /// Records a DeviceInformation answer given at `at`.
    pub fn record_facts(
        &self,
        device_id: &str,
        facts: ReportedFacts,
        at: i64,
        snapshot: &PolicySnapshot,
    ) {
        if let Some(attributes) = write(&self.devices).get_mut(device_id) {
            reported::apply_facts(attributes, &facts);
            write(&self.membership).update_device(snapshot, attributes);
        }
        lock(&self.facts).insert(device_id.to_string(), (facts, at));
    }

    pub fn attributes(&self, device_id: &str) -> Option<DeviceAttributes> {
        read(&self.devices).get(device_id).cloned()
    }

    /// A device's serial number, if it reported one.
    pub fn serial_number(&self, device_id: &str) -> Option<String> {
        read(&self.devices)
            .get(device_id)
            .and_then(|d| d.serial_number.clone())
    }

    /// Whether the device answered DeviceInformation since its last Authenticate.
    pub fn facts_known(&self, device_id: &str) -> bool {
        lock(&self.facts).contains_key(device_id)
    }

    /// Whether the device's facts are to be asked (never, or not for `interval` ms).
    pub fn facts_due(&self, device_id: &str, now: i64, interval: i64) -> bool {
        lock(&self.facts)
            .get(device_id)
            .is_none_or(|(_, at)| now >= at + interval)
    }

    /// Moves membership from `old` to `new`; the devices whose desired profiles may differ.
    pub fn apply_snapshot(&self, old: &PolicySnapshot, new: &PolicySnapshot) -> BTreeSet<String> {
        let devices = read(&self.devices);
        write(&self.membership).apply_snapshot(old, new, &devices)
    }

    pub fn device_ids(&self) -> Vec<String> {
        read(&self.devices).keys().cloned().collect()
    }

    /// Devices never inventoried since their last Authenticate.
    pub fn without_facts(&self) -> Vec<String> {
        let devices = read(&self.devices);
        let facts = lock(&self.facts);
        devices
            .keys()
            .filter(|d| !facts.contains_key(*d))
            .cloned()
            .collect()
    }

    /// The devices an action target names: a UDID as given (enrolled or not), the devices
    /// with a serial number (a scan of the index), a group's members.
    pub fn targets_of(&self, target: &ActionTarget) -> Vec<String> {
        match target {
            ActionTarget::Udid(u) => vec![u.clone()],
            ActionTarget::SerialNumber(s) => read(&self.devices)
                .values()
                .filter(|d| d.serial_number.as_deref() == Some(s.as_str()))
                .map(|d| d.device_id.clone())
                .collect(),
            ActionTarget::Group(g) => read(&self.membership)
                .members(g)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
        }
    }

    /// How many indexed devices an action target names.
    pub fn count_targets(&self, target: &ActionTarget) -> i64 {
        match target {
            ActionTarget::Udid(u) => i64::from(read(&self.devices).contains_key(u)),
            ActionTarget::SerialNumber(s) => read(&self.devices)
                .values()
                .filter(|d| d.serial_number.as_deref() == Some(s.as_str()))
                .count() as i64,
            ActionTarget::Group(g) => read(&self.membership)
                .members(g)
                .map_or(0, |m| m.len() as i64),
        }
    }

    /// Profiles each indexed device should carry, counted per profile key.
    pub fn targeted_counts(&self, snapshot: &PolicySnapshot) -> HashMap<String, i64> {
        read(&self.membership).targeted_counts(snapshot)
    }

    /// A group's members with ids after `after`, in id order (None: no such group). A device
    /// search by group pages through these.
    pub fn group_members_after(&self, group: &str, after: &str) -> Option<Vec<String>> {
        let membership = read(&self.membership);
        let mut members: Vec<String> = membership
            .members(group)?
            .iter()
            .filter(|id| id.as_str() > after)
            .cloned()
            .collect();
        members.sort_unstable();
        Some(members)
    }

    /// The groups the snapshot declares that a device belongs to now, by name.
    pub fn groups_of(&self, snapshot: &PolicySnapshot, device_id: &str) -> Vec<String> {
        let membership = read(&self.membership);
        snapshot
            .groups
            .keys()
            .filter(|g| membership.members(g).is_some_and(|m| m.contains(device_id)))
            .cloned()
            .collect()
    }

    /// Members of each group the snapshot declares.
    pub fn group_member_counts(&self, snapshot: &PolicySnapshot) -> HashMap<String, i64> {
        let membership = read(&self.membership);
        snapshot
            .groups
            .keys()
            .map(|g| {
                (
                    g.clone(),
                    membership.members(g).map_or(0, |m| m.len() as i64),
                )
            })
            .collect()
    }
}
