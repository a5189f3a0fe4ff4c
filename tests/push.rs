//! APNs push end to end: a real server, the local APNs server in `support::apns` (which requires
//! the push certificate as client certificate and checks every push), and simulated devices that
//! never poll: they connect only when a push reaches them. Waits are bounded polls of observable
//! state (API, recorded pushes), never timing assertions.

mod support;

use pomona::config::ServeArgs;
use pomona::push::certificate::{CertificateError, PushCertificate};
use pomona::sim::device::SimDevice;
use pomona::sim::wake::{answer_pushes, WakeStats};
use serde_json::{json, Value};
use std::time::Duration;
use support::apns::{eventually, FakeApns, TestPki};
use support::TestServer;
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(30);

struct Setup {
    pki: TestPki,
    apns: FakeApns,
    server: TestServer,
}

async fn setup(adjust: impl FnOnce(&TestPki, &FakeApns, &mut ServeArgs)) -> Setup {
    let pki = TestPki::new();
    let apns = FakeApns::start(&pki).await;
    let server = TestServer::start_with(|args| {
        apns.configure(&pki, args);
        adjust(&pki, &apns, args);
    })
    .await;
    Setup { pki, apns, server }
}

/// A device that answers pushes (and nothing else) until the returned sender says stop.
fn wake_on_push(
    apns: &FakeApns,
    mut device: SimDevice,
) -> (
    tokio::task::JoinHandle<(SimDevice, WakeStats)>,
    watch::Sender<bool>,
) {
    let pushed = apns.device(device.push_token());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let stats = answer_pushes(&mut device, pushed, stopped).await;
        (device, stats)
    });
    (task, stop)
}

async fn push_view(server: &TestServer, device: &str) -> Value {
    let (status, json) = server.admin_get(&format!("/api/v1/devices/{device}")).await;
    assert_eq!(status, 200, "{json}");
    json["push"].clone()
}

