//! The one place where the server decides which enrollment a device request speaks for
//! (PROTOCOL.md §3). A request proves an identity with, in order of preference: the TLS client
//! certificate, the `Mdm-Signature` header (detached CMS over the exact body), or — only from a
//! configured trusted proxy — an RFC 9440 `Client-Cert` header. The certificate must be issued
//! by our device CA, be in its validity period, be known to the store and not revoked. At
//! Authenticate it is bound to the enrollment; every later request for that device must use
//! the bound certificate, so a device can never read or answer another device's commands.
//!
//! Refusals are 403 with the reason logged, never 401 (401 makes a device un-enroll); store
//! outages are 503 so the device retries.

use super::tls::TlsPeer;
use super::AppState;
use crate::pki::ca::VerifiedCertificate;
use crate::pki::signature::MdmSignature;
use crate::pki::signer_key::SignerKey;
use crate::protocol::EnrollmentIds;
use crate::store::{CertificateStanding, EnrollmentState, StoreError};
use axum::http::HeaderMap;
use base64::Engine as _;

pub const MDM_SIGNATURE_HEADER: &str = "mdm-signature";
pub const CLIENT_CERT_HEADER: &str = "client-cert";

/// The device (channel) a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub user_channel: bool,
    /// Fingerprint of the certificate that proved it.
    pub certificate_fingerprint: String,
}

/// Why a request was not accepted as the device it claims to be.
#[derive(Debug, thiserror::Error)]
pub enum IdentityRefusal {
    /// Answered with 403 and logged with the reason.
    #[error("{0}")]
    Forbidden(String),
    /// The store could not be asked: 503, the device retries.
    #[error("{0}")]
    Unavailable(StoreError),
}

/// How the certificate reached us (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofKind {
    TlsClientCertificate,
    MdmSignature,
    ProxyClientCertHeader,
}

impl ProofKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TlsClientCertificate => "tls-client-certificate",
            Self::MdmSignature => "mdm-signature",
            Self::ProxyClientCertHeader => "client-cert-header",
        }
    }
}

/// A certificate that chains to our CA and is within its validity period, not yet checked
/// against the store.
#[derive(Debug, Clone)]
pub struct PresentedCertificate {
    pub certificate: VerifiedCertificate,
    pub proof: ProofKind,
}

/// An `Mdm-Signature` whose signer is one of our certificates, still to be checked against
/// the body once it has been read.
pub struct PendingSignature {
    signature: MdmSignature,
}

impl PendingSignature {
    /// The signature over the raw bytes, exactly as received (before any parsing), with the key
    /// of the signer certificate it carries (the one checked against our CA).
    pub fn verify(&self, body: &[u8]) -> Result<(), IdentityRefusal> {
        let forbidden = |reason: String| IdentityRefusal::Forbidden(reason);
        let signer = self
            .signature
            .signer_certificate()
            .map_err(|e| forbidden(e.to_string()))?;
        let key = SignerKey::of_certificate(signer).ok_or_else(|| {
            forbidden("Mdm-Signature certificate has no readable public key".into())
        })?;
        self.signature
            .verify(body, &key)
            .map_err(|e| forbidden(e.to_string()))
    }
}

/// Step one, before the body is read: which certificate does this request carry, and is it
/// one of ours (chain and validity)? An `Mdm-Signature` comes back pending: it covers the
/// body, which the caller verifies as soon as it has read it.
pub fn presented_certificate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<&TlsPeer>,
) -> Result<(PresentedCertificate, Option<PendingSignature>), IdentityRefusal> {
    let forbidden = |reason: String| IdentityRefusal::Forbidden(reason);
    let now = crate::pki::ca::unix_now();
    let check = |der: &[u8], proof: ProofKind| {
        state
            .device_ca
            .verify_presented(der, now)
            .map(|certificate| PresentedCertificate { certificate, proof })
            .map_err(|problem| forbidden(format!("{} {problem}", proof_noun(proof))))
    };
    if let Some(cert) = peer.and_then(|p| p.certificate.as_ref()) {
        return Ok((check(cert, ProofKind::TlsClientCertificate)?, None));
    }
    if let Some(value) = headers.get(MDM_SIGNATURE_HEADER) {
        let text = value
            .to_str()
            .map_err(|_| forbidden("Mdm-Signature header is not ASCII".into()))?;
        let signature = MdmSignature::decode(text).map_err(|e| forbidden(e.to_string()))?;
        let signer = signature
            .signer_certificate()
            .map_err(|e| forbidden(e.to_string()))?;
        // The certificate first: a foreign signer is refused before any signature work.
        let presented = check(signer, ProofKind::MdmSignature)?;
        return Ok((presented, Some(PendingSignature { signature })));
    }
    if let Some(value) = headers.get(CLIENT_CERT_HEADER) {
        let from = peer.and_then(|p| p.address).map(|a| a.ip());
        let trusted = from.is_some_and(|ip| state.identity.trusts_proxy(ip));
        if !trusted {
            return Err(forbidden(format!(
                "Client-Cert header from {} ignored: not a configured trusted proxy",
                from.map(|ip| ip.to_string())
                    .unwrap_or_else(|| "an unknown address".into())
            )));
        }
        let der = parse_client_cert_header(value.as_bytes()).map_err(forbidden)?;
        return Ok((check(&der, ProofKind::ProxyClientCertHeader)?, None));
    }
    Err(forbidden(
        "no device identity: no TLS client certificate and no Mdm-Signature header".into(),
    ))
}

