//! Runs device actions against the store, as part of each device's reconcile: finishes the
//! actions whose commands the device answered (an acknowledged erase marks the device wiped),
//! then starts the declared actions that concern the device and have not run on it — each in
//! one transaction with its command, so an action runs once per device and survives restarts.
//! Also starts an administrator's action at once (`start_now`). Decisions are in `actions.rs`.

use super::actions::{decide, finish, targets, DeviceContext, Step};
use super::driver::{lock, Reconciler};
use crate::policy::actions::ActionSpec;
use crate::policy::model::ActionKind;
use crate::policy::selector::DeviceAttributes;
use crate::policy::snapshot::PolicySnapshot;
use crate::protocol::CommandEnvelope;
use crate::store::actions::{ActionRecord, ActionStart, ActionState};
use crate::store::{Enrollment, NewCommand};

/// What a device's reconcile learns from its actions.
#[derive(Debug, Default)]
pub struct ActionsPass {
    /// Commands queued (the device needs a push).
    pub queued: u64,
    /// A declared action waits for DeviceInformation facts.
    pub needs_facts: bool,
    /// The device was wiped: nothing more to plan.
    pub wiped: bool,
}

/// The outcome of an administrator's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub action_id: String,
    pub state: ActionState,
    pub detail: Option<String>,
    pub command_uuid: Option<String>,
}

impl Reconciler {
    /// The actions part of one device's reconcile (see the module doc).
    pub(super) async fn reconcile_actions(
        &self,
        enrollment: &Enrollment,
        attributes: &DeviceAttributes,
        snapshot: &PolicySnapshot,
        now: i64,
    ) -> anyhow::Result<ActionsPass> {
        let device_id = enrollment.device_id.as_str();
        let mut declared: Vec<_> = snapshot
            .actions
            .values()
            .filter(|a| targets(snapshot, a, attributes))
            .collect();
        // A Locate is decided after the others: an EnableLostMode queued in this pass makes it
        // wait rather than be not applicable.
        declared.sort_by_key(|a| a.spec.kind == ActionKind::Locate);
        if declared.is_empty() && !lock(&self.open_actions).contains(device_id) {
            return Ok(ActionsPass::default()); // no store read for devices without actions
        }
        let mut pass = ActionsPass::default();
        let mut records = self.store.device_actions(device_id).await?;

        // 1. Finish what the device answered.
        let mut finishes = Vec::new();
        for record in &mut records {
            let Some(mut done) = finish(record) else {
                continue;
            };
            if done.state == ActionState::Acknowledged && record.action == "Erase" {
                if enrollment.authenticated_at > record.updated_at {
                    // The device enrolled again after the erase was queued: the wipe is done,
                    // and the enrollment that stands is the new one (checking it out would
                    // leave a freshly set-up device refused on every request).
                    tracing::info!(device = %device_id, id = %record.action_id,
                        "erase acknowledged by a device that has enrolled again since");
                } else {
                    pass.wiped = true;
                }
            }
            if record.action == "Lock"
                || record.action == "Erase"
                || record.action == "ClearPasscode"
            {
                done.redacted_command = redacted_copy(record);
            }
            tracing::info!(device = %device_id, action = %record.action, id = %record.action_id,
                state = done.state.as_str(), "device action finished");
            record.state = done.state;
            record.updated_at = now;
            record.detail = done.detail.clone();
            record.result = done.result.clone();
            finishes.push(done);
        }
        self.store.finish_actions(device_id, &finishes, now).await?;
        if pass.wiped {
            self.store.mark_wiped(device_id, now).await?;
            tracing::warn!(device = %device_id, "erase acknowledged: the device is wiped and no longer enrolled");
            lock(&self.open_actions).remove(device_id);
            return Ok(pass);
        }

        // 2. Start declared actions not yet started (or still waiting) on this device.
        let context = DeviceContext {
            facts_known: self.fleet.facts_known(device_id),
            has_unlock_token: enrollment.has_unlock_token,
        };
        let mut starts = Vec::new();
        let mut sending_enable = false;
        for action in declared {
            let id = action.action_id();
            let started = records
                .iter()
                .any(|r| r.action_id == id && r.state != ActionState::Waiting);
            if started {
                continue;
            }
            let step = decide(
                &action.spec,
                attributes,
                &context,
                &records,
                sending_enable,
                true,
            );
            if step == Step::Send && action.spec.kind == ActionKind::EnableLostMode {
                sending_enable = true;
            }
            if matches!(step, Step::WaitForFacts(_)) {
                pass.needs_facts = true;
            }
            // A re-send (its last command was cancelled) needs a command UUID of its own.
            let previous = records
                .iter()
                .find(|r| r.action_id == id)
                .and_then(|r| r.command_uuid.clone());
            let start = self
                .start_for(
                    device_id,
                    attributes,
                    (&id, previous.as_deref()),
                    &action.key,
                    &action.spec,
                    step,
                )
                .await?;
            // Still waiting for the same reason: nothing to write.
            let unchanged = records.iter().any(|r| {
                r.action_id == start.action_id && r.state == start.state && r.detail == start.detail
            });
            if !unchanged {
                starts.push(start);
            }
        }
        if !starts.is_empty() {
            for s in &starts {
                tracing::info!(device = %device_id, id = %s.action_id, state = s.state.as_str(),
                    detail = s.detail.as_deref().unwrap_or(""), "device action");
            }
            pass.queued = self.store.start_actions(device_id, &starts, now).await?;
        }
        let open = records
            .iter()
            .any(|r| matches!(r.state, ActionState::Waiting | ActionState::Queued))
            || starts
                .iter()
                .any(|s| matches!(s.state, ActionState::Waiting | ActionState::Queued));
        if open {
            lock(&self.open_actions).insert(device_id.to_string());
        } else {
            lock(&self.open_actions).remove(device_id);
        }
        Ok(pass)
    }

