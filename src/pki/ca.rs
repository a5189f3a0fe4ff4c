//! The device certificate authority: created on first start (or loaded from files, e.g. a
//! mounted Kubernetes Secret), it issues device identity certificates from SCEP requests and
//! checks that a presented certificate is one of its own and in its validity period.
//! Revocation and binding to a device live in the store; beyond the CA's certificate and key this
//! type only memoises certificates it has already verified (they are immutable, so a hit skips
//! parsing and the RSA check; validity is still compared with the clock on every use). The key
//! is never formatted into logs or errors.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509Req, X509};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    validity_days: u32,
    verified: Mutex<HashMap<[u8; 32], Arc<VerifiedCertificate>>>,
}

/// A device certificate that verified against this CA, with its public key.
pub struct VerifiedCertificate {
    pub certificate: DeviceCertificate,
    pub public_key: PKey<Public>,
}

/// Bound on memoised certificates (≈ 1 KB each); the memo is simply emptied when full.
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
        Ok(Self {
            cert_der: cert.to_der()?,
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

    /// Issues a device identity certificate for the key and subject of a verified CSR.
    pub fn issue(&self, csr: &X509Req) -> Result<X509, CaError> {
        let public = csr.public_key()?;
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let serial = random_serial()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(csr.subject_name())?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(&public)?;
        // Backdated a little: device clocks drift.
        let not_before = Asn1Time::from_unix(unix_now() - 300)?;
        let not_after = Asn1Time::days_from_now(self.validity_days)?;
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build())
    }

    /// Checks that a DER certificate was issued by this CA and is valid at `now` (Unix seconds).
    pub fn verify_device_certificate(
        &self,
        der: &[u8],
        now: i64,
    ) -> Result<DeviceCertificate, CertificateProblem> {
        self.verify_with_key(der, now)
            .map(|v| v.certificate.clone())
    }

    /// Like `verify_device_certificate`, also returning the certificate's public key.
    pub fn verify_with_key(
        &self,
        der: &[u8],
        now: i64,
    ) -> Result<Arc<VerifiedCertificate>, CertificateProblem> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(der).into();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let verified = match cached {
            Some(v) => v,
            None => {
                let v = Arc::new(self.verify_uncached(der)?);
                let mut memo = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if memo.len() >= VERIFIED_CAPACITY {
                    memo.clear();
                }
                memo.insert(digest, v.clone());
                v
            }
        };
        let c = &verified.certificate;
        if now < c.not_before {
            return Err(CertificateProblem::NotYetValid {
                not_before: rfc3339_seconds(c.not_before),
            });
        }
        if now > c.not_after {
            return Err(CertificateProblem::Expired {
                not_after: rfc3339_seconds(c.not_after),
            });
        }
        Ok(verified)
    }

    fn verify_uncached(&self, der: &[u8]) -> Result<VerifiedCertificate, CertificateProblem> {
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
        let public_key = cert
            .public_key()
            .map_err(|_| CertificateProblem::Unparseable)?;
        let not_before = asn1_unix(cert.not_before());
        let not_after = asn1_unix(cert.not_after());
        Ok(VerifiedCertificate {
            certificate: describe(&cert, der, not_before, not_after),
            public_key,
        })
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

/// Fingerprint, serial, subject and validity of a certificate, for the store.
pub fn describe_certificate(cert: &X509) -> Result<DeviceCertificate, CaError> {
    let der = cert.to_der()?;
    Ok(describe(
        cert,
        &der,
        asn1_unix(cert.not_before()),
        asn1_unix(cert.not_after()),
    ))
}

fn describe(cert: &X509, der: &[u8], not_before: i64, not_after: i64) -> DeviceCertificate {
    DeviceCertificate {
        fingerprint: fingerprint(der),
        serial: cert
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| s.to_lowercase()))
            .unwrap_or_default(),
        subject: name_text(cert.subject_name()),
        not_before,
        not_after,
    }
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
        let cert = ca.issue(&req).unwrap();
        let der = cert.to_der().unwrap();
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
