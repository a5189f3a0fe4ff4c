//! Device actions end to end, over real HTTPS with simulated devices: declared actions run once
//! per device (Lost Mode then a location, a Mac locked with its PIN, NotApplicable where the
//! platform or supervision cannot run them), re-applying unchanged sends nothing, an action
//! survives a server restart, an administrator locks, locates and erases through the API and
//! the CLI, and the PIN shows up nowhere an administrator can look.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use support::TestServer;

const PIN: &str = "482913";

/// Devices by `sim::hardware` index: 0–2 iPhones, 3 an iPad, 4 a Mac.
const PHONE: usize = 0;
const UNSUPERVISED_PHONE: usize = 1;
const MAC: usize = 4;

fn action(name: &str, body: &str) -> String {
    format!("apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceAction\nmetadata: {{name: {name}}}\nspec:\n{body}\n---\n")
}

fn actions_policy(phone_serial: &str, unsupervised_udid: &str, mac_serial: &str) -> String {
    [
        action(
            "lost-phone",
            &format!("  target: {{serialNumber: {phone_serial}}}\n  action: EnableLostMode\n  message: Please call IT\n  phoneNumber: '+31 20 555 0100'"),
        ),
        action(
            "locate-phone",
            &format!("  target: {{serialNumber: {phone_serial}}}\n  action: Locate"),
        ),
        action(
            "lost-unsupervised",
            &format!("  target: {{udid: {unsupervised_udid}}}\n  action: EnableLostMode\n  message: Lost"),
        ),
        action(
            "lock-mac",
            &format!("  target: {{serialNumber: {mac_serial}}}\n  action: Lock\n  message: Locked by IT\n  pin: {{file: secrets/mac.pin}}"),
        ),
        action(
            "lost-mac",
            &format!("  target: {{serialNumber: {mac_serial}}}\n  action: EnableLostMode\n  message: Lost"),
        ),
    ]
    .concat()
}

fn write_actions(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/mac.pin"), format!("{PIN}\n")).unwrap();
    std::fs::write(dir.join("actions.yaml"), text).unwrap();
}

fn declared<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .unwrap_or(&Value::Null)
}

