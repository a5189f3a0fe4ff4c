//! SCEP (RFC 8894) messages as Apple devices and `scepclient` send them: decoding a PKIOperation
//! (SignedData by a self-signed requester, wrapping EnvelopedData for our CA, wrapping a PKCS#10
//! CSR) and encoding the CertRep answer (SUCCESS with a certs-only SignedData encrypted back to
//! the requester, or FAILURE with a failInfo). Deciding whether to issue — challenges, the store —
//! belongs to the caller; this module only speaks the format.

use super::ca::DeviceCa;
use super::cms::{self, Digest, SignedDataView};
use super::der::{self, DerError};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509Req, X509};

const ATTR_MESSAGE_TYPE: &str = "2.16.840.1.113733.1.9.2";
const ATTR_PKI_STATUS: &str = "2.16.840.1.113733.1.9.3";
const ATTR_FAIL_INFO: &str = "2.16.840.1.113733.1.9.4";
const ATTR_SENDER_NONCE: &str = "2.16.840.1.113733.1.9.5";
const ATTR_RECIPIENT_NONCE: &str = "2.16.840.1.113733.1.9.6";
const ATTR_TRANSACTION_ID: &str = "2.16.840.1.113733.1.9.7";
const CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";

/// What `GetCACaps` advertises, one per line.
pub const CAPABILITIES: &str =
    "POSTPKIOperation\nSHA-256\nSHA-512\nSHA-1\nAES\nDES3\nSCEPStandard\n";

/// SCEP failInfo values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    BadAlg = 0,
    BadMessageCheck = 1,
    BadRequest = 2,
    BadTime = 3,
    BadCertId = 4,
}

impl FailInfo {
    pub fn name(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "badAlg",
            FailInfo::BadMessageCheck => "badMessageCheck",
            FailInfo::BadRequest => "badRequest",
            FailInfo::BadTime => "badTime",
            FailInfo::BadCertId => "badCertId",
        }
    }
}

/// A request we cannot even answer with a CertRep (no signer to encrypt to): HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("unreadable SCEP message: {0}")]
pub struct Malformed(pub String);

impl From<DerError> for Malformed {
    fn from(e: DerError) -> Self {
        Malformed(e.to_string())
    }
}

/// A decoded PKIOperation. `problem` is set when the message is readable enough to answer but
/// must be refused (bad signature, not encrypted to us, unsupported type, broken CSR).
pub struct PkiRequest {
    pub message_type: String,
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    pub signer: X509,
    digest: Digest,
    cipher: Cipher,
    pub csr: Option<X509Req>,
    /// The CSR as the requester encoded it (what issuance copies the subject and key from).
    pub csr_der: Option<Vec<u8>>,
    pub challenge: Option<String>,
    pub problem: Option<(FailInfo, String)>,
}

