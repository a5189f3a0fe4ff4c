//! A DeviceAction's status, without I/O: its devices counted by phase (Pending, Sent,
//! Acknowledged, Failed, NotApplicable; targeted devices without a row yet count as pending),
//! the conditions those counts mean, and one line per device (with a Locate's location). The
//! status writer (`status.rs`) reads the store and writes what this renders. Never a secret:
//! only device ids, serial numbers and device-reported reasons.

use super::conditions::*;
use super::source::Verdict;
use crate::policy::crd::{ActionDeviceStatus, ActionStatus, DeviceLocation};
use crate::store::actions::{ActionCounts, ActionRecord};

/// Where the devices of one DeviceAction are: the store's rows, plus devices the action
/// targets that have no row yet (counted as pending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionTally {
    pub targeted: i64,
    pub pending: i64,
    pub sent: i64,
    pub acknowledged: i64,
    pub failed: i64,
    pub not_applicable: i64,
}

impl ActionTally {
    /// `rows`: the store's counts; `matched`: enrolled devices the action targets now.
    pub fn of(rows: &ActionCounts, matched: i64) -> Self {
        let unstarted = (matched - rows.targeted()).max(0);
        Self {
            targeted: rows.targeted() + unstarted,
            pending: rows.pending + unstarted,
            sent: rows.sent,
            acknowledged: rows.acknowledged,
            failed: rows.failed,
            not_applicable: rows.not_applicable,
        }
    }
}

/// The conditions for a DeviceAction. Ready once every targeted device acknowledged it or
/// cannot run it; Reconciling while any is pending or sent (or none is enrolled yet: `nobody`
/// says which device it waits for); Stalled when invalid or any device failed (an action is
/// not retried: a human decides). `failing` names failed devices, `not_applicable` why some
/// devices cannot run it. Pure.
pub fn action_conditions(
    verdict: &Verdict,
    tally: &ActionTally,
    nobody: &str,
    failing: &str,
    not_applicable: &str,
) -> Desired {
    let open = tally.pending + tally.sent;
    let plain = |ready: bool, reconciling: bool, stalled: bool, reason, message| Desired {
        ready: (ready, reason, message),
        reconciling: (reconciling, reason),
        stalled: (stalled, reason),
        counts: None,
    };
    match verdict {
        // Actions are never kept from an older generation (see `last_good.rs`).
        Verdict::Invalid { errors, .. } => plain(false, false, true, "Invalid", errors.join("; ")),
        Verdict::Deleting => plain(false, true, false, "Deleting", "being deleted".into()),
        // Only Profile and Restrictions keep groups: an action never reads GroupsMissing.
        Verdict::Accepted { warnings } | Verdict::GroupsMissing { warnings, .. } => {
            let warn = if warnings.is_empty() {
                String::new()
            } else {
                format!(" (warnings: {})", warnings.join("; "))
            };
            let na = if tally.not_applicable > 0 {
                format!(
                    ", not applicable to {} ({not_applicable})",
                    tally.not_applicable
                )
            } else {
                String::new()
            };
            if tally.failed > 0 {
                let mut d = plain(
                    false,
                    open > 0,
                    true,
                    "DevicesFailed",
                    format!(
                        "{} of {} device(s) failed: {failing}{warn}",
                        tally.failed, tally.targeted
                    ),
                );
                if open > 0 {
                    d.reconciling.1 = "InProgress";
                }
                d
            } else if tally.targeted == 0 {
                plain(false, true, false, "NoDevices", format!("{nobody}{warn}"))
            } else if open > 0 {
                plain(
                    false,
                    true,
                    false,
                    "InProgress",
                    format!(
                        "{} of {} device(s) done: {} acknowledged, {} pending, {} sent{na}{warn}",
                        tally.acknowledged + tally.not_applicable,
                        tally.targeted,
                        tally.acknowledged,
                        tally.pending,
                        tally.sent
                    ),
                )
            } else {
                plain(
                    true,
                    false,
                    false,
                    "Done",
                    format!("acknowledged by {} device(s){na}{warn}", tally.acknowledged),
                )
            }
        }
    }
}

