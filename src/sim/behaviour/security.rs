//! Commands that lock, erase, find or power a simulated device: DeviceLock, EraseDevice, Lost
//! Mode and DeviceLocation, ShutDownDevice, RestartDevice and ClearPasscode, each refused where
//! a real device of that platform or supervision refuses it.

use super::{
    not_supervised, unsupported, Answer, DeviceState, Hardware, Location, LostMode, Platform,
    Secret, ERR_BAD_UNLOCK_TOKEN, ERR_MALFORMED, ERR_NOT_IN_LOST_MODE, ERR_UNSUPPORTED, MDM_DOMAIN,
};
use plist::{Dictionary, Value};

/// Lost Mode exists only on supervised iPhones and iPads.
fn needs_supervised_ios(hw: &Hardware, request_type: &str) -> Option<Answer> {
    if !hw.platform.is_ios() {
        Some(Answer::error(
            ERR_UNSUPPORTED,
            MDM_DOMAIN,
            &format!("The MDM command “{request_type}” is not supported on this platform (Lost Mode is iOS and iPadOS only)."),
        ))
    } else if !hw.supervised {
        Some(not_supervised(request_type))
    } else {
        None
    }
}

/// A Mac takes a six-character Find My PIN with DeviceLock and EraseDevice and refuses
/// anything else; other platforms do not know the key and ignore it.
fn check_mac_pin(hw: &Hardware, request_type: &str, command: &Dictionary) -> Option<Answer> {
    if hw.platform != Platform::Mac {
        return None;
    }
    match command.get("PIN") {
        None => None,
        Some(Value::String(pin)) if pin.chars().count() == 6 => None,
        // The PIN itself is never repeated in the answer.
        Some(_) => Some(Answer::error(
            ERR_MALFORMED,
            MDM_DOMAIN,
            &format!("{request_type}: the PIN must be a string of six characters."),
        )),
    }
}

pub(super) fn device_lock(hw: &Hardware, state: &mut DeviceState, command: &Dictionary) -> Answer {
    if let Some(refusal) = check_mac_pin(hw, "DeviceLock", command) {
        return refusal;
    }
    let shows_text = ["Message", "PhoneNumber"]
        .iter()
        .any(|key| command.get(key).and_then(Value::as_string).is_some());
    let mut keys = Dictionary::new();
    if shows_text {
        // MessageResult values as the schema lists them.
        let result = if state.lost_mode.is_some() {
            "DeviceInLostMode"
        } else if state.passcode_cleared && hw.platform.is_ios() {
            "NoPasscodeSet"
        } else {
            "Success"
        };
        keys.insert("MessageResult".into(), Value::String(result.into()));
    }
    if hw.platform == Platform::Mac {
        state.lock_pin = command
            .get("PIN")
            .and_then(Value::as_string)
            .map(|pin| Secret::new(pin.as_bytes()));
    }
    state.locked = true;
    Answer::ack(keys)
}

pub(super) fn erase_device(hw: &Hardware, state: &mut DeviceState, command: &Dictionary) -> Answer {
    if let Some(refusal) = check_mac_pin(hw, "EraseDevice", command) {
        return refusal;
    }
    // The device acknowledges, then wipes itself: `SimDevice::exchange` reports this
    // answer and then stops talking to the server. Erasing also ends Lost Mode.
    state.erased = true;
    state.lost_mode = None;
    Answer::ack(Dictionary::new())
}

pub(super) fn enable_lost_mode(
    hw: &Hardware,
    state: &mut DeviceState,
    command: &Dictionary,
) -> Answer {
    if let Some(refusal) = needs_supervised_ios(hw, "EnableLostMode") {
        return refusal;
    }
    let text = |key: &str| {
        command
            .get(key)
            .and_then(Value::as_string)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
    };
    let lost = LostMode {
        message: text("Message"),
        phone_number: text("PhoneNumber"),
        footnote: text("Footnote"),
    };
    if lost.message.is_none() && lost.phone_number.is_none() {
        return Answer::error(
            ERR_MALFORMED,
            MDM_DOMAIN,
            "EnableLostMode needs a Message or a PhoneNumber to show on the Lock Screen.",
        );
    }
    state.lost_mode = Some(lost);
    state.locked = true; // Lost Mode locks the device.
    Answer::ack(Dictionary::new())
}