/// Decodes a PKIOperation body (DER or BER).
pub fn decode_request(body: &[u8], ca: &DeviceCa) -> Result<PkiRequest, Malformed> {
    // Our reader needs DER: the body as sent when it is DER (keeping the signed attributes'
    // exact bytes), else openssl's re-encoding of the BER. OpenSSL reads the body only when
    // it is needed: decoding a CMS structure through its provider framework costs more than
    // the signature check.
    let mut read_by_openssl = None;
    let view = match SignedDataView::parse(body) {
        Ok(view) => view,
        Err(_) => {
            let cms = read_cms(body)?;
            let normalised = cms
                .to_der()
                .map_err(|_| Malformed("CMS structure cannot be re-encoded".into()))?;
            read_by_openssl = Some(cms);
            SignedDataView::parse(&normalised)?
        }
    };
    let signer_info = view
        .signers
        .first()
        .ok_or_else(|| Malformed("SignedData has no signer".into()))?;
    let signer_der = view
        .signer_certificate()
        .ok_or_else(|| Malformed("the signer's certificate is not included".into()))?;
    let signer = X509::from_der(signer_der)
        .map_err(|_| Malformed("signer certificate unreadable".into()))?;
    let text_attr = |oid: &str, name: &str| -> Result<String, Malformed> {
        let value = signer_info
            .attribute(oid)
            .ok_or_else(|| Malformed(format!("signed attribute {name} is missing")))?;
        Ok(der::string_value(&der::parse_single(value, name)?)?)
    };
    let message_type = text_attr(ATTR_MESSAGE_TYPE, "messageType")?;
    let transaction_id = text_attr(ATTR_TRANSACTION_ID, "transactionID")?;
    let sender_nonce = match signer_info.attribute(ATTR_SENDER_NONCE) {
        Some(v) => der::parse_single(v, "senderNonce")?.content.to_vec(),
        None => return Err(Malformed("signed attribute senderNonce is missing".into())),
    };
    let digest = Digest::from_oid(&signer_info.digest_oid).unwrap_or(Digest::Sha256);

    let mut request = PkiRequest {
        message_type,
        transaction_id,
        sender_nonce,
        signer,
        digest,
        cipher: Cipher::aes_128_cbc(),
        csr: None,
        csr_der: None,
        challenge: None,
        problem: None,
    };
    // The usual form (signed attributes over the content, an RSA signer) is checked over the
    // bytes as received; OpenSSL judges every other form, and what the first check refuses.
    let checked_as_received = view.content.as_deref().filter(|content| {
        crate::pki::signer_key::SignerKey::of_certificate(signer_der)
            .is_some_and(|key| view.verify_first_signer_as_received(content, &key))
    });
    let mut enveloped = Vec::new();
    let verified = match checked_as_received {
        Some(content) => {
            enveloped = content.to_vec();
            true
        }
        None => {
            let mut cms = match read_by_openssl {
                Some(cms) => cms,
                None => read_cms(body)?,
            };
            cms.verify(
                None,
                None,
                None,
                Some(&mut enveloped),
                // The requester's certificate is self-signed: the signature proves possession.
                CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
            )
            .is_ok()
        }
    };
    if !verified {
        request.problem = Some((
            FailInfo::BadMessageCheck,
            "the request's signature does not verify".into(),
        ));
        return Ok(request);
    }
    if request.message_type != "19" {
        request.problem = Some((
            FailInfo::BadRequest,
            format!(
                "messageType {} is not supported (only PKCSReq, 19)",
                request.message_type
            ),
        ));
        return Ok(request);
    }
    let Ok(envelope) = CmsContentInfo::from_der(&enveloped) else {
        request.problem = Some((
            FailInfo::BadMessageCheck,
            "the signed content is not EnvelopedData".into(),
        ));
        return Ok(request);
    };
    // Read from the content as sent when it is DER (the usual case), else from OpenSSL's
    // re-encoding.
    let cipher_oid = cms::enveloped_cipher_oid(&enveloped).ok().or_else(|| {
        envelope
            .to_der()
            .ok()
            .and_then(|d| cms::enveloped_cipher_oid(&d).ok())
    });
    if let Some(cipher) = cipher_oid.and_then(|oid| cipher_for(&oid)) {
        request.cipher = cipher;
    }
    enable_legacy_ciphers();
    let csr_der = match envelope.decrypt(ca.key(), ca.certificate()) {
        Ok(csr) => csr,
        Err(e) => {
            request.problem = Some((
                FailInfo::BadMessageCheck,
                format!("the request cannot be decrypted with this server's CA key ({e})"),
            ));
            return Ok(request);
        }
    };
    let csr = match X509Req::from_der(&csr_der) {
        Ok(csr) => csr,
        Err(_) => {
            request.problem = Some((FailInfo::BadRequest, "the CSR is not PKCS#10".into()));
            return Ok(request);
        }
    };
    // Checked in place when the CSR is RSA-signed (no key object decoded); OpenSSL judges the
    // rest, and what that check refuses.
    let signed_by_own_key = csr_signed_by_own_rsa_key(&csr_der)
        || csr
            .public_key()
            .and_then(|key| csr.verify(&key))
            .unwrap_or(false);
    if !signed_by_own_key {
        request.problem = Some((
            FailInfo::BadMessageCheck,
            "the CSR's signature does not verify".into(),
        ));
        return Ok(request);
    }
    request.challenge = csr_challenge(&csr_der).unwrap_or(None);
    request.csr = Some(csr);
    request.csr_der = Some(csr_der);
    Ok(request)
}

