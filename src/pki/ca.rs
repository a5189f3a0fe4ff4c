//! The device certificate authority: created on first start (or loaded from files, e.g. a
//! mounted Kubernetes Secret), it issues device identity certificates from SCEP requests and
//! checks that a presented certificate is one of its own and in its validity period.
//! Revocation and binding to a device live in the store; beyond the CA's certificate and key this
//! type only memoises certificates it has already verified (they are immutable, so a hit skips
//! parsing and the RSA check; validity is still compared with the clock on every use). The key
//! is never formatted into logs or errors.

use super::der;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509Builder, X509NameBuilder, X509Req, X509};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("device CA: {0}")]
    Invalid(String),
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// Why a presented certificate is not accepted as a device identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateProblem {
    #[error("not a parseable X.509 certificate")]
    Unparseable,
    #[error("issued by {issuer:?}, not by this server's device CA")]
    ForeignIssuer { issuer: String },
    #[error("signature does not verify with this server's device CA")]
    BadSignature,
    #[error("not valid before {not_before}")]
    NotYetValid { not_before: String },
    #[error("expired at {not_after}")]
    Expired { not_after: String },
}

/// A certificate that chains to our CA and is in its validity period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// Lowercase hex SHA-256 of the DER encoding: the key the store knows it by.
    pub fingerprint: String,
    pub serial: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

pub struct DeviceCa {
    cert: X509,
    key: PKey<Private>,
    /// Decoded once: OpenSSL 3 key decoding costs more than the signature check itself.
    public_key: PKey<Public>,
    cert_der: Vec<u8>,
    /// The CA's subject, DER: the issuer of what it issues.
    subject_der: Vec<u8>,
    /// The CA's key identifier (its subjectKeyIdentifier, else computed from its key).
    authority_key_id: Vec<u8>,
    validity_days: u32,
    /// Certificates that verified, by the SHA-256 of their DER. One per enrolled device, so it
    /// is memory per device: it keeps only what a request needs and the certificate it carries
    /// does not give for free (the public key is read again from that certificate).
    verified: Mutex<HashMap<[u8; 32], Checked>>,
}

/// What the memo keeps of a certificate that verified.
#[derive(Clone)]
struct Checked {
    serial: InlineSerial,
    not_before: i64,
    not_after: i64,
}

/// A serial number kept in place of its text: RFC 5280 caps serials at 20 octets, so it needs
/// no allocation of its own (one per enrolled device in the memo).
#[derive(Clone, Copy)]
struct InlineSerial {
    len: u8,
    bytes: [u8; 20],
}

impl InlineSerial {
    /// The bytes `text` (as `serial_text` writes it) stands for; None when it would not read
    /// back the same (a zero or negative serial, one over 20 octets): such a certificate is
    /// simply not memoised.
    fn of_text(text: &str) -> Option<Self> {
        let decoded = hex::decode(text).ok()?;
        let mut serial = Self {
            len: u8::try_from(decoded.len()).ok().filter(|n| *n <= 20)?,
            bytes: [0; 20],
        };
        serial.bytes[..decoded.len()].copy_from_slice(&decoded);
        (serial.text() == text).then_some(serial)
    }

    fn text(&self) -> String {
        hex::encode(&self.bytes[..usize::from(self.len)])
    }
}

/// A device certificate that verified against this CA and is valid now.
#[derive(Debug, Clone)]
pub struct VerifiedCertificate {
    /// Lowercase hex SHA-256 of the DER encoding: the key the store knows it by.
    pub fingerprint: String,
    pub serial: String,
}

/// Bound on memoised certificates (about 100 bytes each); the memo is simply emptied when full.
const VERIFIED_CAPACITY: usize = 200_000;

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa")
            .field("subject", &name_text(self.cert.subject_name()))
            .field("key", &"<redacted>")
            .finish()
    }
}

pub const CA_CERT_FILE: &str = "device-ca.pem";
pub const CA_KEY_FILE: &str = "device-ca.key";

