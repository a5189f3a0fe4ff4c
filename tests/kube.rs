//! Kubernetes, for real: a kube-apiserver and etcd built from Go modules (`scripts/envtest`),
//! the CRDs from `crds/` and the deploy/ manifests applied with kubectl, and Pomona running as
//! the deploy/ service account (so its RBAC is exactly enough). Administrators `kubectl apply`
//! a DeviceGroup and a Profile; simulated devices converge; `kubectl get profiles` shows the
//! counts and Ready=True; a change reinstalls; an invalid object is Stalled with its message
//! while the others keep working; deleting a Profile removes it from devices before its
//! finalizer goes, and gives up after the timeout naming the devices that kept it; a device
//! that refuses a profile is named, with its reason, in a Stalled condition. With two
//! replicas on one PostgreSQL database, killing the leader hands over to the other, which
//! finishes the convergence. A DeviceAction locks a Mac with a PIN from a Secret: the Mac gets
//! it, the status shows the device Acknowledged and Ready, and the PIN is nowhere in status,
//! events or logs; one naming a missing Secret is Stalled saying which. A replica is not ready
//! (`/readyz`) until it built a policy snapshot, and stays ready, saying it is degraded, while the
//! API server is down.

mod support;

use pomona::sim::device::{Faults, SimDevice};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::kube::ApiServer;
use support::TestServer;

const NS: &str = "mdm";

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// `kubectl auth can-i` as the controller's service account.
fn can(api: &ApiServer, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i", "--as", support::kube::CONTROLLER_USER];
    all.extend_from_slice(args);
    api.kubectl_result(&all, None).1.trim() == "yes"
}

fn group(name: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {{name: {name}, namespace: {NS}}}
spec:
  selector: {{}}
"
    )
}

fn wifi(name: &str, ssid: &str, group: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {{name: {name}, namespace: {NS}}}
spec:
  groups: [{group}]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {{SSID_STR: {ssid}, AutoJoin: true}}
"
    )
}

fn get(api: &ApiServer, kind: &str, name: &str) -> Option<Value> {
    let (ok, out, err) = api.kubectl_result(&["get", kind, name, "-n", NS, "-o", "json"], None);
    if !ok {
        assert!(err.contains("NotFound"), "kubectl get {kind} {name}: {err}");
        return None;
    }
    Some(serde_json::from_str(&out).unwrap())
}

