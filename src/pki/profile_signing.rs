//! Signed configuration profiles: a CMS SignedData (content attached) over the .mobileconfig,
//! signed with the HTTPS certificate so a device can show who issued the profile.

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;

pub struct ProfileSigner {
    leaf: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl std::fmt::Debug for ProfileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileSigner")
            .field("subject", &super::ca::name_text(self.leaf.subject_name()))
            .finish_non_exhaustive()
    }
}

/// Why a profile-signing certificate and key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignerUnusable {
    #[error("the certificate file is not PEM")]
    CertificateNotPem,
    #[error("the certificate file holds no certificate")]
    NoCertificate,
    #[error("the key file is not a PEM private key")]
    KeyNotPem,
    #[error("the key does not belong to the certificate")]
    KeyMismatch,
}

/// Why bytes are not a profile a device would install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignedProfileError {
    #[error("profile is neither a plist nor a signed (CMS) profile")]
    NotAProfile,
    #[error("the profile's signature does not verify")]
    BadSignature,
}

impl ProfileSigner {
    /// From a PEM chain (leaf first) and its private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, SignerUnusable> {
        let mut certs = X509::stack_from_pem(chain_pem)
            .map_err(|_| SignerUnusable::CertificateNotPem)?
            .into_iter();
        let leaf = certs.next().ok_or(SignerUnusable::NoCertificate)?;
        let key = PKey::private_key_from_pem(key_pem).map_err(|_| SignerUnusable::KeyNotPem)?;
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(SignerUnusable::KeyMismatch);
        }
        Ok(Self {
            leaf,
            chain: certs.collect(),
            key,
        })
    }

    /// The signed profile (DER), which devices install like the plain one.
    pub fn sign(&self, profile: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut extra = Stack::new()?;
        for cert in &self.chain {
            extra.push(cert.clone())?;
        }
        CmsContentInfo::sign(
            Some(&self.leaf),
            Some(&self.key),
            Some(&extra),
            Some(profile),
            CMSOptions::BINARY,
        )?
        .to_der()
    }
}

/// The profile inside a signed one (signature checked, signer not: the device shows it), or
/// the bytes unchanged when they are not CMS.
pub fn unwrap_signed_profile(bytes: &[u8]) -> Result<Vec<u8>, SignedProfileError> {
    if bytes.starts_with(b"<?xml") || bytes.starts_with(b"bplist") || bytes.starts_with(b"<plist") {
        return Ok(bytes.to_vec());
    }
    let mut cms = CmsContentInfo::from_der(bytes).map_err(|_| SignedProfileError::NotAProfile)?;
    let mut content = Vec::new();
    cms.verify(
        None,
        None,
        None,
        Some(&mut content),
        CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
    )
    .map_err(|_| SignedProfileError::BadSignature)?;
    Ok(content)
}
