//! The reconciler's in-memory index of the fleet: each enrolled device's attributes (what
//! Authenticate, TokenUpdate, DeviceInformation answers and API labels say), the group
//! membership kept in step with them and with the snapshot, and when each device last reported
//! its facts. Planning reads it instead of the store, so a policy change touches only the
//! devices whose groups or profiles it changes. It holds an entry for every enrolled device, so
//! its size is the server's memory per device: facts are folded into the attributes instead of
//! being kept beside them. Lock order inside: devices, then membership.

use super::by_id::{ById, Keyed};
use super::driver::{read, write};
use super::membership::Membership;
use super::reported::{self, FACT_MODEL, FACT_OS_VERSION, FACT_PLATFORM, FACT_SERIAL};
use super::shared_text::{set_own, set_shared};
use crate::policy::actions::ActionTarget;
use crate::policy::selector::DeviceAttributes;
use crate::policy::snapshot::PolicySnapshot;
use crate::store::inventory::DeviceInventory;
use crate::store::Enrollment;
use crate::vocab::facts::ReportedFacts;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

#[derive(Default)]
pub(super) struct Fleet {
    /// Found by the entry's own `attributes.device_id`.
    devices: RwLock<ById<DeviceEntry>>,
    /// Group → member devices, kept in step with `devices` and the snapshot.
    membership: RwLock<Membership>,
}

struct DeviceEntry {
    attributes: DeviceAttributes,
    /// When the device last answered our DeviceInformation queries since its last
    /// Authenticate (Unix ms); `NO_FACTS` until it has (not an `Option`: that would make every
    /// entry 8 bytes larger).
    facts_at: i64,
    /// Which attributes those facts set (`reported::FACT_*`). Facts are newer than what Authenticate
    /// said, so while they are current an enrollment update leaves these attributes alone.
    facts_set: u8,
    /// The reconciler has business with the device: managed profiles or its commands in
    /// flight, as of its last plan. With nothing declared, a command result from any other
    /// device needs no re-plan. (Here rather than in a set of ids: it fits in the entry's
    /// padding.)
    involved: bool,
}

const NO_FACTS: i64 = i64::MIN;

impl DeviceEntry {
    fn record_facts(&mut self, facts: &ReportedFacts, at: i64) {
        self.facts_set = reported::apply_facts(&mut self.attributes, facts);
        self.facts_at = at;
    }

    fn facts_at(&self) -> Option<i64> {
        (self.facts_at != NO_FACTS).then_some(self.facts_at)
    }
}

impl Keyed for DeviceEntry {
    fn id(&self) -> &str {
        &self.attributes.device_id
    }
}

impl Fleet {
    /// Records what an enrollment (not checked out) says about a device: Authenticate facts,
    /// TokenUpdate. Facts reported before its last Authenticate may be stale: they no longer
    /// take precedence, and are asked again.
    pub fn observe_enrollment(&self, e: &Enrollment, snapshot: &PolicySnapshot) {
        let mut devices = write(&self.devices);
        let entry = devices.get_or_insert_with(&e.device_id, || DeviceEntry {
            attributes: DeviceAttributes {
                device_id: e.device_id.as_str().into(),
                ..DeviceAttributes::default()
            },
            facts_at: NO_FACTS,
            facts_set: 0,
            involved: false,
        });
        if entry.facts_at().is_some_and(|at| at < e.authenticated_at) {
            entry.facts_at = NO_FACTS;
            entry.facts_set = 0;
        }
        let kept = entry.facts_set;
        let attributes = &mut entry.attributes;
        // What the facts set is left alone, and so is what did not change.
        fn unless_kept(kept: u8, bit: u8, value: &Option<String>) -> Option<&str> {
            value.as_deref().filter(|_| kept & bit == 0)
        }
        if let Some(serial) = unless_kept(kept, FACT_SERIAL, &e.serial_number) {
            set_own(&mut attributes.serial_number, serial);
        }
        if let Some(model) = unless_kept(kept, FACT_MODEL, &e.model) {
            set_shared(&mut attributes.model, model);
        }
        if let Some(os) = unless_kept(kept, FACT_OS_VERSION, &e.os_version) {
            set_shared(&mut attributes.os_version, os);
        }
        attributes.enrollment_type = Some(e.enrollment_type.as_str());
        let product = e.product_name.as_deref().or(e.model.as_deref());
        if let Some(platform) = product.and_then(reported::platform_of) {
            if kept & FACT_PLATFORM == 0 {
                attributes.platform = Some(platform);
            }
        }
        write(&self.membership).update_device(snapshot, attributes);
    }

    /// Drops a device that left (checked out, wiped).
    pub fn forget(&self, device_id: &str) {
        let mut devices = write(&self.devices);
        devices.remove(device_id);
        write(&self.membership).remove_device(device_id);
    }