fn proof_noun(proof: ProofKind) -> &'static str {
    match proof {
        ProofKind::TlsClientCertificate => "TLS client certificate",
        ProofKind::MdmSignature => "Mdm-Signature certificate",
        ProofKind::ProxyClientCertHeader => "Client-Cert header certificate",
    }
}

/// RFC 9440: `Client-Cert: :<base64 DER>:` (a structured-field byte sequence).
pub fn parse_client_cert_header(value: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(value).map_err(|_| "Client-Cert header is not ASCII")?;
    let inner = text
        .trim()
        .strip_prefix(':')
        .and_then(|t| t.strip_suffix(':'))
        .ok_or("Client-Cert header is not an RFC 9440 byte sequence (:base64:)")?;
    base64::engine::general_purpose::STANDARD
        .decode(inner)
        .map_err(|_| "Client-Cert header is not valid base64".to_string())
}

/// Step two, still before the body is parsed: is the certificate in this server's records and
/// not revoked? A revoked or unknown device never reaches the plist decoder.
pub async fn standing(
    state: &AppState,
    presented: &PresentedCertificate,
) -> Result<CertificateStanding, IdentityRefusal> {
    let standing = state
        .store
        .certificate_standing(&presented.certificate.fingerprint)
        .await
        .map_err(|e| match e {
            StoreError::Unavailable(_) => IdentityRefusal::Unavailable(e),
            other => IdentityRefusal::Unavailable(StoreError::Unavailable(other.to_string())),
        })?;
    standing_refusal(standing.as_ref(), &presented.certificate)
        .map_err(IdentityRefusal::Forbidden)?;
    Ok(standing.expect("standing_refusal refuses a missing standing"))
}

/// Step three, after parsing: may this certificate speak for the claimed device?
pub fn authorize(
    presented: &PresentedCertificate,
    standing: &CertificateStanding,
    claimed: &EnrollmentIds,
    is_authenticate: bool,
) -> Result<DeviceIdentity, IdentityRefusal> {
    let device_id = claimed.device_id();
    decide(
        Some(standing),
        &presented.certificate,
        device_id,
        is_authenticate,
    )
    .map_err(IdentityRefusal::Forbidden)?;
    Ok(DeviceIdentity {
        device_id: device_id.to_string(),
        user_channel: claimed.is_user_channel(),
        certificate_fingerprint: presented.certificate.fingerprint.clone(),
    })
}

/// The rules that need no body: the certificate is ours and not revoked.
fn standing_refusal(
    standing: Option<&CertificateStanding>,
    certificate: &VerifiedCertificate,
) -> Result<(), String> {
    let serial = &certificate.serial;
    let Some(standing) = standing else {
        return Err(format!(
            "certificate serial {serial} is not in this server's records (not issued here)"
        ));
    };
    if let Some(at) = standing.certificate.revoked_at {
        return Err(format!(
            "certificate serial {serial} was revoked (at {at} ms)"
        ));
    }
    Ok(())
}

/// The binding rules, as a pure function (table-tested below). `standing` describes the
/// certificate and the enrollment it is bound to (none before its first Authenticate).
pub fn decide(
    standing: Option<&CertificateStanding>,
    certificate: &VerifiedCertificate,
    device_id: &str,
    is_authenticate: bool,
) -> Result<(), String> {
    standing_refusal(standing, certificate)?;
    let standing = standing.expect("standing_refusal refuses a missing standing");
    let serial = &certificate.serial;
    match &standing.certificate.device_id {
        Some(owner) if owner != device_id => {
            return Err(format!(
                "certificate serial {serial} belongs to device {owner}, not {device_id}"
            ));
        }
        Some(_) => {}
        None if is_authenticate => {}
        None => {
            return Err(format!(
                "certificate serial {serial} is not bound to an enrollment: device {device_id} \
                 must Authenticate with it first"
            ))
        }
    }
    if is_authenticate {
        // Authenticate (re)binds: a re-enrollment starts here with its new certificate.
        return Ok(());
    }
    match (&standing.enrollment_state, &standing.enrollment_fingerprint) {
        (None, _) => Err(format!("device {device_id} is not enrolled here")),
        (Some(EnrollmentState::CheckedOut), _) => Err(format!("device {device_id} is checked out")),
        (Some(_), Some(bound)) if bound == &certificate.fingerprint => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "device {device_id} is bound to another certificate; certificate serial {serial} \
             may only be used after a new Authenticate"
        )),
        (Some(_), None) => Err(format!(
            "device {device_id} has no bound certificate; it must Authenticate again"
        )),
    }
}

/// Trusted TLS-terminating proxies whose `Client-Cert` header is believed.
#[derive(Debug, Clone, Default)]
pub struct IdentityPolicy {
    pub trusted_proxies: Vec<IpRange>,
}

