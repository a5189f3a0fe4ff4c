//! `pomona plan`: what a candidate policy would change on the live fleet — per profile, how
//! many devices would get it installed (new or changed content) and how many would have it
//! removed, and which declared device actions would run on how many devices — computed from the store's enrollments and inventories without queuing anything.

pub use crate::api::{ActionChange, PlanPreview, ProfileChange};
use crate::policy::selector::DeviceAttributes;
use crate::policy::snapshot::PolicySnapshot;
use crate::store::{EnrollmentState, Store};
use crate::vocab::profiles::RemovalPolicy;
use std::collections::BTreeMap;

impl PlanPreview {
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.install > 0 || c.remove > 0)
            || self.actions.iter().any(|a| a.run_on > 0)
    }

    /// A readable summary, one line per changing profile.
    pub fn render(&self) -> String {
        let mut out = format!(
            "plan for revision {} against {} enrolled devices:\n",
            self.revision, self.devices
        );
        let changing: Vec<&ProfileChange> = self
            .changes
            .iter()
            .filter(|c| c.install > 0 || c.remove > 0)
            .collect();
        let acting: Vec<&ActionChange> = self.actions.iter().filter(|a| a.run_on > 0).collect();
        if changing.is_empty() && acting.is_empty() {
            out.push_str("  no changes\n");
        }
        for a in acting {
            // An erase is spelled out: a reviewer must not miss it.
            let kind = if a.kind == "Erase" {
                "ERASE (wipes the device)".to_string()
            } else {
                a.kind.clone()
            };
            out.push_str(&format!(
                "  {:<40} {kind} on {} device(s)\n",
                a.action, a.run_on
            ));
        }
        for c in changing {
            out.push_str(&format!(
                "  {:<40} install on {:>6} · remove from {:>6}   ({})\n",
                c.profile, c.install, c.remove, c.identifier
            ));
        }
        out
    }
}

/// Compares `snapshot` with what every enrolled device has (per the store).
pub async fn preview(store: &dyn Store, snapshot: &PolicySnapshot) -> anyhow::Result<PlanPreview> {
    let mut changes: BTreeMap<String, ProfileChange> = BTreeMap::new();
    let mut actions: BTreeMap<String, ActionChange> = snapshot
        .actions
        .values()
        .map(|a| {
            let change = ActionChange {
                action: a.key.clone(),
                kind: a.spec.kind.as_str().to_string(),
                run_on: 0,
            };
            (a.key.clone(), change)
        })
        .collect();
    let mut after: Option<String> = None;
    let mut devices = 0;
    loop {
        let page = store.list_enrollments(after.as_deref(), 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.device_id.clone());
        for e in page.iter().filter(|e| e.state == EnrollmentState::Enrolled) {
            devices += 1;
            let mut attributes = DeviceAttributes {
                device_id: e.device_id.as_str().into(),
                serial_number: e.serial_number.as_deref().map(Box::from),
                model: e.model.as_deref().map(std::sync::Arc::from),
                os_version: e.os_version.as_deref().map(std::sync::Arc::from),
                enrollment_type: Some(e.enrollment_type.as_str()),
                platform: e
                    .product_name
                    .as_deref()
                    .or(e.model.as_deref())
                    .and_then(super::reported::platform_of),
                ..DeviceAttributes::default()
            };
            attributes.labels =
                snapshot.declared_labels(attributes.serial_number.as_deref(), &e.device_id);
            let targeting: Vec<_> = snapshot
                .actions
                .values()
                .filter(|a| super::actions::targets(snapshot, a, &attributes))
                .collect();
            if !targeting.is_empty() {
                let rows = store.device_actions(&e.device_id).await?;
                for a in targeting {
                    let id = a.action_id();
                    let started = rows.iter().any(|r| {
                        r.action_id == id && r.state != crate::store::actions::ActionState::Waiting
                    });
                    if !started {
                        if let Some(change) = actions.get_mut(&a.key) {
                            change.run_on += 1;
                        }
                    }
                }
            }
            let desired = snapshot.desired_for(&attributes);
            let managed = store.reconcile_state(&e.device_id).await?.managed;
            for p in &desired {
                let current = managed.iter().find(|m| m.identifier == p.identifier);
                if current.is_none_or(|m| m.hash != p.hash) {
                    entry(&mut changes, &p.key, &p.identifier).install += 1;
                }
            }
            for m in &managed {
                let still = desired.iter().any(|p| p.identifier == m.identifier);
                if !still && m.removal_policy == RemovalPolicy::Remove {
                    entry(&mut changes, &m.profile_key, &m.identifier).remove += 1;
                }
            }
        }
    }
    for p in snapshot.profiles.values() {
        entry(&mut changes, &p.key, &p.identifier);
    }
    Ok(PlanPreview {
        revision: snapshot.revision.clone(),
        devices,
        changes: changes.into_values().collect(),
        actions: actions.into_values().collect(),
    })
}

fn entry<'a>(
    changes: &'a mut BTreeMap<String, ProfileChange>,
    key: &str,
    identifier: &str,
) -> &'a mut ProfileChange {
    changes
        .entry(key.to_string())
        .or_insert_with(|| ProfileChange {
            profile: key.to_string(),
            identifier: identifier.to_string(),
            ..ProfileChange::default()
        })
}
