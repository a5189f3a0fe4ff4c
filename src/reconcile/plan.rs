//! The planner: a pure function from (what this device should carry, what Pomona has installed
//! on it, what it last reported, our commands in flight and just finished, now) to the commands
//! that close the difference and the updated inventory. No I/O, no clock.
//!
//! Per profile identifier the inventory moves Pending → (InstallProfile acknowledged) Verifying
//! → (a later ProfileList lists it with our PayloadUUID) Verified; errors are retried with
//! backoff up to `max_attempts`, then Failed with the device's error text; a verified profile
//! that disappears or changes on the device is reinstalled (drift). Only profiles Pomona
//! installed are ever removed. Command UUIDs derive from (device, intent, identifier, content
//! hash, install count), so planning the same input twice yields the same commands and a
//! replayed enqueue is a no-op.

use crate::policy::snapshot::CompiledProfile;
use crate::vocab::profiles::{
    Intent, ManagedProfile, ProfileState, RemovalPolicy, ReportedProfiles,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A command of ours the device has not answered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub command_uuid: String,
    pub intent: Intent,
    /// Still queued (not sent): it may be cancelled when superseded.
    pub queued: bool,
}

/// The device's answer to one of our commands, not yet folded into the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub command_uuid: String,
    pub intent: Intent,
    pub result: CommandResult,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    Acknowledged,
    /// Error or CommandFormatError, with the device's ErrorChain text.
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    pub max_attempts: u32,
    /// First retry delay; doubled per failed attempt up to `max_backoff_ms`.
    pub backoff_ms: i64,
    pub max_backoff_ms: i64,
    /// How often the driver asks each device for a fresh ProfileList (drift detection).
    pub inventory_interval_ms: i64,
    /// The driver's rollout pacing: devices with installs outstanding at once (0: no limit).
    pub rollout_max_devices: usize,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_ms: 60_000,
            max_backoff_ms: 3_600_000,
            inventory_interval_ms: 4 * 3_600_000,
            rollout_max_devices: 5_000,
        }
    }
}

/// Everything the planner looks at for one device.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub device_id: &'a str,
    pub desired: Vec<&'a CompiledProfile>,
    pub managed: Vec<ManagedProfile>,
    pub reported: Option<&'a ReportedProfiles>,
    pub in_flight: Vec<InFlight>,
    pub finished: Vec<Finished>,
    pub now: i64,
    pub settings: PlanSettings,
}

/// A command to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCommand {
    pub uuid: String,
    pub intent: Intent,
    /// For installs: the .mobileconfig to send.
    pub payload: Option<Arc<Vec<u8>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub commands: Vec<PlannedCommand>,
    /// Queued commands a newer plan supersedes (cancel if still queued).
    pub cancel: Vec<String>,
    /// The inventory after this plan, by identifier.
    pub managed: Vec<ManagedProfile>,
    /// When to plan this device again even if nothing happens (a retry is due).
    pub wake_at: Option<i64>,
}

/// Plans one device: folds what finished into its inventory, cancels what a newer plan
/// supersedes, installs what is declared and not verified, removes what is no longer declared
/// (never what is), and asks for a ProfileList to verify. Pure: same input, same plan.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let PlanInput {
        device_id,
        desired,
        managed,
        reported,
        in_flight,
        finished,
        now,
        settings,
    } = input;
    let mut inventory: BTreeMap<String, ManagedProfile> = managed
        .into_iter()
        .map(|m| (m.identifier.clone(), m))
        .collect();
    apply_finished(&mut inventory, finished, &settings);
    let device = Device {
        id: device_id,
        reported,
        in_flight: &in_flight,
        now,
        settings: &settings,
    };
    let desired_by_id: BTreeMap<&str, &CompiledProfile> = desired
        .iter()
        .map(|p| (p.identifier.as_str(), *p))
        .collect();
    let mut out = Plan {
        cancel: superseded(&in_flight, &desired_by_id),
        ..Plan::default()
    };
    let needs_profile_list = plan_declared(&device, &desired, &mut inventory, &mut out);
    let needs_removal_check = plan_undeclared(&device, &desired_by_id, &mut inventory, &mut out);
    plan_verification(
        &device,
        &inventory,
        needs_profile_list,
        needs_removal_check,
        &mut out,
    );
    out.managed = inventory.into_values().collect();
    out
}

/// What every phase of one device's plan looks at.
struct Device<'a> {
    id: &'a str,
    reported: Option<&'a ReportedProfiles>,
    in_flight: &'a [InFlight],
    now: i64,
    settings: &'a PlanSettings,
}

