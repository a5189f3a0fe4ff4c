//! A signer's public key as signature checks need it. An RSA key (what devices enroll with) is
//! its PKCS#1 encoding, checked with ring, whose reading of a key is cheap enough to do per
//! signature: read straight out of the certificate a request carries (`of_certificate`), it
//! costs no allocation and no OpenSSL 3 key object (about 750 bytes of C heap, and more time
//! than the check itself). Any other key is an OpenSSL object.

use super::cms::Digest;
use super::der;
use openssl::pkey::{PKey, Public};
use std::borrow::Cow;

pub enum SignerKey<'a> {
    /// An RSA public key, PKCS#1 `RSAPublicKey` DER.
    Rsa(Cow<'a, [u8]>),
    Other(PKey<Public>),
}

/// rsaEncryption (1.2.840.113549.1.1.1), encoded.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

impl SignerKey<'static> {
    pub fn from_openssl(key: PKey<Public>) -> Self {
        match key.rsa().and_then(|rsa| rsa.public_key_to_der_pkcs1()) {
            Ok(der) => Self::Rsa(Cow::Owned(der)),
            Err(_) => Self::Other(key),
        }
    }
}

impl<'a> SignerKey<'a> {
    /// The public key of a DER certificate: an RSA key borrowed from its encoding, any other
    /// read by OpenSSL. None if the certificate cannot be read.
    pub fn of_certificate(certificate: &'a [u8]) -> Option<Self> {
        if let Some(pkcs1) = rsa_key_in(certificate) {
            return Some(Self::Rsa(Cow::Borrowed(pkcs1)));
        }
        let key = openssl::x509::X509::from_der(certificate)
            .and_then(|cert| cert.public_key())
            .ok()?;
        Some(SignerKey::from_openssl(key))
    }

    /// The RSA key of a DER SubjectPublicKeyInfo (a CSR's), borrowed from its encoding; None
    /// for any other key, or one that cannot be read.
    pub fn rsa_of_public_key_info(info: &'a [u8]) -> Option<Self> {
        let parsed = der::parse_single(info, "SubjectPublicKeyInfo").ok()?;
        rsa_key_of(parsed).map(|pkcs1| Self::Rsa(Cow::Borrowed(pkcs1)))
    }

    /// Whether `signature` is this key's PKCS#1 v1.5 signature of `message` under `digest`.
    pub fn verify(&self, digest: Digest, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Rsa(der) => {
                use ring::signature as ring_sig;
                let algorithm: &dyn ring_sig::VerificationAlgorithm = match digest {
                    Digest::Sha1 => &ring_sig::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
                    Digest::Sha256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
                    Digest::Sha512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
                };
                if ring_sig::UnparsedPublicKey::new(algorithm, der)
                    .verify(message, signature)
                    .is_ok()
                {
                    return true;
                }
                // ring refuses keys under 2,048 bits for SHA-2 and is stricter about the
                // padding's encoding than OpenSSL; what it refuses, OpenSSL judges as before.
                openssl::rsa::Rsa::public_key_from_der_pkcs1(der)
                    .and_then(PKey::from_rsa)
                    .is_ok_and(|key| verify_with_openssl(&key, digest, message, signature))
            }
            Self::Other(key) => verify_with_openssl(key, digest, message, signature),
        }
    }
}

/// The PKCS#1 RSA key in a DER certificate's subjectPublicKeyInfo, if its algorithm is
/// rsaEncryption.
fn rsa_key_in(certificate: &[u8]) -> Option<&[u8]> {
    let outer = der::parse_single(certificate, "Certificate").ok()?;
    let tbs = outer
        .reader()
        .expect(der::SEQUENCE, "tbsCertificate")
        .ok()?;
    let mut fields = tbs.reader();
    fields.optional(der::context(0)).ok()?; // version
    fields.expect(der::INTEGER, "serialNumber").ok()?;
    for what in ["signature", "issuer", "validity", "subject"] {
        fields.expect(der::SEQUENCE, what).ok()?;
    }
    rsa_key_of(fields.expect(der::SEQUENCE, "subjectPublicKeyInfo").ok()?)
}

