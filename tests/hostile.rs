//! Hostile input against a real server over HTTPS: documents built to overflow the stack or
//! exhaust memory, revoked devices that send such bodies, bodies over the size limit, admin API
//! requests the framework itself refuses, and secrets that must not be readable in the
//! database files. Each case failed before its fix (a crash, a plain-text error, a PIN in the
//! SQLite file).

mod support;

use pomona::protocol::report::encode_report;
use pomona::protocol::{ReportStatus, CONNECT_CONTENT_TYPE};
use pomona::sim::behaviour::Platform;
use serde_json::json;
use std::io::{Read as _, Write as _};
use std::path::Path;
use support::TestServer;

/// `depth` nested arrays inside an otherwise valid Idle report.
fn report_with_deep_array(udid: &str, depth: usize) -> Vec<u8> {
    let text = String::from_utf8(encode_report(
        udid,
        ReportStatus::Idle,
        None,
        plist::Dictionary::new(),
    ))
    .unwrap();
    let deep = format!(
        "<key>Deep</key>{}{}</dict>",
        "<array>".repeat(depth),
        "</array>".repeat(depth)
    );
    let at = text.rfind("</dict>").unwrap();
    format!("{}{}{}", &text[..at], deep, &text[at + "</dict>".len()..]).into_bytes()
}

fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\">{}{}</plist>",
        open.repeat(depth),
        close.repeat(depth)
    )
    .into_bytes()
}

/// A binary plist of `levels` arrays each holding the level below 14 times by reference:
/// 14^levels leaves from under 200 bytes.
fn shared_reference_bomb(levels: u8) -> Vec<u8> {
    let mut out = b"bplist00".to_vec();
    let mut offsets = vec![out.len()];
    out.extend_from_slice(&[0x51, b'x']);
    for level in 1..=levels {
        offsets.push(out.len());
        out.push(0xA0 | 14);
        out.extend(std::iter::repeat_n(level - 1, 14));
    }
    let table = out.len();
    for o in &offsets {
        out.extend_from_slice(&(*o as u16).to_be_bytes());
    }
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&[2, 1]);
    out.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
    out.extend_from_slice(&(levels as u64).to_be_bytes());
    out.extend_from_slice(&(table as u64).to_be_bytes());
    out
}

#[tokio::test]
async fn documents_built_to_overflow_the_stack_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(1).await;
    let udid = device.udid().to_string();
    let bodies = [
        (
            "50,000 nested arrays",
            nested(50_000, "<array>", "</array>"),
        ),
        (
            "100,000 nested arrays",
            nested(100_000, "<array>", "</array>"),
        ),
        (
            "50,000 nested dictionaries",
            nested(50_000, "<dict><key>k</key>", "</dict>"),
        ),
        (
            "a valid report carrying a deep array",
            report_with_deep_array(&udid, 50_000),
        ),
    ];
    for (what, body) in bodies {
        let (status, answer) = server
            .put_as(&device, "/mdm/connect", CONNECT_CONTENT_TYPE, body)
            .await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(answer.contains("64 levels"), "{what}: {answer}");
    }
    // Within the limit, the same shape is an ordinary report.
    let (status, answer) = server
        .put_as(
            &device,
            "/mdm/connect",
            CONNECT_CONTENT_TYPE,
            report_with_deep_array(&udid, 20),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    device.exchange().await.expect("the server still serves");
}

#[tokio::test]
async fn a_binary_plist_whose_references_expand_without_bound_is_refused() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(1).await;
    let bomb = shared_reference_bomb(9);
    assert!(bomb.len() < 200);
    let (status, answer) = server
        .put_as(&device, "/mdm/connect", CONNECT_CONTENT_TYPE, bomb)
        .await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("limit"), "{answer}");
    device.exchange().await.expect("the server still serves");
}

