//! `Mdm-Signature`: a base64 detached CMS SignedData over the exact request body, signed with
//! the device's identity key (PROTOCOL.md §3). Verifying it yields the signer's certificate,
//! which the caller then checks against the CA and the store like a TLS client certificate.

use super::cms::{self, SignedDataView};
use base64::Engine as _;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{PKeyRef, Private};
use openssl::x509::X509Ref;

/// Largest header we decode; Apple's are about 2 KB (one certificate and a signature).
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("Mdm-Signature is larger than {MAX_SIGNATURE_BYTES} bytes")]
    TooLarge,
    #[error("Mdm-Signature is not base64")]
    NotBase64,
    #[error("Mdm-Signature is not a CMS SignedData structure")]
    NotCms,
    #[error("Mdm-Signature does not include the signer's certificate")]
    NoSignerCertificate,
    #[error("Mdm-Signature does not match the request body")]
    Mismatch,
}

/// A decoded `Mdm-Signature`: the CMS structure and the signer's certificate, not yet checked.
pub struct MdmSignature {
    der: Vec<u8>,
    view: SignedDataView,
    /// True when `view` was read from the bytes as sent (DER), so the signed attributes are
    /// exactly what the signature covers.
    as_sent: bool,
}

impl MdmSignature {
    /// Decodes the header value (base64 of a DER or BER CMS SignedData).
    pub fn decode(header: &str) -> Result<Self, SignatureProblem> {
        if header.len() > MAX_SIGNATURE_BYTES * 4 / 3 + 4 {
            return Err(SignatureProblem::TooLarge);
        }
        let compact: String = header.split_ascii_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| SignatureProblem::NotBase64)?;
        if let Ok(view) = SignedDataView::parse(&der) {
            return Ok(Self {
                der,
                view,
                as_sent: true,
            });
        }
        // BER (indefinite lengths): let openssl read it and re-encode.
        let cms = CmsContentInfo::from_der(&der).map_err(|_| SignatureProblem::NotCms)?;
        let normalised = cms.to_der().map_err(|_| SignatureProblem::NotCms)?;
        let view = SignedDataView::parse(&normalised).map_err(|_| SignatureProblem::NotCms)?;
        Ok(Self {
            der,
            view,
            as_sent: false,
        })
    }

    /// The signer's certificate (DER), to be checked against the CA by the caller.
    pub fn signer_certificate(&self) -> Result<&[u8], SignatureProblem> {
        self.view
            .signer_certificate()
            .ok_or(SignatureProblem::NoSignerCertificate)
    }

    /// Checks the signature over `body` with the signer's public key. The common DER form is
    /// checked directly (digest of the body, RSA over the signed attributes as sent); anything
    /// else goes through openssl's CMS verification.
    pub fn verify(
        &self,
        body: &[u8],
        signer_key: &super::signer_key::SignerKey,
    ) -> Result<(), SignatureProblem> {
        if self.as_sent && self.view.has_signed_attributes() {
            return if self.view.verify_first_signer_as_received(body, signer_key) {
                Ok(())
            } else {
                Err(SignatureProblem::Mismatch)
            };
        }
        let mut cms = CmsContentInfo::from_der(&self.der).map_err(|_| SignatureProblem::NotCms)?;
        cms.verify(
            None,
            None,
            Some(body),
            None,
            // The chain is checked by the caller against our CA (openssl would also demand the
            // S/MIME purpose, which device identity certificates do not have).
            CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
        )
        .map_err(|_| SignatureProblem::Mismatch)
    }
}

/// Verifies a detached signature over `body` and returns the signer's certificate (DER).
/// The certificate's chain, validity and binding are not checked here.
pub fn verify_mdm_signature(header: &str, body: &[u8]) -> Result<Vec<u8>, SignatureProblem> {
    let signature = MdmSignature::decode(header)?;
    let signer = signature.signer_certificate()?.to_vec();
    let cert = openssl::x509::X509::from_der(&signer).map_err(|_| SignatureProblem::NotCms)?;
    let key = cert.public_key().map_err(|_| SignatureProblem::NotCms)?;
    signature.verify(body, &super::signer_key::SignerKey::from_openssl(key))?;
    Ok(signer)
}

/// Signs `body` the way a device does (used by the simulator and tests).
pub fn sign_mdm_body(
    body: &[u8],
    cert: &X509Ref,
    key: &PKeyRef<Private>,
) -> Result<String, cms::BuildError> {
    let signed = CmsContentInfo::sign(
        Some(cert),
        Some(key),
        None,
        Some(body),
        CMSOptions::DETACHED | CMSOptions::BINARY,
    )?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signed.to_der()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_checks_name_what_is_wrong() {
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let cert = crate::pki::ca::self_signed_requester(&key, "device").unwrap();
        let body = b"<plist>body</plist>";
        let header = sign_mdm_body(body, &cert, &key).unwrap();
        assert_eq!(
            verify_mdm_signature(&header, body).unwrap(),
            cert.to_der().unwrap()
        );
        assert_eq!(
            verify_mdm_signature(&header, b"<plist>bodY</plist>"),
            Err(SignatureProblem::Mismatch)
        );
        assert_eq!(
            verify_mdm_signature("%%%", body),
            Err(SignatureProblem::NotBase64)
        );
        assert_eq!(
            verify_mdm_signature("aGVsbG8=", body),
            Err(SignatureProblem::NotCms)
        );
        assert_eq!(
            verify_mdm_signature(&"A".repeat(MAX_SIGNATURE_BYTES * 2), body),
            Err(SignatureProblem::TooLarge)
        );
    }
}
