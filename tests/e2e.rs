//! End-to-end over real HTTPS: a Pomona server on a loopback port, simulated devices speaking the
//! device protocol, and the admin API.

mod support;

use pomona::protocol::report::encode_report;
use pomona::protocol::{ReportStatus, CHECKIN_CONTENT_TYPE, CONNECT_CONTENT_TYPE};
use serde_json::json;
use support::{b64, profile, TestServer};

#[tokio::test]
async fn queued_commands_are_delivered_and_their_results_stored() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(0).await;
    let udid = device.udid().to_string();

    let (status, info) = server.admin_get(&format!("/api/v1/devices/{udid}")).await;
    assert_eq!(status, 200);
    assert_eq!(info["state"], "enrolled");
    assert_eq!(info["serial_number"], device.hw.serial_number);
    assert_eq!(info["has_unlock_token"], true);

    let info_cmd = server
        .queue(
            &udid,
            json!({"type": "DeviceInformation", "queries": ["OSVersion", "SerialNumber"]}),
        )
        .await;
    let install = server
        .queue(&udid, json!({"type": "InstallProfile", "payload": b64(&profile("com.example.camera", "No camera"))}))
        .await;
    let list = server.queue(&udid, json!({"type": "ProfileList"})).await;
    let unknown = server
        .queue(&udid, json!({"type": "Raw", "plist": "<plist version=\"1.0\"><dict><key>RequestType</key><string>NoSuchCommand</string></dict></plist>"}))
        .await;

    let exchange = device.exchange().await.unwrap();
    assert_eq!(
        exchange.received,
        [
            "DeviceInformation",
            "InstallProfile",
            "ProfileList",
            "NoSuchCommand"
        ]
    );

    let c = server.command(&udid, &info_cmd).await;
    assert_eq!(c["status"], "acknowledged");
    assert_eq!(c["attempts"], 1);
    assert_eq!(
        c["result"]["QueryResponses"]["OSVersion"],
        device.hw.os_version
    );
    assert_eq!(
        c["result"]["QueryResponses"]["SerialNumber"],
        device.hw.serial_number
    );
    assert_eq!(
        server.command(&udid, &install).await["status"],
        "acknowledged"
    );
    let c = server.command(&udid, &list).await;
    assert_eq!(
        c["result"]["ProfileList"][0]["PayloadIdentifier"],
        "com.example.camera"
    );
    let c = server.command(&udid, &unknown).await;
    assert_eq!(c["status"], "error");
    assert_eq!(
        c["result"]["ErrorChain"][0]["ErrorDomain"],
        "MCMDMErrorDomain"
    );

    // Nothing left: the next exchange is a single Idle answered with a zero-byte body.
    assert!(device.exchange().await.unwrap().received.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn not_now_keeps_a_command_queued_and_skips_it_for_the_rest_of_the_exchange() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(1).await;
    let udid = device.udid().to_string();
    let security = server.queue(&udid, json!({"type": "SecurityInfo"})).await;
    let lock = server
        .queue(&udid, json!({"type": "DeviceLock", "message": "Call IT"}))
        .await;

    device.faults.not_now_rate = 1.0; // SecurityInfo can be NotNow; DeviceLock never is.
    let first = device.exchange().await.unwrap();
    assert_eq!(
        first.received,
        ["SecurityInfo", "DeviceLock"],
        "NotNow'd command offered twice in one exchange"
    );
    let c = server.command(&udid, &security).await;
    assert_eq!(c["status"], "queued");
    assert_eq!(c["not_now_count"], 1);
    assert_eq!(server.command(&udid, &lock).await["status"], "acknowledged");
    assert!(device.state.locked);

    device.faults.not_now_rate = 0.0;
    let second = device.exchange().await.unwrap();
    assert_eq!(
        second.received,
        ["SecurityInfo"],
        "a new exchange must offer the NotNow'd command again"
    );
    let c = server.command(&udid, &security).await;
    assert_eq!(c["status"], "acknowledged");
    assert_eq!(c["attempts"], 2);
    assert_eq!(c["result"]["SecurityInfo"]["PasscodePresent"], true);
    server.stop().await;
}