    /// Folds a stored inventory row (facts, API labels) into the index (start-up).
    pub fn observe_inventory(&self, inventory: DeviceInventory, snapshot: &PolicySnapshot) {
        let mut devices = write(&self.devices);
        let Some(entry) = devices.get_mut(inventory.device_id.as_str()) else {
            return; // not enrolled (any more)
        };
        entry.attributes.labels = inventory.labels;
        if let Some((facts, at)) = &inventory.facts {
            entry.record_facts(facts, *at);
        }
        write(&self.membership).update_device(snapshot, &entry.attributes);
    }

    /// Replaces a device's API labels.
    pub fn set_labels(
        &self,
        device_id: &str,
        labels: BTreeMap<String, String>,
        snapshot: &PolicySnapshot,
    ) {
        if let Some(entry) = write(&self.devices).get_mut(device_id) {
            entry.attributes.labels = labels;
            write(&self.membership).update_device(snapshot, &entry.attributes);
        }
    }

    /// Records a DeviceInformation answer given at `at`. A device not in the index (it left)
    /// is not added back.
    pub fn record_facts(
        &self,
        device_id: &str,
        facts: ReportedFacts,
        at: i64,
        snapshot: &PolicySnapshot,
    ) {
        if let Some(entry) = write(&self.devices).get_mut(device_id) {
            entry.record_facts(&facts, at);
            write(&self.membership).update_device(snapshot, &entry.attributes);
        }
    }

    pub fn attributes(&self, device_id: &str) -> Option<DeviceAttributes> {
        read(&self.devices)
            .get(device_id)
            .map(|entry| entry.attributes.clone())
    }

    /// The device's id in the index's own allocation (a new one for a device not in it), for
    /// structures that keep an entry per device.
    pub fn shared_id(&self, device_id: &str) -> Arc<str> {
        read(&self.devices).get(device_id).map_or_else(
            || device_id.into(),
            |entry| entry.attributes.device_id.clone(),
        )
    }

    /// A device's serial number, if it reported one.
    pub fn serial_number(&self, device_id: &str) -> Option<String> {
        read(&self.devices).get(device_id).and_then(|entry| {
            entry
                .attributes
                .serial_number
                .as_deref()
                .map(str::to_string)
        })
    }

    /// Records what the device's last plan found (`DeviceEntry::involved`). A device not in the
    /// index (it left) is not added back.
    pub fn set_involved(&self, device_id: &str, involved: bool) {
        let unchanged = read(&self.devices)
            .get(device_id)
            .is_none_or(|entry| entry.involved == involved);
        if unchanged {
            return;
        }
        if let Some(entry) = write(&self.devices).get_mut(device_id) {
            entry.involved = involved;
        }
    }

    /// Whether the device's last plan found the reconciler has business with it.
    pub fn involved(&self, device_id: &str) -> bool {
        read(&self.devices)
            .get(device_id)
            .is_some_and(|entry| entry.involved)
    }

    /// Whether the device answered DeviceInformation since its last Authenticate.
    pub fn facts_known(&self, device_id: &str) -> bool {
        read(&self.devices)
            .get(device_id)
            .is_some_and(|entry| entry.facts_at().is_some())
    }

    /// Whether the device's facts are to be asked (never, or not for `interval` ms).
    pub fn facts_due(&self, device_id: &str, now: i64, interval: i64) -> bool {
        read(&self.devices)
            .get(device_id)
            .and_then(DeviceEntry::facts_at)
            .is_none_or(|at| now >= at + interval)
    }

    /// Moves membership from `old` to `new`; the devices whose desired profiles may differ.
    pub fn apply_snapshot(&self, old: &PolicySnapshot, new: &PolicySnapshot) -> BTreeSet<String> {
        let devices = read(&self.devices);
        let attributes = devices.values().map(|entry| &entry.attributes);
        write(&self.membership).apply_snapshot(old, new, attributes)
    }

    pub fn device_ids(&self) -> Vec<String> {
        read(&self.devices)
            .values()
            .map(|entry| entry.id().to_string())
            .collect()
    }

    /// Devices never inventoried since their last Authenticate.
    pub fn without_facts(&self) -> Vec<String> {
        read(&self.devices)
            .values()
            .filter(|entry| entry.facts_at().is_none())
            .map(|entry| entry.id().to_string())
            .collect()
    }

    /// The devices an action target names: a UDID as given (enrolled or not), the devices
    /// with a serial number (a scan of the index), a group's members.
    pub fn targets_of(&self, target: &ActionTarget) -> Vec<String> {
        match target {
            ActionTarget::Udid(u) => vec![u.clone()],
            ActionTarget::SerialNumber(s) => read(&self.devices)
                .values()
                .map(|entry| &entry.attributes)
                .filter(|d| d.serial_number.as_deref() == Some(s.as_str()))
                .map(|d| d.device_id.to_string())
                .collect(),
            ActionTarget::Group(g) => read(&self.membership)
                .members(g)
                .into_iter()
                .flatten()
                .map(|id| id.to_string())
                .collect(),
        }
    }