impl Device<'_> {
    fn install_in_flight(&self, identifier: &str, hash: &str) -> bool {
        self.in_flight.iter().any(|f| {
            matches!(&f.intent, Intent::Install { identifier: i, hash: h } if i == identifier && h == hash)
        })
    }

    fn installing(&self, identifier: &str) -> bool {
        self.in_flight
            .iter()
            .any(|f| matches!(&f.intent, Intent::Install { identifier: i, .. } if i == identifier))
    }

    fn remove_in_flight(&self, identifier: &str) -> bool {
        self.in_flight
            .iter()
            .any(|f| matches!(&f.intent, Intent::Remove { identifier: i } if i == identifier))
    }

    /// When an entry's next attempt is due: now for a first one, after the backoff otherwise.
    fn due(&self, entry: &ManagedProfile) -> i64 {
        match (entry.attempts, entry.last_attempt_at) {
            (0, _) | (_, None) => self.now,
            (n, Some(at)) => at + backoff(n, self.settings),
        }
    }

    /// Whether the device reported its ProfileList since the entry's last attempt or
    /// acknowledgement.
    fn listed_since(&self, entry: &ManagedProfile) -> bool {
        let since = entry
            .last_attempt_at
            .unwrap_or(0)
            .max(entry.acknowledged_at.unwrap_or(0));
        self.reported.is_some_and(|r| r.reported_at > since)
    }
}

/// Plans the device again at `at` at the latest.
fn wake_no_later(out: &mut Plan, at: i64) {
    out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
}

/// Superseded queued commands: installs of another version or of what is no longer
/// desired, and removals of what is desired again (never remove what is declared).
fn superseded(in_flight: &[InFlight], desired: &BTreeMap<&str, &CompiledProfile>) -> Vec<String> {
    let mut cancel = Vec::new();
    for f in in_flight.iter().filter(|f| f.queued) {
        match &f.intent {
            Intent::Install { identifier, hash } => {
                let current = desired.get(identifier.as_str()).map(|p| &p.hash);
                if current != Some(hash) {
                    cancel.push(f.command_uuid.clone());
                }
            }
            Intent::Remove { identifier } if desired.contains_key(identifier.as_str()) => {
                cancel.push(f.command_uuid.clone());
            }
            _ => {}
        }
    }
    cancel
}

/// Installs what is declared and not on the device in its declared content, and judges
/// acknowledged installs against the ProfileList. True when a ProfileList is needed to verify.
fn plan_declared(
    device: &Device<'_>,
    desired: &[&CompiledProfile],
    inventory: &mut BTreeMap<String, ManagedProfile>,
    out: &mut Plan,
) -> bool {
    let (now, settings) = (device.now, device.settings);
    let mut needs_profile_list = false;
    for profile in desired {
        let entry = inventory
            .entry(profile.identifier.clone())
            .or_insert_with(|| fresh(profile));
        entry.profile_key = profile.key.clone();
        entry.removal_policy = profile.removal_policy;
        if entry.hash != profile.hash
            || matches!(
                entry.state,
                ProfileState::Removing | ProfileState::RemovalFailed
            )
        {
            // New content (or wanted again while being removed): a new install cycle.
            *entry = ManagedProfile {
                installs: entry.installs,
                ..fresh(profile)
            };
        }
        if device.install_in_flight(&entry.identifier, &entry.hash) {
            continue;
        }
        match entry.state {
            ProfileState::Failed => {}
            ProfileState::Pending => {
                let due = device.due(entry);
                if now >= due {
                    out.commands.push(install(device.id, entry, profile, now));
                } else {
                    wake_no_later(out, due);
                }
            }
            ProfileState::Verifying => {
                let acknowledged = entry.acknowledged_at.unwrap_or(0);
                match device.reported.filter(|r| r.reported_at > acknowledged) {
                    Some(r) if r.profiles.get(&entry.identifier) == Some(&entry.uuid) => {
                        entry.state = ProfileState::Verified;
                        entry.attempts = 0;
                        entry.last_error = None;
                    }
                    Some(r) => {
                        let why = if r.profiles.contains_key(&entry.identifier) {
                            "the device lists another version after acknowledging the install"
                        } else {
                            "the device acknowledged the install but ProfileList does not list it"
                        };
                        fail_attempt(entry, why.to_string(), now, settings);
                        if entry.state == ProfileState::Pending {
                            out.wake_at = Some(now + backoff(entry.attempts, settings));
                        }
                    }
                    None => needs_profile_list = true,
                }
            }
            ProfileState::Verified => {
                let acknowledged = entry.acknowledged_at.unwrap_or(0);
                if let Some(r) = device.reported.filter(|r| r.reported_at > acknowledged) {
                    if r.profiles.get(&entry.identifier) != Some(&entry.uuid) {
                        // Drift: removed or replaced on the device. Reinstall.
                        entry.state = ProfileState::Pending;
                        entry.attempts = 0;
                        entry.last_error = None;
                        out.commands.push(install(device.id, entry, profile, now));
                    }
                }
            }
            ProfileState::Removing | ProfileState::RemovalFailed => unreachable!("reset above"),
        }
    }
    needs_profile_list
}