/// A DeviceAction's full status (transition times kept as in `render`).
pub fn render_action(
    desired: &Desired,
    tally: &ActionTally,
    devices: Vec<ActionDeviceStatus>,
    generation: Option<i64>,
    revision: &str,
    old: Option<&ActionStatus>,
    now: &str,
) -> ActionStatus {
    ActionStatus {
        observed_generation: generation,
        conditions: conditions(
            desired,
            generation,
            old.map_or(&[][..], |o| &o.conditions),
            now,
        ),
        targeted: Some(tally.targeted),
        pending: Some(tally.pending),
        sent: Some(tally.sent),
        acknowledged: Some(tally.acknowledged),
        failed: Some(tally.failed),
        not_applicable: Some(tally.not_applicable),
        devices,
        revision: Some(revision.to_string()),
    }
}

/// One device's line in a DeviceAction's status. `result` is the row's JSON (a location for
/// Locate); the row never holds a secret.
pub fn device_line(record: &ActionRecord, serial_number: Option<String>) -> ActionDeviceStatus {
    let location = record
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|r| {
            Some(DeviceLocation {
                latitude: r["latitude"].as_f64()?,
                longitude: r["longitude"].as_f64()?,
                horizontal_accuracy: r["horizontal_accuracy"].as_f64(),
                timestamp: r["timestamp"].as_str().map(str::to_string),
            })
        });
    ActionDeviceStatus {
        device: record.device_id.clone(),
        serial_number,
        state: record.phase().as_str().to_string(),
        detail: record.detail.clone(),
        location,
        updated: crate::pki::ca::rfc3339_seconds(record.updated_at / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(pending: i64, sent: i64, acknowledged: i64, failed: i64, na: i64) -> ActionTally {
        ActionTally {
            targeted: pending + sent + acknowledged + failed + na,
            pending,
            sent,
            acknowledged,
            failed,
            not_applicable: na,
        }
    }

    #[test]
    fn action_conditions_follow_the_devices() {
        let ok = Verdict::Accepted { warnings: vec![] };
        let state = |d: &Desired| (d.ready.0, d.reconciling.0, d.stalled.0);
        let nobody = "no enrolled device matches serial number C02X yet";
        let d = action_conditions(&ok, &tally(0, 0, 0, 0, 0), nobody, "", "");
        assert_eq!(state(&d), (false, true, false));
        assert_eq!((d.ready.1, d.ready.2.as_str()), ("NoDevices", nobody));
        let d = action_conditions(&ok, &tally(1, 1, 1, 0, 0), nobody, "", "");
        assert_eq!(state(&d), (false, true, false));
        assert_eq!(
            d.ready.2,
            "1 of 3 device(s) done: 1 acknowledged, 1 pending, 1 sent"
        );
        let d = action_conditions(&ok, &tally(0, 0, 2, 0, 1), nobody, "", "D3: iOS only");
        assert_eq!(state(&d), (true, false, false));
        assert_eq!(
            d.ready.2,
            "acknowledged by 2 device(s), not applicable to 1 (D3: iOS only)"
        );
        let d = action_conditions(&ok, &tally(1, 0, 1, 1, 0), nobody, "D2: refused", "");
        assert_eq!(state(&d), (false, true, true));
        assert_eq!(d.stalled.1, "DevicesFailed");
        assert!(d.ready.2.contains("1 of 3 device(s) failed: D2: refused"));
        let bad = Verdict::Invalid {
            errors: vec!["spec.pin.secretKeyRef: Secret mdm/pin does not exist".into()],
            in_force: None,
        };
        let d = action_conditions(&bad, &ActionTally::default(), "", "", "");
        assert_eq!(state(&d), (false, false, true));
        assert_eq!(d.stalled.1, "Invalid");
        let status = render_action(
            &d,
            &ActionTally::default(),
            vec![],
            Some(3),
            "r",
            None,
            "T1",
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.conditions.len(), 3);
        assert!(status.conditions[2].message.contains("Secret mdm/pin"));
    }

    #[test]
    fn unstarted_devices_count_as_pending() {
        let rows = ActionCounts {
            acknowledged: 2,
            ..ActionCounts::default()
        };
        assert_eq!(ActionTally::of(&rows, 3), tally(1, 0, 2, 0, 0));
        // A device that left the group keeps its row; nothing goes negative.
        assert_eq!(ActionTally::of(&rows, 1), tally(0, 0, 2, 0, 0));
    }
}
