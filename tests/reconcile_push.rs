//! The reconciler at fleet scale with devices woken only by APNs pushes (no polling): 200
//! simulated devices converge on a newly declared profile, then on its deletion.

mod support;

use pomona::sim::wake::answer_pushes;
use serde_json::Value;
use std::time::Duration;
use support::apns::{eventually, FakeApns, TestPki};
use support::TestServer;

const DEVICES: usize = 200;
const PATIENCE: Duration = Duration::from_secs(120);

const PROFILE: &str = "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {name: everyone}
spec: {selector: {}}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {name: wifi}
spec:
  groups: [everyone]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {SSID_STR: Office, AutoJoin: true}
";

async fn wifi(server: &TestServer) -> Value {
    server.profile_status("Profile/wifi").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_woken_by_pushes_converge_on_a_declared_profile_and_its_removal() {
    let pki = TestPki::new();
    let apns = FakeApns::start(&pki).await;
    let policy = tempfile::tempdir().unwrap();
    let dir = policy.path().to_path_buf();
    let server = TestServer::start_with(|args| {
        apns.configure(&pki, args);
        args.policy_dir = Some(dir);
    })
    .await;

    // Enroll in small concurrent batches (key generation dominates), then only answer pushes.
    let mut devices = Vec::new();
    for batch in (0..DEVICES).collect::<Vec<_>>().chunks(8) {
        let mut set = tokio::task::JoinSet::new();
        for &i in batch {
            let mut d = server.device(i);
            set.spawn(async move {
                d.enroll().await.expect("enroll");
                d
            });
        }
        while let Some(d) = set.join_next().await {
            devices.push(d.unwrap());
        }
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for mut device in devices {
        let pushed = apns.device(device.push_token());
        let stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            answer_pushes(&mut device, pushed, stopped).await;
            device
        }));
    }

    std::fs::write(policy.path().join("wifi.yaml"), PROFILE).unwrap();
    eventually("every device verified", PATIENCE, || async {
        let w = wifi(&server).await;
        (w["verified"] == DEVICES).then_some(())
    })
    .await;
    assert_eq!(wifi(&server).await["targeted"], DEVICES);

    std::fs::remove_file(policy.path().join("wifi.yaml")).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let w = wifi(&server).await;
        if w.is_null() || (w["verified"] == 0 && w["pending"] == 0 && w["removing"] == 0) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            // Say which device is stuck, and how, before failing.
            let (_, list) = server.admin_get("/api/v1/devices?limit=500").await;
            let mut stuck = Vec::new();
            for d in list["devices"].as_array().unwrap() {
                let id = d["device_id"].as_str().unwrap();
                let (_, v) = server.admin_get(&format!("/api/v1/devices/{id}")).await;
                if v["profiles"].as_array().is_some_and(|p| !p.is_empty()) {
                    let commands = server.commands(id).await;
                    stuck.push(format!(
                        "{id}: profiles {} push {} newest commands {:?}",
                        v["profiles"],
                        v["push"],
                        commands
                            .iter()
                            .take(3)
                            .map(|c| (c["request_type"].clone(), c["status"].clone()))
                            .collect::<Vec<_>>()
                    ));
                }
            }
            panic!("not removed everywhere: {w}\n{}", stuck.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    stop.send(true).unwrap();
    for task in tasks {
        let device = task.await.unwrap();
        assert!(
            !device.state.profiles.contains_key("dev.pomona.wifi"),
            "{} still has the profile",
            device.udid()
        );
    }
    assert!(
        apns.pushes().iter().all(|p| p.status == 200),
        "every push was accepted"
    );
    server.stop().await;
}
