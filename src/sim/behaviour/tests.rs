//! The simulator's command behaviour, command by command, against what real devices answer.

use super::*;

fn hw() -> Hardware {
    Hardware {
        udid: "U".into(),
        serial_number: "S".into(),
        platform: Platform::IPhone,
        model: "iPhone15,2".into(),
        model_name: "iPhone".into(),
        product_name: "iPhone15,2".into(),
        os_version: "17.4".into(),
        build_version: "21E219".into(),
        device_name: "Test".into(),
        supervised: true,
        location: Location {
            latitude: 52.520008,
            longitude: 13.404954,
        },
    }
}

/// (what the case is, the device, the command's keys, what the error must say)
type Case<'a> = (&'a str, Hardware, &'a [(&'a str, Value)], &'a str);

fn unsupervised_iphone() -> Hardware {
    Hardware {
        supervised: false,
        ..hw()
    }
}

fn mac() -> Hardware {
    Hardware {
        platform: Platform::Mac,
        supervised: false,
        os_version: "14.5".into(),
        ..hw()
    }
}

fn command(pairs: &[(&str, Value)]) -> Dictionary {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn text(v: &str) -> Value {
    Value::String(v.into())
}

/// The ErrorChain's description of an Error answer (panics on anything else).
fn error_description(answer: &Answer) -> String {
    assert_eq!(answer.status, ReportStatus::Error);
    answer.keys["ErrorChain"].as_array().unwrap()[0]
        .as_dictionary()
        .unwrap()["USEnglishDescription"]
        .as_string()
        .unwrap()
        .to_string()
}

fn run(hw: &Hardware, state: &mut DeviceState, request_type: &str, c: &[(&str, Value)]) -> Answer {
    execute(hw, state, request_type, &command(c))
}

fn in_lost_mode() -> DeviceState {
    let mut state = DeviceState::default();
    let a = run(
        &hw(),
        &mut state,
        "EnableLostMode",
        &[("Message", text("Lost"))],
    );
    assert_eq!(a.status, ReportStatus::Acknowledged);
    state
}

fn profile(identifier: &str) -> Vec<u8> {
    format!(
        "<plist version=\"1.0\"><dict><key>PayloadType</key><string>Configuration</string>\
         <key>PayloadIdentifier</key><string>{identifier}</string><key>PayloadUUID</key><string>X</string>\
         <key>PayloadContent</key><array/></dict></plist>"
    )
    .into_bytes()
}

#[test]
fn installed_profiles_appear_in_profile_list_until_removed() {
    let mut state = DeviceState::default();
    let mut install = Dictionary::new();
    install.insert("Payload".into(), Value::Data(profile("com.example.a")));
    assert_eq!(
        execute(&hw(), &mut state, "InstallProfile", &install).status,
        ReportStatus::Acknowledged
    );
    let list = execute(&hw(), &mut state, "ProfileList", &Dictionary::new());
    let entries = list.keys.get("ProfileList").unwrap().as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let mut remove = Dictionary::new();
    remove.insert("Identifier".into(), Value::String("com.example.a".into()));
    assert_eq!(
        execute(&hw(), &mut state, "RemoveProfile", &remove).status,
        ReportStatus::Acknowledged
    );
    assert_eq!(
        execute(&hw(), &mut state, "RemoveProfile", &remove).status,
        ReportStatus::Error
    );
    assert!(state.profiles.is_empty());
}

#[test]
fn device_information_answers_only_the_asked_queries() {
    let mut q = Dictionary::new();
    q.insert(
        "Queries".into(),
        Value::Array(vec![
            Value::String("OSVersion".into()),
            Value::String("Bogus".into()),
        ]),
    );
    let a = execute(&hw(), &mut DeviceState::default(), "DeviceInformation", &q);
    let r = a
        .keys
        .get("QueryResponses")
        .unwrap()
        .as_dictionary()
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r.get("OSVersion").unwrap().as_string(), Some("17.4"));
}

#[test]
fn unknown_commands_answer_error_with_an_error_chain() {
    let a = execute(
        &hw(),
        &mut DeviceState::default(),
        "FlyToTheMoon",
        &Dictionary::new(),
    );
    assert_eq!(a.status, ReportStatus::Error);
    assert!(a.keys.get("ErrorChain").unwrap().as_array().unwrap().len() == 1);
}

#[test]
fn device_lock_locks_and_reports_the_message_result_only_with_a_message() {
    let mut state = DeviceState::default();
    let a = run(&hw(), &mut state, "DeviceLock", &[]);
    assert_eq!(a.status, ReportStatus::Acknowledged);
    assert!(a.keys.is_empty(), "no MessageResult without a message");
    assert!(state.locked);

    let mut state = DeviceState::default();
    let a = run(
        &hw(),
        &mut state,
        "DeviceLock",
        &[("PhoneNumber", text("+1 555 0100"))],
    );
    assert_eq!(a.keys["MessageResult"].as_string(), Some("Success"));

    let mut state = in_lost_mode();
    let a = run(
        &hw(),
        &mut state,
        "DeviceLock",
        &[("Message", text("Call IT"))],
    );
    assert_eq!(
        a.keys["MessageResult"].as_string(),
        Some("DeviceInLostMode")
    );
}

