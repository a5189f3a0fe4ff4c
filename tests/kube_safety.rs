//! Kubernetes must never remove or misreport configuration by accident (issue 20), against a
//! real kube-apiserver (`scripts/envtest`) and simulated devices: a typo in a Profile, an
//! invalid DeviceGroup or a deleted group keeps the last good spec in force — no RemoveProfile
//! reaches any device, not even across a controller restart — and only deleting the Profile
//! removes it; deleting objects without a finalizer is seen at once; two namespaces may use the
//! same names without touching each other; and events say what is true now.

mod support;

use pomona::sim::device::SimDevice;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::kube::{condition, flux_health, install, ApiServer};
use support::TestServer;

const NS: &str = "mdm";
const OTHER: &str = "mdm2";

fn group(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {{name: {name}, namespace: {namespace}}}
spec: {spec}
"
    )
}

fn wifi(namespace: &str, name: &str, ssid: &str, groups: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  groups: [{groups}]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {{SSID_STR: {ssid}, AutoJoin: true}}
"
    )
}

/// Pomona on `port` (0: any) over `data_dir`, as the deploy/ service account.
async fn controller(api: &ApiServer, data_dir: PathBuf, port: u16) -> TestServer {
    let kubeconfig = api.controller_kubeconfig.clone();
    TestServer::start_on(data_dir, port, move |a| {
        a.kube = true;
        a.kubeconfig = Some(kubeconfig);
        a.lease_namespace = Some("pomona-system".into());
        a.identity = Some("replica-a".into());
        a.status_interval_secs = Some(1);
        // Long enough that a deletion waiting for it shows as a hang.
        a.removal_timeout_secs = Some(120);
        a.lease_duration_secs = Some(4);
        a.retry_backoff_ms = Some(50);
        a.inventory_interval_secs = Some(1);
    })
    .await
}