fn read_cms(body: &[u8]) -> Result<CmsContentInfo, Malformed> {
    CmsContentInfo::from_der(body).map_err(|_| Malformed("not a CMS ContentInfo (DER/BER)".into()))
}

impl std::fmt::Debug for PkiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The challenge is a secret: never printed.
        f.debug_struct("PkiRequest")
            .field("message_type", &self.message_type)
            .field("transaction_id", &self.transaction_id)
            .field("has_csr", &self.csr.is_some())
            .field("problem", &self.problem)
            .finish_non_exhaustive()
    }
}

/// Older SCEP clients (Debian's `scepclient` among them) encrypt with single DES, which
/// OpenSSL 3 keeps in its "legacy" provider. Loaded once, next to the default provider; if it
/// is not installed such requests fail with a logged badMessageCheck.
fn enable_legacy_ciphers() {
    static LEGACY: std::sync::OnceLock<Option<openssl::provider::Provider>> =
        std::sync::OnceLock::new();
    LEGACY.get_or_init(|| match openssl::provider::Provider::try_load(None, "legacy", true) {
        Ok(provider) => Some(provider),
        Err(e) => {
            tracing::warn!(error = %e, "OpenSSL legacy provider unavailable: SCEP requests encrypted with single DES will be refused");
            None
        }
    });
}

fn cipher_for(oid: &[u8]) -> Option<Cipher> {
    [
        ("2.16.840.1.101.3.4.1.2", Cipher::aes_128_cbc()),
        ("2.16.840.1.101.3.4.1.22", Cipher::aes_192_cbc()),
        ("2.16.840.1.101.3.4.1.42", Cipher::aes_256_cbc()),
        ("1.2.840.113549.3.7", Cipher::des_ede3_cbc()),
    ]
    .into_iter()
    .find(|(dotted, _)| der::oid_is(oid, dotted))
    .map(|(_, cipher)| cipher)
}

/// Whether a DER PKCS#10 request carries an RSA PKCS#1 v1.5 signature (SHA-1, -256 or -512)
/// that its own key verifies. False for anything else, which is then not decided here.
fn csr_signed_by_own_rsa_key(csr_der: &[u8]) -> bool {
    let check = || -> Result<bool, DerError> {
        let request = der::parse_single(csr_der, "CertificationRequest")?;
        let mut fields = request.reader();
        let info = fields.expect(der::SEQUENCE, "certificationRequestInfo")?;
        let algorithm = fields.expect(der::SEQUENCE, "signatureAlgorithm")?;
        let algorithm = algorithm.reader().expect(der::OID, "algorithm")?;
        let bits = fields.expect(der::BIT_STRING, "signature")?;
        let digest = [
            ("1.2.840.113549.1.1.5", Digest::Sha1),
            ("1.2.840.113549.1.1.11", Digest::Sha256),
            ("1.2.840.113549.1.1.13", Digest::Sha512),
        ]
        .into_iter()
        .find(|(dotted, _)| der::oid_is(algorithm.raw, dotted))
        .map(|(_, digest)| digest);
        let mut info_fields = info.reader();
        info_fields.expect(der::INTEGER, "version")?;
        info_fields.expect(der::SEQUENCE, "subject")?;
        let key_info = info_fields.expect(der::SEQUENCE, "subjectPKInfo")?;
        let key = crate::pki::signer_key::SignerKey::rsa_of_public_key_info(key_info.raw);
        Ok(match (digest, key, bits.content.split_first()) {
            (Some(digest), Some(key), Some((0, signature))) => {
                key.verify(digest, info.raw, signature)
            }
            _ => false,
        })
    };
    check().unwrap_or(false)
}