fn condition<'a>(object: &'a Value, type_: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// Devices exchange until `done` holds for the object (bounded wait).
async fn converge(
    api: &ApiServer,
    devices: &mut [SimDevice],
    kind: &str,
    name: &str,
    what: &str,
    done: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for d in devices.iter_mut() {
            let _ = d.exchange().await;
        }
        let object = get(api, kind, name);
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

fn ready_with(object: Option<&Value>, verified: i64, generation: i64) -> bool {
    object.is_some_and(|o| {
        o["status"]["verified"] == verified
            && o["status"]["pending"] == 0
            && o["status"]["observedGeneration"] == generation
            && condition(o, "Ready")["status"] == "True"
    })
}

fn has_profile(device: &SimDevice, identifier: &str) -> bool {
    device.state.profiles.contains_key(identifier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_apply_converges_devices_and_status_follows_changes_errors_and_deletes() {
    let api = ApiServer::start().await;
    support::kube::install(&api, &[NS]);
    // The examples are valid resources (checked by the API server against the CRD schemas).
    api.kubectl(&["apply", "--dry-run=server", "-f", &repo("examples/kube")]);
    api.kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        &repo("examples/kube-actions"),
    ]);
    // deploy/ RBAC: what the controller needs, and nothing broader.
    let can = |args: &[&str]| can(&api, args);
    assert!(can(&[
        "watch",
        "profiles.mdm.pomona.dev",
        "--all-namespaces"
    ]));
    assert!(can(&[
        "patch",
        "profiles.mdm.pomona.dev",
        "--subresource=status",
        "-n",
        NS
    ]));
    assert!(can(&[
        "create",
        "leases.coordination.k8s.io",
        "-n",
        "pomona-system"
    ]));
    assert!(!can(&["create", "leases.coordination.k8s.io", "-n", NS]));
    assert!(!can(&["delete", "profiles.mdm.pomona.dev", "-n", NS]));
    assert!(!can(&["get", "secrets", "-n", "pomona-system"]));
    assert!(can(&[
        "watch",
        "deviceactions.mdm.pomona.dev",
        "--all-namespaces"
    ]));
    assert!(can(&[
        "patch",
        "deviceactions.mdm.pomona.dev",
        "--subresource=status",
        "-n",
        NS
    ]));
    assert!(!can(&["patch", "deviceactions.mdm.pomona.dev", "-n", NS]));
    // Secrets: nowhere until a namespace binds pomona-action-secrets (see the DeviceAction test).
    assert!(!can(&["get", "secrets", "-n", NS]));
    assert!(!can(&["list", "secrets", "--all-namespaces"]));
    assert!(!can(&[
        "update",
        "customresourcedefinitions.apiextensions.k8s.io"
    ]));

    let kubeconfig = api.controller_kubeconfig.clone();
    let server = TestServer::start_with(move |a| {
        a.kube = true;
        a.kubeconfig = Some(kubeconfig);
        a.lease_namespace = Some("pomona-system".into());
        a.identity = Some("replica-a".into());
        a.status_interval_secs = Some(1);
        a.removal_timeout_secs = Some(6);
        a.lease_duration_secs = Some(4);
        a.retry_backoff_ms = Some(50);
        a.max_attempts = Some(3);
        a.inventory_interval_secs = Some(1);
    })
    .await;
    let mut devices = Vec::new();
    for i in 0..5 {
        devices.push(server.enrolled_device(i).await);
    }

    // kubectl apply → devices converge → kubectl get profiles shows it.
    api.apply(&format!(
        "{}---\n{}",
        group("everyone"),
        wifi("wifi", "Office", "everyone")
    ));
    let object = converge(
        &api,
        &mut devices,
        "profile",
        "wifi",
        "first install",
        |o| ready_with(o, 5, 1),
    )
    .await
    .unwrap();
    assert_eq!(object["status"]["targeted"], 5, "{object:#}");
    assert_eq!(condition(&object, "Stalled")["status"], "False");
    assert_eq!(
        object["metadata"]["finalizers"],
        serde_json::json!([pomona::controller::FINALIZER])
    );
    assert!(devices.iter().all(|d| has_profile(d, "dev.pomona.wifi")));
    // The admin API tells where policy comes from.
    let (_, status) = server.admin_get("/api/v1/status").await;
    assert_eq!(
        status["policy"]["source"], "kube (all namespaces)",
        "{status:#}"
    );
    assert!(status["policy"]["revision"]
        .as_str()
        .unwrap()
        .starts_with("kube:"));
    let table = api.kubectl(&["get", "profiles", "-n", NS]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "TARGETED", "VERIFIED", "PENDING", "FAILED", "REMOVING", "READY", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["wifi", "5", "5", "0", "0", "0", "True"],
        "{table}"
    );
    // -o wide adds the Ready condition's message.
    let wide = api.kubectl(&["get", "profiles", "-n", NS, "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().ends_with("MESSAGE")
            && wide
                .lines()
                .nth(1)
                .unwrap()
                .contains("verified on 5 device(s)"),
        "{wide}"
    );
    let groups = api.kubectl(&["get", "dg", "-n", NS]);
    assert!(
        groups.lines().nth(1).is_some_and(
            |l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["everyone", "5", "True"]
        ),
        "{groups}"
    );

    // The schema rejects what it can express, before Pomona sees it.
    let (ok, _, err) = api.kubectl_result(
        &["apply", "-f", "-"],
        Some(
            &wifi("bad-policy", "X", "everyone")
                .replace("  groups:", "  removalPolicy: Sometimes\n  groups:"),
        ),
    );
    assert!(!ok && err.contains("removalPolicy"), "{err}");
    let (ok, _, err) = api.kubectl_result(
        &["apply", "-f", "-"],
        Some(&wifi("bad-group", "X", "Not_A_Name")),
    );
    assert!(!ok && err.contains("spec.groups"), "{err}");

    // An object only Pomona can judge: Stalled with the reason; the others keep working.
    api.apply(&wifi("typo", "Guest", "everyon"));
    let typo = converge(
        &api,
        &mut devices,
        "profile",
        "typo",
        "invalid object stalls",
        |o| o.is_some_and(|o| condition(o, "Stalled")["status"] == "True"),
    )
    .await
    .unwrap();
    let message = condition(&typo, "Stalled")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("DeviceGroup \"everyon\" is not declared"),
        "{message}"
    );
    assert_eq!(condition(&typo, "Ready")["status"], "False");

    // A change reinstalls everywhere; status follows the new generation.
    api.apply(&wifi("wifi", "Office-5G", "everyone"));
    converge(
        &api,
        &mut devices,
        "profile",
        "wifi",
        "content change",
        |o| ready_with(o, 5, 2),
    )
    .await;
    let wifi_still = get(&api, "profile", "wifi").unwrap();
    assert_eq!(condition(&wifi_still, "Ready")["status"], "True");

    // Delete: removed from devices first, then the finalizer goes and the object with it.
    api.kubectl(&["delete", "profile", "wifi", "-n", NS, "--wait=false"]);
    converge(&api, &mut devices, "profile", "wifi", "delete", |o| {
        o.is_none()
    })
    .await;
    // Gone from the API only once gone from every device.
    assert!(
        devices.iter().all(|d| !has_profile(d, "dev.pomona.wifi")),
        "the finalizer was released while devices still carried the profile"
    );

    // Devices that never answer: after the timeout the finalizer goes anyway and the event
    // names them.
    api.apply(&wifi("stubborn", "Lab", "everyone"));
    converge(
        &api,
        &mut devices,
        "profile",
        "stubborn",
        "stubborn install",
        |o| ready_with(o, 5, 1),
    )
    .await;
    let started = Instant::now();
    api.kubectl(&["delete", "profile", "stubborn", "-n", NS, "--wait=false"]);
    loop {
        if get(&api, "profile", "stubborn").is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "finalizer never released"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "released before the timeout"
    );
    let events = api.kubectl(&["get", "events.events.k8s.io", "-n", NS, "-o", "json"]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let timed_out = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "RemovalTimedOut" && e["regarding"]["name"] == "stubborn")
        .unwrap_or_else(|| panic!("no RemovalTimedOut event: {events:#}"));
    let note = timed_out["note"].as_str().unwrap();
    assert!(
        note.contains("5 device(s) did not confirm removal"),
        "{note}"
    );
    assert!(
        devices.iter().any(|d| note.contains(&d.hw.udid)),
        "names a device: {note}"
    );
    let reasons_for = |name: &str| -> Vec<String> {
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let wifi_reasons = reasons_for("wifi");
    assert!(
        wifi_reasons.contains(&"Removed".to_string())
            && !wifi_reasons.contains(&"RemovalTimedOut".to_string()),
        "wifi was removed from devices, not timed out: {wifi_reasons:?}"
    );
    assert!(
        reasons_for("typo").contains(&"Invalid".to_string()),
        "a Stalled event for the invalid object: {events:#}"
    );
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Ready" && e["regarding"]["name"] == "wifi"),
        "a Ready event for wifi: {events:#}"
    );

    // A device that refuses the profile: Failed after max_attempts; the status names it and
    // its reason, and the object is Stalled (DevicesFailed) while the others stay Ready.
    let mut refuser = server.device(20);
    refuser.faults = Faults {
        error_rate: 1.0,
        ..Faults::default()
    };
    refuser.enroll().await.unwrap();
    let refuser_id = refuser.udid().to_string();
    api.apply(&format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {{name: lab, namespace: {NS}}}
spec:
  udids: [{refuser_id}]
---
{}",
        wifi("lab-vpn", "Lab", "lab")
    ));
    devices.push(refuser);
    let failed = converge(&api, &mut devices, "profile", "lab-vpn", "refused", |o| {
        o.is_some_and(|o| o["status"]["failed"] == 1)
    })
    .await
    .unwrap();
    assert_eq!(condition(&failed, "Ready")["status"], "False", "{failed:#}");
    let stalled = condition(&failed, "Stalled");
    assert_eq!(stalled["status"], "True", "{failed:#}");
    assert_eq!(stalled["reason"], "DevicesFailed");
    let message = stalled["message"].as_str().unwrap();
    assert!(
        message.contains(&refuser_id) && message.contains("Injected failure"),
        "{message}"
    );
    assert!(message.len() <= pomona::policy::crd::MESSAGE_LIMIT);

    server.stop().await;
}