#[tokio::test]
async fn duplicate_and_unknown_results_are_answered_200_and_change_nothing() {
    let server = TestServer::start().await;
    let device = server.enrolled_device(2).await;
    let udid = device.udid().to_string();
    let uuid = server.queue(&udid, json!({"type": "ProfileList"})).await;

    let idle = encode_report(&udid, ReportStatus::Idle, None, plist::Dictionary::new());
    let (status, body) = server
        .put_as(&device, "/mdm/connect", CONNECT_CONTENT_TYPE, idle)
        .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains(&uuid));

    let mut first = plist::Dictionary::new();
    first.insert("ProfileList".into(), plist::Value::Array(vec![]));
    let ack = encode_report(&udid, ReportStatus::Acknowledged, Some(&uuid), first);
    for attempt in 0..2 {
        let (status, body) = server
            .put_as(&device, "/mdm/connect", CONNECT_CONTENT_TYPE, ack.clone())
            .await;
        assert_eq!(status, 200, "attempt {attempt}");
        assert!(
            body.is_empty(),
            "nothing more to send must be a zero-byte body"
        );
    }
    let late_error = encode_report(
        &udid,
        ReportStatus::Error,
        Some(&uuid),
        plist::Dictionary::new(),
    );
    assert_eq!(
        server
            .put_as(&device, "/mdm/connect", CONNECT_CONTENT_TYPE, late_error)
            .await
            .0,
        200
    );
    let c = server.command(&udid, &uuid).await;
    assert_eq!(c["status"], "acknowledged");
    assert_eq!(c["result"]["ProfileList"], json!([]));

    let stranger = encode_report(
        &udid,
        ReportStatus::Acknowledged,
        Some("NOT-A-COMMAND"),
        plist::Dictionary::new(),
    );
    let (status, body) = server
        .put_as(&device, "/mdm/connect", CONNECT_CONTENT_TYPE, stranger)
        .await;
    assert_eq!((status, body.len()), (200, 0));
    server.stop().await;
}

#[tokio::test]
async fn a_device_cannot_fetch_or_answer_another_devices_commands() {
    let server = TestServer::start().await;
    let mut owner = server.enrolled_device(3).await;
    let mut other = server.enrolled_device(4).await;
    let uuid = server
        .queue(owner.udid(), json!({"type": "SecurityInfo"}))
        .await;

    assert!(other.exchange().await.unwrap().received.is_empty());
    let forged = encode_report(
        other.udid(),
        ReportStatus::Acknowledged,
        Some(&uuid),
        plist::Dictionary::new(),
    );
    assert_eq!(
        server
            .put_as(&other, "/mdm/connect", CONNECT_CONTENT_TYPE, forged)
            .await
            .0,
        200
    );
    assert_eq!(
        server.command(owner.udid(), &uuid).await["status"],
        "queued"
    );
    assert_eq!(owner.exchange().await.unwrap().received, ["SecurityInfo"]);
    server.stop().await;
}

#[tokio::test]
async fn one_url_mode_tells_check_ins_apart_by_content_type() {
    let server = TestServer::start().await;
    let mut device = server.device_on(server.endpoint(true), 5);
    device.enroll().await.unwrap();
    let uuid = server
        .queue(device.udid(), json!({"type": "ProfileList"}))
        .await;
    assert_eq!(device.exchange().await.unwrap().received, ["ProfileList"]);
    assert_eq!(
        server.command(device.udid(), &uuid).await["status"],
        "acknowledged"
    );
    server.stop().await;
}

