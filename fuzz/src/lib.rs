//! What each fuzz target does with its input: one function per target, each calling the
//! library the way the server does with bytes from outside. None may panic, whatever the input;
//! a returned error is the expected answer to garbage.
//!
//! The targets in fuzz/fuzz_targets/ are one line each around these functions, and the stable
//! test tests/fuzz_regressions.rs includes this file (`#[path]`) to replay fuzz/regressions/
//! through exactly the same calls. So this file depends on nothing but `pomona` and crates the
//! main package already has (`plist`, `serde_json`, `tempfile`).

use pomona::pki::{cms, der, scep, signature, DeviceCa};
use pomona::policy::{files::InTree, load, snapshot};
use pomona::protocol;
use std::path::Path;
use std::sync::OnceLock;

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target by name, as fuzz/fuzz_targets/, fuzz/seeds/ and fuzz/regressions/ name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("plist_bounded", plist_bounded),
    ("checkin_and_report", checkin_and_report),
    ("mdm_signature", mdm_signature),
    ("scep_pkioperation", scep_pkioperation),
    ("der_reader", der_reader),
    ("policy_yaml", policy_yaml),
    ("admin_json", admin_json),
];

/// Plist bytes from outside: device bodies, stored results shown by the admin API, profiles.
pub fn plist_bounded(data: &[u8]) {
    let _ = protocol::bounded::decode(data);
    // How the reconciler reads every stored command result (bounded decode, then serde).
    let _ = protocol::bounded::decode_into::<plist::Dictionary>(data);
    // The admin API's rendering of a stored device result (bounded decode, then JSON).
    let _ = protocol::json::plist_bytes_to_json(data);
    // An unsigned .mobileconfig given to InstallProfile.
    let _ = protocol::profile::ProfileSummary::parse(data);
}

/// A check-in body (CheckInURL) and a command report (ServerURL), both device-controlled.
pub fn checkin_and_report(data: &[u8]) {
    if let Ok(checkin) = protocol::Checkin::parse(data) {
        let _ = checkin.message.message_type();
    }
    if let Ok(report) = protocol::Report::parse(data) {
        let _ = report.status.as_str();
        let _ = report.status.is_terminal();
    }
}

/// The `Mdm-Signature` header (base64 CMS, device-controlled) and the DER CMS reader under it.
pub fn mdm_signature(data: &[u8]) {
    let header = String::from_utf8_lossy(data);
    if let Ok(decoded) = signature::MdmSignature::decode(&header) {
        if decoded.signer_certificate().is_ok() {
            // As the server does next: the signer's key checks the signature over the body.
            let _ = signature::verify_mdm_signature(&header, b"fuzz body");
        }
    }
    // The same input as DER: the SignedData reader and the CMS helpers that share it.
    if let Ok(view) = cms::SignedDataView::parse(data) {
        let _ = view.signer_certificate();
        let _ = view.has_signed_attributes();
    }
    let _ = cms::certificate_issuer_and_serial(data);
    let _ = cms::enveloped_cipher_oid(data);
}

/// A SCEP PKIOperation body (unauthenticated, before any certificate is issued) and the
/// challengePassword reader of a PKCS#10 request.
pub fn scep_pkioperation(data: &[u8]) {
    let _ = scep::decode_request(data, device_ca());
    let _ = scep::csr_challenge(data);
}

/// How deep `der_reader` descends into constructed elements.
const DER_MAX_DEPTH: usize = 12;

/// The DER reader every CMS and PKCS#10 parser here is built on.
pub fn der_reader(data: &[u8]) {
    walk_der(der::Reader::new(data), 0);
    if let Ok(tlv) = der::parse_single(data, "fuzz input") {
        let _ = der::string_value(&tlv);
        let mut inner = tlv.reader();
        let _ = inner.optional(der::OID);
        let _ = inner.expect(der::SEQUENCE, "fuzz sequence");
    }
}

fn walk_der(mut reader: der::Reader<'_>, depth: usize) {
    while !reader.is_empty() {
        let peeked = reader.peek_tag();
        let Ok(tlv) = reader.read() else {
            return;
        };
        // What the parsers built on the reader rely on: the element is its tag, a length of at
        // least one byte and its content, in that order.
        assert_eq!(peeked, Some(tlv.tag));
        assert_eq!(tlv.raw.first(), Some(&tlv.tag));
        assert!(tlv.raw.len() >= tlv.content.len() + 2);
        assert!(tlv.raw.ends_with(tlv.content));
        let _ = der::string_value(&tlv);
        if tlv.tag & 0x20 != 0 && depth < DER_MAX_DEPTH {
            walk_der(tlv.reader(), depth + 1);
        }
    }
}

/// A policy file as read from a policy directory or git (text written by people).
pub fn policy_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut docs = load::Documents::default();
    let mut problems = Vec::new();
    load::parse_file("fuzz.yaml", text, &mut docs, &mut problems);
    for problem in &problems {
        let _ = problem.to_string();
    }
    if problems.iter().any(|p| p.severity == load::Severity::Error) {
        return;
    }
    if let Err(problems) = snapshot::build(&docs, &InTree(policy_root()), "fuzz".into()) {
        for problem in &problems {
            let _ = problem.to_string();
        }
    }
}

/// A JSON command from the admin API, built and sealed into the envelope a device receives,
/// as the admin handler does before queueing it.
pub fn admin_json(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<protocol::CommandRequest>(data) else {
        return;
    };
    if let Ok(command) = request.build() {
        let _ = protocol::CommandEnvelope::encode("FUZZ-COMMAND-UUID", &command.dict);
    }
}

/// One device CA per process, generated in memory (RSA key generation is far too slow to
/// repeat for each input).
fn device_ca() -> &'static DeviceCa {
    static CA: OnceLock<DeviceCa> = OnceLock::new();
    CA.get_or_init(|| DeviceCa::generate(365).expect("generating a device CA"))
}

/// An empty directory standing for the policy source's root (for `mobileconfigFile`), made
/// once per process and removed when the temporary directory is cleaned.
fn policy_root() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("pomona-fuzz-policy-")
            .tempdir()
            .expect("creating an empty policy root")
    })
    .path()
}