impl IdentityPolicy {
    pub fn trusts_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|r| r.contains(ip))
    }
}

/// An address range written as `10.0.0.0/8`, `fd00::/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpRange {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0–{max}"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl IpRange {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let (a, b, bits) = match (self.network, ip) {
            (V4(n), V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (V6(n), V6(i)) => (u128::from(n), u128::from(i), 128),
            (V6(n), V4(i)) => (u128::from(n), u128::from(i.to_ipv6_mapped()), 128),
            (V4(n), V6(i)) => match i.to_ipv4_mapped() {
                Some(i) => (u32::from(n) as u128, u32::from(i) as u128, 32),
                None => return false,
            },
        };
        if self.prefix == 0 {
            return true;
        }
        let shift = bits - self.prefix as u32;
        (a >> shift) == (b >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CertificateRecord;

    fn cert(fp: &str) -> VerifiedCertificate {
        VerifiedCertificate {
            fingerprint: fp.into(),
            serial: format!("serial-{fp}"),
        }
    }

    fn standing(
        owner: Option<&str>,
        revoked: bool,
        enrollment: Option<(EnrollmentState, Option<&str>)>,
    ) -> CertificateStanding {
        CertificateStanding {
            certificate: CertificateRecord {
                fingerprint: "fp-a".into(),
                serial: "serial-fp-a".into(),
                subject: "CN=device".into(),
                not_before: 0,
                not_after: i64::MAX,
                issued_at: 0,
                device_id: owner.map(Into::into),
                bound_at: owner.map(|_| 1),
                revoked_at: revoked.then_some(5),
            },
            enrollment_state: enrollment.map(|(s, _)| s),
            enrollment_fingerprint: enrollment.and_then(|(_, f)| f.map(Into::into)),
        }
    }

    /// (case, standing, is Authenticate, expected: Ok or a fragment of the reason)
    type BindingCase = (
        &'static str,
        Option<CertificateStanding>,
        bool,
        Result<(), &'static str>,
    );

    #[test]
    fn binding_rules() {
        use EnrollmentState::*;
        let a = cert("fp-a");
        let cases: Vec<BindingCase> = vec![
            (
                "unknown certificate",
                None,
                true,
                Err("not in this server's records"),
            ),
            (
                "revoked certificate",
                Some(standing(Some("A"), true, Some((Enrolled, Some("fp-a"))))),
                false,
                Err("revoked"),
            ),
            (
                "fresh certificate authenticates",
                Some(standing(None, false, None)),
                true,
                Ok(()),
            ),
            (
                "another device's certificate",
                Some(standing(Some("B"), false, Some((Enrolled, Some("fp-a"))))),
                false,
                Err("belongs to device B"),
            ),
            (
                "another device's certificate at Authenticate",
                Some(standing(Some("B"), false, None)),
                true,
                Err("belongs to device B"),
            ),
            (
                "bound certificate",
                Some(standing(Some("A"), false, Some((Enrolled, Some("fp-a"))))),
                false,
                Ok(()),
            ),
            (
                "certificate never bound",
                Some(standing(None, false, None)),
                false,
                Err("must Authenticate with it first"),
            ),
            (
                "bound device whose enrollment is gone",
                Some(standing(Some("A"), false, None)),
                false,
                Err("not enrolled here"),
            ),
            (
                "an older certificate after re-enrollment",
                Some(standing(Some("A"), false, Some((Enrolled, Some("fp-z"))))),
                false,
                Err("bound to another certificate"),
            ),
            (
                "re-enrollment with a new certificate",
                Some(standing(None, false, None)),
                true,
                Ok(()),
            ),
            (
                "checked-out device",
                Some(standing(Some("A"), false, Some((CheckedOut, Some("fp-a"))))),
                false,
                Err("checked out"),
            ),
            (
                "enrollment without certificate",
                Some(standing(Some("A"), false, Some((Enrolled, None)))),
                false,
                Err("no bound certificate"),
            ),
        ];
        for (name, standing, is_auth, expected) in cases {
            let got = decide(standing.as_ref(), &a, "A", is_auth);
            match (expected, got) {
                (Ok(()), Ok(())) => {}
                (Err(needle), Err(reason)) => {
                    assert!(
                        reason.contains(needle),
                        "{name}: {reason:?} lacks {needle:?}"
                    )
                }
                (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn ip_ranges() {
        let r: IpRange = "10.1.0.0/16".parse().unwrap();
        assert!(r.contains("10.1.2.3".parse().unwrap()));
        assert!(!r.contains("10.2.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.9.9".parse().unwrap()));
        let single: IpRange = "127.0.0.1".parse().unwrap();
        assert!(single.contains("127.0.0.1".parse().unwrap()));
        assert!(!single.contains("127.0.0.2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("proxy".parse::<IpRange>().is_err());
    }

    #[test]
    fn client_cert_header_is_rfc9440() {
        assert_eq!(parse_client_cert_header(b":AQID:").unwrap(), vec![1, 2, 3]);
        assert!(parse_client_cert_header(b"AQID").is_err());
        assert!(parse_client_cert_header(b":not base64!:").is_err());
    }
}