/// The challengePassword attribute of a DER PKCS#10 request, if any.
pub fn csr_challenge(csr_der: &[u8]) -> Result<Option<String>, DerError> {
    let outer = der::parse_single(csr_der, "CertificationRequest")?;
    let info = outer
        .reader()
        .expect(der::SEQUENCE, "certificationRequestInfo")?;
    let mut r = info.reader();
    r.expect(der::INTEGER, "version")?;
    r.expect(der::SEQUENCE, "subject")?;
    r.expect(der::SEQUENCE, "subjectPKInfo")?;
    let Some(attributes) = r.optional(der::context(0))? else {
        return Ok(None);
    };
    let mut attrs = attributes.reader();
    while !attrs.is_empty() {
        let attr = attrs.expect(der::SEQUENCE, "Attribute")?;
        let mut a = attr.reader();
        let oid = a.expect(der::OID, "Attribute.type")?;
        let values = a.expect(der::SET, "Attribute.values")?;
        if der::oid_is(oid.raw, CHALLENGE_PASSWORD) {
            let value = values.reader().read()?;
            return der::string_value(&value).map(Some);
        }
    }
    Ok(None)
}

/// The CertRep answering `request`: the issued certificate, or a failure.
pub fn cert_rep(
    ca: &DeviceCa,
    request: &PkiRequest,
    outcome: Result<&[u8], FailInfo>,
) -> Result<Vec<u8>, cms::BuildError> {
    let mut attributes: Vec<cms::Attribute> = vec![
        (ATTR_MESSAGE_TYPE, der::printable_string("3")),
        (
            ATTR_TRANSACTION_ID,
            der::printable_string(&request.transaction_id),
        ),
        (
            ATTR_SENDER_NONCE,
            der::octet_string(&uuid::Uuid::new_v4().into_bytes()),
        ),
        (
            ATTR_RECIPIENT_NONCE,
            der::octet_string(&request.sender_nonce),
        ),
    ];
    let content = match outcome {
        Ok(issued) => {
            attributes.push((ATTR_PKI_STATUS, der::printable_string("0")));
            let degenerate = cms::certs_only(&[issued]);
            let mut recipients = Stack::new()?;
            recipients.push(request.signer.clone())?;
            let envelope = CmsContentInfo::encrypt(
                &recipients,
                &degenerate,
                request.cipher,
                CMSOptions::BINARY,
            )?;
            Some(envelope.to_der()?)
        }
        Err(fail) => {
            attributes.push((ATTR_PKI_STATUS, der::printable_string("2")));
            attributes.push((
                ATTR_FAIL_INFO,
                der::printable_string(&(fail as u8).to_string()),
            ));
            None
        }
    };
    cms::build_signed_data(
        content.as_deref(),
        ca.certificate(),
        ca.key(),
        request.digest,
        attributes,
    )
}

/// Client side, used by the simulator: a PKCSReq for `csr`, signed by the requester's
/// self-signed certificate and encrypted to the CA.
pub fn encode_request(
    csr_der: &[u8],
    requester: &X509,
    requester_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    ca: &X509,
    transaction_id: &str,
    sender_nonce: &[u8],
) -> Result<Vec<u8>, cms::BuildError> {
    let mut recipients = Stack::new()?;
    recipients.push(ca.clone())?;
    let envelope = CmsContentInfo::encrypt(
        &recipients,
        csr_der,
        Cipher::aes_128_cbc(),
        CMSOptions::BINARY,
    )?
    .to_der()?;
    cms::build_signed_data(
        Some(&envelope),
        requester,
        requester_key,
        Digest::Sha256,
        vec![
            (ATTR_MESSAGE_TYPE, der::printable_string("19")),
            (ATTR_TRANSACTION_ID, der::printable_string(transaction_id)),
            (ATTR_SENDER_NONCE, der::octet_string(sender_nonce)),
        ],
    )
}