fn port_of(server: &TestServer) -> u16 {
    server.base_url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Devices exchange until `done` holds for the object (bounded wait); every command a device
/// receives meanwhile is checked: none may be a RemoveProfile.
async fn converge(
    api: &ApiServer,
    devices: &mut [SimDevice],
    (kind, namespace, name): (&str, &str, &str),
    what: &str,
    done: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        exchange_without_removal(devices, what).await;
        let object = api.get(kind, namespace, name);
        if done(object.as_ref()) {
            return object;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: did not converge: {:#}",
            object.unwrap_or(Value::Null)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One exchange per device; panics if any receives a RemoveProfile.
async fn exchange_without_removal(devices: &mut [SimDevice], what: &str) {
    for d in devices.iter_mut() {
        if let Ok(exchange) = d.exchange().await {
            assert!(
                !exchange.received.iter().any(|r| r == "RemoveProfile"),
                "{what}: {} was sent RemoveProfile ({:?})",
                d.udid(),
                exchange.received
            );
        }
    }
}

/// Devices keep talking for `secs` seconds: long enough for a wrong plan to reach them.
async fn keep_talking(devices: &mut [SimDevice], secs: u64, what: &str) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        exchange_without_removal(devices, what).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// No RemoveProfile was ever queued for any of `devices` (the admin API's command list).
async fn assert_nothing_removed(server: &TestServer, devices: &[SimDevice], what: &str) {
    for d in devices {
        let removals: Vec<Value> = server
            .commands(d.udid())
            .await
            .into_iter()
            .filter(|c| c["request_type"] == "RemoveProfile")
            .collect();
        assert!(
            removals.is_empty(),
            "{what}: RemoveProfile queued for {}: {removals:#?}",
            d.udid()
        );
    }
}

fn has_profile(device: &SimDevice, identifier: &str) -> bool {
    device.state.profiles.contains_key(identifier)
}

fn ready_at(object: Option<&Value>, verified: i64, generation: i64) -> bool {
    object.is_some_and(|o| {
        o["status"]["verified"] == verified
            && o["status"]["pending"] == 0
            && o["status"]["observedGeneration"] == generation
            && condition(o, "Ready")["status"] == "True"
    })
}

fn stalled(object: Option<&Value>, reason: &str) -> bool {
    object.is_some_and(|o| {
        condition(o, "Stalled")["status"] == "True" && condition(o, "Stalled")["reason"] == reason
    })
}

fn message(object: &Value, type_: &str) -> String {
    condition(object, type_)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A fresh API server and controller, three enrolled devices, and the DeviceGroup `everyone`
/// with the Profile `wifi` installed and verified on all of them.
async fn wifi_on_three_devices() -> (ApiServer, tempfile::TempDir, TestServer, Vec<SimDevice>) {
    let api = ApiServer::start().await;
    install(&api, &[NS]);
    let data = tempfile::tempdir().unwrap();
    let server = controller(&api, data.path().to_path_buf(), 0).await;
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(server.enrolled_device(i).await);
    }
    api.apply(&format!(
        "{}---\n{}",
        group(NS, "everyone", "{selector: {}}"),
        wifi(NS, "wifi", "Office", "everyone")
    ));
    converge(
        &api,
        &mut devices,
        ("profile", NS, "wifi"),
        "first install",
        |o| ready_at(o, 3, 1),
    )
    .await;
    (api, data, server, devices)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_typo_or_an_invalid_group_keeps_the_last_good_profile_on_every_device() {
    let (api, data, mut server, mut devices) = wifi_on_three_devices().await;
    let wifi_object = ("profile", NS, "wifi");

    // A typo in spec.groups: Stalled, generation 1 stays in force, nothing leaves any device.
    api.kubectl(&[
        "patch",
        "profile",
        "wifi",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"groups":["everyon"]}}"#,
    ]);
    converge(&api, &mut devices, wifi_object, "typo stalls", |o| {
        stalled(o, "Invalid")
    })
    .await;
    keep_talking(&mut devices, 4, "typo").await;
    assert_nothing_removed(&server, &devices, "typo").await;
    assert!(devices.iter().all(|d| has_profile(d, "dev.pomona.wifi")));
    let typo = api.get("profile", NS, "wifi").unwrap();
    assert!(
        message(&typo, "Stalled").contains("DeviceGroup \"everyon\" is not declared"),
        "{typo:#}"
    );
    assert_eq!(typo["metadata"]["generation"], 2);
    assert_eq!(
        typo["status"]["observedGeneration"], 2,
        "the rejected generation is observed (judged), as kstatus reads it: {typo:#}"
    );
    assert_eq!(
        typo["status"]["inForce"]["generation"], 1,
        "generation 1 stays in force: {typo:#}"
    );
    assert_eq!(
        flux_health(&typo),
        "Failed",
        "Flux fails the refused generation at once"
    );
    assert_eq!(typo["status"]["verified"], 3, "{typo:#}");

    // The last good spec survives a restart of the controller (it is kept in status).
    let port = port_of(&server);
    server.stop().await;
    server = controller(&api, data.path().to_path_buf(), port).await;
    keep_talking(&mut devices, 4, "restart with a typo").await;
    assert_nothing_removed(&server, &devices, "restart with a typo").await;
    let after_restart = api.get("profile", NS, "wifi").unwrap();
    assert!(
        stalled(Some(&after_restart), "Invalid"),
        "{after_restart:#}"
    );
    assert_eq!(after_restart["status"]["inForce"]["generation"], 1);

    // Fixed: generation 3 is accepted and in force.
    api.kubectl(&[
        "patch",
        "profile",
        "wifi",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"groups":["everyone"]}}"#,
    ]);
    let fixed = converge(&api, &mut devices, wifi_object, "typo fixed", |o| {
        ready_at(o, 3, 3)
    })
    .await
    .unwrap();
    assert_eq!(flux_health(&fixed), "Current", "{fixed:#}");
    let mut not_judged_yet = fixed.clone();
    not_judged_yet["metadata"]["generation"] = 4.into();
    assert_eq!(
        flux_health(&not_judged_yet),
        "InProgress",
        "Flux waits while status.observedGeneration is behind"
    );

    // An invalid DeviceGroup keeps its last good definition: the profile is untouched.
    api.kubectl(&[
        "patch",
        "devicegroup",
        "everyone",
        "-n",
        NS,
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/selector"}]"#,
    ]);
    let bad_group = converge(
        &api,
        &mut devices,
        ("devicegroup", NS, "everyone"),
        "invalid group stalls",
        |o| stalled(o, "Invalid"),
    )
    .await
    .unwrap();
    assert!(
        message(&bad_group, "Stalled").contains("needs a selector"),
        "{bad_group:#}"
    );
    assert_eq!(bad_group["status"]["observedGeneration"], 2);
    assert_eq!(bad_group["status"]["inForce"]["generation"], 1);
    assert_eq!(flux_health(&bad_group), "Failed", "{bad_group:#}");
    keep_talking(&mut devices, 3, "invalid group").await;
    let still = api.get("profile", NS, "wifi").unwrap();
    assert!(ready_at(Some(&still), 3, 3), "{still:#}");
    assert_nothing_removed(&server, &devices, "invalid group").await;
    api.apply(&group(NS, "everyone", "{selector: {}}"));
    converge(
        &api,
        &mut devices,
        ("devicegroup", NS, "everyone"),
        "group fixed",
        |o| o.is_some_and(|o| condition(o, "Ready")["status"] == "True"),
    )
    .await;

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_group_stays_in_force_for_its_profile_until_the_profile_is_deleted() {
    let (api, data, mut server, mut devices) = wifi_on_three_devices().await;
    let wifi_object = ("profile", NS, "wifi");

    // The group deleted under a profile that uses it: the profile says which group is missing
    // and keeps the group's last definition in force, for the devices it had and for new ones.
    api.kubectl(&["delete", "devicegroup", "everyone", "-n", NS]);
    let dangling = converge(&api, &mut devices, wifi_object, "group deleted", |o| {
        stalled(o, "GroupMissing")
    })
    .await
    .unwrap();
    assert!(
        message(&dangling, "Stalled").contains("DeviceGroup \"everyone\""),
        "{dangling:#}"
    );
    devices.push(server.enrolled_device(3).await);
    converge(
        &api,
        &mut devices,
        wifi_object,
        "a new device gets the profile",
        |o| o.is_some_and(|o| o["status"]["verified"] == 4),
    )
    .await;
    keep_talking(&mut devices, 2, "group deleted").await;
    assert_nothing_removed(&server, &devices, "group deleted").await;
    assert!(devices.iter().all(|d| has_profile(d, "dev.pomona.wifi")));

    // After a restart the group's definition comes from the profile's status.inForce.
    let port = port_of(&server);
    server.stop().await;
    server = controller(&api, data.path().to_path_buf(), port).await;
    keep_talking(&mut devices, 4, "restart without the group").await;
    assert_nothing_removed(&server, &devices, "restart without the group").await;
    let after_restart = api.get("profile", NS, "wifi").unwrap();
    assert!(
        stalled(Some(&after_restart), "GroupMissing"),
        "{after_restart:#}"
    );

    // Only deleting the Profile removes it.
    api.kubectl(&["delete", "profile", "wifi", "-n", NS, "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while api.get("profile", NS, "wifi").is_some() {
        for d in devices.iter_mut() {
            let _ = d.exchange().await;
        }
        assert!(Instant::now() < deadline, "the profile was never removed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(devices.iter().all(|d| !has_profile(d, "dev.pomona.wifi")));
    server.stop().await;
}

/// The policy revision the server is serving.
async fn revision(server: &TestServer) -> String {
    let (_, status) = server.admin_get("/api/v1/status").await;
    status["policy"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_group_labels_or_an_action_gives_a_new_revision_at_once() {
    let api = ApiServer::start().await;
    install(&api, &[NS]);
    let data = tempfile::tempdir().unwrap();
    let server = controller(&api, data.path().to_path_buf(), 0).await;
    api.apply(&format!(
        "{}---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceLabels
metadata: {{name: teams, namespace: {NS}}}
spec:
  devices: [{{serialNumber: C02NOBODY001, labels: {{team: sales}}}}]
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceAction
metadata: {{name: restart-lab, namespace: {NS}}}
spec:
  target: {{serialNumber: C02NOBODY001}}
  action: Restart
",
        group(NS, "lab", "{serialNumbers: [C02NOBODY001]}")
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    for (kind, name) in [
        ("devicegroup", "lab"),
        ("devicelabels", "teams"),
        ("deviceaction", "restart-lab"),
    ] {
        while api
            .get(kind, NS, name)
            .is_none_or(|o| o["status"]["conditions"].is_null())
        {
            assert!(Instant::now() < deadline, "{kind} {name} has no status");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Let the status writes (which the watches see too) pass: from here on, nothing changes
    // but the deletions themselves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (kind, name) in [
        ("devicegroup", "lab"),
        ("devicelabels", "teams"),
        ("deviceaction", "restart-lab"),
    ] {
        let before = revision(&server).await;
        api.kubectl(&["delete", kind, name, "-n", NS]);
        let deleted = Instant::now();
        loop {
            if revision(&server).await != before {
                break;
            }
            assert!(
                deleted.elapsed() < Duration::from_secs(10),
                "deleting {kind} {name} gave no new revision (still {before})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "deleting {kind} {name}: a new revision after {} ms",
            deleted.elapsed().as_millis()
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_namespaces_may_use_the_same_names_without_touching_each_other() {
    let api = ApiServer::start().await;
    install(&api, &[NS, OTHER]);
    let data = tempfile::tempdir().unwrap();
    let server = controller(&api, data.path().to_path_buf(), 0).await;
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(server.enrolled_device(i).await);
    }
    let office = ("profile", NS, "office-wifi");
    api.apply(&format!(
        "{}---\n{}",
        group(NS, "everyone", "{selector: {}}"),
        wifi(NS, "office-wifi", "Office", "everyone")
    ));
    converge(&api, &mut devices, office, "first install", |o| {
        ready_at(o, 3, 1)
    })
    .await;

    // The same group name in another namespace, selecting nobody: both are fine, and the
    // profile in `mdm` still reaches everyone in `mdm`'s group.
    api.apply(&group(OTHER, "everyone", "{udids: [NOBODY-0000]}"));
    converge(
        &api,
        &mut devices,
        ("devicegroup", OTHER, "everyone"),
        "second everyone",
        |o| {
            o.is_some_and(|o| {
                condition(o, "Ready")["status"] == "True" && o["status"]["targeted"] == 0
            })
        },
    )
    .await;
    keep_talking(&mut devices, 2, "second everyone").await;
    let first = api.get("devicegroup", NS, "everyone").unwrap();
    assert_eq!(
        condition(&first, "Ready")["status"],
        "True",
        "a group of another namespace stalled this one: {first:#}"
    );
    assert_eq!(first["status"]["targeted"], 3, "{first:#}");
    assert!(ready_at(api.get(office.0, NS, office.2).as_ref(), 3, 1));

    // An invalid profile of the same name in the other namespace shows its own counts.
    api.apply(&wifi(OTHER, "office-wifi", "Elsewhere", "missing"));
    let invalid = converge(
        &api,
        &mut devices,
        ("profile", OTHER, "office-wifi"),
        "invalid twin",
        |o| stalled(o, "Invalid"),
    )
    .await
    .unwrap();
    assert!(
        message(&invalid, "Stalled").contains("DeviceGroup \"missing\" is not declared"),
        "{invalid:#}"
    );
    for count in ["targeted", "verified", "pending"] {
        assert!(
            invalid["status"][count].is_null() || invalid["status"][count] == 0,
            "{count} of another namespace's profile: {invalid:#}"
        );
    }
    // Deleting it does not wait for devices that never had it.
    let started = Instant::now();
    api.kubectl(&[
        "delete",
        "profile",
        "office-wifi",
        "-n",
        OTHER,
        "--timeout=30s",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "deleting took {:?}",
        started.elapsed()
    );

    // A valid twin: its default identifier is taken by the older profile, which keeps it.
    api.apply(&wifi(OTHER, "office-wifi", "Elsewhere", "everyone"));
    let twin = converge(
        &api,
        &mut devices,
        ("profile", OTHER, "office-wifi"),
        "identifier clash",
        |o| stalled(o, "Invalid"),
    )
    .await
    .unwrap();
    assert!(
        message(&twin, "Stalled").contains("dev.pomona.office-wifi")
            && message(&twin, "Stalled").contains("mdm/office-wifi"),
        "{twin:#}"
    );
    keep_talking(&mut devices, 2, "identifier clash").await;
    assert!(ready_at(api.get(office.0, NS, office.2).as_ref(), 3, 1));

    // With an identifier of its own it is served, to its own namespace's group (nobody).
    api.kubectl(&[
        "patch",
        "profile",
        "office-wifi",
        "-n",
        OTHER,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"identifier":"dev.pomona.mdm2.office-wifi"}}"#,
    ]);
    converge(
        &api,
        &mut devices,
        ("profile", OTHER, "office-wifi"),
        "twin served",
        |o| {
            o.is_some_and(|o| {
                condition(o, "Ready")["status"] == "True" && o["status"]["targeted"] == 0
            })
        },
    )
    .await;
    keep_talking(&mut devices, 2, "twin served").await;
    assert!(devices
        .iter()
        .all(|d| has_profile(d, "dev.pomona.office-wifi")
            && !has_profile(d, "dev.pomona.mdm2.office-wifi")));
    assert!(ready_at(api.get(office.0, NS, office.2).as_ref(), 3, 1));
    let started = Instant::now();
    api.kubectl(&[
        "delete",
        "profile",
        "office-wifi",
        "-n",
        OTHER,
        "--timeout=30s",
    ]);
    assert!(started.elapsed() < Duration::from_secs(20));
    keep_talking(&mut devices, 2, "twin deleted").await;
    assert_nothing_removed(&server, &devices, "another namespace").await;
    assert!(devices
        .iter()
        .all(|d| has_profile(d, "dev.pomona.office-wifi")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_say_what_is_true_now() {
    let api = ApiServer::start().await;
    install(&api, &[NS]);
    let data = tempfile::tempdir().unwrap();
    let server = controller(&api, data.path().to_path_buf(), 0).await;
    let wifi_object = ("profile", NS, "wifi");
    // Declared before any device enrolls: Ready on 0 devices.
    api.apply(&format!(
        "{}---\n{}",
        group(NS, "everyone", "{selector: {}}"),
        wifi(NS, "wifi", "Office", "everyone")
    ));
    let mut devices = Vec::new();
    converge(&api, &mut devices, wifi_object, "ready on none", |o| {
        ready_at(o, 0, 1)
    })
    .await;
    for i in 0..3 {
        devices.push(server.enrolled_device(i).await);
    }
    converge(&api, &mut devices, wifi_object, "ready on three", |o| {
        ready_at(o, 3, 1)
    })
    .await;
    // Two different typos in turn, fixed in between.
    for typo in ["everyon", "evryone"] {
        api.kubectl(&[
            "patch",
            "profile",
            "wifi",
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"groups":["{typo}"]}}}}"#),
        ]);
        converge(&api, &mut devices, wifi_object, typo, |o| {
            o.is_some_and(|o| stalled(Some(o), "Invalid") && message(o, "Stalled").contains(typo))
        })
        .await;
        api.kubectl(&[
            "patch",
            "profile",
            "wifi",
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"groups":["everyone"]}}"#,
        ]);
        converge(&api, &mut devices, wifi_object, "fixed", |o| {
            o.is_some_and(|o| condition(o, "Ready")["status"] == "True")
        })
        .await;
    }
    let notes = |reason: &str| -> Vec<String> {
        api.events_about(NS, "wifi")
            .iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| e["note"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    // Event writes follow status writes: allow them a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = notes("Ready");
        let invalid = notes("Invalid");
        let current = ready.iter().any(|n| n.contains("verified on 3 device(s)"))
            && invalid.iter().any(|n| n.contains("\"everyon\""))
            && invalid.iter().any(|n| n.contains("\"evryone\""));
        if current {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events do not tell the current state: Ready {ready:?}, Invalid {invalid:?}; all: {:#?}",
            api.events_about(NS, "wifi")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    server.stop().await;
}