#[tokio::test]
async fn reauthentication_clears_the_queue_and_check_out_keeps_history() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(6).await;
    let udid = device.udid().to_string();
    let stale = server.queue(&udid, json!({"type": "SecurityInfo"})).await;
    device.enroll().await.unwrap(); // re-enrollment: Authenticate + TokenUpdate again
    assert_eq!(server.command(&udid, &stale).await["status"], "cancelled");
    assert!(device.exchange().await.unwrap().received.is_empty());

    device.check_out().await.unwrap();
    let (status, info) = server.admin_get(&format!("/api/v1/devices/{udid}")).await;
    assert_eq!((status, info["state"].as_str()), (200, Some("checked_out")));
    let (status, err) = server
        .admin_post(
            &format!("/api/v1/devices/{udid}/commands"),
            json!({"type": "ProfileList"}),
        )
        .await;
    assert_eq!(status, 409);
    assert!(
        err["error"].as_str().unwrap().contains("checked out"),
        "{err}"
    );
    assert_eq!(server.commands(&udid).await.len(), 1, "history must stay");
    server.stop().await;
}

/// Check-ins for every MessageType get the answer the protocol defines; none gets 401.
#[tokio::test]
async fn every_message_type_gets_its_protocol_answer() {
    let server = TestServer::start().await;
    let device = server.enrolled_device(7).await;
    let udid = device.udid();
    let checkin = |message_type: &str, extra: &str| {
        format!(
            "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>MessageType</key><string>{message_type}</string>\
             <key>UDID</key><string>{udid}</string><key>Topic</key><string>com.apple.mgmt.External.x</string>{extra}</dict></plist>"
        )
        .into_bytes()
    };
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (checkin("DeclarativeManagement", "<key>Endpoint</key><string>tokens</string>"), 200, "DeclarationsToken"),
        (checkin("DeclarativeManagement", "<key>Endpoint</key><string>declaration-items</string>"), 200, "\"Activations\":[]"),
        (checkin("DeclarativeManagement", "<key>Endpoint</key><string>declaration/configuration/x</string>"), 404, ""),
        (checkin("DeclarativeManagement", "<key>Endpoint</key><string>status</string><key>Data</key><data>e30=</data>"), 200, ""),
        (checkin("UserAuthenticate", "<key>UserID</key><string>U-1</string>"), 410, ""),
        (checkin("GetToken", "<key>TokenServiceType</key><string>com.apple.maid</string>"), 400, "not offered"),
        (checkin("SetBootstrapToken", "<key>BootstrapToken</key><data>Ym9vdA==</data>"), 200, ""),
        (checkin("GetBootstrapToken", ""), 200, "Ym9vdA=="),
        (checkin("ReturnToService", ""), 200, "ReturnToService"),
        (checkin("TokenUpdate", "<key>UserID</key><string>U-1</string><key>Token</key><data>AQI=</data><key>PushMagic</key><string>m</string>"), 200, ""),
        (checkin("FutureMessage", ""), 400, "unsupported MessageType"),
        (b"<plist><dict><key>MessageType</key>".to_vec(), 400, "malformed check-in"),
        (checkin("TokenUpdate", "<key>Token</key><string>AQI=</string><key>PushMagic</key><string>m</string>"), 400, "Token must be data"),
    ];
    for (body, expected_status, expected_text) in cases {
        let label = String::from_utf8_lossy(&body)
            .chars()
            .skip(60)
            .take(120)
            .collect::<String>();
        let (status, answer) = server
            .put_as(&device, "/mdm/checkin", CHECKIN_CONTENT_TYPE, body)
            .await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, expected_status, "{label}: {text}");
        assert!(
            text.contains(expected_text),
            "{label}: {text:?} lacks {expected_text:?}"
        );
    }
    // The user-channel TokenUpdate must not have replaced the device channel's push token.
    let (_, info) = server.admin_get(&format!("/api/v1/devices/{udid}")).await;
    assert_eq!(info["state"], "enrolled");
    server.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused_and_the_server_keeps_working() {
    let server = TestServer::start_with(|args| args.max_body_bytes = Some(4096)).await;
    let mut device = server.enrolled_device(8).await;
    let huge = vec![b'x'; 10_000];
    assert_eq!(
        server
            .put_as(&device, "/mdm/connect", CONNECT_CONTENT_TYPE, huge.clone())
            .await
            .0,
        413
    );
    assert_eq!(
        server
            .put_as(&device, "/mdm/checkin", CHECKIN_CONTENT_TYPE, huge)
            .await
            .0,
        413
    );
    let (status, body) = server
        .put_as(
            &device,
            "/mdm/connect",
            CONNECT_CONTENT_TYPE,
            b"\x00\x01garbage".to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("malformed command report"), "{text}");
    let unknown_device = encode_report(
        "NO-SUCH-UDID",
        ReportStatus::Idle,
        None,
        plist::Dictionary::new(),
    );
    assert_eq!(
        server
            .put_as(
                &device,
                "/mdm/connect",
                CONNECT_CONTENT_TYPE,
                unknown_device
            )
            .await
            .0,
        403
    );
    let uuid = server
        .queue(device.udid(), json!({"type": "ProfileList"}))
        .await;
    device.exchange().await.unwrap();
    assert_eq!(
        server.command(device.udid(), &uuid).await["status"],
        "acknowledged"
    );
    server.stop().await;
}