    /// The row (and command) that starts `spec` on a device after `step` was decided.
    async fn start_for(
        &self,
        device_id: &str,
        attributes: &DeviceAttributes,
        (action_id, previous_command): (&str, Option<&str>),
        source: &str,
        spec: &ActionSpec,
        step: Step,
    ) -> anyhow::Result<ActionStart> {
        let (state, detail, command) = match step {
            Step::Send => {
                let sealer = self.sealer();
                let token = if spec.kind == ActionKind::ClearPasscode {
                    match (self.store.unlock_token(device_id).await?, &sealer) {
                        (Some(stored), Some(sealer)) => Some(sealer.open(&stored)?),
                        (stored, _) => stored,
                    }
                } else {
                    None
                };
                let platform = attributes.platform.map(|p| p.schema_name());
                let dict = spec.command(platform, token.as_deref());
                // Deterministic: the same action on the same device is the same command.
                let uuid = super::plan::command_uuid(
                    device_id,
                    "action",
                    action_id,
                    previous_command.unwrap_or(""),
                    0,
                );
                let command = NewCommand {
                    uuid: uuid.clone(),
                    request_type: spec.kind.request_type().to_string(),
                    command: match &sealer {
                        Some(sealer) => {
                            sealer.seal_command(&dict, CommandEnvelope::encode(&uuid, &dict))
                        }
                        None => CommandEnvelope::encode(&uuid, &dict),
                    },
                    shared: None,
                };
                (ActionState::Queued, None, Some(command))
            }
            Step::Wait(reason) | Step::WaitForFacts(reason) => {
                (ActionState::Waiting, Some(reason), None)
            }
            Step::NotApplicable(reason) => (ActionState::NotApplicable, Some(reason), None),
        };
        Ok(ActionStart {
            action_id: action_id.to_string(),
            action: spec.kind.as_str().to_string(),
            source: source.to_string(),
            state,
            detail,
            command,
        })
    }