async fn command_status(server: &TestServer, device: &str, uuid: &str) -> String {
    server.command(device, uuid).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn millis(rfc3339: &Value) -> i64 {
    let text = rfc3339.as_str().expect("a time");
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_woken_only_by_pushes_answer_every_queued_command() {
    let Setup { apns, server, pki } = setup(|_, _, _| {}).await;
    let mut fleet = Vec::new();
    for index in 0..5 {
        let device = server.enrolled_device(index).await;
        let udid = device.udid().to_string();
        let token = device.push_token().to_vec();
        let magic = device.push_magic().to_string();
        let (task, stop) = wake_on_push(&apns, device);
        fleet.push((udid, token, magic, task, stop));
    }
    let mut queued = Vec::new();
    for (udid, ..) in &fleet {
        for body in [
            json!({"type": "ProfileList"}),
            json!({"type": "SecurityInfo"}),
        ] {
            queued.push((udid.clone(), server.queue(udid, body).await));
        }
    }
    for (udid, uuid) in &queued {
        eventually("every command answered after a push", PATIENCE, || async {
            (command_status(&server, udid, uuid).await == "acknowledged").then_some(())
        })
        .await;
    }
    for (udid, token, magic, task, stop) in fleet {
        let pushes: Vec<_> = apns
            .pushes()
            .into_iter()
            .filter(|p| p.token_hex == hex::encode(&token))
            .collect();
        assert!(!pushes.is_empty(), "{udid} was never pushed");
        for push in &pushes {
            assert_eq!(push.status, 200, "APNs refused a push: {push:?}");
            assert_eq!(push.topic.as_deref(), Some(pki.topic.as_str()));
            assert_eq!(push.push_magic.as_deref(), Some(magic.as_str()));
        }
        stop.send(true).unwrap();
        let (_, stats) = task.await.unwrap();
        assert!(
            stats.wakes >= 1 && stats.failed_exchanges == 0,
            "{udid}: {stats:?}"
        );
        // A push's outcome is written in a task of its own after APNs answers (see
        // `push::scheduler`), and the device may have answered everything before that.
        let view = eventually("the push's outcome recorded", PATIENCE, || async {
            let view = push_view(&server, &udid).await;
            (view["last_result"] == "accepted").then_some(view)
        })
        .await;
        assert_eq!(view["token_invalid"], false);
        assert!(view["last_push_at"].is_string(), "{view}");
    }
    let metrics = server
        .client
        .get(format!("{}/metrics", server.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "pomona_push_certificate_not_after_seconds{{topic=\"{}\"}}",
            pki.topic
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("pomona_push_total{result=\"accepted\"}"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_enqueues_in_a_burst_make_one_push() {
    let Setup { apns, server, .. } = setup(|_, _, args| {
        args.push_coalesce = Some("1s".into());
    })
    .await;
    // The device does not answer: the push can only be repeated by the (one hour) backoff.
    let device = server.enrolled_device(0).await;
    for _ in 0..100 {
        server
            .queue(device.udid(), json!({"type": "ProfileList"}))
            .await;
    }
    eventually("the push is recorded", PATIENCE, || async {
        (push_view(&server, device.udid()).await["attempts_since_seen"] == 1).then_some(())
    })
    .await;
    assert_eq!(
        apns.received_for(device.push_token()),
        1,
        "{:?}",
        apns.pushes()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_answers_is_pushed_again_with_backoff_until_it_connects() {
    let Setup { apns, server, .. } = setup(|_, _, args| {
        args.push_backoff = Some("200ms,400ms,1h".into());
    })
    .await;
    let mut device = server.enrolled_device(0).await;
    server
        .queue(device.udid(), json!({"type": "ProfileList"}))
        .await;
    let view = eventually("three pushes without an answer", PATIENCE, || async {
        let view = push_view(&server, device.udid()).await;
        (view["attempts_since_seen"] == 3).then_some(view)
    })
    .await;
    assert_eq!(apns.accepted_for(device.push_token()), 3);
    // After the last step of the schedule the daily-cap step (here 1 h) repeats.
    let wait = millis(&view["next_push_at"]) - millis(&view["last_push_at"]);
    assert!(wait >= 30 * 60 * 1000, "next push after {wait} ms: {view}");

    device
        .exchange()
        .await
        .expect("the device finally connects");
    let view = push_view(&server, device.udid()).await;
    assert_eq!(
        view["attempts_since_seen"], 0,
        "connecting resets the backoff: {view}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_token_is_not_pushed_again_until_a_new_token_update() {
    let Setup { apns, server, .. } = setup(|_, _, _| {}).await;
    let mut device = server.enrolled_device(0).await;
    let token = device.push_token().to_vec();
    apns.fail_token(&token, Some((410, "Unregistered")));
    let first = server
        .queue(device.udid(), json!({"type": "ProfileList"}))
        .await;
    let view = eventually("the token is marked invalid", PATIENCE, || async {
        let view = push_view(&server, device.udid()).await;
        (view["token_invalid"] == true).then_some(view)
    })
    .await;
    assert_eq!(view["last_result"], "410 Unregistered", "{view}");
    assert!(view["next_push_at"].is_null(), "{view}");

    // More commands: still no push, and an administrator is told why.
    server
        .queue(device.udid(), json!({"type": "SecurityInfo"}))
        .await;
    let (status, answer) = server
        .admin_post(
            &format!("/api/v1/devices/{}/push", device.udid()),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("TokenUpdate"),
        "{answer}"
    );
    assert_eq!(apns.received_for(&token), 1, "{:?}", apns.pushes());

    // A new TokenUpdate makes the device pushable again; its waiting commands get a push.
    apns.fail_token(&token, None);
    let pushed = apns.device(&token);
    let mut update = plist::Dictionary::new();
    update.insert("MessageType".into(), "TokenUpdate".into());
    update.insert(
        "Topic".into(),
        "com.apple.mgmt.External.00000000-0000-4000-8000-000000000000".into(),
    );
    update.insert("UDID".into(), device.udid().into());
    update.insert("Token".into(), plist::Value::Data(token.clone()));
    update.insert("PushMagic".into(), device.push_magic().into());
    device.checkin(update, "TokenUpdate").await.unwrap();
    tokio::time::timeout(PATIENCE, pushed.notified())
        .await
        .expect("a push after the new TokenUpdate");
    device.exchange().await.unwrap();
    assert_eq!(
        command_status(&server, device.udid(), &first).await,
        "acknowledged"
    );
    assert_eq!(
        push_view(&server, device.udid()).await["token_invalid"],
        false
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apns_outage_delays_pushes_but_loses_none() {
    let Setup { apns, server, .. } = setup(|_, _, _| {}).await;
    apns.set_down(true);
    let mut fleet = Vec::new();
    for index in 0..3 {
        let device = server.enrolled_device(index).await;
        let uuid = server
            .queue(device.udid(), json!({"type": "ProfileList"}))
            .await;
        let udid = device.udid().to_string();
        fleet.push((udid, uuid, wake_on_push(&apns, device)));
    }
    for (udid, ..) in &fleet {
        eventually("failed attempts while APNs is down", PATIENCE, || async {
            let view = push_view(&server, udid).await;
            (view["consecutive_failures"].as_i64().unwrap_or(0) >= 2).then_some(())
        })
        .await;
        let view = push_view(&server, udid).await;
        assert!(
            view["last_result"].as_str().unwrap().starts_with("failed:"),
            "{view}"
        );
        assert!(
            view["next_push_at"].is_string(),
            "a failed push must stay scheduled: {view}"
        );
    }
    // Then APNs answers, but throttles at first: still retried.
    apns.fail_all(Some((429, "TooManyRequests")));
    apns.set_down(false);
    eventually("a throttled push", PATIENCE, || async {
        apns.pushes().iter().any(|p| p.status == 429).then_some(())
    })
    .await;
    apns.fail_all(None);
    for (udid, uuid, _) in &fleet {
        eventually(
            "the command is answered after recovery",
            PATIENCE,
            || async {
                (command_status(&server, udid, uuid).await == "acknowledged").then_some(())
            },
        )
        .await;
    }
    for (_, _, (task, stop)) in fleet {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_could_not_be_sent_is_sent_after_a_restart() {
    let pki = TestPki::new();
    let apns = FakeApns::start(&pki).await;
    apns.set_down(true);
    let data = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_in(data.path().to_path_buf(), |args| apns.configure(&pki, args)).await;
    let device = server.enrolled_device(0).await;
    let uuid = server
        .queue(device.udid(), json!({"type": "ProfileList"}))
        .await;
    eventually("a failed attempt", PATIENCE, || async {
        (push_view(&server, device.udid()).await["consecutive_failures"].as_i64() >= Some(1))
            .then_some(())
    })
    .await;
    let old_base = server.base_url.clone();
    let identity = device.identity.clone().expect("enrolled");
    server.stop().await;

    apns.set_down(false);
    let server =
        TestServer::start_in(data.path().to_path_buf(), |args| apns.configure(&pki, args)).await;
    // The same device (same token, same identity), now talking to the restarted server's port.
    let mut device = server.device(0);
    device.identity = Some(std::sync::Arc::new(
        identity.moved_to(&old_base, &server.base_url),
    ));
    let udid = device.udid().to_string();
    let (task, stop) = wake_on_push(&apns, device);
    eventually(
        "the command is answered after the restart",
        PATIENCE,
        || async { (command_status(&server, &udid, &uuid).await == "acknowledged").then_some(()) },
    )
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_certificate_apns_does_not_trust_is_reported_clearly() {
    let Setup { server, apns, .. } = setup(|pki, _, args| {
        args.push_cert = Some(pki.path("foreign.pem"));
        args.push_key = Some(pki.path("foreign.key"));
    })
    .await;
    let device = server.enrolled_device(0).await;
    let (status, answer) = server
        .admin_post(
            &format!("/api/v1/devices/{}/push", device.udid()),
            json!({}),
        )
        .await;
    assert_eq!(status, 502, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("rejected the push certificate"),
        "{message}"
    );
    let view = push_view(&server, device.udid()).await;
    assert!(
        view["last_result"]
            .as_str()
            .unwrap()
            .contains("rejected the push certificate"),
        "{view}"
    );
    assert!(
        apns.pushes().is_empty(),
        "nothing may get through: {:?}",
        apns.pushes()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_push_a_device_through_the_api_and_the_cli() {
    let Setup { apns, server, .. } = setup(|_, _, _| {}).await;
    let device = server.enrolled_device(0).await;
    let (status, answer) = server
        .admin_post(
            &format!("/api/v1/devices/{}/push", device.hw.serial_number),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], true);
    assert_eq!(answer["device_id"], device.udid());
    let accepted = pomona::push::cli::run(pomona::push::cli::PushArgs {
        device: device.udid().to_string(),
        server: server.base_url.clone(),
        admin_token_file: Some(server.data_dir.join("admin-token")),
        ca: Some(server.data_dir.join("tls/ca.pem")),
    })
    .await
    .unwrap();
    assert!(accepted, "pomona push reported a failure");
    assert_eq!(apns.accepted_for(device.push_token()), 2);
    let (status, _) = server
        .admin_post("/api/v1/devices/NO-SUCH-DEVICE/push", json!({}))
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[test]
fn a_pem_push_certificate_yields_its_topic_and_expiry() {
    let pki = TestPki::new();
    let cert = PushCertificate::from_pem_files(&pki.path("push.pem"), Some(&pki.path("push.key")))
        .unwrap();
    assert_eq!(cert.topic, pki.topic);
    assert!(cert.not_after > pomona::vocab::clock::now_millis() / 1000);
    assert!(
        !format!("{cert:?}").contains("PRIVATE"),
        "Debug must not show the key"
    );
    // Certificate and key in one file work too.
    let combined = support::apns::write(
        pki.dir.path(),
        "combined.pem",
        &format!("{}{}", pki.push.cert_pem, pki.push.key_pem),
    );
    assert_eq!(
        PushCertificate::from_pem_files(&combined, None)
            .unwrap()
            .topic,
        pki.topic
    );
}

#[test]
fn a_pkcs12_push_certificate_loads_with_its_password_and_refuses_a_wrong_one() {
    let pki = TestPki::new();
    let p12 = pki.write_pkcs12(&pki.push, "s3cret", "push.p12");
    let cert = PushCertificate::from_pkcs12_file(&p12, "s3cret").unwrap();
    assert_eq!(cert.topic, pki.topic);
    let error = PushCertificate::from_pkcs12_file(&p12, "guess").unwrap_err();
    assert!(
        matches!(error, CertificateError::WrongPassword { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("wrong PKCS#12 password"), "{message}");
    assert!(
        !message.contains("guess"),
        "the password must not be echoed: {message}"
    );
}

#[test]
fn a_certificate_without_an_mdm_topic_is_refused_with_the_reason() {
    let pki = TestPki::new();
    let error =
        PushCertificate::from_pem_files(&pki.path("not-mdm.pem"), Some(&pki.path("not-mdm.key")))
            .unwrap_err();
    assert!(matches!(error, CertificateError::NotMdm { .. }), "{error}");
    assert!(error.to_string().contains("com.apple.mgmt."), "{error}");
    let p12 = pki.write_pkcs12(&pki.not_mdm, "pw", "not-mdm.p12");
    assert!(matches!(
        PushCertificate::from_pkcs12_file(&p12, "pw"),
        Err(CertificateError::NotMdm { .. })
    ));
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let pki = TestPki::new();
    let error =
        PushCertificate::from_pem_files(&pki.path("push.pem"), Some(&pki.path("foreign.key")))
            .unwrap_err();
    assert!(
        matches!(error, CertificateError::KeyMismatch { .. }),
        "{error}"
    );
    let missing = PushCertificate::from_pem_files(&pki.path("nope.pem"), None).unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_only_answers_not_now_keeps_backing_off() {
    let Setup { apns, server, .. } = setup(|_, _, args| {
        args.push_backoff = Some("200ms,400ms,1h".into());
    })
    .await;
    let mut device = server.enrolled_device(0).await;
    device.faults.not_now_rate = 1.0;
    let udid = device.udid().to_string();
    let token = device.push_token().to_vec();
    let (task, stop) = wake_on_push(&apns, device);
    let profile = support::b64(&support::profile("com.example.wifi", "Wi-Fi"));
    let uuid = server
        .queue(&udid, json!({"type": "InstallProfile", "payload": profile}))
        .await;
    let view = eventually("the backoff reaches its last step", PATIENCE, || async {
        let view = push_view(&server, &udid).await;
        (view["attempts_since_seen"] == 3).then_some(view)
    })
    .await;
    let wait = millis(&view["next_push_at"]) - millis(&view["last_push_at"]);
    assert!(wait >= 30 * 60 * 1000, "next push after {wait} ms: {view}");
    assert_eq!(apns.accepted_for(&token), 3);
    stop.send(true).unwrap();
    let (_, stats) = task.await.unwrap();
    assert!(
        stats.wakes >= 3,
        "the device answered every push: {stats:?}"
    );
    let command = server.command(&udid, &uuid).await;
    assert_eq!(command["status"], "queued");
    assert!(command["not_now_count"].as_i64().unwrap() >= 3, "{command}");
    server.stop().await;
}

/// Two replicas on one PostgreSQL database and one data directory (CA, TLS certificate, admin
/// token), as on Kubernetes without `--kube`: a device enrolled with replica B and woken only by
/// pushes answers a command queued through replica A's admin API. Nothing about the command
/// lives in A's memory: the queue and the push request are rows of the shared database, the push
/// reaches the device through APNs, and the device fetches the command from B. Its answer is
/// then read back through A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_queued_through_one_replica_is_pushed_and_delivered_by_another() {
    let pki = TestPki::new();
    let apns = FakeApns::start(&pki).await;
    let database = support::fresh_postgres_database("replicas").await;
    let data = tempfile::tempdir().unwrap();
    let replica = |args: &mut ServeArgs| {
        apns.configure(&pki, args);
        args.database = Some(database.clone());
    };
    let a = TestServer::start_in(data.path().to_path_buf(), replica).await;
    let b = TestServer::start_in(data.path().to_path_buf(), replica).await;
    assert_ne!(a.base_url, b.base_url);

    // Enrolled with B (its one-time token from B's admin API), known to A through the database.
    let device = b.enrolled_device(0).await;
    let udid = device.udid().to_string();
    let token = device.push_token().to_vec();
    let name = device.hw.device_name.clone();
    let (status, view) = a.admin_get(&format!("/api/v1/devices/{udid}")).await;
    assert_eq!(status, 200, "A does not know the device B enrolled: {view}");
    let (task, stop) = wake_on_push(&apns, device);

    let uuid = a
        .queue(
            &udid,
            json!({"type": "DeviceInformation", "queries": ["DeviceName", "OSVersion"]}),
        )
        .await;
    let answered = eventually(
        "the command queued on A answered through B",
        PATIENCE,
        || {
            let (a, udid, uuid) = (&a, &udid, &uuid);
            async move {
                let command = a.command(udid, uuid).await;
                (command["status"] == "acknowledged").then_some(command)
            }
        },
    )
    .await;
    assert_eq!(
        answered["result"]["QueryResponses"]["DeviceName"], name,
        "the device's answer, read through A: {answered}"
    );
    assert_eq!(answered["attempts"], 1, "delivered once: {answered}");

    // The device was woken by a push (it never polls) and talked to B alone.
    let pushes: Vec<_> = apns
        .pushes()
        .into_iter()
        .filter(|p| p.token_hex == hex::encode(&token))
        .collect();
    assert!(!pushes.is_empty(), "the device was never pushed");
    assert!(pushes.iter().all(|p| p.status == 200), "{pushes:?}");
    let connects = |metrics: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("pomona_http_requests_total{endpoint=\"/mdm/connect\""))
    };
    assert!(connects(&b.metrics().await), "B served the exchange");
    assert!(!connects(&a.metrics().await), "A served no device exchange");
    stop.send(true).unwrap();
    let (_, stats) = task.await.unwrap();
    assert!(stats.wakes >= 1 && stats.failed_exchanges == 0, "{stats:?}");
    a.stop().await;
    b.stop().await;
}

/// `pomona_reconciles_total` of a server: the plans it made.
async fn reconciles(server: &TestServer) -> u64 {
    server
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("pomona_reconciles_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("pomona_reconciles_total in /metrics")
}

/// Exchanges until the device carries the declared profile (its identifier on the device).
async fn exchange_until_installed(device: &mut SimDevice, identifier: &str, what: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !device.state.profiles.contains_key(identifier) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never installed"
        );
        let _ = device.exchange().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_servers_on_one_database_without_kube_one_plans_and_the_other_takes_over_when_it_stops(
) {
    let database = support::fresh_postgres_database("planning_lock").await;
    let data = tempfile::tempdir().unwrap();
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(
        policy.path().join("policy.yaml"),
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata: {name: everyone}\n\
         spec:\n  selector: {}\n---\napiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\n\
         metadata: {name: wifi}\nspec:\n  groups: [everyone]\n  payloads:\n    \
         - payloadType: com.apple.wifi.managed\n      content: {SSID_STR: Office, AutoJoin: true}\n",
    )
    .unwrap();
    let replica = |args: &mut ServeArgs| {
        args.database = Some(database.clone());
        args.policy_dir = Some(policy.path().to_path_buf());
    };
    let a = TestServer::start_in(data.path().to_path_buf(), replica).await;
    let b = TestServer::start_in(data.path().to_path_buf(), replica).await;

    // Enrolled with B and served by B alone: A plans it (it holds the lock and picks up the
    // devices B saw), B plans nothing.
    let mut first = b.enrolled_device(0).await;
    exchange_until_installed(&mut first, "dev.pomona.wifi", "planned by A, served by B").await;
    assert!(reconciles(&a).await > 0, "A planned");
    assert_eq!(
        reconciles(&b).await,
        0,
        "B planned too: two planners on one database"
    );

    // A stops: its connection, and the lock with it, goes; B takes over within seconds.
    a.stop().await;
    let mut second = b.enrolled_device(1).await;
    exchange_until_installed(
        &mut second,
        "dev.pomona.wifi",
        "planned by B after A stopped",
    )
    .await;
    assert!(reconciles(&b).await > 0, "B took over the planning");
    b.stop().await;
}