#[test]
fn a_mac_keeps_the_find_my_pin_of_device_lock_without_showing_it() {
    let mut state = DeviceState::default();
    let a = run(
        &mac(),
        &mut state,
        "DeviceLock",
        &[("PIN", text("123456")), ("Message", text("Call IT"))],
    );
    assert_eq!(a.status, ReportStatus::Acknowledged);
    assert_eq!(a.keys["MessageResult"].as_string(), Some("Success"));
    assert!(state.locked);
    assert!(state
        .lock_pin
        .as_ref()
        .is_some_and(|p| p.matches(b"123456")));
    let debug = format!("{state:?}");
    assert!(
        !debug.contains("123456"),
        "the PIN leaked into Debug: {debug}"
    );
}

#[test]
fn a_mac_refuses_a_pin_that_is_not_six_characters_and_does_not_echo_it() {
    for request_type in ["DeviceLock", "EraseDevice"] {
        let mut state = DeviceState::default();
        let a = run(&mac(), &mut state, request_type, &[("PIN", text("12345"))]);
        let why = error_description(&a);
        assert!(
            why.contains("six characters") && !why.contains("12345"),
            "{why}"
        );
        assert!(!state.locked && !state.erased, "{request_type}");
    }
}

#[test]
fn erase_device_acknowledges_and_marks_the_device_erased_ending_lost_mode() {
    let mut state = in_lost_mode();
    let a = run(&hw(), &mut state, "EraseDevice", &[]);
    assert_eq!(a.status, ReportStatus::Acknowledged);
    assert!(state.erased);
    assert!(state.lost_mode.is_none());
    let mut state = DeviceState::default();
    let a = run(
        &mac(),
        &mut state,
        "EraseDevice",
        &[("PIN", text("654321"))],
    );
    assert_eq!(a.status, ReportStatus::Acknowledged);
    assert!(state.erased);
}

#[test]
fn enable_lost_mode_shows_the_message_phone_and_footnote_on_a_supervised_iphone() {
    let mut state = DeviceState::default();
    let a = run(
        &hw(),
        &mut state,
        "EnableLostMode",
        &[
            ("Message", text("Lost")),
            ("PhoneNumber", text("+1 555 0100")),
            ("Footnote", text("Acme")),
        ],
    );
    assert_eq!(a.status, ReportStatus::Acknowledged);
    assert_eq!(
        state.lost_mode,
        Some(LostMode {
            message: Some("Lost".into()),
            phone_number: Some("+1 555 0100".into()),
            footnote: Some("Acme".into()),
        })
    );
    assert!(state.locked);
}

#[test]
fn enable_lost_mode_is_refused_without_supervision_on_a_mac_and_without_text() {
    let message = [("Message", text("Lost"))];
    let cases: [Case; 3] = [
        (
            "unsupervised iPhone",
            unsupervised_iphone(),
            &message,
            "requires a supervised device",
        ),
        ("Mac", mac(), &message, "not supported on this platform"),
        (
            "no message nor phone",
            hw(),
            &[("Footnote", text("Acme"))],
            "needs a Message or a PhoneNumber",
        ),
    ];
    for (what, hardware, c, expected) in cases {
        let mut state = DeviceState::default();
        let why = error_description(&run(&hardware, &mut state, "EnableLostMode", c));
        assert!(why.contains(expected), "{what}: {why}");
        assert!(state.lost_mode.is_none(), "{what}");
    }
}

#[test]
fn device_location_answers_every_schema_key_in_lost_mode() {
    let mut state = in_lost_mode();
    let a = run(&hw(), &mut state, "DeviceLocation", &[]);
    assert_eq!(a.status, ReportStatus::Acknowledged);
    assert_eq!(a.keys["Latitude"].as_real(), Some(52.520008));
    assert_eq!(a.keys["Longitude"].as_real(), Some(13.404954));
    for key in [
        "HorizontalAccuracy",
        "VerticalAccuracy",
        "Altitude",
        "Speed",
        "Course",
    ] {
        assert!(a.keys[key].as_real().is_some(), "{key} must be a real");
    }
    let timestamp = a.keys["Timestamp"].as_string().unwrap();
    let parsed =
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("Timestamp {timestamp:?} is not RFC 3339: {e}"));
    assert_eq!(parsed.offset(), time::UtcOffset::UTC);
}

