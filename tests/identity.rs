//! Device identity end to end: SCEP enrollment, one-time challenges and tokens, and every way a
//! request can fail to prove it is the device it claims to be (no certificate, foreign CA,
//! expired, unrecorded, revoked, another device's, tampered Mdm-Signature, untrusted proxy
//! header). Each refusal must be a 403 naming the reason, never a 401.

mod support;

use pomona::pki::DeviceCa;
use pomona::protocol::report::encode_report;
use pomona::protocol::{ReportStatus, CHECKIN_CONTENT_TYPE, CONNECT_CONTENT_TYPE};
use pomona::sim::device::SimError;
use pomona::sim::identity::{fetch_profile, install_profile, ProfileSource};
use serde_json::json;
use std::sync::Arc;
use support::TestServer;

fn idle(udid: &str) -> Vec<u8> {
    encode_report(udid, ReportStatus::Idle, None, plist::Dictionary::new())
}

fn refused_status(e: &SimError) -> u16 {
    match e {
        SimError::Status { status, .. } => *status,
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// PUTs `body` with the given client and optional Mdm-Signature value.
async fn put_with(
    client: &reqwest::Client,
    url: String,
    content_type: &str,
    body: Vec<u8>,
    signature: Option<String>,
    client_cert_header: Option<String>,
) -> (u16, String) {
    let mut request = client.put(url).header("Content-Type", content_type);
    if let Some(sig) = signature {
        request = request.header("Mdm-Signature", sig);
    }
    if let Some(cert) = client_cert_header {
        request = request.header("Client-Cert", cert);
    }
    let r = request.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// A reqwest client presenting `cert` + `key` and trusting the test server.
fn client_with_identity(
    server: &TestServer,
    cert: &openssl::x509::X509Ref,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> reqwest::Client {
    let mut pem = cert.to_pem().unwrap();
    pem.extend(key.private_key_to_pem_pkcs8().unwrap());
    let ca = std::fs::read(server.data_dir.join("tls/ca.pem")).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

fn rsa_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
}

#[tokio::test]
async fn scep_identity_is_bound_at_authenticate_and_listed_in_the_api() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(1).await;
    let (status, info) = server
        .admin_get(&format!("/api/v1/devices/{}", device.udid()))
        .await;
    assert_eq!(status, 200);
    let certs = info["certificates"]
        .as_array()
        .expect("certificates listed");
    assert_eq!(certs.len(), 1, "{info}");
    assert_eq!(certs[0]["bound"], true);
    assert!(certs[0]["revoked_at"].is_null());
    let issued = &device.identity.as_ref().unwrap().certificate;
    let fingerprint = pomona::pki::ca::fingerprint(&issued.to_der().unwrap());
    assert_eq!(certs[0]["fingerprint_sha256"], fingerprint);
    assert!(device.exchange().await.unwrap().received.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_request_without_any_identity_is_refused_with_403() {
    let server = TestServer::start().await;
    let device = server.enrolled_device(2).await;
    let (status, body) = server
        .put_raw("/mdm/connect", CONNECT_CONTENT_TYPE, idle(device.udid()))
        .await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("no device identity"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn wrong_reused_and_expired_challenges_get_a_scep_failure_and_no_certificate() {
    let server = TestServer::start().await;
    let ca = std::fs::read(server.data_dir.join("tls/ca.pem")).unwrap();
    let source = ProfileSource::AdminToken(server.admin_token.clone());
    let profile = fetch_profile(&server.client, &server.base_url, &source)
        .await
        .unwrap();

    // A wrong challenge: the same profile with its challenge replaced.
    let text = String::from_utf8(profile.clone()).unwrap();
    let challenge = pomona::protocol::enrollment_profile::read(&profile)
        .unwrap()
        .challenge
        .unwrap();
    let wrong = text.replace(&challenge, "guessed-challenge").into_bytes();
    let err = install_profile(&server.client, &wrong, "dev", Some(&ca), None, None)
        .await
        .err()
        .expect("a wrong challenge must fail");
    assert!(err.to_string().contains("SCEP FAILURE"), "{err}");
    assert!(err.to_string().contains("failInfo 2"), "{err}");

    install_profile(&server.client, &profile, "dev", Some(&ca), None, None)
        .await
        .expect("the right challenge, once");
    let err = install_profile(&server.client, &profile, "dev", Some(&ca), None, None)
        .await
        .err()
        .expect("a reused challenge must fail");
    assert!(err.to_string().contains("SCEP FAILURE"), "{err}");

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("pomona_scep_requests_total{outcome=\"badRequest\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pomona_scep_requests_total{outcome=\"issued\"} 1"),
        "{metrics}"
    );
    server.stop().await;

    // A challenge that lived one second, used after two.
    let short = TestServer::start_with(|a| a.challenge_ttl_secs = Some(1)).await;
    let ca = std::fs::read(short.data_dir.join("tls/ca.pem")).unwrap();
    let source = ProfileSource::AdminToken(short.admin_token.clone());
    let stale = fetch_profile(&short.client, &short.base_url, &source)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let err = install_profile(&short.client, &stale, "dev", Some(&ca), None, None)
        .await
        .err()
        .expect("an expired challenge must fail");
    assert!(err.to_string().contains("SCEP FAILURE"), "{err}");
    assert!(short
        .metrics()
        .await
        .contains("pomona_scep_requests_total{outcome=\"badRequest\"} 1"));
    short.stop().await;
}

#[tokio::test]
async fn mdm_signature_proves_identity_and_a_tampered_body_is_refused() {
    let server = TestServer::start_with(|a| a.sign_message = Some(true)).await;
    let mut endpoint = server.endpoint_config(false);
    endpoint.tls_client_certificates = false; // as behind a TLS-terminating proxy
    let mut device = server.device_on(Arc::new(endpoint), 3);
    device.enroll().await.expect("enrollment by Mdm-Signature");
    let uuid = server
        .queue(device.udid(), json!({"type": "SecurityInfo"}))
        .await;
    assert_eq!(device.exchange().await.unwrap().received, ["SecurityInfo"]);
    assert_eq!(
        server.command(device.udid(), &uuid).await["status"],
        "acknowledged"
    );

    let identity = device.identity.clone().unwrap();
    let url = format!("{}/mdm/connect", server.base_url);
    let body = idle(device.udid());
    let signature = identity.sign(&body);
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01; // one byte changed after signing
    let (status, text) = put_with(
        &server.client,
        url.clone(),
        CONNECT_CONTENT_TYPE,
        tampered,
        Some(signature.clone()),
        None,
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("does not match the request body"), "{text}");

    for (garbage, reason) in [
        ("!!!not base64!!!".to_string(), "not base64"),
        ("aGVsbG8gd29ybGQ=".to_string(), "not a CMS"),
    ] {
        let (status, text) = put_with(
            &server.client,
            url.clone(),
            CONNECT_CONTENT_TYPE,
            body.clone(),
            Some(garbage),
            None,
        )
        .await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains(reason), "{text} lacks {reason}");
    }
    // A huge header is stopped by the HTTP layer (HTTP/2 header-list limit) or by us; either
    // way it is refused and the server keeps working.
    let huge = server
        .client
        .put(url.clone())
        .header("Content-Type", CONNECT_CONTENT_TYPE)
        .header("Mdm-Signature", "QUFB".repeat(30_000))
        .body(body.clone())
        .send()
        .await;
    match huge {
        Ok(r) => assert!(r.status().is_client_error(), "{}", r.status()),
        Err(e) => assert!(
            e.to_string().contains("error sending request") || e.is_request(),
            "{e}"
        ),
    }
    // The untouched body with its signature is still accepted: nothing was broken.
    let (status, _) = put_with(
        &server.client,
        url,
        CONNECT_CONTENT_TYPE,
        body,
        Some(signature),
        None,
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn certificates_from_another_ca_expired_or_unrecorded_are_refused() {
    // The server loads its device CA from files, so the test holds the CA key too.
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = DeviceCa::load_or_create(ca_dir.path(), 365).unwrap();
    let ca_key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(ca_dir.path().join("device-ca.key")).unwrap(),
    )
    .unwrap();
    let (cert_path, key_path) = (
        ca_dir.path().join("device-ca.pem"),
        ca_dir.path().join("device-ca.key"),
    );
    let server = TestServer::start_with(|a| {
        a.ca_cert = Some(cert_path);
        a.ca_key = Some(key_path);
    })
    .await;
    let device = server.enrolled_device(4).await;
    let udid = device.udid().to_string();
    let url = format!("{}/mdm/connect", server.base_url);

    let issue = |days_back: i64, days_valid: i64, signer: &openssl::pkey::PKeyRef<_>| {
        let key = rsa_key();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(777).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "forged").unwrap();
        b.set_subject_name(&name.build()).unwrap();
        b.set_issuer_name(ca.certificate().subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        let now = pomona::vocab::clock::now_millis() / 1000;
        let nb = openssl::asn1::Asn1Time::from_unix(now - days_back * 86_400).unwrap();
        let na = openssl::asn1::Asn1Time::from_unix(now - days_back * 86_400 + days_valid * 86_400)
            .unwrap();
        b.set_not_before(&nb).unwrap();
        b.set_not_after(&na).unwrap();
        b.sign(signer, openssl::hash::MessageDigest::sha256())
            .unwrap();
        (b.build(), key)
    };

    let cases: Vec<(&str, (openssl::x509::X509, _), &str)> = vec![
        ("expired", issue(30, 10, &ca_key), "expired"),
        (
            "valid but never issued through SCEP",
            issue(1, 10, &ca_key),
            "not in this server's records",
        ),
        (
            "signed by another CA with the same name",
            issue(1, 10, &rsa_key()),
            "does not verify with this server's device CA",
        ),
    ];
    for (name, (cert, key), reason) in cases {
        let client = client_with_identity(&server, &cert, &key);
        let (status, text) = put_with(
            &client,
            url.clone(),
            CONNECT_CONTENT_TYPE,
            idle(&udid),
            None,
            None,
        )
        .await;
        assert_eq!(status, 403, "{name}: {text}");
        assert!(text.contains(reason), "{name}: {text:?} lacks {reason:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn revocation_through_the_api_takes_effect_on_the_next_request() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(5).await;
    assert!(device.exchange().await.is_ok());
    let (status, answer) = server
        .admin_post(
            &format!("/api/v1/devices/{}/revoke", device.udid()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["revoked_certificates"], 1);
    let err = device.exchange().await.expect_err("revoked identity");
    assert_eq!(refused_status(&err), 403);
    assert!(err.to_string().contains("revoked"), "{err}");
    let (_, info) = server
        .admin_get(&format!("/api/v1/devices/{}", device.udid()))
        .await;
    assert!(!info["certificates"][0]["revoked_at"].is_null(), "{info}");

    // Enrolling again (new profile, new SCEP identity) brings the device back.
    device.identity = None;
    device
        .enroll()
        .await
        .expect("re-enrollment with a new identity");
    assert!(device.exchange().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn one_devices_certificate_cannot_speak_for_another_device() {
    let server = TestServer::start().await;
    let a = server.enrolled_device(6).await;
    let mut b = server.enrolled_device(7).await;
    let uuid = server.queue(b.udid(), json!({"type": "ProfileList"})).await;

    // A's certificate, B's UDID: fetching B's commands.
    let (status, body) = server
        .put_as(&a, "/mdm/connect", CONNECT_CONTENT_TYPE, idle(b.udid()))
        .await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("belongs to device"), "{text}");
    // …nor answering them…
    let forged = encode_report(
        b.udid(),
        ReportStatus::Acknowledged,
        Some(&uuid),
        plist::Dictionary::new(),
    );
    let (status, _) = server
        .put_as(&a, "/mdm/connect", CONNECT_CONTENT_TYPE, forged)
        .await;
    assert_eq!(status, 403);
    // …nor re-binding B to A's certificate by sending Authenticate as B.
    let auth = format!(
        "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>MessageType</key><string>Authenticate</string>\
         <key>UDID</key><string>{}</string><key>Topic</key><string>t</string></dict></plist>",
        b.udid()
    );
    let (status, _) = server
        .put_as(&a, "/mdm/checkin", CHECKIN_CONTENT_TYPE, auth.into_bytes())
        .await;
    assert_eq!(status, 403);
    assert_eq!(server.command(b.udid(), &uuid).await["status"], "queued");
    assert_eq!(b.exchange().await.unwrap().received, ["ProfileList"]);
    server.stop().await;
}

#[tokio::test]
async fn a_re_enrollment_moves_the_binding_to_the_new_certificate() {
    let server = TestServer::start().await;
    let mut device = server.enrolled_device(8).await;
    let old = device.identity.clone().unwrap();
    device.identity = None;
    device.enroll().await.unwrap();
    let (status, body) = put_with(
        &old.tls_client,
        format!("{}/mdm/connect", server.base_url),
        CONNECT_CONTENT_TYPE,
        idle(device.udid()),
        None,
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("bound to another certificate"), "{body}");
    assert!(device.exchange().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn client_cert_header_is_believed_only_from_a_trusted_proxy() {
    use base64::Engine as _;
    for trusted in [true, false] {
        let server = TestServer::start_with(|a| {
            if trusted {
                a.trusted_proxies = vec!["127.0.0.1/32".into(), "::1".into()];
            }
        })
        .await;
        let device = server.enrolled_device(9).await;
        let der = device
            .identity
            .as_ref()
            .unwrap()
            .certificate
            .to_der()
            .unwrap();
        let header = format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        // The plain client presents no TLS certificate: only the header speaks.
        let (status, text) = put_with(
            &server.client,
            format!("{}/mdm/connect", server.base_url),
            CONNECT_CONTENT_TYPE,
            idle(device.udid()),
            None,
            Some(header),
        )
        .await;
        if trusted {
            assert_eq!(status, 200, "{text}");
        } else {
            assert_eq!(status, 403, "{text}");
            assert!(text.contains("not a configured trusted proxy"), "{text}");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn scep_endpoint_answers_caps_and_ca_and_refuses_garbage() {
    let server = TestServer::start_with(|a| a.max_body_bytes = Some(64 * 1024)).await;
    let get = |query: &str| {
        server
            .client
            .get(format!("{}/scep?{query}", server.base_url))
            .send()
    };
    let caps = get("operation=GetCACaps")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for cap in ["POSTPKIOperation", "SHA-256", "AES"] {
        assert!(caps.lines().any(|l| l == cap), "{caps}");
    }
    let ca = get("operation=GetCACert").await.unwrap();
    assert_eq!(ca.headers()["content-type"], "application/x-x509-ca-cert");
    let der = ca.bytes().await.unwrap();
    let on_disk = openssl::x509::X509::from_pem(
        &std::fs::read(server.data_dir.join("ca/device-ca.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(der.as_ref(), on_disk.to_der().unwrap().as_slice());

    let post = |body: Vec<u8>| {
        server
            .client
            .post(format!("{}/scep?operation=PKIOperation", server.base_url))
            .body(body)
            .send()
    };
    let garbage = post(b"\x30\x82\xff\xffnot cms at all".to_vec())
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert!(garbage
        .text()
        .await
        .unwrap()
        .contains("unreadable SCEP message"));
    let oversized = post(vec![0x30; 100 * 1024]).await.unwrap();
    assert_eq!(oversized.status(), 413);
    let bad_b64 = get("operation=PKIOperation&message=%%%").await.unwrap();
    assert_eq!(bad_b64.status(), 400);
    let unknown = get("operation=GetCRL").await.unwrap();
    assert_eq!(unknown.status(), 400);
    // The server still works.
    server.enrolled_device(10).await;
    server.stop().await;
}

#[tokio::test]
async fn enrollment_tokens_are_single_use_and_admin_only_mode_refuses_them() {
    let server = TestServer::start().await;
    let (status, created) = server
        .admin_post("/api/v1/enrollment-tokens", json!({}))
        .await;
    assert_eq!(status, 201, "{created}");
    let url = created["enroll_url"].as_str().unwrap().to_string();
    let first = server.client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["content-type"],
        "application/x-apple-aspen-config"
    );
    let again = server.client.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 403);
    assert!(again.text().await.unwrap().contains("already used"));
    let none = server
        .client
        .get(format!("{}/enroll", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 403);
    server.stop().await;

    let strict = TestServer::start_with(|a| a.enroll_access = Some("admin".into())).await;
    let (_, created) = strict
        .admin_post("/api/v1/enrollment-tokens", json!({}))
        .await;
    let refused = strict
        .client
        .get(created["enroll_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("administrators only"));
    // An administrator downloads the profile and hands it to the device.
    let profile = strict.admin_profile().await;
    let endpoint = strict
        .endpoint_config(false)
        .enrolling_with(ProfileSource::Profile(profile));
    let mut device = strict.device_on(Arc::new(endpoint), 11);
    device
        .enroll()
        .await
        .expect("enrollment with an admin-fetched profile");
    strict.stop().await;
}

#[tokio::test]
async fn signed_enrollment_profiles_verify_and_enroll() {
    let server = TestServer::start_with(|a| a.sign_profiles = Some(true)).await;
    let bytes = server.admin_profile().await;
    assert!(!bytes.starts_with(b"<?xml"), "the profile is not signed");
    let mut cms = openssl::cms::CmsContentInfo::from_der(&bytes).expect("CMS SignedData");
    let ca =
        openssl::x509::X509::from_pem(&std::fs::read(server.data_dir.join("tls/ca.pem")).unwrap())
            .unwrap();
    let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
    store.add_cert(ca).unwrap();
    let store = store.build();
    let mut content = Vec::new();
    cms.verify(
        None,
        Some(&store),
        None,
        Some(&mut content),
        openssl::cms::CMSOptions::BINARY | openssl::cms::CMSOptions::NO_SIGNER_CERT_VERIFY,
    )
    .expect("signature verifies");
    assert!(pomona::protocol::enrollment_profile::read(&content).is_ok());
    // Devices install it like a plain one.
    server.enrolled_device(12).await;
    server.stop().await;
}

#[tokio::test]
async fn a_static_challenge_from_config_enrolls_several_devices() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("challenge");
    std::fs::write(&file, "static-challenge-for-the-lab\n").unwrap();
    let server = TestServer::start_with(|a| a.scep_challenge_file = Some(file)).await;
    let profile = server.admin_profile().await;
    let read = pomona::protocol::enrollment_profile::read(&profile).unwrap();
    assert_eq!(
        read.challenge.as_deref(),
        Some("static-challenge-for-the-lab")
    );
    // One profile, many devices: the static challenge is not used up.
    for index in 20..23 {
        let endpoint = server
            .endpoint_config(false)
            .enrolling_with(ProfileSource::Profile(profile.clone()));
        let mut device = server.device_on(Arc::new(endpoint), index);
        device.enroll().await.expect("static challenge enrollment");
    }
    server.stop().await;
}
