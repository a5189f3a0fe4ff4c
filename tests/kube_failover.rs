//! Several replicas on Kubernetes: two Pomona servers share one PostgreSQL database and compete
//! for the Lease. The leader (a separate process) queues the installs; it is SIGKILLed before
//! any device fetched them; the other replica takes the Lease, the devices fetch exactly the
//! commands the dead leader queued (nothing lost, nothing queued twice), and the survivor
//! finishes the convergence and writes Ready. Stopping it gracefully releases the Lease.

mod support;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::kube::ApiServer;
use support::TestServer;

const NS: &str = "mdm";

fn lease_holder(api: &ApiServer) -> String {
    let (_, out, _) = api.kubectl_result(
        &[
            "get",
            "lease",
            "pomona-controller",
            "-n",
            "pomona-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    out.trim().to_string()
}

fn profile(api: &ApiServer) -> Value {
    let (ok, out, err) =
        api.kubectl_result(&["get", "profile", "wifi", "-n", NS, "-o", "json"], None);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_leader_dies_the_other_replica_takes_over_and_finishes_convergence() {
    let api = ApiServer::start().await;
    api.kubectl(&[
        "apply",
        "-k",
        &format!("{}/deploy", env!("CARGO_MANIFEST_DIR")),
    ]);
    api.wait_established(&support::kube::POMONA_CRDS);
    api.kubectl(&["create", "namespace", NS]);
    let database = support::fresh_postgres_database("kube_failover").await;
    let data = tempfile::tempdir().unwrap();

    // Replica A: its own process, so it can really be killed.
    let port_a = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_a = std::fs::File::create(data.path().join("replica-a.log")).unwrap();
    let mut replica_a = Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args([
            "serve",
            "--kube",
            "--identity",
            "replica-a",
            "--lease-namespace",
            "pomona-system",
        ])
        .arg("--kubeconfig")
        .arg(&api.controller_kubeconfig)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--database", &database])
        .args(["--listen", &format!("127.0.0.1:{port_a}")])
        .args([
            "--lease-duration-secs",
            "4",
            "--status-interval-secs",
            "1",
            "--inventory-interval-secs",
            "1",
        ])
        .env_remove("KUBECONFIG")
        .env("POMONA_LOG", "info,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(log_a)
        .spawn()
        .unwrap();
    wait_for("replica-a leads", 60, || lease_holder(&api) == "replica-a").await;

    // Replica B: in this process, same database, CA and certificates; devices talk to it.
    let kubeconfig = api.controller_kubeconfig.clone();
    let db = database.clone();
    let server = TestServer::start_in(data.path().to_path_buf(), move |a| {
        a.kube = true;
        a.kubeconfig = Some(kubeconfig);
        a.database = Some(db);
        a.identity = Some("replica-b".into());
        a.lease_namespace = Some("pomona-system".into());
        a.lease_duration_secs = Some(4);
        a.status_interval_secs = Some(1);
        a.inventory_interval_secs = Some(1);
    })
    .await;
    assert_eq!(
        lease_holder(&api),
        "replica-a",
        "B must not steal a live lease"
    );
    let mut devices = Vec::new();
    for i in 0..4 {
        devices.push(server.enrolled_device(i).await);
    }

    api.apply(&format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {{name: everyone, namespace: {NS}}}
spec: {{selector: {{}}}}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {{name: wifi, namespace: {NS}}}
spec:
  groups: [everyone]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {{SSID_STR: Office}}
"
    ));
    // The leader (A) learns of devices that talked to B and queues the installs.
    wait_for("A queues installs for all devices", 60, || {
        let p = profile(&api);
        p["status"]["pending"] == 4 && p["status"]["targeted"] == 4
    })
    .await;

    // Kill the leader outright: no lease release, no goodbye.
    replica_a.kill().unwrap();
    replica_a.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for d in devices.iter_mut() {
            let _ = d.exchange().await;
        }
        let p = profile(&api);
        let ready = p["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True");
        if ready && p["status"]["verified"] == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence after failover: {p:#}\nlease holder: {}",
            lease_holder(&api)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(lease_holder(&api), "replica-b");
    for d in &devices {
        assert!(d.state.profiles.contains_key("dev.pomona.wifi"));
        let installs = server
            .commands(&d.hw.udid)
            .await
            .into_iter()
            .filter(|c| c["request_type"] == "InstallProfile")
            .count();
        assert_eq!(
            installs, 1,
            "the install A queued was delivered, not queued again"
        );
    }
    // A graceful stop hands the Lease back at once (a rolling update needs no expiry wait).
    server.stop().await;
    assert_eq!(lease_holder(&api), "", "the Lease is released on shutdown");
}
