//! Loading the MDM push certificate: PKCS#12 (with a password) or a PEM certificate and key,
//! from files (a mounted Kubernetes Secret is just files). Reads the APNs topic from the
//! subject's UID attribute (OID 0.9.2342.19200300.100.1.1) and the expiry date.
//!
//! Owns parsing and checking the certificate; must not open connections or log secrets: the key
//! and the PKCS#12 password never appear in errors, logs or `Debug` output.

use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;

/// The prefix every MDM push topic carries (PROTOCOL.md §10).
pub const MDM_TOPIC_PREFIX: &str = "com.apple.mgmt.";

/// Why a push certificate could not be used. Messages name the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read push certificate file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("push certificate {path}: wrong PKCS#12 password (check the password file)")]
    WrongPassword { path: String },
    #[error("push certificate {path} is not a usable {format}: {reason}")]
    Malformed {
        path: String,
        format: &'static str,
        reason: String,
    },
    #[error("push certificate {path} holds no {what}")]
    Missing { path: String, what: &'static str },
    #[error(
        "push certificate {path}: the private key does not belong to the certificate ({subject})"
    )]
    KeyMismatch { path: String, subject: String },
    #[error(
        "push certificate {path} is not an MDM push certificate: its subject ({subject}) has no UID \
         starting with {MDM_TOPIC_PREFIX} (get one from the Apple Push Certificates Portal)"
    )]
    NotMdm { path: String, subject: String },
}

/// A loaded push certificate: what the APNs client presents, plus its topic and expiry.
pub struct PushCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    /// The APNs topic: the subject's UID, `com.apple.mgmt.External.<uuid>`.
    pub topic: String,
    /// Not-after, Unix seconds.
    pub not_after: i64,
    /// The subject, for logs.
    pub subject: String,
}

impl std::fmt::Debug for PushCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCertificate")
            .field("topic", &self.topic)
            .field("not_after", &self.not_after)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Clone for PushCertificate {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            topic: self.topic.clone(),
            not_after: self.not_after,
            subject: self.subject.clone(),
        }
    }
}

impl PushCertificate {
    /// The private key, for the TLS client configuration only.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// Loads a PEM certificate (optionally followed by its chain) and a PEM private key. With no
    /// key file the key is looked for in the certificate file.
    pub fn from_pem_files(cert: &Path, key: Option<&Path>) -> Result<Self, CertificateError> {
        let cert_pem = read(cert)?;
        let key_path = key.unwrap_or(cert);
        let key_pem = if key.is_some() {
            read(key_path)?
        } else {
            cert_pem.clone()
        };
        let malformed = |path: &Path, reason: String| CertificateError::Malformed {
            path: path.display().to_string(),
            format: "PEM file",
            reason,
        };
        let mut certs =
            X509::stack_from_pem(&cert_pem).map_err(|e| malformed(cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(CertificateError::Missing {
                path: cert.display().to_string(),
                what: "certificate",
            });
        }
        let leaf = certs.remove(0);
        // The key's own parse error is not shown: it could quote key material.
        let pkey = PKey::private_key_from_pem(&key_pem).map_err(|_| {
            malformed(
                key_path,
                "no PEM private key could be read (PKCS#8, PKCS#1 or SEC1, unencrypted)".into(),
            )
        })?;
        Self::assemble(cert, leaf, certs, pkey)
    }

    /// Loads a PKCS#12 file (as Keychain Access and `openssl pkcs12 -export` write it).
    pub fn from_pkcs12_file(path: &Path, password: &str) -> Result<Self, CertificateError> {
        let der = read(path)?;
        load_legacy_provider();
        let malformed = |reason: String| CertificateError::Malformed {
            path: path.display().to_string(),
            format: "PKCS#12 file",
            reason,
        };
        let archive = Pkcs12::from_der(&der).map_err(|e| malformed(e.to_string()))?;
        let parsed = archive.parse2(password).map_err(|e| {
            if e.to_string().contains("mac verify failure") {
                CertificateError::WrongPassword {
                    path: path.display().to_string(),
                }
            } else {
                malformed(e.to_string())
            }
        })?;
        let missing = |what| CertificateError::Missing {
            path: path.display().to_string(),
            what,
        };
        let leaf = parsed.cert.ok_or_else(|| missing("certificate"))?;
        let pkey = parsed.pkey.ok_or_else(|| missing("private key"))?;
        let chain = parsed
            .ca
            .map(|stack| stack.into_iter().collect())
            .unwrap_or_default();
        Self::assemble(path, leaf, chain, pkey)
    }

    fn assemble(
        path: &Path,
        leaf: X509,
        chain: Vec<X509>,
        pkey: PKey<Private>,
    ) -> Result<Self, CertificateError> {
        let shown = path.display().to_string();
        let subject = describe_subject(&leaf);
        let key_matches = leaf
            .public_key()
            .map(|public| public.public_eq(&pkey))
            .unwrap_or(false);
        if !key_matches {
            return Err(CertificateError::KeyMismatch {
                path: shown,
                subject,
            });
        }
        let topic = topic_of(&leaf).ok_or_else(|| CertificateError::NotMdm {
            path: shown.clone(),
            subject: subject.clone(),
        })?;
        let not_after =
            unix_seconds(leaf.not_after()).ok_or_else(|| CertificateError::Malformed {
                path: shown.clone(),
                format: "certificate",
                reason: "unreadable not-after date".into(),
            })?;
        let der = |c: &X509| {
            c.to_der().map_err(|e| CertificateError::Malformed {
                path: shown.clone(),
                format: "certificate",
                reason: e.to_string(),
            })
        };
        let mut ders = vec![CertificateDer::from(der(&leaf)?)];
        for c in &chain {
            ders.push(CertificateDer::from(der(c)?));
        }
        let key = pkey
            .private_key_to_pkcs8()
            .map_err(|_| CertificateError::Malformed {
                path: shown.clone(),
                format: "private key",
                reason: "cannot be converted to PKCS#8".into(),
            })?;
        Ok(Self {
            chain: ders,
            key: PrivatePkcs8KeyDer::from(key),
            topic,
            not_after,
            subject,
        })
    }

    /// Whole days from `now` (Unix seconds) until the certificate expires; negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|e| CertificateError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Keychain Access and older OpenSSL versions encrypt PKCS#12 with RC2/3DES, which OpenSSL 3
/// keeps in its "legacy" provider. Loaded once; without it modern (AES) files still load.
fn load_legacy_provider() {
    static LEGACY: std::sync::OnceLock<Option<openssl::provider::Provider>> =
        std::sync::OnceLock::new();
    LEGACY.get_or_init(|| openssl::provider::Provider::try_load(None, "legacy", true).ok());
}

/// The subject UID if it is an MDM topic.
fn topic_of(cert: &X509) -> Option<String> {
    cert.subject_name()
        .entries_by_nid(Nid::USERID)
        .filter_map(|entry| text(entry.data()))
        .find(|uid| uid.starts_with(MDM_TOPIC_PREFIX) && uid.len() > MDM_TOPIC_PREFIX.len())
}

/// The text of a directory string (UTF8String, PrintableString and IA5String hold it as is).
fn text(value: &openssl::asn1::Asn1StringRef) -> Option<String> {
    String::from_utf8(value.as_slice().to_vec()).ok()
}

fn describe_subject(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .map(|entry| {
            let name = entry.object().nid().short_name().unwrap_or("?");
            let value = text(entry.data()).unwrap_or_default();
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn unix_seconds(time: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(time).ok()?;
    Some(diff.days as i64 * 86_400 + diff.secs as i64)
}