    /// How many indexed devices an action target names.
    pub fn count_targets(&self, target: &ActionTarget) -> i64 {
        match target {
            ActionTarget::Udid(u) => i64::from(read(&self.devices).contains(u)),
            ActionTarget::SerialNumber(s) => read(&self.devices)
                .values()
                .filter(|entry| entry.attributes.serial_number.as_deref() == Some(s.as_str()))
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
            .filter(|id| &***id > after)
            .map(|id| id.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EnrollmentState, EnrollmentType};

    #[test]
    fn an_entry_per_enrolled_device_stays_within_its_budget() {
        // Every enrolled device has one, and the table holds up to twice as many slots: a
        // field that grows this grows the server's memory per device (BENCHMARKS.md).
        assert!(
            std::mem::size_of::<DeviceEntry>() <= 128,
            "{} bytes",
            std::mem::size_of::<DeviceEntry>()
        );
    }

    fn enrollment(model: &str, authenticated_at: i64) -> Enrollment {
        Enrollment {
            device_id: "D1".into(),
            enrollment_type: EnrollmentType::Device,
            state: EnrollmentState::Enrolled,
            topic: "t".into(),
            serial_number: Some("S-AUTH".into()),
            model: Some(model.into()),
            model_name: None,
            product_name: Some("iPhone15,2".into()),
            os_version: Some("17.0".into()),
            build_version: None,
            device_name: None,
            imei: None,
            meid: None,
            has_push_token: true,
            has_unlock_token: false,
            awaiting_configuration: false,
            created_at: authenticated_at,
            authenticated_at,
            token_updated_at: None,
            checked_out_at: None,
            last_seen_at: None,
            certificate_fingerprint: None,
            wiped_at: None,
        }
    }

    #[test]
    fn facts_win_over_enrollment_updates_until_the_next_authenticate() {
        let fleet = Fleet::default();
        let snapshot = PolicySnapshot::default();
        fleet.observe_enrollment(&enrollment("MODEL-AUTH", 5), &snapshot);
        assert!(!fleet.facts_known("D1"));
        let facts = ReportedFacts {
            model: Some("MODEL-FACTS".into()),
            os_version: Some("18.1".into()),
            supervised: Some(true),
            ..ReportedFacts::default()
        };
        fleet.record_facts("D1", facts, 10, &snapshot);
        assert!(fleet.facts_known("D1"));
        assert!(!fleet.facts_due("D1", 10 + 999, 1000));
        assert!(fleet.facts_due("D1", 10 + 1000, 1000));

        // A TokenUpdate of the same enrollment: the facts are newer than what it carries.
        fleet.observe_enrollment(&enrollment("MODEL-AUTH", 5), &snapshot);
        let a = fleet.attributes("D1").unwrap();
        assert_eq!(a.model.as_deref(), Some("MODEL-FACTS"));
        assert_eq!(a.os_version.as_deref(), Some("18.1"));
        // What the facts did not say still comes from the enrollment.
        assert_eq!(a.serial_number.as_deref(), Some("S-AUTH"));
        assert_eq!(a.platform, Some(crate::policy::model::Platform::Ios));
        assert_eq!(a.supervised, Some(true));

        // A new Authenticate: the facts are stale, the enrollment's values count, and the
        // facts are asked again.
        fleet.observe_enrollment(&enrollment("MODEL-NEW", 20), &snapshot);
        let a = fleet.attributes("D1").unwrap();
        assert_eq!(a.model.as_deref(), Some("MODEL-NEW"));
        assert_eq!(a.os_version.as_deref(), Some("17.0"));
        assert!(!fleet.facts_known("D1"));
        assert_eq!(fleet.without_facts(), vec!["D1".to_string()]);
    }

    #[test]
    fn facts_of_a_device_that_left_do_not_bring_it_back() {
        let fleet = Fleet::default();
        let snapshot = PolicySnapshot::default();
        fleet.observe_enrollment(&enrollment("M", 5), &snapshot);
        fleet.forget("D1");
        fleet.record_facts("D1", ReportedFacts::default(), 10, &snapshot);
        assert!(fleet.attributes("D1").is_none());
        assert!(fleet.device_ids().is_empty());
    }

    #[test]
    fn involvement_follows_the_last_plan_and_survives_enrollment_updates() {
        let fleet = Fleet::default();
        let snapshot = PolicySnapshot::default();
        fleet.observe_enrollment(&enrollment("M", 5), &snapshot);
        assert!(!fleet.involved("D1"), "not until a plan says so");
        fleet.set_involved("D1", true);
        fleet.observe_enrollment(&enrollment("M2", 6), &snapshot);
        assert!(fleet.involved("D1"));
        fleet.set_involved("D1", false);
        assert!(!fleet.involved("D1"));
        fleet.set_involved("D1", true);
        fleet.forget("D1");
        fleet.set_involved("D1", true);
        assert!(
            !fleet.involved("D1"),
            "a device that left is not added back"
        );
        assert!(fleet.device_ids().is_empty());
    }
}