/// The PKCS#1 RSA key in a subjectPublicKeyInfo, if its algorithm is rsaEncryption.
fn rsa_key_of(info: der::Tlv<'_>) -> Option<&[u8]> {
    let mut info = info.reader();
    let algorithm = info.expect(der::SEQUENCE, "algorithm").ok()?;
    let oid = algorithm.reader().expect(der::OID, "algorithm").ok()?;
    if oid.content != RSA_ENCRYPTION {
        return None;
    }
    let bits = info.expect(der::BIT_STRING, "subjectPublicKey").ok()?;
    // No unused bits, then the key.
    match bits.content.split_first() {
        Some((0, key)) if !key.is_empty() => Some(key),
        _ => None,
    }
}

fn verify_with_openssl(
    key: &PKey<Public>,
    digest: Digest,
    message: &[u8],
    signature: &[u8],
) -> bool {
    openssl::sign::Verifier::new(digest.message_digest(), key)
        .and_then(|mut v| {
            v.update(message)?;
            v.verify(signature)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &PKey<openssl::pkey::Private>, digest: Digest, message: &[u8]) -> Vec<u8> {
        let mut signer = openssl::sign::Signer::new(digest.message_digest(), key).unwrap();
        signer.update(message).unwrap();
        signer.sign_to_vec().unwrap()
    }

    fn public(key: &PKey<openssl::pkey::Private>) -> PKey<Public> {
        PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap()
    }

    #[test]
    fn rsa_keys_are_kept_encoded_and_check_every_digest_as_openssl_does() {
        let private = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let key = SignerKey::from_openssl(public(&private));
        assert!(matches!(key, SignerKey::Rsa(_)));
        for digest in [Digest::Sha1, Digest::Sha256, Digest::Sha512] {
            let signature = sign(&private, digest, b"body");
            assert!(key.verify(digest, b"body", &signature), "{digest:?}");
            assert!(!key.verify(digest, b"other body", &signature), "{digest:?}");
        }
        let sha1 = sign(&private, Digest::Sha1, b"body");
        assert!(!key.verify(Digest::Sha256, b"body", &sha1));
    }

    #[test]
    fn a_small_rsa_key_still_checks_through_openssl() {
        let private = PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
        let key = SignerKey::from_openssl(public(&private));
        let signature = sign(&private, Digest::Sha256, b"body");
        assert!(key.verify(Digest::Sha256, b"body", &signature));
        assert!(!key.verify(Digest::Sha256, b"b0dy", &signature));
    }

    #[test]
    fn other_keys_stay_openssl_keys() {
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let private = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        let key = SignerKey::from_openssl(public(&private));
        assert!(matches!(key, SignerKey::Other(_)));
        let signature = sign(&private, Digest::Sha256, b"body");
        assert!(key.verify(Digest::Sha256, b"body", &signature));
        assert!(!key.verify(Digest::Sha256, b"b0dy", &signature));
    }

    /// A self-signed certificate for `key`, DER.
    fn certificate(key: &PKey<openssl::pkey::Private>) -> Vec<u8> {
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "device").unwrap();
        let name = name.build();
        let mut builder = openssl::x509::X509Builder::new().unwrap();
        builder.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(0x0a01)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        builder.set_serial_number(&serial).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(key).unwrap();
        builder
            .set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder
            .sign(key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        builder.build().to_der().unwrap()
    }

    #[test]
    fn the_rsa_key_of_a_certificate_is_read_in_place_and_is_the_one_openssl_reads() {
        let private = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let der = certificate(&private);
        let Some(SignerKey::Rsa(Cow::Borrowed(pkcs1))) = SignerKey::of_certificate(&der) else {
            panic!("an RSA certificate's key was not read in place");
        };
        assert_eq!(
            pkcs1,
            private.rsa().unwrap().public_key_to_der_pkcs1().unwrap()
        );
        let key = SignerKey::of_certificate(&der).unwrap();
        let signature = sign(&private, Digest::Sha256, b"body");
        assert!(key.verify(Digest::Sha256, b"body", &signature));
        assert!(!key.verify(Digest::Sha256, b"b0dy", &signature));
    }

    #[test]
    fn an_ec_certificate_s_key_is_read_by_openssl_and_junk_is_no_key() {
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let private = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        let der = certificate(&private);
        let key = SignerKey::of_certificate(&der).unwrap();
        assert!(matches!(key, SignerKey::Other(_)));
        let signature = sign(&private, Digest::Sha256, b"body");
        assert!(key.verify(Digest::Sha256, b"body", &signature));
        assert!(SignerKey::of_certificate(b"junk").is_none());
        assert!(SignerKey::of_certificate(&der[..der.len() - 1]).is_none());
    }
}