/// Removes what is no longer declared (or forgets it: kept by policy, known absent, never
/// installed). True when whether an entry is on the device is in doubt and a ProfileList must
/// say so before anything is removed.
fn plan_undeclared(
    device: &Device<'_>,
    desired: &BTreeMap<&str, &CompiledProfile>,
    inventory: &mut BTreeMap<String, ManagedProfile>,
    out: &mut Plan,
) -> bool {
    let mut needs_removal_check = false;
    let mut forget = Vec::new();
    for entry in inventory
        .values_mut()
        .filter(|m| !desired.contains_key(m.identifier.as_str()))
    {
        if entry.removal_policy == RemovalPolicy::Keep {
            forget.push(entry.identifier.clone()); // left installed, no longer managed
            continue;
        }
        if device.remove_in_flight(&entry.identifier) {
            entry.state = ProfileState::Removing;
            continue;
        }
        let installing = device.installing(&entry.identifier);
        let known_absent = device.listed_since(entry)
            && device
                .reported
                .is_some_and(|r| !r.profiles.contains_key(&entry.identifier));
        if known_absent && !installing {
            forget.push(entry.identifier.clone());
            continue;
        }
        if entry.state == ProfileState::Failed && entry.acknowledged_at.is_none() && !installing {
            forget.push(entry.identifier.clone()); // never installed
            continue;
        }
        let removal = matches!(
            entry.state,
            ProfileState::Removing | ProfileState::RemovalFailed
        );
        if removal && entry.attempts >= device.settings.max_attempts {
            entry.state = ProfileState::RemovalFailed; // given up; status shows why
            continue;
        }
        if !removal {
            entry.state = ProfileState::Removing;
            entry.attempts = 0;
        }
        // Whether it is on the device at all is not known when no install of it was ever
        // acknowledged in this cycle (a device that enrolled again, an install that never
        // arrived): ask the device first, and remove only what its ProfileList shows (an
        // absent one is forgotten above, next time). A refused removal is retried with a
        // ProfileList behind it (see `plan_verification`), which shows whether it is still there.
        let uncertain = entry.acknowledged_at.is_none() && entry.attempts == 0;
        if uncertain && !device.listed_since(entry) && !installing {
            needs_removal_check = true;
            continue;
        }
        let due = device.due(entry);
        if device.now >= due {
            out.commands.push(PlannedCommand {
                uuid: command_uuid(
                    device.id,
                    "remove",
                    &entry.identifier,
                    &format!("{}@{}", entry.hash, device.now),
                    entry.installs + entry.attempts,
                ),
                intent: Intent::Remove {
                    identifier: entry.identifier.clone(),
                },
                payload: None,
            });
        } else {
            wake_no_later(out, due);
        }
    }
    for identifier in forget {
        inventory.remove(&identifier);
    }
    needs_removal_check
}

/// Asks for the ProfileList that verifies this plan: behind its installs and removals, or
/// to settle whether an undeclared profile is there, or to verify acknowledged installs.
fn plan_verification(
    device: &Device<'_>,
    inventory: &BTreeMap<String, ManagedProfile>,
    needs_profile_list: bool,
    needs_removal_check: bool,
    out: &mut Plan,
) {
    let (device_id, now) = (device.id, device.now);
    let list_in_flight = device
        .in_flight
        .iter()
        .any(|f| f.intent == Intent::ProfileList);
    let first_change = out
        .commands
        .iter()
        .find(|c| matches!(c.intent, Intent::Install { .. } | Intent::Remove { .. }))
        .map(|c| c.uuid.clone());
    if let (Some(install_uuid), false) = (first_change, list_in_flight) {
        // Verification rides along: queued behind the installs and removals, the ProfileList
        // is answered in the same session, so a device is verified without a second push, and
        // a removal the device refused shows whether the profile is there at all.
        out.commands.push(PlannedCommand {
            uuid: command_uuid(device_id, "profile-list-after", "", &install_uuid, 0),
            intent: Intent::ProfileList,
            payload: None,
        });
    } else if needs_removal_check && !list_in_flight {
        // Seeded by the minute: asked again while the doubt lasts (a ProfileList the device
        // refused leaves it), at most once a minute and never twice at once.
        out.commands.push(PlannedCommand {
            uuid: command_uuid(
                device_id,
                "profile-list-removal",
                "",
                &(now / 60_000).to_string(),
                0,
            ),
            intent: Intent::ProfileList,
            payload: None,
        });
        wake_no_later(out, (now / 60_000 + 1) * 60_000);
    } else if needs_profile_list && !list_in_flight {
        // Seeded by the newest acknowledgement, so a replay asks once.
        let newest = inventory
            .values()
            .filter_map(|m| m.acknowledged_at)
            .max()
            .unwrap_or(0);
        out.commands.push(PlannedCommand {
            uuid: command_uuid(device_id, "profile-list", "", &newest.to_string(), 0),
            intent: Intent::ProfileList,
            payload: None,
        });
    }
}