/// Everything the process logs (every test in this binary), to look for secrets in.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn capture() -> Self {
        let logs = Logs::default();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,pomona=debug"))
            .with_writer(logs.clone())
            .with_ansi(false)
            .try_init()
            .expect("the only tracing subscriber of this test binary");
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

fn device_action(name: &str, serial: &str, secret: &str, key: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceAction
metadata: {{name: {name}, namespace: {NS}}}
spec:
  target: {{serialNumber: {serial}}}
  action: Lock
  message: Return to IT
  pin:
    secretKeyRef: {{name: {secret}, key: {key}}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_action_locks_a_mac_with_a_pin_from_a_secret_that_shows_nowhere() {
    const PIN: &str = "482916";
    let logs = Logs::capture();
    let api = ApiServer::start().await;
    support::kube::install(&api, &[NS]);

    // The example: a Secret, the RoleBinding that lets Pomona get Secrets in this namespace
    // (get only), and a DeviceAction for a Mac of the default simulated fleet (seed 1), which
    // is not enrolled here (seed 42).
    api.kubectl(&["apply", "-f", &repo("examples/kube-actions/lock-mac.yaml")]);
    assert!(can(&api, &["get", "secrets", "-n", NS]));
    assert!(!can(&api, &["list", "secrets", "-n", NS]));
    assert!(!can(&api, &["watch", "secrets", "-n", NS]));
    assert!(!can(&api, &["get", "secrets", "-n", "pomona-system"]));

    let kubeconfig = api.controller_kubeconfig.clone();
    let server = TestServer::start_with(move |a| {
        a.kube = true;
        a.kubeconfig = Some(kubeconfig);
        a.lease_namespace = Some("pomona-system".into());
        a.identity = Some("replica-a".into());
        a.status_interval_secs = Some(1);
        a.lease_duration_secs = Some(4);
        a.retry_backoff_ms = Some(50);
        a.inventory_interval_secs = Some(1);
    })
    .await;
    // Device 4 of the fleet is a Mac; device 0 an iPhone the action does not target.
    let mac = server.enrolled_device(4).await;
    assert_eq!(mac.hw.platform, pomona::sim::behaviour::Platform::Mac);
    let serial = mac.hw.serial_number.clone();
    let udid = mac.udid().to_string();
    let mut devices = vec![mac, server.enrolled_device(0).await];

    // An action whose device is not enrolled says so.
    let waiting = converge(
        &api,
        &mut devices,
        "deviceaction",
        "lock-lost-mac",
        "example action waits for its device",
        |o| o.is_some_and(|o| condition(o, "Ready")["reason"] == "NoDevices"),
    )
    .await
    .unwrap();
    assert_eq!(
        condition(&waiting, "Ready")["message"],
        "no enrolled device matches serial number K1MC8N0U09KA yet",
        "{waiting:#}"
    );
    assert_eq!(condition(&waiting, "Stalled")["status"], "False");

    // Lock the Mac with the PIN from a Secret.
    api.kubectl(&[
        "create",
        "secret",
        "generic",
        "mac-pin",
        "-n",
        NS,
        &format!("--from-literal=pin={PIN}"),
    ]);
    api.apply(&device_action("lock-mac", &serial, "mac-pin", "pin"));
    let locked = converge(
        &api,
        &mut devices,
        "deviceaction",
        "lock-mac",
        "lock acknowledged",
        |o| {
            o.is_some_and(|o| {
                o["status"]["acknowledged"] == 1 && condition(o, "Ready")["status"] == "True"
            })
        },
    )
    .await
    .unwrap();
    assert!(devices[0].state.locked, "the Mac was not locked");
    assert!(
        devices[0]
            .state
            .lock_pin
            .as_ref()
            .is_some_and(|p| p.matches(PIN.as_bytes())),
        "the Mac got the PIN from the Secret"
    );
    assert!(!devices[1].state.locked, "the iPhone was not targeted");
    let status = &locked["status"];
    assert_eq!(status["targeted"], 1, "{locked:#}");
    assert_eq!(status["failed"], 0);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["devices"][0]["device"], udid.as_str(), "{locked:#}");
    assert_eq!(status["devices"][0]["serialNumber"], serial.as_str());
    assert_eq!(status["devices"][0]["state"], "Acknowledged");
    assert_eq!(condition(&locked, "Ready")["reason"], "Done");
    assert_eq!(condition(&locked, "Stalled")["status"], "False");
    let table = api.kubectl(&["get", "deviceactions", "-n", NS]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "ACTION",
            "TARGETED",
            "ACKNOWLEDGED",
            "FAILED",
            "READY",
            "AGE"
        ],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(6).collect::<Vec<_>>()
                == ["lock-mac", "Lock", "1", "1", "0", "True"]),
        "{table}"
    );

    // A rotated PIN is used for devices the action reaches afterwards, without touching the
    // DeviceAction: a group action locks one Mac, the Secret changes, a second Mac enrolls.
    const ROTATED: &str = "907153";
    let second_mac = pomona::sim::hardware(42, 9);
    assert_eq!(second_mac.platform, pomona::sim::behaviour::Platform::Mac);
    api.kubectl(&[
        "create",
        "secret",
        "generic",
        "fleet-pin",
        "-n",
        NS,
        &format!("--from-literal=pin={PIN}"),
    ]);
    api.apply(&format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {{name: lost-macs, namespace: {NS}}}
spec:
  serialNumbers: [{serial}, {}]
---
{}",
        second_mac.serial_number,
        device_action("lock-lost-macs", &serial, "fleet-pin", "pin")
            .replace(&format!("serialNumber: {serial}"), "group: lost-macs")
    ));
    converge(
        &api,
        &mut devices,
        "deviceaction",
        "lock-lost-macs",
        "group lock on the first Mac",
        |o| {
            o.is_some_and(|o| {
                o["status"]["acknowledged"] == 1 && condition(o, "Ready")["status"] == "True"
            })
        },
    )
    .await;
    // Let the last status write (which the watches see) pass, so that only the periodic
    // re-read of Secrets can bring the new PIN.
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.apply(&format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: fleet-pin, namespace: {NS}}}
stringData: {{pin: \"{ROTATED}\"}}
"
    ));
    // Secrets are read again every status interval (1 s here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    devices.push(server.enrolled_device(9).await);
    converge(
        &api,
        &mut devices,
        "deviceaction",
        "lock-lost-macs",
        "group lock on the second Mac",
        |o| {
            o.is_some_and(|o| {
                o["status"]["acknowledged"] == 2 && condition(o, "Ready")["status"] == "True"
            })
        },
    )
    .await;
    let pin_of = |i: usize| {
        devices[i]
            .state
            .lock_pin
            .as_ref()
            .map(|p| p.expose().to_vec())
    };
    assert_eq!(pin_of(2), Some(ROTATED.as_bytes().to_vec()));
    assert_eq!(
        pin_of(0),
        Some(PIN.as_bytes().to_vec()),
        "the first Mac keeps the PIN it was locked with"
    );

    // A DeviceAction naming a Secret that does not exist: Stalled, saying which.
    api.apply(&device_action("lock-nopin", &serial, "missing-pin", "pin"));
    let stalled = converge(
        &api,
        &mut devices,
        "deviceaction",
        "lock-nopin",
        "missing Secret stalls",
        |o| o.is_some_and(|o| condition(o, "Stalled")["status"] == "True"),
    )
    .await
    .unwrap();
    let message = condition(&stalled, "Stalled")["message"].as_str().unwrap();
    assert!(
        message.contains("spec.pin.secretKeyRef: Secret mdm/missing-pin does not exist"),
        "{message}"
    );
    assert_eq!(condition(&stalled, "Stalled")["reason"], "Invalid");
    assert_eq!(condition(&stalled, "Ready")["status"], "False");
    // And one naming a key the Secret lacks.
    api.apply(&device_action("lock-nokey", &serial, "mac-pin", "code"));
    let stalled = converge(
        &api,
        &mut devices,
        "deviceaction",
        "lock-nokey",
        "missing key stalls",
        |o| o.is_some_and(|o| condition(o, "Stalled")["status"] == "True"),
    )
    .await
    .unwrap();
    let message = condition(&stalled, "Stalled")["message"].as_str().unwrap();
    assert!(
        message.contains("Secret mdm/mac-pin has no key \"code\""),
        "{message}"
    );

    // Events: Ready for the lock, a warning naming the missing Secret.
    let events = api.kubectl(&["get", "events.events.k8s.io", "-n", NS, "-o", "json"]);
    let parsed: Value = serde_json::from_str(&events).unwrap();
    let reasons_for = |name: &str| -> Vec<(String, String)> {
        parsed["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    assert!(
        reasons_for("lock-mac").iter().any(|(r, _)| r == "Ready"),
        "{events}"
    );
    assert!(
        reasons_for("lock-nopin")
            .iter()
            .any(|(r, n)| r == "Invalid" && n.contains("mdm/missing-pin")),
        "{events}"
    );

    // The PIN is nowhere to be seen: not in any DeviceAction, event or log line.
    let actions = api.kubectl(&["get", "deviceactions", "-n", NS, "-o", "json"]);
    let (_, device) = server.admin_get(&format!("/api/v1/devices/{udid}")).await;
    for pin in [PIN, ROTATED] {
        assert!(!actions.contains(pin), "a PIN in DeviceAction objects");
        assert!(!events.contains(pin), "a PIN in events");
        assert!(!device.to_string().contains(pin), "a PIN in the admin API");
    }
    server.stop().await;
    let logs = logs.text();
    assert!(
        logs.contains("policy from custom resources"),
        "logs were captured"
    );
    assert!(
        !logs.contains(PIN) && !logs.contains(ROTATED),
        "a PIN in the logs"
    );
}

