//! Per-request cost of proving a device identity, server side, without HTTP or the database:
//! checking a TLS client certificate against the device CA (what every mTLS request costs) and
//! verifying an `Mdm-Signature` over a typical command report and then its certificate; and
//! the SCEP exchange of an enrollment (decode and check the request, decrypt the CSR, issue,
//! sign the CertRep).
//!   cargo bench --bench identity
use pomona::pki::{ca, signature, DeviceCa};
use std::time::Instant;

fn main() {
    let ca = DeviceCa::generate(365).expect("CA");
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let csr_der = pomona::pki::scep::build_csr(&key, "device", None).unwrap();
    let csr = openssl::x509::X509Req::from_der(&csr_der).unwrap();
    let der = ca.issue(&csr, &csr_der).unwrap().der;
    let cert = openssl::x509::X509::from_der(&der).unwrap();
    // A typical report: Acknowledged with a SecurityInfo-sized result (~1.5 KB).
    let body = format!(
        "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>Status</key><string>Acknowledged</string>\
         <key>UDID</key><string>0000</string><key>CommandUUID</key><string>X</string>{}</dict></plist>",
        "<key>Filler</key><string>0123456789abcdef0123456789abcdef</string>".repeat(24)
    )
    .into_bytes();
    let header = signature::sign_mdm_body(&body, &cert, &key).unwrap();
    let now = ca::unix_now();
    let rounds = 2_000;

    // First sight of a certificate: parse and CA signature (what a memo miss costs).
    let started = Instant::now();
    let fresh = rounds / 10;
    for _ in 0..fresh {
        let parsed = openssl::x509::X509::from_der(&der).unwrap();
        let ca_key = ca.certificate().public_key().unwrap();
        assert!(parsed.verify(&ca_key).unwrap());
    }
    let mtls = started.elapsed() / fresh;

    let started = Instant::now();
    for _ in 0..rounds {
        ca.verify_presented(&der, now).unwrap();
    }
    let mtls_memo = started.elapsed() / rounds;

    // What the server does per signed request (identity.rs): decode, check the signer
    // certificate (memoised after the first request), verify over the body.
    let started = Instant::now();
    for _ in 0..rounds {
        let sig = signature::MdmSignature::decode(&header).unwrap();
        let signer = sig.signer_certificate().unwrap();
        ca.verify_presented(signer, now).unwrap();
        let key = pomona::pki::signer_key::SignerKey::of_certificate(signer).unwrap();
        sig.verify(&body, &key).unwrap();
    }
    let signed = started.elapsed() / rounds;

    let started = Instant::now();
    for _ in 0..rounds {
        signature::sign_mdm_body(&body, &cert, &key).unwrap();
    }
    let signing = started.elapsed() / rounds;

    // One SCEP enrollment, server side: what `/scep` does between the body and the answer.
    let requester = ca::self_signed_requester(&key, "device").unwrap();
    let scep_csr = pomona::pki::scep::build_csr(&key, "device", Some("challenge")).unwrap();
    let message = pomona::pki::scep::encode_request(
        &scep_csr,
        &requester,
        &key,
        ca.certificate(),
        "transaction",
        b"0123456789abcdef",
    )
    .unwrap();
    let enrollments = 200;
    let started = Instant::now();
    for _ in 0..enrollments {
        let request = pomona::pki::scep::decode_request(&message, &ca).unwrap();
        assert!(request.problem.is_none(), "{:?}", request.problem);
        let issued = ca
            .issue(
                request.csr.as_ref().unwrap(),
                request.csr_der.as_deref().unwrap(),
            )
            .unwrap();
        pomona::pki::scep::cert_rep(&ca, &request, Ok(&issued.der)).unwrap();
    }
    let scep = started.elapsed() / enrollments;

    println!(
        "per request, one core, {rounds} rounds, body {} bytes, header {} bytes:",
        body.len(),
        header.len()
    );
    println!("  certificate check, first sight (parse + CA signature):          {mtls:?}");
    println!("  TLS client certificate check, memoised (every later request):   {mtls_memo:?}");
    println!("  Mdm-Signature: decode + certificate (memoised) + verify body:   {signed:?}");
    println!("  (device side) signing one message:                              {signing:?}");
    println!(
        "  SCEP enrollment: decode, check, decrypt, issue, CertRep ({enrollments}):  {scep:?}"
    );
}