fn fresh(profile: &CompiledProfile) -> ManagedProfile {
    ManagedProfile {
        identifier: profile.identifier.clone(),
        profile_key: profile.key.clone(),
        hash: profile.hash.clone(),
        uuid: profile.uuid.clone(),
        state: ProfileState::Pending,
        attempts: 0,
        installs: 0,
        last_attempt_at: None,
        acknowledged_at: None,
        last_error: None,
        removal_policy: profile.removal_policy,
    }
}

/// The time of the plan is part of install and removal UUIDs: the counters alone repeat once
/// an entry is forgotten (removed, then declared again with the same content), and a command
/// whose UUID exists already is never queued again. Same input, same UUID: a replay of one
/// plan still queues nothing new.
fn install(
    device_id: &str,
    entry: &mut ManagedProfile,
    profile: &CompiledProfile,
    now: i64,
) -> PlannedCommand {
    let uuid = command_uuid(
        device_id,
        "install",
        &entry.identifier,
        &format!("{}@{now}", entry.hash),
        entry.installs,
    );
    entry.installs += 1;
    entry.state = ProfileState::Pending;
    PlannedCommand {
        uuid,
        intent: Intent::Install {
            identifier: entry.identifier.clone(),
            hash: entry.hash.clone(),
        },
        payload: Some(profile.mobileconfig.clone()),
    }
}

fn apply_finished(
    inventory: &mut BTreeMap<String, ManagedProfile>,
    finished: Vec<Finished>,
    settings: &PlanSettings,
) {
    // Removal failures are counted here but judged in `plan` (Removing, attempts).
    for f in finished {
        match (&f.intent, f.result) {
            (Intent::Install { identifier, hash }, result) => {
                let Some(entry) = inventory.get_mut(identifier) else {
                    continue;
                };
                if entry.hash != *hash {
                    continue; // an older version's answer
                }
                match result {
                    CommandResult::Acknowledged => {
                        entry.state = ProfileState::Verifying;
                        entry.acknowledged_at = Some(f.at);
                        entry.last_attempt_at = Some(f.at);
                    }
                    CommandResult::Error(chain) => fail_attempt(entry, chain, f.at, settings),
                }
            }
            (Intent::Remove { identifier }, result) => {
                let Some(entry) = inventory.get_mut(identifier) else {
                    continue;
                };
                match result {
                    CommandResult::Acknowledged => {
                        inventory.remove(identifier);
                    }
                    CommandResult::Error(chain) => {
                        // Stays Removing; after max_attempts the planner stops retrying.
                        entry.attempts += 1;
                        entry.last_error = Some(chain);
                        entry.last_attempt_at = Some(f.at);
                    }
                }
            }
            // These arrive as `reported` and as device attributes.
            (Intent::ProfileList | Intent::DeviceInformation, _) => {}
        }
    }
}

fn fail_attempt(entry: &mut ManagedProfile, why: String, at: i64, settings: &PlanSettings) {
    entry.attempts += 1;
    entry.last_error = Some(why);
    entry.last_attempt_at = Some(at);
    entry.state = if entry.attempts >= settings.max_attempts {
        ProfileState::Failed
    } else {
        ProfileState::Pending
    };
}

/// Delay before retry number `attempts` (1-based): base × 2^(attempts−1), capped.
pub fn backoff(attempts: u32, settings: &PlanSettings) -> i64 {
    let factor = 1i64 << attempts.saturating_sub(1).min(20);
    settings
        .backoff_ms
        .saturating_mul(factor)
        .min(settings.max_backoff_ms)
}

/// Deterministic command UUID for an intent.
pub fn command_uuid(device_id: &str, intent: &str, identifier: &str, hash: &str, n: u32) -> String {
    crate::policy::snapshot::stable_uuid(
        format!("{device_id}\0{intent}\0{identifier}\0{hash}\0{n}").as_bytes(),
    )
}