impl DeviceCa {
    /// Loads `<dir>/device-ca.pem` and `.key`, creating both (key 0600) on first start.
    pub fn load_or_create(dir: &Path, validity_days: u32) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return Self::load(&cert_path, &key_path, validity_days);
        }
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let ca = Self::generate(validity_days)?;
        write_private(&key_path, &ca.key.private_key_to_pem_pkcs8()?)?;
        std::fs::write(&cert_path, ca.cert.to_pem()?).map_err(|e| file_error(&cert_path, e))?;
        tracing::info!(cert = %cert_path.display(), "created the device certificate authority");
        Ok(ca)
    }

    /// Loads a CA certificate and its private key (PEM). The key must match the certificate.
    pub fn load(cert_path: &Path, key_path: &Path, validity_days: u32) -> Result<Self, CaError> {
        let cert_pem = std::fs::read(cert_path).map_err(|e| file_error(cert_path, e))?;
        let key_pem = std::fs::read(key_path).map_err(|e| file_error(key_path, e))?;
        let cert = X509::from_pem(&cert_pem).map_err(|_| CaError::File {
            path: cert_path.into(),
            reason: "not a PEM certificate".into(),
        })?;
        let key = PKey::private_key_from_pem(&key_pem).map_err(|_| CaError::File {
            path: key_path.into(),
            reason: "not a PEM private key".into(),
        })?;
        if !cert.public_key()?.public_eq(&key) {
            return Err(CaError::Invalid(format!(
                "{} does not belong to the certificate in {}",
                key_path.display(),
                cert_path.display()
            )));
        }
        if key.rsa().is_err() {
            return Err(CaError::Invalid(
                "the CA key must be RSA: SCEP clients encrypt their requests to it".into(),
            ));
        }
        Self::from_parts(cert, key, validity_days)
    }

    fn from_parts(cert: X509, key: PKey<Private>, validity_days: u32) -> Result<Self, CaError> {
        let authority_key_id = match cert.subject_key_id() {
            Some(id) => id.as_slice().to_vec(),
            None => key_identifier(&cert.public_key()?.public_key_to_der()?)
                .map_err(|e| CaError::Invalid(format!("the CA certificate's key: {e}")))?,
        };
        Ok(Self {
            cert_der: cert.to_der()?,
            subject_der: cert.subject_name().to_der()?,
            authority_key_id,
            public_key: cert.public_key()?,
            cert,
            key,
            validity_days,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// A fresh RSA-2048 CA valid for ten years.
    pub fn generate(validity_days: u32) -> Result<Self, CaError> {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Pomona")?;
        name.append_entry_by_nid(Nid::COMMONNAME, "Pomona device CA")?;
        let name = name.build();
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let serial = random_serial()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        let not_before = Asn1Time::from_unix(unix_now() - 3600)?;
        let not_after = Asn1Time::days_from_now(3650)?;
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Self::from_parts(b.build(), key, validity_days)
    }

    pub fn certificate(&self) -> &X509 {
        &self.cert
    }

    /// The sealer for secrets at rest, keyed from this CA's private key (see `seal`).
    pub fn sealer(&self) -> super::seal::Sealer {
        let der = self
            .key
            .private_key_to_der()
            .expect("a loaded private key can be encoded");
        super::seal::Sealer::derived_from(&der)
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub(crate) fn key(&self) -> &PKey<Private> {
        &self.key
    }

    pub fn subject(&self) -> String {
        name_text(self.cert.subject_name())
    }

    /// Issues a device identity certificate for the key and subject of a verified CSR (`csr`,
    /// parsed from `csr_der`). The certificate is encoded here rather than by OpenSSL's
    /// builder: the subject and SubjectPublicKeyInfo are copied from the CSR as they are, so
    /// the device's key is never decoded (OpenSSL 3 decodes and re-encodes a key through its
    /// provider framework, a tenth of an enrollment's cost), and only the signature is
    /// OpenSSL's. Extensions: basicConstraints (critical, not a CA), keyUsage (critical,
    /// digitalSignature and keyEncipherment), extendedKeyUsage clientAuth, and the key
    /// identifiers (RFC 5280 method 1).
    pub fn issue(&self, csr: &X509Req, csr_der: &[u8]) -> Result<IssuedCertificate, CaError> {
        let malformed = |e: der::DerError| CaError::Invalid(format!("the CSR: {e}"));
        let (subject, spki) = csr_subject_and_key(csr_der).map_err(malformed)?;
        let key_id = key_identifier(spki).map_err(malformed)?;
        let serial = random_serial_bytes()?;
        // Backdated a little: device clocks drift.
        let not_before = unix_now() - 300;
        let not_after = unix_now() + i64::from(self.validity_days) * 86_400;
        let extensions = der::sequence(&[
            &extension(OID_BASIC_CONSTRAINTS, true, &der::sequence(&[])),
            // BIT STRING, 5 unused bits: digitalSignature (bit 0) and keyEncipherment (bit 2).
            &extension(OID_KEY_USAGE, true, &der::tlv(der::BIT_STRING, &[5, 0xa0])),
            &extension(
                OID_EXTENDED_KEY_USAGE,
                false,
                &der::sequence(&[&der::oid(OID_CLIENT_AUTH)]),
            ),
            &extension(
                OID_SUBJECT_KEY_IDENTIFIER,
                false,
                &der::octet_string(&key_id),
            ),
            &extension(
                OID_AUTHORITY_KEY_IDENTIFIER,
                false,
                &der::sequence(&[&der::tlv(0x80, &self.authority_key_id)]),
            ),
        ]);
        let tbs = der::sequence(&[
            &der::constructed(der::context(0), &[&der::integer(2)]),
            &der::tlv(der::INTEGER, &serial),
            &der::algorithm(OID_SHA256_WITH_RSA),
            &self.subject_der,
            &der::sequence(&[&der_time(not_before)?, &der_time(not_after)?]),
            subject,
            spki,
            &der::constructed(der::context(3), &[&extensions]),
        ]);
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.update(&tbs)?;
        let mut signature = vec![0u8]; // no unused bits
        signature.extend(signer.sign_to_vec()?);
        let certificate = der::sequence(&[
            &tbs,
            &der::algorithm(OID_SHA256_WITH_RSA),
            &der::tlv(der::BIT_STRING, &signature),
        ]);
        let described = DeviceCertificate {
            fingerprint: fingerprint(&certificate),
            serial: serial_hex(&serial),
            subject: name_text(csr.subject_name()),
            not_before,
            not_after,
        };
        Ok(IssuedCertificate {
            der: certificate,
            described,
        })
    }

    /// Checks that a DER certificate was issued by this CA and is valid at `now` (Unix seconds),
    /// and describes it.
    pub fn verify_device_certificate(
        &self,
        der: &[u8],
        now: i64,
    ) -> Result<DeviceCertificate, CertificateProblem> {
        self.verify_presented(der, now)?;
        let cert = X509::from_der(der).map_err(|_| CertificateProblem::Unparseable)?;
        let (not_before, not_after) = (asn1_unix(cert.not_before()), asn1_unix(cert.not_after()));
        Ok(describe(&cert, der, not_before, not_after))
    }

    /// Checks that a DER certificate a request presented was issued by this CA and is valid at
    /// `now` (Unix seconds). A certificate seen before is not parsed again.
    pub fn verify_presented(
        &self,
        der: &[u8],
        now: i64,
    ) -> Result<VerifiedCertificate, CertificateProblem> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(der).into();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let (serial, not_before, not_after) = match cached {
            Some(checked) => (checked.serial.text(), checked.not_before, checked.not_after),
            None => {
                let (serial, not_before, not_after) = self.verify_uncached(der)?;
                if let Some(inline) = InlineSerial::of_text(&serial) {
                    let mut memo = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                    if memo.len() >= VERIFIED_CAPACITY {
                        memo.clear();
                    }
                    let checked = Checked {
                        serial: inline,
                        not_before,
                        not_after,
                    };
                    memo.insert(digest, checked);
                }
                (serial, not_before, not_after)
            }
        };
        if now < not_before {
            return Err(CertificateProblem::NotYetValid {
                not_before: rfc3339_seconds(not_before),
            });
        }
        if now > not_after {
            return Err(CertificateProblem::Expired {
                not_after: rfc3339_seconds(not_after),
            });
        }
        Ok(VerifiedCertificate {
            fingerprint: hex::encode(digest),
            serial,
        })
    }

    /// The serial text and validity (Unix seconds) of a certificate this CA issued.
    fn verify_uncached(&self, der: &[u8]) -> Result<(String, i64, i64), CertificateProblem> {
        let cert = X509::from_der(der).map_err(|_| CertificateProblem::Unparseable)?;
        let issuer = cert.issuer_name();
        let same_issuer = issuer
            .to_der()
            .ok()
            .zip(self.cert.subject_name().to_der().ok())
            .is_some_and(|(a, b)| a == b);
        if !same_issuer {
            return Err(CertificateProblem::ForeignIssuer {
                issuer: name_text(issuer),
            });
        }
        if !cert.verify(&self.public_key).unwrap_or(false) {
            return Err(CertificateProblem::BadSignature);
        }
        Ok((
            serial_text(&cert),
            asn1_unix(cert.not_before()),
            asn1_unix(cert.not_after()),
        ))
    }
}

/// A Unix time (seconds) as RFC 3339, for messages and logs.
pub fn rfc3339_seconds(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

/// The throwaway self-signed certificate a SCEP client signs its request with (client side:
/// the simulator and tests).
pub fn self_signed_requester(key: &PKey<Private>, common_name: &str) -> Result<X509, CaError> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    let name = name.build();
    let name = name.as_ref();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(name)?;
    b.set_issuer_name(name)?;
    b.set_pubkey(key)?;
    let not_before = Asn1Time::from_unix(unix_now() - 300)?;
    let not_after = Asn1Time::days_from_now(1)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

fn describe(cert: &X509, der: &[u8], not_before: i64, not_after: i64) -> DeviceCertificate {
    DeviceCertificate {
        fingerprint: fingerprint(der),
        serial: serial_text(cert),
        subject: name_text(cert.subject_name()),
        not_before,
        not_after,
    }
}

/// A certificate's serial number as OpenSSL writes it (lowercase hex, whole bytes).
fn serial_text(cert: &X509) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_lowercase()))
        .unwrap_or_default()
}