#[tokio::test]
async fn a_revoked_device_is_refused_before_its_body_is_parsed() {
    let server = TestServer::start().await;
    let device = server.enrolled_device(1).await;
    let (status, _) = server
        .admin_post(
            &format!("/api/v1/devices/{}/revoke", device.udid()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    // Were the body parsed first, this would be a 400 (or, before the bounded decoder, a crash).
    for body in [
        nested(50_000, "<array>", "</array>"),
        b"not a plist at all".to_vec(),
    ] {
        let (status, answer) = server
            .put_as(&device, "/mdm/connect", CONNECT_CONTENT_TYPE, body)
            .await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 403, "{answer}");
        assert!(answer.contains("revoked"), "{answer}");
    }
}

#[tokio::test]
async fn an_admin_raw_command_nested_past_the_limit_is_refused_with_json() {
    let server = TestServer::start().await;
    let device = server.enrolled_device(1).await;
    let deep = String::from_utf8(nested(50_000, "<array>", "</array>")).unwrap();
    let (status, answer) = server
        .admin_post(
            &format!("/api/v1/devices/{}/commands", device.udid()),
            json!({"type": "Raw", "plist": deep}),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {answer}");
    let error = answer["error"].as_str().expect("a JSON error");
    assert!(error.contains("64 levels"), "{error}");
}

#[tokio::test]
async fn every_admin_api_error_is_json_even_those_the_framework_writes() {
    let server = TestServer::start().await;
    let cases = [
        ("GET", "/api/v1/devices/%FF%FE", 400),
        ("GET", "/api/v1/devices?limit=99999999999999999999", 400),
        ("DELETE", "/api/v1/devices", 405),
        ("GET", "/api/v1/no-such-thing", 404),
    ];
    for (method, path, expected) in cases {
        let r = server
            .client
            .request(
                method.parse().unwrap(),
                format!("{}{path}", server.base_url),
            )
            .bearer_auth(&server.admin_token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = r.text().await.unwrap();
        assert_eq!(status, expected, "{method} {path}: {text}");
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: {content_type} {text}"
        );
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {text}"
        );
    }
}

/// Sends only the request head (with `Content-Length: declared`) over TLS and returns the
/// status line the server answers with before any byte of the body was sent.
fn status_for_declared_length(
    server: &TestServer,
    method: &str,
    path: &str,
    extra_headers: &str,
    declared: u64,
) -> String {
    let port: u16 = server.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let ca = std::fs::read(server.data_dir.join("tls/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n{extra_headers}Content-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    tls.flush().unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer to a {declared}-byte {method} {path}: {e}"),
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_declared_larger_than_the_limit_is_refused_at_once_with_413() {
    let server = TestServer::start_with(|args| args.max_body_bytes = Some(100_000)).await;
    let bearer = format!("Authorization: Bearer {}\r\n", server.admin_token);
    let cases = [
        (
            "POST",
            "/scep?operation=PKIOperation",
            String::new(),
            " 413 ",
        ),
        ("POST", "/api/v1/plan", bearer, " 413 "),
        // A device endpoint establishes who is asking first: no identity, no body read.
        ("PUT", "/mdm/connect", String::new(), " 403 "),
    ];
    for (method, path, headers, expected) in cases {
        // No byte of the body is ever sent: an answer proves it was not waited for.
        let status = tokio::task::block_in_place(|| {
            status_for_declared_length(&server, method, path, &headers, 50_000_000)
        });
        assert!(status.contains(expected), "{method} {path}: {status:?}");
    }
}

/// What of the stored state holds `secret` in clear: for SQLite the raw database and WAL
/// files (free pages included), for PostgreSQL every stored command and enrollment value.
async fn where_stored_in_clear(
    server: &TestServer,
    postgres: Option<&str>,
    secret: &str,
) -> Vec<String> {
    let holds = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    match postgres {
        None => ["pomona.db", "pomona.db-wal"]
            .iter()
            .filter(|name| std::fs::read(server.data_dir.join(name)).is_ok_and(|b| holds(&b)))
            .map(|name| name.to_string())
            .collect(),
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let mut found = Vec::new();
            for (table, column) in [("commands", "command"), ("enrollments", "unlock_token")] {
                let rows: Vec<(Option<Vec<u8>>,)> =
                    sqlx::query_as(&format!("SELECT {column} FROM {table}"))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                if rows.iter().any(|(v,)| v.as_deref().is_some_and(holds)) {
                    found.push(format!("{table}.{column}"));
                }
            }
            found
        }
    }
}

async fn a_pin_never_reaches_the_database_in_clear(postgres: Option<String>) {
    const PIN: &str = "483920";
    let database = postgres.clone();
    let server = TestServer::start_with(|args| args.database = database).await;
    let mut device = server.device_with(1, |hw| hw.platform = Platform::Mac);
    device.enroll().await.expect("enroll");
    let udid = device.udid().to_string();
    let uuid = server
        .queue(
            &udid,
            json!({"type": "DeviceLock", "message": "lost", "pin": PIN}),
        )
        .await;
    let pg = postgres.as_deref();
    assert_eq!(
        where_stored_in_clear(&server, pg, PIN).await,
        Vec::<String>::new(),
        "while queued"
    );
    // The device still receives the PIN: it is opened only when the command is sent.
    for _ in 0..5 {
        device.exchange().await.expect("exchange");
    }
    let answered = server.command(&udid, &uuid).await;
    assert_eq!(answered["status"], "acknowledged", "{answered}");
    assert!(
        device
            .state
            .lock_pin
            .as_ref()
            .is_some_and(|p| p.matches(PIN.as_bytes())),
        "the device did not receive the PIN"
    );
    assert_eq!(
        where_stored_in_clear(&server, pg, PIN).await,
        Vec::<String>::new(),
        "once answered"
    );
    assert!(
        !serde_json::to_string(&answered).unwrap().contains(PIN),
        "the API shows the PIN: {answered}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_never_reaches_the_sqlite_files_in_clear() {
    a_pin_never_reaches_the_database_in_clear(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_never_reaches_a_postgresql_column_in_clear() {
    a_pin_never_reaches_the_database_in_clear(Some(
        support::fresh_postgres_database("hostile").await,
    ))
    .await;
}

/// Runs `pomona validate DIR` and returns (exit code, stdout + stderr).
fn validate(dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pomona"))
        .arg("validate")
        .arg(dir)
        .output()
        .expect("pomona binary");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_policy_source_follows_no_symbolic_link_and_never_prints_what_a_file_holds() {
    const SECRET: &str = "admin-token-d41d8cd98f00b204e9800998ecf8427e";
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("token"), format!("{SECRET}\n")).unwrap();
    std::fs::write(
        outside.path().join("policy.yaml"),
        format!("apiVersion: {SECRET}\n"),
    )
    .unwrap();
    let profile = |file: &str| {
        format!(
            "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata: {{name: all}}\n\
             spec: {{serialNumbers: [C02XYZ123456]}}\n---\n\
             apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {{name: wifi}}\n\
             spec: {{groups: [all], mobileconfigFile: {file}}}\n"
        )
    };
    let link = |target: &std::path::Path, at: &std::path::Path| {
        std::os::unix::fs::symlink(target, at).unwrap()
    };
    // (what, set-up of a fresh policy directory)
    type Setup = Box<dyn Fn(&std::path::Path)>;
    let outside_dir = outside.path().to_path_buf();
    let cases: Vec<(&str, Setup)> = vec![
        ("mobileconfigFile is a link to a file outside", {
            let o = outside_dir.clone();
            Box::new(move |d| {
                std::fs::write(d.join("p.yaml"), profile("wifi.mobileconfig")).unwrap();
                link(&o.join("token"), &d.join("wifi.mobileconfig"));
            })
        }),
        ("mobileconfigFile passes through a linked directory", {
            let o = outside_dir.clone();
            Box::new(move |d| {
                std::fs::write(d.join("p.yaml"), profile("linked/token")).unwrap();
                link(&o, &d.join("linked"));
            })
        }),
        ("a policy file is a link", {
            let o = outside_dir.clone();
            Box::new(move |d| link(&o.join("policy.yaml"), &d.join("p.yaml")))
        }),
        ("mobileconfigFile inside is not a profile", {
            Box::new(move |d| {
                std::fs::write(d.join("p.yaml"), profile("wifi.mobileconfig")).unwrap();
                std::fs::write(d.join("wifi.mobileconfig"), format!("{SECRET}\n")).unwrap();
            })
        }),
    ];
    // A Kubernetes ConfigMap volume: every file is a link into a hidden, linked directory,
    // all inside. Such a directory is read as it is.
    let configmap = tempfile::tempdir().unwrap();
    let c = configmap.path();
    std::fs::create_dir(c.join("..2026_12_06_04_00_00.1")).unwrap();
    std::fs::write(
        c.join("..2026_12_06_04_00_00.1/p.yaml"),
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata: {name: all}\nspec: {serialNumbers: [C02XYZ123456]}\n",
    )
    .unwrap();
    link(Path::new("..2026_12_06_04_00_00.1"), &c.join("..data"));
    link(Path::new("..data/p.yaml"), &c.join("p.yaml"));
    let (code, output) = validate(c);
    assert_eq!(code, 0, "a ConfigMap-shaped directory: {output}");
    assert!(output.contains("1 groups"), "{output}");

    for (what, setup) in cases {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let (code, output) = validate(dir.path());
        assert_eq!(code, 2, "{what}: {output}");
        assert!(
            !output.contains(SECRET),
            "{what}: printed the file: {output}"
        );
        if what.contains("link") {
            assert!(output.contains("symbolic link"), "{what}: {output}");
        }
    }
}

/// A random JSON value: objects with the admin API's field names and others, wrong types,
/// nesting up to `depth`.
fn random_json(rng: &mut fastrand::Rng, depth: u32) -> serde_json::Value {
    const KEYS: &[&str] = &[
        "type",
        "action",
        "queries",
        "payload",
        "identifier",
        "pin",
        "message",
        "phone_number",
        "plist",
        "labels",
        "files",
        "confirm",
        "notifyUser",
        "runId",
        "x",
        "",
    ];
    const STRINGS: &[&str] = &[
        "DeviceInformation",
        "Raw",
        "Lock",
        "Erase",
        "InstallProfile",
        "RemoveProfile",
        "DeviceLock",
        "EraseDevice",
        "123456",
        "12345",
        "",
        "\u{0}",
        "../../etc/passwd",
        "<plist><dict/></plist>",
        "bplist00",
        "team",
        "pomona.dev/x",
        "a.yaml",
    ];
    match rng.u8(0..if depth == 0 { 6 } else { 9 }) {
        0 => serde_json::Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e300),
        4 => json!(STRINGS[rng.usize(..STRINGS.len())]),
        5 => json!((0..rng.usize(0..64))
            .map(|_| rng.char(..))
            .collect::<String>()),
        6 => serde_json::Value::Array(
            (0..rng.usize(0..4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => serde_json::Value::Object(
            (0..rng.usize(0..5))
                .map(|_| {
                    (
                        KEYS[rng.usize(..KEYS.len())].to_string(),
                        random_json(rng, depth - 1),
                    )
                })
                .collect(),
        ),
    }
}

/// Seeded random requests to every admin route (valid and invalid ids, queries and bodies,
/// malformed JSON, nesting past serde's limit): never a 5xx, and every answer JSON, errors as
/// `{"error": …}`. `POMONA_API_FUZZ_SEED` replays a run, `POMONA_API_FUZZ_REQUESTS` sets its
/// length (default 400).
#[tokio::test]
async fn random_admin_api_requests_never_get_a_server_error_and_always_get_json() {
    let seed = std::env::var("POMONA_API_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let requests: usize = std::env::var("POMONA_API_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut rng = fastrand::Rng::with_seed(seed);
    let server = TestServer::start().await;
    let device = server.enrolled_device(1).await;
    let ids = [
        device.udid().to_string(),
        "no-such-device".to_string(),
        "%FF%FE".to_string(),
        "%00".to_string(),
        "a%2Fb".to_string(),
        "x".repeat(3000),
    ];
    let routes: &[(&str, &str)] = &[
        ("GET", "/devices"),
        ("GET", "/devices/{id}"),
        ("POST", "/devices/{id}/revoke"),
        ("PUT", "/devices/{id}/labels"),
        ("POST", "/enrollment-tokens"),
        ("GET", "/status"),
        ("POST", "/plan"),
        ("POST", "/devices/{id}/commands"),
        ("GET", "/devices/{id}/commands"),
        ("POST", "/devices/{id}/push"),
        ("POST", "/devices/{id}/actions"),
        ("GET", "/devices/{id}/actions"),
        ("GET", "/actions"),
        ("GET", "/actions/{id}"),
        ("PATCH", "/devices/{id}"),
    ];
    let queries = [
        "",
        "?limit=0",
        "?limit=-1",
        "?limit=99999999999999999999",
        "?after=%FF",
        "?limit=abc&after=",
    ];
    for n in 0..requests {
        let (method, route) = routes[rng.usize(..routes.len())];
        // Revoking would end the device's part in the run: only unknown ids are revoked.
        let id = if route.ends_with("/revoke") {
            &ids[1 + rng.usize(..ids.len() - 1)]
        } else {
            &ids[rng.usize(..ids.len())]
        };
        let path = format!(
            "/api/v1{}{}",
            route.replace("{id}", id),
            queries[rng.usize(..queries.len())]
        );
        let body = match rng.u8(0..4) {
            0 => Vec::new(),
            1 => b"{\"type\": ".to_vec(),
            2 => format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            _ => serde_json::to_vec(&random_json(&mut rng, 4)).unwrap(),
        };
        let r = server
            .client
            .request(
                method.parse().unwrap(),
                format!("{}{path}", server.base_url),
            )
            .bearer_auth(&server.admin_token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let replay =
            format!(
            "request {n} of seed {seed} (POMONA_API_FUZZ_SEED={seed}): {method} {path} body {:?}",
            String::from_utf8_lossy(&body).chars().take(300).collect::<String>()
        );
        assert!(status < 500, "{replay}: {status} {text}");
        let answer: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{replay}: {status}, not JSON ({e}): {text}"));
        if status >= 400 {
            assert!(
                answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{replay}: {status} {text}"
            );
        }
    }
}