#[tokio::test]
async fn admin_api_requires_the_token_and_explains_errors() {
    let server = TestServer::start().await;
    let device = server.enrolled_device(9).await;
    let url = format!("{}/api/v1/devices", server.base_url);
    let r = server.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    let r = server
        .client
        .get(&url)
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (status, list) = server.admin_get("/api/v1/devices").await;
    assert_eq!(status, 200);
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    let (status, by_serial) = server
        .admin_get(&format!("/api/v1/devices/{}", device.hw.serial_number))
        .await;
    assert_eq!(
        (status, by_serial["device_id"].as_str()),
        (200, Some(device.udid()))
    );
    let (status, missing) = server.admin_get("/api/v1/devices/NOPE").await;
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("NOPE"));

    let path = format!("/api/v1/devices/{}/commands", device.udid());
    let (status, err) = server
        .admin_post(&path, json!({"type": "DeviceInformation", "queries": []}))
        .await;
    assert_eq!(status, 422);
    assert!(err["error"].as_str().unwrap().contains("queries"), "{err}");
    let (status, err) = server.admin_post(&path, json!({"type": "Teleport"})).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("Teleport"), "{err}");
    let (status, _) = server
        .admin_post(&path, json!({"type": "EraseDevice", "pin": "123456"}))
        .await;
    assert_eq!(status, 201);
    let listed = server.commands(device.udid()).await;
    assert!(
        !listed[0].to_string().contains("123456"),
        "the PIN must not be returned by the API"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(10).await;
    server
        .queue(device.udid(), json!({"type": "ProfileList"}))
        .await;
    server
        .queue(device.udid(), json!({"type": "SecurityInfo"}))
        .await;
    let get = |path: &str| {
        server
            .client
            .get(format!("{}{path}", server.base_url))
            .send()
    };
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("pomona_command_queue_depth 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE pomona_retention_deleted_commands_total counter")
            && metrics.contains("# TYPE pomona_retention_failed_sweeps_total counter")
            && metrics.contains("# TYPE pomona_retention_deleted_parts_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pomona_checkins_total{message_type=\"Authenticate\"} 1"),
        "{metrics}"
    );
    device.exchange().await.unwrap();
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("pomona_command_queue_depth 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pomona_command_reports_total{status=\"Acknowledged\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pomona_http_requests_total{endpoint=\"/mdm/connect\",status=\"200\"} 3"),
        "{metrics}"
    );
    server.stop().await;
}

