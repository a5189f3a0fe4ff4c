//! Crash safety: the real `pomona serve` binary is killed with SIGKILL in the middle of a queue
//! and started again on the same data directory; nothing queued and nothing reported is lost.

use pomona::protocol::report::encode_report;
use pomona::protocol::{CommandEnvelope, ReportStatus, CONNECT_CONTENT_TYPE};
use pomona::sim::device::{Endpoint, Faults, SimDevice};
use pomona::sim::identity::ProfileSource;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

struct Served {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(data_dir: &Path, port: u16) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .env("POMONA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pomona serve");
    let base = format!("https://localhost:{port}");
    let ca = data_dir.join("tls/ca.pem");
    for _ in 0..400 {
        if ca.exists() {
            let client = pomona::cmdline::client(Some(&ca)).unwrap();
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    return Served { child, base };
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("pomona serve did not become ready on port {port}");
}

fn sigkill(served: &mut Served) {
    served.child.kill().expect("SIGKILL the server");
    served.child.wait().unwrap();
}

#[tokio::test]
async fn a_server_killed_mid_queue_loses_no_command_and_no_result() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut served = start(dir.path(), port).await;
    let client = pomona::cmdline::client(Some(&dir.path().join("tls/ca.pem"))).unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let endpoint = Arc::new(
        Endpoint::new(client.clone(), &served.base, false)
            .enrolling_with(ProfileSource::AdminToken(token.clone()))
            .trusting(Some(ca)),
    );
    let mut device = SimDevice::new(pomona::sim::hardware(5, 0), endpoint, Faults::default(), 5);
    device.enroll().await.unwrap();
    let udid = device.udid().to_string();

    let mut queued = Vec::new();
    for _ in 0..5 {
        let r = client
            .post(format!("{}/api/v1/devices/{udid}/commands", served.base))
            .bearer_auth(&token)
            .json(&json!({"type": "SecurityInfo"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        queued.push(
            r.json::<serde_json::Value>().await.unwrap()["command_uuid"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    // By hand: Idle → first command; acknowledge it → second command arrives; then the crash.
    let device_client = device.identity.as_ref().unwrap().tls_client.clone();
    let put = |body: Vec<u8>| {
        device_client
            .put(format!("{}/mdm/connect", served.base))
            .header("Content-Type", CONNECT_CONTENT_TYPE)
            .body(body)
            .send()
    };
    let idle = encode_report(&udid, ReportStatus::Idle, None, plist::Dictionary::new());
    let first = put(idle).await.unwrap().bytes().await.unwrap();
    let (first_uuid, _, _) = CommandEnvelope::decode(&first).unwrap();
    assert_eq!(first_uuid, queued[0]);
    let mut keys = plist::Dictionary::new();
    keys.insert(
        "SecurityInfo".into(),
        plist::Value::Dictionary(plist::Dictionary::new()),
    );
    let ack = encode_report(&udid, ReportStatus::Acknowledged, Some(&first_uuid), keys);
    let second = put(ack).await.unwrap().bytes().await.unwrap();
    let (second_uuid, _, _) = CommandEnvelope::decode(&second).unwrap();
    assert_eq!(second_uuid, queued[1]);
    sigkill(&mut served);

    let mut served = start(dir.path(), port).await;
    // The device never answered the second command: it and the other three are still queued.
    let exchange = device.exchange().await.unwrap();
    assert_eq!(
        exchange.received.len(),
        4,
        "commands lost or duplicated across the crash: {:?}",
        exchange.received
    );
    let listed: serde_json::Value = client
        .get(format!("{}/api/v1/devices/{udid}/commands", served.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let commands = listed["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 5);
    for c in commands {
        assert_eq!(c["status"], "acknowledged", "{c}");
        assert!(c["result"]["SecurityInfo"].is_object(), "result lost: {c}");
    }
    let first = commands
        .iter()
        .find(|c| c["command_uuid"] == queued[0])
        .unwrap();
    assert_eq!(
        first["attempts"], 1,
        "an acknowledged command was sent again after the restart"
    );
    let second = commands
        .iter()
        .find(|c| c["command_uuid"] == queued[1])
        .unwrap();
    assert_eq!(second["attempts"], 2);
    sigkill(&mut served);
}

/// Logs fit the tools that read them: without a terminal no colour codes reach them,
/// `--log-format json` writes one JSON object per line, and the admin token a first start
/// creates goes only to its file — neither to stdout nor to the log (`kubectl logs` keeps both).
#[test]
fn logs_fit_their_readers_and_the_new_admin_token_stays_in_its_file() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let (out, err, data) = (
            dir.path().join("stdout"),
            dir.path().join("stderr"),
            dir.path().join("data"),
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_pomona"))
            .args(["--log-format", format, "serve", "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(&data)
            .env("POMONA_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start pomona serve");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let log = loop {
            let log = std::fs::read_to_string(&err).unwrap_or_default();
            if log.contains("Pomona is serving") {
                break log;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{format}: the server did not say it was serving within 60 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        let stdout = std::fs::read_to_string(&out).unwrap();
        let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
        let token = token.trim();
        assert_eq!(token.len(), 64, "a token was created");
        assert!(
            !stdout.contains(token) && !log.contains(token),
            "{format}: the admin token was printed outside a terminal"
        );
        assert!(
            stdout.contains("admin-token"),
            "{format}: stdout says where the token is: {stdout:?}"
        );
        assert!(
            !log.contains('\u{1b}'),
            "{format}: colour codes in a log that is not a terminal:\n{log}"
        );
        if format == "json" {
            for line in log.lines() {
                let entry: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                assert!(
                    entry["level"].is_string() && entry["fields"].is_object(),
                    "a JSON log line has a level and fields: {line}"
                );
            }
        }
    }
}