/// Client side: a PKCS#10 request for `key` with subject CN=`common_name` and, when given, a
/// challengePassword attribute (which openssl's request builder cannot add, hence DER).
pub fn build_csr(
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    common_name: &str,
    challenge: Option<&str>,
) -> Result<Vec<u8>, cms::BuildError> {
    let mut name = openssl::x509::X509NameBuilder::new()?;
    name.append_entry_by_text("CN", common_name)?;
    let name = name.build();
    let spki =
        openssl::pkey::PKey::public_key_from_der(&key.public_key_to_der()?)?.public_key_to_der()?;
    let attributes: Vec<Vec<u8>> = challenge
        .map(|c| {
            der::sequence(&[
                &der::oid(CHALLENGE_PASSWORD),
                &der::set_of(vec![der::tlv(der::UTF8_STRING, c.as_bytes())]),
            ])
        })
        .into_iter()
        .collect();
    let info = der::sequence(&[
        &der::integer(0),
        &name.to_der()?,
        &spki,
        &der::constructed(
            der::context(0),
            &attributes.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        ),
    ]);
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)?;
    signer.update(&info)?;
    let mut bits = vec![0u8]; // BIT STRING: no unused bits.
    bits.extend(signer.sign_to_vec()?);
    Ok(der::sequence(&[
        &info,
        &der::algorithm("1.2.840.113549.1.1.11"),
        &der::tlv(0x03, &bits),
    ]))
}