/// Lowercase hex SHA-256 of DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

/// "CN=…, O=…" for logs and the API.
pub fn name_text(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = String::from_utf8_lossy(entry.data().as_slice());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn asn1_unix(time: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = Asn1Time::from_unix(0).expect("epoch is representable");
    epoch
        .diff(time)
        .map(|d| d.days as i64 * 86_400 + d.secs as i64)
        .unwrap_or(0)
}

fn random_serial() -> Result<Asn1Integer, openssl::error::ErrorStack> {
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    serial.to_asn1_integer()
}

/// A certificate the CA issued: its DER, and how it is recorded.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub der: Vec<u8>,
    pub described: DeviceCertificate,
}

const OID_SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_EXTENDED_KEY_USAGE: &str = "2.5.29.37";
const OID_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
const OID_SUBJECT_KEY_IDENTIFIER: &str = "2.5.29.14";
const OID_AUTHORITY_KEY_IDENTIFIER: &str = "2.5.29.35";

/// One `Extension`: its OID, the critical flag when set, and its value wrapped in an OCTET
/// STRING.
fn extension(oid: &str, critical: bool, value: &[u8]) -> Vec<u8> {
    let flag = if critical {
        der::tlv(der::BOOLEAN, &[0xff])
    } else {
        Vec::new()
    };
    der::sequence(&[&der::oid(oid), &flag, &der::octet_string(value)])
}

