//! The reconciler end to end, over real HTTPS with simulated devices (polling here; the push
//! issue's tests wake devices by push): a declared profile reaches every targeted device and is
//! verified by ProfileList; a content change reinstalls it; narrowing a group removes it where
//! it no longer applies; a device that deletes it gets it back; a device that always fails ends
//! Failed with its reason; an invalid change keeps the previous revision serving.

mod support;

use pomona::sim::device::{Faults, SimDevice};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::TestServer;

const GROUPS: &str = "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {name: everyone}
spec:
  selector: {}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {name: phones}
spec:
  selector:
    matchExpressions:
      - {key: pomona.dev/platform, operator: In, values: [iOS]}
";

fn wifi(ssid: &str, group: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {{name: wifi}}
spec:
  groups: [{group}]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {{SSID_STR: {ssid}, AutoJoin: true}}
"
    )
}

fn write_policy(dir: &Path, profile: &str) {
    std::fs::write(dir.join("groups.yaml"), GROUPS).unwrap();
    std::fs::write(dir.join("wifi.yaml"), profile).unwrap();
}

fn wifi_status(status: &Value) -> Value {
    status["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "Profile/wifi")
        .cloned()
        .unwrap_or(Value::Null)
}

fn installed_ssid(device: &SimDevice) -> Option<String> {
    device
        .state
        .profiles
        .get("dev.pomona.wifi")
        .map(|p| p.summary.uuid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_profiles_converge_change_narrow_repair_and_fail_cleanly() {
    let policy = tempfile::tempdir().unwrap();
    write_policy(policy.path(), &wifi("Office", "everyone"));
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| {
        a.policy_dir = Some(dir);
        a.retry_backoff_ms = Some(50);
        a.max_attempts = Some(3);
        a.inventory_interval_secs = Some(1);
    })
    .await;

    // 10 devices: indexes 0–2 are iPhones, 3 an iPad, 4 a Mac (sim::hardware cycles by 5).
    let mut devices = Vec::new();
    for i in 0..10 {
        devices.push(server.enrolled_device(i).await);
    }
    let s = server
        .converge(&mut devices, "first install", |s| {
            wifi_status(s)["verified"] == 10
        })
        .await;
    assert_eq!(wifi_status(&s)["targeted"], 10, "{s:#}");
    let first_uuid = installed_ssid(&devices[0]).expect("installed");

    // Change the content: reinstalled everywhere, with a new PayloadUUID.
    write_policy(policy.path(), &wifi("Office-5G", "everyone"));
    server
        .converge(&mut devices, "content change", |_| {
            true // status counts stay 10 verified during the change; check the devices instead
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while devices
        .iter()
        .any(|d| installed_ssid(d).as_deref() == Some(first_uuid.as_str()))
    {
        assert!(
            Instant::now() < deadline,
            "content change did not reach every device"
        );
        for d in devices.iter_mut() {
            let _ = d.exchange().await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    server
        .converge(&mut devices, "re-verified", |s| {
            wifi_status(s)["verified"] == 10
        })
        .await;

    // Narrow to iPhones: removed from the 4 iPads/Macs (indexes 3, 4, 8, 9), kept on 6 phones.
    write_policy(policy.path(), &wifi("Office-5G", "phones"));
    let s = server
        .converge(&mut devices, "narrowed", |s| {
            let w = wifi_status(s);
            w["verified"] == 6 && w["removing"] == 0 && w["targeted"] == 6
        })
        .await;
    for (i, d) in devices.iter().enumerate() {
        let is_phone = i % 5 <= 2;
        assert_eq!(installed_ssid(d).is_some(), is_phone, "device {i}: {s:#}");
    }

    // A phone's user removes the profile: the next inventory (every second here) finds the
    // drift and the profile is reinstalled.
    devices[0].state.profiles.remove("dev.pomona.wifi");
    let deadline = Instant::now() + Duration::from_secs(60);
    while installed_ssid(&devices[0]).is_none() {
        assert!(Instant::now() < deadline, "drift was not repaired");
        let _ = devices[0].exchange().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // An invalid change: refused, reported, and the previous revision keeps serving.
    let before = server.status().await["policy"]["revision"].clone();
    std::fs::write(policy.path().join("broken.yaml"), "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {name: broken}\nspec: {grups: []}\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let s = server.status().await;
        if !s["policy"]["last_error"].is_null() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "invalid policy was not reported: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused["policy"]["revision"], before);
    assert!(
        refused["policy"]["last_error"][0]
            .as_str()
            .unwrap()
            .contains("broken.yaml:4: error: Profile: unknown field `grups`"),
        "{refused:#}"
    );
    assert_eq!(wifi_status(&refused)["targeted"], 6, "{refused:#}");
    std::fs::remove_file(policy.path().join("broken.yaml")).unwrap();

    // A phone that refuses everything ends Failed with its error, the others stay verified.
    let mut stubborn = server.device(20); // index 20 → an iPhone
    stubborn.faults = Faults {
        error_rate: 1.0,
        ..Faults::default()
    };
    stubborn.enroll().await.unwrap();
    let stubborn_id = stubborn.udid().to_string();
    devices.push(stubborn);
    let s = server
        .converge(&mut devices, "failure", |s| {
            let w = wifi_status(s);
            w["failed"] == 1 && w["verified"] == 6
        })
        .await;
    let w = wifi_status(&s);
    assert_eq!(w["verified"], 6, "{s:#}");
    let (_, view) = server
        .admin_get(&format!("/api/v1/devices/{stubborn_id}"))
        .await;
    assert_eq!(view["profiles"][0]["state"], "failed", "{view:#}");
    assert_eq!(view["profiles"][0]["identifier"], "dev.pomona.wifi");
    assert_eq!(w["failing_devices"][0]["device_id"], stubborn_id.as_str());
    assert!(
        w["failing_devices"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Injected failure"),
        "{w:#}"
    );

    // Deleting the profile removes it from every device (removalPolicy Remove).
    std::fs::remove_file(policy.path().join("wifi.yaml")).unwrap();
    server
        .converge(&mut devices, "deleted", |s| {
            let w = wifi_status(s);
            w.is_null() || (w["verified"] == 0 && w["removing"] == 0 && w["pending"] == 0)
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while devices.iter().any(|d| installed_ssid(d).is_some()) {
        assert!(Instant::now() < deadline, "profile not removed everywhere");
        for d in devices.iter_mut() {
            let _ = d.exchange().await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    server.stop().await;
}

fn run_cli(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_status_show_what_a_change_would_do_and_where_the_fleet_stands() {
    let policy = tempfile::tempdir().unwrap();
    write_policy(policy.path(), &wifi("Office", "everyone"));
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| a.policy_dir = Some(dir)).await;
    let mut devices = Vec::new();
    for i in 0..5 {
        devices.push(server.enrolled_device(i).await);
    }
    server
        .converge(&mut devices, "install", |s| wifi_status(s)["verified"] == 5)
        .await;

    let token = server.data_dir.join("admin-token");
    let ca = server.data_dir.join("tls/ca.pem");
    let connection = [
        "--server",
        &server.base_url,
        "--admin-token-file",
        token.to_str().unwrap(),
        "--server-ca",
        ca.to_str().unwrap(),
    ];

    // The live policy again: nothing to do (exit 0).
    let same = policy.path().to_str().unwrap();
    let (code, out) = run_cli(&[&["plan", same][..], &connection[..]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");

    // A pull request narrowing the group to phones: removal from the iPad and the Mac (exit 1),
    // through the API and directly against the database.
    let candidate = tempfile::tempdir().unwrap();
    write_policy(candidate.path(), &wifi("Office", "phones"));
    let candidate = candidate.path().to_str().unwrap().to_string();
    let (code, out) = run_cli(&[&["plan", candidate.as_str()][..], &connection[..]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Profile/wifi") && out.contains("remove from      2"),
        "{out}"
    );
    let db = format!("sqlite://{}", server.data_dir.join("pomona.db").display());
    let (code, out) = run_cli(&["plan", candidate.as_str(), "--database", &db, "--json"]);
    assert_eq!(code, 1, "{out}");
    let json: Value = serde_json::from_str(&out).expect("JSON plan");
    assert_eq!(json["devices"], 5);
    assert_eq!(json["changes"][0]["remove"], 2);

    // An invalid candidate: exit 2 with the located problem.
    std::fs::write(
        Path::new(&candidate).join("wifi.yaml"),
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {name: wifi}\nspec: {groups: [nope], mobileconfig: x}\n",
    )
    .unwrap();
    let (code, out) = run_cli(&[&["plan", candidate.as_str()][..], &connection[..]].concat());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("wifi.yaml:1: error: Profile/wifi"), "{out}");

    let (code, out) = run_cli(&[&["status"][..], &connection[..]].concat());
    assert_eq!(code, 0, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("Profile/wifi"))
        .unwrap_or_else(|| panic!("no wifi row in {out}"));
    let numbers: Vec<&str> = row.split_whitespace().skip(1).collect();
    assert_eq!(numbers, ["5", "5", "0", "0", "0", "0"], "{out}");
    server.stop().await;
}

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("pomona_reconciles_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("pomona_reconciles_total exported")
}

#[tokio::test]
async fn with_nothing_declared_command_results_cause_no_replanning() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_path_buf();
    let server = TestServer::start_with(move |a| a.policy_dir = Some(dir)).await;
    let mut device = server.enrolled_device(0).await;
    // Let the enrollment's own reconcile happen, then count.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reconciles(&server.metrics().await) == 0 {
        assert!(
            Instant::now() < deadline,
            "the enrollment was never reconciled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = reconciles(&server.metrics().await);
    for _ in 0..3 {
        server
            .queue(device.udid(), serde_json::json!({"type": "SecurityInfo"}))
            .await;
    }
    assert_eq!(device.exchange().await.unwrap().received.len(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        reconciles(&server.metrics().await),
        before,
        "answers to administrators' commands were re-planned with no policy declared"
    );
    server.stop().await;
}

const BY_FACTS_AND_LABELS: &str = "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {name: supervised}
spec:
  selector:
    matchLabels: {pomona.dev/supervised: 'true'}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {name: sales}
spec:
  selector:
    matchLabels: {team: sales}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {name: kiosk}
spec:
  groups: [supervised]
  sign: true
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {SSID_STR: Kiosk, AutoJoin: true}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {name: sales-wifi}
spec:
  groups: [sales]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {SSID_STR: Sales, AutoJoin: true}
";

fn profile_counts(status: &Value, key: &str) -> (i64, i64) {
    let p = status["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == key)
        .cloned()
        .unwrap_or(Value::Null);
    (
        p["targeted"].as_i64().unwrap_or(0),
        p["verified"].as_i64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_follow_device_information_facts_and_labels_set_through_the_api_and_signed_profiles_arrive_signed(
) {
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(policy.path().join("p.yaml"), BY_FACTS_AND_LABELS).unwrap();
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| a.policy_dir = Some(dir)).await;
    // Indexes 0–3 are iPhones and an iPad (supervised in the simulator), 4 a Mac (not).
    let mut devices = Vec::new();
    for i in 0..5 {
        devices.push(server.enrolled_device(i).await);
    }
    // Supervision is not in Authenticate: only the DeviceInformation answer makes the phones
    // and the iPad members.
    server
        .converge(&mut devices, "supervised devices", |s| {
            profile_counts(s, "Profile/kiosk") == (4, 4)
        })
        .await;
    let mac = devices[4].udid().to_string();
    let (_, view) = server.admin_get(&format!("/api/v1/devices/{mac}")).await;
    assert_eq!(view["facts"]["supervised"], false, "{view:#}");
    assert_eq!(view["facts"]["model"], "Mac14,2", "{view:#}");
    assert!(!devices[4].state.profiles.contains_key("dev.pomona.kiosk"));
    // `sign: true`: the devices received a signed profile whose signature verified.
    assert!(devices[0].state.profiles["dev.pomona.kiosk"].signed);

    // A label through the API puts the Mac in the sales group; removing it takes it out.
    let labels_url = format!("{}/api/v1/devices/{mac}/labels", server.base_url);
    let put = |labels: Value| {
        server
            .client
            .put(&labels_url)
            .bearer_auth(&server.admin_token)
            .json(&serde_json::json!({ "labels": labels }))
            .send()
    };
    let response = put(serde_json::json!({"team": "sales"})).await.unwrap();
    assert_eq!(response.status(), 200);
    server
        .converge(&mut devices, "labelled into sales", |s| {
            profile_counts(s, "Profile/sales-wifi") == (1, 1)
        })
        .await;
    assert!(devices[4]
        .state
        .profiles
        .contains_key("dev.pomona.sales-wifi"));
    let (_, view) = server.admin_get(&format!("/api/v1/devices/{mac}")).await;
    assert_eq!(view["labels"]["team"], "sales", "{view:#}");

    // Invalid labels are refused with a reason and change nothing.
    let refused = put(serde_json::json!({"pomona.dev/supervised": "true"}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("reserved"),
        "{body}"
    );
    let unknown = server
        .client
        .put(format!(
            "{}/api/v1/devices/NO-SUCH-DEVICE/labels",
            server.base_url
        ))
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({"labels": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let response = put(serde_json::json!({})).await.unwrap();
    assert_eq!(response.status(), 200);
    server
        .converge(&mut devices, "label removed", |s| {
            profile_counts(s, "Profile/sales-wifi").1 == 0
                && profile_counts(s, "Profile/sales-wifi").0 == 0
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while devices[4]
        .state
        .profiles
        .contains_key("dev.pomona.sales-wifi")
    {
        assert!(
            Instant::now() < deadline,
            "sales-wifi never removed from the Mac"
        );
        let _ = devices[4].exchange().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_is_paced_to_the_configured_number_of_devices() {
    let policy = tempfile::tempdir().unwrap();
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| {
        a.policy_dir = Some(dir);
        a.rollout_max_devices = Some(2);
    })
    .await;
    let mut devices = Vec::new();
    for i in 0..6 {
        devices.push(server.enrolled_device(i).await);
    }
    write_policy(policy.path(), &wifi("Office", "everyone"));
    let mut most_installing = 0;
    let mut saw_waiting = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = server.status().await;
        let installing = s["rollout"]["installing_devices"].as_u64().unwrap();
        most_installing = most_installing.max(installing);
        saw_waiting |= s["rollout"]["waiting_devices"].as_u64().unwrap() > 0;
        if wifi_status(&s)["verified"] == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "did not converge: {s:#}");
        // One device at a time, so the counts are seen between exchanges.
        for d in devices.iter_mut() {
            let _ = d.exchange().await;
            let s = server.status().await;
            most_installing =
                most_installing.max(s["rollout"]["installing_devices"].as_u64().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_waiting, "devices waited for a rollout slot");
    assert!(
        most_installing <= 2,
        "{most_installing} devices had installs outstanding at once (limit 2)"
    );
    let all_free = server
        .metrics()
        .await
        .lines()
        .any(|l| l == "pomona_rollout_installing_devices 0");
    assert!(all_free, "every slot is free once the fleet converged");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_profile_with_removal_policy_keep_stays_on_the_devices() {
    let policy = tempfile::tempdir().unwrap();
    let keep = wifi("Office", "everyone").replace(
        "  groups: [everyone]\n",
        "  groups: [everyone]\n  removalPolicy: Keep\n",
    );
    write_policy(policy.path(), &keep);
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| a.policy_dir = Some(dir)).await;
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(server.enrolled_device(i).await);
    }
    server
        .converge(&mut devices, "installed", |s| {
            wifi_status(s)["verified"] == 3
        })
        .await;
    std::fs::remove_file(policy.path().join("wifi.yaml")).unwrap();
    server
        .converge(&mut devices, "released", |s| {
            let w = wifi_status(s);
            w.is_null() || (w["verified"] == 0 && w["pending"] == 0 && w["removing"] == 0)
        })
        .await;
    // A few more exchanges: nothing may remove it.
    for _ in 0..3 {
        for d in devices.iter_mut() {
            let received = d.exchange().await.unwrap().received;
            assert!(
                !received.iter().any(|r| r == "RemoveProfile"),
                "a Keep profile was removed: {received:?}"
            );
        }
    }
    for d in &devices {
        assert!(installed_ssid(d).is_some(), "{} lost the profile", d.udid());
    }
    server.stop().await;
}

/// Issue 20, item 1: a server that starts without a usable policy (here: the directory holds
/// an invalid change made while it was down) knows nothing of what is declared. Before the
/// fix it planned against an empty policy and sent RemoveProfile to every device that talked
/// to it; now it plans nothing until a snapshot is in force, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_a_loadable_policy_removes_nothing() {
    let policy = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_policy(policy.path(), &wifi("Office", "everyone"));
    let port = {
        let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let dir = policy.path().to_path_buf();
    let settings = move |a: &mut pomona::config::ServeArgs| {
        a.policy_dir = Some(dir.clone());
        a.inventory_interval_secs = Some(1);
    };
    let server = TestServer::start_on(data.path().to_path_buf(), port, settings.clone()).await;
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(server.enrolled_device(i).await);
    }
    server
        .converge(&mut devices, "installed", |s| {
            wifi_status(s)["verified"] == 3
        })
        .await;
    server.stop().await;

    // While it is down, someone commits a typo.
    std::fs::write(policy.path().join("wifi.yaml"), "kind: Profile\nspec: [\n").unwrap();
    let server = TestServer::start_on(data.path().to_path_buf(), port, settings.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        for d in devices.iter_mut() {
            let received = d.exchange().await.expect("exchange").received;
            assert!(
                !received.iter().any(|r| r == "RemoveProfile"),
                "{} was sent {received:?} with no policy in force",
                d.udid()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = server.status().await;
    assert!(
        status["policy"]["last_error"]
            .to_string()
            .contains("wifi.yaml"),
        "status does not say why nothing is planned: {status:#}"
    );
    for d in &devices {
        assert!(installed_ssid(d).is_some(), "{} lost the profile", d.udid());
    }

    // The typo fixed: the fleet is verified again, and still nothing was removed.
    write_policy(policy.path(), &wifi("Office", "everyone"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for d in devices.iter_mut() {
            let received = d.exchange().await.expect("exchange").received;
            assert!(
                !received.iter().any(|r| r == "RemoveProfile"),
                "{} was sent {received:?}",
                d.udid()
            );
        }
        if wifi_status(&server.status().await)["verified"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "did not converge again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

/// Issue 20, item 6: a device that enrolls again (after a CheckOut, or erased and set up
/// again) carries none of the profiles it had. Before the fix they stayed `verified` and
/// nothing was reinstalled; now Authenticate resets what we believe it carries, status counts
/// it pending, and it gets its profiles back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_enrolls_again_is_pending_and_gets_its_profiles_back() {
    let policy = tempfile::tempdir().unwrap();
    write_policy(policy.path(), &wifi("Office", "everyone"));
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| a.policy_dir = Some(dir)).await;
    let mut devices = Vec::new();
    for i in 0..2 {
        devices.push(server.enrolled_device(i).await);
    }
    server
        .converge(&mut devices, "installed", |s| {
            wifi_status(s)["verified"] == 2
        })
        .await;

    // Device 0 removes its enrollment profile and enrolls again; device 1 is erased and set
    // up again (same hardware, nothing installed).
    devices[0].check_out().await.unwrap();
    assert!(installed_ssid(&devices[0]).is_none());
    devices[0].enroll().await.unwrap();
    devices[1] = server.device(1);
    devices[1].enroll().await.unwrap();
    let s = server.status().await;
    assert_eq!(
        wifi_status(&s)["verified"],
        0,
        "re-enrolled devices still counted verified: {s:#}"
    );
    assert_eq!(wifi_status(&s)["pending"], 2, "{s:#}");

    server
        .converge(&mut devices, "reinstalled", |s| {
            wifi_status(s)["verified"] == 2
        })
        .await;
    for d in &devices {
        assert!(
            installed_ssid(d).is_some(),
            "{} lacks the profile",
            d.udid()
        );
    }
    server.stop().await;
}

/// Issue 20, item 7: a RemoveProfile the device keeps refusing is given up after
/// `max_attempts`. Before the fix the profile stayed `removing` for ever (status REMOVING,
/// FAILED 0, no log line); now it is `removal_failed`, with the device's error, in the API,
/// `pomona status` and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_gave_up_is_shown_as_failed_not_in_progress() {
    let policy = tempfile::tempdir().unwrap();
    write_policy(policy.path(), &wifi("Office", "everyone"));
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(move |a| {
        a.policy_dir = Some(dir);
        a.retry_backoff_ms = Some(50);
        a.max_attempts = Some(3);
        a.inventory_interval_secs = Some(3600);
    })
    .await;
    let mut devices = vec![server.enrolled_device(0).await];
    server
        .converge(&mut devices, "installed", |s| {
            wifi_status(s)["verified"] == 1
        })
        .await;
    // From now on the device refuses every command; the profile is no longer declared for it.
    devices[0].faults.error_rate = 1.0;
    write_policy(
        policy.path(),
        &wifi("Office", "phones").replace("[phones]", "[nobody]"),
    );
    std::fs::write(
        policy.path().join("nobody.yaml"),
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata: {name: nobody}\nspec: {serialNumbers: [NONE]}\n",
    )
    .unwrap();
    let s = server
        .converge(&mut devices, "removal given up", |s| {
            wifi_status(s)["removal_failed"] == 1
        })
        .await;
    let w = wifi_status(&s);
    assert_eq!(w["removing"], 0, "{w:#}");
    let failing = &w["failing_devices"][0];
    assert_eq!(failing["phase"], "removal", "{w:#}");
    assert!(
        failing["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{w:#}"
    );

    let token_file = server.data_dir.join("admin-token");
    let ca = server.data_dir.join("tls/ca.pem");
    let (code, out) = run_cli(&[
        "status",
        "--server",
        &server.base_url,
        "--admin-token-file",
        token_file.to_str().unwrap(),
        "--server-ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("REMOVAL-FAILED"), "{out}");
    assert!(out.contains("removal failed on"), "{out}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("pomona_managed_profiles{state=\"removal_failed\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}