    /// Starts an administrator's action on one device at once: not applicable ones are
    /// refused (and recorded), the others queued and the device woken. Facts not reported yet
    /// do not hold it back: the device has the last word.
    pub async fn start_now(
        &self,
        enrollment: &Enrollment,
        spec: &ActionSpec,
    ) -> anyhow::Result<Started> {
        let device_id = enrollment.device_id.as_str();
        // What Authenticate told (platform, OS version) may not be in the index yet: a device
        // enrolled a moment ago is indexed by its first reconcile, which runs on its own thread.
        self.observe_enrollment(enrollment);
        let snapshot = self.snapshot();
        let attributes = self
            .fleet
            .attributes(device_id)
            .unwrap_or_else(|| DeviceAttributes {
                device_id: device_id.into(),
                ..DeviceAttributes::default()
            });
        let attributes = super::membership::with_labels(&snapshot, &attributes);
        let records = self.store.device_actions(device_id).await?;
        let context = DeviceContext {
            facts_known: self.fleet.facts_known(device_id),
            has_unlock_token: enrollment.has_unlock_token,
        };
        let step = decide(spec, &attributes, &context, &records, false, false);
        let action_id = format!("api-{}", uuid::Uuid::new_v4());
        let start = self
            .start_for(
                device_id,
                &attributes,
                (&action_id, None),
                super::actions::API_SOURCE,
                spec,
                step,
            )
            .await?;
        let now = crate::vocab::clock::now_millis();
        let queued = self
            .store
            .start_actions(device_id, std::slice::from_ref(&start), now)
            .await?;
        tracing::info!(device = %device_id, id = %action_id, action = spec.kind.as_str(),
            state = start.state.as_str(), "administrator's device action");
        if queued > 0 {
            lock(&self.open_actions).insert(device_id.to_string());
            self.wake_device(device_id);
        }
        Ok(Started {
            action_id,
            state: if queued > 0 || start.state != ActionState::Queued {
                start.state
            } else {
                // Nothing written: the device is gone (checked out or wiped).
                ActionState::NotApplicable
            },
            detail: if queued > 0 || start.state != ActionState::Queued {
                start.detail
            } else {
                Some("the device is not enrolled".into())
            },
            command_uuid: start.command.map(|c| c.uuid),
        })
    }
}

impl Reconciler {
    /// Enrolled devices each declared action targets now, by action key (`DeviceAction/name`),
    /// from the in-memory index: status counts devices not reconciled yet and says when none
    /// matches. A scan of the index per serial-number action, once per status pass.
    pub fn action_target_counts(&self) -> std::collections::HashMap<String, i64> {
        use crate::policy::actions::ActionTarget;
        let snapshot = self.snapshot();
        let members = self.group_member_counts();
        snapshot
            .actions
            .values()
            .map(|a| {
                let n = match &a.target {
                    ActionTarget::Group(g) => members.get(g).copied().unwrap_or(0),
                    target => self.fleet.count_targets(target),
                };
                (a.key.clone(), n)
            })
            .collect()
    }

    /// A device's serial number, if it reported one.
    pub fn serial_number(&self, device_id: &str) -> Option<String> {
        self.fleet.serial_number(device_id)
    }
}

/// What is kept of a command that may have carried a secret (a PIN, the UnlockToken) once the
/// device answered: its envelope with the RequestType only.
fn redacted_copy(record: &ActionRecord) -> Option<Vec<u8>> {
    let uuid = record.command_uuid.as_deref()?;
    let mut dict = plist::Dictionary::new();
    dict.insert(
        "RequestType".into(),
        plist::Value::String(
            ActionKind::parse(&record.action)
                .map(|k| k.request_type())
                .unwrap_or("Unknown")
                .into(),
        ),
    );
    Some(CommandEnvelope::encode(uuid, &dict))
}