/// The subject Name and SubjectPublicKeyInfo of a PKCS#10 request, as encoded.
fn csr_subject_and_key(csr_der: &[u8]) -> der::DerResult<(&[u8], &[u8])> {
    let request = der::parse_single(csr_der, "CertificationRequest")?;
    let mut fields = request.reader();
    let info = fields.expect(der::SEQUENCE, "certificationRequestInfo")?;
    let mut info = info.reader();
    info.expect(der::INTEGER, "version")?;
    let subject = info.expect(der::SEQUENCE, "subject")?;
    let key = info.expect(der::SEQUENCE, "subjectPKInfo")?;
    Ok((subject.raw, key.raw))
}

/// RFC 5280's key identifier, method 1: the SHA-1 of the subjectPublicKey bits.
fn key_identifier(spki_der: &[u8]) -> der::DerResult<Vec<u8>> {
    let spki = der::parse_single(spki_der, "SubjectPublicKeyInfo")?;
    let mut fields = spki.reader();
    fields.expect(der::SEQUENCE, "algorithm")?;
    let bits = fields.expect(der::BIT_STRING, "subjectPublicKey")?;
    let key = bits
        .content
        .split_first()
        .map(|(_unused, key)| key)
        .ok_or_else(|| der::DerError("empty subjectPublicKey".into()))?;
    Ok(openssl::sha::sha1(key).to_vec())
}

/// A random positive serial number of at most 127 bits, as INTEGER content (minimal, no sign
/// bit set).
fn random_serial_bytes() -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes)?;
    bytes[0] &= 0x7f;
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(15);
    let mut content = bytes[skip..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    Ok(content)
}

