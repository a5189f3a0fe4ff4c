//! A signer's public key as signature checks need it, kept small. The memo of verified device
//! certificates (`ca::DeviceCa`) holds one per device, so its size is memory per enrolled
//! device: an OpenSSL 3 key object costs about 750 bytes of C heap, an RSA key kept as its
//! PKCS#1 encoding about 270. RSA keys (what devices enroll with) are therefore kept encoded
//! and checked with ring, whose reading of a key is cheap enough to do per signature; any other
//! key stays an OpenSSL object.

use super::cms::Digest;
use openssl::pkey::{PKey, Public};

pub enum SignerKey {
    /// An RSA public key, PKCS#1 `RSAPublicKey` DER.
    Rsa(Box<[u8]>),
    Other(PKey<Public>),
}

impl SignerKey {
    pub fn from_openssl(key: PKey<Public>) -> Self {
        match key.rsa().and_then(|rsa| rsa.public_key_to_der_pkcs1()) {
            Ok(der) => Self::Rsa(der.into_boxed_slice()),
            Err(_) => Self::Other(key),
        }
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
}