#[test]
fn device_location_outside_lost_mode_is_an_error_saying_so() {
    let why = error_description(&run(
        &hw(),
        &mut DeviceState::default(),
        "DeviceLocation",
        &[],
    ));
    assert!(why.contains("not in Lost Mode"), "{why}");
    let why = error_description(&run(
        &mac(),
        &mut DeviceState::default(),
        "DeviceLocation",
        &[],
    ));
    assert!(why.contains("not supported"), "{why}");
}

#[test]
fn disable_lost_mode_clears_it_and_is_an_error_when_not_in_lost_mode() {
    let mut state = in_lost_mode();
    let a = run(&hw(), &mut state, "DisableLostMode", &[]);
    assert_eq!(a.status, ReportStatus::Acknowledged);
    assert!(state.lost_mode.is_none());
    let why = error_description(&run(&hw(), &mut state, "DisableLostMode", &[]));
    assert!(why.contains("not in Lost Mode"), "{why}");
    let why = error_description(&run(
        &unsupervised_iphone(),
        &mut DeviceState::default(),
        "DisableLostMode",
        &[],
    ));
    assert!(why.contains("supervised"), "{why}");
}

#[test]
fn shut_down_and_restart_are_counted_on_supervised_iphones_and_macs_only() {
    for hardware in [hw(), mac()] {
        let mut state = DeviceState::default();
        for request_type in ["ShutDownDevice", "RestartDevice", "RestartDevice"] {
            let a = run(&hardware, &mut state, request_type, &[]);
            assert_eq!(
                a.status,
                ReportStatus::Acknowledged,
                "{request_type} on {:?}",
                hardware.platform
            );
        }
        assert_eq!((state.shutdowns, state.restarts), (1, 2));
    }
    let mut state = DeviceState::default();
    for request_type in ["ShutDownDevice", "RestartDevice"] {
        let why = error_description(&run(&unsupervised_iphone(), &mut state, request_type, &[]));
        assert!(
            why.contains(request_type) && why.contains("supervised"),
            "{why}"
        );
    }
    assert_eq!((state.shutdowns, state.restarts), (0, 0));
}

#[test]
fn clear_passcode_needs_this_devices_unlock_token() {
    let token = vec![7u8; 32];
    let fresh = || DeviceState {
        unlock_token: Secret::new(token.clone()),
        ..DeviceState::default()
    };
    let mut state = fresh();
    let a = run(
        &hw(),
        &mut state,
        "ClearPasscode",
        &[("UnlockToken", Value::Data(token.clone()))],
    );
    assert_eq!(a.status, ReportStatus::Acknowledged);
    assert!(state.passcode_cleared);
    let security = run(&hw(), &mut state, "SecurityInfo", &[]);
    assert_eq!(
        security.keys["SecurityInfo"].as_dictionary().unwrap()["PasscodePresent"].as_boolean(),
        Some(false)
    );

    let cases: [Case; 4] = [
        (
            "wrong token",
            hw(),
            &[("UnlockToken", Value::Data(vec![8u8; 32]))],
            "not the one this device sent",
        ),
        (
            "token as a string",
            hw(),
            &[("UnlockToken", text("0707"))],
            "as <data>",
        ),
        ("no token", hw(), &[], "as <data>"),
        (
            "on a Mac",
            mac(),
            &[("UnlockToken", Value::Data(token.clone()))],
            "not supported",
        ),
    ];
    for (what, hardware, c, expected) in cases {
        let mut state = fresh();
        let why = error_description(&run(&hardware, &mut state, "ClearPasscode", c));
        assert!(why.contains(expected), "{what}: {why}");
        assert!(!state.passcode_cleared, "{what}");
    }
    assert!(
        !format!("{:?}", fresh()).contains("7, 7"),
        "the unlock token leaked into Debug"
    );
}

#[test]
fn device_information_reports_supervision_and_lost_mode_from_the_device() {
    let queries = [(
        "Queries",
        Value::Array(vec![text("IsSupervised"), text("IsMDMLostModeEnabled")]),
    )];
    let answer = |hardware: &Hardware, state: &mut DeviceState| {
        let a = run(hardware, state, "DeviceInformation", &queries);
        a.keys["QueryResponses"].as_dictionary().unwrap().clone()
    };
    let r = answer(&unsupervised_iphone(), &mut DeviceState::default());
    assert_eq!(r["IsSupervised"].as_boolean(), Some(false));
    assert_eq!(r["IsMDMLostModeEnabled"].as_boolean(), Some(false));
    let r = answer(&hw(), &mut in_lost_mode());
    assert_eq!(r["IsSupervised"].as_boolean(), Some(true));
    assert_eq!(r["IsMDMLostModeEnabled"].as_boolean(), Some(true));
    let r = answer(&mac(), &mut DeviceState::default());
    assert_eq!(r["IsSupervised"].as_boolean(), Some(false));
    assert!(
        r.get("IsMDMLostModeEnabled").is_none(),
        "Macs do not know this query"
    );
}