/// The drain benchmark's workload, small: every queued command is answered by two workers,
/// counted once, and the CPU of the named process (this one: the server runs in it) is read.
#[tokio::test]
async fn the_drain_benchmark_answers_every_queued_command_once() {
    let server = TestServer::start().await;
    let args = pomona::sim::SimArgs {
        server: server.base_url.clone(),
        admin_server: None,
        also_servers: vec![],
        devices: 6,
        server_ca: Some(server.data_dir.join("tls/ca.pem")),
        admin_token_file: Some(server.data_dir.join("admin-token")),
        seed: 5,
        duration: None,
        poll_interval: std::time::Duration::from_millis(50),
        commands_per_device: 3,
        not_now_rate: 0.0,
        error_rate: 0.0,
        one_url: false,
        no_tls_client_certificate: false,
        drain_workers: Some(2),
        cpu_of: vec![std::process::id()],
        key_pool: None,
    };
    let drained = pomona::sim::drain::run(
        &args,
        2,
        &[server.endpoint(false)],
        server.admin_token.clone(),
    )
    .await
    .unwrap();
    assert!(drained.failures.is_empty(), "{:?}", drained.failures);
    assert_eq!(drained.commands, 18, "{}", drained.line());
    // Each device: one Idle, then one result per command (the last answered by no command).
    assert_eq!(drained.requests, 6 * 4, "{}", drained.line());
    assert_eq!(drained.cpu.len(), 1);
    assert!(
        drained.cpu[0].1 > std::time::Duration::ZERO,
        "{}",
        drained.line()
    );
    // The enrollment is measured apart: the six devices' enrollments, and the CPU they took.
    assert!(drained.enroll_elapsed > std::time::Duration::ZERO);
    assert_eq!(drained.enroll_cpu.len(), 1);
    assert!(
        drained.enroll_cpu[0].1 > std::time::Duration::ZERO,
        "{}",
        drained.enrollment_line(2)
    );
}

#[tokio::test]
async fn a_fleet_with_injected_faults_converges() {
    let server = TestServer::start().await;
    let token_file = server.data_dir.join("admin-token");
    let args = pomona::sim::SimArgs {
        server: server.base_url.clone(),
        admin_server: None,
        also_servers: vec![],
        devices: 25,
        server_ca: Some(server.data_dir.join("tls/ca.pem")),
        admin_token_file: Some(token_file),
        seed: 3,
        duration: None,
        poll_interval: std::time::Duration::from_millis(50),
        commands_per_device: 4,
        not_now_rate: 0.2,
        error_rate: 0.1,
        one_url: false,
        no_tls_client_certificate: false,
        drain_workers: None,
        cpu_of: vec![],
        key_pool: None,
    };
    let summary = pomona::sim::run_fleet(
        &args,
        server.endpoint(false),
        Some(server.admin_token.clone()),
    )
    .await;
    assert_eq!(summary.failed_devices, 0, "{:?}", summary.failures);
    assert_eq!(summary.enrolled, 25);
    assert_eq!(
        summary.acknowledged + summary.errors,
        100,
        "{}",
        summary.line()
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("pomona_command_queue_depth 0"),
        "{metrics}"
    );
    server.stop().await;
}

/// The admin API's description is served without a token, is the committed document, and the
/// answers of a running server read back as the types it describes.
#[tokio::test]
async fn the_api_description_is_served_and_answers_read_as_its_types() {
    let server = TestServer::start().await;
    let device = server.enrolled_device(4).await;
    let r = server
        .client
        .get(format!("{}/api/v1/openapi.json", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no token needed");
    let served = r.text().await.unwrap();
    assert_eq!(served, pomona::api::openapi::document_text());
    let document: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    let (status, page) = server.admin_get("/api/v1/devices").await;
    assert_eq!(status, 200);
    let page: pomona::api::DevicePage = serde_json::from_value(page).unwrap();
    assert_eq!(page.devices.len(), 1);
    let (_, detail) = server
        .admin_get(&format!("/api/v1/devices/{}", device.udid()))
        .await;
    let detail: pomona::api::DeviceDetail = serde_json::from_value(detail).unwrap();
    assert_eq!(detail.device.device_id, device.udid());
    assert_eq!(detail.device.state, "enrolled");
    assert!(
        detail.certificates.iter().any(|c| c.bound),
        "the enrollment's certificate is shown bound"
    );
    let (_, status) = server.admin_get("/api/v1/status").await;
    let status: pomona::api::Status = serde_json::from_value(status).unwrap();
    assert!(status.policy.revision.is_some());
    let (code, missing) = server.admin_get("/api/v1/devices/NOPE").await;
    assert_eq!(code, 404);
    let missing: pomona::api::ErrorBody = serde_json::from_value(missing).unwrap();
    assert!(missing.error.contains("NOPE"));
}
