//! Interoperability: the independent `scepclient` (Debian package `scep`, a Go SCEP client)
//! must obtain a device certificate from our `/scep`, and must be refused with a wrong
//! challenge. The test fails (it does not skip) when the program is missing.

mod support;

use support::TestServer;

fn scepclient() -> std::path::PathBuf {
    let path = std::path::PathBuf::from(
        std::env::var("POMONA_SCEPCLIENT").unwrap_or_else(|_| "/usr/bin/scepclient".into()),
    );
    assert!(
        path.exists(),
        "{} not found: install it with `apt-get install scep` (or set POMONA_SCEPCLIENT)",
        path.display()
    );
    path
}

/// Downloads an enrollment profile as the admin and returns its one-time SCEP challenge.
async fn fresh_challenge(server: &TestServer) -> String {
    let profile = server.admin_profile().await;
    pomona::protocol::enrollment_profile::read(&profile)
        .unwrap()
        .challenge
        .expect("profile has a challenge")
}

fn run_scepclient(
    server: &TestServer,
    dir: &std::path::Path,
    challenge: &str,
) -> std::process::Output {
    std::process::Command::new(scepclient())
        .arg("-server-url")
        .arg(format!("{}/scep", server.base_url))
        .arg("-challenge")
        .arg(challenge)
        .arg("-private-key")
        .arg(dir.join("key.pem"))
        .arg("-certificate")
        .arg(dir.join("cert.pem"))
        .arg("-cn")
        .arg("interop-device")
        .arg("-debug")
        // scepclient keeps its self-signed request certificate (self.pem, csr.pem) in the
        // working directory and reuses it; each run gets its own.
        .current_dir(dir)
        // Go's TLS stack reads extra roots from here: our generated HTTPS CA.
        .env("SSL_CERT_FILE", server.data_dir.join("tls/ca.pem"))
        .output()
        .expect("run scepclient")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scepclient_obtains_a_certificate_and_is_refused_with_a_wrong_challenge() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();

    let challenge = fresh_challenge(&server).await;
    let server_ref = &server;
    let ok = tokio::task::block_in_place(|| run_scepclient(server_ref, dir.path(), &challenge));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(ok.status.success(), "scepclient failed:\n{log}");
    let issued =
        openssl::x509::X509::from_pem(&std::fs::read(dir.path().join("cert.pem")).unwrap())
            .expect("scepclient wrote a PEM certificate");
    let ca = openssl::x509::X509::from_pem(
        &std::fs::read(server.data_dir.join("ca/device-ca.pem")).unwrap(),
    )
    .unwrap();
    assert!(
        issued.verify(&ca.public_key().unwrap()).unwrap(),
        "the certificate is not signed by our device CA"
    );
    let cn = issued
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .map(|e| String::from_utf8_lossy(e.data().as_slice()).to_string());
    assert_eq!(cn.as_deref(), Some("interop-device"));

    // The same challenge again: single use, so FAILURE and no new certificate.
    let again = tempfile::tempdir().unwrap();
    let reused =
        tokio::task::block_in_place(|| run_scepclient(server_ref, again.path(), &challenge));
    assert!(!reused.status.success(), "a reused challenge was accepted");
    assert!(!again.path().join("cert.pem").exists());

    let wrong = tempfile::tempdir().unwrap();
    let refused = tokio::task::block_in_place(|| {
        run_scepclient(server_ref, wrong.path(), "not-the-challenge")
    });
    assert!(!refused.status.success(), "a wrong challenge was accepted");
    assert!(!wrong.path().join("cert.pem").exists());
    server.stop().await;
}