/// `GET /readyz` of a server, as (status, body).
async fn readyz(server: &TestServer) -> (u16, String) {
    let r = server
        .client
        .get(format!("{}/readyz", server.base_url))
        .send()
        .await
        .expect("readyz answers");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn wait_for_readyz(server: &TestServer, what: &str, done: impl Fn(u16, &str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = readyz(server).await;
        if done(status, &body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /readyz still answers {status} {body:?} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_ready_once_it_built_policy_and_stays_ready_serving_it_while_the_api_server_is_down(
) {
    let mut api = ApiServer::start().await;
    let kubeconfig = api.kubeconfig.clone();
    // No CRDs yet: the watches fail, so there is no snapshot and the replica is not ready.
    let server = TestServer::start_with(move |a| {
        a.kube = true;
        a.kubeconfig = Some(kubeconfig);
        a.lease_namespace = Some("pomona-system".into());
        a.identity = Some("replica-a".into());
        a.lease_duration_secs = Some(4);
    })
    .await;
    wait_for_readyz(&server, "not ready without a snapshot", |status, body| {
        status == 503
            && body.contains("no policy snapshot built yet")
            && body.contains("cannot be read")
    })
    .await;

    support::kube::install(&api, &[NS]);
    wait_for_readyz(&server, "ready once the CRDs are there", |status, body| {
        status == 200 && body == "ready\n"
    })
    .await;
    let device = server.enrolled_device(0).await;

    // The API server goes away: the replica keeps serving devices from the snapshot it built,
    // and says so; the status API names the failing watch.
    api.stop_apiserver();
    wait_for_readyz(&server, "ready but degraded", |status, body| {
        status == 200 && body.starts_with("ready\n") && body.contains("degraded: kube")
    })
    .await;
    let (code, status) = server.admin_get("/api/v1/status").await;
    assert_eq!(code, 200, "{status}");
    let error = status["policy"]["last_fetch_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("Kubernetes API server"), "{status}");
    let mut device = device;
    device
        .exchange()
        .await
        .expect("a device is served while the API server is down");

    api.restart_apiserver().await;
    wait_for_readyz(&server, "healthy again", |status, body| {
        status == 200 && body == "ready\n"
    })
    .await;
    let (_, status) = server.admin_get("/api/v1/status").await;
    assert!(status["policy"]["last_fetch_error"].is_null(), "{status}");
    server.stop().await;
}
