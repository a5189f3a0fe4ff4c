//! Device actions, decided per device without I/O: which declared actions concern a device,
//! what each needs next (send its command, wait for a fact or for Lost Mode, or give up as not
//! applicable, checked against Apple's command schemas), and how a device's answer finishes an
//! action (acknowledged with a location or a message result, or failed with the ErrorChain).
//! `action_runner.rs` runs these decisions against the store.

use crate::policy::actions::{ActionSpec, ActionTarget, DeclaredAction};
use crate::policy::model::ActionKind;
use crate::policy::selector::{self, DeviceAttributes};
use crate::policy::snapshot::PolicySnapshot;
use crate::protocol::command_support::{command_support, DeviceTraits, Support};
use crate::store::actions::{ActionFinish, ActionRecord, ActionState};
use crate::store::CommandStatus;
use plist::{Dictionary, Value};

/// What to do next about one action on one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Queue the command now.
    Send,
    /// Not yet: the reason says what it waits for (Lost Mode).
    Wait(String),
    /// Not yet: the device has not reported a fact the decision needs (DeviceInformation is
    /// asked for).
    WaitForFacts(String),
    /// The device cannot run it; the reason says why.
    NotApplicable(String),
}

/// What the decisions need to know about a device besides its attributes.
#[derive(Debug, Clone, Default)]
pub struct DeviceContext {
    /// The device answered DeviceInformation at least once (a fact it did not report then is
    /// not coming).
    pub facts_known: bool,
    pub has_unlock_token: bool,
}

/// Whether a declared action targets this device.
pub fn targets(
    snapshot: &PolicySnapshot,
    action: &DeclaredAction,
    device: &DeviceAttributes,
) -> bool {
    match &action.target {
        ActionTarget::SerialNumber(s) => device.serial_number.as_deref() == Some(s.as_str()),
        ActionTarget::Udid(u) => *device.device_id == **u,
        ActionTarget::Group(g) => snapshot
            .groups
            .get(g)
            .is_some_and(|group| selector::is_member(group, device)),
    }
}

/// Whether the device is in Lost Mode as far as its acknowledged actions tell.
pub fn in_lost_mode(records: &[ActionRecord]) -> bool {
    records
        .iter()
        .filter(|r| r.state == ActionState::Acknowledged)
        .filter(|r| r.action == "EnableLostMode" || r.action == "DisableLostMode")
        .max_by_key(|r| r.updated_at)
        .is_some_and(|r| r.action == "EnableLostMode")
}

/// Whether Lost Mode is on its way: an EnableLostMode waiting or queued, or about to be sent.
fn lost_mode_coming(records: &[ActionRecord], sending_enable: bool) -> bool {
    sending_enable
        || records.iter().any(|r| {
            r.action == "EnableLostMode"
                && matches!(r.state, ActionState::Waiting | ActionState::Queued)
        })
}

/// Decides the next step of `spec` on a device. `records` are the device's action rows;
/// `sending_enable`: an EnableLostMode is being queued in the same pass. `strict`: declared
/// actions wait for facts they need; an administrator's immediate action is sent and the
/// device decides.
pub fn decide(
    spec: &ActionSpec,
    device: &DeviceAttributes,
    context: &DeviceContext,
    records: &[ActionRecord],
    sending_enable: bool,
    strict: bool,
) -> Step {
    let Some(platform) = device.platform else {
        if strict && !context.facts_known {
            return Step::WaitForFacts("waiting for the device to report its platform".into());
        }
        return Step::Send;
    };
    let request_type = spec.kind.request_type();
    // A device that answered DeviceInformation without IsSupervised is not supervised.
    let supervised = device.supervised.or(context.facts_known.then_some(false));
    let traits = DeviceTraits {
        platform: platform.schema_name(),
        os_version: device.os_version.as_deref(),
        supervised,
        user_enrollment: device.enrollment_type == Some("UserEnrollment"),
    };
    match command_support(request_type, &traits) {
        Support::Supported => {}
        Support::NotApplicable(reason) => return Step::NotApplicable(reason),
        Support::NeedsFact(fact) if strict => {
            return Step::WaitForFacts(format!("waiting for the device to report {fact}"))
        }
        Support::NeedsFact(_) => {}
    }
    match spec.kind {
        ActionKind::ClearPasscode if !context.has_unlock_token => Step::NotApplicable(
            "ClearPasscode needs the UnlockToken the device gives at enrollment, and this device gave none".into(),
        ),
        ActionKind::Locate if !in_lost_mode(records) => {
            if lost_mode_coming(records, sending_enable) {
                Step::Wait("waiting for Lost Mode to be enabled".into())
            } else {
                Step::NotApplicable(
                    "Locate needs the device in Lost Mode: enable it first (an EnableLostMode action)".into(),
                )
            }
        }
        _ => Step::Send,
    }
}