pub(super) fn device_location(hw: &Hardware, state: &DeviceState) -> Answer {
    if let Some(refusal) = needs_supervised_ios(hw, "DeviceLocation") {
        return refusal;
    }
    if state.lost_mode.is_none() {
        return Answer::error(
            ERR_NOT_IN_LOST_MODE,
            MDM_DOMAIN,
            "DeviceLocation: the device is not in Lost Mode.",
        );
    }
    Answer::ack(location_keys(hw.location))
}

pub(super) fn disable_lost_mode(hw: &Hardware, state: &mut DeviceState) -> Answer {
    if let Some(refusal) = needs_supervised_ios(hw, "DisableLostMode") {
        return refusal;
    }
    // Apple documents 12067 for a device that is not in Lost Mode.
    if state.lost_mode.take().is_none() {
        return Answer::error(
            ERR_NOT_IN_LOST_MODE,
            MDM_DOMAIN,
            "DisableLostMode: the device is not in Lost Mode.",
        );
    }
    Answer::ack(Dictionary::new())
}

pub(super) fn shut_down(hw: &Hardware, state: &mut DeviceState) -> Answer {
    if hw.platform.is_ios() && !hw.supervised {
        return not_supervised("ShutDownDevice");
    }
    // A real device is offline from here until someone powers it on; the simulated
    // one keeps answering so a test can go on with it.
    state.shutdowns += 1;
    Answer::ack(Dictionary::new())
}

pub(super) fn restart(hw: &Hardware, state: &mut DeviceState) -> Answer {
    if hw.platform.is_ios() && !hw.supervised {
        return not_supervised("RestartDevice");
    }
    state.restarts += 1;
    Answer::ack(Dictionary::new())
}

pub(super) fn clear_passcode(
    hw: &Hardware,
    state: &mut DeviceState,
    command: &Dictionary,
) -> Answer {
    if !hw.platform.is_ios() {
        return unsupported("ClearPasscode");
    }
    let Some(token) = command.get("UnlockToken").and_then(Value::as_data) else {
        return Answer::error(
            ERR_MALFORMED,
            MDM_DOMAIN,
            "ClearPasscode needs UnlockToken as <data> (the token from this device's TokenUpdate).",
        );
    };
    // Neither token is echoed: the unlock token is a secret.
    if state.unlock_token.expose().is_empty() || !state.unlock_token.matches(token) {
        return Answer::error(
            ERR_BAD_UNLOCK_TOKEN,
            MDM_DOMAIN,
            "ClearPasscode: the UnlockToken is not the one this device sent in TokenUpdate.",
        );
    }
    state.passcode_cleared = true;
    Answer::ack(Dictionary::new())
}

/// DeviceLocation's result keys, all required by the schema. Accuracy, altitude, speed and
/// course are plausible constants for a phone lying still; the time is now.
fn location_keys(location: Location) -> Dictionary {
    let mut keys = Dictionary::new();
    let mut real = |key: &str, value: f64| {
        keys.insert(key.into(), Value::Real(value));
    };
    real("Latitude", location.latitude);
    real("Longitude", location.longitude);
    real("HorizontalAccuracy", 12.0);
    real("VerticalAccuracy", 8.0);
    real("Altitude", 41.0);
    real("Speed", 0.0);
    real("Course", -1.0); // negative: unknown (the device is not moving)
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let timestamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());
    keys.insert("Timestamp".into(), Value::String(timestamp));
    keys
}