async fn request_types(server: &TestServer, device: &str) -> Vec<String> {
    server
        .commands(device)
        .await
        .iter()
        .map(|c| c["request_type"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn count(types: &[String], request_type: &str) -> usize {
    types.iter().filter(|t| *t == request_type).count()
}

/// Everything an administrator can read about a device and the actions, as one text.
async fn everything_visible(server: &TestServer, devices: &[&str]) -> String {
    let mut seen = String::new();
    for path in ["/api/v1/status", "/api/v1/actions", "/api/v1/devices"] {
        seen.push_str(&server.admin_get(path).await.1.to_string());
    }
    for device in devices {
        for suffix in ["", "/commands", "/actions"] {
            let path = format!("/api/v1/devices/{device}{suffix}");
            seen.push_str(&server.admin_get(&path).await.1.to_string());
        }
    }
    let (_, actions) = server.admin_get("/api/v1/actions").await;
    for a in actions["actions"].as_array().into_iter().flatten() {
        let id = a["action_id"].as_str().unwrap().replace('/', "%2F");
        seen.push_str(
            &server
                .admin_get(&format!("/api/v1/actions/{id}"))
                .await
                .1
                .to_string(),
        );
    }
    seen.push_str(&server.metrics().await);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_actions_run_once_per_device_with_their_outcomes() {
    let policy = tempfile::tempdir().unwrap();
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| {
        a.policy_dir = Some(dir);
        a.inventory_interval_secs = Some(3600);
    })
    .await;

    let mut phone = server.enrolled_device(PHONE).await;
    let mut unsupervised = server.device(UNSUPERVISED_PHONE);
    unsupervised.hw.supervised = false;
    unsupervised.enroll().await.unwrap();
    let mut mac = server.enrolled_device(MAC).await;
    let (phone_id, unsupervised_id, mac_id) = (
        phone.udid().to_string(),
        unsupervised.udid().to_string(),
        mac.udid().to_string(),
    );
    // First the phone is shut down once (which needs supervision, so the server asks the phone
    // for its facts): Lost Mode and Locate below then arrive for a device whose facts are known.
    let shutdown = action(
        "shutdown-phone",
        &format!(
            "  target: {{serialNumber: {}}}\n  action: Shutdown",
            phone.hw.serial_number
        ),
    );
    write_actions(policy.path(), &shutdown);
    server
        .converge(&mut [&mut phone], "shutdown", |s| {
            declared(s, "shutdown-phone")["acknowledged"] == 1
        })
        .await;
    assert_eq!(phone.state.shutdowns, 1);
    let text = shutdown
        + &actions_policy(
            &phone.hw.serial_number,
            &unsupervised_id,
            &mac.hw.serial_number,
        );
    write_actions(policy.path(), &text);

    let s = server
        .converge(
            &mut [&mut phone, &mut unsupervised, &mut mac],
            "declared actions",
            |s| {
                declared(s, "lost-phone")["acknowledged"] == 1
                    && declared(s, "locate-phone")["acknowledged"] == 1
                    && declared(s, "lost-unsupervised")["not_applicable"] == 1
                    && declared(s, "lock-mac")["acknowledged"] == 1
                    && declared(s, "lost-mac")["not_applicable"] == 1
            },
        )
        .await;

    // What the devices did.
    assert!(phone.state.lost_mode.is_some(), "the phone is in Lost Mode");
    assert!(mac.state.locked, "the Mac is locked");
    assert!(
        mac.state
            .lock_pin
            .as_ref()
            .is_some_and(|p| p.matches(PIN.as_bytes())),
        "the Mac got the PIN from the file"
    );
    assert!(unsupervised.state.lost_mode.is_none());

    // Why the others did not run, and where the phone is.
    let reasons = declared(&s, "lost-unsupervised")["failing_devices"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reasons.contains("supervised"), "{s:#}");
    let mac_reason = declared(&s, "lost-mac")["failing_devices"][0]["reason"].to_string();
    assert!(mac_reason.contains("macOS"), "{s:#}");
    let (code, located) = server
        .admin_get("/api/v1/actions/DeviceAction/locate-phone")
        .await;
    assert_eq!(code, 200, "{located}");
    let result = &located["devices"][0]["result"];
    assert_eq!(
        result["latitude"],
        json!(phone.hw.location.latitude),
        "{located:#}"
    );
    assert_eq!(
        result["longitude"],
        json!(phone.hw.location.longitude),
        "{located:#}"
    );
    assert_eq!(located["devices"][0]["state"], "Acknowledged");

    // Re-applying the same actions (a new revision, unchanged actions) sends nothing again.
    std::fs::write(
        policy.path().join("group.yaml"),
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata: {name: unrelated}\nspec: {serialNumbers: [NONE]}\n",
    )
    .unwrap();
    let before = s["policy"]["revision"].clone();
    server
        .converge(&mut [&mut phone, &mut mac], "new revision", |s| {
            s["policy"]["revision"] != before
        })
        .await;
    for _ in 0..5 {
        let _ = phone.exchange().await;
        let _ = mac.exchange().await;
    }
    let phone_commands = request_types(&server, &phone_id).await;
    assert_eq!(
        count(&phone_commands, "EnableLostMode"),
        1,
        "{phone_commands:?}"
    );
    assert_eq!(
        count(&phone_commands, "DeviceLocation"),
        1,
        "{phone_commands:?}"
    );
    assert_eq!(
        count(&request_types(&server, &mac_id).await, "DeviceLock"),
        1
    );
    assert_eq!(
        count(
            &request_types(&server, &unsupervised_id).await,
            "EnableLostMode"
        ),
        0
    );

    // Changing the spec (a new runId) runs it again: a second location.
    let again = text.replace("  action: Locate", "  action: Locate\n  runId: second");
    write_actions(policy.path(), &again);
    server
        .converge(&mut [&mut phone], "located again", |s| {
            declared(s, "locate-phone")["acknowledged"] == 1
                && declared(s, "locate-phone")["action_id"] != located["action_id"]
        })
        .await;
    assert_eq!(
        count(&request_types(&server, &phone_id).await, "DeviceLocation"),
        2
    );

    let visible = everything_visible(&server, &[&phone_id, &unsupervised_id, &mac_id]).await;
    assert!(!visible.contains(PIN), "the PIN is visible: {visible}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_action_survives_a_restart_and_is_sent_once() {
    let data = tempfile::tempdir().unwrap();
    let policy = tempfile::tempdir().unwrap();
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_in(data.path().to_path_buf(), {
        let dir = dir.clone();
        move |a| a.policy_dir = Some(dir)
    })
    .await;
    let port: u16 = server.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let mut mac = server.enrolled_device(MAC).await;
    let mac_id = mac.udid().to_string();
    write_actions(
        policy.path(),
        &action(
            "restart-mac",
            &format!("  target: {{udid: {mac_id}}}\n  action: Restart\n  notifyUser: true"),
        ),
    );
    // Queued, not fetched: the device is switched off.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = server.status().await;
        if declared(&s, "restart-mac")["pending"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not queued: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;

    let server = TestServer::start_on(data.path().to_path_buf(), port, move |a| {
        a.policy_dir = Some(dir)
    })
    .await;
    server
        .converge(&mut [&mut mac], "after restart", |s| {
            declared(s, "restart-mac")["acknowledged"] == 1
        })
        .await;
    for _ in 0..3 {
        let _ = mac.exchange().await;
    }
    assert_eq!(mac.state.restarts, 1);
    assert_eq!(
        count(&request_types(&server, &mac_id).await, "RestartDevice"),
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_locks_locates_and_erases_through_the_api_and_the_cli() {
    let server = TestServer::start().await;
    let mut phone = server.enrolled_device(PHONE).await;
    let phone_id = phone.udid().to_string();
    let serial = phone.hw.serial_number.clone();

    // Refused before anything is queued: bad fields, a bad PIN, an unconfirmed erase.
    let post = |body: Value| {
        let path = format!("/api/v1/devices/{phone_id}/actions");
        let server = &server;
        async move { server.admin_post(&path, body).await }
    };
    let (code, body) = post(json!({"action": "Restart", "message": "hi"})).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("message does not apply to Restart"));
    let (code, body) = post(json!({"action": "Lock", "pin": "12ab56"})).await;
    assert_eq!(code, 400, "{body}");
    assert!(!body.to_string().contains("12ab56"));
    let (code, body) = post(json!({"action": "Erase"})).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("confirm"));
    let (code, body) = post(json!({"action": "Locate"})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["state"], "NotApplicable", "not in Lost Mode: {body}");

    // A PIN sent to an iPhone is dropped (iOS takes none); the lock itself goes through.
    let (code, body) = post(json!({"action": "Lock", "message": "Locked", "pin": PIN})).await;
    assert_eq!(code, 201, "{body}");
    let lock_id = body["action_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = phone.exchange().await;
        let (_, view) = server
            .admin_get(&format!("/api/v1/actions/{lock_id}"))
            .await;
        if view["acknowledged"] == 1 {
            assert_eq!(
                view["devices"][0]["result"]["message_result"], "Success",
                "{view:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "lock not acknowledged: {view:#}");
    }
    assert!(phone.state.locked);
    assert!(phone.state.lock_pin.is_none(), "iOS gets no PIN");

    // The CLI enables Lost Mode and locates, following each action until the device answers.
    let token_file = server.data_dir.join("admin-token");
    let ca = server.data_dir.join("tls/ca.pem");
    let cli = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pomona"));
        command
            .args(&args)
            .args(["--server", &server.base_url])
            .arg("--admin-token-file")
            .arg(&token_file)
            .arg("--server-ca")
            .arg(&ca)
            .kill_on_drop(true)
            .output()
    };
    let running = tokio::spawn(cli(vec![
        "lost-mode".into(),
        serial.clone(),
        "--message".into(),
        "Found it? Call IT".into(),
    ]));
    while !running.is_finished() {
        let _ = phone.exchange().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = running.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Acknowledged"), "{stdout}");
    assert!(phone.state.lost_mode.is_some());

    let running = tokio::spawn(cli(vec!["locate".into(), serial.clone()]));
    while !running.is_finished() {
        let _ = phone.exchange().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = running.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("location: {}", phone.hw.location.latitude)),
        "{stdout}"
    );

    // Lost Mode ends, and the passcode is cleared with the device's own UnlockToken.
    for (kind, done) in [("DisableLostMode", 0), ("ClearPasscode", 1)] {
        let (code, body) = post(json!({ "action": kind })).await;
        assert_eq!(code, 201, "{body}");
        let id = body["action_id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = phone.exchange().await;
            let (_, view) = server.admin_get(&format!("/api/v1/actions/{id}")).await;
            if view["acknowledged"] == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} not acknowledged: {view:#}"
            );
        }
        if done == 0 {
            assert!(phone.state.lost_mode.is_none(), "Lost Mode ended");
        } else {
            assert!(phone.state.passcode_cleared, "passcode cleared");
        }
    }

    // Erase, confirmed by serial number: acknowledged, then the device is wiped and gone.
    let (code, body) = post(json!({"action": "Erase", "confirm": serial})).await;
    assert_eq!(code, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = phone.exchange().await;
        let (_, device) = server
            .admin_get(&format!("/api/v1/devices/{phone_id}"))
            .await;
        if device["state"] == "checked_out" && !device["wiped_at"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "not wiped: {device:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(phone.state.erased);
    let (code, body) = post(json!({"action": "Lock"})).await;
    assert_eq!(code, 409, "a wiped device takes no more actions: {body}");

    let visible = everything_visible(&server, &[&phone_id]).await;
    assert!(!visible.contains(PIN), "the PIN is visible: {visible}");
    server.stop().await;
}

/// Issue 20, item 8: a declared Lock queued just before the device enrolled again was
/// cancelled by the new enrollment and, before the fix, ended Failed "cancelled" for good
/// (only a `runId` bump sent it again). It is now sent again to the new enrollment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_action_cancelled_by_a_new_enrollment_is_sent_again() {
    let policy = tempfile::tempdir().unwrap();
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| {
        a.policy_dir = Some(dir);
        a.inventory_interval_secs = Some(3600);
    })
    .await;
    let mut mac = server.enrolled_device(MAC).await;
    let mac_id = mac.udid().to_string();
    let lock = action(
        "lock-mac",
        &format!(
            "  target: {{serialNumber: {}}}\n  action: Lock\n  message: Locked by IT\n  pin: {{file: secrets/mac.pin}}",
            mac.hw.serial_number
        ),
    );
    write_actions(policy.path(), &lock);
    // Queued for the device, which has not fetched it yet…
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, actions) = server
            .admin_get(&format!("/api/v1/devices/{mac_id}/actions"))
            .await;
        if actions.to_string().contains("\"command_uuid\":\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lock was never queued: {actions}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …when it enrolls again: the queued command is cancelled.
    mac.enroll().await.unwrap();
    server
        .converge(&mut [&mut mac], "lock sent again", |s| {
            declared(s, "lock-mac")["acknowledged"] == 1
        })
        .await;
    assert!(mac.state.locked, "the Mac was not locked");
    assert!(
        mac.state
            .lock_pin
            .as_ref()
            .is_some_and(|p| p.matches(PIN.as_bytes())),
        "the Mac did not get its PIN"
    );
    server.stop().await;
}

/// With no policy in force (an invalid policy directory at start), profiles are not planned,
/// but device actions go on: an administrator's lock is answered and recorded (review finding:
/// the first-snapshot gate held back every reconcile, actions included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrators_action_is_recorded_while_no_policy_is_in_force() {
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(
        policy.path().join("broken.yaml"),
        "kind: Profile\nspec: [\n",
    )
    .unwrap();
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| a.policy_dir = Some(dir)).await;
    let mut phone = server.enrolled_device(PHONE).await;
    let phone_id = phone.udid().to_string();
    let (code, body) = server
        .admin_post(
            &format!("/api/v1/devices/{phone_id}/actions"),
            json!({"action": "Lock", "message": "Locked"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let lock_id = body["action_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = phone.exchange().await;
        let (_, view) = server
            .admin_get(&format!("/api/v1/actions/{lock_id}"))
            .await;
        if view["acknowledged"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "lock not recorded: {view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(phone.state.locked);
    let status = server.status().await;
    assert!(status["policy"]["revision"].is_null(), "{status:#}");
    server.stop().await;
}