/// Client side: the outcome of a CertRep — the issued certificate (DER) or the failInfo.
pub fn decode_cert_rep(
    body: &[u8],
    ca: &X509,
    requester: &X509,
    requester_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> Result<Result<Vec<u8>, String>, Malformed> {
    let mut cms = CmsContentInfo::from_der(body)
        .map_err(|_| Malformed("CertRep is not a CMS ContentInfo".into()))?;
    let mut certs = Stack::new().map_err(|e| Malformed(e.to_string()))?;
    certs
        .push(ca.clone())
        .map_err(|e| Malformed(e.to_string()))?;
    let normalised = cms.to_der().map_err(|e| Malformed(e.to_string()))?;
    let view = SignedDataView::parse(&normalised)?;
    let mut content = Vec::new();
    // A FAILURE carries no content; its messageDigest covers the empty string.
    let detached: Option<&[u8]> = if view.content.is_none() {
        Some(&[])
    } else {
        None
    };
    cms.verify(
        Some(&certs),
        None,
        detached,
        Some(&mut content),
        CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
    )
    .map_err(|_| Malformed("CertRep signature does not verify".into()))?;
    let signer = view
        .signers
        .first()
        .ok_or_else(|| Malformed("CertRep has no signer".into()))?;
    let status = signer
        .attribute(ATTR_PKI_STATUS)
        .map(|v| der::parse_single(v, "pkiStatus").and_then(|t| der::string_value(&t)))
        .transpose()?
        .ok_or_else(|| Malformed("CertRep has no pkiStatus".into()))?;
    if status != "0" {
        let fail = signer
            .attribute(ATTR_FAIL_INFO)
            .map(|v| der::parse_single(v, "failInfo").and_then(|t| der::string_value(&t)))
            .transpose()?
            .unwrap_or_default();
        return Ok(Err(format!("pkiStatus {status}, failInfo {fail}")));
    }
    let envelope = CmsContentInfo::from_der(&content)
        .map_err(|_| Malformed("CertRep content is not EnvelopedData".into()))?;
    let degenerate = envelope
        .decrypt(requester_key, requester)
        .map_err(|_| Malformed("CertRep is not encrypted to the requester".into()))?;
    let p7 = SignedDataView::parse(&degenerate)?;
    p7.certificates
        .into_iter()
        .next()
        .map(Ok)
        .ok_or_else(|| Malformed("CertRep carries no certificate".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::{PKey, Private};

    /// A device-side key, CSR (with challenge) and self-signed requester certificate.
    fn requester(challenge: Option<&str>) -> (PKey<Private>, Vec<u8>, X509) {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let csr = build_csr(&key, "sim-device", challenge).unwrap();
        let cert = super::super::ca::self_signed_requester(&key, "sim-device").unwrap();
        (key, csr, cert)
    }

    #[test]
    fn pkcs_req_round_trip_issues_a_certificate_for_the_requesters_key() {
        let ca = DeviceCa::generate(365).unwrap();
        let (key, csr, cert) = requester(Some("one-time-secret"));
        let body = encode_request(
            &csr,
            &cert,
            &key,
            ca.certificate(),
            "tx-1",
            b"nonce-0123456789",
        )
        .unwrap();
        let request = decode_request(&body, &ca).unwrap();
        assert!(request.problem.is_none(), "{:?}", request.problem);
        assert_eq!(request.challenge.as_deref(), Some("one-time-secret"));
        assert_eq!(request.transaction_id, "tx-1");
        let issued = ca
            .issue(
                request.csr.as_ref().unwrap(),
                request.csr_der.as_ref().unwrap(),
            )
            .unwrap();
        let reply = cert_rep(&ca, &request, Ok(&issued.der)).unwrap();
        let got = decode_cert_rep(&reply, ca.certificate(), &cert, &key)
            .unwrap()
            .expect("SUCCESS");
        let got = X509::from_der(&got).unwrap();
        assert!(got.public_key().unwrap().public_eq(&key));
        assert!(!format!("{request:?}").contains("one-time-secret"));
    }

    #[test]
    fn failure_reply_carries_the_fail_info() {
        let ca = DeviceCa::generate(365).unwrap();
        let (key, csr, cert) = requester(None);
        let body = encode_request(&csr, &cert, &key, ca.certificate(), "tx-2", b"nonce").unwrap();
        let request = decode_request(&body, &ca).unwrap();
        assert_eq!(request.challenge, None);
        let reply = cert_rep(&ca, &request, Err(FailInfo::BadRequest)).unwrap();
        let outcome = decode_cert_rep(&reply, ca.certificate(), &cert, &key).unwrap();
        assert_eq!(outcome, Err("pkiStatus 2, failInfo 2".to_string()));
    }

    #[test]
    fn request_encrypted_to_another_ca_is_a_bad_message_check() {
        let ca = DeviceCa::generate(365).unwrap();
        let other = DeviceCa::generate(365).unwrap();
        let (key, csr, cert) = requester(Some("x"));
        let body =
            encode_request(&csr, &cert, &key, other.certificate(), "tx-3", b"nonce").unwrap();
        let request = decode_request(&body, &ca).unwrap();
        assert_eq!(
            request.problem.as_ref().map(|p| p.0),
            Some(FailInfo::BadMessageCheck)
        );
    }

    #[test]
    fn a_request_signed_by_a_key_other_than_its_certificates_is_a_bad_message_check() {
        let ca = DeviceCa::generate(365).unwrap();
        let (key, csr, _) = requester(Some("x"));
        let (_, _, someone_else) = requester(None);
        let body = encode_request(&csr, &someone_else, &key, ca.certificate(), "tx", b"n").unwrap();
        let request = decode_request(&body, &ca).unwrap();
        assert_eq!(
            request.problem,
            Some((
                FailInfo::BadMessageCheck,
                "the request's signature does not verify".into()
            ))
        );
    }

    #[test]
    fn a_csr_whose_signature_was_altered_is_refused() {
        let ca = DeviceCa::generate(365).unwrap();
        let (key, csr, cert) = requester(Some("x"));
        assert!(csr_signed_by_own_rsa_key(&csr));
        let mut altered = csr.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(!csr_signed_by_own_rsa_key(&altered));
        let body = encode_request(&altered, &cert, &key, ca.certificate(), "tx", b"n").unwrap();
        let request = decode_request(&body, &ca).unwrap();
        assert_eq!(
            request.problem,
            Some((
                FailInfo::BadMessageCheck,
                "the CSR's signature does not verify".into()
            ))
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let ca = DeviceCa::generate(365).unwrap();
        for body in [&b""[..], b"\x30\x80", b"hello world", &[0x30; 4096]] {
            assert!(decode_request(body, &ca).is_err());
        }
    }
}