/// Who started an administrator's action (`ActionRecord::source`).
pub const API_SOURCE: &str = "api";

/// Why a declared action waits after its command was cancelled by a new enrollment.
pub const CANCELLED_BY_ENROLLMENT: &str =
    "the command was cancelled before the device ran it (the device enrolled again); it is sent again";

/// How a queued action ends, once its command has a result; None while it has none.
pub fn finish(record: &ActionRecord) -> Option<ActionFinish> {
    if record.state != ActionState::Queued {
        return None;
    }
    let result: Option<Dictionary> = record
        .command_result
        .as_deref()
        .and_then(|raw| crate::protocol::bounded::decode_into(raw).ok());
    let (state, detail, shown) = match record.command_status? {
        CommandStatus::Queued => return None,
        CommandStatus::Acknowledged => (
            ActionState::Acknowledged,
            None,
            result.as_ref().and_then(|r| shown_result(&record.action, r)),
        ),
        CommandStatus::Error | CommandStatus::CommandFormatError => (
            ActionState::Failed,
            Some(super::fold::error_text(result.as_ref())),
            None,
        ),
        // Not the device's answer: the device enrolled again (or was checked out) before it
        // ran the command. A declared action waits and is sent again to the new enrollment.
        // Only a command never delivered: one the device fetched may have run (an erase whose
        // acknowledgement was lost is followed by exactly such a new enrollment), and running
        // it again could wipe the device a second time.
        CommandStatus::Cancelled if record.source != API_SOURCE && !record.sent => (
            ActionState::Waiting,
            Some(CANCELLED_BY_ENROLLMENT.into()),
            None,
        ),
        CommandStatus::Cancelled if record.sent => (
            ActionState::Failed,
            Some("the device received the command but enrolled again before answering: it may have run; change spec.runId to run it again".into()),
            None,
        ),
        CommandStatus::Cancelled => (
            ActionState::Failed,
            Some("the command was cancelled before the device ran it (the device enrolled again or was checked out); start the action again".into()),
            None,
        ),
    };
    Some(ActionFinish {
        action_id: record.action_id.clone(),
        state,
        detail,
        result: shown.map(|v| v.to_string()),
        redacted_command: None,
    })
}