/// A serial number as recorded: lowercase hex of its bytes without leading zero bytes, as
/// OpenSSL's `BN_bn2hex` writes it (and so as certificates issued before the CA encoded its own
/// were recorded). A leading zero nibble stays: 0x0a01 is "0a01".
fn serial_hex(content: &[u8]) -> String {
    let skip = content.iter().take_while(|b| **b == 0).count();
    if skip == content.len() {
        "0".into()
    } else {
        hex::encode(&content[skip..])
    }
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280, 4.1.2.5).
fn der_time(unix: i64) -> Result<Vec<u8>, CaError> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| CaError::Invalid(format!("a validity time out of range: {e}")))?;
    let (year, tag) = if (1950..2050).contains(&t.year()) {
        (format!("{:02}", t.year() % 100), der::UTC_TIME)
    } else {
        (format!("{:04}", t.year()), der::GENERALIZED_TIME)
    };
    let text = format!(
        "{year}{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Ok(der::tlv(tag, text.as_bytes()))
}

pub fn unix_now() -> i64 {
    crate::vocab::clock::now_millis() / 1000
}

fn file_error(path: &Path, e: std::io::Error) -> CaError {
    CaError::File {
        path: path.into(),
        reason: e.to_string(),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    file.write_all(bytes).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> (X509Req, PKey<Private>) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "device").unwrap();
        let mut req = openssl::x509::X509ReqBuilder::new().unwrap();
        req.set_subject_name(&name.build()).unwrap();
        req.set_pubkey(&key).unwrap();
        req.sign(&key, MessageDigest::sha256()).unwrap();
        (req.build(), key)
    }

    #[test]
    fn issued_certificates_verify_and_foreign_ones_do_not() {
        let ca = DeviceCa::generate(365).unwrap();
        let other = DeviceCa::generate(365).unwrap();
        let (req, _) = csr();
        let der = ca.issue(&req, &req.to_der().unwrap()).unwrap().der;
        let described = ca.verify_device_certificate(&der, unix_now()).unwrap();
        assert_eq!(described.fingerprint, fingerprint(&der));
        assert_eq!(described.subject, "CN=device");
        // Same subject name, different key: the signature check catches it.
        assert_eq!(
            other.verify_device_certificate(&der, unix_now()),
            Err(CertificateProblem::BadSignature)
        );
        assert!(matches!(
            ca.verify_device_certificate(&der, unix_now() + 400 * 86_400),
            Err(CertificateProblem::Expired { .. })
        ));
        assert_eq!(
            ca.verify_device_certificate(b"junk", unix_now()),
            Err(CertificateProblem::Unparseable)
        );
    }

    #[test]
    fn an_issued_certificate_holds_what_openssl_would_have_put_in_it() {
        let ca = DeviceCa::generate(365).unwrap();
        let (req, key) = csr();
        let issued = ca.issue(&req, &req.to_der().unwrap()).unwrap();
        let cert = X509::from_der(&issued.der).unwrap();
        assert_eq!(
            cert.to_der().unwrap(),
            issued.der,
            "DER as OpenSSL re-encodes it"
        );
        assert!(cert.verify(&ca.public_key).unwrap());
        assert!(cert.public_key().unwrap().public_eq(&key));
        let der_of = |name: &openssl::x509::X509NameRef| name.to_der().unwrap();
        assert_eq!(der_of(cert.subject_name()), der_of(req.subject_name()));
        assert_eq!(der_of(cert.issuer_name()), der_of(ca.cert.subject_name()));
        // The key identifiers as OpenSSL computes them.
        let mut reference = X509Builder::new().unwrap();
        reference.set_pubkey(&key).unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&reference.x509v3_context(None, None))
            .unwrap();
        reference.append_extension(ski).unwrap();
        reference.sign(&key, MessageDigest::sha256()).unwrap();
        let reference = reference.build();
        assert_eq!(
            cert.subject_key_id().unwrap().as_slice(),
            reference.subject_key_id().unwrap().as_slice()
        );
        assert_eq!(
            cert.authority_key_id().unwrap().as_slice(),
            ca.cert.subject_key_id().unwrap().as_slice()
        );
        let serial = cert.serial_number().to_bn().unwrap().to_hex_str().unwrap();
        assert_eq!(serial.to_lowercase(), issued.described.serial);
        assert_eq!(asn1_unix(cert.not_before()), issued.described.not_before);
        assert_eq!(asn1_unix(cert.not_after()), issued.described.not_after);
        assert_eq!(
            issued.described.not_after - issued.described.not_before,
            365 * 86_400 + 300
        );
        assert_eq!(issued.described.fingerprint, fingerprint(&issued.der));
        assert_eq!(issued.described.subject, "CN=device");
        let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
        for expected in [
            "X509v3 Basic Constraints: critical",
            "CA:FALSE",
            "X509v3 Key Usage: critical",
            "Digital Signature, Key Encipherment",
            "TLS Web Client Authentication",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        // A chain OpenSSL accepts for a TLS client.
        let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
        store.add_cert(ca.cert.clone()).unwrap();
        store
            .set_purpose(openssl::x509::X509PurposeId::SSL_CLIENT)
            .unwrap();
        let store = store.build();
        let mut context = openssl::x509::X509StoreContext::new().unwrap();
        let chain = openssl::stack::Stack::new().unwrap();
        assert!(context
            .init(&store, &cert, &chain, |c| c.verify_cert())
            .unwrap());
        assert_eq!(
            ca.verify_device_certificate(&issued.der, unix_now())
                .unwrap(),
            issued.described
        );
        let memoised = ca.verify_presented(&issued.der, unix_now()).unwrap();
        assert_eq!(
            memoised.serial, issued.described.serial,
            "read from the memo"
        );
    }

    #[test]
    fn validity_times_are_utc_time_until_2049_and_generalized_time_after() {
        assert_eq!(
            der_time(0).unwrap(),
            der::tlv(der::UTC_TIME, b"700101000000Z")
        );
        assert_eq!(
            der_time(2_524_607_999).unwrap(),
            der::tlv(der::UTC_TIME, b"491231235959Z")
        );
        assert_eq!(
            der_time(2_524_608_000).unwrap(),
            der::tlv(der::GENERALIZED_TIME, b"20500101000000Z")
        );
    }

    #[test]
    fn a_memoised_serial_reads_back_as_its_text_and_odd_ones_are_not_memoised() {
        for text in ["0a01", "8f01", "01", &"7f".repeat(20)] {
            let inline = InlineSerial::of_text(text).expect(text);
            assert_eq!(inline.text(), text);
        }
        for odd in ["0", "-0a01", "A1", "abc", &"7f".repeat(21)] {
            assert!(InlineSerial::of_text(odd).is_none(), "{odd:?}");
        }
    }

    #[test]
    fn serial_numbers_are_positive_minimal_integers() {
        for _ in 0..200 {
            let serial = random_serial_bytes().unwrap();
            assert!(serial[0] & 0x80 == 0, "{serial:?}");
            assert!(
                serial.len() == 1 || serial[0] != 0 || serial[1] & 0x80 != 0,
                "{serial:?}"
            );
            assert!(serial.len() <= 16);
            let described = BigNum::from_slice(&serial).unwrap().to_hex_str().unwrap();
            assert_eq!(serial_hex(&serial), described.to_lowercase(), "{serial:?}");
        }
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(serial_hex(&[0x0a, 0x01]), "0a01");
        for bytes in [
            vec![0x0a, 0x01],
            vec![0x00, 0x8f, 0x01],
            vec![0x01],
            vec![0x7f; 16],
        ] {
            let described = BigNum::from_slice(&bytes).unwrap().to_hex_str().unwrap();
            assert_eq!(serial_hex(&bytes), described.to_lowercase(), "{bytes:?}");
        }
    }

    #[test]
    fn created_ca_is_reloaded_and_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = DeviceCa::load_or_create(dir.path(), 365).unwrap();
        let again = DeviceCa::load_or_create(dir.path(), 365).unwrap();
        assert_eq!(first.certificate_der(), again.certificate_der());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{first:?}").contains("PRIVATE"));
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = DeviceCa::generate(365).unwrap();
        let b = DeviceCa::generate(365).unwrap();
        let cert = dir.path().join("ca.pem");
        let key = dir.path().join("ca.key");
        std::fs::write(&cert, a.cert.to_pem().unwrap()).unwrap();
        std::fs::write(&key, b.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let err = DeviceCa::load(&cert, &key, 365).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
    }
}