/// What status shows of an answer: a location for Locate, the message result for Lock.
fn shown_result(action: &str, result: &Dictionary) -> Option<serde_json::Value> {
    let real = |key: &str| match result.get(key) {
        Some(Value::Real(r)) => Some(*r),
        Some(Value::Integer(i)) => i.as_signed().map(|i| i as f64),
        _ => None,
    };
    match action {
        "Locate" => {
            let (latitude, longitude) = (real("Latitude")?, real("Longitude")?);
            Some(serde_json::json!({
                "latitude": latitude,
                "longitude": longitude,
                "horizontal_accuracy": real("HorizontalAccuracy"),
                "timestamp": result.get("Timestamp").and_then(Value::as_string),
            }))
        }
        "Lock" => result
            .get("MessageResult")
            .and_then(Value::as_string)
            .map(|m| serde_json::json!({ "message_result": m })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::actions::ActionParams;
    use crate::policy::model::Platform;

    fn device(platform: Platform, supervised: Option<bool>) -> DeviceAttributes {
        DeviceAttributes {
            device_id: "UDID-1".into(),
            serial_number: Some("SER1".into()),
            platform: Some(platform),
            supervised,
            enrollment_type: Some("Device"),
            ..DeviceAttributes::default()
        }
    }

    fn spec(kind: ActionKind) -> ActionSpec {
        ActionSpec {
            kind,
            params: ActionParams::default(),
        }
    }

    fn record(action: &str, state: ActionState, at: i64) -> ActionRecord {
        ActionRecord {
            action_id: format!("{action}@{at}"),
            device_id: "UDID-1".into(),
            action: action.into(),
            source: "api".into(),
            state,
            command_uuid: Some(format!("C{at}")),
            detail: None,
            result: None,
            created_at: at,
            updated_at: at,
            sent: false,
            command_status: None,
            command_result: None,
        }
    }

    /// (case, action, device, context, the device's rows, strict, expected step prefix)
    type Case<'a> = (
        &'a str,
        ActionKind,
        &'a DeviceAttributes,
        &'a DeviceContext,
        &'a [ActionRecord],
        bool,
        &'a str,
    );

    #[test]
    fn table_of_decisions_per_platform_supervision_and_lost_mode() {
        let known = DeviceContext {
            facts_known: true,
            has_unlock_token: true,
        };
        let unknown = DeviceContext::default();
        let enabled = [record("EnableLostMode", ActionState::Acknowledged, 1)];
        let disabled_later = [
            record("EnableLostMode", ActionState::Acknowledged, 1),
            record("DisableLostMode", ActionState::Acknowledged, 2),
        ];
        let enabling = [record("EnableLostMode", ActionState::Queued, 1)];
        let iphone = device(Platform::Ios, Some(true));
        let mac = device(Platform::MacOs, Some(false));
        let unreported = device(Platform::Ios, None);
        let no_token = DeviceContext {
            facts_known: true,
            has_unlock_token: false,
        };
        let cases: Vec<Case> = vec![
            (
                "lock an iPhone",
                ActionKind::Lock,
                &iphone,
                &known,
                &[],
                true,
                "Send",
            ),
            (
                "lost mode on a Mac",
                ActionKind::EnableLostMode,
                &mac,
                &known,
                &[],
                true,
                "NotApplicable: EnableLostMode",
            ),
            (
                "lost mode, supervision unknown",
                ActionKind::EnableLostMode,
                &unreported,
                &unknown,
                &[],
                true,
                "Wait: waiting for the device to report IsSupervised",
            ),
            (
                "lost mode, facts answered without supervision",
                ActionKind::EnableLostMode,
                &unreported,
                &known,
                &[],
                true,
                "NotApplicable",
            ),
            (
                "an administrator's lost mode, supervision unknown",
                ActionKind::EnableLostMode,
                &unreported,
                &unknown,
                &[],
                false,
                "Send",
            ),
            (
                "locate in lost mode",
                ActionKind::Locate,
                &iphone,
                &known,
                &enabled,
                true,
                "Send",
            ),
            (
                "locate after lost mode ended",
                ActionKind::Locate,
                &iphone,
                &known,
                &disabled_later,
                true,
                "NotApplicable: Locate needs the device in Lost Mode",
            ),
            (
                "locate while lost mode is queued",
                ActionKind::Locate,
                &iphone,
                &known,
                &enabling,
                true,
                "Wait: waiting for Lost Mode",
            ),
            (
                "clear passcode without a token",
                ActionKind::ClearPasscode,
                &iphone,
                &no_token,
                &[],
                true,
                "NotApplicable: ClearPasscode needs the UnlockToken",
            ),
            (
                "erase a Mac",
                ActionKind::Erase,
                &mac,
                &known,
                &[],
                true,
                "Send",
            ),
        ];
        for (name, kind, device, context, records, strict, expected) in cases {
            let step = decide(&spec(kind), device, context, records, false, strict);
            let text = match &step {
                Step::Send => "Send".to_string(),
                Step::Wait(w) | Step::WaitForFacts(w) => format!("Wait: {w}"),
                Step::NotApplicable(r) => format!("NotApplicable: {r}"),
            };
            assert!(text.starts_with(expected), "{name}: {text}");
        }
    }

    #[test]
    fn a_locate_waits_for_a_lost_mode_sent_in_the_same_pass() {
        let step = decide(
            &spec(ActionKind::Locate),
            &device(Platform::Ios, Some(true)),
            &DeviceContext::default(),
            &[],
            true,
            true,
        );
        assert_eq!(
            step,
            Step::Wait("waiting for Lost Mode to be enabled".into())
        );
    }

    #[test]
    fn answers_finish_actions_with_what_status_shows() {
        let mut located = record("Locate", ActionState::Queued, 5);
        located.command_status = Some(CommandStatus::Acknowledged);
        located.command_result = Some(
            br#"<?xml version="1.0"?><plist version="1.0"><dict>
<key>Status</key><string>Acknowledged</string>
<key>Latitude</key><real>52.37</real><key>Longitude</key><real>4.89</real>
<key>HorizontalAccuracy</key><real>12.5</real><key>Timestamp</key><string>2026-11-23T10:00:00Z</string>
</dict></plist>"#
                .to_vec(),
        );
        let f = finish(&located).unwrap();
        assert_eq!(f.state, ActionState::Acknowledged);
        let shown: serde_json::Value = serde_json::from_str(f.result.as_deref().unwrap()).unwrap();
        assert_eq!(shown["latitude"], 52.37);
        assert_eq!(shown["horizontal_accuracy"], 12.5);

        let mut refused = record("EnableLostMode", ActionState::Queued, 6);
        refused.command_status = Some(CommandStatus::Error);
        refused.command_result = Some(
            br#"<?xml version="1.0"?><plist version="1.0"><dict>
<key>Status</key><string>Error</string><key>ErrorChain</key><array><dict>
<key>ErrorCode</key><integer>12078</integer><key>ErrorDomain</key><string>MCMDMErrorDomain</string>
<key>USEnglishDescription</key><string>Device is not supervised</string></dict></array>
</dict></plist>"#
                .to_vec(),
        );
        let f = finish(&refused).unwrap();
        assert_eq!(f.state, ActionState::Failed);
        assert!(f.detail.unwrap().contains("Device is not supervised"));

        let mut still = record("Lock", ActionState::Queued, 7);
        still.command_status = Some(CommandStatus::Queued);
        assert!(
            finish(&still).is_none(),
            "NotNow or not fetched: still queued"
        );
    }

    #[test]
    fn a_cancelled_declared_action_is_sent_again_only_if_the_device_never_received_it() {
        let mut erase = record("Erase", ActionState::Queued, 8);
        erase.source = "DeviceAction/wipe".into();
        erase.command_status = Some(CommandStatus::Cancelled);
        let f = finish(&erase).unwrap();
        assert_eq!(f.state, ActionState::Waiting, "never delivered: sent again");
        // Delivered, then a new enrollment: it may have run (a wipe whose acknowledgement was
        // lost). Running it again could wipe the device twice.
        erase.sent = true;
        let f = finish(&erase).unwrap();
        assert_eq!(f.state, ActionState::Failed);
        assert!(f.detail.unwrap().contains("may have run"));
        // An administrator's action is never re-sent by itself.
        let mut lock = record("Lock", ActionState::Queued, 9);
        lock.command_status = Some(CommandStatus::Cancelled);
        assert_eq!(finish(&lock).unwrap().state, ActionState::Failed);
    }
}
